"""Per-run pure functions (``run_xxx(cfg) -> dict of arrays``) and the registry that sweep files name them by.

An :class:`Experiment` ties a config class to its run function and tells the sweep machinery how to label its
outputs: which config fields a ``seed`` axis sets, which field is the width and which its static bucket, and the
named axes of each output (``fnmatch`` patterns on ``/``-joined output paths; unnamed axes get ``<name>_dim<i>``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

__all__ = ["EXPERIMENTS", "Experiment", "get_experiment"]


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    config: Callable  # () -> the default config (a frozen dataclass with validate())
    run: Callable  # run(cfg) -> dict of arrays, one run
    seeds: tuple[str, ...] = ()  # fields a ``seed`` axis sets (all to the same value)
    width: str | None = None  # dotted path of the (traced) width ...
    bucket: str | None = None  # ... and of its static padded size
    dims: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (output pattern, axis names)
    coords: tuple[tuple[str, str], ...] = ()  # (axis name, output holding its coordinate values)


def _feature_averaging() -> Experiment:
    from .feature_averaging import FARun, run_feature_averaging

    return Experiment(
        name="feature-averaging",
        config=FARun,
        run=run_feature_averaging,
        seeds=("data_seed", "model_seed"),
        width="model.width",
        bucket="model.bucket",
        dims=(
            ("records/*", ("step",)),
            ("plan", ("step",)),
            ("eps", ("eps",)),
            ("robust/*/acc", ("eps",)),
            ("robust/*/flip", ("point",)),
            ("attack_direction/*", ("point",)),
            ("grad_cos", ("point",)),
            ("test_y", ("point",)),
            ("features/cos", ("cos_row", "cos_col")),
        ),
        coords=(("step", "plan"), ("eps", "eps")),
    )


def _linear() -> Experiment:
    from .linear import LinearRun, run_linear

    return Experiment(
        name="linear-regression", config=LinearRun, run=run_linear, seeds=("data_seed", "model_seed"),
        dims=(("records/w", ("step", "coef")), ("records/*", ("step",)), ("plan", ("step",)),
              ("w", ("coef",)), ("w_star", ("coef",)), ("w0", ("coef",))),
        coords=(("step", "plan"),),
    )


_FACTORIES: dict[str, Callable[[], Experiment]] = {
    "feature-averaging": _feature_averaging,
    "linear-regression": _linear,
}
EXPERIMENTS = tuple(_FACTORIES)


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (ValueError listing the allowed names otherwise)."""
    if name not in _FACTORIES:
        raise ValueError(f"invalid experiment={name!r}: allowed one of {EXPERIMENTS}")
    return _FACTORIES[name]()
