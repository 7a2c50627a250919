"""A model card on real OCT B-scans, the way the app screens them (ONNX Screener, quality check,
``core.aggregate.decide``): per B-scan, per aspect-ratio policy, and per patient pseudo-exam.

    # the validation patients of a recipe's split (what the thresholds were calibrated on: optimistic)
    python benchmarks/eval_real.py --config training/configs/oct2017-real.json --out runs/oct2017-real
    # a folder in the OCT2017 layout that no model was trained on (the committed test-only sample)
    python benchmarks/eval_real.py --folder tests/data/oct2017-sample

Prints, side by side in one run:
- per B-scan: balanced accuracy, per-class sensitivity / specificity, macro AUC, ECE, for each aspect
  policy (``squash``, ``crop``, ``letterbox``) applied at evaluation (the card's own is marked);
- a width-only baseline: the accuracy a rule "class = the commonest training class of this image
  width" reaches on the same B-scans (OCT2017's image widths differ by class: a model must beat it
  by far, or it may be reading the width);
- per pseudo-exam: the B-scans of each patient grouped as ``core.io.open_path`` groups a folder, then
  the app's decision: tiers, referral sensitivity / specificity, eyes sent home with disease.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.aggregate import decide, evaluate_eyes  # noqa: E402
from core.inference import Screener, default_card_path  # noqa: E402
from core.io import open_path  # noqa: E402
from core.preprocess import ASPECT_POLICIES, preprocess_bscans  # noqa: E402
from core.train.data import Sample, read_grey, read_oct2017  # noqa: E402
from core.train.metrics import classification_metrics  # noqa: E402


def _samples(a) -> tuple[list[Sample], list[Sample], str]:
    """(evaluated samples, training samples for the width baseline, what they are)."""
    if a.folder:
        s = read_oct2017(a.folder, classes=None)
        return s, [], f"folder {a.folder}"
    from training.config import load_config
    from training.recipes import prepare

    ws = prepare(load_config(a.config), a.out)
    train, val = ws.train_val(a.fold)
    test = ws.test(a.fold)
    if a.split == "test":
        return test, train, f"test patients of fold {a.fold} (split {ws.plan.hash})"
    return val, train, f"validation patients of fold {a.fold} (split {ws.plan.hash}; the thresholds were set on them)"


def _per_bscan(screener: Screener, samples: list[Sample], aspect: str, batch: int = 32) -> np.ndarray:
    card = screener.card
    out = []
    for i in range(0, len(samples), batch):
        x = np.concatenate(
            [
                preprocess_bscans(read_grey(s.path), card.input_size, card.mean, card.std, aspect)
                for s in samples[i : i + batch]
            ]
        )
        out.append(screener.predict(x)[0])
    return np.concatenate(out)


def _width_baseline(train: list[Sample], test: list[Sample], classes: list[str]) -> float | None:
    if not train:
        return None
    from PIL import Image

    def width(s: Sample) -> int:
        with Image.open(s.path) as im:
            return im.size[0]

    by_width: dict[int, Counter] = {}
    for s in train:
        by_width.setdefault(width(s), Counter())[s.label] += 1
    overall = Counter(s.label for s in train).most_common(1)[0][0]
    pred = [by_width[w].most_common(1)[0][0] if (w := width(s)) in by_width else overall for s in test]
    y = np.array([classes.index(s.label) for s in test])
    p = np.array([classes.index(c) for c in pred])
    return float(np.mean([(p[y == k] == k).mean() for k in np.unique(y)]))


def _balanced(m: dict) -> float:
    return float(np.mean([v["sensitivity"] for v in m["per_class"].values() if v["support"]]))


def _pseudo_exams(screener: Screener, samples: list[Sample]):
    """The samples' files linked into one folder and opened as the app opens a folder."""
    with tempfile.TemporaryDirectory() as tmp:
        for s in samples:
            dest = Path(tmp) / s.path.parent.name / s.path.name
            dest.parent.mkdir(exist_ok=True)
            os.symlink(Path(s.path).resolve(), dest)
        errors: list = []
        vols = open_path(tmp, errors)
        eyes, truth = [], []
        for v in tqdm(vols, desc="pseudo-exams", leave=False):
            e = decide(screener.screen(v), screener.card.thresholds)
            eyes.append(e)
            truth.append(str(v.label).lower())
    return eyes, truth, len(errors)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(default_card_path()), help="model card (default: the bundled model)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="recipe whose split names the patients (with --out)")
    src.add_argument("--folder", help="a folder in the OCT2017 layout (CLASS/CLASS-PATIENT-N.jpeg)")
    p.add_argument("--out", help="the recipe's output folder (holds splits.json)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write every number here")
    a = p.parse_args(argv)
    if a.config and not a.out:
        p.error("--config needs --out (the folder with splits.json)")

    t0 = time.perf_counter()
    screener = Screener(a.model, threads=a.threads)
    card = screener.card
    samples, train, what = _samples(a)
    samples = [s for s in samples if s.label in card.classes]
    classes = list(card.classes)
    y = np.array([classes.index(s.label) for s in samples])
    counts = Counter(s.label for s in samples)
    print(
        f"model {card.name} v{card.version} ({card.arch}, input {card.input_size[0]}x{card.input_size[1]}, "
        f"aspect {card.aspect}) on {len(samples)} real B-scans of "
        f"{len({s.group for s in samples})} patients: {what}"
    )
    print("  classes: " + ", ".join(f"{c} {counts.get(c, 0)}" for c in classes))
    print(f"  {card.warning}")
    results: dict = {"model": card.name, "version": card.version, "samples": what, "n": len(samples), "per_aspect": {}}
    print(f"\nper B-scan{'':12}balanced acc  macro AUC  ECE    " + "  ".join(f"{c:>12}" for c in classes))
    print(f"{'':23}{'':34}" + "  ".join(f"{'sens / spec':>12}" for _ in classes))
    for aspect in ASPECT_POLICIES:
        probs = _per_bscan(screener, samples, aspect)
        m = classification_metrics(y, probs, classes)
        results["per_aspect"][aspect] = m
        mark = " (card)" if aspect == card.aspect else ""
        cells = "  ".join(
            f"{100 * m['per_class'][c]['sensitivity']:5.1f}/{100 * m['per_class'][c]['specificity']:5.1f}"
            if m["per_class"][c]["support"]
            else f"{'-':>12}"
            for c in classes
        )
        print(f"  {aspect + mark:<21}{100 * _balanced(m):10.1f} %  {m['macro_auc']:9.3f}  {m['ece']:.3f}  {cells}")
    wb = _width_baseline(train, samples, classes)
    if wb is not None:
        results["width_only_balanced_accuracy"] = wb
        print(f"  {'width-only baseline':<21}{100 * wb:10.1f} %  (class = commonest training class of the image width)")

    eyes, truth, n_bad = _pseudo_exams(screener, samples)
    em = evaluate_eyes(eyes, truth=truth, thresholds=card.thresholds)
    results["per_eye"] = em
    sizes = Counter(e.n_bscans for e in eyes)
    print(
        f"\nper pseudo-exam ({len(eyes)} exams of one patient's B-scans; B-scans per exam: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(sizes.items()))
        + f"; {n_bad} unreadable)"
    )
    print("  tiers: " + ", ".join(f"{k} {v}" for k, v in sorted(em["tiers"].items())))
    labels = sorted({k for row in em["confusion"].values() for k in row})
    print("  truth \\ decided " + " ".join(f"{c:>10}" for c in labels))
    for t in sorted(em["confusion"]):
        print(f"  {t:>15} " + " ".join(f"{em['confusion'][t].get(c, 0):>10}" for c in labels))
    print(
        f"  label accuracy {100 * em['accuracy']:.1f} %, "
        f"referral sensitivity {100 * em['referral_sensitivity']:.1f} %, "
        f"specificity {100 * em['referral_specificity']:.1f} %, CNV urgent {100 * em['urgent_sensitivity']:.1f} %, "
        f"review {em['n_review']}, diseased eyes sent home {em['referable_sent_home']}"
    )
    print(
        "  (a pseudo-exam of fewer than "
        f"{card.thresholds.min_gradable} B-scans can refer but never gets 'no referral': normal ones go to review)"
    )
    results["seconds"] = time.perf_counter() - t0
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=1, default=float) + "\n", encoding="utf-8")
    print(f"\n{results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
