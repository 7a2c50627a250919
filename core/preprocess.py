"""B-scan to model tensor, driven by the model card: the same function serves training
(evaluation transform) and screening, so what the model sees in the clinic is what it saw in
validation.

Steps: intensity to [0, 1] (uint8 / 255; uint16 scaled by its 99.9th percentile, since 16-bit
devices rarely use the full range), resize to the card's input size (area interpolation when
shrinking), grey to 3 channels, (x - mean) / std. Output float32 ``[n, 3, H, W]``.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["to_unit", "to_uint8", "resize", "preprocess_bscans", "normalise"]


def to_unit(bscan: np.ndarray) -> np.ndarray:
    """A B-scan (or stack) as float32 in [0, 1]."""
    a = np.asarray(bscan)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        top = float(np.percentile(a, 99.9)) if a.size else 0.0
        top = top if top > 0 else 65535.0
        return np.clip(a.astype(np.float32) / top, 0.0, 1.0)
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def to_uint8(bscan: np.ndarray) -> np.ndarray:
    """A B-scan as uint8 for display / 8-bit training data."""
    a = np.asarray(bscan)
    if a.dtype == np.uint8:
        return a
    return np.round(to_unit(a) * 255.0).astype(np.uint8)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D image to (height, width)."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    shrinking = img.shape[0] > h or img.shape[1] > w
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def normalise(unit: np.ndarray, mean, std) -> np.ndarray:
    """``[n, H, W]`` in [0, 1] to ``[n, 3, H, W]`` standardised per channel."""
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    x = np.repeat(unit[:, None], 3, axis=1)
    return ((x - m) / s).astype(np.float32, copy=False)


def preprocess_bscans(bscans: np.ndarray, input_size: tuple[int, int], mean=(0.485, 0.456, 0.406),
                      std=(0.229, 0.224, 0.225)) -> np.ndarray:
    """``[n, h, w]`` (or one ``[h, w]``) uint8/uint16 B-scans to a float32 ``[n, 3, H, W]`` batch."""
    b = np.asarray(bscans)
    if b.ndim == 2:
        b = b[None]
    unit = np.stack([resize(to_unit(x), tuple(input_size)) for x in b]).astype(np.float32, copy=False)
    return normalise(unit, mean, std)
