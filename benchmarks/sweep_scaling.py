"""How sweep throughput scales with the number of vmapped runs (one compiled program per R).

Workload: feature-averaging data (d, k=8 split 4/4, n=512, sigma=1), binary two-layer ReLU net (m=64, fixed
+-1/m head), logistic loss, full-batch GD at lr=0.1 for T steps; one run = one seed. Training only (no attacks),
through the engine's own data generator, model, optax optimiser and scan trainer.

    python -m benchmarks.sweep_scaling [--quick] [--json PATH]

Prints compile seconds and run-steps/s (R * T / seconds) for each R; results are measurements of this machine,
not targets (the full benchmark suite against other implementations is a separate issue).
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from fa_jax.config import with_values
from fa_jax.data.clusters import ClusterData, make_cluster_data
from fa_jax.losses import logistic
from fa_jax.models.two_layer import (
    TwoLayerNet,
    apply_two_layer,
    init_two_layer,
    readout_matrix,
)
from fa_jax.optim import OptimConfig, make_optimizer
from fa_jax.summary import device, versions
from fa_jax.trainer import record_plan, train


def make_program(data_cfg, model_cfg, optim_cfg, steps):
    plan = record_plan(steps, 4, "linear")

    def one(seed, lr):
        data = make_cluster_data(jax.random.PRNGKey(seed), data_cfg)
        params = init_two_layer(jax.random.fold_in(jax.random.PRNGKey(seed), 2), model_cfg, data_cfg.d, data_cfg.k)
        A = readout_matrix(model_cfg, data_cfg.k)

        def loss_fn(p, x, y):
            return logistic(apply_two_layer(p, x, A)[:, 0], y)

        opt = make_optimizer(with_values(optim_cfg, {"lr": lr}))
        x, y = data["train"]["x"], data["train"]["y"]
        _, rec, _ = train(loss_fn, params, x, y, opt, plan=plan,
                       record_fn=lambda p: jnp.mean(loss_fn(p, x, y)))
        return rec

    return jax.jit(jax.vmap(one))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    steps = 200 if args.quick else 2000
    rs = (1, 16, 64) if args.quick else (1, 16, 64, 256)
    data_cfg = ClusterData(d=256, k=8, n_pos=4, n_train=512, n_test=8)
    model_cfg = TwoLayerNet(width=64, bias=True, init_scale=1e-3).validate()
    optim_cfg = OptimConfig(name="gd", lr=0.1)
    out = {"steps": steps, "device": device(), "versions": versions(), "runs": {}}
    print(f"{'R':>6s} {'compile s':>10s} {'run s':>8s} {'run-steps/s':>12s}")
    for R in rs:
        prog = make_program(data_cfg, model_cfg, optim_cfg, steps)
        seeds = jnp.arange(R, dtype=jnp.int32)
        lrs = jnp.full((R,), 0.1, jnp.float32)
        t0 = time.perf_counter()
        compiled = prog.lower(seeds, lrs).compile()
        t1 = time.perf_counter()
        jax.block_until_ready(compiled(seeds, lrs))
        t2 = time.perf_counter()
        jax.block_until_ready(compiled(seeds + 1000, lrs))  # timed call: warm, new seeds
        t3 = time.perf_counter()
        rate = R * steps / (t3 - t2)
        out["runs"][str(R)] = {"compile_s": t1 - t0, "run_s": t3 - t2, "run_steps_per_s": rate}
        print(f"{R:6d} {t1 - t0:10.2f} {t3 - t2:8.3f} {rate:12.0f}")
        del t2
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
