"""Every ``fa-jax run NAME --out DIR`` (every ``run_labelled`` call) writes a manifest that ``fa_jax.load_results``
opens as an ``xarray.Dataset`` (issue 18, item 2): dim ``run``, the part and label keys as coordinates, the outputs
labelled by the registered experiment; opened in a process that cannot import the run function; missing chunks
load with ``allow_partial``; a rerun loads every chunk and rewrites an identical manifest; several run_labelled
calls in one folder give one Dataset each. A real sim's folder (feature-averaging-real's quick run, run twice) is
opened in tests/test_sim_feature_averaging_real.py, whose end-to-end run it shares."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import registered

from fa_jax.manifest import ManifestError, run_manifest_name
from fa_jax.results import load_results, select_runs
from fa_jax.sweep import _flatten, run_labelled

TOY = '''
import dataclasses

import jax
import jax.numpy as jnp

from fa_jax.config import traced
from fa_jax.experiments import Experiment


@dataclasses.dataclass(frozen=True)
class ToyRun:
    n: int = 3  # static: the length of x
    scale: float = traced(1.0)
    seed: int = traced(0)


def run_toy(cfg):
    """x (item,) = scale * N(0, 1); records/loss (item,); count (item,) integers; total (); n = 3 only: lead (2,)."""
    x = cfg.scale * jax.random.normal(jax.random.PRNGKey(cfg.seed), (cfg.n,))
    out = {"x": x, "total": jnp.sum(x), "records": {"loss": jnp.cumsum(x ** 2)}, "count": jnp.arange(cfg.n)}
    if cfg.n == 3:
        out["lead"] = x[:2]
    return out


def run_unregistered(cfg):
    return {"y": cfg.scale * jnp.ones(2)}


TOY = Experiment(name="toy-runs", config=ToyRun, run=run_toy, seeds=("seed",),
                 dims=(("x", ("item",)), ("records/*", ("item",)), ("count", ("item",)), ("lead", ("item",))),
                 labels=(("total", "sum of x"),), units=(("x", "metres"),))
'''


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy module (written to a folder only this process puts on sys.path) and its runs, in two parts of
    different static ``n`` (two programs): part ``a`` a 2 x 3 grid of (scale, seed), part ``b`` one run."""
    mods = tmp_path_factory.mktemp("mods")
    (mods / "toy_runs_mod.py").write_text(TOY)
    sys.path.insert(0, str(mods))
    try:
        import toy_runs_mod as m
    finally:
        sys.path.remove(str(mods))
    runs = {"a": [({"scale": sc, "seed": s}, m.ToyRun(scale=sc, seed=s)) for sc in (0.5, 2.0) for s in (0, 1, 2)],
            "b": [({"n": 5, "name": "wide"}, m.ToyRun(n=5, scale=1.5, seed=7))]}
    return m, runs


@pytest.fixture(scope="module")
def toy_out(toy, tmp_path_factory):
    m, runs = toy
    out = tmp_path_factory.mktemp("toy_out")
    with registered(m.TOY):
        res, eng = run_labelled(m.run_toy, runs, out_dir=out, tag="toy")
    assert eng["programs_compiled"] == 2
    return out, res


def _flat_results(res) -> list[dict]:
    return [_flatten(r) for items in res.values() for _, r in items]


def test_toy_opens_in_a_process_that_cannot_import_it(toy_out, tmp_path):
    """Values equal the returned results exactly (NaN-padded where part b's runs are longer), label coordinates
    per run (NaN / None where a part lacks the key), the registered experiment's dims, labels and units."""
    out, res = toy_out
    assert sorted(os.listdir(out)) == ["chunks", run_manifest_name("toy")]
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        import numpy as np
        import fa_jax
        assert importlib.util.find_spec("toy_runs_mod") is None
        ds = fa_jax.load_results({str(out)!r})
        np.savez({str(tmp_path / "vals.npz")!r}, **{{k: ds[k].values for k in ds.data_vars}})
        print(json.dumps({{"dims": {{k: list(ds[k].dims) for k in ds.data_vars}},
                          "attrs": {{k: dict(ds[k].attrs) for k in ds.data_vars}},
                          "coords": {{k: ds[k].values.tolist() for k in ("run", "part", "scale", "seed", "n", "name",
                                                                        "item")}},
                          "experiment": json.loads(ds.attrs["experiment"])["name"]}}))
        """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    assert doc["experiment"] == "toy-runs"
    assert doc["dims"]["x"] == ["run", "item"] and doc["dims"]["records/loss"] == ["run", "item"]
    assert doc["dims"]["total"] == ["run"] and doc["dims"]["complete"] == ["run"]
    assert doc["attrs"]["x"] == {"units": "metres"} and doc["attrs"]["total"] == {"long_name": "sum of x"}
    c = doc["coords"]
    assert c["run"] == list(range(7)) and c["part"] == ["a"] * 6 + ["b"]
    assert c["scale"][:6] == [0.5] * 3 + [2.0] * 3 and np.isnan(c["scale"][6])
    assert c["seed"][:6] == [0, 1, 2] * 2 and c["n"][6] == 5 and np.isnan(c["n"][0])
    assert np.isnan(c["name"][:6]).all() and c["name"][6] == "wide" and c["item"] == [0, 1, 2, 3, 4]
    vals = np.load(tmp_path / "vals.npz")
    for i, r in enumerate(_flat_results(res)):
        for k, v in r.items():
            v = np.asarray(v)
            got = vals[k][i][tuple(slice(0, s) for s in v.shape)]
            np.testing.assert_array_equal(got, v, err_msg=f"{k} run {i}")  # bitwise
    assert np.isnan(vals["x"][:6, 3:]).all() and np.isnan(vals["count"][:6, 3:]).all()  # padded to part b's 5
    assert vals["complete"].all()


def test_outputs_on_one_dim_are_padded_to_one_length(toy_out):
    """An output that only some runs have, shorter than another output on the same dim (feature-averaging: the CE
    attacks' curves exist only in the main runs, on a shorter eps grid than the phase runs'), is NaN-padded to the
    dim's longest length, not its own (the Dataset could not be built)."""
    out, res = toy_out
    ds = load_results(out)
    lead = ds["lead"].values
    assert ds["lead"].dims == ("run", "item") and lead.shape == (7, 5)
    for i, (_, r) in enumerate(res["a"]):
        np.testing.assert_array_equal(lead[i, :2], r["lead"])
    assert np.isnan(lead[:6, 2:]).all() and np.isnan(lead[6]).all()


