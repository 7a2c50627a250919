"""core.net without a PACS: node notation, date ranges, our storage SCP against pynetdicom senders
(what it keeps, what it refuses and why, when a series counts as complete), retries, timeouts and
DICOM over TLS. The round trips with a real PACS are in tests/test_net_orthanc.py."""

from __future__ import annotations

import copy
import socket
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from core.errors import (
    AssociationRejectedError,
    CorruptFileError,
    NetworkError,
    NetworkTimeoutError,
    NodeUnreachableError,
    NoPixelDataError,
    UnsupportedFormatError,
)
from core.io import open_path, write_opt
from core.io.writer import OPT_SOP_CLASS, build_opt_dataset
from core.net import NodeSettings, StorageServer, echo, parse_date_range, parse_node, send_files, tls_context
from core.net.store import instance_path
from tests.net_fixtures import free_port


# ------------------------------------------------------------------------------------------ notation
def test_parse_node_and_back():
    n = parse_node("ORTHANC@pacs.example.org:4242", our_aet="CLINIC1")
    assert (n.aet, n.host, n.port, n.our_aet) == ("ORTHANC", "pacs.example.org", 4242, "CLINIC1")
    assert str(n) == "ORTHANC@pacs.example.org:4242"
    v6 = parse_node("PACS@[::1]:104")
    assert v6.host == "::1" and str(v6) == "PACS@[::1]:104"
    assert parse_node(" A B@10.0.0.1:11112 ").aet == "A B"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("pacs.example.org:4242", "AET@HOST:PORT"),
        ("ORTHANC@pacs.example.org", "AET@HOST:PORT"),
        ("ORTHANC@:4242", "AET@HOST:PORT"),
        ("ORTHANC@host:0", "outside 1..65535"),
        ("ORTHANC@host:70000", "outside 1..65535"),
        ("AN_AE_TITLE_TOO_LONG@host:104", "longer than 16"),
        ("BACK\\SLASH@host:104", "printable ASCII"),
    ],
)
def test_parse_node_says_what_is_wrong(text, problem):
    with pytest.raises(ValueError, match=problem.replace(".", r"\.")):
        parse_node(text)


def test_node_settings_refuse_nonsense_timeouts():
    with pytest.raises(ValueError, match="dimse_timeout must be positive"):
        NodeSettings("A", "h", 104, dimse_timeout=0)


@pytest.mark.parametrize("text", ["20260131", "20260101-20260131", "20260101-", "-20260131"])
def test_date_ranges(text):
    assert parse_date_range(text) == text


