"""DICOM readers: multi-frame Ophthalmic Tomography (OPT), single-frame OCT series, DICOMDIR.

Headers are read first with large values deferred (pixel data stays on disk until a volume is
assembled), so a folder scan can classify and group thousands of files without decoding them.
Compressed pixel data (JPEG baseline/lossless, JPEG 2000, RLE) is decoded by pydicom's pixel
handlers (pylibjpeg plug-ins). Every failure becomes an ``InputError`` subclass naming the file.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from natsort import natsorted
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.uid import UID, JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes

from core import limits
from core.errors import (
    CorruptFileError,
    FileMissingError,
    InconsistentVolumeError,
    InputError,
    NoPixelDataError,
    NotOctError,
    UnsupportedCompressionError,
    UnsupportedFormatError,
)
from core.io.common import check_size, decode_all, guarded, reason, to_grey, to_unsigned, volume_read
from core.io.writer import GROUND_TRUTH_MARKER, OPT_SOP_CLASS
from core.volume import DeviceInfo, Laterality, OctVolume, PatientInfo, PixelSpacing, StudyInfo

try:  # JPEG 2000 frames decoded on several threads (tifffile imports it too: no start-up cost)
    import imagecodecs
except ImportError:  # pydicom decodes them instead
    imagecodecs = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

__all__ = [
    "DicomFile",
    "read_header",
    "dicomdir_members",
    "volume_from_file",
    "volumes_from_series",
    "read_dicom_files",
    "SOURCE_INSTANCES",
]

DICOMDIR_SOP_CLASS = UID("1.2.840.10008.1.3.10")
#: ``OctVolume.extra`` key: the instance (and frame) each B-scan was read from, so that what we write
#: can reference it (``core.dicom_export``). Not kept by ``core.deid`` (the UIDs identify the exam).
SOURCE_INSTANCES = "source_instances"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass
class DicomFile:
    """One DICOM file whose header has been read and checked (pixel data not decoded yet)."""

    path: Path
    ds: Dataset
    is_dicomdir: bool = False

    @property
    def n_frames(self) -> int:
        """NumberOfFrames (1 when absent or unreadable)."""
        try:
            return max(1, int(self.ds.get("NumberOfFrames", 1) or 1))
        except (TypeError, ValueError):
            return 1

    @property
    def series_key(self) -> str:
        """SeriesInstanceUID, or the folder for files without one (they group per folder)."""
        return str(self.ds.get("SeriesInstanceUID", "") or f"no-series:{self.path.parent}")


# ---------------------------------------------------------------------------------------- headers
def read_header(path: Path, *, force: bool = False) -> DicomFile:
    """Read and check a DICOM header: an OCT image with decodable pixel data, or a DICOMDIR.

    Raises NotOctError, NoPixelDataError, UnsupportedCompressionError, ImageTooLargeError or
    CorruptFileError (all naming ``path``).
    """
    try:
        ds = pydicom.dcmread(path, defer_size="256 KB", force=force)
    except InputError:
        raise
    except Exception as e:  # reader boundary: pydicom raises many kinds on damaged files
        raise CorruptFileError(path, f"not a readable DICOM file ({reason(e, path)})") from None
    meta = getattr(ds, "file_meta", None)
    media_class = meta.get("MediaStorageSOPClassUID", "") if meta is not None else ""
    if force and "SOPClassUID" not in ds and not media_class:
        raise CorruptFileError(path, "not a readable DICOM file (no DICOM header found)")
    if media_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return DicomFile(path, ds, is_dicomdir=True)
    f = DicomFile(path, ds)
    try:
        _check_oct(path, ds, media_class)
        # elements are parsed on first access: parse the ones grouping uses now, inside this check
        _ = (f.series_key, ds.get("SOPInstanceUID"), ds.get("InstanceNumber"), ds.get("ImagePositionPatient"))
    except InputError:
        raise
    except Exception as e:  # a header element that cannot be parsed
        raise CorruptFileError(path, f"damaged DICOM header ({reason(e, path)})") from None
    return f


def _check_oct(path: Path, ds: Dataset, media_class: str) -> None:
    if len(ds) == 0:
        raise CorruptFileError(path, "not a readable DICOM file (it ends inside the header: truncated)")
    sop = UID(str(ds.get("SOPClassUID", "") or media_class or ""))
    modality = str(ds.get("Modality", "") or "").upper()
    if not sop and not modality:
        raise CorruptFileError(path, "damaged DICOM header (no SOP Class UID and no Modality)")
    if sop != OPT_SOP_CLASS and modality != "OPT":
        what = sop.name if sop else "a DICOM object without SOP class"
        raise NotOctError(
            path,
            f"this DICOM file is {what} (modality {modality or 'none'}), not an OCT "
            f"image (Ophthalmic Tomography, modality OPT)",
        )
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise NoPixelDataError(
            path, "this OCT DICOM file has no pixel data (a header-only file, or the file is truncated)"
        )
    if "PixelData" not in ds:
        raise UnsupportedFormatError(path, "floating-point OCT pixel data is not supported")
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if ds.get(keyword) in (None, ""):
            raise CorruptFileError(path, f"the DICOM header lacks {keyword} (0028,xxxx); cannot read the image")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    check_size(path, n, int(ds.Rows), int(ds.Columns))
    bits = int(ds.BitsAllocated)
    if bits not in (1, 8, 16, 32):
        raise UnsupportedFormatError(path, f"{bits}-bit pixels are not supported")
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", ""))) if hasattr(ds, "file_meta") else UID("")
    if syntax and not syntax.is_transfer_syntax:
        raise UnsupportedCompressionError(
            path, f"pixel data is encoded with an unknown transfer syntax ({syntax}) that no installed decoder can read"
        )
    if syntax and syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except (NotImplementedError, ValueError):
            available = False
        if not available:
            raise UnsupportedCompressionError(
                path, f"pixel data is compressed with {syntax.name} ({syntax}), which no installed decoder can read"
            )


# --------------------------------------------------------------------------------------- DICOMDIR
def dicomdir_members(f: DicomFile, errors: list[InputError] | None = None) -> list[Path]:
    """Files a DICOMDIR references (IMAGE and other records with a ReferencedFileID).

    A reference must stay inside the DICOMDIR's folder: an absolute path, a ``..`` that leaves it, a
    symbolic link out of it or a NUL byte is refused (an ``InputError`` naming the DICOMDIR and the
    entry, appended to ``errors``; raised without ``errors``) and never opened.
    """
    root = f.path.parent
    base = root.resolve()
    found: list[Path] = []
    try:  # the records are parsed lazily: a damaged sequence fails here, not later
        refs = [record.get("ReferencedFileID") for record in f.ds.get("DirectoryRecordSequence", [])]
    except Exception as e:
        raise CorruptFileError(
            f.path, f"damaged DICOMDIR: its directory records cannot be read ({reason(e, f.path)})"
        ) from None
    for ref in refs:
        if not ref:
            continue
        parts = [str(p) for p in ref] if isinstance(ref, MultiValue) else [str(ref)]
        shown = "/".join(parts).encode("unicode_escape").decode("ascii")  # a NUL byte shown as \x00
        why = ""
        if any("\x00" in p for p in parts):
            why = "contains a NUL byte"
        elif any(Path(p).is_absolute() or p.startswith(("/", "\\")) for p in parts):
            why = "is an absolute path"
        else:
            try:
                inside = root.joinpath(*parts).resolve().is_relative_to(base)
            except (OSError, ValueError, RuntimeError):  # RuntimeError: a link loop (Python < 3.13)
                inside = False
            if not inside:
                why = "points outside the DICOMDIR's folder"
        if why:
            err = InputError(f.path, f"DICOMDIR entry '{shown}' {why}; it is not followed")
            if errors is None:
                raise err
            errors.append(err)
            continue
        found.append(root.joinpath(*parts))
    return found


# ----------------------------------------------------------------------------------- pixel access
_J2K_SYNTAXES = {str(u) for u in JPEG2000TransferSyntaxes}  # JPEG 2000 and HTJ2K (pydicom's list)
_SOC_SIZ = b"\xff\x4f\xff\x51"


def j2k_frame_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) that a JPEG 2000 codestream's SIZ marker declares (None: no SIZ marker found
    in its first 4 KiB). Reads a few header bytes only: the decoder never runs."""
    at = frame.find(_SOC_SIZ, 0, 4096)  # a raw codestream starts with it; a JP2 file has boxes first
    if at < 0 or len(frame) < at + 4 + 2 + 2 + 16:
        return None
    xsiz, ysiz, xo, yo = (int.from_bytes(frame[at + 8 + 4 * i : at + 12 + 4 * i], "big") for i in range(4))
    return max(xsiz - xo, 0), max(ysiz - yo, 0)


