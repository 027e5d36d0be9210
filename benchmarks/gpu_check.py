"""The accelerator check (issue 19 item 5): one command, <= 5 min on one GPU, results under
``benchmarks/results/<device-name>/``.

    benchmarks/gpu_check.sh [--budget-s 300] [--skip-presets] [--tiny] [--out benchmarks/results]
    python -m benchmarks.gpu_check ...                      # the same

Parts, run one after another, each in its own process with its own time limit (a part that fails or runs out of
time is recorded -- return code, wall time, the tail of its log -- and the next one runs; nothing here is fatal):

* ``device``: platform, device kind and count (names the results folder: the device kind in lower case, e.g.
  ``nvidia-h100-80gb-hbm3``; ``cpu`` on a CPU-only machine).
* ``gd``, ``sgd``: :mod:`benchmarks.throughput` on the default device, one mode each: R up to 65 536 runs, T = 50,
  chunks of 4 096 runs, the engine against the hand-written ``jit(vmap(train))`` and the NumPy loop, % of the
  fp32 (sgemm, precision "highest") peak measured in the same run. A part's JSON is rewritten after every point,
  so a part cut short by its limit keeps the Rs it finished.
* ``width``: the width-padding and width-packing overheads per R.
* ``cpu``: the same sweep (engine only, R <= 256, same T and chunks) on this host's CPU (``JAX_PLATFORMS=cpu``):
  the CPU/GPU ratio per mode and R.
* ``conv``: :mod:`benchmarks.conv_in_loop` with patches, nn.Conv and ``auto`` (which conv the device favours).
* ``presets``: ``fa-jax run NAME --preset quick`` for every simulation (a few at a time; ``--skip-presets`` skips
  them), pass/fail of every check and wall time per sim; the runs' outputs go to ``--work``, their
  ``summary.json`` files are copied beside the results.

Outputs in ``<out>/<device-name>/``: ``gpu_check.json`` (every part's status, the throughput table, the CPU/GPU
ratios, the presets' checks, issue 19's targets), ``throughput.json`` (the merged benchmark record, the layout of
:mod:`benchmarks.throughput`; ``--render`` redraws it), ``throughput.md`` (the docs table), ``throughput.png``, the
parts' own JSON files and ``logs/``. ``--tiny`` (or ``FA_JAX_GPU_CHECK_TINY=1``) shrinks everything to a smoke
test of the script itself (seconds of work; numbers meaningless).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("device", "gd", "sgd", "width", "cpu", "conv", "presets")
# seconds per part at the default 300 s budget (scaled with --budget-s); the sum may exceed the budget: every part
# is also clipped to what is left of it, in this order of importance
LIMITS = {"device": 45, "gd": 80, "sgd": 45, "presets": 110, "cpu": 35, "width": 25, "conv": 20}
ORDER = ("device", "gd", "sgd", "presets", "cpu", "width", "conv")
MIN_PART_S = 5.0  # a part left less than this is skipped (recorded as such)

FULL = {"steps": "50", "rs": "1,16,256,4096,65536", "rs_cpu": "1,16,256", "chunks": "4096", "reps": "2",
        "min_time": "1", "width_runs": "1,16,256", "widths": "16,64,256", "shared_rs": "256,4096"}
TINY = {"steps": "3", "rs": "2", "rs_cpu": "2", "chunks": "2", "reps": "1", "min_time": "0.01", "width_runs": "1",
        "widths": "4,8", "peak_n": "256", "shared_rs": "2"}


def slug(text: str) -> str:
    """A folder name from a device kind: ``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown-device"


