"""fa_jax.data.natural: spectrum, exact zeros, the paper's 3-D problem, population gradient, validation."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax.config import traced_values, with_values
from fa_jax.data import natural as nat
from fa_jax.data.natural import NaturalSignal
from fa_jax.frequency import dct_matrix


def test_paper_3d_is_the_special_case(x64):
    cfg = NaturalSignal.paper_3d().validate()
    np.testing.assert_array_equal(np.asarray(nat.spectrum(cfg)), nat.PAPER_SIGMA_TILDE)  # exactly
    np.testing.assert_array_equal(np.asarray(nat.target_tilde(cfg)), nat.PAPER_W_STAR_TILDE)
    c = dct_matrix(3)
    np.testing.assert_allclose(np.asarray(nat.target(cfg)), c @ np.array([5.0, 10.0, 0.0]), atol=1e-14)
    np.testing.assert_allclose(np.asarray(nat.paper_w0()), c @ np.array([0.01, -0.01, 0.02]), atol=1e-16)
    assert nat.PAPER_EPS_ADV == math.sqrt(2) and nat.PAPER_LR == 0.01 and nat.PAPER_BATCH == 5000
    # the spec's defining relation for the 3-D problem: y = <wt*, C.T x>, x = C xt
    x, y = nat.sample(jax.random.PRNGKey(0), cfg, 5000)
    x = np.asarray(x)
    np.testing.assert_allclose(np.asarray(y), (x @ c) @ np.array([5.0, 10.0, 0.0]), atol=1e-12)


def test_config_spectrum_and_target_forms(x64):
    cfg = NaturalSignal(d=10, alpha=0.5, sigma0=0.3, frac_irrelevant=0.3, w_scale=2.0).validate()
    k = np.arange(10)
    rel = k < 7
    np.testing.assert_array_equal(np.asarray(nat.relevant_mask(cfg)), rel)
    np.testing.assert_allclose(np.asarray(nat.spectrum(cfg)), np.where(rel, 0.3 * (k + 1) ** -0.5, 0), rtol=1e-15)
    np.testing.assert_allclose(np.asarray(nat.target_tilde(cfg)), np.where(rel, 2.0 * (k + 1) ** 0.5, 0), rtol=1e-15)
    flat = with_values(cfg, {"target": "flat"})
    np.testing.assert_array_equal(np.asarray(nat.target_tilde(flat)), np.where(rel, 2.0, 0.0))
    # "equal_power": every relevant frequency carries the same label variance (sigma0 w_scale)^2
    p = np.asarray(nat.spectrum(cfg) * nat.target_tilde(cfg))
    np.testing.assert_allclose(p[rel], 0.6, rtol=1e-14)
    assert set(traced_values(cfg)) == {"alpha", "sigma0", "frac_irrelevant", "w_scale"}


def test_empirical_spectrum_and_exact_zeros(x64):
    cfg = NaturalSignal(d=16, alpha=1.0, sigma0=1.0, frac_irrelevant=0.25).validate()
    n = 20_000
    key = jax.random.PRNGKey(3)
    xt, yt = (np.asarray(a) for a in nat.sample_tilde(key, cfg, n))
    x, y = (np.asarray(a) for a in nat.sample(key, cfg, n))
    assert x.shape == (n, 16) and y.shape == (n,) and x.dtype == np.float64
    np.testing.assert_array_equal(y, yt)  # same key -> same batch in both bases
    np.testing.assert_allclose(x, xt @ dct_matrix(16).T, atol=1e-13)
    assert np.all(xt[:, 12:] == 0.0)  # irrelevant frequencies are exactly zero
    back = x @ dct_matrix(16)  # C.T x, float64 round-off only
    assert np.abs(back[:, 12:]).max() < 1e-14 * np.abs(x).max()
    var = back[:, :12].var(axis=0)
    want = (1.0 / np.arange(1, 13)) ** 2
    # sample variance of n Gaussians: relative sd sqrt(2/n) = 1%; allow 5 sd
    np.testing.assert_allclose(var, want, rtol=5 * math.sqrt(2 / n))
    # distinct frequencies are uncorrelated (|corr| sd 1/sqrt(n) = 0.007)
    corr = np.corrcoef(back[:, :12].T)
    assert np.abs(corr - np.eye(12)).max() < 0.04


def test_fresh_batches_float32_and_traced_fraction():
    cfg = NaturalSignal(d=32, frac_irrelevant=0.5).validate()
    k = jax.random.PRNGKey(0)
    a, b = nat.sample(jax.random.fold_in(k, 0), cfg, 16), nat.sample(jax.random.fold_in(k, 1), cfg, 16)
    assert a[0].dtype == jnp.float32 and a[0].shape == (16, 32) and bool(jnp.all(jnp.isfinite(a[1])))
    assert not np.allclose(np.asarray(a[0]), np.asarray(b[0]))  # a fresh batch per step key
    np.testing.assert_array_equal(np.asarray(nat.sample(jax.random.fold_in(k, 0), cfg, 16)[0]), np.asarray(a[0]))
    # the fraction is traced: one vmapped program over fractions, n_irr = round(p d)
    cfg8 = NaturalSignal(d=8)
    fracs = jnp.array([0.0, 0.125, 0.3, 0.5, 0.875])

    def count_zero(p):
        return jnp.sum(nat.spectrum(with_values(cfg8, {"frac_irrelevant": p})) == 0)

    np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(count_zero))(fracs)), [0, 1, 2, 4, 7])


def test_population_gradient_and_risk(x64):
    """Exact gradient C diag(st^2)(C.T w - wt*) vs the sampled-batch mean gradient; GD keeps irrelevant weights."""
    cfg = NaturalSignal.paper_3d()
    c = dct_matrix(3)
    w = c @ np.array([0.01, -0.01, 0.02])
    s2 = np.array([0.01, 0.0025, 0.0])
    g_ref = c @ (s2 * (c.T @ w - np.array([5.0, 10.0, 0.0])))
    np.testing.assert_allclose(np.asarray(nat.population_gradient(w, cfg)), g_ref, rtol=1e-13, atol=1e-17)
    r_ref = 0.5 * np.sum(s2 * (c.T @ w - np.array([5.0, 10.0, 0.0])) ** 2)
    assert float(nat.population_std_risk(w, cfg)) == pytest.approx(r_ref, rel=1e-14)
    x, y = (np.asarray(a) for a in nat.sample(jax.random.PRNGKey(1), cfg, 5000))
    g = x.T @ (x @ w - y) / len(y)  # grad of 1/2 mean (<w, x> - y)^2
    np.testing.assert_allclose(g, g_ref, rtol=0.1)
    w1 = w - 0.01 * g  # one sampled GD step: the irrelevant coordinate does not move (float64 round-off only)
    assert abs((c.T @ w1)[2] - 0.02) < 1e-15


@pytest.mark.parametrize("field,value,match", [
    ("frac_irrelevant", -0.1, "frac_irrelevant"),
    ("frac_irrelevant", 1.0, "frac_irrelevant"),
    ("frac_irrelevant", 0.99, "relevant frequency"),  # round(0.99 * 8) = 8: nothing relevant left
    ("d", 0, "data.d"),
    ("sigma0", 0.0, "sigma0"),
    ("alpha", float("nan"), "alpha"),
    ("alpha", -1.0, "alpha"),
    ("target", "random", "target"),
])
def test_validation_errors(field, value, match):
    with pytest.raises(ValueError, match=match):
        with_values(NaturalSignal(d=8), {field: value}).validate()


# ----------------------------------------------------------------------------- image-like K-class data
def test_image_spectrum_mask_and_power_law(x64):
    from fa_jax.frequency import radius_grid

    cfg = nat.ImageSignal(size=6, n_classes=3, alpha=0.7, sigma0=2.0, frac_irrelevant=0.4).validate()
    st = np.asarray(nat.image_spectrum(cfg))
    r = radius_grid(6)
    rel = np.asarray(nat.image_relevant_mask(cfg))
    n_irr = round(0.4 * 36)
    assert (~rel).sum() == n_irr
    # the irrelevant coefficients are the largest radii: every one lies at least as far out as every relevant one
    assert r[~rel].min() >= r[rel].max()
    np.testing.assert_allclose(st[rel], 2.0 * (1 + r[rel]) ** -0.7, rtol=1e-14)
    assert np.all(st[~rel] == 0.0)


def test_image_samples_have_the_stated_dct_statistics(x64):
    from fa_jax.frequency import dct_matrix

    cfg = nat.ImageSignal(size=8, n_classes=3, alpha=1.0, sigma0=1.0, frac_irrelevant=0.5, separation=3.0).validate()
    km, kx = jax.random.split(jax.random.PRNGKey(4))
    n = 15_000

    @jax.jit
    def draw(km, kx):
        means = nat.image_class_means_tilde(km, cfg)
        return means, *nat.sample_images(kx, cfg, n, means)

    means, x, lab = (np.asarray(a) for a in draw(km, kx))
    assert x.shape == (n, 8, 8, 1) and x.dtype == np.float64
    np.testing.assert_array_equal(lab, np.arange(n) % 3)
    c = dct_matrix(8)
    xt = np.einsum("ik,nij,jl->nkl", c, x[..., 0], c)  # independent numpy DCT: C.T X C
    st = np.asarray(nat.image_spectrum(cfg))
    rel = st > 0
    assert np.abs(xt[:, ~rel]).max() < 1e-13  # zero-variance frequencies: float64 round-off only
    assert np.abs(means[:, ~rel]).max() == 0.0
    for k in range(3):
        xk = xt[lab == k]
        np.testing.assert_allclose(xk.mean(0)[rel], means[k][rel], atol=5 * st.max() / np.sqrt(len(xk)))
        var = xk.var(0)[rel]
        np.testing.assert_allclose(var, st[rel] ** 2, rtol=5 * np.sqrt(2 / len(xk)))
    # class means: separation * st * z / sqrt(n_rel) -> whitened squared distance ~ 2 separation^2 on average
    wd = [np.sum(((means[a] - means[b])[rel] / st[rel]) ** 2) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert 0.3 * 18 < np.mean(wd) < 3 * 18


def test_image_one_draw_equals_the_keyed_draws_and_traced_fraction():
    cfg = nat.ImageSignal(size=4, n_classes=2).validate()
    @jax.jit
    def both(k):
        means = nat.image_class_means_tilde(k, cfg)
        return nat.sample_images(k, cfg, 5, means), nat.sample_images(None, cfg, 5, means,
                                                                        z=jax.random.normal(k, (5, 4, 4)))

    a, b = both(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert a[0].dtype == jnp.float32

    def count(p):
        return jnp.sum(~nat.image_relevant_mask(with_values(cfg, {"frac_irrelevant": p})))

    np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(count))(jnp.array([0.0, 0.25, 0.5]))), [0, 4, 8])


@pytest.mark.parametrize("field,value,match", [
    ("size", 1, "data.size"), ("n_classes", 1, "n_classes"), ("frac_irrelevant", 1.0, "frac_irrelevant"),
    ("sigma0", 0.0, "sigma0"), ("separation", -1.0, "separation"), ("alpha", float("inf"), "alpha"),
])
def test_image_validation_errors(field, value, match):
    with pytest.raises(ValueError, match=match):
        with_values(nat.ImageSignal(size=4), {field: value}).validate()
