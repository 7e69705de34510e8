"""Optimizer settings shared by the systems: the checks of ``lr`` and ``weight_decay``
(`check_optimizer`, every system), and the learning-rate schedules of the CNF and classifier
systems, by name.

``"constant"`` keeps the rate; ``"cosine"`` decays it to zero over the whole run
(`torch.optim.lr_scheduler.CosineAnnealingLR`). A cosine schedule needs the run's length: a
run without one (``max_epochs=-1``) would reach zero early and climb back, since the cosine
is periodic, so it is refused with the option to set.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import pytorch_lightning as pl
import torch

__all__ = ["LR_SCHEDULES", "check_optimizer", "check_schedule", "make_schedule"]

LR_SCHEDULES = ("constant", "cosine")


def check_optimizer(lr: float, weight_decay: float, error: type[Exception]) -> None:
    """Refuse a learning rate that is not a positive number, or a negative weight decay (torch's
    optimizers raise a bare ``ValueError`` only once training starts)."""
    if not (math.isfinite(lr) and lr > 0):
        raise error(f"lr must be a positive number; got {lr}.")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise error(f"weight_decay must be 0 or more; got {weight_decay}.")


def check_schedule(name: str, error: type[Exception]) -> None:
    """Raise ``error`` naming the choices when ``name`` is not one of `LR_SCHEDULES`."""
    if name not in LR_SCHEDULES:
        raise error(f"lr_schedule must be 'constant' or 'cosine', got {name!r}.")


def make_schedule(
    name: str,
    opt: torch.optim.Optimizer,
    trainer: pl.Trainer,
    interval: Literal["step", "epoch"],
    error: type[Exception],
) -> Any:
    """What ``configure_optimizers`` returns for schedule ``name``.

    Args:
        name: one of `LR_SCHEDULES`.
        opt: the optimizer.
        trainer: the trainer whose run the cosine spans: its optimizer steps
            (``estimated_stepping_batches``) for ``interval="step"``, its ``max_epochs``
            for ``"epoch"``.
        interval: how often the scheduler steps (``"epoch"`` without an epoch limit: every
            step, over the steps the run is limited to).
        error: the exception to raise (the system's configuration error).

    Raises:
        error: a cosine schedule for a run of unbounded length.
    """
    if name == "constant":
        return opt
    length = trainer.max_epochs if interval == "epoch" else None
    if not _bounded(length):  # per step: also a run bounded by max_steps alone
        interval, length = "step", trainer.estimated_stepping_batches
    if not _bounded(length):
        raise error(
            "lr_schedule 'cosine' decays the learning rate to zero over the whole run, but "
            "this run has no end; set --trainer.max_epochs N or --trainer.max_steps N (or use "
            "lr_schedule 'constant')."
        )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(length))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}


def _bounded(length: float | None) -> bool:
    return length is not None and math.isfinite(length) and length >= 1
