"""The PDF screening report: one printable report (A4 or Letter) per patient exam.

Built with reportlab platypus: an institution header, the patient block, one coloured decision box
per eye (colour *and* text), then per eye the class scores, a per-B-scan probability strip chart
(ungradable B-scans shaded, evidence B-scans marked), the evidence B-scans with their CAM overlays
and the gradability notes; then the model and its model card, the disclaimer and the reviewing
clinician's signature lines. Every page carries "page X of Y", the report id, the software version
and the generation time; a demonstration model's warning is shown in red in a banner and in the
footer of every page.

``deidentify`` removes the direct identifiers (name, birth date, accession number, source paths) and
replaces the patient id by a pseudonym, in the page text and in the PDF metadata.

The file is written atomically (temp file in the same folder, then rename); an existing file is
never replaced unless asked.
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
import math
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

import numpy as np

import core
from core.cam import colour_bar, overlay
from core.fileio import atomic_output
from core.modelcard import DEMO_WARNING, ModelCard, Thresholds
from core.results import ExamResult, EyeResult, Urgency, VolumeResult
from core.tiers import CLASS_COLOURS, DEFAULT_TIERS, class_colour
from core.volume import (
    DeviceInfo,
    EyeKey,
    Laterality,
    OctVolume,
    PatientInfo,
    StudyInfo,
    age_years,
    display_name,
    format_date,
)

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

log = logging.getLogger(__name__)

#: Written into the PDF keywords of a de-identified report (``core.dicom_export`` checks for it),
#: followed by ``pseudonym=<id>`` so the DICOM export can reuse the report's pseudonym.
DEIDENTIFIED_MARKER = "de-identified"
PSEUDONYM_KEYWORD = re.compile(r"pseudonym=([A-Za-z0-9._-]{1,64})(?=[,)\s]|$)")
DISCLAIMER = (
    "OCT Screen is a screening aid; it does not replace examination by an eye-care "
    "professional. The decision above is a suggestion for referral triage and must be "
    "reviewed and signed by a qualified clinician."
)

#: Urgency -> (background, text colour) of its decision box, from ``core.tiers`` (the one owner;
#: the GUI uses the same). The box always carries the tier in words as well.
URGENCY_COLOURS: dict[Urgency, tuple[str, str]] = {
    u: (DEFAULT_TIERS[u.value].colour, DEFAULT_TIERS[u.value].text_colour) for u in Urgency
}
_RED, _GREY, _DARK = "#C62828", "#666666", "#1A1A1A"
_EVIDENCE_COLOUR = "#1565C0"
_SEX = {"M": "Male", "F": "Female", "O": "Other"}


@dataclass
class ReportOptions:
    """How a report looks and whom it names. All optional."""

    institution: str = ""
    institution_address: str = ""  # one or more lines ('\n' separated)
    logo: Path | None = None  # PNG/JPEG; an unreadable logo is skipped with a warning
    page_size: Literal["A4", "Letter"] = "A4"
    deidentify: bool = False
    software_version: str = core.__version__
    report_id: str | None = None  # default: a short id derived from a random UUID
    clinician: str = ""  # pre-filled name on the signature line
    pseudo_id: str | None = None  # patient pseudonym when de-identifying (default 'ANON-<report id>')
    generated: _dt.datetime | None = None  # generation time (default: now, local time zone)


# ----------------------------------------------------------------------------------------------
# small helpers shared with core.dicom_export
# ----------------------------------------------------------------------------------------------


def pseudonym_for(report_id: str) -> str:
    """The default patient pseudonym of a de-identified report: 'ANON-<report id>'.

    Derived from the random report id, never from the patient's identity (a hash of a short
    hospital number could be reversed by trying all numbers)."""
    return f"ANON-{report_id}"


def new_report_id() -> str:
    """A short random report id: 10 upper-case hex digits of a UUID4."""
    return uuid.uuid4().hex[:10].upper()


def _eye_title(eye: EyeResult) -> str:
    """'Right eye (OD)'; 'Right eye (OD, set by user)' when the user said which eye it is."""
    title = eye.eye.laterality.long_name
    return title[:-1] + ", set by user)" if eye.laterality_set_by_user else title


def _rule_text(th: Thresholds, cls: str, tiers: dict | None = None) -> str:
    """The decision rule of ``cls`` in the scores table, e.g. '>= 0.30: urgent referral'."""
    words = tiers or DEFAULT_TIERS
    for tier, table in (("urgent", th.urgent), ("soon", th.soon), ("routine", th.routine)):
        if cls in table:
            return f"\u2265 {table[cls]:.2f}: {words[tier].name.lower()}"
    if cls in th.normal:
        return f"\u2265 {th.normal[cls]:.2f}: no referral"
    return "\u2013"


def _class_colour(classes: list[str], name: str) -> str:
    others = [c for c in classes if c.lower() not in CLASS_COLOURS]
    return class_colour(name, others.index(name) if name in others else 0)


# ----------------------------------------------------------------------------------------------
# fonts
# ----------------------------------------------------------------------------------------------

_FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/Library/Fonts",
    str(Path.home() / ".fonts"),
    str(Path(os.environ.get("WINDIR", "C:/Windows")) / "Fonts"),
)
_fonts: tuple[str, str] | None = None


def _report_fonts() -> tuple[str, str]:
    """(regular, bold) font names: DejaVu Sans embedded when installed, else Helvetica."""
    global _fonts
    if _fonts is None:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont

        _fonts = ("Helvetica", "Helvetica-Bold")
        for d in _FONT_DIRS:
            regular, bold = Path(d) / "DejaVuSans.ttf", Path(d) / "DejaVuSans-Bold.ttf"
            if regular.is_file() and bold.is_file():
                try:
                    pdfmetrics.registerFont(TTFont("OctDejaVu", str(regular)))
                    pdfmetrics.registerFont(TTFont("OctDejaVu-Bold", str(bold)))
                    pdfmetrics.registerFontFamily(
                        "OctDejaVu",
                        normal="OctDejaVu",
                        bold="OctDejaVu-Bold",
                        italic="OctDejaVu",
                        boldItalic="OctDejaVu-Bold",
                    )
                    _fonts = ("OctDejaVu", "OctDejaVu-Bold")
                except Exception as e:  # a damaged font file must not stop a report
                    log.warning("cannot use font %s (%s); using Helvetica", regular, e)
                break
    return _fonts


_ASCII_FALLBACK = str.maketrans({"\u2265": ">=", "\u2264": "<=", "\u2192": "->", "\u2212": "-"})


def _fit(text: str) -> str:
    """Text the report font can show: with Helvetica (cp1252) unknown characters become '?',
    the em dash and the other cp1252 punctuation stay."""
    if _report_fonts()[0] != "Helvetica":
        return text
    return text.translate(_ASCII_FALLBACK).encode("cp1252", errors="replace").decode("cp1252")


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` characters (an ellipsis marks the cut): a 5000-character name from a damaged
    or hostile header must not push a table cell past the page (reportlab cannot split a cell)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _x(text: object, limit: int = 600) -> str:
    """Plain text -> escaped paragraph markup the font can show, clipped to ``limit`` characters."""
    return escape(_fit(_clip(str(text), limit)))


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------


def write_report(
    path: str | Path,
    exam: ExamResult,
    card: ModelCard,
    options: ReportOptions | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the screening report of one patient exam as a PDF at ``path``; return ``path``.

    Atomic: the PDF is built in a temp file beside ``path`` and renamed at the end; on any error
    the temp file is removed and nothing is left. ``FileExistsError`` if ``path`` exists and not
    ``overwrite``.
    """
    opts = options or ReportOptions()
    out = Path(path)
    builder = _ReportBuilder(exam, card, opts)
    with atomic_output(out, overwrite) as tmp:
        builder.build(tmp)
    log.info("wrote report %s (%d eye(s), report id %s)", out, len(exam.eyes), builder.report_id)
    return out


