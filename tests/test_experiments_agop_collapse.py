"""Whole-run references for :mod:`fa_jax.experiments.agop_collapse` on tiny cases, in float64 numpy written from the
formulas of spec ``agop_collapse.md`` (2.1-2.5), never by calling the code under test:

* Deep RFM, two layers on 20 mixture points (ReLU and cosine features): per layer the NC1 / NC2 of the stages X_l,
  X_l M_l^{1/2}, Phi(X_l M_l^{1/2}) and the AGOP's top-K trace share, from an explicit Laplace kernel solve, the
  closed-form predictor gradients with the self term dropped, the max-normalised AGOP and an eigh square root. The
  random feature weights are drawn with the documented key schedule (layer l: fold_in(PRNGKey(seed), l), split into
  weight / bias keys) -- the only thing taken from JAX.
* The MLP: a full-batch Adam run of a 2-hidden-layer bias-free ReLU net, re-trained in numpy (hand-written
  backprop of the mean squared error on +-1 targets, Adam with bias correction) from the same float32 init, and
  every record recomputed from the numpy parameters: loss, accuracy, per-layer NC1 of phi / S V^T phi /
  U S V^T phi / ReLU(.), frac_right, the NFA correlations (explicit per-sample Jacobians) and tr S_W / tr S_T,
  tr S_B / tr S_T at the last hidden layer.
"""
from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest

from fa_jax.data.mixture import GaussianMixture
from fa_jax.experiments.agop_collapse import (
    AgopCollapseRun,
    CollapseData,
    DeepRFMSpec,
    MLPSpec,
    lapack_single_threaded,
    make_data,
    run_agop_collapse,
)
from fa_jax.models.mlp import MLP, init_mlp
from fa_jax.optim import OptimConfig
from fa_jax.sweep import run_sweep
from fa_jax.trainer import TrainConfig

# The references' inputs as one jitted program each (config static), not eagerly: eager, every primitive of the data
# draw / init would compile its own tiny XLA program (~60 of them, more than the run's own compile time).
make_data_program = jax.jit(make_data, static_argnums=0)
init_mlp_program = jax.jit(init_mlp, static_argnums=(1, 2, 3, 4))


@functools.partial(jax.jit, static_argnames=("feature", "width", "d"))
def feature_draws(seed, layer, *, feature, width, d):
    """Layer ``layer``'s random draws by the documented key schedule: fold_in(PRNGKey(seed), layer) split into weight
    / bias keys; relu: W ~ U(+-1/sqrt(d)) ``(width, d)``; cos: a standard Cauchy ``(d, d)`` and b ~ U(0, 2 pi)."""
    kw, kb = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), layer))
    if feature == "relu":
        return jax.random.uniform(kw, (width, d), np.float64, -1 / math.sqrt(d), 1 / math.sqrt(d)), None
    return jax.random.cauchy(kw, (d, d), np.float64), jax.random.uniform(kb, (d,), np.float64, 0.0, 2 * np.pi)


# ------------------------------------------------------------------------------------------------ references
def ref_nc(h, labels, k):
    """Textbook NC1 = tr S_W / tr S_B, NC2 = mean (G - ETF)^2, tr S_W / tr S_T, tr S_B / tr S_T (spec 2.5)."""
    h = np.asarray(h, np.float64)
    n = len(h)
    mu = np.stack([h[labels == c].mean(0) for c in range(k)])
    mg = mu.mean(0)
    sw = sum(np.outer(v, v) for v in h - mu[labels]) / n
    sb = sum(np.outer(v, v) for v in mu - mg) / k
    st = sum(np.outer(v, v) for v in h - mg) / n
    u = (mu - mg) / np.linalg.norm(mu - mg, axis=1, keepdims=True)
    etf = k / (k - 1.0) * np.eye(k) - 1.0 / (k - 1.0)
    return {"nc1": np.trace(sw) / np.trace(sb), "nc2": np.mean((u @ u.T - etf) ** 2),
            "sw_st": np.trace(sw) / np.trace(st), "sb_st": np.trace(sb) / np.trace(st)}


def psd_root(a, power):
    lam, v = np.linalg.eigh(a)
    return (v * np.clip(lam, 0.0, None) ** power) @ v.T


