"""Losses of the KD-OCT recipe: focal loss for the teacher, online distillation for the student."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["balanced_class_weights", "FocalLoss", "DistillationLoss"]


def balanced_class_weights(targets: Sequence[int] | np.ndarray, num_classes: int) -> torch.Tensor:
    """sklearn's 'balanced' weights ``n / (k * count_c)`` for the classes present; absent classes get 0."""
    from sklearn.utils.class_weight import compute_class_weight  # noqa: PLC0415 (heavy: scikit-learn ~1.2 s)

    y = np.asarray(targets, dtype=np.int64)
    present = np.unique(y)
    w = np.zeros(num_classes, dtype=np.float32)
    w[present] = compute_class_weight("balanced", classes=present, y=y)
    return torch.from_numpy(w)


class FocalLoss(torch.nn.Module):
    """Focal loss ``-alpha_y (1 - p_y)^gamma log p_y`` averaged over the batch (Lin et al. 2017).

    ``alpha``: per-class weights (e.g. :func:`balanced_class_weights`) or None for 1.
    """

    alpha: torch.Tensor | None  # a registered buffer

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | Sequence[float] | None = None):
        super().__init__()
        self.gamma = float(gamma)
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - logp.exp()) ** self.gamma) * logp
        if self.alpha is not None:
            loss = loss * self.alpha.to(loss.device)[target]
        return loss.mean()


class DistillationLoss(torch.nn.Module):
    """``alpha * hard(s, y) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))`` (Hinton et al.).

    KD-OCT uses ``alpha = 0.3`` (so 0.7 on the soft targets) and ``T = 4``. ``hard`` is the loss on
    the labels: plain cross-entropy by default; the training loop passes the student's own supervised
    loss (its class weights, focal or CE), so that a distilled student and its control weigh the
    classes alike.
    """

    def __init__(self, alpha: float = 0.3, temperature: float = 4.0, hard: torch.nn.Module | None = None):
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or temperature <= 0:
            raise ValueError("distillation needs 0 <= alpha <= 1 and temperature > 0")
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.hard = hard

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        s, t, T = student_logits.float(), teacher_logits.float(), self.temperature
        ce = F.cross_entropy(s, target) if self.hard is None else self.hard(s, target)
        kl = F.kl_div(F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), reduction="batchmean", log_target=True)
        return self.alpha * ce + (1.0 - self.alpha) * T * T * kl
