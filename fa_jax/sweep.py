"""The sweep engine: a grid of runs as few compiled programs as possible.

Runs are grouped by :func:`fa_jax.config.static_key` (shapes, scan lengths, optimiser family, ...). Each group is
ONE ``jit(vmap(run_fn))`` program over the ``runs`` axis; traced fields (learning rate, init scale, seeds, width
inside its bucket, ...) are stacked arrays, so a new value never recompiles. Groups run in fixed-size chunks
(the last padded by repeating a run), so the grid size does not change shapes either.

Each chunk's results are written to ``out_dir/chunks/<hash>.npz`` as soon as they exist; re-running the same sweep
loads them instead of recomputing (an interrupted sweep resumes). A run is marked ``diverged`` (kept, never fatal)
by its own ``diverged`` output when it returns one, else when any floating output is NaN.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .config import static_key, traced_values, with_values

__all__ = ["run_sweep", "expand_grid", "STATS", "group_configs"]


@dataclasses.dataclass
class SweepStats:
    traces: int = 0  # Python traces of a batched program (= compilations)
    chunks_run: int = 0
    chunks_loaded: int = 0


STATS = SweepStats()
_PROGRAMS: dict[tuple, Callable] = {}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
        return out
    return {prefix[:-1]: tree}


def _unflatten(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        parts = path.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def expand_grid(base, axes: dict[str, Sequence]) -> list:
    """Cartesian product of ``axes`` (``{dotted.path: values}``) over ``base``; the last axis varies fastest.

    Example: ``expand_grid(cfg, {"optim.lr": [1e-3, 1e-2], "data_seed": range(8)})`` gives 16 configs.
    Every config is validated (``cfg.validate()`` when the class has one) before anything runs.
    """
    import itertools

    names = list(axes)
    out = []
    for combo in itertools.product(*(list(axes[n]) for n in names)):
        cfg = with_values(base, dict(zip(names, combo)))
        out.append(cfg.validate() if hasattr(cfg, "validate") else cfg)
    return out


def group_configs(configs: Sequence) -> dict[str, list[int]]:
    """``{static_key: [indices]}`` in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(static_key(c), []).append(i)
    return groups


def _program(run_fn: Callable, key: str, base) -> Callable:
    cache_key = (run_fn, key)
    if cache_key not in _PROGRAMS:

        def batched(values):
            STATS.traces += 1  # runs once per compilation, never per call
            return jax.vmap(lambda v: run_fn(with_values(base, v)))(values)

        _PROGRAMS[cache_key] = jax.jit(batched)
    return _PROGRAMS[cache_key]


def _stack(values: list[dict]) -> dict[str, jax.Array]:
    out = {}
    for path in values[0]:
        col = [v[path] for v in values]
        if all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in col):
            out[path] = jnp.asarray(col, jnp.int32)
        else:
            out[path] = jnp.asarray(col, jnp.float32)
    return out


def _chunk_hash(run_fn: Callable, key: str, values: list[dict], tag: str) -> str:
    # The run function's identity and the package version are part of the key; edits to a run function that
    # do not bump the version are NOT detected: clear out_dir/cache after changing what a run computes.
    from . import __version__

    ident = f"{getattr(run_fn, '__module__', '')}.{getattr(run_fn, '__qualname__', repr(run_fn))}"
    blob = json.dumps([tag, __version__, ident, key, values], sort_keys=True, default=float)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def run_sweep(
    run_fn: Callable,
    configs: Sequence,
    *,
    chunk_size: int | None = None,
    out_dir: str | os.PathLike | None = None,
    tag: str = "",
    progress: bool = False,
    desc: str = "sweep",
) -> list[dict]:
    """Run every config; return one result dict (numpy leaves) per config, in order.

    Args:
      run_fn: pure ``run_fn(cfg) -> dict`` of arrays for ONE run; traced fields of ``cfg`` arrive as tracers.
        Must be a stable (module-level) function: compiled programs are cached per ``(run_fn, static key)``.
      configs: validated concrete configs (frozen dataclasses using :func:`fa_jax.config.traced` fields).
      chunk_size: runs per vmapped call (default: the whole group); the last chunk is padded.
      out_dir: where chunk results are cached for resumption (None: no caching).
      tag: distinguishes result caches of different code/sims sharing ``out_dir``.
    """
    results: list[dict | None] = [None] * len(configs)
    groups = group_configs(configs)
    plan = []
    for key, idx in groups.items():
        size = chunk_size or len(idx)
        for s in range(0, len(idx), size):
            plan.append((key, idx[s : s + size], size))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(configs), desc=desc, unit="run")
    cache_dir = None
    if out_dir is not None:
        cache_dir = os.path.join(os.fspath(out_dir), "chunks")
        os.makedirs(cache_dir, exist_ok=True)
    for key, idx, size in plan:
        base = configs[idx[0]]
        values = [traced_values(configs[i]) for i in idx]
        path = None
        if cache_dir is not None:
            path = os.path.join(cache_dir, _chunk_hash(run_fn, key, values, tag) + ".npz")
        if path is not None and os.path.exists(path):
            with np.load(path) as z:
                flat = {k: z[k] for k in z.files}
            STATS.chunks_loaded += 1
        else:
            padded = values + [values[-1]] * (size - len(values))
            out = _program(run_fn, key, base)(_stack(padded))
            flat = {k: np.asarray(v)[: len(values)] for k, v in _flatten(jax.device_get(out)).items()}
            flat["diverged"] = _diverged(flat)
            if path is not None:
                tmp = path + ".tmp.npz"
                np.savez(tmp, **flat)
                os.replace(tmp, path)  # atomic: a killed sweep never leaves a half-written chunk
            STATS.chunks_run += 1
        for j, i in enumerate(idx):
            results[i] = _unflatten({k: v[j] for k, v in flat.items()})
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return results  # type: ignore[return-value]


def _diverged(flat: dict[str, np.ndarray]) -> np.ndarray:
    """A run's own ``diverged`` output if it has one (it knows which outputs may legitimately be inf/NaN);
    otherwise any NaN in a floating output."""
    n = next(iter(flat.values())).shape[0]
    if "diverged" in flat:
        return flat["diverged"].reshape(n, -1).any(axis=1)
    bad = np.zeros(n, bool)
    for v in flat.values():
        if np.issubdtype(v.dtype, np.floating):
            bad |= np.isnan(v.reshape(n, -1)).any(axis=1)
    return bad
