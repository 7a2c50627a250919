"""What goes out references what came in, and the Structured Report of the result.

- the reader records the instance (and frame) of every B-scan (``core.io.dicom.SOURCE_INSTANCES``),
  through a multi-frame file's own frame order and a single-frame series;
- the Encapsulated PDF lists those instances in Source Instance Sequence, each Secondary Capture
  overlay names its B-scan in Source Image Sequence, all in the exam's study;
- the Comprehensive SR (template OCTSCREEN1, docs/CONFORMANCE.md) carries per eye the decision, the
  tier, the class scores, the evidence frames and the model, read back here from its content tree;
- nothing references the original instances when the input was not DICOM, or de-identified;
- ``octscreen screen --dicom`` writes the SR beside the DICOM report.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ComprehensiveSRStorage, generate_uid

from app.cli import main
from core.deid import Deidentifier
from core.dicom_export import (
    LOCAL_SCHEME,
    SR_TEMPLATE,
    class_code,
    overlays_to_secondary_capture,
    pdf_to_dicom,
    result_to_sr,
    source_references,
)
from core.io import open_path, write_opt
from core.io.dicom import SOURCE_INSTANCES
from core.io.writer import OPT_SOP_CLASS, build_opt_dataset
from core.report import ReportOptions, write_report
from core.results import ExamResult, Urgency
from core.volume import Laterality
from tests.fixtures.oct_io import single_frame_oct
from tests.test_report import PATIENT, STUDY, make_card, make_exam, make_eye

pytestmark = pytest.mark.filterwarnings("error::UserWarning")


# ------------------------------------------------------------------------------ reading the SR back
def _code(item: Dataset, keyword: str = "ConceptNameCodeSequence") -> tuple[str, str]:
    c = item[keyword][0]
    return str(c.CodeValue), str(c.CodingSchemeDesignator)


def _children(item: Dataset, concept: tuple[str, str]) -> list[Dataset]:
    return [c for c in item.get("ContentSequence", []) if _code(c) == concept]


def sr_eyes(ds: Dataset) -> dict[str, dict]:
    """The SR's per-eye content (template OCTSCREEN1) as plain values, keyed 'R' / 'L' / '' (unknown)."""
    eyes = {}
    for eye in _children(ds, ("121070", "DCM")):  # Findings
        (site,) = _children(eye, ("363698007", "SCT"))
        assert _code(site, "ConceptCodeSequence") == ("81745001", "SCT")  # Eye
        side = _children(site, ("272741003", "SCT"))
        side_code = _code(side[0], "ConceptCodeSequence")[0] if side else ""
        (finding,) = _children(eye, ("121071", "DCM"))
        (tier,) = _children(eye, ("121075", "DCM"))
        (review,) = _children(eye, ("review-advised", LOCAL_SCHEME))
        scores = {}
        for num in _children(eye, ("246262008", "SCT")):
            (cls,) = _children(num, ("121071", "DCM"))
            scores[str(cls.ConceptCodeSequence[0].CodeMeaning)] = float(num.MeasuredValueSequence[0].NumericValue)
        evidence = []
        for image in _children(finding, ("121080", "DCM")):
            assert image.RelationshipType == "INFERRED FROM" and image.ValueType == "IMAGE"
            ref = image.ReferencedSOPSequence[0]
            evidence.append((str(ref.ReferencedSOPInstanceUID), int(ref.get("ReferencedFrameNumber") or 0)))
        (n_frames,) = _children(eye, ("121140", "DCM"))
        (impression,) = _children(eye, ("121073", "DCM"))
        numbers = _children(eye, ("evidence-bscans", LOCAL_SCHEME))
        eyes[{"24028007": "R", "7771000": "L", "": ""}[side_code]] = {
            "finding": _code(finding, "ConceptCodeSequence"),
            "finding_meaning": str(finding.ConceptCodeSequence[0].CodeMeaning),
            "tier": str(tier.ConceptCodeSequence[0].CodeValue),
            "tier_name": str(tier.ConceptCodeSequence[0].CodeMeaning),
            "review": _code(review, "ConceptCodeSequence") == ("373066001", "SCT"),
            "scores": scores,
            "evidence": evidence,
            "evidence_text": str(numbers[0].TextValue) if numbers else "",
            "n_bscans": int(float(n_frames.MeasuredValueSequence[0].NumericValue)),
            "impression": str(impression.TextValue),
        }
    return eyes


