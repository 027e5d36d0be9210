"""Two-layer nets and losses vs a float64 numpy implementation (values and gradients), large margins, padding, and a
3-step GD run through the trainer vs a hand-written numpy GD loop."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fa_jax.losses import LOSSES, cross_entropy, get_loss, logistic, mse
from fa_jax.models.two_layer import (
    TwoLayerNet,
    apply_two_layer,
    hidden,
    init_two_layer,
    neuron_group,
    neuron_mask,
    readout_matrix,
)
from fa_jax.trainer import train

# jitted: one program per call site and shape (eager, every primitive compiles its own tiny XLA program)
_init = jax.jit(init_two_layer, static_argnums=(1, 2, 3, 4))
_readout = jax.jit(readout_matrix, static_argnums=(0, 1))


# ----------------------------------------------------------------------------- numpy references (float64)
def np_binary_forward(W, b, x, m):
    """W (2m, d) laid out [+ | -], b (2m,) -> f (n,), z (n, 2m), a (2m,)."""
    a = np.concatenate([np.full(m, 1.0 / m), np.full(m, -1.0 / m)])
    z = x @ W.T + b
    return np.maximum(z, 0.0) @ a, z, a


def np_logistic_loss_grad(W, b, x, y, m):
    f, z, a = np_binary_forward(W, b, x, m)
    q = y * f
    loss = np.mean(np.logaddexp(0.0, -q))
    dq = -1.0 / (1.0 + np.exp(q))  # d softplus(-q)/dq = -sigmoid(-q)
    df = dq * y / len(y)  # (n,)
    dz = df[:, None] * a[None, :] * (z > 0)  # (n, 2m)
    return loss, dz.T @ x, dz.sum(0)


def np_multiclass_forward(W, b, x, c, h):
    """W (c*h, d) head-major -> logits (n, c)."""
    z = x @ W.T + b
    A = np.zeros((c, c * h))
    for j in range(c):
        A[j, j * h:(j + 1) * h] = 1.0 / h
    return np.maximum(z, 0.0) @ A.T, z, A


def np_ce_loss_grad(W, b, x, lab, c, h):
    f, z, A = np_multiclass_forward(W, b, x, c, h)
    fmax = f.max(1, keepdims=True)
    lse = fmax[:, 0] + np.log(np.exp(f - fmax).sum(1))
    loss = np.mean(lse - f[np.arange(len(lab)), lab])
    p = np.exp(f - lse[:, None])
    df = (p - np.eye(c)[lab]) / len(lab)  # (n, c)
    dz = (df @ A) * (z > 0)
    return loss, dz.T @ x, dz.sum(0)


def _rand(seed, n, d, neurons, scale=0.3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((neurons, d)) * scale, rng.standard_normal(neurons) * scale,
            rng.standard_normal((n, d)))


# ----------------------------------------------------------------------------- structure
def test_readout_matrix_binary_by_hand():
    cfg = TwoLayerNet(kind="binary", width=2, bucket=4)
    A = np.asarray(_readout(cfg, 2))
    np.testing.assert_array_equal(A, [[0.5, 0.5, 0, 0, -0.5, -0.5, 0, 0]])
    np.testing.assert_array_equal(np.asarray(neuron_mask(cfg, 2)), [1, 1, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(np.asarray(neuron_group(cfg, 2)), [0, 0, 0, 0, 1, 1, 1, 1])


def test_readout_matrix_multiclass_by_hand():
    cfg = TwoLayerNet(kind="multiclass", width=2, bucket=3)
    A = np.asarray(_readout(cfg, 3))
    expect = np.zeros((3, 9))
    for j in range(3):
        expect[j, 3 * j:3 * j + 2] = 0.5
    np.testing.assert_array_equal(A, expect)


def test_readout_traced_width():
    cfg = TwoLayerNet(kind="binary", width=3, bucket=5)
    f = jax.jit(lambda w: readout_matrix(TwoLayerNet(kind="binary", width=w, bucket=5), 2))
    for w in (1, 3, 5):
        a = np.asarray(f(jnp.int32(w)))[0]
        assert np.sum(a > 0) == w and np.sum(a < 0) == w
        np.testing.assert_allclose(a[a > 0], 1.0 / w, rtol=1e-6)
    assert cfg.padded == 5


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_readout_matrix_exact_under_x64(x64, kind):
    """Spec Sec. 6 (float64 exactness checks): with x64 the fixed read-out 1/m must be exact in float64, not
    1/m rounded to float32 (a 3e-8 relative error in every output for m = 3)."""
    A = readout_matrix(TwoLayerNet(kind=kind, width=3), 2)
    a = np.abs(np.asarray(A, np.float64))
    np.testing.assert_allclose(a[a > 0], 1.0 / 3.0, rtol=1e-15)


@pytest.mark.parametrize("kind,c", [("binary", 2), ("multiclass", 4)])
def test_init_shapes_scale_and_bucket_independence(kind, c):
    d = 64
    key = jax.random.PRNGKey(0)
    small = _init(key, TwoLayerNet(kind=kind, width=3, init_scale=0.1), d, c, jnp.float32)
    big = _init(key, TwoLayerNet(kind=kind, width=3, bucket=8, init_scale=0.1), d, c, jnp.float32)
    groups = 2 if kind == "binary" else c
    assert small["w"].shape == (groups * 3, d) and small["b"].shape == (groups * 3,)
    assert big["w"].shape == (groups * 8, d) and big["b"].shape == (groups * 8,)
    real = np.asarray(neuron_mask(TwoLayerNet(kind=kind, width=3, bucket=8), c)) > 0
    np.testing.assert_array_equal(np.asarray(big["w"])[real], np.asarray(small["w"]))
    np.testing.assert_array_equal(np.asarray(big["b"])[real], np.asarray(small["b"]))
    w = np.asarray(big["w"], np.float64)  # >= 1024 iid N(0, 0.1^2) draws: SE of the std ~2%
    assert abs(w.std() - 0.1) < 0.01 and abs(w.mean()) < 0.01
    assert len(np.unique(w, axis=0)) == w.shape[0]  # every neuron has its own draw
    shapes = jax.eval_shape(lambda k: init_two_layer(k, TwoLayerNet(kind=kind, width=3, bias=False), d, c), key)
    assert set(shapes) == {"w"}


# ----------------------------------------------------------------------------- loss + grad vs numpy
def _jax_binary_loss(cfg):
    def loss(p, x, y):
        return jnp.mean(logistic(apply_two_layer(p, x, readout_matrix(cfg, 2)), y))
    return loss


@pytest.mark.parametrize("m", [1, 3])
def test_binary_logistic_loss_and_grad_vs_numpy(x64, m):
    n, d = 17, 9
    W, b, x = _rand(1, n, d, 2 * m)
    y = np.where(np.random.default_rng(2).random(n) < 0.5, 1.0, -1.0)
    cfg = TwoLayerNet(kind="binary", width=m)
    loss = _jax_binary_loss(cfg)
    p = {"w": W, "b": b}
    (val, g), out = jax.jit(lambda p, x, y: (jax.value_and_grad(loss)(p, x, y),
                                             apply_two_layer(p, x, readout_matrix(cfg, 2))))(p, x, y)
    ref, gW, gb = np_logistic_loss_grad(W, b, x, y, m)
    f_ref, z, _ = np_binary_forward(W, b, x, m)
    assert 0.1 < np.mean(z > 0) < 0.9  # ReLUs genuinely mixed
    np.testing.assert_allclose(np.asarray(out)[:, 0], f_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(float(val), ref, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g["w"]), gW, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(g["b"]), gb, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("h", [1, 2])
def test_multiclass_ce_loss_and_grad_vs_numpy(x64, h):
    n, d, c = 15, 8, 4
    W, b, x = _rand(3, n, d, c * h, scale=0.8)
    lab = np.random.default_rng(4).integers(0, c, n)
    cfg = TwoLayerNet(kind="multiclass", width=h)

    def loss(p, x, lab):
        return jnp.mean(cross_entropy(apply_two_layer(p, x, readout_matrix(cfg, c)), lab))

    val, g = jax.jit(jax.value_and_grad(loss))({"w": W, "b": b}, x, lab)
    ref, gW, gb = np_ce_loss_grad(W, b, x, lab, c, h)
    np.testing.assert_allclose(float(val), ref, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g["w"]), gW, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(g["b"]), gb, rtol=1e-10, atol=1e-14)


def test_ce_large_logits_finite(x64):
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 0.0]])
    lab = np.array([0, 0])
    val, g = jax.jit(lambda l, lab: (cross_entropy(l, lab), jax.grad(lambda l: jnp.sum(cross_entropy(l, lab)))(l)))(
        logits, lab)
    val, g = np.asarray(val), np.asarray(g)
    np.testing.assert_allclose(val, [0.0, 1000.0], atol=1e-12)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [[0, 0, 0], [-1, 1, 0]], atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logistic_large_margins_finite(x64, dtype):
    """Spec Sec. 6: the logistic loss at q = 200 is ~0 with a finite (not NaN) gradient; at q = -200 it is 200."""
    dt = jnp.dtype(dtype)
    q = jnp.asarray([200.0, -200.0, 50.0, 0.0, -50.0], dt)
    y = jnp.asarray([1.0, 1.0, -1.0, 1.0, -1.0], dt)

    @jax.jit
    def loss_and_grad(q, y):
        f = q * y
        return logistic(f, y), jax.grad(lambda f: jnp.sum(logistic(f, y)))(f)

    val, g = (np.asarray(a, np.float64) for a in loss_and_grad(q, y))
    assert np.all(np.isfinite(val)) and np.all(np.isfinite(g))
    qn = np.asarray(q, np.float64)
    ref = np.logaddexp(0.0, -qn)
    gref = -np.asarray(y, np.float64) / (1.0 + np.exp(qn))  # dl/df = -y sigmoid(-q)
    rtol = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(val, ref, rtol=rtol, atol=0 if dtype == "float64" else 1e-30)
    if dtype == "float64":
        # no premature rounding of the gradient to 0: sigmoid(-50) = 1.9e-22 and sigmoid(-200) = 1.4e-87
        np.testing.assert_allclose(g, gref, rtol=1e-10)
    else:
        np.testing.assert_allclose(g, gref, rtol=1e-5, atol=1e-30)


def test_logistic_accepts_column_outputs():
    f = jnp.array([[0.5], [-2.0]])
    y = jnp.array([1.0, -1.0])
    np.testing.assert_allclose(np.asarray(logistic(f, y)), np.logaddexp(0, -np.array([0.5, 2.0])), rtol=1e-6)


def test_mse_vs_numpy():
    rng = np.random.default_rng(5)
    f, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    np.testing.assert_allclose(np.asarray(mse(jnp.asarray(f), jnp.asarray(y))), 0.5 * ((f - y) ** 2).sum(1),
                               rtol=1e-6)
    f1, y1 = rng.standard_normal((6, 1)), rng.standard_normal(6)
    np.testing.assert_allclose(np.asarray(mse(jnp.asarray(f1), jnp.asarray(y1))), 0.5 * (f1[:, 0] - y1) ** 2,
                               rtol=1e-6)


def test_get_loss_table():
    assert get_loss("logistic") is logistic and get_loss("cross_entropy") is cross_entropy and get_loss("mse") is mse
    assert set(LOSSES) == {"logistic", "cross_entropy", "mse"}


def test_masked_neurons_zero_gradient_and_no_effect(x64):
    cfg = TwoLayerNet(kind="binary", width=2, bucket=5, init_scale=0.5)
    d, n = 7, 11
    p = _init(jax.random.PRNGKey(1), cfg, d, 2, jnp.float64)
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((n, d)), np.sign(rng.standard_normal(n))
    loss = jax.jit(_jax_binary_loss(cfg))
    g = jax.jit(jax.grad(_jax_binary_loss(cfg)))(p, x, y)
    pad = np.asarray(neuron_mask(cfg, 2)) == 0
    assert np.all(np.asarray(g["w"])[pad] == 0) and np.all(np.asarray(g["b"])[pad] == 0)
    assert np.any(np.asarray(g["w"])[~pad] != 0)
    p = {k: np.asarray(v) for k, v in p.items()}
    p2 = {k: v.copy() for k, v in p.items()}
    p2["w"][pad], p2["b"][pad] = 123.0, -7.0
    np.testing.assert_array_equal(np.asarray(loss(p, x, y)), np.asarray(loss(p2, x, y)))
    # ... and the real neurons alone equal an unpadded net with those weights (numpy reference)
    W = p["w"][~pad]
    b = p["b"][~pad]
    ref, _, _ = np_logistic_loss_grad(W, b, x, y, 2)
    np.testing.assert_allclose(float(loss(p, x, y)), ref, rtol=1e-12)


def test_hidden_without_bias():
    p = {"w": jnp.array([[1.0, 2.0], [-1.0, 0.5]])}
    x = jnp.array([[1.0, 1.0], [2.0, -2.0]])
    np.testing.assert_allclose(np.asarray(hidden(p, x)), [[3.0, -0.5], [-2.0, -3.0]])


# ----------------------------------------------------------------------------- GD through the trainer
def _gd_numpy(kind, W, b, x, y, lr, steps, m_or_h, c=None):
    W, b = W.copy(), b.copy()
    for _ in range(steps):
        if kind == "binary":
            _, gW, gb = np_logistic_loss_grad(W, b, x, y, m_or_h)
        else:
            _, gW, gb = np_ce_loss_grad(W, b, x, y, c, m_or_h)
        W, b = W - lr * gW, b - lr * gb
    return W, b


def _gd_jax(kind, W, b, x, y, lr, steps, width, c, dtype):
    cfg = TwoLayerNet(kind=kind, width=width)
    A = _readout(cfg, c).astype(dtype)
    if kind == "binary":
        def loss_fn(p, xb, yb):
            return logistic(apply_two_layer(p, xb, A), yb)
    else:
        def loss_fn(p, xb, yb):
            return cross_entropy(apply_two_layer(p, xb, A), yb)
    p0 = {"w": jnp.asarray(W, dtype), "b": jnp.asarray(b, dtype)}
    yy = jnp.asarray(y, dtype) if kind == "binary" else jnp.asarray(y)
    p, rec, _ = train(loss_fn, p0, jnp.asarray(x, dtype), yy, optax.sgd(lr), plan=(0, 1, steps),
                   record_fn=lambda p: {"w": p["w"]})
    return np.asarray(p["w"], np.float64), np.asarray(p["b"], np.float64), rec


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_three_gd_steps_match_numpy_float32(kind):
    """float32 trainer vs float64 numpy: parameters within 1e-5 relative, updates within 1e-4 relative."""
    c = 2 if kind == "binary" else 3
    width = 2
    n, d, lr = 24, 10, 0.5
    W, b, x = _rand(7, n, d, (2 if kind == "binary" else c) * width, scale=0.5)
    rng = np.random.default_rng(8)
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0) if kind == "binary" else rng.integers(0, c, n)
    W32, b32 = np.asarray(W, np.float32).astype(np.float64), np.asarray(b, np.float32).astype(np.float64)
    x32 = np.asarray(x, np.float32).astype(np.float64)
    Wr, br = _gd_numpy(kind, W32, b32, x32, y, lr, 3, width, c)
    Wj, bj, rec = _gd_jax(kind, W32, b32, x32, y, lr, 3, width, c, jnp.float32)
    np.testing.assert_allclose(Wj, Wr, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bj, br, rtol=1e-5, atol=1e-6)
    upd_ref = np.concatenate([(Wr - W32).ravel(), br - b32])
    upd = np.concatenate([(Wj - W32).ravel(), bj - b32])
    assert np.linalg.norm(upd_ref) > 1e-2  # the steps really moved the parameters
    assert np.linalg.norm(upd - upd_ref) <= 1e-4 * np.linalg.norm(upd_ref)
    # records at plan steps 0, 1, 3
    W1, _ = _gd_numpy(kind, W32, b32, x32, y, lr, 1, width, c)
    np.testing.assert_allclose(np.asarray(rec["w"][0], np.float64), W32, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(rec["w"][1], np.float64), W1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_three_gd_steps_match_numpy_float64(x64, kind):
    c = 2 if kind == "binary" else 3
    width = 2
    n, d, lr = 24, 10, 0.5
    W, b, x = _rand(9, n, d, (2 if kind == "binary" else c) * width, scale=0.5)
    rng = np.random.default_rng(10)
    y = np.where(rng.random(n) < 0.5, 1.0, -1.0) if kind == "binary" else rng.integers(0, c, n)
    Wr, br = _gd_numpy(kind, W, b, x, y, lr, 3, width, c)
    Wj, bj, _ = _gd_jax(kind, W, b, x, y, lr, 3, width, c, jnp.float64)
    np.testing.assert_allclose(Wj - W, Wr - W, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(bj - b, br - b, rtol=1e-10, atol=1e-14)
