"""Two `CSVDataModule` settings read in a way a user may not expect are said at setup: a
``stride`` that no window uses (several series, no ``window``: the series are trained on
whole) warns, and a ``holdout`` below 1, a fraction of each series' time span, is logged with
the lengths it came to in the file's time units (`latentode.data.csv_checks`)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from latentode.data.csv_module import CSVDataModule
from latentode.data.errors import DataError

RANK_ZERO = "pytorch_lightning.utilities.rank_zero"  # Lightning's info log


def _many(tmp_path: Path, n: int = 10) -> str:
    """``n`` numeric series ``a``, ``b``, ...: series ``k`` at times 0 .. 39 + 3k (span
    39 + 3k time units)."""
    rows = ["series_id,time,v"]
    for k in range(n):
        rows += [f"{chr(97 + k)},{t},{(t * (k + 1)) % 7}" for t in range(40 + 3 * k)]
    path = tmp_path / "many.csv"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _one(tmp_path: Path) -> str:
    """One numeric series at times 0 .. 99 (span 99 time units)."""
    path = tmp_path / "one.csv"
    path.write_text("time,v\n" + "".join(f"{t},{t % 7}\n" for t in range(100)))
    return str(path)


def _stride_messages(data: CSVDataModule) -> list[str]:
    """The warnings ``data.setup()`` gives that say a stride is not used."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        data.setup()
    return [str(w.message) for w in seen if "is not used" in str(w.message)]


def _notes(caplog: pytest.LogCaptureFixture, data: CSVDataModule) -> list[str]:
    """The holdout notes ``data.setup()`` logs."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=RANK_ZERO):
        data.setup()
    return [r.getMessage() for r in caplog.records if "holdout" in r.getMessage()]


def test_a_stride_without_a_window_for_several_series_warns_that_it_is_not_used(
    tmp_path: Path,
) -> None:
    """Several series and no window: the training series are used whole in both split kinds,
    so a stride given was dropped without a word; now it warns, naming the option and what
    to do. Nothing is said for a stride left out, a stride with a window, or one series
    (whose default window of three holdout blocks is cut every stride)."""
    path = _many(tmp_path)
    fix = (
        "training series is used whole, not cut into windows. Set a window "
        "(--data.init_args.window, in time units) to train on windows that long, one every "
        "stride, or drop the stride."
    )
    series = _stride_messages(CSVDataModule(path, stride=0.5, split="series", holdout=4.0))
    assert series == [
        f"{path}: stride 0.5 (--data.init_args.stride; stride in the config) is not used: no "
        f"window is set, so each of the 8 {fix}"
    ]
    in_time = _stride_messages(CSVDataModule(path, stride=2.0, split="time", holdout=4.0))
    assert in_time == [
        f"{path}: stride 2 (--data.init_args.stride; stride in the config) is not used: no "
        f"window is set, so each of the 10 {fix}"
    ]
    for split in ("series", "time"):
        assert _stride_messages(CSVDataModule(path, split=split, holdout=4.0)) == []
        windows = CSVDataModule(path, window=10.0, stride=2.0, split=split, holdout=4.0)
        assert _stride_messages(windows) == []
    one = CSVDataModule(_one(tmp_path), stride=2.0, holdout=4.0)  # default window: 12
    assert _stride_messages(one) == []
    assert len(one.train_segments) == 40  # windows of 12 from 0, 2, ..., 78 (times 0 .. 90)


def test_a_fractional_holdout_is_logged_with_its_lengths_for_one_series(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One series of numeric times: holdout 0.1 is two blocks of 9.9 time units; a holdout
    of 1 or more is a length as given and logs nothing."""
    path = _one(tmp_path)
    assert _notes(caplog, CSVDataModule(path, holdout=0.1)) == [
        f"latentode: {path}: holdout 0.1 is below 1, so it is read as a fraction of the time "
        "span: the last two blocks of the series, each 10% of its time span (here 9.9 time "
        "units), are held out: the first for validation, the second for test. A holdout of 1 "
        "or more is a length in time units."
    ]
    assert _notes(caplog, CSVDataModule(path, holdout=4.0)) == []
    assert _notes(caplog, CSVDataModule(path, holdout=1.0)) == []


