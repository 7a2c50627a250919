"""DistributedDataParallel glue for ``torchrun``: init from the environment, rank helpers, reductions.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) :func:`setup` initialises the process
group (NCCL on CUDA, gloo on CPU); otherwise everything degrades to a single process.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "setup",
    "teardown",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "all_reduce_mean",
    "all_gather_array",
    "barrier",
    "broadcast_object",
    "broadcast_state",
]

log = logging.getLogger(__name__)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes files and prints progress."""
    return rank() == 0


def setup(device: str = "auto") -> torch.device:
    """Initialise the process group when launched by torchrun; return this process's device."""
    want_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not is_distributed():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
        log.info("distributed: rank %d of %d", rank(), world_size())
    if want_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    if device not in ("auto", "cpu", "cuda"):
        return torch.device(device)
    return torch.device("cpu")


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean of scalar values across ranks (identity in a single process)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_gather_array(a: np.ndarray) -> np.ndarray:
    """Concatenate a per-rank array along axis 0 across ranks (rank order)."""
    if not is_distributed():
        return a
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, a)
    return np.concatenate(parts, axis=0)


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_state(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers (e.g. BN statistics) into every rank's ``module``."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in module.state_dict().values():
            if isinstance(t, torch.Tensor):
                dist.broadcast(t, src=0)
