"""Frozen-dataclass configs: traced vs static fields, overrides, serialisation.

A config field is *static* (changes shapes or code: d, k, n, steps, optimiser name, ...) unless its
metadata marks it ``traced`` (learning rate, init scale, noise, seeds, ...). Runs whose static parts agree
share one compiled program; their traced values are stacked along the ``runs`` axis and vmapped.

Overrides (``fa-jax run --set KEY=VALUE``, :func:`apply_overrides`) name a field by one grammar: its dotted path, an
unambiguous last component, or an *alias* in its metadata (:func:`param`: the dotted path a sweep file uses for the
same value, e.g. ``data.k`` for a sim's flat ``k``). A field whose default only makes sense for one value of
another field declares the rule it *follows* (``param(5, follows="k // 2")``, ``traced(5, follows=...)``): an
override of its drivers moves it along (:func:`follow`), unless it is set explicitly too or the config had already
moved it off the rule. ``--set`` and sweep files (``[fixed]``, cases, axes) both go through it, so a preset or a
config built in Python keeps the values it was given, and the moved value is the one recorded and hashed.

Validation (issue 21): every bad value raises :class:`ConfigError` (a ``ValueError``) naming the parameter as the
user wrote it, its allowed range and the value, before anything compiles. :func:`check_fields` is the one type
check every config goes through (each ``validate()`` calls it first; ``expand_grid`` and sweep files call it on
every grid point): driven by the dataclass annotations, it refuses

* for ``int``: non-integers (``2.5``, ``"3"``, ``nan``) and booleans, and values outside int32
  (``|v| < 2**31``: seeds and sizes become int32 arrays);
* for ``float``: non-numbers and booleans, ``nan``, and ``+-inf`` unless the field allows it (``param(...,
  inf_ok=True)``, or a default that is itself inf);
* for ``bool``: anything but ``True`` / ``False`` (a Python config takes real booleans; the text layers convert
  their spellings first: ``--set`` takes true/false/yes/no/on/off/1/0, a sweep file TOML booleans, ``"true"`` /
  ``"false"`` and 0 / 1 -- any other string or number is refused there too);
* for ``str``: non-strings; for ``X | None``: anything but None or an X;
* for ``tuple``: non-sequences (a string is not a tuple of strings), elements of the wrong type (the element type
  comes from the annotation ``tuple[int, ...]`` or from the field's default values), and -- with
  ``nonempty=True``, for the top-level fields of the config that asks -- an empty tuple unless ``param(...,
  empty_ok=True)``;

then each ``validate()`` checks ranges and cross-field rules with :func:`require`. Grids are capped at
:data:`MAX_RUNS` runs (:func:`require_runs`), refused before any config is built.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import functools
import json
import math
import numbers
import re
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "MAX_INT",
    "MAX_RUNS",
    "ConfigError",
    "apply_overrides",
    "check_fields",
    "follow",
    "is_traced",
    "override_keys",
    "param",
    "parse_bool",
    "renamed",
    "require",
    "require_runs",
    "static_key",
    "to_dict",
    "traced",
    "traced_values",
    "with_values",
]


MAX_INT = 2**31 - 1  # integer fields hold int32 values (seeds and sizes become int32 arrays without x64)
MAX_RUNS = 100_000  # runs of one sweep or simulation: a larger grid is refused before any config is built


class ConfigError(ValueError):
    """A bad config value: names the parameter as the user wrote it, its allowed range and the value (raised
    before anything compiles; ``fa-jax`` prints the message and exits 2). ``param``, ``allowed``, ``got`` keep the
    parts; ``note`` is appended (e.g. the internal path that checked it)."""

    def __init__(self, param: str, allowed: str, got: Any, note: str = ""):
        self.param, self.allowed, self.got, self.note = param, allowed, got, note
        super().__init__(f"invalid {param}={_show(got)}: allowed {allowed}" + (f" ({note})" if note else ""))

    def __reduce__(self):  # picklable with its parts (multiprocessing, pytest-xdist)
        return (type(self), (self.param, self.allowed, self.got, self.note))


def _show(v: Any, limit: int = 120) -> str:
    """``repr(v)`` cut to ``limit`` characters (a value may be a 10**30 or a long tuple)."""
    t = repr(v)
    return t if len(t) <= limit else t[: limit - 3] + "..."


def traced(default: Any, *, inf_ok: bool = False, follows: str | None = None, **kw):
    """A dataclass field whose value is a traced (vmapped) number, not part of the compiled program.
    ``inf_ok``: +-inf is a meaningful value of this field (:func:`check_fields` refuses it otherwise); ``follows``:
    the rule its default follows (:func:`param`)."""
    meta = {"traced": True, **({"inf_ok": True} if inf_ok else {}), **({"follows": follows} if follows else {})}
    if follows is not None:
        _rule_code(follows)
    return dataclasses.field(default=default, metadata=meta, **kw)


def is_traced(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("traced", False))


def param(default: Any, *, alias: str | None = None, follows: str | None = None, allowed: str | None = None,
          inf_ok: bool = False, empty_ok: bool = False, omit_default: bool = False):
    """A static dataclass field with metadata for overrides, ``--help`` and :func:`check_fields`.

    ``alias``: another name :func:`apply_overrides` accepts (the dotted path sweep files use for this value).
    ``follows``: a Python expression over the sibling fields (``"k // 2"``) the default follows when those fields
    are overridden (:func:`follow`); ``default`` must equal it at the class defaults. ``allowed``: the range the
    help prints, where ``validate()`` does not state it itself (e.g. a sub-config checks it). ``inf_ok``: +-inf is
    a meaningful value (e.g. "inf: no clipping"); ``empty_ok``: an empty tuple is (e.g. "(): no such runs").
    ``omit_default``: left out of :func:`static_key` while it holds ``default`` (a field added later must not change
    the programs, and cached chunk names, of configs that leave it alone).
    """
    meta = {k: v for k, v in (("alias", alias), ("follows", follows), ("allowed", allowed)) if v is not None}
    meta.update({k: True for k, v in (("inf_ok", inf_ok), ("empty_ok", empty_ok), ("omit_default", omit_default))
                 if v})
    if follows is not None:
        _rule_code(follows)  # a malformed rule fails at class definition, not at the first override
    return dataclasses.field(default=default, metadata=meta)


# the only names a ``follows`` rule may call besides the config's own fields
_RULE_BUILTINS = {"min": min, "max": max, "abs": abs, "int": int, "round": round, "len": len, "tuple": tuple,
                  "range": range}


def _rule_code(rule: str):
    return compile(ast.parse(rule, mode="eval"), f"<follows {rule!r}>", "eval")


def rule_value(cfg, rule: str) -> Any:
    """A ``follows`` rule evaluated on ``cfg``'s fields (the config that holds the following field)."""
    names = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    # the fields as globals: a comprehension in a rule (its own scope) sees them too
    return eval(_rule_code(rule), {**names, "__builtins__": _RULE_BUILTINS})  # a rule from the source, not user input


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


