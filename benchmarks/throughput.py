"""Training throughput of the fa-jax sweep engine against a hand-written ``jit(vmap(train))``, per-run loops and
this machine's matmul peak.

    python -m benchmarks.throughput [--quick] [--json PATH] [--figure PATH]
    python -m benchmarks.throughput --render PATH.json [--figure PATH]   # table (markdown) + figure from a JSON

Workload (issues 6, 19). Feature-averaging data (d=256, k=8 clusters split 4/4, n=512 train points, sigma=1); binary
two-layer ReLU net f(x) = a . ReLU(W x + b) with m=64 neurons per side (N = 2m = 128 neurons, W (N, d), b (N,)),
fixed head a = [+1/m]*m + [-1/m]*m; logistic loss mean_i softplus(-y_i f(x_i)); init N(0, 1e-3^2); lr 0.1.
* ``gd``: full-batch gradient descent, T steps (2000; ``--quick``: 50).
* ``sgd``: mini-batch SGD, b=32 indices drawn iid per step (sampling with replacement), same T.
One run = one seed: the seed sets the data (centres and noise) and the init. Runs R in {1, 16, 64, 256, 1024}
(``--quick``: R <= 256; ``--rs`` takes any list, e.g. up to 65536 on a GPU). Width sweep: m in {16, 32, 64, 128,
256} (quick: {16, 64, 256}), GD, init seeds 0.. on ONE dataset (data seed 0), three ways: one program per width,
every width in ONE padded program (bucket 256, masked neurons) and every width packed on one neuron axis
(:mod:`fa_jax.packing`), at every ``--width-runs`` count of runs per width (the overheads per R).

Implementations, timed in ONE process and interleaved per R (each repetition runs every implementation back to
back, in a rotating order), so that the load of a shared machine affects all alike. Every timed point runs its
call(s) repeatedly until at least ``--min-time`` seconds (default 1 s) have passed; ``*_calls`` in the JSON say
how many calls a point took.
* ``fa_jax``: the engine, ``fa_jax.sweep.run_sweep`` over R configs (``run_training`` below: the package's data
  generator, model, optax optimiser and scan trainer; records the loss at steps 0 and T, divergence guard).
  Compilation is done (and timed) before the timed calls through the engine's own program cache, and
  ``STATS.traces`` checks that no timed call compiles. Chunk sizes (runs per compiled call,
  ``run_sweep(chunk_size=...)``) ``--chunks`` (default 16 and 64; quick: 16) and, unless quick or
  ``--no-all-in-one``, ``R`` are measured; ``fa_jax`` is the best of them, every variant is kept in the JSON.
* ``handwritten``: the reference a user writes by hand, PureJaxRL-style: ``jit(vmap(train))`` over seeds, with its
  own data generator (:func:`handwritten_train`), a ``fori_loop`` over steps, no records and no divergence guard,
  at the same chunk sizes as the engine (one call per chunk of seeds, dispatched back to back, fetched at the end).
  ``ratio_vs_handwritten`` = engine / hand-written (best chunk of each; ``..._same_chunk``: at the engine's best
  chunk). The engine should cost nothing over it (target >= 1.0).
* ``torch_loop``: "the papers' way": a plain PyTorch CPU loop, one run after another (autograd +
  ``torch.optim.SGD``), ``torch.set_num_threads(os.cpu_count())``. Optional (``pip install torch==2.13.0``, the
  CPU wheel); reported as absent (``null`` columns, ``"torch": "absent ..."``) when not installed.
* ``numpy_loop``: a plain NumPy loop with a hand-written forward/backward.
A per-run loop's throughput does not depend on R (its runs are sequential and independent), so the loops time
``min(R, --ref-runs)`` complete runs at every R; ``*_runs_timed`` in the JSON says how many. Every reference's
gradient is checked against fa-jax's (``jax.grad`` of the same loss) on the same data and parameters before
anything is timed (relative error <= 1e-4, full batch and a mini-batch); a disagreement aborts the benchmark.
The references draw their data and init from their own generators (same distributions, same shapes, float32).
Matmul precision: the engine and the hand-written reference both run at ``--precision`` (default ``"highest"``:
float32 matmuls in float32 on GPUs too, no TF32; no effect on CPU).

FLOPs per run-step (matmuls only; element-wise work, data generation and the optimiser update are not counted):
    forward   Z = X_b W^T     2 b d N        f = ReLU(Z + b) a          2 b N
    backward  dW = dZ^T X_b   2 b d N        dZ = (df a^T) * 1[Z>0]       b N  (rank-1 outer product)
    total     b N (4 d + 3),  b = n = 512 (GD) or 32 (SGD),  N = 2m
(no gradient with respect to the inputs is needed). GD: 67,305,472; SGD: 4,206,592 FLOPs per run-step.
% of peak = run-steps/s * FLOPs per run-step / peak, where the peak is the best float32 GFLOP/s measured in the same
run on a large square matmul: on CPU the best of NumPy, ``jax.jit(jnp.dot)`` and torch (when installed); on an
accelerator the device's own ``jnp.dot`` at precision "highest" (the sgemm peak; ``jax_default`` in the JSON is the
backend's default precision, TF32 on recent NVIDIA GPUs, for comparison). The roofline drawn in the figure is
peak / FLOPs per run-step.

Targets from issue 19 (REPORTED as met / not met, never asserted): engine >= 1.0x the hand-written reference; GD at
R >= 16: >= 80 % of peak and >= 2x the NumPy loop; SGD at R >= 64: >= 5x the NumPy loop; width sweep packed <=
1.3x one program per width; compile <= 2 s per program; on a GPU, GD >= 50 % of the fp32 peak at R >= 4096.

Outputs: a table on stdout, ``--json`` (written after every measured point, so an interrupted run keeps what it
measured; keys per mode and R, see :func:`bench_mode`), ``--figure`` (default figures/benchmark_throughput.png) and
``--markdown`` (the docs/performance.md table, :func:`markdown_table`). This is a benchmark, not a test: nothing
here is asserted except the gradient agreement of the references.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import functools
import json
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from fa_jax import sweep as _sweep
from fa_jax.config import traced
from fa_jax.data.clusters import ClusterData, make_cluster_data
from fa_jax.losses import logistic
from fa_jax.models.two_layer import (TwoLayerNet, apply_two_layer, apply_two_layer_packed, init_two_layer,
                                     init_two_layer_packed, readout_matrix, readout_matrix_packed)
from fa_jax.packing import Pack, plan_slots, run_packed
from fa_jax.optim import OptimConfig, make_optimizer
from fa_jax.summary import device as _device
from fa_jax.summary import versions as _versions
from fa_jax.trainer import train

try:  # optional benchmark dependency
    import torch
    import torch.nn.functional as TF
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

# ----------------------------------------------------------------------------- the canonical workload
D, K, N_POS, N_TRAIN, SIGMA = 256, 8, 4, 512, 1.0
WIDTH, INIT_SCALE, LR, BATCH = 64, 1e-3, 0.1, 32
R_FULL, R_QUICK = (1, 16, 64, 256, 1024), (1, 16, 64, 256)
STEPS_FULL, STEPS_QUICK = 2000, 50
WIDTHS = (16, 32, 64, 128, 256)
WIDTHS_QUICK = (16, 64, 256)
WARMUP_MAX = 64  # programs of at most this many runs get one untimed warm-up call
TOL = 1e-4  # relative gradient agreement required of the references
MIN_TIME = 1.0  # seconds: every timed point repeats its call(s) at least this long
IMPLS = ("fa_jax", "handwritten", "numpy_loop", "torch_loop")


def flops_per_step(batch: int, width: int = WIDTH, d: int = D) -> int:
    """Matmul FLOPs of one forward+backward of the binary two-layer net on ``batch`` points: b N (4 d + 3)."""
    n_neurons = 2 * width
    return batch * n_neurons * (4 * d + 3)


@dataclasses.dataclass(frozen=True)
class BenchRun:
    """One benchmark run: pure training, no attacks (``seed`` is the only traced field swept here)."""

    data: ClusterData = dataclasses.field(
        default_factory=lambda: ClusterData(d=D, k=K, n_pos=N_POS, n_train=N_TRAIN, n_test=1, sigma=SIGMA))
    model: TwoLayerNet = dataclasses.field(
        default_factory=lambda: TwoLayerNet(kind="binary", width=WIDTH, bias=True, init_scale=INIT_SCALE))
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(name="gd", lr=LR))
    steps: int = 2000
    seed: int = traced(0)

    def validate(self) -> BenchRun:
        self.data.validate()
        self.optim.validate(self.data.n_train)
        return dataclasses.replace(self, model=self.model.validate())


def bench_config(mode: str, steps: int, seed: int = 0, width: int = WIDTH, bucket: int | None = None) -> BenchRun:
    optim = OptimConfig(name="gd", lr=LR) if mode == "gd" else \
        OptimConfig(name="sgd", lr=LR, batch_size=BATCH, sampling="replacement")
    model = TwoLayerNet(kind="binary", width=width, bucket=bucket, bias=True, init_scale=INIT_SCALE)
    return BenchRun(model=model, optim=optim, steps=steps, seed=seed).validate()


def _loss_fn(A):
    def loss_fn(p, x, y):
        return logistic(apply_two_layer(p, x, A)[:, 0], y)

    return loss_fn


def train_set(seed, data: ClusterData) -> dict:
    """The training set ``{"x" (samples, d), "y" (samples,)}`` drawn from ``seed`` (fold 1 of its key)."""
    drawn = make_cluster_data(jax.random.fold_in(jax.random.PRNGKey(seed), 1), data)
    return {"x": drawn["train"]["x"], "y": drawn["train"]["y"]}


def run_training_on(cfg: BenchRun, data: dict) -> dict:
    """One training run on ``data`` (:func:`train_set`), its init and batches from ``cfg.seed`` (folds 2, 3)."""
    key = jax.random.PRNGKey(cfg.seed)
    params = init_two_layer(jax.random.fold_in(key, 2), cfg.model, cfg.data.d, 1)
    loss_fn = _loss_fn(readout_matrix(cfg.model, 1))
    x, y = data["x"], data["y"]
    _, rec, bad = train(loss_fn, params, x, y, make_optimizer(cfg.optim), plan=(0, cfg.steps),
                        record_fn=lambda p: jnp.mean(loss_fn(p, x, y)), key=jax.random.fold_in(key, 3),
                        batch_size=cfg.optim.batch_size, sampling=cfg.optim.sampling)
    return {"loss": rec, "diverged_step": bad}


def run_training(cfg: BenchRun) -> dict:
    """fa-jax: one training run as a pure function of its config (the sweep engine vmaps it over runs): its seed
    draws the data and the init."""
    return run_training_on(cfg, train_set(cfg.seed, cfg.data))


def fa_jax_grad(params: dict, x, y, width: int) -> tuple[float, dict]:
    """fa-jax's loss and gradient (what the trainer differentiates) at ``params`` on ``(x, y)``, as numpy."""
    model = TwoLayerNet(kind="binary", width=width, init_scale=INIT_SCALE).validate()
    loss_fn = _loss_fn(readout_matrix(model, 1))
    p = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    loss, g = jax.jit(jax.value_and_grad(lambda q, xx, yy: jnp.mean(loss_fn(q, xx, yy))))(p, jnp.asarray(x),
                                                                                         jnp.asarray(y))
    return float(loss), {k: np.asarray(v) for k, v in g.items()}


