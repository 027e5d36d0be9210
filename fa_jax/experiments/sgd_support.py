"""One run of the support-learning experiment (arXiv 2406.11110), as a pure function of its config.

``run_sgd_support(cfg)`` draws the support data (:mod:`fa_jax.data.support`), initialises the bias-free MLP
(:mod:`fa_jax.models.mlp`), trains it with the engine's :func:`fa_jax.trainer.train` on the per-sample loss
l_i = (f(x_i) - y_i)^2 (MSE **without** 1/2) and records, on the static plan, for W = K_1[s:, :] (irrelevant block):

* ``irr`` ||W||_F / ||W(0)||_F and ``rel`` (the same for K_1[:s, :]);
* ``loss``: the full-batch training MSE = E[r^2] (the mean squared residual), ``test``: test MSE vs clean targets;
* ``e2e_irr``: mean_i ||grad_x f(x_i)[s:]|| on the test inputs (the end-to-end irrelevant coefficient's norm for
  linear nets; the input-gradient norm for ReLU nets);
* ``G`` = mean_i ||grad_theta f(x_i)||^2, ``u`` = <W, grad_W G> / ||W||^2 (T3), ``F`` = ||K_3 ... K_L||^2 (torch
  ||W_L ... W_3||^2), ``sample_g2`` = mean_i ||grad l_i||^2, ``full_g2`` = ||grad L||^2 (for the clip factor).

Keys: data and init from ``seed`` (fold_in(PRNGKey(seed), 1) and 2: every optimiser of one seed starts from the same
init), mini-batch order from ``traj_seed`` (fold_in(PRNGKey(traj_seed), 3)). A run depends only on its own config.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..config import require, traced
from ..data.support import SupportData, make_support_data
from ..models.mlp import MLP, apply_mlp, init_mlp, input_gradients, per_sample_grad_sq_norm
from ..optim import OptimConfig, make_optimizer
from ..trainer import TrainConfig, record_plan, train

__all__ = ["SupportRun", "measured_decay", "run_sgd_support", "squared_error"]


@dataclasses.dataclass(frozen=True)
class SupportRun:
    data: SupportData = dataclasses.field(default_factory=SupportData)
    model: MLP = dataclasses.field(default_factory=MLP)
    optim: OptimConfig = dataclasses.field(
        default_factory=lambda: OptimConfig(name="sgd", lr=0.1, batch_size=32, clip_norm=1.0))
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(steps=200_000, n_records=60, plan="log"))
    seed: int = traced(0)  # data + init
    traj_seed: int = traced(0)  # mini-batch order

    def validate(self) -> SupportRun:
        data = self.data.validate()
        model = self.model.validate()
        self.optim.validate(data.n_train)
        self.train.validate()
        require(int(self.seed) >= 0, "seed", "an integer >= 0", self.seed)
        require(int(self.traj_seed) >= 0, "traj_seed", "an integer >= 0", self.traj_seed)
        return dataclasses.replace(self, data=data, model=model)


def squared_error(f: jax.Array, y: jax.Array) -> jax.Array:
    """Per-sample loss ``(f - y)^2`` (no 1/2): ``f (batch, 1)``, ``y (batch,)`` -> ``(batch,)``."""
    return (f[:, 0] - y) ** 2


def run_sgd_support(cfg: SupportRun) -> dict:
    """Train one net and record the support metrics. Shapes: R records, d inputs, h1 first-layer width."""
    dc, mc = cfg.data, cfg.model
    s, act = dc.s, mc.activation
    data = make_support_data(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1), dc)
    params0 = init_mlp(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 2), mc, dc.d, 1)
    k_batch = jax.random.fold_in(jax.random.PRNGKey(cfg.traj_seed), 3)
    xtr, ytr = data["train"]["x"], data["train"]["y"]
    xte, yte = data["test"]["x"], data["test"]["y"]

    def loss_fn(p, x, y):
        return squared_error(apply_mlp(p, x, act), y)

    irr0 = jnp.linalg.norm(params0[0][s:])
    rel0 = jnp.linalg.norm(params0[0][:s])

    def grad_energy(p):
        return jnp.mean(per_sample_grad_sq_norm(p, xtr, act))

    def record_fn(p):
        w = p[0][s:]
        wn2 = jnp.sum(w ** 2)
        g_w = jax.grad(lambda k1: grad_energy([k1, *p[1:]]))(p[0])[s:]
        r = apply_mlp(p, xtr, act)[:, 0] - ytr
        g_f = per_sample_grad_sq_norm(p, xtr, act)
        full = jax.grad(lambda q: jnp.mean(loss_fn(q, xtr, ytr)))(p)
        down = p[2] if len(p) > 2 else jnp.ones((1, 1), w.dtype)
        for k in p[3:]:
            down = down @ k
        return {
            "irr": jnp.sqrt(wn2) / irr0,
            "rel": jnp.linalg.norm(p[0][:s]) / rel0,
            "loss": jnp.mean(r ** 2),
            "test": jnp.mean((apply_mlp(p, xte, act)[:, 0] - yte) ** 2),
            "e2e_irr": jnp.mean(jnp.linalg.norm(input_gradients(p, xte, act)[:, s:], axis=1)),
            "G": jnp.mean(g_f),
            "u": jnp.sum(w * g_w) / jnp.maximum(wn2, jnp.finfo(w.dtype).tiny),
            "F": jnp.sum(down ** 2),
            "sample_g2": jnp.mean(4.0 * r ** 2 * g_f),
            "full_g2": sum(jnp.sum(g ** 2) for g in full),
        }

    plan = record_plan(cfg.train.steps, cfg.train.n_records, cfg.train.plan)
    opt = make_optimizer(cfg.optim)
    params, records, diverged_step = train(loss_fn, params0, xtr, ytr, opt, plan=plan, record_fn=record_fn,
                                           key=k_batch, batch_size=cfg.optim.batch_size,
                                           sampling=cfg.optim.sampling)
    final_irr = jnp.linalg.norm(params[0][s:]) / irr0
    return {
        "records": records,
        "plan": jnp.asarray(plan),
        "diverged_step": diverged_step,
        "diverged": diverged_step >= 0,
        "irr_norm0": irr0,
        "support_score": 1.0 - final_irr,  # fraction of the irrelevant first-layer norm removed
        "w1": params[0],  # (d, h1) final first-layer kernel
        "w1_init": params0[0],
    }


def measured_decay(steps, ratio, t0: float, floor: float = 0.05, min_drop: float = 0.1):
    """Phase-2 decay of ln ratio on the records (host-side numpy).

    Window: from the first record t_a >= t0 to the last record t_b whose ratio is still >= ``floor`` (below it
    fluctuation floors dominate). Returns ``(t_a, t_b, drop, resolved)`` with drop = ln r(t_a) - ln r(t_b);
    ``resolved`` iff t_b > t_a and drop >= ``min_drop`` (else the drop is only an upper bound on the decay).
    """
    steps, ratio = np.asarray(steps, float), np.asarray(ratio, float)
    ia = int(np.searchsorted(steps, t0))
    ia = min(ia, len(steps) - 1)
    ok = np.nonzero((ratio >= floor) & np.isfinite(ratio))[0]
    ok = ok[ok >= ia]
    ib = int(ok[-1]) if ok.size else ia
    if not np.isfinite(ratio[ia]) or ib <= ia:
        return float(steps[ia]), float(steps[ia]), 0.0, False
    drop = float(np.log(ratio[ia]) - np.log(ratio[ib]))
    return float(steps[ia]), float(steps[ib]), drop, bool(drop >= min_drop)