@pytest.mark.parametrize(
    "text, problem",
    [("2026", "not a date"), ("20261301", "not a calendar date"), ("20260201-20260101", "starts after"), ("-", "not")],
)
def test_bad_date_ranges(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_date_range(text)


# ----------------------------------------------------------------------------- our storage SCP
@pytest.fixture
def scp(tmp_path):
    series: list = []
    server = StorageServer(tmp_path / "store", aet="OCTSCREEN", port=0, host="127.0.0.1", on_series=series.append)
    server.start()
    server.series_seen = series  # type: ignore[attr-defined]
    yield server
    server.stop()


def _node(server: StorageServer, **kw) -> NodeSettings:
    kw.setdefault("our_aet", "DEVICE")
    return parse_node(f"{server.aet}@127.0.0.1:{server.port}", **kw)


def _opt_file(make_volume, folder: Path, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    vol = make_volume(n=3, h=64, w=64, **kw)
    return write_opt(vol, folder / f"{kw.get('laterality', 'OD')}-{generate_uid()[-8:]}.dcm")


def _send_datasets(server: StorageServer, datasets, *, abort: bool = False) -> list[int]:
    """Send datasets (each under the presentation context of its file meta) with a bare pynetdicom SCU."""
    ae = AE("DEVICE")
    for ds in datasets:
        ae.add_requested_context(ds.file_meta.MediaStorageSOPClassUID)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.aet)
    assert assoc.is_established
    codes = [int(assoc.send_c_store(ds).Status) for ds in datasets]
    assoc.abort() if abort else assoc.release()
    return codes


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_scp_stores_what_a_sender_pushes_and_reports_the_completed_series(scp, make_volume, tmp_path):
    od = _opt_file(make_volume, tmp_path / "send", laterality="OD", study_uid="1.2.3.4")
    os_ = _opt_file(make_volume, tmp_path / "send", laterality="OS", study_uid="1.2.3.4", seed=1)
    assert echo(_node(scp)) > 0  # a storage SCP answers C-ECHO too
    assert all(r.ok for r in send_files(_node(scp), [od, os_]))
    _wait(lambda: len(scp.series_seen) == 2)
    for src in (od, os_):
        ds = pydicom.dcmread(src)
        target = instance_path(scp.folder, "1.2.3.4", ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert target.is_file() and pydicom.dcmread(target).PixelData == ds.PixelData
    assert all(s.complete and s.is_oct and s.sender.startswith("DEVICE@127.0.0.1:") for s in scp.series_seen)
    assert {len(s.files) for s in scp.series_seen} == {1}
    assert sorted(v.laterality.value for v in open_path(scp.folder)) == ["OD", "OS"]
    assert not [p for p in scp.folder.rglob("*") if p.name.startswith(".")]  # no temp file left


def test_scp_reports_a_series_of_an_aborted_association_as_incomplete(scp, make_volume, tmp_path):
    ds = pydicom.dcmread(_opt_file(make_volume, tmp_path / "send"))
    assert _send_datasets(scp, [ds], abort=True) == [0]
    _wait(lambda: len(scp.series_seen) == 1)
    assert scp.series_seen[0].complete is False


def test_scp_refuses_bad_instances_and_names_the_sender(scp, make_volume, tmp_path):
    base = pydicom.dcmread(_opt_file(make_volume, tmp_path / "send"))

    def variant(**changes):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = changes.pop("uid", generate_uid())
        for k, v in changes.items():
            if v is None:
                delattr(ds, k)
            else:
                setattr(ds, k, v)
        return ds

    traversal = variant(uid="../../../evil")
    no_pixels = variant(PixelData=None)
    bad_bits = variant(BitsAllocated=12)  # passes the presence checks; core.io's header check refuses it
    no_study = variant(StudyInstanceUID=None)
    codes = _send_datasets(scp, [traversal, no_pixels, bad_bits, no_study])
    assert all(c != 0 for c in codes), [hex(c) for c in codes]
    errors = scp.store.rejected
    assert [type(e) for e in errors] == [CorruptFileError, NoPixelDataError, UnsupportedFormatError, CorruptFileError]
    assert all(str(e).startswith("DEVICE@127.0.0.1:") for e in errors)
    assert "'../../../evil' is not a valid UID" in str(errors[0])
    assert "12-bit pixels are not supported" in str(errors[2])
    assert "its Study Instance UID '' is not a valid UID" in str(errors[3])
    assert scp.store.stored == [] and [p for p in tmp_path.rglob("*evil*")] == []
    assert [p for p in scp.folder.rglob("*") if p.is_file()] == []  # nothing written, no temp file left


def test_scp_keeps_the_first_copy_of_an_instance(scp, make_volume, tmp_path):
    ds = pydicom.dcmread(_opt_file(make_volume, tmp_path / "send"))
    assert _send_datasets(scp, [ds, ds]) == [0, 0]
    assert [s.duplicate for s in scp.store.stored] == [False, True]
    changed = copy.deepcopy(ds)
    changed.PatientID = "SOMEONE-ELSE"
    assert _send_datasets(scp, [changed]) != [0]
    assert "already stored" in str(scp.store.rejected[-1])
    (kept,) = [p for p in scp.folder.rglob("*.dcm")]
    assert pydicom.dcmread(kept).PatientID == ds.PatientID


def test_scp_refuses_other_studies_when_asked_for_one(tmp_path, make_volume):
    with StorageServer(tmp_path / "s", port=0, host="127.0.0.1", study_uid="1.2.3.99") as server:
        ds = pydicom.dcmread(_opt_file(make_volume, tmp_path / "send", study_uid="1.2.3.1"))
        assert _send_datasets(server, [ds]) != [0]
        assert "not of the study we asked for" in str(server.store.rejected[0])


def test_scp_rejects_a_wrong_called_ae_title_and_unknown_callers(tmp_path):
    with StorageServer(tmp_path / "s", aet="OCTSCREEN", port=0, host="127.0.0.1", allowed_aets=["DEVICE"]) as server:
        with pytest.raises(AssociationRejectedError, match="does not answer to the AE title 'WRONG'"):
            echo(parse_node(f"WRONG@127.0.0.1:{server.port}", our_aet="DEVICE"))
        with pytest.raises(AssociationRejectedError, match="does not know our AE title 'STRANGER'"):
            echo(parse_node(f"OCTSCREEN@127.0.0.1:{server.port}", our_aet="STRANGER"))
        assert echo(parse_node(f"OCTSCREEN@127.0.0.1:{server.port}", our_aet="DEVICE")) > 0


# ----------------------------------------------------------------------------- retries, timeouts
def test_unreachable_node_is_retried_until_it_comes_up(tmp_path):
    port = free_port()
    node = parse_node(f"OCTSCREEN@127.0.0.1:{port}", retries=2, retry_delay=0.2)
    start = time.monotonic()
    with pytest.raises(NodeUnreachableError, match=r"connection refused.*\(gave up after 3 attempts\)"):
        echo(node)
    assert time.monotonic() - start >= 0.2 + 0.4  # it waited between the attempts
    server = StorageServer(tmp_path / "s", port=port, host="127.0.0.1")
    timer = threading.Timer(0.3, server.start)
    timer.start()
    try:
        assert echo(node.with_(retries=5)) > 0  # the first attempt fails, a later one reaches it
    finally:
        timer.join()
        server.stop()


def test_a_port_that_never_answers_times_out():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        node = parse_node(f"PACS@127.0.0.1:{silent.getsockname()[1]}", acse_timeout=1)
        start = time.monotonic()
        with pytest.raises(NetworkTimeoutError, match="did not answer the association request within 1 s"):
            echo(node)
        assert time.monotonic() - start < 8


def test_a_node_that_stops_answering_requests_times_out():
    ae = AE("SLOW")
    ae.add_supported_context(Verification)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_ECHO, lambda event: time.sleep(2.5) or 0)]
    )
    try:
        node = parse_node(f"SLOW@127.0.0.1:{server.server_address[1]}", dimse_timeout=1)
        with pytest.raises(NetworkTimeoutError, match="C-ECHO: no answer from the node within 1 s"):
            echo(node)
    finally:
        server.shutdown()


