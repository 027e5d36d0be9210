"""The command line as a newcomer meets it: ``fa-jax run NAME --help`` documents every config field of every sim
(value, type, description, alias, followed rule, allowed range), ``fa-jax list`` shows each sim with a description
and its measured wall times, ``--set`` takes a field's name or its sweep-file dotted path (one grammar), unknown keys
get close matches, and dependent defaults (feature-averaging's ``n_pos``) follow their driver. Nothing here trains or
compiles: configs only."""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re

import fa_jax_sims as sims
import pytest

from fa_jax import cli
from fa_jax.config import _walk, apply_overrides, param, rule_value
from fa_jax.experiments.feature_averaging import FARun

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _norm(text: str) -> str:
    return " ".join(text.split())


def _no_run(monkeypatch, mod):
    def boom(*a, **k):
        raise AssertionError("--help must not run the simulation")

    monkeypatch.setattr(mod, "run", boom)


# ----------------------------------------------------------------------------- fa-jax run NAME --help
@pytest.mark.parametrize("name", sims.NAMES)
def test_run_help_lists_every_field_with_value_type_and_description(name, capsys, monkeypatch):
    mod = sims.get_sim(name)
    _no_run(monkeypatch, mod)
    assert cli.main(["run", name, "--help"]) == 0
    out = capsys.readouterr().out
    cfg = mod.PRESETS["default"]
    docs = cli.field_docs(type(cfg))
    rows = {ln.split()[0]: ln for ln in out.splitlines() if re.match(r"  [^\s#]", ln)}  # not wrapped lines
    for f in dataclasses.fields(cfg):
        desc = docs[f.name][1]
        assert desc, f"{name}: field {f.name} has no description (a trailing comment in its config class)"
        assert f.name in rows, f"{name}: --help does not list {f.name}"
        assert str(f.type) in rows[f.name] and cli._value_text(getattr(cfg, f.name)) in rows[f.name]
        assert _norm(desc) in _norm(out)
    assert name in out and sims.DESCRIPTIONS[name] in _norm(out)


def test_run_help_shows_preset_values_after_set_ranges_aliases_and_rules(capsys):
    assert cli.main(["run", "feature-averaging", "--preset", "quick", "--set", "k=6", "--help"]) == 0
    out = _norm(capsys.readouterr().out)
    assert "preset 'quick'" in out
    assert "k int 6 " in out and "n_pos int 3 " in out  # after --set, with n_pos followed
    assert "--set data.n_pos" in out and "default follows k // 2" in out and "1 <= n_pos <= k - 1" in out
    assert "n_test int 300 " in out  # the quick preset's value
    # a range stated by validate()'s f-string, evaluated on the shown config
    assert "divisors g of gran_k=10 with k/g dividing k/2" in out
    agop = sims.get_sim("agop-collapse").PRESETS["default"]
    assert "2 <= k <= d = 128" in cli.allowed_ranges(type(agop), agop)["k"]


def test_run_help_without_name_lists_the_sims(capsys):
    assert cli.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in sims.NAMES)
    with pytest.raises(SystemExit):
        cli.main(["run"])


def test_field_docs_reads_trailing_comments_docstrings_and_headings():
    @dataclasses.dataclass(frozen=True)
    class C:
        # a group
        # of fields
        a: int = 1  # the a
        b: float = 2.0
        """the b, as an attribute docstring"""
        c: tuple = (1,
                    2)  # the c, on a wrapped line

    docs = cli.field_docs(C)
    assert docs == {"a": ("a group of fields", "the a"), "b": ("", "the b, as an attribute docstring"),
                    "c": ("", "the c, on a wrapped line")}


