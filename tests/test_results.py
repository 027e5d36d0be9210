"""fa_jax.load_results: dims, coordinates, NaN padding of outputs whose shape differs between groups, metadata."""
from __future__ import annotations

import json

import numpy as np

from fa_jax.results import load_results
from fa_jax.sweepfile import parse_spec, run_spec


def test_dims_coords_padding_and_metadata(tmp_path):
    spec = parse_spec({
        "experiment": "linear-regression", "name": "ragged",
        "fixed": {"train.steps": 12, "train.n_records": 4},
        "axes": {"seed": {"range": [0, 2]},
                 "shape": {"cases": {"d2": {"data.d": 2}, "d4": {"data.d": 4}}},
                 "lr": {"path": "optim.lr", "values": [0.01, 0.02]}},
    }, source="inline")
    res = run_spec(spec, tmp_path / "out", progress=False)
    assert res["stats"]["n_groups"] == 2  # d is static: two programs
    ds = load_results(tmp_path / "out")
    assert ds["records/loss"].dims == ("seed", "shape", "lr", "step")
    assert ds["w"].dims == ("seed", "shape", "lr", "coef") and ds.sizes["coef"] == 4
    assert list(ds["shape"].values) == ["d2", "d4"] and list(ds["lr"].values) == [0.01, 0.02]
    from fa_jax.trainer import record_plan

    np.testing.assert_array_equal(ds["step"].values, record_plan(12, 4, "log"))
    w2 = ds["w"].sel(shape="d2").values
    assert np.isnan(w2[..., 2:]).all() and np.isfinite(w2[..., :2]).all()  # d=2 runs padded with NaN
    assert np.isfinite(ds["w"].sel(shape="d4").values).all()
    assert ds["complete"].all() and not ds["diverged"].any()
    meta = json.loads(ds.attrs["versions"])
    assert {"jax", "jaxlib", "xarray"} <= set(meta)
    assert json.loads(ds.attrs["device"])["platform"] == "cpu" and "xla_flags" in ds.attrs
    assert len(ds.attrs["spec_hash"]) == 16 and json.loads(ds.attrs["spec"])["name"] == "ragged"
    summ = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summ) >= {"sim", "config", "versions", "device", "checks", "metrics"}
    assert summ["metrics"]["engine"]["programs_compiled"] == 2 and summ["metrics"]["n_runs"] == 8
    assert summ["device"]["matmul_precision"] == json.loads(ds.attrs["device"])["matmul_precision"] == "highest"
