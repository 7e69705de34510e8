"""How the posterior paths are drawn, compared on fitted CSV models (fertility).

For each fit: the forecast and interpolation of `latentode test` (its held-out cases, seeds and
scoring, no calibration) with the paths drawn four ways:

- ``q``: from the encoder's q(z0), 100 paths (the default);
- ``importance``: 1000 paths from q weighted by the model's own posterior
  (``latentode test --importance --n_samples 1000``);
- ``refine``: q refined by 100 Adam steps on each history's ELBO, 100 paths
  (``latentode test --refine 100``);
- ``aggregate prior``: 1000 paths from the mixture of the encoder's q over the fit's training
  series, each conditioned on its whole history as a forecast conditions, weighted by the
  likelihood of the history (`LatentODE.aggregate_posterior`; library only).

The first three rows are the numbers ``latentode test`` prints with those flags.

Usage (reports/csv_inference.md; about 5 minutes for 14 fits on 2 cores)::

    .venv/bin/python experiments/csv_inference.py --prefix last16 keep5 \\
        --output reports/csv_inference.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report_notes import publish  # noqa: E402

from latentode.cli.forecaster import _load_forecaster  # noqa: E402
from latentode.data.prep import whole_series  # noqa: E402
from latentode.evaluate import (  # noqa: E402
    COLUMNS,
    _model_row,
    case_seeds,
    case_stats,
    held_out_cases,
    scored_series,
)
from latentode.forecast import _recent, conditioned_batch  # noqa: E402
from latentode.predictive import band_levels  # noqa: E402

WAYS = {  # name: (paths, importance, refine, aggregate prior)
    "q": (100, False, 0, False),
    "importance": (1000, True, 0, False),
    "refine": (100, False, 100, False),
    "aggregate prior": (1000, True, 0, True),
}


def training_prior(model, state, table):
    """The aggregate posterior of the fit's training series (neither validation nor test)."""
    held = set(state.get("val_series") or []) | set(state.get("test_series") or [])
    segs = [
        _recent(g, state.get("history"))
        for g in whole_series(table)
        if table.series_ids[g.series] not in held
    ]
    observed, _ = conditioned_batch(model, segs, state)
    return model.aggregate_posterior(observed)


def score(ckpt: Path, data: str) -> dict[str, dict[str, float]]:
    """Per way: forecast / interpolation MSE and the model's own 5-95% coverage."""
    model, state, table = _load_forecaster([str(ckpt)], data)
    model.eval()
    series = scored_series(table, state)
    holdout, history = float(state.get("holdout") or 0.1), state.get("history")
    tasks = {
        t: held_out_cases(table, series, holdout, history, t)
        for t in ("extrapolation", "interpolation")
    }
    out = {}
    for way, (paths, importance, refine, aggregate) in WAYS.items():
        prior = None
        if aggregate:
            with torch.no_grad():
                prior = training_prior(model, state, table)
        torch.manual_seed(0)  # the aggregate prior's shared draws
        start = time.perf_counter()
        row = {}
        for task, cases in tasks.items():
            seeds = case_seeds(0, table, cases, task)  # as `evaluate` seeds
            stats = case_stats(
                model, cases, state, paths, seeds, importance, refine=refine, prior=prior
            )
            target = np.concatenate([c.target for c in cases])
            scored = _model_row("", "", stats, target, band_levels(None))
            scores = dict(zip(COLUMNS, scored, strict=True))
            row[task], row[f"{task} coverage"] = scores["mse"], scores["coverage90"]
        row["seconds"] = time.perf_counter() - start
        out[way] = row
    return out


def report(results: dict[str, dict[str, dict[str, float]]], seconds: float) -> str:
    ways = list(WAYS)
    lines = [
        "# How the posterior paths are drawn: q, importance, refine, aggregate prior",
        "",
        f"Command: `.venv/bin/python experiments/csv_inference.py {' '.join(sys.argv[1:])}` "
        f"(wall time {seconds / 60:.1f} min on a shared 2-core CPU). Data: "
        "`data/fertility_worldbank.csv`; each fit's 21 test series, scored as `latentode test` "
        "scores them (forecast: the last 10% of years; interpolation: every other year of that "
        "window hidden). Cells: MSE (births per woman squared), the model's own 5-95% coverage "
        "in brackets. The ways are described in the script's docstring.",
        "",
        "| fit | task | " + " | ".join(ways) + " |",
        "|---|---|" + "---|" * len(ways),
    ]
    for name, r in results.items():
        for task in ("extrapolation", "interpolation"):
            cells = [f"{r[w][task]:.4f} ({r[w][task + ' coverage']:.2f})" for w in ways]
            lines.append(f"| {name} | {task} | " + " | ".join(cells) + " |")
    for prefix in sorted({name.split("_d")[0] for name in results}):
        mine = [r for name, r in results.items() if name.split("_d")[0] == prefix]
        lines += [
            "",
            f"| summary over the {len(mine)} `{prefix}` fits | " + " | ".join(ways) + " |",
            "|---|" + "---|" * len(ways),
        ]
        for task in ("extrapolation", "interpolation"):
            base = [r["q"][task] for r in mine]
            mean = [np.mean([r[w][task] for r in mine]) for w in ways]
            ratio = [
                np.mean([r[w][task] / b for r, b in zip(mine, base, strict=True)]) for w in ways
            ]
            better = [sum(r[w][task] < b for r, b in zip(mine, base, strict=True)) for w in ways]
            lines.append(f"| {task}: mean MSE | " + " | ".join(f"{m:.4f}" for m in mean) + " |")
            lines.append(
                f"| {task}: mean ratio to q | " + " | ".join(f"{x:.2f}" for x in ratio) + " |"
            )
            lines.append(
                f"| {task}: fits better than q | "
                + " | ".join(f"{b} of {len(base)}" for b in better)
                + " |"
            )
        secs = [np.mean([r[w]["seconds"] for r in mine]) for w in ways]
        lines.append(
            "| seconds per fit (both tasks) | " + " | ".join(f"{x:.0f}" for x in secs) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/fertility_worldbank.csv")
    p.add_argument("--runs", default="runs/csv_seeds")
    p.add_argument(
        "--prefix", nargs="+", default=["keep5"], help="run directories PREFIX_dSPLIT_sSEED"
    )
    p.add_argument("--output", default=None)
    args = p.parse_args()
    start = time.perf_counter()
    results = {}
    runs = [r for prefix in args.prefix for r in sorted(Path(args.runs).glob(f"{prefix}_d*_s*"))]
    for run in runs:
        ckpt = sorted((run / "checkpoints").glob("best-*.ckpt"))[-1]
        results[run.name] = score(ckpt, args.data)
        print(run.name, results[run.name], flush=True)
    text = report(results, time.perf_counter() - start)
    publish(text, args.output)


if __name__ == "__main__":
    main()
