"""One run of feature averaging on real images (spec ``feature_averaging.md`` P14, Fig. 2c/2d, 2.4-2.5).

``run_feature_averaging_real(cfg)`` trains an image net (MLP or small conv net, :mod:`fa_jax.models.image_nets`)
with *binary* supervision (one output, logistic loss on the +-1 side of a class partition, e.g. MNIST odd vs even)
or *10-class* supervision (softmax CE on the digit), then measures:

* clean test accuracy of every binary read-out: ``binary`` (sgn f) for the binary net; for the 10-class net the
  primary ``lse`` (probability sum, F_lse = log sum_{+} e^{f_j} - log sum_{-} e^{f_j}, the log-odds of the summed
  softmax probabilities of the two sides; :func:`fa_jax.metrics.robustness.lse_readout`) and the labelled variants
  ``sum`` (F_sum = sum_{+} f_j - sum_{-} f_j, raw logit sum) and ``max`` (F_max = max_{+} f_j - max_{-} f_j), with
  the class signs of :func:`fa_jax.data.images.class_signs`; F = 0 counts as an error. The 10-class net also
  reports its 10-way (argmax) accuracy. The training records (``train_acc`` / ``test_acc``) use the first
  read-out of :func:`readouts` (``binary`` / ``lse``).
* full-dimensional l2 PGD robust accuracy vs radius eps (in the units of the [0, 1] pixels: any standardisation
  is a fixed first layer of the net, so the attack always perturbs raw pixels; no box constraint, as in the spec).
  Binary net: descend the margin y f (the same normalised steps as ascending the logistic loss, without its
  underflow). 10-class net, for each read-out r in {lse, sum, max}: the read-out's own margin (``<r>_margin``) and the
  native 10-class CE loss (``<r>_ce``, success judged on r), spec 2.4-2.5: the objective changes the answer, so both
  are run and labelled. ``robust[r]`` (the reported curve) counts a point as robust only if EVERY attack on r
  failed (per point, per radius): the strongest estimate available.
* class-mean cosine matrices of the penultimate features on the test set (Fig. 2c/2d analogue): with m_c the mean
  feature of digit c, ``cos_raw[c, c'] = cos(m_c, m_c')`` and ``cos[c, c'] = cos(m_c - m, m_c' - m)`` (m the mean of
  the m_c); ``head_cos[c, j] = cos(m_c - m, head weight j)``; summaries ``within_side`` (mean centred cosine of
  two different classes of the same side) and ``cross_side`` (different sides).

The data are numpy arrays loaded once per static :class:`RealData` (module-level cache, never traced). Through the
sweep engine they are the group's shared inputs (:func:`shared_real_data`, the ``Experiment``'s ``shared``): one
unbatched argument of the compiled program, counted by its memory plan, never a constant baked into it (the
CIFAR-10 training set alone is 614 MB). Called directly without ``arrays`` the run loads them itself. The model
seed is traced, so the sweep engine vmaps seeds.
Keys: init / mini-batches / attack starts from ``fold_in(PRNGKey(model_seed), 0 / 1 / 2)``.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..config import check_fields, require, traced
from ..data import images as I
from ..losses import cross_entropy, logistic
from ..metrics import features as F
from ..metrics import robustness as R
from ..models.image_nets import ImageNet, apply_image_net, binary_logit, init_image_net, penultimate
from ..optim import OptimConfig, make_optimizer
from ..trainer import TrainConfig, record_plan, train

__all__ = ["STANDARDIZE", "FARealRun", "RealAttack", "RealData", "attacks_of", "eps_grid", "load_real_data",
           "readout", "readouts", "run_feature_averaging_real", "shared_real_data"]

STANDARDIZE = ("none", "global", "channel", "feature")
OBJECTIVES = ("margin", "ce")


@dataclasses.dataclass(frozen=True)
class RealData:
    """A real binary task; every field is static (the arrays are constants of the compiled program)."""

    name: str = "mnist-5k"  # one of fa_jax.data.images.DATASETS
    partition: str = "odd_even"  # a fa_jax.data.images.PARTITIONS name
    n_train_per_class: int | None = None  # stratified subset of the train split (None: all of it)
    n_test_per_class: int | None = None
    standardize: str = "none"  # statistics fitted on the train set, applied as a fixed first layer of the net
    data_dir: str | None = None  # None: $FA_JAX_DATA (file-based sets only)
    verify: bool = True  # check the standard files against the official checksums (False: re-packed copies)
    seed: int = 0  # subsets and the order of the test set (the attacked points are its first n_points)

    def validate(self) -> RealData:
        check_fields(self, prefix="data.")  # types first: the range checks below compare numbers
        require(self.name in I.DATASETS, "data.name", f"one of {I.DATASETS}", self.name)
        require(self.partition in I.PARTITIONS, "data.partition", f"one of {tuple(I.PARTITIONS)}", self.partition)
        for f in ("n_train_per_class", "n_test_per_class"):
            v = getattr(self, f)
            require(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1), f"data.{f}",
                    "None (all samples) or an integer >= 1", v)
        require(self.standardize in STANDARDIZE, "data.standardize", f"one of {STANDARDIZE}", self.standardize)
        require(isinstance(self.seed, int) and self.seed >= 0, "data.seed", "an integer >= 0", self.seed)
        require(isinstance(self.verify, bool), "data.verify", "true or false", self.verify)
        return self


_DATA_CACHE: dict[RealData, dict] = {}


def load_real_data(dc: RealData) -> dict:
    """Numpy arrays of the task (cached per config): ``x_train/x_test (n, H, W, C)`` float32 in [0, 1],
    ``y_train/y_test`` float32 +-1, ``fine_train/fine_test`` int32 class indices, ``signs (classes,)`` float32,
    ``mean``/``std`` (the input standardisation), ``image_shape``, ``classes``. Subsets, class filter and test
    order: :func:`fa_jax.data.images.load_train_test` with ``dc.seed``. Missing files raise the loader's
    FileNotFoundError (it names the files and where to get them)."""
    dc = dc.validate()
    if dc in _DATA_CACHE:
        return _DATA_CACHE[dc]
    out = {}
    splits = I.load_train_test(dc.name, dc.data_dir, verify=dc.verify, n_train_per_class=dc.n_train_per_class,
                               n_test_per_class=dc.n_test_per_class, seed=dc.seed, partition=dc.partition)
    for split, ds in zip(("train", "test"), splits):
        signs = I.class_signs(dc.partition, len(ds.classes))
        fine = ds.y.astype(np.int32)
        out[f"x_{split}"] = np.ascontiguousarray(ds.x, np.float32)
        out[f"fine_{split}"] = fine
        out[f"y_{split}"] = signs[fine].astype(np.float32)
        out["signs"] = signs.astype(np.float32)
        out["classes"] = ds.classes
        out["image_shape"] = tuple(int(s) for s in ds.image_shape)
    if dc.standardize == "none":
        out["mean"], out["std"] = np.zeros((), np.float32), np.ones((), np.float32)
    else:
        st = I.fit_standardizer(out["x_train"], dc.standardize)
        out["mean"], out["std"] = st.mean, st.std
    _DATA_CACHE[dc] = out
    return out


@dataclasses.dataclass(frozen=True)
class RealAttack:
    steps: int = 20  # PGD steps, alpha = rel_step * eps / steps
    restarts: int = 1  # random starts, uniform in the eps-ball
    rel_step: float = 2.5
    n_points: int = 500  # the first n_points of the (shuffled) test set
    eps_max: float = 3.0  # eps grid: linspace(0, eps_max, n_eps), l2 norm in [0, 1]-pixel units
    n_eps: int = 13
    ce: bool = True  # 10-class net: also attack the native CE loss
    eps_batch: int = 4  # radii attacked at once (memory)

    def validate(self, n_test: int) -> RealAttack:
        check_fields(self, prefix="attack.")  # types first: the range checks below compare numbers
        for f in ("steps", "restarts", "n_eps", "eps_batch"):
            v = getattr(self, f)
            require(isinstance(v, int) and v >= (2 if f == "n_eps" else 1), f"attack.{f}",
                    f"an integer >= {2 if f == 'n_eps' else 1}", v)
        require(isinstance(self.n_points, int) and 1 <= self.n_points <= n_test, "attack.n_points",
                f"an integer in 1 .. n_test = {n_test}", self.n_points)
        require(math.isfinite(self.eps_max) and self.eps_max > 0, "attack.eps_max", "a finite number > 0",
                self.eps_max)
        require(math.isfinite(self.rel_step) and self.rel_step > 0, "attack.rel_step", "a finite number > 0",
                self.rel_step)
        return self


@dataclasses.dataclass(frozen=True)
class FARealRun:
    data: RealData = dataclasses.field(default_factory=RealData)
    model: ImageNet = dataclasses.field(default_factory=ImageNet)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(name="adam", lr=1e-3, batch_size=128))
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(steps=1000, n_records=10))
    attack: RealAttack = dataclasses.field(default_factory=RealAttack)
    record_points: int = 1000  # train / test points the loss and accuracy records are computed on
    model_seed: int = traced(0)

    def validate(self) -> FARealRun:
        check_fields(self)  # types first: the range checks below compare numbers
        data = self.data.validate()
        model = self.model.validate()
        arrays = load_real_data(data)
        n_cls = len(arrays["signs"])
        require(model.n_classes == n_cls, "model.n_classes", f"the number of classes of {data.name!r} ({n_cls})",
                model.n_classes)
        self.optim.validate(arrays["fine_train"].shape[0])
        self.train.validate()
        attack = self.attack.validate(arrays["fine_test"].shape[0])
        # the CE attack only exists for the 10-class net: pin it off for the binary one (no program split)
        if model.head == "binary":
            attack = dataclasses.replace(attack, ce=False)
        require(isinstance(self.record_points, int) and self.record_points >= 1, "record_points",
                "an integer >= 1", self.record_points)
        return dataclasses.replace(self, data=data, model=model, attack=attack)


def eps_grid(cfg: FARealRun) -> np.ndarray:
    return np.linspace(0.0, cfg.attack.eps_max, cfg.attack.n_eps)


def readouts(cfg: FARealRun) -> tuple[str, ...]:
    """Binary read-outs of this net; the first is the primary one (F_lse for the 10-class net)."""
    return ("binary",) if cfg.model.head == "binary" else ("lse", "sum", "max")


def readout(logits, signs, kind: str):
    """``logits (samples, outputs)`` -> binary score ``(samples,)`` for ``kind`` in ``binary`` / ``lse`` / ``sum`` /
    ``max`` (``lse``: :func:`fa_jax.metrics.robustness.lse_readout`; the others:
    :func:`fa_jax.models.image_nets.binary_logit`)."""
    if kind == "lse":
        return R.lse_readout(logits, jnp.asarray(signs, logits.dtype))
    return binary_logit(logits, signs, kind)


def attacks_of(cfg: FARealRun) -> list[tuple[str, str]]:
    """``[(read-out, objective)]`` attacked for this net."""
    out = [(r, "margin") for r in readouts(cfg)]
    if cfg.model.head == "multiclass" and cfg.attack.ce:
        out += [(r, "ce") for r in readouts(cfg)]
    return out


def _class_means(feats, labels, n_classes: int):
    onehot = jax.nn.one_hot(labels, n_classes, dtype=feats.dtype)
    return (onehot.T @ feats) / jnp.maximum(onehot.sum(0), 1.0)[:, None]


def feature_summary(feats, labels, signs, head_kernel):
    """Class-mean cosine matrices of penultimate features ``feats (samples, width)`` (module docstring)."""
    c = signs.shape[0]
    means = _class_means(feats, labels, c)
    centred = means - means.mean(0, keepdims=True)
    cos = F.cosine_matrix(centred, centred)
    off = 1.0 - jnp.eye(c, dtype=cos.dtype)
    same = (signs[:, None] == signs[None, :]).astype(cos.dtype) * off
    cross = (signs[:, None] != signs[None, :]).astype(cos.dtype)
    return {"cos": cos, "cos_raw": F.cosine_matrix(means, means), "head_cos": F.cosine_matrix(centred, head_kernel.T),
            "within_side": F.masked_mean(cos, same), "cross_side": F.masked_mean(cos, cross)}


SHARED = ("x_train", "x_test", "y_train", "y_test", "fine_train", "fine_test", "mean", "std", "signs")


def shared_real_data(cfg: FARealRun) -> dict[str, np.ndarray]:
    """The arrays of :func:`load_real_data` every run of a sweep group trains and is measured on (they depend only on
    the static ``cfg.data``): the sweep engine's shared inputs, ``{name: array}`` for the names in :data:`SHARED`."""
    data = load_real_data(cfg.data)
    return {k: data[k] for k in SHARED}


