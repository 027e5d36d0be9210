"""Closed forms for arXiv 2406.11110 (``../shared/specs/sgd_support.md``, Sec. 3 and 5).

Conventions: per-sample loss l_i = r_i^2 with r_i = f(x_i) - y_i (MSE **without** 1/2); N training points;
step t is one update theta <- theta - lr * clip(g) (torch weight decay adds lr * wd * theta). Everything is float64
numpy. ``PROVENANCE`` tags each function: ``paper`` (stated by the paper / read off its figures), ``code`` (an
official-code setting), ``derived`` (our derivation; the simulator checks it, never assumes it).

T1 (backward-error analysis, Smith-Dherin-Barrett-De 2021, per-epoch random reshuffling): SGD follows to O(lr^2)
the flow of L + R_GD + R_SGD with

    R_SGD = (lr / 4) * (N - b) / (b (N - 1)) * tr Cov_i[grad l_i].

Near a minimiser grad l_i = 2 r_i grad f(x_i), so with residuals independent of the inputs (label noise)

    R_SGD = c_b * E[r^2] * G(theta),   c_b = (lr / b) (N - b) / (N - 1),   G = mean_i ||grad_theta f(x_i)||^2.

T3: the part of R_SGD that depends on the irrelevant first-layer block W = K_1[s:, :] decays it at the per-step
log-rate (ascent of lr * grad R on ||W||)

    kappa = -d ln||W|| / dt = lr * c_b * E[r^2] * u,   u = <W, grad_W G> / ||W||_F^2.

For a deep linear net (torch layout f = W_L...W_1 x, white x) u = 2 <W, M W>/||W||^2 with
M = sum_{l>=2} ||W_L...W_{l+1}||^2 (W_{l-1}...W_2)^T (W_{l-1}...W_2) (the l = 2 term is F = ||W_L...W_3||^2 I):
:func:`t3_operator`. Per unit of gradient-flow time lr*t the rate is proportional to lr/b (the eta/b mechanism).

**Domain of T3** (where the simulator evaluates it; see :func:`t3_max_batch`, :func:`t3_rel_tolerance`,
:func:`t3_noise_dominance`): T3 is a leading-order (O(lr^2)) expansion near a minimiser with residuals independent
of the inputs (label noise). It is evaluated only
(i) in a regime that converges: the same-lr full-batch GD run's loss becomes stationary and its ||W1_irr|| freezes
    (:func:`gd_freeze_rel`; no edge-of-stability oscillation: in the paper's setting lr = 0.1, sigma = 1e-3 the
    residual is a 2-cycle, spec T5, and GD's own ratio drifts 0.872 -> 0.811 until ~2e4 steps: outside the domain);
(ii) on the window from that GD run's freeze to the run's own plateau (its stationary noise floor, P11, detected by
    :func:`plateau_rise`), so that the decay measured is the noise-driven part;
(iii) where the residual is mostly the label noise: the window's running mean E[r^2] <= :func:`t3_noise_dominance`
    * sigma^2 (where SGD's own excess residual dominates T3 over-predicts: measured/T3 = 0.32 at E[r^2] = 4.6 sigma^2;
    at sigma = 1e-3 SGD's fluctuation carries E[r^2] >> sigma^2: outside);
(iv) where its term dominates, b <= :func:`t3_max_batch`: on the spec's convergent label-noise family (S2/P8:
    sigma = 0.1, lr = 0.05, clip inactive, N = 1e4) measured / T3 decay exponent = 1.05 at b = 16 but 1.7 at
    b = 128 and 2.5 at b = 512 (issue 17, steps 16k-50k); 1.14-1.19 at b = 8 and 1.8-2.0 at b = 32 (N = 500).
    T3 under-predicts at large b: an extra decay, roughly independent of b, that T3 does not contain, dominates
    once T3's (proportional to 1/b) term is small. Larger b are reported (measured / T3 as a metric), not checked.
The exponent is integrated from running means over the window (spec Sec. 2.4): kappa_k on each record segment from
the segment's mean E[r^2] and mean squared clip scale (:func:`integrate_block_rate`), never from one-step snapshots.
"""
from __future__ import annotations

import math

import numpy as np