# ---------------------------------------------------------------------------------------------- TLS
def test_dicom_over_tls(tmp_path, certificate, make_volume):
    cert, key = certificate
    server_ctx = tls_context(cert_file=cert, key_file=key, server=True)
    with StorageServer(tmp_path / "s", port=0, host="127.0.0.1", tls=server_ctx) as server:
        node = parse_node(f"OCTSCREEN@127.0.0.1:{server.port}", tls=tls_context(ca_file=cert), acse_timeout=3)
        assert echo(node) > 0
        f = _opt_file(make_volume, tmp_path / "send")
        assert all(r.ok for r in send_files(node, [f]))
        assert len(server.store.stored) == 1
        plain = node.with_(tls=None)
        with pytest.raises(NetworkError) as e:
            echo(plain)  # plain DICOM to a TLS port does not get through
        assert str(e.value).startswith(str(node))
        untrusted = node.with_(tls=tls_context())  # the system CAs do not trust a self-signed certificate
        with pytest.raises(NetworkError) as e:
            echo(untrusted)
        assert str(e.value).startswith(str(node)) and "TLS" in str(e.value)


def test_c_move_from_a_tls_node_without_our_certificate_is_refused_before_anything_is_sent(tmp_path, certificate):
    """Without a TLS context for our C-MOVE storage SCP it would listen in the clear, and a TLS node
    would send the study there unencrypted (the TLS round trip: tests/test_net_orthanc.py)."""
    from core.net import retrieve

    cert, _key = certificate
    node = parse_node(f"PACS@127.0.0.1:{free_port()}", tls=tls_context(ca_file=cert), acse_timeout=1)
    with pytest.raises(ValueError, match="C-MOVE from a TLS node needs our certificate and its key"):
        retrieve(node, "1.2.3", tmp_path / "out", move=True)
    assert not (tmp_path / "out").exists()  # refused before the folder was made


def test_opt_writer_output_is_what_the_scp_accepts(scp, make_volume, tmp_path):
    """build_opt_dataset is the OPT we write; the SCP's checks accept it unchanged (no false refusals)."""
    ds = build_opt_dataset(make_volume(n=2, h=64, w=64))
    assert ds.SOPClassUID == OPT_SOP_CLASS
    assert _send_datasets(scp, [ds]) == [0] and scp.store.rejected == []


def test_conformance_statement_lists_every_sop_class_we_negotiate():
    from pynetdicom.sop_class import (
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    )

    from core.net.sop import STORAGE_CLASSES

    text = (Path(__file__).resolve().parents[1] / "docs" / "CONFORMANCE.md").read_text(encoding="utf-8")
    models = [
        Verification,
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    ]
    missing = [
        f"{uid} {STORAGE_CLASSES.get(uid, '')}" for uid in [*models, *STORAGE_CLASSES] if f"| {uid} |" not in text
    ]
    assert not missing, f"docs/CONFORMANCE.md does not list: {missing}"


def test_send_files_says_how_far_it_got_when_the_node_aborts(tmp_path, make_volume):
    from core.errors import AssociationAbortedError

    calls = []

    def store_then_abort(event):
        calls.append(1)
        if len(calls) == 2:
            event.assoc.abort()
        return 0x0000

    ae = AE("FLAKY")
    ae.add_supported_context(OPT_SOP_CLASS)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, store_then_abort)])
    try:
        files = [_opt_file(make_volume, tmp_path / "send", seed=i) for i in range(3)]
        node = parse_node(f"FLAKY@127.0.0.1:{server.server_address[1]}", dimse_timeout=5)
        with pytest.raises(AssociationAbortedError, match=r"1 of 3 file\(s\) had been sent"):
            send_files(node, files)
    finally:
        server.shutdown()


def test_listen_cli_refuses_a_port_in_use(tmp_path, capsys):
    from app.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["listen", "--port", str(port), "--host", "127.0.0.1", "--out", str(tmp_path / "s")]) == 2
    assert f"cannot listen on port {port}" in capsys.readouterr().err
