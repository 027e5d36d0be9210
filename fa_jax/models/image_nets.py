"""Image classifiers (flax.linen) for the real-data experiments: an MLP and a small conv net, NHWC inputs.

Both nets map images ``x (samples, H, W, C)`` to ``n_out`` logits: a *binary head* (``head="binary"``, one
output f(x), predict sgn f) or a *multi-class head* (``head="multiclass"``, ``n_classes`` logits, softmax CE).

* MLP (``arch="mlp"``): flatten (row-major over H, W, C) -> [Dense(n) -> ReLU] for n in ``hidden`` -> Dense(n_out).
  ``hidden=()`` is a linear model (its "penultimate features" are then the pixels).
* Conv net (``arch="conv"``): for c in ``channels``: Conv(c, 3x3, stride 1, SAME padding) -> ReLU ->
  2x2 max-pool (stride 2, VALID: odd sizes drop the last row/column) ; flatten -> Dense(``dense``) -> ReLU ->
  Dense(n_out).

  ``conv_impl`` chooses how the 3x3 convolution is computed (same parameters, same init, same function):
  ``"patches"`` (default) gathers the kh*kw shifted copies of the padded input and multiplies them by the kernel
  reshaped to ``(kh*kw*C_in, C_out)`` - y[n,h,w,o] = sum_{i,j,c} xpad[n,h+i,w+j,c] K[i,j,c,o] + b[o], one matmul;
  ``"lax"`` is flax's ``nn.Conv`` (``lax.conv_general_dilated``). Why two: on XLA:CPU a convolution's gradient
  inside a loop body (the trainer's ``lax.scan``, DeepFool's ``while_loop``) runs ~15x slower than the same op
  outside a loop (jax-ml/jax#12868; measured 147 ms vs 8 ms per training step of the 16x16 net, batch 128), and
  ``vmap`` over runs turns it into a grouped convolution that is slower again; the patch form is plain slices and
  a (batched) matmul everywhere. ``"lax"`` may be faster on accelerators with a convolution library.
  ``"auto"`` is both: the patch form on CPU and ``lax.conv_general_dilated`` (the library convolution: cuDNN on
  GPUs) on every other platform, picked per platform when the program is lowered (``lax.platform_dependent``: a
  program lowered for CPU holds only the patch form, bitwise the ``"patches"`` program; one lowered for CUDA only
  the convolution). Same parameters and init as the other two. ``"patches"`` stays the default, so the committed
  results keep their programs; ``"auto"`` is opt-in (``--set model.conv_impl=auto``) for accelerators.
  The 2x2 max-pool is a reshape + max (the same values as ``nn.max_pool``; no ``reduce_window``).

Penultimate features (:func:`penultimate`) are the input of the last Dense layer (after its ReLU). The last Dense
layer is named ``head``: ``params["head"]["kernel"] (width, n_out)``. Init (``init``, static):
* ``"flax"`` (default): flax defaults (kernels LeCun-normal, fan-in variance 1/fan_in, truncated at 2 sd; biases
  zero), times ``init_scale`` for the kernels;
* ``"torch"``: PyTorch's default ``nn.Linear`` / ``nn.Conv2d`` init (``reset_parameters``: kaiming_uniform with
  a = sqrt 5 for the weight, U(+-1/sqrt fan_in) for the bias): every kernel K ~ U(-a, a) with
  a = init_scale / sqrt(fan_in) (variance init_scale^2 / (3 fan_in)) and every bias b ~ U(-1/sqrt(fan_in),
  1/sqrt(fan_in)) (not scaled), fan_in = the layer's input width (conv: kh * kw * C_in). ``init_scale = 1`` is
  PyTorch's default; ``init_scale = sqrt 6`` is He-uniform (kaiming_uniform_, variance 2 / fan_in).
Parameters are drawn from ``jax.random.PRNGKey(seed)`` so a traced seed vmaps (one program for many seeds).

Binary read-outs of a multi-class net (``F_sum``, ``F_max``): :func:`fa_jax.metrics.robustness.binary_readout`
with the class signs of :func:`fa_jax.data.images.class_signs` (+1 / -1 per class); :func:`binary_logit` wraps it.
"""
from __future__ import annotations

import dataclasses
import math
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..config import require, traced

