"""The training loop with tiny models at 64 px: resume, freezing, SWA, distillation, model cards."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from core.modelcard import load_card
from core.train.data import read_manifest
from core.train.loop import (
    TrainConfig,
    _lr_factor,
    build_model,
    fit,
    head_prefix,
    load_model_from_card,
    seed_everything,
)
from core.train.splits import make_splits, samples_of
from tests.fixtures.toy import write_toy_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    torch.set_num_threads(2)
    s = read_manifest(write_toy_dataset(tmp_path_factory.mktemp("toy"), patients=9, n_bscans=3))
    plan = make_splits(s, 3, seed=0, val_fraction=0.25)
    f = plan.folds[0]
    return samples_of(s, f.train), samples_of(s, f.val), plan.hash


def _cfg(**kw):
    base = dict(
        arch="test_efficientnet",
        input_size=64,
        epochs=3,
        batch_size=8,
        lr=3e-3,
        progress=False,
        augment="light",
        seed=3,
    )
    return TrainConfig(**{**base, **kw})


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(data, tmp_path):
    train, val, _ = data
    cfg = _cfg(swa=True, swa_start=0.67)
    full = fit(cfg, train, val, tmp_path / "full")
    part = fit(cfg, train, val, tmp_path / "part", stop_after=1)
    assert len(part.history) == 1 and not (tmp_path / "part" / "model.json").exists()
    resumed = fit(cfg, train, val, tmp_path / "part", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "part" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert full.history[-1]["val_loss"] == pytest.approx(resumed.history[-1]["val_loss"], rel=1e-6)
    # and training did change the weights
    seed_everything(cfg.seed)
    init = build_model(cfg)[0].state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a if init[k].dtype.is_floating_point)


def test_frozen_backbone_and_lr_schedule(data, tmp_path):
    train, val, _ = data
    cfg = _cfg(arch="test_convnext", epochs=1, freeze_epochs=1, lr=1e-2)
    seed_everything(cfg.seed)
    init, _ = build_model(cfg)
    r = fit(cfg, train, val, tmp_path / "frozen")
    after = r.model.state_dict()
    prefix = head_prefix(r.model)
    changed = {k for k, v in init.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, after[k])}
    assert changed and all(k.startswith(prefix) for k in changed), changed
    # warm-up then cosine to the floor
    assert _lr_factor(0, 4, 20, 0.01) == pytest.approx(0.25)
    assert _lr_factor(3, 4, 20, 0.01) == pytest.approx(1.0)
    assert _lr_factor(20, 4, 20, 0.01) == pytest.approx(0.01)
    assert _lr_factor(12, 4, 20, 0.01) == pytest.approx(0.505)


def test_swa_is_evaluated_and_the_better_model_kept(data, tmp_path):
    train, val, h = data
    r = fit(
        _cfg(arch="test_convnext", epochs=3, swa=True, swa_start=0.34, loss="focal", role="teacher", name="teacher"),
        train,
        val,
        tmp_path / "t",
        split_hash=h,
        card_extra={"fold": 0},
    )
    card = load_card(tmp_path / "t" / "teacher.json")
    cands = card.metrics["val_loss_by_candidate"]
    assert set(cands) == {"best", "swa"} and (tmp_path / "t" / "swa.safetensors").is_file()
    assert r.chosen == min(cands, key=cands.get)
    assert card.extra["chosen"] == r.chosen and card.split_hash == h and card.role == "teacher"
    # the saved card reloads into the same network
    m = load_model_from_card(card)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(m(x), r.model.eval()(x))
    hist = json.loads((tmp_path / "t" / "history.json").read_text())
    assert [row["swa"] for row in hist] == [False, True, True]
    for row in hist:  # throughput of the training pass alone (the epoch time also holds validation)
        assert 0 < row["train_seconds"] <= row["seconds"]
        assert row["images_per_s"] == pytest.approx(row["samples_this_rank"] / row["train_seconds"])
    assert "epoch 3/3" in (tmp_path / "t" / "train.log").read_text()


def test_distillation_runs_the_frozen_teacher(data, tmp_path, monkeypatch):
    import core.train.loop as loop

    train, val, _ = data
    teacher = fit(_cfg(arch="test_convnext", epochs=1), train, val, tmp_path / "t").model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    calls = []
    teacher.register_forward_hook(lambda m, i, o: calls.append((m.training, torch.is_grad_enabled(), i[0].shape)))
    views = []  # the size the training batches are augmented at: the larger teacher's
    real = loop.train_transform
    monkeypatch.setattr(loop, "train_transform", lambda size, *a, **k: views.append(tuple(size)) or real(size, *a, **k))
    r = fit(
        _cfg(epochs=1, input_size=48, distill_alpha=0.3, distill_temperature=4.0),
        train,
        val,
        tmp_path / "s",
        teacher=teacher,
        teacher_size=(64, 64),
    )
    assert calls and all(not tr and not grad and shape[-2:] == (64, 64) for tr, grad, shape in calls)
    assert views == [(64, 64)] and r.model(torch.randn(1, 3, 48, 48)).shape == (1, 3)
    assert all(torch.equal(before[k], v.cpu()) for k, v in teacher.state_dict().items())
    # the caller's teacher comes back as it was given: device, mode and trainable flags
    assert next(teacher.parameters()).device.type == "cpu"
    assert teacher.training is False and all(p.requires_grad for p in teacher.parameters())
    assert np.isfinite(r.history[0]["train_loss"])


def test_unknown_option_is_refused():
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"arch": "test_efficientnet", "learning_rate": 1})


def test_balanced_sampling_draws_rare_classes_as_often_as_common_ones():
    import numpy as np
    import torch

    from core.train.loop import TrainConfig, _loader

    class _DS(torch.utils.data.Dataset):
        targets = np.array([0] * 90 + [1] * 9 + [2] * 1)

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, i):
            return torch.zeros(1), int(self.targets[i])

    def counts(sampling):
        cfg = TrainConfig(arch="test_efficientnet", sampling=sampling)
        drawn = [int(y) for ep in range(20) for _, ys in _loader(_DS(), 10, cfg, shuffle=True, epoch=ep) for y in ys]
        return np.bincount(drawn, minlength=3) / len(drawn)

    balanced, uniform = counts("balanced"), counts("uniform")
    assert all(abs(f - 1 / 3) < 0.06 for f in balanced), balanced
    assert uniform[2] < 0.03 and uniform[0] > 0.85, uniform


def test_a_run_checkpointed_in_the_older_layout_resumes_to_the_same_weights(data, tmp_path):
    """Resume files written as core/train/loop.py wrote them before core.train.checkpoint (no
    safetensors metadata, last_state.pt a plain dict of these keys), mid-SWA: the resumed run ends
    bit for bit where an uninterrupted one does."""
    train, val, _ = data
    cfg = _cfg(arch="test_convnext", swa=True, swa_start=0.34)  # SWA from the second of 3 epochs
    full = fit(cfg, train, val, tmp_path / "full")
    part = tmp_path / "part"
    fit(cfg, train, val, part, stop_after=2)
    for name in ("last", "swa_avg", "best"):  # rewrite the files in the old layout, explicitly
        save_file(load_file(part / f"{name}.safetensors"), part / f"{name}.safetensors")
    new = torch.load(part / "last_state.pt", weights_only=True)
    assert new["swalr"] and new["epoch"] == 2  # (SWA had begun)
    torch.save(
        {
            "optimizer": new["optimizer"],
            "scaler": new["scaler"],
            "swalr": new["swalr"],
            "history": new["history"],
            "epoch": new["epoch"],
            "step": new["step"],
            "best_val": new["best_val"],
            "bad_epochs": new["bad_epochs"],
            "stopped": new["stopped"],
        },
        part / "last_state.pt",
    )
    resumed = fit(cfg, train, val, part, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3] and resumed.chosen == full.chosen
    for name in ("last", "swa_avg", "swa", cfg.name):
        a, b = load_file(tmp_path / "full" / f"{name}.safetensors"), load_file(part / f"{name}.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    keep = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr_head", "lr_backbone", "swa")
    assert [{k: r[k] for k in keep} for r in resumed.history] == [{k: r[k] for k in keep} for r in full.history]
