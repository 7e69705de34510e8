"""Data for latentode: irregular batches with masks, their splits, seeded synthetic sets.

The LightningDataModules are in `latentode.data.datamodules` (not imported here, so that the
plain parts load without Lightning).
"""

from .batch import (
    IrregularBatch,
    Series,
    Split,
    collate_series,
    split_extrapolation,
    split_interpolation,
    subsample_observations,
)
from .errors import DataError
from .synthetic import PeriodicSeries, Spirals, make_periodic, make_spirals

__all__ = [
    "DataError",
    "IrregularBatch",
    "PeriodicSeries",
    "Series",
    "Spirals",
    "Split",
    "collate_series",
    "make_periodic",
    "make_spirals",
    "split_extrapolation",
    "split_interpolation",
    "subsample_observations",
]
