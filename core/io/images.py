"""Image readers: PNG, JPEG, BMP and TIFF (single and multi-page), 8 and 16 bit, grey or colour.

Grouping of single-page B-scan images into volumes:

- OCT2017 names (``CNV-1016042-1.jpeg``): the images are independent B-scans; those of one class and
  patient (and one image size: the dataset mixes 512/768/1024/1536-wide scans of one patient) form one
  volume, in natural order of the trailing number. ``label`` and ``frame_labels`` hold the class.
- NEH layout (``CLASS/<case>/<OD|OS>/NNN_<Label>.ext``): one volume per case and eye, laterality
  from the folder, per-B-scan labels from the file names, the eye label from the class folder.
- Anything else: all images directly in one folder are one volume, in natural sort order; images of
  different sizes or bit depths make an ``InconsistentVolumeError`` naming the odd file.

A multi-page TIFF is one volume on its own. Image stacks carry no DICOM ids, so each volume gets a
deterministic study/series UID derived from its group (``common.stable_uid``): two NEH patients with
the same case number in different class folders never become the same eye.
"""

from __future__ import annotations

import contextlib
import functools
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile
from natsort import natsorted
from PIL import Image

from core import limits
from core.errors import (
    CorruptFileError,
    ImageTooLargeError,
    InconsistentVolumeError,
    InputError,
    UnsupportedCompressionError,
    UnsupportedFormatError,
)
from core.io.common import Kind, check_size, decode_all, guarded, reason, stable_uid, to_grey, to_unsigned
from core.volume import Laterality, OctVolume, PatientInfo, StudyInfo

__all__ = ["ImageFile", "probe_image", "load_image", "read_image_files", "parse_oct2017_name", "parse_neh_path"]

OCT2017_NAME = re.compile(r"^(CNV|DME|DRUSEN|NORMAL)-(\d+)-(\d+)$", re.IGNORECASE)
NEH_NAME = re.compile(r"^(\d+)_([A-Za-z][\w-]*)$")


@dataclass
class ImageFile:
    """An image file whose header has been read and checked (pixels not decoded yet)."""

    path: Path
    kind: Kind
    height: int
    width: int
    pages: int
    bits: int  # 8 or 16 after conversion

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(height, width, bits): images of one volume must agree on all three."""
        return self.height, self.width, self.bits


def parse_oct2017_name(path: Path) -> tuple[str, str, int] | None:
    """(class, patient id, index) from an OCT2017 file name such as ``CNV-1016042-1.jpeg``."""
    m = OCT2017_NAME.match(path.stem)
    return (m.group(1).upper(), m.group(2), int(m.group(3))) if m else None


def parse_neh_path(path: Path) -> tuple[str, str, Laterality, str] | None:
    """(class folder, case, eye, B-scan label) from ``CLASS/<case>/<OD|OS>/NNN_<Label>.ext``."""
    path = path.absolute()
    m = NEH_NAME.match(path.stem)
    eye = Laterality.parse(path.parent.name)
    if not m or eye is Laterality.UNKNOWN or path.parent.name.upper() not in ("OD", "OS") or len(path.parents) < 4:
        return None
    return path.parents[2].name, path.parents[1].name, eye, m.group(2).lower()


# ------------------------------------------------------------------------------------- decoding
def _pil_bits(mode: str, path: Path) -> int:
    if mode.startswith("I;16") or mode == "I":
        return 16
    if mode in ("F",):
        raise UnsupportedFormatError(path, "floating-point images are not supported (expected 8 or 16 bit grey)")
    return 8


_PIL_GREY_MODES = ("L", "I;16", "I;16L", "I;16B", "I;16N", "I")


@contextlib.contextmanager
def _open_pil(path: Path) -> Iterator[Image.Image]:
    """Open with Pillow, turning its decompression-bomb warning into an error (global limit untouched)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as im:
            yield im


def tiff_page_count(path: Path) -> int:
    """Pages in a TIFF's IFD chain, counted by following the next-IFD offsets ourselves: a chain that
    loops back is a ``CorruptFileError``, one longer than ``max_bscans`` an ``ImageTooLargeError``
    (tifffile would walk either for minutes). Classic and BigTIFF, either byte order."""
    cap = limits.current().max_bscans
    with open(path, "rb") as fh:
        head = fh.read(16)
        order: Literal["little", "big"] = "little" if head[:2] == b"II" else "big"
        big = int.from_bytes(head[2:4], order) == 43
        size = fh.seek(0, 2)
        offset = int.from_bytes(head[8:16] if big else head[4:8], order)
        seen: set[int] = set()
        while offset:
            if offset in seen:
                raise CorruptFileError(
                    path, f"damaged TIFF: its page chain loops back to page {len(seen)} (offset {offset})"
                )
            if offset + (8 if big else 2) > size:
                break  # a dangling last offset: tifffile reports what it can read
            seen.add(offset)
            if len(seen) > cap:
                raise ImageTooLargeError(path, f"holds more than {cap} pages, the limit per volume (max_bscans)")
            fh.seek(offset)
            n = int.from_bytes(fh.read(8 if big else 2), order)
            fh.seek(offset + (8 if big else 2) + n * (20 if big else 12))
            nxt = fh.read(8 if big else 4)
            offset = int.from_bytes(nxt, order) if len(nxt) == (8 if big else 4) else 0
    return len(seen)


