"""Worklist (left dock): every loaded eye, grouped by patient, sortable and filterable.

One row per patient (name, id, their exams, the most urgent decision, how many eyes are flagged for
review, whether all are signed) with one row per screened eye under it (exam date, eye, decision and
tier badge, review flag, signed by a clinician or not).
A patient with two studies is one patient row with the eyes of both exams under it. Click a header to
sort (by urgency for the decision column, by date for the date column); type in the filter box or pick
a decision group to narrow the list. The selection always follows the viewer state.
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QModelIndex, QSignalBlocker, QSize, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetrics, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.widgets.state import ViewerState
from app.widgets.style import badge_colours, badge_text, short_badge
from core.results import EyeResult, Urgency
from core.volume import Laterality, PatientInfo, display_name, format_date

__all__ = ["COLUMNS", "FILTERS", "Worklist", "decision_badge", "patient_key"]

EYE = Qt.ItemDataRole.UserRole  # the EyeResult of an eye row
SORT = Qt.ItemDataRole.UserRole + 1  # the sort key of a cell
SEARCH = Qt.ItemDataRole.UserRole + 2  # lower-case text the filter box matches

COLUMNS = ["Patient", "ID", "Exam date", "Eye", "Decision", "Review", "Signed"]
COL_PATIENT, COL_ID, COL_DATE, COL_EYE, COL_DECISION, COL_REVIEW, COL_SIGNED = range(len(COLUMNS))
FLAG = "\u2691"  # a flag: review advised
TICK = "\u2714"  # signed by a clinician
HEADERS = ["Patient", "ID", "Date", "Eye", "Decision", FLAG, TICK]  # short: the dock is narrow (tooltips say more)
COMPACT_PATIENT_WIDTH = 56  # the patient column's least width: it gives way before the ID and date columns

#: The decision groups of the filter box: label -> which eyes it keeps.
FILTERS: dict[str, object] = {
    "All eyes": lambda e: True,
    "Referrals": lambda e: e.urgency.refers,
    "Urgent": lambda e: e.urgency is Urgency.URGENT,
    "Flagged for review": lambda e: _flagged(e),
    "Rescan": lambda e: e.urgency is Urgency.RESCAN,
    "No referral": lambda e: e.urgency is Urgency.NONE,
    "Not signed": None,  # needs the state: Worklist.apply_filter
}

_EYE_SHORT = {Laterality.OD: "OD", Laterality.OS: "OS", Laterality.UNKNOWN: "?"}
_EYE_LONG = {Laterality.OD: "right eye (OD)", Laterality.OS: "left eye (OS)", Laterality.UNKNOWN: "eye unknown"}


def decision_badge(eye: EyeResult) -> str:
    """The worklist's badge: tier and finding ('URGENT \u00b7 CNV', 'NO REFERRAL', 'RESCAN'); the review
    flag has its own column."""
    return short_badge(eye).removesuffix(" \u00b7 REVIEW")


def _flagged(eye: EyeResult) -> bool:
    """Flagged for a clinician's look: review advised, or a score close to its threshold."""
    return eye.urgency is Urgency.REVIEW or bool(eye.needs_review)


def _set_by_user(eye: EyeResult) -> bool:
    vr = eye.volume_result
    return bool(vr is not None and vr.volume.extra.get("laterality_set_by_user"))


def patient_key(patient: PatientInfo, study_uid: str) -> tuple[str, str]:
    """Which patient row an exam goes under: its patient id; without one, the exam is its own patient
    (two unnamed exams are not assumed to be one person)."""
    return ("id", patient.patient_id) if patient.patient_id else ("exam", study_uid)


class _Row(QTreeWidgetItem):
    """A row that sorts by each cell's SORT key (urgency rank, date, eye order) instead of its text."""

    def __lt__(self, other: QTreeWidgetItem) -> bool:  # noqa: D105
        tree = self.treeWidget()
        col = tree.sortColumn() if tree is not None else 0
        a, b = self.data(col, SORT), other.data(col, SORT)
        if a is None or b is None:
            return self.text(col).lower() < other.text(col).lower()
        return a < b


