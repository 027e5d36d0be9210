"""The ``summary.json`` every simulation writes (one schema for all sims).

``{"sim", "config", "versions", "device", "command", "checks": [{"name", "measured", "predicted", "tolerance",
"mode", "provenance", "passed"}], "metrics"}``. A check compares a measurement with a theory function's value;
``mode`` says how: ``abs`` |m - p| <= tol, ``rel`` |m - p| <= tol |p|, ``at_least`` m >= p - tol,
``at_most`` m <= p + tol. A failed check is a result, reported, never an error.
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


@dataclasses.dataclass
class Check:
    name: str
    measured: float
    predicted: float
    tolerance: float
    mode: str
    provenance: str
    note: str = ""

    @property
    def passed(self) -> bool:
        m, p, t = float(self.measured), float(self.predicted), float(self.tolerance)
        if not math.isfinite(m):
            return False
        if self.mode == "abs":
            return abs(m - p) <= t
        if self.mode == "rel":
            return abs(m - p) <= t * abs(p)
        if self.mode == "at_least":
            return m >= p - t
        if self.mode == "at_most":
            return m <= p + t
        raise ValueError(f"invalid mode={self.mode!r}: allowed one of {MODES}")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["measured"] = _num(self.measured)
        d["predicted"] = _num(self.predicted)
        d["passed"] = self.passed
        return d


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


def device() -> dict[str, Any]:
    import jax

    devs = jax.devices()
    return {"platform": devs[0].platform, "kind": devs[0].device_kind, "count": len(devs),
            "cpu_count": os.cpu_count()}


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


def write_summary(path, *, sim: str, config, checks: list[Check], metrics: dict, command: str = "") -> dict:
    doc = {
        "sim": sim,
        "config": to_jsonable(config),
        "versions": versions(),
        "device": device(),
        "command": command,
        "checks": [c.to_json() for c in checks],
        "metrics": to_jsonable(metrics),
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    return doc


def format_checks(checks: list[Check]) -> str:
    rows = [f"{'check':34s} {'measured':>10s} {'predicted':>10s} {'tol':>8s} {'mode':>8s}  {'prov':8s} result"]
    for c in checks:
        rows.append(f"{c.name:34s} {float(c.measured):10.4g} {float(c.predicted):10.4g} {c.tolerance:8.3g} "
                    f"{c.mode:>8s}  {c.provenance:8s} {'PASS' if c.passed else 'FAIL'}")
    n = sum(c.passed for c in checks)
    rows.append(f"{n}/{len(checks)} checks passed")
    return "\n".join(rows)


def finish(out_dir, *, sim: str, config, checks: list[Check], metrics: dict, command: str = "") -> dict:
    """A simulation's last step: write ``out_dir/summary.json``, print the checks and a one-line account."""
    doc = write_summary(os.path.join(out_dir, "summary.json"), sim=sim, config=config, checks=checks,
                        metrics=metrics, command=command)
    print(format_checks(checks))
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
