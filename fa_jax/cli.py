"""``fa-jax run NAME [--preset quick] [--set key=value ...] [--out DIR]``, ``fa-jax sweep SPEC.toml --out DIR``,
``fa-jax merge DIR SRC...``, ``fa-jax list``, ``fa-jax docs [--check]``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from sims import NAMES, get_sim

    p = argparse.ArgumentParser(prog="fa-jax", description="Sweepable JAX simulations of implicit bias.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a simulation")
    r.add_argument("name", help=f"one of: {', '.join(NAMES)}")
    r.add_argument("--preset", default="default", help="preset name (default: the paper's setting; 'quick')")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    r.add_argument("--out", default=None, help="output directory (default: runs/NAME)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    sub.add_parser("list", help="list simulations")
    w = sub.add_parser("sweep", help="run a TOML sweep file (resumable; see docs/sweeps.md)")
    w.add_argument("spec", help="path to the sweep file (.toml)")
    w.add_argument("--out", required=True, help="results directory (rerun the same command to resume)")
    w.add_argument("--overwrite", action="store_true", help="replace results of a different sweep in --out")
    w.add_argument("--quiet", action="store_true", help="no progress bar (CI, logs)")
    w.add_argument("--memory-budget", default=None, help="per-device bytes for one chunk, e.g. 2GB")
    w.add_argument("--chunk-size", default=None, help="runs per compiled call (int) or 'auto'")
    w.add_argument("--coordinator", default=None, help="multi-host: coordinator address host:port")
    w.add_argument("--num-processes", type=int, default=None, help="multi-host: number of processes")
    w.add_argument("--process-id", type=int, default=None, help="multi-host: this process's index")
    w.add_argument("--wait", type=float, default=0.0,
                   help="multi-host on a shared disk: process 0 waits this many seconds for the others' chunks")
    w.add_argument("--distributed", action="store_true",
                   help="multi-host: jax.distributed.initialize() from the cluster environment (SLURM, ...)")
    dc = sub.add_parser("docs", help="render docs/<sim>.md result tables from the committed summary.json files")
    dc.add_argument("--check", action="store_true", help="only report pages that differ (exit 1), write nothing")
    m = sub.add_parser("merge", help="copy the chunks of other directories of the same sweep into DIR")
    m.add_argument("dest")
    m.add_argument("sources", nargs="+")
    args = p.parse_args(argv)
    if args.cmd == "sweep":
        return _sweep(args, argv)
    if args.cmd == "docs":
        from .docs import update

        changed = update(check=args.check)
        for pth in changed:
            print(("differs: " if args.check else "wrote: ") + pth)
        return 1 if (args.check and changed) else 0
    if args.cmd == "merge":
        from .results import merge

        try:
            r = merge(args.dest, *args.sources)
        except (ValueError, FileNotFoundError) as e:
            print(f"fa-jax: error: {e}", file=sys.stderr)
            return 2
        print(f"merged: copied {r['copied']} chunk files; {r['present']}/{r['total']} present in {args.dest}")
        return 0
    if args.cmd == "list":
        for name in NAMES:
            try:
                presets = ", ".join(get_sim(name).PRESETS)
            except ImportError as e:  # a sim still being built must not break the listing of the others
                presets = f"(unavailable: {e})"
            print(f"{name:24s} presets: {presets}")
        return 0
    if args.name not in NAMES:
        p.error(f"unknown simulation {args.name!r}; allowed: {', '.join(NAMES)}")
    mod = get_sim(args.name)
    if args.preset not in mod.PRESETS:
        p.error(f"unknown preset {args.preset!r} for {args.name}; allowed: {', '.join(mod.PRESETS)}")
    from .config import apply_overrides

    try:
        cfg = apply_overrides(mod.PRESETS[args.preset], args.sets)
    except ValueError as e:
        p.error(str(e))
    out = args.out or f"runs/{args.name}"
    command = "fa-jax " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        mod.run(cfg, out, progress=not args.quiet, command=command)
    except ValueError as e:  # bad configuration: a clear message, exit 2
        print(f"fa-jax: error: {e}", file=sys.stderr)
        return 2
    return 0


def _sweep(args, argv) -> int:
    import jax

    if args.coordinator or args.num_processes or args.distributed:
        if args.distributed:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                       process_id=args.process_id)
    from .summary import format_checks
    from .sweepfile import run_spec

    chunk = args.chunk_size
    if chunk is not None and chunk != "auto":
        try:
            chunk = int(chunk)
        except ValueError:
            print(f"fa-jax: error: invalid --chunk-size={chunk!r}: allowed an integer >= 1 or 'auto'",
                  file=sys.stderr)
            return 2
    command = "fa-jax " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        res = run_spec(args.spec, args.out, overwrite=args.overwrite, progress=not args.quiet,
                       memory_budget=args.memory_budget, chunk_size=chunk, command=command, wait=args.wait)
    except (ValueError, FileNotFoundError) as e:
        print(f"fa-jax: error: {e}", file=sys.stderr)
        return 2
    st = res["stats"]
    print(f"{st['n_runs']} runs in {st['n_groups']} groups ({st['n_chunks']} chunks): compiled "
          f"{st['programs_compiled']} programs, ran {st['chunks_run']} chunks, loaded {st['chunks_loaded']} "
          f"from {args.out}, {st['wall_seconds']:.1f} s on {st['devices']} device(s)")
    if not res["complete"]:
        print(f"{len(res['missing'])} chunks belong to other processes or are unfinished; when all are in "
              f"{args.out} (shared disk, or `fa-jax merge`), rerun this command to write summary.json")
        return 0
    summ = res["summary"]
    if summ is not None and summ["checks"]:
        print(format_checks(summ["checks"]))
    print(f"results: fa_jax.load_results({args.out!r}); summary: {args.out}/summary.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
