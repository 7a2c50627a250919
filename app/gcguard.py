"""Python's cyclic garbage collector on the GUI thread only, while a main window is open.

The collector runs in whichever thread happens to allocate when a generation's threshold is crossed.
In the desktop app that is often a worker thread (the readers allocate a lot), and a collection there
can free Qt objects that belong to the GUI thread: the process dies with a segmentation fault (seen
in the GUI tests: "Garbage-collecting" in pydicom's reader on a QThreadPool thread, while the window
lived). So while any main window is open, automatic collection is off and a timer on the GUI thread
collects whatever generations are due, by the interpreter's own thresholds. Reference counting still
frees everything that is not in a cycle at once, in any thread; only cycles wait for the timer.

:func:`acquire` when a window opens, :func:`release` when it closes (each window once); the last
release collects everything on the GUI thread and gives automatic collection back as it was.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QCoreApplication, QTimer

__all__ = ["INTERVAL_MS", "acquire", "collect_due", "holders", "release"]

#: how often the GUI thread looks at the collector's counts
INTERVAL_MS = 250

_state: dict = {"holders": 0, "timer": None, "was_enabled": True}


def holders() -> int:
    """How many windows hold the guard now."""
    return int(_state["holders"])


def collect_due() -> int:
    """Collect, on the calling thread, the oldest generation whose count passed its threshold (as the
    interpreter would have); returns the number of unreachable objects found (0 when none was due)."""
    t0, t1, t2 = gc.get_threshold()
    c0, c1, c2 = gc.get_count()
    if t0 <= 0 or c0 < t0:
        return 0
    generation = 2 if (c1 >= t1 and c2 >= t2) else 1 if c1 >= t1 else 0
    return gc.collect(generation)


def acquire() -> None:
    """A window opened: automatic collection goes off, the GUI thread's timer collects instead."""
    if _state["holders"] == 0:
        _state["was_enabled"] = gc.isenabled()
        gc.disable()
        timer = QTimer(QCoreApplication.instance())
        timer.setInterval(INTERVAL_MS)
        timer.timeout.connect(collect_due)
        timer.start()
        _state["timer"] = timer
    _state["holders"] += 1


def release() -> None:
    """A window closed: the last one collects everything here and gives automatic collection back."""
    if _state["holders"] == 0:
        return
    _state["holders"] -= 1
    if _state["holders"] == 0:
        timer, _state["timer"] = _state["timer"], None
        if timer is not None:
            timer.stop()
            timer.deleteLater()
        gc.collect()
        if _state["was_enabled"]:
            gc.enable()
