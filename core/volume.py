"""The one object that travels through OCT Screen: an OCT volume (a stack of B-scans) and its identity.

A B-scan is a cross-section: rows are depth (axial), columns are A-scans (lateral). A volume is a
stack of parallel B-scans, ``bscans[n, h, w]`` (uint8 or uint16), ordered from the first to the
last acquired position (for a macular cube: inferior to superior on most devices).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Laterality",
    "PatientInfo",
    "StudyInfo",
    "DeviceInfo",
    "PixelSpacing",
    "OctVolume",
    "EyeKey",
    "age_years",
    "display_name",
    "format_date",
]


def display_name(name: str) -> str:
    """DICOM PN 'Family^Given^Middle^Prefix^Suffix' as 'Family, Given Middle' (other text unchanged)."""
    if "^" not in name:
        return name.strip()
    parts = [p.strip() for p in name.split("^")]
    family, given = parts[0], " ".join(p for p in parts[1:3] if p)
    return f"{family}, {given}" if family and given else (family or given)


def format_date(value: str) -> str:
    """DICOM 'YYYYMMDD' as 'YYYY-MM-DD'; other text unchanged; '' stays ''."""
    v = value.strip()
    return f"{v[:4]}-{v[4:6]}-{v[6:8]}" if len(v) == 8 and v.isdigit() else v


def age_years(birth_date: str, on_date: str) -> int | None:
    """Age in whole years on ``on_date`` (the exam date) of someone born on ``birth_date`` (both DICOM
    'YYYYMMDD'); None when either is missing or not a date, or the exam predates the birth."""
    try:
        born = _dt.datetime.strptime(birth_date.strip(), "%Y%m%d").date()
        on = _dt.datetime.strptime(on_date.strip(), "%Y%m%d").date()
    except ValueError:
        return None
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return years if years >= 0 else None


class Laterality(str, enum.Enum):
    """Which eye. OD = right eye, OS = left eye (DICOM Laterality 'R' / 'L')."""

    OD = "OD"
    OS = "OS"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: object) -> Laterality:
        """Accept DICOM 'R'/'L', 'OD'/'OS', 'right'/'left' (any case); anything else is UNKNOWN."""
        if isinstance(value, Laterality):
            return value
        if value is None:
            return cls.UNKNOWN
        text = str(value).strip().upper()
        if text in {"R", "OD", "RIGHT"}:
            return cls.OD
        if text in {"L", "OS", "LEFT"}:
            return cls.OS
        return cls.UNKNOWN

    @property
    def long_name(self) -> str:
        """'Right eye (OD)', 'Left eye (OS)', 'Eye (laterality unknown)': how reports and the GUI name it."""
        return {"OD": "Right eye (OD)", "OS": "Left eye (OS)"}.get(self.value, "Eye (laterality unknown)")

    @property
    def dicom(self) -> str:
        """The DICOM code string ('R', 'L' or '' when unknown)."""
        return {"OD": "R", "OS": "L"}.get(self.value, "")


@dataclass(frozen=True)
class PatientInfo:
    """Who the exam belongs to. All fields optional: image stacks often carry only an id."""

    patient_id: str = ""
    name: str = ""  # DICOM PN style 'Family^Given' is kept as given
    birth_date: str = ""  # YYYYMMDD as in DICOM, '' when unknown
    sex: str = ""  # 'M', 'F', 'O' or ''

    def deidentified(self, pseudo_id: str = "ANON") -> PatientInfo:
        return PatientInfo(patient_id=pseudo_id, name="", birth_date="", sex=self.sex)


@dataclass(frozen=True)
class StudyInfo:
    """Study / series identity and dates (DICOM UIDs when the source is DICOM)."""

    study_uid: str = ""
    series_uid: str = ""
    study_date: str = ""  # YYYYMMDD
    study_time: str = ""  # HHMMSS
    study_id: str = ""
    accession_number: str = ""
    series_number: int | None = None
    description: str = ""


@dataclass(frozen=True)
class DeviceInfo:
    manufacturer: str = ""
    model: str = ""
    software_version: str = ""

    def __str__(self) -> str:  # "Heidelberg Engineering Spectralis" or ""
        return " ".join(p for p in (self.manufacturer, self.model) if p)


@dataclass(frozen=True)
class PixelSpacing:
    """Physical size of one voxel step in millimetres; ``None`` where unknown.

    slice: distance between neighbouring B-scans; row: axial (depth) size of a pixel;
    column: lateral size of an A-scan step.
    """

    slice: float | None = None
    row: float | None = None
    column: float | None = None

    @property
    def known(self) -> bool:
        return self.row is not None and self.column is not None


@dataclass
class OctVolume:
    """B-scans ``[n, h, w]`` (uint8 or uint16) plus everything we know about where they came from.

    ``frame_labels`` and ``label`` are ground truth where the source has it (synthetic data,
    labelled datasets); they are never used by the screening engine itself.
    """

    bscans: np.ndarray
    laterality: Laterality = Laterality.UNKNOWN
    patient: PatientInfo = field(default_factory=PatientInfo)
    study: StudyInfo = field(default_factory=StudyInfo)
    device: DeviceInfo = field(default_factory=DeviceInfo)
    spacing: PixelSpacing = field(default_factory=PixelSpacing)
    source: Path | None = None
    source_files: tuple[Path, ...] = ()  # one per B-scan for image folders / single-frame series
    label: str | None = None  # eye-level ground truth, if known
    frame_labels: tuple[str, ...] | None = None  # per-B-scan ground truth, if known
    extra: dict = field(default_factory=dict)  # reader-specific notes (e.g. transfer syntax)

    def __post_init__(self) -> None:
        b = np.asarray(self.bscans)
        if b.ndim == 2:
            b = b[None]
        if b.ndim != 3:
            raise ValueError(f"bscans must be [n, h, w], got shape {b.shape}")
        if b.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"bscans must be uint8 or uint16, got {b.dtype}")
        if b.shape[0] == 0:
            raise ValueError("a volume needs at least one B-scan")
        self.bscans = b
        self.laterality = Laterality.parse(self.laterality)
        if self.source is not None:
            self.source = Path(self.source)
        if self.frame_labels is not None:
            self.frame_labels = tuple(self.frame_labels)
            if len(self.frame_labels) != b.shape[0]:
                raise ValueError("frame_labels must have one entry per B-scan")

    @property
    def n_bscans(self) -> int:
        return int(self.bscans.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.bscans.shape)  # type: ignore[return-value]

    @property
    def bit_depth(self) -> int:
        return 16 if self.bscans.dtype == np.uint16 else 8

    @property
    def eye(self) -> EyeKey:
        return EyeKey.of(self)

    def describe(self) -> str:
        """One line for logs and lists: 'PID 1234 OD 2026-01-31, 25 x 496 x 512'."""
        n, h, w = self.shape
        who = self.patient.patient_id or "unknown patient"
        date = self.study.study_date
        date = f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else date
        return f"{who} {self.laterality.value} {date}".strip() + f", {n} x {h} x {w}"

    def with_bscans(self, bscans: np.ndarray) -> OctVolume:
        return dataclasses.replace(self, bscans=bscans)


@dataclass(frozen=True, order=True)
class EyeKey:
    """Identifies one eye of one patient in one study: what the per-eye decision is about."""

    patient_id: str
    study_uid: str
    laterality: Laterality

    @classmethod
    def of(cls, volume: OctVolume) -> EyeKey:
        return cls(volume.patient.patient_id, volume.study.study_uid, volume.laterality)

    def __str__(self) -> str:
        return f"{self.patient_id or '?'} {self.laterality.value}"
