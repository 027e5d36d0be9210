"""Figures of the SGD-vs-adaptive linear simulation; theory (T1-T3) drawn beside every measurement."""
from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, FuncFormatter

from ..data.natural import PAPER_W0_TILDE
from ..experiments.adaptive_nets import robust_mean
from ..results import labelled_runs, runs_where, select_runs, stacked
from ..theory import sgd_vs_adaptive as T
from .common import save
from .style import THEORY, figure_legend, legend_cell, legend_outside, panels, styled

COLORS = {"gd": "C0", "signgd": "C3", "adam": "C1", "rmsprop": "C2"}


@styled
def adaptive_figures(out_dir, s, ds, metrics: dict) -> list[str]:
    """The linear-half figures (Fig. 5 analogue, S1, S2, risk scatter) from the linear half's Dataset ``ds``
    (``load_results(out/cache, sweep="sgd-vs-adaptive")``: dim ``run``, the parts and labels along it); returns the
    file names written."""
    st, ws, w0 = np.array([0.1, 0.05, 0.0]), np.array([5.0, 10.0, 0.0]), np.array(PAPER_W0_TILDE)
    e0 = w0 - ws
    t1, t2 = metrics["signgd_phase_times"]["t1"], metrics["signgd_phase_times"]["t2"]
    names = []

    # 1. Fig. 5 analogue: |et_k(t)| per optimiser (sampled batches, seed 0) + R_s, R_a with T1-T3 asymptotes; 3 x 2,
    # the sixth cell holds the legend of all five panels
    fig, axes = panels(6, panel=(3.6, 2.6))
    sampled = select_runs(ds, "sampled", unstack=False)
    runs = {lab["opt"]: r for lab, r in labelled_runs(runs_where(sampled, seed=0))}  # listed order, own records
    for k in range(3):
        ax = axes[k]
        for opt, r in runs.items():
            steps = np.asarray(r["step"].values, float)
            ax.plot(np.maximum(steps, 1), np.abs(r["records/e_tilde"].values[:, k]), color=COLORS[opt], label=opt)
        if k < 2:
            tt = np.geomspace(1, s.steps, 200)
            th = np.abs([T.gd_error(e0, st, s.lr, t)[k] for t in tt])
            ok = np.isfinite(th)  # where GD diverges (lr st^2 > 2) the exact power overflows: not drawn
            ax.plot(tt[ok], th[ok], **THEORY, label="GD theory (T2)")
        else:
            ax.axhline(abs(float(T.signgd_final_tilde(w0, ws, st)[2])), color="k", ls="-.", lw=1.2,
                       label="signGD end point (T3)")
            ax.axhline(abs(e0[2]), color="C0", ls=":", lw=1, label="GD: $\\tilde e_2(0)$ (T2)")
        ax.axvspan(1, t1, color="0.9", zorder=0)
        ax.axvspan(t1, t2, color="mistyrose", zorder=0)
        ax.set_ylabel(f"$|\\tilde e_{k}(t)|$")
        ax.set_title(f"error on frequency {k}" + (" (irrelevant)" if k == 2 else ""))
    for j, (name, label) in enumerate((("std_risk", "standard risk $R_s$"), ("adv_risk", "adversarial risk $R_a$"))):
        ax = axes[3 + j]
        for opt, r in runs.items():
            steps = np.asarray(r["step"].values, float)
            ax.plot(np.maximum(steps, 1), r[f"records/{name}"].values, color=COLORS[opt], label=opt)
            if name == "adv_risk":
                ax.plot(np.maximum(steps, 1), r["records/adv_risk_mc"].values, color=COLORS[opt], ls=":", lw=1)
        if name == "adv_risk":
            eps = s.eps_adv
            gd_lim = float(T.adv_risk_zero_std(np.linalg.norm(T.gd_limit_tilde(w0, ws, st)), eps))
            sg_lim = float(T.adv_risk_zero_std(np.linalg.norm(T.signgd_final_tilde(w0, ws, st)), eps))
            ax.axhline(gd_lim, **THEORY, label=f"$R_a$ GD limit (T1+T2): {gd_lim:.1f}")
            ax.axhline(sg_lim, color="k", ls="-.", lw=1.2, label=f"$R_a$ signGD limit (T1+T3): {sg_lim:.1f}")
        ax.set_ylabel(label.split(" ")[-1])
        ax.set_title(label)
    for ax in axes[:5]:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step")
    legend_cell(axes[5], axes[:5], extra=(
        Line2D([], [], color="0.4", ls=":", lw=1, label="$R_a$ by Monte Carlo (dotted)"),
        Patch(color="0.9", label=f"signGD phase 1 (T3: to step {t1:.0f})"),
        Patch(color="mistyrose", label=f"signGD phase 2 (T3: to step {t2:.0f})")))
    fig.suptitle(f"3-D linear problem, fresh batches of {s.batch}")
    names.append(save(fig, out_dir, "adaptive_fig5.png"))

    # 2. S1: signGD / Adam final wt_2 vs the T3 closed form, both sides of |A(0)| = |B(0)|
    fig, axes = panels(2, panel=(3.6, 3.2))
    cells = metrics["s1"]["cells"]
    for ax, opt in zip(axes, ("signgd", "adam"), strict=True):
        for valid, marker in ((True, "o"), (False, "x")):
            xs = [c["predicted"] for c in cells if c["opt"] == opt and c["valid"] == valid]
            ys = [c["measured"] for c in cells if c["opt"] == opt and c["valid"] == valid]
            ax.scatter(xs, ys, marker=marker, color=COLORS[opt])
        lim = [min(c["predicted"] for c in cells), max(c["predicted"] for c in cells)]
        ax.plot(lim, lim, **THEORY)
        ax.set_xlabel("predicted $\\tilde w_2(\\infty)$ (T3)")
        ax.set_ylabel("measured $\\tilde w_2(T)$")
        ax.set_title(f"S1, {opt}, exact gradients")
    figure_legend(fig, [], ncol=3, extra=(
        Line2D([], [], ls="none", marker="o", color="0.4", label="$|A(0)| \\geq |B(0)|$ (formula valid)"),
        Line2D([], [], ls="none", marker="x", color="0.4", label="$|A(0)| < |B(0)|$"),
        Line2D([], [], **THEORY, label="T3 closed form")))
    names.append(save(fig, out_dir, "adaptive_s1_displacement.png"))

    # 3. S2: irrelevant-band norm, ||w|| and R_a vs the fraction of zero-variance frequencies; T1 from ||w||; 2 x 2,
    # the fourth cell holds the legend
    fig, axes = panels(4, panel=(3.6, 2.7))
    s2 = select_runs(ds, "s2", unstack=True)  # (opt, p, seed, step, ...): one recording plan

    def final(opt, name, i=-1):  # [p, seed]
        return stacked(s2[f"records/{name}"].sel(opt=opt).isel(step=i), "p", "seed")

    fracs = s2["p"].values.tolist()
    for opt in sorted(s2["opt"].values.tolist(), key=list(COLORS).index):
        irr, wn, mc = final(opt, "irr_norm"), final(opt, "w_norm"), final(opt, "adv_risk_mc")
        t1v = T.adv_risk(final(opt, "std_risk"), wn, s.eps_adv)  # T1 from each run's measured R_s and ||w||
        for ax, vals in zip(axes[:2], (irr, wn), strict=True):
            ax.errorbar(fracs, [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], marker="o",
                        color=COLORS[opt], label=opt, capsize=2)
        axes[2].plot(fracs, [np.mean(v) for v in mc], "o", color=COLORS[opt])
        axes[2].plot(fracs, [np.mean(v) for v in t1v], color=COLORS[opt], **{k: v for k, v in THEORY.items()
                                                                           if k != "color"})
    init_irr = [np.mean(v) for v in final("gd", "irr_norm", 0)]
    axes[0].plot(fracs, init_irr, **THEORY, zorder=3, label="$\\|w_{\\mathrm{irr}}\\|$ at init (GD keeps it, T2)")
    axes[0].set_ylabel("$\\|w_{\\mathrm{irr}}\\|$")
    axes[0].set_title("$w$ on the zero-variance frequencies")
    axes[1].set_ylabel("$\\|w\\|$")
    axes[1].set_title("norm of $w$")
    axes[2].set_ylabel(f"$R_a$ ($\\epsilon$ = {s.eps_adv:.3g})")
    axes[2].set_title("adversarial risk")
    axes[2].set_yscale("log")
    for ax in axes[:3]:
        ax.set_xlabel("fraction $p$ of zero-variance frequencies")
    legend_cell(axes[3], axes[:2], extra=(
        Line2D([], [], ls="none", marker="o", color="0.4", label="$R_a$ by Monte Carlo (points)"),
        Line2D([], [], color="0.4", ls="--", lw=1.2, label="$R_a$ from T1 with measured $R_s$, $\\|w\\|$")))
    fig.suptitle(f"S2: $d$ = {s.s2_d}, $\\tilde\\sigma_k$ = {s.s2_sigma0:g} $(k+1)^{{-{s.s2_alpha:g}}}$, exact "
                 f"gradients, {s.s2_steps} steps")
    names.append(save(fig, out_dir, "adaptive_s2_frequencies.png"))

    # 4. end of training: R_a vs R_s, every 3-D run (equal R_s, different R_a); colour = optimiser, marker = group
    fig, (ax,) = panels(1, panel=(5.2, 3.2))  # the axes ~3.6 in wide, the legend beside it
    drawn = []
    for group, marker in (("sampled", "o"), ("exact", "s")):
        for lab, r in labelled_runs(select_runs(ds, group, unstack=False)):  # one point per run, listed order
            ax.scatter(float(r["records/std_risk"].values[-1]) + 1e-16, float(r["records/adv_risk"].values[-1]),
                       color=COLORS[lab["opt"]], marker=marker, alpha=0.8)
            drawn.append(lab["opt"])
    gd_lim = float(T.adv_risk_zero_std(np.linalg.norm(T.gd_limit_tilde(w0, ws, st)), s.eps_adv))
    ax.axhline(gd_lim, **THEORY)
    ax.set_xscale("log")
    ax.set_xlabel("$R_s$ at the end ($+10^{-16}$)")
    ax.set_ylabel("$R_a$ at the end")
    ax.set_title("end of training, every 3-D run")
    handles = [Line2D([], [], ls="none", marker="o", color=COLORS[o], label=o) for o in COLORS if o in drawn]
    handles += [Line2D([], [], ls="none", marker="o", color="0.4", label="fresh batches"),
                Line2D([], [], ls="none", marker="s", color="0.4", label="exact gradients"),
                Line2D([], [], **THEORY, label="GD limit (T1)")]
    legend_outside(ax, handles=handles)
    names.append(save(fig, out_dir, "adaptive_risk_scatter.png"))
    return names


