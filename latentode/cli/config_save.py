"""Lightning's configuration saving, made safe for a folder the user keeps files in:
`SaveRunConfig` replaces a ``config.yaml`` only when a latentode run saved it."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.cli import SaveConfigCallback

from ..data.errors import DataError, same_on_every_process
from ..paths import write_whole

__all__ = ["CONFIG_MARK", "SaveRunConfig"]

# The first line of every configuration a latentode run saves: a later run may replace a file
# that starts with it, and no other (`SaveRunConfig`).
CONFIG_MARK = "# saved by latentode "


class SaveRunConfig(SaveConfigCallback):
    """Lightning's configuration saving (``config.yaml`` in the trainer's log folder), which
    replaces only what a latentode run saved there.

    Each saved configuration starts with a YAML comment, ``# saved by latentode <stage>: a
    later run in this folder replaces this file``; the file still loads with ``--config``.
    With ``--trainer.logger false`` the log folder is ``--trainer.default_root_dir``, where a
    rerun or a ``--ckpt_path`` resume replaces the earlier run's configuration, but a
    ``config.yaml`` without the comment (the user's own) is refused before anything is
    written. With the logger on, each run saves under a new ``logs/version_N``.

    ``overwrite`` False refuses any existing file, as Lightning's does; ``multifile`` is not
    supported (the configuration is saved as one file).
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the target on global rank zero and save it there; the answer is broadcast,
        so that every process of a multi-process run stops alike.

        Raises:
            DataError: ``config.yaml`` exists and a latentode run did not save it, or it
                could not be written; marked `SAME_ON_EVERY_PROCESS`.
        """
        if self.already_saved:
            return
        stage = getattr(stage, "value", stage)  # "fit", not TrainerFn.FITTING
        if self.save_to_log_dir:
            log_dir = trainer.log_dir  # broadcasts the directory
            assert log_dir is not None
            target = os.path.join(log_dir, self.config_filename)
            refusal = None
            if trainer.is_global_zero:
                refusal = self._refusal(target, stage)
                if refusal is None:
                    try:
                        self._write(str(log_dir), target, stage)
                    except DataError as e:
                        refusal = str(e)
                    except OSError as e:  # a remote folder
                        refusal = f"could not write {target}: {e.strerror or e}."
            refusal = trainer.strategy.broadcast(refusal)
            if refusal is not None:
                raise same_on_every_process(DataError(refusal))
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        # every process in step for later calls of setup (Lightning's own)
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def _refusal(self, target: str, stage: str) -> str | None:
        """Why the configuration may not be saved as ``target``, or None."""
        fs = get_filesystem(target)
        if not fs.exists(target):
            return None
        ways = (
            "(with --trainer.logger false the configuration is saved in "
            "--trainer.default_root_dir). Move it elsewhere, give another "
            "--trainer.default_root_dir, or leave the logger on (each run then saves it "
            "under <default_root_dir>/logs/version_N). Nothing was written."
        )
        if fs.isdir(target):
            return f"{target} is a directory, where this {stage} saves its configuration {ways}"
        try:
            with fs.open(target, "rb") as f:
                head = f.read(len(CONFIG_MARK))
        except OSError as e:
            return (
                f"{target} exists and cannot be read ({e.strerror or e}), so this {stage} "
                f"cannot tell whether a latentode run saved it; it would replace it {ways}"
            )
        if head == CONFIG_MARK.encode():
            if self.overwrite:
                return None
            return f"{target} exists: this {stage} saves its configuration there {ways}"
        return (
            f"{target} exists and a latentode run did not save it (its first line is not "
            f"'{CONFIG_MARK.strip()} ...'): this {stage} saves its configuration there and "
            f"would replace it {ways}"
        )

    def _write(self, log_dir: str, target: str, stage: str) -> None:
        """Save the configuration as ``target``, its first line `CONFIG_MARK` (whole, on a
        local disk: `write_whole`)."""
        if "skip_unset" in inspect.signature(self.parser.dump).parameters:
            dumped = self.parser.dump(self.config, skip_unset=False)
        else:  # jsonargparse before 4.49
            dumped = self.parser.dump(self.config, skip_none=False)
        text = f"{CONFIG_MARK}{stage}: a later run in this folder replaces this file\n{dumped}"
        if "://" in target:
            fs = get_filesystem(log_dir)
            fs.makedirs(log_dir, exist_ok=True)
            with fs.open(target, "w") as f:
                f.write(text)
        else:
            write_whole(Path(target), lambda tmp: tmp.write_text(text))
