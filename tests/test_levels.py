"""Bands other than the 5-95% one (``--levels``): their quantiles, their own conformal
factors, nesting, and their scores in ``latentode test``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from test_transforms import _predictive

from latentode.bands import percent
from latentode.calibration import (
    MIN_VALUES,
    WIDEN,
    BandFactors,
    Calibration,
    bin_index,
    calibrate,
    conformal_scale,
    lead_bins,
    min_series,
    validation_cases,
)
from latentode.data.csv_module import CSVDataModule
from latentode.data.transforms import inverse
from latentode.evaluate import (
    case_predictives,
    case_seeds,
    evaluate,
    held_out_cases,
    scored_series,
    weighted_interval_score,
)
from latentode.nn.latent_ode import LatentODE, LatentODEConfig
from latentode.predictive import (
    QUANTILES,
    band_columns,
    band_levels,
    mixture_quantiles,
    quantile_names,
    quantile_probs,
    scale_bands,
)

DATA = Path(__file__).resolve().parents[1] / "data"
LEVELS = (0.5, 0.8, 0.95)

W = 1.0 + WIDEN  # `conformal_scale`'s factor: the score, widened by this


def test_levels_name_their_quantiles_and_the_default_is_the_five_to_ninety_five_band() -> None:
    assert quantile_probs() == QUANTILES == (0.05, 0.5, 0.95)  # exactly, not 0.04999...
    assert quantile_names() == ["q05", "q50", "q95"]
    assert band_levels([0.95, 0.8, 0.9, 0.8000000000000001]) == (0.8, 0.9, 0.95)
    assert quantile_probs(LEVELS) == (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)
    names = quantile_names([*LEVELS, 0.99])
    assert names == [
        "q00.5",
        "q02.5",
        "q05",
        "q10",
        "q25",
        "q50",
        "q75",
        "q90",
        "q95",
        "q97.5",
        "q99.5",
    ]
    # a very wide band is named in full, not 'q100' over 'q04.5e-06' (6 significant digits)
    assert quantile_names(0.9999999) == ["q00.000005", "q05", "q50", "q95", "q99.999995"]
    assert quantile_names(1 - 1e-11)[0] == "q00.0000000005"
    assert percent(0.025) == "2.5" and percent(0.9) == "90" and percent(0.975) == "97.5"
    # (mean, std, q02.5, q05, q10, q25, q50, ...): the 80% band is q10 / q90
    assert band_columns(LEVELS, 0.8) == (4, 6, 8)
    assert band_columns(LEVELS) == (3, 6, 9) and band_columns(()) == (2, 3, 4)
    for bad in (0.0, 1.0, -0.2, float("nan")):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            band_levels([bad])
    with pytest.raises(ValueError, match=r"no 0\.7 band"):
        band_columns(LEVELS, 0.7)
    assert [min_series(v) for v in (0.5, 0.8, 0.9, 0.95, 0.99)] == [9, 9, 9, 19, 99]


def test_summary_holds_the_quantiles_of_every_band() -> None:
    """The quantiles are the paths' mixture's at `quantile_probs` (a transformed channel's on
    its own scale, mapped back); the 5-95% columns and the moments are those of the default
    summary of the same predictive made afresh (nothing solved yet), bit for bit."""
    kinds = ["none", "log", "logit(0, 100)"]
    p = _predictive(kinds, K=3000, n=4)
    stats = p.summary(levels=LEVELS)  # (n, D, 2 + 9)
    assert stats.shape == (4, 3, 11)
    z = mixture_quantiles(p.paths, p.noise[:, None, :], quantile_probs(LEVELS))  # (9, n, D)
    np.testing.assert_allclose(stats[..., 2:], inverse(z, kinds).transpose(1, 2, 0), rtol=1e-12)
    lo, mid, hi = band_columns(LEVELS)
    fresh = _predictive(kinds, K=3000, n=4)
    np.testing.assert_array_equal(stats[..., [0, 1, lo, mid, hi]], fresh.summary())
    assert (np.diff(stats[..., 2:], axis=-1) > 0).all()


def _normal_stats(levels: tuple[float, ...], n: int = 1) -> np.ndarray:
    """``[n, 1, 2 + Q]`` summaries of N(0, 1) with the bands of ``levels``."""
    q = norm.ppf(quantile_probs(levels))
    return np.tile(np.concatenate([[0.0, 1.0], q]), (n, 1, 1))


def test_each_band_is_scaled_by_its_own_factor_and_wider_bands_hold_narrower_ones() -> None:
    """Factors 2, 1.5, 0.5, 1 for the 50, 80, 90 and 95% bands: the 50% band's ends move
    out twice as far, the 80% band's 1.5 times; the 90% band's own would sit inside the 80%
    band, so it is widened to it; the 95% band's own (+-1.96) already holds it; the mean and
    std take the 90% band's factor."""
    levels = (*LEVELS, 0.9)
    stats = _normal_stats(levels)  # (1, 1, 11): N(0, 1)
    stats[..., 0] = 0.3  # a mean off the median moves with the 90% band's factor
    lam = np.array([2.0, 1.5, 0.5, 1.0])[:, None, None]  # (L, n, D), ascending levels
    out = scale_bands(stats, lam, levels)[0, 0]
    z = norm.ppf([0.75, 0.9, 0.95, 0.975])  # the bands' upper ends
    np.testing.assert_allclose(out[7:], [2 * z[0], 1.5 * z[1], 1.5 * z[1], z[3]])
    np.testing.assert_allclose(out[2:6], -out[7:][::-1])
    assert out[6] == 0.0
    np.testing.assert_allclose(out[:2], [0.5 * 0.3, 0.5])
    # one factor for every band: each scaled by it, none nested (the draws' shape is kept)
    one = scale_bands(stats, np.array([0.7]), levels)[0, 0]
    np.testing.assert_allclose(one[2:], 0.7 * stats[0, 0, 2:])
    # the default summary's layout is unchanged: one level, [..., 5]
    five = _normal_stats(())
    np.testing.assert_array_equal(scale_bands(five, np.array([2.0])), scale_bands(five, 2.0, ()))


