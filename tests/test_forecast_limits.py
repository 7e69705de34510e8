"""What a forecast takes and writes: the memory budget of a call, its time grid and
horizon, date-time limits, written output, and the inputs it refuses."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from latentode.data.csv import read_series_csv
from latentode.data.errors import DataError
from latentode.data.prep import Segment
from latentode.data.table import SeriesTable, TimeEncoding
from latentode.evaluate import (
    evaluate,
)
from latentode.forecast import _future_grid, forecast, parse_horizon
from latentode.nn import LatentODE, LatentODEConfig


def test_forecast_refuses_a_series_whose_paths_exceed_the_budget(tmp_path: Path) -> None:
    """A grid too fine for memory (``--step 1s`` over 30 days is 2.6 million times) is refused
    before anything is drawn or built, naming the series, the count and what to change;
    ``importance`` counts the history's times too."""
    from latentode.forecast import future_times
    from latentode.predictive import draws_per_call

    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=2)).double()
    path = tmp_path / "daily.csv"
    rows = "".join(f"x,2024-01-{d:02d}T00:00:{d:02d},{d}\n" for d in range(1, 11))  # seconds
    path.write_text("series_id,time,v\n" + rows)
    table = read_series_csv(path)
    state = {"channels": ["v"], "normalisation": None, "time_scale": 1.0}
    second = 1 / (24 * 3600)  # the table's unit is the day
    with pytest.raises(DataError, match=r"series 'x': 2,592,000 forecast times .* 200 paths"):
        future_times(model, table, state, 30.0, second)
    fits = draws_per_call(1) // 200  # times that 200 paths may take
    future = future_times(model, table, state, fits * second, second)[1]
    assert len(future[0]) == fits
    with pytest.raises(DataError, match=r"fewer --n_samples, or on a machine .* --call_memory"):
        future_times(model, table, state, (fits + 1) * second, second)
    with pytest.raises(DataError, match="and the history for --importance") as refused:
        future_times(model, table, state, fits * second, second, on_history=True)
    assert "fewer --n_samples, or leave out --importance / --refine, or on" in str(refused.value)
    twice = future_times(model, table, state, 2 * fits * second, second, n_samples=100)[1]
    assert len(twice[0]) == 2 * fits  # half the paths, twice the times


def test_the_budget_of_a_call_shrinks_with_the_channels(tmp_path: Path) -> None:
    """One or two channels: 2^22 path-times, as the memory was measured; each channel more
    holds its decoded means and draws, so a file of 48 channels gets a quarter of that less a
    little, and a request one or two channels may make is refused for it, naming the count."""
    from latentode.forecast import future_times
    from latentode.predictive import CALL_BYTES, PATH_TIME_BYTES, draws_per_call

    assert draws_per_call(1) == draws_per_call(2) == 2**22
    budgets = [draws_per_call(d) for d in (2, 3, 16, 48)]
    assert budgets == sorted(budgets, reverse=True) and budgets[-1] == 766_471
    assert budgets[-1] * (PATH_TIME_BYTES[0] + 48 * PATH_TIME_BYTES[1]) <= CALL_BYTES
    D = 48
    model = LatentODE(LatentODEConfig(input_dim=D, latent_dim=2)).double()
    path = tmp_path / "wide.csv"
    values = ",".join(["1.0"] * D)
    rows = "".join(f"x,2024-01-{d:02d}T00:00:{d:02d},{values}\n" for d in range(1, 11))
    path.write_text("series_id,time," + ",".join(f"c{i}" for i in range(D)) + "\n" + rows)
    table = read_series_csv(path)
    state = {"channels": table.channels, "normalisation": None, "time_scale": 1.0}
    hour = 1 / 24
    n = draws_per_call(D) // 200 + 1  # one time more than 200 paths may take
    with pytest.raises(DataError, match=rf"{n:,} forecast times .*\(766,471 with its channels"):
        future_times(model, table, state, n * hour, hour)
    assert len(future_times(model, table, state, (n - 1) * hour, hour)[1][0]) == n - 1


def test_default_future_grid_stays_within_the_horizon() -> None:
    """The default step is the series' median spacing, but never past the horizon: a series
    observed every 20 years, forecast 5 ahead, gets one point at 5, not at 20."""
    sparse = Segment(0, 1950.0, np.array([1950.0, 1970.0, 1990.0]), np.zeros((3, 1)))
    np.testing.assert_allclose(_future_grid(sparse, 5.0, None), [1995.0])
    yearly = Segment(1, 2000.0, np.arange(2000.0, 2010.0), np.zeros((10, 1)))
    np.testing.assert_allclose(_future_grid(yearly, 3.0, None), [2010.0, 2011.0, 2012.0])
    np.testing.assert_allclose(_future_grid(yearly, 3.0, 1.5), [2010.5, 2012.0])


