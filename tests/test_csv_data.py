"""CSV series: validation messages, time encodings, normalisation, windows, splits, data module."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from latentode.data.csv import CSVDataError, read_series_csv
from latentode.data.csv_module import CSVDataModule
from latentode.data.errors import DataError
from latentode.data.prep import (
    collate_segments,
    constant_within_series,
    denormalise,
    denormalise_std,
    fit_normalisation,
    holdout_bounds,
    make_windows,
    normalise,
    split_at,
    split_series,
    whole_series,
)
from latentode.data.table import SeriesTable, TimeEncoding

DATA = Path(__file__).resolve().parents[1] / "data"


def _write(tmp_path: Path, text: str, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------- bad input: one message each
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


# ---------------------------------------------------------------- reading rules
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


# ---------------------------------------------------------------- normalisation, windows, splits
def _table(n_series: int = 6, seed: int = 0) -> SeriesTable:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 12, n_series)
    times = np.concatenate([np.sort(rng.uniform(0, 10, n)) for n in lengths])
    values = rng.normal(3.0, 2.0, (len(times), 2))
    values[rng.random(values.shape) < 0.2] = np.nan
    values[:, 0] = np.where(np.isnan(values).all(axis=1), 1.0, values[:, 0])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = [f"s{i}" for i in range(n_series)]
    return SeriesTable(times, values, offsets, ids, ["u", "v"], TimeEncoding())


def test_normalisation_fits_training_only_and_inverts() -> None:
    table = _table()
    train, _, _ = split_series(table.n_series, 0.2, 0.2, seed=1)
    norm = fit_normalisation(table.select(train))
    sub = table.select(train).values
    np.testing.assert_allclose(norm["mean"], np.nanmean(sub, axis=0), rtol=1e-12)
    np.testing.assert_allclose(norm["std"], np.nanstd(sub, axis=0), rtol=1e-12)
    assert norm["mean"] != fit_normalisation(table)["mean"]
    assert all(type(v) is float for v in norm["mean"] + norm["std"])
    z = normalise(table.values, norm)
    np.testing.assert_allclose(np.nanmean(normalise(sub, norm), axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(denormalise(z, norm), table.values, rtol=1e-14, atol=1e-14)
    zt = torch.from_numpy(z)
    np.testing.assert_allclose(denormalise(zt, norm).numpy(), table.values, rtol=1e-14)
    s = denormalise_std(torch.ones(2, dtype=torch.float64), norm)
    np.testing.assert_allclose(s.numpy(), norm["std"])
    const = SeriesTable(
        np.arange(3.0), np.ones((3, 1)), np.array([0, 3]), ["c"], ["k"], TimeEncoding()
    )
    assert fit_normalisation(const)["std"] == [1.0]


def test_windows_cover_with_length_and_stride() -> None:
    t = np.arange(0.0, 50.0, 0.5)
    table = SeriesTable(t, np.sin(t)[:, None], np.array([0, len(t)]), ["x"], ["y"], TimeEncoding())
    wins = make_windows(table, window=10.0, stride=3.0)
    starts = np.array([w.t0 for w in wins])
    np.testing.assert_allclose(np.diff(starts[:-1]), 3.0)
    assert starts[-1] == pytest.approx(49.5 - 10.0)
    assert all(w.times[-1] - w.t0 <= 10.0 for w in wins)
    assert all(len(w.times) == 21 for w in wins)  # 10 units at 0.5 spacing, both ends
    covered = np.unique(np.concatenate([w.times for w in wins]))
    np.testing.assert_array_equal(covered, t)
    short = make_windows(table, window=100.0, stride=3.0)
    assert len(short) == 1 and len(short[0].times) == len(t)


def test_series_splits_seeded_and_disjoint() -> None:
    a = split_series(50, 0.1, 0.2, seed=3)
    assert a == split_series(50, 0.1, 0.2, seed=3) != split_series(50, 0.1, 0.2, seed=4)
    tr, va, te = (set(p) for p in a)
    assert (len(tr), len(va), len(te)) == (35, 5, 10)
    assert tr | va | te == set(range(50)) and not (tr & va or tr & te or va & te)
    assert holdout_bounds(0.0, 10.0, 2.0) == [6.0, 8.0]
    assert holdout_bounds(0.0, 10.0, 0.25) == [5.0, 7.5]


def test_split_at_conditions_before_and_scores_after() -> None:
    table = _table()
    segs = whole_series(table)
    batch = collate_segments(segs, fit_normalisation(table), dtype=torch.float64)
    assert float(batch.times[0]) == 0.0 and batch.batch_size == table.n_series
    t_split = torch.full((batch.batch_size,), 2.0, dtype=torch.float64)
    for score in ("future", "all"):
        split = split_at(batch, t_split, score=score)
        before = (batch.times < 2.0)[None, :, None]
        assert bool((split.observed.mask[:, ~before[0, :, 0]] == 0).all())
        torch.testing.assert_close(split.observed.mask + split.heldout_mask, batch.mask)
    assert split_at(batch, t_split, "future").target.n_observed == int(split.heldout_mask.sum())
    # A float32 grid time equal to its float64 split time is forecast, not conditioned on:
    # (2001 - 1990) / 5.1 rounds down in float32 and once compared below the split.
    seg = whole_series(table)[0]
    t = np.array([1990.0, 1995.0, 2001.0, 2002.0])
    one = type(seg)(0, 1990.0, t, np.ones((4, table.n_channels)))
    small = collate_segments([one], time_scale=5.1)  # float32
    split = split_at(small, torch.tensor([(2001.0 - 1990.0) / 5.1], dtype=torch.float64))
    assert split.observed.point_mask[0].tolist() == [True, True, False, False]
    assert split.heldout_mask[0].any(-1).tolist() == [False, False, True, True]


# ---------------------------------------------------------------- shipped data and the module
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


def test_data_module_single_series() -> None:
    dm = CSVDataModule(
        str(DATA / "co2_mauna_loa_weekly.csv"),
        time_unit="Y",
        window=4.0,
        stride=1.0,
        holdout=2.0,
        batch_size=8,
    )
    dm.setup()
    assert dm.channels == ["co2"] and dm.time_encoding["unit"] == "Y"
    train_end = holdout_bounds(0.0, float(dm._ready().times[-1]), 2.0)[0]
    assert all(g.times[-1] < train_end for g in dm.train_segments)
    co2 = dm._ready().values[dm._ready().times < train_end, 0]
    assert dm.normalisation["mean"][0] == pytest.approx(np.nanmean(co2))
    split = next(iter(dm.train_dataloader()))
    assert split.observed.values.shape == split.target.values.shape == (8, 209, 1)
    assert float(split.target.values.abs().max()) < 5  # normalised
    val = next(iter(dm.val_dataloader()))
    assert val.observed.batch_size == 1 and 95 < int(val.target.mask.sum()) <= 105
    last_seen = float(val.observed.times[val.observed.point_mask[0]][-1])
    assert last_seen < float(val.target.times[val.target.point_mask[0]][0])


def test_data_module_many_series() -> None:
    dm = CSVDataModule(str(DATA / "fertility_worldbank.csv"), holdout=10.0, batch_size=16, seed=2)
    dm.setup()
    ids = lambda segs: {g.series for g in segs}  # noqa: E731
    tr, va, te = ids(dm.train_segments), ids(dm.val_segments), ids(dm.test_segments)
    assert len(tr) == 168 and len(va) + len(te) > 35 and not (tr & va or tr & te or va & te)
    split = next(iter(dm.train_dataloader()))
    B, T, D = split.target.values.shape
    assert (B, D) == (16, 1) and T <= 54 and split.observed.times.shape == (T,)
    assert bool((split.observed.mask <= split.target.mask).all())
    test = next(iter(dm.test_dataloader()))
    assert int(test.target.mask.sum()) <= 11 * test.target.batch_size
    assert dm.data_state()["time_encoding"]["kind"] == "numeric"


def _few_series_csv(tmp_path: Path) -> Path:
    """Three yearly series over different spans: a 1960-2009, b 1970-2009, c 1980-1999."""
    rows = ["series_id,time,x"]
    for sid, (lo, hi) in {"a": (1960, 2010), "b": (1970, 2010), "c": (1980, 2000)}.items():
        rows += [f"{sid},{t},{np.sin(t / 3) + (sid == 'b')}" for t in range(lo, hi)]
    return _write(tmp_path, "\n".join(rows) + "\n", "few.csv")


def test_a_time_on_the_test_boundary_is_scored_in_the_test_block_only(tmp_path: Path) -> None:
    """Whole-year holdouts on whole-year times put an observation exactly at ``t_test``: it
    was a validation target and a test target both (one test value per series leaked into
    the choice of checkpoint and the calibration). train < t_val <= val < t_test <= test."""
    dm = CSVDataModule(str(_few_series_csv(tmp_path)), holdout=5.0, batch_size=4)
    dm.setup()
    windows = dm.data_state()["val_windows"]
    for val, test in zip(dm.val_segments, dm.test_segments, strict=True):
        t_val, t_test = windows["abc"[val.series]]
        assert t_test == float(int(t_test))  # on an observation
        scored_val = val.times[val.times >= val.t_split]
        scored_test = test.times[test.times >= test.t_split]
        np.testing.assert_array_equal(scored_val, np.arange(t_val, t_test))  # 5 years
        assert scored_test[0] == t_test and not set(scored_val) & set(scored_test)


def test_a_channel_constant_in_training_is_warned_about(tmp_path: Path) -> None:
    """k is 5 wherever the training part has it (its one other value lies in a held-out
    block), so the warning names k, and not x."""
    frame = pd.read_csv(_few_series_csv(tmp_path)).assign(k=5.0)
    frame.loc[frame.index[-1], "k"] = 6.0  # c's last row: in its test block
    path = tmp_path / "with_k.csv"
    frame.to_csv(path, index=False)
    dm = CSVDataModule(str(path), holdout=0.1, batch_size=4)
    with pytest.warns(UserWarning, match=r"channel\(s\) \['k'\] hold one value") as caught:
        dm.setup()
    assert len([w for w in caught if "hold one value" in str(w.message)]) == 1
    span = dm.data_state()["value_range"]
    assert (span["min"][1], span["max"][1]) == (5.0, 5.0) and span["min"][0] < span["max"][0]
    assert frame["k"].max() == 6.0  # the file's k does vary, outside the training part


def test_few_series_are_held_out_in_time(tmp_path: Path) -> None:
    """With three series a tenth of them rounds to none, so ``split="auto"`` holds out the
    last two ``holdout`` blocks of every series instead: validation then test, each series
    with its own blocks, training on what comes before them."""
    path = _few_series_csv(tmp_path)
    dm = CSVDataModule(str(path), holdout=0.1, batch_size=4)
    assert (dm.split_mode(3), dm.split_mode(6), dm.split_mode(5)) == ("time", "series", "time")
    dm.setup()
    state = dm.data_state()
    spans = {"a": (1960.0, 2009.0), "b": (1970.0, 2009.0), "c": (1980.0, 1999.0)}
    for sid, (lo, hi) in spans.items():
        h = 0.1 * (hi - lo)
        np.testing.assert_allclose(state["val_windows"][sid], [hi - 2 * h, hi - h])
    assert state["test_series"] == ["a", "b", "c"] and state["val_series"] is None
    by_series = {g.series: g for g in dm.train_segments}
    assert sorted(by_series) == [0, 1, 2]  # whole series, each cut before its own block
    seen = np.concatenate([g.values for g in dm.train_segments])  # the training values only
    assert state["value_range"] == {"min": [seen.min()], "max": [seen.max()]}
    assert len(seen) < len(dm.table.values)
    for s, sid in enumerate("abc"):
        t_val, t_test = state["val_windows"][sid]
        train, val, test = by_series[s], dm.val_segments[s], dm.test_segments[s]
        assert train.times[-1] < t_val <= train.times[-1] + 1
        assert val.series == test.series == s and val.t_split == t_val and test.t_split == t_test
        np.testing.assert_array_equal(val.times[val.times >= t_val], np.arange(
            np.ceil(t_val), np.floor(t_test) + 1))  # fmt: skip
        assert test.times[-1] == spans[sid][1] and val.times[0] == spans[sid][0]
    assert next(iter(dm.val_dataloader())).observed.batch_size == 3
    # the whole-series split of the same file has no validation series to offer
    by_series_split = CSVDataModule(str(path), holdout=0.1, split="series")
    by_series_split.setup()
    with pytest.raises(DataError, match="no val series"):
        by_series_split.val_dataloader()
    # a series too short for two blocks of an absolute holdout trains whole, and it is said
    long = CSVDataModule(str(path), holdout=12.0)
    with pytest.warns(UserWarning, match=r"1 series too short .* training only: 'c'"):
        long.setup()
    assert [g.series for g in long.val_segments] == [0, 1] == [g.series for g in long.test_segments]
    assert sorted(long.data_state()["val_windows"]) == ["a", "b"]
    assert long.data_state()["test_series"] == ["a", "b"]
    (c,) = [g for g in long.train_segments if g.series == 2]
    assert (c.times[0], c.times[-1]) == (1980.0, 1999.0)
    with pytest.raises(DataError, match="no series spans two holdout blocks of 30 time units"):
        CSVDataModule(str(path), holdout=30.0).setup()
    with pytest.raises(DataError, match="split must be"):
        CSVDataModule(str(path), split="rows")  # type: ignore[arg-type]


def test_a_series_too_short_to_train_on_says_how_many_times_it_holds(tmp_path: Path) -> None:
    """Three observations: the validation and test blocks leave one before them, so there is
    nothing to train on; the message counts what the file holds and says what to change."""
    path = tmp_path / "short.csv"
    path.write_text("series_id,time,y\na,1,1.0\na,2,2.0\na,3,3.0\n")
    with pytest.raises(DataError, match=r"short.csv: no training segment .*\(1 series, 3 "
                       r"observed times in all\).* smaller holdout"):  # fmt: skip
        CSVDataModule(str(path)).setup()


def test_the_data_module_says_what_a_fit_reads_and_how_it_holds_series_out(
    tmp_path: Path,
) -> None:
    """`describe`, printed by ``latentode fit``: series, observed times, the channels, the
    columns left out (here a text column), and the split, for each kind of split."""
    rows = ["series_id,time,country,y"]
    rows += [f"{s},{t},Land {s},{t % 7}" for s in "abc" for t in range(40)]
    rows += ["d,0,Land d,1", "d,1,Land d,2"]  # too short for two blocks of 12
    path = tmp_path / "four.csv"
    path.write_text("\n".join(rows) + "\n")
    dm = CSVDataModule(str(path), holdout=12.0)
    with pytest.warns(UserWarning, match="too short"):
        dm.setup()
    assert dm.describe() == (
        f"{path}: 4 series, 122 observed times; channels modelled: 'y'; columns not read: "
        "'country'; a validation and a test block, each 12 time units, held out at the end "
        "of 3 series; trained on the part before them and on 1 series too short for the "
        "blocks, whole."
    )
    one = tmp_path / "one.csv"
    one.write_text("time,y\n" + "".join(f"{t},{t % 5}\n" for t in range(50)))
    dm = CSVDataModule(str(one))
    dm.setup()
    assert dm.describe().endswith(
        "50 observed times; channels modelled: 'y'; a validation and a test block, each 10% "
        "of its span, held out at the end of the series; trained on the part before them."
    )
    dm = CSVDataModule(str(DATA / "fertility_worldbank.csv"), holdout=10.0, seed=2)
    dm.setup()
    assert dm.describe().endswith(
        "210 series, 10284 observed times; channels modelled: 'fertility'; 168 series to "
        "train on, 21 for validation and 21 for testing (each held out whole; their last "
        "part is forecast)."
    )


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


def test_table_before_cuts_each_series_at_its_own_time() -> None:
    table = _table(3)
    cuts = np.array([5.0, -1.0, 20.0])  # series 1 is left empty and dropped
    before = table.before(cuts)
    assert before.series_ids == ["s0", "s2"]
    for new, old in ((0, 0), (1, 2)):
        t, x = table.series(old)
        np.testing.assert_array_equal(before.series(new)[0], t[t < cuts[old]])
        np.testing.assert_array_equal(before.series(new)[1], x[t < cuts[old]])
    np.testing.assert_array_equal(table.before(5.0).times, table.times[table.times < 5.0])


def test_data_module_aligns_batches_at_the_last_conditioning_time_for_anchor_last() -> None:
    """``align_to("last")``: the same rows and draws as the default alignment, each row's
    times shifted so that its last conditioning observation sits at 0."""

    def batches(anchor: str) -> list:
        dm = CSVDataModule(str(DATA / "fertility_worldbank.csv"), holdout=10.0, batch_size=16)
        dm.setup()
        dm.align_to(anchor)  # type: ignore[arg-type]
        return [next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))]

    for start, end in zip(batches("first"), batches("last"), strict=True):
        assert start.observed.batch_size == end.observed.batch_size == 16
        for b in range(16):
            seen_s, seen_e = start.observed.point_mask[b], end.observed.point_mask[b]
            ts, te = start.observed.times[seen_s], end.observed.times[seen_e]
            assert float(te[-1]) == 0.0  # the anchor of every row
            torch.testing.assert_close(te, ts - ts[-1])
            torch.testing.assert_close(
                end.observed.values[b][seen_e], start.observed.values[b][seen_s]
            )
            fut_s, fut_e = start.heldout_mask[b].any(-1), end.heldout_mask[b].any(-1)
            torch.testing.assert_close(end.target.times[fut_e], start.target.times[fut_s] - ts[-1])
            assert bool((end.target.times[fut_e] > 0).all())
    dm = CSVDataModule(str(DATA / "fertility_worldbank.csv"))
    with pytest.raises(DataError, match="anchor must be 'first' or 'last'"):
        dm.align_to("middle")  # type: ignore[arg-type]


def test_train_keep_thins_the_conditioned_times_and_scores_the_dropped_ones() -> None:
    """``train_keep=0.4``: the same segments and cuts as ``train_keep=1``; each row keeps a
    subset of its conditioned times (on average 0.7 of them: rates uniform on [0.4, 1]),
    always its last one (the anchor at 0), and the dropped times join the held-out mask
    while the target keeps everything. Validation batches are not thinned."""

    def first_batches(keep: float) -> tuple:
        dm = CSVDataModule(
            str(DATA / "fertility_worldbank.csv"), holdout=10.0, batch_size=64, train_keep=keep
        )
        dm.setup()
        dm.align_to("last")
        return next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))

    (full, val_full), (thin, val_thin) = first_batches(1.0), first_batches(0.4)
    torch.testing.assert_close(thin.target.values, full.target.values)
    torch.testing.assert_close(thin.target.mask, full.target.mask)
    assert bool((thin.observed.mask <= full.observed.mask).all())
    seen_full, seen_thin = full.observed.point_mask, thin.observed.point_mask  # (B, T)
    at_zero = thin.observed.times == 0.0
    assert bool((seen_thin[:, at_zero] & seen_full[:, at_zero]).all())  # the last is kept
    share = seen_thin.sum(1).double() / seen_full.sum(1).double()  # (64,)
    assert 0.6 < float(share.mean()) < 0.8 and float(share.min()) >= 0.3
    dropped = full.observed.mask * (1.0 - thin.observed.mask)
    torch.testing.assert_close(thin.heldout_mask, full.heldout_mask + dropped)
    torch.testing.assert_close(val_thin.observed.mask, val_full.observed.mask)
    with pytest.raises(DataError, match="0 < train_keep <= 1"):
        CSVDataModule(str(DATA / "fertility_worldbank.csv"), train_keep=0.0)


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


def test_values_too_large_to_normalise_and_a_holdout_longer_than_the_series_are_named(
    tmp_path: Path,
) -> None:
    """1e300 made the spread overflow to inf, and the model then met inf values and blamed a
    series by index; a holdout past every validation series' start said to raise it."""
    rows = "".join(f"s{s},{t},{1e300 if (s, t) == (3, 4) else t * 0.1 + s}\n" for s in range(10)
                   for t in range(8))  # fmt: skip
    path = _write(tmp_path, "series_id,time,a\n" + rows)
    with pytest.raises(DataError, match=r"channel 'a': its values reach 1e\+300 in magnitude"):
        CSVDataModule(str(path)).setup()
    fine = _write(tmp_path, "series_id,time,a\n" + rows.replace("1e+300", "1"), "fine.csv")
    with pytest.raises(DataError, match=r"the val series '\w+' \(span 7 time units\) has no "
                       r"observation before its held-out last 1000 time units"):  # fmt: skip
        CSVDataModule(str(fine), holdout=1000.0, val_fraction=0.1, test_fraction=0.1).setup()
