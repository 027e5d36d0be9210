"""Closed forms for arXiv 2410.10322 (``../shared/specs/feature_averaging.md``, Sec. 3).

Every function returns plain floats / numpy arrays (float64) and has a ``PROVENANCE`` entry:
``paper`` = stated by the paper (orders only), ``derived`` = our own idealised derivation, checked by the
simulator, never assumed.
"""
from __future__ import annotations

import math

import numpy as np

PROVENANCE = {
    "fa_radius": "derived",  # G1: sqrt(d/k), order Theta(sqrt(d/k)) is [paper] T1
    "fd_radius": "derived",  # G3/G4: sqrt(d/2), order Theta(sqrt(d)) is [paper] T2/T3
    "ratio": "derived",  # G5: sqrt(k/2)
    "inblock_cosine": "derived",  # G2: 1/sqrt(|J_s|)
    "class_sum_cosine": "derived",  # G2: 1
    "group_pair_cosine": "derived",  # T1/P3: neurons of a class group are alike, pairwise cosine 1
    "fd_diag_cosine": "paper",  # T3: multi-class GD learns w_j proportional to mu_j
    "fd_off_diag_cosine": "paper",  # T3: ... and orthogonal to the other centres
    "clean_accuracy": "paper",  # T1/T3: near-perfect clean accuracy
    "attack_direction_cosine": "derived",  # G1: the minimal flipping perturbation lies along v
    "granularity_radius": "derived",  # G6: sqrt(g d / (2k))
    "acc_fa": "derived",  # G1: Phi(sqrt(d/k) - eps)
    "acc_fd": "derived",  # G4 FD overlay, Monte Carlo
    "g4_fsum_radius": "derived",  # G4 piecewise prediction
    "gradient_cosine": "derived",  # attack geometry: sqrt(|J_y|/k)
    "fa_boundary_k": "derived",  # S1: k* = d / eps^2
}


def fa_radius(d, k):
    """G1: flip radius of the idealised feature-averaging net along v, sqrt(d/k) (per point + y g, g ~ N(0,1))."""
    return np.sqrt(np.asarray(d, float) / np.asarray(k, float))


def fd_radius(d):
    """G3/G4: the decoupled (F_max) radius and the ceiling for any classifier, sqrt(d/2)."""
    return np.sqrt(np.asarray(d, float) / 2.0)


def ratio(k):
    """G5: r50(FD) / r50(FA) -> sqrt(k/2)."""
    return np.sqrt(np.asarray(k, float) / 2.0)


def inblock_cosine(n_s):
    """G2: cos(w_{s,r}, mu_j) = 1/sqrt(|J_s|) for j in J_s."""
    return 1.0 / np.sqrt(np.asarray(n_s, float))


def class_sum_cosine():
    """G2: cos(w_{s,r}, sum_{J_s} mu_j) = 1 for the idealised averaging neuron."""
    return np.float64(1.0)


def group_pair_cosine():
    """T1/P3: every neuron of a class group converges to the same direction: pairwise cosine 1."""
    return np.float64(1.0)


def fd_diag_cosine():
    """T3: the multi-class equivalent weight of output j is proportional to mu_j: cos(w_j, mu_j) = 1."""
    return np.float64(1.0)


def fd_off_diag_cosine():
    """T3: ... and orthogonal to the other centres: cos(w_j, mu_l) = 0 for l != j."""
    return np.float64(0.0)


def clean_accuracy():
    """T1/T3: both models reach (near-)perfect clean test accuracy."""
    return np.float64(1.0)


def attack_direction_cosine():
    """G1: the minimal flipping perturbation of the averaging net lies along v(x): cos(rho, v) = 1."""
    return np.float64(1.0)


def granularity_radius(g, d, k):
    """G6: F_max radius with g super-classes, sqrt(g d / (2k)) (sqrt(d/k) at g=2, sqrt(d/2) at g=k)."""
    return np.sqrt(np.asarray(g, float) * np.asarray(d, float) / (2.0 * np.asarray(k, float)))


def _phi(z):
    z = np.asarray(z, float)
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


def acc_fa(eps, d, k):
    """G1 overlay: robust accuracy of the idealised FA net, Phi(sqrt(d/k) - eps)."""
    return _phi(fa_radius(d, k) - np.asarray(eps, float))


def acc_fd(eps, d, p, draws: int = 100_000, seed: int = 0):
    """G4 FD overlay (F_max, tau = 0): P[r_FD >= eps], r_FD = (sqrt(d) + g_y - max_{l<=p} g_l)/sqrt(2).

    Monte Carlo with ``draws`` iid standard normals (seeded: deterministic).
    """
    rng = np.random.default_rng(seed)
    g_own = rng.standard_normal(draws)
    g_opp = rng.standard_normal((draws, int(p))).max(axis=1)
    r = (math.sqrt(d) + g_own - g_opp) / math.sqrt(2.0)
    eps = np.atleast_1d(np.asarray(eps, float))
    return (r[None, :] >= eps[:, None]).mean(axis=1)


def g4_fsum_radius(tau, d, p):
    """G4: F_sum radius of the decoupled net with threshold tau against p opposite neurons.

    r(tau) = min(sqrt(d) - tau, min_{1<=q<=p} (sqrt(d) + (q-1) tau) / sqrt(1+q)).
    """
    tau = np.asarray(tau, float)
    sd = math.sqrt(d)
    routes = [(sd + (q - 1) * tau) / math.sqrt(1 + q) for q in range(1, int(p) + 1)]
    return np.minimum(sd - tau, np.min(np.stack(routes), axis=0))


def gradient_cosine(n_y, k):
    """Attack geometry: cos(grad_x F at a clean point, sum_{J+} mu - sum_{J-} mu) = sqrt(|J_y|/k)."""
    return np.sqrt(np.asarray(n_y, float) / np.asarray(k, float))


def fa_boundary_k(d, eps):
    """S1: for fixed eps the FA net breaks once k >= k* = d / eps^2."""
    return np.asarray(d, float) / np.asarray(eps, float) ** 2