def test_forecast_times_past_what_a_date_time_holds_are_refused(tmp_path: Path) -> None:
    """datetime64[ns] ends in 2262: a horizon past it used to wrap the written times around
    to the 17th century; now the forecast is refused, naming the series, before the model
    runs (and `to_original` refuses such a time too)."""
    path = tmp_path / "dates.csv"
    path.write_text("series_id,time,x\na,2020-01-01,1\na,2020-01-03,2\n")
    table = read_series_csv(path)
    enc = table.encoding
    assert enc.format([enc.latest() - 0.25]) == ["2262-04-10"]
    assert enc.format([enc.latest()])[0] in ("2262-04-10", "2262-04-11")  # rounded, not wrapped
    with pytest.raises(DataError, match="is past the last date-time that can be written"):
        enc.to_original([enc.latest() + 1])
    with pytest.raises(DataError, match=r"series 'a': forecast times reach past 2262-04-1[01]"):
        forecast(None, table, {"channels": ["x"]}, parse_horizon("300Y", table), None)
    # 292 years after the origin an int64 offset in nanoseconds ends: forecasts from a
    # history in 1750 could reach 2262, but past 2042 they wrapped around (written 2042-04-11)
    old = TimeEncoding("datetime", "Y", "1750-01-01T00:00:00", "D")
    assert old.latest() == pytest.approx(292.27, abs=0.01)
    at = pd.Timestamp("1750-01-01") + pd.Timedelta(days=290.5 * 365.25)  # .125 of a day on
    assert old.format([290.5]) == [f"{at.round('D'):%Y-%m-%d}"] == ["2040-07-04"]
    with pytest.raises(DataError, match="295 Y after 1750-01-01T00:00:00 is past the last"):
        old.to_original([270.0, 295.0])
    late = TimeEncoding("datetime", "Y", "2200-01-01T00:00:00", "D")
    assert late.earliest() == pytest.approx(-292.27, abs=0.01)
    with pytest.raises(DataError, match="is before the first date-time that can be written"):
        late.to_original([-300.0])
    # an offset of more than 292 years is encoded without overflow
    days = [(date(y, 1, 1) - date(2200, 1, 1)).days for y in (1700, 2261)]
    np.testing.assert_allclose(
        late.encode(["1700-01-01", "2261-01-01"]), np.array(days) / 365.25, rtol=1e-14
    )


def test_parse_horizon_reads_spans_and_names_the_option(tmp_path: Path) -> None:
    """Spans in the data's time unit (days here, hours for an hourly axis); a bad one is
    refused naming the option that gave it."""
    dates = tmp_path / "dates.csv"
    dates.write_text("series_id,time,x\na,2020-01-01,1\na,2020-01-03,2\n")
    daily = read_series_csv(dates)
    assert parse_horizon("104W", daily) == 728.0
    assert parse_horizon("36h", daily) == 1.5 and parse_horizon("2.5", daily) == 2.5
    hourly = read_series_csv(dates, time_unit="h")
    assert parse_horizon("2D", hourly) == 48.0
    # a year is TIME_UNITS' Julian year (pandas refuses Y); "m" is refused, not read as minutes
    assert parse_horizon("2Y", daily) == 730.5 and parse_horizon("0.5 y", hourly) == 4383.0
    assert parse_horizon("90min", hourly) == 1.5
    with pytest.raises(DataError, match="'6m': 'm' could mean minutes or months; write 6min"):
        parse_horizon("6m", hourly)
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("series_id,time,x\na,1,1\na,2,2\n")
    for given, table, option, needle in (
        ("0", daily, "--step", "--step must be positive, got '0'"),
        ("-3D", daily, "--horizon", "--horizon must be positive"),
        ("inf", daily, "--horizon", "--horizon must be positive"),
        ("soon", daily, "--step", "--step 'soon' is not a number or a span"),
        ("5D", read_series_csv(numbers), "--horizon", "this data has numeric times"),
    ):
        with pytest.raises(DataError, match=needle):
            parse_horizon(given, table, option)


