"""AGOP as a mechanism for deep neural collapse (Beaglehole, Sukenik, Mondelli, Belkin, arXiv 2402.13728):
``fa-jax run agop-collapse``. Spec: ../shared/specs/agop_collapse.md (2.1-2.6, 3, 5: P1-P4, P6, P7, P9-P14).

config -> ONE sweep (float64 metrics; the MLP trains in float32) through
:func:`fa_jax.experiments.agop_collapse.run_agop_collapse`:
* Deep RFM on a Gaussian mixture: the main setting (``rfm_seeds`` feature seeds), the M = I control (random features
  only), the cosine-RFF variant (the paper's job-script flag, D = d) over ``cos_gammas`` x ``cos_seeds`` with its
  M = I control at the official scripts' gamma ``cos_gamma``, and the ridge x bandwidth grid (its depth axis is the
  layer axis of each run: layer l of a depth-L run is the last layer of a depth-l run);
* Deep RFM and its M = I control on a mixture with non-orthogonal (chained) class means (``nonorth_cosine``): there
  the input NC2 is well above its floor, so P4 (NC2 falls) can fail;
* optionally Deep RFM on a real image set (``image_source``, e.g. the offline ``mnist-5k``) and its control;
* the bias-free ReLU MLP (Xavier-uniform init, small gain, MSE on +-1 targets, Adam) at the small gain and at a
  large gain (P13), NFA / NC metrics recorded over training.
Then P6 (one linear-kernel AGOP step, closed form) is computed directly in float64, the checks are evaluated,
figures drawn and ``summary.json`` written. Every number of the sweep's runs (checks, metrics, figures) is read
from the labelled Dataset it wrote, ``fa_jax.load_results(<out>/cache)``: dim ``run`` with the label coordinates ``part``,
``what``, ``seed``, ``gamma`` (cosine runs), ``ridge``, ``bandwidth`` (grid), ``gain`` (MLP); Deep RFM outputs
``layers/<stage>/<metric>`` on ``rfm_layer`` (NaN-padded beyond a run's depth: the image runs are shorter), MLP
records ``records/...`` on ``(step, layer)``.

Checks: every prediction, threshold and null comes from :mod:`fa_jax.theory.agop_collapse` with its provenance.
``derived`` checks (P6, P10) must pass on every preset; ``paper claim`` checks (the paper's empirical claims with
the spec's inferred thresholds) are recorded results. NC ratios have the null 1 (no collapse). A check whose run is
switched off (cos_gamma = 0, nonorth_cosine = 0, image_source = '' or missing files, mlp_gain_large = 0) is listed
in ``not_evaluated``. The quick preset is the same experiment at a smaller scale (K = 4, d = 32, a 3 x 64 MLP, 20
images per class, 2 cosine-feature seeds per gamma): every variant and every gamma runs.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from fa_jax.config import check_fields, param, renamed, require, require_runs
from fa_jax.data.mixture import GaussianMixture, population_nc2, sample_mixture
from fa_jax.experiments.agop_collapse import (
    AgopCollapseRun,
    CollapseData,
    DeepRFMSpec,
    MLPSpec,
    lapack_single_threaded,
    load_collapse_data,
    run_agop_collapse,
    shared_collapse_data,
)
from fa_jax.kernels import rfm as R
from fa_jax.metrics.agop import psd_power
from fa_jax.metrics.collapse import nc1 as nc1_of
from fa_jax.models.mlp import MLP
from fa_jax.optim import OptimConfig
from fa_jax.plotting.agop_collapse import agop_figures
from fa_jax.results import load_results, runs_where, select_runs, stacked
from fa_jax.summary import Check, finish
from fa_jax.sweep import run_labelled
from fa_jax.theory import agop_collapse as T
from fa_jax.trainer import TrainConfig

SIM = "agop-collapse"


@dataclasses.dataclass(frozen=True)
class AgopCollapseSim:
    # Gaussian-mixture data (shared by Deep RFM and the MLP)
    k: int = 10  # classes K
    d: int = 128  # input dimension (K <= d)
    n_per_class: int = 60  # training samples per class
    separation: float = 3.0  # class-mean scale: mu_c = separation * r_c * q_c
    within_std: float = 1.0  # per-coordinate within-class noise std
    mean_spread: float = 0.5  # class-mean radii 1 -+ spread: non-ETF means at the input (NC2 has room to fall)
    data_seed: int = 0  # seed of the mixture (means and samples)
    # Deep RFM (spec 2.4): Laplace kernel, bandwidth 2, max-normalised AGOP, Z = X M^power, ReLU features
    depth: int = 20  # Deep RFM layers (the NC metrics are read at every layer)
    bandwidth: float = 2.0  # Laplace kernel bandwidth L: exp(-||x - x'||_M / L)
    ridge: float = 1e-3  # kernel ridge mu of each layer's regression
    power: float = 0.5  # s in Z = X M^s (M: the layer's max-normalised AGOP)
    feature: str = "relu"  # random features after each projection: relu, cos or none
    width: int = 256  # random ReLU features per layer
    rfm_seeds: int = 2  # feature seeds of the main Deep RFM run
    # cosine-RFF variant (D = d): P1 is checked at cos_gamma, the official scripts' MNIST gamma
    # (theory.official_rff_gamma); the NC1 curve over cos_gammas x cos_seeds is reported. cos_gamma = 0: no such runs
    cos_gamma: float = 0.05  # gamma of the cosine-RFF P1 check (Cauchy(0, gamma) weights; 0 disables the variant)
    cos_gammas: tuple = (0.02, 0.05, 0.1, 0.2, 2.0)  # the cosine-RFF gamma sweep (cos_gamma is added if absent)
    cos_seeds: int = 3  # feature seeds per gamma (and of the M = I control at cos_gamma)
    # P4 on a mixture whose class means are chained, cos(u_c, u_c') = rho^|c - c'|: the input NC2 is well above the
    # orthonormal floor, so 'NC2 falls' can fail
    nonorth_cosine: float = 0.7  # rho of the non-orthogonal mixture (0: no such runs)
    grid_ridges: tuple = (0.0, 1e-6, 1e-3, 1e-1, 10.0)  # ridges of the ridge x bandwidth grid
    grid_bandwidths: tuple = (0.5, 2.0, 5.0, 20.0)  # bandwidths of the ridge x bandwidth grid
    image_source: str = "mnist-5k"  # image set of the real-image Deep RFM runs ("": none)
    image_n_per_class: int = 100  # images per class of the image runs
    image_depth: int = 10  # Deep RFM layers of the image runs
    # MLP (spec 2.6): bias-free ReLU, Xavier-uniform gain, MSE on +-1 one-hot, Adam
    mlp_widths: tuple = (512,) * 5  # MLP hidden widths
    mlp_gain: float = 0.1  # Xavier-uniform gain of the main MLP (small init)
    mlp_gain_large: float = 1.0  # gain of the large-init MLP run (P13; 0: no such run)
    lr: float = 2e-4  # MLP Adam learning rate
    batch: int = param(128, follows="min(128, k * n_per_class)")  # MLP mini-batch size
    steps: int = 3000  # MLP training steps
    n_records: int = 11  # MLP records (NC / NFA metrics), linearly spaced over training
    n_agop: int = param(600, follows="k * n_per_class")  # points of the per-layer AGOP (NFA): all n, as nc_nn.py
    mlp_seed: int = 0  # MLP init and batch-order seed
    # P6: one linear-kernel AGOP step with N <= d
    p6_n_per_class: int = param(4, follows="min(4, d // k)")  # samples per class of P6 (N = k * p6_n_per_class <= d)
    p6_ridges: tuple = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # ridges of the P6 step (0: exact collapse)

    def validate(self) -> AgopCollapseSim:
        check_fields(self, nonempty=True)  # types first (every comparison below is between numbers)
        # the drivers before the fields that follow them (n_agop = k * n_per_class: n_per_class = -1 is named)
        for name in ("k", "d", "depth", "rfm_seeds", "cos_seeds", "steps", "image_depth"):
            v = getattr(self, name)
            require(v >= 1, name, "an integer >= 1", v)
        for name in ("data_seed", "mlp_seed"):
            require(getattr(self, name) >= 0, name, "an integer >= 0", getattr(self, name))
        require(self.width >= 0, "width", "an integer >= 0 (0: the input dimension)", self.width)
        for name in ("n_per_class", "image_n_per_class", "n_records"):
            require(getattr(self, name) >= 2, name, "an integer >= 2", getattr(self, name))
        for name in ("n_agop", "p6_n_per_class", "batch"):
            require(getattr(self, name) >= 1, name, "an integer >= 1", getattr(self, name))
        require(self.k >= 2 and self.d >= self.k, "k", f"2 <= k <= d = {self.d}", self.k)
        require(self.depth >= 3, "depth", "an integer >= 3 (a geometric fit needs layers)", self.depth)
        require(self.batch <= self.k * self.n_per_class, "batch", f"1 <= batch <= n = {self.k * self.n_per_class}",
                self.batch)
        for name in ("separation", "within_std", "bandwidth", "lr"):
            require(getattr(self, name) > 0, name, "a finite number > 0", getattr(self, name))
        for name in ("ridge", "mlp_gain", "mlp_gain_large"):
            require(getattr(self, name) >= 0, name, "a finite number >= 0", getattr(self, name))
        require(0 <= self.mean_spread < 1, "mean_spread", "0 <= mean_spread < 1", self.mean_spread)
        require(0 < self.power <= 2, "power", "0 < power <= 2", self.power)
        require(self.feature in R.FEATURES, "feature", f"one of {R.FEATURES}", self.feature)
        require(self.k * self.p6_n_per_class <= self.d, "p6_n_per_class",
                f"k * p6_n_per_class <= d = {self.d} (exact one-step collapse needs N <= d)", self.p6_n_per_class)
        require(len(self.p6_ridges) >= 3 and self.p6_ridges[0] == 0.0
                and all(b > a for a, b in zip(self.p6_ridges, self.p6_ridges[1:])), "p6_ridges",
                "an increasing tuple of >= 3 ridges starting at 0", self.p6_ridges)
        require(len(self.mlp_widths) >= 2 and all(w >= 1 for w in self.mlp_widths), "mlp_widths",
                "at least 2 hidden widths, each >= 1", self.mlp_widths)
        require(self.n_agop <= self.k * self.n_per_class, "n_agop", f"<= n = {self.k * self.n_per_class}",
                self.n_agop)
        require(self.cos_gamma >= 0, "cos_gamma", "a finite number >= 0 (0: no cosine runs)", self.cos_gamma)
        require(all(g > 0 for g in self.cos_gammas), "cos_gammas", "a non-empty tuple of finite gammas > 0",
                self.cos_gammas)
        require(0 <= self.nonorth_cosine < 1, "nonorth_cosine", "0 <= nonorth_cosine < 1 (0: no such runs)",
                self.nonorth_cosine)
        require(all(r >= 0 for r in self.grid_ridges), "grid_ridges", "a non-empty tuple of finite ridges >= 0",
                self.grid_ridges)
        require(all(b > 0 for b in self.grid_bandwidths), "grid_bandwidths",
                "a non-empty tuple of finite bandwidths > 0", self.grid_bandwidths)
        require(self.image_source in ("", "mnist-5k", "mnist", "fashion-mnist", "cifar10", "digits"),
                "image_source", "'' or an image dataset name", self.image_source)
        require_runs(3 * self.rfm_seeds, "the Deep RFM runs", self, "rfm_seeds")
        require_runs((len(self.cos_gammas) + 2) * self.cos_seeds, "the cosine-RFF runs", self, "cos_seeds",
                     "cos_gammas")
        require_runs(len(self.grid_ridges) * len(self.grid_bandwidths), "the ridge x bandwidth grid", self,
                     "grid_ridges", "grid_bandwidths")
        # every run config, checked now (the image runs too, whether or not their files load); an error names this
        # config's field (mlp_widths, not model.widths)
        with renamed(_RUN_NAMES):
            for run in build_runs(self, probe_images=False).values():
                for _, cfg in run:
                    cfg.validate()
        if self.image_source:
            with renamed({"data.n_per_class": "image_n_per_class", "rfm.depth": "image_depth",
                          "data.source": "image_source", "n": "image_n_per_class"}):
                for _, cfg in _image_runs(self, _rfm_spec(self)):
                    cfg.validate()
        return self


# the run configs' paths -> this config's fields (errors of the run configs' validate() name the latter)
_RUN_NAMES = {"data.k": "k", "data.d": "d", "data.n_per_class": "n_per_class", "data.separation": "separation",
              "data.within_std": "within_std", "data.mean_spread": "mean_spread", "data.mean_cosine": "nonorth_cosine",
              "rfm.depth": "depth", "rfm.bandwidth": "bandwidth", "rfm.ridge": "ridge", "rfm.power": "power",
              "rfm.feature": "feature", "rfm.width": "width", "rfm.gamma": "cos_gammas", "mlp.model": "mlp_widths",
              "model.widths": "mlp_widths", "model.init_scale": "mlp_gain", "optim.lr": "lr",
              "optim.batch_size": "batch", "train.steps": "steps", "train.n_records": "n_records",
              "mlp.n_agop": "n_agop", "n": "k/n_per_class"}


PRESETS = {
    "default": AgopCollapseSim(),
    # the same experiment, smaller: every variant (the cosine-RFF sweep over every gamma, the non-orthogonal
    # mixture, the image runs, both MLP gains) runs, the NFA's AGOP over all n points; fewer classes / dims /
    # samples / feature seeds, the paper's depth 20, a small MLP trained for fewer steps
    "quick": AgopCollapseSim(k=4, d=32, n_per_class=40, depth=20, width=64, rfm_seeds=1, cos_seeds=2,
                             grid_ridges=(0.0, 1e-3, 1.0), grid_bandwidths=(1.0, 10.0), image_n_per_class=20,
                             mlp_widths=(64, 64, 64), lr=1e-3, batch=40, steps=300, n_records=6, n_agop=160,
                             p6_n_per_class=3, p6_ridges=(0.0, 1e-2, 1.0, 10.0)),
}


def _mixture_cfg(s: AgopCollapseSim, mean_cosine: float = 0.0) -> GaussianMixture:
    return GaussianMixture(k=s.k, d=s.d, n_per_class=s.n_per_class, separation=s.separation,
                           within_std=s.within_std, mean_spread=s.mean_spread, mean_cosine=mean_cosine,
                           seed=s.data_seed)


def _mixture(s: AgopCollapseSim, mean_cosine: float = 0.0) -> CollapseData:
    return CollapseData(mixture=_mixture_cfg(s, mean_cosine))


def cos_gammas(s: AgopCollapseSim) -> tuple:
    """The swept gammas: ``cos_gammas`` with ``cos_gamma`` (where P1 is checked) added if absent, ascending."""
    return tuple(sorted(set(s.cos_gammas) | {s.cos_gamma}))


def _images_available(s: AgopCollapseSim) -> str:
    """'' if the image source loads, else the reason it does not."""
    if not s.image_source:
        return "disabled (image_source = '')"
    try:
        load_collapse_data(s.image_source, s.image_n_per_class, 0)
    except Exception as e:  # noqa: BLE001 - a missing optional file or package only skips these runs
        return f"{type(e).__name__}: {e}"
    return ""


def _rfm_spec(s: AgopCollapseSim) -> DeepRFMSpec:
    return DeepRFMSpec(depth=s.depth, bandwidth=s.bandwidth, ridge=s.ridge, power=s.power, feature=s.feature,
                       width=s.width)


def _image_runs(s: AgopCollapseSim, rfm: DeepRFMSpec) -> list:
    """The real-image Deep RFM run and its M = I control (built whether or not the image files load)."""
    img = CollapseData(source=s.image_source, n_per_class=s.image_n_per_class)
    irfm = dataclasses.replace(rfm, depth=s.image_depth)
    return [({"what": "image", "seed": 0}, AgopCollapseRun("deep_rfm", img, irfm)),
            ({"what": "image_control", "seed": 0},
             AgopCollapseRun("deep_rfm", img, dataclasses.replace(irfm, use_agop=0.0)))]


def build_runs(s: AgopCollapseSim, probe_images: bool = True) -> dict[str, list]:
    data = _mixture(s)
    rfm = _rfm_spec(s)
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
    if s.nonorth_cosine > 0:
        # the main runs' static shapes (mean_cosine is traced): no new program
        nd = _mixture(s, s.nonorth_cosine)
        for seed in range(s.rfm_seeds):
            for what, use in (("nonorth", 1.0), ("nonorth_control", 0.0)):
                runs["rfm"].append(({"what": what, "seed": seed}, AgopCollapseRun(
                    "deep_rfm", nd, dataclasses.replace(rfm, feature_seed=seed, use_agop=use))))
    if s.cos_gamma > 0:
        cos = dataclasses.replace(rfm, feature="cos", width=0)
        for gamma in cos_gammas(s):
            for seed in range(s.cos_seeds):
                runs["rfm"].append(({"what": "cos", "gamma": gamma, "seed": seed}, AgopCollapseRun(
                    "deep_rfm", data, dataclasses.replace(cos, gamma=gamma, feature_seed=seed))))
        for seed in range(s.cos_seeds):
            runs["rfm"].append(({"what": "cos_control", "gamma": s.cos_gamma, "seed": seed}, AgopCollapseRun(
                "deep_rfm", data, dataclasses.replace(cos, gamma=s.cos_gamma, feature_seed=seed, use_agop=0.0))))
    for lam in s.grid_ridges:
        for bw in s.grid_bandwidths:
            runs["grid"].append(({"ridge": lam, "bandwidth": bw},
                                 AgopCollapseRun("deep_rfm", data, dataclasses.replace(rfm, ridge=lam, bandwidth=bw))))
    if probe_images and not _images_available(s):
        runs["rfm"] += _image_runs(s, rfm)
    runs["mlp"].append(({"gain": s.mlp_gain}, AgopCollapseRun("mlp", data, mlp=mlp)))
    if s.mlp_gain_large > 0:
        big = dataclasses.replace(mlp, model=dataclasses.replace(mlp.model, init_scale=s.mlp_gain_large))
        runs["mlp"].append(({"gain": s.mlp_gain_large}, AgopCollapseRun("mlp", data, mlp=big)))
    return {k: v for k, v in runs.items() if v}


# ------------------------------------------------------------------------------------------------ analysis helpers
def geometric_fit(nc1_layers, floor: float | None = None) -> dict:
    """Least-squares fit log NC1_l = log C + l log rho over layers l = 1.. with NC1 > floor (default
    :func:`fa_jax.theory.agop_collapse.nc1_float_floor`): {rho, c, r2, n}. R^2 = 1 - SS_res / SS_tot is NaN for a
    flat sequence (SS_tot = 0: no trend to explain) and when fewer than 3 layers are above the floor."""
    floor = T.nc1_float_floor() if floor is None else floor
    y = np.asarray(nc1_layers, float)
    layers = np.arange(1, len(y) + 1)
    m = np.isfinite(y) & (y > floor)
    if m.sum() < 3:
        return {"rho": float("nan"), "c": float("nan"), "r2": float("nan"), "n": int(m.sum())}
    ly = np.log(y[m])
    slope, icpt = np.polyfit(layers[m], ly, 1)
    pred = icpt + slope * layers[m]
    ss_res, ss_tot = float(np.sum((ly - pred) ** 2)), float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return {"rho": float(np.exp(slope)), "c": float(np.exp(icpt)), "r2": r2, "n": int(m.sum())}


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


def one_step_linear(s: AgopCollapseSim) -> dict:
    """P6 in float64: one linear-kernel AGOP layer on N = k * p6_n_per_class <= d mixture points, per ridge:
    measured NC1(X M^{1/2}) (kernel solve + closed-form AGOP gradient + eigh square root) vs the closed form
    :func:`fa_jax.theory.agop_collapse.one_step_nc1_closed_form` (NC1(A Y), A = G (G + lam I)^{-1}, G = X X^T).
    ``nc1_input`` = NC1(X) itself (what a step that does nothing would leave)."""
    cfg = GaussianMixture(k=s.k, d=s.d, n_per_class=s.p6_n_per_class, separation=s.separation,
                          within_std=s.within_std, mean_spread=s.mean_spread, seed=s.data_seed + 1)
    x, labels, y, meas = _one_step_nc1(cfg, s.k, jnp.asarray(s.p6_ridges, jnp.float64))
    x, labels, y = np.asarray(x), np.asarray(labels), np.asarray(y)
    closed = T.one_step_nc1_closed_form(x, y, labels, s.k, s.p6_ridges)
    mu = np.stack([x[labels == c].mean(0) for c in range(s.k)])
    nc1_in = float(np.sum((x - mu[labels]) ** 2) / len(x) / (np.sum((mu - mu.mean(0)) ** 2) / s.k))
    return {"ridges": list(s.p6_ridges), "nc1_measured": [float(v) for v in meas],
            "nc1_closed_form": [float(v) for v in closed], "nc1_input": nc1_in, "n": int(x.shape[0]), "d": s.d}


def _layers(runs, stage, key="nc1") -> np.ndarray:
    """``layers/<stage>/<key>`` of Deep RFM ``runs`` (dims ``(run, rfm_layer)``): ``[run, layer]`` float64."""
    return stacked(runs[f"layers/{stage}/{key}"], "run").astype(float)


def _frac(mask) -> float:
    """Fraction of True entries (NaN for an empty mask)."""
    mask = np.asarray(mask, bool)
    return float(np.mean(mask)) if mask.size else float("nan")


def _deep_rfm_checks(s: AgopCollapseSim, rfm: dict, metrics: dict) -> list[Check]:
    """P1-P4, P7, P14 on the mixture runs (geometric mean over feature seeds). ``rfm``: ``{what: runs}``, each on
    its ``run`` dim (:func:`analyse`)."""
    main = rfm["main"]
    floor = T.nc1_float_floor()
    gm = lambda rs, st, key="nc1": np.exp(np.mean(np.log(_layers(rs, st, key)), axis=0))
    x1, z1, p1 = gm(main, "x"), gm(main, "z"), gm(main, "phi")
    ctrl = gm(rfm["control_m_identity"], "x")
    fit = geometric_fit(x1)
    metrics["deep_rfm"] = {"nc1_x": x1, "nc1_z": z1, "nc1_phi": p1, "nc2_x": gm(main, "x", "nc2"),
                           "nc1_papyan_x": gm(main, "x", "nc1_papyan"), "control_nc1_x": ctrl, "fit": fit,
                           "agop_topk_frac": np.mean(stacked(main["layers/agop_topk_frac"], "run"), 0),
                           "agop_top1_frac": np.mean(stacked(main["layers/agop_top1_frac"], "run"), 0),
                           "nc1_ratio_last_first_per_seed": _last_first(main)}
    one, seeds = T.no_collapse_ratio(), f"geometric mean over {main.sizes['run']} feature seed(s)"
    c = []
    # P1
    c.append(Check("agop.p1.deep_rfm_nc1_ratio_last_first", float(x1[-1] / x1[0]), T.p1_nc1_ratio_max(), 0.0,
                   "at_most", T.provenance("p1_nc1_ratio_max"),
                   f"NC1(X_L)/NC1(X_1) over L = {s.depth} layers ({seeds}); null 1 = no collapse", null=one))
    above = x1 > floor
    dec = np.diff(np.log(x1))[above[1:]]
    c.append(Check("agop.p1.deep_rfm_monotone_fraction", _frac(dec < 0), T.p1_monotone_fraction_min(), 0.0,
                   "at_least", T.provenance("p1_monotone_fraction_min"),
                   "fraction of consecutive layers (above the float floor) where NC1(X_l) falls; null 0 = NC1 "
                   "never falls"))
    # P2: the projection collapses (layers whose NC1(X_l) is above the floor)
    ratio = (x1 / z1)[above]
    c.append(Check("agop.p2.agop_projection_min_factor", float(ratio.min()), T.p2_projection_factor_min(), 0.0,
                   "at_least", T.provenance("p2_projection_factor_min"),
                   "min over layers of NC1(X_l)/NC1(X_l M^1/2); null 1 = the projection changes nothing", null=one))
    # P3: the feature map does not; removing the AGOP stops the decrease
    inc = (p1 / z1)[above]
    c.append(Check("agop.p3.feature_map_max_increase", float(inc.max()), T.p3_feature_map_increase_max(), 0.0,
                   "at_most", T.provenance("p3_feature_map_increase_max"),
                   f"max over layers of NC1(Phi(Z_l))/NC1(Z_l), {s.feature} features. null None: the claim is that "
                   "the untrained map does NOT act, so its do-nothing value (1) agrees with it; what it rejects is "
                   "a map that undoes the collapse (ratio > 2)", null=None))
    c.append(Check("agop.p3.control_no_collapse", float(ctrl[-1] / ctrl[0]), T.p3_control_ratio_min(), 0.0,
                   "at_least", T.provenance("p3_control_ratio_min"),
                   "M = I control (random features only): NC1(X_L)/NC1(X_1). null None: a control whose claim is "
                   "'no collapse' agrees with a do-nothing run (ratio 1); what it rejects is collapse without the "
                   "AGOP (ratio -> 0)", null=None))
    # P4
    nc2 = metrics["deep_rfm"]["nc2_x"]
    c.append(Check("agop.p4.deep_rfm_nc2_ratio_last_first", float(nc2[-1] / nc2[0]), T.p4_nc2_ratio_max(), 0.0,
                   "at_most", T.provenance("p4_nc2_ratio_max"),
                   f"NC2(X_L)/NC2(X_1) on the mixture; NC2(X_1) = {nc2[0]:.3g}: near-orthogonal class means start "
                   "near the ETF floor, so this asks little (issue 17 s.3; see the image check); null 1", null=one))
    # P7
    c.append(Check("agop.p7.semilog_fit_r2", fit["r2"], T.p7_semilog_r2_min(), 0.0, "at_least",
                   T.provenance("p7_semilog_r2_min"),
                   f"log NC1(X_l) linear in l above the float floor: rho = {fit['rho']:.3g} over {fit['n']} layers; "
                   "null 0 = NC1 a random walk in depth (a flat NC1 has no R^2: NaN, fails)"))
    # P14
    c.append(Check("agop.p14.agop_topk_trace_fraction", float(np.min(metrics["deep_rfm"]["agop_topk_frac"])),
                   T.p14_topk_trace_fraction_min(), 0.0, "at_least", T.provenance("p14_topk_trace_fraction_min"),
                   f"min over layers of the top-K (K = {s.k}) eigenvalue share of the Deep RFM AGOP trace; null "
                   f"K/d = {T.isotropic_topk_fraction(s.k, s.d):.3g} (an isotropic AGOP)",
                   null=T.isotropic_topk_fraction(s.k, s.d)))
    return c


def _last_first(runs, key="nc1") -> list[float]:
    """Per run: ``<key>(X_L) / <key>(X_1)`` of Deep RFM ``runs`` (dims ``(run, rfm_layer)``, cut to their depth)."""
    x = _layers(runs, "x", key)
    return [float(v) for v in x[:, -1] / x[:, 0]]


def _stage_curves(runs) -> dict:
    """NC curves of one Deep RFM variant (geometric mean over its runs, i.e. its feature seeds; X_1, the normalised
    input, is the same in every run) and the per-seed last/first ratios. ``runs``: dims ``(run, rfm_layer)``."""
    gm = lambda st, key="nc1": np.exp(np.mean(np.log(_layers(runs, st, key)), axis=0))
    x = gm("x")
    return {"nc1_x": x, "nc1_z": gm("z"), "nc1_phi": gm("phi"), "nc2_x": gm("x", "nc2"), "fit": geometric_fit(x),
            "nc1_ratio_last_first_per_seed": _last_first(runs, "nc1"),
            "nc2_ratio_last_first_per_seed": _last_first(runs, "nc2")}


def _cos_sweep(s: AgopCollapseSim, runs) -> dict:
    """The cosine-RFF gamma curve: per gamma the NC1(X_L)/NC1(X_1) of every feature seed, their median / min / max,
    and the per-seed NC1(X_l) curves. ``runs``: the ``cos`` runs, dims ``(run, rfm_layer)`` with coordinate
    ``gamma``."""
    gammas = cos_gammas(s)
    per = [runs_where(runs, gamma=g) for g in gammas]
    ratios = [_last_first(rs) for rs in per]
    return {"gammas": list(gammas), "checked_gamma": s.cos_gamma, "official_gamma": T.official_rff_gamma(),
            "seeds": s.cos_seeds, "nc1_ratio_per_seed": ratios,
            "nc1_ratio_median": [float(np.median(v)) for v in ratios],
            "nc1_ratio_min": [float(np.min(v)) for v in ratios], "nc1_ratio_max": [float(np.max(v)) for v in ratios],
            "nc1_x_per_seed": [_layers(rs, "x") for rs in per]}


def _variant_checks(s: AgopCollapseSim, rfm: dict, metrics: dict, skipped: dict) -> list[Check]:
    """The cosine-RFF (gamma sweep; P1 and the P3 control at the official gamma) and real-image (P1, P3, P4 with its
    M = I control) Deep RFM variants. ``rfm``: ``{what: runs}`` (:func:`analyse`)."""
    one = T.no_collapse_ratio()
    c = []
    cos_names = ("agop.p1.cos_rff_deep_rfm_nc1_ratio_last_first", "agop.p3.cos_rff_control_no_collapse")
    if "cos" in rfm:
        sweep = _cos_sweep(s, rfm["cos"])
        at = runs_where(rfm["cos"], gamma=s.cos_gamma)
        metrics["deep_rfm"]["cos_gamma_sweep"] = sweep
        metrics["deep_rfm"]["cos"] = {**_stage_curves(at), "gamma": s.cos_gamma}
        metrics["deep_rfm"]["cos_control"] = {**_stage_curves(rfm["cos_control"]), "gamma": s.cos_gamma}
        per = metrics["deep_rfm"]["cos"]["nc1_ratio_last_first_per_seed"]
        cper = metrics["deep_rfm"]["cos_control"]["nc1_ratio_last_first_per_seed"]
        curve = ", ".join(f"{g:g}: {m:.2g} [{lo:.2g}, {hi:.2g}]" for g, m, lo, hi in
                          zip(sweep["gammas"], sweep["nc1_ratio_median"], sweep["nc1_ratio_min"],
                              sweep["nc1_ratio_max"]))
        c.append(Check(cos_names[0], float(np.median(per)), T.p1_nc1_ratio_max(), 0.0, "at_most",
                       T.provenance("p1_nc1_ratio_max"),
                       f"cosine random Fourier features (D = d) at gamma = {s.cos_gamma} (the official scripts' MNIST "
                       f"gamma is {T.official_rff_gamma()}: theory.official_rff_gamma), {s.depth} layers: MEDIAN over "
                       f"{len(per)} feature seeds of NC1(X_L)/NC1(X_1) (per seed {np.round(per, 5).tolist()}). The "
                       f"gamma curve, median [min, max] over seeds: {curve}; null 1", null=one))
        c.append(Check(cos_names[1], float(np.median(cper)), T.p3_control_ratio_min(), 0.0, "at_least",
                       T.provenance("p3_control_ratio_min"),
                       f"cosine RFF at gamma = {s.cos_gamma}, M = I control: median over {len(cper)} feature seeds "
                       f"of NC1(X_L)/NC1(X_1) (per seed {np.round(cper, 3).tolist()}); null None as for "
                       "agop.p3.control_no_collapse", null=None))
    else:
        skipped.update({n: "cosine-RFF variant disabled (cos_gamma = 0)" for n in cos_names})
    img_names = ("agop.p1.image_deep_rfm_nc1_ratio_last_first", "agop.p3.image_control_no_collapse",
                 "agop.p4.image_nc2_ratio_last_first", "agop.p4.image_control_nc2_ratio_last_first")
    if "image" in rfm:
        for what in ("image", "image_control"):
            metrics["deep_rfm"][what] = _stage_curves(rfm[what])
        xi, ci = metrics["deep_rfm"]["image"]["nc1_x"], metrics["deep_rfm"]["image_control"]["nc1_x"]
        n2, c2 = metrics["deep_rfm"]["image"]["nc2_x"], metrics["deep_rfm"]["image_control"]["nc2_x"]
        where = (f"{s.image_source} ({s.image_n_per_class}/class), {s.image_depth} layers (the paper: 50k points, "
                 "20 layers)")
        c.append(Check(img_names[0], float(xi[-1] / xi[0]), T.p1_nc1_ratio_max(), 0.0, "at_most",
                       T.provenance("p1_nc1_ratio_max"), f"{where}: NC1(X_L)/NC1(X_1); null 1", null=one))
        c.append(Check(img_names[1], float(ci[-1] / ci[0]), T.p3_control_ratio_min(), 0.0, "at_least",
                       T.provenance("p3_control_ratio_min"),
                       f"{where}: M = I control NC1(X_L)/NC1(X_1); null None as for agop.p3.control_no_collapse",
                       null=None))
        c.append(Check(img_names[2], float(n2[-1] / n2[0]), T.p4_nc2_ratio_max(), 0.0, "at_most",
                       T.provenance("p4_nc2_ratio_max"),
                       f"{where}: NC2(X_L)/NC2(X_1), NC2(X_1) = {n2[0]:.3g}; null 1", null=one))
        c.append(Check(img_names[3], float(c2[-1] / c2[0]), T.p4_control_nc2_ratio_min(), 0.0, "at_least",
                       T.provenance("p4_control_nc2_ratio_min"),
                       f"{where}: M = I control NC2(X_L)/NC2(X_1), {c2[0]:.3g} -> {c2[-1]:.3g}. null None: a control "
                       "whose claim is 'NC2 does not fall without the AGOP' agrees with a do-nothing run (ratio 1); "
                       "what it rejects is NC2 collapse without the AGOP (ratio -> 0)", null=None))
    else:
        why = _images_available(s) or "image runs absent"
        skipped.update({n: f"image runs not run: {why}" for n in img_names})
    return c


def _nonorth_checks(s: AgopCollapseSim, rfm: dict, metrics: dict, skipped: dict) -> list[Check]:
    """P4 (NC2 falls) and its M = I control on the mixture with chained class means, cos(u_c, u_c') =
    rho^|c - c'| (geometric mean over the ``rfm_seeds`` feature seeds): there the input NC2 is well above the
    orthonormal floor, so the claim can fail."""
    names = ("agop.p4.nonorth_nc2_ratio_last_first", "agop.p4.nonorth_control_nc2_ratio_last_first")
    if "nonorth" not in rfm:
        skipped.update({n: "non-orthogonal mixture disabled (nonorth_cosine = 0)" for n in names})
        return []
    main, ctrl = _stage_curves(rfm["nonorth"]), _stage_curves(rfm["nonorth_control"])
    pop, pop0 = population_nc2(_mixture_cfg(s, s.nonorth_cosine)), population_nc2(_mixture_cfg(s))
    metrics["deep_rfm"]["nonorth"] = {**main, "mean_cosine": s.nonorth_cosine, "population_nc2": pop,
                                      "population_nc2_orthonormal": pop0}
    metrics["deep_rfm"]["nonorth_control"] = ctrl
    n2, c2 = main["nc2_x"], ctrl["nc2_x"]
    where = (f"mixture with chained class means (cos = {s.nonorth_cosine}^|c - c'|; population NC2 of the means "
             f"{pop:.3g}, orthonormal {pop0:.3g}), geometric mean over {rfm['nonorth'].sizes['run']} feature seed(s)")
    return [Check(names[0], float(n2[-1] / n2[0]), T.p4_nc2_ratio_max(), 0.0, "at_most",
                  T.provenance("p4_nc2_ratio_max"),
                  f"{where}: NC2(X_L)/NC2(X_1), {n2[0]:.3g} -> {n2[-1]:.3g} (per seed "
                  f"{np.round(main['nc2_ratio_last_first_per_seed'], 3).tolist()}); null 1", null=T.no_collapse_ratio()),
            Check(names[1], float(c2[-1] / c2[0]), T.p4_control_nc2_ratio_min(), 0.0, "at_least",
                  T.provenance("p4_control_nc2_ratio_min"),
                  f"{where}, M = I control: NC2(X_L)/NC2(X_1), {c2[0]:.3g} -> {c2[-1]:.3g}. null None as for "
                  "agop.p4.image_control_nc2_ratio_last_first", null=None)]


def _p6_checks(p6: dict) -> list[Check]:
    m6, c6 = np.asarray(p6["nc1_measured"]), np.asarray(p6["nc1_closed_form"])
    c = [Check("agop.p6.one_step_ridgeless_nc1", float(m6[0]), T.one_step_ridgeless_nc1(),
               T.one_step_ridgeless_tol(), "at_most", T.provenance("one_step_ridgeless_nc1"),
               f"linear kernel, lambda = 0, N = {p6['n']} <= d = {p6['d']}: Gram = YY^T, NC1 = 0 (float64); null = "
               f"NC1 of the input X ({p6['nc1_input']:.3g}, a step that does nothing)", null=p6["nc1_input"])]
    c.append(Check("agop.p6.one_step_monotone_in_ridge", _frac(np.diff(m6) > 0), T.one_step_monotone_fraction(),
                   0.0, "abs", T.provenance("one_step_monotone_fraction"),
                   f"fraction of consecutive ridges in {p6['ridges']} where the one-step NC1 increases; null 0 = NC1 "
                   "independent of lambda"))
    r = m6[1:] / c6[1:]
    worst = float(r[np.argmax(np.abs(r - 1.0))])
    c.append(Check("agop.p6.one_step_closed_form", worst, T.one_step_closed_form_ratio(), T.one_step_closed_form_tol(),
                   "rel", T.provenance("one_step_nc1_closed_form"),
                   "measured NC1(X M^1/2) / closed form NC1(A Y), A = G(G + lambda I)^-1, farthest from 1 over "
                   "lambda > 0. null None: an instrument (kernel solve + AGOP + eigh root) vs an exact formula, no "
                   "training", null=None))
    return c


def _records(run) -> dict:
    """The records of one MLP run (``run``: the ``mlp`` part at one gain, dims ``(step, ...)``): ``{name: [step,
    ...]}`` per output ``records/<name>``, and ``nc1``: ``{factor: [step, layer]}`` per ``records/nc1/<factor>``."""
    rec: dict = {"nc1": {}}
    for var in run.data_vars:
        if var.startswith("records/nc1/"):
            rec["nc1"][var[len("records/nc1/"):]] = run[var].values
        elif var.startswith("records/"):
            rec[var[len("records/"):]] = run[var].values
    return rec


def _mlp_checks(s: AgopCollapseSim, mlp, metrics: dict, skipped: dict) -> list[Check]:
    """P9-P13 on the MLP runs; ``mlp``: the ``mlp`` part, dims ``(gain, step, ...)`` (:func:`analyse`)."""
    small = mlp.sel(gain=s.mlp_gain)
    rec = _records(small)
    nc, fr = rec["nc1"], rec["frac_right"][-1]
    c = [Check("agop.p9.svt_reduces_nc1_every_layer", _frac(nc["svt"][-1] < nc["phi"][-1]), T.p9_svt_fraction(),
               0.0, "abs", T.provenance("p9_svt_fraction"),
               "end of training: fraction of hidden layers with NC1(S V^T Phi) < NC1(Phi); null 1/2 = an untrained "
               "S V^T (a random near-isometry) moves NC1 up or down by chance", null=T.coin_flip_fraction())]
    c.append(Check("agop.p9.frac_right_min", float(np.min(fr)), T.p9_frac_right_min(), 0.0, "at_least",
                   T.provenance("p9_frac_right_min"),
                   "min over hidden layers of the right-singular share of the log-NC1 reduction; null 0 = S V^T "
                   "does none of it"))
    ratio = nc["pre"] / nc["svt"]
    worst = float(ratio.flat[np.nanargmax(np.abs(ratio - 1.0))])
    c.append(Check("agop.p10.u_invariance", worst, T.u_invariance_ratio(), T.u_invariance_tol(), "rel",
                   T.provenance("u_invariance_ratio"),
                   "NC1(U S V^T Phi)/NC1(S V^T Phi) farthest from 1 over layers and records. null None: an exact "
                   "identity of the metric code, no training", null=None))
    # NFA claims over hidden layers 2..L: layer 1's AGOP is built from the same W1 as its Gram, so its correlation
    # is ~0.95 at init by construction (issue 17 s.3); layer 1 is reported in the notes and metrics
    nfa_h, nfa_1 = rec["nfa_half"], rec["nfa_one"]
    h2, o2 = nfa_h[:, 1:], nfa_1[:, 1:]
    l1 = f"layer 1 (not counted): {nfa_h[0, 0]:.3f} at init -> {nfa_h[-1, 0]:.3f}"
    c.append(Check("agop.p11.nfa_rise_fraction", _frac(h2[-1] > h2[0]), T.p11_rise_fraction(), 0.0, "abs",
                   T.provenance("p11_rise_fraction"),
                   f"fraction of hidden layers 2..{h2.shape[1] + 1} whose rho_1/2 ends above its value at init "
                   f"(init {np.round(h2[0], 3).tolist()} -> end {np.round(h2[-1], 3).tolist()}; {l1}); a sign test: "
                   "null 0 = no layer moves"))
    # per layer: the final correlation against that layer's own at-init baseline (issue 17 s.3), every layer
    n_agop = s.n_agop  # validate(): 1 <= n_agop <= n
    for j in range(nfa_h.shape[1]):
        why = ("; layer 1's AGOP is built from the same W1 as W1^T W1, so its at-init value is high by construction: "
               "only this comparison with its own baseline is meaningful there") if j == 0 else ""
        c.append(Check(f"agop.p11.nfa_rise_layer{j + 1}", float(nfa_h[-1, j] - nfa_h[0, j]), T.p11_rise_min(), 0.0,
                       "at_least", T.provenance("p11_rise_min"),
                       f"hidden layer {j + 1}: final rho(W^T W, AGOP^1/2) minus its value at init ({nfa_h[0, j]:.3f} "
                       f"-> {nfa_h[-1, j]:.3f}; AGOP over {n_agop} training points){why}; null 0 = unchanged"))
    last = nfa_h.shape[1]
    c.append(Check("agop.p11.nfa_final_min", float(np.min(h2[-1])), T.p11_nfa_final_min(), 0.0, "at_least",
                   T.provenance("p11_nfa_final_min"),
                   f"min over hidden layers 2..{last} of the final rho(W^T W, AGOP^1/2) (reached at layer "
                   f"{int(np.argmin(h2[-1])) + 2}; layer {last} ends at {nfa_h[-1, -1]:.3f}, reported as measured in "
                   f"metrics.mlp.small.nfa_half_final_last_layer; {l1}); null 0 = uncorrelated"))
    c.append(Check("agop.p11.half_above_one_fraction", _frac(h2[-1] > o2[-1]),
                   T.p11_half_above_one_fraction(), 0.0, "abs", T.provenance("p11_half_above_one_fraction"),
                   f"fraction of hidden layers 2..{h2.shape[1] + 1} with rho_1/2 > rho_1 at the end (rho_1: "
                   f"{np.round(o2[-1], 3).tolist()}); null 1/2 = no systematic order", null=T.coin_flip_fraction()))
    out_end = nc["out"][-1]
    c.append(Check("agop.p12.nc1_decreases_with_layer", _frac(np.diff(np.log(out_end)) < 0),
                   T.p12_layer_decrease_fraction(), 0.0, "abs", T.provenance("p12_layer_decrease_fraction"),
                   "end of training: fraction of consecutive hidden layers where the output NC1 falls; null 1/2 = "
                   "random layers move NC1 up or down by chance", null=T.coin_flip_fraction()))
    sw, sb = rec["sw_over_st"], rec["sb_over_st"]
    c.append(Check("agop.p12.sw_over_st_drop", float(sw[0] / sw[-1]), T.p12_sw_drop_min(), 0.0, "at_least",
                   T.provenance("p12_sw_drop_min"),
                   "last hidden layer: tr S_W/tr S_T at init over at the end; null 1 = unchanged",
                   null=T.no_collapse_ratio()))
    c.append(Check("agop.p12.sb_over_st_rise_ratio", float(sb[-1] / sb[0]), T.p12_sb_rise_min(), 0.0, "at_least",
                   T.provenance("p12_sb_rise_min"),
                   "last hidden layer: tr S_B/tr S_T at the end over at init; null 1 = unchanged",
                   null=T.no_collapse_ratio()))
    mlp_metrics = {"small": _mlp_summary(small, s.k)}
    p13 = ("agop.p13.nfa_drop_at_large_init", "agop.p13.frac_right_drop_at_large_init")
    if s.mlp_gain_large > 0:
        big = mlp.sel(gain=s.mlp_gain_large)
        mlp_metrics["large"] = _mlp_summary(big, s.k)
        nb = big["records/nfa_half"].values[-1]
        fb = big["records/frac_right"].values[-1]
        for name, a, b, what, first in ((p13[0], h2[-1], nb[1:], "final rho_1/2", 2),
                                        (p13[1], fr, fb, "final frac_right", 1)):
            c.append(Check(name, _frac(a > b), T.p13_drop_fraction(), 0.0, "abs", T.provenance("p13_drop_fraction"),
                           f"fraction of hidden layers {first}..{len(fr)} whose {what} at gain {s.mlp_gain} exceeds "
                           f"that at gain {s.mlp_gain_large} (small: {np.round(a, 3).tolist()}, large: "
                           f"{np.round(b, 3).tolist()}); a sign test: null 1/2 = the gain does not matter",
                           null=T.coin_flip_fraction()))
    else:
        skipped.update({n: "large-init MLP run disabled (mlp_gain_large = 0)" for n in p13})
    metrics["mlp"] = mlp_metrics
    return c


def analyse(s: AgopCollapseSim, ds, p6: dict) -> tuple[list[Check], dict, dict]:
    """``(checks, metrics, not_evaluated)`` from ``ds``, the sweep's labelled Dataset (``load_results`` of its
    cache: dim ``run``, the module docstring); every prediction and threshold from
    :mod:`fa_jax.theory.agop_collapse`."""
    metrics: dict = {"p6": p6}
    skipped: dict = {}
    # Deep RFM variants: (what, seed) repeat over the cosine gammas, so the part stays on its run dim; each variant
    # cut to its depth (the image runs are NaN-padded to the mixture runs' depth, or these to theirs)
    rfm = {}
    for what in dict.fromkeys(runs_where(ds, part="rfm")["what"].values.tolist()):
        depth = s.image_depth if what in ("image", "image_control") else s.depth
        rfm[what] = runs_where(ds, part="rfm", what=what).isel(rfm_layer=slice(0, depth))
    checks = _deep_rfm_checks(s, rfm, metrics)
    checks += _nonorth_checks(s, rfm, metrics, skipped)
    checks += _p6_checks(p6)
    checks += _variant_checks(s, rfm, metrics, skipped)
    # grid: phase diagram of NC1 per (ridge, bandwidth, depth), in the sim's order of the runs
    grid = []
    runs = select_runs(ds, "grid", unstack=False).isel(rfm_layer=slice(0, s.depth))
    xs = _layers(runs, "x")
    for i in range(runs.sizes["run"]):
        # a ridgeless kernel solve can fail (Cholesky of a singular K) once the features collapse: such a grid
        # point is marked diverged (NaN), a result of the phase diagram, not an error
        grid.append({"ridge": runs["ridge"].values[i].item(), "bandwidth": runs["bandwidth"].values[i].item(),
                     "nc1_x": xs[i], "final_nc1": float(xs[i, -1]), "fit": geometric_fit(xs[i]),
                     "diverged": bool(runs["diverged"].values[i].any())})
    metrics["grid"] = grid
    checks += _mlp_checks(s, select_runs(ds, "mlp", unstack=True), metrics, skipped)
    return checks, metrics, skipped


def _mlp_summary(run, k: int) -> dict:
    """The summary of one MLP run (the ``mlp`` part at one gain, dims ``(step, ...)``)."""
    rec = _records(run)
    half, one = rec["nfa_half"], rec["nfa_one"]  # [step, layer]
    return {"plan": run["step"].values, "loss": rec["loss"], "train_acc": rec["acc"],
            "nc1_final": {f: v[-1] for f, v in rec["nc1"].items()}, "frac_right_final": rec["frac_right"][-1],
            "nfa_half": half, "nfa_one": one, "sw_over_st": rec["sw_over_st"], "sb_over_st": rec["sb_over_st"],
            "nc2_out_final": rec["nc2_out"][-1],
            # each layer's NFA correlation at init (its baseline) and at the end; the last layer's final value
            "nfa_per_layer": {"init_half": half[0], "final_half": half[-1], "rise_half": half[-1] - half[0],
                              "init_one": one[0], "final_one": one[-1]},
            "nfa_half_final_last_layer": float(half[-1, -1]),
            "nc1_out_final_code_normalisation": rec["nc1"]["out"][-1] / k}


def run(s: AgopCollapseSim, out_dir: str, progress: bool = True, command: str = "") -> dict:
    s = s.validate()
    os.makedirs(out_dir, exist_ok=True)
    with jax.enable_x64(True), lapack_single_threaded():  # spec 6: float64 metrics (NC1 falls toward 1e-10)
        runs = build_runs(s)
        # the image source's arrays are shared inputs of their programs (unbatched arguments, in the memory plan),
        # not constants; the mixture runs have none ({}), so their programs and chunk names are those without them
        _, engine = run_labelled(run_agop_collapse, runs, out_dir=os.path.join(out_dir, "cache"), tag=SIM,
                                 progress=progress, desc=SIM, shared=shared_collapse_data)
        p6 = one_step_linear(s)
    # every number below comes from the labelled Dataset the sweep wrote (dim run; the module docstring)
    ds = load_results(os.path.join(out_dir, "cache"), sweep=SIM)
    checks, metrics, not_evaluated = analyse(s, ds, p6)
    metrics["image_runs"] = _images_available(s) or "ran"
    metrics["normalisation"] = ("NC1 = tr S_W / tr S_B, textbook (S_W over N samples, S_B over K classes); the paper "
                                "code's NC1 is this / K for balanced classes")
    metrics.update(engine)
    metrics["figures"] = agop_figures(out_dir, s, ds, metrics)
    return finish(out_dir, sim=SIM, config=s, checks=checks, metrics=metrics, command=command,
                  not_evaluated=not_evaluated)
