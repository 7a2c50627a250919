"""The training loop: one function, :func:`fit`, for the teacher, the student and distillation.

What it does (KD-OCT recipe, all switchable by :class:`TrainConfig`):
AdamW with separate head / backbone learning rates, backbone frozen for the first epochs, linear
warm-up then cosine decay per optimizer step, gradient accumulation, mixed precision (bf16 / fp16
autocast on CUDA), channels_last, optional ``torch.compile``, focal or cross-entropy loss with
balanced class weights, online distillation from a frozen teacher, early stopping on the
validation loss, stochastic weight averaging (``AveragedModel`` + ``SWALR``, BN statistics
recomputed) evaluated against the best checkpoint so the better of the two on validation is kept,
resume from our own checkpoints, DistributedDataParallel under ``torchrun``.

Files written to ``out_dir`` (rank 0 only): ``train.log``, ``history.json`` (metrics per epoch),
``last.safetensors`` + ``last_state.pt`` (resume), ``best.safetensors``, ``swa.safetensors`` and the
chosen model as ``<name>.safetensors`` + ``<name>.json`` (model card).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import SWALR, AveragedModel

from core.fileio import atomic_output, write_text_atomic
from core.modelcard import DEMO_WARNING, INTENDED_USE, ModelCard, save_weights
from core.models import build, spec
from core.train import ddp
from core.train.data import BScanDataset, Sample, enable_image_cache
from core.train.losses import DistillationLoss, FocalLoss, balanced_class_weights
from core.train.metrics import classification_metrics
from core.train.transforms import eval_transform, train_transform, tta_views

__all__ = [
    "TrainConfig",
    "FitResult",
    "fit",
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
    distill_alpha: float = 0.3  # weight of CE(student, y); 1 - alpha on the soft targets
    distill_temperature: float = 4.0
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
    from core.modelcard import load_weights

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


def _save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_output(path, overwrite=True) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


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


def _prepare_teacher(teacher: torch.nn.Module, device: torch.device, cfg: TrainConfig) -> torch.nn.Module:
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if cfg.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher


def _teacher_input(
    x: torch.Tensor,
    cfg: TrainConfig,
    teacher_size: tuple[int, int] | None,
    teacher_norm: tuple[Sequence[float], Sequence[float]] | None,
) -> torch.Tensor:
    """The student's augmented batch as the teacher expects it (its size and normalisation)."""
    if teacher_norm is not None and (tuple(teacher_norm[0]) != cfg.mean or tuple(teacher_norm[1]) != cfg.std):
        ms = torch.tensor(cfg.mean, device=x.device).view(1, 3, 1, 1)
        ss = torch.tensor(cfg.std, device=x.device).view(1, 3, 1, 1)
        mt = torch.tensor(teacher_norm[0], device=x.device).view(1, 3, 1, 1)
        st = torch.tensor(teacher_norm[1], device=x.device).view(1, 3, 1, 1)
        x = (x * ss + ms - mt) / st
    if teacher_size is not None and tuple(x.shape[-2:]) != tuple(teacher_size):
        x = F.interpolate(x, size=tuple(teacher_size), mode="bilinear", align_corners=False, antialias=True)
    return x


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
        return _fit(
            cfg,
            list(train),
            list(val),
            out,
            teacher,
            teacher_size,
            teacher_norm,
            split_hash,
            card_extra or {},
            training_data or {},
            resume,
            stop_after,
        )
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


