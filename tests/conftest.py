"""Shared pytest fixtures (engine helper; other test files may use them).

- ``tiny_model``: a seeded random 'test_efficientnet' (3 classes, eval mode), session-scoped.
- ``tiny_model_dir`` / ``tiny_card_path``: that model exported once per session with
  ``core.onnx_export.export_model_files`` (safetensors + ONNX + card) into a temp folder.
- ``tiny_card``: a fresh ``ModelCard`` loaded from ``tiny_card_path`` (safe to modify in a test).
- ``make_bscans`` / ``make_volume``: factories for small synthetic-looking OCT data made with plain
  numpy (dark vitreous, bright layered retina with an RPE line, choroid, speckle).
- ``synthetic_volume``: ``make_volume()`` with the defaults (12 x 128 x 160 uint8, OD, patient P001).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from core.volume import Laterality, OctVolume, PatientInfo, StudyInfo

TINY_CLASSES = ["normal", "drusen", "cnv"]
TINY_SIZE = (64, 64)


def synthetic_bscans(n: int = 12, h: int = 128, w: int = 160, seed: int = 0, dtype: type = np.uint8) -> np.ndarray:
    """``[n, h, w]`` B-scans that look like OCT: speckled dark vitreous, a curved retina band with
    layers and a bright RPE line, a fading choroid below. Deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    out = np.empty((n, h, w), np.float32)
    for i in range(n):
        top = h * (0.32 + 0.04 * cols**2 + rng.uniform(-0.02, 0.02))  # ILM, gently curved
        pit = 0.06 * h * np.exp(-((cols / 0.2) ** 2)) * np.cos(np.pi * (i / max(n - 1, 1) - 0.5))
        top = top + pit  # foveal pit near the centre
        rpe = h * (0.62 + 0.03 * cols**2)
        depth = (rows - top) / np.maximum(rpe - top, 1.0)  # 0 at ILM, 1 at RPE
        img = np.full((h, w), 0.06, np.float32)
        inside = (depth >= 0) & (depth <= 1)
        layers = 0.35 + 0.25 * np.cos(depth * 5 * np.pi) ** 2  # alternating layers
        img = np.where(inside, layers, img)
        img += 0.55 * np.exp(-(((rows - rpe) / (0.012 * h)) ** 2))  # RPE line
        below = rows > rpe
        img = np.where(below, img + 0.35 * np.exp(-(rows - rpe) / (0.12 * h)), img)  # choroid
        speckle = rng.gamma(4.0, 0.25, size=(h, w)).astype(np.float32)  # mean 1
        out[i] = np.clip(img * speckle, 0.0, 1.0)
    top_value = 255 if dtype == np.uint8 else 4095
    return np.round(out * top_value).astype(dtype)


@pytest.fixture(scope="session")
def make_bscans() -> Callable[..., np.ndarray]:
    """Factory: ``make_bscans(n=12, h=128, w=160, seed=0, dtype=np.uint8) -> [n, h, w]``."""
    return synthetic_bscans


def _make_volume(
    n: int = 12,
    h: int = 128,
    w: int = 160,
    seed: int = 0,
    laterality: str = "OD",
    patient_id: str = "P001",
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    dtype: type = np.uint8,
    **kwargs,
) -> OctVolume:
    return OctVolume(
        bscans=synthetic_bscans(n, h, w, seed, dtype),
        laterality=Laterality.parse(laterality),
        patient=PatientInfo(patient_id=patient_id, name="Test^Patient"),
        study=StudyInfo(study_uid=study_uid, study_date="20260131"),
        **kwargs,
    )


@pytest.fixture(scope="session")
def make_volume() -> Callable[..., OctVolume]:
    """Factory: ``make_volume(n=12, h=128, w=160, seed=0, laterality='OD', patient_id='P001',
    study_uid=..., dtype=np.uint8, **OctVolume_fields) -> OctVolume``."""
    return _make_volume


