"""Four follow-ups (helper-46): `split_summary` names a date-time holdout in its time unit and
says how the series held out whole are forecast; `holdout_bounds` says a holdout below 1 was
read as a fraction of the span; `IrregularBatch.to` takes torch's positional forms and names
a cast that makes times coincide; `latentode.paths._umask` reads the umask without setting
it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from latentode import paths
from latentode.data import prep
from latentode.data.csv_module import CSVDataModule
from latentode.data.csv_split import split_summary
from latentode.data.errors import DataError
from latentode.data.irregular_batch import IrregularBatch
from latentode.data.prep import holdout_bounds
from latentode.data.table import TimeEncoding
from latentode.holdout import held_out_cases

CO2 = Path(__file__).resolve().parents[1] / "data" / "co2_mauna_loa_weekly.csv"


def test_split_summary_names_the_date_time_unit_of_the_co2_holdout() -> None:
    """configs/co2.yaml (time_unit Y, holdout 2) was summarised as 'each 2 time units'."""
    dm = CSVDataModule(str(CO2), time_unit="Y", holdout=2.0, window=5.0, history=3.0)
    dm.setup()
    table = dm._ready()
    assert (table.encoding.kind, table.encoding.unit) == ("datetime", "Y")
    summary = split_summary(
        table.n_series,
        dm.holdout,
        dm.val_series,
        dm.test_series,
        dm.val_window,
        dm.val_windows,
        encoding=table.encoding,
    )
    assert summary == (
        "a validation and a test block, each 2 years, held out at the end of the series; "
        "trained on the part before them"
    )


def test_split_summary_wording_by_unit_holdout_and_split() -> None:
    """Numbers stay in time units (one unit in the singular); a fraction is a share of each
    series' span; the series held out whole now say what of them is forecast."""
    days = TimeEncoding("datetime", "D", origin="2000-01-01T00:00:00")
    numeric = TimeEncoding("numeric", "")
    windows = {"a": [6.0, 8.0], "b": [7.0, 9.0]}
    assert split_summary(3, 1.0, None, None, None, windows, encoding=days) == (
        "a validation and a test block, each 1 day, held out at the end of 2 series; "
        "trained on the part before them and on 1 series too short for the blocks, whole"
    )
    assert split_summary(2, 0.1, None, None, None, windows, encoding=days) == (
        "a validation and a test block, each 10% of each series' span, held out at the end "
        "of 2 series; trained on the part before them"
    )
    assert split_summary(1, 3.0, None, None, [4.0, 7.0], None, encoding=numeric) == (
        "a validation and a test block, each 3 time units, held out at the end of the "
        "series; trained on the part before them"
    )
    held = (["a", "b"], ["c"])
    assert split_summary(10, 0.1, *held, None, None) == (
        "7 series to train on, 2 for validation and 1 for testing (each held out whole and "
        "forecast over the last 10% of its span)"
    )
    assert split_summary(10, 2.0, *held, None, None, encoding=days) == (
        "7 series to train on, 2 for validation and 1 for testing (each held out whole and "
        "forecast over its last 2 days)"
    )
    assert split_summary(10, 5.0, *held, None, None) == (
        "7 series to train on, 2 for validation and 1 for testing (each held out whole and "
        "forecast over its last 5 time units)"
    )


def test_holdout_bounds_says_a_holdout_below_1_is_a_fraction_of_the_span(
    tmp_path: Path,
) -> None:
    """'holdout = 0.6 (2 blocks of 25.8 time units)' did not say 0.6 was read as a share."""
    with pytest.raises(DataError) as err:
        holdout_bounds(0.0, 43.0, 0.6)
    assert str(err.value) == (
        "holdout 0.6 is below 1, so a fraction of the span: 2 blocks of 25.8 time units "
        "leave no training time in [0, 43]; use a smaller holdout."
    )
    with pytest.raises(DataError) as err:  # a length: the message is as it was
        holdout_bounds(0.0, 43.0, 30.0)
    assert str(err.value) == (
        "holdout = 30.0 (2 blocks of 30 time units) leaves no training time in [0, 43]; use "
        "a smaller holdout."
    )
    one = tmp_path / "one.csv"  # one series: divide_single reports it as it is
    one.write_text("time,y\n" + "".join(f"{t},{t % 5}\n" for t in range(44)))
    with pytest.raises(DataError, match=r"^holdout 0\.6 is below 1, so a fraction of the span"):
        CSVDataModule(str(one), holdout=0.6).setup()


