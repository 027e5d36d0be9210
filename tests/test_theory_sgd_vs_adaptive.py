"""fa_jax.theory.sgd_vs_adaptive vs Monte Carlo (float64 numpy), hand-checkable cases and reference iterations."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from fa_jax.frequency import dct_matrix
from fa_jax.theory import sgd_vs_adaptive as th

S = np.array([0.1, 0.05, 0.0])  # spec Sec. 2.1 (typed here on purpose: an independent copy of the data constants)
WS = np.array([5.0, 10.0, 0.0])
W0 = np.array([0.01, -0.01, 0.02])


def test_provenance_covers_public_functions():
    public = {n for n, f in inspect.getmembers(th, inspect.isfunction) if f.__module__ == th.__name__
              and not n.startswith("_")}
    assert public == set(th.PROVENANCE)
    from fa_jax.summary import Check

    for name, prov in th.PROVENANCE.items():  # every entry names one of the summary's kinds (Check validates it)
        assert Check(name, 0.0, 1.0, 0.0, "at_least", prov).kind in {"derived", "paper", "paper claim"}, name
        if prov.startswith("paper claim"):
            assert "unverified" in prov, name


def test_check_predictions_from_the_formulas():
    """The predictions the sim's checks use, against independent float64 computations."""
    # T2: zero-variance frequencies never move (exact power 1), relevant ones do
    e0 = W0 - WS
    assert th.gd_irrelevant_shift(e0, S, 0.01, 200_000) == 0.0
    # P14: the DCT-basis signGD iteration keeps wt_2; the pixel-basis one moves it by ~ T3's displacement
    assert th.signgd_irrelevant_shift(W0, WS, S, 0.01, 1500, "dct") == 0.0
    dw = abs(th.signgd_displacement(e0, S))
    assert th.signgd_irrelevant_shift(W0, WS, S, 0.01, 1500, "pixel") == pytest.approx(dw, rel=0.05)
    # P6: z of a Monte-Carlo mean; the Bonferroni threshold (3 at one run, growing slowly with the runs)
    assert float(th.mc_z(10.3, 10.0, 0.1)) == pytest.approx(3.0, rel=1e-9)
    assert float(th.mc_z(0.5, 0.5, 0.0)) == 0.0  # R_s = 0: sd = 0 and MC = T1 exactly
    assert th.mc_z_max(1) == pytest.approx(3.0, rel=1e-9)
    p = math.erfc(3.0 / math.sqrt(2.0))  # two-sided tail of 3 sd
    for n in (2, 20, 92):
        z = th.mc_z_max(n)
        assert math.erfc(z / math.sqrt(2.0)) == pytest.approx(p / n, rel=1e-6)  # Bonferroni: tail p / n
    # a Monte-Carlo check of the unit: 2000 estimates of a mean of 500 exponentials, |z| > 3 about 0.27 % of the time
    rng = np.random.default_rng(0)
    v = rng.exponential(size=(2000, 500))
    zs = th.mc_z(v.mean(1), 1.0, v.std(1, ddof=1) / math.sqrt(500))
    assert 0.0005 < np.mean(zs > 3.0) < 0.008


def test_std_risk_hand_case_and_monte_carlo():
    # hand case: 1/2 (0.01 * 4 + 0.0025 * 1) = 0.02125; zero-variance error costs nothing
    assert float(th.std_risk([3.0, 11.0, 7.0], WS, S)) == pytest.approx(0.5 * (0.01 * 4 + 0.0025), rel=1e-15)
    rng = np.random.default_rng(0)
    c = dct_matrix(3)
    wt = np.array([4.0, 9.5, -1.0])
    x = (rng.standard_normal((200_000, 3)) * S) @ c.T
    y = x @ (c @ WS)
    mc = 0.5 * np.mean((x @ (c @ wt) - y) ** 2)
    assert mc == pytest.approx(float(th.std_risk(wt, WS, S)), rel=0.02)


