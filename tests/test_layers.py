"""DESIGN.md's layer rule, checked on the source: core/ imports neither Qt nor app/ nor training/,
and does not print or parse command lines; training/ does not import app/."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _calls(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
    ]


CORE = sorted((ROOT / "core").rglob("*.py"))


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_qt_app_or_training(path):
    bad = [
        (ln, m)
        for ln, m in _imports(path)
        if m.split(".")[0] in {"PySide6", "PyQt5", "PyQt6", "app", "training", "argparse", "click", "typer"}
    ]
    assert not bad, f"{path}: core must not import {bad}"
    assert not _calls(path, "print"), f"{path}: core logs, it does not print (lines {_calls(path, 'print')})"


def test_training_does_not_import_app():
    bad = [(p, m) for p in (ROOT / "training").rglob("*.py") for _, m in _imports(p) if m.split(".")[0] == "app"]
    assert not bad
