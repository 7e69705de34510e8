"""The exception raised for invalid data: shapes, times, masks, split arguments.

Messages name the series (by index), the time or the argument at fault, and what to change.
"""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Data or a data argument is invalid; the message says where and what to change."""
