"""The main job, as a library call: volumes (or paths) in, one ``ExamResult`` per patient exam out.

``screen_volumes`` runs the screener on each volume, decides each eye (``core.aggregate.decide``
with the model card's thresholds) and groups the eyes by (patient id, study UID) into exams;
``screen_paths`` first opens each path with ``core.io.open_path`` and keeps going past bad files,
collecting their ``InputError``s.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.aggregate import decide
from core.errors import Cancelled, InputError
from core.modelcard import Thresholds
from core.results import ExamResult, EyeResult
from core.volume import DeviceInfo, Laterality, OctVolume, PatientInfo, StudyInfo

__all__ = [
    "screen_volumes",
    "screen_paths",
    "open_volumes",
    "group_exams",
    "exam_key",
    "eye_order",
    "volume_identity",
    "unique_volumes",
    "report_stem",
    "REPORT_SUFFIX",
    "PixelHold",
]

log = logging.getLogger(__name__)

_EYE_ORDER = {Laterality.OD: 0, Laterality.OS: 1, Laterality.UNKNOWN: 2}


REPORT_SUFFIX = "_oct-report"


def _safe(text: str, fallback: str) -> str:
    """A file-name-safe version of ``text`` (letters, digits, '-', '_', '.'), at most 40 characters."""
    t = re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-.")
    return t[:40] or fallback


def report_stem(patient_id: str, study_date: str, *, deidentify: bool, index: int = 1) -> str:
    """The one naming rule of an exam's outputs (PDF, DICOM), for the CLI and the GUI alike:
    ``<patient id>_<study date>_oct-report`` (``unknown`` / ``nodate`` when missing), or, de-identified,
    ``exam-<index>_oct-report``: no identity and no date in a de-identified file name."""
    if deidentify:
        return f"exam-{index:03d}{REPORT_SUFFIX}"
    return f"{_safe(patient_id, 'unknown')}_{_safe(study_date, 'nodate')}{REPORT_SUFFIX}"


def exam_key(volume: OctVolume) -> tuple[str, str]:
    """What makes one exam (one report): (patient id, study UID)."""
    return volume.patient.patient_id, volume.study.study_uid


def eye_order(eye: EyeResult) -> int:
    """Sort key of the eyes within an exam: OD, then OS, then unknown."""
    return _EYE_ORDER[eye.eye.laterality]


def volume_identity(volume: OctVolume) -> str:
    """What makes two opened volumes the same scan: the patient id, the B-scans' shape and type and a
    digest of their pixels. A file opened twice, a folder holding a file already open and a copy of it
    elsewhere all give the same identity; neither the path (a copy is the same scan) nor the laterality
    (the user may set an unknown one) takes part."""
    b = volume.bscans
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{volume.patient.patient_id}\0{b.shape}\0{b.dtype.str}\0".encode())
    h.update(np.ascontiguousarray(b).data)
    return h.hexdigest()


def unique_volumes(
    volumes: Iterable[OctVolume],
    known: Iterable[str] = (),
    *,
    identity: Callable[[OctVolume], str] = volume_identity,
) -> tuple[list[OctVolume], list[str], list[str]]:
    """The volumes to screen, without a scan twice: (fresh volumes, their identities, the identities
    skipped). A volume whose :func:`volume_identity` is in ``known`` (already open in the GUI) or met
    earlier in ``volumes`` (a file given twice, a folder holding a file also given, a copy) is skipped.
    The one de-duplication of ``octscreen screen`` and the GUI worker. ``identity``: how to get a
    volume's identity (``octscreen screen`` takes it as the volume is read, before its pixels may go)."""
    seen = set(known)
    fresh: list[OctVolume] = []
    identities: list[str] = []
    duplicates: list[str] = []
    for vol in volumes:
        ident = identity(vol)
        if ident in seen:
            duplicates.append(ident)
            continue
        seen.add(ident)
        fresh.append(vol)
        identities.append(ident)
    return fresh, identities, duplicates


def group_exams(eyes: Iterable[EyeResult]) -> list[ExamResult]:
    """Group eye results by (patient id, study UID), in order of first appearance; eyes within an
    exam sorted OD, OS, unknown (stable otherwise)."""
    groups: dict[tuple[str, str], list[EyeResult]] = {}
    for e in eyes:
        groups.setdefault((e.eye.patient_id, e.eye.study_uid), []).append(e)
    exams = []
    for members in groups.values():
        members = sorted(members, key=eye_order)
        vol = members[0].volume_result.volume if members[0].volume_result is not None else None
        if vol is not None:
            exams.append(ExamResult(patient=vol.patient, study=vol.study, device=vol.device, eyes=members))
        else:
            key = members[0].eye
            exams.append(
                ExamResult(
                    patient=PatientInfo(patient_id=key.patient_id),
                    study=StudyInfo(study_uid=key.study_uid),
                    device=DeviceInfo(),
                    eyes=members,
                )
            )
    return exams


def screen_volumes(
    volumes: Sequence[OctVolume],
    screener,
    *,
    thresholds: Thresholds | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    on_eye: Callable[[EyeResult], None] | None = None,
) -> list[ExamResult]:
    """Screen every volume and group the eye decisions into exams.

    screener: a ``core.inference.Screener`` (anything with ``.screen(volume, progress, cancel)`` and
    ``.card``). thresholds: default the screener's model card thresholds. progress(done, total, msg)
    counts B-scans over all volumes. ``cancel()`` is passed down; ``core.errors.Cancelled`` propagates.
    ``on_eye(eye)`` is called as soon as each volume's decision is made (the GUI lists it then, and
    keeps what was screened when a later volume is cancelled).
    """
    th = thresholds if thresholds is not None else screener.card.thresholds
    total = sum(v.n_bscans for v in volumes)
    done_before = 0
    eyes: list[EyeResult] = []
    for vol in volumes:

        def vol_progress(done: int, _n: int, msg: str, _base: int = done_before) -> None:
            if progress is not None:
                progress(_base + done, total, msg)

        vr = screener.screen(vol, progress=vol_progress, cancel=cancel)
        eyes.append(decide(vr, th))
        if on_eye is not None:
            on_eye(eyes[-1])
        done_before += vol.n_bscans
    return group_exams(eyes)


