"""The ``summary.json`` every simulation writes (one schema for all sims).

``{"sim", "config", "versions", "device", "command", "checks": [{"name", "measured", "predicted", "tolerance",
"mode", "provenance", "null", "passed", "note"}], "not_evaluated": [{"name", "reason"}], "metrics"}``; ``device``
holds the platform, device kind and count, the host's CPU count and the sweep engine's ``matmul_precision``.

A check compares a measurement m with a theory function's value p; ``mode`` says how:
``abs`` |m - p| <= tol, ``rel`` |m - p| <= tol |p|, ``at_least`` m >= p - tol, ``at_most`` m <= p + tol.
A failed check is a result, reported, never an error.

**Falsifiable by construction.** Every check names its ``null``: the value a run that learned nothing or never
moved would measure (default 0; e.g. 1.0 for a ratio to the initial value). :class:`Check` refuses, at
construction, a tolerance that admits its null value, an ``abs`` tolerance not smaller than |p| (the scale of the
prediction; p = 0 needs an explicit non-zero null), and a ``rel`` tolerance >= 1 (which would admit 0).
``null=None`` is allowed only with a note that says why (the note is then required), in two cases: (a) the
measurement has no do-nothing value (an instrument compared with an exact computation, a bound that holds for any
network); (b) an *invariance* claim ("GD never moves the irrelevant weight", "every optimiser reaches the same clean
accuracy"), which a run that did nothing would also satisfy: its note names the companion check or learning floor
that shows the same runs did move / learn, so the pair together can fail.

**Provenance.** ``provenance`` starts with its kind, then optionally where: ``"derived"`` (our derivation: must
pass inside the domain its theory function states), ``"paper (Fig. 3)"`` (a value stated by or read off the
paper: a recorded result), ``"paper claim (Sec. 4, unverified)"`` (an empirical claim of the paper: a recorded
result), ``"code (utils.py)"`` (a setting of the official code). :attr:`Check.kind` is that kind.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
from typing import Any

import numpy as np

MODES = ("abs", "rel", "at_least", "at_most")
KINDS = ("derived", "paper claim", "paper", "code")  # longest prefix first: "paper claim" before "paper"


def _passes(mode: str, m: float, p: float, t: float) -> bool:
    if not math.isfinite(m):
        return False
    if mode == "abs":
        return abs(m - p) <= t
    if mode == "rel":
        return abs(m - p) <= t * abs(p)
    if mode == "at_least":
        return m >= p - t
    if mode == "at_most":
        return m <= p + t
    raise ValueError(f"invalid mode={mode!r}: allowed one of {MODES}")


@dataclasses.dataclass
class Check:
    """One row of ``summary.json``: ``measured`` vs ``predicted`` under ``mode`` with ``tolerance``.

    Raises ``ValueError`` at construction when the check could not fail (see the module docstring): the tolerance
    admits ``null`` (the do-nothing value), an ``abs`` tolerance >= |predicted|, a ``rel`` tolerance >= 1, a
    non-finite prediction or tolerance, an unknown mode or provenance kind.
    """

    name: str
    measured: float
    predicted: float
    tolerance: float
    mode: str
    provenance: str
    note: str = ""
    null: float | None = 0.0

    def __post_init__(self):
        p, t = float(self.predicted), float(self.tolerance)
        where = f"check {self.name!r}"
        if self.mode not in MODES:
            raise ValueError(f"{where}: invalid mode={self.mode!r}: allowed one of {MODES}")
        if self.kind is None:
            raise ValueError(f"{where}: invalid provenance={self.provenance!r}: must start with one of {KINDS}")
        if not (math.isfinite(p) and math.isfinite(t) and t >= 0):
            raise ValueError(f"{where}: predicted={p!r} and tolerance={t!r} must be finite, tolerance >= 0")
        if self.mode == "rel" and t >= 1:
            raise ValueError(f"{where}: rel tolerance={t} admits 0; allowed 0 <= tolerance < 1")
        if self.mode == "abs" and p != 0 and t >= abs(p):
            raise ValueError(f"{where}: abs tolerance={t} is not smaller than |predicted|={abs(p):.4g}; compare in "
                             "rel or log space, or tighten it")
        if self.null is None:
            if not self.note.strip():
                raise ValueError(f"{where}: null=None needs a note saying why the measurement has no do-nothing "
                                 "value")
        elif _passes(self.mode, float(self.null), p, t):
            raise ValueError(f"{where}: tolerance={t} ({self.mode} around {p:.4g}) admits the null value "
                             f"{float(self.null):.4g} (what a run that learned nothing / never moved measures)")

    @property
    def kind(self) -> str | None:
        """The provenance kind: one of :data:`KINDS` (``None`` if the provenance names none)."""
        prov = self.provenance.strip()
        for k in KINDS:
            if prov == k or prov.startswith(k + " ") or prov.startswith(k + "("):
                return k
        return None

    @property
    def passed(self) -> bool:
        return _passes(self.mode, float(self.measured), float(self.predicted), float(self.tolerance))

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["measured"] = _num(self.measured)
        d["predicted"] = _num(self.predicted)
        d["null"] = None if self.null is None else _num(self.null)
        d["kind"] = self.kind
        d["passed"] = self.passed
        return d


@dataclasses.dataclass(frozen=True)
class NotEvaluated:
    """A check this setting cannot evaluate (:func:`check_or_skip`): its name and why."""

    name: str
    reason: str


def check_or_skip(name: str, measured, predicted, *args, **kwargs) -> Check | NotEvaluated:
    """``Check(name, measured, predicted, *args, **kwargs)``, or :class:`NotEvaluated` when the prediction is not
    finite at this setting (the theory's value overflows: e.g. GD's exact power (1 - lr s^2)^T at a learning rate
    where GD diverges, reachable with ``--set``): listed as not evaluated, with the value and the measurement,
    instead of failing the run. Every other invalid check still raises (a defect of the check, not a setting)."""
    p = float(predicted)
    if not math.isfinite(p):
        return NotEvaluated(name, f"the prediction is {p} at this setting (the theory's value is not finite here, "
                                  "e.g. an exact power of a diverging iteration overflows); measured "
                                  f"{float(measured):.6g}")
    return Check(name, measured, predicted, *args, **kwargs)


def split_checks(items) -> tuple[list[Check], dict[str, str]]:
    """``(checks, not_evaluated)`` of a list of :func:`check_or_skip` results."""
    checks = [c for c in items if isinstance(c, Check)]
    return checks, {c.name: c.reason for c in items if isinstance(c, NotEvaluated)}


def add_check(checks: list, skipped: dict, name: str, measured, predicted, *args, **kwargs) -> None:
    """:func:`check_or_skip`, appended to ``checks`` or recorded in ``skipped`` (name -> why not evaluated)."""
    c = check_or_skip(name, measured, predicted, *args, **kwargs)
    if isinstance(c, NotEvaluated):
        skipped[name] = c.reason
    else:
        checks.append(c)


def _num(x):
    x = float(x)
    return x if math.isfinite(x) else str(x)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("fa-jax", "jax", "jaxlib", "optax", "flax", "numpy", "matplotlib", "xarray"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def device(precision: str | list[str] | None = None) -> dict[str, Any]:
    """The devices, and ``matmul_precision``: the precision of the programs whose results are being written, as
    the caller knows it (``summary.json``: from the run's engine metrics, :func:`precisions_in`; a sweep's
    manifest: from its plan). None when no program was run."""
    import jax

    devs = jax.devices()
    return {"platform": devs[0].platform, "kind": devs[0].device_kind, "count": len(devs),
            "cpu_count": os.cpu_count(), "matmul_precision": precision}


def precisions_in(metrics) -> str | list[str] | None:
    """Every ``matmul_precision`` recorded in a (nested) engine-metrics dict, in first-seen order: one name, a list
    if several, None if none (the summary's device block says what the written results were computed with, not
    what else ran in the process)."""
    found: dict[str, None] = {}

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "matmul_precision" and isinstance(v, str):
                    found.setdefault(v)
                else:
                    walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(metrics)
    used = list(found)
    return used[0] if len(used) == 1 else (used or None)


def to_jsonable(x):
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x))
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return _num(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_summary(path, *, sim: str, config, checks: list[Check], metrics: dict, command: str = "",
                  not_evaluated: dict[str, str] | None = None) -> dict:
    """Write ``summary.json``; ``not_evaluated`` maps a check name to why it has no meaning at this scale."""
    names = [c.name for c in checks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate check names: {dup}")
    doc = {
        "sim": sim,
        "config": to_jsonable(config),
        "versions": versions(),
        "device": device(precisions_in(metrics)),
        "command": command,
        "checks": [c.to_json() for c in checks],
        "not_evaluated": [{"name": k, "reason": v} for k, v in (not_evaluated or {}).items()],
        "metrics": to_jsonable(metrics),
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    return doc


def format_checks(checks: list) -> str:
    """A table of checks: :class:`Check` objects or the rows of a written ``summary.json``."""
    rows = [f"{'check':34s} {'measured':>10s} {'predicted':>10s} {'tol':>8s} {'mode':>8s}  {'prov':8s} result"]
    n = 0
    for c in checks:
        c = c.to_json() if isinstance(c, Check) else c
        n += bool(c["passed"])
        rows.append(f"{c['name']:34s} {float(c['measured']):10.4g} {float(c['predicted']):10.4g} "
                    f"{float(c['tolerance']):8.3g} {c['mode']:>8s}  {c['provenance']:8s} "
                    f"{'PASS' if c['passed'] else 'FAIL'}")
    rows.append(f"{n}/{len(checks)} checks passed")
    return "\n".join(rows)


def finish(out_dir, *, sim: str, config, checks: list[Check], metrics: dict, command: str = "",
           not_evaluated: dict[str, str] | None = None) -> dict:
    """A simulation's last step: write ``out_dir/summary.json``, print the checks and a one-line account."""
    doc = write_summary(os.path.join(out_dir, "summary.json"), sim=sim, config=config, checks=checks,
                        metrics=metrics, command=command, not_evaluated=not_evaluated)
    print(format_checks(checks))
    for k, v in (not_evaluated or {}).items():
        print(f"{k:34s} not evaluated at this scale: {v}")
    print(f"{metrics.get('n_runs', '?')} runs, {metrics.get('programs_compiled', '?')} programs compiled, "
          f"{metrics.get('wall_seconds', float('nan')):.1f} s; wrote {out_dir}")
    return doc


def seed_stats(values, *, ignore_nan: bool = False) -> dict:
    """``{"mean", "median", "std", "n", "values"}`` of per-seed measurements for ``metrics``.

    By default a NaN (e.g. a diverged run) propagates into mean/median/std, so it cannot pass unnoticed;
    ``ignore_nan=True`` summarises the finite values only (``n`` still counts all of them).
    """
    v = np.asarray(values, float)
    mean, median, std = (np.nanmean, np.nanmedian, np.nanstd) if ignore_nan else (np.mean, np.median, np.std)
    with np.errstate(all="ignore"):
        return {"mean": float(mean(v)), "median": float(median(v)), "std": float(std(v)), "n": int(v.size),
                "values": v.tolist()}
