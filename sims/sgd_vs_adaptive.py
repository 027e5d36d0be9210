"""SGD vs adaptive methods on linear regression over natural signals (Ma, Pan, Farahmand, arXiv 2308.06703):
``fa-jax run sgd-vs-adaptive``. Spec: ../shared/specs/sgd_vs_adaptive.md (Sec. 2.1, 3, 5: T1-T3, P1-P3, P6, P7, P14).

config -> ONE sweep, in float64 (the spec's precision rule): the paper's 3-D problem with fresh batches for GD,
signGD, Adam, RMSProp (Fig. 5), the same with exact gradients, signGD with signs in the DCT basis (P14), Adam with a
large eps (P7), S1 (signGD's irrelevant displacement over (st_1^2/st_0^2, |et_1(0)|)) and S2 (a d-dimensional
natural signal with a fraction p of zero-variance frequencies x optimiser x seeds) -> checks against
``fa_jax.theory.sgd_vs_adaptive`` -> figures + ``summary.json``. The deep-network half of the paper is not here yet.
"""
from __future__ import annotations

import dataclasses
import math
import os

import jax
import numpy as np

from fa_jax.config import require
from fa_jax.data.natural import PAPER_W0_TILDE, NaturalSignal
from fa_jax.experiments.adaptive_linear import AdaptiveLinearRun, run_adaptive_linear
from fa_jax.optim import OptimConfig
from fa_jax.plotting.sgd_vs_adaptive import adaptive_figures
from fa_jax.summary import Check, finish
from fa_jax.sweep import run_labelled
from fa_jax.theory import sgd_vs_adaptive as T
from fa_jax.trainer import TrainConfig

SIM = "sgd-vs-adaptive"
OPTS = ("gd", "signgd", "adam", "rmsprop")


@dataclasses.dataclass(frozen=True)
class AdaptiveSim:
    lr: float = 0.01
    steps: int = 200_000
    batch: int = 5000
    eval_batch: int = 2000
    n_records: int = 90
    seeds: int = 2  # batch streams of the sampled 3-D runs
    eps_adv: float = math.sqrt(2.0)
    adam_large_eps: float = 0.1  # P7: Adam with eps above the gradient scale behaves like GD
    control_steps: int = 200_000  # exact-gradient controls (large-eps Adam must converge to compare R_a)
    # S1: signGD (and Adam) with exact gradients over the data's st_1^2/st_0^2 = 4^-alpha and |et_1(0)| ~ w_scale 2^alpha
    # |B(0)|/|A(0)| = sqrt(3/2) 2^-alpha at the paper's init: alpha < 0.29 is the side where T3 does not apply
    s1_alphas: tuple = (0.1, 0.2, 0.5, 0.75, 1.0, 1.25, 1.5)
    s1_wscales: tuple = (1.0, 2.5, 5.0, 10.0)
    s1_steps: int = 20_000
    # S2: d-dimensional natural signal, exact gradients, random init
    s2_d: int = 64
    s2_fracs: tuple = (0.0, 0.125, 0.25, 0.5, 0.75)
    s2_seeds: int = 4
    s2_steps: int = 20_000
    s2_sigma0: float = 1.0
    s2_alpha: float = 0.5
    s2_init: float = 0.5
    s2_opts: tuple = OPTS

    def validate(self) -> AdaptiveSim:
        require(self.lr > 0 and math.isfinite(self.lr), "lr", "a finite number > 0", self.lr)
        for name in ("steps", "s1_steps", "s2_steps", "control_steps"):
            require(isinstance(getattr(self, name), int) and getattr(self, name) >= 1000, name,
                    "an integer >= 1000 (signGD's phases end near t = 650 at lr = 0.01)", getattr(self, name))
        for name in ("batch", "eval_batch", "seeds", "s2_seeds", "s2_d"):
            require(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "an integer >= 1",
                    getattr(self, name))
        require(all(0 <= p < 1 for p in self.s2_fracs) and len(self.s2_fracs) >= 2, "s2_fracs",
                "at least 2 fractions in [0, 1)", self.s2_fracs)
        require(set(self.s2_opts) <= set(OPTS) and "gd" in self.s2_opts, "s2_opts",
                f"a tuple of optimisers from {OPTS} including 'gd'", self.s2_opts)
        require(len(self.s1_alphas) >= 2 and len(self.s1_wscales) >= 1, "s1_alphas/s1_wscales",
                "at least 2 alphas and 1 w_scale", (self.s1_alphas, self.s1_wscales))
        return self


