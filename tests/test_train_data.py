"""Dataset readers (OCT2017, NEH folders and data_information.csv, manifest, synthetic) and the training /
evaluation transforms."""

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import CorruptFileError, EmptyInputError, FileMissingError, InputError
from core.preprocess import preprocess_bscans
from core.train.data import (
    BScanDataset,
    load_samples,
    read_grey,
    read_manifest,
    read_neh,
    read_neh_csv,
    read_oct2017,
    synthetic_dataset,
)
from core.train.transforms import eval_transform, train_transform, tta_views
from tests.fixtures.toy import write_toy_dataset

OCT2017 = Path(__file__).parent / "data" / "oct2017-sample"  # committed, CC BY 4.0 (tests/data/README.md)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASSES = ["normal", "drusen", "cnv"]


def test_oct2017_reader_on_real_sample():
    s = read_oct2017(OCT2017, classes=CLASSES)
    assert {x.label for x in s} == set(CLASSES)
    cnv = [x for x in s if x.path.name == "CNV-659864-2.jpeg"][0]
    assert cnv.label == "cnv" and cnv.group == "oct2017/659864"
    img = read_grey(cnv.path)
    assert img.dtype == np.uint8 and img.ndim == 2 and img.shape[0] > 100
    # the same patient's two B-scans share one group
    assert sum(x.group == "oct2017/659864" for x in s) == 2


def test_neh_reader_groups_and_labels(tmp_path):
    write_toy_dataset(tmp_path, patients=6, n_bscans=3)
    (tmp_path / "manifest.csv").unlink()
    bscan = read_neh(tmp_path, CLASSES)
    # patient ids restart per class folder ('001' in CNV, DRUSEN, NORMAL): groups must still differ
    assert {"CNV/001", "DRUSEN/001", "NORMAL/001"} <= {x.group for x in bscan}
    first = [x for x in bscan if x.group == "CNV/001" and x.eye == "OD" and x.path.name.startswith("000_")][0]
    assert first.label == "normal" and first.eye_label == "cnv"  # per-B-scan label from the file name
    patient = read_neh(tmp_path, CLASSES, label_mode="patient")
    first_p = [x for x in patient if x.path == first.path][0]
    assert first_p.label == "cnv"
    # rows whose label is not a model class are dropped
    assert all(x.label != "cnv" for x in read_neh(tmp_path, ["normal", "drusen"]))


# A tiny NEH tree: ``tmp/data_information.csv`` next to the image root ``tmp/NEH_UT_2021RetinalOCTDataset``.
# File names carry no label, so labels can only come from the CSV. Disk path -> (Class, Patient ID, Label,
# Directory as the CSV spells it).
NEH_ROWS = [
    ("NORMAL/1/OD/b0.png", "NORMAL", "1", "NORMAL", "NORMAL/1/OD/b0.png"),
    ("NORMAL/1/OS/b0.png", "NORMAL", "1", "NORMAL", "NORMAL/1/OS/b0.png"),
    ("NORMAL/2/Normal/b0.png", "NORMAL", "2", "NORMAL", "NORMAL/2/NOrmal/b0.png"),  # case differs on disk
    ("DRUSEN/1/OD/b0.png", "DRUSEN", "1", "NORMAL", "DRUSEN/1/OD/b0.png"),  # a normal B-scan
    ("DRUSEN/1/OD/b1.png", "DRUSEN", "1", "DRUSEN", "DRUSEN/1/OD/b1.png"),
    ("CNV/1/OS/b0.png", "CNV", "1", "CNV", "cnv/1/os/b0.png"),  # lower-case folders
    ("CNV/1/OS/b1.png", "CNV", "1", "DRUSEN", "CNV\\1\\OS\\b1.png"),  # Windows separators
]


