"""Patient-level splits, written once to a JSON file with a hash.

Stratified group k-fold (sklearn ``StratifiedGroupKFold``) over patients gives the test folds; the
inner validation split of each fold is grouped the same way. The plan names *groups* (patient
keys), never files, so a patient is on exactly one side of every split. Teacher and student of a
fold must use the same plan: the plan's hash travels with every checkpoint and model card and
:func:`check_split_hash` refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.fileio import write_text_atomic

__all__ = [
    "SplitPlan",
    "Fold",
    "make_splits",
    "save_splits",
    "load_splits",
    "check_split_hash",
    "SplitMismatchError",
    "samples_of",
]

FORMAT = "octscreen-splits/1"


class SplitMismatchError(ValueError):
    """A model was trained on a different patient split than the one in use."""


@dataclass
class Fold:
    """Group keys of one fold. ``test`` is empty when the test set is given separately."""

    train: list[str]
    val: list[str]
    test: list[str] = field(default_factory=list)


@dataclass
class SplitPlan:
    folds: list[Fold]
    seed: int
    val_fraction: float
    hash: str = ""

    def compute_hash(self) -> str:
        """sha256 of the canonical plan (sorted group lists, seed, val fraction)."""
        body = {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "folds": [{k: sorted(getattr(f, k)) for k in ("train", "val", "test")} for f in self.folds],
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "hash": self.hash,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "folds": [{"train": sorted(f.train), "val": sorted(f.val), "test": sorted(f.test)} for f in self.folds],
        }


def _group_labels(samples: Sequence) -> tuple[np.ndarray, np.ndarray]:
    groups = np.array([s.group for s in samples])
    labels = np.array([s.label for s in samples])
    return groups, labels


def _grouped_holdout(groups: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[set, set]:
    """Split groups into (keep, holdout) with about ``fraction`` of groups held out, stratified."""
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415 (heavy: scikit-learn ~1.2 s)

    n_groups = len(set(groups))
    n_splits = int(min(max(2, round(1.0 / fraction)), n_groups))
    if n_splits < 2:
        raise ValueError("need at least two patients to make a validation split")
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    keep_idx, hold_idx = next(sgkf.split(np.zeros(len(groups)), labels, groups))
    return set(groups[keep_idx]), set(groups[hold_idx])


def make_splits(samples: Sequence, folds: int = 5, *, seed: int = 0, val_fraction: float = 0.15) -> SplitPlan:
    """Patient-level plan. ``folds >= 2``: stratified group k-fold test folds, each with a grouped
    validation split of its training part. ``folds == 1``: one train / validation split (the test
    set is given separately, e.g. the OCT2017 official test)."""
    from sklearn.model_selection import StratifiedGroupKFold  # noqa: PLC0415 (heavy: scikit-learn ~1.2 s)

    groups, labels = _group_labels(samples)
    if len(samples) == 0:
        raise ValueError("no samples to split")
    out: list[Fold] = []
    if folds == 1:
        train, val = _grouped_holdout(groups, labels, val_fraction, seed)
        out.append(Fold(sorted(train), sorted(val)))
    else:
        if len(set(groups)) < folds:
            raise ValueError(f"{folds} folds need at least {folds} patients, the data has {len(set(groups))}")
        sgkf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for i, (tr_idx, te_idx) in enumerate(sgkf.split(np.zeros(len(groups)), labels, groups)):
            train, val = _grouped_holdout(groups[tr_idx], labels[tr_idx], val_fraction, seed + 1 + i)
            out.append(Fold(sorted(train), sorted(val), sorted(set(groups[te_idx]))))
    plan = SplitPlan(out, seed, val_fraction)
    plan.hash = plan.compute_hash()
    return plan


def samples_of(samples: Sequence, groups: Sequence[str]) -> list:
    """The samples whose group is in ``groups`` (order kept)."""
    keep = set(groups)
    return [s for s in samples if s.group in keep]


def save_splits(plan: SplitPlan, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the plan as JSON atomically. An existing file is only replaced with ``overwrite``."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p}: splits file exists (pass overwrite=True to replace it)")
    return write_text_atomic(p, json.dumps(plan.to_json(), indent=1) + "\n", overwrite=overwrite)


def load_splits(path: str | Path) -> SplitPlan:
    """Read a plan and verify its hash (a hand-edited plan is refused)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(p, "splits file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(p, f"splits file is not valid JSON ({e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise InputError(p, f'not an OCT Screen splits file (expected "format": "{FORMAT}")')
    plan = SplitPlan(
        [Fold(list(f["train"]), list(f["val"]), list(f.get("test", []))) for f in d["folds"]],
        int(d["seed"]),
        float(d["val_fraction"]),
        str(d.get("hash", "")),
    )
    if plan.hash != plan.compute_hash():
        raise InputError(p, "splits file does not match its hash (edited by hand?); make a new one")
    return plan


def check_split_hash(expected: str, actual: str, what: str = "teacher") -> None:
    """Refuse to go on when a model was trained on another split (leaks test patients)."""
    if not expected:
        raise SplitMismatchError(f"the {what} carries no split hash; cannot prove it never saw the test patients")
    if expected != actual:
        raise SplitMismatchError(
            f"the {what} was trained on split {expected} but this run uses split {actual}; "
            "teacher and student of a fold must share one splits file"
        )
