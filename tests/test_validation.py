"""One validation layer (issue 21): every bad value is a :class:`fa_jax.config.ConfigError` (a sweep file's: a
``SpecError`` naming the file) that names the field as the user wrote it and its allowed range, before anything
compiles -- for sim configs, ``--set``, sweep files and ``expand_grid``.

* ``check_fields`` (the annotation-driven type check every config goes through): int / float / bool / str /
  Optional / tuple rules, inf only where a field allows it, numpy scalars accepted, tracers skipped;
* each case the issue measured, by entry point (a sim's Python config, ``fa-jax run --set``, ``fa-jax sweep``
  arguments, sweep files, ``expand_grid``);
* oversize grids refused before anything is allocated (seeds = 1e30, range / linspace of 1e9 points).

Nothing here compiles: configs are built and validated only (the CLI cases fail before the sweep engine).
"""
from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest

from fa_jax.cli import main
from fa_jax.config import (
    MAX_INT,
    MAX_RUNS,
    ConfigError,
    apply_overrides,
    check_fields,
    param,
    renamed,
    require_runs,
    traced,
)
from fa_jax.sweep import expand_grid
from fa_jax.sweepfile import SpecError, build_configs, load_spec, parse_spec

NAN, INF = float("nan"), float("inf")


# ----------------------------------------------------------------------------- check_fields
@dataclasses.dataclass(frozen=True)
class Inner:
    n: int = 3
    rate: float = traced(0.5)
    clip: float = traced(INF)  # a default of inf: inf is a value of this field
    cap: float = param(1.0, inf_ok=True)
    flag: bool = False
    name: str = "a"
    opt: int | None = None
    xs: tuple = (1.0, 2.0)
    ns: tuple = (1, 2)
    words: tuple = ("a", "b")
    maybe: tuple = param((1,), empty_ok=True)


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    seed: int = traced(0)


@pytest.mark.parametrize("path,value", [
    ("inner.n", 2.5), ("inner.n", True), ("inner.n", "3"), ("inner.n", NAN), ("inner.n", 10**30),
    ("inner.n", -(2**31) - 1), ("inner.n", None), ("inner.rate", NAN), ("inner.rate", INF), ("inner.rate", -INF),
    ("inner.rate", "0.1"), ("inner.rate", True), ("inner.cap", NAN), ("inner.flag", "false"), ("inner.flag", 1),
    ("inner.flag", None), ("inner.name", 3), ("inner.opt", 2.5), ("inner.opt", "x"), ("inner.xs", "ab"),
    ("inner.xs", 5), ("inner.xs", (1.0, NAN)), ("inner.xs", (1.0, "x")), ("inner.xs", (True,)), ("inner.ns", (2.5,)),
    ("inner.ns", (2**40,)), ("inner.words", (3,)), ("seed", 0.5),
])
def test_check_fields_refuses_and_names_the_path(path, value):
    from fa_jax.config import with_values

    with pytest.raises(ConfigError) as e:
        check_fields(with_values(Outer(), {path: value}))
    assert e.value.param == path and f"invalid {path}=" in str(e.value) and "allowed" in str(e.value)


@pytest.mark.parametrize("path,value", [
    ("inner.n", np.int64(4)), ("inner.n", MAX_INT), ("inner.rate", 1), ("inner.rate", np.float32(0.1)),
    ("inner.clip", INF), ("inner.cap", INF), ("inner.flag", np.bool_(True)), ("inner.opt", None), ("inner.opt", 3),
    ("inner.xs", [1, 2.5]), ("inner.xs", ()), ("inner.ns", (np.int64(3),)), ("seed", np.int32(7)),
])
def test_check_fields_accepts(path, value):
    from fa_jax.config import with_values

    check_fields(with_values(Outer(), {path: value}))


def test_check_fields_nonempty_applies_to_own_tuples_except_empty_ok():
    check_fields(Inner(xs=()))  # not asked
    with pytest.raises(ConfigError, match=r"invalid xs=\(\): allowed a non-empty tuple"):
        check_fields(Inner(xs=()), nonempty=True)
    check_fields(Inner(maybe=()), nonempty=True)
    check_fields(Outer(inner=Inner(xs=())), nonempty=True)  # nested configs: their own validate() decides


