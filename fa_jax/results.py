"""Labelled sweep results: ``fa_jax.load_results(DIR) -> xarray.Dataset``, and merging multi-host directories.

Dimensions: one per sweep axis (named as in the sweep file, e.g. ``seed``, ``optim.lr``, ``regime``; coordinates
are the axis values or case labels), then each output's own axes, named by the experiment's ``dims`` patterns
(``step`` for recorded metrics with the record steps as coordinate, ``eps`` for robustness curves, ``point``
for per-test-point outputs, ...) or ``<output>_dim<i>``. Output paths become variable names with ``/``
(``records/loss``, ``robust/binary/r50``), with the experiment's labels and units as ``long_name`` / ``units``
attributes. Outputs whose shape differs between groups (e.g. per-neuron arrays of different widths) are
NaN-padded to the largest shape. ``ds.attrs`` holds the manifest's metadata (spec, spec hash, versions, device,
XLA flags, the experiment's description) as JSON strings.

Self-describing: the manifest holds the experiment's description (:func:`fa_jax.experiments.describe`), so a
result opens in a process that cannot import the experiment's module; manifests written before it fall back to
the registry.

Simulations. ``fa-jax run NAME --out DIR`` (any :func:`fa_jax.sweep.run_labelled` call) writes one manifest per
run_labelled call, ``runs.<tag>.json`` beside its chunks (``DIR/cache``; :mod:`fa_jax.manifest`), and
``load_results(DIR)`` opens it: ONE dimension ``run`` (the runs in the order the sim listed them) instead of the
sweep axes, then each output's own axes as above; coordinates along ``run``: ``part`` (the sim's part name) and
one per label key (NaN for runs of parts without that key; a key that clashes with a dim or
variable name is prefixed ``label_``). :func:`select_runs` takes one part and, when its labels form a full grid,
unstacks it into one dim per label key. A folder with several run_labelled calls (sgd-vs-adaptive: its linear
and its network runs) gives ``{tag: Dataset}``, or the one named by ``sweep=``.
"""
from __future__ import annotations

import fnmatch
import itertools
import json
import os
import shutil

import numpy as np

from .manifest import MANIFEST, RUNS_DIR, find_run_manifests, read_manifest, read_manifest_file

__all__ = ["each_run", "labelled_runs", "load_results", "merge", "one_run", "own_coord", "own_records", "runs_where",
           "select_runs", "split_parts", "stacked"]


def _dims_for(name: str, ndim: int, patterns) -> tuple[str, ...]:
    for pat, dims in patterns:
        if fnmatch.fnmatchcase(name, pat) and len(dims) == ndim:
            return tuple(dims)
    return tuple(f"{name.replace('/', '.')}_dim{i}" for i in range(ndim))


def _output_meta(man: dict) -> dict:
    """How to label the outputs: the experiment description the manifest holds (written by every sweep since the
    registry opened), else (older manifests) the registry's entry for the spec's experiment, else nothing (generic
    ``<name>_dim<i>`` axes, with a warning)."""
    meta = man.get("experiment")
    if not isinstance(meta, dict):
        from .experiments import describe, get_experiment

        ref = man["spec"]["experiment"]
        src = man.get("source", "")
        try:
            meta = describe(get_experiment(ref, search=(os.path.dirname(os.path.abspath(src)),)
                                           if isinstance(src, str) and os.path.isfile(src) else ()))
        except ValueError as e:
            import warnings

            warnings.warn(f"{MANIFEST} has no output description and {e}: outputs get generic axis names",
                          stacklevel=3)
            meta = {"name": ref}
    out = dict(meta)
    for k in ("dims", "coords", "labels", "units"):
        out[k] = [tuple(x) for x in meta.get(k) or []]
    return out


def _config_coord(man: dict, path: str):
    """The value of config field ``path`` shared by every run (from the manifest's base config), or None when
    an axis sets it (its values then differ between runs) or the field is not there."""
    for a in man["spec"]["axes"]:
        if a.get("path") == path or any(path in c for c in a.get("cases") or []):
            return None
    if any(p == path or p.startswith(path + ".") for p in man.get("varying") or {}):
        return None  # a run manifest: the field differs between runs
    v = man.get("base_config", {})
    for part in path.split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    return np.asarray(v) if isinstance(v, list) else None


