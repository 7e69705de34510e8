"""When to forecast: horizon and step parsing and each series' future times, checked.

`parse_horizon` reads a span (a number of the table's time units, or for date-times a span
like ``104W``); `future_times` gives each series' conditioning segment (its last ``history``
time units, as in training) and its future times (a grid every ``step`` up to ``horizon``
past its last observation, or the times asked for), refusing before anything is drawn times
inside the history, between the steps of its resolution, past the last date-time that can be
written, or more than one model call holds; `far_reach` words the warning `forecast` gives
when a series is forecast more than `REACH` times as far ahead as the fit validated. Used by
`latentode.forecast.forecast`.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from .data.errors import DataError
from .data.prep import Segment, holdout_length, whole_series
from .data.table import TIME_UNITS, SeriesTable
from .ensemble import Ensemble
from .history import FLOAT32_MAX, check_table
from .nn.latent_ode import LatentODE
from .predictive import call_gb, draws_held, draws_per_call

REACH = 10.0  # `far_reach`: leads past this many times the fit's validated one are warned of
SHOWN = 3  # series named in `far_reach`'s warning (then a count of the others)

__all__ = ["REACH", "far_reach", "future_times", "parse_horizon", "validated_lead"]


def parse_horizon(horizon: str | float, table: SeriesTable, option: str = "--horizon") -> float:
    """A span in the table's time units, from a number or (date-times) a span like ``104W``.

    Args:
        horizon: the span as given.
        table: the data, for its time encoding.
        option: the command-line option that gave it, for messages (``--horizon``,
            ``--step``).

    Raises:
        DataError: for a non-positive or unreadable span, naming ``option``.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, (str, int, float, np.number)):
        raise DataError(f"{option} must be a number or a span like 30D, got {horizon!r}.")
    try:
        value = float(horizon)
    except ValueError:
        if table.encoding.kind != "datetime":
            raise DataError(
                f"{option} {horizon!r}: this data has numeric times; give a number."
            ) from None
        value = _span(str(horizon), option) / TIME_UNITS[table.encoding.unit]
    if not (value > 0 and math.isfinite(value)):
        raise DataError(f"{option} must be positive, got {horizon!r}.")
    return value


_SPAN = re.compile(r"\s*(\d*\.?\d+(?:[eE][+-]?\d+)?)\s*([A-Za-z]+)\s*")


def _span(text: str, option: str) -> float:
    """Nanoseconds in a span like ``730D``, ``104W`` or ``2Y`` (a Julian year), or any span
    `pandas.Timedelta` reads, except ``m`` / ``M`` (minutes to pandas, months to many).

    Raises:
        DataError: an unreadable or ambiguous span, naming ``option``.
    """
    match = _SPAN.fullmatch(text)
    if match and match.group(2) in ("m", "M"):
        raise DataError(
            f"{option} {text!r}: 'm' could mean minutes or months; write "
            f"{match.group(1)}min for minutes, or the span in D, W or Y (365.25 days)."
        )
    if match and match.group(2) in ("Y", "y"):
        return float(match.group(1)) * TIME_UNITS["Y"]
    try:
        return float(pd.Timedelta(text).value)
    except ValueError as e:
        raise DataError(
            f"{option} {text!r} is not a number or a span like 730D, 104W or 2Y."
        ) from e


def _span_value(value: Any, table: SeriesTable, name: str) -> float:
    """A horizon or step given to the library: a positive finite number of the table's time
    units, or a span `parse_horizon` reads (``"30D"``, a `pandas.Timedelta` for date-times).

    Raises:
        DataError: anything else, naming ``name``.
    """
    if isinstance(value, pd.Timedelta):
        value = f"{value.value}ns"
    if isinstance(value, str):
        return parse_horizon(value, table, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(
            f"{name} must be a number of the table's time units or a span like '30D', got "
            f"{value!r}."
        )
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"{name} must be positive and finite, got {value!r}.")
    return float(value)


