"""One run of the support-learning experiment (arXiv 2406.11110), as a pure function of its config.

``run_sgd_support(cfg)`` draws the support data (:mod:`fa_jax.data.support`), initialises the bias-free MLP
(:mod:`fa_jax.models.mlp`), trains it with the engine's :func:`fa_jax.trainer.train` on the per-sample loss
l_i = (f(x_i) - y_i)^2 (MSE **without** 1/2) and records, on the static plan, for W = K_1[s:, :] (irrelevant block):

* ``irr`` ||W||_F / ||W(0)||_F and ``rel`` (the same for K_1[:s, :]);
* ``loss``: the full-batch training MSE = E[r^2] (the mean squared residual), ``test``: test MSE vs clean targets;
* ``e2e_irr``: mean_i ||grad_x f(x_i)[s:]|| on the test inputs (the end-to-end irrelevant coefficient's norm for
  linear nets; the input-gradient norm for ReLU nets);
* ``G`` = mean_i ||grad_theta f(x_i)||^2, ``u`` = <W, grad_W G> / ||W||^2 (T3), ``F`` = ||K_3 ... K_L||^2 (torch
  ||W_L ... W_3||^2), ``sample_g2`` = mean_i ||grad l_i||^2, ``full_g2`` = ||grad L||^2 (for the clip factor);
* running (block) means over every step of the segment that ends at the record (spec Sec. 2.4; single-step
  snapshots alternate in a 2-cycle): ``loss_mean`` = mean_t E_chunk(t)[r^2] (a rotating chunk of
  min(b, ``stat_chunk``) training points, see :func:`running_means`), ``clip2_mean`` = mean_t min(1, c^2 /
  ||g_B(t)||^2) (the squared clip scale actually applied), ``gb2_mean`` = mean_t ||g_B(t)||^2.

Keys: data and init from ``seed`` (fold_in(PRNGKey(seed), 1) and 2: every optimiser of one seed starts from the same
init), mini-batch order from ``traj_seed`` (fold_in(PRNGKey(traj_seed), 3)). A run depends only on its own config.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..config import check_fields, require, traced
from ..data.support import SupportData, make_support_data
from ..models.mlp import MLP, apply_mlp, init_mlp, input_gradients, per_sample_grad_sq_norm
from ..optim import OptimConfig, make_optimizer
from ..trainer import TrainConfig, record_plan, train

__all__ = ["SupportRun", "converged_from", "decay_window", "measured_decay", "run_sgd_support", "running_means",
           "squared_error"]


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
    stat_chunk: int = 256  # running-mean chunk: E[r^2] on min(b, stat_chunk) rotating training points per step

    def validate(self) -> SupportRun:
        check_fields(self)  # types first: the range checks below compare numbers
        data = self.data.validate()
        model = self.model.validate()
        self.optim.validate(data.n_train)
        self.train.validate()
        require(int(self.seed) >= 0, "seed", "an integer >= 0", self.seed)
        require(int(self.traj_seed) >= 0, "traj_seed", "an integer >= 0", self.traj_seed)
        require(isinstance(self.stat_chunk, int) and self.stat_chunk >= 1, "stat_chunk", "an integer >= 1",
                self.stat_chunk)
        return dataclasses.replace(self, data=data, model=model)


def squared_error(f: jax.Array, y: jax.Array) -> jax.Array:
    """Per-sample loss ``(f - y)^2`` (no 1/2): ``f (batch, 1)``, ``y (batch,)`` -> ``(batch,)``."""
    return (f[:, 0] - y) ** 2


STAT_KEYS = ("loss", "clip2", "gb2")


def running_means(inner: optax.GradientTransformation, plan, clip_norm, chunk_loss) -> optax.GradientTransformation:
    """Wrap ``inner`` (acting on the model parameters ``p[0]``) so that the parameter pytree ``p = (model, acc)``
    carries block means, updated at EVERY step t (the trainer's ``record_fn`` sees only parameters):

        acc_k = mean_{t in [plan[k-1], plan[k])} x(t),   x(t) = (chunk_loss(theta_t, t), min(1, c^2/||g_t||^2), ||g_t||^2)

    with theta_t the parameters before step t's update and g_t that step's (mini-batch, unclipped) gradient; the
    record at plan[k] reads acc_k (the mean over the segment that ends there). The block restarts when t is a plan
    entry (running mean m <- m + (x - m)/n). ``acc`` receives a zero gradient (the loss does not read it) and is not
    clipped: ``inner`` (clip, weight decay, update) sees exactly the model gradient. ``clip_norm = inf``: clip2 = 1.
    """
    starts = jnp.asarray(plan[:-1], jnp.int32)

    def init(p):
        return inner.init(p[0]), jnp.zeros((), jnp.int32)

    def update(g, state, p):
        s_in, t = state
        upd, s_in = inner.update(g[0], s_in, p[0])
        acc = p[1]
        gb2 = sum(jnp.sum(a ** 2) for a in jax.tree.leaves(g[0]))
        x = {"loss": chunk_loss(p[0], t), "gb2": gb2,
             "clip2": jnp.minimum(1.0, jnp.asarray(clip_norm, gb2.dtype) ** 2
                                  / jnp.maximum(gb2, jnp.finfo(gb2.dtype).tiny))}
        start = jnp.any(t == starts)
        n = jnp.where(start, 1.0, acc["n"] + 1.0)
        new = {k: jnp.where(start, x[k], acc[k] + (x[k] - acc[k]) / n) for k in STAT_KEYS}
        new["n"] = n
        d_acc = {k: (new[k] - acc[k]).astype(acc[k].dtype) for k in acc}
        return (upd, d_acc), (s_in, t + 1)

    return optax.GradientTransformation(init, update)


def run_sgd_support(cfg: SupportRun) -> dict:
    """Train one net and record the support metrics. Shapes: R records, d inputs, h1 first-layer width."""
    dc, mc = cfg.data, cfg.model
    s, act = dc.s, mc.activation
    data = make_support_data(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1), dc)
    params0 = init_mlp(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 2), mc, dc.d, 1)
    k_batch = jax.random.fold_in(jax.random.PRNGKey(cfg.traj_seed), 3)
    xtr, ytr = data["train"]["x"], data["train"]["y"]
    xte, yte = data["test"]["x"], data["test"]["y"]
    n_tr = xtr.shape[0]
    m = min(cfg.optim.batch_size or n_tr, cfg.stat_chunk, n_tr)  # rotating chunk size (static)

    def loss_fn(p, x, y):  # p = (model kernels, running-mean accumulators); the loss reads the model only
        return squared_error(apply_mlp(p[0], x, act), y)

    def chunk_loss(k, t):
        """E[r^2] over training points (t m + j) mod N, j < m: over N/m consecutive steps every point once."""
        if m == n_tr:
            return jnp.mean(squared_error(apply_mlp(k, xtr, act), ytr))
        idx = (t * m + jnp.arange(m)) % n_tr
        return jnp.mean(squared_error(apply_mlp(k, xtr[idx], act), ytr[idx]))

    irr0 = jnp.linalg.norm(params0[0][s:])
    rel0 = jnp.linalg.norm(params0[0][:s])

    def grad_energy(p):
        return jnp.mean(per_sample_grad_sq_norm(p, xtr, act))

    def record_fn(pa):
        p, acc = pa
        w = p[0][s:]
        wn2 = jnp.sum(w ** 2)
        g_w = jax.grad(lambda k1: grad_energy([k1, *p[1:]]))(p[0])[s:]
        r = apply_mlp(p, xtr, act)[:, 0] - ytr
        g_f = per_sample_grad_sq_norm(p, xtr, act)
        full = jax.grad(lambda q: jnp.mean(squared_error(apply_mlp(q, xtr, act), ytr)))(p)
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
            "loss_mean": acc["loss"],
            "clip2_mean": acc["clip2"],
            "gb2_mean": acc["gb2"],
        }

    plan = record_plan(cfg.train.steps, cfg.train.n_records, cfg.train.plan)
    opt = running_means(make_optimizer(cfg.optim), plan, cfg.optim.clip_norm, chunk_loss)
    # the step-0 record is the init's full-batch snapshot (a block of one point)
    loss0, g0 = jax.value_and_grad(lambda q: jnp.mean(squared_error(apply_mlp(q, xtr, act), ytr)))(params0)
    g02 = sum(jnp.sum(g ** 2) for g in g0)
    acc0 = {"loss": loss0, "clip2": jnp.minimum(1.0, jnp.asarray(cfg.optim.clip_norm, g02.dtype) ** 2
                                                / jnp.maximum(g02, jnp.finfo(g02.dtype).tiny)),
            "gb2": g02, "n": jnp.ones((), loss0.dtype)}
    (params, _), records, diverged_step = train(loss_fn, (params0, acc0), xtr, ytr, opt, plan=plan,
                                                record_fn=record_fn, key=k_batch, batch_size=cfg.optim.batch_size,
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


def converged_from(steps, values, rel: float = 0.01, min_fraction: float = 0.5):
    """Convergence detection on a recorded curve (host-side numpy): the first record step t_c from which every later
    record stays within a relative band ``rel`` of the final value, |v(t_j) / v(T) - 1| <= rel for all t_j >= t_c.

    Returns t_c, or None when the curve has not converged: t_c > ``min_fraction`` * T (the stationary stretch must
    cover at least the last half of the run), or a non-finite value. Used on the full-batch loss: a run in a
    converging regime sits on an exact fixed point (GD: loss = mean eps_i^2; GD + wd: its equilibrium); a run above
    the stability threshold alternates (a 2-cycle: consecutive records differ by tens of %), so it never converges.
    """
    steps, v = np.asarray(steps, float), np.asarray(values, float)
    if not np.all(np.isfinite(v)) or v[-1] == 0:
        return None
    ok = np.abs(v / v[-1] - 1.0) <= rel
    bad = np.nonzero(~ok)[0]
    k = int(bad[-1]) + 1 if bad.size else 0
    if k >= len(steps) or steps[k] > min_fraction * steps[-1]:
        return None
    return float(steps[k])


def decay_window(steps, ratio, t0: float, rise: float, min_drop: float) -> dict:
    """Phase-2 decay window of one run on its records (host-side numpy), ending at its detected plateau.

    t_a = the first record >= t0. The plateau (the stationary noise floor, spec P11) starts at the running minimum
    of the ratio from t_a at the first record that rises above that running minimum by more than a factor
    (1 + ``rise``): a decaying curve never does, a curve on its floor fluctuates. t_b = the plateau's start, or the
    last record when no rise is seen. drop = ln r(t_a) - ln r(t_b); ``resolved`` iff drop >= ``min_drop``;
    ``on_floor`` iff a plateau was detected and the run is unresolved (its window sits on the floor: it carries no
    decay rate and is excluded from rate fits).
    """
    steps, r = np.asarray(steps, float), np.asarray(ratio, float)
    ia = min(int(np.searchsorted(steps, t0)), len(steps) - 1)
    out = {"t_a": float(steps[ia]), "t_b": float(steps[ia]), "drop": 0.0, "resolved": False, "plateau": False,
           "on_floor": False}
    if not np.all(np.isfinite(r[ia:])) or r[ia] <= 0:
        return out
    ib, plateau = len(r) - 1, False
    i_min = ia
    for j in range(ia + 1, len(r)):
        if r[j] > (1.0 + rise) * r[i_min]:
            ib, plateau = i_min, True
            break
        if r[j] < r[i_min]:
            i_min = j
    drop = float(np.log(r[ia]) - np.log(r[ib])) if ib > ia else 0.0
    resolved = bool(ib > ia and drop >= min_drop)
    out.update({"t_b": float(steps[ib]), "drop": drop, "resolved": resolved, "plateau": plateau,
                "on_floor": bool(plateau and not resolved)})
    return out
