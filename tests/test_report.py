"""The PDF screening report: content, page sizes, demo warning, de-identification, atomic writes; who
and where, the scan, evidence images with scale bars and sides, no local paths, local times, the
model's measured performance and the clinicians' sign-offs.

Text is checked through poppler's pdftotext/pdfinfo/pdfimages (subprocess), i.e. what a reader of
the PDF sees, not what we meant to write.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from dataclasses import replace as dataclasses_replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core.report as report
from core.modelcard import DEMO_WARNING, ModelCard
from core.report import ReportOptions, preview_exam, write_report
from core.results import ExamResult, EyeResult, Urgency, VolumeResult
from core.volume import DeviceInfo, EyeKey, Laterality, OctVolume, PatientInfo, PixelSpacing, StudyInfo
from tests.conftest import run_tool

CLASSES = ["normal", "drusen", "cnv"]
PATIENT = PatientInfo("HN-7731-09", "Zielińska^Łucja", "19480229", "F")
STUDY = StudyInfo(
    study_uid="1.2.826.0.1.3680043.8.498.424242",
    study_date="20260131",
    study_time="101500",
    accession_number="ACC-55190",
    description="Macula 25",
)
DEVICE = DeviceInfo("Heidelberg Engineering", "Spectralis")


def _layered_volume(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Random-ish layered B-scans: bright bands at a few depths plus speckle."""
    z = np.arange(h)[:, None] / h
    bands = (
        40
        + 150 * np.exp(-(((z - 0.45) / 0.02) ** 2))
        + 200 * np.exp(-(((z - 0.62) / 0.015) ** 2))
        + 60 * (z > 0.45) * (z < 0.62)
    )
    base = np.broadcast_to(bands, (h, w))
    return np.clip(base[None] * rng.gamma(4.0, 0.25, size=(n, h, w)), 0, 255).astype(np.uint8)


def make_eye(
    lat: Laterality,
    label: str,
    urgency: Urgency,
    *,
    n: int = 25,
    h: int = 124,
    w: int = 128,
    evidence: tuple[int, ...] = (15, 12, 16),
    ungradable: tuple[int, ...] = (2, 3),
    needs_review: bool = False,
    demo: bool = True,
    seed: int = 0,
    with_volume: bool = True,
    spacing: PixelSpacing | None = None,
    reasons: list[str] | None = None,
) -> EyeResult:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([1, 1, 1], size=n).astype(np.float32)
    if label in CLASSES:
        probs[list(evidence), :] = 0.02
        probs[list(evidence), CLASSES.index(label)] = 0.96
    gradable = np.ones(n, bool)
    gradable[list(ungradable)] = False
    reasons = reasons or ["" if g else "low signal" for g in gradable]
    cams = rng.random((n, 3, 8, 8)).astype(np.float32)
    vol = OctVolume(
        _layered_volume(rng, n, h, w),
        lat,
        PATIENT,
        STUDY,
        DEVICE,
        spacing=spacing or PixelSpacing(),
        source=Path(f"/exports/secret_folder/{lat.value}_volume.dcm"),
    )
    vr = VolumeResult(vol, CLASSES, probs, cams, gradable, reasons, "kdoct-student", "1.2.0", demo, "onnxruntime")
    scores = {c: float(probs[list(evidence), j].mean()) if evidence else float("nan") for j, c in enumerate(CLASSES)}
    return EyeResult(
        EyeKey(PATIENT.patient_id, STUDY.study_uid, lat),
        label,
        urgency,
        scores,
        scores.get(label, 0.0),
        needs_review,
        list(evidence),
        n,
        n - len(ungradable),
        list(ungradable),
        [f"{label} score above its threshold"],
        vr if with_volume else None,
    )


def make_exam(**kw) -> ExamResult:
    return ExamResult(
        PATIENT,
        STUDY,
        DEVICE,
        [
            make_eye(Laterality.OD, "cnv", Urgency.URGENT, **kw),
            make_eye(Laterality.OS, "drusen", Urgency.ROUTINE, needs_review=True, seed=1, **kw),
        ],
    )


def make_card(demo: bool = True) -> ModelCard:
    return ModelCard(
        name="kdoct-student",
        arch="efficientnet_b2",
        classes=CLASSES,
        input_size=(260, 260),
        version="1.2.0",
        demo=demo,
        metrics={"accuracy": 0.91},
        training_data={"description": "synthetic volumes"},
    )


def pdftext(path: Path, page: int | None = None) -> str:
    args = ["pdftotext", "-layout"] + (["-f", str(page), "-l", str(page)] if page else []) + [str(path), "-"]
    return run_tool(args, check=True, capture_output=True, text=True).stdout


def flat(path: Path, page: int | None = None) -> str:
    """The text in reading order (no -layout: a table cell's wrapped lines stay together), whitespace as
    single spaces."""
    args = ["pdftotext"] + (["-f", str(page), "-l", str(page)] if page else []) + [str(path), "-"]
    return " ".join(run_tool(args, check=True, capture_output=True, text=True).stdout.split())


def layout_lines(path: Path, page: int | None = None) -> list[str]:
    """The -layout text's lines (a table row on one line), whitespace as single spaces."""
    return [" ".join(line.split()) for line in pdftext(path, page).splitlines() if line.strip()]


