"""The open experiment registry and self-describing results: every paper's per-run experiment swept from a TOML
file and loaded labelled; a user's experiment named "module:attribute" from a module next to the sweep file,
its results opened in a process that cannot import that module; registered names, clashes, analyses by name or
reference (the library never imports the application); old manifests; ``sweep_dataset``."""
from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fa_jax
from fa_jax.experiments import EXPERIMENTS, Experiment, experiment_names, get_experiment, register_experiment
from fa_jax.results import load_results
from fa_jax.sweepfile import SpecError, get_analysis, load_spec, parse_spec, register_analysis, run_spec

# ---------------------------------------------------------------------------- every paper's experiment, from a file
# experiment -> ([fixed] settings, {variable: its dims after the seed axis}): the smallest sizes that exercise
# each run function; two seeds each, so the seed axis is checked to change the runs.
TINY = {
    "feature-averaging-real": (
        {"data.name": "digits", "data.n_train_per_class": 4, "data.n_test_per_class": 2, "model.hidden": [4],
         "optim.batch_size": 8, "train.steps": 2, "train.n_records": 2, "attack.n_points": 4, "attack.n_eps": 3,
         "attack.steps": 2, "attack.eps_batch": 3, "record_points": 8},
        {"records/test_acc": ("step",), "robust/binary/acc": ("eps",), "features/cos": ("class_i", "class_j"),
         "features/head_cos": ("class_i", "head_output"), "clean/binary": ()}),
    "sgd-support": (
        {"data.d": 4, "data.s": 2, "data.n": 6, "data.n_test": 3, "model.widths": [3, 2], "optim.batch_size": 4,
         "train.steps": 4, "train.n_records": 3},
        {"records/irr": ("step",), "w1": ("input", "hidden"), "support_score": ()}),
    "adaptive-linear": (
        {"batch": 8, "eval_batch": 4, "train.steps": 4, "train.n_records": 3},
        {"records/e_tilde": ("step", "frequency"), "records/std_risk": ("step",), "w_tilde": ("frequency",)}),
    "adaptive-nets": (
        {"data.size": 4, "data.n_classes": 3, "model.n_classes": 3, "model.hidden": [4], "n_train": 16, "n_test": 8,
         "optim.batch_size": 8, "train.steps": 2, "train.n_records": 2, "attack.n_points": 4, "attack.steps": 2,
         "attack.noise_draws": 1, "power_iters": 2, "record_points": 8},
        {"l2_acc": ("l2_eps",), "linf_acc": ("linf_eps",), "noise_acc": ("noise",), "lip/layers_op": ("layer",),
         "clean_acc": ()}),
    "hold-me-tight": (
        {"synth.side": 8, "synth.n_noise": 8, "synth.n_train": 16, "synth.n_test": 4, "model.hidden": [4],
         "optim.batch_size": 8, "train.steps": 2, "train.n_records": 2, "margin.n_points": 2, "margin.max_iter": 2,
         "margin.random_dim": 2, "margin.n_random": 1, "margin.block_size": 8, "margin.method": "deepfool",
         "record_points": 4},
        {"block/margin": ("block", "point"), "sub/margin": ("subspace", "point"), "correct": ("point",)}),
    # the Deep RFM kind (the MLP kind's (step, layer) records cost ~4x more to compile)
    "agop-collapse": (
        {"data.mixture.k": 3, "data.mixture.d": 6, "data.mixture.n_per_class": 4, "rfm.depth": 2},
        {"layers/x/nc1": ("rfm_layer",), "layers/agop_top1_frac": ("rfm_layer",)}),
}


def test_every_paper_experiment_is_registered():
    assert set(TINY) | {"feature-averaging", "linear-regression"} == set(EXPERIMENTS)
    for name in EXPERIMENTS:
        exp = get_experiment(name)
        assert exp.name == name and exp.seeds
        exp.config()  # the default config builds (validate() may need data files: not called here)