def _random_problem(rng, d):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))  # random orthonormal eigenbasis
    s = rng.uniform(0.2, 1.5, d)
    s[-2:] = 0.0  # two zero-variance directions
    return q, s, rng.standard_normal(d), rng.standard_normal(d)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_t1_adversarial_risk_vs_monte_carlo(norm):
    """P6: a Monte-Carlo R_a (inner max in closed form) agrees with T1 within 3 standard errors."""
    rng = np.random.default_rng(1)
    n = 200_000
    for d, eps in ((3, math.sqrt(2)), (6, 0.3), (10, 0.05)):
        q, s, wt, wst = _random_problem(rng, d)
        x = (rng.standard_normal((n, d)) * s) @ q.T
        w = q @ wt
        r = x @ w - x @ (q @ wst)
        per = th.inner_max(r, w, eps, norm)
        mc, se = 0.5 * per.mean(), 0.5 * per.std() / math.sqrt(n)
        pred = float(th.adv_risk_linear(wt, wst, s, eps, norm, basis=q))
        assert abs(mc - pred) < 3 * se, (d, mc, pred, se)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_inner_max_is_the_maximum(norm):
    """(|r| + eps ||w||_*)^2 is attained by worst_delta and never exceeded by random feasible perturbations."""
    rng = np.random.default_rng(2)
    w, eps = rng.standard_normal(5), 0.7
    r = rng.standard_normal(8)
    d_star = th.worst_delta(r, w, eps, norm)
    np.testing.assert_allclose((r + d_star @ w) ** 2, th.inner_max(r, w, eps, norm), rtol=1e-13)
    bound = np.linalg.norm(d_star, axis=-1) if norm == "l2" else np.abs(d_star).max(axis=-1)
    np.testing.assert_allclose(bound, eps, rtol=1e-13)
    cand = rng.standard_normal((20_000, 5))
    if norm == "l2":
        cand *= eps / np.linalg.norm(cand, axis=-1, keepdims=True)
    else:
        cand = eps * np.sign(cand)  # cube vertices contain every linear maximiser
    vals = (r[:, None] + (cand @ w)[None, :]) ** 2
    assert np.all(vals.max(axis=1) <= th.inner_max(r, w, eps, norm) * (1 + 1e-12))


