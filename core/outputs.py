"""The outputs of one screened exam, written in one place for ``octscreen screen`` and the GUI export.

``write_exam_outputs`` writes the PDF report (``core.report.write_report``), optionally the report as a
DICOM Encapsulated PDF beside it (``<stem>.dcm``) and the result as a DICOM Comprehensive SR
(``<stem>_sr.dcm``), each atomically. With ``unique`` a name that another run took meanwhile
(``FileExistsError`` without ``overwrite``) becomes the next free one (``<stem>_2`` ...), so no result
is lost; the files that follow take the PDF's final stem. Progress and cancel between the files.

``plan_jobs`` groups a run's volumes into exams (``ExamJob``) and names their outputs before any work:
file stems from ``core.screening.report_stem`` (``_2`` ... for a second exam of a patient and date),
report ids from ``core.report.new_report_id``, one random pseudonym per patient when de-identifying.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import Cancelled
from core.fileio import next_free

if TYPE_CHECKING:
    from core.modelcard import ModelCard
    from core.report import ReportOptions
    from core.results import ExamResult
    from core.volume import OctVolume

__all__ = ["ExamJob", "plan_jobs", "ExamOutputs", "write_exam_outputs", "sr_path", "write_unique"]

log = logging.getLogger(__name__)


def sr_path(dcm: Path) -> Path:
    """Where the SR of the DICOM report ``dcm`` goes: ``<stem>_sr.dcm`` beside it."""
    return dcm.with_name(f"{dcm.stem}_sr.dcm")


def _new_report_id() -> str:
    """A report id from ``core.report.new_report_id`` (looked up when called), the GUI's too."""
    from core.report import new_report_id  # noqa: PLC0415 (heavy: numpy, OpenCV; octscreen --help imports this)

    return new_report_id()


@dataclass
class ExamJob:
    """One exam to screen: its volumes, the names it will be written under, and its pseudonym."""

    key: tuple[str, str]
    volumes: list[OctVolume]
    pdf: Path
    dcm: Path | None
    pseudo_id: str = ""
    report_id: str = field(default_factory=_new_report_id)

    @property
    def sr(self) -> Path | None:
        """The Structured Report beside the DICOM report: ``<stem>_sr.dcm``."""
        return sr_path(self.dcm) if self.dcm is not None else None


def plan_jobs(volumes: list[OctVolume], out: Path, *, deidentify: bool, dicom: bool) -> list[ExamJob]:
    """Group volumes into exams (patient id, study UID; first appearance order) and name their outputs.

    Names: ``core.screening.report_stem`` (the GUI's too): identified ``<patient>_<study date>_oct-report``
    (``_2``, ... for a second exam of that patient and date), de-identified ``exam-<n>_oct-report`` (no
    identity or date in file names). One pseudonym per patient id in a run, random (never derived from the id).
    """
    from core.report import pseudonym_for  # noqa: PLC0415 (heavy: numpy, OpenCV; octscreen --help imports this)
    from core.screening import exam_key, report_stem  # noqa: PLC0415 (heavy: numpy; octscreen --help imports this)

    groups: dict[tuple[str, str], list[OctVolume]] = {}
    for v in volumes:
        groups.setdefault(exam_key(v), []).append(v)
    pseudonyms: dict[str, str] = {}
    jobs, used = [], set()
    for i, (key, vols) in enumerate(groups.items(), start=1):
        if deidentify:
            stem = report_stem("", "", deidentify=True, index=i)
        else:
            base = report_stem(key[0], vols[0].study.study_date, deidentify=False)
            n, stem = 1, base
            while stem in used:
                n += 1
                stem = f"{base}_{n}"
        used.add(stem)
        job = ExamJob(key, vols, out / f"{stem}.pdf", (out / f"{stem}.dcm") if dicom else None)
        if deidentify:  # volumes de-identified at the entry already carry their pseudonym
            own = key[0] if key[0].startswith("ANON-") else pseudonym_for(job.report_id)
            job.pseudo_id = pseudonyms.setdefault(key[0], own)
        jobs.append(job)
    return jobs