def test_a_forecast_is_written_a_few_series_at_a_time_as_its_whole_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ForecastResult.write_csv` in blocks of 7 rows writes the same bytes as the whole
    table's ``to_csv``; a shard (another process's series as None) writes only its own
    rows, and `merge_shards` of two shards' summaries is the whole result."""
    from latentode import forecast as fc

    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=2, latent_dim=2)).double()
    path = tmp_path / "two.csv"
    rows = [
        f"{s},2024-01-{d:02d},{d * (k + 1)},{-d}\n"
        for k, s in enumerate("abc")
        for d in (1, 3, 4, 6)
    ]
    path.write_text("series_id,time,u,v\n" + "".join(rows))
    table = read_series_csv(path)
    state = {"channels": ["u", "v"], "normalisation": None, "time_scale": 1.0}
    whole = forecast(model, table, state, 3.0, 1.0, n_samples=5, chunk=1)
    assert whole.n_rows == len(whole.frame) == 3 * 3 * 2
    whole.frame.to_csv(tmp_path / "frame.csv", index=False)
    monkeypatch.setattr(fc, "ROWS_PER_WRITE", 7)
    whole.write_csv(tmp_path / "blocks.csv")
    assert (tmp_path / "blocks.csv").read_bytes() == (tmp_path / "frame.csv").read_bytes()
    shards = [
        forecast(model, table, state, 3.0, 1.0, n_samples=5, chunk=1, shard=(r, 2)) for r in (0, 1)
    ]
    assert [s.n_rows for s in shards] == [12, 6] and list(shards[1].frame.series_id.unique()) == [
        "b"
    ]
    merged = fc.merge_shards(shards[1], [s.summary for s in shards])
    merged.write_csv(tmp_path / "merged.csv")
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "frame.csv").read_bytes()
    with pytest.raises(RuntimeError, match=r"no process forecast series \['b'\]"):
        fc.merge_shards(shards[0], [shards[0].summary])


def test_the_library_forecast_refuses_what_the_command_line_would_not_pass(
    tmp_path: Path,
) -> None:
    """`forecast` called from Python: a history read in another time unit than the fit's
    (days read as weeks compressed the model's time axis 7x without a word), a value a log
    channel cannot take (turned into a missing value), a horizon or step that is not positive
    (forecasts inside the history) or a step past the horizon (a time past it), explicit
    times for ids the table lacks; dates as text and spans as strings are read."""
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=2)).double()
    path = tmp_path / "days.csv"
    rows = "".join(f"{s},2024-01-{d:02d},{d + 1}\n" for s in "ab" for d in (1, 3, 4, 7))
    path.write_text("series_id,time,v\n" + rows)
    days = read_series_csv(path)
    enc = {"kind": "datetime", "unit": "D", "origin": "2024-01-01T00:00:00"}
    norm = {"channels": ["v"], "mean": [0.0], "std": [1.0], "transform": ["log"]}
    state = {"channels": ["v"], "normalisation": norm, "time_scale": 1.0, "time_encoding": enc}
    with pytest.raises(DataError, match=r"datetime times, unit 'W', but the checkpoint was fitted "
                       r"on datetime times, unit 'D'; read the file as the fit did"):  # fmt: skip
        forecast(model, read_series_csv(path, time_unit="W"), state, 1.0)
    negative = tmp_path / "negative.csv"
    negative.write_text(path.read_text().replace("b,2024-01-04,5", "b,2024-01-04,-5"))
    logged = r"series 'b': channel 'v' is modelled on a log scale, which takes values greater"
    with pytest.raises(DataError, match=logged + " than 0, but it has -5 at time 2024-01-04"):
        forecast(model, read_series_csv(negative), state, 1.0)
    for horizon, step, needle in (
        (-5.0, None, "horizon must be positive and finite, got -5.0"),
        (3.0, -1.0, "step must be positive and finite, got -1.0"),
        (3.0, 10.0, "the step (10, --step) is longer than the horizon (3, --horizon)"),
        (float("nan"), None, "horizon must be positive and finite, got nan"),
        (None, None, "horizon must be a number of the table's time units or a span like"),
    ):
        with pytest.raises(DataError, match=re.escape(needle)):
            forecast(model, days, state, horizon, step)
    with pytest.raises(DataError, match=r"times names series the table does not hold: \[0\]"):
        forecast(model, days, state, 1.0, times={0: [100.0]})
    with pytest.raises(DataError, match=r"chunk .* must be a whole number >= 1, got 0"):
        forecast(model, days, state, 1.0, chunk=0)
    spans = forecast(model, days, state, "2D", "1D", n_samples=4)
    assert list(spans.frame.time.unique()) == ["2024-01-08", "2024-01-09"]
    dated = {"a": ["2024-01-10", "2024-01-08"], "b": pd.to_datetime(["2024-01-09"])}
    at = forecast(model, days, state, 1.0, times=dated, n_samples=4).frame
    assert at.groupby("series_id").time.agg(list).to_dict() == {
        "a": ["2024-01-08", "2024-01-10"],
        "b": ["2024-01-09"],
    }


def test_a_series_table_refuses_arrays_that_do_not_fit_and_reads_positions_as_lists_do(
    tmp_path: Path,
) -> None:
    """Negative positions gave empty series, a boolean mask an ambiguity error, a t_end of
    another length was indexed silently; a hand-built table with unsorted times was accepted."""
    path = tmp_path / "t.csv"
    path.write_text(
        "series_id,time,v\n" + "".join(f"{s},{t},{t}\n" for s in "abc" for t in range(s == "b", 4))
    )
    table = read_series_csv(path)
    assert table.series(-1)[0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert table.select([-1, 0]).series_ids == ["c", "a"]
    assert table.select(np.array([False, True, True])).series_ids == ["b", "c"]
    assert table.select([-2]).lengths.tolist() == [3]
    with pytest.raises(DataError, match=r"series position 3 is out of range \(3 series\)"):
        table.series(3)
    with pytest.raises(DataError, match="one entry per series \\(3\\), got shape \\(2,\\)"):
        table.select(np.array([True, False]))
    with pytest.raises(DataError, match=r"t_end must be one time or one per series \(3\)"):
        table.before(np.arange(4.0))
    assert table.before([2.0, 9.0, 1.0]).lengths.tolist() == [2, 3, 1]
    with pytest.raises(DataError, match=r"values must be \[N, D\] = \[3, 1\], got shape \(3,\)"):
        SeriesTable(np.arange(3.0), np.zeros(3), np.array([0, 3]), ["x"], ["v"], table.encoding)
    with pytest.raises(DataError, match=r"series 'y': times must increase strictly within a "
                       r"series; row 3 has 0.5 after 2.0"):  # fmt: skip
        SeriesTable(
            np.array([0.0, 1.0, 2.0, 0.5]), np.zeros((4, 1)), np.array([0, 1, 4]),
            ["x", "y"], ["v"], table.encoding,
        )  # fmt: skip


def test_values_and_times_past_the_models_numbers_are_refused_naming_them(tmp_path: Path) -> None:
    """A value that normalised passes float32's 3.4e38 became infinite in the model, which
    refused it as 'series 0 has a non-finite observed value at time -0.5, feature 0; set its
    mask to 0' (a batch row, a shifted time); forecast times whose model time passes it, as
    'query times must be finite numbers'. Both are refused naming the file's series, channel,
    value and time, by `forecast` and `evaluate` (`latentode predict` and `latentode test`)."""
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=2))  # float32, as fitted
    path = tmp_path / "years.csv"
    path.write_text("series_id,time,v\na,2000,1\na,2001,2\nb,2000,3\nb,2002,-1e39\n")
    norm = {"channels": ["v"], "mean": [0.0], "std": [1.0]}
    state = {"channels": ["v"], "normalisation": norm, "time_scale": 2.0}
    huge = (
        f"{path}: series 'b': channel 'v' has -1e+39 at time 2002, too large for the model "
        "(scaled by the fit's normalisation it is past the 3.4e+38 its numbers hold; 1 such "
        "value(s)); correct it (the file's units?) or leave it empty."
    )
    for run in (forecast, evaluate):
        with pytest.raises(DataError) as stop:
            run(model, read_series_csv(path), state, 1.0)
        assert str(stop.value) == huge
    # 3e38 passes on its own, but not scaled by a std of 0.5
    path.write_text(path.read_text().replace("-1e39", "3e38"))
    assert len(forecast(model, read_series_csv(path), state, 1.0, n_samples=2).frame) == 2
    halved = {**state, "normalisation": {**norm, "std": [0.5]}}
    with pytest.raises(DataError, match=r"'v' has 3e\+38 at time 2002, too large for the model"):
        forecast(model, read_series_csv(path), halved, 1.0)
    path.write_text(path.read_text().replace("3e38", "4"))
    far = {"a": np.array([1e300]), "b": np.array([2003.0])}
    with pytest.raises(DataError) as stop:
        forecast(model, read_series_csv(path), state, 1.0, times=far)
    assert str(stop.value) == (
        "series 'a': forecast times (--times) reach 1e+300, too far past its history: the "
        "model's time axis, in steps of 2 time units, holds at most 3.4e+38 of them. Ask for "
        "times nearer its last observation 2001."
    )
