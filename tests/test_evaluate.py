"""Naive baselines and the period estimate of ``latentode test``, against known answers; the
time origins of a forecast; the held-out problems it scores."""

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
from latentode.data.prep import Segment, collate_segments
from latentode.data.table import SeriesTable, TimeEncoding
from latentode.ensemble import Ensemble
from latentode.evaluate import (
    GAPS,
    Case,
    _baselines,
    estimate_period,
    evaluate,
    half_observed,
    history_gaps,
)
from latentode.forecast import _future_grid, forecast, parse_horizon, predictive_summary
from latentode.nn import LatentODE, LatentODEConfig, ModelInputError, SolverSettings
from latentode.nn.latent_ode import AggregatePosterior
from latentode.predictive import draw_seeds


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


def _exact_anchor_last_model(seed: int = 0) -> LatentODE:
    """A float64 latent ODE anchored at the last observation, solved to 1e-10."""
    torch.manual_seed(seed)
    cfg = LatentODEConfig(
        input_dim=1,
        latent_dim=3,
        anchor="last",
        solver=SolverSettings("dopri5", rtol=1e-10, atol=1e-12),
    )
    return LatentODE(cfg).double()


def test_a_series_forecast_follows_from_its_id_not_from_the_chunk_or_the_other_series(
    tmp_path: Path,
) -> None:
    """Each series' draws are seeded by the seed and its id alone (`draw_seeds`): the same
    forecast whatever ``chunk`` is, and from a file holding it among other series in another
    order, up to the solver's tolerance (tight here: the series of a call share its adaptive
    steps); another seed draws other paths."""
    torch.manual_seed(0)
    settings = SolverSettings("dopri5", 1e-10, 1e-12)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=3, solver=settings)).double()
    rng = np.random.default_rng(0)
    rows = {
        s: [f"{s},{t:.3f},{np.sin(t + k):.4f}\n" for t in np.sort(rng.uniform(0, 8, 6 + k))]
        for k, s in enumerate("abcde")
    }
    state = {"channels": ["x"], "normalisation": None, "time_scale": 2.0}

    def run(order: str, name: str, **kw: object) -> dict[str, np.ndarray]:
        path = tmp_path / f"{name}.csv"
        path.write_text("series_id,time,x\n" + "".join(r for s in order for r in rows[s]))
        table = read_series_csv(path)
        out = forecast(model, table, state, 2.0, 0.5, n_samples=20, **kw)
        return {
            table.series_ids[g.series]: z for g, z in zip(out.history, out.summary, strict=True)
        }

    whole = run("abcde", "whole")
    for other in (run("abcde", "chunked", chunk=2), run("dbe", "fewer", chunk=1)):
        for sid, z in other.items():
            np.testing.assert_allclose(z, whole[sid], rtol=0, atol=1e-8)
    reseeded = run("abcde", "reseeded", seed=1)
    for sid, z in reseeded.items():
        assert np.abs(z[..., 2:] - whole[sid][..., 2:]).max() > 1e-3  # the quantiles moved


