"""fa_jax.experiments.adaptive_nets: the traced optimiser choice equals the fa_jax.optim (optax) transforms step for
step; the first-layer frequency energy against a numpy reference; config validation (before anything compiles)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fa_jax.config import traced_values, with_values
from fa_jax.data.natural import ImageSignal
from fa_jax.experiments.adaptive_nets import (
    AdaptiveNetRun,
    NetAttack,
    NetOptim,
    family_optimizer,
    first_layer_energy,
)
from fa_jax.frequency import dct_matrix
from fa_jax.models.image_nets import ImageNet
from fa_jax.optim import make_optimizer


def _steps(tx, params, grads):
    state = tx.init(params)
    out = []
    for g in grads:
        upd, state = tx.update(g, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, upd)
        out.append(params)
    return out


@pytest.mark.parametrize("name,lr", [("sgd", 0.1), ("adam", 1e-3), ("rmsprop", 3e-4)])
def test_family_optimizer_equals_optax_transform(x64, name, lr):
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.standard_normal((3, 2))), "b": jnp.asarray(rng.standard_normal(4))}
    grads = [jax.tree.map(lambda p, k=k: jnp.asarray(np.random.default_rng(k).standard_normal(p.shape)) * 10.0 ** -k,
                          params) for k in range(6)]  # gradient scales 1 .. 1e-5: eps and bias correction matter
    o = NetOptim.of(name, lr)
    ours = _steps(family_optimizer(o), params, grads)
    ref = _steps(make_optimizer(o.optim_config()), params, grads)
    for a, b in zip(ours, ref, strict=True):
        for k in params:
            np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-12, atol=1e-15)
    # one program for all three: the optimiser knobs are traced fields, not static ones
    assert set(traced_values(o)) == {"lr", "rule"}


def test_first_layer_energy_matches_numpy(x64):
    data = ImageSignal(size=4, n_classes=2)
    rng = np.random.default_rng(1)
    w = rng.standard_normal((16, 5))  # dense_0 kernel (pixels row-major, hidden)
    e = np.asarray(first_layer_energy({"dense_0": {"kernel": jnp.asarray(w)}}, ImageNet(arch="mlp"), data))
    c = dct_matrix(4)
    basis = np.einsum("ik,jl->klij", c, c).reshape(16, 16)  # row (k, l): the DCT basis image C[:, k] C[:, l]^T
    np.testing.assert_allclose(e.ravel(), np.sum((basis @ w) ** 2, axis=1), rtol=1e-12)
    assert e.sum() == pytest.approx(np.sum(w ** 2), rel=1e-12)  # orthonormal basis: total = ||W||_F^2
    k = rng.standard_normal((3, 3, 1, 2))  # conv: energy of the operator on every basis image, summed = ||A||_F^2
    e = np.asarray(first_layer_energy({"conv_0": {"kernel": jnp.asarray(k)}}, ImageNet(arch="conv"), data))
    # ||A||_F^2 = sum over output positions of the kernel taps that land inside the image
    fro = sum(np.sum(k[a, b] ** 2) for i in range(4) for j in range(4) for a in range(3) for b in range(3)
              if 0 <= i + a - 1 < 4 and 0 <= j + b - 1 < 4)
    assert e.sum() == pytest.approx(fro, rel=1e-12)


@pytest.mark.parametrize("change,match", [
    ({"model": ImageNet(arch="mlp", head="binary", n_classes=4)}, "model.head"),
    ({"model": ImageNet(arch="mlp", head="multiclass", n_classes=3)}, "model.n_classes"),
    ({"optim": NetOptim.of("adam", 1e-3, batch_size=5000)}, "optim.batch_size"),
    ({"optim": dataclasses.replace(NetOptim.of("adam", 1e-3), rule=3)}, "optim.rule"),
    ({"attack": NetAttack(n_points=5000)}, "attack.n_points"),
    ({"attack": NetAttack(l2_eps=())}, "attack.l2_eps"),
    ({"attack": NetAttack(linf_eps=(0.1, -0.1))}, "attack.linf_eps"),
    ({"n_train": 0}, "n_train"),
])
def test_validation_errors(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(AdaptiveNetRun(), **change).validate()
    with pytest.raises(ValueError, match="optimizer"):
        NetOptim.of("signgd", 0.1)


def test_seed_and_lr_are_traced():
    cfg = AdaptiveNetRun().validate()
    assert {"seed", "optim.lr", "optim.rule", "model.init_scale", "data.frac_irrelevant"} <= set(traced_values(cfg))
    other = with_values(cfg, {"optim.lr": 0.5, "seed": 3})
    from fa_jax.config import static_key

    assert static_key(other) == static_key(cfg)
    assert static_key(dataclasses.replace(cfg, optim=NetOptim.of("rmsprop", 1e-3))) == static_key(cfg)
