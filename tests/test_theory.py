"""fa_jax.theory.feature_averaging vs the spec's stated numbers (Sec. 3) and independent computations."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from fa_jax.theory import feature_averaging as th


def test_spec_numbers():
    assert round(float(th.fa_radius(3072, 10)), 2) == 17.53  # G1
    assert round(float(th.fd_radius(3072)), 2) == 39.19  # G3
    assert round(float(th.ratio(10)), 3) == 2.236  # G5 ("2.24 at k = 10")
    assert round(float(th.inblock_cosine(5)), 3) == 0.447  # G2 (5/5 split)
    assert float(th.gradient_cosine(5, 10)) == pytest.approx(1 / math.sqrt(2), rel=1e-12)  # balanced: 1/sqrt2
    np.testing.assert_allclose(th.fd_r50_window(3072), (0.9 * 39.1918, 39.1918), rtol=1e-5)  # P7
    assert float(th.fa_k_slope()) == -0.5 and float(th.fd_k_slope()) == 0.0  # P9
    assert float(th.more_robust_gap(500, 4)) == pytest.approx(1 / 2000)


def test_radius_identities():
    d = np.array([256.0, 3072.0, 16384.0])
    for k in (2, 4, 10, 64):
        np.testing.assert_allclose(th.fd_radius(d) / th.fa_radius(d, k), th.ratio(k), rtol=1e-14)
        # G6 interpolates between pure FA (g = 2) and pure FD (g = k)
        np.testing.assert_allclose(th.granularity_radius(2, d, k), th.fa_radius(d, k), rtol=1e-14)
        np.testing.assert_allclose(th.granularity_radius(k, d, k), th.fd_radius(d), rtol=1e-14)
    # S1: the FA boundary k* = d/eps^2 is where sqrt(d/k) = eps
    np.testing.assert_allclose(th.fa_boundary_k(3072, th.fa_radius(3072, 12)), 12.0, rtol=1e-14)
    np.testing.assert_allclose(th.granularity_radius(3, 3072, 12), math.sqrt(3 * 3072 / 24), rtol=1e-14)


def _centres(d, k, rng):
    """k orthonormal directions of R^d (QR of a Gaussian matrix) and the centres mu_j = sqrt(d) u_j (spec 2.1)."""
    u, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return u.T, math.sqrt(d) * u.T  # (k, d) each


def _bisect(f, t_hi, iters=60):
    """Smallest t in [0, t_hi] with f(t) <= 0 per point, for f decreasing along the ray (vectorised: f(t) -> (n,))."""
    lo, hi = np.zeros_like(t_hi), t_hi.copy()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        bad = f(mid) <= 0
        hi, lo = np.where(bad, mid, hi), np.where(bad, lo, mid)
    return hi


def test_acc_fa_vs_direct_simulation_of_the_averaging_net():
    """G1 from scratch: clusters in R^d, the idealised averaging net w_{s,r} = c_r sum_{J_s} mu_j (three neurons per
    side with unequal scales c_r, zero bias), the exact flip radius along v(x) by bisection on the net itself; the
    fraction of points with radius >= eps is Acc_FA(eps) = Phi(sqrt(d/k) - eps) within Monte-Carlo error."""
    d, k, n = 256, 4, 20_000
    rng = np.random.default_rng(7)
    _, mu = _centres(d, k, rng)
    side = np.array([1, 1, -1, -1])
    j = rng.integers(0, k, n)
    y = side[j].astype(float)
    x = mu[j] + rng.standard_normal((n, d))
    c = np.array([0.5, 1.0, 2.0])
    w_pos = c[:, None] * mu[side > 0].sum(0)
    w_neg = c[:, None] * mu[side < 0].sum(0)
    v = -y[:, None] * (mu[side > 0].sum(0) - mu[side < 0].sum(0)) / math.sqrt(k * d)
    ap, bp, an, bn = x @ w_pos.T, v @ w_pos.T, x @ w_neg.T, v @ w_neg.T

    def margin(t):
        t = t[:, None]
        f = np.maximum(ap + t * bp, 0).mean(1) - np.maximum(an + t * bn, 0).mean(1)
        return y * f

    assert np.all(margin(np.zeros(n)) > 0)  # clean accuracy 1 at sqrt(d/k) = 8
    r = _bisect(margin, np.full(n, 4 * math.sqrt(d / k)))
    eps = np.linspace(math.sqrt(d / k) - 3, math.sqrt(d / k) + 3, 13)
    emp = (r[None, :] >= eps[:, None]).mean(1)
    np.testing.assert_allclose(th.acc_fa(eps, d, k), emp, atol=0.015)  # MC sd <= 0.0035
    assert float(np.std(r)) == pytest.approx(1.0, rel=0.03)  # per-point spread N(0, 1)


def test_acc_fd_vs_direct_simulation_of_the_decoupled_net():
    """G4 FD overlay from scratch: the decoupled net f_j(x) = ReLU(<u_j, x>), read out by F_max, attacked along each
    pairwise route (lower the own centre, raise one opposite centre: direction (u_l - u_j)/sqrt(2)) by bisection on
    the net itself, radius = the best route; P[radius >= eps] is Acc_FD(eps) within Monte-Carlo error."""
    d, k, n = 256, 6, 20_000
    rng = np.random.default_rng(11)
    u, mu = _centres(d, k, rng)
    side = np.array([1, 1, 1, -1, -1, -1])
    j = rng.integers(0, k, n)
    y = side[j].astype(float)
    x = mu[j] + rng.standard_normal((n, d))
    z = x @ u.T  # (n, k) first-layer pre-activations

    def f_max(pre):
        h = np.maximum(pre, 0)
        return h[:, side > 0].max(1) - h[:, side < 0].max(1)

    assert np.all(y * f_max(z) > 0)
    radii = []
    for l_off in range(3):  # the l-th centre of the opposite side
        l = np.where(y > 0, 3 + l_off, l_off)
        dz = (u[l] - u[j]) @ u.T / math.sqrt(2)  # the unit direction's effect on every pre-activation
        radii.append(_bisect(lambda t: y * f_max(z + t[:, None] * dz), np.full(n, 2 * math.sqrt(d))))
    r = np.min(radii, axis=0)
    eps = np.linspace(math.sqrt(d / 2) - 4, math.sqrt(d / 2) + 2, 13)
    emp = (r[None, :] >= eps[:, None]).mean(1)
    np.testing.assert_allclose(th.acc_fd(eps, d, 3), emp, atol=0.015)  # MC sd <= 0.0035 (+0.0016 library)
    # p = 1: r_FD = sqrt(d/2) + N(0, 1) exactly, so Acc_FD(eps) = Phi(sqrt(d/2) - eps) (normal CDF via erf)
    eps = np.linspace(35, 43, 9)
    exact = np.array([0.5 * (1 + math.erf((math.sqrt(3072 / 2) - e) / math.sqrt(2))) for e in eps])
    assert np.max(np.abs(th.acc_fd(eps, 3072, 1) - exact)) <= 0.01


def test_acc_fa_normal_cdf_by_quadrature():
    """Phi by trapezoidal integration of the normal density (no erf) vs the library's Phi(sqrt(d/k) - eps)."""
    d, k = 3072, 10
    for delta in (-2.0, 0.0, 0.7, 2.0):
        z = np.linspace(-12, delta, 200_001)
        ref = np.trapezoid(np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi), z)
        assert float(th.acc_fa(math.sqrt(d / k) - delta, d, k)) == pytest.approx(ref, abs=1e-9)


