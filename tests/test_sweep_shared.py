"""Shared inputs (``shared=``): arrays every run of a group receives as an unbatched argument of the compiled
program, never as constants baked into it (fa_jax.sweep module docstring, "Shared inputs").

A tiny user experiment: least squares trained by a few GD steps on a shared (n, d) dataset, the learning rate
traced. Run with the data as a shared input and with the same data as a constant inside the run function, the
results agree to 1e-6 (float32; the two programs are compiled differently), and each run equals a float64 numpy
reference to 1e-5 relative. The shared program's text holds no constant of the data's shape; other data
recompute their chunk (and reuse the compiled program), the same data reload it; the memory plan counts the
data's bytes; a sweep file names such an experiment as ``"module:attribute"``. Runs without ``shared`` lower
exactly ``jit(vmap(run_fn))`` over the stacked traced values, as before the mechanism existed (so committed chunk
names are unchanged).
"""
from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_doc_block, run_on_devices, write_spec

from fa_jax import sweep as S
from fa_jax.config import static_key, traced, traced_values, with_values
from fa_jax.experiments import Experiment, describe

N, D = 24, 5  # unusual sizes: tensor<24x5xf32> in a program's text can only be the dataset
LRS = (0.05, 0.1, 0.2, 0.3)


@dataclasses.dataclass(frozen=True)
class LstSq:
    n: int = N  # static: the dataset's shape
    d: int = D
    steps: int = 6
    lr: float = traced(0.1)

    def validate(self):
        return self


def make_data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = (x @ rng.standard_normal(D) + 0.1 * rng.standard_normal(N)).astype(np.float32)
    return {"x": x, "y": y}


DATA = make_data()  # what shared() hands out; tests swap it (monkeypatch) to change the data


def shared_data(cfg: LstSq) -> dict[str, np.ndarray]:
    """The shared inputs: a function of the static fields only (here: always the current dataset)."""
    assert (cfg.n, cfg.d) == DATA["x"].shape
    return DATA


def gd(cfg: LstSq, x, y) -> dict:
    """``steps`` GD steps on L(w) = |x w - y|^2 / (2 n) from w = 0: w <- w - lr x^T (x w - y) / n."""
    w = jnp.zeros(x.shape[1], x.dtype)
    for _ in range(cfg.steps):
        w = w - cfg.lr * x.T @ (x @ w - y) / x.shape[0]
    return {"w": w, "loss": 0.5 * jnp.mean((x @ w - y) ** 2)}


def run_shared(cfg: LstSq, arrays) -> dict:
    return gd(cfg, arrays["x"], arrays["y"])


def run_const(cfg: LstSq) -> dict:
    return gd(cfg, jnp.asarray(DATA["x"]), jnp.asarray(DATA["y"]))  # numpy closed over: program constants


def reference(cfg: LstSq, data) -> dict:
    x, y = data["x"].astype(np.float64), data["y"].astype(np.float64)
    w = np.zeros(x.shape[1])
    for _ in range(cfg.steps):
        w = w - cfg.lr * x.T @ (x @ w - y) / x.shape[0]
    return {"w": w, "loss": 0.5 * np.mean((x @ w - y) ** 2)}


EXPERIMENT = Experiment(name="lstsq-shared", config=LstSq, run=run_shared, shared=shared_data,
                        dims=(("w", ("coef",)),), description="least squares by GD on a shared dataset")
CFGS = [LstSq(lr=lr) for lr in LRS]
KEY = static_key(CFGS[0])
DEVICES = tuple(jax.local_devices()[:1])


def _stats() -> dict:
    return {f.name: getattr(S.STATS, f.name) for f in dataclasses.fields(S.STATS)}


def _delta(before: dict) -> dict:
    return {k: getattr(S.STATS, k) - v for k, v in before.items() if getattr(S.STATS, k) != v}


def _stack(results, name):
    return np.stack([np.asarray(r[name]) for r in results])


@pytest.fixture(scope="module")
def both():
    """(results with the data shared, results with the data as constants): one program each."""
    return (S.run_sweep(run_shared, CFGS, shared=shared_data, devices=DEVICES),
            S.run_sweep(run_const, CFGS, devices=DEVICES))


