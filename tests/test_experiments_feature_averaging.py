"""fa_jax.experiments.feature_averaging: the multi-class net's attacks (its whole-run numbers against the theory are
tested end to end in test_sim_feature_averaging.py; padded == unpadded in test_sweep.py)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import make_fa_config
from fa_jax.experiments.feature_averaging import run_feature_averaging
from fa_jax.sweep import run_sweep


def _multiclass(ce: bool):
    """A multi-class net two steps into training, where the sum and max read-outs disagree on some points."""
    return make_fa_config("multiclass", **{"attack.ce": ce, "train.steps": 2, "model.init_scale": 0.01})


@pytest.fixture(scope="module")
def switched(tmp_path_factory):
    """The run with its four attacks, shared by the tests below; with out_dir its program is lowered afresh (the
    in-memory path would hand a later sweep of the same config this program, whatever the code then says)."""
    (res,) = run_sweep(run_feature_averaging, [_multiclass(True)], out_dir=tmp_path_factory.mktemp("switched"))
    return res


def test_multiclass_attacks_each_use_their_own_readout_and_objective(switched):
    """The four attacks of a multi-class run ((sum, max) x (margin, CE)) walk one PGD loop, each switching to its
    own read-out and objective. A net two steps into training, where the sum and max read-outs disagree on some
    points, pins the switch indices:

    * each attack's clean accuracy, and its robust accuracy at eps = 0, is its read-out's: the fraction of points
      with a positive exact flip radius along v (``flip``, computed outside the switch, from the read-out's name);
    * the margin attacks of a run with the CE attacks equal those of the same run without them (an objective
      index off by one would give them the CE loss), and a CE attack is a different attack (its r50 differs)."""
    r_on, (r_off,) = switched, run_sweep(run_feature_averaging, [_multiclass(False)])
    rob = r_on["robust"]
    assert set(rob) == {"sum", "max", "sum_ce", "max_ce"} and set(r_off["robust"]) == {"sum", "max"}
    clean = {kind: float(np.mean(rob[kind]["flip"] > 0)) for kind in ("sum", "max")}
    assert clean["sum"] != clean["max"]  # the setting tells the read-outs apart (else the checks below cannot fail)
    for kind in ("sum", "max"):
        for name in (kind, f"{kind}_ce"):
            assert float(rob[name]["clean_acc"]) == clean[kind], name
            assert float(rob[name]["acc"][0]) == clean[kind], name  # eps = 0: PGD cannot move
        np.testing.assert_array_equal(rob[kind]["acc"], r_off["robust"][kind]["acc"], err_msg=kind)
        np.testing.assert_allclose(rob[kind]["r50"], r_off["robust"][kind]["r50"], rtol=1e-6, err_msg=kind)
    assert any(abs(float(rob[f"{k}_ce"]["r50"]) - float(rob[k]["r50"])) > 0.05 for k in ("sum", "max"))


def test_multiclass_switched_attacks_equal_the_vmap_over_attacks(switched, monkeypatch, tmp_path):
    """The switched attacks (one PGD loop, each attack computing its own read-out and objective) give the numbers
    of the reference formulation, a vmap over the attacks that computes every read-out and the CE for each and
    selects (``_SWITCH_ATTACKS = False``): every attack's curve, r50 and clean accuracy, bitwise. A wrong branch
    body (e.g. the margin attack ascending the margin) fails here even where the tests above cannot see it."""
    import fa_jax.experiments.feature_averaging as E

    monkeypatch.setattr(E, "_SWITCH_ATTACKS", False)
    (reference,) = run_sweep(run_feature_averaging, [_multiclass(True)], out_dir=tmp_path / "reference")
    assert set(switched["robust"]) == set(reference["robust"]) == {"sum", "max", "sum_ce", "max_ce"}
    for name, curve in reference["robust"].items():
        for field in ("acc", "r50", "r50_censored", "clean_acc"):
            np.testing.assert_array_equal(switched["robust"][name][field], curve[field], err_msg=f"{name}/{field}")
