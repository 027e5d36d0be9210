"""Runs of different widths on shared data: separate programs vs one padded program vs one packed neuron axis.

A probe for issue 19 item 2 (the engine does not pack yet; it pads every run of a group to the group's widest
net). Workload: ``per`` runs at each width m of ``widths`` (init seeds 0..per-1), all on ONE dataset (``x (samples,
d)`` Gaussian, ``y`` = sign of its first coordinate), binary two-layer ReLU net f(x) = sum_j a_j relu(w_j.x + b_j)
with the fixed head a = (+1/m, ..., -1/m, ...) (``benchmarks.throughput.head_vector``; the loss is its
``hand_loss``), logistic loss, full-batch GD at ``lr`` for T steps, float32.

* separate: one ``jit(vmap(train))`` per width (what a user writes; the FLOP floor);
* padded: every run padded to 2 max(m) neurons, one ``jit(vmap(train))`` (the engine's layout today); a padding
  neuron has zero weights, bias and head, so its activation and gradient are 0 and it stays 0;
* packed: every run's neurons concatenated on ONE neuron axis, ``W (neurons, d)``, ``b (neurons,)``, trained as one
  parameter set (the runs' parameters are disjoint, so the gradient of the summed per-run losses is each run's own
  gradient); the per-run outputs are ``relu(x W^T + b) A`` with the read-out ``A (neurons, runs)`` holding a_j in
  column run(j) (segment sums written as one matmul; ``jax.ops.segment_sum`` measured 1.72x separate vs 0.98x).

    python -m benchmarks.width_packing [--steps T] [--per R] [--widths 16,64,256] [--json PATH]

Prints the median seconds of each (interleaved repetitions, compile excluded) and padded / separate, packed /
separate; the three final losses agree to float reassociation (``max_abs_diff``).
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.throughput import hand_loss, head_vector

D, SAMPLES, LR, INIT_SCALE = 256, 512, 0.05, 1e-3


def dataset(d: int = D, n: int = SAMPLES):
    """The shared data: ``x (samples, d)``, ``y (samples,)`` in {-1, +1}."""
    x = jax.random.normal(jax.random.PRNGKey(0), (n, d))
    return x, jnp.where(x[:, 0] >= 0, 1.0, -1.0)


def init(seed: int, m: int, d: int):
    """One run's ``W (2m, d)``, ``b (2m,)`` and fixed head ``a (2m,)``."""
    W = INIT_SCALE * jax.random.normal(jax.random.PRNGKey(seed), (2 * m, d))
    return W, jnp.zeros((2 * m,)), jnp.asarray(head_vector(m))


def _train(W, b, a, x, y, steps: int, lr: float):
    grad = jax.grad(hand_loss, argnums=(0, 1))

    def step(_, wb):
        gW, gb = grad(*wb, a, x, y)
        return wb[0] - lr * gW, wb[1] - lr * gb

    W, b = jax.lax.fori_loop(0, steps, step, (W, b))
    return hand_loss(W, b, a, x, y)


def _vtrain(steps: int, lr: float):
    return jax.jit(jax.vmap(lambda W, b, a, x, y: _train(W, b, a, x, y, steps, lr), in_axes=(0, 0, 0, None, None)))


def _packed_losses(W, b, A, x, y):
    """Per-run losses ``(runs,)`` of the packed nets: ``A (neurons, runs)`` is the read-out."""
    return jnp.mean(jax.nn.softplus(-y[:, None] * (jax.nn.relu(x @ W.T + b) @ A)), axis=0)


def _packed_train(steps: int, lr: float):
    def run(W, b, A, x, y):
        grad = jax.grad(lambda W, b: jnp.sum(_packed_losses(W, b, A, x, y)), argnums=(0, 1))

        def step(_, wb):
            gW, gb = grad(*wb)
            return wb[0] - lr * gW, wb[1] - lr * gb

        W, b = jax.lax.fori_loop(0, steps, step, (W, b))
        return _packed_losses(W, b, A, x, y)

    return jax.jit(run)


def layouts(widths, per: int, d: int):
    """The same runs (width-major, seeds 0..per-1) in the three layouts' input arrays."""
    runs = [(m, s) for m in widths for s in range(per)]
    params = [init(s, m, d) for m, s in runs]
    separate = []
    for m in widths:
        ps = [p for (mm, _), p in zip(runs, params) if mm == m]
        separate.append(tuple(jnp.stack(z) for z in zip(*ps)))
    wide = 2 * max(widths)
    padded = tuple(jnp.stack([jnp.pad(v, [(0, wide - len(v))] + [(0, 0)] * (v.ndim - 1)) for v in z])
                   for z in zip(*params))
    seg = np.concatenate([np.full(len(b), r) for r, (_, b, _) in enumerate(params)])
    a = jnp.concatenate([p[2] for p in params])
    A = jnp.zeros((len(seg), len(runs)), a.dtype).at[jnp.arange(len(seg)), seg].set(a)
    packed = (jnp.concatenate([p[0] for p in params]), jnp.concatenate([p[1] for p in params]), A)
    return separate, padded, packed


def compare(widths=(16, 64, 256), per: int = 4, steps: int = 200, d: int = D, n: int = SAMPLES, reps: int = 3,
            lr: float = LR) -> dict:
    """Final losses of the three layouts (``(runs,)`` each, width-major) and their median run seconds."""
    x, y = dataset(d, n)
    separate, padded, packed = layouts(widths, per, d)
    vtrain, ptrain = _vtrain(steps, lr), _packed_train(steps, lr)
    calls = {"separate": lambda: [vtrain(*z, x, y) for z in separate], "padded": lambda: [vtrain(*padded, x, y)],
             "packed": lambda: [ptrain(*packed, x, y)]}  # each: a list of (runs,) final losses, width-major
    losses = {k: np.concatenate(jax.block_until_ready(f())) for k, f in calls.items()}  # also compiles
    times: dict[str, list] = {k: [] for k in calls}
    for _ in range(reps):  # interleaved: a slow moment of the machine hits every layout
        for k, f in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t)
    sec = {k: float(np.median(v)) for k, v in times.items()}
    return {"settings": {"widths": list(widths), "per": per, "steps": steps, "d": d, "samples": n, "reps": reps,
                         "device": jax.devices()[0].device_kind},
            "seconds": sec, "padded_over_separate": sec["padded"] / sec["separate"],
            "packed_over_separate": sec["packed"] / sec["separate"],
            "max_abs_diff": {k: float(np.max(np.abs(losses[k] - losses["separate"]))) for k in ("padded", "packed")},
            "losses": {k: v.tolist() for k, v in losses.items()}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--per", type=int, default=4, help="runs per width")
    ap.add_argument("--widths", default="16,64,256")
    ap.add_argument("--d", type=int, default=D)
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    res = compare(tuple(int(w) for w in a.widths.split(",")), a.per, a.steps, a.d, a.samples, a.reps)
    s = res["seconds"]
    print(f"T = {a.steps}, {a.per} runs per width {a.widths}: separate {s['separate']:.3f} s, padded "
          f"{s['padded']:.3f} s ({res['padded_over_separate']:.2f}x), packed {s['packed']:.3f} s "
          f"({res['packed_over_separate']:.2f}x); max |loss - separate| {res['max_abs_diff']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