def _tail(path: str, n: int = 1500) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def _kill(proc: subprocess.Popen) -> None:
    """End a part we started: its whole process group (it was started in a new session), TERM then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def _start(cmd: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
    os.makedirs(os.path.dirname(log), exist_ok=True)
    f = open(log, "w")  # noqa: SIM115 - closed by _finish
    f.write("$ " + " ".join(cmd) + "\n")
    f.flush()
    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})},
                            start_new_session=True)
    proc._log = f  # type: ignore[attr-defined]
    proc._t0 = time.perf_counter()  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen, log: str, timed_out: bool) -> dict:
    proc._log.close()  # type: ignore[attr-defined]
    rc = proc.returncode
    status = "timed out" if timed_out else ("ok" if rc == 0 else "failed")
    return {"status": status, "rc": rc, "wall_s": round(time.perf_counter() - proc._t0, 2),  # type: ignore
            "log": os.path.relpath(log, ROOT), **({} if status == "ok" else {"log_tail": _tail(log)})}


def run_part(cmd: list[str], log: str, limit: float, env: dict | None = None) -> dict:
    """Run one part with a time limit; its status, return code, wall time and (unless ok) the end of its log."""
    proc = _start(cmd, log, env)
    try:
        proc.wait(timeout=limit)
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill(proc)
        timed_out = True
    out = _finish(proc, log, timed_out)
    out["limit_s"] = round(limit, 1)
    return out


def run_parallel(jobs: dict[str, tuple[list[str], str, dict | None]], limit: float, parallel: int) -> dict:
    """Run ``{name: (cmd, log, env)}``, ``parallel`` at a time, all within ``limit`` seconds from now."""
    deadline = time.perf_counter() + limit
    pending, running, out = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < parallel and deadline - time.perf_counter() > MIN_PART_S:
            name = pending.pop(0)
            cmd, log, env = jobs[name]
            running[name] = (_start(cmd, log, env), log)
        if not running:
            break
        time.sleep(0.2)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                out[name] = _finish(proc, log, False)
                del running[name]
            elif time.perf_counter() > deadline:
                _kill(proc)
                out[name] = _finish(proc, log, True)
                del running[name]
    for name in pending:
        out[name] = {"status": "skipped", "reason": "out of time"}
    return out


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def merge_throughput(parts: dict[str, dict | None]) -> dict | None:
    """One benchmark record from the per-part JSONs (``gd``, ``sgd``, ``width``): the first one's metadata, every
    part's measurements, and issue 19's targets recomputed on the whole."""
    from benchmarks.throughput import targets

    docs = [d for d in parts.values() if d]
    if not docs:
        return None
    merged = {k: v for k, v in docs[0].items() if k not in ("gd", "sgd", "width", "targets", "shared_data")}
    merged["command"] = " ; ".join(d.get("command", "") for d in docs)
    for key in ("gd", "sgd", "width"):
        for d in docs:
            if key in d:
                merged[key] = d[key]
    for d in docs:  # the one-dataset comparison: each part's modes
        for mode, per in (d.get("shared_data") or {}).items():
            merged.setdefault("shared_data", {})[mode] = per
    merged["loadavg"] = {"start": docs[0]["loadavg"]["start"], "end": docs[-1]["loadavg"].get("end")
                         or docs[-1]["loadavg"]["start"]}
    merged["targets"] = targets(merged)
    return merged


def cpu_gpu_ratio(accel: dict | None, cpu: dict | None) -> dict:
    """``{mode: {R: {"device", "cpu", "device_over_cpu"}}}``: the engine's run-steps/s on the device and on this
    host's CPU for the same sweep (same T, chunks, R), where both were measured."""
    out: dict = {}
    if not accel or not cpu:
        return out
    for mode in ("gd", "sgd"):
        for R, e in (accel.get(mode) or {}).items():
            c = (cpu.get(mode) or {}).get(R)
            if c and e.get("fa_jax") and c.get("fa_jax") and e.get("steps") == c.get("steps"):
                out.setdefault(mode, {})[R] = {"device": e["fa_jax"], "cpu": c["fa_jax"],
                                               "device_over_cpu": e["fa_jax"] / c["fa_jax"]}
    return out


