"""``latentode test --ckpt_path CKPT --data.path FILE.csv``: the held-out errors of a CSV
checkpoint beside naive baselines, in the file's units (`latentode.evaluate`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
)

__all__ = ["test_main"]


def test_main(argv: list[str]) -> int:
    """``latentode test --ckpt_path CKPT --data.path FILE.csv``: model vs naive baselines."""
    from ..evaluate import evaluate

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
    args = p.parse_args(argv)
    try:
        if args.output == STDOUT:
            raise DataError(
                "--output -: the table is printed on standard output already; name a CSV "
                "file for --output."
            )
        if args.output:
            check_output_file(args.output, args.overwrite, example="scores.csv")
        model, state, table = _load_forecaster(args.ckpt_path, args.data_path, args.duplicates)
        with call_memory(args.call_memory):
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
    except USER_ERRORS as e:
        print(f"latentode test: error: {e}", file=sys.stderr)
        return 2
    more = "; coverage and width likewise for the other --levels" if args.levels else ""
    print(
        f"Held-out errors on {table.source} (user units; wis: weighted interval score of the "
        "median and bands, lower is better, a baseline's its absolute error; coverage90: "
        "share of held-out values inside the model's 5-95% band, width90: its mean width, "
        "below90 / above90: the shares under q05 and over q95, 0.05 each for honest "
        f"quantiles{more}):"
    )
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
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
    if args.output:
        try:
            write_whole(Path(args.output), lambda tmp: frame.to_csv(tmp, index=False))
        except DataError as e:
            print(f"latentode test: error: {e}", file=sys.stderr)
            return 2
    return 0
