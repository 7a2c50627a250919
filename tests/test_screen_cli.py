"""``octscreen screen``: reports, results.csv / results.json, bad files, overwrite refusal,
de-identification; and core.screening (grouping into exams, progress, errors)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from core.errors import Cancelled, InputError
from core.inference import Screener
from core.io import write_opt
from core.results import Urgency
from core.screening import group_exams, screen_paths, screen_volumes
from core.volume import StudyInfo
from tests.conftest import run_tool


@pytest.fixture(scope="module")
def screener(tiny_card_path):
    return Screener(tiny_card_path)


@pytest.fixture
def exam_files(tmp_path, make_volume) -> dict[str, Path]:
    """Patient P001 OD + OS (one study, two files), patient P002 OS, and one bad file."""
    d = tmp_path / "in"
    files = {
        "od": write_opt(
            make_volume(n=6, h=96, w=128, seed=1, laterality="OD", patient_id="P001", study_uid="1.2.3.1"),
            d / "p1_od.dcm",
        ),
        "os": write_opt(
            make_volume(n=6, h=96, w=128, seed=2, laterality="OS", patient_id="P001", study_uid="1.2.3.1"),
            d / "p1_os.dcm",
        ),
        "p2": write_opt(
            make_volume(n=6, h=96, w=128, seed=3, laterality="OS", patient_id="P002", study_uid="1.2.3.2"), d / "p2.dcm"
        ),
    }
    bad = d / "broken.dcm"
    bad.write_bytes(b"DICM but not really" * 10)
    files["bad"] = bad
    return files


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_screen_volumes_groups_eyes_into_exams(screener, make_volume):
    vols = [
        make_volume(n=6, laterality="OS", patient_id="A", study_uid="s1", seed=1),
        make_volume(n=6, laterality="OD", patient_id="B", study_uid="s2", seed=2),
        make_volume(n=6, laterality="OD", patient_id="A", study_uid="s1", seed=3),
        make_volume(n=6, laterality="OD", patient_id="A", study_uid="s9", seed=4),
    ]
    seen = []
    exams = screen_volumes(vols, screener, progress=lambda d, t, m: seen.append((d, t)))
    assert [(x.patient.patient_id, x.study.study_uid) for x in exams] == [("A", "s1"), ("B", "s2"), ("A", "s9")]
    assert [e.eye.laterality.value for e in exams[0].eyes] == ["OD", "OS"]  # sorted OD, OS
    assert exams[0].eyes[0].volume_result.volume is vols[2]
    assert seen[-1] == (24, 24) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # thresholds: a policy that refers everything
    from core.modelcard import Thresholds

    everything = Thresholds(urgent={"cnv": 0.0}, routine={})
    assert all(
        e.urgency is Urgency.URGENT for x in screen_volumes(vols[:1], screener, thresholds=everything) for e in x.eyes
    )
    with pytest.raises(Cancelled):
        screen_volumes(vols, screener, cancel=lambda: True)


def test_screen_volumes_hands_over_each_eye_as_it_is_decided(screener, make_volume):
    vols = [make_volume(n=4, laterality=lat, seed=i) for i, lat in enumerate(("OS", "OD", "OD"))]
    handed: list = []

    def cancel() -> bool:  # cancel once two eyes are decided: those two were handed over already
        return len(handed) >= 2

    with pytest.raises(Cancelled):
        screen_volumes(vols, screener, cancel=cancel, on_eye=handed.append)
    assert [e.volume_result.volume for e in handed] == vols[:2]


def test_volume_identity_is_the_scan_not_the_file(make_volume, tmp_path):
    from core.io import write_opt
    from core.screening import open_volumes, volume_identity

    vol = make_volume(n=4, seed=3)
    a, b = tmp_path / "a.dcm", tmp_path / "copy" / "b.dcm"
    b.parent.mkdir()
    write_opt(vol, a)
    write_opt(vol, b)
    (va,), (vb,) = open_volumes([a]), open_volumes([b])
    assert volume_identity(va) == volume_identity(vb) == volume_identity(vol)  # a copy is the same scan
    va.laterality = va.laterality.__class__.OS
    assert volume_identity(va) == volume_identity(vol)  # setting the eye does not make it another scan
    assert volume_identity(make_volume(n=4, seed=4)) != volume_identity(vol)  # other pixels
    assert volume_identity(make_volume(n=4, seed=3, patient_id="P999")) != volume_identity(vol)  # other patient


def test_group_exams_unknown_laterality_last(screener, make_volume):
    from core.aggregate import decide

    vols = [make_volume(n=5, laterality=lat, seed=i) for i, lat in enumerate(["unknown", "OS", "OD"])]
    eyes = [decide(screener.screen(v)) for v in vols]
    (exam,) = group_exams(eyes)
    assert [e.eye.laterality.value for e in exam.eyes] == ["OD", "OS", "unknown"]


def test_screen_paths_collects_bad_files(screener, exam_files):
    errors: list = []
    exams = screen_paths(
        [
            exam_files["od"],
            exam_files["os"],
            exam_files["bad"],
            exam_files["p2"],
            exam_files["od"].parent / "missing.dcm",
        ],
        screener,
        errors=errors,
    )
    assert [len(x.eyes) for x in exams] == [2, 1]
    assert len(errors) == 2 and all(isinstance(e, InputError) for e in errors)
    assert "broken.dcm" in str(errors[0]) and "missing.dcm" in str(errors[1])
    with pytest.raises(InputError):
        screen_paths([exam_files["bad"]], screener)


def test_cli_writes_reports_and_results(tiny_card_path, exam_files, tmp_path, capsys):
    out = tmp_path / "out"
    folder = exam_files["od"].parent
    rc = main(["screen", str(folder), "--out", str(out), "--model", str(tiny_card_path), "--institution", "Eye Clinic"])
    cap = capsys.readouterr()
    assert rc == 1  # the broken file is a problem, the rest screened
    assert "broken.dcm" in cap.err and "screened 2 exam(s), 3 eye(s)" in cap.out
    assert "not for clinical use" in cap.err  # the tiny card is a demo model
    pdfs = sorted(p.name for p in out.glob("*.pdf"))
    assert pdfs == ["P001_20260131_oct-report.pdf", "P002_20260131_oct-report.pdf"]
    assert all((out / p).read_bytes().startswith(b"%PDF") for p in pdfs)
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    rows = _rows(out)
    assert [(r["patient_id"], r["eye"]) for r in rows] == [("P001", "OD"), ("P001", "OS"), ("P002", "OS")]
    r = rows[0]
    assert (
        r["report_file"] == "P001_20260131_oct-report.pdf" and r["model_name"] == "tiny" and r["demo_model"] == "True"
    )
    assert r["n_bscans"] == "6" and r["source_file"].endswith("p1_od.dcm")
    assert abs(sum(float(r[f"score_{c}"]) for c in ("normal", "drusen", "cnv")) - 1) < 0.5  # top-k means
    assert r["evidence_bscans"] and all(1 <= int(i) <= 6 for i in r["evidence_bscans"].split())
    data = json.loads((out / "results.json").read_text())
    assert data["model"]["demo"] is True and "not for clinical use" in data["model"]["warning"]
    assert len(data["eyes"]) == 3 and "broken.dcm" in data["errors"][0]
    assert data["eyes"][0]["evidence_bscans"] == [int(i) for i in r["evidence_bscans"].split()]
    assert set(data["eyes"][0]["scores"]) == {"normal", "drusen", "cnv"}


def test_cli_says_once_that_no_institution_is_set(tiny_card_path, exam_files, tmp_path, capsys):
    main(["screen", str(exam_files["od"].parent), "--out", str(tmp_path / "o"), "--model", str(tiny_card_path)])
    err = capsys.readouterr().err
    assert err.count("Institution not set") == 1 and "no institution set" not in err  # two reports, one note


def test_cli_refuses_to_overwrite_before_any_work(tiny_card_path, exam_files, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["screen", str(exam_files["p2"]), "--out", str(out), "--model", str(tiny_card_path)]
    assert main(args) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "results.csv").unlink()
    (out / "results.json").unlink()  # only the PDF is left: still refused
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "P002_20260131_oct-report.pdf" in err
    assert sorted(p.name for p in out.iterdir()) == ["P002_20260131_oct-report.pdf"]
    assert (out / "P002_20260131_oct-report.pdf").stat().st_mtime_ns == before["P002_20260131_oct-report.pdf"]
    assert main(args + ["--overwrite"]) == 0
    assert (out / "results.csv").exists()
    assert main(args) == 2  # results.csv exists now: refused first thing


def test_cli_deidentify_and_dicom(tiny_card_path, exam_files, tmp_path):
    import pydicom

    out = tmp_path / "out"
    rc = main(
        [
            "screen",
            str(exam_files["od"]),
            str(exam_files["os"]),
            "--out",
            str(out),
            "--model",
            str(tiny_card_path),
            "--deidentify",
            "--dicom",
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "exam-001_oct-report.dcm",
        "exam-001_oct-report.pdf",
        "exam-001_oct-report_sr.dcm",
        "results.csv",
        "results.json",
    ]
    rows = _rows(out)
    assert len(rows) == 2 and rows[0]["patient_id"] == rows[1]["patient_id"] != "P001"
    assert rows[0]["patient_id"].startswith("ANON-")
    assert rows[0]["source_file"] == "" and rows[0]["study_date"] == ""
    text = (out / "results.csv").read_text() + (out / "results.json").read_text()
    assert "P001" not in text and "Test^Patient" not in text and "p1_od" not in text
    ds = pydicom.dcmread(out / "exam-001_oct-report.dcm")
    assert ds.PatientID == rows[0]["patient_id"] and ds.Modality == "DOC"


def test_cli_nothing_readable_and_missing_model(tiny_card_path, exam_files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["screen", str(exam_files["bad"]), "--out", str(out), "--model", str(tiny_card_path)]) == 2
    assert "broken.dcm" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert main(["screen", str(exam_files["p2"]), "--out", str(out), "--model", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_cli_torch_backend_gives_the_same_rows(tiny_card_path, exam_files, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, backend in ((a, "onnx"), (b, "torch")):
        assert (
            main(
                [
                    "screen",
                    str(exam_files["p2"]),
                    "--out",
                    str(out),
                    "--model",
                    str(tiny_card_path),
                    "--backend",
                    backend,
                    "--threads",
                    "1",
                ]
            )
            == 0
        )
    ra, rb = _rows(a)[0], _rows(b)[0]
    assert ra["backend"] == "onnx-cpu" and rb["backend"] == "torch-cpu"
    for c in ("normal", "drusen", "cnv"):
        assert abs(float(ra[f"score_{c}"]) - float(rb[f"score_{c}"])) < 1e-3
    assert ra["label"] == rb["label"]


def test_study_info_is_kept_in_exam(screener, make_volume):
    v = make_volume(n=5, study_uid="9.9", patient_id="Z")
    v.study = StudyInfo(study_uid="9.9", study_date="20250101", description="macula cube")
    (exam,) = screen_volumes([v], screener)
    assert exam.study.description == "macula cube" and exam.patient.patient_id == "Z"
    assert np.isclose(sum(exam.eyes[0].scores.values()), sum(exam.eyes[0].scores.values()))


def test_cli_out_folder_inside_the_input_folder(tiny_card_path, exam_files, tmp_path, capsys):
    """Screening a folder twice with --out inside it: our own reports are not 'bad input files'."""
    folder = exam_files["od"].parent
    exam_files["bad"].unlink()
    args = ["screen", str(folder), "--out", str(folder / "reports"), "--model", str(tiny_card_path), "--dicom"]
    assert main(args) == 0
    assert (folder / "reports" / "P001_20260131_oct-report.dcm").exists()
    capsys.readouterr()
    assert main(args + ["--overwrite"]) == 0, capsys.readouterr().err


def test_card_classes_and_tiers_reach_the_csv_json_and_report(tmp_path, make_volume):
    """A 4-class card whose soon tier is reworded: its wording, time frame and classes appear in
    results.csv, results.json and the PDF."""
    import torch

    from core.modelcard import ModelCard, Thresholds
    from core.models import build
    from core.onnx_export import export_model_files

    torch.manual_seed(1)
    model, _ = build("test_efficientnet", 4)
    th = Thresholds(
        urgent={"cnv": 1.0},
        soon={"dme": 0.0},
        routine={"drusen": 1.0},
        normal={"normal": 1.0},
        tiers={"soon": {"name": "Semi-urgent referral (site wording)", "time_frame": "within 17 days"}},
    )
    card = ModelCard(
        name="four",
        arch="test_efficientnet",
        classes=["normal", "drusen", "cnv", "dme"],
        input_size=(64, 64),
        version="0.0.4",
        thresholds=th,
        training_data={"short": "random weights (no training)"},
    )
    card_path = export_model_files(model.eval(), card, tmp_path / "model")
    src = write_opt(
        make_volume(n=6, h=96, w=128, seed=4, laterality="OD", patient_id="P4", study_uid="1.4"),
        tmp_path / "in" / "p4.dcm",
    )
    out = tmp_path / "out"
    assert main(["screen", str(src), "--out", str(out), "--model", str(card_path)]) == 0
    row = _rows(out)[0]
    assert row["urgency"] == "soon" and row["label"] == "dme"
    assert row["tier"] == "Semi-urgent referral (site wording)" and row["time_frame"] == "within 17 days"
    assert row["action"] == "Refer to a medical retina clinic"  # not reworded: the default
    assert "not for clinical use" in row["model_notice"]
    header = list(_rows(out)[0])
    assert all(f"score_{c}" in header for c in ("normal", "drusen", "cnv", "dme"))
    data = json.loads((out / "results.json").read_text())
    assert data["classes"] == ["normal", "drusen", "cnv", "dme"]
    assert data["model"]["trained_on"] == "random weights (no training)"
    text = run_tool(
        ["pdftotext", "-layout", str(out / row["report_file"]), "-"], check=True, capture_output=True, text=True
    ).stdout
    assert "SEMI-URGENT REFERRAL (SITE WORDING): DME" in text
    assert "within 17 days" in text and "dme" in text
    assert "NOT FOR CLINICAL USE" in text


def test_cli_and_gui_name_an_exam_report_alike(tmp_path, make_volume):
    """One naming rule (core.screening.report_stem) for octscreen screen and the GUI's export."""
    import dataclasses
    from pathlib import Path
    from types import SimpleNamespace

    from app.cmd_screen import plan_jobs
    from app.main_window import MainWindow

    vol = make_volume(n=6, laterality="OD", patient_id="P 7/x", study_uid="1.9")
    vol.study = dataclasses.replace(vol.study, study_date="20261130")
    for deid in (False, True):
        (job,) = plan_jobs([vol], tmp_path, deidentify=deid, dicom=True)
        exam = SimpleNamespace(patient=vol.patient, study=vol.study)
        fake = SimpleNamespace(
            state=SimpleNamespace(current_exam=exam), settings=SimpleNamespace(export_dir=str(tmp_path))
        )
        gui = MainWindow.default_report_path(fake, deidentified=deid)
        assert gui == job.pdf and job.dcm == gui.with_suffix(".dcm")
        if deid:
            assert "P" not in gui.name.split("_")[0] and "20261130" not in gui.name  # no identity, no date
        else:
            assert gui.name == "P-7-x_20261130_oct-report.pdf"
        assert isinstance(gui, Path)


