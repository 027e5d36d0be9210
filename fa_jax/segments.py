"""A packed neuron axis: the neurons of several runs laid end to end on ONE axis (issue 19 item 2).

Runs of different widths that share their data can train as one parameter set whose leading ``neurons`` axis
holds run 0's neurons, then run 1's, ...: one ``(samples, d) x (d, neurons)`` matmul per step instead of one per
run, and no neuron padded to the widest run. A slot of ``runs`` places and ``capacity`` neurons holds runs of
``sizes (runs,)`` neurons (``sum(sizes) <= capacity``; a size of 0 is an empty place); neuron ``j`` belongs to run
``run_of[j]`` at position ``local[j]`` of that run's own neuron axis, and the neurons after ``sum(sizes)`` to
no run (``run_of = runs``, the sentinel):

    offset_k = sum_{i < k} sizes_i,   run_of[j] = k  and  local[j] = j - offset_k   for offset_k <= j < offset_{k+1}.

Because the runs' parameters are disjoint, the gradient of the SUM of the runs' losses is, neuron by neuron, each
run's own gradient: packed training equals separate training up to float reassociation. What couples runs must
be done per segment: a global gradient norm (:func:`segment_sum` of squares), a divergence guard
(:func:`fa_jax.trainer.train` with ``segments``), and the read-out of per-run outputs from all neurons at once
(:func:`readout`: a dense ``(neurons x outputs)`` matmul would turn one run's inf into every run's NaN through
``inf * 0``; packed, a run whose activations overflow is marked diverged at that step, see :func:`readout`).
The slots themselves are planned and run by :mod:`fa_jax.packing`.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Segments(NamedTuple):
    """A slot's layout: ``run_of (neurons,)`` int32, the run of each neuron (``runs`` for unused neurons),
    ``local (neurons,)`` int32, its index within its run, and ``runs`` (static), the slot's places."""

    run_of: jax.Array
    local: jax.Array
    runs: int


def layout(sizes, capacity: int) -> Segments:
    """The :class:`Segments` of runs with ``sizes (runs,)`` neurons (ints, may be traced) on a ``capacity``-neuron
    axis (static). Neurons past ``sum(sizes)`` get ``run_of = runs`` (no run) and ``local = 0``."""
    sizes = jnp.asarray(sizes, jnp.int32)
    runs = int(sizes.shape[0])
    ends = jnp.cumsum(sizes)
    j = jnp.arange(capacity, dtype=jnp.int32)
    # the first run whose end lies past j (empty places have end == start and are skipped by side="right")
    run_of = jnp.searchsorted(ends, j, side="right").astype(jnp.int32)
    start = jnp.concatenate([jnp.zeros((1,), jnp.int32), ends])[jnp.minimum(run_of, runs)]
    local = jnp.where(run_of < runs, j - start, 0).astype(jnp.int32)
    return Segments(run_of, local, runs)


def segment_sum(values: jax.Array, seg: Segments) -> jax.Array:
    """``(runs, ...)`` sums over each run's neurons of ``values (neurons, ...)`` (unused neurons dropped).

    A masked reduction over a ``(runs, neurons, ...)`` select, not a scatter-add: a reduction is deterministic on
    every backend (a float scatter-add on a GPU is not), and a select keeps one run's NaN out of the others' sums
    (a 0/1 membership matmul would not: NaN * 0). Meant for per-neuron vectors (``runs x neurons`` elements)."""
    mask = membership(seg, bool)
    mask = mask.reshape(mask.shape + (1,) * (values.ndim - 1))
    return jnp.sum(jnp.where(mask, values[None], jnp.zeros((), values.dtype)), axis=1)


def per_neuron(values: jax.Array, seg: Segments, fill=0) -> jax.Array:
    """``(neurons, ...)``: each neuron's run's entry of ``values (runs, ...)``; ``fill`` on unused neurons."""
    ext = jnp.concatenate([values, jnp.full((1,) + values.shape[1:], fill, values.dtype)])
    return ext[seg.run_of]


def neuron_leaves(tree, seg: Segments) -> list[bool]:
    """Which leaves of ``tree`` are per neuron (leading axis of length ``capacity``): the leaves a per-run
    operation splits by segment; any other leaf (an optimiser's step count) is shared by the slot."""
    n = seg.run_of.shape[0]
    return [getattr(a, "ndim", 0) >= 1 and a.shape[0] == n for a in jax.tree.leaves(tree)]