def _roles(cfg, prefix=""):
    """``(path, traced, value)`` of every leaf field as the engine sees it.

    A config class may define ``traced_now(self) -> {field name: number}``: fields static by declaration that THIS
    instance traces, with the number standing for the value (e.g. an optimiser name traced as its index among
    ``OptimConfig.choices``). A static field declared ``param(..., omit_default=True)`` is left out while it holds
    its default, so a field added later keeps the keys (and cached programs) of configs that do not use it."""
    hook = getattr(cfg, "traced_now", None)
    extra = hook() if callable(hook) else {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            yield from _roles(v, path + ".")
        elif f.name in extra:
            yield path, True, extra[f.name]
        elif is_traced(f):
            yield path, True, v
        elif not (f.metadata.get("omit_default") and v == f.default):
            yield path, False, v


def traced_values(cfg) -> dict[str, float]:
    """``{dotted.path: value}`` of every traced field (the per-run numbers a sweep stacks; see :func:`_roles`)."""
    return {p: v for p, t, v in _roles(cfg) if t}


def static_key(cfg) -> str:
    """A canonical string of every static field: equal keys <=> one compiled program (see :func:`_roles`)."""
    return json.dumps({p: v for p, t, v in _roles(cfg) if not t}, sort_keys=True, default=str)


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


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_bool(text: str) -> bool:
    """``--set``'s booleans: true/false, yes/no, on/off, 1/0 (any case); ValueError otherwise."""
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false, yes/no, on/off, 1/0), got {text!r}")


