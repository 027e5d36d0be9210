"""fa_jax.theory.agop_collapse: every public function has a provenance whose kind a Check accepts; the derived
closed forms against independent float64 computations (the P6 one-step closed form against an explicit linear
kernel fit + AGOP + matrix square root; the U invariance of NC1; the isotropic top-K share); the thresholds and
nulls are consistent (every check built from them could fail)."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from fa_jax.summary import Check
from fa_jax.theory import agop_collapse as T


def _public():
    return {n for n, f in inspect.getmembers(T, inspect.isfunction)
            if not n.startswith("_") and f.__module__ == T.__name__ and n != "provenance"}


def test_every_function_has_a_provenance_with_a_kind():
    assert _public() == set(T.PROVENANCE)
    for name, prov in T.PROVENANCE.items():
        kind = Check("x", 0.0, 1.0, 0.0, "abs", prov).kind
        assert kind in ("derived", "paper claim", "code"), (name, prov)
        assert (kind == "paper claim") == name.startswith(("p1_", "p2_", "p3_", "p4_", "p7_", "p9_", "p11_", "p12_",
                                                           "p13_")), name
        if kind == "paper claim":
            assert "unverified" in prov, name
        doc = getattr(T, name).__doc__
        assert doc and len(doc) > 40, name


def _nc1(h, labels, k):
    """NC1 from scatter matrices (a different computation from the theory module's trace sums)."""
    mu = np.stack([h[labels == c].mean(0) for c in range(k)])
    sw = np.cov((h - mu[labels]).T, bias=True) + np.outer(*(2 * [(h - mu[labels]).mean(0)]))
    sb = (mu - mu.mean(0)).T @ (mu - mu.mean(0)) / k
    return np.trace(sw) / np.trace(sb)


def _mixture(rng, k, n_per, d, sep=2.0):
    means = sep * rng.standard_normal((k, d)) / np.sqrt(d)
    labels = np.repeat(np.arange(k), n_per)
    x = means[labels] + rng.standard_normal((k * n_per, d)) / np.sqrt(d)
    y = 2.0 * np.eye(k)[labels] - 1.0
    return x, y, labels


def _explicit_one_step(x, y, labels, k, lam):
    """Fit the linear-kernel ridge predictor, form its (constant-Jacobian) AGOP, project by its square root."""
    n = len(x)
    alpha = np.linalg.solve(x @ x.T + lam * np.eye(n), y)  # (N, K)
    beta = alpha.T @ x  # f(x) = beta x, Jacobian beta (K, d)
    agop = beta.T @ beta
    lam_m, v = np.linalg.eigh(agop / np.abs(agop).max())
    keep = lam_m > 1e-12 * lam_m.max()  # rank <= K exactly
    root = (v[:, keep] * np.sqrt(lam_m[keep])) @ v[:, keep].T
    return _nc1(x @ root, labels, k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_step_closed_form_matches_an_explicit_agop_step(seed):
    rng = np.random.default_rng(seed)
    k, n_per, d = 3, 4, 20
    x, y, labels = _mixture(rng, k, n_per, d)
    ridges = [1e-3, 1e-2, 0.1, 1.0, 10.0]
    closed = T.one_step_nc1_closed_form(x, y, labels, k, ridges)
    explicit = [_explicit_one_step(x, y, labels, k, lam) for lam in ridges]
    np.testing.assert_allclose(closed / np.asarray(explicit), T.one_step_closed_form_ratio(),
                               rtol=T.one_step_closed_form_tol())
    # monotone in the ridge (P6), and the ridgeless step collapses exactly (N = 12 <= d = 20)
    assert np.all(np.diff(closed) > 0) and T.one_step_monotone_fraction() == 1.0
    assert _explicit_one_step(x, y, labels, k, 0.0) <= T.one_step_ridgeless_nc1() + T.one_step_ridgeless_tol()
    assert T.one_step_nc1_closed_form(x, y, labels, k, [0.0])[0] < T.one_step_ridgeless_tol()
    assert _nc1(x, labels, k) > 1e3 * T.one_step_ridgeless_tol()  # the input is far from collapsed


def test_u_invariance_of_nc1():
    rng = np.random.default_rng(4)
    h, _, labels = _mixture(rng, 4, 10, 12)
    s = rng.uniform(0.1, 3.0, 12)
    v = np.linalg.qr(rng.standard_normal((12, 12)))[0]
    u = np.linalg.qr(rng.standard_normal((30, 12)))[0]  # orthonormal columns, rectangular
    svt = h @ v * s
    ratio = _nc1(svt @ u.T, labels, 4) / _nc1(svt, labels, 4)
    assert abs(ratio - T.u_invariance_ratio()) <= T.u_invariance_tol()
    assert abs(_nc1(h * s, labels, 4) / _nc1(h, labels, 4) - 1) > 1e-3  # S alone does change NC1


def test_isotropic_topk_fraction():
    lam = np.linalg.eigvalsh(np.eye(32))
    assert T.isotropic_topk_fraction(4, 32) == pytest.approx(np.sort(lam)[-4:].sum() / lam.sum())
    assert T.isotropic_topk_fraction(10, 8) == 1.0
    assert T.isotropic_topk_fraction(10, 128) < T.p14_topk_trace_fraction_min()


def test_thresholds_reject_their_nulls():
    """Each threshold with its null builds a Check (construction rejects a tolerance that admits the null)."""
    one, coin = T.no_collapse_ratio(), T.coin_flip_fraction()
    for fn, mode, null in ((T.p1_nc1_ratio_max, "at_most", one), (T.p4_nc2_ratio_max, "at_most", one),
                           (T.p2_projection_factor_min, "at_least", one), (T.p12_sw_drop_min, "at_least", one),
                           (T.p12_sb_rise_min, "at_least", one), (T.p7_semilog_r2_min, "at_least", 0.0),
                           (T.p1_monotone_fraction_min, "at_least", 0.0), (T.p9_frac_right_min, "at_least", 0.0),
                           (T.p11_nfa_final_min, "at_least", 0.0), (T.p11_rise_min, "at_least", 0.0),
                           (T.p9_svt_fraction, "abs", coin),
                           (T.p11_rise_fraction, "abs", 0.0), (T.p11_half_above_one_fraction, "abs", coin),
                           (T.p12_layer_decrease_fraction, "abs", coin), (T.p13_drop_fraction, "abs", coin)):
        Check(fn.__name__, fn(), fn(), 0.0, mode, T.provenance(fn.__name__), null=null)
    with pytest.raises(ValueError, match="admits the null"):
        Check("x", 1.0, 1.0, 0.0, "at_most", T.provenance("p1_nc1_ratio_max"), null=0.5)
    assert T.p3_control_ratio_min() < one < T.p3_feature_map_increase_max()  # both claims accept "no change"
    # the P4 control accepts "NC2 unchanged" and rejects the collapse the main P4 check asks for
    assert T.p4_nc2_ratio_max() <= T.p4_control_nc2_ratio_min() < one
    assert 0 < T.nc1_float_floor() == T.one_step_ridgeless_tol() < T.one_step_closed_form_tol()


def test_official_rff_gamma_is_a_gamma_of_the_job_script():
    """The checked gamma is one of run_deeprfm_jobs.sh's MNIST sigmas (0.05 2.0 0.1), the one its example command and
    deep_rfm.py's comment give for MNIST, and its provenance names the script."""
    assert T.official_rff_gamma() in (0.05, 2.0, 0.1) and T.official_rff_gamma() == 0.05
    assert "run_deeprfm_jobs.sh" in T.provenance("official_rff_gamma")
