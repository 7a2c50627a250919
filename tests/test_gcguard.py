"""app.gcguard: while a main window is open, cyclic garbage is collected on the GUI thread, never on a
worker thread (a collection on a worker can free Qt objects of the GUI thread and crash the app)."""

from __future__ import annotations

import gc
import threading

from app import gcguard


class _Cycle:
    """An object in a reference cycle that records the thread its finalizer ran on."""

    def __init__(self, seen: list) -> None:
        self.me = self
        self.seen = seen

    def __del__(self) -> None:
        self.seen.append(threading.current_thread().name)


def _make_cycles_in_a_worker(seen: list, n: int) -> None:
    def work() -> None:
        for _ in range(n):
            _Cycle(seen)
            [[] for _ in range(5)]  # allocations, as a reader's would, that move the collector's counts

    t = threading.Thread(target=work, name="worker")
    t.start()
    t.join()


def test_with_a_window_open_cycles_are_collected_on_the_gui_thread(window, qtbot):
    assert gcguard.holders() >= 1 and not gc.isenabled()
    seen: list[str] = []
    _make_cycles_in_a_worker(seen, 20 * gc.get_threshold()[0])
    assert "worker" not in seen  # no collection ran in the worker, though it passed the thresholds
    qtbot.waitUntil(lambda: len(seen) > 0, timeout=5000)  # the GUI thread's timer collected them
    gc.collect()
    assert set(seen) == {threading.main_thread().name}


def test_without_a_window_the_interpreter_collects_as_usual(qtbot):
    assert gcguard.holders() == 0 and gc.isenabled()
    seen: list[str] = []
    _make_cycles_in_a_worker(seen, 20 * gc.get_threshold()[0])
    assert "worker" in seen  # what the guard is for: the collector ran on the worker thread


def test_closing_the_last_window_gives_automatic_collection_back(qtbot, settings):
    from app.main_window import MainWindow
    from tests.gui_helpers import RecordingDialogs

    a, b = MainWindow(settings, RecordingDialogs()), MainWindow(settings, RecordingDialogs())
    assert gcguard.holders() == 2 and not gc.isenabled()
    a.close()
    a.close()  # a window releases once, however often it is closed
    assert gcguard.holders() == 1 and not gc.isenabled()
    b.close()
    assert gcguard.holders() == 0 and gc.isenabled()
    for w in (a, b):
        w.deleteLater()


def test_collect_due_collects_only_past_the_threshold():
    old = gc.get_threshold()
    try:
        gc.collect()
        gc.set_threshold(1_000_000, old[1], old[2])
        assert gc.get_count()[0] < 1_000_000 and gcguard.collect_due() == 0
        seen: list[str] = []
        _Cycle(seen)
        gc.set_threshold(1, old[1], old[2])
        was = gc.isenabled()
        gc.disable()
        try:
            assert gcguard.collect_due() >= 1 and seen == [threading.current_thread().name]
        finally:
            if was:
                gc.enable()
    finally:
        gc.set_threshold(*old)
