"""CSV input refused with one message each: bad cells, columns and rows, spreadsheet habits,
channel lists."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from csv_data_helpers import _write

from latentode.data.csv import CSVDataError, read_series_csv
from latentode.data.csv_module import CSVDataModule
from latentode.data.errors import DataError

BAD = {
    "empty": ("", ["f.csv", "empty"]),
    "header_only": ("series_id,time,x\n", ["no data rows"]),
    "missing_column": (
        "series_id,t,x\na,1,2\n",
        ["missing column", "'time'", "'t'", "--data.init_args.time_column t ", "rename it to"],
    ),
    "date_column": (
        "series_id,Date,x\na,1,2\n",
        ["missing column 'time'", "--data.init_args.time_column Date (`latentode fit`"],
    ),
    "non_numeric": ("series_id,time,x\na,1,2\na,2,abc\na,3,4\n", ["'x'", "'abc'", "line 3"]),
    "infinite": ("series_id,time,x\na,1,2\na,2,inf\na,3,4\n", ["infinite", "'x'", "line 3"]),
    "bad_time": ("series_id,time,x\na,2001-01-01,1\na,yesterday,2\n", ["'yesterday'", "line 3"]),
    "mixed_time": ("series_id,time,x\na,2001-01-01,1\na,5,2\n", ["mixes numbers", "line 3"]),
    "empty_time": ("series_id,time,x\na,1,1\na,,2\n", ["empty time", "line 3"]),
    "empty_series": ("series_id,time,x\na,1,1\n,2,2\n", ["'series_id'", "line 3"]),
    "duplicate": ("series_id,time,x\na,1,1\nb,1,5\na,1,2\na,2,3\n", ["duplicate", "2, 4", "'a'"]),
    "empty_channel": ("series_id,time,x,y\na,1,1,\na,2,2,\n", ["channel 'y'", "no observed"]),
    "no_series_left": ("series_id,time,x\na,1,1\nb,1,2\n", ["no series has two"]),
    "semicolons": ("series_id;time;x\na;1;1,5\n", ["'time'", "looks separated by ';'", "','"]),
    "tabs": ("series_id\ttime\tx\na\t1\t1\n", ["'time'", "looks separated by '\\t'"]),
    "padded_time": ("series_id, time,x\na,1,1\n", ["'time'", "spaces around ' time'"]),
    # without the check the file read as one series (' series_id' an ignored text column)
    "padded_id": (" series_id,time,x\na,1,1\n", ["'series_id'", "spaces around ' series_id'"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_named(tmp_path: Path, case: str) -> None:
    text, expected = BAD[case]
    path = _write(tmp_path, text)
    with pytest.raises(CSVDataError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_series_csv(path)
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message, (case, message)


def test_missing_file_and_given_channels(tmp_path: Path) -> None:
    with pytest.raises(CSVDataError, match="file not found"):
        read_series_csv(tmp_path / "nope.csv")
    path = _write(tmp_path, "series_id,time,x\na,1,1\na,2,2\n")
    with pytest.raises(CSVDataError, match=r"missing column 'y'.*'series_id', 'time', 'x'; "
                       r"list channels that are there: --data.init_args.channels"):  # fmt: skip
        read_series_csv(path, channels=["y"])
    with pytest.raises(CSVDataError, match=r"missing columns 'stamp', 'sid'.*time_column time "
                       r"\(`latentode fit`; time_column='time' in the library\); give a series "
                       r"column that is there: --data.init_args.series_column\.$"):  # fmt: skip
        read_series_csv(path, time_column="stamp", series_column="sid")


def test_an_unobserved_channel_is_refused_unless_allowed(tmp_path: Path) -> None:
    """For fitting a channel without values is an error; a history read for a fitted model
    (`allow_unobserved`) keeps it, all NaN."""
    path = _write(tmp_path, "series_id,time,x,y\na,1,1,\na,2,2,\n")
    with pytest.raises(CSVDataError, match="channel 'y' has no observed value"):
        read_series_csv(path, channels=["x", "y"])
    table = read_series_csv(path, channels=["x", "y"], allow_unobserved=True)
    assert table.channels == ["x", "y"] and np.isnan(table.values[:, 1]).all()
    np.testing.assert_array_equal(table.values[:, 0], [1.0, 2.0])


def test_many_bad_rows_are_listed_briefly(tmp_path: Path) -> None:
    rows = "".join(f"a,{i},{'bad' if i % 2 else i}\n" for i in range(20))
    path = _write(tmp_path, "series_id,time,x\n" + rows)
    with pytest.raises(CSVDataError, match=r"lines 3, 5, 7, 9, 11 and 5 more"):
        read_series_csv(path)


def _rows(times: list[str], ids: str = "s") -> str:
    return "".join(f"{ids},{t},{i % 3}\n" for i, t in enumerate(times))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "sep=ab\nseries_id,time,a\ns,1,2\ns,2,3\n",
            "the first line 'sep=ab' is a spreadsheet's separator hint that names no single "
            "delimiter. Write it as sep=, or sep=;",
        ),
        (
            "series_id,time,a,a\ns,1,2,3\ns,2,3,4\n",
            "the header names column 'a' more than once. Give each column its own name.",
        ),
        (
            'series_id,time,a,b\ns,1,"0,5",1\ns,2,"1,25",2\ns,3,,3\n',
            "column 'a' holds numbers written with a comma, e.g. '0,5' (a decimal comma, or a "
            "thousands separator) (lines 2, 3). Write them as plain numbers with '.'",
        ),
        (
            "series_id,time,a\n"
            + _rows(["20231229", "20231230", "20231231", "20240101", "20240103"]),
            "look like dates written as YYYYMMDD numbers, e.g. 20231229 for 2023-12-29; read as "
            "numbers, 20231231 to 20240101 would be 8870 apart but is 1 day(s). Write them as "
            "ISO dates (2023-12-29)",
        ),
        (
            "series_id,time,a\n" + _rows(["202310", "202311", "202312", "202401", "202403"]),
            "dates written as YYYYMM numbers, e.g. 202310 for 2023-10; read as numbers, 202312 "
            "to 202401 would be 89 apart but is 1 month(s)",
        ),
        (
            "series_id,time,a\n" + _rows(["1601-01-01", "1700-01-01", "1800-01-01"]),
            "times in 'time' outside the range of date-times, e.g. '1601-01-01' (line 2). "
            "Date-times are read from 1677-09-22 to 2262-04-11",
        ),
        (
            "series_id,time,a\n" + _rows(["2001-01-01", "2263-01-01", "2002-01-01"]),
            "outside the range of date-times, e.g. '2263-01-01' (line 3)",
        ),
        (  # int64 nanoseconds from the first time wrapped around: 2000 sorted before 1700
            "series_id,time,a\n" + _rows(["1700-07-01", "1850-07-01", "2000-07-01"]),
            "the times in 'time' span more than 292 years, from '1700-07-01' to '2000-07-01' "
            "(lines 2, 4)",
        ),
    ],
    ids=[
        *("bad-sep-line", "name-twice", "decimal-comma", "yyyymmdd", "yyyymm", "before-1677"),
        *("after-2262", "over-292-years"),
    ],
)
def test_spreadsheet_habits_are_refused_with_the_fix(
    tmp_path: Path, text: str, needle: str
) -> None:
    """Each of these was read silently wrong (a renamed ``a.1`` channel, a channel dropped as
    text, dates as numbers with jumps at month ends) or raised a traceback."""
    with pytest.raises(CSVDataError) as err:
        read_series_csv(_write(tmp_path, text))
    assert needle in str(err.value) and str(tmp_path) in str(err.value)


def test_numbers_that_merely_resemble_dates_and_plain_years_are_numbers(tmp_path: Path) -> None:
    """Fewer than five distinct values, an invalid month, or years: read as numbers."""
    for times in (
        ["20231229", "20231230", "20231231", "20240101"],  # four
        ["202310", "202311", "202312", "202313", "202401"],  # month 13
        ["1990", "1991", "1995", "2000", "2010"],
    ):
        table = read_series_csv(_write(tmp_path, "series_id,time,a\n" + _rows(times)))
        assert table.encoding.kind == "numeric"
        np.testing.assert_array_equal(table.times, [float(t) for t in times])


def test_a_channel_list_naming_a_column_twice_or_the_time_is_refused(tmp_path: Path) -> None:
    """Also: one channel given as a string is that channel, not its letters; a data frame
    instead of a path is named (once a bare os.PathLike TypeError)."""
    path = _write(tmp_path, "series_id,time,a,b\ns,1,2,3\ns,2,3,4\n")
    assert read_series_csv(path, channels="b").channels == ["b"]
    with pytest.raises(CSVDataError, match="reads a CSV file by its path, got DataFrame"):
        read_series_csv(pd.read_csv(path))
    with pytest.raises(DataError, match="path must be a CSV file's path, got DataFrame"):
        CSVDataModule(pd.read_csv(path))
    with pytest.raises(CSVDataError, match="channels: 'a' listed more than once"):
        read_series_csv(path, channels=["a", "b", "a"])
    with pytest.raises(CSVDataError, match="channels include 'time', the time or series"):
        read_series_csv(path, channels=["time", "a"])
