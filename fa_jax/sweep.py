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

Shared inputs. ``shared=`` (an opt-in callable ``shared(cfg) -> {name: array}``, e.g. a dataset every run of a
group trains on) hands the same arrays to every run of a group as an unbatched argument of the compiled program
(``vmap`` ``in_axes=None``; on several devices replicated, ``PartitionSpec()`` in the ``shard_map``), never as a
constant baked into it: the run function is called as ``run_fn(cfg, arrays)``. ``shared`` must depend only on
the config's static fields; it is called once per group, on the group's first config, before anything is traced
(a result that is not a mapping of numeric arrays is an error naming ``shared``). The arrays' bytes are an
argument of the program, so the memory plan counts them once per program (per device), as a fixed cost beside
the per-run ones when it shrinks a chunk. Since the data are no longer in the program text, every chunk file name
also hashes their content (sha256 of each array's name, dtype, shape and bytes): other data recompute, the same
data reload; a compiled program is reused across data of the same shapes and dtypes (no recompilation). Runs
without ``shared`` lower to exactly the programs (and chunk names) they did before. A group whose ``shared(cfg)``
is an empty mapping (runs that generate their data inside the program, beside runs on a dataset in one sweep) has
no shared inputs: it runs exactly as without ``shared``, ``run_fn(cfg)`` (so ``run_fn``'s ``arrays`` needs a
default), with the same program, memory plan and chunk names.

Generated data shared by runs. ``data=`` (an opt-in callable ``data(cfg) -> pytree of arrays``: the data a run
draws from its config, e.g. a synthetic training set from a data seed) splits each run into a data stage and the
run proper, ``run_fn(cfg, data=...)`` (``run_fn(cfg, arrays, data=...)`` beside shared inputs; by keyword, so a
group whose ``shared(cfg)`` is ``{}`` leaves ``arrays`` at its default). Runs of a group that agree on every traced
field ``data`` reads (:func:`data_fields`, read off its traced program: every learning rate, init seed, width or
optimiser swept on one data seed) share one draw: a group's runs are laid out in blocks of runs with one data key
(``ChunkPlan.block`` runs, at most one device's share; a block's spare slots repeat one of its runs), each block
draws the data once from its first run's values and vmaps the runs over it unbatched, so XLA sees one
``(samples, d) x (d, block * neurons)`` matmul where a per-run program has ``block`` small ones, and the chunk
holds one copy of the data per block instead of one per run. The block is the largest that pads the group to at
most ``BLOCK_WASTE`` (1.25) slots per run (keys of unequal sizes), else 1: no sharing rather than much padding. A
run's result equals ``run_fn(cfg, data=data(cfg))`` up to float reassociation (tested); its randomness never
depends on its block (the data come from its own fields). The slot layout is part of the program (the block size)
and of each chunk file name; a recorded chunk size the layout cannot use is a :class:`LayoutError`; without
``data`` nothing changes.

Pipelining. The device computes chunk i+1 while the host fetches, converts and writes chunk i: the calling thread
dispatches the programs (one at a time, as compiled: results are bitwise those of a chunk-at-a-time sweep, tested)
and one writer thread fetches each chunk (``device_get``), marks its diverged runs and writes its file. A thread,
not only JAX's asynchronous dispatch: on CPU a program with a host callback (the trainer's progress report) runs
inside the dispatching call, so a fetch-and-write placed after the next dispatch would wait for the whole next
chunk. On an accelerator chunk i+1 is queued behind chunk i (no idle device between chunks); on CPU each
program is waited for before the next is dispatched (XLA:CPU would otherwise run two chunks at once, which a
chunk-at-a-time sweep never did). At most two chunks are in flight: the one being fetched and written and the one
computing (device memory: two chunks' outputs and one chunk's temporaries; the default budget, half a device,
leaves room). A chunk's file is on disk before the chunk after next is dispatched; an error or interrupt in the
next chunk lets the writer finish the chunk it holds first, so a rerun resumes after it.

Damaged files. A chunk file stores its runs' indices (``_runs``) and its own name (``_chunk``) beside the outputs.
One that cannot be parsed (truncated, empty, bytes flipped), or whose stored name (older files: stored indices)
disagrees with the plan entry that finds it (a renamed, swapped or copied file), is reported by a
:class:`DamagedChunkWarning` naming it, moved to ``chunks/damaged/`` and recomputed: a run's results always come
from the file named for that run's computation. Temp files of a writer killed mid-write (``*.tmp<pid>``) are
never read, and removed by the next sweep over the directory (:func:`clean_stale_temps`).

Matmul precision. ``precision`` (``"highest"`` by default; ``"high"``, ``"default"``) is the
``jax.default_matmul_precision`` every chunk program is traced under: with ``"highest"`` a float32 matmul or
convolution is a true float32 one on every backend, where the backend's own default on GPUs (TF32) and TPUs
(bfloat16 passes) would move results by ~1e-3 relative and break the 1e-5 equality tests. XLA:CPU computes float32
matmuls in float32 whatever the setting, so on CPU the numbers are bitwise those of a program traced without it
(tested); the setting is part of the lowered program (so of its digest and chunk file names), stored in every
chunk file (``_precision``), in :class:`ChunkPlan` and in :func:`run_labelled`'s metrics, from which
``summary.json``'s device block takes it (a sweep file's manifest takes it from its plan).

