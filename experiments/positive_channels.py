"""Positive quantities fitted as they are and on a log scale (``--data.init_args.transform``).

Simulates 100 irregular hourly series over 60 days (seeded): a concentration
``rate * exp(N(0, 0.25^2))`` and a Poisson count of mean ``2 rate``, where each site's rate
is a level drawn from 0.1-3 times ``exp(0.8 sin(2 pi t / week + phase))``. Both channels are
positive and small, with changes that are multiplicative; a third of the counts are 0.
Fits `configs/csv.yaml` twice for ``--steps`` steps, as is and with ``{conc: log, count:
log1p}``, two fits at a time with one thread each, then runs ``latentode test`` (held-out
errors, calibrated on the 10 validation series and scored on the 10 test series) and
``latentode predict`` over 5 days, and counts the forecast rows whose 5% quantile is below 0.

Usage (reports/positive.md; about 4 minutes on 2 cores)::

    .venv/bin/python experiments/positive_channels.py --output reports/positive.md
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from report_notes import publish

ROOT = Path(__file__).resolve().parents[1]
LATENTODE = str(Path(sys.executable).with_name("latentode"))
VARIANTS = {"as is": [], "log scale": ["--data.init_args.transform", "{conc: log, count: log1p}"]}


def simulate(path: Path, n_series: int = 100, seed: int = 4) -> pd.DataFrame:
    """The series of the module docstring, written to ``path``."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_series):
        hours = np.sort(rng.choice(24 * 60, size=rng.integers(40, 80), replace=False))
        level = rng.uniform(0.1, 3.0)
        for h in hours:
            t = pd.Timestamp("2023-03-01") + pd.Timedelta(hours=int(h))
            rate = level * np.exp(0.8 * np.sin(2 * np.pi * h / (24 * 7) + s))
            conc = rate * np.exp(rng.normal(0, 0.25))
            rows.append((f"site-{s:02d}", t.isoformat(), conc, rng.poisson(2 * rate)))
    frame = pd.DataFrame(rows, columns=["series_id", "time", "conc", "count"])
    frame.to_csv(path, index=False)
    return frame


def _run(args: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("a") as out:
        done = subprocess.run([LATENTODE, *args], env=env, stdout=out, stderr=out, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"latentode {args[0]} failed; see {log}")


def variant(
    name: str, extra: list[str], data: Path, runs: Path, steps: int, horizon: str = "5D"
) -> dict:
    """Fit, test and forecast (``horizon`` past every history) one variant; its scores and
    forecast rows."""
    run = runs / name.replace(" ", "_")
    log = runs / f"{run.name}.log"
    start = time.perf_counter()
    reused = (run / "checkpoints" / "last.ckpt").is_file()
    if not reused:
        fit = ["fit", "--config", "configs/csv.yaml", "--data.init_args.path", str(data)]
        fit += ["--trainer.default_root_dir", str(run), "--trainer.max_steps", str(steps)]
        _run([*fit, "--trainer.enable_progress_bar", "false", *extra], log)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    scores, forecast = run / "scores.csv", run / "forecast.csv"
    base = ["--ckpt_path", ckpt, "--data.path", str(data)]
    _run(["test", *base, "--output", str(scores), "--overwrite"], log)
    _run(["predict", *base, "--horizon", horizon, "--output", str(forecast), "--overwrite"], log)
    wall = time.perf_counter() - start
    return {
        "scores": pd.read_csv(scores),
        "forecast": pd.read_csv(forecast),
        "wall": wall,
        "reused": reused,
    }


def wall_cell(result: dict) -> str:
    """The variant's wall seconds for the report: fit, test and predict, or only the last two
    when the fit was found under ``--runs`` and reused."""
    return f"{result['wall']:.0f}" + (" (fit reused)" if result["reused"] else "")


def run_variants(
    variants: dict[str, list[str]], data: Path, runs: Path, steps: int, horizon: str = "5D"
) -> dict[str, dict]:
    """`variant` for each of ``variants`` (name: extra fit arguments), two at a time."""
    with ThreadPoolExecutor(2) as pool:
        jobs = {
            n: pool.submit(variant, n, e, data, runs, steps, horizon) for n, e in variants.items()
        }
        return {n: j.result() for n, j in jobs.items()}


def test_table(results: dict[str, dict]) -> list[str]:
    """The markdown lines of the variants' held-out forecast errors (``latentode test``)."""
    lines = [
        "## Held-out forecasts (`latentode test`, the 10 test series' last tenth)",
        "",
        "| channels | method | MSE | MAE | coverage90 | width90 |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        s = r["scores"]
        for _, row in s[s.task == "extrapolation"].iterrows():
            lines.append(
                f"| {name} | {row.method} | {row.mse:.3f} | {row.mae:.3f} | "
                f"{row.coverage90:.2f} | {row.width90:.2f} |"
            )
    return lines


def report(results: dict[str, dict], steps: int) -> str:
    """The markdown of reports/positive.md."""
    lines = [
        "# Positive quantities: as they are and on a log scale",
        "",
        "Regenerate (about 4 minutes on 2 cores): "
        f"`.venv/bin/python experiments/positive_channels.py --steps {steps} "
        "--output reports/positive.md`. Simulated data, one seed per variant: the "
        "generator and the protocol are in `experiments/positive_channels.py`.",
        "",
        *test_table(results),
        "",
        "## Forecasts 5 days past every history (`latentode predict`, calibrated bands)",
        "",
        "| channels | rows | conc rows with q05 < 0 | count rows with q05 < 0 | "
        "fit + test + predict (s) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        f = r["forecast"]
        neg = (f.q05 < 0).groupby(f.channel).mean()
        lines.append(
            f"| {name} | {len(f)} | {neg['conc']:.1%} | {neg['count']:.1%} | {wall_cell(r)} |"
        )
    return "\n".join(lines) + "\n"


def arguments(doc: str, name: str) -> argparse.Namespace:
    """``--runs`` (default ``runs/<name>``, created), ``--steps`` and ``--output``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / name)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    return args


def main() -> None:
    """Simulate, fit both variants two at a time, write the report."""
    args = arguments(__doc__, "positive")
    data = args.runs / "sites.csv"
    simulate(data)
    publish(report(run_variants(VARIANTS, data, args.runs, args.steps), args.steps), args.output)


if __name__ == "__main__":
    main()