PROVENANCE = {
    "sgd_noise_scale": "derived",  # T1: c_b = (lr/b)(N-b)/(N-1)
    "implicit_regulariser": "derived",  # T1: R_SGD = c_b E[r^2] G
    "t3_decay_rate": "derived",  # T3: kappa = lr c_b E[r^2] u
    "t3_operator": "derived",  # T3 for deep linear nets, white inputs
    "clip_factor": "derived",  # crude: mean squared clip scale min(1, c^2 / E||g_B||^2)
    "integrate_log_ratio": "derived",  # T3 overlay: ln ratio(t) = ln ratio(t0) - int kappa
    "wd_rate": "derived",  # explicit weight decay: (1 - lr wd) per step
    "wd_ratio": "derived",
    "wd_half_life": "derived",
    "gd_plateau_ratio": "derived",  # T2: sqrt(1 - 1/h) (v frozen); NOT the plateau (0.78-0.86): a metric only
    "gd_e2e_limit": "derived",  # T5/P1: GD fits the function, end-to-end irrelevant coefficient -> 0
    "gd_e2e_threshold": "derived",  # P1 (spec Sec. 5): GD's end-to-end irrelevant coefficient < 1e-2
    "t3_max_batch": "derived",  # T3's domain: b <= 16 (measured where its term dominates, issue 17 Sec. 1)
    "t3_rel_tolerance": "derived",  # T3 vs measured decay exponent: rel 0.5 (spec P8 'within a factor 2')
    "t3_min_drop": "derived",  # a decay exponent counts as resolved from 0.02 (5x its trajectory spread)
    "wd_rel_tolerance": "derived",  # (1 - lr wd)^t after convergence: rel 0.1 on the ratio
    "collapse_slope": "derived",  # T3: y = x on the collapse plot (slope 1)
    "collapse_slope_tolerance": "derived",  # spec P8: fitted exponents within +-0.5
    "collapse_constant": "derived",  # T3: median y / x = 1
    "batch_ordering": "paper",  # P3: final ratio increases with b
    "paper_saturation_ratio": "paper",  # P3: b = 32 ~ b = 1 <= 0.05 (saturation; ties below count as ordered)
    "sgd_below_gd": "paper claim (abstract (i)-(ii), unverified)",  # T0 (abstract): SGD learns the support, GD does not
    "he_std": "code",  # torch kaiming_normal_, fan-in, plain normal
    "expected_irr_norm": "code",
    "paper_ratios": "paper",  # P1/P3 official-figure ratios at eta = 0.1 (linear)
    "paper_value": "paper (official linear-target figures, eta = 0.1; spec P1/P3)",
    "paper_seed_rel_tolerance": "derived",  # reading precision + measured init-seed spread (committed default)
    "window_exponent": "derived",  # T3 over a window: sum_k kappa_k (t_k - t_{k-1})
    "integrate_block_rate": "derived",  # ln r(t_k) = ln r(t_0) - sum_j kappa_j (t_j - t_{j-1}) (block means)
    "plateau_rise": "derived",  # a ratio rising 5 % above its running minimum is on its noise floor (P11)
    "gd_freeze_rel": "derived",  # GD's ratio is frozen once every later record is within 0.1 % of its final value
    "t3_noise_dominance": "derived",  # T3's residual is mostly the label noise: window E[r^2] <= 3 sigma^2
}

# P1/P3 [paper figures], linear target, eta = 0.1, clip 1: ratio ||W1_irr(T)|| / ||W1_irr(0)|| (lo, hi)
PAPER_RATIOS = {"gd": (0.78, 0.86), 512: (0.35, 0.40), 128: (0.10, 0.11), 32: (0.0, 0.05), 1: (0.0, 0.05)}


# Measured init-seed half-spread of the final ratio, relative to the seed mean (committed default summary, 3 init
# seeds x 5 trajectories, eta = 0.1, N = 1e4): GD 0.790-0.811, b = 512 0.357-0.394, b = 128 0.097-0.112.
PAPER_SEED_SPREAD = {"gd": 0.013, 512: 0.050, 128: 0.073}


def paper_value(which) -> float | None:
    """P1/P3 [paper figures]: the central value of the range read off the official figures ((lo + hi) / 2), or its
    upper bound hi where the figure shows a saturated run (lo = 0: b = 32, b = 1); None where no figure exists."""
    r = PAPER_RATIOS.get(which)
    if r is None:
        return None
    return (r[0] + r[1]) / 2 if r[0] > 0 else r[1]


def paper_seed_rel_tolerance(which) -> float | None:
    """Relative tolerance of a per-init-seed comparison with :func:`paper_value`: the figure's reading precision
    (half the read range over its centre: the figures come from ONE run on a log axis) plus the measured init-seed
    half-spread (:data:`PAPER_SEED_SPREAD`): GD 0.049 + 0.013, b = 512 0.067 + 0.050, b = 128 0.048 + 0.073.
    None for the saturated runs (compared 'at most' the figure's bound)."""
    r = PAPER_RATIOS.get(which)
    if r is None or r[0] <= 0:
        return None
    return (r[1] - r[0]) / (r[1] + r[0]) + PAPER_SEED_SPREAD[which]


