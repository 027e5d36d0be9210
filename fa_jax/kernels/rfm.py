"""Kernel machines with a learned Mahalanobis metric: RFM and Deep RFM (spec ``agop_collapse.md`` 2.3, 2.4, 6).

Kernels (``x (a, d)``, ``z (b, d)``, metric ``M (d, d)`` or its diagonal ``(d,)``, bandwidth L, ||v||_M^2 = v^T M v):

* ``"laplace"``:  k_M(x, z) = exp(-||x - z||_M / L)
* ``"gaussian"``: k_M(x, z) = exp(-||x - z||_M^2 / (2 L^2))
* ``"linear"``:   k_M(x, z) = x^T M z

||x - z||_M^2 = x^T M x + z^T M z - 2 x^T M z is clamped at 0 before the square root (it can round below 0).

Kernel ridge regression: alpha = (K_M(X, X) + mu I)^{-1} Y by a Cholesky factorisation, ``(samples, outputs)``;
f_c(x) = sum_j alpha_jc k_M(x, x_j). The ridge mu is always an explicit argument.

Predictor gradients in closed form (the RFM library's formulas), for the AGOP:
laplace   grad f_c(x) = (1/L) sum_j alpha_jc k_M(x, x_j) / ||x - x_j||_M * M (x_j - x), with the term of the
          training point itself (same index, or ||x - x_j||_M < 1e-10) set to 0;
gaussian  grad f_c(x) = (1/L^2) sum_j alpha_jc k_M(x, x_j) M (x_j - x);
linear    grad f_c(x) = M sum_j alpha_jc x_j.
AGOP = (1/N) sum_i sum_c grad f_c(x_i) grad f_c(x_i)^T over the training points, in chunks of query points so the
(chunk, samples, outputs) weights are the largest temporaries.

RFM: M_0 = I; for t < T: alpha_t = KRR(M_t), M_{t+1} = normalise(AGOP(f_t)); final alpha refit with M_T.
Normalisation ``"max"`` divides by the largest |entry| (what Deep RFM uses), ``"trace"`` by the trace, ``"none"``.
``diagonal=True``: M is a vector (only the AGOP's diagonal is kept).

Deep RFM, one layer l (rows = samples): x <- x/||x|| (record X_l); fit a plain (M = I) kernel machine to Y;
M_l = normalise(AGOP); Z_l = X_l M_l^s (s = ``power``, 1/2 in the paper; record Z_l); X_{l+1} = Phi_l(Z_l) with an
untrained random feature map (record). ``use_agop`` (traced, 0 or 1) replaces M_l^s by
use_agop M_l^s + (1 - use_agop) I: at 0 the random-features-only control (M = I). Feature maps (``feature``):
* ``"cos"``: Phi(z) = sqrt(2/D) cos(W z + b), W (D, d) iid gamma * standard Cauchy, b ~ U[0, 2 pi); D = ``rff_width``
  or, when 0, the layer's input dimension (the official code's D = d);
* ``"relu"``: Phi(z) = ReLU(W z), W (width, d) iid U(-1/sqrt(d), 1/sqrt(d)), no bias;
* ``"none"``: Phi = identity (the "AGOP only" control).
Layer l's features are drawn from fold_in(feature_key, l); data seeds are separate. Layer 1 is peeled off (it may
change the width), layers 2..depth run in a ``lax.scan``.

Memory: the N x N kernel (and its Cholesky factor and distance temporaries) must fit: :func:`check_kernel_memory`
refuses an N that does not, naming a feasible N.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from ..linalg import chol_solve
from ..metrics.agop import chunk_rows, eig_power, psd_eig
from ..metrics.collapse import nc_metrics

__all__ = ["FEATURES", "KERNELS", "NORMALISATIONS", "check_kernel_memory", "deep_rfm", "deep_rfm_layer",
           "kernel_agop", "kernel_matrix", "kernel_memory_bytes", "krr_solve", "normalise_agop",
           "predictor_gradients", "random_features", "rfm", "sq_mahalanobis"]

KERNELS = ("laplace", "gaussian", "linear")
FEATURES = ("cos", "relu", "none")
NORMALISATIONS = ("max", "trace", "none")
_SELF_EPS = 1e-10
KERNEL_COPIES = 4  # kernel matrix, Cholesky factor, squared distances, one more N x N temporary


def _apply_m(v, m):
    """v M for rows v (..., d); ``m`` is (d, d), a diagonal (d,), or None (identity)."""
    if m is None:
        return v
    if m.ndim == 1:
        return v * m
    return v @ m


def sq_mahalanobis(x: jax.Array, z: jax.Array, m=None) -> jax.Array:
    """||x_a - z_b||_M^2 ``(a, b)``, clamped at 0; when ``z is x`` the diagonal is exactly 0 (the expanded form
    leaves ~1e-16 there, whose square root would perturb the Laplace kernel's diagonal by ~1e-8)."""
    xm, zm = _apply_m(x, m), _apply_m(z, m)
    xx = jnp.sum(xm * x, axis=1)
    zz = jnp.sum(zm * z, axis=1)
    d2 = jnp.maximum(xx[:, None] + zz[None, :] - 2.0 * xm @ z.T, 0.0)
    if z is x:
        d2 = d2 * (1.0 - jnp.eye(x.shape[0], dtype=d2.dtype))
    return d2


def kernel_matrix(x: jax.Array, z: jax.Array, m=None, bandwidth=1.0, kernel: str = "laplace") -> jax.Array:
    """k_M(x_a, z_b) ``(a, b)`` (see the module docstring)."""
    if kernel == "laplace":
        return jnp.exp(-jnp.sqrt(sq_mahalanobis(x, z, m)) / bandwidth)
    if kernel == "gaussian":
        return jnp.exp(-sq_mahalanobis(x, z, m) / (2.0 * bandwidth ** 2))
    if kernel == "linear":
        return _apply_m(x, m) @ z.T
    raise ValueError(f"invalid kernel={kernel!r}: allowed one of {KERNELS}")


def kernel_memory_bytes(n: int, dtype=None, runs: int = 1) -> int:
    """Bytes of the N x N matrices one kernel solve holds at once (``KERNEL_COPIES`` of them), times ``runs``."""
    itemsize = jnp.dtype(dtype or jnp.result_type(float)).itemsize
    return int(KERNEL_COPIES * n * n * itemsize * runs)


def check_kernel_memory(n: int, *, budget_bytes: int | None = None, dtype=None, runs: int = 1) -> None:
    """Raise ``ValueError`` if the N x N kernel solve cannot fit ``budget_bytes`` (default: the sweep engine's
    per-device budget, half of the device's memory)."""
    if budget_bytes is None:
        from ..sweep import memory_budget

        budget_bytes = memory_budget()
    need = kernel_memory_bytes(n, dtype, runs)
    if need > budget_bytes:
        itemsize = jnp.dtype(dtype or jnp.result_type(float)).itemsize
        n_max = int(math.sqrt(budget_bytes / (KERNEL_COPIES * itemsize * runs)))
        raise ValueError(
            f"invalid n={n}: allowed n <= {n_max} for this memory budget; the {n} x {n} kernel solve needs "
            f"{need / 2**30:.2f} GiB ({KERNEL_COPIES} N x N arrays x {itemsize} B x {runs} run(s)) but the budget is "
            f"{budget_bytes / 2**30:.2f} GiB. Use a smaller n (subsample, e.g. n = {n_max}), fewer runs per chunk "
            f"(chunked mode: run_sweep(..., chunk_size=1)), or float32.")


def krr_solve(kmat: jax.Array, y: jax.Array, ridge) -> jax.Array:
    """alpha = (K + ridge I)^{-1} Y by Cholesky, ``(samples, outputs)`` (NaN if K + ridge I is not PD)."""
    n = kmat.shape[0]
    return chol_solve(kmat + ridge * jnp.eye(n, dtype=kmat.dtype), y)


def predictor_gradients(xq: jax.Array, x: jax.Array, alpha: jax.Array, m=None, bandwidth=1.0,
                        kernel: str = "laplace", self_index: jax.Array | None = None) -> jax.Array:
    """grad f_c(xq_q) in closed form, ``(queries, outputs, d)``. ``self_index (queries,)``: the training index of
    each query (its own term is zeroed; -1 for none)."""
    if kernel == "linear":
        g = _apply_m(alpha.T @ x, m)  # (c, d), the same at every point
        return jnp.broadcast_to(g, (xq.shape[0],) + g.shape)
    d2 = sq_mahalanobis(xq, x, m)
    if kernel == "laplace":
        dist = jnp.sqrt(d2)
        kq = jnp.exp(-dist / bandwidth)
        keep = dist >= _SELF_EPS
        if self_index is not None:
            keep &= jnp.arange(x.shape[0])[None, :] != self_index[:, None]
        w = jnp.where(keep, kq / (bandwidth * jnp.where(keep, dist, 1.0)), 0.0)
    elif kernel == "gaussian":
        w = jnp.exp(-d2 / (2.0 * bandwidth ** 2)) / bandwidth ** 2
    else:
        raise ValueError(f"invalid kernel={kernel!r}: allowed one of {KERNELS}")
    # sum_j w_qj alpha_jc (x_j - x_q) M
    t1 = jnp.einsum("qjc,jd->qcd", w[:, :, None] * alpha[None, :, :], x)
    t2 = (w @ alpha)[:, :, None] * xq[:, None, :]
    return _apply_m(t1 - t2, m)


def kernel_agop(x: jax.Array, alpha: jax.Array, m=None, bandwidth=1.0, kernel: str = "laplace", *,
                chunk_size: int = 256, diagonal: bool = False) -> jax.Array:
    """AGOP of the kernel predictor over its training points ``x (samples, d)``: ``(d, d)`` (``(d,)`` if diagonal)."""
    n, d = x.shape
    chunks = chunk_rows(x, chunk_size)

    def one(args):
        xq, iq, wq = args
        g = predictor_gradients(xq, x, alpha, m, bandwidth, kernel, self_index=iq) * wq[:, None, None]
        if diagonal:
            return jnp.sum(g ** 2, axis=(0, 1))
        g2 = g.reshape(-1, d)
        return g2.T @ g2

    parts = lax.map(one, chunks)
    return jnp.sum(parts, axis=0) / n


def normalise_agop(g: jax.Array, how: str = "max") -> jax.Array:
    if how == "max":
        return g / jnp.max(jnp.abs(g))
    if how == "trace":
        return g / (jnp.sum(g) if g.ndim == 1 else jnp.trace(g))
    if how == "none":
        return g
    raise ValueError(f"invalid normalise={how!r}: allowed one of {NORMALISATIONS}")


def rfm(x: jax.Array, y: jax.Array, *, bandwidth=1.0, ridge=1e-3, iters: int = 3, kernel: str = "laplace",
        diagonal: bool = False, normalise: str = "max", chunk_size: int = 256, check_memory: bool = True):
    """Recursive Feature Machine: ``(M (d, d) or (d,), alpha (samples, outputs), Ms (iters, ...))``.

    M_0 = I; M_{t+1} = normalise(AGOP(KRR with M_t)) for t < ``iters``; alpha refit with the final M.
    """
    n, d = x.shape
    if check_memory:
        check_kernel_memory(n, dtype=x.dtype)
    m = jnp.ones((d,), x.dtype) if diagonal else jnp.eye(d, dtype=x.dtype)
    history = []
    for _ in range(iters):
        alpha = krr_solve(kernel_matrix(x, x, m, bandwidth, kernel), y, ridge)
        m = normalise_agop(kernel_agop(x, alpha, m, bandwidth, kernel, chunk_size=chunk_size, diagonal=diagonal),
                           normalise)
        history.append(m)
    alpha = krr_solve(kernel_matrix(x, x, m, bandwidth, kernel), y, ridge)
    return m, alpha, (jnp.stack(history) if history else m[None])


def random_features(key: jax.Array, z: jax.Array, feature: str = "cos", *, gamma=0.5, width: int = 0) -> jax.Array:
    """Untrained random feature map of the rows of ``z (samples, d)`` (see the module docstring)."""
    d = z.shape[1]
    if feature == "none":
        return z
    k_w, k_b = jax.random.split(key)
    if feature == "cos":
        dd = width or d
        w = gamma * jax.random.cauchy(k_w, (dd, d), z.dtype)
        b = jax.random.uniform(k_b, (dd,), z.dtype, 0.0, 2.0 * jnp.pi)
        return math.sqrt(2.0 / dd) * jnp.cos(z @ w.T + b)
    if feature == "relu":
        k = width or d
        w = jax.random.uniform(k_w, (k, d), z.dtype, -1.0 / math.sqrt(d), 1.0 / math.sqrt(d))
        return jax.nn.relu(z @ w.T)
    raise ValueError(f"invalid feature={feature!r}: allowed one of {FEATURES}")


def deep_rfm_layer(x, y, labels, n_classes: int, key, *, bandwidth=2.0, ridge=1e-3, power=0.5, use_agop=1.0,
                   gamma=0.5, kernel: str = "laplace", feature: str = "cos", width: int = 0,
                   normalise: str = "max", chunk_size: int = 256):
    """One Deep RFM layer: ``(X_{l+1}, stats)``; stats hold the NC metrics of the three stages ``x`` (X_l),
    ``z`` (X_l M^s) and ``phi`` (Phi(X_l M^s)), the kernel fit's train MSE and the AGOP spectrum's
    top-K trace fraction."""
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    alpha = krr_solve(kernel_matrix(x, x, None, bandwidth, kernel), y, ridge)
    g = normalise_agop(kernel_agop(x, alpha, None, bandwidth, kernel, chunk_size=chunk_size), normalise)
    d = x.shape[1]
    # one eigh of M serves both M^s and the spectrum; with use_agop in {0, 1}, M_eff^s = use_agop M^s + (1 - use_agop) I
    lam_g, evecs = psd_eig(g)
    root = eig_power(lam_g, evecs, power)
    z = x @ (use_agop * root + (1.0 - use_agop) * jnp.eye(d, dtype=x.dtype))
    phi = random_features(key, z, feature, gamma=gamma, width=width)
    k = min(n_classes, d)
    stats = {"x": nc_metrics(x, labels, n_classes), "z": nc_metrics(z, labels, n_classes),
             "phi": nc_metrics(phi, labels, n_classes),
             "agop_topk_frac": jnp.sum(lam_g[-k:]) / jnp.sum(lam_g),
             "agop_top1_frac": lam_g[-1] / jnp.sum(lam_g)}
    return phi, stats


def deep_rfm(x, y, labels, n_classes: int, *, depth: int, key, check_memory: bool = True, **layer_kw):
    """Deep RFM of ``depth`` layers on ``x (samples, d)``, ``y (samples, K)``: per-layer stats stacked along a
    leading ``layers`` axis (see :func:`deep_rfm_layer`), plus the final features."""
    if not (isinstance(depth, int) and depth >= 1):
        raise ValueError(f"invalid depth={depth!r}: allowed an integer >= 1")
    if check_memory:
        check_kernel_memory(x.shape[0], dtype=x.dtype)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(depth))
    h, first = deep_rfm_layer(x, y, labels, n_classes, keys[0], **layer_kw)
    if depth == 1:
        return jax.tree.map(lambda a: a[None], first), h

    def body(hh, kk):
        return deep_rfm_layer(hh, y, labels, n_classes, kk, **layer_kw)

    h, rest = lax.scan(body, h, keys[1:])
    stats = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
    return stats, h
