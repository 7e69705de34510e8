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

The held-out problems and the model's predictives on them are built in `latentode.holdout`,
the scoring rules and baselines in `latentode.scoring`; both are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .data.errors import DataError
from .data.table import SeriesTable
from .ensemble import Ensemble
from .history import check_table
from .holdout import (
    Case,
    case_predictives,
    case_seeds,
    case_stats,
    half_observed,
    held_out_cases,
    history_gaps,
)
from .nn.latent_ode import LatentODE
from .predictive import LEVEL, band_levels, percent
from .scoring import (
    _baselines,
    _model_row,
    _scores,
    estimate_period,
    interval_score,
    weighted_interval_score,
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
