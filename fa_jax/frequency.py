"""Orthonormal DCT-II tools: 1-D/2-D transforms, frequency masks, band-limited noise, frequency flip.

Shared by the SGD-vs-adaptive spec (``../shared/specs/sgd_vs_adaptive.md`` Sec. 2.3) and the hold-me-tight spec
(``../shared/specs/hold_me_tight.md`` Sec. 2.2-2.3).

Definition. The orthonormal n x n DCT-II matrix ``C`` has the basis vectors as *columns*:

    C[i, k] = a_k * cos(pi * (2 i + 1) * k / (2 n)),   a_0 = sqrt(1/n),  a_k = sqrt(2/n) (k >= 1),

so a signal is ``x = C @ xt`` and its coefficients are ``xt = C.T @ x`` (axes: i = position, k = frequency).
In 2-D, per image and channel, ``Xt = C_H.T @ X @ C_W`` and ``X = C_H @ Xt @ C_W.T``; coefficient (0, 0) is DC and
coefficient (i, j) has "radius" sqrt(i^2 + j^2) from the DC corner.

Image layouts (``layout=``):

* ``"HW"``  : ``(..., H, W)``, every leading index is one single-channel image;
* ``"CHW"`` : ``(..., C, H, W)`` (NCHW when batched), channels on axis -3;
* ``"HWC"`` : ``(..., H, W, C)`` (NHWC, flax's convention), channels on axis -1.

The transforms act on the two spatial axes only; for ``"HW"`` and ``"CHW"`` those are (-2, -1), for ``"HWC"``
(-3, -2). Masks are ``(H, W)`` boolean arrays (one per image for Phi_nrg) and are applied to every channel.

Everything is a pure ``jax.numpy`` function of its inputs. Thresholds, band and block indices may be traced (masks are
built by comparisons with static integer tables), so sweeping them does not recompile; shapes, ``layout``,
``method`` and ``n_bands`` are static.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .config import require

__all__ = [
    "LAYOUTS",
    "SCAN_STEPS",
    "add_band_noise",
    "apply_mask",
    "band_noise",
    "block_mask",
    "dct",
    "dct2",
    "dct_matrix",
    "energy_mask",
    "flip_coefficients",
    "flip_frequency",
    "idct",
    "idct2",
    "lowpass_mask",
    "lowpass_radius",
    "phi_freq",
    "phi_nrg",
    "radial_bands",
    "radius_grid",
    "spectral_energy",
    "square_mask",
]

LAYOUTS = ("HW", "CHW", "HWC")
METHODS = ("matrix", "fft")
SCAN_STEPS = 2000  # Phi_freq scans r downward from r_max in steps of r_max / SCAN_STEPS (spec Sec. 2.3)
_HI = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes on accelerators: the DCT must stay orthonormal to f32 eps


# --------------------------------------------------------------------------------------------------- matrices

@functools.lru_cache(maxsize=64)
def _dct_matrix_cached(n: int) -> np.ndarray:
    # cos(pi m / (2n)) with m = (2i+1) k reduced exactly (integers) to the first quadrant: the matrix then has exact
    # zeros (e.g. u1 = (1, 0, -1)/sqrt2 for n = 3) and exact +/- symmetries, so a sign() of a gradient that is zero
    # in exact arithmetic is zero here too.
    m = (2 * np.arange(n)[:, None] + 1) * np.arange(n)[None, :] % (4 * n)
    half = m % (2 * n)  # cos(x + pi) = -cos(x)
    sign = np.where(m < 2 * n, 1.0, -1.0)
    sign = np.where(half > n, -sign, sign)  # cos(pi - x) = -cos(x)
    red = np.where(half > n, 2 * n - half, half)  # in [0, n]
    c = sign * np.cos(np.pi * red / (2.0 * n)) * np.sqrt(2.0 / n)
    c[red == n] = 0.0
    c[:, 0] = np.sqrt(1.0 / n)
    c.setflags(write=False)
    return c


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``C (position i, frequency k)``, float64 numpy, columns = basis vectors.

    ``C[i, k] = a_k cos(pi (2i+1) k / (2n))`` with ``a_0 = sqrt(1/n)``, ``a_k = sqrt(2/n)``; ``C.T @ C = I``.
    For n = 3 the columns are (1,1,1)/sqrt3, (1,0,-1)/sqrt2, (1,-2,1)/sqrt6 (spec Sec. 2.1).
    """
    require(isinstance(n, (int, np.integer)) and int(n) >= 1, "n", "an integer >= 1", n)
    return _dct_matrix_cached(int(n))


