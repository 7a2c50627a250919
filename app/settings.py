"""Persistent user settings (QSettings, organisation "OCT Screen"): model card, report institution
and logo, export folder, threads, recent files and the window layout."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

__all__ = ["APPLICATION", "MAX_RECENT", "ORGANISATION", "AppSettings"]

ORGANISATION = "OCT Screen"
APPLICATION = "OCT Screen"
MAX_RECENT = 10


class AppSettings:
    """Typed access to the app's QSettings.

    ``AppSettings()`` uses the platform's native store; tests pass
    ``QSettings(path, QSettings.IniFormat)`` so nothing leaks into the user's settings.
    """

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings if qsettings is not None else QSettings(ORGANISATION, APPLICATION)

    def _str(self, key: str, default: str = "") -> str:
        value = self.q.value(key, default)
        return str(value) if value is not None else default

    # -- model and report --------------------------------------------------------------------
    @property
    def model_card(self) -> str:
        """Path of the model card to screen with; '' means the bundled demo model."""
        return self._str("model/card")

    @model_card.setter
    def model_card(self, value: str | Path) -> None:
        self.q.setValue("model/card", str(value) if value else "")

    @property
    def threads(self) -> int:
        """CPU threads for the model (0: let the runtime decide)."""
        try:
            return max(0, int(self.q.value("model/threads", 0)))
        except (TypeError, ValueError):
            return 0

    @threads.setter
    def threads(self, value: int) -> None:
        self.q.setValue("model/threads", int(value))

    @property
    def institution(self) -> str:
        """Institution name printed in the report header."""
        return self._str("report/institution")

    @institution.setter
    def institution(self, value: str) -> None:
        self.q.setValue("report/institution", value)

    @property
    def logo(self) -> str:
        """Path of the institution logo for reports ('' for none)."""
        return self._str("report/logo")

    @logo.setter
    def logo(self, value: str | Path) -> None:
        self.q.setValue("report/logo", str(value) if value else "")

    @property
    def export_dir(self) -> str:
        """Default folder for exported reports ('' : the home folder)."""
        return self._str("report/export_dir")

    @export_dir.setter
    def export_dir(self, value: str | Path) -> None:
        self.q.setValue("report/export_dir", str(value) if value else "")

    @property
    def deidentify(self) -> bool:
        """Last choice of the export dialog's de-identify option."""
        return str(self.q.value("report/deidentify", "false")).lower() in ("true", "1")

    @deidentify.setter
    def deidentify(self, value: bool) -> None:
        self.q.setValue("report/deidentify", bool(value))

    @property
    def dicom(self) -> bool:
        """Last choice of the export dialog's DICOM Encapsulated PDF option."""
        return str(self.q.value("report/dicom", "false")).lower() in ("true", "1")

    @dicom.setter
    def dicom(self, value: bool) -> None:
        self.q.setValue("report/dicom", bool(value))

    # -- recent files ------------------------------------------------------------------------
    @property
    def recent(self) -> list[str]:
        """Recently opened files and folders, newest first."""
        value = self.q.value("files/recent", [])
        if isinstance(value, str):
            value = [value] if value else []
        return [str(v) for v in (value or [])]

    def add_recent(self, path: str | Path) -> None:
        """Put ``path`` at the top of the recent list (no duplicates, at most MAX_RECENT)."""
        p = str(Path(path).resolve())
        items = [p] + [r for r in self.recent if r != p]
        self.q.setValue("files/recent", items[:MAX_RECENT])

    def clear_recent(self) -> None:
        """Forget the recent files."""
        self.q.setValue("files/recent", [])

    # -- window layout -----------------------------------------------------------------------
    def window_geometry(self) -> QByteArray | None:
        """Saved QMainWindow geometry, if any."""
        value = self.q.value("window/geometry")
        return value if isinstance(value, QByteArray) else None

    def window_state(self) -> QByteArray | None:
        """Saved QMainWindow dock/toolbar state, if any."""
        value = self.q.value("window/state")
        return value if isinstance(value, QByteArray) else None

    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        """Remember the window layout for the next start."""
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)

    def sync(self) -> None:
        """Write pending changes to disk."""
        self.q.sync()