def predictive_and_targets(kinds: list[str], seed: int) -> tuple:
    """A predictive of 50 times on two channels of ``kinds`` and targets ``[50, 2]`` spread
    over and past its bands (zeros among them on a ``log1p`` channel)."""
    rng = np.random.default_rng(seed)
    p = _predictive(kinds, K=600, n=50)
    z = rng.normal(0.0, 1.5, (50, 2))
    if kinds[0] == "log1p":
        z[:, 0] = np.maximum(z[:, 0], 0.0)
    return p, inverse(z, kinds)


@pytest.mark.parametrize("kinds", [["none", "log"], ["logit", "logit(-5, 20)"], ["log1p", "log"]])
def test_a_bands_scores_say_exactly_which_values_its_scaled_band_holds(kinds) -> None:
    """The calibration's rule, band by band: a value is inside the band of level ``v``
    scaled by ``lam_v`` iff its score at ``v`` is at most ``lam_v`` (factors chosen so that no
    band is widened to hold a narrower one); on a logit channel every end stays inside the
    bounds."""
    p, target = predictive_and_targets(kinds, seed=2)
    levels = band_levels(LEVELS)  # (0.5, 0.8, 0.9, 0.95)
    for lam in ([0.4, 0.6, 0.7, 0.75], [1.2, 1.9, 2.5, 3.0], [1.0, 1.0, 1.0, 1.0]):
        band = p.summary(np.array(lam)[:, None, None], LEVELS)
        for v, factor in zip(levels, lam, strict=True):
            lo, _, hi = band_columns(LEVELS, v)
            inside = (band[..., lo] <= target) & (target <= band[..., hi])
            np.testing.assert_array_equal(inside, p.scores(target, v) <= factor)
        if kinds[0].startswith("logit"):
            assert (band[..., 2:, 0] > 0).all() and (band[..., 2:, 0] < 1).all()
            assert (band[..., 2:, 1] > -5).all() and (band[..., 2:, 1] < 20).all()
    np.testing.assert_array_equal(p.scores(target), p.scores(target, 0.9))
    crossed = p.summary(np.array([3.0, 1.0, 0.5, 0.4])[:, None, None], LEVELS)
    assert (np.diff(crossed[..., 2:], axis=-1) >= 0).all()  # the 50% band held by the rest
    lo, _, hi = band_columns(LEVELS, 0.5)
    np.testing.assert_array_equal(crossed[..., 2], crossed[..., lo])  # widened to it
    np.testing.assert_array_equal(crossed[..., -1], crossed[..., hi])