NET_COLORS = {"sgd": "C0", "adam": "C1", "rmsprop": "C2"}


def _values(runs, name: str) -> np.ndarray:
    """Output ``name`` of ``runs`` (a Dataset on its ``run`` dim): ``[run, ...]`` in its own dtype."""
    return stacked(runs[name], "run")


def _robust_mean(runs) -> np.ndarray:
    """Each run's mean PGD robust accuracy over its budgets (experiments.adaptive_nets.robust_mean): ``[run]``."""
    return robust_mean(_values(runs, "l2_acc"), _values(runs, "linf_acc"))


@styled
def nets_figure(out_dir, s, ds, metrics: dict) -> list[str]:
    """Networks, one row per net (arch x init scale), in two figures, from the networks' Dataset ``ds``
    (``load_results(out/cache, sweep="sgd-vs-adaptive-nets")``: dim ``run``; its ``nets`` part, the unfiltered
    runs, has labels arch, init, opt, lr, seed along it).

    ``adaptive_nets.png``: accuracy vs l2 / l-inf PGD budget, Gaussian-noise level and band-limited noise std
    (relevant band dashed, zero-variance band solid; mean +- sd over seeds, matched lrs; clean accuracy at budget 0).
    ``adaptive_nets_first_layer.png``: the product Lipschitz bound vs mean robust accuracy of every run, and the
    first layer on the zero-variance frequencies: energy fraction (init vs end) beside the absolute change
    ||(A_1 - A_1(0)) P_irr||_F (SGD keeps the MLP's: derived)."""
    nets = [(a, float(sc)) for a, sc in metrics["net_grid"]]
    picks = metrics["matched_lrs"]
    title = (f"Networks: {s.net_size}x{s.net_size} natural-signal images, {s.net_classes} classes, "
             f"{s.net_frac_irrelevant:g} of DCT frequencies zero-variance; {s.net_init} init;\n{s.net_steps} steps, "
             f"batch {s.net_batch}; PGD {s.net_attack_steps} steps x {s.net_restarts} restarts on {s.net_points} "
             f"test points; {s.net_seeds} seeds")

    nets_ds = select_runs(ds, "nets", unstack=False)

    def runs_of(arch, sc, opt, lr):
        return runs_where(nets_ds, arch=arch, init=sc, opt=opt, lr=lr)  # its seeds, in listed order

    # 1. robustness curves: rows = nets, columns = perturbation; each row's legend names its matched lrs
    cols = (("l2_acc", s.net_l2_eps, "$\\ell_2$ PGD budget $\\epsilon$"),
            ("linf_acc", s.net_linf_eps, "$\\ell_\\infty$ PGD budget $\\epsilon$"),
            ("noise_acc", s.net_noise_std, "Gaussian noise std"),
            (None, s.net_band_std, "band noise std per DCT coefficient"))
    fig, axes = panels(4 * len(nets), ncols=4, panel=(2.6, 2.0), sharex="col")
    axes = axes.reshape(len(nets), 4)
    for row, (arch, sc) in zip(axes, nets, strict=True):
        name = f"{arch}/init{sc:g}"
        for opt, lr in picks[name].items():
            runs = runs_of(arch, sc, opt, lr)
            clean = _values(runs, "clean_acc").astype(float)[:, None]  # [run, 1]: the accuracy at budget 0
            for ax, (key, grid, _) in zip(row[:3], cols[:3]):
                a = np.concatenate([clean, _values(runs, key).astype(float)], axis=1)  # [run, 1 + budgets]
                ax.errorbar(np.concatenate([[0.0], grid]), a.mean(0), yerr=a.std(0), marker="o", ms=3, capsize=2,
                            color=NET_COLORS[opt], label=f"{opt} lr={lr:g}")
            for band, ls in (("relevant", "--"), ("irrelevant", "-")):
                a = np.concatenate([clean, _values(runs, f"band_noise_acc/{band}").astype(float)], axis=1)
                row[3].errorbar(np.concatenate([[0.0], s.net_band_std]), a.mean(0), yerr=a.std(0), marker="o",
                                ms=3, capsize=2, ls=ls, color=NET_COLORS[opt])
        row[0].set_ylabel(f"{name}\naccuracy")
        handles, labels = row[0].get_legend_handles_labels()
        legend_outside(row[3], handles=handles, labels=labels, title=name)
    for j, (_, _, xlabel) in enumerate(cols):
        axes[-1, j].set_xlabel(xlabel)
    for ax, t in zip(axes[0], ("$\\ell_2$ PGD attack", "$\\ell_\\infty$ PGD attack", "Gaussian noise",
                               "band noise (dashed: relevant)")):
        ax.set_title(t)
    fig.suptitle(title + "; mean $\\pm$ sd over seeds, matched lrs")
    names = [save(fig, out_dir, "adaptive_nets.png")]

    # 2. the mechanism: rows = nets; Lipschitz bound vs robustness, first-layer energy and change on the
    # zero-variance band
    fig, axes = panels(3 * len(nets), ncols=3, panel=(3.0, 2.1))
    axes = axes.reshape(len(nets), 3)
    for row, (arch, sc) in zip(axes, nets, strict=True):
        name = f"{arch}/init{sc:g}"
        ax = row[0]
        net_runs = runs_where(nets_ds, arch=arch, init=sc)  # one point per run, drawn in listed order
        bound, rob = _values(net_runs, "lip/bound_op"), _robust_mean(net_runs)  # float32 [run]
        for opt, lr, b, rb in zip(net_runs["opt"].values.tolist(), net_runs["lr"].values.tolist(), bound, rob,
                                  strict=True):
            ax.scatter(float(b), float(rb), color=NET_COLORS[opt], marker="o" if picks[name][opt] == lr else "x", s=18)
        ax.set_xscale("log")
        # a log axis spanning less than a decade: label the minor ticks 2, 3, 5, 7 (x 10^k) plainly, never overlapping
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if round(v / 10 ** np.floor(np.log10(v)), 6) in (2, 3, 5, 7) else ""))
        ax.set_ylabel(f"{name}\nmean PGD robust acc.")
        opts = list(picks[name])
        for j, opt in enumerate(opts):
            runs = runs_of(arch, sc, opt, picks[name][opt])
            f0 = np.mean(_values(runs, "first_layer_frac/init").astype(float))
            f1 = np.mean(_values(runs, "first_layer_frac/final").astype(float))
            row[1].bar(j - 0.2, f0, 0.4, color="0.7")
            row[1].bar(j + 0.2, f1, 0.4, color=NET_COLORS[opt])
            d = _values(runs, "first_layer_delta/irr").astype(float)
            row[2].bar(j, np.mean(d), 0.6, yerr=np.std(d), capsize=3, color=NET_COLORS[opt])
        for ax in row[1:]:
            ax.set_xticks(range(len(opts)), opts)
    axes[-1, 0].set_xlabel("product bound $\\Pi_l \\|A_l\\|_2$ (power iteration)")
    axes[0, 0].set_title("Lipschitz bound vs robustness\n(T5: SGD low $L$, more robust)")
    axes[0, 1].set_title("first-layer energy on zero-variance\nfrequencies: "
                         "$\\|A_1 P_{\\mathrm{irr}}\\|_F^2 / \\|A_1\\|_F^2$")
    axes[0, 2].set_title("first-layer change on zero-variance\nfrequencies: "
                         "$\\|(A_1 - A_1(0)) P_{\\mathrm{irr}}\\|_F$")
    handles = [Patch(color=c, label=o) for o, c in NET_COLORS.items()]
    handles += [Line2D([], [], ls="none", marker="o", color="0.4", label="matched lr"),
                Line2D([], [], ls="none", marker="x", color="0.4", label="other lr"),
                Patch(color="0.7", label="energy at init")]
    legend_outside(axes[0, 2], handles=handles)
    fig.suptitle(title)
    names.append(save(fig, out_dir, "adaptive_nets_first_layer.png"))
    return names


