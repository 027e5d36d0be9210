"""Width packing: runs that share their data and differ in width train on ONE neuron axis (issue 19 item 2).

:func:`fa_jax.sweep.run_sweep` vmaps one run function over runs, so runs of different widths either compile one
program per width or pad every run to the widest (a bucket: up to ``len(widths) * max / sum`` times the FLOPs).
:func:`run_packed` instead lays the runs of a group end to end on a packed neuron axis (:mod:`fa_jax.segments`):

* Runs may share a *slot* when they have the same static fields (except ``Pack.ignore``, e.g. the width bucket
  that packing makes moot) and the same value of every traced field except ``Pack.fields`` (e.g. the width and the
  init seed). Each run needs ``Pack.size(cfg)`` neurons.
* Slots are filled first-fit decreasing (runs by size, largest first; ties by index) up to ``capacity`` neurons
  (default: the group's largest run, or a wider slot when that computes fewer neurons in all,
  :func:`_best_capacity`) and ``places`` runs (default: the most any slot of the group got). Both are
  static, so every slot of a group is one program; a run's place, and which runs share its slot, change neither
  its randomness (drawn from its own fields) nor its numbers beyond float reassociation.
* Slots are ordinary configs (:class:`Slot`) run by :func:`fa_jax.sweep.run_sweep`: chunked (on CPU at most
  :data:`CPU_CHUNK_NEURONS` packed neurons per device and chunk unless ``max_chunk`` is given,
  :func:`default_max_chunk`), sharded, pipelined, resumable from ``out_dir``, the data stage shared by slots of
  one data key. ``run_slot(slot) -> {name: (places, ...)}`` computes all runs of a slot (every output with a
  leading ``places`` axis: place k is run k of the slot); :meth:`Slot.packed` gives the packed fields' values
  ``(places,)``, :meth:`Slot.segments` the layout.
* Results come back per run, in order, as :func:`run_sweep`'s do; a run is marked ``diverged`` by its own
  ``diverged`` / ``diverged_step`` outputs (else a NaN in a floating output) and only its own outputs are NaN'd.

A slot's neurons past its runs' total are padding (zero weights, no read-out): the measured cost of packing is
that fill (``PackPlan.fill``), not a bucket.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .config import _walk, require, static_key, traced, traced_values, with_values
from .segments import Segments, layout
from .sweep import _flatten, _mark_diverged, _unflatten, data_fields, run_sweep


@dataclasses.dataclass(frozen=True)
class Pack:
    """What packs: ``fields`` (dotted paths of traced fields that may differ inside a slot), ``size(cfg) -> int``
    (the run's neurons; a host function of the concrete config), ``capacity`` (neurons per slot; None: chosen,
    module docstring), ``places`` (runs per slot at most; None: as many as fit), ``ignore`` (static fields that
    the packed layout replaces, e.g. ``("model.bucket",)``: runs differing only there share slots)."""

    fields: tuple[str, ...]
    size: Callable[[Any], int]
    capacity: int | None = None
    places: int | None = None
    ignore: tuple[str, ...] = ()

    def validate(self) -> Pack:
        require(isinstance(self.fields, tuple) and len(self.fields) > 0 and all(isinstance(f, str)
                for f in self.fields), "pack.fields", "a non-empty tuple of dotted traced-field paths", self.fields)
        require(callable(self.size), "pack.size", "a callable size(cfg) -> int (the run's neurons)", self.size)
        require(self.capacity is None or (isinstance(self.capacity, int) and self.capacity >= 1), "pack.capacity",
                "an integer >= 1 or None", self.capacity)
        require(self.places is None or (isinstance(self.places, int) and self.places >= 1), "pack.places",
                "an integer >= 1 or None", self.places)
        require(isinstance(self.ignore, tuple), "pack.ignore", "a tuple of dotted static-field paths", self.ignore)
        return self


@functools.lru_cache(maxsize=None)
def _values_class(names: tuple[str, ...], kinds: tuple[str, ...]) -> type:
    """A frozen dataclass with one traced tuple field per packed field (stable per names and element kinds, so
    equal slots have equal static keys)."""
    fields = [(n.replace(".", "__"), tuple[int, ...] if k == "int" else tuple[float, ...], traced(()))
              for n, k in zip(names, kinds, strict=True)]
    return dataclasses.make_dataclass("PackedValues", fields, frozen=True)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One slot: ``run`` (its first run's config with the ``ignore`` fields set to None; read only the fields
    that are NOT packed: :func:`run_packed` refuses a ``run_slot`` that reads a packed one there), ``capacity``,
    ``places`` and ``packing`` (static), ``sizes`` ``(places,)`` neurons per run (0: an empty place) and
    ``values`` (the packed fields, one ``(places,)`` tuple each)."""

    run: Any
    capacity: int
    places: int
    packing: tuple = ()  # static: ((packed field, "int" | "float"), ...): other packed fields, another program
    sizes: tuple[int, ...] = traced(())
    values: Any = None

    def packed(self, path: str):
        """``(places,)`` values of packed field ``path`` (an array inside the program)."""
        return getattr(self.values, path.replace(".", "__"))

    def packs(self, path: str) -> bool:
        """Whether field ``path`` is packed (per run) in this slot."""
        return hasattr(self.values, path.replace(".", "__"))

    def segments(self) -> Segments:
        """The slot's :class:`fa_jax.segments.Segments` (``run_of``, ``local`` of its ``capacity`` neurons)."""
        return layout(self.sizes, self.capacity)


