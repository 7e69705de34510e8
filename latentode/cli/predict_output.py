"""What ``latentode predict`` writes besides the forecast CSV: the ``--plot`` file of each
series (`_draw_plots`), and the lines it prints after it (`_summary_lines`): what was written,
the calibration, and the notes on forecasts to trust less (unobserved channels, histories far
outside the training data, too few paths for the bands, leads past the validated ones)."""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.errors import DataError
from ..data.prep import Segment
from ..data.table import SeriesTable
from ..data.transforms import forward, kinds_of
from ..ensemble import Ensemble
from ..paths import STDOUT, check_output_dir
from ..predictive import percent, quantile_probs
from .errors import _listed
from .forecaster import _pooled
from .options import same_file

if TYPE_CHECKING:
    from ..calibration import Calibration
    from ..forecast import ForecastResult
    from ..nn.latent_ode import LatentODE

__all__ = ["PLOT_STEM", "plot_names"]

PLOT_STEM = 120  # characters of a series id kept in its --plot file name


def plot_names(series_ids: list[str]) -> list[str]:
    """The PNG file name of each series' ``--plot``: its id with every run of characters other
    than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``. Ids that come out the same,
    also when case is ignored (as macOS and Windows file systems do), get ``__`` and their
    1-based position in ``series_ids`` appended, so no series' plot replaces another's. A
    stem is cut to its first `PLOT_STEM` characters (file systems take 255 bytes), and cut
    ones sharing their start are numbered the same way."""
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "_", sid)[:PLOT_STEM] for sid in series_ids]
    shared = {k for k, n in Counter(s.casefold() for s in stems).items() if n > 1}
    taken: set[str] = set()
    names = []
    for i, stem in enumerate(stems):
        name = f"{stem}__{i + 1}" if stem.casefold() in shared else stem
        while name.casefold() in taken:  # an id that already reads like a renamed one
            name += "_"
        taken.add(name.casefold())
        names.append(f"{name}.png")
    return names


def _plot_files(args: argparse.Namespace, series_ids: list[str]) -> list[Path]:
    """The ``--plot`` PNG of each series, checked before anything is computed or written.

    Raises:
        DataError: ``--plot`` names a file, ``--output`` is one of the PNGs, or some of the
            PNGs exist and ``--overwrite`` is not given.
    """
    folder = check_output_dir(args.plot, "--plot")
    files = [folder / name for name in plot_names(series_ids)]
    mine = [i for i, p in enumerate(files) if args.output != STDOUT and same_file(args.output, p)]
    if mine:
        raise DataError(
            f"--output {args.output} is the --plot file of series {series_ids[mine[0]]!r}; its "
            "plot would replace the forecast. Name another file for --output, or another --plot "
            "directory (nothing was written)."
        )
    there = [p.name for p in files if p.exists()]
    if there and not args.overwrite:
        raise DataError(
            f"--plot {folder}: {len(there)} of the {len(files)} PNGs exist already "
            f"({_listed(there)}); "
            "pass --overwrite to replace them, or name another directory (nothing was written)."
        )
    return files


def _unobserved(history: list[Segment], table: SeriesTable) -> str:
    """A note on the series whose conditioned history never observes some channel (empty when
    none does): their forecasts of it come from the other channels and what the model
    learned in training, not from the series."""
    blind = [
        (table.series_ids[g.series], c)
        for g in history
        for c, seen in zip(table.channels, (~np.isnan(g.values)).any(0), strict=True)
        if not seen
    ]
    if not blind:
        return ""
    shown = _listed([f"{sid!r} ({c})" for sid, c in blind])
    return (
        f"{len(blind)} forecast(s) of a channel the series' history never observes: {shown}. "
        "They come from the series' other channels and the fitted model, not from the "
        "series' own values of that channel; trust their bands less."
    )


def _few_paths(n_samples: int, levels: tuple[float, ...] = ()) -> str:
    """A note when ``--n_samples`` is too few for the widest band: fewer paths than one per
    tail beyond its ends (20 for the 5-95% band, 40 for 2.5-97.5%) sample the posterior's
    spread there poorly. The quantiles are those of these paths' mixture, exactly."""
    low = quantile_probs(levels)[0]
    need = math.ceil(1 / low - 1e-9)
    if n_samples >= need:
        return ""
    lo, hi = percent(low), percent(1 - low)
    return (
        f"--n_samples {n_samples}: the {lo}% and {hi}% quantiles of fewer than {need} paths "
        "rest on the few most extreme of them (with one path the band is its observation "
        f"noise alone), so the bands are rough; use {max(100, 5 * need)} or more for bands to "
        "rely on."
    )


