"""`LatentODECLI`: Lightning's CLI (fit / validate / test of a config) with our checkpoints,
CSV logs, and one-line messages for the user's mistakes."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_only

from ..data.errors import DataError, same_on_every_process
from ..paths import check_output_dir
from ..resume import (
    check_classes,
    data_differences,
    differences,
    last_candidate,
    overridden_note,
    saved_settings,
)
from .checkpoints import (
    LastCheckpoint,
    RunSummary,
    _check_epoch_limit,
    _checkpoint_dir,
    _refuse_earlier_fit,
    check_ckpt_path,
    resolve_last,
)
from .errors import USER_ERRORS

__all__ = ["LatentODECLI"]


def _refusal(error: BaseException) -> BaseException | None:
    """The first of ``error``'s causes that says what the user should change (one of
    `USER_ERRORS`, or a missing package), or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (*USER_ERRORS, ModuleNotFoundError)):
            return error
        error = error.__cause__ or error.__context__
    return None


class LatentODECLI(LightningCLI):
    """LightningCLI with run-directory checkpoints and CSV logs by default."""

    def _parse_ckpt_path(self) -> None:
        """Lightning reads the hyperparameters of ``--ckpt_path`` as soon as the arguments are
        parsed; a path that is no checkpoint is refused here with its name, not a traceback
        from the unpickler.

        Raises:
            DataError: ``--ckpt_path`` is missing, a directory, or not a checkpoint file.
        """
        sub = self.config.get("subcommand")
        ckpt = self.config[sub].get("ckpt_path") if sub else None
        if ckpt is None:
            return
        check_ckpt_path(str(ckpt))
        config = self.config[sub]
        # "last": the file before_fit will resume from, so that its settings are used too
        # (Lightning reads those of a named file only)
        local = last_candidate(config.trainer.default_root_dir) if ckpt == "last" else ckpt
        if local is None or not Path(str(local)).is_file():
            return
        given = config.model.clone()
        try:
            saved_model, saved_data = saved_settings(local)
            check_classes(
                str(local),
                saved_model,
                saved_data,
                {"model": given.class_path, "data": config.data.class_path, "subcommand": sub},
            )
            config.ckpt_path = local
            super()._parse_ckpt_path()  # a new self.config, the model's settings the saved ones
        except DataError:
            raise
        except Exception as e:  # any failure to read it is the file's
            raise DataError(
                f"--ckpt_path {ckpt}: not a readable checkpoint ({type(e).__name__}: {e}); "
                "give a .ckpt file that latentode fit wrote."
            ) from None
        config = self.config[sub]
        config.ckpt_path = ckpt  # "last" is resolved by before_fit, once the trainer exists
        if rank_zero_only.rank == 0:
            data = sub == "fit" and data_differences(config.data.init_args.as_dict(), saved_data)
            overridden_note(
                str(local),
                differences(given.init_args.as_dict(), config.model.init_args.as_dict()),
                data or [],
            )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Checkpoints under ``<default_root_dir>/checkpoints``: the best by ``val/mse`` and
        ``last.ckpt`` (every epoch, and at the end of a fit that stops mid-epoch)."""
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/mse",
                "checkpoint.mode": "min",
                "checkpoint.filename": "best-{epoch:03d}-{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath", _checkpoint_dir)
        # last.ckpt after every epoch whatever the metric did (Lightning's save_last only
        # follows the monitored saves), so --ckpt_path last resumes from the latest state.
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {
                "last_checkpoint.monitor": None,
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.filename": "last",
                "last_checkpoint.enable_version_counter": False,
            }
        )
        parser.link_arguments(
            "trainer.default_root_dir", "last_checkpoint.dirpath", _checkpoint_dir
        )
        parser.add_lightning_class_args(RunSummary, "run_summary")

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """Lightning's trainer; a callback that duplicates another's checkpoint key is refused
        with the options that configure ours.

        Raises:
            DataError: two stateful callbacks of one type with the same settings (a
                checkpoint could not restore both); trainer options this machine or
                Lightning cannot run (a GPU accelerator without a GPU, ``devices 0``, an
                unknown strategy, one whose package is not installed).
        """
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, ModuleNotFoundError) as e:
            raise DataError(
                f"the trainer options cannot run here: {e} Check the --trainer options "
                "(accelerator, devices, num_nodes, strategy, precision, callbacks) and the "
                "trainer preset given with --config (configs/trainer/cpu.yaml runs on any "
                "machine)."
            ) from None
        except RuntimeError as e:
            found = re.search(r"more than one stateful callback of type `(\w+)`", str(e))
            if not found:
                raise
            raise DataError(
                f"--trainer.callbacks: two {found.group(1)} callbacks with the same settings "
                "(for a ModelCheckpoint: monitor, mode, every_n_epochs, every_n_train_steps); "
                "a checkpoint could not restore both. latentode already adds a "
                "ModelCheckpoint that keeps the best by val/mse (--checkpoint.*; last.ckpt is "
                "--last_checkpoint.*). Configure that, or give yours another monitor, mode or "
                "frequency."
            ) from None

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> pl.Trainer:
        """``--trainer.enable_checkpointing false`` leaves out our two ModelCheckpoints (the
        best and last.ckpt), which Lightning would otherwise refuse beside it."""
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        return super()._instantiate_trainer(config, callbacks)

    def before_fit(self) -> None:
        """``--ckpt_path last``: the newest of ``last.ckpt`` and a SLURM requeue checkpoint.
        A new fit (no ``--ckpt_path``) into a checkpoint folder holding an earlier fit's
        checkpoints is refused, since it would replace that fit's ``last.ckpt``.

        Raises:
            DataError: a new fit would write over an earlier fit's checkpoints, or its saved
                configuration over a ``--config`` file (`_refuse_config_overwrite`).
        """
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            config["ckpt_path"] = resolve_last(self.trainer)
        _refuse_config_overwrite(self)
        if config.get("ckpt_path") is None:
            _refuse_earlier_fit(self.trainer)
        elif Path(str(config["ckpt_path"])).is_file():
            _check_epoch_limit(str(config["ckpt_path"]), self.trainer.max_epochs)
        _read_data_first(self.datamodule)
        from ..data.csv_module import CSVDataModule

        if isinstance(self.datamodule, CSVDataModule) and self.trainer.is_global_zero:
            print(f"latentode fit: {self.datamodule.describe()}", file=sys.stderr)

    def before_validate(self) -> None:
        """Read the data before any other process starts (`_read_data_first`); refuse to save
        the configuration over a ``--config`` file (`_refuse_config_overwrite`)."""
        _refuse_config_overwrite(self)
        _read_data_first(self.datamodule)

    def before_test(self) -> None:
        """Read the data before any other process starts (`_read_data_first`); refuse to save
        the configuration over a ``--config`` file (`_refuse_config_overwrite`)."""
        _refuse_config_overwrite(self)
        _read_data_first(self.datamodule)

    def after_test(self) -> None:
        """On a CSV, point to the held-out evaluation in the user's units (Lightning's test
        prints normalised metrics, easy to take for the other)."""
        from ..data.csv_module import CSVDataModule

        data = self.datamodule
        if isinstance(data, CSVDataModule) and self.trainer.is_global_zero:
            ckpt = self.config_init[self.subcommand].get("ckpt_path") or "CKPT"
            print(
                "latentode: the metrics above are in normalised units. For errors in your "
                "units beside naive baselines (last value, linear trend, linear interpolation) "
                "and the interval coverage: latentode test --ckpt_path "
                f"{ckpt} --data.path {data.path}",
                file=sys.stderr,
            )

    def instantiate_classes(self) -> None:
        """Build the model, data module and trainer; a class that refuses its arguments (a
        model option that does not fit the chosen encoder, a logger whose package is missing)
        stops with its own message instead of jsonargparse's dump of every candidate type.

        Raises:
            DataError, ModelInputError, ...: the refusal found in the exception's causes.
        """
        try:
            super().instantiate_classes()
        except ValueError as e:
            cause = _refusal(e)
            if cause is None:
                raise
            if isinstance(cause, ModuleNotFoundError):
                raise DataError(
                    f"a class given in the configuration needs a package that is not "
                    f"installed: {cause}"
                ) from None
            raise cause from None

    def before_instantiate_classes(self) -> None:
        """Default logger: CSV metrics under ``<default_root_dir>/logs``."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.default_root_dir is not None and "://" not in str(trainer.default_root_dir):
            check_output_dir(trainer.default_root_dir, "--trainer.default_root_dir")
        if trainer.logger is None or trainer.logger is True:
            trainer.logger = {
                "class_path": "pytorch_lightning.loggers.CSVLogger",
                "init_args": {"save_dir": trainer.default_root_dir or ".", "name": "logs"},
            }


