"""Does choosing the checkpoint on the validation series make the bands calibrated on them
over-optimistic? (``reports/calibration_notes.md``, 2026-11-25)

A fit keeps the checkpoint of least validation loss, and ``latentode predict`` calibrates it
on the same validation series. For each CSV checkpoint: forecast its validation and test
series once. Then ``--splits`` times: split the test series at random into an evaluation
half E and a calibration half C (series the checkpoint choice never saw), draw as many of
the validation series, V, calibrate by lead-time bin (as ``latentode predict``) on V and on
C, and score both on E. If the choice made the model look better on its validation series
than it is, V's factors are smaller and cover E less than C's: the statistic is the mean
coverage of V's bands minus C's.

The noise it is compared with: the same statistic where the held-out series' roles are
drawn at random (``--null`` draws of as many pseudo-validation series from all of them),
which is how far two random sets of series differ by chance; and the fits' seeds.

Usage (from the repository root; the checkpoints of ``reports/calibration.md``)::

    .venv/bin/python experiments/calibration_selection.py \\
        --ckpt runs/csv_seeds/keep5_d0_s0/checkpoints/best-*.ckpt ... \\
        --data data/fertility_worldbank.csv --n_samples 200 --splits 200 --null 200
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

from calibration import KEYS, cover_width, held_out  # noqa: E402

from latentode.calibration import band_scores, conformal_scale, lead_scales  # noqa: E402


def factors(h: dict, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lead-time bins and factors from the series ``idx`` (`lead_scales`, as ``predict``)."""
    stats, target, lead = (np.concatenate([h[k][i] for i in idx]) for k in KEYS)
    groups = np.concatenate([np.full(len(h["target"][i]), j) for j, i in enumerate(idx)])
    found = lead_scales(band_scores(stats, target), groups, lead)
    if found is None:
        raise SystemExit(f"{len(idx)} series could not be calibrated")
    return found


def one_factor(h: dict, idx: np.ndarray) -> float:
    """The series-weighted factor of every lead time from the series ``idx``."""
    stats, target = (np.concatenate([h[k][i] for i in idx]) for k in ("stats", "target"))
    groups = np.concatenate([np.full(len(h["target"][i]), j) for j, i in enumerate(idx)])
    return float(conformal_scale(band_scores(stats, target)[:, 0], groups=groups))


def contrast(h: dict, val: np.ndarray, test: np.ndarray, splits: int, rng) -> np.ndarray:
    """``[splits, 4]``: coverage and width on a random half E of ``test`` of the bands
    calibrated on as many of ``val`` as the other half C holds, then on C."""
    out = []
    for _ in range(splits):
        t = rng.permutation(test)
        held, c = t[: (len(t) + 1) // 2], t[(len(t) + 1) // 2 :]  # E, C
        v = rng.choice(val, size=len(c), replace=False)
        score = [[h[k][i] for i in held] for k in KEYS]
        row = [cover_width(*score, factors(h, s))[:2] for s in (v, c)]
        out.append(np.concatenate(row))
    return np.array(out)


def study(h: dict, splits: int, null: int, seed: int) -> dict:
    """The contrast on the fit's roles and on ``null`` random ones; the model's own band
    and the one factor on the validation and on the test series."""
    rng = np.random.default_rng(seed)
    val, test = np.flatnonzero(h["role"] == "val"), np.flatnonzero(h["role"] == "test")
    fit = contrast(h, val, test, splits, rng)
    every = np.concatenate([val, test])
    diffs, ratios = [], []
    for _ in range(null):
        p = rng.permutation(every)
        pv, pt = p[: len(val)], p[len(val) :]
        pseudo = contrast(h, pv, pt, max(1, splits // 4), rng)
        diffs.append((pseudo[:, 0] - pseudo[:, 2]).mean())
        ratios.append(one_factor(h, pv) / one_factor(h, pt))
    one = (np.zeros(0), np.ones((1, 1)))  # the model's own band
    own = [cover_width(*[[h[k][i] for i in s] for k in KEYS], one)[0] for s in (val, test)]
    return {
        "n": (len(val), len(test)),
        "fit": fit,
        "null": np.array(diffs),
        "null_ratio": np.array(ratios),
        "own": own,
        "one": (one_factor(h, val), one_factor(h, test)),
    }


def report(args: argparse.Namespace, results: dict, wall: float) -> str:
    """The markdown table."""
    cmd = " ".join(["`.venv/bin/python experiments/calibration_selection.py", *sys.argv[1:]])
    lines = [
        f"Command: {cmd}` ({wall:.0f} s on the shared 2-core machine).",
        "",
        f"Mean over {args.splits} splits of the test series into E (scored) and C; V: as many "
        "validation series as C. Null: the difference with the held-out series' roles drawn "
        f"at random ({args.null} draws; mean, 5% / 95%, and the share of draws below the "
        "fit's). Model's own: coverage of its 5-95% band on all validation / test series. One "
        "factor: the series-weighted factor of every lead from all validation / all test "
        "series, their ratio and its null 5% / 95% (below 1: the validation series look "
        "better than the test series).",
        "",
        "| checkpoint | val / test series | coverage on E, calibrated on V | on C | V - C | "
        "width on E, V / C | null V - C | share of null below | model's own, val / test | "
        "one factor, val / test | ratio (null) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ck, r in results.items():
        f, z = r["fit"], r["null"]
        d = (f[:, 0] - f[:, 2]).mean()
        lo, hi = np.quantile(z, [0.05, 0.95])
        a, b = r["one"]
        rlo, rhi = np.quantile(r["null_ratio"], [0.05, 0.95])
        lines.append(
            f"| `{ck}` | {r['n'][0]} / {r['n'][1]} | {f[:, 0].mean():.3f} | {f[:, 2].mean():.3f} "
            f"| {d:+.3f} | {f[:, 1].mean():.3f} / {f[:, 3].mean():.3f} | "
            f"{z.mean():+.3f} ({lo:+.3f} / {hi:+.3f}) | {(z < d).mean():.2f} | "
            f"{r['own'][0]:.3f} / {r['own'][1]:.3f} | {a:.3f} / {b:.3f} | "
            f"{a / b:.2f} ({rlo:.2f} / {rhi:.2f}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the study for each checkpoint and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", nargs="+", required=True)
    p.add_argument("--data", default="data/fertility_worldbank.csv")
    p.add_argument("--n_samples", type=int, default=200)
    p.add_argument("--splits", type=int, default=200)
    p.add_argument("--null", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    results = {}
    for ck in args.ckpt:
        h = held_out(ck, args.data, args.n_samples, args.seed)
        results[ck] = study(h, args.splits, args.null, args.seed)
    print(report(args, results, time.perf_counter() - start))


if __name__ == "__main__":
    main()