def ref_deep_rfm(x, y, labels, k, *, depth, seed, bandwidth, ridge, power, feature, width, gamma):
    """Deep RFM (spec 2.4) in numpy: per-layer stats of the stages x, z, phi."""
    out = {"x": [], "z": [], "phi": [], "topk": []}
    h = np.asarray(x, np.float64)
    for layer in range(depth):
        h = h / np.linalg.norm(h, axis=1, keepdims=True)
        n, d = h.shape
        dist = np.sqrt(np.maximum(((h[:, None, :] - h[None, :, :]) ** 2).sum(-1), 0.0))
        kmat = np.exp(-dist / bandwidth)
        alpha = np.linalg.solve(kmat + ridge * np.eye(n), y)
        agop = np.zeros((d, d))
        for i in range(n):
            grad = np.zeros((k, d))  # grad f_c(x_i) = (1/L) sum_{j != i} alpha_jc k_ij / ||x_i - x_j|| (x_j - x_i)
            for j in range(n):
                if j != i and dist[i, j] >= 1e-10:  # the spec drops the self term and coincident points
                    grad += np.outer(alpha[j], kmat[i, j] / (bandwidth * dist[i, j]) * (h[j] - h[i]))
            agop += grad.T @ grad
        agop /= n
        m = agop / np.abs(agop).max()
        z = h @ psd_root(m, power)
        w, b = feature_draws(seed, layer, feature=feature, width=width, d=d)
        if feature == "relu":
            w = np.asarray(w)
            phi = np.maximum(z @ w.T, 0.0)
        else:  # cos, D = d
            w, b = gamma * np.asarray(w), np.asarray(b)
            phi = math.sqrt(2.0 / d) * np.cos(z @ w.T + b)
        lam = np.linalg.eigvalsh(m)
        for name, v in (("x", h), ("z", z), ("phi", phi)):
            out[name].append(ref_nc(v, labels, k))
        out["topk"].append(np.sort(lam)[-min(k, d):].sum() / lam.sum())
        h = phi
    return out


@pytest.mark.parametrize("feature,mean_cosine", [("relu", 0.0), ("cos", 0.0), ("relu", 0.7)])
def test_deep_rfm_run_matches_numpy_reference(x64, feature, mean_cosine):
    # mean_cosine > 0: the chained-means mixture of the P4 check (its NC2 metrics against the numpy reference)
    mix = GaussianMixture(k=4, d=6, n_per_class=5, separation=2.0, within_std=1.0, mean_spread=0.5, seed=3,
                          mean_cosine=mean_cosine)
    spec = DeepRFMSpec(depth=2, bandwidth=2.0, ridge=1e-3, power=0.5, feature=feature, width=8 if feature == "relu"
                       else 0, gamma=0.7, feature_seed=5)
    cfg = AgopCollapseRun("deep_rfm", CollapseData(mixture=mix), spec).validate()
    with lapack_single_threaded():
        res = run_sweep(run_agop_collapse, [cfg])[0]
        x, labels, y = (np.asarray(a) for a in make_data_program(cfg.data))
    ref = ref_deep_rfm(x, y, labels, 4, depth=2, seed=5, bandwidth=2.0, ridge=1e-3, power=0.5, feature=feature,
                       width=8, gamma=0.7)
    assert np.all(np.isfinite(np.asarray(res["layers"]["phi"]["nc1"])))
    for stage in ("x", "z", "phi"):
        for key in ("nc1", "nc2"):
            np.testing.assert_allclose(np.asarray(res["layers"][stage][key]), [r[key] for r in ref[stage]],
                                       rtol=1e-8, err_msg=f"{stage}.{key}")
    np.testing.assert_allclose(np.asarray(res["layers"]["agop_topk_frac"]), ref["topk"], rtol=1e-8)
    assert not bool(res["diverged"])
    # the reference is not trivially satisfied: the AGOP projection changes NC1 at every layer
    assert all(abs(r["nc1"] / q["nc1"] - 1) > 1e-3 for r, q in zip(ref["x"], ref["z"]))


# ------------------------------------------------------------------------------------------------ MLP
def ref_forward(params, x):
    hs, zs = [x], []
    for kmat in params[:-1]:
        zs.append(hs[-1] @ kmat)
        hs.append(np.maximum(zs[-1], 0.0))
    return hs[-1] @ params[-1], hs, zs


def ref_grads(params, x, y):
    """d/dK_l of mean_i mean_c (f_ic - y_ic)^2 (hand-written backprop)."""
    f, hs, zs = ref_forward(params, x)
    delta = 2.0 * (f - y) / f.size
    grads = [None] * len(params)
    for layer in range(len(params) - 1, -1, -1):
        grads[layer] = hs[layer].T @ delta
        if layer:
            delta = (delta @ params[layer].T) * (zs[layer - 1] > 0)
    return grads


