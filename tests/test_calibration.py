"""Split-conformal band calibration (`latentode.calibration`) against known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from latentode.calibration import (
    MIN_SERIES,
    MIN_VALUES,
    WIDEN,
    Calibration,
    band_scores,
    calibrate,
    conformal_scale,
    lead_bins,
    lead_scales,
    validation_cases,
)
from latentode.data.csv_module import CSVDataModule
from latentode.evaluate import case_seeds, case_stats
from latentode.forecast import QUANTILES, scale_bands
from latentode.nn.latent_ode import LatentODE, LatentODEConfig

DATA = Path(__file__).resolve().parents[1] / "data"
Z95 = 1.6448536269514722  # standard normal 95% quantile

W = 1.0 + WIDEN  # `conformal_scale`'s factor: the score, widened by this


def _gaussian_stats(n: int, mean: float, std: float) -> np.ndarray:
    """``[n, 1, 5]`` summaries of the predictive N(mean, std^2) at n points."""
    row = [mean, std, mean - Z95 * std, mean, mean + Z95 * std]
    return np.tile(np.array(row), (n, 1, 1))


def test_a_band_twice_too_wide_is_halved_and_then_covers_ninety_percent() -> None:
    """Truth N(0, 1), predictive N(0, 2^2): the 90% band is twice too wide, so the factor is
    0.5 (the 0.9 quantile of |y| / (2 z95)); the scaled band covers 90% of fresh values."""
    rng = np.random.default_rng(0)
    n = 4000
    stats = _gaussian_stats(n, 0.0, 2.0)
    y = rng.normal(size=(n, 1))
    assert ((stats[..., 2] <= y) & (y <= stats[..., 4])).mean() > 0.99  # too wide
    lam = conformal_scale(band_scores(stats, y))
    assert lam == pytest.approx(0.5, abs=0.02)
    fresh = rng.normal(size=(n, 1))
    scaled = scale_bands(stats, np.array([lam]))
    cover = ((scaled[..., 2] <= fresh) & (fresh <= scaled[..., 4])).mean()
    assert cover == pytest.approx(0.90, abs=0.015)
    too_narrow = _gaussian_stats(n, 0.0, 0.5)  # a band too narrow is widened (factor 2)
    assert conformal_scale(band_scores(too_narrow, y)) == pytest.approx(2.0, rel=0.04)


def test_scores_count_half_bands_on_the_target_side() -> None:
    stats = np.array([[0.0, 1.0, -1.0, 0.5, 3.0]] * 4)  # q05 -1, q50 0.5, q95 3 (skewed)
    y = np.array([3.0, 1.75, -0.25, np.nan])
    r = band_scores(stats, y)
    np.testing.assert_allclose(r[:3], [1.0, 0.5, 0.5])  # 2.5 above, 1.5 below the median
    assert np.isnan(r[3])
    flat = np.array([[0.0, 0.0, 0.0, 0.0, 0.0]] * 2)  # zero width: off the median is inf
    np.testing.assert_array_equal(band_scores(flat, np.array([0.0, 1.0])), [0.0, np.inf])


def test_conformal_factor_is_the_finite_sample_order_statistic() -> None:
    r = np.arange(1.0, 21.0)  # n = 20: ceil(21 * 0.9) = 19th smallest
    assert conformal_scale(r) == W * 19.0
    r_nan = np.concatenate([r, [np.nan] * 5])  # missing targets do not count
    assert conformal_scale(r_nan) == W * 19.0
    assert conformal_scale(r[: MIN_VALUES - 1]) is None  # too few to calibrate
    assert conformal_scale(np.concatenate([r[:-2], [np.inf] * 2])) is None  # 19th infinite


def test_series_count_once_however_many_values_they_hold() -> None:
    """Nine one-value series scoring 1..9 and one series of 100 values scoring 0.01: taken
    value by value, the long series decides the factor (99th of 109 values: 0.01); taken
    series by series, it weighs as one of ten, and the factor is the 10th of 10 units (9)."""
    r = np.concatenate([np.arange(1.0, 10.0), np.full(100, 0.01)])
    groups = np.concatenate([np.arange(9), np.full(100, 9)])
    assert conformal_scale(r) == W * 0.01
    assert conformal_scale(r, groups=groups) == W * 9.0
    one_each = np.arange(1.0, 21.0)  # one value per series: the plain rule
    assert conformal_scale(one_each, groups=np.arange(20)) == conformal_scale(one_each) == W * 19.0
    nine = np.repeat(np.arange(9), 3)  # 9 series: the level needs all of them (the maximum)
    assert conformal_scale(np.arange(1.0, 28.0), groups=nine) == W * 27.0
    assert conformal_scale(np.arange(1.0, 25.0), groups=nine[:24]) is None  # 8 series


def test_scale_bands_equals_scaling_the_draws_about_their_median() -> None:
    """The summaries of draws scaled by lam about their median are `scale_bands` of the
    draws' summaries: quantiles move with the affine map, the std by lam."""
    rng = np.random.default_rng(1)
    draws = rng.gamma(2.0, size=(500, 3, 2))  # (K, n, D) skewed
    lam = np.array([0.6, 1.7])  # per channel

    def summary(x: np.ndarray) -> np.ndarray:
        q = np.quantile(x, QUANTILES, axis=0)
        return np.stack([x.mean(0), x.std(0), *q], axis=-1)  # (n, D, 5)

    med = np.quantile(draws, 0.5, axis=0)
    np.testing.assert_allclose(
        scale_bands(summary(draws), lam), summary(med + lam * (draws - med)), atol=1e-12
    )