def integrate_block_rate(steps, rate, log_r0: float = 0.0) -> np.ndarray:
    """ln r(t_k) = ln r(t_0) - sum_{j=1..k} rate_j (t_j - t_{j-1}), ``rate_j`` the block-mean decay rate over the
    segment (t_{j-1}, t_j] (exact for block means; ``rate[0]`` is unused). Shapes: ``steps``, ``rate`` (R,)."""
    steps, rate = np.asarray(steps, float), np.asarray(rate, float)
    out = np.full(len(steps), float(log_r0))
    out[1:] = log_r0 - np.cumsum(rate[1:] * np.diff(steps))
    return out


def window_exponent(steps, rate, ia: int, ib: int) -> float:
    """T3's predicted decay exponent ln r(t_ia) - ln r(t_ib) over the window of records ia < ib: the sum over the
    window's segments (t_{k-1}, t_k], k = ia+1..ib, of the block-mean log-rate ``rate_k`` times (t_k - t_{k-1})
    (:func:`integrate_block_rate` between two records). NaN for an empty window. Shapes: ``steps``, ``rate`` (R,)."""
    steps, rate = np.asarray(steps, float), np.asarray(rate, float)
    if ib <= ia:
        return float("nan")
    return float(np.sum(rate[ia + 1:ib + 1] * np.diff(steps[ia:ib + 1])))


def plateau_rise() -> float:
    """A Phase-2 decay window ends at the run's plateau, the first record where the ratio rises by more than this
    factor (5 %) above its running minimum: a decaying run between log-spaced records falls (its step-to-step
    fluctuation in the label-noise family is ~1e-3 relative), a run on its noise floor fluctuates by 10-100 %
    (P11: b = 1, lr = 0.5 between 0.4 and 1.7 x its mean)."""
    return 0.05


def gd_freeze_rel() -> float:
    """GD's ||W1_irr|| counts as frozen from the first record after which every record is within 0.1 % of its final
    value (converged_from on the ratio): far below the SGD decay exponents measured after it (>= 0.02)."""
    return 1e-3


def t3_noise_dominance() -> float:
    """T3's domain (iii): the window's running mean E[r^2] is at most 3 sigma^2 (label-noise variance sigma^2), i.e.
    SGD's own excess residual is at most twice the label noise. At a converged label-noise minimum E[r^2] ~ sigma^2
    plus an O(lr/b) SGD excess that is not input-independent; where that excess dominates T3 over-predicts the
    decay: N = 500, sigma = 0.1, lr = 0.05, steps 2.8e3-1e4: b = 8 has E[r^2] = 2.4 sigma^2 and measured/T3 = 0.96,
    b = 2 has E[r^2] = 4.6 sigma^2 and measured/T3 = 0.32. At sigma = 1e-3 SGD's fluctuation carries
    E[r^2] = 1e-4-1e-2 >> sigma^2 = 1e-6: outside."""
    return 3.0


def paper_ratios(which) -> tuple[float, float] | None:
    """P1/P3 [paper figures]: the (lo, hi) range of ||W1_irr(T)|| / init read off the official figures for ``which``
    = "gd" or a batch size b (None where the figures show no such run); linear target, eta = 0.1, clip 1."""
    return PAPER_RATIOS.get(which)


def sgd_noise_scale(lr, b, n):
    """T1: c_b = (lr / b) (N - b) / (N - 1); 0 for full batch (b = N)."""
    lr, b = np.asarray(lr, float), np.asarray(b, float)
    return lr / b * (n - b) / (n - 1.0)


def implicit_regulariser(lr, b, n, mean_sq_residual, grad_energy):
    """T1 near a minimiser with input-independent residuals: R_SGD = c_b * E[r^2] * G."""
    return sgd_noise_scale(lr, b, n) * np.asarray(mean_sq_residual, float) * np.asarray(grad_energy, float)


def t3_decay_rate(lr, b, n, mean_sq_residual, u, clip=1.0):
    """T3: per-step log-decay rate of ||W1_irr||: kappa = lr * c_b * E[r^2] * u * clip (clip = :func:`clip_factor`)."""
    return np.asarray(lr, float) * sgd_noise_scale(lr, b, n) * np.asarray(mean_sq_residual, float) \
        * np.asarray(u, float) * np.asarray(clip, float)