__all__ = ["ARCHS", "CONV_IMPLS", "HEADS", "INITS", "AutoConv", "ConvNet", "ImageMLP", "ImageNet", "PatchConv",
           "apply_image_net", "binary_logit", "build_image_net", "conv_lax", "conv_same", "init_image_net", "max_pool2",
           "n_outputs", "penultimate"]

ARCHS = ("mlp", "conv")
HEADS = ("binary", "multiclass")
CONV_IMPLS = ("patches", "lax", "auto")
INITS = ("flax", "torch")


@dataclasses.dataclass(frozen=True)
class ImageNet:
    arch: str = "mlp"
    head: str = "binary"  # "binary": 1 output; "multiclass": n_classes logits
    n_classes: int = 10
    hidden: tuple = (256,)  # MLP hidden widths
    channels: tuple = (16, 32)  # conv net: output channels of each 3x3 conv (each followed by a 2x2 max-pool)
    dense: int = 64  # conv net: width of the penultimate dense layer
    init_scale: float = traced(1.0)  # multiplies every initial kernel (biases start at 0)
    conv_impl: str = "patches"  # "patches" (slices + matmul), "lax" (nn.Conv), "auto" (per platform): module doc
    init: str = "flax"  # "flax" (LeCun-normal kernels, zero biases) or "torch" (PyTorch default): module docstring

    def validate(self) -> ImageNet:
        require(self.arch in ARCHS, "model.arch", f"one of {ARCHS}", self.arch)
        require(self.head in HEADS, "model.head", f"one of {HEADS}", self.head)
        require(self.init in INITS, "model.init", f"one of {INITS}", self.init)
        require(self.conv_impl in CONV_IMPLS, "model.conv_impl", f"one of {CONV_IMPLS}", self.conv_impl)
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


