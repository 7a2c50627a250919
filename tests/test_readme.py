"""The README stays true: every `octscreen` subcommand (and train action) is documented, and CI runs
exactly the README's test command."""

import argparse
from pathlib import Path

from app.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_subcommand_is_documented():
    commands = _subparsers(build_parser())
    assert {"screen", "gui", "info", "synth", "train"} <= set(commands)
    missing = [c for c in commands if f"octscreen {c}" not in README]
    assert not missing, f"README does not document: {missing}"
    actions = _subparsers(commands["train"])
    assert set(actions) >= {"teacher", "student", "distill", "crossval", "export", "demo"}
    missing = [a for a in actions if a not in README.split("octscreen train", 1)[1]]
    assert not missing, f"README does not mention train actions: {missing}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in README and "make run" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert [ln for ln in ci.splitlines() if ln and not ln.startswith(("#", "set ", "cd "))] == ["make test"]
