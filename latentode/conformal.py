"""The split-conformal rule of the calibrated bands: factors from scores, lead-time bins.

What `latentode.calibration` calibrates on, and the score ``r`` of a held-out value (how many
half-bands from the median it lies), are in its module docstring; here is how the factors
are taken from the scores.

With ``n`` exchangeable scores, ``lam`` is the ``ceil((n + 1) * 0.9)``-th smallest (split
conformal prediction, Vovk et al. 2005; Lei et al. 2018), and the scaled band covers a new
value with probability at least 0.90. Values of one series are not exchangeable draws (its
errors grow together), the series are: so each validation series counts once, its values
sharing its weight, and ``lam`` is the smallest score at which the cumulative weight reaches
``(S + 1) * 0.9`` for ``S`` series, the 0.9 quantile of the scores so weighted with one more
series' weight at infinity for the series to come (hierarchical conformal prediction: Lee,
Barber and Willett 2023; Dunn, Wasserman and Ramdas 2022 pool the series' CDFs so). A value
drawn at random from a new series exchangeable with the validation series then lies inside
the scaled band with probability at least 0.90, however the values within a series depend on
one another (`conformal_scale`). It needs ``S >= 9``. The guarantee is for the worst case,
series whose values move as one, where the rule is the plain one over ``S`` scores; where a
series holds several values in a bin that move apart, the pooled scores act as a larger
sample and the band covers more, up to ``(S + 1) 0.9 / S``: at 9 series the factor is the
largest of all their scores (exchangeable Gaussian series of 3 values a bin: 0.964 at 9
series, 0.935 at 20, 0.917 at 40; ``reports/calibration_notes.md``, 2026-11-25). That is the
price of the guarantee: one value of each series drawn at random covers 0.90 there too, but
its factor rests on ``S`` values (one split in eight under 0.80 at 9 series), and its
average over draws loses the guarantee (0.80 where each series holds one value far out among
five). Until 2026-11-25 the weight to reach was rounded up, ``ceil((S + 1) 0.9)``, a rank
correction for whole counts that weighted sums do not need (the same factor where every
series holds one value; 0.945 -> 0.940 at 20 series of 10 independent values a bin).

One ``lam`` per lead-time bin (by default, `lead_bins`): a model's own band barely widens
with lead time while its errors grow, so one factor for every lead over-covers the near
future and under-covers the far one. The validation values are binned by how far past the
history's last observation they lie, each bin holding at least `MIN_SERIES` series and
`MIN_VALUES` values (and at most `LEAD_BINS` bins), and each bin gets its own factor by the
rule above. A forecast value takes the factor of its lead's bin. The guarantee then holds per
bin rather than only on average over leads, and where every series has one value per bin (a
common yearly grid) it is the plain split-conformal rule over exchangeable series, proved
rather than checked. On the shipped fertility data, over random halvings of four fits' 42
held-out series (``reports/calibration.md``), the bins cover 0.90-0.93 at every lead from 1
to 6 years. Their bands are 0.68-0.92 times as wide as one factor's, which covers 0.95-1.00
at 1-3 years ahead. The price is more variation between splits (4.4-8.8% of them below 0.80,
against 0.4-3.9%), since each bin's factor rests on about one value a series.

The factors of one end are made non-decreasing in the level (`nested_factors`): a band whose
own factor is below a narrower band's takes that one. Each level's factor is estimated on its
own, and its noise could put a wider band's scaled end inside a narrower one's; moved out to
it (`latentode.bands.scale_bands`) the two quantiles tied. With ``--levels 95
--calibrate_tails`` on a fertility fit, q02.5 = q05 on 49% of the test rows and q95 = q97.5
on 31% (both ends of the 95% band, too few series for their own, at its central factors; the
5-95% band's ends each at the most extreme of 21 series' scores). Raised, every end lies its
factor times the model's own half-band out, so the quantiles are strictly ordered wherever
the model's are, and a raise only widens a band: each keeps the coverage its own factor gives
(there: none tied; the 95% band covered 0.966 of the test values, 0.941 before, 10% wider).

Each end on its own (``latentode predict --calibrate_tails``,
`latentode.calibration.TailFactors`): a band that
covers 90% can still hold its misses all on one side, when the model's median is biased. On
the fertility data the calibrated 5-95% band left 6.4-7.6% of the held-out values above q95
and 0.9-2.4% below q05 (7.1-9.4% above at 1-3 years ahead for three of four fits): a user
who reads q95 as the value exceeded one time in twenty is told up to one in eleven. Scoring
each end by its signed half-bands, ``(y - q50) / (q95 - q50)`` for the upper one (negative
below the median), and taking each end's factor by the rule above at level ``(1 + L) / 2``
(0.95 for the 90% band) puts at most ``(1 - L) / 2`` of the values past each end, so the
band still covers ``L`` (Romano, Patterson and Candes 2019 calibrate the ends of quantile
regression so). A factor below 0 is taken as 0 (the end at the median: only wider). Each
end's level needs more series (`min_series` at 0.95: 19), and a band whose validation series
are too few for its ends keeps its central factors. Each end's factor there is about the
most extreme of the series' scores, so the ends' band is wider: on the fertility data each
end held 3.7-4.9% past it at the same coverage, 1.09-1.24x as wide
(``reports/calibration.md``).
"""

