"""The benchmarks: the references compute the same gradient as fa-jax, the hand-written reference trains, the docs
table renders from the committed JSON, targets are reported, and the GPU check script is robust and runs end to end
at tiny size (correctness only; no timing asserted here)."""
from __future__ import annotations

import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the repo root: benchmarks/

from benchmarks.throughput import TOL, gradient_check, torch


def test_reference_gradients_match_fa_jax():
    """Tiny instance (d=16, n=32, m=4): the hand-written NumPy backward (and PyTorch autograd, when installed)
    and the hand-written jit(vmap) reference's loss agree with jax.grad of fa-jax's loss, full batch and one
    mini-batch, to 1e-4 relative."""
    res = gradient_check(d=16, n=32, width=4, k=4, batch=8, init_scale=0.3, seed=3)
    assert set(res) == {"numpy", "handwritten"} | ({"torch"} if torch is not None else set())
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


def test_handwritten_reference_trains():
    """The hand-written jit(vmap(train)) reference (its own generator, fori_loop): a chunked call returns one
    finite final loss per run, the chunking does not change a run, and training lowers the loss."""
    from benchmarks.throughput import hand_call

    at0 = hand_call("gd", 0, 3, 2)  # the initial loss: init 1e-3, so ~log 2
    two = hand_call("gd", 2, 3, 2)
    assert at0.shape == two.shape == (3,) and np.all(np.isfinite(two))
    np.testing.assert_allclose(at0, np.log(2.0), rtol=1e-3)
    assert np.all(two < at0)
    np.testing.assert_array_equal(hand_call("gd", 2, 2, 2), two[:2])  # same seeds, same program: same runs


def test_render_keeps_the_committed_records_readable(tmp_path):
    """The docs table and the figure come from a benchmark JSON: the committed records (written before the
    hand-written reference and the per-R padding existed) still render, with the new columns empty."""
    from benchmarks.throughput import main, markdown_table

    res = main(["--render", os.path.join(ROOT, "benchmarks/results/cpu_idle_T2000_2026-11-23.json"),
                "--figure", str(tmp_path / "fig.png"), "--markdown", str(tmp_path / "table.md")])
    table = (tmp_path / "table.md").read_text()
    assert table.strip() == markdown_table(res).strip() and (tmp_path / "fig.png").stat().st_size > 0
    assert "| GD | 1\u202f024 | 1\u202f548 (53 %) | — | — | 1\u202f608 | 0.96 |" in table
    assert "R = 40: 2.99×" in table


def test_targets_report_issue_19_thresholds():
    """Targets are reported from the record (never asserted): worst R decides, absent measurements are n/a."""
    from benchmarks.throughput import targets

    def entry(fa, hand, numpy, pct):
        return {"fa_jax": fa, "handwritten": hand, "numpy_loop": numpy, "ratio_vs_handwritten": fa / hand,
                "ratio_vs_numpy": fa / numpy, "pct_peak": {"fa_jax": pct},
                "fa_jax_variants": {"16": {"compile_s": 1.5}}}

    res = {"device": {"platform": "cpu"},
           "gd": {"1": entry(10, 5, 1, 10), "16": entry(10, 8, 4, 85), "64": entry(10, 12, 6, 90)},
           "width": {"widths": [16, 64], "steps": 5, "per_R": {
               "2": {"overhead": 2.1, "packed_overhead": 1.1, "padded": {"compile_s": 1.0, "programs": 1},
                     "separate": {"compile_s": 6.0, "programs": 2}, "packed": {"compile_s": 1.5, "programs": 1}},
               "8": {"overhead": 2.4, "packed_overhead": 1.2, "padded": {"compile_s": 1.0, "programs": 1},
                     "separate": {"compile_s": 6.0, "programs": 2}, "packed": {"compile_s": 1.5, "programs": 1}}}}}
    got = {t["name"]: t for t in targets(res)}
    hand = got["gd: engine / hand-written >= 1.0"]
    assert hand["met"] is False and hand["at_R"] == 64 and abs(hand["measured"] - 10 / 12) < 1e-12
    assert got["gd R >= 16: % of fp32 peak >= 80"]["met"] is True
    assert got["gd R >= 16: engine / NumPy loop >= 2"]["measured"] == 10 / 6
    assert got["sgd R >= 64: engine / NumPy loop >= 5"]["met"] is None
    packed = got["width sweep, packed / one program per width <= 1.3x"]
    assert packed["met"] is True and packed["measured"] == 1.2 and packed["at_R"] == 8
    assert got["compile <= 2 s per program"]["measured"] == 3.0 and got["compile <= 2 s per program"]["met"] is False


