"""The app's calm palette, decision colours and helpers shared by the widgets.

Decisions are always shown as colour AND text (never colour alone): urgent red, routine amber,
no referral green, rescan grey, the same colours the PDF report uses.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QApplication, QLabel, QWidget

from core.results import EyeResult, Urgency
from core.tiers import CLASS_COLOURS, DEFAULT_TIERS
from core.tiers import class_colour as _class_colour

__all__ = [
    "CLASS_COLOURS",
    "ElidedLabel",
    "STYLESHEET",
    "URGENCY_COLOURS",
    "apply_theme",
    "badge_colours",
    "badge_text",
    "begin_chart",
    "chart_empty",
    "class_colour",
    "probability_grid",
    "rgb_to_pixmap",
    "rgb_to_qimage",
    "short_badge",
]

# background, text: core.tiers owns them (the PDF report uses the same)
URGENCY_COLOURS: dict[Urgency, tuple[str, str]] = {
    u: (DEFAULT_TIERS[u.value].colour, DEFAULT_TIERS[u.value].text_colour) for u in Urgency
}


def class_colour(name: str, index: int = 0) -> QColor:
    """The line colour of a class in charts (stable per class name; ``core.tiers.class_colour``)."""
    return QColor(_class_colour(name, index))


def badge_colours(eye: EyeResult) -> tuple[str, str]:
    """(background, text) colours of an eye's decision badge (its tier's, as the card words it)."""
    return eye.tier.colour, eye.tier.text_colour


def badge_text(eye: EyeResult) -> str:
    """The decision in words, e.g. 'URGENT REFERRAL: CNV (review advised)'."""
    return eye.headline


def short_badge(eye: EyeResult) -> str:
    """A compact badge for lists: 'URGENT · CNV', 'ROUTINE · DRUSEN', 'NO REFERRAL', 'RESCAN'."""
    if eye.rescan:
        return "RESCAN"
    text = {
        Urgency.URGENT: "URGENT",
        Urgency.SOON: "SOON",
        Urgency.ROUTINE: "ROUTINE",
        Urgency.REVIEW: "REVIEW",
        Urgency.NONE: "NO REFERRAL",
    }[eye.urgency]
    if eye.urgency is Urgency.REVIEW:
        return text
    if eye.urgency is not Urgency.NONE or eye.label.lower() != "normal":
        text += f" \u00b7 {eye.label.upper()}"
    return text + (" \u00b7 REVIEW" if eye.needs_review else "")


class ElidedLabel(QLabel):
    """A one-line label that ends in '\u2026' when it is too narrow for its text (never cut mid-glyph)."""

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, self.width())
        painter.drawText(self.rect(), int(self.alignment()), text)
        painter.end()


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """An RGB uint8 ``[h, w, 3]`` array (or grey ``[h, w]``) as a QImage that owns its pixels."""
    a = np.ascontiguousarray(rgb)
    if a.ndim == 2:
        h, w = a.shape
        return QImage(a.data, w, h, a.strides[0], QImage.Format.Format_Grayscale8).copy()
    h, w, _ = a.shape
    return QImage(a.data, w, h, a.strides[0], QImage.Format.Format_RGB888).copy()


def rgb_to_pixmap(rgb: np.ndarray) -> QPixmap:
    """An RGB uint8 array as a QPixmap."""
    return QPixmap.fromImage(rgb_to_qimage(rgb))


STYLESHEET = """
QMainWindow, QDialog { background: #f4f6f8; }
QDockWidget::title { background: #e6eaef; padding: 6px 8px; font-weight: 600; color: #2b3440; }
QTreeWidget { background: #ffffff; border: 1px solid #d5dbe3; }
QTreeWidget::item { padding: 4px 2px; }
QTreeWidget::item:selected { background: #dbe7f5; color: #1b2430; }
QGroupBox { border: 1px solid #d5dbe3; border-radius: 6px; margin-top: 14px; background: #ffffff; }
QGroupBox::title { subcontrol-origin: margin; left: 10px; padding: 0 4px; color: #4a5563; font-weight: 600; }
QLabel#demoBanner { background: #b71c1c; color: #ffffff; font-weight: 700; padding: 6px; border-radius: 4px; }
QLabel#decisionBadge { border-radius: 6px; padding: 10px; font-size: 13pt; font-weight: 700; }
QLabel#muted { color: #5b6673; }
QFrame#patientBanner { background: #e8f0f8; border: 1px solid #c3d3e4; border-radius: 6px; }
QLabel#bannerWho { font-size: 11pt; font-weight: 700; color: #1b2430; }
QLabel#bannerWhen { color: #3a4656; }
QLabel#bannerEye { font-size: 11pt; font-weight: 700; color: #1b2430; }
QToolBar { background: #e9edf2; border: none; spacing: 4px; padding: 3px; }
QStatusBar { background: #e9edf2; }
QGraphicsView { background: #111418; border: none; }
"""


def apply_theme(app: QApplication) -> None:
    """Fusion style, a light calm palette, a readable default font and the stylesheet."""
    app.setStyle("Fusion")
    pal = app.palette()
    pal.setColor(QPalette.ColorRole.Window, QColor("#f4f6f8"))
    pal.setColor(QPalette.ColorRole.Base, QColor("#ffffff"))
    pal.setColor(QPalette.ColorRole.AlternateBase, QColor("#f0f3f6"))
    pal.setColor(QPalette.ColorRole.Button, QColor("#e9edf2"))
    pal.setColor(QPalette.ColorRole.Highlight, QColor("#2f6db5"))
    pal.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    pal.setColor(QPalette.ColorRole.WindowText, QColor("#1b2430"))
    pal.setColor(QPalette.ColorRole.Text, QColor("#1b2430"))
    pal.setColor(QPalette.ColorRole.ToolTipBase, QColor("#ffffe8"))
    app.setPalette(pal)
    font = app.font()
    if font.pointSizeF() < 10:
        font.setPointSizeF(10)
    font.setStyleHint(QFont.StyleHint.SansSerif)
    app.setFont(font)
    app.setStyleSheet(STYLESHEET)


# -- the charts (strip chart, follow-up trend) --------------------------------------------------
def begin_chart(widget: QWidget) -> QPainter:
    """A painter on ``widget`` for a chart: antialiased, white background, the small chart font."""
    p = QPainter(widget)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.fillRect(widget.rect(), QColor("#ffffff"))
    small = QFont(widget.font())
    small.setPointSizeF(max(7.5, small.pointSizeF() - 1.5))
    p.setFont(small)
    return p


def chart_empty(p: QPainter, widget: QWidget, text: str) -> None:
    """What an empty chart says, centred and grey."""
    p.setPen(QColor("#8a94a0"))
    p.drawText(widget.rect(), Qt.AlignmentFlag.AlignCenter, text)


def probability_grid(p: QPainter, r: QRectF, label_width: float) -> None:
    """Grid lines at 0, 0.25 ... 1 across the plot ``r`` and the labels 0.0 / 0.5 / 1.0 left of it."""
    p.setPen(QPen(QColor("#e3e7ec"), 1))
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = r.bottom() - frac * r.height()
        p.drawLine(QPointF(r.left(), y), QPointF(r.right(), y))
    p.setPen(QColor("#5b6673"))
    for frac in (0.0, 0.5, 1.0):
        y = r.bottom() - frac * r.height()
        p.drawText(
            QRectF(0, y - 8, label_width, 16),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            f"{frac:.1f}",
        )
