"""Data parallelism over torch.distributed, when launched by torchrun (WORLD_SIZE > 1).

Each rank computes the shards whose index is congruent to its rank; shards land in the same
folder under the same names as in a single-process run, so there is nothing to merge.
gloo on CPU, NCCL when CUDA is available. Without torchrun everything is rank 0 of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Ranks":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            if torch.cuda.is_available():
                torch.cuda.set_device(local_rank)  # NCCL collectives run on the current device
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's value of obj, on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mine(self, shard: int) -> bool:
        return shard % self.world == self.rank


def default_device(ranks: Ranks) -> str:
    return f"cuda:{ranks.local_rank}" if torch.cuda.is_available() else "cpu"
