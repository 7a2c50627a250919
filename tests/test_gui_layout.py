"""The window's layout on every screen (issue 14 item 7): it opens no larger than the screen, every
main panel usable at 1280 x 720 and at 200 % on 1920 x 1080 (a logical 960 x 540 screen), View >
Reset layout, and a layout saved on another screen that would restore collapsed or off-screen.

The scale factor and the screens are fixed per QApplication, so the screen tests run this file as a
child process on Qt's offscreen platform with a screen configuration (``offscreen:configfile=``:
each screen's geometry in physical pixels and its logical DPI; 192 dpi is 200 % as Windows and X11
report it, ``--scale-factor 2`` is QT_SCALE_FACTOR) and read back what it measured::

    python tests/test_gui_layout.py --settings /tmp/s.ini --screen 1920x1080 --dpi 192 \\
        --exam resources/samples/demo-exam --shot docs/screenshots/14-layout-200pct.png

made docs/screenshots/13-layout-1280x720.png (``--screen 1280x720``) and 14-layout-200pct.png: the
whole screen, the synthetic demo exam screened with the bundled model.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script, too

import pytest  # noqa: E402
from PySide6.QtCore import QRect, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication  # noqa: E402
from PySide6.QtWidgets import QToolBar  # noqa: E402

from app.dialogs import Dialogs  # noqa: E402
from app.main_window import MainWindow, synthetic_demo_path  # noqa: E402
from app.settings import AppSettings  # noqa: E402

CHILD_TIMEOUT = 60  # seconds; a child takes 2-4 s on an idle machine (Qt, the bundled model, a volume)

#: The smallest sizes (logical pixels) at which each panel still does its job: the worklist shows its
#: filter row and a few rows, the summary the patient banner and the decision, the B-scan view a
#: B-scan one can read, the strip chart its legend, plot and axis.
USABLE = {
    "worklist": (240, 150),
    "summary": (270, 250),
    "viewer": (320, 180),
    "chart": (300, 100),
    "enface": (160, 120),
}


class QuietDialogs(Dialogs):
    """No dialog ever blocks: errors and notes are kept for the test to read."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, parent, title, text, details=""):
        self.errors.append(f"{title}: {text}")

    def info(self, parent, title, text):
        self.errors.append(f"{title}: {text}")

    def confirm(self, parent, title, text):
        return False


# -- the child: one QApplication on a configured screen ---------------------------------------------
def _rect(r: QRect) -> list[int]:
    return [r.x(), r.y(), r.width(), r.height()]


def _global(widget) -> list[int]:
    """A widget's rectangle in screen coordinates (logical pixels)."""
    return _rect(QRect(widget.mapToGlobal(widget.rect().topLeft()), widget.size()))


def _text_cut(label) -> bool:
    """A word-wrapped label shorter than its text needs at its width (its last lines cut off)."""
    return bool(label.text()) and label.isVisible() and label.height() < label.heightForWidth(label.width())


