"""Figures of the hold-me-tight simulation (spec ``hold_me_tight.md`` Sec. 4): margins per subspace with censored
points marked, frequency profiles (standard / flipped / mirrored original / low-pass / adversarial), the
tiny-feature phase diagram and the adversarial-training effect. Censored values are drawn as "^" (">=") markers,
never as ordinary points."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .common import THEORY, save


def _median_line(ax, x, prof, label, **kw):
    med = np.asarray(prof["median"], float)
    lb = np.asarray(prof["lower_bound"], bool)
    line, = ax.plot(x, med, label=label, **kw)
    if lb.any():
        ax.plot(np.asarray(x)[lb], med[lb], ls="none", marker="^", mfc="none", color=line.get_color(), ms=7)
    return line


def synthetic_figure(out_dir, s, res, metrics):
    archs = list(s.synth_archs)
    fig, axes = plt.subplots(len(archs), 1, figsize=(9, 3.6 * len(archs)), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, arch in zip(axes[:, 0], archs):
        r = next(r for lab, r in res["synth"] if lab["arch"] == arch and lab["seed"] == 0 and lab["flip"] == 0)
        names = list(metrics["synthetic"][arch][0]["subspaces"])  # the bank's order (experiments.bank_names)
        m, f = np.asarray(r["sub"]["margin"], float), np.asarray(r["sub"]["flipped"], bool)
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
        ax.axhline(s.eps / 2, label="Bayes margin eps/2 along u", **THEORY)
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_ylabel("margin (l2)")
        ax.set_title(f"synthetic data, {arch}: margins per subspace (^: censored >=; % under: flipped)", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return save(fig, out_dir, "synthetic_margins.png")


def profile_figure(out_dir, s, res, metrics, image_sets):
    panels = []
    for arch in s.synth_archs:
        panels.append(("synthetic", arch))
    for name in image_sets:
        for arch in s.image_archs:
            panels.append((name, arch))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
    for ax, (name, arch) in zip(axes[0], panels):
        if name == "synthetic":
            pm = metrics["synthetic"][arch][0]
            std, flp = pm["profile"], pm["profile_flipped"]
            lp = None
            at = metrics["at"]["profile"][0][-1] if arch == "mlp" else None
        else:
            pm = metrics["images"][f"{name}_{arch}"]
            std, flp, lp, at = pm["profile"], pm["profile_flipped"], pm["profile_lowpass"], None
        x = np.arange(len(std["median"]))
        _median_line(ax, x, std, "standard", color="C0", marker="o", ms=3)
        _median_line(ax, x, flp, "flipped", color="C1", marker="s", ms=3)
        mirrored = {k: list(np.asarray(v)[::-1]) for k, v in std.items()}
        ax.plot(x, mirrored["median"], label="standard, mirrored (D2: = flipped for MLPs)", **THEORY)
        if lp is not None:
            _median_line(ax, x, lp, f"low-pass b={pm.get('lowpass_growth', {}).get('b', '')}", color="C2")
        if at is not None:
            ax.plot(x, at, color="C4", label=f"AT eps={s.at_eps[-1]}")
        ax.set_yscale("log")
        ax.set_xlabel("diagonal DCT block index")
        ax.set_ylabel("median margin")
        ax.set_title(f"{name}, {arch}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, "frequency_profiles.png")


def tiny_figure(out_dir, s, metrics):
    """Left: the w-margin over eps2 (sigma_w = 0) for every init scale, with the 1/eps2 law (eps / eps2) u-margin(0)
    of that scale overlaid (dashed) and the law's window marked; censored medians as '^'. Right: D5 at the recipe's
    init scale: log10 w-margin over eps2 x sigma_w."""
    rows = metrics["tiny"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, t in enumerate(rows):
        e2 = np.asarray(t["eps2"], float)
        wm, lb = np.asarray(t["w_margin"], float)[:, 0], np.asarray(t["w_lower_bound"], bool)[:, 0]
        c = f"C{k}"
        lab = f"init scale {t['init_scale']:.3g} ({t.get('init', '')})"
        if "law_exponent" in t:
            lab += f": slope {t['law_exponent']:.2f}"
        a1.plot(e2[1:], wm[1:], "o-", color=c, label=lab)
        if lb[1:].any():
            a1.plot(e2[1:][lb[1:]], wm[1:][lb[1:]], "^", ms=9, mfc="none", color=c)
        a1.plot(e2[1:], np.asarray(t["w_margin_law"], float)[1:], color=c, ls="--", lw=1)
        a1.axhline(wm[0], color=c, ls=":", lw=1)
        win = t.get("law_window", [])
        if win:
            a1.axvspan(min(win), max(win), color=c, alpha=0.06)
    a1.plot([], [], "k--", lw=1, label="1/eps2 law: (eps / eps2) u-margin(eps2 = 0)")
    a1.plot([], [], "k:", lw=1, label="eps2 = 0 (no feature)")
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("tiny feature eps2 / eps  (sigma_w = 0)")
    a1.set_ylabel("median w-margin (^: censored >=)")
    a1.set_title("P6/D5: w-margin vs eps2 per init scale (shaded: the law's domain)", fontsize=9)
    a1.legend(fontsize=7)
    t = rows[0]
    e2, sw = np.asarray(t["eps2"]), np.asarray(t["sigma_w"])
    wm, lb = np.asarray(t["w_margin"], float), np.asarray(t["w_lower_bound"], bool)
    im = a2.imshow(np.log10(wm.T), origin="lower", aspect="auto", cmap="viridis")
    a2.set_xticks(range(len(e2)), [f"{v:g}" for v in e2])
    a2.set_yticks(range(len(sw)), [f"{v:g}" for v in sw])
    for i in range(len(e2)):
        for j in range(len(sw)):
            a2.text(i, j, (">=" if lb[i, j] else "") + f"{wm[i, j]:.2g}", ha="center", va="center", fontsize=7,
                    color="w")
    a2.set_xlabel("tiny feature eps2 / eps")
    a2.set_ylabel("noise sigma_w along w")
    a2.set_title(f"S2/D5: log10 median w-margin (init scale {t['init_scale']:.3g})", fontsize=9)
    fig.colorbar(im, ax=a2)
    fig.tight_layout()
    return save(fig, out_dir, "tiny_feature.png")


def at_figure(out_dir, s, metrics):
    a = metrics["at"]
    e = np.asarray(a["eps_adv"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for k in [k for k in a if k not in ("eps_adv", "test_acc", "profile")]:
        v = np.asarray(a[k], float)
        ax.errorbar(e, v.mean(0), yerr=v.std(0), marker="o", label=k, capsize=2)
    ax.axhline(s.eps / 2, label="eps/2", **THEORY)
    ax.set_yscale("log")
    ax.set_xlabel("eps_adv (l2 PGD)")
    ax.set_ylabel("median margin (mean +- sd over seeds)")
    ax.set_title("S3: adversarial training, synthetic MLP", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, "adversarial_training.png")


def hmt_figures(out_dir, s, res, metrics, image_sets) -> list[str]:
    return [synthetic_figure(out_dir, s, res, metrics), profile_figure(out_dir, s, res, metrics, image_sets),
            tiny_figure(out_dir, s, metrics), at_figure(out_dir, s, metrics)]
