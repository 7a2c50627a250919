"""Our storage SCP: receives what a device or a PACS pushes (C-STORE) into a local folder, and tells
the caller when a series is complete.

When is a series complete? DICOM has no "end of series" message; a sender pushes a series on one
association and releases it. So a series counts as complete when the association it came on is
*released*: ``on_series(SeriesReceived)`` is then called once per series received on it, in a
background worker (one at a time, in arrival order), so a slow callback (screening) never holds
up a sender. On an *aborted* association the instances that arrived whole are kept (each is
written atomically) and reported with ``complete=False``.

``StorageServer`` is also the C-MOVE destination of ``core.net.retrieve`` (with ``study_uid`` set,
it refuses instances of other studies).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from core.net.assoc import make_ae
from core.net.node import DEFAULT_AET, check_ae_title
from core.net.sop import OPT_SOP_CLASS, STORAGE_CLASSES, UNCOMPRESSED, transfer_syntaxes_for
from core.net.store import InstanceStore, StoredInstance, association_key

__all__ = ["StorageServer", "SeriesReceived", "listen"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesReceived:
    """One series that arrived on one association."""

    study_uid: str
    series_uid: str
    modality: str
    sop_classes: tuple[str, ...]
    files: tuple[Path, ...]
    folder: Path
    sender: str
    complete: bool

    @property
    def is_oct(self) -> bool:
        """An OCT series (what gets screened)."""
        return OPT_SOP_CLASS in self.sop_classes or self.modality == "OPT"


def _series(instances: list[StoredInstance], complete: bool) -> list[SeriesReceived]:
    groups: dict[tuple[str, str], list[StoredInstance]] = {}
    for s in instances:
        groups.setdefault((s.study_uid, s.series_uid), []).append(s)
    out = []
    for (study, series), members in groups.items():
        out.append(
            SeriesReceived(
                study_uid=study,
                series_uid=series,
                modality=next((m.modality for m in members if m.modality), ""),
                sop_classes=tuple(dict.fromkeys(m.sop_class for m in members)),
                files=tuple(dict.fromkeys(m.path for m in members)),
                folder=members[0].path.parent,
                sender=members[0].sender,
                complete=complete,
            )
        )
    return out


class StorageServer:
    """A storage SCP on ``(host, port)`` answering to ``aet``, storing into ``folder``.

    ``port=0`` picks a free port (see ``.port``). ``allowed_aets``: accept associations only from these
    calling AE titles (default: anyone). ``tls``: an ``ssl.SSLContext`` from ``core.net.tls_context(server=True)``.
    Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self,
        folder: str | Path,
        *,
        aet: str = DEFAULT_AET,
        port: int = 11112,
        host: str = "",
        tls=None,
        on_series: Callable[[SeriesReceived], None] | None = None,
        on_stored: Callable[[StoredInstance], None] | None = None,
        study_uid: str | None = None,
        allowed_aets: list[str] | None = None,
        acse_timeout: float = 30.0,
        dimse_timeout: float = 60.0,
        network_timeout: float = 60.0,
    ):
        self.aet = check_ae_title(aet, "our AE title")
        self.folder = Path(folder)
        self.host, self._port = host, int(port)
        self.tls = tls
        self.on_series = on_series
        self.store = InstanceStore(self.folder, study_uid=study_uid, on_stored=on_stored)
        self.allowed_aets = list(allowed_aets or [])
        self._timeouts = (acse_timeout, dimse_timeout, network_timeout)
        self._server: Any = None
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._ended: set[int] = set()
        self.series: list[SeriesReceived] = []
        self.callback_errors: list[str] = []

    # -- life cycle ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port we listen on (the one picked when started with port 0)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> StorageServer:
        """Bind and start serving in background threads; ``OSError`` when the port is taken."""
        if self._server is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        acse, dimse, network = self._timeouts
        ae = make_ae(self.aet, acse=acse, dimse=dimse, network=network)
        ae.require_called_aet = True  # a sender that calls another AE title is rejected (what PACS do)
        if self.allowed_aets:
            ae.require_calling_aet = self.allowed_aets
        ae.add_supported_context(Verification, list(UNCOMPRESSED))  # C-ECHO: senders check us first
        for sop in STORAGE_CLASSES:
            ae.add_supported_context(sop, list(transfer_syntaxes_for(sop)))
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self.store.handle),
            (evt.EVT_RELEASED, self._ended_released),
            (evt.EVT_ABORTED, self._ended_aborted),
            (evt.EVT_CONN_CLOSE, self._ended_closed),
        ]
        self._worker = threading.Thread(target=self._work, name=f"octscreen-scp-{self.aet}", daemon=True)
        self._worker.start()
        self._server = ae.start_server(
            (self.host, self._port), block=False, evt_handlers=handlers, ssl_context=self.tls
        )
        log.info(
            "storage SCP %s listening on %s:%d, storing into %s", self.aet, self.host or "*", self.port, self.folder
        )
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop accepting, abort associations still open, and wait (``timeout`` s at most) until every
        ``on_series`` callback already queued has run."""
        server, self._server = self._server, None
        if server is not None:
            for assoc in list(server.active_associations):
                assoc.abort()
            server.shutdown()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout)
            self._worker = None

    def __enter__(self) -> StorageServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every queued ``on_series`` callback has run; False on timeout."""
        done = threading.Event()
        self._queue.put(done.set)
        return done.wait(timeout)

    # -- association ends -------------------------------------------------------------------------
    def _end(self, event, complete: bool) -> None:
        key = association_key(event.assoc)
        if key in self._ended:  # released / aborted, then the connection closes: report once
            return
        self._ended.add(key)
        instances = self.store.by_association(key)
        if not instances:
            return
        found = _series(instances, complete)
        self.series.extend(found)
        for s in found:
            if not complete:
                log.warning("%s: association aborted; series %s may be incomplete", s.sender, s.series_uid)
            self._queue.put(s)

    def _ended_released(self, event) -> None:
        self._end(event, True)

    def _ended_aborted(self, event) -> None:
        self._end(event, False)

    def _ended_closed(self, event) -> None:
        self._end(event, bool(getattr(event.assoc, "is_released", False)))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if callable(item):
                item()
                continue
            if self.on_series is None:
                continue
            try:
                self.on_series(item)
            except Exception as e:  # one series' failure must not stop the server
                log.exception("series %s: callback failed", item.series_uid)
                self.callback_errors.append(f"series {item.series_uid}: {e}")


def listen(folder: str | Path, *, aet: str = DEFAULT_AET, port: int = 11112, host: str = "", **kwargs) -> StorageServer:
    """Start a ``StorageServer`` (see there for ``kwargs``) and return it, running."""
    return StorageServer(folder, aet=aet, port=port, host=host, **kwargs).start()
