"""Classification metrics per fold, mean +- std across folds, and the paper-style fold table.

All metrics come from scikit-learn except the expected calibration error (top-label, equal-width
bins), which sklearn does not provide for the multi-class case.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.aggregate import decide
from core.fileio import atomic_output, write_text_atomic
from core.modelcard import Thresholds
from core.results import VolumeResult
from core.volume import OctVolume

__all__ = [
    "classification_metrics",
    "expected_calibration_error",
    "summarise_folds",
    "fold_table",
    "save_metrics",
    "flat_metrics",
    "eye_level",
]


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE: sum over confidence bins of |accuracy - confidence| weighted by bin size."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray, classes: Sequence[str], pred: np.ndarray | None = None
) -> dict[str, Any]:
    """Accuracy, per-class sensitivity / specificity / precision / F1 / one-vs-rest AUC, their macro
    averages, the confusion matrix (rows = truth) and the ECE. ``pred`` overrides the argmax
    prediction (e.g. a thresholded decision)."""
    from sklearn.metrics import (  # noqa: PLC0415 (heavy: scikit-learn ~1.2 s; the per-eye metrics do without)
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    pred = p.argmax(axis=1) if pred is None else np.asarray(pred, dtype=np.int64)
    labels = list(range(k))
    cm = confusion_matrix(y, pred, labels=labels)
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    per_class: dict[str, dict[str, float]] = {}
    for c, name in enumerate(classes):
        tn = cm.sum() - cm[c, :].sum() - cm[:, c].sum() + cm[c, c]
        fp = cm[:, c].sum() - cm[c, c]
        spec = tn / (tn + fp) if (tn + fp) else float("nan")
        onehot = (y == c).astype(int)
        auc = float(roc_auc_score(onehot, p[:, c])) if 0 < onehot.sum() < len(y) else float("nan")
        per_class[name] = {
            "sensitivity": float(rec[c]),
            "specificity": float(spec),
            "precision": float(prec[c]),
            "f1": float(f1[c]),
            "auc": auc,
            "support": int(support[c]),
        }

    def macro(key: str) -> float:
        vals = [v[key] for v in per_class.values() if not math.isnan(v[key])]
        return float(np.mean(vals)) if vals else float("nan")

    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "macro_sensitivity": macro("sensitivity"),
        "macro_specificity": macro("specificity"),
        "macro_precision": macro("precision"),
        "macro_f1": macro("f1"),
        "macro_auc": macro("auc"),
        "ece": expected_calibration_error(y, p) if len(y) else float("nan"),
        "per_class": per_class,
        "confusion": cm.tolist(),
        "classes": list(classes),
    }


def eye_decisions(
    y_true: Sequence[int],
    probs: np.ndarray,
    eye_keys: Sequence[str],
    classes: Sequence[str],
    eye_truth: dict[str, str] | None = None,
    thresholds=None,
) -> list[tuple[str, Any, str]]:
    """``(eye key, EyeResult, true eye label)`` per eye, sorted by key: the B-scans' probabilities
    through the app's own decision, ``core.aggregate.decide`` (top-k eye scores, worst case wins,
    ``thresholds``; all B-scans counted gradable). The true label is ``eye_truth[key]`` when given,
    else the eye's most severe B-scan label (severity = the thresholds' tier order: urgent, soon,
    routine, then the other classes in class order)."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    keys = np.asarray(eye_keys)
    names = list(classes)
    th = thresholds if thresholds is not None else Thresholds()
    severity = [c for tier in (th.urgent, th.soon, th.routine) for c in tier if c in names]
    severity += [c for c in reversed(names) if c not in severity]
    out = []
    for key in sorted(set(keys.tolist())):
        m = keys == key
        n = int(m.sum())
        vol = OctVolume(bscans=np.zeros((n, 1, 1), np.uint8))
        vr = VolumeResult(
            volume=vol,
            classes=names,
            probs=p[m].astype(np.float32),
            cams=None,
            gradable=np.ones(n, bool),
            quality_reasons=[""] * n,
        )
        present = {names[int(i)] for i in np.unique(y[m])}
        worst = next((c for c in severity if c in present), names[int(y[m].max())])
        out.append((key, decide(vr, thresholds), (eye_truth or {}).get(key) or worst))
    return out


