"""Background work: reading + screening exams and writing reports, off the GUI thread.

A :class:`Job` is a QRunnable that runs a plain function ``fn(progress, cancel)`` on the global
QThreadPool and reports back through Qt signals (delivered on the GUI thread). The functions
themselves (:func:`load_and_screen`, :func:`export_report`) know nothing about Qt and are tested
directly; a job may hand pieces of its result over before it ends (``Job.emit_partial``: each
screened volume, so the worklist fills while the batch runs and Cancel keeps what is done).
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

import app.qtguard  # noqa: F401  (PySide6 6.12 on Python 3.11 drops references to None; see there)
import core.outputs
from core.audit import SignOff, eye_record_key
from core.deid import Deidentifier
from core.errors import Cancelled, InputError
from core.modelcard import ModelCard
from core.outputs import sr_path
from core.report import ReportOptions
from core.results import ExamResult, EyeResult
from core.screening import group_exams, open_volumes, screen_volumes, unique_volumes

__all__ = [
    "CancelFn",
    "ExportRequest",
    "Job",
    "JobSignals",
    "LoadOutcome",
    "ProgressFn",
    "ScreenedEye",
    "deidentified_signoffs",
    "export_report",
    "load_and_screen",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]


class JobSignals(QObject):
    """Signals of a :class:`Job` (a QRunnable cannot have signals itself)."""

    progress = Signal(int, int, str)  # done, total, message
    partial = Signal(object)  # a piece of the result, ready before the job ends (one screened volume)
    finished = Signal(object)  # the function's result
    failed = Signal(object, str)  # the exception, its formatted traceback
    cancelled = Signal()


class Job(QRunnable):
    """Run ``fn(progress, cancel)`` in the thread pool; ``cancel()`` asks it to stop early."""

    def __init__(self, fn: Callable[[ProgressFn, CancelFn], Any], name: str = "job") -> None:
        super().__init__()
        self.setAutoDelete(False)  # the window keeps a reference until the job ends
        self.fn = fn
        self.name = name
        self.signals = JobSignals()
        self._cancel = threading.Event()
        self.done = threading.Event()

    def emit_partial(self, piece: Any) -> None:
        """Hand a finished piece of the work to the GUI thread now (``signals.partial``)."""
        self.signals.partial.emit(piece)

    def cancel(self) -> None:
        """Ask the job to stop at its next check (it emits ``cancelled`` when it does)."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._cancel.is_set()

    def run(self) -> None:  # noqa: D102 (QRunnable API)
        try:
            result = self.fn(self.signals.progress.emit, self._cancel.is_set)
        except Cancelled:
            log.info("%s cancelled", self.name)
            self.signals.cancelled.emit()
        except InputError as e:  # a bad file or model card: the user's problem, said in words
            log.warning("%s failed: %s", self.name, e)
            self.signals.failed.emit(e, traceback.format_exc())
        except BaseException as e:  # noqa: BLE001 - everything goes back to the GUI, nothing is lost
            log.exception("%s failed", self.name)
            self.signals.failed.emit(e, traceback.format_exc())
        else:
            self.signals.finished.emit(result)
        finally:
            self.done.set()

    def start(self, pool: QThreadPool | None = None) -> None:
        """Queue the job on ``pool`` (default: the global thread pool)."""
        (pool or QThreadPool.globalInstance()).start(self)


@dataclass
class ScreenedEye:
    """One screened volume, handed to the GUI as soon as it is done: its decision, the card that
    screened it, and the volume's identity (``core.screening.volume_identity``)."""

    identity: str
    eye: EyeResult
    card: ModelCard


@dataclass
class LoadOutcome:
    """What one open-and-screen job produced: exams, the card used, the files that failed, and the
    identities of volumes not screened again because they were already open (or listed twice)."""

    exams: list[ExamResult]
    card: ModelCard | None
    errors: list[InputError] = field(default_factory=list)
    n_volumes: int = 0
    duplicates: list[str] = field(default_factory=list)


