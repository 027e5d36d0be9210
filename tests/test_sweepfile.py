"""TOML sweep files: parsing, errors before compilation, grouping (compiles = groups), resume/overwrite,
memory-aware chunking, divergence isolation, determinism. Uses the cheap ``linear-regression`` experiment
(compiles in about a second) except where the feature-averaging model itself is the point."""
from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import write_spec as write

from fa_jax import sweep as S
from fa_jax.experiments.linear import run_linear
from fa_jax.results import load_results
from fa_jax.sweepfile import SpecError, build_configs, load_spec, parse_spec, run_spec

LIN = """
experiment = "linear-regression"
name = "lin"
[fixed]
"data.d" = 3
"data.n_train" = 32
"train.steps" = 40
"train.n_records" = 5
[axes]
seed = { range = [0, 3] }
"optim.lr" = [0.01, 0.05]
[axes.opt.cases]
gd = { "optim.name" = "gd" }
sgd_b8 = { "optim.name" = "sgd", "optim.batch_size" = 8 }
"""


# ----------------------------------------------------------------------------- parsing and grid expansion
def test_axes_forms_and_order(tmp_path):
    spec = load_spec(write(tmp_path, """
        experiment = "linear-regression"
        [fixed]
        data = { d = 5 }
        [axes]
        a = { path = "optim.lr", logspace = [-3, -1, 3] }
        "data.noise" = { linspace = [0.0, 1.0, 3] }
        seed = { range = [2, 8, 3] }
        m = { path = "optim.lr", scale = [1, 10] }
        optim.batch_size = { values = [4, 8] }
        [axes.opt.cases]
        sgd = { "optim.name" = "sgd" }
    """))
    assert [a.name for a in spec.axes] == ["a", "data.noise", "seed", "m", "optim.batch_size", "opt"]
    np.testing.assert_allclose(spec.axes[0].coords, [1e-3, 1e-2, 1e-1])
    np.testing.assert_allclose(spec.axes[1].coords, [0.0, 0.5, 1.0])
    assert spec.axes[2].coords == (2, 5)
    cfgs = build_configs(spec)
    assert len(cfgs) == spec.n_runs == 3 * 3 * 2 * 2 * 2 * 1
    # last axis fastest; the scale axis multiplies the value the value axis set; seed sets both seeds
    c = cfgs[0]
    assert (c.data.d, c.optim.name, c.optim.batch_size) == (5, "sgd", 4)
    assert cfgs[1].optim.batch_size == 8
    assert cfgs[2].optim.lr == pytest.approx(1e-2) and cfgs[0].optim.lr == pytest.approx(1e-3)
    assert (c.data_seed, c.model_seed) == (2, 2)
    last = cfgs[-1]
    assert last.optim.lr == pytest.approx(1.0) and last.data.noise == 1.0 and last.data_seed == 5


def test_python_entry_point_equals_file(tmp_path):
    import tomllib

    path = write(tmp_path, LIN)
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    assert build_configs(parse_spec(doc)) == build_configs(load_spec(path))


