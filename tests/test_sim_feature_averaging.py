"""End to end: the quick preset of ``fa-jax run feature-averaging`` writes a valid summary and figures.

This is the one slow test (~1.5 min on 2 cores): it runs the whole sim once and every assertion below reads
its outputs.
"""
import json
import math

import numpy as np
import pytest
from conftest import assert_check_contract, assert_readable_png

from fa_jax.config import apply_overrides
from fa_jax.summary import KINDS

REQUIRED_CHECKS = ("fa.cosine_in_block", "fa.cosine_class_sum", "fa.group_collapse", "fa.flip_radius", "fa.radius50",
                   "fa.pgd_acc_0.7", "fa.pgd_acc_1.0", "fa.pgd_acc_1.5", "fd.cosine_diag", "fd.cosine_off_diag",
                   "fd.radius50", "ratio.radius50", "clean_accuracy", "fa.attack_direction", "fa.grad_cosine",
                   "fa.k_slope", "fd.k_slope", "fa.width_invariance", "fa.width_group_collapse",
                   "gran.radius50_g2", "fa.early_lr0.001", "fa.persistent_lr0.001", "fa.persistent_radius_lr0.001",
                   "fa.early_lr0.01", "fa.persistent_lr0.01", "fa.persistent_radius_lr0.01")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from fa_jax.cli import main

    out = tmp_path_factory.mktemp("fa_quick")
    rc = main(["run", "feature-averaging", "--preset", "quick", "--out", str(out), "--quiet"])
    assert rc == 0
    with open(out / "summary.json") as f:
        return out, json.load(f)


def test_summary_schema(quick_run):
    _, doc = quick_run
    assert set(doc) >= {"sim", "config", "versions", "device", "checks", "not_evaluated", "metrics"}
    assert doc["sim"] == "feature-averaging"
    assert doc["config"]["d"] == 3072 and doc["config"]["k"] == 10 and doc["config"]["seeds"] == 3
    assert doc["versions"]["jax"] != "not installed"
    for c in doc["checks"]:
        assert set(c) >= {"name", "measured", "predicted", "tolerance", "provenance", "null", "kind", "passed"}
        assert c["kind"] in KINDS and "tolerance" in c["note"]  # every note names its tolerance's source


def test_check_contract_and_learning_floor(quick_run):
    """Required checks present (or listed not evaluated), finite; every derived check passes; paper checks are
    recorded. Learning floor: clean accuracy far above chance (0.5) and the training loss far below its start."""
    _, doc = quick_run
    assert_check_contract(doc, required=REQUIRED_CHECKS)
    m = doc["metrics"]
    for name in ("binary", "max"):
        assert m["clean_accuracy"][name]["mean"] >= 0.95, name
    for lr, dyn in m["dynamics"].items():
        assert dyn["steps"][0] == 0 and dyn["loss"][-1] < 0.5 * dyn["loss"][0], lr


def test_predictions_come_from_theory(quick_run):
    """Predictions are the closed forms of the spec, independent of the run: none is a measurement."""
    _, doc = quick_run
    by = {c["name"]: c for c in doc["checks"]}
    d, k = doc["config"]["d"], doc["config"]["k"]
    assert math.isclose(by["fa.flip_radius"]["predicted"], math.sqrt(d / k), rel_tol=1e-12)
    assert math.isclose(by["ratio.radius50"]["predicted"], math.sqrt(k / 2), rel_tol=1e-12)
    for lr in ("0.001", "0.01"):  # P12: the in-block cosine of the theory (5/5 split), not the one at step 10
        assert by[f"fa.persistent_lr{lr}"]["predicted"] == pytest.approx(1 / math.sqrt(5), rel=1e-12)
        assert by[f"fa.early_lr{lr}"]["predicted"] == pytest.approx(1 / math.sqrt(5), rel=1e-12)
    # P7: the window [0.9, 1.0] sqrt(d/2) as centre and relative half-width
    c = by["fd.radius50"]
    lo, hi = c["predicted"] * (1 - c["tolerance"]), c["predicted"] * (1 + c["tolerance"])
    np.testing.assert_allclose([lo, hi], [0.9 * math.sqrt(d / 2), math.sqrt(d / 2)], rtol=1e-12)


def test_figures_written(quick_run):
    out, doc = quick_run
    figs = doc["metrics"]["figures"]
    assert len(figs) >= 6
    for name in figs:
        p = out / name
        assert p.exists() and p.stat().st_size > 10_000
        assert_readable_png(p)  # a PNG of a printable size: no wide strips (issue 20)


def test_compiled_programs_are_groups_not_runs(quick_run):
    _, doc = quick_run
    m = doc["metrics"]
    assert m["diverged_runs"] == 0
    assert m["programs_compiled"] < m["n_runs"]


