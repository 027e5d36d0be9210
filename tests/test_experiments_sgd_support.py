"""Independent float64 numpy references for the support experiment (issue 15 Sec. 5).

Every reference below is written from the defining formula (deep linear net f(x) = W_L ... W_1 x in torch layout,
MSE without 1/2), not by calling the code under test: the per-record metrics of ``run_sgd_support`` (irr, loss, u,
F, G, per-sample and full gradient norms, end-to-end irrelevant coefficient), ``measured_decay``,
``converged_from`` and ``sims.sgd_support.t3_prediction``.
"""
import math

import jax
import numpy as np
import pytest

from fa_jax.data.support import SupportData, make_support_data
from fa_jax.experiments.sgd_support import SupportRun, converged_from, decay_window, measured_decay, run_sgd_support
from fa_jax.models.mlp import MLP, init_mlp
from fa_jax.optim import OptimConfig
from fa_jax.trainer import TrainConfig


def _np_metrics(kernels, x, y, x_test, s):
    """The record_fn quantities from their formulas (float64 numpy). kernels: flax (in, out); W_l = K_l^T."""
    W = [np.asarray(k, float).T for k in kernels]  # (out, in)
    L = len(W)
    n = x.shape[0]

    def prod(ms, dim):  # ms[-1] @ ... @ ms[0], identity of size dim if empty
        out = np.eye(dim)
        for m in ms:
            out = m @ out
        return out

    e2e = prod(W, x.shape[1])  # (1, d): f(x) = e2e @ x
    r = x @ e2e[0] - y
    # a_l = (W_L ... W_{l+1})^T (h_l,), b_l(x) = W_{l-1} ... W_1 x: grad_{W_l} f(x) = a_l b_l(x)^T
    a = [prod(W[l + 1:], W[l].shape[0])[0] for l in range(L)]
    b = [x @ prod(W[:l], x.shape[1]).T for l in range(L)]  # (n, in_l)
    g_f = sum(np.sum(a[l] ** 2) * np.sum(b[l] ** 2, 1) for l in range(L))  # ||grad_theta f(x_i)||^2
    full = [np.mean(2 * r[:, None, None] * a[l][None, :, None] * b[l][:, None, :], 0) for l in range(L)]
    # grad_{W_1} G = 2 sum_{l>=2} ||a_l||^2 B_l^T B_l W_1 Sigma, B_l = W_{l-1}...W_2, Sigma = mean x x^T
    sigma = x.T @ x / n
    gW1 = sum(2 * np.sum(a[l] ** 2) * (prod(W[1:l], W[0].shape[0]).T @ prod(W[1:l], W[0].shape[0])) @ W[0] @ sigma
              for l in range(1, L))
    w_irr, g_irr = W[0][:, s:], gW1[:, s:]
    down = prod(W[2:], W[1].shape[0]) if L > 2 else np.ones((1, 1))
    return {
        "loss": np.mean(r ** 2),
        "test_e2e": np.linalg.norm(e2e[0, s:]) * np.ones(len(x_test)),
        "G": np.mean(g_f),
        "u": np.sum(w_irr * g_irr) / np.sum(w_irr ** 2),
        "F": np.sum(down ** 2),
        "sample_g2": np.mean(4 * r ** 2 * g_f),
        "full_g2": sum(np.sum(g ** 2) for g in full),
        "irr_norm": np.linalg.norm(w_irr),
    }


