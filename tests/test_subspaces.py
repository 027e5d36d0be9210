"""Subspace banks (spec hold_me_tight.md 2.2-2.3): DCT block banks are orthonormal coordinate subspaces with the
spec's counts and coverage; the frequency flip is orthogonal, an involution, and maps block i to its mirror."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax import subspaces as S
from fa_jax.frequency import flip_frequency


@pytest.mark.parametrize("side, size, step, n", [(28, 8, 1, 21), (32, 8, 2, 13), (224, 16, 16, 14)])
def test_block_counts(side, size, step, n):
    starts = S.block_starts(side, size, step)
    assert len(starts) == n and starts[-1] + size <= side


def test_dct_basis_images_match_scipy():
    fft = pytest.importorskip("scipy.fft")
    b = S.dct_basis_images((5, 4, 2))
    d = 40
    flat = b.reshape(d, d)
    np.testing.assert_allclose(flat.T @ flat, np.eye(d), atol=1e-12)
    for col in (0, 7, 23, 39):
        a, rest = divmod(col, 4 * 2)
        bb, c = divmod(rest, 2)
        coef = np.zeros((5, 4))
        coef[a, bb] = 1.0
        ref = np.zeros((5, 4, 2))
        ref[:, :, c] = fft.idctn(coef, type=2, norm="ortho")
        np.testing.assert_allclose(b[..., col], ref, atol=1e-12)


def test_block_bank_orthonormal_projectors_and_coverage(x64):
    shape = (12, 12, 3)
    d = 12 * 12 * 3
    bank, starts = S.dct_block_bank(shape[:2], 4, 2)
    assert list(S.dims(bank, channels=3)) == [48] * len(starts)
    basis = S.dct_basis_images(shape).reshape(d, 12, 12, 3)
    rng = np.random.default_rng(0)
    v = rng.standard_normal(shape)
    for i, s in enumerate(starts):
        cols = basis[:, s:s + 4, s:s + 4, :].reshape(d, -1)  # the same block in every channel
        np.testing.assert_allclose(cols.T @ cols, np.eye(48), atol=1e-12)  # orthonormal
        item = S.Bank(masks=jnp.asarray(bank.masks[i]))
        pv = np.asarray(S.project(item, jnp.asarray(v)))
        np.testing.assert_allclose(pv.reshape(-1), cols @ (cols.T @ v.reshape(-1)), atol=1e-12)  # P = B B^T
        np.testing.assert_allclose(np.asarray(S.project(item, jnp.asarray(pv))), pv, atol=1e-12)  # idempotent
    # coverage: every diagonal coefficient (k, k) lies in some block; the union is a band around the diagonal
    union = bank.masks.max(0)
    assert np.all(np.diag(union) == 1)
    k = np.arange(12)
    assert np.all(union[np.abs(k[:, None] - k[None, :]) >= 4] == 0)


def test_flip_is_orthogonal_involution_and_mirrors_blocks(x64):
    shape = (8, 8, 1)
    d = 64
    eye = jnp.eye(d).reshape(d, *shape)
    q = np.asarray(flip_frequency(eye, layout="HWC")).reshape(d, d).T  # column j = flip(e_j)
    np.testing.assert_allclose(q.T @ q, np.eye(d), atol=1e-12)
    np.testing.assert_allclose(q @ q, np.eye(d), atol=1e-12)
    _, starts = S.dct_block_bank(shape[:2], 3, 1)
    basis = S.dct_basis_images(shape).reshape(d, 8, 8)
    for s in starts:
        m = S.mirror_block(s, 8, 3)
        b_s = basis[:, s:s + 3, s:s + 3].reshape(d, -1)
        b_m = basis[:, m:m + 3, m:m + 3].reshape(d, -1)
        np.testing.assert_allclose(q @ b_s @ b_s.T @ q.T, b_m @ b_m.T, atol=1e-12)


def test_random_span_and_complement():
    rng = np.random.default_rng(0)
    within = S.orthonormalize(rng.standard_normal((20, 7)))
    sub = S.random_subspaces(5, 3, 4, within)
    assert sub.shape == (3, 20, 4)
    for b in sub:
        np.testing.assert_allclose(b.T @ b, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(within @ (within.T @ b), b, atol=1e-12)  # inside span(within)
    dirs = rng.standard_normal((3, 20))
    span = S.span_basis(np.concatenate([dirs, dirs[:1] * 2]))  # rank 3 despite 4 rows
    comp = S.complement_basis(span)
    assert span.shape == (20, 3) and comp.shape == (20, 17)
    np.testing.assert_allclose(span.T @ comp, 0, atol=1e-12)
    full = np.concatenate([span, comp], 1)
    np.testing.assert_allclose(full.T @ full, np.eye(20), atol=1e-12)
    bank = S.basis_bank([span, comp[:, :2], span[:, 0]])
    assert bank.bases.shape == (3, 20, 3) and list(S.dims(bank)) == [3, 2, 1]
    with pytest.raises(ValueError, match="random subspace dim"):
        S.random_subspaces(0, 1, 8, within)


def test_merged_bank_projects_each_entry_exactly(x64):
    shape = (6, 6, 1)
    masks, _ = S.dct_block_bank(shape[:2], 2, 2)
    dense = S.basis_bank([S.random_subspaces(0, 1, 3, np.eye(36))[0], np.eye(36)[:, :1]], np.float64)
    merged = S.merge(masks, dense, 36)
    assert merged.masks.shape[0] == merged.bases.shape[0] == 5
    v = jnp.asarray(np.random.default_rng(1).standard_normal(shape))
    for i in range(5):
        got = S.project(S.take(merged, i), v)
        ref = S.project(S.take(masks, i), v) if i < 3 else S.project(S.take(dense, i - 3), v)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-12)
    assert list(S.dims(merged)) == [4, 4, 4, 3, 1]