PRESETS = {
    "default": AdaptiveSim(),
    "quick": AdaptiveSim(steps=4000, batch=5000, eval_batch=1000, n_records=50, seeds=1, control_steps=50_000,
                         s1_alphas=(0.1, 0.5, 1.0, 1.5), s1_wscales=(2.5, 5.0), s1_steps=4000,
                         s2_d=16, s2_fracs=(0.0, 0.25, 0.5), s2_seeds=2, s2_steps=4000, s2_opts=("gd", "signgd")),
}


def _run(s: AdaptiveSim, opt: str, *, exact: bool, steps: int, data: NaturalSignal | None = None, seed: int = 0,
         basis: str = "pixel", eps: float = 1e-8, w0=PAPER_W0_TILDE, init_scale: float = 0.0) -> AdaptiveLinearRun:
    return AdaptiveLinearRun(
        data=data or NaturalSignal.paper_3d(),
        optim=OptimConfig(name=opt, lr=s.lr, eps=eps, b1=0.9, b2=0.999, decay=0.99),
        train=TrainConfig(steps=steps, n_records=s.n_records, plan="log"),
        batch=s.batch, eval_batch=s.eval_batch, exact=exact, param_basis=basis, w0=tuple(w0),
        init_scale=init_scale, eps_adv=s.eps_adv, seed=seed,
    ).validate()


def build_runs(s: AdaptiveSim) -> dict[str, list]:
    runs: dict[str, list] = {"sampled": [], "exact": [], "control": [], "s1": [], "s2": []}
    for opt in OPTS:
        for seed in range(s.seeds):
            runs["sampled"].append(({"opt": opt, "seed": seed}, _run(s, opt, exact=False, steps=s.steps, seed=seed)))
        runs["exact"].append(({"opt": opt}, _run(s, opt, exact=True, steps=s.steps)))
    runs["control"].append(({"what": "signgd_dct"}, _run(s, "signgd", exact=True, steps=s.steps, basis="dct")))
    runs["control"].append(({"what": "adam_large_eps"},
                            _run(s, "adam", exact=True, steps=s.control_steps, eps=s.adam_large_eps)))
    for opt in ("signgd", "adam"):
        for a in s.s1_alphas:
            for ws in s.s1_wscales:
                data = dataclasses.replace(NaturalSignal.paper_3d(), alpha=a, w_scale=ws)
                runs["s1"].append(({"opt": opt, "alpha": a, "w_scale": ws},
                                   _run(s, opt, exact=True, steps=s.s1_steps, data=data)))
    for opt in s.s2_opts:
        for p in s.s2_fracs:
            for seed in range(s.s2_seeds):
                data = NaturalSignal(d=s.s2_d, alpha=s.s2_alpha, sigma0=s.s2_sigma0, frac_irrelevant=p,
                                     w_scale=1.0, target="flat")
                runs["s2"].append(({"opt": opt, "p": p, "seed": seed},
                                   _run(s, opt, exact=True, steps=s.s2_steps, data=data, seed=seed, w0=(),
                                        init_scale=s.s2_init)))
    return runs


def _final(r, name):
    return np.asarray(r["records"][name])[-1]


def _slope(steps, y, lo, hi):
    m = (steps >= lo) & (steps <= hi)
    if m.sum() < 3:
        return float("nan")
    return float(np.polyfit(steps[m], y[m], 1)[0])


