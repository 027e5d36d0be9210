"""Phase diagrams (``fa-jax plot`` / ``fa_jax.plot_phase``): the heat-map equals the reduced metric computed by hand,
log / categorical axes, diverged and incomplete cells marked, the colour map centred on the theory, and every bad
input a clear error (exit 2, the parameter named) before anything is drawn. One tiny ``linear-regression`` sweep
(one compiled program, 4 chunks) serves every test; the rest use in-memory Datasets. A simulation's folder
(``fa-jax run --out``: run_labelled manifests, dim ``run``) plots one part (``--part``) of one sweep (``--sweep``),
its label keys as axes: a toy of three small programs."""
from __future__ import annotations

import dataclasses
import os
import shutil
import warnings

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from conftest import assert_readable_png, registered, run_doc_block

import fa_jax
from fa_jax.cli import main
from fa_jax.config import traced
from fa_jax.plotting.phase import axis_scale, phase_grid  # importing fa_jax.plotting selects the Agg backend

LRS = [0.01, 0.1, 1.0, 40.0]  # GD on d=4 linear regression: 40 diverges for every seed, the others do not


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    from fa_jax.sweepfile import parse_spec, run_spec

    out = tmp_path_factory.mktemp("phase") / "out"
    spec = parse_spec({
        "experiment": "linear-regression", "name": "tiny-phase",
        "fixed": {"data.d": 4, "data.n_train": 32, "data.n_test": 32, "train.steps": 30, "train.n_records": 3},
        "axes": {"optim.lr": {"values": LRS},
                 "scale": {"cases": {"small": {"init_scale": 0.5}, "large": {"init_scale": 2.0}}},
                 "seed": {"range": [0, 2]}},
        "engine": {"chunk_size": 4},
    }, source="inline")
    run_spec(spec, out, progress=False)
    return str(out)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _final_loss_by_hand(ds):
    """records/test_loss at the last record, median over seeds, as (scale, optim.lr): numpy only."""
    v = ds["records/test_loss"].transpose("optim.lr", "scale", "seed", "step").values[..., -1].astype(float)
    with warnings.catch_warnings():  # the diverged column is all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(v, axis=2).T


