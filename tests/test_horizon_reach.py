"""Forecasts asked for far past what the fit validated: `forecast` (and so ``latentode
predict``) warns when a series' farthest forecast time lies more than 10 times the fit's
longest validated lead (``data.holdout``, resolved as training resolves it) past its last
observation, naming the series, and is silent below that."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from latentode.data.table import SeriesTable, TimeEncoding
from latentode.forecast import forecast
from latentode.nn import LatentODE, LatentODEConfig

pytestmark = pytest.mark.usefixtures("one_thread")

FAR = "times as far ahead as the fit validated"  # in the warning, and in nothing else
ADVICE = (
    ". That far past their last observation the forecasts extrapolate the learned dynamics "
    "beyond anything the model was fitted or validated on, and their bands reflect only the "
    "model's own uncertainty, not evidence from the data. Shorten --horizon (or the --times), "
    "or refit with a longer data.holdout to validate further ahead."
)


def _numeric() -> tuple[LatentODE, SeriesTable]:
    """A tiny float64 model and two numeric series: 'a' spans 50 time units (0, 5, ..., 50),
    'b' 20 (30, 35, ..., 50)."""
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=2)).double()
    a, b = np.arange(0.0, 51.0, 5.0), np.arange(30.0, 51.0, 5.0)
    times = np.concatenate([a, b])
    values = np.sin(times)[:, None]
    offsets = np.array([0, len(a), len(times)])
    table = SeriesTable(times, values, offsets, ["a", "b"], ["v"], TimeEncoding("numeric"))
    return model, table


def _warned(*args: object, **kw: object) -> list[str]:
    """The messages of the far-reach warnings `forecast(*args, **kw)` gives (4 paths)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        forecast(*args, n_samples=4, **kw)
    return [str(w.message) for w in seen if FAR in str(w.message)]


def test_forecasts_past_ten_times_the_validated_lead_are_warned_of_by_series() -> None:
    """A lead of exactly 10 x ``holdout`` is not warned of, one past it is, naming each series
    and its lead; explicit times 1e15 units ahead on a history spanning 50 too. A fractional
    holdout is resolved on the longest series' span (the longest forecast the fit validated),
    and without a stored holdout the longest span stands in for it. In a forecast shared out
    between processes, only the first warns (of every series)."""
    model, table = _numeric()
    state = {"channels": ["v"], "normalisation": None, "time_scale": 1.0, "holdout": 5.0}
    assert _warned(model, table, state, 50.0, 25.0) == []  # 10 x 5 ahead: at the threshold
    assert _warned(model, table, state, 51.0, 51.0) == [
        "2 series are forecast more than 10 times as far ahead as the fit validated (5 time "
        "units, data.holdout): 'a' (to 51 time units ahead), 'b' (to 51 time units ahead)" + ADVICE
    ]
    far = {"a": np.array([1e15]), "b": np.array([60.0])}
    wide = {**state, "time_scale": 1e13}  # the model's time axis: 1e15 is 100 steps on
    assert _warned(model, table, wide, 1.0, times=far) == [
        "1 series is forecast more than 10 times as far ahead as the fit validated (5 time "
        "units, data.holdout): 'a' (to 1e+15 time units ahead)" + ADVICE
    ]
    # 0.1 of the longest span (50): 5, also for 'b', whose own span (20) would give 2
    fraction = {**state, "holdout": 0.1}
    assert _warned(model, table, fraction, 30.0, 30.0) == []
    assert _warned(model, table, fraction, 60.0, 60.0)[0].startswith(
        "2 series are forecast more than 10 times as far ahead as the fit validated (5 time "
        "units: data.holdout 0.1 of the longest series' span in the file, 50 time units): "
    )
    unknown = {k: v for k, v in state.items() if k != "holdout"}
    assert _warned(model, table, unknown, 500.0, 250.0) == []
    assert _warned(model, table, unknown, 600.0, 300.0)[0].startswith(
        "2 series are forecast more than 10 times as far ahead as the fit validated (50 time "
        "units: the checkpoint stores no data.holdout, so the longest series' span in the file "
        "stands in for it): 'a' (to 600 time units ahead), 'b' (to 600 time units ahead). "
    )
    shares = [_warned(model, table, state, 51.0, 51.0, chunk=1, shard=(r, 2)) for r in (0, 1)]
    assert [len(s) for s in shares] == [1, 0] and "'b' (to 51 time units" in shares[0][0]


def test_predict_warns_of_a_horizon_far_past_the_fit_and_not_of_the_readme_one(
    fitted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``latentode predict`` with the README's ``--horizon 30D`` on the tiny fit's daily file
    (``data.holdout 0.1`` of series spanning up to 119 days: 11.9 days validated) gives no
    warning; with ``--horizon 1000D`` one, naming the first three series and the count of
    the others, and the forecast is still written."""
    from latentode.cli import predict_main

    ckpt, data = fitted
    base = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--n_samples", "4"]
    out = tmp_path / "f.csv"
    runs = {}
    for horizon in (["30D"], ["1000D", "--step", "250D"]):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            argv = [*base, "--horizon", *horizon, "--output", str(out), "--overwrite"]
            assert predict_main(argv) == 0, capsys.readouterr().err
        runs[horizon[0]] = [str(w.message) for w in seen if FAR in str(w.message)]
    assert runs["30D"] == []
    [message] = runs["1000D"]
    assert message == (
        "6 series are forecast more than 10 times as far ahead as the fit validated (11.9D: "
        "data.holdout 0.1 of the longest series' span in the file, 119D): 's2' (to 1000D "
        "ahead), 's1' (to 1000D ahead), 's0' (to 1000D ahead) and 3 more" + ADVICE
    )
    assert "wrote 48 rows for 6 series" in capsys.readouterr().out
