"""Options that ``latentode predict`` and ``latentode test`` share: their help texts, the
band calibration's switches, and the reading of ``--levels`` and of how the posterior paths
are drawn."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..bands import LEVEL, band_ends, quantile_name
from ..data.errors import DataError

__all__ = [
    "BY_LEAD_HELP",
    "CALIBRATE_HELP",
    "CALL_HELP",
    "CKPT_HELP",
    "DUPLICATES_ARG",
    "IMPORTANCE_HELP",
    "LEVELS_HELP",
    "REFINE_HELP",
    "SEED_HELP",
    "TAILS_HELP",
    "add_band_options",
    "check_draws",
    "check_input_file",
    "refuse_input_as_output",
    "same_file",
]


IMPORTANCE_HELP = (
    "weight the posterior paths by the model's own posterior given each history (importance "
    "sampling with the encoder as proposal) instead of taking the encoder's q(z0) as it is; "
    "compare both with `latentode test` on your data (on the shipped fertility data it "
    "forecast worse on every fit), and raise --n_samples with it"
)


REFINE_HELP = (
    "refine each series' posterior q(z0) by this many Adam steps on its own history's ELBO "
    "before drawing the paths (semi-amortised inference; 0: the encoder's q as it is); the "
    "calibration uses the same setting"
)


CALIBRATE_HELP = (
    "scale the 5-95%% bands so that they cover 90%% of the fit's validation forecasts (split "
    "conformal; needs the validation series in --data.path, as in the training file); "
    "--no-calibrate: the model's own bands"
)


BY_LEAD_HELP = (
    "one band factor per lead-time bin, so that the bands cover 90%% at every lead time "
    "(default; one bin when the validation forecasts cannot fill two); "
    "--no-calibrate_by_lead: one factor for every lead time"
)


TAILS_HELP = (
    "calibrate each end of every band on its own, so that at most 5%% of values fall below "
    "q05 and at most 5%% above q95 (each end at 0.95: needs 19 validation series; a band whose "
    "series are too few keeps its central factors); --no-calibrate_tails: one factor for both "
    "ends, so the band covers 90%% but its misses may all lie on one side"
)


DUPLICATES_ARG: dict[str, Any] = {
    "choices": ("error", "mean"),
    "default": None,
    "help": "repeated (series, time) rows: refuse them (error) or average them (mean); "
    "default: as the fit read its training file",
}

CKPT_HELP = (
    "checkpoint written by latentode fit; several (e.g. fits of one config with different "
    "--seed_everything): their forecasts are pooled with equal weights, --n_samples paths "
    "from each (a deep ensemble; they must share the file and the data settings)"
)


SEED_HELP = (
    "seeds the posterior and noise draws, each series' from this seed and its id alone: "
    "--chunk, --devices and the file's order leave them as they are (to the solver's tolerance)"
)
LEVELS_HELP = (
    "central bands to write besides the 5-95%% one, as coverages in percent: --levels 50 80 95 "
    "adds q25/q75, q10/q90 and q02.5/q97.5; each is calibrated on its own (a 95%% band needs "
    "19 validation series, a 99%% band 99: with fewer it takes the 5-95%% band's factors)"
)


CALL_HELP = (
    "about the memory one model call may hold, in GB (default 1.5): more series than that "
    "are drawn a few at a time, and one series that needs more on its own is refused; raise "
    "it on a machine with memory to spare (latentode/draws.py, draws_per_call)"
)


def _levels(values: list[str] | None) -> tuple[float, ...]:
    """``--levels`` in percent as coverages (0.8 for 80), checked.

    Raises:
        DataError: a value that is not a number strictly between 1 and 100.
    """
    out = []
    for text in values or ():
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 1.0 <= value < 100.0:  # NaN fails too
            share = f" ({100 * value:g} for a share of {value:g})" if 0 < value < 1 else ""
            raise DataError(
                f"--levels {text}: give each band's coverage in percent, a number from 1 to "
                f"below 100, such as 80 for the 10-90% band{share}."
            )
        if band_ends(round(value / 100, 12))[0] <= 0.0:  # the ends 0 and 1: min and max
            raise DataError(
                f"--levels {text}: a band this close to 100% has its ends at quantiles that "
                "are 0 and 1 to 12 digits, the least and greatest draw; give at most "
                "99.9999999998."
            )
        out.append(value / 100)
    _check_column_names(list(values or ()), out)
    return tuple(out)


def _check_column_names(texts: list[str], levels: list[float]) -> None:
    """Refuse two different ``--levels`` whose bands' ends would be written under one column
    name (a name keeps the quantile to 12 digits: 50.0000000001 and 50 both give ``q25``,
    ``q75``), which wrote a table with repeated columns; the 5-95% band counts as ``90``. A
    level given twice (to 12 digits) is one band, not refused.

    Raises:
        DataError: naming both levels and the shared column.
    """
    owner: dict[str, tuple[float, str]] = {}
    for text, level in [("90", LEVEL), *zip(texts, levels, strict=True)]:
        for p in band_ends(round(level, 12)):
            name = quantile_name(p)
            other, said = owner.setdefault(name, (round(level, 12), text))
            if other != round(level, 12):
                raise DataError(
                    f"--levels {text}: its band would be written in column {name}, as the "
                    f"{said}% band is (column names keep the quantiles to 12 digits); give levels "
                    "that differ within them."
                )


def check_draws(args: argparse.Namespace) -> None:
    """Refuse ``--n_samples`` below 1 and ``--refine`` below 0 by their options, before any
    work (the model refused them later, naming its own arguments).

    Raises:
        DataError: naming the option and the value given.
    """
    if args.n_samples < 1:
        raise DataError(
            f"--n_samples must be >= 1 (posterior paths per series); got {args.n_samples}."
        )
    if args.refine < 0:
        raise DataError(
            f"--refine must be >= 0 (Adam steps on each history's ELBO; 0: none); got "
            f"{args.refine}."
        )


def _draws(args: argparse.Namespace) -> dict[str, Any]:
    """How the posterior paths are drawn, as `calibrate`, `evaluate` and `forecast` take it:
    the calibration must draw them as the forecasts it calibrates do."""
    return {
        "n_samples": args.n_samples,
        "seed": args.seed,
        "importance": args.importance,
        "refine": args.refine,
    }


def add_band_options(p: argparse.ArgumentParser) -> None:
    """``--calibrate_by_lead`` and ``--calibrate_tails``, how the bands are calibrated, as
    ``latentode predict`` and ``latentode test`` both take them."""
    p.add_argument(
        "--calibrate_by_lead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=BY_LEAD_HELP,
    )
    p.add_argument(
        "--calibrate_tails",
        action=argparse.BooleanOptionalAction,
        default=False,
        help=TAILS_HELP,
    )


def check_input_file(path: str, option: str) -> None:
    """Refuse an input file ``option`` names that is missing or a directory, before any work.

    Raises:
        DataError: naming ``option`` and the path.
    """
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{option} {p} is a directory; name a CSV file.")
    if not p.is_file():
        raise DataError(f"{option} {p}: no such file.")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through links too; ``b`` exists or not)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare the names
        return Path(a).resolve() == Path(b).resolve()


def refuse_input_as_output(out: Path, inputs: dict[str, Sequence[str | None]], what: str) -> None:
    """Refuse an ``--output`` that names one of the command's own input files, also with
    ``--overwrite``: the output would replace the file it was computed from.

    Args:
        out: the ``--output`` path.
        inputs: the input files by option (``{"--data.path": [path], ...}``; None skipped).
        what: what the output holds, for the message ("the forecast").

    Raises:
        DataError: naming the option whose file ``--output`` is.
    """
    for option, paths in inputs.items():
        for path in paths:
            if path is not None and same_file(out, Path(path)):
                raise DataError(
                    f"--output {out} is the {option} file; {what} would replace it. Name "
                    "another file for --output (nothing was written)."
                )
