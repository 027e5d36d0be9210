"""One run of "Hold me tight!" (arXiv 2002.06349, spec ``hold_me_tight.md``): train a net, then measure its margins
along subspaces with subspace DeepFool (:mod:`fa_jax.metrics.margins`).

``run_hold_me_tight(cfg, arrays=None)``:

1. Data: the synthetic discriminative generator (:mod:`fa_jax.data.discriminative`, drawn inside the program from
   the traced ``data.seed``) or real images (``mnist-5k`` / ``mnist`` / ``cifar10``), in [0, 1] pixel units, NHWC.
   The images are numpy arrays loaded once per static (dataset, :class:`ImageData`); through the sweep engine they
   are the group's shared inputs (:func:`shared_image_data`, the ``Experiment``'s ``shared``): unbatched arguments
   of the compiled program, counted by its memory plan, never constants baked into it. Synthetic runs have none
   (``{}``: their program is the one without shared inputs). Called directly without ``arrays`` a run loads them.
2. Interventions on train AND test images (linear maps through the orthonormal DCT, spec 2.3), both traced:
   ``lowpass = b > 0`` keeps the top-left b x b DCT coefficients of every channel (the intended 2-D low-pass,
   not the released CIFAR script's one-axis slice); ``flip = 1`` applies the frequency flip Q (after the low-pass).
   The input normalisation sits inside the model: logits = net((x - mu) / s) with a mean *image* mu (a constant
   image of the training mean; flipped with the data: Q mu) and a scalar s, so margins are in raw input units.
   MLP + flip: the first-layer kernel is initialised at Q K_1 (spec D2), so the flipped run is the original one
   composed with Q, and its margin along block i equals the original's along the mirrored block.
3. Training through :func:`fa_jax.trainer.train`: CE loss, SGD with momentum, weight decay, global-norm clipping
   (:func:`fa_jax.optim.make_optimizer`), times a per-iteration triangular learning-rate schedule
   lr(t) = peak * t / t_p for t <= t_p = peak_frac * T, then peak * (T - t) / (T - t_p). Adversarial training
   (``adv_steps > 0``): each batch is replaced by its l2 PGD perturbation (:func:`fa_jax.metrics.robustness.pgd`,
   radius ``eps_adv``, ``adv_steps`` steps of ``adv_rel_step * eps_adv``, zero start, margin objective
   f_y - max_{k != y} f_k descended) computed with the parameters under stop-gradient.
4. Margins of the first ``margin.n_points`` test points along (a) the diagonal DCT block bank (K = block_size,
   stride block_step) and (b) a bank of dense subspaces: synthetic data: u, w, ``n_random`` random
   ``random_dim``-dimensional subspaces of N and of E \\ {w}, all of N, all of E \\ {w} (mapped by Q in a flipped
   run, so "u" is always the discriminative direction of the data the net saw); images: ``n_random`` random
   subspaces of R^D of the block dimension. Outputs ``(subspaces, points)``.

Keys: init / batches / PGD from ``fold_in(PRNGKey(model_seed), 0 / 1)``; synthetic train / test sets from
``fold_in(PRNGKey(data.seed), 0 / 1)``.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..config import check_fields, require, traced
from ..data import images as I
from ..data.discriminative import Discriminative, directions, sample
from ..frequency import apply_mask, flip_frequency, square_mask
from ..losses import cross_entropy
from ..metrics import robustness as R
from ..metrics.margins import deepfool_bank, deepfool_refined_bank, line_margin_bank
from ..models.image_nets import ImageNet, apply_image_net, init_image_net
from ..optim import OptimConfig, make_optimizer
from ..subspaces import Bank, concat_bases, dct_block_bank, merge, project, random_subspaces
from ..trainer import TrainConfig, record_plan, train

__all__ = ["DATASETS", "HMTRun", "ImageData", "MarginConfig", "adversarial_loss", "bank_names", "block_starts_of",
           "exceeds_fraction", "image_shape_of", "load_image_data", "mirror_error", "optimizer_of",
           "run_hold_me_tight", "shared_image_data", "spearman", "triangular"]

DATASETS = ("synthetic", "mnist-5k", "mnist", "cifar10")
SCHEDULES = ("triangular", "constant")


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Real images (all static: the arrays are the program's shared inputs, :func:`shared_image_data`)."""

    n_train_per_class: int | None = None  # stratified subset of the train split (None: all)
    n_test_per_class: int | None = None
    data_dir: str | None = None
    seed: int = 0  # subsets and the test order (margins use the first n_points)
    verify: bool = True  # official checksums of the standard files (False: re-packed copies)

    def validate(self) -> ImageData:
        check_fields(self, prefix="image.")  # types first: the range checks below compare numbers
        for f in ("n_train_per_class", "n_test_per_class"):
            v = getattr(self, f)
            require(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1), f"image.{f}",
                    "None (all samples) or an integer >= 1", v)
        require(isinstance(self.seed, int) and self.seed >= 0, "image.seed", "an integer >= 0", self.seed)
        return self


