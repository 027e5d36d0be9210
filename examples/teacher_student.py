"""A teacher-student two-layer net as an fa-jax experiment (walk-through: docs/own-experiment.md)."""
import dataclasses

import jax
import jax.numpy as jnp

from fa_jax.config import traced
from fa_jax.experiments import Experiment
from fa_jax.optim import OptimConfig, make_optimizer
from fa_jax.trainer import TrainConfig, record_plan, train


@dataclasses.dataclass(frozen=True)
class TeacherStudent:
    d: int = 16  # input dimension            (static fields: shapes and code; one program per value)
    teacher: int = 2  # teacher's hidden units
    width: int = 4  # student's hidden units
    n: int = 256  # training samples; the test set has 1024
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(name="gd", lr=0.1))  # lr: traced
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(steps=1000, n_records=10))
    seed: int = traced(0)  # teacher, data, init and batches (traced)

    def validate(self):
        self.optim.validate(self.n)
        self.train.validate()
        return self


def net(p, x):  # f(x) = a . tanh(W x) / sqrt(m): x (samples, d) -> (samples,)
    return jnp.tanh(x @ p["w"].T) @ p["a"] / jnp.sqrt(p["a"].shape[0])


def run(cfg: TeacherStudent) -> dict:
    k_teacher, k_x, k_test, k_init, k_batch = jax.random.split(jax.random.PRNGKey(cfg.seed), 5)
    def init(k, m):
        k_w, k_a = jax.random.split(k)
        return {"w": jax.random.normal(k_w, (m, cfg.d)) / jnp.sqrt(cfg.d), "a": jax.random.normal(k_a, (m,))}
    teacher = init(k_teacher, cfg.teacher)
    x, x_test = jax.random.normal(k_x, (cfg.n, cfg.d)), jax.random.normal(k_test, (1024, cfg.d))
    y, y_test = net(teacher, x), net(teacher, x_test)
    def loss(p, xb, yb):  # per-sample squared error / 2
        return 0.5 * (net(p, xb) - yb) ** 2
    def record(p):
        return {"train_loss": jnp.mean(loss(p, x, y)), "test_loss": jnp.mean(loss(p, x_test, y_test))}
    plan = record_plan(cfg.train.steps, cfg.train.n_records, cfg.train.plan)
    _, records, diverged_step = train(loss, init(k_init, cfg.width), x, y, make_optimizer(cfg.optim), plan=plan,
                                      record_fn=record, key=k_batch, batch_size=cfg.optim.batch_size)
    return {"records": records, "plan": jnp.asarray(plan), "test_loss": records["test_loss"][-1],
            "diverged_step": diverged_step}


EXPERIMENT = Experiment(
    name="teacher-student", config=TeacherStudent, run=run, seeds=("seed",),
    dims=(("records/*", ("step",)), ("plan", ("step",))), coords=(("step", "plan"),),
    labels=(("test_loss", "final test loss"), ("records/*", "loss during training")),
)
