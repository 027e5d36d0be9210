"""Feature-averaging figures. Every panel draws the theory (from ``fa_jax.theory``) beside the measurement.

:func:`feature_averaging_figures` draws all seven from a run's main runs (its labelled Dataset) and metrics;
:func:`metric_figures` the four that need only ``summary.json``'s metrics (dynamics, scaling, (k, d) phase
diagram, init scale x width), so a committed summary re-draws them without re-running anything. Style: :mod:`.style`
(two-column layouts, legends off the data, diverging colour scales centred on the theory value)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.ticker import FormatStrFormatter, LogLocator

from ..experiments.feature_averaging import readout_net
from ..results import stacked
from ..theory import feature_averaging as T
from .common import band as _band
from .common import save as _save
from .style import DIVERGING, PANEL, THEORY, centred_norm, ink, legend_cell, legend_outside, panels, styled

# the main runs' attacks (read-out, ``_ce``: the CE-loss attack) in the order drawn: the binary net's, then the
# multi-class net's by name
LABELS = {"binary": "binary net (FA)", "max": "multi-class, $F_{max}$", "max_ce": "multi-class, $F_{max}$ (CE attack)",
          "sum": "multi-class, $F_{sum}$", "sum_ce": "multi-class, $F_{sum}$ (CE attack)"}


@styled
def feature_averaging_figures(out_dir, s, main, metrics) -> list[str]:
    """All figures of a feature-averaging run (``s``: the sim's config; ``main``: its main runs, the ``main`` part
    of its labelled Dataset with dims ``(kind, seed, <output axes>)``, ``eps`` its radius grid and ``point`` cut to
    the attacked points; ``metrics``: the sim's); returns the file names."""
    return [_cosine_heatmaps(out_dir, s, main), _robust_accuracy(out_dir, s, main), _flip_histogram(out_dir, s, main),
            *metric_figures(out_dir, s, metrics)]


@styled
def metric_figures(out_dir, s, metrics) -> list[str]:
    """The figures drawn from ``summary.json``'s metrics alone (``s``: any object with the config's ``d``, ``k``,
    ``n_pos``): ``fa_dynamics``, ``fa_scaling``, ``fa_phase_kd``, ``fa_init_width``."""
    return [_dynamics(out_dir, s, metrics), _scaling(out_dir, metrics), _phase_kd(out_dir, metrics),
            _init_width(out_dir, s, metrics)]


def _cosine_heatmaps(out_dir, s, main) -> str:
    """Paper Fig. 2a,b: cos(centre mu_i, weight) of the binary net [k, 2m] and the multi-class net [k, k], seed
    means, on one colour scale."""
    d, k, n_pos = s.d, s.k, s.n_pos

    def seed_mean(kind):
        """The seed mean of ``features/cos`` of the ``kind`` net, [centre, neuron or output]: rows and columns
        that are NaN in every seed are load_results' padding (the nets' outputs have other shapes), not data."""
        c = main["features/cos"].sel(kind=kind).dropna("cos_row", how="all").dropna("cos_col", how="all")
        return np.mean(stacked(c, "seed"), 0)

    cb = seed_mean("binary")
    bucket = cb.shape[1] // 2  # columns: [+ side | - side], each padded to the bucket; keep the real neurons
    cb = cb[:, np.r_[0:s.width, bucket:bucket + s.width]]
    cm = seed_mean("multiclass")
    fig, axes = plt.subplots(1, 2, figsize=(2 * PANEL[0], PANEL[1] + 0.3), constrained_layout=True,
                             gridspec_kw={"width_ratios": [2 * s.width, k]})
    for ax, c, title, xl in ((axes[0], cb, "binary net: feature averaging", "neuron $j$ (+ side | $-$ side)"),
                             (axes[1], cm, "multi-class net: decoupled", "output $j$ (equivalent weight)")):
        im = ax.imshow(c, vmin=-0.2, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel(r"centre $\mu_i$")
    axes[0].axvline(s.width - 0.5, color="w", lw=1)
    bar = fig.colorbar(im, ax=list(axes), shrink=0.9)
    bar.set_label(r"$\cos(\mu_i, w_j)$; white: theory $1/\sqrt{|J_s|}$")
    for ns in (n_pos, k - n_pos):
        bar.ax.axhline(float(T.inblock_cosine(ns)), color="w", lw=2)
    fig.suptitle(f"mean of {main.sizes['seed']} seeds; d = {d}, k = {k}, {n_pos}/{k - n_pos} split")
    return _save(fig, out_dir, "fa_cosine_heatmaps.png")


def _robust_accuracy(out_dir, s, main) -> str:
    """Paper Fig. 3 left: PGD robust accuracy vs radius, seed mean +- sd, with the G1 / G4 theory curves; the
    theory radii are vertical lines named in the legend (labels at the top would overlap where radii are close)."""
    d, k, n_pos = s.d, s.k, s.n_pos
    n_seeds = main.sizes["seed"]
    eps = main["eps"].values
    fig, (ax,) = panels(1, panel=(7.2, 3.3))  # the width holds the legend beside the axes
    for name, label in LABELS.items():
        if f"robust/{name}/acc" in main:
            ys = stacked(main[f"robust/{name}/acc"].sel(kind=readout_net(name)), "seed")
            _band(ax, eps, ys, label, ls=":" if name.endswith("_ce") else "-")
    ax.plot(eps, T.acc_fa(eps, d, k), label=r"theory $\Phi(\sqrt{d/k}-\epsilon)$ (G1)", **THEORY)
    w_pos = n_pos / k
    acc_fd = w_pos * T.acc_fd(eps, d, k - n_pos) + (1 - w_pos) * T.acc_fd(eps, d, n_pos)
    ax.plot(eps, acc_fd, label="theory FD, $F_{max}$ (G4)", color="k", ls="-.", lw=1.2)
    g4 = float(T.g4_fsum_radius(0.0, d, k - n_pos))
    for x, lab, c in ((float(T.fa_radius(d, k)), r"radius $\sqrt{d/k}$ (FA)", "C3"),
                      (float(T.fd_radius(d)), r"radius $\sqrt{d/2}$ (optimal)", "C2"),
                      (g4, r"G4 $F_{sum}$ radius, $\tau=0$", "C7")):
        ax.axvline(x, color=c, lw=0.8, label=lab)
    ax.set_xlabel(r"$\ell_2$ radius $\epsilon$")
    ax.set_ylabel("robust accuracy (PGD)")
    ax.set_ylim(-0.02, 1.04)
    legend_outside(ax)
    ax.set_title(f"PGD {s.pgd_steps} steps $\\times$ {s.restarts} restarts, {s.n_points} test points\n"
                 f"mean $\\pm$ sd over {n_seeds} seeds")
    return _save(fig, out_dir, "fa_robust_accuracy.png")


def _flip_histogram(out_dir, s, main) -> str:
    """Exact flip radii along v(x) of the binary nets against N(sqrt(d/k), 1) (G1)."""
    r_fa = float(T.fa_radius(s.d, s.k))
    flips = stacked(main["robust/binary/flip"].sel(kind="binary"), "seed").ravel()  # seed by seed
    flips = flips[np.isfinite(flips)]
    fig, (ax,) = panels(1, panel=(4.0, 2.8))
    if flips.size:
        ax.hist(flips, bins=50, density=True, alpha=0.6, label="measured (binary net)")
        lo, hi = flips.min() - 1, flips.max() + 1
    else:  # every binary run diverged (its radii are NaN) or no point flips: the theory alone, said so
        ax.text(0.5, 0.92, "no finite measured radius (diverged or censored runs)", transform=ax.transAxes,
                ha="center", va="top")
        lo, hi = r_fa - 4, r_fa + 4
    xs = np.linspace(lo, hi, 300)
    ax.plot(xs, np.exp(-0.5 * (xs - r_fa) ** 2) / np.sqrt(2 * np.pi),
            label=r"theory $\mathcal{N}(\sqrt{d/k}, 1)$ (G1)", **THEORY)
    ax.set_xlabel(r"exact flip radius along $v(x)$")
    ax.set_ylabel("density")
    legend_outside(ax, "below", ncol=2)
    return _save(fig, out_dir, "fa_flip_radius_hist.png")


def _dynamics(out_dir, s, metrics) -> str:
    """In-block cosine, median flip radius and training loss against the step, one line per learning rate; the
    fourth cell of the 2 x 2 layout holds the shared legend."""
    k, n_pos = s.k, s.n_pos
    r_fa, r_fd = float(T.fa_radius(s.d, k)), float(T.fd_radius(s.d))
    fig, axes = panels(4)
    for lr, dd in metrics["dynamics"].items():
        st = np.maximum(np.array(dd["steps"]), 0.8)  # step 0 drawn at 0.8 on the log axis
        for ax, key in zip(axes[:3], ("cos_in", "flip_median", "loss"), strict=True):
            ax.plot(st, dd[key], marker=".", label=f"$\\eta$ = {lr}")
    axes[0].axhline(float(np.mean(T.inblock_cosine([n_pos, k - n_pos]))), label=r"theory $1/\sqrt{|J_s|}$",
                    **THEORY)
    axes[1].axhline(r_fa, label=r"theory $\sqrt{d/k}$", color="k", ls=":", lw=1.2)
    axes[1].axhline(r_fd, label=r"optimal $\sqrt{d/2}$", color="C2", ls=":")
    for ax, yl in zip(axes[:3], ("mean in-block cosine", r"median flip radius along $v(x)$", "training loss"),
                      strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(yl)
    axes[2].set_yscale("log")
    legend_cell(axes[3], axes[:3], loc="center", title="binary net")
    fig.suptitle("feature averaging appears early and persists")
    return _save(fig, out_dir, "fa_dynamics.png")


def _scaling(out_dir, metrics) -> str:
    """r50 against k (log-log, FA slope -1/2 vs FD slope 0) and against the granularity g (G6)."""
    ksc, gr = metrics["k_scaling"], metrics["granularity"]
    fig, axes = panels(2)
    kk = np.array(ksc["k"])
    axes[0].loglog(kk, ksc["fa_r50"], "o-", label=f"FA (binary), slope {ksc['fa_slope']:.2f}")
    axes[0].loglog(kk, ksc["fd_r50"], "s-", label=f"FD ($F_{{max}}$), slope {ksc['fd_slope']:.2f}")
    axes[0].loglog(kk, T.fa_radius(ksc["d"], kk), label=r"theory $\sqrt{d/k}$", **THEORY)
    axes[0].loglog(kk, np.full_like(kk, T.fd_radius(ksc["d"]), dtype=float), label=r"theory $\sqrt{d/2}$",
                   color="k", ls="-.", lw=1.2)
    axes[0].set_xticks(kk, [f"{int(v)}" for v in kk])
    axes[0].minorticks_off()
    # radii span less than a decade: label 10, 20, 30, 50, ... (decade ticks alone may leave the axis bare)
    axes[0].yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    axes[0].yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes[0].set_xlabel("classes k")
    axes[0].set_ylabel("$r_{50}$ (PGD)")
    axes[0].set_title(f"$r_{{50}}$ vs k, d = {ksc['d']}")
    axes[0].legend(loc="lower left")
    g = np.array(gr["g"])
    axes[1].plot(g, gr["r50_max"], "o-", label="measured ($F_{max}$)")
    gg = np.linspace(g.min(), g.max(), 100)
    axes[1].plot(gg, T.granularity_radius(gg, gr["d"], gr["k"]), label=r"theory $\sqrt{g d/(2k)}$ (G6)", **THEORY)
    axes[1].set_xlabel("super-classes g")
    axes[1].set_ylabel("$r_{50}$ (PGD)")
    axes[1].set_title(f"granularity, k = {gr['k']}, d = {gr['d']}")
    axes[1].legend(loc="upper left")
    return _save(fig, out_dir, "fa_scaling.png")


def _log2_index(values, grid):
    """Fractional cell index of ``values`` on the axis of cell centres ``grid`` (ascending, positive): linear in
    log2 between centres and extended linearly past the end centres (out to the cells' outer edges and beyond)."""
    lg, v = np.log2(np.asarray(grid, float)), np.log2(np.asarray(values, float))
    if lg.size == 1:
        return np.zeros_like(v)
    idx = np.interp(v, lg, np.arange(lg.size))
    lo = (v - lg[0]) / (lg[1] - lg[0])
    hi = lg.size - 1 + (v - lg[-1]) / (lg[-1] - lg[-2])
    return np.where(v < lg[0], lo, np.where(v > lg[-1], hi, idx))


def _index_log2(idx, grid):
    """Inverse of :func:`_log2_index`: log2 of the value at fractional cell index ``idx``."""
    lg, idx = np.log2(np.asarray(grid, float)), np.asarray(idx, float)
    mid = np.interp(idx, np.arange(lg.size), lg)
    lo = lg[0] + idx * (lg[1] - lg[0])
    hi = lg[-1] + (idx - lg.size + 1) * (lg[-1] - lg[-2])
    return np.where(idx < 0, lo, np.where(idx > lg.size - 1, hi, mid))


def _phase_kd(out_dir, metrics) -> str:
    """(k, d) phase diagram of r50 / radius (FA: sqrt(d/k); FD: sqrt(d/2)): one diverging colour scale centred on
    the theory value 1 for both panels; dotted: the FA boundary k* = d / eps^2 for fixed eps, its label on a row
    boundary (never on a cell's number)."""
    tab = metrics["phase"]
    ds, ks = sorted({t["d"] for t in tab}), sorted({t["k"] for t in tab})
    grids = {}
    for kind in ("binary", "multiclass"):
        grid = np.full((len(ds), len(ks)), np.nan)
        for t in tab:
            if t["kind"] == kind:
                grid[ds.index(t["d"]), ks.index(t["k"])] = t["normalised"]
        grids[kind] = grid
    norm = centred_norm(np.concatenate([g.ravel() for g in grids.values()]), 1.0)
    fig, axes = panels(2)
    for ax, kind, title in ((axes[0], "binary", r"FA: $r_{50}\,/\sqrt{d/k}$"),
                            (axes[1], "multiclass", r"FD ($F_{max}$): $r_{50}\,/\sqrt{d/2}$")):
        grid = grids[kind]
        im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", norm=norm, cmap=DIVERGING, aspect="auto")
        for i in range(len(ds)):
            for j in range(len(ks)):
                if np.isfinite(grid[i, j]):
                    low = np.sqrt(ds[i] / ks[j]) < 3
                    ax.text(j, i, f"{grid[i, j]:.2f}" + ("*" if low else ""), ha="center", va="center", fontsize=8,
                            color=ink(im.cmap(norm(grid[i, j]))))
        ax.set_xticks(range(len(ks)), ks)
        ax.set_yticks(range(len(ds)), ds)
        ax.set_xlabel("classes k")
        ax.set_ylabel("dimension d")
        ax.set_title(title)
        if kind == "binary" and len(ks) > 1 and len(ds) > 1:
            _fa_boundaries(ax, ds, ks)
        ax.set_xlim(-0.5, len(ks) - 0.5)
        ax.set_ylim(-0.5, len(ds) - 0.5)
    bar = fig.colorbar(im, ax=list(axes), shrink=0.9)
    bar.set_label("$r_{50}$ / radius (theory 1: white)")
    bar.ax.axhline(1.0, color="k", lw=1.5)
    fig.suptitle("(k, d) phase diagram; dotted: FA boundary $k^*=d/\\epsilon^2$ for fixed $\\epsilon$\n"
                 "* marks $\\sqrt{d/k}<3$ (clean accuracy starts to drop)")
    return _save(fig, out_dir, "fa_phase_kd.png")


def _fa_boundaries(ax, ds, ks, eps_values=(4.0, 8.0, 16.0)) -> None:
    """Draw k* = d / eps^2 across the whole (log2-spaced) grid and label each line where it crosses a boundary
    between two rows of cells: half a cell away from every cell's number."""
    yy = np.linspace(-0.5, len(ds) - 0.5, 200)
    for e in eps_values:
        xx = _log2_index(2.0 ** _index_log2(yy, ds) / e ** 2, ks)
        ax.plot(xx, yy, "k:", lw=1.1)
        for yb in np.arange(len(ds) - 1) + 0.5:
            xb = float(_log2_index(2.0 ** _index_log2(yb, ds) / e ** 2, ks))
            if -0.3 <= xb <= len(ks) - 0.7:
                ax.text(xb, yb, f"$\\epsilon$={e:g}", fontsize=7, ha="center", va="center",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "w", "ec": "none", "alpha": 0.85})
                break


def _sci(v: float) -> str:
    """Short tick label of an init scale: 1e-6, 2e-2, 1."""
    return f"{v:g}" if 0.1 <= v < 100 else f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")


def _init_width(out_dir, s, metrics) -> str:
    """S3: in-block cosine, weight movement, flip radius and clean accuracy over (init scale x width), 2 x 2;
    panels with a theory value inside their range on a diverging scale centred on it."""
    k, n_pos, d = s.k, s.n_pos, s.d
    s3 = metrics["s3"]
    widths = sorted({t["width"] for t in s3["runs"]})
    scales = sorted({t["init_scale"] for t in s3["runs"]})
    cells = (("cos_in", "in-block cosine", float(np.mean(T.inblock_cosine([n_pos, k - n_pos]))), (0, 1)),
             ("movement", r"$\log_{10}\,\|W_T-W_0\|/\|W_0\|$", None, None),
             ("flip_over_fa", r"flip radius / $\sqrt{d/k}$", 1.0, (0, 2)),
             ("clean_acc", "clean accuracy", 1.0, (0.5, 1)))
    fig, axes = panels(4)
    xb = np.interp(np.log10(s3["boundary_scale"]), np.log10(scales), np.arange(len(scales)))
    for ax, (key, title, theory, lim) in zip(axes, cells, strict=True):
        grid = np.full((len(widths), len(scales)), np.nan)
        for t in s3["runs"]:
            grid[widths.index(t["width"]), scales.index(t["init_scale"])] = t[key]
        if key == "movement":
            grid = np.log10(np.maximum(grid, 1e-12))
        diverging = theory is not None and lim is not None and lim[0] < theory < lim[1]
        if diverging:
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap=DIVERGING,
                           norm=TwoSlopeNorm(vcenter=theory, vmin=lim[0], vmax=lim[1]))
        else:
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis",
                           vmin=None if lim is None else lim[0], vmax=None if lim is None else lim[1])
        bar = fig.colorbar(im, ax=ax)
        if theory is not None:
            bar.ax.axhline(theory, color="k", lw=1.5)
        ax.set_xticks(range(len(scales)), [_sci(v) for v in scales], rotation=45)
        ax.set_yticks(range(len(widths)), widths)
        ax.set_xlabel(r"init scale $\sigma_w$")
        ax.set_ylabel("width m")
        ax.set_title(title + ("" if theory is None else f" (FA theory {theory:.3g})"))
        ax.axvline(xb, color="k" if diverging else "w", ls="--", lw=1.2)
    fig.suptitle(f"S3: init scale $\\times$ width (binary net, d = {d}); dashed: heuristic FA/lazy boundary\n"
                 f"$\\sigma_w\\sqrt{{d}} = \\|w_T\\|$ = {s3['learned_norm_small_init']:.3g} (learned from small init)")
    return _save(fig, out_dir, "fa_init_width.png")
