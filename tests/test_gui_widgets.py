"""GUI widgets on hand-built results (no model): badges, summary, strip chart, dialogs, settings."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QLabel  # noqa: E402

from app.dialogs import (  # noqa: E402
    AboutDialog,
    Dialogs,
    ExportDialog,
    SettingsDialog,
    SettingsValues,
)
from app.settings import MAX_RECENT, AppSettings  # noqa: E402
from app.widgets.bscan_viewer import ViewerPanel, nice_length  # noqa: E402
from app.widgets.state import ViewerState  # noqa: E402
from app.widgets.strip_chart import StripChart  # noqa: E402
from app.widgets.style import URGENCY_COLOURS  # noqa: E402
from app.widgets.summary_panel import SummaryPanel  # noqa: E402
from app.widgets.worklist import COL_DATE, COL_DECISION, COL_EYE, COL_ID, COL_PATIENT, COL_REVIEW, FLAG, Worklist  # noqa: E402
from core.aggregate import decide  # noqa: E402
from core.modelcard import DEMO_WARNING, ModelCard  # noqa: E402
from core.results import Urgency  # noqa: E402
from core.screening import group_exams  # noqa: E402
from tests.test_gui_state import CLASSES, fake_result  # noqa: E402


@pytest.fixture
def state(make_volume) -> ViewerState:
    """Patient A: OD urgent CNV, OS rescan (most B-scans ungradable); patient B: OD borderline (review)."""
    od = decide(fake_result(make_volume(n=12, laterality="OD")))
    rescan = decide(fake_result(make_volume(n=12, laterality="OS"), ungradable=range(10)))
    vr = fake_result(make_volume(n=12, laterality="OD", patient_id="P002", study_uid="1.2.3"), cnv_slices=())
    vr.probs[3:6] = [0.42, 0.03, 0.55]  # cnv eye score near its 0.5 threshold
    review = decide(vr)
    s = ViewerState()
    card = ModelCard(name="fake", arch="test_efficientnet", classes=list(CLASSES), input_size=(64, 64), demo=True)
    s.add_exams(group_exams([od, rescan, review]), card)
    return s


def test_worklist_badges_have_text_and_colour(qtbot, state):
    wl = Worklist(state)
    qtbot.addWidget(wl)
    items = wl.eye_items()
    assert [i.text(COL_DECISION) for i in items] == ["URGENT \u00b7 CNV", "RESCAN", "URGENT \u00b7 CNV"]
    assert [i.text(COL_EYE) for i in items] == ["OD", "OS", "OD"]
    assert [i.text(COL_REVIEW) for i in items] == ["", "", FLAG]
    assert items[0].background(COL_DECISION).color().name() == URGENCY_COLOURS[Urgency.URGENT][0]
    assert items[1].background(COL_DECISION).color().name() == URGENCY_COLOURS[Urgency.RESCAN][0]
    patients = wl.patient_items()
    assert [(p.text(COL_PATIENT), p.text(COL_ID)) for p in patients] == [
        ("Test, Patient", "P001"),
        ("Test, Patient", "P002"),
    ]
    assert patients[0].text(COL_DATE) == "2026-01-31" and items[0].text(COL_DATE) == "2026-01-31"
    wl.select_item(items[2])
    assert (state.exam_index, state.eye_index) == (1, 0)
    state.select(0, 1)  # the state drives the list too
    assert wl.tree.currentItem() is items[1]
    assert wl.counts.text() == "2 patients \u00b7 2 exams \u00b7 3 eyes"


def test_a_narrow_worklist_hides_id_then_date_and_keeps_the_decision_in_view(qtbot, state):
    """At 200 % on 1920 x 1080 the worklist dock is ~250 px wide: the ID and date columns give way
    (their text stays in the tooltips), never the eye, decision, review flag or sign-off columns."""
    from app.widgets.worklist import COL_ID, COL_SIGNED

    wl = Worklist(state)
    qtbot.addWidget(wl)
    wl.show()
    header, tree = wl.tree.header(), wl.tree

    def fit(width: int) -> list[int]:
        wl.resize(width, 300)
        qtbot.wait(10)
        shown = [c for c in range(tree.columnCount()) if not tree.isColumnHidden(c)]
        used = sum(header.sectionSize(c) for c in shown)
        return shown, used, tree.viewport().width()

    shown, used, room = fit(700)
    assert shown == list(range(tree.columnCount()))  # wide: every column
    shown, used, room = fit(360)
    assert COL_ID not in shown and COL_DATE in shown and used <= room
    shown, used, room = fit(252)
    assert shown == [COL_PATIENT, COL_EYE, COL_DECISION, COL_REVIEW, COL_SIGNED] and used <= room
    shown, used, room = fit(200)  # narrower still: the badge is elided rather than the sign-off cut off
    assert COL_SIGNED in shown and used <= room and header.sectionSize(COL_DECISION) >= 48
    assert "P001" in wl.eye_items()[0].toolTip(COL_DECISION) or "P001" in wl.patient_items()[0].toolTip(COL_PATIENT)
    shown, used, room = fit(700)
    assert shown == list(range(tree.columnCount()))  # and back when there is room


def test_worklist_sorts_by_urgency_and_date_and_filters(qtbot, make_volume):
    def eye(pid, lat, date, **kw):
        vol = make_volume(n=12, laterality=lat, patient_id=pid, study_uid=f"{pid}-{date}")
        vol.study = dataclasses.replace(vol.study, study_date=date)
        vol.patient = dataclasses.replace(vol.patient, name=f"{pid}^Pat")
        return decide(fake_result(vol, **kw))

    s = ViewerState()
    card = ModelCard(name="fake", arch="x", classes=list(CLASSES), input_size=(64, 64))
    s.add_exams(
        group_exams(
            [
                eye("ALPHA", "OD", "20250101", cnv_slices=()),
                eye("BRAVO", "OS", "20260301"),
                eye("CHARLIE", "OD", "20240101", ungradable=range(10)),
            ]
        ),
        card,
    )
    wl = Worklist(s)
    qtbot.addWidget(wl)
    ids = lambda: [p.text(COL_ID) for p in wl.patient_items()]  # noqa: E731
    assert ids() == ["ALPHA", "BRAVO", "CHARLIE"]  # opening order until a header is clicked
    wl.tree.sortByColumn(COL_DECISION, Qt.SortOrder.AscendingOrder)
    assert ids() == ["BRAVO", "CHARLIE", "ALPHA"]  # urgent, rescan, no referral (core.tiers order)
    wl.tree.sortByColumn(COL_DATE, Qt.SortOrder.DescendingOrder)
    assert ids() == ["BRAVO", "ALPHA", "CHARLIE"]  # newest exam first
    wl.tree.sortByColumn(COL_PATIENT, Qt.SortOrder.DescendingOrder)
    assert ids() == ["CHARLIE", "BRAVO", "ALPHA"]
    wl.filter_edit.setText("bra")
    assert [i.text(COL_EYE) for i in wl.eye_items()] == ["OS"] and wl.counts.text().endswith("(1 shown)")
    wl.filter_edit.setText("2024")  # an exam date
    assert [wl.eye_of(i).eye.patient_id for i in wl.eye_items()] == ["CHARLIE"]
    wl.filter_edit.setText("")
    wl.decision_filter.setCurrentText("Referrals")
    assert [wl.eye_of(i).eye.patient_id for i in wl.eye_items()] == ["BRAVO"]
    wl.decision_filter.setCurrentText("Rescan")
    assert [wl.eye_of(i).eye.patient_id for i in wl.eye_items()] == ["CHARLIE"]
    assert [p.isHidden() for p in wl.patient_items()] == [False, True, True]
    wl.decision_filter.setCurrentText("All eyes")
    assert len(wl.eye_items()) == 3


def test_one_patient_with_two_studies_is_one_patient_with_two_exams(qtbot, make_volume):
    first = make_volume(n=12, laterality="OD", study_uid="1.2.3.1")
    second = make_volume(n=12, laterality="OD", study_uid="1.2.3.2", seed=5)
    second.study = dataclasses.replace(second.study, study_date="20260630")
    s = ViewerState()
    card = ModelCard(name="fake", arch="x", classes=list(CLASSES), input_size=(64, 64))
    s.add_eye(decide(fake_result(first)), card)
    s.add_eye(decide(fake_result(second, cnv_slices=())), card)
    wl = Worklist(s)
    qtbot.addWidget(wl)
    assert len(s.exams) == 2  # two studies: two exams (two reports) ...
    (patient,) = wl.patient_items()  # ... of one patient
    assert patient.text(COL_ID) == "P001" and patient.text(COL_DATE) == "2 exams"
    assert [i.text(COL_DATE) for i in wl.eye_items()] == ["2026-01-31", "2026-06-30"]
    assert patient.text(COL_DECISION) == "URGENT \u00b7 CNV"  # the patient's most urgent eye
    assert wl.counts.text() == "1 patient \u00b7 2 exams \u00b7 2 eyes"
    # a third volume of the first study joins its exam instead of making a third one
    s.add_eye(decide(fake_result(make_volume(n=12, laterality="OS", study_uid="1.2.3.1", seed=7))), card)
    assert len(s.exams) == 2 and [e.eye.laterality.value for e in s.exams[0].exam.eyes] == ["OD", "OS"]
    assert wl.counts.text() == "1 patient \u00b7 2 exams \u00b7 3 eyes"
    # patients without an id are never merged: each exam is its own patient row
    anon = [make_volume(n=12, patient_id="", study_uid=f"9.{i}", seed=i) for i in (1, 2)]
    for v in anon:
        s.add_eye(decide(fake_result(v)), card)
    assert len(wl.patient_items()) == 3


def test_summary_shows_decision_review_rescan_and_demo(qtbot, state):
    panel = SummaryPanel(state)
    qtbot.addWidget(panel)
    assert panel.badge.text() == "URGENT REFERRAL: CNV"
    assert panel.demo_banner.text() == DEMO_WARNING.upper() and not panel.demo_banner.isHidden()
    assert len(panel.evidence_buttons) == len(state.current_eye.evidence) > 0
    assert "Gradable B-scans:</b> 11 of 12" in panel.gradable.text()
    assert "Model: fake v1" == panel.model.text()
    state.select(0, 1)
    assert panel.badge.text().startswith("RESCAN") and panel.evidence_buttons == []
    state.select(1, 0)
    assert "review advised" in panel.badge.text() and "Review advised" in panel.urgency.text()
    state.clear()
    assert panel.eye_title.text() == "No eye selected" and panel.demo_banner.isHidden()


def test_summary_of_a_real_data_model_says_research_not_demo(qtbot, make_volume):
    from core.modelcard import DEMO_WARNING, RESEARCH_WARNING

    s = ViewerState()
    vr = fake_result(make_volume(n=8))
    vr.demo_model = False
    card = ModelCard(
        name="real",
        arch="x",
        classes=list(CLASSES),
        input_size=(64, 64),
        training_data={"short": "OCT2017 (Kermany et al. 2018, CC BY 4.0)"},
    )
    s.add_exams(group_exams([decide(vr)]), card)
    panel = SummaryPanel(s)
    qtbot.addWidget(panel)
    s.select(0, 0)
    assert not panel.demo_banner.isHidden()  # every model: "not for clinical use"
    assert panel.demo_banner.text() == RESEARCH_WARNING.upper() != DEMO_WARNING.upper()
    assert "OCT2017" in panel.demo_banner.toolTip()


def test_strip_chart_maps_clicks_to_bscans(qtbot, state):
    chart = StripChart(state)
    qtbot.addWidget(chart)
    chart.resize(640, 160)
    r = chart.plot_rect()
    assert chart.index_at(r.left() + 1) == 0 and chart.index_at(r.right() - 1) == 11
    for i in range(12):
        assert chart.index_at(chart.x_of(i)) == i
    assert chart.index_at(-50) == 0 and chart.index_at(10_000) == 11
    image = chart.grab().toImage()  # painting works and draws the curves
    assert image.width() == 640
    pixels = np.array([[image.pixelColor(x, y).red() for x in range(0, 640, 8)] for y in range(0, 160, 4)])
    assert (pixels < 250).mean() > 0.05


def test_viewer_panel_controls_follow_state(qtbot, state):
    panel = ViewerPanel(state)
    qtbot.addWidget(panel)
    state.set_slice(7)
    assert panel.slider.value() == 8 and panel.position.text().startswith("B-scan 8 of 12")
    assert [panel.cam_class.itemText(i) for i in range(4)][1:] == CLASSES
    panel.cycle_class()
    assert state.cam_class == "normal"
    panel.contrast.setValue(50)
    assert state.window == pytest.approx(0.5)
    panel.brightness.setValue(80)
    assert state.level == pytest.approx(0.2)
    state.reset_display()
    assert panel.contrast.value() == 100 and panel.brightness.value() == 50


def _pixels(image) -> np.ndarray:
    """A QImage as an RGB uint8 array [h, w, 3]."""
    from PySide6.QtGui import QImage

    img = image.convertToFormat(QImage.Format.Format_RGB888)
    h, w = img.height(), img.width()
    return np.frombuffer(img.constBits(), np.uint8).reshape(h, img.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).copy()


def test_heatmap_colour_bar_and_side_by_side_in_the_viewer(qtbot, state):
    panel = ViewerPanel(state)
    qtbot.addWidget(panel)
    panel.resize(700, 520)
    panel.show()
    qtbot.waitExposed(panel)
    view, vr = panel.view, state.volume_result
    state.set_slice(5)
    state.set_cam_class("cnv")
    vr.probs[5] = [1.0, 0.0, 0.0]  # p(cnv) = 0 here: the overlay paints nothing, only the legend appears
    off = _pixels(view.viewport().grab().toImage())
    panel.overlay.setChecked(True)
    assert state.heatmap_text() == "cnv evidence \u00b7 p 0.00: not painted"
    on = _pixels(view.viewport().grab().toImage())
    rows, cols = np.nonzero(np.abs(on.astype(int) - off.astype(int)).sum(axis=2) > 30)
    h, w = off.shape[:2]
    assert rows.size and rows.min() > h * 0.6 and cols.min() > w * 0.5  # only the lower right corner changed
    legend = on[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(int)
    saturation = legend.max(axis=2) - legend.min(axis=2)
    assert (saturation > 120).mean() > 0.1  # the colour ramp, from blue (weak) to red (strong)
    vr.probs[5] = [0.05, 0.05, 0.9]
    state.set_slice(4)
    state.set_slice(5)
    assert state.heatmap_text() == "cnv evidence \u00b7 p 0.90: 90% strength"
    panel.side.setChecked(True)
    assert state.side_by_side and view.last_rgb.shape[1] > 2 * state.volume.bscans.shape[2]
    state.set_overlay(False)
    assert not panel.side.isChecked() and not panel.overlay.isChecked()


@pytest.mark.parametrize("value, expected", [(1.7, 1.0), (0.26, 0.2), (0.6, 0.5), (9.9, 5.0), (0.012, 0.01)])
def test_scale_bar_lengths(value, expected):
    assert nice_length(value) == pytest.approx(expected)


def test_export_dialog_swaps_to_anonymous_name_and_appends_pdf(qtbot, tmp_path):
    named, anonymous = tmp_path / "P001_20260131_oct-report.pdf", tmp_path / "exam-001_oct-report.pdf"
    dlg = ExportDialog(named, False, True, None, anonymous)
    qtbot.addWidget(dlg)
    assert dlg.path.text() == str(named)
    dlg.deid.setChecked(True)
    assert dlg.path.text() == str(anonymous)
    req = dlg.request()
    assert req.pdf_path == anonymous and req.deidentify and req.dicom
    assert req.targets == [anonymous, anonymous.with_suffix(".dcm"), anonymous.with_name(f"{anonymous.stem}_sr.dcm")]
    dlg.path.setText(str(tmp_path / "custom"))
    dlg.deid.setChecked(False)  # a typed name is kept
    assert dlg.request().pdf_path == tmp_path / "custom.pdf"


def test_settings_dialog_round_trip(qtbot):
    values = SettingsValues("/m/card.json", "Clinic", "/l.png", "/exports", 3)
    dlg = SettingsDialog(values)
    qtbot.addWidget(dlg)
    assert dlg.values() == values
    dlg.threads.setValue(0)
    assert dlg.threads.text() == "automatic" and dlg.values().threads == 0


def test_settings_recent_list(tmp_path):
    s = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert s.recent == [] and s.threads == 0 and not s.deidentify
    for i in range(MAX_RECENT + 3):
        s.add_recent(tmp_path / f"f{i}")
    s.add_recent(tmp_path / "f5")
    recent = s.recent
    assert len(recent) == MAX_RECENT and recent[0] == str((tmp_path / "f5").resolve())
    assert recent.count(str((tmp_path / "f5").resolve())) == 1
    s.deidentify = True
    s.sync()
    again = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert again.deidentify and again.recent == recent
    s.clear_recent()
    assert s.recent == []
    assert Path(recent[-1]).name == "f3"  # f0..f2 fell off; moving f5 up drops nothing


def test_error_box_is_plain_text_with_details(qtbot):
    box = Dialogs.error_box(None, "Some files could not be read", "a<b>.dcm: damaged", "full list")
    qtbot.addWidget(box)
    assert box.textFormat() == Qt.TextFormat.PlainText and box.text() == "a<b>.dcm: damaged"
    assert box.detailedText() == "full list" and box.windowTitle() == "Some files could not be read"


def test_about_dialog_shows_card_and_demo_banner(qtbot):
    card = ModelCard(
        name="octscreen-demo", arch="efficientnet_b2", classes=list(CLASSES), input_size=(224, 224), demo=True
    )
    dlg = AboutDialog(card)
    qtbot.addWidget(dlg)
    texts = [w.text() for w in dlg.findChildren(QLabel)]
    assert any("octscreen-demo" in t and "efficientnet_b2" in t for t in texts)
    assert DEMO_WARNING.upper() in texts
    none = AboutDialog(None, "model card not found")
    qtbot.addWidget(none)
    assert any("model card not found" in w.text() for w in none.findChildren(QLabel))


def test_worklist_names_several_volumes_of_one_eye(qtbot, make_volume, tmp_path):
    vols = [make_volume(n=6, laterality="unknown", source=tmp_path / f"CNV-1-{i}.jpeg") for i in (1, 2)]
    s = ViewerState()
    s.add_exams(
        group_exams([decide(fake_result(v, cnv_slices=(), ungradable=())) for v in vols]),
        ModelCard(name="m", arch="x", classes=list(CLASSES), input_size=(64, 64)),
    )
    wl = Worklist(s)
    qtbot.addWidget(wl)
    assert [i.text(COL_PATIENT) for i in wl.eye_items()] == [
        "6 B-scans \u00b7 CNV-1-1.jpeg",
        "6 B-scans \u00b7 CNV-1-2.jpeg",
    ]
    assert [i.text(COL_EYE) for i in wl.eye_items()] == ["?", "?"]


def test_gui_command_names_the_missing_x11_library(monkeypatch):
    import ctypes.util

    import app.cmd_gui as cmd_gui
    from app.cmd_gui import missing_system_library

    monkeypatch.setattr(cmd_gui, "_unresolved_libraries", lambda files: [])
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert "libxcb-cursor0" in missing_system_library(platform="xcb", system="linux")
    assert missing_system_library(platform="offscreen", system="linux") == ""
    assert missing_system_library(platform="", system="win32") == ""
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libxcb-cursor.so.0")
    assert missing_system_library(platform="xcb", system="linux") == ""
    # what ldd cannot resolve for the plugin is named too, each with its Debian package
    monkeypatch.setattr(
        cmd_gui,
        "_unresolved_libraries",
        lambda files: ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxkbcommon-x11.so.0"],
    )
    msg = missing_system_library(platform="xcb", system="linux")
    assert "libxcb-icccm.so.4" in msg and "libxcb-keysyms.so.1" in msg
    assert "apt install libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0" in msg


def test_ldd_output_is_parsed_for_missing_libraries(monkeypatch, tmp_path):
    import subprocess

    import app.cmd_gui as cmd_gui

    out = (
        "\tlinux-vdso.so.1 (0x00007ffd)\n"
        "\tlibxcb-icccm.so.4 => not found\n"
        "\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f)\n"
        "\tlibxcb-keysyms.so.1 => not found\n"
    )
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=out))
    assert cmd_gui._unresolved_libraries(["a.so", "b.so"]) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    assert cmd_gui._xcb_plugin_files()  # the plugin PySide6 ships is found


def test_many_qt_calls_do_not_exhaust_the_references_to_none():
    """PySide6 6.12 on Python 3.11 takes a reference from None on every call that returns None; the app
    guards against it (app.qtguard) before any widget exists, or it dies after ~10,000 calls."""
    import subprocess
    import sys

    code = (
        "import app.widgets\n"
        "from PySide6.QtWidgets import QApplication, QLabel\n"
        "a = QApplication([])\n"
        "label = QLabel()\n"
        "for _ in range(100_000):\n"
        "    label.setText('x')\n"
        "print('alive')\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=root)
    assert done.returncode == 0 and "alive" in done.stdout, done.stderr[-2000:]


def test_banner_names_the_patient_with_age_on_the_exam_date(qtbot, make_volume):
    vol = make_volume(n=12, laterality="OS", patient_id="HN-0042")
    vol.patient = dataclasses.replace(vol.patient, name="Doe^Jane", birth_date="19500302")
    s = ViewerState()
    s.add_eye(decide(fake_result(vol)), ModelCard(name="m", arch="x", classes=list(CLASSES), input_size=(64, 64)))
    panel = SummaryPanel(s)
    qtbot.addWidget(panel)
    # 2026-01-31 is before the 76th birthday: 75 on the exam date (76 by the calendar year alone)
    text = panel.banner.text().replace("\u00a0", " ")  # no-break spaces keep 'born 1950-03-02 (75 y)' on one line
    assert text == "Doe, Jane\nID HN-0042 \u00b7 born 1950-03-02 (75 y)\nExam 2026-01-31\nLeft eye (OS)"
    assert not panel.banner.isHidden() and panel.banner.eye_choice.isHidden()  # the file says OS: no control
    from core.volume import age_years

    assert age_years("19500302", "20260302") == 76 and age_years("19480229", "20260228") == 77
    assert age_years("", "20260131") is None and age_years("19500302", "") is None
    # what is missing is said, not left out
    bare = make_volume(n=12, patient_id="")
    bare.patient = dataclasses.replace(bare.patient, name="")
    bare.study = dataclasses.replace(bare.study, study_date="")
    s.add_eye(decide(fake_result(bare)), s.current_loaded.card)
    s.select(1, 0)
    assert panel.banner.text().splitlines()[:3] == [
        "Name not recorded",
        "no patient ID \u00b7 birth date not recorded",
        "Exam date not recorded",
    ]
    s.clear()
    assert panel.banner.isHidden()


def test_an_unknown_eye_can_be_set_and_the_exports_say_so(qtbot, make_volume, tmp_path):
    from core.report import ReportOptions, write_report
    from tests.test_report import pdftext

    od = decide(fake_result(make_volume(n=12, laterality="OD", seed=1)))
    unknown = decide(fake_result(make_volume(n=12, laterality="unknown", seed=2)))
    card = ModelCard(name="m", arch="x", classes=list(CLASSES), input_size=(64, 64))
    s = ViewerState()
    s.add_exams(group_exams([od, unknown]), card)
    s.select_eye(unknown)
    panel, wl = SummaryPanel(s), Worklist(s)
    qtbot.addWidget(panel)
    qtbot.addWidget(wl)
    banner = panel.banner
    assert banner.eye_label.text() == "Eye unknown" and not banner.eye_choice.isHidden()
    assert [i.text(COL_EYE) for i in wl.eye_items()] == ["OD", "?"]
    banner.eye_choice.setCurrentIndex(banner.eye_choice.findData("OS"))
    banner.eye_choice.activated.emit(banner.eye_choice.currentIndex())  # as a click on "Left (OS)" does
    assert unknown.eye.laterality.value == "OS" and unknown.volume_result.volume.laterality.value == "OS"
    assert unknown.volume_result.volume.extra["laterality_set_by_user"] is True
    assert s.current_eye is unknown and banner.eye_label.text() == "Left eye (OS, set by user)"
    assert not banner.eye_choice.isHidden()  # a slip can be corrected
    assert [i.text(COL_EYE) for i in wl.eye_items()] == ["OD", "OS*"]
    with pytest.raises(ValueError, match="only an unknown eye"):
        od.set_laterality("OS")  # the file said OD: not the user's to change
    # the export (the PDF report) says so
    exam = s.current_exam
    pdf = write_report(tmp_path / "r.pdf", exam, card, ReportOptions())
    text = " ".join(pdftext(pdf).split())
    assert "Left eye (OS, set by user)" in text and "Right eye (OD) " in text


def test_export_dialog_asks_who_referred_and_who_scanned(qtbot, tmp_path):
    dlg = ExportDialog(tmp_path / "r.pdf", False, False, None, None, operator="J. Okafor")
    qtbot.addWidget(dlg)
    assert dlg.operator.text() == "J. Okafor" and dlg.referring.text() == ""  # the operator is remembered
    dlg.referring.setText("  Dr T. Reyes (GP) ")
    req = dlg.request()
    assert (req.referring, req.operator) == ("Dr T. Reyes (GP)", "J. Okafor")
