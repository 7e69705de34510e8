"""Three follow-ups (helper-47): the holdout messages of a date-time file name its time unit
("2 years", not "2 time units"); the one-series "no training time" error names the file, the
unit and the series' first and last date-times instead of float offsets from the first date;
`IrregularBatch.to` names a narrowing cast that turns an observed value or a time into
infinity, where the constructor used to report a non-finite value without the cause."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from latentode.data.csv_module import CSVDataModule
from latentode.data.errors import DataError
from latentode.data.irregular_batch import IrregularBatch


def _yearly(tmp_path: Path, spans: dict[str, int], name: str, dates: bool = True) -> str:
    """A CSV of series observed once a year, ``spans[s]`` years each from 2000 (ISO dates on
    1 January, or the year as a number)."""
    rows = ["series_id,time,y"]
    for s, n in spans.items():
        rows += [
            f"{s},{f'{2000 + k}-01-01' if dates else 2000 + k},{k % 3}.5" for k in range(n + 1)
        ]
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_held_out_in_time_a_date_time_holdout_is_named_in_years(tmp_path: Path) -> None:
    """divide_in_time said 'two holdout blocks of 30 time units' of a file in years."""
    path = _yearly(tmp_path, {"a": 9, "b": 9, "c": 1}, "in_time.csv")
    with pytest.raises(DataError) as err:
        CSVDataModule(path, time_unit="Y", holdout=30.0, split="time").setup()
    assert str(err.value) == (
        f"{path}: no series spans two holdout blocks of 30 years (validation and test) and "
        "some time before them; use a smaller holdout."
    )
    with pytest.warns(UserWarning) as caught:
        CSVDataModule(path, time_unit="Y", holdout=2.0, split="time").setup()
    short = [str(w.message) for w in caught if "too short" in str(w.message)]
    assert short == [
        f"{path}: 1 series too short for two holdout blocks of 2 years are used for "
        "training only: 'c'."
    ]
    one = CSVDataModule(path, time_unit="Y", holdout=1.0, split="time")
    with pytest.warns(UserWarning, match="two holdout blocks of 1 year are used"):
        one.setup()  # c spans a year: too short for two blocks and time before them


def test_held_out_whole_a_date_time_series_too_short_is_named_in_years(tmp_path: Path) -> None:
    """_lost_holdout said '(span 3.001 time units) ... its held-out last 5 time units'."""
    spans = {f"s{i}": 3 for i in range(10)}
    path = _yearly(tmp_path, spans, "whole.csv")
    with pytest.raises(DataError) as err:
        CSVDataModule(path, time_unit="Y", holdout=5.0, split="series").setup()
    msg = str(err.value)
    assert msg.startswith(f"{path}: the val series 's")
    assert msg.endswith(
        "(span 3.001 years) has no observation before its held-out last 5 years, or none "
        "in it, so nothing is left to forecast from; use a smaller holdout."
    )
    numeric = _yearly(tmp_path, spans, "whole_numeric.csv", dates=False)
    with pytest.raises(DataError) as err:
        CSVDataModule(numeric, holdout=5.0, split="series").setup()
    assert str(err.value).endswith(
        "(span 3 time units) has no observation before its held-out last 5 time units, or "
        "none in it, so nothing is left to forecast from; use a smaller holdout."
    )


def test_one_series_without_training_time_names_the_file_and_its_dates(tmp_path: Path) -> None:
    """`latentode fit --config configs/co2.yaml --data.init_args.holdout 30` ended with
    'holdout = 30.0 (2 blocks of 30 time units) leaves no training time in [0, 43.7536]':
    no file, no unit, and float offsets from the first date."""
    path = _yearly(tmp_path, {"co2": 9}, "one.csv")
    with pytest.raises(DataError) as err:
        CSVDataModule(path, time_unit="Y", holdout=5.0).setup()
    assert str(err.value) == (
        f"holdout = 5.0 (2 blocks of 5 years) leaves no training time in the series of {path}, "
        "which spans 2000-01-01 to 2009-01-01 (9.002 years); use a smaller holdout."
    )
    with pytest.raises(DataError) as err:  # a fraction: said so first, as before
        CSVDataModule(path, time_unit="Y", holdout=0.6).setup()
    assert str(err.value) == (
        "holdout 0.6 is below 1, so a fraction of the span: 2 blocks of 5.40123 years leave "
        f"no training time in the series of {path}, which spans 2000-01-01 to 2009-01-01 "
        "(9.002 years); use a smaller holdout."
    )
    numeric = _yearly(tmp_path, {"co2": 9}, "one_numeric.csv", dates=False)
    with pytest.raises(DataError) as err:
        CSVDataModule(numeric, holdout=5.0).setup()
    assert str(err.value) == (
        "holdout = 5.0 (2 blocks of 5 time units) leaves no training time in the series of "
        f"{numeric}, which spans [2000, 2009] (9 time units); use a smaller holdout."
    )


def _batch(values: list[float], mask: list[float], times: list[float]) -> IrregularBatch:
    """One series of one feature in float64."""
    x = torch.tensor(values, dtype=torch.float64).reshape(1, -1, 1)
    m = torch.tensor(mask, dtype=torch.float64).reshape(1, -1, 1)
    return IrregularBatch(torch.tensor(times, dtype=torch.float64), x, m)


def test_a_cast_that_overflows_an_observed_value_names_the_cast() -> None:
    """to(float32) of an observed 1e39 failed in the constructor with 'series 0 has a
    non-finite observed value at time 0.5, feature 0; set its mask to 0 or fix the value.'
    A huge value under a 0 mask does not stop the cast."""
    batch = _batch([1.0, 1e39, 2.0], [1.0, 1.0, 1.0], [0.0, 0.5, 1.0])
    with pytest.raises(DataError) as err:
        batch.to(torch.float32)
    assert str(err.value) == (
        "IrregularBatch.to(torch.float32) casts the values from torch.float64 to "
        "torch.float32, whose largest number is 3.403e+38, and series 0's observed value "
        "1e+39 at time 0.5, feature 0, would become infinite. Rescale the values (normalise "
        "them, e.g. with latentode.data.prep.normalise, or use a larger unit), or keep the "
        "batch in torch.float64."
    )
    with pytest.raises(DataError, match=r"^IrregularBatch.to\(torch.float16\) casts the values"):
        _batch([7e4], [1.0], [0.0]).to(dtype=torch.float16)  # float16 stops at 65504
    wide = _batch([-1e39], [1.0], [0.0]).to(torch.float64)  # no narrowing: kept as it is
    assert float(wide.values[0, 0, 0]) == -1e39
    # unobserved, the huge value is zeroed by the constructor and does not stop the cast
    masked = _batch([1.0, 1e39, 2.0], [1.0, 0.0, 1.0], [0.0, 0.5, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cast = masked.to(torch.float32)
    assert cast.values.dtype == cast.times.dtype == torch.float32
    assert cast.values.flatten().tolist() == [1.0, 0.0, 2.0]
    assert cast.mask.flatten().tolist() == [1.0, 0.0, 1.0]


def test_a_cast_that_overflows_a_time_names_the_cast() -> None:
    """to(float32) of a time 1e39 failed in the constructor with 'times[1] is inf'."""
    batch = _batch([1.0, 2.0], [1.0, 1.0], [0.0, 1e39])
    with pytest.raises(DataError) as err:
        batch.to("cpu", torch.float32)
    assert str(err.value) == (
        "IrregularBatch.to(torch.float32) casts the times from torch.float64 to "
        "torch.float32, whose largest number is 3.403e+38, and times[1] = 1e+39 would become "
        "infinite. Rescale the times (a larger time unit), or keep them in torch.float64 by "
        "casting only the values: IrregularBatch(batch.times, batch.values.to(torch.float32), "
        "batch.mask)."
    )


def test_holdout_bounds_names_a_length_of_one_in_the_singular() -> None:
    """'2 blocks of 1 years' read wrongly; a length of exactly 1 is singular."""
    from latentode.data.prep import holdout_bounds

    with pytest.raises(DataError) as err:
        holdout_bounds(0.0, 1.5, 1.0, unit="years")
    assert str(err.value).startswith("holdout = 1.0 (2 blocks of 1 year) leaves no training time")
    with pytest.raises(DataError, match=r"\(2 blocks of 1 time unit\)"):
        holdout_bounds(0.0, 1.5, 1.0)
    with pytest.raises(DataError, match=r"\(2 blocks of 2 years\)"):
        holdout_bounds(0.0, 1.5, 2.0, unit="years")