def test_forecast_of_a_model_anchored_last_does_not_depend_on_the_other_series() -> None:
    """`predictive_summary` puts each series' time origin at its last observation for a model
    with ``anchor="last"``: a short series forecast beside longer ones gets the forecast it
    gets alone (with the first time as origin, its latent state would be inferred at the
    longest series' end instead). A near-deterministic model (posterior and noise stds ~0)."""
    model = _exact_anchor_last_model()
    with torch.no_grad():
        model.encoder.head.weight[3:].zero_()
        model.encoder.head.bias[3:].fill_(-40.0)  # posterior std: the floor 1e-4
        model.decoder.log_std.fill_(-40.0)
    t = np.arange(1960.0, 2012.0)
    gappy = t[10:][np.random.default_rng(0).random(42) < 0.7]  # from 1970 on, with gaps
    segs = [
        Segment(0, 1960.0, t, np.sin(t / 7.0)[:, None]),
        Segment(1, 1960.0, t[:30], np.cos(t[:30] / 5.0)[:, None]),  # ends in 1989
        Segment(2, float(gappy[0]), gappy, 0.1 * gappy[:, None] - 200.0),
    ]
    future = [g.times[-1] + np.array([1.0, 2.0, 5.0]) for g in segs]
    state = {"normalisation": None, "time_scale": 5.0}

    def summary(rows: list[int]) -> list[np.ndarray]:
        seeds = draw_seeds(1, [str(i) for i in rows])
        return predictive_summary(
            model, [segs[i] for i in rows], [future[i] for i in rows], state, 4, seeds
        )

    together = summary([0, 1, 2])
    for i in range(3):
        alone = summary([i])[0]  # (3, D, 5)
        np.testing.assert_allclose(together[i][..., 3], alone[..., 3], rtol=0, atol=2e-3)
    assert float(np.abs(together[1][..., 3] - together[0][..., 3]).max()) > 0.01  # not one path


def test_predictive_mean_and_std_come_from_the_paths_not_the_noise_draws() -> None:
    """The summary's mean and std are the predictive's moments from the posterior paths
    (`LatentODE.predict`), mapped to the user's units: independent of the observation-noise
    draws (which the summary does not use), and equal to ``mean_k path`` and
    ``sqrt(var_k path + sigma^2)`` times the channel's std. Averaging the noisy draws instead
    would add ``sigma^2 / K`` of Monte-Carlo variance to the point forecast."""
    torch.manual_seed(0)
    cfg = LatentODEConfig(input_dim=2, latent_dim=3, learn_std=True, obs_std=0.3)
    model = LatentODE(cfg).double()
    t = np.arange(0.0, 12.0)
    segs = [
        Segment(0, 0.0, t, np.stack([np.sin(t), np.cos(t)], 1)),
        Segment(1, 2.0, t[2:9], np.stack([t[2:9] / 5, -t[2:9] / 5], 1)),
    ]
    future = [g.times[-1] + np.array([0.5, 1.0, 3.0]) for g in segs]
    norm = {"channels": ["a", "b"], "mean": [10.0, -1.0], "std": [2.0, 0.5]}
    state = {"normalisation": norm, "time_scale": 4.0}

    seeds = [7, 8]
    with torch.no_grad():
        a = predictive_summary(model, segs, future, state, 16, seeds)
    # The same paths by hand (each series' z0 are the first draws of its generator): the
    # model's own predictive moments, in the user's units.
    observed = collate_segments(segs, norm, 4.0, dtype=torch.float64)
    grid = torch.tensor(np.stack([(f - g.t0) / 4.0 for f, g in zip(future, segs, strict=True)]))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    with torch.no_grad():
        pred = model.predict(observed, grid, 16, generators=generators)
    sigma = model.decoder.log_std.detach().exp().numpy()  # (D,)
    paths = pred.samples.numpy()  # (K, B, n, D), normalised units
    scale, shift = np.array(norm["std"]), np.array(norm["mean"])
    want_mean = paths.mean(0) * scale + shift
    want_std = np.sqrt(paths.var(0) + sigma**2) * scale
    for b_, s in enumerate(a):
        np.testing.assert_allclose(s[..., 0], want_mean[b_], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s[..., 1], want_std[b_], rtol=1e-12, atol=1e-12)
        # The quantiles are the predictive's (the paths with their noise), not the paths'.
        path_median = np.median(paths[:, b_], axis=0) * scale + shift
        assert np.abs(s[..., 3] - path_median).max() > 1e-3


