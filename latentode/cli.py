"""The ``latentode`` command, built on LightningCLI.

Usage::

    latentode fit --config configs/spirals.yaml                  # train
    latentode fit --config configs/spirals.yaml --ckpt_path last # resume from last.ckpt
    latentode validate --config configs/spirals.yaml --ckpt_path runs/spirals/checkpoints/last.ckpt
    latentode test --config configs/spirals.yaml --ckpt_path ...
    latentode fit --config configs/spirals.yaml --print_config   # the full resolved config
    latentode predict --ckpt_path CKPT --data.path HISTORY.csv --horizon 104W --output f.csv \
        [--plot DIR] [--step 1W] [--times TIMES.csv] [--n_samples 200] [--overwrite]

Each run writes under ``trainer.default_root_dir``: ``checkpoints/last.ckpt`` and the best
checkpoint by ``val/mse`` (``checkpoints/best-*.ckpt``), and CSV metric logs in ``logs/``.

``predict`` is our own subcommand (not Lightning's): for each series of the history file it
conditions on the observed history and writes the posterior predictive at future times as a
long CSV ``series_id, time, channel, mean, std, q05, q50, q95`` (more quantiles with
``--levels``) in the file's units and time format, its bands calibrated on the fit's
validation series (`latentode.calibration`; ``--no-calibrate``: the model's own). User
errors (bad files, bad options) print a message and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import signal
import sys
import typing
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from .calibration import Calibration, calibrate
from .data.errors import DataError
from .data.prep import Segment
from .data.table import SeriesTable
from .data.transforms import forward, kinds_of
from .ensemble import Ensemble
from .evaluate import scored_note, scored_series
from .forecast import forecast, future_times, merge_shards, parse_horizon, read_history
from .nn.base import ModelInputError
from .parse_errors import ConciseParser
from .paths import STDOUT, check_output_dir, check_output_file, write_whole
from .predictive import call_memory, percent, quantile_probs
from .resume import (
    check_classes,
    data_differences,
    differences,
    last_candidate,
    overridden_note,
    saved_settings,
)
from .solver import SolverError, SolverInputError
from .systems.guard import (
    TrainingStoppedError,
    end_process,
    last_checkpoint_path,
    leave_process_group,
    newest_file,
)

__all__ = [
    "ForecastStoppedError",
    "LatentODECLI",
    "RunSummary",
    "gather_shards",
    "main",
    "predict_main",
    "resolve_last",
]

_SHOW = 5  # series named in a note
PLOT_STEM = 120  # characters of a series id kept in its --plot file name


def _listed(items: list[str]) -> str:
    """The first `_SHOW` of ``items`` joined by commas, and how many more there are."""
    more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


class ForecastStoppedError(RuntimeError):
    """A process of a multi-process ``latentode predict`` could not forecast its series (the
    message names the process and its error); every process stops with it."""


USER_ERRORS = (
    DataError,
    ModelInputError,
    SolverInputError,
    SolverError,
    TrainingStoppedError,
    ForecastStoppedError,
    FileNotFoundError,
)
# Set on a user error that every process of a multi-process run raises alike (reading the
# same file): only the first process prints it.
SAME_ON_EVERY_PROCESS = "latentode_same_on_every_process"
STOP_NOTE = "latentode_stop_note"  # what a fit stopped by SIGTERM saved, set by `LastCheckpoint`
SIGTERM_STATUS = 128 + signal.SIGTERM  # the shell's status for a process ended by SIGTERM


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
            DataError: a new fit would write over an earlier fit's checkpoints.
        """
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            config["ckpt_path"] = resolve_last(self.trainer)
        if config.get("ckpt_path") is None:
            _refuse_earlier_fit(self.trainer)
        elif Path(str(config["ckpt_path"])).is_file():
            _check_epoch_limit(str(config["ckpt_path"]), self.trainer.max_epochs)
        _read_data_first(self.datamodule)
        from .data.csv_module import CSVDataModule

        if isinstance(self.datamodule, CSVDataModule) and self.trainer.is_global_zero:
            print(f"latentode fit: {self.datamodule.describe()}", file=sys.stderr)

    def before_validate(self) -> None:
        """Read the data before any other process starts (`_read_data_first`)."""
        _read_data_first(self.datamodule)

    def before_test(self) -> None:
        """Read the data before any other process starts (`_read_data_first`)."""
        _read_data_first(self.datamodule)

    def after_test(self) -> None:
        """On a CSV, point to the held-out evaluation in the user's units (Lightning's test
        prints normalised metrics, easy to take for the other)."""
        from .data.csv_module import CSVDataModule

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
        setattr(e, SAME_ON_EVERY_PROCESS, True)
        raise


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


