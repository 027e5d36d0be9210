"""Subspace banks for margin measurements (spec ``hold_me_tight.md`` Sec. 2.2): DCT blocks along the frequency
diagonal, random subspaces, spans of given directions and their orthogonal complements.

A bank is a :class:`Bank` pytree whose leaves carry a leading ``subspaces`` axis, so margins vmap over it:

* ``masks (subspaces, H, W)``: DCT coordinate subspaces of images ``(H, W, C)`` (fa-jax's NHWC layout), the same
  coefficient mask on every channel (I_C (x) S_block, dimension C |mask|). P v = idct2(mask * dct2(v)) per channel:
  exact and O(D log D)-like, no dense D x d basis.
* ``bases (subspaces, D, d)``: orthonormal columns in the flattened (H, W, C) order of a sample, zero-padded to a
  common d (a zero column adds nothing to P = B B^T, so subspaces of different dimensions share one bank);
  P v = B (B^T v).

:func:`project` applies one slice (``bank[i]``) to one sample. When both are set, P = P_mask + P_basis: one bank can
then mix DCT blocks (basis all zero) and dense subspaces (mask all zero), so a single vmapped DeepFool measures
both (one compiled loop instead of two); P_mask + P_basis is a projector only when the two parts are orthogonal,
which :func:`merge` guarantees by zeroing one of them per subspace.
Dimensions are host-side (:func:`dims`); construction is float64 numpy (QR in float64, spec Sec. 6).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .config import require
from .frequency import apply_mask, dct_matrix

__all__ = ["Bank", "basis_bank", "block_starts", "complement_basis", "concat_bases", "dct_basis_images",
           "dct_block_bank", "dims", "merge", "mirror_block", "orthonormalize", "project", "random_subspaces",
           "span_basis", "take"]


class Bank(NamedTuple):
    masks: jax.Array | np.ndarray | None = None  # (subspaces, H, W)
    bases: jax.Array | np.ndarray | None = None  # (subspaces, D, d)


def project(item: Bank, v):
    """P v for ONE subspace ``item`` (a slice of a bank) and one sample ``v (H, W, C)`` (or any shape whose size is
    D for a basis bank)."""
    out = None
    if item.masks is not None:
        out = apply_mask(v, item.masks.astype(v.dtype), "HWC")
    if item.bases is not None:
        b = item.bases.astype(v.dtype)
        pb = (b @ (b.T @ v.reshape(-1))).reshape(v.shape)
        out = pb if out is None else out + pb
    return out


def merge(mask_bank: Bank, basis_bank: Bank, dim: int) -> Bank:
    """One bank of the mask subspaces followed by the basis subspaces (``dim`` = D): each entry has a zero basis
    or a zero mask, so :func:`project` is exactly the projector of that entry."""
    masks, bases = np.asarray(mask_bank.masks), np.asarray(basis_bank.bases)
    n_m, n_b = masks.shape[0], bases.shape[0]
    return Bank(masks=np.concatenate([masks, np.zeros((n_b, *masks.shape[1:]), masks.dtype)]),
                bases=np.concatenate([np.zeros((n_m, dim, bases.shape[2]), bases.dtype), bases]))


def take(bank: Bank, idx) -> Bank:
    """The sub-bank of subspaces ``idx``."""
    return jax.tree.map(lambda a: a[np.asarray(idx)], bank)


def dims(bank: Bank, channels: int = 1) -> np.ndarray:
    """Dimension of every subspace (host side): C * #mask for masks, number of non-zero columns for bases."""
    out = 0
    if bank.masks is not None:
        out = out + channels * np.asarray(bank.masks).reshape(len(bank.masks), -1).astype(bool).sum(1)
    if bank.bases is not None:
        out = out + (np.linalg.norm(np.asarray(bank.bases), axis=1) > 0).sum(1)
    return out


# ----------------------------------------------------------------------------- DCT blocks
def block_starts(side: int, size: int, step: int) -> np.ndarray:
    """Top-left diagonal positions i = 0, step, 2 step, ... <= side - size of K x K blocks (MNIST 28/8/1: 21
    blocks; CIFAR-10 32/8/2: 13 blocks)."""
    require(isinstance(size, int) and 1 <= size <= side, "block size", f"an integer in [1, {side}]", size)
    require(isinstance(step, int) and step >= 1, "block step", "an integer >= 1", step)
    return np.arange(0, side - size + 1, step)