def sr_model(ds: Dataset) -> dict[str, str]:
    """Algorithm name, version and weights sha256 from the SR's root."""
    out = {}
    for key, concept in (
        ("name", ("111001", "DCM")),
        ("version", ("111003", "DCM")),
        ("sha256", ("model-sha256", LOCAL_SCHEME)),
    ):
        found = _children(ds, concept)
        out[key] = str(found[0].TextValue) if found else ""
    return out


# -------------------------------------------------------------------------------------- fixtures
def dicom_exam(folder: Path, **kw) -> ExamResult:
    """``make_exam`` whose volumes went through a DICOM OPT file and ``open_path`` (so they know their
    instances), with the same pixels, patient and study."""
    exam = make_exam(**kw)
    folder.mkdir(parents=True, exist_ok=True)
    eyes = []
    for e in exam.eyes:
        vr = e.volume_result
        (vol,) = open_path(write_opt(vr.volume, folder / f"{e.eye.laterality.value}.dcm"))
        assert np.array_equal(vol.bscans, vr.volume.bscans)
        eyes.append(dataclasses.replace(e, volume_result=dataclasses.replace(vr, volume=vol)))
    return dataclasses.replace(exam, eyes=eyes)


@pytest.fixture
def pdf(tmp_path) -> Path:
    return write_report(tmp_path / "report.pdf", make_exam(n=12, evidence=(5, 4, 6)), make_card())


# --------------------------------------------------------------------------------- the reader side
def test_reader_records_instance_and_frame_in_the_files_own_frame_order(tmp_path):
    eye = make_eye(Laterality.OD, "cnv", Urgency.URGENT, n=5, evidence=(1,))
    ds = build_opt_dataset(eye.volume_result.volume)
    for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):  # stored last B-scan first
        frame.FrameContentSequence[0].InStackPositionNumber = 5 - k
    path = tmp_path / "reversed.dcm"
    ds.save_as(path, enforce_file_format=True)
    (vol,) = open_path(path)
    refs = source_references(vol)
    assert [r.frame for r in refs] == [5, 4, 3, 2, 1]
    assert {(r.sop_class, r.sop_instance) for r in refs} == {(OPT_SOP_CLASS, ds.SOPInstanceUID)}
    stored = ds.pixel_array
    for i, r in enumerate(refs):  # B-scan i is the frame its reference names
        assert np.array_equal(vol.bscans[i], stored[r.frame - 1])


def test_reader_records_each_instance_of_a_single_frame_series(tmp_path):
    series = generate_uid()
    rng = np.random.default_rng(0)
    files = [
        single_frame_oct(tmp_path / f"b{k}.dcm", rng.integers(0, 255, (32, 40), np.uint8), series_uid=series, z=-k)
        for k in range(3)
    ]
    (vol,) = open_path(tmp_path)
    refs = source_references(vol)
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in reversed(files)]  # ordered by position
    assert [r.sop_instance for r in refs] == uids and [r.frame for r in refs] == [0, 0, 0]


def test_no_references_from_images_or_after_deidentification(tmp_path):
    eye = make_eye(Laterality.OD, "cnv", Urgency.URGENT, n=4, evidence=(1,))
    assert source_references(eye.volume_result.volume) == []  # not read from DICOM
    (vol,) = open_path(write_opt(eye.volume_result.volume, tmp_path / "a.dcm"))
    assert len(source_references(vol)) == 4
    assert source_references(Deidentifier().volume(vol)) == []
    broken = dataclasses.replace(vol, extra={**vol.extra, SOURCE_INSTANCES: vol.extra[SOURCE_INSTANCES][:2]})
    assert source_references(broken) == []  # does not match the B-scans: nothing rather than wrong


# --------------------------------------------------------------------------- PDF and SC references
def test_pdf_lists_the_opt_instances_it_was_made_from(pdf, tmp_path):
    exam = dicom_exam(tmp_path / "in", n=12, evidence=(5, 4, 6))
    ds = pydicom.dcmread(pdf_to_dicom(pdf, exam, tmp_path / "r.dcm"))
    expected = [source_references(e.volume_result.volume)[0].sop_instance for e in exam.eyes]
    assert [str(i.ReferencedSOPInstanceUID) for i in ds.SourceInstanceSequence] == expected
    assert {str(i.ReferencedSOPClassUID) for i in ds.SourceInstanceSequence} == {OPT_SOP_CLASS}
    assert ds.StudyInstanceUID == STUDY.study_uid
    # not from DICOM: no sequence; de-identified: no sequence (the UIDs would point back)
    assert "SourceInstanceSequence" not in pydicom.dcmread(
        pdf_to_dicom(pdf, make_exam(n=12, evidence=(5,)), tmp_path / "x.dcm")
    )
    anon_pdf = write_report(tmp_path / "anon.pdf", exam, make_card(), ReportOptions(deidentify=True))
    anon = pdf_to_dicom(anon_pdf, exam, tmp_path / "anon.dcm", deidentify=True)
    assert "SourceInstanceSequence" not in pydicom.dcmread(anon)
    assert expected[0].encode() not in anon.read_bytes()


