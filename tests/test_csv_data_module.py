"""The CSV data module: splits by series and in time, held-out blocks, what it warns about
and refuses, and the description a fit prints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from csv_data_helpers import DATA, _write

from latentode.data.csv_module import CSVDataModule
from latentode.data.errors import DataError
from latentode.data.prep import (
    holdout_bounds,
)


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
        "train on, 21 for validation and 21 for testing (each held out whole and forecast "
        "over its last 10 time units)."
    )


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
