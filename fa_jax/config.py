"""Frozen-dataclass configs: traced vs static fields, overrides, serialisation.

A config field is *static* (changes shapes or code: d, k, n, steps, optimiser name, ...) unless its
metadata marks it ``traced`` (learning rate, init scale, noise, seeds, ...). Runs whose static parts agree
share one compiled program; their traced values are stacked along the ``runs`` axis and vmapped.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "apply_overrides",
    "is_traced",
    "require",
    "static_key",
    "to_dict",
    "traced",
    "traced_values",
    "with_values",
]


def traced(default: Any, **kw):
    """A dataclass field whose value is a traced (vmapped) number, not part of the compiled program."""
    return dataclasses.field(default=default, metadata={"traced": True}, **kw)


def is_traced(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("traced", False))


def _walk(cfg, prefix=""):
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            yield from _walk(v, path + ".")
        else:
            yield path, f, v


def traced_values(cfg) -> dict[str, float]:
    """``{dotted.path: value}`` of every traced field (the per-run numbers a sweep stacks)."""
    return {p: v for p, f, v in _walk(cfg) if is_traced(f)}


def static_key(cfg) -> str:
    """A canonical string of every static field: equal keys <=> one compiled program."""
    return json.dumps({p: v for p, f, v in _walk(cfg) if not is_traced(f)}, sort_keys=True, default=str)


def with_values(cfg, values: Mapping[str, Any]):
    """Return ``cfg`` with dotted-path fields replaced (values may be JAX tracers)."""
    nested: dict[str, dict] = {}
    direct: dict[str, Any] = {}
    for path, v in values.items():
        head, _, rest = path.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = v
        else:
            direct[head] = v
    for head, sub in nested.items():
        direct[head] = with_values(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **direct)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _resolve(cfg, key: str) -> str:
    paths = [p for p, _, _ in _walk(cfg)]
    if key in paths:
        return key
    hits = [p for p in paths if p.endswith("." + key)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(paths)}")
    raise ValueError(f"ambiguous config key {key!r}: matches {', '.join(hits)}; use the dotted path")


def _parse(text: str, current: Any):
    t = text.strip()
    if t.lower() in ("none", "null"):
        return None
    if isinstance(current, bool):
        if t.lower() in ("1", "true", "yes", "on"):
            return True
        if t.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, (tuple, list)):
        t = t.strip("[]()")
        items = [s for s in t.split(",") if s.strip()]
        proto = current[0] if current else 0.0
        return tuple(_parse(s, proto) for s in items)
    if isinstance(current, int):
        try:
            return int(t)
        except ValueError:
            f = float(t)
            if f.is_integer():
                return int(f)
            raise ValueError(f"expected an integer, got {text!r}") from None
    if isinstance(current, float):
        return float(t)
    if current is None:
        for cast in (int, float):
            try:
                return cast(t)
            except ValueError:
                pass
    return t


def apply_overrides(cfg, overrides: Mapping[str, str] | list[str]):
    """Apply ``key=value`` overrides (dotted paths, or an unambiguous last component)."""
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"--set expects key=value, got {item!r}")
            k, v = item.split("=", 1)
            pairs[k.strip()] = v
        overrides = pairs
    values = {}
    current = dict((p, v) for p, _, v in _walk(cfg))
    for key, text in overrides.items():
        path = _resolve(cfg, key)
        values[path] = _parse(text, current[path]) if isinstance(text, str) else text
    return with_values(cfg, values)


def require(ok: bool, param: str, allowed: str, got: Any) -> None:
    """Raise ``ValueError`` naming the parameter and its allowed range (called before compiling)."""
    if not ok:
        raise ValueError(f"invalid {param}={got!r}: allowed {allowed}")


def finite_positive(x) -> bool:
    try:
        return math.isfinite(float(x)) and float(x) > 0
    except (TypeError, ValueError):
        return False
