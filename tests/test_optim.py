"""fa_jax.optim: every optimiser builds (also with traced hyper-parameters), and the update rules match closed
forms (signGD, Adam's first step, heavy-ball / Nesterov momentum on a quadratic, RMSProp, weight decay)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fa_jax.optim import OPTIMIZERS, OptimConfig, make_optimizer, make_optimizer_choice

G = {"w": jnp.array([[0.3, -2.0, 0.0], [1e-3, -1e-4, 5.0]]), "b": jnp.array([-0.7, 0.2])}
P = {"w": jnp.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]), "b": jnp.array([0.1, -0.2])}


def _update(cfg, g=G, p=P, state=None):
    opt = make_optimizer(cfg)
    state = opt.init(p) if state is None else state
    return opt.update(g, state, p)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_and_updates(name):
    cfg = OptimConfig(name=name, lr=0.01)
    upd, _state = _update(cfg)
    assert jax.tree.structure(upd) == jax.tree.structure(P)
    for u, p in zip(jax.tree.leaves(upd), jax.tree.leaves(P)):
        assert u.shape == p.shape and bool(jnp.all(jnp.isfinite(u)))
    # a descent direction for a non-zero gradient
    dot = sum(float(jnp.sum(u * g)) for u, g in zip(jax.tree.leaves(upd), jax.tree.leaves(G)))
    assert dot < 0


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_traced_hyperparameters_one_trace(name):
    """lr (and the other hyper-parameters) may be tracers: new values never retrace."""
    traces = []

    @jax.jit
    def step(lr, mom):
        traces.append(1)
        cfg = OptimConfig(name=name, lr=lr, momentum=mom)
        return _update(cfg)[0]

    a = step(0.01, 0.9)
    b = step(0.02, 0.5)
    assert len(traces) == 1
    ref = _update(OptimConfig(name=name, lr=0.02, momentum=0.5))[0]
    for x, y in zip(jax.tree.leaves(b), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-12)
    assert any(not np.allclose(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a),
                                                                             jax.tree.leaves(b)))


@pytest.mark.parametrize("name", ["gd", "sgd"])
def test_gd_sgd_plain_step(name):
    upd, _ = _update(OptimConfig(name=name, lr=0.1))
    for u, g in zip(jax.tree.leaves(upd), jax.tree.leaves(G)):
        np.testing.assert_allclose(np.asarray(u), -0.1 * np.asarray(g), rtol=1e-6)


def test_signgd_is_minus_lr_sign():
    lr = 0.05
    opt = make_optimizer(OptimConfig(name="signgd", lr=lr))
    state = opt.init(P)
    g = G
    for _ in range(3):  # stateless: every step is -lr sign(g)
        upd, state = opt.update(g, state, P)
        for u, gg in zip(jax.tree.leaves(upd), jax.tree.leaves(g)):
            np.testing.assert_allclose(np.asarray(u), -lr * np.sign(np.asarray(gg)), rtol=1e-7)
        g = jax.tree.map(lambda x: -2.0 * x, g)
    assert float(upd["w"][0, 2]) == 0.0  # sign(0) = 0


def test_adam_first_step_is_minus_lr_sign():
    lr = 0.01
    g = {"w": jnp.array([[0.3, -2.0, 4.0], [1e-2, -1e-3, 5.0]]), "b": jnp.array([-0.7, 0.2])}
    upd, _ = _update(OptimConfig(name="adam", lr=lr), g=g)
    for u, gg in zip(jax.tree.leaves(upd), jax.tree.leaves(g)):
        gg = np.asarray(gg, np.float64)
        exact = -lr * gg / (np.abs(gg) + 1e-8)  # bias-corrected m/v: m^ = g, v^ = g^2
        np.testing.assert_allclose(np.asarray(u), exact, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(u), -lr * np.sign(gg), rtol=1e-4)


def _quad_grad(H, th):
    return H @ th


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_two_steps_on_quadratic(nesterov):
    """L(th) = th^T H th / 2. Heavy ball (PyTorch/optax convention): v_t = beta v_{t-1} + g_t, th -= lr v_t;
    Nesterov: th -= lr (g_t + beta v_t)."""
    H = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]])
    th0 = np.array([1.0, -2.0, 0.5])
    lr, beta = 0.1, 0.8
    name = "nesterov" if nesterov else "momentum"
    opt = make_optimizer(OptimConfig(name=name, lr=lr, momentum=beta))
    th = jnp.asarray(th0, jnp.float32)
    state = opt.init(th)
    traj = []
    for _ in range(2):
        upd, state = opt.update(jnp.asarray(_quad_grad(H, np.asarray(th, np.float64)), jnp.float32), state, th)
        th = optax.apply_updates(th, upd)
        traj.append(np.asarray(th, np.float64))
    # closed form
    g1 = H @ th0
    v1 = g1
    th1 = th0 - lr * (g1 + beta * v1 if nesterov else v1)
    g2 = H @ th1
    v2 = beta * v1 + g2
    th2 = th1 - lr * (g2 + beta * v2 if nesterov else v2)
    np.testing.assert_allclose(traj[0], th1, rtol=1e-6)
    np.testing.assert_allclose(traj[1], th2, rtol=1e-6)
    # and it is not plain GD
    gd2 = th0 - lr * g1
    gd2 = gd2 - lr * (H @ gd2)
    assert np.max(np.abs(traj[1] - gd2)) > 1e-2


def test_rmsprop_first_two_steps():
    """nu_t = rho nu_{t-1} + (1 - rho) g^2 (nu_0 = 0), update = -lr g / sqrt(nu_t) (eps negligible)."""
    lr, rho = 0.01, 0.9
    g1 = np.array([0.5, -2.0, 3.0])
    g2 = np.array([1.0, 1.0, -1.0])
    opt = make_optimizer(OptimConfig(name="rmsprop", lr=lr, decay=rho))
    th = jnp.zeros(3)
    s = opt.init(th)
    u1, s = opt.update(jnp.asarray(g1, jnp.float32), s, th)
    u2, s = opt.update(jnp.asarray(g2, jnp.float32), s, th)
    nu1 = (1 - rho) * g1 ** 2
    nu2 = rho * nu1 + (1 - rho) * g2 ** 2
    np.testing.assert_allclose(np.asarray(u1), -lr * g1 / np.sqrt(nu1), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(u2), -lr * g2 / np.sqrt(nu2), rtol=1e-5)


def test_rmsprop_default_decay_is_pytorch_alpha():
    assert OptimConfig().decay == 0.99


def test_weight_decay_adds_wd_times_params():
    lr, wd = 0.1, 0.01
    upd, _ = _update(OptimConfig(name="sgd", lr=lr, weight_decay=wd))
    for u, g, p in zip(jax.tree.leaves(upd), jax.tree.leaves(G), jax.tree.leaves(P)):
        np.testing.assert_allclose(np.asarray(u), -lr * (np.asarray(g) + wd * np.asarray(p)), rtol=1e-6)


def test_defaults_no_momentum_no_decay_for_gd():
    """Spec 2.3: plain GD, no momentum or weight decay by default."""
    cfg = OptimConfig()
    assert cfg.name == "gd" and cfg.weight_decay == 0.0 and cfg.batch_size is None
    upd, state = _update(cfg)
    upd2, _ = make_optimizer(cfg).update(G, state, P)  # no state carried over between steps
    for a, b in zip(jax.tree.leaves(upd), jax.tree.leaves(upd2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_optim_validate_ok_for_all_names():
    for name in OPTIMIZERS:
        cfg = OptimConfig(name=name)
        assert cfg.validate(n_train=10) is cfg
        if name != "gd":
            dataclasses.replace(cfg, batch_size=10).validate(n_train=10)


def test_rmsprop_eps_outside_the_sqrt_as_pytorch():
    """PyTorch RMSprop: update = -lr g / (sqrt(nu) + eps); optax's default puts eps inside the sqrt."""
    lr, rho, eps = 0.01, 0.9, 0.5  # a large eps makes the two forms differ visibly
    g = np.array([0.5, -2.0, 3.0])
    opt = make_optimizer(OptimConfig(name="rmsprop", lr=lr, decay=rho, eps=eps))
    u, _ = opt.update(jnp.asarray(g, jnp.float32), opt.init(jnp.zeros(3)), jnp.zeros(3))
    nu = (1 - rho) * g ** 2
    np.testing.assert_allclose(np.asarray(u), -lr * g / (np.sqrt(nu) + eps), rtol=1e-5)
    assert not np.allclose(np.asarray(u), -lr * g / np.sqrt(nu + eps), rtol=1e-3)


