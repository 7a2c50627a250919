"""Storage both ways: ``InstanceStore`` writes the instances a node sends us (C-STORE as SCP, for
``listen``, C-GET and C-MOVE), ``send_files`` sends files to a node (C-STORE as SCU).

What we store, and where: ``<folder>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``,
the bytes as they came (no re-encoding), each written to a temp name and renamed
(``core.fileio.atomic_output``): a half-received instance is never visible. Each instance is checked
before it is kept; a refused one gets a failure status back and an ``InputError`` in ``rejected``
naming the node and the instance:

- it cannot be decoded, or its SOP class differs from the one it was sent as: ``CorruptFileError``;
- its UIDs are missing or not UIDs (they name the files: no path tricks): ``CorruptFileError``;
- an image without pixel data: ``NoPixelDataError``; an OCT (OPT) instance must pass the same
  header check ``core.io`` applies to a file (``core.io.dicom.read_header``);
- it belongs to another study than the one asked for (``study_uid``, a retrieve): ``CorruptFileError``.

An instance already stored with the same bytes counts as a duplicate; different bytes under a stored
SOP Instance UID are refused (the first copy is kept), as Orthanc does by default.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from core.errors import (
    Cancelled,
    CorruptFileError,
    FileMissingError,
    InputError,
    NetworkError,
    NoPixelDataError,
    UnsupportedFormatError,
)
from core.fileio import atomic_output
from core.io.dicom import read_header
from core.net.assoc import association, check, lost, status_of
from core.net.node import NodeSettings
from core.net.sop import IMAGE_CLASSES, OPT_SOP_CLASS, STORAGE_CLASSES, UNCOMPRESSED, sop_name

__all__ = ["InstanceStore", "StoredInstance", "SentFile", "send_files", "instance_path", "is_uid", "association_key"]

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# Storage statuses (PS3.4 B.2.3)
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000


def is_uid(text: object) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters): safe as a file or folder name."""
    t = str(text or "")
    return 0 < len(t) <= 64 and bool(_UID.match(t))


