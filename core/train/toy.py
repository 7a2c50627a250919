"""A tiny, fast stand-in for ``core.synthetic.write_dataset`` (same folder layout and manifest columns).

Layered grey images where drusen are bumps under the bright bottom band and CNV a bright blob above
it: learnable in a few steps by a tiny network. For unit tests and smoke runs only; real recipes
use ``core.synthetic``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["write_toy_dataset", "toy_bscan"]

CLASSES = ("normal", "drusen", "cnv")


def toy_bscan(label: str, rng: np.random.Generator, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """One uint8 toy B-scan of class ``label``."""
    h, w = size
    img = rng.normal(40, 12, size=(h, w))
    base = int(h * 0.65) + int(rng.integers(-3, 4))
    img[base - 10 : base - 6] += 70
    img[base : base + 4] += 150
    if label == "drusen":
        for c in rng.integers(w // 6, w - w // 6, size=3):
            img[base - 5 : base, max(0, c - 4) : c + 4] += 140
    elif label == "cnv":
        c = int(rng.integers(w // 4, 3 * w // 4))
        img[base - 18 : base - 8, c - 8 : c + 8] += 180
    return np.clip(img, 0, 255).astype(np.uint8)


def write_toy_dataset(
    out_dir: str | Path, *, patients: int = 12, n_bscans: int = 4, seed: int = 0, size: tuple[int, int] = (48, 64)
) -> Path:
    """Write ``OUT/<CLASS>/<pid>/<OD|OS>/<NNN>_<LABEL>.png`` and ``OUT/manifest.csv``; return the manifest.

    Patients cycle through the classes; in a drusen / CNV eye the first B-scan is normal (so B-scan
    and eye labels differ, as in real volumes). Patient ids restart in each class folder.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    rows = []
    counters = dict.fromkeys(CLASSES, 0)
    for p in range(patients):
        cls = CLASSES[p % len(CLASSES)]
        counters[cls] += 1
        pid = f"{counters[cls]:03d}"
        for eye in ("OD", "OS"):
            folder = out / cls.upper() / pid / eye
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_bscans):
                label = "normal" if (i == 0 and cls != "normal") else cls
                name = f"{i:03d}_{label.upper()}.png"
                Image.fromarray(toy_bscan(label, rng, size)).save(folder / name)
                rows.append(
                    [
                        f"{cls.upper()}/{pid}/{eye}/{name}",
                        label,
                        f"{cls.upper()}/{pid}",
                        eye,
                        f"{cls.upper()}/{pid}/{eye}",
                        i,
                        cls,
                    ]
                )
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "patient_id", "eye", "volume_id", "bscan_index", "eye_label"])
        w.writerows(rows)
    return manifest
