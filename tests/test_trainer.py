"""fa_jax.trainer: record plans, records at the plan steps, full-batch GD, epoch sampling (each sample once per
epoch, last partial batch averaged over its own size), sampling with replacement, and memory (records scale with the
plan, not with the number of steps)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fa_jax.trainer import TrainConfig, _batch_indices, record_plan, train


# ----------------------------------------------------------------------------- record plan
@pytest.mark.parametrize("steps", [1, 2, 7, 20, 100, 3000])
@pytest.mark.parametrize("n_records", [2, 4, 20])
@pytest.mark.parametrize("spacing", ["log", "linear"])
def test_record_plan_properties(steps, n_records, spacing):
    plan = record_plan(steps, n_records, spacing)
    assert isinstance(plan, tuple) and all(type(t) is int for t in plan)
    assert plan[0] == 0 and plan[-1] == steps
    assert all(b > a for a, b in zip(plan, plan[1:]))
    assert len(plan) <= n_records
    assert len(plan) <= steps + 1
    if spacing == "log" and n_records > 2:
        assert 1 in plan  # the log plan resolves the first step
    if spacing == "linear" and steps >= n_records:
        assert len(plan) == n_records  # linear spacing never collides once steps >= n_records - 1
    if steps >= 100 * n_records:  # log: only the first few rounded points can collide
        assert len(plan) >= n_records - 2


def test_record_plan_log_two_records():
    """Docstring: '0, then n_records - 1 ... spaced steps up to steps' -> n_records = 2 is (0, steps)."""
    assert record_plan(100, 2, "log") == (0, 100)


def test_record_plan_spacings_by_hand():
    assert record_plan(100, 3, "linear") == (0, 50, 100)
    assert record_plan(100, 3, "log") == (0, 1, 100)
    assert record_plan(1000, 4, "log") == (0, 1, 32, 1000)  # geomspace(1, 1000, 3) = 1, 31.6, 1000
    lin = np.diff(record_plan(1000, 11, "linear"))
    assert np.all(lin == 100)
    # half-decade log spacing, rounded to integers
    assert record_plan(10000, 10, "log") == (0, 1, 3, 10, 32, 100, 316, 1000, 3162, 10000)


def test_record_plan_bad_spacing():
    with pytest.raises(ValueError, match="plan"):
        record_plan(10, 4, "cubic")


def test_train_config_validates():
    assert TrainConfig(steps=5, n_records=2).validate().steps == 5


# ----------------------------------------------------------------------------- helpers: a linear "model"
def lin_loss(p, x, y):
    """Per-sample loss <theta, x_i> (y unused): its batch gradient is the (weighted) mean of the batch's x."""
    return x @ p["th"]


def onehot_setup(n):
    x = jnp.eye(n)
    y = jnp.zeros(n)
    p0 = {"th": jnp.zeros(n)}
    return p0, x, y


