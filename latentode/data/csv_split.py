"""How `CSVDataModule` divides a user's series into training, validation and test segments.

Three ways, picked by `CSVDataModule.setup` (see `latentode.data.csv_module`):

- `divide_single`: one series; its last two ``holdout`` blocks are the validation and test
  forecasts, and training windows are cut from the time before them;
- `divide_in_time`: several series, each holding out its last two ``holdout`` blocks;
- `divide_series`: many series, a seeded share of them held out whole and forecast over their
  last ``holdout``.

Each returns a `Division`, whose fields the data module keeps as plain attributes (and puts in
the checkpoint's ``data_state``); `split_summary` says in words how the series are held out.
"""

from __future__ import annotations

import warnings
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .csv_checks import holdout_words, unit_name, warn_stride_gaps, warn_stride_unused
from .errors import DataError
from .prep import (
    Segment,
    _observed_rows,
    forecast_segment,
    holdout_bounds,
    holdout_length,
    make_windows,
    split_series,
    whole_series,
)
from .table import SeriesTable, TimeEncoding

__all__ = [
    "Division",
    "divide_in_time",
    "divide_series",
    "divide_single",
    "split_summary",
]


@dataclass
class Division:
    """A table divided into training, validation and test segments.

    Attributes:
        train: the training part of the table (the normalisation is fitted on it).
        train_segments: the training segments, each named by its series' index in the file.
        val_segments, test_segments: the fixed forecasts scored at validation / test.
        eval_history: history conditioned on when forecasting (None: everything before).
        test_series, val_series: held-out series ids (many series held out whole).
        val_window: ``[t_val, t_test]`` (one series).
        val_windows: the same per series id (several series held out in time).
    """

    train: SeriesTable
    train_segments: list[Segment]
    val_segments: list[Segment] = field(default_factory=list)
    test_segments: list[Segment] = field(default_factory=list)
    eval_history: float | None = None
    test_series: list[str] | None = None
    val_series: list[str] | None = None
    val_window: list[float] | None = None
    val_windows: dict[str, list[float]] | None = None


def divide_single(
    path: str,
    table: SeriesTable,
    window: float | None,
    stride: float | None,
    holdout: float,
    history: float | None,
) -> Division:
    """Hold out the last two ``holdout`` blocks of the one series and cut training windows
    from the time before them.

    Args:
        path: the CSV file, for messages.
        table: a table of one series.
        window, stride, holdout, history: as `CSVDataModule` (None ``window``: three holdout
            blocks; None ``history``: ``window`` less a block, at least half a window).

    Returns:
        The division, with ``val_window`` and the ``eval_history`` used.
    """
    t = table.times[table.mask.any(axis=1)]  # observed rows
    t0, t1 = float(t[0]), float(t[-1])
    enc, unit = table.encoding, unit_name(table.encoding)
    span = " to ".join(enc.format([t0, t1])) if enc.kind == "datetime" else f"[{t0:g}, {t1:g}]"
    where = f"the series of {path}, which spans {span} ({t1 - t0:.4g} {unit})"
    t_val, t_test = holdout_bounds(t0, t1, holdout, unit=unit, where=where)
    h = t_test - t_val
    if window is None and stride is not None:
        warn_stride_gaps(3 * h, stride, default=True)
    window = window if window is not None else 3 * h
    history = history if history is not None else max(window - h, 0.5 * window)
    train = table.before(t_val)
    train_segments = make_windows(train, window, stride or window / 10)
    segs = [forecast_segment(table, 0, t_val, history, t_test)]
    segs += [forecast_segment(table, 0, t_test, history, None)]
    val_segments, test_segments = [[g] if g else [] for g in segs]
    return Division(
        train,
        train_segments,
        val_segments,
        test_segments,
        eval_history=history,
        val_window=[t_val, t_test],
    )