def test_validation_cases_are_the_fits_validation_forecasts() -> None:
    many = CSVDataModule(str(DATA / "fertility_worldbank.csv"), holdout=10.0, seed=2)
    many.setup()
    state = many.data_state()
    cases, why = validation_cases(many.table, state)
    assert why == "" and len(cases) == len(many.val_segments) == 19  # of 21: 2 too short
    assert len(state["val_series"]) == 21
    assert {c.series for c in cases} == {g.series for g in many.val_segments}
    assert not {c.series for c in cases} & {many.table.index_of(i) for i in state["test_series"]}
    for c, g in zip(cases, many.val_segments, strict=True):
        np.testing.assert_array_equal(c.t_target, g.times[g.times >= g.t_split])
        assert c.hist.times[-1] < c.t_target[0]
    old = {k: v for k, v in state.items() if k != "val_series"}  # a checkpoint from before
    assert validation_cases(many.table, old)[0] == []
    one = CSVDataModule(str(DATA / "co2_mauna_loa_weekly.csv"), time_unit="Y", holdout=2.0)
    one.setup()
    (case,), _ = validation_cases(one.table, one.data_state())
    t_val, t_test = one.data_state()["val_window"]
    (val,) = one.val_segments
    np.testing.assert_array_equal(case.t_target, val.times[val.times >= t_val])
    assert case.t_target[-1] <= t_test and case.hist.times[-1] < t_val
    assert case.hist.times[0] >= t_val - one.eval_history
    # several series held out in time: each series' own validation block, history before it
    few = CSVDataModule(str(DATA / "fertility_worldbank.csv"), holdout=0.1, split="time")
    few.setup()
    state = few.data_state()
    cases, why = validation_cases(few.table, state)
    assert why == "" and len(cases) == len(few.val_segments) > 200
    for c, g in zip(cases, few.val_segments, strict=True):
        t_val, t_test = state["val_windows"][few.table.series_ids[c.series]]
        assert c.series == g.series and c.hist.times[-1] < t_val <= c.t_target[0]
        assert c.t_target[-1] <= t_test
        np.testing.assert_array_equal(c.t_target, g.times[g.times >= t_val])


def test_a_file_holding_few_of_the_validation_series_is_named_as_the_reason() -> None:
    """Before: 'fewer than 20 values of 9 series; raise the fit's val_fraction or holdout',
    when the cause was a file other than the training file."""
    many = CSVDataModule(str(DATA / "fertility_worldbank.csv"), holdout=10.0, seed=2)
    many.setup()
    state = many.data_state()
    some = many.table.select([many.table.index_of(i) for i in state["val_series"][:8]])
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=2))
    cal = calibrate(model, some, state, n_samples=4)
    assert cal.scale is None
    assert cal.reason.endswith(
        "the file holds 8 of the fit's 21 validation series; give the training file"
    ), cal.reason


def test_a_value_scored_at_the_factor_stays_inside_its_scaled_band() -> None:
    """The factor is a validation value's own score; scaled by it, the band's end is that value
    up to rounding, on either side. `conformal_scale` widens it by `WIDEN` so the value stays
    inside; the bare score leaves some of 20000 such values just outside."""
    rng = np.random.default_rng(0)
    n = 20000
    q50 = rng.uniform(-4.0, 4.0, n)
    lo_half, hi_half = rng.uniform(1e-4, 0.1, (2, n))
    stats = np.stack([q50, np.ones(n), q50 - lo_half, q50, q50 + hi_half], -1)[:, None]
    above = rng.random(n) < 0.5
    off = rng.uniform(0.0, 20.0, n) * np.where(above, hi_half, -lo_half)
    target = (q50 + off)[:, None]
    score = band_scores(stats, target)  # (n, 1)

    def outside(lam: np.ndarray) -> int:
        s = scale_bands(stats, lam)
        return int(((target < s[..., 2]) | (target > s[..., 4])).sum())

    assert outside(score) > 0  # rounding: without the widening some fall out
    assert outside(score * W) == 0
    assert conformal_scale(np.full(MIN_VALUES, 0.37)) == 0.37 * W


