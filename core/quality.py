"""Per-B-scan gradability: can a grader (or the model) read this B-scan at all?

A B-scan is ungradable when it is
- blank: (almost) no intensity variation at all (a dropped frame, a constant fill);
- mostly registration border / padding: flat white or black fill that eye-tracking
  registration or cropping leaves where no image was acquired covers most of the frame;
- saturated: a large part of the image (outside any border) sits at the maximum value;
- low signal: the retina is too dim to stand out from the background (media opacity, defocus,
  a blink during the sweep), in absolute terms or, in a volume, compared with the volume's other
  B-scans (a blink dims a few frames of an otherwise good cube);
- too little retina visible: a bright retinal band is present in too few A-scan columns
  (the retina is cropped, cut off, or out of the scan window).

``assess(volume)`` returns ``(gradable [n] bool, reasons [n] str)``, '' for gradable B-scans.
Thresholds are tuned so the real OCT2017 sample B-scans (including those with white registration
wedges) and the synthetic volumes pass; see tests/test_quality.py. The measurements of one B-scan
are available from ``measure(bscan)`` for tuning and display.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from core.preprocess import to_unit
from core.volume import OctVolume

__all__ = ["assess", "assess_bscan", "measure", "BScanQuality", "QualityLimits", "DEFAULT_LIMITS"]


@dataclass(frozen=True)
class QualityLimits:
    """Thresholds of the gradability rules (intensities in [0, 1])."""

    blank_range: float = 0.04  # p99.5 - p0.5 below this: blank frame
    border_fraction: float = 0.5  # flat white/black fill above this fraction: mostly border
    saturated_fraction: float = 0.1  # pixels at maximum (outside the border) above this: saturated
    tissue_contrast: float = 0.12  # a column holds retina when its smoothed peak exceeds its median by this
    low_signal: float = 0.12  # 90th percentile of column contrasts below this: low signal
    retina_columns: float = 0.4  # fewer columns with retina than this fraction: too little retina
    relative_signal: float = 0.7  # signal below this fraction of the volume's median: low signal (blink)
    relative_min_bscans: int = 5  # the relative rule needs at least this many B-scans


DEFAULT_LIMITS = QualityLimits()

_WORK_HEIGHT = 256  # B-scans are measured at (at most) this many rows ...
_WORK_WIDTH = 256  # ... and columns: enough for the rules, fast for 128-frame volumes
_FLAT_STD = 2.5 / 255.0  # local standard deviation of fill (JPEG noise included)
_WHITE, _BLACK = 0.96, 1.5 / 255.0  # fill is (near) pure white or pure black; dim speckle is not fill


@dataclass(frozen=True)
class BScanQuality:
    """Measurements of one B-scan (fractions in [0, 1])."""

    value_range: float  # p99.5 - p0.5 of intensities
    border: float  # fraction of flat white/black fill
    saturated: float  # fraction of non-border pixels at the frame's (clipped) maximum value
    signal: float  # 90th percentile over columns of (smoothed column peak - column median)
    retina_columns: float  # fraction of non-border columns whose contrast reaches the tissue threshold

    def reason(self, limits: QualityLimits = DEFAULT_LIMITS) -> str:
        """Why this B-scan is ungradable ('' when gradable); the first rule that fails."""
        if self.value_range < limits.blank_range:
            return "blank frame (no image signal)"
        if self.border > limits.border_fraction:
            return f"mostly registration border or padding ({100 * self.border:.0f} % of the frame)"
        if self.saturated > limits.saturated_fraction:
            return f"saturated ({100 * self.saturated:.0f} % of pixels at maximum brightness)"
        if self.signal < limits.low_signal:
            return "low signal (retina too dim to grade)"
        if self.retina_columns < limits.retina_columns:
            return f"too little retina visible (retina in {100 * self.retina_columns:.0f} % of the scan width)"
        return ""


def _work_image(bscan: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The B-scan in [0, 1], shrunk (area average) to at most the working size; for uint8 input also
    the shrunk uint8 image (shrunk before the float conversion, 4x fewer pixels to convert), whose
    256-bin histogram gives the percentiles without sorting."""
    h, w = bscan.shape
    th, tw = _work_size(h, w)
    if bscan.dtype == np.uint8:
        small = cv2.resize(bscan, (tw, th), interpolation=cv2.INTER_AREA) if (th, tw) != (h, w) else bscan
        return small.astype(np.float32) * np.float32(1.0 / 255.0), small
    unit = to_unit(bscan)
    if (th, tw) != (h, w):
        unit = cv2.resize(unit, (tw, th), interpolation=cv2.INTER_AREA)
    return unit, None