@pytest.mark.parametrize("widths", [(4, 3, 3), (3,)])
def test_record_metrics_match_numpy_reference(x64, widths):
    """Records at step 0 (the init) against the formulas; the last record's ratio against the returned kernel."""
    cfg = SupportRun(data=SupportData(d=6, s=2, n=12, n_test=5, noise=0.3),
                     model=MLP(widths=widths), optim=OptimConfig(name="sgd", lr=0.05, batch_size=5, clip_norm=1.0),
                     train=TrainConfig(steps=30, n_records=3, plan="linear"), seed=3, traj_seed=1).validate()
    out = run_sgd_support(cfg)
    data = make_support_data(jax.random.fold_in(jax.random.PRNGKey(3), 1), cfg.data)
    k0 = init_mlp(jax.random.fold_in(jax.random.PRNGKey(3), 2), cfg.model, 6, 1)
    np.testing.assert_array_equal(np.asarray(k0[0]), np.asarray(out["w1_init"]))
    ref = _np_metrics(k0, np.asarray(data["train"]["x"], float), np.asarray(data["train"]["y"], float),
                      np.asarray(data["test"]["x"], float), 2)
    rec = {k: np.asarray(v) for k, v in out["records"].items()}
    for key in ("loss", "G", "u", "F", "sample_g2", "full_g2"):
        np.testing.assert_allclose(rec[key][0], ref[key], rtol=1e-10, err_msg=key)
    np.testing.assert_allclose(rec["e2e_irr"][0], np.mean(ref["test_e2e"]), rtol=1e-10)
    assert rec["irr"][0] == pytest.approx(1.0, abs=1e-14)
    w1, w10 = np.asarray(out["w1"], float), np.asarray(out["w1_init"], float)
    np.testing.assert_allclose(rec["irr"][-1], np.linalg.norm(w1[2:]) / np.linalg.norm(w10[2:]), rtol=1e-10)
    np.testing.assert_allclose(out["support_score"], 1 - rec["irr"][-1], rtol=1e-10)
    assert rec["irr"][-1] != 1.0  # SGD moved the irrelevant block (correlated inputs, label noise)


def test_measured_decay_on_an_exact_exponential():
    """ratio = exp(-k t): window from the first record >= t0 to the last record >= floor, drop = k (t_b - t_a)."""
    k, t0, floor = 1e-3, 500.0, 0.05
    steps = np.array([0, 10, 100, 400, 600, 1000, 2000, 2900, 3100, 5000, 8000], float)
    ta, tb, drop, resolved = measured_decay(steps, np.exp(-k * steps), t0, floor=floor)
    assert (ta, tb) == (600.0, 2900.0)  # exp(-2.9) = 0.055 >= 0.05 > exp(-3.1)
    assert drop == pytest.approx(k * (2900 - 600), rel=1e-12) and resolved
    # a noise floor below 0.05: the window still ends at the last record above the floor
    ta, tb, drop, _ = measured_decay(steps, np.maximum(np.exp(-k * steps), 0.01), t0, floor=floor)
    assert tb == 2900.0 and drop == pytest.approx(2.3, rel=1e-12)
    # flat (never moved): no decay, unresolved
    ta, tb, drop, resolved = measured_decay(steps, np.ones_like(steps), t0)
    assert drop == 0.0 and not resolved
    # a small drop is resolved only from min_drop on
    r = np.exp(-1e-5 * steps)
    assert not measured_decay(steps, r, t0)[3] and measured_decay(steps, r, t0, min_drop=0.02)[3]


def test_converged_from_detects_fixed_points_not_two_cycles():
    steps = np.array([0, 10, 100, 1000, 2000, 4000, 6000, 8000, 10000], float)
    approach = 0.01 * (1 + 5 * np.exp(-steps / 300))  # relative gap 5 e^{-t/300}: <= 1 % from t = 300 ln 500
    assert converged_from(steps, approach) == 2000.0  # first record with 5 e^{-t/300} <= 0.01: t >= 1864
    two_cycle = 0.03 + 0.01 * (-1.0) ** np.arange(len(steps))
    assert converged_from(steps, two_cycle) is None
    late = np.where(steps < 8000, 1.0, 0.01)  # stationary only over the last 20 %: not converged
    assert converged_from(steps, late) is None
    assert converged_from(steps, np.where(steps < 8000, 1.0, np.nan)) is None


def _records(steps, loss, u, chi, irr):
    """One run as the sim reads it from load_results: a Dataset with dim step (its record steps as coordinate)."""
    import xarray as xr

    return xr.Dataset({"records/loss_mean": ("step", loss), "records/u": ("step", u), "records/clip2_mean": ("step", chi),
                       "records/irr": ("step", irr)}, coords={"step": steps})


