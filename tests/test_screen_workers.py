"""``octscreen screen --workers N``: exams screened in N worker processes (app.screen_pool) give the
same reports, rows (in the plan's order) and problems as one process; past the pixel hold the parent
reads an exam again before it goes; a worker that cannot start fails its exams by name, not the run."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from app.cli import main
from app.cmd_screen import ReportSettings
from app.screen_pool import screen_in_processes, worker_threads
from core import limits
from core.io import write_opt
from core.modelcard import load_card
from core.outputs import plan_jobs
from core.screening import PixelHold, open_volumes


@pytest.fixture
def archive(tmp_path, make_volume) -> Path:
    """Four exams of three patients (one with both eyes), one unreadable file."""
    d = tmp_path / "in"
    for s, eye, pid, uid, name in (
        (1, "OD", "P001", "1.2.3.1", "p1_od.dcm"),
        (2, "OS", "P001", "1.2.3.1", "p1_os.dcm"),
        (3, "OS", "P002", "1.2.3.2", "p2.dcm"),
        (4, "OD", "P003", "1.2.3.3", "p3.dcm"),
        (5, "OD", "P003", "1.2.3.4", "p3_later.dcm"),
    ):
        write_opt(make_volume(n=6, h=96, w=128, seed=s, laterality=eye, patient_id=pid, study_uid=uid), d / name)
    (d / "broken.dcm").write_bytes(b"DICM but not really" * 10)
    return d


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _screen(archive: Path, out: Path, card: Path, *extra: str) -> int:
    return main(["screen", str(archive), "--out", str(out), "--model", str(card), "--threads", "1", *extra])


def _same_results(one: Path, many: Path) -> None:
    a, b = _rows(one), _rows(many)
    assert len(a) == 5 and [(r["patient_id"], r["eye"], r["report_file"]) for r in a] == [
        (r["patient_id"], r["eye"], r["report_file"]) for r in b
    ]  # the plan's order, whichever exam finished first
    for ra, rb in zip(a, b, strict=True):
        assert (
            ra["label"] == rb["label"]
            and ra["urgency"] == rb["urgency"]
            and ra["evidence_bscans"] == rb["evidence_bscans"]
        )
        for c in ("normal", "drusen", "cnv"):
            assert abs(float(ra[f"score_{c}"]) - float(rb[f"score_{c}"])) < 1e-4
    assert sorted(p.name for p in one.glob("*.pdf")) == sorted(p.name for p in many.glob("*.pdf"))
    assert len(list(many.glob("*.pdf"))) == 4 and all(p.read_bytes().startswith(b"%PDF") for p in many.glob("*.pdf"))
    assert (
        json.loads((one / "results.json").read_text())["errors"]
        == json.loads((many / "results.json").read_text())["errors"]
    )


def test_two_workers_give_the_same_reports_rows_and_problems(tiny_card_path, archive, tmp_path, capsys):
    one, many = tmp_path / "one", tmp_path / "many"
    assert _screen(archive, one, tiny_card_path) == 1  # the broken file
    capsys.readouterr()
    assert _screen(archive, many, tiny_card_path, "--workers", "2") == 1
    cap = capsys.readouterr()
    assert "screened 4 exam(s), 5 eye(s)" in cap.out and "broken.dcm" in cap.err
    assert cap.err.count("Institution not set") == 1 and "no institution set" not in cap.err  # not once per worker
    _same_results(one, many)
    assert not [p for p in many.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_past_the_hold_each_exam_is_read_again_before_it_goes_to_a_worker(tiny_card_path, archive, tmp_path):
    one, many = tmp_path / "one", tmp_path / "many"
    assert _screen(archive, one, tiny_card_path) == 1
    with limits.override(max_held_bytes=1):  # every volume gives its pixels back as it is read
        assert _screen(archive, many, tiny_card_path, "--workers", "3") == 1
    _same_results(one, many)  # placeholders (all zeros) would give other scores


def test_a_worker_that_cannot_start_fails_its_exams_by_name(tiny_card_path, archive, tmp_path):
    errors: list = []
    volumes = open_volumes([archive], errors)
    jobs = plan_jobs(volumes, tmp_path / "out", deidentify=False, dicom=False)
    (tmp_path / "out").mkdir()
    card = dataclasses.replace(load_card(tiny_card_path), path=tmp_path / "gone.json")  # the workers cannot load it

    class Bar:
        n = 0

        def update(self, k: int) -> None:
            self.n += k

    bar = Bar()
    results = screen_in_processes(jobs, PixelHold(), card, ReportSettings(), "auto", 1, 2, bar)
    assert len(results) == len(jobs) == 4 and not any(r.screened or r.rows for r in results)
    assert all("screening failed (worker process" in r.failures[0] for r in results)
    assert "p1_od.dcm" in results[0].failures[0] and bar.n == sum(v.n_bscans for j in jobs for v in j.volumes)
    assert not list((tmp_path / "out").iterdir())  # nothing half written


def test_workers_and_their_threads(capsys):
    assert worker_threads(3, 2) == 3 and worker_threads(None, 64) == 1
    for bad in ("0", "65", "two"):
        with pytest.raises(SystemExit):
            main(["screen", "x", "--out", "y", "--workers", bad])
        assert "--workers" in capsys.readouterr().err
