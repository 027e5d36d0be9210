"""Image classifiers (flax.linen) for the real-data experiments: an MLP and a small conv net, NHWC inputs.

Both nets map images ``x (samples, H, W, C)`` to ``n_out`` logits: a *binary head* (``head="binary"``, one
output f(x), predict sgn f) or a *multi-class head* (``head="multiclass"``, ``n_classes`` logits, softmax CE).

* MLP (``arch="mlp"``): flatten (row-major over H, W, C) -> [Dense(n) -> ReLU] for n in ``hidden`` -> Dense(n_out).
  ``hidden=()`` is a linear model (its "penultimate features" are then the pixels).
* Conv net (``arch="conv"``): for c in ``channels``: Conv(c, 3x3, stride 1, SAME padding) -> ReLU ->
  2x2 max-pool (stride 2, VALID: odd sizes drop the last row/column) ; flatten -> Dense(``dense``) -> ReLU ->
  Dense(n_out).

Penultimate features (:func:`penultimate`) are the input of the last Dense layer (after its ReLU). The last Dense
layer is named ``head``: ``params["head"]["kernel"] (width, n_out)``. Init: flax defaults (kernels LeCun-normal,
fan-in variance 1/fan_in, truncated at 2 sd; biases zero), times ``init_scale`` for the kernels; parameters are
drawn from ``jax.random.PRNGKey(seed)`` so a traced seed vmaps (one program for many seeds).

Binary read-outs of a multi-class net (``F_sum``, ``F_max``): :func:`fa_jax.metrics.robustness.binary_readout`
with the class signs of :func:`fa_jax.data.images.class_signs` (+1 / -1 per class); :func:`binary_logit` wraps it.
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..config import require, traced

__all__ = ["ARCHS", "HEADS", "ConvNet", "ImageMLP", "ImageNet", "apply_image_net", "binary_logit",
           "build_image_net", "init_image_net", "n_outputs", "penultimate"]

ARCHS = ("mlp", "conv")
HEADS = ("binary", "multiclass")


@dataclasses.dataclass(frozen=True)
class ImageNet:
    arch: str = "mlp"
    head: str = "binary"  # "binary": 1 output; "multiclass": n_classes logits
    n_classes: int = 10
    hidden: tuple = (256,)  # MLP hidden widths
    channels: tuple = (16, 32)  # conv net: output channels of each 3x3 conv (each followed by a 2x2 max-pool)
    dense: int = 64  # conv net: width of the penultimate dense layer
    init_scale: float = traced(1.0)  # multiplies every initial kernel (biases start at 0)

    def validate(self) -> ImageNet:
        require(self.arch in ARCHS, "model.arch", f"one of {ARCHS}", self.arch)
        require(self.head in HEADS, "model.head", f"one of {HEADS}", self.head)
        require(isinstance(self.n_classes, int) and self.n_classes >= 2, "model.n_classes", "an integer >= 2",
                self.n_classes)
        hidden, channels = tuple(self.hidden), tuple(self.channels)
        require(all(isinstance(w, int) and w >= 1 for w in hidden), "model.hidden",
                "a tuple of integers >= 1 (MLP hidden widths)", self.hidden)
        require(len(channels) >= 1 and all(isinstance(c, int) and c >= 1 for c in channels), "model.channels",
                "a non-empty tuple of integers >= 1 (conv channels)", self.channels)
        require(isinstance(self.dense, int) and self.dense >= 1, "model.dense", "an integer >= 1", self.dense)
        sc = float(self.init_scale)
        require(math.isfinite(sc) and sc > 0, "model.init_scale", "a finite number > 0", self.init_scale)
        return dataclasses.replace(self, hidden=hidden, channels=channels)


def n_outputs(cfg: ImageNet) -> int:
    return 1 if cfg.head == "binary" else int(cfg.n_classes)


class ImageMLP(nn.Module):
    hidden: tuple
    n_out: int

    def setup(self):
        self.layers = [nn.Dense(w, name=f"dense_{i}") for i, w in enumerate(self.hidden)]
        self.head = nn.Dense(self.n_out)

    def features(self, x):
        h = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            h = nn.relu(layer(h))
        return h

    def __call__(self, x):
        return self.head(self.features(x))


class ConvNet(nn.Module):
    channels: tuple
    dense: int
    n_out: int

    def setup(self):
        self.convs = [nn.Conv(c, (3, 3), padding="SAME", name=f"conv_{i}") for i, c in enumerate(self.channels)]
        self.fc = nn.Dense(self.dense)
        self.head = nn.Dense(self.n_out)

    def features(self, x):
        h = x
        for conv in self.convs:
            h = nn.max_pool(nn.relu(conv(h)), (2, 2), strides=(2, 2), padding="VALID")
        return nn.relu(self.fc(h.reshape(h.shape[0], -1)))

    def __call__(self, x):
        return self.head(self.features(x))


def build_image_net(cfg: ImageNet) -> nn.Module:
    """The flax module of ``cfg`` (stateless: parameters live in the pytree from :func:`init_image_net`)."""
    if cfg.arch == "mlp":
        return ImageMLP(hidden=tuple(cfg.hidden), n_out=n_outputs(cfg))
    if cfg.arch == "conv":
        return ConvNet(channels=tuple(cfg.channels), dense=int(cfg.dense), n_out=n_outputs(cfg))
    raise ValueError(f"invalid model.arch={cfg.arch!r}: allowed one of {ARCHS}")


def init_image_net(seed_or_key, cfg: ImageNet, image_shape: tuple[int, int, int]) -> dict:
    """Parameters (the flax ``params`` collection) for images of shape ``image_shape = (H, W, C)``.

    ``seed_or_key``: an integer seed (may be a tracer: ``jax.vmap`` over seeds gives the per-seed inits) or a
    PRNG key. Kernels are multiplied by ``cfg.init_scale``."""
    key = seed_or_key
    if jnp.ndim(seed_or_key) == 0 and jnp.issubdtype(jnp.asarray(seed_or_key).dtype, jnp.integer):
        key = jax.random.PRNGKey(seed_or_key)
    params = build_image_net(cfg).init(key, jnp.zeros((1, *image_shape), jnp.float32))["params"]
    return jax.tree_util.tree_map_with_path(
        lambda path, a: a * cfg.init_scale if getattr(path[-1], "key", None) == "kernel" else a, params)


def apply_image_net(params, x, cfg: ImageNet):
    """``x (samples, H, W, C)`` -> logits ``(samples, n_out)``."""
    return build_image_net(cfg).apply({"params": params}, x)


def penultimate(params, x, cfg: ImageNet):
    """``x (samples, H, W, C)`` -> the penultimate features ``(samples, width)`` (the head's input)."""
    net = build_image_net(cfg)
    return net.apply({"params": params}, x, method=net.features)


def binary_logit(logits, signs, kind: str):
    """A binary score F from logits ``(samples, outputs)``: ``"binary"`` (the single output), ``"sum"``
    F = sum_{s_j=+1} f_j - sum_{s_j=-1} f_j, ``"max"`` F = max_{+} f_j - max_{-} f_j; ``signs (outputs,)`` in
    {+1, -1} (classes with sign 0 are ignored by both read-outs)."""
    from ..metrics.robustness import binary_readout  # here: fa_jax.metrics imports fa_jax.models

    return binary_readout(logits, jnp.asarray(signs, logits.dtype), kind)
