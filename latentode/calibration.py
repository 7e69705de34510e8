"""Calibrated forecast bands: split-conformal scaling of the model's predictive spread.

A latent ODE's 5-95% band is the posterior predictive's: the spread of the posterior paths
plus the decoder's observation noise. Nothing makes it cover 90% of what happens next: on the
shipped fertility data the learned noise absorbs the forecast error and the band covers 97%
of held-out values. The validation forecasts of a fit (series the model never trained on, or
for one series the block before the test block) say by how much to widen or narrow it.

For each held-out validation value ``y`` with predictive quantiles ``q05 <= q50 <= q95``, the
score is how many half-bands away from the median it lies::

    r = (y - q50) / (q95 - q50)   if y >= q50,   else   (q50 - y) / (q50 - q05)

The band ``q50 +- lam * (half-band)`` holds ``y`` exactly when ``r <= lam``. ``lam`` is the
split-conformal quantile of the validation scores, each validation series counting once
(`latentode.conformal`, whose module docstring gives the rule, its guarantee, the lead-time
bins, the nesting of the levels' factors and the ends' own factors). On the shipped
fertility data's 21 validation series the bands by lead time covered 0.90-0.93 at every
lead (``reports/calibration.md``). A one-series fit has one validation block, one draw: it is
not calibrated (on the CO2 record the model's band covered 42% of the validation block and
99% of the test block).

The whole predictive distribution is scaled about its median, ``q50 + lam * (x - q50)``
(`latentode.bands.scale_bands`): every quantile moves so, the std is multiplied by
``lam``, the median stays and the mean moves by ``(lam - 1) * (mean - q50)`` (nothing for a
symmetric predictive). A channel modelled on a log or logit scale
(`latentode.data.transforms`) is scored and scaled there: its band stays positive, or between
its bounds (`latentode.posterior_predictive.Predictive`).

One ``lam`` per lead-time bin (by default, `lead_bins`). Other central bands (``latentode
predict --levels``, `BandFactors`): the band of coverage ``L`` (quantiles ``(1 -+ L) / 2``)
is scored by its own half-bands and gets its own factors at level ``L``, by lead-time bin,
each bin holding at least `min_series` series (``L / (1 - L)`` above 0.9: 19 at 0.95): a
model's band can have the wrong shape as well as the wrong width
(``reports/calibration_levels.md``). A level with too few validation series takes the 5-95%
band's factors.

The factors of one end are made non-decreasing in the level (`nested_factors`); what
`Calibration.describe` prints are the factors so raised; the mean and std keep the 5-95%
band's own.

Each end on its own (``latentode predict --calibrate_tails``, `TailFactors`): each end's
factors at level ``(1 + L) / 2`` from its signed half-bands (`tail_scales`).

One ``lam`` per channel when the channel alone can give one, else the one pooled over
channels. The guarantee holds for the lead times the validation forecasts covered (the fit's
``holdout``); past them the last bin's ``lam`` is carried on as it is, and
`Calibration.max_lead` says where that starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import calibration_text
from .bands import LEVEL, band_levels, band_scores, percent
from .conformal import (
    LEAD_BINS,
    MIN_SERIES,
    MIN_VALUES,
    WIDEN,
    _inside,
    _past,
    bin_index,
    conformal_scale,
    lead_bins,
    lead_scales,
    min_series,
    nested_factors,
    tail_scales,
)
from .data.table import SeriesTable
from .ensemble import Ensemble
from .history import check_table
from .holdout import case_predictives, case_seeds, validation_cases
from .nn.latent_ode import LatentODE

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
        With ``levels`` each end's factors are `nested_factors` over every band calibrated
        (``others``' levels and the 5-95% band): a band whose own factor is below a narrower
        band's takes that one, so the calibrated quantiles are strictly ordered wherever the
        model's are, and a band's factors do not depend on which others are asked for (they
        are what `describe` prints). Without ``levels`` the 5-95% band's own central
        ``[n, D]`` still (the mean and std's, ``center`` of
        `latentode.bands.scale_bands`, which so do not depend on ``levels``).

        Raises:
            ValueError: not calibrated, or not for one of ``levels``.
        """
        if self.scale is None:
            raise ValueError(f"not calibrated: {self.reason}")
        if levels is None:
            return self._central(lead, levels)
        asked = band_levels(levels)
        every = band_levels([*asked, *(b.level for b in self.others)])
        nested = nested_factors(self._own(lead, every))  # raises for a level not calibrated
        return nested[..., [every.index(v) for v in asked], :, :]

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
        """The arguments of `latentode.posterior_predictive.Predictive.summary` for values ``lead``
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
        return calibration_text.describe(self, channels)


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
    levels = band_levels(levels)
    cases, why = validation_cases(table, data_state)
    if not cases:
        D, others = table.n_channels, _uncalibrated(levels, {}, why)
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
    n_values = (~np.isnan(np.concatenate([c.target for c in cases]))).sum(axis=0)  # (D,)
    raw = _inside(every[LEVEL])
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
    found, n = lead_scales(every[LEVEL], groups, lead, by_lead), len(cases)
    if found is None:
        why = _too_few(table, data_state, int(n_values.sum()), n)
        others = _uncalibrated(levels, every, why)
        return Calibration(None, n_values, n, raw, max_lead, why, others=others)
    others = _band_factors(every, groups, lead, by_lead, n)
    ends = _tail_factors(by_level, groups, lead, by_lead, n) if tails else ()
    edges, scale = found
    return Calibration(scale, n_values, n, raw, max_lead, edges=edges, others=others, tails=ends)


def _too_few(table: SeriesTable, data_state: dict[str, Any], n_values: int, n_series: int) -> str:
    """Why ``n_values`` validation values of ``n_series`` series are too few, and the fix."""
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
    return (
        f"the validation forecasts hold {n_values} values of {n_series} "
        f"series, fewer than {MIN_VALUES} values of {MIN_SERIES} series; {fix}"
    )


def _band_factors(
    every: dict[float, np.ndarray], groups: np.ndarray, lead: np.ndarray, by_lead: bool, n: int
) -> tuple[BandFactors, ...]:
    """The other bands' own factors, or none and why (``n`` validation series too few)."""
    others = []
    for v in (v for v in every if v != LEVEL):
        band = lead_scales(every[v], groups, lead, by_lead, v)
        if band is None:
            why = (
                f"not calibrated on its own: a {percent(v)}% band needs at least {min_series(v)} "
                f"validation series with {MIN_VALUES} values, the fit has {n}"
            )
            others.append(BandFactors(v, np.zeros(0), None, _inside(every[v]), why))
        else:
            others.append(BandFactors(v, *band, _inside(every[v])))
    return tuple(others)