def load_results(out_dir: str | os.PathLike, *, allow_partial: bool = False, sweep: str | None = None):
    """All outputs of the results in ``out_dir`` as one ``xarray.Dataset`` (see the module docstring).

    ``out_dir``: a sweep file's folder (``sweep.json``: dims are the sweep axes), or a simulation's ``--out``
    folder / a :func:`fa_jax.sweep.run_labelled` ``out_dir`` (``runs.<tag>.json`` there or in its ``cache/``:
    dim ``run``, labels as coordinates). A folder with several run_labelled calls returns ``{tag: Dataset}``
    unless ``sweep`` names one (its tag, or its experiment's name when no other call shares it).

    Results with missing chunks raise (naming how many and how to complete them) unless ``allow_partial``, in
    which case the missing runs are NaN and ``ds["complete"]`` is False for them.
    """
    out_dir = os.fspath(out_dir)
    if os.path.exists(os.path.join(out_dir, MANIFEST)):
        if sweep is not None:
            raise ValueError(f"invalid sweep={sweep!r}: {out_dir} holds one sweep (sweep.json); sweep= picks one of "
                             "the run_labelled calls of a `fa-jax run` folder")
        man = read_manifest(out_dir)
        rerun = (f"rerun the sweep command (`fa-jax sweep {man.get('source') or 'SPEC'} --out {out_dir}`)")
        return _load(man, out_dir, allow_partial, rerun, complete=f"merge with `fa-jax merge {out_dir} OTHER_DIR...`")
    paths = find_run_manifests(out_dir)
    if not paths:
        old = os.path.isdir(os.path.join(out_dir, RUNS_DIR, "chunks"))  # a sim's folder written before manifests
        raise FileNotFoundError(
            f"{os.path.join(out_dir, MANIFEST)}: no sweep manifest here (no sweep.json, and no runs.<tag>.json here "
            f"or in {os.path.join(out_dir, RUNS_DIR)}; was `fa-jax sweep SPEC --out DIR` or `fa-jax run NAME --out "
            "DIR` run?)" + ("; its chunks were written before simulations wrote manifests: rerun the same `fa-jax "
                            "run` command, which loads every finished chunk and writes the manifest" if old else ""))
    mans = {}
    for path in paths:
        man = read_manifest_file(path)
        mans[man.get("tag") or os.path.basename(path)] = (path, man)
    mans = dict(sorted(mans.items()))
    if sweep is not None:
        hit = [t for t in mans if t == sweep] or [t for t, (_, m) in mans.items() if m["spec"]["experiment"] == sweep]
        if len(hit) != 1:
            allowed = ", ".join(f"{t!r} (experiment {m['spec']['experiment']!r})" for t, (_, m) in mans.items())
            why = "matches several" if hit else "is not one of them"
            raise ValueError(f"invalid sweep={sweep!r}: {out_dir} holds the runs of {allowed}; {sweep!r} {why}")
        mans = {hit[0]: mans[hit[0]]}
    rerun = (f"rerun the simulation's command (`fa-jax run NAME --out {out_dir}`, or the run_labelled call that "
             "wrote it)")
    out = {tag: _load(man, os.path.dirname(path), allow_partial, rerun) for tag, (path, man) in mans.items()}
    return next(iter(out.values())) if len(out) == 1 else out


