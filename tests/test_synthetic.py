"""Tests of the OCT simulator (core.synthetic) and the ``octscreen synth`` command."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from app.cli import main as cli_main
from core import synthetic as S
from core.errors import Cancelled
from core.synthetic import (
    CLASSES,
    MANIFEST_COLUMNS,
    patient_labels,
    simulate_bscan,
    simulate_patient,
    simulate_volume,
    write_dataset,
)
from core.volume import Laterality, PatientInfo

SMALL = dict(height=160, width=192)


def _manifest(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == MANIFEST_COLUMNS
        return list(reader)


# ---------------------------------------------------------------------------------- volumes


def test_same_seed_same_volume_other_seed_other_volume():
    a = simulate_volume("cnv", n_bscans=9, seed=11, **SMALL)
    b = simulate_volume("cnv", n_bscans=9, seed=11, **SMALL)
    c = simulate_volume("cnv", n_bscans=9, seed=12, **SMALL)
    assert np.array_equal(a.bscans, b.bscans)
    assert a.frame_labels == b.frame_labels
    assert a.study == b.study and a.patient == b.patient
    assert not np.array_equal(a.bscans, c.bscans)


@pytest.mark.parametrize("bit_depth,dtype", [(8, np.uint8), (16, np.uint16)])
def test_shapes_dtypes_and_metadata(bit_depth, dtype):
    vol = simulate_volume("drusen", n_bscans=7, height=120, width=144, seed=3, laterality="OS", bit_depth=bit_depth)
    assert vol.bscans.shape == (7, 120, 144) and vol.bscans.dtype == dtype
    assert vol.bit_depth == bit_depth
    assert int(vol.bscans.max()) > (200 if bit_depth == 8 else 3000)  # uses its range
    assert vol.laterality is Laterality.OS
    assert vol.label == "drusen" and len(vol.frame_labels) == 7
    assert set(vol.frame_labels) <= {"normal", "drusen"}
    assert vol.spacing.row == pytest.approx(1.93 / 120) and vol.spacing.column == pytest.approx(6.0 / 144)
    assert vol.spacing.slice == pytest.approx(6.0 / 7)
    assert vol.device.model == "simulator" and str(vol.device) == "OCT Screen simulator"
    assert vol.patient.name.startswith("SYNTH^") and vol.patient.patient_id
    assert vol.study.study_uid.startswith("1.2.") and len(vol.study.study_uid) <= 64
    assert len(vol.study.study_date) == 8 and vol.study.series_uid
    assert vol.extra["synthetic"] is True


def test_default_size_is_spectralis_like():
    vol = simulate_volume("normal", seed=0)
    assert vol.shape == (25, 496, 512)
    assert vol.spacing.row == pytest.approx(0.0039, rel=0.01)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="dme"):
        simulate_volume("dme", seed=0)
    with pytest.raises(ValueError, match="bit_depth"):
        simulate_volume("normal", seed=0, bit_depth=12)


# ---------------------------------------------------------------------------------- labels vs lesions


@pytest.mark.parametrize("label", ["drusen", "cnv"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frame_labels_mark_exactly_the_bscans_that_cut_a_lesion(label, seed):
    """Same seed = same eye and noise; only the lesion differs. So the diseased volume's B-scans
    labelled normal must look like the healthy eye's, and those labelled diseased must differ."""
    healthy = simulate_volume("normal", n_bscans=25, height=496, width=192, seed=seed)
    sick = simulate_volume(label, n_bscans=25, height=496, width=192, seed=seed)
    labels = np.array(sick.frame_labels)
    lesion = labels == label
    assert set(labels) <= {"normal", label}
    assert 2 <= lesion.sum() <= 22, "a diseased eye has lesion B-scans and normal-looking ones"
    assert labels[0] == labels[-1] == "normal", "edge B-scans are far from a macular lesion"
    diff = np.abs(sick.bscans.astype(np.int32) - healthy.bscans.astype(np.int32))
    changed = (diff > 40).mean(axis=(1, 2))  # fraction of clearly changed pixels
    assert changed[~lesion].max() < 0.0002  # normal-labelled: the healthy eye
    assert ((diff[lesion] > 10).sum(axis=(1, 2)) >= 10).all()  # lesion-labelled: all differ,
    assert (changed[lesion] > 0.0005).mean() >= 0.75  # most of them clearly
    # lesions are 3-D: the B-scans through them come in runs of neighbours
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, lesion.astype(int), 0])))[::2]
    assert runs.max() >= 2
    assert set(healthy.frame_labels) == {"normal"}


