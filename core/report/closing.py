"""The closing sections: the model (what it is, what it was trained on, its intended use, the notice
in red), its measured performance from the model card, the disclaimer and the clinical review: per
eye the clinician's sign-off (who, when, confirmed or changed, the finding) or the empty signature
lines of an eye not signed yet."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from core.deid import output_year_text
from core.report.layout import _GREY, _RED, _eye_title, _local_time, _no_paths, _Section, _trained_on, _x
from core.results import EyeResult
from core.tiers import DEFAULT_TIERS

if TYPE_CHECKING:
    from core.audit import SignOff

DISCLAIMER = (
    "OCT Screen is a screening aid; it does not replace examination by an eye-care "
    "professional. The decision above is a suggestion for referral triage and must be "
    "reviewed and signed by a qualified clinician."
)

_GREEN = "#2E7D32"


def _pct(value: Any) -> str:
    """0.9846 -> '98.5 %'; a missing or non-finite value -> a dash."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{100 * value:.1f} %"
    return "\u2013"


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "\u2013"


def _section(d: Any, key: str) -> dict:
    """``d[key]`` when it is a dict, else {} (a card's metrics are free-form JSON)."""
    value = d.get(key) if isinstance(d, dict) else None
    return value if isinstance(value, dict) else {}


def _training_counts(td: dict) -> str:
    """'1244 training B-scans (825 patients), 208 validation B-scans, 311 synthetic training B-scans'."""
    parts = []
    if isinstance(td.get("n_train"), int):
        patients = td.get("n_train_patients")
        parts.append(
            f"{td['n_train']} training B-scans" + (f" ({patients} patients)" if isinstance(patients, int) else "")
        )
    if isinstance(td.get("n_val"), int):
        parts.append(f"{td['n_val']} validation B-scans")
    if isinstance(td.get("n_train_synthetic"), int) and td["n_train_synthetic"]:
        parts.append(f"{td['n_train_synthetic']} synthetic training B-scans")
    return ", ".join(parts)


def _tier_text(eye: EyeResult, tier: str) -> str:
    """'Routine referral \u2013 Refer to an ophthalmologist within 3-4 months.' in the eye's wording."""
    t = (eye.tiers or DEFAULT_TIERS).get(tier)
    return f"{t.name} \u2013 {t.action} {t.time_frame}." if t is not None else tier


