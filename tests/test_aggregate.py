"""Per-eye decision rules (DESIGN.md 'Aggregation'), table-driven on hand-built VolumeResults."""

from __future__ import annotations

import numpy as np
import pytest

from core.aggregate import decide, evaluate_eyes, eye_scores, top_k
from core.modelcard import Thresholds
from core.results import Urgency, VolumeResult
from core.volume import Laterality, OctVolume, PatientInfo

CLASSES = ["normal", "drusen", "cnv"]


def vr_of(rows: list[tuple[float, float]], gradable: list[bool] | None = None, classes=CLASSES,
          label: str | None = None) -> VolumeResult:
    """A VolumeResult whose B-scan i has drusen / cnv probabilities rows[i] (normal = the rest)."""
    probs = np.array([[1 - d - c, d, c] for d, c in rows], np.float32)
    n = len(rows)
    g = np.ones(n, bool) if gradable is None else np.array(gradable, bool)
    vol = OctVolume(np.zeros((n, 8, 8), np.uint8), laterality=Laterality.OS, patient=PatientInfo("P7"), label=label)
    reasons = ["" if ok else "low signal (retina too dim to grade)" for ok in g]
    return VolumeResult(vol, list(classes), probs, None, g, reasons)


TH = Thresholds(urgent={"cnv": 0.5}, routine={"drusen": 0.5}, review_margin=0.1, top_k_fraction=0.1,
                min_gradable=5, min_gradable_fraction=0.5)


def flat(n: int, d: float, c: float) -> list[tuple[float, float]]:
    return [(d, c)] * n


# (name, rows, gradable, expected label, urgency, needs_review)
CASES = [
    ("clear normal", flat(20, 0.05, 0.05), None, "normal", Urgency.NONE, False),
    ("clear cnv", flat(20, 0.05, 0.9), None, "cnv", Urgency.URGENT, False),
    ("clear drusen", flat(20, 0.85, 0.05), None, "drusen", Urgency.ROUTINE, False),
    ("cnv beats drusen (worst case wins)", flat(10, 0.9, 0.05) + flat(10, 0.05, 0.9), None, "cnv", Urgency.URGENT,
     False),
    ("cnv exactly at threshold refers", flat(20, 0.1, 0.5), None, "cnv", Urgency.URGENT, True),
    ("cnv just below threshold", flat(20, 0.1, 0.49), None, "normal", Urgency.NONE, True),
    ("margin boundary is exclusive (0.60 not review)", flat(20, 0.05, 0.6), None, "cnv", Urgency.URGENT, False),
    ("margin boundary below (0.40 not review)", flat(20, 0.05, 0.4), None, "normal", Urgency.NONE, False),
    ("inside margin below (0.41 review)", flat(20, 0.05, 0.41), None, "normal", Urgency.NONE, True),
    ("drusen review while routine", flat(20, 0.55, 0.05), None, "drusen", Urgency.ROUTINE, True),
    ("near-urgent cnv flags a routine eye", flat(20, 0.52, 0.45), None, "drusen", Urgency.ROUTINE, True),
    ("lower-tier margin ignored when urgent", flat(20, 0.2, 0.75), None, "cnv", Urgency.URGENT, False),
    # 2 of 20 B-scans with CNV: k = 2, so the top-k mean is 0.9 -> urgent although the median is normal.
    ("focal cnv found by top-k", flat(18, 0.02, 0.02) + flat(2, 0.02, 0.9), None, "cnv", Urgency.URGENT, False),
    # 1 of 20: the top-2 mean is (0.9 + 0.02) / 2 = 0.46 -> normal, review.
    ("single cnv B-scan diluted by k=2", flat(19, 0.02, 0.02) + flat(1, 0.02, 0.9), None, "normal",
     Urgency.NONE, True),
    # Ungradable B-scans never count, however high their probabilities.
    ("ungradable cnv ignored", flat(10, 0.02, 0.02) + flat(4, 0.02, 0.99), [True] * 10 + [False] * 4, "normal",
     Urgency.NONE, False),
    ("too few gradable -> rescan", flat(10, 0.02, 0.9), [True] * 4 + [False] * 6, "ungradable", Urgency.RESCAN,
     False),
    ("below gradable fraction -> rescan", flat(30, 0.02, 0.9), [True] * 14 + [False] * 16, "ungradable",
     Urgency.RESCAN, False),
    ("exactly min gradable and fraction passes", flat(10, 0.02, 0.9), [True] * 5 + [False] * 5, "cnv",
     Urgency.URGENT, False),
    ("single gradable B-scan (line scan)", flat(1, 0.9, 0.02), None, "drusen", Urgency.ROUTINE, False),
    ("single ungradable B-scan", flat(1, 0.9, 0.02), [False], "ungradable", Urgency.RESCAN, False),
]


@pytest.mark.parametrize("name,rows,gradable,label,urgency,review", CASES, ids=[c[0] for c in CASES])
def test_decision_table(name, rows, gradable, label, urgency, review):
    e = decide(vr_of(rows, gradable), TH)
    assert (e.label, e.urgency, e.needs_review) == (label, urgency, review), e.reasons
    assert e.n_bscans == len(rows)
    assert e.n_gradable == (len(rows) if gradable is None else sum(gradable))
    assert e.reasons and all(r.endswith(".") for r in e.reasons)


