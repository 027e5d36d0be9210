"""The probability-sum read-out of a 10-class net (issue 16 §3), against independent references:

(a) F_lse = log sum_{J+} e^{f_j} - log sum_{J-} e^{f_j} equals the log-odds of the summed softmax probabilities,
    log(P+ / P-), computed from the probabilities in float64 numpy and, for logits so large that float64 softmax
    underflows, in 60-digit decimal arithmetic; its gradient is the per-side softmax (finite for huge logits);
(b) l2 PGD on the F_lse margin, as the experiment runs it (:func:`fa_jax.metrics.robustness.pgd` /
    ``robust_accuracy_curve``), mirrors the linear-model PGD tests of ``test_metrics_robustness.py``: on a 10-output
    net whose classes of a side share one input direction (f_j = <a_s, x> + c_j), F_lse is linear with the exact margin
    |F_lse(x)| / ||a_+ - a_-|| (different from the F_sum and F_max margins of the same net), and PGD is robust at
    0.99 of it and breaks every point at 1.01;
(c) the experiment's read-out list and dispatch: F_lse first (primary), F_sum / F_max as variants.
"""
from __future__ import annotations

import decimal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax.data.images import class_signs
from fa_jax.metrics import robustness as R

SIGNS = class_signs("odd_even", 10).astype(np.float64)  # +1 for the odd digits
# jitted: one program per call site and shape (eager, every primitive would compile its own tiny XLA program)
lse_readout = jax.jit(R.lse_readout)


# ----------------------------------------------------------------------------- (a) the read-out
def _log_odds_numpy(logits, signs):
    """log(sum_{J+} p_j / sum_{J-} p_j), p = softmax(f), float64 (shifted by the row max)."""
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return np.log(p[:, signs > 0].sum(1)) - np.log(p[:, signs < 0].sum(1))


def _log_odds_decimal(logits, signs, digits=60):
    """The same log-odds in decimal arithmetic (no underflow: exp(-1e4) is an ordinary Decimal)."""
    out = []
    with decimal.localcontext() as ctx:
        ctx.prec = digits
        for row in logits:
            e = [decimal.Decimal(float(v)).exp() for v in row]
            z = sum(e)
            pos = sum(ei / z for ei, s in zip(e, signs) if s > 0)
            neg = sum(ei / z for ei, s in zip(e, signs) if s < 0)
            out.append(float((pos / neg).ln()))
    return np.asarray(out)