# ----------------------------------------------------------------------------- full batch
def test_full_batch_gd_records_on_plan_quadratic(x64):
    """L = mean_i |theta - a_i|^2 / 2  =>  GD: theta_t - abar = (1 - lr)^t (theta_0 - abar)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 3))
    th0 = rng.standard_normal(3)
    lr = 0.3

    def loss(p, x, y):
        return 0.5 * jnp.sum((p["th"][None, :] - x) ** 2, axis=1)

    plan = (0, 1, 2, 5, 9)
    p, rec, _ = train(loss, {"th": jnp.asarray(th0)}, jnp.asarray(a), jnp.zeros(7), optax.sgd(lr), plan=plan,
                   record_fn=lambda p: {"th": p["th"], "norm": jnp.linalg.norm(p["th"])})
    abar = a.mean(0)
    expect = np.stack([abar + (1 - lr) ** t * (th0 - abar) for t in plan])
    np.testing.assert_allclose(np.asarray(rec["th"]), expect, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(rec["norm"]), np.linalg.norm(expect, axis=1), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(p["th"]), expect[-1], rtol=1e-12)


def test_train_rejects_bad_plans_and_batch():
    p0, x, y = onehot_setup(4)
    for plan in [(1, 2), (0, 2, 2), (0, 3, 1), ()]:
        with pytest.raises(ValueError, match="plan"):
            train(lin_loss, p0, x, y, optax.sgd(1.0), plan=plan)
    with pytest.raises(ValueError, match="batch_size"):
        train(lin_loss, p0, x, y, optax.sgd(1.0), plan=(0, 1), batch_size=5, key=jax.random.PRNGKey(0))


def test_records_length_equals_plan_and_memory_independent_of_steps():
    p0, x, y = onehot_setup(5)
    for steps in (10, 10_000):
        plan = record_plan(steps, 6, "log")
        run = jax.jit(lambda p: train(lin_loss, p, x, y, optax.sgd(1e-3), plan=plan,
                                      record_fn=lambda p: {"th": p["th"], "s": jnp.sum(p["th"])}))
        _, rec, _ = run(p0)
        assert rec["th"].shape == (len(plan), 5) and rec["s"].shape == (len(plan),)
        # GD on <theta, x_i>: theta_t = -lr t mean_i x_i = -lr t / n each coordinate
        np.testing.assert_allclose(np.asarray(rec["th"][:, 0]), -1e-3 * np.asarray(plan) / 5,
                                   rtol=3e-4)  # float32 sums of up to 1e4 equal steps
        # memory: the compiled program holds only len(plan) records whatever the number of steps
        hlo = run.lower(p0).compile().as_text()
        assert f"f32[{len(plan)},5]" in hlo
        assert f"f32[{steps + 1},5]" not in hlo and f"f32[{steps},5]" not in hlo


def test_record_fn_traced_once_initial_record_included():
    """The initial record is taken inside the scan (an empty first segment), so ``record_fn`` -- often the largest
    part of a program (attacks, radii) -- is traced, and compiled, once; its record at step 0 is the initial
    state's."""
    _, x, y = onehot_setup(3)
    traces = []

    def record_fn(p):
        traces.append(1)
        return {"th": p["th"]}

    run = jax.jit(lambda p: train(lin_loss, p, x, y, optax.sgd(0.3), plan=(0, 2, 5), record_fn=record_fn))
    _, rec, _ = run({"th": jnp.ones(3)})
    assert len(traces) == 1
    np.testing.assert_allclose(np.asarray(rec["th"])[:, 0], [1.0, 1 - 0.2, 1 - 0.5], rtol=1e-6)


# ----------------------------------------------------------------------------- epoch sampling
@pytest.mark.parametrize("n,b", [(10, 4), (7, 3), (9, 9), (5, 1), (6, 4)])
def test_batch_indices_epoch_cover_each_sample_once(n, b):
    key = jax.random.PRNGKey(3)
    nb = -(-n // b)
    for epoch in range(2):
        used = []
        sizes = []
        for i in range(nb):
            idx, w = _batch_indices(epoch * nb + i, key, n, b, "epoch")
            idx, w = np.asarray(idx), np.asarray(w)
            assert idx.shape == (b,) and w.shape == (b,)
            assert np.all((w == 0) | (w == 1))
            assert np.all(w[:-1] >= w[1:])  # the padding sits at the end
            used.extend(idx[w > 0].tolist())
            sizes.append(int(w.sum()))
        assert sorted(used) == list(range(n))  # every sample exactly once per epoch
        assert sizes == [b] * (n // b) + ([n % b] if n % b else [])
        # spec: epoch e uses permutation(fold_in(key, e), n), consecutive batches
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
        np.testing.assert_array_equal(np.asarray(used), perm)


def test_batch_indices_epochs_reshuffle():
    key = jax.random.PRNGKey(4)
    n, b = 20, 5
    e0 = np.concatenate([np.asarray(_batch_indices(t, key, n, b, "epoch")[0]) for t in range(4)])
    e1 = np.concatenate([np.asarray(_batch_indices(t, key, n, b, "epoch")[0]) for t in range(4, 8)])
    assert sorted(e0) == sorted(e1) == list(range(n))
    assert not np.array_equal(e0, e1)


def test_batch_indices_traced_step():
    key = jax.random.PRNGKey(5)
    f = jax.jit(lambda t: _batch_indices(t, key, 10, 4, "epoch"))
    for t in range(6):
        a, wa = f(jnp.int32(t))
        b, wb = _batch_indices(t, key, 10, 4, "epoch")
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))


