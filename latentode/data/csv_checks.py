"""The checks `CSVDataModule` makes: on its options when built, on its training part at setup.

`check_options` and `check_cuts` refuse options no division or training could use, with the
values given (`warn_stride_gaps` warns of training windows that leave gaps between them,
`warn_stride_unused` of a stride no window uses); `note_fractional_holdout` says what a
``holdout`` below 1 was read as, in the file's time units;
`check_training_channels` refuses a channel the training part never observes;
`check_training_part` refuses a training part without a segment to learn from and warns about
channels the model learns nothing from; `no_forecast_error` says why a validation or test
split is empty. All raise (or return) `DataError` with a message naming what to change.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from pytorch_lightning.utilities import rank_zero_info

from .errors import DataError
from .prep import Segment, check_fractions, constant_within_series, holdout_length
from .resumable import check_num_workers
from .table import TIME_UNITS, SeriesTable, TimeEncoding

if TYPE_CHECKING:  # csv_split imports this module
    from .csv_split import Division

__all__ = [
    "UNIT_NAMES",
    "check_cuts",
    "check_options",
    "check_training_channels",
    "check_training_part",
    "holdout_words",
    "no_forecast_error",
    "note_fractional_holdout",
    "unit_name",
    "warn_stride_gaps",
    "warn_stride_unused",
]


def check_options(
    path: Any,
    holdout: float,
    val_fraction: float,
    test_fraction: float,
    split: str,
    train_condition: tuple[float, float],
    train_keep: float,
    time_scale: float | None,
    batch_size: int,
    num_workers: int,
) -> None:
    """Refuse `CSVDataModule` options that no setup could use.

    Args:
        path, holdout, val_fraction, test_fraction, split, train_condition, train_keep,
            time_scale, batch_size, num_workers: as `CSVDataModule`.

    Raises:
        DataError: ``path`` is not a path, or an option is out of its range.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(
            f"path must be a CSV file's path, got {type(path).__name__}; write a data "
            "frame out first (frame.to_csv(path, index=False))."
        )
    lo, hi = train_condition
    bad_scale = time_scale is not None and not time_scale > 0
    if not 0 < lo <= hi < 1 or batch_size < 1 or bad_scale or not holdout > 0:
        raise DataError(
            "need 0 < train_condition[0] <= train_condition[1] < 1, batch_size >= 1, "
            f"time_scale > 0 and holdout > 0; got {train_condition}, {batch_size}, "
            f"{time_scale}, {holdout}."
        )
    if split not in ("auto", "series", "time"):
        raise DataError(f"split must be 'auto', 'series' or 'time'; got {split!r}.")
    if not 0 < train_keep <= 1:
        raise DataError(f"need 0 < train_keep <= 1 (a share of times kept); got {train_keep}.")
    check_fractions(val_fraction, test_fraction)
    check_num_workers(num_workers)


def check_training_part(
    path: str,
    table: SeriesTable,
    value_range: dict[str, list[float]],
    train_segments: list[Segment],
) -> None:
    """Warn about channels the model learns nothing from; refuse a training part without a
    segment of two observed times.

    Args:
        path: the CSV file, for messages.
        table: the whole table read from the file.
        value_range: the training part's per-channel ``"min"`` and ``"max"`` (`value_range`).
        train_segments: the training segments.

    Raises:
        DataError: there is no training segment.
    """
    lows, highs = value_range["min"], value_range["max"]
    flat = [c for c, lo, hi in zip(table.channels, lows, highs, strict=True) if lo == hi]
    if flat:
        warnings.warn(
            f"{path}: channel(s) {flat} hold one value throughout the training part, "
            "so the model learns nothing from them; leave them out of the channels unless "
            "they vary elsewhere.",
            UserWarning,
            stacklevel=1,  # here, in the package: the CLI prints it as one line
        )
    fixed = constant_within_series(table)
    if fixed:
        warnings.warn(
            f"{path}: channel(s) {fixed} hold one value throughout each series and "
            "differ between series: an id or a fixed attribute, not a time series; the "
            "model learns nothing about time from them. Leave them out of the channels "
            "(--data.init_args.channels [...] lists the ones to model).",
            UserWarning,
            stacklevel=1,  # here, in the package: the CLI prints it as one line
        )
    if not train_segments:
        n_obs = int(table.mask.any(axis=-1).sum())
        raise DataError(
            f"{path}: no training segment with two observed times: the part left for "
            f"training by the validation and test parts ({table.n_series} series, "
            f"{n_obs} observed times in all) is too short; give longer series, or a "
            "smaller holdout, val_fraction or test_fraction."
        )


