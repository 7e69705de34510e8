"""Held-out evaluation of a fitted latent ODE beside naive baselines (``latentode test``).

Two tasks on each series' last ``holdout`` part (the part a CSV fit held out):

- extrapolation: condition on the history before the held-out part, predict it;
  baselines: last value carried forward; linear trend (the last value continued along the
  least-squares slope of the last stretch of history as long as the forecast reaches ahead:
  the baseline for trending series such as fertility rates); and for a single series
  seasonal naive (the value whole estimated periods earlier) and seasonal naive + trend (plus
  the change of the period means over the periods skipped: the baseline for a seasonal series
  with a trend, such as CO2);
- interpolation: in the same window, hide every other observed time point and reconstruct
  them from the rest; baselines: last value carried forward and linear interpolation.

Errors are in the user's units, pooled over series, channels and held-out values; the
model's 90% interval coverage says whether its uncertainty is honest (0.90 is calibrated),
``width90`` what the band costs (its mean width), and ``wis`` (the weighted interval score,
`weighted_interval_score`) weighs the two against each other in one proper score. Given
band factors calibrated on the validation series (`latentode.calibration`), the forecast is
scored a second time with the scaled bands: the row ``latent ODE, calibrated bands`` (its
``mse`` and ``mae`` are the calibrated predictive's mean's, which moves with the factors, on
a log or logit channel by more: `latentode.predictive`). The row ``latent ODE,
half-observed history`` forecasts the same values from every other observation of each
history (the last kept): how much the forecast leans on dense histories
(on the fertility data, 1.8x the MSE for a model trained on complete histories, none for
one trained with ``train_keep: 0.5``). The task ``history gaps`` reconstructs the
observations that row drops (the first kept too) from the rest, beside last value and
linear interpolation: how well the model fills gaps inside a history it has seen, which
`latentode predict` does not offer (it forecasts only past each history's end).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .data.errors import DataError
from .data.prep import Segment, _observed_rows
from .data.table import SeriesTable
from .ensemble import Ensemble
from .forecast import check_table
from .nn.base import ModelInputError
from .nn.latent_ode import AggregatePosterior, LatentODE
from .predictive import (
    LEVEL,
    Predictive,
    band_columns,
    band_levels,
    draw_seeds,
    iter_predictives,
    percent,
)

if TYPE_CHECKING:  # calibration imports this module
    from .calibration import Calibration

__all__ = [
    "COLUMNS",
    "GAPS",
    "HALF_OBSERVED",
    "Case",
    "case_predictives",
    "case_seeds",
    "case_stats",
    "estimate_period",
    "evaluate",
    "half_observed",
    "held_out_cases",
    "history_gaps",
    "interval_score",
    "scored_note",
    "scored_series",
    "weighted_interval_score",
]

HALF_OBSERVED = "latent ODE, half-observed history"
COLUMNS = (
    "task",
    "method",
    "mse",
    "mae",
    "wis",
    "coverage90",
    "width90",
    "below90",
    "above90",
    "n_values",
)
"""`evaluate`'s first columns, as `_model_row` gives them (then each other band's coverage and
width). ``below90`` / ``above90``: the shares of held-out values under q05 and over q95, which
say on which side a band's misses fall (0.05 each for quantiles that hold their level)."""
GAPS = "history gaps"


@dataclass
class Case:
    """One series' held-out problem: condition on ``hist``, score ``target`` at ``t_target``."""

    series: int
    hist: Segment
    t_target: np.ndarray  # (m,)
    target: np.ndarray  # (m, D), NaN where missing

    @property
    def lead(self) -> np.ndarray:
        """``[m]`` how far past the history's last observation each target lies."""
        return self.t_target - self.hist.times[-1]


