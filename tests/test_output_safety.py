"""Output safety of ``octscreen screen`` (issue 11 item 5): bad --out folders are refused before any
work with a message naming the folder; hostile header text cannot stop the PDF; temp files a killed run
left are cleaned; two runs into one folder never lose a result."""

from __future__ import annotations

import csv
import errno
import os
import time
from pathlib import Path

import pytest

from app.cli import main
from core.fileio import clean_stale_temps, next_free
from core.io import write_opt


@pytest.fixture
def one_exam(tmp_path, make_volume) -> Path:
    return write_opt(make_volume(n=6, h=96, w=128, seed=1, patient_id="P001", study_uid="1.2.3.1"), tmp_path / "in.dcm")


def _screen(card, src, out, *extra) -> int:
    return main(["screen", str(src), "--out", str(out), "--model", str(card), *extra])


def test_out_under_an_existing_file_is_refused_naming_it(tiny_card_path, one_exam, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = blocker / "reports"
    assert _screen(tiny_card_path, one_exam, out) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "cannot create or write the output folder" in err


def test_out_name_too_long_is_refused(tiny_card_path, one_exam, tmp_path, capsys):
    out = tmp_path / ("r" * 300)
    assert _screen(tiny_card_path, one_exam, out) == 2
    assert "File name too long" in capsys.readouterr().err


def test_read_only_output_is_refused_before_screening(tiny_card_path, one_exam, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    real_touch = Path.touch

    def touch(self, *a, **k):
        if self.parent == out:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_touch(self, *a, **k)

    monkeypatch.setattr(Path, "touch", touch)
    assert _screen(tiny_card_path, one_exam, out) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and "screened" not in err


def test_huge_header_text_still_gives_a_report(tiny_card_path, tmp_path, make_volume, capsys):
    import dataclasses

    v = make_volume(n=6, h=96, w=128, seed=1, patient_id="P" * 64, study_uid="1.2.3.1")
    v = dataclasses.replace(
        v,
        patient=dataclasses.replace(v.patient, name="A" * 5000 + "^B"),
        study=dataclasses.replace(v.study, description="D" * 3000),
    )
    src = write_opt(v, tmp_path / "long.dcm")
    out = tmp_path / "out"
    with pytest.warns(UserWarning):  # pydicom: the values exceed their VR's length
        code = _screen(tiny_card_path, src, out)
    assert code == 0, capsys.readouterr().err
    (pdf,) = out.glob("*.pdf")
    assert pdf.stat().st_size > 1000


def test_stale_temp_files_of_a_killed_run_are_removed_young_ones_kept(tiny_card_path, one_exam, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".P001_20260131_oct-report.pdf.0123456789ab.tmp"
    young = out / ".other.pdf.ba9876543210.tmp"
    unrelated = out / ".notes.tmp"
    for p in (stale, young, unrelated):
        p.write_bytes(b"%PDF- half a report of a patient")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(unrelated, (old, old))
    assert _screen(tiny_card_path, one_exam, out) == 0
    assert not stale.exists() and young.exists() and unrelated.exists()
    assert stale.name in capsys.readouterr().err


def test_a_name_taken_meanwhile_by_another_run_gets_the_next_free_name(
    tiny_card_path, one_exam, tmp_path, capsys, monkeypatch
):
    import core.report

    out = tmp_path / "out"
    real = core.report.write_report
    taken: list[Path] = []

    def racing(path, *a, **k):  # another run writes the same name just before we do
        if not taken:
            Path(path).write_bytes(b"the other run's report")
            taken.append(Path(path))
        return real(path, *a, **k)

    monkeypatch.setattr(core.report, "write_report", racing)
    assert _screen(tiny_card_path, one_exam, out, "--dicom") == 0
    err = capsys.readouterr().err
    (theirs,) = taken
    assert theirs.read_bytes() == b"the other run's report"  # never clobbered
    ours = theirs.with_name(theirs.stem + "_2.pdf")
    assert ours.read_bytes().startswith(b"%PDF")
    assert ours.with_suffix(".dcm").is_file()
    (row,) = list(csv.DictReader((out / "results.csv").open()))
    assert row["report_file"] == ours.name and row["dicom_file"] == ours.with_suffix(".dcm").name
    assert f"written as {ours.name}" in err


def test_results_taken_meanwhile_are_written_beside_them(tiny_card_path, one_exam, tmp_path, capsys, monkeypatch):
    import app.cmd_screen as cmd

    out = tmp_path / "out"
    real = cmd._write_text

    def racing(path, text, overwrite):
        if path.name == "results.csv" and not path.exists():
            path.write_text("the other run's results\n")
        return real(path, text, overwrite)

    monkeypatch.setattr(cmd, "_write_text", racing)
    assert _screen(tiny_card_path, one_exam, out) == 0
    assert (out / "results.csv").read_text() == "the other run's results\n"
    assert (out / "results_2.csv").read_text().startswith("patient_id,")
    assert "written as results_2.csv" in capsys.readouterr().err


def test_fileio_helpers(tmp_path):
    p = tmp_path / "a.pdf"
    assert next_free(p) == p
    p.write_text("x")
    (tmp_path / "a_2.pdf").write_text("x")
    assert next_free(p) == tmp_path / "a_3.pdf"
    assert clean_stale_temps(tmp_path / "missing") == []
