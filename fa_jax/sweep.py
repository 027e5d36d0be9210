"""The sweep engine: a grid of runs as few compiled programs as possible, sharded over devices, resumable.

Runs are grouped by :func:`fa_jax.config.static_key` (shapes, scan lengths, optimiser family, batch size, width
bucket, supervision type, ...). Each group is ONE compiled ``jit(vmap(run_fn))`` program over the ``runs`` axis;
traced fields (learning rate, init scale, seeds, width inside its bucket, ...) are stacked arrays, so a new value
never recompiles. With several devices the ``runs`` axis of every chunk is split over a 1-D device mesh with
``jax.shard_map`` (runs are independent: no communication).

Chunks. A group runs in fixed-size chunks (the last one padded by repeating a run). ``chunk_size="auto"`` (the
default) takes the whole group, unless the compiled program's memory analysis (arguments + outputs + temporaries,
per device) exceeds the memory budget; then the chunk is shrunk in proportion and the program recompiled once.
So a sweep that would not fit in one vmap still completes, and a group costs one compilation whenever it fits.

Resumption. Each chunk's results are written atomically (temp file, fsync, rename) to
``out_dir/chunks/<hash>.npz``. The hash covers what runs: the digest of the chunk's lowered program (its StableHLO
text, which contains every operation of the run function and of each library function it calls, plus platform,
jax/jaxlib versions and XLA flags), the static key, the tag and every run's traced values. A sweep that writes a
cache lowers each group's program afresh (tracing + lowering, a small fraction of a compilation) and compiles
the lowered object itself only if some chunk must run, once per distinct program. Re-running the same sweep
loads finished chunks instead of recomputing them (after ``kill -9`` at any moment, the rerun gives the same
results as an uninterrupted run); editing the run function or anything it calls recomputes.

Multi-device CPU. A batched LAPACK call (a decomposition under ``vmap``) in a multi-device CPU program deadlocks
jaxlib's kernels (see :func:`_check_batched_lapack`); such a program is refused with a message naming the call.

Divergence. A run is marked ``diverged`` by its own ``diverged`` / ``diverged_step`` outputs when it has them, else
when any floating output is NaN. A diverged run's floating outputs are set to NaN, except its ``records`` (the
trainer already NaNs records taken after the divergence, keeping the ones before). Other runs are unaffected.

Multi-host. With ``process_count > 1`` (after ``jax.distributed.initialize``), chunk ``j`` of the global chunk
list belongs to process ``j % process_count``; every process writes its chunks to ``out_dir`` (shared, or merged
afterwards with :func:`fa_jax.results.merge`) and returns ``None`` for runs it did not compute.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext as _nullcontext
from typing import Any

import jax
import numpy as np

from . import progress as _progress
from .config import static_key, traced_values, with_values

__all__ = ["STATS", "ChunkPlan", "expand_grid", "group_configs", "memory_budget", "plan_chunks", "run_labelled",
           "run_sweep"]

DEFAULT_MEMORY_FRACTION = 0.5


@dataclasses.dataclass
class SweepStats:
    traces: int = 0  # compilations of a batched program (one per distinct lowered program and device set)
    lowerings: int = 0  # traces + lowerings (each one afresh per sweep call that writes a cache)
    lower_seconds: float = 0.0  # wall time of those lowerings
    compile_seconds: float = 0.0  # wall time of the compilations
    chunks_run: int = 0
    chunks_loaded: int = 0
    chunks_skipped: int = 0  # belonging to another process
    resized_groups: int = 0  # groups whose chunk was shrunk to fit the memory budget


STATS = SweepStats()
_PROGRAMS: dict[tuple, Any] = {}  # (run_fn, static key, size, device ids, x64) -> (compiled, sharding)
_COMPILED: dict[tuple, Any] = {}  # (program digest, device ids) -> (compiled, sharding)
_LOWERED: dict[str, Any] = {}  # program digest -> _Lowered not compiled yet (planned, maybe never run)


# ----------------------------------------------------------------------------- pytree <-> flat dict
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


# ----------------------------------------------------------------------------- grids and groups
def expand_grid(base, axes: dict[str, Sequence]) -> list:
    """Cartesian product of ``axes`` (``{dotted.path: values}``) over ``base``; the last axis varies fastest.

    Example: ``expand_grid(cfg, {"optim.lr": [1e-3, 1e-2], "data_seed": range(8)})`` gives 16 configs.
    Every config is validated (``cfg.validate()`` when the class has one) before anything runs.
    """
    names = list(axes)
    out = []
    for combo in itertools.product(*(list(axes[n]) for n in names)):
        cfg = with_values(base, dict(zip(names, combo, strict=True)))
        out.append(cfg.validate() if hasattr(cfg, "validate") else cfg)
    return out


def group_configs(configs: Sequence) -> dict[str, list[int]]:
    """``{static_key: [indices]}`` in first-seen order: one compiled program per entry."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(static_key(c), []).append(i)
    return groups