class _ReportBuilder:
    """Builds the platypus story and page decorations of one report."""

    def __init__(self, exam: ExamResult, card: ModelCard, opts: ReportOptions):
        from reportlab.lib.pagesizes import A4, letter

        if opts.page_size not in ("A4", "Letter"):
            raise ValueError(f"page_size must be 'A4' or 'Letter', got {opts.page_size!r}")
        self.exam, self.card, self.opts = exam, card, opts
        self.page = A4 if opts.page_size == "A4" else letter
        self.report_id = opts.report_id or new_report_id()
        self.generated = (opts.generated or _dt.datetime.now().astimezone()).strftime("%Y-%m-%d %H:%M %Z").strip()
        self.demo = bool(card.demo) or any(
            e.volume_result is not None and e.volume_result.demo_model for e in exam.eyes
        )
        self.notice = DEMO_WARNING if self.demo else card.warning
        self.patient_id = (
            (opts.pseudo_id or pseudonym_for(self.report_id)) if opts.deidentify else _clip(exam.patient.patient_id, 64)
        )
        self.font, self.bold = _report_fonts()
        self.styles = self._styles()

    # -- styles -------------------------------------------------------------------------------
    def _styles(self) -> dict:
        from reportlab.lib import colors
        from reportlab.lib.enums import TA_CENTER, TA_RIGHT
        from reportlab.lib.styles import ParagraphStyle

        base = ParagraphStyle("base", fontName=self.font, fontSize=9, leading=11.5, textColor=colors.HexColor(_DARK))
        s = {"base": base}
        s["small"] = ParagraphStyle("small", base, fontSize=7.5, leading=9.5, textColor=colors.HexColor(_GREY))
        s["label"] = ParagraphStyle("label", base, fontSize=8, textColor=colors.HexColor(_GREY))
        s["value"] = ParagraphStyle("value", base, fontName=self.bold, fontSize=9.5)
        s["title"] = ParagraphStyle("title", base, fontName=self.bold, fontSize=17, leading=21, alignment=TA_RIGHT)
        s["subtitle"] = ParagraphStyle("subtitle", s["small"], alignment=TA_RIGHT)
        s["inst"] = ParagraphStyle("inst", base, fontName=self.bold, fontSize=12, leading=15)
        s["h2"] = ParagraphStyle("h2", base, fontName=self.bold, fontSize=11.5, leading=14, spaceBefore=4, spaceAfter=3)
        s["h3"] = ParagraphStyle("h3", base, fontName=self.bold, fontSize=9.5, leading=12, spaceBefore=3, spaceAfter=2)
        s["box_eye"] = ParagraphStyle("box_eye", base, fontName=self.bold, fontSize=9, leading=11)
        s["box_head"] = ParagraphStyle("box_head", base, fontName=self.bold, fontSize=12.5, leading=15)
        s["box_text"] = ParagraphStyle("box_text", base, fontSize=8.5, leading=10.5)
        s["banner"] = ParagraphStyle(
            "banner", base, fontName=self.bold, fontSize=12, leading=15, alignment=TA_CENTER, textColor=colors.white
        )
        s["banner_small"] = ParagraphStyle(
            "banner_small", base, fontSize=8.5, leading=10.5, alignment=TA_CENTER, textColor=colors.white
        )
        s["caption"] = ParagraphStyle("caption", base, fontSize=8, leading=10, alignment=TA_CENTER)
        s["bullet"] = ParagraphStyle("bullet", base, leftIndent=9, bulletIndent=0)
        return s

    # -- document -----------------------------------------------------------------------------
    def build(self, target: Path) -> None:
        from reportlab.lib.units import mm
        from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate

        subject = "OCT screening report" + (f" ({DEIDENTIFIED_MARKER})" if self.opts.deidentify else "")
        doc = BaseDocTemplate(
            str(target),
            pagesize=self.page,
            leftMargin=15 * mm,
            rightMargin=15 * mm,
            topMargin=13 * mm,
            bottomMargin=19 * mm,
            title=f"OCT screening report {self.report_id}",
            author=f"OCT Screen {self.opts.software_version}",
            subject=subject,
            creator=f"OCT Screen {self.opts.software_version}",
            keywords=", ".join(
                ["OCT", "screening"] + self._deidentified_keywords() + (["demonstration model"] if self.demo else [])
            ),
        )
        frame = Frame(
            doc.leftMargin,
            doc.bottomMargin,
            doc.width,
            doc.height,
            id="body",
            leftPadding=0,
            rightPadding=0,
            topPadding=0,
            bottomPadding=0,
        )
        doc.addPageTemplates([PageTemplate(id="page", frames=[frame])])
        self.width = doc.width
        story = self._story()
        doc.build(story, canvasmaker=self._canvas_class())

    def _deidentified_keywords(self) -> list[str]:
        """['de-identified', 'pseudonym=<id>'] for a de-identified report, else []."""
        if not self.opts.deidentify:
            return []
        tag = f"pseudonym={self.patient_id}"
        if PSEUDONYM_KEYWORD.fullmatch(tag) is None:
            log.warning(
                "pseudonym %r has characters other than letters, digits, '.', '_', '-': not recorded "
                "in the PDF keywords",
                self.patient_id,
            )
            return [DEIDENTIFIED_MARKER]
        return [DEIDENTIFIED_MARKER, tag]

    def _canvas_class(self):
        """A canvas that knows the page count when it draws each page's header and footer."""
        from reportlab.pdfgen.canvas import Canvas

        decorate = self._decorate

        class _NumberedCanvas(Canvas):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self._pages: list[dict] = []

            def showPage(self) -> None:  # noqa: N802 (reportlab API)
                self._pages.append(dict(self.__dict__))
                self._startPage()

            def save(self) -> None:
                for state in self._pages:
                    self.__dict__.update(state)
                    decorate(self, len(self._pages))
                    super().showPage()
                super().save()

        return _NumberedCanvas

    def _decorate(self, canvas, total: int) -> None:
        """Header (continuation pages) and footer of the current page."""
        from reportlab.lib import colors
        from reportlab.lib.units import mm

        w, h = self.page
        left, right = 15 * mm, w - 15 * mm
        number = canvas.getPageNumber()
        canvas.saveState()
        if number > 1:
            canvas.setFont(self.font, 7.5)
            canvas.setFillColor(colors.HexColor(_GREY))
            canvas.drawString(left, h - 8 * mm, _fit(self._running_head()))
            canvas.drawRightString(right, h - 8 * mm, _fit(f"Report {self.report_id}"))
        canvas.setStrokeColor(colors.HexColor("#BBBBBB"))
        canvas.setLineWidth(0.5)
        canvas.line(left, 15 * mm, right, 15 * mm)
        if self.notice:
            canvas.setFillColor(colors.HexColor(_RED))
            canvas.setFont(self.bold, 9)
            canvas.drawCentredString(w / 2, 10.5 * mm, _fit(self.notice.upper()))
        canvas.setFont(self.font, 7.5)
        canvas.setFillColor(colors.HexColor(_GREY))
        canvas.drawString(
            left,
            6 * mm,
            _fit(
                f"Report {self.report_id} \u00b7 OCT Screen {self.opts.software_version}"
                f" \u00b7 generated {self.generated}"
            ),
        )
        canvas.drawRightString(right, 6 * mm, f"page {number} of {total}")
        canvas.restoreState()

    def _running_head(self) -> str:
        date = format_date(self.exam.study.study_date) or "date unknown"
        return f"OCT screening report \u00b7 patient ID {self.patient_id or 'unknown'} \u00b7 exam {date}"

    # -- story --------------------------------------------------------------------------------
    def _story(self) -> list:
        from reportlab.platypus import KeepTogether, Spacer

        story: list = [self._header(), Spacer(1, 4)]
        if self.notice:
            story += [self._demo_banner(), Spacer(1, 6)]
        story += [self._patient_block(), Spacer(1, 8), self._summary(), Spacer(1, 6)]
        for eye in self.exam.eyes:
            story += self._eye_section(eye)
        story += [KeepTogether(self._model_section()), Spacer(1, 6), KeepTogether(self._sign_off())]
        return story

    def _header(self):
        from reportlab.lib import colors
        from reportlab.lib.units import mm
        from reportlab.platypus import Image, Paragraph, Table, TableStyle

        s = self.styles
        logo = self._logo(16 * mm)
        inst_lines = (
            [f'<font name="{self.bold}" size="12">{_x(self.opts.institution)}</font>'] if self.opts.institution else []
        )
        inst_lines += [_x(line) for line in self.opts.institution_address.splitlines() if line.strip()]
        inst = Paragraph("<br/>".join(inst_lines), s["base"]) if inst_lines else Paragraph("", s["base"])
        title = [
            Paragraph("OCT screening report", s["title"]),
            Paragraph(
                _x(f"Retinal OCT: {' / '.join(self.card.classes)} \u00b7 generated {self.generated}"), s["subtitle"]
            ),
        ]
        logo_w = 30 * mm if logo is not None else 0.1
        t = Table(
            [[logo if isinstance(logo, Image) else "", inst, title]],
            colWidths=[logo_w, self.width * 0.45 - logo_w, self.width * 0.55],
        )
        t.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                    ("LEFTPADDING", (0, 0), (-1, -1), 0),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
                    ("LINEBELOW", (0, 0), (-1, 0), 1.2, colors.HexColor(_DARK)),
                ]
            )
        )
        return t

    def _logo(self, height: float):
        """The configured logo scaled to ``height`` points, or None (missing/unreadable: warned)."""
        from reportlab.lib.utils import ImageReader
        from reportlab.platypus import Image

        if self.opts.logo is None:
            return None
        try:
            iw, ih = ImageReader(str(self.opts.logo)).getSize()
            width = min(height * iw / ih, 30 * 2.835)
            return Image(str(self.opts.logo), width=width, height=width * ih / iw)
        except Exception as e:  # a bad logo must not stop the report
            log.warning("%s: cannot read the logo image (%s); report printed without it", self.opts.logo, e)
            return None

    def _demo_banner(self):
        from reportlab.lib import colors
        from reportlab.platypus import Paragraph, Table, TableStyle

        s = self.styles
        detail = (
            (
                "Trained on synthetic data: its results demonstrate the software only and "
                "must not be used for any clinical decision."
            )
            if self.demo
            else (
                f"Trained on {self.card.trained_on}. A research model, not a medical device: its results "
                "must not be used for any clinical decision without a clinician's own assessment."
            )
        )
        t = Table(
            [[Paragraph(_x(self.notice.upper()), s["banner"])], [Paragraph(_x(detail), s["banner_small"])]],
            colWidths=[self.width],
        )
        t.setStyle(
            TableStyle(
                [
                    ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor(_RED)),
                    ("TOPPADDING", (0, 0), (-1, -1), 2),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
                ]
            )
        )
        return t

    def _patient_block(self):
        from reportlab.lib import colors
        from reportlab.platypus import Paragraph, Table, TableStyle

        s, p, st = self.styles, self.exam.patient, self.exam.study
        if self.opts.deidentify:
            name, birth = "(removed: de-identified report)", "(removed)"
            accession = "(removed)"
        else:
            name, birth, accession = (
                display_name(p.name) or "unknown",
                format_date(p.birth_date) or "unknown",
                st.accession_number or "\u2013",
            )
            age = age_years(p.birth_date, st.study_date)
            if age is not None:
                birth += f" (age {age})"
        exam_date = format_date(st.study_date) or "unknown"
        if st.study_time and len(st.study_time) >= 4:
            exam_date += f" {st.study_time[:2]}:{st.study_time[2:4]}"
        rows = [
            ("Patient name", name, "Exam date", exam_date),
            (
                "Patient ID" + (" (pseudonym)" if self.opts.deidentify else ""),
                self.patient_id or "unknown",
                "Device",
                str(self.exam.device) or "unknown",
            ),
            ("Birth date", birth, "Accession no.", accession),
            (
                "Sex",
                _SEX.get(p.sex.upper(), p.sex or "unknown"),
                "Study",
                "(removed)" if self.opts.deidentify else st.description or "\u2013",
            ),
        ]
        data = [
            [
                Paragraph(_x(a), s["label"]),
                Paragraph(_x(b, 96), s["value"]),
                Paragraph(_x(c), s["label"]),
                Paragraph(_x(d, 96), s["value"]),
            ]
            for a, b, c, d in rows
        ]
        w = self.width
        t = Table(data, colWidths=[0.15 * w, 0.35 * w, 0.15 * w, 0.35 * w])
        t.setStyle(
            TableStyle(
                [
                    ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#F3F5F7")),
                    ("BOX", (0, 0), (-1, -1), 0.5, colors.HexColor("#C8CDD2")),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                    ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                ]
            )
        )
        return t

    def _decision_box(self, eye: EyeResult, width: float, with_eye: bool = True):
        """The coloured decision box: eye, headline (urgency in words), review flag, confidence."""
        from reportlab.lib import colors
        from reportlab.lib.styles import ParagraphStyle
        from reportlab.platypus import Paragraph, Table, TableStyle

        bg, fg = eye.tier.colour, eye.tier.text_colour
        s = self.styles
        col = colors.HexColor(fg)
        rows = []
        if with_eye:
            rows.append([Paragraph(_x(_eye_title(eye).upper()), ParagraphStyle("e", s["box_eye"], textColor=col))])
        headline = eye.headline.replace(" (review advised)", "")
        rows.append([Paragraph(_x(headline), ParagraphStyle("h", s["box_head"], textColor=col))])
        if eye.rescan:
            detail = f"{eye.n_gradable} of {eye.n_bscans} B-scans gradable: repeat the scan"
        else:
            detail = (
                f"eye score {eye.label}: {eye.confidence:.2f} \u00b7 {eye.n_gradable} of {eye.n_bscans} "
                "B-scans gradable"
            )
        rows.append([Paragraph(_x(detail), ParagraphStyle("d", s["box_text"], textColor=col))])
        rows.append(
            [
                Paragraph(
                    _x(f"{eye.tier.action} {eye.tier.time_frame}."),
                    ParagraphStyle("a", s["box_text"], fontName=self.bold, textColor=col),
                )
            ]
        )
        if eye.needs_review and eye.urgency is not Urgency.REVIEW:
            rows.append(
                [
                    Paragraph(
                        _x("REVIEW ADVISED: a score is close to a decision threshold"),
                        ParagraphStyle("r", s["box_text"], fontName=self.bold, textColor=colors.black),
                    )
                ]
            )
        t = Table(rows, colWidths=[width])
        style: list[tuple[Any, ...]] = [
            ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor(bg)),
            ("LEFTPADDING", (0, 0), (-1, -1), 7),
            ("TOPPADDING", (0, 0), (-1, -1), 1.5),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            ("TOPPADDING", (0, 0), (-1, 0), 5),
            ("BOTTOMPADDING", (0, -1), (-1, -1), 5),
        ]
        if eye.needs_review and eye.urgency is not Urgency.REVIEW:
            style += [
                ("BACKGROUND", (0, -1), (-1, -1), colors.HexColor("#FFF3C4")),
                ("TOPPADDING", (0, -1), (-1, -1), 3),
                ("BOTTOMPADDING", (0, -1), (-1, -1), 3),
                ("BOX", (0, -1), (-1, -1), 1, colors.black),
            ]
        t.setStyle(TableStyle(style))
        return t

    def _summary(self):
        from reportlab.lib import colors
        from reportlab.platypus import Paragraph, Table, TableStyle

        s = self.styles
        if not self.exam.eyes:
            return Paragraph("No eye was screened in this exam.", s["base"])
        n = len(self.exam.eyes)
        gap = 8
        w = (self.width - gap * (n - 1)) / n if n <= 2 else self.width
        boxes = [self._decision_box(e, w) for e in self.exam.eyes]
        if n > 2:
            return Table([[b] for b in boxes], colWidths=[self.width])
        cells: list = []
        for i, b in enumerate(boxes):
            cells += ([""] if i else []) + [b]
        widths = []
        for i in range(n):
            widths += ([gap] if i else []) + [w]
        t = Table([cells], colWidths=widths)
        style = [
            ("LEFTPADDING", (0, 0), (-1, -1), 0),
            ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ("TOPPADDING", (0, 0), (-1, -1), 0),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 0),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
        for i, eye in enumerate(self.exam.eyes):  # boxes of equal height: the cell takes the box colour
            style.append(("BACKGROUND", (2 * i, 0), (2 * i, 0), colors.HexColor(eye.tier.colour)))
        t.setStyle(TableStyle(style))
        return t

    # -- per eye ------------------------------------------------------------------------------
    def _eye_section(self, eye: EyeResult) -> list:
        from reportlab.lib import colors
        from reportlab.platypus import KeepTogether, Paragraph, Spacer, Table, TableStyle

        s = self.styles
        vr = eye.volume_result
        bg = eye.tier.colour
        head = Table(
            [["", Paragraph(_x(f"{_eye_title(eye)} \u2013 {eye.headline}"), s["h2"])]],
            colWidths=[4, self.width - 4],
        )
        head.setStyle(
            TableStyle(
                [
                    ("BACKGROUND", (0, 0), (0, 0), colors.HexColor(bg)),
                    ("LEFTPADDING", (1, 0), (1, 0), 6),
                    ("TOPPADDING", (0, 0), (-1, -1), 1),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                    ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.HexColor("#BBBBBB")),
                ]
            )
        )
        top = [head, Spacer(1, 4), self._scores_and_reasons(eye)]
        parts: list = top + [Spacer(1, 6)]
        if vr is not None:
            parts += [self._strip_chart(eye, vr), Spacer(1, 2)] + self._evidence(eye, vr)
        else:
            parts.append(Paragraph("Per-B-scan results are not available for this eye.", s["small"]))
        # one eye on one page where it fits (KeepTogether must not be nested: reportlab then always breaks)
        return [KeepTogether(parts), Spacer(1, 10)]

    def _scores_and_reasons(self, eye: EyeResult):
        from reportlab.lib import colors
        from reportlab.platypus import Paragraph, Table, TableStyle

        s = self.styles
        th: Thresholds = self.card.thresholds
        classes = list(eye.scores) or list(self.card.classes)
        rows = [
            [Paragraph("Class", s["label"]), Paragraph("Eye score", s["label"]), Paragraph("Decision rule", s["label"])]
        ]
        for c in classes:
            score = eye.scores.get(c)
            rule = _rule_text(th, c, eye.tiers)
            st = s["value"] if c == eye.label else s["base"]
            shown = "\u2013" if score is None or not math.isfinite(score) else f"{score:.2f}"
            rows.append([Paragraph(_x(c), st), Paragraph(shown, st), Paragraph(_x(rule), s["base"])])
        w = self.width * 0.5
        scores = Table(rows, colWidths=[0.27 * w, 0.23 * w, 0.5 * w])
        scores.setStyle(
            TableStyle(
                [
                    ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.HexColor("#999999")),
                    ("TOPPADDING", (0, 0), (-1, -1), 1),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                    ("LEFTPADDING", (0, 0), (-1, -1), 2),
                ]
            )
        )
        k = max(1, math.ceil(th.top_k_fraction * max(eye.n_gradable, 1)))
        why = [Paragraph("Why", s["label"])]
        why += [Paragraph(_x(r), s["bullet"], bulletText="\u2022") for r in eye.reasons] or [
            Paragraph("\u2013", s["base"])
        ]
        if not eye.rescan:
            why.append(
                Paragraph(
                    _x(
                        f"Eye score = mean of the {k} highest gradable B-scan probabilities (for normal: of "
                        f"the {k} lowest); review advised within \u00b1{th.review_margin:.2f} of a threshold "
                        "(narrower for thresholds near 0 or 1)."
                    ),
                    s["small"],
                )
            )
        why += self._gradability(eye)
        t = Table([[scores, why]], colWidths=[w, self.width - w])
        t.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("LEFTPADDING", (0, 0), (-1, -1), 0),
                    ("LEFTPADDING", (1, 0), (1, 0), 12),
                ]
            )
        )
        return t

    def _strip_chart(self, eye: EyeResult, vr: VolumeResult):
        """Probability of each class along the B-scan index: ungradable B-scans shaded grey,
        evidence B-scans marked E1..E3, decision thresholds dotted."""
        from reportlab.graphics.charts.lineplots import LinePlot
        from reportlab.graphics.shapes import Drawing, Line, Rect, String
        from reportlab.graphics.widgets.markers import makeMarker
        from reportlab.lib import colors

        n = vr.n
        height = 114.0
        d = Drawing(self.width, height)
        lp = LinePlot()
        lp.x, lp.y, lp.width, lp.height = 30, 22, self.width - 38, height - 56
        x0, x1 = 0.5, n + 0.5

        def px(v: float) -> float:
            return lp.x + (v - x0) / (x1 - x0) * lp.width

        def py(v: float) -> float:
            return lp.y + v * lp.height

        ungradable = set(eye.ungradable) | {i for i in range(n) if not bool(vr.gradable[i])}
        for i in sorted(ungradable):
            d.add(
                Rect(
                    px(i + 0.5),
                    lp.y,
                    px(i + 1.5) - px(i + 0.5),
                    lp.height,
                    fillColor=colors.HexColor("#D5D5D5"),
                    strokeColor=None,
                )
            )
        lp.data = [[(i + 1, float(vr.probs[i, c])) for i in range(n)] for c in range(len(vr.classes))]
        for c, name in enumerate(vr.classes):
            line = lp.lines[c]
            line.strokeColor = colors.HexColor(_class_colour(vr.classes, name))
            line.strokeWidth = 1.3
            if n <= 40:
                line.symbol = makeMarker(
                    "FilledCircle",
                    size=2.2 if n > 15 else 3.5,
                    fillColor=colors.HexColor(_class_colour(vr.classes, name)),
                )
        step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000) if n / s <= 13)
        lp.xValueAxis.valueMin, lp.xValueAxis.valueMax = x0, x1
        lp.xValueAxis.valueSteps = [1] + list(range(step, n + 1, step)) if step > 1 else list(range(1, n + 1))
        lp.xValueAxis.labelTextFormat = "%d"
        lp.yValueAxis.valueMin, lp.yValueAxis.valueMax = 0.0, 1.0
        lp.yValueAxis.valueSteps = [0.0, 0.25, 0.5, 0.75, 1.0]
        lp.yValueAxis.labelTextFormat = "%.2f"
        lp.yValueAxis.gridStrokeColor = colors.HexColor("#E6E6E6")
        lp.yValueAxis.visibleGrid = 1
        for axis in (lp.xValueAxis, lp.yValueAxis):
            axis.labels.fontName, axis.labels.fontSize = self.font, 6.5
            axis.strokeColor = colors.HexColor("#888888")
        d.add(lp)
        th = self.card.thresholds
        for cls_name, t in list(th.urgent.items()) + list(th.routine.items()):
            if cls_name in vr.classes:
                d.add(
                    Line(
                        lp.x,
                        py(t),
                        lp.x + lp.width,
                        py(t),
                        strokeDashArray=[1.5, 2],
                        strokeWidth=0.7,
                        strokeColor=colors.HexColor(_class_colour(vr.classes, cls_name)),
                    )
                )
        placed: list[tuple[float, int]] = []  # (x, level) of the E labels, to avoid overlaps
        for rank, i in enumerate(eye.evidence[:3], start=1):
            x = px(i + 1)
            level = min(lv for lv in range(3) if all(abs(x - px_) >= 11 or lv != lv_ for px_, lv_ in placed))
            placed.append((x, level))
            top = lp.y + lp.height + 2 + 8 * level
            d.add(
                Line(
                    x,
                    lp.y,
                    x,
                    top,
                    strokeColor=colors.HexColor(_EVIDENCE_COLOUR),
                    strokeWidth=0.8,
                    strokeDashArray=[2, 1.5],
                )
            )
            d.add(
                String(
                    x,
                    top + 2,
                    f"E{rank}",
                    fontName=self.bold,
                    fontSize=7,
                    fillColor=colors.HexColor(_EVIDENCE_COLOUR),
                    textAnchor="middle",
                )
            )
        d.add(
            String(
                lp.x + lp.width / 2,
                3,
                "B-scan number",
                fontName=self.font,
                fontSize=7,
                fillColor=colors.HexColor(_GREY),
                textAnchor="middle",
            )
        )
        # title at the left, legend at the right of the top line
        y = height - 10
        d.add(
            String(0, y, "Probability per B-scan", fontName=self.bold, fontSize=9.5, fillColor=colors.HexColor(_DARK))
        )
        items = [(name, _class_colour(vr.classes, name), "line") for name in vr.classes]
        items += [
            ("ungradable", "#D5D5D5", "box"),
            ("evidence B-scan (E1\u2013E3)", _EVIDENCE_COLOUR, "dash"),
            ("threshold", "#888888", "dots"),
        ]
        from reportlab.pdfbase.pdfmetrics import stringWidth

        labels = [_fit(label) for label, _, _ in items]
        x = self.width - sum(25 + stringWidth(label, self.font, 7) for label in labels) + 12
        for (_, colour, kind), label in zip(items, labels):
            col = colors.HexColor(colour)
            if kind == "box":
                d.add(Rect(x, y - 1, 10, 6, fillColor=col, strokeColor=None))
            else:
                dash = {"line": None, "dash": [2, 1.5], "dots": [1.5, 2]}[kind]
                d.add(
                    Line(
                        x,
                        y + 2,
                        x + 10,
                        y + 2,
                        strokeColor=col,
                        strokeWidth=1.4 if kind == "line" else 0.8,
                        strokeDashArray=dash,
                    )
                )
            d.add(String(x + 13, y, label, fontName=self.font, fontSize=7, fillColor=colors.HexColor(_DARK)))
            x += 13 + stringWidth(label, self.font, 7) + 12
        return d

    def _evidence(self, eye: EyeResult, vr: VolumeResult) -> list:
        """The evidence B-scans (up to 3) with the CAM overlay of the decided class, 1-based numbers."""
        from reportlab.platypus import Paragraph, Table, TableStyle

        s = self.styles
        title = Paragraph("Evidence B-scans", s["h3"])
        idx = [i for i in eye.evidence[:3] if 0 <= i < vr.n]
        if not idx:
            why = "the eye needs a rescan" if eye.rescan else "none recorded"
            return [title, Paragraph(_x(f"No evidence B-scans ({why})."), s["base"])]
        gap = 6
        h0, w0 = vr.volume.bscans.shape[1:]
        cols = 3 if w0 <= 1.6 * h0 else 2  # wide B-scans (1024+ A-scans): two per row
        w = (self.width - (cols - 1) * gap) / cols
        max_aspect = 0.9 if self.opts.page_size == "A4" else 0.7  # Letter is shorter: flatter images
        has_cam = vr.cams is not None and eye.label in vr.classes
        cells, captions = [], []
        c = vr.classes.index(eye.label) if eye.label in vr.classes else None
        for rank, i in enumerate(idx, start=1):
            bscan = vr.volume.bscans[i]
            cam = vr.cam(i, eye.label, size=bscan.shape[:2]) if has_cam else None
            p = vr.probability(i, eye.label) if has_cam else 0.0
            cells.append(_rgb_image(overlay(bscan, cam, probability=p), w, max_height=w * max_aspect))
            prob = f" \u00b7 {eye.label} {float(vr.probs[i, c]):.2f}" if c is not None else ""
            captions.append(Paragraph(_x(f"E{rank}: B-scan {i + 1} of {vr.n}{prob}"), s["caption"]))
        while len(cells) % cols:
            cells.append("")
            captions.append("")
        data = []
        for start in range(0, len(cells), cols):  # rows of images, each followed by its captions
            for row in (cells[start : start + cols], captions[start : start + cols]):
                data.append([x for k, item in enumerate(row) for x in ([item] if k == 0 else ["", item])])
        t = Table(data, colWidths=[w] + [gap, w] * (cols - 1))
        t.setStyle(
            TableStyle(
                [
                    ("LEFTPADDING", (0, 0), (-1, -1), 0),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                    ("TOPPADDING", (0, 0), (-1, -1), 1),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
                    ("ALIGN", (0, 0), (-1, -1), "CENTER"),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ]
            )
        )
        if not has_cam:
            note = "No activation maps were computed; the B-scans are shown without overlay."
            return [title, t, Paragraph(_x(note), s["small"])]
        note = (
            f"Heat colours: where the model found {eye.label}, painted in proportion to its probability on "
            "the B-scan (as in the app); uncoloured areas did not contribute."
        )
        return [self._with_colour_bar(title), t, Paragraph(_x(note), s["small"])]

    def _with_colour_bar(self, title):
        """The evidence heading with the heatmap's legend on its right: 'weak' [colour ramp] 'strong'."""
        from reportlab.lib.enums import TA_RIGHT
        from reportlab.lib.styles import ParagraphStyle
        from reportlab.platypus import Paragraph, Table, TableStyle

        s = self.styles
        bar = _rgb_image(colour_bar(240, 12), 80, 6)
        right = ParagraphStyle("weak", s["small"], alignment=TA_RIGHT)
        t = Table(
            [[title, Paragraph("weak", right), bar, Paragraph("strong", s["small"])]],
            colWidths=[self.width - 146, 34, 82, 30],
        )
        t.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                    ("LEFTPADDING", (0, 0), (-1, -1), 0),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 2),
                    ("TOPPADDING", (0, 0), (-1, -1), 0),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 0),
                ]
            )
        )
        return t

    def _gradability(self, eye: EyeResult) -> list:
        from reportlab.platypus import Paragraph, Spacer

        s = self.styles
        vr = eye.volume_result
        text = f"{eye.n_gradable} of {eye.n_bscans} B-scans gradable."
        if eye.ungradable:
            by_reason: dict[str, list[int]] = {}
            for i in sorted(eye.ungradable):
                reason = ""
                if vr is not None and 0 <= i < len(vr.quality_reasons):
                    reason = vr.quality_reasons[i]
                by_reason.setdefault(reason or "reason not recorded", []).append(i + 1)
            parts = []
            for reason, numbers in by_reason.items():
                shown = ", ".join(str(k) for k in numbers[:30]) + (
                    f" and {len(numbers) - 30} more" if len(numbers) > 30 else ""
                )
                parts.append(f"{reason}: B-scan{'s' if len(numbers) > 1 else ''} {shown}")
            text += " Not gradable (excluded from the decision) \u2013 " + "; ".join(parts) + "."
        out = [Spacer(1, 4), Paragraph("Image quality", s["label"]), Paragraph(_x(text), s["base"])]
        if vr is not None and vr.volume.source is not None and not self.opts.deidentify:
            out.append(Paragraph(_x(f"Source: {vr.volume.source}"), s["small"]))
        return out

    # -- closing sections ---------------------------------------------------------------------
    def _model_section(self) -> list:
        from reportlab.lib import colors
        from reportlab.lib.styles import ParagraphStyle
        from reportlab.platypus import Paragraph

        s = self.styles
        red = ParagraphStyle("red", s["base"], fontName=self.bold, textColor=colors.HexColor(_RED))
        out = [Paragraph("Model", s["h2"])]
        for line in self.card.summary().splitlines():
            out.append(Paragraph(_x(line), red if line.strip().lower() == self.notice.lower() else s["base"]))
        backends = sorted(
            {e.volume_result.backend for e in self.exam.eyes if e.volume_result is not None and e.volume_result.backend}
        )
        if backends:
            out.append(Paragraph(_x(f"run with: {', '.join(backends)}"), s["base"]))
        if self.card.intended_use:
            out.append(Paragraph(_x(f"Intended use: {self.card.intended_use}"), s["base"]))
        if self.notice and not any(
            line.strip().lower() == self.notice.lower() for line in self.card.summary().splitlines()
        ):
            out.append(Paragraph(_x(self.notice.upper()), red))
        return out

    def _sign_off(self) -> list:
        from reportlab.lib import colors
        from reportlab.platypus import Paragraph, Spacer, Table, TableStyle

        s = self.styles
        disclaimer = Table([[Paragraph(_x(DISCLAIMER), s["base"])]], colWidths=[self.width])
        disclaimer.setStyle(
            TableStyle(
                [
                    ("BOX", (0, 0), (-1, -1), 0.8, colors.HexColor("#888888")),
                    ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#F7F7F7")),
                    ("TOPPADDING", (0, 0), (-1, -1), 4),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
                ]
            )
        )
        w = self.width
        line = colors.HexColor("#444444")
        rows = [
            [
                Paragraph("Reviewing clinician", s["label"]),
                Paragraph(_x(self.opts.clinician), s["value"]),
                "",
                Paragraph("Date", s["label"]),
                "",
            ],
            [
                Paragraph("Signature", s["label"]),
                "",
                "",
                Paragraph("Decision", s["label"]),
                Paragraph(
                    "\u25a1 confirmed&nbsp;&nbsp;&nbsp;\u25a1 changed"
                    if self.font != "Helvetica"
                    else "[ ] confirmed&nbsp;&nbsp;&nbsp;[ ] changed",
                    s["base"],
                ),
            ],
        ]
        t = Table(rows, colWidths=[0.2 * w, 0.38 * w, 0.04 * w, 0.1 * w, 0.28 * w], rowHeights=[24, 30])
        t.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
                    ("LEFTPADDING", (0, 0), (0, -1), 0),
                    ("LINEBELOW", (1, 0), (1, 1), 0.6, line),
                    ("LINEBELOW", (4, 0), (4, 0), 0.6, line),
                ]
            )
        )
        return [disclaimer, Spacer(1, 6), Paragraph("Clinical review", s["h3"]), t]


