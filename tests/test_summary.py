"""fa_jax.summary: Check modes and the per-seed statistics helper, against hand-computed values."""
from __future__ import annotations

import math

import pytest

from fa_jax.summary import Check, add_check, seed_stats


def test_seed_stats_hand_values_and_nan_policy():
    s = seed_stats([1.0, 2.0, 6.0])
    assert s["mean"] == 3.0 and s["median"] == 2.0 and s["n"] == 3 and s["values"] == [1.0, 2.0, 6.0]
    assert s["std"] == pytest.approx(math.sqrt(14 / 3))
    bad = seed_stats([1.0, float("nan"), 3.0])
    assert math.isnan(bad["mean"]) and math.isnan(bad["median"])  # a diverged seed cannot pass unnoticed
    ok = seed_stats([1.0, float("nan"), 3.0], ignore_nan=True)
    assert ok["mean"] == 2.0 and ok["median"] == 2.0 and ok["std"] == 1.0 and ok["n"] == 3


@pytest.mark.parametrize("mode, measured, passed", [
    ("abs", 1.05, True), ("abs", 1.2, False), ("rel", 1.09, True), ("rel", 1.11, False),
    ("at_least", 0.95, True), ("at_least", 0.85, False), ("at_most", 1.05, True), ("at_most", 1.2, False),
])
def test_check_modes(mode, measured, passed):
    null = 0.0 if mode in ("abs", "rel", "at_least") else 2.0  # a null outside the accepted side
    assert Check("x", measured, 1.0, 0.1, mode, "derived", null=null).passed is passed
    assert Check("x", float("nan"), 1.0, 0.1, mode, "derived", null=null).passed is False


# ---- falsifiable by construction (fa_jax.summary module docstring) ----

@pytest.mark.parametrize("mode, predicted, tol, null", [
    ("abs", 0.05, 0.1, 0.0),        # absolute tolerance wider than the predicted value: 0 passes
    ("abs", 0.966, 0.2, 1.0),       # "W1 never moved" (ratio 1) inside +-0.2 of sqrt(1 - 1/h)
    ("rel", 0.5, 1.0, 0.0),         # rel tolerance 1 admits 0
    ("at_most", 0.8, 0.0, 0.0),     # "ends below the plateau": a run that collapsed to 0 passes
    ("at_least", 0.0, 0.0, 0.0),    # "at least 0": anything non-negative passes
    ("rel", 1.0, 0.1, 1.05),        # a ratio to init of 1 +- 10 %: "no change" (1.05) passes
])
def test_check_refuses_a_tolerance_that_admits_its_null(mode, predicted, tol, null):
    with pytest.raises(ValueError, match="check 'x'"):
        Check("x", predicted, predicted, tol, mode, "derived", null=null)


def test_check_admits_only_falsifiable_rows():
    # the same checks made falsifiable: relative tolerance, and a null the tolerance excludes
    assert Check("x", 0.97, 0.966, 0.05, "rel", "derived", null=1.5).passed
    assert not Check("x", 1.0, 0.8, 0.1, "rel", "derived", null=1.0).passed
    assert Check("x", 1e-3, 0.0, 1e-2, "abs", "derived", null=1.0).passed  # p = 0 needs a non-zero null
    with pytest.raises(ValueError, match="admits the null"):
        Check("x", 0.0, 0.0, 1e-2, "abs", "derived", null=5e-3)  # a null inside the band is refused
    with pytest.raises(ValueError, match="admits the null"):
        Check("x", 0.0, 0.0, 1e-2, "at_most", "derived")  # default null 0 passes "at most 0.01"
    with pytest.raises(ValueError, match="needs a note"):
        Check("x", 1.0, 1.0, 0.1, "rel", "derived", null=None)
    ok = Check("x", 1.0, 1.0, 0.1, "rel", "derived", note="closed form vs exact float64 evaluation", null=None)
    assert ok.passed and ok.to_json()["null"] is None


@pytest.mark.parametrize("prov, kind", [
    ("derived", "derived"), ("paper (Fig. 3, P2)", "paper"), ("paper claim (Sec. 4, unverified)", "paper claim"),
    ("code (official utils.py)", "code"), ("paper(Fig. 1)", "paper"),
])
def test_check_provenance_kinds(prov, kind):
    c = Check("x", 1.0, 1.0, 0.1, "rel", prov)
    assert c.kind == kind and c.to_json()["kind"] == kind


@pytest.mark.parametrize("prov", ["paper+derived", "inferred", "", "derivedish"])
def test_check_refuses_unknown_provenance(prov):
    with pytest.raises(ValueError, match="provenance"):
        Check("x", 1.0, 1.0, 0.1, "rel", prov)


@pytest.mark.parametrize("bad", [dict(mode="approx"), dict(predicted=float("nan")), dict(tolerance=-0.1),
                                 dict(tolerance=float("inf"))])
def test_check_refuses_bad_fields(bad):
    kw = dict(name="x", measured=1.0, predicted=1.0, tolerance=0.1, mode="rel", provenance="derived") | bad
    with pytest.raises(ValueError, match="check 'x'"):
        Check(**kw)


def test_summary_lists_checks_not_evaluated_and_refuses_duplicates(tmp_path):
    import json

    from fa_jax.summary import write_summary

    c = Check("a", 1.0, 1.0, 0.1, "rel", "derived")
    doc = write_summary(tmp_path / "s.json", sim="t", config={}, checks=[c], metrics={},
                        not_evaluated={"b": "needs >= 3 widths"})
    assert doc["not_evaluated"] == [{"name": "b", "reason": "needs >= 3 widths"}]
    assert json.loads((tmp_path / "s.json").read_text())["checks"][0]["kind"] == "derived"
    with pytest.raises(ValueError, match="duplicate"):
        write_summary(tmp_path / "s2.json", sim="t", config={}, checks=[c, c], metrics={})


def test_add_check_lists_a_non_finite_prediction_as_not_evaluated():
    """A setting where the theory's value overflows (GD's exact power at a diverging learning rate) gives a check
    listed as not evaluated, with the value and the measurement; every other invalid check still raises."""
    checks, skipped = [], {}
    add_check(checks, skipped, "t2.w1", 9.93, 9.93, 0.01, "abs", "derived (T2)", "", null=0.0)
    assert [c.name for c in checks] == ["t2.w1"] and checks[0].passed
    add_check(checks, skipped, "t2.w1_divergent", float("nan"), -math.inf, 0.01, "abs", "derived (T2)", "", null=0.0)
    assert len(checks) == 1 and "prediction is -inf" in skipped["t2.w1_divergent"]
    with pytest.raises(ValueError, match="abs tolerance"):  # a defect of the check: still an error
        add_check(checks, skipped, "bad", 1.0, 0.001, 0.01, "abs", "derived (T2)", "", null=1.0)
