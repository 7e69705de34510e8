"""The exception raised for invalid data: shapes, times, masks, split arguments.

Messages name the series (by index), the time or the argument at fault, and what to change.
"""

from __future__ import annotations

__all__ = ["SAME_ON_EVERY_PROCESS", "DataError", "check_counts", "same_on_every_process"]

# Set on a user error that every process of a multi-process run raises alike (reading the
# same file, the same settings): the ``latentode`` command prints it from the first only.
SAME_ON_EVERY_PROCESS = "latentode_same_on_every_process"


class DataError(ValueError):
    """Data or a data argument is invalid; the message says where and what to change."""


def check_counts(error: type[DataError], minimum: int, **counts: object) -> None:
    """Refuse a count setting (a size, a batch size, a number of workers) that is not an
    integer ``>= minimum``, naming the setting.

    Raises:
        error: the first such setting.
    """
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise error(f"{name} must be an integer >= {minimum}, got {value!r}.")


def same_on_every_process(error: BaseException) -> BaseException:
    """``error``, marked `SAME_ON_EVERY_PROCESS` (every process raises it alike); returned."""
    setattr(error, SAME_ON_EVERY_PROCESS, True)
    return error
