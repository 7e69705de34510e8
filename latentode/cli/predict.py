"""``latentode predict``: its options, the ``--times`` file, and the run that forecasts every
series of a history file and writes the CSV (and plots)."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.csv_header import _separator
from ..data.errors import DataError
from ..ensemble import Ensemble
from ..forecast import forecast, future_times, merge_shards, parse_horizon
from ..paths import STDOUT, check_output_file, write_whole
from ..predictive import call_memory
from .errors import USER_ERRORS
from .forecaster import _calibration, _load_forecaster
from .launch import _first_process, _launch, gather_shards
from .options import (
    CALIBRATE_HELP,
    CALL_HELP,
    CKPT_HELP,
    DUPLICATES_ARG,
    IMPORTANCE_HELP,
    LEVELS_HELP,
    REFINE_HELP,
    SEED_HELP,
    _draws,
    _levels,
    add_band_options,
    check_draws,
    check_input_file,
    refuse_input_as_output,
)
from .predict_output import _draw_plots, _plot_files, _summary_lines

if TYPE_CHECKING:
    from ..calibration import Calibration
    from ..data.table import SeriesTable
    from ..forecast import ForecastResult
    from ..nn.latent_ode import LatentODE

__all__ = ["predict_main", "run_predict"]


def _signed_spans(argv: list[str], options: tuple[str, ...] = ("--horizon", "--step")) -> list[str]:
    """``argv`` with ``--horizon -5D`` joined into ``--horizon=-5D``, so that a negative span
    reaches `parse_horizon` and is refused as not positive; argparse would take ``-5D`` for an
    option and say only that ``--horizon`` expected an argument."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in options and arg.startswith("-") and not arg.startswith("--"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def predict_main(argv: list[str]) -> int:
    """``latentode predict``: returns the exit status (2 for user errors)."""
    args = _predict_parser().parse_args(_signed_spans(argv))
    try:
        with call_memory(args.call_memory):
            line = run_predict(args)
        if line:  # beside a forecast written to standard output, on standard error
            print(line, file=sys.stderr if args.output == STDOUT else sys.stdout)
    except USER_ERRORS as e:
        if _first_process():  # every process of a multi-process predict stops with it
            print(f"latentode predict: error: {e}", file=sys.stderr)
        return 2
    return 0


def _predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="latentode predict",
        description="Forecast every series of a CSV with a fitted latent ODE checkpoint.",
    )
    p.add_argument("--ckpt_path", required=True, nargs="+", help=CKPT_HELP)
    p.add_argument("--data.path", dest="data_path", required=True, help="history CSV")
    p.add_argument("--data.duplicates", dest="duplicates", **DUPLICATES_ARG)
    p.add_argument(
        "--horizon",
        required=True,
        help="how far past each series' last observation: a number in the data's "
        "time unit, or for date-times a span such as 730D or 104W",
    )
    p.add_argument("--output", required=True, help="forecast CSV to write")
    p.add_argument("--step", default=None, help="grid spacing (default: median spacing)")
    p.add_argument(
        "--times",
        default=None,
        help="CSV of explicit future times (series_id, time) instead of a grid",
    )
    p.add_argument("--plot", default=None, help="directory for one PNG per series")
    p.add_argument("--n_samples", type=int, default=200, help="posterior paths per series")
    p.add_argument("--importance", action="store_true", help=IMPORTANCE_HELP)
    p.add_argument("--refine", type=int, default=0, metavar="STEPS", help=REFINE_HELP)
    p.add_argument(
        "--calibrate", action=argparse.BooleanOptionalAction, default=True, help=CALIBRATE_HELP
    )
    add_band_options(p)
    p.add_argument("--levels", nargs="+", default=None, metavar="PERCENT", help=LEVELS_HELP)
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output and --plot PNGs"
    )
    p.add_argument(
        "--accelerator", default="cpu", help="cpu, gpu or auto (Lightning's accelerator names)"
    )
    p.add_argument(
        "--devices",
        type=int,
        default=1,
        help="processes per node: the series are shared out, the first process writes one "
        "output in the file's series order",
    )
    p.add_argument("--num_nodes", type=int, default=1, help="nodes (under SLURM or torchrun)")
    p.add_argument(
        "--chunk",
        type=int,
        default=128,
        help="series per model call (memory; the forecast does not depend on it)",
    )
    p.add_argument("--call_memory", type=float, default=None, metavar="GB", help=CALL_HELP)
    return p


