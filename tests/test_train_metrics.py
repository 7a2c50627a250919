"""Fold metrics against hand-counted confusion matrices; ECE; mean +- std; the fold table."""

import json

import numpy as np
import pytest

from core.train.metrics import (
    classification_metrics,
    expected_calibration_error,
    eye_level,
    fold_table,
    save_metrics,
    summarise_folds,
)

CLASSES = ["normal", "drusen", "cnv"]


def _probs(pred, conf=0.8):
    p = np.full((len(pred), 3), (1 - conf) / 2)
    p[np.arange(len(pred)), pred] = conf
    return p


def test_metrics_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    m = classification_metrics(y, _probs(pred), CLASSES)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    d = m["per_class"]["drusen"]
    assert d["sensitivity"] == pytest.approx(1 / 2)
    assert d["specificity"] == pytest.approx(5 / 6)  # 6 non-drusen, 1 called drusen
    assert d["precision"] == pytest.approx(1 / 2)
    c = m["per_class"]["cnv"]
    assert c["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert m["macro_sensitivity"] == pytest.approx(np.mean([2 / 3, 1 / 2, 2 / 3]))
    assert 0.0 <= m["per_class"]["normal"]["auc"] <= 1.0


def test_perfect_predictions():
    y = np.array([0, 1, 2, 0, 1, 2])
    m = classification_metrics(y, _probs(y, 0.9), CLASSES)
    assert m["accuracy"] == 1.0 and m["macro_auc"] == 1.0
    assert m["ece"] == pytest.approx(0.1)  # always 90 % sure and always right


def test_ece_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.3, 0.7]])
    # bin (0.9, 1]: acc 1, conf .95 -> .05 * 2/4; bin (.5, .6]: acc 0 conf .6 -> .6/4;
    # bin (.6,.7]: acc 1 conf .7 -> .3/4
    assert expected_calibration_error(y, p) == pytest.approx(0.05 / 2 + 0.6 / 4 + 0.3 / 4)


def test_eye_level_uses_the_app_decision():
    y = np.array([0, 0, 2, 0, 0, 0, 1, 1, 1])
    probs = _probs(np.array([0, 0, 2, 0, 0, 0, 0, 0, 1]))
    keys = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    # eye a: one CNV B-scan -> top-k CNV score 0.8 >= 0.5 -> urgent CNV (argmax of mean would say normal)
    m = eye_level(y, probs, keys, CLASSES)
    assert m["n"] == 3 and m["accuracy"] == 1.0
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    # an explicit eye truth wins over the worst B-scan label
    m2 = eye_level(y, probs, keys, CLASSES, eye_truth={"a": "normal"})
    assert m2["confusion"][0][2] == 1 and m2["accuracy"] == pytest.approx(2 / 3)


def test_summary_and_table(tmp_path):
    y = np.array([0, 1, 2, 0, 1, 2])
    f1 = classification_metrics(y, _probs(y), CLASSES)
    f2 = classification_metrics(y, _probs(np.array([0, 1, 2, 0, 1, 1])), CLASSES)
    s = summarise_folds([f1, f2])
    assert s["accuracy"]["mean"] == pytest.approx((1 + 5 / 6) / 2)
    assert s["accuracy"]["std"] == pytest.approx(np.std([1, 5 / 6], ddof=1))
    # a metric undefined on one fold (NaN) is summarised over the others; undefined everywhere -> NaN
    s3 = summarise_folds([{"accuracy": 0.5, "macro_auc": float("nan")}, {"accuracy": 0.7, "macro_auc": 0.8}])
    assert s3["macro_auc"] == {"mean": pytest.approx(0.8), "std": 0.0}
    assert np.isnan(summarise_folds([{"macro_auc": float("nan")}] * 2)["macro_auc"]["mean"])
    table = fold_table({"teacher": [f1, f2]})
    assert "91.67 ± 11.79" in table
    save_metrics({"a": s}, tmp_path / "m.json", [{"fold": 1, "acc": 1.0}])
    assert json.loads((tmp_path / "m.json").read_text())["a"]["accuracy"]["mean"] == pytest.approx(11 / 12)
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == "fold,acc"


def test_eye_truth_without_labels_is_the_most_urgent_bscan_class():
    import numpy as np

    from core.train.metrics import eye_decisions

    classes = ["normal", "drusen", "cnv", "dme"]
    # one eye with a CNV and a DME B-scan: CNV (urgent) is the eye's class, although DME has the higher index
    y = np.array([2, 3, 0, 3, 1])
    probs = np.full((5, 4), 0.25)
    keys = ["a", "a", "b", "b", "b"]
    truth = {k: t for k, _, t in eye_decisions(y, probs, keys, classes)}
    assert truth == {"a": "cnv", "b": "dme"}
