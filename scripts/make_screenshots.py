"""Render screenshots of the desktop app's main states into docs/screenshots/ (offscreen).

    .venv/bin/python scripts/make_screenshots.py [--exam DIR] [--model CARD] [--out docs/screenshots]

States: the empty start window (01), the demo exam loaded (02: worklist, patient banner, an eye the
file does not name), the heatmap overlay with its colour bar on an evidence B-scan (03), the other
eye (04), the error dialog for a corrupt file among good ones (05), the worklist filling while the
batch is screened (06), the synthetic demo's urgent eye side by side without and with the heatmap
(07), the worklist sorted most urgent first (08), an unknown eye set by the user (09), and the
en-face view of that urgent eye with the B-scan line and the per-B-scan decision edge (10).
The model is ``--model``, else the bundled model (resources/models/octscreen-oct2017.json). If
neither exists, an UNTRAINED random tiny model is exported to a temp folder so the layout can still
be captured; its decisions are meaningless and the script says so (re-run once the demo model exists).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtGui import QColor, QImage, QPainter  # noqa: E402
from PySide6.QtWidgets import QAbstractItemView, QApplication, QMessageBox, QWidget  # noqa: E402

from app.cmd_gui import create_app  # noqa: E402
from app.dialogs import Dialogs  # noqa: E402
from app.main_window import MainWindow, default_card_path, demo_exam_path, synthetic_demo_path  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.widgets.worklist import COL_DECISION  # noqa: E402
from core.volume import Laterality  # noqa: E402


class CapturingDialogs(Dialogs):
    """Builds the real error box but keeps it instead of blocking in exec()."""

    def __init__(self) -> None:
        self.boxes: list[QMessageBox] = []

    def error(self, parent, title, text, details=""):
        self.boxes.append(self.error_box(parent, title, text, details))

    def info(self, parent, title, text):
        print(f"info: {title}: {text}")


def wait_idle(app: QApplication, window: MainWindow, timeout: float = 300.0) -> None:
    """Process events until the window's background job has ended."""
    end = time.monotonic() + timeout
    while window.job is not None:
        if time.monotonic() > end:
            raise TimeoutError("the background job did not finish")
        app.processEvents()
        time.sleep(0.01)
    for _ in range(5):
        app.processEvents()


def save(widget: QWidget, path: Path) -> None:
    """Grab a widget (device pixel ratio 1) into a PNG."""
    widget.grab().toImage().save(str(path))
    print(f"wrote {path}")


def with_dialog(window: MainWindow, box: QMessageBox, path: Path) -> None:
    """The window, dimmed, with the dialog drawn centred over it (offscreen has no window manager)."""
    base = window.grab().toImage().convertToFormat(QImage.Format.Format_ARGB32)
    box.show()
    box.adjustSize()
    QApplication.processEvents()
    dialog = box.grab().toImage()
    box.hide()
    painter = QPainter(base)
    painter.fillRect(base.rect(), QColor(20, 26, 34, 90))
    x = (base.width() - dialog.width()) // 2
    y = (base.height() - dialog.height()) // 3
    bar = 30  # a title bar, as a window manager would draw
    painter.fillRect(x + 4, y - bar + 6, dialog.width(), dialog.height() + bar, QColor(0, 0, 0, 70))  # shadow
    painter.fillRect(x, y - bar, dialog.width(), bar, QColor("#dfe4ea"))
    painter.setPen(QColor("#1b2430"))
    font = QApplication.font()
    font.setBold(True)
    painter.setFont(font)
    painter.drawText(x, y - bar, dialog.width(), bar, Qt.AlignmentFlag.AlignCenter, box.windowTitle())
    painter.drawImage(x, y, dialog)
    painter.setPen(QColor("#8a94a0"))
    painter.drawRect(x - 1, y - bar - 1, dialog.width() + 1, dialog.height() + bar + 1)
    painter.end()
    base.save(str(path))
    print(f"wrote {path}")


