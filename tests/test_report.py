"""The PDF screening report: content, page sizes, demo warning, de-identification, atomic writes.

Text is checked through poppler's pdftotext/pdfinfo/pdfimages (subprocess), i.e. what a reader of
the PDF sees, not what we meant to write.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core.report as report
from core.modelcard import DEMO_WARNING, ModelCard
from core.report import ReportOptions, preview_exam, write_report
from core.results import ExamResult, EyeResult, Urgency, VolumeResult
from core.volume import DeviceInfo, EyeKey, Laterality, OctVolume, PatientInfo, StudyInfo
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
) -> EyeResult:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([1, 1, 1], size=n).astype(np.float32)
    if label in CLASSES:
        probs[list(evidence), :] = 0.02
        probs[list(evidence), CLASSES.index(label)] = 0.96
    gradable = np.ones(n, bool)
    gradable[list(ungradable)] = False
    reasons = ["" if g else "low signal" for g in gradable]
    cams = rng.random((n, 3, 8, 8)).astype(np.float32)
    vol = OctVolume(
        _layered_volume(rng, n, h, w),
        lat,
        PATIENT,
        STUDY,
        DEVICE,
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
    assert "low signal: B-scans 3, 4" in text and "23 of 25 B-scans gradable" in text
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
    assert n == 2  # one eye per page, sign-off after the second eye
    sizes = re.findall(r"Page\s+\d+ size:\s+([\d.]+ x [\d.]+)", pdfinfo(out, "-f", "1", "-l", str(n)))
    assert sizes == [points] * n


def test_bad_page_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="page_size"):
        opts = ReportOptions(page_size="A3")  # type: ignore[arg-type]
        write_report(tmp_path / "x.pdf", make_exam(), make_card(), opts)
    assert list(tmp_path.iterdir()) == []


def test_identity_shown_without_deidentify_and_nowhere_with_it(std_report: Path, tmp_path: Path) -> None:
    text = pdftext(std_report)
    for shown in ("Zielińska, Łucja", "HN-7731-09", "1948-02-29", "ACC-55190", "secret_folder"):
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
    assert "5 of 25 B-scans gradable" in text and "B-scans 1, 2, 3" in text
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
    assert ("120", "60") in sizes and sizes.count(("128", "124")) == 6  # logo + 3 evidence per eye
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    out2 = write_report(tmp_path / "bad_logo.pdf", make_exam(), make_card(), ReportOptions(logo=bad))
    assert out2.read_bytes().startswith(b"%PDF-")
    assert "cannot read the logo" in caplog.text and "bad.png" in caplog.text


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
