"""PDF report writing, side by side in one run: reportlab's default ASCII85 text streams against the
binary streams the report builder writes (core.report.builder._binary_streams).

Screens the bundled demo folder once (resources/samples/oct2017-bscans: 32 exams of real B-scans,
what `make run` screens) with the bundled model, then writes every exam's report with each setting,
best of --reps. Prints seconds per report, MB per report and the ratio; with ASCII85 and without
reportlab's optional C accelerator (rl_accel, not installed by this project) the encoding is pure Python.

    python benchmarks/bench_report.py [--reps 2] [--folder DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import cpu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _exams(folder: Path):
    from core.inference import Screener, default_card_path
    from core.modelcard import load_card
    from core.screening import open_volumes, screen_volumes

    card = load_card(default_card_path())
    errors: list = []
    volumes = open_volumes([folder], errors)
    exams = screen_volumes(volumes, Screener(card, threads=2))
    return card, exams


def _write_all(card, exams, out: Path, binary: bool) -> tuple[float, int]:
    import core.report.builder as builder
    from core.report import ReportOptions, write_report

    real = builder._binary_streams
    if not binary:
        builder._binary_streams = contextlib.nullcontext  # type: ignore[assignment]  # reportlab's default
    try:
        t = time.perf_counter()
        size = 0
        for i, exam in enumerate(exams):
            path = write_report(out / f"r{i}.pdf", exam, card, ReportOptions(institution="Bench"), overwrite=True)
            size += path.stat().st_size
        return time.perf_counter() - t, size
    finally:
        builder._binary_streams = real


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=ROOT / "resources" / "samples" / "oct2017-bscans")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args(argv)
    print(f"CPU: {cpu()}")
    accel = importlib.util.find_spec("_rl_accel") is not None or importlib.util.find_spec("rl_accel") is not None
    print(f"reportlab C accelerator (rl_accel): {'installed' if accel else 'not installed'}")
    card, exams = _exams(args.folder)
    shown = args.folder.relative_to(ROOT) if args.folder.is_relative_to(ROOT) else args.folder
    print(f"{len(exams)} exam(s) from {shown}")
    rows = {}
    with tempfile.TemporaryDirectory() as td:
        for name, binary in (("ASCII85 streams (reportlab default)", False), ("binary streams (OCT Screen)", True)):
            best = min((_write_all(card, exams, Path(td), binary) for _ in range(args.reps)), key=lambda r: r[0])
            rows[name] = best
    base = rows["ASCII85 streams (reportlab default)"]
    print(f"\n{'':38s} {'s/report':>9s} {'MB/report':>10s} {'speed':>7s} {'size':>7s}")
    for name, (sec, size) in rows.items():
        print(
            f"{name:38s} {sec / len(exams):9.3f} {size / len(exams) / 1e6:10.3f} "
            f"x{base[0] / sec:6.2f} {100 * size / base[1]:6.1f}%"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
