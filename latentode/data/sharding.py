"""Evaluation data under several processes: every sample scored exactly once.

Under DDP, Lightning gives each eval loader a `DistributedSampler`, which pads the dataset by
repeating samples so that every process gets the same count; the repeated samples are then
scored twice and the synchronised validation metrics are slightly wrong. `eval_sampler` returns
a sampler that shards without padding (process ``r`` of ``W`` takes samples ``r, r + W, ...``);
Lightning keeps it because it is a `DistributedSampler`. With one process it returns ``None``
(the loader's default sequential order).

Usage::

    DataLoader(dataset, batch_size=64, sampler=eval_sampler(len(dataset)))
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch.distributed as dist
from torch.utils.data import DistributedSampler

from .errors import DataError

__all__ = ["ShardSampler", "eval_sampler", "process_rank"]


class ShardSampler(DistributedSampler):
    """Process ``rank`` of ``num_replicas`` takes indices ``rank, rank + num_replicas, ...``.

    No padding and no shuffling: the shards partition the dataset, so metrics summed over the
    processes count each sample once.
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)  # type: ignore[arg-type]
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def eval_sampler(
    n: int, what: str = "the evaluation set", unit: str = "sample"
) -> ShardSampler | None:
    """An unpadded shard of ``range(n)`` for this process, or ``None`` with one process.

    Args:
        n: size of the evaluation set.
        what: the set's name in the error message.
        unit: what one element is (``"sample"``, ``"series"``), pluralised by an ``s``
            unless it ends in one.

    Raises:
        DataError: fewer elements than processes (a process with an empty shard cannot
            take part in the evaluation).
    """
    rank, world = process_rank()
    if world == 1:
        return None
    if n < world:
        units = unit if n == 1 or unit.endswith("s") else unit + "s"
        raise DataError(
            f"{what} has {n} {units} for {world} processes, and every process needs at least "
            "one: use fewer processes (--trainer.devices, --trainer.num_nodes) or hold out more "
            "data for it."
        )
    return ShardSampler(range(n), world, rank)
