"""Result manifests: their names, how they are written (atomically) and read (checked).

Two kinds, one schema (the keys :func:`read_manifest` checks), so :func:`fa_jax.results.load_results` reads both:

* ``sweep.json``: a sweep file's folder (:mod:`fa_jax.sweepfile` writes it); its axes are the sweep file's.
* ``runs.<tag>.json``: one per :func:`fa_jax.sweep.run_labelled` call, in that call's ``out_dir`` beside its
  ``chunks/`` (a simulation's is ``<--out>/cache``): ONE axis ``run`` over the call's runs, in order, plus
  ``parts`` and ``labels`` (one entry per run) and the configs (``base_config`` and the ``varying`` fields).
  The tag names the call (sgd-vs-adaptive makes two, ``sgd-vs-adaptive`` and ``sgd-vs-adaptive-nets``).

One small module that the writers (:mod:`fa_jax.sweepfile`, :mod:`fa_jax.sweep`) and :mod:`fa_jax.results` (the
reader) all import, so none imports another. A damaged manifest raises :class:`ManifestError` naming the file and
the fix.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re

__all__ = ["MANIFEST", "ManifestError", "SpecError", "find_run_manifests", "read_manifest", "read_manifest_file",
           "run_manifest_name"]


class SpecError(ValueError):
    """A sweep file is malformed or names something that does not exist (raised before any compilation)."""


MANIFEST = "sweep.json"
RUNS_DIR = "cache"  # where a simulation's run_labelled calls keep chunks and manifests, inside its --out folder
_RUN_MANIFEST = re.compile(r"^runs\.[A-Za-z0-9._-]+\.json$")


def run_manifest_name(tag: str) -> str:
    """File name of the manifest of a :func:`fa_jax.sweep.run_labelled` call with ``tag``: ``runs.<tag>.json``
    (``runs.untagged.json`` for ``""``); a tag with characters outside ``[A-Za-z0-9._-]`` gets them replaced
    and a short hash of the tag appended, so two tags never share a file."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", tag)
    if slug != tag:
        slug = f"{slug}-{hashlib.sha1(tag.encode()).hexdigest()[:8]}"
    return f"runs.{slug or 'untagged'}.json"


def find_run_manifests(folder: str | os.PathLike) -> list[str]:
    """Paths of the run manifests (``runs.<tag>.json``, sorted) in ``folder``, else in ``folder/cache`` (a
    simulation's ``--out``); ``[]`` when neither holds one."""
    folder = os.fspath(folder)
    for d in (folder, os.path.join(folder, RUNS_DIR)):
        try:
            names = sorted(n for n in os.listdir(d) if _RUN_MANIFEST.match(n) and os.path.isfile(os.path.join(d, n)))
        except OSError:  # absent, or not a folder
            continue
        if names:
            return [os.path.join(d, n) for n in names]
    return []


def _write_json_atomic(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ManifestError(SpecError):
    """``sweep.json`` is damaged: not UTF-8 JSON, not an object, or lacking what a sweep directory needs."""

    def __init__(self, path: str, why: str, fix: str):
        super().__init__(f"{path}: damaged sweep manifest ({why}); {fix}")
        self.path, self.why = path, why


# what readers of a manifest use: top-level keys and the keys of each chunk-plan entry, with their JSON types
_MANIFEST_KEYS = {"spec": dict, "spec_hash": str, "n_runs": int, "shape": list, "plan": list}
_PLAN_KEYS = {"file": str, "runs": list, "key": str, "size": int}


def _manifest_problem(doc) -> str | None:
    """What makes ``doc`` unusable as a manifest (None: usable)."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, expected an object"
    missing = [k for k in _MANIFEST_KEYS if k not in doc]
    if missing:
        return f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
    for k, t in _MANIFEST_KEYS.items():
        if not isinstance(doc[k], t) or isinstance(doc[k], bool):
            return f"key {k!r} is {doc[k]!r}, expected a JSON {t.__name__}"
    spec = doc["spec"]
    if not isinstance(spec.get("experiment"), str) or not isinstance(spec.get("axes"), list):
        return "key 'spec' lacks 'experiment' or 'axes'"
    if not all(isinstance(a, dict) and {"name", "coords"} <= set(a) for a in spec["axes"]):
        return "an axis in 'spec.axes' lacks 'name' or 'coords'"
    if not all(isinstance(x, int) and x >= 0 for x in doc["shape"]) or math.prod(doc["shape"]) != doc["n_runs"]:
        return f"shape {doc['shape']} does not hold n_runs = {doc['n_runs']} runs"
    runs = []
    for j, c in enumerate(doc["plan"]):
        if (not isinstance(c, dict) or any(not isinstance(c.get(k), t) for k, t in _PLAN_KEYS.items())
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in c["runs"])):
            return f"plan entry {j} lacks one of {', '.join(_PLAN_KEYS)} (or has the wrong type)"
        runs += c["runs"]
    if sorted(runs) != list(range(doc["n_runs"])):
        return f"the chunk plan does not cover runs 0..{doc['n_runs'] - 1} exactly once"
    if doc.get("kind") == "runs":  # a run_labelled call's manifest: a part and a label per run
        for k, t in (("parts", str), ("labels", dict)):
            col = doc.get(k)
            if not (isinstance(col, list) and len(col) == doc["n_runs"] and all(isinstance(x, t) for x in col)):
                return f"key {k!r} is not a list of {doc['n_runs']} JSON {'strings' if t is str else 'objects'}"
    return None


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """``out_dir/sweep.json``, checked; a damaged one raises :class:`ManifestError` naming it and the fix."""
    path = os.path.join(os.fspath(out_dir), MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no sweep manifest here (was `fa-jax sweep SPEC --out DIR` or "
                                "`fa-jax run NAME --out DIR` run?)")
    fix = (f"rerun the sweep command (`fa-jax sweep SPEC --out {os.fspath(out_dir)}`, SPEC the sweep file this "
           "directory was made from): it moves the damaged file aside and rebuilds it, deleting no chunk file")
    return read_manifest_file(path, fix)


def read_manifest_file(path: str, fix: str | None = None) -> dict:
    """The manifest at ``path`` (``sweep.json`` or ``runs.<tag>.json``), checked; a damaged one raises
    :class:`ManifestError` naming it and ``fix`` (default: for a run manifest, rerun the command that wrote it)."""
    if fix is None:
        fix = ("rerun the command that wrote it (`fa-jax run NAME --out DIR`, or the run_labelled call): it "
               "rewrites the manifest and loads the finished chunks, recomputing none")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the sweep manifest: {e.strerror or e}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(path, "binary content, not UTF-8 text", fix) from None
    except json.JSONDecodeError as e:
        why = "empty file" if not raw.strip() else f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        raise ManifestError(path, why, fix) from None
    problem = _manifest_problem(doc)
    if problem is not None:
        raise ManifestError(path, problem, fix)
    return doc


def move_aside(path: str, dest: str) -> str:
    """Rename ``path`` to ``dest`` (``dest.1``, ``dest.2``, ... if taken) and return the name used: a damaged file
    is kept, never deleted (it may show what went wrong). Another process sharing the directory may have moved it
    first: then nothing happens."""
    base, n = dest, 1
    while os.path.exists(dest):
        dest, n = f"{base}.{n}", n + 1
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        pass
    return dest
