"""Readers and writers of OCT data.

``open_path(path, errors=None) -> list[OctVolume]`` reads a file, a DICOMDIR or a folder (see
core/io/reader.py for formats and the error policy); ``write_opt(volume, path, *, transfer_syntax=None,
overwrite=False) -> Path`` writes a DICOM Ophthalmic Tomography Image and ``write_dicomdir(files,
folder)`` a DICOM File-set with its DICOMDIR (core/io/writer.py). What readers decode at most:
core/limits.py.
"""

from core.errors import InputError  # noqa: F401
from core.io.reader import open_path
from core.io.writer import write_dicomdir, write_opt

__all__ = ["open_path", "write_opt", "write_dicomdir", "InputError"]
