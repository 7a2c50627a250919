"""Widgets of the desktop app. Each one observes and commands :class:`app.widgets.state.ViewerState`."""

import app.qtguard  # noqa: F401  (before any Qt call: PySide6 6.12 on Python 3.11 drops references to None)
