"""Series ids in a file read as one series, for the CSV reader (`latentode.data.csv`).

A file without a series column is one series. These checks catch the columns that read like
series ids all the same: a text column with few values (a warning), a column that differs
between rows at one time (`_check_unnamed_series`), and whole numbers that each fill one run of
rows whose times overlap, as series written one after another do (`_refuse_stacked_ids`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .csv_header import _fail, _names

__all__: list[str] = []  # helpers of `read_series_csv`


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
    unnamed: bool = True,
) -> bool:
    """A file without a series column is one series. When its rows at one time differ in a
    column that is likely the series id, refused with that said (``duplicates="error"``), or
    averaged as asked, with a warning that names it (and True returned: the column is named).
    ``unnamed``: the file has no 'series_id' column (else one series was asked for,
    ``series_column=None``, and only averaging is checked: it would mix the series).

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
    read = (
        "no 'series_id' column, so the file was read as one series"
        if unnamed
        else "the file was read as one series (no series column given)"
    )
    problem = (
        f"{read}, but rows at the same time {frame[time_column].iloc[order[k]]!r} differ in "
        f"column {c!r} ({a} and {b}{why})"
    )
    fix = (
        f"If {c!r} names the series, say so: --data.init_args.series_column {c} "
        f"(`latentode fit`; series_column={c!r} in the library)"
        + (
            ", or rename the column to series_id. If it does not, these are repeated rows: "
            "remove them, or average them (--data.init_args.duplicates mean)."
            if unnamed
            else "; averaging mixes the rows of different series into one. If it does not, "
            "these are repeated rows of one series."
        )
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