def test_a_conformal_factor_at_any_level_is_its_order_statistic() -> None:
    r = np.arange(1.0, 41.0)  # 40 scores
    assert conformal_scale(r, 0.5) == W * 21.0  # ceil(41 * 0.5) = 21st smallest
    assert conformal_scale(r, 0.95) == W * 39.0  # ceil(41 * 0.95) = 39th
    assert conformal_scale(r[:MIN_VALUES], 0.95) == W * 20.0  # 20: ceil(21 * 0.95) = 20th
    assert conformal_scale(r, 0.99) is None  # ceil(41 * 0.99) = 41 > 40
    groups = np.repeat(np.arange(18), 2)  # 18 series: too few for a 95% band (19)
    assert conformal_scale(np.arange(1.0, 37.0), 0.95, groups) is None
    assert conformal_scale(np.arange(1.0, 37.0), 0.9, groups) is not None


def _fertility_fit() -> tuple[LatentODE, CSVDataModule]:
    dm = CSVDataModule(str(DATA / "fertility_worldbank.csv"), holdout=10.0, seed=2)
    dm.setup()
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=3, encoder_hidden=8)).double()
    return model, dm


def own_factors(cal: Calibration, lead: np.ndarray) -> np.ndarray:
    """``[L, M, D]`` each band's own central factors at ``lead``, ascending levels, before
    `nested_factors` (a band without its own: the 5-95% band's)."""
    principal = cal.factors(lead)  # (M, D)
    rows = {0.9: principal}
    for band in cal.others:
        own = band.scale is not None
        rows[band.level] = band.scale[bin_index(band.edges, lead)] if own else principal
    return np.stack([rows[v] for v in sorted(rows)])


def test_calibrate_gives_each_band_its_own_conformal_factors() -> None:
    """19 validation series on an untrained tiny model: the 50, 80 and 95% bands each get
    factors that make them hold their level of the series (each weighted once) in every bin
    of their own, and at most one series' share more; a 99% band needs 99 series, so it
    takes the 5-95% band's factors and says so."""
    model, dm = _fertility_fit()
    state = dm.data_state()
    levels = (*LEVELS, 0.99)
    cal = calibrate(model, dm.table, state, n_samples=30, seed=0, chunk=16, levels=levels)
    assert cal.scale is not None and [b.level for b in cal.others] == [0.5, 0.8, 0.95, 0.99]
    cases, _ = validation_cases(dm.table, state)
    seeds = case_seeds(0, dm.table, cases, "validation")  # calibrate's draws
    preds = list(case_predictives(model, cases, state, 30, seeds, chunk=16))
    lead = np.concatenate([c.lead for c in cases])  # (M,)
    group = np.concatenate([np.full(len(c.t_target), i) for i, c in enumerate(cases)])
    own = own_factors(cal, lead)  # (5, M, 1) 50, 80, 90, 95, 99
    rows = cal.factors(lead, levels)  # (5, M, 1) what the bands are scaled by
    np.testing.assert_array_equal(rows, np.maximum.accumulate(own, axis=0))  # nested
    assert (rows > own).any()  # somewhere a band's own factor was below a narrower one's
    # A band's factors do not depend on the others asked for: nested over every band
    # calibrated, then the asked ones (as `describe` prints), not over the asked ones alone.
    np.testing.assert_array_equal(cal.factors(lead, ()), rows[[2]])  # forecast(levels=None)
    np.testing.assert_array_equal(cal.factors(lead, [0.95, 0.99]), rows[2:])
    np.testing.assert_array_equal(cal.factors(lead, [0.5, 0.99]), rows[[0, 2, 4]])
    for k, band in enumerate(cal.others):
        scores = np.concatenate(
            [p.scores(c.target, band.level) for p, c in zip(preds, cases, strict=True)]
        )
        raw = float((scores <= 1.0).mean())  # fertility: no gaps
        assert band.raw_coverage == pytest.approx(raw)
        row = own[k if k < 2 else k + 1]  # rows: 50, 80, 90, 95, 99
        if band.level == 0.99:
            assert (
                band.scale is None
                and "a 99% band needs at least 99 validation series" in band.reason
            )
            np.testing.assert_array_equal(row, own[2])
            continue
        assert band.scale is not None and band.reason == ""
        index = np.searchsorted(band.edges, lead, side="right")
        for b in range(len(band.edges) + 1):
            m = index == b
            _, g, count = np.unique(group[m], return_inverse=True, return_counts=True)
            S = len(count)
            assert min_series(band.level) <= S
            held = float(((scores[m, 0] <= row[m, 0]) / count[g]).sum())  # series, fractionally
            need = np.ceil((S + 1) * band.level)
            assert need - 1e-9 <= held <= need + 1
    few, ones = group < 18, np.ones(len(lead), dtype=int)  # 18 series: no 95% bin closes
    assert lead_bins(lead[few], group[few], ones[few], level=0.95).size == 0
    assert lead_bins(lead[few], group[few], ones[few]).size > 0  # 90% bins do
    lines = cal.describe(["fertility"]).splitlines()
    assert len(lines) == 5 and lines[0].startswith("5-95% bands calibrated on")
    assert lines[1].startswith("50% bands, where the model's own covered")
    assert "99% bands" in lines[4] and "the 5-95% band's factors" in lines[4]
    with pytest.raises(ValueError, match=r"not calibrated for the 0\.7 band"):
        cal.factors(lead, [0.7])
    plain = Calibration(cal.scale, cal.n_values, cal.n_series, 0.9, 9.0, edges=cal.edges)
    np.testing.assert_array_equal(plain.factors(lead, ()), cal.factors(lead)[None])


