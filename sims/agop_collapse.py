"""AGOP as a mechanism for deep neural collapse (Beaglehole, Sukenik, Mondelli, Belkin, arXiv 2402.13728):
``fa-jax run agop-collapse``. Spec: ../shared/specs/agop_collapse.md (2.1-2.6, 3, 5: P1-P4, P6, P7, P9-P14).

config -> ONE sweep (float64 metrics; the MLP trains in float32) through
:func:`fa_jax.experiments.agop_collapse.run_agop_collapse`:
* Deep RFM on a Gaussian mixture: the main setting (``rfm_seeds`` feature seeds), the M = I control (random features
  only), a cosine-RFF variant (the paper's job-script flag, D = d), and the ridge x bandwidth grid (its depth axis
  is the layer axis of each run: layer l of a depth-L run is the last layer of a depth-l run);
* optionally Deep RFM on a real image set (``image_source``, e.g. the offline ``mnist-5k``) and its control;
* the bias-free ReLU MLP (Xavier-uniform init, small gain, MSE on +-1 targets, Adam) at the small gain and at a
  large gain (P13), NFA / NC metrics recorded over training.
Then P6 (one linear-kernel AGOP step, closed form) is computed directly in float64, the checks are evaluated,
figures drawn and ``summary.json`` written.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from fa_jax.config import require
from fa_jax.data.mixture import GaussianMixture, sample_mixture
from fa_jax.experiments.agop_collapse import (
    AgopCollapseRun,
    CollapseData,
    DeepRFMSpec,
    MLPSpec,
    lapack_single_threaded,
    load_collapse_data,
    run_agop_collapse,
)
from fa_jax.kernels import rfm as R
from fa_jax.metrics.agop import psd_power
from fa_jax.metrics.collapse import nc1 as nc1_of
from fa_jax.models.mlp import MLP
from fa_jax.optim import OptimConfig
from fa_jax.plotting.agop_collapse import agop_figures
from fa_jax.summary import Check, finish
from fa_jax.sweep import run_labelled
from fa_jax.trainer import TrainConfig

SIM = "agop-collapse"
FLOOR = 1e-10  # float64 NC1 floor: geometric fits and per-layer ratios stop there (spec 6)


@dataclasses.dataclass(frozen=True)
class AgopCollapseSim:
    # Gaussian-mixture data (shared by Deep RFM and the MLP)
    k: int = 10
    d: int = 128
    n_per_class: int = 60
    separation: float = 3.0
    within_std: float = 1.0
    mean_spread: float = 0.5  # class-mean radii 1 -+ spread: non-ETF means at the input (NC2 has room to fall)
    data_seed: int = 0
    # Deep RFM (spec 2.4): Laplace kernel, bandwidth 2, max-normalised AGOP, Z = X M^power, ReLU features
    depth: int = 20
    bandwidth: float = 2.0
    ridge: float = 1e-3
    power: float = 0.5
    feature: str = "relu"
    width: int = 256
    rfm_seeds: int = 2
    cos_gamma: float = 0.1  # cosine-RFF variant (D = d); 0 disables it
    grid_ridges: tuple = (0.0, 1e-6, 1e-3, 1e-1, 10.0)
    grid_bandwidths: tuple = (0.5, 2.0, 5.0, 20.0)
    image_source: str = "mnist-5k"  # "" disables the real-image Deep RFM runs
    image_n_per_class: int = 100
    image_depth: int = 10
    # MLP (spec 2.6): bias-free ReLU, Xavier-uniform gain, MSE on +-1 one-hot, Adam
    mlp_widths: tuple = (512,) * 5
    mlp_gain: float = 0.1
    mlp_gain_large: float = 1.0  # P13; 0 disables the large-init run
    lr: float = 2e-4
    batch: int = 128
    steps: int = 3000
    n_records: int = 11
    n_agop: int = 200
    mlp_seed: int = 0
    # P6: one linear-kernel AGOP step with N <= d
    p6_n_per_class: int = 4
    p6_ridges: tuple = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0)

    def validate(self) -> AgopCollapseSim:
        for name in ("k", "d", "n_per_class", "depth", "rfm_seeds", "steps", "n_agop", "p6_n_per_class"):
            v = getattr(self, name)
            require(isinstance(v, int) and v >= 1, name, "an integer >= 1", v)
        require(self.k >= 2 and self.d >= self.k, "k", f"2 <= k <= d = {self.d}", self.k)
        require(self.depth >= 3, "depth", "an integer >= 3 (a geometric fit needs layers)", self.depth)
        require(self.k * self.p6_n_per_class <= self.d, "p6_n_per_class",
                f"k * p6_n_per_class <= d = {self.d} (exact one-step collapse needs N <= d)", self.p6_n_per_class)
        require(len(self.p6_ridges) >= 3 and self.p6_ridges[0] == 0.0
                and all(b > a for a, b in zip(self.p6_ridges, self.p6_ridges[1:])), "p6_ridges",
                "an increasing tuple of >= 3 ridges starting at 0", self.p6_ridges)
        require(len(self.mlp_widths) >= 2, "mlp_widths", "at least 2 hidden widths", self.mlp_widths)
        require(self.n_agop <= self.k * self.n_per_class, "n_agop", f"<= n = {self.k * self.n_per_class}",
                self.n_agop)
        require(len(self.grid_ridges) >= 1 and len(self.grid_bandwidths) >= 1, "grid_ridges/grid_bandwidths",
                "non-empty tuples", (self.grid_ridges, self.grid_bandwidths))
        require(self.image_source in ("", "mnist-5k", "mnist", "fashion-mnist", "cifar10", "digits"),
                "image_source", "'' or an image dataset name", self.image_source)
        for run in build_runs(self, probe_images=False).values():
            for _, cfg in run:
                cfg.validate()
        return self


PRESETS = {
    "default": AgopCollapseSim(),
    "quick": AgopCollapseSim(k=4, d=32, n_per_class=40, depth=8, width=64, rfm_seeds=1, cos_gamma=0.0,
                             grid_ridges=(0.0, 1e-3, 1.0), grid_bandwidths=(1.0, 10.0), image_source="",
                             mlp_widths=(64, 64), lr=1e-3, batch=40, steps=300, n_records=6, n_agop=80,
                             p6_n_per_class=3, p6_ridges=(0.0, 1e-2, 1.0, 10.0)),
}


def _mixture(s: AgopCollapseSim) -> CollapseData:
    return CollapseData(mixture=GaussianMixture(k=s.k, d=s.d, n_per_class=s.n_per_class, separation=s.separation,
                                                within_std=s.within_std, mean_spread=s.mean_spread,
                                                seed=s.data_seed))


def _images_available(s: AgopCollapseSim) -> str:
    """'' if the image source loads, else the reason it does not."""
    if not s.image_source:
        return "disabled (image_source = '')"
    try:
        load_collapse_data(s.image_source, s.image_n_per_class, 0)
    except Exception as e:  # noqa: BLE001 - a missing optional file or package only skips these runs
        return f"{type(e).__name__}: {e}"
    return ""


def build_runs(s: AgopCollapseSim, probe_images: bool = True) -> dict[str, list]:
    data = _mixture(s)
    rfm = DeepRFMSpec(depth=s.depth, bandwidth=s.bandwidth, ridge=s.ridge, power=s.power, feature=s.feature,
                      width=s.width)
    mlp = MLPSpec(model=MLP(widths=tuple(s.mlp_widths), activation="relu", init_scale=s.mlp_gain,
                            init="xavier_uniform"),
                  optim=OptimConfig(name="adam", lr=s.lr, batch_size=s.batch),
                  train=TrainConfig(steps=s.steps, n_records=s.n_records, plan="linear"), n_agop=s.n_agop,
                  seed=s.mlp_seed)
    runs: dict[str, list] = {"rfm": [], "grid": [], "mlp": []}
    for seed in range(s.rfm_seeds):
        runs["rfm"].append(({"what": "main", "seed": seed},
                            AgopCollapseRun("deep_rfm", data, dataclasses.replace(rfm, feature_seed=seed))))
    runs["rfm"].append(({"what": "control_m_identity", "seed": 0},
                        AgopCollapseRun("deep_rfm", data, dataclasses.replace(rfm, use_agop=0.0))))
    if s.cos_gamma > 0:
        cos = dataclasses.replace(rfm, feature="cos", width=0, gamma=s.cos_gamma)
        runs["rfm"].append(({"what": "cos", "seed": 0}, AgopCollapseRun("deep_rfm", data, cos)))
        runs["rfm"].append(({"what": "cos_control", "seed": 0},
                            AgopCollapseRun("deep_rfm", data, dataclasses.replace(cos, use_agop=0.0))))
    for lam in s.grid_ridges:
        for bw in s.grid_bandwidths:
            runs["grid"].append(({"ridge": lam, "bandwidth": bw},
                                 AgopCollapseRun("deep_rfm", data, dataclasses.replace(rfm, ridge=lam, bandwidth=bw))))
    if probe_images and not _images_available(s):
        img = CollapseData(source=s.image_source, n_per_class=s.image_n_per_class)
        irfm = dataclasses.replace(rfm, depth=s.image_depth)
        runs["rfm"].append(({"what": "image", "seed": 0}, AgopCollapseRun("deep_rfm", img, irfm)))
        runs["rfm"].append(({"what": "image_control", "seed": 0},
                            AgopCollapseRun("deep_rfm", img, dataclasses.replace(irfm, use_agop=0.0))))
    runs["mlp"].append(({"gain": s.mlp_gain}, AgopCollapseRun("mlp", data, mlp=mlp)))
    if s.mlp_gain_large > 0:
        big = dataclasses.replace(mlp, model=dataclasses.replace(mlp.model, init_scale=s.mlp_gain_large))
        runs["mlp"].append(({"gain": s.mlp_gain_large}, AgopCollapseRun("mlp", data, mlp=big)))
    return {k: v for k, v in runs.items() if v}


# ------------------------------------------------------------------------------------------------ analysis helpers
def geometric_fit(nc1_layers, floor: float = FLOOR) -> dict:
    """Least-squares fit log NC1_l = log C + l log rho over layers l = 1.. with NC1 > floor: {rho, c, r2, n}."""
    y = np.asarray(nc1_layers, float)
    layers = np.arange(1, len(y) + 1)
    m = np.isfinite(y) & (y > floor)
    if m.sum() < 3:
        return {"rho": float("nan"), "c": float("nan"), "r2": float("nan"), "n": int(m.sum())}
    ly = np.log(y[m])
    slope, icpt = np.polyfit(layers[m], ly, 1)
    pred = icpt + slope * layers[m]
    ss_res, ss_tot = float(np.sum((ly - pred) ** 2)), float(np.sum((ly - ly.mean()) ** 2))
    return {"rho": float(np.exp(slope)), "c": float(np.exp(icpt)), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0,
            "n": int(m.sum())}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _one_step_nc1(cfg: GaussianMixture, k: int, ridges):
    """Data and measured one-step NC1(X M^{1/2}) per ridge: linear-kernel KRR, closed-form AGOP gradient, eigh
    square root (one compiled program)."""
    x, labels, y = sample_mixture(cfg, dtype=jnp.float64)

    def one(lam):
        alpha = R.krr_solve(R.kernel_matrix(x, x, None, 1.0, "linear"), y, lam)
        # rank(M) <= K exactly: eigenvalues below 1e-12 max are roundoff (their square roots would add ~1e-8
        # relative noise to Z, which shows as NC1 error once NC1 itself is ~1e-10)
        root = psd_power(R.kernel_agop(x, alpha, None, 1.0, "linear"), 0.5, rtol=1e-12)
        return nc1_of(x @ root, labels, k)

    return x, labels, y, jax.vmap(one)(ridges)


def _np_nc1(h, labels, k):
    """tr S_W / tr S_B in numpy (an independent reference for the closed form)."""
    mu = np.stack([h[labels == c].mean(0) for c in range(k)])
    tr_sw = np.sum((h - mu[labels]) ** 2) / len(h)
    tr_sb = np.sum((mu - mu.mean(0)) ** 2) / k
    return float(tr_sw / tr_sb)


def one_step_linear(s: AgopCollapseSim) -> dict:
    """P6 in float64: one linear-kernel AGOP layer on N = k * p6_n_per_class <= d mixture points, per ridge:
    measured NC1(X M^{1/2}) (kernel solve + closed-form AGOP gradient + eigh square root) vs the closed form
    NC1(A Y) in numpy, A = G (G + lam I)^{-1}, G = X X^T (the rows' Gram is A Y Y^T A)."""
    cfg = GaussianMixture(k=s.k, d=s.d, n_per_class=s.p6_n_per_class, separation=s.separation,
                          within_std=s.within_std, mean_spread=s.mean_spread, seed=s.data_seed + 1)
    x, labels, y, meas = _one_step_nc1(cfg, s.k, jnp.asarray(s.p6_ridges, jnp.float64))
    x, labels, y = np.asarray(x), np.asarray(labels), np.asarray(y)
    gram = x @ x.T
    closed = [_np_nc1(gram @ np.linalg.inv(gram + lam * np.eye(len(gram))) @ y, labels, s.k) for lam in s.p6_ridges]
    return {"ridges": list(s.p6_ridges), "nc1_measured": [float(v) for v in meas], "nc1_closed_form": closed,
            "n": int(x.shape[0]), "d": s.d}


def _layers(r, stage, key="nc1"):
    return np.asarray(r["layers"][stage][key], float)


def analyse(s: AgopCollapseSim, res: dict, p6: dict) -> tuple[list[Check], dict]:
    checks: list[Check] = []
    metrics: dict = {"p6": p6}
    rfm = {}
    for lab, r in res["rfm"]:
        rfm.setdefault(lab["what"], []).append(r)
    main = rfm["main"]
    # geometric mean over feature seeds, per layer
    gm = lambda rs, st, key="nc1": np.exp(np.mean([np.log(_layers(r, st, key)) for r in rs], axis=0))
    x1, z1, p1 = gm(main, "x"), gm(main, "z"), gm(main, "phi")
    ctrl = gm(rfm["control_m_identity"], "x")
    fit = geometric_fit(x1)
    metrics["deep_rfm"] = {"nc1_x": x1, "nc1_z": z1, "nc1_phi": p1, "nc2_x": gm(main, "x", "nc2"),
                           "nc1_papyan_x": gm(main, "x", "nc1_papyan"), "control_nc1_x": ctrl, "fit": fit,
                           "agop_topk_frac": np.mean([np.asarray(r["layers"]["agop_topk_frac"]) for r in main], 0),
                           "agop_top1_frac": np.mean([np.asarray(r["layers"]["agop_top1_frac"]) for r in main], 0)}
    # P1
    checks.append(Check("agop.p1.deep_rfm_nc1_ratio_last_first", float(x1[-1] / x1[0]), 1e-2, 0.0, "at_most",
                        "paper", f"NC1(X_L)/NC1(X_1) over L = {s.depth} layers; paper: >= 100x drop by layer 20 "
                        "(threshold inferred)"))
    above = x1 > FLOOR
    dec = np.diff(np.log(x1))[above[1:]]
    checks.append(Check("agop.p1.deep_rfm_monotone_fraction", float(np.mean(dec < 0)) if dec.size else float("nan"),
                        0.8, 0.0, "at_least", "paper", "fraction of consecutive layers (above the float floor) "
                        "where NC1(X_l) falls ('near-monotonically')"))
    # P2: the projection collapses (layers whose NC1(X_l) is above the floor)
    ratio = (x1 / z1)[above]
    checks.append(Check("agop.p2.agop_projection_min_factor", float(ratio.min()), 2.0, 0.0, "at_least", "paper",
                        "min over layers of NC1(X_l)/NC1(X_l M^1/2) (threshold inferred)"))
    # P3: the feature map does not; removing the AGOP stops the decrease
    inc = (p1 / z1)[above]
    checks.append(Check("agop.p3.feature_map_max_increase", float(inc.max()), 2.0, 0.0, "at_most", "paper+derived",
                        f"max over layers of NC1(Phi(Z_l))/NC1(Z_l), {s.feature} features (threshold inferred)"))
    checks.append(Check("agop.p3.control_no_collapse", float(ctrl[-1] / ctrl[0]), 0.5, 0.0, "at_least",
                        "paper+derived", "M = I control (random features only): NC1(X_L)/NC1(X_1) stays >= 0.5 "
                        "(no collapse without the AGOP projection)"))
    # P4
    nc2 = metrics["deep_rfm"]["nc2_x"]
    checks.append(Check("agop.p4.deep_rfm_nc2_ratio_last_first", float(nc2[-1] / nc2[0]), 1.0, 0.0, "at_most",
                        "paper", "NC2(X_L)/NC2(X_1): NC2 decreases with depth"))
    # P6
    m6, c6 = np.asarray(p6["nc1_measured"]), np.asarray(p6["nc1_closed_form"])
    checks.append(Check("agop.p6.one_step_ridgeless_nc1", float(m6[0]), 0.0, 1e-10, "at_most", "derived",
                        f"linear kernel, lambda = 0, N = {p6['n']} <= d = {p6['d']}: Gram = YY^T, NC1 = 0 (float64)"))
    checks.append(Check("agop.p6.one_step_monotone_in_ridge", float(np.all(np.diff(m6) > 0)), 1.0, 0.0, "abs",
                        "derived", f"one-step NC1 increases with lambda over {list(s.p6_ridges)}"))
    rel = np.abs(m6[1:] - c6[1:]) / c6[1:]
    checks.append(Check("agop.p6.one_step_closed_form", float(rel.max()), 0.0, 1e-6, "at_most", "derived",
                        "max relative error of NC1(X M^1/2) vs NC1(A Y), A = G(G + lambda I)^-1"))
    # P7
    checks.append(Check("agop.p7.semilog_fit_r2", fit["r2"], 0.95, 0.0, "at_least", "paper+derived",
                        f"log NC1(X_l) linear in l above the float floor: rho = {fit['rho']:.3g} over {fit['n']} layers"))
    # P14
    checks.append(Check("agop.p14.agop_topk_trace_fraction", float(np.min(metrics["deep_rfm"]["agop_topk_frac"])),
                        0.5, 0.0, "at_least", "code+derived",
                        f"min over layers of the top-K (K = {s.k}) eigenvalue share of the Deep RFM AGOP trace"))
    # variants
    for what in ("cos", "cos_control", "image", "image_control"):
        if what in rfm:
            r = rfm[what][0]
            metrics["deep_rfm"][what] = {"nc1_x": _layers(r, "x"), "nc1_z": _layers(r, "z"),
                                         "nc1_phi": _layers(r, "phi"), "nc2_x": _layers(r, "x", "nc2"),
                                         "fit": geometric_fit(_layers(r, "x"))}
    if "cos" in rfm:
        xc = _layers(rfm["cos"][0], "x")
        checks.append(Check("agop.p1.cos_rff_deep_rfm_nc1_ratio_last_first", float(xc[-1] / xc[0]), 1e-2, 0.0,
                            "at_most", "paper", f"cosine random Fourier features (D = d, gamma = {s.cos_gamma}; the "
                            "paper's job-script flag): NC1(X_L)/NC1(X_1) (threshold inferred)"))
    if "image" in rfm:
        xi, ci = _layers(rfm["image"][0], "x"), _layers(rfm["image_control"][0], "x")
        checks.append(Check("agop.p1.image_deep_rfm_nc1_ratio_last_first", float(xi[-1] / xi[0]), 1e-2, 0.0,
                            "at_most", "paper", f"{s.image_source} ({s.image_n_per_class}/class), "
                            f"{s.image_depth} layers: NC1(X_L)/NC1(X_1) (threshold inferred)"))
        checks.append(Check("agop.p3.image_control_no_collapse", float(ci[-1] / ci[0]), 0.5, 0.0, "at_least",
                            "paper+derived", f"{s.image_source}: M = I control NC1(X_L)/NC1(X_1)"))
    # grid: phase diagram of NC1 per (ridge, bandwidth, depth)
    grid = []
    for lab, r in res.get("grid", []):
        xx = _layers(r, "x")
        grid.append({**lab, "nc1_x": xx, "final_nc1": float(xx[-1]), "fit": geometric_fit(xx)})
    metrics["grid"] = grid

    # ---- MLP
    mlps = {lab["gain"]: r for lab, r in res["mlp"]}
    small = mlps[s.mlp_gain]
    rec = {k: np.asarray(v) if not isinstance(v, dict) else {kk: np.asarray(vv) for kk, vv in v.items()}
           for k, v in small["records"].items()}
    nc = rec["nc1"]
    fr = rec["frac_right"][-1]
    svt_less = nc["svt"][-1] < nc["phi"][-1]
    checks.append(Check("agop.p9.svt_reduces_nc1_every_layer", float(np.mean(svt_less)), 1.0, 0.0, "abs", "paper",
                        "end of training: NC1(S V^T Phi) < NC1(Phi) in every hidden layer (fraction of layers)"))
    checks.append(Check("agop.p9.frac_right_min", float(np.min(fr)), 0.5, 0.0, "at_least", "paper",
                        "min over hidden layers of the right-singular share of the log-NC1 reduction "
                        "('majority', threshold inferred)"))
    u_err = float(np.nanmax(np.abs(nc["pre"] / nc["svt"] - 1.0)))
    checks.append(Check("agop.p10.u_invariance", u_err, 0.0, 1e-9, "at_most", "derived",
                        "max over layers and records of |NC1(U S V^T Phi)/NC1(S V^T Phi) - 1| (exact identity)"))
    nfa_h, nfa_1 = rec["nfa_half"], rec["nfa_one"]
    checks.append(Check("agop.p11.nfa_rise_min_over_layers", float(np.min(nfa_h[-1] - nfa_h[0])), 0.0, 0.0,
                        "at_least", "paper", "min over hidden layers of rho_1/2(end) - rho_1/2(init): the NFA "
                        "correlation rises during training in every layer"))
    checks.append(Check("agop.p11.nfa_final_min", float(np.min(nfa_h[-1])), 0.8, 0.0, "at_least", "paper",
                        "min over hidden layers of the final rho(W^T W, AGOP^1/2) (threshold inferred)"))
    checks.append(Check("agop.p11.half_minus_one_mean", float(np.mean(nfa_h[-1] - nfa_1[-1])), 0.0, 0.0,
                        "at_least", "inferred", "mean over hidden layers of rho_1/2 - rho_1 at the end"))
    out_end = nc["out"][-1]
    checks.append(Check("agop.p12.nc1_decreases_with_layer", float(np.mean(np.diff(np.log(out_end)) < 0)), 1.0, 0.0,
                        "abs", "paper", "end of training: NC1 of the layer outputs falls layer by layer (fraction "
                        "of consecutive pairs)"))
    sw = rec["sw_over_st"]
    checks.append(Check("agop.p12.sw_over_st_drop", float(sw[0] / sw[-1]), 10.0, 0.0, "at_least", "paper",
                        "last hidden layer: tr S_W/tr S_T falls by > 10x over training"))
    sb = rec["sb_over_st"]
    checks.append(Check("agop.p12.sb_over_st_rise", float(sb[-1] - sb[0]), 0.0, 0.0, "at_least", "paper",
                        "last hidden layer: tr S_B/tr S_T rises over training"))
    mlp_metrics = {"small": _mlp_summary(small, s.k)}
    if s.mlp_gain_large > 0:
        big = mlps[s.mlp_gain_large]
        mlp_metrics["large"] = _mlp_summary(big, s.k)
        dn = float(np.mean(nfa_h[-1]) - np.mean(np.asarray(big["records"]["nfa_half"])[-1]))
        df = float(np.mean(fr) - np.mean(np.asarray(big["records"]["frac_right"])[-1]))
        checks.append(Check("agop.p13.nfa_drop_at_large_init", dn, 0.0, 0.0, "at_least", "paper",
                            f"mean final rho_1/2 at gain {s.mlp_gain} minus at gain {s.mlp_gain_large}"))
        checks.append(Check("agop.p13.frac_right_drop_at_large_init", df, 0.0, 0.0, "at_least", "paper",
                            f"mean final frac_right at gain {s.mlp_gain} minus at gain {s.mlp_gain_large}"))
    metrics["mlp"] = mlp_metrics
    return checks, metrics


def _mlp_summary(r, k: int) -> dict:
    rec = r["records"]
    return {"plan": np.asarray(r["plan"]), "loss": np.asarray(rec["loss"]),
            "nc1_final": {k: np.asarray(v)[-1] for k, v in rec["nc1"].items()},
            "frac_right_final": np.asarray(rec["frac_right"])[-1], "nfa_half": np.asarray(rec["nfa_half"]),
            "nfa_one": np.asarray(rec["nfa_one"]), "sw_over_st": np.asarray(rec["sw_over_st"]),
            "sb_over_st": np.asarray(rec["sb_over_st"]), "nc2_out_final": np.asarray(rec["nc2_out"])[-1],
            "nc1_out_final_code_normalisation": np.asarray(rec["nc1"]["out"])[-1] / k}


def run(s: AgopCollapseSim, out_dir: str, progress: bool = True, command: str = "") -> dict:
    s = s.validate()
    os.makedirs(out_dir, exist_ok=True)
    with jax.enable_x64(True), lapack_single_threaded():  # spec 6: float64 metrics (NC1 falls toward 1e-10)
        runs = build_runs(s)
        res, engine = run_labelled(run_agop_collapse, runs, out_dir=os.path.join(out_dir, "cache"), tag=SIM,
                                   progress=progress, desc=SIM)
        p6 = one_step_linear(s)
    checks, metrics = analyse(s, res, p6)
    metrics["image_runs"] = _images_available(s) or "ran"
    metrics["normalisation"] = ("NC1 = tr S_W / tr S_B, textbook (S_W over N samples, S_B over K classes); the paper "
                                "code's NC1 is this / K for balanced classes")
    metrics.update(engine)
    metrics["figures"] = agop_figures(out_dir, s, res, metrics)
    return finish(out_dir, sim=SIM, config=s, checks=checks, metrics=metrics, command=command)