def test_overlays_name_their_b_scan_in_source_image_sequence(tmp_path):
    exam = dicom_exam(tmp_path / "in", n=12, evidence=(5, 4, 6))
    eye = exam.eyes[0]
    uid = source_references(eye.volume_result.volume)[0].sop_instance
    for path, i in zip(overlays_to_secondary_capture(eye, None, tmp_path / "sc"), eye.evidence):
        ds = pydicom.dcmread(path)
        (src,) = ds.SourceImageSequence
        assert src.ReferencedSOPInstanceUID == uid and src.ReferencedFrameNumber == i + 1
        assert src.ReferencedSOPClassUID == OPT_SOP_CLASS
        assert src.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        assert ds.StudyInstanceUID == STUDY.study_uid and "PatientOrientation" in ds
    plain = overlays_to_secondary_capture(make_exam(n=12, evidence=(5,)).eyes[0], [5], tmp_path / "plain")
    assert "SourceImageSequence" not in pydicom.dcmread(plain[0])
    anon = overlays_to_secondary_capture(eye, [5], tmp_path / "anon", deidentify=True, pseudo_id="ANON-1")
    assert "SourceImageSequence" not in pydicom.dcmread(anon[0]) and uid.encode() not in anon[0].read_bytes()


# ------------------------------------------------------------------------------------------- the SR
def test_sr_carries_decision_tier_scores_evidence_frames_and_model(tmp_path):
    exam = dicom_exam(tmp_path / "in", n=12, evidence=(5, 4, 6))
    card = dataclasses.replace(make_card(), weights_sha256="ab" * 32)
    ds = pydicom.dcmread(result_to_sr(exam, tmp_path / "sr.dcm", card=card))
    assert ds.SOPClassUID == ComprehensiveSRStorage and ds.Modality == "SR"
    assert ds.StudyInstanceUID == STUDY.study_uid and ds.PatientID == PATIENT.patient_id
    assert ds.ValueType == "CONTAINER" and _code(ds) == ("18748-4", "LN")
    assert (ds.ContentTemplateSequence[0].MappingResource, ds.ContentTemplateSequence[0].TemplateIdentifier) == (
        SR_TEMPLATE
    )
    assert ds.CompletionFlag == "COMPLETE" and ds.VerificationFlag == "UNVERIFIED"
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == LOCAL_SCHEME
    assert sr_model(ds) == {"name": "kdoct-student", "version": "1.2.0", "sha256": "ab" * 32}
    eyes = sr_eyes(ds)
    assert set(eyes) == {"R", "L"}
    od, os_ = exam.eyes
    assert eyes["R"]["finding"] == ("75971007", "SCT") and eyes["R"]["tier"] == "tier-urgent"
    assert eyes["R"]["tier_name"] == od.tier.name and eyes["R"]["impression"] == od.headline
    assert eyes["L"]["finding"] == ("247153005", "SCT") and eyes["L"]["tier"] == "tier-routine"
    assert eyes["L"]["review"] and not eyes["R"]["review"]
    for e, got in ((od, eyes["R"]), (os_, eyes["L"])):
        uid = source_references(e.volume_result.volume)[0].sop_instance
        assert got["evidence"] == [(uid, i + 1) for i in e.evidence]  # frame numbers, strongest first
        assert got["evidence_text"].startswith("6, 5, 7 (of 12") and got["n_bscans"] == 12
        assert got["scores"] == {class_code(c).meaning: pytest.approx(s, abs=1e-5) for c, s in e.scores.items()}
    # the evidence of the content tree, per series
    (study,) = ds.CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == STUDY.study_uid
    listed = {str(i.ReferencedSOPInstanceUID) for s in study.ReferencedSeriesSequence for i in s.ReferencedSOPSequence}
    assert listed == {uid for got in eyes.values() for uid, _ in got["evidence"]}
    assert [s.SeriesInstanceUID for s in study.ReferencedSeriesSequence] == [
        e.volume_result.volume.study.series_uid for e in exam.eyes
    ]