def _load(man: dict, folder: str, allow_partial: bool, rerun: str, complete: str = ""):
    """The Dataset of the checked manifest ``man`` whose chunks are in ``folder/chunks``; ``rerun`` (the command
    that completes it) and ``complete`` (how to gather chunks computed on other hosts, if that can happen) are
    named in errors and warnings."""
    import xarray as xr

    out_dir = folder  # named in messages
    spec = man["spec"]
    meta = _output_meta(man)
    shape = tuple(man["shape"])
    n = man["n_runs"]
    chunks_dir = os.path.join(folder, "chunks")
    missing = [c for c in man["plan"] if not os.path.exists(os.path.join(chunks_dir, c["file"]))]
    if missing and not allow_partial:
        raise FileNotFoundError(
            f"{out_dir}: {len(missing)} of {len(man['plan'])} chunks missing (runs not finished"
            f"{', or on another host: ' + complete if complete else ''}); {rerun} to complete it, or "
            "load_results(..., allow_partial=True)")
    import warnings

    from .sweep import DamagedChunkError, DamagedChunkWarning, read_chunk

    per_run: dict[str, list] = {}
    present = np.zeros(n, bool)
    names = {tuple(c["runs"]): c["file"] for c in man["plan"]}
    rerun = f"{rerun}: it moves the file to chunks/damaged/ and recomputes its runs"
    for c in man["plan"]:
        path = os.path.join(chunks_dir, c["file"])
        if not os.path.exists(path):
            continue
        try:  # checks the file's stored identity against this plan entry: a swapped file is damage, not data
            flat = read_chunk(path, c["runs"], names)
        except DamagedChunkError as e:
            if not allow_partial:
                raise DamagedChunkError(e.path, f"{e.why}; {rerun}") from None
            warnings.warn(f"{e}; its runs are left NaN ({rerun})", DamagedChunkWarning, stacklevel=2)
            continue
        for k, arr in flat.items():  # row j is run c["runs"][j]: the file is the one named for these runs
            col = per_run.setdefault(k, [None] * n)
            for j, i in enumerate(c["runs"]):
                col[int(i)] = arr[j]
        present[np.asarray(c["runs"], int)] = True
    axes = spec["axes"]
    axis_names = [a["name"] for a in axes]
    data_vars = {}
    shapes, longest = {}, {}  # per output its dims and largest shape; per dim its largest length over the outputs
    for name, col in per_run.items():
        got = [a for a in col if a is not None]
        nd = got[0].ndim
        if any(a.ndim != nd for a in got):
            continue  # outputs of different rank in different groups cannot share dims
        dims = _dims_for(name, nd, meta["dims"])
        shapes[name] = dims
        for i, dim in enumerate(dims):
            longest[dim] = max(longest.get(dim, 0), max(a.shape[i] for a in got))
    for name, dims in shapes.items():
        col = per_run[name]
        got = [a for a in col if a is not None]
        # outputs sharing a dim are padded to one length: e.g. a robustness curve that only the runs with the
        # shortest eps grid produce, beside the eps grid of every run
        top = tuple(longest[d] for d in dims)
        ragged = any(a.shape != top for a in got) or len(got) < n
        dtype = got[0].dtype
        if ragged and not np.issubdtype(dtype, np.floating):
            dtype = np.float64 if np.issubdtype(dtype, np.integer) else np.float32
        fill = np.nan if np.issubdtype(dtype, np.floating) else 0
        full = np.full((n, *top), fill, dtype=dtype)
        for i, a in enumerate(col):
            if a is not None:
                full[(i, *tuple(slice(0, s) for s in a.shape))] = a
        data_vars[name] = (tuple(axis_names) + dims, full.reshape(shape + top))
    coords = {a["name"]: list(a["coords"]) for a in axes}
    # Output-defined coordinates (record steps, eps grid) when every run that did not diverge agrees on them (the
    # sweep NaNs a diverged run's floating outputs: it carries no coordinate, and must not demote one to a variable)
    for dim, source in meta["coords"]:
        if source.startswith("config:"):
            val = _config_coord(man, source[len("config:"):])
            if val is not None:
                coords[dim] = val
            continue
        if source in per_run and all(a is not None for a in per_run[source]):
            vals = per_run[source]
            alive = [v for v in vals if not (np.issubdtype(v.dtype, np.floating) and np.isnan(v).all())]
            if alive and all(v.shape == vals[0].shape for v in vals) and all(
                    np.array_equal(v, alive[0]) for v in alive):
                coords[dim] = alive[0]
                data_vars.pop(source, None)  # the same numbers for every run: a coordinate, not a variable
    # Dims only some variables have must agree in length with their coordinate; drop coords that do not fit.
    lengths = {}
    for dims_, arr in data_vars.values():
        for d, s in zip(dims_, arr.shape, strict=True):
            lengths.setdefault(d, set()).add(s)
    coords = {d: v for d, v in coords.items() if d in axis_names or lengths.get(d) == {len(v)}}
    ds = xr.Dataset(data_vars, coords=coords)
    ds["complete"] = (tuple(axis_names), present.reshape(shape))
    for name in ds.data_vars:
        for key, pairs in (("long_name", meta["labels"]), ("units", meta["units"])):
            hit = next((v for pat, v in pairs if fnmatch.fnmatchcase(name, pat)), None)
            if hit is not None:
                ds[name].attrs[key] = hit
    ds.attrs.update({
        "spec": json.dumps(spec, default=str), "spec_hash": man["spec_hash"], "source": man.get("source", ""),
        "versions": json.dumps(man.get("versions", {})), "device": json.dumps(man.get("device", {})),
        "xla_flags": man.get("xla_flags", ""), "base_config": json.dumps(man.get("base_config", {}), default=str),
        "axis_paths": json.dumps({a["name"]: a["path"] for a in axes}),
        "axis_cases": json.dumps({a["name"]: a["cases"] for a in axes if a["kind"] == "cases"}),
        "experiment": json.dumps(meta, default=str),
    })
    if man.get("kind") == "runs":
        ds = _with_labels(ds, man)
    return ds


