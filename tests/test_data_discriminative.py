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
