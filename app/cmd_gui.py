"""``octscreen gui [PATH] [--demo]``: start the desktop app (also ``python -m app``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["create_app", "register", "run"]

log = logging.getLogger(__name__)

ICON = Path(__file__).resolve().parent / "resources" / "octscreen.svg"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``gui`` subcommand."""
    p = subparsers.add_parser(
        "gui",
        help="start the desktop app",
        description="Start the OCT Screen desktop app, optionally opening files or folders.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="OCT files or folders to open and screen")
    p.add_argument("--demo", action="store_true", help="open the bundled demo exam")
    p.add_argument("--model", metavar="CARD", help="model card to use for this session (default: from Settings)")
    p.set_defaults(func=run)


def create_app(argv: list[str] | None = None):
    """The QApplication (created once), themed, with high-DPI rounding passed through."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QIcon
    from PySide6.QtWidgets import QApplication

    from app.settings import APPLICATION, ORGANISATION
    from app.widgets.style import apply_theme

    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(argv or [sys.argv[0]])
        app.setOrganizationName(ORGANISATION)
        app.setApplicationName(APPLICATION)
        app.setApplicationDisplayName(APPLICATION)
        app.setWindowIcon(QIcon(str(ICON)))
        apply_theme(app)
    return app


def missing_system_library(platform: str | None = None, system: str | None = None) -> str:
    """Why Qt's X11 plugin cannot start here, or ''. Qt >= 6.5 needs libxcb-cursor for X11 and
    otherwise aborts the whole process with a cryptic message; we say what to install instead."""
    import ctypes.util
    import os
    import sys

    system = system or sys.platform
    platform = platform if platform is not None else os.environ.get("QT_QPA_PLATFORM", "")
    if not system.startswith("linux") or (platform and not platform.startswith("xcb")):
        return ""
    if not platform and not os.environ.get("DISPLAY"):
        return ""  # Wayland or no screen: Qt picks another plugin
    if ctypes.util.find_library("xcb-cursor") is None:
        return (
            "the Qt X11 plugin needs the system library libxcb-cursor0: install it "
            "(Debian/Ubuntu: sudo apt install libxcb-cursor0; Fedora: sudo dnf install xcb-util-cursor)"
        )
    return ""


def run(args: argparse.Namespace) -> int:
    """Start the app and run its event loop; returns the exit code."""
    problem = missing_system_library()
    if problem:
        print(f"octscreen gui: {problem}", file=sys.stderr)
        return 2
    app = create_app()
    from app.main_window import MainWindow, install_excepthook
    from app.settings import AppSettings

    settings = AppSettings()
    window = MainWindow(settings)
    if getattr(args, "model", None):
        window.model_override = str(Path(args.model).resolve())
    install_excepthook(window.dialogs, lambda: window)
    window.show()
    paths = [Path(p) for p in getattr(args, "paths", []) or []]
    if getattr(args, "demo", False):
        window.open_demo()
    elif paths:
        window.open_paths(paths)
    return int(app.exec())