_MISSING = object()  # a run whose label lacks a key


def _label_column(values: list) -> np.ndarray:
    """One label key's values over the runs (``_MISSING`` where a run's label lacks the key) as a coordinate:
    int64, float64 (NaN where missing), bool or str when they allow it, else object (NaN where missing, as xarray
    would make a None; lists and dicts as JSON text)."""
    present = [v for v in values if v is not _MISSING]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        if len(present) == len(values) and all(isinstance(v, int) for v in present):
            return np.asarray(values, np.int64)
        return np.asarray([np.nan if v is _MISSING else float(v) for v in values], np.float64)
    if present and len(present) == len(values) and all(isinstance(v, bool) for v in present):
        return np.asarray(values, bool)
    text = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in values]
    if all(isinstance(v, str) for v in text):
        return np.asarray(text, str)
    out = np.empty(len(text), object)
    out[:] = [np.nan if v is _MISSING else v for v in text]
    return out


def _with_labels(ds, man: dict):
    """A run manifest's Dataset with its ``part`` and label coordinates along ``run`` (module docstring); what
    :func:`select_runs` needs goes into ``ds.attrs["run_labels"]`` (JSON): the part coordinate's name, per part
    the coordinates of the keys every run of that part has, each key's coordinate name and the labels as written."""
    parts, labels = man["parts"], man["labels"]
    keys = list(dict.fromkeys(k for lab in labels for k in lab))
    taken = set(ds.dims) | set(ds.variables)
    part_name = "part" if "part" not in taken else "run_part"
    names = {k: f"label_{k}" if k in taken or k == part_name else k for k in keys}
    coords = {part_name: ("run", np.asarray(parts, str))}
    for k in keys:
        coords[names[k]] = ("run", _label_column([lab.get(k, _MISSING) for lab in labels]))
    ds = ds.assign_coords(coords)
    # per part, in the order of its first label: the keys every run of the part has
    first = {q: lab for q, lab in reversed(list(zip(parts, labels, strict=True)))}
    by_part = {p: [names[k] for k in first[p] if all(k in lab for lab, q in zip(labels, parts, strict=True) if q == p)]
               for p in dict.fromkeys(parts)}
    info = {"part_coord": part_name, "parts": by_part, "names": names, "labels": labels}
    ds.attrs.update({"tag": man.get("tag", ""), "run_labels": json.dumps(info),
                     "varying": json.dumps(man.get("varying", {}), default=str),
                     "config_classes": json.dumps(man.get("config_classes", []))})
    return ds


def _is_grid(cols: list, full: bool = True) -> bool:
    """Label columns (one list per label key, one entry per run) form a grid: each combination of values at most
    once (``full``: exactly once, a full Cartesian grid; else a sparse one, missing cells allowed)."""
    import math

    n = len(cols[0]) if cols else 0
    unique = bool(cols) and len(set(zip(*cols, strict=True))) == n
    return unique and (not full or math.prod(len(set(c)) for c in cols) == n)


def _run_labels(ds) -> dict:
    try:
        info = json.loads(ds.attrs["run_labels"])
        if not {"parts", "part_coord", "names", "labels"} <= set(info):
            raise KeyError("run_labels")
    except (KeyError, TypeError, ValueError):
        raise ValueError("invalid ds: it holds no labelled runs (ds.attrs['run_labels']); select_runs takes "
                         "load_results(DIR) of a `fa-jax run` folder or of a run_labelled out_dir") from None
    return info


