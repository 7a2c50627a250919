"""De-identification at the entry: every volume is de-identified *before* it is screened, so every
output made from it (PDF, CSV, JSON, DICOM, output file names) is de-identified by construction.

Follows the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, with the *Retain
Patient Characteristics* option for sex (clinically relevant, low risk) and a choice for dates:

- ``remove`` (the default, the Basic Profile): study date and time are emptied;
- ``shift`` (the *Modified Dates* option): each patient's dates move by one random offset of 1–3650
  days back, the same for all their exams in a run, so intervals between visits survive;
- ``retain`` (the *Retain Longitudinal Temporal Information with Full Dates* option): kept as is.

What goes (PS3.15 Table E.1-1 action in brackets): patient name [Z → empty], patient id [Z → a
random pseudonym per patient, never derived from the id], birth date [Z → empty], accession number
and study id [Z → empty], study and series descriptions [X: free text that may name the patient],
study and series UIDs [U: replaced by new UIDs, the same original gives the same new one within a
run, the original cannot be recovered], source file and folder paths (folder names often carry the
patient's name or id), and reader notes that are not technical. Error messages for JSON output lose
their file paths (:meth:`Deidentifier.error_text`). The outputs' own times (report generated,
sign-off, DICOM content / creation / acquisition dates, the results' ``generated``) keep only their
year in a de-identified output (:func:`output_time`), whatever the date policy.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from dataclasses import dataclass, field

from pydicom.uid import generate_uid

from core.choices import DATE_POLICIES
from core.errors import InputError
from core.results import ExamResult
from core.volume import DeviceInfo, OctVolume, PatientInfo, StudyInfo

__all__ = ["Deidentifier", "DATE_POLICIES", "METHOD", "output_time", "output_year_text"]

#: What a de-identified DICOM export records in DeidentificationMethod (LO: at most 64 characters).
METHOD = "PS3.15 Basic Profile; retain patient characteristics"
#: Reader notes (``OctVolume.extra``) that are technical and safe to keep.
_SAFE_EXTRA = {
    "format",
    "dataset",
    "transfer_syntax",
    "missing_bscans",
    "frames",
    "bits",
    "photometric",
    "laterality_set_by_user",
}


def output_time(when: dt.datetime, deidentified: bool) -> dt.datetime:
    """A time an output records of itself (generated, signed, DICOM content and creation date): as
    it is, or in a de-identified output 1 January 00:00 of its year. Screening and signing happen on
    or near the exam day, so their day would give the exam date away even with the study date
    removed; PS3.15 Table E.1-1 removes or dummies those dates too (Content, Instance Creation and
    Acquisition Date/Time), and the year alone is what HIPAA's Safe Harbor lets a date keep."""
    return when.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0) if deidentified else when


def output_year_text(when: dt.datetime) -> str:
    """How a de-identified report prints such a time: '2026 (day and time removed)'."""
    return f"{when.astimezone().year} (day and time removed)"


@dataclass
class Deidentifier:
    """One run's de-identification: pseudonyms, date offsets and UID map stay consistent inside it
    and are never written anywhere (they live only in this object)."""

    dates: str = "remove"
    _secret: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)
    _pseudonyms: dict[str, str] = field(default_factory=dict, repr=False)
    _offsets: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.dates not in DATE_POLICIES:
            raise ValueError(f"dates must be one of {', '.join(DATE_POLICIES)}, not {self.dates!r}")

    @property
    def dicom_method(self) -> str:
        suffix = {"shift": "; modified dates", "retain": "; retain full dates"}.get(self.dates, "")
        return (METHOD + suffix)[:64]

    def pseudonym(self, patient_id: str) -> str:
        """A random pseudonym per patient id (``ANON-`` + 10 hex digits), stable within the run."""
        if patient_id not in self._pseudonyms:
            while True:
                p = f"ANON-{secrets.token_hex(5).upper()}"
                if p not in self._pseudonyms.values():
                    break
            self._pseudonyms[patient_id] = p
        return self._pseudonyms[patient_id]

    def date(self, patient_id: str, value: str) -> str:
        """A DICOM date (YYYYMMDD) under the run's date policy ('' stays '')."""
        if not value or self.dates == "retain":
            return value if self.dates == "retain" else ""
        if self.dates == "remove":
            return ""
        try:
            d = dt.datetime.strptime(value[:8], "%Y%m%d").date()
        except ValueError:
            return ""  # a date we cannot shift is removed, never kept
        offset = self._offsets.setdefault(patient_id, 1 + secrets.randbelow(3650))
        return (d - dt.timedelta(days=offset)).strftime("%Y%m%d")

    def uid(self, original: str) -> str:
        """A new UID for ``original`` (the same within this run; '' gets a fresh one)."""
        if not original:
            return generate_uid()
        return generate_uid(entropy_srcs=[self._secret, original])

    def patient(self, p: PatientInfo) -> PatientInfo:
        return PatientInfo(patient_id=self.pseudonym(p.patient_id), name="", birth_date="", sex=p.sex)

    def study(self, patient_id: str, s: StudyInfo) -> StudyInfo:
        return StudyInfo(
            study_uid=self.uid(s.study_uid),
            series_uid=self.uid(s.series_uid),
            study_date=self.date(patient_id, s.study_date),
            study_time="" if self.dates == "remove" else s.study_time,
            series_number=s.series_number,
        )

    def volume(self, v: OctVolume) -> OctVolume:
        """``v`` de-identified: identity, dates, UIDs, free text and file paths as the module says."""
        pid = v.patient.patient_id
        return dataclasses.replace(
            v,
            patient=self.patient(v.patient),
            study=self.study(pid, v.study),
            device=DeviceInfo(manufacturer=v.device.manufacturer, model=v.device.model),
            source=None,
            source_files=(),
            extra={k: val for k, val in v.extra.items() if k in _SAFE_EXTRA},
        )

    def exam(self, x: ExamResult) -> ExamResult:
        """A screened exam de-identified the same way (its eyes' volumes and keys too): for exports
        of an exam that was screened identified (the GUI's "de-identify" export)."""
        pid = x.patient.patient_id
        eyes = []
        for e in x.eyes:
            vr = e.volume_result
            if vr is not None:
                vr = dataclasses.replace(vr, volume=self.volume(vr.volume))
            key = dataclasses.replace(
                e.eye, patient_id=self.pseudonym(e.eye.patient_id), study_uid=self.uid(e.eye.study_uid)
            )
            eyes.append(dataclasses.replace(e, eye=key, volume_result=vr))
        return dataclasses.replace(
            x,
            patient=self.patient(x.patient),
            study=self.study(pid, x.study),
            device=DeviceInfo(manufacturer=x.device.manufacturer, model=x.device.model),
            eyes=eyes,
        )

    def error_text(self, e: InputError | str, index: int) -> str:
        """An input problem for a de-identified output: what went wrong, without the file's path or
        name (a folder or file name can be the patient's name)."""
        if isinstance(e, InputError):
            problem = e.problem
            if e.path is not None:
                for token in {str(e.path), e.path.name, e.path.stem, e.path.parent.name} - {""}:
                    problem = problem.replace(token, "…")
            return f"input {index}: {type(e).__name__}: {problem}"
        return f"problem {index}: (details withheld in a de-identified output)"
