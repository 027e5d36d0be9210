"""fa_jax.metrics.features: cosine matrices vs numpy, the feature-averaging summary of the idealised net
(spec G2: in-block 1/sqrt|J_s|, class-sum cosine 1, off-block 0), masking of padded neurons, movement."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax.data.clusters import cluster_signs
from fa_jax.data.clusters import make_centres as _make_centres
from fa_jax.metrics import features as F
from fa_jax.theory import feature_averaging as th

# jitted: one program per function and shape (eager, every primitive would compile its own tiny XLA program)
make_centres = jax.jit(_make_centres, static_argnums=(1, 2, 3))
binary_feature_summary = jax.jit(F.binary_feature_summary)
block_summary = jax.jit(F.block_summary)
cosine_matrix = jax.jit(F.cosine_matrix)
diagonal_summary = jax.jit(F.diagonal_summary)
relative_movement = jax.jit(F.relative_movement)


def np_cos(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return (a @ b.T) / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))


def test_cosine_matrix_vs_numpy(x64):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)), rng.standard_normal((3, 7)) * 1e-3
    np.testing.assert_allclose(np.asarray(cosine_matrix(jnp.asarray(a), jnp.asarray(b))), np_cos(a, b), rtol=1e-12)


def test_cosine_matrix_float32_and_zero_rows():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 6))
    a[2] = 0.0
    b = rng.standard_normal((3, 6))
    c = np.asarray(cosine_matrix(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
    assert np.all(np.isfinite(c))
    np.testing.assert_array_equal(c[2], 0.0)
    keep = [0, 1, 3]
    np.testing.assert_allclose(c[keep], np_cos(a[keep], b), rtol=1e-5, atol=1e-6)


def test_cosine_scale_invariant_by_hand():
    a = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    b = jnp.array([[0.0, 5.0], [-3.0, 0.0]])
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(np.asarray(cosine_matrix(a, b)), [[0.0, -1.0], [s, -s]], rtol=1e-6, atol=1e-7)


def _ideal_fa(d, k, n_pos, m, c=0.01, extra_pad=0, seed=0):
    """Idealised FA net: w_{+,r} = c sum_{J+} mu, w_{-,r} = c sum_{J-} mu (m per side), padded rows random."""
    mu = np.asarray(make_centres(jax.random.PRNGKey(seed), d, k, jnp.float64))
    signs = np.asarray(jax.jit(cluster_signs, static_argnums=0)(k, n_pos))
    # the net is built in float64 numpy from the centres
    s_plus = c * np.sum(mu * (signs > 0)[:, None], 0)
    s_minus = c * np.sum(mu * (signs < 0)[:, None], 0)
    rng = np.random.default_rng(seed + 1)
    pad = rng.standard_normal((extra_pad, d))
    rows = [s_plus] * m + [pad] + [s_minus] * m + [pad]
    W = np.concatenate([r[None] if r.ndim == 1 else r for r in rows], 0)
    side = np.concatenate([np.ones(m + extra_pad), -np.ones(m + extra_pad)])
    mask = np.concatenate([np.ones(m), np.zeros(extra_pad), np.ones(m), np.zeros(extra_pad)])
    return mu, W, signs, side, mask


@pytest.mark.parametrize("k,n_pos,m", [(10, 5, 5), (7, 2, 3), (4, 1, 1)])
def test_binary_summary_ideal_fa(x64, k, n_pos, m):
    d = 128
    mu, W, signs, side, mask = _ideal_fa(d, k, n_pos, m)
    out = binary_feature_summary(mu, W, signs, side, mask)
    n_neg = k - n_pos
    cos = np.asarray(out["cos"])
    assert cos.shape == (k, 2 * m)
    # G2: cos(w_s, mu_j) = 1/sqrt|J_s| in block, 0 off block
    expect = np.zeros((k, 2 * m))
    expect[:n_pos, :m] = 1 / np.sqrt(n_pos)
    expect[n_pos:, m:] = 1 / np.sqrt(n_neg)
    np.testing.assert_allclose(cos, expect, atol=1e-12)
    np.testing.assert_allclose(expect[expect > 0], np.concatenate([
        np.full(n_pos * m, th.inblock_cosine(n_pos)), np.full(n_neg * m, th.inblock_cosine(n_neg))]))
    in_mean = (n_pos / np.sqrt(n_pos) + n_neg / np.sqrt(n_neg)) / k  # mean over the k*m in-block entries
    np.testing.assert_allclose(float(out["in_mean"]), in_mean, rtol=1e-12)
    np.testing.assert_allclose(float(out["in_min"]), 1 / np.sqrt(max(n_pos, n_neg)), rtol=1e-12)
    np.testing.assert_allclose(float(out["in_max"]), 1 / np.sqrt(min(n_pos, n_neg)), rtol=1e-12)
    assert abs(float(out["off_mean"])) < 1e-12 and float(out["off_absmax"]) < 1e-12
    assert abs(float(out["off_max"])) < 1e-12
    np.testing.assert_allclose(float(out["class_sum_cos"]), 1.0, rtol=1e-12)  # G2: cos(w, sum_{J_s} mu) = 1
    np.testing.assert_allclose(float(out["group_min_pair_cos"]), 1.0, rtol=1e-12)


def test_binary_summary_spec_value_5_5(x64):
    """Spec G2: 0.447 for the 5/5 split."""
    mu, W, signs, side, mask = _ideal_fa(128, 10, 5, 2)  # d = 128 as above (its centres' program; G2 is d-free)
    out = binary_feature_summary(mu, W, signs, side, mask)
    assert round(float(out["in_mean"]), 3) == 0.447


def test_binary_summary_ignores_masked_neurons(x64):
    d, k, n_pos, m = 96, 6, 3, 2
    plain = binary_feature_summary(*_ideal_fa(d, k, n_pos, m))
    mu, W, signs, side, mask = _ideal_fa(d, k, n_pos, m, extra_pad=3)
    padded = binary_feature_summary(mu, W, signs, side, mask)
    for key in plain:
        if key == "cos":
            real = np.asarray(mask) > 0
            np.testing.assert_allclose(np.asarray(padded["cos"])[:, real], np.asarray(plain["cos"]), atol=1e-12)
        else:
            np.testing.assert_allclose(float(padded[key]), float(plain[key]), rtol=1e-12, atol=1e-12, err_msg=key)
    # the padding is random: counting it would change the summary (so the comparison above can fail)
    unmasked = binary_feature_summary(mu, W, signs, side, np.ones_like(mask))
    assert float(unmasked["off_absmax"]) > 0.05 and float(unmasked["group_min_pair_cos"]) < 0.5


def test_binary_summary_random_vs_numpy(x64):
    """Generic weights: every summary against a direct numpy computation."""
    rng = np.random.default_rng(3)
    k, d, m = 5, 20, 3
    mu = rng.standard_normal((k, d))
    W = rng.standard_normal((2 * m, d))
    signs = np.array([1, 1, -1, -1, -1.0])
    side = np.array([1, 1, 1, -1, -1, -1.0])
    mask = np.array([1, 1, 0, 1, 1, 1.0])
    out = binary_feature_summary(mu, W, signs, side, mask)
    cos = np_cos(mu, W)
    real = mask > 0
    block = signs[:, None] == side[None, :]
    inb = cos[:, real][block[:, real]]
    off = cos[:, real][~block[:, real]]
    np.testing.assert_allclose(float(out["in_mean"]), inb.mean(), rtol=1e-12)
    np.testing.assert_allclose(float(out["in_min"]), inb.min(), rtol=1e-12)
    np.testing.assert_allclose(float(out["in_max"]), inb.max(), rtol=1e-12)
    np.testing.assert_allclose(float(out["off_mean"]), off.mean(), rtol=1e-12)
    np.testing.assert_allclose(float(out["off_max"]), off.max(), rtol=1e-12)
    np.testing.assert_allclose(float(out["off_absmax"]), np.abs(off).max(), rtol=1e-12)
    cs = np.stack([mu[signs > 0].sum(0), mu[signs < 0].sum(0)])
    own = np.array([np_cos(W[i:i + 1], cs[0 if side[i] > 0 else 1:][:1])[0, 0] for i in range(2 * m)])
    np.testing.assert_allclose(float(out["class_sum_cos"]), own[real].mean(), rtol=1e-12)
    pair = np_cos(W, W)
    same = (side[:, None] == side[None, :]) & real[:, None] & real[None, :]
    np.testing.assert_allclose(float(out["group_min_pair_cos"]), pair[same].min(), rtol=1e-12)


def test_block_and_diagonal_summary_by_hand():
    cos = jnp.array([[0.9, 0.1], [-0.2, 0.8]])
    eye = jnp.eye(2)
    out = block_summary(cos, eye, jnp.ones(2))
    np.testing.assert_allclose([float(out[k]) for k in ("in_mean", "in_min", "in_max")], [0.85, 0.8, 0.9], rtol=1e-6)
    np.testing.assert_allclose([float(out[k]) for k in ("off_mean", "off_max", "off_absmax")], [-0.05, 0.1, 0.2],
                               rtol=1e-6)
    d = diagonal_summary(cos)
    assert float(d["in_mean"]) == pytest.approx(0.85) and float(d["off_absmax"]) == pytest.approx(0.2)
    # masking column 1 leaves only column 0: in-block {0.9}, off-block {-0.2}
    out = block_summary(cos, eye, jnp.array([1.0, 0.0]))
    assert float(out["in_mean"]) == pytest.approx(0.9) and float(out["off_mean"]) == pytest.approx(-0.2)


def test_relative_movement_vs_numpy():
    rng = np.random.default_rng(4)
    w0, w1 = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    mask = np.array([1, 1, 0, 1, 0, 1.0])
    real = mask > 0
    expect = np.linalg.norm(w1[real] - w0[real]) / np.linalg.norm(w0[real])
    w0, w1, mask = (np.asarray(a, np.float32) for a in (w0, w1, mask))  # the float32 program, as before
    got = float(relative_movement(w1, w0, mask))
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    assert float(relative_movement(w0, w0, mask)) == 0.0
