"""Per-eye accuracy of a model card on synthetic eyes it has never seen (full-size volumes, the
way the app screens them): simulate -> Screener -> core.aggregate.decide -> evaluate_eyes.

    python benchmarks/eval_eyes.py                        # bundled demo model, 30 patients (60 eyes)
    python benchmarks/eval_eyes.py --patients 5 --bscans 9   # quick look

Prints the per-eye confusion matrix, accuracy, referral sensitivity/specificity and, per B-scan,
the accuracy on B-scans whose label is the eye's class. Writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.aggregate import decide, evaluate_eyes  # noqa: E402
from core.inference import Screener, default_card_path  # noqa: E402
from core.synthetic import simulate_patient  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(default_card_path()), help="model card (default: bundled demo)")
    p.add_argument("--patients", type=int, default=30)
    p.add_argument("--bscans", type=int, default=25)
    p.add_argument("--seed", type=int, default=777, help="simulator seed (training used 0 and 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the metrics here")
    a = p.parse_args(argv)

    screener = Screener(a.model, threads=a.threads)
    card = screener.card
    eyes, frame_hits, frame_n = [], 0, 0
    t0 = time.perf_counter()
    for i in tqdm(range(a.patients), desc="patients"):
        for vol in simulate_patient(i, seed=a.seed, n_bscans=a.bscans):
            vr = screener.screen(vol)
            eyes.append(decide(vr, card.thresholds))
            pred = np.array(card.classes)[vr.predicted()]
            same = np.array([f == vol.label for f in vol.frame_labels])  # B-scans showing the eye's class
            frame_hits += int((pred[same] == vol.label).sum())
            frame_n += int(same.sum())
    m = evaluate_eyes(eyes, thresholds=card.thresholds)
    m["bscan_accuracy_on_eye_class_bscans"] = frame_hits / max(1, frame_n)
    m["seconds"] = time.perf_counter() - t0
    print(
        f"model {card.name} v{card.version} ({card.arch}, input {card.input_size}); "
        f"{len(eyes)} synthetic eyes, {a.bscans} B-scans each, simulator seed {a.seed}"
    )
    classes = sorted(m["confusion"])
    labels = sorted({k for row in m["confusion"].values() for k in row})
    print("truth \\ decided  " + "  ".join(f"{c:>10}" for c in labels))
    for t in classes:
        print(f"{t:>15}  " + "  ".join(f"{m['confusion'][t].get(c, 0):>10}" for c in labels))
    print(
        f"per-eye accuracy {m['accuracy']:.3f} (rescans excluded; {m['n_rescan']} rescans), "
        f"referral sensitivity {m['referral_sensitivity']:.3f}, specificity {m['referral_specificity']:.3f}, "
        f"urgent (CNV) sensitivity {m['urgent_sensitivity']:.3f}"
    )
    print(
        f"per-B-scan accuracy on B-scans labelled with their eye's class: {m['bscan_accuracy_on_eye_class_bscans']:.3f}"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(m, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