def head_vector(width: int) -> np.ndarray:
    return np.concatenate([np.full(width, 1.0 / width), np.full(width, -1.0 / width)]).astype(np.float32)


# ----------------------------------------------------------------------------- reference: hand-written jit(vmap)
def hand_loss(W, b, a, x, y):
    """mean_i softplus(-y_i a.ReLU(W x_i + b)): ``W (N, d)``, ``b (N,)``, ``a (N,)``, ``x (batch, d)``,
    ``y (batch,)``."""
    f = jax.nn.relu(x @ W.T + b) @ a
    return jnp.mean(jax.nn.softplus(-y * f))


def handwritten_train(seed, *, mode: str, steps: int, width: int = WIDTH):
    """One run as a user writes it for ``jit(vmap(.))`` (PureJaxRL-style): its own data generator (orthogonal
    centres of norm sqrt d, labels by cluster, Gaussian noise), init N(0, 1e-3^2), plain GD / SGD-with-replacement
    in a ``fori_loop``; no records, no divergence guard. Returns the final full-batch loss (a scalar)."""
    x, y = hand_data(seed)
    return hand_fit(seed, x, y, mode=mode, steps=steps, width=width)


def hand_data(seed):
    """The hand-written data generator: ``x (samples, d)``, ``y (samples,)`` from ``seed``'s first three keys."""
    kc, kj, kn = jax.random.split(jax.random.PRNGKey(seed), 6)[:3]
    q, r = jnp.linalg.qr(jax.random.normal(kc, (D, K)))
    centres = ((q * jnp.sign(jnp.diag(r))) * math.sqrt(D)).T  # (k, d)
    signs = jnp.where(jnp.arange(K) < N_POS, 1.0, -1.0)
    j = jax.random.randint(kj, (N_TRAIN,), 0, K)
    return centres[j] + SIGMA * jax.random.normal(kn, (N_TRAIN, D)), signs[j]


def hand_fit(seed, x, y, *, mode: str, steps: int, width: int = WIDTH):
    """The hand-written init (``seed``'s last three keys) and training loop on ``(x, y)``: the final loss."""
    kw, kb, ks = jax.random.split(jax.random.PRNGKey(seed), 6)[3:]
    W = INIT_SCALE * jax.random.normal(kw, (2 * width, D))
    b = INIT_SCALE * jax.random.normal(kb, (2 * width,))
    a = jnp.asarray(head_vector(width))
    grad = jax.grad(hand_loss, argnums=(0, 1))

    def step(t, wb):
        W, b = wb
        if mode == "sgd":
            idx = jax.random.randint(jax.random.fold_in(ks, t), (BATCH,), 0, N_TRAIN)
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x, y
        gW, gb = grad(W, b, a, xb, yb)
        return W - LR * gW, b - LR * gb

    W, b = jax.lax.fori_loop(0, steps, step, (W, b))
    return hand_loss(W, b, a, x, y)


_HAND: dict = {}  # (mode, steps, size, precision, device) -> (compiled, compile seconds)


def hand_program(mode: str, steps: int, size: int, precision: str = "highest"):
    """The compiled ``jit(vmap(handwritten_train))`` over ``size`` seeds and its compile time (cached)."""
    key = (mode, steps, size, precision, jax.devices()[0].id)
    if key not in _HAND:
        fn = jax.jit(jax.vmap(functools.partial(handwritten_train, mode=mode, steps=steps)))
        t = time.perf_counter()
        with jax.default_matmul_precision(precision):
            compiled = fn.lower(jax.ShapeDtypeStruct((size,), jnp.int32)).compile()
        _HAND[key] = (compiled, time.perf_counter() - t)
    return _HAND[key]


def hand_call(mode: str, steps: int, R: int, chunk: int, precision: str = "highest") -> np.ndarray:
    """R runs of the hand-written program, ``chunk`` seeds per call (the last chunk padded with extra seeds):
    every call dispatched, then all final losses fetched, as a user's loop over chunks would."""
    prog, _ = hand_program(mode, steps, chunk, precision)
    outs = [prog(jnp.arange(s, s + chunk, dtype=jnp.int32)) for s in range(0, R, chunk)]
    losses = np.concatenate(jax.device_get(outs))[:R]
    if not np.all(np.isfinite(losses)):
        raise RuntimeError("a hand-written benchmark run diverged")
    return losses


# ----------------------------------------------------------------------------- reference: plain NumPy loop
def numpy_loss_grad(W, b, a, x, y):
    """Hand-written forward/backward of mean softplus(-y a.ReLU(x W^T + b)); float32 throughout."""
    z = x @ W.T
    z += b
    h = np.maximum(z, 0)
    q = y * (h @ a)
    loss = float(np.mean(np.logaddexp(np.float32(0), -q)))
    s = np.float32(0.5) * (np.float32(1) + np.tanh(np.float32(-0.5) * q))  # sigmoid(-q), overflow-free
    df = (-s * y) / np.float32(x.shape[0])  # d loss / d f_i
    dz = np.multiply.outer(df, a)
    dz *= z > 0
    return loss, dz.T @ x, dz.sum(axis=0)