def test_cli_and_gui_worker_open_and_decide_the_same(tiny_card_path, exam_files, tmp_path):
    """One open loop (core.screening.open_volumes) and one decision path for `octscreen screen` and the
    GUI's load-and-screen worker: the same eyes, the same decisions, the same bad files."""
    from app.workers import load_and_screen

    src = exam_files["od"].parent
    out = tmp_path / "cli"
    main(["screen", str(src), "--out", str(out), "--model", str(tiny_card_path)])
    meta = json.loads((out / "results.json").read_text())
    cli = sorted((r["patient_id"], r["eye"], r["label"], r["tier"]) for r in meta["eyes"])
    cli_bad = sorted(e.split(":")[0] for e in meta["errors"])

    steps: list[str] = []
    outcome = load_and_screen([src], lambda: Screener(tiny_card_path), lambda d, t, m: steps.append(m), lambda: False)
    gui = sorted(
        (e.eye.patient_id, e.eye.laterality.value, e.label, e.tier.name) for x in outcome.exams for e in x.eyes
    )
    assert gui == cli and len(gui) == 3
    assert sorted(str(e.path) for e in outcome.errors) == cli_bad and cli_bad
    assert steps[0].startswith("Reading")


def test_a_scan_given_twice_is_screened_once_by_cli_and_gui_alike(tiny_card_path, exam_files, tmp_path, capsys):
    """The folder and a file inside it, plus a copy of that file elsewhere: one de-duplication
    (core.screening.unique_volumes) for `octscreen screen` and the GUI worker, so both screen the
    three scans once and say so."""
    import shutil

    from app.workers import load_and_screen

    src = exam_files["od"].parent
    copy = tmp_path / "copy" / "od_again.dcm"
    copy.parent.mkdir()
    shutil.copy(exam_files["od"], copy)
    paths = [src, exam_files["od"], copy]
    out = tmp_path / "cli"
    main(["screen", *map(str, paths), "--out", str(out), "--model", str(tiny_card_path)])
    assert "2 volume(s) given more than once" in capsys.readouterr().err
    meta = json.loads((out / "results.json").read_text())
    cli = sorted((r["patient_id"], r["eye"]) for r in meta["eyes"])
    assert cli == [("P001", "OD"), ("P001", "OS"), ("P002", "OS")]  # OD once, not three times
    outcome = load_and_screen(paths, lambda: Screener(tiny_card_path), lambda d, t, m: None, lambda: False)
    gui = sorted((e.eye.patient_id, e.eye.laterality.value) for x in outcome.exams for e in x.eyes)
    assert gui == cli and len(outcome.duplicates) == 2


