"""``latentode test``'s scoring: the period estimate and naive baselines against known
answers, and the held-out problems it scores (half-observed histories, history gaps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from evaluate_helpers import _exact_anchor_last_model

from latentode.data.csv import read_series_csv
from latentode.data.prep import Segment
from latentode.evaluate import (
    GAPS,
    Case,
    _baselines,
    estimate_period,
    evaluate,
    half_observed,
    history_gaps,
)


def test_estimate_period_finds_the_season_of_an_irregular_trended_series() -> None:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 20, 600))
    y = 3 * t + np.sin(2 * np.pi * t / 1.7) + 0.1 * rng.normal(size=t.size)
    assert abs(estimate_period(t, y) - 1.7) < 0.05


def test_baselines_match_their_definitions() -> None:
    t = np.arange(0.0, 10.0, 0.5)
    x = np.stack([np.sin(2 * np.pi * t / 2.0), t], axis=1)  # (n, 2)
    t_target = np.array([10.25, 11.0])
    case = Case(0, Segment(0, 0.0, t, x), t_target, np.zeros((2, 2)))
    ext = _baselines(case, "extrapolation", period=2.0)
    assert np.allclose(ext["last value"], x[-1])
    seasonal = ext["seasonal naive (period 2)"]  # one period back: 8.25 and 9.0
    assert np.allclose(seasonal[:, 1], [8.25, 9.0])
    hist = Segment(0, 0.0, t[::2], x[::2])
    inter = _baselines(Case(0, hist, np.array([0.5, 2.5]), np.zeros((2, 2))), "interpolation", None)
    assert np.allclose(inter["linear interpolation"][:, 1], [0.5, 2.5])
    assert np.allclose(inter["last value"][:, 1], [0.0, 2.0])


def test_trend_baselines_continue_the_recent_slope_and_the_seasonal_drift() -> None:
    """The linear trend fits only the last stretch of history as long as the forecast reaches
    (1.5 here: the kink at t = 8 is outside it) and starts at each channel's own last value;
    seasonal naive + trend is exact on a sine plus a line."""
    t = np.arange(0.0, 10.0, 0.5)  # last time 9.5
    kinked = np.where(t < 8, t, 2 * t - 8)  # slope 2 from t = 8 on
    gappy = np.where(t < 9, 3.0 - t, np.nan)  # last seen at 8.5, slope -1
    seasonal = np.sin(np.pi * t) + 0.5 * t  # period 2
    x = np.stack([kinked, gappy, seasonal], axis=1)  # (n, 3)
    q = np.array([10.5, 11.0])  # whole periods back: 8.5, 9.0, on the grid
    ext = _baselines(Case(0, Segment(0, 0.0, t, x), q, np.zeros((2, 3))), "extrapolation", 2.0)
    trend = ext["linear trend"]
    assert np.allclose(trend[:, 0], 11.0 + 2 * (q - 9.5))  # not the whole history's slope
    assert np.allclose(trend[:, 1], 3.0 - q)  # from its own last value (8.5) on
    seasonal_trend = ext["seasonal naive + trend (period 2)"]
    assert np.allclose(seasonal_trend[:, 2], np.sin(np.pi * q) + 0.5 * q)
    # without the trend term it is off by the drift over the skipped period
    assert np.allclose(ext["seasonal naive (period 2)"][:, 2], np.sin(np.pi * q) + 0.5 * (q - 2))


def test_linear_trend_of_a_short_horizon_uses_the_last_three_points() -> None:
    """A forecast 0.25 ahead of yearly points has one point in its stretch; the slope then
    comes from the last three (3, 5, 6: slope 1.5), and a channel seen once stays flat."""
    t = np.array([0.0, 1.0, 2.0, 3.0])
    x = np.array([[0.0, np.nan], [3.0, np.nan], [5.0, np.nan], [6.0, 4.0]])
    case = Case(0, Segment(0, 0.0, t, x), np.array([3.25]), np.zeros((1, 2)))
    trend = _baselines(case, "extrapolation", None)["linear trend"]
    assert np.allclose(trend, [[6.0 + 1.5 * 0.25, 4.0]])


def test_half_observed_keeps_every_other_history_value_back_from_the_last() -> None:
    """`half_observed`: the last observation, the third last, ...; the targets unchanged."""
    for n, kept in ((5, [0.0, 2.0, 4.0]), (4, [1.0, 3.0]), (2, [1.0])):
        t = np.arange(float(n))
        x = np.stack([10 + t, -t], axis=1)
        case = Case(3, Segment(3, 0.0, t, x), np.array([7.0]), np.array([[1.0, 2.0]]))
        half = half_observed(case)
        np.testing.assert_array_equal(half.hist.times, kept)
        np.testing.assert_array_equal(
            half.hist.values, np.stack([10 + half.hist.times, -half.hist.times], axis=1)
        )
        assert half.hist.t0 == kept[0] and half.series == 3 and half.hist.series == 3
        assert half.t_target is case.t_target and half.target is case.target


def test_history_gaps_hide_what_half_observed_drops_but_the_first() -> None:
    """`history_gaps` conditions on `half_observed`'s history plus the first observation and
    scores every other one, so each target lies between two conditioned observations."""
    for n, kept, hidden in (
        (5, [0, 2, 4], [1, 3]),
        (4, [0, 1, 3], [2]),
        (3, [0, 2], [1]),
        (6, [0, 1, 3, 5], [2, 4]),
    ):
        t = np.arange(float(n)) + 10.0
        x = np.stack([t**2, -t], axis=1)
        case = Case(2, Segment(2, 10.0, t, x), np.array([99.0]), np.array([[1.0, 2.0]]))
        gaps = history_gaps(case)
        np.testing.assert_array_equal(gaps.hist.times, t[kept])
        np.testing.assert_array_equal(gaps.hist.values, x[kept])
        np.testing.assert_array_equal(gaps.t_target, t[hidden])
        np.testing.assert_array_equal(gaps.target, x[hidden])
        assert gaps.hist.t0 == 10.0 and gaps.series == 2
        half = set(half_observed(case).hist.times)
        assert half | {10.0} == set(gaps.hist.times)  # the same history, with the first
    for n in (1, 2):  # nothing interior to hide
        t = np.arange(float(n))
        assert history_gaps(Case(0, Segment(0, 0.0, t, t[:, None]), t, t[:, None])) is None


def test_evaluate_scores_the_history_gaps_beside_linear_interpolation(tmp_path: Path) -> None:
    """The ``history gaps`` rows of `evaluate` score exactly the observations `history_gaps`
    hides in each forecast history. On a parabola 0.5 t^2 observed yearly, each hidden year
    lies midway between two kept ones, where linear interpolation is off by exactly 0.5 (the
    chord's excess) and last value by 0.5 (2t - 1)."""
    rows = ["series_id,time,y"]
    spans = {"a": range(0, 20), "b": range(3, 20)}
    for sid, years in spans.items():
        rows += [f"{sid},{t},{0.5 * t * t + (sid == 'b')}" for t in years]
    path = tmp_path / "parabola.csv"
    path.write_text("\n".join(rows) + "\n")
    table = read_series_csv(path)
    state = {
        "channels": ["y"],
        "normalisation": None,
        "time_scale": 5.0,
        "holdout": 0.2,
        "history": None,
    }
    frame = evaluate(_exact_anchor_last_model(), table, state, n_samples=4)
    gaps = frame[frame.task == GAPS].set_index("method")
    assert list(gaps.index) == ["latent ODE", "last value", "linear interpolation"]
    # Histories: a 0..15 (t_split 15.2), hidden 2, 4, ..., 14; b 3..15 (t_split 15.8), hidden
    # 4, 6, ..., 14 (each counted back from the last, the first kept).
    hidden = np.r_[2:15:2, 4:15:2].astype(float)
    assert (gaps.n_values == len(hidden)).all()
    lin = gaps.loc["linear interpolation"]
    np.testing.assert_allclose([lin.mse, lin.mae], [0.25, 0.5], rtol=1e-12)
    last = 0.5 * (2 * hidden - 1)
    np.testing.assert_allclose(gaps.loc["last value"].mse, np.mean(last**2), rtol=1e-12)
    model = gaps.loc["latent ODE"]
    assert np.isfinite([model.mse, model.mae, model.width90]).all()
    assert 0 <= model.coverage90 <= 1 and model.width90 > 0
    # the other tasks are all still there, the gap rows last
    assert list(frame.task.unique()) == ["extrapolation", "interpolation", GAPS]
