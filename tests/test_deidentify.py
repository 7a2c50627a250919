"""De-identification (issue 11 item 2): a name, an id and a birth date planted in every carrier (DICOM
tags, free text, folder and file names, a damaged file's name) never reach any output of
``octscreen screen --deidentify``: PDF text, CSV, JSON, DICOM values, output file names, the console. Dates follow
the chosen policy (remove, shift by a per-patient offset, retain)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from app.cli import main
from core.deid import Deidentifier
from core.errors import CorruptFileError
from core.io import write_opt
from core.volume import DeviceInfo, PatientInfo, StudyInfo
from tests.conftest import run_tool

NAME, FIRST, PID, BIRTH, EXAM = "Quixotic", "Zoltana", "IDPLANT777", "19440312", "20190417"
PLANTED = [NAME, FIRST, PID, BIRTH, "1944-03-12", "12.03.1944", "03/12/1944", "12 Mar 1944"]
EXAM_FORMS = [EXAM, "2019-04-17", "17.04.2019", "17 Apr 2019"]


def _plant(tmp: Path, make_volume) -> Path:
    src = tmp / "in"
    # DICOM: identity in the tags and in free text, the folder and file named after the patient
    v = make_volume(n=6, h=96, w=128, seed=1, laterality="OD", patient_id=PID, study_uid="1.2.3.4.5")
    v = dataclasses.replace(
        v,
        patient=PatientInfo(patient_id=PID, name=f"{NAME}^{FIRST}", birth_date=BIRTH, sex="F"),
        study=StudyInfo(
            study_uid="1.2.3.4.5",
            series_uid="1.2.3.4.5.6",
            study_date=EXAM,
            study_time="101500",
            study_id=PID,
            accession_number=f"ACC-{PID}",
            description=f"Macula of {FIRST} {NAME}, born 1944-03-12",
        ),
        device=DeviceInfo(manufacturer="Heidelberg Engineering", model="Spectralis", software_version="6.16"),
    )
    write_opt(v, src / f"{NAME}_{FIRST}_{PID}" / f"{NAME}-{BIRTH}.dcm")
    # an image stack whose folder is the patient's name and id, a TIFF stack named after them
    stack = src / f"{NAME} {FIRST} {PID}"
    stack.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (96, 128), dtype=np.uint8)).save(stack / f"{i:03d}.png")
    import tifffile

    tifffile.imwrite(src / f"{NAME}_{PID}_{BIRTH}.tif", rng.integers(0, 255, (6, 96, 128), dtype=np.uint8))
    # a damaged file carrying the name: its error must not carry it into results.json
    (src / f"{NAME}_{PID}_broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)
    return src


def _texts(out: Path) -> dict[str, str]:
    """Every output as searchable text: PDF text, CSV/JSON, every DICOM value, every file name."""
    texts: dict[str, str] = {"(file names)": " ".join(p.name for p in out.rglob("*"))}
    for p in out.rglob("*"):
        if p.suffix == ".pdf":
            texts[p.name] = run_tool(["pdftotext", str(p), "-"], capture_output=True, text=True, check=True).stdout
            texts[p.name + " (metadata)"] = run_tool(["pdfinfo", str(p)], capture_output=True, text=True).stdout
        elif p.suffix in (".csv", ".json"):
            texts[p.name] = p.read_text(encoding="utf-8")
        elif p.suffix == ".dcm":
            ds = pydicom.dcmread(p)
            texts[p.name] = "\n".join(_values(ds.file_meta) + _values(ds))
    return texts


def _values(d) -> list[str]:
    """Every element value of a dataset, nested sequences included (not the pixels or the
    encapsulated PDF, whose text is checked as the PDF)."""
    out: list[str] = []
    for el in d:
        if el.VR == "SQ":
            for item in el.value:
                out += _values(item)
        elif el.tag not in (0x7FE00010, 0x00420011):
            out.append(f"{el.keyword}={el.value}")
    return out


def _leaks(texts: dict[str, str], tokens: list[str]) -> list[str]:
    found = []
    for where, t in texts.items():
        for tok in tokens:
            at = t.lower().find(tok.lower())
            if at >= 0:
                found.append(f"{tok!r} in {where}: ...{t[max(at - 60, 0) : at + 40]!r}...")
    return found


@pytest.fixture
def planted(tmp_path, make_volume) -> Path:
    return _plant(tmp_path, make_volume)


def _screen(card, src, out, *extra) -> int:
    return main(["screen", str(src), "--out", str(out), "--model", str(card), "--dicom", *extra])


def test_identified_run_does_show_the_planted_identity(tiny_card_path, planted, tmp_path, capsys):
    """The control: without --deidentify the carriers do reach the outputs (so the search can find them)."""
    out = tmp_path / "out"
    assert _screen(tiny_card_path, planted, out) == 1  # 1: the damaged file
    texts = _texts(out)
    for tok in (NAME, PID, EXAM):
        assert _leaks(texts, [tok]), tok
    console = capsys.readouterr()
    assert _leaks({"console": console.out + console.err}, [NAME])  # the damaged file's name


@pytest.mark.parametrize("dates", ["remove", "shift"])
def test_deidentified_outputs_hold_no_planted_identity(tiny_card_path, planted, tmp_path, dates, capsys):
    out = tmp_path / "out"
    assert _screen(tiny_card_path, planted, out, "--deidentify", "--deid-dates", dates) == 1
    texts = _texts(out)
    console = capsys.readouterr()  # the console is a log too: it may be kept or shared
    texts["(console)"] = console.out + console.err
    assert "input 1: CorruptFileError" in texts["(console)"]  # the problem is still told, by number
    assert len([n for n in texts if n.endswith(".pdf")]) == 3  # DICOM, image folder, TIFF: three exams
    times = ["101500", "10:15"] if dates == "remove" else []  # a shifted date keeps its time of day
    assert _leaks(texts, PLANTED + EXAM_FORMS + times + ["1.2.3.4.5", str(planted)]) == []
    meta = json.loads((out / "results.json").read_text())
    assert len(meta["errors"]) == 1 and "CorruptFileError" in meta["errors"][0]
    ds = pydicom.dcmread(next(out.glob("*.dcm")))
    assert ds.PatientIdentityRemoved == "YES"
    if dates == "shift":  # a shifted exam date is there, and it is earlier than the real one
        shifted = [r["study_date"] for r in meta["eyes"] if r["study_date"]]
        assert shifted == [] or all(s < EXAM for s in shifted)


def test_retained_dates_are_kept_and_identity_still_goes(tiny_card_path, planted, tmp_path):
    out = tmp_path / "out"
    assert _screen(tiny_card_path, planted, out, "--deidentify", "--deid-dates", "retain") == 1
    texts = _texts(out)
    assert _leaks(texts, PLANTED + [str(planted)]) == []
    assert _leaks(texts, [EXAM])  # the exam date, as asked


def _day_forms(days: set[dt.date]) -> list[str]:
    return [d.strftime(f) for d in days for f in ("%Y-%m-%d", "%Y%m%d", "%d.%m.%Y")]


def test_deidentified_outputs_do_not_tell_the_day_they_were_made(tiny_card_path, planted, tmp_path):
    """Screening happens on or near the exam day, so the outputs' own times (report generated, DICOM
    content / creation / acquisition dates, the PDF's creation date, results.json) would give the
    exam date away: de-identified, they keep the year only. The control run shows today's date."""
    days = {dt.date.today()}
    assert _screen(tiny_card_path, planted, tmp_path / "named") == 1
    assert _screen(tiny_card_path, planted, tmp_path / "anon", "--deidentify") == 1
    days.add(dt.date.today())  # (a run across midnight)
    found: dict[str, dict[str, str]] = {}
    for run in ("named", "anon"):
        texts = _texts(tmp_path / run)
        for pdf in (tmp_path / run).rglob("*.pdf"):  # the metadata's dates in a form the tokens can match
            info = run_tool(["pdfinfo", "-isodates", str(pdf)], capture_output=True, text=True, check=True).stdout
            texts[pdf.name + " (iso metadata)"] = info
        found[run] = texts
    assert _leaks(found["named"], _day_forms(days))  # the check can see the day
    assert _leaks(found["anon"], _day_forms(days)) == []
    year = str(dt.date.today().year)
    meta = json.loads((tmp_path / "anon" / "results.json").read_text())
    assert meta["generated"].startswith(f"{year}-01-01T00:00:00")
    ds = pydicom.dcmread(next((tmp_path / "anon").glob("*.dcm")))
    assert (ds.ContentDate, ds.ContentTime, ds.InstanceCreationDate) == (f"{year}0101", "000000", f"{year}0101")
    pdf_text = next(t for n, t in found["anon"].items() if n.endswith(".pdf"))
    assert f"generated {year} (day and time removed)" in pdf_text


