"""Phase diagrams of any sweep: a heat-map of one metric over two axes (``fa-jax plot`` and :func:`plot_phase`).

Input: the labelled ``xarray.Dataset`` of :func:`fa_jax.load_results` (dims: the sweep's axes, then each output's
own axes such as ``step``; a ``complete`` flag per run, and a ``diverged`` flag per run where the engine set one).
From the metric ``V`` (any data variable, dims ``(a_1, ..., a_k)``) :func:`phase_grid` builds the grid

    G[y, x] = reduce_{other dims} V[select](x, y)          shape (len(y), len(x)),

* ``select`` ``{dim: value}`` fixes a dim to one entry: a coordinate value of that dim, else an integer position
  (``-1`` = the last, e.g. ``step=-1`` the last record); ``"first"`` / ``"last"`` work too;
* ``reduce`` ``{dim: rule}`` reduces a dim with one of :data:`REDUCTIONS` over the finite values (NaN-skipping:
  a cell where some runs diverged shows the rule over the others);
* every other dim must have one value (it is dropped); a dim with several values and no rule is an error.

Cells are marked: ``x`` where every present run of the cell diverged or the value is NaN, hatched where runs of the
cell are missing (a partial sweep: ``complete`` False; the value is over the present runs).

Simulations (``fa-jax run NAME --out DIR``). Their results load with one dim ``run`` and each run's part and label
keys as coordinates (:mod:`fa_jax.results`), so ``part`` (``--part``) picks the runs of one part and
:func:`fa_jax.select_runs` unstacks them: the part's label keys become dims (e.g. sgd-support's ``sgd`` part ->
dims ``b, seed, traj, <output axes>``), to plot, reduce or select like sweep axes. The part's labels must form a
full grid (each combination once; ValueError listing the parts that do otherwise); with one part it may be left
out. A folder with several sweeps (sgd-vs-adaptive: ``sgd-vs-adaptive`` and ``sgd-vs-adaptive-nets``) needs
``sweep`` (``--sweep``: a tag, or the experiment's name).

Axes: a numeric axis is drawn on a log scale when its values are positive and closer to geometric than to
arithmetic spacing (``logspace`` axes, widths 1, 2, 4, 16), else linear; strings / booleans are categories with
labelled ticks (in the sweep's order). Cells are centred on the values, edges halfway between them (geometric
mean on log axes).

Theory (``theory=f`` or ``"module:function"``): ``f(x, y)`` is called with the two axes' coordinate values as
2-D arrays of shape ``(len(y), len(x))`` (``numpy.meshgrid`` order; strings for categorical axes) and returns

* a number ``t``: the predicted metric; the colour map diverges around it (``TwoSlopeNorm(vcenter=t)``) and the
  contour ``G = t`` (where the measurement crosses the theory) is drawn;
* an array broadcastable to ``(len(y), len(x))``: the predicted metric per cell; the map shows ``G - f(x, y)``
  centred on 0, with its zero contour;
* a dict with ``"value"`` (either of the above, optional) and/or ``"boundary"``: an array whose zero level set is
  the predicted phase boundary, drawn dashed (evaluated on a fine 200 x 200 grid when both axes are numeric, so
  ``f`` must broadcast; on the cells otherwise).

Without a theory the colour map is sequential (``viridis``), on a log colour scale when the values are positive and
span three decades or more (``cscale``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import textwrap
import warnings
from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["CSCALES", "REDUCTIONS", "SCALES", "PhaseGrid", "parse_assignments", "phase_grid", "plot_phase"]

REDUCTIONS = ("median", "mean", "min", "max")
SCALES = ("auto", "linear", "log", "category")
CSCALES = ("auto", "linear", "log")


@dataclasses.dataclass(frozen=True)
class PhaseGrid:
    """What a phase diagram shows: ``value`` (DataArray, dims ``(y, x)``, float), ``diverged`` / ``incomplete``
    (bool numpy arrays ``(len(y), len(x))``), ``label`` (the metric's long name and units) and ``how`` (the
    select / reduce rules as text)."""
    value: object
    diverged: np.ndarray
    incomplete: np.ndarray
    label: str
    how: str
    x: str
    y: str


def parse_assignments(items, param: str, *, rules: tuple[str, ...] | None = None) -> dict:
    """``["seed=median,width=max", "lr=mean"]`` (or one such string, or a mapping) -> ``{dim: value}``.

    Values of ``--select`` stay strings here (:func:`phase_grid` matches them to the coordinates); ``rules``:
    the allowed values (``--reduce``). ValueError naming ``param`` otherwise."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        if isinstance(items, str):
            items = [items]
        pairs = []
        for item in items:
            for part in str(item).split(","):
                if not part.strip():
                    continue
                dim, sep, val = part.partition("=")
                if not (sep and dim.strip() and val.strip()):
                    allowed = "|".join(rules) if rules else "VALUE"
                    raise ValueError(f"invalid {param}={part!r}: allowed DIM={allowed} (comma-separated or repeated)")
                pairs.append((dim.strip(), val.strip()))
    out = {}
    for dim, val in pairs:
        if rules is not None and val not in rules:
            raise ValueError(f"invalid {param} rule {dim}={val!r}: allowed one of {', '.join(rules)}")
        if dim in out:
            raise ValueError(f"invalid {param}: {dim!r} is given twice")
        out[dim] = val
    return out


