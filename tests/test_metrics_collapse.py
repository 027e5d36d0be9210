"""Neural-collapse metrics: a hand-computed 3-class example, a float64 numpy reference that forms the covariance
matrices explicitly, exact invariance to orthonormal maps (P10), and the per-stage MLP features."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from fa_jax.metrics import collapse as C
from fa_jax.models.mlp import MLP
from fa_jax.models.mlp import init_mlp as _init_mlp

init_mlp = jax.jit(_init_mlp, static_argnums=(1, 2, 3))  # one program (eager, each primitive compiles its own)

# one compiled program per shape instead of dozens of eager ops (test-time budget)
NC = jax.jit(C.nc_metrics, static_argnums=2)


def test_hand_computed_three_classes(x64):
    # class means (2, 0), (0, 2), (-2, -2) (mu_G = 0), residuals (+-1, 0), (0, +-1), (0, +-1):
    # Sigma_W = diag(1/3, 2/3), Sigma_B = (1/3)[[8, 4], [4, 8]], tr ratio = 1 / (16/3) = 3/16,
    # Sigma_B^{-1} = [[1/2, -1/4], [-1/4, 1/2]] -> (1/3) tr(Sigma_W Sigma_B^{-1}) = (1/3)(1/6 + 1/3) = 1/6,
    # u = (1, 0), (0, 1), -(1, 1)/sqrt2 -> NC2 = (2 (1/2)^2 + 4 (1/sqrt2 - 1/2)^2) / 9 = (7/2 - 2 sqrt2) / 9.
    h = jnp.asarray([[1.0, 0], [3, 0], [0, 1], [0, 3], [-2, -1], [-2, -3]])
    labels = jnp.asarray([0, 0, 1, 1, 2, 2])
    m = {k: float(v) for k, v in NC(h, labels, 3).items()}
    assert abs(m["nc1"] - 3 / 16) < 1e-14
    assert abs(m["nc1_papyan"] - 1 / 6) < 1e-13
    assert abs(m["nc2"] - (3.5 - 2 * math.sqrt(2)) / 9) < 1e-14
    assert abs(m["tr_sw"] - 1.0) < 1e-14 and abs(m["tr_sb"] - 16 / 3) < 1e-13 and abs(m["tr_st"] - 19 / 3) < 1e-13


def _numpy_reference(h, labels, k):
    n = len(h)
    mu = np.stack([h[labels == c].mean(0) for c in range(k)])
    mu_g = mu.mean(0)
    sb = sum(np.outer(m - mu_g, m - mu_g) for m in mu) / k
    sw = sum(np.outer(h[i] - mu[labels[i]], h[i] - mu[labels[i]]) for i in range(n)) / n
    u = (mu - mu_g) / np.linalg.norm(mu - mu_g, axis=1, keepdims=True)
    etf = k / (k - 1) * np.eye(k) - 1 / (k - 1)
    return {"nc1": np.trace(sw) / np.trace(sb), "nc1_papyan": np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10)) / k,
            "nc2": np.mean((u @ u.T - etf) ** 2)}


def test_vs_numpy_reference_unbalanced(x64):
    r = np.random.default_rng(0)
    k, p = 4, 7
    labels = np.array([0] * 5 + [1] * 3 + [2] * 8 + [3] * 4)
    h = r.normal(size=(len(labels), p)) + 2 * r.normal(size=(k, p))[labels]
    ref = _numpy_reference(h, labels, k)
    got = NC(jnp.asarray(h), jnp.asarray(labels), k)
    for key, v in ref.items():
        np.testing.assert_allclose(float(got[key]), v, rtol=1e-10)


def test_orthonormal_and_scale_invariance_exact(x64):
    r = np.random.default_rng(1)
    k, p, q = 3, 5, 9
    labels = jnp.asarray(np.repeat(np.arange(k), 6))
    h = jnp.asarray(r.normal(size=(18, p)) + r.normal(size=(k, p))[np.asarray(labels)])
    u = jnp.asarray(np.linalg.qr(r.normal(size=(q, p)))[0])  # (q, p), orthonormal columns
    base = NC(h, labels, k)
    rot = NC(3.7 * h @ u.T, labels, k)  # h -> 3.7 U h
    for key in ("nc1", "nc1_papyan", "nc2"):
        assert abs(float(rot[key]) / float(base[key]) - 1.0) < 1e-12, key


def test_stage_features_and_u_invariance(x64):
    cfg = MLP(widths=(12, 5, 8), activation="relu")  # rectangular layers both ways
    params = init_mlp(jax.random.PRNGKey(0), cfg, 6, 3)
    r = np.random.default_rng(2)
    labels = jnp.asarray(np.repeat(np.arange(3), 10))
    x = jnp.asarray(r.normal(size=(30, 6)) + 2 * r.normal(size=(3, 6))[np.asarray(labels)])

    @jax.jit
    def compute(params, x):
        stages = C.mlp_stage_features(params, x, "relu")
        nc1 = [(C.nc1(st["svt"], labels, 3), C.nc1(st["pre"], labels, 3)) for st in stages]
        return stages, nc1

    stages, nc1s = compute(params, x)
    assert len(stages) == 3 and stages[1]["svt"].shape == (30, 5)
    h = x
    for layer, st in enumerate(stages):
        np.testing.assert_allclose(np.asarray(st["phi"]), np.asarray(h), atol=1e-12)
        np.testing.assert_allclose(np.asarray(st["pre"]), np.asarray(h @ params[layer]), atol=1e-12)
        h = jnp.maximum(st["pre"], 0.0)
        np.testing.assert_allclose(np.asarray(st["out"]), np.asarray(h), atol=1e-12)
        a, b = nc1s[layer]  # P10: U cannot change NC1
        assert abs(float(a) / float(b) - 1.0) < 1e-10
    fr = float(C.frac_right(1.0, 0.25, 0.5))
    assert abs(fr - math.log(4) / math.log(2)) < 1e-12
