"""The step objects (supervised vs distillation, each owning its loss) and the loop's named pieces,
train_one_epoch and validate, used on their own."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.train.checkpoint import TrainState
from core.train.data import read_manifest
from core.train.loop import (
    TrainConfig,
    WarmupCosine,
    build_model,
    distill_view,
    make_step,
    train_one_epoch,
    validate,
)
from core.train.losses import DistillationLoss, FocalLoss
from core.train.splits import make_splits, samples_of
from core.train.steps import DistillationStep, SupervisedStep, TeacherEnsemble, TeacherInput, prepare_teacher
from tests.fixtures.toy import write_toy_dataset

C = 3


class _Fixed(torch.nn.Module):
    """A 'model' whose logits are given: row i of ``logits`` for the sample whose first pixel is i."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


class _OneHotTeacher(torch.nn.Module):
    """Logits ``scale * one_hot(label)`` for the sample whose second pixel holds its label."""

    def __init__(self, scale=1.0, shift=0):
        super().__init__()
        self.scale, self.shift = scale, shift
        self.w = torch.nn.Parameter(torch.ones(()))  # a parameter, to see that no gradient reaches it

    def forward(self, x):
        return self.w * self.scale * F.one_hot((x[:, 0, 0, 1].long() + self.shift) % C, C).float()


def _batch():
    torch.manual_seed(0)
    y = torch.tensor([0, 1, 2, 1, 0])
    x = torch.zeros(5, 3, 4, 4)
    x[:, 0, 0, 0] = torch.arange(5).float()  # which logits row
    x[:, 0, 0, 1] = y.float()  # the label, for the teacher
    return x, y, _Fixed(torch.randn(5, C) * 2)


def _log_softmax(a):
    a = a - a.max(1, keepdims=True)
    return a - np.log(np.exp(a).sum(1, keepdims=True))


def test_distillation_from_a_one_hot_teacher_gives_the_expected_loss():
    x, y, student = _batch()
    alpha, T = 0.3, 4.0
    out = DistillationStep(_OneHotTeacher(), DistillationLoss(alpha, T))(student, x, y)
    # by hand: alpha * CE(s, y) + (1 - alpha) * T^2 * KL(softmax(onehot / T) || softmax(s / T))
    s, yy = student.logits.detach().double().numpy(), y.numpy()
    ce = -_log_softmax(s)[np.arange(5), yy].mean()
    log_p = _log_softmax(np.eye(C)[yy] / T)
    kl = (np.exp(log_p) * (log_p - _log_softmax(s / T))).sum(1).mean()
    assert out.loss.item() == pytest.approx(alpha * ce + (1 - alpha) * T * T * kl, rel=1e-5)
    torch.testing.assert_close(out.logits, student(x))
    # a teacher sure of the labels (huge one-hot logits): the soft term is T^2 * CE(s / T, y)
    teacher = _OneHotTeacher(scale=1e4)
    sure = DistillationStep(teacher, DistillationLoss(alpha, T))(student, x, y)
    ce_t = -_log_softmax(s / T)[np.arange(5), yy].mean()
    assert sure.loss.item() == pytest.approx(alpha * ce + (1 - alpha) * T * T * ce_t, rel=1e-5)
    # gradients reach the student only (the teacher runs without autograd)
    sure.loss.backward()
    assert student.logits.grad is not None and teacher.w.grad is None


def test_the_supervised_step_differs_from_distillation_when_the_teacher_disagrees():
    x, y, _ = _batch()
    student = _Fixed(3 * F.one_hot(y, C).float() + 0.1 * torch.randn(5, C))  # mostly right
    sup = SupervisedStep(torch.nn.CrossEntropyLoss())(student, x, y)
    assert sup.loss.item() == pytest.approx(F.cross_entropy(student.logits, y).item(), rel=1e-6)
    # at T = 1 a teacher certain of the labels teaches exactly the labels: same loss as supervised
    agree = DistillationStep(_OneHotTeacher(scale=1e4), DistillationLoss(0.3, 1.0))(student, x, y)
    assert agree.loss.item() == pytest.approx(sup.loss.item(), rel=1e-5)
    # a teacher certain of other classes pulls elsewhere
    other = DistillationStep(_OneHotTeacher(scale=1e4, shift=1), DistillationLoss(0.3, 1.0))(student, x, y)
    wrong = F.cross_entropy(student.logits, (y + 1) % C).item()
    assert other.loss.item() == pytest.approx(0.3 * sup.loss.item() + 0.7 * wrong, rel=1e-5)
    assert other.loss.item() > sup.loss.item() + 1.0
    g_sup = torch.autograd.grad(sup.loss, student.logits)[0]
    g_kd = torch.autograd.grad(other.loss, student.logits)[0]
    assert not torch.allclose(g_sup, g_kd)
    # with alpha = 1 the teacher is ignored
    only_labels = DistillationStep(_OneHotTeacher(scale=1e4, shift=1), DistillationLoss(1.0, 4.0))(student, x, y)
    assert only_labels.loss.item() == pytest.approx(sup.loss.item(), rel=1e-6)