def test_shared_equals_constant_and_float64_reference(both):
    shared, const = both
    for name in ("w", "loss"):
        np.testing.assert_allclose(_stack(shared, name), _stack(const, name), rtol=1e-6, atol=1e-6)
    for cfg, r in zip(CFGS, shared, strict=True):
        ref = reference(cfg, DATA)
        np.testing.assert_allclose(r["w"], ref["w"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["loss"], ref["loss"], rtol=1e-5)
    assert not np.allclose(shared[0]["w"], shared[-1]["w"])  # the traced lr matters


def _text(run_fn, shared=None) -> str:
    inputs = None if shared is None else S._shared_inputs(shared, CFGS[0])
    return S._lower(run_fn, KEY, CFGS[0], len(CFGS), DEVICES, shared=inputs).lowered.as_text()


def test_program_text_holds_no_data_constant():
    data_const = re.compile(r"stablehlo\.constant dense<[^\n]*tensor<24x5xf32>")
    shared_text, const_text = _text(run_shared, shared_data), _text(run_const)
    assert data_const.search(const_text)  # the pattern finds the baked-in dataset ...
    assert not data_const.search(shared_text)  # ... which the shared program does not hold
    main = next(line for line in shared_text.splitlines() if "func.func public @main" in line)
    assert "tensor<24x5xf32>" in main and "tensor<24xf32>" in main  # it takes the data as arguments instead


def test_runs_without_shared_lower_exactly_as_before():
    """The program of a sweep without ``shared`` is ``jit(vmap(run_fn))`` of the stacked traced values, written
    out here as the engine wrote it before shared inputs existed: the same digest, so the same chunk names."""
    def batched(values):
        return jax.vmap(lambda v: run_const(with_values(CFGS[0], v)))(values)

    sharding = jax.sharding.SingleDeviceSharding(DEVICES[0])
    example = S._stack([traced_values(CFGS[0])] * len(CFGS))
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in example.items()}
    with jax.default_matmul_precision(S.DEFAULT_PRECISION):
        text = jax.jit(batched).lower(abstract).as_text()
    plans = S.plan_chunks(run_const, CFGS, chunk_size=len(CFGS), devices=DEVICES)
    assert plans[0].program == S._program_digest(text, DEVICES) and plans[0].shared is None
    assert all("shared" not in p for p in S.plan_json(plans))


def test_shared_content_keys_the_chunk_cache(tmp_path, monkeypatch, both):
    first = _stats()
    res1 = S.run_sweep(run_shared, CFGS, shared=shared_data, out_dir=tmp_path, devices=DEVICES)
    assert _delta(first).get("chunks_run") == 1
    np.testing.assert_array_equal(_stack(res1, "w"), _stack(both[0], "w"))
    before = _stats()
    S.run_sweep(run_shared, CFGS, shared=shared_data, out_dir=tmp_path, devices=DEVICES)  # the same data
    d = _delta(before)
    assert d.get("chunks_loaded") == 1 and "chunks_run" not in d and "traces" not in d
    # one value of the data changed: the chunk is recomputed by the same compiled program (no recompilation)
    changed = {"x": DATA["x"].copy(), "y": DATA["y"]}
    changed["x"][3, 2] += 0.5
    monkeypatch.setattr(__import__(__name__), "DATA", changed)
    before = _stats()
    res2 = S.run_sweep(run_shared, CFGS, shared=shared_data, out_dir=tmp_path, devices=DEVICES)
    d = _delta(before)
    assert d.get("chunks_run") == 1 and "chunks_loaded" not in d and "traces" not in d
    assert not np.allclose(_stack(res2, "w"), _stack(res1, "w"))
    for cfg, r in zip(CFGS, res2, strict=True):
        np.testing.assert_allclose(r["w"], reference(cfg, changed)["w"], rtol=1e-5, atol=1e-6)
    monkeypatch.undo()
    before = _stats()
    res3 = S.run_sweep(run_shared, CFGS, shared=shared_data, out_dir=tmp_path, devices=DEVICES)  # back again
    assert _delta(before).get("chunks_loaded") == 1 and "chunks_run" not in _delta(before)
    np.testing.assert_array_equal(_stack(res3, "w"), _stack(res1, "w"))
    assert len(list((tmp_path / "chunks").glob("*.npz"))) == 2


def test_data_changed_between_planning_and_running_is_refused(monkeypatch, both):
    plans = S.plan_chunks(run_shared, CFGS, devices=DEVICES, chunk_size=len(CFGS), shared=shared_data)
    assert plans[0].shared == S._shared_inputs(shared_data, CFGS[0]).digest
    # what another process rebuilds the plan from (sweep.ChunkQueue) carries the digest
    assert [S.plan_from_json(d) for d in S.plan_json(plans, precision=True)] == plans
    monkeypatch.setattr(__import__(__name__), "DATA", make_data(seed=1))
    with pytest.raises(RuntimeError, match="shared inputs of chunk .* changed since the sweep was planned"):
        S.run_sweep(run_shared, CFGS, shared=shared_data, plans=plans, devices=DEVICES)
    with pytest.raises(ValueError, match="made with shared inputs"):
        S.run_sweep(run_shared, CFGS, plans=plans, devices=DEVICES)