def test_a_bands_factors_do_not_depend_on_the_other_bands_asked_for() -> None:
    """A 50% band calibrated wider (factor 2) than the 5-95% band (1.2) in the first lead
    bin raises the 5-95% band to 2 there, and the 95% band above its own 1.5, whether or not
    the 50% band is asked for: the bands are nested over every band calibrated, so a forecast
    of the 5-95% band alone (``levels=None``) gets the factors `describe` prints."""
    edges = np.array([1.0])
    fifty = BandFactors(0.5, edges, np.array([[2.0], [0.5]]), 0.6)
    ninety_five = BandFactors(0.95, np.zeros(0), np.array([[1.5]]), 0.95)
    cal = Calibration(
        np.array([[1.2], [0.8]]), np.array([40]), 20, 0.9, 3.0, edges=edges,
        others=(fifty, ninety_five),
    )  # fmt: skip
    lead = np.array([0.5, 2.0])  # one value in each bin
    every = cal.factors(lead, [0.5, 0.95])  # (3, 2, 1): the 50, 90 and 95% bands
    np.testing.assert_array_equal(every[..., 0], [[2.0, 0.5], [2.0, 0.8], [2.0, 1.5]])
    np.testing.assert_array_equal(cal.factors(lead, ()), every[[1]])
    np.testing.assert_array_equal(cal.factors(lead, 0.95), every[1:])
    lam, center = cal.scaling(lead, band_levels(None))  # what `forecast(levels=None)` passes
    np.testing.assert_array_equal(lam, every[[1]])
    np.testing.assert_array_equal(center, [[1.2], [0.8]])  # the mean and std: its own
    assert "x2 (raised by nesting from 1.2 to the 50% band's)" in cal.describe(["a"])


def test_an_uncalibrated_fit_says_its_other_bands_are_the_models_own_too() -> None:
    dm = CSVDataModule(str(DATA / "co2_mauna_loa_weekly.csv"), time_unit="Y", holdout=2.0)
    dm.setup()
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=3, encoder_hidden=8)).double()
    cal = calibrate(model, dm.table, dm.data_state(), n_samples=20, levels=(0.8, 0.95))
    assert cal.scale is None and [b.scale for b in cal.others] == [None, None]
    line = cal.describe(["co2"])
    assert "not calibrated" in line and line.endswith("(so are the 80% and 95% bands)")


