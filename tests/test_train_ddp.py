"""DistributedDataParallel on CPU: two processes, gloo, a tiny model; both ranks must agree."""

import os
import socket

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from core.train.data import read_manifest
from core.train.splits import make_splits, samples_of
from tests.fixtures.toy import write_toy_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, manifest: str, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from core.train import ddp
    from core.train.loop import TrainConfig, fit

    s = read_manifest(manifest)
    f = make_splits(s, 3, seed=0, val_fraction=0.25).folds[0]
    cfg = TrainConfig(
        arch="test_efficientnet",
        input_size=48,
        epochs=2,
        batch_size=4,
        lr=3e-3,
        progress=False,
        augment="light",
        device="cpu",
        swa=True,
        swa_start=0.5,
    )
    r = fit(cfg, samples_of(s, f.train), samples_of(s, f.val), os.path.join(out, "run"))
    assert ddp.world_size() == world and ddp.rank() == rank
    save_file(
        {k: v.contiguous() for k, v in r.model.state_dict().items()},
        os.path.join(out, f"rank{rank}.safetensors"),
        metadata={
            "val_n": str(r.val_metrics["n"]),
            "val_loss": repr(r.history[-1]["val_loss"]),
            "train_loss": repr(r.history[-1]["train_loss"]),
            "chosen": r.chosen,
            "seen": str(r.history[-1]["samples_this_rank"]),
            "n_train": str(len(samples_of(s, f.train))),
        },
    )
    ddp.teardown()


def test_two_process_gloo_ranks_agree(tmp_path):
    manifest = write_toy_dataset(tmp_path / "toy", patients=6, n_bscans=3)
    n_val = len(
        samples_of(
            read_manifest(manifest), make_splits(read_manifest(manifest), 3, seed=0, val_fraction=0.25).folds[0].val
        )
    )
    mp.spawn(_worker, args=(2, _free_port(), str(manifest), str(tmp_path)), nprocs=2, join=True)
    from safetensors import safe_open

    metas = []
    for r in (0, 1):
        with safe_open(str(tmp_path / f"rank{r}.safetensors"), "pt") as f:
            metas.append(f.metadata())
    a, b = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    # each rank trained on its own half of the data (DistributedSampler) ...
    seen, n_train = int(metas[0]["seen"]), int(metas[0]["n_train"])
    assert 0 < seen <= n_train // 2
    # ... yet the weights are identical: gradients were all-reduced
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    # validation is sharded across ranks and gathered: both ranks saw every validation B-scan
    assert metas[0]["val_n"] == metas[1]["val_n"] == str(n_val)
    # metrics are reduced across ranks: identical on both
    assert metas[0]["val_loss"] == metas[1]["val_loss"] and metas[0]["train_loss"] == metas[1]["train_loss"]
    assert metas[0]["chosen"] == metas[1]["chosen"]
    # rank-0 I/O: one set of files, one card
    assert (tmp_path / "run" / "model.json").is_file() and (tmp_path / "run" / "history.json").is_file()
