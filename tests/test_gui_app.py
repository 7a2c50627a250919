"""The desktop app end to end, offscreen: open + screen with the real engine and the tiny fixture
model, navigate, overlay, strip chart, export, bad files, cancel, settings and window state."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QEvent, QMimeData, QPoint, QPointF, QSettings, Qt, QTimer, QUrl  # noqa: E402
from PySide6.QtGui import QAction, QDropEvent, QMouseEvent, QWheelEvent  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.dialogs import SettingsValues  # noqa: E402
from app.main_window import MainWindow, install_excepthook  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.widgets.worklist import COL_DECISION, COL_EYE  # noqa: E402
from app.workers import ExportRequest  # noqa: E402
from core.errors import Cancelled  # noqa: E402
from core.io import write_opt  # noqa: E402
from core.modelcard import DEMO_WARNING  # noqa: E402
from tests.gui_helpers import JOB_TIMEOUT_MS, RecordingDialogs, open_and_wait, wait_idle  # noqa: E402, F401


def test_open_screens_and_shows_the_decision(qtbot, window, exam_dir):
    open_and_wait(qtbot, window, [exam_dir])
    assert not window.dialogs.errors
    assert len(window.state.exams) == 1
    exam = window.state.current_exam
    assert [e.eye.laterality.value for e in exam.eyes] == ["OD", "OS"]
    eye = window.state.current_eye
    assert window.summary.badge.text() == eye.headline
    assert window.summary.demo_banner.isVisibleTo(window) and window.summary.demo_banner.text() == DEMO_WARNING.upper()
    items = window.browser.eye_items()
    assert [i.text(COL_EYE) for i in items] == ["OD", "OS"]
    assert all(i.text(COL_DECISION) for i in items)  # every eye has a text badge
    assert window.viewer.view.last_rgb is not None
    assert "Screened 2 volumes (2 eyes)" in window.status_text.text()
    assert str(exam_dir.resolve()) in window.settings.recent
    window._fill_recent()  # File > Open recent lists it
    assert str(exam_dir.resolve()) in [a.text() for a in window.recent_menu.actions()]
    # selecting the other eye in the browser switches the summary
    window.browser.select_item(items[1])
    assert window.state.current_eye.eye.laterality.value == "OS"
    assert window.summary.eye_title.text() == "Left eye (OS)"


def test_open_demo_real_bscans(qtbot, window):
    from app.main_window import demo_exam_path

    assert demo_exam_path().is_dir(), "the bundled demo is part of the repository"
    window.act_demo.trigger()
    wait_idle(qtbot, window)
    assert not window.dialogs.errors
    exams = window.state.exams
    # 44 OCT2017 B-scans of 32 patients: one exam per patient
    assert len(exams) == 32 and sum(e.n_bscans for x in exams for e in x.exam.eyes) == 44
    assert all(e.n_bscans <= 6 for x in exams for e in x.exam.eyes)
    assert window.settings.recent == []  # the demo is not a "recent file"


def test_open_demo_synthetic_volumes(qtbot, window):
    from app.main_window import synthetic_demo_path

    assert synthetic_demo_path().is_dir(), "the synthetic demo exam is part of the repository"
    window.act_demo_synthetic.trigger()
    wait_idle(qtbot, window)
    assert not window.dialogs.errors
    exam = window.state.current_exam
    assert exam.patient.name == "DEMO^Synthetic"
    assert sorted(e.eye.laterality.value for e in exam.eyes) == ["OD", "OS"]
    assert all(e.n_bscans == 25 for e in exam.eyes)
    assert window.viewer.view.last_rgb.shape == (496, 512, 3)
    assert window.settings.recent == []  # the demo is not a "recent file"


def test_slice_navigation_changes_the_shown_bscan(qtbot, window, exam_dir):
    open_and_wait(qtbot, window, [exam_dir / "od.dcm"])
    view, state = window.viewer.view, window.state
    state.set_slice(3)
    before = view.last_rgb.copy()
    qtbot.keyClick(view, Qt.Key.Key_Right)
    assert state.slice_index == 4
    assert not np.array_equal(view.last_rgb, before)
    assert np.array_equal(view.last_rgb[..., 0], state.volume.bscans[4])
    qtbot.keyClick(view, Qt.Key.Key_Left)
    qtbot.keyClick(view, Qt.Key.Key_Left)
    assert state.slice_index == 2
    qtbot.keyClick(view, Qt.Key.Key_End)
    assert state.slice_index == 9 and window.viewer.slider.value() == 10
    window.viewer.slider.setValue(6)
    assert state.slice_index == 5
    wheel(view, -120)  # wheel down: next B-scan
    assert state.slice_index == 6
    wheel(view, 240)
    assert state.slice_index == 4
    zoom = view.zoom
    wheel(view, 120, Qt.KeyboardModifier.ControlModifier)  # Ctrl+wheel: zoom, same B-scan
    assert view.zoom == pytest.approx(zoom * 1.25) and state.slice_index == 4
    assert window.viewer.position.text().startswith("B-scan 5 of 10 \u00b7 1.00 mm")


def wheel(view, delta_y: int, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    pos = QPointF(view.viewport().rect().center())
    event = QWheelEvent(
        pos,
        view.viewport().mapToGlobal(pos),
        QPoint(0, 0),
        QPoint(0, delta_y),
        Qt.MouseButton.NoButton,
        modifiers,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(view.viewport(), event)


def test_right_drag_adjusts_window_level(qtbot, window, exam_dir):
    open_and_wait(qtbot, window, [exam_dir / "od.dcm"])
    view, state = window.viewer.view, window.state
    before = view.last_rgb.copy()
    vp = view.viewport()
    start = QPointF(vp.rect().center())
    end = start + QPointF(200, 80)
    right, none = Qt.MouseButton.RightButton, Qt.MouseButton.NoButton
    mods = Qt.KeyboardModifier.NoModifier
    for kind, pos, button, buttons in (
        (QEvent.Type.MouseButtonPress, start, right, right),
        (QEvent.Type.MouseMove, end, none, right),
        (QEvent.Type.MouseButtonRelease, end, right, none),
    ):
        QApplication.sendEvent(vp, QMouseEvent(kind, pos, vp.mapToGlobal(pos), button, buttons, mods))
    assert state.window == pytest.approx(0.5) and state.level == pytest.approx(0.3)
    assert window.viewer.contrast.value() == 50
    assert view.last_rgb.astype(int).mean() > before.astype(int).mean()  # lower level: brighter


def test_overlay_toggle_changes_pixels(qtbot, window, exam_dir):
    open_and_wait(qtbot, window, [exam_dir / "od.dcm"])
    view = window.viewer.view
    plain = view.last_rgb.copy()
    window.act_overlay.trigger()  # the H action
    assert window.state.overlay_on and window.viewer.overlay.isChecked()
    coloured = view.last_rgb.copy()
    assert not np.array_equal(coloured, plain)
    assert (np.abs(coloured.astype(int) - plain.astype(int)).sum(axis=2) > 0).mean() > 0.05
    window.viewer.opacity.setValue(10)
    assert window.state.opacity == pytest.approx(0.1)
    assert not np.array_equal(view.last_rgb, coloured)
    window.viewer.overlay.setChecked(False)
    assert np.array_equal(view.last_rgb, plain)


def test_keyboard_shortcuts_reach_the_window(qtbot, window, exam_dir):
    open_and_wait(qtbot, window, [exam_dir])
    qtbot.waitExposed(window)
    window.windowHandle().requestActivate()
    qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=5000)
    handle, state = window.windowHandle(), window.state
    plain = window.viewer.view.last_rgb.copy()
    QTest.keyClick(handle, Qt.Key.Key_H)
    assert state.overlay_on and not np.array_equal(window.viewer.view.last_rgb, plain)
    opacity = state.opacity
    QTest.keyClick(handle, Qt.Key.Key_BracketRight)
    assert state.opacity == pytest.approx(opacity + 0.1)
    QTest.keyClick(handle, Qt.Key.Key_C)  # Auto -> first class
    assert state.cam_class == state.classes[0]
    QTest.keyClick(handle, Qt.Key.Key_Down, Qt.KeyboardModifier.ControlModifier)
    assert state.current_eye.eye.laterality.value == "OS"
    QTest.keyClick(handle, Qt.Key.Key_S)  # side by side: without and with the heatmap
    assert state.side_by_side and window.act_side_by_side.isChecked() and window.viewer.side.isChecked()
    assert window.viewer.view.last_rgb.shape[1] > 2 * state.volume.bscans.shape[2]
    QTest.keyClick(handle, Qt.Key.Key_H)
    assert not state.overlay_on and not state.side_by_side and not window.act_side_by_side.isChecked()


def test_strip_click_jumps_and_evidence_thumbnail_jumps(qtbot, window, exam_dir):
    open_and_wait(qtbot, window, [exam_dir / "od.dcm"])
    chart, state = window.chart, window.state
    y = int(chart.plot_rect().center().y())
    qtbot.mouseClick(chart, Qt.MouseButton.LeftButton, pos=QPoint(int(chart.x_of(7)), y))
    assert state.slice_index == 7
    qtbot.mouseClick(chart, Qt.MouseButton.LeftButton, pos=QPoint(int(chart.x_of(1)), y))
    assert state.slice_index == 1
    eye = state.current_eye
    if window.summary.evidence_buttons:  # not a rescan: thumbnails exist
        target = eye.evidence[-1]
        state.set_slice(0 if target else 1)
        window.summary.evidence_buttons[-1].click()
        assert state.slice_index == target


def test_enface_dock_beside_the_viewer_selects_and_follows(qtbot, window, exam_dir):
    open_and_wait(qtbot, window, [exam_dir / "od.dcm"])
    ef, state = window.enface, window.state
    assert window.enface_dock.isVisible() and ef.enface is not None
    assert ef.enface.physical and ef.enface.image.shape[0] == round(10 * 0.25 / 0.012)  # 2.5 mm by 1.92 mm
    qtbot.mouseClick(ef, Qt.MouseButton.LeftButton, pos=QPoint(int(ef.image_rect().center().x()), int(ef.y_of(8))))
    assert state.slice_index == 8 and window.viewer.position.text().startswith("B-scan 9 of 10")
    toggle = window.enface_dock.toggleViewAction()
    view_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&View")
    assert toggle in view_menu.actions()
    toggle.trigger()
    assert not window.enface_dock.isVisible()
    toggle.trigger()
    assert window.enface_dock.isVisible()


def test_export_writes_pdf_and_asks_before_overwrite(qtbot, window, exam_dir, tmp_path):
    open_and_wait(qtbot, window, [exam_dir])
    d = window.dialogs
    for eye in window.state.current_exam.eyes:  # signed: no "unsigned eyes?" question (test_gui_signoff)
        window.state.sign(eye, window.state.current_loaded.card, decision="confirmed", clinician="Dr Test")
    pdf = tmp_path / "out" / "report.pdf"
    pdf.parent.mkdir()
    d.export_answer = ExportRequest(pdf, deidentify=False, dicom=True)
    d.confirm_answers = [True]  # "open the PDF now?" -> yes
    window.act_export.trigger()
    wait_idle(qtbot, window)
    assert not d.errors, d.errors
    assert pdf.read_bytes()[:4] == b"%PDF"
    assert pdf.with_suffix(".dcm").is_file()
    assert d.opened == [pdf]
    named, anonymous = d.export_defaults
    patient_id = window.state.current_exam.patient.patient_id
    assert patient_id in named.name and patient_id not in anonymous.name
    assert len(d.confirms) == 1  # nothing to overwrite: only "open?"
    stamp = pdf.stat().st_mtime_ns

    d.confirm_answers = [False]  # "replace?" -> no
    window.act_export.trigger()
    wait_idle(qtbot, window)
    assert d.confirms[-1][0] == "Replace existing file?" and str(pdf) in d.confirms[-1][1]
    assert pdf.stat().st_mtime_ns == stamp  # untouched
    assert "nothing was written" in window.status_text.text()

    time.sleep(0.01)
    d.confirm_answers = [True, False]  # replace -> yes, open -> no
    window.act_export.trigger()
    wait_idle(qtbot, window)
    assert pdf.stat().st_mtime_ns != stamp
    assert pdf.read_bytes()[:4] == b"%PDF"
    assert d.opened == [pdf]
    assert not [p for p in pdf.parent.iterdir() if p.suffix not in (".pdf", ".dcm")]  # no temp files


def test_corrupt_file_shows_error_and_app_keeps_working(qtbot, window, exam_dir, tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 10)
    open_and_wait(qtbot, window, [bad, exam_dir / "od.dcm"])
    errors = window.dialogs.errors
    assert len(errors) == 1
    title, text, _details = errors[0]
    assert "could not be read" in title and bad.name in text and str(bad.parent) in text
    assert "Screened 1 volume (1 eye)" in window.status_text.text()
    assert len(window.state.exams) == 1  # the good file was screened
    open_and_wait(qtbot, window, [exam_dir / "os.dcm"])  # and the app keeps working
    # the other eye of the same study joins the same exam; the eye under review stays selected
    assert len(window.state.exams) == 1 and len(window.dialogs.errors) == 1
    assert [e.eye.laterality.value for e in window.state.current_exam.eyes] == ["OD", "OS"]
    assert window.state.current_eye.eye.laterality.value == "OD"


class SlowScreener:
    """Wraps the real screener; its screen() waits (polling cancel) before screening."""

    def __init__(self, inner) -> None:
        self.inner, self.card, self.started = inner, inner.card, False

    def screen(self, volume, progress=None, cancel=None):
        self.started = True
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            time.sleep(0.01)
        return self.inner.screen(volume, progress, cancel)


def test_cancel_stops_a_running_job(qtbot, settings, tiny_card_path, exam_dir):
    from core.inference import Screener

    slow: list[SlowScreener] = []

    def factory(path, threads):
        slow.append(SlowScreener(Screener(path, threads=threads)))
        return slow[-1]

    w = MainWindow(settings, RecordingDialogs(), screener_factory=factory)
    w.model_override = str(tiny_card_path)
    qtbot.addWidget(w)
    w.show()
    assert w.open_paths([exam_dir / "od.dcm"])
    assert w.cancel_button.isVisibleTo(w) and w.progress.isVisibleTo(w)
    assert not w.act_open_file.isEnabled()  # one job at a time
    qtbot.waitUntil(lambda: bool(slow) and slow[0].started, timeout=JOB_TIMEOUT_MS)
    ticks = []  # the GUI thread stays responsive
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    qtbot.wait(500)
    timer.stop()
    assert len(ticks) >= 10 and max(b - a for a, b in zip(ticks, ticks[1:])) < 0.25
    t0 = time.monotonic()
    qtbot.mouseClick(w.cancel_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, w)
    assert time.monotonic() - t0 < 5
    assert w.state.exams == [] and "Cancelled" in w.status_text.text()
    assert not w.cancel_button.isVisibleTo(w) and w.act_open_file.isEnabled()
    assert not w.dialogs.errors


class StallingScreener:
    """Wraps the real screener: screens the first ``n_fast`` volumes at once, then waits for Cancel."""

    def __init__(self, inner, n_fast: int = 1) -> None:
        self.inner, self.card, self.n_fast, self.calls = inner, inner.card, n_fast, 0

    def screen(self, volume, progress=None, cancel=None):
        self.calls += 1
        if self.calls > self.n_fast:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if cancel is not None and cancel():
                    raise Cancelled("cancelled")
                time.sleep(0.01)
        return self.inner.screen(volume, progress, cancel)


def test_results_appear_per_volume_and_cancel_keeps_them(qtbot, settings, tiny_card_path, exam_dir):
    from core.inference import Screener

    stalling: list[StallingScreener] = []

    def factory(path, threads):
        stalling.append(StallingScreener(Screener(path, threads=threads)))
        return stalling[-1]

    w = MainWindow(settings, RecordingDialogs(), screener_factory=factory)
    w.model_override = str(tiny_card_path)
    qtbot.addWidget(w)
    w.show()
    assert w.open_paths([exam_dir])  # two volumes: the first is screened, the second stalls
    # the first eye is listed (and selected) while the batch is still running
    qtbot.waitUntil(lambda: len(w.browser.eye_items()) == 1, timeout=JOB_TIMEOUT_MS)
    assert w.job is not None
    qtbot.waitUntil(lambda: stalling[0].calls == 2, timeout=JOB_TIMEOUT_MS)  # the second volume is under way
    first = w.state.current_eye
    assert first is not None and first.eye.laterality.value == "OD"
    assert w.summary.badge.text() == first.headline
    qtbot.mouseClick(w.cancel_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, w)
    # Cancel keeps what was done: the screened eye stays listed and selected
    assert [w.browser.eye_of(i) for i in w.browser.eye_items()] == [first]
    assert w.state.current_eye is first
    assert "kept the 1 eye" in w.status_text.text()
    assert not w.dialogs.errors


def test_a_file_opened_twice_is_listed_once(qtbot, window, exam_dir):
    open_and_wait(qtbot, window, [exam_dir / "od.dcm", exam_dir / "od.dcm"])  # twice in one batch
    assert len(window.browser.eye_items()) == 1
    od = window.state.current_eye
    open_and_wait(qtbot, window, [exam_dir / "od.dcm"])  # again, later
    assert len(window.browser.eye_items()) == 1 and window.state.current_eye is od
    assert "already open" in window.status_text.text()
    open_and_wait(qtbot, window, [exam_dir])  # the folder: only the eye not yet open is new
    assert [i.text(COL_EYE) for i in window.browser.eye_items()] == ["OD", "OS"]
    assert "1 volume already open" in window.status_text.text()
    assert len(window.state.exams) == 1 and not window.dialogs.errors
    # a closed exam can be opened again
    window.close_exam()
    open_and_wait(qtbot, window, [exam_dir / "od.dcm"])
    assert len(window.browser.eye_items()) == 1


def test_the_eye_under_review_stays_selected_when_a_batch_ends(qtbot, window, exam_dir, make_volume, tmp_path):
    open_and_wait(qtbot, window, [exam_dir / "os.dcm"])
    os_eye = window.state.current_eye
    window.state.set_slice(2)
    other = tmp_path / "other.dcm"
    write_opt(make_volume(n=6, laterality="OD", patient_id="P777", study_uid="1.2.3.777", seed=9), other)
    # the other eye of the same study sorts before it (OD, OS); another patient comes too
    open_and_wait(qtbot, window, [exam_dir / "od.dcm", other])
    assert window.state.current_eye is os_eye and window.state.slice_index == 2
    assert [e.eye.laterality.value for e in window.state.current_exam.eyes] == ["OD", "OS"]
    assert window.browser.eye_of(window.browser.tree.currentItem()) is os_eye
    assert window.summary.badge.text() == os_eye.headline
    assert len(window.browser.eye_items()) == 3 and len(window.browser.patient_items()) == 2


def test_missing_model_card_gives_a_dialog_not_a_crash(qtbot, window, exam_dir, tmp_path):
    window.model_override = str(tmp_path / "nowhere.json")
    open_and_wait(qtbot, window, [exam_dir / "od.dcm"])
    title, text, _ = window.dialogs.errors[-1]
    assert title == "Cannot load the model" and "nowhere.json" in text
    assert window.state.exams == []


def test_excepthook_shows_a_dialog(qtbot, window):
    old = sys.excepthook
    try:
        hook = install_excepthook(window.dialogs, lambda: window)
        try:
            raise RuntimeError("boom in a slot")
        except RuntimeError:
            hook(*sys.exc_info())
    finally:
        sys.excepthook = old
    title, text, details = window.dialogs.errors[-1]
    assert title == "Unexpected error" and "boom in a slot" in text and "Traceback" in details


def test_drop_opens_files(qtbot, window, exam_dir):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(exam_dir / "os.dcm"))])
    event = QDropEvent(
        QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.job is not None or bool(window.state.exams), timeout=5000)
    wait_idle(qtbot, window)
    assert window.state.current_eye.eye.laterality.value == "OS"


def test_settings_dialog_persists_and_window_state_restores(qtbot, settings, tiny_card_path, tmp_path):
    d = RecordingDialogs()
    w = MainWindow(settings, d)
    qtbot.addWidget(w)
    d.settings_answer = SettingsValues(str(tiny_card_path), "Eye Clinic Nord", "", str(tmp_path), 2)
    w.act_settings.trigger()
    assert not d.errors
    again = AppSettings(QSettings(settings.q.fileName(), QSettings.Format.IniFormat))
    assert (again.model_card, again.institution, again.export_dir, again.threads) == (
        str(tiny_card_path),
        "Eye Clinic Nord",
        str(tmp_path),
        2,
    )
    d.settings_answer = SettingsValues(str(tmp_path / "missing.json"), "X", "", "", 0)
    w.act_settings.trigger()
    assert d.errors and "missing.json" in d.errors[-1][1]  # a bad card is refused ...
    assert settings.institution == "Eye Clinic Nord"  # ... and nothing changes
    d.settings_answer = SettingsValues("", "X", str(tmp_path / "nologo.png"), "", 0)
    w.act_settings.trigger()
    assert "nologo.png" in d.errors[-1][1] and settings.institution == "Eye Clinic Nord"
    w.act_about.trigger()
    assert d.about_cards[-1].name == "tiny"

    w.show()
    w.resize(w.minimumWidth(), 560)  # the offscreen screen is 800 x 600: restore clamps the width
    w.summary_dock.hide()
    size = (w.width(), w.height())
    w.close()
    w2 = MainWindow(AppSettings(QSettings(settings.q.fileName(), QSettings.Format.IniFormat)), RecordingDialogs())
    qtbot.addWidget(w2)
    assert w2.height() == size[1] == 560
    assert w2.summary_dock.isHidden()


def test_gui_subcommand_is_registered():
    from app.cli import build_parser

    args = build_parser().parse_args(["gui", "--demo", "a.dcm", "b"])
    assert args.demo and args.paths == ["a.dcm", "b"]
    from app.cmd_gui import run

    assert args.func is run


def test_every_menu_shortcut_is_in_the_shortcuts_list(window):
    """Help > Keyboard shortcuts lists every key a window action has (a new action must add its line)."""
    from PySide6.QtGui import QKeySequence

    from app.dialogs import SHORTCUTS

    listed = {k.strip() for keys, _ in SHORTCUTS for part in keys.split(", ") for k in part.split(" / ")}
    actions = {
        a.text(): {k.toString(QKeySequence.SequenceFormat.PortableText) for k in a.shortcuts()}
        for a in window.findChildren(QAction)
        if a.shortcuts()
    }
    keys = set().union(*actions.values())
    assert "Ctrl+Shift+V" in keys and len(actions) > 10
    missing = sorted(name for name, ks in actions.items() if not ks & listed)  # one of its keys (platform)
    assert missing == []