def _recent(seg: Segment, history: float | None) -> Segment:
    """The part of a series' history the model conditions on (as in training)."""
    if history is None:
        return seg
    keep = seg.times >= seg.times[-1] - history
    t = seg.times[keep]
    return replace(seg, t0=float(t[0]), times=t, values=seg.values[keep])


def _future_grid(seg: Segment, horizon: float, step: float | None) -> np.ndarray:
    """``(0, horizon]`` past the segment's last time every ``step`` (`_grid_size`)."""
    every, n = _grid_size(seg, horizon, step)
    return seg.times[-1] + every * np.arange(1, n + 1)  # (n,)


def _grid_size(seg: Segment, horizon: float, step: float | None) -> tuple[float, int]:
    """The step and the number of times of `_future_grid`: ``step``, by default the segment's
    median spacing (the lower of the two middle ones: a spacing the series has, so on the
    resolution its times are written in), at most ``horizon`` (so that a sparse series is not
    forecast past it)."""
    if step is None:
        gaps = np.diff(seg.times)
        spacing = float(np.quantile(gaps, 0.5, method="lower")) if len(gaps) else horizon
        step = min(spacing, horizon)
    return step, max(1, math.floor(horizon / step + 1e-9))


def _explicit_future(
    sid: str, given: np.ndarray | None, seg: Segment, table: SeriesTable
) -> np.ndarray:
    """A series' ``--times``, checked: distinct and after its last observation.

    Times inside the history are refused rather than answered: the model and its calibrated
    bands are for forecasts. The calibration factors are derived for leads after the
    history, not before it; and filling every other value of whole fertility histories, the
    default model misses by an MSE of 0.13, 100x linear interpolation's, with 89% of the
    hidden values inside its own 5-95% band (52% and an MSE of 1.1 for the session-24
    default; `reports/csv_seeds.md`).
    """
    raw = np.asarray([] if given is None else given)
    if raw.dtype.kind in "iuf" or raw.size == 0:
        f = np.sort(raw.astype(np.float64))
    elif table.encoding.kind == "datetime":  # ISO strings, Timestamps, datetime64
        f = np.sort(table.encoding.encode(pd.Series(list(raw)).astype(str)))
    else:
        raise DataError(
            f"series {sid!r}: forecast times must be numbers for this table (numeric times), "
            f"got {raw[:3].tolist()}."
        )
    if np.isnan(f).any():
        raise DataError(f"series {sid!r}: a forecast time (--times) is missing (NaN).")
    fmt = table.encoding.format
    if len(f) == 0:
        raise DataError(
            f"series {sid!r} has no row in --times: give each series of --data.path at least "
            "one time after its last observation."
        )
    if (np.diff(f) <= 0).any():
        raise DataError(f"series {sid!r}: --times repeats a time; give each time once.")
    if f[0] <= seg.times[-1]:
        raise DataError(
            f"series {sid!r}: --times has {fmt(f[:1])[0]}, not after its last observation "
            f"{fmt(seg.times[-1:])[0]}. predict forecasts past each series' history; give "
            "later times (`latentode test` scores the model's reconstructions instead)."
        )
    return f


