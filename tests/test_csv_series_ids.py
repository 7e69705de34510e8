"""CSV columns that hold series ids rather than values: text and whole-number id columns
pointed out, channels fixed within each series, whole-number channels still read."""

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
from latentode.data.prep import (
    constant_within_series,
)


def test_a_text_column_that_names_series_in_a_file_without_series_id_is_pointed_out(
    tmp_path: Path,
) -> None:
    """Series whose times never coincide have no duplicate rows to give them away: the
    unread text column that holds their ids is named with the option that reads it."""
    text = "station,time,v\n" + "".join(
        f"{st},{t + off},{t}\n" for t in range(6) for st, off in (("north", 0.1), ("south", 0.6))
    )
    path = _write(tmp_path, text)
    with pytest.warns(UserWarning, match=r"its text column 'station' holds 2 values over 12 "
                      r"rows \('north', 'south'\). If they name series, give "
                      r"--data.init_args.series_column station"):  # fmt: skip
        merged = read_series_csv(path)
    assert merged.n_series == 1
    split = read_series_csv(path, series_column="station")
    assert split.series_ids == ["north", "south"] and split.channels == ["v"]
    with warnings.catch_warnings():  # a note per row is not an id
        warnings.simplefilter("error")
        notes = "time,note,v\n" + "".join(f"{t},note {t},{t}\n" for t in range(6))
        assert read_series_csv(_write(tmp_path, notes, "n.csv")).n_series == 1