def pdfinfo(path: Path, *extra: str) -> str:
    return run_tool(["pdfinfo", *extra, str(path)], check=True, capture_output=True, text=True).stdout


def page_count(path: Path) -> int:
    return int(re.search(r"^Pages:\s+(\d+)", pdfinfo(path), re.M).group(1))


@pytest.fixture(scope="module")
def std_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "exam.pdf"
    write_report(
        out,
        make_exam(),
        make_card(),
        ReportOptions(institution="Lakeside Eye Unit", report_id="RID12345", clinician="Dr. A. Retina"),
    )
    return out


def test_report_is_a_pdf_with_decisions_urgency_and_bscan_numbers(std_report: Path) -> None:
    assert std_report.read_bytes().startswith(b"%PDF-")
    text = pdftext(std_report)
    assert "OCT screening report" in text and "Lakeside Eye Unit" in text
    assert "URGENT REFERRAL: CNV" in text and "ROUTINE REFERRAL: DRUSEN" in text
    assert "Right eye (OD)" in text and "Left eye (OS)" in text
    assert "REVIEW ADVISED" in text  # the OS eye needs review
    # evidence B-scans with 1-based numbers (indices 15, 12, 16)
    for rank, number in ((1, 16), (2, 13), (3, 17)):
        assert f"E{rank}: B-scan {number} of 25" in text
    assert "low signal: 2 (B-scans 3, 4)" in flat(std_report) and "23 of 25 B-scans gradable" in text
    assert "Dr. A. Retina" in text and "Signature" in text
    assert "does not replace examination by an eye-care professional" in text
    assert "kdoct-student v1.2.0" in text  # model card summary
    n = page_count(std_report)
    for page in range(1, n + 1):  # footer on every page
        ptext = pdftext(std_report, page)
        assert f"page {page} of {n}" in ptext
        assert "Report RID12345" in ptext and "OCT Screen 0.1.0" in ptext and "generated" in ptext


def test_demo_warning_on_every_page_and_only_for_demo_models(std_report: Path, tmp_path: Path) -> None:
    n = page_count(std_report)
    assert n >= 2
    for page in range(1, n + 1):
        assert DEMO_WARNING.upper() in pdftext(std_report, page)  # em dash included
    out = write_report(tmp_path / "clinical.pdf", make_exam(demo=False), make_card(demo=False))
    assert DEMO_WARNING.upper() not in pdftext(out) and DEMO_WARNING not in pdftext(out)
    assert "demonstration" not in pdfinfo(out).lower()


@pytest.mark.parametrize("size, points", [("A4", "595.276 x 841.89"), ("Letter", "612 x 792")])
def test_page_size_on_every_page(tmp_path: Path, size: str, points: str) -> None:
    out = write_report(
        tmp_path / f"r_{size}.pdf",
        preview_exam(seed=1, n=12, size=(124, 128)),
        make_card(),
        ReportOptions(page_size=size),
    )
    n = page_count(out)
    assert n >= 2
    sizes = re.findall(r"Page\s+\d+ size:\s+([\d.]+ x [\d.]+)", pdfinfo(out, "-f", "1", "-l", str(n)))
    assert sizes == [points] * n


def test_bad_page_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="page_size"):
        opts = ReportOptions(page_size="A3")  # type: ignore[arg-type]
        write_report(tmp_path / "x.pdf", make_exam(), make_card(), opts)
    assert list(tmp_path.iterdir()) == []


def test_identity_shown_without_deidentify_and_nowhere_with_it(std_report: Path, tmp_path: Path) -> None:
    text = pdftext(std_report)
    for shown in ("Zielińska, Łucja", "HN-7731-09", "1948-02-29", "ACC-55190"):
        assert shown in text  # DejaVu renders the non-Latin-1 name
    out = write_report(
        tmp_path / "anon.pdf",
        make_exam(),
        make_card(),
        ReportOptions(deidentify=True, report_id="RANON1", institution="Lakeside Eye Unit"),
    )
    text, meta, raw = pdftext(out), pdfinfo(out), out.read_bytes()
    for secret in (
        "Zieli",
        "Łucja",
        "Lucja",
        "HN-7731-09",
        "7731",
        "1948",
        "ACC-55190",
        "secret_folder",
        STUDY.study_uid,
    ):
        assert secret not in text, secret
        assert secret not in meta, secret
        if not secret.isdigit():  # digits alone also occur in the file's own byte offsets and stream lengths
            assert secret.encode() not in raw, secret
    assert "ANON-RANON1" in text and "(pseudonym)" in text
    assert "de-identified" in meta  # marker checked by the DICOM export
    assert "URGENT REFERRAL: CNV" in text  # the findings stay