def _open(data, sweep: str | None = None, part: str | None = None):
    """The Dataset to plot: ``data`` (a Dataset, ``load_results``' ``{tag: Dataset}`` or an output folder) with
    ``sweep`` picking one of several sweeps and, for a simulation's runs (dim ``run``), ``part`` picking the runs
    of one part, unstacked so that its label keys are dims (see :func:`_pick_part`)."""
    import xarray as xr

    if isinstance(data, xr.Dataset):
        if sweep is not None:
            raise ValueError(f"invalid sweep={sweep!r}: data is one Dataset; sweep= picks one of the sweeps of a "
                             "`fa-jax run` folder (or of load_results' {tag: Dataset})")
        ds, where = data, "data"
    elif isinstance(data, Mapping) and all(isinstance(v, xr.Dataset) for v in data.values()):  # {tag: Dataset}
        ds, where = _pick_sweep(data, sweep, "data"), "data"
    elif isinstance(data, (str, os.PathLike)):
        from ..results import load_results

        where = os.fspath(data)
        if not os.path.isdir(data):
            raise FileNotFoundError(f"invalid DIR={where!r}: not a folder; allowed a sweep's output folder "
                                    "(the --out of fa-jax sweep / fa-jax run)")
        ds = load_results(data, allow_partial=True, sweep=sweep)  # a partial sweep plots, missing cells hatched
        if not isinstance(ds, xr.Dataset):  # {tag: Dataset}: several run_labelled calls
            ds = _pick_sweep(ds, None, where)
    else:
        raise TypeError(f"invalid data={type(data).__name__}: allowed an xarray.Dataset or a sweep's output folder")
    return _pick_part(ds, part, where)


def _pick_sweep(sweeps: Mapping, sweep: str | None, where: str):
    """One Dataset of ``{tag: Dataset}`` (a `fa-jax run` folder with several sweeps, e.g. sgd-vs-adaptive):
    the one whose tag, or else whose experiment's name, is ``sweep``; ValueError listing them otherwise."""
    def experiment(ds) -> str:
        try:
            return json.loads(ds.attrs.get("experiment", "{}")).get("name", "")
        except (TypeError, ValueError, AttributeError):
            return ""

    allowed = ", ".join(f"{t!r} (experiment {experiment(d)!r})" for t, d in sweeps.items())
    if sweep is None:
        if len(sweeps) == 1:
            return next(iter(sweeps.values()))
        raise ValueError(f"invalid sweep=None: {where} holds {len(sweeps)} sweeps; allowed one of {allowed} "
                         "(--sweep TAG, sweep=TAG)")
    hit = [t for t in sweeps if t == sweep] or [t for t, d in sweeps.items() if experiment(d) == sweep]
    if len(hit) != 1:
        why = "matches several" if hit else "is not one of them"
        raise ValueError(f"invalid sweep={sweep!r}: {where} holds the sweeps {allowed}; {sweep!r} {why}")
    return sweeps[hit[0]]


