"""Figures of the hold-me-tight simulation (spec ``hold_me_tight.md`` Sec. 4): margins per subspace with censored
points marked, frequency profiles (standard / flipped / mirrored original / low-pass / adversarial), the
tiny-feature phase diagram and the adversarial-training effect. Censored values are drawn as "^" (">=") markers,
never as ordinary points."""
from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D

from ..results import select_runs
from .common import save
from .style import THEORY, figure_legend, geometric_stats, ink, legend_outside, outer_labels, panels, styled


def _median_line(ax, x, prof, label, **kw):
    med = np.asarray(prof["median"], float)
    lb = np.asarray(prof["lower_bound"], bool)
    line, = ax.plot(x, med, label=label, **kw)
    if lb.any():
        ax.plot(np.asarray(x)[lb], med[lb], ls="none", marker="^", mfc="none", color=line.get_color(), ms=7)
    return line


_CENSORED = Line2D([], [], ls="none", marker="^", mfc="none", color="0.3", ms=7, label="censored median ($\\geq$)")


def synthetic_figure(out_dir, s, ds, metrics):
    """Per-point margins along each subspace of the seed-0 standard synthetic run of every arch (``ds``: the
    sweep's labelled Dataset), with the medians of ``metrics``."""
    archs = list(s.synth_archs)
    synth = select_runs(ds, "synth", unstack=True)  # dims (arch, seed, flip, subspace, point, ...)
    fig, axes = panels(len(archs), ncols=1, panel=(6.4, 2.9))
    rng = np.random.default_rng(0)
    for ax, arch in zip(axes, archs):
        names = list(metrics["synthetic"][arch][0]["subspaces"])  # the bank's order (experiments.bank_names)
        # the run's own subspaces and measured points: load_results NaN-pads both to the largest run of the sweep
        # (and stores the padded boolean "flipped" as float)
        r = synth.sel(arch=arch, seed=0, flip=0.0).isel(subspace=slice(0, len(names)), point=slice(0, s.n_points))
        m, f = np.asarray(r["sub/margin"].values, float), np.asarray(r["sub/flipped"].values).astype(bool)
        cap = np.nanmax(np.where(np.isfinite(m), m, np.nan)) * 1.5
        for i in range(len(names)):
            x = i + rng.uniform(-0.25, 0.25, m.shape[1])
            y = np.where(np.isfinite(m[i]), m[i], cap)
            ax.scatter(x[f[i]], y[f[i]], s=8, color="C0", alpha=0.6)
            ax.scatter(x[~f[i]], y[~f[i]], s=22, marker="^", facecolor="none", color="C3", alpha=0.8)
            st = metrics["synthetic"][arch][0]["subspaces"][names[i]]
            ax.hlines(st["median"], i - 0.35, i + 0.35, color="k", lw=2)
            ax.annotate(f"{1 - st['fail_rate']:.0%}", (i, 0.0), xycoords=("data", "axes fraction"),
                        xytext=(0, -24), textcoords="offset points", ha="center", fontsize=7)
        ax.axhline(s.eps / 2, **THEORY)
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("margin ($\\ell_2$)")
        ax.set_title(f"synthetic data, {arch}: margins per subspace")
    handles = [Line2D([], [], ls="none", marker="o", ms=4, color="C0", alpha=0.6, label="flipped: margin"),
               Line2D([], [], ls="none", marker="^", mfc="none", color="C3", label="not flipped: censored ($\\geq$)"),
               Line2D([], [], color="k", lw=2, label="median"),
               Line2D([], [], **THEORY, label="Bayes margin $\\epsilon/2$ along $u$")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, title="% under a subspace: share flipped")
    return save(fig, out_dir, "synthetic_margins.png")


def profile_figure(out_dir, s, metrics, image_sets):
    cells = []
    for arch in s.synth_archs:
        cells.append(("synthetic", arch))
    for name in image_sets:
        for arch in s.image_archs:
            cells.append((name, arch))
    fig, axes = panels(len(cells), panel=(3.6, 2.6))
    censored = False
    for ax, (name, arch) in zip(axes, cells):
        if name == "synthetic":
            pm = metrics["synthetic"][arch][0]
            std, flp = pm["profile"], pm["profile_flipped"]
            lp = None
            at = metrics["at"]["profile"][0][-1] if arch == "mlp" else None
        else:
            pm = metrics["images"][f"{name}_{arch}"]
            std, flp, lp, at = pm["profile"], pm["profile_flipped"], pm["profile_lowpass"], None
        x = np.arange(len(std["median"]))
        censored |= any(np.asarray(p["lower_bound"], bool).any() for p in (std, flp, lp) if p is not None)
        _median_line(ax, x, std, "standard", color="C0", marker="o", ms=3)
        _median_line(ax, x, flp, "flipped", color="C1", marker="s", ms=3)
        mirrored = {k: list(np.asarray(v)[::-1]) for k, v in std.items()}
        ax.plot(x, mirrored["median"], label="standard, mirrored (D2: = flipped for MLPs)", **THEORY)
        if lp is not None:
            _median_line(ax, x, lp, f"low-pass $b$ = {pm.get('lowpass_growth', {}).get('b', '')}", color="C2")
        if at is not None:
            ax.plot(x, at, color="C4", label=f"adversarially trained, $\\epsilon$ = {s.at_eps[-1]}")
        ax.set_yscale("log")
        ax.set_title(f"{name}, {arch}")
    outer_labels(axes, 2, "diagonal DCT block index", "median margin")
    figure_legend(fig, axes, extra=(_CENSORED,) if censored else ())
    return save(fig, out_dir, "frequency_profiles.png")


