"""The PACS in the GUI (app/pacs_dialog.py), offscreen, against real PACS peers: a small Query/Retrieve
SCP in this process (pynetdicom: C-ECHO, C-FIND, C-GET, C-MOVE, C-STORE over TCP on loopback, which
can hold a retrieve half way so Cancel is pressed mid-transfer) and, for DICOMweb, a real Orthanc
with its DICOMweb plugin (tests/net_fixtures.py).

What they show: PACS nodes persist in the settings file; the node editor adds, edits, removes and
tests nodes; a search lists the planted studies (sortable, with their series and eyes); a retrieve
fills the worklist with the exam (C-GET and C-MOVE); Cancel during a retrieve keeps nothing and
leaves the dialog usable; an unreachable node or a refused association is a message naming the node;
Send to PACS writes the report as DICOM when needed and stores it on the PACS (queried back)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import fnmatch  # noqa: E402
import threading  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pydicom  # noqa: E402
import pytest  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import ComprehensiveSRStorage, EncapsulatedPDFStorage  # noqa: E402
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt  # noqa: E402
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # noqa: E402
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from PySide6.QtCore import QDate, QSettings, Qt  # noqa: E402

from app.pacs_dialog import (  # noqa: E402
    STUDY_COLUMNS,
    ChooseNodeDialog,
    NodesDialog,
    PacsDialog,
    PacsDialogs,
    connection,
    failure_text,
    name_pattern,
)
from app.settings import DICOMWEB, AppSettings, PacsNode  # noqa: E402
from core.io import write_opt  # noqa: E402
from core.net.sop import STORAGE_CLASSES  # noqa: E402
from core.synthetic import simulate_patient  # noqa: E402
from core.volume import PatientInfo  # noqa: E402
from tests.gui_helpers import JOB_TIMEOUT_MS  # noqa: E402
from tests.net_fixtures import free_port  # noqa: E402

FAKE_AET = "FAKEPACS"
MOVE_AET = "OCTMOVE"


# ------------------------------------------------------------------------------ an in-process PACS
def _match(pattern: object, value: object) -> bool:
    """DICOM matching (PS3.4 C.2.2) as far as these tests need: empty matches all, * and ? wildcards
    (names case-insensitively), a date range FROM-TO."""
    p, v = str(pattern or "").strip(), str(value or "").strip()
    if not p or p == "*":
        return True
    if "-" in p and p.replace("-", "").isdigit():
        a, _, b = p.partition("-")
        return (not a or v >= a) and (not b or v <= b)
    return fnmatch.fnmatchcase(v.upper(), p.upper())


class FakePacs:
    """A Query/Retrieve SCP in this process (pynetdicom, on loopback): C-ECHO, C-FIND at study and
    series level (Study Root), C-GET, C-MOVE (to the AE titles in ``destinations``) and C-STORE; the
    called AE title is checked. Instances live in memory. ``hold(after)``: retrieves send ``after``
    instances (over all their calls), then wait before the next (``waiting`` is set) until ``release()``."""

    def __init__(self, aet: str = FAKE_AET) -> None:
        self.aet = aet
        self.instances: dict[str, Dataset] = {}
        self.destinations: dict[str, tuple[str, int]] = {}
        self.gate: threading.Event | None = None
        self.waiting = threading.Event()
        self.hold_after = 0
        self.sent = 0
        self.lock = threading.Lock()
        ae = AE(aet)
        ae.require_called_aet = True
        ae.add_supported_context(Verification)
        for model in (
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelGet,
            StudyRootQueryRetrieveInformationModelMove,
        ):
            ae.add_supported_context(model)
        for sop in STORAGE_CLASSES:  # C-STORE SCP, and the SCP role a C-GET requestor asks for
            ae.add_supported_context(sop, ALL_TRANSFER_SYNTAXES, scp_role=True, scu_role=False)
            ae.add_requested_context(sop, ALL_TRANSFER_SYNTAXES[:3])  # C-MOVE: we call the destination
        handlers = [
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_C_FIND, self._find),
            (evt.EVT_C_GET, self._get),
            (evt.EVT_C_MOVE, self._move),
            (evt.EVT_C_STORE, self._store),
        ]
        self.ae = ae
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.port = int(self.server.server_address[1])

    def node(self, name: str = "Fake PACS", **kw) -> PacsNode:
        kw.setdefault("timeout", 20.0)
        return PacsNode(name, aet=kw.pop("aet", self.aet), host="127.0.0.1", port=kw.pop("port", self.port), **kw)

    def add_files(self, paths) -> None:
        for p in paths:
            ds = pydicom.dcmread(p)
            self.instances[str(ds.SOPInstanceUID)] = ds

    def hold(self, after: int = 1) -> None:
        self.gate, self.waiting = threading.Event(), threading.Event()
        self.hold_after, self.sent = after, 0

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.gate = None

    def stop(self) -> None:
        self.release()
        self.server.shutdown()

    # -- the services ------------------------------------------------------------------------------
    def _studies(self) -> dict[str, list[Dataset]]:
        with self.lock:
            found: dict[str, list[Dataset]] = {}
            for ds in self.instances.values():
                found.setdefault(str(ds.StudyInstanceUID), []).append(ds)
            return found

    def _find(self, event):
        q = event.identifier
        level = str(q.get("QueryRetrieveLevel", ""))
        studies = self._studies()
        if level == "STUDY":
            for uid, items in studies.items():
                first = items[0]
                mods = sorted({str(d.Modality) for d in items})
                wanted = [m for m in str(q.get("ModalitiesInStudy", "") or "").split("\\") if m]
                if not (
                    _match(q.get("StudyInstanceUID"), uid)
                    and _match(q.get("PatientID"), first.get("PatientID"))
                    and _match(q.get("PatientName"), first.get("PatientName"))
                    and _match(q.get("StudyDate"), first.get("StudyDate"))
                    and _match(q.get("AccessionNumber"), first.get("AccessionNumber"))
                    and (not wanted or set(wanted) & set(mods))
                ):
                    continue
                r = Dataset()
                r.QueryRetrieveLevel = "STUDY"
                for kw in ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyTime"):
                    setattr(r, kw, first.get(kw, ""))
                r.StudyDescription = first.get("StudyDescription", "")
                r.AccessionNumber = first.get("AccessionNumber", "")
                r.ModalitiesInStudy = mods
                r.NumberOfStudyRelatedSeries = len({str(d.SeriesInstanceUID) for d in items})
                r.NumberOfStudyRelatedInstances = len(items)
                yield 0xFF00, r
        elif level == "SERIES":
            series: dict[str, list[Dataset]] = {}
            for d in studies.get(str(q.get("StudyInstanceUID", "")), []):
                series.setdefault(str(d.SeriesInstanceUID), []).append(d)
            for uid, items in series.items():
                first = items[0]
                if not _match(q.get("Modality"), first.Modality):
                    continue
                r = Dataset()
                r.QueryRetrieveLevel = "SERIES"
                r.StudyInstanceUID = first.StudyInstanceUID
                r.SeriesInstanceUID = uid
                r.Modality = first.Modality
                r.SeriesNumber = first.get("SeriesNumber", None)
                r.SeriesDescription = first.get("SeriesDescription", "")
                r.Laterality = first.get("Laterality", "")
                r.ImageLaterality = first.get("ImageLaterality", "")
                r.NumberOfSeriesRelatedInstances = len(items)
                yield 0xFF00, r
        else:
            yield 0xC000, None

    def _selected(self, identifier) -> list[Dataset]:
        study, series = str(identifier.get("StudyInstanceUID", "")), str(identifier.get("SeriesInstanceUID", "") or "")
        return [d for d in self._studies().get(study, []) if not series or str(d.SeriesInstanceUID) == series]

    def _send(self, event, matches):
        for ds in matches:
            gate = self.gate
            if gate is not None and self.sent >= self.hold_after:
                self.waiting.set()
                gate.wait(30)
            if event.is_cancelled:
                yield 0xFE00, None
                return
            self.sent += 1
            yield 0xFF00, ds

    def _get(self, event):
        matches = self._selected(event.identifier)
        yield len(matches)
        yield from self._send(event, matches)

    def _move(self, event):
        where = self.destinations.get(str(event.move_destination).strip())
        if where is None:
            yield None, None
            return
        matches = self._selected(event.identifier)
        yield where[0], where[1]
        yield len(matches)
        yield from self._send(event, matches)

    def _store(self, event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self.lock:
            self.instances[str(ds.SOPInstanceUID)] = ds
        return 0x0000


def _plant(folder: Path) -> SimpleNamespace:
    """Three studies: P0001 and P0002 with both eyes, DOE^JANE with the right eye only (OPT files)."""
    folder.mkdir(parents=True, exist_ok=True)
    studies = {}
    for index, seed, patient in (
        (1, 2026, None),
        (2, 7, None),
        (3, 11, PatientInfo("DOE-0003", "DOE^JANE", "19600101", "F")),
    ):
        vols = simulate_patient(index, seed=seed, n_bscans=6, height=96, width=128, patient=patient)
        if patient is not None:
            vols = vols[:1]
        files = [write_opt(v, folder / f"{v.patient.patient_id}-{v.laterality.value}.dcm") for v in vols]
        studies[vols[0].patient.patient_id] = SimpleNamespace(
            files=files,
            study_uid=vols[0].study.study_uid,
            date=vols[0].study.study_date,
            eyes=[v.laterality.value for v in vols],
        )
    return SimpleNamespace(folder=folder, studies=studies)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> SimpleNamespace:
    return _plant(tmp_path_factory.mktemp("planted"))


@pytest.fixture
def pacs(planted):
    server = FakePacs()
    server.add_files(f for s in planted.studies.values() for f in s.files)
    yield server
    server.stop()


# ------------------------------------------------------------------------------------ the window
class ScriptedPacsDialogs(PacsDialogs):
    """Answers this module's questions from its attributes and records them."""

    def __init__(self) -> None:
        self.nodes_answer: list[PacsNode] | None = None
        self.send_to: PacsNode | None = None
        self.asked: list[tuple[str, str]] = []

    def edit_nodes(self, parent, nodes, pool=None, password_note=""):
        self.asked.append(("nodes", ""))
        return self.nodes_answer

    def choose_node(self, parent, title, text, nodes, current):
        self.asked.append((title, text))
        return self.send_to

    def retrieve_folder(self, parent, start):
        return ""


