"""One run of the feature-averaging experiment (arXiv 2410.10322), as a pure function of its config.

``run_feature_averaging(cfg)`` generates the cluster data, initialises a binary or multi-class two-layer net,
trains it with the scan trainer and returns every metric the sim needs. Traced fields (seeds, lr, init scale,
sigma, split, width inside its bucket, cluster count k and super-class count g inside their cluster bucket) may be
tracers: the sweep engine vmaps this function over runs.

Keys: data from fold_in(PRNGKey(data_seed), 1); init/batches/attacks from fold_in(PRNGKey(model_seed), 2) and
its sub-streams. A run's numbers depend only on its own config, never on its position in a sweep.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

from ..config import check_fields, require, traced
from ..data.clusters import ClusterData, make_cluster_data
from ..losses import cross_entropy, logistic
from ..metrics import features as F
from ..metrics import robustness as R
from ..models.two_layer import (
    TwoLayerNet,
    apply_two_layer,
    head,
    hidden,
    init_two_layer,
    neuron_group,
    neuron_mask,
    readout_matrix,
)
from ..optim import OptimConfig, inert_fields, make_optimizer
from ..trainer import TrainConfig, record_plan, train

OBJECTIVES = ("margin", "ce")
# The multi-class net's attacks walk one PGD loop, each switching to its own read-out and objective
# (run_feature_averaging, switched_fns). False: a vmap over the attacks that computes every read-out and the CE for
# each (~3x the work; the same numbers): the reference tests/test_experiments_feature_averaging.py compares with.
_SWITCH_ATTACKS = True


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    steps: int = 40  # PGD steps; alpha = rel_step * eps / steps
    restarts: int = 5
    rel_step: float = 2.5
    n_points: int = 1000  # test points attacked (the first n_points of the test set)
    eps_max: float = 1.6  # eps grid ends at eps_max * sqrt(d/2)
    eps_step: float = 0.05  # grid step = eps_step * sqrt(d/k)
    ce: bool = True  # multi-class: also attack the native CE loss (success judged on each read-out)
    flip_grid: int = 128
    direction_eps: float = 1.15  # attack-direction probe at direction_eps * sqrt(d/k)
    record_points: int = 200  # test points for the flip radius recorded during training

    def validate(self, n_test: int) -> AttackConfig:
        check_fields(self, prefix="attack.")  # types first: the range checks below compare numbers
        require(self.steps >= 1, "attack.steps", "an integer >= 1", self.steps)
        require(self.restarts >= 1, "attack.restarts", "an integer >= 1", self.restarts)
        require(1 <= self.n_points <= n_test, "attack.n_points", f"1 <= n_points <= n_test = {n_test}",
                self.n_points)
        require(1 <= self.record_points <= n_test, "attack.record_points",
                f"1 <= record_points <= n_test = {n_test}", self.record_points)
        require(self.eps_max > 0 and self.eps_step > 0, "attack.eps_max/eps_step", "numbers > 0",
                (self.eps_max, self.eps_step))
        require(self.rel_step > 0, "attack.rel_step", "a number > 0", self.rel_step)
        return self


@dataclasses.dataclass(frozen=True)
class FARun:
    data: ClusterData = ClusterData()
    model: TwoLayerNet = TwoLayerNet()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    attack: AttackConfig = AttackConfig()
    data_seed: int = traced(0)
    model_seed: int = traced(0)

    def validate(self) -> FARun:
        check_fields(self)  # types first: the range checks below compare numbers
        data = self.data.validate()
        model = self.model.validate()
        self.optim.validate(self.data.n_train)
        self.train.validate()
        self.attack.validate(self.data.n_test)
        require(self.model.kind == "multiclass" or self.data.groups is None, "data.groups",
                "None for the binary model (super-classes need kind='multiclass')", self.data.groups)
        # ``attack.ce`` only exists for the multi-class net: pin it off for the binary one so an irrelevant flag
        # never splits programs (the same normalisation as the model's bucket).
        attack = self.attack if model.kind == "multiclass" else dataclasses.replace(self.attack, ce=False)
        return dataclasses.replace(self, data=data, model=model, attack=attack)

    def inert(self) -> dict[str, str]:
        """``{dotted.path: reason}`` of fields that cannot change this run (a sweep axis over them is refused)."""
        out = {f"optim.{k}": v for k, v in inert_fields(self.optim).items()}
        if self.model.kind == "binary":
            out["attack.ce"] = "the binary net has no cross-entropy attack"
        out["model.bucket"] = "the padded width is set by the sweep's bucket policy, not swept"
        out["data.bucket"] = "the cluster slots are a program shape (a padded run equals the unpadded one), not swept"
        return out


def _eps_points(d: int, k: int, a: AttackConfig) -> int:
    """Points of the uniform grid 0 .. eps_max sqrt(d/2) with step <= eps_step sqrt(d/k) (host arithmetic)."""
    return int(math.ceil(a.eps_max * math.sqrt(d / 2) / (a.eps_step * math.sqrt(d / k)))) + 1

def eps_grid(cfg: FARun) -> jax.Array:
    """``(eps,)``: the uniform grid 0 .. eps_max sqrt(d/2) of n(k) points, step <= eps_step sqrt(d/k), padded to the
    static length n(K) of the cluster bucket by repeating its end point (k may be traced: runs of one bucket share
    the program; a repeated radius repeats the same attack, so the r50 crossing is unchanged)."""
    d, k, a = cfg.data.d, cfg.data.k, cfg.attack
    top = a.eps_max * math.sqrt(d / 2)
    n = eps_count(cfg)
    i = jnp.arange(_eps_points(d, cfg.data.padded, a))
    return top * jnp.minimum(i, n - 1) / (n - 1)


def eps_count(cfg: FARun) -> jax.Array:
    """n(k), the number of distinct radii in :func:`eps_grid` (k may be traced): the host's count for every k the
    cluster bucket holds, looked up (float32 arithmetic could round ceil() apart from the host's)."""
    d, k, a = cfg.data.d, cfg.data.k, cfg.attack
    return jnp.asarray([_eps_points(d, max(kk, 2), a) for kk in range(cfg.data.padded + 1)])[k]


def readouts(cfg: FARun) -> tuple[str, ...]:
    return ("binary",) if cfg.model.kind == "binary" else ("sum", "max")


def main_readout(cfg: FARun) -> str:
    return "binary" if cfg.model.kind == "binary" else "max"


def readout_net(name: str) -> str:
    """The net whose runs report read-out or attack ``name`` (outputs ``robust/<name>/...``, ``clean/<name>``):
    ``binary`` (sgn f) the binary net's, every other one (:func:`readouts`, their CE attacks ``<r>_ce``) the
    multi-class net's; ``load_results`` NaN-pads each over the other net's runs. The same rule labels the
    real-image runs (:mod:`fa_jax.experiments.feature_averaging_real`: its ``head`` label, values ``binary`` /
    ``multiclass``; read-outs ``lse``, ``sum``, ``max``, ``argmax`` and their attacks)."""
    return "binary" if name == "binary" else "multiclass"


def fa_data(cfg: FARun) -> dict:
    """The run's data stage (``run_sweep(data=...)``; fa_jax.sweep, "Generated data shared by runs"): the
    clusters, training and test sets of ``data_seed`` (:func:`fa_jax.data.clusters.make_cluster_data`)."""
    return make_cluster_data(jax.random.fold_in(jax.random.PRNGKey(cfg.data_seed), 1), cfg.data)


def run_feature_averaging(cfg: FARun, data: dict | None = None) -> dict:
    """Train one net and measure it. Shapes below: k clusters, c outputs, N neurons (padded), E eps values.

    ``data``: :func:`fa_data` of this config, drawn once for the runs that share it (the sweep engine's data
    stage); None: drawn here (the same operations: the program of a sweep without a data stage is unchanged)."""
    dc, mc = cfg.data, cfg.model
    c, classes = dc.n_classes, dc.classes  # static outputs (the cluster bucket); the real classes (maybe traced)
    data = fa_data(cfg) if data is None else data
    mkey = jax.random.fold_in(jax.random.PRNGKey(cfg.model_seed), 2)
    k_init, k_batch, k_attack = (jax.random.fold_in(mkey, i) for i in range(3))
    centres, signs = data["centres"], data["signs"]
    A = readout_matrix(mc, c, classes)
    mask = neuron_mask(mc, c, classes)
    live_out = jnp.arange(c) < classes  # multi-class outputs of real classes (the rest: a bucket's padding)
    # binary class of each output (multi-class; 0 for padding outputs, which leaves them out of every read-out)
    sup_sign = jnp.where(live_out, signs[jnp.minimum(jnp.arange(c) * (dc.k // classes), c - 1)], 0.0)
    binary = mc.kind == "binary"

    params0 = init_two_layer(k_init, mc, dc.d, c)

    def masked_ce(out, lab):
        """Cross-entropy over the real classes: a padding output's logit is -inf (probability 0, no gradient)."""
        return cross_entropy(jnp.where(live_out, out, -jnp.inf), lab)

    def outputs(p, x):
        return apply_two_layer(p, x, A)

    if binary:
        def loss_fn(p, x, lab):
            return logistic(outputs(p, x)[:, 0], lab)
        tr_y = data["train"]["y"]
    else:
        def loss_fn(p, x, lab):
            return masked_ce(outputs(p, x), lab)
        tr_y = data["train"]["label"]

    v0 = signs @ centres  # sum_{J+} mu - sum_{J-} mu, norm sqrt(k d)
    vhat = v0 / jnp.linalg.norm(v0)
    test = data["test"]
    main = main_readout(cfg)
    t_max = 2.0 * math.sqrt(dc.d)

    side = jnp.where(neuron_group(mc, c) == 0, 1.0, -1.0)  # binary: +1 for the + side
    block = data["superclass"][:, None] == jnp.arange(c)[None, :]  # multi-class: cluster j feeds output q

    def features(p):
        if binary:
            return F.binary_feature_summary(centres, p["w"], signs, side, mask)
        cosm = F.cosine_matrix(centres, A @ p["w"])  # equivalent weight (1/h) sum_r w_{q,r} per output
        return {**F.block_summary(cosm, block.astype(cosm.dtype), live_out.astype(cosm.dtype), rows=data["live"]),
                "cos": cosm}

    def margin_along_v(p, x, y, kind, n):
        """Exact flip radius along v(x) = -y vhat for the first n points."""
        z0 = hidden(p, x[:n])
        wv = p["w"] @ vhat

        def ray(t):
            pre = z0 - (y[:n] * t)[:, None] * wv[None, :]
            return y[:n] * R.binary_readout(head(pre, A), sup_sign, kind)

        return R.flip_radius(ray, n, t_max, cfg.attack.flip_grid)

    def record_fn(p):
        fte = R.binary_readout(outputs(p, test["x"]), sup_sign, main)
        r = margin_along_v(p, test["x"], test["y"], main, cfg.attack.record_points)
        return {"loss": jnp.mean(loss_fn(p, data["train"]["x"], tr_y)), "test_acc": jnp.mean(fte * test["y"] > 0),
                "cos_in": features(p)["in_mean"], "flip_median": jnp.median(r)}

    plan = record_plan(cfg.train.steps, cfg.train.n_records, cfg.train.plan)
    opt = make_optimizer(cfg.optim)
    params, records, diverged_step = train(loss_fn, params0, data["train"]["x"], tr_y, opt, plan=plan,
                                           record_fn=record_fn, key=k_batch, batch_size=cfg.optim.batch_size,
                                           sampling=cfg.optim.sampling)

    res: dict = {"records": records, "plan": jnp.asarray(plan)}
    # The trainer froze a diverged run at its last finite parameters; the sweep engine NaNs its final metrics.
    res["diverged_step"] = diverged_step
    res["diverged"] = diverged_step >= 0
    res["movement"] = F.relative_movement(params["w"], params0["w"], mask)
    res["neuron_norm"] = F.masked_mean(jnp.linalg.norm(params["w"], axis=1), mask)  # mean ||w_r||
    pair_live = data["live"][:, None] & data["live"][None, :]  # real clusters only
    res["centre_orthogonality"] = jnp.max(jnp.where(pair_live, jnp.abs(centres @ centres.T - dc.d * jnp.eye(c)),
                                                    0.0)) / dc.d

    res["features"] = features(params)
    if "b" in params:
        res["bias_mean_abs"] = F.masked_mean(jnp.abs(params["b"]), mask)

    # ---- robustness
    n = cfg.attack.n_points
    xa, ya, la = test["x"][:n], test["y"][:n], test["label"][:n]
    z0, wq, q = R.reduce_two_layer(params, xa, extra=vhat[None, :])
    eps, n_eps = eps_grid(cfg), eps_count(cfg)

    # Every (read-out, objective) attack runs through ONE PGD loop in the program (compiled once, not per attack).
    kinds = readouts(cfg)
    attacks = [(kind, "margin") for kind in kinds]
    if not binary and cfg.attack.ce:
        attacks += [(kind, "ce") for kind in kinds]
    use_ce = any(obj == "ce" for _, obj in attacks)
    kind_idx = jnp.asarray([kinds.index(a[0]) for a in attacks])
    obj_idx = jnp.asarray([OBJECTIVES.index(a[1]) for a in attacks])

    def out_of(delta):
        """Outputs ``(points, c)`` at the perturbation ``delta (points, p)`` in reduced coordinates."""
        return head(z0 + delta @ wq.T, A)

    def make_fns(ki, oi):
        def margin(delta):
            o = out_of(delta)
            return ya * jnp.stack([R.binary_readout(o, sup_sign, r) for r in kinds])[ki]

        def loss(delta):
            # Ascending softplus(-margin) and descending the margin give the same normalised step; using the
            # margin directly avoids the sigmoid factor underflowing (false robustness) at large margins.
            if not use_ce:
                return -margin(delta)
            return jnp.where(oi == 0, -margin(delta), masked_ce(out_of(delta), la))

        return margin, loss

    k_start = jax.random.split(k_attack, cfg.attack.restarts)
    starts = lax.map(lambda kk: R.reduced_ball_start(kk, q, n), k_start)  # unit ball, (restarts, n, p)

    def switched_fns(ki, oi):
        """``make_fns`` for several attacks, walked by ``lax.map``: ``ki``, ``oi`` are un-batched there, so
        ``lax.switch`` runs only this attack's read-out and objective. (A vmap over the attacks computes every
        read-out and the CE, and their gradients, for each of them: the multi-class net's PGD did ~3x the work,
        140 of the default preset's 458 s in its 8 main runs.)"""
        def margin_of(kind):
            return lambda delta: ya * R.binary_readout(out_of(delta), sup_sign, kind)

        def margin(delta):
            return lax.switch(ki, [margin_of(kind) for kind in kinds], delta)

        def loss(delta):
            if not use_ce:
                return -margin(delta)
            return lax.switch(oi, [lambda d: -margin(d), lambda d: masked_ce(out_of(d), la)], delta)

        return margin, loss

    def attack(ki, oi, fns=make_fns):
        margin, loss = fns(ki, oi)
        # a run whose k is below its cluster bucket's repeats its last radius: those attacks are not run again
        acc, _ = R.robust_accuracy_curve(margin, loss, eps, starts, steps=cfg.attack.steps,
                                         rel_step=cfg.attack.rel_step, n_eps=n_eps)
        r50, cens = R.crossing(eps, acc)
        return {"acc": acc, "r50": r50, "r50_censored": cens, "clean_acc": jnp.mean(margin(starts[0] * 0) > 0)}

    if len(attacks) == 1 or not _SWITCH_ATTACKS:  # the binary net: its one attack
        curves = jax.vmap(attack)(kind_idx, obj_idx)
    else:  # one attack after the other, each computing only its own read-out and objective (switched_fns)
        curves = lax.map(lambda io: attack(*io, fns=switched_fns), (kind_idx, obj_idx))
    res["eps"] = eps
    rob = {}
    for i, (kind, obj) in enumerate(attacks):
        name = kind if obj == "margin" else f"{kind}_ce"
        rob[name] = jax.tree.map(lambda a: a[i], curves)
    res["robust"] = rob
    for kind in kinds:
        rob[kind]["flip"] = margin_along_v(params, test["x"], test["y"], kind, n)

    # ---- attack geometry (main read-out): direction of successful PGD perturbations vs v(x)
    margin, loss = make_fns(kinds.index(main), 0)
    e_dir = cfg.attack.direction_eps * jnp.sqrt(dc.d / dc.k)
    _, final, _ = R.pgd(margin, loss, e_dir * starts[0], e_dir, cfg.attack.steps,
                        cfg.attack.rel_step * e_dir / cfg.attack.steps)
    v_coord = q.T @ vhat  # vhat lies in span(Q): exact coordinates
    dir_cos = -ya * (final[:, :-1] @ v_coord) / jnp.maximum(jnp.linalg.norm(final, axis=1), 1e-30)
    success = margin(final) <= 0
    res["attack_direction"] = {"cos": dir_cos, "success": success}
    # clean-point input gradient vs the averaged direction
    gx = jax.grad(lambda x: jnp.sum(R.binary_readout(outputs(params, x), sup_sign, main)))(xa)
    res["grad_cos"] = (gx @ vhat) / jnp.maximum(jnp.linalg.norm(gx, axis=1), 1e-30)
    res["test_y"] = ya
    return res
