"""Test-time augmentation by horizontal flip, side by side with plain inference (issue 9 ablation).

    python benchmarks/eval_tta.py [--out runs/ablate/lite0-224-synth]

On the validation patients of the bundled recipe's split (and on the committed test-only sample),
with the bundled model: per-B-scan metrics (argmax) for the plain B-scan, the flipped B-scan, and the
mean of both. Flip TTA is worth shipping only if the mean beats plain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import eval_real  # noqa: E402

from core.inference import Screener, default_card_path  # noqa: E402
from core.preprocess import preprocess_bscans  # noqa: E402
from core.train.data import read_grey  # noqa: E402
from core.train.metrics import classification_metrics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="training/configs/oct2017-real.json")
    ap.add_argument("--out", default="runs/oct2017-real", help="the recipe's output folder (splits.json)")
    a = ap.parse_args()
    screener = Screener(default_card_path(), threads=2)
    card, classes = screener.card, list(screener.card.classes)
    print(f"model {card.name} v{card.version}")
    sources = [
        argparse.Namespace(folder=None, config=a.config, out=a.out, fold=0, split="val"),
        argparse.Namespace(folder=str(REPO / "tests" / "data" / "oct2017-sample"), config=None, out=None),
    ]
    for src in sources:
        samples, _, what = eval_real._samples(src)
        what = what.replace(str(REPO) + "/", "")
        samples = [s for s in samples if s.label in classes]
        y = np.array([classes.index(s.label) for s in samples])
        x = np.concatenate(
            [preprocess_bscans(read_grey(s.path), card.input_size, card.mean, card.std, card.aspect) for s in samples]
        )
        plain = screener.predict(x)[0]
        flipped = screener.predict(np.ascontiguousarray(x[..., ::-1]))[0]
        print(f"{len(y)} B-scans: {what}")
        for name, p in (("plain", plain), ("flipped", flipped), ("mean of both", (plain + flipped) / 2)):
            m = classification_metrics(y, p, classes)
            bal = np.mean([v["sensitivity"] for v in m["per_class"].values() if v["support"]])
            cnv = m["per_class"].get("cnv", {}).get("sensitivity", float("nan"))
            print(
                f"  {name:13s} balanced {100 * bal:5.1f} %  macro AUC {m['macro_auc']:.3f}  "
                f"ECE {m['ece']:.3f}  CNV sens {100 * cnv:5.1f} %"
            )


if __name__ == "__main__":
    main()