def test_drusen_raise_the_rpe_and_leave_bruchs_membrane_flat():
    seed, n, h, w = 4, 25, 496, 256
    vol = simulate_volume("drusen", n_bscans=n, height=h, width=w, seed=seed)
    checked = 0
    for i, lab in enumerate(vol.frame_labels):
        if i % 3:
            continue
        healthy = simulate_bscan("normal", i, n_bscans=n, height=h, width=w, seed=seed)
        sick = simulate_bscan("drusen", i, n_bscans=n, height=h, width=w, seed=seed)
        rpe_top = lambda b: np.argmax(b.layers >= S.RPE, axis=0)  # noqa: E731
        choroid_top = lambda b: np.argmax(b.layers >= S.CHOROID, axis=0)  # noqa: E731
        rise = int((rpe_top(healthy) - rpe_top(sick)).max())
        assert np.array_equal(choroid_top(healthy), choroid_top(sick))  # Bruch's stays put
        if lab == "drusen":
            assert rise >= 2
            assert (sick.layers == S.SUBRPE).any()  # the druse's content
        else:
            assert rise <= 4  # < LESION_MIN_UM (+ rounding)
        checked += 1
    assert checked >= 8


def test_cnv_has_fluid_or_pigment_epithelial_detachment_on_its_lesion_bscans():
    vol = simulate_volume("cnv", n_bscans=25, seed=7, **SMALL)
    lesion = [i for i, lab in enumerate(vol.frame_labels) if lab == "cnv"]
    assert lesion
    found = set()
    for i in lesion:
        layers = simulate_bscan("cnv", i, n_bscans=25, seed=7, **SMALL).layers
        found |= {k for k in (S.SRF, S.SHRM, S.SUBRPE) if (layers == k).any()}
    assert S.SUBRPE in found  # the fibrovascular PED is always there


# ---------------------------------------------------------------------------------- anatomy


@pytest.mark.parametrize("seed", [0, 5, 9])
def test_layers_in_textbook_order_of_brightness(seed):
    b = simulate_bscan("normal", 12, seed=seed, height=248, width=256)
    mean = {k: float(b.image[b.layers == k].mean()) for k in np.unique(b.layers)}
    assert max(mean, key=mean.get) == S.RPE  # RPE: the brightest band
    assert mean[S.VIT] < 0.2 and all(mean[S.VIT] < v for k, v in mean.items() if S.VIT < k < S.SCLERA)
    assert not {S.SRF, S.SHRM, S.SUBRPE} & set(mean)  # no lesion layers in a normal eye
    assert mean[S.NFL] > mean[S.GCL] > mean[S.INL]  # NFL bright, INL dark
    assert mean[S.OPL] > mean[S.ONL] and mean[S.EZ] > mean[S.ONL]
    # and in the image itself: top rows (vitreous) dark, the brightest rows deep in the retina
    profile = b.image[:, 96:160].mean(axis=1)
    assert profile[:10].mean() < 0.2
    assert S.ONL <= np.bincount(b.layers[int(np.argmax(profile)), 96:160]).argmax() <= S.CHOROID


