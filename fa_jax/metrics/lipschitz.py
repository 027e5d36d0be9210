"""Lipschitz bounds and local Lipschitz estimates of image nets (spec ``sgd_vs_adaptive.md`` Sec. 2.4, T5, P12).

Global (l2 -> l2) upper bound of a feed-forward ReLU net = the product of its layers' spectral norms (ReLU and
the non-overlapping 2x2 max-pool are 1-Lipschitz in l2; biases do not count):

    L_op    = prod_l ||A_l||_2            A_l the exact linear operator of layer l (a conv: on its input shape),
    L_proxy = prod_l sigma_max(W_l)       a conv kernel (k, k, c_in, c_out) reshaped to c_out x (c_in k^2)
                                          (the authors' proxy, not a bound on the conv operator in general).

||A||_2 of a linear map is found by power iteration on A^T A (:func:`power_iteration`, the transpose from
``jax.vjp``): v <- A^T A v / ||A^T A v||, sigma = ||A v||. Every iterate gives a *lower* estimate of sigma_max,
converging geometrically in (sigma_2 / sigma_1)^2; a fixed iteration count keeps it vmappable. Conv operators on
small inputs have nearly degenerate top singular values (s2/s1 ~ 0.9995): the vector then converges slowly, but the
value, quadratic in the vector error, is still within ~1e-4 of sigma_max after a few hundred steps (tested).

Local estimates at data points x (samples, ...), for logits f(x) and labels y:

* ``margin_grad_l2`` / ``margin_grad_l1``: ||grad_x m(x)||_2 and ||.||_1 of the logit margin
  m(x) = f_y(x) - max_{j != y} f_j(x) (the first-order l2 / l-inf robustness scale: m drops by ~eps ||grad||_2
  along the worst l2 step, by ~eps ||grad||_1 along the worst l-inf step);
* ``jacobian_norm``: ||J_f(x)||_2, the spectral norm of the logit Jacobian per sample (power iteration with
  jvp / vjp); always <= L_op (a check).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..linalg import singular_values
from ..models.image_nets import conv_same
from .robustness import logit_margin

__all__ = ["conv_apply", "conv_proxy_norm", "image_net_lipschitz", "jacobian_norm", "margin", "margin_gradients",
           "power_iteration", "spectral_norm_conv", "spectral_norm_dense"]

_TINY = 1e-30


def _normalise(v):
    n = jnp.sqrt(jnp.sum(v * v))
    return v / jnp.maximum(n, _TINY)


def power_iteration(apply, v0, iters: int):
    """Largest singular value of the linear map ``apply: R^shape(v0) -> R^m`` by ``iters`` power steps on A^T A.

    ``v0``: the start (any shape; a random draw avoids a start orthogonal to the top singular vector).
    Returns ``(sigma, v)``: sigma = ||A v|| for the final unit v (a lower estimate of sigma_max).
    """
    _, vjp = jax.vjp(apply, jnp.zeros_like(v0))  # A is linear: its vjp at any point is A^T

    def body(_, v):
        return _normalise(vjp(apply(v))[0])

    v = jax.lax.fori_loop(0, iters, body, _normalise(v0))
    return jnp.sqrt(jnp.sum(apply(v) ** 2)), v


def spectral_norm_dense(kernel, key, iters: int = 100, v0=None):
    """||W||_2 of a dense kernel ``(in, out)`` (the layer maps x -> x W) by power iteration from a random start
    (from ``key``, or the given ``v0 (in,)``)."""
    if v0 is None:
        v0 = jax.random.normal(key, kernel.shape[:1], kernel.dtype)
    return power_iteration(lambda v: v @ kernel, v0, iters)[0]


def conv_apply(kernel, x):
    """The linear part of a flax / fa-jax 3x3 SAME conv layer: ``x (..., H, W, c_in)`` -> ``(..., H, W, c_out)``,
    ``kernel (kh, kw, c_in, c_out)`` (stride-1 SAME cross-correlation, NHWC / HWIO): the model's own
    :func:`fa_jax.models.image_nets.conv_same`, so the operator whose norm is taken is the layer's."""
    return conv_same(x, kernel)


