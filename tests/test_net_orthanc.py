"""DICOM networking against a real Orthanc PACS (started by tests/net_fixtures.py on loopback):
store a synthetic exam (C-STORE SCU), find it (C-FIND at patient, study and series level), retrieve
it (C-GET and C-MOVE to our own storage SCP), screen it, send the report (Encapsulated PDF), the
result (Comprehensive SR) and CAM overlays (Secondary Capture) back and read them back over Orthanc's
REST API (their references to the OPT instances, the SR's content tree); a device push
into ``octscreen listen --screen``; and the bad cases: a wrong AE title, an unknown calling AE, a
refused port, Orthanc killed mid-transfer, non-OCT and corrupt instances in a study."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from app.cli import main
from core.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    Cancelled,
    NetworkError,
    NodeUnreachableError,
    NoPixelDataError,
    RemoteFailureError,
    RetrieveIncompleteError,
)
from core.io import open_path, write_opt
from core.io.writer import build_opt_dataset, new_file_meta
from core.net import echo, find_patients, find_series, find_studies, parse_node, retrieve, send_files
from core.synthetic import simulate_patient, simulate_volume
from core.volume import PatientInfo, StudyInfo
from tests.net_fixtures import free_port, start_orthanc

ROOT = Path(__file__).resolve().parents[1]
OUR_AET = "OCTSCREEN"
LISTEN_AET = "OCTLISTEN"


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    """Our C-MOVE destination port and our `octscreen listen` port (Orthanc knows both)."""
    return {"move": free_port(), "listen": free_port()}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, ports):
    server = start_orthanc(
        tmp_path_factory.mktemp("orthanc"),
        {"octscreen": (OUR_AET, ports["move"]), "listener": (LISTEN_AET, ports["listen"])},
    )
    yield server
    server.stop()


def _store_exam(orthanc, folder: Path, index: int, seed: int) -> SimpleNamespace:
    """Both eyes of synthetic patient ``index`` as OPT files, stored in Orthanc with send_files."""
    folder.mkdir(parents=True, exist_ok=True)
    vols = simulate_patient(index, seed=seed, n_bscans=8, height=128, width=160)
    files = [write_opt(v, folder / f"{v.laterality.value}.dcm") for v in vols]
    sent = send_files(orthanc.node(), files)
    assert [r.ok for r in sent] == [True, True], [r.error for r in sent]
    sop_uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    return SimpleNamespace(
        volumes=vols,
        files=files,
        sop_uids=sop_uids,
        study_uid=vols[0].study.study_uid,
        patient_id=vols[0].patient.patient_id,
        study_date=vols[0].study.study_date,
    )


@pytest.fixture(scope="module")
def exam(orthanc, tmp_path_factory):
    return _store_exam(orthanc, tmp_path_factory.mktemp("exam"), index=1, seed=2026)


def _bscans_by_eye(folder: Path) -> dict[str, np.ndarray]:
    return {v.laterality.value: v.bscans for v in open_path(folder)}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------ store / find
def test_send_stores_the_exam_in_orthanc_pixel_for_pixel(orthanc, exam, tmp_path):
    for uid, vol in zip(exam.sop_uids, exam.volumes):
        ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(uid)))
        assert ds.Modality == "OPT" and ds.StudyInstanceUID == exam.study_uid
        assert np.array_equal(ds.pixel_array, vol.bscans)
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    results = send_files(orthanc.node(), [junk, exam.files[0]])
    assert not results[0].ok and "notes.txt" in results[0].error and "not a readable DICOM file" in results[0].error
    assert results[1].ok and results[1].status == 0


def test_echo_and_the_cli_echo(orthanc, capsys):
    assert echo(orthanc.node()) > 0
    assert main(["pacs", "echo", orthanc.node_text]) == 0
    assert f"{orthanc.node_text}: C-ECHO answered" in capsys.readouterr().out


def test_find_at_patient_study_and_series_level(orthanc, exam, capsys):
    node = orthanc.node()
    (study,) = find_studies(node, patient_id=exam.patient_id)
    assert study.study_uid == exam.study_uid and "OPT" in study.modalities
    assert study.study_date == exam.study_date and study.patient_name == exam.volumes[0].patient.name
    d = exam.study_date
    assert [s.study_uid for s in find_studies(node, modality="OPT", date=f"{d}-{d}", patient_id=exam.patient_id)] == [
        exam.study_uid
    ]
    assert find_studies(node, patient_id=exam.patient_id, date="19000101-19001231") == []
    assert exam.study_uid in [s.study_uid for s in find_studies(node, patient_name="SYNTH*")]
    series = find_series(node, exam.study_uid, modality="OPT")
    assert sorted(s.laterality for s in series) == ["L", "R"] and all(s.n_instances == 1 for s in series)
    (patient,) = find_patients(node, patient_id=exam.patient_id)
    assert patient.n_studies == 1

    args = ["pacs", "find", orthanc.node_text, "--patient-id", exam.patient_id, "--modality", "OPT", "--date", f"{d}-"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].split("\t")[:3] == [exam.study_uid, d, exam.patient_id]


# -------------------------------------------------------------------------------------- retrieve
def test_cget_retrieves_the_exam_into_the_study_series_layout(orthanc, exam, tmp_path):
    out = tmp_path / "get"
    seen: list[int] = []
    result = retrieve(orthanc.node(), exam.study_uid, out, progress=lambda done, total, msg: seen.append(done))
    assert result.problems == [] and result.method == "C-GET"
    assert seen[-1] == len(exam.volumes) and seen == sorted(seen)  # one count per instance kept, not one more
    expected = sorted(
        out / exam.study_uid / v.study.series_uid / f"{uid}.dcm" for v, uid in zip(exam.volumes, exam.sop_uids)
    )
    assert sorted(result.files) == expected == _files(out)  # nothing else, no staging folder left
    got = _bscans_by_eye(out)
    for v in exam.volumes:
        assert np.array_equal(got[v.laterality.value], v.bscans)


def test_cmove_to_our_own_scp_and_a_second_retrieve_adds_nothing(orthanc, exam, ports, tmp_path):
    out = tmp_path / "move"
    node = orthanc.node()
    result = retrieve(node, exam.study_uid, out, move=True, move_port=ports["move"], move_host="127.0.0.1")
    assert result.problems == [] and result.method == "C-MOVE" and len(result.files) == 2
    assert _files(out) == sorted(result.files)
    for v in exam.volumes:
        assert np.array_equal(_bscans_by_eye(out)[v.laterality.value], v.bscans)
    before = {p: p.stat().st_mtime_ns for p in _files(out)}
    again = retrieve(node, exam.study_uid, out, move=True, move_port=ports["move"], move_host="127.0.0.1")
    assert again.already_there == 2 and {p: p.stat().st_mtime_ns for p in _files(out)} == before


def test_cmove_from_a_tls_pacs_comes_back_over_tls(tmp_path, certificate, capsys):
    """A PACS that talks DICOM TLS only (and sends C-MOVE over TLS): our storage SCP takes the study
    over TLS with our certificate; without it the C-MOVE is refused before anything is asked."""
    from core.net import tls_context

    cert, key = certificate
    move_port = free_port()
    server = start_orthanc(tmp_path / "orthanc", {"octscreen": (OUR_AET, move_port)}, tls=(cert, key))
    try:
        node = server.node(tls=tls_context(ca_file=cert, cert_file=cert, key_file=key))
        with pytest.raises(NetworkError):  # plain DICOM does not get in
            echo(server.node(connect_timeout=3.0, acse_timeout=3.0))
        vols = simulate_patient(7, seed=3, n_bscans=6, height=96, width=128)
        files = [write_opt(v, tmp_path / f"{v.laterality.value}.dcm") for v in vols]
        assert [r.ok for r in send_files(node, files)] == [True, True]
        study = vols[0].study.study_uid
        where = {"move": True, "move_port": move_port, "move_host": "127.0.0.1"}
        with pytest.raises(ValueError, match="needs our certificate and its key"):
            retrieve(node, study, tmp_path / "refused", **where)
        assert not (tmp_path / "refused").exists()
        ours = tls_context(server=True, ca_file=cert, cert_file=cert, key_file=key)
        result = retrieve(node, study, tmp_path / "out", move_tls=ours, **where)
        assert result.method == "C-MOVE" and result.problems == [] and len(result.files) == 2
        for v in vols:
            assert np.array_equal(_bscans_by_eye(tmp_path / "out")[v.laterality.value], v.bscans)
        # the command line: --move with --tls serves our storage SCP with --tls-cert / --tls-key
        tls_args = ["--tls", "--tls-ca", str(cert), "--tls-cert", str(cert), "--tls-key", str(key)]
        get = ["pacs", "get", server.node_text, "--study", study, "--aet", OUR_AET, *tls_args]
        move = ["--move", "--port", str(move_port), "--listen-host", "127.0.0.1"]
        assert main([*get, "--out", str(tmp_path / "cli"), *move]) == 0
        assert len(_files(tmp_path / "cli")) == 2
        capsys.readouterr()
        assert main([*get[:-4], "--out", str(tmp_path / "cli2"), *move]) == 2  # no certificate of ours
        assert "needs our certificate and its key" in capsys.readouterr().err
        # the desktop app: a node with TLS, our certificate and a C-MOVE port
        from app.pacs_dialog import RetrievePlan, retrieve_plan
        from app.settings import PacsNode

        gui_node = PacsNode(
            "TLS PACS", aet=server.aet, host="127.0.0.1", port=server.dicom_port, our_aet=OUR_AET,
            move_port=move_port, tls=True, tls_ca=str(cert), tls_cert=str(cert), tls_key=str(key),
        )  # fmt: skip
        outcome = retrieve_plan(gui_node, [RetrievePlan(study, label="P7")], tmp_path / "gui")
        assert outcome.n_new == 2 and len(_files(tmp_path / "gui")) == 2
    finally:
        server.stop()


def test_cli_get_with_cget_and_with_move(orthanc, exam, ports, tmp_path, capsys):
    for extra, name in (([], "get"), (["--move", "--port", str(ports["move"]), "--listen-host", "127.0.0.1"], "mv")):
        out = tmp_path / name
        assert main(["pacs", "get", orthanc.node_text, "--study", exam.study_uid, "--out", str(out), *extra]) == 0
        assert f"retrieved 2 instance(s) of study {exam.study_uid}" in capsys.readouterr().out
        assert len(_files(out)) == 2


@pytest.mark.parametrize("move", [False, True], ids=["C-GET", "C-MOVE"])
def test_cancel_keeps_nothing(orthanc, exam, ports, tmp_path, move):
    out = tmp_path / "cancelled"
    with pytest.raises(Cancelled):
        retrieve(
            orthanc.node(),
            exam.study_uid,
            out,
            move=move,
            move_port=ports["move"],
            move_host="127.0.0.1",
            cancel=lambda: True,
        )
    assert list(out.iterdir()) == []
    assert echo(orthanc.node()) > 0  # the node is fine after our abort


def test_retrieve_of_an_unknown_study_says_so(orthanc, tmp_path):
    uid = generate_uid()
    with pytest.raises(RemoteFailureError, match=f"C-GET of study {uid}: .*the node holds no such study"):
        retrieve(orthanc.node(), uid, tmp_path / "none")
    assert _files(tmp_path / "none") == []


# --------------------------------------------------------------------------- screen, report back
def test_screen_the_retrieved_exam_and_send_report_and_overlays_back(orthanc, tmp_path):
    from core.dicom_export import overlays_to_secondary_capture
    from core.inference import Screener, default_card_path
    from core.screening import screen_paths

    exam = _store_exam(orthanc, tmp_path / "exam", index=2, seed=7)
    got = tmp_path / "got"
    retrieve(orthanc.node(), exam.study_uid, got)
    reports = tmp_path / "reports"
    assert main(["screen", str(got), "--out", str(reports), "--dicom"]) == 0
    eyes = json.loads((reports / "results.json").read_text())["eyes"]
    assert sorted(e["eye"] for e in eyes) == ["OD", "OS"] and {e["patient_id"] for e in eyes} == {exam.patient_id}
    (pdf,) = reports.glob("*.pdf")
    dcm, sr = pdf.with_suffix(".dcm"), pdf.with_name(pdf.stem + "_sr.dcm")
    assert sorted(reports.glob("*.dcm")) == sorted([dcm, sr]) and {e["sr_file"] for e in eyes} == {sr.name}

    (screened,) = screen_paths([got], Screener(default_card_path()))
    sc_dir = tmp_path / "overlays"
    overlays = overlays_to_secondary_capture(screened.eyes[0], None, sc_dir)
    assert overlays

    assert main(["pacs", "send", orthanc.node_text, str(dcm), str(sr), str(sc_dir)]) == 0

    report_uid = str(pydicom.dcmread(dcm, stop_before_pixels=True).SOPInstanceUID)
    back = pydicom.dcmread(io.BytesIO(orthanc.instance_file(report_uid)))
    assert back.StudyInstanceUID == exam.study_uid and back.Modality == "DOC"
    assert bytes(back.EncapsulatedDocument)[: int(back.EncapsulatedDocumentLength)] == pdf.read_bytes()
    # what goes out references what came in: the OPT instances Orthanc holds
    assert sorted(str(i.ReferencedSOPInstanceUID) for i in back.SourceInstanceSequence) == sorted(exam.sop_uids)
    for sc in overlays:
        local = pydicom.dcmread(sc)
        remote = pydicom.dcmread(io.BytesIO(orthanc.instance_file(str(local.SOPInstanceUID))))
        assert remote.StudyInstanceUID == exam.study_uid and remote.PixelData == local.PixelData
        assert remote.SourceImageSequence[0].ReferencedSOPInstanceUID in exam.sop_uids
    modalities = {s.modality for s in find_series(orthanc.node(), exam.study_uid)}
    assert modalities == {"OPT", "DOC", "OT", "SR"}
    _check_sr_in_orthanc(orthanc, sr, exam, eyes)


def _check_sr_in_orthanc(orthanc, sr: Path, exam: SimpleNamespace, rows: list[dict]) -> None:
    """The SR read back over Orthanc's REST API: the data set as we sent it (the file meta is the
    receiver's), Orthanc's own parse of its content tree, and per eye the decision, tier and evidence
    frames of results.json."""
    from core.dicom_export import class_code
    from tests.test_dicom_sr import sr_eyes

    local = pydicom.dcmread(sr)
    sop_uid = str(local.SOPInstanceUID)
    remote = pydicom.dcmread(io.BytesIO(orthanc.instance_file(sop_uid)))
    assert remote == local and remote.file_meta.MediaStorageSOPClassUID == local.SOPClassUID
    tags = orthanc.rest_json(f"/instances/{orthanc.lookup(sop_uid)}/simplified-tags")
    assert tags["Modality"] == "SR" and tags["StudyInstanceUID"] == exam.study_uid
    findings = [c for c in tags["ContentSequence"] if c["ConceptNameCodeSequence"][0]["CodeValue"] == "121070"]
    assert len(findings) == 2
    eyes = sr_eyes(remote)
    by_uid = dict(zip(exam.sop_uids, (v.laterality.value for v in exam.volumes)))
    for row in rows:
        got = eyes["R" if row["eye"] == "OD" else "L"]
        assert got["tier"] == f"tier-{row['urgency']}" and got["tier_name"] == row["tier"]
        code = class_code(row["label"])
        assert got["finding"] == (code.value, code.scheme_designator)
        assert got["scores"] and got["n_bscans"] == row["n_bscans"]
        assert [frame for _, frame in got["evidence"]] == row["evidence_bscans"]  # frames = 1-based B-scans
        assert {by_uid[uid] for uid, _ in got["evidence"]} == {row["eye"]}  # the eye's own OPT instance


def test_listen_receives_a_push_and_screens_each_completed_series(orthanc, ports, tmp_path):
    exam = _store_exam(orthanc, tmp_path / "exam", index=3, seed=11)
    out = tmp_path / "store"
    cmd = [sys.executable, "-m", "app.cli", "listen", "--aet", LISTEN_AET, "--port", str(ports["listen"])]
    cmd += ["--host", "127.0.0.1", "--out", str(out), "--screen"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 40
        while not any(ln.startswith("listening as") for ln in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        study_id = orthanc.lookup(exam.study_uid)
        orthanc.rest("/modalities/listener/store", json.dumps({"Resources": [study_id], "Synchronous": True}))
        results = out / "reports" / exam.study_uid / "results.json"
        while not results.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(30)
        reader.join(5)
    text = "".join(lines)
    assert rc == 0, text
    eyes = json.loads(results.read_text())["eyes"]
    assert sorted(e["eye"] for e in eyes) == ["OD", "OS"], text
    assert len(list((out / "reports" / exam.study_uid).glob("*.pdf"))) == 1
    assert text.count("stored ") == 2 and f"screening study {exam.study_uid}" in text
    stored = sorted(p.name for p in (out / exam.study_uid).rglob("*.dcm"))
    assert stored == sorted(f"{u}.dcm" for u in exam.sop_uids)


# -------------------------------------------------------------------------------------- bad cases
def test_wrong_ae_title_and_unknown_calling_ae(orthanc, capsys):
    port = orthanc.dicom_port
    with pytest.raises(AssociationRejectedError) as e:
        echo(parse_node(f"NOTORTHANC@127.0.0.1:{port}"))
    msg = str(e.value)
    assert msg.startswith(f"NOTORTHANC@127.0.0.1:{port}: ") and "does not answer to the AE title 'NOTORTHANC'" in msg
    assert main(["pacs", "echo", f"NOTORTHANC@127.0.0.1:{port}"]) == 2
    assert "rejected the association" in capsys.readouterr().err
    with pytest.raises(AssociationAbortedError, match="knows our AE title 'STRANGER'"):
        find_studies(orthanc.node(our_aet="STRANGER"))


def test_refused_port(exam, tmp_path, capsys):
    node = parse_node(f"ORTHANC@127.0.0.1:{free_port()}")
    for call in (
        lambda: echo(node),
        lambda: retrieve(node, exam.study_uid, tmp_path / "r"),
        lambda: send_files(node, exam.files),
    ):
        with pytest.raises(NodeUnreachableError, match=f"connection refused: nothing listens on port {node.port}"):
            call()
    assert _files(tmp_path / "r") == []
    assert (
        main(["pacs", "get", str(node), "--study", exam.study_uid, "--out", str(tmp_path / "c"), "--retries", "0"]) == 2
    )
    assert "connection refused" in capsys.readouterr().err


@pytest.mark.parametrize("move", [False, True], ids=["C-GET", "C-MOVE"])
def test_orthanc_killed_mid_transfer_keeps_nothing(tmp_path, move):
    port = free_port()
    victim = start_orthanc(tmp_path / "orthanc", {"octscreen": (OUR_AET, port)})
    try:
        exam = _store_exam(victim, tmp_path / "exam", index=4, seed=3)

        def kill_after_first(done: int, total: int, _msg: str) -> None:  # the first instance is in
            victim.kill()

        out = tmp_path / "out"
        with pytest.raises(RetrieveIncompleteError) as e:
            retrieve(
                victim.node(),
                exam.study_uid,
                out,
                move=move,
                move_port=port,
                move_host="127.0.0.1",
                progress=kill_after_first,
            )
        assert not victim.alive
        msg = str(e.value)
        assert msg.startswith(victim.node_text) and "interrupted before the node reported it complete" in msg
        assert re.search(r"\(1( of 2)? instance\(s\) had arrived\)", msg) and "nothing of it was kept" in msg
        assert list(out.iterdir()) == []  # no instance, no staging folder
    finally:
        victim.stop()


def _image(sop_class: str, modality: str, study: StudyInfo, patient_id: str) -> Dataset:
    """A minimal 8 x 8 greyscale image instance of ``sop_class`` in ``study`` (a new series)."""
    ds = Dataset()
    ds.file_meta = new_file_meta(sop_class)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = patient_id, study.study_uid, generate_uid()
    ds.Modality = modality
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.arange(64, dtype=np.uint8).tobytes()
    return ds


def test_non_oct_and_corrupt_instances_in_a_study(orthanc, tmp_path, capsys):
    """An OCT study as a device leaves it: a good OPT, a header-only OPT (corrupt: refused, named),
    a fundus photo (not OCT: kept, not screened)."""
    patient = PatientInfo(patient_id="MIXED-1", name="MIXED^STUDY")
    study = StudyInfo(study_uid=generate_uid(), study_date="20250102")
    good = simulate_volume("normal", n_bscans=4, height=64, width=64, seed=5, patient=patient, study=study)
    other = simulate_volume(
        "drusen", n_bscans=4, height=64, width=64, seed=6, laterality="OS", patient=patient, study=study
    )
    header_only = build_opt_dataset(other)
    del header_only.PixelData
    photo = _image("1.2.840.10008.5.1.4.1.1.77.1.5.1", "OP", study, patient.patient_id)
    files = [write_opt(good, tmp_path / "good.dcm"), tmp_path / "header_only.dcm", tmp_path / "photo.dcm"]
    header_only.save_as(files[1], enforce_file_format=True)
    photo.save_as(files[2], enforce_file_format=True)
    assert all(r.ok for r in send_files(orthanc.node(), files))

    out = tmp_path / "got"
    result = retrieve(orthanc.node(), study.study_uid, out)
    good_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
    assert sorted(p.name for p in result.files) == sorted([f"{good_uid}.dcm", f"{photo.SOPInstanceUID}.dcm"])
    assert _files(out) == sorted(result.files)
    (refused,) = result.rejected
    assert isinstance(refused, NoPixelDataError)
    assert str(refused).startswith(f"{orthanc.node_text}: instance {header_only.SOPInstanceUID} refused")
    errors: list = []
    (volume,) = open_path(out, errors=errors)  # the photo is kept but is no OCT volume
    assert volume.n_bscans == 4 and [type(e).__name__ for e in errors] == ["NotOctError"]
    assert main(["pacs", "get", orthanc.node_text, "--study", study.study_uid, "--out", str(tmp_path / "cli")]) == 1
    assert "without pixel data" in capsys.readouterr().err


def test_a_study_with_a_sop_class_we_do_not_accept(orthanc, tmp_path):
    """A CT in the study: we never negotiate CT, so the node cannot send it; Orthanc then fails the
    whole C-GET. The error says so and keeps nothing; the OCT series alone can still be retrieved."""
    patient = PatientInfo(patient_id="MIXED-2", name="MIXED^CT")
    study = StudyInfo(study_uid=generate_uid(), study_date="20250103")
    good = simulate_volume("normal", n_bscans=4, height=64, width=64, seed=8, patient=patient, study=study)
    ct = _image(CTImageStorage, "CT", study, patient.patient_id)
    files = [write_opt(good, tmp_path / "good.dcm"), tmp_path / "ct.dcm"]
    ct.save_as(files[1], enforce_file_format=True)
    assert all(r.ok for r in send_files(orthanc.node(), files))
    out = tmp_path / "got"
    try:
        result = retrieve(orthanc.node(), study.study_uid, out)
    except RemoteFailureError as e:  # what Orthanc 1.10 does
        assert "SOP class OCT Screen does not accept" in str(e) and "nothing was kept" in str(e)
        assert _files(out) == []
    else:  # what a node that skips the CT does
        assert len(result.files) == 1 and result.not_sent == 1
    (series,) = find_series(orthanc.node(), study.study_uid, modality="OPT")
    alone = retrieve(orthanc.node(), study.study_uid, tmp_path / "alone", series_uid=series.series_uid)
    assert len(alone.files) == 1 and alone.problems == []