def numpy_run(seed: int, mode: str, steps: int, width: int = WIDTH) -> float:
    """One complete run (data, init, T steps) in plain NumPy; returns the final loss."""
    rng = np.random.default_rng(seed)
    n, d, k = N_TRAIN, D, K
    q, r = np.linalg.qr(rng.standard_normal((d, k)))
    centres = ((q * np.sign(np.diag(r))) * math.sqrt(d)).T.astype(np.float32)
    signs = np.where(np.arange(k) < N_POS, 1.0, -1.0).astype(np.float32)
    j = rng.integers(0, k, n)
    x = centres[j] + np.float32(SIGMA) * rng.standard_normal((n, d), dtype=np.float32)
    y = signs[j]
    W = np.float32(INIT_SCALE) * rng.standard_normal((2 * width, d), dtype=np.float32)
    b = np.float32(INIT_SCALE) * rng.standard_normal(2 * width, dtype=np.float32)
    a, lr = head_vector(width), np.float32(LR)
    loss = float("nan")
    for _ in range(steps):
        if mode == "sgd":
            idx = rng.integers(0, n, BATCH)
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x, y
        loss, gW, gb = numpy_loss_grad(W, b, a, xb, yb)
        W -= lr * gW
        b -= lr * gb
    assert W.dtype == np.float32 and b.dtype == np.float32
    return loss


# ----------------------------------------------------------------------------- reference: plain PyTorch loop
def torch_loss_grad(W, b, a, x, y):
    """PyTorch autograd on the same loss; W, b leaf tensors with requires_grad (grads left in .grad)."""
    f = TF.relu(TF.linear(x, W, b)) @ a
    loss = TF.softplus(-y * f).mean()
    loss.backward()
    return loss


def torch_run(seed: int, mode: str, steps: int, width: int = WIDTH) -> float:
    """One complete run (data, init, T steps) the usual PyTorch way: autograd + torch.optim.SGD, one run at a time."""
    g = torch.Generator().manual_seed(seed)
    n, d, k = N_TRAIN, D, K
    q, r = torch.linalg.qr(torch.randn(d, k, generator=g))
    centres = ((q * torch.sign(torch.diagonal(r))) * math.sqrt(d)).T
    signs = torch.where(torch.arange(k) < N_POS, 1.0, -1.0)
    j = torch.randint(0, k, (n,), generator=g)
    x = centres[j] + SIGMA * torch.randn(n, d, generator=g)
    y = signs[j]
    W = (INIT_SCALE * torch.randn(2 * width, d, generator=g)).requires_grad_()
    b = (INIT_SCALE * torch.randn(2 * width, generator=g)).requires_grad_()
    a = torch.from_numpy(head_vector(width))
    opt = torch.optim.SGD([W, b], lr=LR)
    loss = None
    for _ in range(steps):
        if mode == "sgd":
            idx = torch.randint(0, n, (BATCH,), generator=g)
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = x, y
        opt.zero_grad(set_to_none=True)
        loss = torch_loss_grad(W, b, a, xb, yb)
        opt.step()
    assert W.dtype == torch.float32
    return loss.item()


