"""Read a long-format CSV of irregular series into a validated `SeriesTable`.

The file has one row per (series, time): ``series_id, time, <channel columns...>``. Without a
series column the whole file is one series. Missing values are empty cells or NaN. Times are
numbers (any unit) or ISO date-times; date-times become a float axis (``unit`` after ``origin``,
kept in the table's `TimeEncoding`). Rows are sorted by time within each series.

Every rule is checked here, in `read_series_csv`, and every violation raises `CSVDataError`
naming the file, the line numbers (the header is line 1, or line 2 under a spreadsheet's
``sep=;`` line), the column or the series, and what to change. Series with fewer than two
observed times are dropped with a warning.

Usage::

    table = read_series_csv("data/fertility_worldbank.csv")
    table = read_series_csv("co2.csv", series_column=None, time_unit="Y")
"""

from __future__ import annotations

import csv
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .errors import DataError
from .table import (
    _RESOLUTIONS,
    MAX_OFFSET_NS,
    NS_RANGE_FIX,
    TIME_UNITS,
    SeriesTable,
    TimeEncoding,
    has_offset,
    in_ns_range,
)
from .transforms import base_of, domain_of, outside_domain, transform_kinds

__all__ = ["CSVDataError", "csv_columns", "read_series_csv"]

_SHOW = 5  # line numbers / names listed in a message


class CSVDataError(DataError):
    """A CSV file breaks a rule; the message names the file, lines, column or series, and a fix."""


