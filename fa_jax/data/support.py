"""Support-learning regression data (Beneventano, Pinto, Poggio, arXiv 2406.11110; spec ``sgd_support.md`` 2.1).

n base inputs x_i ~ N(0, I_d); coordinates 0..s-1 are *relevant*, s..d-1 *irrelevant*. Targets (W* = 1 on the
relevant coordinates, 0 elsewhere; S(x) = sum_{j<s} x_j):

* ``linear``:    f(x) = S(x)
* ``sine``:      f(x) = sin(S(x))
* ``staircase``: f(x) = sum_{j<s} x_j^(j+1)  (x_0 + x_1^2 + x_2^3 + ...)

Label noise eps_i = noise * z_i, z_i ~ N(0, 1). With ``mirrored=True`` (the official code's duplicated inputs) the
training set is {(x_i, f(x_i) + eps_i)} u {(x_i, f(x_i) - eps_i)}: N = 2n points, and no parameter fits them all
(each pair's residuals are r0 +- eps_i, so mean r^2 >= mean eps^2). ``centre=True`` subtracts the sample mean of the
irrelevant columns (as the code does; the relevant ones are left alone). ``decorrelate=True`` additionally projects
the irrelevant columns onto the orthogonal complement of span(1, X_rel): zero sample mean and zero sample
cross-covariance with the relevant inputs (default off, as in the code). The test set (absent from the official
code) holds ``n_test`` fresh inputs with clean targets.

Shapes: train x (N, d), y (N,); test x (n_test, d), y (n_test,).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ..config import require, traced
from ..linalg import qr_q

TARGETS = ("linear", "sine", "staircase")

__all__ = ["TARGETS", "SupportData", "make_support_data", "support_target"]


@dataclasses.dataclass(frozen=True)
class SupportData:
    d: int = 15
    s: int = 5  # relevant coordinates 0..s-1 (the spec's r)
    n: int = 5000  # base inputs; the training set has N = 2n points when mirrored
    n_test: int = 1000
    target: str = "linear"
    noise: float = traced(1e-3)  # label-noise std (the official staircase notebook uses 0)
    mirrored: bool = True
    centre: bool = True
    decorrelate: bool = False

    @property
    def n_train(self) -> int:
        return 2 * self.n if self.mirrored else self.n

    def validate(self) -> SupportData:
        require(isinstance(self.d, int) and self.d >= 1, "data.d", "an integer >= 1", self.d)
        require(isinstance(self.s, int) and 1 <= self.s <= self.d, "data.s",
                f"an integer with 1 <= s <= d = {self.d} (relevant coordinates)", self.s)
        require(self.target in TARGETS, "data.target", f"one of {TARGETS}", self.target)
        require(isinstance(self.n, int) and self.n >= 2, "data.n", "an integer >= 2", self.n)
        require(isinstance(self.n_test, int) and self.n_test >= 1, "data.n_test", "an integer >= 1", self.n_test)
        if self.decorrelate:
            require(self.n > self.s + 1, "data.n", f"n > s + 1 = {self.s + 1} to decorrelate", self.n)
        nz = float(self.noise)
        require(math.isfinite(nz) and nz >= 0, "data.noise", "a finite number >= 0", self.noise)
        return self


def support_target(x: jax.Array, s: int, target: str) -> jax.Array:
    """``x (samples, d)`` -> ``f(x) (samples,)`` for the named target on the first ``s`` coordinates."""
    rel = x[:, :s]
    if target == "linear":
        return jnp.sum(rel, axis=1)
    if target == "sine":
        return jnp.sin(jnp.sum(rel, axis=1))
    if target == "staircase":
        powers = jnp.arange(1, s + 1, dtype=x.dtype)
        return jnp.sum(rel ** powers[None, :], axis=1)
    raise ValueError(f"invalid data.target={target!r}: allowed one of {TARGETS}")


def make_support_data(key: jax.Array, cfg: SupportData, dtype=None) -> dict:
    """``{"train": {"x", "y"}, "test": {"x", "y"}, "w_star" (d,)}``; ``cfg.noise`` may be a tracer.

    Sub-keys: fold_in(key, 0) inputs, 1 label noise, 2 test inputs (the noise draw z is shared by every noise
    level, so runs differing only in ``noise`` see the same inputs and noise direction).
    """
    dtype = dtype or (jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32)
    d, s, n = cfg.d, cfg.s, cfg.n
    x = jax.random.normal(jax.random.fold_in(key, 0), (n, d), dtype)
    if cfg.centre and s < d:
        x = x.at[:, s:].add(-jnp.mean(x[:, s:], axis=0, keepdims=True))
    if cfg.decorrelate and s < d:
        basis = jnp.concatenate([jnp.ones((n, 1), dtype), x[:, :s]], axis=1)
        q = qr_q(basis)  # (n, s+1) orthonormal
        irr = x[:, s:]
        x = x.at[:, s:].set(irr - q @ (q.T @ irr))
    f = support_target(x, s, cfg.target)
    eps = jnp.asarray(cfg.noise, dtype) * jax.random.normal(jax.random.fold_in(key, 1), (n,), dtype)
    if cfg.mirrored:
        xtr, ytr = jnp.concatenate([x, x]), jnp.concatenate([f + eps, f - eps])
    else:
        xtr, ytr = x, f + eps
    xte = jax.random.normal(jax.random.fold_in(key, 2), (cfg.n_test, d), dtype)
    w_star = (jnp.arange(d) < s).astype(dtype)
    return {"train": {"x": xtr, "y": ytr}, "test": {"x": xte, "y": support_target(xte, s, cfg.target)},
            "w_star": w_star}