def _neh_tree(tmp_path, header=("", " patient ID", "class", "LABEL", "Directory "), rows=None):
    from PIL import Image

    root = tmp_path / "NEH_UT_2021RetinalOCTDataset"
    for disk, *_ in NEH_ROWS + [("CNV/1/OS/extra_NORMAL.png",)]:  # extra: on disk, not in the CSV
        (root / disk).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 12), 7, np.uint8)).save(root / disk)
    lines = [",".join(header)]
    lines += [",".join([str(i), pid, cls, lab, dr]) for i, (_, cls, pid, lab, dr) in enumerate(NEH_ROWS)]
    lines += rows or []
    (tmp_path / "data_information.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _by_path(samples, root):
    return {x.path.relative_to(root).as_posix(): x for x in samples}


def test_neh_csv_gives_labels_patients_and_eyes(tmp_path):
    root = _neh_tree(tmp_path)
    s = _by_path(read_neh(root, CLASSES), root)  # the CSV one folder up is found
    assert set(s) == {disk for disk, *_ in NEH_ROWS}  # CSV rows only, paths as on disk ("NOrmal" -> "Normal")
    assert all((root / p).is_file() for p in s)
    # Patient ID 1 exists in three classes: three patients
    assert {x.group for x in s.values()} == {"NORMAL/1", "NORMAL/2", "DRUSEN/1", "CNV/1"}
    normal_in_drusen = s["DRUSEN/1/OD/b0.png"]
    assert (normal_in_drusen.label, normal_in_drusen.eye_label) == ("normal", "drusen")
    assert (normal_in_drusen.eye, normal_in_drusen.volume) == ("OD", "DRUSEN/1/OD")
    assert (s["CNV/1/OS/b0.png"].eye, s["CNV/1/OS/b0.png"].volume) == ("OS", "CNV/1/OS")
    assert s["CNV/1/OS/b1.png"].label == "drusen" and s["CNV/1/OS/b1.png"].group == "CNV/1"
    # no OD/OS folder: no eye, the volume is the patient
    assert (s["NORMAL/2/Normal/b0.png"].eye, s["NORMAL/2/Normal/b0.png"].volume) == ("", "NORMAL/2")
    # the CSV in the image root itself is found too, and an explicit path works from anywhere
    (tmp_path / "data_information.csv").rename(root / "data_information.csv")
    assert set(_by_path(read_neh(root, CLASSES), root)) == set(s)
    (root / "data_information.csv").rename(tmp_path / "elsewhere.csv")
    assert set(_by_path(read_neh(root, CLASSES, csv_path=tmp_path / "elsewhere.csv"), root)) == set(s)


def test_neh_csv_label_mode_worst_case_and_classes(tmp_path):
    root = _neh_tree(tmp_path)
    patient = _by_path(read_neh(root, CLASSES, label_mode="patient"), root)
    assert patient["DRUSEN/1/OD/b0.png"].label == "drusen" and patient["CNV/1/OS/b1.png"].label == "cnv"
    assert all(x.label == x.eye_label for x in patient.values())
    worst = read_neh(root, CLASSES, worst_case=True)  # only rows with Class == Label
    assert set(_by_path(worst, root)) == {
        "NORMAL/1/OD/b0.png",
        "NORMAL/1/OS/b0.png",
        "NORMAL/2/Normal/b0.png",
        "DRUSEN/1/OD/b1.png",
        "CNV/1/OS/b0.png",
    }
    # the class filter applies to the label used: a drusen B-scan of a CNV patient stays without "cnv"
    two = _by_path(read_neh(root, ["normal", "drusen"]), root)
    assert "CNV/1/OS/b1.png" in two and "CNV/1/OS/b0.png" not in two
    assert not any(x.group == "CNV/1" for x in read_neh(root, ["normal", "drusen"], label_mode="patient"))
    csv_path = tmp_path / "data_information.csv"
    assert len(read_neh_csv(csv_path, root, CLASSES, worst_case=True)) == len(worst)
    with pytest.raises(EmptyInputError, match="data_information.csv"):
        read_neh_csv(csv_path, root, ["dme"])


def test_neh_csv_errors_name_the_file_and_line(tmp_path):
    root = _neh_tree(tmp_path, header=("Patient ID", "Class", "Label", "Path"))
    with pytest.raises(InputError, match=r"data_information.csv: line 1: missing column\(s\) Directory"):
        read_neh(root, CLASSES)
    # a blank line and a quoted two-line field before it: the line counts as in a text editor
    root = _neh_tree(tmp_path, rows=["", '"x\ny",1,NORMAL,NORMAL,NORMAL/1/OD/b0.png', "99,7,CNV,CNV,CNV/7/OD/gone.png"])
    with pytest.raises(FileMissingError, match=r"data_information.csv: line 12: image 'CNV/7/OD/gone.png' not found"):
        read_neh(root, CLASSES)
    root = _neh_tree(tmp_path, rows=["99, ,CNV,CNV,CNV/1/OS/b0.png"])
    with pytest.raises(InputError, match=r"data_information.csv: line 9: empty Patient ID"):
        read_neh(root, CLASSES)
    (tmp_path / "data_information.csv").write_bytes(b"Patient ID,Class\n\xff\xfe\x00bad\n")
    with pytest.raises(CorruptFileError, match="data_information.csv"):
        read_neh(root, CLASSES)
    with pytest.raises(FileMissingError, match="nothere.csv"):
        read_neh(root, CLASSES, csv_path=tmp_path / "nothere.csv")


def test_neh_without_csv_reads_folders_and_options_pass_through(tmp_path):
    from training.recipes import _load

    root = _neh_tree(tmp_path)
    folders = _by_path(read_neh(root, CLASSES, csv_path=False), root)
    assert "CNV/1/OS/extra_NORMAL.png" in folders and folders["CNV/1/OS/extra_NORMAL.png"].label == "normal"
    assert folders["DRUSEN/1/OD/b0.png"].label == "drusen"  # no label in the name: the class folder's
    (tmp_path / "data_information.csv").unlink()
    assert set(_by_path(read_neh(root, CLASSES), root)) == set(folders)
    # worst case on folders: the file-name label must equal the class folder
    assert "CNV/1/OS/extra_NORMAL.png" not in _by_path(read_neh(root, CLASSES, worst_case=True), root)
    # the recipe's data options reach the reader
    root = _neh_tree(tmp_path)
    data = {"source": "neh", "root": str(root), "label_mode": "bscan", "neh_csv": None, "worst_case": True}
    assert len(_load(data, CLASSES)) == 5
    assert len(_load({**data, "neh_csv": False, "worst_case": False}, CLASSES)) == len(folders)
    with pytest.raises(ValueError, match="NEH"):
        load_samples("synthetic", cache_dir=tmp_path, worst_case=True)


def test_manifest_reader_and_errors(tmp_path):
    m = write_toy_dataset(tmp_path / "d", patients=3, n_bscans=2)
    s = read_manifest(m, CLASSES)
    assert len(s) == 3 * 2 * 2 and all(x.path.is_file() for x in s)
    assert {x.volume for x in s} == {f"{c}/001/{e}" for c in ("NORMAL", "DRUSEN", "CNV") for e in ("OD", "OS")}
    bad = tmp_path / "bad.csv"
    bad.write_text("file,cls\na.png,normal\n")
    with pytest.raises(InputError, match="bad.csv"):
        read_manifest(bad)
    with pytest.raises(EmptyInputError):
        read_manifest(m, ["dme"])


def test_synthetic_source_is_generated_once(tmp_path):
    a = synthetic_dataset(tmp_path, patients=3, seed=5, n_bscans=3, height=64, width=64)
    assert {x.label for x in a} <= set(CLASSES) and len(a) == 3 * 2 * 3
    stamp = a[0].path.stat().st_mtime_ns
    b = synthetic_dataset(tmp_path, patients=3, seed=5, n_bscans=3, height=64, width=64)
    assert [x.path for x in b] == [x.path for x in a] and b[0].path.stat().st_mtime_ns == stamp


def test_corrupt_image_names_the_file(tmp_path):
    p = tmp_path / "broken.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(CorruptFileError, match="broken.png"):
        read_grey(p)


def test_eval_transform_equals_preprocess_bscans():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(120, 200), dtype=np.uint8)
    t = eval_transform((64, 96), MEAN, STD)(img)
    np.testing.assert_array_equal(t.numpy(), preprocess_bscans(img, (64, 96), MEAN, STD)[0])
    real = read_grey(next(OCT2017.glob("NORMAL/*.jpeg")))
    for aspect in ("squash", "crop", "letterbox"):
        np.testing.assert_array_equal(
            eval_transform((64, 64), MEAN, STD, aspect)(real).numpy(),
            preprocess_bscans(real, (64, 64), MEAN, STD, aspect)[0],
        )


