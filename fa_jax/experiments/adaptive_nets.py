"""One run of the deep-network half of SGD vs adaptive methods (arXiv 2308.06703; spec ``sgd_vs_adaptive.md``
Sec. 2.2, 2.4, T5, P9, P12): train an image net with SGD / Adam / RMSProp on image-like natural-signal data and
measure its robustness and Lipschitz constants.

Data: :class:`fa_jax.data.natural.ImageSignal` (N x N x 1 images, K classes, power-law DCT spectrum, the top
fraction of frequencies zero-variance); class means, a train set of ``n_train`` and a test set of ``n_test`` are
drawn from the run's ``seed`` (so every optimiser and net sees the same data and the same init at a seed).
Model: :mod:`fa_jax.models.image_nets` (two-layer ReLU MLP or small conv net, multi-class head), softmax CE,
mini-batch training (epoch sampling) with :func:`fa_jax.trainer.train`; the optimiser is :class:`NetOptim`, SGD /
Adam / RMSProp as one update rule with traced knobs (one compiled program per net for all three; equal to the
:mod:`fa_jax.optim` transforms, tested).

Measured (axes: ``eps`` budgets, ``noise`` levels, ``layers``):

* ``clean_acc``: test accuracy (argmax; a tie counts as an error).
* ``noise_acc (noise,)``: accuracy on x + s z, z ~ N(0, I), mean over ``noise_draws`` draws (no clamping: the
  synthetic pixels are not confined to [0, 1]).
* ``band_noise_acc``: ``{"relevant", "irrelevant"}`` each ``(band_std,)``: accuracy on x + s idct2(M * z),
  z (N, N) ~ N(0, I) per image in DCT coordinates, M the band's mask (relevant = the data's non-zero-variance
  coefficients, irrelevant = the zero-variance ones), s a per-coefficient std (spec 2.3 / P10: band-limited
  Gaussian noise, no clamping); mean over ``noise_draws`` draws. The paper's mechanism (spec T2/T4) predicts the
  irrelevant band separates the optimisers.
* ``band_noise_radial (radial_bands,)``: the paper's Fig. 4 protocol (spec 2.3 / P10): accuracy on
  x + s idct2(M_b * z) for each of ``radial_bands`` equal-size radial DCT bands M_b
  (:func:`fa_jax.frequency.radial_bands`, rule "rank": band 0 holds the lowest radii), s = ``radial_std`` per
  coefficient, the same draws z as ``band_noise_acc``; the accuracy drop per band is ``clean_acc`` minus it.
* ``removal_change``: ||Phi(x_train) - x_train||_F / ||x_train||_F, the relative change of the training set by the
  frequency removal the run trained on (``removed_percent`` of the DCT coefficients removed by Phi_freq or Phi_nrg,
  spec 2.3 / S6 / P11; 0 when nothing is removed: the nets then train on x_train itself, bit for bit). The test set
  is never filtered.
* ``l2_acc (eps,)`` / ``linf_acc (eps,)``: PGD robust accuracy on the first ``n_points`` test images (ascending
  the CE loss, success = margin f_y - max_{j != y} f_j <= 0 at any iterate, ``restarts`` random starts, step
  rel_step eps / steps); labelled PGD, never AutoAttack. No box constraint.
* ``lip`` / ``lip_init``: :func:`fa_jax.metrics.lipschitz.image_net_lipschitz` at the end / at init: layer norms
  (exact operators and the authors' conv proxy) and their products ``bound_op``, ``bound_proxy``.
* ``local``: on the attacked points, mean ||grad_x m||_2 and ||grad_x m||_1 of the logit margin m, the mean and max
  logit-Jacobian spectral norm (always <= bound_op), and ``grad_irrelevant_frac``: the mean fraction of
  ||grad_x m||^2 on zero-variance DCT frequencies.
* ``first_layer_irr`` (``init``, ``final``): ||A_1 P_irr||_F^2, the first layer's (dense or conv operator) energy on
  the irrelevant DCT basis images; ``first_layer_frac``: the same over ||A_1||_F^2. For the MLP, SGD cannot change
  it (the weight gradient is a sum of data outer products, orthogonal to the irrelevant directions) - a check.
* ``first_layer_delta`` (``irr``, ``total``): ||(A_1 - A_1(0)) P_irr||_F and ||A_1 - A_1(0)||_F, the absolute
  change of the first layer on the irrelevant band and in total (the fraction above can fall while the absolute
  irrelevant energy grows: report both).

Keys: fold_in(PRNGKey(seed), i): i = 0 one normal draw for class means, train and test sets; 3 init; 4 batches;
5 attack starts; 6 noise (split into ``noise_draws`` keys; the band noise is ONE normal draw
``(noise_draws, n_test, N, N)`` from fold_in(key 6, 1)); 7 power iteration (few random calls: on CPU each is a separately compiled kernel).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from ..config import check_fields, require, traced
from ..data.natural import ImageSignal, image_class_means_tilde, image_relevant_mask, sample_images
from ..frequency import dct2, idct2, phi_freq, phi_nrg, radial_bands
from ..losses import cross_entropy
from ..metrics import lipschitz as L
from ..metrics import robustness as R
from ..models.image_nets import ImageNet, apply_image_net, init_image_net
from ..optim import OptimConfig, make_optimizer_choice
from ..trainer import TrainConfig, record_plan, train

__all__ = ["NET_OPTS", "REMOVALS", "AdaptiveNetRun", "NetAttack", "NetOptim", "family_optimizer", "first_layer_energy",
           "robust_mean", "run_adaptive_net"]

NET_OPTS = ("sgd", "adam", "rmsprop")
REMOVALS = ("freq", "nrg")  # Phi_freq (radial low-pass) / Phi_nrg (per-image low-energy removal), spec Sec. 2.3


@dataclasses.dataclass(frozen=True)
class NetOptim:
    """SGD / Adam / RMSProp chosen by a TRACED index ``rule`` into :data:`NET_OPTS` (spec Sec. 6, recompile traps),
    so one compiled program trains all three: :func:`family_optimizer` is
    :func:`fa_jax.optim.make_optimizer_choice` over the optax transforms of :mod:`fa_jax.optim` with PyTorch's
    defaults (SGD without momentum; Adam b = (0.9, 0.999), eps 1e-8; RMSProp alpha 0.99, eps 1e-8 outside the root).
    """

    lr: float = traced(0.1)
    rule: int = traced(0)  # index into NET_OPTS
    batch_size: int = 64

    @classmethod
    def of(cls, name: str, lr: float, batch_size: int = 64) -> NetOptim:
        require(name in NET_OPTS, "optimizer", f"one of {NET_OPTS}", name)
        return cls(lr=lr, rule=NET_OPTS.index(name), batch_size=batch_size)

    def optim_config(self, name: str | None = None) -> OptimConfig:
        """The :class:`fa_jax.optim.OptimConfig` of rule ``name`` (default: this config's rule) at this lr."""
        name = NET_OPTS[int(self.rule)] if name is None else name
        return OptimConfig(name=name, lr=self.lr, batch_size=self.batch_size)

    def validate(self, n_train: int) -> NetOptim:
        check_fields(self, prefix="optim.")  # types first: the range checks below compare numbers
        require(math.isfinite(float(self.lr)) and float(self.lr) > 0, "optim.lr", "a finite number > 0", self.lr)
        require(isinstance(self.rule, int) and 0 <= self.rule < len(NET_OPTS), "optim.rule",
                f"an index 0 .. {len(NET_OPTS) - 1} into {NET_OPTS}", self.rule)
        require(isinstance(self.batch_size, int) and 1 <= self.batch_size <= n_train, "optim.batch_size",
                f"an integer in 1 .. n_train = {n_train}", self.batch_size)
        return self


def family_optimizer(o: NetOptim) -> optax.GradientTransformation:
    """The optax transformation of rule ``NET_OPTS[o.rule]`` (``o.lr`` and ``o.rule`` may be tracers)."""
    return make_optimizer_choice(OptimConfig(name="sgd", lr=o.lr, batch_size=o.batch_size), NET_OPTS, o.rule)


@dataclasses.dataclass(frozen=True)
class NetAttack:
    steps: int = 20  # PGD steps per start
    restarts: int = 1
    rel_step: float = 2.5  # alpha = rel_step * eps / steps (Madry et al.)
    n_points: int = 200  # the first n_points test images are attacked
    l2_eps: tuple = (0.25, 0.5, 1.0)
    linf_eps: tuple = (0.03, 0.06, 0.12)
    noise_std: tuple = (0.1, 0.2, 0.4)
    band_std: tuple = (0.25, 0.5, 1.0)  # per-coefficient stds of the band-limited noise
    noise_draws: int = 4
    radial_bands: int = 10  # the paper's Fig. 4: 10 equal-size radial DCT bands
    radial_std: float = 0.5  # per-coefficient std of the noise in each radial band

    def validate(self, n_test: int) -> NetAttack:
        check_fields(self, prefix="attack.")  # types first: the range checks below compare numbers
        for f in ("steps", "restarts", "noise_draws"):
            v = getattr(self, f)
            require(isinstance(v, int) and v >= 1, f"attack.{f}", "an integer >= 1", v)
        require(isinstance(self.n_points, int) and 1 <= self.n_points <= n_test, "attack.n_points",
                f"an integer in 1 .. n_test = {n_test}", self.n_points)
        for f in ("l2_eps", "linf_eps", "noise_std", "band_std"):
            v = tuple(getattr(self, f))
            require(len(v) >= 1 and all(math.isfinite(float(e)) and float(e) > 0 for e in v), f"attack.{f}",
                    "a non-empty tuple of finite numbers > 0", getattr(self, f))
        require(math.isfinite(self.rel_step) and self.rel_step > 0, "attack.rel_step", "a finite number > 0",
                self.rel_step)
        require(math.isfinite(self.radial_std) and self.radial_std > 0, "attack.radial_std", "a finite number > 0",
                self.radial_std)
        return dataclasses.replace(self, l2_eps=tuple(self.l2_eps), linf_eps=tuple(self.linf_eps),
                                   noise_std=tuple(self.noise_std), band_std=tuple(self.band_std))


@dataclasses.dataclass(frozen=True)
class AdaptiveNetRun:
    data: ImageSignal = dataclasses.field(default_factory=ImageSignal)
    model: ImageNet = dataclasses.field(
        default_factory=lambda: ImageNet(arch="mlp", head="multiclass", n_classes=4, hidden=(64,)))
    optim: NetOptim = dataclasses.field(default_factory=lambda: NetOptim.of("sgd", 0.1))
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(steps=500, n_records=6,
                                                                               plan="linear"))
    n_train: int = 2048
    n_test: int = 1000
    attack: NetAttack = dataclasses.field(default_factory=NetAttack)
    power_iters: int = 50
    jacobian: bool = False  # also the per-point logit-Jacobian spectral norm (a larger program)
    record_points: int = 512  # train / test points of the loss and accuracy records
    # frequency-removed training (spec 2.3 removal runs, S6 / P11): Phi = REMOVALS[removal] removes removed_percent %
    # of the training images' DCT coefficients (0: the raw training set); both traced (one program for the grid)
    removed_percent: float = traced(0.0)
    removal: int = traced(0)  # index into REMOVALS
    seed: int = traced(0)  # data (class means, train and test sets) and init

    def validate(self) -> AdaptiveNetRun:
        check_fields(self)  # types first: the range checks below compare numbers
        data = self.data.validate()
        model = self.model.validate()
        require(model.head == "multiclass", "model.head", "'multiclass' (K-class softmax CE)", model.head)
        require(model.n_classes == data.n_classes, "model.n_classes", f"data.n_classes = {data.n_classes}",
                model.n_classes)
        self.optim.validate(self.n_train)
        self.train.validate()
        for f in ("n_train", "n_test", "power_iters", "record_points"):
            v = getattr(self, f)
            require(isinstance(v, int) and v >= 1, f, "an integer >= 1", v)
        attack = self.attack.validate(self.n_test)
        n2 = data.size * data.size
        require(isinstance(attack.radial_bands, int) and 1 <= attack.radial_bands <= n2, "attack.radial_bands",
                f"an integer in 1 .. data.size^2 = {n2}", attack.radial_bands)
        require(math.isfinite(float(self.removed_percent)) and 0.0 <= float(self.removed_percent) < 100.0,
                "removed_percent", "a number in [0, 100)", self.removed_percent)
        require(isinstance(self.removal, int) and 0 <= self.removal < len(REMOVALS), "removal",
                f"an index 0 .. {len(REMOVALS) - 1} into {REMOVALS}", self.removal)
        return dataclasses.replace(self, data=data, model=model, attack=attack)