from __future__ import annotations

import math

import numpy as np

from .bands import _TINY, LEVEL

__all__ = [
    "LEAD_BINS",
    "MIN_SERIES",
    "MIN_VALUES",
    "WIDEN",
    "bin_index",
    "conformal_scale",
    "lead_bins",
    "lead_scales",
    "min_series",
    "nested_factors",
    "tail_scales",
]

MIN_VALUES = 20  # fewer validation values than this: no calibration (too unsteady)
MIN_SERIES = 9  # (S + 1) 0.9 <= S needs S >= 9 validation series
LEAD_BINS = 8  # at most this many lead-time bins (each factor rests on its bin alone)
WIDEN = 1e-9  # `conformal_scale` widens its factor by this share: rounding at the boundary


def min_series(level: float = LEVEL) -> int:
    """The validation series a band of coverage ``level`` needs for a finite factor: the
    fewest ``S`` with ``(S + 1) level <= S``, and at least `MIN_SERIES` (9 at 0.9, 19 at
    0.95, 99 at 0.99)."""
    return max(MIN_SERIES, math.ceil(level / (1.0 - level) - 1e-9))


def conformal_scale(
    scores: np.ndarray, level: float = LEVEL, groups: np.ndarray | None = None
) -> float | None:
    """The split-conformal factor from calibration scores.

    Args:
        scores: ``[n]`` scores (NaN: missing, ignored).
        level: the band's coverage.
        groups: ``[n]`` series of each score. None: the scores are the exchangeable units and
            the factor is the ``ceil((n + 1) level)``-th smallest. Given: the series are the
            units (values of one series are alike, so 115 values of 21 series are not 115
            independent draws): each series weighs 1 in total, spread evenly over its values,
            and the factor is the smallest score whose cumulative weight reaches ``(S + 1)
            level`` for ``S`` series (with one value per series, the rule above). It covers a
            value drawn at random from a new series exchangeable with these with probability
            at least ``level``: the weight of the ``S + 1`` series' scores above their own
            weighted ``level`` quantile is at most ``1 - level``, the new series is any one of
            them alike, and its weight at infinity only raises the quantile (Lee, Barber and
            Willett 2023).

    Returns:
        The factor (times ``1 + WIDEN``), or None with fewer than `MIN_VALUES` scores, too
        few series for the level (``S >= 9`` at 0.9), or when it would be infinite.
    """
    ok = ~np.isnan(scores)
    r = scores[ok]
    if len(r) < MIN_VALUES:
        return None
    if groups is None:
        weight = np.ones(len(r))
    else:
        _, g, count = np.unique(groups[ok], return_inverse=True, return_counts=True)
        weight = 1.0 / count[g]  # (n,) each series sums to 1
    order = np.argsort(r, kind="stable")
    r, cum = r[order], np.cumsum(weight[order])
    total = round(float(cum[-1]))
    # Weighted sums need no rounding up to a whole count (whole weights reach ceil(k) anyway);
    # the tolerance: (9 + 1) * 0.9 is 9.000000000000002, and a sum of weights may round down.
    k = (total + 1) * level - 1e-9
    if k > total:
        return None
    # At least _TINY: a signed score (`band_scores` of one end) below 0 puts the end at the
    # median, which only widens it.
    value = max(float(r[np.searchsorted(cum, k)]), _TINY)
    # A hair wider than the score (1e-9 relative), so that the value whose score it is stays
    # inside the scaled band, ``q50 + lam * (q95 - q50)``, after that sum is rounded.
    return value * (1.0 + WIDEN) if np.isfinite(value) else None