def _read_times(path: str) -> tuple[pd.DataFrame, int]:
    """The ``--times`` file as text cells, read as the history file is, and the line of its
    first row: a spreadsheet's ``sep=X`` first line is skipped, ``X`` the delimiter, and
    counted in the line numbers (one rule, `latentode.data.csv`); every cell missing only when
    empty (a series may be named NA); values past the header's columns refused, not taken for
    an index column (which shifted every column by one)."""
    sep, skip = _separator(Path(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            text = {"dtype": str, "keep_default_na": False, "na_values": [""]}
            frame = pd.read_csv(path, sep=sep, skiprows=skip, index_col=False, **text)
    except pd.errors.ParserWarning:
        raise DataError(
            f"{path}: its rows hold more values than the header names columns; name the extra "
            "column in the header, or remove the values past the last column."
        ) from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a CSV of series and times ({e}).") from None
    return frame, 2 + skip


def _times_ids(path: str, frame: pd.DataFrame, table, series_column: str | None) -> pd.Series:
    """The series id of each ``--times`` row, stripped of spaces as the history's ids are. A
    file without the series column names the one series of a one-series history (a file
    without a series column, such as data/co2_mauna_loa_weekly.csv, is named after itself).

    Raises:
        DataError: a missing series column with several series, or an id not in the history.
    """
    one = len(table.series_ids) == 1
    if not series_column or (series_column not in frame.columns and one):
        return pd.Series([table.series_ids[0]] * len(frame), dtype=object)
    if series_column not in frame.columns:
        raise DataError(
            f"{path}: missing column(s) {[series_column]}; found {list(frame.columns)}. The "
            f"history file holds {len(table.series_ids)} series: name each row's series."
        )
    ids = frame[series_column].str.strip().replace("", np.nan)
    unknown = sorted(set(ids.dropna()) - set(table.series_ids))
    if short := [i for i in unknown if i in table.dropped]:
        raise DataError(
            f"{path}: series {short[:5]} have fewer than two observed times in {table.source}, "
            "which leaves them out; give them two or more values, or leave out their rows."
        )
    if unknown or ids.isna().any():
        named = unknown[:5] if unknown else ["(empty)"]
        raise DataError(
            f"{path}: series {named} are not in the history file {table.source}; every "
            f"--times row needs a series of --data.path."
        )
    return ids


def _explicit_times(path: str, table, series_column: str | None, time_column: str) -> dict:
    frame, first = _read_times(path)
    if time_column not in frame.columns:
        missing = [c for c in (series_column, time_column) if c and c not in frame.columns]
        raise DataError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}.")
    ids = _times_ids(path, frame, table, series_column)
    empty = np.flatnonzero(frame[time_column].isna().to_numpy())
    if len(empty):
        raise DataError(
            f"{path}: line {int(empty[0]) + first} has no {time_column!r}; give a time on every "
            "row."
        )
    values = frame[time_column].to_numpy()
    try:
        encoded = table.encoding.encode(values)
    except DataError:  # find the row to name
        encoded = np.array([_encoded_or_nan(table, v) for v in values])
    bad = np.flatnonzero(~np.isfinite(encoded))
    if len(bad):
        raise DataError(
            f"{path}: line {int(bad[0]) + first}: {values[bad[0]]!r} is not a time in the history "
            f"file's format (e.g. {table.encoding.format(table.times[:1])[0]})."
        )
    return {sid: encoded[(ids == sid).to_numpy()] for sid in ids.unique()}


def _encoded_or_nan(table, value: str) -> float:
    try:
        return float(table.encoding.encode([value])[0])
    except DataError:
        return math.nan


def run_predict(args: argparse.Namespace) -> str:
    """Load the checkpoint, forecast, write the CSV (and plots); returns a summary line (empty
    in the processes other than the first).

    Raises:
        DataError and the other `USER_ERRORS` for anything the user can fix.
    """
    out, levels = _checked_options(args)
    rank, world, device = _launch(args)
    model, state, table = _load_forecaster(args.ckpt_path, args.data_path, args.duplicates)
    model.to(device)
    pngs = _plot_files(args, table.series_ids) if args.plot else []
    horizon, step, times = _requested_times(args, model, state, table)
    cal = None
    if args.calibrate:
        cal = _calibration(args, model, state, table, rank, world, args.chunk)
    result, merged = _sharded_forecast(
        args, model, state, table, (horizon, step, times), cal, levels, (rank, world)
    )
    if rank == 0:
        _write_forecast(merged, out, args.output == STDOUT)
    if args.plot:  # each process draws its own series
        _draw_plots(result, table, pngs, args.plot)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # plots of every process are on disk when the command returns
    if rank > 0:
        return ""
    return "\n".join(_summary_lines(args, model, state, table, merged, levels, cal, out, world))


def _checked_options(args: argparse.Namespace) -> tuple[Path, tuple[float, ...]]:
    """Check the options that need no file read, before any work is done.

    The ``--times`` file must exist; the ``--output`` file must not be one of the command's
    input files (`refuse_input_as_output`, also with ``--overwrite``) and is checked
    (`check_output_file`; ``-``, standard output, is not checked), then the process counts
    and ``--chunk``, then ``--levels``.

    Args:
        args: the parsed ``latentode predict`` options.

    Returns:
        ``(out, levels)``: the output path (``Path("-")`` for standard output) and the extra
        band levels as fractions.

    Raises:
        DataError: a missing ``--times`` file, an ``--output`` that is an input file or
            cannot be written, a count below 1, or a ``--levels`` value not a percentage.
    """
    to_stdout = args.output == STDOUT
    if args.times is not None:
        check_input_file(args.times, "--times")
    if not to_stdout:
        inputs = {"--data.path": [args.data_path], "--times": [args.times]}
        refuse_input_as_output(
            Path(args.output), {**inputs, "--ckpt_path": args.ckpt_path}, "the forecast"
        )
    out = Path(args.output) if to_stdout else check_output_file(args.output, args.overwrite)
    if args.devices < 1 or args.num_nodes < 1 or args.chunk < 1:
        raise DataError("--devices, --num_nodes and --chunk must be >= 1.")
    check_draws(args)
    return out, _levels(args.levels)


def _requested_times(
    args: argparse.Namespace, model: LatentODE | Ensemble, state: dict, table: SeriesTable
) -> tuple[float, float | None, dict[str, np.ndarray] | None]:
    """Parse ``--horizon``, ``--step`` and ``--times`` and check the future times they ask.

    The times are built once here (`future_times`) only to refuse them, if at all (a time
    not after its series' history, or more paths at one series' times than one model call
    holds), before the calibration's forecasts run; `forecast` builds them again.

    Args:
        args: the parsed ``latentode predict`` options.
        model: the loaded latent ODE or `Ensemble`.
        state: the checkpoint's data settings.
        table: the history file, read as the checkpoint reads it.

    Returns:
        ``(horizon, step, times)`` in the table's time units (``step`` None: the median
        spacing; ``times`` None: a grid rather than the ``--times`` file's rows).

    Raises:
        DataError: a span, ``--times`` file or time request that cannot be forecast.
    """
    horizon = parse_horizon(args.horizon, table)
    step = None if args.step is None else parse_horizon(args.step, table, "--step")
    times = None
    if args.times:
        times = _explicit_times(
            args.times, table, state.get("series_column"), state.get("time_column", "time")
        )
    # The requested times are refused, if at all, before the calibration's forecasts run.
    on_history = args.importance or args.refine > 0
    future_times(model, table, state, horizon, step, times, args.n_samples, on_history)
    return horizon, step, times


def _sharded_forecast(
    args: argparse.Namespace,
    model: LatentODE | Ensemble,
    state: dict,
    table: SeriesTable,
    when: tuple[float, float | None, dict[str, np.ndarray] | None],
    cal: Calibration | None,
    levels: tuple[float, ...],
    shard: tuple[int, int],
) -> tuple[ForecastResult | None, ForecastResult]:
    """Forecast this process's share of the series and gather every process's share.

    With one process a user error is raised at once. With several, a process whose series
    fail hands its error to the others through `gather_shards`, so that every process stops
    with it rather than waiting on the others; the summaries are then merged in the file's
    series order.

    Args:
        args: the parsed ``latentode predict`` options (chunk and draw settings).
        model: the loaded latent ODE or `Ensemble`.
        state: the checkpoint's data settings.
        table: the history file.
        when: ``(horizon, step, times)`` from `_requested_times`.
        cal: the band factors, or None for the model's own bands.
        levels: the extra band levels.
        shard: ``(rank, world)``.

    Returns:
        ``(result, merged)``: this process's forecast (None only if it failed while others
        gather) and the forecast of every series.

    Raises:
        DataError and the other `USER_ERRORS` raised by any process's forecast.
    """
    horizon, step, times = when
    rank, world = shard
    try:
        result = forecast(
            model,
            table,
            state,
            horizon,
            step,
            times,
            chunk=args.chunk,
            shard=(rank, world),
            calibration=cal,
            levels=levels,
            **_draws(args),
        )
        failure = None
    except USER_ERRORS as e:  # this process's series only: tell the others before stopping
        if world == 1:
            raise
        result, failure = None, e
    if world > 1:
        parts = gather_shards(None if result is None else result.summary, failure, world)
        merged = merge_shards(result, parts)
    else:
        merged = result
    return result, merged


def _write_forecast(merged: ForecastResult, out: Path, to_stdout: bool) -> None:
    """Write the forecast CSV: on standard output, or whole to ``out`` (`write_whole`: a
    reader never sees half a file). Called in the first process only.

    Args:
        merged: the forecast of every series.
        out: the checked ``--output`` path.
        to_stdout: whether ``--output`` is ``-``.
    """
    if to_stdout:
        merged.write_csv(sys.stdout)
        sys.stdout.flush()
    else:
        write_whole(out, merged.write_csv)
