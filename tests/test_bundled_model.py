"""The bundled model (resources/models/octscreen-oct2017.*): what its card must say and carry."""

from __future__ import annotations

import numpy as np

from core.inference import Screener, default_card_path
from core.modelcard import RESEARCH_WARNING, load_card, load_weights, sha256_file
from core.tiers import DEFAULT_TIERS


def test_bundled_card_credits_its_data_and_says_not_for_clinical_use():
    card = load_card(default_card_path())
    assert card.classes == ["normal", "drusen", "cnv", "dme"]
    assert not card.demo and card.warning == RESEARCH_WARNING and "not for clinical use" in card.warning
    td = card.training_data
    assert td["source"] == "oct2017" and td["licence"] == "CC BY 4.0" and "Kermany" in td["citation"]
    assert "OCT2017" in card.trained_on and "not for clinical use" in card.intended_use.lower()
    assert card.split_hash and card.reproduce.startswith("octscreen train")
    # four tiers, calibrated on validation patients
    th = card.thresholds
    assert set(th.urgent) == {"cnv"} and set(th.soon) == {"dme"} and set(th.routine) == {"drusen"}
    assert set(th.normal) == {"normal"}
    cal = card.metrics["threshold_calibration"]
    assert "validation" in cal["data"]
    assert cal["per_class"]["cnv"]["min_sensitivity"] == 0.95
    assert all(cal["per_class"][c]["min_sensitivity"] == 0.9 for c in ("dme", "drusen", "normal"))


def test_bundled_files_are_hashed_small_and_agree():
    card = load_card(default_card_path())
    total = 0
    for which in ("weights", "onnx"):
        p = card.verified_file(which)
        assert sha256_file(p) == getattr(card, f"{'weights' if which == 'weights' else 'onnx'}_sha256")
        total += p.stat().st_size
    assert total <= 40e6, f"bundled model files are {total / 1e6:.1f} MB (limit 40 MB)"
    assert load_weights(card)
    s = Screener(card)
    x = np.random.default_rng(0).standard_normal((2, 3, *card.input_size)).astype(np.float32)
    probs, cams = s.predict(x)
    assert probs.shape == (2, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert cams is not None and cams.shape[:2] == (2, 4)
    assert DEFAULT_TIERS["soon"].refers
