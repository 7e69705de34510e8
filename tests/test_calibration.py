"""Split-conformal band calibration (`latentode.calibration`) against known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from latentode.calibration import (
    MIN_VALUES,
    band_scores,
    calibrate,
    conformal_scale,
    validation_cases,
)
from latentode.data.csv_module import CSVDataModule
from latentode.evaluate import case_stats
from latentode.forecast import QUANTILES, scale_bands
from latentode.nn.latent_ode import LatentODE, LatentODEConfig

DATA = Path(__file__).resolve().parents[1] / "data"
Z95 = 1.6448536269514722  # standard normal 95% quantile


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
    assert conformal_scale(r) == 19.0
    r_nan = np.concatenate([r, [np.nan] * 5])  # missing targets do not count
    assert conformal_scale(r_nan) == 19.0
    assert conformal_scale(r[: MIN_VALUES - 1]) is None  # too few to calibrate
    assert conformal_scale(np.concatenate([r[:-2], [np.inf] * 2])) is None  # 19th infinite


def test_series_count_once_however_many_values_they_hold() -> None:
    """Nine one-value series scoring 1..9 and one series of 100 values scoring 0.01: taken
    value by value, the long series decides the factor (99th of 109 values: 0.01); taken
    series by series, it weighs as one of ten, and the factor is the 10th of 10 units (9)."""
    r = np.concatenate([np.arange(1.0, 10.0), np.full(100, 0.01)])
    groups = np.concatenate([np.arange(9), np.full(100, 9)])
    assert conformal_scale(r) == 0.01
    assert conformal_scale(r, groups=groups) == 9.0
    one_each = np.arange(1.0, 21.0)  # one value per series: the plain rule
    assert conformal_scale(one_each, groups=np.arange(20)) == conformal_scale(one_each) == 19.0
    nine = np.repeat(np.arange(9), 3)  # 9 series: the level needs all of them (the maximum)
    assert conformal_scale(np.arange(1.0, 28.0), groups=nine) == 27.0
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


def test_calibrated_bands_cover_ninety_percent_of_the_validation_values() -> None:
    """End to end on an untrained tiny model: the factor `calibrate` returns makes the bands
    cover at least 90% of the validation series, each weighted once (the rule it applies),
    and at most one series' share more; one channel here."""
    dm = CSVDataModule(str(DATA / "fertility_worldbank.csv"), holdout=10.0, seed=2)
    dm.setup()
    state = dm.data_state()
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=3, encoder_hidden=8)).double()
    cal = calibrate(model, dm.table, state, n_samples=30, seed=0, chunk=16)
    assert cal.scale is not None and cal.scale.shape == (1,) and cal.reason == ""
    cases, _ = validation_cases(dm.table, state)
    assert cal.n_series == len(cases) and cal.n_values[0] >= MIN_VALUES
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    stats = case_stats(model, cases, state, 30, gen, chunk=16)  # calibrate's draws
    target = np.concatenate([c.target for c in cases])  # (M, 1)
    weight = np.concatenate([np.full(len(c.t_target), 1 / len(c.t_target)) for c in cases])
    raw, scaled = stats, scale_bands(stats, cal.scale)

    def inside(s: np.ndarray) -> np.ndarray:
        return ((s[..., 2] <= target) & (target <= s[..., 4]))[:, 0]  # (M,)

    assert inside(raw).mean() == pytest.approx(cal.raw_coverage)  # fertility: no gaps
    S = len(cases)
    by_series = float((weight * inside(scaled)).sum())  # series covered, fractionally
    assert np.ceil((S + 1) * 0.9) - 1e-9 <= by_series <= np.ceil((S + 1) * 0.9) + 1
    np.testing.assert_allclose(scaled[..., 3], raw[..., 3])  # the median stays


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