def first_layer_energy(params, cfg: ImageNet, data: ImageSignal):
    """``(H, W)`` ||A_1 b_ij||^2 of the first layer's linear map A_1 on every DCT basis image b_ij
    (b_ij = idct2(e_ij)); summed over (i, j) it is ||A_1||_F^2 (the basis is orthonormal)."""
    n = data.size
    dt = jax.tree.leaves(params)[0].dtype
    basis = idct2(jnp.eye(n * n, dtype=dt).reshape(n * n, n, n), "HW")[..., None]  # (N^2, N, N, 1)
    if cfg.arch == "mlp":
        out = basis.reshape(n * n, -1) @ params["dense_0"]["kernel"]
    else:
        out = L.conv_apply(params["conv_0"]["kernel"], basis)
    return jnp.sum(out.reshape(n * n, -1) ** 2, axis=1).reshape(n, n)


def robust_mean(l2_acc, linf_acc) -> np.ndarray:
    """Each run's mean PGD robust accuracy over its l2 and l-inf budgets: ``l2_acc (runs, eps_l2)``,
    ``linf_acc (runs, eps_linf)`` -> ``(runs,)``, in their dtype (the outputs' float32) — the one summary of
    robustness the sim's checks and its figures both use."""
    return np.mean(np.concatenate([l2_acc, linf_acc], axis=1), axis=1)