@pytest.mark.parametrize("name", list(TINY))
def test_paper_experiment_sweeps_from_toml_and_loads_labelled(tmp_path, name):
    fixed, dims = TINY[name]
    spec = tmp_path / "tiny.toml"
    lines = "\n".join(f'"{k}" = {json.dumps(v)}' for k, v in fixed.items())  # JSON scalars and lists are TOML
    spec.write_text(f'experiment = "{name}"\n[fixed]\n{lines}\n[axes]\nseed = [0, 1]\n')
    run_spec(spec, tmp_path / "out", progress=False)
    ds = load_results(tmp_path / "out")
    for var, own in dims.items():
        assert ds[var].dims == ("seed", *own), var
    if "step" in ds.dims:  # record steps are the coordinate of every recorded metric
        assert ds["step"].values[0] == 0 and "plan" not in ds
    # the seed axis reaches the run: the two seeds' outputs differ
    first = next(v for v in dims if np.issubdtype(ds[v].dtype, np.floating))
    a, b = (ds[first].isel(seed=i).values for i in range(2))
    assert np.isfinite(a).any() and not np.array_equal(a, b, equal_nan=True)
    assert json.loads(ds.attrs["experiment"])["name"] == name
    if name == "adaptive-nets":  # coordinates read from the (unswept) config
        np.testing.assert_allclose(ds["l2_eps"].values, (0.25, 0.5, 1.0))
        assert ds["band_noise_acc/irrelevant"].dims == ds["band_noise_acc/relevant"].dims == ("seed", "band_std")
        np.testing.assert_allclose(ds["band_std"].values, (0.25, 0.5, 1.0))
        assert "irrelevant DCT band" in ds["band_noise_acc/irrelevant"].attrs["long_name"]


# the linear-regression sweeps below share one static config and run count: one compiled program between them
LIN = {"experiment": "linear-regression", "fixed": {"train.steps": 4, "train.n_records": 3}, "axes": {"seed": [0, 1]}}
LIN_TOML = '[fixed]\n"train.steps" = 4\n"train.n_records" = 3\n[axes]\nseed = [0, 1]\n'


# ---------------------------------------------------------------------------- a user's experiment, in its own module
USER_MODULE = '''
import dataclasses
import jax
import jax.numpy as jnp
from fa_jax.config import traced
from fa_jax.experiments import Experiment

@dataclasses.dataclass(frozen=True)
class Cfg:
    d: int = 3
    scale: float = traced(1.0)
    seed: int = traced(0)
    def validate(self):
        return self

def run(cfg):
    w = cfg.scale * jax.random.normal(jax.random.PRNGKey(cfg.seed), (cfg.d,))
    return {"w": w, "norm": jnp.linalg.norm(w), "grid": jnp.arange(cfg.d) * 0.5}

EXP = Experiment(name="{name}", config=Cfg, run=run, seeds=("seed",), dims=(("w", ("coef",)), ("grid", ("coef",))),
                 coords=(("coef", "grid"),), labels=(("norm", "weight norm"),), units=(("w", "metres"),))

def make():
    return EXP
'''


