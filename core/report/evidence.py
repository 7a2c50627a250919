"""The evidence of an eye: the per-B-scan probability strip chart (ungradable B-scans shaded,
evidence B-scans marked) and the evidence B-scans with their CAM overlays and colour bar."""

from __future__ import annotations

import core.report as _report  # overlay and _rgb_image are looked up on the package (one place to patch)
from core.cam import colour_bar
from core.report.layout import _DARK, _EVIDENCE_COLOUR, _GREY, _class_colour, _fit, _Section, _x
from core.results import EyeResult, VolumeResult


class _EvidenceSections(_Section):
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
            cells.append(_report._rgb_image(_report.overlay(bscan, cam, probability=p), w, max_height=w * max_aspect))
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
        bar = _report._rgb_image(colour_bar(240, 12), 80, 6)
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