@pytest.mark.parametrize("n,b", [(10, 4), (7, 3)])
def test_sgd_epoch_last_partial_batch_averaged_over_own_size(n, b):
    """Per-sample loss <theta, e_i>, sgd lr=1: one epoch moves coordinate i by -1/|batch(i)|, each i exactly once;
    a last batch of size r = n mod b moves its coordinates by -1/r (not -1/b)."""
    p0, x, y = onehot_setup(n)
    key = jax.random.PRNGKey(6)
    nb = -(-n // b)
    p, rec, _ = train(lin_loss, p0, x, y, optax.sgd(1.0), plan=(0, nb, 2 * nb), key=key, batch_size=b,
                   record_fn=lambda p: p["th"])
    r = n % b
    step1 = -np.asarray(rec[1], np.float64)
    expect = sorted([1.0 / b] * (n - r) + [1.0 / r] * r)
    np.testing.assert_allclose(sorted(step1), expect, rtol=1e-6)
    # which samples formed the last batch: the tail of permutation(fold_in(key, 0), n)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), n))
    np.testing.assert_allclose(step1[perm[-r:]], 1.0 / r, rtol=1e-6)
    # two epochs: every sample used exactly twice (each time with its batch's weight)
    two = -np.asarray(rec[2], np.float64)
    assert np.all(two >= 2.0 / b - 1e-6)
    np.testing.assert_allclose(two.sum(), 2 * nb, rtol=1e-6)


def test_sgd_epoch_full_batches_match_manual_loop():
    """Nonlinear loss: SGD through the trainer equals a manual numpy loop over the documented batches."""
    n, b, lr, d = 10, 4, 0.2, 3
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((n, d))
    ys = rng.standard_normal(n)
    key = jax.random.PRNGKey(8)

    def loss(p, x, y):
        return 0.5 * (x @ p["th"] - y) ** 2

    steps = 7
    p, _, _ = train(loss, {"th": jnp.zeros(d)}, jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32),
                 optax.sgd(lr), plan=(0, steps), key=key, batch_size=b)
    th = np.zeros(d)
    nb = -(-n // b)
    for t in range(steps):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, t // nb), n))
        batch = perm[(t % nb) * b:(t % nb) * b + b]
        g = xs[batch].T @ (xs[batch] @ th - ys[batch]) / len(batch)
        th = th - lr * g
    np.testing.assert_allclose(np.asarray(p["th"], np.float64), th, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- with replacement
def test_batch_indices_replacement():
    key = jax.random.PRNGKey(9)
    n, b = 10, 10
    dup = False
    for t in range(5):
        idx, w = _batch_indices(t, key, n, b, "replacement")
        idx = np.asarray(idx)
        np.testing.assert_array_equal(np.asarray(w), np.ones(b))
        assert idx.min() >= 0 and idx.max() < n
        np.testing.assert_array_equal(idx, np.asarray(jax.random.randint(jax.random.fold_in(key, t), (b,), 0, n)))
        dup |= len(np.unique(idx)) < b
    assert dup  # iid draws repeat samples (an epoch permutation never would)


def test_sgd_replacement_through_trainer():
    """One-hot linear loss, lr=1, b=4: a step moves coordinate i by -count_i/b, counts from iid indices."""
    n, b = 6, 4
    p0, x, y = onehot_setup(n)
    key = jax.random.PRNGKey(10)
    _, rec, _ = train(lin_loss, p0, x, y, optax.sgd(1.0), plan=(0, 1, 2, 3), key=key, batch_size=b,
                   sampling="replacement", record_fn=lambda p: p["th"])
    rec = np.asarray(rec, np.float64)
    for t in range(3):
        idx = np.asarray(jax.random.randint(jax.random.fold_in(key, t), (b,), 0, n))
        np.testing.assert_allclose(rec[t] - rec[t + 1], np.bincount(idx, minlength=n) / b, rtol=1e-6)
        np.testing.assert_allclose(np.sum(rec[t] - rec[t + 1]), 1.0, rtol=1e-6)


def test_divergence_freezes_the_run_and_records_the_step():
    """GD on L = theta^2 with lr = 10: theta_{t+1} = -19 theta_t. The first step whose loss or update is not
    finite (float32 reference loop) is reported; params stay at the last finite state; later records are NaN."""
    lr = 10.0
    th, bad = np.float32(1.0), -1
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(100):
            loss = np.float32(th * th)
            new = np.float32(th - np.float32(lr) * np.float32(2.0) * th)
            if not (np.isfinite(loss) and np.isfinite(new)):
                bad = t
                break
            th = new
    assert bad > 0
    plan = (0, 5, bad, bad + 1, 100)

    def loss_fn(p, x, y):
        return jnp.broadcast_to(p["th"] ** 2, x.shape[:1])

    res = train(loss_fn, {"th": jnp.float32(1.0)}, jnp.zeros((4, 1)), jnp.zeros(4), optax.sgd(lr), plan=plan,
                record_fn=lambda p: {"th": p["th"], "n": jnp.int32(1)})
    assert int(res.diverged_step) == bad
    np.testing.assert_allclose(float(res.params["th"]), float(th), rtol=1e-6)  # frozen at the last finite state
    rec = np.asarray(res.records["th"])
    assert np.isfinite(rec[:3]).all() and np.isnan(rec[3:]).all()  # records after the divergence are NaN
    np.testing.assert_array_equal(np.asarray(res.records["n"]), 1)  # integer records are left alone
    ok = train(loss_fn, {"th": jnp.float32(1.0)}, jnp.zeros((4, 1)), jnp.zeros(4), optax.sgd(0.1), plan=plan)
    assert int(ok.diverged_step) == -1


@pytest.mark.parametrize("plan", [(0, 3, 7, 10), (0, 1, 2, 5, 9, 11), (0, 11)])
def test_epoch_permutation_drawn_once_per_epoch_equals_per_step_draws(plan):
    """The trainer carries the epoch's permutation (drawn when t % nb == 0) across record segments that start
    mid-epoch; the batches must be exactly those of drawing permutation(fold_in(key, t // nb)) at every step."""
    n, b, lr = 10, 4, 0.3
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = rng.normal(size=n).astype(np.float32)
    key = jax.random.PRNGKey(11)

    def loss(p, xb, yb):
        return (xb @ p["w"] - yb) ** 2

    _, rec, _ = train(loss, {"w": jnp.zeros(2)}, jnp.asarray(x), jnp.asarray(y), optax.sgd(lr), plan=plan,
                      key=key, batch_size=b, record_fn=lambda p: p["w"])
    w = np.zeros(2, np.float64)
    want = [w.copy()]
    for t in range(plan[-1]):
        idx, wb = (np.asarray(a) for a in _batch_indices(t, key, n, b, "epoch"))
        r = x[idx].astype(np.float64) @ w - y[idx]
        g = 2 * (wb[:, None] * r[:, None] * x[idx]).sum(0) / wb.sum()
        w = w - lr * g
        if t + 1 in plan:
            want.append(w.copy())
    np.testing.assert_allclose(np.asarray(rec, np.float64), np.stack(want), rtol=1e-5, atol=1e-6)