def check_cuts(window: float | None, stride: float | None, history: float | None) -> None:
    """Refuse a ``window``, ``stride`` or ``history`` (time units; None: the default) that is
    not a positive number: a stride of 0 was taken for the default, and a negative history
    left no history to forecast from, blamed on the holdout. A stride longer than the window
    only warns (`warn_stride_gaps`).

    Raises:
        DataError: naming the option and the value given.
    """
    for name, value in (("window", window), ("stride", stride), ("history", history)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise DataError(
                f"{name} must be a positive number of time units (or null for the "
                f"default); got {value!r}. Give --data.init_args.{name} a value > 0."
            )
    if window is not None and stride is not None:
        warn_stride_gaps(window, stride)


def warn_stride_gaps(window: float, stride: float, default: bool = False) -> None:
    """Warn when training windows (``window`` time units every ``stride``; ``default``: the
    window was left to its default) leave gaps: the observations between one window's end and
    the next one's start are never trained on. A stride longer than the window may be meant
    (fewer, unrelated windows of a long series), so it is not refused."""
    if not stride > window:
        return
    gap = stride - window
    which = (
        f"the default window {window:g} (three holdout blocks)" if default else f"window {window:g}"
    )
    warnings.warn(
        f"stride {stride:g} is longer than {which}: the training windows leave out the "
        f"{gap:g} time units between one window's end and the next one's start (about "
        f"{100 * gap / stride:.0f}% of each series' training part), whose observations are "
        "never trained on. Give a stride no longer than the window (--data.init_args.stride; "
        "the default is window / 10) to train on every observation.",
        UserWarning,
        stacklevel=1,  # here, in the package: the CLI prints it as one line
    )


def warn_stride_unused(path: str, n_series: int, stride: float | None) -> None:
    """Warn that a ``stride`` given (not None) for ``n_series`` training series without a
    ``window`` is not used: those series are trained on whole, not cut into windows (with one
    series the default window of three holdout blocks uses it, so it is not called there)."""
    if stride is None:
        return
    warnings.warn(
        f"{path}: stride {stride:g} (--data.init_args.stride; stride in the config) is not "
        f"used: no window is set, so each of the {n_series} training series is used whole, not "
        "cut into windows. Set a window (--data.init_args.window, in time units) to train on "
        "windows that long, one every stride, or drop the stride.",
        UserWarning,
        stacklevel=1,  # here, in the package: the CLI prints it as one line
    )


# The names of `TIME_UNITS` (the float axis of date-times), for messages (`unit_name`).
UNIT_NAMES = {"s": "seconds", "min": "minutes", "h": "hours", "D": "days", "W": "weeks"}
UNIT_NAMES["Y"] = "years"


def unit_name(encoding: TimeEncoding | None) -> str:
    """The time unit of a table's times in words: ``"years"`` for date-times of
    ``time_unit`` Y, ``"time units"`` for numbers (or no encoding)."""
    if encoding is None or encoding.kind != "datetime":
        return "time units"
    return UNIT_NAMES.get(encoding.unit, encoding.unit)


def holdout_words(holdout: float, whose: str, unit: str = "time units") -> str:
    """A ``holdout`` in words, as `holdout_length` reads it: ``"10% of <whose> span"`` below
    1, else its length, ``"2 years"`` (``"1 time unit"``)."""
    if holdout < 1:
        return f"{100 * holdout:g}% of {whose} span"
    return f"{holdout:g} {unit[:-1] if holdout == 1 and unit.endswith('s') else unit}"


def fractional_holdout_note(
    path: str, table: SeriesTable, holdout: float, division: Division
) -> str | None:
    """What a ``holdout`` below 1 was read as for ``table`` divided into ``division``: a
    fraction of each held-out series' time span, with the lengths it came to in the file's
    time units, and how to ask for a length below one time unit instead (None: ``holdout``
    is 1 or more, a length in time units)."""
    if holdout >= 1:
        return None
    enc = table.encoding
    unit = unit_name(enc)
    share = f"{100 * holdout:g}%"
    if division.val_window is not None:  # one series: its last two blocks
        lengths = [division.val_window[1] - division.val_window[0]]
        what = (
            f"the last two blocks of the series, each {share} of its time span (here "
            f"{_lengths(lengths, unit)}), are held out: the first for validation, the second "
            "for test."
        )
    elif division.val_windows is not None:  # several series, each held out in time
        lengths = [b - a for a, b in division.val_windows.values()]
        what = (
            f"each of the {len(lengths)} series held out in time holds out its last two "
            f"blocks, each {share} of its own time span (here {_lengths(lengths, unit)}): "
            "the first for validation, the second for test."
        )
    else:  # a share of the series held out whole, each forecast over its last part
        held = [*(division.val_series or []), *(division.test_series or [])]
        if not held:  # fractions that round to no series: `no_forecast_error` says so
            return None
        times = [table.series(table.index_of(i))[0] for i in held]
        lengths = [holdout_length(float(t[-1] - t[0]), holdout) for t in times]
        what = (
            f"each of the {len(lengths)} validation and test series is forecast over the last "
            f"{share} of its own time span (here {_lengths(lengths, unit)})."
        )
    head = (
        f"latentode: {path}: holdout {holdout:g} is below 1, so it is read as a fraction of "
        f"the time span: {what} A holdout of 1 or more is a length in {unit}"
    )
    if enc.kind != "datetime":  # the times' unit is the file's; a fraction is the default
        return head + "."
    return (
        f"{head}, so a length below 1 cannot be given as one: to hold out {holdout:g} {unit}, "
        + _smaller_unit(holdout, enc)
    )


def note_fractional_holdout(
    path: str, table: SeriesTable, holdout: float, division: Division
) -> None:
    """Log (Lightning's info log, on the first process) what a ``holdout`` below 1 was read
    as (`fractional_holdout_note`). A note, not a warning: a fraction is the documented
    default (0.1) and what ``configs/csv.yaml`` ships, but ``holdout: 0.5`` with yearly
    date-times may be meant as half a year."""
    note = fractional_holdout_note(path, table, holdout, division)
    if note is not None:
        rank_zero_info(note)


def _lengths(lengths: list[float], unit: str) -> str:
    """``"4.2 years"``, or ``"3.1 to 6 years, by series"`` for the least and greatest of
    lengths that differ (3 significant digits, whole numbers from 100 up)."""
    lo, hi = (f"{x:.0f}" if x >= 100 else f"{x:.3g}" for x in (min(lengths), max(lengths)))
    return f"{lo} {unit}" if lo == hi else f"{lo} to {hi} {unit}, by series"


def _smaller_unit(holdout: float, enc: Any) -> str:
    """How to give ``holdout`` (< 1) time units of the date-time encoding ``enc`` as a
    length: in the largest smaller ``time_unit`` in which it is 1 or more."""
    ns = holdout * TIME_UNITS[enc.unit]
    for key, size in sorted(TIME_UNITS.items(), key=lambda kv: -kv[1]):
        if size < TIME_UNITS[enc.unit] and ns / size >= 1:
            name = UNIT_NAMES[key]
            return (
                f"choose a smaller time unit, --data.init_args.time_unit {key}: "
                f"{holdout:g} {UNIT_NAMES[enc.unit]} is {ns / size:.4g} {name}, so give "
                f"holdout {ns / size:.4g} (window, stride and history are then in {name} too)."
            )
    return (  # s is the smallest time_unit
        f"write the times as numbers in a smaller unit than seconds (milliseconds: holdout "
        f"{holdout * 1000:.4g})."
    )


def check_training_channels(path: str, table: SeriesTable, train: SeriesTable) -> None:
    """Refuse a channel that the training part (``train``, of ``table``) never observes: its
    normalisation and value range would be NaN (the message blamed values too large).

    Raises:
        DataError: naming the channels and what to change.
    """
    unseen = np.isnan(train.values).all(axis=0)  # (D,)
    if not len(train.times) or not unseen.any():  # no training rows: check_training_part
        return
    names = [table.channels[d] for d in np.flatnonzero(unseen)]
    raise DataError(
        f"{path}: channel(s) {names} have no observed value in the training part: they are "
        "observed only in the series or the times held out for validation and test, so the "
        "model cannot learn their scale; give them values in more series (or earlier "
        "times), or leave them out of the channels (--data.init_args.channels [...] lists "
        "the ones to model)."
    )


def no_forecast_error(data: Any, stage: str) -> DataError:
    """Why `CSVDataModule` ``data`` (set up) has no ``stage`` (``"val"`` or ``"test"``)
    forecast, and what to change: too few series to hold out whole, or held-out blocks at
    the end of the series that hold no observation (a gap), or none before them."""
    path, table = data.path, data.table
    held = data.val_series if stage == "val" else data.test_series
    fraction = data.val_fraction if stage == "val" else data.test_fraction
    if data.val_series is not None and not held:  # series held out whole: none for stage
        n = table.n_series
        return DataError(
            f"{path}: no {stage} series: {stage}_fraction {fraction:g} of {n} series rounds "
            f"to none; give --data.init_args.{stage}_fraction {1 / n:.3g} or more, or "
            "--data.init_args.split time (the last holdout blocks of every series)."
        )
    block = "validation" if stage == "val" else "test"
    where = "the series" if table.n_series == 1 else f"any of the {table.n_series} series"
    return DataError(
        f"{path}: no {block} forecast: the {block} block (holdout {data.holdout:g}) at the "
        f"end of {where} holds no observed time, or none is observed before it within the "
        "history; the observations there are too far apart (a gap). Give a holdout in time "
        "units (a value >= 1) whose two blocks each hold observations with some before "
        "them, or a longer --data.init_args.history."
    )