_IMAGE_CACHE: dict = {}


def load_image_data(name: str, ic: ImageData) -> dict:
    """``{"x_train", "y_train", "x_test", "y_test", "mean" (scalar), "std" (scalar), "image_shape", "classes"}``
    (numpy, cached): :func:`fa_jax.data.images.load_train_test` with ``ic.seed`` (the test set shuffled), and the
    global mean and std of the training pixels (computed in float32)."""
    key = (name, ic)
    if key in _IMAGE_CACHE:
        return _IMAGE_CACHE[key]
    out = {}
    splits = I.load_train_test(name, ic.data_dir, verify=ic.verify, n_train_per_class=ic.n_train_per_class,
                               n_test_per_class=ic.n_test_per_class, seed=ic.seed)
    for split, ds in zip(("train", "test"), splits):
        out[f"x_{split}"] = np.ascontiguousarray(ds.x, np.float32)
        out[f"y_{split}"] = ds.y.astype(np.int32)
        out["image_shape"] = tuple(int(s) for s in ds.image_shape)
        out["classes"] = ds.classes
    st = I.fit_standardizer(out["x_train"], "global", compute_dtype=np.float32)
    out["mean"], out["std"] = st.mean.ravel()[0], st.std.ravel()[0]  # float32 scalars
    _IMAGE_CACHE[key] = out
    return out


SHARED = ("x_train", "y_train", "x_test", "y_test", "mean", "std")


def shared_image_data(cfg: HMTRun) -> dict[str, np.ndarray]:
    """The arrays of :func:`load_image_data` a real-image run trains and is measured on (they depend only on the
    static ``cfg.dataset`` and ``cfg.image``), ``{name: array}`` for the names in :data:`SHARED`: the sweep
    engine's shared inputs. Synthetic runs draw their data inside the program: ``{}`` (no shared inputs)."""
    if cfg.dataset == "synthetic":
        return {}
    data = load_image_data(cfg.dataset, cfg.image)
    return {k: data[k] for k in SHARED}


@dataclasses.dataclass(frozen=True)
class MarginConfig:
    n_points: int = 100  # test points measured (the same for every subspace)
    n_candidates: int = 10  # K_c
    max_iter: int = 100
    overshoot: float = traced(0.02)
    floor: float = traced(1e-4)
    block_size: int = 8  # K
    block_step: int = 1
    n_random: int = 2  # random subspaces per kind
    random_dim: int = 8  # synthetic data: dimension of the random subspaces of N and E
    random_seed: int = 0  # the random subspaces (static: the bank is a constant)
    # "refined": DeepFool, then bisection to the first boundary crossing on its segment (metrics.margins.
    # deepfool_refined_bank; raw DeepFool kept as "deepfool_upper"), and for 1-D subspaces (u, w) the exact two-sided
    # line search (line_margin_bank). "deepfool": raw subspace DeepFool, an upper bound that overshoots (issue 16).
    method: str = "refined"
    line_radius: float = traced(100.0)  # 1-D line search out to this radius (raw input units); beyond: censored
    rtol: float = traced(1e-3)  # relative width of the refined bracket

    def validate(self) -> MarginConfig:
        check_fields(self, prefix="margin.")  # types first: the range checks below compare numbers
        for f in ("n_points", "n_candidates", "max_iter", "block_size", "block_step", "n_random", "random_dim"):
            v = getattr(self, f)
            lo = 2 if f == "n_candidates" else (0 if f == "n_random" else 1)
            require(isinstance(v, int) and v >= lo, f"margin.{f}", f"an integer >= {lo}", v)
        require(0 <= float(self.overshoot) < 1, "margin.overshoot", "a number in [0, 1)", self.overshoot)
        require(float(self.floor) > 0, "margin.floor", "a number > 0", self.floor)
        require(self.method in ("refined", "deepfool"), "margin.method", "'refined' or 'deepfool'", self.method)
        require(float(self.line_radius) > 0, "margin.line_radius", "a number > 0", self.line_radius)
        require(0 < float(self.rtol) < 1, "margin.rtol", "a number in (0, 1)", self.rtol)
        return self


