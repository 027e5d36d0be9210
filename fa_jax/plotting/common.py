"""Shared plotting helpers: saving at the shared resolution, the theory line style and mean +- sd bands.

The figure style itself (sizes, fonts, layouts, legends, log-axis bands, colour scales) lives in :mod:`.style`;
``THEORY`` and the resolution come from there, so every module draws theory lines and saves PNGs alike."""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np

from .style import DPI, THEORY, geometric_band

__all__ = ["THEORY", "band", "geometric_band", "save"]


LOG_TOP = 1e100  # a log axis reaching beyond this holds a blowing-up run: clamped here (matplotlib cannot tick 1e300)


def _clamp_log_axes(fig) -> None:
    """Log axes that diverged runs would break while saving: a run's records grow to 1e300 before they overflow,
    and matplotlib's log-axis ticks overflow at such limits (OverflowError): the axis is clamped to ``LOG_TOP`` and
    says what lies beyond; an axis with no finite positive value at all (every run drawn on it diverged: NaN)
    cannot be log-scaled (ValueError): it is drawn linear and says why."""
    for ax in fig.axes:
        data = ax.dataLim
        for which, get, setter in (("y", ax.get_ylim, ax.set_ylim), ("x", ax.get_xlim, ax.set_xlim)):
            scale = ax.get_yscale() if which == "y" else ax.get_xscale()
            if scale != "log":
                continue
            dmax = data.y1 if which == "y" else data.x1
            if not (np.isfinite(dmax) and dmax > 0):
                (ax.set_yscale if which == "y" else ax.set_xscale)("linear")
                ax.text(0.5, 0.5, "no finite positive value (diverged runs)", transform=ax.transAxes,
                        ha="center", va="center", fontsize="small", color="0.3")
                continue
            lo, hi = get()  # (autoscaling overflows near 1e308 and may return anything: the data decide)
            if dmax > LOG_TOP or (np.isfinite(hi) and hi > LOG_TOP):
                setter(min(lo, LOG_TOP / 10), LOG_TOP)
                ax.text(0.5, 0.98, f"values beyond {LOG_TOP:.0e} (blowing up) off the scale", transform=ax.transAxes,
                        ha="center", va="top", fontsize="small", color="0.3")


def save(fig, out_dir, name):
    """Save ``fig`` as ``out_dir/name`` at ``style.DPI`` (tight bounding box) and close it; returns ``name``. A log
    axis beyond ``LOG_TOP`` (a diverging run) is clamped to it first (:func:`_clamp_log_axes`)."""
    _clamp_log_axes(fig)
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def band(ax, x, ys, label=None, color=None, ls="-"):
    """Mean over the leading axis of ``ys[seeds, x]`` with a +- 1 sd band, for a linear y-axis (on a log axis use
    :func:`geometric_band`: an arithmetic band dives to the floor whenever sd > mean)."""
    ys = np.asarray(ys, float)
    m, sd = ys.mean(0), ys.std(0)
    line, = ax.plot(x, m, label=label, color=color, ls=ls)
    ax.fill_between(x, m - sd, m + sd, alpha=0.2, color=line.get_color(), lw=0)
    return line
