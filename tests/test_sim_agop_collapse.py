"""`fa-jax run agop-collapse --preset quick` end to end (one sweep, two compiled programs): every check passes
(Deep RFM NC1 falls with depth and stops without the AGOP, NFA rises, U leaves NC1 unchanged, ...), the figures
exist, and bad settings (including an n whose kernel matrix cannot fit) fail before anything compiles."""
from __future__ import annotations

import json
import os

import pytest

from fa_jax.cli import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("agop")
    assert main(["run", "agop-collapse", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_quick_preset_checks_and_figures(quick):
    out, doc = quick
    assert doc["sim"] == "agop-collapse" and set(doc) >= {"config", "versions", "device", "checks", "metrics"}
    checks = {c["name"]: c for c in doc["checks"]}
    for name in ("agop.p1.deep_rfm_nc1_ratio_last_first", "agop.p3.control_no_collapse",
                 "agop.p11.nfa_rise_min_over_layers", "agop.p10.u_invariance", "agop.p6.one_step_ridgeless_nc1",
                 "agop.p9.frac_right_min", "agop.p2.agop_projection_min_factor"):
        assert name in checks, name
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert not failed, failed
    m = doc["metrics"]
    assert m["programs_compiled"] <= 2 and m["diverged_runs"] == 0
    assert len(m["grid"]) == 6 and len(m["deep_rfm"]["nc1_x"]) == 8
    for name in m["figures"]:
        assert os.path.getsize(out / name) > 10_000


@pytest.mark.parametrize("setting,param", [("depth=2", "depth"), ("p6_n_per_class=100", "p6_n_per_class"),
                                           ("n_per_class=200000", "invalid n="), ("feature=tanh", "rfm.feature")])
def test_bad_settings_exit_2(tmp_path, setting, param, capsys):
    assert main(["run", "agop-collapse", "--preset", "quick", "--set", setting, "--out", str(tmp_path)]) == 2
    assert param in capsys.readouterr().err
