"""Bands of other coverages (``latentode predict --levels``): each calibrated on its own,
against one factor for every band, on held-out series.

For each CSV checkpoint, forecast the held-out end of every series the fit did not train on
(its validation and test series) once, with the 25-75, 10-90, 5-95 and 2.5-97.5% bands.
Then ``--splits`` random halvings of those series: factors from one half, by lead-time bin
as ``latentode predict`` computes them, coverage and width on the other half, for three
rules:

- *model*: the model's own bands;
- *one factor*: every band scaled by the 5-95% band's factors (as if the predictive's shape
  were right and only its spread wrong; what a band gets when its level needs more
  validation series than there are);
- *own factors*: each band scaled by the factors of its own scores, wider bands then
  widened to hold the narrower ones (what ``latentode predict --levels`` writes).

Usage (from the repository root; the checkpoints of ``reports/calibration.md``)::

    .venv/bin/python experiments/calibration_levels.py \\
        --ckpt runs/csv_seeds/keep5_d0_s0/checkpoints/best-*.ckpt ... \\
        --data data/fertility_worldbank.csv --n_samples 200 --splits 1000 \\
        --output reports/calibration_levels.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration import KEYS, arguments, held_out  # noqa: E402
from report_notes import publish  # noqa: E402

from latentode.calibration import band_scores, bin_index, lead_scales  # noqa: E402
from latentode.predictive import band_columns, band_levels, percent, scale_bands  # noqa: E402

LEVELS = band_levels((0.5, 0.8, 0.95))  # with 0.9
RULES = {"model": "model's own", "one": "one factor (5-95%'s)", "own": "own factors, nested"}


def factors(stats: list, target: list, lead: list) -> dict[float, tuple]:
    """Per band: the lead-time bin edges and ``[B, 1]`` factors of its own scores on the given
    series (None where its level cannot be calibrated on so few)."""
    s, y = np.concatenate(stats), np.concatenate(target)
    groups = np.concatenate([np.full(len(t), i) for i, t in enumerate(target)])
    out = {}
    for v in LEVELS:
        lo, mid, hi = band_columns(LEVELS, v)
        scores = band_scores(s[..., [0, 1, lo, mid, hi]], y)
        out[v] = lead_scales(scores, groups, np.concatenate(lead), level=v)
    return out


def scaled(stats: np.ndarray, lead: np.ndarray, fac: dict, rule: str) -> np.ndarray:
    """One series' summaries under ``rule``."""
    if rule == "model":
        return stats
    rows = []
    for v in LEVELS:
        edges, scale = fac[0.9 if rule == "one" or fac[v] is None else v]
        rows.append(scale[bin_index(edges, lead)])
    return scale_bands(stats, np.stack(rows), LEVELS)


def cover_width(stats: list, target: list, lead: list, fac: dict, rule: str) -> np.ndarray:
    """``[L, 2]`` coverage and mean width of every band over the given series."""
    s = np.concatenate([scaled(x, t, fac, rule) for x, t in zip(stats, lead, strict=True)])
    y = np.concatenate(target)
    ok = ~np.isnan(y)
    out = []
    for v in LEVELS:
        lo, _, hi = band_columns(LEVELS, v)
        inside = (s[..., lo] <= y) & (y <= s[..., hi])
        out.append((inside[ok].mean(), (s[..., hi] - s[..., lo])[ok].mean()))
    return np.array(out)


def study(h: dict, splits: int, seed: int) -> dict:
    """Coverage and width of every band under every rule over random halvings."""
    pick = lambda m: [[h[k][i] for i in np.flatnonzero(m)] for k in KEYS]  # noqa: E731
    rng = np.random.default_rng(seed)
    n = len(h["role"])
    out: dict[str, list] = {r: [] for r in RULES}
    fell_back = 0
    for _ in range(splits):
        a = np.zeros(n, dtype=bool)
        a[rng.permutation(n)[: n // 2]] = True
        fac = factors(*pick(a))
        fell_back += any(f is None for f in fac.values())
        for rule in RULES:
            out[rule].append(cover_width(*pick(~a), fac, rule))
    return {"n": n, "fell_back": fell_back, **{r: np.array(v) for r, v in out.items()}}


def report(args: argparse.Namespace, results: dict, wall: float) -> str:
    """The markdown report."""
    cmd = " ".join(["`.venv/bin/python experiments/calibration_levels.py", *sys.argv[1:]]) + "`"
    bands = " / ".join(f"{percent(v)}%" for v in LEVELS)
    lines = [
        "# Bands of other coverages on held-out series (`latentode predict --levels`)",
        "",
        f"Command: {cmd} ({wall:.0f} s on this 2-core machine, {args.n_samples} paths per series).",
        "",
        __doc__.split("\n\n", 1)[1].split("\n\nUsage")[0],
        "",
        f"Cells: mean over {args.splits} halvings, coverage (10% / 90% of splits) and mean "
        f"width in the data's units, for the {bands} bands.",
        "",
        "| checkpoint | held-out series | rule | "
        + " | ".join(f"{percent(v)}%: coverage | width" for v in LEVELS)
        + " |",
        "|---|---|---|" + "---|---|" * len(LEVELS),
    ]
    for name, r in results.items():
        for rule, label in RULES.items():
            a = r[rule]  # (splits, L, 2)
            cells = []
            for j in range(len(LEVELS)):
                c = a[:, j, 0]
                lo, hi = np.quantile(c, [0.1, 0.9])
                cells += [f"{c.mean():.3f} ({lo:.2f} / {hi:.2f})", f"{a[:, j, 1].mean():.3f}"]
            lines.append(f"| {name} | {r['n']} | {label} | " + " | ".join(cells) + " |")
    fell = {name: r["fell_back"] for name, r in results.items() if r["fell_back"]}
    if fell:
        lines += ["", f"Halvings where a band took the 5-95% band's factors: {fell}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the study for each checkpoint and write the report."""
    args = arguments(__doc__, 200)
    start = time.perf_counter()
    results = {}
    for ck in args.ckpt:
        h = held_out(ck, args.data, args.n_samples, args.seed, LEVELS)
        results[f"`{ck}`"] = study(h, args.splits, args.seed)
    publish(report(args, results, time.perf_counter() - start), args.output)


if __name__ == "__main__":
    main()
