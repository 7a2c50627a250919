"""Eye summary (right dock): decision badge, referral urgency, eye scores, gradability, evidence
B-scans as clickable thumbnails, the reasons, the clinician's sign-off, the model's name and the
demo-model banner."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QGroupBox,
    QLabel,
    QProgressBar,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.widgets.patient_banner import PatientBanner
from app.widgets.signoff import SignOffBox
from app.widgets.state import ViewerState, thumbnail
from app.widgets.style import badge_colours, badge_text, class_colour, rgb_to_pixmap
from core.modelcard import DEMO_WARNING
from core.results import Urgency

__all__ = ["SummaryPanel"]

THUMB_WIDTH = 104  # two per row within the panel's minimum width (290 px, with its scroll bar)


class SummaryPanel(QScrollArea):
    """What the model decided for the current eye and why."""

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setMinimumWidth(290)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QWidget()
        self.setWidget(body)
        lay = QVBoxLayout(body)
        lay.setContentsMargins(10, 10, 10, 10)
        lay.setSpacing(10)

        self.banner = PatientBanner(state)  # who the decision is about, first
        lay.addWidget(self.banner)

        self.demo_banner = QLabel(DEMO_WARNING.upper())
        self.demo_banner.setObjectName("demoBanner")
        self.demo_banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.demo_banner.setWordWrap(True)
        self.demo_banner.setToolTip(
            "This model was trained on synthetic data. Its output must not be used for clinical decisions."
        )
        lay.addWidget(self.demo_banner)

        self.eye_title = self.banner.eye_label  # the eye is named in the banner

        self.badge = QLabel("")
        self.badge.setObjectName("decisionBadge")
        self.badge.setWordWrap(True)
        self.badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.badge.setAccessibleName("Decision")
        lay.addWidget(self.badge)
        self.urgency = QLabel("")
        self.urgency.setWordWrap(True)
        lay.addWidget(self.urgency)

        self.scores_box = scores_box = QGroupBox("Eye scores")
        scores_box.setToolTip("Per class: mean probability over the most suspicious gradable B-scans (top k)")
        self.scores_grid = QGridLayout(scores_box)
        self.scores_grid.setContentsMargins(10, 16, 10, 10)
        lay.addWidget(scores_box)

        self.gradable = QLabel("")
        self.gradable.setWordWrap(True)
        lay.addWidget(self.gradable)

        self.evidence_box = evidence_box = QGroupBox("Evidence B-scans")
        evidence_box.setToolTip("The B-scans that drove the decision, strongest first; click one to view it")
        self.evidence_grid = QGridLayout(evidence_box)
        self.evidence_grid.setContentsMargins(8, 16, 8, 8)
        lay.addWidget(evidence_box)
        self.evidence_buttons: list[QToolButton] = []

        self.reasons = QLabel("")
        self.reasons.setObjectName("muted")
        self.reasons.setWordWrap(True)
        lay.addWidget(self.reasons)
        self.signoff = SignOffBox(state)  # the clinician confirms or changes the decision
        lay.addWidget(self.signoff)
        lay.addStretch(1)
        self.model = QLabel("")
        self.model.setObjectName("muted")
        self.model.setWordWrap(True)
        lay.addWidget(self.model)

        self._shown: tuple = ()
        state.eye_changed.connect(self.refresh)
        state.exams_changed.connect(self._exams_changed)
        state.signoff_changed.connect(lambda _eye: QTimer.singleShot(0, self._fit_body))
        self.refresh()

    def _what(self) -> tuple:
        eye, loaded = self.state.current_eye, self.state.current_loaded
        return (id(eye), eye.eye if eye is not None else None, id(loaded.card) if loaded is not None else None)

    def _exams_changed(self) -> None:
        """Rebuilt only when the shown eye changed (not for every eye a running batch adds)."""
        if self._what() != self._shown:
            self.refresh()

    @staticmethod
    def _clear(grid: QGridLayout) -> None:
        while grid.count():
            w = grid.takeAt(0).widget()
            if w is not None:
                w.hide()
                w.setParent(None)
                w.deleteLater()

    def _fit_body(self) -> None:
        """Give the panel's body the height its wrapped texts and pictures need at this width, so the
        panel scrolls instead of squeezing them over each other (QScrollArea alone undercounts
        word-wrapped labels)."""
        body = self.widget()
        lay = body.layout()
        width = self.viewport().width()
        need = lay.heightForWidth(width) if lay.hasHeightForWidth() else lay.sizeHint().height()
        body.setMinimumHeight(max(need, 0))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._fit_body()

    def refresh(self) -> None:
        """Show the current eye (or an empty panel)."""
        self._shown = self._what()
        try:
            self._refresh()
        finally:
            QTimer.singleShot(0, self._fit_body)  # once the new widgets are laid out

    def _refresh(self) -> None:
        eye, loaded = self.state.current_eye, self.state.current_loaded
        vr = eye.volume_result if eye else None
        demo = bool(loaded and loaded.card.demo) or bool(vr and vr.demo_model)
        notice = DEMO_WARNING if demo else (loaded.card.warning if loaded else (vr.model_notice if vr else ""))
        self.demo_banner.setText(notice.upper())
        if loaded is not None:
            self.demo_banner.setToolTip(
                f"Trained on {loaded.card.trained_on}. Its output must not be used for "
                "clinical decisions without a clinician's own assessment."
            )
        self.demo_banner.setVisible(bool(notice))
        self._clear(self.scores_grid)
        self._clear(self.evidence_grid)
        self.evidence_buttons = []
        self.scores_box.setVisible(eye is not None)
        self.evidence_box.setVisible(eye is not None)
        if eye is None:
            self.badge.setText("Open an exam (File \u203a Open, drag and drop, or Ctrl+D for the demo)")
            self.badge.setStyleSheet("background: #e9edf2; color: #4a5563; font-size: 10pt; font-weight: 400;")
            for w in (self.urgency, self.gradable, self.reasons, self.model):
                w.setText("")
            return
        bg, fg = badge_colours(eye)
        self.badge.setText(badge_text(eye))
        self.badge.setStyleSheet(f"background: {bg}; color: {fg};")
        tier = eye.tier
        urgency = (
            f"<b>Decision:</b> {escape(tier.name)}<br><b>Action:</b> {escape(tier.action)} {escape(tier.time_frame)}"
        )
        if eye.urgency is not Urgency.RESCAN:
            urgency += f"<br><b>Confidence:</b> {eye.confidence:.2f}"
        if eye.urgency is Urgency.REVIEW:
            why = next((r for r in eye.reasons if r.startswith("Review advised")), "")
            urgency += f"<br><b style='color:#6d28d9'>\u26a0 {escape(why)}</b>"
        elif eye.needs_review:
            urgency += "<br><b style='color:#b45309'>\u26a0 Review advised:</b> a score lies close to its threshold."
        self.urgency.setText(urgency)

        for row, (name, score) in enumerate(eye.scores.items()):
            label = QLabel(name)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(round(float(score) * 1000))
            bar.setTextVisible(False)
            bar.setFixedHeight(12)
            colour = class_colour(name, row).name()
            bar.setStyleSheet(
                f"QProgressBar {{ border: 1px solid #d5dbe3; border-radius: 3px; background: #f0f3f6; }}"
                f"QProgressBar::chunk {{ background: {colour}; border-radius: 2px; }}"
            )
            value = QLabel(f"{float(score):.2f}")
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.scores_grid.addWidget(label, row, 0)
            self.scores_grid.addWidget(bar, row, 1)
            self.scores_grid.addWidget(value, row, 2)
        self.scores_grid.setColumnStretch(1, 1)

        text = f"<b>Gradable B-scans:</b> {eye.n_gradable} of {eye.n_bscans}"
        if eye.ungradable:
            shown = ", ".join(str(i + 1) for i in eye.ungradable[:12])
            more = " \u2026" if len(eye.ungradable) > 12 else ""
            text += f"<br><span style='color:#5b6673'>Ungradable: {shown}{more}</span>"
        self.gradable.setText(text)

        if vr is not None and eye.evidence and not eye.rescan:
            cls = eye.label if eye.label in vr.classes else vr.classes[int(vr.probs[eye.evidence[0]].argmax())]
            for k, idx in enumerate(eye.evidence[:6]):
                pix = rgb_to_pixmap(thumbnail(vr, int(idx), cls, width=THUMB_WIDTH))
                b = QToolButton()
                b.setIcon(QIcon(pix))
                b.setIconSize(QSize(pix.width(), pix.height()))
                b.setText(f"B-scan {int(idx) + 1}")
                b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
                b.setToolTip(f"Show B-scan {int(idx) + 1} ({cls} p = {vr.probs[idx, vr.classes.index(cls)]:.2f})")
                b.setAutoRaise(True)
                b.clicked.connect(lambda _=False, i=int(idx): self.state.set_slice(i))
                b.setMinimumSize(b.sizeHint())  # the panel scrolls rather than squeezing the pictures
                self.evidence_grid.addWidget(b, k // 2, k % 2)
                self.evidence_buttons.append(b)
        else:
            none = QLabel("None: no B-scan drove a referral." if not eye.rescan else "None: the eye needs a rescan.")
            none.setObjectName("muted")
            self.evidence_grid.addWidget(none, 0, 0)

        self.reasons.setText("<br>".join(eye.reasons))
        if vr is not None:
            name = vr.model_name or (loaded.card.name if loaded else "")
            version = vr.model_version or (loaded.card.version if loaded else "")
            backend = f", {vr.backend}" if vr.backend else ""
            self.model.setText(f"Model: {name} v{version}{backend}")
        else:
            self.model.setText("")
