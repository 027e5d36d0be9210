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
    "gd_plateau_ratio": "derived",  # T2: sqrt(1 - 1/h) (v frozen); the paper's figures show 0.78-0.86 (P1)
    "gd_e2e_limit": "paper",  # T0(ii)/P1: GD fits the function, end-to-end irrelevant coefficient -> 0
    "collapse_slope": "derived",  # T3: y = x on the collapse plot (slope 1)
    "collapse_constant": "derived",  # T3: y / x = 1 (log2 ratio 0)
    "batch_ordering": "paper",  # P3: final ratio increases with b
    "he_std": "code",  # torch kaiming_normal_, fan-in, plain normal
    "expected_irr_norm": "code",
    "paper_ratios": "paper",  # P1/P3 official-figure ratios at eta = 0.1 (linear)
}

# P1/P3 [paper figures], linear target, eta = 0.1, clip 1: ratio ||W1_irr(T)|| / ||W1_irr(0)|| (lo, hi)
PAPER_RATIOS = {"gd": (0.78, 0.86), 512: (0.35, 0.40), 128: (0.10, 0.11), 32: (0.0, 0.05), 1: (0.0, 0.05)}


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
    v rotates during Phase 1, so the measured plateau is lower (paper figures: 0.78-0.86, P1)."""
    return math.sqrt(1.0 - 1.0 / h)


def gd_e2e_limit() -> float:
    """T0(ii)/P1: GD fits the target: the end-to-end irrelevant coefficient tends to 0 (P1: below 1e-2)."""
    return 0.0


def collapse_slope() -> float:
    """T3: normalised decay y = Delta ln / int lr E[r^2] u clip dt equals c_b: slope 1 against c_b in log-log."""
    return 1.0


def collapse_constant() -> float:
    """T3: log2(y / c_b) = 0 (the constant is derived, not fitted)."""
    return 0.0


def batch_ordering() -> float:
    """P3: the fraction of adjacent batch sizes whose final ratios are ordered (larger b, larger ratio) is 1."""
    return 1.0


def he_std(fan_in: int) -> float:
    """He-normal (fan-in) std sqrt(2 / fan_in)."""
    return math.sqrt(2.0 / fan_in)


def expected_irr_norm(h: int, d_irr: int, fan_in: int) -> float:
    """E||W1_irr||_F ~ sqrt(h d_irr 2 / fan_in) (sqrt(150 * 2/15) = 4.47 in the official setting)."""
    return math.sqrt(h * d_irr * 2.0 / fan_in)
