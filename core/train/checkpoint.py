"""What a training run remembers between epochs (:class:`TrainState`) and the resume files it keeps
in its folder (:class:`Checkpoint`), written through :mod:`core.fileio`.

The layout is the one :func:`core.train.loop.fit` has always written, so older runs resume:

- ``last.safetensors``: the model after the last finished epoch;
- ``last_state.pt``: ``torch.save`` of a plain dict, read with ``weights_only=True``: ``optimizer``,
  ``scaler`` (grad scaler), ``swalr`` (the SWA scheduler's state, ``{}`` before SWA), ``history``
  (the per-epoch rows as a JSON string) and the :class:`TrainState` counters ``epoch``, ``step``,
  ``best_val``, ``bad_epochs``, ``stopped``;
- ``swa_avg.safetensors``: the running SWA average (``AveragedModel``), from the first SWA epoch on;
- ``best.safetensors``: the model of the best validation loss so far.

A save writes every file to a temporary file first and moves them into place only when all are
written (``last_state.pt`` last), so a run killed while saving leaves the previous checkpoint as it
was. The weights files carry the epoch in their safetensors metadata (files of older runs have
none); a resume refuses files of different epochs (a run killed between two of those moves).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.optim.swa_utils import SWALR, AveragedModel

from core.fileio import atomic_output

__all__ = ["TrainState", "Checkpoint", "CheckpointError", "save_tensors", "read_tensors", "load_tensors"]

# the TrainState counters stored as such in last_state.pt (history travels as a JSON string)
_COUNTERS = ("epoch", "step", "best_val", "bad_epochs", "stopped")


class CheckpointError(RuntimeError):
    """Resume files that do not belong together."""


@dataclass
class TrainState:
    """The loop's counters: epochs finished, optimizer steps taken (they drive the learning-rate
    schedule), the best validation loss and the epochs since it, whether early stopping ended the
    run, and one history row per finished epoch."""

    epoch: int = 0
    step: int = 0
    best_val: float = math.inf
    bad_epochs: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def end_epoch(self, row: dict[str, Any], *, patience: int = 0, may_stop: bool = True) -> bool:
        """Record a finished epoch (``row`` has its ``val_loss``): append it to the history, count
        the epoch, track the best validation loss; with ``patience`` > 0 (and ``may_stop``: not in
        SWA) stop after that many epochs without a better one. True when this epoch was the best so
        far (a NaN loss never is)."""
        self.history.append(row)
        improved = bool(row["val_loss"] < self.best_val)
        if improved:
            self.best_val, self.bad_epochs = row["val_loss"], 0
        else:
            self.bad_epochs += 1
        self.epoch += 1
        if patience and self.bad_epochs >= patience and may_stop:
            self.stopped = True
        return improved

    def to_checkpoint(self) -> dict[str, Any]:
        """The counters and the history as ``last_state.pt`` holds them."""
        return {"history": json.dumps(self.history), **{k: getattr(self, k) for k in _COUNTERS}}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> TrainState:
        return cls(**{k: saved[k] for k in _COUNTERS}, history=json.loads(saved["history"]))


def save_tensors(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``state`` as safetensors at ``path`` (CPU, contiguous), atomically, replacing ``path``."""
    with atomic_output(path, overwrite=True) as tmp:
        _write_tensors(state, tmp, metadata)


def _write_tensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path), metadata=metadata)


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a safetensors file (on the CPU) and its metadata (``{}`` when it has none)."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return read_tensors(path)[0]


class Checkpoint:
    """The resume files of the training folder ``folder`` (layout in the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.weights = self.folder / "last.safetensors"
        self.state_file = self.folder / "last_state.pt"
        self.swa_file = self.folder / "swa_avg.safetensors"
        self.best = self.folder / "best.safetensors"

    def exists(self) -> bool:
        return self.weights.is_file() and self.state_file.is_file()

    def save(
        self,
        state: TrainState,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        *,
        swa_model: AveragedModel | None = None,
        swa_sched: SWALR | None = None,
        best: bool = False,
    ) -> None:
        """Save after a finished epoch: ``model`` as the last (and, with ``best``, the best) weights,
        ``swa_model`` (given in SWA epochs) as the running average, the optimizer, scaler, SWA
        scheduler and ``state``. All files are written before any is moved into place."""
        meta = {"epoch": str(state.epoch)}
        payload = {
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "swalr": swa_sched.state_dict() if swa_sched is not None else {},
            **state.to_checkpoint(),
        }
        with contextlib.ExitStack() as stack:
            # the moves run in reverse order of entry: best, last, swa_avg, and last_state.pt last
            torch.save(payload, stack.enter_context(atomic_output(self.state_file, overwrite=True)))
            if swa_model is not None:
                _write_tensors(swa_model.state_dict(), stack.enter_context(atomic_output(self.swa_file, True)), meta)
            sd = model.state_dict()
            _write_tensors(sd, stack.enter_context(atomic_output(self.weights, overwrite=True)), meta)
            if best:
                _write_tensors(sd, stack.enter_context(atomic_output(self.best, overwrite=True)), meta)

    def load(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        *,
        swa_model: AveragedModel | None = None,
        make_swalr: Callable[[], SWALR] | None = None,
    ) -> tuple[TrainState, SWALR | None]:
        """Load the checkpoint into ``model``, ``optimizer``, ``scaler`` and ``swa_model`` (when its
        file exists) and return the state and the SWA scheduler (``make_swalr()`` loaded with the
        saved state, made only when SWA had begun; it is made after the optimizer is loaded, as
        the loop makes it). Raises :class:`CheckpointError` for files of different epochs."""
        weights, meta = read_tensors(self.weights)
        saved = torch.load(self.state_file, map_location="cpu", weights_only=True)
        state = TrainState.from_checkpoint(saved)
        swa = read_tensors(self.swa_file) if swa_model is not None and self.swa_file.is_file() else None
        self._check_epoch(self.weights, meta, state.epoch)
        if swa is not None and saved.get("swalr"):
            self._check_epoch(self.swa_file, swa[1], state.epoch)
        model.load_state_dict(weights)
        optimizer.load_state_dict(saved["optimizer"])
        scaler.load_state_dict(saved["scaler"])
        if swa is not None:
            assert swa_model is not None  # (swa is only read for a swa_model)
            swa_model.load_state_dict(swa[0])
        swa_sched = None
        if saved.get("swalr"):
            if make_swalr is None:
                raise CheckpointError(f"{self.state_file}: the run had begun SWA; resume it with SWA on")
            swa_sched = make_swalr()
            swa_sched.load_state_dict(saved["swalr"])
        return state, swa_sched

    def _check_epoch(self, path: Path, meta: dict[str, str], epoch: int) -> None:
        if "epoch" in meta and int(meta["epoch"]) != epoch:
            raise CheckpointError(
                f"{path}: saved after epoch {meta['epoch']}, but {self.state_file.name} after epoch {epoch} "
                f"(the run was stopped while saving); remove {self.weights.name} and {self.state_file.name} "
                "to start this run over"
            )
