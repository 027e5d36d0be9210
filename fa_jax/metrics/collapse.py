"""Neural-collapse metrics (spec ``agop_collapse.md`` 2.5), textbook normalisation.

Features ``h (samples, features)`` with integer labels ``(samples,)`` in 0..K-1. Class means mu_c (n_c samples),
global mean mu_G = (1/K) sum_c mu_c (the mean of the class means),

    Sigma_B = (1/K) sum_c (mu_c - mu_G)(mu_c - mu_G)^T,
    Sigma_W = (1/N) sum_c sum_{i in c} (h_i - mu_c)(h_i - mu_c)^T,
    Sigma_T = (1/N) sum_i (h_i - mu_G)(h_i - mu_G)^T          (= Sigma_W + Sigma_B for balanced classes).

* NC1 (every figure): tr Sigma_W / tr Sigma_B (``nc1``).
* Papyan's NC1: (1/K) tr(Sigma_W Sigma_B^+) (``nc1_papyan``); Sigma_B^+ with an explicit relative cutoff ``rtol``.
* NC2: u_c = (mu_c - mu_G)/||mu_c - mu_G||, G = [<u_c, u_c'>], E = K/(K-1) I - 1/(K-1) 11^T; NC2 = mean over the
  K^2 entries of (G - E)^2.

The paper's code divides Sigma_W and Sigma_T by K*N: its NC1 is ``nc1 / K`` for balanced classes
(:data:`CODE_NC1_FACTOR` documents the factor; only use it to overlay the paper's plots, labelled as such).

Nothing p x p is formed: with D (K, p) the centred class means and E (N, p) the within-class residuals,
tr Sigma_W = ||E||_F^2 / N, tr Sigma_B = ||D||_F^2 / K, and since Sigma_B^+ = K D^+ D^+^T with
D^+ = D^T (D D^T)^+, tr(Sigma_W Sigma_B^+) = (K/N) ||E D^T (D D^T)^+||_F^2 (a K x K pseudo-inverse).

Invariance: every metric here is unchanged by h -> h Q^T for Q with orthonormal columns (E, D -> E Q^T, D Q^T keeps
all inner products) and NC1 by a global scale; so NC1(U S V^T phi) = NC1(S V^T phi) exactly.

Per-stage helpers: for a hidden layer with weight W = U S V^T (torch layout (out, in); fa-jax stores K = W^T), the
stages are Phi (the layer input), S V^T Phi, U S V^T Phi (pre-activation) and ReLU(U S V^T Phi) (the output).
S V^T Phi uses the thin SVD (r = min(in, out) rows): zero-padding to a rectangular S adds zero coordinates, which no
metric here sees.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..models.mlp import _act
from .agop import eigh, svd

__all__ = ["CODE_NC1_FACTOR", "class_means", "frac_right", "mlp_stage_features", "nc1", "nc1_papyan", "nc2",
           "nc_metrics", "one_hot"]

CODE_NC1_FACTOR = "K"  # paper-code NC1 = textbook NC1 / K for balanced classes


def one_hot(labels: jax.Array, k: int, dtype=None) -> jax.Array:
    dtype = dtype or jnp.result_type(float)
    return (labels[:, None] == jnp.arange(k)[None, :]).astype(dtype)


def class_means(h: jax.Array, labels: jax.Array, k: int):
    """``(means (K, p), counts (K,))``."""
    oh = one_hot(labels, k, h.dtype)
    counts = jnp.sum(oh, axis=0)
    return (oh.T @ h) / counts[:, None], counts


def _parts(h, labels, k):
    mu, _ = class_means(h, labels, k)
    mu_g = jnp.mean(mu, axis=0)
    d = mu - mu_g  # (K, p)
    e = h - mu[labels]  # (N, p)
    return d, e, h - mu_g


def nc_metrics(h: jax.Array, labels: jax.Array, k: int, *, rtol: float = 1e-10) -> dict[str, jax.Array]:
    """All collapse metrics of ``h (samples, features)``: ``{"nc1", "nc1_papyan", "nc2", "tr_sw", "tr_sb",
    "tr_st"}`` (scalars; textbook normalisation). ``rtol``: relative eigenvalue cutoff of (D D^T)^+."""
    n = h.shape[0]
    d, e, t = _parts(h, labels, k)
    tr_sw = jnp.sum(e ** 2) / n
    tr_sb = jnp.sum(d ** 2) / k
    tr_st = jnp.sum(t ** 2) / n
    ddt = d @ d.T
    lam, vec = eigh(ddt)  # (D D^T)^+ by eigh with an explicit relative cutoff
    keep = lam > rtol * jnp.max(lam)
    pinv = (vec * jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)) @ vec.T
    proj = e @ d.T @ pinv  # E D^+, (N, K)
    papyan = jnp.sum(proj ** 2) / n  # (1/K) tr(Sigma_W Sigma_B^+) = (1/K)(K/N)||E D^+||^2
    norms = jnp.sqrt(jnp.diag(ddt))
    g = ddt / (norms[:, None] * norms[None, :])
    etf = (k / (k - 1.0)) * jnp.eye(k, dtype=h.dtype) - 1.0 / (k - 1.0)
    return {"nc1": tr_sw / tr_sb, "nc1_papyan": papyan, "nc2": jnp.mean((g - etf) ** 2), "tr_sw": tr_sw,
            "tr_sb": tr_sb, "tr_st": tr_st}


def nc1(h, labels, k):
    """tr Sigma_W / tr Sigma_B (textbook normalisation)."""
    return nc_metrics(h, labels, k)["nc1"]


def nc1_papyan(h, labels, k, rtol: float = 1e-10):
    """(1/K) tr(Sigma_W Sigma_B^+)."""
    return nc_metrics(h, labels, k, rtol=rtol)["nc1_papyan"]


def nc2(h, labels, k):
    """Mean squared distance of the normalised class-mean Gram to the simplex ETF Gram."""
    return nc_metrics(h, labels, k)["nc2"]


def mlp_stage_features(params, x: jax.Array, activation: str = "relu", layers=None) -> list[dict]:
    """For each hidden layer l (0-based, default every layer but the head) the four stages
    ``{"phi": h_{l-1} (N, n_{l-1}), "svt": h_{l-1} V S (N, r), "pre": h_{l-1} K_l (N, n_l), "out": sigma(pre)}``.

    With K_l = W_l^T = A S B^T (thin SVD of the fa-jax kernel), W_l = B S A^T, so U = B, V = A and the row form
    of S V^T phi is phi A S."""
    act = _act(activation)
    layers = list(range(len(params) - 1) if layers is None else layers)
    h, out = x, []
    for layer in range(max(layers) + 1):
        kmat = params[layer]
        pre = h @ kmat
        if layer in layers:
            a, s, _ = svd(kmat)
            out.append({"phi": h, "svt": (h @ a) * s, "pre": pre, "out": act(pre)})
        h = act(pre)
    return out


def frac_right(nc1_phi, nc1_svt, nc1_out):
    """Right-singular share of a layer's log-NC1 reduction:
    [log NC1(Phi) - log NC1(S V^T Phi)] / [log NC1(Phi) - log NC1(ReLU(U S V^T Phi))] (> 1 if the ReLU raises NC1).

    U's share is exactly 0 (NC1 is invariant to it) and the nonlinearity's share is 1 - frac_right."""
    return (jnp.log(nc1_phi) - jnp.log(nc1_svt)) / (jnp.log(nc1_phi) - jnp.log(nc1_out))
