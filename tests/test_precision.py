"""The sweep engine's matmul precision (issue 19 item 5): validated, part of the program, recorded, and on CPU
bitwise neutral (committed results stay reproducible); float64 on a TPU warns."""
from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from fa_jax import sweep as S
from fa_jax.config import traced_values, with_values
from fa_jax.experiments.linear import LinearData, LinearRun, run_linear
from fa_jax.optim import OptimConfig
from fa_jax.summary import device, precisions_in
from fa_jax.trainer import TrainConfig

CFGS = [LinearRun(data=LinearData(d=6, n_train=24, n_test=8), optim=OptimConfig(name="sgd", lr=0.05, batch_size=8),
                  train=TrainConfig(steps=12, n_records=3), data_seed=s, model_seed=10 + s).validate()
        for s in range(3)]


def _plain(run_fn, cfgs):
    """The chunk program as a user writes it, traced with NO precision context: what the engine compiled before
    the setting existed (compiled with the engine's compiler options)."""
    base = cfgs[0]
    fn = jax.jit(lambda v: jax.vmap(lambda one: run_fn(with_values(base, one)))(v))
    vals = S._stack([traced_values(c) for c in cfgs])
    return fn.lower(vals), vals


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the bitwise claim is about XLA:CPU")
def test_highest_is_bitwise_neutral_on_cpu(tmp_path):
    """A few SGD steps of the linear experiment: the engine at "highest" (explicit, and as the default setting)
    gives the same bits as the program traced without any precision context; the setting does reach the program
    (HIGHEST on every dot of its text; none at "default")."""
    low, vals = _plain(run_linear, CFGS)
    assert "HIGHEST" not in low.as_text()
    # the engine's CPU compile options (sweep.compiler_options: the LLVM level) apply to both sides
    ref = S._flatten(jax.device_get(low.compile(S.compiler_options("cpu"))(vals)))
    for kw in ({}, {"precision": "highest"}):  # one program: compiled once
        out = S.run_sweep(run_linear, CFGS, chunk_size=len(CFGS), out_dir=tmp_path / str(kw), **kw)
        for i, r in enumerate(out):
            got = S._flatten(r)
            for k, v in ref.items():
                np.testing.assert_array_equal(np.asarray(v)[i], got[k], err_msg=f"{kw} {k}")
                assert np.asarray(v).dtype == got[k].dtype
    for precision in ("highest", "default"):
        low = S._lower(run_linear, S.static_key(CFGS[0]), CFGS[0], 3, tuple(jax.local_devices()), precision)
        dots = [line for line in low.lowered.as_text().splitlines() if "dot_general" in line]
        assert dots and all(("HIGHEST" in line) == (precision == "highest") for line in dots)


def test_precision_is_recorded(tmp_path):
    """In the plan, the chunk file, run_labelled's metrics and summary.json's device block; a different precision
    is a different program (digest), so cached chunks are never reused across precisions."""
    plans = S.plan_chunks(run_linear, CFGS[:2], chunk_size=2, precision="high")
    assert {p.precision for p in plans} == {"high"}
    assert plans[0].program != S.plan_chunks(run_linear, CFGS[:2], chunk_size=2)[0].program
    # all three runs: one chunk, the program test_highest_is_bitwise_neutral_on_cpu compiled (nothing new here)
    _, metrics = S.run_labelled(run_linear, {"a": [({"s": i}, c) for i, c in enumerate(CFGS)]}, out_dir=tmp_path)
    assert metrics["matmul_precision"] == "highest"
    (chunk,) = (tmp_path / "chunks").glob("*.npz")
    with np.load(chunk) as z:
        assert z["_precision"].item() == "highest"
    outputs = S._flatten(jax.eval_shape(lambda: run_linear(CFGS[0])))  # traced, not run op by op
    assert set(S.read_chunk(str(chunk), [0, 1, 2])) == set(outputs) | {"diverged"}
    # the summary's device block takes the precision from the metrics of the runs it reports (nested engine
    # parts included), never from whatever else ran in the process
    assert device(precisions_in({"engine": metrics}))["matmul_precision"] == "highest"
    assert precisions_in({"a": {"matmul_precision": "high"}, "b": [{"matmul_precision": "highest"}]}) == [
        "high", "highest"]
    assert device()["matmul_precision"] is None and precisions_in({"n_runs": 3}) is None


def test_bad_precision_is_rejected():
    for bad in ("fastest", "HIGHEST", None, 3):
        with pytest.raises(ValueError, match="precision.*allowed one of"):
            S.run_sweep(run_linear, CFGS[:1], precision=bad)
    with pytest.raises(ValueError, match="precision"):
        S.plan_chunks(run_linear, CFGS[:1], precision="tf32")
    plans = S.plan_chunks(run_linear, CFGS[:1], chunk_size=1, files=False, precision="default")
    with pytest.raises(ValueError, match="made with precision"):
        S.run_sweep(run_linear, CFGS[:1], plans=plans)  # the plan's programs are not the ones this call would run


def test_float64_on_tpu_warns(monkeypatch):
    """Lowering a float64 program for a TPU warns once per lowering; float32, or float64 elsewhere, does not."""
    monkeypatch.setattr(S, "_platform", lambda devices: "tpu")
    with jax.enable_x64(True), pytest.warns(S.Float64OnTPUWarning, match="TPU"):
        S._warn_x64_on_tpu(tuple(jax.local_devices()))
    with jax.enable_x64(True), pytest.warns(S.Float64OnTPUWarning):  # the engine's lowering is where it is raised
        S.plan_chunks(run_linear, CFGS[:1], chunk_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", S.Float64OnTPUWarning)
        S._warn_x64_on_tpu(tuple(jax.local_devices()))  # float32 on TPU: fine
        monkeypatch.setattr(S, "_platform", lambda devices: "gpu")
        with jax.enable_x64(True):
            S._warn_x64_on_tpu(tuple(jax.local_devices()))


def test_cpu_opt_level_is_validated_part_of_the_program_and_recorded(tmp_path, monkeypatch):
    """FA_JAX_CPU_OPT_LEVEL: a bad value names the variable before anything is traced; the level is in the
    program digest (a chunk computed at another level is never reused) and in run_labelled's metrics."""
    monkeypatch.setenv(S.CPU_OPT_LEVEL_ENV, "4")
    with pytest.raises(ValueError, match="invalid FA_JAX_CPU_OPT_LEVEL='4': allowed 0, 1, 2 or 3"):
        S.plan_chunks(run_linear, CFGS[:2], chunk_size=2)
    monkeypatch.setenv(S.CPU_OPT_LEVEL_ENV, "2")
    assert S.compiler_options("cpu") == {"xla_backend_optimization_level": 2}
    assert S.compiler_options("gpu") == {}
    at2 = S.plan_chunks(run_linear, CFGS[:2], chunk_size=2)[0].program
    monkeypatch.delenv(S.CPU_OPT_LEVEL_ENV)
    assert S.cpu_opt_level() == S.DEFAULT_CPU_OPT_LEVEL == 1
    at1 = S.plan_chunks(run_linear, CFGS[:2], chunk_size=2)[0].program
    assert (at1 != at2) == (jax.default_backend() == "cpu")
    # the three runs' program test_highest_is_bitwise_neutral_on_cpu compiled (nothing new here)
    _, metrics = S.run_labelled(run_linear, {"a": [({"s": i}, c) for i, c in enumerate(CFGS)]}, out_dir=tmp_path)
    assert metrics["compiler_options"] == S.compiler_options(jax.default_backend())
