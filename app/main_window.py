"""The main window: worklist and en-face view (left), B-scan viewer and strip chart (centre), eye summary (right);
menus, toolbar, status bar with progress and Cancel; background open/screen/export jobs. Screened
volumes join the worklist one by one while a batch runs; Cancel keeps them."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, QRect, QSize, Qt, QThreadPool, QTimer
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QKeySequence,
    QScreen,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QDockWidget,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QStyle,
    QToolBar,
    QWidget,
)

from app import gcguard
from app.dialogs import Dialogs, SettingsValues
from app.pacs_dialog import PacsController
from app.settings import AppSettings
from app.widgets.bscan_viewer import ViewerPanel
from app.widgets.enface import EnFacePanel
from app.widgets.followup import FollowUpWindow, main_window_visits
from app.widgets.state import ViewerState
from app.widgets.strip_chart import StripChart
from app.widgets.style import ElidedLabel
from app.widgets.summary_panel import SummaryPanel
from app.widgets.worklist import Worklist
from app.workers import ExportRequest, Job, LoadOutcome, ScreenedEye, export_report, load_and_screen
from core.audit import AuditError, AuditTrail, SignOff
from core.errors import InputError, ModelCardError
from core.inference import Screener
from core.inference import default_card_path as engine_default
from core.modelcard import ModelCard, load_card
from core.screening import report_stem

__all__ = ["MainWindow", "default_screener_factory", "demo_exam_path", "synthetic_demo_path", "install_excepthook"]

log = logging.getLogger(__name__)

ScreenerFactory = Callable[[Path, "int | None"], Any]

#: The window a fresh install opens, in logical pixels; never larger than the screen's available area.
DEFAULT_WINDOW = QSize(1440, 900)
#: A window shorter than this gets the en-face view as a tab behind the worklist in the default layout.
COMPACT_HEIGHT = 640
#: No dock is usable below this (nor below its own minimum size): a restored layout leaving one so is reset.
USABLE_DOCK = QSize(160, 120)
REPO_ROOT = Path(__file__).resolve().parents[1]


def demo_exam_path() -> Path:
    """The bundled demo: 44 real OCT2017 B-scans of 32 patients (CC BY 4.0) that the bundled model was
    not trained on; each patient is an exam of one or two single B-scans."""
    return REPO_ROOT / "resources" / "samples" / "oct2017-bscans"


def synthetic_demo_path() -> Path:
    """The synthetic demo exam (one simulated patient, both eyes, 25-B-scan DICOM OPT volumes)."""
    return REPO_ROOT / "resources" / "samples" / "demo-exam"


def default_card_path() -> Path:
    """The bundled demo model card (from ``core.inference``)."""
    return Path(engine_default())


def default_screener_factory(card_path: Path, threads: int | None) -> Any:
    """``core.inference.Screener`` on the card, ONNX Runtime when available."""
    return Screener(card_path, backend="auto", threads=threads)


class MainWindow(QMainWindow):
    """The OCT Screen desktop window.

    ``settings``, ``dialogs`` and ``screener_factory`` are injectable so tests can run it with a
    private settings file, scripted dialog answers and a tiny model.
    """

    def __init__(
        self,
        settings: AppSettings | None = None,
        dialogs: Dialogs | None = None,
        screener_factory: ScreenerFactory | None = None,
        pool: QThreadPool | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        super().__init__()
        gcguard.acquire()  # cyclic garbage is collected on this (GUI) thread while the window is open
        self._gc_held = True
        self.settings = settings or AppSettings()
        self.dialogs = dialogs or Dialogs()
        self.screener_factory = screener_factory or default_screener_factory
        self.pool = pool or QThreadPool.globalInstance()
        self.state = ViewerState()
        self.job: Job | None = None
        self._job_started = 0.0
        self._job_eyes = 0  # eyes the running open job has listed so far
        self._screener: Any = None
        self._screener_key: tuple[str, int] | None = None
        self._screener_lock = threading.Lock()
        self.model_override = ""  # a card for this session only (octscreen gui --model)

        self.setWindowTitle("OCT Screen")
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowNestedDocks)

        # centre: viewer over strip chart
        self.viewer = ViewerPanel(self.state)
        self.chart = StripChart(self.state)
        centre = QSplitter(Qt.Orientation.Vertical)
        centre.setObjectName("centreSplitter")
        centre.addWidget(self.viewer)
        centre.addWidget(self.chart)
        centre.setStretchFactor(0, 5)
        centre.setStretchFactor(1, 1)
        centre.setChildrenCollapsible(False)
        self.setCentralWidget(centre)

        # docks
        self.browser = Worklist(self.state)
        self.summary = SummaryPanel(self.state)
        self._open_audit(audit)
        self.browser_dock = self._dock("Worklist", "examsDock", self.browser, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.summary_dock = self._dock(
            "Eye summary", "summaryDock", self.summary, Qt.DockWidgetArea.RightDockWidgetArea
        )
        self.enface_panel = EnFacePanel(self.state)  # under the worklist, beside the viewer
        self.enface = self.enface_panel.view
        self.enface_dock = self._dock("En-face", "enfaceDock", self.enface_panel, Qt.DockWidgetArea.LeftDockWidgetArea)

        self._build_actions()
        self._build_menus()
        self._build_status()
        self.state.eye_changed.connect(self._update_actions)
        self.state.exams_changed.connect(self._update_actions)
        self._update_actions()

        self._restore_layout()

    # -- construction ------------------------------------------------------------------------
    def _open_audit(self, audit: AuditTrail | None) -> None:
        """The sign-off audit trail: ``audit`` (tests), else the one at ``settings.audit_path``. When it
        cannot be opened, signing is unavailable and the sign-off box says why (nothing else stops)."""
        if audit is None:
            try:
                audit = AuditTrail(self.settings.audit_path)
            except AuditError as e:
                log.error("sign-off unavailable: %s", e)
                self.state.audit_problem = str(e)
        self.state.audit = audit
        box = self.summary.signoff
        box.name.setText(self.settings.clinician)
        box.on_signed = self._signed
        box.refresh()

    def _signed(self, signoff: SignOff) -> None:
        self.settings.clinician = signoff.clinician
        self.status_text.setText(f"Signed by {signoff.clinician}: stored in the audit trail")

    def _dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
        )
        self.addDockWidget(area, dock)
        return dock

    def _action(
        self,
        text: str,
        slot: Callable[[], Any],
        shortcut: QKeySequence | str | None = None,
        tip: str = "",
        icon: QStyle.StandardPixmap | None = None,
        checkable: bool = False,
    ) -> QAction:
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if icon is not None:
            act.setIcon(self.style().standardIcon(icon))
        tip = tip or text.replace("&", "").rstrip("\u2026")
        keys = act.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        act.setToolTip(f"{tip} ({keys})" if keys else tip)
        act.setStatusTip(tip)
        act.setCheckable(checkable)
        if checkable:
            act.toggled.connect(slot)
        else:
            act.triggered.connect(lambda _=False: slot())
        self.addAction(act)  # shortcuts work even when the menu bar is hidden
        return act

    def _build_actions(self) -> None:
        sp = QStyle.StandardPixmap
        self.act_open_file = self._action(
            "&Open file\u2026",
            self.open_file_dialog,
            QKeySequence.StandardKey.Open,
            "Open an OCT file (DICOM, image, TIFF stack)",
            sp.SP_DialogOpenButton,
        )
        self.act_open_folder = self._action(
            "Open &folder\u2026",
            self.open_folder_dialog,
            "Ctrl+Shift+O",
            "Open every OCT file in a folder",
            sp.SP_DirOpenIcon,
        )
        self.act_demo = self._action(
            "Open &demo: real B-scans",
            self.open_demo,
            "Ctrl+D",
            "Open the bundled demo: real OCT2017 B-scans (CC BY 4.0) the model was not trained on",
            sp.SP_FileDialogInfoView,
        )
        self.act_demo_synthetic = self._action(
            "Open demo: &synthetic volumes",
            self.open_synthetic_demo,
            "Ctrl+Shift+D",
            "Open the synthetic demo exam (simulated volumes of both eyes; not real patient data)",
            sp.SP_FileDialogInfoView,
        )
        self.act_export = self._action(
            "&Export report\u2026",
            self.export_dialog,
            "Ctrl+E",
            "Export the selected exam's screening report (PDF, optionally DICOM)",
            sp.SP_DialogSaveButton,
        )
        self.act_close = self._action(
            "&Close exam",
            self.close_exam,
            "Ctrl+W",
            "Close the selected exam",  # as Help > Keyboard shortcuts says
        )
        self.act_close_all = self._action("Close &all exams", self.state.clear, None, "Close every exam")
        self.act_settings = self._action(
            "&Settings\u2026",
            self.settings_dialog,
            "Ctrl+,",
            "Model, report institution and logo, export folder, threads",
        )
        self.act_quit = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.pacs = PacsController(self)  # File > Query PACS / Send to PACS (app/pacs_dialog.py)
        self.act_cancel = self._action(
            "Cancel job", self.cancel_job, "Esc", "Cancel the running job", sp.SP_BrowserStop
        )
        self.act_overlay = self._action(
            "&Heatmap overlay",
            self.state.set_overlay,
            "H",
            "Show where the model looked (class activation map)",
            checkable=True,
        )
        self.act_side_by_side = self._action(
            "&Side by side",
            self.state.set_side_by_side,
            "S",
            "The B-scan without and with the heatmap, next to each other",
            checkable=True,
        )
        self.act_class = self._action("Next heatmap &class", self.viewer.cycle_class, "C")
        self.act_opacity_down = self._action(
            "Heatmap less opaque", lambda: self.state.set_opacity(self.state.opacity - 0.1), "["
        )
        self.act_opacity_up = self._action(
            "Heatmap more opaque", lambda: self.state.set_opacity(self.state.opacity + 0.1), "]"
        )
        self.act_fit = self._action("&Fit B-scan to window", self.viewer.view.fit, "F")
        self.act_zoom_in = self._action(
            "Zoom &in", lambda: self.viewer.view.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn
        )
        self.act_zoom_out = self._action(
            "Zoom &out", lambda: self.viewer.view.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut
        )
        self.act_reset = self._action("&Reset contrast and brightness", self.state.reset_display, "R")
        self.act_next_eye = self._action("Next eye", lambda: self.step_eye(1), "Ctrl+Down")
        self.act_prev_eye = self._action("Previous eye", lambda: self.step_eye(-1), "Ctrl+Up")
        self.act_compare = self._action(
            "&Compare visits\u2026",
            self.compare_visits,
            "Ctrl+Shift+V",
            "Two visits of this patient's eye side by side, synchronised, with the eye scores per visit",
        )
        self.followup: FollowUpWindow | None = None
        self.act_reset_layout = self._action(
            "Reset &layout",
            self.reset_layout,
            None,
            "Put the panels and the window size back to the defaults, sized to this screen",
        )
        self.act_shortcuts = self._action(
            "&Keyboard shortcuts", lambda: self.dialogs.shortcuts(self), QKeySequence.StandardKey.HelpContents
        )
        self.act_about = self._action("&About OCT Screen", self.about_dialog)
        self.state.display_changed.connect(self._sync_display_actions)

    def _build_menus(self) -> None:
        mb = self.menuBar()
        m = mb.addMenu("&File")
        m.addActions([self.act_open_file, self.act_open_folder, self.act_demo, self.act_demo_synthetic])
        self.recent_menu = m.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        m.addAction(self.pacs.act_query)
        m.addSeparator()
        m.addActions([self.act_export, self.pacs.act_send])
        m.addSeparator()
        m.addActions([self.act_close, self.act_close_all])
        m.addSeparator()
        m.addAction(self.act_settings)
        m.addSeparator()
        m.addAction(self.act_quit)
        v = mb.addMenu("&View")
        v.addActions(
            [self.act_overlay, self.act_side_by_side, self.act_class, self.act_opacity_down, self.act_opacity_up]
        )
        v.addSeparator()
        v.addActions([self.act_zoom_in, self.act_zoom_out, self.act_fit, self.act_reset])
        v.addSeparator()
        v.addActions([self.act_next_eye, self.act_prev_eye, self.act_compare])
        v.addSeparator()
        v.addActions(
            [
                self.browser_dock.toggleViewAction(),
                self.enface_dock.toggleViewAction(),
                self.summary_dock.toggleViewAction(),
            ]
        )
        v.addAction(self.act_reset_layout)
        h = mb.addMenu("&Help")
        h.addActions([self.act_shortcuts, self.act_about])

        tb = QToolBar("Main toolbar")
        tb.setObjectName("mainToolbar")
        tb.setIconSize(QSize(20, 20))
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        tb.addActions([self.act_open_file, self.act_open_folder, self.act_demo])
        tb.addSeparator()
        tb.addAction(self.act_export)
        tb.addSeparator()
        tb.addActions([self.act_overlay, self.act_side_by_side])
        self.addToolBar(tb)

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.status_text = ElidedLabel("Ready")  # long messages end in '…' instead of squeezing the model's notice
        self.status_text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.status_text.setMinimumWidth(120)
        self.model_label = ElidedLabel("")  # shortened on a narrow screen (the tooltip has it all)
        self.model_label.setObjectName("muted")
        self.model_label.setMinimumWidth(160)
        self.progress = QProgressBar()
        self.progress.setMinimumWidth(120)
        self.progress.setMaximumWidth(240)
        self.progress.setTextVisible(True)
        self.progress.setAccessibleName("Job progress")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Cancel the running job (Esc)")
        self.cancel_button.clicked.connect(self.cancel_job)
        sb.addWidget(self.status_text, 1)
        sb.addPermanentWidget(self.model_label)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)
        self._set_busy(False)

    def _sync_display_actions(self) -> None:
        for act, on in ((self.act_overlay, self.state.overlay_on), (self.act_side_by_side, self.state.side_by_side)):
            if act.isChecked() != on:
                act.blockSignals(True)
                act.setChecked(on)
                act.blockSignals(False)

    def _update_actions(self) -> None:
        has_exam = self.state.current_exam is not None
        busy = self.job is not None
        self.act_export.setEnabled(has_exam and not busy)
        self.pacs.update_actions(has_exam, busy)
        self.act_close.setEnabled(has_exam)
        self.act_close_all.setEnabled(bool(self.state.exams))
        self.act_overlay.setEnabled(self.state.volume_result is not None)
        self.act_side_by_side.setEnabled(self.state.volume_result is not None)
        self.act_compare.setEnabled(len(main_window_visits(self.state, self.state.current_eye)) > 1)
        for act in (
            self.act_open_file,
            self.act_open_folder,
            self.act_demo,
            self.act_demo_synthetic,
            self.act_settings,
        ):
            act.setEnabled(not busy)
        loaded = self.state.current_loaded
        if loaded is not None:
            card = loaded.card
            self.model_label.setText(f"Model: {card.name} v{card.version} \u2014 {card.warning}")
            self.model_label.setToolTip(f"{self.model_label.text()}\nTrained on {card.trained_on}")
            self.setWindowTitle(f"OCT Screen \u2014 {card.warning}")
        else:
            self.model_label.setText("")

    # -- opening -----------------------------------------------------------------------------
    def open_file_dialog(self) -> None:
        """File > Open file."""
        path = self.dialogs.open_file(self, self._start_dir())
        if path:
            self.open_paths([path])

    def open_folder_dialog(self) -> None:
        """File > Open folder."""
        path = self.dialogs.open_folder(self, self._start_dir())
        if path:
            self.open_paths([path])

    def open_demo(self) -> None:
        """File > Open demo: real B-scans."""
        self._open_bundled(demo_exam_path())

    def open_synthetic_demo(self) -> None:
        """File > Open demo: synthetic volumes."""
        self._open_bundled(synthetic_demo_path())

    def _open_bundled(self, path: Path) -> None:
        if not path.exists():
            self.dialogs.error(self, "Demo exam missing", f"{path}: the bundled demo exam is not installed.")
            return
        self.open_paths([path], remember=False)

    def _start_dir(self) -> str:
        recent = self.settings.recent
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent:
            act = self.recent_menu.addAction(path)
            act.triggered.connect(lambda _=False, p=path: self.open_paths([p]))
        if not self.settings.recent:
            self.recent_menu.addAction("(none)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list", self.settings.clear_recent)

    def card_path(self) -> Path:
        """The session's model card, else the one the settings name, else the bundled demo model."""
        if self.model_override:
            return Path(self.model_override)
        return Path(self.settings.model_card) if self.settings.model_card else default_card_path()

    def _get_screener(self, key: tuple[str, int]) -> Any:
        """The cached screener for (card path, threads); built in the worker thread when needed."""
        with self._screener_lock:
            if self._screener is None or self._screener_key != key:
                self._screener = self.screener_factory(Path(key[0]), key[1] or None)
                self._screener_key = key
            return self._screener

    def open_paths(self, paths: Sequence[str | Path], remember: bool = True) -> bool:
        """Read and screen files/folders in the background; False if another job is running."""
        if self.job is not None:
            self.dialogs.info(self, "Busy", "Another job is still running. Wait for it or cancel it (Esc).")
            return False
        paths = [Path(p) for p in paths]
        try:
            key = (str(self.card_path()), self.settings.threads)
        except Exception as e:  # noqa: BLE001 - no engine / no card: tell the user, don't crash
            self.dialogs.error(self, "No model", f"Cannot find a model to screen with: {e}")
            return False
        if remember:
            for p in paths:
                self.settings.add_recent(p)

        known = frozenset(self.state.identities)
        names = ", ".join(p.name for p in paths[:3]) + (" \u2026" if len(paths) > 3 else "")
        job = Job(lambda progress, cancel: None, f"open {names}")

        def work(progress, cancel) -> LoadOutcome:
            get = lambda: self._get_screener(key)  # noqa: E731
            return load_and_screen(paths, get, progress, cancel, known=known, on_eye=job.emit_partial)

        job.fn = work
        job.signals.partial.connect(lambda piece: self._eye_screened(job, piece))
        self._job_eyes = 0
        self._run_job(job, f"Opening {names}", self._load_finished, self._load_cancelled)
        return True

    def _eye_screened(self, job: Job, piece: ScreenedEye) -> None:
        """One volume of the running batch is screened: list it now (selected if nothing else is)."""
        if job is not self.job:
            return
        had_eye = self.state.current_eye is not None
        self.state.add_eye(piece.eye, piece.card, piece.identity)
        self._job_eyes += 1
        if not had_eye and self.state.current_eye is not None:
            self.viewer.view.setFocus()

    def _load_cancelled(self, _payload: None) -> None:
        n = self._job_eyes
        self.status_text.setText(
            f"Cancelled: kept the {_plural(n, 'eye')} screened before Cancel" if n else "Cancelled: nothing was opened"
        )

    def _load_finished(self, outcome: LoadOutcome) -> None:
        seconds = time.monotonic() - self._job_started
        n_eyes = sum(len(e.eyes) for e in outcome.exams)
        bad = f"{_plural(len(outcome.errors), 'file')} could not be read"
        again = f"{_plural(len(outcome.duplicates), 'volume')} already open (not listed again)"
        if outcome.n_volumes:
            self.status_text.setText(
                f"Screened {_plural(outcome.n_volumes, 'volume')} "
                f"({_plural(n_eyes, 'eye')}) in {seconds:.1f} s"
                + (f"; {again}" if outcome.duplicates else "")
                + (f"; {bad}" if outcome.errors else "")
            )
        elif outcome.duplicates:
            self.status_text.setText(f"Nothing new: {again}" + (f"; {bad}" if outcome.errors else ""))
            existing = self.state.find_identity(outcome.duplicates[0])
            if existing is not None:  # the user asked for it: show the one already listed
                self.state.select_eye(existing)
        else:
            self.status_text.setText(f"Nothing opened: {bad}" if outcome.errors else "Nothing opened")
        if outcome.errors:
            shown = "\n".join(_error_line(e) for e in outcome.errors[:8])
            more = f"\n\u2026 and {len(outcome.errors) - 8} more (Show Details)" if len(outcome.errors) > 8 else ""
            ok = (
                f"\n\nThe other files were opened ({_plural(outcome.n_volumes, 'volume')})."
                if outcome.n_volumes
                else ""
            )
            self.dialogs.error(
                self,
                "Some files could not be read",
                f"{bad[0].upper()}{bad[1:]}:\n\n{shown}{more}{ok}",
                "\n".join(str(e) for e in outcome.errors),
            )
        elif not outcome.exams and not outcome.duplicates:
            self.dialogs.info(self, "Nothing found", "No OCT volume was found there.")

    # -- export ------------------------------------------------------------------------------
    def default_report_path(self, deidentified: bool = False) -> Path:
        """'<export folder>/<patient id>_<study date>_oct-report.pdf', or 'exam-001_oct-report.pdf' when
        de-identified: the names ``octscreen screen`` gives (``core.screening.report_stem``)."""
        exam = self.state.current_exam
        folder = Path(self.settings.export_dir) if self.settings.export_dir else Path.home()
        pid, date = (exam.patient.patient_id, exam.study.study_date) if exam is not None else ("", "")
        return folder / f"{report_stem(pid, date, deidentify=deidentified)}.pdf"

    def export_dialog(self) -> None:
        """File > Export report: ask, confirm overwrite, write in the background, offer to open."""
        loaded = self.state.current_loaded
        if loaded is None:
            self.dialogs.info(self, "Export report", "Open and select an exam first.")
            return
        if self.job is not None:
            self.dialogs.info(self, "Busy", "Another job is still running. Wait for it or cancel it (Esc).")
            return
        if not self._confirm_unsigned(loaded.exam):
            self.status_text.setText("Export cancelled: nothing was written")
            return
        request = self.dialogs.export_request(
            self,
            self.default_report_path(),
            self.settings.deidentify,
            self.settings.dicom,
            self.default_report_path(deidentified=True),
            self.settings.operator,
        )
        if request is None:
            return
        self.settings.deidentify, self.settings.dicom = request.deidentify, request.dicom
        self.settings.operator = request.operator
        existing = [p for p in request.targets if p.exists()]
        if existing:
            names = "\n".join(str(p) for p in existing)
            if not self.dialogs.confirm(
                self, "Replace existing file?", f"These files already exist:\n\n{names}\n\nReplace them?"
            ):
                self.status_text.setText("Export cancelled: nothing was written")
                return
        self.export(request, overwrite=bool(existing))

    def compare_visits(self) -> FollowUpWindow | None:
        """View > Compare visits: the current eye beside an earlier visit of the same patient's eye."""
        visits = main_window_visits(self.state, self.state.current_eye)
        if len(visits) < 2:
            self.dialogs.info(
                self,
                "Compare visits",
                "Open another exam of this patient's eye first: a follow-up needs two visits of the same "
                "patient ID and eye (an eye that is not named cannot be matched).",
            )
            return None
        if self.followup is not None:
            self.followup.close()
        self.followup = FollowUpWindow(visits, self.state.current_eye, self)
        self.followup.show()
        return self.followup

    def _confirm_unsigned(self, exam) -> bool:
        """Warn before exporting an exam with eyes no clinician signed; True to go on."""
        unsigned = [e for e in exam.eyes if self.state.signoff(e) is None]
        if not unsigned:
            return True
        names = ", ".join(str(e.eye.laterality.value) for e in unsigned)
        return self.dialogs.confirm(
            self,
            "Unsigned eyes",
            f"{_plural(len(unsigned), 'eye')} of this exam ({names}) "
            f"{'is' if len(unsigned) == 1 else 'are'} not signed by a clinician. The report will say "
            "NOT SIGNED for them.\n\nExport anyway?",
        )

    def export(self, request: ExportRequest, overwrite: bool = False) -> bool:
        """Write the selected exam's report as ``request`` says (no questions asked)."""
        loaded = self.state.current_loaded
        if loaded is None or self.job is not None:
            return False
        exam, card = loaded.exam, loaded.card
        institution, logo = self.settings.institution, self.settings.logo
        signoffs = self.state.signoffs_of(exam)

        def work(progress, cancel) -> list[Path]:
            return export_report(
                request,
                exam,
                card,
                institution=institution,
                logo=logo or None,
                signoffs=signoffs,
                overwrite=overwrite,
                progress=progress,
                cancel=cancel,
            )

        self._run_job(Job(work, "export report"), f"Exporting {request.pdf_path.name}", self._export_finished)
        return True

    def _export_finished(self, written: list[Path]) -> None:
        self.pacs.note_export(written)  # Send to PACS sends these
        self.status_text.setText("Report written: " + ", ".join(str(p) for p in written))
        if written and self.dialogs.confirm(
            self, "Report written", "Written:\n\n" + "\n".join(str(p) for p in written) + "\n\nOpen the PDF now?"
        ):
            self.dialogs.open_externally(written[0])

    # -- jobs --------------------------------------------------------------------------------
    def _run_job(
        self,
        job: Job,
        text: str,
        on_finished: Callable[[Any], None],
        on_cancelled: Callable[[None], None] | None = None,
    ) -> None:
        self.job = job
        self._job_started = time.monotonic()
        cancelled = on_cancelled or self._job_cancelled
        job.signals.progress.connect(self._on_progress)
        job.signals.finished.connect(lambda result: self._job_ended(job, on_finished, result))
        job.signals.failed.connect(lambda exc, tb: self._job_ended(job, self._job_failed, (exc, tb)))
        job.signals.cancelled.connect(lambda: self._job_ended(job, cancelled, None))
        self.status_text.setText(text + "\u2026")
        self._set_busy(True)
        job.start(self.pool)

    def _job_ended(self, job: Job, handler: Callable[[Any], None], payload: Any) -> None:
        if job is not self.job:
            return
        self.job = None
        self._set_busy(False)
        try:
            handler(payload)
        finally:
            self._update_actions()

    def _job_failed(self, payload: tuple[BaseException, str]) -> None:
        exc, tb = payload
        self.status_text.setText("Failed: " + str(exc).splitlines()[0] if str(exc) else "Failed")
        if isinstance(exc, ModelCardError):
            self.dialogs.error(self, "Cannot load the model", f"{exc}\n\nChoose a model card in Settings (Ctrl+,).", tb)
        elif isinstance(exc, InputError):
            self.dialogs.error(self, "Cannot read the file", str(exc), tb)
        else:
            self.dialogs.error(
                self,
                "Something went wrong",
                f"{type(exc).__name__}: {exc}\n\nThe app keeps running; the details below help the developers.",
                tb,
            )

    def _job_cancelled(self, _payload: None) -> None:
        self.status_text.setText("Cancelled: nothing was changed")

    def _on_progress(self, done: int, total: int, message: str) -> None:
        if self.job is None:
            return
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(done, max(total, 1)))
        if message:
            self.status_text.setText(message)

    def _set_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.cancel_button.setEnabled(busy)
        self.act_cancel.setEnabled(busy)
        if busy:
            self.progress.setRange(0, 0)  # busy indicator until the first progress report
        self._update_actions()

    def cancel_job(self) -> None:
        """Ask the running job to stop (the status bar says when it did)."""
        if self.job is not None:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.status_text.setText("Cancelling\u2026")

    # -- other commands ----------------------------------------------------------------------
    def close_exam(self) -> None:
        """Close the selected exam."""
        if self.state.current_exam is not None:
            self.state.remove_exam(self.state.exam_index)

    def step_eye(self, delta: int) -> None:
        """Select the next (delta=1) or previous eye across all exams."""
        eyes = [(ei, yi) for ei, le in enumerate(self.state.exams) for yi in range(len(le.exam.eyes))]
        if not eyes:
            return
        cur = (self.state.exam_index, self.state.eye_index)
        i = eyes.index(cur) if cur in eyes else -1
        self.state.select(*eyes[(i + delta) % len(eyes)])

    def settings_dialog(self) -> None:
        """Edit and persist the settings; a new model card or thread count reloads the model."""
        s = self.settings
        values = self.dialogs.settings(
            self, SettingsValues(s.model_card, s.institution, s.logo, s.export_dir, s.threads)
        )
        if values is None:
            return
        if values.model_card:
            try:
                load_card(values.model_card)
            except ModelCardError as e:
                self.dialogs.error(self, "Not a usable model card", str(e))
                return
        if values.logo and not Path(values.logo).is_file():
            self.dialogs.error(self, "Logo not found", f"{values.logo}: no such image file; settings not saved.")
            return
        s.model_card, s.institution, s.logo = values.model_card, values.institution, values.logo
        s.export_dir, s.threads = values.export_dir, values.threads
        s.sync()
        self.status_text.setText("Settings saved")

    def current_card(self) -> tuple[ModelCard | None, str]:
        """The card of the selected exam, else the configured one (and why it could not be read)."""
        if self.state.current_loaded is not None:
            return self.state.current_loaded.card, ""
        try:
            return load_card(self.card_path()), ""
        except Exception as e:  # noqa: BLE001 - shown in the About box
            return None, str(e)

    def about_dialog(self) -> None:
        """Help > About: version and the model card summary."""
        card, problem = self.current_card()
        self.dialogs.about(self, card, problem)

    # -- Qt events ---------------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt API)
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt API)
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            QTimer.singleShot(0, lambda: self.open_paths(paths))

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if self._first_show:  # once laid out (and framed): fit the screen, then default or check the docks
            default, self._first_show = self._first_show == "default", ""
            QTimer.singleShot(0, lambda: self._settle_layout(default))

    # -- layout ------------------------------------------------------------------------------
    def docks(self) -> list[QDockWidget]:
        """The window's docks: worklist, en-face, eye summary."""
        return [self.browser_dock, self.enface_dock, self.summary_dock]

    def _restore_layout(self) -> None:
        """The saved window geometry and docks, if any, fitted to the screen (``fit_to_screen``); a
        fresh install (or a state this Qt cannot read) gets the default layout when first shown."""
        self._default_state = self.saveState()  # the docks as built: Reset layout goes back to these
        self.resize(self.default_size())
        geometry, state = self.settings.window_geometry(), self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        restored = state is not None and self.restoreState(state)
        self._first_show = "check" if restored else "default"
        self.fit_to_screen()

    def _settle_layout(self, default: bool) -> None:
        self.fit_to_screen()  # again, now that the window frame is known
        if default:
            self._arrange_default_docks()
        else:
            self.repair_layout()

    def _screen(self) -> QScreen | None:
        """The screen under the window's centre, else the primary screen."""
        return QGuiApplication.screenAt(self.frameGeometry().center()) or QGuiApplication.primaryScreen()

    def _frame_extra(self) -> QSize:
        """What the window frame adds to the window's size (nothing before the first show)."""
        return self.frameGeometry().size() - self.size()

    def default_size(self, screen: QScreen | None = None) -> QSize:
        """The size a fresh install opens at: DEFAULT_WINDOW, shrunk to the available geometry of
        ``screen`` (default: the window's) less the window frame, but not below the window's minimum."""
        screen = screen or self._screen()
        if screen is None:
            return QSize(DEFAULT_WINDOW)
        fit = DEFAULT_WINDOW.boundedTo(screen.availableGeometry().size() - self._frame_extra())
        return fit.expandedTo(self.minimumSizeHint())

    def fit_to_screen(self) -> bool:
        """Keep the window inside the available geometry of the screen it lands on (the one under its
        centre): no larger (where its minimum size allows), moved in where it sticks out; on no screen
        at all, centred on the primary screen. True if it had to move or shrink. A maximized or
        full-screen window is left to the window manager."""
        if self.isMaximized() or self.isFullScreen():
            return False
        frame = self.frameGeometry()
        screen = QGuiApplication.screenAt(frame.center())
        lost = screen is None
        screen = screen or QGuiApplication.primaryScreen()
        if screen is None:
            return False
        avail, extra = screen.availableGeometry(), self._frame_extra()
        size = self.size().boundedTo(avail.size() - extra).expandedTo(self.minimumSizeHint())
        target = QRect(frame.topLeft(), size + extra)
        if lost:
            target.moveCenter(avail.center())
        target.moveLeft(max(avail.left(), min(target.left(), avail.right() + 1 - target.width())))
        target.moveTop(max(avail.top(), min(target.top(), avail.bottom() + 1 - target.height())))
        if size == self.size() and target.topLeft() == frame.topLeft():
            return False
        log.info(
            "window %dx%d at (%d, %d) fitted to the screen %s %dx%d at (%d, %d)",
            *(frame.width(), frame.height(), frame.x(), frame.y(), screen.name()),
            *(avail.width(), avail.height(), avail.x(), avail.y()),
        )
        self.resize(size)
        self.move(target.topLeft())
        return True

    def layout_problems(self) -> list[str]:
        """What makes the shown layout unusable: a shown dock smaller than its minimum usable size (its
        own minimum size, at least USABLE_DOCK), or a floating dock larger than every screen or not on
        one. Docks the user closed, and tabs behind another dock, are not on show and not counted."""
        problems: list[str] = []
        screens = [s.availableGeometry() for s in QGuiApplication.screens()]
        for dock in self.docks():
            if not self.dock_shown(dock):
                continue
            name, rect = dock.windowTitle(), dock.frameGeometry() if dock.isFloating() else dock.geometry()
            need = dock.minimumSizeHint().expandedTo(USABLE_DOCK)
            if rect.width() < need.width() or rect.height() < need.height():
                problems.append(f"{name} {rect.width()}x{rect.height()} (needs {need.width()}x{need.height()})")
            elif dock.isFloating() and not any(_fits_on(rect, a, need) for a in screens):
                big = all(rect.width() > a.width() or rect.height() > a.height() for a in screens)
                where = "larger than the screen" if big else "off-screen"
                problems.append(f"{name} floating {where}: {rect.width()}x{rect.height()} at ({rect.x()}, {rect.y()})")
        return problems

    def dock_shown(self, dock: QDockWidget) -> bool:
        """Whether ``dock`` is on show: open, and floating or docked in view (a tab behind another dock
        is moved out of the window, not hidden)."""
        return dock.isVisible() and (dock.isFloating() or self.rect().intersects(dock.geometry()))

    def repair_layout(self) -> bool:
        """A restored layout with a collapsed or lost dock (``layout_problems``: saved on another
        screen) becomes the default layout (logged, and the status bar says so). True if it did."""
        problems = self.layout_problems()
        if not problems:
            return False
        log.warning("the saved layout does not fit this screen (%s): default layout instead", "; ".join(problems))
        self.reset_layout()
        self.status_text.setText("The saved layout did not fit this screen: default layout restored")
        return True

    def reset_layout(self) -> None:
        """View > Reset layout: the docks, the centre splitter and the window size of a fresh install,
        sized to the current screen and centred on it; saved at once."""
        if self.isMaximized() or self.isFullScreen():
            self.showNormal()
        screen = self._screen()
        size = self.default_size(screen)
        self.resize(size)
        if screen is not None:
            frame = QRect(QPoint(0, 0), size + self._frame_extra())
            frame.moveCenter(screen.availableGeometry().center())
            self.move(frame.topLeft())
        self._arrange_default_docks()
        self.status_text.setText("Layout reset")
        QTimer.singleShot(0, self._save_layout)  # once docks shown again have their sizes

    def _save_layout(self) -> None:
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.sync()

    def _arrange_default_docks(self) -> None:
        """The docks as built (worklist and en-face left, eye summary right, none floating or closed,
        the toolbar shown), the en-face a tab behind the worklist in a window under COMPACT_HEIGHT,
        sized to the window; the strip chart a fifth of the centre, between its minimum and preferred
        heights."""
        self.restoreState(self._default_state)
        for dock in self.docks():
            dock.setFloating(False)
            dock.show()
        for bar in self.findChildren(QToolBar):
            bar.show()
        compact = self.height() < COMPACT_HEIGHT
        if compact:
            self.tabifyDockWidget(self.browser_dock, self.enface_dock)
            self.browser_dock.raise_()
        self._size_docks(vertical=not compact)
        centre = self.centralWidget()
        if isinstance(centre, QSplitter):
            total = sum(centre.sizes())
            chart = min(max(round(0.2 * total), self.chart.minimumHeight()), self.chart.sizeHint().height())
            centre.setSizes([total - chart, chart])

    def _size_docks(self, vertical: bool = True) -> None:
        """Worklist and summary get room for their columns; on a narrow screen the centre keeps its
        minimum width and the summary its own, the worklist what is left."""
        w = self.width()
        left, right = min(max(round(0.37 * w), 400), 520), min(max(round(0.23 * w), 290), 380)
        gap = self.style().pixelMetric(QStyle.PixelMetric.PM_DockWidgetSeparatorExtent, None, self)
        room = w - self.centralWidget().minimumSizeHint().width() - 2 * gap
        if left + right > room:
            right = self.summary_dock.minimumSizeHint().width()
            left = max(room - right, self.browser_dock.minimumSizeHint().width())
        self.resizeDocks([self.browser_dock, self.summary_dock], [left, right], Qt.Orientation.Horizontal)
        if vertical:
            h = self.height()
            self.resizeDocks(
                [self.browser_dock, self.enface_dock], [round(0.55 * h), round(0.45 * h)], Qt.Orientation.Vertical
            )

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt API)
        self._save_layout()
        self.pacs.shutdown()
        if self.job is not None:
            self.job.cancel()
            self.job.done.wait(5.0)
        super().closeEvent(event)
        if self._gc_held and event.isAccepted():
            self._gc_held = False
            gcguard.release()


