"""Follow-up: the visits of one patient's eye, the B-scan position that matches between two visits,
and each visit's eye scores as a trend.

A visit is one screened exam (one study) of the same patient id and the same eye. An eye whose
laterality is unknown, or a patient without an id, has no follow-up: two such scans are not assumed
to be one eye. Plain data and arithmetic; the GUI's follow-up window shows what this computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.results import ExamResult, EyeResult
from core.volume import Laterality, format_date

__all__ = ["TrendPoint", "Visit", "score_trend", "synced_index", "visits_of"]


@dataclass(frozen=True)
class Visit:
    """One exam of the eye: the exam, the eye's result in it, and the model card that screened it."""

    exam: ExamResult
    eye: EyeResult
    card: object = None  # core.modelcard.ModelCard (kept opaque: followup needs only its name)

    @property
    def when(self) -> str:
        """The exam's date and time as 'YYYYMMDDHHMMSS' (sortable; '' when the file gave none)."""
        return (self.exam.study.study_date or "") + (self.exam.study.study_time or "")

    @property
    def label(self) -> str:
        """'2026-01-31' (or 'no date'), for combo boxes and the trend's axis."""
        return format_date(self.exam.study.study_date) or "no date"


def visits_of(exams: Iterable[tuple[ExamResult, object]], eye: EyeResult) -> list[Visit]:
    """The visits of ``eye``'s patient and eye among ``exams`` ((exam, card) pairs), oldest first; the
    exam ``eye`` belongs to is one of them. Empty for an unknown eye or a patient without an id. Exams
    without a date sort first, in the order given. Several volumes of the eye in one exam: the first."""
    pid, lat = eye.eye.patient_id, eye.eye.laterality
    if not pid or lat is Laterality.UNKNOWN:
        return []
    out: list[Visit] = []
    for exam, card in exams:
        if exam.patient.patient_id != pid:
            continue
        mine = [e for e in exam.eyes if e is eye]
        same = mine or [e for e in exam.eyes if e.eye.laterality is lat]
        if same:
            out.append(Visit(exam, same[0], card))
    return sorted(out, key=lambda v: v.when)  # stable: undated visits keep their order


def synced_index(index: int, n_from: int, n_to: int) -> int:
    """The B-scan of a volume of ``n_to`` B-scans at the same relative position across the scan area as
    B-scan ``index`` of a volume of ``n_from`` (first to first, last to last, centre to centre). Two
    raster scans of one protocol cover the same area, so the relative position is the same place on
    the retina; a single B-scan maps to the centre of the other volume."""
    if n_to <= 1:
        return 0
    if n_from <= 1:
        return (n_to - 1) // 2
    index = min(max(int(index), 0), n_from - 1)
    return int(round(index * (n_to - 1) / (n_from - 1)))


@dataclass(frozen=True)
class TrendPoint:
    """One visit on the trend: its date label, the eye scores per class, the tier id and label."""

    label: str
    when: str
    scores: dict[str, float]
    tier: str
    finding: str


def score_trend(visits: Sequence[Visit]) -> list[TrendPoint]:
    """Each visit's eye scores, oldest first (what the follow-up window plots)."""
    return [
        TrendPoint(v.label, v.when, {k: float(s) for k, s in v.eye.scores.items()}, v.eye.urgency.value, v.eye.label)
        for v in visits
    ]
