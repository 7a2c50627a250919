"""Calibrate a model card's decision thresholds on synthetic calibration eyes (never the test seed)
and write them into the card (weights and ONNX are untouched, so their checksums stay valid).

    python scripts/calibrate_thresholds.py --model resources/models/octscreen-demo.json --patients 20 --seed 2

For a model trained on real data, calibrate on a real held-out set instead (same core function:
core.aggregate.calibrate_thresholds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.aggregate import calibrate_thresholds, decide  # noqa: E402
from core.inference import Screener  # noqa: E402
from core.modelcard import save_card  # noqa: E402
from core.synthetic import simulate_patient  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--bscans", type=int, default=25)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--min-sensitivity", type=float, default=0.9)
    a = p.parse_args(argv)
    screener = Screener(a.model, threads=2)
    card = screener.card
    eyes, truth = [], []
    for i in tqdm(range(a.patients), desc="calibration patients"):
        for vol in simulate_patient(i, seed=a.seed, n_bscans=a.bscans):
            eyes.append(decide(screener.screen(vol), card.thresholds))
            truth.append(vol.label)
    new, report = calibrate_thresholds(eyes, truth, card.thresholds, min_sensitivity=a.min_sensitivity)
    card.thresholds = new
    card.metrics["threshold_calibration"] = {
        "data": f"synthetic OCT, simulator seed {a.seed}, {a.patients} patients ({len(eyes)} eyes, {a.bscans} B-scans)",
        "rule": f"highest eye-score threshold with sensitivity >= {a.min_sensitivity} per class",
        "command": f"python scripts/calibrate_thresholds.py --model {a.model} --patients {a.patients} --seed {a.seed}",
        "per_class": report}
    save_card(card, card.path)
    print(json.dumps({"urgent": new.urgent, "routine": new.routine, "report": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
