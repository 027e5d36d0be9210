"""Fuzz report (issue 21): generated bad inputs through every entry point, tallied by what the user would see.

    python tests/fuzz_report.py [--family sim,set,sweep,cli] [--json OUT] [--show CATEGORY] [--timeout S]

Families (each case is one bad value, everything else a valid quick preset / small sweep file):

* ``sim``   -- a sim's Python config (``dataclasses.replace(PRESETS["quick"], field=bad)``) through ``mod.run``;
* ``set``   -- ``fa-jax run NAME --preset quick --set field=TEXT`` through ``fa_jax.cli.main``;
* ``sweep`` -- a sweep-file document with one bad ``[fixed]`` value, axis or ``[engine]`` key through ``parse_spec``,
  ``build_configs`` and (for the engine keys) ``run_spec``;
* ``cli``   -- bad command-line arguments of ``fa-jax sweep`` / ``fa-jax run`` (``--chunk-size``, ``--out``, ...).

Nothing compiles: the sweep engine's first lowering (``fa_jax.sweep._lower``) raises a sentinel, so a case that
reaches it was *accepted*. Categories: ``named`` (the project's error, naming the field as the user wrote it and,
for sweep files, the file), ``internal`` (an error naming another dotted path instead), ``unnamed`` (a ValueError
naming neither), ``raw`` (any other exception: a traceback), ``accepted`` (no error before compiling), ``hang``
(no answer within ``--timeout`` seconds). Run it under a memory limit (``ulimit -v 6000000``): the oversize cases
allocate nothing when they are refused, and fail with MemoryError (``raw``) when they are not.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import io
import json
import os
import re
import signal
import sys
import tempfile
import time
import typing
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

# fields where an empty tuple is a meaningful value (documented in the field's comment / validate())
EMPTY_OK = {("sgd-support", "ln_batch"), ("hold-me-tight", "image_sets"), ("hold-me-tight", "image_archs"),
            ("hold-me-tight", "mlp_hidden"), ("hold-me-tight", "image_hidden"), ("sgd-support", "widths"),
            ("feature-averaging-real", "hidden")}
# float fields where inf is a meaningful value
INF_OK = {("sgd-support", "clip")}
# string fields that take any text (a path)
FREE_TEXT = {"data_dir"}
# integer fields where 0 is a meaningful value ("0: the input dimension", "0: no random subspaces")
ZERO_OK = {("agop-collapse", "width"), ("hold-me-tight", "n_random")}


class Reached(BaseException):
    """The engine's first lowering: the case got through every check."""


class Hang(BaseException):
    pass


def _on_alarm(signum, frame):
    raise Hang()


# ----------------------------------------------------------------------------- classification
def _names(msg: str, key: str) -> bool:
    k = re.escape(key)
    if len(key) <= 2:  # single letters occur in allowed ranges ("k <= d"): only the parameter position counts
        return re.search(rf"(?<![\w.\-]){k}(?:=|'| \(|\))", msg) is not None
    return re.search(rf"(?<![\w.]){k}(?![\w])", msg) is not None


def classify(exc: BaseException | None, msg: str, key: str, source: str | None = None) -> str:
    if exc is None or isinstance(exc, Reached):
        return "accepted"
    if isinstance(exc, Hang):
        return "hang"
    if isinstance(exc, SystemExit):
        if exc.code in (0, None):
            return "accepted"
    elif not isinstance(exc, ValueError):
        return "raw"
    if _names(msg, key) and (source is None or source in msg):
        return "named"
    if re.search(r"\b[a-z_]\w+\.[a-z_]\w*", msg.replace(source or "\0", "")):
        return "internal"
    return "unnamed"


def run_case(thunk, key: str, timeout: float, source: str | None = None) -> tuple[str, str, str]:
    err = io.StringIO()
    exc, msg = None, ""
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = thunk()
        if isinstance(rc, int) and rc != 0:  # a CLI exit code: its message is on stderr
            exc = SystemExit(rc)
    except BaseException as e:  # noqa: BLE001 - every outcome is tallied
        # keep no traceback: its frames may hold what a runaway case allocated (MemoryError)
        exc = e.with_traceback(None)
        exc.__context__ = exc.__cause__ = None
        msg = str(e)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    gc.collect()
    msg = (msg + "\n" + err.getvalue()).strip()
    return classify(exc, msg, key, source), type(exc).__name__ if exc is not None else "-", msg[:300]