def held_out_cases(
    table: SeriesTable, series: list[int], holdout: float, history: float | None, task: str
) -> list[Case]:
    """The evaluation problems of ``task`` (``"extrapolation"`` / ``"interpolation"``)."""
    cases = []
    for s in series:
        t, x = _observed_rows(table, s)
        h = holdout * (t[-1] - t[0]) if holdout < 1 else holdout
        t_split = t[-1] - h
        lo = -np.inf if history is None else t_split - history
        if task == "extrapolation":
            past, future = (t >= lo) & (t < t_split), t >= t_split
        else:
            window = np.flatnonzero(t >= t_split)
            hidden = np.zeros(len(t), dtype=bool)
            hidden[window[1:-1:2]] = True  # every other interior point of the window
            past, future = (t >= lo) & ~hidden, hidden
        if past.sum() < 2 or future.sum() < 1:
            continue
        hist = Segment(s, float(t[past][0]), t[past], x[past])
        cases.append(Case(s, hist, t[future], x[future]))
    return cases


def _kept(n: int) -> np.ndarray:
    """The indices of ``n`` observations `half_observed` keeps: the last, the third last, ..."""
    return np.arange(n - 1, -1, -2)[::-1]


def half_observed(case: Case) -> Case:
    """The case with every other history observation dropped, counting back from the last
    (which is kept): the same series observed half as often, the same targets."""
    h = case.hist
    keep = _kept(len(h.times))
    hist = Segment(h.series, float(h.times[keep[0]]), h.times[keep], h.values[keep])
    return Case(case.series, hist, case.t_target, case.target)


def history_gaps(case: Case) -> Case | None:
    """The gap-filling problem inside ``case``'s history: condition on the observations
    `half_observed` keeps and the first, score the others (all interior, so every one lies
    between two conditioned observations). None for a history of fewer than 3 observations."""
    h = case.hist
    n = len(h.times)
    keep = np.zeros(n, dtype=bool)
    keep[_kept(n)] = True
    keep[0] = True
    if keep.all():
        return None
    hist = Segment(h.series, float(h.times[0]), h.times[keep], h.values[keep])
    return Case(case.series, hist, h.times[~keep], h.values[~keep])


def case_stats(
    model: LatentODE | Ensemble,
    cases: list[Case],
    data_state: dict[str, Any],
    n_samples: int,
    seeds: Sequence[int],
    importance: bool = False,
    chunk: int = 128,
    refine: int = 0,
    prior: AggregatePosterior | None = None,
    levels: Sequence[float] | None = None,
) -> np.ndarray:
    """``[M, D, 5]`` predictive summaries (`Predictive.summary`; ``[M, D, 2 + Q]`` with the
    bands of ``levels``) at every case's targets, in order, ``chunk`` cases per model call,
    case ``i``'s draws seeded by ``seeds[i]`` (`case_seeds`)."""
    preds = case_predictives(
        model, cases, data_state, n_samples, seeds, importance, chunk, refine, prior
    )
    return np.concatenate([p.summary(levels=levels) for p in preds])


def case_predictives(
    model: LatentODE | Ensemble,
    cases: list[Case],
    data_state: dict[str, Any],
    n_samples: int,
    seeds: Sequence[int],
    importance: bool = False,
    chunk: int = 128,
    refine: int = 0,
    prior: AggregatePosterior | None = None,
) -> Iterator[Predictive]:
    """Every case's `Predictive` at its targets, in order, ``chunk`` cases per model call
    (lazily: a chunk's draws are freed once its predictives are consumed), case ``i``'s draws
    seeded by ``seeds[i]`` (`case_seeds`; so they do not depend on ``chunk``)."""
    if len(seeds) != len(cases):
        raise ModelInputError(f"one seed per case is needed: {len(seeds)} for {len(cases)}.")
    for lo in range(0, len(cases), chunk):
        part = cases[lo : lo + chunk]
        hist, times = [c.hist for c in part], [c.t_target for c in part]
        yield from iter_predictives(
            model,
            hist,
            times,
            data_state,
            n_samples,
            seeds[lo : lo + chunk],
            importance,
            refine,
            prior,
        )


def case_seeds(seed: int, table: SeriesTable, cases: Sequence[Case], task: str) -> list[int]:
    """One draw seed per case (`draw_seeds`): from ``seed``, the ``task`` the cases pose
    (draws for one task stay apart from another's), the case's series id and its place among
    that series' cases; so a case's draws do not depend on the other series scored with it."""
    count: dict[str, int] = {}
    keys = []
    for c in cases:
        sid = table.series_ids[c.series]
        keys.append(f"{task}\x1f{sid}\x1f{count.get(sid, 0)}")
        count[sid] = count.get(sid, 0) + 1
    return draw_seeds(seed, keys)


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


