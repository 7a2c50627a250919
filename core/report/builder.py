"""The report document: ``write_report`` and ``_ReportBuilder``, which assembles the sections
(header, decision, evidence, closing) into one platypus story with numbered pages."""

from __future__ import annotations

import contextlib
import datetime as _dt
import threading
from collections.abc import Iterator
from pathlib import Path

from core.deid import output_year_text
from core.fileio import atomic_output
from core.modelcard import DEMO_WARNING, ModelCard
from core.report.closing import _ClosingSections
from core.report.decision import _DecisionSections
from core.report.evidence import _EvidenceSections
from core.report.header import _HeaderSections
from core.report.layout import _DARK, _GREY, _clip, _eye_title, _local_time, _report_fonts, _x, log
from core.report.options import DEIDENTIFIED_MARKER, PSEUDONYM_KEYWORD, ReportOptions, new_report_id, pseudonym_for
from core.results import ExamResult, EyeResult


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


_STREAMS_LOCK = threading.Lock()


@contextlib.contextmanager
def _binary_streams() -> Iterator[None]:
    """Within it, reportlab writes the PDF's streams (the B-scan JPEGs, page contents, fonts) as
    binary, not ASCII85 text: ASCII85 makes every stream 25 % larger and, without reportlab's optional C
    accelerator, is encoded in pure Python (benchmarks/bench_report.py: 0.154 -> 0.089 s per report). Every
    PDF reader reads binary streams (PDF 1.0 on). reportlab keeps the choice in a process-wide setting
    (``rl_config.useA85``): it is set for the build and put back, one build at a time."""
    from reportlab import rl_config

    with _STREAMS_LOCK:
        before = rl_config.useA85
        rl_config.useA85 = 0
        try:
            yield
        finally:
            rl_config.useA85 = before


class _ReportBuilder(_HeaderSections, _DecisionSections, _EvidenceSections, _ClosingSections):
    """Builds the platypus story and page decorations of one report."""

    def __init__(self, exam: ExamResult, card: ModelCard, opts: ReportOptions):
        from reportlab.lib.pagesizes import A4, letter

        if opts.page_size not in ("A4", "Letter"):
            raise ValueError(f"page_size must be 'A4' or 'Letter', got {opts.page_size!r}")
        self.exam, self.card, self.opts = exam, card, opts
        self.page = A4 if opts.page_size == "A4" else letter
        self.report_id = opts.report_id or new_report_id()
        when = opts.generated or _dt.datetime.now().astimezone()
        self.generated = output_year_text(when) if opts.deidentify else _local_time(when)
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
        s["missing"] = ParagraphStyle("missing", base, fontSize=8.5, textColor=colors.HexColor(_GREY))
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
            # de-identified: the PDF's CreationDate / ModDate are reportlab's fixed invariant date, not today
            invariant=1 if self.opts.deidentify else None,
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
        with _binary_streams():
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

    # -- story --------------------------------------------------------------------------------
    def _story(self) -> list:
        from reportlab.platypus import KeepTogether, Spacer

        story: list = [self._header(), Spacer(1, 2), self._people(), Spacer(1, 4)]
        if self.notice:
            story += [self._demo_banner(), Spacer(1, 6)]
        story += [self._patient_block(), Spacer(1, 8), self._summary(), Spacer(1, 6)]
        for eye in self.exam.eyes:
            story += self._eye_section(eye)
        story += [KeepTogether(self._model_section()), Spacer(1, 4), KeepTogether(self._performance())]
        story += [Spacer(1, 6), KeepTogether(self._sign_off())]
        return story

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
        parts: list = [head, Spacer(1, 4), self._scores_and_reasons(eye), Spacer(1, 4), self._scan(eye), Spacer(1, 6)]
        if vr is None:
            parts.append(Paragraph("Per-B-scan results are not available for this eye.", s["small"]))
            return [KeepTogether(parts), Spacer(1, 10)]
        parts.append(self._strip_chart(eye, vr))
        # the decision with its chart, then its evidence images, each kept on one page (KeepTogether must
        # not be nested: reportlab then always breaks); the evidence heading names the eye
        return [KeepTogether(parts), Spacer(1, 2), KeepTogether(self._evidence(eye, vr)), Spacer(1, 10)]
