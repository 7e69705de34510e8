"""Read a long-format CSV of irregular series into a validated `SeriesTable`.

The file has one row per (series, time): ``series_id, time, <channel columns...>``. Without a
series column the whole file is one series. Missing values are empty cells or NaN. Times are
numbers (any unit) or ISO date-times; date-times become a float axis (``unit`` after ``origin``,
kept in the table's `TimeEncoding`). Rows are sorted by time within each series.

Every rule is checked by `read_series_csv` (the file and its header in `csv_header`, the
times in `csv_times`, likely series ids in `csv_ids`, the values here), and every violation
raises `CSVDataError` naming the file, the line numbers (the header is line 1, or line 2 under
a spreadsheet's ``sep=;`` line), the column or the series, and what to change. Series with
fewer than two observed times are dropped with a warning.

Usage::

    table = read_series_csv("data/fertility_worldbank.csv")
    table = read_series_csv("co2.csv", series_column=None, time_unit="Y")
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from .csv_header import (
    CSVDataError,
    _check_channel_names,
    _columns,
    _fail,
    _names,
    _read_frame,
    _separator,
    csv_columns,
)
from .csv_ids import _check_unnamed_series, _refuse_stacked_ids, _warn_text_ids
from .csv_times import _parse_times
from .errors import DataError
from .table import SeriesTable
from .transforms import base_of, domain_of, outside_domain, transform_kinds

__all__ = ["CSVDataError", "csv_columns", "read_series_csv"]


def _to_number(path: Path, frame: pd.DataFrame, column: str, lines: np.ndarray) -> np.ndarray:
    raw = frame[column]
    if pd.api.types.is_bool_dtype(raw):
        raise _fail(path, f"column {column!r} holds true/false, not numbers", "Use 0/1.")
    x = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(x) & raw.notna().to_numpy()
    if bad.any():
        sample = raw[bad].iloc[0]
        raise _fail(
            path,
            f"non-numeric values in column {column!r}, e.g. {sample!r}",
            "Leave missing values empty (or NaN) and write plain numbers: '.' as the decimal "
            "point, no thousands separators.",
            lines[bad],
        )
    if np.isinf(x).any():
        raise _fail(
            path, f"infinite values in column {column!r}", "Replace them.", lines[np.isinf(x)]
        )
    return x


def _default_channels(frame: pd.DataFrame, exclude: set[str]) -> list[str]:
    """Every other column holding numbers (or nothing); all-text columns are ignored, and so
    is an empty column without a name (a trailing delimiter on the header line)."""
    out = []
    for c in frame.columns:
        if c in exclude:
            continue
        col = frame[c]
        if str(c).startswith("Unnamed: ") and col.isna().all():
            continue
        if pd.api.types.is_numeric_dtype(col) or col.isna().all():
            out.append(c)
        elif pd.to_numeric(col, errors="coerce").notna().any():
            out.append(c)  # numbers with typos: let _to_number report the bad cells
    return out


def _text_columns(frame: pd.DataFrame, exclude: set[str | None]) -> list[str]:
    """The columns `_default_channels` leaves out for holding text (not an empty column
    without a name)."""
    return [
        c
        for c in frame.columns
        if c not in exclude and not (str(c).startswith("Unnamed: ") and frame[c].isna().all())
    ]


_COMMA_NUMBER = r"^\s*[-+]?\d+(?:,\d+)+\s*$"  # 0,0094 or 1,234,567


def _refuse_comma_numbers(
    path: Path, frame: pd.DataFrame, columns: list[str], lines: np.ndarray
) -> None:
    """Refuse a text column whose values are mostly numbers written with a comma (a decimal
    comma, or thousands separators): left out as text, the channel would be lost silently."""
    for c in columns:
        present = frame[c].notna().to_numpy()  # (N,)
        comma = frame[c].astype(str).str.match(_COMMA_NUMBER).to_numpy() & present  # (N,)
        if present.any() and comma.sum() >= 0.5 * present.sum():
            raise _fail(
                path,
                f"column {c!r} holds numbers written with a comma, e.g. "
                f"{frame[c][comma].iloc[0]!r} (a decimal comma, or a thousands separator)",
                "Write them as plain numbers with '.' as the decimal point (0.5, 1234).",
                lines[comma],
            )


_DOMAIN_HINT = {
    "log": "; for counts that can be zero use log1p",
    "logit": "; for data that reach a bound (a share of exactly 0 or 100%), give bounds a "
    "little outside the values' range, such as 'logit(-0.5, 100.5)' for whole percentages",
}


def _check_domain(
    path: Path,
    x: np.ndarray,
    names: list[str],
    lines: np.ndarray,
    transform: Mapping[str, str | None] | None,
) -> None:
    """Refuse values a channel's transform cannot take (``log`` of 0, say), by line."""
    try:
        kinds = transform_kinds(names, transform)
    except DataError as err:
        raise CSVDataError(f"{path}: {err}") from None
    bad = outside_domain(x, kinds)  # (N, D)
    if bad.any():
        d = int(np.flatnonzero(bad.any(axis=0))[0])  # the first such channel
        kind, col = kinds[d], x[:, d]
        hint = _DOMAIN_HINT.get(base_of(kind), "")
        if kind == "logit" and np.nanmax(col) > 1 and np.nanmin(col) >= 0:  # percentages?
            hint = (
                f"; the values reach {np.nanmax(col):.4g}: if they are percentages, use "
                "'logit(0, 100)'" + hint
            )
        raise _fail(
            path,
            f"column {names[d]!r} is modelled on a {kind} scale, which takes values "
            f"{domain_of(kind)}, but {int(bad[:, d].sum())} value(s) are not",
            "Correct those rows or leave the value empty where it is missing"
            + hint
            + ", or fit without this transform.",
            lines[bad[:, d]],
        )


