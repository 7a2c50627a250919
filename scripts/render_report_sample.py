#!/usr/bin/env python
"""Render the sample screening report (a made-up exam, demo model) to PNG pages for the docs.

    python scripts/render_report_sample.py [--out docs] [--page-size A4|Letter] [--keep-pdf]

Writes ``report_sample_p1.png``, ``report_sample_p2.png``, ... (pdftoppm -r 80) into ``--out``.
Needs pdftoppm (poppler-utils).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.modelcard import ModelCard  # noqa: E402
from core.report import ReportOptions, preview_exam, write_report  # noqa: E402


def sample_card() -> ModelCard:
    """A demonstration model card like the one the project ships."""
    return ModelCard(
        name="kdoct-student-demo",
        arch="efficientnet_b2",
        classes=["normal", "drusen", "cnv"],
        input_size=(260, 260),
        version="0.1.0",
        demo=True,
        training_data={"description": "synthetic OCT volumes from core.synthetic (seeded)"},
        metrics={"accuracy": 0.943},
        intended_use="demonstration of the OCT Screen software; not for clinical use",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--page-size", choices=["A4", "Letter"], default="A4")
    ap.add_argument("--resolution", type=int, default=80)
    ap.add_argument("--keep-pdf", action="store_true", help="also copy the PDF into --out")
    args = ap.parse_args(argv)
    if shutil.which("pdftoppm") is None:
        print("pdftoppm not found (install poppler-utils)", file=sys.stderr)
        return 1
    opts = ReportOptions(
        institution="Riverside Eye Clinic",
        institution_address="Retina Service\n12 Harbour Road, Springfield",
        page_size=args.page_size,
        report_id="SAMPLE0001",
        generated=datetime(2026, 11, 24, 9, 45, tzinfo=timezone.utc),
        clinician="",
    )
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pdf = write_report(Path(tmp) / "report_sample.pdf", preview_exam(seed=3), sample_card(), opts)
        for old in args.out.glob("report_sample_p*.png"):
            old.unlink()
        subprocess.run(["pdftoppm", "-r", str(args.resolution), "-png", str(pdf), str(Path(tmp) / "page")], check=True)
        pages = sorted(Path(tmp).glob("page-*.png"))
        for i, page in enumerate(pages, start=1):
            shutil.copyfile(page, args.out / f"report_sample_p{i}.png")
            print(args.out / f"report_sample_p{i}.png")
        if args.keep_pdf:
            shutil.copyfile(pdf, args.out / "report_sample.pdf")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