def _float(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


def _check_method(method):
    require(method in METHODS, "method", f"one of {METHODS}", method)


def dct(x, axis: int = -1, method: str = "matrix"):
    """Orthonormal DCT-II along ``axis``: ``xt[..., k, ...] = sum_i C[i, k] x[..., i, ...]`` (shape unchanged).

    ``method="matrix"`` contracts with :func:`dct_matrix` (exact to float64 round-off, highest matmul precision);
    ``method="fft"`` calls ``jax.scipy.fft.dct(type=2, norm="ortho")``. Both agree (tested).
    """
    _check_method(method)
    x = _float(x)
    if method == "fft":
        return jax.scipy.fft.dct(x, type=2, norm="ortho", axis=axis)
    c = jnp.asarray(dct_matrix(x.shape[axis]), x.dtype)
    y = jnp.tensordot(x, c, axes=([axis], [0]), precision=_HI)  # frequency axis appended last
    return jnp.moveaxis(y, -1, axis)


def idct(xt, axis: int = -1, method: str = "matrix"):
    """Inverse of :func:`dct` (DCT-III, orthonormal): ``x[..., i, ...] = sum_k C[i, k] xt[..., k, ...]``."""
    _check_method(method)
    xt = _float(xt)
    if method == "fft":
        return jax.scipy.fft.idct(xt, type=2, norm="ortho", axis=axis)
    c = jnp.asarray(dct_matrix(xt.shape[axis]), xt.dtype)
    y = jnp.tensordot(xt, c, axes=([axis], [1]), precision=_HI)
    return jnp.moveaxis(y, -1, axis)


def _spatial_axes(layout: str) -> tuple[int, int]:
    require(layout in LAYOUTS, "layout", f"one of {LAYOUTS}", layout)
    return (-3, -2) if layout == "HWC" else (-2, -1)


def _check_ndim(x, layout):
    need = 2 if layout == "HW" else 3
    require(x.ndim >= need, "x.ndim", f">= {need} for layout {layout!r}", x.ndim)


def _hw(x, layout):
    ah, aw = _spatial_axes(layout)
    _check_ndim(x, layout)
    return x.shape[ah], x.shape[aw]


def dct2(x, layout: str = "HW", method: str = "matrix"):
    """2-D orthonormal DCT-II over the spatial axes: ``Xt = C_H.T @ X @ C_W`` per image and channel.

    ``x``: ``(..., H, W)`` / ``(..., C, H, W)`` / ``(..., H, W, C)`` for layout HW / CHW / HWC; same shape out,
    with the spatial axes now (frequency_row, frequency_col).
    """
    x = _float(x)
    ah, aw = _spatial_axes(layout)
    _check_ndim(x, layout)
    return dct(dct(x, axis=aw, method=method), axis=ah, method=method)


def idct2(xt, layout: str = "HW", method: str = "matrix"):
    """Inverse of :func:`dct2`: ``X = C_H @ Xt @ C_W.T`` per image and channel (same shape)."""
    xt = _float(xt)
    ah, aw = _spatial_axes(layout)
    _check_ndim(xt, layout)
    return idct(idct(xt, axis=ah, method=method), axis=aw, method=method)


def _expand_mask(mask, layout):
    """An ``(..., H, W)`` mask broadcast against the image layout (a channel axis inserted where needed)."""
    mask = jnp.asarray(mask)
    if layout == "CHW":
        return mask[..., None, :, :]
    if layout == "HWC":
        return mask[..., None]
    return mask


def apply_mask(x, mask, layout: str = "HW", method: str = "matrix"):
    """Keep the DCT coefficients where ``mask`` is true: ``idct2(mask * dct2(x))`` (a linear projector).

    ``mask``: ``(H, W)`` (one mask for all images) or ``(..., H, W)`` per image (no channel axis: the same mask on
    every channel); boolean or real weights.
    """
    xt = dct2(x, layout, method)
    m = _expand_mask(mask, layout).astype(xt.dtype)
    return idct2(xt * m, layout, method)


def spectral_energy(x, layout: str = "HW", method: str = "matrix"):
    """``(H, W)`` mean |DCT coefficient| over all images and channels (spec Fig. 8); ``jnp.diagonal`` gives the
    (i, i) profile."""
    mag = jnp.abs(dct2(x, layout, method))
    if layout == "HWC":
        mag = jnp.moveaxis(mag, -1, -3)
    return mag.reshape((-1,) + mag.shape[-2:]).mean(axis=0)


# --------------------------------------------------------------------------------------------------- radial masks

def radius_grid(h: int, w: int | None = None) -> np.ndarray:
    """``(H, W)`` float64 radius sqrt(i^2 + j^2) of DCT coefficient (i, j) from the DC corner."""
    w = h if w is None else w
    i = np.arange(h, dtype=np.float64)[:, None]
    j = np.arange(w, dtype=np.float64)[None, :]
    return np.sqrt(i * i + j * j)


@functools.lru_cache(maxsize=64)
def _scan_tables(h: int, w: int):
    """Static integer tables of the Phi_freq radius scan on an (H, W) plane.

    r_m = r_max - m * r_max / SCAN_STEPS, m = 0..SCAN_STEPS, r_max = sqrt(H^2 + W^2) (= N sqrt2 for N x N).
    counts[m] = #{coefficients with radius < r_m} (strict); first_out[c] = smallest m with radius_c >= r_m, so that
    coefficient c is kept at scan position m iff m < first_out[c].
    """
    rad = radius_grid(h, w).ravel()
    r_max = math.sqrt(h * h + w * w)
    r_grid = r_max - np.arange(SCAN_STEPS + 1, dtype=np.float64) * (r_max / SCAN_STEPS)
    counts = np.searchsorted(np.sort(rad), r_grid, side="left").astype(np.int64)
    first_out = (r_grid.size - np.searchsorted(r_grid[::-1], rad, side="right")).astype(np.int64)
    return counts, first_out.reshape(h, w), r_grid


def _scan_index(h, w, keep_percent):
    """First scan position m whose kept fraction (radius < r_m) falls below keep_percent % (traced-friendly)."""
    counts, _, _ = _scan_tables(h, w)
    below = jnp.asarray(counts) * 100 < jnp.asarray(keep_percent) * (h * w)
    return jnp.argmax(below)


def _check_percent(p, name):
    if isinstance(p, (int, float, np.integer, np.floating)):
        require(0.0 <= float(p) <= 100.0, name, "a percentage in [0, 100]", p)


def lowpass_radius(shape_hw, keep_percent):
    """Phi_freq cut-off radius r for ``keep_percent`` % kept (spec Sec. 2.3 scan rule).

    Scan r downward from r_max = sqrt(H^2 + W^2) in steps of r_max/2000 and stop at the first r whose kept fraction
    #{radius < r}/(H W) falls below keep_percent/100. ``keep_percent`` may be traced. (32 x 32: 90% -> 34.98,
    10% -> 10.82.) Meaningful for 0 < keep_percent < 100.
    """
    h, w = shape_hw
    _check_percent(keep_percent, "keep_percent")
    _, _, r_grid = _scan_tables(int(h), int(w))
    return jnp.asarray(r_grid)[_scan_index(int(h), int(w), keep_percent)]


def lowpass_mask(shape_hw, keep_percent):
    """``(H, W)`` bool radial low-pass mask of Phi_freq: keep radius < :func:`lowpass_radius` (strict).

    ``keep_percent`` = 100 - p (p = % removed), may be traced. Edge cases (our choice; the literal scan would drop
    the far corner at 100% and keep everything at 0%): keep_percent >= 100 keeps all, <= 0 keeps none.
    """
    h, w = int(shape_hw[0]), int(shape_hw[1])
    _check_percent(keep_percent, "keep_percent")
    _, first_out, _ = _scan_tables(h, w)
    m = _scan_index(h, w, keep_percent)
    keep = jnp.asarray(first_out) > m
    keep = jnp.where(jnp.asarray(keep_percent) >= 100, True, keep)
    return jnp.where(jnp.asarray(keep_percent) <= 0, False, keep)


def phi_freq(x, removed_percent, layout: str = "HW", method: str = "matrix"):
    """Phi_freq(x, p): radial low-pass removal of p % of the DCT coefficients (one mask for all images/channels).

    ``x`` in ``layout``; ``removed_percent`` p in [0, 100] (may be traced); returns x with the coefficients outside
    :func:`lowpass_mask` ``(shape, 100 - p)`` zeroed (same shape).
    """
    _check_percent(removed_percent, "removed_percent")
    h, w = _hw(_float(x), layout)
    mask = lowpass_mask((h, w), 100.0 - jnp.asarray(removed_percent))
    return apply_mask(x, mask, layout, method)


def energy_mask(x, keep_percent, layout: str = "HW", method: str = "matrix"):
    """Per-image Phi_nrg mask ``(..., H, W)`` bool: keep the top keep_percent % coefficients by magnitude.

    E_ij = mean over channels of |Xt_ij|; keep E_ij >= q where q is the image's (1 - keep_percent/100) quantile of
    E over its H W coefficients (``jnp.quantile`` linear interpolation, as numpy/torch default). ``keep_percent``
    may be traced.
    """
    _check_percent(keep_percent, "keep_percent")
    xt = dct2(x, layout, method)
    mag = jnp.abs(xt)
    if layout == "CHW":
        mag = mag.mean(axis=-3)
    elif layout == "HWC":
        mag = mag.mean(axis=-1)
    h, w = mag.shape[-2:]
    flat = mag.reshape(mag.shape[:-2] + (h * w,))
    q = jnp.quantile(flat, 1.0 - jnp.asarray(keep_percent, flat.dtype) / 100.0, axis=-1, keepdims=True)
    return (flat >= q).reshape(mag.shape)


def phi_nrg(x, removed_percent, layout: str = "HW", method: str = "matrix"):
    """Phi_nrg(x, p): per image, zero the DCT coefficients outside :func:`energy_mask` ``(x, 100 - p)``.

    The same mask is applied on all channels of an image; ``x`` in ``layout``, same shape out.
    """
    _check_percent(removed_percent, "removed_percent")
    mask = energy_mask(x, 100.0 - jnp.asarray(removed_percent), layout, method)
    return apply_mask(x, mask, layout, method)


# --------------------------------------------------------------------------------------------------- bands, blocks

def radial_bands(shape_hw, n_bands: int, rule: str = "rank") -> np.ndarray:
    """``(H, W)`` int band index (0 = lowest frequencies) of every DCT coefficient, static numpy.

    ``rule="rank"``: sort coefficients by radius (ties by row-major index) and cut the ranking into ``n_bands``
    equal parts: band sizes differ by at most 1 and are exactly equal when n_bands divides H W.
    ``rule="radius"``: whole radius shells only; band b holds the coefficients kept by Phi_freq at
    100 (b+1)/n_bands % but not at 100 b/n_bands %, the last band the remainder (sizes equal up to shell ties).
    """
    h, w = int(shape_hw[0]), int(shape_hw[1])
    n = h * w
    require(isinstance(n_bands, (int, np.integer)) and 1 <= n_bands <= n, "n_bands", f"an integer in [1, {n}]",
            n_bands)
    require(rule in ("rank", "radius"), "rule", "'rank' or 'radius'", rule)
    if rule == "rank":
        order = np.argsort(radius_grid(h, w).ravel(), kind="stable")
        band = np.empty(n, np.int64)
        band[order] = np.arange(n) * n_bands // n
        return band.reshape(h, w)
    counts, first_out, _ = _scan_tables(h, w)
    band = np.full((h, w), n_bands - 1, np.int64)
    for b in range(n_bands - 2, -1, -1):  # inner bands overwrite: band = smallest b whose low-pass keeps it
        keep_pct = 100.0 * (b + 1) / n_bands
        m = int(np.argmax(counts * 100 < keep_pct * n))
        band[first_out > m] = b
    return band


def band_noise(key, shape, band, n_bands: int, var=0.01, layout: str = "HW", rule: str = "rank",
               method: str = "matrix", dtype=None):
    """Gaussian noise restricted to one radial DCT band: ``idct2(mask_band * z)``, ``z ~ N(0, var)`` iid.

    Equal in distribution to the paper's recipe (pixel noise N(0, var I) -> DCT -> band mask -> inverse), since the
    orthonormal DCT maps iid Gaussian noise to iid Gaussian noise. ``shape`` is the image batch shape in ``layout``;
    channels get independent noise under the same mask. ``band`` (0..n_bands-1) and ``var`` may be traced. Expected
    energy E||noise||^2 = var * |band| * (#images * #channels).
    """
    dtype = dtype or jnp.result_type(float)
    ah, aw = _spatial_axes(layout)
    require(len(shape) >= (2 if layout == "HW" else 3), "shape", f"an image shape for layout {layout!r}", shape)
    bands = jnp.asarray(radial_bands((shape[ah], shape[aw]), n_bands, rule))
    mask = _expand_mask(bands == band, layout)
    # drawn flat and reshaped: compiles much faster than a high-rank shape on CPU (same distribution)
    z = jax.random.normal(key, (math.prod(shape),), dtype).reshape(tuple(shape)) * jnp.sqrt(jnp.asarray(var, dtype))
    return idct2(z * mask.astype(dtype), layout, method)


def add_band_noise(key, x, band, n_bands: int, var=0.01, layout: str = "HW", rule: str = "rank",
                   method: str = "matrix"):
    """``x + band_noise(...)`` with one draw per image, no clamping (spec Sec. 2.3, Fig. 4)."""
    x = _float(x)
    return x + band_noise(key, x.shape, band, n_bands, var, layout, rule, method, x.dtype)


def block_mask(shape_hw, start, size: int):
    """``(H, W)`` bool K x K coefficient block with top-left corner (start, start) on the diagonal.

    ``start`` may be traced (comparison with iota: a new block does not recompile); ``size`` K is static.
    """
    h, w = int(shape_hw[0]), int(shape_hw[1])
    i = jnp.arange(h)[:, None]
    j = jnp.arange(w)[None, :]
    return (i >= start) & (i < start + size) & (j >= start) & (j < start + size)


def square_mask(shape_hw, b, corner: str = "low"):
    """``(H, W)`` bool b x b block at the DC corner (``"low"``: low-pass(b)) or the opposite corner (``"high"``).

    Cut-off-low(b) of the hold-me-tight spec is ``~square_mask(shape, b, "low")``. ``b`` may be traced.
    """
    require(corner in ("low", "high"), "corner", "'low' or 'high'", corner)
    h, w = int(shape_hw[0]), int(shape_hw[1])
    i = jnp.arange(h)[:, None]
    j = jnp.arange(w)[None, :]
    if corner == "low":
        return (i < b) & (j < b)
    return (i >= h - b) & (j >= w - b)


# --------------------------------------------------------------------------------------------------- flip

def flip_coefficients(xt, layout: str = "HW"):
    """Reverse the coefficient order on both frequency axes: ``(k1, k2) -> (H-1-k1, W-1-k2)`` (same shape)."""
    xt = jnp.asarray(xt)
    _check_ndim(xt, layout)
    return jnp.flip(xt, axis=_spatial_axes(layout))


def flip_frequency(x, layout: str = "HW", method: str = "matrix"):
    """Frequency flip of images: ``idct2(flip_coefficients(dct2(x)))``.

    An orthogonal involution (norms and inner products preserved, applying it twice is the identity) that maps the
    diagonal K x K block at (i, i) of an N x N plane to the block at (N - K - i, N - K - i).
    """
    return idct2(flip_coefficients(dct2(x, layout, method), layout), layout, method)
