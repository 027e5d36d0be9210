"""Shared fixtures for the fa-jax core-engine tests.

* ``x64``: float64 for theory / precision checks; the previous setting is restored afterwards.
* ``fa_config(...)``: a tiny, validated feature-averaging run config (d=64, k=4, 20 steps, 4 records).
* Session-scoped sweep results: the FA run function compiles in ~10 s per (static config, chunk size), so every
  expensive sweep is run once here and shared between tests. Each distinct program is listed in
  ``FA_PROGRAMS`` below so the compile budget of the suite is visible.
"""
from __future__ import annotations

import os

# The suite is compile-bound, so it compiles cheaply (users keep XLA's and the engine's defaults):
# * XLA:CPU's LLVM level 0 for every program outside the sweep engine (jitted metrics, models, references;
#   XLA_FLAGS) and for the engine's own (FA_JAX_CPU_OPT_LEVEL, fa_jax.sweep.compiler_options; users get 1). Level 1
#   cut test_metrics_robustness, test_models_image_nets and test_metrics_margins_exact from 74.6 to 52.2 CPU-s
#   against XLA's default (3), level 0 cut test_sweep, test_trainer, test_optim and test_sweep_data from 139.3 to
#   112.7 CPU-s against level 1 (2026-12-06).
# * XLA:CPU's older elemental emitters instead of its MLIR fusion emitters (--xla_cpu_use_fusion_emitters=false):
#   backend compile of test_optim + test_trainer + test_metrics_robustness 33.6 -> 13.9 s, the whole suite 9.0 ->
#   5.8 compile-min (2026-12-07). Runs a little slower (benchmarks.throughput --quick: GD equal, SGD b = 32 5-9 %
#   slower), so users keep the default.
# * The run-bound end-to-end sim tests (RUN_BOUND_MODULES: a quick preset trains for tens of seconds) run the
#   engine at level 1 (the fixture _sim_tests_engine_level below): with the elemental emitters, hold-me-tight quick
#   took 140 s at level 0 against 75 s at level 1, sgd-vs-adaptive 76 -> 47 s, feature-averaging 48 -> 33 s,
#   test_sim_sgd_support.py 30.7 -> 22.8 s. The other sim modules compile more than they run and stay at 0
#   (module wall, -n0, 2026-12-07, level 0 vs 1: agop-collapse 15.4 vs 17.1 s, feature-averaging-real 19.1 vs
#   20.2, regimes 10.9 vs 13.1, noise map 9.0 vs 9.8).
# Float-rounding-level differences only. Set before jax starts its backend (it reads XLA_FLAGS once); the CLI and
# multi-device subprocesses inherit them; a setting the caller made wins.
# whether the caller set the engine's level: decided once, in the first process (the xdist controller), whose
# environment (with the level set below) the workers inherit
os.environ.setdefault("FA_JAX_TEST_CALLER_LEVEL", "1" if "FA_JAX_CPU_OPT_LEVEL" in os.environ else "0")
_USER_ENGINE_LEVEL = os.environ["FA_JAX_TEST_CALLER_LEVEL"] == "1"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
if "xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("FA_JAX_CPU_OPT_LEVEL", "0")

import jax  # after XLA_FLAGS
import numpy as np
import pytest

from fa_jax.config import with_values
from fa_jax.data.clusters import ClusterData
from fa_jax.experiments.feature_averaging import (
    AttackConfig,
    FARun,
    run_feature_averaging,
)
from fa_jax.models.two_layer import TwoLayerNet
from fa_jax.optim import OptimConfig
from fa_jax.sweep import run_sweep
from fa_jax.trainer import TrainConfig

# Compiled FA programs used by the suite (static config x chunk size):
#   binary bucket 3: sizes 1, 2, 3      (test_sweep: alone / guard, chunking, resume, divergence / 3-run grids)
#   binary bucket 8: size 2              (recompile guard's static change; padded side of padded == unpadded)
#   multiclass bucket 3: size 2 (k = 4 with g = 4 and g = 2), bucket 8: size 1 (padded vs unpadded widths)
#   cluster bucket 8 (k, g traced): binary size 2, multi-class size 3 (padded vs unpadded clusters)
FA_PROGRAMS = 8

