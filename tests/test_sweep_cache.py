"""The chunk cache is keyed by what runs (the lowered program), not by the run function's name.

Editing a run function, or a library function it calls, and re-running into the same ``out_dir`` recomputes; an
unchanged program (even a new function object, or a new process: see the kill -9 and two-process tests in
test_sweep_distributed.py) reloads without compiling. A batched CPU LAPACK call in a multi-device program is
refused (it deadlocks jaxlib's kernels) instead of hanging.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import write_spec

import fa_jax.experiments.linear as linear_mod
from fa_jax import linalg as L
from fa_jax import sweep as S
from fa_jax.config import traced
from fa_jax.results import load_results
from fa_jax.sweepfile import run_spec


@dataclasses.dataclass(frozen=True)
class Cfg:
    n: int = 4
    a: float = traced(1.0)


def squash(x):
    """A 'library function' the run function calls through this module's globals."""
    return jnp.tanh(x)


def make_run(body):
    """A run function named ``run`` in this module, whatever its body: an edit of the source, as a new process
    would see it (same module and qualified name, the identity the old cache key used)."""

    def run(cfg: Cfg) -> dict:
        return {"y": body(jnp.arange(cfg.n, dtype=jnp.float32) * cfg.a)}

    run.__module__, run.__qualname__ = __name__, "run"
    return run


def _via_squash(x):
    return sys.modules[__name__].squash(x)


CFGS = [Cfg(4, 0.5), Cfg(4, 1.5), Cfg(4, 2.5)]


def _sweep(run, out):
    before = dataclasses.replace(S.STATS)
    res = S.run_sweep(run, CFGS, out_dir=out, chunk_size=2)
    d = {f: getattr(S.STATS, f) - getattr(before, f) for f in ("chunks_run", "chunks_loaded", "traces")}
    return np.stack([r["y"] for r in res]), d


def test_unchanged_program_reloads_without_compiling(tmp_path):
    y1, d1 = _sweep(make_run(jnp.tanh), tmp_path)
    assert d1["chunks_run"] == 2 and d1["chunks_loaded"] == 0
    # a new function object with the same code: the same lowered program, so the chunks are reloaded and
    # nothing is compiled (the compiled-program cache is keyed by the program too)
    y2, d2 = _sweep(make_run(jnp.tanh), tmp_path)
    assert d2 == {"chunks_run": 0, "chunks_loaded": 2, "traces": 0}
    np.testing.assert_array_equal(y1, y2)


def test_finished_auto_sweep_reopens_without_compiling(tmp_path, monkeypatch):
    """An automatic chunk size needs a compiled footprint, except when every chunk file at the whole-group size is
    on disk: a finished sweep re-opened in a new process (the in-memory program caches emptied here) loads all its
    chunks and compiles nothing."""
    run = make_run(jnp.tanh)
    first = S.run_sweep(run, CFGS, out_dir=tmp_path)  # "auto": one chunk of 3
    monkeypatch.setattr(S, "_PROGRAMS", {})
    monkeypatch.setattr(S, "_COMPILED", {})
    before = dataclasses.replace(S.STATS)
    again = S.run_sweep(run, CFGS, out_dir=tmp_path)
    assert (S.STATS.traces - before.traces, S.STATS.chunks_loaded - before.chunks_loaded,
            S.STATS.chunks_run - before.chunks_run) == (0, 1, 0)
    np.testing.assert_array_equal(np.stack([r["y"] for r in first]), np.stack([r["y"] for r in again]))
    # a chunk missing: the group is fitted (compiled) and the missing chunk computed
    for f in os.listdir(tmp_path / "chunks"):
        os.remove(tmp_path / "chunks" / f)
    S.run_sweep(run, CFGS, out_dir=tmp_path)
    assert S.STATS.traces - before.traces == 1 and S.STATS.chunks_run - before.chunks_run == 1


def test_edited_run_function_recomputes(tmp_path):
    y1, _ = _sweep(make_run(jnp.tanh), tmp_path)
    # the reported case: tanh -> 10 sin in the run function, same name, same out_dir
    y2, d2 = _sweep(make_run(lambda x: 10 * jnp.sin(x)), tmp_path)
    assert d2["chunks_run"] == 2 and d2["chunks_loaded"] == 0
    x = np.stack([np.arange(4, dtype=np.float32) * c.a for c in CFGS])
    np.testing.assert_allclose(y1, np.tanh(x), rtol=1e-6)
    np.testing.assert_allclose(y2, 10 * np.sin(x), rtol=1e-5, atol=1e-6)
    assert len(os.listdir(tmp_path / "chunks")) == 4  # the old chunks stay, filed under the old program


def test_edited_library_function_recomputes(tmp_path, monkeypatch):
    run = make_run(_via_squash)
    y1, _ = _sweep(run, tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "squash", lambda x: 10 * jnp.sin(x))
    y2, d2 = _sweep(run, tmp_path)  # the SAME run function object; only a function it calls changed
    assert d2["chunks_run"] == 2 and d2["chunks_loaded"] == 0
    assert not np.allclose(y1, y2)
    monkeypatch.undo()
    y3, d3 = _sweep(run, tmp_path)  # back to the original code: its chunks are still there
    assert d3["chunks_run"] == 0 and d3["chunks_loaded"] == 2
    np.testing.assert_array_equal(y1, y3)