def scored_series(table: SeriesTable, data_state: dict[str, Any]) -> list[int]:
    """The series `evaluate` scores: the fit's test series when the file holds them all (the
    training file), else every series of the file."""
    ids = data_state.get("test_series")
    if ids and set(ids) <= set(table.series_ids):
        return [table.index_of(i) for i in ids]
    return list(range(table.n_series))


def scored_note(table: SeriesTable, data_state: dict[str, Any]) -> str:
    """What the scores of `scored_series` mean when the file lacks some of the fit's test
    series (empty when it holds them all): every series of the file is scored, and those
    that were not held out of the fit make the scores look better than on new series.
    Checkpoints name their validation and test series, not their training ones, so the rest
    are counted as training series or new ones."""
    test = set(data_state.get("test_series") or ())
    if test and test <= set(table.series_ids):
        return ""
    val = set(data_state.get("val_series") or ())
    ids = table.series_ids
    n_test = sum(i in test for i in ids)
    n_val = sum(i in val for i in ids)
    rest = len(ids) - n_test - n_val
    missing = (
        f"{len(test) - n_test} of the fit's {len(test)} test series" if test else "test series"
    )
    parts = [f"{n_test} test series"] if n_test else []
    if n_val:
        parts.append(f"{n_val} validation series (they chose the checkpoint and its bands)")
    if rest:
        parts.append(
            f"{rest} other series (any the fit trained on are scored on values it learned from)"
        )
    return (
        f"the file lacks {missing}, so all its {len(ids)} series are scored: "
        f"{', '.join(parts)}. Errors on series the fit saw flatter the model; for held-out "
        "errors give the training file, or series the fit never saw."
    )


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


def _baseline_rows(
    task: str,
    cases: list[Case],
    period: float | None,
    target: np.ndarray,
    levels: tuple[float, ...],
) -> list[tuple]:
    """The baselines' rows of ``task`` over ``cases`` (`_baselines`; the gaps are scored as
    interpolation), ``target [M, D]`` their concatenated targets; no bands (``levels``: the
    columns to leave empty). Their ``wis`` is the point forecast's as a predictive that puts
    every quantile on it (`weighted_interval_score`: the absolute error, the CRPS of a point
    mass), so it compares with the model's."""
    names: dict[str, list[np.ndarray]] = {}
    for c in cases:
        for name, pred in _baselines(c, "interpolation" if task == GAPS else task, period).items():
            names.setdefault(name, []).append(pred)
    ok = ~np.isnan(target)
    bands = [math.nan] * 2 * (len(levels) - 1)
    rows = []
    for name, p in names.items():
        point = np.concatenate(p)  # (M, D)
        stats = np.repeat(point[..., None], 3 + 2 * len(levels), axis=-1)  # every quantile
        wis = float(weighted_interval_score(stats, target, levels)[ok].mean())
        errors = _scores(point, target)
        rows.append((task, name, *errors, wis, *[math.nan] * 4, int(ok.sum()), *bands))
    return rows