def run_adaptive_net(cfg: AdaptiveNetRun) -> dict:
    """Train one image net and measure it (module docstring)."""
    dc, mc, ac = cfg.data, cfg.model, cfg.attack
    shape = (dc.size, dc.size, 1)
    keys = [jax.random.fold_in(jax.random.PRNGKey(cfg.seed), i) for i in range(8)]
    k_means, _, _, k_init, k_batch, k_att, k_noise, k_lip = keys
    # one normal draw for class means, train and test sets (every random call is a separately compiled kernel)
    z = jax.random.normal(k_means, (dc.n_classes + cfg.n_train + cfg.n_test, dc.size, dc.size))
    k_, n_tr = dc.n_classes, cfg.n_train
    means = image_class_means_tilde(None, dc, z=z[:k_])
    x_tr, y_tr = sample_images(None, dc, n_tr, means, z=z[k_:k_ + n_tr])
    x_te, y_te = sample_images(None, dc, cfg.n_test, means, z=z[k_ + n_tr:])
    params0 = init_image_net(k_init, mc, shape)
    relevant = image_relevant_mask(dc)
    # frequency-removed training data (the test set stays raw); p = 0 selects x_tr itself, so the runs without
    # removal train on exactly the unfiltered set
    p_rm = jnp.asarray(cfg.removed_percent, x_tr.dtype)
    x_rm = jnp.where(cfg.removal == 0, phi_freq(x_tr, p_rm, "HWC"), phi_nrg(x_tr, p_rm, "HWC"))
    x_fit = jnp.where(p_rm > 0, x_rm, x_tr)
    removal_change = jnp.linalg.norm((x_fit - x_tr).ravel()) / jnp.linalg.norm(x_tr.ravel())

    def logits(p, x):
        return apply_image_net(p, x, mc)

    def loss_fn(p, x, lab):
        return cross_entropy(logits(p, x), lab)

    def acc(p, x, lab):
        return jnp.mean(L.margin(logits(p, x), lab) > 0)

    nr_tr, nr_te = min(cfg.record_points, cfg.n_train), min(cfg.record_points, cfg.n_test)

    def record_fn(p):
        return {"loss": jnp.mean(loss_fn(p, x_fit[:nr_tr], y_tr[:nr_tr])), "train_acc": acc(p, x_fit[:nr_tr],
                                                                                           y_tr[:nr_tr]),
                "test_acc": acc(p, x_te[:nr_te], y_te[:nr_te])}

    plan = record_plan(cfg.train.steps, cfg.train.n_records, cfg.train.plan)
    params, records, bad = train(loss_fn, params0, x_fit, y_tr, family_optimizer(cfg.optim), plan=plan,
                                 record_fn=record_fn, key=k_batch, batch_size=cfg.optim.batch_size)
    res: dict = {"records": records, "plan": jnp.asarray(plan), "diverged_step": bad, "diverged": bad >= 0,
                 "clean_acc": acc(params, x_te, y_te), "removal_change": removal_change}

    # ---- Gaussian noise (no clamping), mean over draws
    stds = jnp.asarray(ac.noise_std, x_te.dtype)

    def noisy_acc(s, k):
        return acc(params, x_te + s * jax.random.normal(k, x_te.shape, x_te.dtype), y_te)

    nkeys = jax.random.split(k_noise, ac.noise_draws)
    res["noise_acc"] = jnp.mean(jax.vmap(lambda s: jax.vmap(lambda k: noisy_acc(s, k))(nkeys))(stds), axis=1)
    # ---- band-limited noise: one draw in DCT coordinates, masked per band, back to pixels (module docstring)
    zb = jax.random.normal(jax.random.fold_in(k_noise, 1), (ac.noise_draws, cfg.n_test, dc.size, dc.size),
                           x_te.dtype)
    bstds = jnp.asarray(ac.band_std, x_te.dtype)

    def band_acc(mask):
        nb = idct2(zb * mask.astype(zb.dtype), "HW")[..., None]  # (draws, n_test, N, N, 1)
        return jax.vmap(lambda s: jnp.mean(jax.vmap(lambda e: acc(params, x_te + s * e, y_te))(nb)))(bstds)

    res["band_noise_acc"] = {"relevant": band_acc(relevant), "irrelevant": band_acc(~relevant)}
    # ---- the paper's Fig. 4: the same draws on each radial band, one std
    rb = jnp.asarray(radial_bands((dc.size, dc.size), ac.radial_bands))  # (N, N) band index

    def radial_acc(b):
        nb = idct2(zb * (rb == b).astype(zb.dtype), "HW")[..., None]
        return jnp.mean(jax.vmap(lambda e: acc(params, x_te + ac.radial_std * e, y_te))(nb))

    res["band_noise_radial"] = lax.map(radial_acc, jnp.arange(ac.radial_bands))

    # ---- l2 / l-inf PGD on the CE loss, success judged on the margin
    n = ac.n_points
    xa, la = x_te[:n], y_te[:n]
    d = xa[0].size
    flat = xa.reshape(n, d)

    def out_of(delta):
        return logits(params, (flat + delta).reshape((n, *shape)))

    def margin_fn(delta):
        return L.margin(out_of(delta), la)

    def ce_fn(delta):
        return cross_entropy(out_of(delta), la)

    # random starts from ONE normal draw: l2 start = direction z / ||z|| times radius U^(1/d); uniforms as
    # erf(z / sqrt 2) (U(-1, 1) exactly in distribution), so the cube start is erf(z' / sqrt 2)
    zz = jax.random.normal(k_att, (ac.restarts, n, 2 * d + 1), flat.dtype)
    u = jax.scipy.special.erf(zz / math.sqrt(2.0))
    s2 = zz[..., :d] / jnp.linalg.norm(zz[..., :d], axis=-1, keepdims=True) * (
        (0.5 * (u[..., -1:] + 1.0)) ** (1.0 / d))
    si = u[..., d:2 * d]
    grid = jnp.asarray(ac.l2_eps + ac.linf_eps, flat.dtype)
    is_linf = jnp.arange(grid.shape[0]) >= len(ac.l2_eps)
    rob = R.robust_accuracy_lp(margin_fn, ce_fn, grid, is_linf, s2, si, steps=ac.steps, rel_step=ac.rel_step)[0]
    res["l2_acc"], res["linf_acc"] = rob[:len(ac.l2_eps)], rob[len(ac.l2_eps):]

    # ---- Lipschitz: global product bounds (end and init), local estimates on the attacked points
    k_l, k_j = jax.random.split(k_lip)
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, params0)
    lips = jax.vmap(lambda p: L.image_net_lipschitz(p, mc, shape, k_l, cfg.power_iters))(both)
    res["lip"], res["lip_init"] = (jax.tree.map(lambda a, i=i: a[i], lips) for i in range(2))
    g = L.margin_gradients(lambda x: logits(params, x), xa, la)  # (n, N, N, 1)
    gf = g.reshape(n, -1)
    gt2 = dct2(g[..., 0], "HW") ** 2
    gn = jnp.linalg.norm(gf, axis=1)
    res["local"] = {"margin_grad_l2": jnp.mean(gn), "margin_grad_l2_max": jnp.max(gn),
                    "margin_grad_l1": jnp.mean(jnp.sum(jnp.abs(gf), axis=1)),
                    "grad_irrelevant_frac": jnp.mean(jnp.sum(jnp.where(relevant, 0.0, gt2), axis=(1, 2))
                                                     / jnp.maximum(jnp.sum(gt2, axis=(1, 2)), 1e-30))}
    if cfg.jacobian:
        jn = L.jacobian_norm(lambda x: logits(params, x), xa, k_j, iters=20)
        res["local"].update(jac_norm_mean=jnp.mean(jn), jac_norm_max=jnp.max(jn))
    e0, e1 = first_layer_energy(params0, mc, dc), first_layer_energy(params, mc, dc)
    irr = ~relevant
    res["first_layer_irr"] = {"init": jnp.sum(jnp.where(irr, e0, 0.0)), "final": jnp.sum(jnp.where(irr, e1, 0.0))}
    res["first_layer_frac"] = {"init": res["first_layer_irr"]["init"] / jnp.sum(e0),
                               "final": res["first_layer_irr"]["final"] / jnp.sum(e1)}
    # the change A_1 - A_1(0) is the first layer of the parameter difference (the layer is linear in its kernel)
    ed = first_layer_energy(jax.tree.map(jnp.subtract, params, params0), mc, dc)
    res["first_layer_delta"] = {"irr": jnp.sqrt(jnp.sum(jnp.where(irr, ed, 0.0))), "total": jnp.sqrt(jnp.sum(ed))}
    return res