def divide_in_time(
    path: str,
    table: SeriesTable,
    window: float | None,
    stride: float | None,
    holdout: float,
    history: float | None,
) -> Division:
    """Hold out the last two ``holdout`` blocks of every series long enough for them;
    training uses each series before its blocks (and the short series whole).

    Args:
        path: the CSV file, for messages.
        table: a table of several series.
        window, stride, holdout, history: as `CSVDataModule`.

    Returns:
        The division, with ``val_windows`` and ``test_series``.

    Raises:
        DataError: no series is long enough for the two blocks.
    """
    cuts = np.full((table.n_series, 2), np.inf)  # (S, 2) each series' [t_val, t_test]
    for s in range(table.n_series):
        t, _ = _observed_rows(table, s)
        with suppress(DataError):  # too short for two blocks: trained whole, not held out
            cuts[s] = holdout_bounds(float(t[0]), float(t[-1]), holdout)
    ids = table.series_ids
    held = np.flatnonzero(np.isfinite(cuts[:, 0])).tolist()
    short = [ids[s] for s in np.flatnonzero(~np.isfinite(cuts[:, 0]))]
    fraction = holdout < 1  # a fraction of each series' span (`holdout_bounds`)
    blocks = holdout_words(holdout, "each series' time", unit_name(table.encoding))
    if not held:
        raise DataError(
            f"{path}: no series spans two holdout blocks of {blocks} (validation and test) "
            "and some time before them; use a smaller holdout"
            + (
                f" (holdout {holdout:g} is below 1, so a fraction: two blocks of it leave "
                "time before them only below 0.5)."
                if fraction
                else "."
            )
        )
    if short:
        warnings.warn(
            f"{path}: {len(short)} series too short for two holdout blocks of "
            f"{blocks} are used for training only: "
            f"{', '.join(map(repr, short[:5]))}{' ...' if len(short) > 5 else ''}.",
            UserWarning,
            stacklevel=2,
        )
    train = table.before(cuts[:, 0])
    train_segments = _train_segments(
        path, train, [table.index_of(i) for i in train.series_ids], window, stride
    )
    val_segments: list[Segment] = []
    test_segments: list[Segment] = []
    unscored: dict[str, list[str]] = {"validation": [], "test": []}
    for s in held:
        t_val, t_test = cuts[s]
        for seg, out, block in (
            (forecast_segment(table, s, t_val, history, t_test), val_segments, "validation"),
            (forecast_segment(table, s, t_test, history, None), test_segments, "test"),
        ):
            if seg is not None:
                out.append(seg)
            else:
                unscored[block].append(ids[s])
    _warn_unscored(path, unscored, bool(val_segments), bool(test_segments))
    val_windows = {ids[s]: [float(cuts[s, 0]), float(cuts[s, 1])] for s in held}
    test_series = [ids[s] for s in held]  # scored on their test blocks
    return Division(
        train,
        train_segments,
        val_segments,
        test_segments,
        eval_history=history,
        test_series=test_series,
        val_windows=val_windows,
    )


def _warn_unscored(
    path: str, unscored: dict[str, list[str]], any_val: bool, any_test: bool
) -> None:
    """Warn about series held out in time whose validation or test block holds no
    observation, or has none before it within the history (a gap): they are not scored
    there. Where no series is scored, `no_forecast_error` says so when the split is used."""
    for block, some in (("validation", any_val), ("test", any_test)):
        lost = unscored[block]
        if lost and some:
            warnings.warn(
                f"{path}: {len(lost)} series have no observation in their {block} block, "
                f"or none before it within the history, and are not scored in it: "
                f"{', '.join(map(repr, lost[:5]))}{' ...' if len(lost) > 5 else ''}.",
                UserWarning,
                stacklevel=3,
            )


def _train_segments(
    path: str, train: SeriesTable, index: list[int], window: float | None, stride: float | None
) -> list[Segment]:
    """``train``'s series whole, or cut into windows when ``window`` is set, each named by
    its index in the file (``index[s]`` for ``train``'s series ``s``); a ``stride`` given
    without a window is not used, and `warn_stride_unused` says so."""
    if window is None:
        warn_stride_unused(path, len(index), stride)
        segs = whole_series(train)
    else:
        segs = make_windows(train, window, stride or window / 10)
    return [replace(g, series=index[g.series]) for g in segs]


