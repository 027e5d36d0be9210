"""Property-based tests of the validation layer (issue 21), with hypothesis.

* every field of every sim's quick preset: a generated bad value of the field's kind (wrong type, nan, inf,
  negative, zero counts, empty tuples, huge sizes, unknown choices) makes ``validate()`` raise
  :class:`fa_jax.config.ConfigError` naming that field -- never another exception, never silent acceptance;
* small perturbations of the preset values inside their ranges pass ``validate()``;
* the sweep-file grammar: generated specs with one bad axis or ``[fixed]`` value raise ``SpecError`` naming the
  file and the key; generated valid small grids build.

Nothing compiles (``validate()``, ``parse_spec``, ``build_configs`` only). The default is a few examples per field
family (the whole file runs in seconds); ``HYPOTHESIS_PROFILE=deep python -m pytest tests/test_fuzz.py`` runs the
profile ``deep`` registered in ``tests/conftest.py`` (hundreds of examples per test) instead. A tally over >= 1000
fixed bad inputs through every entry point, the CLI included: ``python tests/fuzz_report.py``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fa_jax.config import MAX_INT, ConfigError
from fa_jax.sweepfile import SpecError, build_configs, parse_spec

PROFILE = os.environ.get("HYPOTHESIS_PROFILE")  # e.g. "deep", registered in tests/conftest.py
if PROFILE:
    settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """``n`` by default (seconds for the whole file); the loaded profile's count under ``HYPOTHESIS_PROFILE``."""
    return settings.default.max_examples if PROFILE else n


def fuzz_settings(n: int):
    return settings(max_examples=examples(n), deadline=None, database=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- the sims' fields
SIMS = ("agop-collapse", "feature-averaging", "feature-averaging-real", "hold-me-tight", "sgd-support",
        "sgd-vs-adaptive")
FREE_TEXT = {"data_dir"}  # any string is a path


def _sim(name):
    from fa_jax_sims import get_sim

    return get_sim(name)


def _kind(hint):
    """('int' | 'float' | 'bool' | 'str' | 'tuple', optional) of a field annotation."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) is not tuple \
        else hint
    base = tuple if typing.get_origin(base) is tuple else base
    return {bool: "bool", int: "int", float: "float", str: "str", tuple: "tuple"}[base], optional


def _elem(default) -> str:
    if default and all(isinstance(v, str) for v in default):
        return "str"
    if default and all(isinstance(v, int) and not isinstance(v, bool) for v in default):
        return "int"
    return "float"


def _fields(name):
    cls = type(_sim(name).PRESETS["quick"])
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


FIELDS = [(name, f.name) for name in SIMS for f, _ in _fields(name)]


def bad_value(name: str, fname: str):
    """A strategy of values of ``name``'s field ``fname`` that are wrong for it whatever the other fields are."""
    f, hint = next((f, h) for f, h in _fields(name) if f.name == fname)
    kind, optional = _kind(hint)
    default = f.default
    nan, inf = float("nan"), float("inf")
    none = [] if optional else [st.none()]
    # every sim number is >= 0 (counts, sizes, seeds, rates, scales, fractions): a negative one is always wrong
    if kind == "int":
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not float(x).is_integer()),
                         st.booleans(), st.text(max_size=5), st.integers(min_value=MAX_INT + 1),
                         st.integers(max_value=-1), st.lists(st.integers(), max_size=2), *none)
    if kind == "float":
        infs = [st.just(-inf)] + ([] if f.metadata.get("inf_ok") else [st.just(inf)])
        return st.one_of(st.just(nan), *infs, st.floats(max_value=-1e-6, allow_infinity=False), st.booleans(),
                         st.text(max_size=5), st.lists(st.floats(), max_size=2), *none)
    if kind == "bool":
        return st.one_of(st.text(max_size=5), st.integers(), st.floats(), *none)
    if kind == "str":
        bad = [st.integers(), st.floats(), st.booleans(), st.tuples(st.text(max_size=3)), *none]
        if fname not in FREE_TEXT:
            bad.append(st.text(max_size=8).map(lambda t: "bogus-" + t))
        return st.one_of(*bad)
    elem = _elem(default)
    if elem == "str":
        bad_elem = st.one_of(st.integers(), st.none(), st.text(max_size=5).map(lambda t: "bogus-" + t))
    elif elem == "int":
        bad_elem = st.one_of(st.floats().filter(lambda x: not float(x).is_integer()), st.booleans(),
                             st.text(max_size=3), st.integers(max_value=-1), st.integers(min_value=MAX_INT + 1))
    else:
        bad_elem = st.one_of(st.just(nan), st.just(inf), st.just(-inf), st.booleans(), st.text(max_size=3),
                             st.floats(max_value=-1e-6, allow_infinity=False))
    good = [st.just(v) for v in default] or [st.just(1)]
    tuples = st.tuples(st.lists(st.one_of(*good), max_size=2), bad_elem, st.lists(st.one_of(*good), max_size=2)).map(
        lambda t: (*t[0], t[1], *t[2]))
    empty = [] if f.metadata.get("empty_ok") else [st.just(())]
    return st.one_of(tuples, st.text(max_size=5), st.integers(), *empty, *none)


