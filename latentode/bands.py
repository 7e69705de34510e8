"""The central bands a predictive summary holds, and how factors scale them.

A summary is ``[..., 2 + Q]``: the mean, the std, then the quantiles of `quantile_probs`
(each band's lower end, widest band first, the median, then the upper ends). `band_levels`
says which bands a summary holds, `band_columns` where one lies in it and `quantile_names`
what its columns are called. `scale_bands` widens or narrows each band about the median by
its own factors (`latentode.calibration`), the mean and std by the 5-95% band's
(`center_factor`), and `band_scores` gives the conformal scores those factors are fitted to.
Everything here is plain numpy on summaries; `latentode.posterior_predictive.Predictive`
computes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "LEVEL",
    "QUANTILES",
    "band_columns",
    "band_ends",
    "band_levels",
    "band_scores",
    "center_factor",
    "percent",
    "quantile_name",
    "quantile_names",
    "quantile_probs",
    "scale_bands",
]

LEVEL = 0.9
"""The principal band's coverage: the 5-95% band, always summarised; its factor also scales
the mean and std (`scale_bands`)."""
QUANTILES = (0.05, 0.5, 0.95)
_TINY = 1e-12  # a half-band narrower than this has zero width


def band_levels(levels: Sequence[float] | None = None) -> tuple[float, ...]:
    """The central bands a summary holds: ``levels`` (coverages in (0, 1); one number is one
    band) and `LEVEL`, ascending, each once (None: `LEVEL` alone).

    Raises:
        ValueError: a level outside (0, 1) or not a number.
    """
    if isinstance(levels, (int, float, np.number)):  # one band
        levels = (levels,)
    return tuple(sorted({_level(v) for v in [*(levels or ()), LEVEL]}))


def _level(value: float) -> float:
    """One band's coverage, checked and rounded to 12 digits (so that 0.9 computed two ways
    is one level)."""
    if not 0.0 < float(value) < 1.0:  # NaN fails too
        raise ValueError(f"a band's level is a coverage strictly between 0 and 1, got {value}")
    return round(float(value), 12)


def band_ends(level: float) -> tuple[float, float]:
    """The lower and upper quantiles ``(1 -+ level) / 2`` of the band of coverage ``level``
    (a `band_levels` value), rounded to 12 digits."""
    low = round((1.0 - level) / 2, 12)
    return low, round(1.0 - low, 12)


def quantile_probs(levels: Sequence[float] | None = None) -> tuple[float, ...]:
    """The quantiles a summary holds, ascending: for each of `band_levels` its lower and
    upper ends (`band_ends`), and the median; ``(0.05, 0.5, 0.95)`` by default."""
    ends = [band_ends(v) for v in reversed(band_levels(levels))]  # widest band first
    return (*(lo for lo, _ in ends), 0.5, *(hi for _, hi in reversed(ends)))


def quantile_name(p: float) -> str:
    """The column name of quantile ``p``, in percent: ``q05``, ``q50``, ``q97.5``, ``q00.5``."""
    return f"q{'0' if p < 0.1 else ''}{percent(p)}"


def quantile_names(levels: Sequence[float] | None = None) -> list[str]:
    """Column names of `quantile_probs` (`quantile_name`): ``q05``, ``q50``, ``q95``;
    ``q02.5``, ``q97.5`` for the 95% band; ``q00.5`` for the 0.5% quantile."""
    return [quantile_name(p) for p in quantile_probs(levels)]


def percent(share: float) -> str:
    """A share in percent, as short as it goes and never in exponent notation: ``90``,
    ``97.5``, ``2.5``, ``0.000005`` (to 10 decimals, the 12 digits `band_ends` keeps)."""
    return np.format_float_positional(round(100 * share, 10), trim="-")


def band_columns(levels: Sequence[float], level: float = LEVEL) -> tuple[int, int, int]:
    """Where the band of coverage ``level`` lies in a summary of ``levels``
    (``[..., 2 + Q]``: mean, std, then `quantile_probs`): its lower end, the median and its
    upper end.

    Raises:
        ValueError: ``level`` is not among `band_levels` of ``levels``.
    """
    levels = band_levels(levels)
    if _level(level) not in levels:
        raise ValueError(f"no {level:.4g} band among the summary's levels {levels}")
    i, mid = levels.index(_level(level)), 2 + len(levels)
    return mid - 1 - i, mid, mid + 1 + i


def scale_bands(
    stats: np.ndarray,
    scale: np.ndarray,
    levels: Sequence[float] | None = None,
    center: np.ndarray | None = None,
) -> np.ndarray:
    """The predictive scaled about its median, each band by its own factors.

    Args:
        stats: ``[..., D, 2 + Q]`` (mean, std, then the quantiles of `band_levels`
            ``levels``; by default ``[..., D, 5]``: mean, std, q05, q50, q95).
        scale: factors broadcastable to ``[2, L, ..., D]``: for each band's lower and upper
            end, one per band level (ascending). A factor for both ends broadcasts, e.g.
            ``[D]`` for every level and value, ``[..., D]`` one per value (by lead time), or
            ``[L, ..., D]`` one per level and value
            (`latentode.calibration.Calibration.factors`, which gives ``[2, L, ..., D]`` where
            each end was calibrated on its own).
        levels: the bands ``stats`` holds (None: `LEVEL` alone).
        center: the factor of the mean and std, broadcastable to ``[..., D]``; None: the
            5-95% band's, which both its ends must then share.

    Returns:
        ``[..., D, 2 + Q]``: each band's ends ``q50 + scale * (x - q50)`` with its level's
        factor for that end; the mean ``q50 + center * (mean - q50)`` and the std times
        ``center``. Where a band's end then lies inside a narrower band's (an 80%
        band scaled by 1.5, a 90% band by 0.5), it is moved out to it, so every band keeps at
        least its own coverage (a guard: with calibrated factors,
        `latentode.calibration.nested_factors`, no end lies inside a narrower band's where the
        model's own quantiles are ordered). For channels as they are; `Predictive.summary`
        scales a transformed channel.

    Raises:
        ValueError: ``center`` is None and the 5-95% band's ends have factors of their own.
    """
    levels = band_levels(levels)
    L = len(levels)
    lam = np.broadcast_to(np.asarray(scale, dtype=np.float64), (2, L, *stats.shape[:-1]))
    q50 = stats[..., 2 + L : 3 + L]  # (..., D, 1)
    out = stats.copy()
    out[..., 2:] = _nested(q50 + _per_quantile(lam) * (stats[..., 2:] - q50), L)
    center = center_factor(lam, levels, center)  # (..., D)
    out[..., 0] = q50[..., 0] + center * (stats[..., 0] - q50[..., 0])
    out[..., 1] = center * stats[..., 1]
    return out


def center_factor(
    lam: np.ndarray, levels: Sequence[float] | None = None, center: np.ndarray | None = None
) -> np.ndarray:
    """The factor that scales the mean and std, ``[..., D]``: ``center`` where given, else the
    5-95% band's, which both its ends must then share.

    Args:
        lam: ``[2, L, ..., D]`` each band's end factors (as `scale_bands` takes them).
        levels: the bands ``lam`` holds (None: `LEVEL` alone).
        center: broadcastable to ``[..., D]``, or None.

    Raises:
        ValueError: ``center`` is None and the 5-95% band's ends have factors of their own.
    """
    levels = band_levels(levels)
    low, up = lam[:, levels.index(LEVEL)]  # (..., D) each
    if center is not None:
        return np.broadcast_to(np.asarray(center, dtype=np.float64), low.shape)
    if (low != up).any():
        raise ValueError("the 5-95% band's ends have their own factors: pass center")
    return up


def _per_quantile(lam: np.ndarray) -> np.ndarray:
    """``[..., 2L + 1]`` each quantile's factor from ``lam [2, L, ...]`` (lower ends, upper
    ends; ascending levels): a band's lower end takes its level's lower factor, its upper end
    the upper one, the median 1."""
    low, up = (np.moveaxis(x, 0, -1) for x in lam)  # (..., L) each
    return np.concatenate([low[..., ::-1], np.ones_like(low[..., :1]), up], axis=-1)


def _nested(q: np.ndarray, L: int) -> np.ndarray:
    """Quantiles ``[..., 2L + 1]`` (widest band's lower end first) with each wider band
    widened to hold the narrower ones (running extremes out from the median)."""
    lower = np.minimum.accumulate(q[..., L - 1 :: -1], axis=-1)[..., ::-1]
    upper = np.maximum.accumulate(q[..., L + 1 :], axis=-1)
    return np.concatenate([lower, q[..., L : L + 1], upper], axis=-1)


def band_scores(stats: np.ndarray, target: np.ndarray, side: str | None = None) -> np.ndarray:
    """Half-bands from the median to each target (the conformal score,
    `latentode.calibration`).

    Args:
        stats: ``[..., 5]`` (mean, std, q05, q50, q95) as `Predictive.summary` gives.
        target: ``[...]`` observed values, NaN where missing.
        side: None: the half-bands on the target's side of the median (the band scaled by
            ``lam`` holds it when the score is at most ``lam``). ``"upper"``: signed upper
            half-bands, ``(y - q50) / (q95 - q50)``, negative below the median (the upper end
            scaled by ``lam`` lies at or above ``y`` when the score is at most ``lam``);
            ``"lower"``: ``(q50 - y) / (q50 - q05)``, likewise for the lower end.

    Returns:
        Scores of the same shape as ``target`` (NaN where it is missing; ``inf`` where the
        half-band that is divided by has zero width and the target is past the median on its
        side, ``-inf`` where it is on the other side).
    """
    q05, q50, q95 = stats[..., 2], stats[..., 3], stats[..., 4]
    if side not in (None, "lower", "upper"):
        raise ValueError(f"side is None, 'lower' or 'upper', got {side!r}")
    above = target >= q50 if side is None else np.full(np.shape(target), side == "upper")
    dist = np.where(above, target - q50, q50 - target)  # negative: the other side (signed)
    half = np.where(above, q95 - q50, q50 - q05)
    with np.errstate(divide="ignore", invalid="ignore"):
        edge = np.where(dist > 0, np.inf, np.where(dist < 0, -np.inf, 0.0))  # zero half-band
        r = np.where(half > _TINY, dist / np.maximum(half, _TINY), edge)
    return np.where(np.isnan(target), np.nan, r)
