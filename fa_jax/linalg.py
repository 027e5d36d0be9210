"""Dense LAPACK decompositions that stay UNBATCHED under ``vmap`` (one place for every sim and metric).

Each function is wrapped in ``jax.custom_batching.sequential_vmap``: under ``vmap`` it becomes a sequential
``lax.map`` over the batch instead of one batched LAPACK call. Why: jaxlib's batched CPU LAPACK kernels
(``lapack_*_ffi`` -> ``ParallelBatchMap``) split the batch over XLA's intra-op thread pool and block the calling pool
thread until the pieces finish. When every pool thread is inside such a call — several devices of a multi-device
CPU program each reaching a batched QR, or two batched decompositions of one program running concurrently — no free
thread is left and the program deadlocks (seen on jax 0.10.2: 2 cores, and 8 forced host devices; gdb shows every
pool thread in ``BlockingCounter::Wait``). Unbatched calls never wait on the pool. ``fa_jax.sweep`` refuses a
multi-device CPU program that still contains a batched LAPACK call.

Shapes are those of the wrapped ``jnp.linalg`` function for ONE matrix; ``vmap`` adds the leading ``runs`` axis.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["chol_solve", "eigh", "qr", "qr_q", "singular_values", "svd"]


@jax.custom_batching.sequential_vmap
def qr(a: jax.Array):
    """Reduced QR ``(q (m, n), r (n, n))`` of ``a (m, n)`` (``jnp.linalg.qr``)."""
    q, r = jnp.linalg.qr(a)
    return q, r


def qr_q(a: jax.Array) -> jax.Array:
    """The orthonormal factor ``q (m, n)`` of the reduced QR of ``a (m, n)``."""
    return qr(a)[0]


@jax.custom_batching.sequential_vmap
def eigh(a: jax.Array):
    """``(eigenvalues ascending (n,), eigenvectors (n, n))`` of a symmetric ``a (n, n)`` (``jnp.linalg.eigh``)."""
    w, v = jnp.linalg.eigh(a)
    return w, v


@jax.custom_batching.sequential_vmap
def svd(a: jax.Array):
    """Thin SVD ``(u (m, k), s (k,), vh (k, n))``, k = min(m, n) (``jnp.linalg.svd(full_matrices=False)``)."""
    u, s, vh = jnp.linalg.svd(a, full_matrices=False)
    return u, s, vh


@jax.custom_batching.sequential_vmap
def singular_values(a: jax.Array) -> jax.Array:
    """Singular values ``(k,)`` of ``a (m, n)``, descending (``jnp.linalg.svd(compute_uv=False)``)."""
    return jnp.linalg.svd(a, compute_uv=False)


@jax.custom_batching.sequential_vmap
def chol_solve(a: jax.Array, y: jax.Array) -> jax.Array:
    """``a^{-1} y`` by Cholesky for a symmetric positive definite ``a (n, n)``, ``y (n, k)`` (NaN if not PD)."""
    c = jax.scipy.linalg.cho_factor(a, lower=True)
    return jax.scipy.linalg.cho_solve(c, y)