def test_aspect_policies_keep_or_fill_the_shape():
    from core.preprocess import fit_aspect

    wide = np.zeros((100, 300), np.uint8)
    wide[:, 100:200] = 200  # a bright central third
    assert fit_aspect(wide, (64, 64), "squash") is wide
    crop = fit_aspect(wide, (64, 64), "crop")
    assert crop.shape == (100, 100) and (crop == 200).all()  # the central square only
    box = fit_aspect(wide, (64, 64), "letterbox")
    assert box.shape == (300, 300) and (box[:100] == 0).all() and (box[200:] == 0).all()
    np.testing.assert_array_equal(box[100:200], wide)  # the whole B-scan, padded black
    tall = np.ones((300, 100), np.uint8)
    assert fit_aspect(tall, (64, 64), "crop").shape == (100, 100)
    assert fit_aspect(tall, (64, 64), "letterbox").shape == (300, 300)
    assert fit_aspect(wide, (32, 96), "crop").shape == (100, 300)  # already 1:3
    with pytest.raises(ValueError, match="aspect policy"):
        fit_aspect(wide, (64, 64), "stretch")
    # the three give different model inputs for a wide real B-scan
    real = read_grey(next(OCT2017.glob("CNV/*.jpeg")))
    outs = {a: preprocess_bscans(real, (64, 64), MEAN, STD, a) for a in ("squash", "crop", "letterbox")}
    assert all(o.shape == (1, 3, 64, 64) for o in outs.values())
    assert not np.allclose(outs["squash"], outs["crop"]) and not np.allclose(outs["squash"], outs["letterbox"])