def _fits_on(rect: QRect, screen: QRect, need: QSize) -> bool:
    """A floating window no larger than ``screen`` with at least ``need`` of it on the screen."""
    seen = screen & rect
    return (
        rect.width() <= screen.width()
        and rect.height() <= screen.height()
        and seen.width() >= min(need.width(), rect.width())
        and seen.height() >= min(need.height(), rect.height())
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _error_line(e: InputError) -> str:
    """'• name.dcm: what is wrong' plus the folder on its own line (messages name the file)."""
    if e.path is None:
        return f"\u2022 {e}"
    return f"\u2022 {e.path.name}: {e.problem}\n    in {e.path.parent}"


def install_excepthook(dialogs: Dialogs, parent: Callable[[], QWidget | None]) -> Callable[..., None]:
    """Route uncaught exceptions on the GUI thread to the log and an error dialog (never a crash)."""
    showing = threading.Event()

    def hook(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("uncaught exception:\n%s", text)
        if showing.is_set():
            return
        showing.set()
        try:
            dialogs.error(
                parent(),
                "Unexpected error",
                f"{exc_type.__name__}: {exc}\n\nThe app keeps running; the details below help the developers.",
                text,
            )
        except Exception:  # noqa: BLE001 - the dialog itself failed: the log has it
            log.exception("could not show the error dialog")
        finally:
            showing.clear()

    sys.excepthook = hook
    return hook