IMPORTANCE_HELP = (
    "weight the posterior paths by the model's own posterior given each history (importance "
    "sampling with the encoder as proposal) instead of taking the encoder's q(z0) as it is; "
    "compare both with `latentode test` on your data (on the shipped fertility data it "
    "forecast worse on every fit), and raise --n_samples with it"
)


REFINE_HELP = (
    "refine each series' posterior q(z0) by this many Adam steps on its own history's ELBO "
    "before drawing the paths (semi-amortised inference; 0: the encoder's q as it is); the "
    "calibration uses the same setting"
)


CALIBRATE_HELP = (
    "scale the 5-95%% bands so that they cover 90%% of the fit's validation forecasts (split "
    "conformal; needs the validation series in --data.path, as in the training file); "
    "--no-calibrate: the model's own bands"
)


BY_LEAD_HELP = (
    "one band factor per lead-time bin, so that the bands cover 90%% at every lead time "
    "(default; one bin when the validation forecasts cannot fill two); "
    "--no-calibrate_by_lead: one factor for every lead time"
)


TAILS_HELP = (
    "calibrate each end of every band on its own, so that at most 5%% of values fall below "
    "q05 and at most 5%% above q95 (each end at 0.95: needs 19 validation series; a band whose "
    "series are too few keeps its central factors); --no-calibrate_tails: one factor for both "
    "ends, so the band covers 90%% but its misses may all lie on one side"
)


DUPLICATES_ARG: dict[str, Any] = {
    "choices": ("error", "mean"),
    "default": None,
    "help": "repeated (series, time) rows: refuse them (error) or average them (mean); "
    "default: as the fit read its training file",
}

CKPT_HELP = (
    "checkpoint written by latentode fit; several (e.g. fits of one config with different "
    "--seed_everything): their forecasts are pooled with equal weights, --n_samples paths "
    "from each (a deep ensemble; they must share the file and the data settings)"
)


SEED_HELP = (
    "seeds the posterior and noise draws, each series' from this seed and its id alone: "
    "--chunk, --devices and the file's order leave them as they are (to the solver's tolerance)"
)
LEVELS_HELP = (
    "central bands to write besides the 5-95%% one, as coverages in percent: --levels 50 80 95 "
    "adds q25/q75, q10/q90 and q02.5/q97.5; each is calibrated on its own (a 95%% band needs "
    "19 validation series, a 99%% band 99: with fewer it takes the 5-95%% band's factors)"
)


def _levels(values: list[str] | None) -> tuple[float, ...]:
    """``--levels`` in percent as coverages (0.8 for 80), checked.

    Raises:
        DataError: a value that is not a number strictly between 1 and 100.
    """
    out = []
    for text in values or ():
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 1.0 <= value < 100.0:  # NaN fails too
            share = f" ({100 * value:g} for a share of {value:g})" if 0 < value < 1 else ""
            raise DataError(
                f"--levels {text}: give each band's coverage in percent, a number from 1 to "
                f"below 100, such as 80 for the 10-90% band{share}."
            )
        out.append(value / 100)
    return tuple(out)


def _draws(args: argparse.Namespace) -> dict[str, Any]:
    """How the posterior paths are drawn, as `calibrate`, `evaluate` and `forecast` take it:
    the calibration must draw them as the forecasts it calibrates do."""
    return {
        "n_samples": args.n_samples,
        "seed": args.seed,
        "importance": args.importance,
        "refine": args.refine,
    }