def _parse(text: str, current: Any, proto: Any = None):
    """``--set`` text -> a value of ``current``'s type (``proto``: an element of the field's default, for a tuple
    that is empty now). ValueError (without the key: :func:`apply_overrides` adds it) when the text is not one."""
    t = text.strip()
    if t.lower() in ("none", "null"):
        return None
    if isinstance(current, bool):
        return parse_bool(t)
    if isinstance(current, (tuple, list)):
        t = t.strip("[]()")
        items = [s for s in t.split(",") if s.strip()]
        proto = current[0] if current else (proto if proto is not None else 0.0)
        return tuple(_parse(s, proto) for s in items)
    if isinstance(current, int):
        try:
            return int(t)
        except ValueError:
            try:
                f = float(t)
            except ValueError:
                raise ValueError(f"expected an integer, got {text!r}") from None
            if math.isfinite(f) and f.is_integer():
                return int(f)
            raise ValueError(f"expected an integer, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(t)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
    if current is None:
        for cast in (int, float):
            try:
                return cast(t)
            except ValueError:
                pass
    return t


def _class_default(cfg, path: str) -> Any:
    """The class default of the field at dotted ``path`` (``dataclasses.MISSING`` if it has none)."""
    parent, name = _parent(cfg, path), path.rsplit(".", 1)[-1]
    f = {f.name: f for f in dataclasses.fields(parent)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def apply_overrides(cfg, overrides: Mapping[str, str] | list[str]):
    """Apply ``key=value`` overrides (dotted paths, an unambiguous last component, or a field's alias); fields that
    follow an overridden field move with it (:func:`follow`) unless set here too. A text that is not a value of the
    field's type raises :class:`ConfigError` naming the key as given (ranges: the config's ``validate()``)."""
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError("--set", "key=value (e.g. --set lr=0.01)", item)
            k, v = item.split("=", 1)
            pairs[k.strip()] = v
        overrides = pairs
    values = {}
    current = {p: v for p, _, v in _walk(cfg)}
    for key, text in overrides.items():
        path = _resolve(cfg, key)
        if path in values:
            raise ValueError(f"config key {key!r} sets {path} a second time")
        if isinstance(text, str):
            default = _class_default(cfg, path)
            proto = default[0] if isinstance(default, tuple) and default else None
            try:
                values[path] = _parse(text, current[path], proto)
            except ValueError as e:
                name = key if key == path else f"{key} ({path})"
                raise ConfigError(name, _type_text(current[path], proto), text, str(e)) from None
        else:
            values[path] = text
    return follow(cfg, with_values(cfg, values), set(values))


def _type_text(current: Any, proto: Any = None) -> str:
    """What ``--set`` accepts for a field holding ``current``."""
    if isinstance(current, bool):
        return "true or false (also yes/no, on/off, 1/0)"
    if isinstance(current, (tuple, list)):
        el = current[0] if current else proto
        kind = "integers" if isinstance(el, int) and not isinstance(el, bool) else (
            "strings" if isinstance(el, str) else "numbers")
        return f"a comma-separated list of {kind} (e.g. 1,2,3)"
    if isinstance(current, int):
        return "an integer"
    if isinstance(current, float):
        return "a number"
    return "a value of the field's type"


def require(ok: bool, param: str, allowed: str, got: Any) -> None:
    """Raise :class:`ConfigError` naming the parameter and its allowed range (called before compiling)."""
    if not ok:
        raise ConfigError(param, allowed, got)


def require_runs(n: int, what: str, cfg, *names: str) -> None:
    """Refuse more than :data:`MAX_RUNS` runs in ``what`` (a sub-sweep whose size ``cfg``'s fields ``names`` set;
    the error names them and their values) -- checked from the counts, before any config is built."""
    if n > MAX_RUNS:
        raise ConfigError("/".join(names), f"at most {MAX_RUNS} runs per sweep (fa_jax.config.MAX_RUNS); {what} "
                          f"would have {n}", {k: getattr(cfg, k) for k in names})


def finite_positive(x) -> bool:
    try:
        return math.isfinite(float(x)) and float(x) > 0
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def renamed(names: Mapping[str, str]) -> Iterator[None]:
    """Inside, a :class:`ConfigError` whose parameter is a key of ``names`` (an internal dotted path, e.g.
    ``optim.name``) is re-raised naming ``names[key]`` instead (the field the user set, e.g. ``optimizer``): a
    simulation validates its run configs under it, so an error names the simulation's own field."""
    try:
        yield
    except ConfigError as e:
        if e.param not in names:
            raise
        raise ConfigError(names[e.param], e.allowed, e.got, f"checked as {e.param}") from None
    except ValueError as e:  # a library check's plain "invalid p=v: allowed ..." (e.g. a kernel memory check)
        m = re.match(r"invalid ([\w.]+)=(.*?)(?:: allowed |$)(.*)", str(e), re.DOTALL)
        if m is None or m.group(1) not in names:
            raise
        raise ConfigError(names[m.group(1)], m.group(3) or "see the message", _Text(m.group(2)),
                          f"checked as {m.group(1)}") from None


class _Text(str):
    """A value already printed (shown as is, without quotes)."""

    def __repr__(self) -> str:
        return str(self)


def alias_names(cls) -> dict[str, str]:
    """``{alias: field name}`` of ``cls``'s :func:`param` fields (a sim field's alias is the run config's path)."""
    return {f.metadata["alias"]: f.name for f in dataclasses.fields(cls) if f.metadata.get("alias")}


# ----------------------------------------------------------------------------- the type check of every config
@functools.cache
def _hints(cls) -> dict[str, Any]:
    """The resolved field annotations of a dataclass (``from __future__ import annotations`` makes them strings)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: check nothing for that class
        return {}


def _is_jax(v) -> bool:
    """A tracer or device array: a traced field inside the engine (its type and value are the program's)."""
    return type(v).__module__.startswith(("jax", "jaxlib"))


def _int_ok(v) -> bool:
    return isinstance(v, numbers.Integral) and not _is_bool(v) and -MAX_INT - 1 <= int(v) <= MAX_INT


def _is_bool(v) -> bool:
    t = type(v)  # numpy's bool scalar (np.bool_; its name is "bool" in numpy 2), without importing numpy
    return isinstance(v, bool) or (t.__module__ == "numpy" and t.__name__ in ("bool", "bool_"))


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not _is_bool(v)


def _base(hint) -> tuple[Any, bool, Any]:
    """``(base type, optional, element type or None)`` of an annotation (``int | None`` -> ``(int, True, None)``,
    ``tuple[int, ...]`` -> ``(tuple, False, int)``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            return Any, optional, None
        base, _, elem = _base(args[0])
        return base, optional, elem
    if origin is tuple:
        args = typing.get_args(hint)
        elem = args[0] if args and (len(args) == 2 and args[1] is Ellipsis or len(set(args)) == 1) else None
        return tuple, False, elem
    return hint, False, None


def _elem_type(default) -> Any:
    """The element type of a tuple field, from its default's values: str, int (all integers), float (numbers)."""
    vals = tuple(default) if isinstance(default, (tuple, list)) else ()
    if not vals:
        return None
    if all(isinstance(v, str) for v in vals):
        return str
    if all(_int_ok(v) for v in vals):
        return int
    if all(_real(v) for v in vals):
        return float
    return None


_ALLOWED = {int: "an integer (|value| < 2**31)", float: "a finite number", bool: "true or false", str: "a string"}


def _value_ok(v, base, inf_ok: bool) -> bool:
    if base is bool:
        return _is_bool(v)
    if base is int:
        return _int_ok(v)
    if base is float:
        return _real(v) and not math.isnan(v) and (inf_ok or not math.isinf(v))
    if base is str:
        return isinstance(v, str)
    return True


def check_fields(cfg, *, prefix: str = "", nonempty: bool = False, inf_ok: tuple[str, ...] = ()) -> None:
    """Type-check every field of the dataclass ``cfg`` (nested configs included, named by dotted path after
    ``prefix``) against its annotation, by the rules of the module docstring; :class:`ConfigError` names the first
    bad field. ``nonempty``: also refuse empty tuples among ``cfg``'s own fields (not nested ones), except fields
    declared ``param(..., empty_ok=True)``. ``inf_ok``: field names that also accept +-inf (besides those declared
    so). Tracers and device arrays (a traced field inside the engine) are not checked."""
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        name = prefix + f.name
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            check_fields(v, prefix=name + ".")
            continue
        if _is_jax(v) or f.name not in hints:
            continue
        base, optional, elem = _base(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        allow_inf = bool(f.metadata.get("inf_ok")) or f.name in inf_ok or (
            isinstance(default, float) and math.isinf(default))
        none = " or None" if optional else ""
        if v is None:
            if optional or not (base in _ALLOWED or base is tuple or dataclasses.is_dataclass(base)):
                continue
            raise ConfigError(name, _ALLOWED.get(base, "a value") + " (not None)", v)
        if dataclasses.is_dataclass(base):
            raise ConfigError(name, f"a {base.__name__} config", v)
        if base in _ALLOWED:
            if not _value_ok(v, base, allow_inf):
                allowed = _ALLOWED[base] + none
                if base is float and allow_inf:
                    allowed = "a number (inf allowed, not nan)" + none
                raise ConfigError(name, allowed, v)
            continue
        if base is tuple:
            if not isinstance(v, (tuple, list)):
                raise ConfigError(name, "a tuple (e.g. (1, 2) in Python, [1, 2] in a sweep file, 1,2 in --set)"
                                  + none, v)
            if nonempty and not prefix and not v and not f.metadata.get("empty_ok"):
                raise ConfigError(name, "a non-empty tuple", v)
            if elem is None:
                d = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                elem = _elem_type(d)
            if elem in _ALLOWED:
                for x in v:
                    if _is_jax(x):
                        continue
                    if not _value_ok(x, elem, allow_inf):
                        kind = {int: "integers (|value| < 2**31)", float: "finite numbers", bool: "booleans",
                                str: "strings"}[elem]
                        raise ConfigError(name, f"a tuple of {kind}", v)
