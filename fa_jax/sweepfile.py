"""Sweep definitions as TOML files: ``fa-jax sweep SPEC.toml --out DIR`` (and :func:`run_spec` from Python).

Format (see ``sims/regimes.toml`` for a full example)::

    experiment = "feature-averaging"   # a registered name (fa_jax.experiments.experiment_names()), or
                                       # "package.module:attribute" naming an fa_jax.experiments.Experiment
    name = "my-sweep"                  # optional; used in summary.json and figure titles
    analysis = "pkg.module:function"   # optional; run on the results: "package.module:function", or a name
                                       # registered with fa_jax.register_analysis

    [fixed]                            # any config field, by dotted path (nested tables work too)
    "data.d" = 256
    train = { steps = 500 }

    [axes]                             # the grid: Cartesian product, in file order, last axis fastest
    seed = { range = [0, 8] }          # 'seed' sets every seed field of the experiment; range = Python range
    "optim.lr" = { logspace = [-3, -1, 5] }     # 10**linspace(-3, -1, 5); also linspace = [a, b, n]
    "model.width" = [8, 16, 32]                  # a plain list; or { values = [...] }
    "model.kind" = ["binary", "multiclass"]      # strings (optimiser names, supervision type) work alike
    lr_mult = { path = "optim.lr", scale = [0.5, 1, 2] }   # multiplies the value set by fixed/cases

    [axes.regime.cases]                # a labelled axis whose entries set several fields at once
    gd = { "optim.name" = "gd" }
    sgd_b32 = { "optim.name" = "sgd", "optim.batch_size" = 32 }

    [engine]                           # optional
    chunk_size = "auto"                # or an integer
    memory_fraction = 0.5              # of the device's memory (capacity); or memory_budget = "2GB"
    max_chunk = 4096
    bucket = "exact"                   # width buckets: "exact" | "pow2" | "max"
    optimizer = "static"               # or "traced": every optim.name of the grid in ONE program per shape

A config is built as: experiment defaults <- [fixed] <- case entries <- value axes <- scale axes; then the width
bucket policy; then ``validate()``. A field whose default follows another (``fa_jax.config.param(..., follows=)``,
e.g. ``data.n_pos`` follows ``data.k // 2``) moves with it unless the file sets it for that grid point, as with
``fa-jax run --set``. Every error (malformed TOML, unknown key, empty axis, an axis that cannot
change the chosen model's runs, an invalid grid point) names the file and key, before anything is compiled.
Values are checked against the field's type (:func:`fa_jax.config.check_fields`): an integer field takes TOML
integers and integral floats (``linspace`` gives floats), never 0.5; a boolean field takes TOML booleans,
``"true"`` / ``"false"`` and 0 / 1; ``seed`` takes distinct integers >= 0. Empty tables (``"optim.lr" = {}``),
an axis whose values coincide once coerced (``["false", 0]``), ``model.bucket`` (the bucket policy's) and grids of
more than :data:`fa_jax.config.MAX_RUNS` runs are refused -- a ``range`` or ``linspace`` before it is built.
Modules that ``experiment`` and ``analysis`` references name are imported with the sweep file's folder first on
``sys.path`` (a module next to the spec file), else from ``PYTHONPATH``.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import tomllib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .config import MAX_INT, MAX_RUNS, ConfigError, _hints, _walk, check_fields, follow, with_values
from .experiments import Experiment, experiment_names, get_experiment, import_ref
from .experiments import describe as describe_experiment
from .manifest import MANIFEST, ManifestError, SpecError, _write_json_atomic, move_aside, read_manifest

__all__ = ["Axis", "ManifestError", "SpecError", "SweepSpec", "build_configs", "get_analysis", "load_spec", "parse_spec", "register_analysis",
           "run_spec", "spec_hash", "sweep_dataset"]

FORMS = ("values", "range", "linspace", "logspace", "cases", "scale")
BUCKETS = ("exact", "pow2", "max")
ENGINE_KEYS = ("chunk_size", "memory_fraction", "memory_budget", "max_chunk", "bucket", "optimizer")
OPTIMIZER_MODES = ("static", "traced")  # engine.optimizer: one program per rule, or the rule as a traced index
TOP_KEYS = ("experiment", "name", "analysis", "fixed", "axes", "engine", "analysis_options")


@dataclasses.dataclass(frozen=True)
class Axis:
    """One grid axis. ``kind``: 'values' (sets ``path``), 'scale' (multiplies ``path``), 'cases' (labelled
    entries each setting several fields). ``coords`` are the values (or case labels / scale factors)."""

    name: str
    kind: str
    path: str | None
    coords: tuple
    cases: tuple[dict, ...] = ()

    def __len__(self) -> int:
        return len(self.coords)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    source: str
    experiment: str
    name: str
    fixed: dict
    axes: tuple[Axis, ...]
    engine: dict
    analysis: str | None = None
    analysis_options: dict = dataclasses.field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    @property
    def n_runs(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict:
        return {
            "experiment": self.experiment, "name": self.name, "fixed": self.fixed, "analysis": self.analysis,
            "analysis_options": self.analysis_options, "engine": self.engine,
            "axes": [{"name": a.name, "kind": a.kind, "path": a.path, "coords": list(a.coords),
                      "cases": list(a.cases)} for a in self.axes],
        }


def spec_hash(spec: SweepSpec) -> str:
    """Hash of what decides the runs (experiment, fixed settings, axes, and ``engine.optimizer = "traced"``, which
    computes every rule in one program: the same grid to float rounding, not bitwise); chunking and memory settings
    excluded. A spec without ``engine.optimizer`` (or with ``"static"``) hashes as it always did."""
    doc = spec.to_json()
    what = {k: doc[k] for k in ("experiment", "fixed", "axes")}
    if spec.engine.get("optimizer", "static") != "static":
        what["engine.optimizer"] = spec.engine["optimizer"]
    blob = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- parsing
def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and check a TOML sweep file (structure, keys, axes); configs are built by :func:`build_configs`."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise SpecError(f"{path}: is a folder, not a sweep file; give the path of a .toml sweep file")
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise SpecError(f"{path}: sweep file not found") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read the sweep file: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: malformed TOML: {e}") from None
    return parse_spec(doc, source=path)


def parse_spec(doc: Mapping[str, Any], source: str = "<dict>") -> SweepSpec:
    """The same as :func:`load_spec` for an already-parsed document (the Python entry point)."""
    def err(msg):
        return SpecError(f"{source}: {msg}")

    unknown = [k for k in doc if k not in TOP_KEYS]
    if unknown:
        raise err(f"unknown top-level key {unknown[0]!r}; allowed: {', '.join(TOP_KEYS)}")
    if "experiment" not in doc:
        raise err("missing key 'experiment'; allowed: one of " + ", ".join(experiment_names())
                  + ", or 'package.module:attribute'")
    search = _spec_dirs(source)
    try:
        exp = get_experiment(doc["experiment"], search=search)
    except (TypeError, ValueError) as e:
        raise err(f"key 'experiment': {e}") from None
    for key, kind in (("name", str), ("analysis_options", Mapping), ("engine", Mapping)):
        if key in doc and not isinstance(doc[key], kind):
            what = "a string" if kind is str else f"a table ([{key}])"
            raise err(f"invalid {key}={_short(doc[key])}: allowed {what}")
    paths = _paths(exp)
    fixed = _flatten_table(doc.get("fixed", {}), "fixed", err)
    for p in fixed:
        _check_path(p, paths, "fixed", err)
        _check_settable(p, exp, "fixed", err)
    axes_doc = doc.get("axes", {})
    if not isinstance(axes_doc, Mapping):
        raise err("[axes] must be a table of axis definitions")
    axes = _parse_axes(axes_doc, paths, err)
    names = [a.name for a in axes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise err(f"[axes]: duplicate axis name {min(dup)!r}; give one of them a different 'name'")
    for a in axes:
        for p in ([a.path] if a.path else [p for c in a.cases for p in c]):
            _check_settable(p, exp, f"axes.{a.name}", err)
    n_runs = math.prod(len(a) for a in axes)
    if n_runs > MAX_RUNS:
        sizes = " x ".join(f"{a.name} ({len(a)})" for a in axes)
        raise err(f"[axes]: the grid {sizes} has {n_runs} runs; allowed at most {MAX_RUNS} per sweep "
                  "(fa_jax.config.MAX_RUNS): split it into several sweep files")
    engine = dict(doc.get("engine", {}))
    for k in engine:
        if k not in ENGINE_KEYS:
            raise err(f"unknown key 'engine.{k}'; allowed: {', '.join(ENGINE_KEYS)}")
    if engine.get("bucket", "exact") not in BUCKETS:
        raise err(f"invalid engine.bucket={engine['bucket']!r}; allowed one of {BUCKETS}")
    if engine.get("optimizer", "static") not in OPTIMIZER_MODES:
        raise err(f"invalid engine.optimizer={_short(engine['optimizer'])}; allowed one of {OPTIMIZER_MODES}")
    if engine.get("optimizer") == "traced" and not {"optim.name", "optim.choices"} <= paths:
        raise err(f"engine.optimizer = 'traced': experiment {doc['experiment']!r} has no optim.name field (an "
                  "fa_jax.optim.OptimConfig named 'optim'); allowed 'static' for it")
    cs = engine.get("chunk_size", "auto")
    if not (cs == "auto" or (isinstance(cs, int) and not isinstance(cs, bool) and cs >= 1)):
        raise err(f"invalid engine.chunk_size={cs!r}; allowed 'auto' or an integer >= 1")
    mc = engine.get("max_chunk", 1)
    if not (isinstance(mc, int) and not isinstance(mc, bool) and mc >= 1):
        raise err(f"invalid engine.max_chunk={_short(mc)}; allowed an integer >= 1 (runs per compiled call)")
    mf = engine.get("memory_fraction", 0.5)
    if not (isinstance(mf, (int, float)) and not isinstance(mf, bool) and 0 < mf <= 1):
        raise err(f"invalid engine.memory_fraction={mf!r}; allowed 0 < fraction <= 1")
    if "memory_budget" in engine:
        try:
            engine["memory_budget"] = parse_bytes(engine["memory_budget"])
        except ValueError as e:
            raise err(f"engine.memory_budget: {e}") from None
    analysis = doc.get("analysis")
    if analysis is not None:
        try:
            get_analysis(analysis, search=search)  # now, not after the sweep: a typo must not cost a sweep
        except (TypeError, ValueError) as e:
            raise err(f"key 'analysis': {e}") from None
    return SweepSpec(source=source, experiment=doc["experiment"], name=str(doc.get("name", doc["experiment"])),
                     fixed=fixed, axes=tuple(axes), engine=engine, analysis=analysis,
                     analysis_options=dict(doc.get("analysis_options", {})))


def parse_bytes(x) -> int:
    """``1073741824``, ``"1GB"``, ``"512MiB"``, ``"2.5G"`` -> bytes (a positive, finite size)."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 1:
        return int(x)
    if isinstance(x, str):
        t = x.strip().upper().replace("IB", "B")
        for unit, mult in (("KB", 2**10), ("MB", 2**20), ("GB", 2**30), ("TB", 2**40), ("K", 2**10),
                           ("M", 2**20), ("G", 2**30), ("T", 2**40), ("B", 1)):
            if t.endswith(unit):
                try:
                    v = float(t[: -len(unit)])
                except ValueError:
                    break
                if math.isfinite(v) and v * mult >= 1:
                    return int(v * mult)
                break
    raise ValueError(f"invalid memory size {x!r}: allowed a positive number of bytes or e.g. '2GB', '512MB'")


