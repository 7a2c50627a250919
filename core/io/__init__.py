"""Readers and writers: ``open_path(path) -> list[OctVolume]`` (see core/io/reader.py)."""

from core.errors import InputError  # noqa: F401