def _calibration(
    args: argparse.Namespace,
    model,
    state,
    table,
    rank: int = 0,
    world: int = 1,
    chunk: int = 128,
) -> Calibration:
    """The band factors, computed by the first process and shared with the others."""
    cal, failure = None, None
    if rank == 0:
        try:
            cal = calibrate(
                model,
                table,
                state,
                chunk=chunk,
                by_lead=args.calibrate_by_lead,
                levels=_levels(args.levels),
                tails=args.calibrate_tails,
                **_draws(args),
            )
        except USER_ERRORS as e:
            if world == 1:
                raise
            failure = e
    return gather_shards(cal, failure, world)[0] if world > 1 else cal


def _overlap(table, state) -> bool:
    """Whether `latentode test` would score validation series (the file lacks the test ids)."""
    val = set(state.get("val_series") or [])
    return any(table.series_ids[s] in val for s in scored_series(table, state))


CALL_HELP = (
    "about the memory one model call may hold, in GB (default 1.5): more series than that "
    "are drawn a few at a time, and one series that needs more on its own is refused; raise "
    "it on a machine with memory to spare (latentode/predictive.py, draws_per_call)"
)


def _predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="latentode predict",
        description="Forecast every series of a CSV with a fitted latent ODE checkpoint.",
    )
    p.add_argument("--ckpt_path", required=True, nargs="+", help=CKPT_HELP)
    p.add_argument("--data.path", dest="data_path", required=True, help="history CSV")
    p.add_argument("--data.duplicates", dest="duplicates", **DUPLICATES_ARG)
    p.add_argument(
        "--horizon",
        required=True,
        help="how far past each series' last observation: a number in the data's "
        "time unit, or for date-times a span such as 730D or 104W",
    )
    p.add_argument("--output", required=True, help="forecast CSV to write")
    p.add_argument("--step", default=None, help="grid spacing (default: median spacing)")
    p.add_argument(
        "--times",
        default=None,
        help="CSV of explicit future times (series_id, time) instead of a grid",
    )
    p.add_argument("--plot", default=None, help="directory for one PNG per series")
    p.add_argument("--n_samples", type=int, default=200, help="posterior paths per series")
    p.add_argument("--importance", action="store_true", help=IMPORTANCE_HELP)
    p.add_argument("--refine", type=int, default=0, metavar="STEPS", help=REFINE_HELP)
    p.add_argument(
        "--calibrate", action=argparse.BooleanOptionalAction, default=True, help=CALIBRATE_HELP
    )
    p.add_argument(
        "--calibrate_by_lead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=BY_LEAD_HELP,
    )
    p.add_argument(
        "--calibrate_tails",
        action=argparse.BooleanOptionalAction,
        default=False,
        help=TAILS_HELP,
    )
    p.add_argument("--levels", nargs="+", default=None, metavar="PERCENT", help=LEVELS_HELP)
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output and --plot PNGs"
    )
    p.add_argument(
        "--accelerator", default="cpu", help="cpu, gpu or auto (Lightning's accelerator names)"
    )
    p.add_argument(
        "--devices",
        type=int,
        default=1,
        help="processes per node: the series are shared out, the first process writes one "
        "output in the file's series order",
    )
    p.add_argument("--num_nodes", type=int, default=1, help="nodes (under SLURM or torchrun)")
    p.add_argument(
        "--chunk",
        type=int,
        default=128,
        help="series per model call (memory; the forecast does not depend on it)",
    )
    p.add_argument("--call_memory", type=float, default=None, metavar="GB", help=CALL_HELP)
    return p


def _explicit_times(path: str, table, series_column: str | None, time_column: str) -> dict:
    try:
        # every cell text, missing only when empty (a series may be named NA), as the
        # history's ids are read
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a CSV of series and times ({e}).") from None
    missing = [c for c in (series_column, time_column) if c and c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}.")
    ids = frame[series_column] if series_column else pd.Series([table.series_ids[0]] * len(frame))
    unknown = sorted(set(ids.dropna()) - set(table.series_ids))
    if unknown or ids.isna().any():
        named = unknown[:5] if unknown else ["(empty)"]
        raise DataError(
            f"{path}: series {named} are not in the history file {table.source}; every "
            f"--times row needs a series of --data.path."
        )
    empty = np.flatnonzero(frame[time_column].isna().to_numpy())
    if len(empty):
        raise DataError(
            f"{path}: line {int(empty[0]) + 2} has no {time_column!r}; give a time on every row."
        )
    values = frame[time_column].to_numpy()
    try:
        encoded = table.encoding.encode(values)
    except DataError:  # find the row to name
        encoded = np.array([_encoded_or_nan(table, v) for v in values])
    bad = np.flatnonzero(~np.isfinite(encoded))
    if len(bad):
        raise DataError(
            f"{path}: line {int(bad[0]) + 2}: {values[bad[0]]!r} is not a time in the history "
            f"file's format (e.g. {table.encoding.format(table.times[:1])[0]})."
        )
    return {sid: encoded[(ids == sid).to_numpy()] for sid in ids.unique()}