def test_clip_by_global_norm_before_weight_decay():
    """g <- g * min(1, c / ||g||) over ALL leaves, then + wd * theta, then the rule (spec sgd_support 2.3)."""
    lr, wd, c = 0.1, 0.01, 0.5
    upd, _ = _update(OptimConfig(name="sgd", lr=lr, weight_decay=wd, clip_norm=c))
    gn = np.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in jax.tree.leaves(G)))
    assert gn > c  # the clip is active
    for u, g, p in zip(jax.tree.leaves(upd), jax.tree.leaves(G), jax.tree.leaves(P)):
        want = -lr * (np.asarray(g) * c / gn + wd * np.asarray(p))
        np.testing.assert_allclose(np.asarray(u), want, rtol=1e-5)
    # inf (the default) leaves the gradient unchanged
    upd, _ = _update(OptimConfig(name="sgd", lr=lr))
    for u, g in zip(jax.tree.leaves(upd), jax.tree.leaves(G)):
        np.testing.assert_array_equal(np.asarray(u), -lr * np.asarray(g, np.float32))


def test_clip_norm_validation():
    with pytest.raises(ValueError, match=r"optim\.clip_norm"):
        OptimConfig(clip_norm=0.0).validate()


def test_inert_fields_name_what_an_optimizer_ignores():
    from fa_jax.optim import inert_fields

    assert "b1" in inert_fields(OptimConfig(name="sgd")) and "momentum" in inert_fields(OptimConfig(name="adam"))
    assert "b1" not in inert_fields(OptimConfig(name="adam"))
    assert "momentum" not in inert_fields(OptimConfig(name="nesterov"))
    assert "sampling" in inert_fields(OptimConfig(name="gd"))
    assert "sampling" not in inert_fields(OptimConfig(name="sgd", batch_size=4))


