"""Every check's prediction comes from a theory module (issue "Results a researcher can trust", §3).

Reads the source of every sim and library module with ``ast`` and finds each ``Check(...)`` call. Its ``predicted``
argument, followed through the enclosing function's assignments, must reach a function or value of
``fa_jax.theory``; a bare number literal, a config field, or a measurement alone (the circular case) fails. A
prediction handed in as a parameter of a helper is followed no further (its call sites are the helper's callers').
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = sorted(p for d in ("sims", "fa_jax") for p in (ROOT / d).rglob("*.py") if p.name != "summary.py")


def _theory_names(tree: ast.Module) -> set[str]:
    """Local names bound to ``fa_jax.theory`` modules or their functions."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "fa_jax.theory" or node.module.startswith("fa_jax.theory.")
                or (node.level > 0 and node.module.split(".")[0] == "theory")
                or (node.level > 0 and node.module == "theory")):
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("fa_jax.theory"):
                    names.add(a.asname or a.name.split(".")[0])
    return names


def _assignments(fn: ast.AST) -> dict[str, list[ast.AST]]:
    out: dict[str, list[ast.AST]] = {}

    def bind(target, value):
        if isinstance(target, ast.Name):
            out.setdefault(target.id, []).append(value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                bind(t, value)

    for node in ast.walk(fn):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                bind(t, node.value)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            bind(node.target, node.value)
        elif isinstance(node, (ast.For, ast.comprehension)):
            bind(node.target, node.iter)
        elif isinstance(node, ast.NamedExpr):
            bind(node.target, node.value)
    return out


def _sources(expr, assigns, params, theory, seen=frozenset()) -> set[str]:
    """{'theory', 'param', 'other'} reachable from ``expr``: a graph search over the local assignments, each name
    expanded once (following every path separately was exponential: 330 s for one sgd-support check)."""
    src, stack, visited = set(), [expr], set(seen)
    while stack:
        for node in ast.walk(stack.pop()):
            if not isinstance(node, ast.Name):
                continue
            if node.id in theory:
                src.add("theory")
            elif node.id in params:
                src.add("param")  # a config or a result handed in: only a bare parameter is followed no further
            elif node.id in assigns:
                if node.id not in visited:
                    visited.add(node.id)
                    stack.extend(assigns[node.id])
            else:
                src.add("other")
    return src


def _predicted(call: ast.Call):
    for kw in call.keywords:
        if kw.arg == "predicted":
            return kw.value
    return call.args[2] if len(call.args) > 2 else None


def _is_check_call(node) -> bool:
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id == "Check")
        or (isinstance(node.func, ast.Attribute) and node.func.attr == "Check"))


def _check_calls():
    for path in FILES:
        tree = ast.parse(path.read_text(), str(path))
        theory = _theory_names(tree)
        module_assigns = _assignments(ast.Module(body=[n for n in tree.body if not isinstance(
            n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))], type_ignores=[]))
        for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            params = {a.arg for a in fn.args.args + fn.args.kwonlyargs + fn.args.posonlyargs}
            params |= {a.arg for a in (fn.args.vararg, fn.args.kwarg) if a is not None}
            assigns = module_assigns | _assignments(fn)
            for node in ast.walk(fn):
                if _is_check_call(node):
                    yield path, fn, node, assigns, params, theory


CALLS = list(_check_calls())


def test_the_scan_finds_the_sims_checks():
    files = {p.name for p, *_ in CALLS}
    assert len(CALLS) >= 50 and {"sgd_support.py", "feature_averaging.py", "hold_me_tight.py"} <= files


@pytest.mark.parametrize("path, fn, call, assigns, params, theory",
                         CALLS, ids=[f"{p.parent.name}/{p.name}:{c.lineno}" for p, _, c, *_ in CALLS])
def test_prediction_comes_from_theory(path, fn, call, assigns, params, theory):
    pred = _predicted(call)
    assert pred is not None, "Check(...) without a predicted value"
    where = f"{path.relative_to(ROOT)}:{call.lineno} ({ast.unparse(pred)})"
    assert not any(isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)
                   and n is pred for n in ast.walk(pred)), f"bare literal prediction at {where}"
    if isinstance(pred, ast.Name) and pred.id in params:
        pytest.skip(f"{where}: the prediction is the helper's parameter; checked where the helper is called")
    src = _sources(pred, assigns, params, theory, frozenset())
    assert "theory" in src, (
        f"prediction at {where} reaches no fa_jax.theory function (a literal, a config field or a measurement)")


def test_the_scan_catches_literals_config_fields_and_measurements():
    src = '''
from fa_jax.theory import sgd_support as T
def sim(s, res):
    m = res["gd"]
    p = T.gd_plateau_ratio(15)
    checks = [Check("a", m, 0.99, 0.1, "rel", "derived"),
              Check("b", m, s.clean_floor, 0.1, "rel", "derived"),
              Check("c", m, m * 2, 0.1, "rel", "derived"),
              Check("d", m, p, 0.1, "rel", "derived"),
              Check("e", m, -0.5, 0.1, "rel", "derived")]
'''
    tree = ast.parse(src)
    theory = _theory_names(tree)
    fn = tree.body[1]
    assigns, params = _assignments(fn), {"s", "res"}
    verdict = {}
    for node in ast.walk(fn):
        if _is_check_call(node):
            pred = _predicted(node)
            lit = isinstance(pred, ast.Constant) or (isinstance(pred, ast.UnaryOp)
                                                     and isinstance(pred.operand, ast.Constant))
            verdict[node.args[0].value] = (not lit) and "theory" in _sources(pred, assigns, params, theory, frozenset())
    assert verdict == {"a": False, "b": False, "c": False, "d": True, "e": False}