def grid_parts(ds, full: bool = True) -> list[str]:
    """The parts of a simulation's Dataset whose runs' labels form a full grid (``full=False``: a full or sparse
    grid, each label combination at most once), i.e. that :func:`select_runs` unstacks into one dim per label key
    (``unstack="auto"``; ``unstack=True``), decided on the labels alone (no data is copied)."""
    info = _run_labels(ds)
    parts, names, labels = info["parts"], info["names"], info["labels"]
    of_part = ds[info["part_coord"]].values
    out = []
    for p, keys in parts.items():
        mine = [lab for lab, q in zip(labels, of_part, strict=True) if q == p]
        if _is_grid([_label_column([lab[k] for lab in mine]).tolist() for k, c in names.items() if c in keys], full):
            out.append(p)
    return out


def _own_coords(sub):
    """A part's own output coordinates: an output the experiment names as a dim's coordinate (e.g. ``plan`` for
    ``step``) that differs between parts (so ``load_results`` kept it a variable) but is the same in every run of
    this part becomes that coordinate, the dim cut to its finite values: runs of a part that records fewer steps
    than another part are NaN beyond them, and ``step=-1`` must pick the part's last record, not padding."""
    try:
        pairs = json.loads(sub.attrs.get("experiment", "{}")).get("coords") or []
    except (TypeError, ValueError, AttributeError):
        return sub
    for dim, source in pairs:
        if dim in sub.coords or source not in sub.data_vars or sub[source].dims[-1:] != (dim,):
            continue
        rows = sub[source].values.reshape(-1, sub.sizes[dim]).astype(float)
        n = int(np.isfinite(rows[0]).sum())
        if not (np.isfinite(rows[0, :n]).all() and np.array_equal(rows, np.broadcast_to(rows[0], rows.shape),
                                                                   equal_nan=True)):
            continue  # the runs of the part disagree: it stays a variable
        beyond = sub.isel({dim: slice(n, None)})
        if n < sub.sizes[dim] and any(not np.issubdtype(v.dtype, np.floating) or bool(v.notnull().any())
                                      for v in beyond.data_vars.values() if dim in v.dims):
            continue  # values (not NaN padding) beyond the coordinate's end: nothing is cut
        val = rows[0, :n]
        val = val.astype(np.int64) if np.all(val == np.round(val)) else val
        sub = sub.isel({dim: slice(0, n)}).drop_vars(source).assign_coords({dim: val})
    return sub


def select_runs(ds, part: str, *, unstack: bool | str = "auto"):
    """The runs of one ``part`` of a simulation's Dataset (:func:`load_results` of a ``fa-jax run`` folder), with
    only that part's label coordinates, and its own output coordinates (e.g. ``step`` from ``plan`` when the
    part's runs share one recording plan: the dim cut to the part's records, no padding of longer parts).

    ``unstack``: ``"auto"`` (default) replaces the ``run`` dim by one dim per label key when the part's labels
    form a full Cartesian grid (each combination exactly once; e.g. sgd-support's ``sgd`` part -> dims ``(b,
    seed, traj, <output axes>)``; :func:`grid_parts` lists them), else keeps ``run``; ``True`` unstacks a full or
    a sparse grid (each combination at most once, e.g. sgd-support's ``phase`` part, whose b = N column has one
    seed): a missing combination's outputs are NaN (False for a boolean output; integer outputs become float),
    its ``complete`` True (no chunk of the sweep is missing there: there is no run), so a reduction over the
    sparse axis (``median`` skips NaN) uses the runs that exist; repeated labels are a ValueError; ``False`` keeps ``run`` (then
    ``sub.set_index(run=[...]).unstack("run")`` by hand).
    """
    info = _run_labels(ds)
    parts, part_coord, names, labels = info["parts"], info["part_coord"], info["names"], info["labels"]
    if unstack not in (True, False, "auto"):
        raise ValueError(f"invalid unstack={unstack!r}: allowed 'auto', True or False")
    if part not in parts:
        raise ValueError(f"invalid part={part!r}: allowed one of {list(parts)}")
    keys = parts[part]
    sub = ds.isel(run=np.flatnonzero(ds[part_coord].values == part)).drop_vars(sorted({k for ks in parts.values() for k in ks} - set(keys)))
    # the part's own label columns (int stays int, str stays str: no NaN / None of other parts' runs)
    by_name = {v: k for k, v in names.items()}
    cols = {c: _label_column([labels[int(r)][by_name[c]] for r in sub["run"].values]) for c in keys}
    sub = _own_coords(sub.assign_coords({c: ("run", v) for c, v in cols.items()}))
    if unstack is False:
        return sub
    n = sub.sizes["run"]
    values = [v.tolist() for v in cols.values()]
    if not _is_grid(values, full=unstack == "auto"):
        if unstack is True:
            raise ValueError(f"invalid unstack=True: the labels {keys} of part {part!r} repeat a combination "
                             f"({n} runs), so they cannot be axes; use unstack=False")
        return sub
    sub = sub.drop_vars(part_coord)  # one value: the part asked for
    if len(keys) == 1:
        return sub.swap_dims(run=keys[0]).drop_vars("run")
    # a sparse grid's missing cells: NaN, False for boolean outputs (not diverged), and complete: no chunk is missing
    # where there is no run (else every reduction over the sparse axis would read as an incomplete sweep)
    fill = {k: k == "complete" for k, v in sub.data_vars.items() if v.dtype == bool}
    return sub.set_index(run=keys).unstack("run", fill_value=fill).transpose(*keys, ...)


