"""Exam browser (left dock): patients/exams -> eyes (OD/OS) with decision badges -> volumes."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QSignalBlocker, QSize, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
    QWidget,
)

from app.widgets.state import ViewerState
from app.widgets.style import badge_colours, badge_text, short_badge
from core.results import ExamResult

__all__ = ["ExamBrowser", "exam_title"]

ROLE = Qt.ItemDataRole.UserRole
EYE_NAMES = {"OD": "OD (right eye)", "OS": "OS (left eye)", "unknown": "Eye unknown"}


def _date(yyyymmdd: str) -> str:
    return f"{yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:]}" if len(yyyymmdd) == 8 else yyyymmdd


def exam_title(exam: ExamResult) -> str:
    """'DEMO^Synthetic (ID 0001) · 2026-01-31' (whatever of it is known)."""
    p = exam.patient
    who = p.name.replace("^", " ").strip() or "Unnamed patient"
    if p.patient_id:
        who += f" (ID {p.patient_id})"
    date = _date(exam.study.study_date)
    return who + (f" \u00b7 {date}" if date else "")


class BadgeDelegate(QStyledItemDelegate):
    """Paints the decision column as a rounded badge (its colour stays visible when selected)."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:  # noqa: D102
        bg = index.data(Qt.ItemDataRole.BackgroundRole)
        text = index.data(Qt.ItemDataRole.DisplayRole)
        if not text or bg is None:
            return super().paint(painter, option, index)
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        opt.backgroundBrush = QBrush()
        style = opt.widget.style() if opt.widget else QApplication.style()
        style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, opt, painter, opt.widget)
        fg = index.data(Qt.ItemDataRole.ForegroundRole)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = option.rect.adjusted(3, 3, -3, -3)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(bg)
        painter.drawRoundedRect(rect, 4, 4)
        font = QFont(option.font)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(fg.color() if fg is not None else QColor("#ffffff"))
        painter.drawText(rect.adjusted(6, 0, -6, 0), Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:  # noqa: D102
        size = super().sizeHint(option, index)
        return QSize(size.width() + 16, max(size.height(), 26))


class ExamBrowser(QTreeWidget):
    """A tree of the loaded exams; selecting an eye or a volume makes that eye current."""

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setColumnCount(2)
        self.setHeaderLabels(["Exam / eye", "Decision"])
        self.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.header().setStretchLastSection(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setItemDelegateForColumn(1, BadgeDelegate(self))
        self.setUniformRowHeights(False)
        self.setAlternatingRowColors(False)
        self.setToolTip("Loaded exams. Select an eye to review it; the badge shows its screening decision.")
        self.setAccessibleName("Exam browser")
        self.currentItemChanged.connect(self._on_current)
        state.exams_changed.connect(self.rebuild)
        state.eye_changed.connect(self._sync_selection)

    def rebuild(self) -> None:
        """Rebuild the tree from the state's exams."""
        with QSignalBlocker(self):
            self.clear()
            bold = QFont(self.font())
            bold.setBold(True)
            for ei, loaded in enumerate(self.state.exams):
                exam = loaded.exam
                top = QTreeWidgetItem([exam_title(exam), ""])
                top.setFont(0, bold)
                top.setData(0, ROLE, (ei, 0))
                desc = " \u00b7 ".join(x for x in (exam.study.description, str(exam.device)) if x)
                top.setToolTip(0, desc or exam_title(exam))
                self.addTopLevelItem(top)
                top.setFirstColumnSpanned(True)
                lats = [e.eye.laterality.value for e in exam.eyes]
                for yi, eye in enumerate(exam.eyes):
                    lat = eye.eye.laterality.value
                    name = EYE_NAMES.get(lat, lat)
                    if lats.count(lat) > 1:  # several volumes of one eye: say which
                        vol = eye.volume_result.volume if eye.volume_result else None
                        name += f" \u00b7 {vol.source.name}" if vol is not None and vol.source else f" #{yi + 1}"
                    item = QTreeWidgetItem([name, short_badge(eye)])
                    bg, fg = badge_colours(eye)
                    item.setBackground(1, QBrush(QColor(bg)))
                    item.setForeground(1, QBrush(QColor(fg)))
                    item.setFont(1, bold)
                    item.setTextAlignment(1, Qt.AlignmentFlag.AlignCenter)
                    item.setToolTip(1, badge_text(eye))
                    item.setToolTip(0, badge_text(eye))
                    item.setData(0, ROLE, (ei, yi))
                    top.addChild(item)
                    vr = eye.volume_result
                    if vr is not None:
                        n, h, w = vr.volume.shape
                        src = vr.volume.source.name if vr.volume.source else "in memory"
                        vol = QTreeWidgetItem([f"{n} B-scans, {w}\u00d7{h} \u00b7 {src}", ""])
                        vol.setData(0, ROLE, (ei, yi))
                        vol.setToolTip(0, str(vr.volume.source or ""))
                        item.addChild(vol)
                top.setExpanded(True)
                for i in range(top.childCount()):
                    top.child(i).setExpanded(False)
        self._sync_selection()

    def _on_current(self, current: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None = None) -> None:
        if current is not None:
            ei, yi = current.data(0, ROLE)
            self.state.select(ei, yi)

    def _sync_selection(self) -> None:
        target = (self.state.exam_index, self.state.eye_index)
        with QSignalBlocker(self):
            self.clearSelection()
            for i in range(self.topLevelItemCount()):
                top = self.topLevelItem(i)
                for j in range(top.childCount()):
                    child = top.child(j)
                    if child.data(0, ROLE) == target:
                        self.setCurrentItem(child)
                        self.scrollToItem(child)

    def eye_items(self) -> list[QTreeWidgetItem]:
        """The eye rows (for tests and keyboard navigation)."""
        return [
            self.topLevelItem(i).child(j)
            for i in range(self.topLevelItemCount())
            for j in range(self.topLevelItem(i).childCount())
        ]