def _tail_factors(
    by_level: dict[tuple, list], groups: np.ndarray, lead: np.ndarray, by_lead: bool, n: int
) -> tuple[TailFactors, ...]:
    """Each band's ends' own factors, or none and why (``n`` validation series too few)."""
    ends = []
    for v in dict.fromkeys(v for v, _ in by_level):  # the levels, in order
        low, up = (np.concatenate(by_level[v, e]) for e in ("lower", "upper"))
        past = (_past(low), _past(up))
        found = tail_scales(low, up, groups, lead, by_lead, v)
        if found is None:
            why = (
                f"each end of a {percent(v)}% band needs at least {min_series((1 + v) / 2)} "
                f"validation series with {MIN_VALUES} values, the fit has {n}: the band keeps "
                "its central factors"
            )
            ends.append(TailFactors(v, np.zeros(0), None, None, *past, why))
        else:
            ends.append(TailFactors(v, *found, *past))
    return tuple(ends)


def _uncalibrated(
    levels: tuple[float, ...], scores: dict[float, np.ndarray], why: str
) -> tuple[BandFactors, ...]:
    """The bands besides the 5-95% one when it could not be calibrated (for ``why``)."""
    return tuple(
        BandFactors(v, np.zeros(0), None, _inside(scores[v]) if v in scores else math.nan, why)
        for v in levels
        if v != LEVEL
    )
