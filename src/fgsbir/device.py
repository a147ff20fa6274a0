"""Where tensors live: the device choice and PyTorch DDP set-up under ``torchrun``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


def select_device(name: str | None = None) -> torch.device:
    """``name`` if given (``"cpu"``, ``"cuda:1"``...), else CUDA when available, else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a (possibly single-process) training job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device: str | None = None) -> DistributedContext:
        """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on GPU)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(device=select_device(device))
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device != "cpu"
        chosen = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(chosen)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def close(self) -> None:
        if self.is_distributed and dist.is_initialized():
            dist.destroy_process_group()
