"""Screening results as DICOM, so a PACS files them with the exam.

- ``pdf_to_dicom``: the PDF report as a DICOM Encapsulated PDF (SOP class
  1.2.840.10008.5.1.4.1.1.104.1, modality DOC) in the exam's study, in a new series.
- ``overlays_to_secondary_capture``: the evidence B-scans with their CAM overlays as RGB
  Secondary Capture images (SOP class 1.2.840.10008.5.1.4.1.1.7), one file per B-scan, one new
  series, same patient and study.

With ``deidentify`` the patient identity is replaced (patient id -> pseudonym, no name, no birth
date, no accession number) and the study gets a new StudyInstanceUID (the original would point back
at the patient's record). Files are written atomically and never replace an existing file unless
asked.
"""

from __future__ import annotations

import datetime as _dt
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, SecondaryCaptureImageStorage, generate_uid

import core
from core.cam import overlay
from core.errors import EmptyInputError, FileMissingError, UnsupportedFormatError
from core.fileio import atomic_output
from core.io.writer import new_file_meta
from core.modelcard import DEMO_WARNING
from core.report import DEIDENTIFIED_MARKER, PSEUDONYM_KEYWORD, new_report_id, pseudonym_for
from core.results import ExamResult, EyeResult
from core.volume import PatientInfo, StudyInfo

__all__ = ["pdf_to_dicom", "overlays_to_secondary_capture", "REPORT_SERIES_NUMBER", "OVERLAY_SERIES_NUMBER"]

log = logging.getLogger(__name__)

REPORT_SERIES_NUMBER = 9901
OVERLAY_SERIES_NUMBER = 9902
DOCUMENT_TITLE = "OCT screening report"
#: LOINC 18748-4 "Diagnostic imaging report": what the encapsulated document is.
_CONCEPT = ("18748-4", "LN", "Diagnostic imaging report")
_DEMO_SUFFIX = " [DEMO MODEL]"  # series description of exports made with a demonstration model
_DEID_METHOD = "PS3.15 Basic Profile (OCT Screen): pseudonym, new UIDs"  # LO: <= 64 chars


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
    now = _dt.datetime.now()
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
    alpha: float = 0.4,
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
    series_uid, now = generate_uid(), _dt.datetime.now()
    has_cam = vr.cams is not None and eye.label in vr.classes
    written: list[Path] = []
    for number, (i, target) in enumerate(zip(chosen, targets), start=1):
        i = int(i)
        bscan = vol.bscans[i]
        cam = vr.cam(i, eye.label, size=bscan.shape[:2]) if has_cam else None
        rgb = np.ascontiguousarray(overlay(bscan, cam, alpha=alpha))
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