@pytest.fixture
def synthetic_volume() -> OctVolume:
    """12 x 128 x 160 uint8, OD, patient P001 (a new object per test)."""
    return _make_volume()


@pytest.fixture(scope="session")
def tiny_model():
    """Seeded random 'test_efficientnet' with the 3 project classes, in eval mode."""
    import torch

    from core.models import build

    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(0)
    model, _ = build("test_efficientnet", len(TINY_CLASSES))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tmp_path_factory) -> Path:
    """Folder with tiny.json, tiny.safetensors, tiny.onnx (written once per session)."""
    from core.modelcard import ModelCard
    from core.onnx_export import export_model_files

    folder = tmp_path_factory.mktemp("tiny_model")
    card = ModelCard(
        name="tiny",
        arch="test_efficientnet",
        classes=list(TINY_CLASSES),
        input_size=TINY_SIZE,
        version="0.0.1",
        demo=True,
        intended_use="unit tests only",
        training_data={"description": "random weights (no training)"},
    )
    export_model_files(tiny_model, card, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_card_path(tiny_model_dir) -> Path:
    return tiny_model_dir / "tiny.json"


@pytest.fixture
def tiny_card(tiny_card_path):
    """The tiny model card, freshly loaded (a test may change it)."""
    from core.modelcard import load_card

    return load_card(tiny_card_path)


#: External tools some tests run, and the Debian package that brings each (``make test`` installs them).
TOOLS = {
    "dcmdump": "dcmtk",
    "dciodvfy": "dicom3tools",
    "pdftotext": "poppler-utils",
    "pdfinfo": "poppler-utils",
    "pdftoppm": "poppler-utils",
    "pdfimages": "poppler-utils",
}


def run_tool(args: list[str], **kw):
    """``subprocess.run`` of an external checker; a missing tool fails the test with a message saying
    which package to install (never a bare FileNotFoundError, never a silent skip)."""
    import shutil
    import subprocess

    tool = args[0]
    if shutil.which(tool) is None:
        pytest.fail(
            f"{tool} is not installed: it checks our output in this test; install the Debian package "
            f"{TOOLS.get(tool, tool)} (make test does: it runs 'make sysdeps')",
            pytrace=False,
        )
    return subprocess.run(args, **kw)


# -- the desktop app (GUI tests; Qt is imported only when a test asks for these) -------------------
@pytest.fixture(scope="module")
def exam_dir(tmp_path_factory, make_volume) -> Path:
    """One patient, both eyes, as DICOM OPT files (small volumes)."""
    from core.io import write_opt
    from core.volume import PixelSpacing

    folder = tmp_path_factory.mktemp("exam")
    spacing = PixelSpacing(slice=0.25, row=0.0039, column=0.012)
    write_opt(make_volume(n=10, laterality="OD", seed=1, spacing=spacing), folder / "od.dcm")
    write_opt(make_volume(n=10, laterality="OS", seed=2, spacing=spacing), folder / "os.dcm")
    return folder


@pytest.fixture
def settings(tmp_path):
    """Private app settings in an ini file of the test's own (the audit trail goes beside it)."""
    from PySide6.QtCore import QSettings

    from app.settings import AppSettings

    return AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def window(qtbot, settings, tiny_card_path):
    """The main window, shown offscreen, on private settings, scripted dialogs and the tiny model."""
    from app.main_window import MainWindow
    from tests.gui_helpers import RecordingDialogs

    w = MainWindow(settings, RecordingDialogs())
    w.model_override = str(tiny_card_path)
    qtbot.addWidget(w)
    w.show()
    yield w
    followup = getattr(w, "followup", None)
    if followup is not None:
        followup.close()
    if w.job is not None:
        w.job.cancel()
        w.job.done.wait(10)


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl; make sysdeps installs it)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: it makes the TLS tests' certificate; install the Debian package openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key
