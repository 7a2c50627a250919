"""Screening results as DICOM, so a PACS files them with the exam.

- ``pdf_to_dicom``: the PDF report as a DICOM Encapsulated PDF (SOP class
  1.2.840.10008.5.1.4.1.1.104.1, modality DOC) in the exam's study, in a new series.
- ``overlays_to_secondary_capture``: the evidence B-scans with their CAM overlays as RGB
  Secondary Capture images (SOP class 1.2.840.10008.5.1.4.1.1.7), one file per B-scan, one new
  series, same patient and study.
- ``result_to_sr``: the per-eye result as a Comprehensive SR (SOP class 1.2.840.10008.5.1.4.1.1.88.33,
  modality SR) following the template "OCTSCREEN 1" of docs/CONFORMANCE.md: decision, tier, class
  scores, evidence B-scans (IMAGE items referencing the OPT instance and frame), model name, version
  and sha256.

What goes out references what came in: all three carry the exam's StudyInstanceUID; when the
volumes were read from DICOM (``core.io.dicom.SOURCE_INSTANCES``), the Encapsulated PDF lists the
OPT instances in Source Instance Sequence (0042,0013), each overlay names its B-scan in Source Image
Sequence (0008,2112) and the SR references the evidence frames.

With ``deidentify`` the patient identity is replaced (patient id -> pseudonym, no name, no birth
date, no accession number) and the study gets a new StudyInstanceUID (the original would point back
at the patient's record), and nothing references the original instances. Files are written
atomically and never replace an existing file unless asked.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import (
    UID,
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

import core
from core.cam import DEFAULT_ALPHA, overlay
from core.deid import output_time
from core.errors import EmptyInputError, FileMissingError, UnsupportedFormatError
from core.fileio import atomic_output
from core.io.dicom import SOURCE_INSTANCES
from core.io.writer import new_file_meta
from core.modelcard import DEMO_WARNING, ModelCard
from core.report import DEIDENTIFIED_MARKER, PSEUDONYM_KEYWORD, new_report_id, pseudonym_for
from core.results import ExamResult, EyeResult
from core.volume import Laterality, OctVolume, PatientInfo, StudyInfo

__all__ = [
    "pdf_to_dicom",
    "overlays_to_secondary_capture",
    "result_to_sr",
    "source_references",
    "SourceRef",
    "class_code",
    "tier_code",
    "LOCAL_SCHEME",
    "SR_TEMPLATE",
    "REPORT_SERIES_NUMBER",
    "OVERLAY_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
]

log = logging.getLogger(__name__)

REPORT_SERIES_NUMBER = 9901
OVERLAY_SERIES_NUMBER = 9902
SR_SERIES_NUMBER = 9903
DOCUMENT_TITLE = "OCT screening report"
#: LOINC 18748-4 "Diagnostic imaging report": what the encapsulated document is.
_CONCEPT = ("18748-4", "LN", "Diagnostic imaging report")
_DEMO_SUFFIX = " [DEMO MODEL]"  # series description of exports made with a demonstration model
_DEID_METHOD = "PS3.15 Basic Profile (OCT Screen): pseudonym, new UIDs"  # LO: <= 64 chars


class SourceRef(NamedTuple):
    """Where one B-scan came from: its instance and, in a multi-frame instance, its frame (1-based;
    0 when the instance holds that one B-scan only)."""

    sop_class: str
    sop_instance: str
    frame: int


def source_references(volume: OctVolume) -> list[SourceRef]:
    """One ``SourceRef`` per B-scan of ``volume``, in volume order; empty when the volume was not read
    from DICOM (images, vendor files), was de-identified (``core.deid`` drops the original UIDs) or
    the reader's note does not match its B-scans."""
    refs = volume.extra.get(SOURCE_INSTANCES) or ()
    if len(refs) != volume.n_bscans:
        return []
    out = [SourceRef(str(c), str(u), int(f)) for c, u, f in refs]
    if not all(UID(r.sop_class).is_valid and UID(r.sop_instance).is_valid for r in out):
        return []
    return out


