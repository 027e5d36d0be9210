"""Average gradient outer product (AGOP) and the Neural Feature Ansatz (spec ``agop_collapse.md`` 2.1, 2.2).

For a predictor f: R^d -> R^c with Jacobian J(x) (c, d) at the points x_1..x_N (axis ``samples``):

    AGOP(f) = (1/N) sum_i J(x_i)^T J(x_i) = (1/N) sum_i sum_c grad f_c(x_i) grad f_c(x_i)^T        (d, d)

uncentered and summed over the c outputs with no per-output weight. ``centered=True`` subtracts each output's mean
gradient first, (1/N) sum_i (J_i - Jbar)^T (J_i - Jbar) = AGOP - Jbar^T Jbar; ``diagonal=True`` returns only the
diagonal (d,). Per-sample Jacobians come from ``jax.jacrev`` (or ``jacfwd``) under ``vmap``, evaluated in chunks
of ``chunk_size`` samples inside a ``lax.map`` so memory is O(chunk_size * c * d), never O(N * c * d). Inputs of
any shape are flattened to d = prod(shape); ``f`` takes ONE sample of the original shape.

The network AGOP at layer l of a fa-jax MLP (``fa_jax.models.mlp``) is the AGOP of the map from that layer's
input h_{l-1} to the outputs, at h_{l-1}(x_i): ``mlp_layer_agops``. The spec's code sums over samples; here it is
the mean (a global scale: correlations and NC ratios do not see it).

NFA correlation (Pearson over matrix entries): rho(A, B) = <A - abar, B - bbar>_F / (||A - abar||_F ||B - bbar||_F),
abar the mean of all entries; the ansatz compares W_l^T W_l with AGOP_l^alpha (alpha = 1/2 as in the paper's
figures; alpha = 1 also reported). Powers via symmetric eigendecomposition, negative eigenvalues clipped to 0.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from .. import linalg as _linalg
from ..models.mlp import apply_mlp, layer_inputs

__all__ = [
    "agop",
    "chunk_rows",
    "eig_power",
    "eigh",
    "mlp_layer_agops",
    "mlp_layer_grams",
    "mlp_nfa_correlations",
    "nfa_correlation",
    "pearson_entries",
    "psd_eig",
    "psd_power",
    "svd",
]


# eigh / svd stay unbatched under vmap (batched CPU LAPACK calls can deadlock XLA's pool): fa_jax.linalg
eigh, svd = _linalg.eigh, _linalg.svd


def chunk_rows(x: jax.Array, chunk_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The rows of ``x (samples, d)`` in chunks of b = min(chunk_size, samples), the last one zero-padded, for a
    ``lax.map`` over chunks: ``(chunks (n_chunks, b, d), index (n_chunks, b), valid (n_chunks, b))`` with
    n_chunks = ceil(samples / b), ``index`` the row number (>= samples on padding) and ``valid`` 1 on real rows,
    0 on padding (x's dtype: a weight that masks the padding out of sums)."""
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"invalid chunk_size={chunk_size!r}: allowed an integer >= 1")
    n, d = x.shape
    b = min(chunk_size, n)
    n_chunks = -(-n // b)
    pad = n_chunks * b - n
    xs = jnp.concatenate([x, jnp.zeros((pad, d), x.dtype)]) if pad else x
    idx = jnp.arange(n_chunks * b)
    valid = (idx < n).astype(x.dtype)
    return xs.reshape(n_chunks, b, d), idx.reshape(n_chunks, b), valid.reshape(n_chunks, b)


def agop(f: Callable, x: jax.Array, *, chunk_size: int = 256, centered: bool = False, diagonal: bool = False,
         mode: str = "rev") -> jax.Array:
    """AGOP of ``f`` over the points ``x (samples, ...)``: ``(d, d)`` (``(d,)`` when ``diagonal``).

    ``f(x_i) -> (c,)`` (or a scalar, c = 1) for one sample ``x_i`` of shape ``x.shape[1:]``; d = prod(x.shape[1:]).
    The points are processed ``chunk_size`` at a time (the last chunk zero-padded and masked out).
    """
    if mode not in ("rev", "fwd"):
        raise ValueError(f"invalid mode={mode!r}: allowed 'rev' (jacrev) or 'fwd' (jacfwd)")
    n = x.shape[0]
    shape = x.shape[1:]
    d = math.prod(shape)
    flat = x.reshape(n, d)

    def f_flat(v):
        return jnp.atleast_1d(f(v.reshape(shape))).reshape(-1)

    jac = jax.jacrev(f_flat) if mode == "rev" else jax.jacfwd(f_flat)
    xs, _, w = chunk_rows(flat, chunk_size)

    def one(args):
        xc, wc = args
        jc = jax.vmap(jac)(xc) * wc[:, None, None]  # (chunk, c, d); padded rows weigh 0
        s = jnp.sum(jc, axis=0)  # sum_i J_i, for centering
        if diagonal:
            return jnp.sum(jc ** 2, axis=(0, 1)), s
        j2 = jc.reshape(-1, d)
        return jnp.matmul(j2.T, j2, precision=lax.Precision.HIGHEST), s

    outer, sums = lax.map(one, (xs, w))
    g = jnp.sum(outer, axis=0) / n
    if centered:
        jbar = jnp.sum(sums, axis=0) / n  # (c, d)
        g = g - (jnp.sum(jbar ** 2, axis=0) if diagonal else jbar.T @ jbar)
    return g


def mlp_layer_agops(params, x: jax.Array, activation: str = "relu", *, layers=None, chunk_size: int = 256,
                    centered: bool = False) -> list[jax.Array]:
    """Per-layer AGOP of an MLP: ``[AGOP_l (n_{l-1}, n_{l-1}) for l in layers]`` (0-based, default all layers).

    AGOP_l = (1/N) sum_i J_l(h_{l-1}(x_i))^T J_l(h_{l-1}(x_i)), J_l the Jacobian of outputs w.r.t. layer l's input.
    """
    inputs = layer_inputs(params, x, activation)
    layers = range(len(params)) if layers is None else layers
    # the net from layer l on is the MLP of the kernels K_{l+1}..K_L (applied here to ONE sample (n_l,))
    return [agop(lambda h, l=l: apply_mlp(params[l:], h, activation), inputs[l], chunk_size=chunk_size,
                 centered=centered) for l in layers]


def mlp_layer_grams(params, layers=None) -> list[jax.Array]:
    """W_l^T W_l for each layer: with fa-jax's layout K_l = W_l^T (in, out) this is K_l K_l^T ``(n_{l-1}, n_{l-1})``."""
    layers = range(len(params)) if layers is None else layers
    return [params[l] @ params[l].T for l in layers]


def psd_eig(a: jax.Array, rtol: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """``(lam (d,), vecs (d, d))`` of the symmetric part of PSD ``a``: eigenvalues clipped at 0, and zeroed below
    ``rtol * max`` (for a low-rank A the numerically-zero eigenvalues, ~eps * max, would otherwise enter A^(1/2) at
    ~sqrt(eps), i.e. ~1e-8 relative noise directions). Ascending order, as ``eigh``."""
    evals, evecs = eigh(0.5 * (a + a.T))
    lam = jnp.clip(evals, 0.0, None)
    return jnp.where(lam > rtol * jnp.max(lam), lam, 0.0), evecs


def eig_power(lam: jax.Array, evecs: jax.Array, power) -> jax.Array:
    """V diag(lam^power) V^T from a :func:`psd_eig` decomposition (0^power = 0)."""
    # guard the pow's gradient/NaN path at exact zeros
    lam_p = jnp.where(lam > 0, jnp.power(jnp.where(lam > 0, lam, 1.0), power), 0.0)
    return (evecs * lam_p) @ evecs.T


def psd_power(a: jax.Array, power, rtol: float = 0.0) -> jax.Array:
    """A^power for a symmetric PSD ``a (d, d)``: :func:`psd_eig` (clip at 0, optional ``rtol`` cut), then
    :func:`eig_power`."""
    return eig_power(*psd_eig(a, rtol), power)


def pearson_entries(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson correlation over all entries: <A - abar, B - bbar>_F / (||A - abar||_F ||B - bbar||_F)."""
    a = a - jnp.mean(a)
    b = b - jnp.mean(b)
    return jnp.sum(a * b) / jnp.sqrt(jnp.sum(a ** 2) * jnp.sum(b ** 2))


def nfa_correlation(gram: jax.Array, agop_matrix: jax.Array, alpha=0.5) -> jax.Array:
    """rho(W^T W, AGOP^alpha): the Neural Feature Ansatz correlation (``gram`` = W^T W, both ``(d, d)``)."""
    return pearson_entries(gram, psd_power(agop_matrix, alpha))


def mlp_nfa_correlations(params, x: jax.Array, activation: str = "relu", *, layers=None, alphas=(0.5, 1.0),
                         chunk_size: int = 256) -> jax.Array:
    """``(len(alphas), layers)`` NFA correlations rho(W_l^T W_l, AGOP_l^alpha) of an MLP at the points ``x``."""
    layers = list(range(len(params)) if layers is None else layers)
    gs = mlp_layer_agops(params, x, activation, layers=layers, chunk_size=chunk_size)
    grams = mlp_layer_grams(params, layers)
    return jnp.stack([jnp.stack([nfa_correlation(w, g, a) for w, g in zip(grams, gs)]) for a in alphas])
