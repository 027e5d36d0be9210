"""Analysis of the regimes sweep (``sims/regimes.toml``): optimiser x supervision x learning rate x seeds.

Measured per cell (mean over seeds): r50 / sqrt(d/k) for the binary net (feature averaging predicts 1, spec G1),
r50 / sqrt(d/2) for the multi-class net's max read-out (feature decoupling predicts 1, G3/G4), the in-block cosine
(1/sqrt(|J_s|) for the binary net, G2; 1 for the multi-class net, T3), clean accuracy and the final train loss.
Checks compare the theory regime (GD, the one the papers analyse) with the theory, in input units (radii) and as
cosines, every prediction from ``fa_jax.theory.feature_averaging`` and every tolerance from the spec; the other
optimisers are reported as metrics: the papers make no prediction for them.
"""
from __future__ import annotations

import numpy as np

from fa_jax.plotting.regimes import regime_figures
from fa_jax.summary import Check
from fa_jax.theory import feature_averaging as T


def _base(spec: dict) -> tuple[int, int, int]:
    f = spec["fixed"]
    return int(f["data.d"]), int(f["data.k"]), int(f["data.n_pos"])


def last_finite(da, dim: str = "step"):
    """The last finite value along ``dim`` (groups with shorter record plans are NaN-padded at the end)."""
    import xarray as xr

    a = np.moveaxis(da.values, da.get_axis_num(dim), -1)
    ok = np.isfinite(a)
    idx = np.where(ok.any(-1), a.shape[-1] - 1 - np.argmax(ok[..., ::-1], axis=-1), 0)
    out = np.take_along_axis(a, idx[..., None], axis=-1)[..., 0]
    out = np.where(ok.any(-1), out, np.nan)
    dims = [d for d in da.dims if d != dim]
    return xr.DataArray(out, dims=dims, coords={d: da.coords[d] for d in dims if d in da.coords})


def measures(ds, spec: dict) -> dict:
    """``{name: DataArray over (supervision, optimizer, lr_mult, seed)}`` of the normalised measurements."""
    d, k, n_pos = _base(spec)
    sup = ds["supervision"].values
    r50 = ds["robust/binary/r50"].where(ds["supervision"] == "binary") / float(T.fa_radius(d, k))
    r50 = r50.fillna(0) + (ds["robust/max/r50"] / float(T.fd_radius(d))).where(ds["supervision"] == "multiclass"
                                                                               ).fillna(0)
    r50 = r50.where(~ds["diverged"])
    cos_theory = {"binary": float(T.inblock_cosine(n_pos)), "multiclass": float(T.fd_diag_cosine())}
    clean = ds["robust/binary/clean_acc"].where(ds["supervision"] == "binary").fillna(0) + \
        ds["robust/max/clean_acc"].where(ds["supervision"] == "multiclass").fillna(0)
    clean = clean.where(~ds["diverged"])
    return {"r50_norm": r50, "inblock_cos": ds["features/in_mean"], "clean_acc": clean,
            "final_loss": last_finite(ds["records/loss"]), "cos_theory": cos_theory, "supervision": sup}


