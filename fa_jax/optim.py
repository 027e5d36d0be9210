"""Optimisers, all from optax, chosen by name; hyperparameters are traced (a new lr never recompiles).

GD vs SGD is a property of the *batching* (``batch_size=None`` is full batch), not of the update rule:
``gd`` and ``sgd`` are both theta <- theta - lr * g; ``gd`` additionally insists on full batches.

The rule itself is static by default (one compiled program per optimiser). ``choices`` makes it a traced axis:
``OptimConfig(name="adam", choices=("gd", "momentum", "adam", "rmsprop", "signgd"))`` runs rule ``name`` through
:func:`make_optimizer_choice` over all of ``choices``, and the engine stacks ``choices.index(name)`` like any other
traced number (:meth:`OptimConfig.traced_now`), so runs that differ only in the rule (and in lr, momentum, b1, b2,
eps, decay, ...) share ONE program. Shapes, batch size and sampling stay static: they cannot be traced. Every run
then computes every rule's update each step (R updates, R optimiser states) and applies its own; its numbers equal
the run under its own static rule to float rounding (tests/test_optim.py, tests/test_sweepfile.py).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from .config import param, require, traced
from .segments import Segments, neuron_leaves, per_neuron, segment_sum

OPTIMIZERS = ("gd", "sgd", "momentum", "nesterov", "adam", "rmsprop", "signgd")
SAMPLING = ("epoch", "replacement")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    name: str = "gd"
    lr: float = traced(1e-3)
    batch_size: int | None = None  # None: full batch (GD); else mini-batches of this size
    sampling: str = "epoch"  # "epoch": fresh permutation per epoch; "replacement": iid indices per step
    momentum: float = traced(0.9)
    b1: float = traced(0.9)
    b2: float = traced(0.999)
    eps: float = traced(1e-8)
    decay: float = traced(0.99)  # RMSProp's squared-gradient decay (PyTorch's default alpha)
    weight_decay: float = traced(0.0)
    clip_norm: float = traced(math.inf)  # global-norm gradient clipping threshold; inf: no clipping
    # () (default): ``name`` is static. Rules of a traced optimiser axis: ``name`` (one of them) is then traced as
    # its index here, and one program trains them all (module docstring). Left out of the static key when unset, so
    # configs without it compile exactly the programs they did before the field existed.
    choices: tuple[str, ...] = param((), empty_ok=True, omit_default=True,
                                     allowed="() or distinct names from " + "/".join(OPTIMIZERS))

    def traced_now(self) -> dict:
        """``{"name": index of name in choices}`` with ``choices`` (the rule is traced), else ``{}``
        (:func:`fa_jax.config.traced_values` / ``static_key`` read it). Inside the engine ``name`` already holds the
        traced index."""
        if not self.choices:
            return {}
        if not isinstance(self.name, str):
            return {"name": self.name}
        require(self.name in tuple(self.choices), "optim.name",
                f"one of optim.choices = {tuple(self.choices)} (the rules of the traced optimiser axis)", self.name)
        return {"name": tuple(self.choices).index(self.name)}

    def validate(self, n_train: int | None = None) -> OptimConfig:
        require(self.name in OPTIMIZERS, "optim.name", f"one of {OPTIMIZERS}", self.name)
        lr = float(self.lr)
        require(math.isfinite(lr) and lr > 0, "optim.lr", "a finite number > 0", self.lr)
        require(self.sampling in SAMPLING, "optim.sampling", f"one of {SAMPLING}", self.sampling)
        if self.choices:
            ch = tuple(self.choices)
            bad = next((n for n in ch if n not in OPTIMIZERS), None)
            require(bad is None, "optim.choices", f"distinct names from {OPTIMIZERS} (unknown: {bad!r})", ch)
            require(len(set(ch)) == len(ch), "optim.choices", f"distinct names from {OPTIMIZERS}", ch)
            require(self.name in ch, "optim.name", f"one of optim.choices = {ch} (the rules of the traced "
                    "optimiser axis)", self.name)
        if self.batch_size is not None:
            require(isinstance(self.batch_size, int) and self.batch_size >= 1, "optim.batch_size",
                    "None (full batch) or an integer >= 1", self.batch_size)
            if n_train is not None:
                require(self.batch_size <= n_train, "optim.batch_size",
                        f"1 <= batch_size <= n_train = {n_train}", self.batch_size)
            require(self.name != "gd", "optim.name",
                    "'sgd' (or another rule) when batch_size is set; 'gd' means full batch", self.name)
        for p in ("momentum", "b1", "b2", "decay"):
            v = float(getattr(self, p))
            require(0.0 <= v < 1.0, f"optim.{p}", "0 <= value < 1", v)
        require(float(self.eps) >= 0, "optim.eps", "a number >= 0", self.eps)
        require(float(self.weight_decay) >= 0, "optim.weight_decay", "a number >= 0", self.weight_decay)
        require(float(self.clip_norm) > 0, "optim.clip_norm", "a number > 0 (inf: no clipping)", self.clip_norm)
        return self


# Which hyperparameters each update rule reads; the others have no effect (a sweep over them would only repeat runs).
USES = {
    "momentum": ("momentum", "nesterov"),
    "b1": ("adam",),
    "b2": ("adam",),
    "eps": ("adam", "rmsprop"),
    "decay": ("rmsprop",),
}


def inert_fields(cfg: OptimConfig) -> dict[str, str]:
    """``{field: reason}`` for the fields of ``cfg`` that cannot change its runs."""
    out = {f: f"only {'/'.join(names)} use{'s' if len(names) == 1 else ''} it, not {cfg.name!r}"
           for f, names in USES.items() if cfg.name not in names}
    if cfg.batch_size is None:
        out["sampling"] = "full batch (batch_size unset) samples nothing"
    return out


def clip_by_run_norm(max_norm, segments: Segments) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` run by run on a packed neuron axis (:mod:`fa_jax.segments`): run k's
    gradient g_k is scaled to norm ``max_norm`` when ``||g_k|| >= max_norm``, ``||g_k||^2`` the sum of squares over
    its neurons' entries of every per-neuron leaf. Shared leaves (no leading ``neurons`` axis) are refused: their
    gradient belongs to no single run."""

    def update(updates, state, params=None):
        del params
        flags = neuron_leaves(updates, segments)
        if not all(flags):
            raise ValueError("invalid params for per-run clipping: every leaf must have a leading neurons axis of "
                             f"length {segments.run_of.shape[0]} (packed runs, fa_jax.segments)")
        leaves, treedef = jax.tree.flatten(updates)
        sq = sum(segment_sum(jnp.sum(jnp.square(a).reshape(a.shape[0], -1), axis=1), segments) for a in leaves)
        norm = jnp.sqrt(sq)  # (runs,)
        trigger = per_neuron(norm < max_norm, segments, fill=True)
        scale = per_neuron(norm, segments, fill=1)

        def clip(a):
            shape = (-1,) + (1,) * (a.ndim - 1)
            return jnp.where(trigger.reshape(shape), a, (a / scale.reshape(shape).astype(a.dtype)) * max_norm)

        return jax.tree.unflatten(treedef, [clip(a) for a in leaves]), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(cfg: OptimConfig, segments: Segments | None = None) -> optax.GradientTransformation:
    """The optax transformation for ``cfg`` (hyperparameters may be tracers).

    Order, as in PyTorch's ``clip_grad_norm_`` + ``weight_decay``: g <- clip(g, clip_norm) (global norm over all
    parameters); g <- g + weight_decay * theta; then the update rule. ``clip_norm = inf`` leaves g unchanged.
    With ``cfg.choices`` the rule is :func:`make_optimizer_choice`'s over them, ``cfg.name`` selecting (a name, or
    its traced index inside the engine). ``segments``: packed runs (:mod:`fa_jax.segments`), the global norm is
    each run's own (:func:`clip_by_run_norm`); every other step is elementwise, so run by run already.
    """
    if cfg.choices:
        choices = tuple(cfg.choices)
        index = choices.index(cfg.name) if isinstance(cfg.name, str) else cfg.name
        return make_optimizer_choice(cfg, choices, index, segments)
    lr = cfg.lr
    if cfg.name in ("gd", "sgd"):
        core = optax.sgd(lr)
    elif cfg.name == "momentum":
        core = optax.sgd(lr, momentum=cfg.momentum)
    elif cfg.name == "nesterov":
        core = optax.sgd(lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.name == "adam":
        core = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif cfg.name == "rmsprop":
        core = optax.rmsprop(lr, decay=cfg.decay, eps=cfg.eps, eps_in_sqrt=False)  # PyTorch: g / (sqrt(nu) + eps)
    elif cfg.name == "signgd":
        core = optax.chain(optax.scale_by_sign(), optax.scale(-lr))
    else:  # validate() catches this first; kept for direct callers
        raise ValueError(f"invalid optim.name={cfg.name!r}: allowed one of {OPTIMIZERS}")
    clip = (optax.clip_by_global_norm(cfg.clip_norm) if segments is None
            else clip_by_run_norm(cfg.clip_norm, segments))
    return optax.chain(clip, optax.add_decayed_weights(cfg.weight_decay), core)


def make_optimizer_choice(cfg: OptimConfig, names: tuple[str, ...], index,
                          segments: Segments | None = None) -> optax.GradientTransformation:
    """Rule ``names[index]`` with ``cfg``'s hyperparameters, ``index`` a (possibly traced) int: ONE compiled
    program then trains every rule of ``names`` (an optimiser axis that never recompiles).

    Every rule is the :func:`make_optimizer` (optax) transformation; all of them are updated on the same gradient
    (their states evolve as if each ran alone) and the update of rule ``index`` is applied:
    ``u = stack(u_0, ..., u_{R-1})[index]``. The extra cost is R optimiser updates per step; under ``vmap`` with a
    batched index a ``lax.switch`` would compute every branch anyway.
    """
    names = tuple(names)
    for n in names:
        require(n in OPTIMIZERS, "optim.names", f"names from {OPTIMIZERS}", n)
    txs = [make_optimizer(dataclasses.replace(cfg, name=n, choices=()), segments) for n in names]

    def init(params):
        return tuple(tx.init(params) for tx in txs)

    def update(grads, state, params=None):
        outs = [tx.update(grads, s, params) for tx, s in zip(txs, state, strict=True)]
        upd = jax.tree.map(lambda *us: jnp.stack(us)[index], *[o[0] for o in outs])
        return upd, tuple(o[1] for o in outs)

    return optax.GradientTransformation(init, update)
