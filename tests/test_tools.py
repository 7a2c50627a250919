"""The code stays clean: ruff (lint and format), mypy on core/ and the import-linter layer contracts,
all configured in pyproject.toml, pass on the whole repository. The tools come with the test extra
(``pip install -e '.[test]'``); a missing tool fails the test, it is never skipped."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the tools installed next to this interpreter (the virtualenv's bin/)


def _tool(name: str) -> Path:
    for candidate in (BIN / name, BIN / f"{name}.exe"):
        if candidate.is_file():
            return candidate
    pytest.fail(
        f"{name} is not installed next to {sys.executable}: install the project's test extra "
        f"(pip install -e '.[test]')",
        pytrace=False,
    )


@pytest.mark.parametrize(
    "tool, args",
    [
        ("ruff", ["check", "."]),
        ("ruff", ["format", "--check", "."]),
        ("mypy", []),  # files and options from [tool.mypy]
        ("lint-imports", []),  # contracts from [tool.importlinter]
    ],
    ids=["ruff-check", "ruff-format", "mypy", "lint-imports"],
)
def test_tool_passes(tool, args):
    cmd = [str(_tool(tool)), *args]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (
        f"`{tool} {' '.join(args)}` failed (exit code {res.returncode}):\n{res.stdout}\n{res.stderr}"
    )
