"""Every dialog the app shows, behind one injectable object.

The main window never calls ``QMessageBox`` or ``QFileDialog`` directly: it asks its
:class:`Dialogs`. Tests hand the window a subclass that records the questions and answers them,
so no modal dialog ever blocks a test. The concrete dialogs (settings, export, about, keyboard
shortcuts) live here too.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.workers import ExportRequest
from core import __version__
from core.modelcard import ModelCard

__all__ = ["SHORTCUTS", "AboutDialog", "Dialogs", "ExportDialog", "SettingsDialog", "SettingsValues"]

log = logging.getLogger(__name__)

OCT_FILTER = (
    "OCT files (*.dcm *.DCM *.dicom *.png *.jpg *.jpeg *.tif *.tiff *.e2e *.vol *.fds *.fda *.img "
    "DICOMDIR);;All files (*)"
)

# (keys, what they do): shown in Help > Keyboard shortcuts and used as tooltips.
SHORTCUTS: list[tuple[str, str]] = [
    ("Ctrl+O", "Open an OCT file"),
    ("Ctrl+Shift+O", "Open a folder of OCT files"),
    ("Ctrl+D", "Open the bundled demo exam (real B-scans)"),
    ("Ctrl+Shift+D", "Open the synthetic demo exam (simulated volumes of both eyes)"),
    ("Ctrl+E", "Export the report of the selected exam (PDF, optionally DICOM)"),
    ("Ctrl+Shift+P", "Query a PACS and retrieve an exam"),
    ("Ctrl+Shift+E", "Send the selected exam's DICOM report and SR to a PACS"),
    ("Ctrl+W", "Close the selected exam"),
    ("Ctrl+,", "Settings"),
    ("Esc", "Cancel the running job"),
    ("\u2190 \u2192 / \u2191 \u2193 / mouse wheel", "Previous / next B-scan (in the viewer)"),
    ("Page Up / Page Down", "Jump 5 B-scans"),
    ("Home / End", "First / last B-scan"),
    ("H", "Heatmap overlay on / off"),
    ("S", "Side by side: the B-scan without and with the heatmap"),
    ("[ / ]", "Heatmap less / more opaque"),
    ("C", "Next heatmap class (auto follows each B-scan's prediction)"),
    ("Ctrl+wheel, + / -, Ctrl++ / Ctrl+-", "Zoom in / out; drag to pan"),
    ("F", "Fit the B-scan to the window"),
    ("Right-drag", "Contrast (left / right) and brightness (up / down)"),
    ("R", "Reset contrast and brightness"),
    ("Ctrl+Down / Ctrl+Up", "Next / previous eye"),
    ("Ctrl+Shift+V", "Compare visits: two visits of this eye side by side"),
    ("F1", "Keyboard shortcuts"),
    ("Ctrl+Q", "Quit"),
]


@dataclass
class SettingsValues:
    """The editable settings, as the settings dialog returns them."""

    model_card: str = ""
    institution: str = ""
    logo: str = ""
    export_dir: str = ""
    threads: int = 0


class Dialogs:
    """Modal questions and messages. Override methods in tests; every method returns plain data."""

    @staticmethod
    def error_box(parent: QWidget | None, title: str, text: str, details: str = "") -> QMessageBox:
        """The error message box (not yet shown)."""
        box = QMessageBox(QMessageBox.Icon.Critical, title, text, QMessageBox.StandardButton.Ok, parent)
        box.setTextFormat(Qt.TextFormat.PlainText)  # file names may contain '<' or '&'
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box.setStyleSheet("QLabel#qt_msgbox_label { min-width: 460px; }")
        if details:
            box.setDetailedText(details)
        return box

    def error(self, parent: QWidget | None, title: str, text: str, details: str = "") -> None:
        """An error message (``details``: the full list or traceback, behind 'Show Details')."""
        self.error_box(parent, title, text, details).exec()

    def info(self, parent: QWidget | None, title: str, text: str) -> None:
        """An information message."""
        QMessageBox.information(parent, title, text)

    def confirm(self, parent: QWidget | None, title: str, text: str) -> bool:
        """A yes/no question; True for yes (the default button is No)."""
        answer = QMessageBox.question(
            parent,
            title,
            text,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def open_file(self, parent: QWidget | None, start: str) -> str:
        """Pick an OCT file; '' when cancelled."""
        path, _ = QFileDialog.getOpenFileName(parent, "Open OCT file", start, OCT_FILTER)
        return path

    def open_folder(self, parent: QWidget | None, start: str) -> str:
        """Pick a folder; '' when cancelled."""
        return QFileDialog.getExistingDirectory(parent, "Open folder of OCT files", start)

    def export_request(
        self,
        parent: QWidget | None,
        default_path: Path,
        deidentify: bool,
        dicom: bool,
        anonymous_path: Path | None = None,
        operator: str = "",
    ) -> ExportRequest | None:
        """Ask where and how to export the report; None when cancelled. ``anonymous_path``: the
        default file name to use instead when the user ticks de-identify (no patient ID in it);
        ``operator``: the name the operator box starts with (the last one given)."""
        dlg = ExportDialog(default_path, deidentify, dicom, parent, anonymous_path, operator)
        return dlg.request() if dlg.exec() == QDialog.DialogCode.Accepted else None

    def settings(self, parent: QWidget | None, current: SettingsValues) -> SettingsValues | None:
        """Edit the settings; None when cancelled."""
        dlg = SettingsDialog(current, parent)
        return dlg.values() if dlg.exec() == QDialog.DialogCode.Accepted else None

    def about(self, parent: QWidget | None, card: ModelCard | None, card_problem: str = "") -> None:
        """The About box with the model card summary."""
        AboutDialog(card, card_problem, parent).exec()

    def shortcuts(self, parent: QWidget | None) -> None:
        """The keyboard shortcut list."""
        rows = "".join(f"<tr><td style='padding-right:18px'><b>{k}</b></td><td>{v}</td></tr>" for k, v in SHORTCUTS)
        box = QMessageBox(
            QMessageBox.Icon.NoIcon,
            "Keyboard shortcuts",
            f"<table>{rows}</table>",
            QMessageBox.StandardButton.Close,
            parent,
        )
        box.exec()

    def open_externally(self, path: Path) -> bool:
        """Open a written file in the system's viewer."""
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def _path_row(edit: QLineEdit, browse) -> QWidget:
    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(edit, 1)
    button = QPushButton("Browse\u2026")
    button.clicked.connect(browse)
    lay.addWidget(button)
    return row


