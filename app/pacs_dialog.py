"""The PACS in the GUI: query and retrieve (File > Query PACS…) and Send to PACS (File > Send to PACS…).

- :class:`PacsDialog`: choose a node, search its studies (patient id / name, date range, accession,
  modality), a sortable table of the studies with the series of the selected one, Retrieve with a
  progress bar and Cancel. The retrieved series open and screen through ``MainWindow.open_paths``.
- :class:`NodesDialog`: the node editor (add / edit / remove; Test runs an echo in the background).
- :class:`ChooseNodeDialog`: where Send to PACS sends to, and what.
- :class:`PacsDialogs`: this module's modal questions behind one injectable object (tests replace it,
  as they replace ``app.dialogs.Dialogs``); messages go through the window's ``Dialogs``.
- :class:`PacsController`: the main window's two actions, the export hook and the send job.

All network work runs as ``app.workers.Job`` on the window's QThreadPool, through ``core.net`` (DIMSE)
or ``core.net.web`` (DICOMweb), with the same functions ``octscreen pacs`` uses (``app.cmd_pacs.api_for``).
Every failure is a message naming the node (:func:`failure_text`), never a traceback. A retrieve is
all or nothing: ``core.net.retrieve`` keeps nothing of an interrupted series, and :func:`retrieve_plan`
removes again what earlier series of the same retrieve brought in when a later one is cancelled or fails.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from PySide6.QtCore import QDate, QObject, QStandardPaths, Qt, QThreadPool, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QStyle,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.cmd_pacs import api_for
from app.settings import DICOMWEB, DIMSE, NODE_KINDS, AppSettings, PacsNode
from app.workers import CancelFn, Job, ProgressFn
from core.errors import (
    AssociationRejectedError,
    Cancelled,
    NetworkError,
    NetworkTimeoutError,
    NodeUnreachableError,
    RetrieveIncompleteError,
)
from core.net.query import SeriesMatch, StudyMatch
from core.outputs import sr_path, write_exam_outputs
from core.report import ReportOptions
from core.urls import is_https
from core.volume import display_name, format_date

__all__ = [
    "ChooseNodeDialog",
    "NodesDialog",
    "PacsController",
    "PacsDialog",
    "PacsDialogs",
    "RetrieveOutcome",
    "RetrievePlan",
    "SendOutcome",
    "StudyQuery",
    "StudyRow",
    "connection",
    "echo_node",
    "failure_text",
    "retrieve_plan",
    "retrieve_root",
    "search_studies",
    "send_to_node",
]

log = logging.getLogger(__name__)

MAX_STUDIES = 500  # matches listed per search
SERIES_LOOKUPS = 100  # studies whose series (and eyes) a search looks up
EYES = {"R": "OD", "L": "OS", "B": "OU"}
OPT = "OPT"


# ------------------------------------------------------------------------------ the network, no Qt
def connection(node: PacsNode) -> Any:
    """The ``core.net.NodeSettings`` (DIMSE) or ``core.net.web.WebNode`` (DICOMweb) of ``node``;
    ``ValueError`` says what is wrong with its settings."""
    files = _tls_files(node) if node.kind == DICOMWEB or node.tls else {}  # kept but unused with TLS off
    if node.kind == DICOMWEB:
        from core.net.web import parse_web_node  # noqa: PLC0415 (GUI start-up: dicomweb_client ~500 ms)

        if not node.url.strip():
            raise ValueError("the DICOMweb URL is empty")
        if node.password and not node.user:
            raise ValueError("a DICOMweb password needs its user")
        return parse_web_node(node.web_url, timeout=float(node.timeout), retries=0, **files)
    from core.net import DEFAULT_AET, NodeSettings, tls_context  # noqa: PLC0415 (GUI start-up: pynetdicom ~400 ms)
    from core.net.retrieve import MOVE_OVER_TLS  # noqa: PLC0415 (as above)

    tls = None
    if node.tls:
        if node.move_port and not (files.get("cert_file") and files.get("key_file")):
            raise ValueError(MOVE_OVER_TLS)
        try:
            tls = tls_context(**files)
        except (OSError, ssl.SSLError) as e:  # a file that is not a PEM certificate / key, or not ours
            raise ValueError(f"the TLS certificate files cannot be used ({e})") from None
    t = float(node.timeout)
    return NodeSettings(
        aet=node.aet,
        host=node.host.strip(),
        port=int(node.port),
        our_aet=node.our_aet or DEFAULT_AET,
        connect_timeout=min(t, 10.0),
        acse_timeout=t,
        dimse_timeout=t,
        network_timeout=max(t, 60.0),
        tls=tls,
    )


def _tls_files(node: PacsNode) -> dict[str, str]:
    """The node's TLS files (CA, our certificate, its key), each checked to be a readable file;
    ``ValueError`` names the one that is not."""
    files = {"ca_file": node.tls_ca.strip(), "cert_file": node.tls_cert.strip(), "key_file": node.tls_key.strip()}
    what = {"ca_file": "CA certificate", "cert_file": "client certificate", "key_file": "client key"}
    for key, path in files.items():
        if path and not Path(path).is_file():
            raise ValueError(f"the TLS {what[key]} {path} is not a file")
    if files["key_file"] and not files["cert_file"]:
        raise ValueError("a TLS client key needs its client certificate")
    return {k: v for k, v in files.items() if v}


def _api(node: PacsNode) -> tuple[Any, Any, dict[str, str]]:
    """(connection, the module with echo / find_* / retrieve / send_files, its service names)."""
    net = connection(node)
    api, names = api_for(net)
    return net, api, names


def echo_node(node: PacsNode) -> str:
    """Echo ``node`` (C-ECHO, or a QIDO-RS query); the answer in words. Raises a ``NetworkError``."""
    net, api, names = _api(node)
    seconds = api.echo(net)
    ours = f"; our AE title {net.our_aet}" if node.kind == DIMSE else ""
    return f"{node.name} answered in {seconds * 1000:.0f} ms ({names['echo']} to {net}{ours})"


def failure_text(node: PacsNode, exc: BaseException) -> str:
    """What went wrong talking to ``node``, in words that name it (and the error, which names its address)."""
    web = node.kind == DICOMWEB
    if isinstance(exc, ValueError):
        return f"The settings of {node.name} are not usable: {exc}.\n\nCorrect them with Nodes\u2026"
    if isinstance(exc, NodeUnreachableError):
        lead = f"Cannot reach {node.label}."
        hint = (
            "Check the URL and that the DICOMweb service is running."
            if web
            else "Check the host and port, and that the PACS is running and reachable from this computer."
        )
    elif isinstance(exc, AssociationRejectedError):
        lead = f"{node.name} refused us."
        hint = (
            "Check the node's user and password (Nodes\u2026)."
            if web
            else f"Check the node's AE title ({node.aet}), and that it knows our AE title ({node.our_aet}) "
            "with this computer's address."
        )
    elif isinstance(exc, NetworkTimeoutError):
        lead = f"{node.name} stopped answering."
        hint = "Try again later, or give the node more time (Nodes\u2026, Timeout)."
    elif isinstance(exc, RetrieveIncompleteError):
        lead = f"The retrieve from {node.name} was interrupted; nothing of it was kept."
        hint = "Try again."
    elif isinstance(exc, NetworkError):
        lead = f"{node.name} could not do it."
        hint = ""
    else:
        return f"{type(exc).__name__} while talking to {node.label}: {exc}"
    return f"{lead}\n\n{exc}" + (f"\n\n{hint}" if hint else "")


@dataclass(frozen=True)
class StudyQuery:
    """The search fields, in DICOM matching terms (empty: any)."""

    patient_id: str = ""
    patient_name: str = ""
    date: str = ""  # DICOM date range (core.net.parse_date_range)
    accession_number: str = ""
    modality: str = OPT

    def describe(self) -> str:
        parts = [
            f"{k} {v}"
            for k, v in (
                ("patient id", self.patient_id),
                ("name", self.patient_name),
                ("date", self.date),
                ("accession", self.accession_number),
                ("modality", self.modality),
            )
            if v
        ]
        return ", ".join(parts) or "all studies"


def name_pattern(text: str) -> str:
    """What the user typed as a name ('Doe', 'Doe, Jane', 'DOE^J*') as a DICOM PN pattern: 'Family,
    Given' becomes 'Family^Given', and a name without wildcards matches as a prefix ('Doe' -> 'Doe*')."""
    t = text.strip()
    if not t:
        return ""
    t = "^".join(p.strip() for p in t.split(","))
    return t if any(c in t for c in "*?") else t + "*"


