"""Follow-up (View > Compare visits): two visits of the same patient's eye side by side, their B-scan
positions synchronised, and each visit's eye scores as a trend under them.

Each side is a full B-scan viewer (heatmap, contrast, zoom) on its own :class:`ViewerState` holding
that visit's eye; moving through one visit moves the other to the same relative position
(``core.followup.synced_index``) while "Synchronise" is on. Which visits exist is
``core.followup.visits_of`` over the exams open in the main window.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from PySide6.QtCore import QPointF, QRectF, QSignalBlocker, QSize, Qt
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.widgets.bscan_viewer import ViewerPanel
from app.widgets.patient_banner import banner_lines
from app.widgets.state import ViewerState
from app.widgets.style import begin_chart, chart_empty, class_colour, probability_grid, short_badge
from core.followup import TrendPoint, Visit, score_trend, synced_index, visits_of
from core.modelcard import DEMO_WARNING
from core.results import EyeResult
from core.tiers import DEFAULT_TIERS

__all__ = ["FollowUpWindow", "TrendChart", "main_window_visits"]


def main_window_visits(state: ViewerState, eye: EyeResult | None) -> list[Visit]:
    """The visits of ``eye`` among the exams open in ``state``, oldest first."""
    if eye is None:
        return []
    return visits_of(((le.exam, le.card) for le in state.exams), eye)


class TrendChart(QWidget):
    """Eye score per class at each visit (x: visits in date order; y: 0-1), the compared visits
    shaded, each visit's tier as a coloured square under its date."""

    LEFT, RIGHT, TOP, BOTTOM = 34, 12, 24, 34

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[TrendPoint] = []
        self.highlight: tuple[int, ...] = ()
        self.setMinimumHeight(130)
        self.setAccessibleName("Eye score trend")
        self.setToolTip("Eye score per class at each visit (mean of the most suspicious B-scans), oldest left")

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(600, 170)

    def set_points(self, points: Sequence[TrendPoint], highlight: Sequence[int] = ()) -> None:
        self.points, self.highlight = list(points), tuple(highlight)
        self.update()

    def plot_rect(self) -> QRectF:
        return QRectF(
            self.LEFT, self.TOP, self.width() - self.LEFT - self.RIGHT, self.height() - self.TOP - self.BOTTOM
        )

    INSET = 48  # the first and last visit this far inside the plot: their date labels fit

    def x_of(self, i: int) -> float:
        """The x of visit ``i`` (the visits spread evenly; one visit sits in the middle)."""
        r, n = self.plot_rect().adjusted(self.INSET, 0, -self.INSET, 0), len(self.points)
        return r.center().x() if n <= 1 else r.left() + r.width() * i / (n - 1)

    def y_of(self, score: float) -> float:
        r = self.plot_rect()
        return r.bottom() - float(score) * r.height()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        p = begin_chart(self)
        r = self.plot_rect()
        if not self.points:
            chart_empty(p, self, "Eye scores per visit appear here")
            return
        band = 2.0 * self.INSET - 16
        for i in self.highlight:  # the two visits shown above
            p.fillRect(QRectF(self.x_of(i) - band / 2, r.top(), band, r.height()), QColor(47, 109, 181, 28))
        probability_grid(p, r, self.LEFT - 6)
        for i, pt in enumerate(self.points):  # date and tier square under each visit
            x = self.x_of(i)
            tier = DEFAULT_TIERS.get(pt.tier)
            if tier is not None:
                p.fillRect(QRectF(x - 5, r.bottom() + 4, 10, 8), QColor(tier.colour))
            p.setPen(QColor("#1b2430"))
            p.drawText(QRectF(x - 45, r.bottom() + 13, 90, 16), Qt.AlignmentFlag.AlignHCenter, pt.label)
        classes = list(self.points[0].scores)
        for c, name in enumerate(classes):
            colour = class_colour(name, c)
            path = QPainterPath()
            for i, pt in enumerate(self.points):
                q = QPointF(self.x_of(i), self.y_of(pt.scores.get(name, 0.0)))
                path.moveTo(q) if i == 0 else path.lineTo(q)
            p.setPen(QPen(colour, 2.0))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPath(path)
            p.setBrush(colour)
            for i, pt in enumerate(self.points):
                p.drawEllipse(QPointF(self.x_of(i), self.y_of(pt.scores.get(name, 0.0))), 3.5, 3.5)
        lx = r.left()  # legend
        for c, name in enumerate(classes):
            p.setPen(QPen(class_colour(name, c), 3))
            p.drawLine(QPointF(lx, 10), QPointF(lx + 14, 10))
            p.setPen(QColor("#1b2430"))
            p.drawText(QPointF(lx + 18, 14), name)
            lx += 26 + p.fontMetrics().horizontalAdvance(name)
        p.setPen(QColor("#5b6673"))
        p.drawText(QPointF(lx + 6, 14), "eye score per visit")


