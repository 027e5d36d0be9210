"""SGD learns the support (Beneventano, Pinto, Poggio, arXiv 2406.11110): ``fa-jax run sgd-support``.

config -> ONE sweep (figure runs: GD, SGD per batch size, GD + weight decay; the (lr, b) phase grid) -> metrics ->
checks against ``fa_jax.theory.sgd_support`` -> figures + ``summary.json``. Spec: ../shared/specs/sgd_support.md.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os

import numpy as np

from fa_jax.config import check_fields, param, renamed, require, require_runs
from fa_jax.data.support import SupportData
from fa_jax.experiments.sgd_support import (
    SupportRun,
    converged_from,
    decay_window,
    run_sgd_support,
)
from fa_jax.models.mlp import ACTIVATIONS, MLP
from fa_jax.optim import SAMPLING, OptimConfig
from fa_jax.results import each_run, labelled_runs, load_results, runs_where, select_runs, stacked
from fa_jax.summary import Check, finish, seed_stats
from fa_jax.sweep import run_labelled
from fa_jax.theory import sgd_support as T
from fa_jax.trainer import TrainConfig

SIM = "sgd-support"


@dataclasses.dataclass(frozen=True)
class SupportSim:
    # data (spec 2.1)
    d: int = 15  # input dimension
    s: int = 5  # relevant coordinates 0..s-1 (the support); the other d - s are irrelevant
    n: int = 5000  # base inputs; N = 2n mirrored training points
    n_test: int = 1000  # fresh test inputs (clean targets)
    target: str = "linear"  # target on the support: linear, sine or staircase
    noise: float = 1e-3  # label-noise std of the figure runs (mirrored pairs: f(x) +- noise z)
    decorrelate: bool = False  # project the irrelevant inputs off span(1, X_relevant) (the code: off)
    # model (spec 2.2)
    widths: tuple = param((15, 15, 15), empty_ok=True)  # MLP hidden widths
    activation: str = "identity"  # MLP activation (fa_jax.models.mlp.ACTIVATIONS)
    # optimisation (spec 2.3)
    lr: float = 0.1  # learning rate of the figure runs (GD, SGD, GD + wd)
    clip: float = param(1.0, inf_ok=True)  # global-norm gradient clipping (official default); inf: off
    wd: float = 0.1  # weight decay of the GD + weight decay runs
    sampling: str = "epoch"  # SGD batches: "epoch" (permutations) or "replacement"
    batch_sizes: tuple = (512, 128, 32, 1)  # SGD batch sizes b of the figure runs
    gd_steps: int = 20_000  # steps of the GD figure runs
    sgd_steps: int = 200_000  # steps of the SGD figure runs
    wd_steps: int = 5_000  # steps of the GD + weight decay runs
    init_seeds: int = 3  # seeds of data + init
    traj_seeds: int = 5  # batch-order seeds per init seed (SGD)
    n_records: int = 60  # records per run (log-spaced steps)
    phase1_steps: int = 2_000  # end of Phase 1: Phase 2 (T3 decay) is measured from here on
    # (lr, b) phase diagram (spec S1): one program per b, lr traced
    phase_lrs: tuple = tuple(float(v) for v in np.round(np.geomspace(0.02, 0.5, 6), 4))  # grid learning rates
    phase_batch: tuple = (1, 4, 16, 64, 256, 1024)  # grid batch sizes (b = N: the GD column)
    phase_seeds: int = 4  # seeds per SGD cell of the grid
    # 144 SGD runs at 4e4 steps (trimmed from 5e4 to pay for the label-noise family, the b = N column and the
    # running means: the default stays ~75 min on 2 CPU cores)
    phase_steps: int = 40_000  # steps per SGD cell of the grid
    phase_noise: float | None = None  # label-noise std of the grid (None: the figure runs' noise)
    # the b = N (GD) column of the phase grid: its freeze step per lr starts the T3 windows at that lr; one init seed
    # and fewer steps (a full-batch step at N = 1e4 costs ~15 SGD steps at b = 16)
    phase_gd_seeds: int = 1  # seeds per cell of the b = N column
    phase_gd_steps: int = 20_000  # steps per cell of the b = N column
    # the convergent label-noise family (spec S2/P8, issue 17): T3's primary test. ln_batch = (): the figure runs
    # ARE this family (a preset whose noise and lr are ln_noise and ln_lr)
    ln_noise: float = 0.1  # label-noise std of the family
    ln_lr: float = 0.05  # learning rate of the family
    ln_batch: tuple = param((4, 16, 128, 512), empty_ok=True)  # SGD batch sizes of the family (b < N)
    ln_steps: int = 50_000  # SGD steps of the family
    ln_gd_steps: int = 20_000  # family's GD steps (only the T3 windows' start; GD freezes by ~5e3)
    ln_seeds: int = 2  # init seeds of the family (one batch order each)

    @property
    def n_train(self) -> int:
        return 2 * self.n

    def validate(self) -> SupportSim:
        check_fields(self, nonempty=True)  # types first (every comparison below is between numbers)
        with renamed(_RUN_NAMES):
            SupportData(d=self.d, s=self.s, n=self.n, n_test=self.n_test, target=self.target, noise=self.noise,
                        decorrelate=self.decorrelate).validate()
        require(all(w >= 1 for w in self.widths), "widths", "a tuple of widths >= 1 (empty: a linear model)",
                self.widths)
        require(self.activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}", self.activation)
        require(self.sampling in SAMPLING, "sampling", f"one of {SAMPLING}", self.sampling)
        require(self.n_records >= 2, "n_records", "an integer >= 2", self.n_records)
        for name in ("lr", "ln_lr"):
            require(getattr(self, name) > 0, name, "a finite number > 0", getattr(self, name))
        require(all(v > 0 for v in self.phase_lrs), "phase_lrs", "a tuple of finite learning rates > 0",
                self.phase_lrs)
        require(self.ln_noise >= 0, "ln_noise", "a finite number >= 0", self.ln_noise)
        require(self.phase_noise is None or self.phase_noise >= 0, "phase_noise",
                "None (the figure runs' noise) or a finite number >= 0", self.phase_noise)
        for name in ("batch_sizes", "phase_batch"):
            for b in getattr(self, name):
                require(isinstance(b, int) and 1 <= b <= self.n_train, name,
                        f"integers 1 <= b <= N = {self.n_train} (N = 2n training points)", b)
        require(len(self.batch_sizes) >= 1, "batch_sizes", "a non-empty tuple", self.batch_sizes)
        require(len(self.phase_lrs) >= 2 and len(self.phase_batch) >= 2, "phase_lrs/phase_batch",
                "at least 2 values each", (self.phase_lrs, self.phase_batch))
        for b in self.ln_batch:
            require(isinstance(b, int) and 1 <= b < self.n_train, "ln_batch",
                    f"integers 1 <= b < N = {self.n_train}", b)
        require(bool(self.ln_batch) or (self.noise == self.ln_noise and self.lr == self.ln_lr), "ln_batch",
                "non-empty, or the figure runs' noise and lr equal ln_noise and ln_lr (the figure runs are the family)",
                self.ln_batch)
        if not self.ln_batch:  # no family runs: its own steps and seeds would be ignored, so they are refused
            for f in ("ln_steps", "ln_gd_steps", "ln_seeds"):
                default = SupportSim.__dataclass_fields__[f].default
                require(getattr(self, f) == default, f,
                        f"its default {default!r} with ln_batch=() (the figure runs are the family: their own steps "
                        "and seeds apply); give ln_batch to run a separate family", getattr(self, f))
        for name in ("init_seeds", "traj_seeds", "phase_seeds", "phase_gd_seeds", "ln_seeds"):
            require(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "an integer >= 1",
                    getattr(self, name))
        for name in ("gd_steps", "sgd_steps", "wd_steps", "phase_steps", "phase_gd_steps", "ln_steps", "ln_gd_steps"):
            require(isinstance(getattr(self, name), int) and getattr(self, name) >= 2, name, "an integer >= 2",
                    getattr(self, name))
        require(1 <= self.phase1_steps < min(self.sgd_steps, self.phase_steps), "phase1_steps",
                f"1 <= phase1_steps < min(sgd_steps, phase_steps) = {min(self.sgd_steps, self.phase_steps)}",
                self.phase1_steps)
        require(self.clip > 0, "clip", "a number > 0 (inf: no clipping)", self.clip)
        require(self.wd > 0, "wd", "a number > 0 (the GD + weight decay runs)", self.wd)
        require_runs(self.init_seeds * (2 + len(self.batch_sizes) * self.traj_seeds), "the figure runs", self,
                     "init_seeds", "traj_seeds", "batch_sizes")
        require_runs(len(self.phase_batch) * len(self.phase_lrs) * max(self.phase_seeds, self.phase_gd_seeds),
                     "the (lr, b) grid", self, "phase_seeds", "phase_gd_seeds", "phase_batch", "phase_lrs")
        require_runs(self.ln_seeds * (1 + len(self.ln_batch)), "the label-noise family", self, "ln_seeds", "ln_batch")
        with renamed(_RUN_NAMES):  # every run config, checked now; an error names this config's field
            build_runs(self)
        return self


# the run configs' paths -> this config's fields (errors of the run configs' validate() name the latter)
_RUN_NAMES = {"data.d": "d", "data.s": "s", "data.n": "n", "data.n_test": "n_test", "data.target": "target",
              "data.noise": "noise", "model.widths": "widths", "model.activation": "activation",
              "optim.sampling": "sampling", "optim.clip_norm": "clip", "optim.weight_decay": "wd",
              "train.n_records": "n_records"}


PRESETS = {
    # The paper's setting (figure runs, P1-P3) + the (lr, b) grid with its b = N column + the convergent label-noise
    # family (T3's primary test, b = 16 inside its domain; 4, 128, 512 beside it). ~75 min on 2 CPU cores (estimate).
    "default": SupportSim(phase_batch=(1, 4, 16, 64, 256, 1024, 10_000)),
    # The same runs (GD, SGD per b, GD + wd, the (lr, b) grid with its b = N column), smaller: N = 500 points, 10^4
    # steps, in the regime of the label-noise family (spec S2/P8: sigma = 0.1, lr = 0.05, clip inactive), so the
    # figure runs ARE the family (ln_batch = ()): T3, the weight-decay law and P1 are tested inside their stated
    # domains (fa_jax.theory.sgd_support). At lr = 0.1 (the paper's) N = 500 GD oscillates (loss 0.02-0.05
    # alternating) and nothing would be in a theory's domain. b = 2 stands in for b = 1 (as fast to fit, a quarter
    # of the steps' noise). Phase grid: lr in {0.035, 0.05, 0.1} (0.1 lies above the converging range: its GD column
    # decides), b = the figure batch sizes and N. ~1 min on 2 cores.
    "quick": SupportSim(n=250, n_test=200, lr=0.05, noise=0.1, batch_sizes=(32, 8, 2), gd_steps=10_000,
                        sgd_steps=10_000, wd_steps=10_000, init_seeds=2, traj_seeds=2, n_records=40,
                        phase1_steps=1_000, phase_lrs=(0.035, 0.05, 0.1), phase_batch=(2, 8, 32, 500), phase_seeds=2,
                        phase_steps=10_000, phase_gd_steps=10_000, ln_batch=()),
}


def _run(s: SupportSim, b: int | None, lr: float, steps: int, seed: int, traj: int, wd: float = 0.0,
         noise: float | None = None) -> SupportRun:
    full = b is None or b == s.n_train
    return SupportRun(
        data=SupportData(d=s.d, s=s.s, n=s.n, n_test=s.n_test, target=s.target,
                         noise=s.noise if noise is None else noise, decorrelate=s.decorrelate),
        model=MLP(widths=tuple(s.widths), activation=s.activation),
        optim=OptimConfig(name="gd" if full else "sgd", lr=lr, batch_size=None if full else b, sampling=s.sampling,
                          weight_decay=wd, clip_norm=s.clip),
        train=TrainConfig(steps=steps, n_records=s.n_records, plan="log"),
        seed=seed, traj_seed=0 if full else traj,
    ).validate()


def build_runs(s: SupportSim) -> dict[str, list[tuple[dict, SupportRun]]]:
    """Every run of the sim, labelled; all of them go through ONE sweep call."""
    runs: dict[str, list] = {"gd": [], "sgd": [], "wd": [], "phase": [], "ln_gd": [], "ln_sgd": []}
    for seed in range(s.init_seeds):
        runs["gd"].append(({"seed": seed}, _run(s, None, s.lr, s.gd_steps, seed, 0)))
        runs["wd"].append(({"seed": seed}, _run(s, None, s.lr, s.wd_steps, seed, 0, wd=s.wd)))
        for b in s.batch_sizes:
            for traj in range(s.traj_seeds):
                runs["sgd"].append(({"b": b, "seed": seed, "traj": traj},
                                    _run(s, b, s.lr, s.sgd_steps, seed, traj)))
    for b in s.phase_batch:
        full = b == s.n_train
        for lr in s.phase_lrs:
            for seed in range(s.phase_gd_seeds if full else s.phase_seeds):
                runs["phase"].append(({"b": b, "lr": float(lr), "seed": seed},
                                      _run(s, b, float(lr), s.phase_gd_steps if full else s.phase_steps, seed, seed,
                                           noise=s.phase_noise)))
    for seed in range(s.ln_seeds if s.ln_batch else 0):
        runs["ln_gd"].append(({"seed": seed}, _run(s, None, s.ln_lr, s.ln_gd_steps, seed, 0, noise=s.ln_noise)))
        for b in s.ln_batch:
            runs["ln_sgd"].append(({"b": b, "seed": seed, "traj": 0},
                                   _run(s, b, s.ln_lr, s.ln_steps, seed, 0, noise=s.ln_noise)))
    return runs


def paper_setting(s: SupportSim) -> bool:
    """Whether ``s`` is the official figures' setting (P1-P3 apply): linear target, d = 15, s = 5, N = 10^4,
    15-15-15 identity net, lr 0.1, clip 1, label noise 1e-3, 2*10^4 GD / 2*10^5 SGD steps."""
    return (s.target == "linear" and (s.d, s.s, s.n) == (15, 5, 5000) and tuple(s.widths) == (15, 15, 15)
            and s.activation == "identity" and s.lr == 0.1 and s.clip == 1.0 and s.noise == 1e-3
            and s.gd_steps == 20_000 and s.sgd_steps == 200_000 and not s.decorrelate)


def _steps(r) -> np.ndarray:
    """The record steps of one run ``r`` (a Dataset with dim ``step``: :func:`each_run`), float64."""
    return np.asarray(r["step"].values, float)


def _rec(r, key: str) -> np.ndarray:
    """Record ``key`` of one run ``r`` (output ``records/<key>``), float64 ``[step]``."""
    return np.asarray(r[f"records/{key}"].values, float)


def t3_prediction(s: SupportSim, r, b: int, lr: float, t0: float | None = None) -> dict:
    """T3 overlay of one run from the running means of its records (spec Sec. 2.4): on the segment (t_{k-1}, t_k]
    kappa_k = T.t3_decay_rate(lr, b, N, mean E[r^2], u at the segment's midpoint, mean squared clip scale); ln ratio
    integrated exactly over the blocks from t0 (default ``s.phase1_steps``): pred_ratio(t) = ratio(t0) exp(-int kappa).
    u is a snapshot (a smooth function of the weights; it does not alternate), averaged over the segment's ends.
    ``r``: one run's Dataset, dims ``(step, ...)`` with its record steps as coordinate (:func:`each_run`)."""
    steps = _steps(r)
    u = _rec(r, "u")
    u_blk = np.concatenate([u[:1], 0.5 * (u[1:] + u[:-1])])
    chi = _rec(r, "clip2_mean")
    loss = _rec(r, "loss_mean")
    kappa = T.t3_decay_rate(lr, b, s.n_train, loss, u_blk, chi)
    base = lr * loss * u_blk * chi  # kappa / c_b
    i0 = min(int(np.searchsorted(steps, s.phase1_steps if t0 is None else t0)), len(steps) - 1)
    logr = np.full(len(steps), np.nan)
    logr[i0:] = T.integrate_block_rate(steps[i0:], kappa[i0:], math.log(float(r["records/irr"].values[i0])))
    return {"kappa": kappa, "base": base, "chi": chi, "i0": i0, "pred_ratio": np.exp(logr)}


def t3_window(s: SupportSim, r, b: int, lr: float, t0: float, noise: float) -> dict:
    """Measured Phase-2 decay exponent of one run on its window [t_a, t_b] (:func:`decay_window`: from t0 to its
    plateau) and T3's, sum over the window's segments of kappa_k (t_k - t_{k-1}) from the running means."""
    steps = _steps(r)
    w = decay_window(steps, r["records/irr"].values, t0, rise=T.plateau_rise(), min_drop=T.t3_min_drop())
    p = t3_prediction(s, r, b, lr, t0)
    ia, ib = int(np.searchsorted(steps, w["t_a"])), int(np.searchsorted(steps, w["t_b"]))
    dt = np.diff(steps[ia:ib + 1])
    t3 = T.window_exponent(steps, p["kappa"], ia, ib)
    base = T.window_exponent(steps, p["base"], ia, ib)  # int (kappa / c_b) dt
    msr = float(np.sum(_rec(r, "loss_mean")[ia + 1:ib + 1] * dt) / np.sum(dt)) \
        if ib > ia else float("nan")
    noise_ok = bool(np.isfinite(msr) and msr <= T.t3_noise_dominance() * noise ** 2)
    return w | {"t3": t3, "base_integral": base, "steps": steps, "kappa": p["kappa"], "ia": ia, "ib": ib,
                "resolved": bool(w["resolved"] and t3 > 0),
                "ratio": w["drop"] / t3 if t3 > 0 else float("nan"), "mean_sq_residual": msr,
                "noise_dominated": noise_ok}


def collapse_point(s: SupportSim, r, b: int, lr: float, t0: float, noise: float) -> dict:
    """Measured Phase-2 decay of one run against T3: y = drop / int base dt, x = c_b (theory: y = x)."""
    w = t3_window(s, r, b, lr, t0, noise)
    x = float(T.sgd_noise_scale(lr, b, s.n_train))
    rate = w["drop"] / (w["t_b"] - w["t_a"]) if w["t_b"] > w["t_a"] else 0.0
    return {"b": b, "lr": lr, "x": x, "y": w["drop"] / w["base_integral"] if w["base_integral"] > 0 else float("nan"),
            "drop": w["drop"], "t3": w["t3"], "resolved": w["resolved"], "on_floor": w["on_floor"],
            "plateau": w["plateau"], "noise_dominated": w["noise_dominated"], "rate": rate, "t_a": w["t_a"],
            "t_b": w["t_b"], "mean_sq_residual": w["mean_sq_residual"]}


# Unresolved decay windows and diverged runs are NaN here: summarise the finite seeds.
_ms = functools.partial(seed_stats, ignore_nan=True)


def _flat(da, *dims: str) -> np.ndarray:
    """DataArray ``da`` of a part's runs as ``[run, <output axes>]``, the runs in C order of its label ``dims`` (what
    ``np.stack`` of the per-run arrays in that order gives: :func:`fa_jax.results.stacked`, label dims merged)."""
    a = stacked(da, *dims)
    return a.reshape(-1, *a.shape[len(dims):])


def _rule_converged(curves, steps) -> float | None:
    """The regime converges iff every run's full-batch loss converges (:func:`converged_from`); then the latest
    convergence step (the window start after which every run's loss is stationary), else None."""
    tc = [converged_from(steps, c) for c in curves]
    return None if any(t is None for t in tc) else float(max(tc))


def gd_freeze(r) -> float | None:
    """The step from which a GD run ``r`` (one run's Dataset: :func:`each_run`) has converged (loss stationary within
    1 %) AND its ||W1_irr|| is frozen (every later record within ``T.gd_freeze_rel()`` of its final value); None if
    either never happens."""
    steps = _steps(r)
    a = converged_from(steps, r["records/loss"].values)
    c = converged_from(steps, r["records/irr"].values, rel=T.gd_freeze_rel())
    return None if a is None or c is None else float(max(a, c))


def _fit(pts) -> tuple[float, float]:
    """log-log slope of y vs x and median y / x over ``pts`` (NaN if < 3 points or a single x)."""
    if not pts:
        return float("nan"), float("nan")
    lx, ly = np.log([p["x"] for p in pts]), np.log([p["y"] for p in pts])
    slope = float(np.polyfit(lx, ly, 1)[0]) if len(pts) >= 3 and np.ptp(lx) > 0 else float("nan")
    return slope, float(np.median(np.exp(ly - lx)))


def run(s: SupportSim, out_dir: str, progress: bool = True, command: str = "") -> dict:
    from fa_jax.plotting.sgd_support import sgd_support_figures

    s = s.validate()
    runs = build_runs(s)  # validates every run config before anything compiles or is written
    os.makedirs(out_dir, exist_ok=True)
    cache = os.path.join(out_dir, "cache")
    _, metrics = run_labelled(run_sgd_support, runs, out_dir=cache, tag=SIM, progress=progress, desc=SIM)
    # every number below comes from the labelled Dataset the sweep wrote, one Dataset per part with dims (<label
    # keys>, step, <output axes>), e.g. sgd: (b, seed, traj, step, input, hidden). The phase part is a sparse grid
    # (its b = N column has phase_gd_seeds seeds): it keeps its run axis, labels b, lr, seed along it, and where
    # its runs record on two plans (the default) `plan` is a variable, NaN-padded: each_run / runs_where cut a
    # run to its own records.
    ds = load_results(cache, sweep=SIM)
    parts = {p: select_runs(ds, p, unstack=p != "phase") for p, items in runs.items() if items}
    gd, sgd_runs, wd, ph = parts["gd"], parts["sgd"], parts["wd"], parts["phase"]
    N, h = s.n_train, int(s.widths[0]) if s.widths else 1
    metrics.update({"n_train": N, "irr_norm_init": _ms(stacked(gd["irr_norm0"], "seed")),
                    "irr_norm_init_expected": T.expected_irr_norm(h, s.d - s.s, s.d)})
    P = T.PROVENANCE
    checks: list[Check] = []
    skipped: dict[str, str] = {}

    def final(r, key="irr") -> float:
        """The last record of output ``records/<key>`` of one run (:func:`each_run`: its own, never padding)."""
        return float(r[f"records/{key}"].values[-1])

    def finals(sub, *dims, key="irr") -> np.ndarray:
        """The last record of output ``records/<key>`` of every run of part Dataset ``sub`` (one plan: no padding),
        float64 ``[run]`` in C order of its label ``dims``."""
        return _flat(sub[f"records/{key}"].isel(step=-1), *dims).astype(float)

    # ---- GD (T2 metric, P1: end-to-end coefficient) and the regime: does GD converge at this lr?
    gsteps = np.asarray(gd["step"].values, float)
    gd_final = finals(gd, "seed")  # [seed]
    t_conv = _rule_converged(stacked(gd["records/loss"], "seed"), gsteps)
    metrics["gd"] = {"final_ratio": _ms(gd_final),
                     "e2e_irrelevant": _ms(finals(gd, "seed", key="e2e_irr")),
                     "e2e_irrelevant_init": _ms(stacked(gd["records/e2e_irr"].isel(step=0), "seed")),
                     "initial_loss": _ms(stacked(gd["records/loss"].isel(step=0), "seed")),
                     "final_loss": _ms(finals(gd, "seed", key="loss")),
                     "final_loss_running_mean": _ms(finals(gd, "seed", key="loss_mean")),
                     "converged_step": t_conv, "freeze_step": [gd_freeze(r) for _, r in each_run(gd, "seed")],
                     "p1_e2e_threshold": T.gd_e2e_threshold(), "t2_plateau": T.gd_plateau_ratio(h)}
    checks.append(Check("support.gd.e2e_irrelevant", metrics["gd"]["e2e_irrelevant"]["mean"], T.gd_e2e_threshold(),
                        0.0, "at_most", P["gd_e2e_threshold"],
                        f"P1/T5: GD fits the function: end-to-end irrelevant coefficient at T={s.gd_steps} (mean "
                        "over init seeds) below the spec's threshold; null = its value at init",
                        null=metrics["gd"]["e2e_irrelevant_init"]["mean"]))

    # ---- SGD per batch size (P2, P3); T3's window on the figure runs as a metric where GD converges
    sgd: dict = {}
    for b in s.batch_sizes:
        sb = sgd_runs.sel(b=b)  # (seed, traj, step, ...)
        preds = [t3_prediction(s, r, b, s.lr) for _, r in each_run(sb, "seed", "traj")]
        steps = np.asarray(sb["step"].values, float)
        ratios = _flat(sb["records/irr"], "seed", "traj")  # [run, step]
        half = [float(steps[np.argmax(rr < 0.5)]) if np.any(rr < 0.5) else float("inf") for rr in ratios]
        sgd[b] = {"final_ratio": _ms(ratios[:, -1]), "t3_final_ratio": _ms([p["pred_ratio"][-1] for p in preds]),
                  "t_half": _ms(half), "support_score": _ms(_flat(sb["support_score"], "seed", "traj")),
                  "e2e_irrelevant": _ms(finals(sb, "seed", "traj", key="e2e_irr")),
                  "final_loss": _ms(finals(sb, "seed", "traj", key="loss")),
                  "final_loss_running_mean": _ms(finals(sb, "seed", "traj", key="loss_mean")),
                  "clip_factor_final": _ms([p["chi"][-1] for p in preds])}
    metrics["sgd"] = {str(b): v for b, v in sgd.items()}

    # ---- T3's primary test: the convergent label-noise family (spec S2/P8), window from its GD's freeze to the
    # run's plateau, inside T3's domain (fa_jax.theory.sgd_support module docstring)
    if s.ln_batch:
        fam_gd, fam = parts["ln_gd"], parts["ln_sgd"]
        fam_b, fam_lr, fam_noise, fam_where = s.ln_batch, s.ln_lr, s.ln_noise, "the label-noise family's runs"
    else:  # the figure runs are the family
        fam_gd, fam = gd, sgd_runs
        fam_b, fam_lr, fam_noise, fam_where = s.batch_sizes, s.lr, s.noise, "the figure runs (this preset's regime)"
    freeze = {lab["seed"]: gd_freeze(r) for lab, r in each_run(fam_gd, "seed")}
    family: dict = {"noise": fam_noise, "lr": fam_lr, "runs": fam_where, "gd_freeze_step": freeze,
                    "gd_final_ratio": _ms(finals(fam_gd, "seed")), "t3_max_batch": T.t3_max_batch()}
    for b in fam_b:
        name = f"support.t3.label_noise_b{b}"
        rb = list(each_run(fam.sel(b=b), "seed", "traj"))
        if any(freeze[lab["seed"]] is None for lab, _ in rb):
            skipped[name] = ("outside T3's domain (i): the same-lr GD run's loss never becomes stationary or its "
                             "W1_irr never freezes")
            continue
        ws = [t3_window(s, r, b, fam_lr, freeze[lab["seed"]], fam_noise) for lab, r in rb]
        fb = {"t_a": _ms([w["t_a"] for w in ws]), "t_b": _ms([w["t_b"] for w in ws]),
              "plateau": [w["plateau"] for w in ws], "measured_exponent": _ms([w["drop"] for w in ws]),
              "t3_exponent": _ms([w["t3"] for w in ws]), "measured_over_t3": _ms([w["ratio"] for w in ws]),
              "mean_sq_residual": _ms([w["mean_sq_residual"] for w in ws]),
              "final_ratio": _ms(finals(fam.sel(b=b), "seed", "traj"))}
        family[str(b)] = fb
        ratio_txt = f"measured/T3 = {fb['measured_over_t3']['median']:.2f}"
        if b > T.t3_max_batch():
            skipped[name] = (f"outside T3's domain (iv): b = {b} > t3_max_batch() = {T.t3_max_batch()}: T3 "
                             f"under-predicts where its 1/b term is small ({ratio_txt}, reported as a metric)")
        elif not all(w["resolved"] for w in ws):
            skipped[name] = f"the decay is not resolved (exponent < t3_min_drop() = {T.t3_min_drop()}) in every run"
        elif not all(w["noise_dominated"] for w in ws):
            skipped[name] = (f"outside T3's domain (iii): window E[r^2] > t3_noise_dominance() * sigma^2 "
                             f"({fb['mean_sq_residual']['median']:.3g} vs sigma^2 = {fam_noise ** 2:.3g})")
        else:
            t3_pred = float(np.median([T.window_exponent(w["steps"], w["kappa"], w["ia"], w["ib"]) for w in ws]))
            checks.append(Check(name, fb["measured_exponent"]["median"], t3_pred,
                                T.t3_rel_tolerance(), "rel", P["t3_decay_rate"],
                                f"T3 on {fam_where} (sigma = {fam_noise:g}, lr = {fam_lr:g}, b = {b}): decay exponent "
                                f"ln r(t_a) - ln r(t_b), median of {len(ws)} runs, window from the same-lr GD run's "
                                f"freeze (t_a = {fb['t_a']['median']:g}) to the run's plateau or T (t_b = "
                                f"{fb['t_b']['median']:g}), vs the sum of kappa = lr c_b E[r^2] u chi over the window "
                                f"from running means of E[r^2] and chi (the run's inputs, never its ratio); "
                                f"{ratio_txt}; tolerance t3_rel_tolerance (spec P8); null 0 = never moved"))
    metrics["label_noise_family"] = family

    bs = sorted(s.batch_sizes)
    if len(bs) >= 2:
        med = [sgd[b]["final_ratio"]["median"] for b in bs]
        sat = T.paper_saturation_ratio()
        ordered = [m_hi > m_lo or max(m_hi, m_lo) <= sat for m_lo, m_hi in itertools.pairwise(med)]
        checks.append(Check("support.sgd.batch_ordering", float(np.mean(ordered)), T.batch_ordering(), 0.0,
                            "at_least", P["batch_ordering"],
                            f"P3: final ratio grows strictly with b (pairs both <= paper_saturation_ratio = {sat:g} "
                            "count as ordered); null 0"))
    below = []
    for seed in range(s.init_seeds):
        g = gd_final[seed]
        for b in s.batch_sizes:
            below.append(np.median(finals(sgd_runs.sel(b=b, seed=seed), "traj")) < g)
    checks.append(Check("support.sgd_below_gd", float(np.mean(below)), T.sgd_below_gd(), 0.0, "at_least",
                        P["sgd_below_gd"],
                        f"T0: fraction of (init seed, b) pairs whose SGD final ratio (median over trajectories) is "
                        f"below GD's from the same init ({len(below)} pairs); null 0 = no pair below"))

    # ---- GD + weight decay: (1 - lr wd)^t on a window after the loss has converged
    wsteps = np.asarray(wd["step"].values, float)
    wmed = np.median(stacked(wd["records/irr"], "seed"), 0)
    t_wconv = _rule_converged(stacked(wd["records/loss"], "seed"), wsteps)
    metrics["gd_wd"] = {"final_ratio": _ms(finals(wd, "seed")), "converged_step": t_wconv,
                        "half_life_theory": T.wd_half_life(s.lr, s.wd), "rate_theory": float(T.wd_rate(s.lr, s.wd))}
    name = "support.gd_wd.irrelevant_ratio"
    if t_wconv is None:
        skipped[name] = "the GD + wd loss never becomes stationary (oscillatory regime): the law's window has no start"
    else:
        # window: from the loss's convergence to the last record a decade above the final ratio (the output-visible
        # direction settles at an O(wd) equilibrium there; a decade above it, it is <= 1 % of the norm)
        i_a = int(np.searchsorted(wsteps, t_wconv))
        above = np.nonzero(wmed >= 10.0 * wmed[-1])[0]
        i_b = int(above[-1]) if above.size else i_a
        if i_b <= i_a:
            skipped[name] = (f"the decay had reached its floor when the loss converged (t = {t_wconv:g}): no window")
        else:
            wd_meas = float(wmed[i_b] / wmed[i_a])
            wd_pred = float(T.wd_ratio(wsteps[i_b] - wsteps[i_a], s.lr, s.wd))
            metrics["gd_wd"].update({"t_ref": float(wsteps[i_a]), "t_eval": float(wsteps[i_b]),
                                     "ratio_at_t_eval": wd_meas, "predicted_at_t_eval": wd_pred})
            checks.append(Check(name, wd_meas, wd_pred, T.wd_rel_tolerance(), "rel", P["wd_ratio"],
                                f"explicit wd: median ratio(t={wsteps[i_b]:g}) / ratio(t={wsteps[i_a]:g}) = "
                                "(1 - lr wd)^dt; window from the loss's convergence (converged_from: every later "
                                "record within 1 % of the final loss) to the last record a decade above the final "
                                "ratio; null 1 = never moved", null=1.0))

    # ---- phase diagram and the eta/b collapse (T1/T3, S1, P8): windows from the same-lr GD column's freeze to each
    # run's plateau; the fit inside T3's domain, noise-floor runs excluded
    ph_noise = s.noise if s.phase_noise is None else s.phase_noise
    gd_col = {}
    for lr in s.phase_lrs:
        fr = [gd_freeze(r) for _, r in labelled_runs(runs_where(ph, b=N, lr=float(lr)))]
        gd_col[float(lr)] = None if not fr or any(f is None for f in fr) else float(max(fr))
    pts = []
    for lab, r in labelled_runs(ph):  # in the order build_runs lists them
        p = {"b": lab["b"], "lr": lab["lr"], "seed": lab["seed"], "final_ratio": final(r),
             "diverged": bool(r["diverged"].values), "final_loss": final(r, "loss"),
             "final_loss_running_mean": final(r, "loss_mean"), "gd_freeze": gd_col[lab["lr"]]}
        if lab["b"] < N:
            t0 = gd_col[lab["lr"]] if gd_col[lab["lr"]] is not None else s.phase1_steps
            p |= collapse_point(s, r, lab["b"], lab["lr"], min(t0, 0.5 * s.phase_steps), ph_noise)
            p["in_domain"] = bool(gd_col[lab["lr"]] is not None and p["b"] <= T.t3_max_batch() and p["resolved"]
                                  and not p["on_floor"] and p["noise_dominated"] and np.isfinite(p["y"])
                                  and p["y"] > 0)
        pts.append(p)
    metrics["phase"] = pts
    sg = [p for p in pts if p["b"] < N]
    good = [p for p in sg if p["in_domain"]]
    off_floor = [p for p in sg if p["resolved"] and not p["on_floor"] and np.isfinite(p["y"]) and p["y"] > 0]
    slope, const = _fit(good)
    slope_all, const_all = _fit(off_floor)
    metrics["collapse"] = {"in_domain": len(good), "resolved_off_floor": len(off_floor),
                           "on_floor": sum(p["on_floor"] for p in sg), "points": len(sg),
                           "gd_freeze_step_per_lr": {str(k): v for k, v in gd_col.items()},
                           "slope": slope, "median_y_over_x": const,
                           # every resolved run off its noise floor, in T3's domain or not (issue 17: excluding
                           # the floor runs moves the default's fitted exponent 0.39 -> 0.72)
                           "slope_resolved_off_floor": slope_all, "median_y_over_x_resolved_off_floor": const_all}
    why = ("outside T3's domain: no phase run has a converging lr (its GD column freezes), b <= t3_max_batch() = "
           f"{T.t3_max_batch()}, a resolved decay off its noise floor and E[r^2] <= t3_noise_dominance() sigma^2"
           if not good else f"only {len(good)} phase runs inside T3's domain or a single x value: no slope")
    if np.isfinite(slope):
        checks.append(Check("support.decay_vs_eta_over_b", slope, T.collapse_slope(), T.collapse_slope_tolerance(),
                            "rel", P["collapse_slope"],
                            f"T3/P8: log-log slope of the normalised decay y vs c_b = (lr/b)(N-b)/(N-1) over the "
                            f"{len(good)} phase runs inside T3's domain (noise-floor runs excluded); tolerance spec "
                            "P8 (+-0.5); null 0 = decay independent of lr/b"))
    else:
        skipped["support.decay_vs_eta_over_b"] = why
    if good:
        checks.append(Check("support.decay_t3_constant", const, T.collapse_constant(), T.t3_rel_tolerance(), "rel",
                            P["collapse_constant"],
                            f"T3/P8: median measured / T3 decay exponent over the {len(good)} phase runs inside T3's "
                            "domain; null 0 = no decay"))
    else:
        skipped["support.decay_t3_constant"] = why

    # ---- the paper's figure values (P1-P3), per init seed, only where this run IS the paper's setting
    if paper_setting(s):
        for which in ["gd", *s.batch_sizes]:
            if T.paper_value(which) is None:
                continue
            lo, hi = T.paper_ratios(which)
            tol = T.paper_seed_rel_tolerance(which)
            for seed in range(s.init_seeds):
                if which == "gd":
                    v, nm, what = float(gd_final[seed]), f"support.paper.gd_ratio.seed{seed}", f"GD at T={s.gd_steps}"
                else:
                    v = float(np.median(finals(sgd_runs.sel(b=which, seed=seed), "traj")))
                    nm, what = f"support.paper.sgd_b{which}_ratio.seed{seed}", f"SGD b={which} at T={s.sgd_steps}"
                where = ("P1" if which == "gd" else "P2/P3")
                if tol is None:
                    checks.append(Check(nm, v, T.paper_value(which), 0.0, "at_most", P["paper_value"],
                                        f"{where}: {what}, init seed {seed} (median over trajectories), at most the "
                                        f"saturated value read off the official figure ({lo}, {hi}); null 1 = never "
                                        "moved", null=1.0))
                else:
                    checks.append(Check(nm, v, T.paper_value(which), tol, "rel", P["paper_value"],
                                        f"{where}: {what}, init seed {seed} (median over trajectories) vs the centre "
                                        f"of the range read off the official figure ({lo}, {hi}); tolerance = "
                                        "reading precision + measured init-seed spread (paper_seed_rel_tolerance); "
                                        "null 1 = never moved", null=1.0))
    else:
        skipped["support.paper.*"] = ("the official figures' ratios (P1-P3) describe the paper's setting only "
                                      "(linear, N = 1e4, lr 0.1, sigma 1e-3, 2e4 / 2e5 steps)")

    t3 = {b: [t3_prediction(s, r, b, s.lr, t_conv) for _, r in each_run(sgd_runs.sel(b=b), "seed", "traj")]
          for b in s.batch_sizes}  # the T3 overlays of figure 1, runs in (seed, traj) order
    figs = sgd_support_figures(out_dir, s, parts, metrics, t3)
    metrics["figures"] = figs
    return finish(out_dir, sim=SIM, config=s, checks=checks, metrics=metrics, command=command,
                  not_evaluated=skipped)