def _retina_thickness(layers: np.ndarray) -> np.ndarray:
    return ((layers >= S.NFL) & (layers < S.CHOROID)).sum(axis=0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_foveal_pit_on_central_bscans_only(seed):
    n, w = 25, 256
    vol = simulate_volume("normal", n_bscans=n, height=248, width=w, seed=seed)
    fx, fy = vol.extra["fovea_mm"]
    centre = int(round(fy / (6.0 / n) + (n - 1) / 2))
    assert abs(centre - n // 2) <= 1
    col = int(round((fx + 3.0) / 6.0 * (w - 1)))
    away = [col - 45, col + 45]  # ~1 mm either side
    for i, has_pit in ((centre, True), (0, False), (n - 1, False)):
        t = _retina_thickness(simulate_bscan("normal", i, n_bscans=n, height=248, width=w, seed=seed).layers)
        ratio = t[col - 2 : col + 3].mean() / t[away].mean()
        if has_pit:
            assert ratio < 0.85, f"no foveal pit on the central B-scan (ratio {ratio:.2f})"
        else:
            assert ratio > 0.9, f"a pit on edge B-scan {i} (ratio {ratio:.2f})"


# ---------------------------------------------------------------------------------- patients


def test_simulate_patient_two_eyes_same_patient_and_study():
    eyes = simulate_patient(3, seed=5, n_bscans=5, **SMALL)
    again = simulate_patient(3, seed=5, n_bscans=5, **SMALL)
    assert [v.laterality for v in eyes] == [Laterality.OD, Laterality.OS]
    assert eyes[0].patient == eyes[1].patient and eyes[0].patient.patient_id == "P0003"
    assert eyes[0].study.study_uid == eyes[1].study.study_uid
    assert eyes[0].study.series_uid != eyes[1].study.series_uid
    assert tuple(v.label for v in eyes) == patient_labels(3, seed=5)
    assert all(np.array_equal(a.bscans, b.bscans) for a, b in zip(eyes, again))
    forced = simulate_patient(
        3, seed=5, labels=("cnv", "normal"), n_bscans=5, **SMALL, patient=PatientInfo("X1", "DEMO^Synthetic")
    )
    assert [v.label for v in forced] == ["cnv", "normal"] and forced[0].patient.name == "DEMO^Synthetic"


def test_patient_labels_follow_the_class_mix():
    mains = [patient_labels(i, seed=1) for i in range(60)]
    worst = ["normal" if s == {"normal"} else "cnv" if "cnv" in s else "drusen" for s in map(set, mains)]
    assert {c: worst.count(c) for c in CLASSES} == {"normal": 20, "drusen": 20, "cnv": 20}
    assert any(a != b for a, b in mains)  # some patients have a healthy fellow eye
    only = {lab for i in range(30) for lab in patient_labels(i, seed=2, classes=("normal", "cnv"))}
    assert only == {"normal", "cnv"}


# ---------------------------------------------------------------------------------- datasets


def test_write_dataset_png_layout_and_manifest(tmp_path):
    out = write_dataset(tmp_path / "ds", patients=3, fmt="png", seed=2, n_bscans=5, height=64, width=64)
    rows = _manifest(out)
    assert len(rows) == 3 * 2 * 5
    for row in rows:
        p = out / row["path"]
        cls, pid, eye, name = Path(row["path"]).parts
        assert cls == row["eye_label"].upper() and pid == row["patient_id"] and eye == row["eye"]
        assert name == f"{int(row['bscan_index']) + 1:03d}_{row['label'].upper()}.png"
        assert row["volume_id"] == f"{pid}_{eye}"
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert img.shape == (64, 64) and img.dtype == np.uint8
    # the files hold the simulator's B-scans
    vol = simulate_patient(1, seed=2, n_bscans=5, height=64, width=64)[1]
    row = next(r for r in rows if r["volume_id"] == "P0001_OS" and r["bscan_index"] == "2")
    assert np.array_equal(cv2.imread(str(out / row["path"]), cv2.IMREAD_UNCHANGED), vol.bscans[2])
    assert {r["eye_label"] for r in rows} == {"normal", "drusen", "cnv"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_write_dataset_is_deterministic_and_refuses_a_non_empty_folder(tmp_path):
    a = write_dataset(tmp_path / "a", patients=1, fmt="png", seed=9, n_bscans=3, height=48, width=48)
    b = write_dataset(tmp_path / "b", patients=1, fmt="png", seed=9, n_bscans=3, height=48, width=48)
    assert (a / "manifest.csv").read_text() == (b / "manifest.csv").read_text()
    for row in _manifest(a):
        assert (a / row["path"]).read_bytes() == (b / row["path"]).read_bytes()
    with pytest.raises(FileExistsError, match="not empty"):
        write_dataset(a, patients=1, fmt="png", seed=1, n_bscans=3, height=48, width=48)
    # overwrite replaces the earlier dataset and leaves the user's own files alone
    (a / "notes.txt").write_text("mine")
    write_dataset(a, patients=2, fmt="png", seed=1, n_bscans=2, height=48, width=48, overwrite=True)
    rows = _manifest(a)
    assert len(rows) == 2 * 2 * 2 and (a / "notes.txt").read_text() == "mine"
    on_disk = {p.relative_to(a).as_posix() for p in a.rglob("*.png")}
    assert on_disk == {r["path"] for r in rows}  # no stale B-scans


def test_write_dataset_in_worker_processes_is_the_same_dataset(tmp_path):
    seq = write_dataset(tmp_path / "seq", patients=4, fmt="png", seed=3, n_bscans=2, height=48, width=48)
    calls = []
    par = write_dataset(
        tmp_path / "par",
        patients=4,
        fmt="png",
        seed=3,
        n_bscans=2,
        height=48,
        width=48,
        workers=2,
        progress=lambda done, total: calls.append(done),
    )
    assert calls == list(range(1, 9))  # progress in patient order
    assert (seq / "manifest.csv").read_text() == (par / "manifest.csv").read_text()
    for row in _manifest(seq):
        assert (seq / row["path"]).read_bytes() == (par / row["path"]).read_bytes()


def test_write_dataset_cancelled_in_worker_processes_leaves_nothing(tmp_path):
    def cancel(done: int, total: int) -> None:
        raise Cancelled()

    with pytest.raises(Cancelled):
        write_dataset(
            tmp_path / "ds", patients=3, fmt="png", seed=0, n_bscans=2, height=48, width=48, workers=2, progress=cancel
        )
    assert list(tmp_path.iterdir()) == []


def test_write_dataset_cancelled_leaves_nothing(tmp_path):
    def cancel(done: int, total: int) -> None:
        raise Cancelled()

    with pytest.raises(Cancelled):
        write_dataset(tmp_path / "ds", patients=2, fmt="png", seed=0, n_bscans=2, height=48, width=48, progress=cancel)
    assert list(tmp_path.iterdir()) == []


def test_write_dataset_dicom(tmp_path):
    calls = []
    out = write_dataset(
        tmp_path / "dcm",
        patients=2,
        fmt="dicom",
        seed=4,
        n_bscans=4,
        height=64,
        width=80,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    rows = _manifest(out)
    assert len(rows) == 2 * 2 * 4
    for volume_id in ("P0000_OD", "P0000_OS", "P0001_OD", "P0001_OS"):
        pid, eye = volume_id.split("_")
        mine = [r for r in rows if r["volume_id"] == volume_id]
        assert {r["path"] for r in mine} == {f"{pid}/{volume_id}.dcm"}
        assert [int(r["bscan_index"]) for r in mine] == [0, 1, 2, 3]
        ds = pydicom.dcmread(out / mine[0]["path"])
        assert ds.Modality == "OPT" and int(ds.NumberOfFrames) == 4
        assert ds.PatientID == pid and ds.ImageLaterality == {"OD": "R", "OS": "L"}[eye]
        assert ds.pixel_array.shape == (4, 64, 80)
        vol = simulate_patient(int(pid[1:]), seed=4, n_bscans=4, height=64, width=80)[eye == "OS"]
        # the same pixels, up to a rounding step where this CPU's vector maths rounds otherwise (an AVX2
        # machine made 1 of 12.7 million pixels one level off the AVX-512 one that wrote the file)
        diff = np.abs(ds.pixel_array.astype(np.int16) - vol.bscans.astype(np.int16))
        assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 100_000
        assert [r["label"] for r in mine] == list(vol.frame_labels)


# ---------------------------------------------------------------------------------- CLI


def test_cli_synth_writes_a_dataset_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "synth",
        "--out",
        str(out),
        "--patients",
        "1",
        "--format",
        "png",
        "--seed",
        "3",
        "--bscans",
        "3",
        "--height",
        "48",
        "--width",
        "48",
        "--no-progress",
    ]
    assert cli_main(argv) == 0
    assert len(_manifest(out)) == 6 and "manifest" in capsys.readouterr().out
    assert cli_main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli_main(argv + ["--overwrite"]) == 0
    # --workers: the same dataset from worker processes; a negative count is refused
    par = tmp_path / "par"
    assert cli_main([*argv[:2], str(par), *argv[3:], "--patients", "2", "--workers", "2"]) == 0
    seq = tmp_path / "seq"
    assert cli_main([*argv[:2], str(seq), *argv[3:], "--patients", "2"]) == 0
    assert (par / "manifest.csv").read_text() == (seq / "manifest.csv").read_text()
    assert cli_main([*argv[:2], str(tmp_path / "bad"), *argv[3:], "--workers", "-1"]) == 2
    assert "--workers" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- bundled demo exam


def _demo_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "make_demo_sample.py"
    spec = importlib.util.spec_from_file_location("make_demo_sample", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundled_demo_exam_is_what_the_script_makes():
    demo = _demo_script()
    folder = Path(__file__).resolve().parents[1] / "resources" / "samples" / "demo-exam"
    files = sorted(folder.glob("*.dcm"))
    assert [f.name for f in files] == ["DEMO0001_OD.dcm", "DEMO0001_OS.dcm"]
    assert sum(f.stat().st_size for f in files) < 10_000_000
    eyes = simulate_patient(1, seed=demo.DEMO_SEED, labels=demo.DEMO_LABELS, n_bscans=25, patient=demo.DEMO_PATIENT)
    assert [v.label for v in eyes] == ["cnv", "drusen"]
    for f, vol in zip(files, eyes):
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless
        assert str(ds.PatientName) == "DEMO^Synthetic" and int(ds.NumberOfFrames) == 25
        assert ds.ImageLaterality == vol.laterality.dicom
        # the same pixels, up to a rounding step where this CPU's vector maths rounds otherwise (an AVX2
        # machine made 1 of 12.7 million pixels one level off the AVX-512 one that wrote the file)
        diff = np.abs(ds.pixel_array.astype(np.int16) - vol.bscans.astype(np.int16))
        assert diff.max() <= 1 and np.count_nonzero(diff) <= diff.size // 100_000
