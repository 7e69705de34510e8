"""Stop training or evaluation cleanly on a non-finite loss, an ODE solver failure or a batch
the model refuses.

`guarded` wraps a ``training_step``, ``validation_step`` or ``test_step``. In training, if the
loss is NaN or infinite, or the solver raises `SolverError`, training stops *before* the
backward pass and the optimizer step, with a `TrainingStoppedError` that names the epoch, the
batch and the global step, says what to change, and points at the last checkpoint written
(which is left as it was). In validation and testing a `SolverError` stops the run the same
way. A `ModelInputError` in any of these steps (a batch with a non-finite observed value or
unsorted times) stops it the same way too, as a `StepInputError`: the model's own message
behind the stage, epoch and batch; and so does a `SolverInputError`, as a
`StepSolverInputError` (times the solver cannot take: a batch's float64 times that coincide
once cast to the float32 state, say). Under DDP the processes agree on the decision, so they
all stop together with the message instead of leaving the others waiting in the gradient
all-reduce or in the metrics' epoch-end gather (which NCCL only ends at its timeout):

- in training, one all-reduce of a flag per step (every process takes the same steps);
- in evaluation, the shards may hold different numbers of batches (they are not padded, see
  `latentode.data.sharding`), so a per-step collective would pair one process's step with
  another's epoch end and hang. A failing process keeps its message and skips its remaining
  evaluation batches; after each process's last batch (before the metrics' gather) the
  processes exchange their messages once.

On a stop, the processes exchange their failures (one ``all_gather_object``), and every
process raises the failing one's error type with its message (``process R failed: `` before
it elsewhere, and the error's ``echo`` set, so that the command says each failure once): a
refused batch is a `StepInputError` on every process, whichever holds it.

A training step called by hand (outside a running trainer, as in a test or a notebook) has
no epoch or step to name: a solver failure or a refused batch comes out as the model's or the
solver's own error, a non-finite loss as a `TrainingStoppedError` naming the batch.

The check reads one flag from the device per training step.

Usage::

    class MySystem(pl.LightningModule):
        @guarded
        def training_step(self, batch, batch_idx): ...

        @guarded
        def validation_step(self, batch, batch_idx): ...
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerStatus
from torch import Tensor

from ..nn.base import ModelInputError
from ..solver import SolverError, SolverInputError

__all__ = [
    "StepInputError",
    "StepSolverInputError",
    "TrainingStoppedError",
    "end_process",
    "guarded",
    "last_checkpoint_path",
    "leave_process_group",
    "newest_file",
]

Step = TypeVar("Step", bound=Callable[..., Any])

_NAN_REMEDY = (
    "lower the learning rate (--model.init_args.lr), clip gradients "
    "(--trainer.gradient_clip_val 1.0), check the data for extreme values, or train in float64 "
    "(--trainer.precision 64-true)"
)


def leave_process_group() -> bool:
    """Leave the default process group, if there is one, once every process has reached this
    point (a barrier, then its destruction). True if there was one: end the process with
    `end_process` then.

    Call it where every process ends alike: a finished run, or a stop all processes agreed on
    (`TrainingStoppedError`). Exiting with gloo's group alive aborted the interpreter in 2 of
    20 stopped runs ("terminate called without an active exception", exit status -6 after
    the right message); with this, in none of 40. Destroying the group without the barrier
    hung: it waits for the other processes.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        return True
    return False


def end_process(status: int) -> NoReturn:
    """End a process that has left its process group: the exit handlers (``atexit``: loggers'
    last writes and uploads) run and the streams are flushed, then the process ends without
    the interpreter's finalization.

    After `leave_process_group`, one of two gloo processes hung at exit in 3 of 166 stopped
    runs (and once in CI), with no Python frame on any thread: in the finalization, where
    the objects that still hold the destroyed group (Lightning's DDP wrapper) are torn down.
    """
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


class TrainingStoppedError(RuntimeError):
    """Training or evaluation was stopped on a non-finite loss, a solver failure or a batch
    the model refused (the message says where).

    Attributes:
        echo: True on the processes of a multi-process run that did not fail themselves: the
            error repeats another process's failure, which that process reports.
    """

    echo: bool = False