# ----------------------------------------------------------------------------- the same computation?
def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def gradient_check(d: int = D, n: int = N_TRAIN, width: int = WIDTH, k: int = K, batch: int = BATCH,
                   init_scale: float = 0.05, seed: int = 0) -> dict:
    """Loss and gradient of each reference vs fa-jax, full batch and one mini-batch, on fa-jax's data and params.

    Returns ``{"numpy": {"full": rel_err, "batch": rel_err}, "handwritten": {...}, "torch": {...} (if
    installed)}``, the max over loss, dW and db of |ref - fa_jax| / |fa_jax|. A larger init than the benchmark's
    makes the ReLU pattern and the gradient non-trivial.
    """
    cfg = ClusterData(d=d, k=k, n_pos=k // 2, n_train=n, n_test=1, sigma=SIGMA).validate()
    data = jax.jit(make_cluster_data, static_argnums=1)(jax.random.PRNGKey(seed), cfg)  # one compile, not per op
    model = TwoLayerNet(kind="binary", width=width, init_scale=init_scale).validate()
    init = jax.jit(init_two_layer, static_argnums=(1, 2, 3))
    params = {kk: np.asarray(v) for kk, v in init(jax.random.PRNGKey(seed + 1), model, d, 1).items()}
    x, y = np.asarray(data["train"]["x"]), np.asarray(data["train"]["y"])
    idx = np.random.default_rng(seed).integers(0, n, min(batch, n))
    a = head_vector(width)
    hand = jax.jit(jax.value_and_grad(hand_loss, argnums=(0, 1)))
    out: dict = {"numpy": {}, "handwritten": {}}
    if torch is not None:
        out["torch"] = {}
    for name, (xb, yb) in {"full": (x, y), "batch": (x[idx], y[idx])}.items():
        l_ref, g_ref = fa_jax_grad(params, xb, yb, width)
        l_np, gw, gb = numpy_loss_grad(params["w"].copy(), params["b"].copy(), a, xb, yb)
        out["numpy"][name] = max(_rel(l_np, l_ref), _rel(gw, g_ref["w"]), _rel(gb, g_ref["b"]))
        l_h, (hw, hb) = hand(params["w"], params["b"], a, xb, yb)
        out["handwritten"][name] = max(_rel(l_h, l_ref), _rel(hw, g_ref["w"]), _rel(hb, g_ref["b"]))
        if torch is not None:
            W = torch.tensor(params["w"]).requires_grad_()
            b = torch.tensor(params["b"]).requires_grad_()
            l_t = torch_loss_grad(W, b, torch.tensor(a), torch.tensor(xb), torch.tensor(yb))
            out["torch"][name] = max(_rel(l_t.item(), l_ref), _rel(W.grad.numpy(), g_ref["w"]),
                                     _rel(b.grad.numpy(), g_ref["b"]))
    return out


def check_references(tol: float = TOL) -> dict:
    """Gradient check at the benchmark's init (1e-3) and at a larger one (0.05); abort on any disagreement."""
    res = {}
    for scale in (INIT_SCALE, 0.05):
        for impl, r in gradient_check(init_scale=scale).items():
            for case, e in r.items():
                res.setdefault(impl, {})[f"{case}@init{scale:g}"] = e
    bad = {f"{impl}/{case}": e for impl, r in res.items() for case, e in r.items() if not e <= tol}
    if bad:
        raise SystemExit(f"references disagree with fa-jax's gradient (relative error > {tol}): {bad}; "
                         "the comparison would not be of the same computation")
    return res


# ----------------------------------------------------------------------------- the hardware limit
def matmul_peak(n: int = 4096, reps: int = 3) -> dict:
    """Best float32 GFLOP/s of an n x n matmul. ``peak``: on CPU the best of NumPy, ``jax.jit(jnp.dot)`` at
    precision "highest" and torch (if installed); on an accelerator the device's ``jnp.dot`` at "highest" (the
    sgemm peak); ``jax_default`` is ``jnp.dot`` at the backend's default precision (TF32 on recent GPUs)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2.0 * n ** 3

    def best(fn):
        fn()  # warm-up (and compile)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return flops / min(times) / 1e9

    backend = jax.default_backend()
    out = {"n": n, "backend": backend}
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    hi = jax.jit(functools.partial(jnp.dot, precision="highest"))
    out["jax"] = best(lambda: hi(ja, jb).block_until_ready())
    dflt = jax.jit(jnp.dot)
    out["jax_default"] = best(lambda: dflt(ja, jb).block_until_ready())
    if backend == "cpu":
        out["numpy"] = best(lambda: a @ b)
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            out["torch"] = best(lambda: ta @ tb)
        out["peak"] = max(out[k] for k in ("jax", "numpy", "torch") if k in out)
    else:
        out["peak"] = out["jax"]
    return out


# ----------------------------------------------------------------------------- timing
def _loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _timed(fn, min_time: float) -> tuple[float, int]:
    """Call ``fn()`` until at least ``min_time`` seconds have passed: ``(seconds, calls)``."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt, calls


_COMPILE_S: dict = {}


def _fa_jax_prepare(configs: list, chunk: int, precision: str = "highest") -> dict:
    """Compile the engine's program(s) for ``configs`` at ``chunk`` through its own cache; seconds and bytes."""
    devices = tuple(jax.local_devices()[:1])
    groups = _sweep.group_configs(configs)
    out = {"compile_s": [], "footprint_bytes": []}
    for key, idx in groups.items():
        size = min(chunk, len(idx))
        t = time.perf_counter()
        compiled, _ = _sweep._program(run_training, key, configs[idx[0]], size, devices, precision=precision)
        # a program already compiled for an earlier R is a cache hit: report its first compilation
        dt = _COMPILE_S.setdefault((key, size, precision), time.perf_counter() - t)
        out["compile_s"].append(dt)
        out["footprint_bytes"].append(_sweep._footprint(compiled))
    return out


def _fa_jax_call(configs: list, chunk: int, precision: str = "highest") -> None:
    traces = _sweep.STATS.traces
    res = _sweep.run_sweep(run_training, configs, chunk_size=chunk, progress=False, precision=precision,
                           devices=jax.local_devices()[:1])
    if _sweep.STATS.traces != traces:
        raise RuntimeError("a timed fa-jax call compiled: the timing would include compilation")
    if any(bool(r["diverged"]) for r in res):
        raise RuntimeError("a benchmark run diverged")


def _loop_call(run, mode: str, runs: int, steps: int) -> None:
    for s in range(runs):
        run(s, mode, steps)


def _point(units: float, times: list[tuple[float, int]]) -> dict:
    """A timed point: ``units`` per call (run-steps), median rate over repetitions of (seconds, calls)."""
    rates = [units * c / t for t, c in times]
    return {"run_steps_per_s": statistics.median(rates), "reps_run_steps_per_s": rates,
            "timed_s": [t for t, _ in times], "calls": [c for _, c in times]}


def bench_mode(mode: str, rs, steps: int, chunks, all_in_one: bool, reps: int, ref_runs: int, peak: float, log,
               impls=IMPLS, min_time: float = MIN_TIME, precision: str = "highest", save=None) -> dict:
    """Every implementation at every R, interleaved. Per R: ``fa_jax`` / ``handwritten`` (best chunk; every chunk
    in ``*_variants``), ``numpy_loop`` / ``torch_loop`` (None when not run or absent), ``ratio_vs_*``,
    ``gflops`` and ``pct_peak`` per implementation, compile seconds, footprint, load average."""
    fps = flops_per_step(N_TRAIN if mode == "gd" else BATCH)
    impls = [i for i in impls if i != "torch_loop" or torch is not None]
    # warm the loops (thread pools, allocators) outside any timing
    if "numpy_loop" in impls:
        numpy_run(0, mode, 5)
    if "torch_loop" in impls:
        torch_run(0, mode, 5)
    out = {}
    for R in rs:
        configs = [bench_config(mode, steps, seed=s) for s in range(R)] if "fa_jax" in impls else []
        sizes = sorted({min(R, c) for c in chunks} | ({R} if all_in_one or not chunks else set()), reverse=True)
        prep = {c: _fa_jax_prepare(configs, c, precision) for c in sizes} if "fa_jax" in impls else {}
        hand_compile = {c: hand_program(mode, steps, c, precision)[1] for c in sizes} if "handwritten" in impls \
            else {}
        for c in sizes:  # warm-up: one untimed chunk per program (skipped for big all-in-one programs)
            if c <= WARMUP_MAX:
                if "fa_jax" in impls:
                    _fa_jax_call(configs[:c], c, precision)
                if "handwritten" in impls:
                    hand_call(mode, steps, c, c, precision)
        nref = min(R, ref_runs)
        calls = {}
        for c in sizes:
            if "fa_jax" in impls:
                calls[f"fa_jax@{c}"] = functools.partial(_fa_jax_call, configs, c, precision)
            if "handwritten" in impls:
                calls[f"handwritten@{c}"] = functools.partial(hand_call, mode, steps, R, c, precision)
        if "numpy_loop" in impls:
            calls["numpy_loop"] = functools.partial(_loop_call, numpy_run, mode, nref, steps)
        if "torch_loop" in impls:
            calls["torch_loop"] = functools.partial(_loop_call, torch_run, mode, nref, steps)
        names = list(calls)
        times: dict[str, list] = {k: [] for k in names}
        load0 = _loadavg()
        for rep in range(reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotate who goes first
                times[name].append(_timed(calls[name], min_time))
        e = {"steps": steps, "flops_per_step": fps, "loadavg": {"start": load0, "end": _loadavg()}}
        for impl in ("fa_jax", "handwritten"):
            if impl not in impls:
                e[impl] = None
                continue
            variants = {}
            for c in sizes:
                v = _point(R * steps, times[f"{impl}@{c}"])
                if impl == "fa_jax":
                    v.update(compile_s=prep[c]["compile_s"][0], footprint_bytes=prep[c]["footprint_bytes"][0])
                else:
                    v["compile_s"] = hand_compile[c]
                variants[str(c)] = v
            best = max(variants, key=lambda c: variants[c]["run_steps_per_s"])
            e.update({impl: variants[best]["run_steps_per_s"], f"{impl}_chunk": int(best),
                      f"{impl}_all_in_one": variants[str(R)]["run_steps_per_s"] if str(R) in variants else None,
                      f"{impl}_variants": variants})
            if impl == "fa_jax":
                e.update(compile_s=variants[best]["compile_s"], peak_mem_bytes=variants[best]["footprint_bytes"])
        for impl in ("torch_loop", "numpy_loop"):
            if impl in impls:
                v = _point(nref * steps, times[impl])
                e[impl] = v["run_steps_per_s"]
                e[f"{impl}_reps"] = v["reps_run_steps_per_s"]
                e[f"{impl}_calls"] = v["calls"]
                e[f"{impl}_runs_timed"] = nref
            else:
                e[impl] = None
        fa = e["fa_jax"]

        def ratio(other, fa=fa):
            return fa / other if fa and other else None

        e["ratio_vs_torch"] = ratio(e["torch_loop"])
        e["ratio_vs_numpy"] = ratio(e["numpy_loop"])
        e["ratio_vs_handwritten"] = ratio(e["handwritten"])
        e["ratio_vs_handwritten_same_chunk"] = (
            ratio(e["handwritten_variants"][str(e["fa_jax_chunk"])]["run_steps_per_s"])
            if fa and e["handwritten"] else None)
        e["gflops"] = {i: (e[i] * fps / 1e9 if e[i] else None) for i in IMPLS}
        e["pct_peak"] = {i: (100 * g / peak if g else None) for i, g in e["gflops"].items()}
        out[str(R)] = e
        if save is not None:
            save(mode, out)
        log(f"  {mode} R={R}: fa_jax {_fmt(fa)} (chunk {e.get('fa_jax_chunk', '-')}), hand-written "
            f"{_fmt(e['handwritten'])} (x{_fmt(e['ratio_vs_handwritten'], '.2f')}), numpy {_fmt(e['numpy_loop'])}, "
            f"torch {_fmt(e['torch_loop'])} run-steps/s; load {e['loadavg']}")
    return out


def width_configs(steps: int, runs_per_width: int, widths, bucket: int | None = None) -> list:
    """GD runs on ONE dataset (data seed 0): ``runs_per_width`` init seeds at every width, each in its own bucket
    (``bucket`` None: one program per width) or all padded to ``bucket``."""
    b = bench_config("gd", steps)
    return [SharedBenchRun(data=b.data, optim=b.optim, steps=steps, seed=s, data_seed=0,
                           model=TwoLayerNet(kind="binary", width=m, bucket=bucket, bias=True,
                                             init_scale=INIT_SCALE).validate())
            for m in widths for s in range(runs_per_width)]


def _width_call(layout: str, configs: list, precision: str) -> np.ndarray:
    """One engine call of a width layout; the runs' final losses. ``separate`` / ``padded``: ``run_sweep`` with
    the data stage; ``packed``: :func:`fa_jax.packing.run_packed` (slots of the widest run's neurons)."""
    kw = dict(progress=False, precision=precision, devices=jax.local_devices()[:1], data=bench_data)
    if layout == "packed":
        res = run_packed(run_training_packed, configs, PACK, **kw)
    else:
        res = _sweep.run_sweep(run_training_on, configs, chunk_size=len(configs), **kw)
    if any(bool(r["diverged"]) for r in res):
        raise RuntimeError("a benchmark run diverged")
    return np.asarray([r["loss"][-1] for r in res])


def _width_point(steps: int, runs_per_width: int, reps: int, widths, min_time: float, precision: str) -> dict:
    """The same runs three ways, interleaved: one program per width (``separate``, the FLOP floor), every run
    padded to the widest (``padded``) and packed on one neuron axis (``packed``); seconds per call (median) and
    the overheads padded / separate, packed / separate."""
    runs = {"separate": width_configs(steps, runs_per_width, widths),
            "padded": width_configs(steps, runs_per_width, widths, bucket=max(widths))}
    runs["packed"] = runs["separate"]
    names = list(runs)
    compile_s, programs, finals = {}, {}, {}
    for name in names:  # warm-up, untimed: compiles through the engine's own cache
        t0, c0 = _sweep.STATS.traces, _sweep.STATS.compile_seconds
        finals[name] = _width_call(name, runs[name], precision)
        programs[name], compile_s[name] = _sweep.STATS.traces - t0, _sweep.STATS.compile_seconds - c0
    times: dict[str, list] = {k: [] for k in names}
    load0 = _loadavg()
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            traces = _sweep.STATS.traces
            times[name].append(_timed(functools.partial(_width_call, name, runs[name], precision), min_time))
            if _sweep.STATS.traces != traces:
                raise RuntimeError("a timed fa-jax call compiled: the timing would include compilation")
    total = len(runs["separate"])
    useful = sum(flops_per_step(N_TRAIN, m) for m in widths) * runs_per_width * steps
    out = {"runs_per_width": runs_per_width, "runs": total, "loadavg": {"start": load0, "end": _loadavg()}}
    for name in names:
        med = statistics.median(t / c for t, c in times[name])  # seconds per call
        out[name] = {"programs": programs[name], "compile_s": compile_s[name], "run_s": med,
                     "reps_run_s": [t / c for t, c in times[name]], "calls": [c for _, c in times[name]],
                     "run_steps_per_s": total * steps / med, "useful_gflops": useful / med / 1e9,
                     "max_rel_diff_vs_separate": float(np.max(np.abs(finals[name] - finals["separate"])
                                                              / np.abs(finals["separate"])))}
    sep = out["separate"]
    for name, key in (("padded", "overhead"), ("packed", "packed_overhead")):
        out[key] = out[name]["run_s"] / sep["run_s"]
        out[key + "_with_compile"] = ((out[name]["run_s"] + out[name]["compile_s"])
                                      / (sep["run_s"] + sep["compile_s"]))
    plan = plan_slots(runs["packed"], PACK)
    out["packed"].update(slots=len(plan.slots), fill=plan.fill)
    return out


def bench_width(steps: int, runs_per_width, reps: int, log, widths=WIDTHS, min_time: float = MIN_TIME,
                precision: str = "highest", save=None) -> dict:
    """Width sweep, GD, one dataset: one program per width vs all widths padded to the largest in ONE program vs
    packed on one neuron axis (:func:`_width_point`, interleaved), at every count in ``runs_per_width`` (``per_R``,
    keyed by the total runs R = count x widths). The top-level fields are those of the largest R (the layout of
    earlier JSONs)."""
    widths = tuple(widths)
    counts = (runs_per_width,) if isinstance(runs_per_width, int) else tuple(runs_per_width)
    out = {"widths": list(widths), "steps": steps, "bucket": max(widths),
           "flop_ratio_padded_vs_separate": len(widths) * max(widths) / sum(widths), "per_R": {}}
    for n in counts:
        w = _width_point(steps, n, reps, widths, min_time, precision)
        out["per_R"][str(w["runs"])] = w
        out.update({k: v for k, v in w.items()})
        if save is not None:
            save("width", out)
        log(f"  width R={w['runs']} ({n} per width): separate {w['separate']['run_s']:.3f} s "
            f"({w['separate']['programs']} programs), padded {w['padded']['run_s']:.3f} s (x{w['overhead']:.2f}), "
            f"packed {w['packed']['run_s']:.3f} s (x{w['packed_overhead']:.2f}, {w['packed']['slots']} slots, fill "
            f"{w['packed']['fill']:.2f})")
    return out


# ----------------------------------------------------------------------------- runs on one dataset (issue 19 item 1)
@dataclasses.dataclass(frozen=True)
class SharedBenchRun(BenchRun):
    """A benchmark run whose data come from ``data_seed`` and whose init and batches from ``seed``."""

    data_seed: int = traced(0)


def bench_data(cfg: SharedBenchRun) -> dict:
    """The engine's data stage (``run_sweep(data=...)``): the training set of ``data_seed``."""
    return train_set(cfg.data_seed, cfg.data)


def run_training_own_data(cfg: SharedBenchRun) -> dict:
    """The same run drawing its own data (the engine without a data stage: one draw and one copy per run)."""
    return run_training_on(cfg, bench_data(cfg))


def shared_configs(mode: str, steps: int, R: int) -> list[SharedBenchRun]:
    """R runs on data seed 0, init seeds 0..R-1."""
    b = bench_config(mode, steps)
    return [SharedBenchRun(data=b.data, model=b.model, optim=b.optim, steps=steps, seed=s, data_seed=0)
            for s in range(R)]


def _engine_shared_call(configs, data, precision: str) -> np.ndarray:
    traces = _sweep.STATS.traces
    fn = run_training_on if data is not None else run_training_own_data
    res = _sweep.run_sweep(fn, configs, chunk_size=len(configs), progress=False, precision=precision,
                           devices=jax.local_devices()[:1], data=data)
    if _sweep.STATS.traces != traces:
        raise RuntimeError("a timed fa-jax call compiled: the timing would include compilation")
    if any(bool(r["diverged"]) for r in res):
        raise RuntimeError("a benchmark run diverged")
    return np.asarray([r["loss"][-1] for r in res])


def hand_shared_program(mode: str, steps: int, size: int, precision: str = "highest"):
    """The hand-written reference on one dataset as a careful user writes it: the data drawn once, outside, and
    ``jit(vmap(hand_fit, in_axes=(0, None, None)))`` over the init seeds (cached; with its compile seconds)."""
    key = ("shared", mode, steps, size, precision, jax.devices()[0].id)
    if key not in _HAND:
        fn = jax.jit(jax.vmap(functools.partial(hand_fit, mode=mode, steps=steps), in_axes=(0, None, None)))
        x = jax.ShapeDtypeStruct((N_TRAIN, D), jnp.float32)
        t = time.perf_counter()
        with jax.default_matmul_precision(precision):
            compiled = fn.lower(jax.ShapeDtypeStruct((size,), jnp.int32), x,
                                jax.ShapeDtypeStruct((N_TRAIN,), jnp.float32)).compile()
        _HAND[key] = (compiled, time.perf_counter() - t)
    return _HAND[key]


def _hand_shared_call(mode: str, steps: int, R: int, precision: str) -> np.ndarray:
    prog, _ = hand_shared_program(mode, steps, R, precision)
    x, y = jax.jit(hand_data)(0)
    losses = np.asarray(jax.device_get(prog(jnp.arange(R, dtype=jnp.int32), x, y)))
    if not np.all(np.isfinite(losses)):
        raise RuntimeError("a hand-written benchmark run diverged")
    return losses


def bench_shared(modes, rs, steps: int, reps: int, peak: float, log, min_time: float = MIN_TIME,
                 precision: str = "highest", save=None) -> dict:
    """R runs on ONE dataset (data seed 0, init seeds 0..R-1), all R in one call, interleaved: the engine with a
    data stage (``data=``: one draw, the runs' neurons side by side in one matmul), the engine with each run
    drawing its own copy (the same results, no sharing), and the hand-written ``jit(vmap(.))`` with the data
    unbatched (``in_axes=None``). Per mode and R: run-steps/s of each, ``sharing_speedup`` (data stage / own
    copies), ``ratio_vs_handwritten`` (data stage / hand-written), ``pct_peak`` and compile seconds."""
    out: dict = {}
    for mode in modes:
        fps = flops_per_step(N_TRAIN if mode == "gd" else BATCH)
        out[mode] = {}
        for R in rs:
            configs = shared_configs(mode, steps, R)
            compile_s = {}
            for name, data in (("shared", bench_data), ("own", None)):
                t = time.perf_counter()
                traces = _sweep.STATS.traces
                plans = _sweep.plan_chunks(run_training_on if data else run_training_own_data, configs,
                                           chunk_size=R, devices=jax.local_devices()[:1], files=False,
                                           precision=precision, data=data)
                stage = None if data is None else _sweep._DataStage(data, plans[0].block)
                _sweep._program(run_training_on if data else run_training_own_data, plans[0].key, configs[0],
                                plans[0].size, tuple(jax.local_devices()[:1]), precision=precision, data=stage)
                compile_s[name] = time.perf_counter() - t if _sweep.STATS.traces > traces else None
            compile_s["handwritten"] = hand_shared_program(mode, steps, R, precision)[1]
            calls = {"shared": functools.partial(_engine_shared_call, configs, bench_data, precision),
                     "own": functools.partial(_engine_shared_call, configs, None, precision),
                     "handwritten": functools.partial(_hand_shared_call, mode, steps, R, precision)}
            finals = {k: f() for k, f in calls.items()}  # warm-up, untimed; the same runs' final losses
            names = list(calls)
            times: dict[str, list] = {k: [] for k in names}
            load0 = _loadavg()
            for rep in range(reps):
                for name in names[rep % len(names):] + names[:rep % len(names)]:
                    times[name].append(_timed(calls[name], min_time))
            e = {"steps": steps, "flops_per_step": fps, "loadavg": {"start": load0, "end": _loadavg()},
                 "compile_s": compile_s,
                 "max_rel_diff_shared_vs_own": float(np.max(np.abs(finals["shared"] - finals["own"])
                                                            / np.abs(finals["own"])))}
            for name in names:
                e[name] = _point(R * steps, times[name])
            rate = {k: e[k]["run_steps_per_s"] for k in names}
            e["sharing_speedup"] = rate["shared"] / rate["own"]
            e["ratio_vs_handwritten"] = rate["shared"] / rate["handwritten"]
            e["pct_peak"] = {k: 100 * v * fps / 1e9 / peak for k, v in rate.items()}
            out[mode][str(R)] = e
            if save is not None:
                save("shared_data", out)
            log(f"  one dataset, {mode} R={R}: data stage {rate['shared']:.0f}, own copies {rate['own']:.0f} "
                f"(x{e['sharing_speedup']:.2f}), hand-written {rate['handwritten']:.0f} "
                f"(x{e['ratio_vs_handwritten']:.2f}) run-steps/s; load {e['loadavg']}")
    return out


# ----------------------------------------------------------------------------- widths packed (issue 19 item 2)
def run_training_packed(slot, data: dict) -> dict:
    """The runs of one :class:`fa_jax.packing.Slot` of :class:`SharedBenchRun` configs (packed fields
    ``model.width`` and ``seed``) trained on one neuron axis: run k of the slot equals ``run_training_on(cfg_k,
    data)`` up to float reassociation (its init bit for bit: :func:`init_two_layer_packed`). Full batch only:
    the runs of a slot share one sequence of mini-batches, where separate SGD runs draw theirs from their seeds."""
    cfg = slot.run
    if cfg.optim.batch_size is not None:
        raise ValueError("invalid optim.batch_size for packed runs: allowed None (full batch); packed runs share "
                         "their mini-batches, separate runs draw them from their own seeds")
    seg = slot.segments()
    widths = slot.packed("model.width")
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 2))(slot.packed("seed"))
    params = init_two_layer_packed(keys, cfg.model.kind, widths, cfg.model.init_scale, seg, cfg.data.d, 1,
                                   bias=cfg.model.bias)
    A = readout_matrix_packed(cfg.model.kind, widths, seg, 1)

    def loss_fn(p, x, y):  # (samples, runs)
        return jax.nn.softplus(-y[:, None] * apply_two_layer_packed(p, x, A, seg)[..., 0])

    x, y = data["x"], data["y"]
    _, rec, bad = train(loss_fn, params, x, y, make_optimizer(cfg.optim, seg), plan=(0, cfg.steps),
                        record_fn=lambda p: jnp.mean(loss_fn(p, x, y), axis=0), segments=seg)
    return {"loss": rec.T, "diverged_step": bad}


