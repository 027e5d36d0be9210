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
"""
from __future__ import annotations

import fnmatch
import json
import os
import shutil

import numpy as np

from .manifest import MANIFEST, read_manifest

__all__ = ["load_results", "merge"]


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
    v = man.get("base_config", {})
    for part in path.split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    return np.asarray(v) if isinstance(v, list) else None


def load_results(out_dir: str | os.PathLike, *, allow_partial: bool = False):
    """All outputs of the sweep in ``out_dir`` as one ``xarray.Dataset`` (see the module docstring).

    A sweep with missing chunks raises (naming how many and how to complete it) unless ``allow_partial``, in
    which case the missing runs are NaN and ``ds["complete"]`` is False for them.
    """
    import xarray as xr

    out_dir = os.fspath(out_dir)
    man = read_manifest(out_dir)
    spec = man["spec"]
    meta = _output_meta(man)
    shape = tuple(man["shape"])
    n = man["n_runs"]
    chunks_dir = os.path.join(out_dir, "chunks")
    missing = [c for c in man["plan"] if not os.path.exists(os.path.join(chunks_dir, c["file"]))]
    if missing and not allow_partial:
        raise FileNotFoundError(
            f"{out_dir}: {len(missing)} of {len(man['plan'])} chunks missing (runs not finished, or on another "
            f"host: merge with `fa-jax merge {out_dir} OTHER_DIR...`); rerun the sweep command to complete it, or "
            f"load_results(..., allow_partial=True)")
    import warnings

    from .sweep import DamagedChunkError, DamagedChunkWarning, read_chunk

    per_run: dict[str, list] = {}
    present = np.zeros(n, bool)
    names = {tuple(c["runs"]): c["file"] for c in man["plan"]}
    rerun = (f"rerun the sweep command (`fa-jax sweep {man.get('source') or 'SPEC'} --out {out_dir}`): it moves "
             "the file to chunks/damaged/ and recomputes its runs")
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
    for name, col in per_run.items():
        got = [a for a in col if a is not None]
        nd = got[0].ndim
        if any(a.ndim != nd for a in got):
            continue  # outputs of different rank in different groups cannot share dims
        top = tuple(max(a.shape[d] for a in got) for d in range(nd))
        ragged = any(a.shape != top for a in got) or len(got) < n
        dtype = got[0].dtype
        if ragged and not np.issubdtype(dtype, np.floating):
            dtype = np.float64 if np.issubdtype(dtype, np.integer) else np.float32
        fill = np.nan if np.issubdtype(dtype, np.floating) else 0
        full = np.full((n, *top), fill, dtype=dtype)
        for i, a in enumerate(col):
            if a is not None:
                full[(i, *tuple(slice(0, s) for s in a.shape))] = a
        dims = _dims_for(name, nd, meta["dims"])
        data_vars[name] = (tuple(axis_names) + dims, full.reshape(shape + top))
    coords = {a["name"]: list(a["coords"]) for a in axes}
    # Output-defined coordinates (record steps, eps grid) when every run agrees on them.
    for dim, source in meta["coords"]:
        if source.startswith("config:"):
            val = _config_coord(man, source[len("config:"):])
            if val is not None:
                coords[dim] = val
            continue
        if source in per_run and all(a is not None for a in per_run[source]):
            vals = per_run[source]
            if all(v.shape == vals[0].shape and np.array_equal(v, vals[0]) for v in vals):
                coords[dim] = vals[0]
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
    return ds


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
