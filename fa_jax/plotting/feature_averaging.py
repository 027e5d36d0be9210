"""Feature-averaging figures. Every panel draws the theory (from ``fa_jax.theory``) beside the measurement."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..theory import feature_averaging as T
from .common import THEORY
from .common import band as _band
from .common import save as _save


def feature_averaging_figures(out_dir, s, res, metrics, eps, curves) -> list[str]:
    d, k, n_pos = s.d, s.k, s.n_pos
    r_fa, r_fd = float(T.fa_radius(d, k)), float(T.fd_radius(d))
    main_b = [r for lab, r in res["main"] if lab["kind"] == "binary"]
    main_m = [r for lab, r in res["main"] if lab["kind"] == "multiclass"]
    names = []

    # 1. cosine heat-maps (paper Fig. 2a,b), averaged over seeds
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2 * s.width, k]})
    cb = np.mean([r["features"]["cos"] for r in main_b], 0)
    bucket = cb.shape[1] // 2  # columns: [+ side | - side], each padded to the bucket; keep the real neurons
    cb = cb[:, np.r_[0:s.width, bucket:bucket + s.width]]
    cm = np.mean([r["features"]["cos"] for r in main_m], 0)
    for ax, c, title, xl in ((axes[0], cb, "binary net (feature averaging)", "neuron (+ side | - side)"),
                             (axes[1], cm, "multi-class net (decoupled)", "output j (equivalent weight)")):
        im = ax.imshow(c, vmin=-0.2, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel("centre $\\mu_i$")
        bar = fig.colorbar(im, ax=ax)
        for ns, lab in ((n_pos, "$1/\\sqrt{|J_+|}$"), (k - n_pos, "$1/\\sqrt{|J_-|}$")):
            bar.ax.axhline(float(T.inblock_cosine(ns)), color="w", lw=2)
        bar.ax.text(1.6, float(T.inblock_cosine(n_pos)), " theory\n $1/\\sqrt{|J_s|}$", fontsize=7,
                    transform=bar.ax.get_yaxis_transform(), va="center")
    fig.suptitle(f"cos(centre, weight), mean of {len(main_b)} seeds; d={d}, k={k}, {n_pos}/{k - n_pos} split")
    names.append(_save(fig, out_dir, "fa_cosine_heatmaps.png"))

    # 2. robust accuracy vs eps (paper Fig. 3 left)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    labels = {"binary": "binary net (FA)", "sum": "multi-class, $F_{sum}$", "max": "multi-class, $F_{max}$",
              "sum_ce": "multi-class, $F_{sum}$ (CE attack)", "max_ce": "multi-class, $F_{max}$ (CE attack)"}
    for name, ys in curves.items():
        _band(ax, eps, ys, labels.get(name, name), ls=":" if name.endswith("_ce") else "-")
    ax.plot(eps, T.acc_fa(eps, d, k), label="theory $\\Phi(\\sqrt{d/k}-\\epsilon)$ (G1)", **THEORY)
    w_pos = n_pos / k
    acc_fd = w_pos * T.acc_fd(eps, d, k - n_pos) + (1 - w_pos) * T.acc_fd(eps, d, n_pos)
    ax.plot(eps, acc_fd, label="theory FD, $F_{max}$ (G4)", color="k", ls="-.", lw=1.2)
    g4 = float(T.g4_fsum_radius(0.0, d, k - n_pos))
    for x, lab, c in ((r_fa, "$\\sqrt{d/k}$", "C3"), (r_fd, "$\\sqrt{d/2}$", "C2"),
                      (g4, "G4 $F_{sum}$, $\\tau=0$", "C7")):
        ax.axvline(x, color=c, lw=0.8)
        ax.text(x, 1.02, lab, color=c, ha="center", fontsize=8)
    ax.set_xlabel("$\\ell_2$ radius $\\epsilon$")
    ax.set_ylabel("robust accuracy (PGD)")
    ax.set_ylim(-0.02, 1.08)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title(f"PGD {s.pgd_steps} steps x {s.restarts} restarts, {s.n_points} test points, "
                 f"mean $\\pm$ sd over {len(main_b)} seeds", fontsize=9)
    names.append(_save(fig, out_dir, "fa_robust_accuracy.png"))

    # 3. flip-radius histogram vs N(sqrt(d/k), 1)
    flips = np.concatenate([r["robust"]["binary"]["flip"] for r in main_b])
    flips = flips[np.isfinite(flips)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(flips, bins=50, density=True, alpha=0.6, label="measured (binary net)")
    xs = np.linspace(flips.min() - 1, flips.max() + 1, 300)
    ax.plot(xs, np.exp(-0.5 * (xs - r_fa) ** 2) / np.sqrt(2 * np.pi), label="theory N($\\sqrt{d/k}$, 1) (G1)",
            **THEORY)
    ax.set_xlabel("exact flip radius along $v(x)$")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    names.append(_save(fig, out_dir, "fa_flip_radius_hist.png"))

    # 4. training dynamics
    dyn = metrics["dynamics"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for lr, dd in dyn.items():
        st = np.maximum(np.array(dd["steps"]), 0.8)
        axes[0].plot(st, dd["cos_in"], marker=".", label=f"$\\eta$={lr}")
        axes[1].plot(st, dd["flip_median"], marker=".", label=f"$\\eta$={lr}")
        axes[2].plot(st, dd["loss"], marker=".", label=f"$\\eta$={lr}")
    axes[0].axhline(float(np.mean(T.inblock_cosine([n_pos, k - n_pos]))), label="theory $1/\\sqrt{|J_s|}$",
                    **THEORY)
    axes[1].axhline(r_fa, label="theory $\\sqrt{d/k}$", **THEORY)
    axes[1].axhline(r_fd, label="optimal $\\sqrt{d/2}$", color="C2", ls=":")
    for ax, yl in zip(axes, ("mean in-block cosine", "median flip radius along v", "training loss")):
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(yl)
        ax.legend(fontsize=7)
    axes[2].set_yscale("log")
    fig.suptitle("binary net: feature averaging appears early and persists")
    fig.tight_layout()
    names.append(_save(fig, out_dir, "fa_dynamics.png"))

    # 5. scaling: r50 vs k (log-log) and r50 vs granularity g
    ksc, gr = metrics["k_scaling"], metrics["granularity"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    kk = np.array(ksc["k"])
    axes[0].loglog(kk, ksc["fa_r50"], "o-", label=f"FA (binary), slope {ksc['fa_slope']:.2f}")
    axes[0].loglog(kk, ksc["fd_r50"], "s-", label=f"FD ($F_{{max}}$), slope {ksc['fd_slope']:.2f}")
    axes[0].loglog(kk, T.fa_radius(ksc["d"], kk), label="theory $\\sqrt{d/k}$", **THEORY)
    axes[0].loglog(kk, np.full_like(kk, T.fd_radius(ksc["d"])), label="theory $\\sqrt{d/2}$", color="k",
                   ls="-.")
    axes[0].set_xticks(kk, [f"{int(v)}" for v in kk])
    axes[0].minorticks_off()
    axes[0].set_xlabel("k")
    axes[0].set_ylabel("r50")
    axes[0].set_title(f"d = {ksc['d']}")
    axes[0].legend(fontsize=8)
    g = np.array(gr["g"])
    axes[1].plot(g, gr["r50_max"], "o-", label="measured ($F_{max}$)")
    gg = np.linspace(g.min(), g.max(), 100)
    axes[1].plot(gg, T.granularity_radius(gg, gr["d"], gr["k"]), label="theory $\\sqrt{g d/(2k)}$ (G6)", **THEORY)
    axes[1].set_xlabel("super-classes g")
    axes[1].set_ylabel("r50")
    axes[1].set_title(f"granularity, k = {gr['k']}, d = {gr['d']}")
    axes[1].legend(fontsize=8)
    names.append(_save(fig, out_dir, "fa_scaling.png"))

    # 6. (k, d) phase diagram, normalised r50
    tab = metrics["phase"]
    ds, ks = sorted({t["d"] for t in tab}), sorted({t["k"] for t in tab})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind, title in ((axes[0], "binary", "FA: r50 / $\\sqrt{d/k}$"),
                            (axes[1], "multiclass", "FD ($F_{max}$): r50 / $\\sqrt{d/2}$")):
        grid = np.full((len(ds), len(ks)), np.nan)
        for t in tab:
            if t["kind"] == kind:
                grid[ds.index(t["d"]), ks.index(t["k"])] = t["normalised"]
        im = ax.imshow(grid, origin="lower", vmin=0.5, vmax=1.2, cmap="coolwarm_r", aspect="auto")
        for i in range(len(ds)):
            for j in range(len(ks)):
                if np.isfinite(grid[i, j]):
                    low = np.sqrt(ds[i] / ks[j]) < 3
                    ax.text(j, i, f"{grid[i, j]:.2f}" + ("*" if low else ""), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(ks)), ks)
        ax.set_yticks(range(len(ds)), ds)
        ax.set_xlabel("k")
        ax.set_ylabel("d")
        ax.set_title(title + "  (theory: 1)", fontsize=10)
        fig.colorbar(im, ax=ax)
        if kind == "binary" and len(ks) > 1 and len(ds) > 1:
            # FA boundary for fixed eps: k* = d / eps^2, drawn in grid coordinates (log2 spacing)
            lk, ld = np.log2(ks), np.log2(ds)
            for e in (4.0, 8.0, 16.0):
                dd = np.geomspace(min(ds), max(ds), 50)
                xs = np.interp(np.log2(T.fa_boundary_k(dd, e)), lk, np.arange(len(ks)), left=np.nan, right=np.nan)
                ys = np.interp(np.log2(dd), ld, np.arange(len(ds)))
                ax.plot(xs, ys, "k:", lw=1)
                ok = np.flatnonzero(np.isfinite(xs))
                if ok.size:
                    ax.text(xs[ok[0]], ys[ok[0]], f"$\\epsilon$={e:g}", fontsize=7, ha="right", va="bottom")
    fig.suptitle("(k, d) phase diagram; dotted: FA boundary $k^*=d/\\epsilon^2$ for fixed $\\epsilon$; "
                 "* marks $\\sqrt{d/k}<3$ (clean accuracy starts to drop)", fontsize=9)
    names.append(_save(fig, out_dir, "fa_phase_kd.png"))
    # 7. S3: init scale x width
    s3 = metrics["s3"]
    widths = sorted({t["width"] for t in s3["runs"]})
    scales = sorted({t["init_scale"] for t in s3["runs"]})
    panels = (("cos_in", "in-block cosine", float(np.mean(T.inblock_cosine([n_pos, k - n_pos]))), (0, 1)),
              ("movement", "log10 $\\|W_T-W_0\\|/\\|W_0\\|$", None, None),
              ("flip_over_fa", "flip radius / $\\sqrt{d/k}$", 1.0, (0, 2)),
              ("clean_acc", "clean accuracy", 1.0, (0.5, 1)))
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for ax, (key, title, theory, lim) in zip(axes, panels):
        grid = np.full((len(widths), len(scales)), np.nan)
        for t in s3["runs"]:
            grid[widths.index(t["width"]), scales.index(t["init_scale"])] = t[key]
        if key == "movement":
            grid = np.log10(np.maximum(grid, 1e-12))
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis",
                       vmin=None if lim is None else lim[0], vmax=None if lim is None else lim[1])
        fig.colorbar(im, ax=ax)
        ax.set_xticks(range(len(scales)), [f"{v:.0e}" for v in scales], rotation=60, fontsize=7)
        ax.set_yticks(range(len(widths)), widths)
        ax.set_xlabel("init scale $\\sigma_w$")
        ax.set_ylabel("width m")
        ax.set_title(title + ("" if theory is None else f" (FA theory {theory:.3g})"), fontsize=9)
        xb = np.interp(np.log10(s3["boundary_scale"]), np.log10(scales), np.arange(len(scales)))
        ax.axvline(xb, color="w", ls="--", lw=1.2)
    fig.suptitle(f"S3: init scale x width (binary net, d={d}); dashed: heuristic FA/lazy boundary "
                 f"$\\sigma_w\\sqrt{{d}} = \\|w_T\\|$ = {s3['learned_norm_small_init']:.3g} (learned from small init)",
                 fontsize=9)
    fig.tight_layout()
    names.append(_save(fig, out_dir, "fa_init_width.png"))
    return names
