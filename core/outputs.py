"""The outputs of one screened exam, written in one place for ``octscreen screen`` and the GUI export.

``write_exam_outputs`` writes the PDF report (``core.report.write_report``), optionally the report as a
DICOM Encapsulated PDF beside it (``<stem>.dcm``) and the result as a DICOM Comprehensive SR
(``<stem>_sr.dcm``), each atomically. With ``unique`` a name that another run took meanwhile
(``FileExistsError`` without ``overwrite``) becomes the next free one (``<stem>_2`` ...), so no result
is lost; the files that follow take the PDF's final stem. Progress and cancel between the files.

The file stems themselves come from ``core.screening.report_stem``, the report id from
``core.report.new_report_id`` (``ReportOptions.report_id``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import Cancelled

if TYPE_CHECKING:
    from core.modelcard import ModelCard
    from core.report import ReportOptions
    from core.results import ExamResult

__all__ = ["ExamOutputs", "write_exam_outputs", "sr_path", "write_unique"]

log = logging.getLogger(__name__)


def sr_path(dcm: Path) -> Path:
    """Where the SR of the DICOM report ``dcm`` goes: ``<stem>_sr.dcm`` beside it."""
    return dcm.with_name(f"{dcm.stem}_sr.dcm")


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
    from core.fileio import next_free

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
    import core.report  # looked up when called: the one report writer (and the one tests replace)

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
    from core.dicom_export import pdf_to_dicom, result_to_sr

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
