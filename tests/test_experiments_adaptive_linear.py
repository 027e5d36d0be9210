"""The online linear-regression run (fa_jax.experiments.adaptive_linear) against float64 references: signGD with
exact gradients step for step against theory.simulate_signgd, GD's exact invariance of the zero-variance
frequency with sampled batches, the T1 evaluator against the numpy closed form, and the online trainer path."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fa_jax.data.natural import NaturalSignal
from fa_jax.experiments.adaptive_linear import AdaptiveLinearRun, adv_risk_l2, run_adaptive_linear
from fa_jax.optim import OptimConfig
from fa_jax.sweep import run_sweep
from fa_jax.theory import sgd_vs_adaptive as T
from fa_jax.trainer import TrainConfig, train


def _cfg(name="signgd", steps=800, **kw):
    return AdaptiveLinearRun(optim=OptimConfig(name=name, lr=0.01), train=TrainConfig(steps=steps, n_records=12),
                             batch=200, eval_batch=100, **kw).validate()


def test_exact_signgd_equals_float64_reference(x64):
    cfg = _cfg(exact=True)
    r = run_sweep(run_adaptive_linear, [cfg])[0]
    ref = T.simulate_signgd(np.array(cfg.w0), [5.0, 10.0, 0.0], [0.1, 0.05, 0.0], 0.01, cfg.train.steps)
    plan = np.asarray(r["plan"])
    wt = np.asarray(r["records"]["e_tilde"]) + np.array([5.0, 10.0, 0.0])
    np.testing.assert_allclose(wt, ref[plan], atol=1e-9)


def test_dct_basis_signgd_equals_reference_and_keeps_w2(x64):
    cfg = _cfg(exact=True, param_basis="dct")
    r = run_sweep(run_adaptive_linear, [cfg])[0]
    ref = T.simulate_signgd(np.array(cfg.w0), [5.0, 10.0, 0.0], [0.1, 0.05, 0.0], 0.01, cfg.train.steps,
                            sign_basis="dct")
    np.testing.assert_allclose(np.asarray(r["w_tilde"]), ref[-1], atol=1e-9)
    assert float(r["w_tilde"][2]) == cfg.w0[2]


def test_gd_sampled_batches_keep_the_irrelevant_frequency(x64):
    r = run_sweep(run_adaptive_linear, [_cfg("gd", steps=300)])[0]
    e2 = np.asarray(r["records"]["e_tilde"])[:, 2]
    np.testing.assert_allclose(e2, e2[0], atol=1e-13)
    assert float(r["records"]["std_risk"][-1]) < float(r["records"]["std_risk"][0])


def test_adv_risk_evaluator_matches_closed_form(x64):
    rng = np.random.default_rng(0)
    for _ in range(5):
        rs, wn, eps = rng.uniform(0, 2), rng.uniform(0, 5), rng.uniform(0, 3)
        np.testing.assert_allclose(float(adv_risk_l2(jnp.float64(rs), jnp.float64(wn), eps)),
                                   T.adv_risk(rs, wn, eps), rtol=1e-13)
    # P6: zero standard risk -> eps^2 ||w||^2 / 2 exactly
    assert float(adv_risk_l2(jnp.float64(0.0), jnp.float64(3.0), 2.0)) == T.adv_risk_zero_std(3.0, 2.0)


def test_records_risks_agree_with_numpy(x64):
    r = run_sweep(run_adaptive_linear, [_cfg("adam", steps=200)])[0]
    wt = np.asarray(r["w_tilde"])
    st, ws = np.array([0.1, 0.05, 0.0]), np.array([5.0, 10.0, 0.0])
    np.testing.assert_allclose(float(r["records"]["std_risk"][-1]), T.std_risk(wt, ws, st), rtol=1e-12)
    np.testing.assert_allclose(float(r["records"]["adv_risk"][-1]),
                               T.adv_risk_linear(wt, ws, st, np.sqrt(2.0)), rtol=1e-12)
    # the Monte-Carlo R_a and its standard error on the run's evaluation samples (key split(PRNGKey(seed), 3)[2]),
    # written from the definition: samples 1/2 (|<e, xt>| + eps ||w||)^2, mean and sd / sqrt(n)
    k_eval = jax.random.split(jax.random.PRNGKey(0), 3)[2]
    z = np.asarray(jax.random.normal(k_eval, (100, 3), jnp.float64))
    v = 0.5 * (np.abs((z * st) @ (wt - ws)) + np.sqrt(2.0) * np.linalg.norm(wt)) ** 2
    np.testing.assert_allclose(float(r["records"]["adv_risk_mc"][-1]), v.mean(), rtol=1e-12)
    np.testing.assert_allclose(float(r["records"]["adv_risk_mc_se"][-1]), v.std(ddof=1) / 10.0, rtol=1e-10)


def test_online_trainer_draws_fold_in_key_t_batches(x64):
    """train(sample_fn=...) uses the batch sample_fn(fold_in(key, t)) at step t (manual float64 loop)."""
    key = jax.random.PRNGKey(3)
    target = np.array([1.0, -2.0])

    def sample_fn(k):
        x = jax.random.normal(k, (5, 2), jnp.float64)
        return x, x @ jnp.asarray(target)

    def loss(p, x, y):
        return 0.5 * (x @ p["w"] - y) ** 2

    _, rec, bad = train(loss, {"w": jnp.zeros(2)}, None, None, optax.sgd(0.1), plan=(0, 2, 5), key=key,
                        sample_fn=sample_fn, record_fn=lambda p: p["w"])
    w = np.zeros(2)
    want = [w.copy()]
    for t in range(5):
        x, y = (np.asarray(a) for a in sample_fn(jax.random.fold_in(key, t)))
        w = w - 0.1 * x.T @ (x @ w - y) / len(x)
        if t + 1 in (2, 5):
            want.append(w.copy())
    np.testing.assert_allclose(np.asarray(rec), np.stack(want), rtol=1e-12)
    assert int(bad) == -1
    with pytest.raises(ValueError, match="key"):
        train(loss, {"w": jnp.zeros(2)}, None, None, optax.sgd(0.1), plan=(0, 1), sample_fn=sample_fn)


@pytest.mark.parametrize("change, pattern", [
    ({"optim": OptimConfig(name="sgd", lr=0.01, batch_size=8)}, r"optim\.batch_size"),
    ({"param_basis": "fourier"}, r"param_basis"),
    ({"w0": (0.1, 0.2)}, r"w0"),
    ({"batch": 0}, r"batch"),
    ({"data": NaturalSignal(d=4, frac_irrelevant=0.9)}, r"data\.frac_irrelevant"),
])
def test_bad_configs(change, pattern):
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(AdaptiveLinearRun(), **change).validate()
