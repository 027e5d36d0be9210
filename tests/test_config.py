"""fa_jax.config: traced/static split, overrides and their parsing, and bad-config errors (ValueError naming the
parameter) raised before anything compiles."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from fa_jax.config import (
    apply_overrides,
    is_traced,
    param,
    require,
    static_key,
    to_dict,
    traced,
    traced_values,
    with_values,
)
from fa_jax.data.clusters import ClusterData
from fa_jax.experiments.feature_averaging import AttackConfig, FARun
from fa_jax.losses import get_loss
from fa_jax.models.two_layer import TwoLayerNet
from fa_jax.optim import OPTIMIZERS, OptimConfig, make_optimizer
from fa_jax.trainer import TrainConfig


@dataclasses.dataclass(frozen=True)
class Inner:
    n: int = 3
    rate: float = traced(0.5)
    flag: bool = False
    xs: tuple = (1.0, 2.0)
    ns: tuple = (1, 2)
    opt: int | None = None
    name: str = "a"


@dataclasses.dataclass(frozen=True)
class Outer:
    a: Inner = Inner()
    b: Inner = Inner()
    seed: int = traced(0)
    top: int = 7


# ----------------------------------------------------------------------------- traced / static
def test_traced_values_lists_only_traced_fields():
    cfg = Outer()
    assert traced_values(cfg) == {"a.rate": 0.5, "b.rate": 0.5, "seed": 0}
    assert {f.name for f in dataclasses.fields(Inner) if is_traced(f)} == {"rate"}


def test_static_key_ignores_traced_and_sees_static():
    cfg = Outer()
    assert static_key(cfg) == static_key(with_values(cfg, {"a.rate": 9.0, "seed": 4}))
    assert static_key(cfg) != static_key(with_values(cfg, {"a.n": 4}))
    assert static_key(cfg) != static_key(with_values(cfg, {"top": 8}))
    keys = json.loads(static_key(cfg))
    assert "a.rate" not in keys and "seed" not in keys and keys["a.n"] == 3


def test_fa_static_vs_traced_fields():
    """Spec Sec. 6: static d, n, m-bucket, cluster bucket, T, PGD steps; traced lr, init scale, sigma, split, seeds,
    width, and k and g inside their cluster bucket (fa_jax.data.clusters)."""
    tv = traced_values(FARun().validate())
    for p in ("optim.lr", "model.init_scale", "data.sigma", "data.n_pos", "data_seed", "model_seed", "model.width",
              "data.k", "data.groups"):
        assert p in tv, p
    sk = json.loads(static_key(FARun().validate()))
    for p in ("data.d", "data.bucket", "data.n_train", "model.bucket", "train.steps", "attack.steps", "optim.name"):
        assert p in sk, p
    assert "data.k" not in sk and sk["data.bucket"] == 10


def test_with_values_nested_and_frozen():
    cfg = Outer()
    new = with_values(cfg, {"a.rate": 2.0, "b.n": 5, "seed": 3})
    assert (new.a.rate, new.a.n, new.b.rate, new.b.n, new.seed) == (2.0, 3, 0.5, 5, 3)
    assert cfg.a.rate == 0.5 and cfg.b.n == 3  # original untouched


def test_to_dict_round_trip():
    d = to_dict(Outer())
    assert d["a"]["rate"] == 0.5 and d["seed"] == 0
    assert Outer(a=Inner(**d["a"]), b=Inner(**d["b"]), seed=d["seed"], top=d["top"]) == Outer()


# ----------------------------------------------------------------------------- overrides
def test_override_unknown_key():
    with pytest.raises(ValueError, match="nope"):
        apply_overrides(Outer(), {"nope": "1"})


def test_override_ambiguous_key_names_candidates():
    with pytest.raises(ValueError, match=r"ambiguous.*a\.n.*b\.n"):
        apply_overrides(Outer(), {"n": "4"})
    # FA: "steps" is both train.steps and attack.steps
    with pytest.raises(ValueError, match=r"train\.steps"):
        apply_overrides(FARun(), ["steps=10"])
    # the dotted path disambiguates
    assert apply_overrides(FARun(), ["train.steps=10"]).train.steps == 10


def test_override_unique_suffix_resolves():
    cfg = apply_overrides(FARun(), {"lr": "0.05", "d": "128"})
    assert cfg.optim.lr == 0.05 and isinstance(cfg.optim.lr, float)
    assert cfg.data.d == 128 and isinstance(cfg.data.d, int)


@pytest.mark.parametrize("text,expected", [("4", 4), (" 12 ", 12), ("1e2", 100), ("2.0", 2)])
def test_override_int_parsing(text, expected):
    v = apply_overrides(Outer(), {"top": text}).top
    assert v == expected and type(v) is int


def test_override_int_rejects_fraction():
    with pytest.raises(ValueError, match="integer"):
        apply_overrides(Outer(), {"top": "2.5"})


@pytest.mark.parametrize("text,expected", [("0.25", 0.25), ("1e-3", 1e-3), ("3", 3.0), ("inf", math.inf)])
def test_override_float_parsing(text, expected):
    v = apply_overrides(Outer(), {"a.rate": text}).a.rate
    assert v == expected and type(v) is float


@pytest.mark.parametrize("text,expected", [("true", True), ("True", True), ("1", True), ("yes", True),
                                           ("on", True), ("false", False), ("0", False), ("no", False),
                                           ("OFF", False)])
def test_override_bool_parsing(text, expected):
    v = apply_overrides(Outer(), {"a.flag": text}).a.flag
    assert v is expected


def test_override_bool_rejects_garbage():
    with pytest.raises(ValueError, match="boolean"):
        apply_overrides(Outer(), {"a.flag": "maybe"})


def test_override_tuple_parsing():
    cfg = apply_overrides(Outer(), {"a.xs": "0.5,1.5,2", "a.ns": "(3, 4)", "b.xs": "[7]"})
    assert cfg.a.xs == (0.5, 1.5, 2.0) and all(type(x) is float for x in cfg.a.xs)
    assert cfg.a.ns == (3, 4) and all(type(x) is int for x in cfg.a.ns)
    assert cfg.b.xs == (7.0,)


def test_override_none_parsing():
    cfg = apply_overrides(Outer(), {"a.opt": "5", "b.opt": "none", "a.n": "None"})
    assert cfg.a.opt == 5 and type(cfg.a.opt) is int
    assert cfg.b.opt is None and cfg.a.n is None
    assert apply_overrides(Outer(), {"a.opt": "0.5"}).a.opt == 0.5
    assert apply_overrides(FARun(), ["groups=5"]).data.groups == 5
    assert apply_overrides(FARun(), ["batch_size=null"]).optim.batch_size is None


def test_override_string_and_list_forms():
    cfg = apply_overrides(Outer(), ["a.name=hello=world", "seed=3"])
    assert cfg.a.name == "hello=world" and cfg.seed == 3
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(Outer(), ["seed"])
    # non-string values pass through unparsed
    assert apply_overrides(Outer(), {"a.rate": 0.125}).a.rate == 0.125


@dataclasses.dataclass(frozen=True)
class Follows:
    n: int = 12
    half: int = traced(6, follows="n // 2")  # a traced follower
    divs: tuple = param((1, 2, 3, 4, 6, 12), follows="tuple(g for g in range(1, n + 1) if n % g == 0)")


def test_dependent_defaults_follow_their_driver_in_run_configs():
    """A follower moves with its driver (nested: feature-averaging's data.n_pos = data.k // 2, hold-me-tight's
    synth.n_noise = side^2 / 2) unless set too; it stays traced; a rule may use a comprehension."""
    assert apply_overrides(FARun(), ["data.k=4"]).data.n_pos == 2
    assert apply_overrides(FARun(), ["k=7"]).data.n_pos == 3  # the unique last component
    assert apply_overrides(FARun(), ["data.k=4", "data.n_pos=1"]).data.n_pos == 1  # explicit wins
    assert apply_overrides(FARun(), ["data.d=64"]) == FARun(data=ClusterData(d=64))  # other fields: nothing moves
    assert "data.n_pos" in traced_values(apply_overrides(FARun(), ["data.k=4"]))
    from fa_jax.experiments.hold_me_tight import HMTRun

    assert apply_overrides(HMTRun(), ["synth.side=8"]).synth.n_noise == 32
    cfg = apply_overrides(Follows(), ["n=10"])
    assert (cfg.half, cfg.divs) == (5, (1, 2, 5, 10)) and is_traced(dataclasses.fields(Follows)[1])
    assert apply_overrides(Follows(half=1), ["n=10"]).half == 1  # a value set off the rule stays
    with pytest.raises(SyntaxError):  # a malformed rule fails where it is declared
        traced(1, follows="n //")


def test_require_message_names_parameter():
    require(True, "x.y", "anything", 1)
    with pytest.raises(ValueError, match=r"x\.y.*allowed >= 1"):
        require(False, "x.y", ">= 1", 0)


# ----------------------------------------------------------------------------- bad configs
def _fa(**kw) -> FARun:
    data = dict(d=64, k=4, n_pos=2, n_train=32, n_test=32)
    model, optim, attack = {}, {}, dict(n_points=16, record_points=16)
    for k, v in kw.items():
        group, _, name = k.partition("__")
        {"data": data, "model": model, "optim": optim, "attack": attack}[group][name] = v
    return FARun(data=ClusterData(**data), model=TwoLayerNet(**model), optim=OptimConfig(**optim),
                 train=TrainConfig(steps=5, n_records=2), attack=AttackConfig(**attack))


def test_good_config_validates():
    cfg = _fa().validate()
    assert cfg.model.bucket == cfg.model.width  # bucket pinned as the static shape


BAD = [
    (dict(data__k=65), r"data\.k"),  # k > d
    (dict(data__k=1, data__n_pos=1), r"data\.k"),  # k < 2
    (dict(data__n_pos=0), r"data\.n_pos"),  # J+ empty
    (dict(data__n_pos=4), r"data\.n_pos"),  # J- empty (n_pos = k)
    (dict(model__width=0), r"model\.width"),
    (dict(model__width=-2), r"model\.width"),
    (dict(model__width=3, model__bucket=2), r"model\.bucket"),
    (dict(model__kind="ternary"), r"model\.kind"),
    (dict(optim__lr=0.0), r"optim\.lr"),
    (dict(optim__lr=-1e-3), r"optim\.lr"),
    (dict(optim__lr=float("nan")), r"optim\.lr"),
    (dict(optim__lr=float("inf")), r"optim\.lr"),
    (dict(optim__name="sgd", optim__batch_size=33), r"optim\.batch_size"),  # > n_train
    (dict(optim__name="sgd", optim__batch_size=0), r"optim\.batch_size"),
    (dict(optim__batch_size=8), r"optim\.name"),  # gd means full batch
    (dict(optim__name="lion"), r"optim\.name"),
    (dict(optim__name="sgd", optim__batch_size=8, optim__sampling="stratified"), r"optim\.sampling"),
    (dict(optim__name="momentum", optim__momentum=1.0), r"optim\.momentum"),
    (dict(data__sigma=-0.5), r"data\.sigma"),
    (dict(data__sigma=float("nan")), r"data\.sigma"),
    (dict(model__kind="multiclass", data__groups=3), r"data\.groups"),  # 3 does not divide k = 4
    (dict(model__kind="multiclass", data__k=6, data__n_pos=3, data__groups=3), r"data\.groups"),  # s=2 !| n_pos=3
    (dict(data__groups=2), r"data\.groups"),  # binary model with super-classes
    (dict(attack__n_points=33), r"attack\.n_points"),
]


@pytest.mark.parametrize("kw,param", BAD, ids=[p.replace("\\", "") + f"-{i}" for i, (_, p) in enumerate(BAD)])
def test_bad_config_raises_value_error_naming_parameter(kw, param):
    with pytest.raises(ValueError, match=param):
        _fa(**kw).validate()


def test_batch_size_equal_n_train_allowed():
    _fa(optim__name="sgd", optim__batch_size=32).validate()


def test_groups_dividing_k_allowed():
    cfg = _fa(model__kind="multiclass", data__k=6, data__n_pos=4, data__groups=3).validate()
    assert cfg.data.classes == 3 and cfg.data.n_classes == 6  # 6 outputs (one per cluster slot), 3 of them real


def test_train_config_errors():
    with pytest.raises(ValueError, match=r"train\.steps"):
        TrainConfig(steps=0).validate()
    with pytest.raises(ValueError, match=r"train\.n_records"):
        TrainConfig(n_records=1).validate()
    with pytest.raises(ValueError, match=r"train\.plan"):
        TrainConfig(plan="cubic").validate()


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="hinge"):
        get_loss("hinge")
    with pytest.raises(ValueError, match="loss"):
        get_loss("hinge")


def test_unknown_optimizer_name_direct():
    with pytest.raises(ValueError, match=r"optim\.name"):
        make_optimizer(OptimConfig(name="lion"))
    assert "lion" not in OPTIMIZERS
