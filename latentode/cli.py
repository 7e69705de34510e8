"""The ``latentode`` command, built on LightningCLI.

Usage::

    latentode fit --config configs/spirals.yaml                  # train
    latentode fit --config configs/spirals.yaml --ckpt_path last # resume from last.ckpt
    latentode validate --config configs/spirals.yaml --ckpt_path runs/spirals/checkpoints/last.ckpt
    latentode test --config configs/spirals.yaml --ckpt_path ...
    latentode fit --config configs/spirals.yaml --print_config   # the full resolved config

Each run writes under ``trainer.default_root_dir``: ``checkpoints/last.ckpt`` and the best
checkpoint by ``val/mse`` (``checkpoints/best-*.ckpt``), and CSV metric logs in ``logs/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_info

__all__ = ["LatentODECLI", "RunSummary", "main"]


class RunSummary(Callback):
    """Prints where a fit left its checkpoints and logs."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the last and best checkpoints."""
        ckpt = trainer.checkpoint_callback
        if not isinstance(ckpt, ModelCheckpoint):
            return
        lines = ["", "latentode: fit finished."]
        if ckpt.last_model_path:
            lines.append(f"  last checkpoint: {ckpt.last_model_path}")
        if ckpt.best_model_path:
            score = (
                ""
                if ckpt.best_model_score is None
                else f" ({ckpt.monitor} = {float(ckpt.best_model_score):.6g})"
            )
            lines.append(f"  best checkpoint: {ckpt.best_model_path}{score}")
        if trainer.logger is not None and trainer.logger.log_dir:
            lines.append(f"  metrics log:     {Path(trainer.logger.log_dir) / 'metrics.csv'}")
        rank_zero_info("\n".join(lines))


def _checkpoint_dir(root: str | None) -> str:
    return str(Path(root or ".") / "checkpoints")


class LatentODECLI(LightningCLI):
    """LightningCLI with run-directory checkpoints and CSV logs by default."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Checkpointing (last + best by ``val/mse``) under ``<default_root_dir>/checkpoints``."""
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/mse",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch:03d}-{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", _checkpoint_dir)
        parser.add_lightning_class_args(RunSummary, "run_summary")

    def before_instantiate_classes(self) -> None:
        """Default logger: CSV metrics under ``<default_root_dir>/logs``."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.logger is None or trainer.logger is True:
            trainer.logger = {
                "class_path": "pytorch_lightning.loggers.CSVLogger",
                "init_args": {"save_dir": trainer.default_root_dir or ".", "name": "logs"},
            }


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``latentode`` console script."""
    LatentODECLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
