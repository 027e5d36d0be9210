"""Independent float64 numpy references for the pieces of :mod:`fa_jax.experiments.hold_me_tight` the checks rest
on: the flip-mirror error (D2), Spearman's rho (P6), the sign-test statistic (P8/P10), the triangular learning-rate
schedule and one adversarial-training step (l2 PGD inner loop + CE gradient + clip / weight decay / momentum /
schedule), each written from its formula, never by calling the code under test."""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax.experiments.hold_me_tight import (
    HMTRun,
    adversarial_loss,
    exceeds_fraction,
    mirror_error,
    optimizer_of,
    spearman,
    triangular,
)
from fa_jax.optim import OptimConfig
from fa_jax.trainer import TrainConfig


# ----------------------------------------------------------------------------- mirror error
def _median(v):
    v = sorted(float(a) for a in v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def _mirror_reference(ma, fa, mb, fb, order):
    s, p = ma.shape
    rels, agree = [], 0
    for i in range(s):
        j = order[i]
        for k in range(p):
            agree += fa[i, k] == fb[j, k]
            if fa[i, k] and fb[j, k] and math.isfinite(ma[i, k]) and math.isfinite(mb[j, k]):
                rels.append(abs(ma[i, k] - mb[j, k]) / abs(ma[i, k]))
    prof = [abs(_median(ma[i]) - _median(mb[order[i]])) / abs(_median(ma[i])) for i in range(s)]
    return {"max_rel": max(rels), "median_rel": _median(rels), "flag_agreement": agree / (s * p),
            "profile_max_rel": max(prof)}


def test_mirror_error_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    s, p = 6, 9
    ma = rng.uniform(0.5, 3.0, (s, p))
    fa = rng.uniform(size=(s, p)) > 0.2
    order = rng.permutation(s)
    inv = np.argsort(order)
    mb = ma[inv] * (1 + 1e-3 * rng.standard_normal((s, p)))  # b[order[i]] ~ a[i]
    fb = fa[inv].copy()
    fb[0, 0] = ~fb[0, 0]  # one disagreeing flag
    mb[1, 2] = np.inf  # a non-finite entry is excluded from the pointwise error
    got = mirror_error({"margin": ma, "flipped": fa}, {"margin": mb, "flipped": fb}, order)
    want = _mirror_reference(ma, fa, mb, fb, order)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k
    assert got["flag_agreement"] == pytest.approx(1 - 1 / (s * p))
    # the identity (b = a mirrored exactly) gives zero errors; the wrong order does not
    exact = mirror_error({"margin": ma, "flipped": fa}, {"margin": ma[inv], "flipped": fa[inv]}, order)
    assert exact["max_rel"] == 0 and exact["profile_max_rel"] == 0 and exact["flag_agreement"] == 1
    wrong = mirror_error({"margin": ma, "flipped": fa}, {"margin": ma[inv], "flipped": fa[inv]}, slice(None))
    assert wrong["max_rel"] > 0.1


# ----------------------------------------------------------------------------- Spearman, sign test
@pytest.mark.parametrize("n", [3, 5, 12, 40])
def test_spearman_matches_the_rank_difference_formula(n):
    rng = np.random.default_rng(n)
    x, y = rng.standard_normal(n), rng.standard_normal(n)
    rank = lambda v: np.array([sum(b < a for b in v) for a in v], float)
    d = rank(x) - rank(y)
    assert spearman(x, y) == pytest.approx(1 - 6 * np.sum(d ** 2) / (n * (n ** 2 - 1)), abs=1e-12)
    assert spearman(x, -3 * x + 1) == pytest.approx(-1.0)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)  # rank-based: any increasing map
    assert math.isnan(spearman(x, np.ones(n)))  # no order: undefined, never a spurious +-1


def test_spearman_gives_ties_their_average_rank():
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([5.0, 5.0, 1.0, 0.0])
    rx, ry = np.array([1, 2, 3, 4.0]), np.array([3.5, 3.5, 2, 1.0])  # average ranks by hand
    want = np.sum((rx - rx.mean()) * (ry - ry.mean())) / math.sqrt(np.sum((rx - rx.mean()) ** 2)
                                                                   * np.sum((ry - ry.mean()) ** 2))
    assert spearman(x, y) == pytest.approx(want, abs=1e-12)


def test_exceeds_fraction_counts_strict_wins_and_nan_as_losses():
    first = np.array([1.0, 2.0, 3.0, np.nan, 5.0, np.inf])
    second = np.array([2.0, 2.0, 1.0, 9.0, np.nan, np.inf])
    assert exceeds_fraction(first, second) == pytest.approx(1 / 6)