_JPEG_FAMILY = {str(u) for u in (*JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes)} | _J2K_SYNTAXES


def _check_compressed_frames(f: DicomFile) -> None:
    """Checks on the encapsulated frames before any decoder runs:

    - each JPEG 2000 frame's own declared size must be the header's (a 600-byte frame may claim
      60000 × 60000 pixels: the DICOM header check alone does not stop that decompression bomb);
    - each JPEG / JPEG-LS / JPEG 2000 frame must end with its end-of-image marker (FFD9): a truncated
      frame decodes to plausible-looking garbage with some decoders, and would be screened."""
    ds = f.ds
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    if syntax not in _JPEG_FAMILY:
        return
    rows, cols = int(ds.Rows), int(ds.Columns)
    try:
        frames = generate_frames(ds.PixelData, number_of_frames=f.n_frames)
        for i, frame in enumerate(frames):
            if syntax in _J2K_SYNTAXES:
                size = j2k_frame_size(frame)
                if size is None:
                    raise CorruptFileError(f.path, f"JPEG 2000 frame {i + 1} has no codestream header (SIZ marker)")
                if size != (cols, rows):
                    check_size(f.path, 1, size[1], size[0])  # a bomb is named as one
                    raise CorruptFileError(
                        f.path,
                        f"JPEG 2000 frame {i + 1} declares {size[0]} x {size[1]} pixels while the DICOM header "
                        f"says {cols} x {rows}; refusing to decode",
                    )
            if not frame.rstrip(b"\x00").endswith(b"\xff\xd9"):
                raise CorruptFileError(
                    f.path,
                    f"compressed frame {i + 1} of {f.n_frames} is truncated (no end-of-image marker); "
                    "it would decode to garbage",
                )
    except InputError:
        raise
    except Exception as e:  # a damaged encapsulation (basic offset table, item tags)
        raise CorruptFileError(f.path, f"damaged compressed pixel data ({reason(e, f.path)})") from None


