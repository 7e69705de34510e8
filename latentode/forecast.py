"""Forecasts with honest uncertainty from a fitted latent ODE, in the user's units and times.

For each series: condition on its observed history, draw posterior paths of the latent ODE,
add the decoder's observation noise, and summarise the predictive distribution at future times
(mean, std and the 5 / 50 / 95 % quantiles, and the ends of any other central band asked
for, such as 10 / 90 % for an 80% band), mapped back through the stored normalisation and
time encoding (`latentode.predictive`). Given band factors (`latentode.calibration`), the
predictive is scaled about its median so that its 5-95% band covers 90% of the fit's
validation forecasts, and each other band its own coverage (`Predictive.summary`; a
transformed channel on its log or logit scale). Used by ``latentode predict``.

The histories are read and checked in `latentode.history`, the future times parsed and
checked in `latentode.horizon`; both are re-exported here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import pandas as pd

from .data.errors import DataError
from .data.prep import Segment
from .data.table import SeriesTable
from .ensemble import Ensemble
from .history import check_channels, check_table, read_history
from .horizon import _future_grid as _future_grid
from .horizon import _recent as _recent
from .horizon import far_reach, future_times, parse_horizon
from .nn.latent_ode import LatentODE
from .predictive import (
    LEVEL,
    QUANTILES,
    Predictive,
    band_levels,
    conditioned_batch,
    draw_seeds,
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

    Warns:
        UserWarning: some series are forecast more than `latentode.horizon.REACH` times as
            far ahead as the fit validated (`latentode.horizon.far_reach`; from the first
            process of a shared-out forecast only).

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
    rank, world = shard
    if rank == 0 and (far := far_reach(table, data_state, segs, future)):  # every series
        warnings.warn(far, UserWarning, stacklevel=2)
    levels = band_levels(levels)
    model.eval()
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
