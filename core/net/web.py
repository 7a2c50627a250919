"""DICOMweb, the other transport (on dicomweb-client): QIDO-RS queries, WADO-RS retrieve, STOW-RS store.

The functions mirror the DIMSE ones of ``core.net`` (same arguments, same results) so that the CLI
and the GUI take a node written ``AET@HOST:PORT`` or a DICOMweb base URL alike:

- ``WebNode`` / ``parse_web_node('https://pacs/dicom-web')`` / ``is_web_node``: who we talk to;
- ``echo``: a QIDO-RS query for one study (is the service there, does it answer us?);
- ``find_patients`` / ``find_studies`` / ``find_series``: QIDO-RS (patients: from the studies, QIDO-RS
  has no patient level);
- ``retrieve``: WADO-RS of a study (or a series), all or nothing into
  ``out/<study>/<series>/<instance>.dcm``, each instance checked as ``core.net.store.InstanceStore``
  checks what arrives by C-STORE;
- ``send_files``: STOW-RS of files (reports, SR, overlays, OPT).

Every failure is a ``core.errors.NetworkError`` naming the URL (without any password in it).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pydicom
import requests
from pydicom.dataset import Dataset

from core.errors import (
    AssociationRejectedError,
    Cancelled,
    InputError,
    NetworkError,
    NetworkTimeoutError,
    NodeUnreachableError,
    RemoteFailureError,
    RetrieveIncompleteError,
)
from core.io.dicom import element_int, element_text
from core.net.query import PatientMatch, SeriesMatch, StudyMatch, parse_date_range
from core.net.retrieve import RetrieveResult, _commit, _start
from core.net.store import InstanceStore, SentFile, _plan, is_uid
from core.urls import https_or_loopback, is_https, shown_url, split_credentials

__all__ = [
    "WebNode",
    "parse_web_node",
    "is_web_node",
    "echo",
    "find_patients",
    "find_studies",
    "find_series",
    "retrieve",
    "send_files",
    "STOW_BATCH",
]

log = logging.getLogger(__name__)

#: Files per STOW-RS request (bounds the memory a send of a large folder needs).
STOW_BATCH = 16


def is_web_node(text: object) -> bool:
    """Whether a node is written as a DICOMweb URL (``http://`` or ``https://``) rather than AET@HOST:PORT."""
    return str(text).strip().lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class WebNode:
    """A DICOMweb service: its base URL (QIDO-RS, WADO-RS and STOW-RS below it, e.g.
    ``http://pacs:8042/dicom-web``), the seconds to wait for each answer, retries of a connection
    that fails, and TLS for https: a CA bundle to trust (default the system's) and a client
    certificate. User and password in the URL become HTTP Basic authentication (never printed)."""

    url: str
    timeout: float = 30.0
    retries: int = 1
    retry_delay: float = 1.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __str__(self) -> str:
        return shown_url(self.url)

    def with_(self, **changes: Any) -> WebNode:
        return replace(self, **changes)


def parse_web_node(text: str, **settings: Any) -> WebNode:
    """A ``WebNode`` for the base URL ``text`` (http or https, a host, no query); ``settings`` are
    ``WebNode`` fields. ``ValueError`` says what is wrong."""
    url = str(text).strip().rstrip("/")
    parts = urllib.parse.urlsplit(url)
    named = repr(shown_url(url) if parts.hostname else url.rsplit("@", 1)[-1])  # never repeat a password
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{named} is not a DICOMweb URL: write http(s)://HOST[:PORT]/PATH, e.g. http://pacs:8042/dicom-web"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{named}: a DICOMweb base URL has no query or fragment")
    try:
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        raise ValueError(f"{named}: the port is not a number from 1 to 65535") from None
    if settings.get("key_file") and not settings.get("cert_file"):
        raise ValueError("a client key needs its certificate (--tls-cert)")
    if any(settings.get(k) for k in ("ca_file", "cert_file", "key_file")) and not is_https(url):
        raise ValueError("TLS certificate files are used with an https URL only: write the URL with https://")
    _bare, user, password = split_credentials(url)
    if password and not user:
        raise ValueError("a DICOMweb password needs its user")
    if password and not https_or_loopback(url):
        raise ValueError(
            f"{shown_url(url)}: a password would cross the network unencrypted over http://: write the URL with https://"
        )
    return WebNode(url=url, **settings)


# ---------------------------------------------------------------------------------------- transport
def _session(node: WebNode):
    """A requests session for ``node`` (authentication, TLS) and the base URL without credentials."""
    _bare, user, password = split_credentials(node.url)
    session = requests.Session()
    if user:
        session.auth = (user, password)
    if node.ca_file:
        session.verify = node.ca_file
    if node.cert_file:
        session.cert = (node.cert_file, node.key_file) if node.key_file else node.cert_file
    return session, shown_url(node.url)


def _timeouts(node: WebNode) -> tuple[float, float]:
    return min(node.timeout, 10.0), node.timeout


def _client(node: WebNode):
    """dicomweb-client for WADO-RS (multipart parts as data sets) and STOW-RS (a multipart request)."""
    from dicomweb_client.api import DICOMwebClient  # noqa: PLC0415 (heavy: ~500 ms, only a DICOMweb node needs it)

    session, base = _session(node)
    return DICOMwebClient(base, session=session, timeout=_timeouts(node))


def _failure(node: WebNode, purpose: str, e: Exception, *, what: str = "") -> NetworkError:
    """The ``NetworkError`` for an exception of requests / dicomweb-client."""
    if isinstance(e, requests.exceptions.SSLError):
        return NodeUnreachableError(node, f"{purpose}: TLS failed ({_reason(e)}); check --tls-ca / --tls-cert")
    if isinstance(e, requests.exceptions.Timeout):
        return NetworkTimeoutError(node, f"{purpose}: no answer within {node.timeout:g} s")
    if isinstance(e, requests.exceptions.ConnectionError):
        return NodeUnreachableError(
            node, f"{purpose}: cannot connect ({_reason(e)}); is the service running at this URL?"
        )
    if isinstance(e, requests.exceptions.HTTPError) and e.response is not None:
        code = e.response.status_code
        text = f"HTTP {code} {e.response.reason or ''}".strip()
        if code in (401, 403):
            return AssociationRejectedError(
                node, f"{purpose}: the service refused us ({text}); check the user and password"
            )
        if code == 404:
            return RemoteFailureError(
                node,
                f"{purpose}: {text}: " + (what or "no DICOMweb service at this URL (check its path, e.g. /dicom-web)"),
            )
        return RemoteFailureError(node, f"{purpose}: the service answered {text}")
    if isinstance(e, requests.exceptions.RequestException):
        return NetworkError(node, f"{purpose}: {_reason(e)}")
    return RemoteFailureError(node, f"{purpose}: the answer could not be read ({_reason(e)})")


def _reason(e: Exception) -> str:
    text = str(e)
    for cue in ("Connection refused", "Name or service not known", "No route to host", "certificate verify failed"):
        if cue in text:
            return cue.lower() if cue != "Connection refused" else "connection refused"
    return text[:200] or type(e).__name__


def _call(node: WebNode, purpose: str, fn: Callable[[], Any], *, what: str = "") -> Any:
    """``fn()`` with connection failures retried ``node.retries`` times; any failure a ``NetworkError``."""
    attempts = node.retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except NetworkError:
            raise
        except requests.exceptions.ConnectionError as e:  # (incl. refused: the node may be starting)
            if attempt < attempts and not isinstance(e, requests.exceptions.SSLError):
                time.sleep(node.retry_delay)
                continue
            err = _failure(node, purpose, e, what=what)
            if attempts > 1:
                err = type(err)(node, f"{err.problem} (gave up after {attempts} attempts)")
            raise err from None
        except Exception as e:  # HTTP errors, undecodable answers
            raise _failure(node, purpose, e, what=what) from None
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------ queries
#: Matches per QIDO-RS page (services cap a page; we ask for the next one while pages come full).
QIDO_PAGE = 100


def _qido(
    node: WebNode, path: str, filters: dict[str, str], fields: Sequence[str], limit: int | None, purpose: str
) -> list[Dataset]:
    """A QIDO-RS search of ``path`` (``studies``, ``studies/<uid>/series``), page by page up to ``limit``.

    The query string keeps the wildcards ``*`` and ``?`` as they are (Orthanc's DICOMweb plugin 1.7
    does not decode a percent-encoded ``%2A``, which dicomweb-client's search sends); a service that
    ignores ``offset`` (the same page again) ends the paging instead of looping."""
    session, base = _session(node)
    rows: list[dict] = []
    seen: set[str] = set()
    page = QIDO_PAGE if limit is None else max(1, min(limit, QIDO_PAGE))
    while True:
        params = [*filters.items(), *(("includefield", f) for f in fields), ("limit", str(page))]
        if rows:
            params.append(("offset", str(len(rows))))
        url = f"{base}/{path}?{urllib.parse.urlencode(params, safe='*?,')}"

        def get(url: str = url) -> list[dict]:
            answer = session.get(url, headers={"Accept": "application/dicom+json"}, timeout=_timeouts(node))
            answer.raise_for_status()
            return [] if answer.status_code == 204 or not answer.content.strip() else list(answer.json())

        batch = _call(node, purpose, get)
        new = [r for r in batch if json.dumps(r, sort_keys=True) not in seen]
        seen.update(json.dumps(r, sort_keys=True) for r in new)
        rows.extend(new)
        if len(batch) < page or not new or (limit is not None and len(rows) >= limit):
            break
    return [Dataset.from_json(row) for row in (rows[:limit] if limit is not None else rows)]


def echo(node: WebNode) -> float:
    """A QIDO-RS query for one study: the round trip in seconds. Raises a ``NetworkError``."""
    start = time.monotonic()
    _qido(node, "studies", {}, ["StudyInstanceUID"], 1, "QIDO-RS")
    elapsed = time.monotonic() - start
    log.info("%s: QIDO-RS answered in %.3f s", node, elapsed)
    return elapsed


def find_studies(
    node: WebNode,
    *,
    patient_id: str = "",
    patient_name: str = "",
    date: str = "",
    modality: str = "",
    study_uid: str = "",
    accession_number: str = "",
    limit: int | None = None,
) -> list[StudyMatch]:
    """QIDO-RS studies search, with the filters of :func:`core.net.find_studies`."""
    filters = {
        k: v
        for k, v in (
            ("StudyInstanceUID", study_uid),
            ("PatientID", patient_id),
            ("PatientName", patient_name),
            ("StudyDate", parse_date_range(date) if date else ""),
            ("AccessionNumber", accession_number),
            ("ModalitiesInStudy", modality.upper()),
        )
        if v
    }
    fields = [
        "StudyTime",
        "StudyDescription",
        "AccessionNumber",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ]
    return [StudyMatch.from_dataset(d) for d in _qido(node, "studies", filters, fields, limit, "QIDO-RS (studies)")]


def find_patients(
    node: WebNode, *, patient_id: str = "", patient_name: str = "", limit: int | None = None
) -> list[PatientMatch]:
    """The patients of the matching studies (QIDO-RS has no patient level), in the service's order."""
    filters = {k: v for k, v in (("PatientID", patient_id), ("PatientName", patient_name)) if v}
    patients: dict[str, list[Dataset]] = {}
    for d in _qido(node, "studies", filters, ["PatientBirthDate", "PatientSex"], None, "QIDO-RS (patients)"):
        patients.setdefault(element_text(d, "PatientID"), []).append(d)
    found = [PatientMatch.from_dataset(studies[0], n_studies=len(studies)) for studies in patients.values()]
    return found[:limit] if limit is not None else found


def find_series(node: WebNode, study_uid: str, *, modality: str = "", limit: int | None = None) -> list[SeriesMatch]:
    """QIDO-RS series search within one study."""
    if not study_uid:
        raise ValueError("a series query needs the study's StudyInstanceUID")
    if not is_uid(study_uid):
        raise ValueError(f"{study_uid!r} is not a DICOM UID")
    filters = {"Modality": modality.upper()} if modality else {}
    fields = ["SeriesDescription", "Laterality", "ImageLaterality", "NumberOfSeriesRelatedInstances"]
    return [
        SeriesMatch.from_dataset(d, study_uid)
        for d in _qido(node, f"studies/{study_uid}/series", filters, fields, limit, "QIDO-RS (series)")
    ]


# ----------------------------------------------------------------------------------------- retrieve
def _encoded(ds: Dataset) -> bytes:
    """A WADO-RS part as a PS3.10 file (its own file meta, as the service sent it)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _expected_instances(node: WebNode, study_uid: str, series_uid: str | None) -> int | None:
    """How many instances the service says the study (or series) holds: 0 when it has no such study,
    None when it does not say (then a cut-short answer cannot be told from a whole one)."""
    if series_uid:
        found = _qido(
            node,
            f"studies/{study_uid}/series",
            {"SeriesInstanceUID": series_uid},
            ["NumberOfSeriesRelatedInstances"],
            1,
            "QIDO-RS (series)",
        )
        return element_int(found[0], "NumberOfSeriesRelatedInstances") if found else 0
    found = _qido(
        node, "studies", {"StudyInstanceUID": study_uid}, ["NumberOfStudyRelatedInstances"], 1, "QIDO-RS (studies)"
    )
    return element_int(found[0], "NumberOfStudyRelatedInstances") if found else 0


def retrieve(
    node: WebNode,
    study_uid: str,
    out: str | Path,
    *,
    series_uid: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    **_dimse: Any,
) -> RetrieveResult:
    """WADO-RS of study ``study_uid`` (or only ``series_uid``) into ``out``, with the semantics of
    :func:`core.net.retrieve`: all or nothing through a hidden staging folder, every instance checked
    (``InstanceStore``), refused ones listed. ``progress(done, 0, message)`` after each instance;
    ``cancel()`` between instances (keeps nothing, raises ``Cancelled``). DIMSE-only options
    (``move``, ...) are refused."""
    if _dimse.get("move"):
        raise ValueError("C-MOVE (--move) needs a DICOM node written AET@HOST:PORT, not a DICOMweb URL")
    out, staging = _start(out, study_uid, series_uid)
    purpose = "WADO-RS"
    result = RetrieveResult(node=str(node), study_uid=study_uid, out=out, method=purpose)
    store = InstanceStore(staging, study_uid=study_uid)
    client = _client(node)
    what = f"the service holds no {'series ' + series_uid + ' in ' if series_uid else ''}study {study_uid}"
    try:
        expected = _expected_instances(node, study_uid, series_uid)
        if expected == 0:
            raise RemoteFailureError(node, f"{purpose}: {what} (check the UID with a query)")
        parts: Iterator[Dataset] = _call(
            node,
            purpose,
            lambda: client.iter_series(study_uid, series_uid) if series_uid else client.iter_study(study_uid),
            what=what,
        )
        received = 0
        while True:
            if cancel is not None and cancel():
                raise Cancelled()
            try:
                ds = next(parts)
            except StopIteration:
                break
            except Exception as e:  # the stream broke off, or a part could not be read
                err = e if isinstance(e, NetworkError) else _failure(node, purpose, e, what=what)
                if received == 0 and not isinstance(err, (NodeUnreachableError, NetworkTimeoutError)):
                    raise err from None
                raise RetrieveIncompleteError(
                    node,
                    f"{purpose} of study {study_uid} was interrupted ({received} instance(s) had arrived): "
                    f"{err.problem.split(': ', 1)[-1]}; nothing of it was kept",
                ) from None
            received += 1
            try:
                data = _encoded(ds)
            except Exception as e:  # a part pydicom cannot write back
                store.rejected.append(InputError(None, f"{node}: an instance of study {study_uid} refused: {e}"))
                continue
            store.keep_dataset(ds, data, str(node))
            if progress is not None:
                progress(received, 0, f"Retrieving: {received} instance(s)")
        if expected is not None and received < expected:  # a multipart answer cut short ends like a whole one
            raise RetrieveIncompleteError(
                node,
                f"{purpose} of study {study_uid} was interrupted ({received} instance(s) had arrived, the service "
                f"holds {expected}): the answer ended early; nothing of it was kept",
            )
        result.rejected = list(store.rejected)
        if store.failures:
            raise RetrieveIncompleteError(
                node, f"{purpose} of study {study_uid}: {store.failures[0]}; nothing was kept"
            )
        if not store.stored:
            if store.rejected:
                detail = "; ".join(result.problems[:3])
                raise RemoteFailureError(node, f"{purpose} of study {study_uid}: no instance arrived whole ({detail})")
            raise RemoteFailureError(node, f"{purpose}: {what} (check the UID with a query)")
        _commit(store.stored, staging, out, result)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: WADO-RS of study %s: %d instance(s) into %s", node, study_uid, len(result.files), out)
    return result


# -------------------------------------------------------------------------------------------- store
def send_files(
    node: WebNode,
    paths: Sequence[str | Path],
    *,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[SentFile]:
    """STOW-RS every DICOM file in ``paths`` (folders: their files, recursively), ``STOW_BATCH`` per
    request; one ``SentFile`` per file, in order. Files that are not DICOM, and instances the service
    refuses (Failed SOP Sequence), get their ``error``; a lost connection raises a ``NetworkError``
    saying how many files had been stored."""
    files, results, headers = _plan(paths)
    plan = [(f, sop, uid) for f, sop, uid, _syntax in headers]
    client = _client(node) if plan else None
    for start in range(0, len(plan), STOW_BATCH):
        if cancel is not None and cancel():
            raise Cancelled()
        batch = plan[start : start + STOW_BATCH]
        if progress is not None:
            progress(start, len(plan), f"Sending {batch[0][0].name}\u2026")
        datasets = []
        for f, sop, uid in batch:
            try:
                datasets.append(pydicom.dcmread(f))
            except Exception as e:
                results[f] = SentFile(f, sop, uid, error=f"{f}: not sent ({e})")
        datasets_uids = {str(ds.SOPInstanceUID) for ds in datasets}
        if not datasets:
            continue
        try:
            assert client is not None
            answer = _call(node, "STOW-RS", functools.partial(client.store_instances, datasets))
        except NetworkError as e:
            done = sum(1 for r in results.values() if r.ok)
            raise type(e)(node, f"{e.problem}; {done} of {len(plan)} file(s) had been stored") from None
        failed = {
            str(item.get("ReferencedSOPInstanceUID", "")): int(item.get("FailureReason", 0xC000) or 0xC000)
            for item in (answer.get("FailedSOPSequence") or [])
        }
        stored = {str(item.get("ReferencedSOPInstanceUID", "")) for item in (answer.get("ReferencedSOPSequence") or [])}
        for f, sop, uid in batch:
            if f in results:
                continue
            if uid in failed:
                results[f] = SentFile(
                    f, sop, uid, failed[uid], error=f"{f}: the service refused it (failure 0x{failed[uid]:04X})"
                )
            elif uid in stored or (uid in datasets_uids and not failed):
                results[f] = SentFile(f, sop, uid, 0)
                log.info("%s: stored %s", node, f)
            else:
                results[f] = SentFile(f, sop, uid, error=f"{f}: the service did not say it stored it")
    if not plan and files:
        log.warning("%s: none of the %d file(s) is a DICOM file that can be sent", node, len(files))
    return [results[f] for f in files]