def _instance_items(refs: Sequence[SourceRef]) -> list[Dataset]:
    """SOP Instance Reference Macro items, one per distinct instance, in first-seen order."""
    items, seen = [], set()
    for r in refs:
        if r.sop_instance in seen:
            continue
        seen.add(r.sop_instance)
        item = Dataset()
        item.ReferencedSOPClassUID = r.sop_class
        item.ReferencedSOPInstanceUID = r.sop_instance
        items.append(item)
    return items


def _image_reference(ref: SourceRef) -> Dataset:
    """Image SOP Instance Reference Macro item: the instance, and the frame of a multi-frame one."""
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class
    item.ReferencedSOPInstanceUID = ref.sop_instance
    if ref.frame > 0:
        item.ReferencedFrameNumber = ref.frame
    return item


def _identity(
    patient: PatientInfo, study: StudyInfo, deidentify: bool, pseudo_id: str | None
) -> tuple[PatientInfo, StudyInfo]:
    """The patient and study to write: as given, or de-identified (pseudonym, new study UID).

    The new study UID is derived from the original one *and* the pseudonym, so exports made with
    the same pseudonym (the report and its overlays) land in the same de-identified study, while
    the original UID cannot be recovered from it."""
    if not deidentify:
        return patient, study
    pid = pseudo_id or pseudonym_for(new_report_id())
    new_uid = generate_uid(entropy_srcs=[study.study_uid or uuid.uuid4().hex, pid, "octscreen-deid"])
    return (
        patient.deidentified(pid),
        StudyInfo(
            study_uid=new_uid, study_date=study.study_date, study_time=study.study_time, description=study.description
        ),
    )


def _base_dataset(
    sop_class: str,
    patient: PatientInfo,
    study: StudyInfo,
    deidentify: bool,
    series_uid: str,
    series_number: int,
    series_description: str,
    modality: str,
    instance_number: int,
    now: _dt.datetime,
) -> Dataset:
    """Patient, General Study, series, equipment and SOP Common modules shared by both exports."""
    meta = new_file_meta(sop_class)
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names in any script
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    # Patient
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex if patient.sex in ("M", "F", "O") else ""
    if deidentify:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = _DEID_METHOD
    # General Study
    ds.StudyInstanceUID = study.study_uid or generate_uid()
    if not study.study_uid:
        log.warning("the exam has no StudyInstanceUID; the export gets a new study UID")
    ds.StudyDate, ds.StudyTime = study.study_date, study.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession_number
    if study.description:
        ds.StudyDescription = study.description
    # Series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.InstanceNumber = instance_number
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    # Equipment (General + SC Equipment: made on a workstation)
    ds.Manufacturer = "OCT Screen"
    ds.SoftwareVersions = core.__version__
    ds.ConversionType = "WSD"
    return ds


def _write(ds: Dataset, out_path: str | Path, overwrite: bool) -> Path:
    with atomic_output(out_path, overwrite) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(out_path)


def _read_pdf(pdf_path: str | Path) -> bytes:
    p = Path(pdf_path)
    if not p.is_file():
        raise FileMissingError(p, "PDF report not found")
    data = p.read_bytes()
    if not data:
        raise EmptyInputError(p, "the PDF report is empty")
    if not data.startswith(b"%PDF-"):
        raise UnsupportedFormatError(p, "not a PDF file (it does not start with %PDF-)")
    return data


