"""DICOMweb against a real Orthanc with its DICOMweb plugin (tests/net_fixtures.py, on loopback):
STOW-RS store (``core.net.web.send_files``, ``octscreen pacs send URL``), QIDO-RS queries
(``find_studies`` / ``find_series`` / ``find_patients``, ``pacs find URL``, ``pacs echo URL``), WADO-RS
retrieve (``retrieve``, ``pacs get URL``: all or nothing, every instance checked), and the round trip:
retrieve, screen, send the report and the SR back, read them back over WADO-RS. Bad cases: a URL
without a DICOMweb service, a refused port, an unknown study, Cancel, a study holding a SOP class we
do not accept."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from app.cli import main
from core.errors import Cancelled, NodeUnreachableError, RemoteFailureError
from core.io import open_path, write_opt
from core.net.web import WebNode, echo, find_patients, find_series, find_studies, parse_web_node, retrieve, send_files
from core.synthetic import simulate_patient
from tests.fixtures.oct_io import add_pixels, base_dataset, save
from tests.net_fixtures import free_port, start_orthanc


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = start_orthanc(tmp_path_factory.mktemp("orthanc-web"), dicomweb=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web(orthanc) -> WebNode:
    return parse_web_node(orthanc.dicomweb_url, timeout=20.0)


def _store_exam(web: WebNode, folder: Path, index: int, seed: int) -> SimpleNamespace:
    """Both eyes of synthetic patient ``index`` as OPT files, stored with STOW-RS."""
    folder.mkdir(parents=True, exist_ok=True)
    vols = simulate_patient(index, seed=seed, n_bscans=6, height=96, width=128)
    files = [write_opt(v, folder / f"{v.laterality.value}.dcm") for v in vols]
    sent = send_files(web, files)
    assert [r.ok for r in sent] == [True, True], [r.error for r in sent]
    return SimpleNamespace(
        volumes=vols,
        files=files,
        sop_uids=[str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files],
        study_uid=vols[0].study.study_uid,
        patient_id=vols[0].patient.patient_id,
        study_date=vols[0].study.study_date,
    )


@pytest.fixture(scope="module")
def exam(web, tmp_path_factory):
    return _store_exam(web, tmp_path_factory.mktemp("web-exam"), index=21, seed=5)


def test_stow_stores_the_exam_pixel_for_pixel(orthanc, web, exam, tmp_path, capsys):
    for uid, vol in zip(exam.sop_uids, exam.volumes):
        ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(uid)))
        assert ds.StudyInstanceUID == exam.study_uid and np.array_equal(ds.pixel_array, vol.bscans)
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    results = send_files(web, [junk, exam.files[0]])
    assert not results[0].ok and "not a readable DICOM file" in results[0].error
    assert results[1].ok  # the same instance again: stored (Orthanc keeps the first copy)
    assert main(["pacs", "send", orthanc.dicomweb_url, str(exam.files[1])]) == 0
    assert f"1 of 1 file(s) stored on {orthanc.dicomweb_url}" in capsys.readouterr().err


def test_echo_and_the_errors_that_name_the_url(orthanc, web, capsys):
    assert echo(web) > 0
    assert main(["pacs", "echo", orthanc.dicomweb_url]) == 0
    assert f"{orthanc.dicomweb_url}: QIDO-RS answered" in capsys.readouterr().out
    wrong = f"http://127.0.0.1:{orthanc.http_port}/not-dicomweb"
    assert main(["pacs", "echo", wrong]) == 2
    assert "no DICOMweb service at this URL" in capsys.readouterr().err
    refused = f"http://127.0.0.1:{free_port()}/dicom-web"
    assert main(["pacs", "echo", refused, "--retries", "0"]) == 2
    assert f"{refused}: QIDO-RS: cannot connect (connection refused)" in capsys.readouterr().err
    with pytest.raises(NodeUnreachableError, match=r"gave up after 2 attempts"):
        echo(parse_web_node(refused, retries=1, retry_delay=0.1))
    secret = parse_web_node(f"http://user:s3cret@127.0.0.1:{orthanc.http_port}/dicom-web")
    assert "s3cret" not in str(secret) and "user" not in str(secret)
    for bad in ("ftp://x/dicom-web", "http:///dicom-web", "http://h:99999/x", "http://h/x?q=1"):
        with pytest.raises(ValueError):
            parse_web_node(bad)


def test_qido_finds_studies_series_and_patients(orthanc, web, exam, capsys):
    (study,) = find_studies(web, patient_id=exam.patient_id)
    assert study.study_uid == exam.study_uid and "OPT" in study.modalities
    assert study.study_date == exam.study_date and study.n_instances == 2
    day = exam.study_date
    assert [s.study_uid for s in find_studies(web, patient_id=exam.patient_id, date=f"{day}-{day}")] == [exam.study_uid]
    assert find_studies(web, patient_id=exam.patient_id, date="19000101-19001231") == []
    assert exam.study_uid in [s.study_uid for s in find_studies(web, patient_name="SYNTH*", modality="OPT")]
    series = find_series(web, exam.study_uid, modality="OPT")
    assert sorted(s.laterality for s in series) == ["L", "R"] and all(s.n_instances == 1 for s in series)
    (patient,) = find_patients(web, patient_id=exam.patient_id)
    assert patient.n_studies == 1 and patient.patient_name == exam.volumes[0].patient.name
    assert main(["pacs", "find", orthanc.dicomweb_url, "--patient-id", exam.patient_id]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out] == [exam.study_uid]
    assert main(["pacs", "find", orthanc.dicomweb_url, "--level", "series", "--study", exam.study_uid]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_wado_retrieves_the_exam_all_or_nothing(orthanc, web, exam, tmp_path, capsys):
    out = tmp_path / "got"
    result = retrieve(web, exam.study_uid, out)
    assert result.method == "WADO-RS" and not result.problems and len(result.files) == 2
    assert all(f.relative_to(out).parts[0] == exam.study_uid for f in result.files)
    got = {v.laterality.value: v.bscans for v in open_path(out)}
    for v in exam.volumes:
        assert np.array_equal(got[v.laterality.value], v.bscans)
    again = retrieve(web, exam.study_uid, out)
    assert again.already_there == 2
    (od_series,) = [s.series_uid for s in find_series(web, exam.study_uid) if s.laterality == "R"]
    one = retrieve(web, exam.study_uid, tmp_path / "one", series_uid=od_series)
    assert len(one.files) == 1 and one.files[0].parent.name == od_series
    with pytest.raises(RemoteFailureError, match="holds no study 1.2.3.999"):
        retrieve(web, "1.2.3.999", tmp_path / "none")
    assert not any((tmp_path / "none").rglob("*.dcm"))
    with pytest.raises(Cancelled):
        retrieve(web, exam.study_uid, tmp_path / "cancel", cancel=lambda: True)
    assert not any((tmp_path / "cancel").iterdir())  # no staging folder, no instance
    cli = tmp_path / "cli"
    assert main(["pacs", "get", orthanc.dicomweb_url, "--study", exam.study_uid, "--out", str(cli)]) == 0
    assert "retrieved 2 instance(s)" in capsys.readouterr().out and len(list(cli.rglob("*.dcm"))) == 2
    cmd = ["pacs", "get", orthanc.dicomweb_url, "--study", exam.study_uid, "--out", str(cli), "--move"]
    assert main(cmd) == 2
    assert "--move (C-MOVE) needs a DICOM node" in capsys.readouterr().err


def test_wado_refuses_what_we_do_not_accept_and_keeps_the_rest(orthanc, web, tmp_path):
    ex = _store_exam(web, tmp_path / "exam", index=22, seed=6)
    ct = base_dataset(pydicom.uid.CTImageStorage, "CT")
    ct.StudyInstanceUID, ct.PatientID = ex.study_uid, ex.patient_id
    orthanc.rest("/instances", save(add_pixels(ct, np.zeros((16, 16), np.uint16)), tmp_path / "ct.dcm").read_bytes())
    result = retrieve(web, ex.study_uid, tmp_path / "got")
    assert len(result.files) == 2 and len(result.problems) == 1
    assert "CT Image Storage is not accepted" in result.problems[0]


def test_round_trip_screen_and_send_report_and_sr_back_over_dicomweb(orthanc, web, tmp_path):
    from dicomweb_client.api import DICOMwebClient

    from tests.test_dicom_sr import sr_eyes

    ex = _store_exam(web, tmp_path / "exam", index=23, seed=8)
    got = tmp_path / "got"
    retrieve(web, ex.study_uid, got)
    reports = tmp_path / "reports"
    assert main(["screen", str(got), "--out", str(reports), "--dicom"]) == 0
    rows = json.loads((reports / "results.json").read_text())["eyes"]
    (pdf,) = reports.glob("*.pdf")
    dcm, sr = pdf.with_suffix(".dcm"), pdf.with_name(pdf.stem + "_sr.dcm")
    assert main(["pacs", "send", orthanc.dicomweb_url, str(dcm), str(sr)]) == 0
    client = DICOMwebClient(orthanc.dicomweb_url)
    modalities = {s.modality for s in find_series(web, ex.study_uid)}
    assert modalities == {"OPT", "DOC", "SR"}
    local_sr = pydicom.dcmread(sr)
    back = client.retrieve_instance(ex.study_uid, str(local_sr.SeriesInstanceUID), str(local_sr.SOPInstanceUID))
    eyes = sr_eyes(back)
    for row in rows:
        got_eye = eyes["R" if row["eye"] == "OD" else "L"]
        assert got_eye["tier"] == f"tier-{row['urgency']}"
        assert [frame for _, frame in got_eye["evidence"]] == row["evidence_bscans"]
        assert {uid for uid, _ in got_eye["evidence"]} <= set(ex.sop_uids)
    local_pdf = pydicom.dcmread(dcm)
    doc = client.retrieve_instance(ex.study_uid, str(local_pdf.SeriesInstanceUID), str(local_pdf.SOPInstanceUID))
    assert bytes(doc.EncapsulatedDocument)[: int(doc.EncapsulatedDocumentLength)] == pdf.read_bytes()
    assert sorted(str(i.ReferencedSOPInstanceUID) for i in doc.SourceInstanceSequence) == sorted(ex.sop_uids)


def test_orthanc_killed_mid_wado_keeps_nothing(tmp_path):
    import dataclasses

    from core.errors import RetrieveIncompleteError
    from core.synthetic import simulate_volume

    server = start_orthanc(tmp_path / "orthanc", dicomweb=True)
    try:
        node = parse_web_node(server.dicomweb_url, timeout=10.0, retries=0)
        base = simulate_volume("normal", n_bscans=2, height=64, width=64, seed=1)
        rng = np.random.default_rng(0)
        files = []
        for k in range(6):  # six 8 MB instances of one study: more than the sockets buffer between us
            pixels = rng.integers(0, 256, (32, 512, 512), dtype=np.uint8)
            vol = dataclasses.replace(base, bscans=pixels, frame_labels=None)
            files.append(write_opt(vol, tmp_path / f"v{k}.dcm"))
        assert all(r.ok for r in send_files(node, files))

        def kill_after_first(done: int, _total: int, _msg: str) -> None:
            if done == 1:
                server.kill()

        out = tmp_path / "got"
        with pytest.raises(
            RetrieveIncompleteError,
            match=r"interrupted \([1-5] instance\(s\) had arrived, the service holds 6\).*nothing of it was kept",
        ):
            retrieve(node, base.study.study_uid, out, progress=kill_after_first)
        # nothing kept, no staging left: a multipart answer cut short ends like a whole one, so the count
        # QIDO-RS gave before the retrieve is what tells them apart
        assert not any(p.is_file() for p in out.rglob("*"))
    finally:
        server.stop()