def _spec_dirs(source: str) -> tuple[str, ...]:
    """The folder of a sweep file (searched first for the modules its references name); none for a dict."""
    return (os.path.dirname(os.path.abspath(source)),) if os.path.isfile(source) else ()


def _experiment(spec: SweepSpec) -> Experiment:
    return get_experiment(spec.experiment, search=_spec_dirs(spec.source))


def _paths(exp: Experiment) -> set[str]:
    return {p for p, _, _ in _walk(exp.config())} | ({"seed"} if exp.seeds else set())


def _short(v, limit: int = 80) -> str:
    t = repr(v)
    return t if len(t) <= limit else t[: limit - 3] + "..."


def _check_settable(path: str, exp: Experiment, where: str, err) -> None:
    """The static padded width is the bucket policy's (``engine.bucket``): a value set here would be overwritten."""
    if exp.width is not None and path == exp.bucket:
        raise err(f"[{where}]: {path!r} is set by the width bucket policy (engine.bucket = "
                  f"{' | '.join(map(repr, BUCKETS))}), not by the sweep file; set {exp.width!r} and choose the "
                  "policy instead")


def _check_path(path: str, paths: set[str], where: str, err) -> None:
    if path not in paths:
        close = difflib.get_close_matches(path, sorted(paths), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise err(f"unknown key {path!r} in [{where}]{hint}; allowed: {', '.join(sorted(paths))}")


def _flatten_table(t, where: str, err, prefix: str = "") -> dict:
    if not isinstance(t, Mapping):
        raise err(f"[{where}] must be a table")
    out = {}
    for k, v in t.items():
        p = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if not v:  # {} sets nothing: a value left out by mistake must not pass silently
                raise err(f"[{where}]: key {p!r} is an empty table; give it a value (or remove the key)")
            out.update(_flatten_table(v, where, err, p + "."))
        else:
            out[p] = v
    return out


def _is_axis_table(v) -> bool:
    return isinstance(v, Mapping) and any(k in v for k in FORMS)


def _parse_axes(doc: Mapping, paths: set[str], err, prefix: str = "") -> list[Axis]:
    axes = []
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if _is_axis_table(v) or isinstance(v, list):
            axes.append(_parse_axis(key, v, paths, err))
        elif isinstance(v, Mapping) and not v:
            raise err(f"axis {key!r} is an empty table; give one of {', '.join(FORMS)} (or a list of values)")
        elif isinstance(v, Mapping):  # dotted keys without quotes: axes.optim.lr = [...]
            axes.extend(_parse_axes(v, paths, err, key + "."))
        else:
            raise err(f"axis {key!r}: expected a list or a table with one of {', '.join(FORMS)}, got {v!r}")
    return axes


def _parse_axis(key: str, v, paths: set[str], err) -> Axis:
    where = f"axes.{key}"
    if isinstance(v, list):
        v = {"values": v}
    forms = [f for f in FORMS if f in v]
    extra = [k for k in v if k not in (*FORMS, "name", "path")]
    if len(forms) != 1 or extra:
        raise err(f"axis {key!r}: give exactly one of {', '.join(FORMS)} (plus optional 'name', 'path'); "
                  f"got keys {sorted(v)}")
    form = forms[0]
    name = str(v.get("name", key))
    if form == "cases":
        cases = v["cases"]
        if not isinstance(cases, Mapping) or not cases:
            raise err(f"axis {key!r}: 'cases' must be a non-empty table of labelled entries")
        labels, entries = [], []
        for label, entry in cases.items():
            if not isinstance(entry, Mapping) or not entry:
                raise err(f"axis {key!r}, case {label!r}: expected a non-empty table of field = value")
            flat = _flatten_table(entry, f"{where}.cases.{label}", err)
            for p in flat:
                _check_path(p, paths, f"{where}.cases.{label}", err)
            labels.append(str(label))
            entries.append(flat)
        return Axis(name, "cases", None, tuple(labels), tuple(entries))
    path = v.get("path", key)
    if not isinstance(path, str):
        raise err(f"axis {key!r}: invalid path={_short(path)}; allowed a dotted field path (a string)")
    _check_path(path, paths, "axes", err)
    raw = v[form]
    try:
        values = _expand(form, raw)
    except (TypeError, ValueError) as e:
        raise err(f"axis {key!r}: invalid {form} = {_short(raw)}: {e}") from None
    if not values:
        raise err(f"axis {key!r} is empty; give at least one value")
    if form == "scale":
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
                   for x in values):
            raise err(f"axis {key!r}: scale factors must be finite numbers > 0, got {_short(values)}")
        return Axis(name, "scale", path, tuple(float(x) for x in values))
    if path == "seed":
        bad = next((x for x in values if not _seed_ok(x)), None)
        if bad is not None or len(set(values)) < len(values):
            why = f"{bad!r} is not" if bad is not None else "repeated values are not"
            raise err(f"axis {key!r}: invalid seed values {_short(values)}: {why} allowed; allowed distinct "
                      f"integers 0 <= seed <= {MAX_INT} (a seed sets every seed field of the experiment)")
    return Axis(name, "values", path, tuple(values))