def test_steps_own_their_validation_loss():
    w = torch.tensor([1.0, 2.0, 0.5])
    sup = SupervisedStep(FocalLoss(2.0, w))
    assert isinstance(sup.val_criterion, FocalLoss) and sup.val_criterion is not sup.criterion
    torch.testing.assert_close(sup.val_criterion.alpha, w)
    kd = DistillationStep(_OneHotTeacher(), DistillationLoss())
    assert isinstance(kd.val_criterion, torch.nn.CrossEntropyLoss) and kd.val_criterion.weight is None


def test_make_step_picks_the_step_and_freezes_the_teacher():
    cfg = TrainConfig(arch="test_efficientnet", loss="focal", input_size=32)
    targets = np.array([0, 0, 0, 1, 2])
    sup = make_step(cfg, targets, torch.device("cpu"))
    assert isinstance(sup, SupervisedStep) and isinstance(sup.criterion, FocalLoss)
    assert sup.criterion.alpha is not None and sup.criterion.alpha[0] < sup.criterion.alpha[1]  # balanced
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 3)).train()
    kd = make_step(cfg, targets, torch.device("cpu"), teacher=teacher, teacher_size=(64, 64))
    assert isinstance(kd, DistillationStep) and kd.loss.alpha == cfg.distill_alpha
    assert kd.student_size == (32, 32)  # batches come at the teacher's 64 px; the student gets 32 px
    assert not kd.teacher.training and not any(p.requires_grad for p in kd.teacher.parameters())
    out = kd(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3)),
        torch.randn(2, 3, 64, 64),
        torch.tensor([0, 1]),
    )
    assert out.logits.shape == (2, 3) and math.isfinite(out.loss.item())
    with pytest.raises(ValueError, match="loss must be"):
        make_step(TrainConfig(arch="test_efficientnet", loss="mse"), targets, torch.device("cpu"))


def test_distillation_weighs_the_labels_as_the_control_does():
    """The hard-label term is the student's own supervised loss (balanced class weights here), and so
    is the validation loss that picks the checkpoint; distill_hard='ce' is the unweighted loss of
    earlier runs."""
    cfg = TrainConfig(arch="test_efficientnet", loss="ce", class_weights="balanced", input_size=32)
    targets = np.array([0, 0, 0, 0, 1, 2])  # class 0 common: its weight is the smallest
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    control = make_step(cfg, targets, torch.device("cpu"))
    kd = make_step(cfg, targets, torch.device("cpu"), teacher=teacher)
    torch.testing.assert_close(kd.loss.hard.weight, control.criterion.weight)
    torch.testing.assert_close(kd.val_criterion.weight, control.val_criterion.weight)
    x, y, student = _batch()
    only_labels = DistillationStep(_OneHotTeacher(), DistillationLoss(1.0, 4.0, hard=control.criterion))
    assert only_labels(student, x, y).loss.item() == pytest.approx(control(student, x, y).loss.item(), rel=1e-6)
    unweighted = F.cross_entropy(student(x), y).item()
    assert control(student, x, y).loss.item() != pytest.approx(unweighted, rel=1e-3)  # the weights matter here
    old = make_step(
        TrainConfig(**{**cfg.__dict__, "distill_hard": "ce"}), targets, torch.device("cpu"), teacher=teacher
    )
    assert old.loss.hard is None and old.val_criterion.weight is None
    with pytest.raises(ValueError, match="distill_hard must be"):
        make_step(
            TrainConfig(**{**cfg.__dict__, "distill_hard": "focal"}), targets, torch.device("cpu"), teacher=teacher
        )


