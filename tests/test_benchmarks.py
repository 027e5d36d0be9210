"""The benchmark's reference loops compute the same gradient as fa-jax (correctness only; no timing here)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root: benchmarks/

from benchmarks.throughput import TOL, gradient_check, torch


def test_reference_gradients_match_fa_jax():
    """Tiny instance (d=16, n=32, m=4): the hand-written NumPy backward (and PyTorch autograd, when installed)
    agree with jax.grad of fa-jax's loss, full batch and one mini-batch, to 1e-4 relative."""
    res = gradient_check(d=16, n=32, width=4, k=4, batch=8, init_scale=0.3, seed=3)
    assert set(res) == ({"numpy", "torch"} if torch is not None else {"numpy"})
    for impl, cases in res.items():
        for case, err in cases.items():
            assert err <= TOL, (impl, case, err)


def test_conv_in_loop_benchmark_runs(tmp_path):
    """The conv-in-a-loop benchmark runs end to end on a tiny net and writes its JSON (no timing asserted)."""
    import json

    from benchmarks.conv_in_loop import main

    out = tmp_path / "conv.json"
    res = main(["--side", "6", "--batch", "4", "--runs", "2", "--steps", "2", "--json", str(out)])
    assert set(res) >= {"lax", "patches", "device"} and json.loads(out.read_text())["settings"]["side"] == 6
    assert all(v > 0 for impl in ("lax", "patches") for v in res[impl].values())