# ----------------------------------------------------------------------------- devices and memory
def _mesh(devices: Sequence) -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.asarray(list(devices)), ("runs",))


def memory_budget(devices: Sequence | None = None, fraction: float = DEFAULT_MEMORY_FRACTION) -> int:
    """Bytes one device may use for a chunk: ``fraction`` of the device's capacity.

    Accelerators report ``bytes_limit``; CPU devices share the host's physical RAM (``MemTotal``), split evenly
    between the visible CPU devices. Capacity, not what is free *now*: the budget decides the chunk sizes, a chunk
    size is part of the compiled program, and a different program rounds differently -- so a plan read from the
    momentary free memory made "same config + seed -> same numbers" depend on what else the machine was doing
    (a chaotic run gave chance accuracy in one computation and 0.907 in another). Lower ``fraction`` (or pass an
    explicit budget) when other processes hold much of the memory.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"invalid memory fraction={fraction!r}: allowed 0 < fraction <= 1")
    devices = list(devices or jax.local_devices())
    stats = devices[0].memory_stats() if hasattr(devices[0], "memory_stats") else None
    if stats and "bytes_limit" in stats:
        total = stats["bytes_limit"]
    else:
        total = _host_total_bytes() // max(1, len(devices))
    return int(fraction * total)


def _host_total_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _footprint(compiled) -> int | None:
    """Per-device bytes of a compiled program (arguments + outputs + temporaries), None if unknown."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