def test_teacher_input_renormalises_and_resizes():
    raw = torch.rand(2, 3, 8, 8)
    s_mean, s_std, t_mean, t_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def norm(a, m, s):
        return (a - torch.tensor(m).view(1, 3, 1, 1)) / torch.tensor(s).view(1, 3, 1, 1)

    to_teacher = TeacherInput((s_mean, s_std), size=None, norm=(t_mean, t_std))
    torch.testing.assert_close(to_teacher(norm(raw, s_mean, s_std)), norm(raw, t_mean, t_std))
    x = norm(raw, s_mean, s_std)
    assert TeacherInput((s_mean, s_std))(x) is x  # the same size and normalisation: untouched
    assert TeacherInput((s_mean, s_std), size=(16, 16), norm=(s_mean, s_std))(x).shape == (2, 3, 16, 16)


class _Affine(torch.nn.Module):
    """Logits ``x.mean over pixels (per channel) @ w + b``; records the input size it was given."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(torch.as_tensor(w).float()), torch.nn.Parameter(torch.as_tensor(b).float())
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return x.mean((2, 3)) @ self.w + self.b


def test_a_teacher_ensemble_averages_its_members_logits_each_on_its_own_input():
    torch.manual_seed(0)
    a = _Affine(torch.randn(3, C), torch.randn(C))
    b = _Affine(torch.randn(3, C), torch.randn(C))
    s_norm, t_norm = ((0.5,) * 3, (0.25,) * 3), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    to_b = TeacherInput(s_norm, size=(12, 12), norm=t_norm)
    ens = TeacherEnsemble([a, b], [None, to_b])
    x = torch.randn(4, 3, 8, 8)
    out = ens(x)
    torch.testing.assert_close(out, (a(x) + b(to_b(x))) / 2)
    assert a.seen[0] == (8, 8) and b.seen[0] == (12, 12)  # each member saw the batch as it expects it
    # the mean of the logits is the normalised geometric mean of the members' probabilities
    pa, pb = torch.softmax(a(x), 1), torch.softmax(b(to_b(x)), 1)
    geo = (pa * pb).sqrt()
    torch.testing.assert_close(torch.softmax(out, 1), geo / geo.sum(1, keepdim=True))
    # an ensemble is frozen like one teacher: every member in eval mode, no gradients
    frozen = prepare_teacher(ens.train(), torch.device("cpu"), channels_last=False)
    assert not any(m.training for m in frozen.modules())
    assert not any(p.requires_grad for p in frozen.parameters()) and len(list(frozen.parameters())) == 4
    # a distillation step with an ensemble teacher learns from the average, not from one member
    x, y, student = _batch()
    one, other = _OneHotTeacher(scale=1e4), _OneHotTeacher(scale=1e4, shift=1)
    both = DistillationStep(TeacherEnsemble([one, other]), DistillationLoss(0.0, 1.0))(student, x, y)
    s = student.logits.detach().double()
    half = 0.5 * (F.one_hot(y, C) + F.one_hot((y + 1) % C, C)).double()  # softmax of the mean of 1e4 one-hots
    want = (half * (half.clamp_min(1e-30).log() - torch.log_softmax(s, 1))).sum(1).mean()
    assert both.loss.item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        TeacherEnsemble([a])
    with pytest.raises(ValueError, match="2 teachers but 1"):
        TeacherEnsemble([a, b], [None])


def test_a_larger_teacher_sees_the_batch_at_full_size_and_the_student_a_downsampled_copy():
    torch.manual_seed(0)
    teacher, student = _Affine(torch.randn(3, C), torch.zeros(C)), _Affine(torch.randn(3, C), torch.zeros(C))
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    kd = DistillationStep(teacher, DistillationLoss(), TeacherInput(((0.5,) * 3, (0.5,) * 3), size=(16, 16)), (8, 8))
    kd(student, x, y)
    assert teacher.seen == [(16, 16)] and student.seen == [(8, 8)]
    small = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(kd(student, x, y).logits, student(small))
    # without student_size the student takes the batch as it is (the student's own view)
    DistillationStep(teacher, DistillationLoss())(student, x[..., :8, :8], y)
    assert student.seen[-1] == (8, 8) and teacher.seen[-1] == (8, 8)


def test_distill_view_is_the_larger_of_teacher_and_student():
    cfg = TrainConfig(arch="test_efficientnet", input_size=48)
    t = torch.nn.Linear(1, 1)
    assert distill_view(cfg, None, None) == (48, 48)
    assert distill_view(cfg, t, (64, 64)) == (64, 64)
    assert distill_view(cfg, t, (32, 32)) == (48, 48)  # a smaller teacher: the student's view, downsampled for it
    assert distill_view(TrainConfig(arch="test_efficientnet", input_size=48, distill_view="student"), t, (64, 64)) == (
        48,
        48,
    )
    norm = ((0.5,) * 3, (0.5,) * 3)
    ens = TeacherEnsemble([t, torch.nn.Linear(1, 1)], [TeacherInput(norm, (56, 56)), TeacherInput(norm, (72, 72))])
    assert ens.input_size == (72, 72) and distill_view(cfg, ens, None) == (72, 72)
    assert TeacherEnsemble([t, t]).input_size is None and distill_view(cfg, TeacherEnsemble([t, t]), None) == (48, 48)
    with pytest.raises(ValueError, match="distill_view"):
        distill_view(TrainConfig(arch="test_efficientnet", distill_view="teacher"), t, (64, 64))


def test_train_one_epoch_on_its_own():
    """A hand-made loader, model, step, optimizer and state: the loop's epoch without fit."""
    torch.manual_seed(0)
    centres = torch.randn(C, 3, 4, 4) * 2
    y = torch.arange(48) % C
    x = centres[y] + 0.3 * torch.randn(48, 3, 4, 4)
    loader = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 48, 8)]  # 6 batches
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, C))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    cfg = TrainConfig(arch="test_efficientnet", accum_steps=2, progress=False, channels_last=False)
    step, state = SupervisedStep(torch.nn.CrossEntropyLoss()), TrainState()
    sched = WarmupCosine((0.05,), warmup_steps=2, total_steps=9, floor=0.01)
    first = train_one_epoch(model, loader, step, opt, state, cfg, device=torch.device("cpu"), schedule=sched)
    assert set(first) == {"train_loss", "train_acc", "samples_this_rank", "train_seconds"}
    assert first["samples_this_rank"] == 48 and state.step == 3  # one optimizer step per 2 batches
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * sched.factor(2))
    for _ in range(2):
        last = train_one_epoch(model, loader, step, opt, state, cfg, device=torch.device("cpu"), schedule=sched)
    assert state.step == 9 and last["train_loss"] < first["train_loss"] and last["train_acc"] > 0.9
    # max_batches caps the pass; no schedule leaves the learning rate alone (as in SWA epochs)
    opt.param_groups[0]["lr"] = 0.001
    capped = train_one_epoch(model, loader, step, opt, state, cfg, device=torch.device("cpu"), max_batches=2)
    assert capped["samples_this_rank"] == 16 and state.step == 10 and opt.param_groups[0]["lr"] == 0.001
    assert model.training


def test_validate_on_its_own(tmp_path):
    torch.set_num_threads(2)
    s = read_manifest(write_toy_dataset(tmp_path / "toy", patients=6, n_bscans=2))
    val = samples_of(s, make_splits(s, 3, seed=0, val_fraction=0.25).folds[0].val)
    cfg = TrainConfig(arch="test_efficientnet", input_size=32, progress=False)
    model, _ = build_model(cfg)
    model.eval()
    crit = torch.nn.CrossEntropyLoss()
    v = validate(model, val, cfg, crit)
    assert v.logits.shape == (len(val), C) and v.targets.shape == (len(val),)
    assert v.loss == pytest.approx(F.cross_entropy(torch.from_numpy(v.logits), torch.from_numpy(v.targets)).item())
    assert v.acc == pytest.approx(float((v.logits.argmax(1) == v.targets).mean()))
    assert v.row() == {"val_loss": v.loss, "val_acc": v.acc}
    assert not model.training  # validate leaves the mode as it found it
    empty = validate(model, [], cfg, crit)
    assert math.isnan(empty.loss) and math.isnan(empty.acc) and empty.logits.shape == (0, C)