def test_evaluate_scores_every_band_beside_the_ninety_percent_one() -> None:
    """``latentode test --levels``: the columns of each band; the others are those of a run
    without it, value for value (the same draws), but for the calibrated 90% band, which is
    widened where a narrower calibrated band reaches past it, and ``wis``, which scores every
    band of the row; wider bands cover more."""
    model, dm = _fertility_fit()
    state = dm.data_state()
    cal = calibrate(model, dm.table, state, n_samples=30, levels=LEVELS)
    plain = evaluate(model, dm.table, state, n_samples=30, calibration=cal)
    frame = evaluate(model, dm.table, state, n_samples=30, calibration=cal, levels=LEVELS)
    extra = ["coverage50", "width50", "coverage80", "width80", "coverage95", "width95"]
    assert list(frame.columns) == [*plain.columns, *extra]
    same = frame.method != "latent ODE, calibrated bands"
    kept = [c for c in plain.columns if c != "wis"]  # wis: over every band of the row
    assert frame.loc[same, kept].equals(plain.loc[same, kept])
    calibrated = frame.loc[~same].iloc[0]
    held = plain.loc[~same].iloc[0]
    assert calibrated.mse == held.mse and calibrated.coverage90 >= held.coverage90
    assert held.width90 <= calibrated.width90 < 1.1 * held.width90
    # the calibrated row scales each band by its own factors: evaluate's first draws again
    history, holdout = state.get("history"), float(state["holdout"])
    cases = held_out_cases(
        dm.table, scored_series(dm.table, state), holdout, history, "extrapolation"
    )
    seeds = case_seeds(0, dm.table, cases, "extrapolation")
    preds = case_predictives(model, cases, state, 30, seeds)
    stats = np.concatenate(
        [p.summary(cal.factors(c.lead, LEVELS), LEVELS) for p, c in zip(preds, cases, strict=True)]
    )
    target = np.concatenate([c.target for c in cases])
    for v in LEVELS:
        lo, _, hi = band_columns(LEVELS, v)
        inside = (stats[..., lo] <= target) & (target <= stats[..., hi])
        assert calibrated[f"coverage{round(100 * v)}"] == inside[~np.isnan(target)].mean()
    # below90 / above90: the 5-95% band's misses, by side (here the calibrated q05 and q95)
    lo, _, hi = band_columns(LEVELS, 0.9)
    ok = ~np.isnan(target)
    assert calibrated.below90 == (target < stats[..., lo])[ok].mean()
    assert calibrated.above90 == (target > stats[..., hi])[ok].mean()
    bands = frame[frame.method.str.startswith("latent ODE")]
    sides = bands.coverage90 + bands.below90 + bands.above90
    np.testing.assert_allclose(sides, 1.0, rtol=1e-12)
    assert (bands.above90 > 0).any()  # the check above is not of empty sides
    assert len(bands) == 5  # forecast, calibrated, half-observed, interpolation, gaps
    cover = bands[["coverage50", "coverage80", "coverage90", "coverage95"]].to_numpy()
    width = bands[["width50", "width80", "width90", "width95"]].to_numpy()
    assert (np.diff(cover, axis=1) >= 0).all() and (np.diff(width, axis=1) > 0).all()
    baselines = frame[~frame.method.str.startswith("latent ODE")]
    assert baselines[[*extra, "below90", "above90"]].isna().all().all()
    # A point forecast's wis is its absolute error, however many bands the row scores.
    np.testing.assert_allclose(baselines.wis, baselines.mae, rtol=1e-12)
    wis = weighted_interval_score(stats, target, LEVELS)  # the calibrated row's, all its bands
    assert calibrated.wis == pytest.approx(float(np.nanmean(wis)), rel=1e-12)
    assert calibrated.wis != held.wis  # (the plain run scores the 5-95% band and median alone)


def test_the_weighted_interval_score_by_hand_and_against_the_crps() -> None:
    """By hand: median 0, 5-95% band (-1, 2) (a = 0.1), y = 3 is 1 above it: IS = 3 + 20 * 1
    = 23 and WIS = (3 / 2 + 0.1 / 2 * 23) / 1.5; inside the band only the width and |y - m| count.
    With 19 and 99 bands of N(0, 1) it approaches the normal's CRPS from above; a band twice
    too wide or half too narrow scores worse than the right one on N(0, 1) values."""
    stats = np.array([[0.0, 1.0, -1.0, 0.0, 2.0]] * 3)
    y = np.array([3.0, 0.5, np.nan])
    np.testing.assert_allclose(
        weighted_interval_score(stats, y)[:2], [(1.5 + 0.05 * 23) / 1.5, (0.25 + 0.05 * 3) / 1.5]
    )
    assert np.isnan(weighted_interval_score(stats, y)[2])
    for y in (0.3, 1.5):
        crps = y * (2 * norm.cdf(y) - 1) + 2 * norm.pdf(y) - 1 / np.sqrt(np.pi)
        gap = []
        for step in (0.05, 0.01):  # 19 and 99 bands
            levels = tuple(np.round(np.arange(step, 1 - step / 2, step), 2))
            row = np.concatenate([[0.0, 1.0], norm.ppf(quantile_probs(levels))])
            gap.append(weighted_interval_score(row, np.array(y), levels) / crps - 1)
        assert 0 < gap[1] < 0.006 and gap[1] < gap[0] < 0.03  # from above, closer with more
    y = np.random.default_rng(0).normal(size=20000)
    mean = {
        scale: weighted_interval_score(
            _normal_stats(LEVELS, len(y))[:, 0] * scale, y, LEVELS
        ).mean()
        for scale in (0.5, 1.0, 2.0)
    }
    assert mean[1.0] < mean[0.5] and mean[1.0] < mean[2.0]
