"""``octscreen batch``: an archive screened as tasks on a real local Dask cluster (worker processes)
gives the same eyes and decisions as one ``octscreen screen`` over the same files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from app.cli import main
from app.cmd_batch import split_units
from core.io import write_opt


def _archive(root: Path, make_volume) -> Path:
    """One folder per patient (P001 with both eyes in two files, P002, P003) and a loose file."""
    for i, (pid, eyes) in enumerate((("P001", ("OD", "OS")), ("P002", ("OS",)), ("P003", ("OD",)))):
        for j, eye in enumerate(eyes):
            vol = make_volume(n=5, h=96, w=128, seed=10 * i + j, laterality=eye, patient_id=pid, study_uid=f"1.2.9.{i}")
            write_opt(vol, root / f"patient-{pid}" / f"{eye}.dcm")
    write_opt(
        make_volume(n=5, h=96, w=128, seed=99, laterality="OD", patient_id="P004", study_uid="1.2.9.9"),
        root / "loose.dcm",
    )
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_units_keep_each_patient_folder_together(tmp_path, make_volume):
    root = _archive(tmp_path / "archive", make_volume)
    units = split_units([root])
    assert [[p.name for p in u] for u in units] == [
        ["patient-P001"],
        ["patient-P002"],
        ["patient-P003"],
        ["loose.dcm"],
    ]
    assert split_units([root / "patient-P001"]) == [[root / "patient-P001"]]  # files only: one unit


def test_batch_on_a_local_cluster_matches_one_screen_run(tmp_path, make_volume, tiny_card_path):
    root = _archive(tmp_path / "archive", make_volume)
    one, many = tmp_path / "one", tmp_path / "many"
    assert main(["screen", str(root), "--out", str(one), "--model", str(tiny_card_path)]) == 0
    code = main(["batch", str(root), "--out", str(many), "--model", str(tiny_card_path), "--local-workers", "2"])
    assert code == 0
    key = lambda r: (r["patient_id"], r["eye"])  # noqa: E731
    single = {key(r): r for r in _rows(one / "results.csv")}
    merged = {key(r): r for r in _rows(many / "results.csv")}
    assert (
        set(merged) == set(single) == {("P001", "OD"), ("P001", "OS"), ("P002", "OS"), ("P003", "OD"), ("P004", "OD")}
    )
    for k, r in merged.items():
        assert (r["urgency"], r["tier"], r["confidence"]) == (
            single[k]["urgency"],
            single[k]["tier"],
            single[k]["confidence"],
        )
        assert (many / r["report_file"]).is_file()  # each unit's report, path relative to --out
        assert "not for clinical use" in r["model_notice"].lower() or r["model_notice"]
    assert merged[("P001", "OD")]["unit"] == merged[("P001", "OS")]["unit"] == "patient-P001"
    summary = json.loads((many / "results.json").read_text())
    assert [u["exit_code"] for u in summary["units"]] == [0, 0, 0, 0]


def test_deidentified_batch_never_names_unit_folders_after_the_input(tmp_path, make_volume, tiny_card_path):
    root = _archive(tmp_path / "archive", make_volume)
    out = tmp_path / "out"
    assert main(["batch", str(root), "--out", str(out), "--model", str(tiny_card_path), "--deidentify"]) == 0
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["unit-001", "unit-002", "unit-003", "unit-004"]
    text = (out / "results.csv").read_text() + (out / "results.json").read_text()
    for pid in ("P001", "P002", "P003", "P004", "patient-"):
        assert pid not in text


def test_batch_refuses_to_replace_merged_results(tmp_path, make_volume, tiny_card_path, capsys):
    root = _archive(tmp_path / "archive", make_volume)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("keep me")
    assert main(["batch", str(root), "--out", str(out), "--model", str(tiny_card_path)]) == 2
    assert (out / "results.csv").read_text() == "keep me"
    assert "--overwrite" in capsys.readouterr().err


def test_every_report_option_reaches_each_units_screen_run():
    """What `octscreen batch` is given for the reports is what each unit's `octscreen screen` gets."""
    from app.cli import build_parser
    from app.cmd_batch import _options

    args = build_parser().parse_args(
        [
            "batch",
            "x",
            "--out",
            "o",
            "--institution",
            "Eye Unit",
            "--referring",
            "Dr R",
            "--operator",
            "J. Op",
            "--dicom",
        ]
    )
    opts = _options(args)
    for flag, value in (("--institution", "Eye Unit"), ("--referring", "Dr R"), ("--operator", "J. Op")):
        assert opts[opts.index(flag) + 1] == value
    assert "--dicom" in opts
    screen = build_parser().parse_args(["screen", "x", "--out", "o", *opts])  # the screen command accepts them all
    assert (screen.referring, screen.operator, screen.institution) == ("Dr R", "J. Op", "Eye Unit")