def _outside_training(history: list[Segment], table: SeriesTable, state: dict) -> str:
    """A note on the histories holding values far outside the training data's (beyond its
    range, per channel, by more than the range's width; empty when none do, or for a
    checkpoint that does not keep the range): the model never saw such values, so their
    forecasts and bands are extrapolations. A file in other units is the usual cause. A
    transformed channel (log or logit) is compared on its scale, as the model sees it: a
    history in kilograms for a fit in grams (0.05-0.2 against 50-200) is far outside on the
    log scale, while in grams no positive value lies a range's width below 50."""
    if not state.get("value_range"):
        return ""
    kinds, rng = kinds_of(state.get("normalisation"), len(table.channels)), state["value_range"]
    lo, hi = (forward(np.asarray(rng[k], dtype=np.float64), kinds) for k in ("min", "max"))
    width = hi - lo
    far = []
    for g in history:
        z = forward(g.values, kinds)  # (n, D) as the model sees them, before normalising
        for d, c in enumerate(table.channels):
            ok = ~np.isnan(z[:, d])
            v, zd = g.values[ok, d], z[ok, d]
            if len(v) and (zd.min() < lo[d] - width[d] or zd.max() > hi[d] + width[d]):
                far.append(
                    f"{table.series_ids[g.series]!r} ({c}: {v.min():.4g} to {v.max():.4g}; "
                    f"training {rng['min'][d]:.4g} to {rng['max'][d]:.4g})"
                )
    if not far:
        return ""
    return (
        f"{len(far)} history channel(s) hold values far outside the training data's: "
        f"{_listed(far)}. The model never saw such values, so these forecasts and their bands "
        "are extrapolations; check the file's units, or refit with such series."
    )


def _draw_plots(result: ForecastResult, table: SeriesTable, pngs: list[Path], folder: str) -> None:
    """Draw one PNG per series this process forecast, history and forecast bands in the
    file's own time units, into ``folder`` (created if missing).

    Args:
        result: this process's forecast (the other processes' series have None summaries
            and are skipped).
        table: the history file.
        pngs: one checked PNG path per series of the file (`_plot_files`).
        folder: the ``--plot`` directory.
    """
    import matplotlib.pyplot as plt

    from ..plots import plot_forecast

    Path(folder).mkdir(parents=True, exist_ok=True)
    to_orig = table.encoding.to_original
    for seg, fut, summary in zip(result.history, result.future, result.summary, strict=True):
        if summary is None:
            continue
        sid = table.series_ids[seg.series]
        fig = plot_forecast(
            to_orig(seg.times),
            seg.values,
            to_orig(fut),
            summary,
            table.channels,
            f"{sid}",
            result.levels,
        )
        fig.savefig(pngs[seg.series], dpi=110)
        plt.close(fig)


def _summary_lines(
    args: argparse.Namespace,
    model: LatentODE | Ensemble,
    state: dict,
    table: SeriesTable,
    merged: ForecastResult,
    levels: tuple[float, ...],
    cal: Calibration | None,
    out: Path,
    world: int,
) -> list[str]:
    """The lines printed after the forecast is written: what was written where, how an
    ensemble was pooled, notes on the histories and the paths, and the calibration.

    Args:
        args: the parsed ``latentode predict`` options.
        model: the loaded latent ODE or `Ensemble`.
        state: the checkpoint's data settings.
        table: the history file.
        merged: the forecast of every series.
        levels: the extra band levels.
        cal: the band factors, or None.
        out: the ``--output`` path.
        world: the number of processes.

    Returns:
        The lines, each starting ``latentode predict:``.
    """
    procs = f" ({world} processes)" if world > 1 else ""
    where = "standard output" if args.output == STDOUT else out
    n = len(merged.history)
    lines = [f"latentode predict: wrote {merged.n_rows} rows for {n} series to {where}{procs}"]
    if isinstance(model, Ensemble):
        lines.append(f"latentode predict: {_pooled(model, args.n_samples)}.")
    for note in (
        _unobserved(merged.history, table),
        _outside_training(merged.history, table, state),
        _few_paths(args.n_samples, levels),
    ):
        if note:
            lines.append(f"latentode predict: note: {note}")
    if cal is not None:
        lines += _calibration_lines(cal, table, merged)
    return lines


def _calibration_lines(cal: Calibration, table: SeriesTable, merged: ForecastResult) -> list[str]:
    """The calibration's description, and a note when the forecasts reach past the lead
    times it was validated (and, with factors, calibrated) on.

    Args:
        cal: the band factors.
        table: the history file (its channels and time unit).
        merged: the forecast of every series.

    Returns:
        The lines, each starting ``latentode predict:``.
    """
    lines = [f"latentode predict: {x}." for x in cal.describe(table.channels).splitlines()]
    furthest = max(
        float(f[-1] - g.times[-1]) for g, f in zip(merged.history, merged.future, strict=True)
    )
    past = furthest > cal.max_lead * (1 + 1e-9)  # max_lead NaN: nothing was validated
    unit = table.encoding.unit if table.encoding.kind == "datetime" else ""
    reach, lead = f"{furthest:.4g}{unit}", f"{cal.max_lead:.4g}{unit}"
    if past and cal.scale is not None:
        lines.append(
            f"latentode predict: note: forecasts reach {reach} ahead, past the calibrated "
            f"lead times ({lead}); the last factor is carried on there untested (refit "
            "with a larger holdout to calibrate further ahead)."
        )
    elif past:
        lines.append(
            f"latentode predict: note: forecasts reach {reach} ahead, past the fit's "
            f"validation forecasts (lead times up to {lead}); how good they and their "
            "bands are there is untested (refit with a larger holdout to validate further "
            "ahead)."
        )
    return lines
