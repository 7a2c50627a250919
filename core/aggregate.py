"""Per-eye decision from per-B-scan results (DESIGN.md, 'Aggregation').

1. Ungradable B-scans are excluded. Too few gradable ones (fewer than ``min_gradable``, or less
   than ``min_gradable_fraction`` of the volume) -> RESCAN, label 'ungradable'. A volume with fewer
   B-scans than ``min_gradable`` (a single line scan, one JPEG) needs all of them gradable.
2. Eye score of every class = mean of its top-k B-scan probabilities over the gradable B-scans,
   k = max(1, ceil(top_k_fraction * n_gradable)).
3. Worst case wins: an urgent class (``thresholds.urgent``) whose score reaches its threshold ->
   URGENT (the highest such score decides the label); else a routine class -> ROUTINE; else no
   referral (NONE), labelled with the best-scoring class that no threshold names ('normal').
   Classes not named in the thresholds are reported in the scores but never refer.
4. needs_review when a score lies within the review margin of a threshold that could change the
   decision (the decisive tier and the tiers above it). The margin of threshold t is
   ``min(review_margin, t / 2, (1 - t) / 2)``: a calibrated threshold near 0 or 1 gets a band that
   still leaves room on both sides (with t = 0.95, a score of 1.0 is not 'close').
5. Evidence = the top-k gradable B-scans of the decisive class, strongest first.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from core.modelcard import Thresholds
from core.results import EyeResult, Urgency, VolumeResult

__all__ = ["calibrate_thresholds", "decide", "top_k", "eye_scores", "evaluate_eyes", "UNGRADABLE"]

UNGRADABLE = "ungradable"
_EPS = 1e-6   # float32 probabilities: compare scores and thresholds to 6 decimals (0.4 is 0.4000000060)


def top_k(n_gradable: int, fraction: float) -> int:
    """k = max(1, ceil(fraction * n_gradable)), never more than n_gradable (when n_gradable >= 1)."""
    k = max(1, math.ceil(round(fraction * n_gradable, 9)))
    return min(k, n_gradable) if n_gradable > 0 else k


def review_margin(threshold: float, margin: float) -> float:
    """The review band half-width around ``threshold``: ``margin``, narrowed near 0 and 1."""
    return min(margin, threshold / 2, (1 - threshold) / 2)


def eye_scores(probs: np.ndarray, classes: Sequence[str], k: int) -> dict[str, float]:
    """Mean of the top-k probabilities per class (``probs`` holds only the gradable B-scans)."""
    if probs.shape[0] == 0:
        return {c: 0.0 for c in classes}
    top = -np.sort(-probs, axis=0)[:k]
    return {c: float(top[:, i].mean()) for i, c in enumerate(classes)}


def _evidence(probs: np.ndarray, index: np.ndarray, col: int, k: int) -> list[int]:
    """Original B-scan indices of the top-k probabilities in column ``col``, strongest first
    (ties: the earlier B-scan first)."""
    order = np.argsort(-probs[:, col], kind="stable")[:k]
    return [int(index[i]) for i in order]


def _fmt(cls: str, score: float) -> str:
    return f"{cls} score {score:.2f}"


def _rescan(vr: VolumeResult, th: Thresholds, gradable: np.ndarray, required: int) -> EyeResult:
    n, n_ok = vr.n, int(gradable.sum())
    bad = [i for i in range(n) if not gradable[i]]
    reasons = [f"Only {n_ok} of {n} B-scans are gradable; at least {required} and "
               f"{100 * th.min_gradable_fraction:.0f} % are needed to decide."]
    causes = Counter(vr.quality_reasons[i].split(" (")[0] for i in bad if i < len(vr.quality_reasons))
    for cause, count in causes.most_common():
        if cause:
            reasons.append(f"{count} B-scan{'s' if count != 1 else ''}: {cause}.")
    k = top_k(n_ok, th.top_k_fraction)
    scores = eye_scores(vr.probs[gradable], vr.classes, k)
    return EyeResult(eye=vr.volume.eye, label=UNGRADABLE, urgency=Urgency.RESCAN, scores=scores, confidence=0.0,
                     needs_review=False, evidence=[], n_bscans=n, n_gradable=n_ok, ungradable=bad,
                     reasons=reasons, volume_result=vr)


def decide(vr: VolumeResult, thresholds: Thresholds | None = None) -> EyeResult:
    """The per-eye decision for one volume's per-B-scan results (module docstring for the rules).

    ``thresholds`` default to ``Thresholds()``; pass the model card's thresholds in practice.
    """
    th = thresholds if thresholds is not None else Thresholds()
    n = vr.n
    gradable = np.asarray(vr.gradable, bool).reshape(-1)
    if gradable.shape[0] != n:
        raise ValueError(f"gradable has {gradable.shape[0]} entries for {n} B-scans")
    n_ok = int(gradable.sum())
    required = max(1, min(int(th.min_gradable), n))
    if n_ok < required or n_ok < th.min_gradable_fraction * n - _EPS:
        return _rescan(vr, th, gradable, required)

    index = np.flatnonzero(gradable)
    probs = np.asarray(vr.probs, np.float64)[gradable]
    k = top_k(n_ok, th.top_k_fraction)
    scores = eye_scores(probs, vr.classes, k)
    classes = list(vr.classes)
    urgent = {c: float(t) for c, t in th.urgent.items() if c in scores}
    routine = {c: float(t) for c, t in th.routine.items() if c in scores and c not in urgent}
    how = f"mean of the top {k} of {n_ok} gradable B-scans"

    def crossed(tier: dict[str, float]) -> list[str]:
        hits = [c for c, t in tier.items() if scores[c] >= t - _EPS]
        return sorted(hits, key=lambda c: -scores[c])

    reasons: list[str] = []
    if hits := crossed(urgent):
        urgency, label, checked = Urgency.URGENT, hits[0], [urgent]
        reasons.append(f"{_fmt(label, scores[label])} reaches the urgent-referral threshold "
                       f"{urgent[label]:.2f} ({how}).")
    elif hits := crossed(routine):
        urgency, label, checked = Urgency.ROUTINE, hits[0], [urgent, routine]
        reasons.append(f"{_fmt(label, scores[label])} reaches the routine-referral threshold "
                       f"{routine[label]:.2f} ({how}).")
    else:
        others = [c for c in classes if c not in urgent and c not in routine]
        label = max(others, key=lambda c: scores[c]) if others else "normal"
        urgency, checked = Urgency.NONE, [urgent, routine]
        below = [f"{_fmt(c, scores[c])} < {t:.2f}" for tier in checked for c, t in tier.items()]
        reasons.append("No referral threshold reached" + (f" ({'; '.join(below)})" if below else "") + f"; {how}.")
    for c, t in (urgent | routine).items():
        if c != label and scores[c] >= t - _EPS:
            reasons.append(f"Also above threshold: {_fmt(c, scores[c])} (threshold {t:.2f}).")

    near = [(c, t) for tier in checked for c, t in tier.items()
            if round(abs(scores[c] - t), 6) < review_margin(t, th.review_margin)]
    for c, t in near:
        reasons.append(f"Review advised: {_fmt(c, scores[c])} is within {review_margin(t, th.review_margin):.2f} "
                       f"of its threshold {t:.2f}.")
    unused = [c for c in classes if c not in urgent and c not in routine and c != label and scores[c] >= 0.5]
    for c in unused:
        reasons.append(f"{_fmt(c, scores[c])} (this class is not used for referral by the model card).")
    if n_ok < n:
        reasons.append(f"{n - n_ok} of {n} B-scans were ungradable and excluded.")

    col = classes.index(label) if label in classes else int(np.argmax([scores[c] for c in classes]))
    return EyeResult(eye=vr.volume.eye, label=label, urgency=urgency, scores=scores, confidence=scores.get(label, 0.0),
                     needs_review=bool(near), evidence=_evidence(probs, index, col, k), n_bscans=n, n_gradable=n_ok,
                     ungradable=[int(i) for i in np.flatnonzero(~gradable)], reasons=reasons, volume_result=vr)


def evaluate_eyes(items: Iterable[EyeResult | VolumeResult], truth: Sequence[str] | None = None,
                  thresholds: Thresholds | None = None, referable: Sequence[str] | None = None) -> dict:
    """Per-eye metrics for eyes with known labels.

    items: EyeResults, or VolumeResults (decided here with ``thresholds``). truth: the true eye
    label of each item; by default the volume's ``label``. referable: classes that should be
    referred (default: those named in the thresholds' urgent and routine tiers).

    Returns a dict: n, n_rescan, accuracy (label == truth over the eyes that were decided),
    accuracy_all (rescans counted as wrong), per_class {cls: {n, correct, sensitivity}},
    confusion {truth: {predicted: count}}, referral_sensitivity (referable eyes referred, rescans
    excluded), referral_specificity (other eyes not referred), urgent_sensitivity (eyes of an
    urgent class that got URGENT).
    """
    th = thresholds if thresholds is not None else Thresholds()
    eyes = [decide(x, th) if isinstance(x, VolumeResult) else x for x in items]
    if truth is None:
        truth = []
        for e in eyes:
            label = e.volume_result.volume.label if e.volume_result is not None else None
            if label is None:
                raise ValueError(f"eye {e.eye} has no known label; pass truth=")
            truth.append(label)
    truth = list(truth)
    if len(truth) != len(eyes):
        raise ValueError(f"{len(truth)} labels for {len(eyes)} eyes")
    refer = set(referable) if referable is not None else set(th.urgent) | set(th.routine)
    decided = [(e, t) for e, t in zip(eyes, truth, strict=True) if not e.rescan]
    confusion: dict[str, dict[str, int]] = {}
    for e, t in zip(eyes, truth, strict=True):
        row = confusion.setdefault(t, {})
        row[e.label] = row.get(e.label, 0) + 1
    per_class = {}
    for c in sorted(set(truth)):
        n_c = sum(1 for t in truth if t == c)
        correct = sum(1 for e, t in zip(eyes, truth, strict=True) if t == c and e.label == c)
        per_class[c] = {"n": n_c, "correct": correct, "sensitivity": correct / n_c if n_c else float("nan")}

    def rate(pairs: list[tuple[EyeResult, str]], ok) -> float:
        return sum(1 for e, t in pairs if ok(e, t)) / len(pairs) if pairs else float("nan")

    referred = (Urgency.URGENT, Urgency.ROUTINE)
    return {
        "n": len(eyes),
        "n_rescan": len(eyes) - len(decided),
        "accuracy": rate(decided, lambda e, t: e.label == t),
        "accuracy_all": rate(list(zip(eyes, truth, strict=True)), lambda e, t: e.label == t),
        "per_class": per_class,
        "confusion": confusion,
        "referral_sensitivity": rate([p for p in decided if p[1] in refer], lambda e, t: e.urgency in referred),
        "referral_specificity": rate([p for p in decided if p[1] not in refer],
                                     lambda e, t: e.urgency not in referred),
        "urgent_sensitivity": rate([p for p in decided if p[1] in th.urgent], lambda e, t: e.urgency is Urgency.URGENT),
    }


def calibrate_thresholds(eyes: Sequence[EyeResult], truth: Sequence[str], thresholds: Thresholds | None = None, *,
                         min_sensitivity: float = 0.9) -> tuple[Thresholds, dict]:
    """Per-model decision thresholds from eyes with known labels (a calibration set, never the test set).

    For each class named in the thresholds (urgent tier first, then routine), positives are the eyes of
    that class and negatives the eyes of less urgent classes (more urgent eyes are decided before this
    tier is reached). The threshold is the highest eye score that keeps sensitivity >= ``min_sensitivity``
    (a screening tool must not miss disease), placed halfway to the next lower negative score; with no
    positives the old threshold stays. Returns the new Thresholds and a report {class: {threshold,
    sensitivity, specificity, n_pos, n_neg}} on the calibration eyes.
    """
    th = thresholds if thresholds is not None else Thresholds()
    truth = list(truth)
    if len(truth) != len(eyes):
        raise ValueError(f"{len(truth)} labels for {len(eyes)} eyes")
    kept = [(e, t) for e, t in zip(eyes, truth, strict=True) if not e.rescan]
    tiers = [dict(th.urgent), dict(th.routine)]
    more_urgent: set[str] = set()
    report: dict[str, dict] = {}
    for tier in tiers:
        for cls in list(tier):
            pos = np.array([e.scores.get(cls, 0.0) for e, t in kept if t == cls])
            neg = np.array([e.scores.get(cls, 0.0) for e, t in kept if t != cls and t not in more_urgent])
            if pos.size == 0:
                continue
            need = int(np.ceil(min_sensitivity * pos.size))
            t_hi = float(np.sort(pos)[::-1][need - 1])          # highest threshold with >= need positives
            below = neg[neg < t_hi]
            t = (t_hi + float(below.max())) / 2 if below.size else t_hi
            t = float(np.clip(t, 0.05, 0.99))
            tier[cls] = round(t, 4)
            report[cls] = {"threshold": tier[cls], "sensitivity": float((pos >= tier[cls]).mean()),
                           "specificity": float((neg < tier[cls]).mean()) if neg.size else float("nan"),
                           "n_pos": int(pos.size), "n_neg": int(neg.size)}
        more_urgent |= set(tier)
    new = Thresholds(urgent=tiers[0], routine=tiers[1], review_margin=th.review_margin,
                     top_k_fraction=th.top_k_fraction, min_gradable=th.min_gradable,
                     min_gradable_fraction=th.min_gradable_fraction)
    return new, report
