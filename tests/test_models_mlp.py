"""Bias-free MLP: gradients vs a float64 numpy backprop, per-sample gradient norms, He-normal init."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax.models import mlp as M
from fa_jax.models.mlp import MLP, apply_mlp

# jitted: one program per call site and shape (eager, every primitive would compile its own tiny XLA program)
init_mlp = jax.jit(M.init_mlp, static_argnums=(1, 2, 3))
normal = jax.jit(jax.random.normal, static_argnums=1)


def numpy_backprop(ks, x, y, relu=False):
    """Hand-written backprop of mean (f - y)^2 for f = sigma(...sigma(x K1)...) K_L (float64)."""
    hs, zs = [x], []
    for i, k in enumerate(ks):
        z = hs[-1] @ k
        zs.append(z)
        hs.append(np.maximum(z, 0) if relu and i < len(ks) - 1 else z)
    f = hs[-1][:, 0]
    delta = (2.0 / len(y) * (f - y))[:, None]  # dL/dz_L
    grads = [None] * len(ks)
    for i in reversed(range(len(ks))):
        grads[i] = hs[i].T @ delta
        if i > 0:
            delta = delta @ ks[i].T
            if relu:
                delta = delta * (zs[i - 1] > 0)
    return grads


@pytest.mark.parametrize("relu", [False, True])
def test_gradients_match_numpy_backprop(x64, relu):
    cfg = MLP(widths=(4, 3), activation="relu" if relu else "identity").validate()
    ks = init_mlp(jax.random.PRNGKey(0), cfg, 5)
    x = np.asarray(normal(jax.random.PRNGKey(1), (9, 5)))
    y = np.asarray(normal(jax.random.PRNGKey(2), (9,)))
    g = jax.jit(jax.grad(lambda p: jnp.mean((apply_mlp(p, x, cfg.activation)[:, 0] - y) ** 2)))(ks)
    ref = numpy_backprop([np.asarray(k) for k in ks], x, y, relu)
    for a, b in zip(g, ref):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-14)


def test_per_sample_grad_norms_and_input_gradients(x64):
    cfg = MLP(widths=(4, 3), activation="relu").validate()
    ks = init_mlp(jax.random.PRNGKey(3), cfg, 5)
    x = np.asarray(normal(jax.random.PRNGKey(4), (6, 5)))
    grad_one = jax.jit(jax.grad(lambda p, xi: apply_mlp(p, xi[None], "relu")[0, 0]))  # one sample's gradient
    ref = [sum(float(np.sum(np.asarray(g) ** 2)) for g in grad_one(ks, xi)) for xi in x]
    np.testing.assert_allclose(np.asarray(jax.jit(M.per_sample_grad_sq_norm, static_argnums=2)(ks, x, "relu")), ref,
                               rtol=1e-12)
    lin = init_mlp(jax.random.PRNGKey(5), MLP(widths=(4, 3)), 5)
    e2e, in_grads, out = jax.jit(lambda lin, x: (M.end_to_end(lin), M.input_gradients(lin, x), apply_mlp(lin, x)))(
        lin, x)
    e2e = np.asarray(e2e)[:, 0]
    np.testing.assert_allclose(np.asarray(in_grads), np.tile(e2e, (6, 1)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(out)[:, 0], x @ e2e, rtol=1e-12)


def test_he_normal_plain_init():
    ks = init_mlp(jax.random.PRNGKey(0), MLP(widths=(400,)).validate(), 300, 200)
    for k, fan_in in zip(ks, (300, 400)):
        a = np.asarray(k)
        std = np.sqrt(2.0 / fan_in)
        assert abs(a.std() / std - 1) < 0.01
        # plain normal, not truncated: ~0.27% of entries beyond 3 sd (truncation at 2 sd would give 0)
        assert 0.001 < np.mean(np.abs(a) > 2.5 * std) < 0.03
    assert [k.shape for k in ks] == [(300, 400), (400, 200)]


def test_bad_config():
    with pytest.raises(ValueError, match="model.activation"):
        MLP(activation="tanh").validate()
    with pytest.raises(ValueError, match="model.widths"):
        MLP(widths=(0,)).validate()
