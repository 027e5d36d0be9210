"""The installed distribution is complete and its declared dependencies are the ones the code imports.

CI installs fa-jax from a built wheel (not editable), so every module of ``fa_jax/`` and ``sims/`` in the source
tree must be in the installed RECORD (``sims/`` installs as ``fa_jax_sims``); an editable install (development)
skips that comparison.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import json
import pathlib
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("fa_jax", "sims")  # source folders
INSTALLED_AS = {"fa_jax": "fa_jax", "sims": "fa_jax_sims"}  # source folder -> installed import name


def _installed():
    """The installed fa-jax distribution (not a build's ``*.egg-info`` lying in the source tree)."""
    for d in md.distributions(name="fa-jax"):
        if pathlib.Path(str(d.locate_file(""))).resolve() != ROOT:
            return d
    return None


def test_every_module_is_in_the_installed_wheel():
    dist = _installed()
    if dist is None:
        pytest.skip("fa-jax is not installed (only source-tree metadata)")
    text = dist.read_text("direct_url.json")
    if text and json.loads(text).get("dir_info", {}).get("editable", False):
        pytest.skip("editable install: the modules are the source tree itself")
    installed = {str(f).replace("\\", "/") for f in dist.files or ()}
    source = {INSTALLED_AS[pkg] + "/" + p.relative_to(ROOT / pkg).as_posix() for pkg in PACKAGES
              for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(source - installed)
    assert not missing, f"modules missing from the installed wheel (packaging config): {missing}"
    # the installed top-level names are fa-jax's own (issue 20): no generic `sims` in site-packages
    tops = {f.split("/")[0] for f in installed if f.endswith(".py")}
    assert tops == {"fa_jax", "fa_jax_sims"}, tops
    assert "fa_jax_sims/regimes.toml" in installed  # the showcase sweep file ships with its analysis


def _top_level_imports() -> set[str]:
    mods = set()
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.Import):
                    mods.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods.add(node.module.split(".")[0])
    return mods


# import name -> distribution name, where they differ
DIST = {"sklearn": "scikit-learn", "yaml": "pyyaml"}


def test_every_imported_third_party_package_is_declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower()
                for d in cfg["dependencies"] + [x for v in cfg["optional-dependencies"].values() for x in v]}
    third = {m for m in _top_level_imports() if m not in sys.stdlib_module_names and m not in PACKAGES
             and m not in INSTALLED_AS.values()}
    undeclared = sorted(m for m in third if DIST.get(m, m).replace("_", "-").lower() not in declared)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
