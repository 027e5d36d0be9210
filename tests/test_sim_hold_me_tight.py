"""`fa-jax run hold-me-tight --preset quick` end to end (one sweep, run once per module): the check contract
(every required check present or listed as not evaluated, finite measurements, every derived check passes: D2's
exact flip mirror for the MLP in float64, D4's u-margin near (1 + o) eps/2, the accuracy precondition, D5 inside its
domain), a learning floor, the figures exist, and bad settings fail before anything compiles."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest
from conftest import assert_check_contract, assert_readable_png

from fa_jax.cli import main

REQUIRED = (
    # derived: must pass (D4 on raw DeepFool and D2-synth under the official recipe are listed as not evaluated, with
    # their domain reasons)
    "hmt.p4.mlp_synth_test_acc", "hmt.d4.mlp_u_margin_over_half_eps",
    "hmt.d2.mlp_synth_flip_mirror_pointwise", "hmt.d2.mlp_synth_flip_mirror_profile",
    "hmt.d2.mlp_synth_flip_censoring_agrees", "hmt.d2.mlp_mnist-5k_flip_mirror_pointwise",
    "hmt.d2.mlp_mnist-5k_flip_mirror_profile", "hmt.d2.mlp_mnist-5k_flip_censoring_agrees",
    "hmt.d5.noise_hides_tiny_feature", "hmt.d5.tiny_law_exponent", "hmt.d5.tiny_law_exponent_init2.45",
    "hmt.d5.tiny_law_exponent_init0.3", "hmt.d6.blocks_empty_rows_shrink_by_weight_decay",
    # paper claims: present with a finite measurement (pass or fail is a result)
    "hmt.p4.mlp_orthogonal_over_u", "hmt.p8.mlp_synth_nondiscriminative_over_u",
    "hmt.p6.tiny_feature_collapses_margin", "hmt.p6.tiny_feature_monotone", "hmt.p6.u_margin_unchanged",
    "hmt.p6.tiny_feature_collapses_margin_init2.45", "hmt.p6.tiny_feature_monotone_init2.45",
    "hmt.p6.u_margin_unchanged_init2.45", "hmt.p6.tiny_feature_collapses_margin_init0.3",
    "hmt.p7.at_u_margin_pinned", "hmt.p7.at_orthogonal_margins_increase",
    "hmt.p8.mnist-5k_mlp_profile_rise", "hmt.p10.mnist-5k_mlp_lowpass_growth",
    # the conv nets (narrower in the quick preset; D4 is listed as not evaluated where the net misses its accuracy
    # domain)
    "hmt.p4.conv_synth_test_acc", "hmt.d4.conv_u_margin_over_half_eps", "hmt.p4.conv_orthogonal_over_u",
    "hmt.p8.conv_synth_nondiscriminative_over_u",
)
# the derived checks the quick preset must evaluate (not skip)
# (the synthetic D2 trio sits outside D2's precision domain at lr 0.21 on sigma = 3 data: listed not evaluated)
EVALUATED = ("hmt.p4.mlp_synth_test_acc", "hmt.d4.mlp_u_margin_over_half_eps",
             "hmt.d2.mlp_mnist-5k_flip_mirror_pointwise", "hmt.d2.mlp_mnist-5k_flip_mirror_profile",
             "hmt.d5.noise_hides_tiny_feature", "hmt.d5.tiny_law_exponent",
             "hmt.d6.blocks_empty_rows_shrink_by_weight_decay")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("hmt")
    assert main(["run", "hold-me-tight", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_quick_preset_checks_and_figures(quick):
    out, doc = quick
    assert doc["sim"] == "hold-me-tight" and set(doc) >= {"config", "versions", "device", "checks", "metrics"}
    assert_check_contract(doc, required=REQUIRED)
    checks = {c["name"]: c for c in doc["checks"]}
    assert set(EVALUATED) <= set(checks)
    assert doc["config"]["recipe"] == "official" and doc["config"]["synth_data"] == "nads"
    assert all(checks[n]["kind"] == "derived" for n in checks if n.startswith("hmt.d"))
    m = doc["metrics"]
    assert m["programs_compiled"] <= 6 and m["diverged_runs"] == 0  # the AT runs: their own program, as the default
    # every variant of the default runs at quick scale too (issue 15): MLP and conv, synthetic and images
    assert {"mlp", "conv"} == set(doc["config"]["synth_archs"]) == set(doc["config"]["image_archs"])
    assert "mnist-5k_conv" in m["images"]
    for name in m["figures"]:
        assert os.path.getsize(out / name) > 10_000
        assert_readable_png(out / name)


def test_quick_preset_learns(quick):
    """Learning floor: clean accuracy well above chance and the training loss below its initial value, for the
    synthetic nets (chance 1/2), the tiny-feature and adversarial runs, and the MNIST-5k MLP (chance 1/10)."""
    m = quick[1]["metrics"]
    for p in m["synthetic"]["mlp"]:
        assert p["test_acc"] >= 0.95 and p["loss_final"] < 0.1 * p["loss_initial"], p
    for t in m["tiny"]:
        assert min(min(row) for row in t["test_acc"]) >= 0.95
    for f in m["finding_E_vs_N"]["per_seed"]:  # the N/E block extension runs learn too
        assert f["test_acc"] >= 0.95
    assert min(min(row) for row in m["at"]["test_acc"]) >= 0.95
    img = m["images"]["mnist-5k_mlp"]
    assert min(img["test_acc"].values()) >= 0.5 and img["loss_final"] < 0.5 * img["loss_initial"], img


def test_quick_preset_censoring_is_reported(quick):
    _, doc = quick
    sub = doc["metrics"]["synthetic"]["mlp"][0]["subspaces"]
    for st in sub.values():  # every median carries its failure rate and ">=" flag
        assert 0.0 <= st["fail_rate"] <= 1.0 and isinstance(st["lower_bound"], bool)
    prof = doc["metrics"]["images"]["mnist-5k_mlp"]["profile"]
    assert len(prof["median"]) == 21 and len(prof["lower_bound"]) == 21  # MNIST: K = 8, stride 1


# lr / image_epochs: fields of the fa-jax recipe, refused under the official one (they used to be ignored silently)
@pytest.mark.parametrize("setting", ["eps=-1", "tiny_eps2=0.1,0.2,0.3", "at_eps=0,0.6", "synth_block=40", "lr=0.1",
                                     "image_epochs=2"])
def test_bad_settings_exit_2(tmp_path, setting, capsys):
    assert main(["run", "hold-me-tight", "--preset", "quick", "--set", setting, "--out", str(tmp_path)]) == 2
    assert "invalid" in capsys.readouterr().err


def test_cifar10_conv_from_standard_files_end_to_end(quick, tmp_path, monkeypatch):
    """The file-based CIFAR-10 path with the conv net (RGB 32x32, K = 8 blocks at stride 2, 10 classes) on a tiny
    CIFAR-10 binary folder in the exact format (checksums off: not the official files): profiles, flip and
    low-pass runs come out, with the spec's CIFAR block layout; with checksums on the set is reported missing.

    The synthetic part (not under test here) is the quick preset's own: its chunks are copied from the quick run's
    cache (the cache is keyed by program and values, not by position), so only the CIFAR-10 runs compile and run."""
    import shutil

    from test_data_images import write_cifar_dir

    write_cifar_dir(tmp_path / "data" / "cifar-10-batches-bin", n=20)  # 100 train / 20 test images
    monkeypatch.setenv("FA_JAX_DATA", str(tmp_path / "data"))
    small = ["--set", "image_archs=conv", "--set", "image_channels=4", "--set", "image_dense=8",
             "--set", "image_points=4", "--set", "image_max_iter=3",
             "--set", "image_train_per_class=none", "--set", "image_test_per_class=none"]
    out = tmp_path / "o"
    shutil.copytree(quick[0] / "cache", out / "cache")
    assert main(["run", "hold-me-tight", "--preset", "quick", "--quiet", "--out", str(out), "--set",
                 "image_sets=cifar10", "--set", "verify=false", *small]) == 0
    doc = json.loads((out / "summary.json").read_text())
    # the synthetic chunks were reused (else this test silently re-runs the whole quick sweep)
    assert doc["metrics"]["chunks_loaded_from_cache"] >= 1
    img = doc["metrics"]["images"]["cifar10_conv"]
    assert img["starts"] == list(range(0, 32 - 8 + 1, 2))  # spec 2.2: K = 8, stride 2 on CIFAR-10
    assert len(img["profile"]["median"]) == len(img["profile_flipped"]["median"]) == 13
    assert {"hmt.p8.cifar10_conv_profile_rise", "hmt.p10.cifar10_conv_lowpass_growth"} <= {
        c["name"] for c in doc["checks"]}
    assert not any(c["name"].startswith("hmt.d2.mlp_cifar10") for c in doc["checks"])  # conv only: no D2
    # checksums on (the default): the same files are refused and the set is reported missing, naming the file
    from fa_jax_sims.hold_me_tight import PRESETS, available_image_sets

    ok, missing = available_image_sets(dataclasses.replace(PRESETS["quick"], image_sets=("cifar10",)))
    assert ok == [] and missing["cifar10"]  # the reason (checksum mismatch) is kept for the summary


def test_sim_metrics_are_computed_from_the_dataset(quick):
    """The summary's metrics are read from the labelled Dataset that load_results opens (issue 18): the same
    numbers, to the bit, from a fresh load of the sim's folder, each run cut to its own blocks / subspaces (the
    synthetic runs' banks are NaN-padded to the image runs' larger ones)."""
    import numpy as np

    from fa_jax.metrics.margins import censored_median
    from fa_jax.results import load_results, runs_where, select_runs

    out, doc = quick
    m, cfg = doc["metrics"], doc["config"]
    ds = load_results(out)
    syn = m["synthetic"]["mlp"][0]
    r = select_runs(ds, "synth").sel(arch="mlp", seed=0, flip=0.0)  # dims (block | subspace, point, step)
    n_blocks, names = len(syn["profile"]["median"]), list(syn["subspaces"])
    assert n_blocks < r.sizes["block"] and np.isnan(r["block/margin"].values[n_blocks:]).all()  # padding
    assert (syn["test_acc"], syn["loss_final"]) == (float(r["test_acc"]), float(r["records/loss"].values[-1]))
    own = r.isel(subspace=slice(0, len(names)), point=slice(0, cfg["n_points"]))
    med = censored_median(own["sub/margin"].values, own["sub/flipped"].values.astype(bool))["median"]
    assert syn["u_margin"] == float(med[names.index("u")])
    at = select_runs(ds, "at")  # dims (seed, eps_adv, ...)
    assert m["at"]["test_acc"][0][1:] == at["test_acc"].sel(seed=0).values.astype(float).tolist()
    tiny = select_runs(ds, "tiny", unstack=True).sel(init_scale=cfg["tiny_init_scales"][0])  # (eps2, sigma_w)
    assert m["tiny"][0]["test_acc"] == tiny["test_acc"].transpose("eps2", "sigma_w").values.astype(float).tolist()
    blocks = select_runs(ds, "blocks").sel(seed=0)
    shrink = float(blocks["first_layer/E"]) / float(blocks["first_layer/E0"])
    assert m["finding_E_vs_N"]["per_seed"][0]["E_shrink"] == shrink
    img = select_runs(ds, "images", unstack=False)
    lp = runs_where(img, dataset="mnist-5k", arch="mlp", cond="lowpass")
    assert m["images"]["mnist-5k_mlp"]["test_acc"]["lowpass"] == float(lp["test_acc"].values[0])
    assert m["images"]["mnist-5k_mlp"]["lowpass_growth"]["b"] == int(lp["lowpass"].values[0])


def test_images_are_shared_inputs_not_program_constants():
    """The quick preset's image program takes the images as unbatched arguments (issue 18 item 4: the sweep
    engine's shared inputs), never as constants in its text; the synthetic runs have no shared inputs (``{}``), so
    their programs are those of a sweep without ``shared``. Lowering only."""
    import jax
    from fa_jax_sims import hold_me_tight as sim

    from fa_jax import sweep as S
    from fa_jax.config import static_key
    from fa_jax.experiments.hold_me_tight import run_hold_me_tight, shared_image_data

    s = sim.PRESETS["quick"].validate()
    runs = sim.build_runs(s, ["mnist-5k"])
    cfg = runs["images"][0][1]
    assert S._shared_inputs(shared_image_data, runs["synth"][0][1]) is None
    arrays = shared_image_data(cfg)
    with jax.enable_x64(bool(s.x64)):
        low = S._lower(run_hold_me_tight, static_key(cfg), cfg, 1, tuple(jax.local_devices()[:1]),
                       shared=S._shared_inputs(shared_image_data, cfg))
    text = low.lowered.as_text()
    main = next(line for line in text.splitlines() if "func.func public @main" in line)
    for name in ("x_train", "x_test"):
        x_type = "tensor<" + "x".join(map(str, arrays[name].shape)) + "xf32>"
        assert x_type in main  # an argument of the program
        # no constant of the images' shape, in float32 or converted to float64
        assert not any("constant" in line and (x_type in line or x_type.replace("f32", "f64") in line)
                       for line in text.splitlines())