def test_lateral_window_varies_the_lateral_scale():
    import torch

    img = np.tile(np.arange(400, dtype=np.uint8) % 2 * 255, (100, 1))  # 1-px stripes: scale shows in the mean
    plain = train_transform((32, 32), MEAN, STD, "light")
    windowed = train_transform((32, 32), MEAN, STD, "light", lateral_scale=(0.3, 0.3), lateral_p=1.0)
    torch.manual_seed(0)
    a = plain(img)
    torch.manual_seed(0)
    b = windowed(img)
    assert a.shape == b.shape == (3, 32, 32)
    # a 120-px window squashed to 32 px averages fewer stripes per pixel than the whole 400-px width: the
    # same content at another lateral scale, so the two inputs differ
    assert not torch.allclose(a, b)
    never = train_transform((32, 32), MEAN, STD, "light", lateral_scale=(0.3, 0.3), lateral_p=0.0)
    torch.manual_seed(0)
    assert torch.allclose(never(img), a)


def test_train_transform_augments_and_normalises():
    img = np.random.default_rng(1).integers(0, 256, size=(100, 150), dtype=np.uint8)
    t = train_transform((64, 64), MEAN, STD, "strong")
    torch.manual_seed(0)
    a, b = t(img), t(img)
    assert a.shape == (3, 64, 64) and a.dtype == torch.float32
    assert not torch.equal(a, b)  # random
    # grey stays grey: the three channels are one image under three normalisations
    torch.testing.assert_close(a[1] * STD[1] + MEAN[1], a[2] * STD[2] + MEAN[2], atol=1e-5, rtol=0)
    none = train_transform((64, 64), MEAN, STD, "none")(img)
    np.testing.assert_array_equal(none.numpy(), preprocess_bscans(img, (64, 64), MEAN, STD)[0])
    with pytest.raises(ValueError):
        train_transform((64, 64), MEAN, STD, "extreme")


def test_tta_views():
    x = torch.randn(2, 3, 32, 32)
    views = tta_views(x)
    assert len(views) == 5 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x) and torch.equal(views[1], x.flip(-1))


def test_dataset_items(tmp_path):
    s = read_manifest(write_toy_dataset(tmp_path, patients=3, n_bscans=2))
    ds = BScanDataset(s, CLASSES, eval_transform((32, 32), MEAN, STD))
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y == CLASSES.index(s[0].label)
    assert list(ds.targets) == [CLASSES.index(v.label) for v in s]
    with pytest.raises(ValueError, match="outside the classes"):
        BScanDataset(s, ["normal", "drusen"], eval_transform((32, 32), MEAN, STD))


def test_datasets_pickle_for_spawned_workers(tmp_path):
    import pickle

    s = read_manifest(write_toy_dataset(tmp_path, patients=3, n_bscans=1))
    for t in (eval_transform((32, 32), MEAN, STD), train_transform((32, 32), MEAN, STD, "strong")):
        ds = pickle.loads(pickle.dumps(BScanDataset(s, CLASSES, t)))
        x, y = ds[1]
        assert x.shape == (3, 32, 32) and y == CLASSES.index(s[1].label)
