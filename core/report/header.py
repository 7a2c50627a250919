"""The top of the report and every page's decoration: institution header with logo, the model's
notice banner, the patient block, the running head and footer ("page X of Y", report id)."""

from __future__ import annotations

from core.report.layout import _DARK, _GREY, _RED, _fit, _Section, _x, log
from core.volume import age_years, display_name, format_date

_SEX = {"M": "Male", "F": "Female", "O": "Other"}


class _HeaderSections(_Section):
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