def test_optimizer_choice_equals_each_rule_and_compiles_once(x64):
    """make_optimizer_choice(names, i) follows rule names[i] exactly (3 steps, varied gradient scales), and ONE
    vmapped program covers every index."""
    names = ("sgd", "momentum", "adam", "rmsprop", "signgd")
    rng = np.random.default_rng(0)
    p0 = {"w": jnp.asarray(rng.standard_normal((3, 2))), "b": jnp.asarray(rng.standard_normal(2))}
    grads = [jax.tree.map(lambda a, k=k: jnp.asarray(rng.standard_normal(a.shape)) * 10.0 ** -k, p0) for k in range(3)]
    cfg = OptimConfig(name="sgd", lr=0.05)

    def run(tx, p):
        s = tx.init(p)
        for g in grads:
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
        return p

    traces = []

    @jax.jit
    @jax.vmap
    def chosen(i):
        traces.append(1)
        return run(make_optimizer_choice(cfg, names, i), p0)

    out = chosen(jnp.arange(len(names)))
    assert len(traces) == 1
    for i, n in enumerate(names):
        ref = run(make_optimizer(dataclasses.replace(cfg, name=n)), p0)
        for k in p0:
            np.testing.assert_allclose(np.asarray(out[k][i]), np.asarray(ref[k]), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="optim.names"):
        make_optimizer_choice(cfg, ("sgd", "lion"), 0)


# ----------------------------------------------------------------------------- the optimiser as a traced axis
TRACED = ("gd", "momentum", "adam", "rmsprop", "signgd")


def _lin(name, choices=(), batch_size=None, lr=0.05):
    from fa_jax.config import with_values
    from fa_jax.experiments.linear import LinearRun

    return with_values(LinearRun(), {"optim.name": name, "optim.choices": choices, "optim.batch_size": batch_size,
                                     "optim.lr": lr, "optim.momentum": 0.8, "data.d": 3, "data.n_train": 32,
                                     "train.steps": 30, "train.n_records": 4}).validate()


def _assert_runs_close(a, b, rtol, atol):
    from conftest import flat

    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_allclose(fa[k], fb[k], rtol=rtol, atol=atol, err_msg=k)


def test_choices_trace_the_name_and_leave_other_configs_unchanged():
    """With ``choices`` the name leaves the static key and is traced as its index; without, the keys are those of
    a config built before the field existed (no 'optim.choices' key, no traced name: cached programs stay valid)."""
    import json

    from fa_jax.config import static_key, traced_values

    plain = _lin("adam")
    assert "optim.choices" not in json.loads(static_key(plain)) and "optim.name" in json.loads(static_key(plain))
    assert "optim.name" not in traced_values(plain)
    keys = {static_key(_lin(n, TRACED)) for n in TRACED}
    assert len(keys) == 1 and "optim.name" not in json.loads(keys.pop())
    assert [traced_values(_lin(n, TRACED))["optim.name"] for n in TRACED] == list(range(len(TRACED)))
    # a different batch size is a different program, traced rule or not
    assert static_key(_lin("sgd", ("sgd", "adam"), 8)) != static_key(_lin("sgd", ("sgd", "adam")))


