"""How conservative the series-weighted conformal rule is, and why (``latentode.calibration``,
``reports/calibration_notes.md``, 2026-11-25).

Three rules for a lead-time bin's factor from ``S`` validation series, each holding one or
more values in the bin:

- *before*: the rule until 2026-11-25, the smallest score whose series weight reaches
  ``ceil((S + 1) 0.9)``;
- *now*: `conformal_scale`, the weight ``(S + 1) 0.9`` (Lee, Barber and Willett 2023);
- *one a series*: one value of each series drawn at random, the plain rule over the ``S``
  (valid whatever the values within a series do, but the factor rests on ``S`` values);
- *averaged*: that factor's mean over 50 such draws (steadier, but not distribution-free:
  where each series holds one value far out among five, it covers 0.80).

Two studies:

- *synthetic*: exchangeable series, ``m`` values each, N(0, 1) with correlation ``rho``
  within a series; the model's band N(0, 2^2). The coverage of a fresh series' value given
  the factor is exact (``2 Phi(2 z95 lam) - 1``); its mean and 10% quantile over ``--reps``
  draws, and the mean factor (the band's width in model half-bands);
- *fits*: for each CSV checkpoint, every series the fit did not train on (its validation and
  test series) forecast once; then ``--splits`` random draws of ``S`` of them to calibrate on
  (by lead-time bin, as ``latentode predict``), coverage and mean width on the others, for
  ``S`` = 9, 20, 40 where at least 20 series remain.

Usage (from the repository root; the fits of ``reports/calibration_notes.md``)::

    .venv/bin/python experiments/calibration_rule.py \\
        --ckpt runs/csv_seeds/wide_d0_s0/checkpoints/best-*.ckpt ... \\
        --data data/fertility_worldbank.csv --n_samples 200 --splits 300 --reps 2000
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration import KEYS, cover_width, held_out  # noqa: E402

import latentode.calibration as calibration  # noqa: E402
import latentode.conformal as conformal  # noqa: E402
from latentode.calibration import bin_index, conformal_scale, lead_scales  # noqa: E402

RULES = {"before": "before (ceil)", "now": "now", "one": "one a series", "mean": "averaged"}
DRAWS = 50  # draws of one value a series that the averaged rule averages over
SIZES = (9, 20, 40)


def before(scores: np.ndarray, level: float = 0.9, groups: np.ndarray | None = None):
    """`conformal_scale` until 2026-11-25: the series weight to reach rounded up to
    ``ceil((S + 1) level)`` (the rule now at the level that reaches that count)."""
    ok = ~np.isnan(scores)
    S = len(np.unique(groups[ok])) if groups is not None else int(ok.sum())
    return conformal_scale(scores, math.ceil((S + 1) * level - 1e-9) / (S + 1), groups)


def one_a_series(rng: np.random.Generator, draws: int = 1) -> Callable:
    """A rule that draws one value of each series at random and applies the plain one; with
    ``draws``, the mean of that factor over so many draws."""

    def rule(scores: np.ndarray, level: float = 0.9, groups: np.ndarray | None = None):
        ok = np.flatnonzero(~np.isnan(scores))
        if groups is None or len(ok) < calibration.MIN_VALUES:  # the bin's values, as before
            return conformal_scale(scores, level, groups)
        g = groups[ok]
        pick = np.stack([rng.choice(ok[g == s], size=draws) for s in np.unique(g)])  # (S, n)
        k = math.ceil((len(pick) + 1) * level - 1e-9)
        if k > len(pick):
            return None
        lam = np.sort(scores[pick], axis=0)[k - 1]  # (draws,) each draw's factor
        return float(lam.mean()) * (1 + calibration.WIDEN)

    return rule


@contextmanager
def rule_in_use(name: str, rng: np.random.Generator) -> Iterator[None]:
    """`latentode.calibration`'s bins take their factors by rule ``name`` meanwhile (the
    bins look the rule up in `latentode.conformal`, where it lives)."""
    kept = conformal.conformal_scale
    conformal.conformal_scale = {
        "before": before,
        "now": kept,
        "one": one_a_series(rng),
        "mean": one_a_series(rng, DRAWS),
    }[name]
    try:
        yield
    finally:
        conformal.conformal_scale = kept


SPIKE = 10.0  # the "one far out" series: one value of five at +-SPIKE, the others N(0, 1)


def cases() -> list[tuple[int, int, float | str]]:
    """The synthetic ``(S, m, rho)``: Gaussian, correlation ``rho`` within a series; and
    ``"one far out"``: four of a series' five values N(0, 1), one at +-SPIKE (a break)."""
    grid = [
        (S, m, rho)
        for S in SIZES
        for m in (1, 3, 10)
        for rho in (0.0, 0.5, 0.9, 1.0)
        if S * m >= calibration.MIN_VALUES
    ]
    return grid + [(S, 5, "one far out") for S in SIZES]


def draw(rng: np.random.Generator, S: int, m: int, rho: float | str) -> np.ndarray:
    """``[S, m]`` values of one case."""
    if rho == "one far out":
        y = rng.normal(size=(S, m))
        y[np.arange(S), rng.integers(0, m, S)] = SPIKE * rng.choice([-1.0, 1.0], S)
        return y
    return np.sqrt(rho) * rng.normal(size=(S, 1)) + np.sqrt(1.0 - rho) * rng.normal(size=(S, m))