def test_rerun_resumes_from_cache(quick_run):
    """A second run over the same out dir loads every chunk instead of recomputing."""
    from fa_jax_sims import feature_averaging as fa

    from fa_jax.sweep import STATS

    out, doc = quick_run
    before = STATS.chunks_run
    cfg = apply_overrides(fa.PRESETS["quick"], [])
    doc2 = fa.run(cfg, str(out), progress=False)
    assert STATS.chunks_run == before
    assert [c["measured"] for c in doc2["checks"]] == [c["measured"] for c in doc["checks"]]


def test_sim_metrics_are_computed_from_the_dataset(quick_run):
    """The summary's metrics are reductions of the labelled Dataset that load_results opens (issue 18): the same
    numbers, to the bit, from a fresh load of the sim's folder (each part unstacked into its label dims, the s3
    runs in the sim's order on their run axis)."""
    from fa_jax.results import load_results, select_runs, stacked

    out, doc = quick_run
    m, cfg = doc["metrics"], doc["config"]
    ds = load_results(out)
    main = select_runs(ds, "main")  # dims (kind, seed, ...)
    r50 = main["robust/binary/r50"].sel(kind="binary").values.astype(float)
    assert len(r50) == cfg["seeds"] and m["r50"]["binary"]["values"] == r50.tolist()
    assert m["r50"]["max_ce"]["mean"] == float(np.mean(main["robust/max_ce/r50"].sel(kind="multiclass").values,
                                                       dtype=float))
    flips = stacked(main["robust/binary/flip"].sel(kind="binary"), "seed")[:, :cfg["n_points"]]  # [seed, point]
    assert m["flip_radius_binary"]["median_per_seed"]["values"] == [float(np.median(f)) for f in flips]
    dyn = select_runs(ds, "dyn")  # (lr, seed, step)
    for lr, dd in m["dynamics"].items():
        rs = dyn.sel(lr=float(lr))
        assert dd["steps"] == rs["step"].values.tolist()
        assert dd["cos_in"] == np.mean(stacked(rs["records/cos_in"], "seed"), 0).tolist()
    gran = select_runs(ds, "gran")  # (g, seed)
    assert m["granularity"]["r50_max"] == [float(np.mean(gran["robust/max/r50"].sel(g=g).values, dtype=float))
                                           for g in m["granularity"]["g"]]
    s3 = select_runs(ds, "s3", unstack=False)
    assert [(t["width"], t["init_scale"], t["seed"]) for t in m["s3"]["runs"]] == \
        list(zip(*(s3[key].values.tolist() for key in ("width", "init_scale", "seed")), strict=True))
    assert [t["movement"] for t in m["s3"]["runs"]] == s3["movement"].values.astype(float).tolist()


def test_cli_errors(capsys, tmp_path):
    from fa_jax.cli import main

    with pytest.raises(SystemExit):
        main(["run", "no-such-sim"])
    with pytest.raises(SystemExit):
        main(["run", "feature-averaging", "--preset", "nope"])
    with pytest.raises(SystemExit):
        main(["run", "feature-averaging", "--set", "bogus=1"])
    # a bad value is reported as a clear error naming the parameter as set, before anything compiles or is written
    for setting, param in (("k=99999", "invalid k=99999"), ("lr=-1", "invalid lr=-1.0"),
                           ("n_pos=0", "invalid n_pos=0"), ("data.k=99999", "invalid k=99999")):
        rc = main(["run", "feature-averaging", "--preset", "quick", "--set", setting, "--out", str(tmp_path / "bad")])
        assert rc == 2
        assert param in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_overrides_reach_every_run_config():
    """--set fields of the sim config land in every run's config (no run is executed here)."""
    from fa_jax_sims import feature_averaging as fa

    cfg = apply_overrides(fa.PRESETS["quick"], ["optimizer=adam", "batch_size=32", "lr=0.02", "seeds=2"])
    runs = fa.build_runs(cfg)
    assert len(runs["main"]) == 4
    for part in ("main", "phase", "gran"):
        for _, rc in runs[part]:
            assert (rc.optim.name, rc.optim.batch_size, rc.optim.lr) == ("adam", 32, 0.02)
    assert {rc.optim.lr for _, rc in runs["dyn"]} == set(cfg.dyn_lrs)
    with pytest.raises(ValueError, match="optim.name"):
        fa.build_runs(apply_overrides(fa.PRESETS["quick"], ["batch_size=32"]))  # 'gd' is full batch
    with pytest.raises(ValueError, match="gran_g"):
        apply_overrides(fa.PRESETS["default"], ["gran_g=2,3"]).validate()  # g=3: super-classes straddle J+/J-


@pytest.mark.parametrize("sets, field", [(["phase_k=2,0"], "phase_k"), (["s3_widths=0"], "s3_widths"),
                                         (["dyn_lrs=0.0"], "dyn_lrs")])