@pytest.mark.parametrize("n,fraction,k", [(1, 0.1, 1), (9, 0.1, 1), (10, 0.1, 1), (11, 0.1, 2), (20, 0.1, 2),
                                          (25, 0.1, 3), (128, 0.1, 13), (3, 0.5, 2), (4, 1.0, 4), (7, 0.3, 3)])
def test_top_k(n, fraction, k):
    assert top_k(n, fraction) == k


def test_scores_are_top_k_means_over_gradable_only():
    rows = [(0.1, 0.2), (0.3, 0.6), (0.2, 0.8), (0.0, 0.1), (0.9, 0.05)] * 6 + [(0.0, 1.0)]   # 31 B-scans, k=3
    gradable = [True] * 30 + [False]
    e = decide(vr_of(rows, gradable), TH)
    assert e.scores["cnv"] == pytest.approx(0.8)                   # the ungradable 1.0 is excluded
    assert e.scores["drusen"] == pytest.approx(0.9)
    assert e.scores["normal"] == pytest.approx(np.mean([0.9, 0.9, 0.9]))  # rows (0.0, 0.1): normal 0.9
    assert e.confidence == pytest.approx(0.8) and e.label == "cnv"
    # evidence: the 3 strongest CNV B-scans (0.8 at indices 2, 7, 12), strongest first, ties by index
    assert e.evidence == [2, 7, 12]
    assert e.ungradable == [30]
    assert any("mean of the top 3 of 30 gradable" in r for r in e.reasons)
    assert any("1 of 31 B-scans were ungradable" in r for r in e.reasons)


def test_evidence_of_a_normal_eye_is_its_most_normal_bscans():
    rows = [(0.1, 0.1), (0.0, 0.02), (0.2, 0.1), (0.005, 0.005), (0.3, 0.1)] * 2   # k = 1
    e = decide(vr_of(rows), TH)
    assert e.label == "normal" and e.evidence == [3]
    assert e.confidence == pytest.approx(0.99)


def test_rescan_reasons_name_the_quality_problem():
    e = decide(vr_of(flat(10, 0.0, 0.0), [True] * 2 + [False] * 8), TH)
    assert e.rescan and e.evidence == [] and e.confidence == 0.0
    assert "Only 2 of 10 B-scans are gradable" in e.reasons[0]
    assert "8 B-scans: low signal." in e.reasons
    assert e.headline.startswith("RESCAN")


def test_classes_not_in_thresholds_do_not_refer():
    classes = ["normal", "dme", "drusen", "cnv"]
    probs = np.tile(np.array([[0.05, 0.9, 0.03, 0.02]], np.float32), (10, 1))
    vr = VolumeResult(OctVolume(np.zeros((10, 8, 8), np.uint8)), classes, probs, None, np.ones(10, bool), [""] * 10)
    e = decide(vr, TH)
    assert e.urgency is Urgency.NONE and e.label == "dme"       # what the model sees, but no referral
    assert e.scores["dme"] == pytest.approx(0.9)
    assert any("not used for referral" in r for r in e.reasons) is False  # dme is the label itself
    probs[:, :2] = [[0.45, 0.5]]
    e = decide(vr, TH)
    assert e.label == "dme" and e.urgency is Urgency.NONE


def test_unused_high_class_is_mentioned():
    classes = ["normal", "dme", "cnv"]
    probs = np.tile(np.array([[0.35, 0.6, 0.05]], np.float32), (10, 1))
    vr = VolumeResult(OctVolume(np.zeros((10, 8, 8), np.uint8)), classes, probs, None, np.ones(10, bool), [""] * 10)
    th = Thresholds(urgent={"cnv": 0.5}, routine={})
    e = decide(vr, th)
    assert e.label == "dme"                                    # best of the non-referring classes
    th = Thresholds(urgent={"cnv": 0.5}, routine={"drusen": 0.5})   # a class the model does not have
    assert decide(vr, th).urgency is Urgency.NONE


def test_urgent_label_is_the_highest_crossed_urgent_class():
    classes = ["normal", "cnv", "mh"]
    probs = np.tile(np.array([[0.1, 0.55, 0.35]], np.float32), (10, 1))
    probs[:1] = [0.0, 0.3, 0.7]
    vr = VolumeResult(OctVolume(np.zeros((10, 8, 8), np.uint8)), classes, probs, None, np.ones(10, bool), [""] * 10)
    e = decide(vr, Thresholds(urgent={"cnv": 0.5, "mh": 0.5}, routine={}))
    assert e.label == "mh" and e.scores["mh"] == pytest.approx(0.7) and e.evidence == [0]
    assert any("Also above threshold: cnv" in r for r in e.reasons)


def test_default_thresholds_and_bad_input():
    e = decide(vr_of(flat(10, 0.1, 0.8)))
    assert e.urgency is Urgency.URGENT
    vr = vr_of(flat(4, 0.1, 0.1))
    vr.gradable = np.ones(3, bool)
    with pytest.raises(ValueError, match="gradable"):
        decide(vr)