def _seed_ok(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_INT


def _expand(form: str, raw) -> list:
    """An axis's values; a range or linspace longer than :data:`MAX_RUNS` is refused before it is built."""
    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool)

    if form in ("values", "scale"):
        if not isinstance(raw, list):
            raise TypeError("expected a list")
        return list(raw)
    if form == "range":
        if not (isinstance(raw, list) and 1 <= len(raw) <= 3 and all(is_int(x) for x in raw)):
            raise TypeError("expected [stop], [start, stop] or [start, stop, step] of integers")
        r = range(*raw)
        if len(r) > MAX_RUNS:
            raise ValueError(f"{len(r)} values; allowed at most {MAX_RUNS} (fa_jax.config.MAX_RUNS)")
        return list(r)
    if not (isinstance(raw, list) and len(raw) == 3 and is_int(raw[2]) and raw[2] >= 1):
        raise TypeError(f"expected [start, stop, n] with an integer n >= 1 ({form})")
    if raw[2] > MAX_RUNS:
        raise ValueError(f"n = {raw[2]} values; allowed at most {MAX_RUNS} (fa_jax.config.MAX_RUNS)")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in raw[:2]):
        raise TypeError(f"expected finite numbers for start and stop ({form})")
    a, b, n = float(raw[0]), float(raw[1]), raw[2]
    with np.errstate(over="ignore"):
        xs = np.linspace(a, b, n) if form == "linspace" else 10.0 ** np.linspace(a, b, n)
    if not np.all(np.isfinite(xs)):
        raise ValueError(f"10**{max(a, b):g} overflows a float: allowed exponents below 308")
    return [float(x) for x in xs]


