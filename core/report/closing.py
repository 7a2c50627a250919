"""The closing sections: the model and its card (the notice in red), the disclaimer and the
reviewing clinician's signature lines."""

from __future__ import annotations

from core.report.layout import _RED, _Section, _x

DISCLAIMER = (
    "OCT Screen is a screening aid; it does not replace examination by an eye-care "
    "professional. The decision above is a suggestion for referral triage and must be "
    "reviewed and signed by a qualified clinician."
)


class _ClosingSections(_Section):
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
