"""Training under ``torchrun``: the process group and the few collectives the loop needs.

Every collective is a no-op returning its input when there is one process, so the loop reads
the same either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

from mirnet.device import pick_device


@dataclass
class DistributedContext:
    """This process's place in the run; the defaults describe a plain single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # setup_distributed created the process group, so train() destroys it
    device: torch.device = torch.device("cpu")  # where collectives' tensors live

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        """The mean of ``value`` over all ranks."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], device=self.device, dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor) / self.world_size

    def broadcast(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every rank (also a barrier that works on gloo and NCCL)."""
        if self.world_size == 1:
            return values
        tensor = torch.tensor(values, device=self.device, dtype=torch.float64)
        dist.broadcast(tensor, src=0)
        return tensor.tolist()

    def broadcast_object(self, value):
        """Rank 0's ``value`` (any picklable object it made itself) on every rank."""
        if self.world_size == 1:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank."""
        if self.world_size == 1:
            return flag
        tensor = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def close(self) -> None:
        """Leave the process group if :func:`setup_distributed` joined it."""
        if self.owns_group:
            dist.destroy_process_group()


def setup_distributed() -> DistributedContext:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1).

    NCCL on CUDA, gloo on CPU. Each process trains on its own shard of every epoch; DDP
    averages the gradients, so the effective batch is ``batch_size * world_size``.
    Each process uses its own GPU (``LOCAL_RANK``) when there are GPUs, else the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device("auto", local_rank)
    if world_size <= 1:
        return DistributedContext(device=device)
    context = DistributedContext(
        rank=int(os.environ["RANK"]), world_size=world_size, local_rank=local_rank, device=device
    )
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        context.owns_group = True
    return context


def rank_samplers(dataset, world_size: int, seed: int) -> list[DistributedSampler]:
    """Every rank's sampler, not just this one's (see :func:`step_batches`)."""
    return [
        DistributedSampler(dataset, num_replicas=world_size, rank=r, shuffle=True, seed=seed, drop_last=True)
        for r in range(world_size)
    ]


def step_batches(
    samplers: list[DistributedSampler], epoch: int, batch_size: int, rank: int
) -> list[list[int]]:
    """An epoch's steps, each the whole step's batch over all ranks (``batch_size`` x world
    size dataset indices); rank r trains on ``batch[r::world_size]``, its sampler's shard.

    ``samplers`` are every rank's DistributedSampler, not just this one's: a step's whole
    batch is needed to mix samples across ranks exactly as one process would.
    """
    shards = []
    for sampler in samplers:
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
    # The sampler deals the epoch's permutation out round-robin (rank r gets positions
    # r, r + world, ...), so interleaving the shards' k-th batches gives positions
    # [k * size * world, (k + 1) * size * world): step k is the same samples, in the same
    # order, as step k of one process with batch size * world.
    return [
        [shard[i + j] for j in range(batch_size) for shard in shards]
        for i in range(0, len(shards[rank]) - batch_size + 1, batch_size)
    ]


def carry_over_steps(step_in_epoch: int, saved: tuple[int, int], now: tuple[int, int]) -> int:
    """The step to resume an epoch at when (world size, batch size) changed from ``saved`` to ``now``.

    A step takes the next batch_size * world_size samples of the epoch's order, which does
    not depend on the world size (see :func:`step_batches`): the samples done are carried over
    to the new step size, rounding down so that none is skipped (a few may repeat).
    """
    if saved == now or not step_in_epoch:
        return step_in_epoch
    return step_in_epoch * saved[0] * saved[1] // (now[0] * now[1])