def test_sr_without_dicom_input_or_deidentified_lists_b_scans_by_number_only(tmp_path):
    exam = make_exam(n=12, evidence=(5, 4, 6))
    ds = pydicom.dcmread(result_to_sr(exam, tmp_path / "plain.dcm", card=make_card()))
    eyes = sr_eyes(ds)
    assert eyes["R"]["evidence"] == [] and eyes["R"]["evidence_text"].startswith("6, 5, 7")
    assert "CurrentRequestedProcedureEvidenceSequence" not in ds
    assert "DEMO MODEL" in ds.SeriesDescription
    real = dicom_exam(tmp_path / "in", n=12, evidence=(5, 4, 6))
    out = result_to_sr(real, tmp_path / "anon.dcm", card=make_card(), deidentify=True, pseudo_id="ANON-7")
    anon = pydicom.dcmread(out)
    assert anon.PatientID == "ANON-7" and str(anon.PatientName) == "" and anon.PatientIdentityRemoved == "YES"
    assert anon.StudyInstanceUID != STUDY.study_uid and sr_eyes(anon)["R"]["evidence"] == []
    raw = out.read_bytes()
    for secret in (PATIENT.patient_id, STUDY.study_uid, source_references(real.eyes[0].volume_result.volume)[0][1]):
        assert secret.encode() not in raw, secret


def test_sr_of_a_rescan_an_unknown_eye_and_a_class_without_a_standard_code(tmp_path):
    rescan = make_eye(Laterality.UNKNOWN, "ungradable", Urgency.RESCAN, n=6, evidence=())
    rescan = dataclasses.replace(rescan, scores={"normal": 0.1, "drusen": 0.2, "cnv": 0.3})
    odd = make_eye(Laterality.OD, "cnv", Urgency.URGENT, n=6, evidence=(2,))
    odd.volume_result.classes = ["normal", "drusen", "macular hole"]
    odd = dataclasses.replace(odd, scores={"normal": 0.1, "drusen": 0.2, "macular hole": 0.7})
    exam = ExamResult(PATIENT, STUDY, make_exam().device, [odd, rescan])
    eyes = sr_eyes(pydicom.dcmread(result_to_sr(exam, tmp_path / "sr.dcm")))
    assert eyes[""]["finding"] == ("ungradable", LOCAL_SCHEME) and eyes[""]["tier"] == "tier-rescan"
    assert eyes["R"]["scores"]["macular hole"] == pytest.approx(0.7)
    assert class_code("macular hole").scheme_designator == LOCAL_SCHEME
    assert class_code("DME").value == "312912001"
    with pytest.raises(ValueError, match="no eye results"):
        result_to_sr(dataclasses.replace(exam, eyes=[]), tmp_path / "none.dcm")
    with pytest.raises(FileExistsError):
        result_to_sr(exam, tmp_path / "sr.dcm")


def test_screen_dicom_writes_the_sr_beside_the_dicom_report(tiny_card_path, make_volume, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for lat, seed in (("OD", 1), ("OS", 2)):
        write_opt(make_volume(n=6, h=96, w=128, seed=seed, laterality=lat, study_uid="1.2.3.1"), src / f"{lat}.dcm")
    out = tmp_path / "out"
    assert main(["screen", str(src), "--out", str(out), "--model", str(tiny_card_path), "--dicom"]) == 0
    stem = "P001_20260131_oct-report"
    assert {p.name for p in out.glob("*.dcm")} == {f"{stem}.dcm", f"{stem}_sr.dcm"}
    rows = json.loads((out / "results.json").read_text())["eyes"]
    assert {r["sr_file"] for r in rows} == {f"{stem}_sr.dcm"}
    sr = pydicom.dcmread(out / f"{stem}_sr.dcm")
    assert sr.StudyInstanceUID == "1.2.3.1" and sr.Modality == "SR"
    eyes = sr_eyes(sr)
    tiers = {("R" if r["eye"] == "OD" else "L"): f"tier-{r['urgency']}" for r in rows}
    assert {k: v["tier"] for k, v in eyes.items()} == tiers
    assert all(len(v["evidence"]) >= 1 and v["evidence"][0][1] >= 1 for v in eyes.values())  # frames referenced
    model = sr_model(sr)
    assert model["name"] == "tiny" and model["version"] == "0.0.1" and len(model["sha256"]) == 64
    # an SR left in --out is never replaced: the run refuses before any work, naming it
    for p in out.iterdir():
        if p.name != f"{stem}_sr.dcm":
            p.unlink()
    assert main(["screen", str(src), "--out", str(out), "--model", str(tiny_card_path), "--dicom"]) == 2
    assert f"{stem}_sr.dcm" in capsys.readouterr().err
