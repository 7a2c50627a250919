"""Vendor formats. ``read_vendor`` dispatches by extension:

- Zeiss Cirrus ``.img``: our own reader (:mod:`core.io.cirrus`; numpy only, geometry from the file
  name and size, content checked).
- Heidelberg ``.vol`` and XML export folders: eyepy after our own header checks (:mod:`core.io.heyex`).
- Heidelberg ``.e2e``, Topcon ``.fds/.fda``: oct-converter's documented readers
  (``E2E(path).read_oct_volume()`` returns a list of ``OCTVolumeWithMetaData``, the others one).
  oct-converter's Topcon readers call ``numpy.fromstring`` on binary data, which numpy 2 removed
  (``ValueError: The binary mode of fromstring is removed``): every Topcon file then failed as if
  damaged. :func:`_numpy2_shim` gives those two modules a numpy whose ``fromstring`` reads binary
  data with ``frombuffer`` (what numpy's own message says to use), leaving numpy itself untouched.

eyepy and oct-converter are the optional ``vendor`` extra (``pip install 'octscreen[vendor]'``);
without it a ``MissingExtraError`` says what to install.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.metadata
import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import CorruptFileError, InputError, MissingExtraError, UnsupportedFormatError
from core.io import cirrus, heyex
from core.io.common import VENDOR_EXTENSIONS, check_size, float_to_uint8, stable_uid, to_unsigned
from core.volume import DeviceInfo, Laterality, OctVolume, PatientInfo, PixelSpacing, StudyInfo

log = logging.getLogger(__name__)

__all__ = ["read_vendor", "EXTRA_HINT"]

EXTRA_HINT = "pip install 'octscreen[vendor]'"
_READERS = {  # through oct-converter
    ".e2e": ("E2E", "Heidelberg Engineering"),
    ".fds": ("FDS", "Topcon"),
    ".fda": ("FDA", "Topcon"),
}
_NUMPY2_MODULES = ("oct_converter.readers.fds", "oct_converter.readers.fda")


def _has_oct_converter() -> bool:
    return importlib.util.find_spec("oct_converter") is not None


class _Numpy2Shim:
    """numpy for oct-converter's Topcon readers: ``fromstring`` on binary data (removed in numpy 2)
    becomes ``frombuffer(...).copy()``; every other attribute is numpy's own."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def fromstring(string: Any, dtype: Any = float, count: int = -1, *, sep: str = "") -> np.ndarray:
        if sep:
            return np.fromstring(string, dtype=dtype, count=count, sep=sep)
        return np.frombuffer(bytes(string), dtype=dtype, count=count).copy()


def _numpy2_shim() -> None:
    """Install :class:`_Numpy2Shim` as ``np`` in oct-converter's Topcon reader modules (numpy >= 2 only)."""
    if int(np.__version__.split(".")[0]) < 2:
        return
    for name in _NUMPY2_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "np", None) is np:
            setattr(module, "np", _Numpy2Shim())  # noqa: B010 - a module global, set once


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def read_vendor(path: Path) -> list[OctVolume]:
    """Read a vendor export; raises MissingExtraError without the extra, CorruptFileError on failure."""
    suffix = path.suffix.lower()
    if suffix == ".img":
        return [cirrus.read_cirrus(path)]
    if suffix == ".vol":
        return [heyex.read_vol(path)]
    if suffix == ".xml" and heyex.is_heyex_xml(path):
        return [heyex.read_xml(path)]
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
        if manufacturer == "Topcon":
            _numpy2_shim()
        reader = getattr(readers, class_name)(str(path))
        result = reader.read_oct_volume()
    except InputError:
        raise
    except Exception as e:  # reader boundary: oct-converter raises anything on damaged files
        text = str(e)
        if "fromstring" in text:  # the numpy 2 incompatibility, should the shim not reach it
            raise UnsupportedFormatError(
                path,
                f"oct-converter {_version('oct-converter')} cannot read {fmt} files under numpy "
                f"{np.__version__} (it calls numpy.fromstring, removed in numpy 2); the file is not "
                "necessarily damaged: export it as DICOM, or use numpy < 2 for the vendor reader",
            ) from None
        raise CorruptFileError(path, f"could not read this {fmt} file ({text[:200] or type(e).__name__})") from None
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
        return float_to_uint8(stack)
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