def load_and_screen(
    paths: Sequence[str | Path],
    get_screener: Callable[[], Any],
    progress: ProgressFn,
    cancel: CancelFn,
    *,
    known: Collection[str] = (),
    on_eye: Callable[[ScreenedEye], None] | None = None,
) -> LoadOutcome:
    """Read every path (collecting bad files instead of stopping), then screen the volumes one by one.

    ``get_screener()`` returns a ``core.inference.Screener`` (or anything with ``.card`` and
    ``.screen``); it is called only if something new could be read. A volume whose identity is in
    ``known`` (already open) or was met earlier in this job is not screened again: its identity goes
    to ``duplicates``. ``on_eye`` gets each volume's result as soon as it is decided, so a later
    ``Cancelled`` (raised when ``cancel()`` turns True) loses only the volume being screened.
    """
    errors: list[InputError] = []
    volumes = open_volumes(paths, errors, progress=progress, cancel=cancel)
    fresh, identities, duplicates = unique_volumes(volumes, known)
    if not fresh:
        return LoadOutcome([], None, errors, 0, duplicates)
    if cancel():
        raise Cancelled()
    progress(0, len(fresh), "Loading the model\u2026")
    screener = get_screener()
    done: list[EyeResult] = []

    def screening_progress(n: int, total: int, message: str) -> None:
        progress(n, total, message or f"Screening B-scan {n} of {total}\u2026")

    def one_done(eye: EyeResult) -> None:
        done.append(eye)
        if on_eye is not None:
            on_eye(ScreenedEye(identities[len(done) - 1], eye, screener.card))

    screen_volumes(fresh, screener, progress=screening_progress, cancel=cancel, on_eye=one_done)
    return LoadOutcome(group_exams(done), screener.card, errors, len(fresh), duplicates)


@dataclass
class ExportRequest:
    """What the export dialog asked for."""

    pdf_path: Path
    deidentify: bool = False
    dicom: bool = False
    deid_dates: str = "remove"  # with deidentify: remove | shift | retain (core.deid)
    referring: str = ""  # the referring clinician (report header; left out when de-identified)
    operator: str = ""  # who took the scan (report header; left out when de-identified)

    @property
    def dicom_path(self) -> Path:
        """Where the DICOM Encapsulated PDF goes: beside the PDF, same name, .dcm."""
        return self.pdf_path.with_suffix(".dcm")

    @property
    def sr_path(self) -> Path:
        """Where the DICOM Structured Report of the result goes: ``<stem>_sr.dcm`` beside the PDF."""
        return sr_path(self.dicom_path)

    @property
    def targets(self) -> list[Path]:
        """Every file the export will write: the PDF and, with ``dicom``, the Encapsulated PDF and the SR
        (as ``octscreen screen --dicom``)."""
        return [self.pdf_path] + ([self.dicom_path, self.sr_path] if self.dicom else [])


def deidentified_signoffs(signoffs: Sequence[SignOff], original: ExamResult, deidentified: ExamResult) -> list[SignOff]:
    """The sign-offs of ``original``'s eyes re-keyed to the same eyes of its de-identified copy (new
    pseudonym and UIDs), their free-text findings left out."""
    by_key = {so.key: so for so in signoffs}
    out = []
    for before, after in zip(original.eyes, deidentified.eyes, strict=True):
        so = by_key.get(eye_record_key(before))
        if so is not None:
            pid, study, series, lat = eye_record_key(after)
            out.append(replace(so, patient_id=pid, study_uid=study, series_uid=series, laterality=lat, finding=""))
    return out


def export_report(
    request: ExportRequest,
    exam: ExamResult,
    card: ModelCard,
    *,
    institution: str = "",
    logo: str | Path | None = None,
    signoffs: Sequence[SignOff] = (),
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> list[Path]:
    """Write the PDF report (and optionally its DICOM Encapsulated PDF and SR) with the eyes' sign-offs;
    returns the files written. A de-identified report keeps who signed what and the year (not the day), but not the
    free-text findings (free text can name the patient, as PS3.15 assumes).

    The writing is ``core.outputs.write_exam_outputs``, the one ``octscreen screen`` uses."""
    pseudo_id = None
    if request.deidentify:  # the same PS3.15 de-identification as `octscreen screen --deidentify`
        original = exam
        exam = Deidentifier(dates=request.deid_dates).exam(exam)
        pseudo_id = exam.patient.patient_id
        signoffs = deidentified_signoffs(signoffs, original, exam)
    options = ReportOptions(
        institution=institution,
        logo=Path(logo) if logo else None,
        deidentify=request.deidentify,
        pseudo_id=pseudo_id,
        referring_clinician=request.referring,
        operator=request.operator,
        signoffs=tuple(signoffs),
    )
    # looked up when called: the one writer of `octscreen screen` too (and the one tests replace)
    outputs = core.outputs.write_exam_outputs(
        exam,
        card,
        request.pdf_path,
        options,
        dicom=request.dicom,
        sr=request.dicom,
        overwrite=overwrite,
        progress=progress,
        cancel=cancel,
    )
    return outputs.files