# ----------------------------------------------------------------------------- bad values by type
def _kind(hint, default) -> tuple[str, bool]:
    """('int' | 'float' | 'bool' | 'str' | 'tuple' | 'other', optional)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args and hint is not tuple else hint
    if typing.get_origin(base) is tuple:
        base = tuple
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (tuple, "tuple")):
        if base is t:
            return name, optional
    return "other", optional


def _elem_kind(default) -> str:
    vals = tuple(default) if isinstance(default, (tuple, list)) else ()
    if vals and all(isinstance(v, str) for v in vals):
        return "str"
    if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "int"
    return "float"


def bad_values(kind: str, optional: bool, elem: str, *, empty_ok=False, inf_ok=False, free_text=False,
               count=False) -> list:
    nan, inf = float("nan"), float("inf")
    if kind == "int":
        out = [2.5, True, "3", nan, inf, 10 ** 30, -1, [1]]
        if count:
            out.append(0)
    elif kind == "float":
        out = [nan, -inf, "0.1", True, -1.0, [0.1]] + ([] if inf_ok else [inf])
    elif kind == "bool":
        out = ["false", "no", 2, 0.5, "true"]
    elif kind == "str":
        out = [3, True, ("a",)] + ([] if free_text else ["bogus-value"])
    elif kind == "tuple":
        out = ["abc", 5, (nan,), (True,), (-1,)]
        out += [("x",), (inf,)] if elem != "str" else [(3,), ("bogus-value",)]
        if elem == "int":
            out += [(2.5,), (10 ** 30,)]
        if not empty_ok:
            out.append(())
    else:
        return []
    if not optional:
        out.append(None)
    return out


def bad_texts(kind: str, elem: str, *, empty_ok=False, inf_ok=False, free_text=False) -> list[str]:
    if kind == "int":
        return ["abc", "2.5", "inf", "1e30", "-1", ""]
    if kind == "float":
        return ["abc", "nan", "-inf", "-1", ""] + ([] if inf_ok else ["inf"])
    if kind == "bool":
        return ["maybe", "2", "0.5", ""]
    if kind == "str":
        return [] if free_text else ["bogus-value"]
    if kind == "tuple":
        out = ["abc", "nan", "-1"] + ([] if empty_ok else [""])
        if elem == "int":
            out += ["2.5", "1e30"]
        if elem == "str":
            out = ["bogus-value"] + ([] if empty_ok else [""])
        return out
    return []


COUNT = re.compile(r"(seeds|steps|points|restarts|epochs|iters?|records|depth|width|dense|side|^n_|^n$|^k$|^d$|"
                   r"batch|^s$|_d$|_k$|per_class|hidden|size|classes|dim|random|block|eps$|n_eps)")


def _fields(cfg):
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        yield f.name, hints[f.name], getattr(cfg, f.name)


# ----------------------------------------------------------------------------- case families
def _sim_fields():
    """Every field of every sim's quick config: ``(name, mod, base, fname, kind, optional, elem_kind, lists)`` with
    ``lists`` the keyword flags both families pass to their bad-value generators."""
    import fa_jax_sims as sims

    for name in sims.NAMES:
        mod = sims.get_sim(name)
        base = mod.PRESETS["quick"]
        for fname, hint, default in _fields(base):
            kind, optional = _kind(hint, default)
            cls_default = getattr(type(base), fname, default)
            elem = _elem_kind(cls_default if kind == "tuple" else default)
            flags = {"empty_ok": (name, fname) in EMPTY_OK, "inf_ok": (name, fname) in INF_OK,
                     "free_text": fname in FREE_TEXT}
            yield name, mod, base, fname, kind, optional, elem, flags


def sim_cases(tmp: str):
    for name, mod, base, fname, kind, optional, elem, flags in _sim_fields():
        count = (kind == "int" and bool(COUNT.search(fname)) and "seed" != fname[-4:]
                 and (name, fname) not in ZERO_OK)
        for v in bad_values(kind, optional, elem, count=count, **flags):
            def thunk(mod=mod, base=base, fname=fname, v=v):
                cfg = dataclasses.replace(base, **{fname: v})
                return mod.run(cfg, os.path.join(tmp, "sim"), progress=False)

            yield "sim", f"{name}:{fname}={v!r}", fname, thunk, None


def set_cases(tmp: str):
    from fa_jax.cli import main

    for name, _, _, fname, kind, _, elem, flags in _sim_fields():
        for text in bad_texts(kind, elem, **flags):
            argv = ["run", name, "--preset", "quick", "--set", f"{fname}={text}", "--out",
                    os.path.join(tmp, "set"), "--quiet"]
            yield "set", f"{name} --set {fname}={text}", fname, (lambda argv=argv: main(argv)), None


SMALL = {  # a small valid sweep per experiment ([fixed]); the bad value goes on top
    "linear-regression": {"data.d": 3, "data.n_train": 16, "train.steps": 10},
    "feature-averaging": {"data.d": 16, "data.k": 4, "data.n_pos": 2, "data.n_train": 32, "data.n_test": 32,
                          "attack.n_points": 16, "attack.record_points": 16},
}


def _leaf_hints(c, prefix: str = "") -> dict:
    """``{dotted.path: (annotation, value)}`` of every leaf field of the config ``c``."""
    out = {}
    h = typing.get_type_hints(type(c))
    for f in dataclasses.fields(c):
        v = getattr(c, f.name)
        if dataclasses.is_dataclass(v):
            out.update(_leaf_hints(v, prefix + f.name + "."))
        else:
            out[prefix + f.name] = (h[f.name], v)
    return out


def sweep_cases(tmp: str):
    from fa_jax.config import _walk
    from fa_jax.experiments import EXPERIMENTS, get_experiment
    from fa_jax.sweepfile import build_configs, parse_spec, run_spec

    src = os.path.join(tmp, "fuzz.toml")  # named in every message; the documents are parsed from dicts

    def build(doc):
        return build_configs(parse_spec(doc, source=src))

    nan, inf = float("nan"), float("inf")
    for exp_name in EXPERIMENTS:
        exp = get_experiment(exp_name)
        cfg = exp.config()
        fixed = SMALL.get(exp_name, {})
        hints = _leaf_hints(cfg)
        for path, field, _ in _walk(cfg):
            hint, default = hints[path]
            kind, _ = _kind(hint, default)
            if path == exp.bucket:
                continue
            # an empty tuple is a valid value of some experiments' fields (hidden widths: a linear model)
            vals = {"int": [2.5, True, "x", nan, 10 ** 30], "float": [nan, inf, "x", True],
                    "bool": ["no", 2, 0.5], "str": [3, True], "tuple": ["x", [nan], 3]}.get(kind, [])
            if kind == "float" and (field.default == inf or field.metadata.get("inf_ok")):
                vals = [nan, "x", True]
            for i, v in enumerate(vals):
                if i % 2 == 0:
                    doc = {"experiment": exp_name, "fixed": {**fixed, path: v}}
                else:
                    doc = {"experiment": exp_name, "fixed": fixed, "axes": {path: [v]}}
                yield "sweep", f"{exp_name}: {path}={v!r}", path, (lambda doc=doc: build(doc)), src
    # the grammar: bad axes, empty tables, oversize grids, engine keys
    lin = {"experiment": "linear-regression", "fixed": SMALL["linear-regression"]}
    grammar = [
        ("seed", {"axes": {"seed": [0.5, 1.5, 0, 1]}}),
        ("seed", {"axes": {"seed": [-1]}}),
        ("seed", {"axes": {"seed": ["a"]}}),
        ("seed", {"axes": {"seed": [True]}}),
        ("seed", {"axes": {"seed": {"range": [0, 10 ** 9]}}}),
        ("seed", {"axes": {"seed": {"range": [0, 1e9]}}}),
        ("seed", {"axes": {"seed": {"range": []}}}),
        ("seed", {"axes": {"seed": {"range": [5, 0]}}}),
        ("seed", {"axes": {"seed": {"range": [0, 10, 0]}}}),
        ("optim.lr", {"axes": {"optim.lr": {}}}),
        ("optim.lr", {"fixed": {**lin["fixed"], "optim.lr": {}}}),
        ("optim.lr", {"axes": {"optim.lr": []}}),
        ("optim.lr", {"axes": {"optim.lr": {"linspace": [0.1, 1, 10 ** 9]}}}),
        ("optim.lr", {"axes": {"optim.lr": {"logspace": [-3, -1, 10 ** 9]}}}),
        ("optim.lr", {"axes": {"optim.lr": {"linspace": [0.1, 1, 0]}}}),
        ("optim.lr", {"axes": {"optim.lr": {"linspace": [0.1, 1, 2.5]}}}),
        ("optim.lr", {"axes": {"optim.lr": {"linspace": [nan, 1, 3]}}}),
        ("optim.lr", {"axes": {"optim.lr": {"logspace": [-3, 400, 3]}}}),
        ("optim.lr", {"axes": {"optim.lr": {"logspace": ["a", 1, 3]}}}),
        ("optim.lr", {"axes": {"optim.lr": {"values": [0.1], "bogus": 1}}}),
        ("optim.lr", {"axes": {"optim.lr": {"scale": [-1]}}}),
        ("optim.lr", {"axes": {"optim.lr": {"scale": [inf]}}}),
        ("optim.lr", {"axes": {"optim.lr": {"scale": [nan]}}}),
        ("optim.lr", {"axes": {"optim.lr": [1e-3, nan]}}),
        ("optim.lr", {"axes": {"optim.lr": {"values": "abc"}}}),
        ("regime", {"axes": {"regime": {"cases": {}}}}),
        ("regime", {"axes": {"regime": {"cases": {"a": {}}}}}),
        ("regime", {"axes": {"regime": {"cases": {"a": {"optim.lr": nan}}}}}),
        ("optim.lr", {"axes": {"regime": {"cases": {"a": {"optim.lr": {}}}}}}),
        ("data.d", {"axes": {"data.d": [3.5]}}),
        ("data.d", {"axes": {"data.d": [0]}}),
        ("data.d", {"axes": {"data.d": {"range": [0, 10 ** 12]}, "seed": {"range": [0, 10 ** 6]}}}),
        ("train.steps", {"axes": {"train.steps": {"linspace": [10, 20, 4]}}}),
        ("data.noise", {"axes": {"data.noise": [0.1, 0.1]}}),
        ("model.bias", {"experiment": "feature-averaging", "fixed": SMALL["feature-averaging"],
                        "axes": {"model.bias": ["false", 0]}}),
        ("engine.chunk_size", {"engine": {"chunk_size": 0}}),
        ("engine.chunk_size", {"engine": {"chunk_size": 2.5}}),
        ("engine.max_chunk", {"engine": {"max_chunk": -1}}),
        ("engine.max_chunk", {"engine": {"max_chunk": 0}}),
        ("engine.max_chunk", {"engine": {"max_chunk": 2.5}}),
        ("engine.memory_budget", {"engine": {"memory_budget": inf}}),
        ("engine.memory_budget", {"engine": {"memory_budget": nan}}),
        ("engine.memory_budget", {"engine": {"memory_budget": "infGB"}}),
        ("engine.memory_budget", {"engine": {"memory_budget": -1}}),
        ("engine.memory_budget", {"engine": {"memory_budget": True}}),
        ("engine.memory_fraction", {"engine": {"memory_fraction": nan}}),
        ("engine.memory_fraction", {"engine": {"memory_fraction": True}}),
        ("engine.bucket", {"engine": {"bucket": 3}}),
        ("analysis", {"analysis": "bogus"}),
        ("analysis", {"analysis": 3}),
        ("name", {"name": 3}),
        ("analysis_options", {"analysis_options": 3}),
        ("fixed", {"fixed": 3}),
        ("axes", {"axes": 3}),
        ("engine", {"engine": 3}),
        ("experiment", {"experiment": 3}),
        ("experiment", {"experiment": "bogus"}),
    ]
    for key, extra in grammar:
        doc = {**lin, **extra}
        if "engine" in extra and isinstance(extra["engine"], dict):
            def thunk(doc=doc):
                return run_spec(parse_spec(doc, source=src), os.path.join(tmp, "sweep-out"), progress=False)
        else:
            def thunk(doc=doc):
                return build(doc)
        yield "sweep", f"grammar: {extra!r}"[:120], key, thunk, src
    fa = {"experiment": "feature-averaging", "fixed": SMALL["feature-averaging"]}
    for key, extra in [("model.bucket", {"fixed": {**fa["fixed"], "model.bucket": -3}}),
                       ("model.bucket", {"fixed": {**fa["fixed"], "model.bucket": 2}}),
                       ("model.width", {"axes": {"model.width": [0, 3]}}),
                       ("model.width", {"axes": {"model.width": [2.5]}})]:
        doc = {**fa, **extra}
        yield "sweep", f"grammar: {extra!r}"[:120], key, (lambda doc=doc: build(doc)), src


def cli_cases(tmp: str):
    from fa_jax.cli import main

    spec = os.path.join(tmp, "ok.toml")
    with open(spec, "w") as f:
        f.write('experiment = "linear-regression"\n[fixed]\n"data.d" = 3\n"data.n_train" = 16\n'
                '"train.steps" = 10\n[axes]\nseed = [0, 1]\n')
    a_file = os.path.join(tmp, "a_file")
    with open(a_file, "w") as f:
        f.write("x")
    out = os.path.join(tmp, "cli-out")
    cases = [("--chunk-size", ["--chunk-size", v]) for v in ("0", "-1", "abc", "2.5", "1e30", "")]
    cases += [("--memory-budget", ["--memory-budget", v]) for v in ("inf", "infGB", "0", "-1", "abc", "nanGB", "")]
    cases += [("--wait", ["--wait", v]) for v in ("nan", "-1", "inf", "abc")]
    for key, extra in cases:
        yield "cli", f"sweep {' '.join(extra)}", key, (lambda extra=extra: main(["sweep", spec, "--out", out,
                                                                               "--quiet", *extra])), None
    yield "cli", "sweep <folder>", tmp, (lambda: main(["sweep", tmp, "--out", out, "--quiet"])), None
    yield "cli", "sweep --out <file>", a_file, (lambda: main(["sweep", spec, "--out", a_file, "--quiet"])), None
    yield "cli", "run --out <file>", a_file, (lambda: main(["run", "feature-averaging", "--preset", "quick",
                                                            "--out", a_file, "--quiet"])), None
    yield "cli", "sweep <missing>", "nope.toml", (lambda: main(["sweep", os.path.join(tmp, "nope.toml"), "--out",
                                                                out, "--quiet"])), None
    for key, text in (("lr", "abc"), ("seeds", "1e30"), ("seeds", "2.5"), ("bias", "maybe"), ("phase_k", "2,0"),
                      ("s3_widths", "0"), ("dyn_lrs", "0"), ("nosuchkey", "1"), ("lr", "")):
        argv = ["run", "feature-averaging", "--preset", "quick", "--set", f"{key}={text}", "--out", out, "--quiet"]
        yield "cli", f"run --set {key}={text}", key, (lambda argv=argv: main(argv)), None
    yield "cli", "run --set lr", "lr", (lambda: main(["run", "feature-averaging", "--preset", "quick", "--set", "lr",
                                                      "--out", out])), None


FAMILIES = {"sim": sim_cases, "set": set_cases, "sweep": sweep_cases, "cli": cli_cases}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="sim,set,sweep,cli")
    ap.add_argument("--json", default=None, help="write every case and its outcome here")
    ap.add_argument("--show", default="accepted,raw,hang,unnamed,internal",
                    help="print the cases of these categories")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--stride", type=int, default=1, help="run every N-th case only (a cheap sample)")
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    import jax

    jax.config.update("jax_platforms", "cpu")
    from fa_jax import sweep as S

    def stop(*a, **k):
        raise Reached()

    S._lower = stop
    tally: dict[str, Counter] = {}
    raw_types: Counter = Counter()
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="fa-jax-fuzz-") as tmp:
        for fam in args.family.split(","):
            for i, (family, label, key, thunk, source) in enumerate(FAMILIES[fam](tmp)):
                if i % args.stride:
                    continue
                cat, etype, msg = run_case(thunk, key, args.timeout, source)
                tally.setdefault(family, Counter())[cat] += 1
                if cat == "raw":
                    raw_types[etype] += 1
                rows.append({"family": family, "case": label, "key": key, "category": cat, "error": etype,
                             "message": msg})
                if cat in args.show.split(","):
                    print(f"[{cat}] {label} -> {etype}: {msg.splitlines()[-1] if msg else ''}"[:240], flush=True)
    total = Counter()
    for c in tally.values():
        total.update(c)
    cats = ("named", "internal", "unnamed", "raw", "accepted", "hang")
    print(f"\n{'family':8s} " + " ".join(f"{c:>9s}" for c in cats) + f" {'total':>7s}")
    for fam, c in [*tally.items(), ("all", total)]:
        print(f"{fam:8s} " + " ".join(f"{c[k]:9d}" for k in cats) + f" {sum(c.values()):7d}")
    print(f"raw exception types: {dict(raw_types)}; {time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tally": {k: dict(v) for k, v in tally.items()}, "raw_types": dict(raw_types),
                       "cases": rows}, f, indent=1, default=str)
    return 0 if all(total[k] == 0 for k in ("internal", "unnamed", "raw", "accepted", "hang")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