@dataclass
class StudyRow:
    """One study of a search, with its series when they were looked up (None: not known)."""

    study: StudyMatch
    series: list[SeriesMatch] | None = None

    @property
    def oct_series(self) -> list[SeriesMatch]:
        return [s for s in self.series or [] if s.modality.upper() == OPT]

    @property
    def eyes(self) -> list[str]:
        """The eyes of its OCT series ('OD', 'OS'; '?' for a series that does not say)."""
        return sorted({EYES.get(s.laterality.upper(), "?") for s in self.oct_series}, key=lambda e: (e == "?", e))

    @property
    def n_series(self) -> int | None:
        return len(self.series) if self.series is not None else self.study.n_series

    @property
    def series_text(self) -> str:
        n = self.n_series
        if n is None:
            return ""
        eyes = self.eyes
        return f"{n} ({', '.join(eyes)})" if eyes else str(n)

    @property
    def modalities(self) -> str:
        mods = list(self.study.modalities) or sorted({s.modality for s in self.series or [] if s.modality})
        return "/".join(mods)


def search_studies(
    node: PacsNode, query: StudyQuery, progress: ProgressFn | None = None, cancel: CancelFn | None = None
) -> list[StudyRow]:
    """The studies matching ``query`` on ``node`` (at most ``MAX_STUDIES``) and, for the first
    ``SERIES_LOOKUPS`` of them, their series (a series query that fails leaves that study's unknown)."""
    net, api, names = _api(node)
    if progress:
        progress(0, 0, f"Searching {node.name} ({names['find']})\u2026")
    studies = api.find_studies(
        net,
        patient_id=query.patient_id,
        patient_name=query.patient_name,
        date=query.date,
        modality=query.modality,
        accession_number=query.accession_number,
        limit=MAX_STUDIES,
    )
    rows = [StudyRow(s) for s in studies]
    lookups = rows[:SERIES_LOOKUPS]
    for i, row in enumerate(lookups):
        if cancel is not None and cancel():
            raise Cancelled()
        if progress:
            progress(i, len(lookups), f"{len(rows)} studies; looking up the series of study {i + 1} of {len(lookups)}")
        try:
            row.series = api.find_series(net, row.study.study_uid)
        except (NetworkError, ValueError) as e:  # the study stays listed, its series unknown
            log.warning("%s: series of %s: %s", node.label, row.study.study_uid, e)
    return rows


@dataclass(frozen=True)
class RetrievePlan:
    """One study to retrieve: its series (None: the whole study), and what to call it in messages."""

    study_uid: str
    series_uids: tuple[str, ...] | None = None
    label: str = ""
    n_instances: int | None = None  # as the node said (for the progress bar), None when unknown

    @staticmethod
    def for_row(row: StudyRow, series: Sequence[SeriesMatch] = ()) -> RetrievePlan:
        """The given series of the study; else its OCT series when they are known, else the whole study."""
        chosen = list(series) or row.oct_series
        s = row.study
        label = f"{display_name(s.patient_name) or s.patient_id or 'unnamed'} {format_date(s.study_date)}".strip()
        if chosen and len(chosen) == len(row.series or []) and row.series is not None:  # all of it: one request
            counts = [c.n_instances for c in chosen]
            total = sum(c for c in counts if c is not None) if all(c is not None for c in counts) else s.n_instances
            return RetrievePlan(s.study_uid, None, label, total)
        if chosen:
            counts = [c.n_instances for c in chosen]
            total = sum(c for c in counts if c is not None) if all(c is not None for c in counts) else None
            return RetrievePlan(s.study_uid, tuple(c.series_uid for c in chosen), label, total)
        return RetrievePlan(s.study_uid, None, label, s.n_instances)


@dataclass
class RetrieveOutcome:
    """What a retrieve kept: the series folders to open, counts, and problems (instances refused)."""

    node: PacsNode
    plans: list[RetrievePlan]
    folders: list[Path] = field(default_factory=list)
    n_new: int = 0
    n_already: int = 0
    problems: list[str] = field(default_factory=list)


def retrieve_root(settings: AppSettings) -> Path:
    """Where retrieved studies go: the settings' folder, else 'retrieved' in the app data folder."""
    if settings.pacs_retrieve_dir:
        return Path(settings.pacs_retrieve_dir)
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".octscreen") / "retrieved"


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def _remove_new(paths: Sequence[Path], before: set[Path], root: Path) -> None:
    """Delete the files this retrieve added (not those that were there before) and the folders it left empty."""
    for p in paths:
        if p not in before:
            p.unlink(missing_ok=True)
    for folder in sorted({p.parent for p in paths} | {p.parent.parent for p in paths}, key=lambda f: -len(f.parts)):
        if folder != root and root in folder.parents:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass


