"""Errors a user can cause by handing us a file. Each message names the file and what is wrong,
in words a technician understands. Readers raise only these (never a bare pydicom/PIL error)."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "InputError",
    "FileMissingError",
    "EmptyInputError",
    "UnsupportedFormatError",
    "CorruptFileError",
    "NotOctError",
    "NoPixelDataError",
    "UnsupportedCompressionError",
    "ImageTooLargeError",
    "InconsistentVolumeError",
    "MissingExtraError",
    "ModelCardError",
    "NetworkError",
    "NodeUnreachableError",
    "AssociationRejectedError",
    "AssociationAbortedError",
    "NetworkTimeoutError",
    "RemoteFailureError",
    "RetrieveIncompleteError",
    "Cancelled",
]


class InputError(Exception):
    """Base class: something is wrong with a file or folder the user gave us."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


class FileMissingError(InputError):
    """The path does not exist or cannot be read."""


class EmptyInputError(InputError):
    """An empty file, or a folder without any readable OCT data."""


class UnsupportedFormatError(InputError):
    """Not a format OCT Screen reads (random bytes, a Word file, ...)."""


class CorruptFileError(InputError):
    """A format we know, but damaged or truncated."""


class NotOctError(InputError):
    """A valid DICOM that is not an OCT image (CT, a structured report, an encapsulated PDF, ...)."""


class NoPixelDataError(InputError):
    """A DICOM header without pixel data."""


class UnsupportedCompressionError(InputError):
    """Pixel data compressed with a transfer syntax no installed decoder handles."""


class ImageTooLargeError(InputError):
    """Refused to decode: the image would need more memory than any OCT volume does (decompression bomb)."""


class InconsistentVolumeError(InputError):
    """Frames of one volume disagree (mixed sizes, mixed bit depths)."""


class MissingExtraError(InputError):
    """A vendor format whose optional reader is not installed."""


class ModelCardError(InputError):
    """A model card or weights file is missing, malformed, or does not match its checksum."""


class NetworkError(InputError):
    """A DICOM node (a PACS, a device) could not do what we asked. The message names the node
    (``AET@HOST:PORT``) and what happened: "``<node>: <problem>``". ``path`` is None; ``node`` is the text."""

    def __init__(self, node: object, problem: str):
        self.node = str(node)
        self.path = None
        self.problem = problem
        Exception.__init__(self, f"{self.node}: {problem}")


class NodeUnreachableError(NetworkError):
    """No TCP connection: nothing listens on the port, the host is unknown, down or firewalled."""


class AssociationRejectedError(NetworkError):
    """The node answered but refused the association (wrong AE title, unknown calling AE, or none of
    the SOP classes we asked for)."""


class AssociationAbortedError(NetworkError):
    """The association was aborted or the connection dropped while we were working."""


class NetworkTimeoutError(NetworkError):
    """The node stopped answering for longer than the timeout allows."""


class RemoteFailureError(NetworkError):
    """The node answered a request with a failure status (a refused query, store or retrieve)."""


class RetrieveIncompleteError(NetworkError):
    """A retrieve stopped before the node had sent the whole study; nothing of it was kept."""


class Cancelled(Exception):
    """Long work stopped because the user pressed Cancel (not an error: nothing was written)."""
