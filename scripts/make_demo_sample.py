"""Write the bundled demo exam: resources/samples/demo-exam/ (one synthetic patient, both eyes).

OD: CNV (urgent referral), OS: drusen (routine referral); 25 B-scans of 496 x 512 each, DICOM
Ophthalmic Tomography (multi-frame OPT) compressed with JPEG 2000 lossless, patient 'DEMO^Synthetic'.
The data are simulated by ``core.synthetic`` (no real patient); the ground truth is in the files
(see core.io.writer.GROUND_TRUTH_MARKER) so that tests and demos can check the screening result.

    .venv/bin/python scripts/make_demo_sample.py [--out resources/samples/demo-exam] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.io import write_opt
from core.synthetic import simulate_patient
from core.volume import PatientInfo

DEMO_SEED = 1100
DEMO_LABELS = ("cnv", "drusen")  # (OD, OS)
DEMO_PATIENT = PatientInfo(patient_id="DEMO0001", name="DEMO^Synthetic", birth_date="19480315", sex="F")
MAX_TOTAL_BYTES = 10_000_000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("resources/samples/demo-exam"))
    ap.add_argument("--overwrite", action="store_true", help="replace existing demo files")
    args = ap.parse_args(argv)

    eyes = simulate_patient(1, seed=DEMO_SEED, labels=DEMO_LABELS, n_bscans=25, patient=DEMO_PATIENT)
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for vol in eyes:
        path = args.out / f"{DEMO_PATIENT.patient_id}_{vol.laterality.value}.dcm"
        try:
            write_opt(vol, path, transfer_syntax="JPEG2000Lossless", overwrite=args.overwrite)
        except FileExistsError as e:
            print(f"make_demo_sample: {e}", file=sys.stderr)
            return 2
        size = path.stat().st_size
        total += size
        lesion = sum(lab != "normal" for lab in vol.frame_labels)
        print(
            f"wrote {path} ({size / 1e6:.2f} MB): {vol.laterality.value} {vol.label}, "
            f"{lesion}/{vol.n_bscans} B-scans through the lesion"
        )
    if total > MAX_TOTAL_BYTES:
        print(f"make_demo_sample: the demo exam is {total / 1e6:.1f} MB, over the 10 MB budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
