"""The file and its header, for the CSV reader (`latentode.data.csv`).

Opening the file (a spreadsheet's ``sep=;`` first line names the delimiter and is skipped),
reading it with pandas, the header's names (`csv_columns`: a name given twice is refused), the
columns the caller asks for, and the advice when they are missing (a title, a comment or
blank lines above the header among the causes named). Here too are the reader's
error, `CSVDataError`, and `_fail`, which writes its message: the file, the lines, what to
change.
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError

__all__ = ["CSVDataError", "csv_columns"]

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
        raise _empty_error(path, skip) from None
    except pd.errors.ParserWarning:
        raise _fail(
            path,
            "its rows hold more values than the header names columns",
            "Name the extra column in the header, or remove the values past the last column.",
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise _fail(path, f"not a readable CSV ({e})", "Save it as UTF-8 CSV.") from None


def _header_place(skip: int) -> str:
    """Where the header belongs: the first line, or under ``skip`` (1) ``sep=`` line."""
    where = "line 2, under the sep= line" if skip else "the first line"
    return f"The header (the column names) must be {where}"


def _empty_error(path: Path, skip: int) -> CSVDataError:
    """The error for a file pandas finds no columns in: empty, or blank lines (two or more:
    pandas reads one blank first line as a header without names) above the header."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        lines = f.readlines()[skip:]
    filled = next((n for n, line in enumerate(lines) if line.strip()), None)
    if filled is None:
        return _fail(path, "the file is empty", "Write a header line and data rows.")
    return _fail(
        path,
        f"the file starts with {filled} blank line{'s' if filled > 1 else ''}",
        f"{_header_place(skip)}: delete the blank lines above line {skip + filled + 1}, "
        f"{lines[filled].strip()[:60]!r}.",
        np.arange(skip + 1, skip + filled + 1),
    )


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


def _check_channel_names(
    path: Path,
    channels: Sequence[str] | None,
    time_column: str,
    series_column: str | None,
) -> None:
    """Refuse a time column that is also the series column, and a channel list that is
    empty, names a column twice, or names the time or series column (None: every numeric
    column, nothing to check)."""
    if series_column is not None and series_column == time_column:
        raise CSVDataError(
            f"{path}: time_column and series_column both name {time_column!r}; the series ids "
            "and the times need a column each (--data.init_args.series_column null reads the "
            "file as one series)."
        )
    if channels is None:
        return
    if not channels:
        raise CSVDataError(
            f"{path}: channels is an empty list; list the value columns to model, or leave "
            "channels out (null) to model every numeric column."
        )
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
        fix = _header_below(path, wanted)  # a title or a blank line above the header
        if fix is None:
            advice = _header_advice(header, missing)
            if advice is None:
                roles = {time_column: "time_column", series_column: "series_column"}
                advice = _option_advice(header, missing, roles)
            fix = f"The file has columns {_names(header)}; {advice}"
        raise _fail(path, f"missing column{'s' if len(missing) > 1 else ''} {_names(missing)}", fix)
    return wanted


_LOOK_BELOW = 10  # lines read below the first for the column names (`_header_below`)


def _header_below(path: Path, wanted: list[str]) -> str | None:
    """What to do when the header is not the first line: a title, a comment or a blank line
    above it (the column names ``wanted`` on one of the next lines, or a blank first line);
    None otherwise. The line numbers count a ``sep=`` line."""
    sep, skip = _separator(path)
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        rows = [f.readline() for _ in range(skip + 1 + _LOOK_BELOW)][skip:]
    cells = [[c.strip() for c in next(csv.reader([r], delimiter=sep), [])] for r in rows]
    must = _header_place(skip)
    first = f"line {skip + 1}"
    if not any(cells[0]):
        first += " is blank"
    else:
        first += f" holds {rows[0].strip()[:60]!r}, which looks like a title or a comment"
    below = next((k for k, c in enumerate(cells[1:], 1) if set(wanted) <= set(c)), None)
    if below is not None:
        return (
            f"{must}, but {first}, and the "
            f"column names ({_names([c for c in cells[below] if c])}) are on line "
            f"{skip + 1 + below}: delete line{'s' if below > 1 else ''} {skip + 1}"
            f"{f' to {skip + below}' if below > 1 else ''}."
        )
    if not any(cells[0]):
        return f"{must}, but {first}: delete the blank line(s) above the header."
    return None


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