def _encoded_or_nan(table, value: str) -> float:
    try:
        return float(table.encoding.encode([value])[0])
    except DataError:
        return math.nan


def run_predict(args: argparse.Namespace) -> str:
    """Load the checkpoint, forecast, write the CSV (and plots); returns a summary line (empty
    in the processes other than the first).

    Raises:
        DataError and the other `USER_ERRORS` for anything the user can fix.
    """
    import matplotlib.pyplot as plt

    from .plots import plot_forecast

    to_stdout = args.output == STDOUT
    out = Path(args.output) if to_stdout else check_output_file(args.output, args.overwrite)
    if args.devices < 1 or args.num_nodes < 1 or args.chunk < 1:
        raise DataError("--devices, --num_nodes and --chunk must be >= 1.")
    levels = _levels(args.levels)
    rank, world, device = _launch(args)
    model, state, table = _load_forecaster(args.ckpt_path, args.data_path, args.duplicates)
    model.to(device)
    pngs = _plot_files(args, table.series_ids) if args.plot else []
    horizon = parse_horizon(args.horizon, table)
    step = None if args.step is None else parse_horizon(args.step, table, "--step")
    times = None
    if args.times:
        times = _explicit_times(
            args.times, table, state.get("series_column"), state.get("time_column", "time")
        )
    # The requested times are refused, if at all, before the calibration's forecasts run.
    on_history = args.importance or args.refine > 0
    future_times(model, table, state, horizon, step, times, args.n_samples, on_history)
    cal = None
    if args.calibrate:
        cal = _calibration(args, model, state, table, rank, world, args.chunk)
    try:
        result = forecast(
            model,
            table,
            state,
            horizon,
            step,
            times,
            chunk=args.chunk,
            shard=(rank, world),
            calibration=cal,
            levels=levels,
            **_draws(args),
        )
        failure = None
    except USER_ERRORS as e:  # this process's series only: tell the others before stopping
        if world == 1:
            raise
        result, failure = None, e
    if world > 1:
        parts = gather_shards(None if result is None else result.summary, failure, world)
        merged = merge_shards(result, parts)
    else:
        merged = result
    if rank == 0 and to_stdout:
        merged.write_csv(sys.stdout)
        sys.stdout.flush()
    elif rank == 0:
        write_whole(out, merged.write_csv)
    if args.plot:  # each process draws its own series
        Path(args.plot).mkdir(parents=True, exist_ok=True)
        to_orig = table.encoding.to_original
        for seg, fut, summary in zip(result.history, result.future, result.summary, strict=True):
            if summary is None:
                continue
            sid = table.series_ids[seg.series]
            fig = plot_forecast(
                to_orig(seg.times),
                seg.values,
                to_orig(fut),
                summary,
                table.channels,
                f"{sid}",
                result.levels,
            )
            fig.savefig(pngs[seg.series], dpi=110)
            plt.close(fig)
    n = len(merged.history)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # plots of every process are on disk when the command returns
    if rank > 0:
        return ""
    procs = f" ({world} processes)" if world > 1 else ""
    where = "standard output" if to_stdout else out
    lines = [f"latentode predict: wrote {merged.n_rows} rows for {n} series to {where}{procs}"]
    if isinstance(model, Ensemble):
        lines.append(f"latentode predict: {_pooled(model, args.n_samples)}.")
    for note in (
        _unobserved(merged.history, table),
        _outside_training(merged.history, table, state),
        _few_paths(args.n_samples, levels),
    ):
        if note:
            lines.append(f"latentode predict: note: {note}")
    if cal is not None:
        lines += [f"latentode predict: {x}." for x in cal.describe(table.channels).splitlines()]
        furthest = max(
            float(f[-1] - g.times[-1]) for g, f in zip(merged.history, merged.future, strict=True)
        )
        past = furthest > cal.max_lead * (1 + 1e-9)  # max_lead NaN: nothing was validated
        unit = table.encoding.unit if table.encoding.kind == "datetime" else ""
        reach, lead = f"{furthest:.4g}{unit}", f"{cal.max_lead:.4g}{unit}"
        if past and cal.scale is not None:
            lines.append(
                f"latentode predict: note: forecasts reach {reach} ahead, past the calibrated "
                f"lead times ({lead}); the last factor is carried on there untested (refit "
                "with a larger holdout to calibrate further ahead)."
            )
        elif past:
            lines.append(
                f"latentode predict: note: forecasts reach {reach} ahead, past the fit's "
                f"validation forecasts (lead times up to {lead}); how good they and their "
                "bands are there is untested (refit with a larger holdout to validate further "
                "ahead)."
            )
    return "\n".join(lines)


