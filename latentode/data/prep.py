"""From a `SeriesTable` to training data: normalisation, windows, splits, batches.

- Normalisation: per-channel mean / std over the observed training values, after a per-channel
  log transform where one is asked for (`latentode.data.transforms`), kept as a plain dict
  (``{"channels", "mean", "std", "transform"}``) so it sits in a checkpoint's hyperparameters
  and loads with ``weights_only=True``; `normalise` / `denormalise` apply and invert it (numpy
  or torch).
- Segments: the pieces a model sees. One long series is cut into windows of ``window`` time
  units every ``stride``; short series are used whole. A segment keeps its absolute times and
  its origin ``t0`` (its first observed time): a batch shifts every segment to start at 0,
  so windows taken anywhere share one small grid and ``z0`` is the state at the first point.
- Splits: `split_series` divides series (seeded); `holdout_bounds` gives the time ranges held
  out at the end of a single series; `split_at` turns a batch and per-series split times into
  a `Split` (condition before, score after, or score the whole segment for training).

Usage::

    norm = fit_normalisation(train_table)
    segs = make_windows(train_table, window=4.0, stride=0.25)
    batch = collate_segments(segs[:32], norm)                 # times [T], values [32, T, D]
    split = split_at(batch, 0.5 * segment_spans(segs[:32]), score="all")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from .batch import IrregularBatch, Split, collate_series
from .errors import DataError
from .table import SeriesTable
from .transforms import forward, inverse, kinds_of, transform_kinds

__all__ = [
    "Segment",
    "check_fractions",
    "collate_segments",
    "constant_within_series",
    "denormalise",
    "denormalise_std",
    "fit_normalisation",
    "forecast_segment",
    "held_out_counts",
    "holdout_bounds",
    "holdout_length",
    "make_windows",
    "normalise",
    "segment_spans",
    "split_at",
    "split_series",
    "value_range",
    "whole_series",
]

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)


def fit_normalisation(
    table: SeriesTable,
    min_std: float = 1e-8,
    transform: Mapping[str, str | None] | None = None,
    centre: bool = True,
) -> dict[str, Any]:
    """Per-channel mean and std (population) of the observed (transformed) values of ``table``.

    Args:
        table: the training series only.
        min_std: a channel whose std is below this (constant, or one value) gets std 1, so it
            is centred but not blown up.
        transform: channels modelled on a log or logit scale (`latentode.data.transforms`); their
            statistics are those of the transformed values.
        centre: False: mean 0 and std 1 for every channel (only the transform applies).

    Returns:
        ``{"channels": [str], "mean": [float], "std": [float], "transform": [str]}``.
    """
    kinds = transform_kinds(table.channels, transform)
    z = forward(table.values, kinds)  # (N, D) every value in its domain: read_series_csv
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.nanmean(z, axis=0)  # (D,) every channel has a value: read_series_csv
        std = np.nanstd(z, axis=0)  # (D,)
    overflow = ~(np.isfinite(mean) & np.isfinite(std))
    if centre and overflow.any():
        d = int(np.flatnonzero(overflow)[0])
        top = float(np.nanmax(np.abs(table.values[:, d])))
        raise DataError(
            f"{table.source}: channel {table.channels[d]!r}: its values reach {top:.4g} in "
            "magnitude, too large for their mean and spread to be computed (they overflow); "
            "rescale the channel (a unit a thousand or a million times larger), or fix the "
            "value if it is an error."
        )
    std = np.where(np.isfinite(std) & (std >= min_std), std, 1.0)
    if not centre:
        mean, std = np.zeros_like(mean), np.ones_like(std)
    return {
        "channels": list(table.channels),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "transform": kinds,
    }


def value_range(table: SeriesTable) -> dict[str, list[float]]:
    """Per-channel least and greatest observed value of ``table`` (the training series):
    ``{"min": [D], "max": [D]}``; ``latentode predict`` notes histories far outside it."""
    return {
        "min": [float(v) for v in np.nanmin(table.values, axis=0)],
        "max": [float(v) for v in np.nanmax(table.values, axis=0)],
    }


def constant_within_series(table: SeriesTable, min_series: int = 3) -> list[str]:
    """Channels that hold one value throughout every series observing them three times or
    more, with at least two values across ``min_series`` or more such series: an id or a
    static attribute (a station code, a region's area) read as a time series, which the model
    would learn nothing about time from."""
    out = []
    starts = table.offsets[:-1]
    for d, name in enumerate(table.channels):
        x = table.values[:, d]
        seen = np.add.reduceat(~np.isnan(x), starts)  # (S,) observations per series
        lo, hi = np.fmin.reduceat(x, starts), np.fmax.reduceat(x, starts)  # NaN-skipping
        long = seen >= 3
        fixed = long.sum() >= min_series and (lo[long] == hi[long]).all()
        if fixed and len(np.unique(lo[long])) >= 2:
            out.append(name)
    return out


def _stats(x: ArrayT, norm: dict[str, Any]) -> tuple[ArrayT, ArrayT]:
    if len(norm["mean"]) != x.shape[-1]:
        raise DataError(
            f"normalisation has {len(norm['mean'])} channels {norm['channels']}, values have "
            f"{x.shape[-1]}."
        )
    if isinstance(x, Tensor):
        kw = {"dtype": x.dtype, "device": x.device}
        return torch.tensor(norm["mean"], **kw), torch.tensor(norm["std"], **kw)
    return np.asarray(norm["mean"], dtype=x.dtype), np.asarray(norm["std"], dtype=x.dtype)


def normalise(x: ArrayT, norm: dict[str, Any]) -> ArrayT:
    """``(T(x) - mean) / std`` over the last (channel) dimension, ``T`` the channel's
    transform (`latentode.data.transforms`; none in a dict without one); NaN stays NaN."""
    mean, std = _stats(x, norm)
    return (forward(x, kinds_of(norm, x.shape[-1])) - mean) / std


def denormalise(x: ArrayT, norm: dict[str, Any], transformed: bool = False) -> ArrayT:
    """Inverse of `normalise`: back to the user's units (``transformed``: stop before
    inverting the transform, at ``T(x)``)."""
    mean, std = _stats(x, norm)
    z = x * std + mean
    return z if transformed else inverse(z, kinds_of(norm, x.shape[-1]))


def denormalise_std(s: ArrayT, norm: dict[str, Any]) -> ArrayT:
    """A standard deviation (or any spread) in normalised units back to the user's units, or
    to the transformed units for a transformed channel (a spread does not map through a log)."""
    return s * _stats(s, norm)[1]


@dataclass(frozen=True, eq=False)
class Segment:
    """A piece of one series: what a batch row is made of.

    Attributes:
        series: the index of its series in the table.
        t0: its origin on the table's time axis (its first observed time).
        times: ``[n]`` absolute times (every row has an observed channel).
        values: ``[n, D]`` values, NaN where missing.
        t_split: for evaluation, the absolute time from which values are forecast (else None).
    """

    series: int
    t0: float
    times: np.ndarray
    values: np.ndarray
    t_split: float | None = None


def _observed_rows(table: SeriesTable, s: int) -> tuple[np.ndarray, np.ndarray]:
    t, x = table.series(s)
    keep = ~np.isnan(x).all(axis=1)  # rows with something observed
    return t[keep], x[keep]


def _segment(s: int, t: np.ndarray, x: np.ndarray, t_split: float | None = None) -> Segment:
    return Segment(s, float(t[0]), t, x, t_split)


def whole_series(table: SeriesTable) -> list[Segment]:
    """One segment per series (rows with no observed channel dropped)."""
    return [_segment(s, *_observed_rows(table, s)) for s in range(table.n_series)]


def make_windows(
    table: SeriesTable, window: float, stride: float, min_points: int = 2
) -> list[Segment]:
    """Windows ``[start, start + window]`` every ``stride`` time units over each series.

    Starts run from the series' first observed time; a last window ending at its last time is
    added when the regular ones stop short, so every observation is in some window. A series
    shorter than ``window`` is one segment.

    Args:
        table: the series.
        window: window length in time units (> 0).
        stride: distance between window starts (> 0).
        min_points: windows with fewer observed times are skipped.

    Returns:
        The windows, series by series, in time order.

    Raises:
        DataError: for a non-positive window or stride.
    """
    if not (window > 0 and stride > 0):
        raise DataError(f"window and stride must be > 0; got {window!r} and {stride!r}.")
    out: list[Segment] = []
    for s in range(table.n_series):
        t, x = _observed_rows(table, s)
        if len(t) == 0:
            continue
        last = t[-1] - window
        starts = t[0] + stride * np.arange(max(0, int(np.floor((last - t[0]) / stride)) + 1))
        if len(starts) == 0 or starts[-1] < last:
            starts = np.append(starts, max(last, t[0]))
        lo = np.searchsorted(t, starts, side="left")
        hi = np.searchsorted(t, starts + window, side="right")
        for a, b in zip(lo.tolist(), hi.tolist(), strict=True):
            if b - a >= min_points:
                out.append(_segment(s, t[a:b], x[a:b]))
    return out


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Refuse held-out shares of the series that leave none to train on.

    Raises:
        DataError: a share outside [0, 1), or the two summing to 1 or more.
    """
    ok = all(0 <= f < 1 for f in (val_fraction, test_fraction))
    if not (ok and val_fraction + test_fraction < 1):
        raise DataError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} are the shares of "
            "the series held out for validation and test: each in [0, 1), together below 1 "
            "(the default is 0.1 each)."
        )