try:  # issue 21: the property tests' deeper profile (HYPOTHESIS_PROFILE=deep, tests/test_fuzz.py)
    from hypothesis import settings as _hypothesis_settings
    _hypothesis_settings.register_profile("deep", max_examples=500, deadline=None, database=None)
except ImportError:  # hypothesis is in the [test] extra; without it tests/test_fuzz.py is skipped
    pass


RUN_BOUND_MODULES = frozenset({"test_sim_hold_me_tight", "test_sim_sgd_vs_adaptive", "test_sim_feature_averaging",
                               "test_sim_sgd_support"})


@pytest.fixture(scope="module", autouse=True)
def _sim_tests_engine_level(request):
    """The run-bound end-to-end sim modules (RUN_BOUND_MODULES) run the engine at LLVM level 1, the users' default
    (the header above); unless the caller set FA_JAX_CPU_OPT_LEVEL."""
    if _USER_ENGINE_LEVEL or request.module.__name__.rpartition(".")[2] not in RUN_BOUND_MODULES:
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FA_JAX_CPU_OPT_LEVEL", "1")
        yield


@pytest.fixture
def x64():
    """Enable float64 for one test, restoring the previous flag afterwards."""
    old = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


def make_fa_config(kind: str = "binary", **values) -> FARun:
    """Tiny validated FA config; ``values`` are dotted-path replacements (e.g. ``{"optim.lr": 2e-3}``)."""
    base = FARun(
        data=ClusterData(d=64, k=4, n_pos=2, n_train=64, n_test=64),
        model=TwoLayerNet(kind=kind, width=3),
        optim=OptimConfig(name="gd", lr=1e-2),
        train=TrainConfig(steps=20, n_records=4),
        attack=AttackConfig(n_points=32, steps=5, restarts=1, record_points=16, flip_grid=32),
    )
    return with_values(base, {k.replace("__", "."): v for k, v in values.items()}).validate()


@pytest.fixture(scope="session")
def fa_config():
    return make_fa_config


