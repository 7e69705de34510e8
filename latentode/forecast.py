"""Forecasts with honest uncertainty from a fitted latent ODE, in the user's units and times.

For each series: condition on its observed history, draw posterior paths of the latent ODE,
add the decoder's observation noise, and summarise the predictive distribution at future times
(mean, std and the 5 / 50 / 95 % quantiles, and the ends of any other central band asked
for, such as 10 / 90 % for an 80% band), mapped back through the stored normalisation and
time encoding (`latentode.predictive`). Given band factors (`latentode.calibration`), the
predictive is scaled about its median so that its 5-95% band covers 90% of the fit's
validation forecasts, and each other band its own coverage (`Predictive.summary`; a
transformed channel on its log or logit scale). Used by ``latentode predict``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import pandas as pd

from .data.csv import csv_columns, read_series_csv
from .data.errors import DataError
from .data.prep import Segment, whole_series
from .data.table import TIME_UNITS, SeriesTable
from .data.transforms import domain_of, kinds_of, outside_domain, transform_of
from .ensemble import Ensemble
from .nn.latent_ode import LatentODE
from .predictive import (
    LEVEL,
    QUANTILES,
    Predictive,
    band_levels,
    call_gb,
    conditioned_batch,
    draw_seeds,
    draws_held,
    draws_per_call,
    iter_predictives,
    predictive_summary,
    predictives,
    quantile_names,
    scale_bands,
)

if TYPE_CHECKING:  # calibration imports this module
    from .calibration import Calibration

__all__ = [
    "LEVEL",
    "QUANTILES",
    "ForecastResult",
    "Predictive",
    "check_channels",
    "check_table",
    "conditioned_batch",
    "forecast",
    "future_times",
    "merge_shards",
    "parse_horizon",
    "predictive_summary",
    "predictives",
    "read_history",
    "scale_bands",
    "summary_columns",
]

ROWS_PER_WRITE = 2**18  # rows `ForecastResult.write_csv` formats at a time


@dataclass
class ForecastResult:
    """Forecasts of every series, in the user's units.

    Attributes:
        history: the conditioning segments (absolute times, original units).
        future: per series, the float future times (the table's time axis).
        summary: per series ``[n, D, 5]`` arrays of (mean, std, q05, q50, q95), ``[n, D, 2 +
            Q]`` with more bands (`summary_columns`); ``None`` for the series another process
            forecasts (see `forecast`'s ``shard``).
        table: the history's table (its series ids, channels and time format name the rows).
        levels: the bands the summaries hold (`band_levels`; the 5-95% one by default).

    As a long table ``series_id, time, channel, mean, std, q05, q50, q95`` (more quantile
    columns with more bands; `frame`, `write_csv`), one row per series, time and channel.
    The summaries hold 40 bytes a row, the whole table about 130 more (its strings), so
    `write_csv` formats a few series at a time instead of building it: 1.5 GB less at 11.5
    million rows (48 channels, 20,000 times, 12 series; session 32). Between processes only
    the summaries travel.
    """

    history: list[Segment]
    future: list[np.ndarray]
    summary: list[np.ndarray | None]
    table: SeriesTable
    levels: tuple[float, ...] = (LEVEL,)

    @property
    def columns(self) -> list[str]:
        """The long table's columns."""
        return ["series_id", "time", "channel", *summary_columns(self.levels)]

    @property
    def n_rows(self) -> int:
        """Rows of the long table (this process's series)."""
        D = self.table.n_channels
        return sum(
            len(f) * D for f, s in zip(self.future, self.summary, strict=True) if s is not None
        )

    @property
    def frame(self) -> pd.DataFrame:
        """The whole long table in memory, as `write_csv` writes it (without building it):
        its ``time`` column holds the times as text in the file's format; compare with a
        table's times after ``table.encoding.encode(frame["time"])``."""
        parts = list(self._frames())
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=self.columns)

    def write_csv(self, path: str | Path | TextIO) -> None:
        """Write the long table to ``path`` (a file name or an open text stream), a few
        series (`ROWS_PER_WRITE` rows) at a time: the same text as
        ``frame.to_csv(path, index=False)``."""
        if not isinstance(path, (str, Path)):
            self._write(path)
            return
        with open(path, "w", newline="") as out:
            self._write(out)

    def _write(self, out: TextIO) -> None:
        out.write(",".join(self.columns) + "\n")
        block: list[pd.DataFrame] = []
        held = 0
        for part in self._frames():
            block.append(part)
            held += len(part)
            if held >= ROWS_PER_WRITE:
                pd.concat(block).to_csv(out, header=False, index=False)
                block, held = [], 0
        if block:
            pd.concat(block).to_csv(out, header=False, index=False)

    def _frames(self) -> Iterator[pd.DataFrame]:
        """The long table's rows, one series at a time."""
        table, D = self.table, self.table.n_channels
        fields = summary_columns(self.levels)
        for seg, f, s in zip(self.history, self.future, self.summary, strict=True):
            if s is None:  # another process's series
                continue
            columns = {
                "series_id": table.series_ids[seg.series],
                "time": np.repeat(table.encoding.format(f), D),
                "channel": np.tile(table.channels, len(f)),
            }
            yield pd.DataFrame(
                {**columns, **{name: s[..., j].reshape(-1) for j, name in enumerate(fields)}}
            )


def summary_columns(levels: Sequence[float] | None = None) -> list[str]:
    """The names of a summary's columns: ``mean, std`` and `quantile_names` (``mean, std,
    q05, q50, q95`` by default)."""
    return ["mean", "std", *quantile_names(levels)]


def check_channels(table: SeriesTable, expected: Sequence[str]) -> None:
    """Refuse a file whose channels differ from the model's.

    Raises:
        DataError: listing both sets of channels.
    """
    if list(table.channels) != list(expected):
        raise DataError(
            f"{table.source}: the file's channels {list(table.channels)} differ from the "
            f"checkpoint's {list(expected)}. Give a file with exactly the model's channel "
            "columns (drop or rename the others)."
        )


def read_history(
    data_path: str | Path, state: dict[str, Any], duplicates: str | None = None
) -> SeriesTable:
    """A history file read as the fit read its training file (``state``: the checkpoint's
    ``data_state``, ``system.hparams["data_state"]``): its columns, time unit,
    handling of repeated rows (``duplicates`` overrides that) and channel transforms, and the
    model's channels by name (other value columns are ignored).

    Raises:
        DataError: the file lacks one of the model's channels, has times of another kind
            (numbers, date-times) than the training file, or breaks a rule of
            `read_series_csv`.
    """
    channels = list(state["channels"])
    time_column = state.get("time_column", "time")
    header = csv_columns(data_path)
    missing = [c for c in channels if c not in header]
    if missing:
        raise DataError(
            f"{data_path}: no column {', '.join(map(repr, missing))}: the checkpoint was fitted "
            f"on the channels {channels}. Give a file with these columns (others are ignored)."
        )
    if time_column not in header:
        raise DataError(
            f"{data_path}: no column {time_column!r}: the checkpoint was fitted with its times "
            f"in {time_column!r}. Give a file whose times are in that column."
        )
    table = read_series_csv(
        data_path,
        time_column=time_column,
        series_column=state.get("series_column", "series_id"),
        channels=channels,
        time_unit=state["time_encoding"].get("unit") or "D",
        duplicates=duplicates or state.get("duplicates", "error"),
        allow_unobserved=True,  # the model forecasts a channel from the others
        transform=transform_of(state),  # a transformed channel's values must be in its domain
    )
    fitted = state["time_encoding"].get("kind", "numeric")
    if table.encoding.kind != fitted:  # the model's time axis would be read in another unit
        kinds = {"numeric": "numbers", "datetime": "date-times"}
        raise DataError(
            f"{data_path}: its times are {kinds[table.encoding.kind]}, but the checkpoint was "
            f"fitted on {kinds[fitted]}; give times of the kind the training file had."
        )
    return table


def check_table(table: SeriesTable, data_state: dict[str, Any]) -> None:
    """Refuse a history table the checkpoint cannot read as its training data was read:
    not a `SeriesTable`, other channels (`check_channels`), times of another kind or unit
    (hours read as days would compress the model's time axis 24x, without a word), or a
    value outside a transformed channel's domain (it would turn into a missing value).

    Raises:
        DataError: naming what differs and how to read the file as the fit did.
    """
    if not isinstance(table, SeriesTable):
        raise DataError(
            f"the histories must be a SeriesTable (read_series_csv(path, ...) reads one), got "
            f"{type(table).__name__}."
        )
    check_channels(table, data_state["channels"])
    fitted = data_state.get("time_encoding") or {}  # a state built by hand may lack it
    kind, unit = fitted.get("kind", "numeric"), fitted.get("unit") or ""
    if fitted and (table.encoding.kind, table.encoding.unit or "") != (kind, unit):
        mine = f"{table.encoding.kind} times, unit {table.encoding.unit or 'none'!r}"
        raise DataError(
            f"{table.source}: {mine}, but the checkpoint was fitted on {kind} times, unit "
            f"{unit or 'none'!r}; read the file as the fit did (read_series_csv(path, "
            f"time_unit={unit or 'D'!r}, ...), or `latentode predict`, which does)."
        )
    kinds = kinds_of(data_state.get("normalisation"), table.n_channels)
    bad = outside_domain(table.values, kinds)  # (N, D)
    if bad.any():
        row, d = (int(v[0]) for v in np.nonzero(bad))
        sid = table.series_ids[int(np.searchsorted(table.offsets, row, side="right")) - 1]
        raise DataError(
            f"{table.source}: series {sid!r}: channel {table.channels[d]!r} is modelled on a "
            f"{kinds[d]} scale, which takes values {domain_of(kinds[d])}, but it has "
            f"{table.values[row, d]:g} at time {table.encoding.format(table.times[[row]])[0]} "
            f"({int(bad[:, d].sum())} such value(s)); correct them or leave them empty."
        )


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
            series' history or is past the last date-time that can be written; or one
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


def forecast(
    model: LatentODE | Ensemble,
    table: SeriesTable,
    data_state: dict[str, Any],
    horizon: float,
    step: float | None = None,
    times: dict[str, np.ndarray] | None = None,
    n_samples: int = 200,
    seed: int = 0,
    chunk: int = 128,
    shard: tuple[int, int] = (0, 1),
    importance: bool = False,
    calibration: Calibration | None = None,
    refine: int = 0,
    levels: Sequence[float] | None = None,
) -> ForecastResult:
    """Forecast every series of ``table`` after its last observation.

    Args:
        model: a fitted latent ODE or an `Ensemble` of them (eval mode is set here).
        table: the histories (the model's channels, checked).
        data_state: the checkpoint's ``channels``, ``normalisation``, ``time_scale`` and
            ``history`` (each series is conditioned on its last ``history`` time units, as in
            training; None: its whole history).
        horizon: how far past each series' last observation (table time units).
        step: spacing of the future grid (default: each series' median observation spacing).
        times: explicit future times per series id (table time units), instead of a grid.
        n_samples: posterior paths per series (each with its own observation noise draw).
        seed: seeds the posterior and noise draws: each series' from ``seed`` and its id
            alone (`draw_seeds`), so a series' forecast does not depend on ``chunk``,
            ``shard``, the file's order or which other series it holds, up to the solver's
            tolerance (the series of one call share its adaptive steps).
        chunk: series per model call.
        shard: ``(rank, world_size)``: forecast only chunks ``rank, rank + world_size, ...``
            (the other series get ``None`` summaries and no rows); see `merge_shards`.
        importance: weight the posterior paths by the model's own posterior given each
            history (`LatentODE.predict`'s ``importance``).
        calibration: band factors (`latentode.calibration.calibrate`): each forecast value's
            predictive is scaled about its median (`scale_bands`) by the factors of its lead
            time past the series' last observation; None (or one without factors): as the
            model gives it.
        refine: Adam steps refining each series' ``q(z0)`` on its history's ELBO
            (`LatentODE.refine`; 0: the encoder's ``q``).
        levels: bands to summarise besides the 5-95% one (coverages such as ``(0.8,
            0.95)``: columns ``q10, q90, q02.5, q97.5``), each scaled by its own factors
            (``calibration`` must hold them, `latentode.calibration.calibrate`'s ``levels``).

    Returns:
        A `ForecastResult`.

    Raises:
        DataError: as `future_times`.
    """
    whole = (int, np.integer)
    if isinstance(chunk, bool) or not isinstance(chunk, whole) or chunk < 1:
        raise DataError(
            f"chunk (series per model call) must be a whole number >= 1, got {chunk!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, whole):
        raise DataError(f"seed must be a whole number, got {seed!r}.")
    segs, future = future_times(
        model, table, data_state, horizon, step, times, n_samples, importance or refine > 0
    )
    levels = band_levels(levels)
    model.eval()
    rank, world = shard
    summary: list[np.ndarray | None] = [None] * len(segs)
    seeds = draw_seeds(seed, [table.series_ids[g.series] for g in segs])
    for c, lo in enumerate(range(0, len(segs), chunk)):
        if c % world != rank:
            continue
        hi = min(lo + chunk, len(segs))
        preds = iter_predictives(
            model,
            segs[lo:hi],
            future[lo:hi],
            data_state,
            n_samples,
            seeds[lo:hi],
            importance,
            refine,
        )  # lazily: one model call's draws held at a time
        calibrated = calibration is not None and calibration.scale is not None
        for i, p in enumerate(preds, start=lo):
            lead = future[i] - segs[i].times[-1]
            lam, center = calibration.scaling(lead, levels) if calibrated else (None, None)
            summary[i] = p.summary(lam, levels, center)
    return ForecastResult(segs, future, summary, table, levels)


def merge_shards(
    result: ForecastResult, parts: Sequence[Sequence[np.ndarray | None]]
) -> ForecastResult:
    """One result, in the table's series order: this process's ``result`` with every
    process's `ForecastResult.summary` (``parts``, one list per process; the summaries alone
    travel between processes, not the history or the long table)."""
    summary = [
        next((p[i] for p in parts if p[i] is not None), None) for i in range(len(result.summary))
    ]
    ids = result.table.series_ids
    missing = [ids[g.series] for g, s in zip(result.history, summary, strict=True) if s is None]
    if missing:
        raise RuntimeError(f"no process forecast series {missing[:5]} (a bug; please report).")
    return replace(result, summary=summary)
