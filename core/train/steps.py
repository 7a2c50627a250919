"""What one training batch does, as objects that own their loss (timm's task objects):
:class:`SupervisedStep` (focal or cross-entropy on the labels) and :class:`DistillationStep` (the
frozen teacher on the same augmented batch, :class:`~core.train.losses.DistillationLoss`); the
teacher may be a :class:`TeacherEnsemble` of several frozen models.

A step is called as ``step(model, x, y)`` (inside the loop's autocast) and returns the loss to
back-propagate and the model's logits; ``step.val_criterion`` is the CPU loss of validation.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F

from core.train.losses import DistillationLoss

__all__ = [
    "StepOutput",
    "TrainStep",
    "SupervisedStep",
    "DistillationStep",
    "TeacherInput",
    "TeacherEnsemble",
    "prepare_teacher",
]


class StepOutput(NamedTuple):
    loss: torch.Tensor  # scalar, the batch mean
    logits: torch.Tensor  # the model's, [b, C]


class TrainStep(Protocol):
    val_criterion: torch.nn.Module

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput: ...


class SupervisedStep:
    """``criterion(model(x), y)`` with the logits in float32. Validation uses a CPU copy of the
    same criterion (class weights included): validation losses are computed from gathered logits."""

    def __init__(self, criterion: torch.nn.Module, device: torch.device | str = "cpu"):
        self.val_criterion = copy.deepcopy(criterion).cpu()
        self.criterion = criterion.to(device)

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        logits = model(x)
        return StepOutput(self.criterion(logits.float(), y), logits)


class TeacherInput(torch.nn.Module):
    """The student's augmented batch as the teacher expects it: renormalised from the student's
    ``(mean, std)`` to the teacher's ``norm`` and resized (bilinear, antialiased) to its ``size``;
    None: as the student's. A module without parameters, so it can sit in front of a teacher."""

    def __init__(
        self,
        student_norm: tuple[Sequence[float], Sequence[float]],
        size: tuple[int, int] | None = None,
        norm: tuple[Sequence[float], Sequence[float]] | None = None,
    ):
        super().__init__()
        self.student_norm = (tuple(student_norm[0]), tuple(student_norm[1]))
        self.size, self.norm = size, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.norm
        if norm is not None and (tuple(norm[0]) != self.student_norm[0] or tuple(norm[1]) != self.student_norm[1]):
            ms = torch.tensor(self.student_norm[0], device=x.device).view(1, 3, 1, 1)
            ss = torch.tensor(self.student_norm[1], device=x.device).view(1, 3, 1, 1)
            mt = torch.tensor(norm[0], device=x.device).view(1, 3, 1, 1)
            st = torch.tensor(norm[1], device=x.device).view(1, 3, 1, 1)
            x = (x * ss + ms - mt) / st
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            x = F.interpolate(x, size=tuple(self.size), mode="bilinear", align_corners=False, antialias=True)
        return x


class TeacherEnsemble(torch.nn.Module):
    """Several frozen teachers as one: each member gets the student's batch as it expects it (its
    own :class:`TeacherInput`, or the batch itself for None), and the ensemble's logits are the mean
    of the members' (float32). Under the softmax that is the normalised geometric mean of the
    members' probabilities, at any distillation temperature."""

    def __init__(self, members: Sequence[torch.nn.Module], inputs: Sequence[TeacherInput | None] | None = None):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a teacher ensemble needs at least 2 models, not {len(members)}")
        inputs = list(inputs) if inputs is not None else [None] * len(members)
        if len(inputs) != len(members):
            raise ValueError(f"{len(members)} teachers but {len(inputs)} teacher inputs")
        self.members = torch.nn.ModuleList(members)
        self.inputs = inputs

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The largest input size among the members' (None if every member takes the batch as it is)."""
        sizes = [(int(t.size[0]), int(t.size[1])) for t in self.inputs if t is not None and t.size is not None]
        return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [m(t(x) if t is not None else x).float() for m, t in zip(self.members, self.inputs, strict=True)]
        return torch.stack(logits).mean(0)


def prepare_teacher(teacher: torch.nn.Module, device: torch.device, channels_last: bool = True) -> torch.nn.Module:
    """``teacher`` on ``device``, in eval mode, every parameter frozen (and channels_last)."""
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher


class DistillationStep:
    """Online distillation: the frozen ``teacher`` (see :func:`prepare_teacher`) runs without
    gradients on the same augmented batch (through ``teacher_input``), and the loss is
    ``loss(student_logits, teacher_logits, y)``.

    ``val_criterion``: the validation loss (which picks the best checkpoint; a CPU copy is kept),
    plain cross-entropy by default; the loop gives the student's own loss, as its control has.
    ``student_size``: when the batch is augmented at a larger teacher's size, the student gets it
    downsampled (bilinear, antialiased) to its own, so the teacher sees the view at its full
    resolution instead of an upsampled student view; None: the student gets the batch as it is."""

    def __init__(
        self,
        teacher: torch.nn.Module,
        loss: DistillationLoss,
        teacher_input: TeacherInput | None = None,
        student_size: tuple[int, int] | None = None,
        val_criterion: torch.nn.Module | None = None,
    ):
        self.teacher, self.loss, self.teacher_input = teacher, loss, teacher_input
        self.student_size = tuple(student_size) if student_size is not None else None
        self.val_criterion: torch.nn.Module = (
            copy.deepcopy(val_criterion).cpu() if val_criterion is not None else torch.nn.CrossEntropyLoss()
        )

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> StepOutput:
        xs = x
        if self.student_size is not None and tuple(x.shape[-2:]) != self.student_size:
            xs = F.interpolate(x, size=self.student_size, mode="bilinear", align_corners=False, antialias=True)
        logits = model(xs)
        with torch.no_grad():
            t_logits = self.teacher(self.teacher_input(x) if self.teacher_input is not None else x)
        return StepOutput(self.loss(logits, t_logits, y), logits)