def run_feature_averaging_real(cfg: FARealRun, arrays: dict | None = None) -> dict:
    """Train one image net and measure it (module docstring). ``arrays``: :func:`shared_real_data` (the sweep
    engine passes them as unbatched program arguments; None: loaded here). Shapes: n attacked points, D pixels,
    E radii."""
    data = shared_real_data(cfg) if arrays is None else arrays
    mc = cfg.model
    binary = mc.head == "binary"
    shape = load_real_data(cfg.data)["image_shape"]
    signs = jnp.asarray(data["signs"])
    mean, std = jnp.asarray(data["mean"]), jnp.asarray(data["std"])
    key = jax.random.PRNGKey(cfg.model_seed)
    k_init, k_batch, k_attack = (jax.random.fold_in(key, i) for i in range(3))
    params0 = init_image_net(k_init, mc, shape)

    def logits(p, x):
        return apply_image_net(p, (x - mean) / std, mc)

    def score(p, x, kind):
        return readout(logits(p, x), signs, kind)

    x_tr, x_te = jnp.asarray(data["x_train"]), jnp.asarray(data["x_test"])
    y_te, fine_te = jnp.asarray(data["y_test"]), jnp.asarray(data["fine_test"])
    if binary:
        def loss_fn(p, x, lab):
            return logistic(logits(p, x)[:, 0], lab)
        tr_lab = jnp.asarray(data["y_train"])
    else:
        def loss_fn(p, x, lab):
            return cross_entropy(logits(p, x), lab)
        tr_lab = jnp.asarray(data["fine_train"])
    main = readouts(cfg)[0]
    nr_tr, nr_te = min(cfg.record_points, x_tr.shape[0]), min(cfg.record_points, x_te.shape[0])

    def record_fn(p):
        acc_tr = jnp.mean(score(p, x_tr[:nr_tr], main) * jnp.asarray(data["y_train"])[:nr_tr] > 0)
        return {"loss": jnp.mean(loss_fn(p, x_tr[:nr_tr], tr_lab[:nr_tr])), "train_acc": acc_tr,
                "test_acc": jnp.mean(score(p, x_te[:nr_te], main) * y_te[:nr_te] > 0)}

    plan = record_plan(cfg.train.steps, cfg.train.n_records, cfg.train.plan)
    params, records, diverged_step = train(loss_fn, params0, x_tr, tr_lab, make_optimizer(cfg.optim), plan=plan,
                                           record_fn=record_fn, key=k_batch, batch_size=cfg.optim.batch_size,
                                           sampling=cfg.optim.sampling)
    res: dict = {"records": records, "plan": jnp.asarray(plan), "diverged_step": diverged_step,
                 "diverged": diverged_step >= 0}

    # ---- clean accuracy on the whole test set
    out_te = logits(params, x_te)
    clean = {r: jnp.mean(readout(out_te, signs, r) * y_te > 0) for r in readouts(cfg)}
    if not binary:
        clean["argmax"] = jnp.mean(jnp.argmax(out_te, -1) == fine_te)
    res["clean"] = clean

    # ---- penultimate-feature class means (Fig. 2c/2d analogue)
    res["features"] = feature_summary(penultimate(params, (x_te - mean) / std, mc), fine_te, signs,
                                      params["head"]["kernel"])

    # ---- full-dimensional l2 PGD; every (read-out, objective) runs through ONE vmapped program
    n = cfg.attack.n_points
    xa = x_te[:n].reshape(n, -1)
    ya, la = y_te[:n], fine_te[:n]
    kinds = readouts(cfg)
    attacks = attacks_of(cfg)
    use_ce = any(o == "ce" for _, o in attacks)
    kind_idx = jnp.asarray([kinds.index(k) for k, _ in attacks])
    obj_idx = jnp.asarray([OBJECTIVES.index(o) for _, o in attacks])

    def make_fns(ki, oi):
        def out_of(delta):
            return logits(params, (xa + delta).reshape((n, *shape)))

        def margin_of(o):
            return ya * jnp.stack([readout(o, signs, r) for r in kinds])[ki]

        def margin(delta):
            return margin_of(out_of(delta))

        def loss(delta):
            o = out_of(delta)
            if not use_ce:
                return -margin_of(o)
            return jnp.where(oi == 0, -margin_of(o), cross_entropy(o, la))

        return margin, loss

    starts = jax.vmap(lambda kk: R.full_ball_start(kk, n, xa.shape[1], 1.0, xa.dtype))(
        jax.random.split(k_attack, cfg.attack.restarts))  # (restarts, n, D), unit ball
    eps = jnp.asarray(eps_grid(cfg), xa.dtype)

    def attack(ki, oi):
        margin, loss = make_fns(ki, oi)
        _, robust = R.robust_accuracy_curve(margin, loss, eps, starts, steps=cfg.attack.steps,
                                            rel_step=cfg.attack.rel_step, eps_batch=cfg.attack.eps_batch)
        return robust  # (E, n)

    robust_all = jax.vmap(attack)(kind_idx, obj_idx)  # (attacks, E, n)

    def curve(robust):
        acc = jnp.mean(robust, axis=1)
        r50, cens = R.crossing(eps, acc)
        return {"acc": acc, "r50": r50, "r50_censored": cens}

    rob = {}
    for kind in kinds:
        idx = [i for i, (k, _) in enumerate(attacks) if k == kind]
        rob[kind] = curve(jnp.all(robust_all[jnp.asarray(idx)], axis=0))
        if not binary:
            for i in idx:
                rob[f"{kind}_{attacks[i][1]}"] = curve(robust_all[i])
    res["eps"] = eps
    res["robust"] = rob
    return res
