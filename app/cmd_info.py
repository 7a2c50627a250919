"""``octscreen info PATH...``: list the OCT volumes files and folders hold, and the files that are bad.

One line per volume (who, eye, date, size, source, spacing, bit depth), one line per bad file with
its problem. Exit code 0 when everything was read, 1 when some file was bad, 2 when nothing was readable.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from core.errors import InputError

if TYPE_CHECKING:  # core.io (pydicom, codecs) is imported when the command runs: `octscreen --help` stays fast
    from core.volume import OctVolume, PixelSpacing

__all__ = ["register", "run", "format_volume", "format_spacing"]


def _mm(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def format_spacing(spacing: PixelSpacing) -> str:
    """'slice 0.12 x row 0.0039 x column 0.0115 mm' or 'spacing unknown'."""
    if spacing.slice is None and not spacing.known:
        return "spacing unknown"
    return f"spacing slice {_mm(spacing.slice)} x row {_mm(spacing.row)} x column {_mm(spacing.column)} mm"


def format_volume(volume: OctVolume) -> str:
    """The line ``octscreen info`` prints for one volume."""
    return f"{volume.describe()}  [{volume.bit_depth}-bit, {format_spacing(volume.spacing)}]  source: {volume.source}"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` subcommand."""
    p = subparsers.add_parser(
        "info",
        help="list the OCT volumes in files or folders",
        description="List the OCT volumes that files, DICOMDIRs or folders hold, "
        "and every file that cannot be read with the reason.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="file, DICOMDIR or folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print volumes and bad files; 0 all good, 1 some file bad, 2 nothing readable."""
    from core.io import open_path  # noqa: PLC0415 (heavy: pydicom, numpy and the readers)

    n_volumes = 0
    n_bad = 0
    for path in args.paths:
        errors: list[InputError] = []
        try:
            volumes = open_path(path, errors=errors)
        except InputError as e:
            volumes = []
            if not errors:  # the per-file errors already say it; else the summary is the only news
                errors.append(e)
        for volume in volumes:
            print(format_volume(volume))
        for err in errors:
            print(f"error: {err}")
        n_volumes += len(volumes)
        n_bad += len(errors)
    if n_volumes == 0:
        return 2
    return 1 if n_bad else 0
