"""``latentode test --ckpt_path CKPT --data.path FILE.csv``: the held-out errors of a CSV
checkpoint beside naive baselines, in the file's units (`latentode.evaluate`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.errors import DataError
from ..ensemble import Ensemble
from ..evaluate import scored_note
from ..paths import STDOUT, check_output_file, write_whole
from ..predictive import call_memory
from .errors import USER_ERRORS
from .forecaster import _calibration, _load_forecaster, _overlap, _pooled
from .options import (
    CALL_HELP,
    CKPT_HELP,
    DUPLICATES_ARG,
    IMPORTANCE_HELP,
    REFINE_HELP,
    SEED_HELP,
    _draws,
    _levels,
    add_band_options,
    check_draws,
    refuse_input_as_output,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..calibration import Calibration
    from ..data.table import SeriesTable
    from ..nn.latent_ode import LatentODE

__all__ = ["test_main"]


def test_main(argv: list[str]) -> int:
    """``latentode test --ckpt_path CKPT --data.path FILE.csv``: model vs naive baselines."""
    args = _test_parser().parse_args(argv)
    try:
        _check_output(args)
        check_draws(args)
        model, state, table = _load_forecaster(args.ckpt_path, args.data_path, args.duplicates)
        with call_memory(args.call_memory):
            frame, cal, overlap = _scores(args, model, state, table)
    except USER_ERRORS as e:
        print(f"latentode test: error: {e}", file=sys.stderr)
        return 2
    _print_table(args, table, frame)
    _print_notes(args, model, state, table, frame, cal, overlap)
    if args.output:
        try:
            write_whole(Path(args.output), lambda tmp: frame.to_csv(tmp, index=False))
        except DataError as e:
            print(f"latentode test: error: {e}", file=sys.stderr)
            return 2
    return 0


def _test_parser() -> argparse.ArgumentParser:
    """The options of ``latentode test`` for a CSV checkpoint (the config form is Lightning's,
    chosen in `latentode.cli`).

    Returns:
        The parser, with ``prog`` ``latentode test``.
    """
    p = argparse.ArgumentParser(
        prog="latentode test",
        description="Held-out interpolation and extrapolation errors of a CSV checkpoint, "
        "beside naive baselines, in the file's units. (Lightning's test of a config, in "
        "normalised units: latentode test --config FILE ...)",
    )
    p.add_argument("--ckpt_path", required=True, nargs="+", help=CKPT_HELP)
    p.add_argument("--data.path", dest="data_path", required=True)
    p.add_argument("--data.duplicates", dest="duplicates", **DUPLICATES_ARG)
    p.add_argument(
        "--n_samples", type=int, default=200, help="posterior paths per series (as predict)"
    )
    p.add_argument("--importance", action="store_true", help=IMPORTANCE_HELP)
    p.add_argument("--refine", type=int, default=0, metavar="STEPS", help=REFINE_HELP)
    p.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score the forecast with the bands `latentode predict` would write (scaled "
        "on the validation series, scored on the test series)",
    )
    add_band_options(p)
    p.add_argument(
        "--levels",
        nargs="+",
        default=None,
        metavar="PERCENT",
        help="bands to score besides the 90%% one, coverages in percent: --levels 80 95 adds "
        "the columns coverage80, width80, coverage95, width95",
    )
    p.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    p.add_argument("--call_memory", type=float, default=None, metavar="GB", help=CALL_HELP)
    p.add_argument("--output", default=None, help="also write the table as CSV")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return p


def _check_output(args: argparse.Namespace) -> None:
    """Check ``--output`` before any checkpoint is loaded: standard output is refused (the
    table is printed there already), and a file must be writable (`check_output_file`).

    Args:
        args: the parsed ``latentode test`` options.

    Raises:
        DataError: ``--output -``, or a file that is the ``--data.path`` or a
            ``--ckpt_path`` file (also with ``--overwrite``), exists without ``--overwrite``,
            is a directory or cannot be written.
    """
    if args.output == STDOUT:
        raise DataError(
            "--output -: the table is printed on standard output already; name a CSV "
            "file for --output."
        )
    if args.output:
        inputs = {"--data.path": [args.data_path], "--ckpt_path": args.ckpt_path}
        refuse_input_as_output(Path(args.output), inputs, "the table of errors")
        check_output_file(args.output, args.overwrite, example="scores.csv")


def _scores(
    args: argparse.Namespace, model: LatentODE | Ensemble, state: dict, table: SeriesTable
) -> tuple[pd.DataFrame, Calibration | None, bool]:
    """Calibrate the bands (with ``--calibrate``) and score the model and the baselines.

    The calibrated bands are scored only when the scored series are not the validation
    series they were calibrated on; otherwise the model's own bands are scored and
    ``overlap`` says why.

    Args:
        args: the parsed ``latentode test`` options.
        model: the loaded latent ODE or `Ensemble`.
        state: the checkpoint's data settings.
        table: the file, read as the checkpoint reads it.

    Returns:
        ``(frame, cal, overlap)``: the table of errors (`latentode.evaluate.evaluate`), the
        band factors (None without ``--calibrate``), and whether they went unscored.

    Raises:
        DataError and the other `USER_ERRORS` from the calibration or the scoring.
    """
    from ..evaluate import evaluate

    cal = _calibration(args, model, state, table) if args.calibrate else None
    # scored where calibrated: the calibrated row would be judged on its own series
    overlap = cal is not None and cal.scale is not None and _overlap(table, state)
    calibration = None if overlap else cal
    frame = evaluate(
        model,
        table,
        state,
        calibration=calibration,
        levels=_levels(args.levels),
        **_draws(args),
    )
    return frame, cal, overlap


def _print_table(args: argparse.Namespace, table: SeriesTable, frame: pd.DataFrame) -> None:
    """Print the table of errors on standard output, under a line that says what each
    column means.

    Args:
        args: the parsed ``latentode test`` options (``--levels``).
        table: the file (its name).
        frame: the table of errors.
    """
    more = "; coverage and width likewise for the other --levels" if args.levels else ""
    print(
        f"Held-out errors on {table.source} (user units; wis: weighted interval score of the "
        "median and bands, lower is better, a baseline's its absolute error; coverage90: "
        "share of held-out values inside the model's 5-95% band, width90: its mean width, "
        "below90 / above90: the shares under q05 and over q95, 0.05 each for honest "
        f"quantiles{more}):"
    )
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.5g}"))


def _print_notes(
    args: argparse.Namespace,
    model: LatentODE | Ensemble,
    state: dict,
    table: SeriesTable,
    frame: pd.DataFrame,
    cal: Calibration | None,
    overlap: bool,
) -> None:
    """Print the notes under the table: what was scored, the tasks that could not be, how
    an ensemble was pooled, and the calibration.

    Args:
        args: the parsed ``latentode test`` options (``--n_samples``).
        model: the loaded latent ODE or `Ensemble`.
        state: the checkpoint's data settings.
        table: the file.
        frame: the table of errors (its tasks).
        cal: the band factors, or None.
        overlap: whether the calibrated bands went unscored (`_scores`).
    """
    note = scored_note(table, state)
    if note:
        print(f"Scored: {note}")
    for task, why in (
        ("interpolation", "no held-out part holds three observations"),
        ("history gaps", "no history holds three observations"),
    ):
        if task not in set(frame.task):
            print(f"Not scored: {task} ({why}; one is hidden between two).")
    if isinstance(model, Ensemble):
        print(f"The latent ODE rows: {_pooled(model, args.n_samples)}.")
    if cal is not None:
        for line in cal.describe(table.channels).splitlines():
            print(f"Calibration: {line}.")
        if overlap:
            print(
                "Calibrated bands not scored: the file's scored series include the validation "
                "series (they were calibrated there)."
            )
