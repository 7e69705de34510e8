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
from .images import ImageSplit, ImageSplits, MNISTFolder, load_digits_tensors, read_idx
from .synthetic import PeriodicSeries, Spirals, make_periodic, make_spirals
from .toy2d import ENTROPY_FLOORS, TOY_DENSITIES, sample_toy, toy_log_prob

__all__ = [
    "ENTROPY_FLOORS",
    "TOY_DENSITIES",
    "DataError",
    "ImageSplit",
    "ImageSplits",
    "IrregularBatch",
    "MNISTFolder",
    "PeriodicSeries",
    "Series",
    "Spirals",
    "Split",
    "collate_series",
    "load_digits_tensors",
    "make_periodic",
    "make_spirals",
    "read_idx",
    "sample_toy",
    "split_extrapolation",
    "split_interpolation",
    "subsample_observations",
    "toy_log_prob",
]
