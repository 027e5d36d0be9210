"""The noise-map analysis (sims/noise_map.py) on a tiny sweep of the same form: one compiled program for every
(k, sigma, seed), every check's measurement recomputed here from the labelled results, predictions from the theory
module alone, the figure written, the learning floor met; and the shipped sims/noise_map.toml parses into
24 x 24 x 4 runs in ONE program."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_check_contract, assert_readable_png

from fa_jax.results import load_results
from fa_jax.sweep import group_configs
from fa_jax.sweepfile import build_configs, load_spec, parse_spec, run_spec
from fa_jax.theory import feature_averaging as T

TINY = {
    "experiment": "feature-averaging", "name": "noise-map-tiny", "analysis": "fa_jax_sims.noise_map:analyse",
    "fixed": {"data.d": 400, "data.bucket": 4, "data.n_train": 200, "data.n_test": 100, "model.kind": "binary",
              "model.width": 3, "model.bias": True, "model.init_scale": 1e-5, "optim.name": "gd",
              "optim.lr": 1e-3, "train.steps": 100, "train.n_records": 4, "attack.n_points": 64,
              "attack.restarts": 1, "attack.steps": 10, "attack.ce": False, "attack.record_points": 32,
              "attack.flip_grid": 32},
    # sqrt(d/k) = 14.1 and 10 (both inside theory.in_domain); predicted sigma* = sqrt(n/k) = 10 and 7.1
    "axes": {"data.k": [2, 4], "data.sigma": [0.5, 4.0, 16.0], "seed": {"range": [0, 2]}},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("noise")
    res = run_spec(parse_spec(TINY, source="tiny"), out, progress=False)
    return out, res


def test_one_program_and_the_checks_recomputed_from_results(tiny):
    from fa_jax_sims import noise_map as N

    out, res = tiny
    assert res["stats"]["programs_compiled"] == res["stats"]["n_groups"] == 1  # k and sigma traced
    ds = load_results(out)
    checks = {c["name"]: c for c in res["summary"]["checks"]}
    assert set(checks) == {"noise.r50_k4_small_noise", "noise.inblock_cos_k4_small_noise",
                           "noise.r50_k4_boundary", "noise.inblock_cos_k4_boundary"}
    # sigma 4 -> 16 is too coarse to locate the boundary: the slope is listed, not evaluated
    skipped = {c["name"]: c["reason"] for c in res["summary"]["not_evaluated"]}
    assert "too coarse" in skipped["noise.boundary_slope"]
    assert all(c["kind"] == "derived" for c in checks.values())
    assert_check_contract(res["summary"])
    d, n = 400, 200
    ok = ~ds["diverged"]
    # the reference cells: k = 4 (the in-domain k nearest 10); sigma 0.5 (smallest) and 4 (nearest sqrt(n/k))
    for tag, s in (("small_noise", 0.5), ("boundary", 4.0)):
        cell = ds.sel({"data.k": 4, "data.sigma": s})
        r50 = float(cell["robust/binary/r50"].where(ok.sel({"data.k": 4, "data.sigma": s})).mean("seed"))
        c = float(T.noisy_radius_factor(s, 4, n))
        assert checks[f"noise.r50_k4_{tag}"]["measured"] == pytest.approx(r50, rel=1e-6)
        assert checks[f"noise.r50_k4_{tag}"]["predicted"] == pytest.approx(math.sqrt(d / 4) * c, rel=1e-12)
        cos = float(cell["features/in_mean"].mean("seed"))
        assert checks[f"noise.inblock_cos_k4_{tag}"]["measured"] == pytest.approx(cos, rel=1e-6)
        assert checks[f"noise.inblock_cos_k4_{tag}"]["predicted"] == pytest.approx(c / math.sqrt(2), rel=1e-12)
    # the boundary: per k, where the seed-mean r50/sqrt(d/k) crosses 1/sqrt(2), interpolated in log sigma
    star = {}
    for k in (2, 4):
        v = (ds["robust/binary/r50"].sel({"data.k": k}).mean("seed") / math.sqrt(d / k)).values
        sig = ds["data.sigma"].values.astype(float)
        i = int(np.flatnonzero(v <= 1 / math.sqrt(2))[0])
        t = (v[i - 1] - 1 / math.sqrt(2)) / (v[i - 1] - v[i])
        star[k] = math.exp(math.log(sig[i - 1]) + t * math.log(sig[i] / sig[i - 1]))
        assert res["summary"]["metrics"]["boundary_sigma"][str(k)] == pytest.approx(star[k], rel=1e-6)  # float32 means
    assert_readable_png(out / "noise_map.png")


def test_boundary_slope_check_from_a_fine_grid():
    """The slope check itself (the tiny sweep's grid is too coarse for it): the analysis' boundary and fit on a
    synthetic map that follows the theory exactly give the predicted slope; a k-independent boundary fails."""
    import xarray as xr
    from fa_jax_sims import noise_map as N

    d, n = 3072, 1000
    ks, sig = np.array([2, 4, 8, 16]), np.geomspace(0.25, 32, 24)
    for law, want in ((lambda s, k: T.noisy_radius_factor(s, k, n), True),
                      (lambda s, k: T.noisy_radius_factor(s, 10, n), False)):
        r50 = np.sqrt(d / ks)[:, None, None] * law(sig[None, :, None], ks[:, None, None]) * np.ones((1, 1, 2))
        ds = xr.Dataset({"robust/binary/r50": (("data.k", "data.sigma", "seed"), r50),
                         "features/in_mean": (("data.k", "data.sigma", "seed"), np.full(r50.shape, 0.5)),
                         "robust/binary/clean_acc": (("data.k", "data.sigma", "seed"), np.ones(r50.shape)),
                         "diverged": (("data.k", "data.sigma", "seed"), np.zeros(r50.shape, bool))},
                        coords={"data.k": ks, "data.sigma": sig, "seed": [0, 1]})
        m = N.measures(ds, {"fixed": {"data.d": d, "data.n_train": n}})
        star = N.boundary(m, float(T.noise_boundary_level()))
        slope = np.polyfit(np.log(ks), np.log([star[int(k)] for k in ks]), 1)[0]
        assert bool(abs(slope - float(T.noise_boundary_slope())) <= 0.05) == want, slope


def test_it_learned(tiny):
    """Learning floor: at the smallest noise the nets are accurate and their radius is the FA radius' order."""
    out, _ = tiny
    ds = load_results(out)
    low = ds.sel({"data.sigma": 0.5})
    assert float(low["robust/binary/clean_acc"].min()) >= 0.95
    loss = ds["records/loss"]
    assert bool((loss.isel(step=-1) < loss.isel(step=0) - 0.05).all())
    assert float((low["robust/binary/r50"] / np.sqrt(400 / low["data.k"])).min()) > 0.5


def test_crossing_sigma_rules():
    from fa_jax_sims.noise_map import crossing_sigma

    s = [1.0, 2.0, 4.0]
    assert crossing_sigma(s, [1.0, 0.8, 0.6], 0.7) == pytest.approx(2.0 * 2 ** 0.5)  # halfway in log sigma
    assert math.isnan(crossing_sigma(s, [1.0, 0.9, 0.8], 0.7))  # never crosses on the grid
    assert math.isnan(crossing_sigma(s, [0.6, 0.5, 0.4], 0.7))  # starts below: no boundary inside the grid
    assert crossing_sigma(s[::-1], [0.6, 0.8, 1.0], 0.7) == pytest.approx(2.0 * 2 ** 0.5)  # any order


def test_shipped_spec_is_one_program_of_2304_runs():
    import pathlib

    spec = load_spec(pathlib.Path(__file__).parents[1] / "sims" / "noise_map.toml")
    cfgs = build_configs(spec)
    assert len(cfgs) == 24 * 24 * 4
    assert len(group_configs(cfgs)) == 1
    ks = sorted({c.data.k for c in cfgs})
    assert len(ks) == 24 and ks[0] == 2 and ks[-1] == 64 and all(c.data.bucket == 64 for c in cfgs)
    assert {c.data.n_pos for c in cfgs if c.data.k == 7} == {3}  # n_pos follows k // 2
