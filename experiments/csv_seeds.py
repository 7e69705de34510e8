"""Variants of `configs/csv.yaml` over several series splits and seeds, single and pooled.

Fits each variant of ``VARIANTS`` on the shipped fertility data for each (split, seed) of
``--fits`` (``SPLIT:SEED,SEED,...``; the split is ``--data.init_args.seed``, the seed
``--seed_everything``), two fits at a time with one thread each, and scores every best
checkpoint as ``latentode test`` does (100 paths, calibrated on the split's validation series,
scored on its test series, beside the last-value and linear-trend baselines): alone, the
first two seeds of a split pooled, and all of a split's seeds pooled (`latentode.ensemble`).
Fits already on disk under ``--runs`` are reused. The variants: the default (training
histories thinned, ``train_keep: 0.5``; session 26), the session-24 default (the same without
thinning: latent state inferred at each series' last observation, level = its last value), the
session-23 default (latent state at the first observation, level = the mean), and the earlier
half-size model. Each single fit is also scored on two harder tasks (`robustness`): the
forecast from histories observed half as often, and gap filling over whole histories.

Usage (reports/csv_seeds.md, session 26; about 40 minutes for the 28 fits on 2 cores)::

    .venv/bin/python experiments/csv_seeds.py --output reports/csv_seeds.md
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report_notes import publish  # noqa: E402

from latentode.calibration import calibrate  # noqa: E402
from latentode.cli.forecaster import _load_forecaster  # noqa: E402
from latentode.evaluate import (  # noqa: E402
    COLUMNS,
    _baselines,
    _model_row,
    _scores,
    case_seeds,
    case_stats,
    evaluate,
    half_observed,
    held_out_cases,
    scored_series,
)
from latentode.predictive import band_levels  # noqa: E402

LATENTODE = str(Path(sys.executable).with_name("latentode"))
KEEP_ALL = ["--data.init_args.train_keep", "1.0"]  # the defaults before session 26
FIRST_MEAN = [
    *("--model.init_args.config.anchor", "first"),
    *("--model.init_args.config.center", "mean"),
    *KEEP_ALL,
]
VARIANTS = {  # name in the report: (name of its run directories, overrides of configs/csv.yaml)
    "train_keep 0.5, anchor last, center last (default)": ("keep5", []),
    "train_keep 1, anchor last, center last (session 24)": ("last16", KEEP_ALL),
    "anchor first, center mean (session 23)": ("latent16", FIRST_MEAN),
    "latent 8, anchor first, center mean (earlier)": (
        "latent8",
        [
            *("--model.init_args.config.latent_dim", "8"),
            *("--model.init_args.config.encoder_hidden", "32"),
            *("--model.init_args.config.dynamics_hidden", "64"),
            *("--model.init_args.config.decoder_hidden", "32"),
            *FIRST_MEAN,
        ],
    ),
}


def run_dir(runs: Path, variant: str, split: int, seed: int) -> Path:
    return runs / f"{VARIANTS[variant][0]}_d{split}_s{seed}"


def best(root: Path) -> Path | None:
    found = sorted((root / "checkpoints").glob("best-*.ckpt"))
    return found[-1] if found else None


def fit(data: str, root: Path, variant: str, split: int, seed: int) -> float:
    """One ``latentode fit`` (skipped when its best checkpoint exists): wall seconds."""
    if best(root) is not None:
        return float("nan")
    cmd = [LATENTODE, "fit", "--config", "configs/csv.yaml", "--data.init_args.path", data]
    cmd += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    cmd += ["--data.init_args.seed", str(split), "--seed_everything", str(seed)]
    cmd += VARIANTS[variant][1]
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def robustness(model, state, table) -> dict[str, float]:
    """Forecast MSE from histories observed half as often, and gap filling over the whole
    history (MSE, the model's own 5-95% coverage; linear interpolation's MSE)."""
    series = scored_series(table, state)
    holdout, history = float(state.get("holdout") or 0.1), state.get("history")
    thin = [
        half_observed(c) for c in held_out_cases(table, series, holdout, history, "extrapolation")
    ]
    # Gap filling over whole histories: `latentode test`'s interpolation cases with the
    # held-out window reaching back to the first observation (an infinite holdout).
    gaps = held_out_cases(table, series, math.inf, None, "interpolation")
    out = {}
    for name, cases in (("thinned forecast", thin), ("gaps", gaps)):
        stats = case_stats(model, cases, state, 100, case_seeds(0, table, cases, name))
        target = np.concatenate([c.target for c in cases])  # (M, D)
        scored = _model_row("", "", stats, target, band_levels(None))
        scores = dict(zip(COLUMNS, scored, strict=True))
        out[name], coverage = scores["mse"], scores["coverage90"]
        if name == "gaps":
            out["gaps coverage"] = coverage
            lin = [_baselines(c, "interpolation", None)["linear interpolation"] for c in cases]
            out["gaps linear"] = _scores(np.concatenate(lin), target)[0]
    return out


def score(ckpts: list[Path], data: str, more: bool = False) -> dict[str, float]:
    """``latentode test``'s numbers for one checkpoint or a pool of several (``more``: and
    `robustness`'s)."""
    model, state, table = _load_forecaster([str(c) for c in ckpts], data)
    cal = calibrate(model, table, state, n_samples=100, seed=0)
    frame = evaluate(model, table, state, n_samples=100, seed=0, calibration=cal)
    row = frame.set_index(["task", "method"])
    ext, cal_row = row.loc[("extrapolation", "latent ODE")], None
    if cal.scale is not None:
        cal_row = row.loc[("extrapolation", "latent ODE, calibrated bands")]
    extra = robustness(model, state, table) if more else {}
    return {
        **extra,
        "forecast": float(ext.mse),
        "last value": float(row.loc[("extrapolation", "last value")].mse),
        "trend": float(row.loc[("extrapolation", "linear trend")].mse),
        "interpolation": float(row.loc[("interpolation", "latent ODE")].mse),
        "linear": float(row.loc[("interpolation", "linear interpolation")].mse),
        "coverage": float("nan") if cal_row is None else float(cal_row.coverage90),
        "width": float("nan") if cal_row is None else float(cal_row.width90),
    }