def test_zero_risk_identity_and_hand_values():
    """P6: at R_s = 0, R_a = eps^2 ||w||^2 / 2 exactly; hand values of the paper's limits."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        w = rng.standard_normal(7)
        n, eps = np.linalg.norm(w), rng.uniform(0.1, 3)
        assert float(th.adv_risk(0.0, n, eps)) == pytest.approx(eps ** 2 * n ** 2 / 2, rel=1e-12)
        assert float(th.adv_risk_zero_std(n, eps)) == pytest.approx(eps ** 2 * n ** 2 / 2, rel=1e-12)
    # GD limit at the defaults: R_a = (eps^2/2)(5^2 + 10^2 + 0.02^2) = 125.0004 with eps = sqrt2
    gd_inf = th.gd_limit_tilde(W0, WS, S)
    np.testing.assert_array_equal(gd_inf, [5.0, 10.0, 0.02])
    assert float(th.adv_risk_linear(gd_inf, WS, S, math.sqrt(2))) == pytest.approx(125.0004, rel=1e-12)
    # hand case with R_s > 0: R_s = 1/2, ||w|| = 1, eps = 1 -> 1/2 + sqrt(2/pi) + 1/2
    assert float(th.adv_risk(0.5, 1.0, 1.0)) == pytest.approx(1.0 + math.sqrt(2 / math.pi), rel=1e-15)
    # l2 robustness ~ 1/||w||; weight on irrelevant coordinates shrinks certified radii by ||w_rel||/||w||
    assert float(th.l2_sensitivity_radius(4.0, 2.0)) == 0.5
    wt = np.array([3.0, 0.0, 4.0])
    assert float(th.radius_shrink_factor(wt, [True, True, False])) == pytest.approx(0.6, rel=1e-15)
    x = rng.standard_normal((4, 3)) * [1, 1, 0]  # data with zero variance on coordinate 2
    np.testing.assert_allclose(th.certified_radius_l2(wt, x), th.certified_radius_l2([3.0, 0, 0], x) * 0.6,
                               rtol=1e-14)


def test_validation_errors():
    with pytest.raises(ValueError, match="eps"):
        th.adv_risk(0.1, 1.0, -0.5)
    with pytest.raises(ValueError, match="norm"):
        th.dual_norm([1.0, 2.0], "l1")
    with pytest.raises(ValueError, match="sigma_tilde"):
        th.signgd_displacement([1.0, 1.0, 0.0], [0.1, 0.05, 0.01])
    with pytest.raises(ValueError, match="sign_basis"):
        th.simulate_signgd(W0, WS, S, 0.01, 3, sign_basis="adam")


def test_t2_gd_error_vs_iteration_and_p1_numbers():
    c = dct_matrix(3)
    w = c @ W0
    traj = []
    for _ in range(2000):  # exact-gradient GD in the spatial basis
        traj.append(c.T @ w)
        w = w - 0.5 * (c @ (S ** 2 * (c.T @ w - WS)))
    traj = np.array(traj)
    np.testing.assert_allclose(WS + th.gd_error(W0 - WS, S, 0.5, np.arange(2000)), traj, rtol=1e-12, atol=1e-13)
    assert np.abs(traj[:, 2] - 0.02).max() < 1e-12  # T2: the irrelevant coordinate never moves
    # P1 at T = 200 000, lr = 0.01: wt_1 in [9.92, 9.94], R_s ~ 6e-6, R_a slightly below its limit 125.0004
    p = th.paper_predictions(lr=0.01, steps=200_000)
    assert 9.92 <= p["gd_final_tilde"][1] <= 9.94 and p["gd_final_tilde"][2] == 0.02
    assert 5e-6 < p["gd_std_risk_final"] < 7e-6
    assert p["gd_adv_risk_final"] < p["gd_adv_risk_limit"] == pytest.approx(125.0004, rel=1e-12)


def test_t3_signgd_step_matches_pixel_sign_update():
    rng = np.random.default_rng(4)
    c = dct_matrix(3)
    e = rng.standard_normal((50, 3)) * [5, 10, 1]
    e[0, :2] = [0.0, 1.0]  # A = 0: sign(0) = 0 as in torch
    got = th.signgd_step_tilde(e, S, 0.01)
    for ei, gi in zip(e, got):
        w = c @ (ei + WS)
        g = c @ (S ** 2 * ei)
        ref = c.T @ (w - 0.01 * np.sign(g)) - WS
        np.testing.assert_allclose(gi, ref, atol=1e-13)
    a, b = th.signgd_coeffs(e, S)
    np.testing.assert_allclose(a, 0.01 * e[:, 0] / math.sqrt(3), rtol=1e-15)
    np.testing.assert_allclose(b, 0.0025 * e[:, 1] / math.sqrt(2), rtol=1e-15)


def test_t3_spec_numbers():
    p = th.paper_predictions()
    assert p["signgd_t1"] == pytest.approx(112, abs=1.5)  # "Phase 1 lasts ~112 steps"
    assert 640 <= p["signgd_t2"] <= 650
    assert p["signgd_drift_rate"] == pytest.approx(-0.00816, abs=1e-5)
    assert float(th.signgd_switch_e0(W0 - WS, S)) == pytest.approx(3.06, abs=0.01)
    # Delta wt_2 = -sqrt3 * 0.25 * 10.01
    assert p["signgd_displacement"] == pytest.approx(-math.sqrt(3) * 0.25 * 10.01, rel=1e-14)
    np.testing.assert_allclose(p["signgd_final_tilde"], [5.0, 10.0, 0.02 - math.sqrt(3) * 0.25 * 10.01],
                               rtol=1e-14)
    assert p["signgd_adv_risk_limit"] > p["gd_adv_risk_limit"]  # equal R_s = 0, larger R_a


def test_t3_closed_form_vs_reference_iteration():
    """P2/P3 with exact gradients: phase times, drift, end point within 2%, R_s < 1e-5 after t ~ 1000."""
    traj = th.simulate_signgd(W0, WS, S, 0.01, 1500)
    e = traj - WS
    a, b = th.signgd_coeffs(e, S)
    t1, t2 = th.signgd_phase_times(W0 - WS, S, 0.01)
    assert abs(int(np.argmax(np.abs(a) < np.abs(b))) - t1) <= 2
    assert abs(int(np.argmax(e[:, 0] >= 0)) - t2) <= 3
    assert np.abs(traj[: int(t1), 1:] - traj[0, 1:]).max() < 1e-15  # only et_0 moves in Phase 1
    np.testing.assert_allclose(np.diff(traj[150:600, 2]), th.signgd_drift_rate(W0 - WS, 0.01), rtol=1e-9)
    final = th.signgd_final_tilde(W0, WS, S)
    assert traj[-1, 2] == pytest.approx(final[2], rel=0.02)
    assert th.std_risk(traj[1000:], WS, S).max() < 1e-5
    assert abs(traj[-1, 2] - traj[1000, 2]) < 0.1
    # P14: the sign taken in the DCT (eigen)basis leaves the irrelevant weight alone
    traj_dct = th.simulate_signgd(W0, WS, S, 0.01, 1500, sign_basis="dct")
    assert np.all(traj_dct[:, 2] == 0.02)


def test_t3_eta_independence_init_shift_and_scaling():
    final = th.signgd_final_tilde(W0, WS, S)[2]
    for lr in (0.005, 0.02):  # P4 at fixed lr T = 15 (the dynamics settle by lr t ~ 10)
        traj = th.simulate_signgd(W0, WS, S, lr, round(15.0 / lr))
        assert traj[-1, 2] == pytest.approx(final, rel=0.05)
    # P8: signGD shifts wt_2 by Delta rather than enlarging it: wt_2(0) = +1 -> 1 + Delta
    w0 = np.array([0.01, -0.01, 1.0])
    traj = th.simulate_signgd(w0, WS, S, 0.01, 1500)
    assert traj[-1, 2] == pytest.approx(th.signgd_final_tilde(w0, WS, S)[2], rel=0.02)
    # P5: linear in wt*_1 and in st_1^2/st_0^2 while |A(0)| >= |B(0)|
    e0 = W0 - WS
    assert bool(th.signgd_formula_valid(e0, S))
    d1 = th.signgd_displacement(e0, S)
    assert th.signgd_displacement(e0 * [1, 0.5, 1], S) == pytest.approx(d1 / 2, rel=1e-14)
    assert th.signgd_displacement(e0, [0.1, 0.05 / math.sqrt(2), 0.0]) == pytest.approx(d1 / 2, rel=1e-14)
    # beyond the boundary the formula overestimates |Delta| and the phase times are undefined
    e_far = np.array([-0.5, -10.01, 0.0])
    assert not bool(th.signgd_formula_valid(e_far, S))
    assert np.isnan(th.signgd_phase_times(e_far, S, 0.01)[0])
    traj = th.simulate_signgd(e_far + WS, WS, S, 0.01, 2500)
    assert abs(traj[-1, 2]) < abs(th.signgd_displacement(e_far, S))


def test_band_noise_threshold_is_one_test_image():
    """nets.band_noise.*: 'SGD strictly more accurate' at the resolution of a test accuracy (1 / n_test), a paper
    claim (Fig. 4, spec P10); a check at it refuses the null (identical nets, difference 0)."""
    from fa_jax.summary import Check

    assert th.paper_band_noise_sgd_advantage_min(500) == pytest.approx(0.002)
    prov = th.PROVENANCE["paper_band_noise_sgd_advantage_min"]
    assert prov.startswith("paper claim") and "Fig. 4" in prov and "unverified" in prov
    assert not Check("c", 0.0, th.paper_band_noise_sgd_advantage_min(500), 0.0, "at_least", prov).passed
    with pytest.raises(ValueError, match="n_test"):
        th.paper_band_noise_sgd_advantage_min(0)


def test_freq_removal_relevant_count_matches_the_spec_scan():
    """theory.freq_removal_relevant_removed / _keeps_relevant against the spec's Phi_freq scan
    (conftest.np_lowpass_keep) and the data's rank rule, written here: relevant = the N^2 - round(frac N^2) lowest
    ranks by radius (ties by flat index). Shell ties make p = 50 remove a relevant coefficient at N = 8, frac 0.5
    (the default's P11 boundary case)."""
    from conftest import np_lowpass_keep

    from fa_jax.theory.sgd_vs_adaptive import freq_removal_keeps_relevant, freq_removal_relevant_removed

    for n in (4, 8, 16):
        rad = np.hypot(*np.meshgrid(np.arange(n), np.arange(n), indexing="ij")).ravel()
        rank = np.empty(n * n, int)
        rank[np.argsort(rad, kind="stable")] = np.arange(n * n)
        for frac in (0.25, 0.5, 0.75):
            relevant = (rank < n * n - round(frac * n * n)).reshape(n, n)
            for p in (10.0, 30.0, 50.0, 70.0, 90.0):
                removed = int(np.sum(relevant & ~np_lowpass_keep(n, 100 - p)))
                assert freq_removal_relevant_removed(n, frac, p) == removed, (n, frac, p)
                assert freq_removal_keeps_relevant(n, frac, p) == (removed == 0), (n, frac, p)
    assert freq_removal_keeps_relevant(8, 0.5, 30.0) and freq_removal_relevant_removed(8, 0.5, 50.0) == 1
    with pytest.raises(ValueError, match="frac_irrelevant"):
        freq_removal_keeps_relevant(8, 1.5, 10.0)