def test_check_fields_skips_tracers():
    import jax

    def f(x):
        check_fields(Outer(inner=Inner(rate=x, n=3)))
        return x

    jax.jit(f)(0.5)
    jax.vmap(f)(np.ones(3))


def test_config_error_parts_and_pickle():
    e = ConfigError("lr", "a finite number > 0", -1.0, "checked as optim.lr")
    assert str(e) == "invalid lr=-1.0: allowed a finite number > 0 (checked as optim.lr)"
    assert isinstance(e, ValueError) and (e.param, e.allowed, e.got) == ("lr", "a finite number > 0", -1.0)
    assert str(pickle.loads(pickle.dumps(e))) == str(e)
    assert len(str(ConfigError("xs", "short", tuple(range(1000))))) < 200  # a huge value is cut


def test_renamed_names_the_users_field():
    from fa_jax.optim import OptimConfig

    match = r"invalid optimizer='x': allowed one of .* \(checked as optim.name\)"
    with pytest.raises(ConfigError, match=match), renamed({"optim.name": "optimizer"}):
        OptimConfig(name="x").validate()
    with pytest.raises(ConfigError, match="invalid other"), renamed({"optim.name": "optimizer"}):
        raise ConfigError("other", "x", 1)


def test_require_runs():
    require_runs(MAX_RUNS, "grid", Outer(), "seed")
    with pytest.raises(ConfigError, match=r"invalid seed=\{'seed': 0\}: allowed at most 100000 runs"):
        require_runs(MAX_RUNS + 1, "grid", Outer(), "seed")