# ----------------------------------------------------------------------------- triangular schedule
@pytest.mark.parametrize("peak, frac, steps", [(0.05, 0.4, 1560), (0.21, 0.4, 30), (1.0, 0.25, 7)])
def test_triangular_schedule_matches_the_piecewise_linear_formula(peak, frac, steps):
    tp = frac * steps
    want = np.array([peak * t / tp if t <= tp else peak * (steps - t) / (steps - tp) for t in range(steps + 1)])
    with jax.enable_x64(True):
        got = np.asarray(jax.jit(jax.vmap(triangular(peak, frac, steps)))(np.arange(steps + 1)))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert want[0] == 0 and want[-1] == pytest.approx(0, abs=1e-15) and want.max() <= peak


# ----------------------------------------------------------------------------- adversarial training step
def _net_np(p, x):
    z = x @ p["W1"] + p["b1"]
    h = np.maximum(z, 0)
    return h @ p["W2"] + p["b2"], z, h


def _pgd_np(p, x, y, eps, steps, rel_step):
    """l2 PGD on the multi-class margin f_y - max_{k != y} f_k (descended), from delta = 0, hand gradients."""
    delta = np.zeros_like(x)
    for _ in range(steps):
        f, z, _ = _net_np(p, x + delta)
        g = np.zeros_like(x)
        for i in range(x.shape[0]):
            other = [k for k in range(f.shape[1]) if k != y[i]]
            k = other[int(np.argmax(f[i, other]))]
            dm_dz = (p["W2"][:, y[i]] - p["W2"][:, k]) * (z[i] > 0)
            g[i] = -(p["W1"] @ dm_dz)  # ascend -margin
        delta = delta + rel_step * eps * g / np.linalg.norm(g, axis=1, keepdims=True)
        nrm = np.linalg.norm(delta, axis=1, keepdims=True)
        delta = delta * np.minimum(1.0, eps / nrm)
    return delta


