"""The decision sections: one coloured decision box per eye (colour *and* text), and per eye the
class scores with their decision rules, the reasons and the image-quality notes."""

from __future__ import annotations

import math
from typing import Any

from core.modelcard import Thresholds
from core.report.layout import _eye_title, _Section, _x
from core.results import EyeResult, Urgency
from core.tiers import DEFAULT_TIERS
from core.volume import DeviceInfo


def _rule_text(th: Thresholds, cls: str, tiers: dict | None = None) -> str:
    """The decision rule of ``cls`` in the scores table, e.g. '>= 0.30: urgent referral'."""
    words = tiers or DEFAULT_TIERS
    for tier, table in (("urgent", th.urgent), ("soon", th.soon), ("routine", th.routine)):
        if cls in table:
            return f"\u2265 {table[cls]:.2f}: {words[tier].name.lower()}"
    if cls in th.normal:
        return f"\u2265 {th.normal[cls]:.2f}: no referral"
    return "\u2013"


def _tier_name(eye: EyeResult, tier: str) -> str:
    """A tier id in the eye's wording (the card's ``thresholds.tiers``, else ``core.tiers``)."""
    tiers = eye.tiers or DEFAULT_TIERS
    return tiers[tier].name if tier in tiers else tier


class _DecisionSections(_Section):
    def _decision_box(self, eye: EyeResult, width: float, with_eye: bool = True):
        """The coloured decision box: eye, headline (urgency in words), confidence, action, review flag."""
        from reportlab.lib import colors
        from reportlab.lib.styles import ParagraphStyle
        from reportlab.platypus import Paragraph, Table, TableStyle

        s = self.styles
        col = colors.HexColor(eye.tier.text_colour)
        rows = []
        if with_eye:
            rows.append([Paragraph(_x(_eye_title(eye).upper()), ParagraphStyle("e", s["box_eye"], textColor=col))])
        headline = eye.headline.replace(" (review advised)", "")
        rows.append([Paragraph(_x(headline), ParagraphStyle("h", s["box_head"], textColor=col))])
        rows.append([Paragraph(_x(self._box_detail(eye)), ParagraphStyle("d", s["box_text"], textColor=col))])
        action = ParagraphStyle("a", s["box_text"], fontName=self.bold, textColor=col)
        rows.append([Paragraph(_x(f"{eye.tier.action} {eye.tier.time_frame}."), action)])
        flag = ParagraphStyle("r", s["box_text"], fontName=self.bold, textColor=colors.black)
        review = eye.needs_review and eye.urgency is not Urgency.REVIEW
        if review:
            rows.append([Paragraph(_x("REVIEW ADVISED: a score is close to a decision threshold"), flag)])
        t = Table(rows, colWidths=[width])
        style: list[tuple[Any, ...]] = [
            ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor(eye.tier.colour)),
            ("LEFTPADDING", (0, 0), (-1, -1), 7),
            ("TOPPADDING", (0, 0), (-1, -1), 1.5),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            ("TOPPADDING", (0, 0), (-1, 0), 5),
            ("BOTTOMPADDING", (0, -1), (-1, -1), 5),
        ]
        if review:
            style += [
                ("BACKGROUND", (0, -1), (-1, -1), colors.HexColor("#FFF3C4")),
                ("TOPPADDING", (0, -1), (-1, -1), 3),
                ("BOTTOMPADDING", (0, -1), (-1, -1), 3),
                ("BOX", (0, -1), (-1, -1), 1, colors.black),
            ]
        t.setStyle(TableStyle(style))
        return t

    def _signed_box(self, eye: EyeResult, width: float):
        """Under the decision box: 'NOT SIGNED' or who signed it and how, black on white."""
        from reportlab.lib import colors
        from reportlab.lib.styles import ParagraphStyle
        from reportlab.platypus import Paragraph, Table, TableStyle

        flag = ParagraphStyle("signed", self.styles["box_text"], fontName=self.bold, textColor=colors.black)
        t = Table([[Paragraph(_x(self._signed_line(eye)), flag)]], colWidths=[width])
        t.setStyle(
            TableStyle(
                [
                    ("BOX", (0, 0), (-1, -1), 1, colors.black),
                    ("LEFTPADDING", (0, 0), (-1, -1), 7),
                    ("TOPPADDING", (0, 0), (-1, -1), 3),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
                ]
            )
        )
        return t

    @staticmethod
    def _box_detail(eye: EyeResult) -> str:
        if eye.rescan:
            return f"{eye.n_gradable} of {eye.n_bscans} B-scans gradable: repeat the scan"
        return f"eye score {eye.label}: {eye.confidence:.2f} \u00b7 {eye.n_gradable} of {eye.n_bscans} B-scans gradable"

    def _signed_line(self, eye: EyeResult) -> str:
        """'NOT SIGNED', 'Signed by NAME: confirmed' or 'Signed by NAME: changed to <tier>'."""
        so = self._signoff_of(eye)
        if so is None:
            return "NOT SIGNED by a clinician"
        who = self._person(so.clinician)
        if not so.changed:
            return f"Signed by {who}: confirmed"
        return f"Signed by {who}: changed to {_tier_name(eye, so.final_tier)}"

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
        signed = [self._signed_box(e, w) for e in self.exam.eyes]
        if n > 2:
            return Table([[b] for pair in zip(boxes, signed) for b in pair], colWidths=[self.width])
        rows: list[list] = [[], []]
        widths: list[float] = []
        for i in range(n):  # box and sign-off line of each eye in a column, the columns apart by a gap
            for row, cell in zip(rows, (boxes[i], signed[i])):
                row += ([""] if i else []) + [cell]
            widths += ([gap] if i else []) + [w]
        t = Table(rows, colWidths=widths)
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
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
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

    def _scan(self, eye: EyeResult):
        """The scan behind the decision: protocol, device, geometry and signal quality."""
        from reportlab.lib import colors
        from reportlab.platypus import Paragraph, Table, TableStyle

        s, vr = self.styles, eye.volume_result
        vol = vr.volume if vr is not None else None
        protocol = "not recorded"
        if vol is not None and vol.study.description:
            protocol = "(removed)" if self.opts.deidentify else vol.study.description
        device = _device_text(vol.device if vol is not None else self.exam.device)
        rows = [
            ("Scan protocol", protocol, "Device", device),
            ("B-scans", _geometry_text(eye), "Signal quality", self._quality_text(eye)),
        ]
        data = [
            [
                Paragraph(_x(a), s["label"]),
                Paragraph(_x(b, 200), s["base"]),
                Paragraph(_x(c), s["label"]),
                Paragraph(_x(d, 900), s["base"]),
            ]
            for a, b, c, d in rows
        ]
        w = self.width
        t = Table(data, colWidths=[0.15 * w, 0.35 * w, 0.15 * w, 0.35 * w])
        t.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("BOX", (0, 0), (-1, -1), 0.5, colors.HexColor("#C8CDD2")),
                    ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                ]
            )
        )
        return t

    def _quality_text(self, eye: EyeResult) -> str:
        """'23 of 25 B-scans gradable; not gradable (excluded from the decision): low signal 2 (B-scans 3, 4)'."""
        text = f"{eye.n_gradable} of {eye.n_bscans} B-scans gradable"
        by_reason = _ungradable_by_reason(eye)
        if not by_reason:
            return text + "."
        parts = []
        for reason, numbers in by_reason.items():
            shown = ", ".join(str(k) for k in numbers[:12]) + (
                f" and {len(numbers) - 12} more" if len(numbers) > 12 else ""
            )
            parts.append(f"{reason}: {len(numbers)} (B-scan{'s' if len(numbers) > 1 else ''} {shown})")
        return text + "; not gradable (excluded from the decision) \u2013 " + "; ".join(parts) + "."