def _g4_numeric(tau, d, p, grid=200_001):
    """G4 by direct numeric minimisation (noise ignored, own centre at sqrt(d) on its axis): lower the own
    pre-activation by a and raise q opposite ones by b each; F_sum = ReLU(sqrt(d) - a - tau) - q ReLU(b - tau) <= 0
    needs b >= tau + ReLU(sqrt(d) - a - tau)/q; minimise sqrt(a^2 + q b^2) over a on a fine grid and over q. The tie
    route (own neuron off: a = sqrt(d) - tau, nothing raised) is the candidate sqrt(d) - tau."""
    sd = math.sqrt(d)
    a = np.linspace(0.0, sd - tau, grid)
    best = sd - tau
    for q in range(1, p + 1):
        b = tau + np.maximum(sd - a - tau, 0) / q
        best = min(best, float(np.min(np.sqrt(a ** 2 + q * b ** 2))))
    return best


def test_g4_fsum_radius_vs_numeric_minimisation():
    d = 3072
    sd = math.sqrt(d)
    for p in (1, 3, 5):
        for tau in (0.0, 0.1 * sd, 0.25 * sd, 0.4 * sd):
            assert float(th.g4_fsum_radius(tau, d, p)) == pytest.approx(_g4_numeric(tau, d, p), rel=1e-6)