@pytest.fixture
def window(window, tmp_path):
    """The shared test window (tests/conftest.py) with retrieve and export folders of the test's own and
    scripted PACS questions."""
    window.settings.pacs_retrieve_dir = tmp_path / "retrieved"
    window.settings.export_dir = str(tmp_path / "reports")
    (tmp_path / "reports").mkdir()
    window.pacs.dialogs = ScriptedPacsDialogs()
    yield window
    window.pacs.shutdown()


def open_query(window, nodes: list[PacsNode]) -> PacsDialog:
    window.settings.pacs_nodes = nodes
    window.pacs.act_query.trigger()
    dlg = window.pacs.dialog
    assert dlg is not None and dlg.isVisible()
    return dlg


def wait_dialog(qtbot, dlg: PacsDialog) -> None:
    qtbot.waitUntil(lambda: not dlg.busy, timeout=JOB_TIMEOUT_MS)


def search(qtbot, dlg: PacsDialog) -> None:
    assert dlg.search()
    wait_dialog(qtbot, dlg)


def column(dlg: PacsDialog, name: str) -> list[str]:
    c = STUDY_COLUMNS.index(name)
    return [dlg.studies.item(r, c).text() for r in range(dlg.studies.rowCount())]


def select_study(dlg: PacsDialog, study_uid: str) -> None:
    row = dlg.table_row_of(study_uid)
    assert row >= 0
    dlg.studies.selectRow(row)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def wait_screened(qtbot, window, n_exams: int) -> None:
    qtbot.waitUntil(lambda: window.job is None and len(window.state.exams) >= n_exams, timeout=JOB_TIMEOUT_MS)


