"""Retrieve a study (or one series) from a node into a folder: C-GET (the node sends the instances
back on our association) or C-MOVE (it sends them to our own storage SCP, which this call runs for
the time of the retrieve; the node must know our AE title with our host and ``move_port``). C-MOVE
from a TLS node needs ``move_tls``, the server context of that storage SCP (our certificate and key),
so that the study comes back encrypted too; without it the retrieve is refused (``MOVE_OVER_TLS``).

All or nothing: instances arrive into a hidden staging folder inside ``out`` (each one written
atomically and checked, see ``core.net.store``) and are moved into
``out/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` only when the node reports the
retrieve finished. A retrieve that is interrupted (connection lost, node killed, timeout, abort,
Cancel) keeps nothing and raises ``RetrieveIncompleteError`` (or ``Cancelled``) saying how far it
got. A finished retrieve keeps what arrived whole and valid; instances we refused (non-OCT or
corrupt, see ``core.net.store``) and instances the node could not send (e.g. SOP classes we do not
accept) are listed in the result.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import ssl
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.status import code_to_category

from core.errors import Cancelled, InputError, NetworkError, RemoteFailureError, RetrieveIncompleteError
from core.fileio import atomic_output
from core.net.assoc import PENDING, association, failure_text, lost, require_context, status_of
from core.net.node import NodeSettings
from core.net.query import find_studies
from core.net.scp import StorageServer
from core.net.sop import STORAGE_CLASSES, UNCOMPRESSED, transfer_syntaxes_for
from core.net.store import InstanceStore, StoredInstance, is_uid

__all__ = ["retrieve", "RetrieveResult", "clean_stale_staging", "STAGING_PREFIX", "MOVE_OVER_TLS"]

log = logging.getLogger(__name__)

STAGING_PREFIX = ".octscreen-retrieve."
_STAGING = re.compile(r"^\.octscreen-retrieve\.[0-9a-f]{12}\.tmp$")


@dataclass
class RetrieveResult:
    """What a finished retrieve kept, and what it did not get."""

    node: str
    study_uid: str
    out: Path
    method: str
    files: list[Path] = field(default_factory=list)
    already_there: int = 0
    rejected: list[InputError] = field(default_factory=list)
    not_sent: int = 0
    conflicts: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """One line per thing that did not arrive (empty: the whole study is here)."""
        lines = [str(e) for e in self.rejected] + list(self.conflicts)
        if self.not_sent:
            lines.append(
                f"{self.node}: {self.not_sent} instance(s) of study {self.study_uid} were not sent "
                "(the node could not send them, or they are of a SOP class OCT Screen does not accept)"
            )
        return lines


#: Why ``retrieve(move=True)`` refuses a TLS node without ``move_tls``: the node connects back to our
#: storage SCP, which would listen without TLS, so the study would cross the network unencrypted.
MOVE_OVER_TLS = (
    "C-MOVE from a TLS node needs our certificate and its key (the node connects back to our storage SCP, "
    "which must talk TLS too, or the study would come back unencrypted); give them, or retrieve by C-GET, "
    "which brings the study back over the TLS connection"
)


def clean_stale_staging(out: Path, older_than_s: float = 600.0) -> list[Path]:
    """Remove staging folders a killed earlier retrieve left in ``out`` (ours only, older ones only)."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(Path(out).iterdir())
    except OSError:
        return removed
    for p in entries:
        try:
            if _STAGING.match(p.name) and p.is_dir() and now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        except OSError:
            continue
    return removed


def _start(out: str | Path, study_uid: str, series_uid: str | None) -> tuple[Path, Path]:
    """The UIDs checked, ``out`` created, stale staging folders removed and a fresh hidden staging
    folder made in it: (out, staging), for every transport's retrieve."""
    if not is_uid(study_uid) or (series_uid is not None and not is_uid(series_uid)):
        raise ValueError(f"{series_uid if series_uid and not is_uid(series_uid) else study_uid!r} is not a DICOM UID")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(out)
    staging = out / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}.tmp"
    staging.mkdir()
    return out, staging


def _identifier(study_uid: str, series_uid: str | None) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
    q.StudyInstanceUID = study_uid
    if series_uid:
        q.SeriesInstanceUID = series_uid
    return q


def _count(status: Dataset, keyword: str) -> int:
    try:
        return int(status.get(keyword, 0) or 0)
    except (TypeError, ValueError):
        return 0


