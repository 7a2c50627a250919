"""En-face view of a volume: the mean intensity projection over depth (the SLO-like picture).

Each B-scan becomes one row (the mean of every A-scan over its depth), so the image has one row per
B-scan, in acquisition order (row 0 = the first B-scan), and one column per A-scan. When the volume
knows its physical spacing (``PixelSpacing.slice`` between B-scans, ``column`` between A-scans) the
rows are stretched so that the picture has the scan's physical aspect (a 6 x 6 mm cube of 25 B-scans
of 512 A-scans becomes a square 512 x 512 image); otherwise it stays ``[n_bscans, width]`` and
:attr:`EnFace.physical` says the aspect is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.results import VolumeResult
from core.tiers import DEFAULT_TIERS, class_colour
from core.volume import OctVolume

__all__ = ["FUNDUS", "EnFace", "Fundus", "bscan_colours", "device_fundus", "enface", "mean_projection", "stretch_uint8"]

#: Percentiles of the projection mapped to black and white (a few hot or dead A-scans do not set the contrast).
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5
#: The longest side of an en-face image (pixels); larger ones are scaled down, keeping the aspect.
MAX_SIDE = 2048


def mean_projection(bscans: np.ndarray) -> np.ndarray:
    """The mean over depth of ``bscans[n, h, w]``: float32 ``[n, w]`` in the B-scans' own units."""
    b = np.asarray(bscans)
    if b.ndim != 3:
        raise ValueError(f"bscans must be [n, h, w], got shape {b.shape}")
    return b.mean(axis=1, dtype=np.float64).astype(np.float32)


def stretch_uint8(values: np.ndarray) -> np.ndarray:
    """``values`` linearly mapped to uint8: the :data:`LOW_PERCENTILE` to black, :data:`HIGH_PERCENTILE`
    to white (clipped); a flat image is mid-grey."""
    v = np.asarray(values, np.float32)
    lo, hi = (float(x) for x in np.percentile(v, [LOW_PERCENTILE, HIGH_PERCENTILE]))
    if hi - lo <= 1e-6:
        return np.full(v.shape, 128, np.uint8)
    return np.round(np.clip((v - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclass(frozen=True)
class EnFace:
    """An en-face image and how its rows map to B-scans.

    image: uint8 ``[rows, width]``; B-scan ``i`` covers rows ``[i * rows / n, (i + 1) * rows / n)``.
    physical: True when the rows were stretched to the scan's physical aspect (spacing known).
    size_mm: (height, width) of the scanned area in millimetres when known, else None.
    """

    image: np.ndarray
    n_bscans: int
    physical: bool
    size_mm: tuple[float, float] | None

    @property
    def rows_per_bscan(self) -> float:
        return self.image.shape[0] / self.n_bscans

    def bscan_at(self, row: float) -> int:
        """The B-scan shown at image row ``row`` (clamped to the volume)."""
        return int(min(max(int(row // self.rows_per_bscan), 0), self.n_bscans - 1))

    def row_of(self, index: int) -> float:
        """The centre row of B-scan ``index``."""
        return (index + 0.5) * self.rows_per_bscan


def enface(volume: OctVolume) -> EnFace:
    """The mean intensity projection of ``volume`` as a uint8 picture with the scan's physical aspect
    when its B-scan and A-scan spacing are known (rows interpolated linearly between B-scans)."""
    proj = stretch_uint8(mean_projection(volume.bscans))
    n, w = proj.shape
    step, col = volume.spacing.slice, volume.spacing.column
    if not step or not col or step <= 0 or col <= 0:
        return EnFace(proj, n, physical=False, size_mm=None)
    size_mm = (n * step, w * col)
    rows, cols = n * step / col, float(w)  # in A-scan steps: the physical aspect
    if rows < n:  # B-scans closer than A-scans: widen instead of dropping B-scans
        rows, cols = float(n), w * n / rows
    shrink = min(1.0, MAX_SIDE / max(rows, cols))
    size = (max(1, round(cols * shrink)), max(1, round(rows * shrink)))
    if size != (w, n):
        proj = cv2.resize(proj, size, interpolation=cv2.INTER_LINEAR)
    return EnFace(np.ascontiguousarray(proj), n, physical=True, size_mm=size_mm)


#: ``OctVolume.extra`` key of the device's own fundus / SLO image (a :class:`Fundus`), where the file has one.
FUNDUS = "fundus"


@dataclass(frozen=True)
class Fundus:
    """The device's own en-face picture (Heidelberg's infrared SLO localizer) and where each B-scan lies on it.

    image: uint8 ``[h, w]``; lines: per B-scan ``(x0, y0, x1, y1)`` in image pixels (start and end of
    the B-scan on the picture); modality: the device's name for it ('NIR', 'SLO', ...).
    """

    image: np.ndarray
    lines: tuple[tuple[float, float, float, float], ...]
    modality: str = ""

    def bscan_near(self, x: float, y: float) -> int:
        """The B-scan whose line passes closest to image point ``(x, y)``."""
        seg = np.asarray(self.lines, np.float64).reshape(-1, 4)
        a, b = seg[:, :2], seg[:, 2:]
        d = b - a
        t = np.clip(((np.array([x, y]) - a) * d).sum(1) / np.maximum((d * d).sum(1), 1e-12), 0.0, 1.0)
        gap = np.hypot(*(a + t[:, None] * d - np.array([x, y])).T)
        return int(gap.argmin())


def device_fundus(volume: OctVolume) -> Fundus | None:
    """The fundus / SLO image the file carried (``extra[FUNDUS]``), when it has one line per B-scan."""
    f = volume.extra.get(FUNDUS)
    return f if isinstance(f, Fundus) and len(f.lines) == volume.n_bscans else None


def bscan_colours(result: VolumeResult) -> list[str]:
    """Each B-scan's decision colour (hex), for the en-face edge: its predicted class's colour
    (``core.tiers.class_colour``, as the charts and the report), the rescan grey when ungradable."""
    grey = DEFAULT_TIERS["rescan"].colour
    predicted = result.predicted()
    return [
        class_colour(result.classes[int(c)], int(c)) if bool(ok) else grey
        for c, ok in zip(predicted, result.gradable, strict=True)
    ]