@pytest.mark.parametrize("choices, name, param", [
    (("sgd", "lion"), "sgd", "optim.choices"),     # unknown rule in the traced list
    (("sgd", "sgd"), "sgd", "optim.choices"),      # repeated
    (("sgd", "adam"), "rmsprop", "optim.name"),     # the run's rule is not among the choices
    (("sgd", "adam"), "lion", "optim.name"),
])
def test_choices_bad_input_names_the_field(choices, name, param):
    from fa_jax.config import ConfigError

    with pytest.raises(ConfigError, match=rf"invalid {param}=") as e:
        OptimConfig(name=name, choices=choices).validate()
    assert e.value.param == param


def test_choice_config_equals_each_static_rule_eagerly():
    """make_optimizer(cfg with choices) is make_optimizer_choice: rule ``name`` exactly (no engine involved)."""
    for n in TRACED:
        a = _update(OptimConfig(name=n, lr=0.03, choices=TRACED))[0]
        b = _update(OptimConfig(name=n, lr=0.03))[0]
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_traced_optimizer_linear_equals_static_runs_one_program():
    """SGD (mini-batches of 8), momentum, Adam, RMSProp, signGD x 2 learning rates: ONE program; every run equals
    the same run under its own static rule (one program per rule) to float32 rounding (measured <= 1.1e-6
    relative: the programs differ, so XLA may round differently; rtol 1e-5). Full batch: the feature-averaging
    test below and tests/test_sweepfile.py."""
    from fa_jax import sweep as S
    from fa_jax.experiments.linear import run_linear

    batch_size = 8
    names = tuple("sgd" if n == "gd" else n for n in TRACED)
    lrs = (0.01, 0.1)
    t0 = S.STATS.traces
    traced = S.run_sweep(run_linear, [_lin(n, names, batch_size, lr) for n in names for lr in lrs], progress=False)
    assert S.STATS.traces - t0 == 1
    for j, n in enumerate(names):
        static = S.run_sweep(run_linear, [_lin(n, (), batch_size, lr) for lr in lrs], progress=False)
        for i in range(len(lrs)):
            _assert_runs_close(traced[len(lrs) * j + i], static[i], rtol=1e-5, atol=1e-7)
    # the rules really differ (the test would pass trivially if every index picked one rule)
    finals = [float(traced[len(lrs) * j]["records"]["loss"][-1]) for j in range(len(names))]
    assert len(set(finals)) == len(names)


def test_traced_optimizer_linear_float64_agrees_to_1e12(x64):
    """In float64 the traced-choice run and the static run agree to 1e-12 (full batch; Adam and RMSProp, the rules
    whose float32 runs differed in the last bits): the float32 differences are rounding, not the algorithm."""
    from fa_jax import sweep as S
    from fa_jax.experiments.linear import run_linear

    traced = S.run_sweep(run_linear, [_lin(n, TRACED) for n in TRACED], progress=False)
    for n in ("adam", "rmsprop"):
        static = S.run_sweep(run_linear, [_lin(n)], progress=False)[0]
        _assert_runs_close(traced[TRACED.index(n)], static, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_traced_optimizer_feature_averaging_equals_static_runs(fa_grid_configs, fa_alone):
    """The tiny binary feature-averaging run (training, features, PGD robustness) under each of five rules: ONE
    program for all five; GD's and Adam's runs equal their static-rule runs to float32 rounding (measured <= 5e-7
    absolute on O(1) metrics over all five rules; rtol 1e-5, atol 2e-6). GD's static run is the session's
    ``fa_alone``; the other rules' static FA programs are not compiled here (suite time: the rule-by-rule equality is
    the linear tests' above, the same make_optimizer_choice path) but their traced runs must differ."""
    from fa_jax import sweep as S
    from fa_jax.config import with_values
    from fa_jax.experiments.feature_averaging import run_feature_averaging

    base = fa_grid_configs[1]  # fa_alone's config (gd)
    cfgs = [with_values(base, {"optim.name": n, "optim.choices": TRACED}).validate() for n in TRACED]
    t0 = S.STATS.traces
    traced = S.run_sweep(run_feature_averaging, cfgs, progress=False)
    assert S.STATS.traces - t0 == 1
    for n in ("gd", "adam"):
        static = fa_alone if n == "gd" else S.run_sweep(
            run_feature_averaging, [with_values(base, {"optim.name": n}).validate()], progress=False)[0]
        _assert_runs_close(traced[TRACED.index(n)], static, rtol=1e-5, atol=2e-6)
    finals = [float(np.asarray(r["records"]["loss"])[-1]) for r in traced]
    assert len(set(finals)) == len(TRACED)  # every index selects its own rule