class _Run:
    """Reads the pending / final answers of a C-GET or C-MOVE."""

    def __init__(self, node: NodeSettings, purpose: str, study_uid: str, progress, cancel) -> None:
        self.node, self.purpose, self.study_uid = node, purpose, study_uid
        self.progress, self.cancel = progress, cancel
        self.total: int | None = None
        self.store: InstanceStore | None = None

    def stored(self, _instance: StoredInstance) -> None:
        """``InstanceStore.on_stored``: progress after each instance kept (in a network thread)."""
        if self.progress is not None and self.store is not None:
            done = len(self.store.stored)  # InstanceStore appends the instance before calling back
            total = max(self.total, done) if self.total else 0
            of = f" of {total}" if total else ""
            self.progress(done, total, f"Retrieving: {done}{of} instance(s)")

    def interrupted(self, why: str) -> RetrieveIncompleteError:
        got = len(self.store.stored) if self.store is not None else 0
        of = f" of {self.total}" if self.total is not None else ""
        return RetrieveIncompleteError(
            self.node,
            f"{self.purpose} of study {self.study_uid} was interrupted before the node reported it complete "
            f"({got}{of} instance(s) had arrived): {why}; nothing of it was kept",
        )

    def final(self, assoc, responses: Iterable[tuple[Dataset, Dataset | None]]) -> Dataset:
        since = time.monotonic()
        last: Dataset | None = None
        for status, _identifier in responses:
            code = status_of(status)
            if code is None:
                cause = lost(
                    assoc,
                    self.node,
                    self.purpose,
                    since,
                    midway=self.total is not None or bool(self.store and self.store.stored),
                )
                raise self.interrupted(cause.problem.split(": ", 1)[-1]) from cause
            since = time.monotonic()
            if code in PENDING:
                done = sum(
                    _count(status, k)
                    for k in (
                        "NumberOfCompletedSuboperations",
                        "NumberOfFailedSuboperations",
                        "NumberOfWarningSuboperations",
                    )
                )
                self.total = done + _count(status, "NumberOfRemainingSuboperations")
                if self.cancel is not None and self.cancel():
                    assoc.abort()
                    raise Cancelled()
                continue
            last = status
        if last is None:
            raise self.interrupted("the node sent no final answer")
        return last


def _commit(stored: list[StoredInstance], staging: Path, out: Path, result: RetrieveResult) -> None:
    """Move staged instances into ``out`` (no overwrite: an identical file counts as already there)."""
    for inst in stored:
        if inst.duplicate:
            continue
        target = out / inst.path.relative_to(staging)
        if target.exists():
            if target.read_bytes() == inst.path.read_bytes():
                result.already_there += 1
                result.files.append(target)
            else:
                result.conflicts.append(
                    f"{target}: a different file with this SOP Instance UID is already there; kept it, "
                    "the retrieved copy was dropped"
                )
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(target) as tmp:
            os.replace(inst.path, tmp)  # (same file system: a rename)
        result.files.append(target)


def retrieve(
    node: NodeSettings,
    study_uid: str,
    out: str | Path,
    *,
    series_uid: str | None = None,
    move: bool = False,
    move_port: int = 11113,
    move_host: str = "",
    move_aet: str | None = None,
    move_tls: ssl.SSLContext | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> RetrieveResult:
    """Retrieve study ``study_uid`` (or only ``series_uid`` of it) from ``node`` into ``out``; see the
    module doc. ``move``: C-MOVE to ``move_aet`` (default our AE title) served by a storage SCP on
    ``move_host:move_port`` for the time of the call (over TLS with ``move_tls``, a server context from
    ``core.net.tls_context(server=True, ...)``; required when the node is TLS); else C-GET.
    ``progress(done, total, message)`` after each instance kept (called from a network thread; ``total``
    as far as the node has said, 0 while unknown); ``cancel()`` checked at each answer of the node
    (aborts, keeps nothing, raises ``Cancelled``)."""
    if move and node.tls is not None and move_tls is None:
        raise ValueError(MOVE_OVER_TLS)
    out, staging = _start(out, study_uid, series_uid)
    method = "C-MOVE" if move else "C-GET"
    purpose = f"{method}"
    result = RetrieveResult(node=str(node), study_uid=study_uid, out=out, method=method)
    try:
        if move:
            store, final = _move(
                node,
                study_uid,
                series_uid,
                staging,
                move_port,
                move_host,
                move_aet,
                move_tls,
                purpose,
                progress,
                cancel,
            )
        else:
            store, final = _get(node, study_uid, series_uid, staging, purpose, progress, cancel)
        code = int(final.Status)
        category = code_to_category(code)
        result.rejected = list(store.rejected)
        if category == "Cancel":
            raise Cancelled()
        if category == "Failure":
            hint = ""
            if code == 0xA801:
                hint = (
                    f" (the node does not know the C-MOVE destination {move_aet or node.our_aet!r}: register that AE "
                    f"title on the node with this computer's address and port {move_port})"
                )
            if not hint:
                hint = _failure_hint(node, study_uid, len(store.stored))
            raise RemoteFailureError(
                node, f"{purpose} of study {study_uid}: the node answered {failure_text(final)}{hint}; nothing was kept"
            )
        failed = _count(final, "NumberOfFailedSuboperations")
        result.not_sent = max(0, failed - len(store.rejected) - len(store.failures))
        if store.failures:
            raise RetrieveIncompleteError(
                node, f"{purpose} of study {study_uid}: {store.failures[0]}; nothing was kept"
            )
        if not store.stored:
            if failed or store.rejected:
                detail = "; ".join(result.problems[:3])
                raise RemoteFailureError(node, f"{purpose} of study {study_uid}: no instance arrived whole ({detail})")
            raise RemoteFailureError(
                node, f"{purpose}: the node holds no instance of study {study_uid} (check the UID with a query)"
            )
        _commit(store.stored, staging, out, result)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "%s: %s of study %s: %d instance(s) into %s (%d problem(s))",
        node,
        method,
        study_uid,
        len(result.files),
        out,
        len(result.problems),
    )
    return result


