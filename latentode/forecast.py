"""Forecasts with honest uncertainty from a fitted latent ODE, in the user's units and times.

For each series: condition on its observed history, draw posterior paths of the latent ODE,
add the decoder's observation noise, and summarise the predictive distribution at future times
(mean, std and the 5 / 50 / 95 % quantiles), mapped back through the stored normalisation and
time encoding. Given band factors (`latentode.calibration`), the predictive is scaled about its
median so that its 5-95% band covers 90% of the fit's validation forecasts (`scale_bands`).
Used by ``latentode predict``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from .data.batch import IrregularBatch
from .data.errors import DataError
from .data.prep import Segment, collate_segments, denormalise, denormalise_std, whole_series
from .data.table import TIME_UNITS, SeriesTable
from .ensemble import Ensemble
from .nn.base import ModelInputError
from .nn.latent_ode import AggregatePosterior, LatentODE

if TYPE_CHECKING:  # calibration imports this module
    from .calibration import Calibration

__all__ = [
    "QUANTILES",
    "ForecastResult",
    "check_channels",
    "conditioned_batch",
    "forecast",
    "merge_shards",
    "parse_horizon",
    "predictive_summary",
    "scale_bands",
]

QUANTILES = (0.05, 0.5, 0.95)
FIELDS = ("mean", "std", "q05", "q50", "q95")


@dataclass
class ForecastResult:
    """Forecasts of every series, in the user's units.

    Attributes:
        frame: long table ``series_id, time, channel, mean, std, q05, q50, q95``.
        history: the conditioning segments (absolute times, original units).
        future: per series, the float future times (the table's time axis).
        summary: per series ``[n, D, 5]`` arrays of (mean, std, q05, q50, q95); ``None`` for
            the series another process forecasts (see `forecast`'s ``shard``).
    """

    frame: pd.DataFrame
    history: list[Segment]
    future: list[np.ndarray]
    summary: list[np.ndarray | None]


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


def _recent(seg: Segment, history: float | None) -> Segment:
    """The part of a series' history the model conditions on (as in training)."""
    if history is None:
        return seg
    keep = seg.times >= seg.times[-1] - history
    t = seg.times[keep]
    return replace(seg, t0=float(t[0]), times=t, values=seg.values[keep])


def _future_grid(seg: Segment, horizon: float, step: float | None) -> np.ndarray:
    """``(0, horizon]`` past the segment's last time every ``step`` (default: its median
    spacing, at most ``horizon``, so that a sparse series is not forecast past the horizon)."""
    if step is None:
        spacing = float(np.median(np.diff(seg.times))) if len(seg.times) > 1 else horizon
        step = min(spacing, horizon)
    n = max(1, math.floor(horizon / step + 1e-9))
    return seg.times[-1] + step * np.arange(1, n + 1)  # (n,)


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
    f = np.sort(np.asarray([] if given is None else given, dtype=np.float64))
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


@torch.no_grad()
def predictive_summary(
    model: LatentODE | Ensemble,
    segs: list[Segment],
    future: list[np.ndarray],
    data_state: dict[str, Any],
    n_samples: int,
    generator: torch.Generator,
    importance: bool = False,
    refine: int = 0,
    prior: AggregatePosterior | None = None,
) -> list[np.ndarray]:
    """Per segment ``[n, D, 5]`` (mean, std, q05, q50, q95) at its times ``future`` (user units).

    Each of the ``n_samples`` posterior paths gets its own draw of the observation noise, so the
    quantiles are those of the posterior predictive. The mean and std are the predictive's
    moments from the paths themselves (`LatentODE.predict`: the paths' average, and
    ``sqrt(var_k(paths) + sigma^2)``), not from the noisy draws: the same expectations with
    less Monte-Carlo error (the noise would add ``sigma^2 / K`` to the mean's variance).
    ``importance``: the paths are the importance-resampled ones of `LatentODE.predict` (the
    model's posterior, not the encoder's), the mean and std its weighted moments. ``refine``:
    Adam steps refining each series' ``q(z0)`` on its own ELBO first (`LatentODE.refine`).
    An `Ensemble`: ``n_samples`` paths from each member (read through its own ``data_state``;
    the one given is ignored), pooled with equal weights: the quantiles are the pooled draws',
    the mean the members' average and the variance the mixture's. ``prior``: with
    ``importance``, the paths are drawn from this aggregate posterior instead of the encoder's
    ``q`` (`LatentODE.aggregate_posterior`; one model only, its states at the segments'
    aligned anchor time).
    """
    if prior is not None and isinstance(model, Ensemble):
        raise ModelInputError("prior= belongs to one model's encoder; not with an Ensemble.")
    pairs = model.pairs() if isinstance(model, Ensemble) else [(model, data_state)]
    parts = [
        _member_predictive(m, segs, future, s, n_samples, generator, importance, refine, prior)
        for m, s in pairs
    ]
    draws = np.concatenate([p[0] for p in parts])  # (M K, B, n, D)
    q = np.quantile(draws, QUANTILES, axis=0)  # (3, B, n, D)
    mean = np.mean([p[1] for p in parts], axis=0)  # (B, n, D)
    second = np.mean([p[2] ** 2 + p[1] ** 2 for p in parts], axis=0)
    std = np.sqrt(np.maximum(second - mean**2, 0.0)) if len(parts) > 1 else parts[0][2]
    stats = np.stack([mean, std, *q], axis=-1)  # (B, n, D, 5)
    return [stats[b, : len(f)] for b, f in enumerate(future)]


def conditioned_batch(
    model: LatentODE, segs: list[Segment], data_state: dict[str, Any]
) -> tuple[IrregularBatch, list[float]]:
    """The segments as ``model`` conditions on them, and each one's time origin.

    Normalised by the checkpoint's statistics, on the model's time axis, each aligned as in
    training: at its first observation, or at its last for a model anchored there; in the
    model's dtype and on its device.
    """
    norm, scale = data_state.get("normalisation"), float(data_state.get("time_scale", 1.0))
    param = next(model.parameters())
    last = model.config.anchor == "last"
    origins = [float(g.times[-1]) if last else g.t0 for g in segs]
    batch = collate_segments(segs, norm, scale, dtype=param.dtype, origins=origins)
    return batch.to(param.device), origins


def _member_predictive(
    model: LatentODE,
    segs: list[Segment],
    future: list[np.ndarray],
    data_state: dict[str, Any],
    n_samples: int,
    generator: torch.Generator,
    importance: bool,
    refine: int,
    prior: AggregatePosterior | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One model's noisy predictive draws ``[K, B, n, D]`` and its mean and std ``[B, n, D]``,
    in user units, on the padded grid of ``future``."""
    norm, scale = data_state.get("normalisation"), float(data_state.get("time_scale", 1.0))
    observed, origins = conditioned_batch(model, segs, data_state)
    dtype, device = observed.values.dtype, observed.values.device
    width = max(len(f) for f in future)
    grid = np.stack(
        [
            np.pad(
                (f - o) / scale,
                (0, width - len(f)),
                mode="linear_ramp",
                end_values=((f[-1] - o) / scale + width),
            )
            for f, o in zip(future, origins, strict=True)
        ]
    )  # (B, n) strictly increasing rows
    query = torch.as_tensor(grid, dtype=dtype, device=device)
    pred = model.predict(observed, query, n_samples, importance, prior=prior, refine=refine)
    paths = pred.samples  # (K, B, n, D) decoded means of the posterior paths
    noise_std = model.decoder.log_std.to(paths).exp()  # (D,) the same for every path
    eps = torch.randn(paths.shape, generator=generator, dtype=dtype).to(device)
    draws = (paths + noise_std * eps).double().cpu().numpy()  # (K, B, n, D)
    mean, std = pred.mean.double().cpu().numpy(), pred.std.double().cpu().numpy()  # (B, n, D)
    if norm is not None:
        draws = denormalise(draws, norm)
        mean, std = denormalise(mean, norm), denormalise_std(std, norm)
    return draws, mean, std


def scale_bands(stats: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The predictive scaled about its median by ``scale`` per channel.

    Args:
        stats: ``[..., D, 5]`` (mean, std, q05, q50, q95).
        scale: ``[D]`` factors, or ``[..., D]`` one per value (e.g. by lead time,
            `latentode.calibration.Calibration.factors`).

    Returns:
        ``[..., D, 5]``: ``q50 + scale * (x - q50)`` for the mean and quantiles, ``scale * std``.
    """
    q50 = stats[..., 3:4]  # (..., D, 1)
    lam = np.asarray(scale)[..., None]  # (..., D, 1)
    out = q50 + lam * (stats - q50)
    out[..., 1] = lam[..., 0] * stats[..., 1]
    return out


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
        seed: seeds the posterior and noise draws (chunk ``c`` of series is seeded by
            ``seed + 7919 c``, so the result does not depend on how chunks are shared out).
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

    Returns:
        A `ForecastResult`.

    Raises:
        DataError: channels differ from the model's, a requested time is not after the
            series' history, or is past the last date-time that can be written.
    """
    check_channels(table, data_state["channels"])
    segs = [_recent(g, data_state.get("history")) for g in whole_series(table)]
    future = []
    for seg in segs:
        sid = table.series_ids[seg.series]
        if times is None:
            future.append(_future_grid(seg, horizon, step))
            continue
        future.append(_explicit_future(sid, times.get(sid), seg, table))
    latest = table.encoding.latest()
    for seg, f in zip(segs, future, strict=True):
        if len(f) and f.max() > latest:
            raise DataError(
                f"series {table.series_ids[seg.series]!r}: forecast times reach past "
                f"{pd.Timestamp.max:%Y-%m-%d}, the last date-time that can be written; "
                "shorten the horizon."
            )
    model.eval()
    rank, world = shard
    summary: list[np.ndarray | None] = [None] * len(segs)
    for c, lo in enumerate(range(0, len(segs), chunk)):
        if c % world != rank:
            continue
        chunk_seed = seed + 7919 * c
        torch.manual_seed(chunk_seed)  # posterior draws
        generator = torch.Generator().manual_seed(chunk_seed)  # observation noise
        hi = min(lo + chunk, len(segs))
        stats = predictive_summary(
            model,
            segs[lo:hi],
            future[lo:hi],
            data_state,
            n_samples,
            generator,
            importance,
            refine,
        )
        if calibration is not None and calibration.scale is not None:
            stats = [
                scale_bands(s, calibration.factors(f - g.times[-1]))
                for s, f, g in zip(stats, future[lo:hi], segs[lo:hi], strict=True)
            ]
        summary[lo:hi] = stats
    return ForecastResult(_frame(table, segs, future, summary), segs, future, summary)


def merge_shards(table: SeriesTable, parts: Sequence[ForecastResult]) -> ForecastResult:
    """One result, in the table's series order, from the `forecast` shards of every process."""
    first = parts[0]
    summary = [
        next((p.summary[i] for p in parts if p.summary[i] is not None), None)
        for i in range(len(first.summary))
    ]
    missing = [
        table.series_ids[g.series] for g, s in zip(first.history, summary, strict=True) if s is None
    ]
    if missing:
        raise RuntimeError(f"no process forecast series {missing[:5]} (a bug; please report).")
    return ForecastResult(
        _frame(table, first.history, first.future, summary), first.history, first.future, summary
    )


def _frame(
    table: SeriesTable,
    segs: list[Segment],
    future: list[np.ndarray],
    summary: Sequence[np.ndarray | None],
) -> pd.DataFrame:
    D = table.n_channels
    parts = []
    for seg, f, s in zip(segs, future, summary, strict=True):
        if s is None:  # another process's series
            continue
        n = len(f)
        parts.append(
            pd.DataFrame(
                {
                    "series_id": table.series_ids[seg.series],
                    "time": np.repeat(table.encoding.format(f), D),
                    "channel": np.tile(table.channels, n),
                    **{name: s[..., j].reshape(-1) for j, name in enumerate(FIELDS)},
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["series_id", "time", "channel", *FIELDS])
    return pd.concat(parts, ignore_index=True)
