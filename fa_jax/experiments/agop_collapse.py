"""Run functions of the AGOP / deep-neural-collapse simulation (arXiv 2402.13728, spec ``agop_collapse.md``).

ONE run function, :func:`run_agop_collapse`, dispatches on the static ``kind`` so a simulation's Deep RFM runs and
its MLP runs go through one :func:`fa_jax.sweep.run_labelled` call (one compiled program per static group):

* ``kind="deep_rfm"``: Deep RFM (:func:`fa_jax.kernels.rfm.deep_rfm`) of ``rfm.depth`` layers on the training set;
  per layer the NC metrics of the stages ``x`` (X_l), ``z`` (X_l M_l^s), ``phi`` (Phi(X_l M_l^s)) and the AGOP's
  top-K trace fraction. Bandwidth, ridge, power s, gamma, the AGOP on/off switch and the feature seed are traced:
  a ridge x bandwidth grid is one program, and the depth axis of a depth x ridge x bandwidth phase diagram is read
  off the layers of one run (layer l of a deep run IS the last layer of a depth-l run: the layers are sequential and
  layer l's features come from fold_in(feature key, l)).
* ``kind="mlp"``: the bias-free ReLU MLP of :mod:`fa_jax.models.mlp` (Xavier-uniform init with gain
  ``model.init_scale``, PyTorch head init) trained by :func:`fa_jax.trainer.train` on MSE against +-1 one-hot
  targets (mean over the K outputs per sample), optimiser from :mod:`fa_jax.optim`. ``record_fn`` at every plan
  entry (float64 metrics on float32 training): the training loss and accuracy (argmax of the K outputs); per
  hidden layer l the NC metrics of the stages phi (layer input), svt (S V^T phi), pre (U S V^T phi) and out
  (ReLU(pre)); frac_right_l; the NFA correlations
  rho(W_l^T W_l, AGOP_l^alpha) for alpha in (1/2, 1), the AGOP taken over all training points (``n_agop = 0``,
  as the official ``nc_nn.py``) or ``n_agop`` class-balanced ones; and tr Sigma_W / tr Sigma_T,
  tr Sigma_B / tr Sigma_T at the last hidden layer.

Data (``data``): ``source="mixture"`` draws :class:`fa_jax.data.mixture.GaussianMixture` inside the program (its
seed, separation and noise are traced); ``source="mnist-5k"`` (or another :data:`fa_jax.data.images.DATASETS`
name whose files are present) loads the train split once, takes ``n_per_class`` per class (stratified, seeded),
flattens, standardises each pixel with the training mean and std (constant pixels -> 0), sorts by class. Through
the sweep engine those arrays are the group's shared inputs (:func:`shared_collapse_data`, the ``Experiment``'s
``shared``): unbatched arguments of the compiled program, never constants baked into it; the mixture has none
(``{}``: its programs are those without shared inputs). Called directly without ``arrays``
(``run_agop_collapse(cfg)``) a run loads them itself, as constants. Targets are +-1 one-hot (y = 2 e_c - 1).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..config import check_fields, require, traced
from ..data.mixture import GaussianMixture, pm_one_hot, sample_mixture
from ..kernels import rfm as R
from ..metrics import agop as A
from ..metrics import collapse as C
from ..models.mlp import MLP, apply_mlp, init_mlp
from ..optim import OptimConfig, make_optimizer
from ..trainer import TrainConfig, record_plan, train

__all__ = ["AgopCollapseRun", "CollapseData", "DeepRFMSpec", "MLPSpec", "lapack_single_threaded",
           "load_collapse_data", "make_data", "run_agop_collapse", "shared_collapse_data"]

KINDS = ("deep_rfm", "mlp")
_OPT_TRACED = ("lr", "momentum", "b1", "b2", "eps", "decay", "weight_decay", "clip_norm")
SOURCES = ("mixture", "mnist-5k", "mnist", "fashion-mnist", "cifar10", "digits")


@dataclasses.dataclass(frozen=True)
class CollapseData:
    source: str = "mixture"
    mixture: GaussianMixture = dataclasses.field(default_factory=GaussianMixture)
    n_per_class: int = 100  # image sources: samples per class (static: a shape)
    subset_seed: int = 0  # image sources: which samples (static: the arrays are the program's shared inputs)

    @property
    def k(self) -> int:
        return self.mixture.k if self.source == "mixture" else 10

    @property
    def n(self) -> int:
        return self.mixture.n if self.source == "mixture" else 10 * self.n_per_class

    @property
    def d(self) -> int:
        if self.source == "mixture":
            return self.mixture.d
        return int(np.prod(load_collapse_data(self.source, self.n_per_class, self.subset_seed)[0].shape[1:]))

    def validate(self) -> CollapseData:
        check_fields(self, prefix="data.")  # types first: the range checks below compare numbers
        require(self.source in SOURCES, "data.source", f"one of {SOURCES}", self.source)
        if self.source == "mixture":
            self.mixture.validate()
        else:
            require(isinstance(self.n_per_class, int) and self.n_per_class >= 2, "data.n_per_class",
                    "an integer >= 2", self.n_per_class)
        return self


@dataclasses.dataclass(frozen=True)
class DeepRFMSpec:
    depth: int = 8
    kernel: str = "laplace"
    bandwidth: float = traced(2.0)
    ridge: float = traced(1e-3)  # explicit kernel ridge mu (the official code's reg is silently 1e-3)
    power: float = traced(0.5)  # s in Z = X M^s
    use_agop: float = traced(1.0)  # 1: the AGOP projection; 0: the M = I control
    feature: str = "relu"
    gamma: float = traced(0.5)  # cosine RFF scale (Cauchy(0, gamma) weights)
    width: int = 0  # relu: width (0 = input dim); cos: D (0 = input dim, the official code)
    normalise: str = "max"
    feature_seed: int = traced(0)
    chunk_size: int = 128

    def validate(self) -> DeepRFMSpec:
        check_fields(self, prefix="rfm.")  # types first: the range checks below compare numbers
        require(isinstance(self.depth, int) and self.depth >= 1, "rfm.depth", "an integer >= 1", self.depth)
        require(self.kernel in R.KERNELS, "rfm.kernel", f"one of {R.KERNELS}", self.kernel)
        require(self.feature in R.FEATURES, "rfm.feature", f"one of {R.FEATURES}", self.feature)
        require(self.normalise in R.NORMALISATIONS, "rfm.normalise", f"one of {R.NORMALISATIONS}", self.normalise)
        require(math.isfinite(float(self.bandwidth)) and float(self.bandwidth) > 0, "rfm.bandwidth",
                "a finite number > 0", self.bandwidth)
        require(math.isfinite(float(self.ridge)) and float(self.ridge) >= 0, "rfm.ridge", "a finite number >= 0",
                self.ridge)
        require(0 < float(self.power) <= 2, "rfm.power", "0 < power <= 2 (1/4, 1/2, 1 in the spec)", self.power)
        require(float(self.use_agop) in (0.0, 1.0), "rfm.use_agop", "0 (M = I control) or 1", self.use_agop)
        require(float(self.gamma) > 0, "rfm.gamma", "a number > 0", self.gamma)
        require(isinstance(self.width, int) and self.width >= 0, "rfm.width", "an integer >= 0 (0: input dim)",
                self.width)
        require(isinstance(self.chunk_size, int) and self.chunk_size >= 1, "rfm.chunk_size", "an integer >= 1",
                self.chunk_size)
        return self


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    model: MLP = dataclasses.field(default_factory=lambda: MLP(widths=(512,) * 5, activation="relu",
                                                               init_scale=0.1, init="xavier_uniform"))
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(name="adam", lr=5e-5,
                                                                               batch_size=128))
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(steps=1000, n_records=11,
                                                                               plan="linear"))
    n_agop: int = 0  # training points of the per-layer AGOP (NFA): 0 = all (official nc_nn.py), else class-balanced
    seed: int = traced(0)

    def validate(self, n_train: int | None = None) -> MLPSpec:
        check_fields(self, prefix="mlp.")  # types first: the range checks below compare numbers
        m = self.model.validate()
        require(m.activation == "relu" and len(m.widths) >= 1, "mlp.model",
                "a ReLU MLP with >= 1 hidden layer", (m.activation, m.widths))
        self.optim.validate(n_train)
        self.train.validate()
        require(isinstance(self.n_agop, int) and (self.n_agop == 0 or self.n_agop >= 2), "mlp.n_agop",
                "0 (all training points) or an integer >= 2", self.n_agop)
        if n_train is not None:
            require(self.n_agop <= n_train, "mlp.n_agop", f"<= n_train = {n_train}", self.n_agop)
        return dataclasses.replace(self, model=m)


@dataclasses.dataclass(frozen=True)
class AgopCollapseRun:
    kind: str = "deep_rfm"
    data: CollapseData = dataclasses.field(default_factory=CollapseData)
    rfm: DeepRFMSpec = dataclasses.field(default_factory=DeepRFMSpec)
    mlp: MLPSpec = dataclasses.field(default_factory=MLPSpec)

    def validate(self, check_memory: bool = True) -> AgopCollapseRun:
        check_fields(self)  # types first: the range checks below compare numbers
        require(self.kind in KINDS, "kind", f"one of {KINDS}", self.kind)
        data = self.data.validate()
        if self.kind == "deep_rfm":
            self.rfm.validate()
            if check_memory:
                R.check_kernel_memory(data.n, dtype=jnp.float64)
            return self
        return dataclasses.replace(self, mlp=self.mlp.validate(data.n))


@contextlib.contextmanager
def lapack_single_threaded():
    """Run compiled programs with scipy's OpenBLAS (whose LAPACK jaxlib's CPU eigh / svd / cholesky kernels call)
    limited to one thread. Why: XLA may run two independent LAPACK calls of one program concurrently (e.g. the
    vmapped SVD and eigh of a record), and with a multi-threaded OpenBLAS that deadlocks (observed: jax 0.10.2,
    2 CPU cores, every thread parked on a futex). Uses threadpoolctl when installed, else does nothing."""
    try:
        import scipy.linalg  # noqa: F401  (loads the OpenBLAS so that threadpoolctl can see it)
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@functools.lru_cache(maxsize=8)
def load_collapse_data(source: str, n_per_class: int, subset_seed: int):
    """Numpy ``(x (samples, d) float64, labels (samples,) int32)`` of an image source, class-sorted: the train split's
    stratified subset (:func:`fa_jax.data.images.load_split`), each pixel standardised in float64 with its training
    mean and std; a constant pixel becomes 0 (the official preprocessing's 0/0 -> 0: std 0 is stored as 1)."""
    from ..data import images as I

    ds = I.flatten(I.load_split(source, "train", n_per_class=n_per_class, seed=subset_seed))
    st = I.fit_standardizer(ds.x, "feature", eps=np.finfo(np.float64).tiny, dtype=np.float64)
    x = I.standardize(ds.x, st)
    order = np.argsort(ds.y, kind="stable")
    return x[order], ds.y[order].astype(np.int32)


def shared_collapse_data(cfg: AgopCollapseRun) -> dict[str, np.ndarray]:
    """An image source's arrays, ``{"x" (samples, d) float64, "labels" (samples,) int32}`` of
    :func:`load_collapse_data` (they depend only on the static ``cfg.data``): the sweep engine's shared inputs.
    The mixture is drawn inside the program: ``{}`` (no shared inputs)."""
    d = cfg.data
    if d.source == "mixture":
        return {}
    x, labels = load_collapse_data(d.source, d.n_per_class, d.subset_seed)
    return {"x": x, "labels": labels}


def make_data(cfg: CollapseData, dtype=None, arrays: dict | None = None):
    """``(x (samples, d), labels (samples,), y (samples, K) +-1 one-hot)``. ``arrays``: an image source's
    :func:`shared_collapse_data` (program arguments); None: loaded here (constants of the program)."""
    dtype = dtype or jnp.result_type(float)
    if cfg.source == "mixture":
        return sample_mixture(cfg.mixture, dtype=dtype)
    if arrays is None:
        x, labels = load_collapse_data(cfg.source, cfg.n_per_class, cfg.subset_seed)
        # constant data: the barrier keeps XLA from constant-folding products of them at compile time (minutes for
        # a 1000 x 784 set: x x^T etc. would be evaluated by the compiler)
        x = jax.lax.optimization_barrier(jnp.asarray(x, dtype))
    else:  # program arguments: nothing to fold, no barrier
        x, labels = jnp.asarray(arrays["x"], dtype), arrays["labels"]
    labels = jnp.asarray(labels)
    return x, labels, pm_one_hot(labels, 10, dtype)


def _run_deep_rfm(cfg: AgopCollapseRun, x, labels, y) -> dict:
    s = cfg.rfm
    stats, _ = R.deep_rfm(x, y, labels, cfg.data.k, depth=s.depth, key=jax.random.PRNGKey(s.feature_seed),
                          check_memory=False, bandwidth=s.bandwidth, ridge=s.ridge, power=s.power,
                          use_agop=s.use_agop, gamma=s.gamma, kernel=s.kernel, feature=s.feature, width=s.width,
                          normalise=s.normalise, chunk_size=s.chunk_size)
    nc1_x = stats["x"]["nc1"]
    return {"layers": stats, "diverged": ~jnp.all(jnp.isfinite(nc1_x))}


def _balanced_rows(n: int, k: int, m: int) -> np.ndarray:
    """``m`` row indices spread evenly over a class-sorted set of n rows (so every class is represented)."""
    return np.unique(np.linspace(0, n - 1, m).round().astype(int))


def _run_mlp(cfg: AgopCollapseRun, x, labels, y) -> dict:
    s = cfg.mlp
    k = cfg.data.k
    f32 = jnp.float32  # train in float32 (speed); every metric is taken in float64 when x64 is on
    x32, y32 = x.astype(f32), y.astype(f32)
    key = jax.random.PRNGKey(s.seed)
    k_init, k_batch = jax.random.split(key)
    params0 = init_mlp(k_init, s.model, x.shape[1], k, dtype=f32)
    n_hidden = len(s.model.widths)
    # the AGOP points: all of them (n_agop = 0, the official code) or an evenly spread class-balanced subset
    x_agop = x if s.n_agop in (0, x.shape[0]) else x[_balanced_rows(x.shape[0], k, s.n_agop)]
    hi = x.dtype

    def loss_fn(p, xb, yb):
        return jnp.mean((apply_mlp(p, xb, "relu") - yb) ** 2, axis=1)

    def record_fn(p):
        p64 = [w.astype(hi) for w in p]
        stages = C.mlp_stage_features(p64, x, "relu", layers=list(range(n_hidden)))
        # "pre" = U S V^T phi is kept (not skipped as redundant): it is the measured side of the exact U identity
        ms = {name: [C.nc_metrics(st[name], labels, k) for st in stages] for name in ("phi", "svt", "pre", "out")}
        nc = {name: jnp.stack([m["nc1"] for m in v]) for name, v in ms.items()}
        last = ms["out"][-1]
        rho = A.mlp_nfa_correlations(p64, x_agop, "relu", layers=list(range(n_hidden)), alphas=(0.5, 1.0),
                                     chunk_size=64)
        return {"loss": jnp.mean(loss_fn(p64, x, y)),
                "acc": jnp.mean((jnp.argmax(apply_mlp(p64, x, "relu"), axis=1) == labels).astype(hi)),
                "nc1": nc,
                "nc2_out": jnp.stack([m["nc2"] for m in ms["out"]]),
                "nc1_papyan_out": jnp.stack([m["nc1_papyan"] for m in ms["out"]]),
                "frac_right": C.frac_right(nc["phi"], nc["svt"], nc["out"]),
                "nfa_half": rho[0], "nfa_one": rho[1],
                "sw_over_st": last["tr_sw"] / last["tr_st"], "sb_over_st": last["tr_sb"] / last["tr_st"],
                "nc1_head_input": last["nc1"]}

    plan = record_plan(s.train.steps, s.train.n_records, s.train.plan)
    # float32 hyperparameters for float32 parameters (optax's clipping refuses mixed dtypes under x64)
    opt32 = dataclasses.replace(s.optim, **{f: jnp.asarray(getattr(s.optim, f), f32) for f in _OPT_TRACED})
    res = train(loss_fn, params0, x32, y32, make_optimizer(opt32), plan=plan, record_fn=record_fn, key=k_batch,
                batch_size=s.optim.batch_size, sampling=s.optim.sampling)
    return {"records": res.records, "plan": jnp.asarray(plan), "diverged_step": res.diverged_step,
            "diverged": res.diverged_step >= 0}


def run_agop_collapse(cfg: AgopCollapseRun, arrays: dict | None = None) -> dict:
    """One run (see the module docstring); traced config fields may be tracers. ``arrays``: an image source's
    :func:`shared_collapse_data` (the sweep engine passes them as unbatched program arguments; None: loaded here;
    the mixture ignores them)."""
    x, labels, y = make_data(cfg.data, arrays=arrays)
    if cfg.kind == "deep_rfm":
        return _run_deep_rfm(cfg, x, labels, y)
    return _run_mlp(cfg, x, labels, y)