@dataclass
class ExamOutputs:
    """The files written for one exam, filled in as each is written (after an error it names what was
    written before it); ``renamed`` says which names were taken meanwhile and what was written instead."""

    pdf: Path | None = None
    dcm: Path | None = None
    sr: Path | None = None
    renamed: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Every file written, in order."""
        return [p for p in (self.pdf, self.dcm, self.sr) if p is not None]


def write_unique(path: Path, overwrite: bool, write: Callable[..., object], /, **kwargs) -> Path:
    """``write(path, **kwargs)``; when ``path`` was taken meanwhile (another run writing into the same
    folder: ``FileExistsError`` without overwrite) the next free name ``<stem>_2`` ..., so no result is
    lost. Returns the path written."""
    for _ in range(100):
        try:
            write(path, **kwargs)
            return path
        except FileExistsError:
            if overwrite:
                raise
            path = next_free(path)
    raise FileExistsError(f"{path}: no free name found")


def write_exam_outputs(
    exam: ExamResult,
    card: ModelCard,
    pdf_path: str | Path,
    options: ReportOptions,
    *,
    dicom: bool = False,
    sr: bool = False,
    overwrite: bool = False,
    unique: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    outputs: ExamOutputs | None = None,
) -> ExamOutputs:
    """Write the report of ``exam`` at ``pdf_path`` and, with ``dicom``, its DICOM Encapsulated PDF
    beside it (same stem, ``.dcm``; with ``sr`` also the Structured Report ``<stem>_sr.dcm``).

    ``options.deidentify`` and ``options.pseudo_id`` apply to every file. ``outputs`` (default: a new
    one) is filled in as each file is written and returned. ``progress(done, total, message)`` before
    each file; ``cancel()`` true before a DICOM file raises ``Cancelled`` (the files written stay).
    """
    # looked up when called: the one report writer (and the one tests replace)
    import core.report  # noqa: PLC0415 (heavy: numpy, OpenCV; octscreen --help imports this)

    out = outputs if outputs is not None else ExamOutputs()
    progress = progress or (lambda *_: None)
    pdf_path = Path(pdf_path)
    steps = 1 + (1 + int(sr) if dicom else 0)
    progress(0, steps, f"Writing {pdf_path.name}\u2026")
    write_pdf = core.report.write_report
    if unique:
        pdf = write_unique(pdf_path, overwrite, write_pdf, exam=exam, card=card, options=options, overwrite=overwrite)
    else:
        pdf = Path(write_pdf(pdf_path, exam, card, options, overwrite=overwrite))
    out.pdf = pdf
    if pdf != pdf_path:
        out.renamed.append(f"{pdf_path.name} appeared meanwhile (another run?): written as {pdf.name}")
    if not dicom:
        progress(steps, steps, "Report written")
        return out
    from core.dicom_export import pdf_to_dicom, result_to_sr  # noqa: PLC0415 (heavy: pydicom, numpy)

    pseudo_id = options.pseudo_id or None

    def to_dicom(target: Path) -> Path:
        return pdf_to_dicom(pdf, exam, target, deidentify=options.deidentify, overwrite=overwrite, pseudo_id=pseudo_id)

    def to_sr(target: Path) -> Path:
        return result_to_sr(
            exam, target, card=card, deidentify=options.deidentify, overwrite=overwrite, pseudo_id=pseudo_id
        )

    def write(target: Path, make: Callable[[Path], Path]) -> Path:
        return write_unique(target, overwrite, make) if unique else Path(make(target))

    if cancel is not None and cancel():
        raise Cancelled()
    target = pdf.with_suffix(".dcm")
    progress(1, steps, f"Writing {target.name}\u2026")
    out.dcm = write(target, to_dicom)
    if sr:
        if cancel is not None and cancel():
            raise Cancelled()
        target = sr_path(out.dcm)
        progress(2, steps, f"Writing {target.name}\u2026")
        out.sr = write(target, to_sr)
    progress(steps, steps, "Report written")
    return out