def _conv_params(mod: nn.Module, x):
    """``nn.Conv``'s parameters for ``mod`` (``kernel (kh, kw, C_in, C_out)`` LeCun-normal, ``bias (C_out,)``
    zeros), cast to the input's dtype as ``nn.Conv`` promotes them."""
    kh, kw = mod.kernel_size
    kernel = mod.param("kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], mod.features), jnp.float32)
    bias = mod.param("bias", nn.initializers.zeros_init(), (mod.features,), jnp.float32)
    return kernel.astype(x.dtype), bias.astype(x.dtype)


class PatchConv(nn.Module):
    """A stride-1 SAME convolution as one matmul over shifted copies (module docstring); the parameters
    (``kernel (kh, kw, C_in, C_out)`` LeCun-normal, ``bias (C_out,)`` zeros) and their init are ``nn.Conv``'s."""
    features: int
    kernel_size: tuple = (3, 3)

    @nn.compact
    def __call__(self, x):
        kernel, bias = _conv_params(self, x)
        return conv_same(x, kernel) + bias


class AutoConv(nn.Module):
    """``conv_impl="auto"``: :class:`PatchConv`'s parameters (= ``nn.Conv``'s), computed by :func:`conv_same` on
    CPU and by :func:`conv_lax` elsewhere; the branch is chosen per platform when the program is lowered."""
    features: int
    kernel_size: tuple = (3, 3)

    @nn.compact
    def __call__(self, x):
        kernel, bias = _conv_params(self, x)
        return jax.lax.platform_dependent(x, kernel, cpu=conv_same, default=conv_lax) + bias


def conv_lax(x, kernel):
    """:func:`conv_same` by the library convolution (``lax.conv_general_dilated``, NHWC / HWIO, stride 1, SAME):
    ``x (..., H, W, C_in)``, ``kernel (kh, kw, C_in, C_out)`` -> ``(..., H, W, C_out)``."""
    lead, (h, w, c_in) = x.shape[:-3], x.shape[-3:]
    y = jax.lax.conv_general_dilated(x.reshape(-1, h, w, c_in), kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(*lead, h, w, kernel.shape[-1])


def conv_same(x, kernel):
    """Stride-1 SAME cross-correlation as ONE matmul over shifted copies (module docstring):
    ``x (..., H, W, C_in)``, ``kernel (kh, kw, C_in, C_out)`` -> ``(..., H, W, C_out)``,
    y[h, w, o] = sum_{i,j,c} xpad[h+i, w+j, c] K[i, j, c, o]. The conv layers and the exact conv operator of
    :mod:`fa_jax.metrics.lipschitz` both use it."""
    kh, kw, c_in, c_out = kernel.shape
    h, w = x.shape[-3], x.shape[-2]
    # SAME for stride 1: (k-1)//2 before, the rest after (lax's rule)
    pad = [(0, 0)] * (x.ndim - 3) + [((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)]
    xp = jnp.pad(x, pad)
    patches = jnp.concatenate([xp[..., i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
    return patches @ kernel.reshape(kh * kw * c_in, c_out)


def max_pool2(h):
    """2x2 max-pool, stride 2, VALID (an odd last row/column is dropped): ``(n, H, W, C) -> (n, H//2, W//2, C)``."""
    n, hh, ww, c = h.shape
    h = h[:, : hh // 2 * 2, : ww // 2 * 2]
    return h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))


class ConvNet(nn.Module):
    channels: tuple
    dense: int
    n_out: int
    conv_impl: str = "patches"

    def setup(self):
        conv = {"patches": PatchConv, "auto": AutoConv}.get(self.conv_impl) or partial(nn.Conv, padding="SAME")
        self.convs = [conv(c, (3, 3), name=f"conv_{i}") for i, c in enumerate(self.channels)]
        self.fc = nn.Dense(self.dense)
        self.head = nn.Dense(self.n_out)

    def features(self, x):
        h = x
        for conv in self.convs:
            h = max_pool2(nn.relu(conv(h)))
        return nn.relu(self.fc(h.reshape(h.shape[0], -1)))

    def __call__(self, x):
        return self.head(self.features(x))


def build_image_net(cfg: ImageNet) -> nn.Module:
    """The flax module of ``cfg`` (stateless: parameters live in the pytree from :func:`init_image_net`)."""
    if cfg.arch == "mlp":
        return ImageMLP(hidden=tuple(cfg.hidden), n_out=n_outputs(cfg))
    if cfg.arch == "conv":
        return ConvNet(channels=tuple(cfg.channels), dense=int(cfg.dense), n_out=n_outputs(cfg),
                       conv_impl=cfg.conv_impl)
    raise ValueError(f"invalid model.arch={cfg.arch!r}: allowed one of {ARCHS}")


def init_image_net(seed_or_key, cfg: ImageNet, image_shape: tuple[int, int, int]) -> dict:
    """Parameters (the flax ``params`` collection) for images of shape ``image_shape = (H, W, C)``.

    ``seed_or_key``: an integer seed (may be a tracer: ``jax.vmap`` over seeds gives the per-seed inits) or a
    PRNG key. ``cfg.init == "flax"``: flax's init, kernels multiplied by ``cfg.init_scale``; ``"torch"``: PyTorch's
    default (module docstring), every leaf redrawn from a key folded from the flax key and the leaf's index."""
    key = seed_or_key
    if jnp.ndim(seed_or_key) == 0 and jnp.issubdtype(jnp.asarray(seed_or_key).dtype, jnp.integer):
        key = jax.random.PRNGKey(seed_or_key)
    params = build_image_net(cfg).init(key, jnp.zeros((1, *image_shape), jnp.float32))["params"]
    if getattr(cfg, "init", "flax") == "torch":
        return _torch_init(key, params, cfg.init_scale)
    return jax.tree_util.tree_map_with_path(
        lambda path, a: a * cfg.init_scale if getattr(path[-1], "key", None) == "kernel" else a, params)


def _torch_init(key, params, init_scale):
    """PyTorch's default init of every layer of ``params`` (shapes from flax's init): kernel ``(..., fan_in_last,
    out)`` with fan_in = prod(shape[:-1]) -> U(+-init_scale / sqrt fan_in); its layer's bias -> U(+-1/sqrt fan_in)."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    fan_in = {}
    for path, a in leaves:
        if getattr(path[-1], "key", None) == "kernel":
            fan_in[tuple(str(p) for p in path[:-1])] = math.prod(a.shape[:-1])
    out = []
    for i, (path, a) in enumerate(leaves):
        bound = 1.0 / math.sqrt(fan_in[tuple(str(p) for p in path[:-1])])
        if getattr(path[-1], "key", None) == "kernel":
            bound = bound * init_scale
        u = jax.random.uniform(jax.random.fold_in(key, 1000 + i), a.shape, a.dtype, -1.0, 1.0)
        out.append(u * bound)
    return jax.tree_util.tree_unflatten(tree, out)


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
