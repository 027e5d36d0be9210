"""End to end: ``fa-jax run sgd-support --preset quick`` (the one slow test of this module, ~1 min on 2 cores)."""
import json

import numpy as np
import pytest
from conftest import assert_check_contract, assert_readable_png

from fa_jax.theory import sgd_support as T

# quick preset: its figure runs ARE the convergent label-noise family (sigma = 0.1, lr = 0.05); b = 32 is outside T3's
# domain (b > t3_max_batch), b = 2 too (SGD's excess residual dominates: E[r^2] > t3_noise_dominance sigma^2), both
# listed as not evaluated; the paper-figure ranges apply to the paper's setting only (listed as "support.paper.*")
REQUIRED = ("support.gd.e2e_irrelevant", "support.t3.label_noise_b2", "support.t3.label_noise_b8",
            "support.t3.label_noise_b32", "support.sgd.batch_ordering", "support.sgd_below_gd",
            "support.gd_wd.irrelevant_ratio", "support.decay_vs_eta_over_b", "support.decay_t3_constant",
            "support.paper.*")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from fa_jax.cli import main

    out = tmp_path_factory.mktemp("ss_quick")
    assert main(["run", "sgd-support", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    with open(out / "summary.json") as f:
        return out, json.load(f)


def test_check_contract_and_learning_floor(quick_run):
    """Every required check present (or listed as not evaluated, with a reason), finite, every derived check passes;
    and the nets learned: the full-batch loss ends far below its initial value for GD and every batch size."""
    out, doc = quick_run
    assert doc["sim"] == "sgd-support"
    assert_check_contract(doc, required=REQUIRED)
    names = {c["name"] for c in doc["checks"]}
    skipped = {c["name"] for c in doc["not_evaluated"]}
    # inside T3's domain at quick scale (converging regime, b <= t3_max_batch): evaluated, not skipped
    assert {"support.t3.label_noise_b8", "support.gd_wd.irrelevant_ratio",
            "support.decay_vs_eta_over_b", "support.decay_t3_constant"} <= names
    assert {"support.t3.label_noise_b32", "support.t3.label_noise_b2"} <= skipped and 32 > T.t3_max_batch()
    fam = doc["metrics"]["label_noise_family"]
    for b in ("2", "8", "32"):  # out-of-domain batch sizes still report measured / T3
        assert np.isfinite(fam[b]["measured_over_t3"]["median"]), b
    assert doc["metrics"]["collapse"]["in_domain"] >= 3
    m = doc["metrics"]
    init_loss = m["gd"]["initial_loss"]["mean"]
    assert m["gd"]["final_loss"]["mean"] < 0.01 * init_loss
    for b, v in m["sgd"].items():
        assert v["final_loss"]["median"] < 0.01 * init_loss, b
    assert m["gd"]["e2e_irrelevant"]["mean"] < 0.01 * m["gd"]["e2e_irrelevant_init"]["mean"]
    assert m["gd"]["converged_step"] is not None and m["gd_wd"]["converged_step"] is not None
    assert m["programs_compiled"] == 4 and m["diverged_runs"] == 0 and m["n_runs"] == 37
    for name in m["figures"]:
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert_readable_png(out / name)


def test_sim_config_errors(tmp_path):
    from fa_jax_sims import sgd_support as S

    with pytest.raises(ValueError, match="batch_sizes"):
        S.run(S.SupportSim(n=50, batch_sizes=(101,)), str(tmp_path))
    with pytest.raises(ValueError, match="data.target"):
        S.run(S.SupportSim(target="cubic"), str(tmp_path))


def test_paper_figure_checks_only_in_the_paper_setting(quick_run):
    """P1-P3 ranges (read off the official figures) are compared only when the run is that setting."""
    import dataclasses

    from fa_jax_sims import sgd_support as S

    assert S.paper_setting(S.PRESETS["default"])
    assert not S.paper_setting(S.PRESETS["quick"])
    assert not S.paper_setting(dataclasses.replace(S.PRESETS["default"], lr=0.2))
    # the default holds the label-noise family (T3's primary test, b = 16 inside its domain) and the b = N column
    d = S.PRESETS["default"]
    assert (d.ln_noise, d.ln_lr, d.ln_steps) == (0.1, 0.05, 50_000) and d.ln_seeds >= 2
    assert {16, 128, 512} <= set(d.ln_batch) and d.n_train in d.phase_batch
    assert S.PRESETS["quick"].ln_batch == () and (S.PRESETS["quick"].noise, S.PRESETS["quick"].lr) == (0.1, 0.05)
    _, doc = quick_run
    assert not any(c["name"].startswith("support.paper.") for c in doc["checks"])


def test_sim_metrics_are_computed_from_the_dataset(quick_run):
    """The summary's metrics are reductions of the labelled Dataset that load_results opens (issue 18): the same
    numbers, to the bit, from a fresh load of the sim's folder; the sparse phase part (its b = N column has one seed)
    read on its run axis, each run's own last record."""
    from fa_jax.results import load_results, select_runs, stacked

    out, doc = quick_run
    m = doc["metrics"]
    ds = load_results(out)
    gd = select_runs(ds, "gd")  # (seed, step, ...)
    assert m["gd"]["final_ratio"]["values"] == stacked(gd["records/irr"].isel(step=-1), "seed").astype(float).tolist()
    assert m["irr_norm_init"]["mean"] == float(np.mean(stacked(gd["irr_norm0"], "seed").astype(float)))
    sgd = select_runs(ds, "sgd")  # (b, seed, traj, step, ...)
    for b in map(int, sgd["b"].values):
        score = stacked(sgd["support_score"].sel(b=b), "seed", "traj").ravel().astype(float)
        assert m["sgd"][str(b)]["support_score"]["values"] == score.tolist(), b
        assert m["sgd"][str(b)]["support_score"]["median"] == float(np.median(score)), b
    ph = select_runs(ds, "phase", unstack=False)  # (run, step, ...): labels b, lr, seed along run
    assert [(p["b"], p["lr"], p["seed"]) for p in m["phase"]] == list(
        zip(ph["b"].values.tolist(), ph["lr"].values.tolist(), ph["seed"].values.tolist(), strict=True))
    irr = ph["records/irr"].values
    last = [float(row[np.isfinite(row)][-1]) for row in irr]
    assert [p["final_ratio"] for p in m["phase"]] == last
    n_gd = int((ph["b"].values == 2 * doc["config"]["n"]).sum())
    assert 0 < n_gd < len(last)  # the b = N column is in the part, with fewer seeds
