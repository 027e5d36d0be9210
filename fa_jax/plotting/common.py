"""Shared plotting helpers (Agg backend, theory line style, saving, mean +- sd bands)."""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np

THEORY = dict(color="k", ls="--", lw=1.2)


def save(fig, out_dir, name):
    """Save ``fig`` as ``out_dir/name`` and close it; returns ``name``."""
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return name


def band(ax, x, ys, label, color=None, ls="-"):
    """Mean over the leading axis with a +- 1 sd band."""
    ys = np.asarray(ys, float)
    m, sd = ys.mean(0), ys.std(0)
    line, = ax.plot(x, m, label=label, color=color, ls=ls)
    ax.fill_between(x, m - sd, m + sd, alpha=0.2, color=line.get_color())