def analyse(ds, spec: dict, out_dir: str):
    opts = spec.get("analysis_options", {})
    theory_regime = opts.get("theory_regime", "gd")
    m = measures(ds, spec)
    d, k, n_pos = _base(spec)
    mean = {name: m[name].mean("seed") for name in ("r50_norm", "inblock_cos", "clean_acc", "final_loss")}
    lr_ref = 1.0 if 1.0 in list(ds["lr_mult"].values) else float(ds["lr_mult"].values[len(ds["lr_mult"]) // 2])
    at = {"optimizer": theory_regime, "lr_mult": lr_ref}
    checks = theory_checks(ds, m, d, k, n_pos, theory_regime, at)
    derived = [c.name for c in checks if c.kind == "derived"]
    not_evaluated = {}
    if not T.in_domain(d, k):  # the derived formulas' domain (theory.in_domain): never evaluated outside it
        checks = [c for c in checks if c.kind != "derived"]
        not_evaluated = {n: f"outside the theory's domain: sqrt(d/k) = {float(T.fa_radius(d, k)):.3g} < 10 "
                            "(theory.in_domain)" for n in derived}
    table = {}
    for sup in ds["supervision"].values:
        for opt in ds["optimizer"].values:
            for lr in ds["lr_mult"].values:
                cell = {name: float(mean[name].sel(supervision=sup, optimizer=opt, lr_mult=lr))
                        for name in mean}
                cell["diverged"] = int(ds["diverged"].sel(supervision=sup, optimizer=opt, lr_mult=lr).sum())
                cell["r50_norm_sd"] = float(m["r50_norm"].sel(supervision=sup, optimizer=opt, lr_mult=lr).std())
                table[f"{sup}/{opt}/lr_x{lr:g}"] = cell
    # the theory line of the normalised radius panels: the checked prediction over its normaliser
    fd_lo, fd_hi = T.fd_r50_window(d)
    norm_theory = {"binary": float(T.fa_radius(d, k) / T.fa_radius(d, k)),
                   "multiclass": float(0.5 * (fd_lo + fd_hi) / T.fd_radius(d))}
    figs = regime_figures(out_dir, ds, m, spec, theory=norm_theory,
                          cos_theory=m["cos_theory"], d=d, k=k)
    # ``not_evaluated``: fa_jax.sweepfile.finalize_sweep moves it from these metrics into summary.json's list
    return checks, {"cells": table, "figures": figs, "not_evaluated": not_evaluated,
                    "normalisation": {"binary": f"sqrt(d/k) = {float(T.fa_radius(d, k)):.4g}",
                                      "multiclass": f"sqrt(d/2) = {float(T.fd_radius(d)):.4g}"}}


def theory_checks(ds, m: dict, d: int, k: int, n_pos: int, regime: str, at: dict) -> list:
    """The regimes sweep's checks at the theory regime's cell ``at`` (seed means), spec P1/P2/P6/P7."""
    P = T.PROVENANCE
    sel = {"optimizer": at["optimizer"], "lr_mult": at["lr_mult"]}
    ok = ~ds["diverged"].sel(**sel)

    def seed_mean(name, sup):
        return float(ds[name].sel(**sel, supervision=sup).where(ok.sel(supervision=sup)).mean("seed"))

    inblock = float(m["inblock_cos"].sel(**sel, supervision="binary").mean("seed"))
    diag = float(m["inblock_cos"].sel(**sel, supervision="multiclass").mean("seed"))
    fd_lo, fd_hi = (float(v) for v in T.fd_r50_window(d))
    fd_mid = 0.5 * (fd_lo + fd_hi)
    return [
        Check(f"regimes.{regime}.binary.r50", seed_mean("robust/binary/r50", "binary"), float(T.fa_radius(d, k)),
              0.10, "rel", P["fa_radius"],
              "G1/P6: binary-net PGD r50 = sqrt(d/k) (feature averaging); tolerance: spec P13 (PGD r50 within "
              "10 % of sqrt(g d/(2k)), the FA radius at g = 2); null 0: a chance-level net"),
        Check(f"regimes.{regime}.multiclass.r50_max", seed_mean("robust/max/r50", "multiclass"), fd_mid,
              (fd_hi - fd_lo) / (2 * fd_mid), "rel", P["fd_r50_window"],
              "G3/G4/P7: multi-class F_max PGD r50 in [0.9, 1.0] sqrt(d/2) (feature decoupling; the window's centre "
              "and relative half-width); tolerance: spec P7; null 0: a chance-level net"),
        Check(f"regimes.{regime}.binary.inblock_cos", inblock, float(T.inblock_cosine(n_pos)), 0.01, "abs",
              P["inblock_cosine"], "G2/P1: mean in-block cos(w, mu_j) = 1/sqrt(|J_s|); tolerance: spec P1 (+-0.01); "
                                   "null 0: a never-moved random-init neuron"),
        Check(f"regimes.{regime}.multiclass.diag_cos", diag, float(T.fd_diag_cosine()), 0.02, "at_least",
              P["fd_diag_cosine"], "T3/P2: mean cos(w_j, mu_j) >= 0.98; tolerance: spec P2; null 0: a never-moved "
                                   "random-init output"),
    ]