# ----------------------------------------------------------------------------- configs
def _coerce(current, value, hint=None):
    """TOML types -> the field's type: an int where a float is expected, an integral float (e.g. from linspace)
    where an int is, ``"true"`` / ``"false"`` and 0 / 1 where a bool is, a list where a tuple is, ``"none"`` for
    None. Anything else is left as written, for the config's type check to refuse naming the field (``hint``:
    the field's annotation; ``current`` its value, where the annotation is unknown)."""
    if isinstance(value, str) and value.lower() in ("none", "null"):
        return None
    kinds = _hint_kinds(hint) if hint is not None else {type(current)}
    if bool in kinds:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
        return value
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if int in kinds and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if tuple in kinds and isinstance(value, list):
        return tuple(value)
    return value


def _hint_kinds(hint) -> set:
    """The plain types an annotation admits (``int | None`` -> {int, NoneType}, ``tuple[int, ...]`` -> {tuple})."""
    import types
    import typing

    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return {typing.get_origin(a) or a for a in args}


def _field_hints(cfg) -> dict[str, Any]:
    """``{dotted.path: annotation}`` of every leaf field of ``cfg`` (unresolvable annotations are left out: those
    fields are coerced by their current values)."""
    out = {}
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out.update({f"{f.name}.{k}": h for k, h in _field_hints(v).items()})
        elif f.name in hints:
            out[f.name] = hints[f.name]
    return out


def _set(cfg, exp: Experiment, values: Mapping[str, Any], explicit: set[str]):
    """``cfg`` with ``values`` (dotted paths, ``seed``) set, coerced to the fields' types; the paths set are added to
    ``explicit`` (this grid point's so far), and a field following one of them moves along unless it is in it
    (:func:`fa_jax.config.follow`: ``"data.k" = 4`` alone splits feature-averaging's clusters 2/2)."""
    current = {p: v for p, _, v in _walk(cfg)}
    hints = _field_hints(cfg)
    out = {}
    for p, v in values.items():
        if p == "seed":
            if not _seed_ok(v):  # int(0.5) would give two runs the same seed under different labels
                raise ConfigError("seed", f"an integer 0 <= seed <= {MAX_INT} (it sets {', '.join(exp.seeds)})", v)
            for s in exp.seeds:
                out[s] = v
        else:
            out[p] = _coerce(current[p], v, hints.get(p))
    explicit.update(out)
    return follow(cfg, with_values(cfg, out), explicit)


def grid_points(spec: SweepSpec) -> list[tuple[int, ...]]:
    """Multi-indices of the grid in run order (Cartesian, last axis fastest)."""
    return list(itertools.product(*(range(len(a)) for a in spec.axes)))


