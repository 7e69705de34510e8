"""What the ``latentode`` command treats as the user's errors (a message and exit status 2,
no traceback), the marks it sets on them, which process of several prints one, and how a
message lists names."""

from __future__ import annotations

import signal

from pytorch_lightning.utilities import rank_zero_only

from ..data.errors import SAME_ON_EVERY_PROCESS, DataError
from ..nn.base import ModelInputError
from ..solver import SolverError, SolverInputError
from ..systems.guard import TrainingStoppedError

__all__ = [
    "SAME_ON_EVERY_PROCESS",
    "SIGTERM_STATUS",
    "STOP_NOTE",
    "USER_ERRORS",
    "ForecastStoppedError",
    "printed_here",
]

_SHOW = 5  # series named in a note


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
STOP_NOTE = "latentode_stop_note"  # what a fit stopped by SIGTERM saved, set by `LastCheckpoint`
SIGTERM_STATUS = 128 + signal.SIGTERM  # the shell's status for a process ended by SIGTERM


def printed_here(error: BaseException) -> bool:
    """Whether this process prints ``error`` (one of `USER_ERRORS`): a multi-process run says
    each failure once. Not an error marked `SAME_ON_EVERY_PROCESS` beyond the first process,
    nor a `TrainingStoppedError` that only repeats another process's failure (its ``echo``:
    the failing process prints its own)."""
    if getattr(error, SAME_ON_EVERY_PROCESS, False) and rank_zero_only.rank > 0:
        return False
    return not (isinstance(error, TrainingStoppedError) and error.echo)
