"""Kernel machines: Laplace KRR vs a float64 numpy solve, closed-form predictor gradients vs autodiff, the AGOP's
self-term convention vs a numpy loop, RFM / diagonal RFM finding the relevant coordinate, the exact one-step
linear-kernel collapse (P6) and its ridge dependence, random Fourier features vs the l1-Laplace kernel, and the
memory-budget refusal."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax.kernels import rfm as R
from fa_jax.metrics.collapse import nc1

# Each test's JAX part is jitted (one program per call site and shape): eager, every primitive compiles its own
# tiny XLA program.
nc1_jit = jax.jit(nc1, static_argnums=2)
random_features = jax.jit(R.random_features, static_argnames=("feature", "width"))


def _np_kernel(x, z, m, bw, kernel):
    diff = x[:, None, :] - z[None, :, :]
    d2 = np.einsum("abi,ij,abj->ab", diff, m, diff)
    if kernel == "laplace":
        return np.exp(-np.sqrt(np.maximum(d2, 0)) / bw)
    if kernel == "gaussian":
        return np.exp(-d2 / (2 * bw ** 2))
    return x @ m @ z.T


def _psd(r, d):
    q = r.normal(size=(d, d))
    return q @ q.T / d + 0.1 * np.eye(d)


@pytest.mark.parametrize("kernel", ["laplace", "gaussian"])
def test_krr_vs_numpy_float64(x64, kernel):
    r = np.random.default_rng(0)
    x, y, m = r.normal(size=(25, 4)), r.normal(size=(25, 3)), _psd(r, 4)

    @jax.jit
    def solve(x, m, y):
        kmat = R.kernel_matrix(x, x, m, 1.7, kernel)  # the same array twice: exact-zero diagonal
        return kmat, R.krr_solve(kmat, y, 1e-3)

    kmat, alpha = solve(x, m, y)
    ref_k = _np_kernel(x, x, m, 1.7, kernel)
    np.testing.assert_allclose(np.asarray(kmat), ref_k, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(alpha), np.linalg.solve(ref_k + 1e-3 * np.eye(25), y), rtol=1e-9)


@pytest.mark.parametrize("kernel", ["laplace", "gaussian", "linear"])
def test_gradients_vs_autodiff(x64, kernel):
    r = np.random.default_rng(1)
    x, alpha, m = jnp.asarray(r.normal(size=(12, 3))), jnp.asarray(r.normal(size=(12, 2))), jnp.asarray(_psd(r, 3))
    xq = jnp.asarray(r.normal(size=(5, 3)))  # off the training points (the Laplace kernel is not smooth there)

    def f(v):
        return R.kernel_matrix(v[None], x, m, 0.8, kernel)[0] @ alpha

    ref, got = jax.jit(lambda xq: (jax.vmap(jax.jacrev(f))(xq), R.predictor_gradients(xq, x, alpha, m, 0.8, kernel)))(
        xq)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-9, atol=1e-12)


def test_laplace_agop_self_term_convention_vs_numpy(x64):
    r = np.random.default_rng(2)
    n, d, c, bw = 9, 3, 2, 1.3
    x, alpha, m = r.normal(size=(n, d)), r.normal(size=(n, c)), _psd(r, d)
    tot = np.zeros((d, d))
    for i in range(n):
        g = np.zeros((c, d))
        for j in range(n):
            if j == i:
                continue  # the training point's own term is 0
            dist = np.sqrt((x[i] - x[j]) @ m @ (x[i] - x[j]))
            g += np.outer(alpha[j], m @ (x[j] - x[i])) * np.exp(-dist / bw) / (bw * dist)
        tot += g.T @ g
    got, diag = jax.jit(lambda x, alpha, m: (R.kernel_agop(x, alpha, m, bw, "laplace", chunk_size=4),
                                             R.kernel_agop(x, alpha, m, bw, "laplace", diagonal=True)))(x, alpha, m)
    np.testing.assert_allclose(np.asarray(got), tot / n, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(diag), np.diag(tot / n), rtol=1e-10)


def test_rfm_finds_the_relevant_coordinate(x64):
    r = np.random.default_rng(3)
    x = r.normal(size=(80, 5))
    y = np.stack([np.tanh(2 * x[:, 0]), -np.tanh(2 * x[:, 0])], axis=1)
    for diagonal in (False, True):
        m, alpha, hist = jax.jit(lambda a, b: R.rfm(a, b, bandwidth=2.0, ridge=1e-3, iters=3,
                                                    diagonal=diagonal))(x, y)  # noqa: B023 - called at once
        dm = np.asarray(m) if diagonal else np.diag(np.asarray(m))
        assert hist.shape[0] == 3 and np.argmax(dm) == 0 and dm[0] == pytest.approx(1.0)  # max-normalised
        assert dm[1:].max() < 0.2 * dm[0]
        assert np.all(np.isfinite(np.asarray(alpha)))


def test_one_step_linear_kernel_collapse(x64):
    # P6: ridgeless linear kernel with N <= d -> Gram of X M^{1/2} = Y Y^T, NC1 = 0; ridge lam -> A Y with
    # A = G (G + lam I)^{-1} (closed form), NC1 increasing in lam.
    r = np.random.default_rng(4)
    k, per, d = 3, 4, 20
    labels = np.repeat(np.arange(k), per)
    x = r.normal(size=(k * per, d))
    y = 2.0 * (labels[:, None] == np.arange(k)).astype(x.dtype) - 1.0
    lams = (0.0, 1e-2, 1.0, 10.0)

    @jax.jit
    def one_step(lam):
        alpha = R.krr_solve(R.kernel_matrix(x, x, None, 1.0, "linear"), y, lam)
        lam_g, v = jnp.linalg.eigh(R.kernel_agop(x, alpha, None, 1.0, "linear"))
        z = x @ ((v * jnp.sqrt(jnp.clip(lam_g, 0, None))) @ v.T)
        return z, nc1(z, labels, k)

    zs, vals = jax.vmap(one_step)(np.asarray(lams))
    vals = [float(v) for v in vals]
    zs = np.asarray(zs)
    gram = x @ x.T
    for i, lam in enumerate(lams):
        a = gram @ np.linalg.inv(gram + lam * np.eye(k * per))
        np.testing.assert_allclose(zs[i] @ zs[i].T, a @ y @ y.T @ a.T, atol=1e-9)
        if lam > 0:
            assert abs(vals[i] / float(nc1_jit(a @ y, labels, k)) - 1) < 1e-6
    assert vals[0] < 1e-10
    assert all(np.diff(vals) > 0)


def test_cosine_features_approximate_l1_laplace(x64):
    r = np.random.default_rng(5)
    z = r.normal(size=(4, 3)) * 0.5
    phi = np.asarray(random_features(jax.random.PRNGKey(0), z, feature="cos", gamma=0.7, width=40_000))
    ref = np.exp(-0.7 * np.abs(z[:, None] - z[None]).sum(-1))
    np.testing.assert_allclose(phi @ phi.T, ref, atol=0.03)
    relu = random_features(jax.random.PRNGKey(0), z, feature="relu", width=16)
    assert relu.shape == (4, 16) and float(relu.min()) >= 0


def test_kernel_agop_refuses_a_bad_chunk_size():
    with pytest.raises(ValueError, match="invalid chunk_size=0"):
        R.kernel_agop(jnp.ones((3, 2)), jnp.ones((3, 1)), chunk_size=0)


def test_memory_refusal():
    with pytest.raises(ValueError, match=r"invalid n=100000: allowed n <= .*smaller n"):
        R.check_kernel_memory(100_000, budget_bytes=2**30, dtype=jnp.float32)
    R.check_kernel_memory(1000, budget_bytes=2**30, dtype=jnp.float32)  # 16 MB fits
    assert R.kernel_memory_bytes(1000, jnp.float32, runs=2) == 2 * 4 * 4 * 10**6
    with pytest.raises(ValueError, match="invalid n=50000"):
        R.rfm(jnp.zeros((50_000, 2)), jnp.zeros((50_000, 1)), iters=1)  # ~40 GB in float32: refused before work
