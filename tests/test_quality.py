"""Gradability: real OCT2017 B-scans and synthetic volumes pass; crafted bad frames fail, each for
the right reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.quality import DEFAULT_LIMITS, QualityLimits, assess, assess_bscan, measure
from core.volume import OctVolume

SAMPLE = Path(__file__).parent / "data" / "oct2017-sample"  # committed, CC BY 4.0 (tests/data/README.md)
REAL = sorted(SAMPLE.glob("*/*.jpeg"))


def _real(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def test_sample_data_is_there():
    assert len(REAL) >= 40


def test_every_real_oct2017_bscan_is_gradable():
    reasons = {p.name: assess_bscan(_real(p)) for p in REAL}
    assert {k: v for k, v in reasons.items() if v} == {}


def test_synthetic_volumes_are_gradable(make_volume):
    for dtype in (np.uint8, np.uint16):
        ok, reasons = assess(make_volume(n=6, h=200, w=256, seed=5, dtype=dtype))
        assert ok.all(), reasons


@pytest.fixture(scope="module")
def good(make_bscans) -> np.ndarray:
    return make_bscans(1, 248, 256, seed=11)[0]


def _bad_frames(good: np.ndarray) -> dict[str, tuple[np.ndarray, str]]:
    rng = np.random.default_rng(0)
    h, w = good.shape
    f = good.astype(np.float32)
    frames = {
        "all black": (np.zeros_like(good), "blank"),
        "constant grey": (np.full_like(good, 117), "blank"),
        "gain far too high": (np.clip(f * 4, 0, 255).astype(np.uint8), "saturated"),
        "blink (dim)": (np.clip(f / 8 + rng.gamma(4, 0.25, good.shape) * 6, 0, 255).astype(np.uint8), "low signal"),
        "speckle only": (np.clip(rng.gamma(4, 0.25, good.shape) * 40, 0, 255).astype(np.uint8), "low signal"),
    }
    pad = good.copy()
    pad[:, int(0.35 * w) :] = 255  # white registration fill over 65 %
    frames["white registration fill"] = (pad, "registration border")
    pad = good.copy()
    pad[: int(0.6 * h)] = 0  # shifted down: black padding over 60 %
    frames["black padding"] = (pad, "registration border")
    crop = np.clip(
        np.where(np.arange(w)[None, :] < int(0.7 * w), 18.0, f) + rng.normal(0, 4, good.shape), 0, 255
    ).astype(np.uint8)  # retina only in the right 30 %
    frames["retina cut off"] = (crop, "too little retina")
    return frames


@pytest.mark.parametrize(
    "name",
    [
        "all black",
        "constant grey",
        "gain far too high",
        "blink (dim)",
        "speckle only",
        "white registration fill",
        "black padding",
        "retina cut off",
    ],
)
def test_bad_frames_fail_with_the_right_reason(good, name):
    frame, expected = _bad_frames(good)[name]
    assert assess_bscan(good) == ""
    reason = assess_bscan(frame)
    assert expected in reason, f"{name}: got {reason!r}"


def test_real_bscan_with_most_of_it_padded_fails():
    img = _real(SAMPLE / "NORMAL" / "NORMAL-2082689-1.jpeg").copy()
    assert assess_bscan(img) == ""
    img[:, : int(0.6 * img.shape[1])] = 255
    assert "registration border" in assess_bscan(img)


def test_16bit_saturation_is_detected(make_bscans):
    b = make_bscans(1, 128, 160, seed=2, dtype=np.uint16)[0]
    assert assess_bscan(b) == ""
    hot = np.clip(b.astype(np.float32) * 4, 0, 4095).astype(np.uint16)  # a 12-bit device clipping
    assert "saturated" in assess_bscan(hot)


def test_assess_keeps_order_and_limits_are_configurable(good):
    vol = OctVolume(np.stack([good, np.zeros_like(good), good]))
    ok, reasons = assess(vol)
    assert ok.tolist() == [True, False, True] and reasons[0] == reasons[2] == "" and "blank" in reasons[1]
    q = measure(good)
    strict = QualityLimits(low_signal=q.signal + 0.01)  # just above this frame's signal
    assert "low signal" in assess_bscan(good, strict)
    assert DEFAULT_LIMITS.low_signal < q.signal


def test_measure_rejects_non_images_and_assess_marks_them_ungradable():
    with pytest.raises(ValueError, match="2-D"):
        measure(np.zeros((4, 4), np.uint8))
    ok, reasons = assess(OctVolume(np.full((2, 4, 6), 100, np.uint8)))
    assert not ok.any() and all("cannot be graded" in r for r in reasons)


def test_a_dimmed_frame_in_a_volume_is_low_signal_relative_to_the_others(make_bscans):
    b = make_bscans(8, 128, 160, seed=4)
    dim = b.copy()
    dim[5] = (b[5].astype(np.float32) * 0.5).astype(np.uint8)  # a blink: half the brightness
    assert assess_bscan(dim[5]) == ""  # still readable on its own ...
    ok, reasons = assess(OctVolume(dim))
    assert ok.tolist() == [i != 5 for i in range(8)]  # ... but clearly dimmer than the cube
    assert "compared with the rest of the volume" in reasons[5]
    assert assess(OctVolume(dim[4:7]))[0].all()  # too few B-scans for the relative rule


def test_simulated_blinks_are_flagged_and_good_frames_kept():
    from core.synthetic import simulate_volume

    for seed in range(6, 40):  # the first volume with simulated blinks
        v = simulate_volume("normal", n_bscans=25, seed=seed, height=248, width=256)
        if blinks := v.extra.get("low_signal_frames"):
            break
    assert blinks, "the simulator produced no blinks"
    ok, reasons = assess(v)
    assert not ok[blinks].any()
    assert ok[[i for i in range(25) if i not in blinks]].all()


def test_fast_percentile_and_histogram_quantiles_match_numpy():
    from core.quality import _hist_quantiles, _histogram, _percentile

    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 17, 256):
        x = rng.random(n).astype(np.float32)
        assert _percentile(x, 90.0) == pytest.approx(float(np.percentile(x, 90)), abs=1e-6)
    img = rng.integers(0, 256, (64, 80), dtype=np.uint8)
    where = rng.random(img.shape) < 0.7
    np.testing.assert_array_equal(_histogram(img, where), np.bincount(img[where], minlength=256))
    (median,) = _hist_quantiles(_histogram(img), (0.5,))
    assert median == float(np.percentile(img, 50, method="lower")) / 255.0
