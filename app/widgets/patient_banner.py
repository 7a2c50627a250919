"""Who a decision is about: the patient and eye banner shown above every decision in the app.

Name, patient ID, birth date and age (on the exam date), exam date and the eye. An eye whose file does
not say which it is gets a small control to set it (right / left); the choice is recorded in the
volume (``EyeResult.set_laterality``) and every export says "set by user".
"""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Qt
from PySide6.QtWidgets import QComboBox, QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.widgets.state import ViewerState
from core.results import ExamResult, EyeResult
from core.volume import Laterality, age_years, display_name, format_date

__all__ = ["PatientBanner", "banner_lines", "eye_text"]

#: The laterality control's choices: (label, laterality).
EYE_CHOICES = [("Not set", Laterality.UNKNOWN), ("Right (OD)", Laterality.OD), ("Left (OS)", Laterality.OS)]


def eye_text(eye: EyeResult) -> str:
    """'Right eye (OD)', 'Right eye (OD, set by user)' or 'Eye unknown'."""
    if eye.eye.laterality is Laterality.UNKNOWN:
        return "Eye unknown"
    title = eye.eye.laterality.long_name
    return title[:-1] + ", set by user)" if eye.laterality_set_by_user else title


def banner_lines(exam: ExamResult, eye: EyeResult | None) -> tuple[str, str, str, str]:
    """The banner's lines: the name ('Doe, Jane'), ID and birth date with the age on the exam date
    ('ID 0042 · born 1950-03-02 (75 y)'), the exam date, the eye. Whatever is missing is said, never
    left out silently."""
    p, st = exam.patient, exam.study
    name = display_name(p.name) or "Name not recorded"
    ident = f"ID {p.patient_id}" if p.patient_id else "no patient ID"
    born = format_date(p.birth_date)
    age = age_years(p.birth_date, st.study_date)
    nb = "\u00a0"  # wrap between the parts, never inside 'born 1950-03-02 (75 y)'
    ident += (
        f" \u00b7 born{nb}{born}" + (f"{nb}({age}{nb}y)" if age is not None else "")
        if born
        else " \u00b7 birth date not recorded"
    )
    exam_date = format_date(st.study_date)
    when = f"Exam {exam_date}" if exam_date else "Exam date not recorded"
    return name, ident, when, eye_text(eye) if eye is not None else ""


class PatientBanner(QFrame):
    """Patient (name, ID, birth date and age, exam date) and eye of the current decision."""

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setObjectName("patientBanner")
        self.setAccessibleName("Patient and eye")
        self.who = QLabel("")
        self.who.setObjectName("bannerWho")
        self.who.setWordWrap(True)
        self.who.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.ident = QLabel("")
        self.ident.setObjectName("bannerWhen")
        self.ident.setWordWrap(True)
        self.ident.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.when = QLabel("")
        self.when.setObjectName("bannerWhen")
        self.when.setWordWrap(True)
        self.eye_label = QLabel("No eye selected")
        self.eye_label.setObjectName("bannerEye")
        self.eye_label.setWordWrap(True)
        self.eye_choice = QComboBox()
        self.eye_choice.setAccessibleName("Set the eye")
        self.eye_choice.setToolTip(
            "The file does not say which eye this is. Set it here; the report and exports say 'set by user'."
        )
        for text, lat in EYE_CHOICES:
            self.eye_choice.addItem(text, lat.value)
        self.eye_choice.activated.connect(self._eye_chosen)
        self.eye_prompt = QLabel("Set the eye:")
        self.eye_prompt.setObjectName("muted")

        set_row = QHBoxLayout()  # under the eye's name: only for an eye the file did not name
        set_row.setContentsMargins(0, 2, 0, 0)
        set_row.setSpacing(6)
        set_row.addWidget(self.eye_prompt)
        set_row.addWidget(self.eye_choice)
        set_row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 7, 10, 7)
        lay.setSpacing(2)
        lay.addWidget(self.who)
        lay.addWidget(self.ident)
        lay.addWidget(self.when)
        lay.addWidget(self.eye_label)
        lay.addLayout(set_row)

        state.eye_changed.connect(self.refresh)
        state.exams_changed.connect(self.refresh)
        self.refresh()

    def text(self) -> str:
        """The banner as plain text, one line each (tests, accessibility)."""
        return "\n".join(w.text() for w in (self.who, self.ident, self.when, self.eye_label) if w.text())

    def refresh(self) -> None:
        """Show the current exam and eye (hidden when none is selected)."""
        exam, eye = self.state.current_exam, self.state.current_eye
        self.setVisible(exam is not None)
        if exam is None:
            for w in (self.who, self.ident, self.when):
                w.setText("")
            self.eye_label.setText("No eye selected")
            return
        who, ident, when, eye_words = banner_lines(exam, eye)
        self.who.setText(who)
        self.ident.setText(ident)
        self.when.setText(when)
        self.eye_label.setText(eye_words)
        unknown = eye is not None and eye.eye.laterality is Laterality.UNKNOWN
        settable = eye is not None and (unknown or eye.laterality_set_by_user)
        self.eye_label.setProperty("unknown", unknown)
        self.eye_label.setStyleSheet("color: #b45309;" if unknown else "")
        self.eye_choice.setVisible(settable)
        self.eye_prompt.setVisible(settable)
        if settable and eye is not None:
            with QSignalBlocker(self.eye_choice):
                self.eye_choice.setCurrentIndex(max(self.eye_choice.findData(eye.eye.laterality.value), 0))

    def _eye_chosen(self, index: int) -> None:
        value = self.eye_choice.itemData(index)
        self.state.set_laterality(Laterality.parse(value))
