"""The clinician's sign-off of the current eye (in the eye summary): confirm or change the model's
decision, a free-text finding and the clinician's name, stored in the append-only audit trail
(``core.audit`` through :meth:`ViewerState.sign`). Signing again later appends a new record; the
newest counts and the panel says what was signed before."""

from __future__ import annotations

import logging
from collections.abc import Callable
from html import escape

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.widgets.state import ViewerState
from core.audit import SignOff, eye_record_key
from core.errors import InputError
from core.results import EyeResult
from core.tiers import DEFAULT_TIERS, TIER_ORDER

__all__ = ["SignOffBox", "decision_choices", "signoff_text"]

log = logging.getLogger(__name__)

FINDING_MAX = 2000  # characters kept of the free-text finding


def decision_choices(eye: EyeResult) -> list[tuple[str, str]]:
    """The decision box's entries, (text, decision): confirm the model's tier first, then each other
    tier in triage order, in the card's wording."""
    tiers = eye.tiers or DEFAULT_TIERS
    out = [(f"Confirm: {eye.tier.name}", "confirmed")]
    out += [(f"Change to: {tiers[t].name}", t) for t in TIER_ORDER if t != eye.urgency.value]
    return out


def signoff_text(so: SignOff, eye: EyeResult) -> str:
    """One line on a sign-off: who, when, and confirmed or changed (rich text)."""
    tiers = eye.tiers or DEFAULT_TIERS
    if so.changed:
        what = (
            f"changed the decision from <b>{escape(tiers[so.model_tier].name)}</b> to "
            f"<b>{escape(tiers[so.final_tier].name)}</b>"
        )
    else:
        what = f"confirmed <b>{escape(tiers[so.final_tier].name)}</b>"
    text = f"\u2714 Signed by <b>{escape(so.clinician)}</b>, {escape(so.signed_text())}: {what}"
    if so.finding:
        text += f"<br>Finding: {escape(so.finding)}"
    return text


class SignOffBox(QGroupBox):
    """Sign-off of the current eye. ``on_signed(signoff)`` is called after each stored sign-off (the
    window remembers the clinician's name); ``clinician`` pre-fills the name box."""

    def __init__(
        self,
        state: ViewerState,
        clinician: str = "",
        on_signed: Callable[[SignOff], None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__("Clinician sign-off", parent)
        self.state = state
        self.on_signed = on_signed
        self.setToolTip(
            "Confirm or change the model's decision for this eye; stored with your name and the time in "
            "the audit trail (never overwritten: signing again adds a record) and printed in the report"
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.status.setAccessibleName("Sign-off status")
        self.decision = QComboBox()
        self.decision.setAccessibleName("Clinician's decision")
        self.finding = QPlainTextEdit()
        self.finding.setPlaceholderText("Finding (optional), e.g. subretinal fluid at the fovea")
        self.finding.setAccessibleName("Finding")
        self.finding.setTabChangesFocus(True)
        self.finding.setFixedHeight(self.fontMetrics().lineSpacing() * 3 + 12)
        self.name = QLineEdit(clinician)
        self.name.setPlaceholderText("Your name")
        self.name.setAccessibleName("Clinician's name")
        self.name.textChanged.connect(lambda _t: self._update_button())
        self.sign_button = QPushButton("Sign")
        self.sign_button.setObjectName("signButton")
        self.sign_button.setAccessibleName("Sign this eye")
        self.sign_button.clicked.connect(self.sign)
        self.message = QLabel("")
        self.message.setObjectName("muted")
        self.message.setWordWrap(True)

        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)  # labels above: full-width fields
        form.addRow("Decision", self.decision)
        form.addRow("Finding", self.finding)
        form.addRow("Clinician", self.name)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 16, 10, 10)
        lay.setSpacing(6)
        lay.addWidget(self.status)
        lay.addLayout(form)
        lay.addWidget(self.sign_button)
        lay.addWidget(self.message)

        state.eye_changed.connect(self.refresh)
        state.signoff_changed.connect(lambda eye: eye is state.current_eye and self.refresh())
        state.exams_changed.connect(self._exams_changed)
        self._shown: tuple = ()
        self.refresh()

    def _what(self) -> tuple:
        eye = self.state.current_eye
        return (id(eye), eye_record_key(eye)) if eye is not None else ()

    def _exams_changed(self) -> None:
        """Refreshed when another eye is current, or the current one was renamed (set laterality)."""
        if self._what() != self._shown:
            self.refresh()

    def _update_button(self) -> None:
        ok = self.state.audit is not None and self.state.current_eye is not None and bool(self.name.text().strip())
        self.sign_button.setEnabled(ok)

    def refresh(self) -> None:
        """Show the current eye's sign-off (or that it is not signed) and reset the form to it."""
        eye = self.state.current_eye
        self._shown = self._what()
        self.setVisible(eye is not None)
        self.message.setText("")
        if eye is None:
            return
        self.decision.clear()
        for text, value in decision_choices(eye):
            self.decision.addItem(text, value)
        self.finding.setPlainText("")
        if self.state.audit is None:
            self.status.setText(
                f"<b style='color:#b91c1c'>Sign-off unavailable:</b> {escape(self.state.audit_problem)}"
            )
            self._update_button()
            return
        so = self.state.signoff(eye)
        if so is None:
            self.status.setText("<b style='color:#b45309'>\u26a0 Not signed.</b> Confirm or change the decision.")
            self.sign_button.setText("Sign")
        else:
            self.status.setText(signoff_text(so, eye))
            self.sign_button.setText("Sign again (adds a record)")
            index = self.decision.findData(so.decision)
            self.decision.setCurrentIndex(max(index, 0))
            self.finding.setPlainText(so.finding)
        self._update_button()

    def sign(self) -> SignOff | None:
        """Store the form as the current eye's sign-off; returns it (None when nothing was stored)."""
        eye, loaded = self.state.current_eye, self.state.current_loaded
        if eye is None or loaded is None:
            return None
        name = self.name.text().strip()
        if not name:
            self.message.setText("Enter your name to sign.")
            return None
        finding = self.finding.toPlainText().strip()[:FINDING_MAX]
        try:
            so = self.state.sign(
                eye, loaded.card, decision=str(self.decision.currentData()), clinician=name, finding=finding
            )
        except (InputError, RuntimeError, ValueError) as e:
            log.error("sign-off not stored: %s", e)
            self.message.setText(f"Not signed: {e}")
            return None
        if self.on_signed is not None:
            self.on_signed(so)
        self.message.setText("Stored in the audit trail.")
        return so
