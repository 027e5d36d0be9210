"""`fa-jax run sgd-vs-adaptive --preset quick` end to end (float64, one sweep): every check passes, the figures
exist, and bad settings fail before anything compiles."""
from __future__ import annotations

import json
import os

import pytest

from fa_jax.cli import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("adaptive")
    assert main(["run", "sgd-vs-adaptive", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_quick_preset_checks_and_figures(quick):
    out, doc = quick
    assert doc["sim"] == "sgd-vs-adaptive" and set(doc) >= {"config", "versions", "device", "checks", "metrics"}
    names = {c["name"] for c in doc["checks"]}
    assert {"adaptive.p1.gd_irrelevant_invariance", "adaptive.p3.signgd_final_w2_exact",
            "adaptive.p7.adv_risk_ordering", "adaptive.p14.dct_basis_signgd_invariance",
            "adaptive.s2.gd_irrelevant_band_invariance"} <= names
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert not failed, failed
    assert doc["metrics"]["programs_compiled"] <= 16 and doc["metrics"]["diverged_runs"] == 0
    for name in doc["metrics"]["figures"]:
        assert os.path.getsize(out / name) > 10_000


@pytest.mark.parametrize("setting", ["lr=-0.1", "steps=10", "s2_fracs=0.5", "batch=0"])
def test_bad_settings_exit_2(tmp_path, setting, capsys):
    assert main(["run", "sgd-vs-adaptive", "--preset", "quick", "--set", setting, "--out", str(tmp_path)]) == 2
    assert "invalid" in capsys.readouterr().err
