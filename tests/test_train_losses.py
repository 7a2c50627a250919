"""Focal and distillation losses against values computed by hand (plain math, no torch)."""

import math

import numpy as np
import pytest
import torch

from core.train.losses import DistillationLoss, FocalLoss, balanced_class_weights


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]
TARGET = [0, 1]


def test_focal_loss_matches_hand_computation():
    alpha = [0.5, 2.0, 1.0]
    expected = 0.0
    for row, t in zip(LOGITS, TARGET):
        p = _softmax(row)[t]
        expected += -alpha[t] * (1 - p) ** 2 * math.log(p)
    expected /= 2
    got = FocalLoss(gamma=2.0, alpha=torch.tensor(alpha))(torch.tensor(LOGITS), torch.tensor(TARGET))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_gamma_zero_is_cross_entropy():
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    assert FocalLoss(0.0)(logits, y).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5
    )


def test_focal_loss_down_weights_easy_examples():
    easy = FocalLoss(2.0)(torch.tensor([[8.0, 0.0, 0.0]]), torch.tensor([0]))
    ce = torch.nn.functional.cross_entropy(torch.tensor([[8.0, 0.0, 0.0]]), torch.tensor([0]))
    assert easy.item() < 1e-3 * ce.item()


def test_distillation_loss_matches_hand_computation():
    student, teacher = LOGITS, [[1.0, 1.5, -0.5], [-1.0, 0.0, 2.0]]
    a, T = 0.3, 4.0
    ce = sum(-math.log(_softmax(s)[t]) for s, t in zip(student, TARGET)) / 2
    kl = 0.0
    for s, t in zip(student, teacher):
        ps, pt = _softmax([x / T for x in s]), _softmax([x / T for x in t])
        kl += sum(q * math.log(q / p) for p, q in zip(ps, pt))
    kl /= 2
    expected = a * ce + (1 - a) * T * T * kl
    got = DistillationLoss(a, T)(torch.tensor(student), torch.tensor(teacher), torch.tensor(TARGET))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_distillation_with_identical_logits_is_only_the_hard_term():
    s = torch.tensor(LOGITS)
    got = DistillationLoss(0.3, 4.0)(s, s.clone(), torch.tensor(TARGET))
    assert got.item() == pytest.approx(
        0.3 * torch.nn.functional.cross_entropy(s, torch.tensor(TARGET)).item(), rel=1e-5
    )


def test_distillation_rejects_bad_options():
    with pytest.raises(ValueError):
        DistillationLoss(1.5, 4.0)
    with pytest.raises(ValueError):
        DistillationLoss(0.3, 0.0)


def test_balanced_class_weights():
    w = balanced_class_weights([0, 0, 0, 1, 2, 2], 4)
    # n / (k * count) over the 3 present classes; the absent class gets 0
    np.testing.assert_allclose(w.numpy(), [6 / 9, 6 / 3, 6 / 6, 0.0], rtol=1e-6)
