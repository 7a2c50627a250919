"""Heidelberg Engineering (Spectralis/HEYEX) ``.vol`` files and XML export folders, read with eyepy
(the optional ``vendor`` extra), after checks of our own.

eyepy parses what it is given without limits, so before it runs:

- ``.vol``: the fixed 2048-byte file header is read here (``HSF-OCT-`` magic, B-scan size and count,
  localizer size, B-scan header size) and checked against :mod:`core.limits` and the file size, so a
  header that claims a huge volume is refused before anything is allocated.
- XML export (``<HEDX>`` root, one XML beside the B-scan images and the localizer/SLO image): the
  XML's size is capped, every image it references must be a plain file name in the XML's own folder
  (no ``..``, no path: nothing outside the export is ever opened), must exist, and every OCT image's
  header size is checked before eyepy decodes it. The images an XML references belong to its volume
  and are not read again as a separate image stack.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import importlib.util
import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core import limits
from core.enface import FUNDUS, Fundus, stretch_uint8
from core.errors import CorruptFileError, ImageTooLargeError, InputError, MissingExtraError, UnsupportedFormatError
from core.io.common import check_size, float_to_uint8, reason, stable_uid
from core.volume import DeviceInfo, Laterality, OctVolume, PatientInfo, PixelSpacing, StudyInfo

__all__ = ["is_heyex_xml", "xml_members", "read_vol", "read_xml", "MAX_XML_BYTES", "EXTRA_HINT"]

EXTRA_HINT = "pip install 'octscreen[vendor]'"
MAX_XML_BYTES = 64 * 1024 * 1024
_VOL_HEADER = 2048
_MANUFACTURER = "Heidelberg Engineering"


def _has_eyepy() -> bool:
    return importlib.util.find_spec("eyepy") is not None


def _need_eyepy(path: Path, what: str) -> Any:
    if not _has_eyepy():
        raise MissingExtraError(path, f"reading {what} needs the optional vendor reader (eyepy): {EXTRA_HINT}")
    return importlib.import_module("eyepy.io.he")


# --- .vol -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VolHeader:
    version: str
    size_x: int
    n_bscans: int
    size_y: int
    size_x_slo: int
    size_y_slo: int
    scan_pattern: int
    bscan_hdr_size: int

    @property
    def expected_bytes(self) -> int:
        bscan = self.bscan_hdr_size + self.size_x * self.size_y * 4  # float32 samples
        return _VOL_HEADER + self.size_x_slo * self.size_y_slo + self.n_bscans * bscan


def vol_header(path: Path) -> VolHeader:
    """The checked fixed header of a Heidelberg ``.vol`` file."""
    with open(path, "rb") as fh:
        head = fh.read(_VOL_HEADER)
    if not head.startswith(b"HSF-OCT-"):
        raise CorruptFileError(path, "not a Heidelberg .vol file (its first bytes are not 'HSF-OCT-')")
    if len(head) < _VOL_HEADER:
        raise CorruptFileError(path, f"the file ends inside its {_VOL_HEADER}-byte header ({len(head)} bytes)")
    size_x, n_bscans, size_y = struct.unpack_from("<3I", head, 12)
    size_x_slo, size_y_slo = struct.unpack_from("<2I", head, 48)
    (scan_pattern,) = struct.unpack_from("<i", head, 96)
    (bscan_hdr_size,) = struct.unpack_from("<I", head, 100)
    h = VolHeader(
        head[:12].split(b"\0")[0].decode("ascii", "replace"),
        size_x,
        n_bscans,
        size_y,
        size_x_slo,
        size_y_slo,
        scan_pattern,
        bscan_hdr_size,
    )
    check_size(path, n_bscans, size_y, size_x)
    lim = limits.current()
    if size_x_slo > lim.max_side or size_y_slo > lim.max_side:
        raise ImageTooLargeError(
            path, f"its localizer image claims {size_x_slo} x {size_y_slo} pixels, over {lim.max_side} per side"
        )
    if not 256 <= bscan_hdr_size <= 4 * 1024 * 1024:
        raise CorruptFileError(path, f"B-scan header size {bscan_hdr_size} bytes is impossible (256 bytes to 4 MiB)")
    if scan_pattern in (2, 5):
        kind = "a circle scan" if scan_pattern == 2 else "a radial (star) scan"
        raise UnsupportedFormatError(path, f"holds {kind}; OCT Screen screens line and volume scans only")
    size = path.stat().st_size
    if size < h.expected_bytes:
        raise CorruptFileError(
            path,
            f"truncated: its header describes {n_bscans} B-scans of {size_x} x {size_y} "
            f"({h.expected_bytes:,} bytes) but the file has {size:,} bytes",
        )
    return h


def read_vol(path: Path) -> OctVolume:
    """Read a Heidelberg ``.vol`` file (header checked here, then parsed by eyepy)."""
    h = vol_header(path)
    he = _need_eyepy(path, "Heidelberg .vol files")
    limits.charge(path, h.n_bscans * h.size_y * h.size_x)
    try:
        reader = he.HeVolReader(path)
        ev = reader.volume
        parsed = reader.parsed_file  # eyepy's volume meta leaves the patient out for .vol
        patient = {"patient_id": parsed.get("patient_id"), "dob": parsed.get("dob")}
    except InputError:
        raise
    except Exception as e:  # reader boundary: eyepy raises anything on damaged files
        raise CorruptFileError(path, f"could not read this .vol file ({reason(e, path)})") from None
    return _convert(path, ev, "vol", h.version, patient=patient)


# --- XML export ------------------------------------------------------------------------------------


def is_heyex_xml(path: Path) -> bool:
    """True for a Heidelberg XML export file (root element ``HEDX`` in its first KiB)."""
    if path.suffix.lower() != ".xml":
        return False
    try:
        with open(path, "rb") as fh:
            return b"<HEDX" in fh.read(1024)
    except OSError:
        return False


@dataclasses.dataclass(frozen=True)
class _Export:
    oct_images: tuple[Path, ...]
    localizer: Path | None


def _parse_export(path: Path) -> _Export:
    size = path.stat().st_size
    if size > MAX_XML_BYTES:
        raise ImageTooLargeError(path, f"the XML is {size:,} bytes, over the {MAX_XML_BYTES:,} bytes an export has")
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, UnicodeDecodeError, ValueError) as e:
        raise CorruptFileError(path, f"the XML cannot be parsed ({reason(e, path)})") from None
    if root.tag != "HEDX" or not len(root):
        raise CorruptFileError(path, "not a Heidelberg XML export (no <HEDX> root with a body)")
    folder = path.parent
    octs: list[Path] = []
    localizer: Path | None = None
    for image in root[0].iter("Image"):
        kind = (image.findtext("./ImageType/Type") or "").strip()
        url = image.findtext("./ImageData/ExamURL")
        if kind not in ("OCT", "LOCALIZER"):
            continue
        if url is None:
            raise CorruptFileError(path, f"an {kind} image has no ExamURL (its file name)")
        name = url.split("\\")[-1]  # as eyepy resolves it: the last Windows path component
        if not name or name in (".", "..") or Path(name).name != name or "\0" in name:
            raise CorruptFileError(
                path, f"image reference {url[:120]!r} leaves the export's folder; only plain file names are read"
            )
        member = folder / name
        if not member.is_file():
            raise CorruptFileError(path, f"the {kind} image {name} it references is missing from {folder}")
        if kind == "OCT":
            octs.append(member)
        else:
            localizer = member
    if not octs:
        raise CorruptFileError(path, "the export references no OCT B-scan image")
    if localizer is None:
        raise CorruptFileError(path, "the export references no localizer (SLO) image, which eyepy needs")
    return _Export(tuple(octs), localizer)


def xml_members(path: Path) -> list[Path]:
    """Every image file the export ``path`` references (its B-scans and its localizer)."""
    export = _parse_export(path)
    return [*export.oct_images, *([export.localizer] if export.localizer else [])]


def _image_size(member: Path, xml: Path) -> tuple[int, int]:
    try:
        with Image.open(member) as im:
            return im.size
    except Exception as e:  # PIL raises many kinds on damaged headers
        raise CorruptFileError(
            member, f"a B-scan of the export {xml.name} cannot be read ({reason(e, member)})"
        ) from None


def read_xml(path: Path) -> OctVolume:
    """Read a Heidelberg XML export (``path``: the XML file)."""
    export = _parse_export(path)
    sizes = {_image_size(m, path) for m in export.oct_images}
    if len(sizes) != 1:
        raise CorruptFileError(path, f"its B-scans have different sizes ({sorted(sizes)})")
    ((w, h),) = sizes
    check_size(path, len(export.oct_images), h, w, charge=True)
    if export.localizer is not None:
        lw, lh = _image_size(export.localizer, path)
        check_size(export.localizer, 1, lh, lw)
    he = _need_eyepy(path, "Heidelberg XML exports")
    try:
        importlib.import_module("eyepy.io.he.xml_reader").get_xml_root.cache_clear()  # it caches by path
        ev = he.HeXmlReader(path).volume
    except InputError:
        raise
    except Exception as e:  # reader boundary
        raise CorruptFileError(path, f"could not read this Heidelberg XML export ({reason(e, path)})") from None
    return _convert(path, ev, "xml", "", members=(path, *export.oct_images))


# --- eyepy volume -> OctVolume ----------------------------------------------------------------------


def _date(value: object) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.strftime("%Y%m%d") if value.year > 1901 else ""
    text = "".join(ch for ch in str(value or "")[:10] if ch.isdigit())
    return text if len(text) == 8 and not text.startswith("0001") else ""


def _positive(value: object) -> float | None:
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) and f > 0 else None


def _convert(
    path: Path,
    ev: Any,
    fmt: str,
    version: str,
    members: tuple[Path, ...] | None = None,
    patient: dict[str, Any] | None = None,
) -> OctVolume:
    meta = ev.meta
    pixels = np.asarray(ev.data)
    if pixels.ndim != 3 or pixels.size == 0:
        raise CorruptFileError(path, f"eyepy returned no B-scans (shape {pixels.shape})")
    if pixels.dtype != np.uint8:
        pixels = float_to_uint8(pixels)
    patient = patient or meta.get("patient") or {}
    first, last = str(patient.get("firstname") or ""), str(patient.get("lastname") or "")
    name = f"{last}^{first}" if (first or last) else ""
    pid = str(patient.get("patient_id") or "").strip()
    return OctVolume(
        np.ascontiguousarray(pixels),
        laterality=Laterality.parse(meta.get("laterality")),
        patient=PatientInfo(
            patient_id="" if pid.lower() == "unknown" else pid, name=name, birth_date=_date(patient.get("dob"))
        ),
        study=StudyInfo(
            study_uid=stable_uid("heyex", path.resolve()),
            series_uid=stable_uid("heyex", path.resolve(), 0),
            study_date=_date(meta.get("visit_date")) or _date(meta.get("exam_time")),
        ),
        device=DeviceInfo(manufacturer=_MANUFACTURER, model="Spectralis", software_version=version),
        spacing=PixelSpacing(
            slice=_positive(meta.get("scale_z")),
            row=_positive(meta.get("scale_y")),
            column=_positive(meta.get("scale_x")),
        ),
        source=path,
        source_files=members or (path,),
        extra={"format": fmt, **_fundus(ev, pixels.shape[0])},
    )


def _fundus(ev: Any, n: int) -> dict[str, Fundus]:
    """The export's localizer (the Spectralis infrared SLO) with each B-scan's start and end on it, as
    ``{FUNDUS: Fundus}``; nothing when it or a B-scan position is missing (never a reason to fail)."""
    try:
        loc = ev.localizer
        image = np.asarray(loc.data)
        sx, sy = _positive(loc.meta.get("scale_x")), _positive(loc.meta.get("scale_y"))
        metas = list(ev.meta["bscan_meta"])
        if image.ndim != 2 or image.size == 0 or sx is None or sy is None or len(metas) != n:
            return {}
        lines = tuple(
            (
                float(m["start_pos"][0]) / sx,
                float(m["start_pos"][1]) / sy,
                float(m["end_pos"][0]) / sx,
                float(m["end_pos"][1]) / sy,
            )
            for m in metas
        )
        if not all(np.isfinite(v) for line in lines for v in line):
            return {}
        grey = image if image.dtype == np.uint8 else stretch_uint8(image)
        return {FUNDUS: Fundus(np.ascontiguousarray(grey), lines, str(loc.meta.get("modality") or ""))}
    except Exception:  # noqa: BLE001 - the localizer is optional: the B-scans were read
        return {}
