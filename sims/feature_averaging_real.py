"""Feature averaging on real images (spec ``../shared/specs/feature_averaging.md`` P14, Fig. 2c/2d, 2.4-2.5):
``fa-jax run feature-averaging-real``.

The same image net is trained with binary supervision (one output, logistic loss on the side of a class partition:
MNIST odd vs even, CIFAR-10 classes 0-4 vs 5-9) and with 10-class supervision (CE on the class), over several
seeds, in ONE sweep (two compiled programs: binary and 10-class; seeds are traced). The 10-class net is read out
as binary by the probability sum F_lse = log sum_{J+} e^{f_j} - log sum_{J-} e^{f_j} (the primary read-out: the
log-odds of the summed softmax probabilities of the two sides), and by the labelled variants F_sum (raw logit sum
per side, from a third-party reproduction; CE leaves the non-top logits uncontrolled, so it loses ~12 points of
clean accuracy) and F_max (max logit per side). Every read-out is attacked by the same PGD (its own margin and the
native CE loss). Checks: P14, each 10-class-derived classifier is more robust than the binary net at every
radius > 0 of the grid (measured: the smallest gap), and the clean accuracies of the binary net, F_lse and F_max
reach the floor ``theory.real_clean_accuracy_floor`` (below every value of the paper's Fig. 3; F_sum's clean
accuracy is a metric, not floored); all are paper claims, recorded results. There is no theory for real images
(spec: "no theory for ResNets"); the class-mean cosine heat-maps of penultimate features are reported beside the
checks.

Data: ``dataset="mnist-5k"`` (offline, the default), or ``mnist`` / ``fashion-mnist`` / ``cifar10`` read from the
standard files under ``$FA_JAX_DATA`` (or ``--set data_dir=DIR``); presets ``mnist`` and ``cifar10`` use them.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from fa_jax.config import check_fields, param, renamed, require, require_runs
from fa_jax.data import images as I
from fa_jax.experiments.feature_averaging import readout_net
from fa_jax.experiments.feature_averaging_real import (
    STANDARDIZE,
    FARealRun,
    RealAttack,
    RealData,
    eps_grid,
    load_real_data,
    run_feature_averaging_real,
    shared_real_data,
)
from fa_jax.models.image_nets import ARCHS, ImageNet
from fa_jax.optim import OPTIMIZERS, OptimConfig
from fa_jax.plotting.feature_averaging_real import feature_averaging_real_figures
from fa_jax.results import load_results, own_coord, select_runs, stacked
from fa_jax.summary import Check, finish, seed_stats
from fa_jax.sweep import run_labelled
from fa_jax.theory import feature_averaging as T
from fa_jax.trainer import TrainConfig

SIM = "feature-averaging-real"
DEFAULT_PARTITION = {"cifar10": "0-4_vs_5-9"}  # every other set: "odd_even"


@dataclasses.dataclass(frozen=True)
class FARealSim:
    # data (static: loaded with numpy once; the programs receive the arrays as shared inputs, not constants)
    dataset: str = "mnist-5k"  # one of fa_jax.data.images.DATASETS; mnist / fashion-mnist / cifar10 need files
    partition: str = "auto"  # binary classes: a PARTITIONS name, or "auto" (0-4_vs_5-9 on cifar10, else odd_even)
    data_dir: str | None = None  # folder of the dataset files (None: $FA_JAX_DATA)
    verify: bool = True  # official checksums of the standard files (false: re-packed or re-compressed copies)
    n_train_per_class: int | None = None  # training images per class (None: the whole train split)
    n_test_per_class: int | None = None  # test images per class (None: the whole test split)
    standardize: str = "none"  # none | global | channel | feature (a fixed first layer: radii stay in pixel units)
    data_seed: int = 0  # seed of the subsets and of the test-set order (the first n_points are attacked)
    # model (the same architecture for both supervisions)
    arch: str = "mlp"  # architecture: "mlp" or "conv"
    hidden: tuple = param((256, 256), empty_ok=True)  # MLP hidden widths
    channels: tuple = (16, 32)  # conv net channels
    dense: int = 64  # conv net penultimate width
    # training
    optimizer: str = "adam"  # optimiser: any name in fa_jax.optim.OPTIMIZERS
    lr: float = 1e-3  # learning rate
    batch_size: int | None = 128  # mini-batch size (None: full batch, with optimizer="gd")
    steps: int = 1500  # training steps
    seeds: int = 4  # init / batch-order seeds, per supervision (binary, 10-class)
    # attack: l2 PGD over linspace(0, eps_max, n_eps) in [0, 1]-pixel units
    pgd_steps: int = 20  # l2 PGD steps per attack (step 2.5 eps / pgd_steps)
    restarts: int = 1  # PGD random restarts
    n_points: int = 500  # attacked test points
    eps_max: float = 3.0  # largest attack radius (l2, [0, 1]-pixel units)
    n_eps: int = 13  # attack radii, evenly spaced in [0, eps_max]
    ce_attack: bool = True  # also attack the 10-class net's native CE loss (labelled separately)
    eps_batch: int = 4  # radii attacked at once (memory)

    def validate(self) -> FARealSim:
        check_fields(self, nonempty=True)  # types first (every comparison below is between numbers)
        require(self.dataset in I.DATASETS, "dataset", f"one of {I.DATASETS}", self.dataset)
        require(self.partition == "auto" or self.partition in I.PARTITIONS, "partition",
                f"'auto' or one of {tuple(I.PARTITIONS)}", self.partition)
        require(self.arch in ARCHS, "arch", f"one of {ARCHS}", self.arch)
        require(isinstance(self.seeds, int) and self.seeds >= 1, "seeds", "an integer >= 1", self.seeds)
        require(isinstance(self.steps, int) and self.steps >= 1, "steps", "an integer >= 1", self.steps)
        require(math.isfinite(float(self.lr)) and float(self.lr) > 0, "lr", "a finite number > 0", self.lr)
        require(isinstance(self.n_eps, int) and self.n_eps >= 2, "n_eps", "an integer >= 2", self.n_eps)
        require(math.isfinite(float(self.eps_max)) and float(self.eps_max) > 0, "eps_max", "a finite number > 0",
                self.eps_max)
        require(self.standardize in STANDARDIZE, "standardize", f"one of {STANDARDIZE}", self.standardize)
        require(self.data_seed >= 0, "data_seed", "an integer >= 0", self.data_seed)
        for f in ("n_train_per_class", "n_test_per_class"):
            require(getattr(self, f) is None or getattr(self, f) >= 1, f, "None (all images) or an integer >= 1",
                    getattr(self, f))
        for f in ("dense", "pgd_steps", "restarts", "n_points", "eps_batch"):
            require(getattr(self, f) >= 1, f, "an integer >= 1", getattr(self, f))
        require(all(w >= 1 for w in self.hidden), "hidden", "a tuple of widths >= 1 (empty: a linear model)",
                self.hidden)
        require(all(c >= 1 for c in self.channels), "channels", "a non-empty tuple of channel counts >= 1",
                self.channels)
        require(self.optimizer in OPTIMIZERS, "optimizer", f"one of {OPTIMIZERS}", self.optimizer)
        require(self.batch_size is None or (self.batch_size >= 1 and self.optimizer != "gd"), "batch_size",
                "None (full batch) or an integer >= 1 with an optimizer other than 'gd'", self.batch_size)
        require_runs(2 * self.seeds, "the runs", self, "seeds")
        return self


# the run configs' paths -> this config's fields (errors of the run configs' validate() name the latter)
_RUN_NAMES = {"data.name": "dataset", "data.partition": "partition", "data.n_train_per_class": "n_train_per_class",
              "data.n_test_per_class": "n_test_per_class", "data.standardize": "standardize", "data.seed": "data_seed",
              "data.verify": "verify", "model.arch": "arch", "model.hidden": "hidden", "model.channels": "channels",
              "model.dense": "dense", "optim.name": "optimizer", "optim.lr": "lr", "optim.batch_size": "batch_size",
              "train.steps": "steps", "attack.steps": "pgd_steps", "attack.restarts": "restarts",
              "attack.n_points": "n_points", "attack.eps_max": "eps_max", "attack.n_eps": "n_eps",
              "attack.eps_batch": "eps_batch"}


PRESETS = {
    "default": FARealSim(),
    # ~30 s on 2 cores (mostly the two compilations): 50 train / 20 test digits per class, a 64-unit MLP, 300
    # full-batch Adam steps, a 10-step attack on 100 points over 7 radii, 2 seeds. The clean-accuracy floor is the
    # theory's (the paper's claim), as on every preset: 500 training digits give 0.8-0.9 clean accuracy, so the
    # quick run records that paper claim as failing (a result, not a must-pass).
    "quick": FARealSim(n_train_per_class=50, n_test_per_class=20, hidden=(64,), batch_size=None, steps=300,
                       seeds=2, pgd_steps=10, n_points=100, n_eps=7),
    # The standard files (FA_JAX_DATA): full MNIST odd/even; CIFAR-10 0-4 vs 5-9 with the small conv net.
    "mnist": FARealSim(dataset="mnist", steps=3000, n_test_per_class=200),
    "cifar10": FARealSim(dataset="cifar10", arch="conv", standardize="channel", channels=(32, 64), dense=128,
                         steps=4000, n_test_per_class=200, eps_max=1.5),
}


def _partition(s: FARealSim) -> str:
    return s.partition if s.partition != "auto" else DEFAULT_PARTITION.get(s.dataset, "odd_even")


def data_config(s: FARealSim) -> RealData:
    return RealData(name=s.dataset, partition=_partition(s), n_train_per_class=s.n_train_per_class,
                    n_test_per_class=s.n_test_per_class, standardize=s.standardize, data_dir=s.data_dir,
                    verify=s.verify, seed=s.data_seed).validate()


def load_data(s: FARealSim) -> dict:
    """The task's arrays; missing dataset files become a ValueError naming them and where they go."""
    dc = data_config(s)
    try:
        return load_real_data(dc)
    except FileNotFoundError as e:
        where = dc.data_dir or os.environ.get(I.DATA_ENV) or f"${I.DATA_ENV} (not set)"
        raise ValueError(f"invalid dataset={s.dataset!r}: its files are not available under {where}. Put the "
                         f"standard files in a folder and set {I.DATA_ENV}=that folder (or --set data_dir=DIR); "
                         f"without them use dataset='mnist-5k' (offline). Loader: {e}") from None


