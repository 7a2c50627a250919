"""Render screenshots of the desktop app's main states into docs/screenshots/ (offscreen).

    .venv/bin/python scripts/make_screenshots.py [--exam DIR] [--model CARD] [--out docs/screenshots]

States: the empty start window (01), the demo exam loaded (02: worklist, patient banner, an eye the
file does not name), the heatmap overlay with its colour bar on an evidence B-scan (03), the other
eye (04), the error dialog for a corrupt file among good ones (05), the worklist filling while the
batch is screened (06), the synthetic demo's urgent eye side by side without and with the heatmap
(07), the worklist sorted most urgent first (08), an unknown eye set by the user (09), and the
en-face view of that urgent eye with the B-scan line and the per-B-scan decision edge (10), the
sign-off form (15) and the signed eye (16), and Compare visits with an earlier simulated visit (17).
``--scale 2 --size 1920x1080`` takes them at 200 % (the window is 960 x 540 logical pixels).
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
    # the painter works in logical pixels (the images may have a device pixel ratio of 2)
    bw, bh = base.width() / base.devicePixelRatio(), base.height() / base.devicePixelRatio()
    dialog_w, dialog_h = dialog.width() / dialog.devicePixelRatio(), dialog.height() / dialog.devicePixelRatio()
    x, y = int((bw - dialog_w) // 2), int((bh - dialog_h) // 3)
    bar = 30  # a title bar, as a window manager would draw
    painter.fillRect(x + 4, y - bar + 6, int(dialog_w), int(dialog_h) + bar, QColor(0, 0, 0, 70))  # shadow
    painter.fillRect(x, y - bar, int(dialog_w), bar, QColor("#dfe4ea"))
    painter.setPen(QColor("#1b2430"))
    font = QApplication.font()
    font.setBold(True)
    painter.setFont(font)
    painter.drawText(x, y - bar, int(dialog_w), bar, Qt.AlignmentFlag.AlignCenter, box.windowTitle())
    painter.drawImage(x, y, dialog)
    painter.setPen(QColor("#8a94a0"))
    painter.drawRect(x - 1, y - bar - 1, int(dialog_w) + 1, int(dialog_h) + bar + 1)
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
    ap.add_argument("--size", default="1280x720", help="window size WxH in physical pixels")
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="display scaling (2: 200 %%, QT_SCALE_FACTOR; the window is --size/scale logical pixels); "
        "the files get a '-200pct' style suffix",
    )
    ap.add_argument("--only-new", action="store_true", help="only the sign-off and follow-up states (15-17)")
    args = ap.parse_args(argv)
    if os.environ.get("QT_QPA_PLATFORM", "offscreen").startswith("offscreen"):
        # an offscreen screen of --size physical pixels at the scaling's DPI (192 dpi: 200 %), so the
        # window (which never opens larger than its screen) gets the whole size, as on a real monitor
        import json

        w_px, h_px = (int(v) for v in args.size.lower().split("x"))
        screen = {"name": "screen0", "x": 0, "y": 0, "width": w_px, "height": h_px}
        screen.update(logicalDpi=round(96 * args.scale), logicalBaseDpi=96, dpr=1.0)
        config = Path(tempfile.mkdtemp(prefix="octscreen-screen-")) / "screens.json"
        config.write_text(json.dumps({"screens": [screen]}))
        os.environ["QT_QPA_PLATFORM"] = f"offscreen:configfile={config}"
    elif args.scale != 1.0:
        os.environ["QT_SCALE_FACTOR"] = f"{args.scale:g}"

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
    width, height = (round(int(v) / args.scale) for v in args.size.lower().split("x"))
    suffix = "" if args.scale == 1.0 else f"-{round(args.scale * 100)}pct"
    shot = lambda name: args.out / f"{name}{suffix}.png"  # noqa: E731

    dialogs = CapturingDialogs()
    settings = AppSettings(QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(settings, dialogs)
    window.model_override = str(card)
    window.resize(width, height)
    window.show()
    app.processEvents()
    if args.only_new:
        return signoff_and_followup(app, window, shot)
    save(window, shot("01-start"))

    window.open_paths([args.exam])
    end = time.monotonic() + 120  # 06: the worklist fills while the batch runs (progress bar and Cancel)
    while window.job is not None and len(window.browser.eye_items()) < 8 and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.002)
    if window.job is not None:
        for _ in range(3):  # let the layout catch up with the rows just added
            app.processEvents()
        save(window, shot("06-worklist-while-screening"))
    else:
        print("the batch ended before a mid-batch screenshot could be taken (06 not updated)", file=sys.stderr)
    wait_idle(app, window)
    if dialogs.boxes:
        print("errors while opening the exam:", *[b.text() for b in dialogs.boxes], sep="\n", file=sys.stderr)
        return 1
    window.chart.setFocus()
    save(window, shot("02-exam-loaded"))

    state = window.state
    eye = state.current_eye
    if eye is not None and eye.evidence:
        state.set_slice(eye.evidence[0])
    state.set_overlay(True)
    window.viewer.view.zoom_by(1.0)
    app.processEvents()
    save(window, shot("03-heatmap-overlay"))
    state.set_overlay(False)

    if state.current_exam is not None and len(state.current_exam.eyes) > 1:
        window.step_eye(1)
        app.processEvents()
        save(window, shot("04-other-eye"))
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
    save(window, shot("07-side-by-side"))
    state.set_overlay(False)
    if window.enface.enface is not None:  # 10: the en-face view of the 25-B-scan volume, line on the evidence
        window.enface_dock.raise_()
        app.processEvents()
        save(window, shot("10-enface"))

    window.browser.tree.sortByColumn(COL_DECISION, Qt.SortOrder.AscendingOrder)  # most urgent first
    window.browser.decision_filter.setCurrentText("Referrals")
    window.browser.tree.scrollToItem(window.browser.tree.currentItem(), QAbstractItemView.ScrollHint.PositionAtCenter)
    app.processEvents()
    save(window, shot("08-worklist-sorted"))
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
        save(window, shot("09-eye-set-by-user"))

    bad = tmp / "damaged_scan.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + os.urandom(600))
    text_file = tmp / "notes.dcm"
    text_file.write_text("this is not an OCT file\n")
    window.open_paths([bad, text_file])
    wait_idle(app, window)
    if dialogs.boxes:
        with_dialog(window, dialogs.boxes[-1], shot("05-error-dialog"))
    else:
        print("expected an error dialog for the corrupt file, got none", file=sys.stderr)
        return 1
    code = signoff_and_followup(app, window, shot)
    window.close()
    return code


def signoff_and_followup(app: QApplication, window: MainWindow, shot) -> int:
    """15: the sign-off form of the synthetic demo's urgent eye; 16: signed (changed to another tier, a
    finding; the worklist's tick); 17: Compare visits with an earlier visit of the same eye (the same
    simulated anatomy a year before, with drusen only), B-scans synchronised, the trend below."""

    from core.io import write_opt
    from core.synthetic import simulate_patient
    from core.volume import StudyInfo

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_demo_sample import DEMO_PATIENT, DEMO_SEED

    state = window.state
    if not any(le.exam.patient.patient_id == "DEMO0001" for le in state.exams):
        window.open_paths([synthetic_demo_path()])
        wait_idle(app, window)
    earlier_dir = Path(tempfile.mkdtemp(prefix="octscreen-visit-"))
    od, _os = simulate_patient(1, seed=DEMO_SEED, labels=("drusen", "drusen"), n_bscans=25, patient=DEMO_PATIENT)
    od.study = StudyInfo(
        study_uid="1.2.826.0.1.3680043.8.498.20250310.1",
        series_uid="1.2.826.0.1.3680043.8.498.20250310.1.1",
        study_date="20250310",
        study_time="094500",
        description=od.study.description,
    )
    write_opt(od, earlier_dir / "DEMO0001_OD_2025.dcm")
    window.open_paths([earlier_dir])
    wait_idle(app, window)
    exam = next(
        le.exam
        for le in state.exams
        if le.exam.patient.patient_id == "DEMO0001" and le.exam.study.study_date == "20260910"
    )
    urgent = min(exam.eyes, key=lambda e: e.urgency.rank)
    state.select_eye(urgent)
    state.set_overlay(False)
    state.set_side_by_side(False)
    window.summary_dock.raise_()
    box = window.summary.signoff
    box.decision.setCurrentIndex(box.decision.findData("confirmed"))
    box.finding.setPlainText("Subretinal fluid and a fibrovascular PED under the fovea")
    box.name.setText("Dr. Amira Haddad")
    app.processEvents()
    window.summary.ensureWidgetVisible(box.sign_button)
    app.processEvents()
    save(window, shot("15-signoff-form"))
    box.sign()
    app.processEvents()
    window.summary.ensureWidgetVisible(box.status)
    app.processEvents()
    save(window, shot("16-signed"))

    follow = window.compare_visits()
    if follow is None:
        print("Compare visits found no second visit (17 not updated)", file=sys.stderr)
        return 1
    follow.resize(window.size())
    follow.show()
    follow.right.state.set_slice(urgent.evidence[0] if urgent.evidence else 12)
    for _ in range(5):
        app.processEvents()
    save(follow, shot("17-compare-visits"))
    follow.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
