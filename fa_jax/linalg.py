"""Dense LAPACK decompositions that stay UNBATCHED under ``vmap`` (one place for every sim and metric).

Each function is wrapped in :func:`_unbatched_on_cpu`: under ``vmap`` on CPU it becomes a sequential ``lax.map``
over the batch instead of one batched LAPACK call. Why: jaxlib's batched CPU LAPACK kernels
(``lapack_*_ffi`` -> ``ParallelBatchMap``) split the batch over XLA's intra-op thread pool and block the calling pool
thread until the pieces finish. When every pool thread is inside such a call — several devices of a multi-device
CPU program each reaching a batched QR, or two batched decompositions of one program running concurrently — no free
thread is left and the program deadlocks (seen on jax 0.10.2: 2 cores, and 8 forced host devices; gdb shows every
pool thread in ``BlockingCounter::Wait``). Unbatched calls never wait on the pool. ``fa_jax.sweep`` refuses a
multi-device CPU program that still contains a batched LAPACK call.

Only on CPU: the rule (:func:`_unbatched_on_cpu`) picks the branch per platform when the program is lowered
(``lax.platform_dependent``), so on GPU/TPU a vmapped decomposition stays one batched solver call (cuSOLVER's
batched kernels do not share XLA's host pool and are far faster than a loop).

Shapes are those of the wrapped ``jnp.linalg`` function for ONE matrix; ``vmap`` adds the leading ``runs`` axis.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["chol_solve", "eigh", "qr", "qr_q", "singular_values", "svd"]


def _unbatched_on_cpu(fn):
    """``fn`` with a vmap rule: a sequential ``lax.map`` over the batch on CPU, the plain batched ``vmap(fn)``
    elsewhere (the choice is made per platform at lowering). Unbatched arguments are broadcast to the batch."""
    f = jax.custom_batching.custom_vmap(fn)

    @f.def_vmap
    def _rule(axis_size, in_batched, *args):
        args = [a if b else jnp.broadcast_to(a, (axis_size, *jnp.shape(a))) for a, b in zip(args, in_batched)]
        out = lax.platform_dependent(*args, cpu=lambda *xs: lax.map(lambda t: f(*t), xs), default=jax.vmap(fn))
        return out, jax.tree.map(lambda _: True, out)

    return f


@_unbatched_on_cpu
def qr(a: jax.Array):
    """Reduced QR ``(q (m, n), r (n, n))`` of ``a (m, n)`` (``jnp.linalg.qr``)."""
    q, r = jnp.linalg.qr(a)
    return q, r


def qr_q(a: jax.Array) -> jax.Array:
    """The orthonormal factor ``q (m, n)`` of the reduced QR of ``a (m, n)``."""
    return qr(a)[0]


@_unbatched_on_cpu
def eigh(a: jax.Array):
    """``(eigenvalues ascending (n,), eigenvectors (n, n))`` of a symmetric ``a (n, n)`` (``jnp.linalg.eigh``)."""
    w, v = jnp.linalg.eigh(a)
    return w, v


@_unbatched_on_cpu
def svd(a: jax.Array):
    """Thin SVD ``(u (m, k), s (k,), vh (k, n))``, k = min(m, n) (``jnp.linalg.svd(full_matrices=False)``)."""
    u, s, vh = jnp.linalg.svd(a, full_matrices=False)
    return u, s, vh


@_unbatched_on_cpu
def singular_values(a: jax.Array) -> jax.Array:
    """Singular values ``(k,)`` of ``a (m, n)``, descending (``jnp.linalg.svd(compute_uv=False)``)."""
    return jnp.linalg.svd(a, compute_uv=False)


@_unbatched_on_cpu
def chol_solve(a: jax.Array, y: jax.Array) -> jax.Array:
    """``a^{-1} y`` by Cholesky for a symmetric positive definite ``a (n, n)``, ``y (n, k)`` (NaN if not PD)."""
    c = jax.scipy.linalg.cho_factor(a, lower=True)
    return jax.scipy.linalg.cho_solve(c, y)
