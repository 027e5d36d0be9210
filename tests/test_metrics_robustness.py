"""fa_jax.metrics.robustness against closed forms and independent references:

(a) full-dimensional l2 PGD on a linear model vs its exact margin |F(x)|/||w||;
(b) reduced-coordinate PGD == full-dimensional PGD step by step for a random two-layer ReLU net;
(c) the exact directional flip radius of the idealised feature-averaging net (spec G1) vs sqrt(d/k), a closed form
    and an independent float64 numpy root-finder;
(d) PGD on the idealised FA net at huge margins (the sigmoid-underflow pitfall) still reaches sqrt(d/k);
(e) ``crossing`` (r50) on hand-made curves, read-outs, zero gradients.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax.data.clusters import cluster_signs, make_centres
from fa_jax.losses import logistic
from fa_jax.metrics import robustness as R
from fa_jax.models.two_layer import (
    TwoLayerNet,
    apply_two_layer,
    init_two_layer,
    readout_matrix,
)
from fa_jax.theory import feature_averaging as th

# Every test runs its JAX part as a few jitted programs (shapes shared between tests where they can be): eager
# calls would compile one tiny XLA program per primitive and shape, the bulk of this file's CPU time.
crossing = jax.jit(R.crossing)
full_ball_start = jax.jit(R.full_ball_start, static_argnames=("n", "dim", "dtype"))
reduce_two_layer = jax.jit(R.reduce_two_layer)


# ----------------------------------------------------------------------------- (a) linear model
def _linear_problem(seed=0, n=40, d=20):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d)
    b = 0.3
    x = rng.standard_normal((n, d))
    f = x @ w + b
    y = np.sign(f)
    r = np.abs(f) / np.linalg.norm(w)  # exact l2 distance to the decision boundary
    return w, b, x, y, r


def _linear_fns(w, b, x, y, objective):
    w, x, y = map(jnp.asarray, (w, x, y))

    def margin(delta):
        return y * ((x + delta) @ w + b)

    if objective == "margin":
        return margin, lambda d: -margin(d)
    return margin, lambda d: logistic(((x + d) @ w + b), y)


@functools.partial(jax.jit, static_argnames=("objective", "steps"))
def _linear_pgd(w, b, x, y, eps, key, *, objective, steps):
    """full_ball_start + pgd on the linear problem (one program for both radii); also margin(first success)."""
    n, d = x.shape
    margin, loss = _linear_fns(w, b, x, y, objective)
    d0 = R.full_ball_start(key, n, d, eps, dtype=jnp.float64)
    robust, final, first = R.pgd(margin, loss, d0, eps, steps, 0.25 * eps)
    return d0, robust, final, first, margin(first)


@pytest.mark.parametrize("objective", ["margin", "logistic"])
def test_pgd_linear_model_matches_exact_margin(x64, objective):
    w, b, x, y, r = _linear_problem()
    key = jax.random.PRNGKey(0)
    steps = 40
    for factor, expect_robust in ((0.99, True), (1.01, False)):
        eps = (factor * r)[:, None]  # one radius per point
        d0, robust, final, first, margin_first = _linear_pgd(w, b, x, y, eps, key, objective=objective,
                                                             steps=steps)
        assert np.all(np.linalg.norm(np.asarray(d0), axis=1) <= np.asarray(eps)[:, 0] * (1 + 1e-12))
        robust = np.asarray(robust)
        assert np.all(robust == expect_robust), (factor, r[robust != expect_robust])
        assert np.all(np.linalg.norm(np.asarray(final), axis=1) <= np.asarray(eps)[:, 0] * (1 + 1e-9))
        if not expect_robust:
            # the recorded first success is a real adversarial example inside the ball
            assert np.all(np.asarray(margin_first) <= 0)
            assert np.all(np.linalg.norm(np.asarray(first), axis=1) <= np.asarray(eps)[:, 0] * (1 + 1e-9))
            # and PGD converged to the optimal direction -y w/||w||
            cosv = -(np.asarray(final) @ w) * y / (np.linalg.norm(np.asarray(final), axis=1) * np.linalg.norm(w))
            assert np.all(cosv > 0.99)


def _unit_starts(key, restarts, n, dim, dtype=jnp.float32):
    return jnp.stack([R.full_ball_start(jax.random.fold_in(key, i), n, dim, 1.0, dtype) for i in range(restarts)])


@functools.partial(jax.jit, static_argnames=("restarts", "steps"))
def _linear_curve(w, b, x, y, grid, key, *, restarts, steps):
    margin, loss = _linear_fns(w, b, x, y, "margin")
    starts = _unit_starts(key, restarts, *x.shape, jnp.float64)
    return R.robust_accuracy_curve(margin, loss, grid, starts, steps=steps)


def test_robust_accuracy_curve_linear_full_dim(x64):
    w, b, x, y, r = _linear_problem(seed=1, n=60)
    n = x.shape[0]
    grid = np.linspace(0.0, 1.5 * float(np.max(r)), 9)
    acc, robust = _linear_curve(w, b, x, y, grid, jax.random.PRNGKey(2), restarts=2, steps=40)
    acc, robust = np.asarray(acc), np.asarray(robust)
    assert acc.shape == (9,) and robust.shape == (9, n)
    for i, e in enumerate(np.asarray(grid)):
        truly_robust = r > e
        surely_broken = r < e / 1.05  # PGD (40 steps of 2.5 eps/40) must find these
        assert np.all(robust[i][surely_broken] == False)
        assert np.all(robust[i][truly_robust]), "PGD cannot break a point whose margin exceeds eps"
    np.testing.assert_allclose(acc, np.mean(np.asarray(robust), axis=1))
    lo = np.mean(r[None, :] > np.asarray(grid)[:, None], axis=1)
    hi = np.mean(r[None, :] >= np.asarray(grid)[:, None] / 1.05, axis=1)
    assert np.all(lo <= acc + 1e-6) and np.all(acc <= hi + 1e-6)


def test_robust_accuracy_curve_skips_repeated_radii():
    """A grid padded by repeating its last radius (n_eps distinct, traced, one value per vmapped run): the curve
    equals the whole grid's attack radius by radius (bitwise: the same attack), whether n_eps ends in a full batch,
    in the remainder batch or is the whole grid; and only the batches holding a distinct radius run (PGD's margin
    calls counted by a callback: 2 of 4 full batches plus the remainder for n_eps = 9 and 16)."""
    w, b, x, y, r = _linear_problem(seed=3, n=30)
    size, batch, steps = 37, 8, 6  # 4 full batches of 8 and a remainder of 5
    top = 1.2 * float(np.max(r))
    counts = [9, 30, 34, 37, 1, 16, 32]  # in batch 2 / batch 4 / the remainder / all / one / batch ends

    def padded(n):
        return jnp.asarray(top * np.minimum(np.arange(size), n - 1) / max(size - 1, 1), jnp.float32)

    grids = jnp.stack([padded(n) for n in counts])
    margin, loss = _linear_fns(np.float32(w), np.float32(b), np.float32(x), np.float32(y), "margin")
    starts = _unit_starts(jax.random.PRNGKey(4), 2, *x.shape)

    def curve(grid, n=None):
        return R.robust_accuracy_curve(margin, loss, grid, starts, steps=steps, eps_batch=batch, n_eps=n)

    acc, robust = jax.jit(jax.vmap(curve))(grids, jnp.asarray(counts))
    whole_acc, whole = jax.jit(jax.vmap(curve))(grids)
    np.testing.assert_array_equal(robust, whole)
    np.testing.assert_array_equal(acc, whole_acc)
    assert 0 < float(whole_acc[1, -1]) < float(whole_acc[1, 0])  # the attack breaks some points (can differ)

    calls = []

    def counted(delta):
        jax.debug.callback(lambda: calls.append(1))
        return margin(delta)

    def n_calls(n):
        calls.clear()
        jax.block_until_ready(jax.jit(lambda g: R.robust_accuracy_curve(
            counted, lambda d: -counted(d), g, starts, steps=steps, eps_batch=batch, n_eps=n))(grids[0]))
        jax.effects_barrier()
        return len(calls)

    per_batch = n_calls(1) / 2  # n_eps = 1: one full batch and the remainder
    assert n_calls(9) == 3 * per_batch and n_calls(37) == 5 * per_batch and per_batch > 0
    assert n_calls(16) == 3 * per_batch and n_calls(32) == 5 * per_batch  # a batch's last radius: no extra batch


def _zeros(d):
    return jnp.zeros(d.shape[0])


def _const(d):
    return jnp.ones(d.shape[0])


def test_pgd_tie_counts_as_error_and_zero_gradient_safe():
    n, p = 5, 3
    pgd = jax.jit(R.pgd, static_argnums=(0, 1, 4))
    robust, final, _ = pgd(_zeros, _zeros, np.zeros((n, p), np.float32), 1.0, 3, 0.1)
    assert not np.any(np.asarray(robust))
    d0 = np.full((n, p), 0.1, np.float32)
    robust, final, _ = pgd(_const, _const, d0, 1.0, 5, 0.1)
    assert np.all(np.asarray(robust))
    assert np.all(np.isfinite(np.asarray(final)))
    np.testing.assert_allclose(np.asarray(final), np.asarray(d0))  # no step without a gradient
    # a start outside the ball is projected onto it
    robust, final, _ = pgd(_const, _const, np.full((n, p), 10.0, np.float32), 1.0, 1, 0.1)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(final), axis=1), 1.0, rtol=1e-6)


@functools.partial(jax.jit, static_argnames="steps")
def _scaled_pgd(w, b, x, y, eps, key, scale, *, steps):
    """PGD on -scale * margin; ``scale`` is traced, so the unscaled run (scale 1: -1.0 * m is exactly -m) and every
    scale share one program."""
    n, d = x.shape
    margin, _ = _linear_fns(w, b, x, y, "margin")
    d0 = R.full_ball_start(key, n, d, eps, dtype=jnp.float64)
    return R.pgd(margin, lambda dd: -scale * margin(dd), d0, eps, steps, 0.25 * eps)


@pytest.mark.parametrize("scale", [1.0, 1e-20, 1e-40])
def test_pgd_step_invariant_to_objective_scale(x64, scale):
    """The step is alpha g/||g||: scaling the objective by any positive constant must not change PGD (float64
    represents gradients down to ~1e-308). This is what a logistic objective at margin q does to the gradient:
    it is multiplied by sigmoid(-q) ~ e^-q (1e-40 at q ~ 92)."""
    w, b, x, y, r = _linear_problem(seed=4)
    eps = (1.01 * r)[:, None]
    key = jax.random.PRNGKey(9)
    rob1, fin1, _ = _scaled_pgd(w, b, x, y, eps, key, 1.0, steps=40)
    robs, fins, _ = _scaled_pgd(w, b, x, y, eps, key, scale, steps=40)
    assert not np.any(np.asarray(rob1))
    np.testing.assert_array_equal(np.asarray(robs), np.asarray(rob1))
    np.testing.assert_allclose(np.asarray(fins), np.asarray(fin1), rtol=1e-9, atol=1e-12)


def test_full_ball_start_uniform_radius():
    """Uniform in the ball of R^dim: P(||delta|| <= t eps) = t^dim."""
    dim, eps, n = 6, 2.0, 20000
    d0 = np.asarray(full_ball_start(jax.random.PRNGKey(3), n=n, dim=dim, eps=eps), np.float64)
    rad = np.linalg.norm(d0, axis=1) / eps
    assert rad.max() <= 1 + 1e-6
    for t in (0.5, 0.8, 0.95):
        assert abs(np.mean(rad <= t) - t ** dim) < 4 * np.sqrt(t ** dim * (1 - t ** dim) / n) + 1e-3
    # isotropic: mean direction ~ 0
    assert np.all(np.abs((d0 / np.linalg.norm(d0, axis=1, keepdims=True)).mean(0)) < 4 / np.sqrt(n * dim) * 2)


# ----------------------------------------------------------------------------- (b) reduced == full
def _random_net(seed=0, d=25, n=12, width=3):
    return _random_net_program(seed, d=d, n=n, width=width)


@functools.partial(jax.jit, static_argnames=("d", "n", "width"))
def _random_net_program(seed, *, d, n, width):  # the seed is traced: one program per shape
    cfg = TwoLayerNet(kind="binary", width=width, init_scale=0.5)
    params = init_two_layer(jax.random.PRNGKey(seed), cfg, d, 2, jnp.float64)
    A = readout_matrix(cfg, 2).astype(jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(seed + 1), (n, d), jnp.float64)
    F = apply_two_layer(params, x, A)[:, 0]
    y = jnp.sign(F)
    return params, A, x, y


@jax.jit
def _full_and_reduced_outputs(params, A, x, z0, wq, delta, cs):
    """The net at x + delta in full coordinates, and from the reduced coordinates cs = (c, s)."""
    return apply_two_layer(params, x + delta, A), jax.nn.relu(z0 + cs @ wq.T) @ A.T


def test_reduce_two_layer_is_exact(x64):
    params, A, x, _ = _random_net()
    n, d = x.shape
    vhat = np.ones((1, d)) / np.sqrt(d)
    z0, wq, q = reduce_two_layer(params, x, extra=vhat)
    q = np.asarray(q)
    assert q.shape == (d, 7) and wq.shape == (6, 8)
    np.testing.assert_allclose(q.T @ q, np.eye(7), atol=1e-12)
    np.testing.assert_allclose(q @ (q.T @ np.asarray(vhat)[0]), np.asarray(vhat)[0], atol=1e-12)  # extra in span
    rng = np.random.default_rng(0)
    c = rng.standard_normal((n, 7))
    s = np.abs(rng.standard_normal(n))
    u = rng.standard_normal((n, d))
    u -= (u @ q) @ q.T
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    delta = c @ q.T + s[:, None] * u
    full, red = _full_and_reduced_outputs(params, A, x, z0, wq, delta, np.concatenate([c, s[:, None]], 1))
    np.testing.assert_allclose(np.asarray(red), np.asarray(full), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(delta, axis=1) ** 2, (c ** 2).sum(1) + s ** 2, rtol=1e-12)


@jax.jit
def _margins_and_input_gradients(params, A, x, y):
    """``(y F(x) (samples,), grad_x F (samples, d))``."""
    gx = jax.vmap(jax.grad(lambda xi: apply_two_layer(params, xi[None], A)[0, 0]))(x)
    return y * apply_two_layer(params, x, A)[:, 0], gx


@functools.partial(jax.jit, static_argnames="n")
def _full_and_reduced_starts(q, key, eps, *, n):
    """A uniform start in the eps-ball of R^d, and the same start in reduced coordinates (Q^T d0, ||d0 - Q Q^T d0||)."""
    d0 = R.full_ball_start(key, n, q.shape[0], eps, dtype=jnp.float64)
    c0 = d0 @ q
    s0 = jnp.linalg.norm(d0 - c0 @ q.T, axis=1, keepdims=True)
    return d0, jnp.concatenate([c0, s0], axis=1)


@functools.partial(jax.jit, static_argnames="step_counts")
def _full_and_reduced_pgd(params, A, x, y, z0, wq, d0, r0, eps, *, step_counts):
    """PGD from the same start in R^d and in the reduced coordinates of :func:`R.reduce_two_layer`, for each number
    of steps (one program: a program per count would compile the same loops four times)."""

    def margin_full(delta):
        return y * apply_two_layer(params, x + delta, A)[:, 0]

    def margin_red(cs):
        return y * (jax.nn.relu(z0 + cs @ wq.T) @ A.T)[:, 0]

    alpha = 2.5 * eps / 10
    return [(R.pgd(margin_full, lambda dd: -margin_full(dd), d0, eps, steps, alpha),
             R.pgd(margin_red, lambda cs: -margin_red(cs), r0, eps, steps, alpha)) for steps in step_counts]


def test_reduced_pgd_equals_full_pgd_step_by_step(x64):
    params, A, x, y = _random_net(seed=3)
    n = x.shape[0]
    z0, wq, q = reduce_two_layer(params, x)
    # eps of the order of the points' linearised margins, so some points break and some do not
    m, gx = _margins_and_input_gradients(params, A, x, y)
    lin = np.abs(np.asarray(m)) / np.linalg.norm(np.asarray(gx), axis=1)
    eps = float(np.median(lin)) * 1.2
    d0, r0 = _full_and_reduced_starts(q, jax.random.PRNGKey(4), eps, n=n)
    step_counts = (0, 1, 2, 10)
    runs = _full_and_reduced_pgd(params, A, x, y, z0, wq, d0, r0, eps, step_counts=step_counts)
    flags = []
    for steps, ((rob_f, fin_f, first_f), (rob_r, fin_r, first_r)) in zip(step_counts, runs, strict=True):
        fin_f, fin_r = np.asarray(fin_f), np.asarray(fin_r)
        cf = fin_f @ np.asarray(q)
        sf = np.linalg.norm(fin_f - cf @ np.asarray(q).T, axis=1)
        np.testing.assert_allclose(cf, fin_r[:, :-1], rtol=1e-8, atol=1e-10, err_msg=f"steps={steps}")
        np.testing.assert_allclose(sf, fin_r[:, -1], rtol=1e-8, atol=1e-10, err_msg=f"steps={steps}")
        np.testing.assert_array_equal(np.asarray(rob_f), np.asarray(rob_r))
        broken = ~np.asarray(rob_f)
        np.testing.assert_allclose(np.asarray(first_f)[broken] @ np.asarray(q), np.asarray(first_r)[broken, :-1],
                                   rtol=1e-8, atol=1e-10)
        flags.append(np.asarray(rob_f))
    assert 0 < flags[-1].sum() < n  # a mixed outcome: the comparison covers both kinds of points
    assert np.any(flags[0] != flags[-1])  # PGD steps changed the verdict for some points


def test_reduced_ball_start_is_the_full_start_in_reduced_coordinates(x64):
    """reduced_ball_start(key, Q, n, eps) = (Q^T delta0, ||delta0 - Q Q^T delta0||), delta0 = full_ball_start(key)."""
    params, _, x, _ = _random_net(seed=5, d=30, n=50)
    _, wq, q = reduce_two_layer(params, x)
    n, d = x.shape
    key = jax.random.PRNGKey(8)
    starts = jax.jit(lambda eps: (R.reduced_ball_start(key, q, n, eps, dtype=jnp.float64),
                                  R.full_ball_start(key, n, d, eps, dtype=jnp.float64)))
    for eps in (1.0, 2.5):  # one program: eps is traced
        red, full = (np.asarray(a) for a in starts(eps))
        qn = np.asarray(q)
        assert red.shape == (n, wq.shape[1])
        np.testing.assert_allclose(red[:, :-1], full @ qn, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(red[:, -1], np.linalg.norm(full - (full @ qn) @ qn.T, axis=1), rtol=1e-8,
                                   atol=1e-10)
        np.testing.assert_allclose(np.linalg.norm(red, axis=1), np.linalg.norm(full, axis=1), rtol=1e-10)
        assert np.all(np.linalg.norm(red, axis=1) <= eps * (1 + 1e-12))


def test_reduced_ball_start_per_point_eps(x64):
    params, _, x, _ = _random_net(seed=6, d=30, n=50)  # the previous test's shapes: its programs are reused
    _, _, q = reduce_two_layer(params, x)
    eps = np.asarray([[1.0], [2.0], [0.5]])
    z = np.asarray(jax.jit(R.reduced_ball_start, static_argnums=2)(jax.random.PRNGKey(7), q, 3, eps))
    assert np.all(np.linalg.norm(z, axis=1) <= np.asarray(eps)[:, 0] * (1 + 1e-5))


# ----------------------------------------------------------------------------- (c) flip radius, idealised FA
def _ideal_fa(d, k, n_pos, m=2, c=0.01, seed=0):
    return _ideal_fa_program(n_pos, c, seed, d=d, k=k, m=m)


@functools.partial(jax.jit, static_argnames=("d", "k", "m"))
def _ideal_fa_program(n_pos, c, seed, *, d, k, m):  # n_pos, c and seed are traced: one program per (d, k, m)
    mu = make_centres(jax.random.PRNGKey(seed), d, k, dtype=jnp.float64)
    signs = cluster_signs(k, n_pos)
    s_plus = jnp.sum(mu * (signs > 0)[:, None], 0)
    s_minus = jnp.sum(mu * (signs < 0)[:, None], 0)
    W = c * jnp.concatenate([jnp.tile(s_plus, (m, 1)), jnp.tile(s_minus, (m, 1))])
    A = readout_matrix(TwoLayerNet(kind="binary", width=m), 2).astype(W.dtype)
    vdir = (s_plus - s_minus) / jnp.sqrt(k * d)  # unit: ||S+ - S-|| = sqrt(kd)
    return mu, signs, {"w": W}, A, vdir


def _ray_margin_fn(params, A, x, y, vdir):
    def ray(t):
        xt = x + (-(y * t))[:, None] * vdir[None, :]  # v(x) = -y (S+ - S-)/sqrt(kd)
        return y * apply_two_layer(params, xt, A)[:, 0]
    return ray


@functools.partial(jax.jit, static_argnames="n")
def _ideal_flip_radius(params, A, x, y, vdir, t_max, *, n):
    return R.flip_radius(_ray_margin_fn(params, A, x, y, vdir), n, t_max)


@pytest.mark.parametrize("k,n_pos", [(4, 2), (4, 1), (5, 3), (10, 5)])
def test_flip_radius_ideal_fa_noise_free(x64, k, n_pos):
    d = 400
    mu, signs, params, A, vdir = _ideal_fa(d, k, n_pos)
    x, y = mu, signs
    r = np.asarray(_ideal_flip_radius(params, A, x, y, vdir, 2 * np.sqrt(d), n=k))
    np.testing.assert_allclose(r, np.sqrt(d / k), rtol=1e-4)  # G1, independent of the split
    np.testing.assert_allclose(r, th.fa_radius(d, k), rtol=1e-4)


def _np_first_root(margin, t_max, grid=20001, iters=80):
    """Independent root finder: dense scan for the first t with margin(t) <= 0, then bisection.
    ``margin(t (m,)) -> (m,)`` for one point (vectorised over t)."""
    ts = np.linspace(0.0, t_max, grid)
    hit = np.nonzero(margin(ts) <= 0)[0]
    if len(hit) == 0:
        return np.inf
    i = hit[0]
    if i == 0:
        return 0.0
    lo, hi = ts[i - 1], ts[i]
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if margin(np.array([mid]))[0] <= 0 else (mid, hi)
    return hi


def test_flip_radius_ideal_fa_noisy_vs_numpy_root_finder(x64):
    d, k, n_pos, n = 400, 4, 2, 60
    mu, signs, params, A, vdir = _ideal_fa(d, k, n_pos)
    rng = np.random.default_rng(0)
    j = rng.integers(0, k, n)
    xi = rng.standard_normal((n, d))
    x = np.asarray(mu)[j] + xi
    y = np.asarray(signs)[j]
    t_max = 2 * np.sqrt(d)
    r = np.asarray(_ideal_flip_radius(params, A, x, y, vdir, t_max, n=n))
    # independent float64 numpy model of the idealised net (m = 2 neurons per side, read-out +-1/2)
    W = np.asarray(params["w"])
    v = np.asarray(vdir)

    def ray(i):
        # the first layer is linear: (x - y t v) W^T = x W^T - y t (v W^T), so a scan of 20 001 t costs (t, neurons)
        base, slope = x[i] @ W.T, v @ W.T

        def margin(ts):
            h = np.maximum(base[None, :] - y[i] * ts[:, None] * slope[None, :], 0.0)  # (t, neurons)
            return y[i] * (h[:, :2].mean(1) - h[:, 2:].mean(1))
        return margin

    ref = np.array([_np_first_root(ray(i), t_max) for i in range(n)])
    np.testing.assert_allclose(r, ref, rtol=1e-4)
    # closed form G1: r = sqrt(d/k) + y g, g = <S+ - S-, xi>/sqrt(kd)  (both ReLUs active at the crossing)
    g = xi @ v
    np.testing.assert_allclose(r, np.sqrt(d / k) + y * g, rtol=1e-4)
    assert abs(np.mean(r - np.sqrt(d / k) - y * g)) < 1e-6


def test_flip_radius_by_hand_censored_and_zero():
    n = 4
    a = jnp.array([1.0, 3.0, -1.0, 5.0])
    slope = jnp.array([1.0, 2.0, 1.0, 0.0])  # last never flips
    r = np.asarray(jax.jit(lambda: R.flip_radius(lambda t: a - slope * t, n, 10.0))())
    np.testing.assert_allclose(r[:2], [1.0, 1.5], rtol=1e-6)
    assert r[2] == 0.0 and np.isinf(r[3])


# ----------------------------------------------------------------------------- (d) PGD at huge margins
def _fa_pgd_setup(c, dtype, d=400, k=4, n_pos=2, copies=10):
    mu, signs, params, A, vdir = _ideal_fa(d, k, n_pos, c=c)
    params = {"w": params["w"].astype(dtype)}
    A = A.astype(dtype)
    x = jnp.repeat(mu, copies, axis=0).astype(dtype)
    y = jnp.repeat(signs, copies).astype(dtype)
    z0, wq, q = R.reduce_two_layer(params, x, extra=vdir[None, :].astype(dtype))
    return x, y, params, A, z0, wq, q


def _reduced_starts(key, q, n, restarts, dtype):
    """Start r: reduced_ball_start(fold_in(key, r)); vmapped over r (the same draws as a loop, one RNG program)."""
    return jax.vmap(lambda i: R.reduced_ball_start(jax.random.fold_in(key, i), q, n, 1.0, dtype))(
        jnp.arange(restarts))


@functools.partial(jax.jit, static_argnames=("dtype", "logistic_objective"))
def _fa_pgd_curve(c, eps, key, *, dtype, logistic_objective):
    """:func:`_fa_pgd_setup` at scale ``c``, 8 reduced starts and robust accuracy at ``eps (2,)`` under 40 PGD
    steps on the margin (or the logistic loss), as one program. Returns ``(margin at delta = 0 (n,), acc (2,))``."""
    x, y, _, A, z0, wq, q = _fa_pgd_setup(c, dtype)
    n = x.shape[0]

    def out(delta):
        return (jax.nn.relu(z0 + delta @ wq.T) @ A.T)[:, 0]

    def margin(delta):
        return y * out(delta)

    loss = (lambda dd: logistic(out(dd), y)) if logistic_objective else (lambda dd: -margin(dd))
    starts = _reduced_starts(key, q, n, 8, dtype)
    acc, _ = R.robust_accuracy_curve(margin, loss, eps.astype(dtype), starts, steps=40)
    return margin(jnp.zeros((n, wq.shape[1]), dtype)), acc


@pytest.mark.parametrize("c", [1.0])
def test_pgd_ideal_fa_huge_margin_reaches_radius_float32(c):
    """Margin c*d = 400 (>> 40: a sigmoid-based gradient is exactly 0 in float32). PGD on the margin
    objective, in reduced coordinates, as the FA experiment runs it: robust at 0.8 sqrt(d/k), broken at 1.2."""
    d, k = 400, 4
    r = float(th.fa_radius(d, k))
    eps = np.asarray([0.8 * r, 1.2 * r], np.float32)
    m0, acc = _fa_pgd_curve(c, eps, jax.random.PRNGKey(0), dtype=jnp.float32, logistic_objective=False)
    assert np.all(np.asarray(m0) > 40)
    acc = np.asarray(acc)
    assert acc[0] >= 0.99, acc
    assert acc[1] <= 0.05, acc


def test_pgd_ideal_fa_logistic_objective_float64_large_margin(x64):
    """The spec's logistic objective written as softplus: at margin 100 (> 37, where a naive sigmoid gradient is 0
    even in float64) its gradient is tiny but non-zero, and normalised PGD still reaches sqrt(d/k)."""
    d, k = 400, 4
    r = float(th.fa_radius(d, k))
    eps = np.asarray([0.8 * r, 1.2 * r])
    m0, acc = _fa_pgd_curve(0.25, eps, jax.random.PRNGKey(1), dtype=jnp.float64, logistic_objective=True)
    np.testing.assert_allclose(np.asarray(m0), 100.0, rtol=1e-9)
    acc = np.asarray(acc)
    assert acc[0] >= 0.99 and acc[1] <= 0.05, acc


# ----------------------------------------------------------------------------- (e) crossing, read-outs
def test_crossing_interpolates():
    eps = jnp.array([0.0, 1.0, 2.0, 3.0, 4.0])
    r, cens = crossing(eps, jnp.array([1.0, 1.0, 0.8, 0.4, 0.0]))
    assert float(r) == pytest.approx(2.75) and not bool(cens)  # 2 + (0.8 - 0.5)/(0.8 - 0.4)
    r, cens = crossing(eps, jnp.array([1.0, 0.5, 0.2, 0.0, 0.0]))
    assert float(r) == pytest.approx(1.0) and not bool(cens)  # exactly at the level
    r, cens = crossing(eps, jnp.array([1.0, 0.4, 0.6, 0.2, 0.0]))
    assert float(r) == pytest.approx(5 / 6) and not bool(cens)  # the first crossing counts
    r, cens = crossing(eps, jnp.array([1.0, 0.9, 0.8, 0.6, 0.2]), level=0.7)
    assert float(r) == pytest.approx(2.5)


def test_crossing_censored_and_at_zero():
    eps = jnp.array([0.0, 0.5, 1.0])
    r, cens = crossing(eps, jnp.array([1.0, 0.9, 0.6]))
    assert bool(cens) and float(r) == 1.0  # ">= 1.0"
    r, cens = crossing(eps, jnp.array([0.3, 0.1, 0.0]))
    assert not bool(cens) and float(r) == 0.0


def test_crossing_vmaps():
    eps = np.linspace(0, 1, 5, dtype=np.float32)
    accs = jnp.array([[1.0, 1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    r, cens = jax.jit(jax.vmap(R.crossing, in_axes=(None, 0)))(eps, accs)
    np.testing.assert_allclose(np.asarray(r), [0.375, 1.0])
    np.testing.assert_array_equal(np.asarray(cens), [False, True])


def test_binary_readouts_vs_numpy():
    rng = np.random.default_rng(0)
    out = rng.standard_normal((7, 5))
    sup = np.array([1.0, 1.0, -1.0, -1.0, -1.0])
    np.testing.assert_allclose(np.asarray(R.binary_readout(jnp.asarray(out), jnp.asarray(sup), "sum")),
                               out[:, :2].sum(1) - out[:, 2:].sum(1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(R.binary_readout(jnp.asarray(out), jnp.asarray(sup), "max")),
                               out[:, :2].max(1) - out[:, 2:].max(1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(R.binary_readout(jnp.asarray(out[:, :1]), None, "binary")), out[:, 0])
    with pytest.raises(ValueError, match="readout"):
        R.binary_readout(jnp.asarray(out), jnp.asarray(sup), "mean")