def test_chunk_names_cover_the_program_and_the_values(tmp_path):
    run = make_run(jnp.tanh)
    a = S.plan_chunks(run, CFGS, chunk_size=2)
    b = S.plan_chunks(make_run(jnp.tanh), CFGS, chunk_size=2)
    assert [p.file for p in a] == [p.file for p in b] and a[0].program == a[1].program
    assert a[0].file != a[1].file  # other traced values
    c = S.plan_chunks(make_run(jnp.cos), CFGS, chunk_size=2)
    assert {p.program for p in c}.isdisjoint({p.program for p in a})
    assert S.plan_chunks(run, CFGS, chunk_size=2, files=False)[0].file is None  # in-memory: nothing lowered
    with jax.enable_x64(True):  # a float64 run never reuses a float32 chunk
        assert S.plan_chunks(run, CFGS, chunk_size=2)[0].program != a[0].program


LIN = """
experiment = "linear-regression"
name = "lin-cache"
[fixed]
"data.d" = 3
"data.n_train" = 16
"train.steps" = 20
"train.n_records" = 3
[axes]
seed = { range = [0, 4] }
"""


def test_sweep_file_rerun_after_a_library_edit_recomputes(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, LIN)
    out = tmp_path / "out"
    first = run_spec(spec, out, progress=False, chunk_size=2)
    assert first["stats"]["chunks_run"] == 2
    files = [c["file"] for c in first["manifest"]["plan"]]
    w1 = load_results(out)["w"].values
    again = run_spec(spec, out, progress=False)  # unchanged: the recorded plan, every chunk reloaded
    assert again["stats"]["chunks_run"] == 0 and again["stats"]["chunks_loaded"] == 2
    # the loss the run function calls (fa_jax.losses.mse, through the experiment module) is edited
    monkeypatch.setattr(linear_mod, "mse", lambda pred, y: 0.5 * (10 * jnp.sin(pred) - y) ** 2)
    edited = run_spec(spec, out, progress=False)
    assert edited["stats"]["chunks_run"] == 2 and edited["stats"]["chunks_loaded"] == 0
    man = json.loads((out / "sweep.json").read_text())
    assert [c["runs"] for c in man["plan"]] == [c["runs"] for c in first["manifest"]["plan"]]  # same chunks
    assert {c["file"] for c in man["plan"]}.isdisjoint(files)  # filed under the new program
    assert not np.allclose(load_results(out)["w"].values, w1)


# ----------------------------------------------------------------------------- batched LAPACK guard
def _qr_text(fn):
    return jax.jit(jax.vmap(fn)).lower(jax.ShapeDtypeStruct((4, 16, 3), jnp.float32)).as_text()


def test_batched_lapack_refused_on_several_cpu_devices():
    d = jax.devices("cpu")[0]
    batched = _qr_text(lambda g: jnp.linalg.qr(g)[0])
    with pytest.raises(RuntimeError, match=r"lapack_sgeqrf_ffi \(4 matrices per call\).*fa_jax.linalg"):
        S._check_batched_lapack(batched, (d, d))
    S._check_batched_lapack(batched, (d,))  # one device: one program at a time holds the pool
    sequential = _qr_text(L.qr_q)
    assert "lapack_sgeqrf_ffi" in sequential
    S._check_batched_lapack(sequential, (d, d))  # one matrix per call never waits on the pool


# ----------------------------------------------------------------------------- persistent compilation cache
_CACHE_PROBE = r"""
import sys, jax, jax.numpy as jnp, numpy as np
from fa_jax.sweep import enable_compilation_cache
hits = []
jax.monitoring.register_event_listener(lambda e, **_: hits.append(e) if e.endswith("/cache_hits") else None)
jnp.ones(3).block_until_ready()  # something compiles before the cache is enabled (a notebook's order)
print(enable_compilation_cache(min_compile_seconds=0))
f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + jnp.tanh(x).sum())
out = np.asarray(f(jnp.arange(64.0, dtype=jnp.float32).reshape(8, 8) / 64))
print(len(hits))
print(out.tobytes().hex())
"""


def _cache_probe(env: dict) -> list[str]:
    import subprocess

    r = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_a_program_compiled_by_one_process_is_loaded_by_the_next(tmp_path):
    """fa-jax run / sweep enable the cache: a second process loads the first one's executable (a cache hit, even
    though the cache was enabled after an earlier compilation) and computes bitwise the same numbers."""
    env = {**os.environ, "FA_JAX_COMPILATION_CACHE": str(tmp_path / "xla")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    folder, hits1, out1 = _cache_probe(env)
    assert folder == str(tmp_path / "xla") and os.listdir(folder)
    _, hits2, out2 = _cache_probe(env)
    assert hits1 == "0" and int(hits2) >= 1  # the jit program and the eager operations around it
    assert out1 == out2
    env["FA_JAX_COMPILATION_CACHE"] = "off"
    assert _cache_probe(env)[:2] == ["None", "0"]


def test_compilation_cache_dir_default_env_and_off(monkeypatch, tmp_path):
    monkeypatch.delenv("FA_JAX_COMPILATION_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert S.compilation_cache_dir() == os.path.join(str(tmp_path), "fa-jax", "xla")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert S.compilation_cache_dir() == os.path.join(str(tmp_path / "home"), ".cache", "fa-jax", "xla")
    for off in ("off", "OFF", "", "0", "none"):
        monkeypatch.setenv("FA_JAX_COMPILATION_CACHE", off)
        assert S.compilation_cache_dir() is None
    monkeypatch.setenv("FA_JAX_COMPILATION_CACHE", "~/x")
    assert S.compilation_cache_dir() == os.path.join(str(tmp_path / "home"), "x")


def test_enable_compilation_cache_bad_input():
    with pytest.raises(ValueError, match="min_compile_seconds"):
        S.enable_compilation_cache(min_compile_seconds=-1)
