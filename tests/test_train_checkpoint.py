"""TrainState and the resume files (core.train.checkpoint): the layout older runs wrote still loads,
a save is all-or-nothing, files of different epochs are refused."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import SWALR, AveragedModel

from core.fileio import clean_stale_temps
from core.train.checkpoint import Checkpoint, CheckpointError, TrainState

ROOT = Path(__file__).resolve().parents[1]


def _row(epoch, val_loss):
    return {"epoch": epoch, "train_loss": 1.0, "val_loss": val_loss}


def test_train_state_tracks_the_best_loss_and_stops_on_patience():
    s = TrainState()
    assert (s.epoch, s.step, s.best_val, s.bad_epochs, s.stopped, s.history) == (0, 0, math.inf, 0, False, [])
    assert s.end_epoch(_row(1, 0.9), patience=2)
    assert not s.end_epoch(_row(2, 0.95), patience=2) and not s.stopped
    assert s.end_epoch(_row(3, 0.5), patience=2)  # a better one resets the count
    assert (s.epoch, s.best_val, s.bad_epochs) == (3, 0.5, 0)
    assert not s.end_epoch(_row(4, float("nan")), patience=2)  # NaN never improves
    assert not s.end_epoch(_row(5, 0.6), patience=2, may_stop=False) and not s.stopped  # (in SWA)
    assert s.bad_epochs == 2
    assert not s.end_epoch(_row(6, 0.7), patience=2) and s.stopped
    assert [r["epoch"] for r in s.history] == [1, 2, 3, 4, 5, 6]
    never = TrainState()
    for e in range(5):
        never.end_epoch(_row(e + 1, 1.0 + e), patience=0)  # patience 0: no early stopping
    assert not never.stopped and never.bad_epochs == 4


def test_train_state_round_trips_through_the_state_file_layout():
    s = TrainState(epoch=4, step=37, best_val=0.31, bad_epochs=1, stopped=True, history=[_row(1, 0.5)])
    d = s.to_checkpoint()
    assert set(d) == {"history", "epoch", "step", "best_val", "bad_epochs", "stopped"}
    assert isinstance(d["history"], str) and json.loads(d["history"]) == s.history
    assert TrainState.from_checkpoint(d) == s


def _objects(seed=0):
    """A tiny model with two parameter groups (as the loop builds them), trained two steps, and its
    SWA average and scheduler after one SWA epoch."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    opt = torch.optim.AdamW(
        [
            {"params": net[2].parameters(), "lr": 1e-2},
            {"params": list(net[0].parameters()) + list(net[1].parameters())},
        ],
        lr=1e-3,
        weight_decay=0.02,
    )

    def train_step():
        torch.nn.functional.cross_entropy(net(torch.randn(8, 4)), torch.randint(0, 3, (8,))).backward()
        opt.step()
        opt.zero_grad()

    train_step()
    train_step()
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    swa = AveragedModel(net)
    swalr = SWALR(opt, swa_lr=5e-4, anneal_epochs=1)
    train_step()
    swa.update_parameters(net)
    swalr.step()
    return net, opt, scaler, swa, swalr


def _fresh(seed=1):
    net, opt, scaler, swa, _ = _objects(seed)  # other weights and optimizer state, to be overwritten
    return net, opt, scaler, swa


def _assert_same_optimizer(a: dict, b: dict):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        for name, v in a["state"][k].items():
            torch.testing.assert_close(v, b["state"][k][name], rtol=0, atol=0)


def test_a_checkpoint_in_the_layout_older_runs_wrote_loads(tmp_path):
    """The files exactly as core/train/loop.py wrote them before Checkpoint existed: safetensors
    without metadata and a plain dict in last_state.pt."""
    net, opt, scaler, swa, swalr = _objects()
    history = [_row(1, 0.8) | {"swa": False}, _row(2, 0.6) | {"swa": True}]
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, tmp_path / "last.safetensors")
    save_file({k: v.detach().cpu().contiguous() for k, v in swa.state_dict().items()}, tmp_path / "swa_avg.safetensors")
    torch.save(
        {
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict(),
            "swalr": swalr.state_dict(),
            "history": json.dumps(history),
            "epoch": 2,
            "step": 6,
            "best_val": 0.6,
            "bad_epochs": 0,
            "stopped": False,
        },
        tmp_path / "last_state.pt",
    )
    net2, opt2, scaler2, swa2 = _fresh()
    ckpt = Checkpoint(tmp_path)
    assert ckpt.exists()
    state, sched = ckpt.load(
        net2, opt2, scaler2, swa_model=swa2, make_swalr=lambda: SWALR(opt2, swa_lr=5e-4, anneal_epochs=1)
    )
    assert state == TrainState(epoch=2, step=6, best_val=0.6, bad_epochs=0, stopped=False, history=history)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(net2.state_dict()[k], v, rtol=0, atol=0)
    for k, v in swa.state_dict().items():
        torch.testing.assert_close(swa2.state_dict()[k], v, rtol=0, atol=0)
    _assert_same_optimizer(opt2.state_dict(), opt.state_dict())
    assert scaler2.state_dict() == scaler.state_dict()
    assert sched is not None and sched.state_dict() == swalr.state_dict()
    # before SWA the old files had an empty swalr and no swa_avg: no scheduler is made
    torch.save({**torch.load(tmp_path / "last_state.pt", weights_only=True), "swalr": {}}, tmp_path / "last_state.pt")
    (tmp_path / "swa_avg.safetensors").unlink()
    made = []
    _, sched = Checkpoint(tmp_path).load(*_fresh()[:3], swa_model=None, make_swalr=lambda: made.append(1))
    assert sched is None and not made


