"""``fa-jax run NAME [--preset quick] [--set key=value ...] [--out DIR]``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from sims import REGISTRY

    p = argparse.ArgumentParser(prog="fa-jax", description="Sweepable JAX simulations of implicit bias.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a simulation")
    r.add_argument("name", help=f"one of: {', '.join(sorted(REGISTRY))}")
    r.add_argument("--preset", default="default", help="preset name (default: the paper's setting; 'quick')")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable)")
    r.add_argument("--out", default=None, help="output directory (default: runs/NAME)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    sub.add_parser("list", help="list simulations")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for name, mod in sorted(REGISTRY.items()):
            print(f"{name:24s} presets: {', '.join(mod.PRESETS)}")
        return 0
    if args.name not in REGISTRY:
        p.error(f"unknown simulation {args.name!r}; allowed: {', '.join(sorted(REGISTRY))}")
    mod = REGISTRY[args.name]
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


if __name__ == "__main__":
    raise SystemExit(main())
