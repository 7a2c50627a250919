"""Class activation maps and their overlays.

Overlay: a B-scan (grey) with a CAM in [0, 1] blended as a heat colour map; used by the GUI viewer,
the report and the DICOM Secondary Capture export, so the three look the same.
(The CAM network wrapper and its equivalence to Grad-CAM live below the overlay helpers.)
"""

from __future__ import annotations

import cv2
import numpy as np

from core.preprocess import to_uint8

__all__ = ["heat_rgb", "overlay"]


def heat_rgb(cam: np.ndarray) -> np.ndarray:
    """CAM in [0, 1] ``[h, w]`` to an RGB uint8 heat map (OpenCV 'turbo': perceptually ordered)."""
    c = np.clip(np.nan_to_num(cam.astype(np.float32)), 0.0, 1.0)
    bgr = cv2.applyColorMap(np.round(c * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(bscan: np.ndarray, cam: np.ndarray | None, alpha: float = 0.4, threshold: float = 0.2) -> np.ndarray:
    """B-scan ``[h, w]`` (uint8/uint16) plus CAM (any size, [0, 1]) to RGB uint8 ``[h, w, 3]``.

    Where the CAM is below ``threshold`` the B-scan shows through untouched, so the anatomy the
    model did not use stays readable; above it the heat colour is blended with weight
    ``alpha * cam``.
    """
    grey = to_uint8(bscan)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if cam is None or alpha <= 0:
        return rgb
    h, w = grey.shape
    c = cam.astype(np.float32)
    if c.shape != (h, w):
        c = cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR)
    c = np.clip(c, 0.0, 1.0)
    weight = np.where(c >= threshold, alpha * c, 0.0)[..., None]
    out = rgb.astype(np.float32) * (1 - weight) + heat_rgb(c).astype(np.float32) * weight
    return np.round(out).astype(np.uint8)