def test_an_explicit_zero_is_refused_never_replaced_by_the_default(tmp_path, capsys, sets, field):
    """`--set phase_k=2,0` used to run k = 10 labelled k = 0 (`k or s.k`): now the zero reaches validation and the
    run stops before anything compiles, naming the field as the user set it (issue 21), with the zero."""
    from fa_jax.cli import main

    rc = main(["run", "feature-averaging", "--preset", "quick", "--out", str(tmp_path), "--quiet"]
              + [x for kv in sets for x in ("--set", kv)])
    err = capsys.readouterr().err
    assert rc == 2 and f"invalid {field}=" in err and "0" in err.split(f"{field}=")[1].split(":")[0], err


def _captured_figures(monkeypatch):
    """Keep each figure the feature-averaging module saves, with a renderer of its drawn canvas (saving closes the
    figure), by file name."""
    from fa_jax.plotting import feature_averaging as plot_fa

    figs = {}
    save = plot_fa._save

    def keep(fig, out_dir, name):
        fig.canvas.draw()  # text extents need the drawn layout
        figs[name] = (fig, fig.canvas.get_renderer())
        return save(fig, out_dir, name)

    monkeypatch.setattr(plot_fa, "_save", keep)
    return plot_fa, figs


def test_metric_figures_redraw_the_committed_summary(tmp_path, monkeypatch):
    """figures/summary.json (the default run) holds everything the metric figures need: they re-draw from it,
    each a PNG of a printable size (issue 20). fa_phase_kd: one diverging scale for both panels with the theory
    value 1 at its middle, and no eps label overlapping a cell's number."""
    import pathlib
    import types

    import matplotlib.text

    summary = pathlib.Path(__file__).resolve().parents[1] / "figures" / "summary.json"
    doc = json.loads(summary.read_text())
    plot_fa, figs = _captured_figures(monkeypatch)
    names = plot_fa.metric_figures(str(tmp_path), types.SimpleNamespace(**doc["config"]), doc["metrics"])
    assert names == ["fa_dynamics.png", "fa_scaling.png", "fa_phase_kd.png", "fa_init_width.png"]
    for name in names:
        assert_readable_png(tmp_path / name)
    fig, r = figs["fa_phase_kd.png"]
    maps = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(maps) == 2 and maps[0].norm is maps[1].norm
    assert float(maps[0].norm(1.0)) == pytest.approx(0.5) and maps[0].cmap.name == "RdBu_r"
    ax = maps[0].axes
    texts = [t for t in ax.texts if isinstance(t, matplotlib.text.Text)]
    labels = [t.get_window_extent(r) for t in texts if "epsilon" in t.get_text()]
    cells = [t.get_window_extent(r) for t in texts if "epsilon" not in t.get_text()]
    assert len(labels) == 3 and len(cells) == len(doc["config"]["phase_k"]) * len(doc["config"]["phase_d"])
    assert not any(a.overlaps(b) for a in labels for b in cells)
    assert not any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[i + 1:])


def test_robust_accuracy_legend_off_the_data(tmp_path, monkeypatch):
    """fa_robust_accuracy: the theory radii are legend entries (no labels at the top that overlap where radii are
    close) and the legend lies right of the axes."""
    import types

    import xarray as xr

    plot_fa, figs = _captured_figures(monkeypatch)
    s = types.SimpleNamespace(d=3072, k=10, n_pos=5, pgd_steps=20, restarts=2, n_points=300)
    eps = np.linspace(0, 60, 31)
    # the main runs as the sim hands them over: dims (kind, seed, eps), two seeds (each net reads its own kind)
    curves = {"binary": np.clip(1 - eps / 20, 0, 1), "max": np.clip(1 - eps / 40, 0, 1)}
    main = xr.Dataset({f"robust/{name}/acc": (("kind", "seed", "eps"), np.broadcast_to(c, (2, 2, eps.size)))
                       for name, c in curves.items()}, coords={"kind": ["binary", "multiclass"], "eps": eps})
    assert plot_fa._robust_accuracy(str(tmp_path), s, main) == "fa_robust_accuracy.png"
    assert_readable_png(tmp_path / "fa_robust_accuracy.png")
    fig, r = figs["fa_robust_accuracy.png"]
    (ax,) = fig.axes
    assert not ax.texts
    assert ax.get_legend().get_window_extent(r).x0 >= ax.get_window_extent(r).x1
    assert any("sqrt{d/k}" in t.get_text() for t in ax.get_legend().get_texts())


def test_flip_histogram_of_runs_that_all_diverged(tmp_path):
    """Every binary run diverged (NaN radii): the histogram figure says so beside the theory, never fails (a run
    with lr = 1e38 reaches it: `fa-jax run feature-averaging --preset quick --set lr=1e38` completes, 11 runs
    marked diverged)."""
    import xarray as xr
    from fa_jax_sims.feature_averaging import PRESETS

    from fa_jax.plotting.feature_averaging import _flip_histogram

    main = xr.Dataset({"robust/binary/flip": (("kind", "seed", "point"), np.full((2, 3, 4), np.nan))},
                      coords={"kind": ["binary", "multiclass"]})
    name = _flip_histogram(str(tmp_path), PRESETS["quick"], main)
    assert_readable_png(tmp_path / name)
