"""Data for latentode: irregular batches with masks, their splits, seeded synthetic sets.

The LightningDataModules are in `latentode.data.datamodules` and `latentode.data.csv_module`
(not imported here, so that the plain parts load without Lightning).
"""

from .batch import (
    IrregularBatch,
    Series,
    Split,
    align_last,
    collate_series,
    split_extrapolation,
    split_interpolation,
    subsample_observations,
)
from .csv import CSVDataError, read_series_csv
from .errors import DataError
from .images import ImageSplit, ImageSplits, MNISTFolder, load_digits_tensors, read_idx
from .prep import (
    Segment,
    collate_segments,
    denormalise,
    denormalise_std,
    fit_normalisation,
    forecast_segment,
    holdout_bounds,
    make_windows,
    normalise,
    segment_spans,
    split_at,
    split_series,
    whole_series,
)
from .synthetic import PeriodicSeries, Spirals, make_periodic, make_spirals
from .table import TIME_UNITS, SeriesTable, TimeEncoding
from .toy2d import ENTROPY_FLOORS, TOY_DENSITIES, sample_toy, toy_log_prob

__all__ = [
    "ENTROPY_FLOORS",
    "TIME_UNITS",
    "TOY_DENSITIES",
    "CSVDataError",
    "DataError",
    "ImageSplit",
    "ImageSplits",
    "IrregularBatch",
    "MNISTFolder",
    "PeriodicSeries",
    "Segment",
    "Series",
    "SeriesTable",
    "Spirals",
    "Split",
    "TimeEncoding",
    "align_last",
    "collate_segments",
    "collate_series",
    "denormalise",
    "denormalise_std",
    "fit_normalisation",
    "forecast_segment",
    "holdout_bounds",
    "load_digits_tensors",
    "make_periodic",
    "make_spirals",
    "make_windows",
    "normalise",
    "read_idx",
    "read_series_csv",
    "sample_toy",
    "segment_spans",
    "split_at",
    "split_extrapolation",
    "split_interpolation",
    "split_series",
    "subsample_observations",
    "toy_log_prob",
    "whole_series",
]
