"""``open_path``: every OCT volume a file or folder holds.

Formats are recognised by content (``common.sniff``), then each family's reader takes over:
DICOM (``dicom.py``), images (``images.py``), vendor exports (``vendor.py``).

Error policy
------------
- A single file that is bad raises its ``InputError`` subclass (the message names the file).
- A folder (or a DICOMDIR) is scanned fully: bad files are skipped, and if ``errors`` is a list, an
  ``InputError`` for each of them is appended to it, so one damaged file never hides the good
  volumes beside it. ``open_path`` raises only when nothing at all could be read: then an
  ``EmptyInputError`` naming the folder (the per-file errors are still appended to ``errors``).
- A path that does not exist raises ``FileMissingError``.
Nothing but ``InputError`` subclasses leaves this module for problems with the input.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from natsort import natsorted

from core import limits
from core.errors import EmptyInputError, FileMissingError, InputError, UnsupportedFormatError
from core.io.common import Kind, guarded, is_ignorable, sniff, volume_read
from core.io.dicom import read_dicom_files
from core.io.heyex import xml_members
from core.io.images import read_image_files
from core.io.vendor import read_vendor
from core.volume import OctVolume

log = logging.getLogger(__name__)

__all__ = ["open_path"]

_UNKNOWN_FORMAT = (
    "not a format OCT Screen reads (expected DICOM, PNG, JPEG, TIFF or BMP B-scans, or a "
    "Heidelberg (.e2e, .vol, XML export), Topcon (.fds, .fda) or Zeiss Cirrus (.img) export)"
)


def open_path(path: str | os.PathLike[str], errors: list[InputError] | None = None) -> list[OctVolume]:
    """Return every OCT volume in ``path`` (a file, a DICOMDIR, or a folder scanned recursively).

    Volumes are grouped per series/eye (see core/io/images.py for image stacks) and returned in
    natural order of their source. ``errors``: optional list that collects an ``InputError`` for each
    bad file met while scanning a folder or a DICOMDIR (see the module docstring for the policy).
    """
    root = Path(path)
    collected: list[InputError] = []
    with limits.pixel_budget():  # max_run_pixels over everything this call decodes
        return _open(root, collected, errors)


def _open(root: Path, collected: list[InputError], errors: list[InputError] | None) -> list[OctVolume]:
    try:
        if not os.path.lexists(root):
            raise FileMissingError(root, "does not exist")
        if root.is_dir():
            files = _walk(root, collected)
            if not files:
                raise EmptyInputError(root, "the folder holds no files")
            volumes = _read_files(files, collected, in_folder=True)
        elif root.is_file():
            volumes = _read_files([root], collected, in_folder=False)  # a DICOMDIR may give both
        elif root.is_symlink():
            raise FileMissingError(root, "is a link to something that does not exist")
        else:
            raise FileMissingError(root, "is neither a file nor a folder")
    finally:
        if errors is not None:
            errors.extend(collected)
    if not volumes:
        if len(collected) == 1:  # one bad file (or one bad group): its own error says most
            raise collected[0]
        if root.is_dir():
            first = f"; first problem: {collected[0]}" if collected else ""
            raise EmptyInputError(root, f"no readable OCT data in this folder ({len(files)} files){first}")
        raise collected[0] if collected else EmptyInputError(root, "holds no OCT volume")
    return natsorted(volumes, key=lambda v: str(v.source_files[0] if v.source_files else v.source or ""))


def _walk(root: Path, errors: list[InputError]) -> list[Path]:
    """Every file under ``root`` (hidden folders skipped), without following folder links (a link
    loop can't trap the scan); an unreadable subfolder is an error in ``errors``, never silently
    missing; at most ``max_depth`` levels and ``max_files`` files (more: an error, the rest unread)."""
    lim = limits.current()
    files: list[Path] = []
    depth0 = len(root.parts)

    def unreadable(e: OSError) -> None:
        where = Path(e.filename) if e.filename else root
        errors.append(FileMissingError(where, f"this folder cannot be read ({e.strerror or e}); its files are missing"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if len(here.parts) - depth0 >= lim.max_depth and dirnames:
            errors.append(InputError(here, f"folders deeper than {lim.max_depth} levels (max_depth) are not scanned"))
            dirnames[:] = []
        files.extend(here / name for name in filenames)
        if len(files) > lim.max_files:
            errors.append(
                InputError(root, f"holds more than {lim.max_files} files (max_files); only the first were scanned")
            )
            del files[lim.max_files :]
            break
    return natsorted(files, key=str)


def _read_files(files: list[Path], errors: list[InputError], *, in_folder: bool) -> list[OctVolume]:
    """Dispatch files by content to the family readers; bad files go to ``errors``."""
    dicom: list[Path] = []
    raw_dicom: list[Path] = []
    images: list[tuple[Path, Kind]] = []
    vendor: list[Path] = []
    for path in files:
        try:
            kind = sniff(path)
        except InputError as e:
            if not (in_folder and is_ignorable(path)):
                errors.append(e)
            continue
        if kind is Kind.DICOM:
            dicom.append(path)
        elif kind.is_image:
            images.append((path, kind))
        elif kind is Kind.VENDOR:
            vendor.append(path)
        elif path.suffix.lower() == ".dcm" or path.name.upper() == "DICOMDIR":
            raw_dicom.append(path)  # DICOM without the 128-byte preamble (older exports)
        elif in_folder and is_ignorable(path):
            log.debug("skipping %s", path)
        else:
            errors.append(UnsupportedFormatError(path, _UNKNOWN_FORMAT))
    claimed: set[Path] = set()  # images that belong to a Heidelberg XML export, read with it
    for path in vendor:
        if path.suffix.lower() == ".xml":
            claimed.update(guarded(path, [], functools.partial(xml_members, path)) or [])
    images = [(p, k) for p, k in images if p not in claimed]
    volumes = read_dicom_files(dicom, errors)
    volumes += read_dicom_files(raw_dicom, errors, force=True)
    volumes += read_image_files(images, errors)
    for path in vendor:
        volumes += [volume_read(v) for v in guarded(path, errors, functools.partial(read_vendor, path)) or []]
    return volumes