def _imagecodecs_j2k() -> Any | None:
    """imagecodecs' JPEG 2000 decoder when installed (it releases the GIL: frames decode in parallel)."""
    if imagecodecs is None:
        return None
    return imagecodecs.jpeg2k_decode if imagecodecs.JPEG2K.available else None


def decode_workers() -> int:
    """Threads for decoding compressed frames: the CPUs this process may use, at most 8."""
    return limits.usable_cpus(8)


def _decode_j2k_parallel(f: DicomFile) -> np.ndarray | None:
    """Grey JPEG 2000 (incl. HTJ2K) frames decoded by imagecodecs on ``decode_workers()`` threads;
    None where that path does not apply (colour, not installed), so pydicom decodes instead."""
    ds = f.ds
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    decode = _imagecodecs_j2k() if syntax in _J2K_SYNTAXES else None
    if decode is None or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    frames = list(generate_frames(ds.PixelData, number_of_frames=f.n_frames))
    if len(frames) != f.n_frames:
        raise CorruptFileError(f.path, f"holds {len(frames)} compressed frames, its header says {f.n_frames}")
    with ThreadPoolExecutor(decode_workers()) as pool:
        decoded = list(pool.map(decode, frames))
    rows, cols = int(ds.Rows), int(ds.Columns)
    for i, frame in enumerate(decoded):
        if frame.shape != (rows, cols):
            raise CorruptFileError(
                f.path, f"JPEG 2000 frame {i + 1} decodes to {frame.shape}, the header says {rows} x {cols}"
            )
    arr = np.stack(decoded)
    if int(ds.get("PixelRepresentation", 0) or 0) == 0 and arr.dtype.kind == "i":
        arr = arr.view(arr.dtype.str.replace("i", "u"))  # unsigned data in a signed codestream
    return arr


