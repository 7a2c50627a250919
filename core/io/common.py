"""Shared helpers of the readers: size limits, content sniffing, deterministic ids, grey conversion.

Formats are recognised by their first bytes (DICOM 'DICM' at offset 128, PNG/JPEG/TIFF/BMP magic),
not by the file name; only vendor formats without a stable magic number are recognised by extension.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import errno
import functools
import logging
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from core import limits
from core.errors import (
    CorruptFileError,
    EmptyInputError,
    FileMissingError,
    ImageTooLargeError,
    InputError,
    UnsupportedFormatError,
)

log = logging.getLogger(__name__)

__all__ = [
    "on_volume_read",
    "volume_read",
    "Kind",
    "sniff",
    "check_size",
    "stable_uid",
    "to_grey",
    "to_unsigned",
    "reason",
    "guarded",
    "VENDOR_EXTENSIONS",
    "float_to_uint8",
    "SIDECAR_SUFFIXES",
    "is_ignorable",
]

_UID_NAMESPACE = uuid.UUID("6f1c7f0e-5b1a-4d5e-9a63-0c7a1f3e8b21")  # OCT Screen's own namespace

VENDOR_EXTENSIONS = {
    ".e2e": "Heidelberg E2E",
    ".vol": "Heidelberg VOL",
    ".fds": "Topcon FDS",
    ".fda": "Topcon FDA",
    ".img": "Zeiss IMG",
}

SIDECAR_SUFFIXES = {".txt", ".md", ".csv", ".json", ".xml", ".ini", ".log", ".html", ".htm", ".db"}
"""Files commonly found beside exports (notes, indexes); skipped silently in folder scans."""


class Kind(str, enum.Enum):
    """What a file's first bytes say it is."""

    DICOM = "dicom"
    PNG = "png"
    JPEG = "jpeg"
    TIFF = "tiff"
    BMP = "bmp"
    VENDOR = "vendor"
    UNKNOWN = "unknown"

    @property
    def is_image(self) -> bool:
        """True for the raster image formats read by core/io/images.py."""
        return self in (Kind.PNG, Kind.JPEG, Kind.TIFF, Kind.BMP)


_MAGIC: list[tuple[bytes, Kind]] = [
    (b"\x89PNG\r\n\x1a\n", Kind.PNG),
    (b"\xff\xd8\xff", Kind.JPEG),
    (b"II*\x00", Kind.TIFF),
    (b"MM\x00*", Kind.TIFF),
    (b"II+\x00", Kind.TIFF),
    (b"MM\x00+", Kind.TIFF),
    (b"BM", Kind.BMP),
]


def sniff(path: Path) -> Kind:
    """Recognise a file by content. Raises FileMissingError (unreadable, a link loop),
    UnsupportedFormatError (not a regular file: a FIFO, socket or device is never opened, since
    reading one can block forever) or EmptyInputError (0 bytes)."""
    try:
        st = os.stat(path)
    except OSError as e:
        why = "is a loop of symbolic links" if e.errno == errno.ELOOP else f"cannot be read ({e.strerror or e})"
        raise FileMissingError(path, why) from None
    if not stat.S_ISREG(st.st_mode):
        what = (
            "a named pipe (FIFO)"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "not a regular file"
        )
        raise UnsupportedFormatError(path, f"is {what}, not a regular file; it is not opened")
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024 if path.suffix.lower() == ".xml" else 132)
    except OSError as e:
        raise FileMissingError(path, f"cannot be read ({e.strerror or e})") from None
    if not head:
        raise EmptyInputError(path, "the file is empty (0 bytes)")
    if len(head) >= 132 and head[128:132] == b"DICM":
        return Kind.DICOM
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if path.suffix.lower() in VENDOR_EXTENSIONS:
        return Kind.VENDOR
    if path.suffix.lower() == ".xml" and b"<HEDX" in head:  # a Heidelberg XML export (core/io/heyex.py)
        return Kind.VENDOR
    return Kind.UNKNOWN


def is_ignorable(path: Path) -> bool:
    """Hidden files and sidecar notes that a folder scan skips without complaint."""
    name = path.name
    return (
        name.startswith(".") or name.lower() in {"thumbs.db", "desktop.ini"} or path.suffix.lower() in SIDECAR_SUFFIXES
    )


def check_size(path: Path, n: int, h: int, w: int, *, charge: bool = False) -> None:
    """Refuse to decode images whose declared size no OCT volume has (decompression bombs): the
    limits of :mod:`core.limits` (side, frame, B-scan count, volume). With ``charge`` the pixels are
    also charged to the scan's ``max_run_pixels`` budget (call it once per decode)."""
    lim = limits.current()
    if n < 1 or h < 1 or w < 1:
        raise EmptyInputError(path, f"declared image size {n} x {h} x {w} holds no pixels")
    if h > lim.max_side or w > lim.max_side:
        raise ImageTooLargeError(
            path,
            f"declared image size {w} x {h} pixels exceeds the limit of {lim.max_side} pixels per side "
            "(max_side); refusing to decode",
        )
    if h * w > lim.max_frame_pixels:
        raise ImageTooLargeError(
            path,
            f"declared image size {w} x {h} = {h * w} pixels exceeds the limit of {lim.max_frame_pixels} "
            "pixels per frame (max_frame_pixels); refusing to decode",
        )
    if n > lim.max_bscans:
        raise ImageTooLargeError(
            path, f"declares {n} B-scans, more than the limit of {lim.max_bscans} per volume (max_bscans)"
        )
    if n * h * w > lim.max_volume_pixels:
        raise ImageTooLargeError(
            path,
            f"declared volume size {n} x {h} x {w} = {n * h * w} pixels exceeds "
            f"the limit of {lim.max_volume_pixels} (max_volume_pixels); refusing to decode",
        )
    if charge:
        limits.charge(path, n * h * w)


