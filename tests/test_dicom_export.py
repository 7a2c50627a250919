"""DICOM export: Encapsulated PDF of the report and Secondary Capture overlays, read back with
pydicom and parsed by dcmtk's dcmdump."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

import core.dicom_export as dx
from core.cam import overlay
from core.dicom_export import overlays_to_secondary_capture, pdf_to_dicom
from core.errors import EmptyInputError, FileMissingError, UnsupportedFormatError
from core.modelcard import DEMO_WARNING
from core.report import ReportOptions, write_report
from core.results import Urgency
from core.volume import Laterality
from tests.conftest import run_tool
from tests.test_report import PATIENT, STUDY, make_card, make_exam, make_eye

pytestmark = pytest.mark.filterwarnings("error::UserWarning")  # pydicom warns on values that break their VR

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pdf")
    exam = make_exam(n=12, evidence=(5, 4, 6))
    return {
        "plain": write_report(folder / "plain.pdf", exam, make_card()),
        "anon": write_report(folder / "anon.pdf", exam, make_card(), ReportOptions(deidentify=True, report_id="X1")),
    }


def dcmdump(path: Path) -> str:
    res = run_tool(["dcmdump", "-q", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "E:" not in res.stderr and "W:" not in res.stderr, res.stderr
    return res.stdout


def test_encapsulated_pdf_round_trip(reports: dict[str, Path], tmp_path: Path) -> None:
    exam = make_exam(n=12, evidence=(5, 4, 6))
    out = pdf_to_dicom(reports["plain"], exam, tmp_path / "report.dcm")
    ds = pydicom.dcmread(out)
    pdf = reports["plain"].read_bytes()
    assert ds.SOPClassUID == ENCAPSULATED_PDF == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.Modality == "DOC" and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.BurnedInAnnotation == "YES" and ds.DocumentTitle == "OCT screening report"
    assert ds.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    assert "DEMO MODEL" in ds.SeriesDescription  # make_exam uses a demonstration model
    assert ds.EncapsulatedDocumentLength == len(pdf)
    assert bytes(ds.EncapsulatedDocument)[: len(pdf)] == pdf
    assert len(ds.EncapsulatedDocument) % 2 == 0
    # filed with the exam: same patient and study, new series and instance
    assert ds.PatientID == PATIENT.patient_id and str(ds.PatientName) == PATIENT.name
    assert ds.PatientBirthDate == PATIENT.birth_date and ds.PatientSex == "F"
    assert ds.StudyInstanceUID == STUDY.study_uid and ds.StudyDate == STUDY.study_date
    assert ds.AccessionNumber == STUDY.accession_number
    assert ds.SeriesInstanceUID not in (STUDY.series_uid, STUDY.study_uid)
    second = pydicom.dcmread(pdf_to_dicom(reports["plain"], exam, tmp_path / "again.dcm"))
    assert second.SOPInstanceUID != ds.SOPInstanceUID and second.SeriesInstanceUID != ds.SeriesInstanceUID
    dump = dcmdump(out)
    assert "EncapsulatedPDFStorage" in dump and "application/pdf" in dump
    assert "Zieli" in dump  # UTF-8 name survives (ISO_IR 192)


def test_odd_length_pdf_is_padded_but_length_kept(tmp_path: Path) -> None:
    pdf = tmp_path / "odd.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%%EOF\n")  # 15 bytes
    ds = pydicom.dcmread(pdf_to_dicom(pdf, make_exam(n=12, evidence=(5, 4, 6)), tmp_path / "o.dcm"))
    assert ds.EncapsulatedDocumentLength == 15
    assert bytes(ds.EncapsulatedDocument) == pdf.read_bytes() + b"\0"


def test_deidentified_export(reports: dict[str, Path], tmp_path: Path) -> None:
    exam = make_exam(n=12, evidence=(5, 4, 6))
    out = pdf_to_dicom(reports["anon"], exam, tmp_path / "anon.dcm", deidentify=True, pseudo_id="ANON-X1")
    ds = pydicom.dcmread(out)
    assert ds.PatientID == "ANON-X1" and str(ds.PatientName) == "" and ds.PatientBirthDate == ""
    assert ds.AccessionNumber == "" and ds.PatientIdentityRemoved == "YES"
    assert ds.StudyInstanceUID != STUDY.study_uid and pydicom.uid.UID(ds.StudyInstanceUID).is_valid
    raw = out.read_bytes()
    for secret in (PATIENT.patient_id, "Zieli", PATIENT.birth_date, STUDY.accession_number, STUDY.study_uid):
        assert secret.encode() not in raw, secret
    # without pseudo_id the report's own pseudonym (recorded in its PDF keywords) is used
    default = pydicom.dcmread(pdf_to_dicom(reports["anon"], exam, tmp_path / "c.dcm", deidentify=True))
    assert default.PatientID == "ANON-X1"
    # same pseudonym -> same de-identified study, so report and overlays stay together
    again = pydicom.dcmread(
        pdf_to_dicom(reports["anon"], exam, tmp_path / "b.dcm", deidentify=True, pseudo_id="ANON-X1")
    )
    assert again.StudyInstanceUID == ds.StudyInstanceUID
    dcmdump(out)


def test_clinical_model_export_has_no_demo_label(tmp_path: Path) -> None:
    exam = make_exam(n=12, evidence=(5, 4, 6), demo=False)
    pdf = write_report(tmp_path / "c.pdf", exam, make_card(demo=False))
    ds = pydicom.dcmread(pdf_to_dicom(pdf, exam, tmp_path / "c.dcm"))
    assert ds.SeriesDescription == "OCT screening report"
    sc = pydicom.dcmread(overlays_to_secondary_capture(exam.eyes[0], [5], tmp_path)[0])
    assert "DEMO" not in sc.SeriesDescription and "demonstration" not in sc.ImageComments


def test_deidentify_refuses_an_identified_pdf(reports: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a de-identified report"):
        pdf_to_dicom(reports["plain"], make_exam(n=12, evidence=(5, 4, 6)), tmp_path / "x.dcm", deidentify=True)
    assert list(tmp_path.iterdir()) == []


def test_bad_pdf_inputs_name_the_file(tmp_path: Path) -> None:
    exam = make_exam(n=12, evidence=(5, 4, 6))
    with pytest.raises(FileMissingError, match="nope.pdf"):
        pdf_to_dicom(tmp_path / "nope.pdf", exam, tmp_path / "x.dcm")
    (tmp_path / "empty.pdf").write_bytes(b"")
    with pytest.raises(EmptyInputError, match="empty.pdf"):
        pdf_to_dicom(tmp_path / "empty.pdf", exam, tmp_path / "x.dcm")
    (tmp_path / "word.pdf").write_bytes(b"PK\x03\x04 not a pdf")
    with pytest.raises(UnsupportedFormatError, match="word.pdf.*not a PDF"):
        pdf_to_dicom(tmp_path / "word.pdf", exam, tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()


def test_no_overwrite_and_atomic_write(reports: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    exam = make_exam(n=12, evidence=(5, 4, 6))
    out = tmp_path / "r.dcm"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="r.dcm"):
        pdf_to_dicom(reports["plain"], exam, out)
    assert out.read_bytes() == b"keep me"

    def broken_save(self, filename, **kwargs):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", broken_save)
    with pytest.raises(OSError, match="disk full"):
        pdf_to_dicom(reports["plain"], exam, out, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        pdf_to_dicom(reports["plain"], exam, tmp_path / "new.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.dcm"] and out.read_bytes() == b"keep me"
    monkeypatch.undo()
    pdf_to_dicom(reports["plain"], exam, out, overwrite=True)
    assert pydicom.dcmread(out).SOPClassUID == ENCAPSULATED_PDF


def test_secondary_capture_overlays(tmp_path: Path) -> None:
    eye = make_eye(Laterality.OD, "cnv", Urgency.URGENT, n=12, evidence=(5, 4, 6))
    paths = overlays_to_secondary_capture(eye, None, tmp_path)
    assert [p.name for p in paths] == ["overlay_OD_bscan006.dcm", "overlay_OD_bscan005.dcm", "overlay_OD_bscan007.dcm"]
    vr = eye.volume_result
    series = set()
    for number, (path, i) in enumerate(zip(paths, eye.evidence), start=1):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == SECONDARY_CAPTURE and ds.Modality == "OT" and ds.Laterality == "R"
        assert ds.PatientID == PATIENT.patient_id and ds.StudyInstanceUID == STUDY.study_uid
        assert ds.InstanceNumber == number and f"B-scan {i + 1} of 12" in ds.ImageComments
        cam = vr.cam(i, "cnv", size=vr.volume.bscans.shape[1:])  # scaled by p(cnv), as in the app and the report
        expected = overlay(vr.volume.bscans[i], cam, probability=vr.probability(i, "cnv"))
        assert ds.pixel_array.shape == expected.shape and np.array_equal(ds.pixel_array, expected)
        assert ds.PhotometricInterpretation == "RGB"
        assert DEMO_WARNING in ds.ImageComments and "DEMO MODEL" in ds.SeriesDescription
        series.add(ds.SeriesInstanceUID)
        assert "SecondaryCaptureImageStorage" in dcmdump(path)
    assert len(series) == 1
    with pytest.raises(FileExistsError, match="bscan006"):
        overlays_to_secondary_capture(eye, None, tmp_path)
    anon = overlays_to_secondary_capture(eye, [0], tmp_path / "anon", deidentify=True, pseudo_id="ANON-X1")
    ds = pydicom.dcmread(anon[0])
    assert ds.PatientID == "ANON-X1" and str(ds.PatientName) == "" and ds.StudyInstanceUID != STUDY.study_uid
    with pytest.raises(IndexError, match="outside the volume"):
        overlays_to_secondary_capture(eye, [12], tmp_path / "bad")


def test_report_and_overlays_share_the_deidentified_study(reports: dict[str, Path], tmp_path: Path) -> None:
    exam = make_exam(n=12, evidence=(5, 4, 6))
    doc = pydicom.dcmread(pdf_to_dicom(reports["anon"], exam, tmp_path / "r.dcm", deidentify=True, pseudo_id="ANON-X1"))
    sc = pydicom.dcmread(
        overlays_to_secondary_capture(exam.eyes[0], [5], tmp_path, deidentify=True, pseudo_id="ANON-X1")[0]
    )
    assert doc.StudyInstanceUID == sc.StudyInstanceUID != STUDY.study_uid
    assert dx.REPORT_SERIES_NUMBER != dx.OVERLAY_SERIES_NUMBER
    assert doc.SeriesNumber == dx.REPORT_SERIES_NUMBER and sc.SeriesNumber == dx.OVERLAY_SERIES_NUMBER
