"""Percentages fitted as they are and on a logit scale (``transform: {share: logit(0, 100)}``).

Simulates 100 irregular daily series over 180 days (seeded): a percentage
``100 sigmoid(level + sin(2 pi t / 28 days + phase) + N(0, 0.3^2))`` whose level is drawn
uniformly from -4 to 4 per series, so a third of the series sit within a few percent of 0 or
of 100 and swing towards the middle and back. Fits `configs/csv.yaml` twice for ``--steps``
steps, as is and with ``{share: 'logit(0, 100)'}``, two fits at a time with one thread each,
then runs ``latentode test`` (held-out errors, calibrated on the 10 validation series and
scored on the 10 test series) and ``latentode predict`` over 20 days, and counts the forecast
rows whose band leaves 0-100.

Usage (reports/bounded.md; about 2 minutes on 2 cores)::

    .venv/bin/python experiments/bounded_channels.py --output reports/bounded.md
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from positive_channels import arguments, run_variants, test_table, wall_cell
from report_notes import publish

VARIANTS = {
    "as is": [],
    "logit scale": ["--data.init_args.transform", "{share: 'logit(0, 100)'}"],
}
HORIZON = "20D"  # said as "20 days" in the report


def simulate(path: Path, n_series: int = 100, seed: int = 7) -> pd.DataFrame:
    """The series of the module docstring, written to ``path``."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_series):
        days = np.sort(rng.choice(180, size=rng.integers(60, 100), replace=False))
        level, phase = rng.uniform(-4.0, 4.0), rng.uniform(0, 2 * np.pi)
        for d in days:
            logit = level + np.sin(2 * np.pi * d / 28 + phase) + rng.normal(0, 0.3)
            t = pd.Timestamp("2023-01-01") + pd.Timedelta(days=int(d))
            rows.append((f"ward-{s:02d}", t.strftime("%Y-%m-%d"), 100 / (1 + np.exp(-logit))))
    frame = pd.DataFrame(rows, columns=["series_id", "time", "share"])
    frame.to_csv(path, index=False)
    return frame


def report(results: dict[str, dict], steps: int, frame: pd.DataFrame) -> str:
    """The markdown of reports/bounded.md."""
    edge = ((frame.share < 5) | (frame.share > 95)).mean()
    lines = [
        "# Percentages: as they are and on a logit scale",
        "",
        "Regenerate (about 2 minutes on 2 cores): "
        f"`.venv/bin/python experiments/bounded_channels.py --steps {steps} "
        "--output reports/bounded.md`. Simulated data, one seed per variant: the "
        "generator and the protocol are in `experiments/bounded_channels.py`. "
        f"{len(frame)} observations of 100 series, {edge:.0%} of them below 5% or above 95%.",
        "",
        *test_table(results),
        "",
        "## Forecasts 20 days past every history (`latentode predict`, calibrated bands)",
        "",
        "| channels | rows | rows with q05 < 0 | rows with q95 > 100 | rows with mean outside "
        "0-100 | fit + test + predict (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        f = r["forecast"]
        outside = ~f["mean"].between(0, 100)
        lines.append(
            f"| {name} | {len(f)} | {(f.q05 < 0).mean():.1%} | {(f.q95 > 100).mean():.1%} | "
            f"{outside.mean():.1%} | {wall_cell(r)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Simulate, fit both variants two at a time, write the report."""
    args = arguments(__doc__, "bounded")
    data = args.runs / "wards.csv"
    frame = simulate(data)
    results = run_variants(VARIANTS, data, args.runs, args.steps, HORIZON)
    publish(report(results, args.steps, frame), args.output)


if __name__ == "__main__":
    main()
