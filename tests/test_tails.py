"""Each end of a band calibrated on its own (``--calibrate_tails``): signed scores, the
ends' conformal factors, and what a forecast does with them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import norm
from test_levels import (
    LEVELS,
    W,
    _fertility_fit,
    _normal_stats,
    own_factors,
    predictive_and_targets,
)

from latentode.calibration import (
    MIN_VALUES,
    BandFactors,
    Calibration,
    TailFactors,
    bin_index,
    calibrate,
    conformal_scale,
    min_series,
    nested_factors,
    tail_scales,
    validation_cases,
)
from latentode.evaluate import case_predictives, case_seeds, evaluate
from latentode.predictive import (
    _TINY,
    Predictive,
    band_columns,
    band_levels,
    band_scores,
    scale_bands,
)


def test_signed_scores_by_hand() -> None:
    """Median 0, 5-95% band (-1, 2): the upper end's scores are ``y / 2`` and the lower
    end's ``-y``, on either side of the median; a zero half-band gives +-inf off the median."""
    stats = np.array([0.0, 0.0, -1.0, 0.0, 2.0])
    y = np.array([-3.0, -0.5, 0.0, 1.0, 4.0])
    np.testing.assert_array_equal(band_scores(stats, y, "upper"), [-1.5, -0.25, 0.0, 0.5, 2.0])
    np.testing.assert_array_equal(band_scores(stats, y, "lower"), [3.0, 0.5, 0.0, -1.0, -4.0])
    np.testing.assert_array_equal(band_scores(stats, y), [3.0, 0.5, 0.0, 0.5, 2.0])  # central
    flat = np.array([0.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(
        band_scores(flat, y, "upper"), [-np.inf] * 2 + [0, np.inf, np.inf]
    )
    assert np.isnan(band_scores(stats, np.array([np.nan]), "lower")).all()
    with pytest.raises(ValueError, match="side is None, 'lower' or 'upper'"):
        band_scores(stats, y, "both")


@pytest.mark.parametrize("kinds", [["none", "log"], ["logit", "logit(-5, 20)"], ["log1p", "log"]])
def test_each_ends_signed_score_says_exactly_which_values_its_scaled_end_holds(kinds) -> None:
    """The rule behind `tail_scales`, end by end and band by band: a value is at or above
    the lower end scaled by ``lo_v`` iff its lower score at ``v`` is at most ``lo_v``, and
    likewise for the upper end, on a channel as it is and on a transformed one."""
    p, target = predictive_and_targets(kinds, seed=3)
    levels = band_levels(LEVELS)  # (0.5, 0.8, 0.9, 0.95)
    lower, upper = np.array([0.4, 0.6, 0.7, 0.75]), np.array([1.2, 1.9, 2.5, 3.0])
    lam = np.stack([lower, upper])[:, :, None, None]  # (2, L, 1, 1)
    band = p.summary(lam, LEVELS, center=np.ones(1))
    for i, v in enumerate(levels):
        lo, _, hi = band_columns(LEVELS, v)
        np.testing.assert_array_equal(
            band[..., lo] <= target, p.scores(target, v, "lower") <= lower[i]
        )
        np.testing.assert_array_equal(
            target <= band[..., hi], p.scores(target, v, "upper") <= upper[i]
        )
    if kinds[0].startswith("logit"):
        assert (band[..., 2:, 0] > 0).all() and (band[..., 2:, 0] < 1).all()


def test_scale_bands_scales_each_end_by_its_own_factor_and_the_mean_by_center() -> None:
    stats = _normal_stats(LEVELS, n=2)  # (2, 1, 2 + 9): N(0, 1)
    stats[..., 0] = 0.3  # a mean off the median, to see it move
    levels = band_levels(LEVELS)
    lower, upper = np.array([0.5, 0.6, 0.7, 0.8]), np.array([1.5, 1.6, 1.7, 1.8])
    lam = np.stack([lower, upper])[:, :, None, None]
    out = scale_bands(stats, lam, LEVELS, center=np.array([2.0]))
    q = norm.ppf([0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975])
    want = q * np.concatenate([lower[::-1], [1.0], upper])
    np.testing.assert_allclose(out[0, 0, 2:], want, rtol=1e-12)
    assert out[0, 0, 0] == pytest.approx(0.6) and out[0, 0, 1] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="pass center"):
        scale_bands(stats, lam, LEVELS)
    # one factor for both ends: center defaults to the 5-95% band's, as before
    same = scale_bands(stats, lam[1], LEVELS)
    assert same[0, 0, 0] == pytest.approx(0.3 * upper[levels.index(0.9)])


def test_tail_factors_are_each_ends_order_statistic_and_never_below_zero() -> None:
    """One value per series, no lead bins: each end's factor is its signed scores'
    ``ceil((S + 1) 0.95)``-th smallest; all values below the median put the upper end at
    it (factor ~0, only wider than a negative one)."""
    rng = np.random.default_rng(0)
    S = 40
    low, up = rng.normal(size=(2, S, 1))
    groups, lead = np.arange(S), np.ones(S)
    edges, lo_f, up_f = tail_scales(low, up, groups, lead, by_lead=False)
    k = int(np.ceil((S + 1) * 0.95))  # 39
    assert edges.size == 0
    assert lo_f[0, 0] == W * np.sort(low[:, 0])[k - 1]
    assert up_f[0, 0] == W * np.sort(up[:, 0])[k - 1]
    _, _, below_median = tail_scales(low, -np.abs(up) - 0.1, groups, lead, by_lead=False)
    assert below_median[0, 0] == pytest.approx(_TINY)
    few = np.arange(min_series(0.95) - 1)  # 18 series cannot give a 0.95 end
    assert tail_scales(low[few], up[few], groups[few], lead[few]) is None
    assert conformal_scale(np.full(MIN_VALUES, -np.inf)) == pytest.approx(_TINY)


def test_each_end_on_its_own_holds_its_share_where_one_factor_does_not() -> None:
    """A model whose median is biased low: N(0, 1) predictive, values N(0.8, 0.6). Over 300
    random halvings of 200 series (one value each), one factor covers 90% with every miss
    above; each end on its own leaves at most about 5% past each end (exchangeable series:
    split conformal's guarantee, Romano et al. 2019), at the same coverage."""
    rng = np.random.default_rng(1)
    S = 200
    y = rng.normal(0.8, 0.6, (S, 1))
    stats = np.tile([0.0, 1.0, norm.ppf(0.05), 0.0, norm.ppf(0.95)], (S, 1, 1))  # (S, 1, 5)
    central = band_scores(stats, y)
    low, up = band_scores(stats, y, "lower"), band_scores(stats, y, "upper")
    half = norm.ppf(0.95)
    one_miss, end_miss = [], []
    for _ in range(300):
        a = rng.permutation(S) < S // 2
        g = np.flatnonzero(a)
        lam = conformal_scale(central[a, 0], groups=g)
        _, lo_f, up_f = tail_scales(low[a], up[a], g, np.ones(len(g)), by_lead=False)
        t = y[~a, 0]
        one_miss.append(((t < -lam * half).mean(), (t > lam * half).mean()))
        end_miss.append(((t < -lo_f[0, 0] * half).mean(), (t > up_f[0, 0] * half).mean()))
    one, ends = np.mean(one_miss, axis=0), np.mean(end_miss, axis=0)
    assert one[0] < 0.01 and one[1] > 0.08  # one factor: every miss above
    assert 0.03 < ends[0] <= 0.055 and 0.03 < ends[1] <= 0.055
    assert 1 - ends.sum() == pytest.approx(1 - one.sum(), abs=0.02)  # the same coverage


def test_calibrate_with_tails_gives_each_end_its_own_factors() -> None:
    """19 validation series of a tiny untrained model: the 50, 80 and 90% bands' ends each
    hold their share of the series in every bin of their own; a 95% band's ends need 39
    series, so it keeps its central factors and says so; the mean and std follow the central
    factor, so the forecast's point is the one without tails."""
    model, dm = _fertility_fit()
    state = dm.data_state()
    cal = calibrate(
        model, dm.table, state, n_samples=30, seed=0, chunk=16, levels=LEVELS, tails=True
    )
    assert cal.scale is not None and [t.level for t in cal.tails] == [0.5, 0.8, 0.9, 0.95]
    cases, _ = validation_cases(dm.table, state)
    preds = list(
        case_predictives(
            model, cases, state, 30, case_seeds(0, dm.table, cases, "validation"), chunk=16
        )
    )
    lead = np.concatenate([c.lead for c in cases])  # (M,)
    group = np.concatenate([np.full(len(c.t_target), i) for i, c in enumerate(cases)])
    rows = cal.factors(lead, LEVELS)  # (2, L, M, 1) what the ends are scaled by
    assert rows.shape == (2, 4, len(lead), 1)
    central = own_factors(cal, lead)  # (L, M, 1) each band's own central factors
    own = np.stack([central, central])  # (2, L, M, 1) each end's own, before nesting
    for i, t in enumerate(cal.tails):
        if t.lower is not None and t.upper is not None:
            own[:, i] = np.stack([t.lower, t.upper])[:, bin_index(t.edges, lead)]
    np.testing.assert_array_equal(rows, np.maximum.accumulate(own, axis=1))  # nested
    for i, t in enumerate(cal.tails):
        signed = {
            e: np.concatenate(
                [p.scores(c.target, t.level, e) for p, c in zip(preds, cases, strict=True)]
            )
            for e in ("lower", "upper")
        }
        assert t.below == pytest.approx(float((signed["lower"] > 1).mean()))
        assert t.above == pytest.approx(float((signed["upper"] > 1).mean()))
        if t.level == 0.95:
            assert t.lower is None and "needs at least 39 validation series" in t.reason
            # its central factors, raised where the 5-95% band's ends reach further
            np.testing.assert_array_equal(rows[:, i], np.maximum(central[i], rows[:, i - 1]))
            continue
        assert t.lower is not None and t.reason == ""
        index = np.searchsorted(t.edges, lead, side="right")
        for side, row in (("lower", own[0, i]), ("upper", own[1, i])):
            for b in range(len(t.edges) + 1):
                m = index == b
                _, g, count = np.unique(group[m], return_inverse=True, return_counts=True)
                S = len(count)
                assert min_series((1 + t.level) / 2) <= S
                held = float(((signed[side][m, 0] <= row[m, 0]) / count[g]).sum())
                need = np.ceil((S + 1) * (1 + t.level) / 2)
                assert need - 1e-9 <= held <= need + 1
    assert not np.array_equal(rows[0], rows[1])  # the ends differ somewhere
    np.testing.assert_array_equal(cal.factors(lead), central[2])  # without levels: central
    p, c = preds[0], cases[0]
    lam, center = cal.scaling(c.lead, LEVELS)  # what `predict` and `test` pass
    ends = p.summary(lam, LEVELS, center)
    plain_cal = dataclasses.replace(cal, tails=())
    both = p.summary(plain_cal.factors(c.lead, LEVELS), LEVELS)
    np.testing.assert_array_equal(ends[..., :2], both[..., :2])  # mean and std: central
    lines = cal.describe(["fertility"]).splitlines()
    assert any(
        line.startswith("q05 and q95 each on its own (the model's own 90%") for line in lines
    )
    assert any("q02.5 and q97.5 each on its own" in x and ": not, each end" in x for x in lines)
    with pytest.raises(ValueError, match=r"not calibrated for the 0\.7 band"):
        cal.factors(lead, [0.7])
    # `latentode test`'s calibrated row: the same point forecast, other bands
    frame = evaluate(model, dm.table, state, 30, seed=0, calibration=cal, levels=LEVELS)
    plain = evaluate(model, dm.table, state, 30, seed=0, calibration=plain_cal, levels=LEVELS)
    row = frame.method == "latent ODE, calibrated bands"
    assert frame[row].mse.item() == plain[row].mse.item()
    assert frame[row].width90.item() != plain[row].width90.item()


def audit_tie() -> Calibration:
    """The audit's tie: the 5-95% band's ends at factors 0.8 (lower) and 0.7 (upper), each on
    its own, its centre 0.6; the 95% band, too few series for its ends, at its central 0.5
    (no lead bins: one factor for every lead)."""
    one = np.zeros(0)
    return Calibration(
        np.full((1, 2), 0.6),
        np.array([40, 40]),
        20,
        1.0,
        6.0,
        others=(BandFactors(0.95, one, np.full((1, 2), 0.5), 1.0),),
        tails=(
            TailFactors(0.9, one, np.full((1, 2), 0.8), np.full((1, 2), 0.7), 0.0, 0.0),
            TailFactors(0.95, one, None, None, 0.0, 0.0, "too few"),
        ),
    )


def test_calibrated_quantiles_are_strictly_ordered_where_a_wider_bands_factor_is_smaller() -> None:
    """The audit's tie: the 5-95% band's ends at factors 0.8 (lower) and 0.7 (upper), each on
    its own; the 95% band, too few series for its ends, at its central 0.5. Scaled by its own
    factor the 95% band's ends (0.5 x 1.96) lay inside the 5-95% band's (0.8 x 1.645, 0.7 x
    1.645), and moved out to them q02.5 = q05 and q95 = q97.5. Its factors raised to the
    narrower band's (`nested_factors`), each end lies that factor times 1.96 out: strictly
    beyond. A log channel likewise, on the log scale. The mean and std keep the 5-95% band's
    central factor 0.6."""
    none = np.full((2, 2), np.nan)  # (n, D) draws, unused
    cal = audit_tie()
    lead = np.array([1.0, 3.0])
    mean, std = np.zeros((2, 2)), np.ones((2, 2))  # N(0, 1) on each channel's scale
    p = Predictive(none[None], mean, std, np.zeros((1, 2, 2)), np.ones((1, 2)), ["none", "log"])
    factors, center = cal.scaling(lead, [0.95])  # what `predict` and `test` pass
    stats = p.summary(factors, [0.95], center)  # (n, D, 7): mean, std, q02.5 ... q97.5
    assert (np.diff(stats[..., 2:], axis=-1) > 0.05).all()  # strictly, by more than rounding
    z95, z975 = norm.ppf(0.95), norm.ppf(0.975)
    want = np.array([-0.8 * z975, -0.8 * z95, 0.0, 0.7 * z95, 0.7 * z975])
    np.testing.assert_allclose(stats[:, 0, 2:], np.tile(want, (2, 1)), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats[:, 1, 2:], np.tile(np.exp(want), (2, 1)), rtol=1e-9)
    np.testing.assert_allclose(stats[:, 0, :2], [[0.0, 0.6]] * 2, atol=1e-12)
    np.testing.assert_array_equal(factors[0, 1], np.full((2, 2), 0.8))  # raised from 0.5
    np.testing.assert_array_equal(factors[1, 1], np.full((2, 2), 0.7))
    with pytest.raises(ValueError, match=r"band factors are \[\.\.\., L, n, D\]"):
        nested_factors(np.ones((2, 3)))