def _rgb_image(rgb: np.ndarray, max_width: float, max_height: float):
    """An RGB uint8 array as a platypus Image (JPEG, quality 88) fitted into the given box."""
    from PIL import Image as PILImage
    from reportlab.platypus import Image

    h, w = rgb.shape[:2]
    scale = min(max_width / w, max_height / h)
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=88)
    buf.seek(0)
    return Image(buf, width=w * scale, height=h * scale)


# ----------------------------------------------------------------------------------------------
# a synthetic exam for layout previews (settings dialog, docs) and tests
# ----------------------------------------------------------------------------------------------


def _preview_cams(
    volume: OctVolume, lesion_free: OctVolume | None, c: int, n_classes: int, grid: int = 16
) -> np.ndarray:
    """Made-up CAMs ``[n, C, grid, grid]``: for class ``c`` where the volume differs from its
    lesion-free twin (the lesion), or the bright retina for 'normal'; faint noise elsewhere."""
    import cv2

    rng = np.random.default_rng(0)
    n = volume.n_bscans
    cams = rng.random((n, n_classes, grid, grid)).astype(np.float32) * 0.1
    for i in range(n):
        img = volume.bscans[i].astype(np.float32)
        if lesion_free is not None:
            img = np.abs(img - lesion_free.bscans[i].astype(np.float32))
        img = cv2.GaussianBlur(img, (0, 0), 9)
        small = cv2.resize(img, (grid, grid), interpolation=cv2.INTER_AREA) / 255.0
        cams[i, c] = small if lesion_free is not None else small**3  # 'normal': brightest layers only
    return cams