@pytest.mark.parametrize("text, pattern", [
    ('experiment = "linear-regression"\n[axes\nx = 1', r"malformed TOML"),
    ('experiment = "nope"', r"experiment.*allowed one of .*linear-regression"),
    ('[fixed]\n"data.d" = 3', r"missing key 'experiment'"),
    ('experiment = "linear-regression"\n[axes]\n"optim.lrr" = [0.1]', r"unknown key 'optim.lrr'.*did you mean optim\.lr"),
    ('experiment = "linear-regression"\n[fixed]\n"data.dd" = 3', r"unknown key 'data.dd' in \[fixed\]"),
    ('experiment = "linear-regression"\n[axes]\n"optim.lr" = []', r"axis 'optim.lr' is empty"),
    ('experiment = "linear-regression"\n[axes]\nseed = { range = [3, 3] }', r"axis 'seed' is empty"),
    ('experiment = "linear-regression"\n[axes]\n"optim.lr" = { logspace = [-3, -1] }', r"axis 'optim.lr': invalid logspace"),
    ('experiment = "linear-regression"\n[axes]\n"optim.lr" = { values = [1], range = [2] }', r"exactly one of"),
    ('experiment = "linear-regression"\n[engine]\nbucket = "odd"', r"engine.bucket.*allowed"),
    ('experiment = "linear-regression"\n[engine]\nchunks = 3', r"unknown key 'engine.chunks'"),
    ('experiment = "linear-regression"\nfoo = 1', r"unknown top-level key 'foo'"),
])
def test_spec_errors_name_file_and_key(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(SpecError, match=pattern) as e:
        build_configs(load_spec(path))
    assert str(e.value).startswith(path)


@pytest.mark.parametrize("text, pattern", [
    # an axis that cannot change the runs of the chosen optimiser
    ('[axes]\n"optim.b1" = [0.8, 0.9]', r"'optim.b1' does not apply .* only adam uses it, not 'gd'"),
    ('[fixed]\n"optim.name" = "sgd"\n"optim.batch_size" = 8\n[axes]\n"optim.momentum" = [0.5]',
     r"'optim.momentum' does not apply"),
    # an invalid grid point: named, with the offending field and its allowed range
    ('[axes]\n"optim.lr" = [0.1, -1.0]', r"grid point \(optim.lr=-1.0\): invalid optim.lr=-1.0: allowed"),
    ('[axes.o.cases]\nbig = { "optim.name" = "sgd", "optim.batch_size" = 1000 }',
     r"grid point \(o='big'\).*optim.batch_size.*<= n_train = 64"),
    # the traced optimiser axis (docs/sweeps.md): an unknown optimiser in the traced list
    # an unknown optimiser in the traced list
    ('[axes]\n"optim.name" = ["sgd", "lion"]\n[engine]\noptimizer = "traced"',
     r"grid point \(optim.name='lion'\): invalid optim.name='lion': allowed one of"),
    ('[fixed]\n"optim.choices" = ["sgd", "lion"]\n[axes]\n"optim.name" = ["sgd"]',
     r"invalid optim.choices=\('sgd', 'lion'\): allowed distinct names from .*unknown: 'lion'"),
    ('[fixed]\n"optim.choices" = ["sgd", "adam"]\n[axes]\n"optim.name" = ["sgd", "rmsprop"]',
     r"invalid optim.name='rmsprop': allowed one of optim.choices"),
    # a traced optimiser axis whose entries change the batch size (shapes): named, with the way out
    (('[axes.opt.cases]\ngd = { "optim.name" = "gd" }\nsgd_b8 = { "optim.name" = "sgd", "optim.batch_size" = 8 }'
      '\n[engine]\noptimizer = "traced"'),
     (r"invalid optim.batch_size: axis 'opt' traces the optimiser .* 'gd' and 'sgd_b8' set optim.batch_size = None "
      r"and 8 .* give optim.batch_size its own axis")),
    ('[engine]\noptimizer = "dynamic"', r"invalid engine.optimizer='dynamic'; allowed one of \('static', 'traced'\)"),
])
def test_grid_errors_before_any_compilation(tmp_path, text, pattern):
    path = write(tmp_path, 'experiment = "linear-regression"\n' + text)
    traces = S.STATS.traces
    with pytest.raises(SpecError, match=pattern):
        run_spec(path, tmp_path / "out", progress=False)
    assert S.STATS.traces == traces
    assert not (tmp_path / "out" / "sweep.json").exists()


# ----------------------------------------------------------------------------- grouping and compilation
def test_compiles_equal_groups_not_grid_points(tmp_path):
    res = run_spec(write(tmp_path, LIN), tmp_path / "out", progress=False)
    st = res["stats"]
    assert st["n_runs"] == 12 and st["n_groups"] == 2  # (gd, sgd b=8): lr and seed are traced
    assert st["programs_compiled"] == st["n_groups"]
    ds = load_results(tmp_path / "out")
    assert dict(ds.sizes)["seed"] == 3 and list(ds["opt"].values) == ["gd", "sgd_b8"]
    # an equal new grid point set does not recompile: rerun with other lr values in a new directory
    res2 = run_spec(write(tmp_path, LIN.replace("[0.01, 0.05]", "[0.02, 0.03]"), "b.toml"), tmp_path / "o2",
                    progress=False)
    assert res2["stats"]["programs_compiled"] == 0


def test_width_bucket_policy_groups_widths():
    """feature-averaging: 'max' pads every width to the largest (one program), 'exact' one per width."""
    doc = {"experiment": "feature-averaging", "axes": {"model.width": [2, 3, 5]},
           "fixed": {"data.d": 64, "data.k": 4, "data.n_pos": 2}}
    from fa_jax.sweep import group_configs

    exact = build_configs(parse_spec(doc))
    assert len(group_configs(exact)) == 3 and [c.model.bucket for c in exact] == [2, 3, 5]
    top = build_configs(parse_spec({**doc, "engine": {"bucket": "max"}}))
    assert len(group_configs(top)) == 1 and {c.model.bucket for c in top} == {5}
    p2 = build_configs(parse_spec({**doc, "engine": {"bucket": "pow2"}}))
    assert [c.model.bucket for c in p2] == [2, 4, 8]


def test_dependent_defaults_follow_their_driver_per_grid_point():
    """data.n_pos follows data.k // 2 as with --set: unless [fixed] or the grid point's case / axis sets it; an
    explicit bad value keeps its named error."""
    small = {"data.d": 16, "data.n_train": 16, "data.n_test": 8, "attack.n_points": 8, "attack.record_points": 8}

    def split(fixed, axes):
        return [(c.data.k, c.data.n_pos) for c in build_configs(parse_spec({"experiment": "feature-averaging",
                                                                            "fixed": {**small, **fixed},
                                                                            "axes": axes}))]

    assert split({"data.k": 4}, {"seed": [0]}) == [(4, 2)]
    assert split({}, {"data.k": [2, 7, 16]}) == [(2, 1), (7, 3), (16, 8)]
    assert split({"data.n_pos": 1}, {"data.k": [2, 8]}) == [(2, 1), (8, 1)]  # [fixed] wins at every point
    cases = {"a": {"data.k": 4, "data.n_pos": 3}, "b": {"data.k": 8}}
    assert split({}, {"k": {"cases": cases}}) == [(4, 3), (8, 4)]  # a case's own value wins in that case only
    with pytest.raises(SpecError, match=r"\[fixed\]: invalid data\.n_pos=4: allowed 1 <= n_pos <= k-1 = 3"):
        split({"data.k": 4, "data.n_pos": 4}, {"seed": [0]})


def test_shipped_sweep_resolves_to_its_committed_config():
    """sims/regimes.toml builds the configs its committed summary records (spec hash and base config): the
    dependent defaults change nothing it set (fields added since, absent from the record, are left out)."""
    import dataclasses
    import json
    import pathlib

    from fa_jax.summary import to_jsonable
    from fa_jax.sweepfile import spec_hash

    root = pathlib.Path(__file__).resolve().parents[1]
    rec = json.loads((root / "figures" / "regimes" / "summary.json").read_text())["config"]
    spec = load_spec(root / "sims" / "regimes.toml")
    assert spec_hash(spec) == rec["spec_hash"]
    base = json.loads(json.dumps(to_jsonable(dataclasses.asdict(build_configs(spec)[0]))))
    assert {g: {k: base[g][k] for k in v} if isinstance(v, dict) else base[g] for g, v in rec["base"].items()} \
        == rec["base"]


# ----------------------------------------------------------------------------- results, resume, overwrite
def test_results_match_direct_runs_and_closed_form(tmp_path):
    """A sweep-file run equals run_linear called alone; GD follows w_t - w_ls = (I - lr S)^t (w_0 - w_ls)."""
    import jax

    from fa_jax.experiments.linear import make_linear_data

    path = write(tmp_path, LIN)
    run_spec(path, tmp_path / "out", progress=False)
    ds = load_results(tmp_path / "out")
    cfgs = build_configs(load_spec(path))
    alone = S.run_sweep(run_linear, [cfgs[5]])[0]
    # grid point 5 = (seed 1, lr 0.01, sgd_b8): last axis fastest
    cell = ds.isel(seed=1).sel({"optim.lr": 0.01, "opt": "sgd_b8"})
    np.testing.assert_allclose(cell["w"].values, alone["w"], rtol=1e-6, atol=1e-7)
    # closed form for GD (float64 reference of the same data)
    c = cfgs[0]
    # one small jitted program (op by op, its ~20 operations would each compile)
    data = jax.tree.map(np.asarray, jax.jit(lambda k: make_linear_data(k, c.data))(jax.random.PRNGKey(c.data_seed)))
    x, y = data["train"]["x"].astype(np.float64), data["train"]["y"].astype(np.float64)
    s = x.T @ x / len(x)
    w_ls = np.linalg.solve(s, x.T @ y / len(x))
    gd = ds.isel(seed=0).sel({"optim.lr": 0.01, "opt": "gd"})
    w0 = gd["w0"].values.astype(np.float64)
    for t, wt in zip(ds["step"].values, gd["records/w"].values, strict=True):
        want = w_ls + np.linalg.matrix_power(np.eye(3) - 0.01 * s, int(t)) @ (w0 - w_ls)
        np.testing.assert_allclose(wt, want, rtol=1e-4, atol=1e-5)


def test_resume_recomputes_only_missing_chunks(tmp_path):
    path = write(tmp_path, LIN)
    out = tmp_path / "out"
    # one run per chunk: the single-run programs other tests here compile anyway (the direct run of
    # test_results_match_direct_runs_and_closed_form, the chunk_size=1 sweep of the bitwise test)
    run_spec(path, out, progress=False, chunk_size=1)
    before = load_results(out)
    files = sorted(os.listdir(out / "chunks"))
    assert len(files) == 2 * 6  # 6 runs per group, 1 per chunk
    os.remove(out / "chunks" / files[0])
    res = run_spec(path, out, progress=False)  # the recorded plan (chunk 1) is reused
    assert res["stats"]["chunks_run"] == 1 and res["stats"]["chunks_loaded"] == 11
    after = load_results(out)
    for k in before.data_vars:
        np.testing.assert_array_equal(before[k].values, after[k].values, err_msg=k)


def test_changed_spec_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    run_spec(write(tmp_path, LIN), out, progress=False)
    old = load_results(out)
    # a new learning rate (traced: the same two programs, nothing compiles) makes it a different sweep
    changed = write(tmp_path, LIN.replace("[0.01, 0.05]", "[0.01, 0.5]"), "changed.toml")
    with pytest.raises(SpecError, match="different sweep.*--overwrite"):
        run_spec(changed, out, progress=False)
    res = run_spec(changed, out, progress=False, overwrite=True)
    new = load_results(out)
    assert res["complete"] and list(new["optim.lr"].values) == [0.01, 0.5]
    assert len(os.listdir(out / "chunks")) == 2  # the old chunks are gone
    # the results are the new sweep's: its lr = 0.5 runs are not the old lr = 0.05 ones; the runs both sweeps
    # share (lr = 0.01, same programs and chunk positions) are bitwise the old ones
    assert not np.array_equal(new["w"].sel({"optim.lr": 0.5}).values, old["w"].sel({"optim.lr": 0.05}).values)
    np.testing.assert_array_equal(new["w"].sel({"optim.lr": 0.01}).values, old["w"].sel({"optim.lr": 0.01}).values)


def test_load_results_refuses_incomplete(tmp_path):
    out = tmp_path / "out"
    run_spec(write(tmp_path, LIN), out, progress=False, chunk_size=1)  # single-run programs, as above
    os.remove(out / "chunks" / min(os.listdir(out / "chunks")))
    with pytest.raises(FileNotFoundError, match="1 of 12 chunks missing"):
        load_results(out)
    ds = load_results(out, allow_partial=True)
    assert int(ds["complete"].sum()) == 11 and np.isnan(ds["w"].values).any()


# ----------------------------------------------------------------------------- memory-aware chunking
def test_memory_budget_splits_a_group_and_results_agree(tmp_path):
    from fa_jax.sweepfile import build_configs as bc

    cfgs = bc(load_spec(write(tmp_path, LIN)))
    gd = [c for c in cfgs if c.optim.name == "gd"]
    whole = S.plan_chunks(run_linear, gd, chunk_size="auto")
    assert [len(p.runs) for p in whole] == [6]
    compiled, _ = S._program(run_linear, whole[0].key, gd[0], 6, tuple(__import__("jax").local_devices()))
    foot = S._footprint(compiled)
    assert foot and foot > 0
    resized = S.STATS.resized_groups
    small = S.plan_chunks(run_linear, gd, chunk_size="auto", budget=foot // 3)
    assert S.STATS.resized_groups == resized + 1
    assert max(len(p.runs) for p in small) <= 2 and sum(len(p.runs) for p in small) == 6
    a = S.run_sweep(run_linear, gd, plans=whole)
    b = S.run_sweep(run_linear, gd, plans=small)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x["w"], y["w"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(x["records"]["loss"], y["records"]["loss"], rtol=1e-6, atol=1e-7)


def test_a_run_too_large_for_the_budget_is_refused_before_it_runs(tmp_path):
    """One run per device is the floor of the automatic chunk size: a run whose footprint exceeds the budget (an
    explicit one here; by default the device's capacity) is refused while planning, naming the sizes, instead of
    failing at allocation with XLA's RESOURCE_EXHAUSTED (issue 21: FA at d = 2**30 asked for 2e13 bytes)."""
    from fa_jax.sweepfile import build_configs as bc

    gd = [c for c in bc(load_spec(write(tmp_path, LIN))) if c.optim.name == "gd"]
    run0 = S.STATS.chunks_run
    with pytest.raises(S.RunTooLargeError, match=r"invalid run size: one run needs .* GiB per device, more than "
                                                  r".* GiB \(the memory budget passed\)"):
        S.run_sweep(run_linear, gd, memory_budget_bytes=64)
    assert S.STATS.chunks_run == run0  # nothing ran


def test_memory_budget_is_a_fraction_of_capacity_not_of_free_memory(monkeypatch):
    full = S.memory_budget(fraction=1.0)
    half = S.memory_budget(fraction=0.5)
    assert full > 0 and abs(half - full / 2) <= 0.05 * full
    with pytest.raises(ValueError, match="fraction"):
        S.memory_budget(fraction=0.0)
    # The plan must not depend on what else the machine is doing: a chunk size is part of the program, and a
    # different program rounds differently. Holding 1 GiB more (or less) changes nothing.
    hog = np.ones(1 << 27)  # 1 GiB
    assert S.memory_budget(fraction=0.5) == half
    del hog


# ----------------------------------------------------------------------------- divergence, determinism
def test_one_unstable_lr_is_marked_and_isolated(tmp_path):
    """lr = 5 makes GD on this least-squares problem blow up (at step 29 of 40); its chunk-mates are bitwise what
    they are beside a stable run in its place. 2 seeds x 3 learning rates: 6 runs per group, LIN's two programs
    (the bitwise comparison is within one program; nothing new compiles)."""
    spec = LIN.replace("[0.01, 0.05]", "[0.01, 5.0, 0.05]").replace("range = [0, 3]", "range = [0, 2]")
    out = tmp_path / "out"
    run_spec(write(tmp_path, spec), out, progress=False)
    ds = load_results(out).sel(opt="gd")
    bad = ds.sel({"optim.lr": 5.0})
    assert bad["diverged"].all() and (bad["diverged_step"] > 0).all()
    assert np.isnan(bad["w"].values).all()  # final metrics NaN
    step = int(bad["diverged_step"].values[0])
    rec = bad["records/loss"].values[0]
    before = ds["step"].values <= step
    assert np.isfinite(rec[before]).all() and np.isnan(rec[~before]).all()  # records kept up to divergence
    good = ds.sel({"optim.lr": [0.01, 0.05]})
    assert not good["diverged"].any() and (good["diverged_step"] == -1).all()
    ref_out = tmp_path / "ref"
    run_spec(write(tmp_path, spec.replace("[0.01, 5.0, 0.05]", "[0.01, 0.02, 0.05]"), "ref.toml"), ref_out,
             progress=False)
    ref = load_results(ref_out).sel(opt="gd").sel({"optim.lr": [0.01, 0.05]})
    assert not ref["diverged"].any()
    np.testing.assert_array_equal(good["w"].values, ref["w"].values)


def test_same_sweep_twice_is_bitwise_identical_and_chunking_only_reassociates(tmp_path):
    path = write(tmp_path, LIN)
    run_spec(path, tmp_path / "a", progress=False)
    run_spec(path, tmp_path / "b", progress=False)
    run_spec(path, tmp_path / "c", progress=False, chunk_size=1)
    a, b, c = (load_results(tmp_path / x) for x in "abc")
    for k in a.data_vars:
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)
        if np.issubdtype(a[k].dtype, np.floating):
            np.testing.assert_allclose(a[k].values, c[k].values, rtol=1e-6, atol=1e-7, err_msg=k)
        else:
            np.testing.assert_array_equal(a[k].values, c[k].values, err_msg=k)


# ----------------------------------------------------------------------------- progress
def test_one_step_callback_per_segment_not_per_run():
    import tomllib

    from fa_jax import progress
    from fa_jax.sweepfile import parse_spec as ps

    # LIN's GD group: one chunk of 6 runs (3 seeds x 2 lrs), the program the tests above compiled
    cfgs = [c for c in build_configs(ps(tomllib.loads(LIN))) if c.optim.name == "gd"]
    assert len(cfgs) == 6
    calls = []
    with progress.sink(lambda s, t: calls.append((s, t))):
        S.run_sweep(run_linear, cfgs)  # one chunk of 6 runs
    plan = cfgs[0].train
    from fa_jax.trainer import record_plan

    # the trainer's segments: an empty one (0, 0) that records the initial state, then one per later record
    steps = record_plan(plan.steps, plan.n_records, plan.plan)
    assert len(steps) >= 4 and sorted(calls) == [(s, plan.steps) for s in steps]  # once per segment, all 6 runs


def test_progress_bar_runs_and_quiet_prints_nothing(tmp_path, capsys):
    path = write(tmp_path, LIN)
    run_spec(path, tmp_path / "q", progress=False)
    err = capsys.readouterr().err
    assert "runs" not in err
    run_spec(path, tmp_path / "p", progress=True)
    err = capsys.readouterr().err
    assert "12/12 runs" in err and err.count("lin:") >= 1


def test_run_labelled_keeps_labels_and_order(tmp_path):
    cfgs = build_configs(load_spec(write(tmp_path, LIN)))
    # every run, shuffled between two labelled parts: 6 GD (even i) and 6 SGD runs (odd i), LIN's two programs
    runs = {"a": [({"i": i}, cfgs[i]) for i in (0, 3, 7, 10)],
            "b": [({"i": i}, cfgs[i]) for i in (5, 1, 2, 4, 11, 9, 6, 8)]}
    res, eng = S.run_labelled(run_linear, runs)
    direct = S.run_sweep(run_linear, cfgs)
    for part, items in res.items():
        assert [lab for lab, _ in items] == [lab for lab, _ in runs[part]]
        for lab, r in items:
            np.testing.assert_array_equal(r["w"], direct[lab["i"]]["w"])
    assert eng["n_runs"] == 12 and eng["diverged_runs"] == 0 and eng["wall_seconds"] > 0


def test_python_api_never_substitutes_a_default_for_an_explicit_bad_value(tmp_path):
    """issue 21: run_spec(chunk_size=0) used to mean 'auto' (`chunk_size or ...`), plan_chunks(max_chunk=0) 'no
    cap', and run_spec into a file raised a raw FileExistsError; each is now a named error before compiling."""
    spec = write(tmp_path, LIN)
    with pytest.raises(ValueError, match=r"invalid chunk_size=0"):
        run_spec(spec, tmp_path / "a", progress=False, chunk_size=0)
    cfgs = build_configs(load_spec(spec))
    with pytest.raises(ValueError, match=r"invalid max_chunk=0"):
        S.plan_chunks(run_linear, cfgs, max_chunk=0, files=False)
    (tmp_path / "f").write_text("not a folder")
    with pytest.raises(SpecError, match=r"invalid out_dir=.*this is a file"):
        run_spec(spec, tmp_path / "f", progress=False)


# ----------------------------------------------------------------------------- the optimiser as a traced axis
OPT_GRID = """
experiment = "linear-regression"
name = "opt-grid"
[fixed]
"data.d" = 3
"data.n_train" = 32
"train.steps" = 30
"train.n_records" = 4
[axes]
"optim.name" = ["gd", "momentum", "adam", "rmsprop", "signgd"]
"optim.lr" = [0.01, 0.05]
seed = { range = [0, 2] }
"""


def test_spec_hash_covers_a_traced_optimizer_only(tmp_path):
    """engine.optimizer = "traced" changes the numbers (to float rounding), so it is part of what a sweep IS: a
    rerun into the same folder with it switched is a different sweep (refused without --overwrite); chunking
    settings and an explicit "static" keep the hash (so every existing spec keeps its hash)."""
    from fa_jax.sweepfile import spec_hash

    def h(engine: str) -> str:
        return spec_hash(load_spec(write(tmp_path, OPT_GRID + engine, f"s{len(engine)}.toml")))

    base = h("")
    assert h('[engine]\noptimizer = "static"\n') == base
    assert h("[engine]\nmax_chunk = 4\n") == base
    assert h('[engine]\noptimizer = "traced"\n') != base


def test_traced_optimizer_grid_is_one_program_and_equals_static(tmp_path):
    """engine.optimizer = "traced": an optimiser x lr x seed grid (20 runs) is ONE compiled program (the static
    mode compiles one per rule); results load with the optimiser as a labelled axis and equal the static sweep's to
    float32 rounding (rtol 1e-5). Measured on the loaded 2-core CPU: traced 8 s (1 program), static 29 s (5)."""
    traces = S.STATS.traces
    res = run_spec(write(tmp_path, OPT_GRID + '[engine]\noptimizer = "traced"\n'), tmp_path / "t", progress=False)
    assert S.STATS.traces - traces == 1
    assert res["stats"]["n_groups"] == 1 and res["stats"]["programs_compiled"] == 1
    ds = load_results(tmp_path / "t")
    names = ["gd", "momentum", "adam", "rmsprop", "signgd"]
    assert list(ds["optim.name"].values) == names and dict(ds.sizes)["optim.lr"] == 2 and dict(ds.sizes)["seed"] == 2
    # the static mode, for two of the rules (each rule is its own program there; all five: tests/test_optim.py)
    two = ["momentum", "adam"]
    static = run_spec(write(tmp_path, OPT_GRID.replace(str(names).replace("'", '"'), str(two).replace("'", '"')),
                            "static.toml"), tmp_path / "s", progress=False)
    assert static["stats"]["n_groups"] == 2 and static["stats"]["programs_compiled"] == 2
    ref = load_results(tmp_path / "s")
    assert list(ref["optim.name"].values) == two
    for var in ("w", "records/loss", "records/test_loss"):
        np.testing.assert_allclose(ds[var].sel({"optim.name": two}).values, ref[var].values, rtol=1e-5, atol=1e-7,
                                   err_msg=var)
    final = ds["records/loss"].isel(step=-1, seed=0, **{"optim.lr": 1})
    assert len(set(np.round(final.values, 7))) == 5  # five different rules, not one rule five times
    # a new lr x seed grid over the same rules reuses the compiled program
    again = run_spec(write(tmp_path, OPT_GRID.replace("[0.01, 0.05]", "[0.02, 0.03]")
                           + '[engine]\noptimizer = "traced"\n', "b.toml"), tmp_path / "t2", progress=False)
    assert again["stats"]["programs_compiled"] == 0


def test_traced_optimizer_cases_and_fixed_choices(tmp_path):
    """A labelled cases axis traces too; ``optim.choices`` in [fixed] is the explicit form (same configs); a batch
    size axis beside a traced optimiser axis keeps one program per batch size."""
    cases = """
        experiment = "linear-regression"
        [fixed]
        "data.n_train" = 32
        [axes]
        "optim.batch_size" = [8, 16]
        [axes.optimizer.cases]
        sgd = { "optim.name" = "sgd" }
        heavy_ball = { "optim.name" = "momentum", "optim.momentum" = 0.5 }
        adam = { "optim.name" = "adam", "optim.b1" = 0.8 }
    """
    auto = build_configs(load_spec(write(tmp_path, cases + '[engine]\noptimizer = "traced"\n')))
    assert {c.optim.choices for c in auto} == {("sgd", "momentum", "adam")}
    explicit = build_configs(load_spec(write(tmp_path, cases.replace(
        '"data.n_train" = 32', '"data.n_train" = 32\n"optim.choices" = ["sgd", "momentum", "adam"]'), "e.toml")))
    assert explicit == auto
    assert len(S.group_configs(auto)) == 2


def test_traced_optimizer_needs_an_optim_config(tmp_path):
    with pytest.raises(SpecError, match=r"engine.optimizer = 'traced': experiment 'adaptive-nets' has no optim.name"):
        load_spec(write(tmp_path, 'experiment = "adaptive-nets"\n[engine]\noptimizer = "traced"\n'))
