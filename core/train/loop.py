"""The training loop: :func:`fit` for the teacher, the student and distillation, in named steps.

What it does (KD-OCT recipe, all switchable by :class:`TrainConfig`):
AdamW with separate head / backbone learning rates, backbone frozen for the first epochs, linear
warm-up then cosine decay per optimizer step, gradient accumulation, mixed precision (bf16 / fp16
autocast on CUDA), channels_last, optional ``torch.compile``, focal or cross-entropy loss with
balanced class weights, online distillation from a frozen teacher, early stopping on the
validation loss, stochastic weight averaging (``AveragedModel`` + ``SWALR``, BN statistics
recomputed) evaluated against the best checkpoint so the better of the two on validation is kept,
resume from our own checkpoints, DistributedDataParallel under ``torchrun``.

The pieces, usable on their own (timm's ``train.py`` layout): :func:`train_one_epoch` (one pass
of a step over a loader), :func:`validate` (loss and accuracy on validation samples), a step
object that owns the loss (:func:`make_step`: ``core.train.steps.SupervisedStep`` or
``DistillationStep``), the schedule (:class:`WarmupCosine`), and ``core.train.checkpoint``
(``TrainState``, the loop's counters and history; ``Checkpoint``, the resume files).

Files written to ``out_dir`` (rank 0 only): ``train.log``, ``history.json`` (metrics per epoch),
``last.safetensors`` + ``last_state.pt`` (resume), ``best.safetensors``, ``swa_avg.safetensors``
(the running SWA average), ``swa.safetensors`` (that average with its BN statistics) and the
chosen model as ``<name>.safetensors`` + ``<name>.json`` (model card).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import SWALR, AveragedModel
from tqdm.auto import tqdm

from core.fileio import clean_stale_temps, write_text_atomic
from core.modelcard import DEMO_WARNING, INTENDED_USE, ModelCard, load_weights, save_weights
from core.models import build, spec
from core.train import ddp
from core.train.checkpoint import Checkpoint, TrainState, load_tensors, save_tensors
from core.train.data import BScanDataset, Sample, enable_image_cache
from core.train.losses import DistillationLoss, FocalLoss, balanced_class_weights
from core.train.metrics import classification_metrics
from core.train.steps import DistillationStep, SupervisedStep, TeacherInput, TrainStep, prepare_teacher
from core.train.transforms import eval_transform, train_transform, tta_views

__all__ = [
    "TrainConfig",
    "FitResult",
    "fit",
    "train_one_epoch",
    "validate",
    "Validation",
    "make_step",
    "make_criterion",
    "distill_view",
    "WarmupCosine",
    "predict",
    "build_model",
    "seed_everything",
    "head_prefix",
    "load_model_from_card",
    "autocast_context",
    "pick_device",
]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything one training run needs (configs are JSON dicts of these fields)."""

    arch: str
    classes: list[str] = field(default_factory=lambda: ["normal", "drusen", "cnv"])
    name: str = "model"
    role: str = "student"  # teacher | student (model card role)
    input_size: int = 0  # 0: the architecture's default
    pretrained: bool = False
    pretrained_file: str | None = None
    drop_rate: float | None = None  # None: the registry's default
    drop_path_rate: float | None = None
    epochs: int = 10
    batch_size: int = 16
    accum_steps: int = 1  # effective batch = batch_size * accum_steps * world size
    lr: float = 1e-3  # head learning rate (all parameters when lr_backbone is None)
    lr_backbone: float | None = None
    weight_decay: float = 0.01
    freeze_epochs: int = 0  # backbone frozen for this many first epochs
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # cosine floor, as a fraction of the base learning rate
    loss: str = "ce"  # ce | focal
    focal_gamma: float = 2.0
    class_weights: str = "balanced"  # balanced | none (alpha of the focal / weights of CE)
    sampling: str = "uniform"  # uniform | balanced (each class drawn equally often per epoch)
    label_smoothing: float = 0.0
    distill_alpha: float = 0.3  # weight of the loss on the labels (distill_hard); 1 - alpha on the soft targets
    distill_temperature: float = 4.0
    # the size distillation batches are augmented at: "larger" (the larger of the teacher's and the
    # student's; the student's input is then downsampled from the teacher's view) or "student" (the
    # teacher gets the student's view upsampled: how distillation ran before 2026-12-03)
    distill_view: str = "larger"
    # the loss on the labels while distilling: "student" (the student's own loss, class weights and all,
    # as its control trains) or "ce" (plain cross-entropy: how distillation ran before 2026-12-04)
    distill_hard: str = "student"
    swa: bool = False
    swa_start: float = 0.75  # SWA from this fraction of the epochs on
    swa_lr: float | None = None  # None: 0.5 * lr
    patience: int = 0  # early stopping on validation loss; 0 = off
    augment: str = "strong"  # strong | light | none
    aspect: str = "squash"  # squash | crop | letterbox (core.preprocess; stored in the card)
    lateral_scale: tuple[float, float] = (1.0, 1.0)  # random lateral window, fractions of the width (training)
    lateral_p: float = 0.0  # probability of that window per training B-scan
    cache_images: bool = False  # keep decoded B-scans in memory across epochs (small datasets)
    tta: bool = False  # test-time augmentation in evaluate / predict
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, off on CPU) | bf16 | fp16 | off
    channels_last: bool = True
    compile: bool = False
    workers: int = 0
    eval_batch_size: int = 64
    max_steps_per_epoch: int = 0  # > 0 caps batches per epoch (smoke tests)
    progress: bool = True  # tqdm bars (rank 0)
    demo: bool = False  # trained on synthetic data -> demonstration model

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(sorted(unknown))}")
        d = dict(d)
        if "lateral_scale" in d:
            d["lateral_scale"] = tuple(float(v) for v in d["lateral_scale"])
        return cls(**d)

    @property
    def size(self) -> tuple[int, int]:
        s = self.input_size or spec(self.arch).input_size
        return (s, s)

    @property
    def mean(self) -> tuple[float, float, float]:
        return spec(self.arch).mean

    @property
    def std(self) -> tuple[float, float, float]:
        return spec(self.arch).std