def finite_by_run(tree, seg: Segments) -> jax.Array:
    """``(runs,)`` bool: every per-neuron entry of the run's neurons is finite, and every shared leaf of ``tree``
    is finite (a shared leaf belongs to all runs)."""
    bad = jnp.zeros((seg.runs,), jnp.int32)
    shared_ok = jnp.asarray(True)
    for a, per in zip(jax.tree.leaves(tree), neuron_leaves(tree, seg), strict=True):
        if per:
            nonfinite = ~jnp.all(jnp.isfinite(a).reshape(a.shape[0], -1), axis=1)
            bad = bad + segment_sum(nonfinite.astype(jnp.int32), seg)
        else:
            shared_ok = shared_ok & jnp.all(jnp.isfinite(a))
    return (bad == 0) & shared_ok


def keep_by_run(ok: jax.Array, new, old, seg: Segments):
    """``new`` where the neuron's run is ``ok (runs,)``, else ``old``; shared leaves take ``new`` if any run is ok
    (unused neurons follow ``new``)."""
    mask = per_neuron(ok, seg, fill=True)
    anyok = jnp.any(ok)
    flags = neuron_leaves(new, seg)
    leaves_new, treedef = jax.tree.flatten(new)
    leaves_old = jax.tree.leaves(old)

    def one(a, b, per):
        if per:
            return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
        return jnp.where(anyok, a, b)

    return jax.tree.unflatten(treedef, [one(a, b, p) for a, b, p in zip(leaves_new, leaves_old, flags, strict=True)])


def membership(seg: Segments, dtype=jnp.float32) -> jax.Array:
    """``(runs, neurons)`` 0/1 (or bool): ``M[k, j] = 1`` iff neuron j belongs to run k."""
    return (seg.run_of[None, :] == jnp.arange(seg.runs, dtype=jnp.int32)[:, None]).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _readout(h, A, member, outputs: int):
    finite = jnp.isfinite(h)
    out = jnp.where(finite, h, 0) @ A.T  # (samples, runs * outputs): other runs' neurons enter as exact zeros
    # a run with a non-finite activation anywhere gets NaN outputs: it diverges (readout's docstring)
    bad_run = (member @ (~jnp.all(finite, axis=0)).astype(member.dtype)) > 0  # (runs,)
    return jnp.where(jnp.repeat(bad_run, outputs)[None, :], jnp.nan, out)


def _readout_fwd(h, A, member, outputs):
    return _readout(h, A, member, outputs), (A, member)


def _readout_bwd(outputs, res, g):
    A, member = res
    finite = jnp.isfinite(g)
    # a non-finite cotangent must not reach other runs' neurons (NaN * 0 in the matmul) ...
    dh = jnp.where(finite, g, 0) @ A
    # ... but does reach its own run's: NaN on all of them, so the trainer's guard freezes that run, as a NaN
    # gradient would alone (a finite loss can have one: sqrt at 0)
    bad_run = ~jnp.all(finite.reshape(g.shape[0], -1, outputs), axis=(0, 2))  # (runs,)
    bad_neuron = (bad_run.astype(member.dtype) @ member) > 0  # (neurons,)
    return jnp.where(bad_neuron[None, :], jnp.nan, dh), jnp.zeros_like(A), None


_readout.defvjp(_readout_fwd, _readout_bwd)


def readout(h: jax.Array, A: jax.Array, seg: Segments) -> jax.Array:
    """Per-run outputs ``(samples, runs * outputs)`` = ``h A^T`` of activations ``h (samples, neurons)`` through a
    read-out ``A (runs * outputs, neurons)`` that is zero off each run's own neurons, with runs kept apart (a
    dense matmul spreads one run's inf to every run by ``inf * 0``). Equal to ``h @ A.T`` wherever every
    activation is finite.

    * A non-finite activation of run k makes all of run k's outputs NaN and no other run's: packed, a run whose
      activations overflow diverges at that step (:func:`fa_jax.trainer.train` freezes it), also where its
      separate run's dense read-out could keep a finite loss (an activation of +inf on the right side:
      ``softplus(-inf) = 0``). Stricter than the separate run only there.
    * Backward, a non-finite cotangent of run k (its loss, or its loss's gradient, is not finite) makes the
      gradient of all of run k's neurons NaN and leaves every other run's exact: run k diverges, as alone.
    ``A`` is a constant (its cotangent is zero)."""
    outputs = A.shape[0] // seg.runs
    return _readout(h, A, membership(seg, h.dtype), outputs)
