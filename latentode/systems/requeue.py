"""SLURM's requeue checkpoint, saved between training steps instead of inside the signal handler.

Under SLURM with auto-requeue, Lightning answers the requeue signal (``SIGUSR1`` by default)
by saving ``hpc_ckpt_N.ckpt`` and calling ``scontrol requeue`` from inside the signal handler.
Python runs a handler between two bytecodes of whatever the process was doing, so the save can
land in the middle of ``optimizer.step()``: some parameters and their Adam moments updated,
the others not, and the step counted for neither. The resumed fit repeats that step and
updates the first parameters twice (seen in CI: Adam's step counts came back as
``{200, 201}``). Under DDP each process gets the signal at another moment, and the handler's
save runs a barrier from wherever each process was, which can pair with another process's
gradient all-reduce.

`SafeRequeue` installs a handler that only records the signal. At the end of the next
training batch (after the other callbacks, where a per-step `ModelCheckpoint` also saves) or
at the end of a validation during the fit, it runs Lightning's own save and requeue there. Under
DDP the processes agree first (one all-reduce of a flag per training step), so all of them
save at the same step. A signal that comes during validation is served at that validation's
end; one that comes after the fit's last batch and validation is not served (the fit is done).

It acts only where Lightning would: a SLURM environment with ``auto_requeue`` (the default
when the job runs under SLURM), on a platform with the signal, and when no other handler for
it was installed before the fit (Lightning then installs none either). Every system returns
it from ``configure_callbacks``.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment

__all__ = ["SafeRequeue"]

_NONE = (None, signal.SIG_DFL)


class SafeRequeue(pl.Callback):
    """Defers Lightning's SLURM requeue save (``hpc_ckpt_N.ckpt``) to the end of a training
    batch or validation, so the checkpoint never holds half an optimizer step."""

    def __init__(self) -> None:
        self._signum: int | None = None  # the requeue signal while this callback handles it
        self._previous: Any = None
        self._pending = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Install the recording handler for a fit under SLURM auto-requeue, and run after the
        other callbacks (a checkpoint saved at a batch's end must see their updates)."""
        if stage != "fit":
            return
        env = getattr(trainer._accelerator_connector, "cluster_environment", None)
        if not isinstance(env, SLURMEnvironment) or not env.auto_requeue:
            return
        signum = env.requeue_signal
        if signum is None or signal.getsignal(signum) not in _NONE:
            return  # no such signal here, or a handler of someone else's: Lightning adds none
        self._previous = signal.getsignal(signum)
        signal.signal(signum, self._record)
        self._signum, self._pending = signum, False
        # A new list: Lightning is iterating over the current one to call this hook.
        trainer.callbacks = [c for c in trainer.callbacks if c is not self] + [self]

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self._pending = True

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        """Save and requeue here if a process got the signal (all processes agree)."""
        self._serve(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save and requeue at the end of a fit's validation if a process got the signal."""
        if not trainer.sanity_checking:
            self._serve(trainer)

    def _serve(self, trainer: pl.Trainer) -> None:
        if self._signum is None:
            return
        if not trainer.strategy.reduce_boolean_decision(self._pending, all=False):
            return
        self._pending = False
        # Lightning's handler, run where every process stands at the same point of the fit.
        trainer._signal_connector._slurm_sigusr_handler_fn(self._signum, None)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Give the signal back to the handler it had before the fit."""
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """As `teardown` (Lightning calls no teardown hook after an exception)."""
        self._restore()

    def _restore(self) -> None:
        if self._signum is not None:
            signal.signal(self._signum, self._previous or signal.SIG_DFL)
            self._signum = None
