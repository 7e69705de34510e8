"""The time column, for the CSV reader (`latentode.data.csv`).

Times are numbers (any unit; whole numbers that read as dates, 20231202, are refused) or ISO
date-times, which become a float axis of ``time_unit`` after the earliest time, kept in a
`TimeEncoding`: naive, or UTC when the strings carry offsets, within 1677-2262 and 292 years.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd

from .csv_header import CSVDataError, _fail
from .table import (
    _RESOLUTIONS,
    MAX_OFFSET_NS,
    NS_RANGE_FIX,
    TIME_UNITS,
    TimeEncoding,
    has_offset,
    in_ns_range,
)

__all__: list[str] = []  # helpers of `read_series_csv`


def _parse_times(
    path: Path, raw: pd.Series, column: str, lines: np.ndarray, time_unit: str
) -> tuple[np.ndarray, TimeEncoding]:
    missing = (raw.isna() | (raw.astype(str).str.strip() == "")).to_numpy()  # or spaces
    if missing.any():
        raise _fail(path, f"empty time in {column!r}", "Every row needs a time.", lines[missing])
    text = raw.astype(str).str.strip().reset_index(drop=True)
    num = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    is_num = ~np.isnan(num)
    if is_num.all():
        if np.isinf(num).any():
            raise _fail(path, f"infinite time in {column!r}", "Fix it.", lines[np.isinf(num)])
        _refuse_dates_as_numbers(path, num, column)
        _refuse_lost_digits(path, text, num, column, lines)
        return num, TimeEncoding("numeric", unit=time_unit if time_unit not in TIME_UNITS else "")
    if time_unit not in TIME_UNITS:
        raise CSVDataError(f"{path}: time_unit must be one of {sorted(TIME_UNITS)} for date-times.")
    dt, tz = _parse_datetimes(text[~is_num])
    if dt.isna().any():
        bad = np.flatnonzero(~is_num)[dt.isna().to_numpy()]
        raise _fail(
            path,
            f"unreadable times in column {column!r}, e.g. {text.iloc[bad[0]]!r}",
            "Write numbers or ISO date-times (2001-12-31 or 2001-12-31T23:59:59).",
            lines[bad],
        )
    if is_num.any():
        raise _fail(
            path,
            f"column {column!r} mixes numbers with date-times, e.g. {text[is_num].iloc[0]!r} "
            f"and {text[~is_num].iloc[0]!r}",
            "Use one kind of time in the whole file.",
            lines[is_num],
        )
    if tz is not None:  # naive times beside offset ones: their instant would be a guess
        aware = has_offset(text)
        if not aware.all():
            raise _fail(
                path,
                f"column {column!r} mixes times with and without a UTC offset, e.g. "
                f"{text[~aware].iloc[0]!r} and {text[aware].iloc[0]!r}",
                "Give every time its offset (or none), so that each names one instant.",
                lines[~aware],
            )
    inside = in_ns_range(dt)
    if not inside.all():
        raise _fail(
            path,
            f"times in {column!r} outside the range of date-times, e.g. {text[~inside].iloc[0]!r}",
            NS_RANGE_FIX[0].upper() + NS_RANGE_FIX[1:] + ".",
            lines[~inside],
        )
    ns = dt.astype("datetime64[ns]").to_numpy().view(np.int64)
    if int(ns.max()) - int(ns.min()) > MAX_OFFSET_NS:  # Python ints: no overflow
        first, last = int(np.argmin(ns)), int(np.argmax(ns))
        raise _fail(
            path,
            f"the times in {column!r} span more than 292 years, from {text.iloc[first]!r} to "
            f"{text.iloc[last]!r}",
            NS_RANGE_FIX[0].upper() + NS_RANGE_FIX[1:] + ".",
            lines[[first, last]],
        )
    resolution = next(r for r, n in _RESOLUTIONS.items() if (ns % n == 0).all())
    origin = pd.Timestamp(int(ns.min())).isoformat()
    encoding = TimeEncoding("datetime", time_unit, origin, resolution, tz)
    return encoding.encode_ns(ns), encoding


# dates written as whole numbers: (name, strptime format, smallest, largest value)
_NUMBER_DATES = (
    ("YYYYMMDD", "%Y%m%d", 16_780_101, 22_621_231),
    ("YYYYMM", "%Y%m", 167_801, 226_212),
)


def _refuse_dates_as_numbers(path: Path, num: np.ndarray, column: str) -> None:
    """Refuse numeric times that are dates written as digits (20231202, or 202312 for
    months): at least five distinct whole numbers, every one a valid date in that form. Read
    as numbers, a month's or a year's end would be a jump (20231231 to 20240101 is 8870)."""
    if not (num == np.round(num)).all():
        return
    uniq = np.unique(num)
    if len(uniq) < 5:
        return
    for name, fmt, lo, hi in _NUMBER_DATES:
        if not (lo <= uniq[0] and uniq[-1] <= hi):
            continue
        text = pd.Series(uniq.astype(np.int64).astype(str))
        dates = pd.to_datetime(text, format=fmt, errors="coerce")
        if dates.isna().any():
            continue
        daily = fmt.endswith("%d")
        if daily:
            apart = dates.diff().dt.days.to_numpy()[1:]
        else:
            apart = np.diff(dates.dt.year.to_numpy() * 12 + dates.dt.month.to_numpy())
        jump = int(np.argmax(np.diff(uniq) / apart))  # the widest numbers per day (month)
        a, b = text.iloc[jump], text.iloc[jump + 1]
        iso = "%Y-%m-%d" if daily else "%Y-%m"
        raise _fail(
            path,
            f"the times in {column!r} look like dates written as {name} numbers, e.g. "
            f"{text.iloc[0]} for {dates.iloc[0]:{iso}}; read as numbers, {a} to {b} "
            f"would be {int(b) - int(a)} apart but is {int(apart[jump])} "
            f"{'day' if daily else 'month'}(s)",
            f"Write them as ISO dates ({dates.iloc[0]:{iso}}); in pandas: "
            f"df[{column!r}] = pd.to_datetime(df[{column!r}].astype(str), "
            f"format={fmt!r}).dt.strftime({iso!r}). If they are plain numbers after all, "
            "shift them all by one constant so that they no longer read as dates.",
        )


_EXACT = 2.0**53  # beyond it, float64 cannot hold every whole number


def _refuse_lost_digits(
    path: Path, text: pd.Series, num: np.ndarray, column: str, lines: np.ndarray
) -> None:
    """Refuse numeric times whose written values differ but read as the same float64
    (``text [N]`` as written, ``num [N]`` as read): whole numbers beyond 2**53, such as epoch
    nanoseconds, lose their last digits, and such rows were called duplicates (or averaged)."""
    big = np.flatnonzero(np.abs(num) >= _EXACT)  # (B,) the rows that may have lost digits
    if len(big) < 2:
        return
    written = [_decimal(s) for s in text.iloc[big]]
    first: dict[float, int] = {}  # float value -> the first row of ``big`` read as it
    for k, r in enumerate(big):
        seen = first.setdefault(float(num[r]), k)
        if written[seen] is not None and written[k] is not None and written[seen] != written[k]:
            a, b = big[seen], r
            raise _fail(
                path,
                f"the times in {column!r} are too large for their digits to be kept: "
                f"{text.iloc[a]!r} and {text.iloc[b]!r} differ but read as the same number "
                "(a floating-point number holds whole numbers exactly only up to 2**53, "
                "about 9.007e15)",
                "Rescale the times to a coarser unit (nanoseconds since 1970 to seconds: "
                "divide by 1e9), subtract one constant near the first time from all of them, "
                "or write ISO date-times (2023-11-14T22:13:20.000000001).",
                lines[[a, b]],
            )


def _decimal(text: str) -> Decimal | None:
    """The exact value of a number as written (None if `Decimal` cannot read it)."""
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _parse_datetimes(text: pd.Series) -> tuple[pd.Series, str | None]:
    """Naive date-times, or UTC ones (tz "UTC") when the strings carry offsets."""
    try:
        dt = pd.to_datetime(text, format="ISO8601", errors="coerce")
        if isinstance(dt.dtype, pd.DatetimeTZDtype):
            return dt.dt.tz_convert("UTC").dt.tz_localize(None), "UTC"
        if pd.api.types.is_datetime64_dtype(dt):
            return dt, None
    except (TypeError, ValueError):
        pass  # mixed offsets: read everything as UTC
    dt = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    return dt.dt.tz_localize(None), "UTC"