def held_out_counts(
    n: int, val_fraction: float, test_fraction: float, more: str = ""
) -> tuple[int, int]:
    """How many of ``n`` series are held out for validation and for test.

    Raises:
        DataError: a share outside [0, 1) (`check_fractions`), or no training series would
            remain (``more``: further advice appended to the message).
    """
    check_fractions(val_fraction, test_fraction)
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    if n - n_val - n_test < 1:
        raise DataError(
            f"no training series left: {n} series, {n_val} for validation, {n_test} for test; "
            f"lower val_fraction or test_fraction{more}."
        )
    return n_val, n_test


def split_series(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Seeded disjoint train / val / test series indices (each sorted).

    Raises:
        DataError: a share outside [0, 1) (`check_fractions`), or no training series would
            remain.
    """
    n_val, n_test = held_out_counts(n, val_fraction, test_fraction)
    perm = np.random.default_rng(seed).permutation(n).tolist()
    test, val = perm[:n_test], perm[n_test : n_test + n_val]
    return sorted(perm[n_test + n_val :]), sorted(val), sorted(test)


def holdout_length(span: float, holdout: float) -> float:
    """The length held out of a series' ``span``: ``holdout`` below 1 is a fraction of it."""
    return holdout * span if holdout < 1 else holdout


def holdout_bounds(
    t_first: float, t_last: float, holdout: float, n_parts: int = 2, unit: str = "", where: str = ""
) -> list[float]:
    """The ``n_parts`` increasing times that hold out the last ``n_parts`` blocks of
    ``holdout`` (a length in ``unit``, default time units; below 1, a fraction of the span
    ``t_last - t_first``): ``[t_val, t_test]`` for two (train < t_val <= val < t_test <= test).

    Raises:
        DataError: the blocks leave no training time in ``where`` (default the times' range).
    """
    h = holdout_length(t_last - t_first, holdout)
    bounds = [t_last - k * h for k in range(n_parts, 0, -1)]
    if not h > 0 or bounds[0] <= t_first:
        blocks = f"{n_parts} blocks of {h:g} {(unit or 'time units').removesuffix('s' * (h == 1))}"
        what = f"holdout {holdout!r} is below 1, so a fraction of the span: {blocks} leave"
        if holdout >= 1:
            what = f"holdout = {holdout!r} ({blocks}) leaves"
        where = where or f"[{t_first:g}, {t_last:g}]"
        raise DataError(f"{what} no training time in {where}; use a smaller holdout.")
    return bounds


def forecast_segment(
    table: SeriesTable, s: int, t_split: float, history: float | None, t_end: float | None
) -> Segment | None:
    """The segment conditioning on ``[t_split - history, t_split)`` and scored on
    ``[t_split, t_end)`` (None: everything before / after); None if either side is empty.

    ``t_end`` is where the next block starts and is left out: with an inclusive end an
    observation at exactly ``t_test`` (a whole-unit holdout on whole-unit times) was scored
    in the validation block and again in the test block, leaking a test value into the
    choice of checkpoint and into the calibration."""
    t, x = _observed_rows(table, s)
    lo = -np.inf if history is None else t_split - history
    hi = np.inf if t_end is None else t_end
    keep = (t >= lo) & (t < hi)
    t, x = t[keep], x[keep]
    if not ((t < t_split).any() and (t >= t_split).any()):
        return None
    return _segment(s, t, x, t_split)


def segment_spans(segments: Sequence[Segment]) -> Tensor:
    """``[B]`` float64: each segment's span ``times[-1] - t0``."""
    return torch.tensor([float(g.times[-1] - g.t0) for g in segments], dtype=torch.float64)


def collate_segments(
    segments: Sequence[Segment],
    norm: dict[str, Any] | None = None,
    time_scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    origins: Sequence[float] | None = None,
) -> IrregularBatch:
    """Normalised segments on their union grid of shifted times ``(t - origin) / time_scale``.

    Args:
        segments: the batch rows.
        norm: a `fit_normalisation` dict (None: values as they are).
        time_scale: time units per model time unit.
        dtype: dtype of the batch tensors.
        origins: each segment's time origin (default: its ``t0``, its first observed time;
            a latent ODE anchored at the last observation aligns the segments at their last
            conditioning time instead).

    Returns:
        An `IrregularBatch`; with the default origins its grid starts at 0 (every segment
        observes something there).
    """
    if origins is None:
        origins = [g.t0 for g in segments]
    items = []
    for g, origin in zip(segments, origins, strict=True):
        x = g.values if norm is None else normalise(g.values, norm)  # (n, D)
        t = torch.from_numpy((g.times - origin) / time_scale)  # (n,)
        items.append((t, torch.from_numpy(x)))
    return collate_series(items, dtype=dtype)


def split_at(
    batch: IrregularBatch, t_split: Tensor, score: Literal["future", "all"] = "future"
) -> Split:
    """Condition each series on its times ``< t_split[b]``; score the rest.

    Both sides keep the batch's grid (so ``z0`` sits at the first grid time for everyone).

    Args:
        batch: the segments (shifted times).
        t_split: ``[B]`` per-series split times on the batch's time axis.
        score: ``"future"`` scores only times ``>= t_split`` (evaluation); ``"all"`` scores the
            whole segment, reconstruction and forecast (training).

    Returns:
        ``Split(observed, target, heldout_mask)``; ``heldout_mask`` marks the future points.
    """
    # Compared in the batch's dtype: a time equal to its split time (the first forecast
    # point) rounds as the split time does, and is not conditioned on.
    t_split = t_split.to(batch.times.dtype)  # (B,)
    before = (batch.times.unsqueeze(0) < t_split.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
    before = before.to(batch.mask.dtype)
    observed = batch.with_mask(batch.mask * before)
    future = batch.mask * (1.0 - before)  # (B, T, D)
    target = batch if score == "all" else batch.with_mask(future)
    return Split(observed, target, future)
