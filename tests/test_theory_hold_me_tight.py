"""``fa_jax.theory.hold_me_tight``: every function has a provenance of a known kind, and the derived ones agree
with independent float64 numpy computations (exact binomial tails, Monte-Carlo subspace projections, a linear
logistic model trained by GD from zero, subspace DeepFool on a linear classifier)."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from fa_jax.summary import KINDS
from fa_jax.theory import hold_me_tight as T


def test_every_function_has_a_provenance_of_a_known_kind():
    public = {n for n, f in inspect.getmembers(T, inspect.isfunction) if f.__module__ == T.__name__
              and not n.startswith("_")}
    assert public == set(T.PROVENANCE), (public ^ set(T.PROVENANCE))
    for name, prov in T.PROVENANCE.items():
        kind = next((k for k in KINDS if prov == k or prov.startswith(k + " ")), None)
        assert kind is not None, (name, prov)
        if kind == "paper claim":
            assert "unverified" in prov, (name, prov)
        if kind == "derived":
            assert T.__dict__[name].__doc__, f"{name}: a derived function states its equation / domain"


def _binom_tail(n: int, k0: int) -> float:
    return sum(math.comb(n, k) for k in range(k0, n + 1)) / 2.0 ** n


@pytest.mark.parametrize("n", [10, 20, 50, 100, 300])
def test_sign_test_threshold_has_the_stated_false_positive_rate(n):
    """Under the flat-profile null (Binomial(n, 1/2)), P[fraction >= threshold] ~ 1 - Phi(2) = 2.3 % and <= 5 %."""
    thr = T.sign_test_threshold(n)
    assert thr == pytest.approx(0.5 + 2.0 / (2 * math.sqrt(n)))
    p = _binom_tail(n, math.ceil(thr * n - 1e-12))
    assert p <= 0.05 and p == pytest.approx(0.5 * math.erfc(2 / math.sqrt(2)), abs=0.02)
    assert T.sign_test_null() < thr < 1


def test_isotropic_margin_ratio_matches_monte_carlo_projections():
    """D3: the median linear margin |f| / ||P g|| in random d-dim subspaces scales as sqrt(D / d)."""
    rng = np.random.default_rng(0)
    dim, draws = 256, 20000

    def med_margin(d):
        # ||P g|| / ||g|| for a uniformly random d-dim subspace = ||z[:d]|| / ||z||, z ~ N(0, I_D) (rotation
        # invariance: project a random direction onto a fixed subspace instead)
        z = rng.standard_normal((draws, dim))
        return np.median(np.linalg.norm(z, axis=1) / np.linalg.norm(z[:, :d], axis=1))

    m16, m64 = med_margin(16), med_margin(64)
    assert m16 / m64 == pytest.approx(T.isotropic_margin_ratio(16, 64), rel=0.05)
    assert T.isotropic_margin_ratio(8) == pytest.approx(1 / math.sqrt(8))
    assert T.isotropic_margin_ratio(8) < T.orthogonal_over_u_min()  # the P4 null is excluded
    assert med_margin(8) / med_margin(1) < T.orthogonal_over_u_min()  # also the exact median ratio (~0.25)


def test_deepfool_u_margin_on_the_bayes_hyperplane():
    """D1 + D4: one subspace-DeepFool step along u on f(x) = u.x from x = (eps/2) y u + (noise orthogonal to u)
    returns (1 + o) eps/2 (written from spec 2.1's binary closed form r = |f| P grad f / ||P grad f||^2)."""
    rng = np.random.default_rng(1)
    dim, eps, o = 32, 1.0, 0.02
    u = np.zeros(dim)
    u[0] = 1.0
    for y in (-1, 1):
        x = 0.5 * eps * y * u + np.concatenate([[0.0], rng.standard_normal(dim - 1)])
        f, grad = u @ x, u
        pg = u * (u @ grad)  # P = u u^T
        r = abs(f) * pg / (pg @ pg)
        assert np.sign(u @ (x - (1 + o) * np.sign(f) * r)) != np.sign(f)  # the overshot step flips the label
        assert (1 + o) * np.linalg.norm(r) == pytest.approx(T.deepfool_u_margin(eps, o), rel=1e-12)
    assert T.bayes_u_margin(eps) < T.deepfool_u_margin(eps, o) < T.memorisation_u_margin(eps)
    # the D4 tolerance band excludes the memorisation flag (the checks' null)
    assert T.memorisation_u_margin(eps) / T.deepfool_u_margin(eps, o) - 1 > T.u_margin_rel_tol()


def test_tiny_feature_law_holds_exactly_for_a_linear_model_trained_from_zero():
    """Module docstring: with sigma_w = 0 the w-weight moves as (eps2 / eps) times the u-weight (both inputs are
    multiples of y), so a linear logistic model trained by GD (+ weight decay) from zero has
    margin_w = (eps / eps2) margin_u exactly: the law of :func:`tiny_w_margin`."""
    rng = np.random.default_rng(2)
    eps, eps2, sigma, n, dim = 1.0, 0.1, 1.0, 400, 12
    y = rng.choice([-1.0, 1.0], n)
    x = np.zeros((n, dim))
    x[:, 0] = 0.5 * eps * y  # u = e_0
    x[:, 1] = 0.5 * eps2 * y  # w = e_1, noise-free
    x[:, 2:8] = sigma * rng.standard_normal((n, 6))  # N
    theta = np.zeros(dim)
    for _ in range(300):
        z = y * (x @ theta)
        grad = -(x * (y / (1 + np.exp(z)))[:, None]).mean(0)
        theta -= 0.5 * (grad + 5e-4 * theta)
    assert theta[1] / theta[0] == pytest.approx(eps2 / eps, rel=1e-10)
    xt = x[:5]
    f = xt @ theta
    m_u, m_w = np.abs(f) / abs(theta[0]), np.abs(f) / abs(theta[1])
    np.testing.assert_allclose(m_w, T.tiny_w_margin(eps, eps2, m_u), rtol=1e-10)


def test_d5_domain_and_thresholds():
    """eps2 >= kappa eps u0 / w0; the noise condition; the hide ratio is the domain factor."""
    assert T.d5_in_domain(0.2, 1.0, 0.5, 5.0)  # bound 0.2
    assert not T.d5_in_domain(0.19, 1.0, 0.5, 5.0)
    assert T.d5_in_domain(0.05, 1.0, 0.5, 50.0)  # a larger untrained w-margin widens the domain
    assert T.d5_hide_ratio_min() == T.d5_domain_factor() > 1  # null 1 (noise changes nothing) excluded
    assert T.d5_noise_to_feature_min() * 0.2 <= 1.0  # sigma_w = 1 covers eps2 up to 0.2 eps


def test_thresholds_exclude_their_nulls():
    assert T.bayes_accuracy() - T.generalisation_slack() > T.chance_accuracy(2)
    assert T.generalisation_floor() == T.bayes_accuracy() - T.generalisation_slack()
    assert T.PROVENANCE['generalisation_floor'].startswith('paper claim')  # no derivation says SGD gets there
    assert T.collapse_ratio_max() < 1  # null: no change
    assert T.decreasing_spearman_max() < 0  # null: no trend
    assert T.min_trend_points() >= 3
    assert T.mirror_tolerance(True) < T.mirror_tolerance(False) < 1e-3
    assert T.u_margin_unchanged_tol() < T.memorisation_u_margin(1.0) / T.bayes_u_margin(1.0) - 1
    assert T.pinned_u_margin_rel_tol() < T.memorisation_u_margin(1.0) / T.bayes_u_margin(1.0) - 1


def test_tiny_law_exponent_tolerance_covers_the_linear_max_margin_curve():
    """The linear max-margin model on +-(eps/2 u + eps2/2 w) has margin_w = (eps/2)(eps/eps2)(1 + (eps2/eps)^2)
    (float64, from the formula): its log-log slope over the law's window deviates from -1 by less than the
    curvature term of the tolerance, and the tolerance stays below 1 (a null slope 0 fails)."""
    eps = 1.0
    e2 = np.array([0.05, 0.1, 0.2])
    assert e2[-1] <= T.tiny_law_max_eps2()
    m = (eps / 2) * (eps / e2) * (1 + (e2 / eps) ** 2)
    slope = np.polyfit(np.log(e2), np.log(m), 1)[0]
    q = e2[-1] / eps
    assert abs(slope - T.tiny_law_exponent()) <= 2 * q * q / (1 + q * q)
    tol = T.tiny_law_exponent_tol(e2[0], e2[-1], eps)
    assert abs(slope + 1) < tol < 1


def test_weight_decay_factor_matches_the_closed_form_without_momentum():
    """momentum 0, constant-free check: theta_T = prod_t (1 - lr(t) wd) (float64 product from the formula)."""
    steps, peak, wd = 200, 0.21, 5e-4
    tp = 0.4 * steps
    lrs = [peak * (t + 1) / tp if t + 1 <= tp else peak * (steps - t - 1) / (steps - tp) for t in range(steps)]
    assert T.weight_decay_factor(peak, 0.4, steps, wd, 0.0, 1) == pytest.approx(np.prod(1 - np.array(lrs) * wd),
                                                                                rel=1e-12)
    assert T.weight_decay_factor(peak, 0.4, steps, 0.0, 0.9, 1) == 1.0