def plot_names(series_ids: list[str]) -> list[str]:
    """The PNG file name of each series' ``--plot``: its id with every run of characters other
    than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``. Ids that come out the same,
    also when case is ignored (as macOS and Windows file systems do), get ``__`` and their
    1-based position in ``series_ids`` appended, so no series' plot replaces another's. A
    stem is cut to its first `PLOT_STEM` characters (file systems take 255 bytes), and cut
    ones sharing their start are numbered the same way."""
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "_", sid)[:PLOT_STEM] for sid in series_ids]
    shared = {k for k, n in Counter(s.casefold() for s in stems).items() if n > 1}
    taken: set[str] = set()
    names = []
    for i, stem in enumerate(stems):
        name = f"{stem}__{i + 1}" if stem.casefold() in shared else stem
        while name.casefold() in taken:  # an id that already reads like a renamed one
            name += "_"
        taken.add(name.casefold())
        names.append(f"{name}.png")
    return names


def _plot_files(args: argparse.Namespace, series_ids: list[str]) -> list[Path]:
    """The ``--plot`` PNG of each series, checked before anything is computed or written.

    Raises:
        DataError: ``--plot`` names a file, or some of the PNGs exist and ``--overwrite`` is
            not given.
    """
    folder = check_output_dir(args.plot, "--plot")
    files = [folder / name for name in plot_names(series_ids)]
    there = [p.name for p in files if p.exists()]
    if there and not args.overwrite:
        raise DataError(
            f"--plot {folder}: {len(there)} of the {len(files)} PNGs exist already "
            f"({_listed(there)}); "
            "pass --overwrite to replace them, or name another directory (nothing was written)."
        )
    return files


def _unobserved(history: list[Segment], table: SeriesTable) -> str:
    """A note on the series whose conditioned history never observes some channel (empty when
    none does): their forecasts of it come from the other channels and what the model
    learned in training, not from the series."""
    blind = [
        (table.series_ids[g.series], c)
        for g in history
        for c, seen in zip(table.channels, (~np.isnan(g.values)).any(0), strict=True)
        if not seen
    ]
    if not blind:
        return ""
    shown = _listed([f"{sid!r} ({c})" for sid, c in blind])
    return (
        f"{len(blind)} forecast(s) of a channel the series' history never observes: {shown}. "
        "They come from the series' other channels and the fitted model, not from the "
        "series' own values of that channel; trust their bands less."
    )


def _few_paths(n_samples: int, levels: tuple[float, ...] = ()) -> str:
    """A note when ``--n_samples`` is too few for the widest band: fewer paths than one per
    tail beyond its ends (20 for the 5-95% band, 40 for 2.5-97.5%) sample the posterior's
    spread there poorly. The quantiles are those of these paths' mixture, exactly."""
    low = quantile_probs(levels)[0]
    need = math.ceil(1 / low - 1e-9)
    if n_samples >= need:
        return ""
    lo, hi = percent(low), percent(1 - low)
    return (
        f"--n_samples {n_samples}: the {lo}% and {hi}% quantiles of fewer than {need} paths "
        "rest on the few most extreme of them (with one path the band is its observation "
        f"noise alone), so the bands are rough; use {max(100, 5 * need)} or more for bands to "
        "rely on."
    )


