"""Two-layer ReLU nets with a fixed output layer (arXiv 2410.10322, Sec. 3.2 and Fig. 1).

Both nets are  f(x) = A . ReLU(W x + b)  with trained first layer ``W (neurons, d)``, ``b (neurons,)`` and a
fixed read-out matrix ``A (outputs, neurons)``:

* binary (``kind="binary"``): neurons = 2 * bucket, laid out [+ side | - side];
  f(x) = (1/m) sum_r ReLU(<w_{+,r},x> + b_{+,r}) - (1/m) sum_r ReLU(<w_{-,r},x> + b_{-,r});  one output.
* multi-class (``kind="multiclass"``): c heads of h neurons, neurons = c * bucket, head-major;
  f_j(x) = (1/h) sum_r ReLU(<w_{j,r},x> + b_{j,r});  c outputs (logits for softmax CE).

Widths are padded to a static ``bucket`` and neurons r >= width are masked by zero columns of A, so runs of
different (traced) widths share one program; a masked neuron gets zero gradient and never affects f. The same
holds for the heads of a multi-class net whose classes are padded (``live`` heads c' <= c, traced: a cluster
bucket, :mod:`fa_jax.data.clusters`): heads q >= c' are masked neurons, and the loss masks their logits.
Each neuron's init is drawn from ``fold_in(fold_in(key, group), r)``: a neuron's initial weights do not depend
on the bucket, so a padded run equals the unpadded one.

Packed runs (:mod:`fa_jax.segments`): runs of different widths on ONE neuron axis, each run's neurons laid out as
its own unpadded net's (side- or head-major, ``size = groups * width``), ``A`` of shape ``(runs * outputs,
neurons)`` reading each run's outputs from its own neurons only (:func:`init_two_layer_packed`,
:func:`readout_matrix_packed`, :func:`apply_two_layer_packed`). A neuron is drawn from its own run's key exactly as
above, so packed initial weights equal the separate runs' bit for bit.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ..config import finite_positive, require, traced
from ..segments import Segments, per_neuron, readout

KINDS = ("binary", "multiclass")


@dataclasses.dataclass(frozen=True)
class TwoLayerNet:
    kind: str = "binary"
    width: int = traced(5)  # m per side (binary) or h per head (multi-class)
    bucket: int | None = None  # static padded width; None means exactly ``width``
    bias: bool = True
    init_scale: float = traced(1e-5)  # sigma_w = sigma_b

    @property
    def padded(self) -> int:
        return int(self.width if self.bucket is None else self.bucket)

    def validate(self) -> TwoLayerNet:
        require(self.kind in KINDS, "model.kind", f"one of {KINDS}", self.kind)
        require(isinstance(self.width, int) and self.width >= 1, "model.width", "an integer >= 1", self.width)
        if self.bucket is not None:
            require(isinstance(self.bucket, int) and self.bucket >= self.width, "model.bucket",
                    f"an integer >= width = {self.width}", self.bucket)
        require(finite_positive(self.init_scale) or float(self.init_scale) == 0.0, "model.init_scale",
                "a finite number >= 0", self.init_scale)
        # The bucket is the static shape; pin it so a traced width never decides a shape.
        return self if self.bucket is not None else dataclasses.replace(self, bucket=self.width)


def n_groups(cfg: TwoLayerNet, n_classes: int) -> int:
    return 2 if cfg.kind == "binary" else n_classes


def _neuron_draw(key: jax.Array, gidx, r, d: int, dtype):
    """Neuron r of group ``gidx``: ``(w (d,), b ())`` iid N(0, 1) from ``fold_in(fold_in(key, gidx), r)`` (the
    same numbers whatever the bucket or the packing around it)."""
    kn = jax.random.fold_in(jax.random.fold_in(key, gidx), r)
    kw, kb = jax.random.split(kn)
    return jax.random.normal(kw, (d,), dtype), jax.random.normal(kb, (), dtype)


def init_two_layer(key: jax.Array, cfg: TwoLayerNet, d: int, n_classes: int, dtype=jnp.float32) -> dict:
    """Params ``{"w": (neurons, d), "b": (neurons,)}`` (``b`` only if ``cfg.bias``), iid N(0, init_scale^2)."""
    groups, bucket = n_groups(cfg, n_classes), cfg.padded
    gi, ri = jnp.meshgrid(jnp.arange(groups), jnp.arange(bucket), indexing="ij")
    w, b = jax.vmap(lambda gidx, r: _neuron_draw(key, gidx, r, d, dtype))(gi.ravel(), ri.ravel())
    params = {"w": cfg.init_scale * w}
    if cfg.bias:
        params["b"] = cfg.init_scale * b
    return params


def neuron_mask(cfg: TwoLayerNet, n_classes: int, live=None) -> jax.Array:
    """``(neurons,)`` 1.0 for real neurons, 0.0 for padding (width may be traced); ``live``: the multi-class net's
    real heads (may be traced; None: all ``n_classes``), the neurons of heads q >= live are padding too."""
    groups, bucket = n_groups(cfg, n_classes), cfg.padded
    r = jnp.tile(jnp.arange(bucket), groups)
    real = r < cfg.width
    if live is not None and cfg.kind != "binary":
        real = real & (neuron_group(cfg, n_classes) < live)
    return real.astype(jnp.result_type(float))  # float64 under x64: 1/m exact


def neuron_group(cfg: TwoLayerNet, n_classes: int) -> jax.Array:
    """``(neurons,)`` side (0: +, 1: -) or head index of every neuron."""
    return jnp.repeat(jnp.arange(n_groups(cfg, n_classes)), cfg.padded)


def readout_matrix(cfg: TwoLayerNet, n_classes: int, live=None) -> jax.Array:
    """Fixed ``A (outputs, neurons)``: +-1/m (binary) or 1/h block-diagonal (multi-class), zero on padding (padded
    neurons, and the heads q >= ``live`` of :func:`neuron_mask`)."""
    mask = neuron_mask(cfg, n_classes, live)
    grp = neuron_group(cfg, n_classes)
    scale = mask / cfg.width
    if cfg.kind == "binary":
        return (jnp.where(grp == 0, 1.0, -1.0) * scale)[None, :]
    return (grp[None, :] == jnp.arange(n_classes)[:, None]) * scale[None, :]


def hidden(params: dict, x: jax.Array) -> jax.Array:
    """Pre-activations ``(samples, neurons)`` = x W^T + b."""
    z = x @ params["w"].T
    if "b" in params:
        z = z + params["b"]
    return z


def head(pre: jax.Array, A: jax.Array) -> jax.Array:
    """Outputs ``(samples, outputs)`` = ReLU(pre) A^T from pre-activations ``(samples, neurons)`` (attacks perturb
    ``pre`` directly)."""
    return jax.nn.relu(pre) @ A.T


def apply_two_layer(params: dict, x: jax.Array, A: jax.Array) -> jax.Array:
    """Outputs ``(samples, outputs)`` = ReLU(x W^T + b) A^T."""
    return head(hidden(params, x), A)


# ----------------------------------------------------------------------------- packed runs (fa_jax.segments)
def packed_sizes(kind: str, widths, n_classes: int):
    """``(runs,)`` neurons of each run: ``groups * width`` (a width of 0 is an empty place)."""
    return n_groups(TwoLayerNet(kind=kind), n_classes) * jnp.asarray(widths, jnp.int32)


def _packed_coords(widths, seg: Segments):
    """``(run (neurons,), group (neurons,), r (neurons,), live (neurons,) bool)`` of each packed neuron."""
    live = seg.run_of < seg.runs
    run = jnp.minimum(seg.run_of, seg.runs - 1)
    m = jnp.maximum(jnp.asarray(widths, jnp.int32)[run], 1)
    return run, seg.local // m, seg.local % m, live


def init_two_layer_packed(keys: jax.Array, kind: str, widths, init_scale, seg: Segments, d: int,
                          n_classes: int, bias: bool = True, dtype=jnp.float32) -> dict:
    """Params ``{"w": (neurons, d), "b": (neurons,)}`` of packed runs: run k's neurons are
    :func:`init_two_layer` of ``keys[k]`` at width ``widths[k]`` bit for bit (``init_scale`` a number or
    ``(runs,)``); unused neurons are 0. ``keys (runs, 2)``."""
    del kind, n_classes  # the layout is in ``seg`` (sizes from :func:`packed_sizes`)
    run, grp, r, live = _packed_coords(widths, seg)
    w, b = jax.vmap(lambda k, gidx, ri: _neuron_draw(k, gidx, ri, d, dtype))(keys[run], grp, r)
    scale = jnp.asarray(init_scale)
    scale = per_neuron(scale, seg) if scale.ndim else scale
    # the product's dtype as in init_two_layer (float64 under x64 with a float64 scale)
    params = {"w": jnp.where(live[:, None], (scale[:, None] if scale.ndim else scale) * w, 0)}
    if bias:
        params["b"] = jnp.where(live, scale * b, 0)
    return params


def readout_matrix_packed(kind: str, widths, seg: Segments, n_classes: int) -> jax.Array:
    """Fixed ``A (runs * outputs, neurons)``: row ``k * outputs + o`` is run k's :func:`readout_matrix` row o on
    its own neurons (+-1/m binary, 1/h on head o multi-class), zero elsewhere and on unused neurons."""
    outputs = 1 if kind == "binary" else n_classes
    run, grp, _, live = _packed_coords(widths, seg)
    m = jnp.asarray(widths)[run]
    scale = live.astype(jnp.result_type(float)) / jnp.maximum(m, 1)
    value = jnp.where(grp == 0, 1.0, -1.0) * scale if kind == "binary" else scale
    row = run * outputs + (0 if kind == "binary" else grp)
    cols = jnp.arange(seg.run_of.shape[0])
    return jnp.zeros((seg.runs * outputs, seg.run_of.shape[0]), value.dtype).at[row, cols].add(value)


def apply_two_layer_packed(params: dict, x: jax.Array, A: jax.Array, seg: Segments) -> jax.Array:
    """Outputs ``(samples, runs, outputs)`` of packed runs: ReLU(x W^T + b) A^T, one matmul for all runs, read
    out by :func:`fa_jax.segments.readout` (a run's inf or NaN never reaches another run)."""
    out = readout(jax.nn.relu(hidden(params, x)), A, seg)
    return out.reshape(out.shape[0], seg.runs, -1)
