"""Start-up time of the command line, measured side by side in one run.

    python benchmarks/bench_startup.py [--repeat 7]

Times (median of ``--repeat`` runs, wall clock, subprocesses): a bare ``python -c pass`` (the floor),
``octscreen --help`` (must import no heavy library: tests/test_cli_startup.py), and the imports a real
command needs (readers; readers + ONNX Runtime screener; the report). Prints each and its ratio to the
floor, and which CPU ran it.
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