def pdf_to_dicom(
    pdf_path: str | Path,
    exam: ExamResult,
    out_path: str | Path,
    *,
    deidentify: bool = False,
    overwrite: bool = False,
    pseudo_id: str | None = None,
) -> Path:
    """Wrap a PDF report as a DICOM Encapsulated PDF in the exam's study; return ``out_path``.

    The document gets a new series and instance UID, the exam's patient and study (StudyInstanceUID,
    patient id/name/birth date/sex, study date, accession number) so a PACS files it with the exam.
    With ``deidentify`` the patient id becomes ``pseudo_id`` (default: the pseudonym recorded in the
    report's PDF keywords, else a random one), name, birth date and accession number are left empty
    and the study UID is new; the PDF itself must then be a de-identified report
    (``core.report.write_report`` with ``deidentify=True``), else ``ValueError``.
    """
    data = _read_pdf(pdf_path)
    if deidentify:
        if DEIDENTIFIED_MARKER.encode() not in data:
            raise ValueError(
                f"{pdf_path}: the PDF is not a de-identified report; write it with "
                "ReportOptions(deidentify=True) before a de-identified DICOM export"
            )
        if pseudo_id is None:  # reuse the report's pseudonym (PDF keywords)
            found = PSEUDONYM_KEYWORD.search(data.decode("latin-1"))
            pseudo_id = found.group(1) if found else None
    patient, study = _identity(exam.patient, exam.study, deidentify, pseudo_id)
    now = output_time(_dt.datetime.now(), deidentify)
    demo = any(e.volume_result is not None and e.volume_result.demo_model for e in exam.eyes)
    ds = _base_dataset(
        EncapsulatedPDFStorage,
        patient,
        study,
        deidentify,
        generate_uid(),
        REPORT_SERIES_NUMBER,
        DOCUMENT_TITLE + (_DEMO_SUFFIX if demo else ""),
        "DOC",
        1,
        now,
    )
    # Encapsulated Document module
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = DOCUMENT_TITLE
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = _CONCEPT
    ds.ConceptNameCodeSequence = [code]
    # Source Instance Sequence (1C: the document incorporates content from these instances)
    refs = (
        []
        if deidentify
        else [r for e in exam.eyes if e.volume_result for r in source_references(e.volume_result.volume)]
    )
    if refs:
        ds.SourceInstanceSequence = _instance_items(refs)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(data)
    ds.EncapsulatedDocument = data + (b"\0" if len(data) % 2 else b"")  # OB values have even length
    out = _write(ds, out_path, overwrite)
    log.info("wrote DICOM Encapsulated PDF %s (%d bytes of PDF)", out, len(data))
    return out


def overlays_to_secondary_capture(
    eye: EyeResult,
    indices: Sequence[int] | None,
    out_dir: str | Path,
    *,
    deidentify: bool = False,
    pseudo_id: str | None = None,
    overwrite: bool = False,
    alpha: float = DEFAULT_ALPHA,
    prefix: str | None = None,
) -> list[Path]:
    """Write one RGB Secondary Capture per B-scan (CAM overlay of the eye's decided class) into
    ``out_dir``; return the paths, in ``indices`` order.

    ``indices``: 0-based B-scan indices (default: the eye's evidence B-scans). Files are named
    ``<prefix>_bscanNNN.dcm`` (1-based number; prefix default 'overlay_<OD|OS|unknown>'). All go into
    one new series of the volume's study (or a new de-identified study, see ``pdf_to_dicom``).
    Nothing is written if any target exists and not ``overwrite`` (``FileExistsError``).
    """
    vr = eye.volume_result
    if vr is None:
        raise ValueError("the eye result carries no per-B-scan results (volume_result is None)")
    vol = vr.volume
    chosen = list(eye.evidence if indices is None else indices)
    for i in chosen:
        if not 0 <= int(i) < vol.n_bscans:
            raise IndexError(f"B-scan index {i} outside the volume (0..{vol.n_bscans - 1})")
    name = prefix or f"overlay_{vol.laterality.value}"
    targets = [Path(out_dir) / f"{name}_bscan{int(i) + 1:03d}.dcm" for i in chosen]
    if not overwrite:
        existing = [str(t) for t in targets if t.exists()]
        if existing:
            raise FileExistsError(f"{existing[0]}: file exists; not overwriting it (ask for overwrite to replace it)")
    patient, study = _identity(vol.patient, vol.study, deidentify, pseudo_id)
    series_uid, now = generate_uid(), output_time(_dt.datetime.now(), deidentify)
    has_cam = vr.cams is not None and eye.label in vr.classes
    refs = [] if deidentify else source_references(vol)
    purpose = _code_dataset(codes.DCM.SourceImageForImageProcessingOperation)  # CID 7202
    written: list[Path] = []
    for number, (i, target) in enumerate(zip(chosen, targets), start=1):
        i = int(i)
        bscan = vol.bscans[i]
        cam = vr.cam(i, eye.label, size=bscan.shape[:2]) if has_cam else None
        p = vr.probability(i, eye.label) if has_cam else 0.0  # the overlay's strength, as in the app and report
        rgb = np.ascontiguousarray(overlay(bscan, cam, alpha=alpha, probability=p))
        ds = _base_dataset(
            SecondaryCaptureImageStorage,
            patient,
            study,
            deidentify,
            series_uid,
            OVERLAY_SERIES_NUMBER,
            f"OCT Screen CAM overlays ({eye.label})" + (_DEMO_SUFFIX if vr.demo_model else ""),
            "OT",
            number,
            now,
        )
        ds.Laterality = vol.laterality.dicom
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.PatientOrientation = ""  # type 2C, unknown: a B-scan's rows and columns have no patient axes here
        if refs:  # the B-scan this overlay was made from
            source = _image_reference(refs[i])
            source.PurposeOfReferenceCodeSequence = [purpose]
            ds.SourceImageSequence = [source]
        ds.DerivationDescription = (
            f"B-scan {i + 1} of {vol.n_bscans} with the class activation map for "
            f"'{eye.label}' ({vr.model_name or 'model'} {vr.model_version})".strip()
        )
        ds.ImageComments = (
            f"B-scan {i + 1} of {vol.n_bscans}"
            + (
                f"; {eye.label} probability {float(vr.probs[i, vr.classes.index(eye.label)]):.2f}"
                if eye.label in vr.classes
                else ""
            )
            + (f"; {DEMO_WARNING}" if vr.demo_model else f"; {vr.model_notice}" if vr.model_notice else "")
        )
        ds.BurnedInAnnotation = "NO"
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = rgb.tobytes()
        written.append(_write(ds, target, overwrite))
    log.info("wrote %d Secondary Capture overlay(s) into %s", len(written), out_dir)
    return written


