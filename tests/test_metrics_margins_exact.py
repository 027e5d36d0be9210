"""Refined and exact margins (issue 16 Sec. 1, spec hold_me_tight.md 2.1 / D1): DeepFool + segment bisection and the
two-sided 1-D line search, against independent float64 numpy references (dense scans, closed forms)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import relu_net_and_bank
from fa_jax.metrics import margins as M
from fa_jax.subspaces import Bank, project, random_subspaces

O = 0.02
RTOL = 1e-3


# ----------------------------------------------------------------------------- independent numpy references
def _np_relu_net(w1, b1, w2, b2):
    def f(x):  # x (n, D) -> (n, C)
        return np.maximum(x @ w1 + b1, 0.0) @ w2 + b2

    return f


def _np_first_flip(f_np, x0, u, r_max, n=20_000, n_fine=20_000):
    """First s in (0, r_max] with argmax f(x0 + s u) != argmax f(x0) on a dense grid of step r_max / n, refined by
    a second dense grid of n_fine points inside the first flipped cell (resolution r_max / (n n_fine)); +inf if
    none. Float64 numpy, written from the definition."""
    c0 = int(np.argmax(f_np(x0[None])[0]))

    def first(s):
        hit = np.nonzero(np.argmax(f_np(x0[None] + s[:, None] * u[None]), axis=1) != c0)[0]
        return float(s[hit[0]]) if hit.size else float("inf")

    s1 = first(np.linspace(0.0, r_max, n + 1)[1:])
    if not np.isfinite(s1):
        return s1
    return first(np.linspace(s1 - r_max / n, s1, n_fine + 1)[1:])


def _relu_net(seed, d=6, h=24, c=3):
    rng = np.random.default_rng(seed)
    w1, b1 = rng.standard_normal((d, h)) / np.sqrt(d), 0.3 * rng.standard_normal(h)
    w2, b2 = rng.standard_normal((h, c)) / np.sqrt(h), 0.1 * rng.standard_normal(c)
    j = [jnp.asarray(a) for a in (w1, b1, w2, b2)]

    def logits(x):
        return jax.nn.relu(x @ j[0] + j[1]) @ j[2] + j[3]

    return logits, _np_relu_net(w1, b1, w2, b2)


def _bracket_ok(out):
    lo, hi, m = (np.asarray(out[k], np.float64) for k in ("margin_lo", "margin", "margin_hi"))
    ok = np.asarray(out["flipped"])
    assert np.all(lo[ok] <= hi[ok]) and np.all(m[ok] == hi[ok])
    assert np.all(hi[ok] - lo[ok] <= RTOL * lo[ok] * (1 + 1e-9))


# ----------------------------------------------------------------------------- piecewise-linear ReLU net
def test_line_margin_equals_dense_scan_on_relu_net(x64):
    logits, f_np = _relu_net(0)
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 6))
    dirs = rng.standard_normal((3, 6))
    r_max = 4.0
    out = jax.jit(lambda a, b: M.line_margin_bank(logits, a, b, max_radius=r_max, rtol=RTOL))(
        jnp.asarray(x), jnp.asarray(dirs))
    _bracket_ok(out)
    n_flip = 0
    for i, d in enumerate(dirs):
        u = d / np.linalg.norm(d)
        for n in range(x.shape[0]):
            plus, minus = _np_first_flip(f_np, x[n], u, r_max), _np_first_flip(f_np, x[n], -u, r_max)
            ref = min(plus, minus)
            got = float(out["margin"][i, n])
            if np.isfinite(ref):
                n_flip += 1
                assert bool(out["flipped"][i, n])
                assert got == pytest.approx(ref, rel=RTOL)  # dense-grid step 2e-5
                assert int(out["sign"][i, n]) == (1 if plus < minus else -1)
            else:
                assert not bool(out["flipped"][i, n]) and got == r_max  # censored: a lower bound R
    assert n_flip >= 12  # the test exercises the refined path


def test_deepfool_refined_equals_dense_scan_along_its_direction(x64):
    logits, f_np = _relu_net(1)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 6))
    b = random_subspaces(5, 1, 4, np.eye(6))[0]
    refined = jax.jit(lambda a, pj: M.deepfool_refined_batch(logits, a, lambda v: pj @ v, overshoot=O, rtol=RTOL))
    for pm in (np.eye(6), b @ b.T):  # the full space and a random 4-D subspace
        out = refined(jnp.asarray(x), jnp.asarray(pm))
        _bracket_ok(out)
        ok = np.asarray(out["flipped"])
        assert ok.sum() >= 6
        for n in np.nonzero(ok)[0]:
            p = np.asarray(out["perturbation"][n])
            np.testing.assert_allclose(pm @ p, p, atol=1e-12)  # still inside S
            upper = float(out["deepfool_upper"][n])
            assert np.linalg.norm(p) == pytest.approx(float(out["margin"][n]), rel=1e-12)
            ref = _np_first_flip(f_np, x[n], p / np.linalg.norm(p), upper * (1 + 1e-9))
            assert float(out["margin"][n]) == pytest.approx(ref, rel=RTOL)
            assert float(out["margin"][n]) <= upper * (1 + 1e-12)


# ----------------------------------------------------------------------------- DeepFool overshoots
def _kinked(u, slope0, kink, steep, offset, side=1.0):
    """Binary score F = slope0 s + steep relu(side (s - kink)) - offset, s = u.x: flat at s = 0, steep past the
    kink (a two-unit ReLU net)."""
    uj = jnp.asarray(u)
    return M.two_class(lambda x: slope0 * (x @ uj) + steep * jax.nn.relu(side * (x @ uj - kink)) - offset)


def test_refined_removes_deepfool_overshoot(x64):
    rng = np.random.default_rng(3)
    u = rng.standard_normal(4)
    u /= np.linalg.norm(u)
    x = rng.standard_normal((5, 4))
    x -= np.outer(x @ u, u)  # s = u.x = 0 at every point
    fn = _kinked(u, 0.5, 0.4, 5.0, 0.45)
    exact = (0.45 + 5.0 * 0.4) / 5.5  # 0.5 s + 5 (s - 0.4) = 0.45, for s > 0.4
    b = np.linalg.qr(np.stack([u, rng.standard_normal(4)], 1))[0]
    refined = jax.jit(lambda a, pj: M.deepfool_refined_batch(fn, a, lambda v: pj @ v, overshoot=O))
    for pm in (np.eye(4), b @ b.T):
        out = refined(jnp.asarray(x), jnp.asarray(pm))
        upper = np.asarray(out["deepfool_upper"])
        assert np.all(upper / exact > 1.1)  # raw DeepFool overshoots (here 2x: the first step jumps to s = 0.9)
        np.testing.assert_allclose(upper, (1 + O) * 0.9, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(out["margin"]), exact, rtol=RTOL)
        assert np.all(np.asarray(out["margin_lo"]) <= exact) and np.all(np.asarray(out["margin_hi"]) >= exact)
        _bracket_ok(out)
    lm = jax.jit(lambda a: M.line_margin_batch(fn, a, jnp.asarray(u), max_radius=3.0, n_scan=32))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(lm["margin"]), exact, rtol=RTOL)
    assert np.all(np.asarray(lm["sign"]) == 1)


def test_line_margin_is_two_sided():
    # F = 0.1 s - 0.2 + 3 relu(-s - 0.5): the gradient points to +s (crossing at s = 2), the nearest crossing is at
    # s = -1.7 / 2.9 on the other side, which a gradient-sign search never sees
    u = np.array([0.6, 0.8], np.float32)
    fn = _kinked(u, 0.1, -0.5, 3.0, 0.2, side=-1.0)
    x = jnp.zeros((1, 2), jnp.float32)
    df = jax.jit(lambda a: M.deepfool_refined_batch(fn, a, lambda v: v))(x)
    assert float(df["deepfool_upper"][0]) == pytest.approx((1 + O) * 2.0, rel=1e-5)
    assert float(df["margin"][0]) == pytest.approx(2.0, rel=RTOL)  # exact along its own (wrong-side) direction
    lm = jax.jit(lambda a: M.line_margin_batch(fn, a, jnp.asarray(u), max_radius=5.0))(x)
    assert float(lm["margin"][0]) == pytest.approx(1.7 / 2.9, rel=RTOL) and int(lm["sign"][0]) == -1
    assert float(lm["margin_plus"][0]) == pytest.approx(2.0, rel=RTOL)
    assert float(lm["margin_minus"][0]) == float(lm["margin"][0])
    np.testing.assert_allclose(np.asarray(lm["perturbation"][0]), -float(lm["margin"][0]) * u, rtol=1e-6)


# ----------------------------------------------------------------------------- D1 and censoring
def test_linear_closed_form_d1(x64):
    rng = np.random.default_rng(4)
    d = 10
    w, b = rng.standard_normal(d), 0.3
    x = rng.standard_normal((6, d))
    fn = M.two_class(lambda z: jnp.sum(z * jnp.asarray(w)) + b)
    basis = random_subspaces(2, 1, 3, np.eye(d))[0]
    pm = basis @ basis.T
    exact = np.abs(x @ w + b) / np.linalg.norm(pm @ w)  # D1 without overshoot
    pj = jnp.asarray(pm)
    out = jax.jit(lambda a: M.deepfool_refined_batch(fn, a, lambda v: pj @ v, overshoot=O))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(out["deepfool_upper"]), (1 + O) * exact, rtol=1e-10)  # raw D1, exact
    assert np.all(np.asarray(out["iters"]) == 1) and np.all(np.asarray(out["flipped"]))
    assert np.all(np.asarray(out["margin_lo"]) <= exact) and np.all(exact <= np.asarray(out["margin_hi"]))
    np.testing.assert_allclose(np.asarray(out["margin"]), exact, rtol=RTOL)
    _bracket_ok(out)
    v = rng.standard_normal(d)
    # fixed-step scan: every crossing lies in the first cell (0, R / 64], bisected from lo = 0
    lm = jax.jit(lambda a: M.line_margin_batch(fn, a, jnp.asarray(v), max_radius=1e3, scan="linear"))(
        jnp.asarray(x))
    ex_line = np.abs(x @ w + b) / abs(w @ v / np.linalg.norm(v))
    assert np.all(np.asarray(lm["margin_lo"]) <= ex_line) and np.all(ex_line <= np.asarray(lm["margin_hi"]))
    np.testing.assert_allclose(np.asarray(lm["margin"]), ex_line, rtol=RTOL)
    # the crossing lies on the side where w.(sign v) reduces |f|
    np.testing.assert_array_equal(np.asarray(lm["sign"]), -np.sign((x @ w + b) * (w @ v)))


def test_censored_cases_are_flagged(x64):
    w = jnp.asarray([1.0, 2.0, 0.0, 0.0])
    fn = M.two_class(lambda z: jnp.sum(z * w) + 0.5)
    x = jnp.ones((3, 4))
    line = jax.jit(lambda d, r: M.line_margin_batch(fn, x, d, max_radius=r))
    # direction orthogonal to w: never flips within R -> margin R (lower bound), hi = inf
    lm = line(jnp.asarray([0.0, 0.0, 1.0, 0.0]), 7.0)
    assert not np.any(np.asarray(lm["flipped"])) and np.all(np.asarray(lm["margin"]) == 7.0)
    assert np.all(np.isinf(np.asarray(lm["margin_hi"]))) and np.all(np.asarray(lm["sign"]) == 0)
    # a crossing beyond R (|f| / |w.u| = 3.5 / 2 = 1.75 > R) is censored too
    lm = line(jnp.asarray([0.0, 1.0, 0.0, 0.0]), 1.5)
    assert not np.any(np.asarray(lm["flipped"])) and np.all(np.asarray(lm["margin"]) == 1.5)
    # zero direction: +inf, censored (as P w = 0)
    lm = line(jnp.zeros(4), 10.0)
    assert not np.any(np.asarray(lm["flipped"])) and np.all(np.isinf(np.asarray(lm["margin"])))
    # DeepFool censoring unchanged: P w = 0 -> +inf; max_iter without a flip -> its (finite) lower bound
    pj = jnp.diag(jnp.asarray([0.0, 0.0, 1.0, 1.0]))
    out = jax.jit(lambda a: M.deepfool_refined_batch(fn, a, lambda v: pj @ v))(x)
    assert not np.any(np.asarray(out["flipped"])) and np.all(np.isinf(np.asarray(out["margin"])))
    v = jnp.asarray([0.0, 2.0, 0.0])
    out = jax.jit(lambda a: M.deepfool_refined(M.two_class(lambda z: -jnp.exp(z @ v)), a, lambda r: r, max_iter=7))(
        jnp.zeros(3))
    assert not bool(out["flipped"]) and int(out["iters"]) == 7
    assert float(out["margin"]) == pytest.approx((1 + O) * 7 / 2, rel=1e-12) == float(out["deepfool_upper"])
    assert float(out["margin_lo"]) == float(out["margin"]) and np.isinf(float(out["margin_hi"]))
    s = M.censored_median(np.asarray(lm["margin"])[None], np.asarray(lm["flipped"])[None])
    assert bool(s["lower_bound"][0])


# ----------------------------------------------------------------------------- batched == one sample, jit
def test_batched_equals_one_sample_jit():
    rng, shape, logits, x, bank = relu_net_and_bank()
    kw = {"max_iter": 30}
    batched = jax.jit(lambda xx, rt: M.deepfool_refined_bank(logits, xx, bank, project, rtol=rt, **kw))(x, RTOL)
    one = jax.jit(lambda xi, b: M.deepfool_refined(logits, xi, lambda v: project(b, v), **kw))
    dirs = jnp.asarray(rng.standard_normal((3, *shape)), jnp.float32)
    lb = jax.jit(lambda xx, r: M.line_margin_bank(logits, xx, dirs, max_radius=r))(x, 20.0)
    lone = jax.jit(lambda xi, d: M.line_margin(logits, xi, d, max_radius=20.0))
    keys = ("margin", "margin_lo", "margin_hi", "deepfool_upper", "flipped", "iters", "bisect_iters")
    for si in range(2):
        item = Bank(bases=bank.bases[si])
        for n in range(4):
            r = one(x[n], item)
            for k in keys:
                assert float(batched[k][si, n]) == pytest.approx(float(r[k]), rel=1e-5), k
    for di in range(3):
        for n in range(4):
            r = lone(x[n], dirs[di])
            for k in ("margin", "margin_lo", "margin_hi", "flipped", "sign", "margin_plus", "margin_minus"):
                assert float(lb[k][di, n]) == pytest.approx(float(r[k]), rel=1e-5), k
    assert np.asarray(batched["flipped"]).any() and np.asarray(lb["flipped"]).any()
    assert np.all(np.asarray(batched["margin"]) <= np.asarray(batched["deepfool_upper"]) * (1 + 1e-6))