def _outside_training(history: list[Segment], table: SeriesTable, state: dict) -> str:
    """A note on the histories holding values far outside the training data's (beyond its
    range, per channel, by more than the range's width; empty when none do, or for a
    checkpoint that does not keep the range): the model never saw such values, so their
    forecasts and bands are extrapolations. A file in other units is the usual cause. A
    transformed channel (log or logit) is compared on its scale, as the model sees it: a
    history in kilograms for a fit in grams (0.05-0.2 against 50-200) is far outside on the
    log scale, while in grams no positive value lies a range's width below 50."""
    if not state.get("value_range"):
        return ""
    kinds, rng = kinds_of(state.get("normalisation"), len(table.channels)), state["value_range"]
    lo, hi = (forward(np.asarray(rng[k], dtype=np.float64), kinds) for k in ("min", "max"))
    width = hi - lo
    far = []
    for g in history:
        z = forward(g.values, kinds)  # (n, D) as the model sees them, before normalising
        for d, c in enumerate(table.channels):
            ok = ~np.isnan(z[:, d])
            v, zd = g.values[ok, d], z[ok, d]
            if len(v) and (zd.min() < lo[d] - width[d] or zd.max() > hi[d] + width[d]):
                far.append(
                    f"{table.series_ids[g.series]!r} ({c}: {v.min():.4g} to {v.max():.4g}; "
                    f"training {rng['min'][d]:.4g} to {rng['max'][d]:.4g})"
                )
    if not far:
        return ""
    return (
        f"{len(far)} history channel(s) hold values far outside the training data's: "
        f"{_listed(far)}. The model never saw such values, so these forecasts and their bands "
        "are extrapolations; check the file's units, or refit with such series."
    )


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


def _load_system(ckpt_path: str):
    """The latent ODE system of a CSV checkpoint and its data description."""
    from .systems.latent_ode import LatentODESystem

    ckpt = Path(ckpt_path)
    check_ckpt_path(ckpt_path)
    try:
        system = LatentODESystem.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign or damaged file: say so instead of a traceback
        raise DataError(f"{ckpt}: not a latentode latent ODE checkpoint ({e}).") from e
    state = system.hparams.get("data_state")
    if not state:
        raise DataError(
            f"{ckpt} was not trained on a CSV file (no data description stored); "
            "fit it with a CSVDataModule config such as configs/csv.yaml."
        )
    return system, state


def _pooled(model: Ensemble, n_samples: int) -> str:
    return (
        f"the forecasts of {len(model)} checkpoints pooled with equal weights "
        f"({n_samples} paths from each)"
    )


def _load_forecaster(ckpt_paths: list[str], data_path: str, duplicates: str | None = None):
    """``(model, data_state, table)``: one checkpoint's latent ODE, or several pooled into an
    `Ensemble` (they must share their data settings, `latentode.ensemble.shared_state`), and
    the file read as they read theirs (`latentode.forecast.read_history`)."""
    if len(set(ckpt_paths)) != len(ckpt_paths):
        raise DataError(f"--ckpt_path names a checkpoint twice: {ckpt_paths}.")
    loaded = [_load_system(c) for c in ckpt_paths]
    if len(loaded) == 1:
        model, state = loaded[0][0].model, loaded[0][1]
    else:
        model = Ensemble([s.model for s, _ in loaded], [st for _, st in loaded], ckpt_paths)
        state = model.state
    return model, state, read_history(data_path, state, duplicates)


