"""Irregular batches: series on a shared union time grid with observation masks (Rubanova style).

A batch of B series with D features is ``times [T]`` (the sorted union of every series' times),
``values [B, T, D]`` and ``mask [B, T, D]`` (1 = observed; values are 0 wherever the mask is 0).

Usage::

    batch = collate_series([(t1, x1, None), (t2, x2, m2)])   # NaN in x1 -> unobserved
    split = split_interpolation(batch, frac_observed=0.3, generator=g)
    split.observed, split.target, split.heldout_mask          # condition / score / held out
    series = batch.uncollate()                                # back to per-series tensors

Splits: `split_interpolation` conditions on a random subset of each series' observation times
and scores every point (``heldout_mask`` marks the points the model did not see);
`split_extrapolation` conditions on ``times < t_split`` and scores ``times >= t_split``;
`align_last` shifts each series of a split so that its last conditioning time is 0.

The batch type itself, `IrregularBatch` (and `Series`), is in `latentode.data.irregular_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import NamedTuple

import torch
from torch import Tensor

from .errors import DataError
from .irregular_batch import Index, IrregularBatch, Series

__all__ = [
    "IrregularBatch",
    "Series",
    "Split",
    "align_last",
    "collate_series",
    "split_extrapolation",
    "split_interpolation",
    "subsample_observations",
]


def _check_series(i: int, item: Sequence[Tensor | None]) -> Series:
    if not 2 <= len(item) <= 3:
        raise DataError(f"series {i}: expected (times, values) or (times, values, mask).")
    times, values = item[0], item[1]
    mask = item[2] if len(item) == 3 else None
    if times is None or values is None:
        raise DataError(f"series {i}: times and values are required.")
    if times.dim() != 1 or values.dim() != 2 or values.shape[0] != times.shape[0]:
        raise DataError(
            f"series {i}: times must be [n] and values [n, D] (reshape(-1, 1) for one feature); "
            f"got {tuple(times.shape)} and {tuple(values.shape)}."
        )
    if not values.is_floating_point():
        raise DataError(f"series {i}: values must be floating point, got {values.dtype}.")
    if len(times) > 1 and not bool((times.diff() > 0).all()):
        j = int(torch.nonzero(times.diff() <= 0)[0]) + 1
        raise DataError(
            f"series {i}: times must be strictly increasing; position {j} has "
            f"{float(times[j - 1])!r} -> {float(times[j])!r}. Sort it and merge duplicates."
        )
    if mask is None:
        mask = ~torch.isnan(values)  # (n, D)
    elif mask.shape != values.shape:
        raise DataError(
            f"series {i}: mask {tuple(mask.shape)} must match values {tuple(values.shape)}."
        )
    return Series(times, values, mask)


def collate_series(
    series: Sequence[Sequence[Tensor | None]], dtype: torch.dtype | None = None
) -> IrregularBatch:
    """Put series of different lengths and times on their union time grid.

    Args:
        series: ``(times [n_i], values [n_i, D], mask [n_i, D] or None)`` per series (a
            2-tuple means no mask). Without a mask, NaN values are unobserved.
        dtype: cast times, values and mask to this dtype (default: promote the inputs).

    Returns:
        An `IrregularBatch` with ``T`` = number of distinct times (exact float equality).

    Raises:
        DataError: for an empty list, a series with unsorted times or wrong shapes, or series
            with different numbers of features.
    """
    if len(series) == 0:
        raise DataError("collate_series needs at least one series.")
    checked = [_check_series(i, s) for i, s in enumerate(series)]
    dims = {s.values.shape[1] for s in checked}
    if len(dims) > 1:
        raise DataError(f"all series must have the same number of features D; got {sorted(dims)}.")
    D = dims.pop()
    v_dtype = dtype or reduce(torch.promote_types, (s.values.dtype for s in checked))
    t_dtype = dtype or reduce(torch.promote_types, (s.times.dtype for s in checked))
    all_times = torch.cat([s.times.to(t_dtype) for s in checked])  # (sum n_i,)
    if len(all_times) == 0:
        raise DataError("all series are empty: there is no time to put on the grid.")
    times, inverse = torch.unique(all_times, sorted=True, return_inverse=True)  # (T,)
    B, T = len(checked), len(times)
    values = torch.zeros(B, T, D, dtype=v_dtype, device=times.device)  # (B, T, D)
    mask = torch.zeros(B, T, D, dtype=v_dtype, device=times.device)  # (B, T, D)
    columns = inverse.split([len(item.times) for item in checked])  # per series: its columns
    for b, (idx, item) in enumerate(zip(columns, checked, strict=True)):
        values[b, idx] = item.values.to(v_dtype)
        mask[b, idx] = item.mask.to(v_dtype)
    return IrregularBatch(times, values, mask)


class Split(NamedTuple):
    """What a model conditions on and what it is scored against.

    Attributes:
        observed: the conditioning batch (encoder input).
        target: the batch to predict, all its observed points.
        heldout_mask: ``[B, T_target, D]``, the target entries absent from ``observed``
            (interpolation: ``target.mask & ~observed.mask``; extrapolation: ``target.mask``).
    """

    observed: IrregularBatch
    target: IrregularBatch
    heldout_mask: Tensor

    def select(self, index: Index) -> Split:
        """The same split for the series selected by ``index``."""
        if isinstance(index, int):
            index = [index]
        return Split(self.observed[index], self.target[index], self.heldout_mask[index])


def subsample_observations(
    batch: IrregularBatch,
    frac_observed: float | None = None,
    *,
    n_observed: int | None = None,
    generator: torch.Generator | None = None,
) -> IrregularBatch:
    """Keep a random subset of each series' observation times (all features at a kept time).

    Each series keeps ``round(frac_observed * n_i)`` (at least 1) of its ``n_i`` observation
    times, or ``min(n_observed, n_i)``, drawn uniformly without replacement. The grid is kept.

    Args:
        batch: the batch to thin out.
        frac_observed: fraction in (0, 1] (exactly one of the two).
        n_observed: count >= 1.
        generator: random source (CPU generator; default: torch's global one).

    Returns:
        The batch with a reduced mask.

    Raises:
        DataError: if not exactly one of ``frac_observed`` / ``n_observed`` is valid.
    """
    if (frac_observed is None) == (n_observed is None):
        raise DataError("give exactly one of frac_observed (a fraction) or n_observed (a count).")
    n_i = batch.lengths  # (B,)
    if frac_observed is not None:
        if not 0 < frac_observed <= 1:
            raise DataError(f"frac_observed must be in (0, 1], got {frac_observed!r}.")
        keep_n = torch.floor(n_i * frac_observed + 0.5).long().clamp(min=1)  # (B,)
    else:
        if not (isinstance(n_observed, int) and n_observed >= 1):
            raise DataError(f"n_observed must be an int >= 1, got {n_observed!r}.")
        keep_n = n_i.clamp(max=n_observed)  # (B,)
    B, T = batch.batch_size, batch.n_times
    point = batch.point_mask  # (B, T)
    device = generator.device if generator is not None else torch.device("cpu")
    keys = torch.rand(B, T, generator=generator, device=device).to(point.device)  # (B, T)
    keys = keys.masked_fill(~point, 2.0)  # unobserved times sort last
    rank = keys.argsort(dim=1).argsort(dim=1)  # (B, T) rank of each time among the series'
    keep = point & (rank < keep_n.unsqueeze(1))  # (B, T)
    return batch.with_mask(batch.mask * keep.unsqueeze(-1).to(batch.mask.dtype))


def split_interpolation(
    batch: IrregularBatch,
    frac_observed: float | None = None,
    *,
    n_observed: int | None = None,
    generator: torch.Generator | None = None,
) -> Split:
    """Condition on a random subset of observation times; reconstruct every point.

    Args:
        batch: the full batch (becomes the target).
        frac_observed, n_observed, generator: as `subsample_observations`.

    Returns:
        ``Split(observed, target=batch, heldout_mask=target & ~observed)``.
    """
    observed = subsample_observations(
        batch, frac_observed, n_observed=n_observed, generator=generator
    )
    return Split(observed, batch, batch.mask * (1.0 - observed.mask))


def split_extrapolation(batch: IrregularBatch, t_split: float | None = None) -> Split:
    """Condition on ``times < t_split``; predict ``times >= t_split``.

    Args:
        batch: the full batch.
        t_split: the split time (default: the middle of the time range, Rubanova 2019).

    Returns:
        ``Split(observed, target, heldout_mask=target.mask)``, both on their part of the grid.

    Raises:
        DataError: if either side would have no time.
    """
    t_min, t_max = float(batch.times[0]), float(batch.times[-1])
    t_split = 0.5 * (t_min + t_max) if t_split is None else float(t_split)
    before = batch.times < t_split  # (T,)
    if not bool(before.any()) or bool(before.all()):
        raise DataError(
            f"t_split = {t_split!r} leaves one side empty; the grid spans [{t_min!r}, {t_max!r}]."
        )
    target = batch.subset_times(~before)
    return Split(batch.subset_times(before), target, target.mask)


def _shift_rows(batch: IrregularBatch, origin: Tensor, masks: Sequence[Tensor]) -> list[Tensor]:
    """Each series' observed times less its ``origin [B]``, on their union grid: ``[times
    [G], values [B, G, D], *masks]`` (each of ``masks`` ``[B, T, D]`` carried to the grid)."""
    point = batch.point_mask  # (B, T)
    # In float64, so that one time less one origin is the same number in every series.
    shifted = batch.times.double().unsqueeze(0) - origin.double().unsqueeze(1)  # (B, T)
    grid, index = torch.unique(shifted[point].to(batch.times.dtype), return_inverse=True)
    rows = torch.nonzero(point)[:, 0]  # (N,) the series of each kept entry, row-major as index
    B, D = batch.batch_size, batch.n_features
    if len(torch.unique(rows * len(grid) + index)) < len(index):
        raise DataError(
            f"shifting the series' times by their last conditioning times merges two times of "
            f"one series in {batch.times.dtype}; use float64 times (precision 64-true)."
        )
    out = [grid]
    for m in (batch.values, *masks):
        carried = m.new_zeros(B, len(grid), D)  # (B, G, D)
        carried[rows, index] = m[point]
        out.append(carried)
    return out


def align_last(split: Split) -> Split:
    """The split with each series' times shifted so that its last conditioning time is 0.

    For a latent ODE anchored at the last observation (``anchor: last``): the model places its
    latent state at the last observed time of the batch, so on an unaligned batch a series'
    anchor, and its prediction, would depend on the other series. Aligned, every series'
    anchor is its own last observation (`CSVDataModule.align_to` does the same for files).
    The grids become the unions of the shifted times (larger when the series' last
    observations differ); columns that no series observes are dropped.

    Args:
        split: conditioning and target batches of the same series (a series without a
            conditioning observation is not shifted).

    Returns:
        The aligned `Split` (``heldout_mask`` carried along).
    """
    obs, target = split.observed, split.target
    point = obs.point_mask  # (B, T)
    times = obs.times.unsqueeze(0).expand_as(point)  # (B, T)
    origin = torch.where(point, times, -torch.inf).amax(dim=1)  # (B,) last conditioning time
    origin = torch.where(point.any(dim=1), origin, 0.0)  # (B,)
    t_obs, v_obs, m_obs = _shift_rows(obs, origin, [obs.mask])
    t_tgt, v_tgt, m_tgt, held = _shift_rows(target, origin, [target.mask, split.heldout_mask])
    return Split(IrregularBatch(t_obs, v_obs, m_obs), IrregularBatch(t_tgt, v_tgt, m_tgt), held)