def _pick_part(ds, part: str | None, where: str):
    """A simulation's runs (``load_results`` of a ``fa-jax run`` folder: dim ``run``, labels as coordinates) ->
    the runs of ``part`` with one dim per label key (:func:`fa_jax.select_runs`, ``unstack=True``): the label
    keys become axes to plot, reduce or select. ``part`` may be left out when there is one part. A Dataset
    without a ``run`` dim (a sweep file's results, or runs already selected) is returned as it is."""
    from ..results import _run_labels, grid_parts, select_runs

    if ds.attrs.get("run_labels") is None or "run" not in ds.dims:
        if part is not None:
            raise ValueError(f"invalid part={part!r}: {where} holds no simulation runs to pick from (no 'run' dim: "
                             "a sweep file's results, or one part already selected); part= / --part picks the runs "
                             "of one part of a `fa-jax run` folder")
        return ds
    info = _run_labels(ds)
    parts = info["parts"]  # part -> coordinate names of the label keys all its runs have
    of_part = ds[info["part_coord"]].values

    def listing(ps) -> str:
        return ", ".join(f"{p!r} ({', '.join(parts[p]) or 'no label keys'}; {int((of_part == p).sum())} runs)"
                         for p in ps)

    grids = grid_parts(ds, full=False)  # full or sparse grids: a missing cell is drawn empty
    if part is None and len(parts) == 1:
        part = next(iter(parts))
    elif part is None or part not in parts:
        why = (f"{where} holds the runs of {len(parts)} parts" if part is None else "no such part")
        raise ValueError(f"invalid part={part!r}: {why}; allowed one of {listing(grids) or '(none)'} (--part "
                         "PART / part=PART; its label keys become dims)"
                         + (f"; labels repeat a combination, so not plottable: "
                            f"{listing(p for p in parts if p not in grids)}" if len(grids) < len(parts) else ""))
    if part not in grids:
        raise ValueError(f"invalid part={part!r}: the labels of its {int((of_part == part).sum())} runs "
                         f"({', '.join(parts[part]) or 'no label keys'}) repeat a combination of label values, so "
                         f"they cannot be axes; allowed one of {listing(grids) or '(none)'}")
    return select_runs(ds, part, unstack=True).assign_attrs(part=part)


def _is_numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "iuf"


def _index(ds, dim: str, value) -> int:
    """Position along ``dim`` that ``value`` names: a coordinate value, else an integer position (-1 = last)."""
    n = ds.sizes[dim]
    coord = ds[dim].values if dim in ds.coords else None
    if isinstance(value, str) and value in ("first", "last"):
        return 0 if value == "first" else n - 1
    if coord is not None:
        if _is_numeric(coord):
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = None
            if v is not None:
                hit = np.flatnonzero(np.isclose(coord.astype(float), v, rtol=1e-9, atol=0.0))
                if hit.size:
                    return int(hit[0])
        else:
            hit = [i for i, c in enumerate(coord) if str(c) == str(value)]
            if hit:
                return hit[0]
    try:
        i = float(value)
    except (TypeError, ValueError):
        i = None
    if i is not None and i == int(i) and -n <= int(i) < n:
        return int(i) % n
    shown = ", ".join(str(c) for c in coord[:12]) + (", ..." if n > 12 else "") if coord is not None else ""
    raise ValueError(f"invalid select {dim}={value!r}: allowed a coordinate value of {dim!r}"
                     + (f" ({shown})" if shown else "") + f", an integer position in [-{n}, {n - 1}], 'first' or "
                     "'last'")


def _label(ds, name: str) -> str:
    attrs = ds[name].attrs
    text = attrs.get("long_name") or name
    return f"{text} [{attrs['units']}]" if attrs.get("units") else text