def flat(tree, prefix=""):
    """Flatten a nested result dict to ``{"a/b": np.ndarray}``."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flat(v, f"{prefix}{k}/"))
        return out
    return {prefix[:-1]: np.asarray(tree)}


@pytest.fixture(scope="session")
def fa_grid_configs():
    """Three binary configs differing only in traced values (one static program)."""
    return [
        make_fa_config(optim__lr=1e-2),
        make_fa_config(optim__lr=3e-2, data_seed=1, model_seed=2),
        make_fa_config(optim__lr=2e-2, model_seed=5, data__sigma=0.5),
    ]


@pytest.fixture(scope="session")
def fa_grid3(fa_grid_configs):
    """The three configs as ONE vmapped chunk of 3 runs."""
    return run_sweep(run_feature_averaging, fa_grid_configs)


@pytest.fixture(scope="session")
def fa_alone(fa_grid_configs):
    """The middle config of the grid, run on its own (a chunk of 1)."""
    return run_sweep(run_feature_averaging, [fa_grid_configs[1]])[0]


@pytest.fixture(scope="session")
def fa_chunked(fa_grid_configs):
    """The three configs with chunk_size=2 (chunks [0, 1] and [2, 2(pad)])."""
    return run_sweep(run_feature_averaging, fa_grid_configs, chunk_size=2)


def fa_replace(cfg: FARun, **values) -> FARun:
    return with_values(cfg, {k.replace("__", "."): v for k, v in values.items()}).validate()


__all__ = ["fa_replace", "flat", "make_fa_config"]


def write_spec(tmp_path, text: str, name: str = "spec.toml") -> str:
    """Write a sweep file (dedented) into ``tmp_path`` and return its path."""
    import textwrap

    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def np_lowpass_keep(n: int, keep_pct: float) -> np.ndarray:
    """Phi_freq's ``(n, n)`` kept mask written from the spec's scan (an independent reference for
    ``fa_jax.frequency.lowpass_mask``): r from n sqrt2 down in steps of n sqrt2 / 2000, stop at the first r whose
    kept fraction #{radius < r} / n^2 falls below keep_pct %; keep radius < r."""
    rad = np.hypot(*np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    r_max = n * np.sqrt(2.0)
    for i in range(2001):
        r = r_max - i * r_max / 2000
        if np.mean(rad < r) < keep_pct / 100:
            return rad < r
    return np.zeros((n, n), bool)


def assert_check_contract(doc: dict, required=()) -> None:
    """The end-to-end contract of a sim's ``summary.json`` (must-pass by provenance, never by outcome).

    * every check named in ``required`` is present, or listed in ``not_evaluated`` with a reason;
    * every check has a finite measurement (a ``paper`` / ``paper claim`` check's pass/fail is a result);
    * every ``derived`` check passes;
    * every check's ``passed`` agrees with a fresh :class:`fa_jax.summary.Check` (which also re-validates that the
      check could have failed: its tolerance does not admit its null value).
    The learning floor (accuracy above chance, loss below its initial value) is asserted by each sim's test.
    """
    import math

    from fa_jax.summary import Check

    names = {c["name"] for c in doc["checks"]}
    skipped = {c["name"]: c["reason"] for c in doc.get("not_evaluated", [])}
    missing = [n for n in required if n not in names and n not in skipped]
    assert not missing, f"required checks absent and not listed as not evaluated: {missing}"
    assert all(r.strip() for r in skipped.values()), skipped
    for c in doc["checks"]:
        m = c["measured"]
        assert isinstance(m, (int, float)) and math.isfinite(m), f"{c['name']}: non-finite measurement {m!r}"
        fresh = Check(c["name"], float(m), float(c["predicted"]), float(c["tolerance"]), c["mode"], c["provenance"],
                      c.get("note", ""), c["null"] if c["null"] is None else float(c["null"]))
        assert fresh.passed == c["passed"], c
    failed = [c for c in doc["checks"] if c["kind"] == "derived" and not c["passed"]]
    assert not failed, f"derived checks failed: {failed}"


def relu_net_and_bank():
    """A tiny float32 ReLU net on 8x8x1 images with 3 logits, 4 samples and a bank of two random subspaces (dims 4,
    2): the shared case of the batched-equals-single margin tests. Returns ``(rng, shape, logits, x, bank)`` (the
    rng continues the stream that drew them)."""
    import jax
    import jax.numpy as jnp

    from fa_jax.subspaces import Bank, basis_bank, random_subspaces

    rng = np.random.default_rng(2)
    shape = (8, 8, 1)
    k1 = jnp.asarray(rng.standard_normal((64, 16)) / 8, jnp.float32)
    k2 = jnp.asarray(rng.standard_normal((16, 3)) / 4, jnp.float32)

    def logits(xi):
        return jax.nn.relu(xi.reshape(-1) @ k1) @ k2

    x = jnp.asarray(rng.standard_normal((4, *shape)), jnp.float32)
    bank = Bank(bases=jnp.asarray(basis_bank([random_subspaces(3, 1, 4, np.eye(64))[0],
                                              random_subspaces(4, 1, 2, np.eye(64))[0]]).bases))
    return rng, shape, logits, x, bank


# ----------------------------------------------------------------------------- opt-in CPU profile
# FA_JAX_TEST_PROFILE=DIR: each test's CPU seconds (this process and its child processes: the CLI and multi-device
# tests spawn some) and wall seconds go to DIR/<worker>.json; `python tests/profile_report.py DIR` ranks them. CPU
# time, not wall time, because the suite shares 2 cores between workers: a test's wall time depends on its
# neighbour, its CPU time much less (issue 15: the slowest tests are listed in the README from this report).
_PROFILE: list[dict] = []
# Compile seconds in this process (trace + lowering + XLA backend compile), from jax.monitoring: the profile's
# "compile" column tells compile-bound tests (fewer distinct programs helps) from run-bound ones (smaller runs help).
_COMPILE = {"s": 0.0, "n": 0}


def _count_compile(event: str, seconds: float, **_) -> None:
    if event.startswith("/jax/core/compile/"):
        _COMPILE["s"] += seconds
        _COMPILE["n"] += event.endswith("backend_compile_duration")


def pytest_configure(config):
    import os
    import tempfile

    if os.environ.get("FA_JAX_TEST_PROFILE"):
        jax.monitoring.register_event_duration_secs_listener(_count_compile)
    # One persistent XLA compilation cache for the whole session (fa_jax.sweep.enable_compilation_cache), shared
    # by the xdist workers and the CLI subprocesses through FA_JAX_COMPILATION_CACHE (both inherit the controller's
    # environment): the CLI enables the cache for every user, so the tests run it that way too, in a fresh folder
    # per session (removed at the end: nothing carries over between runs, and ~/.cache is never touched). A hit is
    # the same executable (JAX keys entries by the optimised program, options, backend and versions). Measured on
    # the suite: no gain (28.1 CPU-min with it vs 27.4 without, 59 tests fewer then; 4 176 vs 4 152 XLA
    # compiles): the suite's programs are distinct, few compile twice. FA_JAX_COMPILATION_CACHE=off turns it off.
    if "FA_JAX_COMPILATION_CACHE" not in os.environ and not hasattr(config, "workerinput"):
        os.environ["FA_JAX_COMPILATION_CACHE"] = config._fa_jax_cache_owned = tempfile.mkdtemp(prefix="fa-jax-xla-")
    from fa_jax.sweep import enable_compilation_cache

    # programs under 0.2 s (single eager operations) cost more to store than to compile
    enable_compilation_cache(min_compile_seconds=0.2)


def pytest_unconfigure(config):
    import os
    import shutil

    owned = getattr(config, "_fa_jax_cache_owned", None)
    if owned:
        shutil.rmtree(owned, ignore_errors=True)
        os.environ.pop("FA_JAX_COMPILATION_CACHE", None)


def _cpu_seconds() -> tuple[float, float]:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    import os
    import time

    if not os.environ.get("FA_JAX_TEST_PROFILE"):
        yield
        return
    (a_self, a_kids), w0, c0 = _cpu_seconds(), time.perf_counter(), dict(_COMPILE)
    yield
    b_self, b_kids = _cpu_seconds()
    _PROFILE.append({"id": item.nodeid, "cpu": b_self - a_self, "child_cpu": b_kids - a_kids,
                     "wall": time.perf_counter() - w0, "compile": _COMPILE["s"] - c0["s"],
                     "compiles": _COMPILE["n"] - c0["n"]})


def pytest_sessionfinish(session):
    import json
    import os

    out = os.environ.get("FA_JAX_TEST_PROFILE")
    if out and _PROFILE:
        os.makedirs(out, exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(os.path.join(out, f"{worker}.json"), "w") as f:
            json.dump(_PROFILE, f)


def run_doc_block(doc: str, heading: str) -> dict:
    """Execute, verbatim, the first ```python block after ``heading`` in ``docs/<doc>`` (in the current folder: a
    test chdirs to its tmp_path first); returns its namespace, for the test to check what the block computed."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[1] / "docs" / doc).read_text()
    code = re.search(r"```python\n(.*?)```", text[text.index(heading):], re.DOTALL).group(1)
    ns: dict = {}
    exec(compile(code, f"docs/{doc}", "exec"), ns)  # noqa: S102  (the documented code)
    return ns


@__import__("contextlib").contextmanager
def registered(*experiments):
    """The experiment registry with ``experiments`` added for the duration (fa_jax.experiments.register_experiment),
    restored afterwards whatever happens: a test's toy experiment never leaks into the next test."""
    import fa_jax.experiments as E

    saved = dict(E._REGISTERED)
    try:
        for exp in experiments:
            E.register_experiment(exp)
        yield
    finally:
        E._REGISTERED.clear()
        E._REGISTERED.update(saved)


def run_on_devices(code: str, n: int = 2) -> dict:
    """Run python ``code`` in a subprocess with ``n`` forced host CPU devices (the suite's XLA flags kept, this
    folder importable): the JSON object its last stdout line prints. A failing subprocess fails the test with its
    stderr."""
    import json
    import pathlib
    import subprocess
    import sys

    here = str(pathlib.Path(__file__).parent)
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
    env = {**os.environ, "XLA_FLAGS": flags.strip(),
           "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def assert_readable_png(path) -> None:
    """A written figure is a real PNG of a size a paper would print (issue 20): at most 2 000 px wide and no long
    strip (width / height <= 2.6), so 4-5-panel strips and 6-pt legends cannot come back unnoticed."""
    import struct

    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    w, h = struct.unpack(">II", head[16:24])
    assert w <= 2000 and h <= 2600, f"{path}: {w} x {h} px, more than 2000 px wide or 2600 px high"
    assert w / h <= 2.6, f"{path}: {w} x {h} px, a strip wider than 2.6:1"
