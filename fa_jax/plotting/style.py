"""The one figure style of fa-jax (issue 20): sizes a paper would print, legends that never cover data, bands and
colour scales that fit their axes.

* ``styled``: decorator for a function that draws and saves figures; it runs inside ``plt.rc_context(RC)``, so every
  text, line and saved PNG of the figure uses the shared sizes (a notebook's own rcParams are untouched outside).
* ``panels(n)``: a figure of ``n`` panels laid out in at most two columns (four panels -> 2 x 2), each ``PANEL``
  inches, ``constrained_layout`` so labels never overlap.
* ``legend_outside(ax)``: the legend to the right of (or below) the axes instead of on the data.
* ``figure_legend(fig, axes)`` / ``legend_cell(cell, axes)``: one legend for lines the panels share, below all
  panels or in a spare grid cell (``legend_entries``: its entries, each label once).
* ``ink(rgba)``: black or white text, whichever reads on a heat-map cell of that colour.
* ``geometric_band(ax, x, ys)``: for a log y-axis, the geometric mean with a x/÷ geometric-sd band; an arithmetic
  +- sd band on a log axis dives to the floor whenever sd > mean.
* ``centred_norm(values, centre)``: a diverging colour normalisation whose white is the theory value ``centre``.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm

# ~6.5-inch-wide pages: a panel of 3.6 x 2.8 in at 150 dpi is 540 px, two of them ~1 100 px, with 8-9 pt text.
PANEL = (3.6, 2.8)
DPI = 150
RC = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.4,
    "image.cmap": "viridis",
}
THEORY = {"color": "k", "ls": "--", "lw": 1.2}  # theory curves: black dashed in every figure
DIVERGING = "RdBu_r"


def styled(fn: Callable) -> Callable:
    """Run a figure-drawing function under the shared rcParams (``RC``)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with plt.rc_context(RC):
            return fn(*args, **kwargs)

    return wrapper


def panels(n: int, ncols: int | None = None, panel: tuple[float, float] = PANEL, **kwargs):
    """``(fig, axes[n])`` with ``n`` panels in rows of ``ncols`` (default: 1 for one panel, else 2), each ``panel``
    inches; unused cells of the last row are removed. Extra keyword arguments go to ``plt.subplots``."""
    if n < 1:
        raise ValueError(f"invalid n={n}: a figure needs at least one panel")
    ncols = ncols or (1 if n == 1 else 2)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False,
                             constrained_layout=True, **kwargs)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, np.asarray(flat[:n], dtype=object)


def legend_outside(ax, where: str = "right", **kwargs):
    """Place ``ax``'s legend outside the axes (``where`` = "right" or "below"), so it never covers data."""
    if where == "right":
        return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)
    if where == "below":
        ncol = kwargs.pop("ncol", 2)
        return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=ncol, **kwargs)
    raise ValueError(f"invalid where={where!r}: 'right' or 'below'")


def legend_entries(axes, extra=()) -> tuple[list, list[str]]:
    """``(handles, labels)`` of every series of ``axes`` plus the ``extra`` handles, each label once (first wins):
    the entries of one legend shared by panels that draw the same series."""
    seen = {}
    for a in axes:
        for h, lab in zip(*a.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    for h in extra:
        seen.setdefault(h.get_label(), h)
    return list(seen.values()), list(seen)


def figure_legend(fig, ax=None, ncol: int = 2, extra=(), **kwargs):
    """One legend for panels that share their lines, below all panels (``constrained_layout`` makes room for it):
    the entries of ``ax`` (one Axes or several; default: all of the figure's) and ``extra``, each label once."""
    axes = fig.axes if ax is None else (list(ax) if np.iterable(ax) else [ax])
    return fig.legend(*legend_entries(axes, extra), loc="outside lower center", ncol=ncol, **kwargs)


def legend_cell(cell, axes, extra=(), loc: str = "center left", **kwargs):
    """Turn the spare grid cell ``cell`` into the one legend of ``axes`` (and ``extra``): beside the panels, not on
    top of each panel's data."""
    cell.axis("off")
    return cell.legend(*legend_entries(axes, extra), loc=loc, **kwargs)


def geometric_stats(ys) -> tuple[np.ndarray, np.ndarray]:
    """``(geometric mean, geometric sd)`` over the leading axis of positive ``ys[seeds, ...]``: exp of the mean and
    of the sd of log(y). Non-positive or non-finite entries are left out of each column's statistics; an all-NaN
    column gives NaN (drawn as a gap)."""
    ys = np.asarray(ys, float)
    logs = np.where(np.isfinite(ys) & (ys > 0), np.log(np.where(ys > 0, ys, 1.0)), np.nan)
    with warnings.catch_warnings():  # an all-NaN column (every seed diverged) is drawn as a gap
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.exp(np.nanmean(logs, 0)), np.exp(np.nanstd(logs, 0))


def geometric_band(ax, x, ys, label=None, color=None, ls="-", alpha=0.2):
    """Geometric mean over the leading axis of positive ``ys[seeds, x]`` with a x/÷ geometric-sd band
    (:func:`geometric_stats`): on a log axis the mean +- sd of log(y), symmetric, never below zero."""
    gm, gsd = geometric_stats(ys)
    line, = ax.plot(x, gm, label=label, color=color, ls=ls)
    ax.fill_between(x, gm / gsd, gm * gsd, alpha=alpha, color=line.get_color(), lw=0)
    return line


def outer_labels(axes, ncols: int, xlabel: str, ylabel: str) -> None:
    """Axis labels only where they are read: ``xlabel`` on the lowest panel of each column, ``ylabel`` on the
    first column (``axes`` as :func:`panels` lays them out, ``ncols`` per row)."""
    for k, ax in enumerate(axes):
        if k + ncols >= len(axes):
            ax.set_xlabel(xlabel)
        if k % ncols == 0:
            ax.set_ylabel(ylabel)


def ink(rgba) -> str:
    """Text colour readable on a cell of colour ``rgba``: white on dark cells, black on light ones (relative
    luminance 0.2126 R + 0.7152 G + 0.0722 B of the sRGB values, threshold 0.45)."""
    r, g, b = rgba[:3]
    return "w" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.45 else "k"


def centred_norm(values, centre: float) -> TwoSlopeNorm:
    """Diverging normalisation of ``values`` with ``centre`` (the theory value) at the colour map's middle; the
    range is symmetric in distance from ``centre`` so equal colours mean equal deviations."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    half = float(np.max(np.abs(v - centre))) if v.size else 1.0
    half = half if half > 0 else 1.0
    return TwoSlopeNorm(vcenter=centre, vmin=centre - half, vmax=centre + half)

