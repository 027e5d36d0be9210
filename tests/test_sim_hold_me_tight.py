"""`fa-jax run hold-me-tight --preset quick` end to end (one sweep, run once per module): the summary's schema,
the derived checks pass (D2 exact flip mirror for the MLP, D4 u-margin near eps/2, P4/P7), every phenomenon check
is present with a finite measurement, the figures exist, and bad settings fail before anything compiles."""
from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest

from fa_jax.cli import main

MUST_PASS = {"hmt.p4.mlp_synth_test_acc", "hmt.d4.mlp_u_margin_over_half_eps", "hmt.p4.mlp_orthogonal_over_u",
             "hmt.d2.mlp_synth_flip_mirror_pointwise", "hmt.d2.mlp_synth_flip_mirror_profile",
             "hmt.d2.mlp_synth_flip_censoring_agrees", "hmt.d2.mlp_mnist-5k_flip_mirror_pointwise",
             "hmt.d2.mlp_mnist-5k_flip_mirror_profile", "hmt.d2.mlp_mnist-5k_flip_censoring_agrees",
             "hmt.p7.at_u_margin_pinned", "hmt.p7.at_orthogonal_margins_increase"}
REPORTED = {"hmt.p6.tiny_feature_collapses_margin", "hmt.p6.tiny_feature_monotone", "hmt.p6.u_margin_unchanged",
            "hmt.d5.noise_hides_tiny_feature", "hmt.p8.mlp_synth_profile_rise", "hmt.p8.mnist-5k_mlp_profile_rise",
            "hmt.p10.mnist-5k_mlp_lowpass_growth"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("hmt")
    assert main(["run", "hold-me-tight", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_quick_preset_checks_and_figures(quick):
    out, doc = quick
    assert doc["sim"] == "hold-me-tight" and set(doc) >= {"config", "versions", "device", "checks", "metrics"}
    checks = {c["name"]: c for c in doc["checks"]}
    assert MUST_PASS | REPORTED <= set(checks)
    failed = [checks[n] for n in MUST_PASS if not checks[n]["passed"]]
    assert not failed, failed
    for name in REPORTED:  # phenomenon checks are results: present and measured, pass or fail
        assert isinstance(checks[name]["measured"], (int, float)) and math.isfinite(checks[name]["measured"])
    m = doc["metrics"]
    assert m["programs_compiled"] <= 3 and m["diverged_runs"] == 0
    for name in m["figures"]:
        assert os.path.getsize(out / name) > 10_000


def test_quick_preset_censoring_is_reported(quick):
    _, doc = quick
    sub = doc["metrics"]["synthetic"]["mlp"][0]["subspaces"]
    for st in sub.values():  # every median carries its failure rate and ">=" flag
        assert 0.0 <= st["fail_rate"] <= 1.0 and isinstance(st["lower_bound"], bool)
    prof = doc["metrics"]["images"]["mnist-5k_mlp"]["profile"]
    assert len(prof["median"]) == 21 and len(prof["lower_bound"]) == 21  # MNIST: K = 8, stride 1


@pytest.mark.parametrize("setting", ["eps=-1", "tiny_eps2=0.1,0.2,0.3", "at_eps=0,0.6", "synth_block=40"])
def test_bad_settings_exit_2(tmp_path, setting, capsys):
    assert main(["run", "hold-me-tight", "--preset", "quick", "--set", setting, "--out", str(tmp_path)]) == 2
    assert "invalid" in capsys.readouterr().err


def test_cifar10_conv_from_standard_files_end_to_end(tmp_path, monkeypatch):
    """The file-based CIFAR-10 path with the conv net (RGB 32x32, K = 8 blocks at stride 2, 10 classes) on a tiny
    CIFAR-10 binary folder in the exact format (checksums off: not the official files): profiles, flip and
    low-pass runs come out, with the spec's CIFAR block layout; with checksums on the set is reported missing."""
    from test_data_images import write_cifar_dir

    write_cifar_dir(tmp_path / "data" / "cifar-10-batches-bin", n=20)  # 100 train / 20 test images
    monkeypatch.setenv("FA_JAX_DATA", str(tmp_path / "data"))
    small = ["--set", "image_archs=conv", "--set", "image_channels=4", "--set", "image_dense=8",
             "--set", "image_epochs=2", "--set", "image_points=4", "--set", "image_max_iter=3",
             "--set", "image_train_per_class=none", "--set", "image_test_per_class=none"]
    out = tmp_path / "o"
    assert main(["run", "hold-me-tight", "--preset", "quick", "--quiet", "--out", str(out), "--set",
                 "image_sets=cifar10", "--set", "verify=false", *small]) == 0
    doc = json.loads((out / "summary.json").read_text())
    img = doc["metrics"]["images"]["cifar10_conv"]
    assert img["starts"] == list(range(0, 32 - 8 + 1, 2))  # spec 2.2: K = 8, stride 2 on CIFAR-10
    assert len(img["profile"]["median"]) == len(img["profile_flipped"]["median"]) == 13
    assert {"hmt.p8.cifar10_conv_profile_rise", "hmt.p10.cifar10_conv_lowpass_growth"} <= {
        c["name"] for c in doc["checks"]}
    # checksums on (the default): the same files are refused and the set is reported missing, naming the file
    from sims.hold_me_tight import PRESETS, available_image_sets

    ok, missing = available_image_sets(dataclasses.replace(PRESETS["quick"], image_sets=("cifar10",)))
    assert ok == [] and missing["cifar10"]  # the reason (checksum mismatch) is kept for the summary
