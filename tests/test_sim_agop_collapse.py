"""`fa-jax run agop-collapse --preset quick` end to end: the check contract (every required check present or listed
as not evaluated, finite measurements, every derived check passes), a learning floor (the small-init MLP's training
accuracy well above chance and its loss below the initial loss; Deep RFM NC1 falls and the control does not), every
variant runs at quick scale (the cosine-RFF gamma sweep over every gamma, the non-orthogonal mixture, the image
runs, both MLP gains; the NFA's AGOP over all n points), the figures exist; ``geometric_fit`` and the gamma-sweep /
seed summaries against independent float64 references; bad settings (including an n whose kernel matrix cannot
fit) fail before anything compiles."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_check_contract, assert_readable_png

from fa_jax.cli import main

SIM_FILE = Path(__file__).resolve().parents[1] / "sims" / "agop_collapse.py"

REQUIRED = (
    "agop.p1.deep_rfm_nc1_ratio_last_first", "agop.p1.deep_rfm_monotone_fraction",
    "agop.p2.agop_projection_min_factor", "agop.p3.feature_map_max_increase", "agop.p3.control_no_collapse",
    "agop.p4.deep_rfm_nc2_ratio_last_first", "agop.p4.nonorth_nc2_ratio_last_first",
    "agop.p4.nonorth_control_nc2_ratio_last_first", "agop.p4.image_control_nc2_ratio_last_first",
    "agop.p6.one_step_ridgeless_nc1", "agop.p6.one_step_monotone_in_ridge",
    "agop.p6.one_step_closed_form", "agop.p7.semilog_fit_r2", "agop.p14.agop_topk_trace_fraction",
    "agop.p1.cos_rff_deep_rfm_nc1_ratio_last_first", "agop.p3.cos_rff_control_no_collapse",
    "agop.p1.image_deep_rfm_nc1_ratio_last_first", "agop.p3.image_control_no_collapse",
    "agop.p4.image_nc2_ratio_last_first", "agop.p9.svt_reduces_nc1_every_layer", "agop.p9.frac_right_min",
    "agop.p10.u_invariance", "agop.p11.nfa_rise_fraction", "agop.p11.nfa_final_min", "agop.p11.nfa_rise_layer1",
    "agop.p11.nfa_rise_layer2", "agop.p11.nfa_rise_layer3",
    "agop.p11.half_above_one_fraction", "agop.p12.nc1_decreases_with_layer", "agop.p12.sw_over_st_drop",
    "agop.p12.sb_over_st_rise_ratio", "agop.p13.nfa_drop_at_large_init", "agop.p13.frac_right_drop_at_large_init",
)
DERIVED = ("agop.p6.one_step_ridgeless_nc1", "agop.p6.one_step_monotone_in_ridge", "agop.p6.one_step_closed_form",
           "agop.p10.u_invariance")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("agop")
    assert main(["run", "agop-collapse", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_quick_preset_contract_and_learning_floor(quick):
    out, doc = quick
    assert doc["sim"] == "agop-collapse" and set(doc) >= {"config", "versions", "device", "checks", "metrics"}
    assert_check_contract(doc, required=REQUIRED)
    checks = {c["name"]: c for c in doc["checks"]}
    # the quick preset is the same experiment: every variant runs, every check is evaluated
    assert set(REQUIRED) <= set(checks), sorted(set(REQUIRED) - set(checks))
    assert doc["not_evaluated"] == []
    assert {checks[n]["kind"] for n in DERIVED} == {"derived"}
    m = doc["metrics"]
    assert m["programs_compiled"] <= 4 and m["image_runs"] == "ran"
    # only ridgeless grid points may diverge (a singular kernel once the features collapse); no check reads them
    bad = [(g["ridge"], g["bandwidth"]) for g in m["grid"] if g["diverged"]]
    assert m["diverged_runs"] == len(bad) and all(r == 0.0 for r, _ in bad), bad
    # learning floor: the MLP learned (accuracy well above chance 1/K, loss below its initial value) ...
    small = m["mlp"]["small"]
    k = doc["config"]["k"]
    assert small["train_acc"][-1] >= 1.0 / k + 0.5 and small["train_acc"][-1] > small["train_acc"][0]
    assert small["loss"][-1] < 0.5 * small["loss"][0]
    # ... and Deep RFM collapses while its M = I control does not
    dr = m["deep_rfm"]
    assert dr["nc1_x"][-1] < 1e-2 * dr["nc1_x"][0] and dr["control_nc1_x"][-1] > 0.5 * dr["control_nc1_x"][0]
    assert len(m["grid"]) == 6 and len(dr["nc1_x"]) == doc["config"]["depth"]
    assert {"cos", "cos_control", "cos_gamma_sweep", "nonorth", "nonorth_control", "image", "image_control"} <= set(dr)
    # the quick preset sweeps the default's gammas (fewer seeds) and checks P1 at the official scripts' gamma
    sweep, cfg = dr["cos_gamma_sweep"], doc["config"]
    assert sweep["gammas"] == [0.02, 0.05, 0.1, 0.2, 2.0] and cfg["cos_gamma"] == sweep["official_gamma"] == 0.05
    assert [len(v) for v in sweep["nc1_ratio_per_seed"]] == [cfg["cos_seeds"]] * 5 and cfg["cos_seeds"] >= 2
    assert checks["agop.p1.cos_rff_deep_rfm_nc1_ratio_last_first"]["measured"] == pytest.approx(
        sweep["nc1_ratio_median"][sweep["gammas"].index(0.05)])
    # P4 can fail on the chained-means mixture: its input NC2 is well above the orthonormal mixture's
    assert dr["nonorth"]["nc2_x"][0] > 3 * dr["nc2_x"][0] and dr["nonorth"]["population_nc2"] > 0.1
    # the NFA's AGOP over all n training points; per-layer rises are final minus at-init, as recorded
    assert cfg["n_agop"] == cfg["k"] * cfg["n_per_class"]
    per = small["nfa_per_layer"]
    np.testing.assert_allclose(per["rise_half"], np.asarray(small["nfa_half"])[-1] - np.asarray(small["nfa_half"])[0])
    for j, rise in enumerate(per["rise_half"]):
        assert checks[f"agop.p11.nfa_rise_layer{j + 1}"]["measured"] == pytest.approx(rise)
    assert small["nfa_half_final_last_layer"] == np.asarray(small["nfa_half"])[-1, -1]
    for name in m["figures"]:
        assert os.path.getsize(out / name) > 10_000
        assert_readable_png(out / name)


def test_no_literal_predictions_in_the_sim():
    """Every ``Check(...)``'s predicted value (3rd positional or ``predicted=``) is computed, never a number literal."""
    tree = ast.parse(SIM_FILE.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Check"]
    assert len(calls) >= 20
    for call in calls:
        pred = call.args[2] if len(call.args) > 2 else next(k.value for k in call.keywords if k.arg == "predicted")
        lit = isinstance(pred, ast.Constant) or (isinstance(pred, ast.UnaryOp) and isinstance(pred.operand,
                                                                                               ast.Constant))
        assert not lit, f"line {call.lineno}: literal prediction {ast.unparse(pred)}"
        prov = call.args[5] if len(call.args) > 5 else next(k.value for k in call.keywords if k.arg == "provenance")
        assert "provenance" in ast.unparse(prov), f"line {call.lineno}: provenance not from the theory module"


# ------------------------------------------------------------------------------------------------ geometric_fit
def _ref_fit(y, floor):
    """Independent float64 reference: ordinary least squares of log y on l by the normal equations."""
    y = np.asarray(y, np.float64)
    layers = np.arange(1, len(y) + 1, dtype=np.float64)
    keep = np.isfinite(y) & (y > floor)
    lx, ly = layers[keep], np.log(y[keep])
    a = np.stack([np.ones_like(lx), lx], 1)
    (icpt, slope) = np.linalg.solve(a.T @ a, a.T @ ly)
    res = ly - a @ np.array([icpt, slope])
    r2 = 1.0 - res @ res / np.sum((ly - ly.mean()) ** 2)
    return np.exp(slope), np.exp(icpt), r2, int(keep.sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_geometric_fit_matches_a_float64_reference(seed):
    from fa_jax_sims.agop_collapse import geometric_fit

    rng = np.random.default_rng(seed)
    y = 3.0 * 0.4 ** np.arange(1, 31) * np.exp(0.3 * rng.standard_normal(30))
    y[5] = np.nan  # non-finite layers are skipped
    fit = geometric_fit(y, floor=1e-10)  # 0.4^l falls below 1e-10 after layer ~25: those layers are dropped
    rho, c, r2, n = _ref_fit(y, 1e-10)
    assert n < 29 and fit["n"] == n
    np.testing.assert_allclose([fit["rho"], fit["c"], fit["r2"]], [rho, c, r2], rtol=1e-10)
    assert 0.3 < fit["rho"] < 0.5 and 0.9 < fit["r2"] < 1.0


def test_geometric_fit_exact_and_degenerate_cases():
    from fa_jax_sims.agop_collapse import geometric_fit

    fit = geometric_fit(5.0 * 0.5 ** np.arange(1, 11))
    assert fit["rho"] == pytest.approx(0.5, rel=1e-12) and fit["c"] == pytest.approx(5.0, rel=1e-12)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(geometric_fit(np.full(8, 2.0))["r2"])  # no collapse: no trend, no R^2 (it cannot pass P7)
    assert geometric_fit([1.0, 1e-12, 1e-13, 1e-14])["n"] == 1  # fewer than 3 layers above the floor
    assert np.isnan(geometric_fit([1.0, 1e-12, 1e-13, 1e-14])["rho"])


def test_cos_sweep_and_stage_curves_match_a_float64_reference():
    """``_cos_sweep`` (per-gamma seed ratios, median / min / max) and ``_stage_curves`` (geometric mean over seeds,
    per-seed ratios) on synthetic per-layer results (a Dataset laid out as load_results lays out the sweep's: dim
    run, coordinate gamma, outputs layers/<stage>/<metric> on rfm_layer), against plain numpy written here."""
    import xarray as xr
    from fa_jax_sims.agop_collapse import PRESETS, _cos_sweep, _stage_curves

    rng = np.random.default_rng(3)
    s = PRESETS["quick"]
    gammas = (0.02, 0.05, 0.1, 0.2, 2.0)

    def fake():
        stage = lambda: {"nc1": np.exp(rng.normal(size=6)), "nc2": np.exp(rng.normal(size=6))}
        return {"layers": {"x": stage(), "z": stage(), "phi": stage()}}

    runs = [({"what": "cos", "gamma": g, "seed": k}, fake()) for g in gammas for k in range(s.cos_seeds)]

    def dataset(rs):
        out = {f"layers/{st}/{key}": (("run", "rfm_layer"), np.stack([r["layers"][st][key] for _, r in rs]))
               for st in ("x", "z", "phi") for key in ("nc1", "nc2")}
        return xr.Dataset(out, coords={"gamma": ("run", [lab["gamma"] for lab, _ in rs])})

    sweep = _cos_sweep(s, dataset(runs))
    for i, g in enumerate(gammas):
        ratios = [r["layers"]["x"]["nc1"][-1] / r["layers"]["x"]["nc1"][0] for lab, r in runs if lab["gamma"] == g]
        assert sweep["nc1_ratio_per_seed"][i] == pytest.approx(ratios, rel=1e-14)
        srt = sorted(ratios)
        mid = (srt[(len(srt) - 1) // 2] + srt[len(srt) // 2]) / 2
        assert (sweep["nc1_ratio_median"][i], sweep["nc1_ratio_min"][i], sweep["nc1_ratio_max"][i]) == \
            pytest.approx((mid, srt[0], srt[-1]), rel=1e-14)
    rs = [r for _, r in runs[:3]]
    cur = _stage_curves(dataset(runs[:3]))
    for stage, key, name in (("x", "nc1", "nc1_x"), ("z", "nc1", "nc1_z"), ("x", "nc2", "nc2_x")):
        prod = np.prod([r["layers"][stage][key] for r in rs], axis=0)
        np.testing.assert_allclose(cur[name], prod ** (1 / 3), rtol=1e-12)
    assert cur["nc2_ratio_last_first_per_seed"] == pytest.approx(
        [r["layers"]["x"]["nc2"][-1] / r["layers"]["x"]["nc2"][0] for r in rs], rel=1e-14)


@pytest.mark.parametrize("setting,param", [("depth=2", "depth"), ("p6_n_per_class=100", "p6_n_per_class"),
                                           ("n_per_class=200000", "invalid k/n_per_class=800000"),
                                           ("feature=tanh", "invalid feature="),
                                           ("nonorth_cosine=1.0", "nonorth_cosine"), ("cos_gammas=0.1,-1", "cos_gamma")])
def test_bad_settings_exit_2(tmp_path, setting, param, capsys):
    assert main(["run", "agop-collapse", "--preset", "quick", "--set", setting, "--out", str(tmp_path)]) == 2
    assert param in capsys.readouterr().err


def test_sim_metrics_are_computed_from_the_dataset(quick):
    """The summary's metrics are reductions of the labelled Dataset that load_results opens (issue 18): the same
    numbers, to the bit, from a fresh load of the sim's folder (the image runs cut to their depth, the MLP part
    unstacked by gain, the grid in the sim's order of its runs)."""
    from fa_jax.results import load_results, select_runs, stacked

    out, doc = quick
    m, cfg = doc["metrics"], doc["config"]
    ds = load_results(out)
    rfm = ds.isel(run=np.flatnonzero(ds["part"].values == "rfm"))
    x = stacked(rfm["layers/x/nc1"].isel(run=np.flatnonzero(rfm["what"].values == "main")), "run")  # [seed, layer]
    assert x.shape == (cfg["rfm_seeds"], cfg["depth"])
    assert m["deep_rfm"]["nc1_x"] == np.exp(np.mean(np.log(x), 0)).tolist()
    assert m["deep_rfm"]["nc1_ratio_last_first_per_seed"] == (x[:, -1] / x[:, 0]).tolist()
    img = rfm["layers/x/nc2"].values[rfm["what"].values == "image"]  # [1, rfm_layer]: NaN beyond image_depth
    assert cfg["image_depth"] < cfg["depth"] and np.isnan(img[0, cfg["image_depth"]:]).all()
    assert m["deep_rfm"]["image"]["nc2_x"] == np.exp(np.mean(np.log(img[:, :cfg["image_depth"]]), 0)).tolist()
    mlp = select_runs(ds, "mlp")  # dims (gain, step, layer)
    small = mlp.sel(gain=cfg["mlp_gain"])
    assert m["mlp"]["small"]["plan"] == small["step"].values.tolist()
    assert m["mlp"]["small"]["nfa_half"] == small["records/nfa_half"].values.tolist()
    assert m["mlp"]["large"]["frac_right_final"] == \
        mlp["records/frac_right"].sel(gain=cfg["mlp_gain_large"]).values[-1].tolist()
    grid = select_runs(ds, "grid", unstack=False)
    assert [(g["ridge"], g["bandwidth"]) for g in m["grid"]] == list(zip(grid["ridge"].values.tolist(),
                                                                         grid["bandwidth"].values.tolist()))
    final = grid["layers/x/nc1"].values[:, cfg["depth"] - 1]
    assert [g["diverged"] for g in m["grid"]] == grid["diverged"].values.tolist()
    assert [g["final_nc1"] for g in m["grid"] if not g["diverged"]] == final[~grid["diverged"].values].tolist()


def test_images_are_shared_inputs_not_program_constants():
    """The quick preset's image Deep RFM program takes the standardised images as an unbatched argument (issue 18
    item 4: the sweep engine's shared inputs), never as a constant in its text; the mixture runs have no shared
    inputs (``{}``), so their programs are those of a sweep without ``shared``. Lowering only."""
    import jax
    from fa_jax_sims import agop_collapse as sim

    from fa_jax import sweep as S
    from fa_jax.config import static_key
    from fa_jax.experiments.agop_collapse import run_agop_collapse, shared_collapse_data

    runs = sim.build_runs(sim.PRESETS["quick"].validate())
    cfg = next(c for _, c in runs["rfm"] if c.data.source != "mixture")
    assert S._shared_inputs(shared_collapse_data, runs["rfm"][0][1]) is None
    assert S._shared_inputs(shared_collapse_data, runs["mlp"][0][1]) is None
    arrays = shared_collapse_data(cfg)
    with jax.enable_x64(True):  # as the sim runs
        low = S._lower(run_agop_collapse, static_key(cfg), cfg, 1, tuple(jax.local_devices()[:1]),
                       shared=S._shared_inputs(shared_collapse_data, cfg))
    text = low.lowered.as_text()
    main_line = next(line for line in text.splitlines() if "func.func public @main" in line)
    x_type = "tensor<" + "x".join(map(str, arrays["x"].shape)) + "xf64>"
    assert x_type in main_line  # an argument of the program
    assert not any("constant" in line and x_type in line for line in text.splitlines())
    assert "optimization_barrier" not in text  # only constant data needed it