def test_a_channel_fixed_within_each_series_is_named_as_no_time_series(tmp_path: Path) -> None:
    """A numeric id or attribute (here ``code``, one value per series) is read as a channel
    unless left out: the fit warns, naming it; the channel that moves is not named, nor is
    one that is constant only in series observed fewer than three times."""
    rows = ["series_id,time,code,y,rare"]
    for k, s in enumerate("abcd"):
        rows += [f"{s},{t},{100 + k},{t * (k + 1) % 7},{k if t < 2 else ''}" for t in range(30)]
    path = tmp_path / "codes.csv"
    path.write_text("\n".join(rows) + "\n")
    table = read_series_csv(path)
    assert constant_within_series(table) == ["code"]
    assert constant_within_series(table, min_series=5) == []  # four series only
    with pytest.warns(UserWarning, match=r"channel\(s\) \['code'\] hold one value throughout "
                      r"each series and differ between series"):  # fmt: skip
        CSVDataModule(str(path), holdout=3.0).setup()
    fine = CSVDataModule(str(path), holdout=3.0, channels=["y"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and nothing is said when it is left out
        fine.setup()


def test_rows_of_one_time_that_differ_in_a_text_column_point_to_the_series_column(
    tmp_path: Path,
) -> None:
    """No ``series_id`` column: the file is one series, and rows at one time that differ in
    an ignored text column are most likely several series. Refused with the column named
    (not called duplicates, whose averaging would mix the series), or, when averaging was
    asked for, averaged with a warning; ``series_column`` reads them as the series."""
    path = tmp_path / "ids.csv"
    path.write_text(
        "id,time,y\n" + "".join(f"{s},{t},{t + (s == 'b')}\n" for s in "ab" for t in range(5))
    )
    with pytest.raises(
        DataError,
        match=r"ids.csv: no 'series_id' column, so the file was read as one series, but rows "
        r"at the same time '0' differ in column 'id' \('a' and 'b'\) \(lines 2, 7\)\. "
        r"If 'id' names the series, say so: --data.init_args.series_column id",
    ):
        read_series_csv(path)
    with pytest.warns(UserWarning, match=r"differ in column 'id'.* They are averaged, as asked"):
        table = read_series_csv(path, duplicates="mean")
    np.testing.assert_allclose(table.values[:, 0], np.arange(5) + 0.5)
    table = read_series_csv(path, series_column="id")
    assert table.series_ids == ["a", "b"] and table.n_series == 2
    # a text column that is the same at each repeated time: plain duplicates, as before
    same = tmp_path / "same.csv"
    same.write_text("note,time,y\nx,0,1\nx,0,2\nx,1,3\n")
    with pytest.raises(DataError, match=r"duplicate \(series, time\) rows.*\. The file has no "
                       r"'series_id' column, so it was read as one series: if it holds "
                       r"several, give their ids"):  # fmt: skip
        read_series_csv(same)
    with pytest.raises(DataError) as e:  # a series column given: no such hint
        read_series_csv(same, series_column="note")
    assert "duplicate (series, time) rows" in str(e.value) and "no 'series_id'" not in str(e.value)
    # one series asked for (series_column=None) in a file that has series_id: neither hint
    named = tmp_path / "named.csv"
    named.write_text(path.read_text().replace("id,", "series_id,", 1))
    with pytest.raises(DataError) as e:
        read_series_csv(named, series_column=None)
    assert "duplicate (series, time) rows" in str(e.value) and "no 'series_id'" not in str(e.value)


def test_a_numeric_id_column_is_named_not_averaged_silently(tmp_path: Path) -> None:
    """No ``series_id`` column and the ids in a column of whole numbers: it is read as a
    channel, and rows at one time differ in it, never repeating a value at one time. Refused
    with that column named (not the count channel, which has more values), or averaged with a
    warning that names it; channels of measured replicates raise no such hint."""
    path = tmp_path / "stores.csv"
    path.write_text(
        "sales,store,time\n" + "".join(f"{t + s},{s},{t}\n" for s in (1, 2, 3) for t in range(5))
    )
    with pytest.raises(
        DataError,
        match=r"stores.csv: no 'series_id' column, so the file was read as one series, but rows "
        r"at the same time '0' differ in column 'store' \(1 and 2, whole numbers never the same "
        r"at one time\) \(lines 2, 7\)\. If 'store' names the series, say so: "
        r"--data.init_args.series_column store",
    ):
        read_series_csv(path)
    with pytest.warns(UserWarning, match=r"differ in column 'store'.* They are averaged, as asked"):
        table = read_series_csv(path, duplicates="mean")
    np.testing.assert_allclose(table.values, np.c_[np.arange(5) + 2.0, np.full(5, 2.0)])
    table = read_series_csv(path, series_column="store")
    assert table.series_ids == ["1", "2", "3"] and table.channels == ["sales"]
    # replicates: a value repeats at one time, or values are not whole numbers, or too many
    for body in ("0,1.5,2\n0,2.5,2\n1,3,4\n1,3.1,4\n", "0,1,2\n0,1,3\n1,2,4\n1,3,5\n"):
        rep = tmp_path / "rep.csv"
        rep.write_text("time,y,z\n" + body)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            read_series_csv(rep, duplicates="mean")


def test_numeric_ids_of_series_whose_times_never_coincide_are_refused(tmp_path: Path) -> None:
    """No series column and the ids in a column of whole numbers, the series written one
    after another at times that never coincide: no repeated time gives the ids away, and
    the file was read as one series with ``station`` a channel, the series merged into one.
    Refused with the column, the lines where its runs start and both ways on."""
    rng = np.random.default_rng(0)
    rows = ["station,time,temp"]
    for s, n in ((1, 4), (2, 3), (3, 5)):
        times = np.sort(rng.uniform(0, 10, n)).round(3)  # overlapping, never equal
        rows += [f"{s},{t},{rng.normal():.3f}" for t in times]
    path = _write(tmp_path, "\n".join(rows) + "\n", "stations.csv")
    for series_column, read in (
        ("series_id", "no 'series_id' column, so the file was read as one series"),
        (None, "the file was read as one series \\(no series column given\\)"),
    ):
        with pytest.raises(
            CSVDataError,
            match=rf"stations.csv: {read}, but column 'station' reads like series ids, not a "
            r"value: its whole numbers \(1, 2, 3\) each fill one unbroken run of rows, .* "
            r"\(lines 2, 6, 9\)\. If 'station' names the series, say so: "
            r"--data.init_args.series_column station .* list the channels: "
            r"--data.init_args.channels '\[station, temp\]'",
        ):
            read_series_csv(path, series_column=series_column)
    table = read_series_csv(path, series_column="station")
    assert table.series_ids == ["1", "2", "3"] and table.channels == ["temp"]
    np.testing.assert_array_equal(np.diff(table.offsets), [4, 3, 5])
    kept = read_series_csv(path, channels=["station", "temp"])  # declared a value: kept
    assert kept.n_series == 1 and kept.channels == ["station", "temp"]


def test_whole_number_channels_of_one_series_are_still_read(tmp_path: Path) -> None:
    """Counts that vary in time, cumulative counts that stay level for a while (each value on
    one run of rows, in time order or newest first) and a regime that steps up: channels of
    one series, read as such without a word."""
    rng = np.random.default_rng(1)
    t = np.arange(12.0)
    frames = {
        "counts": rng.poisson(3.0, 12),
        "cumulative": np.repeat([1, 4, 9, 9 + 7, 30, 31], 2),
        "regime": np.repeat([1, 2, 3], 4),
    }
    for name, col in frames.items():
        for newest_first in (False, True):
            frame = pd.DataFrame({"time": t, name: col, "y": rng.normal(size=12)})
            frame = frame[::-1] if newest_first else frame
            path = tmp_path / f"{name}.csv"
            frame.to_csv(path, index=False)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                table = read_series_csv(path)
            assert table.n_series == 1 and table.channels == [name, "y"]
            np.testing.assert_array_equal(table.values[:, 0], col)