def own_coord(part, dim: str, grid):
    """``part`` (a part of a sim's Dataset) with ``dim``'s 1-D coordinate (an output of that name every run shares,
    e.g. a radius grid) and the dim cut to it: the values the runs carry, or ``grid`` -- the part's own, computed
    from its config -- when no run carries them (every run diverged: the sweep NaNs a diverged run's outputs).

    Why: :func:`load_results` makes such an output a coordinate only when every run that did not diverge agrees on
    it across the whole sweep; where parts have grids of different lengths (feature-averaging: the grid grows with
    k) it stays a NaN-padded per-run coordinate. The runs' values must equal ``grid`` (relative 1e-6): else a
    ValueError naming ``dim``."""
    grid = np.asarray(grid, float)
    rows = np.asarray(part[dim].values).reshape(-1, part.sizes[dim])
    rows = rows[np.isfinite(rows).any(axis=1)]
    n = len(grid)
    if len(rows) and not ((np.isfinite(rows).sum(axis=1) == n).all() and np.allclose(rows[:, :n], grid, rtol=1e-6)):
        raise ValueError(f"invalid runs: their {dim!r} values differ from the config's grid (the runs of one part "
                         "share it)")
    return part.drop_vars(dim).isel({dim: slice(0, n)}).assign_coords({dim: rows[0, :n] if len(rows) else grid})


def split_parts(ds, *, unstack: bool = True, keep=()) -> dict:
    """``{part: select_runs(ds, part, unstack=...)}`` for every part of a sim's Dataset (:func:`load_results` of
    a ``run_labelled`` call), in the order the sim listed them: each unstacked into its label grid (``unstack``),
    except the parts named in ``keep``, which stay on their ``run`` axis."""
    keep = set(keep)
    return {p: select_runs(ds, p, unstack=unstack and p not in keep)
            for p in dict.fromkeys(ds["part"].values.tolist())}


def stacked(da, *dims: str) -> np.ndarray:
    """The values of DataArray ``da`` with ``dims`` leading, as a C-ordered numpy array: what ``np.stack`` of the
    per-run arrays gives, e.g. ``stacked(sub["records/loss"].sel(head="binary"), "seed") -> [seed, step]``.

    Why not ``.values``: :func:`select_runs`' unstacked outputs are views whose label dims vary fastest in memory,
    and numpy sums float32 along such an axis pairwise from 8 values on, so a seed mean of the view can differ
    in the last bit from the same mean over the stacked runs."""
    return np.ascontiguousarray(da.transpose(*dims, ...).values)


def runs_where(ds, **labels):
    """The runs of ``ds`` (a Dataset on its ``run`` dim: :func:`load_results` of a sim, or a part of it kept on its
    ``run`` axis) whose label coordinates equal ``labels`` (``part="rfm", what="cos", gamma=0.05``), in the order
    the sim listed them; a label that only some runs have selects among those."""
    keep = np.ones(ds.sizes["run"], bool)
    for key, value in labels.items():
        keep &= ds[key].values == value
    return ds.isel(run=np.flatnonzero(keep))


