"""Figures of the hold-me-tight simulation (spec ``hold_me_tight.md`` Sec. 4): margins per subspace with censored
points marked, frequency profiles (standard / flipped / mirrored original / low-pass / adversarial), the
tiny-feature phase diagram and the adversarial-training effect. Censored values are drawn as "^" (">=") markers,
never as ordinary points."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..experiments.hold_me_tight import bank_names
from .common import THEORY, save


def _median_line(ax, x, prof, label, **kw):
    med = np.asarray(prof["median"], float)
    lb = np.asarray(prof["lower_bound"], bool)
    line, = ax.plot(x, med, label=label, **kw)
    if lb.any():
        ax.plot(np.asarray(x)[lb], med[lb], ls="none", marker="^", mfc="none", color=line.get_color(), ms=7)
    return line


def synthetic_figure(out_dir, s, res, metrics):
    from sims.hold_me_tight import _synth_run

    names = bank_names(_synth_run(s, "mlp", 0))
    archs = list(s.synth_archs)
    fig, axes = plt.subplots(len(archs), 1, figsize=(9, 3.6 * len(archs)), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, arch in zip(axes[:, 0], archs):
        r = next(r for lab, r in res["synth"] if lab["arch"] == arch and lab["seed"] == 0 and lab["flip"] == 0)
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
    rows = metrics["tiny"]
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.8 * len(rows)), squeeze=False)
    for (a1, a2), t in zip(axes, rows):
        e2, sw = np.asarray(t["eps2"]), np.asarray(t["sigma_w"])
        wm, lb = np.asarray(t["w_margin"], float), np.asarray(t["w_lower_bound"], bool)
        im = a1.imshow(np.log10(wm.T), origin="lower", aspect="auto", cmap="viridis")
        a1.set_xticks(range(len(e2)), [f"{v:g}" for v in e2])
        a1.set_yticks(range(len(sw)), [f"{v:g}" for v in sw])
        for i in range(len(e2)):
            for j in range(len(sw)):
                a1.text(i, j, (">=" if lb[i, j] else "") + f"{wm[i, j]:.2g}", ha="center", va="center", fontsize=7,
                        color="w")
        a1.set_xlabel("tiny feature eps2 / eps")
        a1.set_ylabel("noise sigma_w along w")
        a1.set_title(f"S2: log10 median margin along w (init scale {t['init_scale']:.3g})", fontsize=9)
        fig.colorbar(im, ax=a1)
        a2.plot(e2[1:], wm[1:, 0], "o-", label="measured (sigma_w = 0)")
        a2.plot(e2[1:], wm[1, 0] * e2[1] / e2[1:], label="~ 1/eps2 (D5, unverified)", **THEORY)
        a2.axhline(wm[0, 0], color="C3", ls=":", label=("eps2 = 0 (>=)" if lb[0, 0] else "eps2 = 0"))
        a2.set_xscale("log")
        a2.set_yscale("log")
        a2.set_xlabel("eps2 / eps")
        a2.set_ylabel("median w-margin")
        a2.legend(fontsize=7)
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
