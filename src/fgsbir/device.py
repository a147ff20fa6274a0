"""Where tensors live: the device choice, and data-parallel training under ``torchrun``.

Under ``torchrun`` every process builds the same models from the same seed, trains on its share
of each epoch's batches, and before every optimiser step averages the gradients over all
processes (one all-reduce of the flattened gradients, as DistributedDataParallel does), so the
weights stay identical everywhere. Doing it at the optimiser step rather than in a wrapped
``forward`` lets a method with several models and several backward passes per step (the
semi-supervised one) train the same way as the others.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from fgsbir.errors import FgsbirError

T = TypeVar("T")


def select_device(name: str | None = None) -> torch.device:
    """``name`` if given (``"cpu"``, ``"cuda:1"``...), else CUDA when available, else the CPU."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FgsbirError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FgsbirError(f"device {name!r}: no CUDA GPU is available here; use cpu")
    return device


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
    def join(cls, device: str | None = None) -> DistributedContext:
        """This process's context; under ``torchrun`` it joins the process group (gloo on the
        CPU, nccl on GPUs) unless it already has. The group lasts until the process exits, so
        one command may train several runs (the semi-supervised start runs, then its own)."""
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
            atexit.register(dist.destroy_process_group)
        return cls(rank, world_size, local_rank, chosen)

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's share of ``items``: every ``world_size``-th, the same count for all."""
        count = len(items) // self.world_size if self.is_distributed else len(items)
        return list(items[self.rank :: self.world_size][:count])

    def decide(self, flag: bool) -> bool:
        """The main process's ``flag``, on every process."""
        if not self.is_distributed:
            return flag
        decision = [flag]
        dist.broadcast_object_list(decision, src=0)
        return bool(decision[0])

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every process."""
        if not self.is_distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def average_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Replace each gradient by its mean over the processes (a parameter that has a gradient
        on any process gets one everywhere)."""
        if not self.is_distributed or not params:
            return
        has = torch.tensor([p.grad is not None for p in params], device=self.device).int()
        dist.all_reduce(has, op=dist.ReduceOp.MAX)
        used = [p for p, h in zip(params, has.tolist(), strict=True) if h]
        for p in used:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if not used:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in used])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in used:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    def broadcast_modules(self, parts: Iterable[Any], buffers_only: bool = False) -> None:
        """Copy the main process's weights (or only buffers, e.g. batch-norm statistics) of
        every module among ``parts`` to the other processes."""
        if not self.is_distributed:
            return
        for part in parts:
            if isinstance(part, nn.Module):
                tensors = part.buffers() if buffers_only else part.state_dict().values()
                for tensor in tensors:
                    dist.broadcast(tensor.data, src=0)