def test_refuses_to_overwrite_unless_asked(std_report: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.pdf"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="r.pdf"):
        write_report(out, make_exam(), make_card())
    assert out.read_bytes() == b"precious"
    write_report(out, make_exam(), make_card(), overwrite=True)
    assert out.read_bytes().startswith(b"%PDF-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pdf"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file the user writes


@pytest.mark.parametrize("existing", [False, True])
def test_failure_mid_build_leaves_no_file(tmp_path: Path, monkeypatch, existing: bool) -> None:
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(report, "_rgb_image", broken)  # fails while building the evidence images
    out = tmp_path / "r.pdf"
    if existing:
        out.write_bytes(b"old report")
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_report(out, make_exam(), make_card(), overwrite=existing)
    assert calls
    assert sorted(p.name for p in tmp_path.iterdir()) == (["r.pdf"] if existing else [])
    if existing:
        assert out.read_bytes() == b"old report"


def test_rescan_eye_and_eye_without_per_bscan_results(tmp_path: Path) -> None:
    rescan = make_eye(Laterality.OD, "ungradable", Urgency.RESCAN, evidence=(), ungradable=tuple(range(20)))
    bare = make_eye(Laterality.OS, "normal", Urgency.NONE, with_volume=False)
    out = write_report(tmp_path / "r.pdf", ExamResult(PATIENT, STUDY, DEVICE, [rescan, bare]), make_card())
    text = pdftext(out)
    assert "RESCAN" in text and "No evidence B-scans" in text
    assert "5 of 25 B-scans gradable" in text
    assert "low signal: 20 (B-scans 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 and 8 more)" in flat(out)
    assert "NO REFERRAL (OBSERVATION): NORMAL" in text
    assert "nan" not in text.lower()  # a rescan eye has no scores: shown as a dash
    assert "Per-B-scan results are not available" in text


def test_strip_chart_shades_ungradable_and_marks_evidence() -> None:
    from reportlab.graphics.charts.lineplots import LinePlot
    from reportlab.graphics.shapes import Rect, String
    from reportlab.lib import colors

    exam = make_exam()
    eye = exam.eyes[0]
    builder = report._ReportBuilder(exam, make_card(), ReportOptions())
    builder.width = 500.0
    drawing = builder._strip_chart(eye, eye.volume_result)
    grey = colors.HexColor("#D5D5D5")
    shaded = [s for s in drawing.contents if isinstance(s, Rect) and s.fillColor == grey]
    assert len(shaded) == len(eye.ungradable) + 1  # one per ungradable B-scan + legend swatch
    plot = next(s for s in drawing.contents if isinstance(s, LinePlot))
    assert len(plot.data) == 3 and all(len(line) == 25 for line in plot.data)
    assert [x for x, _ in plot.data[2]] == list(range(1, 26))  # x = 1-based B-scan number
    labels = [s.text for s in drawing.contents if isinstance(s, String)]
    assert {"E1", "E2", "E3"} <= set(labels)
    # the E1 marker sits over B-scan 16 (index 15): between the shaded boxes' scale positions
    e1 = next(s for s in drawing.contents if isinstance(s, String) and s.text == "E1")
    x_of = plot.x + (16 - 0.5) / 25 * plot.width
    assert abs(e1.x - x_of) < 1e-6


def test_logo_is_embedded_and_a_bad_logo_is_skipped(tmp_path: Path, caplog) -> None:
    logo = tmp_path / "logo.png"
    Image.new("RGB", (120, 60), (20, 80, 160)).save(logo)
    out = write_report(tmp_path / "with_logo.pdf", make_exam(), make_card(), ReportOptions(logo=logo))
    images = run_tool(["pdfimages", "-list", str(out)], check=True, capture_output=True, text=True).stdout
    sizes = [tuple(line.split()[3:5]) for line in images.splitlines()[2:]]
    # logo + 3 evidence B-scans per eye, each with and without its heatmap
    assert ("120", "60") in sizes and sizes.count(("128", "124")) == 12
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    out2 = write_report(tmp_path / "bad_logo.pdf", make_exam(), make_card(), ReportOptions(logo=bad))
    assert out2.read_bytes().startswith(b"%PDF-")
    assert "cannot read the logo" in caplog.text and "bad.png" in caplog.text


def test_streams_are_binary_and_the_images_still_decode(std_report: Path, tmp_path: Path) -> None:
    """No ASCII85 text streams (25 % larger; reportlab's pure-Python encoder was most of a report's
    time); poppler still decodes every embedded B-scan, and reportlab's process-wide setting is back."""
    from reportlab import rl_config

    assert rl_config.useA85 == 1  # reportlab's own default, untouched by a finished build
    data = std_report.read_bytes()
    assert b"/ASCII85Decode" not in data and b"/DCTDecode" in data
    png = tmp_path / "img"
    run_tool(["pdfimages", "-png", "-f", "2", "-l", "2", str(std_report), str(png)], check=True)
    bscans = [im for im in map(Image.open, sorted(tmp_path.glob("img-*.png"))) if im.size == (128, 124)]
    assert len(bscans) == 6 and all(np.asarray(im).std() > 5 for im in bscans)  # B-scans, not empty images


def test_helvetica_fallback_keeps_the_em_dash(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(report, "_fonts", ("Helvetica", "Helvetica-Bold"))
    out = write_report(tmp_path / "h.pdf", make_exam(), make_card())
    text = pdftext(out)
    assert DEMO_WARNING.upper() in text
    assert ">= 0.50: urgent referral" in text  # the ≥ sign falls back to ASCII
    assert "HN-7731-09" in text


def test_helpers() -> None:
    assert report.display_name("Doe^Jane^Q") == "Doe, Jane Q"
    assert report.display_name("Plain Name") == "Plain Name"
    assert report.format_date("20260131") == "2026-01-31" and report.format_date("") == ""
    assert report.pseudonym_for("AB12") == "ANON-AB12"
    ids = {report.new_report_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 10 for i in ids)


def test_evidence_overlays_are_scaled_by_the_class_probability(tmp_path: Path, monkeypatch) -> None:
    """The report draws its evidence heatmaps with the app's function (core.cam.overlay) and the
    decided class's probability on each B-scan, so a class at p ~ 0 is not painted there either."""
    import core.report as report_module
    from core.cam import overlay

    calls: list[float] = []

    def recording(bscan, cam, *args, probability=1.0, **kw):
        calls.append(probability)
        return overlay(bscan, cam, *args, probability=probability, **kw)

    monkeypatch.setattr(report_module, "overlay", recording)
    exam = preview_exam(seed=1, n=12, size=(124, 128))
    write_report(tmp_path / "r.pdf", exam, make_card(), ReportOptions())
    expected = [
        float(e.volume_result.probs[i, e.volume_result.classes.index(e.label)])
        for e in exam.eyes
        if e.volume_result is not None and e.label in e.volume_result.classes
        for i in e.evidence[:3]
    ]
    assert calls == pytest.approx(expected) and expected and len(set(expected)) > 1
    assert "weak" in pdftext(tmp_path / "r.pdf") and "in proportion to its probability" in " ".join(
        pdftext(tmp_path / "r.pdf").split()
    )


# -- who and where ------------------------------------------------------------------------------
def test_header_names_the_referring_clinician_operator_and_reviewer(tmp_path: Path) -> None:
    """De-identified, the patient's care-path people go (PS3.15 removes the referring physician and
    the operators); the reviewing clinician, accountable for the report, stays."""
    opts = dict(institution="Lakeside Eye Unit", clinician="Dr. Rhea Viewer")
    opts.update(referring_clinician="Dr. Ravi Ferrer", operator="Opal Rator")
    out = write_report(tmp_path / "r.pdf", make_exam(), make_card(), ReportOptions(**opts))
    heads = "Referring clinician Operator Reviewing clinician"
    lines = layout_lines(out, 1)
    assert lines[lines.index(heads) + 1] == "Dr. Ravi Ferrer Opal Rator Dr. Rhea Viewer"
    assert "Institution not set" not in flat(out, 1)
    anon = write_report(tmp_path / "a.pdf", make_exam(), make_card(), ReportOptions(deidentify=True, **opts))
    text = flat(anon)
    for name in ("Ravi", "Ferrer", "Opal", "Rator"):
        assert name not in text, name
    lines = layout_lines(anon, 1)
    assert lines[lines.index(heads) + 1] == "(removed) (removed) Dr. Rhea Viewer"
    blank = write_report(tmp_path / "b.pdf", make_exam(), make_card(), ReportOptions(institution="X"))
    lines = layout_lines(blank, 1)
    assert lines[lines.index(heads) + 1] == "not recorded not recorded not recorded"


def test_a_report_without_institution_says_so_in_its_header_and_the_log(tmp_path: Path, caplog) -> None:
    out = write_report(tmp_path / "r.pdf", make_exam(), make_card(), ReportOptions(report_id="NOINST1"))
    assert "Institution not set" in flat(out, 1)
    assert "Institution not set" not in flat(out, 2)  # the header, not every page
    assert any(r.levelname == "WARNING" and "no institution" in r.getMessage() for r in caplog.records)
    assert "NOINST1" in caplog.text
    caplog.clear()
    write_report(tmp_path / "s.pdf", make_exam(), make_card(), ReportOptions(institution="Lakeside Eye Unit"))
    assert "no institution" not in caplog.text


def test_octscreen_screen_puts_referring_and_operator_into_the_report(tmp_path: Path) -> None:
    from app.cli import build_parser, main

    demo = Path(__file__).resolve().parents[1] / "resources" / "samples" / "demo-exam"
    argv = ["screen", str(demo), "--out", str(tmp_path), "--referring", "Dr. Ravi Ferrer", "--operator", "Opal Rator"]
    args = build_parser().parse_args(argv)
    assert (args.referring, args.operator) == ("Dr. Ravi Ferrer", "Opal Rator")
    assert main(argv + ["--institution", "Lakeside Eye Unit"]) == 0
    (pdf,) = tmp_path.glob("*.pdf")
    lines = layout_lines(pdf, 1)
    assert lines[lines.index("Referring clinician Operator Reviewing clinician") + 1] == (
        "Dr. Ravi Ferrer Opal Rator not recorded"
    )
    assert "Lakeside Eye Unit" in flat(pdf, 1) and "Institution not set" not in flat(pdf, 1)


# -- the scan -----------------------------------------------------------------------------------
SPECTRALIS = PixelSpacing(slice=0.24, row=1.9 / 124, column=6.0 / 128)  # 6 x 1.9 mm B-scans, 25 over 5.8 mm


def test_scan_section_names_protocol_device_geometry_and_quality_reasons_per_eye(tmp_path: Path) -> None:
    reasons = [""] * 25
    reasons[2] = "blank frame (no image signal)"
    reasons[3] = "low signal (retina too dim to grade)"
    reasons[7] = "mostly registration border or padding (41 % of the frame)"
    reasons[9] = "mostly registration border or padding (58 % of the frame)"
    od = make_eye(Laterality.OD, "cnv", Urgency.URGENT, spacing=SPECTRALIS, reasons=reasons, ungradable=(2, 3, 7, 9))
    od.volume_result.volume.device = DeviceInfo("Heidelberg Engineering", "Spectralis", "6.16.2")
    os_ = make_eye(Laterality.OS, "drusen", Urgency.ROUTINE, seed=1)
    out = write_report(tmp_path / "r.pdf", ExamResult(PATIENT, STUDY, DEVICE, [od, os_]), make_card())
    text = flat(out)
    assert text.count("Scan protocol Macula 25") == 2
    assert "Heidelberg Engineering Spectralis (software 6.16.2)" in text
    assert "25 B-scans of 128 A-scans × 124 rows; 6.0 mm wide × 1.9 mm deep, 0.24 mm apart (over 5.8 mm)" in text
    assert (
        "21 of 25 B-scans gradable; not gradable (excluded from the decision) – blank frame: 1 (B-scan 3); "
        "low signal: 1 (B-scan 4); mostly registration border or padding: 2 (B-scans 8, 10)."
    ) in text  # alike reasons counted together, whatever their measured detail
    assert "25 B-scans of 128 A-scans × 124 rows; pixel spacing not recorded" in text  # OS: no spacing
    assert "low signal: 2 (B-scans 3, 4)" in text  # OS
    anon = write_report(tmp_path / "a.pdf", make_exam(), make_card(), ReportOptions(deidentify=True))
    assert "Macula 25" not in flat(anon)
    assert sum(line.startswith("Scan protocol (removed) Device") for line in layout_lines(anon)) == 2


# -- evidence images: scale bars, sides, the B-scan without its heatmap -------------------------
def test_scale_bars_are_as_long_as_the_pixel_spacing_says() -> None:
    from core.report.evidence import _bars, _Marks, _scale

    shape, size = (124, 128), (160.0, 155.0)  # a B-scan drawn 160 x 155 points
    across, down = _bars(_Marks(6.0 / 128, 1.9 / 124, None), shape, size)
    assert across == (1.0, pytest.approx(160.0 / 6.0))  # 1 mm of a 6 mm wide B-scan
    assert down == (0.2, pytest.approx(155.0 * 0.2 / 1.9))  # 200 µm of 1.9 mm depth
    across, _ = _bars(_Marks(1.5 / 128, None, None), shape, size)
    assert across == (0.2, pytest.approx(160.0 * 0.2 / 1.5))  # a 1.5 mm scan: 200 µm
    assert _bars(_Marks(None, None, None), shape, size) == (None, None)
    vol = OctVolume(np.zeros((3, 124, 128), np.uint8), spacing=PixelSpacing(0.2, 1.0, 1.0))
    assert _scale(vol) == (None, None)  # a 128 mm wide B-scan: a placeholder spacing, no bar
    vol.spacing = SPECTRALIS
    assert _scale(vol) == (SPECTRALIS.column, SPECTRALIS.row)


def test_sides_follow_the_eye_and_the_device_scan_line() -> None:
    from core.enface import FUNDUS, Fundus
    from core.report.evidence import _sides

    def vol(lat: Laterality, line: tuple[float, float, float, float] | None = None) -> OctVolume:
        v = OctVolume(np.zeros((2, 8, 8), np.uint8), lat)
        if line is not None:
            v.extra[FUNDUS] = Fundus(np.zeros((64, 64), np.uint8), (line, line))
        return v

    assert _sides(vol(Laterality.OD), 0) == (("temporal", "nasal"), False)  # as on a fundus photo
    assert _sides(vol(Laterality.OS), 0) == (("nasal", "temporal"), False)
    assert _sides(vol(Laterality.UNKNOWN), 0) == (None, False)
    assert _sides(vol(Laterality.OD, (60, 30, 4, 31)), 1) == (("nasal", "temporal"), True)  # scanned right to left
    assert _sides(vol(Laterality.OS, (30, 4, 31, 60)), 0) == (("superior", "inferior"), True)  # a vertical B-scan
    assert _sides(vol(Laterality.UNKNOWN, (30, 60, 31, 4)), 0) == (("inferior", "superior"), True)
    assert _sides(vol(Laterality.OD, (4, 4, 60, 60)), 0) == (None, True)  # oblique: no claim


def test_evidence_shows_each_bscan_with_and_without_heatmap_with_scale_bars_and_sides(tmp_path: Path) -> None:
    od = make_eye(Laterality.OD, "cnv", Urgency.URGENT, spacing=SPECTRALIS)
    os_ = make_eye(Laterality.OS, "drusen", Urgency.ROUTINE, seed=1, spacing=SPECTRALIS)
    unknown = make_eye(Laterality.UNKNOWN, "cnv", Urgency.URGENT, seed=2)  # no spacing, no laterality
    out = write_report(tmp_path / "r.pdf", ExamResult(PATIENT, STUDY, DEVICE, [od, os_, unknown]), make_card())
    pages = [pdftext(out, p) for p in range(1, page_count(out) + 1)]

    def evidence_page(title: str) -> str:
        return next(p for p in pages if f"Evidence B-scans – {title}" in p)

    od_page, os_page = evidence_page("Right eye (OD)"), evidence_page("Left eye (OS)")
    for page, (left, right) in ((od_page, ("temporal", "nasal")), (os_page, ("nasal", "temporal"))):
        part = page.split("Evidence B-scans", 1)[1].split("Top: heat colours", 1)[0]
        assert len(re.findall(rf"{left}\s+{right}\s+{left}\s+{right}\s+{left}\s+{right}", part)) == 2  # 2 rows
        assert part.count("1 mm") == 6 and part.count("200 µm") == 6  # on all 6 images
        assert "Below: the same B-scan as scanned" in " ".join(page.split())
    bare = evidence_page("Eye (laterality unknown)")
    part = bare.split("Evidence B-scans", 1)[1].split("Top: heat colours", 1)[0]
    assert not re.search(r"nasal|temporal|superior|inferior|µm|\d mm", part)  # no bar and no claim
    note = " ".join(bare.split())
    assert "No scale bar: the file does not record a usable pixel spacing." in note
    assert "No side labels: the file does not say which eye this is." in note
    images = run_tool(["pdfimages", "-list", str(out)], check=True, capture_output=True, text=True).stdout
    assert [line.split()[3:5] for line in images.splitlines()[2:]].count(["128", "124"]) == 18  # 3 eyes x 3 x 2


# -- no local file paths ------------------------------------------------------------------------
@pytest.mark.parametrize("deidentify", [False, True])
def test_no_local_file_path_appears_in_the_report(tmp_path: Path, deidentify: bool) -> None:
    card = make_card(demo=False)
    card.training_data = {
        "description": "OCT2017 at ../shared/data/oct2017-train: 1244 training / 208 validation B-scans",
        "short": "OCT2017 (Kermany et al., Cell 2018; doi:10.17632/rscbjbr9sj.2, CC BY 4.0), copy at /home/alice/oct",
        "n_train": 1244,
        "n_val": 208,
    }
    card.intended_use = "Research use; weights in C:\\Users\\alice\\models\\m.safetensors"
    card.metrics = {
        "validation": {"n": 208, "per_class": {"cnv": {"sensitivity": 0.9, "specificity": 0.9, "support": 50}}},
        "threshold_calibration": {"data": "eyes from ~/runs/fold0/val.csv", "per_class": {"cnv": {"threshold": 0.5}}},
    }
    card.path = Path("/srv/models/secret-model-dir/card.json")
    exam = make_exam()  # its volumes come from /exports/secret_folder/...
    out = write_report(tmp_path / "r.pdf", exam, card, ReportOptions(deidentify=deidentify, institution="X"))
    text, meta = flat(out), pdfinfo(out)
    for planted in ("secret_folder", "/exports", "../shared", "oct2017-train", "/home/alice", "alice", "~/runs",
                    "val.csv", "secret-model-dir", ".dcm", ".safetensors"):  # fmt: skip
        assert planted not in text, planted
        assert planted not in meta, planted
    assert "Source:" not in text
    assert "Trained on: OCT2017 (Kermany et al., Cell 2018; doi:10.17632/rscbjbr9sj.2, CC BY 4.0)" in text
    assert "(path removed)" in text  # what the short line and the intended use named is marked, not shown


def test_path_scrubber_keeps_dois_class_lists_and_urls() -> None:
    from core.report.layout import _no_paths

    kept = "CNV/DME/drusen, doi:10.17632/rscbjbr9sj.2, https://data.mendeley.com/x, normal / drusen"
    assert _no_paths(kept) == kept
    for path in ("/data/oct", "./x/y.png", "../shared/data", "~/oct", "C:\\oct\\a.dcm", "\\\\server\\share\\a"):
        assert _no_paths(f"at {path}: 12") == "at (path removed): 12", path


# -- times --------------------------------------------------------------------------------------
@pytest.fixture
def central_european_time():
    """The local time zone set to CET/CEST (a POSIX rule: no tz database needed) for one test."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "CET-1CEST,M3.5.0,M10.5.0/3"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_generated_and_signed_times_are_local_with_their_zone(tmp_path: Path, central_european_time) -> None:
    from core.audit import signoff_for

    exam, card = make_exam(), make_card()
    utc = dt.timezone.utc
    signed = signoff_for(
        exam.eyes[0], card, decision="confirmed", clinician="Dr. S", signed_at=dt.datetime(2026, 7, 1, 9, 5, tzinfo=utc)
    )
    opts = ReportOptions(generated=dt.datetime(2026, 12, 2, 15, 40, tzinfo=utc), signoffs=[signed])
    out = write_report(tmp_path / "r.pdf", exam, card, opts)
    text = flat(out)
    assert "generated 2026-12-02 16:40 CET" in text  # UTC 15:40 in winter
    assert "Signed by Dr. S on 2026-07-01 11:05 CEST" in text  # UTC 09:05 in summer
    assert "15:40" not in text and "09:05" not in text
    n = page_count(out)
    assert all("generated 2026-12-02 16:40 CET" in flat(out, p) for p in range(1, n + 1))  # every footer


# -- the model's intended use and measured performance ------------------------------------------
VALIDATION = {
    "n": 208,
    "accuracy": 0.9471,
    "macro_sensitivity": 0.9379,
    "per_class": {
        "normal": {"sensitivity": 0.9846, "specificity": 0.9650, "support": 65},
        "drusen": {"sensitivity": 0.8649, "specificity": 0.9942, "support": 37},
        "cnv": {"sensitivity": 0.9821, "specificity": 0.9803, "support": 56},
    },
}
CALIBRATION = {
    "data": "validation eyes of fold 0 (split 8f4616a4c7b741c6): 138 eyes, 208 B-scans",
    "rule": "per class, the highest eye-score threshold that keeps its sensitivity >= cnv 0.95",
    "per_class": {
        "cnv": {"threshold": 0.5392, "sensitivity": 0.9524, "specificity": 0.9658, "n_pos": 21, "n_neg": 117},
        "normal": {"threshold": 0.8483, "sensitivity": 0.9123, "specificity": float("nan"), "n_pos": 57, "n_neg": 0},
    },
}


def test_model_section_prints_intended_use_and_measured_performance_from_the_card(tmp_path: Path) -> None:
    card = make_card(demo=False)
    card.intended_use = "Flags B-scans suggestive of CNV or drusen for a clinician's review."
    card.training_data = {"name": "OCT2017", "citation": "Kermany et al., Cell 2018", "licence": "CC BY 4.0"}
    card.training_data.update(n_train=1244, n_train_patients=825, n_val=208)
    card.metrics, card.split_hash = {"validation": VALIDATION, "threshold_calibration": CALIBRATION}, "8f4616a4c7b741c6"
    out = write_report(tmp_path / "r.pdf", make_exam(demo=False), card)
    text, lines = flat(out), layout_lines(out)
    assert "Intended use: Flags B-scans suggestive of CNV or drusen for a clinician's review." in text
    assert "Trained on: OCT2017 (Kermany et al., Cell 2018; CC BY 4.0): 1244 B-scans of 825 patients" in text
    assert "Training data: 1244 training B-scans (825 patients), 208 validation B-scans" in text
    assert (
        "Measured on 208 validation B-scans of the training dataset's held-out patients (OCT2017, patient-level "
        "split 8f4616a4c7b741c6); not a clinical validation"
    ) in text
    assert "Class B-scans Sensitivity Specificity Threshold Sensitivity Specificity Eyes with / without" in lines
    assert "normal 65 98.5 % 96.5 % 0.85 91.2 % – 57 / 0" in lines  # no eye without normal: a dash, not nan
    assert "drusen 37 86.5 % 99.4 % – – – –" in lines  # not calibrated per eye
    assert "cnv 56 98.2 % 98.0 % 0.54 95.2 % 96.6 % 21 / 117" in lines
    assert "Balanced accuracy (mean of the per-class sensitivities): 93.8 %; accuracy: 94.7 %." in text
    assert "validation eyes of fold 0" in text and "optimistic" in text
    assert "nan" not in text.lower()


def test_cards_without_metrics_still_render_and_say_so(tmp_path: Path) -> None:
    card = make_card()  # the tiny 3-class test card: a bare accuracy, no validation section
    text = flat(write_report(tmp_path / "a.pdf", make_exam(), card))
    assert "Accuracy per B-scan: 91.0 % (the model card does not say on which data" in text
    assert "Trained on: data not stated in the model card" in text  # its description is never printed
    card.metrics, card.intended_use = {}, ""
    text = flat(write_report(tmp_path / "b.pdf", make_exam(), card))
    assert "The model card records no measured performance." in text
    assert "Intended use: not stated in the model card" in text
    assert "Sensitivity" not in text


# -- sign-off -----------------------------------------------------------------------------------
CET = dt.timezone(dt.timedelta(hours=1), "CET")


def _signed(eye: EyeResult, decision: str, finding: str = "", minute: int = 40, who: str = "Dr. Amira Haddad"):
    from core.audit import signoff_for

    when = dt.datetime(2026, 12, 2, 16, minute, tzinfo=CET)
    return signoff_for(eye, make_card(), decision=decision, clinician=who, finding=finding, signed_at=when)


def test_signed_confirmed_and_changed_eyes(tmp_path: Path) -> None:
    from core.tiers import resolve_tiers

    exam = make_exam()
    od, os_ = exam.eyes
    os_.tiers = resolve_tiers({"soon": {"name": "Semi-urgent referral (site wording)", "time_frame": "within 17 days"}})
    signoffs = [
        _signed(od, "routine", "first look", minute=1, who="Dr. Early"),  # superseded by the next one
        _signed(od, "confirmed", "Subretinal fluid under the fovea."),
        _signed(os_, "soon", "Drusen with a suspected cyst temporally.", minute=47),
    ]
    out = write_report(tmp_path / "r.pdf", exam, make_card(), ReportOptions(signoffs=signoffs, institution="X"))
    text, page1 = flat(out), flat(out, 1)
    assert "Signed by Dr. Amira Haddad: confirmed" in page1
    assert "Signed by Dr. Amira Haddad: changed to Semi-urgent referral (site wording)" in page1
    assert "NOT SIGNED" not in text and "Dr. Early" not in text and "first look" not in text
    review = text.split("Clinical review", 1)[1]
    assert "Right eye (OD) – model: Urgent referral SIGNED Signed by Dr. Amira Haddad on 2026-12-02 " in review
    assert "CONFIRMED: Urgent referral – Refer to a medical retina clinic within 2 weeks." in review
    assert "Finding: Subretinal fluid under the fovea." in review
    assert (
        "CHANGED: the model said Routine referral – Refer to an ophthalmologist within 3-4 months. The clinician "
        "decided: Semi-urgent referral (site wording) – Refer to a medical retina clinic within 17 days."
    ) in review
    assert "Finding: Drusen with a suspected cyst temporally." in review
    assert "Signature" not in review and "Note: signed on a result" not in review


def test_unsigned_eye_keeps_its_signature_lines_and_says_not_signed(tmp_path: Path, std_report: Path) -> None:
    text = flat(std_report)
    assert text.count("NOT SIGNED by a clinician") == 2 and text.count("NOT SIGNED") == 4  # boxes + review
    assert text.count("Signature") == 2 and "confirmed" in text
    exam = make_exam()
    od, os_ = exam.eyes
    elsewhere = dataclasses_replace(_signed(os_, "confirmed"), study_uid="1.2.3.999")  # another exam's sign-off
    out = write_report(
        tmp_path / "r.pdf", exam, make_card(), ReportOptions(signoffs=[_signed(od, "confirmed"), elsewhere])
    )
    review = flat(out).split("Clinical review", 1)[1]
    right, left = review.split("Left eye (OS)", 1)
    assert "SIGNED Signed by Dr. Amira Haddad" in right and "Signature" not in right
    assert "NOT SIGNED" in left and "Not signed: no clinician has reviewed" in left and "Signature" in left
    assert "NOT SIGNED by a clinician" in flat(out, 1)


def test_a_signoff_of_another_result_is_flagged(tmp_path: Path) -> None:
    exam = make_exam()
    old = dataclasses_replace(_signed(exam.eyes[0], "confirmed"), model_tier="routine", model_version="1.1.0")
    text = flat(write_report(tmp_path / "r.pdf", exam, make_card(), ReportOptions(signoffs=[old])))
    assert (
        "Note: signed on a result of kdoct-student v1.1.0 that said Routine referral – Refer to an ophthalmologist "
        "within 3-4 months. This report shows kdoct-student v1.2.0: Urgent referral."
    ) in text


def test_deidentified_signed_report_keeps_who_and_the_year_but_not_the_finding(
    tmp_path: Path, central_european_time
) -> None:
    """The finding is free text that may name the patient: a de-identified report leaves it out; who
    signed and what they decided stay; when they signed keeps its year only (the day would give the
    exam date away), and so does when the report was made."""
    exam = make_exam()
    od, os_ = exam.eyes
    signoffs = [_signed(od, "confirmed", "Mrs Zielińska (HN-7731-09) reports distortion."), _signed(os_, "urgent")]
    made = dt.datetime(2026, 12, 2, 16, 45, tzinfo=CET)
    opts = ReportOptions(
        signoffs=signoffs, deidentify=True, clinician="Dr. Amira Haddad", report_id="RANON2", generated=made
    )
    out = write_report(tmp_path / "r.pdf", exam, make_card(), opts)
    text, meta = flat(out), pdfinfo(out)
    for secret in ("Zieli", "HN-7731-09", "7731", "distortion", "Mrs"):
        assert secret not in text, secret
        assert secret not in meta, secret
    assert "Signed by Dr. Amira Haddad: confirmed" in text
    assert "Signed by Dr. Amira Haddad: changed to Urgent referral" in text
    assert "Signed by Dr. Amira Haddad in 2026 (day and time removed)" in text
    assert "generated 2026 (day and time removed)" in text
    assert "12-02" not in text and "16:40" not in text
    assert "CHANGED: the model said Routine referral" in text  # the decision stays
    assert "Finding: (removed: free text is not kept in a de-identified report)" in text
    assert "Finding: none written" in text  # the OS sign-off had none: nothing was removed
    assert "ANON-RANON2" in text


def test_every_page_keeps_notice_numbering_and_letter_size_with_signoffs(tmp_path: Path) -> None:
    exam = make_exam(h=496, w=512)  # full-size B-scans
    opts = ReportOptions(page_size="Letter", signoffs=[_signed(exam.eyes[0], "confirmed")], institution="X")
    out = write_report(tmp_path / "r.pdf", exam, make_card(), opts)
    n = page_count(out)
    sizes = re.findall(r"Page\s+\d+ size:\s+([\d.]+ x [\d.]+)", pdfinfo(out, "-f", "1", "-l", str(n)))
    assert sizes == ["612 x 792"] * n
    for page in range(1, n + 1):
        text = pdftext(out, page)
        assert DEMO_WARNING.upper() in text and f"page {page} of {n}" in text
