"""SGD-support figures. Every panel draws the theory (``fa_jax.theory.sgd_support``) beside the measurement."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from ..results import labelled_runs, runs_where, stacked
from ..theory import sgd_support as T
from .common import save as _save
from .style import THEORY, geometric_band, ink, legend_cell, outer_labels, panels, styled


@styled
def sgd_support_figures(out_dir, s, parts, metrics, t3) -> list[str]:
    """The four SGD-support figures (2 x 2 / 2-column layouts, legends beside the data, geometric bands on log
    axes); returns the file names written to ``out_dir``.

    ``parts``: the sim's runs, ``{part: select_runs(load_results(...), part)}``: ``gd`` / ``wd`` dims ``(seed, step,
    ...)``, ``sgd`` ``(b, seed, traj, step, ...)``, ``phase`` on its ``run`` axis (labels b, lr, seed);
    ``metrics``: the sim's; ``t3[b]``: the T3 overlays of the SGD runs of batch size b (``t3_prediction``)."""
    names = []
    N = s.n_train
    h = int(s.widths[0]) if s.widths else 1
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(s.batch_sizes)))
    gd, sgd, wd = parts["gd"], parts["sgd"], parts["wd"]
    # label -> (the runs of one optimiser, their label dims); the runs of a group share one plan (coordinate step)
    groups = {"GD": (gd, ("seed",)), "GD + wd": (wd, ("seed",))}
    groups |= {f"b={b}": (sgd.sel(b=b), ("seed", "traj")) for b in s.batch_sizes}

    # 1. ||W1_irr|| / init vs steps: GD, each b, GD + wd; T2 plateau, T3 overlays, wd line. Three log panels and a
    # fourth cell holding the legend every panel shares (same colours), so no legend covers a curve.
    fig, axes = panels(4)
    ax = axes[0]
    _runs_band(ax, *groups["GD"], "records/irr", "GD", "tab:red")
    for b, c in zip(s.batch_sizes, colors):
        x = _runs_band(ax, *groups[f"b={b}"], "records/irr", f"SGD $b$ = {b}", c)
        i0 = t3[b][0]["i0"]
        pred = np.median(np.stack([p["pred_ratio"][i0:] for p in t3[b]]), 0)
        ax.plot(x[i0:], pred, color=c, ls="--", lw=1.2)
    xw = _runs_band(ax, *groups["GD + wd"], "records/irr", f"GD + wd {s.wd:g}", "tab:orange")
    m = metrics["gd_wd"]
    if "t_ref" in m:  # the law's window (after the loss has converged) exists
        r_ref = np.median(stacked(wd["records/irr"], "seed")[:, int(np.argmin(np.abs(wd["step"].values - m["t_ref"])))])
        tt = xw[xw >= m["t_ref"]]
        ax.plot(tt, r_ref * T.wd_ratio(tt - m["t_ref"], s.lr, s.wd), color="tab:orange", ls=":", lw=1.5,
                label="theory $(1-\\eta\\lambda)^t$ (from convergence)")
    ax.axhline(T.gd_plateau_ratio(h), label="T2 plateau $\\sqrt{1-1/h}$", **THEORY)
    ax.plot([], [], color="gray", ls="--", label="T3 (from measured $E[r^2]$, $u$)")
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 1.5)
    ax.set_ylabel("$\\|W_{1,\\mathrm{irr}}\\|_F$ / init")
    ax.set_title("irrelevant first-layer weights")
    ax = axes[1]
    for lab, c in [("GD", "tab:red"), ("GD + wd", "tab:orange")] + [
            (f"b={b}", cc) for b, cc in zip(s.batch_sizes, colors)]:
        _runs_band(ax, *groups[lab], "records/e2e_irr", lab, c)
    ax.axhline(1e-2, **THEORY)
    _line_label(ax, 1e-2, "P1 threshold $10^{-2}$")
    ax.set_yscale("log")
    ax.set_ylabel("end-to-end irrelevant coefficient")
    ax.set_title("function learned (all) vs support (SGD)")
    ax = axes[2]
    for lab, c in [("GD", "tab:red")] + [(f"b={b}", cc) for b, cc in zip(s.batch_sizes, colors)]:
        _runs_band(ax, *groups[lab], "records/loss", lab, c)
    ax.axhline(s.noise ** 2, **THEORY)
    _line_label(ax, s.noise ** 2, "noise floor $\\sigma^2$")
    ax.set_yscale("log")
    ax.set_ylabel("train MSE = $E[r^2]$")
    ax.set_title("mean squared residual (drives T3)")
    for ax in axes[:3]:
        ax.set_xscale("log")
        ax.set_xlabel("step")
    legend_cell(axes[3], axes[:1], title="bands: geometric mean $\\times/\\div$ sd over seeds")
    fig.suptitle(f"{s.target} target, $N$ = {N}, $\\eta$ = {s.lr:g}, clip {s.clip:g}")
    names.append(_save(fig, out_dir, "sgd_support_irrelevant_norm.png"))

    # 2. (lr, b) phase diagram: final ratio at fixed T and at fixed lr*T, constant lr/b contours
    pts = metrics["phase"]
    lrs = sorted({p["lr"] for p in pts})
    bs = sorted({p["b"] for p in pts})
    grid = np.full((len(bs), len(lrs)), np.nan)
    for i, b in enumerate(bs):
        for j, lr in enumerate(lrs):
            grid[i, j] = np.median([p["final_ratio"] for p in pts if p["b"] == b and p["lr"] == lr])
    S = min(lrs) * s.phase_steps
    grid2 = np.full_like(grid, np.nan)
    for i, b in enumerate(bs):
        for j, lr in enumerate(lrs):  # each run on its own records (the b = N column records fewer steps)
            grid2[i, j] = np.median([np.interp(np.log(S / lr), np.log(np.maximum(r["step"].values, 1)),
                                               r["records/irr"].values)
                                     for _, r in labelled_runs(runs_where(parts["phase"], b=b, lr=lr))])
    norm = LogNorm(1e-2, 1.0)
    fig, axes = panels(2, panel=(3.6, 3.4), sharey=True)
    for ax, g, title in ((axes[0], grid, f"at fixed $T$ = {s.phase_steps} steps"),
                         (axes[1], grid2, f"at fixed $\\eta T$ = {S:g}")):
        im = ax.pcolormesh(np.arange(len(lrs) + 1), np.arange(len(bs) + 1), np.clip(g, 1e-3, None),
                           norm=norm, cmap="magma")
        for i in range(len(bs)):
            for j in range(len(lrs)):  # text readable on its cell (style.ink)
                ax.text(j + 0.5, i + 0.5, f"{g[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                        color=ink(im.cmap(norm(max(g[i, j], 1e-3)))))
        # constant lr/b contours in index coordinates (log-linear interpolation between ticks)
        li, bi = np.log(lrs), np.log(bs)
        for c in np.geomspace(1e-5, 1.0, 11):
            bb = np.asarray(lrs) / c
            ok = (bb >= bs[0]) & (bb <= bs[-1])
            if ok.sum() >= 2:
                ax.plot(np.interp(li[ok], li, np.arange(len(lrs))) + 0.5,
                        np.interp(np.log(bb[ok]), bi, np.arange(len(bs))) + 0.5, color="0.55", ls="--", lw=0.9)
        ax.set_xticks(np.arange(len(lrs)) + 0.5, [f"{v:.3g}" for v in lrs])
        ax.set_yticks(np.arange(len(bs)) + 0.5, [str(b) if b < N else f"{b} (GD)" for b in bs])
        ax.set_xlabel("learning rate $\\eta$")
        ax.set_title(title)
    axes[0].set_ylabel("batch size $b$")
    # one colour bar for both panels (same norm), beside the right panel: no label overlaps it
    fig.colorbar(im, ax=list(axes), label="median $\\|W_{1,\\mathrm{irr}}\\|$ / init", shrink=0.9)
    fig.suptitle("($\\eta$, $b$) phase diagram; grey dashed: constant $\\eta/b$ (T1/T3)")
    names.append(_save(fig, out_dir, "sgd_support_phase.png"))

    # 3. decay rate vs lr/b: raw per-step rate / lr, and the T3-normalised collapse y vs x = c_b
    fig, axes = panels(2, panel=(3.6, 3.2))
    cmap = plt.cm.plasma(np.linspace(0, 0.9, len(bs)))
    for b, c in zip(bs, cmap):
        if b >= N:
            continue
        pb = [p for p in pts if p["b"] == b]
        for p in pb:
            mk = "x" if p.get("on_floor") else ("o" if p["resolved"] else "v")
            axes[0].scatter(p["lr"] / b, max(p["rate"], 1e-12) / p["lr"], color=c, marker=mk, s=18)
            if np.isfinite(p["y"]) and p["y"] > 0:
                axes[1].scatter(p["x"], p["y"], color=c, marker=mk, s=18)
        axes[0].scatter([], [], color=c, marker="o", s=18, label=f"$b$ = {b}")
    axes[0].scatter([], [], color="0.4", marker="v", s=18, label="unresolved (upper bound)")
    axes[0].scatter([], [], color="0.4", marker="x", s=18, label="on its noise floor")
    xs = np.geomspace(min(p["x"] for p in pts if p["b"] < N), max(p["x"] for p in pts if p["b"] < N), 10)
    axes[0].plot([], [], label="T3: $y = x$", **THEORY)
    axes[0].plot([], [], color="k", ls=":", lw=0.8, label="factor 2")
    axes[1].plot(xs, xs, **THEORY)
    axes[1].plot(xs, 2 * xs, color="k", ls=":", lw=0.8)
    axes[1].plot(xs, xs / 2, color="k", ls=":", lw=0.8)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
    axes[0].set_xlabel("$\\eta / b$")
    axes[0].set_ylabel("Phase-2 decay rate per unit $\\eta t$")
    axes[0].set_title("raw decay rate")
    axes[1].set_xlabel("$c_b = (\\eta/b)(N-b)/(N-1)$")
    axes[1].set_ylabel("$\\Delta\\ln\\|W_{1,\\mathrm{irr}}\\| \\,/ \\int \\eta E[r^2] u \\chi\\, dt$")
    c = metrics["collapse"]
    axes[1].set_title(f"T3 collapse: slope {c['slope']:.2f}, median $y/x$ {c['median_y_over_x']:.2f}\n"
                      f"({c['in_domain']} of {c['points']} points in T3's domain)")
    fig.legend(loc="outside lower center", ncol=3)
    names.append(_save(fig, out_dir, "sgd_support_collapse.png"))

    # 4. |W1| at init and after each optimiser (seed 0), paper Fig. 1 analogue: two rows, one colour bar
    cols = [("init", gd["w1_init"].sel(seed=0).values), ("GD", gd["w1"].sel(seed=0).values)]
    for b in s.batch_sizes:  # its first trajectory
        cols.append((f"SGD $b$ = {b}", sgd["w1"].sel(b=b, seed=0, traj=0).values))
    cols.append(("GD + wd", wd["w1"].sel(seed=0).values))
    ncols = len(cols) if len(cols) <= 4 else -(-len(cols) // 2)  # two balanced rows (7 -> 4 + 3)
    fig, axes = panels(len(cols), ncols=ncols, panel=(1.9, 2.1))
    vmax = float(np.max(np.abs(cols[0][1])))
    for ax, (title, w) in zip(axes, cols):
        im = ax.imshow(np.abs(np.asarray(w)), vmin=0, vmax=vmax, cmap="viridis", aspect="auto")
        ax.axhline(s.s - 0.5, color="w", lw=1)
        ax.set_title(title)
    outer_labels(axes, ncols, "hidden unit", f"input (first {s.s} relevant)")
    fig.colorbar(im, ax=list(axes), label="$|W_1|$", shrink=0.8)
    fig.suptitle("$|W_1|$ (rows: inputs); theory: SGD zeroes the rows below the line")
    names.append(_save(fig, out_dir, "sgd_support_first_layer.png"))
    return names


def _runs_band(ax, sub, dims, var, label, color):
    """:func:`geometric_band` of output ``var`` over the runs of ``sub`` (label ``dims``, one plan: coordinate
    ``step``, drawn from step 1 on the log axis); returns the steps drawn."""
    x = np.maximum(sub["step"].values, 1)
    ys = stacked(sub[var], *dims)
    geometric_band(ax, x, ys.reshape(-1, ys.shape[-1]), label, color=color)  # [run, step]
    return x


def _line_label(ax, y, text):
    """Name a horizontal theory line on the axes (left end, just above it) instead of in a legend."""
    ax.annotate(text, (0.02, y), xycoords=("axes fraction", "data"), xytext=(0, 2), textcoords="offset points",
                va="bottom", fontsize=7.5)