@dataclasses.dataclass(frozen=True)
class HMTRun:
    dataset: str = "synthetic"
    synth: Discriminative = dataclasses.field(default_factory=Discriminative)
    image: ImageData = dataclasses.field(default_factory=ImageData)
    model: ImageNet = dataclasses.field(
        default_factory=lambda: ImageNet(arch="mlp", head="multiclass", n_classes=2, hidden=(256, 256)))
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(
        name="momentum", lr=0.05, batch_size=128, momentum=0.9, weight_decay=5e-4, clip_norm=0.5))
    schedule: str = "triangular"
    peak_frac: float = traced(0.4)
    schedule_shift: int = traced(0)  # lr(t + shift): 1 = the official utils.py (lr at the end of the iteration)
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(steps=1560, n_records=5))
    margin: MarginConfig = dataclasses.field(default_factory=MarginConfig)
    adv_steps: int = 0  # l2 PGD steps of adversarial training (0: standard training)
    eps_adv: float = traced(0.0)
    adv_rel_step: float = traced(0.4)  # PGD step = adv_rel_step * eps_adv
    flip: float = traced(0.0)  # 1: train and measure on frequency-flipped images
    lowpass: int = traced(0)  # b > 0: keep the top-left b x b DCT coefficients (2-D low-pass); 0: off
    record_points: int = 500
    model_seed: int = traced(0)

    def validate(self) -> HMTRun:
        check_fields(self)  # types first: the range checks below compare numbers
        require(self.dataset in DATASETS, "dataset", f"one of {DATASETS}", self.dataset)
        synth = self.synth.validate()
        image = self.image.validate()
        model = self.model.validate()
        require(model.head == "multiclass", "model.head", "'multiclass' (margins need >= 2 logits)", model.head)
        n_classes = 2 if self.dataset == "synthetic" else 10
        require(model.n_classes == n_classes, "model.n_classes", f"{n_classes} for dataset {self.dataset!r}",
                model.n_classes)
        margin = self.margin.validate()
        shape = image_shape_of(dataclasses.replace(self, synth=synth, image=image))
        n_train = synth.n_train if self.dataset == "synthetic" else None
        if self.dataset != "synthetic":
            data = load_image_data(self.dataset, image)
            n_train = data["y_train"].shape[0]
            require(margin.n_points <= data["y_test"].shape[0], "margin.n_points",
                    f"an integer <= the test set size {data['y_test'].shape[0]}", margin.n_points)
        else:
            require(margin.n_points <= synth.n_test, "margin.n_points", f"an integer <= data.n_test = {synth.n_test}",
                    margin.n_points)
            e_rest = synth.dim - synth.s - synth.n_noise - 1
            require(margin.random_dim <= (synth.n_noise if synth.kind == "nads" else min(synth.n_noise, e_rest)),
                    "margin.random_dim", "an integer <= dim N (and <= dim E - 1 for kind 'blocks')",
                    margin.random_dim)
        self.optim.validate(n_train)
        self.train.validate()
        require(self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}", self.schedule)
        require(0 < float(self.peak_frac) < 1, "peak_frac", "a number in (0, 1)", self.peak_frac)
        require(margin.block_size <= min(shape[:2]), "margin.block_size", f"an integer <= {min(shape[:2])}",
                margin.block_size)
        require(isinstance(self.adv_steps, int) and self.adv_steps >= 0, "adv_steps", "an integer >= 0",
                self.adv_steps)
        require(float(self.eps_adv) >= 0, "eps_adv", "a number >= 0", self.eps_adv)
        require(float(self.flip) in (0.0, 1.0), "flip", "0 or 1", self.flip)
        require(0 <= int(self.lowpass) <= min(shape[:2]), "lowpass", f"an integer in [0, {min(shape[:2])}]",
                self.lowpass)
        return dataclasses.replace(self, synth=synth, image=image, model=model, margin=margin)


