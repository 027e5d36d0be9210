"""Every field of a simulation's config does something (issue 15's trust rule, found by an audit with
``--set lr=1e38``: hold-me-tight ignored ``lr`` under its official recipe, sgd-support its label-noise family's
steps and seeds when the preset runs no separate family). Each numeric or boolean field of the quick preset is moved
(ints +1, numbers x1.5, bools flipped, numeric tuples elementwise); the moved config must either be refused with a
named error or build other runs (the run configs ``build_runs`` lists, compared as dicts). A field that changes
only the analysis (a tolerance, the start of a measurement window, which half of a sim runs) is listed below with
the reason; no field may do nothing. Builds configs only: nothing is traced or compiled."""
from __future__ import annotations

import dataclasses
import importlib
import json
import math

import pytest

from fa_jax.config import ConfigError, to_dict

SIMS = {"feature-averaging": "feature_averaging", "feature-averaging-real": "feature_averaging_real",
        "sgd-support": "sgd_support", "sgd-vs-adaptive": "sgd_vs_adaptive", "hold-me-tight": "hold_me_tight",
        "agop-collapse": "agop_collapse"}

# fields that change the analysis, not the runs (a moved value changes checks, metrics or which part runs)
ANALYSIS_ONLY = {
    "feature-averaging": {"sweep_points": "attacked points per sweep run, at most n_points (documented clamp: the "
                                          "quick preset's 500 > n_points = 300)"},
    "feature-averaging-real": {},
    "sgd-support": {"phase1_steps": "the end of Phase 1: where the T3 decay windows start (analysis)"},
    "sgd-vs-adaptive": {"linear": "whether the linear half runs (run() skips its sweep)",
                        "nets": "whether the networks half runs (run() skips its sweep)",
                        "net_match_tol": "the clean-accuracy tolerance that pairs adaptive and SGD learning rates "
                                         "(analysis)"},
    "hold-me-tight": {"x64": "float64 for the whole sweep: a process setting the engine applies around the runs, "
                             "not a field of a run config"},
    "agop-collapse": {"p6_n_per_class": "P6's one-step collapse: a float64 computation of the sim outside the "
                                        "sweep (no run config)",
                      "p6_ridges": "idem (P6's ridges)"},
}


def _runs(name: str, mod, s):
    if name == "hold-me-tight":
        return mod.build_runs(s, list(s.image_sets))
    if name == "sgd-vs-adaptive":
        return {"linear": mod.build_runs(s), "nets": mod.build_net_runs(s)}
    return mod.build_runs(s)


def _canon(runs) -> str:
    def c(x):
        if isinstance(x, dict):
            return {k: c(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [c(v) for v in x]
        return to_dict(x) if dataclasses.is_dataclass(x) else x

    return json.dumps(c(runs), sort_keys=True, default=str)


def _moved(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v * 1.5 if v != 0 and math.isfinite(v) else 0.5
    if isinstance(v, tuple) and v and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in v):
        return tuple(_moved(e) for e in v)
    return None


@pytest.mark.parametrize("name", sorted(SIMS))
def test_every_field_changes_the_runs_or_is_refused(name):
    mod = importlib.import_module(f"fa_jax_sims.{SIMS[name]}")
    base = mod.PRESETS["quick"].validate()
    ref = _canon(_runs(name, mod, base))
    inert = []
    for f in dataclasses.fields(base):
        new = _moved(getattr(base, f.name))
        if new is None:
            continue
        try:
            moved = dataclasses.replace(base, **{f.name: new}).validate()
        except (ConfigError, ValueError):
            continue  # refused, with the field named (tests/test_fuzz.py checks the messages)
        if _canon(_runs(name, mod, moved)) == ref and f.name not in ANALYSIS_ONLY[name]:
            inert.append(f.name)
    assert not inert, f"{name}: moving {inert} changes no run and is not refused (a silently ignored setting)"
    assert set(ANALYSIS_ONLY[name]) <= {f.name for f in dataclasses.fields(base)}  # the list is not stale