# ----------------------------------------------------------------------------- fa-jax list
def test_list_shows_descriptions_presets_and_wall_times(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    times = cli.wall_times()
    for name in sims.NAMES:
        assert name in out and sims.DESCRIPTIONS[name] in out
        assert f"quick {times[name]['quick']}, default {times[name]['default']}" in out
        assert ", ".join(sims.get_sim(name).PRESETS) in out
    # the default time is the committed note where there is one, else the committed summary's own
    with open(ROOT / "figures" / "summary.json") as f:
        m = json.load(f)["metrics"]
    with open(ROOT / "figures" / "wall_times.json") as f:
        note = json.load(f)["default"].get("feature-averaging")
    if note is None and not m.get("chunks_loaded_from_cache"):
        assert cli.wall_times(str(ROOT))["feature-averaging"]["default"].startswith(cli._duration(m["wall_seconds"]))
    elif note is not None:
        assert cli.wall_times(str(ROOT))["feature-averaging"]["default"] == cli._measured(note)


def test_wall_times_sources(tmp_path):
    """Default: the JSON's note (or seconds) where it has one, else the summary's wall_seconds unless that run resumed
    cached chunks; quick: the JSON's seconds or note; nothing anywhere: 'not measured'."""
    (tmp_path / "figures" / "sgd-support").mkdir(parents=True)
    (tmp_path / "figures" / "summary.json").write_text(json.dumps(
        {"metrics": {"wall_seconds": 150.0, "chunks_loaded_from_cache": 0}, "device": {"platform": "cpu",
                                                                                     "cpu_count": 2}}))
    (tmp_path / "figures" / "sgd-support" / "summary.json").write_text(json.dumps(
        {"metrics": {"wall_seconds": 60.0, "chunks_loaded_from_cache": 3}, "device": {}}))
    (tmp_path / "figures" / "wall_times.json").write_text(json.dumps(
        {"quick": {"feature-averaging": 75, "sgd-support": "not measured"}, "default": {"sgd-support": 4500}}))
    t = cli.wall_times(str(tmp_path))
    assert t["feature-averaging"] == {"quick": "75 s", "default": "2.5 min (cpu, 2 cores)"}
    assert t["sgd-support"] == {"quick": "not measured", "default": "75.0 min"}
    assert t["agop-collapse"] == {"quick": "not measured", "default": "not measured"}
    # a note wins over a summary that timed itself (e.g. the run shared the machine)
    (tmp_path / "figures" / "wall_times.json").write_text(json.dumps({"default": {"feature-averaging": "under load"}}))
    assert cli.wall_times(str(tmp_path))["feature-averaging"]["default"] == "under load"


# ----------------------------------------------------------------------------- --set: one grammar
FA = sims.get_sim("feature-averaging")


@pytest.mark.parametrize("short, dotted", [("k=4", "data.k=4"), ("lr=0.02", "optim.lr=0.02"),
                                           ("pgd_steps=7", "attack.steps=7"), ("optimizer=adam", "optim.name=adam"),
                                           ("batch_size=none", "optim.batch_size=none"),
                                           ("n_test=300", "data.n_test=300")])
def test_set_short_and_sweep_path_are_equivalent(short, dotted):
    base = FA.PRESETS["default"]
    a, b = apply_overrides(base, [short]), apply_overrides(base, [dotted])
    assert a == b
    assert a != base or short.startswith("batch_size")  # batch_size=none is the default's own value


def test_aliases_are_the_sweep_files_paths_of_the_same_values():
    """Every alias of the feature-averaging sim names a path of the experiment sweep files use (FARun), and the main
    run built from the sim config carries the sim's value there; no alias shadows a field."""
    base = FA.PRESETS["default"]
    run_cfg = {p: v for p, _, v in _walk(FA._run_config(base, "binary", 0))}
    fields = {f.name for f in dataclasses.fields(base)}
    aliased = [f for f in dataclasses.fields(base) if f.metadata.get("alias")]
    assert len(aliased) >= 10
    for f in aliased:
        alias = f.metadata["alias"]
        assert alias in {p for p, _, _ in _walk(FARun())} and alias not in fields
        assert run_cfg[alias] == getattr(base, f.name), alias


def test_set_unknown_key_lists_close_matches(capsys):
    with pytest.raises(ValueError, match=r"unknown config key 'n_poss' \(did you mean n_pos"):
        apply_overrides(FA.PRESETS["default"], ["n_poss=3"])
    with pytest.raises(ValueError, match=r"did you mean data\.k"):
        apply_overrides(FA.PRESETS["default"], ["data.kk=3"])
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "feature-averaging", "--set", "init_scal=1e-3"])
    assert e.value.code == 2 and "did you mean init_scale" in capsys.readouterr().err
    with pytest.raises(ValueError, match="a second time"):  # two names of one field
        apply_overrides(FA.PRESETS["default"], ["k=4", "data.k=6"])


