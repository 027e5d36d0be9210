"""Rank the tests of an opt-in CPU profile (``FA_JAX_TEST_PROFILE=DIR python -m pytest``; see conftest.py).

``python tests/profile_report.py DIR [--top N]`` prints the total CPU minutes, the files and the tests with the most
CPU seconds (the process's own plus its child processes'), as Markdown tables for the README."""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dir")
    ap.add_argument("--top", type=int, default=10)
    a = ap.parse_args(argv)
    rows = []
    for f in sorted(glob.glob(os.path.join(a.dir, "*.json"))):
        with open(f) as fh:
            rows += json.load(fh)
    if not rows:
        raise SystemExit(f"no profile rows under {a.dir}")
    cpu = {r["id"]: r["cpu"] + r["child_cpu"] for r in rows}
    # in-process compile seconds (trace + lowering + XLA); absent from profiles written before it was recorded
    comp = {r["id"]: (r.get("compile", 0.0), r.get("compiles", 0)) for r in rows}
    files: dict[str, list] = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for k, v in cpu.items():
        f = files[k.split("::")[0]]
        f[0] += v
        f[1] += comp[k][0]
        f[2] += comp[k][1]
    total_c = sum(c for c, _ in comp.values())
    print(f"{len(rows)} tests, {sum(cpu.values()) / 60:.1f} CPU-min, of which {total_c / 60:.1f} min compiling "
          f"({sum(n for _, n in comp.values())} XLA compiles)\n")
    print("| file | CPU s | compile s | compiles |\n|---|---:|---:|---:|")
    for k, (v, c, n) in sorted(files.items(), key=lambda kv: -kv[1][0])[: a.top]:
        print(f"| `{k}` | {v:.0f} | {c:.0f} | {n} |")
    print("\n| test | CPU s | compile s | compiles |\n|---|---:|---:|---:|")
    for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])[: a.top]:
        print(f"| `{k}` | {v:.0f} | {comp[k][0]:.0f} | {comp[k][1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
