"""En-face view (beside the B-scan viewer): the volume's mean intensity projection (``core.enface``),
the current B-scan as a line across it, each B-scan's decision colour along its left edge
(``core.enface.bscan_colours``: its predicted class's colour, grey when ungradable); click or drag
to select a B-scan, arrow keys step."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QKeyEvent, QMouseEvent, QPainter, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QSizePolicy, QToolTip, QVBoxLayout, QWidget

from app.widgets.state import ViewerState
from app.widgets.style import rgb_to_pixmap
from core.enface import EnFace, Fundus, bscan_colours, device_fundus, enface
from core.volume import OctVolume

__all__ = ["EnFacePanel", "EnFaceView", "LINE_COLOUR"]

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
        self._fundus: Fundus | None = None  # the device's own picture, when the file carries one
        self._fundus_pixmap: QPixmap | None = None
        self.device = False  # show the device's picture instead of the projection (set_device_image)
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
            self._fundus = device_fundus(vol) if vol is not None else None
            self._fundus_pixmap = rgb_to_pixmap(self._fundus.image) if self._fundus is not None else None
        self._colours = [QColor(c) for c in bscan_colours(vr)] if vr is not None else []
        self._new_slice(self.state.slice_index)

    @property
    def fundus(self) -> Fundus | None:
        """The device's fundus / SLO image of the current volume (None: the file carries none)."""
        return self._fundus

    @property
    def showing_device(self) -> bool:
        """True while the device's picture is shown (asked for, and the volume has one)."""
        return self.device and self._fundus is not None

    def set_device_image(self, on: bool) -> None:
        """Show the device's own fundus / SLO image (where the file has one) instead of the projection."""
        self.device = bool(on)
        self.update()

    def _new_slice(self, index: int) -> None:
        self._line = int(index)
        self.update()

    # -- geometry ----------------------------------------------------------------------------
    def image_rect(self) -> QRectF:
        """Where the picture is drawn: the widget minus margins, the edge strip and the caption, at the
        picture's aspect (the projection's physical one; square when the spacing is unknown)."""
        ef, fu = self._enface, self._fundus
        left = self.MARGIN + self.EDGE + self.GAP
        avail_w = max(1.0, self.width() - left - self.MARGIN)
        avail_h = max(1.0, self.height() - 2 * self.MARGIN - self.CAPTION)
        if self.showing_device and fu is not None:
            aspect = fu.image.shape[0] / fu.image.shape[1]  # h / w
        else:
            aspect = 1.0 if ef is None or not ef.physical else ef.image.shape[0] / ef.image.shape[1]
        w = min(avail_w, avail_h / aspect)
        h = w * aspect
        x = left + (avail_w - w) / 2
        return QRectF(x, self.MARGIN + (avail_h - h) / 2, w, h)

    def _band(self) -> float:
        return self.image_rect().height() / max(self.state.n_slices, 1)

    def line_of(self, index: int) -> tuple[QPointF, QPointF]:
        """B-scan ``index`` as a line in widget coordinates (across the projection, or where the device
        says it lies on its fundus picture)."""
        r, fu = self.image_rect(), self._fundus
        if self.showing_device and fu is not None:
            fh, fw = fu.image.shape
            x0, y0, x1, y1 = fu.lines[index]
            to = lambda x, y: QPointF(r.left() + x * r.width() / fw, r.top() + y * r.height() / fh)  # noqa: E731
            return to(x0, y0), to(x1, y1)
        y = r.top() + (index + 0.5) * self._band()
        return QPointF(r.left(), y), QPointF(r.right(), y)

    def y_of(self, index: int) -> float:
        """Centre y of B-scan ``index``."""
        a, b = self.line_of(index)
        return (a.y() + b.y()) / 2

    def index_at(self, y: float, x: float | None = None) -> int:
        """The B-scan under widget y (clamped); on the device's picture, the B-scan line nearest (x, y)."""
        n = self.state.n_slices
        r, fu = self.image_rect(), self._fundus
        if self.showing_device and fu is not None:
            fh, fw = fu.image.shape
            px = ((r.center().x() if x is None else x) - r.left()) * fw / r.width()
            return fu.bscan_near(px, (y - r.top()) * fh / r.height())
        i = int((y - r.top()) // self._band())
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
        device = self.showing_device
        pixmap = self._fundus_pixmap if device and self._fundus_pixmap is not None else self._pixmap
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawPixmap(r, pixmap, QRectF(pixmap.rect()))
        x0 = r.left() - self.GAP - self.EDGE
        ys = [self.y_of(i) for i in range(n)]
        gaps = [abs(b - a) for a, b in zip(ys, ys[1:], strict=False)]
        band = max(2.0, min(gaps)) if device and gaps else self._band()
        for i, colour in enumerate(self._colours[:n]):
            p.fillRect(QRectF(x0, ys[i] - band / 2, self.EDGE, band), colour)
        # the current B-scan
        a, b = self.line_of(min(self._line, n - 1))
        if abs(a.y() - b.y()) < 0.5:  # horizontal: on whole pixels, crisp
            a, b = QPointF(a.x(), round(a.y())), QPointF(b.x(), round(b.y()))
        p.setPen(QPen(QColor(LINE_COLOUR), 2.0))
        p.drawLine(a, b)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        y = (a.y() + b.y()) / 2
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
        if device and self._fundus is not None:
            caption = f"Device image ({self._fundus.modality or 'fundus'}) \u00b7 {n} B-scan positions from the file"
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
            self.state.set_slice(self.index_at(event.position().y(), event.position().x()))
            event.accept()
        else:
            super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt API)
        vr = self.state.volume_result
        if vr is None or self._enface is None:
            return
        i = self.index_at(event.position().y(), event.position().x())
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


class EnFacePanel(QWidget):
    """The dock's content: the en-face view and its toggle for the device's own fundus / SLO image
    (enabled only when the file carries one)."""

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.view = EnFaceView(state)
        self.device = QCheckBox("Device image")
        self.device.toggled.connect(self.view.set_device_image)
        top = QHBoxLayout()
        top.setContentsMargins(6, 2, 6, 0)
        top.addWidget(self.device)
        top.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addWidget(self.view, 1)
        state.eye_changed.connect(self._sync)
        state.exams_changed.connect(self._sync)
        self._sync()

    def _sync(self) -> None:
        fundus = self.view.fundus
        has = fundus is not None
        self.device.setEnabled(has)
        self.device.setText(
            f"Device image ({fundus.modality or 'fundus'})"
            if fundus is not None
            else ("Device image: none in this file" if self.state.volume is not None else "Device image")
        )
        self.device.setToolTip(
            "Show the device's own fundus / SLO image with the B-scan positions it recorded"
            if has
            else "This file carries no fundus / SLO image of its own (today only Heidelberg .vol / XML exports do)"
        )