def _fit(
    cfg, train, val, out, teacher, teacher_size, teacher_norm, split_hash, card_extra, training_data, resume, stop_after
) -> FitResult:
    from tqdm.auto import tqdm

    device = pick_device(cfg)
    seed_everything(cfg.seed)
    net, status = build_model(cfg)
    log.info("%s (%s): %s; device %s, world size %d", cfg.name, cfg.arch, status, device, ddp.world_size())
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    k = len(cfg.classes)
    if cfg.cache_images:
        enable_image_cache()
    train_ds = BScanDataset(
        train,
        cfg.classes,
        train_transform(
            cfg.size,
            cfg.mean,
            cfg.std,
            cfg.augment,
            aspect=cfg.aspect,
            lateral_scale=cfg.lateral_scale,
            lateral_p=cfg.lateral_p,
        ),
    )
    weights = balanced_class_weights(train_ds.targets, k) if cfg.class_weights == "balanced" else None
    if cfg.loss == "focal":
        base_loss: torch.nn.Module = FocalLoss(cfg.focal_gamma, weights)
    elif cfg.loss == "ce":
        base_loss = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
    else:
        raise ValueError(f"loss must be 'focal' or 'ce', not {cfg.loss!r}")
    if cfg.sampling not in ("uniform", "balanced"):
        raise ValueError(f"sampling must be 'uniform' or 'balanced', not {cfg.sampling!r}")
    kd = DistillationLoss(cfg.distill_alpha, cfg.distill_temperature) if teacher is not None else None
    # validation losses are computed on the CPU (from gathered logits): keep a CPU copy of the loss
    val_criterion = copy.deepcopy(base_loss) if kd is None else torch.nn.CrossEntropyLoss()
    base_loss = base_loss.to(device)
    if teacher is not None:
        teacher = _prepare_teacher(teacher, device, cfg)

    prefix = head_prefix(net)
    head = [p for n, p in net.named_parameters() if n.startswith(prefix)]
    body = [p for n, p in net.named_parameters() if not n.startswith(prefix)]
    lrs = [cfg.lr, cfg.lr_backbone if cfg.lr_backbone is not None else cfg.lr]
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
    total_steps = steps_per_epoch * min(cfg.epochs, swa_epoch)
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    swa_model = AveragedModel(net) if cfg.swa else None
    swa_sched: SWALR | None = None

    state: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "best_val": float("inf"),
        "bad_epochs": 0,
        "history": [],
        "stopped": False,
    }
    last_w, last_s = out / "last.safetensors", out / "last_state.pt"
    if resume and last_w.is_file() and last_s.is_file():
        net.load_state_dict(_load_tensors(last_w))
        saved = torch.load(last_s, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        scaler.load_state_dict(saved["scaler"])
        state.update({k2: saved[k2] for k2 in ("epoch", "step", "best_val", "bad_epochs", "stopped")})
        state["history"] = json.loads(saved["history"])
        if swa_model is not None and (out / "swa_avg.safetensors").is_file():
            swa_model.load_state_dict(_load_tensors(out / "swa_avg.safetensors"))
        if saved.get("swalr"):
            swa_sched = SWALR(optimizer, swa_lr=cfg.swa_lr or 0.5 * cfg.lr, anneal_epochs=1)
            swa_sched.load_state_dict(saved["swalr"])
        log.info("resumed from %s at epoch %d", last_w, state["epoch"])
    elif resume:
        log.info("no checkpoint in %s; starting from scratch", out)

    # (torch.compile of a Module gives an OptimizedModule, a Module; its stub says Callable)
    model: torch.nn.Module = cast(torch.nn.Module, torch.compile(net)) if cfg.compile else net
    frozen = None
    wrapped = model
    epochs_run = 0
    while state["epoch"] < cfg.epochs and not state["stopped"]:
        epoch = state["epoch"]
        want_frozen = epoch < cfg.freeze_epochs
        if want_frozen != frozen:  # (re)wrap when the set of trainable parameters changes
            _set_backbone_trainable(net, not want_frozen)
            frozen = want_frozen
            wrapped = (
                torch.nn.parallel.DistributedDataParallel(
                    model, device_ids=[device.index] if device.type == "cuda" else None
                )
                if ddp.is_distributed()
                else model
            )
            log.info("epoch %d: backbone %s", epoch + 1, "frozen" if frozen else "trainable")
        seed_everything(cfg.seed * 7919 + epoch * 101 + ddp.rank())
        in_swa = cfg.swa and epoch >= swa_epoch
        if in_swa and swa_sched is None:
            swa_sched = SWALR(optimizer, swa_lr=cfg.swa_lr or 0.5 * cfg.lr, anneal_epochs=1)
        wrapped.train()
        loader = _loader(train_ds, cfg.batch_size, cfg, shuffle=True, epoch=epoch)
        bar = tqdm(
            total=batches,
            desc=f"{cfg.name} {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=not (cfg.progress and ddp.is_main()),
        )
        t0, loss_sum, seen, correct = time.perf_counter(), 0.0, 0, 0
        optimizer.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(loader):
            if i >= batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, cfg.amp):
                logits = wrapped(x)
                if teacher is not None:
                    assert kd is not None  # set whenever there is a teacher
                    with torch.no_grad():
                        t_logits = teacher(_teacher_input(x, cfg, teacher_size, teacher_norm))
                    loss = kd(logits, t_logits, y)
                else:
                    loss = base_loss(logits.float(), y)
            scaler.scale(loss / cfg.accum_steps).backward()
            if (i + 1) % cfg.accum_steps == 0:
                if not in_swa:
                    f = _lr_factor(state["step"], warmup_steps, total_steps, cfg.min_lr_ratio)
                    for g, base in zip(optimizer.param_groups, lrs):
                        g["lr"] = base * f
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        bar.close()
        train_secs = time.perf_counter() - t0
        if in_swa:
            assert swa_model is not None and swa_sched is not None  # both exist once in SWA
            swa_model.update_parameters(net)
            swa_sched.step()
        train_stats = ddp.all_reduce_mean(
            {"train_loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen)},
            device if device.type == "cuda" else "cpu",
        )
        v_logits, v_y = predict(net, val, cfg, device=device, tta=False)
        v_loss = _val_loss(v_logits, v_y, val_criterion)
        v_acc = float((v_logits.argmax(1) == v_y).mean()) if len(v_y) else float("nan")
        secs = time.perf_counter() - t0
        row = {
            "epoch": epoch + 1,
            **train_stats,
            "val_loss": v_loss,
            "val_acc": v_acc,
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
        state["history"].append(row)
        improved = v_loss < state["best_val"]
        if improved:
            state["best_val"], state["bad_epochs"] = v_loss, 0
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if cfg.patience and state["bad_epochs"] >= cfg.patience and not in_swa:
            state["stopped"] = True
            log.info("early stopping after epoch %d (no better validation loss for %d epochs)", epoch + 1, cfg.patience)
        log.info(
            "epoch %d/%d train_loss %.4f train_acc %.3f val_loss %.4f val_acc %.3f (%.1f s, %.0f images/s)",
            epoch + 1,
            cfg.epochs,
            train_stats["train_loss"],
            train_stats["train_acc"],
            v_loss,
            v_acc,
            row["seconds"],
            row["images_per_s"],
        )
        if ddp.is_main():
            if improved:
                _save_tensors(net.state_dict(), out / "best.safetensors")
            _save_tensors(net.state_dict(), last_w)
            if swa_model is not None and in_swa:
                _save_tensors(swa_model.state_dict(), out / "swa_avg.safetensors")
            with atomic_output(last_s, overwrite=True) as tmp:
                torch.save(
                    {
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(),
                        "swalr": swa_sched.state_dict() if swa_sched is not None else {},
                        "history": json.dumps(state["history"]),
                        **{k2: state[k2] for k2 in ("epoch", "step", "best_val", "bad_epochs", "stopped")},
                    },
                    tmp,
                )
            _write_json(out / "history.json", state["history"])
        ddp.barrier()
        epochs_run += 1
        if stop_after is not None and epochs_run >= stop_after and state["epoch"] < cfg.epochs:
            log.info("stopping after %d epoch(s) as asked; resume to continue", epochs_run)
            return FitResult(net.eval(), None, state["history"], "last", {}, out, cfg)

    return _choose(
        cfg,
        net,
        swa_model,
        train_ds,
        val,
        val_criterion,
        device,
        out,
        state,
        split_hash,
        card_extra,
        training_data,
        status,
    )


def _choose(
    cfg, net, swa_model, train_ds, val, val_criterion, device, out, state, split_hash, card_extra, training_data, status
) -> FitResult:
    """Best checkpoint vs SWA (BN statistics recomputed) on validation; save the better one with its card."""
    candidates: dict[str, dict[str, torch.Tensor]] = {}
    best_file = out / "best.safetensors"
    ddp.barrier()
    candidates["best" if best_file.is_file() else "last"] = (
        _load_tensors(best_file)
        if best_file.is_file()
        else {k: v.detach().clone() for k, v in net.state_dict().items()}
    )
    if swa_model is not None and swa_model.n_averaged.item() > 0:
        bn_loader = _loader(train_ds, cfg.batch_size, cfg, shuffle=True, epoch=10_000)
        seed_everything(cfg.seed + 424242)
        swa_net = swa_model.module
        torch.optim.swa_utils.update_bn(
            (
                (x.to(device).contiguous(memory_format=torch.channels_last) if cfg.channels_last else x.to(device))
                for x, _ in bn_loader
            ),
            swa_net,
        )
        ddp.broadcast_state(swa_net)  # each rank saw its own shard: keep rank 0's BN statistics everywhere
        candidates["swa"] = {k: v.detach().clone() for k, v in swa_net.state_dict().items()}
        if ddp.is_main():
            _save_tensors(candidates["swa"], out / "swa.safetensors")
    scores: dict[str, tuple[float, np.ndarray, np.ndarray]] = {}
    for name, sd in candidates.items():
        net.load_state_dict(sd)
        lg, y = predict(net, val, cfg, device=device, tta=False)
        scores[name] = (_val_loss(lg, y, val_criterion), lg, y)
        log.info("validation loss of the %s model: %.4f", name, scores[name][0])
    chosen = min(scores, key=lambda n: (scores[n][0] if not math.isnan(scores[n][0]) else float("inf"), n != "best"))
    net.load_state_dict(candidates[chosen])
    net = net.cpu().eval().to(memory_format=torch.contiguous_format)
    _, lg, y = scores[chosen]
    probs = torch.softmax(torch.from_numpy(lg), 1).numpy()
    vm = classification_metrics(y, probs, cfg.classes) if len(y) else {}
    vm["loss"] = scores[chosen][0]
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
            split_hash=split_hash,
            demo=cfg.demo,
            metrics={"validation": vm, "val_loss_by_candidate": {n: s[0] for n, s in scores.items()}},
            training_data=dict(training_data),
            intended_use=(DEMO_WARNING if cfg.demo else INTENDED_USE),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            extra={
                **card_extra,
                "chosen": chosen,
                "pretrained": status,
                "epochs_run": state["epoch"],
                "config": dataclasses.asdict(cfg),
            },
        )
        save_weights(card, net.state_dict(), out)
        _write_json(out / "history.json", state["history"])
    ddp.barrier()
    return FitResult(net, card, state["history"], chosen, vm, out, cfg)


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, default=float) + "\n", overwrite=True)
