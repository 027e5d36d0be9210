"""Bias-free fully connected nets as pure functions on a list of kernels (spec ``sgd_support.md`` 2.2).

With layer sizes n_0 = d_in, n_1..n_{L-1} = ``widths``, n_L = d_out, the params are ``[K_1, ..., K_L]`` with
``K_l (n_{l-1}, n_l)`` (flax layout: (in, out); torch's W_l is K_l^T), and

    h_0 = x,   z_l = h_{l-1} K_l,   h_l = sigma(z_l) (l < L),   f(x) = z_L        x (batch, d_in) -> (batch, d_out)

sigma = identity (a deep *linear* net, f(x) = x K_1...K_L) or ReLU. Init (``init``):
* ``"he_normal"`` (default): He-normal fan-in, PLAIN normal, K_l ~ N(0, init_scale^2 * 2 / n_{l-1}) entry-wise
  (``variance_scaling(2, "fan_in", "normal")``; jax's ``he_normal`` would truncate);
* ``"xavier_uniform"`` (PyTorch's small-init recipe of arXiv 2402.13728): hidden layers
  K_l ~ U(-a, a), a = init_scale * sqrt(6 / (n_{l-1} + n_l)) (Xavier-uniform with gain = init_scale), and the head
  K_L ~ U(-1/sqrt(n_{L-1}), 1/sqrt(n_{L-1})) (PyTorch's default Linear init, independent of init_scale).
Layer l is drawn from fold_in(key, l).

The first-layer block acting on inputs j is row j of K_1: the irrelevant block of the support task is
``K_1[s:, :]`` (torch ``W1[:, s:]``).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from ..config import require, traced

ACTIVATIONS = ("identity", "relu")
INITS = ("he_normal", "xavier_uniform")

__all__ = ["ACTIVATIONS", "INITS", "MLP", "apply_mlp", "end_to_end", "init_mlp", "input_gradients", "layer_inputs",
           "layer_sizes", "per_sample_grad_sq_norm"]


@dataclasses.dataclass(frozen=True)
class MLP:
    widths: tuple = (15, 15, 15)  # hidden widths n_1..n_{L-1}; () is a linear model x K_1
    activation: str = "identity"
    init_scale: float = traced(1.0)  # multiplies the He std sqrt(2 / fan_in) (xavier_uniform: the hidden gain)
    init: str = "he_normal"  # or "xavier_uniform" (see the module docstring)

    def validate(self) -> MLP:
        widths = tuple(self.widths)
        require(all(isinstance(w, int) and w >= 1 for w in widths), "model.widths",
                "a tuple of integers >= 1 (hidden widths)", self.widths)
        require(self.activation in ACTIVATIONS, "model.activation", f"one of {ACTIVATIONS}", self.activation)
        sc = float(self.init_scale)
        require(math.isfinite(sc) and sc >= 0, "model.init_scale", "a finite number >= 0", self.init_scale)
        require(self.init in INITS, "model.init", f"one of {INITS}", self.init)
        return dataclasses.replace(self, widths=widths)


def layer_sizes(cfg: MLP, d_in: int, d_out: int = 1) -> tuple[int, ...]:
    return (int(d_in), *map(int, cfg.widths), int(d_out))


def init_mlp(key: jax.Array, cfg: MLP, d_in: int, d_out: int = 1, dtype=None) -> list:
    """``[K_1 (d_in, n_1), ..., K_L (n_{L-1}, d_out)]``, K_l ~ N(0, init_scale^2 2/n_{l-1}) (plain normal), or
    the Xavier-uniform / PyTorch-head init when ``cfg.init == "xavier_uniform"``."""
    dtype = dtype or (jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32)
    sizes = layer_sizes(cfg, d_in, d_out)
    if getattr(cfg, "init", "he_normal") == "xavier_uniform":
        out = []
        for layer in range(len(sizes) - 1):
            fi, fo = sizes[layer], sizes[layer + 1]
            head = layer == len(sizes) - 2
            a = 1.0 / math.sqrt(fi) if head else cfg.init_scale * math.sqrt(6.0 / (fi + fo))
            u = jax.random.uniform(jax.random.fold_in(key, layer), (fi, fo), dtype, -1.0, 1.0)
            out.append(a * u)
        return out
    he = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    return [cfg.init_scale * he(jax.random.fold_in(key, layer), (sizes[layer], sizes[layer + 1]), dtype)
            for layer in range(len(sizes) - 1)]


def _act(activation: str):
    if activation == "identity":
        return lambda z: z
    if activation == "relu":
        return jax.nn.relu
    raise ValueError(f"invalid model.activation={activation!r}: allowed one of {ACTIVATIONS}")


def _forward(params, x, activation, shifts=None):
    """Returns (f (batch, d_out), inputs of every layer [h_0, ..., h_{L-1}]); ``shifts`` are added to z_l."""
    act = _act(activation)
    h, inputs = x, []
    for layer, k in enumerate(params):
        inputs.append(h)
        z = h @ k
        if shifts is not None:
            z = z + shifts[layer]
        h = act(z) if layer < len(params) - 1 else z
    return h, inputs


def apply_mlp(params, x: jax.Array, activation: str = "identity") -> jax.Array:
    """``x (batch, d_in)`` -> ``f(x) (batch, d_out)``."""
    return _forward(params, x, activation)[0]


def layer_inputs(params, x: jax.Array, activation: str = "identity") -> list:
    """The input of every layer, ``[h_0 = x, h_1, ..., h_{L-1}]`` (``h_l (batch, n_l)``). The output layer's
    product is never used, so ``jit`` drops it. The map from ``h_l`` to the outputs is ``apply_mlp(params[l:], .)``."""
    return _forward(params, x, activation)[1]


def end_to_end(params) -> jax.Array:
    """Linear nets: the end-to-end matrix K_1 K_2 ... K_L, ``(d_in, d_out)`` (f(x) = x @ it)."""
    out = params[0]
    for k in params[1:]:
        out = out @ k
    return out


def per_sample_grad_sq_norm(params, x: jax.Array, activation: str = "identity") -> jax.Array:
    """``||grad_theta f(x_i)||^2`` per sample, ``(batch,)``, for a scalar output (d_out = 1).

    grad_{K_l} f(x) = h_{l-1}(x) delta_l(x)^T with delta_l = df/dz_l, so its squared Frobenius norm is
    ||h_{l-1}||^2 ||delta_l||^2; delta_l for the whole batch is one vjp of sum_i f(x_i) w.r.t. shifts of z_l.
    """
    batch = x.shape[0]
    shifts = [jnp.zeros((batch, k.shape[1]), x.dtype) for k in params]

    def total(sh):
        return jnp.sum(_forward(params, x, activation, sh)[0][:, 0])

    deltas = jax.grad(total)(shifts)
    _, inputs = _forward(params, x, activation)
    return sum(jnp.sum(h ** 2, axis=1) * jnp.sum(dl ** 2, axis=1) for h, dl in zip(inputs, deltas))


def input_gradients(params, x: jax.Array, activation: str = "identity") -> jax.Array:
    """``grad_x f(x_i)`` per sample, ``(batch, d_in)`` (scalar output). Linear nets: every row is K_1...K_L."""
    return jax.grad(lambda xx: jnp.sum(apply_mlp(params, xx, activation)[:, 0]))(x)