def image_shape_of(cfg: HMTRun) -> tuple[int, int, int]:
    if cfg.dataset == "synthetic":
        return cfg.synth.image_shape
    return load_image_data(cfg.dataset, cfg.image)["image_shape"]


def block_starts_of(cfg: HMTRun) -> np.ndarray:
    return dct_block_bank(image_shape_of(cfg)[:2], cfg.margin.block_size, cfg.margin.block_step)[1]


def bank_names(cfg: HMTRun) -> list[str]:
    """Names of the dense subspaces (axis 0 of the ``sub`` outputs)."""
    r = cfg.margin.n_random
    if cfg.dataset == "synthetic" and cfg.synth.kind == "nads":  # E \\ {w} is empty; all of N ~ all of R^D
        return ["u", "w"] + [f"N{cfg.margin.random_dim}_{i}" for i in range(r)]
    if cfg.dataset == "synthetic":
        return (["u", "w"] + [f"N{cfg.margin.random_dim}_{i}" for i in range(r)]
                + [f"E{cfg.margin.random_dim}_{i}" for i in range(r)] + ["N", "E"])
    return [f"R{i}" for i in range(r)]


def _dense_bank(cfg: HMTRun) -> np.ndarray:
    """``(subspaces, D, d_max)`` float64, see :func:`bank_names` (zero-padded columns)."""
    mc = cfg.margin
    if cfg.dataset == "synthetic":
        dr = directions(cfg.synth)
        bases = [dr["u"], dr["w"]]
        bases += list(random_subspaces(mc.random_seed, mc.n_random, mc.random_dim, dr["N"]))
        if cfg.synth.kind != "nads":
            bases += list(random_subspaces(mc.random_seed + 1, mc.n_random, mc.random_dim, dr["E_rest"]))
            bases += [dr["N"], dr["E_rest"]]
        return concat_bases(bases)
    shape = image_shape_of(cfg)
    d = int(np.prod(shape))
    return random_subspaces(mc.random_seed, mc.n_random, mc.block_size ** 2 * shape[2], np.eye(d))


def triangular(peak, peak_frac, steps: int, shift=0):
    """lr(t): 0 -> peak linearly until t_p = peak_frac * steps, then linearly back to 0 at t = steps, evaluated at
    t + ``shift`` (t = the update count from 0). ``shift = 1`` is the official ``utils.py`` ``train``: the update of
    iteration i of epoch e uses lr_schedule(e + (i + 1) / n_batches) = np.interp over [0, 2/5 T, T] at the END of
    the iteration, so the first update is lr(1) > 0 and the last lr(T) = 0; ``shift = 0`` starts at lr(0) = 0."""
    tp = peak_frac * steps

    def sched(t):
        t = jnp.asarray(t, jnp.result_type(float)) + shift
        up = peak * t / tp
        down = peak * (steps - t) / (steps - tp)
        return jnp.maximum(jnp.where(t <= tp, up, down), 0.0)

    return sched


def optimizer_of(cfg: HMTRun):
    """The run's optax transformation: :func:`fa_jax.optim.make_optimizer`'s chain (global-norm clip, weight decay
    g + wd theta, the update rule) at lr = 1, times the per-iteration schedule lr(t) (:func:`triangular`; t = the
    update count, from 0). For momentum: b_t = g_t + m b_{t-1}, theta_{t+1} = theta_t - lr(t) b_t."""
    if cfg.schedule == "constant":
        return make_optimizer(cfg.optim)
    # make_optimizer's chain (clip, weight decay, update rule) at lr = 1, times the per-iteration schedule: the
    # momentum buffer is unaffected and the step is lr(t) * buffer (PyTorch's SGD + LR scheduler)
    base = make_optimizer(dataclasses.replace(cfg.optim, lr=1.0))
    return optax.chain(base, optax.scale_by_schedule(triangular(cfg.optim.lr, cfg.peak_frac, cfg.train.steps,
                                                                cfg.schedule_shift)))