def describe(spec: SweepSpec, point: tuple[int, ...]) -> str:
    return ", ".join(f"{a.name}={a.coords[i]!r}" for a, i in zip(spec.axes, point, strict=True))


def build_configs(spec: SweepSpec) -> list:
    """Every grid point's validated config, in run order; errors name the file, the axis and the grid point."""
    exp = _experiment(spec)

    def err(msg):
        return SpecError(f"{spec.source}: {msg}")

    if spec.n_runs > MAX_RUNS:  # a SweepSpec built by hand, not by parse_spec
        raise err(f"[axes]: the grid has {spec.n_runs} runs; allowed at most {MAX_RUNS} per sweep "
                  "(fa_jax.config.MAX_RUNS)")
    try:
        fixed: set[str] = set()  # the paths [fixed] sets: no grid point moves them along a driver
        base = _set(exp.config(), exp, spec.fixed, fixed)
    except (TypeError, ValueError) as e:
        raise err(f"[fixed]: {e}") from None
    current, hints = {p: v for p, _, v in _walk(base)}, _field_hints(base)
    for a in spec.axes:  # two labels, one value (e.g. "false" and 0, or 1 and 1.0): duplicated runs
        if a.kind == "values" and a.path in current:
            seen: dict[str, int] = {}
            for j, x in enumerate(a.coords):
                value = _coerce(current[a.path], x, hints.get(a.path))
                first = seen.setdefault(repr(value), j)
                if first != j:
                    raise err(f"axis {a.name!r}: the values {a.coords[first]!r} and {x!r} both set {a.path} = "
                              f"{value!r}; give each value once")
    points = grid_points(spec)
    raw = []
    for point in points:
        cfg, explicit = base, set(fixed)
        try:
            for a, i in zip(spec.axes, point, strict=True):
                if a.kind == "cases":
                    cfg = _set(cfg, exp, a.cases[i], explicit)
            for a, i in zip(spec.axes, point, strict=True):
                if a.kind == "values":
                    cfg = _set(cfg, exp, {a.path: a.coords[i]}, explicit)
            for a, i in zip(spec.axes, point, strict=True):
                if a.kind == "scale":
                    cur = {p: v for p, _, v in _walk(cfg)}[a.path]
                    if not isinstance(cur, (int, float)) or isinstance(cur, bool) or not math.isfinite(cur):
                        raise err(f"axis {a.name!r}: cannot scale the non-numeric field {a.path!r} (= {cur!r})")
                    cfg = _set(cfg, exp, {a.path: cur * a.coords[i]}, explicit)
        except SpecError:
            raise
        except (TypeError, ValueError) as e:
            raise err(f"grid point ({describe(spec, point)}): {e}") from None
        raw.append(cfg)
    if spec.engine.get("optimizer") == "traced":
        raw = _trace_optimizer(raw)
    raw = _apply_buckets(spec, exp, raw, err)
    configs = []
    for point, cfg in zip(points, raw, strict=True):
        try:
            check_fields(cfg)  # every experiment's config, whether or not its validate() does it
            cfg = cfg.validate()
        except (TypeError, ValueError) as e:
            axes_set = {a.path for a in spec.axes} | {p for a in spec.axes for c in a.cases for p in c}
            param = getattr(e, "param", None)
            where = ("[fixed]" if param in spec.fixed and param not in axes_set
                     else f"grid point ({describe(spec, point)})")
            raise err(f"{where}: {e}") from None
        _check_applies(spec, cfg, point, err)
        configs.append(cfg)
    _check_one_program(spec, points, configs, err)
    return configs


def _trace_optimizer(cfgs: list) -> list:
    """``engine.optimizer = "traced"``: ``optim.choices`` = every rule the grid names (in
    :data:`fa_jax.optim.OPTIMIZERS` order, so the same set gives the same program whatever the file's order), where
    ``[fixed]`` / an axis did not set it. An unknown name is left out, for ``validate()`` to refuse its runs'
    ``optim.name``."""
    from .optim import OPTIMIZERS

    seen = {c.optim.name for c in cfgs if isinstance(c.optim.name, str)}
    names = tuple(n for n in OPTIMIZERS if n in seen)
    return [c if c.optim.choices else with_values(c, {"optim.choices": names}) for c in cfgs]


def _check_one_program(spec: SweepSpec, points: list, configs: list, err) -> None:
    """A traced optimiser axis (runs with ``optim.choices``) promises one program across it: an axis that sets
    ``optim.name`` must not change a static field (batch size, sampling: shapes) between its entries. Refused naming
    the axis, the entries and the field; an orthogonal axis over that field keeps its own programs."""
    from .config import static_key

    for k, a in enumerate(spec.axes):
        sets_name = a.path == "optim.name" if a.kind == "values" else any("optim.name" in c for c in a.cases)
        if not sets_name:
            continue
        first: dict[tuple, tuple[int, dict]] = {}
        for point, cfg in zip(points, configs, strict=True):
            if not getattr(cfg.optim, "choices", ()):
                continue
            rest = point[:k] + point[k + 1:]
            key = json.loads(static_key(cfg))
            j, ref = first.setdefault(rest, (point[k], key))
            diff = sorted(p for p in set(ref) | set(key) if ref.get(p) != key.get(p))
            if diff:
                p = diff[0]
                raise err(f"invalid {p}: axis {a.name!r} traces the optimiser (optim.choices) but its entries "
                          f"{a.coords[j]!r} and {a.coords[point[k]]!r} set {p} = {ref.get(p)!r} and {key.get(p)!r} "
                          "(a static field: shapes or code); allowed one value across a traced optimiser axis: "
                          f"give {p} its own axis (one program per value) or set it in [fixed]")


