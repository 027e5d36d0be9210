"""The sweep directory's manifest ``sweep.json``: its name, how it is written (atomically) and read (checked).

One small module that :mod:`fa_jax.sweepfile` (which writes it) and :mod:`fa_jax.results` (which reads it) both
import, so neither imports the other. A damaged manifest raises :class:`ManifestError` naming the file and the fix.
"""
from __future__ import annotations

import json
import math
import os

__all__ = ["MANIFEST", "ManifestError", "SpecError", "read_manifest"]


class SpecError(ValueError):
    """A sweep file is malformed or names something that does not exist (raised before any compilation)."""


MANIFEST = "sweep.json"


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
    return None


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """``out_dir/sweep.json``, checked; a damaged one raises :class:`ManifestError` naming it and the fix."""
    path = os.path.join(os.fspath(out_dir), MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no sweep manifest here (was `fa-jax sweep SPEC --out DIR` run?)")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the sweep manifest: {e.strerror or e}") from None
    fix = (f"rerun the sweep command (`fa-jax sweep SPEC --out {os.fspath(out_dir)}`, SPEC the sweep file this "
           "directory was made from): it moves the damaged file aside and rebuilds it, deleting no chunk file")
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
