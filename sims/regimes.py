"""Analysis of the regimes sweep (``sims/regimes.toml``): optimiser x supervision x learning rate x seeds.

Measured per cell (mean over seeds): r50 / sqrt(d/k) for the binary net (feature averaging predicts 1, spec G1),
r50 / sqrt(d/2) for the multi-class net's max read-out (feature decoupling predicts 1, G3/G4), the in-block cosine
(1/sqrt(|J_s|) for the binary net, G2; 1 for the multi-class net, T3), clean accuracy and the final train loss.
Checks compare the theory regime (GD, the one the papers analyse) with the theory; the other optimisers are
reported as metrics: the papers make no prediction for them.
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
    checks = []
    mean = {name: m[name].mean("seed") for name in ("r50_norm", "inblock_cos", "clean_acc", "final_loss")}
    lr_ref = 1.0 if 1.0 in list(ds["lr_mult"].values) else float(ds["lr_mult"].values[len(ds["lr_mult"]) // 2])
    at = {"optimizer": theory_regime, "lr_mult": lr_ref}
    checks.append(Check(f"regimes.{theory_regime}.binary.r50_over_sqrt_d_over_k",
                        float(mean["r50_norm"].sel(supervision="binary", **at)), 1.0, 0.1, "rel", "derived",
                        "G1: feature averaging, flip radius sqrt(d/k)"))
    checks.append(Check(f"regimes.{theory_regime}.multiclass.r50_over_sqrt_d_over_2",
                        float(mean["r50_norm"].sel(supervision="multiclass", **at)), 1.0, 0.1, "rel", "derived",
                        "G3/G4: feature decoupling, max read-out radius sqrt(d/2)"))
    checks.append(Check(f"regimes.{theory_regime}.binary.inblock_cos",
                        float(mean["inblock_cos"].sel(supervision="binary", **at)),
                        float(T.inblock_cosine(n_pos)), 0.05, "abs", "derived", "G2: 1/sqrt(|J_s|)"))
    checks.append(Check(f"regimes.{theory_regime}.multiclass.diag_cos",
                        float(mean["inblock_cos"].sel(supervision="multiclass", **at)),
                        float(T.fd_diag_cosine()), 0.05, "abs", "paper", "T3: w_j proportional to mu_j"))
    table = {}
    for sup in ds["supervision"].values:
        for opt in ds["optimizer"].values:
            for lr in ds["lr_mult"].values:
                cell = {name: float(mean[name].sel(supervision=sup, optimizer=opt, lr_mult=lr))
                        for name in mean}
                cell["diverged"] = int(ds["diverged"].sel(supervision=sup, optimizer=opt, lr_mult=lr).sum())
                cell["r50_norm_sd"] = float(m["r50_norm"].sel(supervision=sup, optimizer=opt, lr_mult=lr).std())
                table[f"{sup}/{opt}/lr_x{lr:g}"] = cell
    figs = regime_figures(out_dir, ds, m, spec, theory={"binary": 1.0, "multiclass": 1.0},
                          cos_theory=m["cos_theory"], d=d, k=k)
    return checks, {"cells": table, "figures": figs,
                    "normalisation": {"binary": f"sqrt(d/k) = {float(T.fa_radius(d, k)):.4g}",
                                      "multiclass": f"sqrt(d/2) = {float(T.fd_radius(d)):.4g}"}}