def test_deidentifier_is_consistent_within_a_run_and_random_across_runs():
    a, b = Deidentifier(dates="shift"), Deidentifier(dates="shift")
    assert a.pseudonym("P1") == a.pseudonym("P1") != a.pseudonym("P2")
    assert a.pseudonym("P1") != b.pseudonym("P1") or a.pseudonym("P2") != b.pseudonym("P2")
    assert a.uid("1.2.3") == a.uid("1.2.3") != b.uid("1.2.3")
    d1, d2 = a.date("P1", "20200101"), a.date("P1", "20200111")
    assert d1 < "20200101" and d2 > d1  # one offset per patient: the 10-day interval survives
    import datetime as dt

    gap = dt.datetime.strptime(d2, "%Y%m%d") - dt.datetime.strptime(d1, "%Y%m%d")
    assert gap.days == 10
    assert Deidentifier().date("P1", "20200101") == "" and a.date("P1", "garbage") == ""
    with pytest.raises(ValueError):
        Deidentifier(dates="blur")
    err = CorruptFileError(Path("/data/Quixotic_IDPLANT777/scan.dcm"), "damaged header of Quixotic_IDPLANT777")
    text = a.error_text(err, 3)
    assert "Quixotic" not in text and "IDPLANT777" not in text and text.startswith("input 3: CorruptFileError")


def test_gui_export_deidentifies_the_same_way(tiny_card_path, planted, tmp_path):
    """The GUI's "de-identify" export (app.workers.export_report) goes through core.deid too."""
    from app.workers import ExportRequest, export_report
    from core.inference import Screener
    from core.screening import screen_paths

    screener = Screener(tiny_card_path)
    dicom_in = planted / f"{NAME}_{FIRST}_{PID}" / f"{NAME}-{BIRTH}.dcm"
    (exam,) = screen_paths([dicom_in], screener)
    assert exam.patient.name.startswith(NAME)  # screened identified, as the GUI does
    out = tmp_path / "gui"
    out.mkdir()
    req = ExportRequest(out / "report.pdf", deidentify=True, dicom=True)
    written = export_report(req, exam, screener.card)
    assert [p.name for p in written] == ["report.pdf", "report.dcm", "report_sr.dcm"]
    assert _leaks(_texts(out), PLANTED + EXAM_FORMS + ["1.2.3.4.5", str(planted)]) == []
    assert exam.patient.name.startswith(NAME)  # the exam on screen keeps its identity