# ------------------------------------------------------------------------------------ settings
def test_nodes_persist_across_settings_instances(tmp_path):
    ini = str(tmp_path / "nodes.ini")
    first = AppSettings(QSettings(ini, QSettings.Format.IniFormat))
    first.institution = "Eye Clinic"
    nodes = [
        PacsNode("Clinic PACS", aet="ORTHANC", host="pacs.example.org", port=4242, our_aet="CLINIC1", move_port=11113),
        PacsNode("Cloud", kind=DICOMWEB, url="https://pacs.example.org/dicom-web", timeout=12.0),
        PacsNode("Secure", aet="SECURE", host="10.0.0.9", port=2762, tls=True, tls_ca="ca.pem", tls_cert="c.pem"),
    ]
    first.pacs_nodes = nodes
    first.pacs_last_node = "Cloud"
    first.pacs_retrieve_dir = tmp_path / "in"
    first.sync()
    again = AppSettings(QSettings(ini, QSettings.Format.IniFormat))
    assert again.pacs_nodes == nodes and again.pacs_nodes[2].tls is True and not again.pacs_nodes[0].tls
    assert again.pacs_node("Cloud") == nodes[1] and again.pacs_node("nope") is None
    assert (again.pacs_last_node, again.pacs_retrieve_dir) == ("Cloud", str(tmp_path / "in"))
    assert again.institution == "Eye Clinic"  # the other keys are untouched
    assert nodes[0].address == "ORTHANC@pacs.example.org:4242" and nodes[1].label.startswith("Cloud (https://")
    again.pacs_nodes = nodes[1:]  # a shorter list leaves no stale entry behind
    again.sync()
    assert AppSettings(QSettings(ini, QSettings.Format.IniFormat)).pacs_nodes == nodes[1:]


def test_name_patterns():
    assert name_pattern("Doe") == "Doe*"
    assert name_pattern("Doe, Jane") == "Doe^Jane*"
    assert name_pattern("DOE^J?NE") == "DOE^J?NE"
    assert name_pattern("  ") == ""


# ---------------------------------------------------------------------------------- node editor
def test_node_editor_adds_edits_tests_and_removes(qtbot, pacs):
    dlg = NodesDialog([])
    qtbot.addWidget(dlg)
    assert not dlg.form_widget.isEnabled()  # nothing to edit yet
    dlg.add_node()
    dlg.name.setText("Fake PACS")
    dlg.aet.setText(pacs.aet)
    dlg.host.setText("127.0.0.1")
    dlg.port.setValue(pacs.port)
    assert dlg.nodes == [PacsNode("Fake PACS", aet=pacs.aet, host="127.0.0.1", port=pacs.port)]
    assert dlg.list.item(0).text() == "Fake PACS"
    dlg.test_button.click()  # an echo in the background: the dialog stays responsive
    qtbot.waitUntil(lambda: dlg.answer.text().startswith(("\u2713", "\u2717")), timeout=JOB_TIMEOUT_MS)
    assert dlg.answer.text().startswith("\u2713 Fake PACS answered in") and "C-ECHO" in dlg.answer.text()

    dlg.add_node()  # a second node, unreachable and then refused
    assert dlg.list.count() == 2 and dlg.name.text() == "PACS"
    dlg.name.setText("Nobody")
    dlg.aet.setText(pacs.aet)
    dlg.host.setText("127.0.0.1")
    dlg.port.setValue(free_port())
    dlg.test_button.click()
    qtbot.waitUntil(lambda: dlg.answer.text().startswith(("\u2713", "\u2717")), timeout=JOB_TIMEOUT_MS)
    assert dlg.answer.text().startswith("\u2717 Cannot reach Nobody (")
    dlg.port.setValue(pacs.port)
    dlg.aet.setText("WRONGAET")
    dlg.test_button.click()
    qtbot.waitUntil(lambda: dlg.answer.text().startswith(("\u2713", "\u2717")), timeout=JOB_TIMEOUT_MS)
    assert "Nobody refused us" in dlg.answer.text() and "WRONGAET" in dlg.answer.text()

    dlg.kind.setCurrentText(DICOMWEB)  # the form shows the fields of the kind
    assert dlg.url.isVisibleTo(dlg) and not dlg.aet.isVisibleTo(dlg)
    dlg.accept()  # a DICOMweb node without a URL is not accepted
    assert dlg.result() != NodesDialog.DialogCode.Accepted and "URL" in dlg.problem.text()
    dlg.remove_node()
    assert [n.name for n in dlg.nodes] == ["Fake PACS"] and dlg.name.text() == "Fake PACS"
    dlg.add_node()
    dlg.name.setText("Fake PACS")
    dlg.accept()
    assert "Two nodes are called" in dlg.problem.text()
    dlg.remove_node()
    dlg.accept()
    assert dlg.result() == NodesDialog.DialogCode.Accepted