# ------------------------------------------------------------------------------ Structured Report
#: Our coding scheme for what no standard code says (model classes without one, tiers, counts);
#: declared in every SR's Coding Scheme Identification Sequence.
LOCAL_SCHEME = "99OCTSCREEN"
#: The template our SR follows (docs/CONFORMANCE.md, "Structured Report"), as (mapping resource, id).
SR_TEMPLATE = (LOCAL_SCHEME, "OCTSCREEN1")
SR_TITLE = codes.LN.DiagnosticImagingReport  # CID 7000, as the PDF's concept name
#: Standard codes of the bundled model's classes (SNOMED CT; never the retired SRT designator).
CLASS_CODES: dict[str, Code] = {
    "normal": codes.SCT.Normal,
    "drusen": Code("247153005", "SCT", "Retinal drusen"),
    "cnv": Code("75971007", "SCT", "Choroidal neovascularization"),
    "dme": Code("312912001", "SCT", "Diabetic macular edema"),
}
UNGRADABLE = Code("ungradable", LOCAL_SCHEME, "Ungradable: too few gradable B-scans")
GRADABLE_BSCANS = Code("gradable-bscans", LOCAL_SCHEME, "Number of gradable B-scans")
EVIDENCE_BSCANS = Code("evidence-bscans", LOCAL_SCHEME, "Evidence B-scan numbers")
REVIEW_ADVISED = Code("review-advised", LOCAL_SCHEME, "Review advised")
MODEL_SHA256 = Code("model-sha256", LOCAL_SCHEME, "Model weights SHA-256")
_LATERALITY = {Laterality.OD: codes.SCT.Right, Laterality.OS: codes.SCT.Left}


def class_code(name: str) -> Code:
    """The code of a model class (SNOMED CT where we have one; else our scheme, the name as value)."""
    if name == "ungradable":
        return UNGRADABLE
    return CLASS_CODES.get(name.lower()) or Code(name[:16], LOCAL_SCHEME, name)


def tier_code(tier_id: str, name: str) -> Code:
    """The code of a referral tier (our scheme: ``tier-<id>``, meaning the tier's name)."""
    return Code(f"tier-{tier_id}"[:16], LOCAL_SCHEME, name or tier_id)