def read_series_csv(
    path: str | Path,
    *,
    time_column: str = "time",
    series_column: str | None = "series_id",
    channels: Sequence[str] | None = None,
    time_unit: str = "D",
    duplicates: Literal["error", "mean"] = "error",
    allow_unobserved: bool = False,
    transform: Mapping[str, str | None] | None = None,
) -> SeriesTable:
    """Read and validate a long-format CSV of irregular series.

    Args:
        path: the CSV file.
        time_column: the time column (numbers or ISO date-times).
        series_column: the series id column; None, or a name absent from the file when left at
            the default, reads the file as one series (named after the file).
        channels: the value columns (default: every other column holding numbers).
        time_unit: for date-times, the unit of the float axis (a key of `TIME_UNITS`); for
            numbers, a label kept in the encoding.
        duplicates: ``"error"`` on repeated (series, time) rows, or ``"mean"`` to average them
            (per channel, over the observed values).
        allow_unobserved: keep a channel with no observed value (a history file read for a
            fitted model, whose channels are given) instead of refusing it.
        transform: channels modelled on a log or logit scale (`latentode.data.transforms`): their
            values must lie in the transform's domain.

    Returns:
        The `SeriesTable`, sorted by time within each series, series in order of appearance.

    Raises:
        CSVDataError: a missing or empty file, a ``sep=`` first line naming no single
            delimiter, missing columns, a header that names a column twice, non-numeric or
            infinite values, numbers written with a comma, unreadable or mixed times,
            whole-number times that read as dates (20231202) or that differ only beyond
            float64's digits (epoch nanoseconds), date-times outside 1677-2262,
            an empty (or blank) time or series id, a time column that is also the series
            column, a channel list that is empty or names a column twice, duplicate rows,
            a channel with no observation (unless allowed), a value a channel's transform
            cannot take, an unknown transform or channel in ``transform``, no series with two
            observed times, or, in a file read as one series with the channels left to the
            reader, a column of whole numbers that reads like the ids of series written one after
            another (`_stacked_ids`). Dropped short series only warn, and so does a text
            column that looks like series ids in a file read as one series (or, averaged
            with ``duplicates="mean"``, one that differs between rows at one time).
    """
    path, channels = _check_arguments(path, channels, time_column, series_column, duplicates)
    header = csv_columns(path)
    unnamed = series_column == "series_id" and "series_id" not in {h.strip() for h in header}
    if unnamed:
        series_column = None  # the default name is optional: one series
    frame, lines, names, unread = _read_rows(path, header, time_column, series_column, channels)

    t, encoding = _parse_times(path, frame[time_column], time_column, lines, time_unit)
    x = np.stack([_to_number(path, frame, c, lines) for c in names], axis=1)  # (N, D)
    _check_domain(path, x, names, lines, transform)
    ids, codes = _series_codes(path, frame, series_column, lines)

    # The checks that warn stay here: their `stacklevel` points at our caller.
    file_order = (t, x, lines)  # for `_refuse_stacked_ids`
    order = np.lexsort((t, codes))  # stable: (series, time), file order among equals
    t, x, codes, lines = t[order], x[order], codes[order], lines[order]
    same = (np.diff(codes) == 0) & (np.diff(t) == 0)  # (N - 1,) row equals the previous one
    if unnamed and not same.any():  # rows at one time would show the ids: see below
        _warn_text_ids(path, frame, unread)
    named = False  # a column named as the likely series ids by `_check_unnamed_series`
    if same.any() and (unnamed or (series_column is None and duplicates == "mean")):
        # one series (by default, or averaged as asked): are the rows at one time several?
        named = _check_unnamed_series(
            path, frame, names, time_column, order, same, lines, duplicates, x, unnamed
        )
    if series_column is None and not channels and not named:
        _refuse_stacked_ids(path, names, *file_order, unnamed)
    if same.any():
        if duplicates == "error":
            raise _duplicates_error(
                path, frame[time_column], order, ids, codes, lines, same, unnamed
            )
        group = np.concatenate([[0], np.cumsum(~same)])  # (N,) group index of each row
        mean = pd.DataFrame(x).groupby(group, sort=True).mean().to_numpy()  # NaN-skipping
        keep = np.concatenate([[True], ~same])
        t, x, codes = t[keep], mean, codes[keep]

    _check_observed(path, x, names, allow_unobserved)
    t, x, codes, ids, dropped = _drop_short_series(path, t, x, codes, ids)
    counts = np.bincount(codes, minlength=len(ids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    ids = [str(i) for i in ids]
    return SeriesTable(t, x, offsets, ids, names, encoding, str(path), dropped)


def _check_arguments(
    path: str | Path,
    channels: Sequence[str] | None,
    time_column: str,
    series_column: str | None,
    duplicates: str,
) -> tuple[Path, Sequence[str] | None]:
    """Check the arguments before the file is opened. Returns ``path`` as a `Path` and the
    channels (a single name given as a string made a list)."""
    if not isinstance(path, (str, os.PathLike)):
        raise CSVDataError(
            f"read_series_csv reads a CSV file by its path, got {type(path).__name__}; write a "
            "data frame out first (frame.to_csv(path, index=False))."
        )
    path = Path(path)
    if isinstance(channels, str):  # one channel, not its letters
        channels = [channels]
    if duplicates not in ("error", "mean"):
        raise CSVDataError(f"duplicates must be 'error' or 'mean', got {duplicates!r}.")
    _check_channel_names(path, channels, time_column, series_column)
    return path, channels


def _read_rows(
    path: Path,
    header: list[str],
    time_column: str,
    series_column: str | None,
    channels: Sequence[str] | None,
) -> tuple[pd.DataFrame, np.ndarray, list[str], list[str]]:
    """Read the non-blank rows and pick the value columns (``channels``, else those holding
    numbers). Returns the frame, ``[N]`` each row's file line, the value columns and the
    text columns left out; refuses no rows, numbers with a comma, then no value column."""
    usecols = _columns(path, header, time_column, series_column, channels)
    text = [time_column, *([series_column] if series_column else [])]
    frame = _read_frame(path, usecols if channels else None, text, ids=series_column, header=header)
    above = _separator(path)[1]  # a sep= line above the header
    lines = np.arange(len(frame), dtype=np.int64) + 2 + above  # header = line 1 + above
    blank = frame.isna().all(axis=1).to_numpy()
    frame, lines = frame[~blank].reset_index(drop=True), lines[~blank]
    if len(frame) == 0:
        raise _fail(path, "no data rows under the header", "Add rows.")
    names = list(channels) if channels else _default_channels(frame, {time_column, series_column})
    unread = [] if channels else _text_columns(frame, {time_column, series_column, *names})
    _refuse_comma_numbers(path, frame, unread, lines)
    if not names:
        raise _fail(path, "no numeric value columns", f"The columns are {_names(header)}.")
    return frame, lines, names, unread


def _series_codes(
    path: Path, frame: pd.DataFrame, series_column: str | None, lines: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``[S]`` the series ids in order of appearance (the file's stem for one series) and
    ``[N]`` each row's index into them; refuses a row with an empty id."""
    if series_column is None:
        return np.array([path.stem], dtype=object), np.zeros(len(frame), dtype=np.int64)
    sid = frame[series_column].astype(str).where(frame[series_column].notna()).str.strip()
    empty = (sid.isna() | (sid == "")).to_numpy()  # a cell of spaces is empty too
    if empty.any():
        raise _fail(path, f"empty {series_column!r}", "Every row needs a series id.", lines[empty])
    codes, ids = pd.factorize(sid, sort=False)
    return np.asarray(ids, dtype=object), codes.astype(np.int64)


def _duplicates_error(
    path: Path,
    times: pd.Series,
    order: np.ndarray,
    ids: np.ndarray,
    codes: np.ndarray,
    lines: np.ndarray,
    same: np.ndarray,
    unnamed: bool,
) -> CSVDataError:
    """The error for repeated (series, time) rows (``same``, in sorted ``order``): the first
    pair's series and time as written, every repeated row's line, and the fix."""
    dup = np.unique(np.concatenate([np.flatnonzero(same), np.flatnonzero(same) + 1]))
    return _fail(
        path,
        f"duplicate (series, time) rows, e.g. series {ids[codes[dup[0]]]!r} at time "
        f"{times.iloc[order[dup[0]]]!r}",
        (
            "The file has no 'series_id' column, so it was read as one series: if it "
            "holds several, give their ids in a 'series_id' column. "
            if unnamed
            else ""
        )
        + "Remove them, or average them: --data.init_args.duplicates mean for "
        "`latentode fit`, --data.duplicates mean for predict and test "
        "(duplicates='mean' in the library).",
        np.sort(lines[dup]),
    )


def _check_observed(path: Path, x: np.ndarray, names: list[str], allow_unobserved: bool) -> None:
    """Refuse a channel with no observed value in the file, unless ``allow_unobserved``."""
    empty = np.isnan(x).all(axis=0)  # (D,) no observed value
    if empty.any() and not allow_unobserved:
        raise _fail(
            path,
            f"channel {_names([names[d] for d in np.flatnonzero(empty)])} has no observed value",
            "Fill it, or leave it out of channels.",
        )


def _drop_short_series(
    path: Path, t: np.ndarray, x: np.ndarray, codes: np.ndarray, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Drop with a warning the series with fewer than two observed times (the ``stacklevel``
    is `read_series_csv`'s caller); refuse a file where none has two. Returns the kept rows'
    ``t``, ``x`` and renumbered ``codes``, the kept ``ids``, and the dropped ones."""
    observed = ~np.isnan(x)  # (N, D)
    n_obs = np.bincount(codes[observed.any(axis=1)], minlength=len(ids))  # (S,)
    short = np.flatnonzero(n_obs < 2)
    if len(short) == len(ids):
        raise _fail(
            path,
            "no series has two observed times",
            "A series needs at least two rows with a value to be fitted.",
        )
    dropped = tuple(str(ids[s]) for s in short)
    if dropped:
        warnings.warn(
            f"{path}: dropped {len(short)} series with fewer than two observed times: "
            f"{_names(list(dropped))}.",
            UserWarning,
            stacklevel=3,
        )
        keep = np.isin(codes, short, invert=True)
        remap = np.cumsum(n_obs >= 2) - 1  # old code -> new code
        t, x, codes, ids = t[keep], x[keep], remap[codes[keep]], ids[n_obs >= 2]
    return t, x, codes, ids, dropped