def build_runs(s: FARealSim) -> list[tuple[dict, FARealRun]]:
    """Binary and 10-class runs x seeds; all go through ONE sweep call (two programs)."""
    dc = data_config(s)
    n_classes = len(load_data(s)["signs"])
    runs = []
    for head in ("binary", "multiclass"):
        for seed in range(s.seeds):
            cfg = FARealRun(
                data=dc,
                model=ImageNet(arch=s.arch, head=head, n_classes=n_classes, hidden=s.hidden,
                               channels=s.channels, dense=s.dense),
                optim=OptimConfig(name=s.optimizer, lr=s.lr, batch_size=s.batch_size),
                train=TrainConfig(steps=s.steps, n_records=10),
                attack=RealAttack(steps=s.pgd_steps, restarts=s.restarts, n_points=s.n_points, eps_max=s.eps_max,
                                  n_eps=s.n_eps, ce=s.ce_attack, eps_batch=s.eps_batch),
                model_seed=seed,
            )
            runs.append(({"head": head, "seed": seed}, cfg.validate()))
    return runs


def robustness_gap(eps, acc_derived, acc_binary, resolution: float | None = None):
    """Gap acc_derived - acc_binary of seed-mean curves at every radius > 0 where at least one curve is above 0
    (where both are 0 nobody is robust and there is nothing to compare). ``resolution``: gaps are rounded to
    multiples of it (accuracies are counts of points; float32 means are not exact). Returns ``(min gap, radius of the min,
    gaps (eps,), compared mask (eps,))``."""
    eps = np.asarray(eps, float)
    a, b = np.asarray(acc_derived, float), np.asarray(acc_binary, float)
    gaps = a - b
    if resolution is not None:
        gaps = np.round(gaps / resolution) * resolution
    compared = (eps > 0) & ((a > 0) | (b > 0))
    if not compared.any():
        return float("nan"), float("nan"), gaps, compared
    i = int(np.argmin(np.where(compared, gaps, np.inf)))
    return float(gaps[i]), float(eps[i]), gaps, compared