def phase_grid(data, x: str, y: str, metric: str, *, reduce=None, select=None, sweep: str | None = None,
               part: str | None = None) -> PhaseGrid:
    """The reduced metric on the ``(y, x)`` grid and the cell marks (see the module docstring).

    ``data``: a Dataset, ``load_results``' ``{tag: Dataset}`` or an output folder (loaded with
    ``allow_partial=True``); ``sweep`` / ``part``: which sweep and which part of a simulation's runs (module
    docstring, "Simulations"). ``reduce`` / ``select``: mappings ``{dim: rule}`` / ``{dim: value}`` or
    ``"dim=...,dim=..."`` strings. ValueError naming the parameter and its allowed values for any bad input."""
    ds = _open(data, sweep, part)
    reduce = parse_assignments(reduce, "reduce", rules=REDUCTIONS)
    select = parse_assignments(select, "select")
    names = [str(v) for v in ds.data_vars]
    if metric not in ds.data_vars:
        raise ValueError(f"invalid metric={metric!r}: allowed one of {', '.join(names)}")
    da = ds[metric]
    dims = list(da.dims)
    for dim in select:
        if dim not in dims:
            raise ValueError(f"invalid select {dim}=...: {metric!r} has no dim {dim!r}; allowed one of "
                             f"{', '.join(dims)}")
    picks = {dim: _index(ds, dim, v) for dim, v in select.items()}
    rest = [d for d in dims if d not in picks]
    for param, val in (("x", x), ("y", y)):
        if val not in rest:
            extra = f" ({val!r} is fixed by select)" if val in picks else ""
            raise ValueError(f"invalid {param}={val!r}{extra}: allowed one of the dims of {metric!r}: "
                             f"{', '.join(rest)}")
    if x == y:
        raise ValueError(f"invalid y={y!r}: it is also x; allowed another dim of {metric!r}: "
                         f"{', '.join(d for d in rest if d != x)}")
    for dim in reduce:
        if dim not in rest or dim in (x, y):
            why = "it is plotted" if dim in (x, y) else ("it is selected" if dim in picks else "no such dim")
            raise ValueError(f"invalid reduce {dim}=...: {why}; allowed the other dims of {metric!r}: "
                             f"{', '.join(d for d in rest if d not in (x, y)) or '(none)'}")
    drop = []
    for dim in rest:
        if dim in (x, y) or dim in reduce:
            continue
        if da.sizes[dim] > 1:
            raise ValueError(
                f"invalid reduce: {metric!r} has {da.sizes[dim]} values along {dim!r}, which is neither plotted, "
                f"selected nor reduced; allowed reduce {dim}={'|'.join(REDUCTIONS)} (e.g. --reduce {dim}=median, "
                f"reduce={{'{dim}': 'median'}}) or select {dim}=VALUE")
        drop.append(dim)
    if not np.issubdtype(da.dtype, np.number) and da.dtype != bool:
        raise ValueError(f"invalid metric={metric!r}: its values are {da.dtype}, allowed a numeric variable")

    # Nothing is computed above this line: every input is checked first.
    val = da.isel(picks).astype(float)
    val = val.isel({d: 0 for d in drop}, drop=True)
    with warnings.catch_warnings():  # all-NaN cells (every run diverged) are expected: they are marked instead
        warnings.simplefilter("ignore", RuntimeWarning)
        for dim, rule in reduce.items():
            val = getattr(val, rule)(dim, skipna=True, keep_attrs=True)
    val = val.transpose(y, x)

    def mask(name: str):
        """The per-run flag ``name`` (dims: sweep axes) after select, as (y, x) arrays: (present, flagged)."""
        if name not in ds:
            return None
        m = ds[name]
        m = m.isel({d: i for d, i in picks.items() if d in m.dims})
        other = [d for d in m.dims if d not in (x, y)]
        m = m.astype(float)
        return m, other

    shape = val.shape
    got = mask("complete")
    if got is None:
        present = None
        incomplete = np.zeros(shape, bool)
    else:
        c, other = got
        present = c.fillna(0) > 0.5
        incomplete = (~present).any(other).broadcast_like(val).transpose(y, x).values
        n_present = present.sum(other).broadcast_like(val).transpose(y, x).values
    got = mask("diverged")
    all_div = np.zeros(shape, bool)
    if got is not None:
        dv, other = got
        flagged = dv.fillna(0) > 0.5
        if present is not None:
            flagged = flagged & present
        n_div = flagged.sum(other).broadcast_like(val).transpose(y, x).values
        n_all = n_present if present is not None else np.prod([dv.sizes[d] for d in other], dtype=int)
        all_div = (n_div > 0) & (n_div == n_all)
    nan = np.isnan(val.values)
    if present is not None:
        nan &= n_present > 0  # a cell without any run is 'incomplete', not 'diverged'
    diverged = all_div | nan
    how = [f"{d}={ds[d].values[i] if d in ds.coords else i}" for d, i in picks.items()]  # the value picked
    how += [f"{rule} over {d}" for d, rule in reduce.items()]
    return PhaseGrid(value=val, diverged=diverged, incomplete=incomplete, label=_label(ds, metric),
                     how="; ".join(how), x=x, y=y)


