"""Gaussian-mixture classes: shapes, class-sorted balanced labels, +-1 targets, mean geometry and the empirical
NC1 against the population value; bad settings fail with the parameter named."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from fa_jax.data.mixture import GaussianMixture, population_nc1, sample_mixture
from fa_jax.metrics.collapse import nc_metrics


def test_shapes_labels_targets(x64):
    cfg = GaussianMixture(k=3, d=8, n_per_class=5).validate()
    x, labels, y = sample_mixture(cfg)
    assert x.shape == (15, 8) and y.shape == (15, 3)
    np.testing.assert_array_equal(np.asarray(labels), np.repeat(np.arange(3), 5))
    y = np.asarray(y)
    assert set(np.unique(y)) == {-1.0, 1.0} and np.all(y.argmax(1) == np.asarray(labels))
    assert np.all(y.sum(1) == 2 - 3)


@pytest.mark.parametrize("decay,spread", [(0.0, 0.0), (1.5, 0.5)])
def test_population_nc1_and_separation(x64, decay, spread):
    cfg = GaussianMixture(k=4, d=10, n_per_class=3000, separation=5.0, within_std=0.7, cov_decay=decay, seed=3,
                          mean_spread=spread)
    x, labels, _ = jax.jit(sample_mixture, static_argnums=0)(cfg)
    m = jax.jit(nc_metrics, static_argnums=2)(x, labels, 4)
    np.testing.assert_allclose(float(m["nc1"]), population_nc1(cfg), rtol=0.05)
    x, labels = np.asarray(x), np.asarray(labels)
    mu = np.stack([x[labels == c].mean(0) for c in range(4)])
    r = 1 + spread * np.array([-1, -1 / 3, 1 / 3, 1])  # radii 1 -+ spread, linear in the class index
    np.testing.assert_allclose(np.linalg.norm(mu[0] - mu[1]), 5.0 * np.hypot(r[0], r[1]), rtol=0.05)
    nc2 = float(m["nc2"])
    assert (nc2 < 1e-2) if spread == 0 else (nc2 > 1e-2)  # ETF means only without spread
    if decay > 0:  # anisotropic within-class covariance: the top eigenvalue well above the mean
        resid = x - mu[labels]
        ev = np.linalg.eigvalsh(resid.T @ resid / len(x))
        assert ev[-1] > 3 * ev.mean()


@pytest.mark.parametrize("kw,name", [({"k": 1}, "data.k"), ({"d": 2, "k": 3}, "data.d"),
                                     ({"separation": 0.0}, "data.separation"), ({"n_per_class": 1}, "n_per_class")])
def test_bad_settings(kw, name):
    with pytest.raises(ValueError, match=name):
        GaussianMixture(**kw).validate()