def _work_size(h: int, w: int) -> tuple[int, int]:
    """At most the working size, by a whole factor where one fits (496 x 512 -> 248 x 256): OpenCV's
    area resize has a fast path for whole factors, and each work pixel is then exactly one block."""
    fh, fw = -(-h // _WORK_HEIGHT), -(-w // _WORK_WIDTH)
    return h // fh, w // fw


def _percentile(x: np.ndarray, q: float) -> float:
    """``np.percentile(x, q)`` (linear interpolation) by one partition: no sort, no overhead."""
    pos = (x.size - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, x.size - 1)
    part = np.partition(x, [lo, hi])
    return float(part[lo] + (part[hi] - part[lo]) * (pos - lo))


def _histogram(small: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """256-bin histogram of a uint8 image (only where ``where`` is True), by OpenCV (5x numpy's bincount)."""
    mask = None if where is None else where.view(np.uint8)
    return cv2.calcHist([small], [0], mask, [256], [0, 256]).ravel().astype(np.int64)


def _hist_quantiles(counts: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """Quantiles (0..1) of uint8 values from their 256-bin histogram, in [0, 1] intensity units
    (the lower of the two middle values for an even count, as ``np.percentile(method='lower')``)."""
    cum = np.cumsum(counts)
    total = int(cum[-1])
    if total == 0:
        return [0.0 for _ in qs]
    return [float(np.searchsorted(cum, q * (total - 1), side="right")) / 255.0 for q in qs]


def _saturated_fraction(full: np.ndarray, border_mask: np.ndarray) -> float:
    """Fraction of non-border pixels (full resolution) sitting exactly at a clipped maximum.

    Integer B-scans clip at one value: uint8 at 255 (or the frame maximum if the device never
    reaches 255), uint16 at the frame maximum (12- and 16-bit devices differ). Speckle makes exact
    ties at the maximum rare in an unclipped image, so many of them mean saturation.
    """
    if not np.issubdtype(full.dtype, np.integer):
        full = np.round(to_unit(full) * 255.0).astype(np.uint8)
    top = full.max()
    if top == 0:
        return 0.0
    h, w = full.shape
    # OpenCV's vectorised compare / count on uint8 masks (numpy's bool temporaries cost 3x more)
    inside = cv2.resize(
        (border_mask == 0).view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST
    )  # 1 inside, 0 border
    n_inside = cv2.countNonZero(inside)
    if not n_inside:
        return 0.0
    if full.dtype == np.uint8:
        at_top = cv2.compare(full, int(top), cv2.CMP_EQ)  # type: ignore[call-overload]  # a scalar is fine at run time
    else:
        at_top = (full == top).view(np.uint8)
    return float(cv2.countNonZero(cv2.bitwise_and(at_top, inside)) / n_inside)


def measure(bscan: np.ndarray, limits: QualityLimits = DEFAULT_LIMITS) -> BScanQuality:
    """The gradability measurements of one ``[h, w]`` B-scan (uint8 / uint16 / float)."""
    full = np.asarray(bscan)
    if full.ndim != 2 or min(full.shape) < 8:
        raise ValueError(f"a B-scan must be a 2-D image of at least 8 x 8 pixels, got {list(full.shape)}")
    img, small = _work_image(full)
    if small is not None:
        lo, hi = _hist_quantiles(_histogram(small), (0.005, 0.995))
    else:
        lo, hi = (float(x) for x in np.percentile(img, (0.5, 99.5)))
    value_range = float(hi - lo)

    # Fill: locally flat and at an extreme (white registration wedges, black padding).
    mean = cv2.blur(img, (5, 5))
    var = np.maximum(cv2.blur(img * img, (5, 5)) - mean * mean, 0.0)
    flat = var < _FLAT_STD**2
    border_mask = flat & ((mean >= _WHITE) | (mean <= _BLACK))
    border = cv2.countNonZero(border_mask.view(np.uint8)) / border_mask.size
    inside = ~border_mask
    saturated = _saturated_fraction(full, border_mask)

    # Retina: a bright band along each column, well above that column's typical level; fill pixels
    # are replaced by the median image level so border edges do not look like tissue.
    if border == 1.0:
        fill = 0.0
    elif small is not None:
        (fill,) = _hist_quantiles(_histogram(small, inside), (0.5,))
    else:
        fill = float(np.median(img[inside]))
    clean = np.where(border_mask, np.float32(fill), img)
    h, w = clean.shape
    smooth = cv2.GaussianBlur(clean, (0, 0), sigmaX=max(1.0, w / 64), sigmaY=max(1.0, h / 100))
    # column median from every other row: the columns are smoothed over ~h/40 rows already
    mid = smooth[::2] if h >= 64 else smooth
    k = (mid.shape[0] - 1) // 2
    contrast = smooth.max(axis=0) - np.partition(mid, k, axis=0)[k]
    col_inside = inside.mean(axis=0) >= 0.25
    if col_inside.any():
        signal = _percentile(contrast[col_inside], 90.0)
        retina_cols = float((contrast[col_inside] >= limits.tissue_contrast).sum() / w)
    else:
        signal, retina_cols = 0.0, 0.0
    return BScanQuality(value_range, border, saturated, signal, retina_cols)


def assess_bscan(bscan: np.ndarray, limits: QualityLimits = DEFAULT_LIMITS) -> str:
    """'' when the B-scan is gradable, else the reason."""
    return measure(bscan, limits).reason(limits)


def _measure_one(bscan: np.ndarray, limits: QualityLimits) -> tuple[BScanQuality | None, str]:
    try:
        measured = measure(bscan, limits)
    except ValueError as e:  # e.g. a 4 x 4 "B-scan": nothing to grade
        return None, f"cannot be graded ({e})"
    return measured, measured.reason(limits)


def assess(
    volume: OctVolume, limits: QualityLimits = DEFAULT_LIMITS, *, map_fn: Callable | None = None
) -> tuple[np.ndarray, list[str]]:
    """Gradability of every B-scan of ``volume``: (bool ``[n]``, reasons with '' for gradable ones).

    Besides the per-B-scan rules, a B-scan whose signal is below ``limits.relative_signal`` times
    the median signal of the volume's otherwise gradable B-scans is marked low signal (volumes of
    at least ``limits.relative_min_bscans`` B-scans).
    ``map_fn``: an ordered ``map`` to measure the B-scans with, e.g. a thread pool's (OpenCV and
    numpy release the GIL, so B-scans are measured side by side); the built-in ``map`` by default.
    """
    measured = list((map_fn or map)(lambda b: _measure_one(b, limits), volume.bscans))
    qs: list[BScanQuality | None] = [q for q, _ in measured]
    reasons: list[str] = [r for _, r in measured]
    ok_signal = [q.signal for q, r in zip(qs, reasons, strict=True) if r == "" and q is not None]
    if len(qs) >= limits.relative_min_bscans and len(ok_signal) >= limits.relative_min_bscans:
        median = float(np.median(ok_signal))
        for i, q in enumerate(qs):
            if reasons[i] == "" and q is not None and q.signal < limits.relative_signal * median:
                reasons[i] = (
                    f"low signal compared with the rest of the volume ({100 * q.signal / median:.0f} % "
                    "of the median; blink or defocus)"
                )
    return np.array([r == "" for r in reasons], dtype=bool), reasons