def untrained_card(folder: Path) -> Path:
    """An untrained tiny model card (layout screenshots only: its decisions mean nothing)."""
    import torch

    from core.modelcard import ModelCard
    from core.models import build
    from core.onnx_export import export_model_files

    torch.manual_seed(0)
    model, _ = build("test_efficientnet", 3)
    card = ModelCard(
        name="untrained-layout-only",
        arch="test_efficientnet",
        classes=["normal", "drusen", "cnv"],
        input_size=(64, 64),
        demo=True,
        intended_use="screenshots of the layout only",
    )
    export_model_files(model.eval(), card, folder)
    return folder / f"{card.name}.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exam", type=Path, default=demo_exam_path(), help="exam folder (default: the demo exam)")
    ap.add_argument("--model", type=Path, help="model card (default: the bundled demo model)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--size", default="1280x720", help="window size WxH")
    args = ap.parse_args(argv)

    app = create_app()
    tmp = Path(tempfile.mkdtemp(prefix="octscreen-shots-"))
    card = args.model or default_card_path()
    if not card.exists():
        print(
            f"WARNING: no model card at {card}; using an UNTRAINED random model, decisions are meaningless. "
            "Re-run once the demo model exists.",
            file=sys.stderr,
        )
        card = untrained_card(tmp / "model")
    if not args.exam.exists():
        print(f"{args.exam}: the exam folder does not exist (run scripts/make_demo_sample.py)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.lower().split("x"))

    dialogs = CapturingDialogs()
    settings = AppSettings(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(settings, dialogs)
    window.model_override = str(card)
    window.resize(width, height)
    window.show()
    app.processEvents()
    save(window, args.out / "01-start.png")

    window.open_paths([args.exam])
    end = time.monotonic() + 120  # 06: the worklist fills while the batch runs (progress bar and Cancel)
    while window.job is not None and len(window.browser.eye_items()) < 8 and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.002)
    if window.job is not None:
        for _ in range(3):  # let the layout catch up with the rows just added
            app.processEvents()
        save(window, args.out / "06-worklist-while-screening.png")
    else:
        print("the batch ended before a mid-batch screenshot could be taken (06 not updated)", file=sys.stderr)
    wait_idle(app, window)
    if dialogs.boxes:
        print("errors while opening the exam:", *[b.text() for b in dialogs.boxes], sep="\n", file=sys.stderr)
        return 1
    window.chart.setFocus()
    save(window, args.out / "02-exam-loaded.png")

    state = window.state
    eye = state.current_eye
    if eye is not None and eye.evidence:
        state.set_slice(eye.evidence[0])
    state.set_overlay(True)
    window.viewer.view.zoom_by(1.0)
    app.processEvents()
    save(window, args.out / "03-heatmap-overlay.png")
    state.set_overlay(False)

    if state.current_exam is not None and len(state.current_exam.eyes) > 1:
        window.step_eye(1)
        app.processEvents()
        save(window, args.out / "04-other-eye.png")
        window.step_eye(-1)
    under_review = state.current_eye

    window.open_paths([synthetic_demo_path()])  # a named patient, both eyes, 25-B-scan volumes
    wait_idle(app, window)
    assert state.current_eye is under_review, "the eye under review must stay selected when a batch ends"
    synthetic = next(le.exam for le in state.exams if le.exam.patient.patient_id == "DEMO0001")
    urgent = min(synthetic.eyes, key=lambda e: e.urgency.rank)
    state.select_eye(urgent)
    if urgent.evidence:
        state.set_slice(urgent.evidence[0])
    state.set_side_by_side(True)
    app.processEvents()
    save(window, args.out / "07-side-by-side.png")
    state.set_overlay(False)
    if window.enface.enface is not None:  # 10: the en-face view of the 25-B-scan volume, line on the evidence
        window.enface_dock.raise_()
        app.processEvents()
        save(window, args.out / "10-enface.png")

    window.browser.tree.sortByColumn(COL_DECISION, Qt.SortOrder.AscendingOrder)  # most urgent first
    window.browser.decision_filter.setCurrentText("Referrals")
    window.browser.tree.scrollToItem(window.browser.tree.currentItem(), QAbstractItemView.ScrollHint.PositionAtCenter)
    app.processEvents()
    save(window, args.out / "08-worklist-sorted.png")
    window.browser.decision_filter.setCurrentText("All eyes")

    unknown = next(
        (e for le in state.exams for e in le.exam.eyes if e.eye.laterality is Laterality.UNKNOWN and e.n_bscans > 1),
        None,
    ) or next((e for le in state.exams for e in le.exam.eyes if e.eye.laterality is Laterality.UNKNOWN), None)
    if unknown is not None:
        state.select_eye(unknown)
        state.set_laterality(Laterality.OS)
        window.browser.tree.scrollToItem(
            window.browser.tree.currentItem(), QAbstractItemView.ScrollHint.PositionAtCenter
        )
        app.processEvents()
        save(window, args.out / "09-eye-set-by-user.png")

    bad = tmp / "damaged_scan.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + os.urandom(600))
    text_file = tmp / "notes.dcm"
    text_file.write_text("this is not an OCT file\n")
    window.open_paths([bad, text_file])
    wait_idle(app, window)
    if dialogs.boxes:
        with_dialog(window, dialogs.boxes[-1], args.out / "05-error-dialog.png")
    else:
        print("expected an error dialog for the corrupt file, got none", file=sys.stderr)
        return 1
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