def test_node_editor_talks_dicom_over_tls(qtbot, tmp_path, certificate):
    """A TLS node set up in the editor echoes a TLS storage SCP; without TLS, or trusting the wrong CA,
    it does not get through; C-MOVE with TLS without our certificate and a missing certificate file are
    refused on OK."""
    from core.net import StorageServer, tls_context

    cert, key = certificate
    server_ctx = tls_context(cert_file=cert, key_file=key, server=True)
    with StorageServer(tmp_path / "in", port=0, host="127.0.0.1", tls=server_ctx) as server:
        dlg = NodesDialog([])
        qtbot.addWidget(dlg)
        dlg.add_node()
        dlg.name.setText("Secure PACS")
        dlg.aet.setText("OCTSCREEN")
        dlg.host.setText("127.0.0.1")
        dlg.port.setValue(server.port)
        assert dlg.tls.isVisibleTo(dlg) and not dlg.tls_ca.isVisibleTo(dlg)  # the files show with TLS on
        dlg.tls.setChecked(True)
        assert dlg.tls_ca.isVisibleTo(dlg) and dlg.tls_cert.isVisibleTo(dlg)
        dlg.tls_ca.edit.setText(str(cert))
        assert dlg.nodes[0].tls and dlg.nodes[0].tls_ca == str(cert)

        def answer() -> str:
            dlg.answer.setText("")
            dlg.test_button.click()
            qtbot.waitUntil(lambda: dlg.answer.text().startswith(("\u2713", "\u2717")), timeout=JOB_TIMEOUT_MS)
            return dlg.answer.text()

        assert answer().startswith("\u2713 Secure PACS answered in")
        dlg.tls.setChecked(False)  # plain DICOM to a TLS port
        assert answer().startswith("\u2717")
        dlg.tls.setChecked(True)
        dlg.tls_ca.edit.setText("")  # the system's CAs do not trust the self-signed certificate
        text = answer()
        assert text.startswith("\u2717") and "TLS" in text

        dlg.tls_ca.edit.setText(str(tmp_path / "missing.pem"))
        dlg.accept()
        assert dlg.result() != NodesDialog.DialogCode.Accepted
        assert "missing.pem is not a file" in dlg.problem.text() and "CA certificate" in dlg.problem.text()
        dlg.tls_ca.edit.setText(str(cert))
        dlg.move_port.setValue(free_port())
        dlg.accept()
        assert "C-MOVE from a TLS node needs our certificate and its key" in dlg.problem.text()
        dlg.tls_cert.edit.setText(str(cert))
        dlg.tls_key.edit.setText(str(key))
        assert connection(dlg.nodes[0]).tls is not None  # with them, C-MOVE over TLS is allowed
        dlg.tls_cert.edit.setText("")
        dlg.tls_key.edit.setText("")
        dlg.move_port.setValue(0)
        dlg.accept()
        assert dlg.result() == NodesDialog.DialogCode.Accepted
        assert dlg.nodes == [
            PacsNode("Secure PACS", aet="OCTSCREEN", host="127.0.0.1", port=server.port, tls=True, tls_ca=str(cert))
        ]


def test_tls_settings_of_a_node_are_checked(tmp_path, certificate):
    cert, key = certificate
    node = PacsNode("S", aet="PACS", host="127.0.0.1", port=104, tls=True, tls_ca=str(cert))
    assert connection(node).tls is not None
    assert connection(replace(node, tls=False)).tls is None  # the files are kept, not used
    assert connection(replace(node, tls=False, tls_ca=str(tmp_path / "moved.pem"))).tls is None  # nor checked
    with pytest.raises(ValueError, match="needs its client certificate"):
        connection(replace(node, tls_key=str(key)))
    with pytest.raises(ValueError, match="cannot be used"):
        connection(replace(node, tls_ca=str(key)))  # a key is not a CA certificate
    assert connection(replace(node, tls_cert=str(cert), tls_key=str(key))).tls is not None
    web = PacsNode("W", kind=DICOMWEB, url="http://pacs:8042/dicom-web", tls_ca=str(cert))
    with pytest.raises(ValueError, match="https URL only"):
        connection(web)  # certificate files with plain http would look safe and are not
    assert connection(replace(web, url="https://pacs:8042/dicom-web")).ca_file == str(cert)