def _decode(f: DicomFile) -> np.ndarray:
    """Pixels as uint8/uint16 ``[n, h, w]`` (colour converted to grey, MONOCHROME1 inverted).

    Grey JPEG 2000 goes through imagecodecs on several threads when it is installed (the
    pylibjpeg-openjpeg plug-in holds the GIL, so pydicom decodes one frame at a time); everything
    else, and JPEG 2000 without imagecodecs, through pydicom's pixel handlers."""
    ds = f.ds
    _check_compressed_frames(f)
    try:
        fast = _decode_j2k_parallel(f)
        arr = fast if fast is not None else ds.pixel_array
    except InputError:
        raise
    except NotImplementedError as e:
        raise UnsupportedCompressionError(f.path, f"pixel data cannot be decoded ({reason(e, f.path)})") from None
    except Exception as e:  # truncated or damaged pixel data
        raise CorruptFileError(f.path, f"pixel data is damaged or truncated ({reason(e, f.path)})") from None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    n = f.n_frames
    if samples > 1:
        arr = to_grey(arr)
    if n == 1 and arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] != n:
        raise CorruptFileError(
            f.path, f"pixel data has shape {arr.shape}, expected {n} frames of {ds.Rows} x {ds.Columns}"
        )
    arr = to_unsigned(arr, f.path)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        top = min((1 << int(ds.get("BitsStored", 8 * arr.itemsize))) - 1, int(np.iinfo(arr.dtype).max))
        arr = (top - np.minimum(arr, top)).astype(arr.dtype)  # MONOCHROME1: low values are bright
    return arr


# ------------------------------------------------------------------------------------ metadata
def element_int(ds: Dataset, keyword: str) -> int | None:
    """A data element as an int: None when absent, empty or not a number."""
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def element_text(ds: Dataset, keyword: str) -> str:
    """A data element as text: '' when absent or empty, multiple values joined by backslashes as DICOM
    writes them, stripped (the readers and core.net's query answers alike)."""
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _identity(ds: Dataset) -> tuple[PatientInfo, StudyInfo, DeviceInfo]:
    patient = PatientInfo(
        patient_id=element_text(ds, "PatientID"),
        name=element_text(ds, "PatientName"),
        birth_date=element_text(ds, "PatientBirthDate"),
        sex=element_text(ds, "PatientSex"),
    )
    series_number = element_int(ds, "SeriesNumber")
    study = StudyInfo(
        study_uid=element_text(ds, "StudyInstanceUID"),
        series_uid=element_text(ds, "SeriesInstanceUID"),
        study_date=element_text(ds, "StudyDate"),
        study_time=element_text(ds, "StudyTime"),
        study_id=element_text(ds, "StudyID"),
        accession_number=element_text(ds, "AccessionNumber"),
        series_number=series_number,
        description=element_text(ds, "SeriesDescription"),
    )
    device = DeviceInfo(
        manufacturer=element_text(ds, "Manufacturer"),
        model=element_text(ds, "ManufacturerModelName"),
        software_version=element_text(ds, "SoftwareVersions"),
    )
    return patient, study, device


def _group_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The functional-group macro ``sequence`` for ``frame``: per-frame first, then shared."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and len(items) > index:
            value = items[index].get(sequence)
            if value:
                return value[0]
    return None


def _float(item: Dataset | None, keyword: str) -> float | None:
    if item is None or item.get(keyword) in (None, ""):
        return None
    try:
        value = float(item.get(keyword))
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _laterality(ds: Dataset) -> Laterality:
    candidates = [ds.get("Laterality"), ds.get("ImageLaterality")]
    anatomy = _group_item(ds, 0, "FrameAnatomySequence")
    if anatomy is not None:
        candidates.append(anatomy.get("FrameLaterality"))
    for value in candidates:
        side = Laterality.parse(value)
        if side is not Laterality.UNKNOWN:
            return side
    return Laterality.UNKNOWN