@dataclasses.dataclass(frozen=True)
class PackPlan:
    """``slots`` (configs for :func:`run_sweep`), ``members`` (per slot, the config indices at places 0, 1, ...)
    and ``fill`` (neurons used / neurons computed, over all slots)."""

    slots: list
    members: list[tuple[int, ...]]
    fill: float


def plan_slots(configs: Sequence, pack: Pack) -> PackPlan:
    """Pack ``configs`` into slots (module docstring): deterministic in the configs, independent of devices."""
    pack = pack.validate()
    if not configs:
        return PackPlan([], [], 1.0)
    tvs = [traced_values(c) for c in configs]
    groups: dict[str, list[int]] = {}
    for i, (c, tv) in enumerate(zip(configs, tvs, strict=True)):
        for f in pack.fields:
            require(f in tv, "pack.fields", f"traced fields of the configs ({sorted(tv)})", f)
        leaves = {path for path, _, _ in _walk(c)}
        for f in pack.ignore:
            require(f in leaves and f not in tv, "pack.ignore", "dotted paths of static leaf fields of the configs",
                    f)
        groups.setdefault(static_key(with_values(c, {p: None for p in pack.ignore})), []).append(i)
    sizes = []
    for i, c in enumerate(configs):
        s = pack.size(c)
        require(isinstance(s, (int, np.integer)) and s >= 1, f"pack.size(configs[{i}])", "an integer >= 1", s)
        sizes.append(int(s))
    slots, members, used, computed = [], [], 0, 0
    for idx in groups.values():
        capacity = pack.capacity if pack.capacity is not None else max(sizes[i] for i in idx)
        big = [i for i in idx if sizes[i] > capacity]
        require(not big, "pack.capacity", f"an integer >= the largest run's size ({max(sizes[i] for i in idx)})",
                capacity)
        keys: dict[tuple, list[int]] = {}
        for i in idx:
            rest = tuple(sorted((p, v) for p, v in tvs[i].items() if p not in pack.fields))
            keys.setdefault(rest, []).append(i)
        if pack.capacity is None:
            capacity = _best_capacity(list(keys.values()), sizes, capacity, pack.places)
        bins = [b for ids in keys.values() for b in _first_fit(ids, sizes, capacity, pack.places)]
        bins.sort(key=lambda b: b[0])
        places = pack.places if pack.places is not None else max(len(b) for b in bins)
        names = pack.fields
        kinds = tuple("int" if all(isinstance(tvs[i][f], (int, np.integer)) for i in idx)
                      else "float" for f in names)
        cls = _values_class(names, kinds)
        fixed = {p: None for p in pack.ignore}  # moot in a slot; one value for every sweep (one program)
        cast = {"int": int, "float": float}
        for b in bins:
            pad = places - len(b)
            vals = [tvs[i] for i in b]
            # a float field holding an int (init_scale=1) is stacked as a float like its group's others
            values = cls(**{n.replace(".", "__"): tuple(cast[k](v[n]) for v in vals + [vals[-1]] * pad)
                            for n, k in zip(names, kinds, strict=True)})
            slots.append(Slot(run=with_values(configs[b[0]], fixed), capacity=capacity, places=places,
                              packing=tuple(zip(names, kinds, strict=True)),
                              sizes=tuple(sizes[i] for i in b) + (0,) * pad, values=values))
            members.append(tuple(b))
            used += sum(sizes[i] for i in b)
            computed += capacity
    return PackPlan(slots, members, used / computed)