# ----------------------------------------------------------------------------- --set parsing
def test_set_text_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"invalid inner.rate='abc': allowed a number"):
        apply_overrides(Outer(), ["inner.rate=abc"])
    with pytest.raises(ConfigError, match=r"invalid rate \(inner.rate\)=''"):
        apply_overrides(Outer(), ["rate="])
    with pytest.raises(ConfigError, match=r"invalid inner.n='2.5': allowed an integer"):
        apply_overrides(Outer(), ["inner.n=2.5"])
    with pytest.raises(ConfigError, match=r"invalid inner.n='inf'"):
        apply_overrides(Outer(), ["inner.n=inf"])
    with pytest.raises(ConfigError, match=r"invalid inner.flag='maybe': allowed true or false"):
        apply_overrides(Outer(), ["inner.flag=maybe"])
    with pytest.raises(ConfigError, match=r"invalid inner.ns='1,x': allowed a comma-separated list of integers"):
        apply_overrides(Outer(), ["inner.ns=1,x"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Outer(), ["inner.n"])


def test_set_empty_tuple_then_refill_keeps_the_element_type():
    cfg = apply_overrides(Outer(), ["inner.ns="])
    assert cfg.inner.ns == ()
    refilled = apply_overrides(cfg, ["inner.ns=4,5"])  # the element type comes from the class default
    assert refilled.inner.ns == (4, 5) and all(type(x) is int for x in refilled.inner.ns)


# ----------------------------------------------------------------------------- the sims: the issue's cases
def _sim(name):
    from fa_jax_sims import get_sim

    return get_sim(name)


def _bad(name: str, field: str, **values):
    mod = _sim(name)
    with pytest.raises(ConfigError) as e:
        dataclasses.replace(mod.PRESETS["quick"], **values).validate()
    assert field in e.value.param.replace("/", " ").split(), str(e.value)
    assert "allowed" in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("name,field,value", [
    ("sgd-support", "wd", INF), ("hold-me-tight", "weight_decay", INF), ("sgd-support", "noise", INF),
    ("feature-averaging", "init_scale", INF), ("sgd-vs-adaptive", "eps_adv", INF),
    ("feature-averaging-real", "eps_max", INF), ("feature-averaging", "n_train", 2.5),
    ("feature-averaging", "pgd_steps", 2.5), ("feature-averaging", "restarts", 2.5),
    ("feature-averaging", "n_points", 2.5), ("feature-averaging", "n_pos", 2.5),
    ("feature-averaging", "bias", "false"), ("sgd-support", "decorrelate", "no"), ("hold-me-tight", "x64", "no"),
    ("feature-averaging", "dyn_seeds", 0), ("feature-averaging", "gran_g", ()),
    ("agop-collapse", "cos_gamma", -1.0), ("agop-collapse", "cos_gamma", NAN),
    ("agop-collapse", "mlp_gain_large", -1.0), ("agop-collapse", "mlp_gain_large", NAN),
    ("agop-collapse", "image_n_per_class", 0), ("agop-collapse", "image_n_per_class", 2.5),
    ("agop-collapse", "image_depth", 0), ("hold-me-tight", "tiny_init_scales", ()),
    ("feature-averaging-real", "data_seed", 2.5), ("feature-averaging", "gran_k", 0),
    ("feature-averaging", "gran_g", (0,)), ("feature-averaging", "phase_k", (2, 0)),
    ("feature-averaging", "s3_widths", (0,)), ("feature-averaging", "dyn_lrs", (0.0,)),
    ("feature-averaging", "seeds", 10**30), ("feature-averaging", "seeds", 60_000),
    ("feature-averaging", "optimizer", "bogus"), ("feature-averaging", "batch_size", 4),
    ("sgd-vs-adaptive", "net_size", 1), ("sgd-vs-adaptive", "net_points", 10**6),
    ("hold-me-tight", "random_dim", 10**4), ("sgd-support", "s", 0),
])
def test_issue_sim_cases(name, field, value):
    _bad(name, field, **{field: value})


def test_phase_d_that_leaves_no_k_scaling_fit():
    msg = _bad("feature-averaging", "phase_d", phase_d=(1,))
    assert "at least 2 distinct values of k" in msg


def test_the_follower_is_not_blamed_for_its_driver():
    """n_agop follows k * n_per_class: --set n_per_class=-1 names n_per_class."""
    cfg = apply_overrides(_sim("agop-collapse").PRESETS["quick"], ["n_per_class=-1"])
    with pytest.raises(ConfigError, match="invalid n_per_class=-1"):
        cfg.validate()


# ----------------------------------------------------------------------------- the CLI
def _cli(capsys, *argv) -> str:
    rc = None
    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = e.code
    assert rc == 2, f"exit {rc}"
    return capsys.readouterr().err


@pytest.mark.parametrize("key,text,named", [
    ("lr", "abc", "invalid lr='abc'"), ("seeds", "1e30", "invalid seeds="), ("seeds", "2.5", "invalid seeds='2.5'"),
    ("phase_k", "2,0", "invalid phase_k="), ("s3_widths", "0", "invalid s3_widths="),
    ("dyn_lrs", "0", "invalid dyn_lrs="), ("bias", "maybe", "invalid bias='maybe'"), ("lr", "", "invalid lr=''"),
])
def test_cli_set_names_the_key(capsys, tmp_path, key, text, named):
    err = _cli(capsys, "run", "feature-averaging", "--preset", "quick", "--set", f"{key}={text}", "--out",
               str(tmp_path / "o"), "--quiet")
    assert named in err and "allowed" in err


def test_cli_set_empty_tuple(capsys, tmp_path):
    err = _cli(capsys, "run", "hold-me-tight", "--preset", "quick", "--set", "tiny_init_scales=", "--out",
               str(tmp_path / "o"), "--quiet")
    assert "invalid tiny_init_scales=()" in err


@pytest.fixture
def ok_spec(tmp_path):
    p = tmp_path / "ok.toml"
    p.write_text('experiment = "linear-regression"\n[fixed]\n"data.d" = 3\n"data.n_train" = 16\n'
                 '"train.steps" = 10\n[axes]\nseed = [0, 1]\n')
    return str(p)


@pytest.mark.parametrize("flag,value,named", [
    ("--chunk-size", "0", "invalid --chunk-size='0'"), ("--chunk-size", "-1", "--chunk-size"),
    ("--chunk-size", "2.5", "--chunk-size"), ("--memory-budget", "inf", "invalid --memory-budget='inf'"),
    ("--memory-budget", "infGB", "--memory-budget"), ("--memory-budget", "0", "--memory-budget"),
    ("--wait", "nan", "invalid --wait=nan"), ("--wait", "-1", "--wait"),
])
def test_cli_sweep_arguments(capsys, tmp_path, ok_spec, flag, value, named):
    err = _cli(capsys, "sweep", ok_spec, "--out", str(tmp_path / "out"), "--quiet", flag, value)
    assert named in err and "allowed" in err


def test_cli_paths(capsys, tmp_path, ok_spec):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    err = _cli(capsys, "sweep", str(tmp_path), "--out", str(tmp_path / "out"))
    assert f"{tmp_path}: is a folder, not a sweep file" in err
    err = _cli(capsys, "sweep", ok_spec, "--out", str(a_file))
    assert f"invalid --out={str(a_file)!r}: it is a file" in err
    err = _cli(capsys, "run", "feature-averaging", "--preset", "quick", "--out", str(a_file))
    assert f"invalid --out={str(a_file)!r}: it is a file" in err


# ----------------------------------------------------------------------------- sweep files
LIN = {"experiment": "linear-regression", "fixed": {"data.d": 3, "data.n_train": 16, "train.steps": 10}}
FA = {"experiment": "feature-averaging",
      "fixed": {"data.d": 16, "data.k": 4, "data.n_pos": 2, "data.n_train": 32, "data.n_test": 32,
                "attack.n_points": 16, "attack.record_points": 16}}


def _spec_error(doc, *needles):
    with pytest.raises(SpecError) as e:
        build_configs(parse_spec(doc, source="my_sweep.toml"))
    msg = str(e.value)
    assert msg.startswith("my_sweep.toml: ") and all(n in msg for n in needles), msg
    return msg


@pytest.mark.parametrize("extra,needles", [
    ({"axes": {"seed": [0.5, 1.5, 0, 1]}}, ("axis 'seed'", "0.5 is not allowed")),
    ({"axes": {"seed": [0, 0]}}, ("axis 'seed'", "repeated values")),
    ({"axes": {"optim.lr": {}}}, ("axis 'optim.lr' is an empty table",)),
    ({"fixed": {**LIN["fixed"], "optim.lr": {}}}, ("[fixed]: key 'optim.lr' is an empty table",)),
    ({"axes": {"seed": {"range": [0, 10**9]}}}, ("axis 'seed'", "1000000000 values", "at most 100000")),
    ({"axes": {"seed": {"range": [0, 1e9]}}}, ("axis 'seed'", "of integers")),
    ({"axes": {"optim.lr": {"linspace": [0.1, 1, 10**9]}}}, ("axis 'optim.lr'", "n = 1000000000")),
    ({"axes": {"optim.lr": {"logspace": [-3, 400, 3]}}}, ("axis 'optim.lr'", "overflows")),
    ({"axes": {"optim.lr": {"linspace": [NAN, 1, 3]}}}, ("axis 'optim.lr'", "finite")),
    ({"axes": {"data.d": {"range": [1, 10**5]}, "seed": {"range": [0, 10**3]}}}, ("[axes]", "at most 100000")),
    ({"axes": {"optim.lr": [1e-3, NAN]}}, ("invalid optim.lr=nan",)),
    ({"axes": {"optim.eps": [INF]}}, ("invalid optim.eps=inf",)),
    ({"fixed": {**LIN["fixed"], "data.noise": INF}}, ("[fixed]", "invalid data.noise=inf")),
    ({"axes": {"data.d": [3.5]}}, ("invalid data.d=3.5", "an integer")),
    ({"axes": {"data.noise": [0.1, 0.1]}}, ("axis 'data.noise'", "give each value once")),
    ({"axes": {"optim.lr": {"scale": [INF]}}}, ("axis 'optim.lr'", "finite numbers > 0")),
    ({"engine": {"max_chunk": -1}}, ("invalid engine.max_chunk=-1",)),
    ({"engine": {"memory_budget": INF}}, ("engine.memory_budget", "invalid memory size inf")),
    ({"engine": {"memory_fraction": True}}, ("invalid engine.memory_fraction=True",)),
    ({"engine": 3}, ("invalid engine=3",)), ({"name": 3}, ("invalid name=3",)),
    ({"analysis": "bogus"}, ("key 'analysis'", "'bogus'")),
    ({"axes": {"regime": {"cases": {"a": {"seed": 1.5}}}}}, ("grid point (regime='a')", "invalid seed=1.5")),
])
def test_sweep_file_cases(extra, needles):
    _spec_error({**LIN, **extra}, *needles)


@pytest.mark.parametrize("extra,needles", [
    ({"fixed": {**FA["fixed"], "model.bucket": -3}}, ("[fixed]: 'model.bucket' is set by the width bucket policy",)),
    ({"axes": {"model.width": [0, 3]}}, ("invalid model.width=0",)),
    ({"fixed": {**FA["fixed"], "data_seed": 2.5}}, ("invalid data_seed=2.5",)),
    ({"axes": {"attack.steps": [2.5]}}, ("invalid attack.steps=2.5",)),
    ({"axes": {"attack.eps_max": [INF]}}, ("invalid attack.eps_max=inf",)),
    ({"axes": {"model.bias": ["no"]}}, ("invalid model.bias='no'", "true or false")),
    ({"axes": {"model.bias": ["false", 0]}}, ("the values 'false' and 0 both set model.bias = False",)),
])
def test_sweep_file_cases_feature_averaging(extra, needles):
    _spec_error({**FA, **extra}, *needles)


def test_sweep_file_coercion_of_valid_spellings():
    """linspace gives floats: integral ones set integer fields; TOML booleans, "true"/"false" and 0/1 set booleans."""
    cfgs = build_configs(parse_spec({**LIN, "axes": {"train.steps": {"linspace": [10, 20, 3]}}}))
    assert [c.train.steps for c in cfgs] == [10, 15, 20] and all(type(c.train.steps) is int for c in cfgs)
    cfgs = build_configs(parse_spec({**FA, "axes": {"model.bias": ["true", 0]}}))
    assert [c.model.bias for c in cfgs] == [True, False]


def test_load_spec_unreadable(tmp_path):
    with pytest.raises(SpecError, match="is a folder, not a sweep file"):
        load_spec(tmp_path)
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SpecError, match=r"b\.toml: malformed TOML"):
        load_spec(binary)