# ----------------------------------------------------------------------------- compiled programs
def _x64() -> bool:
    """Whether 64-bit types are on (globally or in a ``jax.enable_x64`` context)."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.float64


def _stack(values: list[dict]) -> dict[str, np.ndarray]:
    """Stack traced values along ``runs``: ints as int32, other numbers as the default float (float64 when
    ``jax_enable_x64`` is on, so a float64 simulation gets float64 hyperparameters)."""
    fdt = np.float64 if _x64() else np.float32
    out = {}
    for path in values[0]:
        col = [v[path] for v in values]
        if all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in col):
            out[path] = np.asarray(col, np.int32)
        else:
            out[path] = np.asarray(col, fdt)
    return out


@dataclasses.dataclass(frozen=True)
class _Lowered:
    """One lowering of a group's chunk program: the ``jax.stages.Lowered`` object (compiled from, never re-traced),
    its input sharding and ``digest``, the hash of what runs (see :func:`_program_digest`)."""

    lowered: Any
    sharding: Any
    digest: str


def _ident(run_fn, key: str, size: int, devices: tuple) -> tuple:
    return (run_fn, key, size, tuple(d.id for d in devices), _x64())


def _lower(run_fn: Callable, key: str, base, size: int, devices: tuple) -> _Lowered:
    """Trace and lower the group's ``jit(vmap(run_fn))`` program at chunk ``size`` on ``devices`` (always afresh:
    the digest must see the code as it is now, including every library function the run calls)."""
    t0 = time.perf_counter()

    def batched(values):
        return jax.vmap(lambda v: run_fn(with_values(base, v)))(values)

    example = _stack([traced_values(base)] * size)
    if len(devices) > 1:
        mesh = _mesh(devices)
        spec = jax.sharding.PartitionSpec("runs")
        sharding = jax.sharding.NamedSharding(mesh, spec)
        # check_vma off: runs are independent and never communicate, so device-variance typing buys nothing here
        fn = jax.jit(jax.shard_map(batched, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))
    else:
        sharding = jax.sharding.SingleDeviceSharding(devices[0])
        fn = jax.jit(batched)
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in example.items()}
    lowered = fn.lower(abstract)
    text = lowered.as_text()
    _check_batched_lapack(text, devices)
    low = _Lowered(lowered, sharding, _program_digest(text, devices))
    STATS.lowerings += 1
    STATS.lower_seconds += time.perf_counter() - t0
    _LOWERED[low.digest] = low
    while len(_LOWERED) > 32:  # planned but never run (plan_chunks alone): keep only the latest
        _LOWERED.pop(next(iter(_LOWERED)))
    return low


def _program_digest(text: str, devices: tuple) -> str:
    """Hash of what a chunk runs: the lowered program text (StableHLO without debug locations: every operation of
    the run function and of each library function it calls, shapes, dtypes, the device count) plus what turns it
    into machine code (platform, device kind, jax/jaxlib versions, XLA_FLAGS)."""
    import jaxlib

    d = devices[0]
    extra = json.dumps([d.platform, getattr(d, "device_kind", ""), jax.__version__,
                        getattr(jaxlib, "__version__", ""), os.environ.get("XLA_FLAGS", "")])
    h = hashlib.sha256(text.encode())
    h.update(extra.encode())
    return h.hexdigest()[:24]


_LAPACK_CALL = re.compile(r"custom_call @(lapack_\w+)\(.*num_batch_dims = \"(\d+)\".*?\s:\s\(tensor<([^>]*)>")


def _check_batched_lapack(text: str, devices: tuple) -> None:
    """Refuse a multi-device CPU program that calls a batched LAPACK kernel (more than one matrix per call).

    jaxlib's batched CPU LAPACK kernels (seen with jaxlib 0.10.2: ``lapack_sgeqrf_ffi`` -> ``ParallelBatchMap``)
    split the batch into sub-tasks on XLA's intra-op thread pool and block the calling thread until they finish.
    In a multi-device CPU program every device's partition runs on a thread of that same pool; when each of them
    reaches such a call at once, every pool thread waits for sub-tasks that no free thread is left to run: the
    sweep hangs at 0 % CPU in ``device_get``. One matrix per call never waits on the pool, so a decomposition that
    is sequential under vmap on CPU (``fa_jax.linalg``: a loop of unbatched calls) is safe.
    """
    if len(devices) < 2 or devices[0].platform != "cpu":
        return
    bad = []
    for line in text.splitlines():
        if "@lapack_" not in line:
            continue
        m = _LAPACK_CALL.search(line)
        if m is None:
            continue
        nb = int(m.group(2))
        dims = [int(x) for x in m.group(3).split("x")[:-1] if x.isdigit()]
        if nb and int(np.prod(dims[:nb])) > 1:
            bad.append(f"{m.group(1)} ({int(np.prod(dims[:nb]))} matrices per call)")
    if bad:
        raise RuntimeError(
            f"this sweep program calls batched CPU LAPACK kernels on {len(devices)} devices: "
            f"{', '.join(sorted(set(bad)))}. jaxlib runs the batch on XLA's thread pool and blocks a pool thread "
            "while waiting; with one program per device every pool thread ends up waiting and the sweep hangs. "
            "Make the decomposition sequential under vmap (use fa_jax.linalg, whose functions loop over the batch "
            "on CPU), or run on one device.")


def _compile(low: _Lowered, devices: tuple):
    """The compiled program of a lowering, cached by its digest: an unchanged program never recompiles."""
    ck = (low.digest, tuple(d.id for d in devices))
    if ck not in _COMPILED:
        t0 = time.perf_counter()
        STATS.traces += 1
        _COMPILED[ck] = (low.lowered.compile(), low.sharding)
        STATS.compile_seconds += time.perf_counter() - t0
        _LOWERED.pop(low.digest, None)  # compiled: the lowering is no longer needed
    return _COMPILED[ck]


def _program(run_fn: Callable, key: str, base, size: int, devices: tuple, fresh: dict | None = None):
    """``(compiled, sharding)`` of one group at chunk ``size`` on ``devices``.

    ``fresh`` None: the in-memory path, cached by the run function's identity (no re-tracing; like ``jax.jit``, a
    library function edited inside this process is not seen). A dict: lowered afresh once per dict (one sweep
    call) and compiled by digest, so a cached result is always keyed by the code as it is now.
    """
    ident = _ident(run_fn, key, size, devices)
    if fresh is None:
        if ident not in _PROGRAMS:
            _PROGRAMS[ident] = _compile(_lower(run_fn, key, base, size, devices), devices)
        return _PROGRAMS[ident]
    _PROGRAMS[ident] = _compile(_fresh_lowering(run_fn, key, base, size, devices, fresh), devices)
    return _PROGRAMS[ident]


def _fresh_lowering(run_fn, key, base, size, devices, fresh: dict) -> _Lowered:
    ident = _ident(run_fn, key, size, devices)
    if ident not in fresh:
        fresh[ident] = _lower(run_fn, key, base, size, devices)
    return fresh[ident]


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """One chunk of one group: ``runs`` are indices into the config list, ``size`` the padded program size."""

    group: int
    key: str
    runs: tuple[int, ...]
    size: int
    file: str | None = None  # the chunk's cache file name (when a cache directory is used)
    program: str | None = None  # digest of the chunk's lowered program (part of ``file``)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def plan_chunks(
    run_fn: Callable,
    configs: Sequence,
    *,
    chunk_size: int | str | None = "auto",
    devices: Sequence | None = None,
    budget: int | None = None,
    max_chunk: int | None = None,
    sizes: dict[str, int] | None = None,
    tag: str = "",
    files: bool = True,
) -> list[ChunkPlan]:
    """Split every group into chunks.

    ``chunk_size``: an int (fixed), or ``"auto"``/``None``: the whole group (capped at ``max_chunk``) unless its
    compiled footprint exceeds ``budget`` bytes per device, in which case the size is scaled down to fit (one
    extra compilation for that group). Sizes are multiples of the number of devices. ``sizes`` maps static keys
    to already-decided sizes (a resumed sweep reuses them, so its chunks are the same).

    ``files``: name each chunk's cache file by what it runs: every group's program is lowered (traced, not
    compiled) at its chunk size and the file name hashes the lowered program (:func:`_program_digest`), the static
    key, ``tag`` and the chunk's traced values. So a resumed sweep reloads a chunk only if its program is
    unchanged; an edited run function, or any library function it calls, gives new names and recomputes.
    """
    devices = tuple(devices or jax.local_devices())
    fresh: dict | None = {} if files else None
    nd = len(devices)
    sizes = dict(sizes or {})
    groups = group_configs(configs)
    plans: list[ChunkPlan] = []
    for gi, (key, idx) in enumerate(groups.items()):
        if key in sizes:
            size = sizes[key]
        elif isinstance(chunk_size, int) and not isinstance(chunk_size, bool):
            if chunk_size < 1:
                raise ValueError(f"invalid chunk_size={chunk_size!r}: allowed an integer >= 1 or 'auto'")
            size = _round_up(min(chunk_size, len(idx)), nd)
        elif chunk_size in (None, "auto"):
            size = _round_up(min(len(idx), max_chunk or len(idx)), nd)
            size = _fit(run_fn, key, configs[idx[0]], size, devices, budget, fresh)
        else:
            raise ValueError(f"invalid chunk_size={chunk_size!r}: allowed an integer >= 1 or 'auto'")
        sizes[key] = size
        digest = _fresh_lowering(run_fn, key, configs[idx[0]], size, devices, fresh).digest if files else None
        for s in range(0, len(idx), size):
            runs = tuple(idx[s : s + size])
            values = [traced_values(configs[i]) for i in runs]
            file = _chunk_hash(digest, key, values, tag) + ".npz" if files else None
            plans.append(ChunkPlan(gi, key, runs, size, file, digest))
    return plans


def _fit(run_fn, key, base, size, devices, budget, fresh=None) -> int:
    """Largest chunk size <= ``size`` whose compiled footprint fits ``budget`` (per device)."""
    nd = len(devices)
    budget = budget if budget is not None else memory_budget(devices)
    compiled, _ = _program(run_fn, key, base, size, devices, fresh)
    foot = _footprint(compiled)
    if foot is None or foot <= budget:
        return size
    per_run = foot / (size // nd)  # per run and device; counting fixed costs as per-run errs on the safe side
    fitted = max(nd, (int(budget // per_run)) * nd)
    STATS.resized_groups += 1
    if fitted >= size:
        return size
    return fitted


def _chunk_hash(program: str, key: str, values: list[dict], tag: str) -> str:
    """A chunk's cache key: the digest of its lowered program (the code that runs, float64 or not, the chunk size
    and device count; see :func:`_program_digest`), the static key, the tag and every run's traced values."""
    blob = json.dumps(["chunk/2", tag, program, key, values], sort_keys=True, default=float)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- atomic chunk files