def spectral_norm_conv(kernel, input_hw: tuple[int, int], key, iters: int = 100, v0=None):
    """Exact operator norm of the conv ``kernel (kh, kw, c_in, c_out)`` acting on ``(H, W, c_in)`` inputs
    (random start from ``key``, or the given ``v0 (H, W, c_in)``)."""
    if v0 is None:
        v0 = jax.random.normal(key, (*input_hw, kernel.shape[2]), kernel.dtype)
    return power_iteration(lambda v: conv_apply(kernel, v), v0, iters)[0]


def conv_proxy_norm(kernel):
    """The authors' proxy: sigma_max of the kernel reshaped to c_out x (c_in k^2) (full SVD)."""
    kh, kw, cin, cout = kernel.shape
    return singular_values(kernel.reshape(kh * kw * cin, cout))[0]  # unbatched under vmap: fa_jax.linalg


margin = logit_margin  # f_y - max_{j != y} f_j (fa_jax.metrics.robustness.logit_margin)


def margin_gradients(logit_fn, x, labels):
    """``grad_x m(x) (samples, ...)`` of the logit margin; ``logit_fn(x (samples, ...)) -> (samples, classes)``.

    Per-sample gradients via one backward pass of the summed margins (samples do not interact)."""
    return jax.grad(lambda xx: jnp.sum(margin(logit_fn(xx), labels)))(x)


def jacobian_norm(logit_fn, x, key, iters: int = 30):
    """``(samples,)`` spectral norm ||J_f(x_i)||_2 of the logit Jacobian at each sample (power iteration)."""
    def one(xi, k):
        def f(v):
            return logit_fn(v[None])[0]

        def jac(u):  # J u by forward mode
            return jax.jvp(f, (xi,), (u,))[1]

        v0 = jax.random.normal(k, xi.shape, xi.dtype)
        return power_iteration(jac, v0, iters)[0]

    return jax.vmap(one)(x, jax.random.split(key, x.shape[0]))


def image_net_lipschitz(params, cfg, image_shape: tuple[int, int, int], key, iters: int = 100) -> dict:
    """Layer-wise spectral norms and product bounds of an :mod:`fa_jax.models.image_nets` net.

    ``cfg``: its :class:`~fa_jax.models.image_nets.ImageNet`; ``image_shape (H, W, C)``. Returns
    ``{"layers_op" (layers,), "layers_proxy" (layers,), "bound_op", "bound_proxy"}`` with the layers in forward
    order (MLP: dense_0 .. head; conv net: conv_0 .. fc, head). Each conv acts on the spatial size its input has
    (halved by every 2x2 VALID max-pool before it); for dense layers op = proxy (the same matrix).
    """
    # every layer's start vector is a slice of ONE normal draw (each random call is a separate compiled kernel)
    layers = []  # (kind, kernel, start shape)
    if cfg.arch == "mlp":
        names = [f"dense_{i}" for i in range(len(cfg.hidden))] + ["head"]
    else:
        h, w = image_shape[:2]
        for i in range(len(cfg.channels)):
            k = params[f"conv_{i}"]["kernel"]
            layers.append(("conv", k, (h, w, k.shape[2])))
            h, w = h // 2, w // 2
        names = ["fc", "head"]
    layers += [("dense", params[nm]["kernel"], params[nm]["kernel"].shape[:1]) for nm in names]
    sizes = [math.prod(sh) for _, _, sh in layers]
    z = jax.random.normal(key, (sum(sizes),), layers[0][1].dtype)
    op, proxy, at = [], [], 0
    for (kind, k, sh), sz in zip(layers, sizes, strict=True):
        v0 = z[at:at + sz].reshape(sh)
        at += sz
        if kind == "conv":
            op.append(spectral_norm_conv(k, sh[:2], None, iters, v0=v0))
            proxy.append(conv_proxy_norm(k))
        else:
            s = spectral_norm_dense(k, None, iters, v0=v0)
            op.append(s)
            proxy.append(s)
    op, proxy = jnp.stack(op), jnp.stack(proxy)
    return {"layers_op": op, "layers_proxy": proxy, "bound_op": jnp.prod(op), "bound_proxy": jnp.prod(proxy)}