def dct_block_bank(image_shape, size: int, step: int) -> tuple[Bank, np.ndarray]:
    """``(Bank(masks=(blocks, H, W) float32), starts (blocks,))``: K x K blocks with top-left corner (i, i)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    starts = block_starts(min(h, w), size, step)
    i = np.arange(h)[:, None]
    j = np.arange(w)[None, :]
    masks = np.stack([(i >= s) & (i < s + size) & (j >= s) & (j < s + size) for s in starts]).astype(np.float32)
    return Bank(masks=masks), starts


def mirror_block(start, side: int, size: int):
    """The block the frequency flip maps block (start, start) to: N - K - start (20 - i on MNIST with K = 8)."""
    return side - size - start


def dct_basis_images(image_shape) -> np.ndarray:
    """``(H, W, C, D)`` float64: column (k1, k2, c) (flattened in that order) is the inverse DCT of a one-hot
    coefficient at frequency (k1, k2) in channel c, as an (H, W, C) image. Orthonormal (C_H (x) C_W (x) I_C)."""
    h, w, c = (int(s) for s in image_shape)
    ch, cw = dct_matrix(h), dct_matrix(w)
    basis = np.einsum("ha,wb,cd->hwcabd", ch, cw, np.eye(c))  # image (h, w, c) of coefficient (a, b, d)
    return basis.reshape(h, w, c, h * w * c)


# ----------------------------------------------------------------------------- dense bases
def orthonormalize(vectors) -> np.ndarray:
    """``(D, m)`` columns -> an orthonormal basis ``(D, r)`` of their span (float64 QR; rank r by |R_ii|)."""
    v = np.asarray(vectors, np.float64)
    if v.ndim == 1:
        v = v[:, None]
    q, r = np.linalg.qr(v)
    scale = max(np.abs(r).max(), 1e-300)
    keep = np.abs(np.diag(r)) > 1e-10 * scale
    return q[:, keep]


def span_basis(directions) -> np.ndarray:
    """Orthonormal basis ``(D, r)`` of the span of ``directions (m, D)`` (rows)."""
    return orthonormalize(np.asarray(directions, np.float64).T)


def complement_basis(basis) -> np.ndarray:
    """Orthonormal basis ``(D, D - r)`` of the orthogonal complement of the span of ``basis (D, r)``."""
    b = orthonormalize(basis)
    d = b.shape[0]
    u, _, _ = np.linalg.svd(b, full_matrices=True)
    return u[:, b.shape[1]:d]


def random_subspaces(seed: int, n: int, dim: int, within) -> np.ndarray:
    """``(n, D, dim)`` random dim-dimensional subspaces of span(``within (D, m)``, orthonormal columns): B = W Q
    with Q from the QR of an m x dim standard Gaussian (float64; uniform on the Grassmannian of span(W))."""
    w = np.asarray(within, np.float64)
    require(isinstance(dim, int) and 1 <= dim <= w.shape[1], "random subspace dim",
            f"an integer in [1, {w.shape[1]}] (the dimension of the enclosing block)", dim)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        q, r = np.linalg.qr(rng.standard_normal((w.shape[1], dim)))
        q = q * np.sign(np.diag(r))[None, :]
        out.append(w @ q)
    return np.stack(out)


def concat_bases(bases) -> np.ndarray:
    """Stack bases ``[(D, d_i)]`` into ``(subspaces, D, max d_i)``, zero-padding the columns."""
    bases = [np.asarray(b, np.float64) if np.ndim(b) == 2 else np.asarray(b, np.float64)[:, None] for b in bases]
    dmax = max(b.shape[1] for b in bases)
    return np.stack([np.pad(b, ((0, 0), (0, dmax - b.shape[1]))) for b in bases])


def basis_bank(bases, dtype=np.float32) -> Bank:
    """A :class:`Bank` of dense bases (a list of ``(D, d_i)`` or an array ``(subspaces, D, d)``)."""
    arr = concat_bases(bases) if isinstance(bases, (list, tuple)) else np.asarray(bases, np.float64)
    return Bank(bases=arr.astype(dtype))


def as_jax(bank: Bank, dtype=None) -> Bank:
    """The bank's arrays as jax arrays (``dtype``: default float)."""
    dtype = dtype or jnp.result_type(float)
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), bank)
