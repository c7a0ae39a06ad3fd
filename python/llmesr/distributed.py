"""Data-parallel training with PyTorch DDP, launched by `torchrun` (gloo on CPU, NCCL on GPUs).

Each rank trains on its share of every epoch's shuffled users and evaluates its share of the users;
metrics are reduced as sums and counts, so the sharded evaluation equals the single-process one. Only
rank 0 writes the run folder. Without torchrun's environment everything runs in one process.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from llmesr.metrics import GroupedMetrics


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, users: np.ndarray) -> np.ndarray:
        """This rank's share of `users` (every world-th one)."""
        return users[self.rank :: self.world]

    def training_shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's share of an epoch's order, the same size on every rank (DDP steps in lockstep;
        the few users left over are dropped for this epoch)."""
        return order[: len(order) // self.world * self.world][self.rank :: self.world]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init(device: str) -> Ranks:
    """Joins the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def reduce_metrics(metrics: GroupedMetrics, ranks: Ranks) -> GroupedMetrics:
    """Adds up every rank's sums and counts (in place); all ranks get the total."""
    if not ranks.active:
        return metrics
    slots = [(g, k) for g in sorted(metrics.by_group) for k in sorted(metrics.by_group[g].sums)]
    groups = sorted(metrics.by_group)
    t = torch.tensor(
        [metrics.by_group[g].sums[k] for g, k in slots] + [float(metrics.by_group[g].count) for g in groups],
        dtype=torch.float64,
    )
    dist.all_reduce(t)
    values = t.tolist()
    for (g, k), v in zip(slots, values, strict=False):
        metrics.by_group[g].sums[k] = v
    for g, c in zip(groups, values[len(slots) :], strict=True):
        metrics.by_group[g].count = int(round(c))
    recommended = torch.from_numpy(metrics.recommended.copy())
    dist.all_reduce(recommended)
    metrics.recommended = recommended.numpy()
    users, user_ranks = metrics.per_user()
    metrics.users = [gather_rows(torch.from_numpy(users), ranks).numpy()]
    metrics.ranks = [gather_rows(torch.from_numpy(user_ranks), ranks).numpy()]
    return metrics


def all_finite(value: float, ranks: Ranks) -> bool:
    """Whether every rank's loss is finite, so all ranks stop or skip a step together (one rank
    leaving the gradient all-reduce alone would hang the others)."""
    finite = math.isfinite(value)
    if not ranks.active:
        return finite
    flag = torch.tensor([0.0 if finite else 1.0])
    dist.all_reduce(flag)
    return flag.item() == 0.0


def gather_rows(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Every rank's 1-d tensor, concatenated in rank order (their lengths may differ)."""
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(ranks.world)]
    dist.all_gather(sizes, torch.tensor([len(values)]))
    longest = int(max(s.item() for s in sizes))
    parts = [torch.zeros(longest, dtype=values.dtype) for _ in range(ranks.world)]
    dist.all_gather(parts, torch.cat([values, values.new_zeros(longest - len(values))]))
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])


def shutdown(ranks: Ranks) -> None:
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()
