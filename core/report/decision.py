"""The decision sections: one coloured decision box per eye (colour *and* text), and per eye the
class scores with their decision rules, the reasons and the image-quality notes."""

from __future__ import annotations

import math
from typing import Any

from core.modelcard import Thresholds
from core.report.layout import _eye_title, _Section, _x
from core.results import EyeResult, Urgency
from core.tiers import DEFAULT_TIERS


def _rule_text(th: Thresholds, cls: str, tiers: dict | None = None) -> str:
    """The decision rule of ``cls`` in the scores table, e.g. '>= 0.30: urgent referral'."""
    words = tiers or DEFAULT_TIERS
    for tier, table in (("urgent", th.urgent), ("soon", th.soon), ("routine", th.routine)):
        if cls in table:
            return f"\u2265 {table[cls]:.2f}: {words[tier].name.lower()}"
    if cls in th.normal:
        return f"\u2265 {th.normal[cls]:.2f}: no referral"
    return "\u2013"


class _DecisionSections(_Section):
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