def test_main(argv: list[str]) -> int:
    """``latentode test --ckpt_path CKPT --data.path FILE.csv``: model vs naive baselines."""
    from .evaluate import evaluate

    p = argparse.ArgumentParser(
        prog="latentode test",
        description="Held-out interpolation and extrapolation errors of a CSV checkpoint, "
        "beside naive baselines, in the file's units. (Lightning's test of a config, in "
        "normalised units: latentode test --config FILE ...)",
    )
    p.add_argument("--ckpt_path", required=True, nargs="+", help=CKPT_HELP)
    p.add_argument("--data.path", dest="data_path", required=True)
    p.add_argument("--data.duplicates", dest="duplicates", **DUPLICATES_ARG)
    p.add_argument(
        "--n_samples", type=int, default=200, help="posterior paths per series (as predict)"
    )
    p.add_argument("--importance", action="store_true", help=IMPORTANCE_HELP)
    p.add_argument("--refine", type=int, default=0, metavar="STEPS", help=REFINE_HELP)
    p.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score the forecast with the bands `latentode predict` would write (scaled "
        "on the validation series, scored on the test series)",
    )
    p.add_argument(
        "--calibrate_by_lead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=BY_LEAD_HELP,
    )
    p.add_argument(
        "--calibrate_tails",
        action=argparse.BooleanOptionalAction,
        default=False,
        help=TAILS_HELP,
    )
    p.add_argument(
        "--levels",
        nargs="+",
        default=None,
        metavar="PERCENT",
        help="bands to score besides the 90%% one, coverages in percent: --levels 80 95 adds "
        "the columns coverage80, width80, coverage95, width95",
    )
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("--call_memory", type=float, default=None, metavar="GB", help=CALL_HELP)
    p.add_argument("--output", default=None, help="also write the table as CSV")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = p.parse_args(argv)
    try:
        if args.output == STDOUT:
            raise DataError(
                "--output -: the table is printed on standard output already; name a CSV "
                "file for --output."
            )
        if args.output:
            check_output_file(args.output, args.overwrite, example="scores.csv")
        model, state, table = _load_forecaster(args.ckpt_path, args.data_path, args.duplicates)
        with call_memory(args.call_memory):
            cal = _calibration(args, model, state, table) if args.calibrate else None
            # scored where calibrated: the calibrated row would be judged on its own series
            overlap = cal is not None and cal.scale is not None and _overlap(table, state)
            calibration = None if overlap else cal
            frame = evaluate(
                model,
                table,
                state,
                calibration=calibration,
                levels=_levels(args.levels),
                **_draws(args),
            )
    except USER_ERRORS as e:
        print(f"latentode test: error: {e}", file=sys.stderr)
        return 2
    more = "; coverage and width likewise for the other --levels" if args.levels else ""
    print(
        f"Held-out errors on {table.source} (user units; wis: weighted interval score of the "
        "median and bands, lower is better, a baseline's its absolute error; coverage90: "
        "share of held-out values inside the model's 5-95% band, width90: its mean width, "
        "below90 / above90: the shares under q05 and over q95, 0.05 each for honest "
        f"quantiles{more}):"
    )
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    note = scored_note(table, state)
    if note:
        print(f"Scored: {note}")
    for task, why in (
        ("interpolation", "no held-out part holds three observations"),
        ("history gaps", "no history holds three observations"),
    ):
        if task not in set(frame.task):
            print(f"Not scored: {task} ({why}; one is hidden between two).")
    if isinstance(model, Ensemble):
        print(f"The latent ODE rows: {_pooled(model, args.n_samples)}.")
    if cal is not None:
        for line in cal.describe(table.channels).splitlines():
            print(f"Calibration: {line}.")
        if overlap:
            print(
                "Calibrated bands not scored: the file's scored series include the validation "
                "series (they were calibrated there)."
            )
    if args.output:
        try:
            write_whole(Path(args.output), lambda tmp: frame.to_csv(tmp, index=False))
        except DataError as e:
            print(f"latentode test: error: {e}", file=sys.stderr)
            return 2
    return 0


def _signed_spans(argv: list[str], options: tuple[str, ...] = ("--horizon", "--step")) -> list[str]:
    """``argv`` with ``--horizon -5D`` joined into ``--horizon=-5D``, so that a negative span
    reaches `parse_horizon` and is refused as not positive; argparse would take ``-5D`` for an
    option and say only that ``--horizon`` expected an argument."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in options and arg.startswith("-") and not arg.startswith("--"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def predict_main(argv: list[str]) -> int:
    """``latentode predict``: returns the exit status (2 for user errors)."""
    args = _predict_parser().parse_args(_signed_spans(argv))
    try:
        with call_memory(args.call_memory):
            line = run_predict(args)
        if line:  # beside a forecast written to standard output, on standard error
            print(line, file=sys.stderr if args.output == STDOUT else sys.stdout)
    except USER_ERRORS as e:
        if _first_process():  # every process of a multi-process predict stops with it
            print(f"latentode predict: error: {e}", file=sys.stderr)
        return 2
    return 0


def _first_process() -> bool:
    """Whether this is the process that reports (the only one, or rank 0 of several). The
    errors of a multi-process predict reach every process (`gather_shards`, or the same
    input read by each), so the first one says it once."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() > 0)


