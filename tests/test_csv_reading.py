"""Reading CSV series: ordering, duplicates, time encodings and UTC offsets, the shipped
files, trailing delimiters and a spreadsheet's ``sep=`` line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from csv_data_helpers import DATA, _write

from latentode.data.csv import CSVDataError, read_series_csv
from latentode.data.errors import DataError
from latentode.data.table import TimeEncoding


def test_unsorted_times_sorted_and_text_columns_ignored(tmp_path: Path) -> None:
    text = "series_id,name,time,x,y\nb,B,3,1,\nb,B,1,2,7\na,A,5,3,4\na,A,2,,5\na,A,9,6,\n"
    table = read_series_csv(_write(tmp_path, text))
    assert table.series_ids == ["b", "a"]  # order of appearance
    assert table.channels == ["x", "y"]  # 'name' holds text only
    t, x = table.series(1)
    np.testing.assert_array_equal(t, [2.0, 5.0, 9.0])
    np.testing.assert_array_equal(x, [[np.nan, 5.0], [3.0, 4.0], [6.0, np.nan]])
    assert table.encoding.kind == "numeric"


def test_duplicates_mean_averages_observed_values(tmp_path: Path) -> None:
    text = "series_id,time,x,y\na,1,1,\na,1,3,10\na,2,5,6\n"
    table = read_series_csv(_write(tmp_path, text), duplicates="mean")
    np.testing.assert_array_equal(table.times, [1.0, 2.0])
    np.testing.assert_array_equal(table.values, [[2.0, 10.0], [5.0, 6.0]])


def test_short_series_dropped_with_warning(tmp_path: Path) -> None:
    text = "series_id,time,x\na,1,1\na,2,2\nb,1,3\nc,1,\nc,2,4\n"
    with pytest.warns(UserWarning, match=r"dropped 2 series.*'b', 'c'"):
        table = read_series_csv(_write(tmp_path, text))
    assert table.series_ids == ["a"]


def test_datetimes_round_trip_to_the_second(tmp_path: Path) -> None:
    stamps = ["2021-03-01T12:00:07", "2020-02-29T23:59:59", "2021-03-01T00:00:00"]
    text = "time,x\n" + "".join(f"{s},{i}\n" for i, s in enumerate(stamps))
    table = read_series_csv(_write(tmp_path, text), time_unit="h")
    enc = table.encoding
    assert (enc.kind, enc.unit, enc.resolution) == ("datetime", "h", "s")
    assert enc.origin == "2020-02-29T23:59:59"
    assert enc.format(table.times) == sorted(stamps)
    assert table.times[1] == pytest.approx(365 * 24.0 + 1 / 3600, rel=1e-15)
    again = TimeEncoding.from_dict(enc.to_dict())
    np.testing.assert_array_equal(again.encode(sorted(stamps)), table.times)
    day = read_series_csv(DATA / "co2_mauna_loa_weekly.csv", time_unit="Y").encoding
    assert day.resolution == "D" and day.format([0.0]) == ["1958-03-29"]


def test_numeric_times_are_written_as_the_file_has_them() -> None:
    """Whole numbers as integers (``102``, not ``102.0``); others as floats that read back
    exactly; past 2**53 a float is no longer a whole number a CSV reader keeps."""
    enc = TimeEncoding("numeric")
    times = [102.0, -3.0, 0.1 + 0.2, 1e-12, 2.0**60]
    written = ["102", "-3", "0.30000000000000004", "1e-12", "1.152921504606847e+18"]
    assert enc.format(times) == written
    assert [float(v) for v in enc.format(times)] == times


def test_utc_offsets_are_converted(tmp_path: Path) -> None:
    text = "time,x\n2020-01-01T00:00:00+02:00,1\n2020-01-01T00:00:00Z,2\n"
    table = read_series_csv(_write(tmp_path, text), time_unit="h")
    assert table.encoding.tz == "UTC"
    assert table.encoding.format(table.times) == ["2019-12-31T22:00:00Z", "2020-01-01T00:00:00Z"]


def test_times_with_and_without_offsets_are_not_mixed(tmp_path: Path) -> None:
    """A naive time beside offset ones used to be read as UTC; now the file is refused, with
    the line. An encoding reads later times (``predict --times``) only in its own kind."""
    text = "time,x\n2020-01-01T01:00+01:00,1\n2020-01-01T05:00,2\n2020-01-01 06:00:00-0500,3\n"
    with pytest.raises(CSVDataError) as info:
        read_series_csv(_write(tmp_path, text), time_unit="h")
    assert "mixes times with and without a UTC offset, e.g. '2020-01-01T05:00'" in str(info.value)
    assert "(line 3)" in str(info.value)
    aware = read_series_csv(_write(tmp_path, text.replace("T05:00", "T05:00Z")), time_unit="h")
    assert aware.times.tolist() == [0.0, 5.0, 11.0]  # 06:00-05:00 is 11:00Z
    assert aware.encoding.encode(["2020-01-01T02:00:00+02:00"]).tolist() == [0.0]
    with pytest.raises(
        DataError, match="carry UTC offsets and '2020-01-02' \\(value 1\\) has none"
    ):
        aware.encoding.encode(["2020-01-02"])
    naive = read_series_csv(_write(tmp_path, "time,x\n2020-01-01,1\n2020-01-02,2\n"))
    with pytest.raises(DataError, match="have no UTC offset and '2020-01-03T00:00Z'"):
        naive.encoding.encode(["2020-01-03", "2020-01-03T00:00Z"])
    assert naive.encoding.encode(["2020-01-03"]).tolist() == [2.0]


def test_shipped_co2() -> None:
    table = read_series_csv(DATA / "co2_mauna_loa_weekly.csv", time_unit="D")
    missing = np.isnan(table.values[:, 0])
    assert (table.n_series, len(table.times), int(missing.sum())) == (1, 2284, 59)
    assert int((np.diff(missing.astype(int)) == 1).sum() + missing[0]) == 22
    np.testing.assert_array_equal(np.diff(table.times), 7.0)
    assert table.encoding.format(table.times[[0, -1]]) == ["1958-03-29", "2001-12-29"]


def test_shipped_fertility() -> None:
    table = read_series_csv(DATA / "fertility_worldbank.csv")
    assert (table.n_series, table.channels, len(table.times)) == (210, ["fertility"], 10284)
    assert table.times.min() == 1960 and table.times.max() == 2011
    assert len(set(table.lengths.tolist())) > 5  # irregular: series differ in length


def test_trailing_delimiters_extra_values_and_ids_that_read_like_missing(tmp_path: Path) -> None:
    """A spreadsheet export ends every row (and maybe the header) with a delimiter: read as
    written, not with the ids taken for an index and every column shifted. Values past the
    header's last column are refused, not dropped. Ids such as NA (Namibia), None or nan are
    names; only an empty id is missing. A directory is named as one."""
    rows = "A,1,1.0,\nA,2,2.0,\nB,1,3,\nB,2,4,\n"
    for name, header in (("trail.csv", "series_id,time,a\n"), ("both.csv", "series_id,time,a,\n")):
        path = tmp_path / name
        path.write_text(header + rows)
        table = read_series_csv(path)
        assert table.series_ids == ["A", "B"] and table.channels == ["a"]
        np.testing.assert_array_equal(table.values[:, 0], [1.0, 2.0, 3.0, 4.0])
    extra = tmp_path / "extra.csv"
    extra.write_text("series_id,time,a\nA,1,1.0,5\nA,2,2.0,6\n")
    with pytest.raises(CSVDataError, match="its rows hold more values than the header names"):
        read_series_csv(extra)
    named = tmp_path / "na.csv"
    named.write_text("series_id,time,a\nNA,1,1.0\nNA,2,n/a\nNA,3,2\nNone,1,3\nNone,2,4\n")
    table = read_series_csv(named)
    assert table.series_ids == ["NA", "None"]
    np.testing.assert_array_equal(table.values[:, 0], [1.0, np.nan, 2.0, 3.0, 4.0])  # n/a
    empty = tmp_path / "empty_id.csv"
    empty.write_text(named.read_text() + ",3,3\n")
    with pytest.raises(CSVDataError, match=r"empty 'series_id' \(line 7\)"):
        read_series_csv(empty)
    with pytest.raises(CSVDataError, match="a directory, not a file"):
        read_series_csv(tmp_path)


def test_a_spreadsheets_sep_line_names_the_delimiter(tmp_path: Path) -> None:
    """Excel writes, and honours, a first line ``sep=;``: the table under it reads as the
    comma-separated file does (it was refused), padded (``sep=;;;``) or with a BOM, and line
    numbers in messages count the hint line."""
    rows = [["series_id", "time", "a", "b"], ["A", "1", "1.5", ""], ["A", "2", "2", "7"]]
    rows += [["B", "1", "3", "8"], ["B", "3", "4.25", "9"]]
    plain = _write(tmp_path, "".join(",".join(r) + "\n" for r in rows))
    want = read_series_csv(plain)
    for i, hint in enumerate(("sep=;\n", "sep=;;;\r\n", "\ufeffSEP=;\n")):
        path = tmp_path / f"excel{i}.csv"
        path.write_text(hint + "".join(";".join(r) + "\n" for r in rows), encoding="utf-8")
        got = read_series_csv(path)
        assert (got.series_ids, got.channels) == (["A", "B"], ["a", "b"])
        np.testing.assert_array_equal(got.times, want.times)
        np.testing.assert_array_equal(got.values, want.values)
        np.testing.assert_array_equal(got.offsets, want.offsets)
    tabs = tmp_path / "tabs.csv"
    tabs.write_text("sep=\t\n" + "".join("\t".join(r) + "\n" for r in rows))
    np.testing.assert_array_equal(read_series_csv(tabs).values, want.values)
    bad = tmp_path / "bad.csv"
    bad.write_text("sep=;\nseries_id;time;x\na;1;2\na;2;abc\na;3;4\n")
    with pytest.raises(CSVDataError, match=r"column 'x', e.g. 'abc' \(line 4\)"):
        read_series_csv(bad)