@styled
def nets_bands_figure(out_dir, s, metrics: dict) -> list[str]:
    """``adaptive_nets_bands.png``: the paper's Fig. 4 analogue and the removal curves.

    One panel per net (arch x init scale): accuracy drop clean - noisy under noise on each radial DCT band (band 0 =
    lowest radii), SGD at its chosen lr and each adaptive optimiser averaged over its lrs matched to SGD's clean
    accuracy (held-out seeds); the data's zero-variance bands shaded. Then, per removal init scale, clean accuracy
    vs % of DCT coefficients removed from the training set (Phi_freq solid, Phi_nrg dashed; the zero-variance
    fraction marked: removing up to it removes nothing the data carries, derived)."""
    radial, removal = metrics.get("radial", {}), metrics.get("removal", {})
    if not radial:
        return []
    nb = s.net_radial_bands
    frac = s.net_frac_irrelevant
    n = len(radial) + len(removal)
    fig, axes = panels(n, ncols=2, panel=(3.3, 2.6))
    for ax, (name, drops) in zip(axes, radial.items()):
        # bands whose coefficients are all zero-variance: rank >= (1 - frac) N^2, bands cut the rank in nb parts
        first_irr = int(np.ceil((1.0 - frac) * nb - 1e-9))
        ax.axvspan(first_irr - 0.5, nb - 0.5, color="0.92", zorder=0)
        for opt, d in drops.items():
            ax.plot(np.arange(nb), 100 * np.asarray(d), marker="o", ms=3, color=NET_COLORS[opt], label=opt)
        ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_title(f"{name}: band noise std {s.net_radial_std:g}")
        ax.set_xlabel("radial DCT band (0 = lowest frequencies)")
        ax.set_ylabel("accuracy drop (pts)")
        ax.set_xticks(range(nb))
    for ax, (name, m) in zip(axes[len(radial):], removal.items()):
        ax.axvspan(0.0, 100 * frac, color="0.92", zorder=0)
        for key, c in m["clean_vs_removed"].items():
            opt, _, method = key.split("/")
            ax.plot(c["p"], c["clean"], marker="o", ms=3, color=NET_COLORS[opt], ls="-" if method == "freq" else "--")
        ax.axvline(T.paper_removal_max_percent(), **{**THEORY, "ls": ":"})
        ax.set_title(f"{name}: trained on frequency-removed data")
        ax.set_xlabel("% of DCT coefficients removed (train set)")
        ax.set_ylabel("clean test accuracy")
    handles = [Line2D([], [], color=c, marker="o", ms=3, label=o) for o, c in NET_COLORS.items()]
    handles += [Patch(color="0.92", label="zero-variance band"),
                Line2D([], [], color="0.3", ls="-", label="$\\Phi_{freq}$ (removal)"),
                Line2D([], [], color="0.3", ls="--", label="$\\Phi_{nrg}$ (removal)"),
                Line2D([], [], **{**THEORY, "ls": ":"}, label="P11: up to 50 % removed")]
    figure_legend(fig, [], ncol=4, extra=handles)
    fig.suptitle("Band-limited noise per radial DCT band (paper Fig. 4) and frequency-removed training (S6 / P11);\n"
                 "held-out seeds, adaptive optimisers averaged over their matched lrs (removal: every lr)")
    return [save(fig, out_dir, "adaptive_nets_bands.png")]
