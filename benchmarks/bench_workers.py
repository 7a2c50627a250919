"""Processes or threads: the throughput of screening an archive, side by side in one run (issue 12:
``--workers N`` "uses processes where that helps").

    python benchmarks/bench_workers.py [--cubes 8] [--bscans 128]

Writes N macular cubes (128 B-scans of 496 x 512, uncompressed DICOM OPT, one patient folder each),
then screens the archive with the bundled model, the same cores split three ways:
- ``octscreen screen --threads C``: one process, the model on all C cores (everything else, reading,
  the quality check, preprocessing, the CAMs and the PDF, on one);
- ``octscreen screen --workers C --threads 1``: C worker processes of one command (the standard
  library's process pool), one core each, one exam per task;
- ``octscreen batch --local-workers C --threads 1``: C worker processes (Dask), one core each, one
  patient folder per task: every step runs C at a time;
- ``octscreen batch --local-workers 1 --threads C``: one worker process, as the first plus Dask's cost.
Prints wall seconds, cubes per minute and the ratio against the first, peak memory of the process tree,
and which CPU ran it. C is the number of cores this process may use.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_memory import _archive, _peak_tree_mb  # noqa: E402
from machine import cpu  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cubes", type=int, default=8)
    ap.add_argument("--bscans", type=int, default=128)
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)), help="cores to split (default: all)")
    a = ap.parse_args(argv)
    c = a.cores
    print(
        f"CPU: {cpu()}; {c} cores; {a.cubes} cubes of {a.bscans} x 496 x 512 (uncompressed DICOM OPT), "
        "the bundled model"
    )
    exe = [sys.executable, "-m", "app.cli"]
    runs = (
        (f"screen --threads {c}", ["screen", "--threads", str(c)]),
        (f"screen --workers {c} --threads 1", ["screen", "--workers", str(c), "--threads", "1"]),
        (f"batch --local-workers {c} --threads 1", ["batch", "--local-workers", str(c), "--threads", "1"]),
        (f"batch --local-workers 1 --threads {c}", ["batch", "--local-workers", "1", "--threads", str(c)]),
    )
    with tempfile.TemporaryDirectory(prefix="octscreen-workers-") as tmp:
        archive = _archive(Path(tmp) / "archive", a.cubes, a.bscans)
        base = None
        print(f"\n{'octscreen':40s} {'seconds':>8s} {'cubes/min':>10s} {'speed':>7s} {'peak MB':>8s}  exit")
        for i, (name, cmd) in enumerate(runs):
            out = Path(tmp) / f"out-{i}"
            peak, secs, code = _peak_tree_mb([*exe, cmd[0], str(archive), "--out", str(out), *cmd[1:]])
            base = base or secs
            print(f"{name:40s} {secs:8.1f} {60 * a.cubes / secs:10.1f} x{base / secs:6.2f} {peak:8.0f}  {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
