"""Frozen-dataclass configs: traced vs static fields, overrides, serialisation.

A config field is *static* (changes shapes or code: d, k, n, steps, optimiser name, ...) unless its
metadata marks it ``traced`` (learning rate, init scale, noise, seeds, ...). Runs whose static parts agree
share one compiled program; their traced values are stacked along the ``runs`` axis and vmapped.

Overrides (``fa-jax run --set KEY=VALUE``, :func:`apply_overrides`) name a field by one grammar: its dotted path, an
unambiguous last component, or an *alias* in its metadata (:func:`param`: the dotted path a sweep file uses for the
same value, e.g. ``data.k`` for a sim's flat ``k``). A field whose default only makes sense for one value of
another field declares the rule it *follows* (``param(5, follows="k // 2")``): an override of its drivers moves
it along, unless it is set explicitly too or the config had already moved it off the rule.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "apply_overrides",
    "follow",
    "is_traced",
    "override_keys",
    "param",
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


def param(default: Any, *, alias: str | None = None, follows: str | None = None, allowed: str | None = None):
    """A static dataclass field with metadata for overrides and ``--help``.

    ``alias``: another name :func:`apply_overrides` accepts (the dotted path sweep files use for this value).
    ``follows``: a Python expression over the sibling fields (``"k // 2"``) the default follows when those fields
    are overridden (:func:`follow`); ``default`` must equal it at the class defaults. ``allowed``: the range the
    help prints, where ``validate()`` does not state it itself (e.g. a sub-config checks it).
    """
    meta = {k: v for k, v in (("alias", alias), ("follows", follows), ("allowed", allowed)) if v is not None}
    if follows is not None:
        _rule_code(follows)  # a malformed rule fails at class definition, not at the first override
    return dataclasses.field(default=default, metadata=meta)


# the only names a ``follows`` rule may call besides the config's own fields
_RULE_BUILTINS = {"min": min, "max": max, "abs": abs, "int": int, "round": round, "len": len, "tuple": tuple}


def _rule_code(rule: str):
    return compile(ast.parse(rule, mode="eval"), f"<follows {rule!r}>", "eval")


def rule_value(cfg, rule: str) -> Any:
    """A ``follows`` rule evaluated on ``cfg``'s fields (the config that holds the following field)."""
    names = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return eval(_rule_code(rule), {"__builtins__": _RULE_BUILTINS}, names)  # a rule from the source, not user input


def _parent(cfg, path: str):
    """The (sub-)config holding the field at dotted ``path``."""
    for part in path.split(".")[:-1]:
        cfg = getattr(cfg, part)
    return cfg


def follow(old, new, explicit: set[str] = frozenset()):
    """``new`` with every following field moved to its rule, where ``old`` had it on its rule and ``explicit``
    (dotted paths set by hand) does not name it. Fields are visited in declaration order, so a rule may read a
    field that itself followed."""
    for path, f, v_old in list(_walk(old)):
        rule = f.metadata.get("follows")
        if rule is None or path in explicit:
            continue
        try:
            if rule_value(_parent(old, path), rule) != v_old:  # a value chosen on purpose (a preset's) stays
                continue
            v_new = rule_value(_parent(new, path), rule)
        except (TypeError, ValueError, ArithmeticError):  # a driver the rule cannot read: validate() will say why
            continue
        if v_new != v_old:
            new = with_values(new, {path: v_new})
    return new


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


def override_keys(cfg) -> dict[str, str]:
    """``{key: dotted path}`` of every key an override may use besides a unique last component: the paths
    themselves and the fields' aliases (:func:`param`; an alias on a nested config is prefixed by its parent)."""
    keys = {}
    for p, f, _ in _walk(cfg):
        keys[p] = p
        alias = f.metadata.get("alias")
        if alias:
            keys.setdefault(p[: len(p) - len(f.name)] + alias, p)
    return keys


def _resolve(cfg, key: str) -> str:
    keys = override_keys(cfg)
    if key in keys:
        return keys[key]
    paths = [p for p, _, _ in _walk(cfg)]
    hits = [p for p in paths if p.endswith("." + key)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        names = sorted(set(keys) | {p.rsplit(".", 1)[-1] for p in paths})
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown config key {key!r}{hint}; known keys: {', '.join(keys)}")
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
    """Apply ``key=value`` overrides (dotted paths, an unambiguous last component, or a field's alias); fields that
    follow an overridden field move with it (:func:`follow`) unless set here too."""
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"--set expects key=value, got {item!r}")
            k, v = item.split("=", 1)
            pairs[k.strip()] = v
        overrides = pairs
    values = {}
    current = {p: v for p, _, v in _walk(cfg)}
    for key, text in overrides.items():
        path = _resolve(cfg, key)
        if path in values:
            raise ValueError(f"config key {key!r} sets {path} a second time")
        values[path] = _parse(text, current[path]) if isinstance(text, str) else text
    return follow(cfg, with_values(cfg, values), set(values))


def require(ok: bool, param: str, allowed: str, got: Any) -> None:
    """Raise ``ValueError`` naming the parameter and its allowed range (called before compiling)."""
    if not ok:
        raise ValueError(f"invalid {param}={got!r}: allowed {allowed}")


def finite_positive(x) -> bool:
    try:
        return math.isfinite(float(x)) and float(x) > 0
    except (TypeError, ValueError):
        return False
