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


def test_acc_fa_closed_form_with_math_erf():
    d, k = 3072, 10
    eps = np.linspace(0, 30, 31)
    ref = np.array([0.5 * (1 + math.erf((math.sqrt(d / k) - e) / math.sqrt(2))) for e in eps])
    np.testing.assert_allclose(th.acc_fa(eps, d, k), ref, rtol=1e-14, atol=1e-300)
    assert float(th.acc_fa(math.sqrt(d / k), d, k)) == pytest.approx(0.5, abs=1e-15)
    # independent: Phi by numerical integration of the normal density
    z = np.linspace(-12, 2.0, 200001)
    phi2 = np.trapezoid(np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi), z)
    assert float(th.acc_fa(math.sqrt(d / k) - 2.0, d, k)) == pytest.approx(phi2, abs=1e-9)


def test_acc_fd_vs_independent_simulation():
    d = 3072
    for p in (1, 5):
        eps = np.linspace(30, 45, 16)
        rng = np.random.default_rng(12345)  # a different stream from the library's
        g = rng.standard_normal((200_000, p + 1))
        r = (math.sqrt(d) + g[:, 0] - g[:, 1:].max(axis=1)) / math.sqrt(2)
        ref = (r[None, :] >= eps[:, None]).mean(axis=1)
        got = th.acc_fd(eps, d, p)
        assert got.shape == eps.shape
        assert np.max(np.abs(got - ref)) <= 0.01
        assert np.all(np.diff(got) <= 0) and got[0] > 0.99 and got[-1] < 0.01
    # p = 1: r_FD = sqrt(d/2) + N(0, 1) exactly, so Acc_FD(eps) = Phi(sqrt(d/2) - eps)
    eps = np.linspace(35, 43, 9)
    exact = np.array([0.5 * (1 + math.erf((math.sqrt(d / 2) - e) / math.sqrt(2))) for e in eps])
    assert np.max(np.abs(th.acc_fd(eps, d, 1) - exact)) <= 0.01
    # deterministic for a seed
    np.testing.assert_array_equal(th.acc_fd(eps, d, 3), th.acc_fd(eps, d, 3))


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
    # spec: tau = 0.25 sqrt(d), p = 5 gives sqrt(d/2) (pairwise route), the q = 5 route alone sqrt(2/3) sqrt(d)
    assert float(th.g4_fsum_radius(0.25 * sd, d, 5)) == pytest.approx(math.sqrt(d / 2), rel=1e-12)
    assert (sd + 4 * 0.25 * sd) / math.sqrt(6) == pytest.approx(math.sqrt(2 / 3) * sd)
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
    assert set(th.PROVENANCE.values()) <= {"paper", "derived", "code"}


def test_every_provenance_entry_is_a_function():
    """A PROVENANCE entry promises a theory function (predicted values come from fa_jax theory functions, never
    from typed-in literals: spec README)."""
    stale = [n for n in th.PROVENANCE if not callable(getattr(th, n, None))]
    assert not stale, f"PROVENANCE names without a function: {stale}"


def test_outputs_are_float64_numpy():
    for val in (th.fa_radius(64, 4), th.fd_radius(64), th.ratio(4), th.inblock_cosine(2),
                th.granularity_radius(2, 64, 4), th.acc_fa(1.0, 64, 4), th.acc_fd(1.0, 64, 2, draws=100),
                th.g4_fsum_radius(0.0, 64, 2), th.gradient_cosine(2, 4), th.fa_boundary_k(64, 2.0)):
        assert np.asarray(val).dtype == np.float64