# ----------------------------------------------------------------------------- axes
def axis_scale(values, requested: str = "auto", param: str = "xscale", name: str = "") -> str:
    """``"log"``, ``"linear"`` or ``"category"`` for an axis with coordinate ``values`` (see the module docstring).

    ``auto``: strings/booleans -> category; positive numbers whose consecutive log-ratios vary less (coefficient of
    variation) than their differences -> log (two values: a ratio >= 10); other numbers -> linear."""
    if requested not in SCALES:
        raise ValueError(f"invalid {param}={requested!r}: allowed one of {', '.join(SCALES)}")
    v = np.asarray(values)
    numeric = _is_numeric(v)
    if requested == "category":
        return requested
    if requested in ("linear", "log") and not numeric:
        raise ValueError(f"invalid {param}={requested!r} for axis {name!r} (values {v.dtype}): allowed 'category' "
                         "or 'auto'")
    if requested == "log" and not (v > 0).all():
        raise ValueError(f"invalid {param}='log' for axis {name!r}: its values are not all > 0; allowed 'linear', "
                         "'category' or 'auto'")
    if requested != "auto":
        return requested
    if not numeric:
        return "category"
    s = np.sort(v.astype(float))
    if s.size < 2 or s[0] <= 0 or np.any(np.diff(s) <= 0):
        return "linear"
    if s.size == 2:
        return "log" if s[1] / s[0] >= 10 else "linear"

    def cv(d):
        return float(np.std(d) / np.mean(d))

    return "log" if cv(np.diff(np.log(s))) < cv(np.diff(s)) else "linear"


