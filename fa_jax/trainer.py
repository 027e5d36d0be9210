"""The scan-based trainer: the whole training loop is one ``lax.scan`` (inside the caller's ``jit``).

A *recording plan* is a static increasing tuple of steps ``(0, t_1, ..., T)``; the trainer runs the updates
between consecutive plan entries in a ``fori_loop`` and calls ``record_fn(params)`` at each entry, so memory
grows with the number of records, never with the number of steps.

Batching (``../shared/specs/README.md``):
* full batch (``batch_size=None``): every step uses the exact mean gradient over all n samples (GD);
* ``sampling="epoch"``: epoch e = t // ceil(n/b) draws perm = permutation(fold_in(key, e), n) and takes
  consecutive batches of b; the last partial batch is kept and averaged over its own size;
* ``sampling="replacement"``: b iid indices per step from fold_in(key, t);
* online (``sample_fn``): a fresh batch every step, ``sample_fn(fold_in(key, t))``, no fixed dataset.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from . import progress
from . import segments as seg_ops
from .config import require

PLANS = ("log", "linear")


class TrainResult(NamedTuple):
    """What :func:`train` returns.

    ``params``: the final parameters (the last finite ones if the run diverged).
    ``records``: ``record_fn`` outputs stacked along a leading ``records`` axis (one per plan entry); floating
    records taken after a divergence are NaN.
    ``diverged_step``: int32 scalar, the first step whose loss or updated parameters were not finite, else -1.
    """

    params: object
    records: object
    diverged_step: jax.Array


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 100
    n_records: int = 20  # approximate number of recorded points (the plan is deduplicated)
    plan: str = "log"  # "log" or "linear" spacing of record steps

    def validate(self) -> TrainConfig:
        require(isinstance(self.steps, int) and self.steps >= 1, "train.steps", "an integer >= 1", self.steps)
        require(isinstance(self.n_records, int) and self.n_records >= 2, "train.n_records",
                "an integer >= 2", self.n_records)
        require(self.plan in PLANS, "train.plan", f"one of {PLANS}", self.plan)
        return self


def record_plan(steps: int, n_records: int = 20, spacing: str = "log") -> tuple[int, ...]:
    """Static record steps: 0, then ``n_records - 1`` log- or linearly spaced steps up to ``steps``."""
    if spacing not in PLANS:
        raise ValueError(f"invalid plan={spacing!r}: allowed one of {PLANS}")
    if spacing == "log":
        pts = np.unique(np.round(np.geomspace(1, steps, n_records - 1)).astype(int)) if n_records > 2 \
            else np.array([steps])
    else:
        pts = np.unique(np.round(np.linspace(0, steps, n_records)).astype(int))
    return tuple(sorted({0, *map(int, pts), int(steps)}))


def _epoch_perm(key, epoch, n: int):
    """The sample order of epoch ``epoch``: permutation(fold_in(key, epoch), n)."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def _batch_indices(t, key, n: int, batch_size: int, sampling: str, perm=None):
    """``(idx (b,), weight (b,))`` for step t; weights are 0 on the padding of a last partial batch.

    ``perm``: the current epoch's permutation if the caller carries it (the trainer does, drawing it once per
    epoch); None draws it here."""
    if sampling == "replacement":
        idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, n)
        return idx, jnp.ones((batch_size,), jnp.float32)
    nb = math.ceil(n / batch_size)
    i = t % nb
    if perm is None:
        perm = _epoch_perm(key, t // nb, n)
    pos = i * batch_size + jnp.arange(batch_size)
    valid = pos < n
    idx = perm[jnp.minimum(pos, n - 1)]
    return idx, valid.astype(jnp.float32)


def train(
    loss_fn: Callable,
    params,
    x: jax.Array,
    y: jax.Array,
    optimizer: optax.GradientTransformation,
    *,
    plan: tuple[int, ...],
    record_fn: Callable | None = None,
    key: jax.Array | None = None,
    batch_size: int | None = None,
    sampling: str = "epoch",
    sample_fn: Callable | None = None,
    segments: seg_ops.Segments | None = None,
):
    """Train ``params`` and record metrics on ``plan``.

    Args:
      loss_fn: ``loss_fn(params, x (batch, ...), y (batch, ...)) -> (batch,)`` per-sample losses.
      x, y: training set, leading axis ``samples``.
      optimizer: an optax transformation (built inside the traced function so its hyperparameters are traced).
      plan: static record steps, increasing, starting at 0.
      record_fn: ``record_fn(params) -> pytree``; records are stacked along a leading ``records`` axis.
      key: mini-batch sampling key (unused for full batch).
      sample_fn: online data: ``sample_fn(key_t) -> (xb, yb)`` draws step t's batch from ``fold_in(key, t)``;
        ``x``, ``y`` and ``batch_size`` are then unused (pass None).
      segments: packed runs (:mod:`fa_jax.segments`): every ``params`` leaf has a leading ``neurons`` axis laid
        out by ``segments``, ``loss_fn`` returns ``(batch, runs)`` per-sample losses of every run, and the runs
        train independently: the objective is the sum over runs of each run's mean loss (disjoint parameters: each
        run's own gradient), a run whose loss or updated parameters are not finite freezes alone, and
        ``diverged_step`` is ``(runs,)``. ``record_fn``'s leaves must have a leading ``runs`` axis (a diverged
        run's records after its divergence are NaN). The optimiser must not couple runs (global-norm clipping:
        :func:`fa_jax.optim.make_optimizer` with ``segments``). All runs share ``key``'s mini-batches.

    Returns a :class:`TrainResult` ``(params, records, diverged_step)``; ``records`` has leaf shapes
    ``(len(plan), ...)``.
    """
    plan = tuple(int(p) for p in plan)
    if not plan or plan[0] != 0 or any(b <= a for a, b in zip(plan, plan[1:])):
        raise ValueError(f"invalid plan={plan!r}: allowed a strictly increasing tuple starting at 0")
    if sample_fn is not None:
        if key is None:
            raise ValueError("invalid key=None: online training (sample_fn) needs a PRNG key")
        batch_size, n = None, 1
    else:
        n = x.shape[0]
    if batch_size is not None and not (1 <= batch_size <= n):
        raise ValueError(f"invalid batch_size={batch_size!r}: allowed 1 <= batch_size <= n = {n}")
    record_fn = record_fn or (lambda p: {})

    def objective(p, xb, yb, wb):
        losses = loss_fn(p, xb, yb)
        if wb is None:
            return jnp.mean(losses)
        return jnp.sum(losses * wb) / jnp.sum(wb)

    def packed_objective(p, xb, yb, wb):  # (batch, runs) losses -> (sum over runs, (runs,) per-run means)
        losses = loss_fn(p, xb, yb)
        per = jnp.mean(losses, axis=0) if wb is None else jnp.sum(losses * wb[:, None], axis=0) / jnp.sum(wb)
        return jnp.sum(per), per

    def packed_value_and_grad(*args):  # ((runs,) losses, grads of their sum)
        (_, per), g = jax.value_and_grad(packed_objective, has_aux=True)(*args)
        return per, g

    epochwise = batch_size is not None and sampling == "epoch"
    nb = math.ceil(n / batch_size) if batch_size is not None else 1

    def grad_at(t, p, perm):
        """``(loss, grads, perm)`` of step t (the batch it draws); packed: ``loss`` is ``(runs,)``."""
        vg = jax.value_and_grad(objective) if segments is None else packed_value_and_grad
        if sample_fn is not None:
            xb, yb = sample_fn(jax.random.fold_in(key, t))
            loss, g = vg(p, xb, yb, None)
        elif batch_size is None:
            loss, g = vg(p, x, y, None)
        else:
            if epochwise:
                # A new permutation only at epoch starts (t is not batched, so under vmap this stays a branch):
                # drawing it every step would cost O(n log n) per step, dominating small-batch SGD on large n.
                perm = lax.cond(t % nb == 0, lambda: _epoch_perm(key, t // nb, n), lambda: perm)
            idx, wb = _batch_indices(t, key, n, batch_size, sampling, perm if epochwise else None)
            loss, g = vg(p, x[idx], y[idx], wb)
        return loss, g, perm

    if segments is None:
        def finite_now(tree):  # () bool
            leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]
            return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)

        def keep(ok, new, old):
            return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    else:  # per run: a non-finite run freezes alone (its neurons keep their last finite values)
        def finite_now(tree):  # (runs,) bool
            return seg_ops.finite_by_run(tree, segments)

        def keep(ok, new, old):
            return seg_ops.keep_by_run(ok, new, old, segments)

    def step(t, carry):
        p, s, bad_at, perm = carry
        loss, g, perm = grad_at(t, p, perm)
        updates, s_new = optimizer.update(g, s, p)
        p_new = optax.apply_updates(p, updates)
        # A non-finite loss or update freezes the run at its last finite state (so it cannot poison anything
        # vmapped beside it) and remembers the step; the other runs of a batch are untouched.
        ok = jnp.isfinite(loss) & finite_now(p_new) & (bad_at < 0)
        bad_at = jnp.where(ok | (bad_at >= 0), bad_at, t).astype(jnp.int32)
        return keep(ok, p_new, p), keep(ok, s_new, s), bad_at, perm

    def masked(rec, bad_at):
        def one(a):
            if not jnp.issubdtype(a.dtype, jnp.floating):
                return a
            bad = bad_at >= 0
            if segments is not None:  # bad_at (runs,) against the records' leading runs axis
                bad = bad.reshape((-1,) + (1,) * (a.ndim - 1))
            return jnp.where(bad, jnp.nan, a)

        return jax.tree.map(one, rec)

    def segment(carry, bounds):
        carry = lax.fori_loop(bounds[0], bounds[1], step, carry)
        progress.report(bounds[1], plan[-1])  # one host callback per segment for the whole vmapped batch
        return carry, masked(record_fn(carry[0]), carry[2])

    # A leading empty segment (0, 0) records the initial state inside the scan: record_fn is traced and compiled
    # once, not a second time outside the loop (it can be the largest part of a program: attacks, radii).
    bounds = jnp.asarray(np.stack([(plan[0],) + plan[:-1], plan], axis=1), jnp.int32)
    # The carried permutation is only read after a step with t % nb == 0 has set it: the first step is t = 0 (plan[0]
    # is 0), an epoch start, so the initial value is a placeholder of the right shape (drawing it here too would
    # compile a second permutation sort and never use it). Segments may start mid-epoch: it is carried across them.
    perm0 = jnp.zeros((n,), int) if epochwise else jnp.zeros((1,), jnp.int32)  # int: permutation's own dtype
    bad0 = jnp.full(() if segments is None else (segments.runs,), -1, jnp.int32)
    init = (params, optimizer.init(params), bad0, perm0)
    (params, _, bad_at, _), records = lax.scan(segment, init, bounds)
    return TrainResult(params, records, bad_at)
