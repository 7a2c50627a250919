"""What screening produces: per-B-scan arrays for one volume (``VolumeResult``) and the per-eye
decision (``EyeResult``). Plain data: the GUI, the report and the CLI only read these."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from core.cam import upsample_cam
from core.tiers import DEFAULT_TIERS, TIER_ORDER
from core.volume import DeviceInfo, EyeKey, Laterality, OctVolume, PatientInfo, StudyInfo  # noqa: F401

__all__ = ["VolumeResult", "EyeResult", "ExamResult", "Urgency", "ProgressFn", "CancelFn"]

# progress(done, total, message) and cancel() -> bool, passed down by the CLI and GUI workers.
ProgressFn = "Callable[[int, int, str], None]"
CancelFn = "Callable[[], bool]"


class Urgency(str, enum.Enum):
    """Outcome tier of an eye (De Fauw et al. 2018 categories, plus review and rescan; ``core.tiers``
    owns their wording, time frames and colours)."""

    URGENT = "urgent"  # CNV
    SOON = "soon"  # DME (semi-urgent)
    ROUTINE = "routine"  # drusen
    REVIEW = "review"  # no referral threshold reached, but normal not confident (or a single B-scan)
    NONE = "none"  # observation only / no referral
    RESCAN = "rescan"  # not enough gradable B-scans to decide

    @property
    def text(self) -> str:
        return DEFAULT_TIERS[self.value].name

    @property
    def refers(self) -> bool:
        return self in (Urgency.URGENT, Urgency.SOON, Urgency.ROUTINE)

    @property
    def rank(self) -> int:
        """0 = most urgent (``core.tiers.TIER_ORDER``)."""
        return TIER_ORDER.index(self.value)


@dataclass
class VolumeResult:
    """Per-B-scan model output for one volume.

    probs: ``[n, C]`` float32 softmax probabilities; cams: ``[n, C, fh, fw]`` float32 class
    activation maps at feature resolution (raw, not normalised), or None if the backend gave none;
    gradable: ``[n]`` bool; quality_reasons: '' for gradable B-scans, else why not.
    """

    volume: OctVolume
    classes: list[str]
    probs: np.ndarray
    cams: np.ndarray | None
    gradable: np.ndarray
    quality_reasons: list[str]
    model_name: str = ""
    model_version: str = ""
    demo_model: bool = False
    model_notice: str = ""  # the card's warning ("... not for clinical use"), shown with every result
    backend: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds: read, preprocess, model, ...

    @property
    def n(self) -> int:
        return int(self.probs.shape[0])

    def predicted(self) -> np.ndarray:
        """Index of the most probable class per B-scan."""
        return self.probs.argmax(axis=1)

    def cam(self, index: int, cls: int | str, size: tuple[int, int] | None = None) -> np.ndarray:
        """CAM of B-scan ``index`` for class ``cls``, scaled to [0, 1] (ReLU then max), optionally
        upsampled to ``size`` = (h, w) (smoothly: ``core.cam.upsample_cam``). Zeros if no CAMs."""
        c = self.classes.index(cls) if isinstance(cls, str) else int(cls)
        if self.cams is None:
            h, w = size or self.volume.bscans.shape[1:]
            return np.zeros((h, w), np.float32)
        m = np.maximum(self.cams[index, c].astype(np.float32), 0.0)
        top = float(m.max())
        m = m / top if top > 0 else m
        if size is not None:
            return upsample_cam(m, size)
        return np.clip(m, 0.0, 1.0)

    def probability(self, index: int, cls: int | str) -> float:
        """The model's probability of class ``cls`` on B-scan ``index`` (what scales its overlay)."""
        c = self.classes.index(cls) if isinstance(cls, str) else int(cls)
        return float(self.probs[index, c])


@dataclass
class EyeResult:
    """The per-eye answer. ``label`` is a class name from the model card, or 'ungradable'."""

    eye: EyeKey
    label: str
    urgency: Urgency
    scores: dict[str, float]  # eye score per class (top-k mean of B-scan probabilities)
    confidence: float  # eye score of the decisive class
    needs_review: bool  # a score lies within the review margin of a threshold
    evidence: list[int]  # B-scan indices (0-based) that drove the decision, strongest first
    n_bscans: int
    n_gradable: int
    ungradable: list[int]
    reasons: list[str] = field(default_factory=list)  # human-readable why (thresholds crossed, rescan cause)
    volume_result: VolumeResult | None = None
    tiers: dict | None = None  # tier id -> core.tiers.Tier (the card's wording); None: the defaults

    @property
    def rescan(self) -> bool:
        return self.urgency is Urgency.RESCAN

    @property
    def laterality_set_by_user(self) -> bool:
        """True when the user said which eye this is (the file did not): ``set_laterality``."""
        vr = self.volume_result
        return bool(vr is not None and vr.volume.extra.get("laterality_set_by_user"))

    def set_laterality(self, laterality: Laterality | str) -> None:
        """The user says which eye a volume of unknown laterality is. The eye key and the volume change,
        and ``volume.extra['laterality_set_by_user'] = True`` records it: the report names the eye
        "set by user" (a de-identified copy keeps the note). Refused (``ValueError``) for an eye whose
        file gave its laterality, or without per-B-scan results to record it in. Setting it back to
        unknown clears the record."""
        lat = Laterality.parse(laterality)
        vr = self.volume_result
        if vr is None:
            raise ValueError(f"{self.eye}: no volume to record the laterality in")
        if self.eye.laterality is not Laterality.UNKNOWN and not self.laterality_set_by_user:
            raise ValueError(
                f"{self.eye}: the file says this is {self.eye.laterality.value}; only an unknown eye can be set"
            )
        vr.volume.laterality = lat
        if lat is Laterality.UNKNOWN:
            vr.volume.extra.pop("laterality_set_by_user", None)
        else:
            vr.volume.extra["laterality_set_by_user"] = True
        self.eye = EyeKey(self.eye.patient_id, self.eye.study_uid, lat)

    @property
    def tier(self):
        """The :class:`core.tiers.Tier` of this decision (name, action, time frame, colours)."""
        return (self.tiers or DEFAULT_TIERS)[self.urgency.value]

    @property
    def headline(self) -> str:
        """'URGENT REFERRAL: CNV (review)' style one-liner for badges and reports."""
        if self.rescan:
            return "RESCAN: too few gradable B-scans"
        if self.urgency is Urgency.REVIEW:
            return f"{self.tier.name.upper()}: {self.label.upper()} NOT CONFIRMED"
        txt = f"{self.tier.name.upper()}: {self.label.upper()}"
        return txt + (" (review advised)" if self.needs_review else "")


@dataclass
class ExamResult:
    """One patient exam (one study): both eyes' decisions, what one PDF report covers."""

    patient: PatientInfo
    study: StudyInfo
    device: DeviceInfo
    eyes: list[EyeResult]  # sorted OD, OS, unknown

    @property
    def worst(self) -> EyeResult | None:
        """The eye with the most urgent decision (``core.tiers.TIER_ORDER``: urgent > soon > routine >
        review > rescan > none)."""
        return min(self.eyes, key=lambda e: e.urgency.rank) if self.eyes else None