def _apply_buckets(spec, exp: Experiment, cfgs: list, err) -> list:
    policy = spec.engine.get("bucket", "exact")
    if exp.width is None or exp.bucket is None:
        return cfgs
    widths = [{p: v for p, _, v in _walk(c)}[exp.width] for c in cfgs]
    if not all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_INT for w in widths):
        bad = next(w for w in widths if not (isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_INT))
        raise err(f"invalid {exp.width}={bad!r}: allowed an integer >= 1")
    if policy == "exact":
        return [with_values(c, {exp.bucket: w}) for c, w in zip(cfgs, widths, strict=True)]
    if policy == "pow2":
        return [with_values(c, {exp.bucket: 1 << (w - 1).bit_length()}) for c, w in zip(cfgs, widths, strict=True)]
    top = max(widths)
    return [with_values(c, {exp.bucket: top}) for c in cfgs]


def _check_applies(spec: SweepSpec, cfg, point, err) -> None:
    inert = cfg.inert() if hasattr(cfg, "inert") else {}
    for a, i in zip(spec.axes, point, strict=True):
        fields = list(a.cases[i]) if a.kind == "cases" else [a.path]
        for p in fields:
            if p in inert:
                where = f"axis {a.name!r}" + (f", case {a.coords[i]!r}" if a.kind == "cases" else "")
                raise err(f"{where}: {p!r} does not apply at grid point ({describe(spec, point)}): {inert[p]}")