@dataclass
class FitResult:
    model: torch.nn.Module  # the chosen model (best checkpoint or SWA), eval mode, on CPU
    card: ModelCard | None  # its model card (rank 0), saved in out_dir
    history: list[dict[str, Any]]
    chosen: str  # "best" | "swa" | "last"
    val_metrics: dict[str, Any]
    out_dir: Path
    config: TrainConfig | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(cfg: TrainConfig) -> torch.device:
    return ddp.setup(cfg.device)


def autocast_context(device: torch.device, amp: str):
    """bf16 / fp16 autocast on CUDA (``auto`` picks bf16 when supported), nothing on CPU or ``off``."""
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext()
    if amp == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast("cuda", dtype=dtype)


def head_prefix(model: torch.nn.Module) -> str:
    """Name of the classifier module (timm's ``pretrained_cfg['classifier']``)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("classifier") or ""
    if not name:
        for cand in ("head.fc", "classifier", "fc", "head"):
            with contextlib.suppress(AttributeError):
                model.get_submodule(cand)
                return cand
    return name


def build_model(cfg: TrainConfig) -> tuple[torch.nn.Module, str]:
    """The configured architecture (pretrained when asked and available) and a status line."""
    overrides = {
        k: v for k, v in (("drop_rate", cfg.drop_rate), ("drop_path_rate", cfg.drop_path_rate)) if v is not None
    }
    model, status = build(
        cfg.arch, len(cfg.classes), pretrained=cfg.pretrained, pretrained_file=cfg.pretrained_file, **overrides
    )
    return model, str(status)


def load_model_from_card(card: ModelCard) -> torch.nn.Module:
    """A model built from a card's arch and loaded with its verified safetensors weights (eval mode)."""
    model, _ = build(card.arch, len(card.classes))
    model.load_state_dict(load_weights(card))
    return model.eval()


def _set_backbone_trainable(model: torch.nn.Module, trainable: bool) -> None:
    prefix = head_prefix(model)
    for n, p in model.named_parameters():
        if not n.startswith(prefix):
            p.requires_grad_(trainable)