PACK = Pack(fields=("model.width", "seed"), size=lambda c: 2 * c.model.width, ignore=("model.bucket",))


# ----------------------------------------------------------------------------- report
def _width_points(w: dict) -> dict:
    """``{R: point}`` of a width-sweep record (earlier JSONs hold one point, at its top level)."""
    return w.get("per_R") or {str(w.get("runs", w["runs_per_width"] * len(w["widths"]))): w}


def _fmt(v, spec=".0f"):
    return "-" if v is None else format(v, spec)


def targets(res: dict) -> list[dict]:
    """Issue 19's targets, each ``{"name", "measured", "target", "met", "note"}`` (met None: not measured)."""
    out = []

    def add(name, values, want, at_least=True, note=""):
        """``values``: ``{R: measured}``; the target must hold at every R listed (the worst one is reported)."""
        values = {r: v for r, v in values.items() if v is not None}
        if not values:
            out.append({"name": name, "measured": None, "target": want, "met": None, "note": note or "not measured"})
            return
        worst_r = (min if at_least else max)(values, key=lambda r: values[r])
        v = values[worst_r]
        out.append({"name": name, "measured": v, "target": want, "met": bool(v >= want if at_least else v <= want),
                    "at_R": int(worst_r), "note": note or f"worst of R = {sorted(int(r) for r in values)}"})

    for mode in ("gd", "sgd"):
        if mode in res:
            add(f"{mode}: engine / hand-written >= 1.0", {r: e.get("ratio_vs_handwritten")
                                                          for r, e in res[mode].items()}, 1.0)
    gd = res.get("gd", {})
    def pct(e):
        return (e.get("pct_peak") or {}).get("fa_jax")

    add("gd R >= 16: % of fp32 peak >= 80", {r: pct(e) for r, e in gd.items() if int(r) >= 16}, 80.0)
    add("gd R >= 16: engine / NumPy loop >= 2", {r: e.get("ratio_vs_numpy") for r, e in gd.items() if int(r) >= 16},
        2.0)
    add("sgd R >= 64: engine / NumPy loop >= 5", {r: e.get("ratio_vs_numpy") for r, e in res.get("sgd", {}).items()
                                                  if int(r) >= 64}, 5.0)
    for mode, per in res.get("shared_data", {}).items():
        add(f"one dataset, {mode}: engine (data stage) / hand-written >= 1.0",
            {r: e["ratio_vs_handwritten"] for r, e in per.items()}, 1.0)
    if "width" in res:
        per = _width_points(res["width"])
        add("width sweep, packed / one program per width <= 1.3x", {r: w.get("packed_overhead")
                                                                   for r, w in per.items()}, 1.3, at_least=False,
            note="" if any("packed_overhead" in w for w in per.values()) else
            "not measured (a result from before packing; its padded overhead is in the table)")
    comp = [v["compile_s"] for m in ("gd", "sgd") for e in res.get(m, {}).values()
            for v in (e.get("fa_jax_variants") or {}).values()]
    if "width" in res:
        for w in _width_points(res["width"]).values():
            for name in ("separate", "padded", "packed"):
                c = w.get(name, {}).get("compile_s")
                # a list per program (earlier JSONs), else the layout's total over its programs
                comp += c if isinstance(c, list) else [c / w[name]["programs"]] if c and w[name]["programs"] else []
    if comp:
        out.append({"name": "compile <= 2 s per program", "measured": max(comp), "target": 2.0,
                    "met": bool(max(comp) <= 2.0), "note": f"max over {len(comp)} compilations"})
    if res.get("device", {}).get("platform") not in (None, "cpu"):
        add("gpu: gd R >= 4096 % of fp32 peak >= 50", {r: pct(e) for r, e in gd.items() if int(r) >= 4096}, 50.0)
    return out