def test_memory_plan_counts_the_shared_bytes(both):
    inputs = S._shared_inputs(shared_data, CFGS[0])
    assert inputs.nbytes == (N * D + N) * 4
    a, _ = S._program(run_shared, KEY, CFGS[0], len(CFGS), DEVICES, shared=inputs)
    b, _ = S._program(run_const, KEY, CFGS[0], len(CFGS), DEVICES)
    ma, mb = a.memory_analysis(), b.memory_analysis()
    assert ma.argument_size_in_bytes - mb.argument_size_in_bytes == inputs.nbytes
    assert S._footprint(a) >= S._footprint(b) + inputs.nbytes
    # a budget a few bytes short of the whole group: the shared bytes stay a fixed cost, the runs shrink to 3
    foot = S._footprint(a)
    plans = S.plan_chunks(run_shared, CFGS, devices=DEVICES, budget=foot - 1, shared=shared_data, files=False)
    assert [p.size for p in plans] == [3, 3]
    with pytest.raises(S.RunTooLargeError, match="shared inputs"):  # the data alone fill the budget
        S.plan_chunks(run_shared, CFGS, devices=DEVICES, budget=inputs.nbytes, shared=shared_data, files=False)


@pytest.mark.parametrize("bad, what", [
    (lambda cfg: [DATA["x"]], "returned list"),
    (lambda cfg: {"x": "pixels"}, "shared\\(cfg\\)\\['x'\\]"),
    (lambda cfg: {0: DATA["x"]}, "key 0"),
    (lambda cfg: {"x": np.array([object()])}, "numeric array"),
])
def test_bad_shared_is_refused_before_anything_is_traced(bad, what):
    before = _stats()
    with pytest.raises(TypeError, match=f"invalid shared=.*{what}"):
        S.run_sweep(run_shared, CFGS, shared=bad, devices=DEVICES)
    assert "lowerings" not in _delta(before) and "traces" not in _delta(before)
    with pytest.raises(TypeError, match="invalid Experiment shared"):
        Experiment(name="x", config=LstSq, run=run_shared, shared=3)


def test_sweep_file_runs_an_experiment_with_shared_inputs(tmp_path, both):
    from fa_jax.results import load_results
    from fa_jax.sweepfile import run_spec

    assert describe(EXPERIMENT)["shared"] == f"{__name__}:shared_data"
    spec = write_spec(tmp_path, f"""
        experiment = "{__name__}:EXPERIMENT"
        name = "lstsq"
        [axes]
        lr = {list(LRS)}
        """)
    before = _stats()
    out = run_spec(spec, tmp_path / "out", progress=False)
    assert out["complete"] and out["manifest"]["experiment"]["shared"] == f"{__name__}:shared_data"
    assert all(p["shared"] for p in out["manifest"]["plan"])
    assert "traces" not in _delta(before)  # the program the fixture compiled: the data are not in it
    ds = load_results(tmp_path / "out")
    np.testing.assert_allclose(ds["w"].values, _stack(both[0], "w"), rtol=1e-6)
    assert ds["w"].dims == ("lr", "coef")


def test_run_labelled_passes_shared_and_records_its_digest(tmp_path, both):
    import json

    from fa_jax.results import load_results

    runs = {"lstsq": [({"lr": c.lr}, c) for c in CFGS]}
    before = _stats()
    res, metrics = S.run_labelled(run_shared, runs, out_dir=tmp_path, tag="lstsq", shared=shared_data)
    assert metrics["programs_compiled"] == 0 and _delta(before).get("chunks_run") == 1
    np.testing.assert_array_equal(np.stack([r["w"] for _, r in res["lstsq"]]), _stack(both[0], "w"))
    man = json.loads((tmp_path / "runs.lstsq.json").read_text())
    assert [p["shared"] for p in man["plan"]] == [S._shared_inputs(shared_data, CFGS[0]).digest]
    np.testing.assert_array_equal(load_results(tmp_path)["w"].values, _stack(both[0], "w"))


_TWO_DEVICES = """
import json, sys
import jax
import numpy as np
import test_sweep_shared as T
from fa_jax import sweep as S

devices = tuple(jax.local_devices())
assert len(devices) == 2
inputs = S._shared_inputs(T.shared_data, T.CFGS[0])
low = S._lower(T.run_shared, T.KEY, T.CFGS[0], len(T.CFGS), devices, shared=inputs)
res = S.run_sweep(T.run_shared, T.CFGS, shared=T.shared_data, devices=devices)
print(json.dumps({"w": np.stack([r["w"] for r in res]).tolist(), "text": low.lowered.as_text()}))
"""


