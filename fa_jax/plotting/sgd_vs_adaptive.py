"""Figures of the SGD-vs-adaptive linear simulation; theory (T1-T3) drawn beside every measurement."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..data.natural import PAPER_W0_TILDE
from ..theory import sgd_vs_adaptive as T
from .common import THEORY, save

COLORS = {"gd": "C0", "signgd": "C3", "adam": "C1", "rmsprop": "C2"}


def adaptive_figures(out_dir, s, res: dict, metrics: dict) -> list[str]:
    st, ws, w0 = np.array([0.1, 0.05, 0.0]), np.array([5.0, 10.0, 0.0]), np.array(PAPER_W0_TILDE)
    e0 = w0 - ws
    t1, t2 = metrics["signgd_phase_times"]["t1"], metrics["signgd_phase_times"]["t2"]
    names = []

    # 1. Fig. 5 analogue: |et_k(t)| per optimiser (sampled batches, seed 0) + R_s, R_a with T1-T3 asymptotes
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    runs = {lab["opt"]: r for lab, r in res["sampled"] if lab["seed"] == 0}
    for k in range(3):
        ax = axes[k]
        for opt, r in runs.items():
            steps = np.asarray(r["plan"], float)
            ax.plot(np.maximum(steps, 1), np.abs(np.asarray(r["records"]["e_tilde"])[:, k]), color=COLORS[opt],
                    label=opt)
        if k < 2:
            tt = np.geomspace(1, s.steps, 200)
            ax.plot(tt, np.abs([T.gd_error(e0, st, s.lr, t)[k] for t in tt]), **THEORY, label="GD theory (T2)")
        else:
            ax.axhline(abs(float(T.signgd_final_tilde(w0, ws, st)[2])), **THEORY, label="signGD end point (T3)")
            ax.axhline(abs(e0[2]), color="C0", ls=":", lw=1, label="GD: et_2(0) (T2)")
        ax.axvspan(1, t1, color="0.9", zorder=0)
        ax.axvspan(t1, t2, color="mistyrose", zorder=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"|et_{k}(t)|" + (" (irrelevant frequency)" if k == 2 else ""), fontsize=10)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    for j, (name, label) in enumerate((("std_risk", "standard risk R_s"), ("adv_risk", "adversarial risk R_a"))):
        ax = axes[3 + j]
        for opt, r in runs.items():
            steps = np.asarray(r["plan"], float)
            ax.plot(np.maximum(steps, 1), np.asarray(r["records"][name]), color=COLORS[opt], label=opt)
            if name == "adv_risk":
                ax.plot(np.maximum(steps, 1), np.asarray(r["records"]["adv_risk_mc"]), color=COLORS[opt], ls=":",
                        lw=1)
        if name == "adv_risk":
            eps = s.eps_adv
            gd_lim = float(T.adv_risk_zero_std(np.linalg.norm(T.gd_limit_tilde(w0, ws, st)), eps))
            sg_lim = float(T.adv_risk_zero_std(np.linalg.norm(T.signgd_final_tilde(w0, ws, st)), eps))
            ax.axhline(gd_lim, **THEORY, label=f"GD limit (T1+T2) {gd_lim:.1f}")
            ax.axhline(sg_lim, color="k", ls="-.", lw=1.2, label=f"signGD limit (T1+T3) {sg_lim:.1f}")
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(label + (" (dotted: Monte Carlo)" if name == "adv_risk" else ""), fontsize=10)
        ax.set_xlabel("step")
    fig.suptitle(f"3-D linear problem, fresh batches of {s.batch}; shaded: signGD phases 1 (grey) and 2 (pink), "
                 f"T3 times {t1:.0f}, {t2:.0f}", fontsize=10)
    fig.tight_layout()
    names.append(save(fig, out_dir, "adaptive_fig5.png"))

    # 2. S1: signGD / Adam final wt_2 vs the T3 closed form, both sides of |A(0)| = |B(0)|
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    cells = metrics["s1"]["cells"]
    for ax, opt in zip(axes, ("signgd", "adam"), strict=True):
        for valid, marker in ((True, "o"), (False, "x")):
            xs = [c["predicted"] for c in cells if c["opt"] == opt and c["valid"] == valid]
            ys = [c["measured"] for c in cells if c["opt"] == opt and c["valid"] == valid]
            ax.scatter(xs, ys, marker=marker, color=COLORS[opt],
                       label="|A(0)| >= |B(0)| (formula valid)" if valid else "|A(0)| < |B(0)|")
        lim = [min(c["predicted"] for c in cells), max(c["predicted"] for c in cells)]
        ax.plot(lim, lim, **THEORY, label="T3 closed form")
        ax.set_xlabel("predicted wt_2(inf) (T3)")
        ax.set_ylabel("measured wt_2(T)")
        ax.set_title(f"S1, {opt}, exact gradients", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    names.append(save(fig, out_dir, "adaptive_s1_displacement.png"))

    # 3. S2: irrelevant-band norm, ||w|| and R_a vs the fraction of zero-variance frequencies; T1 from ||w||
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    fracs = sorted({lab["p"] for lab, _ in res["s2"]})
    for opt in sorted({lab["opt"] for lab, _ in res["s2"]}, key=list(COLORS).index):
        rows = [[r for lab, r in res["s2"] if lab["opt"] == opt and lab["p"] == p] for p in fracs]
        irr = [[float(np.asarray(r["records"]["irr_norm"])[-1]) for r in rr] for rr in rows]
        wn = [[float(np.asarray(r["records"]["w_norm"])[-1]) for r in rr] for rr in rows]
        mc = [[float(np.asarray(r["records"]["adv_risk_mc"])[-1]) for r in rr] for rr in rows]
        t1v = [[float(T.adv_risk(np.asarray(r["records"]["std_risk"])[-1], np.asarray(r["records"]["w_norm"])[-1],
                                 s.eps_adv)) for r in rr] for rr in rows]
        for ax, vals in zip(axes[:2], (irr, wn), strict=True):
            ax.errorbar(fracs, [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], marker="o",
                        color=COLORS[opt], label=opt, capsize=2)
        axes[2].plot(fracs, [np.mean(v) for v in mc], "o", color=COLORS[opt], label=f"{opt} (Monte Carlo)")
        axes[2].plot(fracs, [np.mean(v) for v in t1v], color=COLORS[opt], **{k: v for k, v in THEORY.items()
                                                                           if k != "color"})
    init_irr = [np.mean([float(np.asarray(r["records"]["irr_norm"])[0]) for lab, r in res["s2"]
                         if lab["opt"] == "gd" and lab["p"] == p]) for p in fracs]
    axes[0].plot(fracs, init_irr, **THEORY, label="init (GD keeps it, T2)")
    axes[0].set_title("||w on zero-variance frequencies||", fontsize=10)
    axes[1].set_title("||w||", fontsize=10)
    axes[2].set_title(f"R_a (eps = {s.eps_adv:.3g}); dashed: T1 from measured R_s, ||w||", fontsize=10)
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("fraction of zero-variance frequencies p")
        ax.legend(fontsize=7)
    fig.suptitle(f"S2: d = {s.s2_d}, st_k = {s.s2_sigma0:g} (k+1)^-{s.s2_alpha:g}, exact gradients, "
                 f"{s.s2_steps} steps", fontsize=10)
    fig.tight_layout()
    names.append(save(fig, out_dir, "adaptive_s2_frequencies.png"))

    # 4. end of training: R_a vs R_s, every 3-D run (equal R_s, different R_a)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for group, marker in (("sampled", "o"), ("exact", "s")):
        for lab, r in res[group]:
            ax.scatter(float(np.asarray(r["records"]["std_risk"])[-1]) + 1e-16,
                       float(np.asarray(r["records"]["adv_risk"])[-1]), color=COLORS[lab["opt"]], marker=marker,
                       label=f"{lab['opt']} ({group})")
    gd_lim = float(T.adv_risk_zero_std(np.linalg.norm(T.gd_limit_tilde(w0, ws, st)), s.eps_adv))
    ax.axhline(gd_lim, **THEORY, label="GD limit (T1)")
    ax.set_xscale("log")
    ax.set_xlabel("R_s at the end")
    ax.set_ylabel("R_a at the end")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), fontsize=6)
    fig.tight_layout()
    names.append(save(fig, out_dir, "adaptive_risk_scatter.png"))
    return names


NET_COLORS = {"sgd": "C0", "adam": "C1", "rmsprop": "C2"}


def nets_figure(out_dir, s, res: dict, metrics: dict) -> list[str]:
    """Networks, one row per net (arch x init scale): accuracy vs l2 / l-inf PGD budget, Gaussian-noise level and
    band-limited noise std (relevant band dashed, zero-variance band solid; mean +- sd over seeds, matched lrs;
    clean accuracy at budget 0), the product Lipschitz bound vs mean robust accuracy of every run, and the first
    layer on the zero-variance frequencies: energy fraction (init vs end) beside the absolute change
    ||(A_1 - A_1(0)) P_irr||_F (SGD keeps the MLP's: derived)."""
    nets = [(a, float(sc)) for a, sc in metrics["net_grid"]]
    picks = metrics["matched_lrs"]
    fig, axes = plt.subplots(len(nets), 7, figsize=(33, 4.2 * len(nets)), squeeze=False)

    def runs_of(arch, sc, opt, lr):
        return [r for lab, r in res["nets"] if (lab["arch"], lab["init"], lab["opt"], lab["lr"]) == (arch, sc, opt, lr)]

    for row, (arch, sc) in zip(axes, nets, strict=True):
        name = f"{arch}/init{sc:g}"
        for opt, lr in picks[name].items():
            runs = runs_of(arch, sc, opt, lr)
            clean = np.array([float(r["clean_acc"]) for r in runs])
            for ax, key, grid in ((row[0], "l2_acc", s.net_l2_eps), (row[1], "linf_acc", s.net_linf_eps),
                                  (row[2], "noise_acc", s.net_noise_std)):
                a = np.array([np.concatenate([[c], np.asarray(r[key], float)]) for c, r in zip(clean, runs,
                                                                                              strict=True)])
                ax.errorbar(np.concatenate([[0.0], grid]), a.mean(0), yerr=a.std(0), marker="o", capsize=2,
                            color=NET_COLORS[opt], label=f"{opt} lr={lr:g} (clean {clean.mean():.3f})")
            for band, ls in (("relevant", "--"), ("irrelevant", "-")):
                a = np.array([np.concatenate([[c], np.asarray(r["band_noise_acc"][band], float)])
                              for c, r in zip(clean, runs, strict=True)])
                row[3].errorbar(np.concatenate([[0.0], s.net_band_std]), a.mean(0), yerr=a.std(0), marker="o",
                                capsize=2, ls=ls, color=NET_COLORS[opt], label=f"{opt} lr={lr:g} {band}")
        for ax, title in zip(row[:4], ("l2 PGD budget eps", "l-inf PGD budget eps", "Gaussian noise std",
                                       "band noise std per DCT coefficient"), strict=True):
            ax.set_xlabel(title)
            ax.set_ylabel("accuracy")
            ax.set_title(f"{name}: accuracy vs {title.split(' budget')[0].split(' std')[0]}", fontsize=10)
            ax.legend(fontsize=6)
        ax = row[4]
        for lab, r in res["nets"]:
            if (lab["arch"], lab["init"]) != (arch, sc):
                continue
            rob = float(np.mean(np.concatenate([np.asarray(r["l2_acc"]), np.asarray(r["linf_acc"])])))
            matched = picks[name][lab["opt"]] == lab["lr"]
            ax.scatter(float(r["lip"]["bound_op"]), rob, color=NET_COLORS[lab["opt"]], marker="o" if matched else "x",
                       label=lab["opt"] + ("" if matched else " (other lr)"))
        ax.set_xscale("log")
        ax.set_xlabel("product bound prod ||A_l||_2 (power iteration)")
        ax.set_ylabel("mean PGD robust accuracy (l2 + l-inf)")
        ax.set_title(f"{name}: Lipschitz bound vs robustness (T5: SGD low-L, high-robustness)", fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=True))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7)
        opts = list(picks[name])
        for j, opt in enumerate(opts):
            runs = runs_of(arch, sc, opt, picks[name][opt])
            f0 = np.mean([float(r["first_layer_frac"]["init"]) for r in runs])
            f1 = np.mean([float(r["first_layer_frac"]["final"]) for r in runs])
            row[5].bar(j - 0.2, f0, 0.4, color="0.7", label="init" if j == 0 else None)
            row[5].bar(j + 0.2, f1, 0.4, color=NET_COLORS[opt], label="end" if j == 0 else None)
            d = [float(r["first_layer_delta"]["irr"]) for r in runs]
            row[6].bar(j, np.mean(d), 0.6, yerr=np.std(d), capsize=3, color=NET_COLORS[opt])
        row[5].set_ylabel("||A_1 P_irr||_F^2 / ||A_1||_F^2")
        row[5].set_title(f"{name}: first-layer energy fraction on zero-variance frequencies", fontsize=10)
        row[5].legend(fontsize=7)
        row[6].set_ylabel("||(A_1 - A_1(0)) P_irr||_F")
        row[6].set_title(f"{name}: first-layer change on zero-variance frequencies", fontsize=10)
        for ax in row[5:]:
            ax.set_xticks(range(len(opts)), opts)
    fig.suptitle(f"Networks: {s.net_size}x{s.net_size} natural-signal images, {s.net_classes} classes, "
                 f"{s.net_frac_irrelevant:g} of DCT frequencies zero-variance; {s.net_init} init; {s.net_steps} "
                 f"steps, batch {s.net_batch}; PGD {s.net_attack_steps} steps x {s.net_restarts} restarts on "
                 f"{s.net_points} test points; {s.net_seeds} seeds", fontsize=10)
    fig.tight_layout()
    return [save(fig, out_dir, "adaptive_nets.png")]