def test_lse_is_log_odds_of_summed_probabilities(x64):
    rng = np.random.default_rng(0)
    logits = 3.0 * rng.standard_normal((32, 10))
    f = np.asarray(lse_readout(logits, SIGNS))
    np.testing.assert_allclose(f, _log_odds_numpy(logits, SIGNS), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(f, _log_odds_decimal(logits, SIGNS), rtol=1e-12, atol=1e-12)
    # log Z cancels: shifting every logit of a row by the same constant leaves F_lse unchanged
    shifted = np.asarray(lse_readout(logits + 50.0 * rng.standard_normal((32, 1)), SIGNS))
    np.testing.assert_allclose(shifted, f, rtol=1e-10, atol=1e-10)
    # it differs from the raw logit sum and from the max read-out (a different classifier, not a relabelling)
    fsum = logits @ SIGNS
    fmax = logits[:, SIGNS > 0].max(1) - logits[:, SIGNS < 0].max(1)
    assert np.max(np.abs(f - fsum)) > 1.0 and np.max(np.abs(f - fmax)) > 0.1
    # ... and lies between them in one known way: max <= lse <= max + log 5 per side
    assert np.all(f <= fmax + np.log(5) + 1e-12) and np.all(f >= fmax - np.log(5) - 1e-12)


@pytest.mark.parametrize("scale", [1e2, 1e4])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_lse_stable_for_large_logits(x64, scale, dtype):
    """Logits of size 1e2-1e4: float64 softmax underflows (e^-1000 = 0), the decimal reference does not; F_lse and
    its gradient stay finite and match, in float32 as the nets run and in float64."""
    rng = np.random.default_rng(1)
    logits = scale * rng.standard_normal((16, 10))
    logits[0, :] = scale  # a tie across the sides: F_lse = log 5 - log 5 = 0 exactly
    logits = np.asarray(logits.astype(np.dtype(dtype)), np.float64)  # the references see the logits the net sees
    ref = _log_odds_decimal(logits, SIGNS)
    f, g = jax.jit(lambda o, s: (R.lse_readout(o, s), jax.grad(lambda o: jnp.sum(R.lse_readout(o, s)))(o)))(
        jnp.asarray(logits, dtype), jnp.asarray(SIGNS, dtype))
    f, g = np.asarray(f), np.asarray(g)
    assert np.all(np.isfinite(f))
    rtol = 1e-6 if dtype == jnp.float32 else 1e-12
    np.testing.assert_allclose(f, ref, rtol=rtol, atol=rtol * scale)
    assert f[0] == 0.0
    # gradient: softmax within each side (+ for J+, - for J-), finite, no NaN from the masked -inf entries
    assert np.all(np.isfinite(g))
    gref = np.zeros_like(logits)
    for side in (1.0, -1.0):
        m = SIGNS == side
        z = logits[:, m] - logits[:, m].max(1, keepdims=True)
        gref[:, m] = side * np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(g, gref, atol=1e-6 if dtype == jnp.float32 else 1e-12)


def test_lse_ignores_zero_sign_outputs(x64):
    logits = np.random.default_rng(2).standard_normal((5, 4))
    signs = np.array([1.0, 0.0, -1.0, -1.0])
    f = np.asarray(lse_readout(logits, signs))
    ref = logits[:, 0] - np.log(np.exp(logits[:, 2]) + np.exp(logits[:, 3]))
    np.testing.assert_allclose(f, ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- (b) PGD on the F_lse margin
def _side_shared_problem(seed=0, n=40, d=20):
    """f_j(x) = <a_{s_j}, x> + c_j: F_lse(x) = <a_+ - a_-, x> + lse(c_+) - lse(c_-), exactly linear. Returns the
    net's pieces, labels y = sgn F_lse and the exact l2 margin |F_lse| / ||a_+ - a_-|| from the closed form."""
    rng = np.random.default_rng(seed)
    a_pos, a_neg = rng.standard_normal(d), rng.standard_normal(d)
    c = 2.0 * rng.standard_normal(10)
    kernel = np.where(SIGNS[None, :] > 0, a_pos[:, None], a_neg[:, None])  # (d, 10)
    x = 0.5 * rng.standard_normal((n, d))
    lse = lambda v: np.log(np.sum(np.exp(v)))
    f_exact = x @ (a_pos - a_neg) + lse(c[SIGNS > 0]) - lse(c[SIGNS < 0])
    y = np.sign(f_exact)
    r = np.abs(f_exact) / np.linalg.norm(a_pos - a_neg)
    # the other read-outs of the same net have other boundaries: their margins differ from r
    r_sum = np.abs(5 * (x @ (a_pos - a_neg)) + c @ SIGNS) / (5 * np.linalg.norm(a_pos - a_neg))
    assert np.max(np.abs(r_sum - r)) > 0.05
    return kernel, c, x, y, r


def _lse_margin(kernel, c, x, y):
    kernel, c, x, y, s = map(jnp.asarray, (kernel, c, x, y, SIGNS))

    def margin(delta):
        return y * R.lse_readout((x + delta) @ kernel + c, s)

    return margin


@jax.jit
def _lse_pgd(kernel, c, x, y, eps, key):
    """The F_lse margin at delta = 0, and full_ball_start + 40 PGD steps (one program for every radius); also the
    margin of the first success."""
    n, d = x.shape
    margin = _lse_margin(kernel, c, x, y)
    d0 = R.full_ball_start(key, n, d, eps, dtype=jnp.float64)
    robust, _, first = R.pgd(margin, lambda dd: -margin(dd), d0, eps, 40, 0.25 * eps)
    return margin(jnp.zeros((n, d))), robust, first, margin(first)


def test_pgd_on_lse_margin_matches_exact_margin(x64):
    kernel, c, x, y, r = _side_shared_problem()
    key = jax.random.PRNGKey(0)
    for factor, expect_robust in ((0.99, True), (1.01, False)):
        eps = (factor * r)[:, None]  # one radius per point
        m0, robust, first, margin_first = _lse_pgd(kernel, c, x, y, eps, key)
        np.testing.assert_allclose(np.asarray(m0), r * np.linalg.norm(kernel[:, 1] - kernel[:, 0]), rtol=1e-10)
        robust = np.asarray(robust)
        assert np.all(robust == expect_robust), (factor, r[robust != expect_robust])
        if not expect_robust:
            assert np.all(np.asarray(margin_first) <= 0)
            assert np.all(np.linalg.norm(np.asarray(first), axis=1) <= np.asarray(eps)[:, 0] * (1 + 1e-9))


def test_robust_accuracy_curve_on_lse_margin(x64):
    """The experiment's entry point (``robust_accuracy_curve``, 2 random starts, 40 steps) on the F_lse margin:
    never breaks a point whose exact margin exceeds eps, always breaks one whose margin is below eps/1.05."""
    kernel, c, x, y, r = _side_shared_problem(seed=1, n=60)
    n, d = x.shape
    grid = np.linspace(0.0, 1.5 * float(np.max(r)), 9)

    @jax.jit  # one program
    def curve(kernel, c, x, y, grid):
        margin = _lse_margin(kernel, c, x, y)
        starts = jnp.stack([R.full_ball_start(jax.random.fold_in(jax.random.PRNGKey(2), i), n, d, 1.0, jnp.float64)
                            for i in range(2)])
        return R.robust_accuracy_curve(margin, lambda dd: -margin(dd), grid, starts, steps=40)

    acc, robust = curve(kernel, c, x, y, grid)
    robust = np.asarray(robust)
    for i, e in enumerate(np.asarray(grid)):
        assert np.all(robust[i][r > e])
        assert not np.any(robust[i][r < e / 1.05])
    np.testing.assert_allclose(np.asarray(acc), robust.mean(1))


# ----------------------------------------------------------------------------- (c) the experiment's read-outs
def test_experiment_readouts_primary_lse():
    from fa_jax.experiments import feature_averaging_real as E
    from fa_jax.models.image_nets import ImageNet

    multi = E.FARealRun(model=ImageNet(head="multiclass", n_classes=10))
    binary = E.FARealRun(model=ImageNet(head="binary", n_classes=10))
    assert E.readouts(multi) == ("lse", "sum", "max") and E.readouts(binary) == ("binary",)
    assert set(E.attacks_of(multi)) == {(r, o) for r in ("lse", "sum", "max") for o in ("margin", "ce")}
    logits = np.random.default_rng(3).standard_normal((6, 10))
    lj = logits.astype(np.float32)
    readout = jax.jit(E.readout, static_argnums=2)
    np.testing.assert_allclose(np.asarray(readout(lj, SIGNS.astype(np.float32), "lse")),
                               _log_odds_numpy(logits, SIGNS), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(readout(lj, SIGNS.astype(np.float32), "sum")), logits @ SIGNS,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(readout(lj, SIGNS.astype(np.float32), "max")),
                               logits[:, SIGNS > 0].max(1) - logits[:, SIGNS < 0].max(1), rtol=1e-5, atol=1e-5)
