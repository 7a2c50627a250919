"""`octscreen --help` (and building the parser of every subcommand) imports none of the heavy
libraries: they load when a command runs, so the CLI answers at once (issue 12: start-up)."""

import subprocess
import sys
from pathlib import Path

HEAVY = ("numpy", "torch", "pydicom", "cv2", "PySide6", "onnxruntime", "timm", "reportlab", "tifffile", "PIL")


def test_building_the_parser_imports_no_heavy_library():
    code = (
        "import sys; from app.cli import build_parser; build_parser(); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    assert out.stdout.strip() == ""


def test_help_lists_every_subcommand(capsys):
    import pytest

    from app.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for cmd in ("synth", "info", "screen", "gui", "train"):
        assert cmd in text