def adversarial_loss(logits_fn, params, xb, yb, eps_adv, steps: int, rel_step):
    """Per-sample CE at the l2 PGD perturbation of the batch (adversarial training, spec 2.4).

    delta_0 = 0; ``steps`` times: delta <- Pi_eps(delta + alpha g / ||g||) with g = -grad_delta sum_i m_i(delta),
    m_i = f_y(x_i + delta_i) - max_{k != y} f_k(x_i + delta_i) (the margin is descended), alpha = rel_step * eps,
    Pi_eps the projection onto the l2 ball of radius eps per sample; the parameters are under stop-gradient and
    the returned loss CE(f(x + delta), y) carries no gradient through delta. ``logits_fn(params, x (batch, ...))``.
    Returns ``(batch,)``.
    """
    ps = jax.lax.stop_gradient(params)
    n = xb.shape[0]
    flat = xb.reshape(n, -1)

    def margin(delta):
        return R.logit_margin(logits_fn(ps, (flat + delta).reshape(xb.shape)), yb)

    _, delta, _ = R.pgd(margin, lambda d: -margin(d), jnp.zeros_like(flat), eps_adv, steps, rel_step * eps_adv)
    return cross_entropy(logits_fn(params, xb + jax.lax.stop_gradient(delta).reshape(xb.shape)), yb)


def _flip_first_layer(params, shape, on):
    """MLP: K_1 -> Q K_1 (each hidden unit's input weights flipped as an image) when ``on``."""
    k = params["dense_0"]["kernel"]  # (D, n_1), rows in flattened (H, W, C) order
    kq = flip_frequency(k.T.reshape((-1, *shape)), layout="HWC").reshape(k.shape[1], -1).T
    new = dict(params)
    new["dense_0"] = {**params["dense_0"], "kernel": jnp.where(on, kq, k)}
    return new


def first_layer_rms(params0, params, cfg: HMTRun) -> dict:
    """MLP on synthetic data: the RMS over the directions b of a block B of ||K_1^T b|| (the first layer's
    sensitivity to each direction), ||B^T K_1||_F / sqrt(dim B), at init (``"<B>0"``) and after training
    (``"<B>"``), for B in u, N, E \\ {w} (NaN for an empty block). In the data's (unflipped) coordinates: read it
    from unflipped runs. E \\ {w} carries no data, so its rows of the gradient of K_1 are exactly zero and they only
    move by weight decay (:func:`fa_jax.theory.hold_me_tight.weight_decay_factor`)."""
    dr = directions(cfg.synth)
    out = {}
    for name, b in (("u", dr["u"][:, None]), ("N", dr["N"]), ("E", dr["E_rest"])):
        for tag, p in (("0", params0), ("", params)):
            k = p["dense_0"]["kernel"]
            if b.shape[1] == 0:
                out[name + tag] = jnp.asarray(jnp.nan, k.dtype)
            else:
                out[name + tag] = jnp.linalg.norm(jnp.asarray(b, k.dtype).T @ k) / np.sqrt(b.shape[1])
    return out