def test_cli_writes_the_figure(sweep_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "phase.png"
    rc = main(["plot", sweep_dir, "--x", "optim.lr", "--y", "scale", "--metric", "records/test_loss",
               "--select", "step=-1", "--reduce", "seed=median", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert_readable_png(out)  # the shared style's size: no wide strip (issue 20)


def test_image_is_the_reduced_metric_with_labelled_log_and_category_axes(sweep_dir):
    ds = fa_jax.load_results(sweep_dir)
    ax = fa_jax.plot_phase(sweep_dir, x="optim.lr", y="scale", metric="records/test_loss", select={"step": -1},
                           reduce={"seed": "median"}, cscale="linear")
    img = np.ma.filled(ax.collections[0].get_array().astype(float), np.nan)
    want = _final_loss_by_hand(ds)
    want[~np.isfinite(want)] = np.nan  # non-finite cells are left blank (and marked)
    assert np.isfinite(want[:, :-1]).all()
    np.testing.assert_allclose(img, want, rtol=1e-6, equal_nan=True)
    assert ax.get_xscale() == "log"  # 0.01 ... 40: closer to geometric than arithmetic spacing
    assert [t.get_text() for t in ax.get_yticklabels()] == ["small", "large"]  # cases: categories, swept order
    assert ax.get_xlabel() == "optim.lr" and ax.get_ylabel() == "scale"
    assert ax.get_title() == "tiny-phase: records/test_loss"
    cbar_label = ax.figure.axes[-1].get_ylabel()
    assert "loss" in cbar_label and "median over seed" in cbar_label and "step=30" in cbar_label  # the last record


def test_diverged_cells_marked(sweep_dir):
    ds = fa_jax.load_results(sweep_dir)
    assert ds["diverged"].sel({"optim.lr": 40.0}).all() and not ds["diverged"].sel({"optim.lr": 1.0}).any()
    g = phase_grid(ds, "optim.lr", "scale", "w", reduce={"seed": "mean", "coef": "max"})
    np.testing.assert_array_equal(g.diverged, np.array([[False, False, False, True]] * 2))
    ax = fa_jax.plot_phase(ds, x="optim.lr", y="scale", metric="w", reduce={"seed": "mean", "coef": "max"})
    marks = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert len(marks) == 1
    np.testing.assert_allclose(marks[0].get_xdata(), [40.0, 40.0])
    np.testing.assert_allclose(marks[0].get_ydata(), [0.0, 1.0])
    assert "all runs diverged / NaN" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_incomplete_cells_hatched(sweep_dir, tmp_path, capsys):
    part = tmp_path / "partial"
    shutil.copytree(sweep_dir, part)
    chunk = min(f for f in os.listdir(part / "chunks") if f.endswith(".npz"))
    os.remove(part / "chunks" / chunk)  # 4 of 16 runs missing
    ds = fa_jax.load_results(part, allow_partial=True)
    missing = ~ds["complete"].any("seed").transpose("scale", "optim.lr").values
    assert 0 < missing.sum() < missing.size
    ax = fa_jax.plot_phase(part, x="optim.lr", y="scale", metric="records/test_loss", select={"step": -1},
                           reduce={"seed": "median"})
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == int((~ds["complete"].all("seed")).sum())
    assert "incomplete (runs missing)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert main(["plot", str(part), "--x", "optim.lr", "--y", "scale", "--metric", "records/test_loss",
                 "--select", "step=last", "--reduce", "seed=max", "-o", str(tmp_path / "p.png")]) == 0


def _dataset(lr=(1e-3, 1e-2, 1e-1, 1.0), opts=("gd", "adam", "rmsprop"), seeds=3, nan_cell=None):
    rng = np.random.default_rng(0)
    loss = rng.uniform(0.5, 2.0, (len(opts), len(lr), seeds))
    div = np.zeros(loss.shape, bool)
    if nan_cell is not None:
        loss[nan_cell] = np.nan
        div[nan_cell] = True
    return xr.Dataset({"loss": (("optim.name", "optim.lr", "seed"), loss),
                       "diverged": (("optim.name", "optim.lr", "seed"), div),
                       "complete": (("optim.name", "optim.lr", "seed"), np.ones(loss.shape, bool))},
                      coords={"optim.name": list(opts), "optim.lr": list(lr), "seed": np.arange(seeds)})


def test_in_memory_dataset_categorical_x_and_nan_cells():
    ds = _dataset(nan_cell=(1, 2))  # adam at lr 0.1: every seed diverged
    ax = fa_jax.plot_phase(ds, x="optim.name", y="optim.lr", metric="loss", reduce={"seed": "min"})
    img = np.ma.filled(ax.collections[0].get_array().astype(float), np.nan)
    want = ds["loss"].values.min(axis=2).T  # (lr, optimiser)
    np.testing.assert_array_equal(np.isnan(img), np.isnan(want))
    np.testing.assert_allclose(img[~np.isnan(img)], want[~np.isnan(want)])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gd", "adam", "rmsprop"]
    assert ax.get_yscale() == "log"
    marks = [ln for ln in ax.lines if ln.get_marker() == "x"]
    np.testing.assert_allclose(marks[0].get_xdata(), [1.0])  # category position of adam
    np.testing.assert_allclose(marks[0].get_ydata(), [0.1])


def test_axis_scale_detection():
    assert axis_scale(np.logspace(-3, 1, 9)) == "log"
    assert axis_scale([1, 2, 4, 16]) == "log"  # powers of two with a gap: still closer to geometric
    assert axis_scale(np.linspace(0.1, 1.0, 10)) == "linear"
    assert axis_scale([1, 2, 3]) == "linear"
    assert axis_scale([0, 1, 10, 100]) == "linear"  # a zero: no log axis
    assert axis_scale([0.01, 1.0]) == "log" and axis_scale([1.0, 2.0]) == "linear"
    assert axis_scale(np.array(["gd", "adam"])) == "category"
    assert axis_scale([1, 2, 3], "category") == "category"


def test_theory_value_centres_the_colour_map_and_draws_the_crossing():
    ds = _dataset()
    med = ds["loss"].median("seed")
    t = float(med.median())  # a value inside the data's range: the contour measured = theory exists
    ax = fa_jax.plot_phase(ds, x="optim.lr", y="optim.name", metric="loss", reduce={"seed": "median"},
                           theory=lambda x, y: t)
    norm = ax.collections[0].norm
    assert type(norm).__name__ == "TwoSlopeNorm" and norm.vcenter == t
    assert norm.vmin <= float(med.min()) and norm.vmax >= float(med.max())
    assert "measured = theory" in [x.get_text() for x in ax.get_legend().get_texts()]
    # all measurements above the theory: the centre stays at the theory value
    ax = fa_jax.plot_phase(ds, x="optim.lr", y="optim.name", metric="loss", reduce={"seed": "median"},
                           theory=lambda x, y: 0.1)
    assert ax.collections[0].norm.vcenter == 0.1 and ax.collections[0].norm.vmin < 0.1


def test_theory_grid_and_boundary_from_a_module(tmp_path, monkeypatch, sweep_dir, capsys):
    (tmp_path / "my_theory.py").write_text(
        "import numpy as np\n"
        "def loss(x, y):\n    return 0.5 + 0 * x\n"
        "def edge(x, y):\n    return {'value': 1.0, 'boundary': np.log10(x) + 1.5}\n")
    monkeypatch.chdir(tmp_path)
    ds = _dataset()
    ax = fa_jax.plot_phase(ds, x="optim.lr", y="optim.name", metric="loss", reduce={"seed": "mean"},
                           theory="my_theory:loss")
    img = np.ma.filled(ax.collections[0].get_array().astype(float), np.nan)
    np.testing.assert_allclose(img, ds["loss"].mean("seed").values - 0.5)  # measured - theory, centred on 0
    assert ax.collections[0].norm.vcenter == 0.0
    ax = fa_jax.plot_phase(ds, x="optim.lr", y="seed", metric="loss", select={"optim.name": "gd"},
                           theory="my_theory:edge")
    assert "theory boundary" in [x.get_text() for x in ax.get_legend().get_texts()]
    assert main(["plot", sweep_dir, "--x", "optim.lr", "--y", "scale", "--metric", "records/test_loss",
                 "--select", "step=-1", "--reduce", "seed=median", "--theory", "my_theory:edge",
                 "-o", "t.png"]) == 0, capsys.readouterr().err
    assert (tmp_path / "t.png").stat().st_size > 10_000


BASE = ["--x", "optim.lr", "--y", "scale", "--metric", "records/test_loss", "--select", "step=-1",
        "--reduce", "seed=median"]


def _swap(args, flag, value):
    args = list(args)
    if flag in args:
        i = args.index(flag)
        if value is None:
            del args[i:i + 2]
        else:
            args[i + 1] = value
    else:
        args += [flag, value]
    return args


@pytest.mark.parametrize("flag,value,named", [
    ("--metric", "nope", ["metric='nope'", "records/test_loss", "diverged"]),
    ("--x", "width", ["x='width'", "optim.lr", "scale", "seed"]),
    ("--y", "optim.lr", ["y='optim.lr'"]),
    ("--reduce", "seed=avg", ["reduce", "avg", "median", "mean", "min", "max"]),
    ("--reduce", None, ["reduce", "'seed'", "seed=median|mean|min|max"]),
    ("--select", None, ["'step'", "step=median|mean|min|max"]),
    ("--reduce", "seed=median,coef=max", ["reduce coef", "no such dim", "seed"]),
    ("--select", "step=99", ["select step=", "first", "last"]),
    ("--select", "sted=1", ["select sted", "step"]),
    ("--xscale", "loglog", ["xscale='loglog'", "auto", "linear", "log", "category"]),
    ("--yscale", "log", ["yscale='log'", "'scale'", "category"]),
    ("--cscale", "sqrt", ["cscale='sqrt'", "auto, linear, log"]),
    ("--theory", "no_such_mod:f", ["theory='no_such_mod:f'", "cannot import"]),
    ("-o", "phase.xyz", ["-o/--out='", ".png"]),
])
def test_bad_input_exits_2_naming_the_parameter(sweep_dir, tmp_path, capsys, flag, value, named):
    out = tmp_path / "phase.png"
    args = _swap(["plot", sweep_dir, *BASE, "-o", str(out)], flag, value)
    if flag == "-o":
        args[-1] = str(tmp_path / value)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("fa-jax: error: invalid"), err
    for word in named:
        assert word in err, (word, err)
    assert not any(p.is_file() for p in tmp_path.iterdir()) and not plt.get_fignums()  # nothing drawn


def test_bad_dir_and_python_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "none"), *BASE, "-o", str(tmp_path / "p.png")]) == 2
    assert "DIR=" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"invalid theory=.*shape \(2,\)"):
        fa_jax.plot_phase(_dataset(), x="optim.lr", y="optim.name", metric="loss", reduce="seed=mean",
                          theory=lambda x, y: np.ones(2))
    with pytest.raises(ValueError, match="invalid reduce: 'loss' has 3 values along 'seed'"):
        fa_jax.plot_phase(_dataset(), x="optim.lr", y="optim.name", metric="loss")
    assert not plt.get_fignums()