def probe_image(path: Path, kind: Kind) -> ImageFile:
    """Read an image header and refuse oversized images before any pixel is decoded."""
    try:
        if kind is Kind.TIFF:
            pages = tiff_page_count(path)  # before tifffile walks the chain: loops and page floods
            with tifffile.TiffFile(path) as tif:
                if pages == 0 or not len(tif.pages):
                    raise CorruptFileError(path, "damaged TIFF image (no readable image page)")
                page = tif.pages[0]
                shape = page.shape
                if len(shape) == 3 and shape[0] in (3, 4) and shape[-1] not in (3, 4):
                    shape = (shape[1], shape[2], shape[0])
                h, w = int(shape[0]), int(shape[1])
                itemsize = np.dtype(page.dtype).itemsize if page.dtype is not None else 1
                if page.dtype is not None and np.dtype(page.dtype).kind == "f":
                    raise UnsupportedFormatError(path, "floating-point TIFF images are not supported")
                bits = 8 if itemsize == 1 else 16
        else:
            with _open_pil(path) as im:
                w, h = im.size
                pages = 1
                bits = _pil_bits(im.mode, path)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(path, f"refusing to decode a suspiciously large image ({e})") from None
    except Exception as e:  # reader boundary
        raise CorruptFileError(path, f"damaged or truncated {kind.value.upper()} image ({reason(e, path)})") from None
    check_size(path, pages, h, w)
    return ImageFile(path, kind, h, w, pages, bits)


def load_image(info: ImageFile) -> np.ndarray:
    """Decode all pages as grey ``[pages, h, w]`` uint8/uint16.

    TIFF goes through tifffile; a TIFF compression tifffile cannot decode without the optional
    imagecodecs package (LZW, JPEG, ...) is retried with Pillow before giving up.
    """
    path = info.path
    try:
        if info.kind is Kind.TIFF:
            try:
                pages = _stack_pages(info, _tifffile_pages(info))
            except Exception as e:  # noqa: BLE001 - codec missing: Pillow may still read it
                if "imagecodecs" not in str(e):
                    raise
                try:
                    pages = _stack_pages(info, _pil_pages(info))
                except Exception:
                    raise UnsupportedCompressionError(
                        path, f"TIFF compression not supported ({reason(e, path)}; pip install imagecodecs)"
                    ) from None
        else:
            pages = _stack_pages(info, _pil_pages(info))
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(path, f"refusing to decode a suspiciously large image ({e})") from None
    except Exception as e:  # reader boundary
        raise CorruptFileError(
            path, f"damaged or truncated {info.kind.value.upper()} image ({reason(e, path)})"
        ) from None
    return pages


def _tifffile_pages(info: ImageFile) -> Iterator[np.ndarray]:
    with tifffile.TiffFile(info.path) as tif:
        for page in tif.pages:
            arr = page.asarray()
            if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
                arr = np.moveaxis(arr, 0, -1)  # planar (separate) colour samples
            yield arr


def _pil_pages(info: ImageFile) -> Iterator[np.ndarray]:
    with _open_pil(info.path) as im:
        for index in range(getattr(im, "n_frames", 1) if info.kind is Kind.TIFF else 1):
            im.seek(index)
            im.load()
            arr = np.asarray(im if im.mode in _PIL_GREY_MODES else im.convert("L"))
            yield arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _stack_pages(info: ImageFile, pages: Iterator[np.ndarray]) -> np.ndarray:
    """Grey uint8/uint16 pages of the declared size, stacked ``[pages, h, w]``."""
    frames = []
    for i, arr in enumerate(pages):
        arr = to_unsigned(to_grey(arr), info.path)
        if arr.shape != (info.height, info.width):
            what = f"page {i + 1}" if info.pages > 1 else "the decoded image"
            raise InconsistentVolumeError(
                info.path,
                f"{what} is {arr.shape[-1]} x {arr.shape[0]} pixels while the "
                f"header declares {info.width} x {info.height}",
            )
        frames.append(arr)
    if len({f.dtype for f in frames}) > 1:
        raise InconsistentVolumeError(info.path, "pages mix 8-bit and 16-bit pixels")
    return np.stack(frames)