def _write_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    """temp file -> fsync -> rename -> fsync(dir): a reader (or a rerun after kill -9) sees all or nothing."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _read_chunk(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------- progress
class _Bar:
    """One tqdm bar for the whole sweep, in runs; step callbacks move it inside a chunk (throttled)."""

    def __init__(self, total_runs: int, n_chunks: int, desc: str, min_interval: float = 0.5):
        from tqdm.auto import tqdm

        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} runs [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
        self.bar = tqdm(total=total_runs, desc=desc, unit="run", dynamic_ncols=True, bar_format=fmt)
        self.n_chunks, self.done_chunks, self.done_runs = n_chunks, 0, 0
        self.chunk_runs, self.frac, self.min_interval, self.last = 0, 0.0, min_interval, 0.0

    def start(self, runs: int) -> None:
        self.chunk_runs, self.frac = runs, 0.0

    def step(self, step: int, total: int) -> None:
        self.frac = max(self.frac, min(1.0, step / max(total, 1)))
        now = time.monotonic()
        if now - self.last >= self.min_interval:  # the throttle: callbacks may come every few ms
            self.last = now
            self._show(f"step {step}/{total}")

    def _show(self, step_text: str = "") -> None:
        self.bar.n = self.done_runs + self.chunk_runs * self.frac
        post = f"chunk {min(self.done_chunks + 1, self.n_chunks)}/{self.n_chunks}"
        self.bar.set_postfix_str(f"{post} {step_text}".strip(), refresh=False)
        self.bar.refresh()

    def finish_chunk(self, runs: int) -> None:
        self.done_chunks += 1
        self.done_runs += runs
        self.chunk_runs, self.frac = 0, 0.0
        self._show()

    def close(self) -> None:
        self.bar.n = self.done_runs
        self.bar.close()


# ----------------------------------------------------------------------------- the engine
def run_sweep(
    run_fn: Callable,
    configs: Sequence,
    *,
    chunk_size: int | str | None = "auto",
    out_dir: str | os.PathLike | None = None,
    tag: str = "",
    progress: bool = False,
    desc: str = "sweep",
    devices: Sequence | None = None,
    memory_budget_bytes: int | None = None,
    max_chunk: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    plans: list[ChunkPlan] | None = None,
) -> list[dict | None]:
    """Run every config; return one result dict (numpy leaves) per config, in order.

    Args:
      run_fn: pure ``run_fn(cfg) -> dict`` of arrays for ONE run; traced fields of ``cfg`` arrive as tracers.
        Must be a stable (module-level) function: compiled programs are cached per ``(run_fn, static key)``.
      configs: validated concrete configs (frozen dataclasses using :func:`fa_jax.config.traced` fields).
      chunk_size: runs per compiled call: an int, or ``"auto"`` (whole group within the memory budget).
      out_dir: where chunk results are written for resumption (None: nothing written).
      tag: distinguishes result caches of different code/sims sharing ``out_dir``.
      progress: one progress bar for the whole sweep (False: quiet).
      devices: devices the ``runs`` axis is sharded over (default: all local devices).
      memory_budget_bytes: per-device bytes a chunk may use (default: half of the device's capacity).
      max_chunk: cap on the automatic chunk size.
      process_index, process_count: this process's share of chunks (default: ``jax.process_index()`` /
        ``jax.process_count()``); runs of other processes' chunks come back as ``None``.
      plans: a precomputed :func:`plan_chunks` result (the sweep-file runner passes the one it recorded).
    """
    devices = tuple(devices or jax.local_devices())
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if not 0 <= pi < pc:
        raise ValueError(f"invalid process_index={pi!r}: allowed 0 <= process_index < process_count = {pc}")
    if plans is None:
        plans = plan_chunks(run_fn, configs, chunk_size=chunk_size, devices=devices, budget=memory_budget_bytes,
                            max_chunk=max_chunk, tag=tag, files=out_dir is not None)
    mine = [p for j, p in enumerate(plans) if j % pc == pi]
    STATS.chunks_skipped += len(plans) - len(mine)
    results: list[dict | None] = [None] * len(configs)
    cache_dir = None
    if out_dir is not None:
        cache_dir = os.path.join(os.fspath(out_dir), "chunks")
        os.makedirs(cache_dir, exist_ok=True)
    bar = _Bar(sum(len(p.runs) for p in mine), len(mine), desc) if progress else None
    # quiet: leave whatever sink the caller installed (None by default) in place
    with _progress.sink(bar.step) if bar is not None else _nullcontext():
        for p in mine:
            path = os.path.join(cache_dir, p.file) if cache_dir is not None and p.file else None
            if path is not None and os.path.exists(path):
                flat = _read_chunk(path)
                flat.pop("_runs", None)
                STATS.chunks_loaded += 1
            else:
                if bar is not None:
                    bar.start(len(p.runs))
                flat = _run_chunk(run_fn, configs, p, devices)
                if path is not None:
                    _write_atomic(path, {**flat, "_runs": np.asarray(p.runs, np.int64)})
                STATS.chunks_run += 1
            for j, i in enumerate(p.runs):
                results[i] = _unflatten({k: v[j] for k, v in flat.items()})
            if bar is not None:
                bar.finish_chunk(len(p.runs))
    if bar is not None:
        bar.close()
    for p in plans:  # planned lowerings of chunks that were loaded, not run: not needed any more
        _LOWERED.pop(p.program, None)
    return results


def _chunk_program(run_fn, base, p: ChunkPlan, devices):
    """``(compiled, sharding)`` for a chunk: by its planned program digest (compiled at most once), else (a plan
    without digest: in-memory sweeps) by the run function's identity."""
    if p.program is None:
        return _program(run_fn, p.key, base, p.size, devices)
    ck = (p.program, tuple(d.id for d in devices))
    if ck in _COMPILED:
        return _COMPILED[ck]
    low = _LOWERED.get(p.program)
    if low is None:
        low = _lower(run_fn, p.key, base, p.size, devices)
        if low.digest != p.program:
            raise RuntimeError(
                f"the program of chunk {p.file} changed since the sweep was planned (digest {low.digest}, planned "
                f"{p.program}): plan again (plan_chunks) so that results are filed under the code that made them")
    return _compile(low, devices)