def print_table(res: dict) -> None:
    mm = res["matmul"]
    print(f"\nmatmul peak (float32, {mm['n']}^2): " +
          ", ".join(f"{k} {v:.1f}" for k, v in mm.items() if isinstance(v, float)) + " GFLOP/s")
    print(f"FLOPs per run-step: GD {res['flops_per_step']['gd']:,}  SGD {res['flops_per_step']['sgd']:,}"
          f"  ({res['flops_per_step']['formula']})")
    hdr = (f"{'mode':4s} {'R':>6s} {'fa-jax':>9s} {'chunk':>5s} {'compile':>7s} {'hand':>9s} {'torch':>8s} "
           f"{'numpy':>8s} {'x hand':>6s} {'x torch':>7s} {'x numpy':>7s} {'%pk fa':>6s} {'%pk hd':>6s} "
           f"{'%pk np':>6s} {'load start->end':>17s}")
    print("\nrun-steps/s (R runs x T steps / s; median of interleaved reps, each >= min-time; compile s separate)")
    print(hdr)
    for mode in ("gd", "sgd"):
        for R, e in sorted(res.get(mode, {}).items(), key=lambda kv: int(kv[0])):
            pk = e["pct_peak"]
            print(f"{mode:4s} {R:>6s} {_fmt(e['fa_jax'], '9.0f'):>9s} {_fmt(e.get('fa_jax_chunk'), '5d'):>5s} "
                  f"{_fmt(e.get('compile_s'), '7.2f'):>7s} {_fmt(e.get('handwritten'), '9.0f'):>9s} "
                  f"{_fmt(e['torch_loop'], '8.0f'):>8s} {_fmt(e['numpy_loop'], '8.0f'):>8s} "
                  f"{_fmt(e.get('ratio_vs_handwritten'), '6.2f'):>6s} {_fmt(e['ratio_vs_torch'], '7.2f'):>7s} "
                  f"{_fmt(e['ratio_vs_numpy'], '7.2f'):>7s} {_fmt(pk['fa_jax'], '6.1f'):>6s} "
                  f"{_fmt(pk.get('handwritten'), '6.1f'):>6s} {_fmt(pk['numpy_loop'], '6.1f'):>6s} "
                  f"{e['loadavg']['start'][0]:>7.2f}->{e['loadavg']['end'][0]:<.2f}")
    if "width" in res:
        w = res["width"]
        print(f"\nwidth sweep m={w['widths']}, GD {w['steps']} steps:")
        for R, p in sorted(_width_points(w).items(), key=lambda kv: int(kv[0])):
            print(f"  R={R} ({p['runs_per_width']} per width): padded {p['padded']['run_s']:.3f} s, separate "
                  f"{p['separate']['run_s']:.3f} s ({p['separate']['programs']} programs) -> overhead "
                  f"{p['overhead']:.2f}x run time ({p['overhead_with_compile']:.2f}x with compile)")
            if "packed" in p:
                print(f"    packed {p['packed']['run_s']:.3f} s ({p['packed']['slots']} slots, fill "
                      f"{p['packed']['fill']:.2f}) -> overhead {p['packed_overhead']:.2f}x run time "
                      f"({p['packed_overhead_with_compile']:.2f}x with compile)")
        print(f"  FLOP ratio of padding: {w['flop_ratio_padded_vs_separate']:.2f}x")
    if res.get("shared_data"):
        print("\nR runs on ONE dataset (run-steps/s): engine with a data stage / engine, own copies / hand-written")
        for mode, per in res["shared_data"].items():
            for R, e in sorted(per.items(), key=lambda kv: int(kv[0])):
                print(f"  {mode:4s} R={R:>5s}: {e['shared']['run_steps_per_s']:9.0f} "
                      f"({e['pct_peak']['shared']:.0f} % pk) / {e['own']['run_steps_per_s']:9.0f} / "
                      f"{e['handwritten']['run_steps_per_s']:9.0f}  sharing x{e['sharing_speedup']:.2f}, "
                      f"vs hand-written x{e['ratio_vs_handwritten']:.2f}")
    print(f"\nload average (1/5/15 min): start {res['loadavg']['start']}, end {res['loadavg'].get('end')}")
    print(f"torch: {res.get('torch', 'installed' if res['versions'].get('torch') != 'not installed' else 'absent')}")
    print("targets (reported, not asserted):")
    for t in res.get("targets", []):
        met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        print(f"  {t['name']}: measured {_fmt(t['measured'], '.2f')} -> {met} ({t['note']})")


