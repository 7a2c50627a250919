"""``octscreen synth``: write a synthetic OCT dataset (DICOM OPT or NEH-like PNG folders) with a
per-B-scan manifest, using the seeded simulator ``core.synthetic``.

    octscreen synth --out DIR --patients N --format dicom|png --seed S [--bscans N] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# core.synthetic (OpenCV, the simulator) is imported when the command runs: `octscreen --help` stays fast


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``synth`` subcommand."""
    p = subparsers.add_parser(
        "synth",
        help="generate synthetic OCT exams (DICOM OPT or PNG)",
        description="Write a synthetic OCT dataset (DICOM OPT, or NEH-like PNG folders) with a per-B-scan "
        "manifest.csv, using the seeded simulator core.synthetic.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (must be empty or new)")
    p.add_argument("--patients", type=int, required=True, help="number of patients (two eyes each)")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("dicom", "png"),
        default="dicom",
        help="DICOM OPT files or NEH-like PNG folders (default: dicom)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    p.add_argument("--bscans", type=int, default=25, help="B-scans per volume (default: 25)")
    p.add_argument("--height", type=int, default=496, help="rows per B-scan (default: 496)")
    p.add_argument("--width", type=int, default=512, help="A-scans per B-scan (default: 512)")
    p.add_argument(
        "--classes",
        nargs="+",
        metavar="CLASS",
        default=None,
        help="eye classes to draw patients from (default: every class the simulator knows)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier synthetic dataset in --out")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes simulating patients (0: every CPU; the dataset is the same whatever the number)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the dataset; exit code 0 on success, 2 on bad arguments or a refused folder."""
    from tqdm import tqdm  # noqa: PLC0415 (start-up: tqdm, +40 ms on octscreen --help)

    from core.synthetic import CLASSES, write_dataset  # noqa: PLC0415 (heavy: numpy, OpenCV)

    classes = list(args.classes or CLASSES)
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        print(
            f"octscreen synth: unknown class(es) {', '.join(unknown)}; the simulator knows {', '.join(CLASSES)}",
            file=sys.stderr,
        )
        return 2
    if args.patients < 1 or args.bscans < 1:
        print("octscreen synth: --patients and --bscans must be at least 1", file=sys.stderr)
        return 2
    if args.workers < 0:
        print("octscreen synth: --workers must be 0 (every CPU) or more", file=sys.stderr)
        return 2
    bar = tqdm(total=2 * args.patients, unit="eye", desc="synth", disable=args.no_progress)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        out = write_dataset(
            args.out,
            patients=args.patients,
            fmt=args.fmt,
            seed=args.seed,
            n_bscans=args.bscans,
            classes=tuple(classes),
            progress=progress,
            overwrite=args.overwrite,
            height=args.height,
            width=args.width,
            workers=args.workers,
        )
    except (FileExistsError, ValueError) as e:
        print(f"octscreen synth: {e}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    print(f"wrote {2 * args.patients} synthetic eyes ({args.fmt}) to {out}; manifest: {out / 'manifest.csv'}")
    return 0