def eye_level(
    y_true: Sequence[int],
    probs: np.ndarray,
    eye_keys: Sequence[str],
    classes: Sequence[str],
    eye_truth: dict[str, str] | None = None,
    thresholds=None,
) -> dict[str, Any]:
    """Per-eye metrics of :func:`eye_decisions` (the app's decision per eye). AUCs use the eye scores."""
    names = list(classes)
    truth, pred, scores = [], [], []
    for _, eye, t in eye_decisions(y_true, probs, eye_keys, classes, eye_truth, thresholds):
        truth.append(names.index(t))
        pred.append(names.index(eye.label) if eye.label in names else 0)
        sc = np.array([eye.scores[c] for c in names])
        scores.append(sc / sc.sum() if sc.sum() > 0 else np.full(len(names), 1 / len(names)))
    return classification_metrics(np.array(truth), np.array(scores), classes, pred=np.array(pred))


def flat_metrics(m: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of :func:`classification_metrics`, per-class ones as ``<class>_<metric>``."""
    out = {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name, d in m.get("per_class", {}).items():
        for k, v in d.items():
            if k != "support":
                out[f"{name}_{k}"] = float(v)
    return out


def summarise_folds(per_fold: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and (sample) standard deviation of each scalar metric across folds."""
    flats = [flat_metrics(m) for m in per_fold]
    keys = [k for k in flats[0] if all(k in f for f in flats)] if flats else []
    out = {}
    for k in keys:
        v = np.array([f[k] for f in flats], dtype=np.float64)
        v = v[~np.isnan(v)]  # a metric undefined on some folds (e.g. AUC with a missing class) is left out
        out[k] = {
            "mean": float(v.mean()) if len(v) else float("nan"),
            "std": float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) else float("nan")),
        }
    return out


def fold_table(
    results: dict[str, Sequence[dict[str, Any]]],
    keys: Sequence[str] = ("accuracy", "macro_f1", "macro_auc", "macro_sensitivity", "macro_specificity", "ece"),
) -> str:
    """A plain-text table like the paper's: one row per model and fold, then mean +- std (in %)."""
    head = f"{'model':<20}{'fold':>6}" + "".join(f"{k:>19}" for k in keys)
    lines = [head, "-" * len(head)]
    for model, folds in results.items():
        for i, m in enumerate(folds):
            f = flat_metrics(m)
            lines.append(f"{model:<20}{i + 1:>6}" + "".join(f"{100 * f.get(k, float('nan')):>19.2f}" for k in keys))
        s = summarise_folds(folds)
        cells = [f"{100 * s[k]['mean']:.2f} ± {100 * s[k]['std']:.2f}" if k in s else "-" for k in keys]
        lines.append(f"{model:<20}{'mean':>6}" + "".join(f"{c:>19}" for c in cells))
        lines.append("")
    return "\n".join(lines)


def save_metrics(data: dict[str, Any], json_path: str | Path, csv_rows: Sequence[dict[str, Any]] | None = None) -> None:
    """Write metrics JSON (and optionally a CSV of flat rows next to it), atomically."""
    p = Path(json_path)
    write_text_atomic(p, json.dumps(data, indent=1, default=float) + "\n", overwrite=True)
    if csv_rows:
        fields: list[str] = []
        for r in csv_rows:
            fields += [k for k in r if k not in fields]
        with (
            atomic_output(p.with_suffix(".csv"), overwrite=True) as tmp,
            open(tmp, "w", newline="", encoding="utf-8") as f,
        ):
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(csv_rows)
