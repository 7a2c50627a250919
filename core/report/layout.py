"""Layout helpers every section shares: colours, fonts (DejaVu Sans embedded when installed, else
Helvetica), text that the font can show and that fits a table cell, images, and ``_Section``, the
state each section mixin of the builder reads."""

from __future__ import annotations

import datetime as _dt
import io
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image as PILImage

import core.report as _report  # the package holds the font cache (``core.report._fonts``)
from core.audit import eye_record_key
from core.results import EyeResult, Urgency
from core.tiers import CLASS_COLOURS, DEFAULT_TIERS, class_colour

if TYPE_CHECKING:
    from core.audit import SignOff
    from core.modelcard import ModelCard
    from core.report.options import ReportOptions
    from core.results import ExamResult

log = logging.getLogger("core.report")

#: the GUI uses the same). The box always carries the tier in words as well.
URGENCY_COLOURS: dict[Urgency, tuple[str, str]] = {
    u: (DEFAULT_TIERS[u.value].colour, DEFAULT_TIERS[u.value].text_colour) for u in Urgency
}
_RED, _GREY, _DARK = "#C62828", "#666666", "#1A1A1A"
_EVIDENCE_COLOUR = "#1565C0"


class _Section:
    """What the section mixins of ``core.report.builder._ReportBuilder`` read (set by its __init__ and
    build)."""

    exam: ExamResult
    card: ModelCard
    opts: ReportOptions
    page: tuple[float, float]
    report_id: str
    generated: str
    demo: bool
    notice: str
    patient_id: str
    font: str
    bold: str
    styles: dict
    width: float

    def _signoff_of(self, eye: EyeResult) -> SignOff | None:
        """The sign-off that counts for ``eye``: the last of ``opts.signoffs`` with its audit key."""
        key = eye_record_key(eye)
        found = [so for so in self.opts.signoffs if so.key == key]
        return found[-1] if found else None

    def _person(self, name: str, missing: str = "not recorded", *, care_path: bool = False) -> str:
        """A staff name as printed, ``missing`` when empty. A de-identified report removes the patient's
        care-path people (``care_path``: the referring clinician and the operator, removed by PS3.15 too:
        they point to where the patient was seen) and keeps the reviewing and signing clinicians, who are
        accountable for the report."""
        if not name.strip():
            return missing
        return "(removed)" if care_path and self.opts.deidentify else name.strip()


def _eye_title(eye: EyeResult) -> str:
    """'Right eye (OD)'; 'Right eye (OD, set by user)' when the user said which eye it is."""
    title = eye.eye.laterality.long_name
    return title[:-1] + ", set by user)" if eye.laterality_set_by_user else title


def _class_colour(classes: list[str], name: str) -> str:
    others = [c for c in classes if c.lower() not in CLASS_COLOURS]
    return class_colour(name, others.index(name) if name in others else 0)


_FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts",
    "/Library/Fonts",
    str(Path.home() / ".fonts"),
    str(Path(os.environ.get("WINDIR", "C:/Windows")) / "Fonts"),
)


def _report_fonts() -> tuple[str, str]:
    """(regular, bold) font names: DejaVu Sans embedded when installed, else Helvetica; chosen once
    and kept in ``core.report._fonts``."""
    if _report._fonts is None:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont

        fonts = ("Helvetica", "Helvetica-Bold")
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
                    fonts = ("OctDejaVu", "OctDejaVu-Bold")
                except Exception as e:  # a damaged font file must not stop a report
                    log.warning("cannot use font %s (%s); using Helvetica", regular, e)
                break
        _report._fonts = fonts
    return _report._fonts


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


#: a local file path inside free text: '/data/x', './x', '../x', '~/x', 'C:\\x', '\\\\server\\x'. Not
#: 'CNV/DME' or 'doi:10.1/abc' (a slash after a letter, digit or colon is not the start of a path).
_PATH = re.compile(
    r"(?<![\w:/.~\\])(?:[A-Za-z]:[\\/]|\\\\|~[\\/]|\.{1,2}[\\/]|/(?=[^\s/]))[^\s,;()\[\]]*?(?=[:.]?(?:[\s,;()\[\]]|$))"
)


def _no_paths(text: str) -> str:
    """``text`` with every local file path replaced by '(path removed)': the report names no files."""
    return _PATH.sub("(path removed)", text)


def _trained_on(card: ModelCard) -> str:
    """What the model was trained on, from the card's ``training_data``: its ``short`` line, else its
    name, citation, licence and counts; never its ``description`` (that names the local data folder)."""
    td = card.training_data
    short = str(td.get("short") or "").strip()
    if short:
        return _no_paths(short)
    name = str(td.get("name") or "").strip()
    if not name:
        return "data not stated in the model card"
    credits = "; ".join(str(td[k]) for k in ("citation", "licence") if td.get(k))
    text = name + (f" ({credits})" if credits else "")
    if isinstance(td.get("n_train"), int):
        patients = td.get("n_train_patients")
        text += f": {td['n_train']} B-scans" + (f" of {patients} patients" if isinstance(patients, int) else "")
    return _no_paths(text)


def _local_time(when: _dt.datetime) -> str:
    """'2026-12-02 16:40 CET': ``when`` in the local time zone, with the zone (a naive time is local)."""
    local = when.astimezone()
    zone = local.strftime("%Z") or local.strftime("UTC%z")
    return f"{local:%Y-%m-%d %H:%M} {zone}"


def _rgb_image(rgb: np.ndarray, max_width: float, max_height: float):
    """An RGB uint8 array as a platypus Image (JPEG, quality 88) fitted into the given box."""
    from reportlab.platypus import Image

    h, w = rgb.shape[:2]
    scale = min(max_width / w, max_height / h)
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=88)
    buf.seek(0)
    return Image(buf, width=w * scale, height=h * scale)
