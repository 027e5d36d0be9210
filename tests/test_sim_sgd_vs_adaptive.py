"""`fa-jax run sgd-vs-adaptive --preset quick` end to end (the linear half in float64, the networks in float32; one
sweep each): the check contract (every check present or listed as not evaluated, every derived check passes, every
paper check finite: its pass/fail is a result), a learning floor (risks below their initial values, network
accuracy well above chance), the figures exist, and bad settings fail before anything compiles."""
from __future__ import annotations

import json
import os

import pytest
from conftest import assert_check_contract

from fa_jax.cli import main
from sims.sgd_vs_adaptive import LINEAR_CHECKS, NET_CHECKS


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptive")
    assert main(["run", "sgd-vs-adaptive", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_quick_preset_checks_and_figures(quick):
    out, doc = quick
    assert doc["sim"] == "sgd-vs-adaptive" and set(doc) >= {"config", "versions", "device", "checks", "metrics"}
    # every check the sim defines is present (or listed as not evaluated); derived ones pass; paper ones are finite
    assert_check_contract(doc, required=LINEAR_CHECKS + NET_CHECKS)
    kinds = {c["name"]: c["kind"] for c in doc["checks"]}
    assert all(kinds[n] == "derived" for n in LINEAR_CHECKS)
    assert {kinds[n] for n in NET_CHECKS} == {"derived", "paper", "paper claim"}
    m = doc["metrics"]
    # learning floor (linear half): every optimiser's standard risk fell below its initial value; the adaptive ones
    # (and GD's slow coordinate aside) converged
    for opt, f in m["final"].items():
        assert f["std_risk"] < 0.7 * f["std_risk_init"], opt
    assert max(m["final"][o]["std_risk"] for o in ("signgd", "adam", "rmsprop")) < 1e-4 * m["std_risk_init"]
    # learning floor (networks): every cell well above chance (4 classes: 0.25) and its training loss well down
    cells = m["nets"]["cells"]
    assert len(cells) == 3
    for name, c in cells.items():
        assert c["clean"] > 0.6 and c["loss_final"] < 0.5 * c["loss_init"], name
        # the largest budgets do hurt (attack and noise are not no-ops)
        assert c["l2"][-1] < c["clean"] and c["linf"][-1] < c["clean"] and c["noise"][-1] < c["clean"], name
    # the comparisons use only the held-out seeds (the lr choice saw the others)
    assert m["nets"]["select_seeds"] == [0] and m["nets"]["held_out_seeds"] == [1]
    assert m["programs_compiled"] <= 16 and m["diverged_runs"] == 0
    assert m["engine_parts"]["nets"]["programs_compiled"] == 1  # quick: the MLP; optimiser and lr are traced
    for name in doc["metrics"]["figures"]:
        assert os.path.getsize(out / name) > 10_000


@pytest.mark.parametrize("setting", ["lr=-0.1", "steps=10", "s2_fracs=0.5", "batch=0", "net_lrs_adam=-1",
                                     "net_archs=resnet", "net_points=5000", "eps_adv=-1", "s2_opts=gd,adamw",
                                     "s2_fracs=0,1.0", "net_frac_irrelevant=1.0",
                                     "net_seeds=1"])
def test_bad_settings_exit_2(tmp_path, setting, capsys):
    assert main(["run", "sgd-vs-adaptive", "--preset", "quick", "--set", setting, "--out", str(tmp_path)]) == 2
    assert "invalid" in capsys.readouterr().err