def measure(window: MainWindow) -> dict:
    """Where every main panel is, what it needs, and what the window and screen are."""
    screen = window.screen()
    summary = window.summary
    banner = summary.banner
    toolbar = window.findChild(QToolBar, "mainToolbar")
    panels = {
        "worklist": window.browser,
        "summary": summary.viewport(),
        "banner": banner,
        "badge": summary.badge,
        "viewer": window.viewer.view,
        "chart": window.chart,
        "enface": window.enface_panel,
        "toolbar": toolbar,
        "statusbar": window.statusBar(),
    }
    tool_actions = [a for a in toolbar.actions() if not a.isSeparator()] if toolbar is not None else []
    return {
        "screen": {
            "geometry": _rect(screen.geometry()),
            "available": _rect(screen.availableGeometry()),
            "dpr": screen.devicePixelRatio(),
        },
        "frame": _rect(window.frameGeometry()),
        "window": _rect(window.geometry()),
        "minimum": [window.minimumSizeHint().width(), window.minimumSizeHint().height()],
        "panels": {name: {"rect": _global(w), "visible": w.isVisible()} for name, w in panels.items()},
        "docks": {
            d.objectName(): {"rect": _global(d), "visible": window.dock_shown(d), "floating": d.isFloating()}
            for d in window.docks()
        },
        "tabbed": [d.objectName() for d in window.tabifiedDockWidgets(window.browser_dock)],
        "toolbar_hidden": [
            a.text() for a in tool_actions if (b := toolbar.widgetForAction(a)) is None or not b.isVisible()
        ],
        "cut": [
            name
            for name, label in (
                ("banner name", banner.who),
                ("banner ID", banner.ident),
                ("banner exam date", banner.when),
                ("banner eye", banner.eye_label),
                ("decision", summary.badge),
            )
            if _text_cut(label)
        ],
        "problems": window.layout_problems(),
        "errors": window.dialogs.errors,
        "status": window.status_text.text(),
    }


def _settle(app, window: MainWindow, seconds: float = 0.3) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end or window._first_show:
        app.processEvents()
        time.sleep(0.01)


def _stretch(app, window: MainWindow) -> None:
    """What a user does on a big desk: a 2400 x 1300 window, the worklist dragged wide, the summary
    to its minimum and then floated onto the second screen, the en-face view dragged down to its
    minimum height."""
    window.setGeometry(QRect(80, 60, 2400, 1300))
    _settle(app, window)
    window.resizeDocks([window.browser_dock, window.summary_dock], [1500, 1], Qt.Orientation.Horizontal)
    window.resizeDocks([window.browser_dock, window.enface_dock], [1200, 1], Qt.Orientation.Vertical)
    _settle(app, window)
    window.summary_dock.setFloating(True)
    window.summary_dock.setGeometry(QRect(2560 + 1200, 150, 560, 1000))
    _settle(app, window)