class SettingsDialog(QDialog):
    """Model card, report institution and logo, export folder, threads."""

    def __init__(self, current: SettingsValues, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)
        form = QFormLayout()
        self.card = QLineEdit(current.model_card)
        self.card.setPlaceholderText("bundled demonstration model")
        self.card.setToolTip("Model card (.json) to screen with. Empty: the bundled demonstration model.")
        form.addRow("Model card:", _path_row(self.card, self._browse_card))
        self.threads = QSpinBox()
        self.threads.setRange(0, 64)
        self.threads.setSpecialValueText("automatic")
        self.threads.setValue(current.threads)
        self.threads.setToolTip("CPU threads used by the model (automatic: all cores).")
        form.addRow("Threads:", self.threads)
        self.institution = QLineEdit(current.institution)
        self.institution.setToolTip("Printed in the header of every report.")
        form.addRow("Institution:", self.institution)
        self.logo = QLineEdit(current.logo)
        self.logo.setToolTip("PNG or JPEG logo printed in the report header.")
        form.addRow("Logo:", _path_row(self.logo, self._browse_logo))
        self.export_dir = QLineEdit(current.export_dir)
        self.export_dir.setToolTip("Folder the export dialog starts in.")
        form.addRow("Export folder:", _path_row(self.export_dir, self._browse_export))
        _finish_form_dialog(self, form, QDialogButtonBox.StandardButton.Ok)

    def _browse_card(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model card", self.card.text(), "Model cards (*.json)")
        if path:
            self.card.setText(path)

    def _browse_logo(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Logo", self.logo.text(), "Images (*.png *.jpg *.jpeg)")
        if path:
            self.logo.setText(path)

    def _browse_export(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export folder", self.export_dir.text())
        if path:
            self.export_dir.setText(path)

    def values(self) -> SettingsValues:
        """The edited values."""
        return SettingsValues(
            self.card.text().strip(),
            self.institution.text().strip(),
            self.logo.text().strip(),
            self.export_dir.text().strip(),
            self.threads.value(),
        )


class ExportDialog(QDialog):
    """Where to write the report, who referred and who scanned, de-identification, DICOM."""

    def __init__(
        self,
        default_path: Path,
        deidentify: bool,
        dicom: bool,
        parent: QWidget | None = None,
        anonymous_path: Path | None = None,
        operator: str = "",
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export screening report")
        self.setMinimumWidth(560)
        self._defaults = (str(default_path), str(anonymous_path or default_path))
        self.path = QLineEdit(self._defaults[1] if deidentify else self._defaults[0])
        self.path.setToolTip("The PDF report to write.")
        self.deid = QCheckBox("De-identify (no name, birth date or patient ID in the report)")
        self.deid.setChecked(deidentify)
        self.deid.toggled.connect(self._deid_toggled)
        self.dicom = QCheckBox("Also write DICOM for the PACS (the report as .dcm and the result as an SR)")
        self.dicom.setToolTip(
            "The report as a DICOM Encapsulated PDF (same name, .dcm) and the result as a DICOM Structured "
            "Report (<name>_sr.dcm), filed with the exam's patient and study"
        )
        self.dicom.setChecked(dicom)
        self.referring = QLineEdit()
        self.referring.setPlaceholderText("e.g. Dr. T. Reyes (GP)")
        self.referring.setToolTip("Who referred the patient for this scan: printed in the report's header")
        self.operator = QLineEdit(operator)
        self.operator.setPlaceholderText("who took the scan")
        self.operator.setToolTip("Who took the scan: printed in the report's header (remembered)")
        form = QFormLayout()
        form.addRow("Report file:", _path_row(self.path, self._browse))
        form.addRow("Referring clinician:", self.referring)
        form.addRow("Operator:", self.operator)
        form.addRow("", self.deid)
        form.addRow("", self.dicom)
        _finish_form_dialog(self, form, QDialogButtonBox.StandardButton.Save)

    def _deid_toggled(self, on: bool) -> None:
        """Swap the default file name so a de-identified report is not named after the patient."""
        if self.path.text() in self._defaults:
            self.path.setText(self._defaults[1] if on else self._defaults[0])

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Report file", self.path.text(), "PDF (*.pdf)", options=QFileDialog.Option.DontConfirmOverwrite
        )
        if path:
            self.path.setText(path if path.lower().endswith(".pdf") else path + ".pdf")

    def request(self) -> ExportRequest:
        """The export the user asked for."""
        text = self.path.text().strip()
        path = Path(text if text.lower().endswith(".pdf") else text + ".pdf")
        return ExportRequest(
            path,
            self.deid.isChecked(),
            self.dicom.isChecked(),
            referring=self.referring.text().strip(),
            operator=self.operator.text().strip(),
        )


class AboutDialog(QDialog):
    """Version, the model card summary and the demo warning."""

    def __init__(self, card: ModelCard | None, card_problem: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About OCT Screen")
        self.setMinimumWidth(520)
        lay = QVBoxLayout(self)
        title = QLabel(
            f"<h2>OCT Screen {__version__}</h2><p>Retinal OCT screening aid (normal / drusen / CNV / DME): "
            "a small distilled EfficientNet student of a larger teacher (KD-OCT), run locally.</p>"
            "<p>A screening aid; it does not replace examination by an eye-care professional.</p>"
        )
        title.setWordWrap(True)
        lay.addWidget(title)
        if card is not None:
            lines = [ln for ln in card.summary().splitlines() if ln != card.warning.upper()]  # the banner says it
            summary = QLabel(
                "<b>Model card</b><br>"
                + "<br>".join(html.escape(ln) for ln in lines)
                + (f"<br>{html.escape(str(card.path))}" if card.path else "")
            )
            summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            summary.setWordWrap(True)
            lay.addWidget(summary)
            if card.warning:
                warn = QLabel(card.warning.upper())
                warn.setObjectName("demoBanner")
                warn.setAlignment(Qt.AlignmentFlag.AlignCenter)
                lay.addWidget(warn)
        else:
            lay.addWidget(QLabel(f"<b>No model card loaded.</b> {card_problem}"))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)


def _finish_form_dialog(dialog: QDialog, form: QFormLayout, ok_button) -> None:
    """Lay out ``form`` above an OK-style button and Cancel, wired to accept / reject."""
    buttons = QDialogButtonBox(ok_button | QDialogButtonBox.StandardButton.Cancel)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    lay = QVBoxLayout(dialog)
    lay.addLayout(form)
    lay.addWidget(buttons)
