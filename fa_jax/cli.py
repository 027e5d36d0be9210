"""``fa-jax run NAME [--preset quick] [--set key=value ...] [--out DIR]``, ``fa-jax run NAME --help``,
``fa-jax sweep SPEC.toml --out DIR``, ``fa-jax merge DIR SRC...``, ``fa-jax list``, ``fa-jax docs [--check]``,
``fa-jax plot DIR --x AXIS --y AXIS --metric VAR [--reduce DIM=RULE] [--select DIM=VALUE] [--theory M:F] [--sweep TAG]
[--part PART] -o FILE``.

``fa-jax run NAME --help`` documents the sim's config from the code itself, with the standard library only: the
fields (``dataclasses.fields``: name, type, the preset's value, ``param`` metadata: alias and followed rule), one
line each from the field's trailing comment (or an attribute docstring under it; comment blocks above a group of
fields print as its heading), read with ``inspect`` + ``tokenize``, and the allowed ranges from the
``require(ok, param, allowed, got)`` calls of the config's ``validate()`` (read with ``ast``; their f-strings
evaluated on the shown config, so a bound such as ``k <= d`` prints with the preset's d). A CLI library such as
tyro would generate similar help, but it parses one flag per field: it would replace ``--set KEY=VALUE`` (the same
grammar as sweep files' dotted paths, tested and documented) and add a dependency for what ~100 lines do here.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import math
import os
import shutil
import sys
import textwrap
import tokenize


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")  # the command line writes figure files, never windows (before anything imports pyplot)
    from fa_jax_sims import NAMES, get_sim

    p = argparse.ArgumentParser(prog="fa-jax", description="Sweepable JAX simulations of implicit bias.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a simulation (NAME --help: its config fields)", add_help=False)
    r.add_argument("name", nargs="?", metavar="NAME", help=f"one of: {', '.join(NAMES)}")
    r.add_argument("-h", "--help", action="store_true",
                   help="show this help and, with NAME, every config field of the sim (of --preset, after --set)")
    r.add_argument("--preset", default="default", help="preset name (default: the paper's setting; 'quick')")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, KEY its name or dotted path (repeatable; NAME --help lists "
                        "the fields)")
    r.add_argument("--out", default=None, help="output directory (default: runs/NAME)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    sub.add_parser("list", help="list the simulations: description, presets, measured wall times")
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
    pl = sub.add_parser(  # checked and drawn by fa_jax/plotting/phase.py
        "plot", help="phase diagram: a heat-map of a metric over two axes of a sweep (docs/sweeps.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Heat-map of one metric over two dims of a sweep's results (fa-jax sweep --out) or a "
                    "simulation's\n(fa-jax run --out). Every other dim of the metric is reduced (--reduce) or "
                    "selected (--select).\nA simulation's runs come in parts: --part picks one, and its label keys "
                    "become dims\n(e.g. sgd-support's part sgd: b, seed, traj); --sweep picks one of several "
                    "sweeps (sgd-vs-adaptive).",
        epilog="examples:\n"
               "  fa-jax plot runs/lin-edge --x optim.lr --y data.d --metric records/loss --select step=-1 \\\n"
               "              --reduce seed=median -o lin_edge.png\n"
               "  fa-jax plot runs/sgd-support --part sgd --x b --y seed --metric support_score \\\n"
               "              --reduce traj=median -o sgd_score.png\n"
               "  fa-jax plot runs/sgd-vs-adaptive --sweep sgd-vs-adaptive --part s1 --x alpha --y w_scale \\\n"
               "              --metric records/adv_risk --select opt=adam,step=-1 -o s1_adam.png")
    pl.add_argument("dir", metavar="DIR", help="a sweep's output folder (fa-jax sweep --out / fa-jax run --out)")
    pl.add_argument("--sweep", default=None, metavar="TAG",
                    help="which sweep of a folder holding several (fa-jax run sgd-vs-adaptive: sgd-vs-adaptive, "
                         "sgd-vs-adaptive-nets); a tag or an experiment name")
    pl.add_argument("--part", default=None, metavar="PART",
                    help="which part of a simulation's runs (needed when it has several); its label keys become "
                         "dims for --x, --y, --reduce and --select (its labels must form a full grid)")
    pl.add_argument("--x", required=True, metavar="AXIS", help="dim on the horizontal axis")
    pl.add_argument("--y", required=True, metavar="AXIS", help="dim on the vertical axis")
    pl.add_argument("--metric", required=True, metavar="VAR", help="data variable that colours the cells")
    pl.add_argument("--reduce", action="append", default=[], metavar="DIM=RULE",
                    help="reduce another dim; RULE: median, mean, min or max (repeatable or comma-separated)")
    pl.add_argument("--select", action="append", default=[], metavar="DIM=VALUE",
                    help="fix a dim: a coordinate value, else an integer position (-1: last), first, last")
    pl.add_argument("--theory", default=None, metavar="MODULE:FUNCTION",
                    help="f(x, y) -> predicted value (centres the colour map), or {'value', 'boundary'}")
    pl.add_argument("--xscale", default="auto", help="auto, linear, log or category")
    pl.add_argument("--yscale", default="auto", help="auto, linear, log or category")
    pl.add_argument("--cscale", default="auto", help="colour scale without a theory: auto, linear or log")
    pl.add_argument("--title", default=None, help="figure title (default: 'SWEEP: METRIC')")
    pl.add_argument("-o", "--out", required=True, metavar="FILE", help="image file (.png, .pdf, .svg, ...)")
    args = p.parse_args(argv)
    if args.cmd in ("run", "sweep"):
        from .sweep import enable_compilation_cache

        # a program compiled by an earlier run is loaded, not compiled again (FA_JAX_COMPILATION_CACHE=off: never)
        enable_compilation_cache()
    if args.cmd == "sweep":
        return _sweep(args, argv)
    if args.cmd == "plot":
        from .plotting.phase import main as plot_main

        return plot_main(args)
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
        print(list_text())
        return 0
    if args.name is None:
        if args.help:
            print(r.format_help() + f"\nsimulations: {', '.join(NAMES)} (fa-jax list)")
            return 0
        r.error("the following arguments are required: NAME")
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
    if args.help:
        print(r.format_help())
        print(config_help(args.name, mod, args.preset, cfg))
        return 0
    out = f"runs/{args.name}" if args.out is None else args.out
    bad_out = _out_problem(out)
    if bad_out:
        p.error(bad_out)
    command = "fa-jax " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        mod.run(cfg, out, progress=not args.quiet, command=command)
    except ValueError as e:  # bad configuration: a clear message, exit 2
        print(f"fa-jax: error: {e}{_set_as(e, cfg, args.sets)}", file=sys.stderr)
        return 2
    return 0


def _set_as(e: ValueError, cfg, sets: list[str]) -> str:
    """`` (set as --set data.k=...)`` when the error names a field the user set by another name (an alias)."""
    from .config import ConfigError, _resolve

    if not isinstance(e, ConfigError):
        return ""
    for item in sets:
        key = item.split("=", 1)[0].strip()
        try:
            path = _resolve(cfg, key)
        except ValueError:
            continue
        if path == e.param and key != path:
            return f" (set as --set {item})"
    return ""


def _out_problem(out: str) -> str:
    """Why ``--out`` cannot hold results ("" if it can): it must name a folder (created if absent)."""
    if not out.strip():
        return f"invalid --out={out!r}: allowed a folder path (created if absent)"
    if os.path.exists(out) and not os.path.isdir(out):
        return f"invalid --out={out!r}: it is a file; allowed a folder (created if absent)"
    return ""


def _sweep(args, argv) -> int:
    import jax

    if args.num_processes is not None and args.num_processes < 1:
        print(f"fa-jax: error: invalid --num-processes={args.num_processes}: allowed an integer >= 1",
              file=sys.stderr)
        return 2
    n_proc = args.num_processes
    if args.process_id is not None and not (args.process_id >= 0 and (n_proc is None or args.process_id < n_proc)):
        print(f"fa-jax: error: invalid --process-id={args.process_id}: allowed 0 <= process id < --num-processes",
              file=sys.stderr)
        return 2
    if args.coordinator or args.num_processes or args.distributed:
        if args.distributed:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                       process_id=args.process_id)
    from .summary import format_checks
    from .sweepfile import parse_bytes, run_spec

    def fail(msg: str) -> int:
        print(f"fa-jax: error: {msg}", file=sys.stderr)
        return 2

    chunk = args.chunk_size
    if chunk is not None and chunk != "auto":
        try:
            chunk = int(chunk)
        except ValueError:
            chunk = None
        if chunk is None or chunk < 1:  # 0 must not mean 'auto'
            return fail(f"invalid --chunk-size={args.chunk_size!r}: allowed an integer >= 1 or 'auto'")
    if args.memory_budget is not None:
        try:
            parse_bytes(args.memory_budget)
        except ValueError:
            return fail(f"invalid --memory-budget={args.memory_budget!r}: allowed a positive size in bytes or with "
                        "a unit, e.g. 2GB, 512MB")
    if not (math.isfinite(args.wait) and args.wait >= 0):
        return fail(f"invalid --wait={args.wait!r}: allowed a finite number of seconds >= 0")
    bad_out = _out_problem(args.out)
    if bad_out:
        return fail(bad_out)
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


# ----------------------------------------------------------------------------- fa-jax run NAME --help
def field_docs(cls) -> dict[str, tuple[str, str]]:
    """``{field: (heading, description)}`` from the class source: the description is the field's trailing comment
    (else a string literal right under it, PEP 257's attribute docstring); the heading is the block of comment
    lines right above it, if any ("" where absent)."""
    src = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, whole line)
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.string.lstrip("#").strip(), tok.line.strip().startswith("#"))
    body = next(n for n in ast.parse(src).body if isinstance(n, ast.ClassDef)).body
    out, prev_end = {}, 0
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            head = [comments[ln][0] for ln in range(prev_end + 1, node.lineno) if comments.get(ln, ("", False))[1]]
            desc = " ".join(comments[ln][0] for ln in range(node.lineno, node.end_lineno + 1)
                            if ln in comments and not comments[ln][1])
            nxt = body[i + 1] if i + 1 < len(body) else None
            if not desc and isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant) \
                    and isinstance(nxt.value.value, str):
                desc = " ".join(nxt.value.value.split())
            out[node.target.id] = (" ".join(head), desc)
        prev_end = node.end_lineno
    return out


def _fstring_text(node: ast.JoinedStr) -> str:
    parts = []
    for v in node.values:
        if isinstance(v, ast.Constant):
            parts.append(str(v.value))
        else:  # the expression itself, readable: self.d -> d
            parts.append(ast.unparse(v.value).replace("self.", ""))
    return "".join(parts)


def allowed_ranges(cls, cfg) -> dict[str, list[str]]:
    """``{field: [allowed, ...]}`` from the ``require(ok, param, allowed, got)`` calls of ``cls.validate``: ``param``
    a literal (``"a/b"`` names both) or the variable of a ``for`` loop over literal names; an f-string ``allowed``
    is evaluated on ``cfg`` (its bounds as this config has them), or printed as written if that fails."""
    fn = getattr(cls, "validate", None)
    if fn is None:
        return {}
    scope = vars(sys.modules[cls.__module__])
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, list[str]] = {}

    def text(node, binding) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            try:
                return eval(compile(ast.Expression(node), "<validate>", "eval"), scope, {"self": cfg, **binding})
            except Exception:  # noqa: BLE001 - any failure: print the f-string as written
                return _fstring_text(node)
        return None

    def visit(node, env: dict[str, list[str]]):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and isinstance(node.iter, (ast.Tuple,
                                                                                                       ast.List)) \
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.iter.elts):
            env = {**env, node.target.id: [e.value for e in node.iter.elts]}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "require" \
                and len(node.args) >= 3:
            pnode = node.args[1]
            if isinstance(pnode, ast.Constant) and isinstance(pnode.value, str):
                targets = [(n, {}) for n in pnode.value.split("/")]
            elif isinstance(pnode, ast.Name) and pnode.id in env:
                targets = [(n, {pnode.id: n}) for n in env[pnode.id]]
            else:
                targets = []
            for name, binding in targets:
                t = text(node.args[2], binding)
                if name in names and t and t not in out.get(name, []):
                    out.setdefault(name, []).append(t)
        for child in ast.iter_child_nodes(node):
            visit(child, env)

    visit(ast.parse(textwrap.dedent(inspect.getsource(fn))), {})
    return out


def _value_text(v) -> str:
    """A value as help prints it: strings quoted, floats to 6 significant digits (sqrt 2: 1.41421)."""
    if isinstance(v, float):
        t = f"{v:.6g}"
        return t if any(c in t for c in ".ein") else t + ".0"  # 1.0 stays a float to the eye
    if isinstance(v, (tuple, list)):
        inner = ", ".join(_value_text(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    return repr(v) if isinstance(v, str) else str(v)


def config_help(name: str, mod, preset: str, cfg) -> str:
    """Every field of the sim's config: name, type, value in ``cfg`` (the preset after --set), a one-line
    description, its alias, the rule it follows and its allowed range."""
    from fa_jax_sims import DESCRIPTIONS

    cls = type(cfg)
    docs, ranges = field_docs(cls), allowed_ranges(cls, cfg)
    width = max(80, min(shutil.get_terminal_size((120, 24)).columns, 140))
    rows = []
    for f in dataclasses.fields(cls):
        head, desc = docs.get(f.name, ("", ""))
        extra = []
        if f.metadata.get("alias"):
            extra.append(f"--set {f.metadata['alias']}")
        if f.metadata.get("follows"):
            extra.append(f"default follows {f.metadata['follows']}")
        allowed = ranges.get(f.name, []) + ([f.metadata["allowed"]] if f.metadata.get("allowed") else [])
        if allowed:
            extra.append("allowed: " + "; ".join(allowed))
        full = desc + (f" [{'; '.join(extra)}]" if extra else "")
        rows.append((head, f.name, str(f.type), _value_text(getattr(cfg, f.name)), full))
    wn = max(len(r[1]) for r in rows)
    wt = max(len(r[2]) for r in rows)
    wv = min(max(len(r[3]) for r in rows), 14)
    indent = 2 + wn + 2 + wt + 2 + wv + 2
    lines = [f"{name}: {DESCRIPTIONS.get(name, '')}",
             (f"config {cls.__name__} of preset {preset!r} (presets: {', '.join(mod.PRESETS)}); VALUE is this "
              "preset's, after any --set. Set a field with --set KEY=VALUE: KEY the field's name or the dotted "
              "path shown; tuples as 1,2,3; none for None."), ""]
    lines = [ln for para in lines for ln in (textwrap.wrap(para, width) or [""])]
    lines.append(f"  {'FIELD':{wn}}  {'TYPE':{wt}}  {'VALUE':{wv}}  DESCRIPTION")
    for head, fname, ftype, val, desc in rows:
        if head:
            lines += textwrap.wrap(head, width, initial_indent="  # ", subsequent_indent="  # ",
                                   break_long_words=False, break_on_hyphens=False)
        left = f"  {fname:{wn}}  {ftype:{wt}}  {val:{wv}}  "
        wrapped = textwrap.wrap(desc, max(width - indent, 30), break_long_words=False, break_on_hyphens=False)
        wrapped = wrapped or [""]
        if len(left) > indent:  # a long value: the description starts on the next line
            lines.append(left.rstrip())
            left = " " * indent
        lines.append((left + wrapped[0]).rstrip())
        lines += [" " * indent + w for w in wrapped[1:]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- fa-jax list
WALL_TIMES = "figures/wall_times.json"


def _duration(sec: float) -> str:
    return f"{sec:.0f} s" if sec < 120 else (f"{sec / 60:.1f} min" if sec < 7200 else f"{sec / 3600:.1f} h")


def _measured(v) -> str:
    return _duration(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def wall_times(root: str | None = None) -> dict[str, dict[str, str]]:
    """``{sim: {"quick": text, "default": text}}``. Default: :data:`WALL_TIMES`' ``"default"`` entry (seconds or a
    note: e.g. the run shared the machine) where it has one, else the ``metrics.wall_seconds`` of the sim's committed
    ``summary.json`` (:data:`fa_jax.docs.PAGES`) when that run computed every chunk itself (a run that resumed cached
    chunks timed only its remainder).
    Quick: :data:`WALL_TIMES`' ``"quick"`` entry. Absent anywhere: "not measured"."""
    from .docs import PAGES
    from .docs import _root as docs_root

    root = root or docs_root()
    try:
        with open(os.path.join(root, WALL_TIMES)) as f:
            table = json.load(f)
    except (OSError, ValueError):
        table = {}
    out = {}
    for name, path in PAGES.items():
        default = table.get("default", {}).get(name, "not measured")
        try:
            with open(os.path.join(root, path)) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            doc = {}
        m, dev = doc.get("metrics", {}), doc.get("device", {})
        if name not in table.get("default", {}) and "wall_seconds" in m and not m.get("chunks_loaded_from_cache", 0):
            default = f"{_duration(float(m['wall_seconds']))} ({dev.get('platform', '?')}, " \
                      f"{dev.get('cpu_count', '?')} cores)"
        else:
            default = _measured(default)
        out[name] = {"quick": _measured(table.get("quick", {}).get(name, "not measured")), "default": default}
    return out


def list_text(root: str | None = None) -> str:
    """What ``fa-jax list`` prints: per sim a line with its description, a line with its presets and wall times."""
    from fa_jax_sims import DESCRIPTIONS, NAMES, get_sim

    times = wall_times(root)
    lines = []
    for name in NAMES:
        try:
            presets = ", ".join(get_sim(name).PRESETS)
        except ImportError as e:  # a sim still being built must not break the listing of the others
            presets = f"(unavailable: {e})"
        t = times.get(name, {"quick": "not measured", "default": "not measured"})
        lines += [f"{name:24s}{DESCRIPTIONS.get(name, '')}",
                  f"{'':24s}presets: {presets}; wall time: quick {t['quick']}, default {t['default']}"]
    lines.append("fa-jax run NAME --help lists a sim's config fields; wall times: the committed summaries "
                 f"(figures/) and {WALL_TIMES}.")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