def _in_plane_spacing(ds: Dataset, frame: int = 0) -> tuple[float | None, float | None]:
    measures = _group_item(ds, frame, "PixelMeasuresSequence")
    spacing = (measures.get("PixelSpacing") if measures is not None else None) or ds.get("PixelSpacing")
    if spacing is None or len(spacing) < 2:
        return None, None
    try:
        row, col = float(spacing[0]), float(spacing[1])
    except (TypeError, ValueError):
        return None, None
    return (row if row > 0 else None), (col if col > 0 else None)


def _declared_slice_spacing(ds: Dataset) -> tuple[float | None, float | None]:
    """(SpacingBetweenSlices, SliceThickness) from the functional groups or the top level."""
    measures = _group_item(ds, 0, "PixelMeasuresSequence")
    between = _float(measures, "SpacingBetweenSlices") or _float(ds, "SpacingBetweenSlices")
    thickness = _float(measures, "SliceThickness") or _float(ds, "SliceThickness")
    return between, thickness


def _position_keys(positions: list[Any], orientation: Any | None) -> np.ndarray | None:
    """Signed distance of each position along the slice normal (or the main axis of the positions).
    The values come straight from the header (DICOM multi-values, possibly malformed)."""
    try:
        p = np.array([[float(x) for x in pos] for pos in positions], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if p.ndim != 2 or p.shape[1] != 3:
        return None
    normal = None
    if orientation is not None and len(orientation) == 6:
        o = np.array([float(x) for x in orientation], dtype=np.float64)
        normal = np.cross(o[:3], o[3:])
        if not np.linalg.norm(normal) > 0:
            normal = None
    if normal is None:
        if len(p) < 2:
            return None
        d = p - p[0]
        normal = d[np.argmax(np.linalg.norm(d, axis=1))]
        if not np.linalg.norm(normal) > 0:
            return None
        normal = normal / np.linalg.norm(normal)
    return p @ normal


def _order_and_spacing(keys: np.ndarray | None, fallback: list[int]) -> tuple[list[int], float | None]:
    """Frame order from position keys when they are all distinct, else ``fallback``; plus median step."""
    if keys is None or len(np.unique(np.round(keys, 6))) != len(keys):
        return fallback, None
    order = [int(i) for i in np.argsort(keys, kind="stable")]
    if len(keys) < 2:
        return order, None
    step = float(np.median(np.diff(np.sort(keys))))
    return order, (step if step > 0 else None)


def _ground_truth(text: object) -> str | None:
    value = str(text or "")
    return value[len(GROUND_TRUTH_MARKER) :] if value.startswith(GROUND_TRUTH_MARKER) else None


# ------------------------------------------------------------------------------- multi-frame files
def volume_from_file(f: DicomFile) -> OctVolume:
    """The volume in one OPT file (multi-frame, or a single frame as a one-B-scan volume)."""
    ds = f.ds
    n = f.n_frames
    check_size(f.path, n, int(ds.Rows), int(ds.Columns), charge=True)
    pixels = _decode(f)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    order = list(range(n))
    position_step = None
    if len(per_frame) == n:
        stack = [
            ((item.get("FrameContentSequence") or [Dataset()])[0]).get("InStackPositionNumber") for item in per_frame
        ]
        stack_known = all(s not in (None, "") for s in stack) and len({int(s) for s in stack}) == n
        positions = [
            (_group_item(ds, i, "PlanePositionSequence") or Dataset()).get("ImagePositionPatient") for i in range(n)
        ]
        keys = None
        if all(p is not None for p in positions):
            orient_item = _group_item(ds, 0, "PlaneOrientationSequence")
            keys = _position_keys(positions, orient_item.get("ImageOrientationPatient") if orient_item else None)
        by_position, position_step = _order_and_spacing(keys, order)
        order = sorted(order, key=lambda i: int(stack[i])) if stack_known else by_position
    if order != list(range(n)):
        pixels = pixels[order]
    row, col = _in_plane_spacing(ds)
    between, thickness = _declared_slice_spacing(ds)
    frame_labels: tuple[str, ...] | None = None
    if len(per_frame) == n:
        labels = [
            _ground_truth((item.get("FrameContentSequence") or [Dataset()])[0].get("FrameComments"))
            for item in per_frame
        ]
        known = [label for label in labels if label is not None]
        if len(known) == len(labels):
            frame_labels = tuple(known[i] for i in order)
    patient, study, device = _identity(ds)
    return OctVolume(
        bscans=pixels,
        laterality=_laterality(ds),
        patient=patient,
        study=study,
        device=device,
        spacing=PixelSpacing(slice=between or position_step or thickness, row=row, column=col),
        source=f.path,
        source_files=(f.path,),
        label=_ground_truth(ds.get("ImageComments")),
        frame_labels=frame_labels,
        extra={**_extra(f), SOURCE_INSTANCES: _instances([f], [i + 1 for i in order] if n > 1 else [0])},
    )


def _instances(files: list[DicomFile], frames: list[int]) -> tuple[tuple[str, str, int], ...]:
    """(SOP class UID, SOP instance UID, frame number) per B-scan, in volume order: frame 0 where the
    instance holds that one B-scan only. Empty when an instance lacks its UIDs (nothing to reference)."""
    out = []
    for i, frame in enumerate(frames):
        ds = files[0 if len(files) == 1 else i].ds
        sop_class, sop_uid = str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")
        if not (UID(sop_class).is_valid and UID(sop_uid).is_valid):
            return ()
        out.append((sop_class, sop_uid, int(frame)))
    return tuple(out)


def _extra(f: DicomFile) -> dict:
    ds = f.ds
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", ""))) if hasattr(ds, "file_meta") else UID("")
    return {
        "format": "dicom",
        "transfer_syntax": str(syntax),
        "transfer_syntax_name": syntax.name,
        "sop_class": str(ds.get("SOPClassUID", "")),
        "modality": str(ds.get("Modality", "")),
        "bits_stored": int(ds.get("BitsStored", ds.BitsAllocated)),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
    }


# ---------------------------------------------------------------------------- single-frame series
def volumes_from_series(files: list[DicomFile], errors: list[InputError]) -> list[OctVolume]:
    """Group single-frame OCT files by SeriesInstanceUID into volumes (bad files go to ``errors``)."""
    groups: dict[str, list[DicomFile]] = defaultdict(list)
    for f in files:
        groups[f.series_key].append(f)
    volumes = []
    for members in groups.values():
        if len(members) == 1:  # a lone file keeps everything its own header says
            volume = guarded(members[0].path, errors, functools.partial(volume_from_file, members[0]))
        else:
            volume = guarded(members[0].path, errors, functools.partial(_series_volume, members, errors))
        if volume is not None:
            volumes.append(volume)
    return volumes


def _series_volume(members: list[DicomFile], errors: list[InputError]) -> OctVolume:
    unique: dict[str, DicomFile] = {}
    for f in natsorted(members, key=lambda m: str(m.path)):
        uid = str(f.ds.get("SOPInstanceUID", "") or f.path)
        if uid in unique:  # the same instance twice: read once, and say so
            original = unique[uid]
            same = original.ds.get("PixelData") == f.ds.get("PixelData")
            errors.append(
                InputError(
                    f.path,
                    f"has the same SOPInstanceUID as {original.path.name}: "
                    + (
                        "an identical copy, read once"
                        if same
                        else "a different B-scan under the same id (a broken export); this one was left out "
                        "of the volume"
                    ),
                )
            )
            continue
        unique[uid] = f
    members = list(unique.values())
    shapes = Counter((int(f.ds.Rows), int(f.ds.Columns), int(f.ds.BitsAllocated)) for f in members)
    common = shapes.most_common(1)[0][0]
    for f in members:
        shape = (int(f.ds.Rows), int(f.ds.Columns), int(f.ds.BitsAllocated))
        if shape != common:
            raise InconsistentVolumeError(
                f.path,
                f"this B-scan is {shape[1]} x {shape[0]} pixels, {shape[2]} bit, while the other "
                f"{shapes[common]} B-scans of its series are {common[1]} x {common[0]}, {common[2]} bit",
            )
    check_size(members[0].path, len(members), common[0], common[1], charge=True)
    # order: by position along the slice normal, else InstanceNumber, else file name
    instance = [f.ds.get("InstanceNumber") for f in members]
    fallback = list(range(len(members)))
    if all(i not in (None, "") for i in instance) and len(set(int(i) for i in instance)) == len(members):
        fallback = sorted(fallback, key=lambda k: int(instance[k]))
    positions = [f.ds.get("ImagePositionPatient") for f in members]
    keys = None
    if all(p is not None for p in positions):
        keys = _position_keys(positions, members[0].ds.get("ImageOrientationPatient"))
    order, position_step = _order_and_spacing(keys, fallback)
    ordered = [members[i] for i in order]
    frames, kept = decode_all(ordered, errors, lambda f: f.path, _decode)
    if not frames:
        raise CorruptFileError(members[0].path, "no B-scan of this DICOM series could be decoded")
    first = kept[0].ds
    row, col = _in_plane_spacing(first)
    between, thickness = _declared_slice_spacing(first)
    patient, study, device = _identity(first)
    extra = _extra(kept[0])
    extra[SOURCE_INSTANCES] = _instances(kept, [0] * len(kept))
    if len(kept) < len(members):
        extra["missing_bscans"] = len(members) - len(kept)
    sides = {_laterality(f.ds) for f in kept} - {Laterality.UNKNOWN}
    return OctVolume(
        bscans=np.stack(frames),
        laterality=sides.pop() if len(sides) == 1 else Laterality.UNKNOWN,
        patient=patient,
        study=study,
        device=device,
        spacing=PixelSpacing(slice=between or position_step or thickness, row=row, column=col),
        source=kept[0].path.parent if len(kept) > 1 else kept[0].path,
        source_files=tuple(f.path for f in kept),
        extra=extra,
    )


# -------------------------------------------------------------------------------------- frontend
def read_dicom_files(paths: list[Path], errors: list[InputError], *, force: bool = False) -> list[OctVolume]:
    """Read DICOM files (and the files DICOMDIRs among them reference) into volumes.

    Multi-frame files give one volume each; single-frame files are grouped per series. Bad files
    are appended to ``errors`` and skipped.
    """
    seen: set[Path] = set()
    queue = list(paths)
    multi: list[DicomFile] = []
    single: list[DicomFile] = []
    while queue:
        path = queue.pop(0)
        try:
            key = path.resolve()
        except (OSError, RuntimeError):  # a link loop: _read_member reports it
            key = path.absolute()
        if key in seen:
            continue
        seen.add(key)
        f = guarded(path, errors, functools.partial(_read_member, path, force))
        if f is None:
            continue
        if f.is_dicomdir:  # a damaged directory record sequence is this DICOMDIR's error, never a crash
            queue.extend(guarded(path, errors, functools.partial(dicomdir_members, f, errors)) or [])
        elif f.n_frames > 1:
            multi.append(f)
        else:
            single.append(f)
    volumes = [volume_read(v) for f in multi if (v := guarded(f.path, errors, functools.partial(_read_volume, f)))]
    volumes.extend(volumes_from_series(single, errors))
    return volumes


def _read_volume(f: DicomFile) -> OctVolume:
    """:func:`volume_from_file`, then the file's dataset lets go of its pixel data: pydicom keeps the
    bytes it read and the array it decoded, which for a folder of cubes held twice the pixels until
    the whole folder was read (bench_memory: ~22 MB more per 32 MB cube)."""
    try:
        return volume_from_file(f)
    finally:
        _forget_pixels(f.ds)


def _forget_pixels(ds: Dataset) -> None:
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            delattr(ds, keyword)
    if getattr(ds, "_pixel_array", None) is not None:
        ds._pixel_array = None  # pydicom's cache of the decoded array


def _read_member(path: Path, force: bool) -> DicomFile:
    if not path.is_file():
        raise FileMissingError(path, "referenced file does not exist or is not a regular file")
    return read_header(path, force=force)