def _centres_edges(values, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres and edges (n + 1) in data coordinates: category -> 0..n-1 +- 1/2; linear -> midpoints; log ->
    geometric midpoints. The outer edges extend by half the neighbouring gap (one value: +-1/2, or a factor 10^1/2)."""
    n = len(values)
    if scale == "category":
        c = np.arange(n, dtype=float)
        return c, np.arange(n + 1) - 0.5
    v = np.asarray(values, float)
    t = np.log(v) if scale == "log" else v
    if n == 1:
        half = np.log(10) / 2 if scale == "log" else 0.5
        e = np.array([t[0] - half, t[0] + half])
    else:
        mid = (t[1:] + t[:-1]) / 2
        e = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
    return v, (np.exp(e) if scale == "log" else e)


# ----------------------------------------------------------------------------- theory
def _theory_fn(theory, ds) -> tuple[Callable, str]:
    if callable(theory):
        return theory, getattr(theory, "__name__", "theory")
    if not isinstance(theory, str):
        raise TypeError(f"invalid theory={theory!r}: allowed a function f(x, y) or 'module:function'")
    from ..experiments import import_ref

    search = [os.getcwd()]
    src = ds.attrs.get("source", "")
    if isinstance(src, str) and os.path.isfile(src):
        search.append(os.path.dirname(os.path.abspath(src)))
    fn = import_ref(theory, "theory", search)
    if not callable(fn):
        raise ValueError(  # noqa: TRY004 - a bad command-line value, reported as such (exit 2)
            f"invalid theory={theory!r}: it names {type(fn).__name__}, allowed a function f(x, y)")
    return fn, theory.rpartition(":")[2]


def _as_grid(v, shape, theory_name: str, key: str):
    a = np.asarray(v, dtype=float)
    try:
        a = np.broadcast_to(a, shape) if a.ndim else a
    except ValueError:
        raise ValueError(f"invalid theory={theory_name!r}: its {key} has shape {a.shape}; allowed a number or an "
                         f"array broadcastable to (len(y), len(x)) = {shape}") from None
    return a


def _evaluate_theory(fn, name, xv, yv, shape):
    """``(value, boundary)``: value a float, a (ny, nx) array or None; boundary a (ny, nx) array or None."""
    X, Y = np.meshgrid(np.asarray(xv), np.asarray(yv))
    try:
        out = fn(X, Y)
    except Exception as e:  # the user's function: reported as bad input, with its own error
        raise ValueError(f"invalid theory={name!r}: f(x, y) raised {type(e).__name__}: {e}") from e
    value, boundary = (out.get("value"), out.get("boundary")) if isinstance(out, Mapping) else (out, None)
    if isinstance(out, Mapping) and (set(out) - {"value", "boundary"} or not set(out)):
        raise ValueError(f"invalid theory={name!r}: it returned a dict with keys {sorted(out)}; allowed "
                         "'value' and/or 'boundary'")
    if value is not None:
        value = _as_grid(value, shape, name, "value")
        if not np.isfinite(value).all():
            raise ValueError(f"invalid theory={name!r}: its value is not finite everywhere; allowed finite numbers")
        if value.ndim == 0:
            value = float(value)
    if boundary is not None:
        boundary = np.broadcast_to(_as_grid(boundary, shape, name, "boundary"), shape)
    return value, boundary


# ----------------------------------------------------------------------------- the figure
def _sweep_name(ds) -> str:
    """The sweep's name (a simulation's: its tag), and the part plotted (``NAME [PART]``)."""
    try:
        spec = json.loads(ds.attrs.get("spec", "{}"))
    except (TypeError, ValueError):
        spec = {}
    name = spec.get("name") or spec.get("experiment") or ""
    part = ds.attrs.get("part")
    return f"{name} [{part}]" if name and isinstance(part, str) else name


def _axis_label(ds, dim: str) -> str:
    try:
        paths = json.loads(ds.attrs.get("axis_paths", "{}"))
    except (TypeError, ValueError):
        paths = {}
    p = paths.get(dim)
    return f"{dim} ({p})" if p and p != dim else dim


def plot_phase(data, x: str, y: str, metric: str, *, reduce=None, select=None, theory=None, ax=None,
               xscale: str = "auto", yscale: str = "auto", cscale: str = "auto", cmap: str | None = None,
               vmin: float | None = None, vmax: float | None = None, title: str | None = None,
               label: str | None = None, colorbar: bool = True, legend: bool = True, sweep: str | None = None,
               part: str | None = None):
    """Draw the phase diagram of ``metric`` over dims ``x`` and ``y`` of a sweep; returns the matplotlib Axes.

    ``data``: an ``xarray.Dataset`` of :func:`fa_jax.load_results` (or its ``{tag: Dataset}``) or an output
    folder: a sweep file's, or a simulation's (``fa-jax run --out``). ``sweep``: which of a folder's several
    sweeps (its tag or experiment name; needed only when there are several, e.g. sgd-vs-adaptive); ``part``:
    which part of a simulation's runs (needed only when there are several), its label keys becoming dims usable
    as ``x`` / ``y`` / ``reduce`` / ``select`` (module docstring, "Simulations"). ``reduce``:
    ``{dim: "median"|"mean"|"min"|"max"}`` for every other dim with several values; ``select``: ``{dim: value}``
    (a coordinate value, else an integer position; e.g. ``{"step": -1}``). ``theory``: ``f(x, y)`` or
    ``"module:function"`` (module docstring). ``ax``: draw into these axes (facets), else a new figure.
    ``xscale`` / ``yscale``: ``auto|linear|log|category``; ``cscale``: ``auto|linear|log`` (colour scale, without
    theory); ``vmin`` / ``vmax``: colour limits (panels on one scale; default: the data's range, widened to
    contain the theory value); ``title`` / ``label``: the title and colour-bar label (defaults: ``SWEEP: METRIC``;
    the metric's long name and units, the selection and the reduction). The heat-map is ``ax.collections[0]`` (its array: the (y, x) grid); every input is checked before
    anything is drawn (ValueError naming the parameter and its allowed values)."""
    import matplotlib.pyplot as plt
    from matplotlib import colors
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import NullFormatter

    from .style import DIVERGING

    if cscale not in CSCALES:
        raise ValueError(f"invalid cscale={cscale!r}: allowed one of {', '.join(CSCALES)}")
    ds = _open(data, sweep, part)
    g = phase_grid(ds, x, y, metric, reduce=reduce, select=select)
    xv, yv = g.value[x].values, g.value[y].values
    sx = axis_scale(xv, xscale, "xscale", x)
    sy = axis_scale(yv, yscale, "yscale", y)
    val = g.value
    for dim, s in ((x, sx), (y, sy)):  # numeric axes ascending (cell edges need order); categories as swept
        if s != "category" and np.any(np.diff(val[dim].values.astype(float)) < 0):
            order = np.argsort(val[dim].values, kind="stable")
            val = val.isel({dim: order})
            ax_i = 0 if dim == y else 1
            g = dataclasses.replace(g, value=val, diverged=np.take(g.diverged, order, axis=ax_i),
                                    incomplete=np.take(g.incomplete, order, axis=ax_i))
    xv, yv = val[x].values, val[y].values
    Z = val.values
    shape = Z.shape
    t_value = boundary = None
    if theory is not None:
        fn, tname = _theory_fn(theory, ds)
        t_value, boundary = _evaluate_theory(fn, tname, xv, yv, shape)
        if boundary is not None and sx != "category" and sy != "category":
            fx = _fine(xv, sx)
            fy = _fine(yv, sy)
            _, fb = _evaluate_theory(fn, tname, fx, fy, (fy.size, fx.size))
            boundary = (fx, fy, fb)
        elif boundary is not None:
            boundary = (None, None, boundary)
    if cscale == "log" and t_value is not None:
        raise ValueError("invalid cscale='log' with a theory value: the colour map is centred linearly on the "
                         "theory; allowed cscale 'auto' or 'linear'")

    # ---- drawing starts here
    if label is None:
        label = g.label + (f" ({g.how})" if g.how else "")
    shown = Z
    if isinstance(t_value, np.ndarray):
        shown = Z - t_value
        label = f"{label} \u2212 theory"
    finite = shown[np.isfinite(shown)]
    if t_value is not None:
        centre = 0.0 if isinstance(t_value, np.ndarray) else t_value
        lo = vmin if vmin is not None else (float(finite.min()) if finite.size else centre - 1)
        hi = vmax if vmax is not None else (float(finite.max()) if finite.size else centre + 1)
        span = max(hi - centre, centre - lo, 1e-12 * max(abs(centre), 1.0))
        lo = min(lo, centre - span) if lo >= centre else lo
        hi = max(hi, centre + span) if hi <= centre else hi
        norm = colors.TwoSlopeNorm(vcenter=centre, vmin=lo, vmax=hi)
        cmap = cmap or DIVERGING
    else:
        positive = finite.size == 0 or finite.min() > 0
        use_log = cscale == "log" or (cscale == "auto" and finite.size > 0 and positive
                                      and finite.max() / finite.min() >= 1e3)
        if use_log and not (positive and (vmin is None or vmin > 0)):
            raise ValueError("invalid cscale='log': the metric (or vmin) has values <= 0; allowed 'linear' or "
                             "'auto'")
        norm = (colors.LogNorm if use_log else colors.Normalize)(vmin=vmin, vmax=vmax)
        if not finite.size and (vmin is None or vmax is None):  # every cell NaN: any limits, all cells are marked
            norm = colors.Normalize(vmin=0.0, vmax=1.0)
        cmap = cmap or "viridis"
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.8), constrained_layout=True)
    fig = ax.figure
    (xc, xe), (yc, ye) = _centres_edges(xv, sx), _centres_edges(yv, sy)
    ax.set_facecolor("0.88")  # NaN cells: grey
    mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(shown), cmap=cmap, norm=norm, shading="flat")
    handles = []
    for dim, s, c, axis in ((x, sx, xv, ax.xaxis), (y, sy, yv, ax.yaxis)):
        set_ticks, set_labels = (ax.set_xticks, ax.set_xticklabels) if axis is ax.xaxis else \
            (ax.set_yticks, ax.set_yticklabels)
        c = np.asarray(c)
        if s == "log":
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
            axis.set_minor_formatter(NullFormatter())  # minor labels crowd a log axis of a decade or two
        few = s != "category" and len(c) <= 15
        if few and (c.dtype.kind in "iu" or (s == "log" and c.max() / c.min() < 100)):  # ticks at the values
            set_ticks(c.astype(float))
            set_labels([f"{v:.3g}" for v in c])
        elif s == "category":
            set_ticks(np.arange(len(c)))
            set_labels([str(v) for v in c], rotation=30 if dim == x and max(len(str(v)) for v in c) > 6 else 0)
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])
    ax.set_xlabel(_axis_label(ds, x))
    ax.set_ylabel(_axis_label(ds, y))
    if t_value is not None:
        level_grid = np.ma.masked_invalid(shown)
        c0 = 0.0 if isinstance(t_value, np.ndarray) else t_value
        if min(shape) >= 2 and finite.size and finite.min() < c0 < finite.max():
            ax.contour(xc, yc, level_grid, levels=[c0], colors="k", linewidths=1.6)
            handles.append(Line2D([], [], color="k", lw=1.6, label="measured = theory"))
    if boundary is not None:
        bx, by, b = boundary
        bx, by = (xc, yc) if bx is None else (bx, by)
        if np.nanmin(b) < 0 < np.nanmax(b) and min(b.shape) >= 2:
            ax.contour(bx, by, b, levels=[0.0], colors="k", linestyles="--", linewidths=1.4)
            handles.append(Line2D([], [], color="k", ls="--", lw=1.4, label="theory boundary"))
    iy, ix = np.nonzero(g.diverged)
    if iy.size:
        ax.plot(xc[ix], yc[iy], "x", color="k", ms=8, mew=1.6, ls="none")
        handles.append(Line2D([], [], marker="x", color="k", ms=8, mew=1.6, ls="none",
                              label="all runs diverged / NaN"))
    iy, ix = np.nonzero(g.incomplete)
    for j, i in zip(iy, ix, strict=True):
        ax.add_patch(Rectangle((xe[i], ye[j]), xe[i + 1] - xe[i], ye[j + 1] - ye[j], fill=False, hatch="///",
                               edgecolor="0.35", lw=0))
    if iy.size:
        handles.append(Patch(facecolor="none", edgecolor="0.35", hatch="///", label="incomplete (runs missing)"))
    if legend and handles:
        # below the axes: the marks explain cells, they must not hide one
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(len(handles), 2),
                  fontsize=8, frameon=False)
    if colorbar:
        cb = fig.colorbar(mesh, ax=ax)
        cb.set_label("\n".join(textwrap.wrap(label, 48)))  # long names and rules: two lines, not clipped
        if t_value is not None and not isinstance(t_value, np.ndarray):
            cb.ax.axhline(t_value, color="k", lw=1.2)  # the theory value on the colour bar
    ax.set_title(title if title is not None else (f"{_sweep_name(ds)}: {metric}" if _sweep_name(ds) else metric))
    return ax


def _fine(values, scale: str, n: int = 200) -> np.ndarray:
    """``n`` points across the drawn cells (edge to edge), evenly spaced on the axis's scale."""
    _, e = _centres_edges(np.asarray(values, float), scale)
    return np.geomspace(e[0], e[-1], n) if scale == "log" else np.linspace(e[0], e[-1], n)


# ----------------------------------------------------------------------------- fa-jax plot
def main(args) -> int:
    """Run ``fa-jax plot`` (its arguments: ``fa_jax/cli.py``) from parsed ``args``: 0 on success, 2 (with
    ``fa-jax: error: ...``) on bad input, checked before anything is drawn."""
    import sys

    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import FigureCanvasBase

    def fail(msg: str) -> int:
        print(f"fa-jax: error: {msg}", file=sys.stderr)
        return 2

    kinds = FigureCanvasBase.get_supported_filetypes()
    ext = os.path.splitext(args.out)[1].lstrip(".").lower()
    if ext not in kinds:
        return fail(f"invalid -o/--out={args.out!r}: allowed a file name ending in one of "
                    f"{', '.join('.' + k for k in sorted(kinds))}")
    from .style import DPI, styled

    try:  # drawn in the shared figure style (fonts, line widths) of every fa-jax figure
        ax = styled(plot_phase)(args.dir, args.x, args.y, args.metric, reduce=args.reduce, select=args.select,
                                theory=args.theory, xscale=args.xscale, yscale=args.yscale, cscale=args.cscale,
                                title=args.title, sweep=args.sweep, part=args.part)
    except (ValueError, FileNotFoundError) as e:
        return fail(str(e))
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    ax.figure.savefig(args.out, dpi=DPI)
    plt.close(ax.figure)
    print(f"wrote {args.out}")
    return 0