def evaluate(
    model: LatentODE | Ensemble,
    table: SeriesTable,
    data_state: dict[str, Any],
    n_samples: int = 200,
    seed: int = 0,
    importance: bool = False,
    calibration: Calibration | None = None,
    refine: int = 0,
    levels: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Model and baseline errors on the held-out parts of ``table``.

    Args:
        model: the fitted latent ODE, or an `Ensemble` of them.
        table: the file to score (the training file: its test series / block).
        data_state: the checkpoint's data description.
        n_samples: posterior paths per series (200: as `latentode.forecast.forecast` and
            `latentode.calibration.calibrate` draw them).
        seed: seeds the draws (each case's from the seed, its task and its series id: `case_seeds`).
        importance: the model's predictions weight its posterior paths (`LatentODE.predict`).
        calibration: band factors from the validation series (`latentode.calibration`);
            adds the forecast row with the bands scaled by each value's lead-time factors
            (the caller makes sure the scored series are not the ones it was calibrated on;
            none without factors).
        refine: Adam steps refining each series' ``q(z0)`` on its history's ELBO
            (`LatentODE.refine`).
        levels: bands to score besides the 90% one (coverages such as ``(0.8, 0.95)``:
            columns ``coverage80, width80, coverage95, width95``; the calibrated row scales
            each by its own factors, so ``calibration`` must hold them).

    Returns:
        Rows ``task, method, mse, mae, wis, coverage90, width90, below90, above90, n_values``
        and the coverage and width of each of ``levels`` (``wis``: `weighted_interval_score`
        over the median and every band of the row; for a baseline, its point forecast's, the
        absolute error; ``below90`` / ``above90``: the shares under q05 and over q95; the
        bands' columns NaN for the baselines, which have no band), for the tasks
        ``extrapolation``, ``interpolation`` and ``history gaps`` (`history_gaps`); none for
        interpolation when no held-out part holds three observations (one to hide between
        two), none for the gaps when no history does.

    Raises:
        DataError: channels differ from the model's, or no series has a held-out part with
            two observations before it.
    """
    check_table(table, data_state)
    levels = band_levels(levels)
    model.eval()
    series = scored_series(table, data_state)
    rows = []
    for task in ("extrapolation", "interpolation"):
        cases = held_out_cases(
            table, series, float(data_state.get("holdout") or 0.1), data_state.get("history"), task
        )
        if not cases and task == "interpolation":
            continue  # no held-out part holds 3 observations; the caller says so
        if not cases:
            raise DataError(
                f"{table.source}: no series has enough points around its held-out "
                "part to evaluate; give longer series or a smaller holdout."
            )
        period = None  # seasonal-naive for one series, period from its history only
        if table.n_series == 1:
            period = estimate_period(cases[0].hist.times, cases[0].hist.values[:, 0])
        calibrated = calibration is not None and calibration.scale is not None
        own, scaled = [], []  # per case (m, D, 5): the model's band, the calibrated one
        seeds = case_seeds(seed, table, cases, task)
        preds = case_predictives(
            model, cases, data_state, n_samples, seeds, importance, refine=refine
        )
        for p, c in zip(preds, cases, strict=True):
            own.append(p.summary(levels=levels))
            if task == "extrapolation" and calibrated:
                lam, center = calibration.scaling(c.lead, levels)
                scaled.append(p.summary(lam, levels, center))
        stats = np.concatenate(own)  # (M, D, 2 + Q)
        target = np.concatenate([c.target for c in cases])  # (M, D)
        rows.append(_model_row(task, "latent ODE", stats, target, levels))
        if scaled:
            stats = np.concatenate(scaled)
            rows.append(_model_row(task, "latent ODE, calibrated bands", stats, target, levels))
        if task == "extrapolation":
            forecast_cases, forecast_target = cases, target
        rows += _baseline_rows(task, cases, period, target, levels)
    thin = [half_observed(c) for c in forecast_cases]
    seeds = case_seeds(seed, table, thin, HALF_OBSERVED)
    stats = case_stats(
        model, thin, data_state, n_samples, seeds, importance, refine=refine, levels=levels
    )
    at = 1 + sum(r[1] == "latent ODE, calibrated bands" for r in rows)
    rows.insert(at, _model_row("extrapolation", HALF_OBSERVED, stats, forecast_target, levels))
    gaps = [g for g in map(history_gaps, forecast_cases) if g is not None]
    if gaps:
        seeds = case_seeds(seed, table, gaps, GAPS)
        stats = case_stats(
            model, gaps, data_state, n_samples, seeds, importance, refine=refine, levels=levels
        )
        target = np.concatenate([g.target for g in gaps])
        rows.append(_model_row(GAPS, "latent ODE", stats, target, levels))
        rows += _baseline_rows(GAPS, gaps, None, target, levels)
    columns = list(COLUMNS)
    for v in (v for v in levels if v != LEVEL):
        columns += [f"coverage{percent(v)}", f"width{percent(v)}"]
    return pd.DataFrame(rows, columns=columns)
