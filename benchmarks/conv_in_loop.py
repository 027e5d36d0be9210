"""Why the image conv net defaults to ``conv_impl="patches"``: one training step (``jax.grad`` of the CE loss) of
the small conv net, timed outside a loop, inside a ``lax.scan`` (the trainer's setting) and vmapped over runs
inside a scan, for both implementations of :mod:`fa_jax.models.image_nets`.

    python -m benchmarks.conv_in_loop [--side 16] [--batch 128] [--runs 4] [--steps 10] [--impls patches,lax]
                                      [--json PATH]

Prints ms per step (per run-step for the vmapped case) and, on XLA:CPU, shows jax-ml/jax#12868: the convolution's
gradient inside a loop body is far slower than the same op outside one. ``--impls`` may add ``auto`` (the patch
form on CPU, the library convolution elsewhere): on a GPU the three columns say which one the accelerator favours.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from fa_jax.models.image_nets import ImageNet, apply_image_net, init_image_net


def _best_ms(fn, *args, reps: int = 3) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up, untimed
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def measure(impl: str, side: int, batch: int, runs: int, steps: int) -> dict:
    cfg = ImageNet(arch="conv", head="multiclass", n_classes=2, channels=(16, 32), dense=64, conv_impl=impl).validate()
    shape = (side, side, 1)
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, *shape))
    y = (jnp.arange(batch) % 2).astype(jnp.int32)

    def loss(p):
        return -jnp.mean(jax.nn.log_softmax(apply_image_net(p, x, cfg))[jnp.arange(batch), y])

    def descend(p):
        def body(q, _):
            g = jax.grad(loss)(q)
            return jax.tree.map(lambda a, b: a - 0.01 * b, q, g), None
        return jax.lax.scan(body, p, None, length=steps)[0]

    p = init_image_net(0, cfg, shape)
    ps = jax.vmap(lambda s: init_image_net(s, cfg, shape))(jnp.arange(runs))
    return {"grad_ms": _best_ms(jax.jit(jax.grad(loss)), p),
            "scan_ms_per_step": _best_ms(jax.jit(descend), p) / steps,
            "vmap_scan_ms_per_run_step": _best_ms(jax.jit(jax.vmap(descend)), ps) / (steps * runs)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=16)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--impls", default="lax,patches", help="conv implementations to time (of patches, lax, auto)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    res = {"device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
           "versions": {"jax": jax.__version__}, "settings": vars(a)}
    for impl in [i for i in a.impls.split(",") if i]:
        res[impl] = measure(impl, a.side, a.batch, a.runs, a.steps)
        r = res[impl]
        print(f"{impl:8s} grad outside a loop {r['grad_ms']:8.2f} ms | inside a scan {r['scan_ms_per_step']:8.2f} ms/step"
              f" | vmapped over {a.runs} runs in a scan {r['vmap_scan_ms_per_run_step']:8.2f} ms/run-step", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
