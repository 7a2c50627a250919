"""Montage of real vs synthetic B-scans, one row per class (NORMAL / DRUSEN / CNV).

Left: real Spectralis B-scans from the OCT2017 sample (resized to 496 x 512 for display).
Right: synthetic B-scans from ``core.synthetic`` (for a diseased eye, the B-scan through the
largest lesion; for a normal eye, the central B-scan through the fovea).

    .venv/bin/python scripts/make_montage.py [--out docs/montage_real_vs_synthetic.png] [--seed 0]
    .venv/bin/python scripts/make_montage.py --variety --out docs/montage_synthetic_variety.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from core.synthetic import simulate_volume

REAL_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "oct2017-sample"  # CC BY 4.0
ROWS = ("normal", "drusen", "cnv")
TILE = (496, 512)  # height, width of one tile
LABEL_BAR = 26


def real_tiles(label: str, count: int) -> list[np.ndarray]:
    """The first ``count`` real B-scans of a class (sorted by name), resized to a tile."""
    files = sorted((REAL_DIR / label.upper()).glob("*.jpeg"))[:count]
    tiles = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is not None:
            tiles.append(cv2.resize(img, TILE[::-1], interpolation=cv2.INTER_AREA))
    return tiles


def synthetic_tiles(label: str, count: int, seed: int) -> list[np.ndarray]:
    """``count`` synthetic B-scans of a class, each from its own simulated eye."""
    tiles = []
    for k in range(count):
        vol = simulate_volume(
            label,
            n_bscans=25,
            height=TILE[0],
            width=TILE[1],
            seed=seed + 101 * k,
            laterality="OD" if k % 2 == 0 else "OS",
        )
        index = vol.n_bscans // 2
        if label != "normal":
            # same seed, healthy eye: identical anatomy and noise, so the B-scan that differs most
            # is the one through the largest lesion (the one a grader would show)
            healthy = simulate_volume(
                "normal",
                n_bscans=25,
                height=TILE[0],
                width=TILE[1],
                seed=seed + 101 * k,
                laterality="OD" if k % 2 == 0 else "OS",
            )
            diff = np.abs(vol.bscans.astype(np.int16) - healthy.bscans.astype(np.int16)).mean(axis=(1, 2))
            index = int(np.argmax(diff))
        tiles.append(vol.bscans[index])
    return tiles


def caption(tile: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((LABEL_BAR, tile.shape[1]), 40, np.uint8)
    cv2.putText(bar, text, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, 255, 1, cv2.LINE_AA)
    return np.vstack([bar, tile])


def make_montage(seed: int = 0, per_side: int = 2) -> np.ndarray:
    """The montage as a grey uint8 image."""
    rows = []
    for label in ROWS:
        tiles = [caption(t, f"REAL {label.upper()}") for t in real_tiles(label, per_side)]
        tiles += [caption(t, f"SYNTHETIC {label.upper()}") for t in synthetic_tiles(label, per_side, seed)]
        gap = np.full((TILE[0] + LABEL_BAR, 8), 255, np.uint8)
        row = tiles[0]
        for t in tiles[1:]:
            row = np.hstack([row, gap, t])
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 8), (0, width - r.shape[1])), constant_values=255) for r in rows]
    return np.vstack(rows)


def make_variety(seed: int = 0, rows: int = 3, cols: int = 4) -> np.ndarray:
    """A grid of synthetic B-scans from different simulated eyes and devices (class cycling)."""
    tiles = []
    for k in range(rows * cols):
        label = ROWS[k % len(ROWS)]
        tile = synthetic_tiles(label, 1, seed + 7919 * (k + 1))[0]
        tiles.append(caption(tile, f"SYNTHETIC {label.upper()}"))
    gap_v = np.full((TILE[0] + LABEL_BAR, 8), 255, np.uint8)
    lines = []
    for r in range(rows):
        line = tiles[r * cols]
        for t in tiles[r * cols + 1 : (r + 1) * cols]:
            line = np.hstack([line, gap_v, t])
        lines.append(np.pad(line, ((0, 8), (0, 0)), constant_values=255))
    return np.vstack(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/montage_real_vs_synthetic.png"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-side", type=int, default=2)
    ap.add_argument("--scale", type=float, default=0.5, help="shrink the montage by this factor")
    ap.add_argument(
        "--variety",
        action="store_true",
        help="a grid of synthetic B-scans only, to show how widely appearance varies "
        "(use with --out docs/montage_synthetic_variety.png)",
    )
    args = ap.parse_args()
    img = make_variety(args.seed) if args.variety else make_montage(args.seed, args.per_side)
    if args.scale != 1.0:
        img = cv2.resize(img, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp.png")
    cv2.imwrite(str(tmp), img)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({img.shape[1]} x {img.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