def _fail(path: Path, problem: str, fix: str, lines: np.ndarray | None = None) -> CSVDataError:
    where = ""
    if lines is not None and len(lines):
        shown = ", ".join(str(int(n)) for n in lines[:_SHOW])
        more = f" and {len(lines) - _SHOW} more" if len(lines) > _SHOW else ""
        where = f" (line{'s' if len(lines) > 1 else ''} {shown}{more})"
    return CSVDataError(f"{path}: {problem}{where}. {fix}")


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(repr(str(s)) for s in items[:_SHOW])
    return shown + (f" and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


# what pandas reads as missing by default; a series id column keeps these as names (NA is
# Namibia) and only its empty cells are missing
_NA_TEXT = [
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND"),
    *("1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
]


# the first line Excel writes, and honours, to name a file's delimiter: ``sep=;``
_SEP_HINT = "sep="


def _separator(path: Path) -> tuple[str, int]:
    """The delimiter of ``path`` and the number of lines above its header.

    A first line ``sep=X`` (Excel writes it, and reads the file by it) names the delimiter
    ``X`` and is skipped: ``(";", 1)`` for ``sep=;``. Without one: ``(",", 0)``. The hint may
    be padded with its own delimiter (``sep=;;;``, as a spreadsheet re-exports it).

    Raises:
        CSVDataError: a ``sep=`` line that names no single delimiter character.
    """
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        line = f.readline(1024).rstrip("\r\n")
    if line.lstrip()[: len(_SEP_HINT)].lower() != _SEP_HINT:
        return ",", 0
    named = line.lstrip()[len(_SEP_HINT) :]
    if not named or set(named) != {named[0]} or named[0] in "\"'.\r\n" or named[0].isalnum():
        raise _fail(
            path,
            f"the first line {line!r} is a spreadsheet's separator hint that names no single "
            "delimiter",
            "Write it as sep=, or sep=; (the character between the columns), or delete it.",
        )
    return named[0], 1


def _read_frame(
    path: Path,
    usecols: list[str] | None = None,
    text: Sequence[str] = (),
    nrows: int | None = None,
    ids: str | None = None,
    header: Sequence[str] = (),
) -> pd.DataFrame:
    """The file as pandas reads it, every cell of the ``text`` columns as a string, and the
    ``ids`` column's cells missing only when empty (``header``: the file's columns, needed
    with ``ids``); under a ``sep=`` first line, by the delimiter it names. A trailing
    delimiter on each row (a spreadsheet export) is not taken for an index column; values
    past the header's last column are refused, not dropped."""
    if not path.is_file():
        what = "a directory, not a file" if path.is_dir() else "file not found"
        raise _fail(path, what, "Check the path (--data.path).")
    sep, skip = _separator(path)
    na: dict[str, Any] = {"keep_default_na": True}
    if ids is not None:
        na_values = {c: [""] if c == ids else _NA_TEXT for c in header}
        na = {"keep_default_na": False, "na_values": na_values}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                path,
                sep=sep,
                skiprows=skip,
                usecols=usecols,
                dtype=dict.fromkeys(text, str),
                skip_blank_lines=False,
                nrows=nrows,
                index_col=False,
                **na,
            )
    except pd.errors.EmptyDataError:
        raise _fail(path, "the file is empty", "Write a header line and data rows.") from None
    except pd.errors.ParserWarning:
        raise _fail(
            path,
            "its rows hold more values than the header names columns",
            "Name the extra column in the header, or remove the values past the last column.",
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise _fail(path, f"not a readable CSV ({e})", "Save it as UTF-8 CSV.") from None


def csv_columns(path: str | Path) -> list[str]:
    """The column names of a CSV file's header.

    A spreadsheet's ``sep=;`` first line is skipped and its delimiter used (`_separator`).

    Raises:
        CSVDataError: a missing, empty or unreadable file; a ``sep=`` first line that names
            no single delimiter; a name given to two columns (pandas would rename the second
            ``a.1`` and read it as another channel).
    """
    path = Path(path)
    header = [str(c) for c in _read_frame(path, nrows=0).columns]
    named = Counter(_raw_header(path))
    twice = [name for name, n in named.items() if n > 1]
    if twice:
        raise _fail(
            path,
            f"the header names column{'s' if len(twice) > 1 else ''} {_names(twice)} more "
            "than once",
            "Give each column its own name.",
        )
    return header


def _raw_header(path: Path) -> list[str]:
    """The header's names as written (pandas renames a repeated name ``a`` to ``a.1``)."""
    sep, skip = _separator(path)
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        for _ in range(skip):
            f.readline()
        return next(csv.reader(f, delimiter=sep), [])


def _columns(
    path: Path,
    header: list[str],
    time_column: str,
    series_column: str | None,
    channels: Sequence[str] | None,
) -> list[str]:
    wanted = [time_column, *([series_column] if series_column else []), *(channels or [])]
    missing = [c for c in wanted if c not in header]
    if missing:
        advice = _header_advice(header, missing)
        if advice is None:
            roles = {time_column: "time_column", series_column: "series_column"}
            advice = _option_advice(header, missing, roles)
        raise _fail(
            path,
            f"missing column{'s' if len(missing) > 1 else ''} {_names(missing)}",
            f"The file has columns {_names(header)}; {advice}",
        )
    return wanted


# header names that usually hold the times, for the advice on a missing time column
_TIME_NAMES = ("time", "date", "datetime", "timestamp", "ds", "t", "year", "day", "week", "month")


def _option_advice(header: list[str], missing: list[str], roles: dict) -> str:
    """The options that name a file's own columns, with the likely time column filled in."""
    kinds = {roles.get(c, "channels") for c in missing}
    parts = []
    if "time_column" in kinds:
        guess = next(
            (h for h in header if h.strip().lower() in _TIME_NAMES or "date" in h.lower()),
            "NAME",
        )
        parts.append(
            f"name the file's time column: --data.init_args.time_column {guess} "
            f"(`latentode fit`; time_column={guess!r} in the library)"
            + (", or rename it to 'time'" if roles.get("time") == "time_column" else "")
        )
    if "series_column" in kinds:
        parts.append("give a series column that is there: --data.init_args.series_column")
    if "channels" in kinds:
        parts.append("list channels that are there: --data.init_args.channels [...]")
    return "; ".join(parts) + "."


def _header_advice(header: list[str], missing: list[str]) -> str | None:
    """What to do about a header that lacks the ``missing`` columns when the cause is a common
    one (another separator than ',', spaces around the names); None otherwise."""
    if len(header) == 1:
        sep = next((c for c in (";", "\t", "|") if c in header[0]), None)
        if sep is not None:
            return (
                f"the file looks separated by {sep!r}, and latentode reads comma-separated "
                "files: save it with ',' between columns (and '.' as decimal point), or "
                f"make its first line sep={sep} (a spreadsheet's separator hint)."
            )
    padded = [h for h in header if h != h.strip() and h.strip() in missing]
    if padded:
        return f"remove the spaces around {_names(padded)} in the header."
    return None


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


def _check_channel_names(
    path: Path, channels: list[str], time_column: str, series_column: str | None
) -> None:
    """Refuse a channel list that names a column twice, or names the time or series column."""
    twice = [c for c, n in Counter(channels).items() if n > 1]
    if twice:
        raise CSVDataError(
            f"{path}: channels: {_names(twice)} listed more than once; list each once."
        )
    roles = [c for c in channels if c in (time_column, series_column)]
    if roles:
        raise CSVDataError(
            f"{path}: channels include {_names(roles)}, the time or series column; list only "
            "value columns."
        )


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


def _warn_text_ids(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    """Warn when a file read as one series (no series column) has a text column that reads
    like series ids: at least two values, each on two rows or more on average. Series whose
    times never coincide would otherwise be merged into one without a word."""
    for c in columns:
        ids = frame[c].dropna().astype(str).str.strip()
        if len(ids) == len(frame) and 2 <= ids.nunique() <= len(frame) // 2:
            warnings.warn(
                f"{path}: the file has no 'series_id' column and was read as one series, "
                f"but its text column {c!r} holds {ids.nunique()} values over "
                f"{len(frame)} rows ({_names(ids.unique())}). If they name series, give "
                f"--data.init_args.series_column {c} (series_column={c!r} in the library) "
                "or rename the column to 'series_id'.",
                UserWarning,
                stacklevel=3,
            )
            return


def _check_unnamed_series(
    path: Path,
    frame: pd.DataFrame,
    names: list[str],
    time_column: str,
    order: np.ndarray,
    same: np.ndarray,
    lines: np.ndarray,
    duplicates: str,
    x: np.ndarray,
) -> bool:
    """A file without a series column is one series. When its rows at one time differ in a
    column that is likely the series id, refused with that said (``duplicates="error"``), or
    averaged as asked, with a warning that names it (and True returned: the column is named).

    Likely ids: a text column the reader ignored that differs between rows at one time, or a
    channel of whole numbers that never repeats at one time, with at least two rows per
    value (`_id_like`): averaged, it would mix the series and the ids themselves.

    ``order`` sorts the file's rows by time, ``same [N - 1]`` marks a sorted row at the time of
    the one before it, ``lines`` are the sorted rows' line numbers and ``x [N, D]`` the sorted
    rows' channels."""
    at = np.flatnonzero(same)  # sorted positions: rows at + 1 and at share a time
    first, second = order[at], order[at + 1]  # their rows in ``frame``
    found = None
    for c in frame.columns:
        if c in names or c == time_column:
            continue
        col = frame[c].astype(str).to_numpy()
        differ = np.flatnonzero(col[first] != col[second])
        if len(differ):
            k = differ[0]
            found = c, repr(col[first[k]]), repr(col[second[k]]), at[k], ""
            break
    if found is None:
        ids = [d for d in range(x.shape[1]) if _id_like(x[:, d], same)]
        if ids:  # the one with the fewest values: ids name few series, counts vary more
            d = min(ids, key=lambda d: len(np.unique(x[:, d])))
            k, why = at[0], ", whole numbers never the same at one time"
            found = names[d], f"{x[k, d]:g}", f"{x[k + 1, d]:g}", k, why
    if found is None:
        return False
    c, a, b, k, why = found
    problem = (
        "no 'series_id' column, so the file was read as one series, but rows at the same "
        f"time {frame[time_column].iloc[order[k]]!r} differ in column {c!r} ({a} and {b}"
        f"{why})"
    )
    fix = (
        f"If {c!r} names the series, say so: --data.init_args.series_column {c} "
        f"(`latentode fit`; series_column={c!r} in the library), or rename the column to "
        "series_id. If it does not, these are repeated rows: remove them, or average them "
        "(--data.init_args.duplicates mean)."
    )
    if duplicates == "error":
        raise _fail(path, problem, fix, lines[[k, k + 1]])
    warnings.warn(
        f"{_fail(path, problem, fix, lines[[k, k + 1]])} They are averaged, as asked.",
        UserWarning,
        stacklevel=3,
    )
    return True


def _id_like(col: np.ndarray, same: np.ndarray) -> bool:
    """Whether a channel ``col [N]`` (rows sorted by time; ``same`` as in
    `_check_unnamed_series`) reads like series ids: whole numbers, never a NaN, no value twice
    at one time, and at least two distinct values with two rows each on average."""
    if not (np.isfinite(col).all() and (col == np.round(col)).all()):
        return False
    if not 2 <= len(np.unique(col)) <= len(col) // 2:
        return False
    group = np.concatenate([[0], np.cumsum(~same)])  # (N,) time group of each row
    return not pd.DataFrame({"t": group, "v": col}).duplicated().any()


def _runs(col: np.ndarray) -> np.ndarray:
    """The first row of each run of equal values in ``col [N]`` (file order): ``[R]``."""
    return np.flatnonzero(np.r_[True, col[1:] != col[:-1]])


def _stacked_ids(col: np.ndarray, t: np.ndarray) -> bool:
    """Whether a channel ``col [N]`` (rows in file order, ``t [N]`` their times) reads like
    the ids of series written one after another: whole numbers, never a NaN, each value on
    one unbroken run of rows (at least two values, two rows each on average), and the time
    spans of two runs overlapping. A channel of one series written in time order (counts,
    a regime that steps up) takes a value again, or moves on in time from run to run."""
    if not (np.isfinite(col).all() and (col == np.round(col)).all()):
        return False
    start = _runs(col)  # (R,)
    if not 2 <= len(start) <= len(col) // 2 or len(np.unique(col)) != len(start):
        return False
    lo, hi = np.minimum.reduceat(t, start), np.maximum.reduceat(t, start)  # (R,) each
    order = np.argsort(lo, kind="stable")
    lo, reach = lo[order], np.maximum.accumulate(hi[order])  # (R,) spans by their start
    return bool((lo[1:] <= reach[:-1]).any())


def _refuse_stacked_ids(
    path: Path, names: list[str], t: np.ndarray, x: np.ndarray, lines: np.ndarray, unnamed: bool
) -> None:
    """Refuse a file read as one series, with channels left to the reader, when one of them
    reads like the ids of series written one after another (`_stacked_ids`): their times
    never coincide, so no repeated time gives them away, and the ids would be modelled as a
    value, the series merged into one. ``t [N]``, ``x [N, D]`` and ``lines [N]`` are in file
    order.

    Raises:
        CSVDataError: naming the column, where its runs start, and both ways on (name it the
            series column, or list the channels to keep it as a value).
    """
    found = [d for d in range(x.shape[1]) if _stacked_ids(x[:, d], t)]
    if not found:
        return
    d = max(found, key=lambda d: len(np.unique(x[:, d])))  # the finest grouping: the series
    c, start = names[d], _runs(x[:, d])
    values = _names([f"{v:g}" for v in x[start, d]]).replace("'", "")
    read = (
        "no 'series_id' column, so the file was read as one series"
        if unnamed
        else "the file was read as one series (no series column given)"
    )
    listed = ", ".join(names)
    raise _fail(
        path,
        f"{read}, but column {c!r} reads like series ids, not a value: its whole numbers "
        f"({values}) each fill one unbroken run of rows, and the runs' times overlap, as those "
        "of series written one after another do; the runs start",
        f"If {c!r} names the series, say so: --data.init_args.series_column {c} (`latentode "
        f"fit`; series_column={c!r} in the library), or rename the column to series_id. If "
        f"it is a value to model, list the channels: --data.init_args.channels '[{listed}]' "
        f"(channels={names!r} in the library).",
        lines[start],
    )


def _parse_times(
    path: Path, raw: pd.Series, column: str, lines: np.ndarray, time_unit: str
) -> tuple[np.ndarray, TimeEncoding]:
    missing = raw.isna().to_numpy()
    if missing.any():
        raise _fail(path, f"empty time in {column!r}", "Every row needs a time.", lines[missing])
    text = raw.astype(str).str.strip().reset_index(drop=True)
    num = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    is_num = ~np.isnan(num)
    if is_num.all():
        if np.isinf(num).any():
            raise _fail(path, f"infinite time in {column!r}", "Fix it.", lines[np.isinf(num)])
        _refuse_dates_as_numbers(path, num, column)
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
            whole-number times that read as dates (20231202), date-times outside 1677-2262,
            a channel list naming a column twice, duplicate rows, a channel with no
            observation (unless allowed), a value a channel's transform cannot take, an
            unknown transform or channel in ``transform``, no series with two observed
            times, or, in a file read as one series with the channels left to the reader, a
            column of whole numbers that reads like the ids of series written one after
            another (`_stacked_ids`). Dropped short series only warn, and so does a text
            column that looks like series ids in a file read as one series.
    """
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
    if channels is not None:
        _check_channel_names(path, list(channels), time_column, series_column)
    header = csv_columns(path)
    unnamed = series_column == "series_id" and "series_id" not in {h.strip() for h in header}
    if unnamed:
        series_column = None  # the default name is optional: one series
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

    t, encoding = _parse_times(path, frame[time_column], time_column, lines, time_unit)
    x = np.stack([_to_number(path, frame, c, lines) for c in names], axis=1)  # (N, D)
    _check_domain(path, x, names, lines, transform)
    if series_column is None:
        ids, codes = np.array([path.stem], dtype=object), np.zeros(len(frame), dtype=np.int64)
    else:
        sid = frame[series_column]
        if sid.isna().any():
            missing = lines[sid.isna().to_numpy()]
            raise _fail(path, f"empty {series_column!r}", "Every row needs a series id.", missing)
        codes, ids = pd.factorize(sid.astype(str).str.strip(), sort=False)
        codes, ids = codes.astype(np.int64), np.asarray(ids, dtype=object)

    file_order = (t, x, lines)  # for `_refuse_stacked_ids`
    order = np.lexsort((t, codes))  # stable: (series, time), file order among equals
    t, x, codes, lines = t[order], x[order], codes[order], lines[order]
    same = (np.diff(codes) == 0) & (np.diff(t) == 0)  # (N - 1,) row equals the previous one
    if unnamed and not same.any():  # rows at one time would show the ids: see below
        _warn_text_ids(path, frame, unread)
    named = False  # a column named as the likely series ids by `_check_unnamed_series`
    if same.any() and unnamed:  # one series by default: are the rows at one time several?
        named = _check_unnamed_series(
            path, frame, names, time_column, order, same, lines, duplicates, x
        )
    if series_column is None and not channels and not named:
        _refuse_stacked_ids(path, names, *file_order, unnamed)
    if same.any():
        if duplicates == "error":
            dup = np.unique(np.concatenate([np.flatnonzero(same), np.flatnonzero(same) + 1]))
            raise _fail(
                path,
                f"duplicate (series, time) rows, e.g. series {ids[codes[dup[0]]]!r} at time "
                f"{frame[time_column].iloc[order[dup[0]]]!r}",
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
        group = np.concatenate([[0], np.cumsum(~same)])  # (N,) group index of each row
        mean = pd.DataFrame(x).groupby(group, sort=True).mean().to_numpy()  # NaN-skipping
        keep = np.concatenate([[True], ~same])
        t, x, codes = t[keep], mean, codes[keep]

    observed = ~np.isnan(x)  # (N, D)
    empty = ~observed.any(axis=0)
    if empty.any() and not allow_unobserved:
        raise _fail(
            path,
            f"channel {_names([names[d] for d in np.flatnonzero(empty)])} has no observed value",
            "Fill it, or leave it out of channels.",
        )
    n_obs = np.bincount(codes[observed.any(axis=1)], minlength=len(ids))  # (S,)
    short = np.flatnonzero(n_obs < 2)
    if len(short) == len(ids):
        raise _fail(
            path,
            "no series has two observed times",
            "A series needs at least two rows with a value to be fitted.",
        )
    if len(short):
        warnings.warn(
            f"{path}: dropped {len(short)} series with fewer than two observed times: "
            f"{_names([str(ids[s]) for s in short])}.",
            UserWarning,
            stacklevel=2,
        )
        keep = np.isin(codes, short, invert=True)
        remap = np.cumsum(n_obs >= 2) - 1  # old code -> new code
        t, x, codes, ids = t[keep], x[keep], remap[codes[keep]], ids[n_obs >= 2]
    counts = np.bincount(codes, minlength=len(ids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SeriesTable(t, x, offsets, [str(i) for i in ids], names, encoding, str(path))
