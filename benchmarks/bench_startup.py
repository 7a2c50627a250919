"""Start-up time of the command line, measured side by side in one run.

    python benchmarks/bench_startup.py [--repeat 7]

Times (median of ``--repeat`` runs, wall clock, subprocesses): a bare ``python -c pass`` (the floor),
``octscreen --help`` (must import no heavy library: tests/test_cli_startup.py), and the imports a real
command needs (readers; readers + ONNX Runtime screener; the report). Prints each and its ratio to the
floor, and which CPU ran it.

Then the desktop app (offscreen Qt, the bundled model, private settings), median of ``--gui-repeat``
fresh processes: from the process start to the window shown, to the first decision of the demo exam
(44 real B-scans of 32 patients, the model loaded on first use: the cold path) and to the whole demo
screened; and, in the same process, the demo opened again after closing it (the model already
loaded: the warm path) to its first decision and to the end. The OS file cache is warm in every run
(one warm-up process first): "cold" is a new process, not a cold disk.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import cpu  # noqa: E402

CASES = [
    ("python -c pass (floor)", ["-c", "pass"]),
    ("octscreen --help", ["-m", "app.cli", "--help"]),
    ("import core.io (readers)", ["-c", "import core.io"]),
    ("import core.inference + onnxruntime", ["-c", "import core.inference, onnxruntime"]),
    ("import core.report (reportlab)", ["-c", "import core.report"]),
]


GUI_CHILD = r"""
import os, sys, time, tempfile
T0 = float(sys.argv[1])
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from pathlib import Path
from PySide6.QtCore import QSettings
from app.cmd_gui import create_app
from app.main_window import MainWindow
from app.settings import AppSettings
app = create_app()
settings = AppSettings(QSettings(str(Path(tempfile.mkdtemp()) / "s.ini"), QSettings.Format.IniFormat))
w = MainWindow(settings)
w.show()
app.processEvents()
shown = time.time() - T0

def until(cond):
    while not cond():
        app.processEvents()
        time.sleep(0.001)
    return time.time() - T0

def screen_demo():
    start = time.time() - T0
    w.open_demo()
    first = until(lambda: len(w.state.exams) > 0)
    done = until(lambda: w.job is None)
    return start, first, done

_, first, done = screen_demo()  # from the process start
w.state.clear()
start, warm_first, warm_done = screen_demo()
eyes = sum(len(le.exam.eyes) for le in w.state.exams)
print(shown, first, done, warm_first - start, warm_done - start, eyes)
"""


def gui_startup(repeat: int) -> None:
    """The desktop app's start-up, cold (new process) and warm (same process, model loaded)."""

    def once() -> list[float]:
        out = subprocess.run(
            [sys.executable, "-c", GUI_CHILD, repr(time.time())], cwd=REPO, capture_output=True, text=True, check=True
        )
        return [float(v) for v in out.stdout.split()]

    once()  # warm the file cache
    runs = [once() for _ in range(repeat)]
    med = [statistics.median(r[i] for r in runs) for i in range(5)]
    eyes = int(runs[0][5])
    print(f"octscreen gui (offscreen, bundled model, demo exam: {eyes} eyes), median of {repeat} fresh processes:")
    print(f"  {'window shown':<40} {1000 * med[0]:7.0f} ms")
    print(f"  {'cold: first decision (model loaded)':<40} {1000 * med[1]:7.0f} ms   (from the process start)")
    print(f"  {'cold: demo exam screened':<40} {1000 * med[2]:7.0f} ms")
    print(
        f"  {'warm: first decision':<40} {1000 * med[3]:7.0f} ms   (demo opened again; {med[1] / med[3]:.1f}x faster)"
    )
    print(f"  {'warm: demo exam screened':<40} {1000 * med[4]:7.0f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--gui-repeat", type=int, default=3, help="fresh GUI processes (0: skip the GUI)")
    a = ap.parse_args(argv)
    print(f"CPU: {cpu()}; Python {platform.python_version()}; median of {a.repeat} runs (after one warm-up)")
    floor = None
    for name, args in CASES:
        subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, check=True)  # warm the file cache
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, check=True)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        floor = floor or med
        print(f"  {name:<40} {1000 * med:7.0f} ms   {med / floor:5.1f}x the floor")
    if a.gui_repeat > 0:
        gui_startup(a.gui_repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
