"""Gaussian-mixture classes: shapes, class-sorted balanced labels, +-1 targets, mean geometry and the empirical
NC1 against the population value; the chained (non-orthogonal) class means against an explicit AR(1) recursion, their
population NC1 / NC2 against numpy computations and large samples, the default draw unchanged bit for bit; bad
settings fail with the parameter named."""
from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import pytest

from fa_jax.data.mixture import GaussianMixture, mean_directions, population_nc1, population_nc2, sample_mixture
from fa_jax.metrics.collapse import nc_metrics


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sample_program(base, names, *values):
    return sample_mixture(dataclasses.replace(base, **dict(zip(names, values, strict=True))))


def sample_traced(cfg, *names):
    """``sample_mixture(cfg)`` jitted with the fields ``names`` traced (a parametrisation over them compiles one
    program, not one per value)."""
    base = dataclasses.replace(cfg, **dict.fromkeys(names, 0.0))
    return _sample_program(base, names, *(getattr(cfg, n) for n in names))


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
    x, labels, _ = sample_traced(cfg, "cov_decay", "mean_spread")
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


def _ref_nc2(means):
    """NC2 of class means ``(K, d)`` (spec 2.5), float64 numpy: centre, normalise, mean squared distance of the Gram
    to the simplex ETF's."""
    k = len(means)
    u = means - means.mean(0)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    etf = np.full((k, k), -1.0 / (k - 1)) + np.eye(k) * (1.0 + 1.0 / (k - 1))
    return float(np.mean((u @ u.T - etf) ** 2))


@pytest.mark.parametrize("rho", [0.3, 0.7, 0.9])
def test_chained_means_follow_the_ar1_recursion(x64, rho):
    q = np.linalg.qr(np.random.default_rng(0).standard_normal((12, 5)))[0].T  # (K, d) orthonormal rows
    u = [q[0]]
    for c in range(1, 5):  # u_c = rho u_{c-1} + sqrt(1 - rho^2) q_c
        u.append(rho * u[-1] + np.sqrt(1 - rho ** 2) * q[c])
    u = np.stack(u)
    np.testing.assert_allclose(np.asarray(mean_directions(q, rho)), u, atol=1e-14)
    lag = np.abs(np.subtract.outer(np.arange(5), np.arange(5)))
    np.testing.assert_allclose(u @ u.T, rho ** lag, atol=1e-14)  # cos(u_c, u_c') = rho^|c - c'|, unit norms
    assert np.array_equal(np.asarray(mean_directions(q, 0.0)), q)  # rho = 0: the rows themselves


@pytest.mark.parametrize("rho,spread", [(0.0, 0.0), (0.0, 0.5), (0.7, 0.0), (0.7, 0.5)])
def test_population_nc1_nc2_of_chained_means(x64, rho, spread):
    """population_nc2 vs numpy NC2 of the means separation * r_c * u_c built here, and both population values vs
    a large, low-noise sample (the empirical class means converge to the population ones)."""
    k, sep = 5, 4.0
    cfg = GaussianMixture(k=k, d=16, n_per_class=4000, separation=sep, within_std=0.5, mean_spread=spread,
                          mean_cosine=rho, seed=2)
    lag = np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
    r = 1 + spread * (2 * np.arange(k) / (k - 1) - 1)
    # means with Gram sep^2 D C D: the Cholesky factor of C times any orthonormal rows
    means = sep * r[:, None] * (np.linalg.cholesky(rho ** lag.astype(float)) @ np.eye(k, 16))
    assert population_nc2(cfg) == pytest.approx(_ref_nc2(means), abs=1e-14)
    tr_sb = np.sum((means - means.mean(0)) ** 2) / k
    assert population_nc1(cfg) == pytest.approx(0.25 * 16 / tr_sb, rel=1e-12)
    if rho == 0.0 and spread == 0.0:
        assert population_nc2(cfg) < 1e-28  # orthonormal equal radii: a simplex ETF
    x, labels, _ = sample_traced(cfg, "mean_cosine", "mean_spread")
    x, labels = np.asarray(x), np.asarray(labels)
    mu = np.stack([x[labels == c].mean(0) for c in range(k)])
    # sampling error of a class mean ~ within_std sqrt(d / n) = 0.03 against means of norm ~4
    assert _ref_nc2(mu) == pytest.approx(population_nc2(cfg), abs=2e-3)
    m = jax.jit(nc_metrics, static_argnums=2)(jax.numpy.asarray(x), jax.numpy.asarray(labels), k)
    assert float(m["nc1"]) == pytest.approx(population_nc1(cfg), rel=0.03)
    assert float(m["nc2"]) == pytest.approx(_ref_nc2(mu), rel=1e-9, abs=1e-15)


def test_default_draw_unchanged_by_mean_cosine(x64):
    """mean_cosine = 0 (the default) gives the orthonormal draw (``mean_directions`` selects the rows, it does not
    multiply them): the sample rebuilt here from the documented key schedule (PRNGKey(seed) split into mean /
    rotation / noise keys, QR of a d x K Gaussian), equal to roundoff of the separately compiled program."""
    from fa_jax.linalg import qr_q

    cfg = GaussianMixture(k=4, d=12, n_per_class=6, separation=3.0, within_std=1.0, mean_spread=0.5, seed=5)
    x, _, _ = jax.jit(sample_mixture, static_argnums=0)(cfg)

    @jax.jit  # the rebuild as one program of its own (eager, each primitive would compile on its own)
    def rebuild():
        k_mu, k_rot, k_xi = jax.random.split(jax.random.PRNGKey(5), 3)
        q = qr_q(jax.random.normal(k_mu, (12, 4)))
        radii = 1.0 + 0.5 * (2.0 * jax.numpy.arange(4.0) / 3 - 1.0)
        mu = 3.0 * radii[:, None] * q.T
        rot = qr_q(jax.random.normal(k_rot, (12, 12)))
        xi = jax.random.normal(k_xi, (24, 12))
        return mu[np.repeat(np.arange(4), 6)] + xi @ rot.T

    ref = rebuild()
    np.testing.assert_allclose(np.asarray(x), np.asarray(ref), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kw,name", [({"k": 1}, "data.k"), ({"d": 2, "k": 3}, "data.d"),
                                     ({"separation": 0.0}, "data.separation"), ({"n_per_class": 1}, "n_per_class"),
                                     ({"mean_cosine": 1.0}, "data.mean_cosine")])
def test_bad_settings(kw, name):
    with pytest.raises(ValueError, match=name):
        GaussianMixture(**kw).validate()
