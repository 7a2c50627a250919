"""``octscreen gui [PATH] [--demo]``: start the desktop app (also ``python -m app``)."""

from __future__ import annotations

import argparse
import ctypes.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from app.cmd_pacs import quiet_pynetdicom

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
    # Qt loads when the GUI starts, not for `octscreen --help`, which imports this module
    from PySide6.QtCore import Qt  # noqa: PLC0415 (heavy: Qt)
    from PySide6.QtGui import QGuiApplication, QIcon  # noqa: PLC0415 (heavy: Qt)
    from PySide6.QtWidgets import QApplication  # noqa: PLC0415 (heavy: Qt)

    # PySide6 6.12 on Python 3.11 drops references to None; see there. Its import guards None: here,
    # before the first widget, and only when the GUI starts
    import app.qtguard  # noqa: F401, PLC0415 (an import side effect the GUI alone needs)
    from app.settings import APPLICATION, ORGANISATION  # noqa: PLC0415 (heavy: Qt)
    from app.widgets.style import apply_theme  # noqa: PLC0415 (heavy: Qt)

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


def _debian_package(soname: str) -> str:
    """libxcb-icccm.so.4 -> libxcb-icccm4, libxkbcommon-x11.so.0 -> libxkbcommon-x11-0 (Debian's rule)."""
    name, _, version = soname.partition(".so")
    version = version.lstrip(".").split(".")[0]
    return name + ("-" if name[-1:].isdigit() and version else "") + version


def _unresolved_libraries(files: list[str]) -> list[str]:
    """Shared libraries that ``ldd`` cannot find for ``files`` (empty where ldd is missing)."""
    if not shutil.which("ldd"):
        return []
    missing: list[str] = []
    for f in files:
        try:
            out = subprocess.run(["ldd", f], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            name, sep, where = line.strip().partition(" => ")
            if sep and where.strip() == "not found" and name not in missing:
                missing.append(name)
    return missing


def _xcb_plugin_files() -> list[str]:
    """Qt's X11 platform plugin and its xcb integration library, as shipped inside PySide6."""
    try:
        import PySide6  # noqa: PLC0415 (heavy: Qt)
    except ImportError:
        return []
    qt = Path(PySide6.__file__).parent / "Qt"
    return [
        str(p) for p in (qt / "plugins" / "platforms" / "libqxcb.so", qt / "lib" / "libQt6XcbQpa.so.6") if p.is_file()
    ]


def missing_system_library(platform: str | None = None, system: str | None = None) -> str:
    """Why Qt's X11 plugin cannot start here, or ''. Without a library it needs, Qt aborts the whole
    process with a cryptic message; we name every missing library and the package to install instead:
    the ones ``ldd`` cannot resolve for the xcb plugin (libxcb-icccm4, libxcb-keysyms1, ... on a bare
    Debian 12), and libxcb-cursor0, which Qt >= 6.5 needs for X11."""
    system = system or sys.platform
    platform = platform if platform is not None else os.environ.get("QT_QPA_PLATFORM", "")
    if not system.startswith("linux") or (platform and not platform.startswith("xcb")):
        return ""
    if not platform and not os.environ.get("DISPLAY"):
        return ""  # Wayland or no screen: Qt picks another plugin
    missing = _unresolved_libraries(_xcb_plugin_files())
    if ctypes.util.find_library("xcb-cursor") is None and not any(m.startswith("libxcb-cursor") for m in missing):
        missing.append("libxcb-cursor.so.0")
    if not missing:
        return ""
    packages = " ".join(_debian_package(m) for m in missing)
    return (
        f"the Qt X11 plugin needs system libraries that are missing here: {', '.join(missing)}; install them "
        f"(Debian/Ubuntu: sudo apt install {packages}; Fedora: sudo dnf install xcb-util-cursor xcb-util-wm "
        "xcb-util-keysyms xcb-util-image xcb-util-renderutil libxkbcommon-x11)"
    )


def run(args: argparse.Namespace) -> int:
    """Start the app and run its event loop; returns the exit code."""
    problem = missing_system_library()
    if problem:
        print(f"octscreen gui: {problem}", file=sys.stderr)
        return 2
    app = create_app()
    from app.main_window import MainWindow, install_excepthook  # noqa: PLC0415 (heavy: Qt)
    from app.settings import AppSettings  # noqa: PLC0415 (heavy: Qt)

    quiet_pynetdicom(0)  # the PACS dialog names the node and what failed; pynetdicom's own ERROR lines are noise
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
