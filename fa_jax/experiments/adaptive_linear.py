"""Linear regression on "natural signals" trained by GD / signGD / Adam / RMSProp (arXiv 2308.06703, spec
``sgd_vs_adaptive.md`` Sec. 2.1, 3): which optimisers put weight on zero-variance (irrelevant) frequencies.

Data (:mod:`fa_jax.data.natural`): x = C xt, xt_k ~ N(0, st_k^2) independent, y = <wt*, xt>, C the orthonormal
DCT-II basis; the top frequencies have st_k = 0. Model y_hat = <w, x> (no bias). Loss 1/2 mean (y_hat - y)^2.
Each step draws a fresh batch of ``batch`` samples from fold_in(key, t) (the paper's online setting), or, with
``exact=True``, uses the population loss R_s(w) = 1/2 sum_k st_k^2 et_k^2 (et = C^T w - wt*) whose gradient is
C diag(st^2) et. ``param_basis="pixel"`` trains w (the sign of signGD/Adam is taken per pixel, as in the paper);
``"dct"`` trains wt directly (the basis control P14: signs in the data eigenbasis).

Recorded on the plan (``records``): ``e_tilde`` (frequency,), ``w_norm`` ||w||, ``irr_norm`` ||wt on zero-variance
frequencies||, ``std_risk`` R_s, ``adv_risk`` R_a (T1, eps = ``eps_adv``, l2) and ``adv_risk_mc`` (a Monte-Carlo
R_a on ``eval_batch`` fresh samples, inner max in closed form (|<e, x>| + eps ||w||)^2, independent of T1) and
``adv_risk_mc_se``, its standard error sd / sqrt(eval_batch) of the per-sample values (spec P6's unit).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ..config import check_fields, require, traced
from ..data.natural import PAPER_W0_TILDE, NaturalSignal, sample_tilde, spectrum, target_tilde
from ..frequency import dct_matrix
from ..optim import OptimConfig, inert_fields, make_optimizer
from ..trainer import TrainConfig, record_plan, train

BASES = ("pixel", "dct")
HI = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class AdaptiveLinearRun:
    data: NaturalSignal = dataclasses.field(default_factory=NaturalSignal.paper_3d)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(name="gd", lr=0.01))
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(steps=200_000, n_records=60))
    batch: int = 5000  # fresh samples per step (static: a shape)
    eval_batch: int = 1000  # fresh samples of the Monte-Carlo adversarial risk at each record
    exact: bool = False  # population gradient instead of sampled batches
    param_basis: str = "pixel"
    # init in DCT coordinates: wt(0) = w0 + init_scale * z / sqrt(d), z ~ N(0, I) from ``seed``; the paper's 3-D
    # init is w0 = (0.01, -0.01, 0.02), init_scale = 0.
    w0: tuple = PAPER_W0_TILDE
    init_scale: float = traced(0.0)
    eps_adv: float = traced(math.sqrt(2.0))
    seed: int = traced(0)

    def validate(self) -> AdaptiveLinearRun:
        check_fields(self)  # types first: the range checks below compare numbers
        self.data.validate()
        self.optim.validate()
        self.train.validate()
        require(self.optim.batch_size is None, "optim.batch_size",
                "None (the online batch size is 'batch'; every step draws fresh samples)", self.optim.batch_size)
        require(isinstance(self.batch, int) and self.batch >= 1, "batch", "an integer >= 1", self.batch)
        require(isinstance(self.eval_batch, int) and self.eval_batch >= 1, "eval_batch", "an integer >= 1",
                self.eval_batch)
        require(self.param_basis in BASES, "param_basis", f"one of {BASES}", self.param_basis)
        require(len(self.w0) in (0, self.data.d), "w0", f"() or a tuple of d = {self.data.d} numbers", self.w0)
        require(float(self.init_scale) >= 0, "init_scale", "a number >= 0", self.init_scale)
        require(float(self.eps_adv) >= 0, "eps_adv", "a number >= 0", self.eps_adv)
        return self

    def inert(self) -> dict[str, str]:
        out = {f"optim.{k}": v for k, v in inert_fields(self.optim).items()}
        if self.exact:
            out["batch"] = "exact=True uses the population gradient"
        return out


def adv_risk_l2(std_risk, w_norm, eps):
    """T1: R_a = R_s + eps sqrt(2/pi) sqrt(2 R_s) ||w|| + eps^2 ||w||^2 / 2 (l2 ball, Gaussian residual)."""
    return std_risk + eps * jnp.sqrt(2.0 / jnp.pi) * jnp.sqrt(2.0 * std_risk) * w_norm + 0.5 * eps ** 2 * w_norm ** 2


def run_adaptive_linear(cfg: AdaptiveLinearRun) -> dict:
    """One run. Returns ``{"records": {...}, "plan", "w_tilde" (frequency,), "w0_tilde", "diverged_step", ...}``."""
    dc = cfg.data
    d = dc.d
    dt = jnp.result_type(float)
    c = jnp.asarray(dct_matrix(d), dt)  # (position, frequency)
    st = spectrum(dc, dt)
    wt_star = target_tilde(dc, dt)
    relevant = st > 0
    key = jax.random.PRNGKey(cfg.seed)
    k_init, k_batch, k_eval = jax.random.split(key, 3)
    w0t = jnp.asarray(cfg.w0, dt) if cfg.w0 else jnp.zeros((d,), dt)
    w0t = w0t + cfg.init_scale * jax.random.normal(k_init, (d,), dt) / math.sqrt(d)

    # parameters live in the pixel basis (w) or the DCT basis (wt); to_tilde maps them to wt
    if cfg.param_basis == "pixel":
        params0 = {"w": jnp.matmul(c, w0t, precision=HI)}

        def to_tilde(p):
            return jnp.matmul(p["w"], c, precision=HI)
    else:
        params0 = {"w": w0t}

        def to_tilde(p):
            return p["w"]

    def std_risk(p):
        e = to_tilde(p) - wt_star
        return 0.5 * jnp.sum(st ** 2 * e ** 2)

    if cfg.exact:
        def loss_fn(p, xb, yb):  # the population loss (its gradient is the exact C diag(st^2) et)
            return jnp.broadcast_to(std_risk(p), xb.shape[:1])

        x_fixed, y_fixed, sample_fn = jnp.zeros((1, d), dt), jnp.zeros((1,), dt), None
    else:
        def loss_fn(p, xtb, yb):  # batches are drawn in DCT coordinates: <w, x> = <wt, xt> exactly
            return 0.5 * (jnp.matmul(xtb, to_tilde(p), precision=HI) - yb) ** 2

        x_fixed = y_fixed = None

        def sample_fn(k):
            return sample_tilde(k, dc, cfg.batch, dt)

    def record_fn(p):
        wt = to_tilde(p)
        e = wt - wt_star
        rs = std_risk(p)
        wn = jnp.linalg.norm(wt)
        # Monte Carlo R_a on fresh samples: max over ||delta|| <= eps of (<w, x + delta> - y)^2 / 2
        # = (|<e, xt>| + eps ||w||)^2 / 2 (the same key at every record: a common-random-numbers estimate)
        xt, _ = sample_tilde(k_eval, dc, cfg.eval_batch, dt)
        r = jnp.matmul(xt, e, precision=HI)
        v = 0.5 * (jnp.abs(r) + cfg.eps_adv * wn) ** 2  # (eval_batch,) per-sample inner maxima
        se = jnp.std(v, ddof=1) / math.sqrt(cfg.eval_batch) if cfg.eval_batch > 1 else jnp.asarray(jnp.inf, dt)
        return {"e_tilde": e, "w_norm": wn, "irr_norm": jnp.linalg.norm(jnp.where(relevant, 0.0, wt)),
                "std_risk": rs, "adv_risk": adv_risk_l2(rs, wn, cfg.eps_adv), "adv_risk_mc": jnp.mean(v),
                "adv_risk_mc_se": se}

    plan = record_plan(cfg.train.steps, cfg.train.n_records, cfg.train.plan)
    params, records, bad = train(loss_fn, params0, x_fixed, y_fixed, make_optimizer(cfg.optim), plan=plan,
                                 record_fn=record_fn, key=k_batch, sample_fn=sample_fn)
    return {"records": records, "plan": jnp.asarray(plan), "w_tilde": to_tilde(params), "w0_tilde": w0t,
            "sigma_tilde": st, "w_star_tilde": wt_star, "diverged_step": bad, "diverged": bad >= 0}
