"""Peak memory of screening an archive, measured side by side in one run (issue 12: batch streams).

    python benchmarks/bench_memory.py [--cubes 8 16] [--bscans 128]

Writes N macular cubes (128 B-scans of 496 x 512, uncompressed DICOM OPT, one patient folder each:
the layout of a clinic's export), then screens them with the bundled model twice:
- ``octscreen screen ARCHIVE`` in one process: it reads every volume before it screens (to plan the
  exams and their report names) but holds at most ``max_held_bytes`` of pixels (512 MiB; past it a volume
  read from a file gives its pixels back and is read again when its exam is screened);
- the same with ``max_held_bytes`` at ``--hold-mb`` (128 MB), below the archives' pixels: past the hold,
  its memory should stop growing with the archive;
- ``octscreen batch ARCHIVE --local-workers 1``: one unit per patient folder, each the unchanged
  ``octscreen screen`` in a Dask worker process, so memory is one unit's, whatever the archive size.
Peak resident memory is read from the process tree every 50 ms (psutil): the sum over the command
and all its children, which for batch includes the scheduler and the worker. Prints MB per run and
the slope in MB per cube, and which CPU ran it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import cpu  # noqa: E402


def _archive(root: Path, n: int, bscans: int) -> Path:
    """``n`` patient folders, one uncompressed cube each (the same pixels, other patients)."""
    import dataclasses

    from core.io import write_opt
    from core.synthetic import simulate_volume
    from core.volume import PatientInfo, StudyInfo

    base = simulate_volume("cnv", n_bscans=bscans, height=496, width=512, seed=5)
    for i in range(n):
        vol = dataclasses.replace(
            base,
            patient=PatientInfo(patient_id=f"MEM{i:04d}", name=f"MEMORY^P{i}"),
            study=StudyInfo(
                study_uid=f"1.2.826.0.1.3680043.8.498.7{i}", series_uid=f"1.2.826.0.1.3680043.8.498.7{i}.1"
            ),
        )
        write_opt(vol, root / f"patient-{i:04d}" / "OD.dcm")
    return root


def _peak_tree_mb(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Run ``cmd``; (peak summed RSS of it and its descendants in MB, seconds, exit code)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    peak = 0.0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        top = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [top, *top.children(recursive=True)]
                total = sum(p.memory_info().rss for p in procs if p.is_running())
                peak = max(peak, total / 2**20)
            except psutil.Error:
                pass
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    code = proc.wait()
    done.set()
    t.join()
    return peak, time.perf_counter() - start, code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cubes", type=int, nargs="+", default=[8, 16], help="archive sizes to compare")
    ap.add_argument("--bscans", type=int, default=128)
    ap.add_argument(
        "--hold-mb",
        type=int,
        default=128,
        help="also run octscreen screen with max_held_bytes at this many MB (below the archives' pixels), "
        "so that the hold is passed and its bound shows (default 128)",
    )
    a = ap.parse_args(argv)
    print(f"CPU: {cpu()}; cubes of {a.bscans} x 496 x 512 (uncompressed DICOM OPT), the bundled model")
    exe = [sys.executable, "-m", "app.cli"]
    held = f"screen, hold {a.hold_mb} MB"
    results: dict[str, list[tuple[int, float]]] = {"screen": [], held: [], "batch": []}
    hold_env = {**os.environ, "OCTSCREEN_LIMITS": f"max_held_bytes={a.hold_mb << 20}"}
    runs = (
        ("screen", ["screen"], None),
        (held, ["screen"], hold_env),
        ("batch", ["batch", "--local-workers", "1"], None),
    )
    for n in a.cubes:
        with tempfile.TemporaryDirectory(prefix="octscreen-mem-") as tmp:
            archive = _archive(Path(tmp) / "archive", n, a.bscans)
            for i, (name, extra, env) in enumerate(runs):
                out = Path(tmp) / f"out-{i}"
                peak, secs, code = _peak_tree_mb([*exe, extra[0], str(archive), "--out", str(out), *extra[1:]], env)
                results[name].append((n, peak))
                print(f"  {n:3d} cubes  octscreen {name:<20} peak {peak:7.0f} MB   {secs:6.1f} s   exit {code}")
    for name, rows in results.items():
        if len(rows) >= 2:
            (n0, m0), (n1, m1) = rows[0], rows[-1]
            print(f"  octscreen {name:<20} {(m1 - m0) / (n1 - n0):6.1f} MB per added cube")
    return 0


if __name__ == "__main__":
    sys.exit(main())
