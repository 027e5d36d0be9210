"""Hold me tight! Margins along discriminative vs non-discriminative subspaces (Ortiz-Jimenez, Modas,
Moosavi-Dezfooli, Frossard, arXiv 2002.06349): ``fa-jax run hold-me-tight``. Spec: ../shared/specs/hold_me_tight.md.

config -> ONE sweep (:func:`fa_jax.sweep.run_labelled`) of :func:`fa_jax.experiments.hold_me_tight.run_hold_me_tight`:

Every net trains with ``recipe`` ("official": the paper's code, ``OFFICIAL``; "fa-jax": spec 2.4's derived one).

* ``synth``: an MLP (and a small conv net) on the synthetic set ``synth_data`` ("nads": the NADs generator,
  x = +-(eps/2) u + (I - u u^T) n, n ~ N(0, sigma^2 I), u = the lowest DCT frequency; "blocks": N = the next
  ``n_noise`` frequencies, noisy, E = the highest, empty), standard and frequency-flipped, over seeds;
* ``blocks``: the MLP on the N/E block generator (an extension), for the E < N finding and its mechanism;
* ``at``: the MLP adversarially trained (l2 PGD) at each ``at_eps`` (the standard runs are eps_adv = 0 of the same
  program);
* ``tiny``: the tiny-feature intervention along w (noise-free for sigma_w = 0): the w-margin curve over eps2 at
  several init scales (the 1/eps2 law and its exponent), and noise sigma_w along w (D5) at the recipe's init;
* ``images``: an MLP / conv net on MNIST-5k (offline; and CIFAR-10 / MNIST when their files are found), standard,
  flipped and 2-D low-passed (b = side / 2).

Every run measures margins (subspace DeepFool, censored values kept as ">=" lower bounds) along the diagonal DCT
blocks and, on synthetic data, along u, w, random subspaces of N and of E \\ {w} and all of N, E \\ {w}.
-> checks (spec P2/D2, P4/D4, P6/D5, P7, P8, P10; D6 = the weight-decay mechanism of the E < N finding) -> figures + ``summary.json``. Every prediction, threshold and
null comes from :mod:`fa_jax.theory.hold_me_tight` (with its provenance); derived checks outside their stated
domain (and checks with no meaning at a preset's scale) are listed under ``not_evaluated`` with the reason.

Every number of the sweep's runs (checks, metrics, figures) is read from the labelled Dataset it wrote,
``fa_jax.load_results(<out>/cache)``: dim ``run`` with the label coordinates ``part`` and ``arch``, ``seed``,
``flip`` (synth), ``eps_adv`` (at), ``eps2``, ``sigma_w``, ``init_scale`` (tiny), ``dataset``, ``cond``,
``lowpass`` (images); margins ``block/<output>`` on ``(block, point)`` and ``sub/<output>`` on ``(subspace, point)``
(NaN-padded beyond a run's own blocks / subspaces / points: :func:`_bank` cuts a run to them), records
``records/<name>`` on ``step``, the MLPs' first-layer row norms ``first_layer/<block>``.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import os

import jax
import numpy as np

from fa_jax.config import check_fields, param, renamed, require, require_runs
from fa_jax.data import images as I
from fa_jax.data.discriminative import Discriminative
from fa_jax.experiments.hold_me_tight import (
    HMTRun,
    ImageData,
    MarginConfig,
    bank_names,
    block_starts_of,
    exceeds_fraction,
    mirror_error,
    run_hold_me_tight,
    shared_image_data,
    spearman,
)
from fa_jax.metrics.margins import censored_median
from fa_jax.models.image_nets import ImageNet
from fa_jax.optim import OptimConfig
from fa_jax.plotting.hold_me_tight import hmt_figures
from fa_jax.results import load_results, one_run, split_parts, stacked
from fa_jax.subspaces import mirror_block
from fa_jax.summary import Check, add_check, finish
from fa_jax.sweep import run_labelled
from fa_jax.theory import hold_me_tight as T
from fa_jax.trainer import TrainConfig

SIM = "hold-me-tight"


# The official recipe of the paper's code (spec 2.4; LTS4/hold-me-tight scripts/margin_mnist.py and
# margin_cifar10.py, "if not PRETRAINED" branch, and utils.py train): every value and where it comes from.
OFFICIAL = {
    "lr": 0.21,  # MAX_LR = 0.21 (scripts/margin_{mnist,cifar10}.py)
    "epochs": 30,  # EPOCHS = 30 (idem)
    "peak_frac": 0.4,  # np.interp(t, [0, EPOCHS * 2 // 5, EPOCHS], [0, MAX_LR, 0]): peak at epoch 12 of 30
    "schedule_shift": 1,  # utils.py train: lr_schedule(epoch + (batch_idx + 1) / len(trainloader)) per iteration
    "momentum": 0.9,  # MOMENTUM = 0.9 (torch.optim.SGD)
    "weight_decay": 5e-4,  # WEIGHT_DECAY = 5e-4 (torch.optim.SGD weight_decay: g + wd theta, after the clip)
    "batch": 128,  # BATCH_SIZE = 128 (get_dataset_loaders, shuffle=True)
    "clip": 0.5,  # utils.py train: nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    "init": "torch",  # no custom init anywhere in model_classes/: PyTorch's default nn.Linear / nn.Conv2d init
    "init_scale": 1.0,  # ... i.e. weights and biases U(+-1/sqrt(fan_in)) (models.image_nets init="torch")
}


# fields of the "fa-jax" recipe only; under "official" the paper's values (OFFICIAL) are used and these are refused
FA_JAX_RECIPE_FIELDS = ("lr", "epochs", "init_scale", "image_lr", "image_epochs")


@dataclasses.dataclass(frozen=True)
class HMTSim:
    # training recipe of every net: "official" (OFFICIAL above: the paper's code) or "fa-jax" (spec 2.4's derived
    # synthetic recipe: flax LeCun init x init_scale, triangular peak lr at 40 %, no shift; lr / epochs /
    # image_lr / image_epochs / init_scale below apply to it only). Momentum 0.9, wd, batch and clip: both.
    recipe: str = "official"  # training recipe of every net: "official" or "fa-jax"
    # synthetic data: "nads" (the NADs generator, spec 2.4: x = +-(eps/2) v + (I - v v^T) n, n ~ N(0, sigma^2 I);
    # eps = 1, sigma = 3 as in LTS4/neural-anisotropy-directions directional_bias.py; D = side^2) or "blocks" (the
    # fa-jax N/E block generator: n_noise noisy DCT directions, the rest empty, blocks_sigma)
    synth_data: str = "nads"  # synthetic generator: "nads" or "blocks"
    # D = 256, not the NADs code's 1024: an MLP 1024-256-256-2 memorises 10k NADs samples (measured test accuracy
    # 0.75, official recipe), and 1024 costs 4x per run; set side=32 for the NADs size
    side: int = 16  # synthetic image side (D = side^2 pixels, one channel)
    n_train: int = 10_000  # synthetic training samples (NADs code: num_train = 10000)
    n_test: int = 300  # synthetic test samples
    eps: float = 1.0  # class separation along the discriminative direction v (NADs code: epsilon = 1)
    sigma: float = 3.0  # NADs noise std orthogonal to v (NADs code: sigma = 3)
    # the N/E block generator (synth_data="blocks", and the E < N finding's extension runs)
    blocks_finding: bool = True  # run the blocks MLP (standard, every seed) for the E < N finding
    n_noise: int = param(128, follows="side ** 2 // 2")  # blocks: noisy DCT directions n_N (spec 2.4: 128 of 256)
    blocks_sigma: float = 1.0  # blocks: noise std along the noisy directions
    synth_archs: tuple = ("mlp", "conv")  # nets trained on the synthetic data
    mlp_hidden: tuple = param((256, 256), empty_ok=True)  # synthetic MLP hidden widths
    conv_channels: tuple = (16, 32)  # synthetic conv net channels
    conv_dense: int = 64  # synthetic conv net penultimate width
    init_scale: float = math.sqrt(2.0)  # init multiplier, recipe "fa-jax": LeCun init x sqrt2 ~ He (spec: He init)
    lr: float = 0.05  # peak learning rate of the synthetic nets (recipe "fa-jax": triangular schedule)
    epochs: int = 20  # training epochs of the synthetic nets (recipe "fa-jax")
    batch: int = param(128, follows="min(128, n_train)")  # mini-batch size (both recipes)
    weight_decay: float = 5e-4  # SGD weight decay (both recipes)
    clip: float = 0.5  # global gradient-norm clip (both recipes)
    seeds: int = 2  # seeds (data + init) of the synthetic nets
    # margins
    n_points: int = param(100, follows="min(100, n_test)")  # synthetic test points whose margins are measured
    max_iter: int = 100  # DeepFool iterations (synthetic)
    synth_block: int = 4  # side K of the K x K DCT blocks spanning each subspace (synthetic)
    synth_step: int = 1  # stride between DCT blocks along the diagonal (synthetic)
    random_dim: int = 8  # dimension of the random subspaces of N and E (synthetic)
    n_random: int = 2  # random subspaces per kind
    # tiny feature sweep (MLP, seed 0): eps2 (units of eps) with sigma_w = 0 at every init scale (the w-margin
    # curve and its 1/eps2 law); sigma_w > 0 (noise along w, D5) at the recipe's own init scale only
    tiny_eps2: tuple = (0.0, 0.05, 0.1, 0.2)  # tiny feature amplitudes along w (units of eps)
    tiny_sigma_w: tuple = (0.0, 3.0)  # noise std along w
    # init scales (multipliers of the recipe's init; official: PyTorch's U(+-scale / sqrt fan_in) kernels): 1 =
    # PyTorch's default, sqrt 6 = He-uniform, 0.3 = small. The untrained sensitivity along w scales with the init and
    # competes with the one the tiny feature teaches (theory.hold_me_tight, D5)
    tiny_init_scales: tuple = (1.0, math.sqrt(6.0), 0.3)  # init scales of the tiny-feature runs
    # adversarial training (MLP, every seed): eps_adv values (0 = the standard runs)
    at_eps: tuple = (0.0, 0.1, 0.3)  # adversarial-training radii (l2; 0: standard)
    adv_steps: int = 5  # PGD steps of the adversarial-training inner loop
    # "separate": only the AT runs carry the PGD inner loop (their own compiled program); "shared": every synthetic
    # MLP run carries it (eps_adv = 0 is exactly standard training), one program fewer - but every run then pays
    # the inner loop: on the quick preset "separate" costs 145 CPU-s against 179 (one more compile, 18 runs
    # trained without adv_steps forward/backward passes per step; the checks identical)
    adv_program: str = "separate"  # which runs carry the PGD inner loop: "separate" or "shared" (above)
    # real images
    image_sets: tuple = param(("mnist-5k", "cifar10"), empty_ok=True)  # sets whose missing files are skipped (reported)
    image_archs: tuple = param(("mlp", "conv"), empty_ok=True)  # nets trained on the image sets
    image_hidden: tuple = param((256, 256), empty_ok=True)  # image MLP hidden widths
    image_channels: tuple = (16, 32)  # image conv net channels
    image_dense: int = 64  # image conv net penultimate width
    image_train_per_class: int | None = None  # training images per class (None: all)
    image_test_per_class: int | None = None  # test images per class (None: all)
    image_epochs: int = 30  # training epochs of the image nets (recipe "fa-jax")
    image_lr: float = 0.05  # peak learning rate of the image nets (recipe "fa-jax")
    image_points: int = 100  # test images whose margins are measured
    image_max_iter: int = 100  # DeepFool iterations (images)
    data_dir: str | None = None  # folder of the image files (None: $FA_JAX_DATA)
    verify: bool = True  # official checksums of the standard image files (false: re-packed or re-compressed copies)
    x64: bool = False  # run the whole sweep in float64 (D2 to 1e-10; ~2x slower); the default preset sets it
    # the margin estimator: "refined" = DeepFool refined by bisection to the boundary, exact line search along u and w
    # (metrics.margins; issue 16 sec. 1); "deepfool" = raw subspace DeepFool (an upper bound that overshoots: D4 is
    # then evaluated only under the fa-jax recipe, against DeepFool's (1 + o) eps/2)
    margins: str = "refined"  # margin estimator: "refined" or "deepfool"

    def validate(self) -> HMTSim:
        check_fields(self, nonempty=True)  # types first (every comparison below is between numbers)
        require(self.recipe in RECIPES, "recipe", f"one of {RECIPES}", self.recipe)
        if self.recipe == "official":  # these apply to the fa-jax recipe only: a changed value would be ignored
            for f in FA_JAX_RECIPE_FIELDS:
                default = HMTSim.__dataclass_fields__[f].default
                require(getattr(self, f) == default, f,
                        f"its default {default!r} under recipe='official' (the paper's code fixes it: OFFICIAL); "
                        "set recipe='fa-jax' to change it", getattr(self, f))
        require(self.synth_data in ("nads", "blocks"), "synth_data", "'nads' or 'blocks'", self.synth_data)
        for f in ("side", "n_noise", "n_train", "n_test", "epochs", "batch", "seeds", "n_points", "max_iter",
                  "synth_block", "synth_step", "random_dim", "adv_steps", "image_epochs", "image_points",
                  "image_max_iter", "conv_dense", "image_dense"):
            v = getattr(self, f)
            require(isinstance(v, int) and v >= 1, f, "an integer >= 1", v)
        require(self.batch <= self.n_train, "batch", f"an integer <= n_train = {self.n_train}", self.batch)
        for f in ("eps", "sigma", "blocks_sigma", "lr", "image_lr"):
            v = getattr(self, f)
            require(math.isfinite(v) and v > 0, f, "a finite number > 0", v)
        require(set(self.synth_archs) <= {"mlp", "conv"} and "mlp" in self.synth_archs, "synth_archs",
                "a tuple of 'mlp' / 'conv' including 'mlp'", self.synth_archs)
        require(set(self.image_archs) <= {"mlp", "conv"}, "image_archs", "a tuple of 'mlp' / 'conv'",
                self.image_archs)
        require(set(self.image_sets) <= {"mnist-5k", "mnist", "cifar10"}, "image_sets",
                "a tuple of 'mnist-5k' / 'mnist' / 'cifar10'", self.image_sets)
        e2 = tuple(self.tiny_eps2)
        require(len(e2) >= 3 and e2[0] == 0 and all(b > a for a, b in itertools.pairwise(e2)), "tiny_eps2",
                "an increasing tuple starting at 0 with >= 3 values", e2)
        sw = tuple(self.tiny_sigma_w)
        require(len(sw) >= 2 and sw[0] == 0 and all(b > a for a, b in itertools.pairwise(sw)), "tiny_sigma_w",
                "an increasing tuple starting at 0 with >= 2 values", sw)
        sc = tuple(self.tiny_init_scales)
        require(len(sc) >= 1 and len(set(sc)) == len(sc) and all(v > 0 for v in sc)
                and sc[0] == recipe_of(self)["init_scale"], "tiny_init_scales",
                f"distinct scales > 0, the first = the recipe's init scale {recipe_of(self)['init_scale']:.4g}", sc)
        ae = tuple(self.at_eps)
        require(len(ae) >= 2 and ae[0] == 0 and all(b > a for a, b in itertools.pairwise(ae)) and ae[-1] < self.eps / 2,
                "at_eps", "an increasing tuple starting at 0, below eps/2", ae)
        require(self.margins in ("refined", "deepfool"), "margins", "'refined' or 'deepfool'", self.margins)
        require(self.adv_program in ("separate", "shared"), "adv_program", "'separate' or 'shared'", self.adv_program)
        require(self.synth_block <= self.side, "synth_block", f"an integer <= side = {self.side}", self.synth_block)
        require(self.n_noise <= self.side ** 2 - 3, "n_noise", f"an integer <= side^2 - 3 = {self.side ** 2 - 3}",
                self.n_noise)
        require(self.n_random >= 0, "n_random", "an integer >= 0", self.n_random)
        require(self.n_points <= self.n_test, "n_points", f"an integer <= n_test = {self.n_test}", self.n_points)
        for f in ("image_train_per_class", "image_test_per_class"):
            v = getattr(self, f)
            require(v is None or v >= 1, f, "None (all images) or an integer >= 1", v)
        require(self.init_scale > 0, "init_scale", "a finite number > 0", self.init_scale)
        require(self.weight_decay >= 0, "weight_decay", "a finite number >= 0", self.weight_decay)
        require(self.clip > 0, "clip", "a finite number > 0", self.clip)
        for f in ("mlp_hidden", "image_hidden"):
            require(all(w >= 1 for w in getattr(self, f)), f, "a tuple of widths >= 1 (empty: a linear model)",
                    getattr(self, f))
        for f in ("conv_channels", "image_channels"):
            require(all(c >= 1 for c in getattr(self, f)), f, "a non-empty tuple of channel counts >= 1",
                    getattr(self, f))
        require(set(self.image_archs) <= {"mlp", "conv"}, "image_archs", "a tuple of 'mlp' / 'conv'",
                self.image_archs)
        require_runs((2 * len(self.synth_archs) + len(self.at_eps) + 1) * self.seeds, "the synthetic runs", self,
                     "seeds")
        require_runs(len(self.tiny_init_scales) * len(self.tiny_eps2) * len(self.tiny_sigma_w),
                     "the tiny-feature grid", self, "tiny_init_scales", "tiny_eps2", "tiny_sigma_w")
        # every synthetic run config, checked now; an error names this config's field (random_dim, not
        # margin.random_dim); the image runs' configs need their data (run() checks them), their fields are checked
        # here on their own
        with renamed(_SYNTH_NAMES):
            build_runs(self, [])
        rc = recipe_of(self)
        with renamed(_IMAGE_NAMES):
            ImageData(n_train_per_class=self.image_train_per_class, n_test_per_class=self.image_test_per_class,
                      data_dir=self.data_dir, verify=self.verify).validate()
            for arch in self.image_archs:
                ImageNet(arch=arch, head="multiclass", n_classes=10, hidden=tuple(self.image_hidden),
                         channels=tuple(self.image_channels), dense=self.image_dense, init=rc["init"],
                         init_scale=rc["init_scale"]).validate()
            MarginConfig(n_points=self.image_points, n_candidates=10, max_iter=self.image_max_iter,
                         n_random=self.n_random, method=self.margins).validate()
        return self


# the run configs' paths -> this config's fields (errors of the run configs' validate() name the latter)
_SYNTH_NAMES = {"data.side": "side", "data.n_noise": "n_noise", "data.n_train": "n_train", "data.n_test": "n_test",
                "data.eps": "eps", "data.sigma": "sigma", "data.sigma_w": "tiny_sigma_w", "data.eps2": "tiny_eps2",
                "model.hidden": "mlp_hidden", "model.channels": "conv_channels", "model.dense": "conv_dense",
                "model.init_scale": "init_scale", "optim.lr": "lr", "optim.batch_size": "batch",
                "optim.weight_decay": "weight_decay", "optim.clip_norm": "clip", "train.steps": "epochs",
                "margin.n_points": "n_points", "margin.max_iter": "max_iter", "margin.block_size": "synth_block",
                "margin.block_step": "synth_step", "margin.n_random": "n_random", "margin.random_dim": "random_dim",
                "margin.method": "margins", "adv_steps": "adv_steps", "eps_adv": "at_eps"}
_IMAGE_NAMES = {"image.n_train_per_class": "image_train_per_class", "image.n_test_per_class": "image_test_per_class",
                "model.hidden": "image_hidden", "model.channels": "image_channels", "model.dense": "image_dense",
                "model.init_scale": "init_scale", "optim.lr": "image_lr", "train.steps": "image_epochs",
                "margin.n_points": "image_points", "margin.max_iter": "image_max_iter", "margin.n_random": "n_random",
                "margin.method": "margins"}


RECIPES = ("official", "fa-jax")


def recipe_of(s: HMTSim) -> dict:
    """The training recipe of every net: ``OFFICIAL`` (the paper's code) or the fa-jax one (the config's fields)."""
    if s.recipe == "official":
        o = OFFICIAL
        return {"init": o["init"], "init_scale": o["init_scale"], "lr": o["lr"], "epochs": o["epochs"],
                "image_lr": o["lr"], "image_epochs": o["epochs"], "peak_frac": o["peak_frac"],
                "schedule_shift": o["schedule_shift"], "momentum": o["momentum"]}
    return {"init": "flax", "init_scale": s.init_scale, "lr": s.lr, "epochs": s.epochs, "image_lr": s.image_lr,
            "image_epochs": s.image_epochs, "peak_frac": 0.4, "schedule_shift": 0, "momentum": 0.9}


PRESETS = {
    # the paper's recipe and the NADs synthetic set at D = 256 (side 16), MLPs and small conv nets, float64 (spec
    # Sec. 6: "run D1/D2 in float64"; in float32 the flip mirror D2 drifts to ~1 % over 1.5k steps)
    "default": HMTSim(x64=True),
    # the same without the conv nets
    "mlp": HMTSim(synth_archs=("mlp",), image_archs=("mlp",), x64=True),
    # the previous fa-jax setting: its own recipe (He-like init, lr 0.05) on the N/E block generator
    "fa-jax": HMTSim(recipe="fa-jax", synth_data="blocks", sigma=1.0, tiny_sigma_w=(0.0, 1.0),
                     tiny_init_scales=(math.sqrt(2.0), 0.35, 1 / math.sqrt(3.0)), x64=True),
    # the same experiment, smaller (D = 64, 3k samples: n / D ~ 47 as the default's 39, 20 margin points; float64
    # like the default, so D2 is held to the same 1e-10; the three init scales, 3 eps2 > 0 and 3 eps_adv, the
    # default's 5 PGD steps, the AT runs in their own program as in the default); the conv nets too, narrower (4, 8
    # channels, dense 16: +2 programs, ~80 CPU-s), since a quick preset never drops a variant (issue 15)
    "quick": HMTSim(side=8, n_noise=32, n_train=3000, n_test=300, synth_archs=("mlp", "conv"), conv_channels=(4, 8),
                    conv_dense=16, mlp_hidden=(128, 128),
                    seeds=1, n_points=20, max_iter=30, synth_block=2, random_dim=4, n_random=2,
                    at_eps=(0.0, 0.1, 0.3), adv_steps=5,
                    image_sets=("mnist-5k",), image_archs=("mlp", "conv"), image_channels=(4, 8), image_dense=16,
                    image_hidden=(128,), image_train_per_class=40,
                    image_test_per_class=10, image_points=20, image_max_iter=30, x64=True),
}


def _steps(n: int, batch: int, epochs: int) -> int:
    return epochs * math.ceil(n / batch)


def _optim(s: HMTSim, lr: float, batch: int) -> OptimConfig:
    rc = recipe_of(s)
    return OptimConfig(name="momentum", lr=lr, batch_size=batch, momentum=rc["momentum"],
                       weight_decay=s.weight_decay, clip_norm=s.clip)


def _synth_run(s: HMTSim, arch: str, seed: int, *, flip=0.0, eps2=0.0, sigma_w=None, eps_adv=0.0,
               init_scale=None, kind=None) -> HMTRun:
    """One synthetic run. ``kind`` (default ``s.synth_data``): "nads" (sigma_w defaults to sigma: w is one more
    noisy direction, the exact NADs generator) or "blocks" (sigma_w defaults to 0: w in the empty block)."""
    rc, kind = recipe_of(s), s.synth_data if kind is None else kind
    sigma = s.sigma if kind == "nads" else s.blocks_sigma
    sigma_w = (sigma if kind == "nads" else 0.0) if sigma_w is None else sigma_w
    data = Discriminative(side=s.side, channels=1, s=1, n_noise=s.n_noise, basis="dct", n_train=s.n_train,
                          n_test=s.n_test, eps=s.eps, sigma=sigma, eps2=eps2 * s.eps, sigma_w=sigma_w, seed=seed,
                          kind=kind)
    model = ImageNet(arch=arch, head="multiclass", n_classes=2, hidden=tuple(s.mlp_hidden),
                     channels=tuple(s.conv_channels), dense=s.conv_dense, init=rc["init"],
                     init_scale=rc["init_scale"] if init_scale is None else init_scale)
    adv = arch == "mlp" and kind == s.synth_data and (eps_adv > 0 or s.adv_program == "shared")
    return HMTRun(
        dataset="synthetic", synth=data, model=model, optim=_optim(s, rc["lr"], s.batch),
        peak_frac=rc["peak_frac"], schedule_shift=rc["schedule_shift"],
        train=TrainConfig(steps=_steps(s.n_train, s.batch, rc["epochs"]), n_records=4),
        margin=MarginConfig(n_points=s.n_points, n_candidates=2, max_iter=s.max_iter, block_size=s.synth_block,
                            block_step=s.synth_step, n_random=s.n_random, random_dim=s.random_dim,
                            method=s.margins),
        adv_steps=s.adv_steps if adv else 0, eps_adv=eps_adv, flip=flip, model_seed=seed,
        record_points=min(500, s.n_test),
    ).validate()


def image_block(name: str) -> tuple[int, int]:
    """Spec 2.2: (K, step) = (8, 1) on MNIST, (8, 2) on CIFAR-10."""
    return (8, 2) if name == "cifar10" else (8, 1)


def _image_run(s: HMTSim, name: str, arch: str, *, flip=0.0, lowpass=0) -> HMTRun:
    ic = ImageData(n_train_per_class=s.image_train_per_class, n_test_per_class=s.image_test_per_class,
                   data_dir=s.data_dir, verify=bool(s.verify))
    k, step = image_block(name)
    rc = recipe_of(s)
    model = ImageNet(arch=arch, head="multiclass", n_classes=10, hidden=tuple(s.image_hidden),
                     channels=tuple(s.image_channels), dense=s.image_dense, init=rc["init"],
                     init_scale=rc["init_scale"])
    n_tr = _image_n_train(name, ic)
    return HMTRun(
        dataset=name, image=ic, model=model, optim=_optim(s, rc["image_lr"], min(s.batch, n_tr)),
        peak_frac=rc["peak_frac"], schedule_shift=rc["schedule_shift"],
        train=TrainConfig(steps=_steps(n_tr, s.batch, rc["image_epochs"]), n_records=4),
        margin=MarginConfig(n_points=s.image_points, n_candidates=10, max_iter=s.image_max_iter, block_size=k,
                            block_step=step, n_random=s.n_random, method=s.margins),
        flip=flip, lowpass=lowpass, model_seed=0,
    ).validate()


def _image_n_train(name: str, ic: ImageData) -> int:
    from fa_jax.experiments.hold_me_tight import load_image_data

    return int(load_image_data(name, ic)["y_train"].shape[0])


def available_image_sets(s: HMTSim) -> tuple[list[str], dict[str, str]]:
    ok, missing = [], {}
    for name in s.image_sets:
        try:
            I.load_dataset(name, "test", s.data_dir, verify=bool(s.verify))
            ok.append(name)
        except (FileNotFoundError, ImportError, I.CorruptDataError) as e:
            missing[name] = str(e).split(".")[0]
    return ok, missing


def build_runs(s: HMTSim, image_sets: list[str]) -> dict[str, list]:
    runs: dict[str, list] = {"synth": [], "at": [], "tiny": [], "blocks": [], "images": []}
    for arch in s.synth_archs:
        for seed in range(s.seeds):
            for flip in (0.0, 1.0):
                runs["synth"].append(({"arch": arch, "seed": seed, "flip": flip}, _synth_run(s, arch, seed, flip=flip)))
    for seed in range(s.seeds):
        for e in s.at_eps[1:]:
            runs["at"].append(({"seed": seed, "eps_adv": e}, _synth_run(s, "mlp", seed, eps_adv=e)))
    # the tiny-feature grid: sigma_w = 0 at every init scale, sigma_w > 0 at the recipe's own (the first) only
    for sc in s.tiny_init_scales:
        for e2 in s.tiny_eps2:
            for sw in (s.tiny_sigma_w if sc == s.tiny_init_scales[0] else s.tiny_sigma_w[:1]):
                runs["tiny"].append(({"eps2": e2, "sigma_w": sw, "init_scale": sc},
                                     _synth_run(s, "mlp", 0, eps2=e2, sigma_w=sw, init_scale=sc)))
    if s.blocks_finding and s.synth_data != "blocks":
        for seed in range(s.seeds):
            runs["blocks"].append(({"seed": seed}, _synth_run(s, "mlp", seed, kind="blocks")))
    for name in image_sets:
        side = 32 if name == "cifar10" else 28
        for arch in s.image_archs:
            for cond, kw in (("standard", {}), ("flipped", {"flip": 1.0}), ("lowpass", {"lowpass": side // 2})):
                runs["images"].append(({"dataset": name, "arch": arch, "cond": cond, "lowpass": side // 2},
                                       _image_run(s, name, arch, **kw)))
    return runs


# ----------------------------------------------------------------------------- analysis
def _bank(run, kind: str, n: int, points: int) -> dict:
    """One run's margins along its ``kind`` bank ("block": the diagonal DCT blocks, "sub": the dense subspaces,
    :func:`fa_jax.experiments.hold_me_tight.bank_names`): ``{"margin", "flipped"}`` ``[subspace, point]``, cut to the
    run's own ``n`` subspaces and ``points`` measured points, C-ordered as the run's own arrays. ``run``: one run of
    the sweep's Dataset (its label dims selected away). Why the cut: ``load_results`` NaN-pads each output to the
    largest run of the sweep (the 28 x 28 image runs have more DCT blocks and other subspaces than the synthetic
    ones) and stores such a padded boolean output (``flipped``) as float."""
    cut = {"block" if kind == "block" else "subspace": slice(0, n), "point": slice(0, points)}
    return {"margin": stacked(run[f"{kind}/margin"].isel(cut)),
            "flipped": stacked(run[f"{kind}/flipped"].isel(cut)).astype(bool)}


def _med(bank: dict) -> dict:
    """Censored medians over points of a bank of margins (:func:`_bank`)."""
    return censored_median(bank["margin"], bank["flipped"])


def _loss_drift(a, b) -> float:
    """Max over records of |L_a - L_b| / |L_a| of two runs' recorded training losses (a measurement of the nets, not
    of their margins): ~1e-15 when the flipped run is the original composed with Q up to rounding. ``a``, ``b``:
    runs of the sweep's Dataset (:func:`fa_jax.results.one_run`)."""
    la, lb = np.asarray(a["records/loss"].values, np.float64), np.asarray(b["records/loss"].values, np.float64)
    return float(np.max(np.abs(la - lb) / np.maximum(np.abs(la), 1e-300)))