class _ClosingSections(_Section):
    # -- the model ----------------------------------------------------------------------------
    def _model_section(self) -> list:
        from reportlab.lib import colors
        from reportlab.lib.styles import ParagraphStyle
        from reportlab.platypus import Paragraph

        s, card = self.styles, self.card
        red = ParagraphStyle("red", s["base"], fontName=self.bold, textColor=colors.HexColor(_RED))
        size = f"{card.input_size[0]}\u00d7{card.input_size[1]}"
        lines = [f"{card.name} v{card.version} ({card.arch}, {card.role}) \u00b7 classes: {', '.join(card.classes)}"]
        backends = sorted(
            {e.volume_result.backend for e in self.exam.eyes if e.volume_result is not None and e.volume_result.backend}
        )
        lines[0] += f" \u00b7 input {size}" + (f" \u00b7 run with: {', '.join(backends)}" if backends else "")
        lines.append(f"Trained on: {_trained_on(card)}")
        counts = _training_counts(card.training_data)
        if counts:
            lines.append(f"Training data: {counts}")
        intended = card.intended_use.strip() or "not stated in the model card"
        lines.append(f"Intended use: {_no_paths(intended)}")
        out = [Paragraph("Model", s["h2"])] + [Paragraph(_x(line), s["base"]) for line in lines]
        if self.notice:
            out.append(Paragraph(_x(self.notice.upper()), red))
        return out

    def _performance(self) -> list:
        """The card's measured performance: per class sensitivity / specificity on the validation
        B-scans and, where calibrated, the eye thresholds with their sensitivity; what it was measured on."""
        from reportlab.platypus import Paragraph

        s = self.styles
        title = Paragraph("Measured performance (from the model card)", s["h3"])
        val = _section(self.card.metrics, "validation")
        per_class = _section(val, "per_class")
        if not per_class:
            acc = self.card.metrics.get("accuracy")
            if isinstance(acc, (int, float)) and math.isfinite(acc):
                text = (
                    f"Accuracy per B-scan: {_pct(acc)} (the model card does not say on which data, nor per "
                    "class); not a clinical validation."
                )
            else:
                text = "The model card records no measured performance."
            return [title, Paragraph(_x(text), s["base"])]
        calibration = _section(self.card.metrics, "threshold_calibration")
        out = [title, Paragraph(_x(self._measured_on(val)), s["base"]), self._performance_table(per_class, calibration)]
        summary = (
            f"Balanced accuracy (mean of the per-class sensitivities): {_pct(val.get('macro_sensitivity'))}; "
            f"accuracy: {_pct(val.get('accuracy'))}."
        )
        out.append(Paragraph(_x(summary), s["base"]))
        if calibration:
            out.append(Paragraph(_x(self._calibration_note(calibration)), s["small"]))
        return out

    def _measured_on(self, val: dict) -> str:
        td = self.card.training_data
        n = _count(val.get("n", td.get("n_val")))
        data = _no_paths(str(td.get("name") or "the training dataset"))
        held_out = "of the training dataset's held-out patients" if self.card.split_hash else "held out from training"
        split = f", patient-level split {self.card.split_hash}" if self.card.split_hash else ""
        return (
            f"Measured on {n} validation B-scans {held_out} ({data}{split}); not a clinical validation: "
            "no other population, device or clinic was tested."
        )

    def _performance_table(self, per_class: dict, calibration: dict):
        from reportlab.lib import colors
        from reportlab.platypus import Paragraph, Table, TableStyle

        s = self.styles
        eyes = _section(calibration, "per_class")
        groups = ["", "Per B-scan (validation)", "", ""] + (
            ["Per eye (threshold calibration)", "", "", ""] if eyes else []
        )
        head = ["Class", "B-scans", "Sensitivity", "Specificity"]
        if eyes:
            head += ["Threshold", "Sensitivity", "Specificity", "Eyes with / without"]
        rows = [[Paragraph(_x(h), s["label"]) for h in groups], [Paragraph(_x(h), s["label"]) for h in head]]
        for cls in [c for c in self.card.classes if c in per_class] + [
            c for c in per_class if c not in self.card.classes
        ]:
            rows.append([Paragraph(_x(str(v), 40), s["base"]) for v in self._performance_row(cls, per_class, eyes)])
        w = self.width
        widths = [0.12 * w, 0.1 * w, 0.12 * w, 0.12 * w] + ([0.11 * w, 0.12 * w, 0.12 * w, 0.19 * w] if eyes else [])
        t = Table(rows, colWidths=widths)
        grey = colors.HexColor("#999999")
        style = [
            ("SPAN", (1, 0), (3, 0)),
            ("LINEBELOW", (1, 0), (3, 0), 0.5, grey),
            ("LINEBELOW", (0, 1), (-1, 1), 0.5, grey),
            ("TOPPADDING", (0, 0), (-1, -1), 0.5),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 0.5),
            ("LEFTPADDING", (0, 0), (-1, -1), 2),
        ]
        if eyes:
            style += [("SPAN", (4, 0), (7, 0)), ("LINEBELOW", (4, 0), (7, 0), 0.5, grey)]
        t.setStyle(TableStyle(style))
        return t

    @staticmethod
    def _performance_row(cls: str, per_class: dict, eyes: dict) -> list[str]:
        m = _section(per_class, cls)
        row = [cls, _count(m.get("support")), _pct(m.get("sensitivity")), _pct(m.get("specificity"))]
        e = _section(eyes, cls)
        if eyes and not e:
            row += ["\u2013"] * 4  # not calibrated per eye
        elif eyes:
            th = e.get("threshold")
            row += [
                f"{th:.2f}" if isinstance(th, (int, float)) and math.isfinite(th) else "\u2013",
                _pct(e.get("sensitivity")),
                _pct(e.get("specificity")),
                f"{_count(e.get('n_pos'))} / {_count(e.get('n_neg'))}",
            ]
        return row

    @staticmethod
    def _calibration_note(calibration: dict) -> str:
        data = _no_paths(str(calibration.get("data") or "data not stated"))
        rule = _no_paths(str(calibration.get("rule") or ""))
        return (
            f"Eye thresholds calibrated on {data}" + (f" ({rule})" if rule else "") + ". The eye sensitivity and "
            "specificity were measured on the same eyes the thresholds were chosen on, so they are optimistic."
        )

    # -- disclaimer and clinical review -------------------------------------------------------
    def _disclaimer(self):
        from reportlab.lib import colors
        from reportlab.platypus import Paragraph, Table, TableStyle

        disclaimer = Table([[Paragraph(_x(DISCLAIMER), self.styles["base"])]], colWidths=[self.width])
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
        return disclaimer

    def _sign_off(self) -> list:
        """The disclaimer, then per eye its sign-off or its empty signature lines."""
        from reportlab.platypus import Paragraph, Spacer

        s = self.styles
        out: list = [self._disclaimer(), Spacer(1, 6), Paragraph("Clinical review", s["h3"])]
        if not self.exam.eyes:
            return out + [Paragraph("No eye was screened: nothing to sign.", s["base"])]
        for eye in self.exam.eyes:
            so = self._signoff_of(eye)
            out += [self._eye_review(eye, so), Spacer(1, 5)]
        return out

    def _eye_review(self, eye: EyeResult, so: SignOff | None):
        """One eye's review: a heading with SIGNED / NOT SIGNED, then the sign-off or the lines."""
        from reportlab.lib import colors
        from reportlab.lib.styles import ParagraphStyle
        from reportlab.platypus import Paragraph, Table, TableStyle

        s = self.styles
        status, colour = ("SIGNED", _GREEN) if so is not None else ("NOT SIGNED", _RED)
        mark = ParagraphStyle("mark", s["value"], textColor=colors.HexColor(colour))
        head = [Paragraph(_x(f"{_eye_title(eye)} \u2013 model: {eye.tier.name}"), s["value"]), Paragraph(status, mark)]
        body = self._signed_rows(eye, so) if so is not None else [[self._signature_lines(), ""]]
        t = Table([head] + body, colWidths=[self.width - 80, 80])
        style = [
            ("BOX", (0, 0), (-1, -1), 0.6, colors.HexColor("#BBBBBB")),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#F3F5F7")),
            ("ALIGN", (1, 0), (1, 0), "RIGHT"),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("TOPPADDING", (0, 0), (-1, -1), 2),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
        ]
        style += [("SPAN", (0, r), (1, r)) for r in range(1, len(body) + 1)]
        t.setStyle(TableStyle(style))
        return t

    def _signed_rows(self, eye: EyeResult, so: SignOff) -> list[list]:
        """Who signed and when, what they decided against what the model said, and their finding."""
        from reportlab.platypus import Paragraph

        s = self.styles
        when = f"in {output_year_text(so.signed_at)}" if self.opts.deidentify else f"on {_local_time(so.signed_at)}"
        lines = [f"Signed by {self._person(so.clinician)} {when}"]
        if so.changed:
            lines.append(
                f"CHANGED: the model said {_tier_text(eye, so.model_tier)} "
                f"The clinician decided: {_tier_text(eye, so.final_tier)}"
            )
        else:
            lines.append(f"CONFIRMED: {_tier_text(eye, so.final_tier)}")
        if self.opts.deidentify and so.finding:
            lines.append("Finding: (removed: free text is not kept in a de-identified report)")
        else:
            lines.append(f"Finding: {so.finding or 'none written'}")
        if so.model_tier != eye.urgency.value or (so.model_name, so.model_version) != (
            self.card.name,
            self.card.version,
        ):
            lines.append(
                f"Note: signed on a result of {so.model_name} v{so.model_version} that said "
                f"{_tier_text(eye, so.model_tier)} This report shows {self.card.name} v{self.card.version}: "
                f"{eye.tier.name}."
            )
        return [[Paragraph(_x(line, 2000), s["base"]), ""] for line in lines]

    def _signature_lines(self):
        """The empty lines a clinician signs an eye on (the reviewing clinician's name pre-filled)."""
        from reportlab.lib import colors
        from reportlab.lib.styles import ParagraphStyle
        from reportlab.platypus import Paragraph, Table, TableStyle

        s = self.styles
        w = self.width - 12
        box = "\u25a1" if self.font != "Helvetica" else "[ ]"
        name = self.opts.clinician.strip()
        note = ParagraphStyle("unsigned", s["small"], textColor=colors.HexColor(_GREY))
        rows = [
            [Paragraph("Not signed: no clinician has reviewed this eye's decision yet.", note), "", "", "", ""],
            [
                Paragraph("Reviewing clinician", s["label"]),
                Paragraph(_x(name, 80), s["value"]),
                "",
                Paragraph("Date, time", s["label"]),
                "",
            ],
            [
                Paragraph("Signature", s["label"]),
                "",
                "",
                Paragraph("Decision", s["label"]),
                Paragraph(f"{box} confirmed&nbsp;&nbsp;&nbsp;{box} changed to: ____________", s["base"]),
            ],
        ]
        t = Table(rows, colWidths=[0.19 * w, 0.29 * w, 0.02 * w, 0.12 * w, 0.38 * w], rowHeights=[12, 22, 26])
        line = colors.HexColor("#444444")
        t.setStyle(
            TableStyle(
                [
                    ("SPAN", (0, 0), (-1, 0)),
                    ("VALIGN", (0, 0), (-1, -1), "BOTTOM"),
                    ("LEFTPADDING", (0, 0), (0, -1), 0),
                    ("LINEBELOW", (1, 1), (1, 2), 0.6, line),
                    ("LINEBELOW", (4, 1), (4, 1), 0.6, line),
                ]
            )
        )
        return t
