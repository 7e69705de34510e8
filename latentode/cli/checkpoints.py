"""The checkpoints of ``latentode fit``: the callbacks that write ``last.ckpt`` and report a
fit's checkpoints, which file ``--ckpt_path last`` resumes, and the checks on a
``--ckpt_path`` and on a checkpoint folder before a fit."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException

from ..data.errors import DataError
from ..systems.guard import last_checkpoint_path, newest_file
from .errors import STOP_NOTE, _listed

__all__ = ["LastCheckpoint", "RunSummary", "check_ckpt_path", "resolve_last"]


class RunSummary(Callback):
    """Prints where a fit left its checkpoints and logs, and when it trained nothing (resumed
    at or past its step or epoch limit), that it did not."""

    trained = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Training starts: a fit resumed at its limit ends before this."""
        self.trained = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the last and best checkpoints."""
        lines = ["", "latentode: fit finished."]
        if not self.trained:
            at = (
                f"step {trainer.global_step}, at or past --trainer.max_steps {trainer.max_steps}"
                if 0 <= trainer.max_steps <= trainer.global_step
                else f"epoch {trainer.current_epoch}, at or past --trainer.max_epochs "
                f"{trainer.max_epochs}"
            )
            lines[1] = f"latentode: nothing was trained: the run is at {at}; give a larger limit."
        for ckpt in trainer.checkpoint_callbacks:
            if not isinstance(ckpt, ModelCheckpoint):
                continue
            if ckpt.monitor is None and ckpt.best_model_path:
                lines.append(f"  last checkpoint: {ckpt.best_model_path}")
            elif ckpt.best_model_path:
                score = ckpt.best_model_score
                score = "" if score is None else f" ({ckpt.monitor} = {float(score):.6g})"
                lines.append(f"  best checkpoint: {ckpt.best_model_path}{score}")
        if len(lines) == 2:
            if trainer.fast_dev_run:
                why = " (--trainer.fast_dev_run writes none)"
            elif not trainer.checkpoint_callbacks:
                why = " (--trainer.enable_checkpointing false)"
            else:
                why = ""
            lines.append(f"  no checkpoint was written{why}")
        if trainer.logger is not None and trainer.logger.log_dir:
            lines.append(f"  metrics log:     {Path(trainer.logger.log_dir) / 'metrics.csv'}")
        rank_zero_info("\n".join(lines))


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: after every epoch, as configured, and when a fit ends between epochs.

    ``max_steps`` or ``max_time`` reached in the middle of an epoch ends the fit without an
    epoch end, so Lightning's callback wrote nothing and the trained weights were lost
    (``--ckpt_path last`` then started over). Here the batch that ends the fit saves
    ``last.ckpt``, as a per-step checkpoint would: resumed with a larger limit, the fit
    repeats the uninterrupted one exactly. A fit stopped elsewhere (``max_time`` during a
    mid-epoch validation) is saved when training ends; that checkpoint keeps the weights, but
    its resume starts the next epoch.

    A fit stopped by SIGTERM (a scheduler's preemption or cancellation, ``kill``) is saved
    too: every process stops at the end of the same training batch or validation
    (`SafeSignals`), where the state is whole, and resumed the fit repeats the uninterrupted
    one. Before training starts, Lightning's own handler stops a sanity check at once; nothing
    is saved there, and the message names the newest checkpoint. What was saved goes on the
    exception for `main` to report.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        """Save when this batch ends the fit before its epoch does."""
        super().on_train_batch_end(trainer, *args, **kwargs)
        ending = trainer.should_stop or 0 <= trainer.max_steps <= trainer.global_step
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if ending and not last_batch:
            self._save_final(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the final state unless this step was saved already."""
        super().on_train_end(trainer, pl_module)
        self._save_final(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Save ``last.ckpt`` when SIGTERM stopped the fit between training batches."""
        super().on_exception(trainer, pl_module, exception)
        if not isinstance(exception, SIGTERMException) or self.monitor is not None:
            return
        where = f"epoch {trainer.current_epoch}, global step {trainer.global_step}"
        if trainer.validating or trainer.sanity_checking:
            kept = last_checkpoint_path(trainer)
            note = f"SIGTERM stopped the fit during a validation ({where}); " + (
                f"the last checkpoint is {kept}" if kept else "no checkpoint had been written"
            )
        else:
            self._save_final(trainer)
            note = f"SIGTERM stopped the fit at {where}; saved {self.best_model_path}"
        setattr(exception, STOP_NOTE, f"{note}. Resume with --ckpt_path last.")

    def _save_final(self, trainer: pl.Trainer) -> None:
        """Save unless nothing is saved (``fast_dev_run``, the sanity check) or this step
        already was."""
        if self.monitor is None and not self._should_skip_saving_checkpoint(trainer):
            self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))


def _checkpoint_dir(root: str | None) -> str:
    return str(Path(root or ".") / "checkpoints")


def resolve_last(trainer: pl.Trainer) -> str | None:
    """The checkpoint ``--ckpt_path last`` resumes from, or None to start from scratch.

    Candidates: every ``last*.ckpt`` of the trainer's checkpoint callbacks (written at each
    epoch end) and the ``hpc_ckpt_*.ckpt`` that Lightning writes into ``default_root_dir`` when
    SLURM sends the requeue signal (mid-epoch, so often newer). The newest file wins.
    """
    candidates = [
        p
        for cb in trainer.checkpoint_callbacks
        if isinstance(cb, ModelCheckpoint)
        for p in cb._find_last_checkpoints(trainer)
    ]
    newest = newest_file([*candidates, *Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt")])
    if newest is None:
        rank_zero_info(
            f"latentode: --ckpt_path last: no checkpoint under {trainer.default_root_dir} yet; "
            "starting from scratch."
        )
        return None
    rank_zero_info(f"latentode: resuming from {newest}")
    return newest


# --ckpt_path values Lightning resolves itself ("last" is resolved by `resolve_last`)
_CKPT_KEYWORDS = ("last", "best", "hpc")


def check_ckpt_path(path: str) -> None:
    """Refuse a local ``--ckpt_path`` that cannot be a checkpoint: missing, a directory, or
    a file that is not a zip archive (what ``torch.save`` writes). Keywords and remote URLs
    are left to Lightning.

    Raises:
        DataError: naming the path and what to give instead.
    """
    if path in _CKPT_KEYWORDS or path.startswith("registry") or "://" in path:
        return
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("**/last.ckpt"))[:1]
        hint = f", such as {found[0]}" if found else ""
        raise DataError(f"--ckpt_path {p} is a directory; name a checkpoint file{hint}.")
    if not p.is_file():
        raise DataError(f"--ckpt_path {p}: no such file.")
    if not zipfile.is_zipfile(p):
        data = " (a data file?)" if p.suffix.lower() in (".csv", ".tsv", ".txt") else ""
        raise DataError(
            f"--ckpt_path {p} is not a checkpoint{data}; give a .ckpt file that latentode "
            "fit wrote."
        )


def _check_epoch_limit(ckpt: str, max_epochs: int | None) -> None:
    """Refuse to resume a checkpoint past ``max_epochs`` (Lightning's refusal is a traceback).
    At or past ``max_steps`` the fit ends at once and `RunSummary` says nothing was trained.

    Raises:
        DataError: naming the checkpoint's epoch and the limit.
    """
    epoch = int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    if max_epochs is not None and 0 <= max_epochs < epoch:
        raise DataError(
            f"--ckpt_path {ckpt} was saved in epoch {epoch} (counted from 0), past "
            f"--trainer.max_epochs {max_epochs}: nothing to train. Give a larger "
            "--trainer.max_epochs to go on."
        )


def _refuse_earlier_fit(trainer: pl.Trainer) -> None:
    """Raise `DataError` when a checkpoint folder of ``trainer`` already holds checkpoints.

    Raises:
        DataError: naming the folder, its checkpoints and the three ways on.
    """
    for callback in trainer.checkpoint_callbacks:
        folder = getattr(callback, "dirpath", None)
        found = sorted(p.name for p in Path(folder).glob("*.ckpt")) if folder else []
        if found:
            raise DataError(
                f"{folder} holds the checkpoints of an earlier fit ({_listed(found)}); a new "
                "fit there would replace its last.ckpt. Resume that fit with --ckpt_path last, "
                "give this one another --trainer.default_root_dir, or move those files away "
                "(nothing was written)."
            )
