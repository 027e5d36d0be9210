"""Figures of the AGOP / deep-neural-collapse simulation; theory (geometric fit, closed forms) beside measurement."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm

from ..theory import agop_collapse as T
from .common import THEORY, save

# one colour per Deep RFM variant across panels (dotted: its M = I control)
_COLOURS = {"nonorth": "C1", "nonorth_control": "C1", "cos": "C4", "cos_control": "C4", "image": "C3",
            "image_control": "C3"}


def _fig_deep_rfm(out_dir, s, metrics):
    dr = metrics["deep_rfm"]
    layers = np.arange(1, len(dr["nc1_x"]) + 1)
    fig, axes = plt.subplots(1, 4, figsize=(22, 4.4))
    ax = axes[0]
    ax.semilogy(layers, dr["nc1_x"], "o-", label="X_l")
    ax.semilogy(layers, dr["nc1_z"], "s-", label="M_l^1/2 X_l")
    ax.semilogy(layers, dr["nc1_phi"], "^-", label="Phi(M_l^1/2 X_l)")
    ax.semilogy(layers, dr["control_nc1_x"], "x:", color="0.4", label="control M = I (X_l)")
    fit = dr["fit"]
    if np.isfinite(fit["rho"]):
        ax.semilogy(layers, fit["c"] * fit["rho"] ** layers, **THEORY,
                    label=f"geometric fit C rho^l, rho = {fit['rho']:.3g}, R^2 = {fit['r2']:.3f}")
    ax.set_xlabel("layer l")
    ax.set_ylabel("NC1 = tr S_W / tr S_B")
    ax.set_title(f"Deep RFM ({s.feature} features), Gaussian mixture K = {s.k}, d = {s.d}", fontsize=9)
    ax.legend(fontsize=7)
    # NC2: the orthonormal mixture starts at its floor; the chained-means mixture and the images have room to fall
    ax = axes[1]
    ax.semilogy(layers, dr["nc2_x"], "o-", color="C0", label="mixture, orthonormal means")
    for what, label, st in (("nonorth", "mixture, chained means", "s-"), ("nonorth_control", "  its M = I control", "s:"),
                            ("image", "images", "^-"), ("image_control", "  their M = I control", "^:")):
        if what in dr:
            v = np.asarray(dr[what]["nc2_x"])
            ax.semilogy(np.arange(1, len(v) + 1), v, st, ms=3, color=_COLOURS[what], label=label)
    ax.set_xlabel("layer l")
    ax.set_ylabel("NC2 (mean sq. distance to simplex ETF Gram)")
    ax.set_title("P4: NC2(X_l) with and without the AGOP", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    for what, st in (("cos", "-"), ("cos_control", ":"), ("nonorth", "-"), ("nonorth_control", ":"), ("image", "-"),
                     ("image_control", ":")):
        if what in dr:
            v = dr[what]
            lab = f"{what} (gamma = {v['gamma']:g})" if "gamma" in v else what
            ax.semilogy(np.arange(1, len(v["nc1_x"]) + 1), v["nc1_x"], st, marker="o", ms=3, color=_COLOURS[what],
                        label=f"{lab}: X_l")
    ax.set_xlabel("layer l")
    ax.set_ylabel("NC1(X_l) (geometric mean over feature seeds)")
    ax.set_title("variants: cosine RFF (D = d) / chained means / real images, M = I controls", fontsize=9)
    if ax.lines:
        ax.legend(fontsize=7)
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
        ax.loglog(g, sw["nc1_ratio_median"], "-", color="C0", label=f"median over {sw['seeds']} seeds")
        ax.axhline(T.p1_nc1_ratio_max(), **THEORY, label=f"P1 threshold {T.p1_nc1_ratio_max():g} (inferred)")
        ax.axhline(T.no_collapse_ratio(), color="0.5", lw=0.8, label="no collapse (1)")
        ax.axvline(sw["official_gamma"], color="C3", ls=":", label=f"official scripts' gamma {sw['official_gamma']:g}")
        ax.set_xlabel("gamma (Cauchy(0, gamma) weights)")
        ax.set_ylabel("NC1(X_L) / NC1(X_1)")
        ax.set_title(f"cosine RFF: collapse over {len(layers)} layers vs gamma", fontsize=9)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no cosine-RFF runs in this preset", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return save(fig, out_dir, "deep_rfm_nc.png")


def _fig_phase(out_dir, s, metrics):
    grid = metrics["grid"]
    if not grid:
        return None
    ridges = sorted({g["ridge"] for g in grid})
    bws = sorted({g["bandwidth"] for g in grid})
    depth = len(grid[0]["nc1_x"])
    show = sorted({min(2, depth), max(1, depth // 2), depth})  # X_1 is the (normalised) input: the same everywhere
    fig, axes = plt.subplots(1, len(show) + 1, figsize=(5.0 * (len(show) + 1), 3.8))
    for ax, layer in zip(axes, show):
        img = np.full((len(ridges), len(bws)), np.nan)
        for g in grid:
            img[ridges.index(g["ridge"]), bws.index(g["bandwidth"])] = np.log10(g["nc1_x"][layer - 1])
        im = ax.imshow(img, origin="lower", aspect="auto", cmap="viridis")
        fig.colorbar(im, ax=ax, label="log10 NC1")
        ax.set_title(f"depth {layer}: log10 NC1(X_l)", fontsize=9)
        ax.set_xticks(range(len(bws)), [f"{b:g}" for b in bws])
        ax.set_yticks(range(len(ridges)), [f"{r:g}" for r in ridges])
        ax.set_xlabel("bandwidth L")
    axes[0].set_ylabel("kernel ridge lambda_k")
    ax = axes[-1]
    img = np.full((len(ridges), len(bws)), np.nan)
    for g in grid:
        img[ridges.index(g["ridge"]), bws.index(g["bandwidth"])] = g["fit"]["rho"]
    norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=max(1.2, float(np.nanmax(img))))  # white at rho = 1
    im = ax.imshow(img, origin="lower", aspect="auto", cmap="coolwarm", norm=norm)
    fig.colorbar(im, ax=ax, label="fitted rho (collapse where < 1)")
    ax.set_title("per-layer contraction rho", fontsize=9)
    ax.set_xticks(range(len(bws)), [f"{b:g}" for b in bws])
    ax.set_yticks(range(len(ridges)), [f"{r:g}" for r in ridges])
    ax.set_xlabel("bandwidth L")
    fig.tight_layout()
    return save(fig, out_dir, "deep_rfm_phase.png")


def _fig_mlp(out_dir, s, metrics):
    m = metrics["mlp"]["small"]
    nc = m["nc1_final"]
    hidden = np.arange(1, len(nc["phi"]) + 1)
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.2))
    ax = axes[0]
    ax.semilogy(hidden, nc["phi"], "o-", label="Phi (layer input)")
    ax.semilogy(hidden, nc["svt"], "s-", label="S V^T Phi")
    ax.semilogy(hidden, nc["pre"], "+--", label="U S V^T Phi (= S V^T Phi, exact)")
    ax.semilogy(hidden, nc["out"], "^-", label="ReLU(U S V^T Phi)")
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("NC1 at the end of training")
    ax.set_title(f"MLP {list(s.mlp_widths)}, gain {s.mlp_gain}", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    fr = np.asarray(m["frac_right_final"])
    ax.bar(hidden - 0.2, fr, 0.4, label="S V^T (right singular structure)")
    ax.bar(hidden + 0.2, 1 - fr, 0.4, label="ReLU")
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(0.5, **THEORY, label="majority (1/2)")
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("share of the layer's log-NC1 reduction (U: exactly 0)")
    if "large" in metrics["mlp"]:
        ax.plot(hidden, metrics["mlp"]["large"]["frac_right_final"], "kx", label=f"S V^T share, gain "
                f"{s.mlp_gain_large}")
    ax.legend(fontsize=7)
    ax = axes[2]
    steps = np.asarray(m["plan"])
    for j in range(m["nfa_half"].shape[1]):
        line, = ax.plot(steps, m["nfa_half"][:, j], "-", label=f"layer {j + 1}")
        ax.plot(steps, m["nfa_one"][:, j], ":", color=line.get_color())
    ax.set_xlabel("step")
    ax.set_ylabel("rho(W^T W, AGOP^alpha)  (solid 1/2, dotted 1)")
    ax.set_title("Neural Feature Ansatz over training", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[3]
    ax.semilogy(steps, m["sw_over_st"], label="tr S_W / tr S_T (last hidden)")
    ax.semilogy(steps, m["sb_over_st"], label="tr S_B / tr S_T (last hidden)")
    ax.semilogy(steps, m["loss"], label="training loss (MSE)")
    if "train_acc" in m:
        ax.semilogy(steps, m["train_acc"], "--", label="training accuracy")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    return save(fig, out_dir, "mlp_collapse.png")


def _fig_one_step(out_dir, s, metrics):
    p6 = metrics["p6"]
    lam = np.asarray(p6["ridges"], float)
    x = np.where(lam > 0, lam, np.nan)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(x, p6["nc1_closed_form"], **THEORY, label="closed form NC1(A Y), A = G(G + lambda I)^-1")
    ax.loglog(x, p6["nc1_measured"], "o", label="measured NC1(X M^1/2)")
    ax.set_xlabel("ridge lambda")
    ax.set_ylabel("one-step NC1")
    ax.set_title(f"linear kernel, N = {p6['n']} <= d = {p6['d']}; lambda = 0: NC1 = {p6['nc1_measured'][0]:.2g}",
                 fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, out_dir, "one_step_linear.png")


def agop_figures(out_dir, s, res, metrics) -> list[str]:
    names = [_fig_deep_rfm(out_dir, s, metrics), _fig_phase(out_dir, s, metrics), _fig_mlp(out_dir, s, metrics),
             _fig_one_step(out_dir, s, metrics)]
    return [n for n in names if n]