def test_gradient_cosine_tolerance_by_vector_geometry():
    """The tilted gradient w = sum_{J_y} u + beta sum_{J_-y} u built as a vector; beta from the spec P1 off-block
    window [-0.07, 0.02] with in-block 1/sqrt(|J_y|); its cosine with sum_{J+} u - sum_{J-} u computed directly."""
    for n_y, k in ((5, 10), (3, 10), (2, 4)):
        e = np.eye(k)
        own, opp = e[:n_y].sum(0), e[n_y:].sum(0)
        direction = own - opp

        def cos(beta):
            w = own + beta * opp
            return w @ direction / np.linalg.norm(w) / np.linalg.norm(direction)

        assert cos(0.0) == pytest.approx(float(th.gradient_cosine(n_y, k)), rel=1e-12)
        dev = max(abs(cos(off * math.sqrt(n_y)) - cos(0.0)) for off in (-0.07, 0.02))
        assert float(th.gradient_cosine_tolerance(n_y, k)) == pytest.approx(dev, rel=1e-12)


def _g4_reference(tau, d, p):
    sd = math.sqrt(d)
    routes = [sd - tau] + [(sd + (q - 1) * tau) / math.sqrt(1 + q) for q in range(1, p + 1)]
    return min(routes)


def test_g4_fsum_radius():
    d = 3072
    sd = math.sqrt(d)
    for p in (1, 2, 5, 9):
        # tau = 0: sqrt(d)/sqrt(1+p) (all opposite neurons raised)
        assert float(th.g4_fsum_radius(0.0, d, p)) == pytest.approx(sd / math.sqrt(1 + p), rel=1e-14)
        # large tau: the tie route sqrt(d) - tau binds
        for tau in (0.5 * sd, 0.8 * sd):
            assert float(th.g4_fsum_radius(tau, d, p)) == pytest.approx(sd - tau, rel=1e-14)
        taus = np.linspace(0, 0.6 * sd, 25)
        np.testing.assert_allclose(th.g4_fsum_radius(taus, d, p), [_g4_reference(t, d, p) for t in taus],
                                   rtol=1e-14)
    # spec: tau = 0.25 sqrt(d), p = 5 gives sqrt(d/2) (pairwise route)
    assert float(th.g4_fsum_radius(0.25 * sd, d, 5)) == pytest.approx(math.sqrt(d / 2), rel=1e-12)
    # the tie route binds once tau > (1 - 1/sqrt2) sqrt(d) ~ 0.29 sqrt(d)
    t = (1 - 1 / math.sqrt(2)) * sd
    assert float(th.g4_fsum_radius(t * 1.01, d, 1)) == pytest.approx(sd - 1.01 * t, rel=1e-12)
    assert float(th.g4_fsum_radius(t * 0.99, d, 1)) == pytest.approx(sd / math.sqrt(2), rel=1e-12)


def _public_functions():
    return sorted(name for name, obj in inspect.getmembers(th, inspect.isfunction)
                  if obj.__module__ == th.__name__ and not name.startswith("_"))


