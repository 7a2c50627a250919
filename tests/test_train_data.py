"""Dataset readers (OCT2017, NEH, manifest, synthetic) and the training / evaluation transforms."""

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import CorruptFileError, EmptyInputError, InputError
from core.preprocess import preprocess_bscans
from core.train.data import BScanDataset, read_grey, read_manifest, read_neh, read_oct2017, synthetic_dataset
from core.train.toy import write_toy_dataset
from core.train.transforms import eval_transform, train_transform, tta_views

OCT2017 = Path("/work/shared/data/oct2017-sample")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASSES = ["normal", "drusen", "cnv"]


@pytest.mark.skipif(not OCT2017.is_dir(), reason="shared OCT2017 sample not present")
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
    assert first.label == "normal" and first.eye_label == "cnv"       # per-B-scan label from the file name
    patient = read_neh(tmp_path, CLASSES, label_mode="patient")
    first_p = [x for x in patient if x.path == first.path][0]
    assert first_p.label == "cnv"
    # rows whose label is not a model class are dropped
    assert all(x.label != "cnv" for x in read_neh(tmp_path, ["normal", "drusen"]))


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
    if OCT2017.is_dir():
        real = read_grey(next(OCT2017.glob("NORMAL/*.jpeg")))
        np.testing.assert_array_equal(eval_transform((64, 64), MEAN, STD)(real).numpy(),
                                      preprocess_bscans(real, (64, 64), MEAN, STD)[0])


def test_train_transform_augments_and_normalises():
    img = np.random.default_rng(1).integers(0, 256, size=(100, 150), dtype=np.uint8)
    t = train_transform((64, 64), MEAN, STD, "strong")
    torch.manual_seed(0)
    a, b = t(img), t(img)
    assert a.shape == (3, 64, 64) and a.dtype == torch.float32
    assert not torch.equal(a, b)                               # random
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