def test_two_devices_replicate_the_shared_inputs(both):
    """On a 2-device mesh the runs are split, the data replicated (``PartitionSpec()``): results equal one
    device's to float reassociation, and the program still holds no copy of the data."""
    doc = run_on_devices(_TWO_DEVICES, 2)
    np.testing.assert_allclose(np.asarray(doc["w"]), _stack(both[0], "w"), rtol=1e-6, atol=1e-6)
    assert not re.search(r"stablehlo\.constant dense<[^\n]*tensor<24x5xf32>", doc["text"])
    main = next(line for line in doc["text"].splitlines() if "func.func public @main" in line)
    # the traced values split over "runs", the data whole on each device (an empty sharding: replicated)
    assert re.search(r"tensor<4xf32> \{sdy.sharding = #sdy.sharding<@mesh, \[\{\"runs\"\}\]>\}", main)
    assert "tensor<24x5xf32> {sdy.sharding = #sdy.sharding<@mesh, [{}, {}]>}" in main


def test_the_sweeps_doc_example_runs(tmp_path, monkeypatch):
    """docs/sweeps.md's shared-inputs block, verbatim (against a float64 numpy reference)."""
    monkeypatch.chdir(tmp_path)
    ns = run_doc_block("sweeps.md", "### Shared inputs")
    x, y = ns["X"].astype(np.float64), ns["Y"].astype(np.float64)
    for lr, r in zip([0.01, 0.1, 0.5], ns["results"], strict=True):
        w = np.zeros(8)
        for _ in range(50):
            w = w - lr * x.T @ (x @ w - y) / len(x)
        np.testing.assert_allclose(r["w"], w, rtol=1e-4, atol=1e-5)
    assert len(list((tmp_path / "runs" / "fit" / "chunks").glob("*.npz"))) == 1


def shared_or_none(cfg: LstSq) -> dict[str, np.ndarray]:
    """The dataset for runs of ``steps = 6``; none (``{}``) for the others, whose data the program draws itself."""
    return DATA if cfg.steps == 6 else {}


def run_maybe_shared(cfg: LstSq, arrays=None) -> dict:
    if arrays is None:  # no shared inputs: data computed inside the program (no constant of the dataset's shape)
        x = jnp.sin(jnp.arange(N * D, dtype=jnp.float32).reshape(N, D))
        return gd(cfg, x, x @ jnp.linspace(-1.0, 1.0, D, dtype=jnp.float32))
    return run_shared(cfg, arrays)


def test_an_empty_mapping_runs_the_group_exactly_as_without_shared(tmp_path, both):
    """A group whose ``shared(cfg)`` is ``{}`` has no shared inputs: the same program digest, chunk file name and
    call ``run_fn(cfg)`` as a sweep without ``shared``, so its cached chunk reloads once ``shared=`` is added; the
    other group of the same sweep takes its data as an argument. Plans made without ``shared`` are refused for a
    group that has inputs."""
    free = [dataclasses.replace(c, steps=3) for c in CFGS]  # another static key: another group
    mixed = CFGS + free
    plans = S.plan_chunks(run_maybe_shared, mixed, chunk_size=len(CFGS), devices=DEVICES, shared=shared_or_none)
    alone = S.plan_chunks(run_maybe_shared, free, chunk_size=len(CFGS), devices=DEVICES)
    by_key = {p.key: p for p in plans}
    assert by_key[static_key(free[0])].shared is None and by_key[KEY].shared is not None
    assert (by_key[static_key(free[0])].program, by_key[static_key(free[0])].file) == (alone[0].program, alone[0].file)
    assert ["shared" in p for p in S.plan_json(plans)] == [p.key == KEY for p in plans]
    S.run_sweep(run_maybe_shared, free, out_dir=tmp_path, devices=DEVICES)  # the data-free runs, without shared
    before = _stats()
    res = S.run_sweep(run_maybe_shared, mixed, shared=shared_or_none, out_dir=tmp_path, devices=DEVICES)
    d = _delta(before)
    assert d.get("chunks_loaded") == 1 and d.get("chunks_run") == 1  # the data-free chunk reloaded
    np.testing.assert_array_equal(_stack(res[: len(CFGS)], "w"), _stack(both[0], "w"))
    ref = S.run_sweep(run_maybe_shared, free, devices=DEVICES)
    np.testing.assert_array_equal(_stack(res[len(CFGS):], "w"), _stack(ref, "w"))
    without = S.plan_chunks(run_maybe_shared, mixed, chunk_size=len(CFGS), devices=DEVICES, files=False)
    with pytest.raises(ValueError, match="planned without shared inputs"):
        S.run_sweep(run_maybe_shared, mixed, shared=shared_or_none, plans=without, devices=DEVICES)
