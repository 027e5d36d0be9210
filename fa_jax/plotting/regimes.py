"""Regime map of a (supervision x optimiser x learning rate x seed) sweep; theory values marked on every panel.
Style: :mod:`.style` (diverging colour scales centred on the theory value, legends off the data)."""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullLocator

from .common import save
from .style import DIVERGING, THEORY, centred_norm, ink, legend_outside, panels, styled


@styled
def regime_figures(out_dir, ds, m: dict, spec: dict, *, theory: dict, cos_theory: dict, d: int, k: int) -> list:
    """``regimes_map.png``: heat-maps (optimiser x lr multiplier) of mean r50/radius and in-block cosine, one
    column per supervision, colour scale centred on the theory value (white = theory), cells annotated with the
    mean (and the number of diverged runs). ``regimes_lines.png``: the same means +- sd against the learning-rate
    multiplier, one line per optimiser, theory dashed."""
    sups = list(ds["supervision"].values)
    opts = list(ds["optimizer"].values)
    lrs = [float(x) for x in ds["lr_mult"].values]
    rows = [("r50_norm", "r50 / radius", theory), ("inblock_cos", "in-block cosine", cos_theory)]
    radius_name = {"binary": r"$\sqrt{d/k}$", "multiclass": r"$\sqrt{d/2}$ (max read-out)"}
    fig, axes = panels(2 * len(sups), ncols=len(sups), panel=(3.6, 3.2))
    axes = axes.reshape(2, len(sups))
    for r, (name, label, th) in enumerate(rows):
        for c, sup in enumerate(sups):
            ax = axes[r, c]
            da = m[name].sel(supervision=sup)
            mean = da.mean("seed").transpose("optimizer", "lr_mult").values
            div = ds["diverged"].sel(supervision=sup).sum("seed").transpose("optimizer", "lr_mult").values
            centre = th[sup]
            norm = centred_norm(mean, centre)
            im = ax.imshow(np.ma.masked_invalid(mean), cmap=DIVERGING, norm=norm, aspect="auto")
            for i in range(len(opts)):
                for j in range(len(lrs)):
                    finite = np.isfinite(mean[i, j])
                    txt = f"{mean[i, j]:.3f}" if finite else "n/a"
                    if div[i, j]:
                        txt += f"\n{int(div[i, j])} div."
                    ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                            color=ink(im.cmap(norm(mean[i, j]))) if finite else "k")
            ax.set_xticks(range(len(lrs)), [f"$\\times${v:g}" for v in lrs])
            ax.set_yticks(range(len(opts)), opts)
            ax.set_xlabel("learning-rate multiplier (base 1e-3)")
            what = f"$r_{{50}}$ / {radius_name[sup]}" if name == "r50_norm" else label
            ax.set_title(f"{sup}: {what}")
            cb = fig.colorbar(im, ax=ax)
            cb.ax.axhline(centre, color="k", lw=2)
            cb.ax.set_ylabel(f"theory = {centre:.3g} (black line, white)")
    fig.suptitle(f"Which features does each optimiser learn? (d = {d}, k = {k}; mean over seeds)")
    names = [save(fig, out_dir, "regimes_map.png")]

    fig, axes = panels(2 * len(sups), ncols=len(sups))
    axes = axes.reshape(2, len(sups))
    for r, (name, label, th) in enumerate(rows):
        for c, sup in enumerate(sups):
            ax = axes[r, c]
            da = m[name].sel(supervision=sup)
            for opt in opts:
                y = da.sel(optimizer=opt)
                ax.errorbar(lrs, y.mean("seed").values, yerr=y.std("seed").values, marker="o", ms=4, capsize=2,
                            label=opt)
            ax.axhline(th[sup], **THEORY, label="theory (GD)")
            ax.set_xscale("log")
            ax.set_xticks(lrs, [f"$\\times${v:g}" for v in lrs])  # the swept values, not crowded decade labels
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel("learning-rate multiplier")
            ax.set_ylabel("$r_{50}$ / radius" if name == "r50_norm" else label)
            ax.set_title(sup)
    legend_outside(axes[0, -1])
    names.append(save(fig, out_dir, "regimes_lines.png"))
    return names
