"""End to end: ``fa-jax run sgd-support --preset quick`` (the one slow test of this module, ~1 min on 2 cores)."""
import json
import math

import pytest

from fa_jax.summary import Check
from fa_jax.theory import sgd_support as T

REQUIRED = {"support.gd.irrelevant_ratio", "support.sgd_b128.irrelevant_ratio", "support.sgd_b32.irrelevant_ratio",
            "support.sgd_b8.irrelevant_ratio", "support.gd_wd.irrelevant_ratio", "support.decay_vs_eta_over_b"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from fa_jax.cli import main

    out = tmp_path_factory.mktemp("ss_quick")
    assert main(["run", "sgd-support", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    with open(out / "summary.json") as f:
        return out, json.load(f)


def test_summary_and_checks(quick_run):
    out, doc = quick_run
    assert doc["sim"] == "sgd-support"
    names = {c["name"] for c in doc["checks"]}
    assert REQUIRED <= names
    for c in doc["checks"]:
        assert c["passed"] == Check(c["name"], float(c["measured"]), float(c["predicted"]), c["tolerance"],
                                    c["mode"], c["provenance"]).passed
    by = {c["name"]: c for c in doc["checks"]}
    assert math.isclose(by["support.gd.irrelevant_ratio"]["predicted"], T.gd_plateau_ratio(15))
    m = doc["metrics"]
    assert m["programs_compiled"] == 4 and m["diverged_runs"] == 0 and m["n_runs"] >= 36 + 10
    for name in m["figures"]:
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_all_checks_pass_on_quick_preset(quick_run):
    _, doc = quick_run
    failed = [c for c in doc["checks"] if not c["passed"]]
    assert not failed, failed


def test_sim_config_errors(tmp_path):
    from sims import sgd_support as S

    with pytest.raises(ValueError, match="batch_sizes"):
        S.run(S.SupportSim(n=50, batch_sizes=(101,)), str(tmp_path))
    with pytest.raises(ValueError, match="data.target"):
        S.run(S.SupportSim(target="cubic"), str(tmp_path))


def test_paper_figure_checks_only_in_the_paper_setting(quick_run):
    """P1-P3 ranges (read off the official figures) are compared only when the run is that setting."""
    import dataclasses

    from sims import sgd_support as S

    assert S.paper_setting(S.PRESETS["default"])
    assert not S.paper_setting(S.PRESETS["quick"])
    assert not S.paper_setting(dataclasses.replace(S.PRESETS["default"], lr=0.2))
    _, doc = quick_run
    assert not any(c["name"].startswith("support.paper.") for c in doc["checks"])
