"""Optimisers, all from optax, chosen by name; hyperparameters are traced (a new lr never recompiles).

GD vs SGD is a property of the *batching* (``batch_size=None`` is full batch), not of the update rule:
``gd`` and ``sgd`` are both theta <- theta - lr * g; ``gd`` additionally insists on full batches.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from .config import require, traced

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

    def validate(self, n_train: int | None = None) -> OptimConfig:
        require(self.name in OPTIMIZERS, "optim.name", f"one of {OPTIMIZERS}", self.name)
        lr = float(self.lr)
        require(math.isfinite(lr) and lr > 0, "optim.lr", "a finite number > 0", self.lr)
        require(self.sampling in SAMPLING, "optim.sampling", f"one of {SAMPLING}", self.sampling)
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


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """The optax transformation for ``cfg`` (hyperparameters may be tracers).

    Order, as in PyTorch's ``clip_grad_norm_`` + ``weight_decay``: g <- clip(g, clip_norm) (global norm over all
    parameters); g <- g + weight_decay * theta; then the update rule. ``clip_norm = inf`` leaves g unchanged.
    """
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
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.add_decayed_weights(cfg.weight_decay), core)


def make_optimizer_choice(cfg: OptimConfig, names: tuple[str, ...], index) -> optax.GradientTransformation:
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
    txs = [make_optimizer(dataclasses.replace(cfg, name=n)) for n in names]

    def init(params):
        return tuple(tx.init(params) for tx in txs)

    def update(grads, state, params=None):
        outs = [tx.update(grads, s, params) for tx, s in zip(txs, state, strict=True)]
        upd = jax.tree.map(lambda *us: jnp.stack(us)[index], *[o[0] for o in outs])
        return upd, tuple(o[1] for o in outs)

    return optax.GradientTransformation(init, update)