def _names(err: ConfigError, field: str) -> bool:
    return field in err.param.replace("/", " ").split()


@pytest.mark.parametrize("name,fname", FIELDS)
@fuzz_settings(12)
@given(data=st.data())
def test_bad_field_values_give_a_named_error(name, fname, data):
    value = data.draw(bad_value(name, fname), label=fname)
    cfg = dataclasses.replace(_sim(name).PRESETS["quick"], **{fname: value})
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert _names(e.value, fname), f"{fname}={value!r}: the error names {e.value.param!r}: {e.value}"


# fields whose valid range is bounded above by another field (an upward step may leave it): not perturbed
COUPLED = {"feature-averaging": {"n_pos", "n_points", "gran_k"},
           "agop-collapse": {"mean_spread", "nonorth_cosine", "n_agop"},
           # quick: the figure runs ARE the label-noise family (its noise / lr coupled, its own steps / seeds refused)
           "sgd-support": {"noise", "lr", "ln_noise", "ln_lr", "ln_steps", "ln_gd_steps", "ln_seeds"},
           "sgd-vs-adaptive": {"net_select_seeds", "net_frac_irrelevant"},
           # hold-me-tight quick runs the official recipe: the fa-jax recipe's fields keep their defaults there
           "hold-me-tight": {"init_scale", "lr", "epochs", "image_lr", "image_epochs"},
           "feature-averaging-real": set()}


def _perturbable(name):
    return [f.name for f, h in _fields(name) if _kind(h)[0] in ("int", "float") and f.name not in COUPLED[name]
            and isinstance(getattr(_sim(name).PRESETS["quick"], f.name), (int, float))
            and not isinstance(getattr(_sim(name).PRESETS["quick"], f.name), bool)]


@pytest.mark.parametrize("name", SIMS)
@fuzz_settings(25)
@given(data=st.data())
def test_small_perturbations_of_the_quick_preset_pass(name, data):
    """One or two numeric fields moved up a little (ints +0..2, numbers x1..2) stay valid."""
    base = _sim(name).PRESETS["quick"]
    fields = data.draw(st.lists(st.sampled_from(_perturbable(name)), min_size=1, max_size=2, unique=True))
    new = {}
    for fname in fields:
        v = getattr(base, fname)
        if isinstance(v, int):
            new[fname] = v + data.draw(st.integers(0, 2), label=fname)
        else:
            new[fname] = v * data.draw(st.floats(1.0, 2.0), label=fname)
    dataclasses.replace(base, **new).validate()


# ----------------------------------------------------------------------------- the sweep-file grammar
LIN = {"experiment": "linear-regression", "fixed": {"data.d": 3, "data.n_train": 16, "train.steps": 10}}
SOURCE = "fuzzed.toml"
# the linear-regression experiment's numeric fields, by kind (what a bad value of each kind is)
INT_PATHS = ("data.d", "data.n_train", "data.n_test", "train.steps", "train.n_records")
FLOAT_PATHS = ("optim.lr", "data.noise", "init_scale", "optim.eps", "optim.momentum", "optim.weight_decay")
BOOL_LIKE = st.one_of(st.text(min_size=1, max_size=5).filter(lambda t: t.strip().lower() not in ("true", "false",
                                                                                                 "none", "null")),
                      st.integers().filter(lambda i: i not in (0, 1)), st.floats())