def _failure_hint(node: NodeSettings, study_uid: str, n_stored: int) -> str:
    """Why a retrieve may have failed: no such study (a C-FIND says so), or a study holding a SOP class
    we do not accept (nodes such as Orthanc then fail the whole retrieve)."""
    sent = f" after sending {n_stored} instance(s)" if n_stored else ""
    if not n_stored:
        try:
            if not find_studies(node.with_(retries=0), study_uid=study_uid, limit=1):
                return " (the node holds no such study: check the StudyInstanceUID with a query)"
        except NetworkError:
            return ""
    return (
        f"{sent} (the study is there; a node fails a retrieve like this when the study holds instances of a "
        "SOP class OCT Screen does not accept, see docs/CONFORMANCE.md: retrieve the OCT series alone, or "
        "see the node's log)"
    )


def _get(node, study_uid, series_uid, staging, purpose, progress, cancel) -> tuple[InstanceStore, Dataset]:
    model = StudyRootQueryRetrieveInformationModelGet
    run = _Run(node, purpose, study_uid, progress, cancel)
    store = run.store = InstanceStore(staging, study_uid=study_uid, on_stored=run.stored)
    contexts = [(model, UNCOMPRESSED)] + [(sop, transfer_syntaxes_for(sop)) for sop in STORAGE_CLASSES]
    with association(
        node, contexts, purpose=purpose, scp_roles=list(STORAGE_CLASSES), handlers=[(evt.EVT_C_STORE, store.handle)]
    ) as assoc:
        require_context(assoc, node, model, purpose)
        final = run.final(assoc, assoc.send_c_get(_identifier(study_uid, series_uid), model))
    return store, final


def _move(
    node, study_uid, series_uid, staging, port, host, aet, tls, purpose, progress, cancel
) -> tuple[InstanceStore, Dataset]:
    model = StudyRootQueryRetrieveInformationModelMove
    destination = aet or node.our_aet
    run = _Run(node, purpose, study_uid, progress, cancel)
    server = StorageServer(
        staging,
        aet=destination,
        port=port,
        host=host,
        tls=tls,
        study_uid=study_uid,
        on_stored=run.stored,
        acse_timeout=node.acse_timeout,
        dimse_timeout=node.dimse_timeout,
        network_timeout=node.network_timeout,
    )
    try:
        server.start()
    except OSError as e:
        raise NetworkError(
            f"{destination}@{host or '*'}:{port}",
            f"{purpose}: cannot listen for the node's C-STORE on port {port} ({e.strerror or e}); "
            "is another program (octscreen listen?) using it?",
        ) from None
    run.store = server.store
    try:
        with association(node, [(model, UNCOMPRESSED)], purpose=purpose) as assoc:
            require_context(assoc, node, model, purpose)
            final = run.final(assoc, assoc.send_c_move(_identifier(study_uid, series_uid), destination, model))
    finally:
        server.stop()
    return server.store, final