class StepInputError(TrainingStoppedError, ModelInputError):
    """A training, validation or test step stopped on a `ModelInputError`: the message is the
    stage, epoch and batch, then the model's own message (the error is its ``__cause__``).
    The other processes of a multi-process run raise it too, with ``process R failed:``
    before the message and no cause.

    A `ModelInputError` still, for code that catches those; a `TrainingStoppedError`, so that
    the processes of a multi-process run stop together with it.
    """


class StepSolverInputError(StepInputError, SolverInputError):
    """A step stopped on a `SolverInputError` raised inside it: times the solver cannot take
    (not strictly monotone, NaN; the model's own checks catch most such batches first), or
    a state or vector field it refuses. The message is the stage, epoch and batch, then the
    solver's (the error is its ``__cause__``).

    A `SolverInputError` still, for code that catches those, and a `StepInputError`.
    """


# the error a process stops with, by the kind of its failure (`_failure`)
_STOPS: dict[str, type[TrainingStoppedError]] = {
    "stop": TrainingStoppedError,  # a non-finite loss or a solver failure
    "model": StepInputError,
    "solver": StepSolverInputError,
}


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


def _message(module: pl.LightningModule, batch_idx: int, problem: str, remedy: str | None) -> str:
    """Where the step stopped (stage, epoch, batch, global step), ``problem``, ``remedy`` and
    the checkpoint to resume from; for a step called by hand, only its batch index."""
    advice = f" What to do: {remedy}." if remedy else ""
    if not _running(module):  # a step called by hand: no epoch or step (`guarded`)
        where = f"training step on batch {batch_idx}, called outside a running Trainer"
        return f"{where}: {problem}{advice}"
    stage = module.trainer.state.stage
    training = stage is None or not stage.evaluating  # else validation, its sanity check, test
    what, batch = "training", "batch"
    if stage == "test":
        what, batch = "testing", "test batch"
    elif not training:
        what, batch = "validation", "validation batch"
    ckpt = last_checkpoint_path(module.trainer) if stage != "test" else None
    if ckpt:
        kept = (
            f" The last good checkpoint is {ckpt} (left as it was); after the change, resume "
            "with --ckpt_path last."
        )
    else:
        kept = " No checkpoint had been written yet." if training else ""
    applied = " Nothing of this step was applied." if training else ""
    return (
        f"{what} stopped at epoch {module.current_epoch}, {batch} {batch_idx} (global step "
        f"{module.global_step}): {problem}{applied}{advice}{kept}"
    )


def guarded(step: Step) -> Step:
    """Wrap a ``training_step(self, batch, batch_idx)`` returning the loss tensor, or a
    ``validation_step`` / ``test_step`` returning None.

    Raises:
        StepInputError: the model refused a batch (a `ModelInputError`), in this process or,
            under DDP, in another (whose message it carries).
        StepSolverInputError: the solver refused its input in a step (a `SolverInputError`),
            in this process or in another.
        TrainingStoppedError: the loss is not finite or the solver failed, in this process or in
            another DDP process.
    """

    @functools.wraps(step)
    def wrapper(self: pl.LightningModule, batch: Any, batch_idx: int, *args: Any) -> Any:
        if _deferred(self):
            return _evaluate_deferred(step, self, batch, batch_idx, *args)
        failure: Exception | None = None
        out: Any = None
        try:
            out = step(self, batch, batch_idx, *args)
        except (SolverError, ModelInputError, SolverInputError) as e:
            if not _running(self):  # a step called by hand: no epoch or batch to name
                raise
            failure = e
        # an evaluation step returns None: only a solver failure or a refused batch stops it
        value = float(out.detach()) if isinstance(out, Tensor) else 0.0
        ok_here = failure is None and math.isfinite(value)
        ok = ok_here
        several = self._trainer is not None and self.trainer.world_size > 1
        if several:
            ok = self.trainer.strategy.reduce_boolean_decision(ok_here, all=True)
        if ok:
            return out
        mine: tuple[str, str] | None = None
        if failure is not None:
            mine = _failure(self, batch_idx, failure)
        elif not ok_here:
            problem = f"the training loss is {value}."
            mine = _message(self, batch_idx, problem, _NAN_REMEDY), "stop"
        # every process is here, the decision agreed: one exchange of the failures
        _stop(mine, failure, _gather(self, mine) if several else [mine], self, batch_idx)

    return wrapper  # type: ignore[return-value]


