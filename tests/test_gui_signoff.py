"""Sign-off in the desktop app (issue 14 item 5): the clinician confirms or changes an eye's decision
in the eye summary, the audit trail keeps it (append-only), the worklist shows who is signed, an
export warns about unsigned eyes and the report prints the sign-off."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings, Qt  # noqa: E402

from app.main_window import MainWindow  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.widgets.worklist import COL_EYE, COL_SIGNED, TICK  # noqa: E402
from app.workers import ExportRequest, deidentified_signoffs  # noqa: E402
from core.audit import AuditTrail, eye_record_key  # noqa: E402
from core.volume import Laterality  # noqa: E402
from tests.conftest import run_tool  # noqa: E402
from tests.gui_helpers import RecordingDialogs, open_and_wait, wait_idle  # noqa: E402


def sign_current(qtbot, window, name: str, choice: str = "confirmed", finding: str = "") -> None:
    box = window.summary.signoff
    box.decision.setCurrentIndex(box.decision.findData(choice))
    box.finding.setPlainText(finding)
    box.name.setText(name)
    assert box.sign_button.isEnabled()
    qtbot.mouseClick(box.sign_button, Qt.MouseButton.LeftButton)


def signed_column(window) -> list[str]:
    return [i.text(COL_SIGNED) for i in window.browser.eye_items()]


def test_signing_stores_the_decision_in_the_audit_trail_and_shows_it(qtbot, window, exam_dir):
    open_and_wait(qtbot, window, [exam_dir])
    eye, card = window.state.current_eye, window.state.current_loaded.card
    box = window.summary.signoff
    assert box.isVisibleTo(window) and "Not signed" in box.status.text()
    assert signed_column(window) == ["", ""]
    box.name.setText("")
    assert not box.sign_button.isEnabled()  # no sign-off without a name

    sign_current(qtbot, window, "Dr Ada Retina", choice="soon", finding="Intraretinal cysts")
    records = AuditTrail(window.settings.audit_path).records()
    assert len(records) == 1
    so = records[0]
    assert so.key == eye_record_key(eye) and so.study_uid == eye.eye.study_uid
    assert (so.model_tier, so.model_label, so.model_sha256) == (eye.urgency.value, eye.label, card.weights_sha256)
    assert (so.decision, so.clinician, so.finding) == ("soon", "Dr Ada Retina", "Intraretinal cysts")
    assert so.changed == (eye.urgency.value != "soon")
    assert "Signed by" in box.status.text() and "Dr Ada Retina" in box.status.text()
    assert "Sign again" in box.sign_button.text()
    assert signed_column(window) == [TICK, ""]  # the OD row, not the OS one
    assert window.settings.clinician == "Dr Ada Retina"  # remembered for the next sign-off

    # the other eye: not signed; its form starts from the model's decision with the name filled in
    window.browser.select_item(window.browser.eye_items()[1])
    assert "Not signed" in box.status.text() and box.decision.currentData() == "confirmed"
    assert box.name.text() == "Dr Ada Retina"
    window.browser.decision_filter.setCurrentText("Not signed")
    assert [i.text(COL_EYE) for i in window.browser.eye_items()] == ["OS"]
    window.browser.decision_filter.setCurrentText("All eyes")


def test_signing_again_appends_and_a_restart_shows_the_newest(qtbot, window, settings, exam_dir, tiny_card_path):
    open_and_wait(qtbot, window, [exam_dir])
    sign_current(qtbot, window, "Dr A", choice="confirmed")
    sign_current(qtbot, window, "Dr B", choice="routine", finding="Drusen only")
    with AuditTrail(settings.audit_path) as trail:
        assert [s.clinician for s in trail.records()] == ["Dr A", "Dr B"]  # nothing overwritten
        assert trail.verify() == 2
    window.close()

    again = MainWindow(AppSettings(QSettings(settings.q.fileName(), QSettings.Format.IniFormat)), RecordingDialogs())
    again.model_override = str(tiny_card_path)
    qtbot.addWidget(again)
    open_and_wait(qtbot, again, [exam_dir])
    status = again.summary.signoff.status.text()
    assert "Dr B" in status and "Dr A" not in status
    assert again.summary.signoff.decision.currentData() == "routine"
    assert again.summary.signoff.finding.toPlainText() == "Drusen only"
    assert signed_column(again) == [TICK, ""]


def test_an_eye_named_after_signing_is_unsigned_again(qtbot, window, tmp_path, make_volume):
    from core.io import write_opt

    path = tmp_path / "unknown.dcm"
    write_opt(make_volume(n=8, laterality="unknown", seed=4), path)
    open_and_wait(qtbot, window, [path])
    sign_current(qtbot, window, "Dr A")
    assert signed_column(window) == [TICK]
    window.state.set_laterality(Laterality.OS)  # what was signed was "eye unknown"
    assert signed_column(window) == [""]
    assert "Not signed" in window.summary.signoff.status.text()


def test_export_warns_about_unsigned_eyes_and_prints_the_signoff(qtbot, window, exam_dir, tmp_path):
    open_and_wait(qtbot, window, [exam_dir])
    d = window.dialogs
    pdf = tmp_path / "report.pdf"
    d.export_answer = ExportRequest(pdf)
    d.confirm_answers = [False]  # "2 eyes are not signed. Export anyway?" -> no
    window.act_export.trigger()
    assert d.confirms[-1][0] == "Unsigned eyes" and "2 eyes" in d.confirms[-1][1]
    assert not pdf.exists() and "nothing was written" in window.status_text.text()

    sign_current(qtbot, window, "Dr Ada Retina", finding="Fluid at the fovea")
    d.export_answer = ExportRequest(pdf, referring="Dr Tomas Reyes (GP)", operator="J. Okafor")
    d.confirm_answers = [True, False]  # one eye still unsigned: export anyway -> yes; open -> no
    window.act_export.trigger()
    assert "1 eye" in d.confirms[-1][1] and "(OS)" in d.confirms[-1][1]
    wait_idle(qtbot, window)
    assert not d.errors, d.errors
    text = run_tool(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
    assert "Dr Ada Retina" in text and "Fluid at the fovea" in text
    assert "Dr Tomas Reyes (GP)" in text and "J. Okafor" in text  # who referred and who scanned
    assert window.settings.operator == "J. Okafor"  # remembered: the next export's dialog starts with it
    assert "NOT SIGNED" in text.upper()  # the other eye

    # sign the second eye: no warning any more
    window.browser.select_item(window.browser.eye_items()[1])
    sign_current(qtbot, window, "Dr Ada Retina")
    asked = len(d.confirms)
    d.export_answer = ExportRequest(tmp_path / "signed.pdf")
    d.confirm_answers = [False]  # open? -> no
    window.act_export.trigger()
    wait_idle(qtbot, window)
    assert [c[0] for c in d.confirms[asked:]] == ["Report written"]
    assert d.export_operator == "J. Okafor"


def test_a_deidentified_report_keeps_who_signed_but_not_the_finding(qtbot, window, exam_dir):
    from core.deid import Deidentifier

    open_and_wait(qtbot, window, [exam_dir])
    sign_current(qtbot, window, "Dr Ada Retina", finding="Mr Smith's left eye looks worse")
    exam = window.state.current_exam
    anon = Deidentifier().exam(exam)
    (so,) = deidentified_signoffs(window.state.signoffs_of(exam), exam, anon)
    assert so.key == eye_record_key(anon.eyes[0]) and so.patient_id != exam.patient.patient_id
    assert so.clinician == "Dr Ada Retina" and so.finding == ""


def test_no_audit_trail_no_signing(qtbot, settings, tiny_card_path, exam_dir, tmp_path):
    """Without a usable audit trail signing is unavailable, the box says why, the rest works."""
    broken = tmp_path / "audit.sqlite"
    broken.write_bytes(b"garbage " * 1000)
    settings.audit_path = broken
    w = MainWindow(settings, RecordingDialogs())
    w.model_override = str(tiny_card_path)
    qtbot.addWidget(w)
    open_and_wait(qtbot, w, [exam_dir])
    box = w.summary.signoff
    assert "unavailable" in box.status.text() and str(broken) in box.status.text()
    box.name.setText("Dr A")
    assert not box.sign_button.isEnabled()
    assert w.summary.badge.text() == w.state.current_eye.headline  # the rest works
    assert broken.read_bytes() == b"garbage " * 1000  # and the file is left as it was
