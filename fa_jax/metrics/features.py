"""Feature metrics: cosine matrices between centres and neurons, and their feature-averaging summaries.

cos(mu_i, w) = <mu_i, w> / (||mu_i|| ||w||).  Shapes: ``centres (k, d)``, ``W (neurons, d)`` -> ``(k, neurons)``.
"""
from __future__ import annotations

import jax.numpy as jnp

_TINY = 1e-30


def cosine_matrix(a, b):
    """``a (p, d)``, ``b (q, d)`` -> ``(p, q)`` matrix of cosines (0 where a row is zero)."""
    an = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), _TINY)
    bn = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), _TINY)
    return an @ bn.T


def masked_mean(x, m):
    """sum(x m) / sum(m): the mean over real (unmasked) entries."""
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def block_summary(cos, block, mask, rows=None):
    """Summaries of ``cos (k, neurons)`` split into in-block (``block`` true) and off-block entries.

    ``mask (neurons,)`` drops padded neurons, ``rows (k,)`` (optional) padded clusters (a cluster bucket's slots
    j >= k). Returns in-block mean/min/max and off-block mean/max.
    """
    m = mask[None, :] * jnp.ones_like(cos)
    if rows is not None:
        m = m * rows[:, None].astype(cos.dtype)
    inb = m * block
    off = m * (1.0 - block)
    big = jnp.asarray(jnp.inf, cos.dtype)
    return {
        "in_mean": masked_mean(cos, inb),
        "in_min": jnp.min(jnp.where(inb > 0, cos, big)),
        "in_max": jnp.max(jnp.where(inb > 0, cos, -big)),
        "off_mean": masked_mean(cos, off),
        "off_max": jnp.max(jnp.where(off > 0, cos, -big)),
        "off_absmax": jnp.max(jnp.where(off > 0, jnp.abs(cos), -big)),
    }


def binary_feature_summary(centres, W, signs, side_sign, mask):
    """Feature-averaging summary of a binary net.

    Args: ``centres (k,d)``, ``W (neurons,d)``, cluster ``signs (k,)`` in {+1,-1} (0: a padding slot of a cluster
    bucket, left out of every summary), neuron ``side_sign (neurons,)`` (+1 for the + side), ``mask (neurons,)``.
    Returns the cosine matrix ``cos (k, neurons)``, its in-/off-block summary, the mean cosine of each neuron with
    its class sum  sum_{j in J_s} mu_j, and the minimum pairwise cosine within a class group.
    """
    cos = cosine_matrix(centres, W)
    block = (signs[:, None] == side_sign[None, :]).astype(cos.dtype)
    out = block_summary(cos, block, mask, rows=signs != 0)
    class_sum = jnp.stack([jnp.sum(centres * (signs == s)[:, None], 0) for s in (1.0, -1.0)])  # (2, d)
    cs = cosine_matrix(W, class_sum)  # (neurons, 2)
    own = jnp.where(side_sign > 0, cs[:, 0], cs[:, 1])
    out["class_sum_cos"] = masked_mean(own, mask)
    pair = cosine_matrix(W, W)
    same = (side_sign[:, None] == side_sign[None, :]) & (mask[:, None] > 0) & (mask[None, :] > 0)
    out["group_min_pair_cos"] = jnp.min(jnp.where(same, pair, jnp.inf))
    out["cos"] = cos
    return out


def diagonal_summary(cos):
    """Summary of ``cos (k, k)`` between centres and the multi-class equivalent weights (one per output)."""
    k = cos.shape[0]
    eye = jnp.eye(k, dtype=cos.dtype)
    out = block_summary(cos, eye, jnp.ones((k,), cos.dtype))
    out["cos"] = cos
    return out


def relative_movement(w_final, w_init, mask):
    """||W_T - W_0||_F / ||W_0||_F over real (unmasked) neurons."""
    m = mask[:, None]
    return jnp.linalg.norm((w_final - w_init) * m) / jnp.maximum(jnp.linalg.norm(w_init * m), _TINY)