def test_eye_scores_empty():
    assert eye_scores(np.zeros((0, 3)), CLASSES, 1) == {"normal": 0.0, "drusen": 0.0, "cnv": 0.0}


def test_evaluate_eyes_counts():
    items = [
        vr_of(flat(10, 0.05, 0.9), label="cnv"),               # urgent, correct
        vr_of(flat(10, 0.8, 0.1), label="cnv"),                # routine: referred but wrong label, not urgent
        vr_of(flat(10, 0.8, 0.1), label="drusen"),             # correct
        vr_of(flat(10, 0.05, 0.05), label="drusen"),           # missed (not referred)
        vr_of(flat(10, 0.05, 0.05), label="normal"),           # correct
        vr_of(flat(10, 0.05, 0.9), label="normal"),            # false referral
        vr_of(flat(10, 0.05, 0.05), [False] * 10, label="normal"),  # rescan
    ]
    m = evaluate_eyes(items, thresholds=TH)
    assert m["n"] == 7 and m["n_rescan"] == 1
    assert m["accuracy"] == pytest.approx(3 / 6) and m["accuracy_all"] == pytest.approx(3 / 7)
    assert m["referral_sensitivity"] == pytest.approx(3 / 4)   # cnv, cnv, drusen referred; one drusen missed
    assert m["referral_specificity"] == pytest.approx(1 / 2)
    assert m["urgent_sensitivity"] == pytest.approx(1 / 2)
    assert m["per_class"]["normal"] == {"n": 3, "correct": 1, "sensitivity": pytest.approx(1 / 3)}
    assert m["confusion"]["cnv"] == {"cnv": 1, "drusen": 1}
    assert m["confusion"]["normal"] == {"normal": 1, "cnv": 1, "ungradable": 1}
    # EyeResults and explicit truth work too
    eyes = [decide(x, TH) for x in items[:2]]
    assert evaluate_eyes(eyes, truth=["cnv", "cnv"], thresholds=TH)["accuracy"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no known label"):
        evaluate_eyes([vr_of(flat(10, 0.1, 0.1))])


def _eye_with_scores(scores):
    from core.results import EyeResult, Urgency
    from core.volume import EyeKey, Laterality

    return EyeResult(eye=EyeKey("p", "s", Laterality.OD), label="normal", urgency=Urgency.NONE, scores=scores,
                     confidence=0.0, needs_review=False, evidence=[], n_bscans=10, n_gradable=10, ungradable=[])


def test_calibrate_thresholds_separates_classes_and_keeps_sensitivity():
    from core.aggregate import calibrate_thresholds
    from core.modelcard import Thresholds

    # an over-confident drusen score: every normal eye scores 0.6-0.7, drusen eyes 0.85-0.95
    eyes, truth = [], []
    for i in range(10):
        eyes.append(_eye_with_scores({"normal": 0.9, "drusen": 0.6 + 0.01 * i, "cnv": 0.05})); truth.append("normal")
        eyes.append(_eye_with_scores({"normal": 0.3, "drusen": 0.85 + 0.01 * i, "cnv": 0.1})); truth.append("drusen")
        eyes.append(_eye_with_scores({"normal": 0.1, "drusen": 0.7, "cnv": 0.8 + 0.01 * i})); truth.append("cnv")
    new, rep = calibrate_thresholds(eyes, truth, Thresholds(), min_sensitivity=1.0)
    assert 0.69 < new.routine["drusen"] < 0.85          # between the normal and drusen eye scores
    assert rep["drusen"]["sensitivity"] == 1.0 and rep["drusen"]["specificity"] == 1.0
    assert rep["cnv"]["sensitivity"] == 1.0 and 0.1 < new.urgent["cnv"] <= 0.8
    # and deciding with the calibrated thresholds is right for every eye
    decided = ["cnv" if e.scores["cnv"] >= new.urgent["cnv"] else
               "drusen" if e.scores["drusen"] >= new.routine["drusen"] else "normal" for e in eyes]
    assert decided == truth
    # a class with no positives keeps its old threshold
    only_normal, _ = calibrate_thresholds(eyes[::3], truth[::3], Thresholds())
    assert only_normal.urgent == Thresholds().urgent and only_normal.routine == Thresholds().routine


def test_review_band_narrows_for_thresholds_near_one():
    from core.aggregate import review_margin

    assert review_margin(0.5, 0.1) == 0.1
    assert abs(review_margin(0.95, 0.1) - 0.025) < 1e-9
    assert abs(review_margin(0.1, 0.1) - 0.05) < 1e-9


@pytest.mark.parametrize("drusen, review", [(1.0, False), (0.96, True), (0.94, True), (0.90, False)])
def test_decide_uses_the_narrowed_band_for_a_high_calibrated_threshold(drusen, review):
    th = Thresholds(urgent={"cnv": 0.5}, routine={"drusen": 0.95}, review_margin=0.1)
    e = decide(vr_of(flat(10, drusen, 0.0)), th)
    assert e.needs_review is review
