"""The regimes analysis (sims/regimes.py) on a tiny feature-averaging sweep file: every check's measurement is
recomputed here from the labelled results, the figures are written, and the shipped sims/regimes.toml parses
into 288 runs in 12 programs."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fa_jax.results import load_results
from fa_jax.sweep import group_configs
from fa_jax.sweepfile import build_configs, load_spec, parse_spec, run_spec

TINY = {
    "experiment": "feature-averaging", "name": "regimes-tiny", "analysis": "regimes",
    "fixed": {"data.d": 64, "data.k": 4, "data.n_pos": 2, "data.n_train": 64, "data.n_test": 64,
              "model.init_scale": 1e-5, "optim.lr": 1e-3, "train.n_records": 4, "attack.n_points": 32,
              "attack.restarts": 1, "attack.steps": 10, "attack.ce": False, "attack.record_points": 16,
              "attack.flip_grid": 32},
    "axes": {
        "supervision": {"cases": {"binary": {"model.kind": "binary", "model.width": 3, "model.bias": True},
                                  "multiclass": {"model.kind": "multiclass", "model.width": 1,
                                                 "model.bias": False}}},
        "optimizer": {"cases": {"gd": {"optim.name": "gd", "train.steps": 20}}},
        "lr_mult": {"path": "optim.lr", "scale": [1.0, 3.0]},
        "seed": {"range": [0, 2]},
    },
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("regimes")
    res = run_spec(parse_spec(TINY, source="tiny"), out, progress=False)
    return out, res


def test_checks_recomputed_from_results(tiny):
    out, res = tiny
    assert res["stats"]["programs_compiled"] == res["stats"]["n_groups"] == 2
    summ = json.loads((out / "summary.json").read_text())
    checks = {c["name"]: c for c in summ["checks"]}
    assert len(checks) == 4
    ds = load_results(out)
    cell = ds.sel(optimizer="gd", lr_mult=1.0)
    want_b = float(cell["robust/binary/r50"].sel(supervision="binary").mean()) / np.sqrt(64 / 4)
    want_m = float(cell["robust/max/r50"].sel(supervision="multiclass").mean()) / np.sqrt(64 / 2)
    np.testing.assert_allclose(checks["regimes.gd.binary.r50_over_sqrt_d_over_k"]["measured"], want_b, rtol=1e-6)
    np.testing.assert_allclose(checks["regimes.gd.multiclass.r50_over_sqrt_d_over_2"]["measured"], want_m,
                               rtol=1e-6)
    np.testing.assert_allclose(checks["regimes.gd.binary.inblock_cos"]["predicted"], 1 / np.sqrt(2))
    np.testing.assert_allclose(checks["regimes.gd.binary.inblock_cos"]["measured"],
                               float(cell["features/in_mean"].sel(supervision="binary").mean()), rtol=1e-6)
    cells = summ["metrics"]["cells"]
    assert set(cells) == {f"{s}/gd/lr_x{m:g}" for s in ("binary", "multiclass") for m in (1.0, 3.0)}
    for name in summ["metrics"]["figures"]:
        assert os.path.getsize(out / name) > 10_000


def test_shipped_regimes_file_is_one_sweep_of_twelve_programs():
    spec = load_spec(os.path.join(os.path.dirname(__file__), "..", "sims", "regimes.toml"))
    cfgs = build_configs(spec)
    assert len(cfgs) == 288 and spec.shape == (2, 6, 3, 8)
    assert len(group_configs(cfgs)) == 12
    names = {(c.optim.name, c.optim.batch_size) for c in cfgs}
    assert names == {("gd", None), ("sgd", 8), ("sgd", 32), ("sgd", 128), ("adam", None), ("signgd", None)}
    # 100 epochs each: an epoch is one full-batch step or ceil(n / b) mini-batch steps
    assert {c.train.steps / -(-1000 // (c.optim.batch_size or 1000)) for c in cfgs} == {100}