def _d2_checks(s: HMTSim, what: str, fm: dict, run: HMTRun) -> list[Check]:
    """D2/P2 for the MLP: flipped run at block i (and at the Q-mapped data subspaces) vs the original at mirror(i);
    tolerance 1e-4 relative in float32, 1e-10 in float64 (spec P2)."""
    rtol = float(run.margin.rtol)  # the bracket of the runs compared (``run``: one of them)
    tol, prec = T.mirror_tolerance(bool(s.x64), s.margins, rtol), ("float64" if s.x64 else "float32")
    src = (f"spec P2's rounding bound, widened to the refined margins' bracket rtol = {rtol:g} "
           "(theory.mirror_tolerance)" if s.margins == "refined" else "spec P2")
    why = ("an exact identity of two runs (D2), no training-free value: a flip that did not commute with training "
           "(independent inits, a CNN) gives errors of the seed spread, O(0.1)")
    return [
        Check(f"hmt.d2.mlp_{what}_flip_mirror_pointwise", fm["max_rel"], T.mirror_error(), tol, "abs",
              "derived (spec D2/P2)",
              f"max over seeds, points and subspaces of the relative margin difference ({prec}; median "
              f"{fm['median_rel']:.2g}); tolerance: {src}. null: {why}", null=None),
        Check(f"hmt.d2.mlp_{what}_flip_mirror_profile", fm["profile_max_rel"], T.mirror_error(), tol, "abs",
              "derived (spec D2/P2)",
              f"max over subspaces (and seeds) of the relative difference of the median profiles ({prec}); "
              f"tolerance: {src}. null: {why}", null=None),
        Check(f"hmt.d2.mlp_{what}_flip_censoring_agrees", fm["flag_agreement"], T.flag_agreement(), 0.0, "abs",
              "derived (spec D2)", "fraction of (subspace, point) whose censoring flag agrees under the flip. "
              f"null: {why}", null=None),
    ]