class _Side(QWidget):
    """One visit: a visit chooser over a B-scan viewer with its own state."""

    def __init__(self, visits: list[Visit], index: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.visits = visits
        self.choice = QComboBox()
        self.choice.setAccessibleName("Visit")
        for v in visits:
            self.choice.addItem(f"{v.label} \u00b7 {short_badge(v.eye)} \u00b7 {v.eye.n_bscans} B-scans")
        self.state = ViewerState()
        self.viewer = ViewerPanel(self.state)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        lay.addWidget(self.choice)
        lay.addWidget(self.viewer, 1)
        self.show_visit(index)
        self.choice.currentIndexChanged.connect(self.show_visit)

    @property
    def visit(self) -> Visit:
        return self.visits[self.choice.currentIndex()]

    def show_visit(self, index: int) -> None:
        """Show visit ``index`` (its eye's strongest evidence first, as in the main window)."""
        if self.choice.currentIndex() != index:
            with QSignalBlocker(self.choice):
                self.choice.setCurrentIndex(index)
        v = self.visits[index]
        self.state.clear()
        self.state.add_eye(v.eye, v.card)  # type: ignore[arg-type]
        self.state.select_eye(v.eye)


class FollowUpWindow(QWidget):
    """Two visits of one eye side by side (earlier left, later right), synchronised, over the trend."""

    def __init__(self, visits: list[Visit], current: EyeResult | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        if len(visits) < 2:
            raise ValueError("a follow-up needs two visits of the eye")
        self.visits = visits
        later = next((i for i, v in enumerate(visits) if v.eye is current), len(visits) - 1)
        earlier = later - 1 if later > 0 else 1
        last = visits[-1]  # the age on the latest visit
        who, ident, _when, eye_words = banner_lines(last.exam, last.eye)
        self.setWindowTitle(f"Follow-up: {who}, {eye_words}")
        self.setObjectName("followUpWindow")

        self.banner = QLabel(
            f"<b>{escape(who)}</b> \u00b7 {escape(ident)} \u00b7 <b>{escape(eye_words)}</b> \u00b7 {len(visits)} visits"
        )
        self.banner.setObjectName("patientBanner")
        self.banner.setWordWrap(True)
        self.notice = QLabel(self._notice())
        self.notice.setObjectName("demoBanner")
        self.notice.setWordWrap(True)
        self.notice.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.sync = QCheckBox("Synchronise B-scan position")
        self.sync.setChecked(True)
        self.sync.setToolTip("Moving through one visit moves the other to the same relative position")

        self.left = _Side(visits, earlier)
        self.right = _Side(visits, later)
        self._syncing = False
        self.left.state.slice_changed.connect(lambda i: self._follow(self.left, self.right))
        self.right.state.slice_changed.connect(lambda i: self._follow(self.right, self.left))
        for side in (self.left, self.right):
            side.choice.currentIndexChanged.connect(lambda _i: self._visits_changed())
        self.sync.toggled.connect(lambda on: on and self._follow(self.right, self.left))

        self.trend = TrendChart()
        views = QSplitter(Qt.Orientation.Horizontal)
        views.addWidget(self.left)
        views.addWidget(self.right)
        views.setChildrenCollapsible(False)
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(views)
        body.addWidget(self.trend)
        body.setStretchFactor(0, 4)
        body.setStretchFactor(1, 1)
        body.setChildrenCollapsible(False)
        top = QGridLayout()
        top.addWidget(self.banner, 0, 0)
        top.addWidget(self.sync, 0, 1, Qt.AlignmentFlag.AlignRight)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 8, 8, 8)
        lay.setSpacing(6)
        lay.addLayout(top)
        lay.addWidget(self.notice)
        row = QHBoxLayout()
        row.addWidget(body)
        lay.addLayout(row, 1)
        self.resize(1200, 700)
        self._visits_changed()

    def _notice(self) -> str:
        """'Research model … not for clinical use' for the models that scored these visits; a warning
        when the visits were scored by different models (their scores are not comparable)."""
        cards = {(getattr(v.card, "name", ""), getattr(v.card, "version", "")): v.card for v in self.visits}
        demo = any(getattr(c, "demo", False) for c in cards.values())
        notices = {DEMO_WARNING if demo else getattr(c, "warning", "") for c in cards.values()} - {""}
        text = " ".join(sorted(notices)).upper()
        if len(cards) > 1:
            names = ", ".join(f"{n} v{ver}" for n, ver in cards)
            text += f"\nThese visits were scored by different models ({names}): their scores are not comparable."
        return text

    def _follow(self, source: _Side, target: _Side) -> None:
        """Move ``target`` to the B-scan matching ``source``'s (once: the echo does not come back)."""
        if self._syncing or not self.sync.isChecked():
            return
        self._syncing = True
        try:
            target.state.set_slice(synced_index(source.state.slice_index, source.state.n_slices, target.state.n_slices))
        finally:
            self._syncing = False

    def _visits_changed(self) -> None:
        self.trend.set_points(
            score_trend(self.visits), (self.left.choice.currentIndex(), self.right.choice.currentIndex())
        )
        self._follow(self.right, self.left)