def _ce_grad_np(p, x, y):
    """Gradient of mean_i CE(f(x_i), y_i) by hand back-propagation."""
    f, z, h = _net_np(p, x)
    e = np.exp(f - f.max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    dlog = (prob - np.eye(f.shape[1])[y]) / x.shape[0]
    dz = (dlog @ p["W2"].T) * (z > 0)
    return {"W1": x.T @ dz, "b1": dz.sum(0), "W2": h.T @ dlog, "b2": dlog.sum(0)}


def test_adversarial_training_steps_match_a_hand_computed_numpy_step():
    """Two updates of adversarial training on a tiny ReLU net (D = 5, 4 hidden units, 3 classes, batch 4): the
    PGD perturbation (3 steps of 0.4 eps), the CE gradient at x + delta with no gradient through delta, then the
    clip (global norm 0.5), weight decay and momentum, times the triangular lr at t = 0 (0) and t = 1."""
    rng = np.random.default_rng(3)
    d, h, c, n = 5, 4, 3, 4
    p0 = {"W1": rng.standard_normal((d, h)), "b1": 0.1 * rng.standard_normal(h),
          "W2": rng.standard_normal((h, c)), "b2": 0.1 * rng.standard_normal(c)}
    x, y = rng.standard_normal((n, d)), np.array([0, 1, 2, 1])
    eps, steps, rel, wd, mom, clip, peak, frac, total = 0.3, 3, 0.4, 5e-4, 0.9, 0.5, 0.05, 0.4, 10

    # numpy reference
    p, buf = {k: v.copy() for k, v in p0.items()}, None
    for t in range(2):
        delta = _pgd_np(p, x, y, eps, steps, rel)
        g = _ce_grad_np(p, x + delta, y)
        gn = math.sqrt(sum(np.sum(v ** 2) for v in g.values()))
        g = {k: v * min(1.0, clip / gn) + wd * p[k] for k, v in g.items()}
        buf = g if buf is None else {k: g[k] + mom * buf[k] for k in g}
        tp = frac * total
        lr = peak * t / tp if t <= tp else peak * (total - t) / (total - tp)
        p = {k: p[k] - lr * buf[k] for k in p}
    assert gn > clip  # the clip is active in this case (so it is tested)

    cfg = dataclasses.replace(HMTRun(), optim=OptimConfig(name="momentum", lr=peak, batch_size=n, momentum=mom,
                                                          weight_decay=wd, clip_norm=clip),
                              peak_frac=frac, train=TrainConfig(steps=total, n_records=2))
    with jax.enable_x64(True):
        def logits_fn(q, xb):
            return jnp.maximum(xb @ q["W1"] + q["b1"], 0) @ q["W2"] + q["b2"]

        def objective(q):
            return jnp.mean(adversarial_loss(logits_fn, q, jnp.asarray(x), jnp.asarray(y), eps, steps, rel))

        tx = optimizer_of(cfg)

        @jax.jit  # one program for the step (eager, each primitive would compile its own)
        def train_step(q, state):
            upd, state = tx.update(jax.grad(objective)(q), state, q)
            return jax.tree.map(lambda a, u: a + u, q, upd), state

        q = p0
        state = jax.jit(tx.init)(q)
        for _ in range(2):
            q, state = train_step(q, state)
    for k in p:
        np.testing.assert_allclose(np.asarray(q[k]), p[k], rtol=1e-10, atol=1e-13, err_msg=k)
    # the step moved the parameters (lr(1) > 0) and differs from clean training
    assert max(np.max(np.abs(p[k] - p0[k])) for k in p) > 1e-4
    g_clean = _ce_grad_np(p0, x, y)
    g_adv = _ce_grad_np(p0, x + _pgd_np(p0, x, y, eps, steps, rel), y)
    assert max(np.max(np.abs(g_clean[k] - g_adv[k])) for k in g_clean) > 1e-3


def test_official_schedule_values_at_epochs_0_12_30():
    """The official recipe (scripts/margin_mnist.py + utils.py train): the update of iteration i of epoch e uses
    np.interp(e + (i + 1) / n_b, [0, 12, 30], [0, 0.21, 0]); triangular(..., shift=1) at update t = e n_b + i."""
    from fa_jax_sims.hold_me_tight import OFFICIAL

    nb, epochs = 40, OFFICIAL["epochs"]
    steps = epochs * nb
    ref = lambda ep: float(np.interp(ep, [0, epochs * 2 // 5, epochs], [0, OFFICIAL["lr"], 0]))
    assert (ref(0), ref(12), ref(30)) == (0.0, 0.21, 0.0)
    with jax.enable_x64(True):
        f = triangular(OFFICIAL["lr"], OFFICIAL["peak_frac"], steps, OFFICIAL["schedule_shift"])
        got = np.asarray(jax.jit(jax.vmap(f))(np.arange(steps)))
    want = np.array([ref(t // nb + (t % nb + 1) / nb) for t in range(steps)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert got[12 * nb - 1] == pytest.approx(0.21) and got[-1] == 0.0 and got[0] == pytest.approx(0.21 / (12 * nb))


def test_zero_gradient_rows_shrink_by_the_predicted_weight_decay_factor(x64):
    """The run's optimizer (clip + wd + momentum + schedule) on a parameter with an exactly-zero gradient next to
    one with a large gradient (so the clip is active): the zero-gradient one is multiplied by
    theory.weight_decay_factor, and an independent float64 loop of PyTorch's SGD gives the same number."""
    from fa_jax.experiments.hold_me_tight import HMTRun, optimizer_of
    from fa_jax.theory.hold_me_tight import weight_decay_factor

    steps = 50
    cfg = HMTRun(optim=OptimConfig(name="momentum", lr=0.21, batch_size=128, momentum=0.9, weight_decay=5e-4,
                                   clip_norm=0.5), train=TrainConfig(steps=steps, n_records=2), schedule_shift=1)
    opt = optimizer_of(cfg)
    p = {"e": np.ones(3) * 1.7, "g": np.ones(2)}
    st = jax.jit(opt.init)(p)

    @jax.jit
    def step(p, st):
        up, st = opt.update({"e": jnp.zeros(3), "g": jnp.full(2, 10.0)}, st, p)
        return jax.tree.map(lambda a, b: a + b, p, up), st

    for _ in range(steps):
        p, st = step(p, st)
    ratio = float(p["e"][0] / 1.7)
    # PyTorch SGD: d_p = g + wd p; buf = m buf + d_p; p -= lr buf (lr from the official interp, shifted)
    th, buf = 1.0, 0.0
    for t in range(steps):
        lr = np.interp(t + 1, [0, 0.4 * steps, steps], [0, 0.21, 0])
        buf = 0.9 * buf + 5e-4 * th
        th -= lr * buf
    assert ratio == pytest.approx(th, rel=1e-12)
    assert weight_decay_factor(0.21, 0.4, steps, 5e-4, 0.9, 1) == pytest.approx(th, rel=1e-12)
