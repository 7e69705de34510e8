"""The processes of a multi-process ``latentode predict``: starting them (Lightning Fabric),
sharing each one's forecast shard or failure, and which one reports."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException

from ..data.errors import DataError
from .errors import ForecastStoppedError

__all__ = ["gather_shards"]


@dataclass(frozen=True)
class _ShardFailure:
    """What a process that could not forecast sends in place of its shard."""

    message: str


def gather_shards(result: Any, failure: BaseException | None, world: int) -> list[Any]:
    """Every process's forecast shard (``result``, None where ``failure`` is set), gathered
    on every process. If any process failed, all of them raise `ForecastStoppedError` with the
    first failure's message, instead of leaving the others waiting in the gather.

    Raises:
        ForecastStoppedError: some process failed.
    """
    import torch.distributed as dist

    mine = result if failure is None else _ShardFailure(f"{type(failure).__name__}: {failure}")
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, mine)
    failed = [(rank, p) for rank, p in enumerate(parts) if isinstance(p, _ShardFailure)]
    if failed:
        rank, first = failed[0]
        raise ForecastStoppedError(
            f"process {rank} of {world} could not forecast its series, so every process stopped "
            f"and nothing was written: {first.message}"
        ) from failure
    return parts


def _first_process() -> bool:
    """Whether this is the process that reports (the only one, or rank 0 of several). The
    errors of a multi-process predict reach every process (`gather_shards`, or the same
    input read by each), so the first one says it once."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() > 0)


def _launch(args: argparse.Namespace) -> tuple[int, int, torch.device]:
    """Start the processes of a multi-process predict: ``(rank, world_size, device)``.

    With ``--devices N`` (and/or ``--num_nodes M``) > 1, Lightning Fabric launches the other
    local processes by re-running this command, or joins the ones SLURM / torchrun started.
    """
    from lightning_fabric import Fabric

    multi = args.devices * args.num_nodes > 1
    try:
        fabric = Fabric(
            accelerator=args.accelerator,
            devices=args.devices,
            num_nodes=args.num_nodes,
            strategy="ddp" if multi else "auto",
        )
    except (ValueError, RuntimeError, MisconfigurationException, ModuleNotFoundError) as e:
        raise DataError(f"--accelerator/--devices/--num_nodes: {e}") from None
    if multi:
        fabric.launch()
    return fabric.global_rank, fabric.world_size, fabric.device