def _first_fit(ids: list[int], sizes: list[int], capacity: int, places: int | None) -> list[list[int]]:
    """First fit decreasing (by size, ties by index) of runs ``ids`` into slots; each slot's runs in index order.
    A slot that no remaining run can enter (room below the smallest run, or every place taken) is closed, so runs
    of a few sizes pack in about linear time."""
    order = sorted(ids, key=lambda i: (-sizes[i], i))
    smallest = sizes[order[-1]] if order else 0
    bins: list[list[int]] = []
    open_: list[list] = []  # [room, bin] of the slots still open, in creation order
    for i in order:
        for entry in open_:
            if sizes[i] <= entry[0]:
                entry[1].append(i)
                entry[0] -= sizes[i]
                break
        else:
            entry = [capacity - sizes[i], [i]]
            bins.append(entry[1])
            open_.append(entry)
        if entry[0] < smallest or (places is not None and len(entry[1]) >= places):
            open_.remove(entry)
    return [sorted(b) for b in bins]


def _best_capacity(keys: list[list[int]], sizes: list[int], largest: int, places: int | None,
                   tries: int = 8) -> int:
    """The default capacity: the one of fewest computed neurons (slots x capacity) among the largest run's size
    and ``ceil(total / s)`` for s = 1 .. min(``tries``, the slot count at the largest run's size) (fewer, wider
    slots pack a few runs of unequal widths without leaving most of a slot empty); ties go to the smaller capacity
    (more slots to vmap over)."""
    def computed(c: int) -> int:
        return c * sum(len(_first_fit(ids, sizes, c, places)) for ids in keys)

    base = sum(len(_first_fit(ids, sizes, largest, places)) for ids in keys)
    total = sum(sizes[i] for ids in keys for i in ids)
    cands = {largest} | {max(largest, -(-total // n)) for n in range(1, min(tries, base) + 1)}
    return min(sorted(cands), key=computed)


@functools.cache
def _slot_fn(run_slot: Callable) -> Callable:
    """The engine's run function for slots (one object per ``run_slot``, cached: the engine caches programs by
    it). Outputs are nested under ``packed`` and a slot-level ``diverged = False`` added, so the engine never
    marks a whole slot; runs are marked one by one after unpacking."""
    import jax.numpy as jnp

    def fn(slot, *arrays, **kw):
        return {"diverged": jnp.asarray(False), "packed": run_slot(slot, *arrays, **kw)}

    fn.__qualname__ = fn.__name__ = f"packed[{getattr(run_slot, '__qualname__', repr(run_slot))}]"
    fn.__module__ = getattr(run_slot, "__module__", __name__)
    return fn


@functools.cache
def _slot_data(data: Callable) -> Callable:
    """The data stage of slots: ``data(slot.run)`` (one object per ``data``, cached as :func:`_slot_fn`)."""
    def fn(slot):
        return data(slot.run)

    fn.__qualname__ = fn.__name__ = f"packed[{getattr(data, '__qualname__', repr(data))}]"
    return fn


def run_packed(run_slot: Callable, configs: Sequence, pack: Pack, *, data: Callable | None = None,
               **sweep_kwargs) -> list[dict | None]:
    """Run ``configs`` packed into slots (module docstring); one result dict per config, in order, as
    :func:`fa_jax.sweep.run_sweep` returns them (``None`` for runs of another process's chunks).

    ``run_slot(slot) -> {name: (places, ...)}`` (``run_slot(slot, data=...)`` with ``data``; the data stage is
    ``data(slot.run)``, so ``data`` must not read a packed field: a ConfigError names it, as it names a
    ``run_slot`` that reads one from ``slot.run``; both read off their traced programs before anything compiles). ``sweep_kwargs`` go to
    :func:`run_sweep` (``out_dir``, ``chunk_size``, ``devices``, ``precision``, ...; not ``shared``)."""
    require("shared" not in sweep_kwargs, "shared", "not supported by run_packed (use data=)", "given")
    plan = plan_slots(configs, pack)
    for slot in {static_key(s): s for s in plan.slots}.values():  # one check per program
        _check_reads(run_slot, data, slot)
    kwargs = dict(sweep_kwargs)
    if "max_chunk" not in kwargs and "plans" not in kwargs and plan.slots:
        kwargs["max_chunk"] = default_max_chunk(plan, kwargs.get("devices"))
    out = run_sweep(_slot_fn(run_slot), plan.slots, data=None if data is None else _slot_data(data), **kwargs)
    results: list[dict | None] = [None] * len(configs)
    for s, idx in enumerate(plan.members):
        if out[s] is None:
            continue
        flat = {k: np.asarray(v) for k, v in _flatten(out[s]["packed"]).items()}
        for place, i in enumerate(idx):
            row = _mark_diverged({k: v[place:place + 1] for k, v in flat.items()})
            results[i] = _unflatten({k: v[0] for k, v in row.items()})
    return results


CPU_CHUNK_NEURONS = 4096  # packed neurons per CPU device in one chunk (default_max_chunk)


def default_max_chunk(plan: PackPlan, devices=None) -> int | None:
    """The chunk cap :func:`run_packed` uses unless given one: on CPU devices, ``CPU_CHUNK_NEURONS`` packed neurons
    per device (slots of ``capacity`` neurons: ``devices x max(1, 4096 // capacity)`` slots); elsewhere None (the
    engine's memory-sized chunks). Measured (benchmarks.throughput's width sweep, widths 16-256 x 16 runs, 31 slots
    of 512 neurons, 2-core CPU): all 31 slots in one chunk 1.31-1.42x the time of one program per width, chunks of
    8 slots 1.12-1.19x; one program per width gets slower with smaller chunks (a chunk of 4 runs: +8 %)."""
    import jax

    devices = tuple(devices or jax.local_devices())
    if devices[0].platform != "cpu":
        return None
    widest = max(s.capacity for s in plan.slots)
    return len(devices) * max(1, CPU_CHUNK_NEURONS // widest)


_READS_OK: set = set()


def _check_reads(run_slot: Callable, data: Callable | None, slot: Slot) -> None:
    """Refuse, read off the traced programs (as :func:`fa_jax.sweep.data_fields` reads a data stage's fields), a
    ``data`` that reads a packed field (the runs of a slot share one draw, from ``slot.run``) and a ``run_slot``
    that reads one from ``slot.run`` (where it holds the slot's first run's value, so every run would silently
    get it). Once per (run_slot, data, program) in a process."""
    key = (run_slot, data, static_key(slot))
    if key in _READS_OK:
        return
    packed = [f"run.{name}" for name, _ in slot.packing]
    if data is not None:
        read = sorted(p[len("run."):] for p in set(data_fields(_slot_data(data), slot)) & set(packed))
        require(not read, "pack.fields", f"fields data(cfg) does not read (it reads {read}: runs of one slot share "
                "one data draw)", tuple(name for name, _ in slot.packing))

    def whole(s):
        return run_slot(s) if data is None else run_slot(s, data=_slot_data(data)(s))

    whole.__qualname__ = f"run_slot {getattr(run_slot, '__qualname__', repr(run_slot))}"
    bad = [p for p in packed if p in set(data_fields(whole, slot))]
    require(not bad, "run_slot", "a function that reads packed fields with slot.packed(name) (slot.run holds the "
            f"slot's first run's value of them; it reads slot.{bad[0] if bad else ''})",
            getattr(run_slot, "__qualname__", run_slot))
    _READS_OK.add(key)
