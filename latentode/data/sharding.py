"""Evaluation data under several processes: every sample scored exactly once.

Under DDP, Lightning gives each eval loader a `DistributedSampler`, which pads the dataset by
repeating samples so that every process gets the same count; the repeated samples are then
scored twice and the synchronised validation metrics are slightly wrong. `eval_sampler` returns
a sampler that shards without padding (process ``r`` of ``W`` takes samples ``r, r + W, ...``);
Lightning keeps it because it is a `DistributedSampler`. With one process it returns ``None``
(the loader's default sequential order).

`eval_loader` builds the evaluation DataLoader with that sampler and a generator of its own:
a DataLoader without one draws its workers' base seed from torch's global generator each time
an evaluation begins, which would shift the training run's random numbers by every validation.

Usage::

    eval_loader(dataset, batch_size=64, what="the val split", unit="series")
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .errors import DataError

__all__ = ["ShardSampler", "eval_loader", "eval_sampler", "process_rank"]


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


def eval_loader(
    dataset: Dataset | Sized,
    batch_size: int,
    what: str = "the evaluation set",
    unit: str = "sample",
    **kwargs: Any,
) -> DataLoader:
    """An evaluation DataLoader: this process's `eval_sampler` shard, in order, with a generator
    of its own (its draws leave torch's global generator, which training draws from, alone).

    Args:
        dataset: the evaluation set (anything with a length that a DataLoader takes).
        batch_size: samples per batch.
        what, unit: as `eval_sampler`.
        **kwargs: other DataLoader arguments (``collate_fn``, ``num_workers``).

    Raises:
        DataError: as `eval_sampler`.
    """
    sampler = eval_sampler(len(dataset), what, unit)  # type: ignore[arg-type]
    return DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        sampler=sampler,
        generator=torch.Generator(),
        **kwargs,
    )