def test_t3_prediction_matches_closed_form():
    """kappa_k = lr (lr/b)(N-b)/(N-1) * mean E[r^2]_k * (u_{k-1} + u_k)/2 * mean chi_k on each segment; the ln ratio is
    the exact sum of kappa_k (t_k - t_{k-1}) from t0."""
    from fa_jax_sims.sgd_support import SupportSim, t3_prediction

    s = SupportSim(n=250, clip=1.0)
    N, b, lr, t0 = 500, 8, 0.05, 1000.0
    steps = np.array([0, 10, 100, 1000, 2000, 5000, 10000], float)
    loss = np.array([1.0, 0.5, 0.1, 0.02, 0.015, 0.012, 0.011])
    u = np.array([1.0, 2.0, 3.0, 4.0, 4.0, 6.0, 6.0])
    chi = np.array([0.1, 0.2, 0.5, 1.0, 1.0, 0.9, 1.0])
    irr = np.linspace(1.0, 0.7, len(steps))
    p = t3_prediction(s, _records(steps, loss, u, chi, irr), b, lr, t0)
    c = lr * (lr / b) * (N - b) / (N - 1)
    i0 = 3
    assert p["i0"] == i0 and np.all(np.isnan(p["pred_ratio"][:i0]))
    ref = [irr[i0]]
    for k in range(i0 + 1, len(steps)):
        ref.append(ref[-1] * math.exp(-c * loss[k] * 0.5 * (u[k - 1] + u[k]) * chi[k] * (steps[k] - steps[k - 1])))
    np.testing.assert_allclose(p["pred_ratio"][i0:], ref, rtol=1e-12)
    np.testing.assert_allclose(p["kappa"][4], c * 0.015 * 4.0 * 1.0, rtol=1e-12)


def test_decay_window_ends_at_the_plateau():
    """exp(-k t) then a fluctuating floor: the window ends at the running minimum before the first 5 % rise."""
    steps = np.array([0, 100, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000], float)
    r = np.exp(-1e-3 * steps)
    w = decay_window(steps, r, 1000.0, rise=0.05, min_drop=0.02)
    assert (w["t_a"], w["t_b"]) == (1000.0, 8000.0) and not w["plateau"] and w["resolved"]
    assert w["drop"] == pytest.approx(7.0, rel=1e-12)
    floor = r.copy()
    floor[5:] = [0.02, 0.03, 0.018, 0.025, 0.02]  # reaches the floor at t = 4000; rises 50 % at t = 5000
    w = decay_window(steps, floor, 1000.0, rise=0.05, min_drop=0.02)
    assert w["plateau"] and w["t_b"] == 4000.0 and w["drop"] == pytest.approx(math.log(math.exp(-1.0) / 0.02))
    # already on the floor at the window start: no drop, flagged on_floor (excluded from rate fits)
    w = decay_window(steps, floor, 4000.0, rise=0.05, min_drop=0.02)
    assert w["on_floor"] and not w["resolved"] and w["drop"] == 0.0
    # small rises below the tolerance do not end the window
    wig = r * (1 + 0.01 * (-1.0) ** np.arange(len(r)))
    assert decay_window(steps, wig, 1000.0, rise=0.05, min_drop=0.02)["t_b"] == 8000.0