def preset_result(name: str, work: str, dest: str, status: dict) -> dict:
    """A preset run's status plus its checks (passed / total / the failed names) from the summary.json files it
    wrote (copied to ``dest``)."""
    out = dict(status)
    found = []
    for dirpath, _, files in os.walk(os.path.join(work, name)):
        if "summary.json" in files:
            found.append(os.path.join(dirpath, "summary.json"))
    checks, failed, devices = 0, [], set()
    for i, path in enumerate(sorted(found)):
        doc = _read(path) or {}
        for c in doc.get("checks", []):
            checks += 1
            if not c.get("passed"):
                failed.append(c.get("name"))
        dev = doc.get("device", {})
        devices.add(f"{dev.get('platform')} {dev.get('kind')}")
        os.makedirs(dest, exist_ok=True)
        shutil.copyfile(path, os.path.join(dest, f"{name}{'' if i == 0 else f'.{i}'}.summary.json"))
    out.update({"summaries": len(found), "checks": checks, "passed": checks - len(failed), "failed": failed,
                "devices": sorted(devices)})
    if status.get("status") == "ok" and not found:
        out["status"] = "failed"
        out["reason"] = "exited 0 but wrote no summary.json"
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"),
                    help="results go to OUT/<device-name>/")
    ap.add_argument("--work", default=os.path.join(ROOT, "runs", "gpu_check"), help="scratch for the preset runs")
    ap.add_argument("--budget-s", type=float, default=300.0, help="total wall-clock budget (parts are scaled to it)")
    ap.add_argument("--parts", default=None, help=f"comma list of {','.join(PARTS)} (default all; tiny: device,gd,cpu)")
    ap.add_argument("--skip-presets", action="store_true", help="do not run the sims' quick presets")
    ap.add_argument("--parallel", type=int, default=3, help="quick presets run this many at a time")
    ap.add_argument("--tiny", action="store_true", default=os.environ.get("FA_JAX_GPU_CHECK_TINY", "") not in ("", "0"),
                    help="a smoke test of this script: tiny sizes (also FA_JAX_GPU_CHECK_TINY=1)")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    size = TINY if args.tiny else FULL
    parts = [p for p in (args.parts.split(",") if args.parts else
                         (("device", "gd", "cpu") if args.tiny else PARTS)) if p]
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        ap.error(f"invalid --parts {bad}: allowed {PARTS}")
    if args.skip_presets and "presets" in parts:
        parts.remove("presets")
    scale = args.budget_s / 300.0
    py = sys.executable
    res: dict = {"command": "benchmarks/gpu_check.sh " + shlex.join(sys.argv[1:] if argv is None else argv),
                 "date": _dt.datetime.now().isoformat(timespec="seconds"), "tiny": args.tiny,
                 "budget_s": args.budget_s, "parts": {}}

    def limit(part: str) -> float:
        return min(LIMITS[part] * scale, deadline - time.perf_counter())

    # the device first: it names the results folder (a temp folder until then)
    tmp_dir = os.path.join(args.out, f".gpu_check.tmp{os.getpid()}")
    os.makedirs(tmp_dir, exist_ok=True)
    probe = ("import json, jax; d = jax.devices(); print('DEVICE ' + json.dumps({'platform': d[0].platform, "
             "'kind': d[0].device_kind, 'count': len(d), 'backend': jax.default_backend()}))")
    dev_log = os.path.join(tmp_dir, "logs", "device.log")
    res["parts"]["device"] = run_part([py, "-c", probe], dev_log, limit("device"))
    device = {"platform": "unknown", "kind": "unknown", "count": 0}
    for line in _tail(dev_log, 100000).splitlines():
        if line.startswith("DEVICE "):
            device = json.loads(line[7:])
    res["device"] = device
    name = "cpu" if device["platform"] == "cpu" else slug(device["kind"])
    out_dir = os.path.join(args.out, name)
    os.makedirs(out_dir, exist_ok=True)
    shutil.copytree(tmp_dir, out_dir, dirs_exist_ok=True)
    shutil.rmtree(tmp_dir, ignore_errors=True)
    res["parts"]["device"]["log"] = os.path.relpath(os.path.join(out_dir, "logs", "device.log"), ROOT)
    res["results_dir"] = os.path.relpath(out_dir, ROOT)
    log_dir = os.path.join(out_dir, "logs")
    print(f"device: {device}; results in {out_dir}", flush=True)

    def bench_cmd(json_name: str, *extra: str) -> list[str]:
        cmd = [py, "-m", "benchmarks.throughput", "--steps", size["steps"], "--chunks", size["chunks"],
               "--no-all-in-one", "--reps", size["reps"], "--min-time", size["min_time"], "--ref-runs", "2",
               "--json", os.path.join(out_dir, json_name), "--figure", ""]
        if "peak_n" in size:
            cmd += ["--peak-n", size["peak_n"]]
        return cmd + list(extra)

    commands = {
        "gd": bench_cmd("throughput_gd.json", "--modes", "gd", "--rs", size["rs"], "--no-width",
                        "--shared-rs", size["shared_rs"]),
        "sgd": bench_cmd("throughput_sgd.json", "--modes", "sgd", "--rs", size["rs"], "--no-width",
                         "--shared-rs", size["shared_rs"]),
        "width": bench_cmd("throughput_width.json", "--modes", "", "--impls", "fa_jax", "--width-runs",
                           size["width_runs"], "--widths", size["widths"], "--shared-rs", ""),
        "cpu": bench_cmd("throughput_cpu.json", "--modes", "gd,sgd", "--rs", size["rs_cpu"], "--impls", "fa_jax",
                         "--no-width", "--shared-rs", ""),
        "conv": [py, "-m", "benchmarks.conv_in_loop", "--impls", "patches,lax,auto",
                 "--json", os.path.join(out_dir, "conv_in_loop.json")]
        + (["--side", "6", "--batch", "4", "--runs", "2", "--steps", "2"] if args.tiny else []),
    }
    envs = {"cpu": {"JAX_PLATFORMS": "cpu"}}
    for part in ORDER:
        if part == "device" or part not in parts:
            continue
        left = limit(part)
        if left < MIN_PART_S:
            res["parts"][part] = {"status": "skipped", "reason": f"out of time ({left:.0f} s left of the budget)"}
            continue
        print(f"[{time.perf_counter() - t_start:5.0f} s] {part} (limit {left:.0f} s)", flush=True)
        if part == "presets":
            jobs = {}
            try:
                sims = subprocess.run([py, "-c", "import fa_jax_sims; print(' '.join(fa_jax_sims.NAMES))"], cwd=ROOT,
                                      capture_output=True, text=True, timeout=60, check=True).stdout.split()
            except (subprocess.SubprocessError, OSError) as e:
                res["parts"]["presets"] = {"status": "failed", "reason": f"could not list the sims: {e}"}
                continue
            env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # several sims share the device
            for sim in sims:
                work = os.path.join(args.work, name, sim)
                shutil.rmtree(work, ignore_errors=True)  # a fresh run: no chunk reloaded from an earlier one
                jobs[sim] = ([py, "-m", "fa_jax.cli", "run", sim, "--preset", "quick", "--out", work, "--quiet"],
                             os.path.join(log_dir, f"preset_{sim}.log"), env)
            t0 = time.perf_counter()
            status = run_parallel(jobs, left, max(1, args.parallel))
            per = {sim: preset_result(sim, os.path.join(args.work, name), os.path.join(out_dir, "presets"), st)
                   for sim, st in status.items()}
            ok = all(p["status"] == "ok" for p in per.values())
            res["parts"]["presets"] = {"status": "ok" if ok else "failed", "wall_s": round(time.perf_counter() - t0, 2),
                                       "limit_s": round(left, 1), "sims": per}
        else:
            res["parts"][part] = run_part(commands[part], os.path.join(log_dir, f"{part}.log"), left, envs.get(part))
        _write(out_dir, res)

    # ---- what the parts measured
    recs = {p: _read(os.path.join(out_dir, f"throughput_{p}.json")) for p in ("gd", "sgd", "width")}
    try:
        merged = merge_throughput(recs)
        if merged is not None:
            from benchmarks.throughput import markdown_table, plot

            with open(os.path.join(out_dir, "throughput.json"), "w") as f:
                json.dump(merged, f, indent=2)
            with open(os.path.join(out_dir, "throughput.md"), "w") as f:
                f.write(markdown_table(merged) + "\n")
            if merged.get("gd") or merged.get("sgd"):
                plot(merged, os.path.join(out_dir, "throughput.png"))
            res["throughput"] = {
                "peak_gflops": merged.get("peak_gflops"), "matmul": merged.get("matmul"),
                "table": {m: {R: {k: e.get(k) for k in ("fa_jax", "handwritten", "numpy_loop", "ratio_vs_handwritten",
                                                        "ratio_vs_numpy", "compile_s")} | {"pct_peak": e["pct_peak"]}
                              for R, e in merged.get(m, {}).items()} for m in ("gd", "sgd")},
                "width_overhead": {R: w["overhead"] for R, w in
                                   ((merged.get("width") or {}).get("per_R") or {}).items()},
                "targets": merged["targets"]}
        res["cpu_gpu_ratio"] = cpu_gpu_ratio(merged, _read(os.path.join(out_dir, "throughput_cpu.json")))
    except Exception as e:  # noqa: BLE001 - a report that cannot be assembled is recorded, not fatal
        res["report_error"] = f"{type(e).__name__}: {e}"
    res["wall_s"] = round(time.perf_counter() - t_start, 1)
    _write(out_dir, res)
    _print(res)
    return res