class _Tree(QTreeWidget):
    """The tree, telling the worklist when its width changed (to fit the patient column)."""

    resized = None

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        if self.resized is not None:
            self.resized()


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
        rect = option.rect.adjusted(2, 3, -2, -3)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(bg)
        painter.drawRoundedRect(rect, 4, 4)
        font = QFont(option.font)
        font.setBold(True)
        font.setPointSizeF(max(7.5, font.pointSizeF() - 2))
        painter.setFont(font)
        painter.setPen(fg.color() if fg is not None else QColor("#ffffff"))
        shown = painter.fontMetrics().elidedText(text, Qt.TextElideMode.ElideRight, rect.width() - 8)
        painter.drawText(rect.adjusted(4, 0, -4, 0), Qt.AlignmentFlag.AlignCenter, shown)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:  # noqa: D102
        text = index.data(Qt.ItemDataRole.DisplayRole) or ""
        font = QFont(option.font)
        font.setBold(True)
        font.setPointSizeF(max(7.5, font.pointSizeF() - 2))
        width = QFontMetrics(font).horizontalAdvance(text) + 18  # the badge's margins and padding, with room
        return QSize(width, max(super().sizeHint(option, index).height(), 26))


class Worklist(QWidget):
    """The worklist: a filter row, the patient/eye tree, and the counts."""

    def __init__(self, state: ViewerState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter: name, ID, date, eye, decision")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setAccessibleName("Worklist filter")
        self.filter_edit.setToolTip("Show only the rows whose patient, ID, date, eye or decision contain this text")
        self.filter_edit.textChanged.connect(lambda _t: self.apply_filter())
        self.decision_filter = QComboBox()
        self.decision_filter.addItems(list(FILTERS))
        self.decision_filter.setAccessibleName("Decision filter")
        self.decision_filter.setToolTip("Show only the eyes with these decisions")
        self.decision_filter.currentIndexChanged.connect(lambda _i: self.apply_filter())

        self._fitting = False
        self.tree = _Tree()
        self.tree.resized = self._fit_columns
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(HEADERS)
        header = self.tree.headerItem()
        header.setToolTip(COL_PATIENT, "Patient name (B-scan count under it); sorts by name")
        header.setToolTip(COL_ID, "Patient ID")
        header.setToolTip(COL_DATE, "Exam date; sorts newest or oldest first")
        header.setToolTip(COL_EYE, "OD right eye, OS left eye, ? unknown (set it in the eye summary; * set by user)")
        header.setToolTip(COL_DECISION, "The screening decision and its referral tier; sorts most urgent first")
        header.setToolTip(
            COL_REVIEW, f"Review flag {FLAG}: review advised (a score lies close to its threshold, or no class decided)"
        )
        header.setToolTip(COL_SIGNED, f"{TICK}: signed by a clinician (a patient: all their eyes)")
        h = self.tree.header()
        h.setStretchLastSection(False)
        h.setMinimumSectionSize(22)
        h.setSectionResizeMode(COL_PATIENT, QHeaderView.ResizeMode.Interactive)
        for col in (COL_ID, COL_DATE, COL_DECISION):
            h.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        for col, width in ((COL_EYE, 36), (COL_REVIEW, 24), (COL_SIGNED, 24)):
            h.setSectionResizeMode(col, QHeaderView.ResizeMode.Fixed)
            h.resizeSection(col, width)
        h.sectionResized.connect(lambda col, _old, _new: col != COL_PATIENT and self._fit_columns())
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setItemDelegateForColumn(COL_DECISION, BadgeDelegate(self.tree))
        self.tree.setUniformRowHeights(False)
        self.tree.setIndentation(14)
        self.tree.setRootIsDecorated(True)
        self.tree.setSortingEnabled(True)
        self.tree.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # opening order until a header is clicked
        self.tree.setToolTip("Loaded exams by patient. Select an eye to review it; click a header to sort.")
        self.tree.setAccessibleName("Worklist")
        self.tree.currentItemChanged.connect(self._on_current)

        self.counts = QLabel("")
        self.counts.setObjectName("muted")

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.setSpacing(4)
        top.addWidget(self.filter_edit, 1)
        top.addWidget(self.decision_filter)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addLayout(top)
        lay.addWidget(self.tree, 1)
        lay.addWidget(self.counts)
        self.setAccessibleName("Worklist")

        state.exams_changed.connect(self.rebuild)
        state.signoff_changed.connect(lambda _eye: self.rebuild())
        state.eye_changed.connect(self._sync_selection)
        self.rebuild()

    # -- building ----------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Rebuild the rows from the state's exams (sort order, filter, scroll and selection kept)."""
        bar = self.tree.verticalScrollBar()
        scroll = bar.value()
        with QSignalBlocker(self.tree):
            self.tree.setSortingEnabled(False)
            self.tree.clear()
            bold = QFont(self.tree.font())
            bold.setBold(True)
            groups: dict[tuple[str, str], list] = {}
            for order, loaded in enumerate(self.state.exams):
                exam = loaded.exam
                groups.setdefault(patient_key(exam.patient, exam.study.study_uid), []).append((order, exam))
            for order, members in enumerate(groups.values()):
                self.tree.addTopLevelItem(self._patient_row(order, members, bold))
            self.tree.expandAll()
            self.tree.setSortingEnabled(True)
            self.tree.sortByColumn(self.tree.header().sortIndicatorSection(), self.tree.header().sortIndicatorOrder())
        self.apply_filter()
        self._fit_columns()
        bar.setValue(scroll)
        self._sync_selection()

    def _fit_columns(self) -> None:
        """The patient column takes the width the others leave (at least COMPACT_PATIENT_WIDTH). When the
        dock is too narrow for every column (a small screen, 200 % scaling), the ID and then the date
        column are hidden (both stay in each row's tooltip and in the filter), so that the eye, the
        decision, the review flag and the sign-off stay visible without scrolling sideways."""
        if self._fitting:
            return
        self._fitting = True
        try:
            h = self.tree.header()
            width = self.tree.viewport().width()

            def need(col: int) -> int:
                if col in (COL_ID, COL_DATE, COL_DECISION):  # sized to their contents
                    return max(self.tree.sizeHintForColumn(col), h.sectionSizeHint(col))
                return h.sectionSize(col) if not h.isSectionHidden(col) else h.defaultSectionSize()

            kept = [COL_EYE, COL_DECISION, COL_REVIEW, COL_SIGNED]
            room = width - COMPACT_PATIENT_WIDTH - sum(need(c) for c in kept)  # the patient column gives way first
            date_fits = room >= need(COL_DATE)
            self.tree.setColumnHidden(COL_DATE, not date_fits)
            self.tree.setColumnHidden(COL_ID, not (date_fits and room >= need(COL_DATE) + need(COL_ID)))
            # still too narrow: the decision badge gives way too (elided, its tooltip has it whole)
            fixed = COMPACT_PATIENT_WIDTH + sum(need(c) for c in (COL_EYE, COL_REVIEW, COL_SIGNED))
            squeeze = not date_fits and width - fixed < need(COL_DECISION)
            mode = QHeaderView.ResizeMode.Interactive if squeeze else QHeaderView.ResizeMode.ResizeToContents
            if h.sectionResizeMode(COL_DECISION) != mode:
                h.setSectionResizeMode(COL_DECISION, mode)
            if squeeze:
                h.resizeSection(COL_DECISION, max(48, width - fixed))
            others = sum(h.sectionSize(c) for c in range(1, len(COLUMNS)) if not h.isSectionHidden(c))
            least = COMPACT_PATIENT_WIDTH
            h.resizeSection(COL_PATIENT, max(least, width - others))
        finally:
            self._fitting = False

    def _patient_row(self, order: int, members: list, bold: QFont) -> _Row:
        patient = members[0][1].patient
        eyes = [(o, exam, eye) for o, exam in members for eye in exam.eyes]
        name = display_name(patient.name) or "\u2014"  # no name in the file
        dates = sorted({format_date(exam.study.study_date) for _o, exam in members} - {""})
        n_exams = len(members)
        date_text = f"{n_exams} exams" if n_exams > 1 else (dates[0] if dates else "no date")
        worst = min((e for _o, _x, e in eyes), key=lambda e: e.urgency.rank, default=None)
        flagged = sum(_flagged(e) for _o, _x, e in eyes)
        signed = sum(self.state.signoff(e) is not None for _o, _x, e in eyes)
        all_signed = bool(eyes) and signed == len(eyes)
        row = _Row([name, patient.patient_id, date_text, "", decision_badge(worst) if worst else "", "", ""])
        row.setFont(COL_PATIENT, bold)
        row.setData(COL_PATIENT, SORT, (name.lower(), order))
        row.setData(COL_ID, SORT, (patient.patient_id, order))
        row.setData(COL_DATE, SORT, (max((x.study.study_date for _o, x in members), default=""), order))
        row.setData(COL_EYE, SORT, (0, order))
        row.setData(COL_DECISION, SORT, (worst.urgency.rank if worst else 99, order))
        row.setData(COL_REVIEW, SORT, (-flagged, order))
        row.setData(COL_SIGNED, SORT, (signed - len(eyes), order))  # most unsigned first
        if all_signed:
            row.setText(COL_SIGNED, TICK)
        row.setForeground(COL_SIGNED, QBrush(QColor("#15803d")))
        row.setTextAlignment(COL_SIGNED, Qt.AlignmentFlag.AlignCenter)
        if flagged:
            row.setText(COL_REVIEW, f"{FLAG}{flagged}" if flagged > 1 else FLAG)
            row.setForeground(COL_REVIEW, QBrush(QColor("#b45309")))
        if worst is not None:
            self._badge(row, worst)
        born = format_date(patient.birth_date)
        tip = (
            f"{name}"
            + (f", ID {patient.patient_id}" if patient.patient_id else "")
            + (f", born {born}" if born else "")
        )
        tip += f"\n{n_exams} exam{'s' if n_exams > 1 else ''}: " + ", ".join(dates or ["no date"])
        tip += f"\n{signed} of {_plural(len(eyes), 'eye')} signed"
        for col in range(len(COLUMNS)):
            row.setToolTip(col, tip)
        row.setData(COL_PATIENT, SEARCH, " ".join([name, patient.name, patient.patient_id, born]).lower())
        row.setData(COL_PATIENT, EYE, eyes[0][2] if eyes else None)
        for o, exam, eye in eyes:
            row.addChild(self._eye_row(o, exam, eye))
        return row

    def _eye_row(self, order: int, exam, eye: EyeResult) -> _Row:
        lat = eye.eye.laterality
        vr = eye.volume_result
        date = format_date(exam.study.study_date) or "no date"
        scan = f"{vr.volume.n_bscans} B-scan{'s' if vr.volume.n_bscans != 1 else ''}" if vr is not None else ""
        if sum(e.eye.laterality is lat for e in exam.eyes) > 1:  # several volumes of one eye: say which
            scan += f" \u00b7 {vr.volume.source.name}" if vr is not None and vr.volume.source else ""
        eye_text = _EYE_SHORT[lat] + ("*" if _set_by_user(eye) else "")
        so = self.state.signoff(eye)
        row = _Row([scan, "", date, eye_text, decision_badge(eye), FLAG if _flagged(eye) else "", TICK if so else ""])
        row.setForeground(COL_PATIENT, QBrush(QColor("#5b6673")))
        row.setData(COL_PATIENT, SORT, (order, _EYE_SHORT[lat]))
        row.setData(COL_ID, SORT, (order, _EYE_SHORT[lat]))
        row.setData(COL_DATE, SORT, (exam.study.study_date, order))
        row.setData(COL_EYE, SORT, ({"OD": 0, "OS": 1}.get(lat.value, 2), order))
        row.setData(COL_DECISION, SORT, (eye.urgency.rank, order))
        row.setData(COL_REVIEW, SORT, (0 if _flagged(eye) else 1, order))
        row.setData(COL_SIGNED, SORT, (0 if so is None else 1, order))
        row.setForeground(COL_SIGNED, QBrush(QColor("#15803d")))
        row.setTextAlignment(COL_SIGNED, Qt.AlignmentFlag.AlignCenter)
        row.setForeground(COL_REVIEW, QBrush(QColor("#b45309")))
        row.setTextAlignment(COL_EYE, Qt.AlignmentFlag.AlignCenter)
        row.setTextAlignment(COL_REVIEW, Qt.AlignmentFlag.AlignCenter)
        self._badge(row, eye)
        where = ""
        if vr is not None:
            n, h, w = vr.volume.shape
            src = vr.volume.source.name if vr.volume.source else "in memory"
            where = f"\n{n} B-scans, {w}\u00d7{h} \u00b7 {src}"
        eye_words = _EYE_LONG[lat] + (" (set by user)" if _set_by_user(eye) else "")
        tip = f"{date}, {eye_words}: {badge_text(eye)}" + (" \u2014 review advised" if _flagged(eye) else "")
        tip += (f"\nsigned by {so.clinician}, {so.signed_text()}" if so else "\nnot signed") + where
        for col in range(len(COLUMNS)):
            row.setToolTip(col, tip)
        row.setData(COL_PATIENT, EYE, eye)
        words = [date, exam.study.study_date, _EYE_SHORT[lat], _EYE_LONG[lat], short_badge(eye), badge_text(eye)]
        words += [eye.tier.name, eye.label] + (["review", "flagged"] if _flagged(eye) else [])
        words += ["signed", so.clinician] if so else ["unsigned"]
        row.setData(COL_PATIENT, SEARCH, " ".join(words).lower())
        return row

    @staticmethod
    def _badge(row: QTreeWidgetItem, eye: EyeResult) -> None:
        bg, fg = badge_colours(eye)
        row.setBackground(COL_DECISION, QBrush(QColor(bg)))
        row.setForeground(COL_DECISION, QBrush(QColor(fg)))
        row.setTextAlignment(COL_DECISION, Qt.AlignmentFlag.AlignCenter)
        row.setToolTip(COL_DECISION, badge_text(eye))

    # -- filtering ---------------------------------------------------------------------------
    def apply_filter(self) -> None:
        """Hide the eye rows that do not match the filter text and decision group, and the patients left
        without a shown eye. Text matching a patient (name, id, birth date) shows all of their eyes."""
        words = self.filter_edit.text().lower().split()
        chosen = self.decision_filter.currentText()
        keep = FILTERS.get(chosen) or FILTERS["All eyes"]
        if chosen == "Not signed":
            keep = lambda e: self.state.signoff(e) is None  # noqa: E731
        shown = 0
        for top in self._tops():
            patient_text = top.data(COL_PATIENT, SEARCH) or ""
            any_shown = False
            for child in self._children(top):
                eye = child.data(COL_PATIENT, EYE)
                text = patient_text + " " + (child.data(COL_PATIENT, SEARCH) or "")
                ok = keep(eye) and all(w in text for w in words)  # type: ignore[operator]
                child.setHidden(not ok)
                any_shown |= ok
                shown += ok
            top.setHidden(not any_shown)
        total = sum(len(le.exam.eyes) for le in self.state.exams)
        n_patients = self.tree.topLevelItemCount()
        n_exams = len(self.state.exams)
        text = f"{_plural(n_patients, 'patient')} \u00b7 {_plural(n_exams, 'exam')} \u00b7 {_plural(total, 'eye')}"
        if shown != total:
            text += f" ({shown} shown)"
        self.counts.setText(text if total else "No exams open")

    # -- selection ---------------------------------------------------------------------------
    def _on_current(self, current: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None = None) -> None:
        if current is not None:
            eye = current.data(COL_PATIENT, EYE)
            if eye is not None:
                self.state.select_eye(eye)

    def _sync_selection(self) -> None:
        target = self.state.current_eye
        with QSignalBlocker(self.tree):
            self.tree.clearSelection()
            for child in self.eye_items(visible_only=False):
                if target is not None and child.data(COL_PATIENT, EYE) is target:
                    self.tree.setCurrentItem(child)
                    self.tree.scrollToItem(child)
                    return
            self.tree.setCurrentItem(None)  # type: ignore[arg-type]

    # -- for tests and keyboard navigation ------------------------------------------------------
    def _tops(self) -> Iterable[QTreeWidgetItem]:
        return [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]

    @staticmethod
    def _children(top: QTreeWidgetItem) -> list[QTreeWidgetItem]:
        return [top.child(j) for j in range(top.childCount())]

    def patient_items(self) -> list[QTreeWidgetItem]:
        """The patient rows, in the order shown."""
        return list(self._tops())

    def eye_items(self, visible_only: bool = True) -> list[QTreeWidgetItem]:
        """The eye rows, in the order shown (by default only those the filter shows)."""
        return [
            c for t in self._tops() for c in self._children(t) if not visible_only or not (c.isHidden() or t.isHidden())
        ]

    def eye_of(self, item: QTreeWidgetItem) -> EyeResult | None:
        """The eye a row stands for (a patient row: their first eye)."""
        return item.data(COL_PATIENT, EYE)

    def select_item(self, item: QTreeWidgetItem) -> None:
        """Select a row as a click would."""
        self.tree.setCurrentItem(item)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