# ----------------------------------------------------------------------------- expand_grid
def test_expand_grid_checks():
    from fa_jax.experiments.feature_averaging import FARun

    assert len(expand_grid(FARun(), {"optim.lr": np.linspace(1e-3, 1e-2, 3), "data_seed": np.arange(2)})) == 6
    for axes, match in [({"data_seed": range(10**9)}, r"invalid data_seed='1000000000 values'"),
                        ({"optim.lr": []}, r"invalid optim.lr=\[\]: allowed a non-empty sequence"),
                        ({"optim.lrr": [1e-3]}, r"invalid optim.lrr=\[0.001\]: allowed a dotted path"),
                        ({"data_seed": [0.5]}, r"invalid data_seed=0.5"),
                        ({"optim.lr": "abc"}, r"invalid optim.lr='abc'"),
                        ({"model.bias": ["false"]}, r"invalid model.bias='false'"),
                        ({"data_seed": range(1000), "optim.lr": np.ones(1000)}, r"invalid data_seed/optim.lr="),
                        ({"attack.eps_max": [math.inf]}, r"invalid attack.eps_max=inf")]:
        with pytest.raises(ConfigError, match=match):
            expand_grid(FARun(), axes)


# ----------------------------------------------------------------------------- run_sweep / plan_chunks
def test_run_sweep_type_checks_configs_handed_to_it():
    """Configs passed to the Python ``run_sweep`` directly (not through a sim, sweep file or expand_grid) are
    type-checked before anything is traced: the error names the run and the field."""
    import dataclasses

    from fa_jax.experiments.feature_averaging import FARun, run_feature_averaging
    from fa_jax.sweep import plan_chunks, run_sweep

    good = FARun()
    bad_lr = dataclasses.replace(good, optim=dataclasses.replace(good.optim, lr="0.1"))
    bad_seed = dataclasses.replace(good, data_seed=2.5)
    for configs, match in [([good, bad_lr], r"invalid configs\[1\]\.optim\.lr='0\.1'"),
                           ([bad_seed], r"invalid configs\[0\]\.data_seed=2\.5"),
                           ([good, {"optim.lr": 0.1}], r"invalid configs\[1\]=.*config dataclass"),
                           ("FARun", r"invalid configs='FARun'")]:
        with pytest.raises(ConfigError, match=match):
            run_sweep(run_feature_averaging, configs)
        with pytest.raises(ConfigError, match=match):
            plan_chunks(run_feature_averaging, configs, files=False)