def tiny_figure(out_dir, s, metrics):
    """Left: the w-margin over eps2 (sigma_w = 0) for every init scale, with the 1/eps2 law (eps / eps2) u-margin(0)
    of that scale overlaid (dashed) and the law's window marked; censored medians as '^'. Right: D5 at the recipe's
    init scale: log10 w-margin over eps2 x sigma_w."""
    rows = metrics["tiny"]
    fig, (a1, a2) = panels(2, panel=(3.8, 3.3))
    for k, t in enumerate(rows):
        e2 = np.asarray(t["eps2"], float)
        wm, lb = np.asarray(t["w_margin"], float)[:, 0], np.asarray(t["w_lower_bound"], bool)[:, 0]
        c = f"C{k}"
        lab = f"init scale {t['init_scale']:.3g} ({t.get('init', '')})"
        if "law_exponent" in t:
            lab += f": slope {t['law_exponent']:.2f}"
        a1.plot(e2[1:], wm[1:], "o-", ms=4, color=c, label=lab)
        if lb[1:].any():
            a1.plot(e2[1:][lb[1:]], wm[1:][lb[1:]], "^", ms=9, mfc="none", color=c)
        a1.plot(e2[1:], np.asarray(t["w_margin_law"], float)[1:], color=c, ls="--", lw=1)
        a1.axhline(wm[0], color=c, ls=":", lw=1)
        win = t.get("law_window", [])
        if win:
            a1.axvspan(min(win), max(win), color=c, alpha=0.06)
    a1.plot([], [], "k--", lw=1, label="$1/\\epsilon_2$ law: $(\\epsilon/\\epsilon_2)$ $u$-margin($\\epsilon_2$ = 0)")
    a1.plot([], [], "k:", lw=1, label="$\\epsilon_2$ = 0 (no feature)")
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("tiny feature $\\epsilon_2/\\epsilon$ ($\\sigma_w$ = 0)")
    a1.set_ylabel("median $w$-margin")
    a1.set_title("P6/D5: $w$-margin vs $\\epsilon_2$\n(shaded: the law's domain)")
    censored = any(np.asarray(t["w_lower_bound"], bool)[1:, 0].any() for t in rows)
    figure_legend(fig, [a1], extra=(_CENSORED,) if censored else ())
    t = rows[0]
    e2, sw = np.asarray(t["eps2"]), np.asarray(t["sigma_w"])
    wm, lb = np.asarray(t["w_margin"], float), np.asarray(t["w_lower_bound"], bool)
    im = a2.imshow(np.log10(wm.T), origin="lower", aspect="auto", cmap="viridis")
    a2.set_xticks(range(len(e2)), [f"{v:g}" for v in e2])
    a2.set_yticks(range(len(sw)), [f"{v:g}" for v in sw])
    for i in range(len(e2)):
        for j in range(len(sw)):  # text readable on its cell (style.ink)
            v = wm[i, j]
            a2.text(i, j, ("$\\geq$" if lb[i, j] else "") + (f"{v:.2g}" if v < 100 else f"{v:.0f}"), ha="center",
                    va="center", fontsize=7, color=ink(im.cmap(im.norm(np.log10(v)))))
    a2.set_xlabel("tiny feature $\\epsilon_2/\\epsilon$")
    a2.set_ylabel("noise $\\sigma_w$ along $w$")
    a2.set_title(f"S2/D5: median $w$-margin\n(init scale {t['init_scale']:.3g})")
    fig.colorbar(im, ax=a2, label="$\\log_{10}$ median $w$-margin")
    return save(fig, out_dir, "tiny_feature.png")


def at_figure(out_dir, s, metrics):
    a = metrics["at"]
    e = np.asarray(a["eps_adv"])
    fig, (ax,) = panels(1, panel=(5.0, 3.0))  # the axes ~3.8 in wide, the legend beside it
    for k in [k for k in a if k not in ("eps_adv", "test_acc", "profile")]:
        # geometric mean x/÷ geometric sd over seeds: the log axis's own band (an arithmetic -sd can reach 0)
        gm, gsd = geometric_stats(a[k])
        ax.errorbar(e, gm, yerr=[gm - gm / gsd, gm * gsd - gm], marker="o", ms=4, label=f"along ${k}$" if k == "u" else f"along {k}",
                    capsize=2)
    ax.axhline(s.eps / 2, label="$\\epsilon/2$", **THEORY)
    ax.set_yscale("log")
    ax.set_xlabel("$\\epsilon_{\\mathrm{adv}}$ ($\\ell_2$ PGD)")
    ax.set_ylabel("median margin")
    ax.set_title("S3: adversarial training, synthetic MLP\n(geometric mean $\\times/\\div$ sd over seeds)")
    legend_outside(ax)
    return save(fig, out_dir, "adversarial_training.png")


@styled
def hmt_figures(out_dir, s, ds, metrics, image_sets) -> list[str]:
    """The four hold-me-tight figures; returns the file names written to ``out_dir``. ``ds``: the sweep's labelled
    Dataset (``load_results`` of the sim's cache, dim ``run``), whose runs give the per-point margins; ``metrics``:
    the sim's, for what is derived from them (censored medians, profiles, the tiny-feature and AT summaries)."""
    return [synthetic_figure(out_dir, s, ds, metrics), profile_figure(out_dir, s, metrics, image_sets),
            tiny_figure(out_dir, s, metrics), at_figure(out_dir, s, metrics)]
