"""The evidence of an eye: the per-B-scan probability strip chart (ungradable B-scans shaded,
evidence B-scans marked) and the evidence B-scans with their CAM overlays and colour bar."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import core.report as _report  # overlay and _rgb_image are looked up on the package (one place to patch)
from core.cam import colour_bar
from core.enface import device_fundus
from core.preprocess import to_uint8
from core.report.layout import _DARK, _EVIDENCE_COLOUR, _GREY, _class_colour, _eye_title, _fit, _Section, _x
from core.results import EyeResult, VolumeResult
from core.volume import Laterality, OctVolume

#: scale bar lengths (mm): the longest that is at most a quarter of the B-scan's width (or depth).
_BAR_MM = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class _Marks:
    """What an evidence image is drawn with: mm per column and per row for the scale bars (None: no
    bar) and the (left, right) side labels (None: none)."""

    column_mm: float | None
    row_mm: float | None
    sides: tuple[str, str] | None


def _scale(volume: OctVolume) -> tuple[float | None, float | None]:
    """mm per column and per row where the file records them and they are plausible for a retinal
    OCT (0.5-40 mm wide, 0.2-10 mm deep); None otherwise: no bar rather than a wrong one."""
    _, h, w = volume.shape
    sp = volume.spacing
    column = sp.column if sp.column is not None and 0.5 <= w * sp.column <= 40 else None
    row = sp.row if sp.row is not None and 0.2 <= h * sp.row <= 10 else None
    return column, row


def _sides(volume: OctVolume, index: int) -> tuple[tuple[str, str] | None, bool]:
    """(left, right) anatomical sides of B-scan ``index`` and whether the file said so (the device's
    fundus picture with the B-scan's line on it) rather than the usual horizontal raster being assumed.

    A horizontal B-scan is shown as on a fundus photo: a right eye's temporal side on the left, a left
    eye's nasal side (the optic disc) on the left; no labels when the eye is unknown. A vertical line
    on the fundus picture gives superior / inferior; an oblique one no labels."""
    fundus = device_fundus(volume)
    flipped, known = False, fundus is not None
    if fundus is not None:
        x0, y0, x1, y1 = fundus.lines[index]
        dx, dy = x1 - x0, y1 - y0
        if abs(dy) > 2 * abs(dx):
            return (("superior", "inferior") if dy > 0 else ("inferior", "superior")), True
        if abs(dx) <= 2 * abs(dy):
            return None, True
        flipped = dx < 0
    if volume.laterality not in (Laterality.OD, Laterality.OS):
        return None, known
    left, right = ("temporal", "nasal") if volume.laterality is Laterality.OD else ("nasal", "temporal")
    return ((right, left) if flipped else (left, right)), known


def _bar_mm(extent_mm: float) -> float | None:
    fits = [b for b in _BAR_MM if b <= 0.25 * extent_mm]
    return fits[-1] if fits else None


def _bar_label(mm: float) -> str:
    return f"{mm:g} mm" if mm >= 1 else f"{round(mm * 1000)} \u00b5m"


def _bars(
    marks: _Marks, shape: tuple[int, int], size: tuple[float, float]
) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """The horizontal and the vertical scale bar of a B-scan of ``shape`` (h, w) drawn at ``size``
    (width, height) points: (length in mm, length in points) each, None where there is none."""
    (h, w), (width, height) = shape, size
    across = down = None
    if marks.column_mm and (mm := _bar_mm(w * marks.column_mm)):
        across = (mm, mm / marks.column_mm * width / w)
    if marks.row_mm and (mm := _bar_mm(h * marks.row_mm)):
        down = (mm, mm / marks.row_mm * height / h)
    return across, down


def _marked(image, shape: tuple[int, int], marks: _Marks, font: str):
    """The platypus ``image`` of a B-scan of ``shape`` (h, w) with its scale bars and side labels."""
    from reportlab.lib import colors
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.platypus import Flowable

    class _Marked(Flowable):
        def __init__(self) -> None:
            super().__init__()
            self.width, self.height = image.drawWidth, image.drawHeight

        def wrap(self, avail_width, avail_height):
            return self.width, self.height

        def _label(self, x: float, y: float, text: str, anchor: str = "left") -> None:
            c, tw = self.canv, stringWidth(text, font, 5.5)
            x0 = {"left": x, "right": x - tw, "centre": x - tw / 2}[anchor]
            c.setFillColor(colors.black)
            c.setFillAlpha(0.55)
            c.rect(x0 - 1.5, y - 1.5, tw + 3, 7.5, stroke=0, fill=1)
            c.setFillAlpha(1)
            c.setFillColor(colors.white)
            c.drawString(x0, y, text)

        def draw(self) -> None:
            image.drawOn(self.canv, 0, 0)
            self.canv.saveState()
            self.canv.setFont(font, 5.5)
            if marks.sides is not None:
                self._label(3, self.height - 8, _fit(marks.sides[0]))
                self._label(self.width - 3, self.height - 8, _fit(marks.sides[1]), "right")
            self._bars()
            self.canv.restoreState()

        def _bars(self) -> None:
            c = self.canv
            across, down = _bars(marks, shape, (self.width, self.height))
            length_h = across[1] if across else 0.0
            length_v = down[1] if down else 0.0
            x, y = self.width - 5 - length_h, 5.0  # the bars' corner
            c.setLineCap(0)
            for width, colour in ((2.6, colors.black), (1.2, colors.white)):
                c.setStrokeColor(colour)
                c.setLineWidth(width)
                if length_h:
                    c.line(x, y, x + length_h, y)
                if length_v:
                    c.line(x, y, x, y + length_v)
            if across:
                self._label(x + length_h / 2, y + 3, _fit(_bar_label(across[0])), "centre")
            if down:
                self._label(x - 3, y + length_v / 2 - 2, _fit(_bar_label(down[0])), "right")

    return _Marked()


def _grey_rgb(bscan: np.ndarray) -> np.ndarray:
    """The B-scan as scanned (the display stretch the overlays use, no heatmap), RGB uint8."""
    return np.repeat(to_uint8(bscan)[..., None], 3, axis=2)


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
        self._chart_legend(d, vr, height - 10)
        return d

    def _chart_legend(self, d, vr: VolumeResult, y: float) -> None:
        """The chart's title at the left and its legend at the right of the top line (smaller type
        where many classes would run the legend into the title)."""
        from reportlab.graphics.shapes import Line, Rect, String
        from reportlab.lib import colors
        from reportlab.pdfbase.pdfmetrics import stringWidth

        title = "Probability per B-scan"
        d.add(String(0, y, title, fontName=self.bold, fontSize=9.5, fillColor=colors.HexColor(_DARK)))
        items = [(name, _class_colour(vr.classes, name), "line") for name in vr.classes]
        items += [
            ("ungradable", "#D5D5D5", "box"),
            ("evidence (E1\u2013E3)", _EVIDENCE_COLOUR, "dash"),
            ("threshold", "#888888", "dots"),
        ]
        labels = [_fit(label) for label, _, _ in items]
        room = self.width - stringWidth(title, self.bold, 9.5) - 10
        size, pad = 7.0, 12.0
        while size > 5 and sum(13 + stringWidth(label, self.font, size) + pad for label in labels) - pad > room:
            size, pad = size - 0.5, max(6.0, pad - 2)
        x = self.width - sum(13 + stringWidth(label, self.font, size) + pad for label in labels) + pad
        for (_, colour, kind), label in zip(items, labels):
            col = colors.HexColor(colour)
            if kind == "box":
                d.add(Rect(x, y - 1, 10, 6, fillColor=col, strokeColor=None))
            else:
                dash = {"line": None, "dash": [2, 1.5], "dots": [1.5, 2]}[kind]
                width = 1.4 if kind == "line" else 0.8
                d.add(Line(x, y + 2, x + 10, y + 2, strokeColor=col, strokeWidth=width, strokeDashArray=dash))
            d.add(String(x + 13, y, label, fontName=self.font, fontSize=size, fillColor=colors.HexColor(_DARK)))
            x += 13 + stringWidth(label, self.font, size) + pad

    def _evidence(self, eye: EyeResult, vr: VolumeResult) -> list:
        """The evidence B-scans (up to 3, 1-based numbers): each with the CAM overlay of the decided
        class and, below it, as scanned; scale bars and side labels on both."""
        from reportlab.platypus import Paragraph

        s = self.styles
        title = Paragraph(_x(f"Evidence B-scans \u2013 {_eye_title(eye)}"), s["h3"])
        idx = [i for i in eye.evidence[:3] if 0 <= i < vr.n]
        if not idx:
            why = "the eye needs a rescan" if eye.rescan else "none recorded"
            return [title, Paragraph(_x(f"No evidence B-scans ({why})."), s["base"])]
        has_cam = vr.cams is not None and eye.label in vr.classes
        table, known = self._evidence_table(eye, vr, idx, has_cam)
        notes = [Paragraph(_x(self._evidence_note(eye, vr, has_cam, known)), s["small"])]
        return [self._with_colour_bar(title) if has_cam else title, table] + notes

    def _evidence_table(self, eye: EyeResult, vr: VolumeResult, idx: list[int], has_cam: bool):
        """The images in columns: with the heatmap, as scanned, the caption; and whether the sides
        came from the file."""
        from reportlab.platypus import Paragraph, Table, TableStyle

        gap = 6
        h0, w0 = vr.volume.bscans.shape[1:]
        cols = 3 if w0 <= 1.6 * h0 else 2  # wide B-scans (1024+ A-scans): two per row
        w = (self.width - (cols - 1) * gap) / cols
        max_height = w * (0.9 if self.opts.page_size == "A4" else 0.78)  # Letter is shorter: flatter images
        column_mm, row_mm = _scale(vr.volume)
        c = vr.classes.index(eye.label) if eye.label in vr.classes else None
        rows: list[list] = [[], [], []]
        known = True
        for rank, i in enumerate(idx, start=1):
            bscan = vr.volume.bscans[i]
            sides, from_file = _sides(vr.volume, i)
            known = known and from_file
            marks = _Marks(column_mm, row_mm, sides)
            cam = vr.cam(i, eye.label, size=bscan.shape[:2]) if has_cam else None
            p = vr.probability(i, eye.label) if has_cam else 0.0
            images = [_report.overlay(bscan, cam, probability=p)] if has_cam else []
            images.append(_grey_rgb(bscan))
            for row, rgb in zip(rows, images):
                row.append(_marked(_report._rgb_image(rgb, w, max_height), bscan.shape[:2], marks, self.font))
            prob = f" \u00b7 {eye.label} {float(vr.probs[i, c]):.2f}" if c is not None else ""
            rows[2].append(Paragraph(_x(f"E{rank}: B-scan {i + 1} of {vr.n}{prob}"), self.styles["caption"]))
        rows = [r for r in rows if r]
        data = []
        for start in range(0, len(idx), cols):  # rows of images, each followed by its captions
            for row in rows:
                part = row[start : start + cols] + [""] * (cols - len(row[start : start + cols]))
                data.append([x for k, item in enumerate(part) for x in ([item] if k == 0 else ["", item])])
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
        return t, known

    @staticmethod
    def _evidence_note(eye: EyeResult, vr: VolumeResult, has_cam: bool, sides_known: bool) -> str:
        """What the images show, and what their bars and labels rest on."""
        if has_cam:
            text = (
                f"Top: heat colours where the model found {eye.label}, painted in proportion to its probability on "
                "the B-scan (as in the app); uncoloured areas did not contribute. Below: the same B-scan as scanned."
            )
        else:
            text = "No activation maps were computed; the B-scans are shown without overlay."
        column_mm, row_mm = _scale(vr.volume)
        if column_mm is None and row_mm is None:
            text += " No scale bar: the file does not record a usable pixel spacing."
        else:
            text += (
                " Scale bars from the file's pixel spacing (the image is not drawn to its physical aspect:"
                " the horizontal bar measures width, the vertical one depth)."
            )
        if vr.volume.laterality not in (Laterality.OD, Laterality.OS) and not sides_known:
            text += " No side labels: the file does not say which eye this is."
        elif not sides_known:
            text += (
                " Sides assume a horizontal B-scan shown as on a fundus photo (the file does not record the"
                " scan direction)."
            )
        return text

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