def clip_factor(b, n, sample_grad_sq, full_grad_sq, clip_norm):
    """Mean squared clip scale of a mini-batch step, min(1, c^2 / E||g_B||^2) (crude, Jensen-style).

    E||g_B||^2 = ||grad L||^2 + (N - b)/(b (N - 1)) (mean_i ||grad l_i||^2 - ||grad L||^2) (sampling without
    replacement); the regulariser is second order in the step, hence the square. ``clip_norm = inf``: 1.
    """
    b = np.asarray(b, float)
    g2 = np.asarray(full_grad_sq, float)
    eg = g2 + (n - b) / (b * (n - 1.0)) * np.maximum(np.asarray(sample_grad_sq, float) - g2, 0.0)
    if not np.isfinite(clip_norm):
        return np.ones_like(eg)
    return np.minimum(1.0, clip_norm ** 2 / np.maximum(eg, 1e-300))


def t3_operator(kernels) -> np.ndarray:
    """T3 for a deep linear net: M (h1, h1) with grad_{W1} of E_x[sum_l ||grad_{W_l} f||^2] = 2 M W1 (torch W1).

    ``kernels`` are flax kernels K_l (in, out), torch W_l = K_l^T, L >= 2, scalar output. M = sum_{l=2}^{L}
    ||W_L...W_{l+1}||^2 B_l^T B_l with B_l = W_{l-1}...W_2 (B_2 = I).
    """
    ws = [np.asarray(k, float).T for k in kernels]  # torch layout (out, in)
    L = len(ws)
    h1 = ws[0].shape[0]
    m = np.zeros((h1, h1))
    for layer in range(2, L + 1):  # 1-based layer index
        above = np.eye(ws[-1].shape[0])
        for w in ws[layer:][::-1]:  # W_L ... W_{l+1}
            above = above @ w
        below = np.eye(h1)
        for w in ws[1:layer - 1]:  # W_2 ... W_{l-1}, applied in order
            below = w @ below
        m += np.sum(above ** 2) * below.T @ below
    return m


def t3_u_linear(kernels, s: int) -> float:
    """T3's u for a deep linear net with white inputs: 2 <W, M W> / ||W||^2, W = W1[:, s:] (torch layout)."""
    w = np.asarray(kernels[0], float).T[:, s:]
    m = t3_operator(kernels)
    return float(2.0 * np.sum(w * (m @ w)) / np.sum(w ** 2))


def integrate_log_ratio(steps, kappa, log_r0: float = 0.0) -> np.ndarray:
    """ln ratio(t_k) = log_r0 - int_{t_0}^{t_k} kappa dt (trapezoid on the record steps)."""
    steps, kappa = np.asarray(steps, float), np.asarray(kappa, float)
    inc = 0.5 * (kappa[1:] + kappa[:-1]) * np.diff(steps)
    return log_r0 - np.concatenate([[0.0], np.cumsum(inc)])


def wd_rate(lr, wd):
    """Explicit weight decay (torch convention, after the clip): per-step log-rate -ln(1 - lr wd)."""
    return -np.log1p(-np.asarray(lr, float) * np.asarray(wd, float))


def wd_ratio(t, lr, wd):
    """Once the function is fit, ||W1_irr|| contracts by (1 - lr wd) per step: (1 - lr wd)^t."""
    return np.exp(-wd_rate(lr, wd) * np.asarray(t, float))


def wd_half_life(lr, wd):
    """ln 2 / -ln(1 - lr wd) steps (~69 at lr = wd = 0.1)."""
    return math.log(2.0) / float(wd_rate(lr, wd))


def gd_plateau_ratio(h: int) -> float:
    """T2: GD removes only the output-visible direction v of each irrelevant column; with v frozen at a random
    direction the expected remaining energy fraction is 1 - 1/h, ratio sqrt(1 - 1/h) (0.966 at h = 15).

    Domain: none where it has been confirmed. v rotates during Phase 1, so the measured plateau is lower (paper
    figures and our default: 0.78-0.86; a converging N = 500 run: 0.92-0.94). Reported as a metric and drawn on the
    figure, never checked: a tolerance wide enough to cover the plateau would also admit 'W1 never moved' (1.0)."""
    return math.sqrt(1.0 - 1.0 / h)


def gd_e2e_limit() -> float:
    """T5/P1: GD fits the target: the end-to-end irrelevant coefficient tends to 0. With the mirrored labels
    (each x_i appears with f(x_i) + eps_i and f(x_i) - eps_i) the least-squares coefficient is exactly W* (0 on the
    irrelevant inputs), so a converged run's coefficient is 0 up to float precision."""
    return 0.0