# ------------------------------------------------------------------------------------- grouping
def _group_key(info: ImageFile) -> tuple:
    """Which volume an image belongs to; folders are absolute so ids do not depend on the working directory."""
    folder = info.path.absolute().parent
    oct2017 = parse_oct2017_name(info.path)
    if oct2017:
        return ("oct2017", str(folder), oct2017[0], oct2017[1], info.frame_shape)
    neh = parse_neh_path(info.path)
    if neh:
        return ("neh", str(folder.parents[1]), neh[0], neh[1], neh[2].value)
    return ("folder", str(folder))


def _check_consistent(members: list[ImageFile]) -> None:
    shapes = Counter(m.frame_shape for m in members)
    common, count = shapes.most_common(1)[0]
    for m in members:
        if m.frame_shape != common:
            raise InconsistentVolumeError(
                m.path,
                f"this B-scan is {m.width} x {m.height} pixels, {m.bits} bit, while the other {count} "
                f"images of its folder are {common[1]} x {common[0]}, {common[2]} bit; move it elsewhere",
            )
    check_size(members[0].path, len(members), common[0], common[1], charge=True)


def _volume_from_group(key: tuple, members: list[ImageFile], errors: list[InputError]) -> OctVolume | None:
    members = natsorted(members, key=lambda m: str(m.path))
    _check_consistent(members)
    frames, kept = decode_all(members, errors, lambda m: m.path, load_image)
    if not kept:
        return None
    paths = tuple(m.path for m in kept)
    source = paths[0] if len(paths) == 1 else paths[0].parent
    family = key[0]
    if family == "oct2017":
        _, folder, cls, pid, shape = key
        label = cls.lower()
        return OctVolume(
            np.stack(frames),
            patient=PatientInfo(patient_id=pid),
            study=StudyInfo(
                study_uid=stable_uid("oct2017", folder, cls, pid),
                series_uid=stable_uid("oct2017", folder, cls, pid, shape),
                description="OCT2017 B-scans",  # never the class folder: that is the ground truth
            ),
            source=source,
            source_files=paths,
            label=label,
            frame_labels=(label,) * len(kept),
            extra={"format": "images", "dataset": "OCT2017"},
        )
    if family == "neh":
        _, root, cls, case, eye = key
        return OctVolume(
            np.stack(frames),
            laterality=eye,
            patient=PatientInfo(patient_id=case),
            study=StudyInfo(
                study_uid=stable_uid("neh", root, cls, case),
                series_uid=stable_uid("neh", root, cls, case, eye),
                description="NEH B-scans",  # never the class folder (ground truth) or the case (an id)
            ),
            source=source,
            source_files=paths,
            label=cls.lower(),
            frame_labels=tuple(parse_neh_path(p)[3] for p in paths),  # type: ignore[index]
            extra={"format": "images", "dataset": "NEH"},
        )
    folder = Path(key[1])
    return OctVolume(
        np.stack(frames),
        study=StudyInfo(
            study_uid=stable_uid("folder", folder),
            series_uid=stable_uid("folder", folder, "series"),
            description=folder.name,
        ),
        source=source,
        source_files=paths,
        extra={"format": "images"},
    )


def _multipage_volume(info: ImageFile) -> OctVolume:
    where = info.path.absolute()
    return OctVolume(
        load_image(info),
        study=StudyInfo(
            study_uid=stable_uid("tiff", where),
            series_uid=stable_uid("tiff", where, "series"),
            description=info.path.stem,
        ),
        source=info.path,
        source_files=(info.path,),
        extra={"format": "tiff", "pages": info.pages},
    )


def read_image_files(files: list[tuple[Path, Kind]], errors: list[InputError]) -> list[OctVolume]:
    """Read image files into volumes (grouping as described in the module docstring).

    Bad files, and groups that cannot form a volume, are appended to ``errors``.
    """
    groups: dict[tuple, list[ImageFile]] = defaultdict(list)
    volumes: list[OctVolume] = []
    for path, kind in files:
        info = guarded(path, errors, functools.partial(probe_image, path, kind))
        if info is None:
            continue
        if info.pages > 1:
            volume = guarded(path, errors, functools.partial(_multipage_volume, info))
            if volume is not None:
                volumes.append(volume)
        else:
            groups[_group_key(info)].append(info)
    for key, members in groups.items():
        volume = guarded(members[0].path, errors, functools.partial(_volume_from_group, key, members, errors))
        if volume is not None:
            volumes.append(volume)
    return volumes