def test_every_function_has_provenance():
    names = _public_functions()
    assert len(names) >= 10
    missing = [n for n in names if n not in th.PROVENANCE]
    assert not missing, missing
    from fa_jax.summary import KINDS, Check

    for name, prov in th.PROVENANCE.items():
        kind = Check(name, 1.0, 1.0, 0.1, "rel", prov, null=None, note="provenance parse only").kind
        assert kind in KINDS, (name, prov)
        assert kind != "paper claim" or "unverified" in prov, (name, prov)


def test_every_provenance_entry_is_a_function():
    """A PROVENANCE entry promises a theory function (predicted values come from fa_jax theory functions, never
    from typed-in literals: spec README)."""
    stale = [n for n in th.PROVENANCE if not callable(getattr(th, n, None))]
    assert not stale, f"PROVENANCE names without a function: {stale}"


def test_outputs_are_float64_numpy():
    for val in (th.fa_radius(64, 4), th.fd_radius(64), th.ratio(4), th.inblock_cosine(2),
                th.granularity_radius(2, 64, 4), th.acc_fa(1.0, 64, 4), th.acc_fd(1.0, 64, 2, draws=100),
                th.g4_fsum_radius(0.0, 64, 2), th.gradient_cosine(2, 4), th.fa_boundary_k(64, 2.0),
                th.gradient_cosine_tolerance(2, 4), th.fa_k_slope(), th.fd_k_slope(), *th.fd_r50_window(64),
                th.real_clean_accuracy_floor(), th.more_robust_gap(10, 2)):
        assert np.asarray(val).dtype == np.float64


def test_noise_map_theory_against_independent_references():
    """S7: c = 1/sqrt(1 + sigma^2 k/n); the boundary sigma* = sqrt(n/k) is where c = 1/sqrt(2) (round trip), its
    log-log slope in k is -1/2 (finite difference), sigma -> 0 gives G1; clean accuracy = Phi(c sqrt(d/k)/sigma)
    (scipy's normal cdf, float64)."""
    from scipy.stats import norm

    sig, k, n, d = np.array([0.25, 1.0, 10.0, 32.0]), np.array([2.0, 10.0, 64.0]), 1000, 3072
    c = th.noisy_radius_factor(sig[:, None], k[None, :], n)
    np.testing.assert_allclose(c, (1.0 + sig[:, None] ** 2 * k[None, :] / n) ** -0.5, rtol=1e-15)
    assert th.noisy_radius_factor(0.0, 10, n) == 1.0
    star = th.noise_boundary_sigma(n, k)
    np.testing.assert_allclose(th.noisy_radius_factor(star, k, n), th.noise_boundary_level(), rtol=1e-14)
    fd = (np.log(th.noise_boundary_sigma(n, 10.0 * 1.001)) - np.log(th.noise_boundary_sigma(n, 10.0))) / np.log(1.001)
    assert fd == pytest.approx(float(th.noise_boundary_slope()), abs=1e-9)
    acc = th.noisy_clean_accuracy(d, k[None, :], sig[:, None], n)
    np.testing.assert_allclose(acc, norm.cdf(np.sqrt(d / k[None, :]) * c / sig[:, None]), rtol=1e-12)


def test_split_inblock_cosine_is_the_mean_over_in_block_entries():
    """G2 for a k//2 split, as a run measures it: the mean of 1/sqrt(|J_s|) over every in-block (neuron, cluster)
    entry, counted here entry by entry; even k gives 1/sqrt(k/2)."""
    for k in (2, 3, 5, 10, 11, 64):
        sides = (k // 2, k - k // 2)
        entries = [1.0 / np.sqrt(s) for s in sides for _ in range(s)]  # one neuron per side, |J_s| entries each
        assert float(th.split_inblock_cosine(k)) == pytest.approx(np.mean(entries), rel=1e-14)
    assert float(th.split_inblock_cosine(10)) == pytest.approx(float(th.inblock_cosine(5)), rel=1e-14)
