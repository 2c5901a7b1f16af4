"""Distributed set-up shared by the training scripts (torchvision ``references`` style).

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them the process runs
alone. The backend is NCCL on a GPU and gloo on the CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed_mode(device: str = "auto") -> DistInfo:
    """Join the process group ``torchrun`` describes (if any) and pick the device.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    info = DistInfo()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        info.rank = int(os.environ["RANK"])
        info.world_size = int(os.environ["WORLD_SIZE"])
        info.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        info.distributed = True
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, init_method="env://")
    if use_cuda:
        info.device = torch.device("cuda", info.local_rank)
    return info


def cleanup(info: DistInfo) -> None:
    """Tear the process group down once every rank is done. The barrier matters: rank 0 saves
    and evaluates after the last step while the others are already finished, and a rank that
    destroys its gloo group while a peer still uses the connection can abort the process
    ("terminate called without an active exception")."""
    if info.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def mean_across(info: DistInfo, values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all processes (the tensor itself when alone)."""
    if not info.distributed:
        return values
    v = values.detach().clone()
    dist.all_reduce(v, op=dist.ReduceOp.SUM)
    return v / info.world_size