def open_volumes(
    paths: Iterable[str | Path],
    errors: list | None = None,
    *,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[OctVolume]:
    """Every volume ``core.io.open_path`` finds under ``paths``, in order: the one open loop of the
    CLI (``octscreen screen``) and the GUI worker. Bad files are collected in ``errors``
    (``InputError``s, each once) and skipped; without ``errors`` the first bad path raises.
    ``progress(i, n, message)`` before each path; ``cancel()`` checked before each path
    (``core.errors.Cancelled``)."""
    from core.io import open_path  # noqa: PLC0415 (heavy: pydicom and the readers; not needed to group or name)

    items = [Path(p) for p in paths]
    volumes: list[OctVolume] = []
    for i, p in enumerate(items):
        if cancel is not None and cancel():
            raise Cancelled()
        if progress is not None:
            progress(i, len(items), f"Reading {p.name}\u2026")
        try:
            volumes.extend(open_path(p, errors=errors))
        except InputError as e:
            if errors is None:
                raise
            log.warning("%s", e)
            if not any(e is x or str(e) == str(x) for x in errors):  # open_path may have collected it already
                errors.append(e)
    return volumes


class PixelHold:
    """Bounds the pixels ``octscreen screen`` holds between reading its inputs and screening them.

    Every input is read first (to find bad files, repeated scans and the exams before any work), so a
    run over many files would hold every cube at once. :meth:`keep` counts each volume's pixel bytes;
    past ``budget`` bytes (default: the ``max_held_bytes`` limit), a volume read from a single file
    gives its pixels back (a zero-stride placeholder of the same shape and type, so grouping and
    counting still work) and :meth:`restore` reads that file again when the volume's exam is screened;
    :meth:`release` gives them back again after it. Volumes from a folder (image stacks, single-frame
    series) are always kept: reading the folder again could cost more than holding them. A file
    that no longer holds the same scan (same :func:`volume_identity`) when it is read again is an
    ``InputError`` for that exam only.
    """

    def __init__(self, budget: int | None = None) -> None:
        from core import limits  # noqa: PLC0415 (keeps this module light for the GUI's import)

        self.budget = int(budget if budget is not None else limits.current().max_held_bytes)
        self.held = 0
        self.released = 0  # volumes whose pixels were given back at least once
        self._files: dict[int, tuple[Path, str]] = {}  # id(volume) -> (file, identity)

    def keep(self, volume: OctVolume, identity: str) -> None:
        """Account for ``volume`` (just read, identity computed); release it if over the budget."""
        nbytes = int(volume.bscans.nbytes)
        source = volume.source
        if self.held + nbytes <= self.budget or source is None or not source.is_file():
            self.held += nbytes
            return
        self._files[id(volume)] = (source, identity)
        self._drop(volume)
        self.released += 1

    def follow(self, old: OctVolume, new: OctVolume) -> None:
        """``new`` replaces ``old`` (a de-identified copy): it is restored from the same file."""
        if id(old) in self._files:
            self._files[id(new)] = self._files.pop(id(old))

    def restore(self, volume: OctVolume) -> None:
        """Give ``volume`` its pixels again (a no-op for a volume that was kept)."""
        if id(volume) not in self._files or not _is_placeholder(volume.bscans):
            return
        from core.io import open_path  # noqa: PLC0415 (heavy: pydicom and the readers)

        source, identity = self._files[id(volume)]
        for fresh in open_path(source):
            if volume_identity(fresh) == identity:
                volume.bscans = fresh.bscans
                return
        raise InputError(source, "changed while screening: the scan read from it first is no longer in it")

    def release(self, volume: OctVolume) -> None:
        """After its exam: give a restored volume's pixels back again."""
        if id(volume) in self._files:
            self._drop(volume)

    @contextmanager
    def pixels(self, volumes: Iterable[OctVolume]) -> Iterator[None]:
        """The pixels of ``volumes`` for the ``with`` block: read again where they were given back
        (:meth:`restore`; its ``InputError`` leaves the block unrun), given back after it, however it
        ends (:meth:`release`)."""
        volumes = list(volumes)
        try:
            for volume in volumes:
                self.restore(volume)
            yield
        finally:
            for volume in volumes:
                self.release(volume)

    @staticmethod
    def _drop(volume: OctVolume) -> None:
        volume.bscans = np.broadcast_to(np.zeros((), volume.bscans.dtype), volume.bscans.shape)


def _is_placeholder(a: np.ndarray) -> bool:
    return a.size > 0 and all(s == 0 for s in a.strides)


def screen_paths(
    paths: Iterable[str | Path],
    screener,
    *,
    errors: list | None = None,
    thresholds: Thresholds | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> list[ExamResult]:
    """Open each path (file or folder) with ``core.io.open_path`` and screen what it holds.

    Bad files are collected in ``errors`` (``InputError``s, in order) and skipped; without
    ``errors`` the first bad path raises. Volumes of the same exam found under different paths
    end up in one ``ExamResult``.
    """
    volumes = open_volumes(paths, errors)
    return screen_volumes(volumes, screener, thresholds=thresholds, progress=progress, cancel=cancel)