def test_gpu_check_parts_are_time_limited_and_never_fatal(tmp_path, monkeypatch):
    """A part that runs past its limit is killed and recorded as timed out; one that fails is recorded with its
    log tail; the CPU/GPU ratio and the merge use what was measured; a preset's checks are read back."""
    import json

    from benchmarks import gpu_check as G

    t0 = __import__("time").perf_counter()
    slow = G.run_part([sys.executable, "-c", "import time; time.sleep(30)"], str(tmp_path / "slow.log"), 1.0)
    assert slow["status"] == "timed out" and __import__("time").perf_counter() - t0 < 15
    bad = G.run_part([sys.executable, "-c", "raise SystemExit('boom')"], str(tmp_path / "bad.log"), 30)
    assert bad["status"] == "failed" and bad["rc"] == 1 and "boom" in bad["log_tail"]
    monkeypatch.setattr(G, "MIN_PART_S", 0.1)
    par = G.run_parallel({"a": ([sys.executable, "-c", "pass"], str(tmp_path / "a.log"), None),
                          "b": ([sys.executable, "-c", "import time; time.sleep(30)"], str(tmp_path / "b.log"), None),
                          "c": ([sys.executable, "-c", "pass"], str(tmp_path / "c.log"), None)},
                         limit=3.0, parallel=2)
    assert par["a"]["status"] == "ok" and par["b"]["status"] == "timed out", par
    assert par["c"]["status"] in ("ok", "skipped")
    assert G.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"

    def rec(rate, steps=50):
        return {"gd": {"16": {"fa_jax": rate, "steps": steps}}, "loadavg": {"start": [0.0], "end": [0.0]},
                "device": {"platform": "gpu"}}

    assert G.cpu_gpu_ratio(rec(300.0), rec(100.0))["gd"]["16"]["device_over_cpu"] == 3.0
    assert G.cpu_gpu_ratio(rec(300.0), rec(100.0, steps=3)) == {}  # not the same sweep
    merged = G.merge_throughput({"gd": rec(300.0), "sgd": None, "width": None})
    assert merged["gd"]["16"]["fa_jax"] == 300.0 and isinstance(merged["targets"], list)
    run_dir = tmp_path / "work" / "sim-a"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"checks": [{"name": "c1", "passed": True},
                                                                 {"name": "c2", "passed": False}],
                                                      "device": {"platform": "gpu", "kind": "H100"}}))
    got = G.preset_result("sim-a", str(tmp_path / "work"), str(tmp_path / "dest"), {"status": "ok", "wall_s": 1.0})
    assert (got["checks"], got["passed"], got["failed"]) == (2, 1, ["c2"]) and (tmp_path / "dest").is_dir()
    assert G.preset_result("sim-b", str(tmp_path / "work"), str(tmp_path / "dest"), {"status": "ok"})["status"] \
        == "failed"