def _read_data_first(datamodule: pl.LightningDataModule | None) -> None:
    """Read and check the data in this process before Lightning starts the others (DDP): a
    bad file then stops the run with one message, instead of one per process. The data
    modules' ``setup`` reads once and is a no-op when Lightning calls it again.

    Raises:
        The data module's user errors, marked `SAME_ON_EVERY_PROCESS`: processes that SLURM or
        torchrun started together read the same file and fail alike, and only the first
        reports it (`main`).
    """
    if datamodule is None:
        return
    try:
        datamodule.setup("fit")
    except USER_ERRORS as e:
        same_on_every_process(e)
        raise


def _refuse_config_overwrite(cli: LightningCLI) -> None:
    """Refuse a run whose configuration would be saved over one of its own ``--config``
    files: Lightning saves it as ``config.yaml`` in the trainer's log folder, replacing what
    is there, and with ``--trainer.logger false`` that folder is ``default_root_dir``, where
    a user may keep the config the run was given.

    Raises:
        DataError: naming the file and the ways round.
    """
    config = cli.config[cli.subcommand]
    saved = cli.save_config_callback and not config.trainer.get("fast_dev_run")
    if not saved or cli.trainer.log_dir is None:  # Lightning saves none
        return
    name = cli.save_config_kwargs.get("config_filename", "config.yaml")
    target = (Path(str(cli.trainer.log_dir)) / name).resolve()
    given = config.get("config") or []
    for path in given:
        source = Path(getattr(path, "absolute", None) or str(path)).resolve()
        if source == target:  # every process of a multi-process run stops alike
            raise same_on_every_process(
                DataError(
                    f"--config {path}: this run saves its configuration as {target}, which would "
                    "replace that file (with --trainer.logger false the configuration is saved in "
                    "--trainer.default_root_dir). Keep the config elsewhere (copy it), give "
                    "another --trainer.default_root_dir, or leave the logger on (each run then "
                    "saves it under <default_root_dir>/logs/version_N)."
                )
            )