def run_hold_me_tight(cfg: HMTRun, arrays: dict | None = None) -> dict:
    """Train and measure one net (module docstring). ``arrays``: :func:`shared_image_data` of a real-image run (the
    sweep engine passes them as unbatched program arguments; None: loaded here; synthetic runs ignore them).
    Outputs: ``records`` (loss, test_acc), ``test_acc``, ``train_acc``, ``block`` / ``sub``: ``{"margin",
    "flipped", "iters"}`` of shape ``(subspaces, points)``, ``correct (points,)``, ``diverged_step``."""
    mc, shape = cfg.model, image_shape_of(cfg)
    dt = jnp.result_type(float)
    key = jax.random.PRNGKey(cfg.model_seed)
    k_init, k_batch = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    if cfg.dataset == "synthetic":
        kd = jax.random.PRNGKey(cfg.synth.seed)
        x_tr, y_tr = sample(jax.random.fold_in(kd, 0), cfg.synth, cfg.synth.n_train, dt)
        x_te, y_te = sample(jax.random.fold_in(kd, 1), cfg.synth, cfg.synth.n_test, dt)
        mean, std = jnp.zeros((), dt), jnp.ones((), dt)
    else:
        data = shared_image_data(cfg) if arrays is None else arrays
        x_tr, y_tr = jnp.asarray(data["x_train"], dt), jnp.asarray(data["y_train"])
        x_te, y_te = jnp.asarray(data["x_test"], dt), jnp.asarray(data["y_test"])
        mean, std = jnp.asarray(data["mean"], dt), jnp.asarray(data["std"], dt)

    on_flip = cfg.flip > 0.5

    def transform(x):
        keep = jnp.where(cfg.lowpass > 0, square_mask(shape[:2], cfg.lowpass, "low"), True)
        x = jnp.where(cfg.lowpass > 0, apply_mask(x, keep, "HWC"), x)
        return jnp.where(on_flip, flip_frequency(x, "HWC"), x)

    # the barrier kept XLA from constant-folding the DCT transforms of constant (real-image) data at compile time;
    # the images are now arguments (shared inputs), but it stays: removing it would change the synthetic runs'
    # programs (and so their chunk names) for nothing, and direct calls under jit still close over the images
    x_tr, x_te = jax.lax.optimization_barrier((x_tr, x_te))
    x_tr, x_te = transform(x_tr), transform(x_te)
    mu = jnp.broadcast_to(mean, shape)
    mu = jnp.where(on_flip, flip_frequency(mu, "HWC"), mu)

    def logits(p, x):
        return apply_image_net(p, (x - mu) / std, mc)

    def clean_loss(p, xb, yb):
        return cross_entropy(logits(p, xb), yb)

    if cfg.adv_steps > 0:
        def loss_fn(p, xb, yb):
            return adversarial_loss(logits, p, xb, yb, cfg.eps_adv, cfg.adv_steps, cfg.adv_rel_step)
    else:
        loss_fn = clean_loss

    params0 = jax.tree.map(lambda a: a.astype(dt), init_image_net(k_init, mc, shape))  # float64 under x64
    if mc.arch == "mlp":
        params0 = _flip_first_layer(params0, shape, on_flip)
    nr_tr, nr_te = min(cfg.record_points, x_tr.shape[0]), min(cfg.record_points, x_te.shape[0])

    def acc(p, x, y):
        return jnp.mean(jnp.argmax(logits(p, x), -1) == y)

    def record_fn(p):
        return {"loss": jnp.mean(clean_loss(p, x_tr[:nr_tr], y_tr[:nr_tr])), "test_acc": acc(p, x_te[:nr_te],
                                                                                             y_te[:nr_te])}

    plan = record_plan(cfg.train.steps, cfg.train.n_records, cfg.train.plan)
    params, records, diverged_step = train(loss_fn, params0, x_tr, y_tr, optimizer_of(cfg), plan=plan,
                                           record_fn=record_fn, key=k_batch, batch_size=cfg.optim.batch_size,
                                           sampling=cfg.optim.sampling)
    res = {"records": records, "plan": jnp.asarray(plan), "diverged_step": diverged_step,
           "test_acc": acc(params, x_te, y_te), "train_acc": acc(params, x_tr[:nr_tr], y_tr[:nr_tr])}
    if mc.arch == "mlp" and cfg.dataset == "synthetic":
        res["first_layer"] = first_layer_rms(params0, params, cfg)

    # ---- margins of the first n_points test points
    m = cfg.margin
    xm = x_te[: m.n_points]
    res["correct"] = jnp.argmax(logits(params, xm), -1) == y_te[: m.n_points]

    def logit_one(x):
        return logits(params, x[None])[0]

    kw = {"n_candidates": m.n_candidates, "overshoot": m.overshoot, "max_iter": m.max_iter, "floor": m.floor}
    blocks, _ = dct_block_bank(shape[:2], m.block_size, m.block_step)
    n_blocks = blocks.masks.shape[0]
    dense = _dense_bank(cfg)  # (subspaces, D, d)
    n_sub, d_all, d_max = dense.shape
    b = jnp.asarray(dense, dt)
    if n_sub:
        imgs = jnp.moveaxis(b, 2, 1).reshape((n_sub * d_max, *shape))
        bq = jnp.moveaxis(flip_frequency(imgs, "HWC").reshape(n_sub, d_max, d_all), 1, 2)
        b = jnp.where(on_flip, bq, b)  # the data's subspaces as the flipped net sees them
    # ONE DeepFool over blocks and dense subspaces (a block entry has a zero basis, a dense entry a zero mask)
    bank = merge(Bank(masks=blocks.masks), Bank(bases=np.zeros((n_sub, d_all, max(d_max, 1)))), d_all)
    bases = jnp.asarray(bank.bases, dt)
    if n_sub:
        bases = bases.at[n_blocks:, :, :d_max].set(b)
    full = Bank(masks=jnp.asarray(bank.masks, dt), bases=bases)
    if m.method == "deepfool":
        out = deepfool_bank(logit_one, xm, full, project, **kw)
    else:
        out = dict(deepfool_refined_bank(logit_one, xm, full, project, rtol=m.rtol, **kw))
        # 1-D subspaces (u, w): the exact margin by a two-sided line search along +-direction (DeepFool searches
        # along the gradient's sign only); DeepFool's value stays in "deepfool_upper"
        one_d = np.flatnonzero((np.abs(dense).sum(axis=1) > 0).sum(axis=1) == 1) if n_sub else np.zeros(0, int)
        if one_d.size:
            cols = np.argmax(np.abs(dense[one_d]).sum(axis=1) > 0, axis=1)
            dirs = b[jnp.asarray(one_d), :, jnp.asarray(cols)].reshape((one_d.size, *shape))
            lm = line_margin_bank(logit_one, xm, dirs, max_radius=m.line_radius, rtol=m.rtol)
            rows = jnp.asarray(n_blocks + one_d)
            for key in ("margin", "margin_lo", "margin_hi", "flipped"):
                out[key] = out[key].at[rows].set(lm[key].astype(out[key].dtype))
    res["block"] = jax.tree.map(lambda a: a[:n_blocks], out)
    if n_sub:
        res["sub"] = jax.tree.map(lambda a: a[n_blocks:], out)
    return res