def _device_text(device: DeviceInfo) -> str:
    name = str(device) or "not recorded"
    return name + (f" (software {device.software_version})" if device.software_version else "")


def _ungradable_by_reason(eye: EyeResult) -> dict[str, list[int]]:
    """The 1-based numbers of the ungradable B-scans by reason; a reason's measured detail in brackets
    ('mostly registration border or padding (37 % of the frame)') is dropped, so alike reasons count together."""
    vr = eye.volume_result
    reasons = list(vr.quality_reasons) if vr is not None else []
    ungradable = set(eye.ungradable) | {i for i, r in enumerate(reasons) if r}
    by_reason: dict[str, list[int]] = {}
    for i in sorted(ungradable):
        reason = reasons[i] if 0 <= i < len(reasons) else ""
        by_reason.setdefault(reason.split(" (", 1)[0] or "reason not recorded", []).append(i + 1)
    return by_reason


def _geometry_text(eye: EyeResult) -> str:
    """'25 B-scans of 512 A-scans x 496 rows; 6.0 mm wide x 1.9 mm deep, 0.24 mm apart (over 5.8 mm)'."""
    vr = eye.volume_result
    if vr is None:
        return f"{eye.n_bscans} B-scans"
    n, h, w = vr.volume.shape
    text = f"{n} B-scan{'s' if n > 1 else ''} of {w} A-scans \u00d7 {h} rows"
    sp = vr.volume.spacing
    if sp.column is None:
        return text + "; pixel spacing not recorded"
    size = f"{w * sp.column:.1f} mm wide" + (f" \u00d7 {h * sp.row:.1f} mm deep" if sp.row is not None else "")
    text += f"; {size}"
    if sp.slice is not None and n > 1:
        text += f", {sp.slice:.2f} mm apart (over {(n - 1) * sp.slice:.1f} mm)"
    return text
