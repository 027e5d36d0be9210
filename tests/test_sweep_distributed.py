"""The sweep engine across devices, processes and crashes, in subprocesses (each starts its own JAX):

* 8 forced host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``): the runs axis is sharded over
  all of them, two runs per device, and results equal the single-device results of this process (float
  reassociation only); the README's example (reduced) finishes there with and without the progress bar (it hung
  in ``device_get`` while batched LAPACK QRs blocked every thread of XLA's CPU pool);
* ``kill -9`` in the middle of a sweep, then a rerun: results bitwise identical to an uninterrupted sweep;
* two processes joined by ``jax.distributed.initialize`` each take half the chunks; ``fa-jax merge`` joins them.

Cost: the 8-device ``fa-jax sweep`` commands run in ONE 8-device process (a module fixture: one JAX start, and a
program compiled once serves every command that runs it); the single-device reference of the linear sweep is run
once in this process and shared.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_spec as _write

from fa_jax.results import load_results
from fa_jax.sweepfile import run_spec

ROOT = Path(__file__).resolve().parents[1]

LIN = """
experiment = "linear-regression"
name = "lin"
[fixed]
"data.d" = 3
"data.n_train" = 32
"train.steps" = {steps}
"train.n_records" = 5
[axes]
seed = {{ range = [0, {seeds}] }}
"optim.lr" = [0.01, 0.05, 4.0]
[axes.opt.cases]
gd = {{ "optim.name" = "gd" }}
sgd_b8 = {{ "optim.name" = "sgd", "optim.batch_size" = 8 }}
"""

FA = """
experiment = "feature-averaging"
name = "fa-tiny"
[fixed]
data = { d = 64, k = 4, n_pos = 2, n_train = 64, n_test = 64 }
"model.width" = 3
"optim.lr" = 0.01
train = { steps = 20, n_records = 4 }
attack = { n_points = 32, steps = 5, restarts = 1, record_points = 16, flip_grid = 32 }
[axes]
seed = { range = [0, 8] }
"optim.lr" = [0.01, 0.03]
"""


def _env(env_extra=None) -> dict:
    """This process's environment for a CLI subprocess: one device unless ``env_extra`` asks otherwise. The other
    XLA flags (the suite's LLVM level, tests/conftest.py) are kept: XLA_FLAGS is part of every chunk's program
    digest, so a chunk a subprocess writes must be found by this process under the same name."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    flags += (env_extra or {}).get("XLA_FLAGS", "").split()
    env.update({k: v for k, v in (env_extra or {}).items() if k != "XLA_FLAGS"})
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def _cli(args, env_extra=None, **kw):
    env = _env(env_extra)
    return subprocess.Popen([sys.executable, "-m", "fa_jax.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


EIGHT = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
# several `fa-jax` commands in one process; exit status: the worst of theirs
_MAIN_MANY = "import json, sys; from fa_jax.cli import main; sys.exit(max([main(a) for a in json.loads(sys.argv[1])]))"


def _run_cli_many(calls, env_extra=None, timeout=600):
    """``fa-jax`` commands (argument lists) one after another in ONE fresh process with its own JAX (so a program
    compiled by one command is reused by the next, as in a long-lived process)."""
    env = _env(env_extra)
    p = subprocess.Popen([sys.executable, "-c", _MAIN_MANY, json.dumps(calls)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"fa-jax {calls} still running after {timeout} s (hung?)\n{out}\n{err}")
    assert p.returncode == 0, f"exit {p.returncode}\n{out}\n{err}"
    return out


def _readme_reduced() -> str:
    """examples/fa_binary_1024.toml with 4 seeds, 30 steps, max_chunk 16: 64 runs, 4 chunks of 2 runs per device
    on 8 devices."""
    text = (ROOT / "examples" / "fa_binary_1024.toml").read_text()
    for old, new in (("range = [0, 64]", "range = [0, 4]"), ("steps = 300,", "steps = 30,"),
                     ("max_chunk = 128", "max_chunk = 16")):
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    """Every 8-device sweep of this module, in one 8-device process: the linear and FA sweeps (compared with one
    device below) and the reduced README example, quiet then with the progress bar."""
    d = tmp_path_factory.mktemp("eight")
    specs = {"lin": _write(d, LIN.format(steps=60, seeds=4), "lin.toml"), "fa": _write(d, FA, "fa.toml"),
             "readme": _write(d, _readme_reduced(), "fa_binary_reduced.toml")}
    _run_cli_many([["sweep", specs["lin"], "--out", str(d / "lin8"), "--quiet"],
                   ["sweep", specs["fa"], "--out", str(d / "fa8"), "--quiet"],
                   ["sweep", specs["readme"], "--out", str(d / "quiet"), "--quiet"],
                   ["sweep", specs["readme"], "--out", str(d / "bar")]], EIGHT)
    return d, specs


@pytest.fixture(scope="module")
def lin_single(tmp_path_factory):
    """LIN (60 steps, 4 seeds) on this process's one CPU device in chunks of 4: the reference of the 8-device and
    the two-process sweeps (compiled once for the module)."""
    d = tmp_path_factory.mktemp("lin1")
    spec = _write(d, LIN.format(steps=60, seeds=4), "lin.toml")
    run_spec(spec, d / "single", progress=False, chunk_size=4)
    return d / "single"


def _assert_same(a, b, rtol=0.0, atol=0.0):
    assert set(a.data_vars) == set(b.data_vars)
    worst = 0.0
    for k in a.data_vars:
        x, y = a[k].values, b[k].values
        if np.issubdtype(x.dtype, np.floating) and (rtol or atol):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=k)
            with np.errstate(invalid="ignore"):
                d = np.abs(x.astype(np.float64) - y)
            worst = max(worst, float(np.nanmax(d)) if d.size else 0.0)
        else:
            np.testing.assert_array_equal(x, y, err_msg=k)
    return worst


@pytest.mark.slow
def test_eight_devices_equal_one_device(eight, lin_single, tmp_path):
    d, specs = eight
    for name, one in (("lin", lin_single), ("fa", None)):
        if one is None:
            one = tmp_path / f"{name}1"
            run_spec(specs[name], one, progress=False)  # this process: one CPU device
        man = json.loads((d / f"{name}8" / "sweep.json").read_text())
        assert man["device"]["count"] == 8 and "device_count=8" in man["xla_flags"]
        assert all(c["size"] % 8 == 0 for c in man["plan"])  # the runs axis is split over all 8 devices
        assert max(c["size"] for c in man["plan"]) >= 16  # several runs per device (one per device never hung)
        a, b = load_results(one), load_results(d / f"{name}8")
        # same numbers up to float reassociation (measured on the FA sweep: relative <= 1.6e-6, most <= 3e-7)
        _assert_same(a, b, rtol=1e-5, atol=1e-6)
        assert np.array_equal(a["diverged"].values, b["diverged"].values)


@pytest.mark.slow
def test_readme_example_reduced_on_eight_devices_with_and_without_progress(eight):
    """examples/fa_binary_1024.toml reduced (see ``_readme_reduced``): 64 runs, 4 chunks of 2 runs per device on 8
    devices, quiet and with the progress bar (the bar's run reuses the quiet run's process: a hang is in running
    the chunks, not in compiling them)."""
    d, _ = eight
    results = []
    for name in ("quiet", "bar"):
        man = json.loads((d / name / "sweep.json").read_text())
        assert man["device"]["count"] == 8 and len(man["plan"]) == 4 and {c["size"] for c in man["plan"]} == {16}
        ds = load_results(d / name)
        assert bool(ds["complete"].all()) and dict(ds["complete"].sizes) == {"model.width": 4, "optim.lr": 4,
                                                                             "seed": 4}
        results.append(ds)
    _assert_same(*results)  # the same program on the same devices: bitwise


@pytest.mark.slow
def test_kill_minus_nine_then_resume_is_identical(tmp_path):
    spec = _write(tmp_path, LIN.format(steps=30000, seeds=4), "lin.toml")  # 24 chunks of 1 run, ~0.1 s each
    out = tmp_path / "killed"
    p = _cli(["sweep", spec, "--out", str(out), "--quiet", "--chunk-size", "1"])
    chunks = out / "chunks"
    deadline = time.time() + 240
    while time.time() < deadline:
        done = [f for f in os.listdir(chunks) if f.endswith(".npz")] if chunks.exists() else []
        if len(done) >= 3 or p.poll() is not None:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    n_done = len([f for f in os.listdir(chunks) if f.endswith(".npz")])
    assert p.returncode == -signal.SIGKILL and 1 <= n_done < 24, (p.returncode, n_done)
    res = run_spec(spec, out, progress=False)  # resume: the recorded plan, finished chunks loaded
    assert res["complete"] and res["stats"]["chunks_loaded"] >= n_done
    assert res["stats"]["chunks_run"] == 24 - res["stats"]["chunks_loaded"]
    run_spec(spec, tmp_path / "clean", progress=False, chunk_size=1)
    _assert_same(load_results(out), load_results(tmp_path / "clean"))  # bitwise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_share_chunks_and_merge(tmp_path, lin_single, capsys):
    spec = _write(tmp_path, LIN.format(steps=60, seeds=4), "lin.toml")
    port = _free_port()
    procs = [_cli(["sweep", spec, "--out", str(tmp_path / f"host{i}"), "--quiet", "--chunk-size", "4",
                   "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)])
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs, strict=True):
        assert p.returncode == 0, o + e
    f0, f1 = (set(os.listdir(tmp_path / f"host{i}" / "chunks")) for i in range(2))
    # 6 chunks of 4 runs, each claimed by exactly one process (sweep.ChunkQueue: whichever is free first), both
    # from process 0's plan (the two manifests record the same chunk files)
    assert len(f0) + len(f1) == 6 and not f0 & f1
    plan0, plan1 = (json.loads((tmp_path / f"host{i}" / "sweep.json").read_text())["plan"] for i in range(2))
    assert plan0 == plan1 and {c["file"] for c in plan0} == f0 | f1
    if f1:
        with pytest.raises(FileNotFoundError, match=f"{len(f1)} of 6 chunks missing"):
            load_results(tmp_path / "host0")
    from fa_jax.cli import main  # merging and finalising need no devices: this process

    assert main(["merge", str(tmp_path / "merged"), str(tmp_path / "host0"), str(tmp_path / "host1")]) == 0
    assert "6/6 present" in capsys.readouterr().out
    assert main(["sweep", spec, "--out", str(tmp_path / "merged"), "--quiet"]) == 0  # finalises: summary.json
    assert "ran 0 chunks, loaded 6" in capsys.readouterr().out
    assert (tmp_path / "merged" / "summary.json").exists()
    _assert_same(load_results(tmp_path / "merged"), load_results(lin_single))


class _FakeKV:
    """The distributed runtime's key-value calls ChunkQueue uses, in memory (one store shared by 'processes')."""

    def __init__(self):
        self.kv, self.counters = {}, {}

    def key_value_increment(self, key, inc):
        self.counters[key] = self.counters.get(key, 0) + inc
        return self.counters[key]

    def key_value_set(self, key, value):
        assert key not in self.kv  # the runtime refuses to overwrite
        self.kv[key] = value

    def blocking_key_value_get(self, key, timeout_ms):
        return self.kv[key]


def test_chunk_queue_publishes_one_plan_and_hands_each_chunk_out_once():
    """sweep.ChunkQueue: process 0's plan is every process's (rebuilt equal); chunks are claimed one at a time, each
    exactly once, so a process that is ready more often takes more of them (a slow host's leftovers); a process
    that reaches the call with other configs fails instead of mixing chunks."""
    from fa_jax.sweep import ChunkPlan, ChunkQueue

    kv = _FakeKV()
    plans = [ChunkPlan(0, "k", (2 * j, 2 * j + 1), 2, f"c{j}.npz", f"prog{j % 2}") for j in range(7)]
    q0, q1 = ChunkQueue(kv, "s/1", 0, "fp"), ChunkQueue(kv, "s/1", 1, "fp")
    assert q0.plans(lambda: plans) == plans
    assert q1.plans(lambda: pytest.fail("process 1 never plans")) == plans
    fast, slow = q0.claim(plans), q1.claim(plans)
    got = {0: [], 1: []}
    got[1].append(next(slow).file)  # the slow host takes one chunk and is busy ...
    got[0] += [p.file for p in fast]  # ... while the fast one drains the queue
    got[1] += [p.file for p in slow]
    assert len(got[0]) == 6 and len(got[1]) == 1 and sorted(got[0] + got[1]) == sorted(p.file for p in plans)
    with pytest.raises(ValueError, match="other configs than process 0"):
        ChunkQueue(kv, "s/1", 2, "another sweep").plans(lambda: plans)


def test_merge_refuses_a_different_sweep(tmp_path):
    from fa_jax.results import merge

    # different grids, same static groups and chunk size as the tests above: no new compilation needed
    a = _write(tmp_path, LIN.format(steps=60, seeds=2), "a.toml")
    b = _write(tmp_path, LIN.format(steps=60, seeds=3), "b.toml")
    run_spec(a, tmp_path / "A", progress=False, chunk_size=4)
    run_spec(b, tmp_path / "B", progress=False, chunk_size=4)
    with pytest.raises(ValueError, match="different sweep"):
        merge(tmp_path / "M", tmp_path / "A", tmp_path / "B")