finite = st.floats(allow_nan=False, allow_infinity=False)
bad_int = st.one_of(st.floats().filter(lambda x: not float(x).is_integer()), st.booleans(),
                    st.text(min_size=1, max_size=4).filter(lambda t: t.lower() not in ("none", "null")),
                    st.integers(min_value=MAX_INT + 1, max_value=2**62), st.integers(max_value=-1, min_value=-2**62))
bad_float = st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.booleans(),
                      st.text(min_size=1, max_size=4).filter(lambda t: t.lower() not in ("none", "null")))


@st.composite
def bad_axis(draw):
    """``(key the error must name, the spec's extra part)``: one bad axis or [fixed] value."""
    which = draw(st.sampled_from(["int", "float", "seed", "range", "linspace", "empty", "table", "scale",
                                  "fixed", "oversize"]))
    if which == "int":
        p = draw(st.sampled_from(INT_PATHS))
        return p, {"axes": {p: [draw(bad_int)]}}
    if which == "float":
        p = draw(st.sampled_from(FLOAT_PATHS))
        return p, {"axes": {p: draw(st.lists(finite.map(abs).filter(lambda x: x > 0), max_size=2, unique=True))
                            + [draw(bad_float)]}}
    if which == "seed":
        v = draw(st.one_of(st.floats().filter(lambda x: not float(x).is_integer()), st.booleans(), st.text(max_size=3),
                           st.integers(max_value=-1), st.integers(min_value=MAX_INT + 1, max_value=2**62)))
        return "seed", {"axes": {"seed": [0, v]}}
    if which == "range":
        stop = draw(st.one_of(st.integers(min_value=200_000, max_value=2**62), st.floats(allow_nan=True),
                              st.booleans(), st.text(max_size=3)))
        return "seed", {"axes": {"seed": {"range": [0, stop]}}}
    if which == "linspace":
        n = draw(st.one_of(st.integers(min_value=200_000, max_value=2**62), st.integers(max_value=0),
                           st.floats(), st.text(max_size=3)))
        return "optim.lr", {"axes": {"optim.lr": {draw(st.sampled_from(["linspace", "logspace"])): [-3, -1, n]}}}
    if which == "empty":
        return "optim.lr", {"axes": {"optim.lr": draw(st.sampled_from([[], {}, {"values": []}]))}}
    if which == "table":
        return "optim.lr", {"fixed": {**LIN["fixed"], "optim.lr": {}}}
    if which == "scale":
        f = draw(st.one_of(st.floats(max_value=0.0), st.just(math.inf), st.just(math.nan), st.text(max_size=3)))
        return "optim.lr", {"axes": {"optim.lr": {"scale": [1.0, f]}}}
    if which == "fixed":
        p = draw(st.sampled_from(INT_PATHS + FLOAT_PATHS))
        return p, {"fixed": {**LIN["fixed"], p: draw(bad_int if p in INT_PATHS else bad_float)}}
    a, b = draw(st.integers(400, 2000)), draw(st.integers(400, 2000))
    return "[axes]", {"axes": {"seed": {"range": [0, a]}, "data.d": {"range": [1, b]}}}


@fuzz_settings(150)
@given(case=bad_axis())
def test_bad_sweep_specs_give_a_named_error(case):
    key, extra = case
    with pytest.raises(SpecError) as e:
        build_configs(parse_spec({**LIN, **extra}, source=SOURCE))
    msg = str(e.value)
    assert msg.startswith(f"{SOURCE}: ") and key in msg, msg


@fuzz_settings(20)
@given(seeds=st.integers(1, 4), lrs=st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=3, unique=True),
       steps=st.integers(2, 50))
def test_valid_small_sweep_specs_build(seeds, lrs, steps):
    spec = parse_spec({**LIN, "fixed": {**LIN["fixed"], "train.steps": steps},
                       "axes": {"seed": {"range": [0, seeds]}, "optim.lr": lrs}}, source=SOURCE)
    cfgs = build_configs(spec)
    assert len(cfgs) == seeds * len(lrs) and {c.train.steps for c in cfgs} == {steps}