def stable_uid(*parts: object) -> str:
    """A deterministic DICOM UID (2.25.x) derived from ``parts``: the same input gives the same id.

    Used as study/series identity for image stacks, so that two different patients who share an id
    (NEH ids restart per class folder) never become the same eye.
    """
    name = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"  # name-based UUID as a UID (PS3.5 B.2)


def to_grey(pixels: np.ndarray) -> np.ndarray:
    """[..., h, w, 3|4] colour or [..., h, w] grey -> grey, keeping uint8/uint16 (ITU-R 601 luma)."""
    if pixels.ndim >= 3 and pixels.shape[-1] in (3, 4):
        rgb = pixels[..., :3].astype(np.float32)
        grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        info = np.iinfo(pixels.dtype) if pixels.dtype.kind in "ui" else np.iinfo(np.uint8)
        return np.clip(np.rint(grey), 0, info.max).astype(pixels.dtype if pixels.dtype.kind == "u" else np.uint8)
    return pixels


def float_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Float pixels (NaN/inf as 0) stretched from their own minimum..maximum to uint8."""
    finite = np.nan_to_num(pixels.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(finite.min()), float(finite.max())
    return np.rint((finite - lo) * (255.0 / max(hi - lo, 1e-12))).astype(np.uint8)


def to_unsigned(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Integer pixels -> uint8/uint16 without changing values when they fit; otherwise rescaled to uint16."""
    if pixels.dtype in (np.uint8, np.uint16):
        return pixels
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    if pixels.dtype.kind not in "iu":
        raise UnsupportedFormatError(
            path, f"pixel type {pixels.dtype} is not supported (expected 8 or 16 bit integer grey levels)"
        )
    lo, hi = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
    if lo >= 0 and hi <= 255 and pixels.dtype.itemsize == 1:
        return pixels.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return pixels.astype(np.uint16)
    log.info("%s: pixel values %d..%d rescaled to 16 bit", path, lo, hi)
    scaled = (pixels.astype(np.float64) - lo) * (65535.0 / max(hi - lo, 1))
    return np.rint(scaled).astype(np.uint16)


def reason(e: BaseException, path: Path | None = None) -> str:
    """First line of a library exception, without the file name (the InputError adds it), capped."""
    text = str(e).strip()
    if path is not None:
        text = text.replace(f"'{path}'", "").replace(str(path), "").replace(" ''", "").strip(" :")
    text = text.splitlines()[0] if text else type(e).__name__
    return text[:200]


T = TypeVar("T")


_VOLUME_READ: contextvars.ContextVar[Callable[[object], None] | None] = contextvars.ContextVar(
    "octscreen_volume_read", default=None
)


@contextlib.contextmanager
def on_volume_read(callback: Callable[[object], None]) -> Iterator[None]:
    """Inside the block, ``callback(volume)`` is called as each volume read from one file (a
    multi-frame DICOM, a vendor file) is made, before the next file is decoded: ``octscreen screen``
    gives the pixels back there when it holds too many (``core.screening.PixelHold``)."""
    token = _VOLUME_READ.set(callback)
    try:
        yield
    finally:
        _VOLUME_READ.reset(token)


def volume_read(volume: T) -> T:
    """Hand ``volume`` (just made from one file) to the :func:`on_volume_read` callback, if any."""
    callback = _VOLUME_READ.get()
    if callback is not None:
        callback(volume)
    return volume


def guarded(path: Path, errors: list[InputError], call: Callable[[], T]) -> T | None:
    """Run one reader step for ``path``; an InputError, or any unexpected exception (the reader
    boundary: logged with its traceback, reported as CorruptFileError), goes to ``errors`` and gives None."""
    try:
        return call()
    except InputError as e:
        errors.append(e)
    except Exception as e:  # reader boundary: a damaged file must never crash a folder scan
        log.exception("%s: unexpected failure while reading", path)
        errors.append(CorruptFileError(path, f"could not be read ({type(e).__name__}: {reason(e, path)})"))
    return None


def decode_all(
    members: list[T], errors: list[InputError], path_of: Callable[[T], Path], load: Callable[[T], np.ndarray]
) -> tuple[list[np.ndarray], list[T]]:
    """Decode the first frame of each member through :func:`guarded`; bad members go to ``errors``.
    Returns the decoded frames and the members they came from, in order."""
    frames, kept = [], []
    for m in members:
        pixels = guarded(path_of(m), errors, functools.partial(load, m))
        if pixels is not None:
            frames.append(pixels[0])
            kept.append(m)
    return frames, kept