def test_gpu_check_runs_end_to_end_tiny(tmp_path):
    """The script itself at tiny size on this machine (device probe + the CPU sweep part; no presets): results
    land in OUT/<device-name>/ with every part's status."""
    import json
    import subprocess

    out = subprocess.run([os.path.join(ROOT, "benchmarks", "gpu_check.sh"), "--tiny", "--parts", "device,cpu",
                          "--skip-presets", "--out", str(tmp_path / "res"), "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=240, check=False,
                         env={**os.environ, "PYTHON": sys.executable})
    assert out.returncode == 0, out.stdout + out.stderr
    import jax

    name = "cpu" if jax.default_backend() == "cpu" else None
    (folder,) = [p for p in (tmp_path / "res").iterdir() if not p.name.startswith(".")]
    assert name is None or folder.name == name
    doc = json.loads((folder / "gpu_check.json").read_text())
    assert doc["parts"]["device"]["status"] == "ok" and doc["parts"]["cpu"]["status"] == "ok", doc["parts"]
    cpu = json.loads((folder / "throughput_cpu.json").read_text())
    assert cpu["gd"]["2"]["fa_jax"] > 0 and cpu["gd"]["2"]["handwritten"] is None and cpu["torch"]


def test_one_dataset_comparison_runs_and_agrees():
    """The one-dataset part (issue 19 item 1): the engine with a data stage, the engine with each run's own copy
    and the hand-written jit(vmap) with the data unbatched train the same runs (final losses equal to float
    reassociation, below the initial log 2); the table and the target rows come from the record."""
    from benchmarks.throughput import bench_shared, markdown_table, targets

    per = bench_shared(["gd"], [3], steps=2, reps=1, peak=100.0, log=lambda m: None, min_time=0.0)["gd"]["3"]
    assert per["max_rel_diff_shared_vs_own"] < 1e-5
    assert {"shared", "own", "handwritten"} <= set(per) and per["sharing_speedup"] > 0
    assert set(per["compile_s"]) == {"shared", "own", "handwritten"}
    res = {"device": {"platform": "cpu"}, "shared_data": {"gd": {"3": per}}}
    got = {t["name"]: t for t in targets(res)}
    assert got["one dataset, gd: engine (data stage) / hand-written >= 1.0"]["measured"] == per["ratio_vs_handwritten"]
    table = markdown_table({**res, "peak_gflops": 100.0, "loadavg": {"start": [0.0]}, "command": "x"})
    assert "| GD | 3 |" in table and "× sharing" in table


def test_hand_written_data_split_keeps_the_reference_run():
    """hand_data + hand_fit are handwritten_train split in two (the same keys and operations)."""
    import jax

    from benchmarks.throughput import hand_data, hand_fit, handwritten_train

    x, y = hand_data(3)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda s: handwritten_train(s, mode="sgd", steps=3))(3)),
                                  np.asarray(jax.jit(lambda s: hand_fit(s, x, y, mode="sgd", steps=3))(3)))


def test_the_width_point_times_three_layouts_of_the_same_runs():
    """The benchmark's width comparison at tiny size (widths 2 and 4, one run each, 3 GD steps): one program per
    width, one padded program and one packed slot; all three give the same final losses (float reassociation)."""
    from benchmarks.throughput import _width_point

    w = _width_point(3, 1, 1, (2, 4), 0.0, "highest")
    assert (w["separate"]["programs"], w["padded"]["programs"], w["packed"]["programs"]) == (2, 1, 1)
    assert w["packed"]["slots"] == 1 and w["packed"]["fill"] == 1.0
    assert w["padded"]["max_rel_diff_vs_separate"] < 1e-5 and w["packed"]["max_rel_diff_vs_separate"] < 1e-5
    assert w["overhead"] > 0 and w["packed_overhead"] > 0


def test_width_packing_layouts_agree():
    """benchmarks.width_packing at tiny size (d = 8, 16 samples, widths 2 and 5, 2 runs each, 20 GD steps): the
    padded and the packed layouts train the same runs as the separate programs (final losses to 1e-5), and each
    run learned (loss below log 2, its value at the ~0 init). No timing asserted."""
    import math

    from benchmarks.width_packing import compare

    res = compare(widths=(2, 5), per=2, steps=20, d=8, n=16, reps=1, lr=0.5)
    sep = np.asarray(res["losses"]["separate"])
    assert sep.shape == (4,) and np.all(sep < 0.9 * math.log(2))
    for k in ("padded", "packed"):
        np.testing.assert_allclose(res["losses"][k], sep, rtol=1e-5, err_msg=k)
