"""Stop training cleanly on a non-finite loss or an ODE solver failure.

`guarded` wraps a ``training_step``: if the loss is NaN or infinite, or the solver raises
`SolverError`, training stops *before* the backward pass and the optimizer step, with a
`TrainingStoppedError` that names the epoch, the batch and the global step, says what to change,
and points at the last checkpoint written (which is left as it was). Under DDP the processes
agree on the decision (one all-reduce of a flag per step), so they all stop together instead of
leaving the others waiting in the gradient all-reduce.

The check reads one flag from the device per training step.

Usage::

    class MySystem(pl.LightningModule):
        @guarded
        def training_step(self, batch, batch_idx): ...
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor

from ..solver import SolverError

__all__ = ["TrainingStoppedError", "guarded", "last_checkpoint_path", "newest_file"]

Step = TypeVar("Step", bound=Callable[..., Any])

_NAN_REMEDY = (
    "lower the learning rate (--model.init_args.lr), clip gradients "
    "(--trainer.gradient_clip_val 1.0), check the data for extreme values, or train in float64 "
    "(--trainer.precision 64-true)"
)


class TrainingStoppedError(RuntimeError):
    """Training was stopped on a non-finite loss or a solver failure (message says where)."""


def newest_file(paths: Iterable[str | Path]) -> str | None:
    """The most recently modified of ``paths`` that exist as files, or None."""
    existing = [Path(p) for p in paths if p and Path(p).is_file()]
    if not existing:
        return None
    return str(max(existing, key=lambda p: p.stat().st_mtime))


def last_checkpoint_path(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint file the trainer's `ModelCheckpoint` callbacks have written."""
    return newest_file(
        p
        for cb in trainer.checkpoint_callbacks
        if isinstance(cb, ModelCheckpoint)
        for p in (cb.best_model_path, cb.last_model_path)
    )


def _where(module: pl.LightningModule, batch_idx: int) -> str:
    return f"epoch {module.current_epoch}, batch {batch_idx} (global step {module.global_step})"


def _message(module: pl.LightningModule, batch_idx: int, problem: str, remedy: str) -> str:
    ckpt = last_checkpoint_path(module.trainer)
    kept = (
        f"The last good checkpoint is {ckpt} (left as it was); after the change, resume "
        "with --ckpt_path last."
        if ckpt
        else "No checkpoint had been written yet."
    )
    return (
        f"training stopped at {_where(module, batch_idx)}: {problem} Nothing of this step was "
        f"applied. What to do: {remedy}. {kept}"
    )


def guarded(step: Step) -> Step:
    """Wrap a ``training_step(self, batch, batch_idx)`` returning the loss tensor.

    Raises:
        TrainingStoppedError: the loss is not finite or the solver failed, in this process or in
            another DDP process.
    """

    @functools.wraps(step)
    def wrapper(self: pl.LightningModule, batch: Any, batch_idx: int, *args: Any) -> Tensor:
        failure: SolverError | None = None
        loss: Tensor | None = None
        try:
            loss = step(self, batch, batch_idx, *args)
        except SolverError as e:
            failure = e
        value = math.nan if loss is None else float(loss.detach())
        ok_here = failure is None and math.isfinite(value)
        ok = ok_here
        if self._trainer is not None and self.trainer.world_size > 1:
            ok = self.trainer.strategy.reduce_boolean_decision(ok_here, all=True)
        if ok:
            return loss  # type: ignore[return-value]
        if failure is not None:
            problem, remedy = (
                f"the ODE solver failed: {failure}",
                (
                    "tighten or loosen the solver tolerances, raise max_num_steps, or lower the "
                    "learning rate"
                ),
            )
        elif not ok_here:
            problem, remedy = f"the training loss is {value}.", _NAN_REMEDY
        else:
            problem, remedy = (
                "another process hit a non-finite loss or a solver failure (see its message).",
                _NAN_REMEDY,
            )
        raise TrainingStoppedError(_message(self, batch_idx, problem, remedy)) from failure

    return wrapper  # type: ignore[return-value]