def _user_module(folder: pathlib.Path, mod: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{mod}.py").write_text(USER_MODULE.replace("{name}", mod.replace("_", "-")))


def test_user_experiment_next_to_spec_file_via_cli_and_results_open_without_its_module(tmp_path, capsys):
    """``fa-jax sweep`` imports a module that sits next to the spec file; the result opens in a fresh process in
    which that module cannot be imported (dims, coordinates, labels and units come from the manifest)."""
    from fa_jax.cli import main

    mod = "user_exp_cli"
    _user_module(tmp_path / "specs", mod)
    spec = tmp_path / "specs" / "user.toml"
    spec.write_text(f'experiment = "{mod}:EXP"\n[fixed]\nd = 4\n[axes]\nscale = [1.0, 2.0]\nseed = {{ range = [0, 3] }}\n')
    assert mod not in sys.modules and str(tmp_path / "specs") not in sys.path
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert str(tmp_path / "specs") not in sys.path  # only while resolving
    code = textwrap.dedent(f"""
        import importlib.util, json
        assert importlib.util.find_spec({mod!r}) is None  # the experiment's module is not importable here
        import fa_jax
        ds = fa_jax.load_results({str(tmp_path / "out")!r})
        print(json.dumps({{"dims": ds["w"].dims, "coef": ds["coef"].values.tolist(), "label": ds["norm"].attrs,
                          "units": ds["w"].attrs, "shape": list(ds["norm"].shape),
                          "ratio": float(ds["norm"].sel(scale=2.0, seed=1) / ds["norm"].sel(scale=1.0, seed=1))}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["dims"] == ["scale", "seed", "coef"] and got["coef"] == [0.0, 0.5, 1.0, 1.5]
    assert got["label"] == {"long_name": "weight norm"} and got["units"] == {"units": "metres"}
    assert got["shape"] == [2, 3] and got["ratio"] == pytest.approx(2.0)


def test_reference_to_a_factory_and_unknown_references(tmp_path):
    mod = "user_exp_factory"
    _user_module(tmp_path, mod)
    spec = tmp_path / "s.toml"
    spec.write_text(f'experiment = "{mod}:make"\n[axes]\nseed = [0, 1]\n')
    assert load_spec(spec).n_runs == 2
    for ref, pattern in [(f"{mod}:nope", "has no attribute 'nope'"), ("no_such_module_xyz:EXP", "cannot import"),
                         (f"{mod}:Cfg", "not an fa_jax.experiments.Experiment"), ("nope", "allowed one of")]:
        spec.write_text(f'experiment = "{ref}"\n')
        with pytest.raises(SpecError, match=f"s.toml: key 'experiment'.*{pattern}"):
            load_spec(spec)


def test_register_experiment_names_clashes_and_sweep_dataset():
    """A Python-registered experiment is nameable; a different one under a taken name is refused; sweep_dataset
    returns the labelled Dataset (an Experiment object in the dict spec is registered under its name)."""
    from fa_jax.experiments.linear import LinearRun, run_linear

    exp = Experiment(name="lin-py", config=LinearRun, run=run_linear, seeds=("data_seed", "model_seed"),
                     dims=(("w", ("coef",)), ("records/*", ("step",)), ("plan", ("step",))),
                     coords=(("step", "plan"),))
    assert register_experiment(exp) is exp and register_experiment(exp) is exp  # equal again: a no-op
    assert "lin-py" in experiment_names() and get_experiment("lin-py") == exp
    with pytest.raises(ValueError, match="already registered"):
        register_experiment(Experiment(name="lin-py", config=LinearRun, run=run_linear))
    with pytest.raises(ValueError, match="already registered"):
        register_experiment(Experiment(name="feature-averaging", config=LinearRun, run=run_linear))
    with pytest.raises(TypeError, match="allowed an fa_jax.experiments.Experiment"):
        register_experiment("lin-py")
    ds = fa_jax.sweep_dataset({**LIN, "experiment": exp, "axes": {"optim.lr": [0.1], **LIN["axes"]}},
                              progress=False)
    assert ds["w"].dims == ("optim.lr", "seed", "coef") and ds["records/loss"].dims == ("optim.lr", "seed", "step")
    assert ds["records/loss"].notnull().all() and list(ds["optim.lr"].values) == [0.1]


# ---------------------------------------------------------------------------- analyses; one-way layers
def _analysis(ds, spec, out_dir):
    return [], {"mean_final_loss": float(ds["records/loss"].isel(step=-1).mean())}


def test_analysis_by_registered_name_or_reference_and_errors_before_running(tmp_path):
    register_analysis("test-mean-loss", _analysis)
    register_analysis("test-mean-loss", _analysis)  # the same function again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_analysis("test-mean-loss", "tests.test_registry:_analysis")
    assert get_analysis("test-mean-loss") is _analysis
    res = run_spec(parse_spec({**LIN, "analysis": "test-mean-loss"}), tmp_path / "out", progress=False)
    assert res["summary"]["metrics"]["mean_final_loss"] > 0
    (tmp_path / "my_analyses.py").write_text("def analyse(ds, spec, out_dir):\n    return [], {'n': ds.sizes['seed']}\n")
    spec = tmp_path / "with_analysis.toml"
    spec.write_text(f'experiment = "linear-regression"\nanalysis = "my_analyses:analyse"\n{LIN_TOML}')
    # the analysis is not part of the spec's hash: the same sweep, its chunks reloaded, analysed anew
    res = run_spec(spec, tmp_path / "out", progress=False)
    assert res["stats"]["chunks_run"] == 0 and res["summary"]["metrics"]["n"] == 2
    for bad, pattern in [("no-such-analysis", "registered names"), ("my_analyses:nope", "no attribute"),
                         (3, "allowed a registered name")]:
        with pytest.raises(SpecError, match=f"key 'analysis'.*{pattern}"):
            parse_spec({**LIN, "analysis": bad}, source=str(spec))


def test_shipped_regimes_spec_finds_its_analysis():
    spec = load_spec(pathlib.Path(__file__).parents[1] / "sims" / "regimes.toml")
    from fa_jax_sims import regimes

    assert get_analysis(spec.analysis) is regimes.analyse
    import fa_jax_sims  # noqa: F401  (registers "regimes", the name older manifests hold)

    assert get_analysis("regimes") is regimes.analyse


def test_sweep_layer_never_imports_the_application():
    root = pathlib.Path(fa_jax.__file__).parent
    files = [root / "sweepfile.py", root / "results.py", root / "sweep.py", root / "config.py",
             *sorted((root / "experiments").glob("*.py"))]
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not any(n.split(".")[0] in ("sims", "fa_jax_sims") for n in names), f"{f.name} imports {names}"


# ---------------------------------------------------------------------------- manifests
def test_old_manifest_without_description_loads_from_registry(tmp_path):
    run_spec(parse_spec(LIN), tmp_path, progress=False)
    man_path = tmp_path / "sweep.json"
    man = json.loads(man_path.read_text())
    desc = man["experiment"]
    assert desc["name"] == "linear-regression" and desc["run"] == "fa_jax.experiments.linear:run_linear"
    assert ["w", ["coef"]] in desc["dims"] and ["step", "plan"] in desc["coords"]
    new = load_results(tmp_path)
    del man["experiment"]
    man_path.write_text(json.dumps(man))
    old = load_results(tmp_path)
    assert old["w"].dims == new["w"].dims == ("seed", "coef")
    np.testing.assert_array_equal(old["records/loss"].values, new["records/loss"].values)
    man["spec"]["experiment"] = "gone_module_xyz:EXP"  # neither described nor resolvable: generic axis names
    man_path.write_text(json.dumps(man))
    with pytest.warns(UserWarning, match="generic axis names"):
        anon = load_results(tmp_path)
    assert anon["w"].dims == ("seed", "w_dim0")


# ---------------------------------------------------------------------------- declared dims cover every output
# kinds of runs with outputs the TINY configs do not make (traced only, never compiled)
VARIANTS = {"agop-collapse": {"kind": "mlp", "mlp.optim.batch_size": 4, "mlp.model.widths": [4, 4]},
            "adaptive-nets": {"jacobian": True}}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_declared_dims_cover_every_output(name):
    """Every output with axes is named by the experiment's ``dims`` (no generic ``<output>_dim<i>`` after
    ``load_results``), and each declared coordinate comes from an output or an existing config field. Shapes from
    ``jax.eval_shape`` on the TINY config (the default for FA and linear regression): traced, not compiled."""
    import contextlib
    import dataclasses

    import jax

    from fa_jax.results import _dims_for
    from fa_jax.sweep import _flatten
    from fa_jax.sweepfile import build_configs

    exp = get_experiment(name)
    fixed = TINY.get(name, ({}, {}))[0]
    cfgs = [build_configs(parse_spec({"experiment": name, "fixed": fixed}, source="inline"))[0]]
    if name in VARIANTS:
        cfgs.append(build_configs(parse_spec({"experiment": name, "fixed": {**fixed, **VARIANTS[name]}},
                                             source="inline"))[0])
    outputs, fields = set(), set()
    for cfg in cfgs:
        with exp.context() if exp.context is not None else contextlib.nullcontext():
            out = _flatten(jax.eval_shape(lambda cfg=cfg: exp.run(cfg)))
        generic = {k: v.shape for k, v in out.items()
                   if any(d.endswith(f"_dim{i}") for i, d in enumerate(_dims_for(k, len(v.shape), exp.dims)))}
        assert not generic, f"{name}: outputs without declared dims (add them to its Experiment's dims): {generic}"
        outputs |= set(out)
        fields |= {p for p, _ in _config_paths(dataclasses.asdict(cfg))}
    for dim, source in exp.coords:  # an output of some kind of run (Deep RFM records no steps), or a config field
        assert (source[len("config:"):] in fields) if source.startswith("config:") else source in outputs, (dim,
                                                                                                          source)
        assert any(dim in dims for _, dims in exp.dims), f"{name}: coordinate {dim!r} names no declared dim"


def _config_paths(tree: dict, prefix: str = ""):
    for k, v in tree.items():
        yield f"{prefix}{k}", v
        if isinstance(v, dict):
            yield from _config_paths(v, f"{prefix}{k}.")