@pytest.mark.parametrize("by_lead", [False, True])
def test_calibrated_bands_cover_ninety_percent_of_the_validation_values(by_lead: bool) -> None:
    """End to end on an untrained tiny model: the factors `calibrate` returns make the bands
    cover at least 90% of the validation series, each weighted once (the rule it applies),
    and at most one series' share more, in every lead-time bin (one bin with
    ``by_lead=False``); one channel here."""
    dm = CSVDataModule(str(DATA / "fertility_worldbank.csv"), holdout=10.0, seed=2)
    dm.setup()
    state = dm.data_state()
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=3, encoder_hidden=8)).double()
    cal = calibrate(model, dm.table, state, n_samples=30, seed=0, chunk=16, by_lead=by_lead)
    assert cal.scale is not None and cal.reason == ""
    cases, _ = validation_cases(dm.table, state)
    # 19 series with 10-11 yearly held-out values each, 209 in all: at most 8 bins, so a bin
    # needs ceil(209 / 8) = 27 values, two years' worth (19 a year); years 9-11 share the last
    np.testing.assert_array_equal(cal.edges, [2.5, 4.5, 6.5, 8.5] if by_lead else [])
    B = len(cal.edges) + 1
    assert cal.scale.shape == (B, 1) and cal.n_values[0] == 209
    assert cal.n_series == len(cases) and cal.n_values[0] >= MIN_VALUES
    seeds = case_seeds(0, dm.table, cases, "validation")  # calibrate's draws
    stats = case_stats(model, cases, state, 30, seeds, chunk=16)
    target = np.concatenate([c.target for c in cases])  # (M, 1)
    lead = np.concatenate([c.lead for c in cases])  # (M,)
    group = np.concatenate([np.full(len(c.t_target), i) for i, c in enumerate(cases)])
    raw, scaled = stats, scale_bands(stats, cal.factors(lead))

    def inside(s: np.ndarray) -> np.ndarray:
        return ((s[..., 2] <= target) & (target <= s[..., 4]))[:, 0]  # (M,)

    assert inside(raw).mean() == pytest.approx(cal.raw_coverage)  # fertility: no gaps
    index = np.searchsorted(cal.edges, lead, side="right")
    for b in range(B):
        m = index == b
        _, g, count = np.unique(group[m], return_inverse=True, return_counts=True)
        S = len(count)
        assert S >= MIN_SERIES and m.sum() >= MIN_VALUES
        by_series = float((inside(scaled)[m] / count[g]).sum())  # series covered, fractionally
        assert np.ceil((S + 1) * 0.9) - 1e-9 <= by_series <= np.ceil((S + 1) * 0.9) + 1
    np.testing.assert_allclose(scaled[..., 3], raw[..., 3])  # the median stays