def _write(out_dir: str, res: dict) -> None:
    path = os.path.join(out_dir, "gpu_check.json")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=2)
    os.replace(tmp, path)


def _print(res: dict) -> None:
    print(f"\ngpu check on {res['device'].get('kind')} ({res['wall_s']:.0f} s of a {res['budget_s']:.0f} s budget); "
          f"results in {res.get('results_dir')}")
    for part, st in res["parts"].items():
        extra = f" {st.get('wall_s', '')} s" if "wall_s" in st else f" ({st.get('reason', '')})"
        print(f"  {part:8s} {st['status']}{extra}")
        if part == "presets":
            for sim, p in st.get("sims", {}).items():
                print(f"    {sim:24s} {p['status']:9s} {p.get('wall_s', '-')} s, checks "
                      f"{p.get('passed', 0)}/{p.get('checks', 0)} passed" +
                      (f"; failed: {', '.join(map(str, p['failed']))}" if p.get("failed") else ""))
    for mode, rows in res.get("cpu_gpu_ratio", {}).items():
        print(f"  {mode} device/CPU (engine, same sweep): " +
              ", ".join(f"R={R}: {v['device_over_cpu']:.1f}x" for R, v in rows.items()))
    for t in (res.get("throughput") or {}).get("targets", []):
        met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        v = "-" if t["measured"] is None else f"{t['measured']:.2f}"
        print(f"  target {t['name']}: {v} -> {met}")
    if "report_error" in res:
        print(f"  report error: {res['report_error']}")


if __name__ == "__main__":
    main()
