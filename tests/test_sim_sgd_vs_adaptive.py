"""`fa-jax run sgd-vs-adaptive --preset quick` end to end (the linear half in float64, the networks in float32; one
sweep each): the check contract (every check present or listed as not evaluated, every derived check passes, every
paper check finite: its pass/fail is a result), a learning floor (risks below their initial values, network
accuracy well above chance), the figures exist, and bad settings fail before anything compiles."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from conftest import assert_check_contract, assert_readable_png
from fa_jax_sims.sgd_vs_adaptive import (
    LINEAR_CHECKS,
    NET_CHECKS,
    PRESETS,
    band_check_names,
    net_grid,
    p10_check_names,
    removal_check_names,
)

from fa_jax.cli import main
from fa_jax.results import load_results, own_records, runs_where, select_runs, stacked


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptive")
    assert main(["run", "sgd-vs-adaptive", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_quick_preset_checks_and_figures(quick):
    out, doc = quick
    assert doc["sim"] == "sgd-vs-adaptive" and set(doc) >= {"config", "versions", "device", "checks", "metrics"}
    # every check the sim defines is present (or listed as not evaluated); derived ones pass; paper ones are finite
    q = PRESETS["quick"]
    band = band_check_names(q)
    assert len(band) == len(q.net_init_scales) >= 2  # one per MLP init scale
    p10, removal = p10_check_names(q), removal_check_names(q)
    assert len(p10) == 3 * len(q.net_init_scales) and len(removal) == 1 + 3 * len(q.net_removal_init_scales)
    assert_check_contract(doc, required=LINEAR_CHECKS + NET_CHECKS + band + p10 + removal)
    kinds = {c["name"]: c["kind"] for c in doc["checks"]}
    assert all(kinds[n] == "derived" for n in LINEAR_CHECKS)
    assert {kinds[n] for n in NET_CHECKS} == {"derived", "paper", "paper claim"}
    assert all(kinds[n] == "paper claim" for n in band + p10 + removal[1:] if n in kinds)
    assert kinds[removal[0]] == "derived"  # Phi_freq inside its domain changes the data by rounding only
    skipped = {c["name"]: c["reason"] for c in doc["not_evaluated"]}
    assert "conv" in skipped["nets.band_noise.conv"]  # the conv net: a reported contrast, with the reason
    # the quick preset keeps every variant of the default (issue 15: smaller, never a variant switched off)
    d = PRESETS["default"]
    assert set(q.net_archs) == set(d.net_archs) and set(q.s2_opts) == set(d.s2_opts)
    assert q.net_init == d.net_init == "torch" and 1.0 in q.net_init_scales and min(q.net_init_scales) < 1.0
    assert d.net_seeds - d.net_select_seeds >= 4  # the default's confidence intervals: >= 4 held-out seeds
    m = doc["metrics"]
    # learning floor (linear half): every optimiser's standard risk fell below its initial value; the adaptive ones
    # (and GD's slow coordinate aside) converged
    for opt, f in m["final"].items():
        assert f["std_risk"] < 0.7 * f["std_risk_init"], opt
    assert max(m["final"][o]["std_risk"] for o in ("signgd", "adam", "rmsprop")) < 1e-4 * m["std_risk_init"]
    # learning floor (networks): every cell above chance (4 classes: 0.25) and its training loss down; the MLP well
    # above (the conv net learns slower in 300 steps: a weaker floor, still far from a frozen net)
    cells = m["nets"]["cells"]
    assert len(cells) == len(net_grid(q)) * 3
    for name, c in cells.items():
        floor, drop = (0.6, 0.5) if name.startswith("mlp") else (0.45, 0.9)
        assert c["clean"] > floor and c["loss_final"] < drop * c["loss_init"], name
        # the largest budgets do hurt (attack and noise are not no-ops)
        assert c["l2"][-1] < c["clean"] and c["linf"][-1] < c["clean"] and c["noise"][-1] < c["clean"], name
        assert c["band_rel"][-1] < c["clean"], name
        if "/sgd/" not in name:  # the adaptive methods move the first layer on the zero-variance band
            assert c["delta_irr"] > 1e-3 * c["delta_total"], name
        elif name.startswith("mlp"):  # SGD does not (derived; float32 rounding)
            assert c["delta_irr"] < 1e-3 * c["delta_total"], name
    # the comparisons use only the held-out seeds (the lr choice saw the others), >= 2 of them for the intervals
    assert m["nets"]["select_seeds"] == [0] and m["nets"]["held_out_seeds"] == [1, 2]
    for name, b in m["nets"]["band_noise"].items():
        assert b["band_irr"]["lo"] <= b["band_irr"]["mean"] <= b["band_irr"]["hi"] and b["band_irr"]["n"] == 2, name
    # the paper's Fig. 4 read-out: noise on the lowest radial band hurts every MLP (not a no-op); the removal runs:
    # removing most of the coefficients (beyond the zero-variance half) does cost SGD clean accuracy
    for name, drops in m["nets"]["radial"].items():
        assert len(drops["sgd"]) == q.net_radial_bands and drops["sgd"][0] > 0.05, name
    assert set(m["nets"]["removal"]) == {f"mlp/init{sc:g}" for sc in q.net_removal_init_scales}
    for name, r in m["nets"]["removal"].items():
        curve = r["clean_vs_removed"][f"sgd/lr{r['sgd_lr']:g}/freq"]
        assert curve["p"] == [0.0, *q.net_removed] and curve["clean"][-1] < curve["clean"][0] - 0.05, name
    assert m["programs_compiled"] <= 18 and m["diverged_runs"] == 0
    assert m["engine_parts"]["nets"]["programs_compiled"] == 2  # one per arch: init scale, optimiser, lr traced
    for name in doc["metrics"]["figures"]:
        assert os.path.getsize(out / name) > 10_000
        assert_readable_png(out / name)


@pytest.mark.parametrize("setting", ["lr=-0.1", "steps=10", "s2_fracs=0.5", "batch=0", "net_lrs_adam=-1",
                                     "net_archs=resnet", "net_points=5000", "eps_adv=-1", "s2_opts=gd,adamw",
                                     "s2_fracs=0,1.0", "net_frac_irrelevant=1.0",
                                     "net_seeds=2", "net_init_scales=0", "net_match_tol=0", "net_removed=100",
                                     "net_removal_init_scales=0.5", "net_radial_bands=0"])
def test_bad_settings_exit_2(tmp_path, setting, capsys):
    assert main(["run", "sgd-vs-adaptive", "--preset", "quick", "--set", setting, "--out", str(tmp_path)]) == 2
    assert "invalid" in capsys.readouterr().err



def test_paired_ci_matches_hand_computation():
    """The band-noise comparisons' interval: mean +- t_{0.975, n-1} sd / sqrt(n), against a hand-typed t quantile
    (t_{0.975, 3} = 3.182446) on differences whose mean and sd are computed here in float64."""
    from fa_jax_sims.sgd_vs_adaptive import paired_ci

    d = [0.01, 0.03, -0.01, 0.05]
    m, sd = sum(d) / 4, math.sqrt(sum((x - 0.02) ** 2 for x in d) / 3)
    ci = paired_ci(d)
    assert ci["mean"] == pytest.approx(m) and ci["n"] == 4
    assert ci["hi"] - ci["mean"] == pytest.approx(3.182446 * sd / 2, rel=1e-6)
    assert ci["mean"] - ci["lo"] == pytest.approx(ci["hi"] - ci["mean"], rel=1e-12)
    with pytest.raises(ValueError, match="diffs"):
        paired_ci([0.1])


def test_metrics_are_computed_from_the_datasets(quick):
    """The summary's metrics are reductions of the labelled Datasets the sim's two sweeps wrote (issue 18): the same
    numbers, to the bit, from a fresh load_results of the sim's folder (its linear and its network runs)."""
    out, doc = quick
    m = doc["metrics"]
    both = load_results(out)  # {tag: Dataset}: one per run_labelled call
    assert set(both) == {"sgd-vs-adaptive", "sgd-vs-adaptive-nets"}
    linear = both["sgd-vs-adaptive"]
    samp = select_runs(linear, "sampled")  # a full grid: (opt, seed, step, frequency)
    for opt in ("gd", "signgd", "adam", "rmsprop"):
        rs = stacked(samp["records/std_risk"].sel(opt=opt).isel(step=-1), "seed")
        assert m["final"][opt]["std_risk"] == float(np.mean(rs)), opt
    # the quick control runs record on two plans (control_steps != steps): each run cut to its own records
    ctrl = select_runs(linear, "control")
    assert "plan" in ctrl.data_vars
    big = own_records(ctrl.sel(what="adam_large_eps"))
    assert m["p7"]["adam_large_eps_adv_risk"] == float(big["records/adv_risk"].values[-1])
    assert m["t1_mc_z"]["n"] == sum(int((linear["part"] == g).sum()) for g in ("sampled", "exact", "s2"))
    nets = select_runs(both["sgd-vs-adaptive-nets"], "nets", unstack=False)  # sparse (lr grids differ): run axis
    cell = runs_where(nets, arch="mlp", init=1.0, opt="sgd", lr=0.1)
    clean = cell["clean_acc"].values.astype(float)
    assert m["nets"]["cells"]["mlp/init1/sgd/lr0.1"]["clean"] == float(np.mean(clean))
    assert m["nets"]["cells"]["mlp/init1/sgd/lr0.1"]["clean_sd"] == float(np.std(clean))