def test_holdout_length_is_the_one_fraction_rule() -> None:
    """`holdout_bounds` and `held_out_cases` cut where `holdout_length` says."""
    assert prep.holdout_length(10.0, 0.25) == 2.5
    assert prep.holdout_length(10.0, 2.0) == 2.0
    assert prep.holdout_length(10.0, 1.0) == 1.0  # 1 is a length, not the whole span
    assert holdout_bounds(0.0, 10.0, 0.25) == [5.0, 7.5]
    dm = CSVDataModule(str(CO2), time_unit="Y", holdout=2.0, window=5.0, history=3.0)
    dm.setup()
    table = dm._ready()
    t = table.times[table.mask.any(axis=1)]
    for holdout in (0.1, 2.0):
        (case,) = held_out_cases(table, [0], holdout, 3.0, "extrapolation")
        t_split = t[-1] - prep.holdout_length(float(t[-1] - t[0]), holdout)
        assert np.array_equal(case.t_target, t[t >= t_split])


def _batch(times: list[float]) -> IrregularBatch:
    """Two series of one channel on ``times`` (float64), all observed."""
    t = torch.tensor(times, dtype=torch.float64)
    values = torch.arange(2 * len(times), dtype=torch.float64).reshape(2, len(times), 1)
    return IrregularBatch(t, values, torch.ones_like(values))


def test_irregular_batch_to_takes_torchs_positional_forms() -> None:
    """``batch.to(torch.float32)`` failed with a TypeError from torch (the dtype was passed on
    as the device); the positional forms now do what the keyword ones do."""
    batch = _batch([0.0, 0.5, 2.0])
    want = batch.to(dtype=torch.float32)
    for got in (
        batch.to(torch.float32),
        batch.to("cpu", torch.float32),
        batch.to(torch.device("cpu"), torch.float32),
    ):
        for name in ("times", "values", "mask"):
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == torch.float32 and a.device.type == "cpu"
            assert torch.equal(a, b)
    moved = batch.to(torch.device("cpu"))
    assert moved.times.dtype == torch.float64 and torch.equal(moved.values, batch.values)
    with pytest.raises(TypeError, match=r"^to\(\) takes a dtype, a device, or a device then"):
        batch.to(torch.float32, torch.float64)


def test_irregular_batch_to_names_a_cast_that_makes_times_coincide() -> None:
    """float64 times 1e8 and 1e8 + 1 coincide in float32: the constructor said 'times must
    be strictly increasing ... Sort the grid', hiding that the cast did it."""
    batch = _batch([0.0, 1e8, 1e8 + 1])
    for cast in (lambda: batch.to(dtype=torch.float32), lambda: batch.to(torch.float32)):
        with pytest.raises(DataError) as err:
            cast()
        assert str(err.value) == (
            "IrregularBatch.to(torch.float32) casts the times from torch.float64 to "
            "torch.float32, in which times[1] = 100000000.0 and times[2] = 100000001.0 "
            "coincide (both become 100000000.0). Shift the times to start near 0 before "
            "casting (subtract times[0]), or keep them in torch.float64 by casting only the "
            "values: IrregularBatch(batch.times, batch.values.to(torch.float32), batch.mask) "
            "(a model computing in torch.float32 refuses such times too)."
        )
    kept = IrregularBatch(batch.times, batch.values.to(torch.float32), batch.mask)  # the advice
    assert kept.times.dtype == torch.float64 and kept.values.dtype == torch.float32
    shifted = _batch([0.0, 1.0, 2.0]).to(torch.float32)  # times that survive the cast
    assert shifted.times.tolist() == [0.0, 1.0, 2.0]


def test_umask_is_read_without_setting_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`_umask` set the umask to 0o022 and back: a thread creating a file in between got
    0o022. It now reads /proc/self/status; the set-and-back is the fallback elsewhere."""
    status = Path("/proc/self/status")
    if not status.exists() or "\nUmask:" not in status.read_text():
        pytest.skip("no Umask line in /proc/self/status (not Linux 4.7+)")
    real = os.umask
    before = real(0o027)
    try:
        calls: list[int] = []

        def spy(mask: int) -> int:
            calls.append(mask)
            return real(mask)

        monkeypatch.setattr(os, "umask", spy)
        assert paths._umask() == 0o027
        assert calls == []  # the umask was never set, not even for a moment
        out = tmp_path / "out.txt"
        paths.write_whole(out, lambda p: p.write_text("x\n"))
        assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~0o027 == 0o640
        assert calls == []
        assert paths._umask(str(tmp_path / "no_status")) == 0o027  # the fallback
        assert calls == [0o022, 0o027]
    finally:
        monkeypatch.undo()
        real(before)
    assert os.umask(before) == before
