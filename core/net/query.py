"""Verification (C-ECHO) and query (C-FIND) at patient, study and series level.

Patient level uses the Patient Root information model, study and series levels the Study Root one
(what every PACS offers). Matching follows PS3.4 C.2.2: ``*`` and ``?`` wildcards in names and ids,
a date range ``FROM-TO`` (either end may be open).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from core.io.dicom import element_int, element_text
from core.net.assoc import PENDING, association, check, require_context
from core.net.node import NodeSettings
from core.net.sop import UNCOMPRESSED

__all__ = [
    "echo",
    "find_patients",
    "find_studies",
    "find_series",
    "parse_date_range",
    "PatientMatch",
    "StudyMatch",
    "SeriesMatch",
]

log = logging.getLogger(__name__)

_DATE = re.compile(r"^(?P<a>[0-9]{8})?(?P<dash>-)?(?P<b>[0-9]{8})?$")


def parse_date_range(text: str) -> str:
    """``YYYYMMDD``, ``FROM-TO``, ``FROM-`` or ``-TO`` (dates as YYYYMMDD) checked and returned as a
    DICOM date range; ``ValueError`` says what is wrong."""
    t = str(text).strip()
    m = _DATE.match(t)
    if not t or not m or (m["dash"] is None and m["b"]) or not (m["a"] or m["b"]):
        raise ValueError(f"{text!r} is not a date or date range; write YYYYMMDD, FROM-TO, FROM- or -TO")
    for d in (m["a"], m["b"]):
        if d:
            try:
                dt.datetime.strptime(d, "%Y%m%d")
            except ValueError:
                raise ValueError(f"{text!r}: {d} is not a calendar date (YYYYMMDD)") from None
    if m["a"] and m["b"] and m["a"] > m["b"]:
        raise ValueError(f"{text!r}: the range starts after it ends")
    return t


@dataclass(frozen=True)
class PatientMatch:
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    n_studies: int | None

    @classmethod
    def from_dataset(cls, d: Dataset, n_studies: int | None = None) -> PatientMatch:
        """From a C-FIND or QIDO-RS answer (``n_studies`` when the answer does not count them)."""
        return cls(
            patient_id=element_text(d, "PatientID"),
            patient_name=element_text(d, "PatientName"),
            birth_date=element_text(d, "PatientBirthDate"),
            sex=element_text(d, "PatientSex"),
            n_studies=n_studies if n_studies is not None else element_int(d, "NumberOfPatientRelatedStudies"),
        )


@dataclass(frozen=True)
class StudyMatch:
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    study_time: str
    description: str
    accession_number: str
    modalities: tuple[str, ...]
    n_series: int | None
    n_instances: int | None

    @classmethod
    def from_dataset(cls, d: Dataset) -> StudyMatch:
        """From a C-FIND or QIDO-RS answer at study level."""
        return cls(
            study_uid=element_text(d, "StudyInstanceUID"),
            patient_id=element_text(d, "PatientID"),
            patient_name=element_text(d, "PatientName"),
            study_date=element_text(d, "StudyDate"),
            study_time=element_text(d, "StudyTime"),
            description=element_text(d, "StudyDescription"),
            accession_number=element_text(d, "AccessionNumber"),
            modalities=_multi(d, "ModalitiesInStudy"),
            n_series=element_int(d, "NumberOfStudyRelatedSeries"),
            n_instances=element_int(d, "NumberOfStudyRelatedInstances"),
        )


@dataclass(frozen=True)
class SeriesMatch:
    series_uid: str
    study_uid: str
    modality: str
    series_number: int | None
    description: str
    laterality: str
    n_instances: int | None

    @classmethod
    def from_dataset(cls, d: Dataset, study_uid: str = "") -> SeriesMatch:
        """From a C-FIND or QIDO-RS answer at series level; the eye from Laterality, else Image
        Laterality (OCT devices put it there); ``study_uid`` where the answer leaves it out."""
        return cls(
            series_uid=element_text(d, "SeriesInstanceUID"),
            study_uid=element_text(d, "StudyInstanceUID") or study_uid,
            modality=element_text(d, "Modality"),
            series_number=element_int(d, "SeriesNumber"),
            description=element_text(d, "SeriesDescription"),
            laterality=element_text(d, "Laterality") or element_text(d, "ImageLaterality"),
            n_instances=element_int(d, "NumberOfSeriesRelatedInstances"),
        )


def echo(node: NodeSettings) -> float:
    """C-ECHO the node; the round trip in seconds (association included). Raises a ``NetworkError``."""
    start = time.monotonic()
    purpose = "C-ECHO"
    with association(node, [(Verification, UNCOMPRESSED)], purpose=purpose) as assoc:
        since = time.monotonic()
        check(assoc.send_c_echo(), assoc, node, purpose, since)
    elapsed = time.monotonic() - start
    log.info("%s: C-ECHO answered in %.3f s", node, elapsed)
    return elapsed


def _multi(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.split("\\") if v)
    return tuple(str(v) for v in value)


def _find(node: NodeSettings, query: Dataset, model: str, purpose: str, limit: int | None) -> list[Dataset]:
    """Run one C-FIND; the identifiers of the matches (at most ``limit``; the rest is cancelled)."""
    found: list[Dataset] = []
    with association(node, [(model, UNCOMPRESSED)], purpose=purpose) as assoc:
        require_context(assoc, node, model, purpose)
        since = time.monotonic()
        responses = assoc.send_c_find(query, model)
        for status, identifier in responses:
            code = check(status, assoc, node, purpose, since)
            since = time.monotonic()
            if code in PENDING and identifier is not None:
                found.append(identifier)
                if limit is not None and len(found) >= limit:
                    log.info("%s: %s stopped at %d matches (limit)", node, purpose, limit)
                    assoc.abort()
                    break
    return found


def find_patients(
    node: NodeSettings, *, patient_id: str = "", patient_name: str = "", limit: int | None = None
) -> list[PatientMatch]:
    """C-FIND at patient level (Patient Root)."""
    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"
    q.PatientID = patient_id
    q.PatientName = patient_name
    q.PatientBirthDate = ""
    q.PatientSex = ""
    q.NumberOfPatientRelatedStudies = None
    return [
        PatientMatch.from_dataset(d)
        for d in _find(node, q, PatientRootQueryRetrieveInformationModelFind, "C-FIND (patients)", limit)
    ]


def find_studies(
    node: NodeSettings,
    *,
    patient_id: str = "",
    patient_name: str = "",
    date: str = "",
    modality: str = "",
    study_uid: str = "",
    accession_number: str = "",
    limit: int | None = None,
) -> list[StudyMatch]:
    """C-FIND at study level (Study Root). ``date``: see :func:`parse_date_range`; ``modality``
    matches Modalities in Study (e.g. 'OPT'). Matches in the node's order."""
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = study_uid
    q.PatientID = patient_id
    q.PatientName = patient_name
    q.StudyDate = parse_date_range(date) if date else ""
    q.StudyTime = ""
    q.StudyDescription = ""
    q.AccessionNumber = accession_number
    q.ModalitiesInStudy = modality.upper()
    q.NumberOfStudyRelatedSeries = None
    q.NumberOfStudyRelatedInstances = None
    return [
        StudyMatch.from_dataset(d)
        for d in _find(node, q, StudyRootQueryRetrieveInformationModelFind, "C-FIND (studies)", limit)
    ]


def find_series(
    node: NodeSettings, study_uid: str, *, modality: str = "", limit: int | None = None
) -> list[SeriesMatch]:
    """C-FIND at series level within one study (Study Root)."""
    if not study_uid:
        raise ValueError("a series query needs the study's StudyInstanceUID")
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = study_uid
    q.SeriesInstanceUID = ""
    q.Modality = modality.upper()
    q.SeriesNumber = None
    q.SeriesDescription = ""
    q.Laterality = ""
    # OCT devices (and write_opt) put the eye in Image Laterality, which the series-level Laterality
    # must then leave out; many nodes (Orthanc among them) answer it from the series' instances
    q.ImageLaterality = ""
    q.NumberOfSeriesRelatedInstances = None
    return [
        SeriesMatch.from_dataset(d, study_uid)
        for d in _find(node, q, StudyRootQueryRetrieveInformationModelFind, "C-FIND (series)", limit)
    ]
