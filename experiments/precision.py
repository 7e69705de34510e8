"""Training precision: the spirals latent ODE fitted under each of Lightning's precisions.

    .venv/bin/python experiments/precision.py --output reports/precision.md

Each precision x seed is one real ``latentode fit --config configs/spirals.yaml`` (60 epochs,
480 steps, validated every 20 epochs) into ``runs/precision/<precision>_s<seed>``, two at a
time, one thread each. Read from each fit's ``metrics.csv``: the mean function evaluations per
training step (forward and backward), the last validation MSE, and the wall time; then
``16-true``, which the latent ODE systems refuse, is run to show its message. On a CPU
mixed precision buys no speed (bfloat16 matrix products are not faster here), and Lightning
runs ``16-mixed`` there as ``bf16-mixed``; the point is that each precision runs, and what it
costs in solver steps, which carries over to a GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from report_notes import publish

ROOT = Path(__file__).resolve().parents[1]
LATENTODE = str(Path(sys.executable).with_name("latentode"))
PRECISIONS = ["32-true", "64-true", "bf16-mixed"]  # 16-mixed on a CPU is bf16-mixed (Lightning)


def fit(precision: str, seed: int, epochs: int, run_dir: Path) -> dict[str, float | str]:
    """One fit; its scores from its metrics log."""
    root = run_dir / f"{precision}_s{seed}"
    shutil.rmtree(root, ignore_errors=True)
    cmd = [
        LATENTODE, "fit", "--config", "configs/spirals.yaml", "--seed_everything", str(seed),
        "--trainer.precision", precision, "--trainer.max_epochs", str(epochs),
        "--trainer.check_val_every_n_epoch", str(epochs // 3),
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    m = pd.read_csv(root / "logs" / "version_0" / "metrics.csv")
    val = m.dropna(subset=["val/mse"])["val/mse"].tolist()
    return {
        "precision": precision,
        "seed": seed,
        "wall": wall,
        "nfe_fwd": m["train/nfe_forward"].dropna().mean(),
        "nfe_bwd": m["train/nfe_backward"].dropna().mean(),
        "val_mse_path": " / ".join(f"{v:.3f}" for v in val),
    }


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def refused(run_dir: Path) -> tuple[int, str]:
    """``16-true``: the exit status and the last line of its message."""
    root = run_dir / "16-true"
    shutil.rmtree(root, ignore_errors=True)
    cmd = [
        LATENTODE, "fit", "--config", "configs/spirals.yaml", "--trainer.precision", "16-true",
        "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(root),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
    return done.returncode, done.stderr.strip().splitlines()[-1]


def report(rows: pd.DataFrame, status: int, message: str, args: argparse.Namespace) -> str:
    """The markdown report."""
    base = rows[rows.precision == "32-true"].set_index("seed")
    lines = [
        "# Training precision: the spirals latent ODE under each Lightning precision",
        "",
        f"Command: `.venv/bin/python experiments/precision.py --epochs {args.epochs} --seeds "
        f"{' '.join(map(str, args.seeds))} --precisions {' '.join(args.precisions)} "
        f"--output {args.output}` (total wall "
        f"{args.total:.0f} s on a shared 2-core CPU, two fits at a time, one thread each).",
        "",
        f"Each row: `latentode fit --config configs/spirals.yaml --trainer.precision P "
        f"--seed_everything S --trainer.max_epochs {args.epochs}` (dopri5, rtol 1e-3, atol "
        "1e-4, checkpoint gradient; 8 steps per epoch). NFE: the mean function evaluations "
        "per training step; val MSE: at each validation (every third of the run). Ratios are "
        "to the 32-true fit of the same seed in this run.",
        "",
        "| precision | seed | wall s | wall / 32-true | NFE fwd | NFE bwd | NFE / 32-true | "
        "val MSE (each validation) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows.itertuples():
        b = base.loc[r.seed]
        lines.append(
            f"| {r.precision} | {r.seed} | {r.wall:.1f} | {r.wall / b.wall:.2f} | "
            f"{r.nfe_fwd:.1f} | {r.nfe_bwd:.1f} | {r.nfe_fwd / b.nfe_fwd:.2f} | "
            f"{r.val_mse_path} |"
        )
    lines += [
        "",
        f"`--trainer.precision 16-true` (and `bf16-true`): exit status {status},",
        "",
        f"> {message}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the fits and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--precisions", nargs="+", default=PRECISIONS)
    parser.add_argument("--run_dir", default="runs/precision")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    run_dir = ROOT / args.run_dir
    start = time.perf_counter()
    jobs = [(p, s) for s in args.seeds for p in args.precisions]
    with ThreadPoolExecutor(2) as pool:
        rows = list(pool.map(lambda job: fit(*job, args.epochs, run_dir), jobs))
    status, message = refused(run_dir)
    args.total = time.perf_counter() - start
    publish(report(pd.DataFrame(rows), status, message, args), args.output)


if __name__ == "__main__":
    main()