def preview_exam(
    seed: int = 0,
    n: int = 25,
    size: tuple[int, int] = (496, 512),
    findings: tuple[str, str] = ("cnv", "normal"),
    demo: bool = True,
) -> ExamResult:
    """A made-up two-eye exam (OD, OS) with plausible results, to preview the report layout.

    The B-scans come from the simulator (``core.synthetic``); ``findings`` gives the lesion per
    eye ('cnv', 'drusen' or 'normal'). The probabilities and CAMs are invented from the simulator's
    ground truth, not a model's output.
    """
    from core.synthetic import simulate_volume

    rng = np.random.default_rng(seed)
    classes = ["normal", "drusen", "cnv"]
    patient = PatientInfo("PID-0042-7", "Doe^Jane", "19510317", "F")
    study = StudyInfo(
        study_uid="1.2.826.0.1.3680043.8.498.1001",
        study_date="20261124",
        study_time="093000",
        accession_number="ACC-88121",
        description="Macula cube 25 lines",
    )
    device = DeviceInfo("Heidelberg Engineering", "Spectralis")
    eyes = []
    for k, (lat, finding) in enumerate(zip((Laterality.OD, Laterality.OS), findings)):
        sim: dict[str, Any] = dict(
            n_bscans=n, height=size[0], width=size[1], seed=seed * 2 + k, laterality=lat, patient=patient, study=study
        )
        vol = simulate_volume(finding, **sim)
        vol.device, vol.source = device, Path(f"/data/exports/{lat.value}_cube.dcm")
        assert vol.frame_labels is not None  # the simulator labels every B-scan
        twin = simulate_volume("normal", **sim) if finding != "normal" else None
        c = classes.index(finding)
        lesion_at = np.array([lab == finding for lab in vol.frame_labels]) if twin is not None else np.zeros(n, bool)
        probs = rng.dirichlet([6, 1, 1], size=n).astype(np.float32)
        strong = rng.dirichlet([1, 1, 1], size=n).astype(np.float32)
        strong[:, c] += 6
        probs[lesion_at] = (strong / strong.sum(1, keepdims=True))[lesion_at]
        gradable = np.ones(n, bool)
        ungradable = sorted(
            set(int(i) for i in vol.extra.get("low_signal_frames", [])) | {int(rng.integers(0, max(1, n // 5)))}
        )
        gradable[ungradable] = False
        reasons = ["" if g else "low signal" for g in gradable]
        vr = VolumeResult(
            vol,
            classes,
            probs,
            _preview_cams(vol, twin, c, len(classes)),
            gradable,
            reasons,
            model_name="kdoct-student-demo",
            model_version="0.1.0",
            demo_model=demo,
            backend="onnxruntime (CPU)",
        )
        k_top = max(1, math.ceil(0.1 * gradable.sum()))
        g_idx = np.flatnonzero(gradable)
        scores = {cl: float(np.sort(probs[g_idx, j])[::-1][:k_top].mean()) for j, cl in enumerate(classes)}
        evidence = [int(i) for i in g_idx[np.argsort(-probs[g_idx, c])][:k_top]]
        urgency = {"cnv": Urgency.URGENT, "drusen": Urgency.ROUTINE, "normal": Urgency.NONE}[finding]
        why = {
            "cnv": f"cnv score {scores['cnv']:.2f} \u2265 threshold 0.50",
            "drusen": f"drusen score {scores['drusen']:.2f} \u2265 threshold 0.50",
            "normal": "no disease score reaches its threshold",
        }[finding]
        eyes.append(
            EyeResult(
                EyeKey(patient.patient_id, study.study_uid, lat),
                finding,
                urgency,
                scores,
                scores[finding],
                needs_review=bool(0.4 < scores["drusen"] < 0.6),
                evidence=evidence,
                n_bscans=n,
                n_gradable=int(gradable.sum()),
                ungradable=ungradable,
                reasons=[why],
                volume_result=vr,
            )
        )
    return ExamResult(patient, study, device, eyes)