def analyse(s: AdaptiveSim, res: dict) -> tuple[list[Check], dict]:
    st = np.array([0.1, 0.05, 0.0])
    ws = np.array([5.0, 10.0, 0.0])
    w0 = np.array(PAPER_W0_TILDE)
    e0 = w0 - ws
    checks: list[Check] = []
    metrics: dict = {}
    samp = {lab["opt"]: [r for lb, r in res["sampled"] if lb["opt"] == lab["opt"]] for lab, _ in res["sampled"]}
    exact = {lab["opt"]: r for lab, r in res["exact"]}
    ctrl = {lab["what"]: r for lab, r in res["control"]}

    # P1: GD never moves the irrelevant weight (fresh batches, float64), and follows T2's exact power elsewhere
    gd_move = max(float(np.max(np.abs(np.asarray(r["records"]["e_tilde"])[:, 2] - e0[2]))) for r in samp["gd"])
    checks.append(Check("adaptive.p1.gd_irrelevant_invariance", gd_move, 0.0, 1e-6, "at_most", "derived",
                        "T2: GD keeps wt_2 = wt_2(0) exactly, even with sampled batches"))
    t2_w1 = float(T.gd_error(e0, st, s.lr, s.steps)[1] + ws[1])
    w1 = float(np.mean([r["w_tilde"][1] for r in samp["gd"]]))
    checks.append(Check("adaptive.p1.gd_w1", w1, t2_w1, 0.02, "abs", "derived",
                        "T2: et_1(T) = (1 - lr st_1^2)^T et_1(0) (sampled batches)"))
    # T1 vs the Monte-Carlo adversarial risk on fresh samples (every run of the 3-D problem and of S2)
    rel = []
    for group in ("sampled", "exact", "s2"):
        for _, r in res[group]:
            mc, t1 = _final(r, "adv_risk_mc"), _final(r, "adv_risk")
            rel.append(abs(mc - t1) / t1)
    checks.append(Check("adaptive.t1.adv_risk_formula_vs_monte_carlo", float(np.max(rel)), 0.0, 0.05, "at_most",
                        "derived", "T1: R_a = R_s + eps sqrt(2/pi) sqrt(2 R_s) ||w|| + eps^2 ||w||^2 / 2"))
    # P2: signGD's Phase-2 drift of the irrelevant weight (exact gradients)
    t1, t2 = (float(v) for v in T.signgd_phase_times(e0, st, s.lr))
    rec = exact["signgd"]["records"]
    steps = np.asarray(exact["signgd"]["plan"], float)
    w2 = np.asarray(rec["e_tilde"])[:, 2]
    slope = _slope(steps, w2, t1 + 0.1 * (t2 - t1), t2 - 0.1 * (t2 - t1))
    checks.append(Check("adaptive.p2.signgd_drift_rate", slope, float(T.signgd_drift_rate(e0, s.lr)), 0.05, "rel",
                        "derived", f"T3 Phase 2 (t1 = {t1:.0f}, t2 = {t2:.0f}): wt_2 drifts 2 lr sgn(et_0)/sqrt6"))
    # P3: signGD end point (exact within 2%, sampled batches within 6%)
    pred_w2 = float(T.signgd_final_tilde(w0, ws, st)[2])
    checks.append(Check("adaptive.p3.signgd_final_w2_exact", float(exact["signgd"]["w_tilde"][2]), pred_w2, 0.02,
                        "rel", "derived", "T3: wt_2(inf) = wt_2(0) + sgn(et_0) sqrt3 (st_1/st_0)^2 |et_1(0)|"))
    w2_s = float(np.mean([r["w_tilde"][2] for r in samp["signgd"]]))
    checks.append(Check("adaptive.p3.signgd_final_w2_sampled", w2_s, pred_w2, 0.06, "rel", "derived",
                        f"T3 with {s.batch}-sample batches"))
    # P7: ordering of the adversarial risk at the end (exact gradients), and Adam with a large eps ~ GD
    ra = {o: float(_final(exact[o], "adv_risk")) for o in OPTS}
    rs = {o: float(_final(exact[o], "std_risk")) for o in OPTS}
    ordered = ra["gd"] < ra["signgd"] < ra["adam"] < ra["rmsprop"]
    checks.append(Check("adaptive.p7.adv_risk_ordering", float(ordered), 1.0, 0.0, "abs", "derived",
                        "R_a(GD) < R_a(signGD) < R_a(Adam) < R_a(RMSProp)"))
    adaptive_rs = max(rs[o] for o in ("signgd", "adam", "rmsprop"))
    checks.append(Check("adaptive.p7.adaptive_std_risk", adaptive_rs, 0.0, 1e-5, "at_most", "derived",
                        "the adaptive methods reach R_s < 1e-5 (equal standard risk, different R_a)"))
    big = ctrl["adam_large_eps"]
    gd_limit = float(T.adv_risk_zero_std(np.linalg.norm(T.gd_limit_tilde(w0, ws, st)), s.eps_adv))
    checks.append(Check("adaptive.p7.adam_large_eps_adv_risk", float(_final(big, "adv_risk")), gd_limit, 0.03,
                        "rel", "derived", f"T4: Adam with eps = {s.adam_large_eps} ends within a few % of GD's "
                        f"limiting R_a (T1 at wt = (wt*_0, wt*_1, wt_2(0))); after {s.control_steps} steps"))
    metrics["adam_large_eps"] = {"w2_shift": abs(float(big["w_tilde"][2]) - w0[2]),
                                 "adam_w2_shift": abs(float(exact["adam"]["w_tilde"][2]) - w0[2]),
                                 "std_risk": float(_final(big, "std_risk"))}
    # P14: signs in the DCT basis leave the irrelevant weight untouched
    dct_move = float(np.max(np.abs(np.asarray(ctrl["signgd_dct"]["records"]["e_tilde"])[:, 2] - e0[2])))
    checks.append(Check("adaptive.p14.dct_basis_signgd_invariance", dct_move, 0.0, 1e-12, "at_most", "derived",
                        "P14: signGD with signs in the data eigenbasis never moves wt_2"))
    # S1: the closed form on its side of |A(0)| = |B(0)| (signGD, exact gradients)
    s1 = []
    for lab, r in res["s1"]:
        stt, wst = np.asarray(r["sigma_tilde"]), np.asarray(r["w_star_tilde"])
        e = w0 - wst
        valid = bool(T.signgd_formula_valid(e, stt))
        pred = float(T.signgd_final_tilde(w0, wst, stt)[2])
        s1.append({**lab, "valid": valid, "measured": float(r["w_tilde"][2]), "predicted": pred,
                   "ratio": float(stt[1] ** 2 / stt[0] ** 2), "e1": float(abs(e[1]))})
    val = [abs(x["measured"] - x["predicted"]) / abs(x["predicted"] - w0[2]) for x in s1
           if x["opt"] == "signgd" and x["valid"]]
    over = [abs(x["predicted"] - w0[2]) >= abs(x["measured"] - w0[2]) for x in s1
            if x["opt"] == "signgd" and not x["valid"]]
    checks.append(Check("adaptive.s1.signgd_closed_form", float(np.median(val)) if val else float("nan"), 0.0, 0.02,
                        "at_most", "derived", "T3/P5: median relative error of Delta wt_2 where |A(0)| >= |B(0)|"))
    metrics["s1"] = {"cells": s1, "n_valid": len(val), "invalid_side_formula_overestimates": int(np.sum(over)),
                     "invalid_side_cells": len(over)}
    # S2: GD keeps the irrelevant band exactly; what the adaptive methods put there
    s2 = {}
    gd_irr = 0.0
    for lab, r in res["s2"]:
        irr = np.asarray(r["records"]["irr_norm"])
        if lab["opt"] == "gd":
            gd_irr = max(gd_irr, float(abs(irr[-1] - irr[0])))
        key = f"{lab['opt']}/p{lab['p']:g}"
        s2.setdefault(key, []).append({"irr_norm": float(irr[-1]), "irr_norm0": float(irr[0]),
                                       "w_norm": float(_final(r, "w_norm")), "adv_risk": float(_final(r, "adv_risk")),
                                       "adv_risk_mc": float(_final(r, "adv_risk_mc")),
                                       "std_risk": float(_final(r, "std_risk"))})
    checks.append(Check("adaptive.s2.gd_irrelevant_band_invariance", gd_irr, 0.0, 1e-9, "at_most", "derived",
                        "T2 in d dimensions: GD never changes weight on zero-variance frequencies"))
    metrics["s2"] = {k: {m: float(np.mean([v[m] for v in vals])) for m in vals[0]} for k, vals in s2.items()}
    metrics["p7"] = {"adv_risk": ra, "std_risk": rs, "adam_large_eps_adv_risk": float(_final(big, "adv_risk"))}
    metrics["signgd_phase_times"] = {"t1": t1, "t2": t2}
    return checks, metrics


def run(s: AdaptiveSim, out_dir: str, progress: bool = True, command: str = "") -> dict:
    s = s.validate()
    os.makedirs(out_dir, exist_ok=True)
    with jax.enable_x64(True):  # spec 6: float64 (GD invariance to 1e-6, R_s down to 1e-6)
        runs = build_runs(s)
        res, engine = run_labelled(run_adaptive_linear, runs, out_dir=os.path.join(out_dir, "cache"), tag=SIM,
                                   progress=progress, desc=SIM)
    checks, metrics = analyse(s, res)
    metrics.update(engine)
    metrics["figures"] = adaptive_figures(out_dir, s, res, metrics)
    return finish(out_dir, sim=SIM, config=s, checks=checks, metrics=metrics, command=command)