def test_a_dicomweb_password_is_never_shown(qtbot):
    """The URL may carry user and password (HTTP Basic); lists, labels and messages name the node without them."""
    from core.errors import NodeUnreachableError
    from core.net.web import parse_web_node

    node = PacsNode("Cloud", kind=DICOMWEB, url="https://clinic:s3cret@pacs.example.org:8443/dicom-web")
    assert node.address == "https://pacs.example.org:8443/dicom-web" and "s3cret" not in node.label
    assert str(connection(node)) == node.address == str(parse_web_node(node.url))
    text = failure_text(node, NodeUnreachableError(str(connection(node)), "QIDO-RS: cannot connect"))
    assert "s3cret" not in text and "clinic:" not in text and "pacs.example.org" in text
    chooser = ChooseNodeDialog("Send to PACS", "", [node], "Cloud")
    qtbot.addWidget(chooser)
    assert chooser.combo.itemText(0) == "Cloud (https://pacs.example.org:8443/dicom-web)"


def test_dicomweb_user_and_password_have_fields_of_their_own(qtbot, tmp_path):
    """The editor keeps user and password out of the URL (the password field hides what is typed);
    they reach the service as HTTP Basic authentication, and older settings with them in the URL
    are split into the fields."""
    from core.net.web import _session

    dlg = NodesDialog([])
    qtbot.addWidget(dlg)
    dlg.add_node()
    dlg.kind.setCurrentText(DICOMWEB)
    dlg.url.setText("https://pacs.example.org/dicom-web")
    dlg.user.setText("clinic")
    dlg.password.setText("p@ss:w/rd")
    assert dlg.password.isVisibleTo(dlg) and dlg.password.echoMode() == dlg.password.EchoMode.Password
    node = dlg.nodes[0]
    assert (node.url, node.user, node.password) == ("https://pacs.example.org/dicom-web", "clinic", "p@ss:w/rd")
    assert "p@ss" not in repr(node)  # a log line that prints the node does not print the password
    session, bare = _session(connection(node))
    assert session.auth == ("clinic", "p@ss:w/rd") and bare == "https://pacs.example.org/dicom-web"
    dlg.user.setText("")
    dlg.accept()
    assert "password needs its user" in dlg.problem.text()
    dlg.user.setText("clinic")
    dlg.url.setText("http://pacs.example.org/dicom-web")  # Basic authentication in the clear
    dlg.accept()
    assert "unencrypted" in dlg.problem.text() and dlg.result() != NodesDialog.DialogCode.Accepted
    dlg.url.setText("http://127.0.0.1:8042/dicom-web")  # on this computer
    dlg.accept()
    assert dlg.result() == NodesDialog.DialogCode.Accepted

    ini = str(tmp_path / "old.ini")
    old = QSettings(ini, QSettings.Format.IniFormat)
    old.beginWriteArray("pacs/nodes", 1)
    old.setArrayIndex(0)
    for key, value in (("name", "Cloud"), ("kind", DICOMWEB), ("url", "https://clinic:s3cret@pacs.example.org/dw")):
        old.setValue(key, value)
    old.endArray()
    old.sync()
    (loaded,) = AppSettings(QSettings(ini, QSettings.Format.IniFormat)).pacs_nodes
    assert (loaded.url, loaded.user, loaded.password) == ("https://pacs.example.org/dw", "clinic", "s3cret")


def test_nodes_edited_in_the_dialog_are_saved(qtbot, window, pacs):
    dlg = open_query(window, [])
    scripted = window.pacs.dialogs
    qtbot.waitUntil(lambda: ("nodes", "") in scripted.asked)  # no node yet: the editor opens by itself
    scripted.nodes_answer = [pacs.node("Fake PACS"), pacs.node("Other", port=free_port())]
    dlg.edit_nodes()
    again = AppSettings(QSettings(window.settings.q.fileName(), QSettings.Format.IniFormat))
    assert [n.name for n in again.pacs_nodes] == ["Fake PACS", "Other"]
    assert dlg.node_combo.count() == 2 and dlg.node.name == "Fake PACS"