def _subcommand(name: str):
    from app.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if a.dest == "command"]
    return sub.choices[name]


@pytest.mark.parametrize("command", ["screen", "batch"])
def test_cli_choices_are_the_library_s_own(command):
    """One owner per choice list: the CLI offers exactly the backends core.inference accepts and the
    date policies core.deid accepts (both defined once, in core.choices, which imports nothing)."""
    import core.choices
    import core.deid
    import core.inference

    options = {a.dest: a for a in _subcommand(command)._actions}
    assert tuple(options["backend"].choices) == core.inference.BACKENDS
    assert tuple(options["deid_dates"].choices) == core.deid.DATE_POLICIES
    assert core.inference.BACKENDS is core.choices.BACKENDS and core.deid.DATE_POLICIES is core.choices.DATE_POLICIES


def test_cli_report_ids_come_from_core_report(monkeypatch):
    """The CLI names its reports with core.report.new_report_id, as the GUI export does (ReportOptions'
    default); the file stems come from core.screening.report_stem in both."""
    import core.report
    from app.cmd_screen import ExamJob

    monkeypatch.setattr(core.report, "new_report_id", lambda: "0123456789")
    assert ExamJob(("P1", "1.2.3"), [], Path("x.pdf"), None).report_id == "0123456789"
    app_sources = "".join(p.read_text() for p in (Path(__file__).parents[1] / "app").rglob("*.py"))
    assert "uuid4().hex[:10]" not in app_sources  # no second report id generator in the app