Compile effort on CPU. Every chunk program compiled for CPU devices gets XLA's LLVM optimisation level
:func:`cpu_opt_level` (``xla_backend_optimization_level``; 1 by default, ``FA_JAX_CPU_OPT_LEVEL`` = 0..3 to change
it; XLA's own default is 2). Why 1: a sweep program's heavy kernels (dots, convolutions, decompositions) are
library calls whatever the level, so level 2's extra LLVM passes buy no speed there and cost compile time
(measured on one 2-core CPU: the feature-averaging quick preset's 7 programs 34.2 -> 26.5 s backend compile; the
throughput benchmark's GD program 3.0 -> 1.8 s at 1 804 vs 1 782 run-steps/s, SGD 10 752 vs 11 006). Results
differ from level 2 at float-rounding level, so the level is part of the program digest (chunk file names) and
recorded with the precision (:func:`run_labelled`'s metrics, every sweep manifest). Other backends compile with
their defaults.

Float64 on TPU. A program lowered with 64-bit types on for a TPU gets a :class:`Float64OnTPUWarning`: TPUs
emulate float64 in software (slow, and not IEEE float64 for every operation).

Multi-device CPU. A batched LAPACK call (a decomposition under ``vmap``) in a multi-device CPU program deadlocks
jaxlib's kernels (see :func:`_check_batched_lapack`); such a program is refused with a message naming the call.

Divergence. A run is marked ``diverged`` by its own ``diverged`` / ``diverged_step`` outputs when it has them, else
when any floating output is NaN. A diverged run's floating outputs are set to NaN, except its ``records`` (the
trainer already NaNs records taken after the divergence, keeping the ones before). Other runs are unaffected.

Compilation cache. :func:`enable_compilation_cache` points JAX's persistent compilation cache at a folder
(``FA_JAX_COMPILATION_CACHE``, else ``$XDG_CACHE_HOME/fa-jax/xla`` or ``~/.cache/fa-jax/xla``), so a program
compiled by an earlier process is loaded instead of compiled again (``fa-jax run`` / ``fa-jax sweep`` enable it;
from Python, call it once). JAX keys each entry by the optimised program, the compile options, the backend and
the jax/jaxlib versions, so a hit is the same executable: results are bitwise those of a fresh compilation.

Multi-host. With ``process_count > 1`` after ``jax.distributed.initialize``, the processes coordinate through
the distributed runtime's key-value store (:class:`ChunkQueue`): process 0 plans the chunks and publishes the plan
(every other process uses it, so hosts with different memory never disagree on chunk sizes, and a host whose code
lowers to a different program fails loudly when it compiles a chunk); then each process claims the next unclaimed
chunk with an atomic counter whenever it is ready for one, so a host that finishes early takes the leftovers.
Every process writes its chunks to ``out_dir`` (shared, or merged afterwards with :func:`fa_jax.results.merge`)
and returns ``None`` for runs it did not compute. Every process must make the same sequence of ``run_sweep``
calls (as in any multi-controller JAX program). With ``process_index`` / ``process_count`` given explicitly (or
no distributed runtime), the split is static instead: chunk ``j`` belongs to process ``j % process_count``.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext as _nullcontext
from typing import Any

import jax
import numpy as np

from . import progress as _progress
from .config import ConfigError, check_fields, static_key, traced_values, with_values

__all__ = [
    "PRECISIONS",
    "STATS",
    "ChunkPlan",
    "LayoutError",
    "DamagedChunkError",
    "DamagedChunkWarning",
    "Float64OnTPUWarning",
    "RunTooLargeError",
    "check_configs",
    "check_precision",
    "clean_stale_temps",
    "compilation_cache_dir",
    "compiler_options",
    "cpu_opt_level",
    "data_fields",
    "enable_compilation_cache",
    "expand_grid",
    "group_configs",
    "memory_budget",
    "plan_chunks",
    "plan_from_json",
    "plan_json",
    "read_chunk",
    "run_labelled",
    "run_sweep",
    "runs_manifest",
]

DEFAULT_MEMORY_FRACTION = 0.5
PRECISIONS = ("default", "high", "highest")  # jax.default_matmul_precision values the engine accepts
CPU_OPT_LEVEL_ENV = "FA_JAX_CPU_OPT_LEVEL"  # XLA:CPU LLVM optimisation level of sweep programs (module docstring)
DEFAULT_CPU_OPT_LEVEL = 1
DEFAULT_PRECISION = "highest"  # float32 matmuls in float32 on every backend (no TF32 / bfloat16 passes)


@dataclasses.dataclass
class SweepStats:
    traces: int = 0  # compilations of a batched program (one per distinct lowered program and device set)
    lowerings: int = 0  # traces + lowerings (each one afresh per sweep call that writes a cache)
    lower_seconds: float = 0.0  # wall time of those lowerings
    compile_seconds: float = 0.0  # wall time of the compilations
    chunks_run: int = 0
    chunks_loaded: int = 0
    chunks_skipped: int = 0  # belonging to (claimed by) another process
    resized_groups: int = 0  # groups whose chunk was shrunk to fit the memory budget
    chunks_damaged: int = 0  # chunk files found damaged or misfiled, moved aside and recomputed


STATS = SweepStats()
_PROGRAMS: dict[tuple, Any] = {}  # (run_fn, static key, size, device ids, x64) -> (compiled, sharding)
_COMPILED: dict[tuple, Any] = {}  # (program digest, device ids) -> (compiled, sharding)
_LOWERED: dict[str, Any] = {}  # program digest -> _Lowered not compiled yet (planned, maybe never run)
_PIPELINE = True  # False: fetch and write each chunk before dispatching the next (the former order; tests)


COMPILATION_CACHE_ENV = "FA_JAX_COMPILATION_CACHE"  # a folder, or "off"


def cpu_opt_level() -> int:
    """XLA:CPU's LLVM optimisation level for sweep programs: ``$FA_JAX_CPU_OPT_LEVEL`` (0..3), else 1 (module
    docstring, "Compile effort on CPU"). A bad value is an error naming the variable, before anything compiles."""
    raw = os.environ.get(CPU_OPT_LEVEL_ENV, "").strip()
    if not raw:
        return DEFAULT_CPU_OPT_LEVEL
    if raw not in ("0", "1", "2", "3"):
        raise ConfigError(CPU_OPT_LEVEL_ENV, "0, 1, 2 or 3 (XLA's xla_backend_optimization_level; unset: 1)", raw)
    return int(raw)


def compiler_options(platform: str) -> dict[str, Any]:
    """The XLA options every sweep program for ``platform`` is compiled with (``jax.stages.Lowered.compile``):
    ``{"xla_backend_optimization_level": cpu_opt_level()}`` on CPU, none elsewhere."""
    return {"xla_backend_optimization_level": cpu_opt_level()} if platform == "cpu" else {}


def compilation_cache_dir() -> str | None:
    """Where :func:`enable_compilation_cache` puts compiled programs by default: ``$FA_JAX_COMPILATION_CACHE``
    (``"off"`` or empty: nowhere, None), else ``$XDG_CACHE_HOME/fa-jax/xla``, else ``~/.cache/fa-jax/xla``."""
    env = os.environ.get(COMPILATION_CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else os.path.expanduser(env)
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "fa-jax", "xla")


def enable_compilation_cache(path: str | os.PathLike | None = None, min_compile_seconds: float | None = None
                             ) -> str | None:
    """Turn on JAX's persistent compilation cache in ``path`` (default :func:`compilation_cache_dir`); returns the
    folder in use, or None when the cache is off.

    A folder the user already gave JAX (``JAX_COMPILATION_CACHE_DIR`` / ``jax_compilation_cache_dir``) is kept.
    ``min_compile_seconds``: programs that compile faster are not stored (JAX's default, 1 s, when None); a sweep's
    programs take seconds to compile, a single eager operation milliseconds. An unwritable folder only warns: the
    cache saves time, never changes a result, so its absence is not an error."""
    if min_compile_seconds is not None and not (min_compile_seconds >= 0):
        raise ValueError(f"invalid min_compile_seconds={min_compile_seconds!r}: a number >= 0")
    current = jax.config.jax_compilation_cache_dir
    folder = current if current else (os.fspath(path) if path is not None else compilation_cache_dir())
    if not folder:
        return None
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        warnings.warn(f"compilation cache disabled: cannot create {folder!r} ({e}); "
                      f"set {COMPILATION_CACHE_ENV} to a writable folder or 'off'", stacklevel=2)
        return None
    if not current:
        from jax.experimental.compilation_cache import compilation_cache as _cc

        jax.config.update("jax_compilation_cache_dir", folder)
        # JAX decides once per process whether the cache is used (at the first compilation): start that decision
        # afresh, so enabling after something has compiled (a notebook) takes effect too
        _cc.reset_cache()
    if min_compile_seconds is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    return folder


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
    Every config is type-checked (:func:`fa_jax.config.check_fields`) and validated (``cfg.validate()`` when the
    class has one) before anything runs; an unknown path, an empty axis or a grid of more than
    :data:`fa_jax.config.MAX_RUNS` runs raises :class:`fa_jax.config.ConfigError` before any config is built.
    """
    from .config import MAX_RUNS, ConfigError, _walk, check_fields

    paths = {p for p, _, _ in _walk(base)} if dataclasses.is_dataclass(base) else None
    names, values = list(axes), []
    for n in names:
        v = axes[n]
        if paths is not None and n not in paths:
            raise ConfigError(n, f"a dotted path of a field of {type(base).__name__} ({', '.join(sorted(paths))})",
                              v)
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise ConfigError(n, "a sequence of values (a list, tuple or range; a string is not one)", v)
        if hasattr(v, "__len__") and len(v) > MAX_RUNS:  # range(10**9): refused before it is listed
            raise ConfigError(n, f"at most {MAX_RUNS} values (fa_jax.config.MAX_RUNS)", f"{len(v)} values")
        v = list(itertools.islice(v, MAX_RUNS + 1))
        if not v or len(v) > MAX_RUNS:
            raise ConfigError(n, f"a non-empty sequence of at most {MAX_RUNS} values", v)
        values.append(v)
    n_runs = int(np.prod([len(v) for v in values], dtype=np.float64)) if values else 1
    if n_runs > MAX_RUNS:
        raise ConfigError("/".join(names), f"a grid of at most {MAX_RUNS} runs (fa_jax.config.MAX_RUNS)",
                          {n: len(v) for n, v in zip(names, values, strict=True)})
    out = []
    for combo in itertools.product(*values):
        cfg = with_values(base, dict(zip(names, combo, strict=True)))
        if dataclasses.is_dataclass(cfg):
            check_fields(cfg)
        out.append(cfg.validate() if hasattr(cfg, "validate") else cfg)
    return out


def check_configs(configs: Sequence) -> None:
    """Type-check configs handed to :func:`plan_chunks` / :func:`run_sweep` directly, by the rules every other
    entry point applies (sims, ``--set``, sweep files, :func:`expand_grid`): :class:`fa_jax.config.ConfigError`
    names ``configs[i].<dotted field>``, before anything is traced. Only types and finiteness: cross-field rules
    live in each config's ``validate()``, which the documented callers have run."""
    if isinstance(configs, (str, bytes)) or not isinstance(configs, Sequence):
        raise ConfigError("configs", "a list of config dataclass instances", configs)
    for i, c in enumerate(configs):
        if not dataclasses.is_dataclass(c) or isinstance(c, type):
            raise ConfigError(f"configs[{i}]", "a config dataclass instance (e.g. FARun(...))", c)
        check_fields(c, prefix=f"configs[{i}].")


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


def check_precision(precision) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ``ValueError`` naming the allowed values."""
    if not (isinstance(precision, str) and precision in PRECISIONS):
        raise ValueError(f"invalid precision={precision!r}: allowed one of {PRECISIONS} (the matmul precision the "
                         "sweep's programs are traced with; 'highest' = float32 matmuls in float32 everywhere)")
    return precision


class Float64OnTPUWarning(UserWarning):
    """A sweep program lowered with 64-bit types for a TPU (float64 is emulated there: slow, not IEEE)."""


def _platform(devices: tuple) -> str:
    return devices[0].platform


def _warn_x64_on_tpu(devices: tuple) -> None:
    """The one place float64 on a TPU is reported (every sim's programs are lowered here)."""
    if _x64() and _platform(devices) == "tpu":
        warnings.warn("jax_enable_x64 is on and this sweep runs on a TPU: TPUs have no float64 hardware, float64 "
                      "operations are emulated (much slower, and not IEEE float64 for every operation); run float64 "
                      "simulations on CPU or GPU", Float64OnTPUWarning, stacklevel=3)


def _stack(values: list[dict]) -> dict[str, np.ndarray]:
    """Stack traced values along ``runs``: ints as int32, other numbers as the default float (float64 when
    ``jax_enable_x64`` is on, so a float64 simulation gets float64 hyperparameters); a tuple-valued field (the
    packed values of :mod:`fa_jax.packing`) stacks to ``(runs, len)`` by the same rule on its elements."""
    fdt = np.float64 if _x64() else np.float32
    out = {}
    for path in values[0]:
        col = [v[path] for v in values]
        flat = [x for c in col for x in c] if all(isinstance(c, tuple) for c in col) else col  # packed: (runs, places)
        if all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in flat):
            out[path] = np.asarray(col, np.int32)
        else:
            out[path] = np.asarray(col, fdt)
    return out


# ----------------------------------------------------------------------------- shared inputs
@dataclasses.dataclass(frozen=True, eq=False)
class _SharedInputs:
    """A group's shared inputs (module docstring, "Shared inputs"): ``arrays`` ``{name: numpy array}`` in the
    dtypes the program receives, ``digest`` the hash of their content (part of every chunk file name), ``nbytes``
    their total size and ``signature`` ``((name, shape, dtype), ...)``, what the program's text depends on."""

    arrays: dict[str, np.ndarray]
    digest: str
    nbytes: int
    signature: tuple

    def abstract(self, sharding) -> dict[str, jax.ShapeDtypeStruct]:
        return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in self.arrays.items()}


def _array_digest(a: np.ndarray, memo: dict | None) -> str:
    """sha256 of one array's dtype, shape and bytes; ``memo`` ``{id: (array, digest)}`` hashes an array object
    returned for several groups of one call once (the array is kept, so its id is not reused meanwhile)."""
    if memo is not None and id(a) in memo:
        return memo[id(a)][1]
    h = hashlib.sha256(json.dumps([a.dtype.str, list(a.shape)]).encode())
    h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    digest = h.hexdigest()
    if memo is not None:
        memo[id(a)] = (a, digest)
    return digest


def _shared_inputs(shared: Callable, cfg, memo: dict | None = None) -> _SharedInputs | None:
    """Evaluate ``shared(cfg)`` and check it: a mapping of string names to numeric arrays (anything
    ``np.asarray`` turns into a bool / integer / float / complex array), else a TypeError naming ``shared``.
    Arrays are converted to the dtype JAX gives them (int64 -> int32 without ``jax_enable_x64``) before hashing.
    An empty mapping is None: the group has no shared inputs (module docstring, "Shared inputs")."""
    if not callable(shared):
        raise TypeError(f"invalid shared={shared!r}: allowed a callable shared(cfg) -> {{name: array}}, or None")
    got = shared(cfg)
    what = f"shared={getattr(shared, '__qualname__', repr(shared))}"
    if not isinstance(got, Mapping):
        raise TypeError(f"invalid {what}: shared(cfg) returned {type(got).__name__}, allowed a mapping "
                        "{name (str): array} of the inputs every run of the group receives")
    if not got:  # no data for this group (e.g. drawn inside the program): exactly the program without shared
        return None
    arrays, parts = {}, []
    for name in sorted(got, key=str):
        if not isinstance(name, str):
            raise TypeError(f"invalid {what}: key {name!r} of shared(cfg) is not a string; allowed a mapping "
                            "{name (str): array}")
        value = got[name]
        try:
            a = np.asarray(value)
        except Exception as e:  # noqa: BLE001 - whatever cannot be an array is the user's error, named below
            raise TypeError(f"invalid {what}: shared(cfg)[{name!r}] is not an array ({type(e).__name__}: {e})"
                            ) from None
        if a.dtype.kind not in "biufc":
            raise TypeError(f"invalid {what}: shared(cfg)[{name!r}] is {type(value).__name__} of dtype {a.dtype}; "
                            "allowed a numeric array (bool, integer, float or complex: numpy or jax)")
        dt = jax.dtypes.canonicalize_dtype(a.dtype)
        a = a.astype(dt) if a.dtype != dt else a
        arrays[name] = a
        parts.append([name, _array_digest(a, memo)])
    digest = hashlib.sha256(json.dumps(["shared/1", parts]).encode()).hexdigest()[:24]
    signature = tuple((k, tuple(v.shape), v.dtype.str) for k, v in arrays.items())
    return _SharedInputs(arrays, digest, int(sum(v.nbytes for v in arrays.values())), signature)


# ----------------------------------------------------------------------------- generated data shared by runs
@dataclasses.dataclass(frozen=True)
class _DataStage:
    """A group's data stage: ``fn(cfg) -> pytree of arrays`` and ``block``, the runs of a block (one draw)."""

    fn: Callable
    block: int


def _data_name(data) -> str:
    return f"data={getattr(data, '__qualname__', repr(data))}"


def data_fields(data: Callable, cfg) -> tuple[str, ...]:
    """The traced fields of ``cfg`` (sorted dotted paths) that ``data(cfg)`` depends on: the fields whose equal
    values make two runs of a group share one data draw (module docstring, "Generated data shared by runs").

    Read off the traced program: ``data`` is traced with every traced field an input, and a field counts if any
    operation leading to an output reads it (an operation with a sub-program, e.g. a loop, counts every input it
    takes: over-approximating only shares less). A TypeError names ``data`` if it is not callable or cannot be
    traced on ``cfg``."""
    if not callable(data):
        raise TypeError(f"invalid data={data!r}: allowed a callable data(cfg) -> pytree of arrays, or None")
    from jax.extend.core import Var

    values = traced_values(cfg)
    names = sorted(values)
    example = _stack([values])

    def fn(*xs):
        return data(with_values(cfg, dict(zip(names, xs))))

    try:
        jaxpr = jax.make_jaxpr(fn)(*[example[n][0] for n in names]).jaxpr
    except Exception as e:  # whatever fails in the user's function is reported with its name
        raise TypeError(f"invalid {_data_name(data)}: data(cfg) cannot be traced on the group's config "
                        f"({type(e).__name__}: {e}); allowed a jittable function of the config") from e
    used = {v for v in jaxpr.outvars if isinstance(v, Var)}
    for eqn in reversed(jaxpr.eqns):
        if any(isinstance(o, Var) and o in used for o in eqn.outvars):
            used.update(v for v in eqn.invars if isinstance(v, Var))
    return tuple(n for n, v in zip(names, jaxpr.invars) if v in used)


def _data_blocks(data: Callable, configs: Sequence, idx: Sequence[int]) -> list[list[int]]:
    """A group's runs split by data key (first-seen order): runs with equal values of :func:`data_fields`."""
    fields = data_fields(data, configs[idx[0]])
    keys: dict[str, list[int]] = {}
    for i in idx:
        v = traced_values(configs[i])
        keys.setdefault(json.dumps([v[f] for f in fields], default=float), []).append(i)
    return list(keys.values())


BLOCK_WASTE = 1.25  # a data layout may pad a group to at most this many slots per run (module docstring)


def _preferred_block(blocks: list[list[int]], waste: float = BLOCK_WASTE) -> int:
    """The block size a group's data keys ask for: the largest ``g`` (at most the largest key's run count) whose
    layout pads the group to at most ``waste`` slots per run (keys of unequal sizes: every key's runs in pieces of
    ``g``, each piece padded to ``g``); 1 (no sharing, no padding) if none does. Bounds the padding: 100 runs on one
    data seed beside 100 seeds of one run each share nothing rather than pad the lone runs 100-fold."""
    counts = [len(b) for b in blocks]
    n = sum(counts)
    for g in range(max(counts), 1, -1):
        if sum(-(-c // g) * g for c in counts) <= waste * n:
            return g
    return 1


def _block_of(size: int, nd: int, most: int) -> int:
    """Runs per block of a data program of ``size`` slots on ``nd`` devices when a data key has at most ``most``
    runs: as many as share a draw, at most one device's share (``size`` is a multiple of ``nd * block``)."""
    return max(1, min(most, size // nd))


def _blocked_size(size: int, nd: int, most: int) -> int:
    """``size`` (a multiple of ``nd``) rounded down to whole blocks on every device (at least one each)."""
    g = _block_of(size, nd, most)
    return max(nd * g, size // (nd * g) * (nd * g))


def _data_auto_size(blocks: list[list[int]], size: int, nd: int, max_chunk: int | None = None) -> int:
    """The automatic chunk size of a data layout: every block of the group in one chunk (``size``: the group's
    size rounded up to ``nd``), within ``max_chunk``; always a whole number of blocks per device. The block a size
    implies (:func:`_block_of`) grows with the size, so the two are iterated to their fixed point (the block is
    bounded by :func:`_preferred_block`)."""
    most = _preferred_block(blocks)
    g = _block_of(size, nd, most)
    while True:
        size = _round_up(sum(-(-len(b) // g) for b in blocks), nd) * g
        if _block_of(size, nd, most) == g:
            break
        g = _block_of(size, nd, most)
    if max_chunk is not None and size > max_chunk:
        size = _blocked_size(max(nd, max_chunk // nd * nd), nd, most)
    return size


def _stage(data: Callable | None, size: int, nd: int, most: int) -> _DataStage | None:
    """The data stage of a group's program at ``size`` on ``nd`` devices (None without ``data``)."""
    return None if data is None else _DataStage(data, _block_of(size, nd, most))


def _layout(idx: Sequence[int], blocks: list[list[int]] | None, size: int, nd: int, most: int | None = None
            ) -> list[tuple[tuple[int, ...], tuple[int, ...] | None]]:
    """The chunks of a group at ``size``: ``(runs, slots)`` each. Without ``blocks``: consecutive runs, no slots.
    With ``blocks`` (:func:`_data_blocks`; ``most`` their :func:`_preferred_block`, computed if not given): each
    data key's runs in pieces of one block, ``size // block`` pieces per chunk; a piece's spare slots repeat its
    last run, a chunk's missing pieces repeat its last piece."""
    if blocks is None:
        return [(tuple(idx[s: s + size]), None) for s in range(0, len(idx), size)]
    g = _block_of(size, nd, _preferred_block(blocks) if most is None else most)
    u = size // g
    pieces = [b[i: i + g] for b in blocks for i in range(0, len(b), g)]
    out = []
    for c in range(0, len(pieces), u):
        chunk = pieces[c: c + u]
        slots: list[int] = []
        pos = 0
        for piece in chunk:
            own = list(range(pos, pos + len(piece)))
            slots += own + [own[-1]] * (g - len(piece))
            pos += len(piece)
        slots += slots[-g:] * (u - len(chunk))
        out.append((tuple(i for piece in chunk for i in piece), tuple(slots)))
    return out


def _replicated(devices: tuple):
    """Where a shared input lives: on the one device, or a full copy on each device of the mesh."""
    if len(devices) > 1:
        return jax.sharding.NamedSharding(_mesh(devices), jax.sharding.PartitionSpec())
    return jax.sharding.SingleDeviceSharding(devices[0])


@dataclasses.dataclass(frozen=True)
class _Lowered:
    """One lowering of a group's chunk program: the ``jax.stages.Lowered`` object (compiled from, never re-traced),
    its input sharding and ``digest``, the hash of what runs (see :func:`_program_digest`)."""

    lowered: Any
    sharding: Any
    digest: str


def _ident(run_fn, key: str, size: int, devices: tuple, precision: str = DEFAULT_PRECISION,
           shared: _SharedInputs | None = None, data: _DataStage | None = None) -> tuple:
    return (run_fn, key, size, tuple(d.id for d in devices), _x64(), precision,
            None if shared is None else shared.signature, data)


def _lower(run_fn: Callable, key: str, base, size: int, devices: tuple,
           precision: str = DEFAULT_PRECISION, shared: _SharedInputs | None = None,
           data: _DataStage | None = None) -> _Lowered:
    """Trace and lower the group's ``jit(vmap(run_fn))`` program at chunk ``size`` on ``devices`` (always afresh:
    the digest must see the code as it is now, including every library function the run calls), with matmul
    ``precision`` (module docstring). With ``shared`` inputs the program takes them as a second, unbatched
    argument (replicated on several devices) and calls ``run_fn(cfg, arrays)``; only their shapes and dtypes are
    in the program. With a ``data`` stage the runs are ``size // data.block`` blocks of ``data.block``: each block
    draws ``data.fn(cfg)`` once, from its first run's values, and vmaps ``run_fn(cfg, data=...)`` (``run_fn(cfg,
    arrays, data=...)`` with shared inputs) over its runs with the data unbatched (module docstring, "Generated data
    shared by runs"); inputs and outputs keep the flat ``runs`` axis."""
    check_precision(precision)
    _warn_x64_on_tpu(devices)
    t0 = time.perf_counter()

    if data is not None:
        def batched(values, *arrays):
            g = data.block

            def block(vals):  # one block: (block,) values -> one data draw, then every run on it, data unbatched
                d = data.fn(with_values(base, jax.tree.map(lambda a: a[0], vals)))
                # by keyword: a group whose shared(cfg) is {} calls run_fn(cfg, data=d), its arrays left at their
                # default (as without data: run_fn(cfg))
                return jax.vmap(lambda v: run_fn(with_values(base, v), *arrays, data=d))(vals)

            blocks = jax.tree.map(lambda a: a.reshape((a.shape[0] // g, g) + a.shape[1:]), values)
            out = jax.vmap(block)(blocks)
            return jax.tree.map(lambda a: a.reshape((a.shape[0] * g,) + a.shape[2:]), out)
    elif shared is None:  # exactly the program of a sweep without shared inputs (committed chunk names depend on it)
        def batched(values):
            return jax.vmap(lambda v: run_fn(with_values(base, v)))(values)
    else:
        def batched(values, arrays):
            return jax.vmap(lambda v, a: run_fn(with_values(base, v), a), in_axes=(0, None))(values, arrays)

    example = _stack([traced_values(base)] * size)
    if len(devices) > 1:
        mesh = _mesh(devices)
        spec = jax.sharding.PartitionSpec("runs")
        sharding = jax.sharding.NamedSharding(mesh, spec)
        in_specs = spec if shared is None else (spec, jax.sharding.PartitionSpec())
        # check_vma off: runs are independent and never communicate, so device-variance typing buys nothing here
        fn = jax.jit(jax.shard_map(batched, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False))
    else:
        sharding = jax.sharding.SingleDeviceSharding(devices[0])
        fn = jax.jit(batched)
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in example.items()}
    args = (abstract,) if shared is None else (abstract, shared.abstract(_replicated(devices)))
    # the precision is read when each dot is traced (it becomes the dot's precision_config): tracing is enough
    with jax.default_matmul_precision(precision):
        lowered = fn.lower(*args)
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
    into machine code (platform, device kind, jax/jaxlib versions, XLA_FLAGS, :func:`compiler_options`)."""
    import jaxlib

    d = devices[0]
    extra = json.dumps([d.platform, getattr(d, "device_kind", ""), jax.__version__,
                        getattr(jaxlib, "__version__", ""), os.environ.get("XLA_FLAGS", ""),
                        compiler_options(d.platform)])
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
        _COMPILED[ck] = (low.lowered.compile(compiler_options(devices[0].platform) or None), low.sharding)
        STATS.compile_seconds += time.perf_counter() - t0
        _LOWERED.pop(low.digest, None)  # compiled: the lowering is no longer needed
    return _COMPILED[ck]


def _program(run_fn: Callable, key: str, base, size: int, devices: tuple, fresh: dict | None = None,
             precision: str = DEFAULT_PRECISION, shared: _SharedInputs | None = None,
             data: _DataStage | None = None):
    """``(compiled, sharding)`` of one group at chunk ``size`` on ``devices`` (with ``shared`` inputs: a program
    that takes arrays of their shapes and dtypes).

    ``fresh`` None: the in-memory path, cached by the run function's identity (no re-tracing; like ``jax.jit``, a
    library function edited inside this process is not seen). A dict: lowered afresh once per dict (one sweep
    call) and compiled by digest, so a cached result is always keyed by the code as it is now.
    """
    ident = _ident(run_fn, key, size, devices, precision, shared, data)
    if fresh is None:
        if ident not in _PROGRAMS:
            _PROGRAMS[ident] = _compile(_lower(run_fn, key, base, size, devices, precision, shared, data), devices)
        return _PROGRAMS[ident]
    _PROGRAMS[ident] = _compile(_fresh_lowering(run_fn, key, base, size, devices, fresh, precision, shared, data),
                                devices)
    return _PROGRAMS[ident]


def _fresh_lowering(run_fn, key, base, size, devices, fresh: dict, precision: str = DEFAULT_PRECISION,
                    shared: _SharedInputs | None = None, data: _DataStage | None = None) -> _Lowered:
    ident = _ident(run_fn, key, size, devices, precision, shared, data)
    if ident not in fresh:
        fresh[ident] = _lower(run_fn, key, base, size, devices, precision, shared, data)
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
    precision: str = DEFAULT_PRECISION  # matmul precision the program is traced with (module docstring)
    shared: str | None = None  # content digest of the group's shared inputs (part of ``file``); None: none
    # generated data shared by runs (``data=``; module docstring, "Generated data shared by runs"): the program's
    # ``size`` slots are ``size // block`` blocks of ``block`` runs that share one data draw; ``slots[s]`` is the
    # position in ``runs`` that slot ``s`` computes (a block's spare slots repeat one of its runs). None: no data stage
    block: int | None = None
    slots: tuple[int, ...] | None = None


class ChunkQueue:
    """Chunks shared by the processes of one sweep call through a key-value store ``client`` (the distributed
    runtime's: ``key_value_increment``, ``key_value_set``, ``blocking_key_value_get``).

    ``plans(make)``: process 0 computes ``make()`` and publishes it under ``<prefix>/plan``; the others wait for
    it (``timeout_s``) and rebuild the same :class:`ChunkPlan` list. ``claim(plans)``: yields the chunks this
    process claims, one at a time, when it asks for the next: ``j = increment(<prefix>/next) - 1`` until ``j``
    passes the last chunk, so every chunk is claimed exactly once, by whichever process is free first.
    ``fingerprint`` (of the configs) is published with the plan and checked by every process: processes that
    reached the same call with different sweeps fail instead of mixing their chunks."""

    def __init__(self, client, prefix: str, process_index: int, fingerprint: str = "", timeout_s: float = 3600.0):
        self.client, self.prefix, self.pi = client, prefix, process_index
        self.fingerprint, self.timeout_ms = fingerprint, int(timeout_s * 1000)

    def plans(self, make: Callable[[], list]) -> list:
        key = f"{self.prefix}/plan"
        if self.pi == 0:
            plans = make()
            self.client.key_value_set(key, json.dumps({"fingerprint": self.fingerprint,
                                                       "plans": plan_json(plans, precision=True)}))
            return plans
        doc = json.loads(self.client.blocking_key_value_get(key, self.timeout_ms))
        if doc["fingerprint"] != self.fingerprint:
            raise ValueError(f"process {self.pi} reached sweep call {self.prefix!r} with other configs than process "
                             "0 (every process must make the same sequence of run_sweep calls)")
        return [plan_from_json(p) for p in doc["plans"]]

    def claim(self, plans: Sequence):
        while True:
            j = int(self.client.key_value_increment(f"{self.prefix}/next", 1)) - 1
            if j >= len(plans):
                return
            yield plans[j]


_SWEEP_CALLS = [0]  # run_sweep calls of this process: the key of a call shared by all processes


def _distributed_client():
    """The distributed runtime's key-value client after ``jax.distributed.initialize``, else None."""
    from jax._src import distributed  # no public handle on the runtime's key-value store (jax 0.10)

    return getattr(distributed.global_state, "client", None)


def _configs_fingerprint(configs: Sequence) -> str:
    return hashlib.sha1(repr([dataclasses.astuple(c) if dataclasses.is_dataclass(c) else repr(c)
                              for c in configs]).encode()).hexdigest()[:16]


def plan_json(plans: Sequence[ChunkPlan], precision: bool = False) -> list[dict]:
    """The chunk plan as a manifest records it (``{"group", "key", "runs", "size", "file", "program"}`` per chunk,
    ``"shared"``, the content digest of its shared inputs, for a chunk that has them, ``"block"`` and ``"slots"``
    for a chunk with a data stage; ``precision`` too when
    asked: what another process needs to rebuild the :class:`ChunkPlan`)."""
    fields = ("group", "key", "runs", "size", "file", "program") + (("precision",) if precision else ())
    return [{**{f: list(p.runs) if f == "runs" else getattr(p, f) for f in fields},
             **({} if p.shared is None else {"shared": p.shared}),
             **({} if p.block is None else {"block": p.block, "slots": list(p.slots)})} for p in plans]


def plan_from_json(entry: Mapping) -> ChunkPlan:
    """The :class:`ChunkPlan` of one :func:`plan_json` entry (its inverse: lists back to tuples)."""
    return ChunkPlan(**{**entry, "runs": tuple(entry["runs"]),
                        **({"slots": tuple(entry["slots"])} if entry.get("slots") is not None else {})})


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
    precision: str = DEFAULT_PRECISION,
    cache_dir: str | os.PathLike | None = None,
    shared: Callable | None = None,
    data: Callable | None = None,
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

    ``precision``: the matmul precision of every program (one of :data:`PRECISIONS`; module docstring).

    ``cache_dir``: where chunk files live (with ``files``). An automatic size needs the group's compiled footprint,
    unless every chunk file at the whole-group size is already there: then nothing is compiled (re-opening a
    finished sweep in a new process loads it without compiling a program it will not run).

    ``shared``: ``shared(cfg) -> {name: array}``, inputs every run of a group receives as an unbatched argument
    (``run_fn(cfg, arrays)``; module docstring, "Shared inputs"), evaluated once per group on its first config,
    for every group before anything is traced. Each chunk's file name hashes their content too
    (:attr:`ChunkPlan.shared`), and the memory plan counts their bytes once per program. A group whose
    ``shared(cfg)`` is empty is planned exactly as without ``shared`` (``ChunkPlan.shared`` None).

    ``data``: ``data(cfg) -> pytree``, the data a run generates from its config (module docstring, "Generated data
    shared by runs"): runs of a group with equal values of the fields it reads (:func:`data_fields`) share one
    draw. Each group's runs are laid out in blocks (``ChunkPlan.block``, ``ChunkPlan.slots``); a chunk size is
    then a whole number of blocks per device.
    """
    check_precision(precision)
    cpu_opt_level()  # a bad FA_JAX_CPU_OPT_LEVEL fails here, before anything is traced
    check_configs(configs)
    if max_chunk is not None and (isinstance(max_chunk, bool) or not isinstance(max_chunk, int) or max_chunk < 1):
        raise ValueError(f"invalid max_chunk={max_chunk!r}: allowed an integer >= 1 or None (no cap)")
    devices = tuple(devices or jax.local_devices())
    fresh: dict | None = {} if files else None
    nd = len(devices)
    sizes = dict(sizes or {})
    groups = group_configs(configs)
    inputs = _group_inputs(shared, configs, groups)  # a bad shared(cfg) fails here, before anything is traced
    # each group's runs by data key (a bad data fails here, before any program is traced)
    blocks = {key: _data_blocks(data, configs, idx) for key, idx in groups.items()} if data is not None else {}
    plans: list[ChunkPlan] = []
    for gi, (key, idx) in enumerate(groups.items()):
        sh = inputs.get(key)
        bl = blocks.get(key)
        most = _preferred_block(bl) if bl is not None else 1
        if key in sizes:
            size = sizes[key]
            if bl is not None and size % (nd * _block_of(size, nd, most)):
                raise LayoutError(f"invalid chunk size {size} for the data layout of group {key[:120]}: not a whole "
                                  f"number of blocks of {_block_of(size, nd, most)} runs on each of {nd} devices "
                                  "(a plan recorded without the data stage, or on another device count): plan again")
        elif isinstance(chunk_size, int) and not isinstance(chunk_size, bool):
            if chunk_size < 1:
                raise ValueError(f"invalid chunk_size={chunk_size!r}: allowed an integer >= 1 or 'auto'")
            size = _round_up(min(chunk_size, len(idx)), nd)
            if bl is not None:
                size = _blocked_size(size, nd, most)
        elif chunk_size in (None, "auto"):
            size = _round_up(min(len(idx), len(idx) if max_chunk is None else max_chunk), nd)
            if bl is not None:
                size = _data_auto_size(bl, size, nd, max_chunk)
            # nothing compiled when every chunk file at this size is there (a finished sweep re-opened)
            on_disk = files and cache_dir is not None and all(
                os.path.exists(os.path.join(os.fspath(cache_dir), f)) for _, _, f in _named_chunks(
                    run_fn, key, configs, idx, size, devices, fresh, precision, tag, sh, data, bl, most)[1])
            if not on_disk:
                size = _fit(run_fn, key, configs[idx[0]], size, devices, budget, fresh, precision, sh, data, most)
        else:
            raise ValueError(f"invalid chunk_size={chunk_size!r}: allowed an integer >= 1 or 'auto'")
        sizes[key] = size
        g = None if bl is None else _block_of(size, nd, most)
        if files:
            digest, named = _named_chunks(run_fn, key, configs, idx, size, devices, fresh, precision, tag, sh, data,
                                          bl, most)
        else:
            digest, named = None, [(runs, slots, None) for runs, slots in _layout(idx, bl, size, nd, most)]
        for runs, slots, file in named:
            plans.append(ChunkPlan(gi, key, runs, size, file, digest, precision, None if sh is None else sh.digest,
                                   g, slots))
    return plans


def _group_inputs(shared: Callable | None, configs: Sequence, groups: Mapping[str, list[int]]
                  ) -> dict[str, _SharedInputs | None]:
    """``{static key: shared inputs}``: ``shared`` evaluated on each group's first config (empty without it; None
    for a group whose ``shared(cfg)`` is empty)."""
    if shared is None:
        return {}
    memo: dict = {}  # the same array object returned for several groups is hashed once
    return {key: _shared_inputs(shared, configs[idx[0]], memo) for key, idx in groups.items()}


class LayoutError(ValueError):
    """A recorded chunk size that the data layout cannot use (planning with ``sizes`` and ``data``)."""


class RunTooLargeError(ValueError):
    """One run's compiled footprint exceeds what a device may hold (raised while planning, before anything runs)."""

    def __init__(self, key: str, per_run: float, limit: float, explicit: bool, shared: int = 0):
        what = "the memory budget passed" if explicit else "the device's capacity"
        short = key if len(key) <= 160 else key[:157] + "..."
        of = f" (of which {shared / 2**30:.3g} GiB shared inputs)" if shared else ""
        super().__init__(
            f"invalid run size: one run needs {per_run / 2**30:.3g} GiB per device{of}, more than "
            f"{limit / 2**30:.3g} GiB ({what}); allowed runs that fit: shrink the shape-changing settings (e.g. d, "
            f"n_train, width, batch, n_points{', the shared inputs' if shared else ''}) or use a device with more "
            f"memory. Program: {short}")
        self.key, self.per_run, self.limit, self.shared = key, per_run, limit, shared


def _named_chunks(run_fn, key, configs, idx, size, devices, fresh, precision, tag,
                  shared: _SharedInputs | None = None, data: Callable | None = None,
                  blocks: list[list[int]] | None = None, most: int = 1):
    """``(digest, [(runs, slots, file), ...])``: the group's chunks at ``size`` (:func:`_layout`) with their cache
    file names, from the program lowered (not compiled) at that size."""
    stage = _stage(data, size, len(devices), most)
    digest = _fresh_lowering(run_fn, key, configs[idx[0]], size, devices, fresh, precision, shared, stage).digest
    return digest, [(runs, slots, _chunk_hash(digest, key, [traced_values(configs[i]) for i in runs], tag, shared,
                                              slots) + ".npz")
                    for runs, slots in _layout(idx, blocks, size, len(devices), most)]


def _fit(run_fn, key, base, size, devices, budget, fresh=None, precision: str = DEFAULT_PRECISION,
         shared: _SharedInputs | None = None, data: Callable | None = None, most: int = 1) -> int:
    """Largest chunk size <= ``size`` whose compiled footprint fits ``budget`` (per device).

    Memory model per device at m runs per device, ``need(m)``. Without a data stage: ``fixed + m * per_run``, with
    ``fixed`` the ``shared`` inputs (an argument of the program, a full copy per device) and ``per_run`` the rest of
    the footprint measured at ``size`` shared out per run (the other fixed costs counted as per-run: errs on the
    safe side). With a ``data`` stage (data keys of at most ``most`` runs) a block holds one draw and the draw's
    generation temporaries whatever its number of runs, a cost one compile cannot tell from the runs': the program
    is also compiled at one run per device and ``need`` is the line through the two footprints, which over-estimates
    at every whole number of blocks (the size found is rounded down to whole blocks, :func:`_blocked_size`)."""
    nd = len(devices)
    explicit = budget is not None
    budget = budget if explicit else memory_budget(devices)
    compiled, _ = _program(run_fn, key, base, size, devices, fresh, precision, shared, _stage(data, size, nd, most))
    foot = _footprint(compiled)
    if foot is None or foot <= budget:
        return size
    n = size // nd
    fixed = 0 if shared is None else shared.nbytes
    if data is None:
        step = max(foot - fixed, 1) / n  # per run
        first = fixed + step
    else:
        one, _ = _program(run_fn, key, base, nd, devices, fresh, precision, shared, _stage(data, nd, nd, most))
        first = _footprint(one) or foot
        step = max(foot - first, 0) / max(n - 1, 1)

    def need(m: int) -> float:
        return first + (m - 1) * step

    # one run per device is the floor: refuse a run that cannot fit, with a message, before it runs (XLA would
    # fail at allocation with a raw RESOURCE_EXHAUSTED traceback). The default budget is half the capacity, so a
    # run between the two still goes (alone); an explicit budget is honoured as given.
    limit = budget if explicit else memory_budget(devices, 1.0)
    if need(1) > limit:
        raise RunTooLargeError(key, need(1), limit, explicit, fixed)
    m = max(1, min(n, int((budget - first) // step) + 1 if step > 0 else n))
    fitted = m * nd
    STATS.resized_groups += 1
    if fitted >= size:
        return size
    return fitted if data is None else _blocked_size(fitted, nd, most)


def _chunk_hash(program: str, key: str, values: list[dict], tag: str, shared: _SharedInputs | None = None,
                slots: Sequence[int] | None = None) -> str:
    """A chunk's cache key: the digest of its lowered program (the code that runs, float64 or not, the chunk size
    and device count; see :func:`_program_digest`), the static key, the tag and every run's traced values; with
    shared inputs, their content digest too (the program holds only their shapes); with a data stage, the slot
    layout (which runs share a block)."""
    what = (["chunk/2", tag, program, key, values] + ([] if shared is None else [shared.digest])
            + ([] if slots is None else [list(slots)]))
    blob = json.dumps(what, sort_keys=True, default=float)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- atomic chunk files
# bookkeeping arrays stored beside a chunk's outputs (never outputs themselves)
CHUNK_META = ("_runs", "_chunk", "_precision")
STALE_TEMP_SECONDS = 600.0  # a temp file untouched this long, of a process gone from this host, is abandoned
_TEMP = re.compile(r"\.tmp(\d+)$")


class DamagedChunkError(ValueError):
    """A chunk file that cannot be parsed, or whose stored identity disagrees with the plan entry reading it."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path}: {why}")
        self.path, self.why = path, why


class DamagedChunkWarning(UserWarning):
    """A damaged chunk file was moved aside (and its runs recomputed, or left missing)."""


def _write_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    """temp file -> fsync -> rename -> fsync(dir): a reader (or a rerun after kill -9) sees all or nothing."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # a failed write (disk full, interrupt) leaves no temp file behind; kill -9 does (clean_stale_temps)
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    try:
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _chunk_name(file: str) -> str:
    """The name a chunk file stores for itself: its file name without ``.npz`` (the chunk hash)."""
    return file.removesuffix(".npz")


def read_chunk(path: str, runs: Sequence[int], names: Mapping[tuple, str] | None = None) -> dict[str, np.ndarray]:
    """The outputs (``{output path: array[runs, ...]}``) of the chunk file ``path``, which the plan expects to
    hold the configs ``runs`` (indices into the config list).

    Raises :class:`DamagedChunkError` naming the file when it cannot be parsed (empty, truncated, bytes flipped:
    zip, CRC, npy-header errors, whatever numpy raises) or when what it stores disagrees with the plan entry:

    * ``_chunk``, the name it was written under, must be this file's name (a renamed, swapped or copied-over file
      is not). The name hashes the program and every run's values, so a file under its own name holds exactly
      these runs' results, row ``j`` for ``runs[j]``, whatever indices it stores: a sweep whose config list puts
      the same chunk elsewhere (or two identical chunks of one grid, which share one file) may reuse it.
    * ``_runs``, the indices it was written for (every file named as today stores them, after its outputs), must be
      there with ``len(runs)`` entries. Older files store only ``_runs``: it must be ``runs``, or the runs of a
      chunk of this plan filed under the same name (``names``: ``{runs: file name}`` of the whole plan).
    * every output holds ``len(runs)`` rows.

    File-system errors (permissions, a directory in the way) are raised as they are: they are not damage.
    """
    file = os.path.basename(path)
    runs = tuple(int(i) for i in runs)
    with open(path, "rb") as f:
        try:
            z = np.load(f, allow_pickle=False)
            if not hasattr(z, "files"):
                raise ValueError("an .npy array or pickle, not an .npz archive")
            with z:
                flat = {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001 - any parse failure means damage: zipfile, zlib, EOF, npy header...
            raise DamagedChunkError(path, f"damaged chunk file, unreadable ({type(e).__name__}: {e})") from None
    stored = flat.pop("_chunk", None)
    flat.pop("_precision", None)  # recorded for the reader of the file; the program digest in its name covers it
    stored_runs = flat.pop("_runs", None)
    if stored_runs is None or np.asarray(stored_runs).size != len(runs):
        # every chunk file found under today's names stores _runs, written after the outputs: a central directory
        # damaged so that zipfile silently hides the entries after some point (a flipped comment length) hides it
        raise DamagedChunkError(path, "damaged chunk file: its run indices (_runs) are missing or of the wrong "
                                      "length (entries lost from the zip directory?)")
    if stored is not None:
        if not (stored.dtype.kind == "U" and stored.shape == () and stored.item() == _chunk_name(file)):
            got = stored.item() if stored.dtype.kind == "U" and stored.shape == () else repr(stored)
            raise DamagedChunkError(path, f"misfiled chunk file: it holds the results of chunk {got}, not of "
                                          f"{_chunk_name(file)} (renamed, swapped or copied over)")
    elif stored_runs is not None:
        got = tuple(int(i) for i in np.asarray(stored_runs).ravel())
        if got != runs and (names or {}).get(got) != file:
            raise DamagedChunkError(path, f"misfiled chunk file: it stores runs {list(got)}, the plan files runs "
                                          f"{list(runs)} under this name (renamed, swapped or copied over)")
    if not flat:
        raise DamagedChunkError(path, "damaged chunk file: no outputs in it")
    for k, v in flat.items():
        if v.ndim == 0 or v.shape[0] != len(runs):
            raise DamagedChunkError(path, f"damaged chunk file: output {k!r} has shape {v.shape}, expected "
                                          f"{len(runs)} runs first")
    return flat


def _move_aside(path: str) -> str:
    """Move a damaged file into ``damaged/`` beside it (never deleted: it may help to see what went wrong)."""
    from .manifest import move_aside

    folder = os.path.join(os.path.dirname(path), "damaged")
    os.makedirs(folder, exist_ok=True)
    return move_aside(path, os.path.join(folder, os.path.basename(path)))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # someone else's live process (PermissionError) / not a pid at all
    return True


def clean_stale_temps(directory: str | os.PathLike, bases: tuple[str, ...] = (".npz",),
                      min_age: float = STALE_TEMP_SECONDS) -> list[str]:
    """Remove the temp files (``<name>.tmp<pid>``, ``name`` ending with one of ``bases``) a writer killed
    mid-write left in ``directory``; returns their paths.

    A temp file is abandoned when its process is gone from this host AND it has not been modified for
    ``min_age`` seconds: a live writer in this process, another process on this host, or another host sharing
    the directory (whose pid means nothing here) is never disturbed. Readers never look at temp files anyway.
    """
    directory = os.fspath(directory)
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        m = _TEMP.search(name)
        if m is None or not name[: m.start()].endswith(bases) or _pid_alive(int(m.group(1))):
            continue
        path = os.path.join(directory, name)
        try:
            if now - os.stat(path).st_mtime < min_age or not os.path.isfile(path):
                continue
            os.remove(path)
        except OSError:  # gone meanwhile (another process cleaned it)
            continue
        removed.append(path)
    return removed


# ----------------------------------------------------------------------------- progress
class _Bar:
    """One tqdm bar for the whole sweep, in runs; step callbacks move it inside a chunk (throttled).

    A chunk counts when it is computed (its outputs fetched) or loaded. Step callbacks come from the device in
    dispatch order, so they belong to the oldest dispatched chunk not fetched yet (``computing``, first in first
    out: with pipelining the next chunk is dispatched before the previous one is fetched). The calling thread, the
    writer thread (:meth:`fetched`) and the callbacks all move the bar: one lock."""

    def __init__(self, total_runs: int, n_chunks: int, desc: str, min_interval: float = 0.5):
        from tqdm.auto import tqdm

        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} runs [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
        self.bar = tqdm(total=total_runs, desc=desc, unit="run", dynamic_ncols=True, bar_format=fmt)
        self.n_chunks, self.done_chunks, self.done_runs = n_chunks, 0, 0
        self.computing: collections.deque[int] = collections.deque()  # runs of each dispatched, unfetched chunk
        self.frac, self.min_interval, self.last = 0.0, min_interval, 0.0
        self.lock = threading.Lock()

    def dispatched(self, runs: int) -> None:
        with self.lock:
            self.computing.append(runs)

    def step(self, step: int, total: int) -> None:
        with self.lock:
            self.frac = max(self.frac, min(1.0, step / max(total, 1)))
            now = time.monotonic()
            if now - self.last >= self.min_interval:  # the throttle: callbacks may come every few ms
                self.last = now
                self._show(f"step {step}/{total}")

    def _show(self, step_text: str = "") -> None:
        self.bar.n = self.done_runs + (self.computing[0] * self.frac if self.computing else 0)
        post = f"chunk {min(self.done_chunks + 1, self.n_chunks)}/{self.n_chunks}"
        self.bar.set_postfix_str(f"{post} {step_text}".strip(), refresh=False)
        self.bar.refresh()

    def fetched(self) -> None:
        """The oldest computing chunk is done (its outputs are on the host)."""
        with self.lock:
            runs = self.computing.popleft()
            self.frac = 0.0
            self._done(runs)

    def loaded(self, runs: int) -> None:
        """A chunk read from its file (the chunk computing meanwhile, if any, keeps its progress)."""
        with self.lock:
            self._done(runs)

    def _done(self, runs: int) -> None:
        self.done_chunks += 1
        self.done_runs += runs
        self._show()

    def close(self) -> None:
        with self.lock:
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
    precision: str = DEFAULT_PRECISION,
    shared: Callable | None = None,
    data: Callable | None = None,
) -> list[dict | None]:
    """Run every config; return one result dict (numpy leaves) per config, in order.

    Chunks are pipelined (module docstring): chunk i+1 is dispatched before chunk i is fetched and written (by a
    writer thread), so at most two chunks' outputs are live on the device at once (the one being fetched and
    written, the one computing), and each chunk is on disk before the chunk after next is dispatched.

    Args:
      run_fn: pure ``run_fn(cfg) -> dict`` of arrays for ONE run (``run_fn(cfg, arrays)`` with ``shared``);
        traced fields of ``cfg`` arrive as tracers.
        Must be a stable (module-level) function: compiled programs are cached per ``(run_fn, static key)``.
      configs: validated concrete configs (frozen dataclasses using :func:`fa_jax.config.traced` fields).
      chunk_size: runs per compiled call: an int, or ``"auto"`` (whole group within the memory budget).
      out_dir: where chunk results are written for resumption (None: nothing written).
      tag: distinguishes result caches of different code/sims sharing ``out_dir``.
      progress: one progress bar for the whole sweep (False: quiet).
      devices: devices the ``runs`` axis is sharded over (default: all local devices).
      memory_budget_bytes: per-device bytes a chunk may use (default: half of the device's capacity).
      max_chunk: cap on the automatic chunk size.
      process_index, process_count: given, a static share of the chunks (chunk j to process j % count); default
        (``jax.process_index()`` / ``jax.process_count()``, several processes): chunks claimed through the
        distributed runtime (:class:`ChunkQueue`, module docstring). Runs of other processes' chunks come back as
        ``None``.
      plans: a precomputed :func:`plan_chunks` result (the sweep-file runner passes the one it recorded).
      precision: matmul precision of every program, one of :data:`PRECISIONS` (module docstring); ``plans`` must
        have been made with the same one.
      shared: ``shared(cfg) -> {name: array}`` of the config's static fields: inputs every run of a group gets as
        an unbatched program argument, ``run_fn(cfg, arrays)`` (module docstring, "Shared inputs"; a group whose
        mapping is empty runs as without ``shared``, ``run_fn(cfg)``); ``plans`` must have been made with the same
        one. Evaluated once per group while planning and again, checked against the planned content digest, before
        the group's first chunk that runs (not for chunks loaded from ``out_dir``).
      data: ``data(cfg) -> pytree of arrays``, the data a run generates from its config (module docstring,
        "Generated data shared by runs"): ``run_fn`` is then called as ``run_fn(cfg, data=...)`` (``run_fn(cfg,
        arrays, data=...)`` with ``shared``; by keyword), and runs of a group that agree on every field ``data``
        reads share one draw, unbatched. Results equal ``run_fn(cfg, data(cfg))`` run by run up to float reassociation.
        ``plans`` must have been made with the same one.
    """
    check_precision(precision)
    cpu_opt_level()  # a bad FA_JAX_CPU_OPT_LEVEL fails here, before anything is traced
    devices = tuple(devices or jax.local_devices())
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if not 0 <= pi < pc:
        raise ValueError(f"invalid process_index={pi!r}: allowed 0 <= process_index < process_count = {pc}")
    _SWEEP_CALLS[0] += 1
    client = _distributed_client() if pc > 1 and process_index is None and process_count is None else None
    queue = None if client is None else ChunkQueue(client, f"fa-jax/run_sweep/{_SWEEP_CALLS[0]}", pi,
                                                   _configs_fingerprint(configs))

    def make_plans():
        return plan_chunks(run_fn, configs, chunk_size=chunk_size, devices=devices, budget=memory_budget_bytes,
                           max_chunk=max_chunk, tag=tag, files=out_dir is not None, precision=precision,
                           cache_dir=None if out_dir is None else os.path.join(os.fspath(out_dir), "chunks"),
                           shared=shared, data=data)

    if queue is not None:  # every process runs process 0's plan, also one the caller made (run_labelled plans itself)
        given = plans
        plans = queue.plans(make_plans if given is None else lambda: given)
    elif plans is None:
        plans = make_plans()
    wrong = sorted({p.precision for p in plans} - {precision})
    if wrong:
        raise ValueError(f"invalid plans: made with precision {wrong}, this sweep runs with precision={precision!r}; "
                         "pass the same precision to plan_chunks and run_sweep")
    # (plans made without shared for a sweep with shared: _ChunkInputs.get refuses each group that has inputs)
    if shared is None and any(p.shared is not None for p in plans):
        raise ValueError(f"invalid plans: made with shared inputs, this sweep runs with shared={shared!r}; pass the "
                         "same shared to plan_chunks and run_sweep")
    if plans and (data is None) != all(p.block is None for p in plans):
        raise ValueError(f"invalid plans: made {'without' if data is not None else 'with'} a data stage, this sweep "
                         f"runs with data={data!r}; pass the same data to plan_chunks and run_sweep")
    inputs = _ChunkInputs(shared, configs, plans, devices) if shared is not None else None
    # this process's chunks: a static share, or claimed one at a time (the generator asks the queue when the loop
    # below is ready for the next chunk)
    mine = [p for j, p in enumerate(plans) if j % pc == pi] if queue is None else queue.claim(plans)
    claimed = 0
    results: list[dict | None] = [None] * len(configs)
    cache_dir = None
    if out_dir is not None:
        cache_dir = os.path.join(os.fspath(out_dir), "chunks")
        os.makedirs(cache_dir, exist_ok=True)
        clean_stale_temps(cache_dir)
    names = {p.runs: p.file for p in plans}  # an older chunk file is checked by the runs it stores
    # claimed chunks are not known in advance: the bar then counts the whole sweep (other hosts' chunks never tick)
    shown = plans if queue is not None else mine
    bar = _Bar(sum(len(p.runs) for p in shown), len(shown), desc) if progress else None

    def place(p: ChunkPlan, flat: dict[str, np.ndarray]) -> None:
        for j, i in enumerate(p.runs):
            results[i] = _unflatten({k: v[j] for k, v in flat.items()})

    def collect(job: tuple) -> None:
        """Wait until the writer has fetched (and written) a computed chunk; place its runs."""
        p, _, future = job
        place(p, future.result())  # re-raises what failed in the chunk or in its write
        STATS.chunks_run += 1

    # pending: (plan, path, future) of the chunk the writer thread fetches and writes (module docstring)
    pending = None
    # quiet: leave whatever sink the caller installed (None by default) in place. Leaving the block waits for the
    # writer, also after an error or interrupt: a chunk it holds reaches the disk.
    with (_progress.sink(bar.step) if bar is not None else _nullcontext(),
          ThreadPoolExecutor(1, thread_name_prefix="fa-jax-chunk-writer") as writer):
        try:
            for p in mine:
                claimed += 1
                path = os.path.join(cache_dir, p.file) if cache_dir is not None and p.file else None
                if pending is not None and path is not None and path == pending[1]:
                    job, pending = pending, None  # the same chunk twice in one grid: read the file it is writing
                    collect(job)
                flat = None
                if path is not None and os.path.exists(path):
                    try:
                        flat = read_chunk(path, p.runs, names)
                        STATS.chunks_loaded += 1
                    except DamagedChunkError as e:
                        dest = _move_aside(path)
                        STATS.chunks_damaged += 1
                        warnings.warn(f"{e}; moved to {dest}, recomputing its {len(p.runs)} runs",
                                      DamagedChunkWarning, stacklevel=2)
                if flat is not None:
                    place(p, flat)
                    if bar is not None:
                        bar.loaded(len(p.runs))
                    continue
                if bar is not None:
                    bar.dispatched(len(p.runs))
                # chunk i+1 computes (or is queued) ...
                out = _launch_chunk(run_fn, configs, p, devices, inputs, data)
                if pending is not None:
                    job, pending = pending, None  # ... while chunk i is fetched and written
                    collect(job)
                pending = (p, path, writer.submit(_finish_chunk, out, p, path, bar))
                del out  # the writer holds the outputs until fetched: at most two chunks' outputs live
                if not _PIPELINE:
                    job, pending = pending, None
                    collect(job)
            if pending is not None:
                job, pending = pending, None
                collect(job)
        except Exception:
            if pending is not None:  # an error in chunk i+1 (or a load): chunk i is on disk before it propagates
                job, pending = pending, None
                collect(job)
            raise
        jax.effects_barrier()  # every step callback delivered (to the bar) before the sweep returns
    STATS.chunks_skipped += len(plans) - claimed
    if bar is not None:
        bar.close()
    for p in plans:  # planned lowerings of chunks that were loaded, not run: not needed any more
        _LOWERED.pop(p.program, None)
    return results


def _chunk_program(run_fn, base, p: ChunkPlan, devices, shared: _SharedInputs | None = None,
                   data: Callable | None = None):
    """``(compiled, sharding)`` for a chunk: by its planned program digest (compiled at most once), else (a plan
    without digest: in-memory sweeps) by the run function's identity."""
    stage = None if p.block is None else _DataStage(data, p.block)
    if p.program is None:
        return _program(run_fn, p.key, base, p.size, devices, precision=p.precision, shared=shared, data=stage)
    ck = (p.program, tuple(d.id for d in devices))
    if ck in _COMPILED:
        return _COMPILED[ck]
    low = _LOWERED.get(p.program)
    if low is None:
        low = _lower(run_fn, p.key, base, p.size, devices, p.precision, shared, stage)
        if low.digest != p.program:
            raise RuntimeError(
                f"the program of chunk {p.file} changed since the sweep was planned (digest {low.digest}, planned "
                f"{p.program}): plan again (plan_chunks) so that results are filed under the code that made them")
    return _compile(low, devices)


class _ChunkInputs:
    """A sweep's shared inputs at run time: each group's arrays evaluated (on the group's first config, as
    planned) when its first chunk runs, checked against the plan's content digest, and put on the devices once
    per group (only the current group's arrays are held)."""

    def __init__(self, shared: Callable, configs: Sequence, plans: Sequence[ChunkPlan], devices: tuple):
        self.shared, self.configs, self.devices = shared, configs, devices
        self.first: dict[str, int] = {}
        for p in plans:  # the group's first config: its smallest index (plan_chunks evaluated shared on it)
            self.first[p.key] = min(self.first.get(p.key, p.runs[0]), *p.runs)
        self.key: str | None = None
        self.host: _SharedInputs | None = None
        self.device: dict | None = None

    def get(self, p: ChunkPlan) -> tuple[_SharedInputs | None, dict | None]:
        """``(host inputs, device arrays)`` of chunk ``p``'s group; ``(None, None)`` for a group without inputs
        (its ``shared(cfg)`` is empty: the program and call of a sweep without ``shared``)."""
        if self.key != p.key:
            self.key, self.host, self.device = None, None, None  # the previous group's arrays are released
            host = _shared_inputs(self.shared, self.configs[self.first[p.key]])
            digest = None if host is None else host.digest
            if p.shared is None and host is not None:
                raise ValueError(f"invalid plans: chunk {p.file or list(p.runs)} was planned without shared inputs, "
                                 f"this sweep runs with shared={self.shared!r}; pass the same shared to plan_chunks "
                                 "and run_sweep")
            if digest != p.shared:
                raise RuntimeError(
                    f"the shared inputs of chunk {p.file or list(p.runs)} changed since the sweep was planned (content "
                    f"{digest}, planned {p.shared}): shared(cfg) must depend only on the config's static fields "
                    "and return the same data every time; plan again (plan_chunks) after changing the data")
            self.device = None if host is None else jax.device_put(host.arrays, _replicated(self.devices))
            self.key, self.host = p.key, host
        return self.host, self.device


def _launch_chunk(run_fn, configs, p: ChunkPlan, devices, inputs: _ChunkInputs | None = None,
                  data: Callable | None = None):
    """Dispatch one chunk; its outputs (device arrays, padded to ``p.size`` runs; with a data stage, one per slot
    of ``p.slots``). On an accelerator they may still be computing; on CPU the call waits for them, so that two
    chunk programs never run at once."""
    base = configs[p.runs[0]]
    values = [traced_values(configs[i]) for i in p.runs]
    padded = (values + [values[-1]] * (p.size - len(values)) if p.slots is None
              else [values[j] for j in p.slots])
    host, arrays = inputs.get(p) if inputs is not None else (None, None)
    compiled, sharding = _chunk_program(run_fn, base, p, devices, host, data)
    args = jax.device_put(_stack(padded), sharding)
    out = compiled(args) if arrays is None else compiled(args, arrays)
    if devices[0].platform == "cpu":
        jax.block_until_ready(out)
    return out


def _fetch_chunk(out, n: int, slots: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """A dispatched chunk's outputs on the host (``{output path: array[runs, ...]}``, the first ``n`` runs: the
    rest is padding; with ``slots``, run j is read from the first slot that computed it), diverged runs marked.
    Waits for the chunk; its step callbacks ran before its outputs were ready (they are operations of the
    program)."""
    rows = slice(0, n) if slots is None else _slot_rows(slots, n)
    flat = {k: np.asarray(v)[rows] for k, v in _flatten(jax.device_get(out)).items()}
    return _mark_diverged(flat)


def _slot_rows(slots: Sequence[int], n: int) -> np.ndarray:
    """``(n,)`` the first slot computing each of a chunk's ``n`` runs."""
    first: dict[int, int] = {}
    for s, j in enumerate(slots):
        first.setdefault(j, s)
    return np.asarray([first[j] for j in range(n)], np.int64)


def _finish_chunk(out, p: ChunkPlan, path: str | None, bar: _Bar | None) -> dict[str, np.ndarray]:
    """The writer thread's work for one chunk: fetch it, count it on the bar, write its file (atomically)."""
    flat = _fetch_chunk(out, len(p.runs), p.slots)
    if bar is not None:
        bar.fetched()
    if path is not None:
        _write_atomic(path, {**flat, "_runs": np.asarray(p.runs, np.int64), "_chunk": np.asarray(_chunk_name(p.file)),
                             "_precision": np.asarray(p.precision)})
    return flat


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
    precision: str = DEFAULT_PRECISION,
    shared: Callable | None = None,
    data: Callable | None = None,
    max_chunk: int | None = None,
) -> tuple[dict[str, list[tuple[dict, dict]]], dict]:
    """A simulation's labelled runs (``{part: [(label, config), ...]}``) as ONE :func:`run_sweep` call.

    Returns ``({part: [(label, result), ...]}, engine_metrics)`` with ``engine_metrics`` = wall seconds, programs
    compiled, runs, chunks loaded from ``out_dir`` (computed by an earlier invocation), diverged runs and the
    matmul ``precision`` (module docstring).

    With ``out_dir``, the call also writes its manifest ``out_dir/runs.<tag>.json``
    (:func:`fa_jax.manifest.run_manifest_name`; atomically, before any chunk runs, rewritten only when it
    changes), so that :func:`fa_jax.load_results` opens the runs as one ``xarray.Dataset`` -- dims
    ``(run, <output axes>)``, the part and every label key as coordinates along ``run`` -- in a process that
    cannot import ``run_fn`` (:func:`runs_manifest`). The chunks and their names are those :func:`run_sweep`
    plans by itself: the manifest only records them.

    ``shared``: inputs every run of a group receives unbatched, ``run_fn(cfg, arrays)`` (:func:`run_sweep`; module
    docstring, "Shared inputs"). ``data``: the runs' generated data, one draw per block of runs that share it,
    ``run_fn(cfg, data=...)`` (:func:`run_sweep`; module docstring, "Generated data shared by runs").
    ``max_chunk``: at most this many runs per chunk (:func:`plan_chunks`; None: the whole group within the memory
    budget).
    """
    _check_runs(runs)
    flat = [cfg for part in runs.values() for _, cfg in part]
    t0, traces0, loaded0 = time.time(), STATS.traces, STATS.chunks_loaded
    plans = None
    if out_dir is not None:
        from .manifest import _write_json_atomic, run_manifest_name

        out_dir = os.fspath(out_dir)
        check_precision(precision)
        # the plan run_sweep would make (same arguments), made here so that the manifest can record it
        plans = plan_chunks(run_fn, flat, devices=tuple(jax.local_devices()), tag=tag, precision=precision,
                            cache_dir=os.path.join(out_dir, "chunks"), shared=shared, data=data, max_chunk=max_chunk)
        if jax.process_index() == 0:
            doc = runs_manifest(run_fn, runs, plans, tag=tag, precision=precision)
            path = os.path.join(out_dir, run_manifest_name(tag))
            os.makedirs(out_dir, exist_ok=True)
            clean_stale_temps(out_dir, bases=(os.path.basename(path),))  # of a writer killed mid-write
            if _json_or_none(path) != _jsonable(doc):
                _write_json_atomic(path, doc)
    results = run_sweep(run_fn, flat, out_dir=out_dir, tag=tag, progress=progress, desc=desc, precision=precision,
                        plans=plans, shared=shared, data=data, max_chunk=max_chunk)
    it = iter(results)
    res = {part: [(lab, next(it)) for lab, _ in items] for part, items in runs.items()}
    metrics = {"wall_seconds": time.time() - t0, "programs_compiled": STATS.traces - traces0, "n_runs": len(flat),
               "chunks_loaded_from_cache": STATS.chunks_loaded - loaded0,
               "diverged_runs": int(sum(bool(r["diverged"]) for r in results if r is not None and "diverged" in r)),
               "matmul_precision": precision, "compiler_options": compiler_options(jax.devices()[0].platform)}
    return res, metrics


def _check_runs(runs) -> None:
    """``runs`` must be ``{part name: [(label dict, config), ...]}``: a TypeError naming the entry otherwise."""
    if not isinstance(runs, Mapping):
        raise TypeError(f"invalid runs={type(runs).__name__}: allowed a dict {{part: [(label dict, config), ...]}}")
    for part, items in runs.items():
        if not isinstance(part, str):
            raise TypeError(f"invalid runs key {part!r}: allowed a part name (a string)")
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise TypeError(f"invalid runs[{part!r}]={type(items).__name__}: allowed a list of (label dict, config)")
        for i, item in enumerate(items):
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], Mapping)
                    and all(isinstance(k, str) for k in item[0])):
                raise TypeError(f"invalid runs[{part!r}][{i}]={_short(item)}: allowed a pair (label dict with "
                                "string keys, config)")


def _short(x, limit: int = 80) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_or_none(path: str):
    """The JSON document at ``path``, or None when it is absent or unreadable (then it is rewritten)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _jsonable(x):
    """``x`` as JSON reads it back (tuples -> lists, other objects -> str): what a manifest stores and compares."""
    return json.loads(json.dumps(x, default=str))


def _experiment_description(run_fn: Callable) -> dict:
    """:func:`fa_jax.experiments.describe` of the registered experiment whose run function is ``run_fn`` (its
    output dims, coordinates, labels, units); a run function no experiment names gets its name and no dims (its
    outputs load with generic ``<output>_dim<i>`` axes)."""
    from .experiments import describe, experiment_names, get_experiment

    def ident(fn) -> tuple:
        return getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)

    for name in experiment_names():
        try:
            exp = get_experiment(name)
        except ImportError:  # a built-in whose optional dependency is missing: it runs nothing here
            exp = None
        if exp is not None and (exp.run is run_fn or ident(exp.run) == ident(run_fn)):
            return describe(exp)
    return {"name": getattr(run_fn, "__name__", "run"), "run": "{}:{}".format(*ident(run_fn)), "config": None,
            "seeds": [], "width": None, "bucket": None, "dims": [], "coords": [], "labels": [], "units": [],
            "description": "", "context": None, "shared": None}


def runs_manifest(run_fn: Callable, runs: dict[str, list[tuple[dict, Any]]], plans: Sequence[ChunkPlan], *,
                  tag: str = "", precision: str = DEFAULT_PRECISION) -> dict:
    """The manifest of a :func:`run_labelled` call (:mod:`fa_jax.manifest`; JSON-able, deterministic: the same
    call gives the same document, so a rerun rewrites nothing).

    Its sweep schema has ONE axis, ``run`` (``0 .. n_runs-1``, the runs in ``runs`` order: part by part), and
    ``plans``' chunk files. Beside it: ``parts`` and ``labels`` (one per run), the output description of the
    experiment that runs ``run_fn`` (:func:`_experiment_description`), ``base_config`` (the first run's config)
    and ``varying`` (``{dotted field: [value per run]}`` for every field whose value differs between runs), so
    every run's config is recorded; versions, device, XLA flags.
    """
    from .config import _walk
    from .summary import device, versions

    flat = [cfg for part in runs.values() for _, cfg in part]
    parts = [part for part, items in runs.items() for _ in items]
    labels = [_jsonable(dict(lab)) for items in runs.values() for lab, _ in items]
    fields = [{p: v for p, _, v in _walk(c)} if dataclasses.is_dataclass(c) else {} for c in flat]
    fields = [_jsonable(f) for f in fields]
    paths = list(dict.fromkeys(p for f in fields for p in f))
    missing = object()
    varying = {p: [f.get(p) for f in fields] for p in paths
               if any(f.get(p, missing) != fields[0].get(p, missing) for f in fields)}
    exp = _experiment_description(run_fn)
    n = len(flat)
    spec = {"experiment": exp["name"], "name": tag or exp["name"], "fixed": {}, "analysis": None,
            "axes": [{"name": "run", "kind": "values", "path": None, "coords": list(range(n)), "cases": []}]}
    blob = json.dumps([tag, exp["run"], parts, labels, fields], sort_keys=True)
    base = flat[0] if flat else None
    return {
        "format": 1, "kind": "runs", "tag": tag, "source": "", "spec": spec,
        "spec_hash": hashlib.sha256(blob.encode()).hexdigest()[:16], "n_runs": n, "shape": [n], "axes": ["run"],
        "parts": parts, "labels": labels,
        "base_config": _jsonable(dataclasses.asdict(base)) if dataclasses.is_dataclass(base) else {},
        "config_classes": list(dict.fromkeys(f"{type(c).__module__}:{type(c).__qualname__}" for c in flat)),
        "varying": varying,
        "plan": plan_json(plans), "n_groups": len({p.key for p in plans}), "versions": versions(),
        "device": device(precision),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "compiler_options": compiler_options(jax.devices()[0].platform),
        "process_count": jax.process_count(),
        "experiment": exp,
    }
