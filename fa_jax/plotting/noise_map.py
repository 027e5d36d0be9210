"""The noise map (``sims/noise_map.toml``): clusters k x noise sigma, theory drawn on every panel.
Style: :mod:`.style` (diverging colour scales centred on the theory value, theory curves black dashed)."""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..theory import feature_averaging as T
from .common import save
from .phase import _centres_edges
from .style import DIVERGING, THEORY, centred_norm, panels, styled

K, SIGMA = "data.k", "data.sigma"


@styled
def noise_figures(out_dir, ds, m: dict, *, d: int, n: int, star: dict) -> list:
    """``noise_map.png``, four panels over (k, sigma), log axes, seed means: (a) r50 / sqrt(d/k) with the
    measured boundary sigma*(k) (where it crosses 1/sqrt(2), dots) and the theory sigma* = sqrt(n/k) (dashed);
    (b) the measured radius over the theory's, r50 / (sqrt(d/k) c(sigma, k, n)), white = theory; (c) the same for
    the in-block cosine, cos / (c / sqrt(|J_s|)); (d) clean accuracy with the theory's 0.75 contour (the edge of
    the radius' domain, dashed). The dotted vertical line is sqrt(d/k) = 10: the derived formulas hold to its left
    (theory.in_domain)."""
    ks = np.asarray(ds[K].values, float)
    sig = np.asarray(ds[SIGMA].values, float)
    ko, so = np.argsort(ks), np.argsort(sig)
    ks, sig = ks[ko], sig[so]
    k_edges, s_edges = _centres_edges(ks, "log")[1], _centres_edges(sig, "log")[1]  # cells of log-spaced centres

    def grid(da):  # (sigma, k) seed means, axes ascending
        return da.mean("seed").transpose(SIGMA, K).values[np.ix_(so, ko)]

    kk, ss = np.meshgrid(ks, sig)
    factor = T.noisy_radius_factor(ss, kk, n)
    r50n, clean = grid(m["r50_norm"]), grid(m["clean_acc"])
    ratio, cos_ratio = r50n / factor, grid(m["cos_norm"]) / factor
    kf = np.geomspace(ks[0], ks[-1], 200)
    k_dom = d / 100.0  # sqrt(d/k) = 10
    fig, axes = panels(4, ncols=2, panel=(4.2, 3.4))
    level = float(T.noise_boundary_level())
    specs = [
        (r50n, "viridis", None, r"$r_{50}/\sqrt{d/k}$", "(a) radius / noiseless FA radius"),
        (ratio, DIVERGING, centred_norm(ratio, 1.0), "measured / theory (white: equal)",
         r"(b) $r_{50}$ / $(\sqrt{d/k}\,/\sqrt{1+\sigma^2 k/n})$"),
        (cos_ratio, DIVERGING, centred_norm(cos_ratio, 1.0), "measured / theory (white: equal)",
         r"(c) in-block cos / $(|J_s|^{-1/2}/\sqrt{1+\sigma^2 k/n})$"),
        (clean, "viridis", None, "clean accuracy", "(d) clean accuracy"),
    ]
    for ax, (Z, cmap, norm, clabel, title) in zip(axes, specs):
        im = ax.pcolormesh(k_edges, s_edges, np.ma.masked_invalid(Z), cmap=cmap, norm=norm,
                           shading="flat")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clusters k")
        ax.set_ylabel(r"noise $\sigma$")
        ax.set_title(title)
        cb = fig.colorbar(im, ax=ax)
        cb.set_label(clabel)
        if k_dom < ks[-1]:
            ax.axvline(k_dom, color="k", ls=":", lw=1.0)
        if ax is axes[3]:
            cs = ax.contour(kf, sig, T.noisy_clean_accuracy(d, kf[None, :], sig[:, None], n), levels=[0.75],
                            colors="k", linestyles="--", linewidths=1.2)
            ax.clabel(cs, fmt={0.75: "theory 0.75"}, fontsize=7)
        else:
            ax.plot(kf, T.noise_boundary_sigma(n, kf), **THEORY, label=r"theory $\sigma^*=\sqrt{n/k}$")
        if ax is axes[0]:
            cb.ax.axhline(level, color="k", lw=2)
            kx = [k for k in ks if np.isfinite(star.get(int(k), np.nan))]
            ax.plot(kx, [star[int(k)] for k in kx], "o", ms=3, color="w", mec="k", mew=0.6,
                    label=r"measured $\sigma^*$ ($r_{50}/\sqrt{d/k}=1/\sqrt{2}$)")
            ax.legend(loc="lower left", fontsize=7)
        ax.set_xlim(k_edges[0], k_edges[-1])
        ax.set_ylim(s_edges[0], s_edges[-1])
        # powers of two inside the range, plain numbers (not 2 x 10^0)
        for axis, lo, hi in ((ax.xaxis, ks[0], ks[-1]), (ax.yaxis, sig[0], sig[-1])):
            ticks = [2.0 ** e for e in range(int(np.floor(np.log2(lo))), int(np.ceil(np.log2(hi))) + 1)
                     if lo <= 2.0 ** e <= hi]
            axis.set_major_locator(FixedLocator(ticks))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_locator(NullLocator())
    fig.suptitle(f"Feature averaging under noise: binary net, d = {d}, n = {n}, "
                 f"{ds.sizes['seed']} seeds per cell; dotted: $\\sqrt{{d/k}} = 10$")
    return [save(fig, out_dir, "noise_map.png")]
