"""SGD-support figures. Every panel draws the theory (``fa_jax.theory.sgd_support``) beside the measurement."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from ..theory import sgd_support as T
from .common import THEORY
from .common import band as _band
from .common import save as _save


def sgd_support_figures(out_dir, s, res, metrics, t3) -> list[str]:
    names = []
    N = s.n_train
    h = int(s.widths[0]) if s.widths else 1
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(s.batch_sizes)))

    # 1. ||W1_irr|| / init vs steps: GD, each b, GD + wd; T2 plateau, T3 overlays, wd line
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    gd = [r for _, r in res["gd"]]
    _band(ax, np.maximum(gd[0]["plan"], 1), [r["records"]["irr"] for r in gd], "GD", color="tab:red")
    for b, c in zip(s.batch_sizes, colors):
        rs = [r for lab, r in res["sgd"] if lab["b"] == b]
        x = np.maximum(rs[0]["plan"], 1)
        _band(ax, x, [r["records"]["irr"] for r in rs], f"SGD b={b}", color=c)
        i0 = t3[b][0]["i0"]
        pred = np.median(np.stack([p["pred_ratio"][i0:] for p in t3[b]]), 0)
        ax.plot(x[i0:], pred, color=c, ls="--", lw=1.2)
    wd = [r for _, r in res["wd"]]
    xw = np.maximum(wd[0]["plan"], 1)
    _band(ax, xw, [r["records"]["irr"] for r in wd], f"GD + wd {s.wd:g}", color="tab:orange")
    m = metrics["gd_wd"]
    if "t_ref" in m:  # the law's window (after the loss has converged) exists
        r_ref = np.median([r["records"]["irr"][int(np.argmin(np.abs(wd[0]["plan"] - m["t_ref"])))] for r in wd])
        tt = xw[xw >= m["t_ref"]]
        ax.plot(tt, r_ref * T.wd_ratio(tt - m["t_ref"], s.lr, s.wd), color="tab:orange", ls=":", lw=1.5,
                label="theory $(1-\\eta\\lambda)^t$ (from convergence)")
    ax.axhline(T.gd_plateau_ratio(h), label="T2 plateau $\\sqrt{1-1/h}$", **THEORY)
    ax.plot([], [], color="gray", ls="--", label="T3 (from measured $E[r^2]$, u)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("$\\|W_{1,irr}\\|_F$ / init")
    ax.set_title(f"irrelevant first-layer weights ({s.target}, $\\eta$={s.lr:g}, clip {s.clip:g})")
    ax.legend(fontsize=7)
    ax = axes[1]
    for lab, rs, c in [("GD", gd, "tab:red"), ("GD + wd", wd, "tab:orange")] + [
            (f"b={b}", [r for lb, r in res["sgd"] if lb["b"] == b], cc) for b, cc in zip(s.batch_sizes, colors)]:
        _band(ax, np.maximum(rs[0]["plan"], 1), [r["records"]["e2e_irr"] for r in rs], lab, color=c)
    ax.axhline(1e-2, label="P1 threshold 1e-2", **THEORY)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("end-to-end irrelevant coefficient")
    ax.set_title("function learned (all) vs support learned (SGD)")
    ax.legend(fontsize=7)
    ax = axes[2]
    for lab, rs, c in [("GD", gd, "tab:red")] + [
            (f"b={b}", [r for lb, r in res["sgd"] if lb["b"] == b], cc) for b, cc in zip(s.batch_sizes, colors)]:
        _band(ax, np.maximum(rs[0]["plan"], 1), [r["records"]["loss"] for r in rs], lab, color=c)
    ax.axhline(s.noise ** 2, label="noise floor $\\sigma^2$", **THEORY)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("train MSE = $E[r^2]$")
    ax.set_title("mean squared residual (drives T3)")
    ax.legend(fontsize=7)
    names.append(_save(fig, out_dir, "sgd_support_irrelevant_norm.png"))

    # 2. (lr, b) phase diagram: final ratio at fixed T and at fixed lr*T, constant lr/b contours
    pts = metrics["phase"]
    lrs = sorted({p["lr"] for p in pts})
    bs = sorted({p["b"] for p in pts})
    grid = np.full((len(bs), len(lrs)), np.nan)
    for i, b in enumerate(bs):
        for j, lr in enumerate(lrs):
            grid[i, j] = np.median([p["final_ratio"] for p in pts if p["b"] == b and p["lr"] == lr])
    ph = [r for _, r in res["phase"]]
    labs = [lab for lab, _ in res["phase"]]
    S = min(lrs) * s.phase_steps
    grid2 = np.full_like(grid, np.nan)
    for i, b in enumerate(bs):
        for j, lr in enumerate(lrs):
            vals = []
            for lab, r in zip(labs, ph):
                if lab["b"] == b and lab["lr"] == lr:
                    x = np.log(np.maximum(r["plan"], 1))
                    vals.append(np.interp(np.log(S / lr), x, r["records"]["irr"]))
            grid2[i, j] = np.median(vals)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, g, title in ((axes[0], grid, f"at fixed T = {s.phase_steps} steps"),
                         (axes[1], grid2, f"at fixed $\\eta T$ = {S:g}")):
        im = ax.pcolormesh(np.arange(len(lrs) + 1), np.arange(len(bs) + 1), np.clip(g, 1e-3, None),
                           norm=LogNorm(1e-2, 1.0), cmap="magma")
        for i in range(len(bs)):
            for j in range(len(lrs)):
                ax.text(j + 0.5, i + 0.5, f"{g[i, j]:.2f}", ha="center", va="center", fontsize=7, color="c")
        # constant lr/b contours in index coordinates (log-linear interpolation between ticks)
        li, bi = np.log(lrs), np.log(bs)
        for c in np.geomspace(1e-5, 1.0, 11):
            bb = np.asarray(lrs) / c
            ok = (bb >= bs[0]) & (bb <= bs[-1])
            if ok.sum() >= 2:
                ax.plot(np.interp(li[ok], li, np.arange(len(lrs))) + 0.5,
                        np.interp(np.log(bb[ok]), bi, np.arange(len(bs))) + 0.5, color="w", ls="--", lw=0.9)
        ax.set_xticks(np.arange(len(lrs)) + 0.5, [f"{v:g}" for v in lrs])
        ax.set_yticks(np.arange(len(bs)) + 0.5, [str(b) if b < N else f"{b} (GD)" for b in bs])
        ax.set_xlabel("$\\eta$")
        ax.set_ylabel("batch size b")
        ax.set_title(f"median $\\|W_{{1,irr}}\\|$/init {title}")
        fig.colorbar(im, ax=ax)
    fig.suptitle("(η, b) phase diagram; white dashed: constant η/b (T1/T3)")
    names.append(_save(fig, out_dir, "sgd_support_phase.png"))

    # 3. decay rate vs lr/b: raw per-step rate / lr, and the T3-normalised collapse y vs x = c_b
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    cmap = plt.cm.plasma(np.linspace(0, 0.9, len(bs)))
    for b, c in zip(bs, cmap):
        if b >= N:
            continue
        pb = [p for p in pts if p["b"] == b]
        for p in pb:
            mk = "x" if p.get("on_floor") else ("o" if p["resolved"] else "v")
            axes[0].scatter(p["lr"] / b, max(p["rate"], 1e-12) / p["lr"], color=c, marker=mk, s=18,
                            label=f"b={b}" if p is pb[0] else None)
            if np.isfinite(p["y"]) and p["y"] > 0:
                axes[1].scatter(p["x"], p["y"], color=c, marker=mk, s=18, label=f"b={b}" if p is pb[0] else None)
    xs = np.geomspace(min(p["x"] for p in pts if p["b"] < N), max(p["x"] for p in pts if p["b"] < N), 10)
    axes[1].plot(xs, xs, label="T3: y = x", **THEORY)
    axes[1].plot(xs, 2 * xs, color="k", ls=":", lw=0.8, label="factor 2")
    axes[1].plot(xs, xs / 2, color="k", ls=":", lw=0.8)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes[0].set_xlabel("$\\eta / b$")
    axes[0].set_ylabel("Phase-2 decay rate per unit $\\eta t$")
    axes[0].set_title("raw rate (▼: unresolved, an upper bound; x: on its noise floor)")
    axes[1].set_xlabel("$c_b = (\\eta/b)(N-b)/(N-1)$")
    axes[1].set_ylabel("$\\Delta\\ln\\|W_{1,irr}\\| / \\int \\eta E[r^2] u \\chi dt$")
    c = metrics["collapse"]
    axes[1].set_title(f"collapse: slope {c['slope']:.2f}, median y/x {c['median_y_over_x']:.2f} "
                      f"({c['in_domain']} in T3's domain of {c['points']})")
    names.append(_save(fig, out_dir, "sgd_support_collapse.png"))

    # 4. |W1| at init and after each optimiser (seed 0), paper Fig. 1 analogue
    cols = [("init", gd[0]["w1_init"]), ("GD", gd[0]["w1"])]
    for b in s.batch_sizes:
        r0 = next(r for lab, r in res["sgd"] if lab["b"] == b and lab["seed"] == 0)
        cols.append((f"SGD b={b}", r0["w1"]))
    cols.append(("GD + wd", wd[0]["w1"]))
    fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols), 3.4))
    vmax = float(np.max(np.abs(cols[0][1])))
    for ax, (title, w) in zip(axes, cols):
        ax.imshow(np.abs(np.asarray(w)), vmin=0, vmax=vmax, cmap="viridis", aspect="auto")
        ax.axhline(s.s - 0.5, color="w", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("hidden unit")
    axes[0].set_ylabel(f"input (first {s.s} relevant)")
    fig.suptitle("|W1| (rows: inputs); theory: SGD zeroes the rows below the line")
    names.append(_save(fig, out_dir, "sgd_support_first_layer.png"))
    return names
