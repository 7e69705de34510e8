"""The series-weighted conformal rule (`latentode.calibration.conformal_scale` with ``groups``)
against exact finite-sample answers on synthetic series."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from latentode.calibration import WIDEN, conformal_scale

W = 1.0 + WIDEN  # `conformal_scale`'s factor: the score, widened by this


def test_the_factor_is_where_the_series_weight_reaches_s_plus_one_times_the_level() -> None:
    """Scores 0.1, 0.2, ..., 20.0, ten to a series (20 series): each score is the weight at
    or below it, so the rule stops at weight 21 * 0.9 = 18.9, the score 18.9. The rule before
    rounded the weight up to 19 (the score 19.0), a whole count that weighted sums do not need.
    With whole weights (one value a series) or thirds (three) both stop at 19; at 9 series at
    the largest score of all; at 8 series there is none."""
    scores = np.arange(1, 201) / 10.0  # (200,)
    tenths = np.repeat(np.arange(20), 10)
    assert conformal_scale(scores, groups=tenths) == W * 18.9
    thirds = np.repeat(np.arange(20), 3)
    assert conformal_scale(scores[:60], groups=thirds) == W * scores[56]  # weight 19
    assert conformal_scale(np.arange(1.0, 21.0), groups=np.arange(20)) == W * 19.0
    nine = np.repeat(np.arange(9), 10)
    assert conformal_scale(scores[:90], groups=nine) == W * 9.0  # the largest
    assert conformal_scale(scores[:80], groups=np.repeat(np.arange(8), 10)) is None
    assert conformal_scale(scores, 0.5, tenths) == W * 10.5  # 21 * 0.5; before, 11


def _coverage(n_series: int, per_series: int, rho: float, reps: int, seed: int) -> float:
    """Mean coverage of fresh values by the 90% band scaled by the series-weighted factor,
    over ``reps`` draws of calibration series: each series ``per_series`` values, N(0, 1)
    each, correlation ``rho`` within a series, none between; the model's band N(0, 2^2)
    (twice too wide). A fresh value, drawn at random from a fresh series, is N(0, 1): inside
    the band scaled by ``lam`` with probability ``2 Phi(2 z95 lam) - 1``, exactly."""
    rng = np.random.default_rng(seed)
    half = 2.0 * norm.ppf(0.95)  # the model's half-band
    groups = np.repeat(np.arange(n_series), per_series)
    cover = np.empty(reps)
    for i in range(reps):
        shared = rng.normal(size=(n_series, 1))
        y = np.sqrt(rho) * shared + np.sqrt(1.0 - rho) * rng.normal(size=(n_series, per_series))
        lam = conformal_scale(np.abs(y).reshape(-1) / half, groups=groups)  # row-major
        cover[i] = 2.0 * norm.cdf(half * lam) - 1.0
    return float(cover.mean())


@pytest.mark.parametrize(
    ("n_series", "per_series", "rho", "expected", "tol"),
    [
        # series that move as one: the plain rule over 20 scores, the 19th: 19 / 21
        (20, 10, 1.0, 19 / 21, 0.005),
        # values independent: the 189th of 200 (weight 18.9); before, the 190th: 190 / 201
        (20, 10, 0.0, 189 / 201, 0.0015),
        # 9 series: the largest score, exactly 0.9 when a series' values move as one, and the
        # largest of 27 independent values, 27 / 28, when they do not: the guarantee's price
        (9, 3, 1.0, 0.9, 0.007),
        (9, 3, 0.0, 27 / 28, 0.003),
    ],
)
def test_series_weighted_bands_cover_fresh_series_as_the_finite_sample_rank_says(
    n_series: int, per_series: int, rho: float, expected: float, tol: float
) -> None:
    """Exchangeable Gaussian series: the expected coverage of a fresh series' value is the
    rank's, ``k / (n + 1)``, for the ``n`` units the scores act as: ``S`` series when their
    values move as one, all ``S m`` values when they are independent. Never below 0.90."""
    cover = _coverage(n_series, per_series, rho, reps=2000, seed=0)
    assert cover == pytest.approx(expected, abs=tol)
    assert cover >= 0.9 - tol
