"""Calibrated forecast bands: split-conformal scaling of the model's predictive spread.

A latent ODE's 5-95% band is the posterior predictive's: the spread of the posterior paths
plus the decoder's observation noise. Nothing makes it cover 90% of what happens next: on the
shipped fertility data the learned noise absorbs the forecast error and the band covers 97%
of held-out values. The validation forecasts of a fit (series the model never trained on, or
for one series the block before the test block) say by how much to widen or narrow it.

For each held-out validation value ``y`` with predictive quantiles ``q05 <= q50 <= q95``, the
score is how many half-bands away from the median it lies::

    r = (y - q50) / (q95 - q50)   if y >= q50,   else   (q50 - y) / (q50 - q05)

The band ``q50 +- lam * (half-band)`` holds ``y`` exactly when ``r <= lam``. With ``n``
exchangeable scores, ``lam`` is the ``ceil((n + 1) * 0.9)``-th smallest (split conformal
prediction, Vovk et al. 2005; Lei et al. 2018), and the scaled band covers a new value with
probability at least 0.90. Values of one series are not exchangeable draws (its errors grow
together), the series are: so each validation series counts once, its values sharing its
weight, and ``lam`` is the smallest score at which the cumulative weight reaches ``(S + 1) *
0.9`` for ``S`` series, the 0.9 quantile of the scores so weighted with one more series'
weight at infinity for the series to come (hierarchical conformal prediction: Lee, Barber
and Willett 2023; Dunn, Wasserman and Ramdas 2022 pool the series' CDFs so). A value drawn
at random from a new series exchangeable with the validation series then lies inside the
scaled band with probability at least 0.90, however the values within a series depend on one
another (`conformal_scale`). It needs ``S >= 9``. The guarantee is for the worst case,
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
series holds one value; 0.945 -> 0.940 at 20 series of 10 independent values a bin). On the
shipped fertility data's 21 validation series one factor for every lead time covered
0.93-0.96 on average over random splits (``reports/calibration.md``). A one-series fit has
one validation block, one draw: it is not calibrated (on the CO2 record the model's band
covered 42% of the validation block and 99% of the test block, so a factor from the one
would have misled on the other).

The whole predictive distribution is scaled about its median, ``q50 + lam * (x - q50)``
(`latentode.predictive.scale_bands`): every quantile moves so, the std is multiplied by
``lam``, the median stays and the mean moves by ``(lam - 1) * (mean - q50)`` (nothing for a
symmetric predictive). A channel modelled on a log or logit scale
(`latentode.data.transforms`) is scored and scaled there: its band stays positive, or between
its bounds (`latentode.predictive.Predictive`).

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

Other central bands (``latentode predict --levels``, `BandFactors`): the band of coverage
``L`` (quantiles ``(1 -+ L) / 2``) is scored by its own half-bands and gets its own factors
at level ``L``, by lead-time bin, each bin holding at least `min_series` series (``L / (1 -
L)`` above 0.9: 19 at 0.95). A model's band can have the wrong shape as well as the wrong
width: on the fertility data the model's own 50% band held 90-92% of the held-out values, and
the 5-95% band's factors left it at 0.63-0.69, where its own gave 0.51-0.53
(``reports/calibration_levels.md``). A level with too few validation series takes the 5-95%
band's factors (0.93-0.94 coverage at 95% there).

The factors of one end are made non-decreasing in the level (`nested_factors`): a band whose
own factor is below a narrower band's takes that one. Each level's factor is estimated on its
own, and its noise could put a wider band's scaled end inside a narrower one's; moved out to
it (`latentode.predictive.scale_bands`) the two quantiles tied. With ``--levels 95
--calibrate_tails`` on a fertility fit, q02.5 = q05 on 49% of the test rows and q95 = q97.5
on 31% (both ends of the 95% band, too few series for their own, at its central factors; the
5-95% band's ends each at the most extreme of 21 series' scores). Raised, every end lies its
factor times the model's own half-band out, so the quantiles are strictly ordered wherever
the model's are, and a raise only widens a band: each keeps the coverage its own factor gives
(there: none tied; the 95% band covered 0.966 of the test values, 0.941 before, 10% wider).
What `Calibration.describe` prints (``latentode predict`` and ``test``) are the factors so
raised, each raise named with the factor it replaced; the mean and std keep the 5-95% band's
own.

Each end on its own (``latentode predict --calibrate_tails``, `TailFactors`): a band that
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

One ``lam`` per channel when the channel alone can give one, else the one pooled over
channels. The guarantee holds for the lead times the validation forecasts covered (the fit's
``holdout``); past them the last bin's ``lam`` is carried on as it is, and
`Calibration.max_lead` says where that starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from .data.prep import Segment, forecast_segment
from .data.table import SeriesTable
from .ensemble import Ensemble
from .evaluate import Case, case_predictives, case_seeds, held_out_cases
from .forecast import check_table
from .nn.latent_ode import LatentODE
from .predictive import (
    _TINY,
    LEVEL,
    band_columns,
    band_levels,
    band_scores,
    percent,
    quantile_names,
)

__all__ = [
    "LEAD_BINS",
    "LEVEL",
    "MIN_SERIES",
    "MIN_VALUES",
    "WIDEN",
    "BandFactors",
    "Calibration",
    "TailFactors",
    "band_scores",
    "bin_index",
    "calibrate",
    "conformal_scale",
    "lead_bins",
    "lead_scales",
    "min_series",
    "nested_factors",
    "tail_scales",
    "validation_cases",
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


@dataclass(frozen=True)
class BandFactors:
    """The factors of a band other than the 5-95% one (``latentode predict --levels``).

    Attributes:
        level: its coverage (0.8: the 10-90% band).
        edges, scale: as `Calibration`'s, for this band's own scores (its bins hold at least
            `min_series` series); ``scale`` None when the validation series are too few for
            this level, and the band then takes the 5-95% band's factors (``reason`` says so).
        raw_coverage: share of the validation values inside the model's own band.
        reason: why ``scale`` is None, else "".
    """

    level: float
    edges: np.ndarray
    scale: np.ndarray | None
    raw_coverage: float
    reason: str = ""


@dataclass(frozen=True)
class TailFactors:
    """The two ends of one band, each calibrated on its own (``calibrate(tails=True)``).

    Attributes:
        level: the band's coverage (0.9: the 5-95% band; each end at ``(1 + level) / 2``).
        edges: lead-time bins shared by the two ends (as `Calibration`'s).
        lower, upper: ``[B, D]`` factors of the lower and the upper end; None when the
            validation series are too few for the ends' level (``reason`` says so), and the
            band then keeps its central factors.
        below, above: shares of the validation values below the model's own lower end and
            above its upper end.
        reason: why ``lower`` is None, else "".
    """

    level: float
    edges: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None
    below: float
    above: float
    reason: str = ""


@dataclass(frozen=True)
class Calibration:
    """How the bands of one model are scaled.

    Attributes:
        scale: ``[B, D]`` factor per lead-time bin and channel (``lam`` above; ``B = 1``: one
            for every lead time); None when there was too little to calibrate on (then
            ``reason`` says why).
        n_values: held-out validation values scored, per channel ``[D]``.
        n_series: validation series they came from (1 for a one-series fit's block).
        raw_coverage: share of them inside the model's own 5-95% band.
        max_lead: the longest lead time (table time units) among them.
        reason: why ``scale`` is None, else "".
        edges: ``[B - 1]`` increasing lead times where one bin ends and the next begins (bin
            ``b`` holds ``edges[b - 1] <= lead < edges[b]``; the first and last are open).
        others: the other bands' central factors (`BandFactors`, ``--levels``).
        tails: each band's ends calibrated on their own (`TailFactors`), when asked.
    """

    scale: np.ndarray | None
    n_values: np.ndarray
    n_series: int
    raw_coverage: float
    max_lead: float
    reason: str = ""
    edges: np.ndarray = field(default_factory=lambda: np.zeros(0))
    others: tuple[BandFactors, ...] = ()
    tails: tuple[TailFactors, ...] = ()

    def factors(self, lead: np.ndarray, levels: Sequence[float] | None = None) -> np.ndarray:
        """``[n, D]`` factors of the 5-95% band for values ``lead`` ``[n]`` past their
        history's last observation: their bins' (the last bin's past the calibrated leads).
        With ``levels``: ``[L, n, D]``, one row per band of `band_levels` (ascending), each
        by its own factors, or the 5-95% band's where it has none (`BandFactors`). With
        `tails` and ``levels``: ``[2, L, n, D]``, the lower ends' then the upper ends' (a band
        whose ends could not be calibrated on their own has its central factors on both).
        With ``levels`` each end's factors are `nested_factors`: a band whose own factor is
        below a narrower band's takes that one, so the calibrated quantiles are strictly
        ordered wherever the model's are. Without ``levels`` the 5-95% band's own central
        ``[n, D]`` still (the mean and std's, ``center`` of
        `latentode.predictive.scale_bands`, which so do not depend on ``levels``).

        Raises:
            ValueError: not calibrated, or not for one of ``levels``.
        """
        if self.scale is None:
            raise ValueError(f"not calibrated: {self.reason}")
        if levels is None:
            return self._central(lead, levels)
        return nested_factors(self._own(lead, levels))

    def _own(self, lead: np.ndarray, levels: Sequence[float]) -> np.ndarray:
        """`factors` with ``levels`` before `nested_factors`: each band's (or end's) own."""
        if not self.tails:
            return self._central(lead, levels)
        levels = band_levels(levels)
        central = self._central(lead, levels)  # (L, n, D); raises for a level not calibrated
        lower, upper = central.copy(), central.copy()
        ends = {t.level: t for t in self.tails}  # `calibrate` gives every level its ends
        for i, level in enumerate(levels):
            t = ends[level]
            if t.lower is not None and t.upper is not None:
                b = bin_index(t.edges, lead)
                lower[i], upper[i] = t.lower[b], t.upper[b]
        return np.stack([lower, upper])

    def scaling(
        self, lead: np.ndarray, levels: Sequence[float] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The arguments of `latentode.predictive.Predictive.summary` for values ``lead``
        past their history: each band's factors (`factors` with ``levels``) and ``center``,
        the 5-95% band's central ones that scale the mean and std."""
        return self.factors(lead, levels), self.factors(lead)

    def _central(self, lead: np.ndarray, levels: Sequence[float] | None) -> np.ndarray:
        """`factors` with both ends of each band scaled alike."""
        assert self.scale is not None
        principal = self.scale[bin_index(self.edges, lead)]
        if levels is None:
            return principal
        bands = {b.level: b for b in self.others}
        rows = []
        for level in band_levels(levels):
            band = bands.get(level)
            if level != LEVEL and band is None:
                raise ValueError(f"not calibrated for the {level:.4g} band; pass its level")
            own = band is not None and band.scale is not None
            rows.append(band.scale[bin_index(band.edges, lead)] if own else principal)
        return np.stack(rows)

    def describe(self, channels: list[str]) -> str:
        """What was calibrated on and the factors each band is scaled by, for the user: a
        line for the 5-95% band, one per other band (`others`), one per band whose ends were
        calibrated on their own (`tails`).

        The factors are those applied (`factors` with the levels calibrated): where nesting
        raised one above the band's own (`nested_factors`), the line gives it raised and says
        from what and to which band's, by lead-time bin and channel; a band whose two ends
        ended up with different factors gives each end's.
        """
        if self.scale is None:
            line = f"5-95% bands are the model's own, not calibrated: {self.reason}"
            if self.others:
                line += f" (so are the {_listed(b.level for b in self.others)} bands)"
            return line
        w = self._applied(channels)
        head = (
            f"5-95% bands calibrated on {int(self.n_values.sum())} held-out values of "
            f"{self.n_series} validation series "
            f"(lead times up to {self.max_lead:.4g}), where the model's own band covered "
            f"{self.raw_coverage:.0%}"
        )
        if LEVEL in w.ends:
            mid = _spans(self.edges, _rows(self.scale, channels))
            lines = [f"{head}: the mean and std {mid}; q05 and q95 each on its own (below)"]
        else:
            text = w.band(LEVEL, self.edges)
            if w.raised(LEVEL):
                text += "; the mean and std by its own factors, before nesting"
            lines = [f"{head}: {text}"]
        for b in self.others:
            name = f"{percent(b.level)}% bands, where the model's own covered {b.raw_coverage:.0%}"
            if b.level in w.ends:
                lines.append(f"{name}: each end on its own (below)")
            elif b.scale is None:
                own = w.band(b.level, self.edges)
                lines.append(f"{name}: the 5-95% band's factors, {b.reason}; {own}")
            else:
                lines.append(f"{name}: {w.band(b.level, b.edges)}")
        for t in self.tails:
            low, high = w.column(0, t.level), w.column(1, t.level)
            name = (
                f"{low} and {high} each on its own (the model's own {percent(t.level)}% band "
                f"left {t.below:.1%} below it and {t.above:.1%} above)"
            )
            if t.level not in w.ends:
                lines.append(f"{name}: not, {t.reason}")
            else:
                ends = f"{low} {w.end(0, t.level, t.edges)}; {high} {w.end(1, t.level, t.edges)}"
                lines.append(f"{name}: {ends}")
        return "\n".join(lines)

    def _applied(self, channels: list[str]) -> _Applied:
        """The factors `factors` applies with the levels calibrated (`others`' and `LEVEL`),
        on the bins of every band and end together, beside each end's own."""
        assert self.scale is not None
        levels = band_levels([b.level for b in self.others])
        found = [self.edges, *(b.edges for b in self.others), *(t.edges for t in self.tails)]
        edges = np.unique(np.concatenate(found))  # (P - 1,)
        lead = np.concatenate([[-np.inf], edges])  # (P,) each piece's first lead (`bin_index`)
        shape = (2, len(levels), len(lead), self.scale.shape[1])
        own = np.broadcast_to(self._own(lead, levels), shape)
        ends = {t.level for t in self.tails if t.lower is not None and t.upper is not None}
        return _Applied(levels, edges, nested_factors(own), own, frozenset(ends), channels)


@dataclass(frozen=True)
class _Applied:
    """The factors of every band's ends as applied, in words (`Calibration.describe`).

    Attributes:
        levels: the bands, ascending (`band_levels`).
        pieces: ``[P - 1]`` the edges of every band's and end's lead-time bins together.
        applied, own: ``[2, L, P, D]`` each end's factor in each piece, after and before
            `nested_factors`.
        ends: the levels whose ends were calibrated on their own.
        channels: the channels' names.
    """

    levels: tuple[float, ...]
    pieces: np.ndarray
    applied: np.ndarray
    own: np.ndarray
    ends: frozenset[float]
    channels: list[str]

    def column(self, e: int, level: float) -> str:
        """The forecast CSV's column of end ``e`` (0 lower, 1 upper) of band ``level``."""
        names = quantile_names(self.levels)
        return names[band_columns(self.levels, level)[2 * e] - 2]  # (after mean and std)

    def raised(self, level: float) -> bool:
        """Whether nesting raised either end of band ``level`` anywhere."""
        i = self.levels.index(level)
        return bool((self.applied[:, i] > self.own[:, i]).any())

    def end(self, e: int, level: float, edges: np.ndarray) -> str:
        """End ``e`` of band ``level`` in words, by its own bins ``edges`` (split where a
        raise differs within one), each raise named."""
        i = self.levels.index(level)
        rows = []
        for p in range(len(self.pieces) + 1):
            cells = []
            for d, c in enumerate(self.channels):
                v, mine = self.applied[e, i, p, d], self.own[e, i, p, d]
                cell = f"{c} x{v:.3g}"
                if v > mine:
                    j = next(j for j in range(i) if self.own[e, j, p, d] == v)
                    by = self.levels[j]  # the band (or end) whose factor it took
                    by = self.column(e, by) if by in self.ends else f"the {percent(by)}% band"
                    a, b = _apart(v, mine)
                    cell = f"{c} x{a} (raised by nesting from {b} to {by}'s)"
                cells.append(cell)
            rows.append(", ".join(cells))
        return _spans(self.pieces, rows, edges)

    def band(self, level: float, edges: np.ndarray) -> str:
        """Band ``level`` in words: one text for both ends where they agree."""
        low, high = self.end(0, level, edges), self.end(1, level, edges)
        if low == high:
            return low
        return f"{self.column(0, level)} {low}; {self.column(1, level)} {high}"


def _listed(levels: Iterable[float]) -> str:
    """Levels as ``80% and 95%``."""
    names = [f"{percent(v)}%" for v in levels]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _apart(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` to 3 significant digits, or as many more (up to 9) as tell them apart."""
    for digits in range(3, 10):
        x, y = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if x != y:
            break
    return x, y


def _rows(scale: np.ndarray, channels: list[str]) -> list[str]:
    """``[B, D]`` factors in words, one text per bin: ``a x0.5, b x1``."""
    return [", ".join(f"{c} x{v:.3g}" for c, v in zip(channels, row, strict=True)) for row in scale]


def _spans(edges: np.ndarray, per_bin: list[str], keep: np.ndarray | None = None) -> str:
    """A band's factors in words (``per_bin``: one text per bin of ``edges``): ``scaled a
    x0.5`` or, by lead time, each bin's. With ``keep``: neighbouring bins whose texts are
    equal are one unless an edge of ``keep`` (the band's own bins) lies between them."""
    if keep is not None:
        cut = [j for j, e in enumerate(edges) if e in keep or per_bin[j] != per_bin[j + 1]]
        edges, per_bin = edges[cut], [per_bin[0], *(per_bin[j + 1] for j in cut)]
    if len(per_bin) == 1:
        return f"scaled {per_bin[0]}"
    e = [f"{v:.4g}" for v in edges]
    spans = [f"lead < {e[0]}"] + [f"lead {a}-{b}" for a, b in pairwise(e)]
    spans.append(f"lead >= {e[-1]}")
    bins = "; ".join(f"{f} ({span})" for f, span in zip(per_bin, spans, strict=True))
    return f"scaled by lead time, {bins}"


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
    levels = np.unique(key)
    edges: list[float] = []
    series: set[int] = set()
    values = 0
    for j, level in enumerate(levels):
        at = key == level
        series |= set(groups[at & (n_obs > 0)].tolist())
        values += int(n_obs[at].sum())
        if len(series) >= fewest and values >= need and j + 1 < len(levels):
            edges.append(float(level + levels[j + 1]) / 2)
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


def _block_case(seg: Segment, t_val: float) -> Case:
    """A validation block's forecast: condition on ``seg`` before ``t_val``, score the rest."""
    before = seg.times < t_val
    hist = Segment(seg.series, float(seg.times[before][0]), seg.times[before], seg.values[before])
    return Case(seg.series, hist, seg.times[~before], seg.values[~before])


def validation_cases(table: SeriesTable, data_state: dict[str, Any]) -> tuple[list[Case], str]:
    """The fit's validation forecasts found in ``table``: ``(cases, "")`` or ``([], why not)``.

    Many series: each validation series (``data_state["val_series"]``) conditioned on its
    history and scored on its last ``holdout``, as the fit validated. One series: the
    validation block ``data_state["val_window"]``, conditioned on the history before it
    (`calibrate` reports its coverage but does not calibrate on one block). Several series
    held out in time: each series' own block (``data_state["val_windows"]``).
    """
    history = data_state.get("history")
    window = data_state.get("val_window")
    if window is not None:
        t_val, t_test = window
        seg = None
        if table.n_series == 1:
            seg = forecast_segment(table, 0, t_val, history, t_test)
        if seg is None:
            return [], "the file does not hold the fit's validation block of its one series"
        return [_block_case(seg, t_val)], ""
    windows = data_state.get("val_windows")
    if windows is not None:  # held out in time: every series' own validation block
        cases = []
        for sid in (i for i in table.series_ids if i in windows):
            t_val, t_test = windows[sid]
            seg = forecast_segment(table, table.index_of(sid), t_val, history, t_test)
            if seg is not None:
                cases.append(_block_case(seg, t_val))
        return cases, "" if cases else "the file holds none of the fit's validation blocks"
    ids = data_state.get("val_series")
    if ids is None:
        return [], "the checkpoint stores no validation series (fitted before calibration)"
    present = set(table.series_ids)
    index = [table.index_of(i) for i in ids if i in present]
    if not index:
        return [], "the file holds none of the fit's validation series"
    holdout = float(data_state.get("holdout") or 0.1)
    return held_out_cases(table, index, holdout, history, "extrapolation"), ""


@torch.no_grad()
def calibrate(
    model: LatentODE | Ensemble,
    table: SeriesTable,
    data_state: dict[str, Any],
    n_samples: int = 200,
    seed: int = 0,
    importance: bool = False,
    chunk: int = 128,
    refine: int = 0,
    by_lead: bool = True,
    levels: Sequence[float] | None = None,
    tails: bool = False,
) -> Calibration:
    """Forecast the fit's validation windows and derive the band factors.

    Args:
        model: the fitted latent ODE, or an `Ensemble` of them.
        table: a file holding the validation series (the training file).
        data_state: the checkpoint's data description.
        n_samples, importance, refine: as the forecasts to be calibrated are made.
        seed: seeds the posterior paths (each series' from the seed and its id:
            `case_seeds`, so the factors do not depend on ``chunk``); the scores rest on the
            exact quantiles of the paths' mixture (`latentode.predictive.mixture_quantiles`),
            so the noise draws do not move them.
        chunk: series per model call.
        by_lead: one factor per lead-time bin (`lead_bins`; one bin when the validation
            values cannot fill two); False: one for every lead time.
        levels: the bands to calibrate besides the 5-95% one (coverages, e.g. ``(0.8,
            0.95)``): each gets factors from its own scores (`BandFactors`).
        tails: also calibrate each end of every band on its own (`TailFactors`), so that at
            most ``(1 - L) / 2`` of the values fall past each end of a band of coverage ``L``.

    Returns:
        A `Calibration`; its ``scale`` is None (with the reason) when the file lacks the
        validation series or they are too few (`MIN_SERIES`, `MIN_VALUES`).
    """
    check_table(table, data_state)
    D = table.n_channels
    levels = band_levels(levels)
    cases, why = validation_cases(table, data_state)
    if not cases:
        others = _uncalibrated(levels, {}, why)
        return Calibration(None, np.zeros(D, dtype=int), 0, math.nan, math.nan, why, others=others)
    model.eval()
    seeds = case_seeds(seed, table, cases, "validation")
    preds = case_predictives(model, cases, data_state, n_samples, seeds, importance, chunk, refine)
    sides = (None, "lower", "upper") if tails else (None,)
    by_level: dict[tuple, list[np.ndarray]] = {(v, e): [] for v in levels for e in sides}
    for p, c in zip(preds, cases, strict=True):
        for v, e in by_level:
            by_level[v, e].append(p.scores(c.target, v, e))
    every = {v: np.concatenate(by_level[v, None]) for v in levels}  # (M, D) per band
    scores = every[LEVEL]
    target = np.concatenate([c.target for c in cases])  # (M, D)
    n_values = (~np.isnan(target)).sum(axis=0)  # (D,)
    raw = _inside(scores)
    lead = np.concatenate([c.lead for c in cases])  # (M,)
    max_lead = float(lead.max())
    if data_state.get("val_window") is not None:
        why = (
            f"a one-series fit has one validation block ({int(n_values.sum())} values), and "
            "its values rise and fall together: one draw, too little to calibrate on (the "
            f"model's own band covered {raw:.0%} of it)"
        )
        others = _uncalibrated(levels, every, why)
        return Calibration(None, n_values, 1, raw, max_lead, why, others=others)
    groups = np.concatenate([np.full(len(c.t_target), i) for i, c in enumerate(cases)])  # (M,)
    found = lead_scales(scores, groups, lead, by_lead)
    if found is None:
        fix = "raise the fit's val_fraction or holdout"
        fitted = data_state.get("val_series") or []
        held = len(set(fitted) & set(table.series_ids))
        if held < len(fitted):  # the file is not the training file
            fix = (
                f"the file holds {held} of the fit's {len(fitted)} validation series; give "
                "the training file"
            )
        elif data_state.get("val_windows") is not None:  # every series already validates
            fix = "every series validates already (held out in time): more series are needed"
        why = (
            f"the validation forecasts hold {int(n_values.sum())} values of {len(cases)} "
            f"series, fewer than {MIN_VALUES} values of {MIN_SERIES} series; {fix}"
        )
        others = _uncalibrated(levels, every, why)
        return Calibration(None, n_values, len(cases), raw, max_lead, why, others=others)
    edges, scale = found
    others = []
    for v in (v for v in levels if v != LEVEL):
        band = lead_scales(every[v], groups, lead, by_lead, v)
        if band is None:
            why = (
                f"not calibrated on its own: a {percent(v)}% band needs at least {min_series(v)} "
                f"validation series with {MIN_VALUES} values, the fit has {len(cases)}"
            )
            others.append(BandFactors(v, np.zeros(0), None, _inside(every[v]), why))
        else:
            others.append(BandFactors(v, *band, _inside(every[v])))
    ends = []
    for v in levels if tails else ():
        low, up = (np.concatenate(by_level[v, e]) for e in ("lower", "upper"))
        past = (_past(low), _past(up))
        found = tail_scales(low, up, groups, lead, by_lead, v)
        if found is None:
            need = min_series((1 + v) / 2)
            why = (
                f"each end of a {percent(v)}% band needs at least {need} validation series with "
                f"{MIN_VALUES} values, the fit has {len(cases)}: the band keeps its central factors"
            )
            ends.append(TailFactors(v, np.zeros(0), None, None, *past, why))
        else:
            ends.append(TailFactors(v, *found, *past))
    return Calibration(
        scale,
        n_values,
        len(cases),
        raw,
        max_lead,
        edges=edges,
        others=tuple(others),
        tails=tuple(ends),
    )


def _past(scores: np.ndarray) -> float:
    """The share of the values past the model's own end, from one end's signed scores."""
    ok = ~np.isnan(scores)
    return float((scores[ok] > 1.0).mean()) if ok.any() else math.nan


def _inside(scores: np.ndarray) -> float:
    """The share of the scored values inside the model's own band (score at most 1)."""
    ok = ~np.isnan(scores)
    return float((scores[ok] <= 1.0).mean()) if ok.any() else math.nan


def _uncalibrated(
    levels: tuple[float, ...], scores: dict[float, np.ndarray], why: str
) -> tuple[BandFactors, ...]:
    """The bands besides the 5-95% one when it could not be calibrated (for ``why``)."""
    return tuple(
        BandFactors(v, np.zeros(0), None, _inside(scores[v]) if v in scores else math.nan, why)
        for v in levels
        if v != LEVEL
    )