def future_times(
    model: LatentODE | Ensemble,
    table: SeriesTable,
    data_state: dict[str, Any],
    horizon: float,
    step: float | None = None,
    times: dict[str, np.ndarray] | None = None,
    n_samples: int = 200,
    on_history: bool = False,
) -> tuple[list[Segment], list[np.ndarray]]:
    """Each series' conditioning segment and future times, checked before anything is drawn.

    Args:
        model: the forecaster (for the size of its calls, `draws_held`).
        table, data_state, horizon, step, times, n_samples: as `forecast`'s.
        on_history: the paths are decoded at the history's times too (``importance`` or
            ``refine``), which counts towards a call's size.

    Raises:
        DataError: channels differ from the model's; a requested time is not after the
            series' history, is past the last date-time that can be written or past what
            the model's time axis holds (`_check_axis`); or one
            series' paths at its times are more than one model call holds
            (`draws_per_call`), which would exhaust the memory.
    """
    check_table(table, data_state)
    horizon = _span_value(horizon, table, "horizon")
    step = None if step is None else _span_value(step, table, "step")
    if step is not None and step > horizon:
        raise DataError(
            f"the step ({step:g}, --step) is longer than the horizon ({horizon:g}, --horizon): "
            "no forecast time would fall within it; give a step of at most the horizon."
        )
    if times is not None:
        ids = set(table.series_ids)
        unknown = [k for k in times if k not in ids]
        if unknown:
            raise DataError(
                f"times names series the table does not hold: {unknown[:5]} (the keys are "
                "series ids, as strings)."
            )
    segs = [_recent(g, data_state.get("history")) for g in whole_series(table)]
    future, latest = [], table.encoding.latest()
    given = "--times" if times is not None else "--horizon and --step"
    if on_history:
        given += ", and the history for --importance / --refine"
    for seg in segs:
        sid = table.series_ids[seg.series]
        if times is None:  # checked before the grid is built
            every, n = _grid_size(seg, horizon, step)
            end = seg.times[-1] + every * n
        else:
            f = _explicit_future(sid, times.get(sid), seg, table)
            n, end = len(f), f[-1]
        _check_axis(sid, seg, end, float(data_state.get("time_scale", 1.0)), table, given)
        if end > latest:
            raise DataError(
                f"series {sid!r}: forecast times reach past {table.encoding.format([latest])[0]}, "
                "the last date-time that can be written (before 2262-04-12, and at most 292 "
                "years after the history's first time); shorten the horizon."
            )
        budget = draws_per_call(seg.values.shape[-1])
        _check_size(sid, n, n * n_samples, budget, n_samples, given)
        future.append(_future_grid(seg, horizon, step) if times is None else f)
        _check_resolution(sid, future[-1], table, given)
        if on_history:
            held = draws_held(model, [seg], future[-1:], n_samples, on_history)
            _check_size(sid, n, held, budget, n_samples, given, on_history=True)
    return segs, future


def _check_axis(
    sid: str, seg: Segment, end: float, scale: float, table: SeriesTable, given: str
) -> None:
    """Refuse forecast times so far from the series' history that on the model's time axis
    (time units over ``scale``) they pass what its 32-bit numbers hold: they became infinite
    in the model, which refused them without naming the series or the option."""
    if not (end - seg.t0) / scale <= FLOAT32_MAX:
        raise DataError(
            f"series {sid!r}: forecast times ({given}) reach {table.encoding.format([end])[0]}, "
            f"too far past its history: the model's time axis, in steps of {scale:g} time "
            f"units, holds at most {FLOAT32_MAX:.3g} of them. Ask for times nearer its last "
            f"observation {table.encoding.format(seg.times[-1:])[0]}."
        )


_RESOLUTION_NAMES = {
    "D": "whole days",
    "s": "whole seconds",
    "ms": "milliseconds",
    "us": "microseconds",
}


def _check_resolution(sid: str, future: np.ndarray, table: SeriesTable, given: str) -> None:
    """Refuse forecast times between the steps of the history's resolution (hours of data in
    whole days): written in its format they would be rounded, mislabelled or repeated."""
    off = table.encoding.off_resolution(future)
    if off.any():
        steps = _RESOLUTION_NAMES[table.encoding.resolution]
        raise DataError(
            f"series {sid!r}: {int(off.sum())} forecast time(s) ({given}) fall between the "
            f"history's times, which are written in {steps}; they would be written rounded. "
            f"Give --step and --horizon (or --times) in {steps}, or a history file whose times "
            "are written more finely."
        )


