"""The exception raised for invalid data: shapes, times, masks, split arguments.

Messages name the series (by index), the time or the argument at fault, and what to change.
"""

from __future__ import annotations

__all__ = ["DataError", "check_counts"]


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