# ----------------------------------------------------------------------------- running into a directory
def _previous_manifest(out_dir: str, spec: SweepSpec) -> dict | None:
    """The manifest an earlier run left in ``out_dir`` (None if none). A damaged one is moved aside to
    ``sweep.json.damaged`` with a warning, and the sweep is planned afresh (None): never a reason to delete chunks.
    Chunk files are named by what they compute (the program, every run's values, this spec's hash), so a fresh
    plan with the same chunk sizes finds this sweep's finished chunks again and never another sweep's."""
    import warnings

    path = os.path.join(out_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        return read_manifest(out_dir)
    except ManifestError as e:
        dest = move_aside(path, f"{path}.damaged")
        warnings.warn(f"{path}: damaged sweep manifest ({e.why}); moved to {dest} and rebuilt from {spec.source}; "
                      "no chunk file was deleted (finished chunks of this sweep are reused where the chunk plan "
                      "comes out the same)", stacklevel=3)
        return None


_SPEC_CALLS = [0]  # run_spec calls of this process with a distributed runtime: the key shared by all processes


def run_spec(spec: SweepSpec | str | os.PathLike, out_dir: str | os.PathLike, **kwargs) -> dict:
    """Run a sweep file into ``out_dir``; returns ``{"manifest", "complete", "stats", "summary"}``.

    Keywords ``overwrite``, ``progress``, ``memory_budget``, ``chunk_size``, ``process_index``, ``process_count``,
    ``devices``, ``command``, ``finalize``, ``wait`` and what ``out_dir`` holds: :func:`_run_spec`. Everything runs
    inside the experiment's ``context`` (e.g. float64 for the experiments whose simulations run in float64).
    :func:`sweep_dataset` returns the labelled results instead."""
    import contextlib

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    exp = _experiment(spec)
    with exp.context() if exp.context is not None else contextlib.nullcontext():
        return _run_spec(spec, out_dir, **kwargs)


def _run_spec(
    spec: SweepSpec | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
    memory_budget: int | str | None = None,
    chunk_size: int | str | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    devices=None,
    command: str = "",
    finalize: bool = True,
    wait: float = 0.0,
) -> dict:
    """Run a sweep file into ``out_dir``; returns ``{"manifest", "complete", "stats", "summary"}``.

    ``out_dir/sweep.json`` records the spec, its hash, the chunk plan (so a resumed or multi-host sweep uses the
    same chunks), versions, devices and XLA flags; ``out_dir/chunks/*.npz`` hold results. Re-running skips finished
    chunks; a different spec in the same directory is refused unless ``overwrite``. With several processes,
    process 0 waits up to ``wait`` seconds for the other processes' chunks (a shared ``out_dir``). When every
    chunk is present,
    the results are loaded (:func:`fa_jax.results.load_results`), the spec's analysis (if any) writes its figures
    and checks, and ``summary.json`` is written.
    """
    import shutil
    import time

    import jax

    from . import sweep as S
    from .summary import device, precisions_in, versions

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SpecError(f"invalid out_dir={out_dir!r}: allowed a directory (new or a sweep's); this is a file")
    configs = build_configs(spec)  # every error before any compilation
    exp = _experiment(spec)
    h = spec_hash(spec)
    man_path = os.path.join(out_dir, MANIFEST)
    old = _previous_manifest(out_dir, spec)  # a damaged one is set aside, never a reason to delete chunks
    if old is not None and old["spec_hash"] != h:
        if not overwrite:
            raise SpecError(
                f"{out_dir} holds results of a different sweep (spec hash {old['spec_hash']} from "
                f"{old.get('source')}, this one is {h}); use a new --out directory or pass --overwrite")
        shutil.rmtree(os.path.join(out_dir, "chunks"), ignore_errors=True)
        old = None
    os.makedirs(out_dir, exist_ok=True)
    S.clean_stale_temps(out_dir, bases=(MANIFEST,))  # a sweep.json.tmp<pid> of a writer killed mid-write
    devices = tuple(devices or jax.local_devices())
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    eng = spec.engine
    tag = f"sweepfile:{h}"
    traces0, loaded0, run0 = S.STATS.traces, S.STATS.chunks_loaded, S.STATS.chunks_run
    t0 = time.time()
    if old is not None and "plan" in old:
        # the recorded chunk sizes give the same chunks; their file names are recomputed from the programs as they
        # are now, so chunks computed by code that has changed since are not reused (they are recomputed)
        try:
            plans = S.plan_chunks(exp.run, configs, devices=devices, tag=tag,
                                  sizes={c["key"]: c["size"] for c in old["plan"]}, shared=exp.shared, data=exp.data)
        except S.LayoutError:  # a size the data layout cannot use (recorded before the experiment had a data stage)
            plans = None
        recorded = [S.plan_from_json(c) for c in old["plan"]]
        if plans is None or [(p.runs, p.block, p.slots) for p in plans] != [(p.runs, p.block, p.slots)
                                                                            for p in recorded]:
            if not overwrite:  # other processes of this sweep may hold the recorded plan: never replan silently
                raise SpecError(f"{man_path}: the recorded chunk plan does not match this sweep; pass --overwrite "
                                "to plan it afresh (no chunk file is deleted: chunks whose computation is "
                                "unchanged are reused), or use a new --out directory")
            old = None
    if old is None or "plan" not in old:
        budget = parse_bytes(memory_budget) if memory_budget is not None else eng.get("memory_budget")
        if budget is None:
            budget = S.memory_budget(devices, eng.get("memory_fraction", S.DEFAULT_MEMORY_FRACTION))
        size = eng.get("chunk_size", "auto") if chunk_size is None else chunk_size  # an explicit 0 is refused
        plans = S.plan_chunks(exp.run, configs, chunk_size=size, devices=devices, budget=budget,
                              max_chunk=eng.get("max_chunk"), tag=tag, shared=exp.shared, data=exp.data)
    # several processes after jax.distributed.initialize (and no explicit split): process 0's plan is every
    # process's already here, since the manifest below records it before any chunk runs (run_sweep then hands out
    # the chunks on demand: sweep.ChunkQueue, a host that finishes early takes the leftovers)
    client = S._distributed_client() if pc > 1 and process_index is None and process_count is None else None
    if client is not None:
        _SPEC_CALLS[0] += 1
        mine = plans
        plans = S.ChunkQueue(client, f"fa-jax/run_spec/{_SPEC_CALLS[0]}", pi, h).plans(lambda: mine)
    base = configs[0]
    manifest = {
        "format": 1, "source": spec.source, "spec": spec.to_json(), "spec_hash": h, "n_runs": len(configs),
        "shape": list(spec.shape), "axes": [a.name for a in spec.axes],
        "base_config": dataclasses.asdict(base),
        "plan": S.plan_json(plans),
        "n_groups": len({p.key for p in plans}), "versions": versions(),
        "device": device(precisions_in([{"matmul_precision": p.precision} for p in plans])),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "compiler_options": S.compiler_options(jax.devices()[0].platform),
        "process_count": pc,
        "experiment": describe_experiment(exp),  # output dims, coordinates, labels: results load without the experiment's code
    }
    if pi == 0 or old is None:
        _write_json_atomic(man_path, manifest)
    S.run_sweep(exp.run, configs, out_dir=out_dir, tag=tag, progress=progress, desc=spec.name, devices=devices,
                process_index=None if client is not None else pi, process_count=None if client is not None else pc,
                plans=plans, shared=exp.shared, data=exp.data)
    stats = {"n_runs": len(configs), "n_groups": manifest["n_groups"], "n_chunks": len(plans),
             "programs_compiled": S.STATS.traces - traces0, "chunks_run": S.STATS.chunks_run - run0,
             "chunks_loaded": S.STATS.chunks_loaded - loaded0, "wall_seconds": round(time.time() - t0, 3),
             "devices": len(devices), "process_index": pi, "process_count": pc}
    def missing_chunks():
        return [p.file for p in plans if not os.path.exists(os.path.join(out_dir, "chunks", p.file))]

    missing = missing_chunks()
    deadline = time.time() + wait
    while missing and pi == 0 and pc > 1 and time.time() < deadline:
        time.sleep(min(2.0, max(0.0, deadline - time.time())))
        missing = missing_chunks()
    result = {"manifest": manifest, "complete": not missing, "missing": missing, "stats": stats, "summary": None}
    if missing or not finalize or pi != 0:
        return result
    result["summary"] = finalize_sweep(out_dir, stats=stats, command=command)
    return result


# ----------------------------------------------------------------------------- analyses
_ANALYSES: dict[str, object] = {}  # name -> function, or "package.module:function" imported on first use


def _is_ref(text: str) -> bool:
    mod, _, attr = text.partition(":")
    return bool(mod) and bool(attr) and all(part.isidentifier() for part in [*mod.split("."), attr])


def register_analysis(name: str, fn, *, replace: bool = False) -> None:
    """Make ``analysis = "NAME"`` in sweep files run ``fn(ds, spec, out_dir) -> (checks, metrics)`` on the labelled
    results of the finished sweep (``metrics`` may hold ``"not_evaluated"``: ``{check: why}``). ``fn`` may be a
    ``"package.module:function"`` string, imported on first use (registration stays cheap). The application
    registers its analyses (``fa_jax_sims`` does on import); the library never imports the application. A different
    ``fn`` under a taken name raises ValueError unless ``replace``. A name of the form ``"package.module:function"``
    re-routes a reference that older manifests hold to where the function lives now (registered names are looked
    up before anything is imported)."""
    if not (isinstance(name, str) and name.strip() and (":" not in name or _is_ref(name))):
        raise ValueError(f"invalid analysis name={name!r}: allowed a non-empty name without ':', or a former "
                         "'package.module:function' reference")
    if not (callable(fn) or (isinstance(fn, str) and ":" in fn)):
        raise ValueError(f"invalid analysis fn={fn!r}: allowed a callable or 'package.module:function'")
    if not replace and _ANALYSES.get(name, fn) != fn:
        raise ValueError(f"invalid analysis name={name!r}: already registered for {_ANALYSES[name]!r}; choose "
                         "another name or pass replace=True")
    _ANALYSES[name] = fn


def get_analysis(ref: str, *, search=()):
    """The analysis function ``ref`` names: a registered name or ``"package.module:function"`` (imported with the
    ``search`` folders first on ``sys.path``). ValueError listing the registered names otherwise."""
    if not isinstance(ref, str):
        raise TypeError(f"invalid analysis={ref!r}: allowed a registered name or 'package.module:function'")
    fn = _ANALYSES.get(ref, ref)
    if isinstance(fn, str):
        if ":" not in fn:
            raise ValueError(f"invalid analysis={ref!r}: allowed one of the registered names "
                             f"{tuple(_ANALYSES)} or 'package.module:function' (a name is registered by the "
                             "application that defines it, e.g. `import fa_jax_sims`)")
        fn = import_ref(fn, "analysis", search)
    if not callable(fn):
        raise TypeError(f"invalid analysis={ref!r}: it names {type(fn).__name__}, not a function")
    return fn


def finalize_sweep(out_dir: str | os.PathLike, *, stats: dict | None = None, command: str = "") -> dict:
    """Load the results of a complete sweep directory, run its analysis, write ``summary.json``."""
    from .results import load_results
    from .summary import write_summary

    out_dir = os.fspath(out_dir)
    man = read_manifest(out_dir)
    ds = load_results(out_dir)
    checks, metrics, skipped = [], {}, None
    n_div = int(np.asarray(ds["diverged"]).sum()) if "diverged" in ds else 0
    metrics.update({"n_runs": man["n_runs"], "n_groups": man["n_groups"], "diverged_runs": n_div,
                    # the plan's precision (the manifest's device block): the summary's device block reads it here
                    "matmul_precision": man.get("device", {}).get("matmul_precision")})
    if stats:
        metrics["engine"] = stats
    name = man["spec"].get("analysis")
    if name:
        src = man.get("source", "")
        fn = get_analysis(name, search=_spec_dirs(src) if isinstance(src, str) else ())
        checks, extra = fn(ds, man["spec"], out_dir)
        skipped = extra.pop("not_evaluated", None)  # {check name: why it has no meaning here}
        metrics.update(extra)
    return write_summary(os.path.join(out_dir, "summary.json"), sim=man["spec"]["name"],
                         config={"spec": man["spec"], "spec_hash": man["spec_hash"], "base": man["base_config"]},
                         checks=checks, metrics=metrics, command=command, not_evaluated=skipped)


def sweep_dataset(spec, out_dir: str | os.PathLike | None = None, **kwargs):
    """Run a sweep and return its labelled results (:func:`fa_jax.load_results`): an ``xarray.Dataset`` with one
    dimension per sweep axis, then each output's own axes.

    ``spec``: a :class:`SweepSpec`, a TOML path, or a dict in the sweep file's structure, whose ``experiment`` may
    also be an :class:`fa_jax.experiments.Experiment` object (registered under its name). ``out_dir``: where the
    resumable chunks and the manifest go; None runs in a temporary directory that is deleted once the Dataset is
    in memory. ``kwargs``: :func:`run_spec`'s. Raises if chunks are missing (other processes' share of a
    multi-host sweep: load them with ``load_results(out_dir)`` once they are in)."""
    import tempfile

    from .results import load_results

    if isinstance(spec, Mapping):
        doc = dict(spec)
        if isinstance(doc.get("experiment"), Experiment):
            from .experiments import EXPERIMENTS, register_experiment

            exp = doc["experiment"]  # re-defined in a notebook: replaces its earlier self, never a built-in
            doc["experiment"] = register_experiment(exp, replace=exp.name not in EXPERIMENTS).name
        spec = parse_spec(doc)
    if out_dir is not None:
        run_spec(spec, out_dir, **kwargs)
        return load_results(out_dir)
    with tempfile.TemporaryDirectory(prefix="fa-jax-sweep-") as tmp:
        run_spec(spec, tmp, **kwargs)
        return load_results(tmp).load()
