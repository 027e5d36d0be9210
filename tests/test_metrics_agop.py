"""AGOP against closed forms (linear, quadratic models) and central finite differences; per-layer AGOP of an MLP;
NFA correlation against numpy; the Xavier-uniform MLP init used by the AGOP/collapse sim."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax.metrics import agop as A
from fa_jax.models.mlp import MLP, apply_mlp
from fa_jax.models.mlp import init_mlp as _init_mlp

# jitted: one program per call (eager, every primitive would compile its own tiny XLA program)
init_mlp = jax.jit(_init_mlp, static_argnums=(1, 2, 3))
normal = jax.jit(jax.random.normal, static_argnums=1)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _agop(f, x, **kw):
    """``A.agop(f, x, **kw)`` as one jitted program."""
    return jax.jit(lambda x: A.agop(f, x, **kw))(x)


def test_linear_model_closed_form(x64):
    r = _rng(0)
    b = r.normal(size=(5, 3))
    x = r.normal(size=(13, 5))  # 13 points, chunks of 4: a padded last chunk
    g = _agop(lambda v: v @ jnp.asarray(b), x, chunk_size=4)
    np.testing.assert_allclose(np.asarray(g), b @ b.T, rtol=1e-12, atol=1e-12)  # J = B^T everywhere
    gc = _agop(lambda v: v @ jnp.asarray(b), x, chunk_size=4, centered=True)
    np.testing.assert_allclose(np.asarray(gc), 0.0, atol=1e-12)  # a constant Jacobian has no spread
    gd = _agop(lambda v: v @ jnp.asarray(b), x, diagonal=True, mode="fwd")
    np.testing.assert_allclose(np.asarray(gd), np.diag(b @ b.T), rtol=1e-12)


def test_quadratic_model_closed_form(x64):
    r = _rng(1)
    d, c, n = 4, 3, 11
    a = r.normal(size=(c, d, d))
    x = r.normal(size=(n, d))
    s = a + np.transpose(a, (0, 2, 1))  # grad x^T A_c x = (A_c + A_c^T) x

    def f(v):
        return jnp.einsum("i,cij,j->c", v, jnp.asarray(a), v)

    ref = sum(s[k] @ x.T @ x @ s[k] for k in range(c)) / n
    g = _agop(f, x, chunk_size=5)
    np.testing.assert_allclose(np.asarray(g), ref, rtol=1e-11)
    grads = np.einsum("cij,nj->nci", s, x)  # (n, c, d)
    jbar = grads.mean(0)
    gc = _agop(f, x, chunk_size=5, centered=True)
    np.testing.assert_allclose(np.asarray(gc), ref - jbar.T @ jbar, rtol=1e-10, atol=1e-12)


def _fd_agop(f, x, h=1e-6):
    n, d = x.shape
    tot = 0.0
    for i in range(n):
        cols = [(np.asarray(f(x[i] + h * e)) - np.asarray(f(x[i] - h * e))) / (2 * h) for e in np.eye(d)]
        j = np.stack(cols, axis=1)  # (c, d)
        tot = tot + j.T @ j
    return tot / n


def test_mlp_agop_vs_finite_differences_and_layers(x64):
    cfg = MLP(widths=(7, 6), activation="relu")
    params = init_mlp(jax.random.PRNGKey(0), cfg, 5, 3)
    x = np.asarray(normal(jax.random.PRNGKey(1), (9, 5)))

    @jax.jit
    def f(v):
        return apply_mlp(params, jnp.asarray(v)[None], "relu")[0]

    g = np.asarray(_agop(f, x, chunk_size=4))
    np.testing.assert_allclose(g, _fd_agop(f, x), rtol=1e-6, atol=1e-8)
    # layer 0's AGOP is the input AGOP; layer 2 (the head, linear) is K_3 K_3^T exactly
    layers = jax.jit(lambda p, x: A.mlp_layer_agops(p, x, "relu", chunk_size=4))(params, x)
    np.testing.assert_allclose(np.asarray(layers[0]), g, rtol=1e-12)
    k3 = np.asarray(params[2])
    np.testing.assert_allclose(np.asarray(layers[2]), k3 @ k3.T, rtol=1e-12)
    # a middle layer vs finite differences of the tail map at the layer inputs
    h1 = np.maximum(x @ np.asarray(params[0]), 0.0)

    def tail(v):
        return np.maximum(v @ np.asarray(params[1]), 0.0) @ k3

    np.testing.assert_allclose(np.asarray(layers[1]), _fd_agop(tail, h1), rtol=1e-6, atol=1e-8)


def test_image_shaped_inputs(x64):
    x = normal(jax.random.PRNGKey(2), (6, 2, 3, 1))
    w = normal(jax.random.PRNGKey(3), (6, 4))
    g = _agop(lambda v: v.reshape(-1) @ w, x, chunk_size=4)
    assert g.shape == (6, 6)
    w = np.asarray(w)
    np.testing.assert_allclose(np.asarray(g), w @ w.T, rtol=1e-12)


def test_pearson_and_power_vs_numpy(x64):
    r = _rng(4)
    a, b = r.normal(size=(6, 6)), r.normal(size=(6, 6))
    np.testing.assert_allclose(float(jax.jit(A.pearson_entries)(a, b)),
                               np.corrcoef(a.ravel(), b.ravel())[0, 1], rtol=1e-12)
    q = r.normal(size=(5, 3))
    m = q @ q.T  # PSD, rank 3
    lam, v = np.linalg.eigh(m)
    ref = (v * np.clip(lam, 0, None) ** 0.5) @ v.T
    root = np.asarray(jax.jit(A.psd_power)(m, 0.5))
    np.testing.assert_allclose(root, ref, atol=1e-10)
    np.testing.assert_allclose(root @ root, m, atol=1e-10)


def test_nfa_exact_for_orthogonal_head(x64):
    # f(x) = x K_1 K_2 with K_2 orthogonal: AGOP_1 = K_1 K_2 K_2^T K_1^T = K_1 K_1^T = W_1^T W_1, so rho(alpha=1) = 1
    r = _rng(5)
    k1 = r.normal(size=(4, 6))
    k2 = np.linalg.qr(r.normal(size=(6, 6)))[0]
    x = r.normal(size=(8, 4))
    rho = np.asarray(jax.jit(lambda ks, x: A.mlp_nfa_correlations(ks, x, "identity", layers=[0], alphas=(1.0, 0.5)))(
        [k1, k2], x))
    assert rho.shape == (2, 1)
    assert abs(rho[0, 0] - 1.0) < 1e-12
    gram = k1 @ k1.T
    lam, v = np.linalg.eigh(gram)
    half = (v * np.sqrt(np.clip(lam, 0, None))) @ v.T
    np.testing.assert_allclose(rho[1, 0], np.corrcoef(gram.ravel(), half.ravel())[0, 1], rtol=1e-10)


def test_xavier_uniform_init():
    cfg = MLP(widths=(300, 50), activation="relu", init_scale=0.1, init="xavier_uniform").validate()
    ks = init_mlp(jax.random.PRNGKey(0), cfg, 100, 10)
    a1 = 0.1 * np.sqrt(6 / 400)
    k1 = np.asarray(ks[0])
    assert np.abs(k1).max() <= a1 and np.abs(k1).max() > 0.98 * a1
    np.testing.assert_allclose(k1.std(), a1 / np.sqrt(3), rtol=0.02)
    assert np.abs(np.asarray(ks[2])).max() <= 1 / np.sqrt(50)  # PyTorch head init, not scaled by the gain
    with pytest.raises(ValueError, match="model.init"):
        MLP(init="orthogonal").validate()


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        A.agop(lambda v: v, jnp.ones((2, 2)), mode="central")
    with pytest.raises(ValueError, match="chunk_size"):
        A.agop(lambda v: v, jnp.ones((2, 2)), chunk_size=0)


def test_chunk_rows_pads_the_last_chunk_and_marks_it():
    x = jnp.arange(14.0).reshape(7, 2)
    xs, idx, valid = A.chunk_rows(x, 3)  # 7 rows in chunks of 3: 2 padding rows
    assert xs.shape == (3, 3, 2) and idx.shape == valid.shape == (3, 3) and valid.dtype == x.dtype
    np.testing.assert_array_equal(xs.reshape(9, 2)[:7], x)
    np.testing.assert_array_equal(xs.reshape(9, 2)[7:], 0)
    np.testing.assert_array_equal(idx.ravel(), np.arange(9))
    np.testing.assert_array_equal(valid.ravel(), [1] * 7 + [0] * 2)
    one, _, v1 = A.chunk_rows(x, 100)  # a chunk larger than the set: one chunk, no padding
    assert one.shape == (1, 7, 2) and float(v1.sum()) == 7
    for bad in (0, 2.0):
        with pytest.raises(ValueError, match="chunk_size"):
            A.chunk_rows(x, bad)


def test_conv_net_agop_vs_finite_differences(x64):
    # any fa-jax model: a flax conv net on NHWC images, one sample at a time through the batch API
    from fa_jax.models.image_nets import ImageNet, apply_image_net, init_image_net

    cfg = ImageNet(arch="conv", head="multiclass", n_classes=3, channels=(2,), dense=4)
    params = jax.jit(init_image_net, static_argnums=(1, 2))(0, cfg, (4, 4, 1))
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(normal(jax.random.PRNGKey(4), (2, 4, 4, 1)))

    @jax.jit
    def f(v):
        return apply_image_net(params, jnp.asarray(v).reshape(1, 4, 4, 1), cfg)[0]

    g = np.asarray(_agop(f, x, chunk_size=2))
    np.testing.assert_allclose(g, _fd_agop(f, x.reshape(2, 16)), rtol=1e-5, atol=1e-8)
