"""Per-sample losses (the trainer averages them).

* logistic:  l(q) = log(1 + e^{-q}) = softplus(-q),  q = y f(x); written with softplus so neither the value nor
  its autodiff gradient under/overflows for large |q| (a naive sigmoid rounds the gradient to 0 for q >~ 37).
* cross-entropy: -log softmax(f(x))_label, via optax's log-sum-exp form.
* mse: (f(x) - y)^2 / 2 summed over outputs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LOSSES = ("logistic", "cross_entropy", "mse")


def logistic(f: jax.Array, y: jax.Array) -> jax.Array:
    """``f (samples,)`` or ``(samples, 1)``, ``y (samples,)`` in {+1,-1} -> ``(samples,)``."""
    f = f.reshape(y.shape)
    return jax.nn.softplus(-y * f)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``logits (samples, classes)``, integer ``labels (samples,)`` -> ``(samples,)``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def mse(f: jax.Array, y: jax.Array) -> jax.Array:
    f = f.reshape(y.shape[0], -1)
    y = y.reshape(y.shape[0], -1)
    return 0.5 * jnp.sum((f - y) ** 2, axis=-1)


def get_loss(name: str):
    table = {"logistic": logistic, "cross_entropy": cross_entropy, "mse": mse}
    if name not in table:
        raise ValueError(f"invalid loss={name!r}: allowed one of {LOSSES}")
    return table[name]