@pytest.mark.slow
def test_the_sweeps_doc_example_runs(tmp_path, monkeypatch):
    """docs/sweeps.md's phase-diagram block, verbatim: the theory's stability edge over a least-squares sweep."""
    monkeypatch.chdir(tmp_path)
    ns = run_doc_block("sweeps.md", "## Phase diagrams")
    ax, ds = ns["ax"], ns["ds"]
    assert "theory boundary" in [t.get_text() for t in ax.get_legend().get_texts()]
    div = ds["diverged"].all("seed").transpose("data.d", "optim.lr").values
    assert div[:, -1].all() and not div[:, :3].any()  # lr = 3.2 diverges at every d, lr <= 0.32 at none
    assert (tmp_path / "lin_edge.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------- a simulation's folder (fa-jax run)
@dataclasses.dataclass(frozen=True)
class ToyPhase:
    steps: int = 4  # static: records per run
    lr: float = traced(0.1)
    width: float = traced(1.0)
    seed: int = traced(0)


def run_toy_phase(cfg: ToyPhase) -> dict:
    """records/loss (step,) = (1 + seed / 10) |1 - lr width|^t at the record steps plan = 10 t, t = 0..steps-1;
    final = its last value; diverged where lr width > 2 (the engine then NaNs final)."""
    t = jnp.arange(cfg.steps)
    loss = (1.0 + cfg.seed / 10) * jnp.abs(1.0 - cfg.lr * cfg.width) ** t
    return {"records": {"loss": loss}, "plan": 10 * t, "final": loss[-1], "diverged": cfg.lr * cfg.width > 2.0}


TOY_LRS, TOY_WIDTHS = (0.1, 0.5, 1.5), (1.0, 2.0)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    """A simulation-like ``--out`` folder: two run_labelled calls in ``cache/`` (as sgd-vs-adaptive makes).
    ``toy-a``: part ``grid`` (lr x width x seed, 4 records), part ``long`` (seed; 6 records: the grid part's
    records are NaN-padded to 6 in the loaded Dataset), part ``ragged`` (a sparse grid: lr x seed with (0.5, 1)
    missing), part ``dup`` (a label repeated: no grid); ``toy-b``: one part. 3 small programs."""
    import fa_jax.experiments as E
    from fa_jax.sweep import run_labelled

    out = tmp_path_factory.mktemp("sim") / "out"
    grid = [({"lr": lr, "width": w, "seed": s}, ToyPhase(lr=lr, width=w, seed=s))
            for lr in TOY_LRS for w in TOY_WIDTHS for s in (0, 1)]
    runs = {"grid": grid, "long": [({"seed": s}, ToyPhase(steps=6, seed=s)) for s in (0, 1)],
            "ragged": [({"lr": lr, "seed": s}, ToyPhase(lr=lr, seed=s)) for lr, s in ((0.1, 0), (0.1, 1), (0.5, 0))],
            "dup": [({"lr": 0.1, "seed": 0}, ToyPhase(lr=0.1, seed=s)) for s in (0, 1)]}
    with registered(E.Experiment(
            name="toy-phase", config=ToyPhase, run=run_toy_phase, seeds=("seed",),
            dims=(("records/*", ("step",)), ("plan", ("step",))), coords=(("step", "plan"),),
            labels=(("records/loss", "toy loss"),))):
        res, _ = run_labelled(run_toy_phase, runs, out_dir=out / "cache", tag="toy-a", progress=False)
        run_labelled(run_toy_phase, {"only": grid[:4]}, out_dir=out / "cache", tag="toy-b", progress=False)
    return str(out), res


def _toy_by_hand(res, key: str) -> np.ndarray:
    """``key`` of part grid's results (the last record for records/loss), median over seeds, as (width, lr)."""
    cells = {}
    for lab, r in res["grid"]:
        v = np.asarray(r["records"]["loss"])[-1] if key == "loss" else np.asarray(r[key])
        cells.setdefault((lab["width"], lab["lr"]), []).append(float(v))
    return np.array([[np.median(cells[w, lr]) for lr in TOY_LRS] for w in TOY_WIDTHS])


def test_sim_folder_part_labels_become_axes(sim_dir, tmp_path, capsys):
    """--sweep / --part: the part's label keys are dims; its own record steps are the step coordinate (step=-1 is
    its last record, not the NaN padding up to part long's length); the cells equal the results by hand."""
    out, res = sim_dir
    png = tmp_path / "sim.png"
    assert main(["plot", out, "--sweep", "toy-a", "--part", "grid", "--x", "lr", "--y", "width", "--metric",
                 "records/loss", "--select", "step=-1", "--reduce", "seed=median", "-o", str(png)]) == 0, \
        capsys.readouterr().err
    assert_readable_png(png)
    ax = fa_jax.plot_phase(out, sweep="toy-a", part="grid", x="lr", y="width", metric="records/loss",
                           select={"step": -1}, reduce={"seed": "median"})
    img = np.ma.filled(ax.collections[0].get_array().astype(float), np.nan)
    np.testing.assert_allclose(img, _toy_by_hand(res, "loss"), rtol=1e-6)
    assert ax.get_title() == "toy-a [grid]: records/loss" and (ax.get_xlabel(), ax.get_ylabel()) == ("lr", "width")
    assert "toy loss" in ax.figure.axes[-1].get_ylabel() and "step=30" in ax.figure.axes[-1].get_ylabel()
    # a diverged cell (lr width = 3: every seed) is marked; load_results' {tag: Dataset} works as the folder does
    g = phase_grid(fa_jax.load_results(out), "lr", "width", "final", reduce={"seed": "mean"}, sweep="toy-a",
                   part="grid")
    np.testing.assert_array_equal(g.diverged, [[False, False, False], [False, False, True]])
    np.testing.assert_allclose(g.value.values[~g.diverged], _toy_by_hand(res, "final")[~g.diverged], rtol=1e-6)
    # one sweep and one part: neither needs naming
    ds = fa_jax.load_results(out, sweep="toy-b")
    assert ds.sizes["run"] == 4
    ax = fa_jax.plot_phase(ds, x="lr", y="seed", metric="final", reduce={"width": "max"})
    assert ax.collections[0].get_array().shape == (2, 1)


def test_select_runs_gives_each_part_its_own_steps(sim_dir):
    """fa_jax.select_runs (what the plots use): each part's own record steps become its ``step`` coordinate (no
    NaN padding up to the longer part's 6 records); full grids unstack; a sparse grid keeps ``run`` unless asked
    (unstack=True: the missing cell's outputs NaN, nothing missing from the sweep there); repeated labels never
    unstack; grid_parts lists them."""
    from fa_jax.results import grid_parts

    out, res = sim_dir
    ds = fa_jax.load_results(out, sweep="toy-a")
    assert ds.sizes["step"] == 6 and grid_parts(ds) == ["grid", "long"]
    assert grid_parts(ds, full=False) == ["grid", "long", "ragged"]
    grid, long = fa_jax.select_runs(ds, "grid"), fa_jax.select_runs(ds, "long")
    np.testing.assert_array_equal(grid["step"].values, np.asarray(res["grid"][0][1]["plan"]))
    np.testing.assert_array_equal(long["step"].values, np.asarray(res["long"][0][1]["plan"]))
    assert grid.sizes["step"] == 4 and long.sizes["step"] == 6 and "plan" not in grid.data_vars
    assert grid["records/loss"].dims == ("lr", "width", "seed", "step")
    assert not np.isnan(grid["records/loss"].sel(lr=TOY_LRS[0]).isel(step=-1).values).any()
    ragged = fa_jax.select_runs(ds, "ragged")
    assert "run" in ragged.dims and ragged.sizes["step"] == 4
    sparse = fa_jax.select_runs(ds, "ragged", unstack=True)
    assert sparse["final"].dims == ("lr", "seed") and sparse["complete"].dtype == bool
    assert np.isnan(float(sparse["final"].sel(lr=0.5, seed=1))) and bool(sparse["complete"].sel(lr=0.5, seed=1))
    assert not bool(sparse["diverged"].sel(lr=0.5, seed=1))
    by_hand = {(lab["lr"], lab["seed"]): float(np.asarray(r["final"])) for lab, r in res["ragged"]}
    for (lr, sd), v in by_hand.items():
        assert float(sparse["final"].sel(lr=lr, seed=sd)) == pytest.approx(v, rel=1e-6)
        assert bool(sparse["complete"].sel(lr=lr, seed=sd))
    with pytest.raises(ValueError, match=r"invalid unstack=True: the labels \['lr', 'seed'\] of part 'dup' repeat"):
        fa_jax.select_runs(ds, "dup", unstack=True)
    assert "run" in fa_jax.select_runs(ds, "dup").dims


def test_sparse_part_plots_with_its_missing_cell_empty(sim_dir, tmp_path, capsys):
    """A part whose labels form a sparse grid (each combination at most once, e.g. sgd-support's phase part, whose
    b = N column has one seed) plots: its cells are the runs, the missing combination is an empty (masked) cell."""
    out, res = sim_dir
    png = tmp_path / "sparse.png"
    assert main(["plot", out, "--sweep", "toy-a", "--part", "ragged", "--x", "lr", "--y", "seed", "--metric",
                 "final", "-o", str(png)]) == 0, capsys.readouterr().err
    assert_readable_png(png)
    ax = fa_jax.plot_phase(out, sweep="toy-a", part="ragged", x="lr", y="seed", metric="final")
    img = np.ma.filled(ax.collections[0].get_array().astype(float), np.nan)  # (seed, lr)
    want = {(lab["lr"], lab["seed"]): float(np.asarray(r["final"])) for lab, r in res["ragged"]}
    for (lr, sd), v in want.items():
        assert img[sd, [0.1, 0.5].index(lr)] == pytest.approx(v, rel=1e-6)
    assert np.isnan(img[1, 1])  # (lr 0.5, seed 1): no run
    # reduced over the sparse axis: lr 0.5's one seed is its value, and the sweep is complete there
    sub = fa_jax.select_runs(fa_jax.load_results(out, sweep="toy-a"), "ragged", unstack=True)
    assert float(sub["final"].median("seed").sel(lr=0.5)) == pytest.approx(want[(0.5, 0)], rel=1e-6)
    assert bool(sub["complete"].all())


SIM_BASE = ["--sweep", "toy-a", "--part", "grid", "--x", "lr", "--y", "width", "--metric", "final",
            "--reduce", "seed=median"]


@pytest.mark.parametrize("flag,value,named", [
    ("--sweep", None, ["sweep=None", "2 sweeps", "'toy-a' (experiment 'toy-phase')", "'toy-b'", "--sweep TAG"]),
    ("--sweep", "toy-c", ["sweep='toy-c'", "'toy-a'", "'toy-b'", "is not one of them"]),
    ("--part", None, ["part=None", "4 parts", "'grid' (lr, width, seed; 12 runs)", "'long' (seed; 2 runs)",
                      "'ragged' (lr, seed; 3 runs)", "repeat a combination", "'dup' (lr, seed; 2 runs)"]),
    ("--part", "nope", ["part='nope'", "no such part", "'grid'", "'long'", "'ragged'"]),
    ("--part", "dup", ["part='dup'", "(lr, seed) repeat a combination", "allowed one of 'grid'"]),
    ("--x", "step", ["x='step'", "lr, width, seed"]),  # final has no step dim; the label keys are listed
])
def test_sim_folder_bad_input_exits_2_naming_the_parameter(sim_dir, tmp_path, capsys, flag, value, named):
    out = tmp_path / "p.png"
    assert main(_swap(["plot", sim_dir[0], *SIM_BASE, "-o", str(out)], flag, value)) == 2
    err = capsys.readouterr().err
    assert err.startswith("fa-jax: error: invalid"), err
    for word in named:
        assert word in err, (word, err)
    assert not out.exists() and not plt.get_fignums()


def test_sweep_and_part_refused_where_they_do_not_apply(sim_dir):
    """A sweep file's Dataset has no parts and is one sweep: part= / sweep= say so; a {tag: Dataset} works."""
    with pytest.raises(ValueError, match=r"invalid part='grid': data holds no simulation runs"):
        fa_jax.plot_phase(_dataset(), x="optim.lr", y="optim.name", metric="loss", reduce="seed=mean", part="grid")
    with pytest.raises(ValueError, match=r"invalid sweep='toy-a': data is one Dataset"):
        fa_jax.plot_phase(_dataset(), x="optim.lr", y="optim.name", metric="loss", reduce="seed=mean", sweep="toy-a")
    both = fa_jax.load_results(sim_dir[0])
    assert sorted(both) == ["toy-a", "toy-b"]
    with pytest.raises(ValueError, match=r"invalid sweep=None: data holds 2 sweeps"):
        phase_grid(both, "lr", "width", "final", reduce={"seed": "mean"})
    with pytest.raises(ValueError, match=r"invalid sweep='toy-phase'.*matches several"):  # both run toy-phase
        phase_grid(both, "lr", "width", "final", reduce={"seed": "mean"}, sweep="toy-phase")
    g = phase_grid(both, "lr", "width", "final", reduce={"seed": "mean"}, sweep="toy-b")
    assert g.value.shape == (2, 1)  # toy-b: lr 0.1 at both widths
    assert not plt.get_fignums()


def test_plot_help_documents_sweep_and_part(capsys):
    with pytest.raises(SystemExit) as e:
        main(["plot", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("--sweep TAG", "--part PART", "fa-jax run --out", "label keys", "--part sgd --x b --y seed"):
        assert word in text, word