def _profile(block: dict) -> dict:
    """The median profile along the diagonal DCT blocks of one run's ``block`` bank (:func:`_bank`)."""
    s = _med(block)
    return {"median": s["median"].tolist(), "lower_bound": s["lower_bound"].tolist(),
            "fail_rate": s["fail_rate"].tolist()}


def _thirds(n: int) -> tuple[np.ndarray, np.ndarray]:
    k = max(1, n // 3)
    return np.arange(k), np.arange(n - k, n)


def _rise_per_point(margins) -> tuple[np.ndarray, np.ndarray, float]:
    """Per point: median block margin over the first / last third of the diagonal (censored values at their
    bounds); and the ratio of the medians over points (a metric)."""
    m = np.asarray(margins, float)
    lo, hi = _thirds(m.shape[0])
    first, last = np.median(m[lo], axis=0), np.median(m[hi], axis=0)
    prof = np.median(m, axis=1)
    return first, last, float(np.median(prof[hi]) / np.median(prof[lo]))


def _sign_check(name, frac, n, prov, what) -> Check:
    thr = T.sign_test_threshold(n)
    return Check(name, frac, thr, 0.0, "at_least", prov,
                 f"{what}: fraction of the {n} test points where it holds (sign test: a flat profile gives "
                 f"{T.sign_test_null():g}; threshold 1/2 + z/(2 sqrt n), z = {T.sign_test_z():g})",
                 null=T.sign_test_null())


def analyse(s: HMTSim, ds, image_sets: list[str], missing: dict) -> tuple[list[Check], dict, dict]:
    """Checks, metrics and the checks not evaluated at this scale (name -> why), from ``ds``: the sweep's labelled
    Dataset (``load_results`` of its cache: dim ``run``; the module docstring)."""
    checks: list[Check] = []
    skipped: dict[str, str] = {}
    metrics: dict = {"image_sets": image_sets, "image_sets_missing": missing}
    # the parts the preset runs: synth (arch, seed, flip), at (seed, eps_adv), tiny (eps2, sigma_w, init_scale; a
    # sparse grid: sigma_w > 0 at the first init scale only, the missing cells NaN), blocks (seed); images stays
    # on its run axis (its lowpass label is the set's b: with two sets, a grid of it would be mostly empty)
    parts = split_parts(ds, keep=("images",))
    base_cfg = _synth_run(s, "mlp", 0)
    half = T.bayes_u_margin(s.eps)
    df_u = T.measured_u_margin(s.eps, s.margins, float(base_cfg.margin.overshoot))
    flag = T.memorisation_u_margin(s.eps)
    names = bank_names(base_cfg)
    ix = {n: i for i, n in enumerate(names)}
    nd = [ix[n] for n in names if n.startswith("N") and n != "N"]
    ed = [ix[n] for n in names if n.startswith("E") and n != "E"]
    starts = block_starts_of(base_cfg)
    mirror = [int(np.flatnonzero(starts == mirror_block(st, s.side, s.synth_block))[0]) for st in starts]

    def synth(arch, seed, flip):
        return one_run(parts["synth"], arch=arch, seed=seed, flip=flip)

    def bank(r, kind):  # a synthetic run's block / subspace margins
        return _bank(r, kind, len(starts) if kind == "block" else len(names), base_cfg.margin.n_points)
    for arch in ("mlp", "conv"):
        if arch not in s.synth_archs:
            for c in ("synth_test_acc", "orthogonal_over_u", "synth_nondiscriminative_over_u"):
                skipped[f"hmt.p4.{arch}_{c}" if c != "synth_nondiscriminative_over_u" else f"hmt.p8.{arch}_{c}"] = \
                    f"this preset trains no {arch} on synthetic data (synth_archs = {list(s.synth_archs)})"
            skipped[f"hmt.d4.{arch}_u_margin_over_half_eps"] = \
                f"this preset trains no {arch} on synthetic data (synth_archs = {list(s.synth_archs)})"

    # ---- synthetic: per arch, per seed
    syn_m: dict = {}
    for arch in s.synth_archs:
        per_seed = []
        for seed in range(s.seeds):
            r = synth(arch, seed, 0.0)
            sm, blk = _med(bank(r, "sub")), bank(r, "block")
            u = float(sm["median"][ix["u"]])
            loss = np.asarray(r["records/loss"].values, float)
            per_seed.append({
                "test_acc": float(r["test_acc"]), "train_acc": float(r["train_acc"]),
                "loss_initial": float(loss[0]), "loss_final": float(loss[-1]),
                "u_margin": u, "u_lower_bound": bool(sm["lower_bound"][ix["u"]]),
                "subspaces": {n: {"median": float(sm["median"][i]), "lower_bound": bool(sm["lower_bound"][i]),
                                  "fail_rate": float(sm["fail_rate"][i])} for n, i in ix.items()},
                "ortho_over_u": float(min(sm["median"][nd + ed]) / u),
                # P8 (issue 16): every non-discriminative subspace: the DCT blocks disjoint from u (u = the DC
                # basis image, in the blocks starting at 0), the random subspaces of N (and E) and w
                "nondisc_over_u": float(min(np.min(sm["median"][nd + ed + [ix["w"]]]),
                                            np.min(_med(blk)["median"][starts > 0])) / u),
                "profile": _profile(blk), "profile_flipped": _profile(bank(synth(arch, seed, 1.0), "block")),
            })
        syn_m[arch] = per_seed
        acc = min(p["test_acc"] for p in per_seed)
        floor = T.generalisation_floor()
        checks.append(Check(f"hmt.p4.{arch}_synth_test_acc", acc, floor, 0.0, "at_least",
                            T.PROVENANCE["generalisation_floor"],
                            "P4's precondition: the net generalises (min over seeds of the test accuracy) to within "
                            "spec P4's 0.01 of the Bayes accuracy 1 (D4). A claim about the architecture, not a "
                            "derivation: max-pooling CNNs miss it at the DC direction in the NADs data (LeNet 72.5 %; "
                            "theory.generalisation_floor); null: chance", null=T.chance_accuracy(2)))
        u_med = float(np.median([p["u_margin"] for p in per_seed]))
        dom = acc >= floor
        name = f"hmt.d4.{arch}_u_margin_over_half_eps"
        if dom and s.recipe == "official" and s.margins == "deepfool":
            skipped[name] = ("outside D4's domain: raw subspace DeepFool is an upper bound that overshoots the exact "
                             "u-margin on nets trained with the official recipe (issue 16 sec. 1: 1.54x measured); "
                             "D4 needs the refined / exact margin (metrics.margins, margins='refined')")
        elif dom:
            checks.append(Check(name, u_med, df_u, T.u_margin_rel_tol(), "rel", "derived (spec D1 + D4)",
                                "median over seeds of the per-seed median u-margin vs the instrument on the Bayes "
                                "boundary, "
                                f"{'eps/2 (exact line search along u)' if s.margins == 'refined' else '(1 + o) eps/2'}"
                                f" = {df_u:.4g} (measured / (eps/2) = {u_med / half:.4g}); tolerance "
                                "+-15 %: spec P4's band [0.95, 1.2] eps/2 kept below the memorisation flag; null: "
                                "the flag 1.2 eps/2 (spec P5: a net that does not use u)", null=flag))
        else:
            skipped[name] = f"outside D4's domain: test accuracy {acc:.3g} < {floor:g} (the net does not generalise)"
        ratio = min(p["ortho_over_u"] for p in per_seed)
        checks.append(Check(f"hmt.p4.{arch}_orthogonal_over_u", ratio, T.orthogonal_over_u_min(), 0.0, "at_least",
                            "paper claim (Sec. 3 / spec P4, unverified)",
                            f"min over seeds and over the {s.random_dim}-D random subspaces of N and of E \\ w of "
                            "median margin / u-margin (censored medians enter as their lower bounds); null: sqrt(1/"
                            f"{s.random_dim}), a net with no preferred direction (D3)",
                            null=T.isotropic_margin_ratio(s.random_dim)))
        # the flip comparison for every arch (a check for the MLP only: CNNs are not flip-equivariant)
        pairs = [(synth(arch, seed, 0.0), synth(arch, seed, 1.0)) for seed in range(s.seeds)]
        errs = [mirror_error(bank(a, "block"), bank(b, "block"), mirror) for a, b in pairs]
        errs += [mirror_error(bank(a, "sub"), bank(b, "sub"), slice(None)) for a, b in pairs]
        fm = {"max_rel": max(e["max_rel"] for e in errs), "median_rel": max(e["median_rel"] for e in errs),
              "flag_agreement": min(e["flag_agreement"] for e in errs),
              "profile_max_rel": max(e["profile_max_rel"] for e in errs)}
        syn_m[f"{arch}_flip_mirror"] = fm
        if arch == "mlp":
            drift = max(_loss_drift(a, b) for a, b in pairs)
            fm["loss_drift"] = drift
            if drift <= T.d2_loss_drift_max(bool(s.x64)):
                checks += _d2_checks(s, "synth", fm, base_cfg)
            else:
                for c in ("mirror_pointwise", "mirror_profile", "censoring_agrees"):
                    skipped[f"hmt.d2.mlp_synth_flip_{c}"] = (
                        f"outside D2's precision domain: the flipped and original runs' recorded training losses "
                        f"differ by {drift:.2g} relative (> {T.d2_loss_drift_max(bool(s.x64)):g}): training amplified "
                        "the rounding of the DCT flip (lr = "
                        f"{recipe_of(s)['lr']:g} on sigma = {s.sigma:g} data), so the two nets are not the same "
                        f"function to rounding; measured mirror errors (metric): pointwise {fm['max_rel']:.2g}, "
                        f"profile {fm['profile_max_rel']:.2g}, censoring-flag agreement {fm['flag_agreement']:.3g}")
        first, last, rise = _rise_per_point(bank(synth(arch, 0, 0.0), "block")["margin"])
        per_seed[0]["profile_rise"] = rise  # a metric: the NADs data have no frequency ordering to rise along
        nd_ratio = min(p["nondisc_over_u"] for p in per_seed)
        checks.append(Check(f"hmt.p8.{arch}_synth_nondiscriminative_over_u", nd_ratio,
                            T.nondiscriminative_over_u_min(), 0.0, "at_least",
                            "paper claim (Sec. 3 / spec P4 + P8 as restated by issue 16, unverified)",
                            "min over seeds and over every non-discriminative subspace (the DCT blocks disjoint from "
                            f"u, {s.random_dim}-D random subspaces of N{' and E' if ed else ''}, w) of its median "
                            "margin / the u-margin (raw DeepFool: an upper bound, censored medians at their lower "
                            "bounds); threshold: 'far above' read as 2x; null: 1, a net with no preferred direction "
                            "(D3, equal dimension)", null=T.isotropic_margin_ratio(1)))
    metrics["synthetic"] = syn_m

    # ---- tiny feature (MLP, seed 0), per init scale: the w-margin curve over eps2 (sigma_w = 0) and D5 (noise)
    metrics["tiny"] = []
    e2 = np.asarray(s.tiny_eps2, float)
    for sc in s.tiny_init_scales:
        main = sc == s.tiny_init_scales[0]
        sws = list(s.tiny_sigma_w if main else s.tiny_sigma_w[:1])
        shape = (len(s.tiny_eps2), len(sws))
        g = {k: np.full(shape, np.nan) for k in ("w_margin", "u_margin", "test_acc", "N_margin")}
        g["w_lower_bound"] = np.zeros(shape, bool)
        for i, eps2 in enumerate(s.tiny_eps2):
            for j, sw in enumerate(sws):
                r = one_run(parts["tiny"], eps2=eps2, sigma_w=sw, init_scale=sc)
                sm = _med(bank(r, "sub"))
                g["w_margin"][i, j], g["w_lower_bound"][i, j] = sm["median"][ix["w"]], sm["lower_bound"][ix["w"]]
                g["u_margin"][i, j] = sm["median"][ix["u"]]
                g["N_margin"][i, j] = np.median(sm["median"][nd])
                g["test_acc"][i, j] = float(r["test_acc"])
        col, lbc = g["w_margin"][:, 0], g["w_lower_bound"][:, 0]
        u0, w0 = float(g["u_margin"][0, 0]), float(col[0])
        with np.errstate(divide="ignore"):
            law = np.where(e2 > 0, T.tiny_w_margin(s.eps, np.where(e2 > 0, e2 * s.eps, 1.0), u0), np.nan)
        entry = {"init_scale": sc, "init": recipe_of(s)["init"], "eps2": list(s.tiny_eps2), "sigma_w": sws, **g,
                 "w_margin_times_eps2": col * e2 * s.eps, "w_margin_law": law}
        metrics["tiny"].append(entry)
        tag = "" if main else f"_init{sc:.3g}"
        note = "" if main else f" [init scale {sc:.3g} x the recipe's {recipe_of(s)['init']} init]"
        checks.append(Check(f"hmt.p6.tiny_feature_collapses_margin{tag}", float(col[1] / col[0]),
                            T.collapse_ratio_max(), 0.0, "at_most",
                            "paper claim (Sec. 3 / spec P6, unverified)",
                            f"median w-margin at eps2 = {s.tiny_eps2[1]} eps / at eps2 = 0 (sigma_w = 0); the eps2 = 0 "
                            "value is a lower bound if censored, so the ratio can only overstate; null: 1 (no "
                            "change)" + note, null=1.0))
        name = f"hmt.p6.tiny_feature_monotone{tag}"
        if len(s.tiny_eps2) - 1 >= T.min_trend_points():
            checks.append(Check(name, spearman(e2[1:], col[1:]), T.decreasing_spearman_max(), 0.0, "at_most",
                                "paper claim (Sec. 3 / spec P6, unverified)",
                                f"Spearman rho of the w-margin vs eps2 over {len(e2) - 1} values > 0 (sigma_w = 0); "
                                "null: 0 (no trend)" + note, null=0.0))
        else:
            skipped[name] = f"a trend needs >= {T.min_trend_points()} eps2 > 0 (has {len(e2) - 1})"
        dev = np.abs(g["u_margin"][:, 0] / u0 - 1)
        checks.append(Check(f"hmt.p6.u_margin_unchanged{tag}", float(np.max(dev)), T.u_margin_change(),
                            T.u_margin_unchanged_tol(), "abs", "paper claim (Sec. 3 / spec P6, unverified)",
                            "max over eps2 of |u-margin / u-margin(eps2 = 0) - 1|; tolerance: spec P6's +-5 %; "
                            "null: the memorisation flag's +20 % (the tiny feature taking over the decision)" + note,
                            null=flag / half - 1))
        # the 1/eps2 law's exponent inside its domain (theory module docstring)
        win = [i for i in range(1, len(e2)) if e2[i] <= T.tiny_law_max_eps2() and not lbc[i]
               and np.isfinite(col[i]) and T.d5_in_domain(e2[i] * s.eps, s.eps, u0, w0, T.tiny_law_domain_factor())]
        name = f"hmt.d5.tiny_law_exponent{tag}"
        entry["law_window"] = [float(e2[i]) for i in win]
        if len(win) >= 2:
            slope = float(np.polyfit(np.log(e2[win]), np.log(col[win]), 1)[0])
            tol = T.tiny_law_exponent_tol(float(e2[win[0]]) * s.eps, float(e2[win[-1]]) * s.eps, s.eps)
            entry["law_exponent"] = slope
            if tol < 1:
                checks.append(Check(name, slope, T.tiny_law_exponent(), tol, "rel",
                                    "derived (theory.hold_me_tight docstring: the 1/eps2 law; domain: "
                                    "tiny_law_max_eps2 + d5_in_domain(kappa_law))",
                                    f"least-squares slope of log w-margin vs log eps2 over eps2 = {entry['law_window']} "
                                    f"eps (sigma_w = 0; in the domain: eps2 <= {T.tiny_law_max_eps2():g} eps, "
                                    f"eps2 >= kappa_law eps u0 / w0 = "
                                    f"{T.tiny_law_domain_factor() * s.eps * u0 / w0:.3g}, not censored); tolerance: "
                                    "curvature + residual bound of the theory module; null: 0 (the w-margin does not "
                                    "depend on eps2)" + note, null=0.0))
            else:
                skipped[name] = (f"the window {entry['law_window']} is too narrow: the derived tolerance {tol:.2g} "
                                 "admits every slope")
        else:
            skipped[name] = (f"fewer than 2 eps2 of {list(s.tiny_eps2[1:])} in the law's domain at init scale {sc:.3g} "
                             f"(eps2 <= {T.tiny_law_max_eps2():g} eps, eps2 >= kappa_law eps u0 / w0 = "
                             f"{T.tiny_law_domain_factor() * s.eps * u0 / w0:.3g}, w-margin not censored): the "
                             "untrained sensitivity along w dominates the learned one")
        if not main:
            continue
        # D5 inside its domain (recipe's init scale): the learned w-sensitivity dominates the untrained one
        sw_max = sws[-1]
        inside = [i for i in range(1, len(e2)) if T.d5_in_domain(e2[i] * s.eps, s.eps, u0, w0)
                  and sw_max >= T.d5_noise_to_feature_min() * e2[i] * s.eps]
        name = "hmt.d5.noise_hides_tiny_feature"
        if inside:
            rat = g["w_margin"][inside, -1] / col[inside]
            checks.append(Check(name, float(np.min(rat)), T.d5_hide_ratio_min(), 0.0, "at_least",
                                "derived (spec D5; domain: theory.hold_me_tight.d5_in_domain)",
                                f"min over eps2 in D5's domain {[float(e2[i]) for i in inside]} eps (eps2 >= "
                                f"kappa eps u0 / w0 = {T.d5_domain_factor() * s.eps * u0 / w0:.3g}, sigma_w >= 5 eps2) "
                                f"of w-margin(sigma_w = {sw_max}) / w-margin(sigma_w = 0); null: 1 (noise changes "
                                "nothing)", null=1.0))
        else:
            skipped[name] = (f"no eps2 of {list(s.tiny_eps2[1:])} is in D5's domain at init scale {sc:.3g}: eps2 >= "
                             f"kappa eps u0 / w0 = {T.d5_domain_factor() * s.eps * u0 / w0:.3g} (the untrained "
                             "sensitivity along w dominates the one the tiny feature teaches) with sigma_w >= 5 eps2")

    # ---- the E < N finding on the N/E block generator (an extension: not the paper's claim)
    blocks = {seed: one_run(parts["blocks"], seed=seed) for seed in range(s.seeds)} if "blocks" in parts else {}
    if s.synth_data == "blocks":
        blocks = {seed: synth("mlp", seed, 0.0) for seed in range(s.seeds)}
    name = "hmt.d6.blocks_empty_rows_shrink_by_weight_decay"
    if blocks:
        rc = recipe_of(s)
        bcfg = _synth_run(s, "mlp", 0, kind="blocks")
        bnames = bank_names(bcfg)
        bix = {n: i for i, n in enumerate(bnames)}
        a_pred = T.weight_decay_factor(rc["lr"], rc["peak_frac"], bcfg.train.steps, s.weight_decay, rc["momentum"],
                                       rc["schedule_shift"])
        fin = []
        for seed, r in sorted(blocks.items()):
            sm = _med(_bank(r, "sub", len(bnames), bcfg.margin.n_points))
            fl = {k[len("first_layer/"):]: float(r[k]) for k in r.data_vars if k.startswith("first_layer/")}
            fin.append({"seed": seed, "test_acc": float(r["test_acc"]),
                        "E_margin": float(sm["median"][bix["E"]]), "N_margin": float(sm["median"][bix["N"]]),
                        "E_random_margin": float(np.median(sm["median"][[i for n, i in bix.items()
                                                                         if n.startswith("E") and n != "E"]])),
                        "N_random_margin": float(np.median(sm["median"][[i for n, i in bix.items()
                                                                         if n.startswith("N") and n != "N"]])),
                        "u_margin": float(sm["median"][bix["u"]]), "first_layer_rms": fl,
                        "E_shrink": fl["E"] / fl["E0"], "N_change": fl["N"] / fl["N0"]})
        worst = max(fin, key=lambda f: abs(f["E_shrink"] / a_pred - 1))["E_shrink"]
        metrics["finding_E_vs_N"] = {
            "per_seed": fin, "E_shrink_predicted": a_pred,
            "E_over_N_margin": float(np.median([f["E_margin"] / f["N_margin"] for f in fin])),
            "E_over_N_random_margin": float(np.median([f["E_random_margin"] / f["N_random_margin"] for f in fin])),
            "note": ("a finding of the fa-jax N/E block extension, not a claim of the paper: margins along the empty "
                     "block E are SMALLER than along the noisy block N. Mechanism (measured): E carries no data, so "
                     "its first-layer rows never receive a gradient and only shrink by weight decay (RMS row norm "
                     "E / E0 = E_shrink, predicted a(T) = E_shrink_predicted from the schedule and wd), keeping a "
                     "random, init-sized sensitivity; training on the noise along N suppresses the sensitivity "
                     "along N (N_change), so N-margins grow. The paper's claim (P8 on synthetic data) compares every "
                     "non-discriminative subspace with u, and holds for both (hmt.p8.*_synth_nondiscriminative_"
                     "over_u)."),
        }
        # add_check: at a learning rate where momentum SGD + wd diverges a(T) overflows: not evaluated, said why
        add_check(checks, skipped, name, worst, a_pred, T.weight_decay_factor_tol(bool(s.x64)), "rel",
                  "derived (theory.hold_me_tight docstring 'gradient-free rows'; domain: MLP, standard "
                  "training, no tiny feature)",
                  "the E-vs-N mechanism: RMS norm of the first-layer rows along E \\ w after / before "
                  f"training (the seed farthest from the prediction; N: "
                  f"{np.median([f['N_change'] for f in fin]):.3g}) vs a(T), momentum SGD + wd on a zero "
                  "gradient over the lr schedule; tolerance: rounding (theory); null: 1 (rows unchanged)",
                  null=1.0)
    else:
        skipped[name] = "this preset runs no N/E block generator (blocks_finding = false)"

    # ---- adversarial training (MLP)
    at = {(seed, e): one_run(parts["at"], seed=seed, eps_adv=e) if e > 0 else synth("mlp", seed, 0.0)
          for seed in range(s.seeds) for e in s.at_eps}  # eps_adv = 0: the standard runs
    at_m: dict = {"eps_adv": list(s.at_eps)}
    kinds = {"u": [ix["u"]], f"N{s.random_dim}": nd, f"E{s.random_dim}": ed,
             "N": [ix["N"]] if "N" in ix else [], "E": [ix["E"]] if "E" in ix else []}
    kinds = {k: v for k, v in kinds.items() if v}  # NADs data: no E block, and no "all of N" (~ all of R^D)
    for kname, idx in kinds.items():
        at_m[kname] = [[float(np.median(_med(bank(at[(seed, e)], "sub"))["median"][idx])) for e in s.at_eps]
                       for seed in range(s.seeds)]
    at_m["test_acc"] = [[float(at[(seed, e)]["test_acc"]) for e in s.at_eps] for seed in range(s.seeds)]
    at_m["profile"] = [[_profile(bank(at[(seed, e)], "block"))["median"] for e in s.at_eps]
                       for seed in range(s.seeds)]
    metrics["at"] = at_m
    uu = np.asarray(at_m["u"], float).ravel()
    worst = float(uu[np.argmax(np.abs(uu / half - 1))])
    checks.append(Check("hmt.p7.at_u_margin_pinned", worst, half, T.pinned_u_margin_rel_tol(), "rel",
                        "paper claim (Sec. 4 / spec P7, unverified)",
                        "the u-margin farthest from eps/2 over seeds and eps_adv (DeepFool, an upper bound: issue "
                        "16); tolerance: spec P7's +-10 %; null: the memorisation flag 1.2 eps/2", null=flag))
    diffs = [np.diff(np.asarray(at_m[k]), axis=1) for k in kinds if k != "u"]
    n_cmp = int(sum(d.size for d in diffs))
    name = "hmt.p7.at_orthogonal_margins_increase"
    if len(s.at_eps) >= T.min_trend_points():
        checks.append(Check(name, int(sum(int(np.sum(d <= 0)) for d in diffs)), T.nonincreases(), 0.0, "at_most",
                            "paper claim (Sec. 4 / spec P7, unverified)",
                            f"number of non-increases of the {' / '.join(k for k in kinds if k != 'u')} medians "
                            "between consecutive "
                            f"eps_adv of {list(s.at_eps)}, over seeds ({n_cmp} comparisons); null: half of them "
                            "(adversarial training changes nothing)", null=n_cmp / 2))
    else:
        skipped[name] = f"a monotone trend needs >= {T.min_trend_points()} eps_adv values (has {len(s.at_eps)})"

    # ---- images
    img_m: dict = {}
    for name, reason in missing.items():
        for arch in s.image_archs:
            why = f"the {name} files are missing ({reason})"
            skipped[f"hmt.p8.{name}_{arch}_profile_rise"] = why
            skipped[f"hmt.p10.{name}_{arch}_lowpass_growth"] = why
            if arch == "mlp":
                for c in ("pointwise", "profile"):
                    skipped[f"hmt.d2.mlp_{name}_flip_mirror_{c}"] = why
                skipped[f"hmt.d2.mlp_{name}_flip_censoring_agrees"] = why
    for name in image_sets:
        k, step = image_block(name)
        side = 32 if name == "cifar10" else 28
        st = np.arange(0, side - k + 1, step)
        mir = [int(np.flatnonzero(st == mirror_block(a, side, k))[0]) for a in st]
        for arch in s.image_archs:
            runs = {c: one_run(parts["images"], dataset=name, arch=arch, cond=c)
                    for c in ("standard", "flipped", "lowpass")}
            std, flp, lp = (_bank(r, "block", len(st), s.image_points) for r in runs.values())
            key = f"{name}_{arch}"
            fm = mirror_error(std, flp, mir)
            p_std, p_lp = _profile(std), _profile(lp)
            loss = np.asarray(runs["standard"]["records/loss"].values, float)
            img_m[key] = {"test_acc": {c: float(r["test_acc"]) for c, r in runs.items()},
                          "loss_initial": float(loss[0]), "loss_final": float(loss[-1]),
                          "starts": st.tolist(), "profile": p_std, "profile_flipped": _profile(flp),
                          "profile_lowpass": p_lp, "flip_mirror": fm}
            if arch == "mlp":
                checks += _d2_checks(s, name, fm, _image_run(s, name, "mlp"))
            first, last, rise = _rise_per_point(std["margin"])
            img_m[key]["profile_rise"] = rise
            checks.append(_sign_check(f"hmt.p8.{key}_profile_rise", exceeds_fraction(first, last), first.shape[0],
                                      "paper claim (Fig. 2 / spec P8, unverified)",
                                      "P8: a point's median block margin over the last third of the diagonal exceeds "
                                      f"the first third's (ratio of the profile's thirds {rise:.3g})"))
            b = runs["lowpass"]["lowpass"].item()  # the label: the band's side
            inside, outside = st + k <= b, st >= b
            if inside.any() and outside.any():
                with np.errstate(invalid="ignore", divide="ignore"):
                    gp = np.asarray(lp["margin"], float) / np.asarray(std["margin"], float)
                    g_in, g_out = np.nanmedian(gp[inside], axis=0), np.nanmedian(gp[outside], axis=0)
                    g = np.asarray(p_lp["median"]) / np.asarray(p_std["median"])
                img_m[key]["lowpass_growth"] = {"inside": float(np.median(g[inside])),
                                                "outside": float(np.median(g[outside])), "b": b}
                checks.append(_sign_check(f"hmt.p10.{key}_lowpass_growth", exceeds_fraction(g_in, g_out),
                                          g_in.shape[0], "paper claim (Fig. 4 / spec P10, unverified)",
                                          f"P10: a point's margin growth after the 2-D low-pass b = {b} (median over "
                                          "blocks of low-passed / standard margin) is larger outside the kept band "
                                          "than inside it"))
            else:
                skipped[f"hmt.p10.{key}_lowpass_growth"] = f"no DCT block lies fully inside / outside the band b = {b}"
    metrics["images"] = img_m
    return checks, metrics, skipped


def run(s: HMTSim, out_dir: str, progress: bool = True, command: str = "") -> dict:
    s = s.validate()
    os.makedirs(out_dir, exist_ok=True)
    image_sets, missing = available_image_sets(s)
    with renamed(_IMAGE_NAMES):  # the synthetic runs passed validate(): an error here is an image run's
        runs = build_runs(s, image_sets)
    cache = os.path.join(out_dir, "cache")
    with jax.enable_x64(bool(s.x64)):
        # the images are shared inputs of their programs (unbatched arguments, in the memory plan), not constants;
        # the synthetic runs have none ({}), so their programs and chunk names are those without shared inputs
        _, engine = run_labelled(run_hold_me_tight, runs, out_dir=cache, tag=SIM, progress=progress, desc=SIM,
                                 shared=shared_image_data)
    # every number below comes from the labelled Dataset the sweep wrote (dim run; analyse selects its parts)
    ds = load_results(cache, sweep=SIM)
    checks, metrics, skipped = analyse(s, ds, image_sets, missing)
    metrics.update(engine)
    metrics["figures"] = hmt_figures(out_dir, s, ds, metrics, image_sets)
    return finish(out_dir, sim=SIM, config=s, checks=checks, metrics=metrics, command=command,
                  not_evaluated=skipped)
