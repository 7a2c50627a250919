"""The viewer's state: which exams are loaded, which eye and B-scan are shown, and how.

napari / glue style: this object is plain Python (no Qt), holds the data and the display settings,
and announces changes through tiny :class:`Event` objects. Widgets observe it and command it; they
hold no state of their own that matters. Everything here is testable without a screen, including
:meth:`ViewerState.render`, which produces the exact RGB pixels the B-scan viewer shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from core.audit import AuditTrail, SignOff, eye_record_key, signoff_for
from core.cam import DEFAULT_ALPHA, blend, cam_rgba, overlay
from core.modelcard import ModelCard
from core.preprocess import to_uint8
from core.results import ExamResult, EyeResult, VolumeResult
from core.screening import eye_order, group_exams
from core.volume import Laterality, OctVolume

__all__ = ["Event", "LoadedExam", "ViewerState", "thumbnail", "window_level"]

log = logging.getLogger(__name__)


class Event:
    """A minimal observer list: ``connect(fn)``, ``disconnect(fn)``, ``emit(*args)``."""

    def __init__(self) -> None:
        self._slots: list[Callable[..., Any]] = []

    def connect(self, fn: Callable[..., Any]) -> None:
        """Call ``fn`` on every later :meth:`emit`."""
        if fn not in self._slots:
            self._slots.append(fn)

    def disconnect(self, fn: Callable[..., Any]) -> None:
        """Stop calling ``fn``; silently ignores unknown callbacks."""
        if fn in self._slots:
            self._slots.remove(fn)

    def emit(self, *args: Any) -> None:
        """Call every connected callback in connection order."""
        for fn in list(self._slots):
            fn(*args)


@dataclass
class LoadedExam:
    """One screened exam and the model card that screened it (the report needs both)."""

    exam: ExamResult
    card: ModelCard


def _card_key(card: ModelCard) -> tuple[str, str, str]:
    return card.name, card.version, card.weights_sha256


def _exam_key(eye: EyeResult, card: ModelCard) -> tuple:
    """What makes one loaded exam (one report): patient id, study UID and the model that screened it."""
    return eye.eye.patient_id, eye.eye.study_uid, _card_key(card)


def _loaded_key(le: LoadedExam) -> tuple:
    return le.exam.patient.patient_id, le.exam.study.study_uid, _card_key(le.card)


def window_level(bscan: np.ndarray, window: float = 1.0, level: float = 0.5) -> np.ndarray:
    """A B-scan as display uint8 after window/level (both in units of the full intensity range).

    ``window`` is the width of the displayed intensity range (0 < window <= 1), ``level`` its centre.
    The identity is ``window=1, level=0.5``. 16-bit B-scans are first scaled like the model sees them.
    """
    grey = to_uint8(bscan)
    if abs(window - 1.0) < 1e-6 and abs(level - 0.5) < 1e-6:
        return grey
    w = max(float(window), 1e-3)
    lo = float(level) - w / 2
    lut = np.clip((np.arange(256, dtype=np.float32) / 255.0 - lo) / w, 0.0, 1.0)
    return np.round(lut * 255.0).astype(np.uint8)[grey]


def thumbnail(
    vr: VolumeResult, index: int, cls: str | int, width: int = 168, alpha: float = DEFAULT_ALPHA
) -> np.ndarray:
    """A small RGB picture of B-scan ``index`` with the CAM of class ``cls``, its strength scaled by the
    class's probability on that B-scan (``core.cam.overlay``, as the viewer and the report)."""
    raw = vr.volume.bscans[index]
    h, w = raw.shape
    size = (max(1, round(h * width / w)), width)
    small = to_uint8(cv2.resize(raw, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    return overlay(small, vr.cam(index, cls, size=size), alpha=alpha, probability=vr.probability(index, cls))


#: Columns of background between the two halves of the side-by-side view (the viewer's dark grey).
SIDE_GAP = 8
SIDE_GAP_COLOUR = (17, 20, 24)


class ViewerState:
    """Loaded exams, the current selection and the display settings; the model of the GUI.

    Events (each emitted after the change):
      ``exams_changed()``: the list of exams changed;
      ``eye_changed()``: another eye (or none) is current;
      ``slice_changed(int)``: another B-scan is current;
      ``display_changed()``: overlay, opacity, CAM class or window/level changed;
      ``signoff_changed(EyeResult)``: an eye was signed (:meth:`sign`).

    Sign-offs live in ``audit`` (a ``core.audit.AuditTrail``; None: signing is unavailable, and
    :attr:`audit_problem` says why).
    """

    def __init__(self) -> None:
        self.exams: list[LoadedExam] = []
        self.identities: dict[str, EyeResult] = {}  # volume identity -> its loaded eye (no scan twice)
        self._pending: EyeResult | None = None
        self.exam_index: int = -1
        self.eye_index: int = -1
        self.slice_index: int = 0
        self.overlay_on: bool = False
        self.side_by_side: bool = False  # the B-scan without and with the heatmap, next to each other
        self.opacity: float = DEFAULT_ALPHA
        self.cam_class: str | None = None  # None: the predicted class of the current B-scan
        self.window: float = 1.0
        self.level: float = 0.5
        self.exams_changed = Event()
        self.eye_changed = Event()
        self.slice_changed = Event()
        self.display_changed = Event()
        self.signoff_changed = Event()
        self.audit: AuditTrail | None = None
        self.audit_problem = "no audit trail is open"
        self._signoffs: dict[tuple[str, str, str, str], SignOff | None] = {}  # the trail's newest, cached

    # -- data --------------------------------------------------------------------------------
    def add_exams(self, exams: list[ExamResult], card: ModelCard, *, select: bool = True) -> None:
        """Add screened exams (with the card that screened them), eye by eye (:meth:`add_eye`)."""
        for exam in exams:
            for eye in exam.eyes:
                self.add_eye(eye, card, select=select, _announce=False)
        self.exams_changed.emit()
        self._select_pending()

    def add_eye(
        self, eye: EyeResult, card: ModelCard, identity: str = "", *, select: bool = True, _announce: bool = True
    ) -> None:
        """Add one screened eye: into the loaded exam of the same patient, study and model, else as a new
        exam. The selection stays where it is (the same eye, even when its exam's eyes re-sort); with
        ``select`` and nothing selected, the new eye becomes current. ``identity``
        (``core.screening.volume_identity``) lets :meth:`find_identity` recognise the scan later."""
        key = _exam_key(eye, card)
        current = self.current_eye
        target = next((le for le in self.exams if _loaded_key(le) == key), None)
        if target is None:
            (exam,) = group_exams([eye])
            self.exams.append(LoadedExam(exam, card))
        else:
            target.exam.eyes = sorted([*target.exam.eyes, eye], key=eye_order)
        if identity:
            self.identities[identity] = eye
        self._point_at(current)
        if select and current is None and self._pending is None:
            self._pending = eye
        if _announce:
            self.exams_changed.emit()
            self._select_pending()

    def _select_pending(self) -> None:
        eye, self._pending = self._pending, None
        if eye is not None and self.current_eye is None:
            self.select_eye(eye)

    def find_identity(self, identity: str) -> EyeResult | None:
        """The loaded eye screened from the scan with this identity, if it is still open."""
        eye = self.identities.get(identity)
        return eye if eye is not None and self.index_of(eye) is not None else None

    def remove_exam(self, exam_index: int) -> None:
        """Close one exam; the selection moves to a neighbour (or to nothing)."""
        if not 0 <= exam_index < len(self.exams):
            return
        gone = {id(e) for e in self.exams[exam_index].exam.eyes}
        del self.exams[exam_index]
        self.identities = {k: e for k, e in self.identities.items() if id(e) not in gone}
        self.exam_index = self.eye_index = -1
        self.exams_changed.emit()
        if not self.exams:
            self.select(-1, -1, force=True)
        else:
            self.select(min(exam_index, len(self.exams) - 1), 0, force=True)

    def clear(self) -> None:
        """Close every exam."""
        self.exams.clear()
        self.identities.clear()
        self.exam_index = self.eye_index = -1
        self.exams_changed.emit()
        self.select(-1, -1, force=True)

    def index_of(self, eye: EyeResult | None) -> tuple[int, int] | None:
        """(exam index, eye index) of a loaded eye (by identity of the object), or None."""
        if eye is None:
            return None
        for ei, le in enumerate(self.exams):
            for yi, e in enumerate(le.exam.eyes):
                if e is eye:
                    return ei, yi
        return None

    def _point_at(self, eye: EyeResult | None) -> None:
        """After the exams changed shape: the selection indices follow the same eye object."""
        where = self.index_of(eye)
        if where is not None:
            self.exam_index, self.eye_index = where

    # -- selection ---------------------------------------------------------------------------
    @property
    def current_loaded(self) -> LoadedExam | None:
        """The selected exam with its model card, or None."""
        return self.exams[self.exam_index] if 0 <= self.exam_index < len(self.exams) else None

    @property
    def current_exam(self) -> ExamResult | None:
        """The selected exam (both eyes of one study), or None."""
        loaded = self.current_loaded
        return loaded.exam if loaded else None

    @property
    def current_eye(self) -> EyeResult | None:
        """The selected eye's decision, or None."""
        exam = self.current_exam
        return exam.eyes[self.eye_index] if exam and 0 <= self.eye_index < len(exam.eyes) else None

    @property
    def volume_result(self) -> VolumeResult | None:
        """Per-B-scan results of the selected eye, or None."""
        eye = self.current_eye
        return eye.volume_result if eye else None

    @property
    def volume(self) -> OctVolume | None:
        """The selected eye's volume, or None."""
        vr = self.volume_result
        return vr.volume if vr else None

    @property
    def n_slices(self) -> int:
        """Number of B-scans in the current volume (0 if none)."""
        vol = self.volume
        return vol.n_bscans if vol is not None else 0

    def select(self, exam_index: int, eye_index: int, *, force: bool = False) -> None:
        """Make an eye current; the B-scan jumps to its strongest evidence (else the middle)."""
        if (exam_index, eye_index) == (self.exam_index, self.eye_index) and not force:
            return
        self.exam_index, self.eye_index = exam_index, eye_index
        eye = self.current_eye
        if eye is not None and eye.evidence:
            self.slice_index = int(eye.evidence[0])
        else:
            self.slice_index = max(0, self.n_slices // 2)
        self.cam_class = None
        self.eye_changed.emit()
        self.slice_changed.emit(self.slice_index)

    def select_eye(self, eye: EyeResult) -> None:
        """Make a loaded eye current (no-op if it is not loaded)."""
        where = self.index_of(eye)
        if where is not None:
            self.select(*where)

    def set_laterality(self, laterality: Laterality) -> None:
        """The user says which eye the current volume is (its file did not): recorded in the volume
        (``EyeResult.set_laterality``, shown as 'set by user' everywhere); the exam's eyes re-sort and
        the selection stays on this eye. ``ValueError`` for an eye whose file gave its laterality."""
        eye, exam = self.current_eye, self.current_exam
        if eye is None or exam is None or eye.eye.laterality is laterality:
            return
        eye.set_laterality(laterality)
        exam.eyes = sorted(exam.eyes, key=eye_order)
        self._point_at(eye)
        self.exams_changed.emit()

    # -- sign-off ----------------------------------------------------------------------------
    def signoff(self, eye: EyeResult | None) -> SignOff | None:
        """The sign-off that counts for ``eye`` (the audit trail's newest for its exam UIDs and
        laterality), or None if it is not signed. An eye whose laterality the user changed after
        signing is unsigned again: what was signed was another eye's name."""
        if eye is None or self.audit is None:
            return None
        key = eye_record_key(eye)
        if key not in self._signoffs:
            self._signoffs[key] = self.audit.latest(key)
        return self._signoffs[key]

    def sign(self, eye: EyeResult, card: ModelCard, *, decision: str, clinician: str, finding: str = "") -> SignOff:
        """Record a clinician's sign-off of ``eye`` in the audit trail (appended, never replacing an
        earlier one) and announce it. ``RuntimeError`` without an audit trail, ``ValueError`` for a
        sign-off without a name or with an unknown decision, ``core.audit.AuditError`` when the trail
        cannot be written."""
        if self.audit is None:
            raise RuntimeError(f"Sign-off is unavailable: {self.audit_problem}")
        stored = self.audit.append(signoff_for(eye, card, decision=decision, clinician=clinician, finding=finding))
        self._signoffs[stored.key] = stored
        self.signoff_changed.emit(eye)
        return stored

    def signoffs_of(self, exam: ExamResult) -> list[SignOff]:
        """The sign-offs of an exam's signed eyes (what its report prints)."""
        return [so for so in (self.signoff(e) for e in exam.eyes) if so is not None]

    def set_slice(self, index: int) -> None:
        """Show B-scan ``index`` (clamped to the volume)."""
        n = self.n_slices
        index = int(min(max(index, 0), max(n - 1, 0)))
        if index != self.slice_index:
            self.slice_index = index
            self.slice_changed.emit(index)

    def step(self, delta: int) -> None:
        """Move ``delta`` B-scans forward (negative: back)."""
        self.set_slice(self.slice_index + delta)

    # -- display -----------------------------------------------------------------------------
    def set_overlay(self, on: bool) -> None:
        """Show or hide the heatmap overlay (hiding it also ends the side-by-side view)."""
        if bool(on) != self.overlay_on:
            self.overlay_on = bool(on)
            if not on:
                self.side_by_side = False
            self.display_changed.emit()

    def set_side_by_side(self, on: bool) -> None:
        """Show the B-scan without (left) and with (right) the heatmap; turns the heatmap on."""
        if bool(on) != self.side_by_side:
            self.side_by_side = bool(on)
            if on:
                self.overlay_on = True
            self.display_changed.emit()

    def toggle_overlay(self) -> None:
        """Flip the heatmap overlay (key H)."""
        self.set_overlay(not self.overlay_on)

    def set_opacity(self, opacity: float) -> None:
        """Heatmap opacity in [0, 1]."""
        opacity = float(min(max(opacity, 0.0), 1.0))
        if abs(opacity - self.opacity) > 1e-9:
            self.opacity = opacity
            self.display_changed.emit()

    def set_cam_class(self, name: str | None) -> None:
        """Heatmap class by name; None follows the predicted class of each B-scan."""
        if name != self.cam_class:
            self.cam_class = name
            self.display_changed.emit()

    def set_window_level(self, window: float, level: float) -> None:
        """Contrast (window width) and brightness (level), both in [0, 1] of the intensity range."""
        window = float(min(max(window, 0.02), 1.0))
        level = float(min(max(level, 0.0), 1.0))
        if (window, level) != (self.window, self.level):
            self.window, self.level = window, level
            self.display_changed.emit()

    def reset_display(self) -> None:
        """Full intensity range, heatmap off."""
        self.set_window_level(1.0, 0.5)

    # -- derived -----------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Class names of the current result (model-card order)."""
        vr = self.volume_result
        return list(vr.classes) if vr else []

    def predicted_class(self, index: int | None = None) -> str | None:
        """The most probable class of a B-scan (default: the current one)."""
        vr = self.volume_result
        if vr is None or vr.n == 0:
            return None
        i = self.slice_index if index is None else index
        return vr.classes[int(vr.probs[i].argmax())]

    def shown_class(self) -> str | None:
        """The class whose heatmap is shown: the chosen one, else the B-scan's predicted class."""
        return self.cam_class or self.predicted_class()

    def heatmap_probability(self) -> float | None:
        """The probability of the heatmap's class on the current B-scan (it scales the overlay)."""
        vr, cls = self.volume_result, self.shown_class()
        if vr is None or cls is None or vr.n == 0:
            return None
        return vr.probability(self.slice_index, cls)

    def heatmap_rgba(self) -> np.ndarray | None:
        """The current B-scan's overlay as RGBA ``[h, w, 4]`` (``core.cam.cam_rgba``: opacity =
        opacity setting x class probability x CAM), or None without CAMs."""
        vol, vr, cls = self.volume, self.volume_result, self.shown_class()
        if vol is None or vr is None or vr.cams is None or cls is None:
            return None
        size = vol.bscans.shape[1:]
        p = vr.probability(self.slice_index, cls)
        return cam_rgba(vr.cam(self.slice_index, cls, size=size), p, alpha=self.opacity)

    def heatmap_text(self) -> str:
        """What the heatmap shows, for its legend: 'cnv evidence · p 0.87: 87 % strength', or that a
        class the model does not see here is not painted."""
        cls, p, vr = self.shown_class(), self.heatmap_probability(), self.volume_result
        if cls is None or p is None or vr is None or vr.cams is None:
            return ""  # no activation maps: nothing painted, nothing to explain
        if round(p, 2) <= 0:
            return f"{cls} evidence \u00b7 p {p:.2f}: not painted"
        return f"{cls} evidence \u00b7 p {p:.2f}: {p:.0%} strength"

    def render(self) -> np.ndarray | None:
        """The current B-scan as the viewer shows it: RGB uint8 ``[h, w, 3]`` (None if nothing); side
        by side, ``[h, 2 w + SIDE_GAP, 3]``: without the heatmap on the left, with it on the right."""
        vol = self.volume
        if vol is None:
            return None
        grey = window_level(vol.bscans[self.slice_index], self.window, self.level)
        plain = np.repeat(grey[..., None], 3, axis=2)
        rgba = self.heatmap_rgba() if self.overlay_on or self.side_by_side else None
        shown = blend(grey, rgba) if rgba is not None else plain
        if not self.side_by_side:
            return shown
        gap = np.empty((grey.shape[0], SIDE_GAP, 3), np.uint8)
        gap[:] = SIDE_GAP_COLOUR
        return np.concatenate([plain, gap, shown], axis=1)

    def slice_text(self) -> str:
        """'B-scan 13 of 25 · 2.88 mm' (position from the first B-scan when spacing is known)."""
        vol = self.volume
        if vol is None:
            return "No B-scan"
        text = f"B-scan {self.slice_index + 1} of {vol.n_bscans}"
        if vol.spacing.slice:
            text += f" \u00b7 {self.slice_index * vol.spacing.slice:.2f} mm"
        vr = self.volume_result
        if vr is not None and not bool(vr.gradable[self.slice_index]):
            reason = vr.quality_reasons[self.slice_index] if self.slice_index < len(vr.quality_reasons) else ""
            text += " \u00b7 ungradable" + (f" ({reason})" if reason else "")
        return text

    def probabilities_text(self, by_probability: bool = False) -> str:
        """'normal 0.05 · drusen 0.10 · cnv 0.85' for the current B-scan (model-card order, or the most
        probable class first)."""
        vr = self.volume_result
        if vr is None:
            return ""
        p = vr.probs[self.slice_index]
        order = sorted(range(len(vr.classes)), key=lambda i: -float(p[i])) if by_probability else range(len(vr.classes))
        return " \u00b7 ".join(f"{vr.classes[i]} {p[i]:.2f}" for i in order)