def nested_factors(scale: np.ndarray) -> np.ndarray:
    """Band factors made non-decreasing in the level: each band's the largest of its own and
    every narrower band's (the running maximum over levels).

    Each level's factor is estimated on its own scores, so their noise can put a wider band's
    below a narrower one's (module docstring): the wider band's end then falls inside the
    narrower one's, and moved out to it the two quantiles tie. With factors ``0 < lam_a <=
    lam_b`` for levels ``a < b`` and the model's own half-bands ``h_a < h_b``, the scaled ends
    are strictly ordered, ``lam_b h_b >= lam_a h_b > lam_a h_a``: at least the model's own
    spacing times ``lam_a`` apart. The running maximum is the least such raise, and raising a
    factor only widens its band, so each band keeps the coverage its own factor gives;
    pooling neighbouring levels' factors (isotonic regression) would instead lower some
    band's below its own conformal quantile and void its guarantee.

    Args:
        scale: ``[..., L, n, D]`` factors of each band (ascending levels on the third axis
            from the end), e.g. `Calibration.factors`' ``[L, n, D]`` or ``[2, L, n, D]``.

    Returns:
        ``[..., L, n, D]``: ``max(scale[..., :i + 1, :, :])`` for level ``i``.

    Raises:
        ValueError: ``scale`` has fewer than three axes.
    """
    scale = np.asarray(scale, dtype=np.float64)
    if scale.ndim < 3:
        raise ValueError(f"band factors are [..., L, n, D], got shape {scale.shape}")
    return np.maximum.accumulate(scale, axis=-3)