def own_records(run):
    """One run (label dims / ``run`` selected away) cut to its own records: dims ``(step, <output axes>)`` with its
    record steps as the ``step`` coordinate.

    Why: a part whose runs record on different plans (sgd-support's phase part: the b = N column trains fewer
    steps) keeps ``plan`` as a variable, NaN-padded beyond each run's last record, and so are its ``records/*``:
    ``isel(step=-1)`` would read padding. A part with one plan has ``step`` already and is returned as it is."""
    if "plan" not in run.data_vars:
        return run
    plan = np.asarray(run["plan"].values, float)
    n = int(np.isfinite(plan).sum())
    return run.isel(step=slice(0, n)).drop_vars("plan").assign_coords(step=plan[:n].astype(np.int64))


def each_run(sub, *dims: str):
    """``(labels, run)`` for every run of a part unstacked into a full grid (``select_runs(..., unstack=True)``),
    over its label ``dims`` in C order (:func:`select_runs` sorts each label dim's values): ``labels``
    ``{dim: value}`` (Python scalars), ``run`` its :func:`own_records`."""
    for idx in itertools.product(*(range(sub.sizes[d]) for d in dims)):
        one = sub.isel(dict(zip(dims, idx, strict=True)))
        yield {d: one[d].item() for d in dims}, own_records(one)


def one_run(part, **labels):
    """The one run of ``part`` (a part of a sim's Dataset, unstacked into its label dims or kept on its ``run``
    axis) with these labels, cut to its own records (:func:`own_records`); on the ``run`` axis anything but
    exactly one match is a ValueError."""
    if "run" in part.dims:
        part = runs_where(part, **labels)
        if part.sizes["run"] != 1:
            raise ValueError(f"{part.sizes['run']} runs have the labels {labels}; expected exactly one")
        return own_records(part.isel(run=0))
    return own_records(part.sel(labels))

def labelled_runs(sub):
    """``(labels, run)`` for every run of a Dataset on its ``run`` axis (e.g. :func:`runs_where`; a sparse part has
    no empty cells there), in the order the sim listed them: ``labels`` ``{name: value}`` of every coordinate along
    ``run`` but ``run`` itself (Python scalars), ``run`` its :func:`own_records`."""
    names = [c for c, v in sub.coords.items() if v.dims == ("run",) and c != "run"]
    for i in range(sub.sizes["run"]):
        one = sub.isel(run=i)
        yield {c: one[c].item() for c in names}, own_records(one)


def merge(dest: str | os.PathLike, *sources: str | os.PathLike) -> dict:
    """Copy the chunk files of ``sources`` (directories of the same sweep, e.g. one per host) into ``dest``.

    Every source must hold the same spec (same hash) and chunk plan; ``dest`` gets the manifest if it has none.
    Returns ``{"copied", "present", "total"}`` counts of chunk files.
    """
    dest = os.fspath(dest)
    if not sources:
        raise ValueError("merge needs at least one source directory")
    mans = [(os.fspath(s), read_manifest(s)) for s in sources]
    ref = read_manifest(dest) if os.path.exists(os.path.join(dest, MANIFEST)) else mans[0][1]
    for src, m in mans:
        if m["spec_hash"] != ref["spec_hash"] or [c["file"] for c in m["plan"]] != [c["file"] for c in ref["plan"]]:
            raise ValueError(f"cannot merge {src}: it holds a different sweep or chunk plan (spec hash "
                             f"{m['spec_hash']} vs {ref['spec_hash']})")
    os.makedirs(os.path.join(dest, "chunks"), exist_ok=True)
    if not os.path.exists(os.path.join(dest, MANIFEST)):
        shutil.copy2(os.path.join(mans[0][0], MANIFEST), os.path.join(dest, MANIFEST))
    copied = 0
    for src, m in mans:
        for c in m["plan"]:
            s = os.path.join(src, "chunks", c["file"])
            d = os.path.join(dest, "chunks", c["file"])
            if os.path.exists(s) and not os.path.exists(d):
                shutil.copy2(s, d + ".part")
                os.replace(d + ".part", d)
                copied += 1
    present = sum(os.path.exists(os.path.join(dest, "chunks", c["file"])) for c in ref["plan"])
    return {"copied": copied, "present": present, "total": len(ref["plan"])}
