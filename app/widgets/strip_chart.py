"""Per-B-scan strip chart (under the viewer): each class's probability along the volume, evidence
B-scans marked, ungradable B-scans greyed, the current B-scan marked; click or drag to jump."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QKeyEvent,
    QMouseEvent,
    QPainterPath,
    QPen,
    QPolygonF,
)
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from app.widgets.state import ViewerState
from app.widgets.style import begin_chart, chart_empty, class_colour, probability_grid

__all__ = ["StripChart"]


class StripChart(QWidget):
    """QPainter chart of per-B-scan probabilities; x = B-scan, y = probability 0..1."""

    LEFT, RIGHT, TOP, BOTTOM = 40, 14, 24, 22

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setMinimumHeight(100)  # legend, a 54-px plot and the axis: fits a 540-px-tall screen
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setToolTip(
            "Probability of each class per B-scan. Click to jump to a B-scan. "
            "\u25bc evidence B-scans; grey: ungradable."
        )
        self.setAccessibleName("Per-B-scan probability chart")
        state.eye_changed.connect(self.update)
        state.slice_changed.connect(lambda _i: self.update())

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(600, 150)

    # -- geometry ----------------------------------------------------------------------------
    def plot_rect(self) -> QRectF:
        """The data area in widget coordinates."""
        return QRectF(
            self.LEFT,
            self.TOP,
            max(1, self.width() - self.LEFT - self.RIGHT),
            max(1, self.height() - self.TOP - self.BOTTOM),
        )

    def _band(self) -> float:
        return self.plot_rect().width() / max(self.state.n_slices, 1)

    def x_of(self, index: int) -> float:
        """Centre x of B-scan ``index``."""
        return self.plot_rect().left() + (index + 0.5) * self._band()

    def index_at(self, x: float) -> int:
        """The B-scan under widget x (clamped)."""
        n = self.state.n_slices
        i = int((x - self.plot_rect().left()) // self._band())
        return min(max(i, 0), max(n - 1, 0))

    # -- painting ----------------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        p = begin_chart(self)
        r = self.plot_rect()
        vr = self.state.volume_result
        if vr is None:
            chart_empty(p, self, "Per-B-scan probabilities appear here")
            return
        n = vr.n
        band = self._band()
        # ungradable B-scans
        for i in range(n):
            if not bool(vr.gradable[i]):
                p.fillRect(QRectF(r.left() + i * band, r.top(), band, r.height()), QColor(120, 128, 140, 70))
        probability_grid(p, r, self.LEFT - 6)  # grid and axis labels
        p.setPen(QColor("#5b6673"))
        step = max(1, round(n / max(1, r.width() / 42)))
        for i in range(0, n, step):
            p.drawText(QRectF(self.x_of(i) - 20, r.bottom() + 3, 40, 16), Qt.AlignmentFlag.AlignHCenter, str(i + 1))
        # one line per class
        for c, name in enumerate(vr.classes):
            path = QPainterPath()
            for i in range(n):
                pt = QPointF(self.x_of(i), r.bottom() - float(vr.probs[i, c]) * r.height())
                path.moveTo(pt) if i == 0 else path.lineTo(pt)
            p.setPen(QPen(class_colour(name, c), 2.0))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPath(path)
            if n == 1:
                p.drawEllipse(QPointF(self.x_of(0), r.bottom() - float(vr.probs[0, c]) * r.height()), 3, 3)
        # evidence markers (triangles above the plot)
        eye = self.state.current_eye
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QBrush(QColor("#1b2430")))
        for i in eye.evidence if eye else []:
            x = self.x_of(int(i))
            p.drawPolygon(
                QPolygonF([QPointF(x - 5, r.top() - 9), QPointF(x + 5, r.top() - 9), QPointF(x, r.top() - 1)])
            )
        # current B-scan
        x = self.x_of(self.state.slice_index)
        p.setPen(QPen(QColor("#2f6db5"), 2.0, Qt.PenStyle.DashLine))
        p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
        # legend
        lx = r.left()
        for c, name in enumerate(vr.classes):
            p.setPen(QPen(class_colour(name, c), 3))
            p.drawLine(QPointF(lx, 9), QPointF(lx + 16, 9))
            p.setPen(QColor("#1b2430"))
            p.drawText(QPointF(lx + 20, 13), name)
            lx += 30 + p.fontMetrics().horizontalAdvance(name)
        p.setPen(QColor("#5b6673"))
        room = r.right() - lx - 10  # a narrow chart drops the last entries rather than cut one (the tooltip has them)
        entries = ["\u25bc evidence", "\u2591 ungradable", "\u2506 current"]
        while entries and p.fontMetrics().horizontalAdvance("   ".join(entries)) > room:
            entries.pop()
        legend = "   ".join(entries)
        p.drawText(
            QRectF(lx + 10, 0, r.right() - lx - 10, 18),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            legend,
        )
        p.setPen(QPen(QColor("#c3cad3"), 1))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(r)

    # -- input -------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt API)
        if event.button() == Qt.MouseButton.LeftButton and self.state.n_slices:
            self.state.set_slice(self.index_at(event.position().x()))
            event.accept()
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt API)
        vr = self.state.volume_result
        if vr is None:
            return
        i = self.index_at(event.position().x())
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.state.set_slice(i)
        probs = ", ".join(f"{c} {vr.probs[i, k]:.2f}" for k, c in enumerate(vr.classes))
        grade = "" if bool(vr.gradable[i]) else f" \u2014 ungradable: {vr.quality_reasons[i]}"
        QToolTip.showText(event.globalPosition().toPoint(), f"B-scan {i + 1}: {probs}{grade}", self)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        moves = {Qt.Key.Key_Right: 1, Qt.Key.Key_Left: -1, Qt.Key.Key_PageDown: 5, Qt.Key.Key_PageUp: -5}
        if event.key() in moves:
            self.state.step(moves[event.key()])
            event.accept()
        else:
            super().keyPressEvent(event)
