"""docs/own-experiment.md is true as written: its file blocks are the files under examples/, and its command and
every Python block run, in order, at a tiny size (fewer steps, widths, learning rates and seeds in the TOML)."""
from __future__ import annotations

import pathlib
import re
import shlex
import shutil
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[1]
DOC = ROOT / "docs" / "own-experiment.md"
# the documented sweep file -> its tiny version (each line must exist: the doc and this test change together)
TINY = {
    '"train.steps" = 1000': '"train.steps" = 20',
    "width = [1, 2, 4, 16]": "width = [4]",
    '"optim.lr" = { logspace = [-3, 1, 9] }': '"optim.lr" = { logspace = [-2, 1, 3] }',
    "seed = { range = [0, 4] }": "seed = { range = [0, 2] }",
}


def _blocks(text: str) -> list[tuple[str | None, str, str]]:
    """``(file named by a preceding <!-- file: PATH --> comment or None, language, code)`` of every fenced block."""
    pat = re.compile(r"(?:<!-- file: (\S+) -->\n)?```(\w*)\n(.*?)```", re.DOTALL)
    return [(m.group(1), m.group(2), m.group(3)) for m in pat.finditer(text)]


def test_file_blocks_are_the_example_files():
    files = [(f, code) for f, _, code in _blocks(DOC.read_text()) if f]
    assert {f for f, _ in files} == {"examples/teacher_student.py", "examples/teacher_student.toml"}
    for f, code in files:
        assert code == (ROOT / f).read_text(), f"{f} differs from its block in {DOC.name}"


def test_documented_commands_and_code_run(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from fa_jax.cli import main

    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "teacher_student.py", tmp_path / "examples")
    toml = (ROOT / "examples" / "teacher_student.toml").read_text()
    for full, tiny in TINY.items():
        assert toml.count(full) == 1, full
        toml = toml.replace(full, tiny)
    (tmp_path / "examples" / "teacher_student.toml").write_text(toml)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    try:
        for f, lang, code in _blocks(DOC.read_text()):
            if f:
                continue
            if lang == "sh":
                for line in code.splitlines():
                    assert line.startswith("fa-jax "), line
                    assert main(shlex.split(line)[1:]) == 0
            elif lang == "python":
                exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102  (the documented code, verbatim)
    finally:
        sys.modules.pop("teacher_student", None)
    ds = ns["ds"]
    assert dict(ds["test_loss"].sizes) == {"optim.name": 2, "width": 1, "optim.lr": 3, "seed": 2}
    assert ds["test_loss"].attrs["long_name"] == "final test loss"
    assert (tmp_path / "teacher_student_phase.png").stat().st_size > 10_000
    assert ns["small"]["records/test_loss"].dims == ("optim.lr", "seed", "step")
    assert ns["loss"].notnull().any()


@pytest.mark.parametrize("line", list(TINY))
def test_tiny_lines_exist_in_the_documented_sweep_file(line):
    assert (ROOT / "examples" / "teacher_student.toml").read_text().count(line) == 1