def test_lead_bins_close_once_they_hold_enough_series_and_values() -> None:
    """Ten series on a yearly grid, leads 1..7, two values a year each (two channels): a bin
        needs 9 series and 20 values, so each year is a bin; lead 7 is reached by 5 series only,
        and joins lead 6. Fewer series per year: years pair up. Leads equal up to rounding stay
        together, and ``max_bins`` bounds the count by raising the values a bin needs (the greedy
    walk may then give fewer)."""
    lead = np.tile(np.arange(1.0, 8.0), 10)  # (70,) series-major
    groups = np.repeat(np.arange(10), 7)
    n_obs = np.where((lead == 7) & (groups >= 5), 0, 2)  # lead 7 observed in 5 series
    np.testing.assert_allclose(lead_bins(lead, groups, n_obs), [1.5, 2.5, 3.5, 4.5, 5.5])
    # one value a year: 10 a year, so two years a bin (leads 1-2, 3-4, 5-7 with the tail)
    np.testing.assert_allclose(lead_bins(lead, groups, n_obs // 2), [2.5, 4.5])
    noisy = lead + np.where(groups % 2 == 0, 1e-12, 0.0)  # the same leads, other rounding
    np.testing.assert_allclose(lead_bins(noisy, groups, n_obs), [1.5, 2.5, 3.5, 4.5, 5.5])
    # at most 3 bins: each needs ceil(130 / 3) = 44 values: leads 1-3, then 4-6, whose tail
    # (lead 7, 10 values) is too short alone and joins it
    np.testing.assert_allclose(lead_bins(lead, groups, n_obs, max_bins=3), [3.5])
    # 8 series: never enough for a bin's factor, so one bin
    few = groups < 8
    assert lead_bins(lead[few], groups[few], n_obs[few]).size == 0


def test_factors_by_lead_hold_ninety_percent_at_every_lead_where_one_factor_does_not() -> None:
    """Exchangeable series whose forecast error grows with lead time (std = lead) under a
    band of constant width: one factor over-covers the near leads and under-covers the far
    ones; one per lead-time bin is calibrated at each. Averaged over 400 draws of 20
    calibration series and fresh test series, the coverage at each lead is 19/21 = 0.905 in
    expectation (one value per series and bin: the plain conformal rule)."""
    rng = np.random.default_rng(0)
    leads = np.arange(1.0, 7.0)
    n_series, reps = 20, 400
    stats = _gaussian_stats(len(leads), 0.0, 1.0)  # (6, 1, 5) the band: +-z95, every lead
    lead = np.tile(leads, n_series)
    groups = np.repeat(np.arange(n_series), len(leads))
    cover = {"one": np.zeros(len(leads)), "lead": np.zeros(len(leads))}
    for _ in range(reps):
        y_cal = rng.normal(size=(n_series, len(leads))) * leads
        scores = band_scores(np.tile(stats, (n_series, 1, 1)), y_cal.reshape(-1, 1))
        y_new = rng.normal(size=(n_series, len(leads))) * leads
        for name, by_lead in (("one", False), ("lead", True)):
            edges, scale = lead_scales(scores, groups, lead, by_lead=by_lead)
            assert len(edges) == (5 if by_lead else 0)
            cal = Calibration(scale, np.zeros(1), n_series, np.nan, 6.0, edges=edges)
            s = scale_bands(stats, cal.factors(leads))  # (6, 1, 5)
            hit = (s[None, :, 0, 2] <= y_new) & (y_new <= s[None, :, 0, 4])
            cover[name] += hit.mean(axis=0) / reps
    np.testing.assert_allclose(cover["lead"], 19 / 21, atol=0.02)
    assert cover["one"][0] > 0.99 and cover["one"][-1] < 0.85  # one factor: wrong at both ends


def test_a_forecast_value_takes_its_lead_bins_factor() -> None:
    """Bins ``< 1.5``, ``1.5-3.5``, ``>= 3.5`` with two channels: each lead gets its bin's
    row, past the calibrated leads the last; the summary scales per value."""
    scale = np.array([[0.5, 1.0], [2.0, 3.0], [4.0, 5.0]])
    cal = Calibration(scale, np.array([30, 30]), 12, 0.9, 4.0, edges=np.array([1.5, 3.5]))
    lead = np.array([0.2, 1.5, 3.0, 3.5, 99.0])
    np.testing.assert_array_equal(cal.factors(lead), scale[[0, 1, 1, 2, 2]])
    stats = np.tile(np.array([1.0, 2.0, -3.0, 1.0, 4.0]), (5, 2, 1))  # (5, 2, 5)
    out = scale_bands(stats, cal.factors(lead))
    np.testing.assert_allclose(out[..., 4] - 1.0, 3.0 * scale[[0, 1, 1, 2, 2]])
    np.testing.assert_allclose(out[..., 1], 2.0 * scale[[0, 1, 1, 2, 2]])
    np.testing.assert_allclose(out[..., 3], 1.0)
    line = cal.describe(["a", "b"])
    assert "scaled by lead time, a x0.5, b x1 (lead < 1.5); a x2, b x3 (lead 1.5-3.5)" in line
    assert line.endswith("a x4, b x5 (lead >= 3.5)")
    with pytest.raises(ValueError, match="not calibrated: too few"):
        Calibration(None, np.zeros(1), 3, 0.9, 4.0, "too few").factors(lead)


def test_a_one_series_fit_is_not_calibrated_on_its_one_validation_block() -> None:
    """One series has one validation block: its values move together, one draw. `calibrate`
    scores the model's own band there but gives no factor, and says why."""
    dm = CSVDataModule(str(DATA / "co2_mauna_loa_weekly.csv"), time_unit="Y", holdout=2.0)
    dm.setup()
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=3, encoder_hidden=8)).double()
    cal = calibrate(model, dm.table, dm.data_state(), n_samples=20)
    assert cal.scale is None and cal.n_series == 1 and 95 < cal.n_values[0] <= 105
    assert 0 <= cal.raw_coverage <= 1 and 1.9 < cal.max_lead <= 2.0
    assert "one validation block" in cal.reason
    assert "not calibrated" in cal.describe(["co2"])
