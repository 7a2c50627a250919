"""The top of the report and every page's decoration: institution header with logo, the model's
notice banner, the patient block, the running head and footer ("page X of Y", report id)."""

from __future__ import annotations

from core.report.layout import _DARK, _GREY, _RED, _fit, _Section, _trained_on, _x, log
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
        title = [
            Paragraph("OCT screening report", s["title"]),
            Paragraph(_x(f"Retinal OCT: {' / '.join(self.card.classes)}"), s["subtitle"]),
            Paragraph(_x(f"generated {self.generated}"), s["subtitle"]),
        ]
        logo_w = 30 * mm if logo is not None else 0.1
        t = Table(
            [[logo if isinstance(logo, Image) else "", self._institution(), title]],
            colWidths=[logo_w, self.width * 0.5 - logo_w, self.width * 0.5],
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

    def _institution(self):
        """The institution's name and address; a visible warning (and a logged one) when it is not set."""
        from reportlab.lib import colors
        from reportlab.lib.styles import ParagraphStyle
        from reportlab.platypus import Paragraph

        s = self.styles
        if not self.opts.institution.strip():
            log.warning("report %s: no institution set; the report header says so", self.report_id)
            warn = ParagraphStyle("noinst", s["inst"], textColor=colors.HexColor(_RED))
            return [
                Paragraph("\u26a0 Institution not set" if self.font != "Helvetica" else "Institution not set", warn),
                Paragraph(
                    "Who issued this report is not recorded: set the institution in the settings "
                    "or with --institution.",
                    s["small"],
                ),
            ]
        lines = [f'<font name="{self.bold}" size="12">{_x(self.opts.institution)}</font>']
        lines += [_x(line) for line in self.opts.institution_address.splitlines() if line.strip()]
        return Paragraph("<br/>".join(lines), s["base"])

    def _people(self):
        """Who referred the patient, who took the scan (both removed when de-identified) and who reviews the report."""
        from reportlab.lib import colors
        from reportlab.platypus import Paragraph, Table, TableStyle

        s, o = self.styles, self.opts
        people = (
            ("Referring clinician", o.referring_clinician, True),
            ("Operator", o.operator, True),
            ("Reviewing clinician", o.clinician, False),
        )
        cells = [
            [
                Paragraph(_x(label), s["label"]),
                Paragraph(_x(self._person(name, care_path=path), 80), s["value"] if name.strip() else s["missing"]),
            ]
            for label, name, path in people
        ]
        t = Table([cells], colWidths=[self.width / 3] * 3)
        t.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("LEFTPADDING", (0, 0), (-1, -1), 0),
                    ("TOPPADDING", (0, 0), (-1, -1), 0),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
                    ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.HexColor("#C8CDD2")),
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
                f"Trained on {_trained_on(self.card)}. A research model, not a medical device: its results "
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
        exam_date = format_date(st.study_date) or ("(removed)" if self.opts.deidentify else "unknown")
        clock = ""
        if st.study_time and len(st.study_time) >= 4:  # DICOM StudyTime carries no zone: the scanner's clock
            exam_date += f" {st.study_time[:2]}:{st.study_time[2:4]}"
            clock = ' <font size="7.5">(scanner clock)</font>'
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
                Paragraph(_x(d, 96) + (clock if c == "Exam date" else ""), s["value"]),
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
