"""Training throughput of the fa-jax sweep engine against per-run loops and against this machine's matmul peak.

    python -m benchmarks.throughput [--quick] [--json PATH] [--figure PATH]

Workload (issue 6). Feature-averaging data (d=256, k=8 clusters split 4/4, n=512 train points, sigma=1); binary
two-layer ReLU net f(x) = a . ReLU(W x + b) with m=64 neurons per side (N = 2m = 128 neurons, W (N, d), b (N,)),
fixed head a = [+1/m]*m + [-1/m]*m; logistic loss mean_i softplus(-y_i f(x_i)); init N(0, 1e-3^2); lr 0.1.
* ``gd``: full-batch gradient descent, T steps (2000; ``--quick``: 30).
* ``sgd``: mini-batch SGD, b=32 indices drawn iid per step (sampling with replacement), same T.
One run = one seed: the seed sets the data (centres and noise) and the init. Runs R in {1, 16, 64, 256, 1024}
(``--quick``: R <= 256). Width sweep: m in {16, 32, 64, 128, 256} (quick: {16, 64, 256}), GD, every width in ONE
padded program (bucket 256, masked neurons) vs one program per width.

Implementations, timed in ONE process and interleaved per R (each repetition runs fa-jax, the PyTorch loop and the
NumPy loop back to back, in a rotating order), so that the load of this shared machine affects all alike:
* ``fa_jax``: the engine, ``fa_jax.sweep.run_sweep`` over R configs (``run_training`` below: the package's data
  generator, model, optax optimiser and scan trainer; records only the loss at steps 0 and T). Compilation is
  done (and timed) before the timed calls through the engine's own program cache, and ``STATS.traces`` checks
  that no timed call compiles; programs of <= 64 runs get one untimed warm-up call. Chunk sizes (runs per
  compiled call, ``run_sweep(chunk_size=...)``) ``--chunks`` (default 16 and 64; quick: 16) and, unless quick,
  ``R`` (all runs in one call, the engine's default ``"auto"``) are measured; ``fa_jax`` is the best of them,
  every variant is kept in the JSON.
* ``torch_loop``: "the papers' way": a plain PyTorch CPU loop, one run after another (autograd +
  ``torch.optim.SGD``), ``torch.set_num_threads(os.cpu_count())``. Optional (``pip install torch==2.13.0``, the
  CPU wheel); skipped with a message when absent.
* ``numpy_loop``: a plain NumPy loop with a hand-written forward/backward.
A per-run loop's throughput does not depend on R (its runs are sequential and independent), so the loops time
``min(R, --ref-runs)`` complete runs at every R; ``*_runs_timed`` in the JSON says how many. Each loop's
gradient is checked against fa-jax's (``jax.grad`` of the same loss) on the same data and parameters before
anything is timed (relative error <= 1e-4, full batch and a mini-batch); a disagreement aborts the benchmark.
The loops draw their data and init from their own generators (same distributions, same shapes, float32).

FLOPs per run-step (matmuls only; element-wise work, data generation and the optimiser update are not counted):
    forward   Z = X_b W^T     2 b d N        f = ReLU(Z + b) a          2 b N
    backward  dW = dZ^T X_b   2 b d N        dZ = (df a^T) * 1[Z>0]       b N  (rank-1 outer product)
    total     b N (4 d + 3),  b = n = 512 (GD) or 32 (SGD),  N = 2m
(no gradient with respect to the inputs is needed). GD: 67,305,472; SGD: 4,206,592 FLOPs per run-step.
% of peak = run-steps/s * FLOPs per run-step / peak, where the peak is the best float32 GFLOP/s measured here on a
large square matmul (NumPy, jax.jit(jnp.dot), and torch when installed). The roofline drawn in the figure is
peak / FLOPs per run-step.

Targets from the issue (REPORTED as met / not met, never asserted): GD at R=1024 >= 70 % of peak and >= 3.5x the
torch loop; SGD at R=1024 >= 15x the torch loop; width-sweep padding overhead <= 1.3x; compile <= 2 s per program.

Outputs: a table on stdout, ``--json`` (keys per mode and R, see ``_entry``), ``--figure``
(default figures/benchmark_throughput.png). This is a benchmark, not a test: nothing here is asserted except the
gradient agreement of the reference loops.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import resource
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
from fa_jax.models.two_layer import TwoLayerNet, apply_two_layer, init_two_layer, readout_matrix
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
WIDTHS = (16, 32, 64, 128, 256)
WIDTHS_QUICK = (16, 64, 256)
WARMUP_MAX = 64  # programs of at most this many runs get one untimed warm-up call
TOL = 1e-4  # relative gradient agreement required of the reference loops


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


def run_training(cfg: BenchRun) -> dict:
    """fa-jax: one training run as a pure function of its config (the sweep engine vmaps it over runs)."""
    key = jax.random.PRNGKey(cfg.seed)
    data = make_cluster_data(jax.random.fold_in(key, 1), cfg.data)
    params = init_two_layer(jax.random.fold_in(key, 2), cfg.model, cfg.data.d, 1)
    loss_fn = _loss_fn(readout_matrix(cfg.model, 1))
    x, y = data["train"]["x"], data["train"]["y"]
    _, rec, bad = train(loss_fn, params, x, y, make_optimizer(cfg.optim), plan=(0, cfg.steps),
                        record_fn=lambda p: jnp.mean(loss_fn(p, x, y)), key=jax.random.fold_in(key, 3),
                        batch_size=cfg.optim.batch_size, sampling=cfg.optim.sampling)
    return {"loss": rec, "diverged_step": bad}


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

    Returns ``{"numpy": {"full": rel_err, "batch": rel_err}, "torch": {...} (if installed)}``, the max over
    loss, dW and db of |ref - fa_jax| / |fa_jax|. A larger init than the benchmark's makes the ReLU pattern and
    the gradient non-trivial.
    """
    cfg = ClusterData(d=d, k=k, n_pos=k // 2, n_train=n, n_test=1, sigma=SIGMA).validate()
    data = jax.jit(make_cluster_data, static_argnums=1)(jax.random.PRNGKey(seed), cfg)  # one compile, not per op
    model = TwoLayerNet(kind="binary", width=width, init_scale=init_scale).validate()
    init = jax.jit(init_two_layer, static_argnums=(1, 2, 3))
    params = {kk: np.asarray(v) for kk, v in init(jax.random.PRNGKey(seed + 1), model, d, 1).items()}
    x, y = np.asarray(data["train"]["x"]), np.asarray(data["train"]["y"])
    idx = np.random.default_rng(seed).integers(0, n, min(batch, n))
    a = head_vector(width)
    out: dict = {"numpy": {}}
    if torch is not None:
        out["torch"] = {}
    for name, (xb, yb) in {"full": (x, y), "batch": (x[idx], y[idx])}.items():
        l_ref, g_ref = fa_jax_grad(params, xb, yb, width)
        l_np, gw, gb = numpy_loss_grad(params["w"].copy(), params["b"].copy(), a, xb, yb)
        out["numpy"][name] = max(_rel(l_np, l_ref), _rel(gw, g_ref["w"]), _rel(gb, g_ref["b"]))
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
        raise SystemExit(f"reference loops disagree with fa-jax's gradient (relative error > {tol}): {bad}; "
                         "the comparison would not be of the same computation")
    return res


# ----------------------------------------------------------------------------- the hardware limit
def matmul_peak(n: int = 4096, reps: int = 3) -> dict:
    """Best float32 GFLOP/s of an n x n matmul (NumPy, jax.jit(jnp.dot), torch if installed); the max is the peak."""
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

    out = {"n": n, "numpy": best(lambda: a @ b)}
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    dot = jax.jit(jnp.dot)
    out["jax"] = best(lambda: dot(ja, jb).block_until_ready())
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out["torch"] = best(lambda: ta @ tb)
    out["peak"] = max(v for k, v in out.items() if k != "n")
    return out


# ----------------------------------------------------------------------------- timing
def _loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


_COMPILE_S: dict = {}


def _fa_jax_prepare(configs: list, chunk: int) -> dict:
    """Compile the engine's program(s) for ``configs`` at ``chunk`` through its own cache; seconds and bytes."""
    devices = tuple(jax.local_devices())
    groups = _sweep.group_configs(configs)
    out = {"compile_s": [], "footprint_bytes": []}
    for key, idx in groups.items():
        size = min(chunk, len(idx))
        size = -(-size // len(devices)) * len(devices)
        t = time.perf_counter()
        compiled, _ = _sweep._program(run_training, key, configs[idx[0]], size, devices)
        # a program already compiled for an earlier R is a cache hit: report its first compilation
        dt = _COMPILE_S.setdefault((key, size), time.perf_counter() - t)
        out["compile_s"].append(dt)
        out["footprint_bytes"].append(_sweep._footprint(compiled))
    return out


def _fa_jax_time(configs: list, chunk: int) -> float:
    traces = _sweep.STATS.traces
    t = time.perf_counter()
    res = _sweep.run_sweep(run_training, configs, chunk_size=chunk, progress=False)
    dt = time.perf_counter() - t
    if _sweep.STATS.traces != traces:
        raise RuntimeError("a timed fa-jax call compiled: the timing would include compilation")
    if any(bool(r["diverged"]) for r in res):
        raise RuntimeError("a benchmark run diverged")
    return dt


def _loop_time(run, mode: str, runs: int, steps: int) -> float:
    t = time.perf_counter()
    for s in range(runs):
        run(s, mode, steps)
    return time.perf_counter() - t


def bench_mode(mode: str, rs, steps: int, chunks, all_in_one: bool, reps: int, ref_runs: int, peak: float,
               log) -> dict:
    fps = flops_per_step(N_TRAIN if mode == "gd" else BATCH)
    impls = ["fa_jax", "numpy_loop"] + (["torch_loop"] if torch is not None else [])
    # warm the loops (thread pools, allocators) outside any timing
    numpy_run(0, mode, 5)
    if torch is not None:
        torch_run(0, mode, 5)
    out = {}
    for R in rs:
        configs = [bench_config(mode, steps, seed=s) for s in range(R)]
        sizes = sorted({min(R, c) for c in chunks} | ({R} if all_in_one or not chunks else set()), reverse=True)
        prep = {c: _fa_jax_prepare(configs, c) for c in sizes}
        for c in sizes:  # warm-up: one untimed chunk per program (skipped for big all-in-one programs)
            if c <= WARMUP_MAX:
                _fa_jax_time(configs[:c], c)
        nref = min(R, ref_runs)
        times: dict[str, list[float]] = {f"fa_jax@{c}": [] for c in sizes}
        times.update({i: [] for i in impls if i != "fa_jax"})
        load0 = _loadavg()
        for rep in range(reps):
            order = impls[rep % len(impls):] + impls[:rep % len(impls)]  # rotate who goes first
            for impl in order:
                if impl == "fa_jax":
                    for c in sizes:
                        times[f"fa_jax@{c}"].append(_fa_jax_time(configs, c))
                elif impl == "numpy_loop":
                    times[impl].append(_loop_time(numpy_run, mode, nref, steps))
                else:
                    times[impl].append(_loop_time(torch_run, mode, nref, steps))
        e = {"steps": steps, "flops_per_step": fps, "loadavg": {"start": load0, "end": _loadavg()}}
        variants = {}
        for c in sizes:
            ts = times[f"fa_jax@{c}"]
            variants[str(c)] = {"run_steps_per_s": R * steps / statistics.median(ts),
                                "reps_run_steps_per_s": [R * steps / t for t in ts],
                                "compile_s": prep[c]["compile_s"][0], "footprint_bytes": prep[c]["footprint_bytes"][0]}
        best = max(variants, key=lambda c: variants[c]["run_steps_per_s"])
        e.update({"fa_jax": variants[best]["run_steps_per_s"], "fa_jax_chunk": int(best),
                  "fa_jax_all_in_one": variants[str(R)]["run_steps_per_s"] if str(R) in variants else None,
                  "compile_s": variants[best]["compile_s"], "peak_mem_bytes": variants[best]["footprint_bytes"],
                  "fa_jax_variants": variants})
        for impl in ("torch_loop", "numpy_loop"):
            if impl in times:
                ts = times[impl]
                e[impl] = nref * steps / statistics.median(ts)
                e[f"{impl}_reps"] = [nref * steps / t for t in ts]
                e[f"{impl}_runs_timed"] = nref
            else:
                e[impl] = None
        e["ratio_vs_torch"] = e["fa_jax"] / e["torch_loop"] if e["torch_loop"] else None
        e["ratio_vs_numpy"] = e["fa_jax"] / e["numpy_loop"]
        e["gflops"] = {i: (e[i] * fps / 1e9 if e[i] else None) for i in ("fa_jax", "torch_loop", "numpy_loop")}
        e["pct_peak"] = {i: (100 * g / peak if g else None) for i, g in e["gflops"].items()}
        out[str(R)] = e
        log(f"  {mode} R={R}: fa_jax {e['fa_jax']:.0f} (chunk {best}), torch {_fmt(e['torch_loop'])}, "
            f"numpy {e['numpy_loop']:.0f} run-steps/s; load {e['loadavg']}")
    return out


def bench_width(steps: int, runs_per_width: int, reps: int, log, widths=WIDTHS) -> dict:
    """Width sweep, GD: all widths padded to the largest in ONE program vs one program per width (interleaved)."""
    WIDTHS = tuple(widths)  # shadows the module default on purpose
    padded = [bench_config("gd", steps, seed=s, width=m, bucket=max(WIDTHS)) for m in WIDTHS
              for s in range(runs_per_width)]
    separate = [bench_config("gd", steps, seed=s, width=m) for m in WIDTHS for s in range(runs_per_width)]
    total = len(padded)
    prep_p = _fa_jax_prepare(padded, total)
    prep_s = _fa_jax_prepare(separate, total)
    _fa_jax_time(padded, total)  # warm-up, untimed
    _fa_jax_time(separate, total)
    tp, ts = [], []
    load0 = _loadavg()
    for rep in range(reps):
        pair = [(padded, tp), (separate, ts)]
        for cfgs, acc in (pair if rep % 2 == 0 else pair[::-1]):
            acc.append(_fa_jax_time(cfgs, total))
    tp_m, ts_m = statistics.median(tp), statistics.median(ts)
    useful = sum(flops_per_step(N_TRAIN, m) for m in WIDTHS) * runs_per_width * steps
    out = {
        "widths": list(WIDTHS), "runs_per_width": runs_per_width, "steps": steps, "bucket": max(WIDTHS),
        "padded": {"programs": len(prep_p["compile_s"]), "compile_s": prep_p["compile_s"],
                   "run_s": tp_m, "reps_run_s": tp, "run_steps_per_s": total * steps / tp_m,
                   "useful_gflops": useful / tp_m / 1e9, "footprint_bytes": prep_p["footprint_bytes"]},
        "separate": {"programs": len(prep_s["compile_s"]), "compile_s": prep_s["compile_s"],
                     "run_s": ts_m, "reps_run_s": ts, "run_steps_per_s": total * steps / ts_m,
                     "useful_gflops": useful / ts_m / 1e9, "footprint_bytes": prep_s["footprint_bytes"]},
        "overhead": tp_m / ts_m,
        "overhead_with_compile": (tp_m + sum(prep_p["compile_s"])) / (ts_m + sum(prep_s["compile_s"])),
        "flop_ratio_padded_vs_separate": len(WIDTHS) * max(WIDTHS) / sum(WIDTHS),
        "loadavg": {"start": load0, "end": _loadavg()},
    }
    log(f"  width: padded {tp_m:.2f} s (1 program) vs separate {ts_m:.2f} s ({out['separate']['programs']} "
        f"programs): overhead {out['overhead']:.2f}x")
    return out


# ----------------------------------------------------------------------------- report
def _fmt(v, spec=".0f"):
    return "-" if v is None else format(v, spec)


def targets(res: dict) -> list[dict]:
    out = []

    def at_top(mode):
        rs = sorted(res[mode], key=int)
        return rs[-1]

    for mode, metric, want in (("gd", "pct_peak", 70.0), ("gd", "ratio_vs_torch", 3.5), ("sgd", "ratio_vs_torch", 15.0)):
        if mode not in res:
            continue
        R = at_top(mode)
        e = res[mode][R]
        val = e["pct_peak"]["fa_jax"] if metric == "pct_peak" else e[metric]
        note = "" if R == "1024" else f"R=1024 not run; reported at the largest R={R}"
        out.append({"name": f"{mode} R=1024 {metric} >= {want}", "at_R": int(R), "measured": val, "target": want,
                    "met": None if val is None else bool(val >= want), "note": note})
    if "width" in res:
        v = res["width"]["overhead"]
        out.append({"name": "width padding overhead <= 1.3x", "measured": v, "target": 1.3, "met": bool(v <= 1.3),
                    "note": ""})
    comp = [e["compile_s"] for m in ("gd", "sgd") if m in res for e in res[m].values()]
    for m in ("gd", "sgd"):
        for e in res.get(m, {}).values():
            comp += [v["compile_s"] for v in e["fa_jax_variants"].values()]
    if "width" in res:
        comp += res["width"]["padded"]["compile_s"] + res["width"]["separate"]["compile_s"]
    if comp:
        out.append({"name": "compile <= 2 s per program", "measured": max(comp), "target": 2.0,
                    "met": bool(max(comp) <= 2.0), "note": f"max over {len(comp)} compilations"})
    return out


def print_table(res: dict) -> None:
    print(f"\nmatmul peak (float32, {res['matmul']['n']}^2): " +
          ", ".join(f"{k} {v:.1f}" for k, v in res["matmul"].items() if k not in ("n",)) + " GFLOP/s")
    print(f"FLOPs per run-step: GD {res['flops_per_step']['gd']:,}  SGD {res['flops_per_step']['sgd']:,}"
          f"  ({res['flops_per_step']['formula']})")
    hdr = (f"{'mode':4s} {'R':>5s} {'fa-jax':>9s} {'chunk':>5s} {'compile':>7s} {'torch':>8s} {'numpy':>8s} "
           f"{'x torch':>7s} {'x numpy':>7s} {'%pk fa':>6s} {'%pk th':>6s} {'%pk np':>6s} {'load start->end':>17s}")
    print("\nrun-steps/s (R runs x T steps / s; median of interleaved reps; compile s separate)")
    print(hdr)
    for mode in ("gd", "sgd"):
        for R, e in sorted(res.get(mode, {}).items(), key=lambda kv: int(kv[0])):
            pk = e["pct_peak"]
            print(f"{mode:4s} {R:>5s} {e['fa_jax']:9.0f} {e['fa_jax_chunk']:5d} {e['compile_s']:7.2f} "
                  f"{_fmt(e['torch_loop'], '8.0f'):>8s} {e['numpy_loop']:8.0f} {_fmt(e['ratio_vs_torch'], '7.2f'):>7s} "
                  f"{e['ratio_vs_numpy']:7.2f} {_fmt(pk['fa_jax'], '6.1f'):>6s} {_fmt(pk['torch_loop'], '6.1f'):>6s} "
                  f"{_fmt(pk['numpy_loop'], '6.1f'):>6s} {e['loadavg']['start'][0]:>7.2f}->{e['loadavg']['end'][0]:<.2f}")
    if "width" in res:
        w = res["width"]
        print(f"\nwidth sweep m={w['widths']} x {w['runs_per_width']} runs, GD {w['steps']} steps:")
        for k in ("padded", "separate"):
            v = w[k]
            print(f"  {k:8s}: {v['programs']} program(s), compile {sum(v['compile_s']):.2f} s, run {v['run_s']:.2f} s, "
                  f"{v['run_steps_per_s']:.0f} run-steps/s, {v['useful_gflops']:.1f} useful GFLOP/s")
        print(f"  overhead padded/separate: {w['overhead']:.2f}x run time ({w['overhead_with_compile']:.2f}x with "
              f"compile); FLOP ratio {w['flop_ratio_padded_vs_separate']:.2f}x")
    print(f"\nload average (1/5/15 min): start {res['loadavg']['start']}, end {res['loadavg']['end']}")
    print("targets (reported, not asserted):")
    for t in res["targets"]:
        met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        print(f"  {t['name']}: measured {_fmt(t['measured'], '.2f')} -> {met} {t['note']}")


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("gd", "sgd") if m in res]
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), squeeze=False)
    styles = {"fa_jax": ("fa-jax (sweep engine)", "C0", "o"), "torch_loop": ("PyTorch per-run loop", "C3", "s"),
              "numpy_loop": ("NumPy per-run loop", "C2", "^")}
    for ax, mode in zip(axes[0], modes):
        rs = sorted(res[mode], key=int)
        x = [int(r) for r in rs]
        for impl, (label, color, marker) in styles.items():
            y = [res[mode][r][impl] for r in rs]
            if all(v is not None for v in y):
                ax.plot(x, y, marker=marker, color=color, label=label)
        roof = res["peak_gflops"] * 1e9 / res["flops_per_step"][mode]
        ax.axhline(roof, color="k", ls="--", label=f"roofline: peak {res['peak_gflops']:.0f} GFLOP/s / FLOPs per step")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("runs R")
        ax.set_ylabel("run-steps / s")
        steps = res[mode][rs[0]]["steps"]
        title = "full-batch GD" if mode == "gd" else f"SGD b={BATCH}"
        ax.set_title(f"{title}, {steps} steps, m={WIDTH}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="center right", framealpha=0.8)
    dev = res["device"]
    fig.suptitle(f"training throughput on {dev['platform']} ({dev['cpu_count']} cores), "
                 f"load {res['loadavg']['start'][0]:.1f}->{res['loadavg']['end'][0]:.1f}", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, R <= 256, fewer repetitions (< 3 min)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--figure", default="figures/benchmark_throughput.png")
    ap.add_argument("--steps", type=int, default=None, help="override T (default 2000; quick 30)")
    ap.add_argument("--rs", default=None, help="override the R list, e.g. 1,16,1024")
    ap.add_argument("--modes", default="gd,sgd")
    ap.add_argument("--chunks", default=None,
                    help="fa-jax chunk sizes (runs per compiled call) measured at each R (default 16,64; quick 16)")
    ap.add_argument("--all-in-one", action=argparse.BooleanOptionalAction, default=None,
                    help="also measure all R runs in one call (the engine's 'auto'; default on, quick off)")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions per R (default 3; quick 2)")
    ap.add_argument("--ref-runs", type=int, default=None, help="runs timed per reference loop (default 4; quick 2)")
    ap.add_argument("--width-runs", type=int, default=None, help="runs per width (default 16; quick 4)")
    ap.add_argument("--no-width", action="store_true")
    args = ap.parse_args(argv)

    q = args.quick
    steps = args.steps or (30 if q else 2000)
    rs = tuple(int(r) for r in args.rs.split(",")) if args.rs else (R_QUICK if q else R_FULL)
    chunks = tuple(int(c) for c in args.chunks.split(",") if c) if args.chunks is not None else \
        ((16,) if q else (16, 64))
    all_in_one = (not q) if args.all_in_one is None else args.all_in_one
    reps = args.reps or (2 if q else 3)
    ref_runs = args.ref_runs or (2 if q else 4)
    width_runs = args.width_runs or (4 if q else 16)
    modes = [m for m in args.modes.split(",") if m]

    def log(msg):
        print(msg, flush=True)

    t_start = time.perf_counter()
    if torch is None:
        log("torch not installed: the PyTorch loop columns are skipped (pip install torch==2.13.0, the CPU wheel)")
    else:
        torch.set_num_threads(os.cpu_count())
    res: dict = {"command": "python -m benchmarks.throughput " + " ".join(sys.argv[1:] if argv is None else argv),
                 "date": _dt.datetime.now().isoformat(timespec="seconds"),
                 "device": {**_device(), "cpu": platform.processor() or platform.machine()},
                 "versions": {**_versions(), "torch": torch.__version__ if torch is not None else "not installed"},
                 "gpu": "not measured: no GPU available to this run",
                 "settings": {"steps": steps, "rs": list(rs), "chunks": list(chunks), "all_in_one": all_in_one, "reps": reps,
                              "ref_runs": ref_runs, "width_runs": width_runs, "quick": q, "d": D, "k": K,
                              "n": N_TRAIN, "m": WIDTH, "batch": BATCH, "lr": LR, "init_scale": INIT_SCALE}}
    res["loadavg"] = {"start": _loadavg()}
    log(f"load average at start: {res['loadavg']['start']}")
    res["gradient_check"] = check_references()
    log(f"reference gradients vs fa-jax (max relative error): {res['gradient_check']}")
    res["matmul"] = matmul_peak(3072 if q else 4096)
    peak = res["matmul"]["peak"]
    res["peak_gflops"] = peak
    res["flops_per_step"] = {"gd": flops_per_step(N_TRAIN), "sgd": flops_per_step(BATCH),
                             "formula": "b N (4d + 3): b batch, N = 2m neurons, d inputs (matmuls only)"}
    log(f"matmul peak {peak:.1f} GFLOP/s ({res['matmul']})")
    for mode in modes:
        res[mode] = bench_mode(mode, rs, steps, chunks, all_in_one, reps, ref_runs, peak, log)
    if not args.no_width:
        res["width"] = bench_width(steps, width_runs, reps, log, WIDTHS_QUICK if q else WIDTHS)
    res["loadavg"]["end"] = _loadavg()
    res["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res["wall_s"] = time.perf_counter() - t_start
    res["targets"] = targets(res)
    print_table(res)
    print(f"wall {res['wall_s']:.0f} s, process max RSS {res['max_rss_bytes'] / 2**20:.0f} MiB")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")
    if args.figure:
        plot(res, args.figure)
        print(f"wrote {args.figure}")
    return res


if __name__ == "__main__":
    main()