def test_a_fractional_holdout_is_logged_by_series_for_several_series(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Several series: the least and greatest length over the series held out, in time
    (every series: spans 39 to 66 time units) or whole (the validation and test series)."""
    path = _many(tmp_path)
    tail = "A holdout of 1 or more is a length in time units."
    in_time = CSVDataModule(path, holdout=0.2, split="time")
    assert _notes(caplog, in_time) == [
        f"latentode: {path}: holdout 0.2 is below 1, so it is read as a fraction of the time "
        "span: each of the 10 series held out in time holds out its last two blocks, each 20% "
        "of its own time span (here 7.8 to 13.2 time units, by series): the first for "
        f"validation, the second for test. {tail}"
    ]
    series = CSVDataModule(path, holdout=0.2, split="series")  # seed 0: e and g held out
    assert _notes(caplog, series) == [
        f"latentode: {path}: holdout 0.2 is below 1, so it is read as a fraction of the time "
        "span: each of the 2 validation and test series is forecast over the last 20% of its "
        f"own time span (here 10.2 to 11.4 time units, by series). {tail}"
    ]
    assert (series.val_series, series.test_series) == (["g"], ["e"])  # spans 57 and 51
    assert _notes(caplog, CSVDataModule(path, holdout=3.0, split="series")) == []
    none_held = CSVDataModule(
        path, holdout=0.2, split="series", val_fraction=0.01, test_fraction=0.01
    )
    assert _notes(caplog, none_held) == []  # no series to hold out: nothing to resolve


def test_a_fractional_holdout_on_date_times_is_logged_in_the_time_unit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Monthly date-times over 40 years read in years: holdout 0.1 is two blocks of 3.99
    years, not 0.1 years; the note says which smaller time_unit gives 0.1 years as a length
    (weeks; days for 0.01 years)."""
    path = tmp_path / "monthly.csv"
    rows = [f"{1950 + t // 12}-{t % 12 + 1:02d}-01,{t % 7}" for t in range(480)]
    path.write_text("time,v\n" + "\n".join(rows) + "\n")
    assert _notes(caplog, CSVDataModule(str(path), time_unit="Y", holdout=0.1)) == [
        f"latentode: {path}: holdout 0.1 is below 1, so it is read as a fraction of the time "
        "span: the last two blocks of the series, each 10% of its time span (here 3.99 "
        "years), are held out: the first for validation, the second for test. A holdout of 1 "
        "or more is a length in years, so a length below 1 cannot be given as one: to hold "
        "out 0.1 years, choose a smaller time unit, --data.init_args.time_unit W: 0.1 years "
        "is 5.218 weeks, so give holdout 5.218 (window, stride and history are then in weeks "
        "too)."
    ]
    [note] = _notes(caplog, CSVDataModule(str(path), time_unit="Y", holdout=0.01))
    assert note.endswith(
        "to hold out 0.01 years, choose a smaller time unit, --data.init_args.time_unit D: "
        "0.01 years is 3.652 days, so give holdout 3.652 (window, stride and history are "
        "then in days too)."
    )
    assert _notes(caplog, CSVDataModule(str(path), time_unit="Y", holdout=2.0)) == []


def test_a_fractional_holdout_too_large_for_two_blocks_in_time_says_it_is_a_fraction(
    tmp_path: Path,
) -> None:
    """Held out in time, holdout 0.6 was refused as 'two holdout blocks of 0.6 time units',
    a length it never was: two blocks of 60% of a span leave no time before them."""
    path = _many(tmp_path, n=3)
    with pytest.raises(DataError) as err:
        CSVDataModule(path, holdout=0.6, split="time").setup()
    assert str(err.value) == (
        f"{path}: no series spans two holdout blocks of 60% of each series' time span "
        "(validation and test) and some time before them; use a smaller holdout (holdout 0.6 "
        "is below 1, so a fraction: two blocks of it leave time before them only below 0.5)."
    )