def parse_fits(spec: list[str]) -> dict[int, list[int]]:
    out = {}
    for item in spec:
        split, seeds = item.split(":")
        out[int(split)] = [int(s) for s in seeds.split(",")]
    return out


def fmt(r: dict[str, float]) -> str:
    return f"{r['forecast']:.4f} ({r['forecast'] / r['last value']:.2f})"


def report(fits, singles, pools, seconds) -> str:
    variants = list(VARIANTS)
    out = [
        "# `configs/csv.yaml` over series splits and seeds, single fits and pooled",
        "",
        f"Command: `.venv/bin/python experiments/csv_seeds.py {' '.join(sys.argv[1:])}` "
        f"(wall time of this invocation {seconds / 60:.1f} min on a shared 2-core CPU; fits "
        "found under the runs directory are reused).",
        "",
        "Data: `data/fertility_worldbank.csv`, 210 yearly series; a split (`--data.init_args"
        ".seed`) puts 21 series in validation and 21 in test; each test series is conditioned "
        "on its history and scored on its last 10% of years (`latentode test`, 100 paths). "
        "Cells: forecast MSE (births per woman squared) and, in brackets, its ratio to last "
        "value's on the same series (below 1: better). The linear trend baseline continues "
        "each series' last value along the least-squares slope of its last years, as many as "
        "the forecast reaches ahead (`latentode test`'s `linear trend` row).",
        "",
        "## Forecast MSE per fit",
        "",
        "| split (last value; linear trend) | " + " | ".join(variants) + " |",
        "|---" * (len(variants) + 1) + "|",
    ]
    for split, seeds in fits.items():
        first = singles[(variants[0], split, seeds[0])]
        lv, tr = first["last value"], first["trend"]
        base = f"{lv:.4f}; {tr:.4f} ({tr / lv:.2f})"
        seed_list = " / ".join(map(str, seeds))
        cells = [" / ".join(fmt(singles[(s, split, seed)]) for seed in seeds) for s in variants]
        out.append(f"| {split} ({base}), seeds {seed_list} | " + " | ".join(cells) + " |")
    for name, key in (
        ("mean ratio of the fits", "ratio"),
        ("fits better than last value", "wins"),
        ("linear trend: mean ratio over the fits' splits", "trend"),
        ("fits better than the linear trend", "trend wins"),
        ("interpolation MSE, mean of the fits", "interpolation"),
        ("linear interpolation, mean over the splits", "linear"),
        ("calibrated coverage, mean (lowest)", "coverage"),
        ("calibrated band width, mean", "width"),
        ("forecast MSE from half-observed histories, mean of the fits", "thinned"),
        ("gap filling over whole histories: MSE, mean (highest)", "gaps"),
        ("gap filling: the model's own 5-95% coverage, mean (lowest)", "gaps coverage"),
        ("gap filling: linear interpolation's MSE, mean over the splits", "gaps linear"),
    ):
        cells = []
        for s in variants:
            rs = [r for (v, _, _), r in singles.items() if v == s]
            ratio = [r["forecast"] / r["last value"] for r in rs]
            cells.append(
                {
                    "ratio": f"{np.mean(ratio):.2f}",
                    "wins": f"{sum(x < 1 for x in ratio)} of {len(rs)}",
                    "trend": f"{np.mean([r['trend'] / r['last value'] for r in rs]):.2f}",
                    "trend wins": f"{sum(r['forecast'] < r['trend'] for r in rs)} of {len(rs)}",
                    "interpolation": f"{np.mean([r['interpolation'] for r in rs]):.3f}",
                    "linear": f"{np.mean([r['linear'] for r in rs]):.5f}",
                    "coverage": f"{np.nanmean([r['coverage'] for r in rs]):.2f} "
                    f"({np.nanmin([r['coverage'] for r in rs]):.2f})",
                    "width": f"{np.nanmean([r['width'] for r in rs]):.2f}",
                    "thinned": f"{np.mean([r['thinned forecast'] for r in rs]):.4f}",
                    "gaps": f"{np.mean([r['gaps'] for r in rs]):.3f} "
                    f"({np.max([r['gaps'] for r in rs]):.3f})",
                    "gaps coverage": f"{np.mean([r['gaps coverage'] for r in rs]):.2f} "
                    f"({np.min([r['gaps coverage'] for r in rs]):.2f})",
                    "gaps linear": f"{np.mean([r['gaps linear'] for r in rs]):.5f}",
                }[key]
            )
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Pooled fits (`--ckpt_path A B ...`)",
        "",
        "| split, pooled seeds | "
        + " | ".join(
            f"{s}: forecast (ratio) / interpolation / calibrated coverage, width" for s in variants
        )
        + " |",
        "|---" * (len(variants) + 1) + "|",
    ]
    for (split, seeds), by_variant in pools.items():
        cells = [
            f"{fmt(r)} / {r['interpolation']:.3f} / {r['coverage']:.2f}, {r['width']:.2f}"
            for r in (by_variant[s] for s in variants)
        ]
        out.append(f"| {split}, seeds {' + '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    pairs = [(k, v) for k, v in pools.items() if len(k[1]) == 2]
    cells = [
        f"{np.mean([v[s]['forecast'] / v[s]['last value'] for _, v in pairs]):.2f}"
        for s in variants
    ]
    out.append("| mean ratio of the pooled pairs | " + " | ".join(cells) + " |")
    cells = [
        f"{sum(v[s]['forecast'] < v[s]['trend'] for _, v in pairs)} of {len(pairs)}"
        for s in variants
    ]
    out.append("| pooled pairs better than the linear trend | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    """Fit what is missing, score every fit and pool, write the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/fertility_worldbank.csv")
    p.add_argument("--fits", nargs="+", default=["0:0,1,2", "1:0,1", "2:0,1"])
    p.add_argument("--runs", default="runs/csv_seeds")
    p.add_argument("--output", default=None)
    args = p.parse_args()
    start = time.perf_counter()
    fits, runs = parse_fits(args.fits), Path(args.runs)
    jobs = [(s, split, seed) for split, seeds in fits.items() for seed in seeds for s in VARIANTS]
    with ThreadPoolExecutor(2) as pool:
        took = list(pool.map(lambda j: fit(args.data, run_dir(runs, *j), *j), jobs))
    for j, t in zip(jobs, took, strict=True):
        print(f"fit {j}: {'reused' if np.isnan(t) else f'{t:.0f} s'}", flush=True)
    singles = {j: score([best(run_dir(runs, *j))], args.data, more=True) for j in jobs}
    pools = {}
    for split, seeds in fits.items():
        for chosen in {tuple(seeds[:2]), tuple(seeds)}:
            if len(chosen) < 2:
                continue
            pools[(split, chosen)] = {
                s: score([best(run_dir(runs, s, split, seed)) for seed in chosen], args.data)
                for s in VARIANTS
            }
    pools = dict(sorted(pools.items(), key=lambda kv: (kv[0][0], len(kv[0][1]))))
    text = report(fits, singles, pools, time.perf_counter() - start)
    out = publish(text, args.output)
    if out is not None:
        pd.DataFrame(
            [{"variant": k[0], "split": k[1], "seed": k[2], **v} for k, v in singles.items()]
        ).to_csv(out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
