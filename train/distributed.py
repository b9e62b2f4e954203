"""Data-parallel training under torchrun: which process this is, and the few collectives the loop needs.

`torchrun --nproc_per_node N -m train ...` starts N copies of the trainer with RANK, WORLD_SIZE
and LOCAL_RANK in their environment. Each rank reads its own share of the shards, DDP averages the
gradients, and rank 0 alone writes the run folder (config, metrics, checkpoints, samples). Started
without torchrun, the same code runs as a world of one and no process group is created.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder and shows the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def from_environment() -> World:
    """The world torchrun describes in the environment (a world of one without it)."""
    return World(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def start(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on the CPU) and return this rank's device:
    its own GPU (LOCAL_RANK) when training on CUDA."""
    if not world.distributed:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    return device


def finish(world: World) -> None:
    """Wait for every rank (rank 0 may still be sampling), then leave the process group."""
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def any_rank(world: World, flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one. Ranks must agree to stop at the
    same step (SIGTERM reaches them at different moments), or the others would wait forever in
    the next gradient all-reduce."""
    if not world.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean(world: World, values: list[float], device: torch.device) -> list[float]:
    """Each value averaged over the ranks (metrics of a log window)."""
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return (tensor / world.world_size).tolist()


def gather(world: World, value):
    """Every rank's `value` (any picklable object), in rank order."""
    if not world.distributed:
        return [value]
    gathered: list = [None] * world.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def check_in_sync(world: World, params: list[torch.Tensor]) -> None:
    """Raise RuntimeError unless every rank holds the same weights. DDP keeps the replicas equal
    (the same averaged gradients, the same optimiser steps); a replica that drifted would make
    the saved checkpoint rank 0's model alone. Compares per-tensor sums: cheap on any size."""
    if not world.distributed:
        return
    with torch.no_grad():
        sums = torch.stack([param.detach().double().sum() for param in params])
    everyone = [torch.zeros_like(sums) for _ in range(world.world_size)]
    dist.all_gather(everyone, sums)
    for rank, other in enumerate(everyone):
        if not torch.allclose(other, everyone[0], rtol=1e-6, atol=1e-9):
            raise RuntimeError(f"the weights of rank {rank} differ from rank 0's: the replicas are out of sync")