def divide_series(
    path: str,
    table: SeriesTable,
    window: float | None,
    stride: float | None,
    holdout: float,
    history: float | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> Division:
    """Hold out a seeded share of the series whole, each forecast over its last ``holdout``.

    Args:
        path: the CSV file, for messages.
        table: a table of several series.
        window, stride, holdout, history, val_fraction, test_fraction, seed: as
            `CSVDataModule`.

    Returns:
        The division, with ``val_series`` and ``test_series``.

    Raises:
        DataError: none of the validation or of the test series can be forecast.
    """
    tr, va, te = split_series(table.n_series, val_fraction, test_fraction, seed)
    train = table.select(tr)
    train_segments = _train_segments(path, train, tr, window, stride)
    test_series = [table.series_ids[s] for s in te]
    val_series = [table.series_ids[s] for s in va]
    val_segments: list[Segment] = []
    test_segments: list[Segment] = []
    for stage, index, out in (("val", va, val_segments), ("test", te, test_segments)):
        lost = []
        for s in index:
            t, _ = table.series(s)
            h = holdout_length(float(t[-1] - t[0]), holdout)
            g = forecast_segment(table, s, float(t[-1] - h), history, None)
            if g is None:
                lost.append(s)
            else:
                out.append(g)
        if lost:
            _lost_holdout(path, holdout, stage, lost, len(index), table)
    return Division(
        train,
        train_segments,
        val_segments,
        test_segments,
        eval_history=history,
        test_series=test_series,
        val_series=val_series,
    )


def _lost_holdout(
    path: str, holdout: float, stage: str, lost: list[int], n: int, table: SeriesTable
) -> None:
    """Say that the series at positions ``lost``, of the ``n`` ``stage`` series, have no
    observation before their held-out last ``holdout`` (or none in it): a warning, or an
    error if all of them.

    Raises:
        DataError: none of the ``stage`` series can be forecast.
    """
    spans = [float(np.ptp(table.series(s)[0])) for s in lost]
    one = len(lost) == 1
    unit = unit_name(table.encoding)
    what = holdout_words(holdout, "its" if one else "their", unit)
    shown = [table.series_ids[s] for s in lost[:5]]
    names = f"{', '.join(map(repr, shown))}{' ...' if len(lost) > 5 else ''}"
    span = f"span {spans[0]:.4g}" if one else f"spans {min(spans):.4g} to {max(spans):.4g}"
    whose = "the" if len(lost) == n else f"{len(lost)} of the {n}"
    why = (
        f"{whose} {stage} series {names} ({span} {unit}) "
        f"{'has' if one else 'have'} no observation before {'its' if one else 'their'} "
        f"held-out last {what}, or none in it"
    )
    if len(lost) == n:
        raise DataError(
            f"{path}: {why}, so nothing is left to forecast from; use a smaller holdout."
        )
    warnings.warn(
        f"{path}: {why}; {'it is' if one else 'they are'} not scored.",
        UserWarning,
        stacklevel=3,
    )


def split_summary(
    n_series: int,
    holdout: float,
    val_series: list[str] | None,
    test_series: list[str] | None,
    val_window: list[float] | None,
    val_windows: dict[str, Any] | None,
    encoding: TimeEncoding | None = None,
) -> str:
    """How the ``n_series`` series are held out, in words (for `CSVDataModule.describe`).

    Args:
        n_series: the number of series in the file.
        holdout, val_series, test_series, val_window, val_windows: as on `CSVDataModule`
            after setup.
        encoding: the file's `TimeEncoding`; for date-times a ``holdout`` of 1 or more is
            named in its time unit (``"2 years"``), otherwise in ``"time units"``.

    Returns:
        A clause such as ``"12 series to train on, 2 for validation and 2 for testing ..."``.
    """
    unit = unit_name(encoding)
    if val_series is not None:
        forecast = ("the last " if holdout < 1 else "its last ") + holdout_words(
            holdout, "its", unit
        )
        split = (
            f"{n_series - len(val_series) - len(test_series or [])} "
            f"series to train on, {len(val_series)} for validation and "
            f"{len(test_series or [])} for testing (each held out whole and forecast over "
            f"{forecast})"
        )
    else:
        held = 1 if val_window is not None else len(val_windows or {})
        block = holdout_words(holdout, "its" if n_series == 1 else "each series'", unit)
        split = f"a validation and a test block, each {block}, held out at the end of "
        if n_series == 1:
            split += "the series; trained on the part before them"
        else:
            short = n_series - held
            split += f"{held} series; trained on the part before them" + (
                f" and on {short} series too short for the blocks, whole" if short else ""
            )
    return split
