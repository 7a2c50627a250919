"""Per-eye decision from per-B-scan results (DESIGN.md, 'Aggregation').

1. Ungradable B-scans are excluded. Too few gradable ones (fewer than ``min_gradable``, or less
   than ``min_gradable_fraction`` of the volume) -> RESCAN, label 'ungradable'. A volume with fewer
   B-scans than ``min_gradable`` (a single line scan, one JPEG) needs all of them gradable.
2. Eye score of every disease class = mean of its top-k B-scan probabilities over the gradable
   B-scans, k = max(1, ceil(top_k_fraction * n_gradable)); the normal class's score is the mean
   of its *lowest* k probabilities (evidence that even the least normal B-scans look normal).
3. Worst case wins, tier by tier: an urgent class (``thresholds.urgent``, CNV) whose score reaches
   its threshold -> URGENT (the highest such score decides the label); else a soon class (DME) ->
   SOON; else a routine class (drusen) -> ROUTINE. A class named in a more urgent tier is not
   looked at again.
4. No referral needs positive evidence: with no disease threshold reached, the normal score must
   reach ``thresholds.normal`` -> NONE; otherwise REVIEW ("not confident the eye is free of
   disease"). An exam with fewer B-scans than ``min_gradable`` (a line scan, one JPEG) can refer
   but never rules out disease: its would-be NONE is REVIEW.
5. needs_review when a score lies within the review margin of a threshold that could change the
   decision (the decisive tier, the tiers above it, and the normal threshold of a NONE), and for
   every REVIEW. The margin of threshold t is ``min(review_margin, t / 2, (1 - t) / 2)``: a
   calibrated threshold near 0 or 1 gets a band that still leaves room on both sides.
6. Evidence = the top-k gradable B-scans of the decisive class, strongest first (for a normal
   label: its k least normal B-scans).

Tier names, actions and time frames come from ``core.tiers`` with the card's ``thresholds.tiers``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from core.modelcard import Thresholds
from core.results import EyeResult, Urgency, VolumeResult
from core.tiers import resolve_tiers

__all__ = ["calibrate_thresholds", "decide", "top_k", "eye_scores", "evaluate_eyes", "UNGRADABLE"]

UNGRADABLE = "ungradable"
_EPS = 1e-6  # float32 probabilities: compare scores and thresholds to 6 decimals (0.4 is 0.4000000060)


def top_k(n_gradable: int, fraction: float) -> int:
    """k = max(1, ceil(fraction * n_gradable)), never more than n_gradable (when n_gradable >= 1)."""
    k = max(1, math.ceil(round(fraction * n_gradable, 9)))
    return min(k, n_gradable) if n_gradable > 0 else k


def review_margin(threshold: float, margin: float) -> float:
    """The review band half-width around ``threshold``: ``margin``, narrowed near 0 and 1."""
    return min(margin, threshold / 2, (1 - threshold) / 2)


def eye_scores(
    probs: np.ndarray, classes: Sequence[str], k: int, evidence_of_absence: Sequence[str] = ()
) -> dict[str, float]:
    """Per class, the mean of its top-k probabilities (``probs`` holds only the gradable B-scans).

    For the classes in ``evidence_of_absence`` (the normal class) it is the mean of the *lowest* k:
    "the eye is normal" must hold for its least normal B-scans too, since a diseased eye has many
    normal-looking B-scans.
    """
    if probs.shape[0] == 0:
        return {c: 0.0 for c in classes}
    top = -np.sort(-probs, axis=0)[:k]
    low = np.sort(probs, axis=0)[:k]
    return {c: float((low if c in evidence_of_absence else top)[:, i].mean()) for i, c in enumerate(classes)}


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
    reasons = [
        f"Only {n_ok} of {n} B-scans are gradable; at least {required} and "
        f"{100 * th.min_gradable_fraction:.0f} % are needed to decide."
    ]
    causes = Counter(vr.quality_reasons[i].split(" (")[0] for i in bad if i < len(vr.quality_reasons))
    for cause, count in causes.most_common():
        if cause:
            reasons.append(f"{count} B-scan{'s' if count != 1 else ''}: {cause}.")
    k = top_k(n_ok, th.top_k_fraction)
    scores = eye_scores(vr.probs[gradable], vr.classes, k, list(th.normal))
    return EyeResult(
        eye=vr.volume.eye,
        label=UNGRADABLE,
        urgency=Urgency.RESCAN,
        scores=scores,
        confidence=0.0,
        needs_review=False,
        evidence=[],
        n_bscans=n,
        n_gradable=n_ok,
        ungradable=bad,
        reasons=reasons,
        volume_result=vr,
        tiers=resolve_tiers(th.tiers),
    )


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
    classes = list(vr.classes)
    normal = {c: float(t) for c, t in th.normal.items() if c in classes}
    scores = eye_scores(probs, classes, k, list(normal))
    tiers: list[tuple[Urgency, dict[str, float]]] = []
    named: set[str] = set(normal)
    for urg, tier in ((Urgency.URGENT, th.urgent), (Urgency.SOON, th.soon), (Urgency.ROUTINE, th.routine)):
        tiers.append((urg, {c: float(t) for c, t in tier.items() if c in scores and c not in named}))
        named |= set(tier)
    how = f"mean of the top {k} of {n_ok} gradable B-scans"
    words = resolve_tiers(th.tiers)

    def crossed(tier: dict[str, float]) -> list[str]:
        hits = [c for c, t in tier.items() if scores[c] >= t - _EPS]
        return sorted(hits, key=lambda c: -scores[c])

    reasons: list[str] = []
    checked: list[dict[str, float]] = []
    urgency: Urgency | None = None
    for urg, tier in tiers:
        checked.append(tier)
        if hits := crossed(tier):
            urgency, label = urg, hits[0]
            reasons.append(
                f"{_fmt(label, scores[label])} reaches the {words[urg.value].name.lower()} threshold "
                f"{tier[label]:.2f} ({how})."
            )
            break
    single = n < max(1, int(th.min_gradable))
    if urgency is None:
        disease = [f"{_fmt(c, scores[c])} < {t:.2f}" for tier in checked for c, t in tier.items()]
        nothing = "No referral threshold reached" + (f" ({'; '.join(disease)})" if disease else "") + f"; {how}."
        others = [c for c in classes if c not in named]
        label = next(iter(normal), None) or (max(others, key=lambda c: scores[c]) if others else "normal")
        reasons.append(nothing)
        if normal and scores.get(label, 0.0) < normal.get(label, 0.0) - _EPS:
            urgency = Urgency.REVIEW
            reasons.append(
                f"Review advised: the {label} score {scores[label]:.2f} (mean of the {k} least {label} "
                f"B-scans) is below its threshold {normal[label]:.2f}, so the model is not confident "
                "the eye is free of disease."
            )
        elif single:
            urgency = Urgency.REVIEW
            reasons.append(
                f"Review advised: {'a single B-scan' if n == 1 else f'{n} B-scans'} cannot rule out "
                "disease (a volume scan is needed for a no-referral decision)."
            )
        else:
            urgency = Urgency.NONE
            if normal:
                checked.append(normal)
                reasons.append(
                    f"{_fmt(label, scores[label])} (mean of the {k} least {label} B-scans) reaches its "
                    f"threshold {normal[label]:.2f}."
                )
    for c, t in {c: t for _, tier in tiers for c, t in tier.items()}.items():
        if c != label and scores[c] >= t - _EPS:
            reasons.append(f"Also above threshold: {_fmt(c, scores[c])} (threshold {t:.2f}).")

    near = [
        (c, t)
        for tier in checked
        for c, t in tier.items()
        if round(abs(scores[c] - t), 6) < review_margin(t, th.review_margin)
    ]
    for c, t in near:
        reasons.append(
            f"Review advised: {_fmt(c, scores[c])} is within {review_margin(t, th.review_margin):.2f} "
            f"of its threshold {t:.2f}."
        )
    unused = [c for c in classes if c not in named and c != label and scores[c] >= 0.5]
    for c in unused:
        reasons.append(f"{_fmt(c, scores[c])} (this class is not used for referral by the model card).")
    if n_ok < n:
        reasons.append(f"{n - n_ok} of {n} B-scans were ungradable and excluded.")

    col = classes.index(label) if label in classes else int(np.argmax([scores[c] for c in classes]))
    if label in normal:  # evidence of a normal eye: its least normal B-scans, the ones a reader should check
        order = np.argsort(probs[:, col], kind="stable")[:k]
        evidence = [int(index[i]) for i in order]
    else:
        evidence = _evidence(probs, index, col, k)
    return EyeResult(
        eye=vr.volume.eye,
        label=label,
        urgency=urgency,
        scores=scores,
        confidence=scores.get(label, 0.0),
        needs_review=bool(near) or urgency is Urgency.REVIEW,
        evidence=evidence,
        n_bscans=n,
        n_gradable=n_ok,
        ungradable=[int(i) for i in np.flatnonzero(~gradable)],
        reasons=reasons,
        volume_result=vr,
        tiers=words,
    )


def evaluate_eyes(
    items: Iterable[EyeResult | VolumeResult],
    truth: Sequence[str] | None = None,
    thresholds: Thresholds | None = None,
    referable: Sequence[str] | None = None,
) -> dict:
    """Per-eye metrics for eyes with known labels.

    items: EyeResults, or VolumeResults (decided here with ``thresholds``). truth: the true eye
    label of each item; by default the volume's ``label``. referable: classes that should be
    referred (default: those named in the thresholds' urgent and routine tiers).

    Returns a dict: n, n_rescan, accuracy (label == truth over the eyes that were decided),
    accuracy_all (rescans counted as wrong), per_class {cls: {n, correct, sensitivity}},
    confusion {truth: {predicted: count}}, referral_sensitivity (referable eyes referred, rescans
    excluded), referral_specificity (other eyes not referred), urgent_sensitivity (eyes of an
    urgent class that got URGENT), n_review (eyes sent to review), referable_sent_home (eyes of a
    referable class that got NONE: the error a screener must not make), tiers {tier: count}.
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
    refer = set(referable) if referable is not None else set(th.urgent) | set(th.soon) | set(th.routine)
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

    referred = (Urgency.URGENT, Urgency.SOON, Urgency.ROUTINE)
    return {
        "n": len(eyes),
        "n_rescan": len(eyes) - len(decided),
        "accuracy": rate(decided, lambda e, t: e.label == t),
        "accuracy_all": rate(list(zip(eyes, truth, strict=True)), lambda e, t: e.label == t),
        "per_class": per_class,
        "confusion": confusion,
        "referral_sensitivity": rate([p for p in decided if p[1] in refer], lambda e, t: e.urgency in referred),
        "referral_specificity": rate([p for p in decided if p[1] not in refer], lambda e, t: e.urgency not in referred),
        "urgent_sensitivity": rate([p for p in decided if p[1] in th.urgent], lambda e, t: e.urgency is Urgency.URGENT),
        "n_review": sum(1 for e, _ in decided if e.urgency is Urgency.REVIEW),
        # the dangerous error: an eye of a referable class sent home with "no referral"
        "referable_sent_home": sum(1 for e, t in decided if t in refer and e.urgency is Urgency.NONE),
        "tiers": dict(Counter(e.urgency.value for e in eyes)),
    }


#: Per-class sensitivity the calibrated thresholds keep on the calibration eyes (issue: CNV 0.95,
#: DME and drusen 0.90); the normal threshold keeps 0.90 of the normal eyes at "no referral".
DEFAULT_MIN_SENSITIVITY: dict[str, float] = {"cnv": 0.95, "dme": 0.90, "drusen": 0.90, "normal": 0.90}


def calibrate_thresholds(
    eyes: Sequence[EyeResult],
    truth: Sequence[str],
    thresholds: Thresholds | None = None,
    *,
    min_sensitivity: float | Mapping[str, float] | None = None,
) -> tuple[Thresholds, dict]:
    """Per-model decision thresholds from eyes with known labels (a calibration set, never the test set).

    For each class named in the thresholds (urgent tier first, then soon, routine and last the
    normal evidence threshold), positives are the eyes of that class and negatives the eyes of less
    urgent classes (more urgent eyes are decided before this tier is reached). The threshold is the
    highest eye score that keeps sensitivity >= the class's ``min_sensitivity`` (a float for every
    class, or per class; default :data:`DEFAULT_MIN_SENSITIVITY`, 0.9 for a class it does not name),
    placed halfway to the next lower negative score; with no positives the old threshold stays.
    Returns the new Thresholds and a report {class: {threshold, min_sensitivity, sensitivity,
    specificity, n_pos, n_neg}} on the calibration eyes.
    """
    th = thresholds if thresholds is not None else Thresholds()
    truth = list(truth)
    if len(truth) != len(eyes):
        raise ValueError(f"{len(truth)} labels for {len(eyes)} eyes")
    if min_sensitivity is None:
        want: Mapping[str, float] = DEFAULT_MIN_SENSITIVITY
    elif isinstance(min_sensitivity, Mapping):
        want = min_sensitivity
    else:
        want = {c: float(min_sensitivity) for t in (th.urgent, th.soon, th.routine, th.normal) for c in t}
    kept = [(e, t) for e, t in zip(eyes, truth, strict=True) if not e.rescan]
    tiers = [dict(th.urgent), dict(th.soon), dict(th.routine), dict(th.normal)]
    more_urgent: set[str] = set()
    report: dict[str, dict] = {}
    for tier in tiers:
        for cls in list(tier):
            if cls in more_urgent:
                continue
            pos = np.array([e.scores.get(cls, 0.0) for e, t in kept if t == cls])
            neg = np.array([e.scores.get(cls, 0.0) for e, t in kept if t != cls and t not in more_urgent])
            if pos.size == 0:
                continue
            s_min = float(want.get(cls, 0.9))
            need = max(1, int(np.ceil(round(s_min * pos.size, 9))))
            t_hi = float(np.sort(pos)[::-1][need - 1])  # highest threshold with >= need positives
            below = neg[neg < t_hi]
            t = (t_hi + float(below.max())) / 2 if below.size else t_hi
            t = float(np.clip(t, 0.05, 0.99))
            tier[cls] = math.floor(t * 1e4) / 1e4  # rounded down: rounding up could drop the lowest positive
            report[cls] = {
                "threshold": tier[cls],
                "min_sensitivity": s_min,
                "sensitivity": float((pos >= tier[cls]).mean()),
                "specificity": float((neg < tier[cls]).mean()) if neg.size else float("nan"),
                "n_pos": int(pos.size),
                "n_neg": int(neg.size),
            }
        more_urgent |= set(tier)
    new = Thresholds(
        urgent=tiers[0],
        soon=tiers[1],
        routine=tiers[2],
        normal=tiers[3],
        review_margin=th.review_margin,
        top_k_fraction=th.top_k_fraction,
        min_gradable=th.min_gradable,
        min_gradable_fraction=th.min_gradable_fraction,
        tiers=dict(th.tiers),
    )
    return new, report