# --------------------------------------------------------------------------------------- search
def test_search_shows_the_planted_studies(qtbot, window, pacs, planted):
    dlg = open_query(window, [pacs.node()])
    search(qtbot, dlg)
    assert not window.dialogs.errors
    assert dlg.studies.rowCount() == 3 and "3 studies on Fake PACS" in dlg.status.text()
    assert sorted(column(dlg, "Patient ID")) == ["DOE-0003", "P0001", "P0002"]
    assert "DOE, JANE" in column(dlg, "Patient") and "SYNTH, P0001" in column(dlg, "Patient")
    p1 = planted.studies["P0001"]
    r = dlg.table_row_of(p1.study_uid)
    series_col = STUDY_COLUMNS.index("Series (eyes)")
    assert dlg.studies.item(r, series_col).text() == "2 (OD, OS)"
    assert dlg.studies.item(r, STUDY_COLUMNS.index("Date")).text() == f"{p1.date[:4]}-{p1.date[4:6]}-{p1.date[6:]}"
    assert dlg.studies.item(r, STUDY_COLUMNS.index("Modality")).text() == "OPT"
    assert dlg.studies.item(dlg.table_row_of(planted.studies["DOE-0003"].study_uid), series_col).text() == "1 (OD)"

    dlg.studies.sortItems(STUDY_COLUMNS.index("Series (eyes)"), Qt.SortOrder.AscendingOrder)
    assert column(dlg, "Patient ID")[0] == "DOE-0003"
    dlg.studies.sortItems(STUDY_COLUMNS.index("Date"), Qt.SortOrder.DescendingOrder)
    dates = column(dlg, "Date")
    assert dates == sorted(dates, reverse=True)

    select_study(dlg, p1.study_uid)  # the series of the selected study
    assert dlg.series.rowCount() == 2
    assert sorted(dlg.series.item(i, 2).text() for i in range(2)) == ["OD", "OS"]
    assert dlg.retrieve_button.isEnabled()

    dlg.patient_name.setText("doe")  # name: a prefix, any case
    search(qtbot, dlg)
    assert column(dlg, "Patient ID") == ["DOE-0003"]
    dlg.patient_name.setText("")
    dlg.patient_id.setText("P0002")
    search(qtbot, dlg)
    assert column(dlg, "Patient ID") == ["P0002"]
    dlg.patient_id.setText("")
    d = planted.studies["P0001"].date
    dlg.date_from.setDate(QDate.fromString(d, "yyyyMMdd"))
    dlg.date_to.setDate(QDate.fromString(d, "yyyyMMdd"))
    search(qtbot, dlg)
    assert planted.studies["P0001"].study_uid in [r.study.study_uid for r in dlg.rows]
    assert all(r.study.study_date == d for r in dlg.rows)
    dlg.date_from.setDate(QDate(2030, 1, 1))
    assert not dlg.search() and "starts after it ends" in dlg.status.text()


# -------------------------------------------------------------------------------------- retrieve
@pytest.mark.parametrize("how", ["C-GET", "C-MOVE"])
def test_retrieve_fills_the_worklist_with_the_exam(qtbot, window, pacs, planted, how):
    node = pacs.node()
    if how == "C-MOVE":
        port = free_port()
        pacs.destinations[node.our_aet] = ("127.0.0.1", port)
        node = pacs.node(move_port=port)
    dlg = open_query(window, [node])
    assert how in dlg.node_hint.text()
    search(qtbot, dlg)
    p1 = planted.studies["P0001"]
    select_study(dlg, p1.study_uid)
    assert dlg.retrieve()
    wait_dialog(qtbot, dlg)
    assert not window.dialogs.errors, window.dialogs.errors
    root = Path(window.settings.pacs_retrieve_dir)
    kept = files_under(root)
    assert len(kept) == 2 and all(root / p1.study_uid in f.parents for f in kept)
    assert "Retrieved 2 instances from Fake PACS" in dlg.status.text()
    wait_screened(qtbot, window, 1)
    (loaded,) = window.state.exams
    assert loaded.exam.patient.patient_id == "P0001" and loaded.exam.study.study_uid == p1.study_uid
    assert sorted(e.eye.laterality.value for e in loaded.exam.eyes) == ["OD", "OS"]
    assert not window.dialogs.errors


def test_retrieve_one_series(qtbot, window, pacs, planted):
    dlg = open_query(window, [pacs.node()])
    search(qtbot, dlg)
    p2 = planted.studies["P0002"]
    select_study(dlg, p2.study_uid)
    left = next(i for i in range(dlg.series.rowCount()) if dlg.series.item(i, 2).text() == "OS")
    dlg.series.selectRow(left)
    assert dlg.retrieve()
    wait_dialog(qtbot, dlg)
    wait_screened(qtbot, window, 1)
    assert [e.eye.laterality.value for e in window.state.exams[0].exam.eyes] == ["OS"]
    assert len(files_under(Path(window.settings.pacs_retrieve_dir))) == 1


def test_cancel_during_retrieve_keeps_nothing(qtbot, window, pacs, planted):
    dlg = open_query(window, [pacs.node()])
    search(qtbot, dlg)
    p1 = planted.studies["P0001"]
    select_study(dlg, p1.study_uid)
    pacs.hold()  # the PACS sends one instance, then waits
    assert dlg.retrieve()
    qtbot.waitUntil(pacs.waiting.is_set, timeout=JOB_TIMEOUT_MS)
    qtbot.waitUntil(lambda: "1 of 2 instance" in dlg.status.text(), timeout=JOB_TIMEOUT_MS)
    assert dlg.busy and dlg.cancel_button.isVisible() and dlg.progress.isVisible()
    assert not dlg.search_button.isEnabled() and not dlg.retrieve_button.isEnabled()
    root = Path(window.settings.pacs_retrieve_dir)
    qtbot.mouseClick(dlg.cancel_button, Qt.MouseButton.LeftButton)
    assert dlg.status.text() == "Cancelling\u2026"
    pacs.release()
    wait_dialog(qtbot, dlg)
    assert "Retrieve cancelled: nothing of it was kept" in dlg.status.text()
    assert files_under(root) == [] and not [p for p in root.iterdir() if p.name.startswith(".")]
    assert not window.dialogs.errors and window.state.exams == []
    assert not dlg.cancel_button.isVisible() and dlg.retrieve_button.isEnabled()
    # still usable: search and retrieve again
    search(qtbot, dlg)
    assert dlg.studies.rowCount() == 3
    select_study(dlg, p1.study_uid)
    assert dlg.retrieve()
    wait_dialog(qtbot, dlg)
    wait_screened(qtbot, window, 1)
    assert len(files_under(root)) == 2


