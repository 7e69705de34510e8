"""The histories a forecast conditions on, read and checked as the fit read its training file.

`read_history` reads a history file with the checkpoint's columns, time unit, handling of
repeated rows and channel transforms; `check_table` refuses a table the checkpoint cannot read
so (other channels, times of another kind or unit, a value outside a transformed channel's
domain). Used by `latentode.forecast`, `latentode.evaluate` and `latentode.calibration`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.csv import csv_columns, read_series_csv
from .data.errors import DataError
from .data.prep import normalise
from .data.table import SeriesTable
from .data.transforms import domain_of, kinds_of, outside_domain, transform_of

__all__ = ["check_channels", "check_table", "read_history"]


def check_channels(table: SeriesTable, expected: Sequence[str]) -> None:
    """Refuse a file whose channels differ from the model's.

    Raises:
        DataError: listing both sets of channels.
    """
    if list(table.channels) != list(expected):
        raise DataError(
            f"{table.source}: the file's channels {list(table.channels)} differ from the "
            f"checkpoint's {list(expected)}. Give a file with exactly the model's channel "
            "columns (drop or rename the others)."
        )


def read_history(
    data_path: str | Path, state: dict[str, Any], duplicates: str | None = None
) -> SeriesTable:
    """A history file read as the fit read its training file (``state``: the checkpoint's
    ``data_state``, ``system.hparams["data_state"]``): its columns, time unit,
    handling of repeated rows (``duplicates`` overrides that) and channel transforms, and the
    model's channels by name (other value columns are ignored).

    Raises:
        DataError: the file lacks one of the model's channels, has times of another kind
            (numbers, date-times) than the training file, or breaks a rule of
            `read_series_csv`.
    """
    channels = list(state["channels"])
    time_column = state.get("time_column", "time")
    header = csv_columns(data_path)
    missing = [c for c in channels if c not in header]
    if missing:
        raise DataError(
            f"{data_path}: no column {', '.join(map(repr, missing))}: the checkpoint was fitted "
            f"on the channels {channels}. Give a file with these columns (others are ignored)."
        )
    if time_column not in header:
        raise DataError(
            f"{data_path}: no column {time_column!r}: the checkpoint was fitted with its times "
            f"in {time_column!r}. Give a file whose times are in that column."
        )
    table = read_series_csv(
        data_path,
        time_column=time_column,
        series_column=state.get("series_column", "series_id"),
        channels=channels,
        time_unit=state["time_encoding"].get("unit") or "D",
        duplicates=duplicates or state.get("duplicates", "error"),
        allow_unobserved=True,  # the model forecasts a channel from the others
        transform=transform_of(state),  # a transformed channel's values must be in its domain
    )
    fitted = state["time_encoding"].get("kind", "numeric")
    if table.encoding.kind != fitted:  # the model's time axis would be read in another unit
        kinds = {"numeric": "numbers", "datetime": "date-times"}
        raise DataError(
            f"{data_path}: its times are {kinds[table.encoding.kind]}, but the checkpoint was "
            f"fitted on {kinds[fitted]}; give times of the kind the training file had."
        )
    return table


def check_table(table: SeriesTable, data_state: dict[str, Any]) -> None:
    """Refuse a history table the checkpoint cannot read as its training data was read:
    not a `SeriesTable`, other channels (`check_channels`), times of another kind or unit
    (hours read as days would compress the model's time axis 24x, without a word), a
    value outside a transformed channel's domain (it would turn into a missing value), or a
    value too large for the model's numbers once normalised (`_check_magnitude`).

    Raises:
        DataError: naming what differs and how to read the file as the fit did.
    """
    if not isinstance(table, SeriesTable):
        raise DataError(
            f"the histories must be a SeriesTable (read_series_csv(path, ...) reads one), got "
            f"{type(table).__name__}."
        )
    check_channels(table, data_state["channels"])
    fitted = data_state.get("time_encoding") or {}  # a state built by hand may lack it
    kind, unit = fitted.get("kind", "numeric"), fitted.get("unit") or ""
    if fitted and (table.encoding.kind, table.encoding.unit or "") != (kind, unit):
        mine = f"{table.encoding.kind} times, unit {table.encoding.unit or 'none'!r}"
        raise DataError(
            f"{table.source}: {mine}, but the checkpoint was fitted on {kind} times, unit "
            f"{unit or 'none'!r}; read the file as the fit did (read_series_csv(path, "
            f"time_unit={unit or 'D'!r}, ...), or `latentode predict`, which does)."
        )
    kinds = kinds_of(data_state.get("normalisation"), table.n_channels)
    bad = outside_domain(table.values, kinds)  # (N, D)
    if bad.any():
        sid, d, row, at = _first(table, bad)
        raise DataError(
            f"{table.source}: series {sid!r}: channel {table.channels[d]!r} is modelled on a "
            f"{kinds[d]} scale, which takes values {domain_of(kinds[d])}, but it has "
            f"{table.values[row, d]:g} at time {at} "
            f"({int(bad[:, d].sum())} such value(s)); correct them or leave them empty."
        )
    _check_magnitude(table, data_state.get("normalisation"))


FLOAT32_MAX = float(np.finfo(np.float32).max)  # the model's numbers (float32 by default)


def _first(table: SeriesTable, bad: np.ndarray) -> tuple[str, int, int, str]:
    """The first flagged value of ``bad`` (N, D): its series id, channel, row and time."""
    row, d = (int(v[0]) for v in np.nonzero(bad))
    sid = table.series_ids[int(np.searchsorted(table.offsets, row, side="right")) - 1]
    return sid, d, row, table.encoding.format(table.times[[row]])[0]


def _check_magnitude(table: SeriesTable, norm: dict[str, Any] | None) -> None:
    """Refuse a value whose normalised value the model's 32-bit numbers cannot hold (beyond
    about 3.4e38 times the channel's training spread): it became infinite in the model, which
    refused it naming a batch row and a shifted time instead of the file's series and time.

    Raises:
        DataError: naming the series, channel, value and time.
    """
    if not norm:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        z = normalise(table.values, norm)
    bad = np.abs(z) > FLOAT32_MAX  # NaN (missing) is not flagged
    if bad.any():
        sid, d, row, at = _first(table, bad)
        raise DataError(
            f"{table.source}: series {sid!r}: channel {table.channels[d]!r} has "
            f"{table.values[row, d]:g} at time {at}, too large for the model (scaled by the "
            f"fit's normalisation it is past the {FLOAT32_MAX:.3g} its numbers hold; "
            f"{int(bad[:, d].sum())} such value(s)); correct it (the file's units?) or leave "
            "it empty."
        )
