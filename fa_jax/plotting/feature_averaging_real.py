"""Figures of the real-data feature-averaging sim (no theory exists for real images: the panels show the
measured comparison the spec predicts, P14, and the Fig. 2c/2d analogue). Style: :mod:`.style`."""
from __future__ import annotations

import numpy as np

from ..experiments.feature_averaging import readout_net
from ..results import stacked
from .common import band as _band
from .common import save as _save
from .style import DIVERGING, geometric_band, legend_outside, panels, styled

LABELS = {"binary": "binary net", "lse": "10-class, $F_{lse}$ (primary; strongest attack)",
          "sum": "10-class, $F_{sum}$ (variant; strongest)", "max": "10-class, $F_{max}$ (variant; strongest)",
          "lse_margin": "$F_{lse}$, margin attack", "sum_margin": "$F_{sum}$, margin attack",
          "max_margin": "$F_{max}$, margin attack", "lse_ce": "$F_{lse}$, CE attack", "sum_ce": "$F_{sum}$, CE attack",
          "max_ce": "$F_{max}$, CE attack"}
COLORS = {"binary": "C3", "lse": "C1", "sum": "C0", "max": "C2"}
READOUTS = ("binary", "lse", "sum", "max")  # lse: the 10-class net's primary read-out (drawn bold)


@styled
def feature_averaging_real_figures(out_dir, s, ds, metrics) -> list[str]:
    """``robust_accuracy.png``, ``cosine_heatmaps.png``, ``training.png`` of a real-data run (``ds``: its runs,
    ``select_runs(load_results(...), "all")``, dims ``(head, seed, <output axes>)``; ``metrics``: the sim's)."""
    eps = np.asarray(ds["eps"].values, float)
    curves = {name: stacked(ds[f"robust/{name}/acc"].sel(head=readout_net(name)), "seed")  # [seed, eps]
              for name in LABELS if f"robust/{name}/acc" in ds}
    n_seeds = ds.sizes["seed"]
    data = metrics["data"]
    task = f"{data['dataset']} {data['partition']} (+: {data['positive']}), {s.arch}"
    names = []

    # 1. robust accuracy vs radius (paper Fig. 3 analogue)
    fig, (ax,) = panels(1, panel=(7.2, 3.4))  # the width holds the legend beside the axes
    for name in READOUTS:
        if name in curves:
            clean = metrics["clean_accuracy"][name]["mean"]
            _band(ax, eps, curves[name], f"{LABELS[name]}, clean {clean:.3f}", color=COLORS[name])
            if name == "lse":  # the primary read-out: bold, drawn above the variants
                ax.lines[-1].set_linewidth(2.5)
                ax.lines[-1].set_zorder(5)
    for name in ("lse_margin", "sum_margin", "max_margin", "lse_ce", "sum_ce", "max_ce"):
        if name in curves:
            ax.plot(eps, curves[name].mean(0), color=COLORS[name.split("_")[0]],
                    ls=":" if name.endswith("_ce") else "--", lw=1, label=LABELS[name] + " (mean)")
    ax.set_xlabel("$\\ell_2$ radius $\\epsilon$ ([0, 1] pixels)")
    ax.set_ylabel("robust accuracy (PGD)")
    ax.set_ylim(-0.02, 1.02)
    legend_outside(ax)
    ax.set_title(f"{task}\nPGD {s.pgd_steps} steps $\\times$ {s.restarts} start(s), {s.n_points} test points; "
                 f"mean $\\pm$ sd over {n_seeds} seeds")
    names.append(_save(fig, out_dir, "robust_accuracy.png"))

    # 2. class-mean cosine heat-maps of penultimate features (paper Fig. 2c/2d analogue), seed means
    classes = data["classes"]
    signs = np.zeros(len(classes))
    signs[data["positive"]] = 1
    signs[data["negative"]] = -1
    order = np.r_[np.flatnonzero(signs > 0), np.flatnonzero(signs < 0)]  # + side first, then - side
    ticks = [str(classes[i])[:6] for i in order]
    fig, axes = panels(4, panel=(3.6, 3.4))
    axes = axes.reshape(2, 2)
    f = metrics["features"]
    for col, label in enumerate(("binary", "multiclass")):
        ax = axes[0, col]
        c = f[label]["cos_mean"][np.ix_(order, order)]
        im = ax.imshow(c, vmin=-1, vmax=1, cmap=DIVERGING)
        n_pos = int((signs > 0).sum())
        ax.axhline(n_pos - 0.5, color="k", lw=1)
        ax.axvline(n_pos - 0.5, color="k", lw=1)
        ax.set_xticks(range(len(order)), ticks, rotation=90)
        ax.set_yticks(range(len(order)), ticks)
        name = "10-class" if label == "multiclass" else label
        ax.set_title(f"{name} net: cos of centred class means\nwithin side {f[label]['within_side']['mean']:.2f}, "
                     f"across sides {f[label]['cross_side']['mean']:.2f}")
        ax = axes[1, col]
        width = 1 if label == "binary" else len(classes)  # head outputs (load_results NaN-pads the binary net's one)
        hc = ds["features/head_cos"].sel(head=label).isel(head_output=slice(0, width))  # [seed, class, output]
        h = np.mean(stacked(hc, "seed"), 0)[order]
        if h.shape[1] == len(classes):
            h = h[:, order]
        im = ax.imshow(h, vmin=-1, vmax=1, cmap=DIVERGING, aspect="auto")
        ax.set_yticks(range(len(order)), ticks)
        ax.set_xticks(range(h.shape[1]), ["$f$"] if h.shape[1] == 1 else ticks,
                      rotation=0 if h.shape[1] == 1 else 90)
        ax.set_xlabel("head weight (output)")
        ax.set_title(f"{name} net: cos(centred class mean,\nhead weight)")
    fig.colorbar(im, ax=list(axes.ravel()), shrink=0.6, label="cosine")  # one scale, [-1, 1], for all four
    fig.suptitle(f"penultimate features on the test set, mean of {n_seeds} seeds; classes ordered + side | $-$ side"
                 f"\n{task}")
    names.append(_save(fig, out_dir, "cosine_heatmaps.png"))

    # 3. training records
    fig, axes = panels(2)
    st = np.maximum(ds["step"].values, 1)
    for label, head, c in (("binary", "binary", COLORS["binary"]), ("10-class", "multiclass", COLORS["lse"])):
        rec = {name: stacked(ds[f"records/{name}"].sel(head=head), "seed") for name in ("loss", "test_acc", "train_acc")}
        # log axis: geometric mean x/÷ geometric sd (an arithmetic band dives to the floor where sd > mean)
        geometric_band(axes[0], st, rec["loss"], f"{label} (train loss)", color=c)
        _band(axes[1], st, rec["test_acc"], f"{label} ({'sgn f' if label == 'binary' else '$F_{lse}$'}) test", color=c)
        _band(axes[1], st, rec["train_acc"], f"{label} train", color=c, ls=":")
    for ax, yl in ((axes[0], "training loss (geometric mean)"), (axes[1], "binary accuracy")):
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(yl)
    axes[0].legend()
    axes[1].legend(loc="lower right")
    axes[0].set_yscale("log")
    names.append(_save(fig, out_dir, "training.png"))
    return names