def retrieve_plan(
    node: PacsNode,
    plans: Sequence[RetrievePlan],
    root: Path,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> RetrieveOutcome:
    """Retrieve every plan from ``node`` into ``root/<study>/<series>/<instance>.dcm`` (C-GET, C-MOVE
    when the node says ``move_port``, or WADO-RS). All or nothing: a retrieve cancelled or failed
    part way keeps nothing of this call (files that were already there stay)."""
    net, api, _names = _api(node)
    options: dict[str, Any] = (
        {"move": True, "move_port": node.move_port} if node.move_port and node.kind == DIMSE else {}
    )
    if options and node.tls:  # the node connects back to our storage SCP: over TLS, as our certificate
        from core.net import tls_context  # noqa: PLC0415 (GUI start-up: pynetdicom ~400 ms)

        try:
            options["move_tls"] = tls_context(server=True, **_tls_files(node))
        except (OSError, ssl.SSLError) as e:  # as connection() says it for the client side
            raise ValueError(f"the TLS certificate files cannot be used ({e})") from None
    outcome = RetrieveOutcome(node, list(plans))
    steps = []  # (plan, series or None, where in words)
    for pi, p in enumerate(plans):
        series = p.series_uids or (None,)
        for si, s in enumerate(series):
            where = p.label + (f" (study {pi + 1} of {len(plans)})" if len(plans) > 1 else "")
            steps.append((p, s, where + (f", series {si + 1} of {len(series)}" if len(series) > 1 else "")))
    known = [p.n_instances for p in plans]
    total = sum(k for k in known if k is not None) if all(k is not None for k in known) else 0
    before: set[Path] = set()
    for p in plans:
        before |= _files_under(root / p.study_uid)
    kept: list[Path] = []
    done_before = 0
    try:
        for plan, series_uid, where in steps:
            arrived = [0]  # counted here: one call per instance kept (core.net's own count runs one ahead)

            def step_progress(
                _done: int, of: int, _message: str, where: str = where, base: int = done_before, arrived=arrived
            ) -> None:
                arrived[0] += 1
                if progress is None:
                    return
                n = base + arrived[0]
                shown = max(total or (base + of if of else 0), n if (total or of) else 0)
                progress(n, shown, f"Retrieving {where}: {n}{f' of {shown}' if shown else ''} instance(s)")

            if progress is not None:
                progress(done_before, total, f"Retrieving {where} from {node.name}\u2026")
            result = api.retrieve(
                net, plan.study_uid, root, series_uid=series_uid, progress=step_progress, cancel=cancel, **options
            )
            kept.extend(result.files)
            done_before += len(result.files)
            outcome.n_already += result.already_there
            outcome.n_new += len(result.files) - result.already_there
            outcome.problems.extend(result.problems)
            for f in result.files:
                if f.parent not in outcome.folders:
                    outcome.folders.append(f.parent)
            if cancel is not None and cancel():
                raise Cancelled()
    except BaseException:
        _remove_new(kept, before, root)
        raise
    return outcome


@dataclass
class SendOutcome:
    """What Send to PACS did: the files it wrote first (if any) and each file's result."""

    node: PacsNode
    written: list[Path] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)  # core.net.SentFile

    @property
    def n_ok(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def failures(self) -> list[str]:
        return [r.error for r in self.results if not r.ok]


def send_to_node(
    node: PacsNode, files: Sequence[Path], progress: ProgressFn | None = None, cancel: CancelFn | None = None
) -> list[Any]:
    """Send ``files`` to ``node`` (C-STORE or STOW-RS); one ``core.net.SentFile`` per file."""
    net, api, _names = _api(node)
    return list(api.send_files(net, list(files), progress=progress, cancel=cancel))


# ------------------------------------------------------------------------------------- Qt helpers
class _SortItem(QTableWidgetItem):
    """A table cell that sorts by a key of its own (numbers as numbers, dates as YYYYMMDD)."""

    def __init__(self, text: str, key: Any = None) -> None:
        super().__init__(text)
        self.key = text.lower() if key is None else key
        self.setFlags(self.flags() & ~Qt.ItemFlag.ItemIsEditable)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, _SortItem):
            try:
                return bool(self.key < other.key)
            except TypeError:
                return str(self.key) < str(other.key)
        return super().__lt__(other)