# ----------------------------------------------------------------------------- analysis (numpy, host side)
def mirror_error(a: dict, b: dict, order) -> dict:
    """Margins of run a vs run b with b's subspaces reordered by ``order`` (the flip's mirror; ``slice(None)``:
    the same order). ``a`` / ``b``: ``{"margin", "flipped"} (subspaces, points)``.

    ``max_rel`` / ``median_rel``: |m_a - m_b| / |m_a| over the entries flipped and finite in both (NaN if none);
    ``flag_agreement``: the fraction of entries whose censoring flags agree; ``profile_max_rel``: the max over
    subspaces of |med_a - med_b| / |med_a| of the censored medians (censored entries at their bounds).
    """
    from ..metrics.margins import censored_median

    ma, fa = np.asarray(a["margin"], np.float64), np.asarray(a["flipped"], bool)
    mb, fb = np.asarray(b["margin"], np.float64)[order], np.asarray(b["flipped"], bool)[order]
    both = fa & fb & np.isfinite(ma) & np.isfinite(mb)
    rel = np.abs(ma - mb)[both] / np.maximum(np.abs(ma[both]), 1e-30)
    pa, pb = censored_median(ma, fa)["median"], censored_median(mb, fb)["median"]
    prof = np.abs(pa - pb) / np.maximum(np.abs(pa), 1e-30)
    nan = float("nan")
    return {"max_rel": float(rel.max()) if rel.size else nan, "median_rel": float(np.median(rel)) if rel.size else nan,
            "flag_agreement": float(np.mean(fa == fb)), "profile_max_rel": float(np.max(prof))}


def _average_ranks(v) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    _, inv, counts = np.unique(np.asarray(v, np.float64), return_inverse=True, return_counts=True)
    top = np.cumsum(counts)
    return (top - (counts - 1) / 2.0)[inv.ravel()]


def spearman(x, y) -> float:
    """Spearman's rank correlation of ``x`` and ``y``: the Pearson correlation of their ranks (ties get their
    average rank). NaN when either is constant (no order to correlate)."""
    rx, ry = _average_ranks(x), _average_ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def exceeds_fraction(first, second) -> float:
    """The sign-test statistic: the fraction of points whose ``second`` statistic strictly exceeds ``first``
    (``(points,)`` each; NaN entries count as not exceeding, so an undefined comparison never helps a claim)."""
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    with np.errstate(invalid="ignore"):
        return float(np.mean(b > a))