def test_select_runs_unstacks_a_full_grid(toy_out):
    out, res = toy_out
    ds = load_results(out)
    a = select_runs(ds, "a")
    assert a["x"].dims == ("scale", "seed", "item") and a["seed"].dtype == np.int64
    assert a["scale"].values.tolist() == [0.5, 2.0] and "n" not in a.coords and "part" not in a.coords
    for lab, r in res["a"]:
        np.testing.assert_array_equal(a["x"].sel(scale=lab["scale"], seed=lab["seed"]).values[:3], r["x"])
    b = select_runs(ds, "b", unstack=False)
    assert b["x"].dims == ("run", "item") and b["name"].values.tolist() == ["wide"] and b["n"].dtype == np.int64
    np.testing.assert_array_equal(b["x"].values[0], res["b"][0][1]["x"])
    with pytest.raises(ValueError, match=r"invalid part='c': allowed one of \['a', 'b'\]"):
        select_runs(ds, "c")
    bare = ds.copy()
    bare.attrs = {}
    with pytest.raises(ValueError, match="holds no labelled runs"):
        select_runs(bare, "a")


def test_missing_chunk_opens_partial_and_missing_manifest_names_the_fix(toy_out, tmp_path):
    import shutil

    out, _ = toy_out
    cut = tmp_path / "cut"  # a sim's --out: the run_labelled folder is its cache/
    shutil.copytree(out, cut / "cache")
    man = json.loads((cut / "cache" / run_manifest_name("toy")).read_text())
    gone = man["plan"][-1]
    os.remove(cut / "cache" / "chunks" / gone["file"])
    with pytest.raises(FileNotFoundError, match=r"1 of 2 chunks missing.*fa-jax run NAME --out"):
        load_results(cut)
    ds = load_results(cut, allow_partial=True)
    lost = np.zeros(7, bool)
    lost[gone["runs"]] = True
    assert (ds["complete"].values == ~lost).all() and np.isnan(ds["total"].values[lost]).all()
    # a folder without any manifest: the sweep error, naming both commands; an old sim folder (chunks only)
    os.remove(cut / "cache" / run_manifest_name("toy"))
    with pytest.raises(FileNotFoundError, match=r"no sweep manifest here.*fa-jax run NAME --out DIR.*rerun the same"):
        load_results(cut)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no sweep manifest here") as e:
        load_results(tmp_path / "empty")
    assert "rerun the same" not in str(e.value)
    # a damaged manifest: named, with the fix
    (cut / "cache" / run_manifest_name("toy")).write_text("{")
    with pytest.raises(ManifestError, match=r"runs\.toy\.json: damaged sweep manifest.*rerun the command"):
        load_results(cut)


def test_two_calls_in_one_folder_and_an_unregistered_run_function(toy, tmp_path):
    """sgd-vs-adaptive's layout: two run_labelled calls (two tags) in one cache folder -> {tag: Dataset}, or the
    one ``sweep=`` names; a run function no experiment names gets generic axis names."""
    m, runs = toy
    run_labelled(m.run_toy, {"a": runs["a"][:2]}, out_dir=tmp_path / "cache", tag="sim")
    run_labelled(m.run_unregistered, {"u": [({"k": 1}, m.ToyRun(scale=3.0))]}, out_dir=tmp_path / "cache",
                 tag="sim-other")
    both = load_results(tmp_path)  # a sim's --out: the manifests are in its cache/ folder
    assert list(both) == ["sim", "sim-other"]
    assert both["sim"]["x"].dims == ("run", "x_dim0")  # the toy is not registered in this test
    one = load_results(tmp_path, sweep="sim-other")
    assert one["y"].dims == ("run", "y_dim0") and one["y"].values.tolist() == [[3.0, 3.0]]
    assert json.loads(one.attrs["experiment"])["name"] == "run_unregistered"
    with pytest.raises(ValueError, match=r"invalid sweep='nope'.*'sim' \(experiment 'run_toy'\)"):
        load_results(tmp_path, sweep="nope")


@pytest.mark.parametrize("bad, match", [
    ([({"s": 0}, None)], r"invalid runs=list"),
    ({1: []}, r"invalid runs key 1"),
    ({"a": [({"s": 0},)]}, r"invalid runs\['a'\]\[0\]"),
    ({"a": [({0: 0}, None)]}, r"invalid runs\['a'\]\[0\]"),
])
def test_bad_runs_are_named(toy, bad, match, tmp_path):
    m, _ = toy
    with pytest.raises(TypeError, match=match):
        run_labelled(m.run_toy, bad, out_dir=tmp_path)
    assert not os.listdir(tmp_path)