def run(s: FARealSim, out_dir: str, progress: bool = True, command: str = "") -> dict:
    s = s.validate()
    with renamed(_RUN_NAMES):  # an error of the run configs names this config's field (n_points, not attack.n_points)
        data = load_data(s)  # clear error naming the files before anything compiles
        runs = build_runs(s)  # validates every run config
    os.makedirs(out_dir, exist_ok=True)
    # the images are shared inputs of the programs (one unbatched argument, inside the memory plan), not constants
    _, engine = run_labelled(run_feature_averaging_real, {"all": runs}, out_dir=os.path.join(out_dir, "cache"),
                             tag=SIM, progress=progress, desc=SIM, shared=shared_real_data)
    # every number below comes from the labelled Dataset the sweep wrote: dims (head, seed, <output axes>)
    # eps: the runs' radius grid (own_coord: the config's where every run diverged, so no run carries it)
    ds = own_coord(select_runs(load_results(os.path.join(out_dir, "cache"), sweep=SIM), "all", unstack=True), "eps",
                   eps_grid(runs[0][1]))

    def per_seed(var: str, head: str) -> np.ndarray:
        """Output ``var`` of the runs of ``head``: ``[seed, ...]``."""
        return stacked(ds[var].sel(head=head), "seed")

    def readouts(prefix: str, suffix: str = "") -> list[str]:
        """The read-outs r of the outputs ``<prefix>r<suffix>``, the binary net's first."""
        names = [v[len(prefix):len(v) - len(suffix)] for v in ds.data_vars if v.startswith(prefix) and v.endswith(suffix)]
        return sorted(names, key=lambda r: readout_net(r) != "binary")

    part = I.PARTITIONS[_partition(s)]
    metrics: dict = {**engine,
                     "data": {"dataset": s.dataset, "partition": part.name, "positive": list(part.positive),
                              "negative": list(part.negative), "n_train": int(data["fine_train"].shape[0]),
                              "n_test": int(data["fine_test"].shape[0]), "image_shape": list(data["image_shape"]),
                              "classes": list(data["classes"])},
                     "attack": {"norm": "l2, [0,1]-pixel units, no box constraint", "steps": s.pgd_steps,
                                "alpha": f"2.5 eps / {s.pgd_steps}", "restarts": s.restarts, "points": s.n_points,
                                "objectives": {"binary": "margin y f",
                                               "lse/sum/max": "per point: robust only if both the read-out's "
                                                              "margin and the native CE attack fail" if s.ce_attack
                                                              else "the read-out's margin"}},
                     "readouts": {"binary": "the binary net's sgn f",
                                  "lse": "10-class, primary: log sum_{J+} e^f_j - log sum_{J-} e^f_j",
                                  "sum": "10-class, variant: sum_{J+} f_j - sum_{J-} f_j",
                                  "max": "10-class, variant: max_{J+} f_j - max_{J-} f_j"}}

    # ---- clean accuracy and robust accuracy curves
    clean = {name: seed_stats(per_seed(f"clean/{name}", readout_net(name))) for name in readouts("clean/")}
    metrics["clean_accuracy"] = clean
    # the learning floor of the tests: the training loss at the first and the last record (seed means)
    metrics["train_loss"] = {}
    for label in ("binary", "multiclass"):
        loss = per_seed("records/loss", label)  # [seed, step]
        metrics["train_loss"][label] = {"initial": float(np.mean(loss[:, 0])), "final": float(np.mean(loss[:, -1]))}
    eps = np.asarray(ds["eps"].values, float)
    curves = {name: per_seed(f"robust/{name}/acc", readout_net(name)) for name in readouts("robust/", "/acc")}
    metrics["eps"] = eps
    metrics["robust_accuracy_mean"] = {name: c.mean(0) for name, c in curves.items()}
    metrics["r50"] = {name: seed_stats(per_seed(f"robust/{name}/r50", readout_net(name))) for name in curves}
    metrics["r50_censored_runs"] = {
        name: int(np.count_nonzero(per_seed(f"robust/{name}/r50_censored", readout_net(name)))) for name in curves}
    gaps = {}
    resolution = 1.0 / (s.n_points * s.seeds)  # one attacked point of one seed
    for name in ("lse", "sum", "max"):
        g, at, gvec, comp = robustness_gap(eps, curves[name].mean(0), curves["binary"].mean(0), resolution)
        gaps[name] = {"min_gap": g, "at_eps": at, "gap": gvec, "compared": comp,
                      "mean_gap_compared": float(np.mean(gvec[comp])) if comp.any() else float("nan"),
                      "min_gap_per_seed": [robustness_gap(eps, a, b, 1.0 / s.n_points)[0]
                                           for a, b in zip(curves[name], curves["binary"])]}
    metrics["gap_vs_binary"] = gaps

    # ---- penultimate-feature class means (Fig. 2c/2d analogue)
    feats = {}
    for label in ("binary", "multiclass"):
        feats[label] = {"within_side": seed_stats(per_seed("features/within_side", label)),
                        "cross_side": seed_stats(per_seed("features/cross_side", label)),
                        "cos_mean": np.mean(per_seed("features/cos", label), 0)}
    metrics["features"] = feats

    # ---- checks (P14 and the clean accuracies are paper claims: recorded results; no theory for real images)
    P = T.PROVENANCE
    gap_min = float(T.more_robust_gap(s.n_points, s.seeds))
    floor = float(T.real_clean_accuracy_floor())
    checks = []
    for name, label in (("lse", "F_lse (primary, probability sum)"), ("sum", "F_sum (variant, raw logit sum)"),
                        ("max", "F_max (variant)")):
        g = gaps[name]
        checks.append(Check(f"real.{name}_more_robust", g["min_gap"], gap_min, 0.0, "at_least", P["more_robust_gap"],
                            f"P14: {label} of the 10-class net minus the binary net, seed-mean robust accuracy, "
                            f"smallest gap over radii 0 < eps <= {s.eps_max:g} where either is > 0 (at eps = "
                            f"{g['at_eps']:.3g}); 'more robust' = at least one attacked point (1/(points x seeds)); "
                            "null 0: equally robust (supervision changes nothing)"))
    # the floor applies to the binary net and to the 10-class net's primary read-out F_lse, and to F_max (right
    # exactly where the 10-way argmax is on the right side, so CE trains it directly); F_sum's clean accuracy is
    # reported in metrics.clean_accuracy.sum, not floored: CE leaves the non-top logits it sums uncontrolled.
    for name, label in (("binary", "binary net"), ("lse", "10-class net, F_lse (primary)"),
                        ("max", "10-class net, F_max (variant)")):
        checks.append(Check(f"real.clean_accuracy.{name}", clean[name]["mean"], floor, 0.0, "at_least",
                            P["real_clean_accuracy_floor"],
                            f"clean test accuracy of the {label} >= {floor:g}, below every radius-0 value of the "
                            "paper's Fig. 3 (the non-robustness is not a generalisation failure, cf. P11); "
                            "null 0.5: chance for the two balanced sides", null=0.5))
    figs = feature_averaging_real_figures(out_dir, s, ds, metrics)
    metrics["figures"] = figs
    return finish(out_dir, sim=SIM, config=s, checks=checks, metrics=metrics, command=command)