def _failure(module: pl.LightningModule, batch_idx: int, error: Exception) -> tuple[str, str]:
    """A step's failure as ``(message, kind)``, ``kind`` a key of `_STOPS`: plain strings, which
    the processes exchange."""
    if isinstance(error, SolverError):  # its message ends with its own "What to do"
        return _message(module, batch_idx, f"the ODE solver failed: {error}", None), "stop"
    kind = "solver" if isinstance(error, SolverInputError) else "model"
    return _message(module, batch_idx, str(error), None), kind  # it says what to change


def _gather(module: pl.LightningModule, mine: tuple[str, str] | None) -> list[Any]:
    """Every process's failure (`_failure`, or None), by rank: one ``all_gather_object``
    (only this process's without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    failures: list[Any] = [None] * module.trainer.world_size
    dist.all_gather_object(failures, mine)
    return failures


def _stop(
    mine: tuple[str, str] | None,
    cause: Exception | None,
    failures: list[Any],
    module: pl.LightningModule,
    batch_idx: int,
) -> NoReturn:
    """Raise this process's failure (``cause``: the error behind it), or else the first
    failing process's, as the same type, its message behind ``process R failed:`` and its
    ``echo`` set (the failing process reports it)."""
    if mine is not None:
        message, kind = mine
        raise _STOPS[kind](message) from cause
    echo: TrainingStoppedError | None = None
    for rank, failure in enumerate(failures):
        if failure is not None:
            message, kind = failure
            echo = _STOPS[kind](f"process {rank} failed: {message}")
            break
    if echo is None:  # without a process group to tell which
        problem = (
            "another process hit a non-finite loss, a solver failure or a batch the model or "
            "the solver refused (see its message)."
        )
        echo = TrainingStoppedError(_message(module, batch_idx, problem, None))
    echo.echo = True
    raise echo


def _running(module: pl.LightningModule) -> bool:
    """Whether a trainer is running ``module``'s steps (not a step called by hand, perhaps on
    a module a stopped trainer is still attached to)."""
    return module._trainer is not None and module.trainer.state.status == TrainerStatus.RUNNING


_FAILURE = "_latentode_eval_failure"  # the module attribute a failing process keeps its failure in


def _deferred(module: pl.LightningModule) -> bool:
    """An evaluation step under several processes: its failure is decided at the shard's end."""
    if module._trainer is None or module.trainer.world_size == 1:
        return False
    stage = module.trainer.state.stage
    return stage is not None and stage.evaluating


def _evaluate_deferred(
    step: Callable[..., Any], module: pl.LightningModule, batch: Any, batch_idx: int, *args: Any
) -> Any:
    """Run an evaluation step; keep a solver failure or a refused input (`_failure`, and the
    error) and skip the shard's remaining steps; after the shard's last batch, stop every
    process if one of them failed."""
    out = None
    if getattr(module, _FAILURE, None) is None:
        try:
            out = step(module, batch, batch_idx, *args)
        except (SolverError, ModelInputError, SolverInputError) as e:
            setattr(module, _FAILURE, (_failure(module, batch_idx, e), e))
    # Lightning sets is_last_batch before the step; every process has exactly one last batch
    # (no shard is empty: `eval_sampler`), and it comes before the metrics' epoch-end gather.
    if module.trainer._evaluation_loop.batch_progress.is_last_batch:
        _agree(module, batch_idx)
    return out


def _agree(module: pl.LightningModule, batch_idx: int) -> None:
    """Gather every process's failure (one ``all_gather_object``); raise if any (`_stop`)."""
    mine, cause = getattr(module, _FAILURE, None) or (None, None)
    setattr(module, _FAILURE, None)
    failures = _gather(module, mine)
    if any(f is not None for f in failures):
        _stop(mine, cause, failures, module, batch_idx)
