"""Shared plotting helpers: saving at the shared resolution, the theory line style and mean +- sd bands.

The figure style itself (sizes, fonts, layouts, legends, log-axis bands, colour scales) lives in :mod:`.style`;
``THEORY`` and the resolution come from there, so every module draws theory lines and saves PNGs alike."""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np

from .style import DPI, THEORY, geometric_band

__all__ = ["THEORY", "band", "geometric_band", "save"]


def save(fig, out_dir, name):
    """Save ``fig`` as ``out_dir/name`` at ``style.DPI`` (tight bounding box) and close it; returns ``name``."""
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