def test_save_writes_the_same_layout_and_loads_back(tmp_path):
    net, opt, scaler, swa, swalr = _objects()
    state = TrainState(epoch=3, step=12, best_val=0.4, bad_epochs=0, history=[_row(1, 0.5), _row(2, 0.45)])
    ckpt = Checkpoint(tmp_path)
    ckpt.save(state, net, opt, scaler, swa_model=swa, swa_sched=swalr, best=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.safetensors",
        "last.safetensors",
        "last_state.pt",
        "swa_avg.safetensors",
    ]
    saved = torch.load(tmp_path / "last_state.pt", weights_only=True)
    assert list(saved) == [
        "optimizer",
        "scaler",
        "swalr",
        "history",
        "epoch",
        "step",
        "best_val",
        "bad_epochs",
        "stopped",
    ]
    for name in ("last", "best", "swa_avg"):
        with safe_open(str(tmp_path / f"{name}.safetensors"), "pt") as f:
            assert f.metadata() == {"epoch": "3"}
    assert load_file(tmp_path / "best.safetensors").keys() == net.state_dict().keys()
    net2, opt2, scaler2, swa2 = _fresh()
    got, sched = ckpt.load(net2, opt2, scaler2, swa_model=swa2, make_swalr=lambda: SWALR(opt2, 5e-4, anneal_epochs=1))
    assert got == state and sched is not None and sched.state_dict() == swalr.state_dict()
    _assert_same_optimizer(opt2.state_dict(), opt.state_dict())
    for k, v in swa.state_dict().items():
        torch.testing.assert_close(swa2.state_dict()[k], v, rtol=0, atol=0)


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temp_files(tmp_path, monkeypatch):
    import core.train.checkpoint as ck

    net, opt, scaler, swa, swalr = _objects()
    ckpt = Checkpoint(tmp_path)
    ckpt.save(TrainState(epoch=1, step=3, best_val=0.7), net, opt, scaler, best=True)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = ck._write_tensors

    def disk_full(state, path, metadata):
        if "best" in path.name:  # the last file of the save, after all others are written
            raise OSError(28, "No space left on device")
        real(state, path, metadata)

    monkeypatch.setattr(ck, "_write_tensors", disk_full)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    with pytest.raises(OSError, match="No space"):
        ckpt.save(
            TrainState(epoch=2, step=6, best_val=0.5), net, opt, scaler, swa_model=swa, swa_sched=swalr, best=True
        )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_killed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    """SIGKILL while the second save is writing its last file: the first checkpoint still loads as
    it was, and what the killed process left is only temp files clean_stale_temps knows."""
    script = textwrap.dedent(
        """
        import sys, time, torch
        import core.train.checkpoint as ck
        from core.train.checkpoint import Checkpoint, TrainState
        torch.manual_seed(0)
        net = torch.nn.Linear(4, 3)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        net(torch.randn(2, 4)).sum().backward(); opt.step()
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        ckpt = Checkpoint(sys.argv[1])
        ckpt.save(TrainState(epoch=1, step=1, best_val=0.5, history=[{"epoch": 1, "val_loss": 0.5}]), net, opt, scaler)
        real = ck._write_tensors
        def hang_in_best(state, path, metadata):
            if "best" in path.name:
                path.write_bytes(b"half a file")
                print("writing", flush=True)
                time.sleep(120)
            real(state, path, metadata)
        ck._write_tensors = hang_in_best
        with torch.no_grad():
            net.weight.add_(1.0)
        net(torch.randn(2, 4)).sum().backward(); opt.step()
        ckpt.save(TrainState(epoch=2, step=2, best_val=0.4), net, opt, scaler, best=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait(timeout=60)
    torch.manual_seed(0)  # the first save's model, made again
    first = torch.nn.Linear(4, 3)
    first_opt = torch.optim.AdamW(first.parameters(), lr=1e-3)
    first(torch.randn(2, 4)).sum().backward()
    first_opt.step()
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    state, _ = Checkpoint(tmp_path).load(net, opt, torch.amp.GradScaler("cuda", enabled=False))
    assert state == TrainState(epoch=1, step=1, best_val=0.5, history=[{"epoch": 1, "val_loss": 0.5}])
    assert opt.state_dict()["state"][0]["step"].item() == 1
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, first.state_dict()[k], rtol=0, atol=0)
    _assert_same_optimizer(opt.state_dict(), first_opt.state_dict())
    assert not (tmp_path / "best.safetensors").exists()
    left = clean_stale_temps(tmp_path, older_than_s=0)
    assert left and all(p.name.startswith(".") and p.name.endswith(".tmp") for p in left)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors", "last_state.pt"]


def test_files_of_different_epochs_are_refused(tmp_path):
    net, opt, scaler, swa, swalr = _objects()
    ckpt = Checkpoint(tmp_path)
    ckpt.save(TrainState(epoch=1), net, opt, scaler)
    old_state = (tmp_path / "last_state.pt").read_bytes()
    ckpt.save(TrainState(epoch=2), net, opt, scaler, swa_model=swa, swa_sched=swalr)
    (tmp_path / "last_state.pt").write_bytes(old_state)  # as if killed between the moves
    with pytest.raises(CheckpointError, match="after epoch 2, but last_state.pt after epoch 1"):
        ckpt.load(*_fresh()[:3])