def ref_adam(params, x, y, steps, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Full-batch Adam (bias-corrected, eps outside the root); returns the parameters after each step 0..steps."""
    p = [np.asarray(w, np.float64) for w in params]
    m = [np.zeros_like(w) for w in p]
    v = [np.zeros_like(w) for w in p]
    hist = [[w.copy() for w in p]]
    for t in range(1, steps + 1):
        g = ref_grads(p, x, y)
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            p[i] = p[i] - lr * (m[i] / (1 - b1 ** t)) / (np.sqrt(v[i] / (1 - b2 ** t)) + eps)
        hist.append([w.copy() for w in p])
    return hist


def ref_jacobian_agop(params, x, layer):
    """Mean over the points of J^T J, J = d f / d h_{layer-1} (K, n_{layer-1}) written out for a ReLU net."""
    _, _, zs = ref_forward(params, x)
    total = 0.0
    for i in range(len(x)):
        jac = params[-1].T  # (K, n_{L-1})
        for lay in range(len(params) - 2, layer - 1, -1):
            jac = (jac * (zs[lay][i] > 0)[None, :]) @ params[lay].T
        total = total + jac.T @ jac
    return total / len(x)


def pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def ref_records(p, x, y, labels, k, rows):
    f, hs, zs = ref_forward(p, x)
    n_hidden = len(p) - 1
    out = {"loss": np.mean((f - y) ** 2), "acc": np.mean(np.argmax(f, 1) == labels)}
    nc = {s: [] for s in ("phi", "svt", "pre", "out")}
    for layer in range(n_hidden):
        u, s, _ = np.linalg.svd(p[layer], full_matrices=False)  # K_l = u s vh (fa-jax layout h @ K_l)
        for name, h in (("phi", hs[layer]), ("svt", hs[layer] @ u * s), ("pre", zs[layer]),
                        ("out", hs[layer + 1])):
            nc[name].append(ref_nc(h, labels, k)["nc1"])
    out["nc1"] = {s: np.asarray(v) for s, v in nc.items()}
    lp, ls, lo = (np.log(out["nc1"][s]) for s in ("phi", "svt", "out"))
    out["frac_right"] = (lp - ls) / (lp - lo)
    half, one = [], []
    for layer in range(n_hidden):
        g = ref_jacobian_agop(p, x[rows], layer)
        wtw = p[layer] @ p[layer].T  # W^T W with W = K^T
        half.append(pearson(wtw, psd_root(g, 0.5)))
        one.append(pearson(wtw, g))
    out["nfa_half"], out["nfa_one"] = np.asarray(half), np.asarray(one)
    last = ref_nc(hs[-1], labels, k)
    out["sw_over_st"], out["sb_over_st"] = last["sw_st"], last["sb_st"]
    return out


@pytest.mark.parametrize("n_agop", [12, 0])
def test_mlp_run_matches_numpy_reference(x64, n_agop):
    """``n_agop = 12``: an evenly spread subset of the 24 points; ``0``: the AGOP over all of them (the default, as
    the official nc_nn.py)."""
    mix = GaussianMixture(k=3, d=8, n_per_class=8, separation=3.0, within_std=1.0, mean_spread=0.5, seed=1)
    steps, n_records, lr = 6, 3, 0.02
    model = MLP(widths=(7, 5), activation="relu", init_scale=0.5, init="xavier_uniform")
    spec = MLPSpec(model=model, optim=OptimConfig(name="adam", lr=lr),  # full batch: deterministic
                   train=TrainConfig(steps=steps, n_records=n_records, plan="linear"), n_agop=n_agop, seed=4)
    cfg = AgopCollapseRun("mlp", CollapseData(mixture=mix), mlp=spec).validate()
    with lapack_single_threaded():
        res = run_sweep(run_agop_collapse, [cfg])[0]
        x, labels, y = (np.asarray(a) for a in make_data_program(cfg.data))
    k_init, _ = jax.random.split(jax.random.PRNGKey(4))
    p0 = [np.asarray(w, np.float64) for w in init_mlp_program(k_init, model, 8, 3, np.float32)]
    hist = ref_adam(p0, x, y, steps, lr)
    plan = np.asarray(res["plan"])
    rows = np.unique(np.linspace(0, len(x) - 1, 12).round().astype(int)) if n_agop else np.arange(len(x))
    rec = res["records"]
    for r, t in enumerate(plan):
        ref = ref_records(hist[int(t)], x, y, labels, 3, rows)
        # float32 training vs float64 reference: parameters agree to ~1e-6 relative after a few Adam steps
        for key in ("loss", "sw_over_st", "sb_over_st"):
            np.testing.assert_allclose(float(np.asarray(rec[key])[r]), ref[key], rtol=2e-4, err_msg=f"{t} {key}")
        assert float(np.asarray(rec["acc"])[r]) == pytest.approx(ref["acc"])
        for s in ("phi", "svt", "pre", "out"):
            np.testing.assert_allclose(np.asarray(rec["nc1"][s])[r], ref["nc1"][s], rtol=2e-4, err_msg=f"{t} {s}")
        for key in ("frac_right", "nfa_half", "nfa_one"):
            np.testing.assert_allclose(np.asarray(rec[key])[r], ref[key], rtol=2e-3, atol=2e-4,
                                       err_msg=f"{t} {key}")
    # the run trained (the reference is not comparing two frozen nets)
    assert plan[0] == 0 and plan[-1] == steps
    assert ref_records(hist[-1], x, y, labels, 3, rows)["loss"] < 0.9 * ref_records(hist[0], x, y, labels, 3,
                                                                                      rows)["loss"]
    assert not bool(res["diverged"])