def test_cli_and_gui_export_write_an_exam_alike(tiny_card_path, screener, exam_files, tmp_path, monkeypatch):
    """`octscreen screen` and the GUI export write an exam's outputs through the same core call
    (core.outputs.write_exam_outputs), under the same names, with the same report text."""
    import re

    import core.outputs
    from app.workers import ExportRequest, export_report
    from core.screening import report_stem

    calls: list[str] = []
    real = core.outputs.write_exam_outputs

    def recording(exam, card, pdf_path, options, **kw):
        calls.append(Path(pdf_path).parent.name)
        return real(exam, card, pdf_path, options, **kw)

    monkeypatch.setattr(core.outputs, "write_exam_outputs", recording)
    cli = tmp_path / "cli"
    assert main(["screen", str(exam_files["p2"]), "--out", str(cli), "--model", str(tiny_card_path), "--dicom"]) == 0
    (exam,) = screen_paths([exam_files["p2"]], screener)
    gui = tmp_path / "gui"
    gui.mkdir()
    stem = report_stem(exam.patient.patient_id, exam.study.study_date, deidentify=False)
    written = export_report(ExportRequest(gui / f"{stem}.pdf", dicom=True), exam, screener.card)
    assert calls == ["cli", "gui"]
    assert [p.name for p in written] == [
        "P002_20260131_oct-report.pdf",
        "P002_20260131_oct-report.dcm",
        "P002_20260131_oct-report_sr.dcm",
    ]
    assert {p.name for p in written} <= {p.name for p in cli.iterdir()}  # the CLI adds its results

    def text(pdf: Path) -> str:  # the report as read, less what differs by design: report id, time
        out = run_tool(["pdftotext", str(pdf), "-"], check=True, capture_output=True, text=True).stdout
        out = re.sub(r"Report [0-9A-F]{10}", "Report ID", " ".join(out.split()))
        return re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d", "generated TIME", out)

    assert text(cli / written[0].name) == text(written[0])