def test_running_means_match_a_float64_replay(x64):
    """GD with clipping replayed in float64 numpy from the gradient formula: the records' loss_mean, clip2_mean and
    gb2_mean are the means over each plan segment [t_{k-1}, t_k) of the rotating-chunk loss (points (5 t + j) mod N,
    j < 5), min(1, c^2 / ||g_t||^2) and ||g_t||^2, evaluated at the parameters before step t."""
    plan_steps, clip, lr, m = 12, 0.5, 0.05, 5
    cfg = SupportRun(data=SupportData(d=4, s=2, n=12, n_test=3, noise=0.3), model=MLP(widths=(3, 2)),
                     optim=OptimConfig(name="gd", lr=lr, clip_norm=clip),
                     train=TrainConfig(steps=plan_steps, n_records=3, plan="linear"), seed=1, stat_chunk=m).validate()
    out = run_sgd_support(cfg)
    plan = [int(t) for t in np.asarray(out["plan"])]
    data = make_support_data(jax.random.fold_in(jax.random.PRNGKey(1), 1), cfg.data)
    x, y = np.asarray(data["train"]["x"], float), np.asarray(data["train"]["y"], float)
    N = len(y)
    W = [np.asarray(k, float).T for k in init_mlp(jax.random.fold_in(jax.random.PRNGKey(1), 2), cfg.model, 4, 1)]

    def f(ws, xs):
        h = xs.T
        for w in ws:
            h = w @ h
        return h[0]

    def grads(ws):  # d/dW_l mean (f - y)^2 = mean 2 r a_l b_l^T (torch layout)
        r = f(ws, x) - y
        out_g = []
        for l in range(len(ws)):
            above = np.eye(ws[-1].shape[0])
            for w in ws[l + 1:][::-1]:
                above = above @ w
            below = x.T
            for w in ws[:l]:
                below = w @ below
            out_g.append(2 * (above.T * r[None, :]) @ below.T / N)
        return out_g

    stats = []
    for t in range(plan_steps):
        g = grads(W)
        g2 = sum(np.sum(gl ** 2) for gl in g)
        idx = (t * m + np.arange(m)) % N
        stats.append((np.mean((f(W, x[idx]) - y[idx]) ** 2), min(1.0, clip ** 2 / g2), g2))
        scale = min(1.0, clip / math.sqrt(g2))
        W = [w - lr * scale * gl for w, gl in zip(W, g)]
    stats = np.array(stats)
    rec = {k: np.asarray(out["records"][k]) for k in ("loss_mean", "clip2_mean", "gb2_mean")}
    for k in range(1, len(plan)):
        blk = stats[plan[k - 1]:plan[k]].mean(0)
        np.testing.assert_allclose([rec["loss_mean"][k], rec["clip2_mean"][k], rec["gb2_mean"][k]], blk, rtol=1e-9)
    assert 0 < rec["clip2_mean"][1] < 1  # the clip is active in the first segment: the mean is not trivial
    np.testing.assert_allclose(np.asarray(out["w1"], float), W[0].T, rtol=1e-9)


def test_runs_where_cuts_each_run_to_its_own_records():
    """A part whose runs record on different plans keeps ``plan`` NaN-padded (load_results): runs_where / own_records
    give each run its own steps as coordinate and its own last record, never padding."""
    import xarray as xr

    from fa_jax.results import labelled_runs, runs_where

    nan = np.nan
    plan = np.array([[0, 10, 100, 1000], [0, 10, 100, nan], [0, 10, 100, 1000]])
    irr = np.array([[1.0, 0.9, 0.5, 0.2], [1.0, 0.95, 0.8, nan], [1.0, 0.8, 0.4, 0.1]], np.float32)
    part = xr.Dataset({"plan": (("run", "step"), plan), "records/irr": (("run", "step"), irr)},
                      coords={"run": [4, 5, 6], "part": ("run", ["phase"] * 3), "b": ("run", [8, 500, 8]),
                              "seed": ("run", [0, 0, 1])})
    got = list(labelled_runs(runs_where(part, b=500)))
    assert len(got) == 1 and got[0][0] == {"part": "phase", "b": 500, "seed": 0}
    r = got[0][1]
    assert r["step"].values.tolist() == [0, 10, 100] and "plan" not in r
    assert float(r["records/irr"].values[-1]) == np.float32(0.8)
    assert [lab["seed"] for lab, _ in labelled_runs(runs_where(part, b=8))] == [0, 1]
    assert [int(r["step"].values[-1]) for _, r in labelled_runs(part)] == [1000, 100, 1000]
