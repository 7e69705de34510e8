"""SLURM's requeue signal and SIGTERM, acted on between training steps, by all processes at
the same step, instead of inside the signal handler.

Lightning answers SLURM's requeue signal (``SIGUSR1`` by default, with auto-requeue) by saving
``hpc_ckpt_N.ckpt`` and calling ``scontrol requeue`` from inside the signal handler. Python
runs a handler between two bytecodes of whatever the process was doing, so the save can land
in the middle of ``optimizer.step()``: some parameters and their Adam moments updated, the
others not, and the step counted for neither. The resumed fit repeats that step and updates
the first parameters twice (seen in CI: Adam's step counts came back as ``{200, 201}``). Under
DDP each process gets the signal at another moment, and the handler's save runs a barrier from
wherever each process was, which can pair with another process's gradient all-reduce (two
processes hung).

On SIGTERM (a scheduler's preemption or cancellation, ``kill``) Lightning's handler broadcasts
from inside the handler and each process stops at the end of the batch where it saw the signal:
under DDP, processes that saw it at different batches went on to different collectives (a
two-process fit hung in 2 of 6 SIGTERMs).

`SafeSignals` replaces both handlers, once training starts, with one that only records the
signal. At the end of each training batch (after the other callbacks, where a per-step
`ModelCheckpoint` also saves) and of each validation during the fit, the processes agree on
what was recorded (one all-reduce of two flags per step under DDP), and all of them act at
that point: the requeue signal runs Lightning's own save and requeue; SIGTERM sets Lightning's
flag, so Lightning stops every process at the end of that batch (or validation), where
``cli.LastCheckpoint`` saves ``last.ckpt``. A signal after the fit's last batch and validation
is not acted on: the fit is done.

It acts where Lightning would: SIGTERM always, the requeue signal under a SLURM environment
with ``auto_requeue`` (the default when the job runs under SLURM) unless another handler for it
was installed before the fit (Lightning then installs none either); not on Windows. Before
training starts (the sanity check), Lightning's handlers are in place. A SIGTERM handler that
was installed before the fit is still called. Every system returns this callback from
``configure_callbacks``.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment

__all__ = ["SafeSignals"]

_NO_HANDLER = (None, signal.SIG_DFL)  # Lightning installs its requeue handler only then


class SafeSignals(pl.Callback):
    """Acts on SLURM's requeue signal and on SIGTERM at the end of a training batch or a
    validation, in every process at the same step (see the module's docstring)."""

    def __init__(self) -> None:
        self._requeue: int | None = None  # the requeue signal, where this callback handles it
        self._user_term: Callable[..., Any] | None = None  # a SIGTERM handler from before
        self._seen = {"requeue": False, "term": False}
        self._active = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Note which signals to take over, and run after the other callbacks (a checkpoint
        saved at a batch's end must see their updates)."""
        self._active = False
        if stage != "fit" or sys.platform == "win32":
            return
        env = getattr(trainer._accelerator_connector, "cluster_environment", None)
        requeue = getattr(env, "requeue_signal", None)
        auto = isinstance(env, SLURMEnvironment) and env.auto_requeue
        self._requeue = requeue if auto and signal.getsignal(requeue) in _NO_HANDLER else None
        previous = signal.getsignal(signal.SIGTERM)
        self._user_term = previous if callable(previous) else None
        # A new list: Lightning is iterating over the current one to call this hook.
        trainer.callbacks = [c for c in trainer.callbacks if c is not self] + [self]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Replace Lightning's handlers (installed before training starts; Lightning puts the
        ones from before the fit back when the fit ends)."""
        if sys.platform == "win32":
            return
        self._seen = {"requeue": False, "term": False}
        signal.signal(signal.SIGTERM, self._record_term)
        if self._requeue is not None:
            signal.signal(self._requeue, self._record_requeue)
        self._active = True

    def _record_requeue(self, signum: int, frame: FrameType | None) -> None:
        self._seen["requeue"] = True

    def _record_term(self, signum: int, frame: FrameType | None) -> None:
        self._seen["term"] = True
        if self._user_term is not None:
            self._user_term(signum, frame)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        """Act on the signals any process got."""
        self._act(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Act on the signals any process got, at the end of a fit's validation."""
        if not trainer.sanity_checking:
            self._act(trainer)

    def _act(self, trainer: pl.Trainer) -> None:
        if not self._active:
            return
        requeue, term = self._seen["requeue"], self._seen["term"]
        if trainer.world_size > 1:  # every process: the same decision at the same step
            flags = torch.tensor([requeue, term], dtype=torch.int32)
            flags = flags.to(trainer.strategy.root_device)
            flags = trainer.strategy.reduce(flags, reduce_op="sum")
            requeue, term = (bool(v) for v in flags.tolist())
        if requeue:
            self._seen["requeue"] = False
            trainer._signal_connector._slurm_sigusr_handler_fn(self._requeue, None)
        if term:  # Lightning stops at this batch's (or validation's) end
            trainer._signal_connector.received_sigterm = True
