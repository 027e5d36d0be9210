"""fa_jax.summary: Check modes and the per-seed statistics helper, against hand-computed values."""
from __future__ import annotations

import math

import pytest

from fa_jax.summary import Check, seed_stats


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
    assert Check("x", measured, 1.0, 0.1, mode, "derived").passed is passed
    assert Check("x", float("nan"), 1.0, 0.1, mode, "derived").passed is False
