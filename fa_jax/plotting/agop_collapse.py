"""Figures of the AGOP / deep-neural-collapse simulation; theory (geometric fit, closed forms) beside measurement."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..results import select_runs
from ..theory import agop_collapse as T
from .common import save
from .style import DIVERGING, THEORY, centred_norm, ink, legend_outside, outer_labels, panels, styled

# one colour per Deep RFM variant across panels (dotted: its M = I control)
_COLOURS = {"nonorth": "C1", "nonorth_control": "C1", "cos": "C4", "cos_control": "C4", "image": "C3",
            "image_control": "C3"}
_VARIANTS = {"cos": "cosine RFF", "cos_control": "$M = I$ control", "nonorth": "chained means",
             "nonorth_control": "$M = I$ control", "image": "images", "image_control": "$M = I$ control"}


def _with_bad(cmap):
    """``cmap`` with missing (NaN) cells in light grey: never the colour of a value (white is rho = 1)."""
    return plt.get_cmap(cmap).with_extremes(bad="0.85")


def _fig_deep_rfm(out_dir, s, metrics):
    dr = metrics["deep_rfm"]
    layers = np.arange(1, len(dr["nc1_x"]) + 1)
    fig, axes = panels(4, panel=(3.9, 3.0))
    ax = axes[0]
    ax.semilogy(layers, dr["nc1_x"], "o-", ms=4, label="$X_l$")
    ax.semilogy(layers, dr["nc1_z"], "s-", ms=4, label="$M_l^{1/2} X_l$")
    ax.semilogy(layers, dr["nc1_phi"], "^-", ms=4, label="$\\Phi(M_l^{1/2} X_l)$")
    ax.semilogy(layers, dr["control_nc1_x"], "x:", color="0.4", label="control $M = I$ ($X_l$)")
    fit = dr["fit"]
    if np.isfinite(fit["rho"]):
        ax.semilogy(layers, fit["c"] * fit["rho"] ** layers, **THEORY,
                    label=f"fit $C\\rho^l$, $\\rho$ = {fit['rho']:.3g}, $R^2$ = {fit['r2']:.3f}")
    ax.set_xlabel("layer $l$")
    ax.set_ylabel("NC1 = tr $S_W$ / tr $S_B$")
    ax.set_title(f"Deep RFM ({s.feature}), mixture $K$ = {s.k}, $d$ = {s.d}")
    legend_outside(ax, "below")
    # NC2: the orthonormal mixture starts at its floor; the chained-means mixture and the images have room to fall
    ax = axes[1]
    ax.semilogy(layers, dr["nc2_x"], "o-", ms=3, color="C0", label="orthonormal means")
    for what, st in (("nonorth", "s-"), ("nonorth_control", "s:"), ("image", "^-"), ("image_control", "^:")):
        if what in dr:
            label = _VARIANTS[what]
            v = np.asarray(dr[what]["nc2_x"])
            ax.semilogy(np.arange(1, len(v) + 1), v, st, ms=3, color=_COLOURS[what], label=label)
    ax.set_xlabel("layer $l$")
    ax.set_ylabel("NC2 (mean sq. distance to ETF Gram)")
    ax.set_title("P4: NC2($X_l$) with and without the AGOP")
    legend_outside(ax, "below")
    ax = axes[2]
    for what, st in (("cos", "-"), ("cos_control", ":"), ("nonorth", "-"), ("nonorth_control", ":"), ("image", "-"),
                     ("image_control", ":")):
        if what in dr:
            v = dr[what]
            lab = _VARIANTS[what] + (f", $\\gamma$ = {v['gamma']:g}" if "gamma" in v and "control" not in what else "")
            ax.semilogy(np.arange(1, len(v["nc1_x"]) + 1), v["nc1_x"], st, marker="o", ms=3, color=_COLOURS[what],
                        label=lab)
    ax.set_xlabel("layer $l$")
    ax.set_ylabel("NC1($X_l$) (geo. mean over feature seeds)")
    ax.set_title("variants (dotted: $M = I$ controls)")
    if ax.lines:
        legend_outside(ax, "below")
    else:
        ax.text(0.5, 0.5, "no variant runs in this preset", ha="center", transform=ax.transAxes)
    # the cosine-RFF gamma curve: every seed, the median, the P1 threshold and the official gamma
    ax = axes[3]
    sw = dr.get("cos_gamma_sweep")
    if sw:
        g = np.asarray(sw["gammas"], float)
        for j, (gj, per) in enumerate(zip(g, sw["nc1_ratio_per_seed"])):
            ax.loglog(np.full(len(per), gj), per, "o", color="C0", ms=4, alpha=0.6,
                      label="one feature seed" if j == 0 else None)
        ax.loglog(g, sw["nc1_ratio_median"], "-", color="C0", label=f"median, {sw['seeds']} seeds")
        ax.axhline(T.p1_nc1_ratio_max(), **THEORY, label=f"P1 threshold {T.p1_nc1_ratio_max():g} (inferred)")
        ax.axhline(T.no_collapse_ratio(), color="0.5", lw=0.8, label="no collapse (1)")
        ax.axvline(sw["official_gamma"], color="C3", ls=":",
                   label=f"official $\\gamma$ = {sw['official_gamma']:g}")
        ax.set_xlabel("$\\gamma$ (Cauchy(0, $\\gamma$) weights)")
        ax.set_ylabel("NC1($X_L$) / NC1($X_1$)")
        ax.set_title(f"cosine RFF: collapse over {len(layers)} layers")
        legend_outside(ax, "below")
    else:
        ax.text(0.5, 0.5, "no cosine-RFF runs in this preset", ha="center", transform=ax.transAxes)
    for ax in axes[:3]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save(fig, out_dir, "deep_rfm_nc.png")


def _fig_phase(out_dir, s, ds, metrics):
    grid = metrics["grid"]
    if not grid:
        return None
    # NC1(X_l) per (ridge, bandwidth) (ascending; a missing cell NaN), the grid runs cut to their depth
    nc1 = select_runs(ds, "grid", unstack=True)["layers/x/nc1"].isel(rfm_layer=slice(0, s.depth))
    ridges, bws = nc1["ridge"].values.tolist(), nc1["bandwidth"].values.tolist()
    depth = s.depth
    show = sorted({min(2, depth), max(1, depth // 2), depth})  # X_1 is the (normalised) input: the same everywhere
    fig, axes = panels(len(show) + 1, panel=(3.6, 2.8))
    for ax, layer in zip(axes, show):
        img = np.log10(nc1.isel(rfm_layer=layer - 1).transpose("ridge", "bandwidth").values)
        im = ax.imshow(img, origin="lower", aspect="auto", cmap=_with_bad("viridis"))
        fig.colorbar(im, ax=ax, label="$\\log_{10}$ NC1")
        ax.set_title(f"depth {layer}: $\\log_{{10}}$ NC1($X_l$)")
    ax = axes[-1]
    img = np.full((len(ridges), len(bws)), np.nan)
    for g in grid:
        img[ridges.index(g["ridge"]), bws.index(g["bandwidth"])] = g["fit"]["rho"]
    norm = centred_norm(img, 1.0)  # white at rho = 1 (no contraction), equal colours = equal distances from it
    im = ax.imshow(img, origin="lower", aspect="auto", cmap=_with_bad(DIVERGING), norm=norm)
    for i in range(len(ridges)):
        for j in range(len(bws)):  # text readable on its cell (style.ink); black on the grey of a missing value
            ok = np.isfinite(img[i, j])
            ax.text(j, i, f"{img[i, j]:.2f}" if ok else "n/a", ha="center", va="center", fontsize=7,
                    color=ink(im.cmap(norm(img[i, j]))) if ok else "k")
    fig.colorbar(im, ax=ax, label="fitted $\\rho$ (collapse where < 1)")
    ax.set_title("per-layer contraction $\\rho$")
    for ax in axes:
        ax.set_xticks(range(len(bws)), [f"{b:g}" for b in bws])
        ax.set_yticks(range(len(ridges)), [f"{r:g}" for r in ridges])
    outer_labels(axes, 2, "bandwidth $L$", "kernel ridge $\\lambda_k$")
    fig.suptitle(f"Deep RFM over (ridge, bandwidth), {depth} layers")
    return save(fig, out_dir, "deep_rfm_phase.png")


def _fig_mlp(out_dir, s, ds):
    mlp = select_runs(ds, "mlp", unstack=True)  # dims (gain, step, ...)
    m = mlp.sel(gain=s.mlp_gain)  # the small-init run
    rec = lambda name: m[f"records/{name}"].values  # [step, ...]
    nc = {f: rec(f"nc1/{f}")[-1] for f in ("phi", "svt", "pre", "out")}  # end of training, [layer]
    hidden = np.arange(1, len(nc["phi"]) + 1)
    fig, axes = panels(4, panel=(3.9, 3.0))
    ax = axes[0]
    ax.semilogy(hidden, nc["phi"], "o-", ms=4, label="$\\Phi$ (layer input)")
    ax.semilogy(hidden, nc["svt"], "s-", ms=4, label="$SV^\\top\\Phi$")
    ax.semilogy(hidden, nc["pre"], "+--", label="$USV^\\top\\Phi$ (= $SV^\\top\\Phi$, exact)")
    ax.semilogy(hidden, nc["out"], "^-", ms=4, label="ReLU($USV^\\top\\Phi$)")
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("NC1 at the end of training")
    ax.set_title("NC1 through each layer's factors")
    legend_outside(ax, "below")
    ax = axes[1]
    fr = rec("frac_right")[-1]
    ax.bar(hidden - 0.2, fr, 0.4, label="$SV^\\top$ (right singular structure)")
    ax.bar(hidden + 0.2, 1 - fr, 0.4, label="ReLU")
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(0.5, **THEORY, label="majority (1/2)")
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("share of the log-NC1 reduction")
    ax.set_title("who reduces NC1 ($U$: exactly 0)")
    if s.mlp_gain_large > 0:
        ax.plot(hidden, mlp["records/frac_right"].sel(gain=s.mlp_gain_large).values[-1], "kx",
                label=f"$SV^\\top$ share, gain {s.mlp_gain_large}")
    legend_outside(ax, "below")
    ax = axes[2]
    steps = m["step"].values
    half, one = rec("nfa_half"), rec("nfa_one")  # [step, layer]
    for j in range(half.shape[1]):
        line, = ax.plot(steps, half[:, j], "-", label=f"layer {j + 1}")
        ax.plot(steps, one[:, j], ":", color=line.get_color())
    ax.plot([], [], "k-", label="$\\alpha$ = 1/2")
    ax.plot([], [], "k:", label="$\\alpha$ = 1")
    ax.set_xlabel("step")
    ax.set_ylabel("$\\rho(W^\\top W, \\mathrm{AGOP}^\\alpha)$")
    ax.set_title("Neural Feature Ansatz over training")
    legend_outside(ax, "below", ncol=4)
    ax = axes[3]
    ax.semilogy(steps, rec("sw_over_st"), label="tr $S_W$ / tr $S_T$ (last hidden)")
    ax.semilogy(steps, rec("sb_over_st"), label="tr $S_B$ / tr $S_T$ (last hidden)")
    ax.semilogy(steps, rec("loss"), label="training loss (MSE)")
    ax.semilogy(steps, rec("acc"), "--", label="training accuracy")
    ax.set_xlabel("step")
    ax.set_ylabel("ratio / loss / accuracy")
    ax.set_title("collapse and fit over training")
    legend_outside(ax, "below")
    for ax in axes[:2]:
        ax.set_xticks(hidden)
    fig.suptitle(f"MLP {list(s.mlp_widths)}, gain {s.mlp_gain}")
    return save(fig, out_dir, "mlp_collapse.png")


def _fig_one_step(out_dir, s, metrics):
    p6 = metrics["p6"]
    lam = np.asarray(p6["ridges"], float)
    x = np.where(lam > 0, lam, np.nan)
    fig, (ax,) = panels(1, panel=(4.2, 3.2))
    ax.loglog(x, p6["nc1_closed_form"], **THEORY, label="closed form NC1($AY$), $A = G(G + \\lambda I)^{-1}$")
    ax.loglog(x, p6["nc1_measured"], "o", label="measured NC1($XM^{1/2}$)")
    ax.set_xlabel("ridge $\\lambda$")
    ax.set_ylabel("one-step NC1")
    ax.set_title(f"linear kernel, $N$ = {p6['n']} $\\leq$ $d$ = {p6['d']}; "
                 f"$\\lambda$ = 0: NC1 = {p6['nc1_measured'][0]:.2g}")
    ax.legend(loc="upper left")
    return save(fig, out_dir, "one_step_linear.png")


@styled
def agop_figures(out_dir, s, ds, metrics) -> list[str]:
    """The four AGOP-collapse figures (2 x 2 layouts, legends below their panels, a rho map centred on 1); returns
    the file names written to ``out_dir``. ``ds``: the sweep's labelled Dataset (``load_results`` of the sim's
    cache, dim ``run``), whose runs give the per-run curves (the grid's NC1, the MLP records); ``metrics``: the
    sim's, for what is derived from them (seed geometric means, fits, the P6 closed form)."""
    names = [_fig_deep_rfm(out_dir, s, metrics), _fig_phase(out_dir, s, ds, metrics), _fig_mlp(out_dir, s, ds),
             _fig_one_step(out_dir, s, metrics)]
    return [n for n in names if n]
