"""En-face view (beside the B-scan viewer): the volume's mean intensity projection (``core.enface``),
the current B-scan as a line across it, each B-scan's decision colour along its left edge
(``core.enface.bscan_colours``: its predicted class's colour, grey when ungradable); click or drag
to select a B-scan, arrow keys step."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QKeyEvent, QMouseEvent, QPainter, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from app.widgets.state import ViewerState
from app.widgets.style import rgb_to_pixmap
from core.enface import EnFace, bscan_colours, enface
from core.volume import OctVolume

__all__ = ["EnFaceView", "LINE_COLOUR"]

#: The current B-scan's line (light blue: visible on the grey projection and beside every class colour).
LINE_COLOUR = "#4fc3f7"
BACKGROUND = "#111418"
#: Fewer B-scans than this make no picture (a single B-scan's projection is one row: a barcode).
MIN_BSCANS = 2


class EnFaceView(QWidget):
    """QPainter view of the en-face projection; y = B-scan (row 0 = the first B-scan). A volume of one
    B-scan gets a note instead (its projection would be a single row)."""

    MARGIN, EDGE, GAP, CAPTION = 8, 10, 3, 20

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self._volume: OctVolume | None = None
        self._enface: EnFace | None = None
        self._pixmap: QPixmap | None = None
        self._colours: list[QColor] = []
        self._line = 0  # the B-scan the line marks (follows state.slice_changed)
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setToolTip(
            "En-face view: the mean intensity over depth of every B-scan. The blue line is the B-scan "
            "shown; the left edge gives each B-scan's predicted class (grey: ungradable). Click to select "
            "a B-scan."
        )
        self.setAccessibleName("En-face projection")
        state.eye_changed.connect(self._new_eye)
        state.exams_changed.connect(self._new_eye)
        state.slice_changed.connect(self._new_slice)
        self._new_eye()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(320, 320)

    @property
    def enface(self) -> EnFace | None:
        """The projection shown (None without a volume)."""
        return self._enface

    def _new_eye(self) -> None:
        vol, vr = self.state.volume, self.state.volume_result
        if vol is not self._volume:
            self._volume = vol
            self._enface = enface(vol) if vol is not None and vol.n_bscans >= MIN_BSCANS else None
            self._pixmap = rgb_to_pixmap(self._enface.image) if self._enface is not None else None
        self._colours = [QColor(c) for c in bscan_colours(vr)] if vr is not None else []
        self._new_slice(self.state.slice_index)

    def _new_slice(self, index: int) -> None:
        self._line = int(index)
        self.update()

    # -- geometry ----------------------------------------------------------------------------
    def image_rect(self) -> QRectF:
        """Where the projection is drawn: the widget minus margins, the edge strip and the caption,
        at the scan's physical aspect (square when the spacing is unknown)."""
        ef = self._enface
        left = self.MARGIN + self.EDGE + self.GAP
        avail_w = max(1.0, self.width() - left - self.MARGIN)
        avail_h = max(1.0, self.height() - 2 * self.MARGIN - self.CAPTION)
        aspect = 1.0 if ef is None or not ef.physical else ef.image.shape[0] / ef.image.shape[1]  # h / w
        w = min(avail_w, avail_h / aspect)
        h = w * aspect
        x = left + (avail_w - w) / 2
        return QRectF(x, self.MARGIN + (avail_h - h) / 2, w, h)

    def _band(self) -> float:
        return self.image_rect().height() / max(self.state.n_slices, 1)

    def y_of(self, index: int) -> float:
        """Centre y of B-scan ``index``."""
        return self.image_rect().top() + (index + 0.5) * self._band()

    def index_at(self, y: float) -> int:
        """The B-scan under widget y (clamped)."""
        n = self.state.n_slices
        i = int((y - self.image_rect().top()) // self._band())
        return min(max(i, 0), max(n - 1, 0))

    def edge_x(self) -> float:
        """Centre x of the decision-colour strip."""
        return self.image_rect().left() - self.GAP - self.EDGE / 2

    # -- painting ----------------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(BACKGROUND))
        small = QFont(self.font())
        small.setPointSizeF(max(7.5, small.pointSizeF() - 1.5))
        p.setFont(small)
        ef, n = self._enface, self.state.n_slices
        if ef is None or self._pixmap is None:
            p.setPen(QColor("#8a94a0"))
            text = "The en-face view appears here" if self._volume is None else "One B-scan: no en-face view"
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, text)
            return
        r = self.image_rect()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawPixmap(r, self._pixmap, QRectF(self._pixmap.rect()))
        band = self._band()
        x0 = r.left() - self.GAP - self.EDGE
        for i, colour in enumerate(self._colours[:n]):
            p.fillRect(QRectF(x0, r.top() + i * band, self.EDGE, band), colour)
        # the current B-scan
        y = float(round(self.y_of(self._line)))
        p.setPen(QPen(QColor(LINE_COLOUR), 2.0))
        p.drawLine(QPointF(r.left(), y), QPointF(r.right(), y))
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(LINE_COLOUR))
        xr = r.right() + 1
        p.drawPolygon(QPolygonF([QPointF(xr, y), QPointF(xr + 6, y - 5), QPointF(xr + 6, y + 5)]))
        p.setPen(QPen(QColor("#5b6673"), 1))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(r)
        # caption: what it is, its size, which end is B-scan 1
        p.setPen(QColor("#c3cad3"))
        size = f"{ef.size_mm[1]:.1f} \u00d7 {ef.size_mm[0]:.1f} mm" if ef.size_mm else "spacing unknown: drawn square"
        caption = f"Mean projection \u00b7 {n} B-scans \u00b7 {size} \u00b7 top: B-scan 1"
        p.drawText(
            QRectF(
                self.MARGIN, self.height() - self.MARGIN - self.CAPTION, self.width() - 2 * self.MARGIN, self.CAPTION
            ),
            Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom,
            p.fontMetrics().elidedText(caption, Qt.TextElideMode.ElideRight, self.width() - 2 * self.MARGIN),
        )
        p.end()

    # -- input -------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt API)
        if event.button() == Qt.MouseButton.LeftButton and self._enface is not None:
            self.state.set_slice(self.index_at(event.position().y()))
            event.accept()
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt API)
        vr = self.state.volume_result
        if vr is None or self._enface is None:
            return
        i = self.index_at(event.position().y())
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.state.set_slice(i)
        cls = vr.classes[int(vr.probs[i].argmax())]
        grade = f"{cls} {float(vr.probs[i].max()):.2f}" if bool(vr.gradable[i]) else "ungradable"
        QToolTip.showText(event.globalPosition().toPoint(), f"B-scan {i + 1}: {grade}", self)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        moves = {Qt.Key.Key_Down: 1, Qt.Key.Key_Up: -1, Qt.Key.Key_PageDown: 5, Qt.Key.Key_PageUp: -5}
        if event.key() in moves:
            self.state.step(moves[event.key()])
            event.accept()
        else:
            super().keyPressEvent(event)