def instance_path(folder: Path, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """Where an instance is stored under ``folder``."""
    return Path(folder) / study_uid / series_uid / f"{sop_uid}.dcm"


@dataclass(frozen=True)
class StoredInstance:
    """One instance we received and kept."""

    path: Path
    sop_class: str
    sop_uid: str
    study_uid: str
    series_uid: str
    modality: str
    sender: str
    association: int  # an id of the association it came on (series completion is per association)
    duplicate: bool = False


_KEYS = itertools.count(1)


def association_key(assoc) -> int:
    """A number for an association, unique in this process (``id()`` may be reused after it is gone)."""
    key = getattr(assoc, "_octscreen_key", None)
    if key is None:
        key = next(_KEYS)
        assoc._octscreen_key = key
    return key


def _peer(event) -> str:
    """The other side of the event's association as 'AET@HOST:PORT'."""
    assoc = event.assoc
    other = assoc.acceptor if assoc.is_requestor else assoc.requestor
    return f"{str(other.ae_title).strip()}@{other.address}:{other.port}"


class _Refused(Exception):
    def __init__(self, status: int, error: InputError):
        super().__init__(str(error))
        self.status = status
        self.error = error


@dataclass
class InstanceStore:
    """An ``EVT_C_STORE`` handler that keeps what it receives under ``folder`` (see the module doc).

    ``study_uid``: accept only instances of this study (a retrieve). ``on_stored(instance)`` is called
    after each kept instance (in the association's thread). Thread-safe: several associations may
    store at once."""

    folder: Path
    study_uid: str | None = None
    on_stored: Callable[[StoredInstance], None] | None = None
    stored: list[StoredInstance] = field(default_factory=list)
    rejected: list[InputError] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self._lock = threading.Lock()

    # -- the handler ------------------------------------------------------------------------------
    def handle(self, event) -> int:
        """pynetdicom ``EVT_C_STORE`` handler: check, write, return the status."""
        sender = _peer(event)
        sop_uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        return self._accept(lambda: self._keep(event, sender, sop_uid), sender, sop_uid)

    def keep_dataset(self, ds, data: bytes, sender: str, association: int = 0) -> int:
        """The same checks and storage for an instance that came another way (a WADO-RS part):
        ``data`` is its PS3.10 file. Returns the status a C-STORE would have got (0: kept)."""
        try:
            sop_uid, sent_as = str(ds.get("SOPInstanceUID", "") or ""), str(ds.get("SOPClassUID", "") or "")
        except Exception:  # undecodable: _check_and_write refuses it
            sop_uid = sent_as = ""
        return self._accept(
            lambda: self._check_and_write(ds, lambda: data, sender, sent_as, "", association), sender, sop_uid
        )

    def _accept(self, keep: Callable[[], StoredInstance], sender: str, sop_uid: str) -> int:
        try:
            kept = keep()
        except _Refused as r:
            log.warning("%s", r.error)
            with self._lock:
                self.rejected.append(r.error)
            return r.status
        except OSError as e:
            msg = f"{sender}: instance {sop_uid} could not be stored in {self.folder} ({e.strerror or e})"
            log.error("%s", msg)
            with self._lock:
                self.failures.append(msg)
            return OUT_OF_RESOURCES
        with self._lock:
            self.stored.append(kept)
        if self.on_stored is not None:
            try:
                self.on_stored(kept)
            except Exception:  # a progress callback must not fail the store
                log.exception("on_stored callback failed")
        return 0x0000

    def _refuse(self, status: int, cls: type[InputError], sender: str, sop_uid: str, problem: str) -> _Refused:
        return _Refused(status, cls(None, f"{sender}: instance {sop_uid or '(no UID)'} refused: {problem}"))

    def _keep(self, event, sender: str, sop_uid: str) -> StoredInstance:
        sent_as = str(event.context.abstract_syntax)
        try:
            ds = event.dataset
        except Exception as e:  # a dataset pydicom cannot decode
            raise self._refuse(
                CANNOT_UNDERSTAND, CorruptFileError, sender, sop_uid, f"the data set cannot be decoded ({e})"
            ) from None
        return self._check_and_write(
            ds, lambda: event.encoded_dataset(include_meta=True), sender, sent_as, sop_uid, association_key(event.assoc)
        )

    def _check_and_write(
        self, ds, encoded: Callable[[], bytes], sender: str, sent_as: str, sop_uid: str, association: int
    ) -> StoredInstance:
        try:
            ds_class = str(ds.get("SOPClassUID", "") or "")
            ds_uid = str(ds.get("SOPInstanceUID", "") or "")
            study, series = str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
            modality = str(ds.get("Modality", "") or "").upper()
            has_pixels = "PixelData" in ds and ds.get("Rows") not in (None, "") and ds.get("Columns") not in (None, "")
        except Exception as e:  # a dataset pydicom cannot decode
            raise self._refuse(
                CANNOT_UNDERSTAND, CorruptFileError, sender, sop_uid, f"the data set cannot be decoded ({e})"
            ) from None
        if ds_class != sent_as:
            claims = sop_name(ds_class) if ds_class else "of no SOP class"
            raise self._refuse(
                DOES_NOT_MATCH,
                CorruptFileError,
                sender,
                sop_uid,
                f"it says it is {claims} but was sent as {sop_name(sent_as)}",
            )
        if sent_as not in STORAGE_CLASSES:  # (over DIMSE the contexts we accept make this impossible)
            raise self._refuse(
                DOES_NOT_MATCH,
                UnsupportedFormatError,
                sender,
                sop_uid or ds_uid,
                f"{sop_name(sent_as)} is not accepted",
            )
        for name, value in (
            ("SOP Instance UID", ds_uid),
            ("Study Instance UID", study),
            ("Series Instance UID", series),
        ):
            if not is_uid(value):
                raise self._refuse(
                    CANNOT_UNDERSTAND, CorruptFileError, sender, sop_uid, f"its {name} {value!r} is not a valid UID"
                )
        if sop_uid and ds_uid != sop_uid:
            raise self._refuse(
                DOES_NOT_MATCH,
                CorruptFileError,
                sender,
                sop_uid,
                f"its data set carries another SOP Instance UID ({ds_uid})",
            )
        if self.study_uid and study != self.study_uid:
            raise self._refuse(
                DOES_NOT_MATCH,
                CorruptFileError,
                sender,
                ds_uid,
                f"it is of study {study}, not of the study we asked for",
            )
        if sent_as in IMAGE_CLASSES and not has_pixels:
            raise self._refuse(
                DOES_NOT_MATCH,
                NoPixelDataError,
                sender,
                ds_uid,
                f"{sop_name(sent_as)} without pixel data (or without Rows/Columns)",
            )
        data = encoded()
        target = instance_path(self.folder, study, series, ds_uid)
        duplicate = False
        if target.exists():
            if target.read_bytes() != data:
                raise self._refuse(
                    DOES_NOT_MATCH,
                    CorruptFileError,
                    sender,
                    ds_uid,
                    f"another instance with this SOP Instance UID is already stored ({target}); the first one is kept",
                )
            duplicate = True
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with atomic_output(target) as tmp:
                    with open(tmp, "wb") as fh:
                        fh.write(data)
                        fh.flush()
                        os.fsync(fh.fileno())
                    if sent_as == OPT_SOP_CLASS:
                        self._check_oct(tmp, sender, ds_uid)
            except FileExistsError:  # the same instance arrived meanwhile on another association
                duplicate = True
        log.info("%s: stored %s %s -> %s", sender, sop_name(sent_as), ds_uid, target)
        return StoredInstance(
            path=target,
            sop_class=sent_as,
            sop_uid=ds_uid,
            study_uid=study,
            series_uid=series,
            modality=modality,
            sender=sender,
            association=association,
            duplicate=duplicate,
        )

    def _check_oct(self, tmp: Path, sender: str, sop_uid: str) -> None:
        """The reader's own header check on the written file (the same rules as ``open_path``)."""
        try:
            read_header(tmp)
        except InputError as e:
            status = CANNOT_UNDERSTAND if isinstance(e, CorruptFileError) else DOES_NOT_MATCH
            raise _Refused(status, type(e)(None, f"{sender}: instance {sop_uid} refused: {e.problem}")) from None

    # -- reading back ---------------------------------------------------------------------------------
    def by_association(self, assoc_id: int) -> list[StoredInstance]:
        with self._lock:
            return [s for s in self.stored if s.association == assoc_id]


@dataclass(frozen=True)
class SentFile:
    """What happened to one file ``send_files`` was given."""

    path: Path
    sop_class: str = ""
    sop_uid: str = ""
    status: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def _dicom_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")))
        else:
            files.append(p)
    return files


def _header(path: Path) -> tuple[str, str, str]:
    """(SOP class, SOP instance UID, transfer syntax) of a DICOM file; InputError otherwise."""
    if not path.is_file():
        raise FileMissingError(path, "file not found")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        meta = ds.file_meta
        sop = str(ds.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", ""))
        uid = str(ds.get("SOPInstanceUID", "") or meta.get("MediaStorageSOPInstanceUID", ""))
        syntax = str(meta.get("TransferSyntaxUID", ""))
    except Exception as e:
        raise CorruptFileError(path, f"not a readable DICOM file ({e})") from None
    if not sop or not uid or not syntax:
        raise CorruptFileError(
            path, "not a DICOM file with a SOP class, instance UID and transfer syntax (a DICOM Part 10 file)"
        )
    return sop, uid, syntax


def _plan(
    paths: Iterable[str | os.PathLike[str]],
) -> tuple[list[Path], dict[Path, SentFile], list[tuple[Path, str, str, str]]]:
    """What a send will do: the DICOM files under ``paths``, a ``SentFile`` with its error for each
    one whose header cannot be read, and (file, SOP class, SOP instance UID, transfer syntax) for the
    others; shared by the DIMSE and the STOW-RS send."""
    files = _dicom_files(paths)
    results: dict[Path, SentFile] = {}
    plan: list[tuple[Path, str, str, str]] = []
    for f in files:
        try:
            sop, uid, syntax = _header(f)
        except InputError as e:
            results[f] = SentFile(f, error=str(e))
            continue
        plan.append((f, sop, uid, syntax))
    return files, results, plan


def send_files(
    node: NodeSettings,
    paths: Sequence[str | os.PathLike[str]],
    *,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[SentFile]:
    """C-STORE every DICOM file in ``paths`` (folders: their files, recursively) to ``node``; one
    ``SentFile`` per file, in order. Files that are not DICOM, or that the node refuses, get their
    ``error``; a lost association raises a ``NetworkError`` saying how many files were sent."""
    files, results, plan = _plan(paths)
    contexts: dict[tuple[str, tuple[str, ...]], None] = {}
    for _, sop, _, syntax in plan:
        contexts[(sop, UNCOMPRESSED if syntax in UNCOMPRESSED else (syntax,))] = None
    if len(contexts) > 128:
        raise ValueError(f"{len(contexts)} different SOP class / transfer syntax pairs: send them in smaller groups")
    if plan:
        purpose = "C-STORE"
        with association(node, list(contexts), purpose=purpose) as assoc:
            accepted = {
                (str(cx.abstract_syntax), str(ts)) for cx in assoc.accepted_contexts for ts in cx.transfer_syntax
            }
            for i, (f, sop, uid, syntax) in enumerate(plan):
                if cancel is not None and cancel():
                    raise Cancelled()
                if progress is not None:
                    progress(i, len(plan), f"Sending {f.name}\u2026")
                if not any((sop, ts) in accepted for ts in ((syntax,) if syntax not in UNCOMPRESSED else UNCOMPRESSED)):
                    results[f] = SentFile(f, sop, uid, error=f"{node}: the node does not accept {sop_name(sop)} ({f})")
                    continue
                since = time.monotonic()
                try:
                    status = assoc.send_c_store(f)
                except (ValueError, AttributeError) as e:  # pynetdicom: no context / unreadable file
                    results[f] = SentFile(f, sop, uid, error=f"{f}: not sent ({e})")
                    continue
                if status_of(status) is None:
                    done = sum(1 for r in results.values() if r.ok)
                    cause = lost(assoc, node, purpose, since, midway=done > 0)
                    raise type(cause)(node, f"{cause.problem}; {done} of {len(plan)} file(s) had been sent") from None
                try:
                    code = check(status, assoc, node, purpose, since)
                except NetworkError as e:
                    results[f] = SentFile(f, sop, uid, int(status.Status), error=f"{f}: {e}")
                    continue
                results[f] = SentFile(f, sop, uid, code)
                log.info("%s: sent %s (%s)", node, f, sop_name(sop))
    if not plan and files:
        log.warning("%s: none of the %d file(s) is a DICOM file that can be sent", node, len(files))
    return [results[f] for f in files]
