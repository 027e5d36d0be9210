"""fa_jax.experiments.adaptive_nets: a whole run (SGD / Adam / RMSProp on a tiny MLP) against a float64 numpy
training written from the formulas; the first-layer frequency energy against a numpy reference; config validation
(before anything compiles)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import np_lowpass_keep

from fa_jax.config import traced_values, with_values
from fa_jax.data.natural import ImageSignal
from fa_jax.experiments.adaptive_nets import (
    AdaptiveNetRun,
    NetAttack,
    NetOptim,
    first_layer_energy,
)
from fa_jax.frequency import dct_matrix
from fa_jax.models.image_nets import ImageNet


# ----------------------------------------------------------------------------- whole run vs a float64 numpy reference
def _np_mlp(params, x):
    """Two-layer ReLU MLP in numpy: pre (n, h), hidden (n, h), logits (n, K)."""
    pre = x @ params["w1"] + params["b1"]
    h = np.maximum(pre, 0.0)
    return pre, h, h @ params["w2"] + params["b2"]


def _np_ce_and_grad(params, x, y):
    """Mean softmax CE and its gradient, written from the formulas (dlogits = (softmax - onehot) / n)."""
    pre, h, z = _np_mlp(params, x)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = float(np.mean(-np.log(p[np.arange(n), y])))
    dz = (p - np.eye(p.shape[1])[y]) / n
    dpre = (dz @ params["w2"].T) * (pre > 0)
    return loss, {"w1": x.T @ dpre, "b1": dpre.sum(0), "w2": h.T @ dz, "b2": dz.sum(0)}


def _np_train(name, lr, params, x, y, plan):
    """Full-batch SGD / Adam (b = 0.9, 0.999, eps 1e-8, bias-corrected) / RMSProp (alpha 0.99, eps 1e-8 outside
    the root, PyTorch's) in float64; returns (losses at the plan's steps, final params)."""
    params = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    losses = []
    for t in range(plan[-1] + 1):
        loss, g = _np_ce_and_grad(params, x, y)
        if t in plan:
            losses.append(loss)
        if t == plan[-1]:
            break
        for k in params:
            if name == "sgd":
                params[k] -= lr * g[k]
            elif name == "adam":
                m[k] = 0.9 * m[k] + 0.1 * g[k]
                v[k] = 0.999 * v[k] + 0.001 * g[k] ** 2
                mh, vh = m[k] / (1 - 0.9 ** (t + 1)), v[k] / (1 - 0.999 ** (t + 1))
                params[k] -= lr * mh / (np.sqrt(vh) + 1e-8)
            else:
                v[k] = 0.99 * v[k] + 0.01 * g[k] ** 2
                params[k] -= lr * g[k] / (np.sqrt(v[k]) + 1e-8)
    return np.array(losses), params


def test_whole_run_matches_numpy_reference():
    """run_adaptive_net on a tiny case (4x4 images, 3 classes, width-8 MLP, full batch so the epoch order cannot
    matter) for SGD / Adam / RMSProp as ONE sweep (the optimiser is traced) against a float64 numpy training of the
    same init on the same data: the loss trajectory, the clean accuracy, the first layer's energy on the zero-variance
    DCT frequencies (unchanged under SGD, moved by Adam / RMSProp), the absolute change ||Delta W1 P_irr||_F, the
    accuracy under band-limited noise (relevant and zero-variance band, per std) and the product Lipschitz bound."""
    from fa_jax.data.natural import image_class_means_tilde, image_relevant_mask, sample_images
    from fa_jax.experiments.adaptive_nets import run_adaptive_net
    from fa_jax.models.image_nets import init_image_net
    from fa_jax.sweep import run_sweep
    from fa_jax.trainer import TrainConfig, record_plan

    data = ImageSignal(size=4, n_classes=3, alpha=1.0, frac_irrelevant=0.5, separation=3.0)
    model = ImageNet(arch="mlp", head="multiclass", n_classes=3, hidden=(8,))
    n_train, n_test, seed = 48, 60, 1
    train = TrainConfig(steps=8, n_records=4, plan="linear")
    attack = NetAttack(steps=1, restarts=1, n_points=4, l2_eps=(0.1,), linf_eps=(0.01,), noise_std=(0.1,),
                       band_std=(0.3, 1.5), noise_draws=2)
    lrs = {"sgd": 0.5, "adam": 0.05, "rmsprop": 0.02}
    cfgs = [AdaptiveNetRun(data=data, model=model, optim=NetOptim.of(o, lr, n_train), train=train, n_train=n_train,
                           n_test=n_test, attack=attack, power_iters=300, seed=seed) for o, lr in lrs.items()]
    results = run_sweep(run_adaptive_net, cfgs)
    # the run's inputs, rebuilt from its documented keys: fold_in(PRNGKey(seed), i), i = 0 data, 3 init, 6 band
    # noise (folded with 1); one jitted program (eager, each primitive would compile on its own: ~60 programs)
    @jax.jit
    def run_inputs(seed):
        keys = [jax.random.fold_in(jax.random.PRNGKey(seed), i) for i in range(7)]
        z = jax.random.normal(keys[0], (3 + n_train + n_test, 4, 4))
        means = image_class_means_tilde(None, data, z=z[:3])
        return (sample_images(None, data, n_train, means, z=z[3:3 + n_train]),
                sample_images(None, data, n_test, means, z=z[3 + n_train:]),
                init_image_net(keys[3], model, (4, 4, 1)),
                jax.random.normal(jax.random.fold_in(keys[6], 1), (2, n_test, 4, 4)))

    (x_tr, y_tr), (x_te, y_te), p0, zb = jax.tree.map(np.asarray, run_inputs(seed))
    p0 = {"w1": p0["dense_0"]["kernel"], "b1": p0["dense_0"]["bias"], "w2": p0["head"]["kernel"],
          "b2": p0["head"]["bias"]}
    p0 = {k: np.asarray(v, np.float64) for k, v in p0.items()}
    xf_tr, xf_te = x_tr.reshape(n_train, -1).astype(np.float64), x_te.reshape(n_test, -1).astype(np.float64)
    c = dct_matrix(4)
    basis = np.einsum("ik,jl->klij", c, c).reshape(16, 16)  # row (k, l): the DCT basis image C[:, k] C[:, l]^T
    irr = ~np.asarray(image_relevant_mask(data)).ravel()
    assert 0 < irr.sum() < 16
    # band-limited noise: the documented draw (key 6 folded with 1), projected on each band in float64 numpy
    zb = zb.astype(np.float64)
    band_noise = {}
    for band, keep in (("relevant", ~irr), ("irrelevant", irr)):
        m = keep.reshape(4, 4).astype(np.float64)
        band_noise[band] = np.einsum("ik,dnkl,jl->dnij", c, zb * m, c).reshape(2, n_test, 16)  # C (M * z) C^T
    assert np.allclose(np.sum(band_noise["irrelevant"] * band_noise["relevant"], axis=-1), 0, atol=1e-12)
    plan = record_plan(train.steps, train.n_records, train.plan)
    for (name, lr), r in zip(lrs.items(), results, strict=True):
        losses, p = _np_train(name, lr, p0, xf_tr, y_tr, plan)
        assert losses[-1] < 0.8 * losses[0]  # the reference learns: the comparison is not between two frozen nets
        np.testing.assert_allclose(np.asarray(r["records"]["loss"]), losses, rtol=2e-4, err_msg=name)
        logits = _np_mlp(p, xf_te)[2]
        marg = logits[np.arange(n_test), y_te] - np.max(np.where(np.eye(3, dtype=bool)[y_te], -np.inf, logits), 1)
        assert np.min(np.abs(marg)) > 1e-3  # no test point on a decision boundary: the accuracy is decided
        assert float(r["clean_acc"]) == pytest.approx(np.mean(marg > 0), abs=1e-6), name  # float32 mean; 1/n = 0.017
        e_init = np.sum((basis @ p0["w1"]) ** 2, axis=1)[irr].sum()
        e_final = np.sum((basis @ p["w1"]) ** 2, axis=1)[irr].sum()
        assert float(r["first_layer_irr"]["init"]) == pytest.approx(e_init, rel=1e-5)
        assert float(r["first_layer_irr"]["final"]) == pytest.approx(e_final, rel=1e-4), name
        if name == "sgd":  # the derivation behind nets.sgd_mlp_irrelevant_invariance (the float32 images carry
            assert abs(e_final - e_init) < 1e-6 * e_init  # ~1e-8 rounding on the zero-variance frequencies)
        else:  # sign-like steps in the pixel basis move it (the paper's mechanism)
            assert abs(e_final - e_init) > 1e-3 * e_init
        # |Delta W1 P_irr|_F and |Delta W1|_F: the change of the first layer on the zero-variance basis images
        dw = p["w1"] - p0["w1"]
        d_irr, d_tot = np.linalg.norm(basis[irr] @ dw), np.linalg.norm(dw)
        assert float(r["first_layer_delta"]["total"]) == pytest.approx(d_tot, rel=1e-3), name
        if name == "sgd":  # ~0 up to float32 rounding (the derivation above)
            assert float(r["first_layer_delta"]["irr"]) < 1e-4 * d_tot and d_irr < 1e-6 * d_tot
        else:
            assert d_irr > 0.01 * d_tot
            assert float(r["first_layer_delta"]["irr"]) == pytest.approx(d_irr, rel=2e-3), name
        # band-noise accuracy: numpy net at the numpy-trained params on x + s * band noise, mean over the draws;
        # a point within 1e-3 of a decision boundary may flip between float32 and float64 (allowed, counted)
        for band, noise in band_noise.items():
            for j, sd in enumerate(attack.band_std):
                lg = _np_mlp(p, xf_te[None] + sd * noise)[2]  # (draws, n_test, K)
                own = np.take_along_axis(lg, y_te[None, :, None], -1)[..., 0]
                other = np.max(np.where(np.eye(3, dtype=bool)[y_te][None], -np.inf, lg), -1)
                mg = own - other
                slack = np.mean(np.abs(mg) < 1e-3)
                assert slack < 0.05
                got = float(np.asarray(r["band_noise_acc"][band])[j])
                assert abs(got - np.mean(mg > 0)) <= slack + 1e-6, (name, band, sd)
            assert np.mean(mg > 0) < np.mean(marg > 0), (name, band)  # the largest std does hurt: not a no-op
        bound = np.linalg.norm(p["w1"], 2) * np.linalg.norm(p["w2"], 2)
        assert float(r["lip"]["bound_op"]) == pytest.approx(bound, rel=1e-4), name


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
    ({"attack": NetAttack(band_std=())}, "attack.band_std"),
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


# ----------------------------------------------------------------------------- radial band noise, removal training
def _np_radial_bands(n: int, nb: int) -> np.ndarray:
    """Band of each (i, j) of an n x n DCT plane: rank by radius sqrt(i^2 + j^2) (ties by flat index), cut into nb
    equal parts (spec 2.3), written here from the definition."""
    r = np.hypot(*np.meshgrid(np.arange(n), np.arange(n), indexing="ij")).ravel()
    rank = np.empty(n * n, int)
    rank[np.argsort(r, kind="stable")] = np.arange(n * n)
    return (rank * nb // (n * n)).reshape(n, n)


def test_radial_band_noise_and_removal_training_match_numpy():
    """The paper's Fig. 4 read-out and the frequency-removed training (spec 2.3 / P10 / S6), on the tiny case of
    test_whole_run_matches_numpy_reference (the same static config, so the same compiled program): SGD trained on
    Phi_freq(x, 60 %) and on Phi_nrg(x, 60 %), Adam on Phi_freq(x, 30 %), against float64 numpy trainings on data
    filtered by numpy masks written from the spec (radial scan; per-image top-|DCT| quantile); the relative data
    change (at 30 % Phi_freq removes only zero-variance coefficients: ~0, theory.freq_removal_keeps_relevant); and
    the accuracy under noise on each of 10 radial bands against numpy (band masks from the rank rule)."""
    from fa_jax.data.natural import image_class_means_tilde, sample_images
    from fa_jax.experiments.adaptive_nets import REMOVALS, run_adaptive_net
    from fa_jax.models.image_nets import init_image_net
    from fa_jax.sweep import run_sweep
    from fa_jax.theory.sgd_vs_adaptive import freq_removal_keeps_relevant
    from fa_jax.trainer import TrainConfig, record_plan

    assert freq_removal_keeps_relevant(4, 0.5, 30.0) and not freq_removal_keeps_relevant(4, 0.5, 60.0)
    T_empty_tol = 1e-5  # nets.s6.freq_removal_of_empty_band_exact's float32 allowance
    data = ImageSignal(size=4, n_classes=3, alpha=1.0, frac_irrelevant=0.5, separation=3.0)
    model = ImageNet(arch="mlp", head="multiclass", n_classes=3, hidden=(8,))
    n_train, n_test, seed = 48, 60, 1
    train = TrainConfig(steps=8, n_records=4, plan="linear")
    attack = NetAttack(steps=1, restarts=1, n_points=4, l2_eps=(0.1,), linf_eps=(0.01,), noise_std=(0.1,),
                       band_std=(0.3, 1.5), noise_draws=2)  # radial: the default 10 bands (1-2 coefficients each)
    nb, rstd = attack.radial_bands, attack.radial_std
    runs = (("sgd", 0.5, "freq", 60.0), ("sgd", 0.5, "nrg", 60.0), ("adam", 0.05, "freq", 30.0))
    cfgs = [AdaptiveNetRun(data=data, model=model, optim=NetOptim.of(o, lr, n_train), train=train, n_train=n_train,
                           n_test=n_test, attack=attack, power_iters=300, seed=seed, removed_percent=p,
                           removal=REMOVALS.index(m)).validate() for o, lr, m, p in runs]
    results = run_sweep(run_adaptive_net, cfgs)
    keys = [jax.random.fold_in(jax.random.PRNGKey(seed), i) for i in range(7)]
    z = jax.random.normal(keys[0], (3 + n_train + n_test, 4, 4))
    means = image_class_means_tilde(None, data, z=z[:3])
    x_tr, y_tr = (np.asarray(a) for a in sample_images(None, data, n_train, means, z=z[3:3 + n_train]))
    x_te, y_te = (np.asarray(a) for a in sample_images(None, data, n_test, means, z=z[3 + n_train:]))
    p0 = init_image_net(keys[3], model, (4, 4, 1))
    p0 = {k: np.asarray(v, np.float64) for k, v in (("w1", p0["dense_0"]["kernel"]), ("b1", p0["dense_0"]["bias"]),
                                                     ("w2", p0["head"]["kernel"]), ("b2", p0["head"]["bias"]))}
    c = dct_matrix(4)
    xt = np.einsum("ki,nkl,lj->nij", c, x_tr[..., 0].astype(np.float64), c)  # C^T X C per image
    xf_te = x_te.reshape(n_test, -1).astype(np.float64)
    zb = np.asarray(jax.random.normal(jax.random.fold_in(keys[6], 1), (2, n_test, 4, 4)), np.float64)
    bands = _np_radial_bands(4, nb)
    assert sorted(np.bincount(bands.ravel())) == [1] * 4 + [2] * 6  # 16 coefficients in 10 near-equal bands
    plan = record_plan(train.steps, train.n_records, train.plan)
    for (opt, lr, method, pct), r in zip(runs, results, strict=True):
        if method == "freq":
            keep = np.broadcast_to(np_lowpass_keep(4, 100 - pct), xt.shape)
        else:  # per image: the top (100 - p) % coefficients by |DCT| (numpy's linear quantile)
            mag = np.abs(xt).reshape(n_train, -1)
            keep = (mag >= np.quantile(mag, pct / 100, axis=1, keepdims=True)).reshape(xt.shape)
        assert 0 < keep.mean() < 1  # the removal removes something and keeps something
        x_rm = np.einsum("ik,nkl,jl->nij", c, xt * keep, c)  # C (M * Xt) C^T
        change = np.linalg.norm(x_rm - x_tr[..., 0]) / np.linalg.norm(x_tr)
        if method == "freq" and freq_removal_keeps_relevant(4, 0.5, pct):  # only zero-variance coefficients go
            assert change < 1e-6 and float(r["removal_change"]) < T_empty_tol
        else:  # variance-carrying coefficients go: a real change, measured as numpy does
            assert change > 1e-3
            assert float(r["removal_change"]) == pytest.approx(change, rel=1e-4), (opt, method)
        losses, p = _np_train(opt, lr, p0, x_rm.reshape(n_train, -1), y_tr, plan)
        assert losses[-1] < 0.8 * losses[0]
        np.testing.assert_allclose(np.asarray(r["records"]["loss"]), losses, rtol=2e-4, err_msg=f"{opt} {method}")
        # radial band noise: numpy net at the numpy-trained params; boundary points (|margin| < 1e-3) may flip
        for b in range(nb):
            noise = np.einsum("ik,dnkl,jl->dnij", c, zb * (bands == b), c).reshape(2, n_test, 16)
            lg = _np_mlp(p, xf_te[None] + rstd * noise)[2]
            own = np.take_along_axis(lg, y_te[None, :, None], -1)[..., 0]
            mg = own - np.max(np.where(np.eye(3, dtype=bool)[y_te][None], -np.inf, lg), -1)
            slack = np.mean(np.abs(mg) < 1e-3)
            assert slack < 0.05
            assert abs(float(np.asarray(r["band_noise_radial"])[b]) - np.mean(mg > 0)) <= slack + 1e-6, (opt, b)
        assert np.asarray(r["band_noise_radial"]).shape == (nb,)
        assert float(np.min(r["band_noise_radial"])) < float(r["clean_acc"])  # the noise does hurt somewhere


@pytest.mark.parametrize("change,match", [
    ({"removed_percent": 100.0}, "removed_percent"),
    ({"removed_percent": -1.0}, "removed_percent"),
    ({"removal": 2}, "removal"),
    ({"attack": NetAttack(radial_bands=0)}, "attack.radial_bands"),
    ({"attack": NetAttack(radial_bands=65)}, "attack.radial_bands"),
    ({"attack": NetAttack(radial_std=0.0)}, "attack.radial_std"),
])
def test_removal_and_radial_validation_errors(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(AdaptiveNetRun(), **change).validate()


def test_removal_is_traced():
    cfg = AdaptiveNetRun().validate()
    from fa_jax.config import static_key

    assert {"removed_percent", "removal"} <= set(traced_values(cfg))
    assert static_key(with_values(cfg, {"removed_percent": 50.0, "removal": 1})) == static_key(cfg)