def bin_index(edges: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """The lead-time bin of each lead: ``b`` where ``edges[b - 1] <= lead < edges[b]``."""
    return np.searchsorted(edges, np.asarray(lead), side="right")


def lead_bins(
    lead: np.ndarray,
    groups: np.ndarray,
    n_obs: np.ndarray,
    max_bins: int = LEAD_BINS,
    level: float = LEVEL,
) -> np.ndarray:
    """Edges of the lead-time bins the calibration gives a factor each.

    Walking up the distinct lead times, a bin closes as soon as it holds at least
    `min_series` series (`MIN_SERIES` at the 0.9 ``level``) and ``max(MIN_VALUES, total /
    max_bins)`` values; a last bin short of that joins the one before. Values at one lead time
    are never split.

    Args:
        lead: ``[M]`` lead time of each validation time point (past its history's end).
        groups: ``[M]`` its series.
        n_obs: ``[M]`` observed values at it (over channels).
        max_bins: at most this many bins.
        level: the coverage of the band the bins are for.

    Returns:
        ``[B - 1]`` edges, midway between the last lead of a bin and the first of the next
        (empty: one bin).
    """
    key = np.round(lead, 9)  # equal leads computed by different subtractions stay together
    need = max(MIN_VALUES, math.ceil(n_obs.sum() / max_bins))
    fewest = min_series(level)
    leads = np.unique(key)
    edges: list[float] = []
    series: set[int] = set()
    values = 0
    for j, t in enumerate(leads):
        at = key == t
        series |= set(groups[at & (n_obs > 0)].tolist())
        values += int(n_obs[at].sum())
        if len(series) >= fewest and values >= need and j + 1 < len(leads):
            edges.append(float(t + leads[j + 1]) / 2)
            series, values = set(), 0
    if edges and (len(series) < fewest or values < need):
        edges.pop()  # the short tail joins the bin before
    return np.array(edges)


def lead_scales(
    scores: np.ndarray,
    groups: np.ndarray,
    lead: np.ndarray,
    by_lead: bool = True,
    level: float = LEVEL,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Lead-time bins and their factors from validation scores (what `calibrate` applies).

    Args:
        scores: ``[M, D]`` `band_scores` of the validation time points (NaN: missing), for
            the band of coverage ``level``.
        groups: ``[M]`` series of each time point.
        lead: ``[M]`` its lead time past its history's last observation.
        by_lead: bins by `lead_bins`; False: one bin.
        level: the band's coverage.

    Returns:
        ``(edges [B - 1], scale [B, D])`` (`Calibration`'s), one bin when some bin's factor
        would be infinite; None when not even one bin can be calibrated (`conformal_scale`).
    """
    edges = np.zeros(0)
    if by_lead:
        edges = lead_bins(lead, groups, (~np.isnan(scores)).sum(axis=1), level=level)
    scale = _bin_scales(scores, groups, lead, edges, level)
    if scale is None and len(edges):
        edges = np.zeros(0)
        scale = _bin_scales(scores, groups, lead, edges, level)
    return None if scale is None else (edges, scale)


def tail_scales(
    lower: np.ndarray,
    upper: np.ndarray,
    groups: np.ndarray,
    lead: np.ndarray,
    by_lead: bool = True,
    level: float = LEVEL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Lead-time bins and each end's factors of the band of coverage ``level``, every end at
    level ``(1 + level) / 2`` (module docstring).

    Args:
        lower, upper: ``[M, D]`` signed `band_scores` of the validation time points for the
            band's lower and upper end (NaN: missing).
        groups, lead, by_lead: as `lead_scales`'s.
        level: the band's coverage.

    Returns:
        ``(edges [B - 1], lower [B, D], upper [B, D])``, one bin when some bin's factor of
        either end would be infinite; None when not even one bin can be calibrated.
    """
    end = (1.0 + level) / 2
    edges = np.zeros(0)
    if by_lead:
        edges = lead_bins(lead, groups, (~np.isnan(upper)).sum(axis=1), level=end)
    for bins in (edges, np.zeros(0)) if len(edges) else (edges,):
        low = _bin_scales(lower, groups, lead, bins, end)
        up = _bin_scales(upper, groups, lead, bins, end)
        if low is not None and up is not None:
            return bins, low, up
    return None


def _bin_scales(
    scores: np.ndarray, groups: np.ndarray, lead: np.ndarray, edges: np.ndarray, level: float
) -> np.ndarray | None:
    """``[B, D]`` factors: per bin, per channel where the channel alone gives one, else the
    bin's pooled over channels; None when some bin's pooled factor cannot be had."""
    D = scores.shape[1]
    index = bin_index(edges, lead)  # (M,)
    rows = []
    for b in range(len(edges) + 1):
        r, g = scores[index == b], groups[index == b]
        pooled = conformal_scale(r.reshape(-1), level, np.repeat(g, D))  # row-major
        if pooled is None:
            return None
        per_channel = [conformal_scale(r[:, d], level, g) for d in range(D)]
        rows.append([pooled if v is None else v for v in per_channel])
    return np.array(rows)


def _past(scores: np.ndarray) -> float:
    """The share of the values past the model's own end, from one end's signed scores."""
    ok = ~np.isnan(scores)
    return float((scores[ok] > 1.0).mean()) if ok.any() else math.nan


def _inside(scores: np.ndarray) -> float:
    """The share of the scored values inside the model's own band (score at most 1)."""
    ok = ~np.isnan(scores)
    return float((scores[ok] <= 1.0).mean()) if ok.any() else math.nan
