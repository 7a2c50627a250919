"""The PDF screening report: one printable report (A4 or Letter) per patient exam.

Built with reportlab platypus: an institution header (or a visible "Institution not set"), who
referred the patient, took the scan and reviews the report, the patient block, one coloured decision
box per eye (colour *and* text) with "signed by" or "NOT SIGNED", then per eye the class scores, the
scan (protocol, device, geometry, signal quality), a per-B-scan probability strip chart (ungradable
B-scans shaded, evidence B-scans marked) and the evidence B-scans with their CAM overlays and as
scanned, with scale bars and sides; then the model (intended use, what it was trained on, its measured
performance from the card), the disclaimer and per eye the clinician's sign-off (``ReportOptions.signoffs``)
or the empty signature lines. Every page carries "page X of Y", the report id, the software version
and the generation time (local, with its zone); the model's notice is shown in red in a banner and in
the footer of every page. No local file path is printed.

``deidentify`` removes the direct identifiers (name, birth date, accession number, study and series
descriptions, the referring clinician and the operator, a sign-off's free-text finding) and replaces
the patient id by a pseudonym, in the page text and in the PDF metadata.

The file is written atomically (temp file in the same folder, then rename); an existing file is
never replaced unless asked.

The package, by section: ``options`` (ReportOptions, report id, pseudonym), ``layout`` (colours,
fonts, text and image helpers), ``header`` (header, notice banner, patient block, page
decoration), ``decision`` (decision boxes, scores and reasons, image quality), ``evidence`` (strip
chart, evidence B-scans with CAM overlays), ``closing`` (model, disclaimer, signature),
``builder`` (``write_report``: the story and its pages) and ``preview`` (a made-up exam from the
simulator, for layout previews). Only ``preview`` imports the simulator.
"""

from __future__ import annotations

# The evidence images are drawn through ``core.report.overlay`` and ``core.report._rgb_image``, looked up
# on the package when drawing, so that the package is the one place to replace them (tests do).
from core.cam import overlay
from core.fileio import atomic_output
from core.volume import display_name, format_date

#: (regular, bold) report font names once chosen (``layout._report_fonts``); None = not yet.
_fonts: tuple[str, str] | None = None

from core.report.builder import _ReportBuilder, write_report  # noqa: E402
from core.report.layout import URGENCY_COLOURS, _rgb_image  # noqa: E402
from core.report.options import (  # noqa: E402
    DEIDENTIFIED_MARKER,
    PSEUDONYM_KEYWORD,
    ReportOptions,
    new_report_id,
    pseudonym_for,
)
from core.report.preview import preview_exam  # noqa: E402

__all__ = [
    "ReportOptions",
    "write_report",
    "atomic_output",
    "pseudonym_for",
    "new_report_id",
    "display_name",
    "format_date",
    "URGENCY_COLOURS",
    "DEIDENTIFIED_MARKER",
    "PSEUDONYM_KEYWORD",
    "preview_exam",
]

_ = (overlay, _rgb_image, _ReportBuilder)  # part of the package namespace (patched / used by the tests)