def test_cancel_during_the_second_study_removes_the_first(qtbot, window, pacs, planted):
    dlg = open_query(window, [pacs.node()])
    search(qtbot, dlg)
    p1, p2 = planted.studies["P0001"], planted.studies["P0002"]
    select_study(dlg, p1.study_uid)
    dlg.studies.selectionModel().select(
        dlg.studies.model().index(dlg.table_row_of(p2.study_uid), 0),
        dlg.studies.selectionModel().SelectionFlag.Select | dlg.studies.selectionModel().SelectionFlag.Rows,
    )
    first, second = dlg.plans()  # two studies: two retrieves in one job
    assert {first.study_uid, second.study_uid} == {p1.study_uid, p2.study_uid}
    root = Path(window.settings.pacs_retrieve_dir)
    pacs.hold(after=2)  # the first study arrives whole, the second waits
    assert dlg.retrieve()
    qtbot.waitUntil(pacs.waiting.is_set, timeout=JOB_TIMEOUT_MS)
    assert "study 2 of 2" in dlg.status.text()
    assert len(files_under(root / first.study_uid)) == 2  # the first study is in place
    dlg.cancel()
    pacs.release()
    wait_dialog(qtbot, dlg)
    assert "Retrieve cancelled" in dlg.status.text()
    assert files_under(root) == [] and list(root.iterdir()) == []  # its folders are gone too
    assert window.state.exams == [] and not window.dialogs.errors


def test_retrieve_keeps_what_was_there_before(qtbot, window, pacs, planted):
    """A retrieve cancelled after a study retrieved earlier keeps that earlier study's files."""
    dlg = open_query(window, [pacs.node()])
    search(qtbot, dlg)
    p1 = planted.studies["P0001"]
    select_study(dlg, p1.study_uid)
    assert dlg.retrieve()
    wait_dialog(qtbot, dlg)
    wait_screened(qtbot, window, 1)
    root = Path(window.settings.pacs_retrieve_dir)
    before = files_under(root)
    assert len(before) == 2
    pacs.hold(after=0)  # again: nothing new arrives before Cancel
    assert dlg.retrieve()
    qtbot.waitUntil(pacs.waiting.is_set, timeout=JOB_TIMEOUT_MS)
    dlg.cancel()
    pacs.release()
    wait_dialog(qtbot, dlg)
    assert "Retrieve cancelled" in dlg.status.text() and files_under(root) == before


# ----------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("problem", ["unreachable", "rejected"])
def test_a_node_that_fails_gives_a_message_naming_it(qtbot, window, pacs, problem):
    node = (
        pacs.node("Clinic PACS", port=free_port())
        if problem == "unreachable"
        else pacs.node("Clinic PACS", aet="NOTTHERE")
    )
    dlg = open_query(window, [node])
    search(qtbot, dlg)
    ((title, text, details),) = window.dialogs.errors
    assert title == "PACS search failed" and details == ""  # a message, no traceback
    assert "Clinic PACS" in text and f"@127.0.0.1:{node.port}" in text
    if problem == "unreachable":
        assert text.startswith(f"Cannot reach {node.label}.")
    else:
        assert text.startswith("Clinic PACS refused us.") and "NOTTHERE" in text
    assert "PACS search failed" in dlg.status.text() and dlg.studies.rowCount() == 0
    assert dlg.search_button.isEnabled()  # usable again


def test_a_node_with_bad_settings_is_a_message(qtbot, window):
    dlg = open_query(window, [PacsNode("Half typed", aet="", host="127.0.0.1", port=104)])
    search(qtbot, dlg)
    ((title, text, details),) = window.dialogs.errors
    assert "The settings of Half typed are not usable" in text and details == ""
    with pytest.raises(ValueError):
        connection(PacsNode("x", kind=DICOMWEB, url="ftp://nowhere"))


