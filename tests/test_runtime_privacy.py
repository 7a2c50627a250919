"""Privacy of the runtime (issue 11 item 8): screening writes nothing into the user's cache or home
folders, in particular no ONNX Runtime telemetry (device id, event store)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "oct2017-sample"


def _run(home: Path, code: str) -> None:
    # A minimal environment: ONNX Runtime also stays quiet when it sees a CI variable (CI,
    # GITHUB_ACTIONS, ...), so inheriting the CI machine's environment would make both tests
    # pass or fail for the wrong reason.
    keep = ("PATH", "LANG", "LC_ALL", "QT_QPA_PLATFORM", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "PYTHONPATH": str(REPO)})
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True, timeout=300)


def _files(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())


@pytest.mark.parametrize("backend", ["auto", "openvino"], ids=["onnxruntime", "openvino"])
def test_screening_writes_no_telemetry_or_anything_else_under_home(tmp_path, backend):
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out"
    _run(
        home,
        "from app.cli import main; import sys; "
        f"sys.exit(main(['screen', {str(next(SAMPLE.rglob('*.jpeg')))!r}, '--out', {str(out)!r}, "
        f"'--backend', {backend!r}]))",
    )
    assert any(out.iterdir())  # it did screen
    assert _files(home) == []


def test_the_switch_is_needed(tmp_path):
    """Without core's switch, importing onnxruntime does write its device id (so the test above can fail)."""
    home = tmp_path / "home"
    home.mkdir()
    _run(home, "import onnxruntime")
    assert any("onnxruntime" in f for f in _files(home))


def test_openvino_alone_does_write_its_telemetry(tmp_path):
    """The control: a plain ``import openvino`` writes its client id under ~/intel."""
    home = tmp_path / "home"
    home.mkdir()
    _run(home, "import openvino")
    assert any(f.startswith("intel") for f in _files(home))