def test_predictives_past_the_budget_are_drawn_in_halves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments whose paths at their times exceed `draws_per_call` are taken in halves, one
    model call each, and give exactly what separate calls on the halves give (the same draws
    in the same order); each call holds at most the budget."""
    from latentode import predictive

    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=2, latent_dim=3, anchor="last")).double()
    t = np.arange(0.0, 12.0)
    segs = [
        Segment(b, float(b), t[b:], np.stack([np.sin(t[b:] + b), np.cos(t[b:])], 1))
        for b in range(5)
    ]
    future = [g.times[-1] + np.linspace(0.5, 3.0, 4 + b) for b, g in enumerate(segs)]  # 4..8
    state = {"normalisation": None, "time_scale": 4.0}
    calls = []
    predict = model.predict

    def counted(observed, times, n_samples, *args, **kw):
        calls.append(n_samples * times.shape[0] * times.shape[-1])
        return predict(observed, times, n_samples, *args, **kw)

    monkeypatch.setattr(model, "predict", counted)

    def draws(groups: list[list[int]], budget: int) -> list[np.ndarray]:
        def per_call(n_channels: int) -> int:
            asked.append(n_channels)
            return budget

        monkeypatch.setattr(predictive, "draws_per_call", per_call)
        out = []
        for rows in groups:
            part = [segs[i] for i in rows], [future[i] for i in rows]
            seeds = draw_seeds(4, [str(i) for i in rows])
            out += [p.draws for p in predictive.predictives(model, *part, state, 6, seeds)]
        return out

    asked: list[int] = []
    split = draws([[0, 1, 2, 3, 4]], budget=6 * 2 * 8)  # two segments of 8 times at most
    assert set(asked) == {2}  # the budget of the segments' two channels
    assert calls == [6 * 2 * 5, 6 * 1 * 6, 6 * 2 * 8]  # [0, 1], then [2, 3, 4] halved again
    assert max(calls) <= 6 * 2 * 8
    apart = draws([[0, 1], [2], [3, 4]], budget=10**9)
    for a, b in zip(split, apart, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [a.shape for a in split] == [(6, 4 + b, 2) for b in range(5)]
    calls.clear()
    draws([[0, 1, 2, 3, 4]], budget=10**9)
    assert calls == [6 * 5 * 8]  # within the budget: one call, as before


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


def test_predictive_summary_under_a_prior_draws_the_paths_from_it() -> None:
    """With ``prior`` (and ``importance``) the paths come from the mixture, not the encoder: a
    one-component prior of std ~0 gives every series the path of that component's state,
    solved from the aligned anchor (0, each series' last observation) to its own future,
    whatever its history. An `Ensemble` is refused (each member has its own encoder)."""
    model = _exact_anchor_last_model()
    with torch.no_grad():
        model.decoder.log_std.fill_(-40.0)
    t = np.arange(0.0, 12.0)
    segs = [
        Segment(0, 0.0, t, np.sin(t)[:, None]),
        Segment(1, 3.0, t[3:8], 5.0 + t[3:8, None]),
    ]
    lead = np.array([1.0, 2.0, 5.0])
    future = [g.times[-1] + lead for g in segs]
    state = {"normalisation": None, "time_scale": 5.0}
    z = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64)
    prior = AggregatePosterior(z, torch.full_like(z, 1e-9), 0.0)
    seeds = [0, 1]
    stats = predictive_summary(model, segs, future, state, 8, seeds, True, prior=prior)
    with torch.no_grad():
        zt = model.integrate(z[None], torch.tensor(0.0).double(), torch.tensor(lead / 5.0))
        path = model.decoder(zt).mean[0, 0].numpy()  # (3, 1)
    for s in stats:
        np.testing.assert_allclose(s[..., 0], path, rtol=0, atol=1e-6)  # mean
        np.testing.assert_allclose(s[..., 3], path, rtol=0, atol=1e-6)  # median
    other = _exact_anchor_last_model(seed=1)
    pair = Ensemble([model, other], [state, state])
    with pytest.raises(ModelInputError, match="not with an Ensemble"):
        predictive_summary(pair, segs, future, state, 8, seeds, True, prior=prior)


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