# ------------------------------------------------------------------------------------------- send
def test_send_stores_the_report_instances_on_the_pacs(qtbot, window, pacs, planted):
    from core.net import find_series, find_studies

    p3 = planted.studies["DOE-0003"]
    assert window.open_paths(p3.files)
    wait_screened(qtbot, window, 1)
    assert window.pacs.act_send.isEnabled()
    node = pacs.node()
    window.settings.pacs_nodes = [node]
    scripted = window.pacs.dialogs
    scripted.send_to = node
    window.pacs.act_send.trigger()  # no DICOM report yet: it is written first, then sent
    title, text = scripted.asked[-1]
    assert title == "Send to PACS" and "written first" in text and "_sr.dcm" in text
    qtbot.waitUntil(lambda: not window.pacs.sender.busy, timeout=JOB_TIMEOUT_MS)
    assert not window.dialogs.errors, window.dialogs.errors
    assert window.dialogs.infos[-1][0] == "Sent to PACS"
    assert f"2 of 2 instances stored on {node.label}" in window.dialogs.infos[-1][1]
    written = window.pacs.last_send.written
    assert [p.suffix for p in written] == [".pdf", ".dcm", ".dcm"] and all(p.is_file() for p in written)
    assert all(p.parent == Path(window.settings.export_dir) for p in written)
    # queried back from the PACS: the study now holds the report and the SR
    net = connection(node)
    (study,) = find_studies(net, patient_id="DOE-0003", modality="")
    assert {"OPT", "DOC", "SR"} <= set(study.modalities)
    series = find_series(net, p3.study_uid)
    assert sorted(s.modality for s in series) == ["DOC", "OPT", "SR"]
    stored = {str(ds.SOPClassUID) for ds in pacs.instances.values() if ds.StudyInstanceUID == p3.study_uid}
    assert {EncapsulatedPDFStorage, ComprehensiveSRStorage} <= stored

    n_before = len(pacs.instances)
    window.pacs.act_send.trigger()  # sent again: the files written are found, nothing new is written
    title, text = scripted.asked[-1]
    assert text.startswith("Sends:") and written[1].name in text and written[2].name in text
    qtbot.waitUntil(lambda: not window.pacs.sender.busy, timeout=JOB_TIMEOUT_MS)
    assert window.pacs.last_send.written == [] and len(pacs.instances) == n_before  # the same instances


def test_send_after_export_sends_the_exported_report(qtbot, window, pacs, planted, tmp_path):
    from app.workers import ExportRequest

    p2 = planted.studies["P0002"]
    assert window.open_paths(p2.files)
    wait_screened(qtbot, window, 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert window.export(ExportRequest(elsewhere / "report.pdf", dicom=True))
    qtbot.waitUntil(lambda: window.job is None, timeout=JOB_TIMEOUT_MS)
    assert (elsewhere / "report.dcm").is_file()
    node = pacs.node()
    window.settings.pacs_nodes = [node]
    window.pacs.dialogs.send_to = node
    assert window.pacs.send_dialog()
    qtbot.waitUntil(lambda: not window.pacs.sender.busy, timeout=JOB_TIMEOUT_MS)
    assert sorted(r.path for r in window.pacs.last_send.results) == [
        elsewhere / "report.dcm",
        elsewhere / "report_sr.dcm",
    ]
    assert "2 of 2 instances stored" in window.dialogs.infos[-1][1]


def test_send_to_an_unreachable_node_names_it(qtbot, window, pacs, planted):
    assert window.open_paths(planted.studies["DOE-0003"].files)
    wait_screened(qtbot, window, 1)
    node = pacs.node("Archive", port=free_port())
    window.settings.pacs_nodes = [node]
    window.pacs.dialogs.send_to = node
    assert window.pacs.send_dialog()
    qtbot.waitUntil(lambda: not window.pacs.sender.busy, timeout=JOB_TIMEOUT_MS)
    ((title, text, details),) = window.dialogs.errors
    assert title == "Send to PACS failed" and text.startswith(f"Cannot reach {node.label}") and details == ""
    assert window.pacs.act_send.isEnabled()


def test_send_needs_an_exam(qtbot, window):
    assert not window.pacs.act_send.isEnabled()
    assert not window.pacs.send_dialog()
    assert window.dialogs.infos == [("Send to PACS", "Open and select an exam first.")]


# --------------------------------------------------------------------------------------- DICOMweb
def test_dicomweb_node_search_retrieve_and_send_with_orthanc(qtbot, window, planted, tmp_path):
    from core.net.web import find_series, parse_web_node, send_files
    from tests.net_fixtures import start_orthanc

    orthanc = start_orthanc(tmp_path / "orthanc", dicomweb=True)
    try:
        web = parse_web_node(orthanc.dicomweb_url, timeout=20.0)
        p1 = planted.studies["P0001"]
        assert all(r.ok for r in send_files(web, p1.files))
        node = PacsNode("Orthanc web", kind=DICOMWEB, url=orthanc.dicomweb_url, timeout=20.0)
        dlg = open_query(window, [node])
        assert "WADO-RS" in dlg.node_hint.text()
        search(qtbot, dlg)
        assert not window.dialogs.errors, window.dialogs.errors
        assert column(dlg, "Patient ID") == ["P0001"] and column(dlg, "Series (eyes)") == ["2 (OD, OS)"]
        select_study(dlg, p1.study_uid)
        assert dlg.retrieve()
        wait_dialog(qtbot, dlg)
        assert not window.dialogs.errors, window.dialogs.errors
        wait_screened(qtbot, window, 1)
        assert window.state.exams[0].exam.study.study_uid == p1.study_uid
        window.pacs.dialogs.send_to = node
        assert window.pacs.send_dialog()
        qtbot.waitUntil(lambda: not window.pacs.sender.busy, timeout=JOB_TIMEOUT_MS)
        assert not window.dialogs.errors, window.dialogs.errors
        assert "2 of 2 instances stored" in window.dialogs.infos[-1][1]
        assert sorted(s.modality for s in find_series(web, p1.study_uid)) == ["DOC", "OPT", "OPT", "SR"]
    finally:
        orthanc.stop()
