"""Subspace DeepFool (spec hold_me_tight.md D1/P1, P12): closed forms on linear classifiers (float64), censoring,
batched == one-sample, censored medians."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import relu_net_and_bank
from fa_jax.metrics import margins as M
from fa_jax.subspaces import Bank, as_jax, dct_basis_images, dct_block_bank, project, random_subspaces

O = 0.02


def _linear_binary(w, b):
    return M.two_class(lambda x: jnp.sum(x * w) + b)


def test_binary_linear_closed_form_full_and_subspace(x64):
    rng = np.random.default_rng(0)
    d = 12
    w = rng.standard_normal(d)
    b = 0.3
    x = rng.standard_normal((5, d))
    basis = random_subspaces(1, 1, 4, np.eye(d))[0]  # (d, 4)
    p = basis @ basis.T
    for proj, pm in ((lambda v: v, np.eye(d)), (lambda v: basis @ (basis.T @ v), p)):
        run = jax.jit(lambda x: M.deepfool_batch(_linear_binary(jnp.asarray(w), b), x, proj,  # noqa: B023
                                                 overshoot=O))  # called at once, in this iteration
        out = run(x)
        f = x @ w + b
        expected = (1 + O) * np.abs(f) / np.linalg.norm(pm @ w)  # D1, independent numpy
        np.testing.assert_allclose(np.asarray(out["margin"]), expected, rtol=1e-10)
        assert np.all(np.asarray(out["iters"]) == 1) and np.all(np.asarray(out["flipped"]))
        # the returned perturbation lies in S and is what the margin measures
        pert = np.asarray(out["perturbation"])
        np.testing.assert_allclose(pert @ pm, pert, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(pert, axis=1), expected, rtol=1e-12)


def test_multiclass_linear_closed_form_dct_block(x64):
    rng = np.random.default_rng(1)
    shape = (8, 8, 1)
    d = 64
    wmat = rng.standard_normal((5, d))
    bias = rng.standard_normal(5)
    x = rng.standard_normal((6, *shape))

    def logits(xi):
        return jnp.asarray(wmat) @ xi.reshape(-1) + jnp.asarray(bias)

    bank, starts = dct_block_bank(shape[:2], 4, 2)
    bank = as_jax(bank)
    out = jax.jit(lambda x: M.deepfool_bank(logits, x, bank, project, overshoot=O, n_candidates=10))(x)
    out = jax.tree.map(np.asarray, out)  # numpy: indexing it below compiles nothing
    # independent reference: dense DCT basis of each block, min_k |a_k| / ||P w_k|| over k != c0
    basis = dct_basis_images(shape).reshape(d, 8, 8)
    for bi, s in enumerate(starts):
        cols = basis[:, s:s + 4, s:s + 4].reshape(d, -1)
        pm = cols @ cols.T
        for n in range(x.shape[0]):
            f = wmat @ x[n].reshape(-1) + bias
            c0 = np.argmax(f)
            dist = [abs(f[k] - f[c0]) / np.linalg.norm(pm @ (wmat[k] - wmat[c0])) for k in range(5) if k != c0]
            assert float(out["margin"][bi, n]) == pytest.approx((1 + O) * min(dist), rel=1e-10)
            assert int(out["iters"][bi, n]) == 1 and bool(out["flipped"][bi, n])
            assert int(out["label"][bi, n]) == c0


def test_orthogonal_subspace_is_censored_infinite(x64):
    d = 6
    w = jnp.asarray([1.0, 2.0, 0, 0, 0, 0])
    basis = np.zeros((d, 2))
    basis[3, 0] = basis[4, 1] = 1.0  # P w = 0
    out = jax.jit(lambda x: M.deepfool_batch(_linear_binary(w, 0.5), x, lambda v: jnp.asarray(basis) @ (
        jnp.asarray(basis).T @ v)))(np.ones((3, d)))
    assert np.all(np.isinf(np.asarray(out["margin"]))) and not np.any(np.asarray(out["flipped"]))
    s = M.censored_median(out["margin"], out["flipped"])
    assert s["lower_bound"] and s["fail_rate"] == 1.0


def test_max_iter_run_is_a_censored_lower_bound(x64):
    # F = -exp(v.x) < 0 everywhere: DeepFool walks towards the asymptote and never flips
    v = jnp.asarray([0.0, 2.0, 0.0])
    out = jax.jit(lambda x0: M.deepfool_subspace(M.two_class(lambda x: -jnp.exp(x @ v)), x0, lambda r: r,
                                                 max_iter=7))(np.zeros(3))
    assert int(out["iters"]) == 7 and not bool(out["flipped"])
    # each step has length |F| / ||grad F|| = 1 / ||v||: the bound is (1 + o) * 7 / 2, finite, flagged censored
    assert float(out["margin"]) == pytest.approx((1 + O) * 7 / 2, rel=1e-12)


def test_batched_bank_equals_one_sample_runs():
    _, shape, logits, x, bank = relu_net_and_bank()
    batched = jax.tree.map(np.asarray, jax.jit(lambda xx: M.deepfool_bank(logits, xx, bank, project, max_iter=30))(x))
    one = jax.jit(lambda xi, b: M.deepfool_subspace(logits, xi, lambda v: project(b, v), max_iter=30))
    x, bases = np.asarray(x), np.asarray(bank.bases)  # numpy: the per-item indexing below compiles nothing
    for si in range(2):
        item = Bank(bases=bases[si])
        for n in range(4):
            r = one(x[n], item)
            # float32: the batched and the one-sample programs fuse (reassociate) differently, and DeepFool's steps
            # carry the difference (1.1e-6 measured at XLA:CPU level 0): 1e-5, far below any margin difference
            assert float(batched["margin"][si, n]) == pytest.approx(float(r["margin"]), rel=1e-5)
            assert int(batched["iters"][si, n]) == int(r["iters"])
            assert bool(batched["flipped"][si, n]) == bool(r["flipped"])
    assert np.asarray(batched["iters"]).max() > 1  # a nonlinear net needs several steps somewhere


def test_censored_median_rules():
    m = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    ok = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], bool)
    s = M.censored_median(m, ok)
    np.testing.assert_allclose(s["median"], [3.0, 3.0, 3.0])
    # row 1: the censored values lie above the median -> exact; row 2: a censored 1.0 could be anything >= 1
    assert list(s["lower_bound"]) == [False, False, True]
    np.testing.assert_allclose(s["median_upper"], [3.0, 3.0, 4.0])
    np.testing.assert_allclose(s["fail_rate"], [0.0, 0.4, 0.2])
    assert M.format_median(3.0, True) == ">= 3" and M.format_median(0.5, False) == "0.5"
    s = M.censored_median(m[:1], np.array([[1, 1, 0, 0, 0]], bool))  # >= 50 % failures: always a lower bound
    assert bool(s["lower_bound"][0])