def fresh_coverage(lam: np.ndarray, half: float, rho: float | str, m: int) -> np.ndarray:
    """Coverage of a fresh series' value, drawn at random, by the band scaled by ``lam``."""
    inside = lambda h: 2.0 * norm.cdf(h) - 1.0  # noqa: E731  N(0, 1) within +-h
    if rho == "one far out":
        return (1 - 1 / m) * inside(half * lam) + (half * lam >= SPIKE) / m
    return inside(half * lam)


def synthetic(reps: int, seed: int) -> list[tuple]:
    """Rows ``(S, m, rho, {rule: (mean coverage, 10% quantile, mean factor)})``."""
    rng = np.random.default_rng(seed)
    half = 2.0 * norm.ppf(0.95)  # the model's half-band, N(0, 2^2)
    rules = {
        "before": before,
        "now": conformal_scale,
        "one": one_a_series(rng),
        "mean": one_a_series(rng, DRAWS),
    }
    rows = []
    for S, m, rho in cases():
        groups = np.repeat(np.arange(S), m)
        lam: dict[str, list[float]] = {r: [] for r in RULES}
        for _ in range(reps):
            r = np.abs(draw(rng, S, m, rho)).reshape(-1) / half  # (S m,) series by series
            for name, rule in rules.items():
                lam[name].append(rule(r, 0.9, groups))
        out = {}
        for name, v in lam.items():
            v = np.array(v, dtype=float)
            cover = fresh_coverage(v, half, rho, m)
            out[name] = (cover.mean(), np.quantile(cover, 0.1), v.mean())
        rows.append((S, m, rho, out))
    return rows


def per_series(lead: np.ndarray, groups: np.ndarray, edges: np.ndarray) -> float:
    """Values a series holds in a bin, on average over the bins' series."""
    b = bin_index(edges, lead)
    counts = [np.unique(groups[b == i], return_counts=True)[1] for i in range(len(edges) + 1)]
    return float(np.mean(np.concatenate(counts)))


def fits(h: dict, S: int, splits: int, seed: int) -> dict:
    """Coverage, width and values a series per bin of each rule over random draws of ``S``
    calibration series from the held-out series ``h``, scored on the others."""
    rng, draws = np.random.default_rng(seed), np.random.default_rng(seed + 1)  # splits, rules
    n = len(h["role"])
    out: dict[str, list] = {r: [] for r in RULES}
    m = []
    for _ in range(splits):
        cal = np.zeros(n, dtype=bool)
        cal[rng.permutation(n)[:S]] = True
        pick = [[h[k][i] for i in np.flatnonzero(cal)] for k in KEYS]
        rest = [[h[k][i] for i in np.flatnonzero(~cal)] for k in KEYS]
        stats, target, lead = (np.concatenate(v) for v in pick)
        scores = calibration.band_scores(stats, target)  # (M, 1)
        groups = np.concatenate([np.full(len(y), i) for i, y in enumerate(pick[1])])
        for name in RULES:
            with rule_in_use(name, draws):
                found = lead_scales(scores, groups, lead)
            if found is None:
                raise SystemExit(f"{S} series could not be calibrated")
            out[name].append(cover_width(*rest, found)[:2])
        m.append(per_series(lead, groups, found[0]))
    return {"n": n, "m": float(np.mean(m)), **{r: np.array(v) for r, v in out.items()}}


def report(args: argparse.Namespace, syn: list, real: dict, wall: float) -> str:
    """The markdown tables."""
    cmd = " ".join(["`.venv/bin/python experiments/calibration_rule.py", *sys.argv[1:]]) + "`"
    lines = [
        f"Command: {cmd} ({wall:.0f} s on the shared 2-core machine).",
        "",
        f"Synthetic ({args.reps} draws a row): expected coverage of a fresh series' value "
        "(10% of draws), mean factor.",
        "",
        "| S | m | rho | " + " | ".join(RULES.values()) + " |",
        "|---|---|---|" + "---|" * len(RULES),
    ]
    for S, m, rho, out in syn:
        cells = [f"{c:.3f} ({q:.2f}), x{w:.2f}" for c, q, w in out.values()]
        lines.append(f"| {S} | {m} | {rho} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Fits ({args.splits} draws of S calibration series from the held-out ones, scored on "
        "the others): mean coverage (10% of draws / share below 0.80), mean width; m: values "
        "a series holds in a bin, on average.",
        "",
        "| checkpoint | held-out series | S | m | " + " | ".join(RULES.values()) + " |",
        "|---|---|---|---|" + "---|" * len(RULES),
    ]
    for (ck, S), r in real.items():
        cells = []
        for name in RULES:
            c, w = r[name][:, 0], r[name][:, 1]
            spread = f"{np.quantile(c, 0.1):.2f} / {(c < 0.8).mean():.2f}"
            cells.append(f"{c.mean():.3f} ({spread}), {w.mean():.3f}")
        lines.append(f"| `{ck}` | {r['n']} | {S} | {r['m']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run both studies and print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", nargs="*", default=[])
    p.add_argument("--data", default="data/fertility_worldbank.csv")
    p.add_argument("--n_samples", type=int, default=200)
    p.add_argument("--splits", type=int, default=300)
    p.add_argument("--reps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    syn = synthetic(args.reps, args.seed)
    real = {}
    for ck in args.ckpt:
        h = held_out(ck, args.data, args.n_samples, args.seed)
        for S in (s for s in SIZES if len(h["role"]) - s >= 20):
            real[ck, S] = fits(h, S, args.splits, args.seed)
    print(report(args, syn, real, time.perf_counter() - start))


if __name__ == "__main__":
    main()