def _table(headers: Sequence[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(list(headers))
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setAlternatingRowColors(True)
    t.verticalHeader().setVisible(False)
    t.setWordWrap(False)
    t.horizontalHeader().setHighlightSections(False)
    t.horizontalHeader().setStretchLastSection(True)
    return t


class _JobRunner:
    """Runs one ``Job`` at a time on a pool and routes its end to handlers (ignoring a stale job's)."""

    def __init__(self, pool: QThreadPool) -> None:
        self.pool = pool
        self.job: Job | None = None

    def start(
        self,
        fn: Callable[[ProgressFn, CancelFn], Any],
        name: str,
        on_finished: Callable[[Any], None],
        on_failed: Callable[[BaseException, str], None],
        on_cancelled: Callable[[], None],
        on_progress: Callable[[int, int, str], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> Job:
        job = Job(fn, name)

        def ended(handler: Callable[..., None], *args: Any) -> None:
            if job is not self.job:
                return
            self.job = None
            try:
                handler(*args)
            finally:
                if on_end is not None:
                    on_end()

        if on_progress is not None:
            job.signals.progress.connect(lambda d, t, m: on_progress(d, t, m) if job is self.job else None)
        job.signals.finished.connect(lambda result: ended(on_finished, result))
        job.signals.failed.connect(lambda exc, tb: ended(on_failed, exc, tb))
        job.signals.cancelled.connect(lambda: ended(on_cancelled))
        self.job = job
        job.start(self.pool)
        return job

    @property
    def busy(self) -> bool:
        return self.job is not None

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def wait(self, seconds: float) -> None:
        job = self.job
        if job is not None:
            job.cancel()
            job.done.wait(seconds)


# ---------------------------------------------------------------------------------- node editor
class _FileField(QWidget):
    """A path in a line edit with a Browse… button beside it (the node editor's TLS files)."""

    def __init__(self, tip: str, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.edit = QLineEdit()
        self.edit.setToolTip(tip)
        self.edit.setAccessibleName(title)
        browse = QPushButton("Browse\u2026")
        browse.setToolTip(f"Choose the {title.lower()} file")
        browse.clicked.connect(self.browse)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(browse)

    def browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, self.title, self.edit.text(), "Certificates and keys (*.pem *.crt *.cer *.key);;All files (*)"
        )
        if path:
            self.edit.setText(path)


class NodesDialog(QDialog):
    """Add, edit and remove PACS nodes; Test echoes the node shown in the form, in the background."""

    def __init__(
        self,
        nodes: Sequence[PacsNode],
        pool: QThreadPool | None = None,
        parent: QWidget | None = None,
        password_note: str = "",
    ):
        super().__init__(parent)
        self.setWindowTitle("PACS nodes")
        self.setMinimumSize(760, 420)
        self.nodes: list[PacsNode] = list(nodes)
        self.runner = _JobRunner(pool or QThreadPool.globalInstance())
        self._filling = False

        self.list = QListWidget()
        self.list.setAccessibleName("PACS nodes")
        self.list.currentRowChanged.connect(self._show_row)
        add, self.remove_button = QPushButton("Add"), QPushButton("Remove")
        add.clicked.connect(self.add_node)
        self.remove_button.clicked.connect(self.remove_node)
        left = QVBoxLayout()
        left.addWidget(self.list, 1)
        row = QHBoxLayout()
        row.addWidget(add)
        row.addWidget(self.remove_button)
        left.addLayout(row)

        self.name = QLineEdit()
        self.name.setToolTip("Your name for the node, e.g. 'Clinic PACS'")
        self.kind = QComboBox()
        self.kind.addItems(list(NODE_KINDS))
        self.kind.setToolTip("DIMSE: classic DICOM networking (AE title, host, port); DICOMweb: a base URL")
        self.aet = QLineEdit()
        self.aet.setToolTip("The node's AE title (called AE title)")
        self.host = QLineEdit()
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(104)
        self.url = QLineEdit()
        self.url.setPlaceholderText("https://pacs.example.org/dicom-web")
        self.url.setToolTip("The DICOMweb base URL (QIDO-RS, WADO-RS and STOW-RS below it)")
        self.user = QLineEdit()
        self.user.setToolTip("The DICOMweb service's user name (HTTP Basic authentication); empty: none")
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setToolTip(
            "The user's password (never shown; never in the settings file"
            + (f"; {password_note}" if password_note else "")
            + ")"
        )
        self.password.setAccessibleName("Password")
        self.our_aet = QLineEdit()
        self.our_aet.setToolTip("Our AE title (calling AE title): the node must know it")
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(1.0, 600.0)
        self.timeout.setDecimals(0)
        self.timeout.setSuffix(" s")
        self.timeout.setToolTip("Seconds to wait for each answer")
        self.move_port = QSpinBox()
        self.move_port.setRange(0, 65535)
        self.move_port.setSpecialValueText("C-GET")
        self.move_port.setPrefix("")
        self.move_port.setToolTip(
            "C-GET: the node sends on our connection. A port: C-MOVE to our own storage SCP on that port "
            "(the node must know our AE title with this computer's address and the port)."
        )
        self.tls = QCheckBox("DICOM over TLS")
        self.tls.setToolTip(
            "Encrypt the connection (DICOM TLS, PS3.15 B.1): the node's certificate is checked against the CA "
            "certificate below, or the system's. A DICOMweb node uses TLS when its URL is https. With C-MOVE "
            "our storage SCP talks TLS too, with the client certificate and key below as its certificate."
        )
        self.tls_ca = _FileField(
            "CA certificate file (PEM) that signed the node's certificate; empty: the system's trusted CAs",
            "CA certificate",
        )
        self.tls_cert = _FileField("Our client certificate (PEM), when the node asks for one", "Client certificate")
        self.tls_key = _FileField("The private key of our client certificate (PEM)", "Client key")
        self.form = QFormLayout()
        self.form.addRow("Name:", self.name)
        self.form.addRow("Kind:", self.kind)
        self.form.addRow("AE title:", self.aet)
        self.form.addRow("Host:", self.host)
        self.form.addRow("Port:", self.port)
        self.form.addRow("URL:", self.url)
        self.form.addRow("User:", self.user)
        self.form.addRow("Password:", self.password)
        self.form.addRow("Our AE title:", self.our_aet)
        self.form.addRow("Timeout:", self.timeout)
        self.form.addRow("Retrieve by:", self.move_port)
        self.form.addRow("Security:", self.tls)
        self.form.addRow("CA certificate:", self.tls_ca)
        self.form.addRow("Client certificate:", self.tls_cert)
        self.form.addRow("Client key:", self.tls_key)
        for edit in (self.name, self.aet, self.host, self.url, self.user, self.password, self.our_aet):
            edit.textChanged.connect(self._store_form)
        for path_field in (self.tls_ca, self.tls_cert, self.tls_key):
            path_field.edit.textChanged.connect(self._store_form)
        self.tls.toggled.connect(self._store_form)
        for box in (self.port, self.move_port):
            box.valueChanged.connect(self._store_form)
        self.timeout.valueChanged.connect(self._store_form)
        self.kind.currentIndexChanged.connect(self._store_form)

        self.test_button = QPushButton("Test")
        self.test_button.setToolTip("Echo the node (C-ECHO, or a QIDO-RS query for DICOMweb) in the background")
        self.test_button.clicked.connect(self.test_node)
        self.answer = QLabel("")
        self.answer.setWordWrap(True)
        self.answer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.answer.setAccessibleName("Test answer")
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button, 0, Qt.AlignmentFlag.AlignTop)
        test_row.addWidget(self.answer, 1)
        self.problem = QLabel("")
        self.problem.setObjectName("error")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #b3261e;")

        right = QVBoxLayout()
        right.addLayout(self.form)
        right.addLayout(test_row)
        right.addStretch(1)
        right.addWidget(self.problem)
        self.form_widget = QWidget()
        self.form_widget.setLayout(right)
        body = QHBoxLayout()
        body.addLayout(left, 2)
        body.addWidget(self.form_widget, 5)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(body, 1)
        lay.addWidget(buttons)

        for node in self.nodes:
            self.list.addItem(node.name)
        if self.nodes:
            self.list.setCurrentRow(0)
        self._show_row(self.list.currentRow())

    # -- the form --------------------------------------------------------------------------------
    @property
    def current(self) -> PacsNode | None:
        row = self.list.currentRow()
        return self.nodes[row] if 0 <= row < len(self.nodes) else None

    def _show_row(self, row: int) -> None:
        node = self.nodes[row] if 0 <= row < len(self.nodes) else None
        self.form_widget.setEnabled(node is not None)
        self.remove_button.setEnabled(node is not None)
        self._filling = True
        try:
            n = node or PacsNode("")
            self.name.setText(n.name)
            self.kind.setCurrentIndex(NODE_KINDS.index(n.kind) if n.kind in NODE_KINDS else 0)
            self.aet.setText(n.aet)
            self.host.setText(n.host)
            self.port.setValue(n.port)
            self.url.setText(n.url)
            self.user.setText(n.user)
            self.password.setText(n.password)
            self.our_aet.setText(n.our_aet)
            self.timeout.setValue(n.timeout)
            self.move_port.setValue(n.move_port)
            self.tls.setChecked(n.tls)
            self.tls_ca.edit.setText(n.tls_ca)
            self.tls_cert.edit.setText(n.tls_cert)
            self.tls_key.edit.setText(n.tls_key)
        finally:
            self._filling = False
        self._show_kind()
        self.answer.setText("")

    def _show_kind(self) -> None:
        web = self.kind.currentText() == DICOMWEB
        secure = is_https(self.url.text()) if web else self.tls.isChecked()
        for widget, on in (
            (self.aet, not web),
            (self.host, not web),
            (self.port, not web),
            (self.our_aet, not web),
            (self.move_port, not web),
            (self.url, web),
            (self.user, web),
            (self.password, web),
            (self.tls, not web),
            (self.tls_ca, secure),
            (self.tls_cert, secure),
            (self.tls_key, secure),
        ):
            widget.setVisible(on)
            label = self.form.labelForField(widget)
            if label is not None:
                label.setVisible(on)

    def _store_form(self) -> None:
        if self._filling:
            return
        self._show_kind()
        row = self.list.currentRow()
        if not 0 <= row < len(self.nodes):
            return
        self.nodes[row] = self.form_node()
        self.list.item(row).setText(self.nodes[row].name or "(no name)")
        self.problem.setText("")

    def form_node(self) -> PacsNode:
        """The node as the form shows it."""
        return PacsNode(
            name=self.name.text().strip(),
            kind=self.kind.currentText(),
            aet=self.aet.text().strip(),
            host=self.host.text().strip(),
            port=self.port.value(),
            url=self.url.text().strip(),
            user=self.user.text().strip(),
            password=self.password.text(),
            our_aet=self.our_aet.text().strip() or "OCTSCREEN",
            timeout=float(self.timeout.value()),
            move_port=self.move_port.value(),
            tls=self.tls.isChecked(),
            tls_ca=self.tls_ca.edit.text().strip(),
            tls_cert=self.tls_cert.edit.text().strip(),
            tls_key=self.tls_key.edit.text().strip(),
        )

    def add_node(self) -> None:
        """A new node, named 'PACS', 'PACS 2', ..."""
        names = {n.name for n in self.nodes}
        name = next(n for n in ("PACS", *(f"PACS {i}" for i in range(2, len(names) + 3))) if n not in names)
        self.nodes.append(PacsNode(name, aet="PACS", host="localhost", port=104))
        self.list.addItem(name)
        self.list.setCurrentRow(len(self.nodes) - 1)
        self.name.setFocus()
        self.name.selectAll()

    def remove_node(self) -> None:
        row = self.list.currentRow()
        if 0 <= row < len(self.nodes):
            del self.nodes[row]
            self.list.takeItem(row)
            self._show_row(self.list.currentRow())

    # -- test and accept -------------------------------------------------------------------------
    def test_node(self) -> None:
        """Echo the node in the form in the background; the answer (or what failed) below the button."""
        node = self.form_node()
        try:
            connection(node)
        except ValueError as e:
            self.answer.setText(f"\u2717 {failure_text(node, e)}")
            return
        self.runner.cancel()
        self.answer.setText(f"Checking {node.label}\u2026")
        self.test_button.setEnabled(False)

        def failed(exc: BaseException, _tb: str) -> None:
            self.answer.setText(f"\u2717 {failure_text(node, exc)}")

        self.runner.start(
            lambda _p, _c: echo_node(node),
            f"echo {node.label}",
            lambda text: self.answer.setText(f"\u2713 {text}"),
            failed,
            lambda: self.answer.setText(""),
            on_end=lambda: self.test_button.setEnabled(True),
        )

    def problems(self) -> list[tuple[int, str]]:
        """(row, what is wrong) for each node that cannot be used as it is."""
        found, seen = [], set()
        for i, node in enumerate(self.nodes):
            if not node.name:
                found.append((i, "a node needs a name"))
            elif node.name in seen:
                found.append((i, f"two nodes are called {node.name!r}"))
            else:
                try:
                    connection(node)
                except ValueError as e:
                    found.append((i, f"{node.name}: {e}"))
            seen.add(node.name)
        return found

    def accept(self) -> None:  # noqa: D102 (Qt API)
        problems = self.problems()
        if problems:
            row, text = problems[0]
            self.list.setCurrentRow(row)
            self.problem.setText(text[0].upper() + text[1:])
            return
        self.runner.cancel()
        super().accept()

    def reject(self) -> None:  # noqa: D102 (Qt API)
        self.runner.cancel()
        super().reject()


class ChooseNodeDialog(QDialog):
    """Which node to send to, above the list of what will be sent."""

    def __init__(self, title: str, text: str, nodes: Sequence[PacsNode], current: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(560)
        self.nodes = list(nodes)
        self.combo = QComboBox()
        for n in self.nodes:
            self.combo.addItem(n.label)
        names = [n.name for n in self.nodes]
        self.combo.setCurrentIndex(names.index(current) if current in names else 0)
        what = QLabel(text)
        what.setWordWrap(True)
        what.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form = QFormLayout()
        form.addRow("Send to:", self.combo)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        send = buttons.addButton("Send", QDialogButtonBox.ButtonRole.AcceptRole)
        send.setDefault(True)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(what)
        lay.addWidget(buttons)

    def node(self) -> PacsNode | None:
        i = self.combo.currentIndex()
        return self.nodes[i] if 0 <= i < len(self.nodes) else None


class PacsDialogs:
    """The modal questions of this module; tests override the methods (every one returns plain data)."""

    def edit_nodes(
        self,
        parent: QWidget | None,
        nodes: Sequence[PacsNode],
        pool: QThreadPool | None = None,
        password_note: str = "",
    ) -> list[PacsNode] | None:
        """Edit the node list (``password_note``: where passwords are kept, ``Secrets.describe``); None
        when cancelled."""
        dlg = NodesDialog(nodes, pool, parent, password_note)
        return dlg.nodes if dlg.exec() == QDialog.DialogCode.Accepted else None

    def choose_node(
        self, parent: QWidget | None, title: str, text: str, nodes: Sequence[PacsNode], current: str
    ) -> PacsNode | None:
        """Pick one of ``nodes`` (``current``: the name preselected); None when cancelled."""
        dlg = ChooseNodeDialog(title, text, nodes, current, parent)
        return dlg.node() if dlg.exec() == QDialog.DialogCode.Accepted else None

    def retrieve_folder(self, parent: QWidget | None, start: str) -> str:
        """Pick the folder retrieved studies go into; '' when cancelled."""
        return QFileDialog.getExistingDirectory(parent, "Folder for retrieved studies", start)


# ------------------------------------------------------------------------------------ the dialog
STUDY_COLUMNS = ("Patient", "Patient ID", "Date", "Description", "Accession", "Modality", "Series (eyes)")
SERIES_COLUMNS = ("Series", "Modality", "Eye", "Instances", "Description")


def _date_box(tip: str) -> QDateEdit:
    box = QDateEdit()
    box.setCalendarPopup(True)
    box.setDisplayFormat("yyyy-MM-dd")
    box.setMinimumDate(QDate(1900, 1, 1))
    box.setSpecialValueText("any")  # the minimum date means: no limit
    box.setDate(box.minimumDate())
    box.setToolTip(tip)
    box.setMinimumWidth(120)
    return box


def _dicom_date(box: QDateEdit) -> str:
    return "" if box.date() == box.minimumDate() else box.date().toString("yyyyMMdd")


class PacsDialog(QDialog):
    """File > Query PACS: search a node's studies and retrieve them into the worklist (non-modal)."""

    def __init__(
        self,
        settings: AppSettings,
        dialogs: Any,
        pacs_dialogs: PacsDialogs | None = None,
        pool: QThreadPool | None = None,
        open_paths: Callable[[list[Path]], Any] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Query PACS")
        self.setObjectName("pacsDialog")
        self.settings = settings
        self.dialogs = dialogs
        self.pacs_dialogs = pacs_dialogs or PacsDialogs()
        self.pool = pool or QThreadPool.globalInstance()
        self.open_paths = open_paths
        self.runner = _JobRunner(self.pool)
        self.rows: list[StudyRow] = []
        self.searched_node: PacsNode | None = None
        self.last_outcome: RetrieveOutcome | None = None
        self._kind = ""  # the running job: 'search' or 'retrieve'
        self.resize(1180, 680)

        # node
        self.node_combo = QComboBox()
        self.node_combo.setMinimumWidth(360)
        self.node_combo.setAccessibleName("PACS node")
        self.node_combo.currentIndexChanged.connect(self._node_changed)
        self.nodes_button = QPushButton("Nodes\u2026")
        self.nodes_button.setToolTip("Add, edit, remove and test PACS nodes")
        self.nodes_button.clicked.connect(self.edit_nodes)
        # search fields
        self.patient_id = QLineEdit()
        self.patient_id.setToolTip("Patient ID; * and ? are wildcards")
        self.patient_name = QLineEdit()
        self.patient_name.setPlaceholderText("Family, Given")
        self.patient_name.setToolTip(
            "Patient name: matches names that start with it ('Doe' finds 'Doe, Jane'); * and ?"
        )
        self.accession = QLineEdit()
        self.accession.setToolTip("Accession number")
        self.date_from = _date_box("Studies on or after this date ('any': no limit)")
        self.date_to = _date_box("Studies on or before this date ('any': no limit)")
        self.modality = QComboBox()
        self.modality.addItem("OCT (OPT)", OPT)
        self.modality.addItem("Any", "")
        self.modality.setToolTip("Only studies holding OCT volumes (modality OPT), or every study")
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(True)
        self.search_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_FileDialogContentsView))
        self.search_button.clicked.connect(self.search)
        for edit in (self.patient_id, self.patient_name, self.accession):
            edit.returnPressed.connect(self.search)

        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.addWidget(QLabel("Node:"), 0, 0)
        node_row = QHBoxLayout()
        node_row.addWidget(self.node_combo, 1)
        node_row.addWidget(self.nodes_button)
        grid.addLayout(node_row, 0, 1, 1, 3)
        self.node_hint = QLabel("")
        self.node_hint.setObjectName("muted")
        grid.addWidget(self.node_hint, 0, 4, 1, 3)
        grid.addWidget(QLabel("Patient ID:"), 1, 0)
        grid.addWidget(self.patient_id, 1, 1)
        grid.addWidget(QLabel("Name:"), 1, 2)
        grid.addWidget(self.patient_name, 1, 3)
        grid.addWidget(QLabel("Accession:"), 1, 4)
        grid.addWidget(self.accession, 1, 5)
        grid.addWidget(QLabel("Date from:"), 2, 0)
        dates = QHBoxLayout()
        dates.setSpacing(8)
        dates.addWidget(self.date_from)
        dates.addWidget(QLabel("to"))
        dates.addWidget(self.date_to)
        dates.addStretch(1)
        grid.addLayout(dates, 2, 1)
        grid.addWidget(QLabel("Modality:"), 2, 2)
        grid.addWidget(self.modality, 2, 3)
        grid.addWidget(self.search_button, 2, 5)
        grid.setColumnStretch(1, 2)
        grid.setColumnStretch(3, 2)
        grid.setColumnStretch(5, 1)

        # results
        self.studies = _table(STUDY_COLUMNS)
        self.studies.setAccessibleName("Studies")
        self.studies.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.studies.setSortingEnabled(True)
        self.studies.sortByColumn(STUDY_COLUMNS.index("Date"), Qt.SortOrder.DescendingOrder)  # newest first
        self.studies.itemSelectionChanged.connect(self._study_selected)
        self.studies.doubleClicked.connect(lambda _index: self.retrieve())
        widths = (210, 130, 100, 260, 110, 100)
        for i, w in enumerate(widths):
            self.studies.setColumnWidth(i, w)
        self.series = _table(SERIES_COLUMNS)
        self.series.setAccessibleName("Series of the selected study")
        self.series.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.series.itemSelectionChanged.connect(self._update_buttons)
        for i, w in enumerate((70, 90, 60, 90)):
            self.series.setColumnWidth(i, w)
        self.series.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.studies)
        series_box = QWidget()
        sl = QVBoxLayout(series_box)
        sl.setContentsMargins(0, 4, 0, 0)
        self.series_title = QLabel("Series")
        sl.addWidget(self.series_title)
        sl.addWidget(self.series, 1)
        split.addWidget(series_box)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setChildrenCollapsible(False)

        # where to, and the job
        self.folder_label = QLabel("")
        self.folder_label.setObjectName("muted")
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.folder_button = QPushButton("Change\u2026")
        self.folder_button.setToolTip("The folder retrieved studies go into")
        self.folder_button.clicked.connect(self.choose_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(QLabel("Retrieve into:"))
        folder_row.addWidget(self.folder_label, 1)
        folder_row.addWidget(self.folder_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setAccessibleName("PACS status")
        self.progress = QProgressBar()
        self.progress.setFixedWidth(260)
        self.progress.setAccessibleName("PACS progress")
        self.progress.setFormat("%v of %m")  # instances
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the search or the retrieve (a cancelled retrieve keeps nothing)")
        self.cancel_button.clicked.connect(self.cancel)
        self.retrieve_button = QPushButton("Retrieve")
        self.retrieve_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_ArrowDown))
        self.retrieve_button.setToolTip(
            "Retrieve the selected series, else the OCT series of the selected studies (the whole study when "
            "its series are not known), then open and screen them"
        )
        self.retrieve_button.clicked.connect(self.retrieve)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.progress)
        bottom.addWidget(self.cancel_button)
        bottom.addWidget(self.retrieve_button)
        bottom.addWidget(self.close_button)

        lay = QVBoxLayout(self)
        lay.addLayout(grid)
        lay.addWidget(split, 1)
        lay.addLayout(folder_row)
        lay.addLayout(bottom)

        self.reload_nodes()
        self._show_folder()
        self._set_busy(False)

    # -- nodes -----------------------------------------------------------------------------------
    @property
    def nodes(self) -> list[PacsNode]:
        return self._nodes

    def reload_nodes(self, select: str = "") -> None:
        """Fill the node list from the settings (selecting ``select``, else the last node used)."""
        self._nodes = self.settings.pacs_nodes
        want = select or self.node_combo.currentData() or self.settings.pacs_last_node
        self.node_combo.blockSignals(True)
        self.node_combo.clear()
        for n in self._nodes:
            self.node_combo.addItem(n.label, n.name)
        names = [n.name for n in self._nodes]
        self.node_combo.setCurrentIndex(names.index(want) if want in names else (0 if names else -1))
        self.node_combo.blockSignals(False)
        self._node_changed()

    def select_node(self, name: str) -> None:
        i = self.node_combo.findData(name)
        if i >= 0:
            self.node_combo.setCurrentIndex(i)

    @property
    def node(self) -> PacsNode | None:
        i = self.node_combo.currentIndex()
        return self._nodes[i] if 0 <= i < len(self._nodes) else None

    def _node_changed(self) -> None:
        node = self.node
        if node is None:
            self.node_hint.setText("No PACS node yet: add one with Nodes\u2026")
        else:
            how = (
                "C-MOVE" if node.move_port and node.kind == DIMSE else ("WADO-RS" if node.kind == DICOMWEB else "C-GET")
            )
            self.node_hint.setText(f"{node.kind}, retrieve by {how}")
        self._update_buttons()

    def edit_nodes(self) -> None:
        """Nodes…: edit the list (saved at once), keep the selection where it can."""
        edited = self.pacs_dialogs.edit_nodes(self, self._nodes, self.pool, self.settings.secrets.describe())
        if edited is None:
            return
        current = self.node.name if self.node else ""
        self.settings.pacs_nodes = edited
        self.settings.sync()
        self.reload_nodes(current)

    # -- folder ----------------------------------------------------------------------------------
    def _show_folder(self) -> None:
        self.folder_label.setText(str(retrieve_root(self.settings)))

    def choose_folder(self) -> None:
        path = self.pacs_dialogs.retrieve_folder(self, str(retrieve_root(self.settings)))
        if path:
            self.settings.pacs_retrieve_dir = path
            self.settings.sync()
            self._show_folder()

    # -- search ----------------------------------------------------------------------------------
    def query(self) -> StudyQuery:
        """The search fields as a query; ``ValueError`` for a range that ends before it starts."""
        a, b = _dicom_date(self.date_from), _dicom_date(self.date_to)
        if a and b and a > b:
            raise ValueError("the date range starts after it ends")
        date = f"{a}-{b}" if (a or b) and a != b else a
        return StudyQuery(
            patient_id=self.patient_id.text().strip(),
            patient_name=name_pattern(self.patient_name.text()),
            date=date,
            accession_number=self.accession.text().strip(),
            modality=str(self.modality.currentData() or ""),
        )

    def search(self) -> bool:
        """Search the selected node in the background; False if nothing was started."""
        node = self.node
        if node is None or self.runner.busy:
            return False
        try:
            query = self.query()
        except ValueError as e:
            self.status.setText(f"Cannot search: {e}")
            return False
        self.settings.pacs_last_node = node.name
        self._kind = "search"
        self.status.setText(f"Searching {node.label} for {query.describe()}\u2026")
        self.runner.start(
            lambda p, c: search_studies(node, query, p, c),
            f"search {node.label}",
            lambda rows: self._search_done(node, query, rows),
            lambda exc, tb: self._failed("PACS search failed", node, exc, tb),
            lambda: self.status.setText("Search cancelled"),
            self._progress,
            lambda: self._set_busy(False),
        )
        self._set_busy(True)
        return True

    def _search_done(self, node: PacsNode, query: StudyQuery, rows: list[StudyRow]) -> None:
        self.searched_node = node
        self.fill(rows)
        more = f" (the first {MAX_STUDIES}: narrow the search)" if len(rows) >= MAX_STUDIES else ""
        self.status.setText(
            f"{_count(len(rows), 'study', 'studies')} on {node.name} for {query.describe()}{more}"
            if rows
            else f"No study on {node.name} matches {query.describe()}"
        )

    def fill(self, rows: list[StudyRow]) -> None:
        """Show ``rows`` in the studies table (sortable; the series table follows the selection)."""
        self.rows = list(rows)
        t = self.studies
        t.setSortingEnabled(False)
        t.clearSelection()
        t.setRowCount(len(rows))
        for r, row in enumerate(rows):
            s = row.study
            n = row.n_series
            cells = [
                _SortItem(display_name(s.patient_name)),
                _SortItem(s.patient_id),
                _SortItem(format_date(s.study_date), s.study_date + s.study_time),
                _SortItem(s.description),
                _SortItem(s.accession_number),
                _SortItem(row.modalities),
                _SortItem(row.series_text, -1 if n is None else n),
            ]
            cells[0].setData(Qt.ItemDataRole.UserRole, r)  # the row in self.rows, whatever the sort
            cells[0].setToolTip(f"StudyInstanceUID {s.study_uid}")
            for c, item in enumerate(cells):
                t.setItem(r, c, item)
        t.setSortingEnabled(True)
        self._study_selected()

    def selected_rows(self) -> list[StudyRow]:
        """The selected studies, top to bottom as shown."""
        picked = sorted({i.row() for i in self.studies.selectedIndexes()})
        out = []
        for r in picked:
            item = self.studies.item(r, 0)
            if item is not None:
                out.append(self.rows[int(item.data(Qt.ItemDataRole.UserRole))])
        return out

    def table_row_of(self, study_uid: str) -> int:
        """The table row (as sorted now) showing study ``study_uid``; -1 if none."""
        for r in range(self.studies.rowCount()):
            item = self.studies.item(r, 0)
            if item is not None and self.rows[int(item.data(Qt.ItemDataRole.UserRole))].study.study_uid == study_uid:
                return r
        return -1

    def _study_selected(self) -> None:
        rows = self.selected_rows()
        row = rows[0] if len(rows) == 1 else None
        t = self.series
        t.clearSelection()
        series = row.series or [] if row is not None else []
        t.setRowCount(len(series))
        for r, s in enumerate(series):
            cells = [
                _SortItem("" if s.series_number is None else str(s.series_number)),
                _SortItem(s.modality),
                _SortItem(EYES.get(s.laterality.upper(), s.laterality)),
                _SortItem("" if s.n_instances is None else str(s.n_instances)),
                _SortItem(s.description),
            ]
            for c, item in enumerate(cells):
                t.setItem(r, c, item)
        if row is None:
            self.series_title.setText("Series (select one study to see its series)" if len(rows) != 1 else "Series")
        elif row.series is None:
            self.series_title.setText("Series: not looked up for this study (Retrieve gets the whole study)")
        else:
            who = display_name(row.study.patient_name) or row.study.patient_id
            self.series_title.setText(f"Series of {who}, {format_date(row.study.study_date)}")
        self._update_buttons()

    def selected_series(self) -> list[SeriesMatch]:
        rows = self.selected_rows()
        if len(rows) != 1 or not rows[0].series:
            return []
        picked = sorted({i.row() for i in self.series.selectedIndexes()})
        return [rows[0].series[r] for r in picked if r < len(rows[0].series)]

    # -- retrieve --------------------------------------------------------------------------------
    def plans(self) -> list[RetrievePlan]:
        """What Retrieve would retrieve now."""
        rows = self.selected_rows()
        if len(rows) == 1:
            return [RetrievePlan.for_row(rows[0], self.selected_series())]
        return [RetrievePlan.for_row(r) for r in rows]

    def retrieve(self) -> bool:
        """Retrieve the selection in the background (progress, Cancel); False if nothing was started."""
        node = self.searched_node
        plans = self.plans()
        if node is None or not plans or self.runner.busy:
            return False
        root = retrieve_root(self.settings)
        what = plans[0].label if len(plans) == 1 else _count(len(plans), "study", "studies")
        self._kind = "retrieve"
        self.last_outcome = None
        self.status.setText(f"Retrieving {what} from {node.name}\u2026")
        self.runner.start(
            lambda p, c: retrieve_plan(node, plans, root, p, c),
            f"retrieve from {node.label}",
            self._retrieve_done,
            lambda exc, tb: self._failed("Retrieve failed", node, exc, tb),
            lambda: self.status.setText(f"Retrieve cancelled: nothing of it was kept in {root}"),
            self._progress,
            lambda: self._set_busy(False),
        )
        self._set_busy(True)
        return True

    def _retrieve_done(self, outcome: RetrieveOutcome) -> None:
        self.last_outcome = outcome
        n = outcome.n_new + outcome.n_already
        again = f" ({outcome.n_already} already there)" if outcome.n_already else ""
        self.status.setText(
            f"Retrieved {_count(n, 'instance')}{again} from {outcome.node.name}"
            + ("; opening and screening them in the main window" if outcome.folders else "")
        )
        if outcome.problems:
            shown = "\n".join(f"\u2022 {p}" for p in outcome.problems[:8])
            more = f"\n\u2026 and {len(outcome.problems) - 8} more" if len(outcome.problems) > 8 else ""
            self.dialogs.info(
                self,
                "Retrieved with problems",
                f"{outcome.node.name} sent the study, but not everything could be kept:\n\n{shown}{more}",
            )
        if outcome.folders and self.open_paths is not None:
            self.open_paths(list(outcome.folders))

    # -- the running job -------------------------------------------------------------------------
    def _progress(self, done: int, total: int, message: str) -> None:
        self.progress.setRange(0, max(total, 0))  # 0..0: busy indicator while the total is unknown
        if total:
            self.progress.setValue(min(done, total))
        job = self.runner.job
        if message and not (job is not None and job.cancel_requested):  # 'Cancelling…' stays until it did
            self.status.setText(message)

    def _failed(self, title: str, node: PacsNode, exc: BaseException, tb: str) -> None:
        self.status.setText(f"{title}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        details = "" if isinstance(exc, (NetworkError, ValueError)) else tb
        self.dialogs.error(self, title, failure_text(node, exc), details)

    def cancel(self) -> None:
        """Ask the running search or retrieve to stop (the status says when it did)."""
        if self.runner.busy:
            self.runner.cancel()
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling\u2026")

    def _set_busy(self, busy: bool) -> None:
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.cancel_button.setEnabled(busy)
        if busy:
            self.progress.setRange(0, 0)
        self._update_buttons()

    @property
    def busy(self) -> bool:
        return self.runner.busy

    def _update_buttons(self) -> None:
        busy = self.runner.busy
        self.search_button.setEnabled(not busy and self.node is not None)
        self.nodes_button.setEnabled(not busy)
        self.node_combo.setEnabled(not busy)
        self.folder_button.setEnabled(not busy)
        self.retrieve_button.setEnabled(not busy and self.searched_node is not None and bool(self.selected_rows()))

    def shutdown(self, seconds: float = 5.0) -> None:
        """Cancel a running job and wait for it a little (the window is closing)."""
        self.runner.wait(seconds)


def _count(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


# ------------------------------------------------------------------------------- the controller
_DICOM_OUTPUT_CLASSES = ("1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.5.1.4.1.1.88.33")  # Encapsulated PDF, SR


def _belongs_to(path: Path, exam: Any) -> bool:
    """Whether ``path`` is a DICOM report or SR of ``exam`` (its patient id, and its study UID, or its
    date where the exam has no UID); de-identified exports do not count (their patient is a pseudonym)."""
    try:
        ds = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            defer_size="1 KB",
            specific_tags=["SOPClassUID", "PatientID", "StudyInstanceUID", "StudyDate"],
        )
    except Exception:  # noqa: BLE001 - not ours, or unreadable: not sent
        return False
    if str(ds.get("SOPClassUID", "")) not in _DICOM_OUTPUT_CLASSES:
        return False
    if str(ds.get("PatientID", "")) != exam.patient.patient_id:
        return False
    if exam.study.study_uid:
        return str(ds.get("StudyInstanceUID", "")) == exam.study.study_uid
    return str(ds.get("StudyDate", "")) == exam.study.study_date


class PacsController(QObject):
    """The main window's PACS actions: File > Query PACS… (the non-modal :class:`PacsDialog`) and
    File > Send to PACS… (the selected exam's DICOM report and SR, written first when they are not
    there yet). ``dialogs`` (a :class:`PacsDialogs`) is replaced by tests."""

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window = window
        self.dialogs = PacsDialogs()
        self.dialog: PacsDialog | None = None
        self.exported: list[Path] = []  # DICOM files the GUI exported this session
        self.sender = _JobRunner(window.pool)
        self.last_send: SendOutcome | None = None
        sp = QStyle.StandardPixmap
        self.act_query = window._action(
            "&Query PACS\u2026",
            self.open_query,
            "Ctrl+Shift+P",
            "Search a PACS for studies and retrieve them into the worklist",
            sp.SP_DriveNetIcon,
        )
        self.act_send = window._action(
            "Se&nd to PACS\u2026",
            self.send_dialog,
            "Ctrl+Shift+E",
            "Send the selected exam's DICOM report (Encapsulated PDF and Structured Report) to a PACS; "
            "written first when it is not there yet",
            sp.SP_ArrowForward,
        )

    @property
    def actions(self) -> list:
        return [self.act_query, self.act_send]

    def update_actions(self, has_exam: bool, busy: bool) -> None:
        """Called by the window whenever its actions are updated."""
        self.act_send.setEnabled(has_exam and not self.sender.busy)

    # -- query / retrieve ------------------------------------------------------------------------
    def open_query(self) -> PacsDialog:
        """File > Query PACS: show the dialog (one per window, kept between uses)."""
        w = self.window
        if self.dialog is None:
            self.dialog = PacsDialog(w.settings, w.dialogs, self.dialogs, w.pool, self._open_retrieved, w)
        else:
            self.dialog.pacs_dialogs = self.dialogs
            if not self.dialog.busy:
                self.dialog.reload_nodes()
        self.dialog.show()
        self.dialog.raise_()
        self.dialog.activateWindow()
        if not self.dialog.nodes and not self.dialog.busy:
            QTimer.singleShot(0, self.dialog.edit_nodes)
        return self.dialog

    def _open_retrieved(self, folders: list[Path]) -> None:
        """Open and screen what a retrieve kept, once the window's own job (if any) has ended."""
        w = self.window
        if w.job is None:
            w.open_paths(folders, remember=False)
        else:
            QTimer.singleShot(250, lambda: self._open_retrieved(folders))

    # -- send ------------------------------------------------------------------------------------
    def note_export(self, written: Sequence[Path]) -> None:
        """The window exported these files: remember the DICOM ones for Send to PACS."""
        for p in written:
            if Path(p).suffix.lower() == ".dcm" and Path(p) not in self.exported:
                self.exported.append(Path(p))

    def dicom_outputs(self, exam: Any) -> list[Path]:
        """The existing DICOM report / SR files of ``exam``: exported this session, or under the
        names the export gives by default (``<export folder>/<stem>.dcm`` and ``<stem>_sr.dcm``)."""
        default = self.window.default_report_path().with_suffix(".dcm")
        candidates = [*self.exported, default, sr_path(default)]
        found: list[Path] = []
        for p in candidates:
            if p not in found and p.is_file() and _belongs_to(p, exam):
                found.append(p)
        return found

    def send_dialog(self) -> bool:
        """File > Send to PACS: choose a node, then (write and) send in the background."""
        w = self.window
        loaded = w.state.current_loaded
        if loaded is None:
            w.dialogs.info(w, "Send to PACS", "Open and select an exam first.")
            return False
        if self.sender.busy:
            w.dialogs.info(w, "Send to PACS", "A send is still running; wait for it to end.")
            return False
        nodes = w.settings.pacs_nodes
        if not nodes:
            edited = self.dialogs.edit_nodes(w, nodes, w.pool, w.settings.secrets.describe())
            if not edited:
                return False
            w.settings.pacs_nodes = edited
            w.settings.sync()
            nodes = edited
        files = self.dicom_outputs(loaded.exam)
        if files:
            text = (
                "Sends:\n\n"
                + "\n".join(
                    f"\u2022 {p.name}  (written {time.strftime('%Y-%m-%d %H:%M', time.localtime(p.stat().st_mtime))})"
                    for p in files
                )
                + f"\n\nfrom {files[0].parent}"
            )
            pdf = None
        else:
            pdf = w.default_report_path()
            text = (
                "This exam's report has not been written as DICOM yet. It is written first, then sent:\n\n"
                f"\u2022 {pdf.with_suffix('.dcm').name}  (the report as DICOM Encapsulated PDF)\n"
                f"\u2022 {pdf.stem}_sr.dcm  (the result as a DICOM Structured Report)\n\n"
                f"beside {pdf.name} in {pdf.parent}"
            )
        node = self.dialogs.choose_node(w, "Send to PACS", text, nodes, w.settings.pacs_last_node)
        if node is None:
            return False
        w.settings.pacs_last_node = node.name
        return self.send(node, files, pdf)

    def send(self, node: PacsNode, files: Sequence[Path], pdf: Path | None = None) -> bool:
        """Send ``files`` to ``node`` in the background; with ``pdf`` write the selected exam's PDF,
        DICOM report and SR there first (next free names, never over another file) and send those."""
        w = self.window
        loaded = w.state.current_loaded
        if self.sender.busy or (pdf is not None and loaded is None):
            return False
        institution, logo = w.settings.institution, w.settings.logo
        exam, card = (loaded.exam, loaded.card) if loaded is not None else (None, None)
        files = list(files)

        def work(progress: ProgressFn, cancel: CancelFn) -> SendOutcome:
            outcome = SendOutcome(node)
            to_send = files
            if pdf is not None:
                options = ReportOptions(institution=institution, logo=Path(logo) if logo else None)
                written = write_exam_outputs(
                    exam, card, pdf, options, dicom=True, sr=True, unique=True, progress=progress, cancel=cancel
                )
                outcome.written = written.files
                to_send = [p for p in (written.dcm, written.sr) if p is not None]
            outcome.results = send_to_node(node, to_send, progress, cancel)
            return outcome

        def failed(exc: BaseException, tb: str) -> None:
            w.status_text.setText(f"Send to {node.name} failed")
            details = "" if isinstance(exc, (NetworkError, ValueError)) else tb
            w.dialogs.error(w, "Send to PACS failed", failure_text(node, exc), details)

        self.sender.start(
            work,
            f"send to {node.label}",
            self._sent,
            failed,
            lambda: w.status_text.setText(f"Send to {node.name} cancelled"),
            lambda d, t, m: w.status_text.setText(m) if m else None,
            w._update_actions,
        )
        w.status_text.setText(f"Sending to {node.label}\u2026")
        w._update_actions()
        return True

    def _sent(self, outcome: SendOutcome) -> None:
        w = self.window
        self.last_send = outcome
        self.note_export(outcome.written)
        n, ok = len(outcome.results), outcome.n_ok
        wrote = ("Written: " + ", ".join(p.name for p in outcome.written) + "\n\n") if outcome.written else ""
        summary = f"{ok} of {_count(n, 'instance')} stored on {outcome.node.label}"
        w.status_text.setText(summary)
        if outcome.failures:
            shown = "\n".join(f"\u2022 {e}" for e in outcome.failures[:8])
            w.dialogs.error(
                w, "Send to PACS: not everything was stored", f"{wrote}{summary}.\n\nNot stored:\n\n{shown}"
            )
        else:
            w.dialogs.info(w, "Sent to PACS", f"{wrote}{summary}.")

    def shutdown(self) -> None:
        """The window closes: cancel what runs and wait for it a little."""
        if self.dialog is not None:
            self.dialog.shutdown()
        self.sender.wait(5.0)
