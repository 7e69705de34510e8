"""How ``latentode test`` scores a forecast, and the naive baselines it is scored beside.

Scoring rules: the squared and absolute errors (`_scores`), the interval score of a central
band (`interval_score`) and the weighted interval score of a median and its bands
(`weighted_interval_score`), and a model's row of the evaluation table (`_model_row`: errors,
the 90% band's coverage and width, the other bands'). Baselines (`_baselines`): the last
value carried forward, the linear trend, seasonal naive (with the period `estimate_period`
finds) with and without trend, and linear interpolation, each channel on its own
observations. Used by `latentode.evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .holdout import Case
from .predictive import LEVEL, band_columns, band_levels

__all__ = ["estimate_period", "interval_score", "weighted_interval_score"]


def estimate_period(t: np.ndarray, y: np.ndarray) -> float | None:
    """Dominant period of a series (periodogram of the detrended, regularly resampled values)."""
    ok = ~np.isnan(y)
    t, y = t[ok], y[ok]
    if len(t) < 16:
        return None
    dt = float(np.median(np.diff(t)))
    grid = np.arange(t[0], t[-1], dt)
    z = np.interp(grid, t, y)
    z = z - np.polyval(np.polyfit(grid, z, 1), grid)
    power = np.abs(np.fft.rfft(z)) ** 2
    freqs = np.fft.rfftfreq(len(z), dt)
    valid = (freqs > 2 / (t[-1] - t[0])) & (freqs < 1 / (3 * dt))
    if not valid.any():
        return None
    return float(1 / freqs[valid][np.argmax(power[valid])])


def _per_channel(
    t: np.ndarray, x: np.ndarray, query: np.ndarray, how: str, span: float = 0.0
) -> np.ndarray:
    """``[m, D]`` each channel's own observations carried forward (``"last"``), interpolated
    (``"linear"``), or its last value continued along the least-squares slope of its
    observations in the last ``span`` time units before it (``"trend"``: at least its last
    three; slope 0 for a channel seen once). NaN for a channel never seen."""
    cols = []
    for d in range(x.shape[1]):
        ok = ~np.isnan(x[:, d])
        td, xd = t[ok], x[ok, d]
        if len(td) == 0:
            cols.append(np.full(len(query), np.nan))
        elif how == "last":
            cols.append(xd[np.clip(np.searchsorted(td, query, side="right") - 1, 0, None)])
        elif how == "trend":
            keep = td >= td[-1] - span
            keep[-3:] = True
            slope = np.polyfit(td[keep], xd[keep], 1)[0] if keep.sum() >= 2 else 0.0
            cols.append(xd[-1] + slope * (query - td[-1]))
        else:
            cols.append(np.interp(query, td, xd))
    return np.stack(cols, axis=1)


def _period_drift(t: np.ndarray, x: np.ndarray, period: float) -> np.ndarray:
    """``[D]`` each channel's change per time unit from the mean of the period before the last
    to the mean of the last one (0 for a channel not observed in both)."""
    last, prev = t > t[-1] - period, (t > t[-1] - 2 * period) & (t <= t[-1] - period)
    out = np.zeros(x.shape[1])
    for d in range(x.shape[1]):
        a, b = x[last, d], x[prev, d]
        if (~np.isnan(a)).any() and (~np.isnan(b)).any():
            out[d] = (np.nanmean(a) - np.nanmean(b)) / period
    return out


def _baselines(case: Case, task: str, period: float | None) -> dict[str, np.ndarray]:
    """The naive predictions of ``case`` (``[m, D]`` each, by name). Extrapolation: the last
    value; the linear trend (the last value continued along the least-squares slope of the
    last stretch of history as long as the forecast reaches ahead); with a ``period``, the
    value whole periods back (seasonal naive), and that plus the change of the period means
    over the periods skipped (seasonal naive + trend). Interpolation: the last value and
    linear interpolation."""
    t, x, q = case.hist.times, case.hist.values, case.t_target
    out = {"last value": _per_channel(t, x, q, "last")}
    if task == "extrapolation":
        out["linear trend"] = _per_channel(t, x, q, "trend", span=float(q.max() - t[-1]))
    if task == "extrapolation" and period is not None:
        back = q - np.ceil((q - t[-1]) / period) * period  # (m,) whole periods back
        seasonal = _per_channel(t, x, back, "linear")
        out[f"seasonal naive (period {period:.4g})"] = seasonal
        drift = _period_drift(t, x, period)  # (D,)
        out[f"seasonal naive + trend (period {period:.4g})"] = (
            seasonal + (q - back)[:, None] * drift
        )
    elif task == "interpolation":
        out["linear interpolation"] = _per_channel(t, x, q, "linear")
    return out


def _scores(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    ok = ~np.isnan(target)
    err = pred[ok] - target[ok]
    return float((err**2).mean()), float(np.abs(err).mean())


def _model_row(
    task: str, method: str, stats: np.ndarray, target: np.ndarray, levels: tuple[float, ...]
) -> tuple:
    """``stats [M, D, 2 + Q]`` (the bands of ``levels``) scored against ``target [M, D]``
    (NaN: missing): errors, the 90% band's coverage, width and the shares below and above it,
    the values, then the other bands' coverage and width."""
    ok = ~np.isnan(target)

    def band(level: float) -> tuple[float, float, float, float]:
        lo, _, hi = band_columns(levels, level)
        below, above = (target < stats[..., lo])[ok], (target > stats[..., hi])[ok]
        inside = (stats[..., lo] <= target) & (target <= stats[..., hi])
        width = float((stats[..., hi] - stats[..., lo])[ok].mean())
        return float(inside[ok].mean()), width, float(below.mean()), float(above.mean())

    others = [x for v in levels if v != LEVEL for x in band(v)[:2]]
    wis = float(weighted_interval_score(stats, target, levels)[ok].mean())
    errors = _scores(stats[..., 0], target)
    return (task, method, *errors, wis, *band(LEVEL), int(ok.sum()), *others)