def _n(v, spec=",.0f") -> str:
    """A number for the markdown table: thin-space thousands (the docs' style), '—' when absent."""
    return "—" if v is None else format(v, spec).replace(",", "\u202f")


def markdown_table(res: dict) -> str:
    """The docs/performance.md table of a benchmark JSON: one row per mode and R (run-steps/s, ratios, % of
    peak), the width-sweep overhead per R, and the command and peak it was measured with."""
    rows = [("| mode | R | fa-jax run-steps/s (% of peak) | hand-written jit(vmap) | × hand-written | NumPy loop | "
             "× NumPy | torch loop | × torch |"),
            "|---|---|---|---|---|---|---|---|---|"]
    for mode in ("gd", "sgd"):
        for R, e in sorted(res.get(mode, {}).items(), key=lambda kv: int(kv[0])):
            pk = e["pct_peak"]["fa_jax"]
            fa = f"{_n(e['fa_jax'])} ({_n(pk, '.0f')} %)" if e["fa_jax"] else "—"
            rows.append(f"| {'GD' if mode == 'gd' else f'SGD b = {BATCH}'} | {_n(int(R), ',d')} | {fa} | "
                        f"{_n(e.get('handwritten'))} | {_n(e.get('ratio_vs_handwritten'), '.2f')} | "
                        f"{_n(e['numpy_loop'])} | {_n(e['ratio_vs_numpy'], '.2f')} | {_n(e['torch_loop'])} | "
                        f"{_n(e['ratio_vs_torch'], '.2f')} |")
    first = next(iter((res.get("gd") or res.get("sgd") or {"": {}}).values()))
    dev, end = res["device"], res["loadavg"].get("end", ["?"])[0]
    where = dev.get("platform") if dev.get("kind") in (None, "", dev.get("platform")) else \
        f"{dev.get('platform')} {dev.get('kind')}"
    out = [(f"`{res.get('command', '')}` ({res.get('date', '')}; {where}, "
            f"{dev.get('cpu_count')} host cores; sgemm peak measured in the same run: "
            f"{res['peak_gflops']:.0f} GFLOP/s; "
            f"T = {first.get('steps', (res.get('settings') or {}).get('steps', '?'))}; load "
            f"{res['loadavg']['start'][0]:.1f} → {end})")] + (["", *rows] if len(rows) > 2 else [])
    if res.get("shared_data"):
        out += ["", "R runs on one dataset (data seed 0, init seeds 0..R-1; all R in one call):", "",
                ("| mode | R | engine, data stage (% of peak) | engine, each run its own copy | × sharing | "
                "hand-written jit(vmap), data unbatched | × hand-written |"), "|---|---|---|---|---|---|---|"]
        for mode, per in res["shared_data"].items():
            for R, e in sorted(per.items(), key=lambda kv: int(kv[0])):
                out.append(f"| {'GD' if mode == 'gd' else f'SGD b = {BATCH}'} | {_n(int(R), ',d')} | "
                           f"{_n(e['shared']['run_steps_per_s'])} ({_n(e['pct_peak']['shared'], '.0f')} %) | "
                           f"{_n(e['own']['run_steps_per_s'])} | {_n(e['sharing_speedup'], '.2f')} | "
                           f"{_n(e['handwritten']['run_steps_per_s'])} | {_n(e['ratio_vs_handwritten'], '.2f')} |")
    if "width" in res:
        w = res["width"]
        per = _width_points(w)
        out += ["", "Width padding (m = " + ", ".join(str(m) for m in w["widths"]) + ", one padded program vs one per "
                "width): " + "; ".join(f"R = {R}: {p['overhead']:.2f}×" for R, p in
                                      sorted(per.items(), key=lambda kv: int(kv[0]))) + "."]
        if any("packed" in p for p in per.values()):
            out += ["", "Widths packed on one neuron axis (`fa_jax.packing.run_packed`, same runs, one dataset) vs one "
                    "program per width: " + "; ".join(
                        f"R = {R}: {p['packed_overhead']:.2f}× ({p['packed']['slots']} "
                        f"slot{'s' if p['packed']['slots'] != 1 else ''}, fill "
                        f"{p['packed']['fill']:.2f})" for R, p in sorted(per.items(), key=lambda kv: int(kv[0]))
                        if "packed" in p) + "."]
    return "\n".join(out)


