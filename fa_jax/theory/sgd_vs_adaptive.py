"""Closed forms for arXiv 2308.06703 (``../shared/specs/sgd_vs_adaptive.md``, Sec. 3).

Notation (float64 numpy; trailing axis = ``frequency`` k or ``position`` i of R^d): DCT coordinates
``wt = C.T w`` with C the orthonormal DCT-II matrix (:func:`fa_jax.frequency.dct_matrix`); per-frequency data
standard deviations ``st`` (x = C xt, xt_k ~ N(0, st_k^2) independent); target ``wt*``; error ``et = wt - wt*``.

Every function returns plain floats / numpy arrays and has a ``PROVENANCE`` entry whose kind is one of
(:mod:`fa_jax.summary`): ``derived`` = our own derivation (a check of it must pass inside the domain its docstring
states), ``paper (where)`` = a value stated by / read off the paper, ``paper claim (where, unverified)`` = an
empirical claim of the paper (the simulator records whether it reproduces). Every ``predicted`` value and every
threshold of ``sims/sgd_vs_adaptive.py`` is one of these functions.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import require
from ..frequency import dct_matrix

PROVENANCE = {
    "std_risk": "derived",  # T1: R_s = 1/2 sum_k st_k^2 et_k^2
    "dual_norm": "derived",  # T1: max_{||d||<=eps} <w, d> = eps ||w||_*  (l2 -> l2, linf -> l1)
    "inner_max": "derived",  # T1: max_{||d||<=eps} (<w, x + d> - y)^2 = (|<e, x>| + eps ||w||_*)^2
    "worst_delta": "derived",  # T1: the maximiser of the inner problem
    "adv_risk": "derived",  # T1 (l2, spec); linf with ||w||_1 is a project extension (same derivation)
    "adv_risk_linear": "derived",  # T1 evaluated at a linear model given in DCT coordinates
    "adv_risk_zero_std": "derived",  # T1 at R_s = 0; "robustness ~ 1/||w||" is [paper]
    # tau / ||w|| is exact arithmetic; the paper's "l2 robustness ~ 1/||w||" is its reading
    "l2_sensitivity_radius": "derived",
    "gd_error": "derived",  # T2: et_k(t) = (1 - lr st_k^2)^t et_k(0)
    "gd_limit_tilde": "derived",  # T2: wt(inf) = wt* on relevant k, wt(0) on zero-variance k
    "signgd_coeffs": "derived",  # T3: grad_w L = A (1,1,1) + B (1,0,-1)
    "signgd_step_tilde": "derived",  # T3: one exact-gradient signGD step in DCT coordinates
    "signgd_formula_valid": "derived",  # T3: the displacement formula needs |A(0)| >= |B(0)|
    "signgd_switch_e0": "derived",  # T3: |et_0| at the end of Phase 1
    "signgd_phase_times": "derived",  # T3: Phase 1 / Phase 2 end times
    "signgd_drift_rate": "derived",  # T3/P2: Phase-2 drift of the irrelevant weight, 2 lr sgn(et_0)/sqrt6 per step
    "signgd_displacement": "derived",  # T3: Delta wt_2 = sgn(et_0(0)) sqrt3 (st_1^2/st_0^2) |et_1(0)|
    "signgd_final_tilde": "derived",  # T3: (wt*_0, wt*_1, wt_2(0) + Delta wt_2)
    "simulate_signgd": "derived",  # reference iteration of exact-gradient signGD (any d, pixel or DCT sign basis)
    "certified_radius_l2": "derived",  # T6: |<w, x> + b| / ||w||
    "radius_shrink_factor": "derived",  # T6/P13: ||w_rel|| / ||w||
    "paper_predictions": "derived",  # T1-T3 at the paper's 3-D defaults
    # ---- predicted values and thresholds of the simulator's checks
    "gd_irrelevant_shift": "derived",  # T2: max_t |et_k(t) - et_k(0)| over zero-variance k (= 0)
    "signgd_irrelevant_shift": "derived",  # P14: the reference iteration's max |wt_2(t) - wt_2(0)|
    "converged_std_risk_max": "derived",  # P2/P7: R_s < 1e-5 after t ~ 1000 (lr = 0.01, paper's 3-D problem)
    "mc_z": "derived",  # P6: |MC R_a - T1| in standard errors (+ float64 rounding allowance)
    "mc_z_max": "derived",  # P6: 3 standard errors per run, Bonferroni over n runs
    "ordering_fraction": "derived",  # P7: all consecutive pairs of R_a(GD) < R_a(signGD) < R_a(Adam) < R_a(RMSProp)
    "closed_form_rel_error_max": "derived",  # P3/P5: the T3 displacement within 2 % (exact gradients)
    "sgd_first_layer_irrelevant_change": "derived",  # SGD's first-layer weight on zero-variance inputs: no change
    "local_over_global_max": "derived",  # ||grad_x margin|| <= sqrt2 ||J|| <= sqrt2 prod ||A_l||
    "paper_clean_acc_spread_max": "paper (Fig. 1 / spec P9)",  # clean-accuracy spread <= 2.5 points
    "paper_sgd_more_robust_fraction": "paper (Fig. 1 / spec P9)",  # SGD most robust in 21/21 comparisons
    "paper_sgd_smaller_lipschitz_fraction": "paper claim (abstract / spec T5, P12, unverified)",
    "paper_lipschitz_explains_robustness_fraction": "paper claim (abstract / spec T5, unverified)",
    "paper_band_noise_sgd_advantage_min": "paper claim (Fig. 4 band-limited noise / spec P10, S6, unverified)",
    "paper_p10_n_bands": "paper (Fig. 4 / spec Sec. 2.3: 10 radial DCT bands)",
    "paper_p10_sgd_rise_max": "paper claim (Fig. 4, CIFAR100 / spec P10: SGD's drop non-increasing within 0.2 points; "
                              "unverified here)",
    "paper_p10_ratio_bands": "paper claim (Fig. 4, CIFAR100 / spec P10: bands 5-8; unverified here)",
    "paper_p10_adam_over_sgd_min": "paper claim (Fig. 4, CIFAR100 / spec P10: Adam's drop >= 5x SGD's in bands 5-8; "
                                   "unverified here)",
    "paper_p10_between_bands": "paper claim (Fig. 4, CIFAR100 / spec P10: RMSProp between SGD and Adam, bands 4-8 of the "
                               "figure's table; unverified here)",
    "paper_p10_between_fraction": "paper claim (Fig. 4, CIFAR100 / spec P10: RMSProp between SGD and Adam; unverified "
                                  "here)",
    "paper_removal_max_percent": "paper claim (spec P11: 'up to ~50 %' removed; unverified)",
    "paper_removal_clean_drop_max": "paper claim (spec P11: 'within a few points', read as 3 points; threshold "
                                    "unverified)",
    "paper_removal_gap_closure_min": "paper claim (spec S6: Phi_freq training 'expected to close part of the adaptive "
                                     "gap'; unverified)",
    "freq_removal_relevant_removed": "derived (Phi_freq's radial mask vs the data's non-zero-variance coefficients)",
    "freq_removal_keeps_relevant": "derived (Phi_freq's kept radial mask vs the data's non-zero-variance coefficients)",
    "empty_band_removal_change": "derived (removing zero-variance DCT coefficients leaves the data unchanged)",
}

NORMS = ("l2", "linf")
_SQRT2, _SQRT3, _SQRT6 = math.sqrt(2.0), math.sqrt(3.0), math.sqrt(6.0)


def _f(x):
    return np.asarray(x, dtype=np.float64)


# ------------------------------------------------------------------------------------------------ T1 risks

def std_risk(w_tilde, w_star_tilde, sigma_tilde):
    """T1: R_s = 1/2 E[(<w, x> - y)^2] = 1/2 sum_k st_k^2 (wt_k - wt*_k)^2.

    ``w_tilde (..., frequency)``, ``w_star_tilde``, ``sigma_tilde (frequency,)`` -> ``(...)``.
    (Not the notebook's sum_k st_k et_k^2 plotting quirk.)
    """
    e = _f(w_tilde) - _f(w_star_tilde)
    return 0.5 * np.sum((_f(sigma_tilde) * e) ** 2, axis=-1)


def dual_norm(w, norm: str = "l2"):
    """||w||_* for the perturbation norm: ``"l2"`` -> ||w||_2, ``"linf"`` -> ||w||_1 (``w (..., position)``)."""
    require(norm in NORMS, "norm", f"one of {NORMS}", norm)
    w = _f(w)
    return np.sqrt(np.sum(w * w, axis=-1)) if norm == "l2" else np.sum(np.abs(w), axis=-1)


def _check_eps(eps):
    e = _f(eps)
    require(bool(np.all(np.isfinite(e))) and bool(np.all(e >= 0)), "eps", "finite numbers >= 0", eps)
    return e


def inner_max(residual, w, eps, norm: str = "l2"):
    """T1 inner problem per sample: max_{||d|| <= eps} (r + <w, d>)^2 = (|r| + eps ||w||_*)^2.

    ``residual`` r = <w, x> - y ``(samples,)``; ``w (position,)``; returns ``(samples,)``.
    """
    eps = _check_eps(eps)
    return (np.abs(_f(residual)) + eps * dual_norm(w, norm)) ** 2


def worst_delta(residual, w, eps, norm: str = "l2"):
    """The maximiser of :func:`inner_max`: ``(samples, position)``.

    l2: d* = eps sgn(r) w / ||w||_2;  linf: d* = eps sgn(r) sign(w)  (sgn(0) := +1: both signs attain the max).
    """
    eps = _check_eps(eps)
    w = _f(w)
    s = np.where(_f(residual) >= 0, 1.0, -1.0)[..., None]
    if dual_norm(w, norm) == 0:
        return np.zeros(s.shape[:-1] + w.shape)
    direction = w / dual_norm(w, "l2") if norm == "l2" else np.sign(w)
    return eps * s * direction


def adv_risk(r_s, w_norm, eps):
    """T1: R_a = 1/2 E[max_{||d||<=eps} (<w, x+d> - y)^2] for Gaussian x, ``<e, x> ~ N(0, 2 R_s)``:

        R_a = R_s + eps sqrt(2/pi) sqrt(2 R_s) ||w||_* + (eps^2 / 2) ||w||_*^2.

    ``w_norm`` is the dual norm of the spatial weights (||w||_2 for l2 attacks, ||w||_1 for linf). Broadcasts; a
    NaN risk (a diverged run's measurement) gives NaN.
    """
    eps = _check_eps(eps)
    r_s, n = _f(r_s), _f(w_norm)
    require(bool(np.all((r_s >= 0) | np.isnan(r_s))), "r_s", "standard risks >= 0 (or NaN: a diverged run)", r_s)
    return r_s + eps * math.sqrt(2.0 / math.pi) * np.sqrt(2.0 * r_s) * n + 0.5 * eps ** 2 * n ** 2


def adv_risk_linear(w_tilde, w_star_tilde, sigma_tilde, eps, norm: str = "l2", basis=None):
    """T1 at a linear model given in DCT coordinates ``w_tilde (..., frequency)``.

    R_s from :func:`std_risk`; the dual norm is taken of the spatial w = C wt (``basis`` C, default the DCT-II
    matrix of size d; the l2 norm is basis-independent, the linf case needs the pixel-basis l1 norm).
    """
    wt = _f(w_tilde)
    c = dct_matrix(wt.shape[-1]) if basis is None else _f(basis)
    w = wt @ c.T
    return adv_risk(std_risk(wt, w_star_tilde, sigma_tilde), dual_norm(w, norm), eps)


def adv_risk_zero_std(w_norm, eps):
    """T1 at R_s = 0: R_a = eps^2 ||w||^2 / 2 (= (eps^2/2)(||wt*||^2 + sum_irrelevant wt_k^2) for l2)."""
    eps = _check_eps(eps)
    return 0.5 * eps ** 2 * _f(w_norm) ** 2


def l2_sensitivity_radius(w_norm, tau):
    """Smallest l2 perturbation that moves a linear output <w, x> by tau: tau / ||w||_2 (robustness ~ 1/||w||)."""
    return _f(tau) / _f(w_norm)


# ------------------------------------------------------------------------------------------------ T2 GD

def gd_error(e0_tilde, sigma_tilde, lr, t):
    """T2: population GD in DCT coordinates decouples, et_k(t) = (1 - lr st_k^2)^t et_k(0) (exact power).

    ``e0_tilde (frequency,)``, ``t`` scalar or ``(times,)`` -> ``(frequency,)`` or ``(times, frequency)``.
    Zero-variance frequencies never move.
    """
    t = _f(t)
    factor = (1.0 - _f(lr) * _f(sigma_tilde) ** 2)
    return factor ** t[..., None] * _f(e0_tilde)


def gd_limit_tilde(w0_tilde, w_star_tilde, sigma_tilde):
    """T2: GD's limit wt(inf) = wt* on frequencies with st_k > 0 and wt(0) on zero-variance ones."""
    return np.where(_f(sigma_tilde) > 0, _f(w_star_tilde), _f(w0_tilde))


# ------------------------------------------------------------------------------------------------ T3 signGD

def _check_3d(sigma_tilde):
    s = _f(sigma_tilde)
    require(s.shape == (3,) and s[2] == 0 and s[0] > 0 and s[1] > 0, "sigma_tilde",
            "a 3-vector (st_0 > 0, st_1 > 0, st_2 = 0) (the T3 analysis is for the 3-D problem)", sigma_tilde)
    return s


def signgd_coeffs(e_tilde, sigma_tilde):
    """T3: grad_w L = A (1,1,1) + B (1,0,-1) with A = st_0^2 et_0 / sqrt3, B = st_1^2 et_1 / sqrt2.

    ``e_tilde (..., 3)`` -> ``(A (...), B (...))``.
    """
    s = _check_3d(sigma_tilde)
    e = _f(e_tilde)
    return s[0] ** 2 * e[..., 0] / _SQRT3, s[1] ** 2 * e[..., 1] / _SQRT2


def signgd_step_tilde(e_tilde, sigma_tilde, lr):
    """T3: one exact-gradient signGD step (sign in the pixel basis) written in DCT coordinates.

    With sign grad_w L = (sgn(A+B), sgn A, sgn(A-B)) and sgn(0) = 0:
    d et_0 = -(lr/sqrt3)[sgn(A+B) + sgn A + sgn(A-B)],  d et_1 = -(lr/sqrt2)[sgn(A+B) - sgn(A-B)],
    d et_2 = -lr[(sgn(A+B) + sgn(A-B))/sqrt6 - sqrt(2/3) sgn A].  Returns the new ``e_tilde (..., 3)``.
    """
    a, b = signgd_coeffs(e_tilde, sigma_tilde)
    sp, s0, sm = np.sign(a + b), np.sign(a), np.sign(a - b)
    d = np.stack([-(sp + s0 + sm) / _SQRT3, -(sp - sm) / _SQRT2, -((sp + sm) / _SQRT6 - math.sqrt(2 / 3) * s0)], -1)
    return _f(e_tilde) + _f(lr) * d


def signgd_formula_valid(e0_tilde, sigma_tilde):
    """T3: the displacement formula holds when |A(0)| >= |B(0)| (Phase 1 comes first)."""
    a, b = signgd_coeffs(e0_tilde, sigma_tilde)
    return np.abs(a) >= np.abs(b)


def signgd_switch_e0(e0_tilde, sigma_tilde):
    """T3: |et_0| where Phase 1 ends (|A| = |B|): sqrt(3/2) (st_1^2/st_0^2) |et_1(0)| (et_1 frozen in Phase 1)."""
    s = _check_3d(sigma_tilde)
    return math.sqrt(1.5) * (s[1] ** 2 / s[0] ** 2) * np.abs(_f(e0_tilde)[..., 1])


def signgd_phase_times(e0_tilde, sigma_tilde, lr):
    """T3: ``(t1, t2)`` = end of Phase 1 and of Phase 2 (et_0 reaches 0), in steps (real numbers).

    Phase 1: |et_0| falls by lr sqrt3 per step to s = :func:`signgd_switch_e0`, t1 = (|et_0(0)| - s)/(lr sqrt3).
    Phase 2: et_0 moves lr/sqrt3 per step, t2 = t1 + sqrt3 s / lr.  NaN where |A(0)| < |B(0)| (no clean phases).
    Defaults: t1 ~ 111, t2 ~ 642.
    """
    e0 = _f(e0_tilde)
    s = signgd_switch_e0(e0, sigma_tilde)
    lr = _f(lr)
    t1 = (np.abs(e0[..., 0]) - s) / (lr * _SQRT3)
    t2 = t1 + _SQRT3 * s / lr
    ok = signgd_formula_valid(e0, sigma_tilde)
    return np.where(ok, t1, np.nan), np.where(ok, t2, np.nan)


def signgd_drift_rate(e0_tilde, lr):
    """T3/P2: Phase-2 change of the irrelevant weight per step, +2 lr sgn(et_0(0)) / sqrt6 (-0.00816 at defaults)."""
    return 2.0 * _f(lr) * np.sign(_f(e0_tilde)[..., 0]) / _SQRT6


def signgd_displacement(e0_tilde, sigma_tilde):
    """T3: net signGD displacement of the irrelevant weight, independent of lr to first order:

        Delta wt_2 = sgn(et_0(0)) sqrt3 (st_1^2 / st_0^2) |et_1(0)|.

    Valid when |A(0)| >= |B(0)| (:func:`signgd_formula_valid`); beyond it the formula overestimates |Delta wt_2|.
    """
    s = _check_3d(sigma_tilde)
    e0 = _f(e0_tilde)
    return np.sign(e0[..., 0]) * _SQRT3 * (s[1] ** 2 / s[0] ** 2) * np.abs(e0[..., 1])


def signgd_final_tilde(w0_tilde, w_star_tilde, sigma_tilde):
    """T3: signGD's end point (wt*_0, wt*_1, wt_2(0) + Delta wt_2) ``(..., 3)``."""
    w0, ws = _f(w0_tilde), _f(w_star_tilde)
    dw2 = signgd_displacement(w0 - ws, sigma_tilde)
    out = np.array(np.broadcast_to(ws, np.broadcast_shapes(w0.shape, ws.shape)))
    out[..., 2] = w0[..., 2] + dw2
    return out


def simulate_signgd(w0_tilde, w_star_tilde, sigma_tilde, lr, steps: int, sign_basis: str = "pixel", basis=None):
    """Reference iteration (float64): exact-gradient signGD, ``(steps + 1, frequency)`` trajectory of wt.

    ``sign_basis="pixel"``: w <- w - lr sign(C diag(st^2) et) with w = C wt (the paper's signGD);
    ``"dct"``: wt <- wt - lr sign(diag(st^2) et) (sign in the data eigenbasis; P14). Any d; sign(0) = 0.
    """
    require(sign_basis in ("pixel", "dct"), "sign_basis", "'pixel' or 'dct'", sign_basis)
    require(isinstance(steps, (int, np.integer)) and steps >= 0, "steps", "an integer >= 0", steps)
    wt = _f(w0_tilde).copy()
    ws, s2 = _f(w_star_tilde), _f(sigma_tilde) ** 2
    c = dct_matrix(wt.size) if basis is None else _f(basis)
    out = np.empty((steps + 1, wt.size))
    out[0] = wt
    w = c @ wt
    for t in range(steps):
        if sign_basis == "pixel":
            g = c @ (s2 * (c.T @ w - ws))
            w = w - lr * np.sign(g)
            out[t + 1] = c.T @ w
        else:
            wt = wt - lr * np.sign(s2 * (wt - ws))
            out[t + 1] = wt
    return out


# ------------------------------------------------------------------------------------------------ T6 classifiers

def certified_radius_l2(w, x, b=0.0):
    """T6: certified l2 radius of a linear classifier sign(<w, x> + b): |<w, x> + b| / ||w||_2.

    ``w (position,)``, ``x (samples, position)`` -> ``(samples,)``.
    """
    w = _f(w)
    return np.abs(_f(x) @ w + b) / np.linalg.norm(w)


def radius_shrink_factor(w_tilde, relevant):
    """T6/P13: weight on zero-variance coordinates multiplies every certified radius by ||w_rel|| / ||w||.

    ``w_tilde (..., frequency)`` in the data eigenbasis, ``relevant (frequency,)`` bool.
    """
    wt = _f(w_tilde)
    rel = np.where(np.asarray(relevant, bool), wt, 0.0)
    return np.linalg.norm(rel, axis=-1) / np.linalg.norm(wt, axis=-1)


# ------------------------------------------------------------------------------------------------ defaults

def paper_predictions(lr=None, steps=None, eps=None) -> dict:
    """T1-T3 numbers at the paper's 3-D defaults (st = (0.1, 0.05, 0), wt* = (5, 10, 0), wt(0), lr, T, eps).

    Keys: ``gd_final_tilde`` (T2 exact power at T), ``gd_adv_risk_final``, ``gd_std_risk_final``,
    ``gd_adv_risk_limit``, ``signgd_t1``, ``signgd_t2``, ``signgd_drift_rate``, ``signgd_displacement``,
    ``signgd_final_tilde``, ``signgd_adv_risk_limit``.
    """
    from ..data.natural import (
        PAPER_EPS_ADV,
        PAPER_LR,
        PAPER_SIGMA_TILDE,
        PAPER_STEPS,
        PAPER_W0_TILDE,
        PAPER_W_STAR_TILDE,
    )

    lr = PAPER_LR if lr is None else lr
    steps = PAPER_STEPS if steps is None else steps
    eps = PAPER_EPS_ADV if eps is None else eps
    s, ws, w0 = _f(PAPER_SIGMA_TILDE), _f(PAPER_W_STAR_TILDE), _f(PAPER_W0_TILDE)
    e0 = w0 - ws
    gd_t = ws + gd_error(e0, s, lr, steps)
    gd_inf = gd_limit_tilde(w0, ws, s)
    sg = signgd_final_tilde(w0, ws, s)
    t1, t2 = signgd_phase_times(e0, s, lr)
    return {
        "gd_final_tilde": gd_t,
        "gd_std_risk_final": float(std_risk(gd_t, ws, s)),
        "gd_adv_risk_final": float(adv_risk_linear(gd_t, ws, s, eps)),
        "gd_adv_risk_limit": float(adv_risk_linear(gd_inf, ws, s, eps)),
        "signgd_t1": float(t1),
        "signgd_t2": float(t2),
        "signgd_drift_rate": float(signgd_drift_rate(e0, lr)),
        "signgd_displacement": float(signgd_displacement(e0, s)),
        "signgd_final_tilde": sg,
        "signgd_adv_risk_limit": float(adv_risk_linear(sg, ws, s, eps)),
    }


# ------------------------------------------------------------------------------------------------ check predictions

def gd_irrelevant_shift(e0_tilde, sigma_tilde, lr, t):
    """T2: max over zero-variance frequencies k (st_k = 0) of |et_k(t) - et_k(0)| from :func:`gd_error`'s exact
    power (1 - lr * 0)^t = 1, so 0 for every t (with sampled batches too: xt_k = 0 in every batch). Domain: any
    lr, t, d; a float64 run differs from it by rounding only."""
    st = _f(sigma_tilde)
    irr = st == 0
    if not np.any(irr):
        return 0.0
    e0 = _f(e0_tilde)
    return float(np.max(np.abs(gd_error(e0, st, lr, t)[..., irr] - e0[..., irr])))


def signgd_irrelevant_shift(w0_tilde, w_star_tilde, sigma_tilde, lr, steps: int, sign_basis: str = "dct"):
    """P14: max_t |wt_k(t) - wt_k(0)| over zero-variance k along :func:`simulate_signgd`'s exact-gradient
    iteration. With ``sign_basis="dct"`` the step on k is -lr sign(st_k^2 et_k) = -lr sign(0) = 0, so 0 for every
    t; with ``"pixel"`` it is the T3 drift. Domain: exact gradients, any d."""
    st = _f(sigma_tilde)
    irr = st == 0
    traj = simulate_signgd(w0_tilde, w_star_tilde, st, lr, int(steps), sign_basis)
    if not np.any(irr):
        return 0.0
    return float(np.max(np.abs(traj[:, irr] - traj[0, irr])))


def converged_std_risk_max() -> float:
    """P2 / P7 threshold: signGD, Adam and RMSProp reach R_s < 1e-5 by t ~ 1000 and stay there.

    Domain: the paper's 3-D problem (st = (0.1, 0.05, 0), wt* = (5, 10, 0), wt(0) = (0.01, -0.01, 0.02)) at
    lr = 0.01, evaluated at T >= 1000 steps (the sim's configs require it). Derivation: T3's Phase 3 (et_0 flips
    sign every step, et_1 finishes converging; R_s ~ 1e-6 by t ~ 1000, spec P2).
    """
    return 1e-5


def mc_z(mc, t1, se, rel_rounding: float = 1e-12):
    """P6: |MC - T1| in standard errors of the Monte-Carlo estimate, |mc - t1| / (se + rel_rounding |t1|).

    ``se`` = sd / sqrt(n) of the per-sample values 1/2 (|<e, xt>| + eps ||w||)^2; ``rel_rounding`` is spec P6's
    float64 allowance (at R_s = 0 every sample equals eps^2 ||w||^2 / 2, sd = 0, and MC = T1 to rounding).
    Broadcasts."""
    return np.abs(_f(mc) - _f(t1)) / (_f(se) + rel_rounding * np.abs(_f(t1)))


def mc_z_max(n_runs: int, z_one: float = 3.0) -> float:
    """P6 over ``n_runs`` runs: spec P6 asks |MC - T1| <= 3 standard errors for one estimate (two-sided
    false-alarm rate p = 2(1 - Phi(3)) = 0.0027); the max over n runs keeps that family-wise rate by Bonferroni:
    z_max = Phi^{-1}(1 - p / (2 n)) (= 3 at n = 1; ~3.8 at n = 20; valid under any correlation between runs)."""
    from scipy.stats import norm

    require(isinstance(n_runs, (int, np.integer)) and n_runs >= 1, "n_runs", "an integer >= 1", n_runs)
    p = 2.0 * norm.sf(z_one)
    return float(norm.isf(p / (2.0 * n_runs)))


def ordering_fraction() -> float:
    """P7: the fraction of the 3 consecutive pairs of R_a(GD) < R_a(signGD) < R_a(Adam) < R_a(RMSProp) that hold
    strictly at the end of the exact-gradient runs: all of them (1.0). Domain: the paper's 3-D defaults, lr = 0.01,
    T >= 1000 (T3: GD keeps wt_2(0) = 0.02, signGD ends at 0.02 + Delta wt_2; Adam / RMSProp overshoot it)."""
    return 1.0


def closed_form_rel_error_max() -> float:
    """P3 / P5: |Delta wt_2 measured - T3| / |T3| <= 2 % with exact gradients, where |A(0)| >= |B(0)|
    (:func:`signgd_formula_valid`; beyond it the formula overestimates and is not checked)."""
    return 0.02


def sgd_first_layer_irrelevant_change() -> float:
    """Relative change of ||W_1 P_irr||_F^2 under SGD (momentum 0, weight decay 0) on data whose zero-variance
    DCT coefficients are exactly 0: the first-layer weight gradient sum_n delta_n x_n^T has rows in span{x_n},
    orthogonal to every irrelevant DCT basis image, so W_1 P_irr never changes: 0. Domain: dense first layer (the
    MLP); a conv layer shares weights across positions and is not covered."""
    return 0.0


def local_over_global_max() -> float:
    """max over points of ||grad_x (f_y - f_j)||_2 / (sqrt2 prod_l ||A_l||_2) <= 1: the margin's gradient is a
    difference of two rows of the logit Jacobian J (||.|| <= sqrt2 ||J||_2) and ||J||_2 <= prod_l ||A_l||_2 for
    1-Lipschitz ReLU / max-pool (any network, trained or not)."""
    return 1.0


def paper_clean_acc_spread_max() -> float:
    """Spec P9 [paper Fig. 1]: the clean-accuracy spread across SGD / Adam / RMSProp is <= 2.5 points per dataset
    (with the adaptive learning rates tuned to match SGD's clean accuracy)."""
    return 0.025


def paper_sgd_more_robust_fraction() -> float:
    """Spec P9 [paper Fig. 1]: SGD has the highest Gaussian-noise, l2- and l-inf-attack accuracy on all 7
    datasets (21/21 comparisons): the fraction of comparisons SGD wins is 1."""
    return 1.0


def paper_sgd_smaller_lipschitz_fraction() -> float:
    """Spec T5 / P12 [paper abstract; unverified]: SGD-trained nets have smaller Lipschitz constants (the authors'
    layer-wise product bound) than Adam / RMSProp-trained ones at similar clean accuracy: fraction 1."""
    return 1.0


def paper_lipschitz_explains_robustness_fraction() -> float:
    """Spec T5 [paper abstract; unverified]: the Lipschitz ordering explains the robustness ordering: in every
    (SGD, adaptive) pair the net with the smaller Lipschitz estimate is the more robust one: fraction 1."""
    return 1.0


def paper_band_noise_sgd_advantage_min(n_test: int) -> float:
    """Spec P10 / S6 [paper Fig. 4, CIFAR100; unverified here]: under Gaussian noise restricted to the
    high-frequency DCT bands, where natural images carry almost no energy, the adaptive methods lose far more
    accuracy than SGD (Adam >= 10 points in bands 4-8, >= 5x SGD's drop; RMSProp between), while the drops in the
    low bands are alike. At CPU scale the analogue is the zero-variance band: SGD's accuracy under noise there is
    strictly higher than the adaptive methods' at matched clean accuracy. 'Strictly' is taken at the resolution of
    a test accuracy, one test image: the threshold is 1 / n_test (a pair of identical nets differs by 0)."""
    require(isinstance(n_test, int) and n_test >= 1, "n_test", "an integer >= 1", n_test)
    return 1.0 / n_test


# ----------------------------------------------------------------------------- P10 / P11 / S6: bands and removal
def paper_p10_n_bands() -> int:
    """Spec Sec. 2.3 / P10 [paper Fig. 4]: the DCT plane is split into 10 radial bands of (nearly) equal size, band
    0 holding the lowest radii (:func:`fa_jax.frequency.radial_bands`, rule "rank")."""
    return 10


def paper_p10_sgd_rise_max() -> float:
    """Spec P10 [paper Fig. 4, CIFAR100]: SGD's accuracy drop under band-limited noise is non-increasing from band
    to band within +-0.2 points: max_b (drop_{b+1} - drop_b) <= 0.002 (accuracy as a fraction)."""
    return 0.002


def paper_p10_ratio_bands() -> tuple[int, int]:
    """Spec P10 [paper Fig. 4]: the bands (first, last, inclusive) where Adam's drop is >= 5x SGD's: 5-8 of 10."""
    return (5, 8)


def paper_p10_adam_over_sgd_min() -> float:
    """Spec P10 [paper Fig. 4, CIFAR100]: in bands 5-8 Adam's accuracy drop is at least 5 times SGD's."""
    return 5.0


def paper_p10_between_bands() -> tuple[int, int]:
    """Spec P10 [paper Fig. 4]: the bands (first, last, inclusive) where the figure's table puts RMSProp's drop
    strictly between SGD's and Adam's: 4-8 of 10 (SGD 2.1 / 1.9 / 1.2 / 1.3 / 0.6 < RMSProp 8.2 / 9.0 / 9.0 / 8.6 /
    7.0 < Adam 10.0 / 12.2 / 11.8 / 12.8 / 11.1)."""
    return (4, 8)


def paper_p10_between_fraction() -> float:
    """Spec P10 [paper Fig. 4]: 'RMSProp lies between': the fraction of :func:`paper_p10_between_bands` with
    drop(SGD) < drop(RMSProp) < drop(Adam) strictly is 1."""
    return 1.0


def paper_removal_max_percent() -> float:
    """Spec P11 [paper]: the removal claim covers up to ~50 % of the DCT coefficients removed."""
    return 50.0


def paper_removal_clean_drop_max() -> float:
    """Spec P11 [paper; threshold unverified]: SGD nets trained on Phi_freq / Phi_nrg data with up to ~50 % of the
    coefficients removed keep their clean test accuracy 'within a few points' of the unfiltered net: a drop of at
    most 3 points (0.03)."""
    return 0.03


def paper_removal_gap_closure_min(n_test: int) -> float:
    """Spec S6 [unverified]: training on Phi_freq data 'closes part of the adaptive gap': the SGD - adaptive
    accuracy gap under noise on the removed (high-frequency) band is smaller after removal than without it. 'Part'
    is taken at the resolution of a test accuracy, one test image: the closure must be >= 1 / n_test."""
    require(isinstance(n_test, int) and n_test >= 1, "n_test", "an integer >= 1", n_test)
    return 1.0 / n_test


def freq_removal_relevant_removed(size: int, frac_irrelevant: float, removed_percent: float) -> int:
    """How many coefficients Phi_freq(., removed_percent) removes from N x N images that are NOT among the
    ``round(frac_irrelevant N^2)`` highest-radius ones (the zero-variance band of
    :class:`fa_jax.data.natural.ImageSignal`, ranked by radius with ties by flat index). Derived: exact counting
    on the two masks (Phi_freq's radial scan keeps whole shells of equal radius, so it can cut into the
    relevant half before removing all of the zero-variance band)."""
    from ..frequency import lowpass_mask, radius_grid

    require(isinstance(size, int) and size >= 1, "size", "an integer >= 1", size)
    require(0.0 <= frac_irrelevant <= 1.0, "frac_irrelevant", "a fraction in [0, 1]", frac_irrelevant)
    n2 = size * size
    order = np.argsort(radius_grid(size).ravel(), kind="stable")
    rank = np.empty(n2, np.int64)
    rank[order] = np.arange(n2)
    relevant = rank.reshape(size, size) < n2 - round(frac_irrelevant * n2)
    keep = np.asarray(lowpass_mask((size, size), 100.0 - removed_percent))
    return int(np.sum(relevant & ~keep))


def freq_removal_keeps_relevant(size: int, frac_irrelevant: float, removed_percent: float) -> bool:
    """True when Phi_freq(., removed_percent) keeps every non-zero-variance coefficient
    (:func:`freq_removal_relevant_removed` is 0): then it removes only coefficients the data has no variance on."""
    return freq_removal_relevant_removed(size, frac_irrelevant, removed_percent) == 0


def empty_band_removal_change() -> float:
    """||Phi(x) - x||_F / ||x||_F when Phi removes only DCT coefficients on which every image is exactly 0
    (:func:`freq_removal_keeps_relevant`): Phi = idct2(M dct2(.)) is then the identity on the data: 0 (the check's
    tolerance is the float32 rounding of the DCT round trip)."""
    return 0.0
