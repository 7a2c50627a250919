"""B-scan to model tensor, driven by the model card: the same function serves training
(evaluation transform) and screening, so what the model sees in the clinic is what it saw in
validation.

Steps: intensity to [0, 1] (uint8 / 255; uint16 scaled by its 99.9th percentile, since 16-bit
devices rarely use the full range), fit to the input's aspect ratio by the card's ``aspect`` policy
(``squash``: resize the whole B-scan; ``crop``: the central part with the input's aspect ratio;
``letterbox``: the whole B-scan, padded with black to that ratio), resize to the card's input size
(area interpolation when shrinking), grey to 3 channels, (x - mean) / std. Output float32
``[n, 3, H, W]``. Real B-scans are 512 to 1536 px wide at 496 px high, and other devices export
3:1 crops: no aspect ratio is assumed.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["to_unit", "to_uint8", "resize", "fit_aspect", "preprocess_bscans", "normalise", "ASPECT_POLICIES"]

ASPECT_POLICIES = ("squash", "crop", "letterbox")


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


def fit_aspect(img: np.ndarray, size: tuple[int, int], policy: str = "squash") -> np.ndarray:
    """``img`` (2-D) brought to the aspect ratio of ``size`` = (height, width) by ``policy``.

    ``squash`` returns it unchanged (the resize then distorts it); ``crop`` keeps the central part
    with that ratio; ``letterbox`` pads it with zeros (black), centred, to that ratio.
    """
    if policy == "squash":
        return img
    if policy not in ASPECT_POLICIES:
        raise ValueError(f"aspect policy must be one of {ASPECT_POLICIES}, not {policy!r}")
    h, w = img.shape[:2]
    ratio = size[1] / size[0]
    want_w = int(round(h * ratio))
    if policy == "crop":
        if want_w <= w:
            x0 = (w - want_w) // 2
            return img[:, x0 : x0 + max(1, want_w)]
        want_h = max(1, int(round(w / ratio)))
        y0 = (h - want_h) // 2
        return img[y0 : y0 + want_h]
    if want_w >= w:
        out = np.zeros((h, want_w), img.dtype)
        x0 = (want_w - w) // 2
        out[:, x0 : x0 + w] = img
        return out
    want_h = int(round(w / ratio))
    out = np.zeros((want_h, w), img.dtype)
    y0 = (want_h - h) // 2
    out[y0 : y0 + h] = img
    return out


def normalise(unit: np.ndarray, mean, std) -> np.ndarray:
    """``[n, H, W]`` in [0, 1] to ``[n, 3, H, W]`` standardised per channel."""
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    x = np.repeat(unit[:, None], 3, axis=1)
    return ((x - m) / s).astype(np.float32, copy=False)


def preprocess_bscans(
    bscans: np.ndarray,
    input_size: tuple[int, int],
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    aspect: str = "squash",
) -> np.ndarray:
    """``[n, h, w]`` (or one ``[h, w]``) uint8/uint16 B-scans to a float32 ``[n, 3, H, W]`` batch."""
    b = np.asarray(bscans)
    if b.ndim == 2:
        b = b[None]
    size = (int(input_size[0]), int(input_size[1]))
    unit = np.stack([resize(fit_aspect(to_unit(x), size, aspect), size) for x in b]).astype(np.float32, copy=False)
    return normalise(unit, mean, std)
