"""The synthetic discriminative generator (spec hold_me_tight.md 2.4, D4/D5)."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from fa_jax.data.discriminative import Discriminative, directions, sample


@pytest.mark.parametrize("basis", ["dct", "pixel"])
def test_blocks_orthonormal_and_sample_structure(basis, x64):
    cfg = Discriminative(side=6, channels=1, s=2, n_noise=20, basis=basis, n_train=4000, eps=1.0, sigma=0.7,
                         eps2=0.2, sigma_w=0.0).validate()
    dr = directions(cfg)
    allb = np.concatenate([dr["S"], dr["N"], dr["E"]], 1)
    assert allb.shape == (36, 36)
    np.testing.assert_allclose(allb.T @ allb, np.eye(36), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(dr["u"]), 1.0)
    x, y = jax.jit(lambda k: sample(k, cfg, 4000))(jax.random.PRNGKey(0))  # one program, not op-by-op
    x = np.asarray(x).reshape(4000, -1)
    y = np.asarray(y)
    assert x.shape == (4000, 36) and y.sum() == 2000
    sy = 2 * y - 1
    np.testing.assert_allclose(x @ dr["u"], 0.5 * sy, atol=1e-12)  # exactly +-eps/2 along u (Bayes margin eps/2)
    np.testing.assert_allclose(x @ dr["w"], 0.1 * sy, atol=1e-12)  # the noise-free tiny feature eps2/2
    np.testing.assert_allclose(x @ dr["E_rest"], 0.0, atol=1e-12)  # the rest of E is empty
    var = (x @ dr["N"]).var(0)
    assert np.all(np.abs(var / 0.49 - 1) < 0.15)  # sigma^2 per noisy direction (4000 samples)
    if basis == "dct":  # S at the lowest frequency (DC), w at the highest one
        assert np.allclose(dr["S"][:, 0], 1 / 6)
        c5 = np.sqrt(2 / 6) * np.cos(np.pi * (2 * np.arange(6) + 1) * 5 / 12)  # 1-D DCT basis vector k = 5
        np.testing.assert_allclose(dr["w"], np.outer(c5, c5).reshape(-1), atol=1e-12)


def test_noise_along_w_and_validation(x64):
    cfg = Discriminative(side=4, n_noise=6, n_train=10, eps2=0.0, sigma_w=2.0)
    x, _ = jax.jit(lambda k: sample(k, cfg, 3000))(jax.random.PRNGKey(1))
    assert np.std(np.asarray(x).reshape(3000, -1) @ directions(cfg)["w"]) == pytest.approx(2.0, rel=0.1)
    for bad in ({"n_noise": 15}, {"sigma": -1.0}, {"basis": "random"}, {"n_train": 1}):
        with pytest.raises(ValueError, match="invalid data"):
            dataclasses.replace(cfg, **bad).validate()


def test_nads_generator_statistics_float64(x64):
    """kind="nads" with sigma_w = sigma, eps2 = 0 is the NADs generator x = +-(eps/2) v + (I - v v^T) n,
    n ~ N(0, sigma^2 I): per class the mean is +-(eps/2) v and the covariance sigma^2 (I - v v^T) (a float64
    reference built from v alone), zero variance along v."""
    cfg = Discriminative(side=4, kind="nads", n_train=10, eps=1.0, sigma=3.0, sigma_w=3.0).validate()
    assert cfg.n_noise == 14  # N = everything but u and w
    dr = directions(cfg)
    assert dr["E_rest"].shape == (16, 0) and dr["N"].shape == (16, 14)
    n = 40_000
    x, y = jax.jit(lambda k: sample(k, cfg, n))(jax.random.PRNGKey(3))
    x, y = np.asarray(x, np.float64).reshape(n, -1), np.asarray(y)
    v = np.full(16, 0.25)  # the DC basis image of a 4 x 4 DCT, unit norm
    np.testing.assert_allclose(dr["u"], v, atol=1e-12)
    sy = 2 * y - 1
    np.testing.assert_allclose(x @ v, 0.5 * sy, atol=1e-12)  # exactly +-eps/2 along v
    ref = 9.0 * (np.eye(16) - np.outer(v, v))
    for c in (0, 1):
        xc = x[y == c]
        np.testing.assert_allclose(xc.mean(0), (0.5 * (2 * c - 1)) * v, atol=6 * 3 / np.sqrt(xc.shape[0]))
        cov = np.cov(xc.T)
        # entry-wise sd of a sample covariance ~ sigma^2 sqrt(2 / n_c) on the diagonal
        np.testing.assert_allclose(cov, ref, atol=6 * 9 * np.sqrt(2 / xc.shape[0]))
    # sigma_w = 0 empties w (the tiny-feature direction inside the NADs data), eps2 puts the feature there
    cfg0 = dataclasses.replace(cfg, sigma_w=0.0, eps2=0.2)
    x0, y0 = jax.jit(lambda k: sample(k, cfg0, 1000))(jax.random.PRNGKey(4))
    np.testing.assert_allclose(np.asarray(x0).reshape(1000, -1) @ dr["w"], 0.1 * (2 * np.asarray(y0) - 1),
                               atol=1e-12)
    with pytest.raises(ValueError, match="invalid data.kind"):
        dataclasses.replace(cfg, kind="gauss").validate()