def plot(res: dict, path: str) -> None:
    """The figure of a benchmark result ``res`` (one panel per mode, run-steps/s against R on log-log axes, the
    roofline dashed), in the shared figure style (fa_jax.plotting.style); one legend below both panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fa_jax.plotting.style import figure_legend, panels, styled

    @styled
    def draw():
        modes = [m for m in ("gd", "sgd") if m in res]
        fig, axes = panels(len(modes))
        styles = {"fa_jax": ("fa-jax (sweep engine)", "C0", "o"),
                  "handwritten": ("hand-written jit(vmap(train))", "C1", "D"),
                  "torch_loop": ("PyTorch per-run loop", "C3", "s"), "numpy_loop": ("NumPy per-run loop", "C2", "^")}
        for ax, mode in zip(axes, modes, strict=True):
            rs = sorted(res[mode], key=int)
            x = [int(r) for r in rs]
            for impl, (label, color, marker) in styles.items():
                y = [res[mode][r].get(impl) for r in rs]
                if y and all(v is not None for v in y):
                    ax.plot(x, y, marker=marker, ms=4, color=color, label=label)
            roof = res["peak_gflops"] * 1e9 / res["flops_per_step"][mode]
            ax.axhline(roof, color="k", ls="--",
                       label=f"roofline: peak {res['peak_gflops']:.0f} GFLOP/s / FLOPs per step")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("runs R")
            ax.set_ylabel("run-steps / s")
            steps = res[mode][rs[0]]["steps"]
            title = "full-batch GD" if mode == "gd" else f"SGD b = {BATCH}"
            ax.set_title(f"{title}, {steps} steps, m = {WIDTH}")
            ax.grid(True, which="both", alpha=0.3)
        figure_legend(fig, axes, ncol=2)
        dev = res["device"]
        where = dev["platform"] if dev["platform"] == "cpu" else f"{dev['platform']} {dev.get('kind', '')}"
        fig.suptitle(f"training throughput on {where} ({dev['cpu_count']} host cores), "
                     f"load {res['loadavg']['start'][0]:.1f} $\\to$ "
                     f"{res['loadavg'].get('end', [float('nan')])[0]:.1f}")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fig.savefig(path)  # at the style's resolution (savefig.dpi)
        plt.close(fig)

    draw()


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def render(path: str, figure: str | None, markdown: str | None) -> dict:
    """Table (stdout, and ``markdown`` if given) and figure from a benchmark JSON, without running anything."""
    with open(path) as f:
        res = json.load(f)
    res.setdefault("targets", targets(res))
    print_table(res)
    table = markdown_table(res)
    print("\n" + table)
    if markdown:
        with open(markdown, "w") as f:
            f.write(table + "\n")
    if figure:
        plot(res, figure)
        print(f"wrote {figure}")
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"T = {STEPS_QUICK}, R <= 256, chunk 16, fewer repetitions (a few minutes)")
    ap.add_argument("--json", default=None, help="write the results here (after every point)")
    ap.add_argument("--figure", default="figures/benchmark_throughput.png", help="'' for none")
    ap.add_argument("--markdown", default=None, help="write the docs table (markdown) here")
    ap.add_argument("--render", default=None, metavar="JSON",
                    help="only print the table and draw the figure of an existing JSON (nothing is run)")
    ap.add_argument("--steps", type=int, default=None, help=f"override T (default {STEPS_FULL}; quick {STEPS_QUICK})")
    ap.add_argument("--rs", default=None, help="override the R list, e.g. 1,16,1024,65536")
    ap.add_argument("--modes", default="gd,sgd")
    ap.add_argument("--impls", default=",".join(IMPLS),
                    help=f"implementations to time (default all of {','.join(IMPLS)}; torch only if installed)")
    ap.add_argument("--chunks", default=None,
                    help="fa-jax chunk sizes (runs per compiled call) measured at each R (default 16,64; quick 16)")
    ap.add_argument("--all-in-one", action=argparse.BooleanOptionalAction, default=None,
                    help="also measure all R runs in one call (the engine's 'auto'; default on, quick off)")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions per R (default 3; quick 2)")
    ap.add_argument("--min-time", type=float, default=MIN_TIME, help="seconds each timed point lasts at least")
    ap.add_argument("--ref-runs", type=int, default=None, help="runs timed per per-run loop (default 4; quick 2)")
    ap.add_argument("--width-runs", default=None,
                    help="runs per width, a list: the padding overhead at each (default 4,16; quick 1,4)")
    ap.add_argument("--widths", default=None, help="width sweep widths (default 16,32,64,128,256; quick 16,64,256)")
    ap.add_argument("--no-width", action="store_true")
    ap.add_argument("--shared-rs", default=None,
                    help="R list of the one-dataset comparison (default 16,64,256; quick 16,64; '' for none)")
    ap.add_argument("--peak-n", type=int, default=None,
                    help="matmul size of the peak measurement (default 4096 on CPU, quick 3072; 8192 on accelerators)")
    ap.add_argument("--precision", default="highest", choices=_sweep.PRECISIONS,
                    help="matmul precision of the engine and the hand-written reference")
    args = ap.parse_args(argv)
    if args.render:
        return render(args.render, args.figure, args.markdown)

    q = args.quick
    steps = args.steps or (STEPS_QUICK if q else STEPS_FULL)
    rs = _ints(args.rs) if args.rs else (R_QUICK if q else R_FULL)
    chunks = _ints(args.chunks) if args.chunks is not None else ((16,) if q else (16, 64))
    all_in_one = (not q) if args.all_in_one is None else args.all_in_one
    reps = args.reps or (2 if q else 3)
    ref_runs = args.ref_runs or (2 if q else 4)
    width_runs = _ints(args.width_runs) if args.width_runs else ((1, 4) if q else (4, 16))
    shared_rs = (_ints(args.shared_rs) if args.shared_rs else ()) if args.shared_rs is not None else \
        ((16, 64) if q else (16, 64, 256))
    widths = _ints(args.widths) if args.widths else (WIDTHS_QUICK if q else WIDTHS)
    modes = [m for m in args.modes.split(",") if m]
    impls = [i for i in args.impls.split(",") if i]
    bad = sorted(set(impls) - set(IMPLS))
    if bad:
        ap.error(f"invalid --impls {bad}: allowed {IMPLS}")
    accel = jax.default_backend() != "cpu"
    peak_n = args.peak_n or (8192 if accel else (3072 if q else 4096))

    def log(msg):
        print(msg, flush=True)

    t_start = time.perf_counter()
    torch_note = "installed" if torch is not None else \
        "absent: not installed (pip install torch==2.13.0, the CPU wheel); its columns are null"
    if torch is None:
        log(f"torch {torch_note}")
    else:
        torch.set_num_threads(os.cpu_count())
    argv_s = sys.argv[1:] if argv is None else argv
    res: dict = {"command": "python -m benchmarks.throughput " + shlex.join(argv_s),
                 "date": _dt.datetime.now().isoformat(timespec="seconds"),
                 "device": {**_device(), "cpu": platform.processor() or platform.machine()},
                 "versions": {**_versions(), "torch": torch.__version__ if torch is not None else "not installed"},
                 "torch": torch_note,
                 "gpu": (f"measured: {jax.devices()[0].device_kind}" if jax.default_backend() == "gpu"
                         else "not measured: no GPU available to this run"),
                 "settings": {"steps": steps, "rs": list(rs), "chunks": list(chunks), "all_in_one": all_in_one,
                              "reps": reps, "min_time_s": args.min_time, "ref_runs": ref_runs,
                              "width_runs": list(width_runs), "widths": list(widths), "impls": impls,
                              "shared_rs": list(shared_rs),
                              "precision": args.precision, "quick": q, "d": D, "k": K, "n": N_TRAIN, "m": WIDTH,
                              "batch": BATCH, "lr": LR, "init_scale": INIT_SCALE}}
    res["device"]["matmul_precision"] = args.precision

    def save(key=None, value=None):
        if key is not None:
            res[key] = value
        if args.json:
            os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
            tmp = f"{args.json}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(res, f, indent=2)
            os.replace(tmp, args.json)

    res["loadavg"] = {"start": _loadavg()}
    log(f"load average at start: {res['loadavg']['start']}")
    if set(impls) - {"fa_jax"}:
        res["gradient_check"] = check_references()
        log(f"reference gradients vs fa-jax (max relative error): {res['gradient_check']}")
    else:
        res["gradient_check"] = "not run: no reference implementation is timed"
    res["matmul"] = matmul_peak(peak_n)
    peak = res["matmul"]["peak"]
    res["peak_gflops"] = peak
    res["flops_per_step"] = {"gd": flops_per_step(N_TRAIN), "sgd": flops_per_step(BATCH),
                             "formula": "b N (4d + 3): b batch, N = 2m neurons, d inputs (matmuls only)"}
    log(f"matmul peak {peak:.1f} GFLOP/s ({res['matmul']})")
    save()
    for mode in modes:
        res[mode] = bench_mode(mode, rs, steps, chunks, all_in_one, reps, ref_runs, peak, log, impls=impls,
                               min_time=args.min_time, precision=args.precision, save=save)
    if shared_rs:
        res["shared_data"] = bench_shared(modes, shared_rs, steps, reps, peak, log, min_time=args.min_time,
                                          precision=args.precision, save=save)
    if not args.no_width:
        res["width"] = bench_width(steps, width_runs, reps, log, widths, min_time=args.min_time,
                                   precision=args.precision, save=save)
    res["loadavg"]["end"] = _loadavg()
    res["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res["wall_s"] = time.perf_counter() - t_start
    res["targets"] = targets(res)
    save()
    print_table(res)
    print(f"wall {res['wall_s']:.0f} s, process max RSS {res['max_rss_bytes'] / 2**20:.0f} MiB")
    if args.json:
        print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown_table(res) + "\n")
        print(f"wrote {args.markdown}")
    if args.figure:
        plot(res, args.figure)
        print(f"wrote {args.figure}")
    return res


if __name__ == "__main__":
    main()
