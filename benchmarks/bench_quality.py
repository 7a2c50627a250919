"""The gradability check (core/quality.py), fast path against the straightforward reference, side by side.

    python benchmarks/bench_quality.py [--repeat 5]

The reference below is the previous implementation (float conversion at full size, np.percentile /
np.median sorts). Both run on the same B-scans in one process, alternating, single-threaded OpenCV:
the 44 real OCT2017 test-sample B-scans resized to 496 x 512, a synthetic 128-B-scan cube, and
degraded copies (blank, saturated, black padding, dimmed). Prints ms per B-scan for each, the
speed-up, whether every B-scan gets the same verdict, and the largest change of each measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu  # noqa: E402

from core import quality  # noqa: E402
from core.preprocess import to_unit  # noqa: E402
from core.synthetic import simulate_volume  # noqa: E402


def reference_measure(
    bscan: np.ndarray, limits: quality.QualityLimits = quality.DEFAULT_LIMITS
) -> quality.BScanQuality:
    """The previous core.quality.measure, kept here as the yardstick."""
    full = np.asarray(bscan)
    unit = to_unit(full)
    h, w = unit.shape
    th, tw = min(h, quality._WORK_HEIGHT), min(w, quality._WORK_WIDTH)
    img = cv2.resize(unit, (tw, th), interpolation=cv2.INTER_AREA) if (th, tw) != (h, w) else unit
    lo, hi = np.percentile(img, (0.5, 99.5))
    mean = cv2.blur(img, (5, 5))
    var = np.maximum(cv2.blur(img * img, (5, 5)) - mean * mean, 0.0)
    flat = var < quality._FLAT_STD**2
    border_mask = flat & ((mean >= quality._WHITE) | (mean <= quality._BLACK))
    inside = ~border_mask
    saturated = quality._saturated_fraction(full, border_mask)
    fill = float(np.median(img[inside])) if inside.any() else 0.0
    clean = np.where(border_mask, fill, img).astype(np.float32)
    h, w = clean.shape
    smooth = cv2.GaussianBlur(clean, (0, 0), sigmaX=max(1.0, w / 64), sigmaY=max(1.0, h / 100))
    contrast = smooth.max(axis=0) - np.median(smooth, axis=0)
    col_inside = inside.mean(axis=0) >= 0.25
    if col_inside.any():
        signal = float(np.percentile(contrast[col_inside], 90))
        retina_cols = float((contrast[col_inside] >= limits.tissue_contrast).sum() / w)
    else:
        signal, retina_cols = 0.0, 0.0
    return quality.BScanQuality(float(hi - lo), float(border_mask.mean()), saturated, signal, retina_cols)


def _bscans() -> list[np.ndarray]:
    files = sorted((REPO / "tests" / "data" / "oct2017-sample").rglob("*.jpeg"))
    real = [np.asarray(Image.open(f).convert("L").resize((512, 496), Image.BILINEAR)) for f in files]
    synth = list(simulate_volume("drusen", n_bscans=128, seed=3).bscans)
    degraded = []
    for b in real[:8]:
        degraded.append(np.full_like(b, 37))  # blank
        sat = b.copy()
        sat[100:300] = 255
        degraded.append(sat)  # saturated band
        pad = b.copy()
        pad[:, :300] = 0
        degraded.append(pad)  # black padding
        degraded.append((b // 6).astype(np.uint8))  # dim
    return real + synth + degraded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    bscans = _bscans()
    for f in (quality.measure, reference_measure):  # warm-up
        for b in bscans[:10]:
            f(b)
    times: dict[str, list[float]] = {"fast": [], "reference": []}
    for _ in range(args.repeat):
        for name, f in (("fast", quality.measure), ("reference", reference_measure)):
            t = time.perf_counter()
            for b in bscans:
                f(b)
            times[name].append((time.perf_counter() - t) / len(bscans) * 1e3)
    fast = [quality.measure(b) for b in bscans]
    ref = [reference_measure(b) for b in bscans]
    rule = lambda q: q.reason().split(" (")[0]  # noqa: E731 - the failed rule, without its figures
    same = sum(rule(a) == rule(b) for a, b in zip(fast, ref, strict=True))
    fields = [f.name for f in dataclasses.fields(quality.BScanQuality)]
    diffs = {k: max(abs(getattr(a, k) - getattr(b, k)) for a, b in zip(fast, ref, strict=True)) for k in fields}
    ungradable = sum(bool(q.reason()) for q in ref)
    t_fast, t_ref = min(times["fast"]), min(times["reference"])
    print(f"CPU: {cpu()}; OpenCV {cv2.__version__}, 1 thread; numpy {np.__version__}")
    print(f"B-scans: {len(bscans)} (44 real 496x512, 128 synthetic, 32 degraded; {ungradable} ungradable)")
    print(f"reference  {t_ref:6.2f} ms per B-scan (best of {args.repeat})")
    print(f"fast       {t_fast:6.2f} ms per B-scan")
    print(f"speed-up   {t_ref / t_fast:6.2f}x")
    print(f"same verdict (gradable, or the same failed rule) on {same}/{len(bscans)} B-scans")
    print("largest change per measurement: " + ", ".join(f"{k} {v:.4f}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