def _run_chunk(run_fn, configs, p: ChunkPlan, devices) -> dict[str, np.ndarray]:
    base = configs[p.runs[0]]
    values = [traced_values(configs[i]) for i in p.runs]
    padded = values + [values[-1]] * (p.size - len(values))
    compiled, sharding = _chunk_program(run_fn, base, p, devices)
    args = jax.device_put(_stack(padded), sharding)
    out = compiled(args)
    flat = {k: np.asarray(v)[: len(values)] for k, v in _flatten(jax.device_get(out)).items()}
    jax.effects_barrier()  # step callbacks are asynchronous: deliver them before the chunk counts as done
    return _mark_diverged(flat)


def _mark_diverged(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Set the ``diverged`` flag and NaN every floating output of a diverged run except its ``records``."""
    bad = _diverged(flat)
    flat["diverged"] = bad
    if bad.any():
        for k, v in flat.items():
            if np.issubdtype(v.dtype, np.floating) and not k.startswith("records/"):
                v = v.copy()
                v[bad] = np.nan
                flat[k] = v
    return flat


def _diverged(flat: dict[str, np.ndarray]) -> np.ndarray:
    """A run's own ``diverged`` / ``diverged_step`` outputs if it has them (it knows which outputs may
    legitimately be inf/NaN); otherwise any NaN in a floating output."""
    n = next(iter(flat.values())).shape[0]
    if "diverged" in flat or "diverged_step" in flat:
        bad = np.zeros(n, bool)
        if "diverged" in flat:
            bad |= flat["diverged"].reshape(n, -1).any(axis=1)
        if "diverged_step" in flat:
            bad |= (flat["diverged_step"].reshape(n, -1) >= 0).any(axis=1)
        return bad
    bad = np.zeros(n, bool)
    for v in flat.values():
        if np.issubdtype(v.dtype, np.floating):
            bad |= np.isnan(v.reshape(n, -1)).any(axis=1)
    return bad


def run_labelled(
    run_fn: Callable,
    runs: dict[str, list[tuple[dict, Any]]],
    *,
    out_dir: str | os.PathLike | None = None,
    tag: str = "",
    progress: bool = False,
    desc: str = "sweep",
) -> tuple[dict[str, list[tuple[dict, dict]]], dict]:
    """A simulation's labelled runs (``{part: [(label, config), ...]}``) as ONE :func:`run_sweep` call.

    Returns ``({part: [(label, result), ...]}, engine_metrics)`` with ``engine_metrics`` = wall seconds, programs
    compiled, runs, chunks loaded from ``out_dir`` (computed by an earlier invocation) and diverged runs.
    """
    flat = [cfg for part in runs.values() for _, cfg in part]
    t0, traces0, loaded0 = time.time(), STATS.traces, STATS.chunks_loaded
    results = run_sweep(run_fn, flat, out_dir=out_dir, tag=tag, progress=progress, desc=desc)
    it = iter(results)
    res = {part: [(lab, next(it)) for lab, _ in items] for part, items in runs.items()}
    metrics = {"wall_seconds": time.time() - t0, "programs_compiled": STATS.traces - traces0, "n_runs": len(flat),
               "chunks_loaded_from_cache": STATS.chunks_loaded - loaded0,
               "diverged_runs": int(sum(bool(r["diverged"]) for r in results if r is not None and "diverged" in r))}
    return res, metrics