def weighted_interval_score(
    stats: np.ndarray, target: np.ndarray, levels: Sequence[float] | None = None
) -> np.ndarray:
    """The weighted interval score of each value (Bracher et al. 2021): a proper score of a
    forecast given as a median and central bands, lower is better, in the data's units.

    With ``K`` bands of coverage ``1 - a_k`` (ends ``l, u``) and median ``m``::

        IS_a = (u - l) + (2 / a) (l - y) 1{y < l} + (2 / a) (y - u) 1{y > u}
        WIS  = (|y - m| / 2 + sum_k a_k / 2 IS_a_k) / (K + 1/2)

    It rewards narrow bands and charges every value outside one by its distance, so a band
    that is too narrow and one that is too wide both score worse than a calibrated one; with
    many bands it approaches the CRPS, and with none it is the absolute error.

    Args:
        stats: ``[..., 2 + Q]`` summaries with the bands of ``levels`` (`Predictive.summary`).
        target: ``[...]`` observed values (NaN: missing).
        levels: the bands ``stats`` holds (None: the 5-95% one alone).

    Returns:
        ``[...]`` scores, NaN where ``target`` is.
    """
    levels = band_levels(levels)
    _, mid, _ = band_columns(levels)
    total = 0.5 * np.abs(target - stats[..., mid])
    for v in levels:
        lo, _, hi = band_columns(levels, v)
        total = total + (1.0 - v) / 2 * interval_score(stats[..., lo], stats[..., hi], target, v)
    return total / (len(levels) + 0.5)


def interval_score(
    low: np.ndarray, up: np.ndarray, target: np.ndarray, level: float = LEVEL
) -> np.ndarray:
    """The interval score of a central band ``[low, up]`` of coverage ``level`` (Gneiting and
    Raftery 2007, eq. 43): its width plus ``2 / (1 - level)`` times the distance by which
    ``target`` lies outside it; lower is better, NaN where ``target`` is."""
    a = 1.0 - level
    miss = np.maximum(low - target, 0.0) + np.maximum(target - up, 0.0)
    return (up - low) + 2 / a * miss