def _code_dataset(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning[:64]
    return item


def _item(value_type: str, concept: Code, relationship: str | None, children: list[Dataset] | None = None) -> Dataset:
    item = Dataset()
    if relationship:
        item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [_code_dataset(concept)]
    if value_type == "CONTAINER":
        item.ContinuityOfContent = "SEPARATE"
    if children:
        item.ContentSequence = children
    return item


def _text(relationship: str, concept: Code, value: str) -> Dataset:
    item = _item("TEXT", concept, relationship)
    item.TextValue = value
    return item


def _coded(relationship: str, concept: Code, value: Code, children: list[Dataset] | None = None) -> Dataset:
    item = _item("CODE", concept, relationship, children)
    item.ConceptCodeSequence = [_code_dataset(value)]
    return item


def _num(relationship: str, concept: Code, value: float, children: list[Dataset] | None = None) -> Dataset:
    item = _item("NUM", concept, relationship, children)
    measured = Dataset()
    measured.NumericValue = f"{float(value):.6g}"
    measured.MeasurementUnitsCodeSequence = [_code_dataset(codes.UCUM.NoUnits)]
    item.MeasuredValueSequence = [measured]
    return item


def _eye_container(eye: EyeResult, refs: list[SourceRef]) -> Dataset:
    """TID OCTSCREEN1 row "Findings": one eye's decision, scores and evidence."""
    vr = eye.volume_result
    site_mods = (
        [_coded("HAS CONCEPT MOD", codes.SCT.Laterality, _LATERALITY[eye.eye.laterality])]
        if (eye.eye.laterality in _LATERALITY)
        else []
    )
    evidence = [
        _image("INFERRED FROM", codes.DCM.BestIllustrationOfFinding, refs[i]) for i in eye.evidence if i < len(refs)
    ]
    items = [
        _coded("HAS CONCEPT MOD", codes.SCT.FindingSite, codes.SCT.Eye, site_mods),
        _coded("CONTAINS", codes.DCM.Finding, class_code(eye.label), evidence),
        _coded("CONTAINS", codes.DCM.Recommendation, tier_code(eye.urgency.value, eye.tier.name)),
    ]
    follow_up = " ".join(p for p in (eye.tier.action, eye.tier.time_frame) if p).strip()
    if follow_up:
        items.append(_text("CONTAINS", codes.DCM.RecommendedFollowUp, follow_up))
    items.append(_coded("CONTAINS", REVIEW_ADVISED, codes.SCT.Yes if eye.needs_review else codes.SCT.No))
    items.append(_text("CONTAINS", codes.DCM.Impression, eye.headline))
    classes = list(vr.classes) if vr is not None else list(eye.scores)
    for name in classes:
        if name in eye.scores and math.isfinite(eye.scores[name]):  # a rescan may have no score
            mod = [_coded("HAS CONCEPT MOD", codes.DCM.Finding, class_code(name))]
            items.append(_num("CONTAINS", codes.SCT.Score, eye.scores[name], mod))
    items.append(_num("CONTAINS", codes.DCM.NumberOfFrames, eye.n_bscans))
    items.append(_num("CONTAINS", GRADABLE_BSCANS, eye.n_gradable))
    if eye.evidence:
        numbers = ", ".join(str(i + 1) for i in eye.evidence)
        items.append(_text("CONTAINS", EVIDENCE_BSCANS, f"{numbers} (of {eye.n_bscans}, strongest first)"))
    return _item("CONTAINER", codes.DCM.Findings, "CONTAINS", items)


def _image(relationship: str, concept: Code, ref: SourceRef) -> Dataset:
    item = _item("IMAGE", concept, relationship)
    item.ReferencedSOPSequence = [_image_reference(ref)]
    return item


def _evidence_sequence(study_uid: str, series_refs: dict[str, list[SourceRef]]) -> list[Dataset]:
    """Hierarchical SOP Instance Reference Macro: the study, its series, their referenced instances."""
    study = Dataset()
    study.StudyInstanceUID = study_uid
    series_items = []
    for series_uid, refs in series_refs.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedSOPSequence = _instance_items(refs)
        series_items.append(series)
    study.ReferencedSeriesSequence = series_items
    return [study]


def result_to_sr(
    exam: ExamResult,
    out_path: str | Path,
    *,
    card: ModelCard | None = None,
    deidentify: bool = False,
    pseudo_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the exam's per-eye results as a DICOM Comprehensive SR (template OCTSCREEN1, see
    docs/CONFORMANCE.md) in the exam's study, in a new series; return ``out_path``.

    ``card``: the model card the exam was screened with (name, version, weights sha256); default the
    name and version each eye's result carries (no sha256 then). The evidence B-scans are IMAGE items
    referencing the OPT instance (and frame) when the volume was read from DICOM; always also listed
    by number. ``deidentify`` / ``pseudo_id`` as in ``pdf_to_dicom`` (no references then: the original
    UIDs would point back at the patient's record).
    """
    if not exam.eyes:
        raise ValueError("the exam has no eye results: nothing to report")
    patient, study = _identity(exam.patient, exam.study, deidentify, pseudo_id)
    now = output_time(_dt.datetime.now(), deidentify)
    first = next((e.volume_result for e in exam.eyes if e.volume_result is not None), None)
    name = card.name if card is not None else (first.model_name if first else "")
    version = card.version if card is not None else (first.model_version if first else "")
    sha256 = card.weights_sha256 if card is not None else ""
    demo = card.demo if card is not None else any(e.volume_result and e.volume_result.demo_model for e in exam.eyes)
    notice = card.warning if card is not None else (first.model_notice if first else "")
    ds = _base_dataset(
        ComprehensiveSRStorage,
        patient,
        study,
        deidentify,
        generate_uid(),
        SR_SERIES_NUMBER,
        "OCT screening result" + (_DEMO_SUFFIX if demo else ""),
        "SR",
        1,
        now,
    )
    del ds.ConversionType  # SC Equipment is not part of the SR IOD
    # SR Document Series / General
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"  # machine output: nobody has signed it
    ds.PerformedProcedureCodeSequence = []
    # what the content tree references, per series (the evidence of the current procedure)
    series_refs: dict[str, list[SourceRef]] = {}
    eye_refs: list[list[SourceRef]] = []
    for e in exam.eyes:
        vol = e.volume_result.volume if e.volume_result is not None else None
        refs = [] if deidentify or vol is None else source_references(vol)
        eye_refs.append(refs)
        used = [refs[i] for i in e.evidence if i < len(refs)]
        if used and vol is not None:
            series_refs.setdefault(vol.study.series_uid, []).extend(used)
    if series_refs:
        ds.CurrentRequestedProcedureEvidenceSequence = _evidence_sequence(ds.StudyInstanceUID, series_refs)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = LOCAL_SCHEME
    scheme.CodingSchemeName = "OCT Screen local codes"
    scheme.CodingSchemeResponsibleOrganization = "OCT Screen"
    ds.CodingSchemeIdentificationSequence = [scheme]
    # SR Document Content: the root CONTAINER and its tree
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code_dataset(SR_TITLE)]
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = SR_TEMPLATE
    ds.ContentTemplateSequence = [template]
    observer_uid = generate_uid(entropy_srcs=["octscreen-model", name, version, sha256])
    tree = [
        _coded("HAS OBS CONTEXT", codes.DCM.ObserverType, codes.DCM.Device),
        _item("UIDREF", codes.DCM.DeviceObserverUID, "HAS OBS CONTEXT"),
        _text("HAS OBS CONTEXT", codes.DCM.DeviceObserverName, "OCT Screen"),
        _text("HAS OBS CONTEXT", codes.DCM.DeviceObserverManufacturer, "OCT Screen"),
        _text("HAS OBS CONTEXT", codes.DCM.DeviceObserverModelName, f"OCT Screen {core.__version__}"),
        _text("CONTAINS", codes.DCM.AlgorithmName, name or "unknown"),
        _text("CONTAINS", codes.DCM.AlgorithmVersion, version or "unknown"),
    ]
    tree[1].UID = observer_uid
    if sha256:
        tree.append(_text("CONTAINS", MODEL_SHA256, sha256))
    if notice:
        tree.append(_text("CONTAINS", codes.DCM.Comment, notice))
    tree.extend(_eye_container(e, refs) for e, refs in zip(exam.eyes, eye_refs))
    ds.ContentSequence = tree
    out = _write(ds, out_path, overwrite)
    log.info("wrote DICOM Comprehensive SR %s (%d eye(s))", out, len(exam.eyes))
    return out
