"""fa_jax.load_results: dims, coordinates, NaN padding of outputs whose shape differs between groups, metadata."""
from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import registered

from fa_jax.config import traced
from fa_jax.experiments import Experiment
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


@dataclasses.dataclass(frozen=True)
class GridRun:
    n: int = 4  # static: the grid's length
    scale: float = traced(1.0)


def run_grid(cfg):
    """grid (g,) the same in every run; acc (g,) = scale * grid; a run with scale > 10 reports itself diverged."""
    grid = jnp.linspace(0.0, 1.0, cfg.n)
    return {"grid": grid, "acc": cfg.scale * grid, "diverged_step": jnp.where(cfg.scale > 10, 3, -1)}


GRID = Experiment(name="grid-toy", config=GridRun, run=run_grid, dims=(("grid", ("g",)), ("acc", ("g",))),
                  coords=(("g", "grid"),))


def test_a_diverged_run_carries_no_coordinate(tmp_path):
    """The sweep NaNs a diverged run's floating outputs, its grid included: load_results keeps the grid the other
    runs share as the coordinate (a diverged run used to demote it to a per-run variable, and the sims that read it
    as one failed); own_coord gives a part whose every run diverged its grid from the config."""
    from fa_jax.results import own_coord, select_runs
    from fa_jax.sweep import run_labelled

    runs = {"ok": [({"scale": sc}, GridRun(scale=sc)) for sc in (1.0, 2.0, 100.0)],
            "dead": [({"scale": sc}, GridRun(scale=sc)) for sc in (50.0, 200.0)]}
    with registered(GRID):
        run_labelled(run_grid, runs, out_dir=tmp_path / "out", tag="grid")
        ds = load_results(tmp_path / "out", sweep="grid")
    grid = np.linspace(0.0, 1.0, 4)
    assert ds["g"].dims == ("g",) and "grid" not in ds.data_vars
    np.testing.assert_allclose(ds["g"].values, grid, rtol=1e-6)
    assert ds["diverged"].values.tolist() == [False, False, True, True, True]
    ok = select_runs(ds, "ok")
    np.testing.assert_allclose(ok["acc"].values[:2], [grid, 2 * grid], rtol=1e-6)
    assert np.isnan(ok["acc"].values[2]).all()  # the diverged run: marked, its outputs NaN

    # own_coord: a part's grid from its runs, or from its config where no run carries it
    import xarray as xr

    def part(eps):
        return xr.Dataset({"eps": (("seed", "eps"), eps), "acc": (("seed", "eps"), eps * 0)})

    padded = np.full((3, 7), np.nan)  # load_results pads to the sweep's longest grid
    dead = own_coord(part(padded), "eps", grid)
    np.testing.assert_array_equal(dead["eps"].values, grid)
    assert dead["acc"].shape == (3, 4) and np.isnan(dead["acc"].values).all()
    alive = padded.copy()
    alive[1, :4] = grid.astype(np.float32)
    np.testing.assert_array_equal(own_coord(part(alive), "eps", grid)["eps"].values, grid.astype(np.float32))
    alive[1, :4] *= 2
    with pytest.raises(ValueError, match="'eps' values differ from the config"):
        own_coord(part(alive), "eps", grid)
