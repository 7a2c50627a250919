"""Vendor formats through the optional ``oct-converter`` package (``pip install 'octscreen[vendor]'``).

Heidelberg .e2e, Topcon .fds/.fda and Zeiss .img are read with oct-converter's documented readers
(``E2E(path).read_oct_volume()`` returns a list of ``OCTVolumeWithMetaData``, the others one);
Heidelberg .vol has no oct-converter reader and is refused with advice. Without the extra
installed, a ``MissingExtraError`` says what to install.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import CorruptFileError, InputError, MissingExtraError, UnsupportedFormatError
from core.io.common import VENDOR_EXTENSIONS, check_size, stable_uid, to_unsigned
from core.volume import DeviceInfo, Laterality, OctVolume, PatientInfo, PixelSpacing, StudyInfo

log = logging.getLogger(__name__)

__all__ = ["read_vendor", "EXTRA_HINT"]

EXTRA_HINT = "pip install 'octscreen[vendor]'"
_READERS = {
    ".e2e": ("E2E", "Heidelberg Engineering"),
    ".fds": ("FDS", "Topcon"),
    ".fda": ("FDA", "Topcon"),
    ".img": ("IMG", "Carl Zeiss Meditec"),
}


def _has_oct_converter() -> bool:
    return importlib.util.find_spec("oct_converter") is not None


def read_vendor(path: Path) -> list[OctVolume]:
    """Read a vendor export; raises MissingExtraError without oct-converter, CorruptFileError on failure."""
    suffix = path.suffix.lower()
    fmt = VENDOR_EXTENSIONS.get(suffix, suffix)
    if suffix not in _READERS:
        raise UnsupportedFormatError(
            path,
            f"{fmt} files cannot be read by OCT Screen; export the exam from "
            f"the device software as DICOM (Ophthalmic Tomography) instead",
        )
    if not _has_oct_converter():
        raise MissingExtraError(
            path, f"reading {fmt} files needs the optional vendor reader (oct-converter): {EXTRA_HINT}"
        )
    class_name, manufacturer = _READERS[suffix]
    try:
        readers = importlib.import_module("oct_converter.readers")
        reader = getattr(readers, class_name)(str(path))
        result = reader.read_oct_volume()
    except InputError:
        raise
    except Exception as e:  # reader boundary: oct-converter raises anything on damaged files
        raise CorruptFileError(path, f"could not read this {fmt} file ({str(e)[:200] or type(e).__name__})") from None
    items = result if isinstance(result, (list, tuple)) else [result]
    volumes = [_convert(path, item, manufacturer, i) for i, item in enumerate(items)]
    if not volumes:
        raise CorruptFileError(path, f"this {fmt} file holds no OCT volume")
    return volumes


def _date(value: object) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.strftime("%Y%m%d")
    text = "".join(ch for ch in str(value or "") if ch.isdigit())
    return text[:8] if len(text) >= 8 else ""


def _pixels(path: Path, frames: Any) -> np.ndarray:
    """``frames``: oct-converter's volume (a list or array of B-scans, its type varies between versions)."""
    slices = [np.asarray(f) for f in frames]
    if not slices:
        raise CorruptFileError(path, "the volume holds no B-scans")
    h, w = slices[0].shape[:2]
    check_size(path, len(slices), h, w, charge=True)
    if any(s.shape != slices[0].shape for s in slices):
        raise CorruptFileError(path, "the B-scans of one volume have different sizes")
    stack = np.stack(slices)
    if stack.dtype.kind == "f":
        finite = np.nan_to_num(stack, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(finite.min()), float(finite.max())
        return np.rint((finite - lo) * (255.0 / max(hi - lo, 1e-12))).astype(np.uint8)
    return to_unsigned(stack, path)


def _convert(path: Path, item: object, manufacturer: str, index: int) -> OctVolume:
    get = lambda name: getattr(item, name, None)  # noqa: E731 - attributes vary between versions
    surname, first = get("surname") or "", get("first_name") or ""
    name = f"{surname}^{first}" if (surname or first) else ""
    spacing = PixelSpacing()
    px = get("pixel_spacing")
    if px is not None and len(px) == 3:
        # oct-converter's order is [lateral, between B-scans, axial] (its DICOM export writes PixelSpacing
        # = [px[2], px[0]] and SliceThickness = px[1])
        spacing = PixelSpacing(slice=float(px[1]) or None, row=float(px[2]) or None, column=float(px[0]) or None)
    return OctVolume(
        _pixels(path, get("volume")),
        laterality=Laterality.parse(get("laterality")),
        patient=PatientInfo(
            patient_id=str(get("patient_id") or ""),
            name=name,
            birth_date=_date(get("DOB")),
            sex=str(get("sex") or "")[:1].upper(),
        ),
        study=StudyInfo(
            study_uid=stable_uid("vendor", path.resolve()),
            series_uid=stable_uid("vendor", path.resolve(), index),
            study_date=_date(get("acquisition_date") or get("acquistion_date")),
            description=str(get("volume_id") or ""),
        ),
        device=DeviceInfo(manufacturer=manufacturer),
        spacing=spacing,
        source=path,
        source_files=(path,),
        extra={"format": path.suffix.lower().lstrip("."), "index_in_file": index},
    )