def gd_e2e_threshold() -> float:
    """P1 (spec Sec. 5) and T5: GD's end-to-end irrelevant coefficient ||(W_L...W_1)_{:, irr}|| falls below 1e-2.

    Domain: any linear-target run whose loss has dropped (Phase 1 done). In a converging regime it is ~1e-5 or less
    (the exact minimiser has 0); in the paper's oscillatory setting (lr = 0.1, N = 1e4) the 2-cycle keeps it at
    0.004-0.006 (committed default summary). It is NOT met at N = 500 with lr = 0.1 (0.010-0.015 measured: the
    oscillation's coefficient scales like 1/sqrt(N)), so a small-N preset must run in a converging regime."""
    return 1e-2


def t3_max_batch() -> int:
    """T3's domain in b (see the module docstring): the largest batch size at which T3's term dominates the
    Phase-2 decay, b <= 16 (measured / T3 = 1.05 at b = 16, N = 1e4; 1.14-1.19 at b = 8, N = 500; 1.7-2.0 at
    b = 32-128). Larger b are outside the domain (T3 under-predicts there)."""
    return 16


def t3_rel_tolerance() -> float:
    """Relative tolerance of T3 vs the measured decay exponent inside its domain: 0.5, i.e. measured/T3 in
    [0.5, 1.5]. Spec P8 asks agreement 'within a factor 2'; its upper side is tightened to 1.5 because inside the
    domain the measured ratio is 1.05-1.2 (issue 17; quick preset, 2-3 init seeds x 2-3 trajectories, the spread of
    the per-run ratio across seeds is ~0.1)."""
    return 0.5


def t3_min_drop() -> float:
    """Smallest measured decay exponent Delta ln ||W1_irr|| on a window that counts as resolved (a phase run enters
    the eta/b collapse fit only above it): 0.02, about 5x the spread of the exponent across batch orders (b = 8,
    lr = 0.05, N = 500: 0.096-0.108 over 4 runs, sd ~0.006)."""
    return 0.02


def wd_rel_tolerance() -> float:
    """Relative tolerance of the weight-decay law (1 - lr wd)^dt on the ratio ||W1_irr(t_b)|| / ||W1_irr(t_a)||,
    evaluated after the loss has converged: 0.1. The law is exact for the directions orthogonal to the output-visible
    one; the visible direction settles at an O(wd) equilibrium, which the window's floor keeps out (the committed
    default measured 0.093305 vs 0.093305; the quick preset 1e-3 relative)."""
    return 0.1


def collapse_slope() -> float:
    """T3: normalised decay y = Delta ln / int lr E[r^2] u clip dt equals c_b: slope 1 against c_b in log-log.
    Domain: the phase runs inside T3's domain (converging lr, b <= :func:`t3_max_batch`, resolved decay)."""
    return 1.0


def collapse_slope_tolerance() -> float:
    """Spec P8: fitted exponents within +-0.5 of the theory's (project tolerance); relative 0.5 on slope 1."""
    return 0.5


def collapse_constant() -> float:
    """T3: median over the phase runs inside its domain of y / c_b = measured / T3 decay exponent is 1 (the
    constant is derived, not fitted); compared with :func:`t3_rel_tolerance`."""
    return 1.0


def batch_ordering() -> float:
    """P3: the fraction of adjacent batch sizes whose final ratios are ordered (larger b, larger ratio) is 1."""
    return 1.0


def paper_saturation_ratio() -> float:
    """P3 [paper figures]: b = 32 ~ b = 1 <= 0.05 x init at 2e5 steps: below this the batch sizes are saturated and
    count as ordered."""
    return 0.05


def sgd_below_gd() -> float:
    """T0 [paper claim, abstract (i)-(ii), unverified]: every mini-batch SGD run ends with a smaller ||W1_irr|| than
    full-batch GD from the same init: the fraction of (init seed, b) pairs with SGD below GD is 1."""
    return 1.0


def he_std(fan_in: int) -> float:
    """He-normal (fan-in) std sqrt(2 / fan_in)."""
    return math.sqrt(2.0 / fan_in)


def expected_irr_norm(h: int, d_irr: int, fan_in: int) -> float:
    """E||W1_irr||_F ~ sqrt(h d_irr 2 / fan_in) (sqrt(150 * 2/15) = 4.47 in the official setting)."""
    return math.sqrt(h * d_irr * 2.0 / fan_in)
