"""int8 ONNX: compare_onnx against numbers computed with PyTorch, and an int8 export of a tiny trained
model that is calibrated on real B-scans and carries its measured accuracy change in the card."""

import json

import numpy as np
import pytest
import torch

from core.modelcard import ModelCard, load_card
from core.onnx_export import compare_onnx, export_onnx
from core.preprocess import preprocess_bscans
from core.train.data import read_grey, read_manifest
from core.train.loop import TrainConfig, fit, load_model_from_card
from core.train.splits import make_splits, samples_of
from tests.fixtures.toy import write_toy_dataset

SIZE = (64, 64)


def _softmax(x: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(x).double(), 1).numpy()


def test_compare_onnx_matches_pytorch_and_is_zero_against_itself(tiny_model, tiny_card_path, tmp_path):
    onnx_a = load_card(tiny_card_path).file("onnx")
    other = load_model_from_card(load_card(tiny_card_path))
    with torch.no_grad():  # a second classifier, close to the first but not equal
        head = other.get_classifier()
        head.bias += torch.tensor([0.0, 0.05, -0.05])
        head.weight.mul_(1.5)
    card = ModelCard(name="other", arch="test_efficientnet", classes=["normal", "drusen", "cnv"], input_size=SIZE)
    onnx_b = export_onnx(other, card, tmp_path / "other.onnx")
    x = np.random.default_rng(1).standard_normal((7, 3, *SIZE)).astype(np.float32)
    with torch.no_grad():
        pa, pb = _softmax(tiny_model(torch.from_numpy(x)).numpy()), _softmax(other(torch.from_numpy(x)).numpy())
    y = pa.argmax(1)
    y[3:] = (y[3:] + 1) % 3  # model a is right on exactly 3 of 7
    assert 0 < np.mean(pa.argmax(1) == pb.argmax(1)) < 1  # the two models disagree on some, not all

    same = compare_onnx(onnx_a, onnx_a, x, y, batch=3)
    assert same["n"] == 7 and same["agreement"] == 1.0
    assert same["max_abs_dprob"] == 0.0 and same["mean_abs_dprob"] == 0.0
    assert same["accuracy_fp32"] == same["accuracy_int8"] and same["accuracy_change_pp"] == 0.0

    r = compare_onnx(onnx_a, onnx_b, x, y, batch=3)
    assert r["n"] == 7
    assert r["max_abs_dprob"] == pytest.approx(np.abs(pb - pa).max(), abs=1e-4) and r["max_abs_dprob"] > 1e-3
    assert r["mean_abs_dprob"] == pytest.approx(np.abs(pb - pa).mean(), abs=1e-4)
    assert r["agreement"] == pytest.approx(np.mean(pa.argmax(1) == pb.argmax(1)))
    assert r["accuracy_fp32"] == pytest.approx(3 / 7)
    assert r["accuracy_int8"] == pytest.approx(np.mean(pb.argmax(1) == y))
    assert r["accuracy_change_pp"] == pytest.approx(100 * (r["accuracy_int8"] - r["accuracy_fp32"]))
    # an iterable of batches gives the same numbers as the array; without targets no accuracy
    it = compare_onnx(onnx_a, onnx_b, (x[i : i + 2] for i in range(0, 7, 2)), y)
    assert it == pytest.approx(r)
    assert "accuracy_fp32" not in compare_onnx(onnx_a, onnx_b, x)
    with pytest.raises(ValueError, match="targets"):
        compare_onnx(onnx_a, onnx_b, x, y[:5])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A test_efficientnet trained 2 epochs at 64 px on toy B-scans, with its train / val samples."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("int8")
    s = read_manifest(write_toy_dataset(root / "toy", patients=6, n_bscans=3))
    plan = make_splits(s, 3, seed=0, val_fraction=0.25)
    train, val = samples_of(s, plan.folds[0].train), samples_of(s, plan.folds[0].val)
    cfg = TrainConfig(
        arch="test_efficientnet",
        input_size=SIZE[0],
        epochs=2,
        batch_size=8,
        lr=3e-3,
        progress=False,
        augment="light",
        seed=3,
        name="student",
    )
    fit(cfg, train, val, root / "student", split_hash=plan.hash)
    return root / "student" / "student.json", train, val


def test_int8_export_calibrates_on_bscans_and_measures_in_the_card(trained, tmp_path, monkeypatch):
    import core.onnx_export as ox
    from training.recipes import export_student

    src, train, val = trained
    seen = {}
    real = ox.quantize_int8

    def spy(src_path, dst, calibration=None, **kw):
        seen["batches"] = list(calibration) if calibration is not None else None
        return real(src_path, dst, seen["batches"], **kw)

    monkeypatch.setattr(ox, "quantize_int8", spy)
    measured = val + train[::2]  # any list of samples; n must follow it
    path = export_student(
        src,
        tmp_path,
        "q",
        int8=True,
        calibration_samples=train,
        measure_samples=measured,
        measure_name="validation",
        n_calibration=10,
        batch=4,
    )
    card = load_card(path)
    # the card stays valid: every file matches its sha256 after the metrics were added
    for which in ("weights", "onnx", "onnx_int8"):
        card.verified_file(which)
    m = card.metrics["int8_vs_fp32"]
    assert m == json.loads(path.read_text())["metrics"]["int8_vs_fp32"]
    assert m["n"] == len(measured) and m["samples"] == "validation"
    assert m["calibration"] == {"n": 10, "source": "training B-scans"}

    # calibrated on 10 real training B-scans, preprocessed as in the clinic
    assert seen["batches"] is not None, "calibrated on random images, not on the training B-scans"
    cal = np.concatenate(seen["batches"])
    assert cal.shape == (10, 3, *SIZE) and cal.dtype == np.float32
    train_x = np.concatenate([preprocess_bscans(read_grey(s.path), SIZE, card.mean, card.std) for s in train])
    assert all(np.any(np.all(np.isclose(train_x, c, atol=1e-6), axis=(1, 2, 3))) for c in cal)

    # the fp32 accuracy is the PyTorch model's accuracy on the same B-scans
    x = np.concatenate([preprocess_bscans(read_grey(s.path), SIZE, card.mean, card.std) for s in measured])
    y = np.array([card.classes.index(s.label) for s in measured])
    with torch.no_grad():
        pred = load_model_from_card(card)(torch.from_numpy(x)).argmax(1).numpy()
    assert 0 < np.mean(pred == y) < 1  # (so that this check means something)
    assert m["accuracy_fp32"] == pytest.approx(np.mean(pred == y))
    # bookkeeping of agreement, accuracy change and |dp|
    assert m["accuracy_change_pp"] == pytest.approx(100 * (m["accuracy_int8"] - m["accuracy_fp32"]))
    assert abs(m["accuracy_int8"] - m["accuracy_fp32"]) <= 1 - m["agreement"] + 1e-12
    assert 0 <= m["mean_abs_dprob"] <= m["max_abs_dprob"] <= 1
    again = compare_onnx(card.file("onnx"), card.file("onnx_int8"), x, y)
    assert {k: m[k] for k in again} == pytest.approx(again)


def test_export_without_int8_adds_no_measurement(trained, tmp_path):
    from training.recipes import export_student

    src, train, val = trained
    card = load_card(export_student(src, tmp_path, "f", calibration_samples=train, measure_samples=val))
    assert "int8_vs_fp32" not in card.metrics and not card.onnx_int8_file
