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

The command is split by subcommand: `lightning` (fit / validate / test of a config, with the
callbacks and checks of `checkpoints`), `predict` (with `predict_output`), `evaluate_cmd`
(``latentode test`` of a CSV checkpoint), sharing `options`, `forecaster`, `launch` (the
processes of a multi-process predict) and `errors`.
"""

from __future__ import annotations

import logging
import sys
import typing
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from ..parse_errors import ConciseParser
from ..systems.guard import TrainingStoppedError, end_process, leave_process_group
from .checkpoints import LastCheckpoint, RunSummary, check_ckpt_path, resolve_last
from .config_save import SaveRunConfig
from .errors import (
    SIGTERM_STATUS,
    STOP_NOTE,
    USER_ERRORS,
    ForecastStoppedError,
    printed_here,
)
from .evaluate_cmd import test_main
from .launch import gather_shards
from .lightning import LatentODECLI
from .predict import predict_main, run_predict
from .predict_output import PLOT_STEM, plot_names

__all__ = [
    "PLOT_STEM",
    "STOP_NOTE",
    "USER_ERRORS",
    "ForecastStoppedError",
    "LastCheckpoint",
    "LatentODECLI",
    "RunSummary",
    "check_ckpt_path",
    "gather_shards",
    "main",
    "plot_names",
    "predict_main",
    "resolve_last",
    "run_predict",
    "test_main",
]


def _show_own_warnings() -> None:
    """Print the warnings latentode itself raises about the user's input (a dropped series,
    ...) as ``latentode: warning: <message>``, without Python's source line; other warnings
    are shown as before."""
    default = warnings.showwarning
    if getattr(default, "latentode", False):  # installed already (main called again)
        return
    package = Path(__file__).resolve().parents[1]  # latentode/, not latentode/cli/

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
            # config.yaml replaces only one a latentode run saved (`SaveRunConfig`)
            save_config_callback=SaveRunConfig,
            save_config_kwargs={"overwrite": True},
            args=None if args is None else argv,  # None: Lightning reads sys.argv itself
            auto_configure_optimizers=False,
            parser_class=ConciseParser,
        )
    except USER_ERRORS as e:
        if printed_here(e):
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
