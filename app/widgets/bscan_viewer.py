"""B-scan viewer (centre): the current B-scan at full resolution with zoom, pan, a scale bar and the
heatmap overlay, plus its controls (slice slider, overlay toggle/opacity/class, contrast, brightness)."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSignalBlocker, Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent, QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGraphicsPixmapItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.widgets.state import SIDE_GAP, ViewerState
from app.widgets.style import ElidedLabel, rgb_to_pixmap, rgb_to_qimage
from core.cam import colour_bar

__all__ = ["BScanView", "ViewerPanel", "nice_length"]

AUTO_CLASS = "Auto"


def nice_length(max_length: float) -> float:
    """The largest 1-2-5 x 10^k value not above ``max_length`` (scale bar lengths)."""
    if max_length <= 0:
        return 0.0
    exp = math.floor(math.log10(max_length))
    for m in (5, 2, 1):
        if m * 10**exp <= max_length:
            return m * 10**exp
    return 10**exp


def _length_text(mm: float) -> str:
    return f"{mm * 1000:.0f} \u00b5m" if mm < 1 else f"{mm:g} mm"


class BScanView(QGraphicsView):
    """Shows ``state.render()``; wheel = slices, Ctrl+wheel = zoom, drag = pan, arrows = slices."""

    zoom_changed = Signal(float)

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setScene(QGraphicsScene(self))
        self.item = QGraphicsPixmapItem()
        self.item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self.item)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(320, 180)  # fits a 540-px-tall screen (1080 at 200 %) with the chart
        self.setToolTip(
            "B-scan. Wheel or arrow keys: next/previous B-scan. Ctrl+wheel or +/-: zoom. "
            "Drag: pan. Right-drag: contrast (left/right) and brightness (up/down). F: fit. H: heatmap."
        )
        self.setAccessibleName("B-scan viewer")
        self._fit = True
        self._wl_drag: tuple[QPointF, float, float] | None = None
        self.last_rgb = None  # the pixels currently shown (tests compare them)
        state.slice_changed.connect(lambda _i: self.refresh())
        state.display_changed.connect(self.refresh)
        state.eye_changed.connect(self._new_eye)

    # -- drawing -----------------------------------------------------------------------------
    def _new_eye(self) -> None:
        self._fit = True
        self.refresh()

    def refresh(self) -> None:
        """Re-render the current B-scan (cheap: one window/level LUT and at most one CAM overlay)."""
        rgb = self.state.render()
        self.last_rgb = rgb
        if rgb is None:
            self.item.setPixmap(rgb_to_pixmap(np.zeros((1, 1, 3), np.uint8)))
            self.scene().setSceneRect(QRectF(0, 0, 1, 1))
            self.viewport().update()
            return
        self.item.setPixmap(rgb_to_pixmap(rgb))
        self.scene().setSceneRect(QRectF(0, 0, rgb.shape[1], rgb.shape[0]))
        if self._fit:
            self.fit()
        self.viewport().update()

    def fit(self) -> None:
        """Fit the whole B-scan into the view."""
        self._fit = True
        self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self.zoom_changed.emit(self.zoom)

    @property
    def zoom(self) -> float:
        """Screen pixels per B-scan pixel."""
        return float(self.transform().m11())

    def zoom_by(self, factor: float) -> None:
        """Zoom in (factor > 1) or out, between 0.05x and 40x."""
        new = min(max(self.zoom * factor, 0.05), 40.0)
        factor = new / self.zoom if self.zoom else 1.0
        self._fit = False
        self.scale(factor, factor)
        self.zoom_changed.emit(self.zoom)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        if self._fit:
            self.fit()

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802 (Qt API)
        """Scale bars (lower left, when the pixel spacing is known), the heatmap's colour bar (lower
        right) and, side by side, which half is which."""
        vol = self.state.volume
        if vol is None:
            self._draw_hint(painter)
            return
        if self.state.side_by_side:
            self._draw_side_labels(painter)
        if self.state.overlay_on and self.state.heatmap_text():
            self._draw_legend(painter)
        if vol.spacing.known and self.zoom > 0:
            self._draw_scale_bars(painter)

    def _small_font(self, bold: bool = True) -> QFont:
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF() - 1))
        font.setBold(bold)
        return font

    def _draw_side_labels(self, painter: QPainter) -> None:
        """'Without heatmap' over the left half, 'With heatmap' over the right one."""
        vol = self.state.volume
        if vol is None:
            return
        w = vol.bscans.shape[2]
        painter.save()
        painter.resetTransform()
        painter.setFont(self._small_font())
        fm = painter.fontMetrics()
        for x, text in ((0, "Without heatmap"), (w + SIDE_GAP, "With heatmap")):
            at = self.mapFromScene(QPointF(x, 0))
            box = QRectF(max(at.x(), 0) + 6, max(at.y(), 0) + 6, fm.horizontalAdvance(text) + 12, fm.height() + 6)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(10, 14, 20, 170))
            painter.drawRoundedRect(box, 4, 4)
            painter.setPen(QColor("#ffffff"))
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

    def _draw_legend(self, painter: QPainter) -> None:
        """The heatmap's meaning in the lower right corner: class, probability and strength; the colour
        ramp from the weakest coloured evidence to the strongest."""
        text = self.state.heatmap_text()
        painter.save()
        painter.resetTransform()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setFont(self._small_font())
        fm = painter.fontMetrics()
        bar_w, bar_h, pad = 150, 10, 8
        width = max(bar_w, fm.horizontalAdvance(text)) + 2 * pad
        height = fm.height() * 2 + bar_h + 2 * pad + 4
        vp = self.viewport().rect()
        box = QRectF(vp.width() - width - 12, vp.height() - height - 12, width, height)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(10, 14, 20, 180))
        painter.drawRoundedRect(box, 5, 5)
        painter.setPen(QColor("#ffffff"))
        x0, y = box.left() + pad, box.top() + pad
        painter.drawText(QRectF(x0, y, width - 2 * pad, fm.height()), Qt.AlignmentFlag.AlignLeft, text)
        y += fm.height() + 2
        painter.drawImage(QRectF(x0, y, bar_w, bar_h), rgb_to_qimage(colour_bar(bar_w, bar_h)))
        y += bar_h + 2
        painter.setFont(self._small_font(bold=False))
        painter.setPen(QColor("#d5dbe3"))
        row = QRectF(x0, y, bar_w, fm.height())
        painter.drawText(row, Qt.AlignmentFlag.AlignLeft, "weak")
        painter.drawText(row, Qt.AlignmentFlag.AlignRight, "strong")
        painter.restore()

    def _draw_scale_bars(self, painter: QPainter) -> None:
        vol = self.state.volume
        if vol is None:
            return
        painter.save()
        painter.resetTransform()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        vp = self.viewport().rect()
        px_per_mm_x = self.zoom / float(vol.spacing.column)
        px_per_mm_y = self.zoom / float(vol.spacing.row)
        lx = nice_length(min(130, vp.width() * 0.25) / px_per_mm_x)
        ly = nice_length(min(80, vp.height() * 0.2) / px_per_mm_y)
        x0, y0 = 18.0, vp.height() - 22.0
        wx, hy = lx * px_per_mm_x, ly * px_per_mm_y
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF() - 1))
        font.setBold(True)
        painter.setFont(font)
        fm = painter.fontMetrics()
        label_w = max(fm.horizontalAdvance(_length_text(v)) for v in (lx, ly))
        ty = min(y0 - hy + 12, y0 - 6 - fm.height())  # a short vertical bar: its label above the other
        top = min(y0 - hy, ty - fm.ascent()) - 8
        backing = QRectF(x0 - 8, top, max(wx, label_w + 12) + 16, y0 + 8 - top)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(10, 14, 20, 150))
        painter.drawRoundedRect(backing, 4, 4)
        for colour, width in ((QColor(0, 0, 0, 170), 5.0), (QColor("#ffffff"), 2.0)):
            painter.setPen(QPen(colour, width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.FlatCap))
            painter.drawLine(QPointF(x0, y0), QPointF(x0 + wx, y0))
            painter.drawLine(QPointF(x0, y0), QPointF(x0, y0 - hy))
        painter.setPen(QColor("#ffffff"))
        painter.drawText(QPointF(x0 + 4, y0 - 6), _length_text(lx))
        painter.drawText(QPointF(x0 + 6, ty), _length_text(ly))
        painter.restore()

    def _draw_hint(self, painter: QPainter) -> None:
        painter.save()
        painter.resetTransform()
        painter.setPen(QColor("#aab4c0"))
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() + 2)
        painter.setFont(font)
        painter.drawText(
            self.viewport().rect(),
            Qt.AlignmentFlag.AlignCenter,
            "Open an OCT exam\n\nFile \u203a Open file (Ctrl+O) or Open folder (Ctrl+Shift+O),\n"
            "drag and drop files here, or open the demo exam (Ctrl+D)",
        )
        painter.restore()

    # -- input -------------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt API)
        if event.button() == Qt.MouseButton.RightButton:  # right-drag: window / level
            self._wl_drag = (event.position(), self.state.window, self.state.level)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt API)
        if self._wl_drag is not None and event.buttons() & Qt.MouseButton.RightButton:
            start, window, level = self._wl_drag
            delta = event.position() - start
            # right = more contrast (narrower window), down = brighter (lower level); full range per 400 px
            self.state.set_window_level(window - delta.x() / 400.0, level - delta.y() / 400.0)
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt API)
        if event.button() == Qt.MouseButton.RightButton and self._wl_drag is not None:
            self._wl_drag = None
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt API)
        steps = event.angleDelta().y() / 120.0
        if not steps:
            return super().wheelEvent(event)
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.zoom_by(1.25**steps)
        else:
            self.state.step(-int(math.copysign(max(1, round(abs(steps))), steps)))
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        key = event.key()
        moves = {
            Qt.Key.Key_Right: 1,
            Qt.Key.Key_Down: 1,
            Qt.Key.Key_Left: -1,
            Qt.Key.Key_Up: -1,
            Qt.Key.Key_PageDown: 5,
            Qt.Key.Key_PageUp: -5,
        }
        if key in moves and not event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.state.step(moves[key])
        elif key == Qt.Key.Key_Home:
            self.state.set_slice(0)
        elif key == Qt.Key.Key_End:
            self.state.set_slice(self.state.n_slices - 1)
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_by(1.25)
        elif key == Qt.Key.Key_Minus:
            self.zoom_by(0.8)
        else:
            return super().keyPressEvent(event)
        event.accept()


class ViewerPanel(QWidget):
    """The viewer with its controls: slice slider and position, heatmap toggle/opacity/class,
    contrast and brightness, zoom."""

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.view = BScanView(state)

        # slice navigation
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip("B-scan (arrow keys, mouse wheel, Page Up/Down, Home/End)")
        self.slider.setAccessibleName("B-scan slider")
        self.slider.valueChanged.connect(lambda v: self.state.set_slice(v - 1))
        self.position = QLabel("No exam loaded")
        self.position.setToolTip("Current B-scan, its distance from the first B-scan, gradability")
        self.probs = ElidedLabel("")
        self.probs.setObjectName("muted")
        self.probs.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.probs.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.probs.setToolTip("Model probabilities for this B-scan, the most probable class first")

        # heatmap
        self.overlay = QCheckBox("Heatmap")
        self.overlay.setToolTip("Show where the model looked (class activation map), key H")
        self.overlay.toggled.connect(self.state.set_overlay)
        self.side = QCheckBox("Side by side")
        self.side.setToolTip("The B-scan without and with the heatmap, next to each other (key S)")
        self.side.toggled.connect(self.state.set_side_by_side)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setMinimumWidth(50)
        self.opacity.setMaximumWidth(120)
        self.opacity.setToolTip("Heatmap opacity ([ and ] keys)")
        self.opacity.setAccessibleName("Heatmap opacity")
        self.opacity.valueChanged.connect(lambda v: self.state.set_opacity(v / 100.0))
        self.cam_class = QComboBox()
        self.cam_class.setToolTip("Heatmap class (C key cycles); Auto follows each B-scan's predicted class")
        self.cam_class.setAccessibleName("Heatmap class")
        self.cam_class.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.cam_class.setMinimumContentsLength(12)
        self.cam_class.currentIndexChanged.connect(self._class_chosen)

        # window / level
        self.contrast = QSlider(Qt.Orientation.Horizontal)
        self.contrast.setRange(2, 100)
        self.contrast.setMinimumWidth(50)
        self.contrast.setMaximumWidth(110)
        self.contrast.setToolTip("Contrast (window width); R resets")
        self.contrast.setAccessibleName("Contrast")
        self.brightness = QSlider(Qt.Orientation.Horizontal)
        self.brightness.setRange(0, 100)
        self.brightness.setMinimumWidth(50)
        self.brightness.setMaximumWidth(110)
        self.brightness.setToolTip("Brightness (window level, inverted: right = brighter); R resets")
        self.brightness.setAccessibleName("Brightness")
        self.contrast.valueChanged.connect(self._window_level_moved)
        self.brightness.valueChanged.connect(self._window_level_moved)

        def tool(text: str, tip: str, fn) -> QToolButton:
            b = QToolButton()
            b.setText(text)
            b.setToolTip(tip)
            b.setAutoRaise(True)
            b.clicked.connect(fn)
            return b

        top = QHBoxLayout()
        top.setContentsMargins(6, 4, 6, 0)
        top.addWidget(self.position)
        top.addWidget(self.probs, 1)
        top.addWidget(tool("\u2212", "Zoom out (-)", lambda: self.view.zoom_by(0.8)))
        top.addWidget(tool("Fit", "Fit the B-scan to the window (F)", self.view.fit))
        top.addWidget(tool("+", "Zoom in (+)", lambda: self.view.zoom_by(1.25)))

        nav = QHBoxLayout()
        nav.setContentsMargins(6, 2, 6, 0)
        nav.addWidget(QLabel("B-scan"))
        nav.addWidget(self.slider, 1)

        # two rows of about the same width, so the centre stays narrow enough for both docks on a
        # 960-px-wide screen (1920 x 1080 at 200 %): side by side ends the display row
        heat = QHBoxLayout()
        heat.setContentsMargins(6, 0, 6, 0)
        heat.addWidget(self.overlay)
        heat.addWidget(self.cam_class)
        heat.addWidget(QLabel("Opacity"))
        heat.addWidget(self.opacity)
        heat.addStretch(1)
        bottom = QHBoxLayout()
        bottom.setContentsMargins(6, 0, 6, 4)
        bottom.addWidget(QLabel("Contrast"))
        bottom.addWidget(self.contrast)
        bottom.addWidget(QLabel("Brightness"))
        bottom.addWidget(self.brightness)
        bottom.addWidget(tool("Reset", "Reset contrast and brightness (R)", self.state.reset_display))
        bottom.addWidget(self.side)
        bottom.addStretch(1)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addWidget(self.view, 1)
        lay.addLayout(nav)
        lay.addLayout(heat)
        lay.addLayout(bottom)

        state.eye_changed.connect(self._new_eye)
        state.slice_changed.connect(lambda _i: self._sync())
        state.display_changed.connect(self._sync)
        self._new_eye()

    def _new_eye(self) -> None:
        with QSignalBlocker(self.cam_class):
            self.cam_class.clear()
            self.cam_class.addItem(AUTO_CLASS, None)
            for c in self.state.classes:
                self.cam_class.addItem(c, c)
        n = self.state.n_slices
        with QSignalBlocker(self.slider):
            self.slider.setRange(1, max(n, 1))
            self.slider.setPageStep(5)
        self.setEnabled(n > 0)
        self._sync()

    def _sync(self) -> None:
        """Controls follow the state (without feeding back into it)."""
        s = self.state
        with QSignalBlocker(self.slider):
            self.slider.setValue(s.slice_index + 1)
        with QSignalBlocker(self.overlay):
            self.overlay.setChecked(s.overlay_on)
        with QSignalBlocker(self.side):
            self.side.setChecked(s.side_by_side)
        with QSignalBlocker(self.opacity):
            self.opacity.setValue(round(s.opacity * 100))
        with QSignalBlocker(self.cam_class):
            idx = self.cam_class.findData(s.cam_class) if s.cam_class else 0
            self.cam_class.setCurrentIndex(max(idx, 0))
            if s.cam_class is None and s.predicted_class():
                self.cam_class.setItemText(0, f"Auto ({s.predicted_class()})")
        with QSignalBlocker(self.contrast), QSignalBlocker(self.brightness):
            self.contrast.setValue(round(s.window * 100))
            self.brightness.setValue(round((1.0 - s.level) * 100))
        self.position.setText(s.slice_text() if s.volume is not None else "No exam loaded")
        self.probs.setText(s.probabilities_text(by_probability=True))

    def _class_chosen(self, index: int) -> None:
        self.state.set_cam_class(self.cam_class.itemData(index))

    def _window_level_moved(self) -> None:
        self.state.set_window_level(self.contrast.value() / 100.0, 1.0 - self.brightness.value() / 100.0)

    def cycle_class(self) -> None:
        """Next heatmap class (Auto, then each class in turn)."""
        if self.cam_class.count():
            self.cam_class.setCurrentIndex((self.cam_class.currentIndex() + 1) % self.cam_class.count())