def _check_size(
    sid: str,
    n: int,
    held: int,
    budget: int,
    n_samples: int,
    given: str,
    on_history: bool = False,
) -> None:
    """Refuse a series whose ``held`` path-times (`draws_held`) exceed the ``budget`` of its
    channels (`draws_per_call`); ``on_history``: the count includes the history's times
    (--importance / --refine)."""
    if held > budget:
        options = ", or leave out --importance / --refine" if on_history else ""
        raise DataError(
            f"series {sid!r}: {n:,} forecast times ({given}) x {n_samples} paths need "
            f"{held:,} path-times, more than one model call holds ({budget:,} with its "
            f"channels, about {call_gb():.3g} GB); nothing was computed. Ask for fewer times "
            f"(a coarser --step or a shorter --horizon) or fewer --n_samples{options}, or on a "
            "machine with the memory to spare raise --call_memory (GB per call)."
        )


def _length(x: float, table: SeriesTable) -> str:
    """A length of time as `far_reach` writes it: ``30D`` for date-times (a span as
    ``--horizon`` takes it), ``30 time units`` for numbers."""
    unit = table.encoding.unit if table.encoding.kind == "datetime" else " time units"
    return f"{x:.4g}{unit}"


def validated_lead(table: SeriesTable, data_state: dict[str, Any]) -> tuple[float, str]:
    """The longest lead the fit validated its forecasts on, resolved on ``table``, and how.

    ``data.holdout`` (``data_state["holdout"]``) of 1 or more is that many time units; below 1
    it is a fraction of each series' span, so the longest such forecast is that fraction of
    the longest series' span (``table``'s, as training resolves it on its file). A checkpoint
    without a holdout: the longest series' span.

    Returns:
        ``(lead, how)``: the lead in the table's time units (0 for a table of single
        observations) and the words that say what it is, for `far_reach`'s message.
    """
    holdout = data_state.get("holdout")
    if holdout is not None and float(holdout) >= 1:
        return float(holdout), f"{_length(float(holdout), table)}, data.holdout"
    span = max((float(g.times[-1] - g.times[0]) for g in whole_series(table)), default=0.0)
    if holdout is None:
        return span, (
            f"{_length(span, table)}: the checkpoint stores no data.holdout, so the longest "
            "series' span in the file stands in for it"
        )
    held = holdout_length(span, float(holdout))
    return held, (
        f"{_length(held, table)}: data.holdout {float(holdout):g} of the longest series' span "
        f"in the file, {_length(span, table)}"
    )


def far_reach(
    table: SeriesTable,
    data_state: dict[str, Any],
    segs: list[Segment],
    future: list[np.ndarray],
) -> str:
    """The warning (empty when none is due) naming the series whose farthest forecast time
    lies more than `REACH` times the fit's longest validated lead (`validated_lead`) past
    their last observation: there the forecast extrapolates the learned dynamics far beyond
    anything fitted or validated, and its bands are the model's own uncertainty alone.

    Args:
        table: the histories (series ids, time unit).
        data_state: the checkpoint's data settings (``holdout``).
        segs, future: each series' conditioning segment and future times (`future_times`).
    """
    held, how = validated_lead(table, data_state)
    if not held > 0:  # nothing to compare with
        return ""
    limit = REACH * held * (1 + 1e-9)  # REACH x held reached by summed steps: not warned of
    leads = [float(f[-1] - g.times[-1]) for g, f in zip(segs, future, strict=True)]
    far = [(g, lead) for g, lead in zip(segs, leads, strict=True) if lead > limit]
    if not far:
        return ""
    named = ", ".join(
        f"{table.series_ids[g.series]!r} (to {_length(lead, table)} ahead)"
        for g, lead in far[:SHOWN]
    )
    more = f" and {len(far) - SHOWN} more" if len(far) > SHOWN else ""
    return (
        f"{len(far)} series {'is' if len(far) == 1 else 'are'} forecast more than "
        f"{REACH:g} times as far ahead as the fit "
        f"validated ({how}): {named}{more}. That far past their last observation the "
        "forecasts extrapolate the learned dynamics beyond anything the model was fitted or "
        "validated on, and their bands reflect only the model's own uncertainty, not evidence "
        "from the data. Shorten --horizon (or the --times), or refit with a longer "
        "data.holdout to validate further ahead."
    )