def _show_own_warnings() -> None:
    """Print the warnings latentode itself raises about the user's input (a dropped series,
    ...) as ``latentode: warning: <message>``, without Python's source line; other warnings
    are shown as before."""
    default = warnings.showwarning
    if getattr(default, "latentode", False):  # installed already (main called again)
        return
    package = Path(__file__).resolve().parent

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, UserWarning) and Path(filename).resolve().is_relative_to(package):
            print(f"latentode: warning: {message}", file=sys.stderr if file is None else file)
        else:
            default(message, category, filename, lineno, file, line)

    show.latentode = True  # type: ignore[attr-defined]
    warnings.showwarning = show


class _NoTips(logging.Filter):
    """Drops Lightning's advertising tips (a cloud logger on every fit) from its log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def _int_before_float(cls: type = pl.Trainer) -> None:
    """Let ``--trainer.limit_val_batches 1`` mean one batch again, not 100% of them.

    ``typing`` caches unions by equality, which ignores order: lightning_fabric builds
    ``Union[float, int]`` first, so the Trainer's ``Union[int, float]`` options come out
    float-first and jsonargparse reads ``1`` as ``1.0`` (Lightning issue 21259; a limit of
    1.0 is every batch, ``val_check_interval 100`` a fraction). The options of ``cls`` whose
    annotation puts float before int are given the same union with int first (``int |
    float``, which ``typing`` does not cache), once, before the parser reads them.
    """
    annotations = cls.__init__.__annotations__
    for name, hint in list(annotations.items()):
        args = typing.get_args(hint)
        if typing.get_origin(hint) is not typing.Union or int not in args or float not in args:
            continue
        if args.index(float) < args.index(int):
            union: Any = int | float
            for other in args:
                if other not in (int, float):
                    union = union | other
            annotations[name] = union


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``latentode`` console script."""
    argv = sys.argv[1:] if args is None else list(args)
    _int_before_float()
    _show_own_warnings()
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NoTips())
    # Lightning's own use of a torch API that torch 2.13 deprecates: nothing a user can act on
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    if argv and argv[0] == "predict":
        sys.exit(predict_main(argv[1:]))
    # ours: a CSV file to score, or help without a config (Lightning's needs --config)
    own_test = not ({"-c", "--config"} & set(argv)) and any(
        a.startswith("--data.path") or a in ("-h", "--help") for a in argv
    )
    if argv and argv[0] == "test" and own_test:
        sys.exit(test_main(argv[1:]))
    try:
        LatentODECLI(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=None if args is None else argv,  # None: Lightning reads sys.argv itself
            auto_configure_optimizers=False,
            parser_class=ConciseParser,
        )
    except USER_ERRORS as e:
        if not (getattr(e, SAME_ON_EVERY_PROCESS, False) and rank_zero_only.rank > 0):
            print(f"latentode: error: {e}", file=sys.stderr)
        if isinstance(e, TrainingStoppedError) and leave_process_group():  # all stop here
            end_process(2)
        sys.exit(2)
    except SIGTERMException as e:  # a SystemExit without a status: it would exit 0
        if rank_zero_only.rank == 0:
            note = getattr(e, STOP_NOTE, "SIGTERM stopped the run.")
            print(f"latentode: {note}", file=sys.stderr)
        if leave_process_group():  # every process stops at the same step (`SafeSignals`)
            end_process(SIGTERM_STATUS)
        sys.exit(SIGTERM_STATUS)
    if leave_process_group():  # a multi-process run: every process ends here
        end_process(0)


if __name__ == "__main__":  # pragma: no cover
    main()