# ----------------------------------------------------------------------------- dependent defaults
def test_n_pos_follows_k_unless_set():
    base = FA.PRESETS["default"]
    assert base.k == 10 and base.n_pos == 5 and FA.FASim().n_pos == 5  # the default preset is unchanged
    assert apply_overrides(base, ["k=4"]).n_pos == 2
    assert apply_overrides(base, ["data.k=7"]).n_pos == 3
    assert apply_overrides(base, ["k=10"]) == base
    assert apply_overrides(base, ["k=4", "n_pos=1"]).n_pos == 1  # explicit wins, in either name
    assert apply_overrides(base, ["data.n_pos=3", "k=4"]).n_pos == 3
    # a value set off the rule earlier (a preset's choice) stays
    assert apply_overrides(apply_overrides(base, ["n_pos=3"]), ["k=8"]).n_pos == 3
    # k=4 builds every run config (validation only, nothing compiled)
    runs = FA.build_runs(apply_overrides(FA.PRESETS["quick"], ["k=4"]).validate())
    assert {(rc.data.k, rc.data.n_pos) for _, rc in runs["main"]} == {(4, 2)}
    # an explicit bad value keeps its clear error, naming the field as set (issue 21: not the run config's path)
    with pytest.raises(ValueError, match=r"invalid n_pos=4: allowed 1 <= n_pos <= k - 1 = 3"):
        FA.build_runs(apply_overrides(FA.PRESETS["quick"], ["k=4", "n_pos=4"]).validate())


def test_other_followed_defaults():
    base = FA.PRESETS["default"]
    assert apply_overrides(base, ["n_test=300"]).n_points == 300
    assert apply_overrides(base, ["n_test=5000"]).n_points == 1000  # the paper's 1000 points at most
    hmt = sims.get_sim("hold-me-tight")
    c = apply_overrides(hmt.PRESETS["default"], ["side=8"])
    assert c.n_noise == 32
    c.validate()  # side=8 alone is a valid config now (n_noise was 128 > side^2 - 3)
    agop = sims.get_sim("agop-collapse")
    c = apply_overrides(agop.PRESETS["default"], ["n_per_class=10"])
    assert (c.batch, c.n_agop) == (100, 100)  # at most the k * n_per_class = 100 training points
    c.validate()
    assert apply_overrides(agop.PRESETS["default"], ["k=40"]).p6_n_per_class == 3  # k * p6_n_per_class <= d = 128
    # feature-averaging's S2 grid: every g whose super-classes lie inside one binary class (the quick preset's (2, 10))
    assert apply_overrides(base, ["gran_k=10"]).gran_g == (2, 10) == FA.PRESETS["quick"].gran_g
    apply_overrides(FA.PRESETS["quick"], ["gran_k=8"]).validate()  # g in (2, 4, 8)
    c = apply_overrides(hmt.PRESETS["default"], ["n_test=50", "n_train=100"])
    assert (c.n_points, c.batch) == (50, 100)
    ada = sims.get_sim("sgd-vs-adaptive")
    c = apply_overrides(ada.PRESETS["default"], ["net_n_test=200", "net_n_train=32"])
    assert (c.net_points, c.net_batch) == (200, 32)
    with pytest.raises(ValueError, match=r"invalid net_points=500: allowed 1 <= net_points <= net_n_test = 200"):
        apply_overrides(ada.PRESETS["default"], ["net_n_test=200", "net_points=500"]).validate()  # explicit: kept


@pytest.mark.parametrize("name", sims.NAMES)
def test_presets_resolve_as_the_committed_runs(name):
    """Dependent defaults act on overrides only: every preset resolves to itself, and every following field of the
    default preset holds the value its committed summary.json records (the committed results reproduce)."""
    from fa_jax.docs import PAGES

    mod = sims.get_sim(name)
    for cfg in mod.PRESETS.values():
        assert apply_overrides(cfg, []) == cfg
    rec = json.loads((ROOT / PAGES[name]).read_text())["config"]
    cfg = mod.PRESETS["default"]
    for f in dataclasses.fields(cfg):
        if f.metadata.get("follows"):
            v = getattr(cfg, f.name)
            assert (list(v) if isinstance(v, tuple) else v) == rec[f.name], f.name


@pytest.mark.parametrize("name", sims.NAMES)
def test_followed_defaults_hold_at_the_class_defaults(name):
    """A ``follows`` rule states what the default is: it must hold at the config class's own defaults."""
    cls = type(sims.get_sim(name).PRESETS["default"])
    cfg = cls()
    for f in dataclasses.fields(cls):
        if f.metadata.get("follows"):
            assert rule_value(cfg, f.metadata["follows"]) == getattr(cfg, f.name), f.name


def test_follow_rules_are_checked_when_declared():
    with pytest.raises(SyntaxError):
        param(1, follows="k //")