def _lr_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 down to ``floor`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class WarmupCosine:
    """The per-optimizer-step learning rates: each group's base rate times :func:`_lr_factor`."""

    base_lrs: tuple[float, ...]
    warmup_steps: int
    total_steps: int
    floor: float

    def factor(self, step: int) -> float:
        return _lr_factor(step, self.warmup_steps, self.total_steps, self.floor)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        f = self.factor(step)
        for g, base in zip(optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f


def _balanced_sampler(ds: torch.utils.data.Dataset, g: torch.Generator) -> torch.utils.data.Sampler:
    """Draw ``len(ds)`` samples with replacement, each class equally likely (rare lesions seen as
    often as normal B-scans). ``ds`` (or the dataset of a Subset) has a ``targets`` array, as
    :class:`~core.train.data.BScanDataset` has."""
    if isinstance(ds, torch.utils.data.Subset):
        targets = cast(BScanDataset, ds.dataset).targets[list(ds.indices)]
    else:
        targets = cast(BScanDataset, ds).targets
    counts = np.bincount(targets)
    weights = 1.0 / counts[targets]
    return torch.utils.data.WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),  # type: ignore[arg-type]  # torch takes a tensor; stub: Sequence
        len(targets),
        replacement=True,
        generator=g,
    )


def _loader(
    ds: BScanDataset | torch.utils.data.Subset,
    batch: int,
    cfg: TrainConfig,
    *,
    shuffle: bool,
    epoch: int = 0,
    indices: Sequence[int] | None = None,
) -> torch.utils.data.DataLoader:
    """``ds``: a sized dataset with a ``targets`` array (see :func:`_balanced_sampler`)."""
    if indices is not None:
        ds = torch.utils.data.Subset(ds, list(indices))
    sampler: torch.utils.data.Sampler | None = None
    if shuffle:
        if ddp.is_distributed():
            sampler = torch.utils.data.DistributedSampler(ds, shuffle=True, seed=cfg.seed, drop_last=True)
            sampler.set_epoch(epoch)
        elif cfg.sampling == "balanced":
            sampler = _balanced_sampler(ds, torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        else:
            g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
            sampler = torch.utils.data.RandomSampler(ds, generator=g)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        sampler=sampler,
        shuffle=False,
        num_workers=cfg.workers,
        drop_last=shuffle and len(ds) > batch,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    cfg: TrainConfig,
    *,
    device: torch.device | None = None,
    tta: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[n, C]`` and targets ``[n]`` of ``samples`` through the evaluation transform.

    With ``tta`` the softmax of the :func:`~core.train.transforms.tta_views` are averaged and their
    log is returned as logits. Under DDP each rank takes every world-size-th sample and the results
    are gathered, so every rank returns the full, ordered arrays.
    """
    device = device or next(model.parameters()).device
    tta = cfg.tta if tta is None else tta
    ds = BScanDataset(samples, cfg.classes, eval_transform(cfg.size, cfg.mean, cfg.std, cfg.aspect))
    mine = list(range(ddp.rank(), len(ds), ddp.world_size()))
    was_training = model.training
    model.eval()
    outs, ys = [], []
    for x, y in _loader(ds, cfg.eval_batch_size, cfg, shuffle=False, indices=mine):
        x = x.to(device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, cfg.amp):
            if tta:
                probs = torch.stack([F.softmax(model(v).float(), 1) for v in tta_views(x)]).mean(0)
                batch_logits = probs.clamp_min(1e-12).log()
            else:
                batch_logits = model(x).float()
        outs.append(batch_logits.float().cpu().numpy())
        ys.append(y.numpy())
    model.train(was_training)
    k = len(cfg.classes)
    logits = np.concatenate(outs) if outs else np.zeros((0, k), np.float32)
    targets = np.concatenate(ys) if ys else np.zeros((0,), np.int64)
    if ddp.is_distributed():
        idx = ddp.all_gather_array(np.asarray(mine, dtype=np.int64))
        logits, targets = ddp.all_gather_array(logits), ddp.all_gather_array(targets)
        order = np.argsort(idx, kind="stable")
        logits, targets = logits[order], targets[order]
    return logits, targets


def _val_loss(logits: np.ndarray, targets: np.ndarray, criterion: torch.nn.Module) -> float:
    if len(targets) == 0:
        return float("nan")
    with torch.no_grad():
        return float(criterion(torch.from_numpy(logits), torch.from_numpy(targets)))


@dataclass
class Validation:
    """One pass over the validation samples: loss (``criterion`` on the logits), accuracy, and the
    logits and targets themselves."""

    loss: float
    acc: float
    logits: np.ndarray
    targets: np.ndarray

    def row(self) -> dict[str, float]:
        """The history columns: ``val_loss``, ``val_acc``."""
        return {"val_loss": self.loss, "val_acc": self.acc}


def validate(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    cfg: TrainConfig,
    criterion: torch.nn.Module,
    *,
    device: torch.device | None = None,
) -> Validation:
    """``model`` on ``samples`` through the evaluation transform (no TTA; every rank gets all of
    them, see :func:`predict`), scored with ``criterion`` on the CPU (a step's ``val_criterion``)."""
    logits, y = predict(model, samples, cfg, device=device, tta=False)
    acc = float((logits.argmax(1) == y).mean()) if len(y) else float("nan")
    return Validation(_val_loss(logits, y, criterion), acc, logits, y)


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    step: TrainStep,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    cfg: TrainConfig,
    *,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    schedule: WarmupCosine | None = None,
    max_batches: int | None = None,
    desc: str = "",
) -> dict[str, float]:
    """One pass over ``loader``: ``step(model, x, y)`` under autocast, the loss scaled by ``scaler``
    and divided by ``cfg.accum_steps``, an optimizer step every ``accum_steps`` batches (its
    learning rates first set by ``schedule`` for ``state.step``; None leaves them, as in SWA
    epochs), ``state.step`` counting them. At most ``max_batches`` batches.

    Returns ``train_loss`` and ``train_acc`` (averaged over the ranks), ``samples_this_rank`` and
    ``train_seconds``.
    """
    scaler = scaler if scaler is not None else torch.amp.GradScaler("cuda", enabled=False)
    model.train()
    bar = tqdm(total=max_batches, desc=desc, leave=False, disable=not (cfg.progress and ddp.is_main()))
    t0, loss_sum, seen, correct = time.perf_counter(), 0.0, 0, 0
    optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, cfg.amp):
            loss, logits = step(model, x, y)
        scaler.scale(loss / cfg.accum_steps).backward()
        if (i + 1) % cfg.accum_steps == 0:
            if schedule is not None:
                schedule.apply(optimizer, state.step)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
        loss_sum += float(loss.detach()) * len(y)
        seen += len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
    bar.close()
    train_secs = time.perf_counter() - t0
    stats = ddp.all_reduce_mean(
        {"train_loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen)},
        device if device.type == "cuda" else "cpu",
    )
    return {**stats, "samples_this_rank": seen, "train_seconds": train_secs}


def make_criterion(cfg: TrainConfig, targets: np.ndarray) -> torch.nn.Module:
    """The supervised loss of ``cfg`` (focal or cross-entropy, balanced class weights of ``targets``
    when asked), on the CPU."""
    weights = balanced_class_weights(targets, len(cfg.classes)) if cfg.class_weights == "balanced" else None
    if cfg.loss == "focal":
        return FocalLoss(cfg.focal_gamma, weights)
    if cfg.loss == "ce":
        return torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    raise ValueError(f"loss must be 'focal' or 'ce', not {cfg.loss!r}")


def make_step(
    cfg: TrainConfig,
    targets: np.ndarray,
    device: torch.device,
    *,
    teacher: torch.nn.Module | None = None,
    teacher_size: tuple[int, int] | None = None,
    teacher_norm: tuple[Sequence[float], Sequence[float]] | None = None,
) -> SupervisedStep | DistillationStep:
    """The training step of ``cfg``: distillation from ``teacher`` (prepared: on ``device``, frozen,
    eval) when one is given, else supervised on the labels (``targets``: the training classes,
    for the balanced class weights)."""
    criterion = make_criterion(cfg, targets)
    if teacher is None:
        return SupervisedStep(criterion, device)
    if cfg.distill_hard not in ("student", "ce"):
        raise ValueError(f"distill_hard must be 'student' or 'ce', not {cfg.distill_hard!r}")
    view = distill_view(cfg, teacher, teacher_size)
    own = cfg.distill_hard == "student"
    return DistillationStep(
        prepare_teacher(teacher, device, cfg.channels_last),
        DistillationLoss(cfg.distill_alpha, cfg.distill_temperature, hard=criterion.to(device) if own else None),
        TeacherInput((cfg.mean, cfg.std), teacher_size, teacher_norm),
        student_size=cfg.size if view != cfg.size else None,
        val_criterion=criterion if own else None,
    )


def distill_view(
    cfg: TrainConfig, teacher: torch.nn.Module | None, teacher_size: tuple[int, int] | None
) -> tuple[int, int]:
    """The size training batches are augmented at (``cfg.distill_view``): the student's, or, when
    distilling from a teacher (or ensemble, ``input_size``) that takes larger inputs, the teacher's."""
    if cfg.distill_view not in ("larger", "student"):
        raise ValueError(f"distill_view must be 'larger' or 'student', not {cfg.distill_view!r}")
    size = (int(cfg.size[0]), int(cfg.size[1]))
    if teacher is None or cfg.distill_view == "student":
        return size
    t = teacher_size or getattr(teacher, "input_size", None)
    if t is not None and t[0] * t[1] > size[0] * size[1]:
        return (int(t[0]), int(t[1]))
    return size


def _file_logger(out_dir: Path) -> logging.Handler | None:
    if not ddp.is_main():
        return None
    h = logging.FileHandler(out_dir / "train.log", encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    h.setLevel(logging.INFO)
    pkg = logging.getLogger("core.train")
    pkg.addHandler(h)
    if pkg.getEffectiveLevel() > logging.INFO:
        pkg.setLevel(logging.INFO)
    return h


def fit(
    cfg: TrainConfig,
    train: Sequence[Sample],
    val: Sequence[Sample],
    out_dir: str | Path,
    *,
    teacher: torch.nn.Module | None = None,
    teacher_size: tuple[int, int] | None = None,
    teacher_norm: tuple[Sequence[float], Sequence[float]] | None = None,
    split_hash: str = "",
    card_extra: dict[str, Any] | None = None,
    training_data: dict[str, Any] | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> FitResult:
    """Train ``cfg.arch`` on ``train``, early-stop and choose on ``val``; see the module docstring.

    ``teacher`` turns on online distillation (``DistillationLoss``); it runs frozen (eval, no grad,
    autocast) on every augmented student batch. ``resume`` continues from ``out_dir/last_*``.
    ``stop_after`` ends this call after that many epochs (the run can be resumed later).
    """
    out = Path(out_dir)
    if ddp.is_main():
        out.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(out)  # what a run killed while saving left
    ddp.barrier()
    handler = _file_logger(out)
    # the caller's teacher is moved to the device, frozen and put in eval mode for the run; it is
    # given back as it came (device, memory format aside: mode and trainable flags)
    restore = None
    if teacher is not None:
        p0 = next(teacher.parameters(), None)
        restore = (
            p0.device if p0 is not None else None,
            teacher.training,
            {n: p.requires_grad for n, p in teacher.named_parameters()},
        )
    try:
        run = _setup(
            cfg, list(train), list(val), out, teacher=teacher, teacher_size=teacher_size, teacher_norm=teacher_norm
        )
        info = _CardInfo(split_hash, card_extra or {}, training_data or {})
        return _train(run, info, resume=resume, stop_after=stop_after)
    finally:
        if restore is not None and teacher is not None:  # (restore is set only with a teacher)
            dev, mode, flags = restore
            if dev is not None:
                teacher.to(dev)
            teacher.train(mode)
            for n, p in teacher.named_parameters():
                p.requires_grad_(flags[n])
        if handler is not None:
            logging.getLogger("core.train").removeHandler(handler)
            handler.close()


@dataclass
class _CardInfo:
    """What the model card records beyond the config: the split, the caller's extras, the data."""

    split_hash: str
    extra: dict[str, Any]
    training_data: dict[str, Any]


@dataclass
class _Run:
    """One training run, set up: the network (``net``; ``model`` is it compiled or not), its data,
    step, optimizer and grad scaler, the schedule (``batches`` per epoch, SWA from ``swa_epoch``)."""

    cfg: TrainConfig
    val: list[Sample]
    out: Path
    device: torch.device
    net: torch.nn.Module
    model: torch.nn.Module
    status: str
    train_ds: BScanDataset
    step: SupervisedStep | DistillationStep
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: WarmupCosine
    batches: int
    swa_epoch: int
    swa_model: AveragedModel | None

    def make_swalr(self) -> SWALR:
        return SWALR(self.optimizer, swa_lr=self.cfg.swa_lr or 0.5 * self.cfg.lr, anneal_epochs=1)


def _setup(
    cfg: TrainConfig,
    train: list[Sample],
    val: list[Sample],
    out: Path,
    *,
    teacher: torch.nn.Module | None,
    teacher_size: tuple[int, int] | None,
    teacher_norm: tuple[Sequence[float], Sequence[float]] | None,
) -> _Run:
    """Build the network (seeded), the training dataset, the step, optimizer, scaler and schedule."""
    device = pick_device(cfg)
    seed_everything(cfg.seed)
    net, status = build_model(cfg)
    log.info("%s (%s): %s; device %s, world size %d", cfg.name, cfg.arch, status, device, ddp.world_size())
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cfg.cache_images:
        enable_image_cache()
    view = distill_view(cfg, teacher, teacher_size)
    if view != cfg.size:
        log.info(
            "distillation batches at the teacher's %dx%d, the student's input downsampled to %dx%d", *view, *cfg.size
        )
    train_ds = BScanDataset(
        train,
        cfg.classes,
        train_transform(
            view,
            cfg.mean,
            cfg.std,
            cfg.augment,
            aspect=cfg.aspect,
            lateral_scale=cfg.lateral_scale,
            lateral_p=cfg.lateral_p,
        ),
    )
    step = make_step(
        cfg, train_ds.targets, device, teacher=teacher, teacher_size=teacher_size, teacher_norm=teacher_norm
    )
    if cfg.sampling not in ("uniform", "balanced"):
        raise ValueError(f"sampling must be 'uniform' or 'balanced', not {cfg.sampling!r}")
    prefix = head_prefix(net)
    head = [p for n, p in net.named_parameters() if n.startswith(prefix)]
    body = [p for n, p in net.named_parameters() if not n.startswith(prefix)]
    lrs = (cfg.lr, cfg.lr_backbone if cfg.lr_backbone is not None else cfg.lr)
    optimizer = torch.optim.AdamW(
        [{"params": head, "lr": lrs[0]}, {"params": body, "lr": lrs[1]}], weight_decay=cfg.weight_decay
    )
    use_fp16 = device.type == "cuda" and (
        cfg.amp == "fp16" or (cfg.amp == "auto" and not torch.cuda.is_bf16_supported())
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)

    per_rank = len(train_ds) // ddp.world_size()
    batches = max(1, per_rank // cfg.batch_size if per_rank > cfg.batch_size else 1)
    if cfg.max_steps_per_epoch:
        batches = min(batches, cfg.max_steps_per_epoch)
    steps_per_epoch = max(1, batches // cfg.accum_steps)
    swa_epoch = max(1, int(round(cfg.swa_start * cfg.epochs))) if cfg.swa else cfg.epochs + 1
    schedule = WarmupCosine(
        lrs,
        warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)),
        total_steps=steps_per_epoch * min(cfg.epochs, swa_epoch),
        floor=cfg.min_lr_ratio,
    )
    # (torch.compile of a Module gives an OptimizedModule, a Module; its stub says Callable)
    model: torch.nn.Module = cast(torch.nn.Module, torch.compile(net)) if cfg.compile else net
    return _Run(
        cfg=cfg,
        val=val,
        out=out,
        device=device,
        net=net,
        model=model,
        status=status,
        train_ds=train_ds,
        step=step,
        optimizer=optimizer,
        scaler=scaler,
        schedule=schedule,
        batches=batches,
        swa_epoch=swa_epoch,
        swa_model=AveragedModel(net) if cfg.swa else None,
    )


def _resume(run: _Run, resume: bool) -> tuple[TrainState, SWALR | None]:
    ckpt = Checkpoint(run.out)
    if resume and ckpt.exists():
        state, swa_sched = ckpt.load(
            run.net, run.optimizer, run.scaler, swa_model=run.swa_model, make_swalr=run.make_swalr
        )
        log.info("resumed from %s at epoch %d", ckpt.weights, state.epoch)
        return state, swa_sched
    if resume:
        log.info("no checkpoint in %s; starting from scratch", run.out)
    return TrainState(), None


def _wrap(run: _Run, frozen: bool) -> torch.nn.Module:
    """The model to train this epoch: the backbone frozen or not, under DDP when distributed (it is
    wrapped again whenever the set of trainable parameters changes)."""
    _set_backbone_trainable(run.net, not frozen)
    if not ddp.is_distributed():
        return run.model
    dev = run.device
    return torch.nn.parallel.DistributedDataParallel(run.model, device_ids=[dev.index] if dev.type == "cuda" else None)


def _train(run: _Run, info: _CardInfo, *, resume: bool, stop_after: int | None) -> FitResult:
    """The epochs (train, validate, record, checkpoint) until done, stopped early or ``stop_after``;
    then choose the model."""
    cfg, net = run.cfg, run.net
    state, swa_sched = _resume(run, resume)
    ckpt = Checkpoint(run.out)
    frozen: bool | None = None
    wrapped = run.model
    epochs_run = 0
    while state.epoch < cfg.epochs and not state.stopped:
        epoch = state.epoch
        if (epoch < cfg.freeze_epochs) != frozen:
            frozen = epoch < cfg.freeze_epochs
            wrapped = _wrap(run, frozen)
            log.info("epoch %d: backbone %s", epoch + 1, "frozen" if frozen else "trainable")
        seed_everything(cfg.seed * 7919 + epoch * 101 + ddp.rank())
        in_swa = cfg.swa and epoch >= run.swa_epoch
        if in_swa and swa_sched is None:
            swa_sched = run.make_swalr()
        row = _epoch(run, wrapped, state, swa_sched if in_swa else None)
        improved = state.end_epoch(row, patience=cfg.patience, may_stop=not in_swa)
        if state.stopped:
            log.info("early stopping after epoch %d (no better validation loss for %d epochs)", epoch + 1, cfg.patience)
        log.info(
            "epoch %d/%d train_loss %.4f train_acc %.3f val_loss %.4f val_acc %.3f (%.1f s, %.0f images/s)",
            row["epoch"],
            cfg.epochs,
            row["train_loss"],
            row["train_acc"],
            row["val_loss"],
            row["val_acc"],
            row["seconds"],
            row["images_per_s"],
        )
        if ddp.is_main():
            swa_model = run.swa_model if in_swa else None
            ckpt.save(state, net, run.optimizer, run.scaler, swa_model=swa_model, swa_sched=swa_sched, best=improved)
            _write_json(run.out / "history.json", state.history)
        ddp.barrier()
        epochs_run += 1
        if stop_after is not None and epochs_run >= stop_after and state.epoch < cfg.epochs:
            log.info("stopping after %d epoch(s) as asked; resume to continue", epochs_run)
            return FitResult(net.eval(), None, state.history, "last", {}, run.out, cfg)
    return _choose(run, state, info)


def _epoch(run: _Run, wrapped: torch.nn.Module, state: TrainState, swa_sched: SWALR | None) -> dict[str, Any]:
    """Epoch ``state.epoch``: train (the schedule's learning rates, or in SWA, given ``swa_sched``,
    the SWA average updated and the scheduler stepped after), validate; its history row."""
    cfg, device, optimizer, epoch = run.cfg, run.device, run.optimizer, state.epoch
    in_swa = swa_sched is not None
    loader = _loader(run.train_ds, cfg.batch_size, cfg, shuffle=True, epoch=epoch)
    t0 = time.perf_counter()
    stats = train_one_epoch(
        wrapped,
        loader,
        run.step,
        optimizer,
        state,
        cfg,
        device=device,
        scaler=run.scaler,
        schedule=None if in_swa else run.schedule,
        max_batches=run.batches,
        desc=f"{cfg.name} {epoch + 1}/{cfg.epochs}",
    )
    if swa_sched is not None:
        assert run.swa_model is not None  # (made whenever cfg.swa)
        run.swa_model.update_parameters(run.net)
        swa_sched.step()
    v = validate(run.net, run.val, cfg, run.step.val_criterion, device=device)
    secs, train_secs, seen = time.perf_counter() - t0, stats["train_seconds"], stats["samples_this_rank"]
    row = {
        "epoch": epoch + 1,
        "train_loss": stats["train_loss"],
        "train_acc": stats["train_acc"],
        **v.row(),
        "lr_head": optimizer.param_groups[0]["lr"],
        "lr_backbone": optimizer.param_groups[1]["lr"],
        "swa": in_swa,
        "samples_this_rank": seen,
        "seconds": secs,
        "train_seconds": train_secs,
        "images_per_s": seen * ddp.world_size() / train_secs if train_secs > 0 else float("nan"),
    }
    if device.type == "cuda":
        row["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return row


def _swa_candidate(run: _Run) -> dict[str, torch.Tensor]:
    """The SWA average with its BN statistics recomputed on the training data (rank 0's on all ranks)."""
    assert run.swa_model is not None
    cfg, device = run.cfg, run.device
    bn_loader = _loader(run.train_ds, cfg.batch_size, cfg, shuffle=True, epoch=10_000)
    seed_everything(cfg.seed + 424242)
    swa_net = run.swa_model.module
    torch.optim.swa_utils.update_bn(
        (
            (x.to(device).contiguous(memory_format=torch.channels_last) if cfg.channels_last else x.to(device))
            for x, _ in bn_loader
        ),
        swa_net,
    )
    ddp.broadcast_state(swa_net)  # each rank saw its own shard: keep rank 0's BN statistics everywhere
    return {k: v.detach().clone() for k, v in swa_net.state_dict().items()}


def _choose(run: _Run, state: TrainState, info: _CardInfo) -> FitResult:
    """Best checkpoint vs SWA (BN statistics recomputed) on validation; save the better one with its card."""
    cfg, net, out = run.cfg, run.net, run.out
    candidates: dict[str, dict[str, torch.Tensor]] = {}
    best_file = Checkpoint(out).best
    ddp.barrier()
    candidates["best" if best_file.is_file() else "last"] = (
        load_tensors(best_file) if best_file.is_file() else {k: v.detach().clone() for k, v in net.state_dict().items()}
    )
    if run.swa_model is not None and run.swa_model.n_averaged.item() > 0:
        candidates["swa"] = _swa_candidate(run)
        if ddp.is_main():
            save_tensors(candidates["swa"], out / "swa.safetensors")
    scores: dict[str, Validation] = {}
    for name, sd in candidates.items():
        net.load_state_dict(sd)
        scores[name] = validate(net, run.val, cfg, run.step.val_criterion, device=run.device)
        log.info("validation loss of the %s model: %.4f", name, scores[name].loss)
    chosen = min(
        scores, key=lambda n: (scores[n].loss if not math.isnan(scores[n].loss) else float("inf"), n != "best")
    )
    net.load_state_dict(candidates[chosen])
    net = net.cpu().eval().to(memory_format=torch.contiguous_format)
    lg, y = scores[chosen].logits, scores[chosen].targets
    probs = torch.softmax(torch.from_numpy(lg), 1).numpy()
    vm = classification_metrics(y, probs, cfg.classes) if len(y) else {}
    vm["loss"] = scores[chosen].loss
    card = None
    if ddp.is_main():
        card = ModelCard(
            name=cfg.name,
            arch=cfg.arch,
            classes=list(cfg.classes),
            input_size=cfg.size,
            mean=cfg.mean,
            std=cfg.std,
            aspect=cfg.aspect,
            role=cfg.role,
            split_hash=info.split_hash,
            demo=cfg.demo,
            metrics={"validation": vm, "val_loss_by_candidate": {n: s.loss for n, s in scores.items()}},
            training_data=dict(info.training_data),
            intended_use=(DEMO_WARNING if cfg.demo else INTENDED_USE),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            extra={
                **info.extra,
                "chosen": chosen,
                "pretrained": run.status,
                "epochs_run": state.epoch,
                "config": dataclasses.asdict(cfg),
            },
        )
        save_weights(card, net.state_dict(), out)
        _write_json(out / "history.json", state.history)
    ddp.barrier()
    return FitResult(net, card, state.history, chosen, vm, out, cfg)


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, default=float) + "\n", overwrite=True)
