"""Helpers of the GUI tests: dialogs that answer from a script and record what was asked, and
waiting for the window's background job. The ``settings``, ``window`` and ``exam_dir`` fixtures that
use them are in tests/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.dialogs import Dialogs, SettingsValues  # noqa: E402
from app.workers import ExportRequest  # noqa: E402

__all__ = ["JOB_TIMEOUT_MS", "RecordingDialogs", "open_and_wait", "wait_idle"]

JOB_TIMEOUT_MS = 60_000


class RecordingDialogs(Dialogs):
    """Answers every question from its attributes and records what was asked."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str, str]] = []
        self.infos: list[tuple[str, str]] = []
        self.confirms: list[tuple[str, str]] = []
        self.confirm_answers: list[bool] = []  # consumed in order; default False
        self.export_answer: ExportRequest | None = None
        self.settings_answer: SettingsValues | None = None
        self.opened: list[Path] = []
        self.about_cards: list = []

    def error(self, parent, title, text, details=""):
        self.errors.append((title, text, details))

    def info(self, parent, title, text):
        self.infos.append((title, text))

    def confirm(self, parent, title, text):
        self.confirms.append((title, text))
        return self.confirm_answers.pop(0) if self.confirm_answers else False

    def export_request(self, parent, default_path, deidentify, dicom, anonymous_path=None, operator=""):
        self.export_defaults = (default_path, anonymous_path)
        self.export_operator = operator
        return self.export_answer

    def settings(self, parent, current):
        return self.settings_answer

    def about(self, parent, card, card_problem=""):
        self.about_cards.append(card)

    def open_externally(self, path):
        self.opened.append(Path(path))
        return True


def wait_idle(qtbot, window) -> None:
    qtbot.waitUntil(lambda: window.job is None, timeout=JOB_TIMEOUT_MS)


def open_and_wait(qtbot, window, paths) -> None:
    assert window.open_paths(paths)
    wait_idle(qtbot, window)
