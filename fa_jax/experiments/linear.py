"""A linear-regression run: the cheapest complete experiment (milliseconds to compile), with a closed form.

Data: ``x_i ~ N(0, I_d)``, ``y_i = <w*, x_i> + noise * e_i`` with ``w* ~ N(0, I_d / d)`` and ``e_i ~ N(0, 1)``
(``data_seed``); ``w_0 ~ init_scale * N(0, I_d / d)`` (``model_seed``). Loss: ``(1/2n) sum_i (<w, x_i> - y_i)^2``
(``fa_jax.losses.mse``). Full-batch GD has the closed form ``w_t - w_ls = (I - lr S)^t (w_0 - w_ls)``,
``S = X^T X / n`` (tests use it). Any optimiser of ``fa_jax.optim`` and any batching work, so sweep-engine features
(grouping, chunking, sharding, divergence, resumption) are tested on it without the cost of the big models.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ..config import check_fields, require, traced
from ..losses import mse
from ..optim import OptimConfig, inert_fields, make_optimizer
from ..trainer import TrainConfig, record_plan, train


@dataclasses.dataclass(frozen=True)
class LinearData:
    d: int = 8
    n_train: int = 64
    n_test: int = 256
    noise: float = traced(0.1)

    def validate(self) -> LinearData:
        check_fields(self, prefix="data.")  # types first: the range checks below compare numbers
        require(isinstance(self.d, int) and self.d >= 1, "data.d", "an integer >= 1", self.d)
        require(isinstance(self.n_train, int) and self.n_train >= 1, "data.n_train", "an integer >= 1", self.n_train)
        require(isinstance(self.n_test, int) and self.n_test >= 1, "data.n_test", "an integer >= 1", self.n_test)
        require(float(self.noise) >= 0, "data.noise", "a number >= 0", self.noise)
        return self


@dataclasses.dataclass(frozen=True)
class LinearRun:
    data: LinearData = dataclasses.field(default_factory=LinearData)
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(name="gd", lr=0.1))
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(steps=100, n_records=10))
    init_scale: float = traced(1.0)
    data_seed: int = traced(0)
    model_seed: int = traced(0)

    def validate(self) -> LinearRun:
        check_fields(self)  # types first: the range checks below compare numbers
        self.data.validate()
        self.optim.validate(self.data.n_train)
        self.train.validate()
        require(float(self.init_scale) >= 0, "init_scale", "a number >= 0", self.init_scale)
        return self

    def inert(self) -> dict[str, str]:
        return {f"optim.{k}": v for k, v in inert_fields(self.optim).items()}


def make_linear_data(key: jax.Array, cfg: LinearData) -> dict:
    """``{"w_star" (d,), "train": {"x" (samples, d), "y" (samples,)}, "test": {...}}``."""
    kw, ktr, kte = jax.random.split(key, 3)
    w_star = jax.random.normal(kw, (cfg.d,)) / jnp.sqrt(cfg.d)

    def sample(k, n):
        kx, ke = jax.random.split(k)
        x = jax.random.normal(kx, (n, cfg.d))
        return {"x": x, "y": x @ w_star + cfg.noise * jax.random.normal(ke, (n,))}

    return {"w_star": w_star, "train": sample(ktr, cfg.n_train), "test": sample(kte, cfg.n_test)}


def run_linear(cfg: LinearRun) -> dict:
    """Train ``w`` and record ``loss``/``test_loss`` and ``w`` (``(step, coef)``) on the plan.

    Returns ``{"records": {"loss", "test_loss", "w"}, "plan", "w", "w_star", "w0", "diverged_step", "diverged"}``.
    """
    data = make_linear_data(jax.random.PRNGKey(cfg.data_seed), cfg.data)
    k_init, k_batch = jax.random.split(jax.random.PRNGKey(cfg.model_seed))
    w0 = cfg.init_scale * jax.random.normal(k_init, (cfg.data.d,)) / jnp.sqrt(cfg.data.d)

    def loss_fn(p, x, y):
        return mse(x @ p["w"], y)

    def record_fn(p):
        return {"loss": jnp.mean(loss_fn(p, data["train"]["x"], data["train"]["y"])),
                "test_loss": jnp.mean(loss_fn(p, data["test"]["x"], data["test"]["y"])), "w": p["w"]}

    plan = record_plan(cfg.train.steps, cfg.train.n_records, cfg.train.plan)
    params, records, bad = train(loss_fn, {"w": w0}, data["train"]["x"], data["train"]["y"],
                                 make_optimizer(cfg.optim), plan=plan, record_fn=record_fn, key=k_batch,
                                 batch_size=cfg.optim.batch_size, sampling=cfg.optim.sampling)
    return {"records": records, "plan": jnp.asarray(plan), "w": params["w"], "w_star": data["w_star"], "w0": w0,
            "diverged_step": bad, "diverged": bad >= 0}
