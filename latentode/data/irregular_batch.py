"""The irregular batch type: B series on one shared time grid, with observation masks.

A batch of B series with D features is ``times [T]`` (the sorted union of every series' times),
``values [B, T, D]`` and ``mask [B, T, D]`` (1 = observed; values are 0 wherever the mask is 0).
`IrregularBatch` checks this on construction; `Series` is one series on its own times. Build a
batch from per-series tensors with `latentode.data.batch.collate_series`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .errors import DataError

__all__ = ["IrregularBatch", "Series"]

Index = int | slice | Sequence[int] | Tensor


class Series(NamedTuple):
    """One series: ``times [n]`` strictly increasing, ``values [n, D]``, ``mask [n, D]``."""

    times: Tensor
    values: Tensor
    mask: Tensor


@dataclass(eq=False)
class IrregularBatch:
    """B series on one strictly increasing time grid.

    On construction the arguments are checked and ``values`` is set to 0 where ``mask`` is 0
    (so NaN may mark missing values); a boolean mask becomes 0/1 in the dtype of ``values``.
    Treat it as immutable. It is not a frozen dataclass so that Lightning's ``"64-true"``
    precision can convert its tensors to float64 (`lightning_utilities.apply_to_collection`
    refuses frozen ones).

    ``times`` may be of another floating dtype than ``values``, and is kept as given:
    `collate_series` promotes the times and the values apart, so float64 times (from numpy)
    beside float32 values give such a batch. The models compute with the times in their own
    dtype, so their results are those of ``times.to(values.dtype)``; times distinct as given
    that coincide in the model's dtype are refused by the model, naming both dtypes
    (`latentode.nn.checks.check_observations`), where cast before building the batch they
    would be refused here as repeated times, without the cause. Integer, boolean and complex
    times are refused: `latentode.data.prep.split_at` compares in the times' dtype, so
    integer times turned a split time of 2.5 into 2, and complex ones failed inside torch.

    Attributes:
        times: ``[T]`` strictly increasing floating times shared by the batch (any floating
            dtype, kept as given).
        values: ``[B, T, D]`` floating values, 0 where unobserved.
        mask: ``[B, T, D]``, 1.0 where observed, 0.0 elsewhere (dtype of ``values``).

    Raises:
        DataError: for wrong shapes, times that are not floating point, unsorted or duplicate
            times, a mask other than 0/1, or a non-finite observed value.
    """

    times: Tensor
    values: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        times, values, mask = self.times, self.values, self.mask
        if values.dim() != 3 or not values.is_floating_point():
            raise DataError(
                f"values must be a floating tensor [B, T, D]; got {values.dtype} "
                f"{tuple(values.shape)}."
            )
        if mask.shape != values.shape:
            raise DataError(
                f"mask {tuple(mask.shape)} must have the shape of values {tuple(values.shape)}."
            )
        if times.dim() != 1 or times.shape[0] != values.shape[1]:
            raise DataError(
                f"times must be [T={values.shape[1]}] (one grid for the batch); got "
                f"{tuple(times.shape)}."
            )
        if not times.is_floating_point():
            raise DataError(
                f"times must be floating point; got {times.dtype} times beside {values.dtype} "
                f"values. Pass times.to({values.dtype})."
            )
        if not bool(torch.isfinite(times).all()):
            i = int(torch.nonzero(~torch.isfinite(times))[0])
            raise DataError(f"times[{i}] is {float(times[i])}; every time must be finite.")
        if len(times) > 1 and not bool((times.diff() > 0).all()):
            i = int(torch.nonzero(times.diff() <= 0)[0]) + 1
            raise DataError(
                f"times must be strictly increasing; times[{i - 1}] = {float(times[i - 1])!r} "
                f"-> times[{i}] = {float(times[i])!r}. Sort the grid and merge duplicates."
            )
        if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
            raise DataError("mask must hold only 0 and 1 (or be boolean).")
        observed = mask.bool() if mask.dtype == torch.bool else mask > 0  # (B, T, D)
        bad = observed & ~torch.isfinite(values)  # (B, T, D)
        if bool(bad.any()):
            b, i, d = (int(v) for v in torch.nonzero(bad)[0])
            raise DataError(
                f"series {b} has a non-finite observed value at time {float(times[i])!r}, "
                f"feature {d}; set its mask to 0 or fix the value."
            )
        object.__setattr__(self, "values", torch.where(observed, values, 0.0))
        object.__setattr__(self, "mask", observed.to(values.dtype))

    @property
    def batch_size(self) -> int:
        """B."""
        return self.values.shape[0]

    @property
    def n_times(self) -> int:
        """T, the length of the union grid."""
        return self.values.shape[1]

    @property
    def n_features(self) -> int:
        """D."""
        return self.values.shape[2]

    @property
    def point_mask(self) -> Tensor:
        """``[B, T]`` bool: the series observes at least one feature at that time."""
        return (self.mask > 0).any(dim=-1)

    @property
    def lengths(self) -> Tensor:
        """``[B]`` long: the number of times at which each series observes something."""
        return self.point_mask.sum(dim=1)

    @property
    def n_observed(self) -> int:
        """The number of observed values in the batch."""
        return int((self.mask > 0).sum())

    def __len__(self) -> int:
        return self.batch_size

    def __getitem__(self, index: Index) -> IrregularBatch:
        """The series selected by ``index`` (an int keeps the batch dimension)."""
        if isinstance(index, int):
            index = [index]
        return IrregularBatch(self.times, self.values[index], self.mask[index])

    def to(
        self,
        device: torch.device | str | int | torch.dtype | None = None,
        dtype: torch.dtype | None = None,
        non_blocking: bool = False,
    ) -> IrregularBatch:
        """Move (and/or cast) every tensor; ``dtype`` applies to times, values and mask.

        Called as `torch.Tensor.to` is: ``to(dtype)``, ``to(device)``, ``to(device, dtype)``
        or with keywords.

        Raises:
            DataError: the cast turns an observed value or a time into infinity (it exceeds
                the largest number of the narrower dtype), or makes two of the times coincide
                (float64 times far from 0 cast to float32); the message names the cast and the
                value or the times.
        """
        if isinstance(device, torch.dtype):  # to(dtype): torch's positional form
            if dtype is not None:
                raise TypeError(
                    "to() takes a dtype, a device, or a device then a dtype; got "
                    f"{device!r} then {dtype!r}."
                )
            device, dtype = None, device
        if dtype is not None and dtype.is_floating_point:
            self._check_cast(dtype)
        kw = {"device": device, "dtype": dtype, "non_blocking": non_blocking}
        return IrregularBatch(self.times.to(**kw), self.values.to(**kw), self.mask.to(**kw))

    def _check_cast(self, dtype: torch.dtype) -> None:
        """Refuse a cast to the floating ``dtype`` that would turn a time or an observed value
        into infinity (values under a 0 mask are zeroed on construction, so may be anything)
        or make two times coincide."""
        top = torch.finfo(dtype).max
        cast = f"IrregularBatch.to({dtype}) casts the"
        if torch.finfo(self.times.dtype).max > top:
            over = torch.nonzero(self.times.abs() > top)
            if len(over):
                i = int(over[0])
                raise DataError(
                    f"{cast} times from {self.times.dtype} to {dtype}, whose largest number is "
                    f"{top:.4g}, and times[{i}] = {float(self.times[i])!r} would become "
                    "infinite. Rescale the times (a larger time unit), or keep them in "
                    f"{self.times.dtype} by casting only the values: IrregularBatch(batch.times, "
                    f"batch.values.to({dtype}), batch.mask)."
                )
        if torch.finfo(self.values.dtype).max > top:
            over = torch.nonzero((self.mask > 0) & (self.values.abs() > top))  # (n, 3)
            if len(over):
                b, i, d = (int(v) for v in over[0])
                raise DataError(
                    f"{cast} values from {self.values.dtype} to {dtype}, whose largest number "
                    f"is {top:.4g}, and series {b}'s observed value "
                    f"{float(self.values[b, i, d])!r} at time {float(self.times[i])!r}, "
                    f"feature {d}, would become infinite. Rescale the values (normalise them, "
                    "e.g. with latentode.data.prep.normalise, or use a larger unit), or keep "
                    f"the batch in {self.values.dtype}."
                )
        times = self.times
        if dtype == times.dtype:
            return
        narrowed = times.to(dtype)
        same = torch.nonzero(narrowed.diff() <= 0)
        if len(same):
            i = int(same[0]) + 1
            raise DataError(
                f"{cast} times from {times.dtype} to {dtype}, "
                f"in which times[{i - 1}] = {float(times[i - 1])!r} and times[{i}] = "
                f"{float(times[i])!r} coincide (both become {float(narrowed[i])!r}). Shift the "
                "times to start near 0 before casting (subtract times[0]), or keep them in "
                f"{times.dtype} by casting only the values: IrregularBatch(batch.times, "
                f"batch.values.to({dtype}), batch.mask) (a model computing in {dtype} "
                "refuses such times too)."
            )

    def subset_times(self, index: Tensor | slice) -> IrregularBatch:
        """Keep the time columns selected by ``index`` (bool ``[T]``, sorted longs, or a slice)."""
        return IrregularBatch(self.times[index], self.values[:, index], self.mask[:, index])

    def with_mask(self, mask: Tensor) -> IrregularBatch:
        """The same grid and values with another mask ``[B, T, D]`` (values re-zeroed)."""
        return IrregularBatch(self.times, self.values, mask)

    def compact(self) -> IrregularBatch:
        """Drop the time columns at which no series observes anything."""
        return self.subset_times(self.point_mask.any(dim=0))

    def uncollate(self) -> list[Series]:
        """Per-series tensors: the times a series observes something, its values and mask.

        Inverse of `collate_series` for series whose every time has an observed feature
        (values under a 0 mask come back as 0).
        """
        point = self.point_mask  # (B, T)
        return [
            Series(self.times[p], self.values[b, p], self.mask[b, p]) for b, p in enumerate(point)
        ]