def child(argv: list[str] | None = None) -> int:
    """Start the app on the configured screens, optionally screen an exam, report and grab."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--screen", action="append", default=[], help="WxH (physical pixels); repeat for a second")
    ap.add_argument("--dpi", type=int, default=96, help="the screens' logical DPI (192: 200 %%)")
    ap.add_argument("--scale-factor", default="", help="QT_SCALE_FACTOR")
    ap.add_argument("--settings", type=Path, required=True, help="ini file (read at start, written at close)")
    ap.add_argument("--exam", type=Path, help="open and screen this exam (the bundled model)")
    ap.add_argument("--stretch", action="store_true", help="arrange docks as on a big desk, then close")
    ap.add_argument("--shot", type=Path, help="grab the whole screen into this PNG")
    ap.add_argument("--out", type=Path, help="write the measurements here (JSON)")
    args = ap.parse_args(argv)

    screens, x = [], 0
    for i, spec in enumerate(args.screen or ["1280x720"]):
        width, height = (int(v) for v in spec.lower().split("x"))
        screens.append({"name": f"screen{i}", "x": x, "y": 0, "width": width, "height": height})
        screens[-1].update(logicalDpi=args.dpi, logicalBaseDpi=96, dpr=1.0)
        x += width
    config = args.settings.with_suffix(".screens.json")
    config.write_text(json.dumps({"screens": screens}))
    os.environ["QT_QPA_PLATFORM"] = f"offscreen:configfile={config}"
    os.environ.pop("QT_SCALE_FACTOR", None)
    if args.scale_factor:
        os.environ["QT_SCALE_FACTOR"] = args.scale_factor
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    from app.cmd_gui import create_app

    app = create_app()
    window = MainWindow(AppSettings(QSettings(str(args.settings), QSettings.Format.IniFormat)), QuietDialogs())
    window.show()
    _settle(app, window)
    if args.stretch:
        _stretch(app, window)
    if args.exam:
        window.open_paths([args.exam], remember=False)
        end = time.monotonic() + CHILD_TIMEOUT
        while window.job is not None and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)
        _settle(app, window)
    result = measure(window)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    if args.shot:
        QGuiApplication.primaryScreen().grabWindow(0).save(str(args.shot))
        print(f"wrote {args.shot}")
    window.close()
    return 0


# -- the tests ----------------------------------------------------------------------------------------
def demo_volume() -> str:
    """One eye of the synthetic demo exam (a named patient, a 25-B-scan volume): screened in the child."""
    return str(synthetic_demo_path() / "DEMO0001_OD.dcm")


def run_child(tmp_path: Path, *args: str, settings: Path | None = None) -> dict:
    """Run the child with ``args``; its measurements."""
    out = tmp_path / f"measure-{len(list(tmp_path.glob('measure-*')))}.json"
    settings = settings or tmp_path / "settings.ini"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    proc = subprocess.run(
        [sys.executable, __file__, "--settings", str(settings), "--out", str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    result["log"] = proc.stderr
    return result


def inside(rect: list[int], area: list[int]) -> bool:
    x, y, w, h = rect
    ax, ay, aw, ah = area
    return ax <= x and ay <= y and x + w <= ax + aw and y + h <= ay + ah


def assert_usable(m: dict, enface_stacked: bool) -> None:
    """Window inside the available geometry; every main panel shown, inside it, at a usable size;
    no banner or decision text cut off; no toolbar button pushed into the overflow menu."""
    avail = m["screen"]["available"]
    assert inside(m["frame"], avail), f"window {m['frame']} sticks out of the screen {avail}"
    assert m["minimum"][0] <= avail[2] and m["minimum"][1] <= avail[3], m["minimum"]
    panels = m["panels"]
    for name in ("worklist", "summary", "banner", "badge", "viewer", "chart", "toolbar", "statusbar"):
        assert panels[name]["visible"], f"{name} is not shown"
        assert inside(panels[name]["rect"], m["window"]), f"{name} {panels[name]['rect']} outside {m['window']}"
    for name, (w, h) in USABLE.items():
        if name == "enface" and not enface_stacked:
            continue
        rect = panels[name]["rect"]
        assert rect[2] >= w and rect[3] >= h, f"{name} is {rect[2]}x{rect[3]}, needs {w}x{h}"
    # the patient banner and the decision are seen without scrolling the summary
    for name in ("banner", "badge"):
        assert inside(panels[name]["rect"], panels["summary"]["rect"]), f"{name} scrolled out of the summary"
    assert m["cut"] == [], f"text cut off: {m['cut']}"
    assert m["toolbar_hidden"] == [], f"toolbar overflow: {m['toolbar_hidden']}"
    assert m["problems"] == [] and m["errors"] == []
    assert all(d["visible"] and not d["floating"] for k, d in m["docks"].items() if k != "enfaceDock")


def test_1280x720_every_panel_fits_and_is_usable(tmp_path):
    m = run_child(tmp_path, "--screen", "1280x720", "--exam", demo_volume())
    assert m["screen"]["available"] == [0, 0, 1280, 720] and m["screen"]["dpr"] == 1.0
    assert m["frame"][2:] == [1280, 720]  # a fresh install fills the screen, no more
    assert m["tabbed"] == []  # tall enough: the en-face view under the worklist
    assert m["docks"]["enfaceDock"]["visible"]
    assert_usable(m, enface_stacked=True)
    worklist, viewer = m["panels"]["worklist"]["rect"], m["panels"]["viewer"]["rect"]
    assert worklist[2] >= 400 and viewer[2] >= 450  # room for the worklist's columns and the B-scan


@pytest.mark.parametrize(
    "how", [("--dpi", "192"), ("--scale-factor", "2")], ids=["200pct-dpi", "200pct-QT_SCALE_FACTOR"]
)
def test_200_percent_on_1920x1080_every_panel_fits_and_is_usable(tmp_path, how):
    m = run_child(tmp_path, "--screen", "1920x1080", *how, "--exam", demo_volume())
    assert m["screen"]["available"] == [0, 0, 960, 540] and m["screen"]["dpr"] == 2.0
    assert m["frame"][2:] == [960, 540]
    # short: the en-face view is a tab behind the worklist, which gets the whole left column
    assert "enfaceDock" in m["tabbed"] and not m["docks"]["enfaceDock"]["visible"]
    assert_usable(m, enface_stacked=False)
    assert m["panels"]["worklist"]["rect"][3] >= 300


def test_layout_saved_on_a_big_desk_restores_usable_on_a_small_screen(tmp_path):
    """Saved on a 2560 x 1440 screen with a second screen beside it (a 2400 x 1300 window, the
    worklist dragged 1500 px wide, the en-face view to its minimum height, the summary floated onto
    the second screen), restored at 200 % on a single 1920 x 1080 screen: the window fits, every
    dock is docked and visible at a usable size on the screen (Qt brings the floating summary back
    as tall as the screen; the check docks it again, and logs why)."""
    settings = tmp_path / "desk.ini"
    big = run_child(tmp_path, "--screen", "2560x1440", "--screen", "1920x1080", "--stretch", settings=settings)
    assert big["docks"]["summaryDock"]["floating"] and big["docks"]["summaryDock"]["rect"][0] >= 2560
    assert big["docks"]["examsDock"]["rect"][2] >= 1400 and big["frame"][2] > 2400
    m = run_child(tmp_path, "--screen", "1920x1080", "--dpi", "192", settings=settings)
    assert "does not fit this screen (Eye summary floating larger than the screen" in m["log"]
    avail = m["screen"]["available"]
    assert avail == [0, 0, 960, 540] and inside(m["frame"], avail)
    assert m["problems"] == [] and m["tabbed"] == ["enfaceDock"]  # the default layout of a short screen
    for name in ("examsDock", "summaryDock"):
        dock = m["docks"][name]
        assert dock["visible"] and not dock["floating"] and inside(dock["rect"], m["window"]), (name, dock)
    for name in ("worklist", "summary", "viewer", "chart"):
        rect, (w, h) = m["panels"][name]["rect"], USABLE[name]
        assert inside(rect, m["window"]) and rect[2] >= w and rect[3] >= h, (name, rect)


# -- in-process: reset and repair ---------------------------------------------------------------------
@pytest.fixture
def settings(tmp_path) -> AppSettings:
    return AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


def shown(qtbot, settings: AppSettings) -> MainWindow:
    w = MainWindow(settings, QuietDialogs())
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: not w._first_show)
    qtbot.wait(50)  # the first show's layout (default docks or the check) has run
    return w


def layout_of(w: MainWindow) -> dict:
    return {
        "size": (w.width(), w.height()),
        "docks": {
            d.objectName(): (d.isVisible(), d.isFloating(), w.dockWidgetArea(d), d.width(), d.height())
            for d in w.docks()
        },
        "tabbed": sorted(d.objectName() for d in w.tabifiedDockWidgets(w.browser_dock)),
        "splitter": w.centralWidget().sizes(),
    }


def test_reset_layout_restores_the_defaults_after_the_user_shrank_and_closed_docks(qtbot, settings):
    w = shown(qtbot, settings)
    default = layout_of(w)
    assert all(visible and not floating for visible, floating, *_ in default["docks"].values())
    assert "Reset layout" in [a.text().replace("&", "") for m in w.menuBar().actions() for a in m.menu().actions()]

    w.enface_dock.close()  # the user closes a dock, floats another, squeezes the worklist and the chart
    w.summary_dock.setFloating(True)
    w.summary_dock.move(40, 40)
    w.resizeDocks([w.browser_dock], [1], Qt.Orientation.Horizontal)
    w.centralWidget().setSizes([10, 10_000])
    w.resize(w.minimumSizeHint())
    qtbot.wait(50)
    changed = layout_of(w)
    assert changed != default and changed["docks"]["enfaceDock"][0] is False

    w.act_reset_layout.trigger()
    qtbot.wait(50)
    after = layout_of(w)
    assert after["size"] == default["size"] == (w.default_size().width(), w.default_size().height())
    assert after["docks"] == default["docks"]
    assert after["tabbed"] == default["tabbed"]
    assert abs(after["splitter"][1] - default["splitter"][1]) <= 2  # the strip chart back to a fifth
    # ... and saved: the next start opens the same
    assert settings.window_state() == w.saveState() and settings.window_geometry() == w.saveGeometry()
    w2 = shown(qtbot, AppSettings(QSettings(settings.q.fileName(), QSettings.Format.IniFormat)))
    again = layout_of(w2)  # heights may differ: Qt's restoreGeometry keeps room for a title bar
    assert {k: v[:4] for k, v in again["docks"].items()} == {k: v[:4] for k, v in after["docks"].items()}
    assert again["tabbed"] == after["tabbed"]


def test_a_restored_layout_with_a_dock_too_big_for_the_screen_is_repaired(qtbot, settings, caplog):
    """A layout saved with the summary floating at 2000 x 2000 (a big monitor): Qt restores it
    covering this whole screen and more, so when the window is first shown the default layout
    replaces it, and the log and the status bar say why."""
    w = shown(qtbot, settings)
    default = layout_of(w)
    w.summary_dock.setFloating(True)
    w.summary_dock.setGeometry(QRect(100, 100, 2000, 2000))
    qtbot.wait(50)
    assert any("Eye summary floating larger than the screen" in p for p in w.layout_problems())
    w.close()  # saves this layout

    caplog.set_level(logging.WARNING, logger="app.main_window")
    w2 = shown(qtbot, AppSettings(QSettings(settings.q.fileName(), QSettings.Format.IniFormat)))
    assert w2.layout_problems() == []
    assert layout_of(w2)["docks"] == default["docks"]
    for d in w2.docks():
        assert d.isVisible() and not d.isFloating() and d.width() >= 160 and d.height() >= 120
    assert "does not fit this screen (Eye summary floating larger than the screen" in caplog.text
    assert "default layout restored" in w2.status_text.text()


def test_a_dock_off_every_screen_is_found_and_repaired(qtbot, settings):
    """A floating dock where no screen is (a second monitor that is gone) makes the layout unusable:
    repair_layout (run when a restored window is first shown) docks everything again."""
    w = shown(qtbot, settings)
    default = layout_of(w)
    assert w.layout_problems() == [] and not w.repair_layout()  # the default layout needs nothing
    w.enface_dock.setFloating(True)
    w.enface_dock.move(20_000, 15_000)
    qtbot.wait(50)
    assert [p for p in w.layout_problems() if "En-face floating off-screen" in p]
    assert w.repair_layout()
    qtbot.wait(50)
    assert w.layout_problems() == [] and layout_of(w)["docks"] == default["docks"]
    assert settings.window_state() == w.saveState()  # the repaired layout is saved


def test_window_lost_off_every_screen_is_centred_on_the_primary_screen(qtbot, settings):
    w = shown(qtbot, settings)
    w.move(30_000, 30_000)
    w.close()
    w2 = shown(qtbot, AppSettings(QSettings(settings.q.fileName(), QSettings.Format.IniFormat)))
    screen = QGuiApplication.primaryScreen().availableGeometry()
    assert QGuiApplication.screenAt(w2.frameGeometry().center()) is not None
    assert w2.frameGeometry().left() >= screen.left() and w2.frameGeometry().top() >= screen.top()


if __name__ == "__main__":
    sys.exit(child())
