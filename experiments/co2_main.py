"""The main job: fit the Mauna Loa CO2 record, score the held-out two years, forecast them.

Run by ``make main`` (after the environment is set up)::

    .venv/bin/python experiments/co2_main.py

Steps, each through the real ``latentode`` command line:

1. ``latentode fit --config configs/co2.yaml --seed_everything S`` into ``runs/co2/seedS``
   for each seed of ``--seeds`` (0 1 2; the run directory is removed first, so a stale
   checkpoint is never picked up). Training uses the weeks before the last two 2-year blocks;
   the first block (validation) selects each fit's checkpoint.
2. ``latentode test`` on the chosen checkpoints pooled (``--ckpt_path A B C``, an equal-weight
   mixture of their predictives): the last 2-year block (the test block), errors beside naive
   baselines, written to ``reports/co2_scores.csv``; then each fit alone
   (``reports/co2_members.csv``), to show the spread over seeds.
3. ``latentode predict`` with the pooled checkpoints from a copy of the file truncated at the
   test block's start (``runs/co2/history.csv``): 104 weekly steps,
   ``reports/co2_forecast.csv`` and the command's own plot under ``reports/co2/``.
4. ``reports/co2_forecast.png`` (the forecast with the held-out weeks drawn over it) and
   ``reports/co2.md`` (commands, times, scores, coverage, figures).

Outputs are only ``runs/co2/`` and ``reports/co2*``; re-running replaces them. Torch runs
single-threaded unless ``OMP_NUM_THREADS`` is set (the model is small; more threads do not
pay on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml
from report_notes import notes

from latentode.data.csv import read_series_csv

ROOT = Path(__file__).resolve().parents[1]
LATENTODE = str(Path(sys.executable).with_name("latentode"))


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (as the report names it),
    else as it is (``--reports`` elsewhere; ``--run_dir`` is always under ``runs/``)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run(cmd: list[str], log: list[dict]) -> str:
    """Run one command (echoed), record its wall and CPU time, return its stdout."""
    print("$ " + " ".join(cmd), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        sys.exit(f"co2_main: command failed with status {proc.returncode}: {' '.join(cmd)}")
    log.append(
        {
            "command": " ".join(cmd),
            "wall_s": wall,
            "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime,
        }
    )
    return proc.stdout


def pick_checkpoint(run_dir: Path, which: str) -> Path:
    """``best``: the checkpoint with the lowest val/mse; ``last``: last.ckpt."""
    folder = run_dir / "checkpoints"
    found = sorted(folder.glob("best-*.ckpt")) if which == "best" else [folder / "last.ckpt"]
    if not found or not found[0].is_file():
        sys.exit(f"co2_main: no {which} checkpoint in {folder}.")
    return found[0]


def write_history(data: Path, holdout: float, out: Path) -> tuple[float, str]:
    """Copy the rows of ``data`` before the test block (the last ``holdout`` years observed).

    Returns:
        The test block's start on the file's float time axis (years) and as a date.
    """
    table = read_series_csv(data, series_column=None, time_unit="Y")
    t, x = table.series(0)
    t_obs = t[~np.isnan(x).all(axis=1)]
    t_test = float(t_obs[-1] - holdout)  # as latentode test splits it
    raw = pd.read_csv(data, dtype=str, keep_default_na=False)
    keep = table.encoding.encode(raw["time"]) < t_test
    out.parent.mkdir(parents=True, exist_ok=True)
    raw[keep].to_csv(out, index=False)
    return t_test, table.encoding.format(np.array([t_test]))[0]


def overlay_plot(data: Path, forecast_csv: Path, t_test_date: str, out: Path) -> dict:
    """The forecast with the held-out truth over it; returns the forecast's own errors."""
    obs = pd.read_csv(data, parse_dates=["time"]).dropna(subset=["co2"])
    fc = pd.read_csv(forecast_csv, parse_dates=["time"])
    start = pd.Timestamp(t_test_date)
    hist = obs[(obs.time < start) & (obs.time >= start - pd.DateOffset(years=6))]
    truth = obs[obs.time >= start]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.axvspan(hist.time.iloc[0], start, color="0.93", label="history (conditioned on)")
    ax.plot(hist.time, hist.co2, ".", ms=3, color="0.3", label="observed")
    ax.fill_between(fc.time, fc.q05, fc.q95, color="C0", alpha=0.3, lw=0, label="5-95%")
    ax.plot(fc.time, fc["mean"], color="C0", lw=1.5, label="forecast mean")
    ax.plot(truth.time, truth.co2, ".", ms=4, color="C3", label="held out (actual)")
    ax.set_ylabel("CO2 (ppmv)")
    ax.set_title("Mauna Loa weekly CO2: latent ODE forecast of the two held-out years")
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    both = truth.merge(fc, on="time")
    err = both["mean"] - both["co2"]
    inside = (both.q05 <= both.co2) & (both.co2 <= both.q95)
    return {
        "n": len(both),
        "mse": float((err**2).mean()),
        "mae": float(err.abs().mean()),
        "coverage90": float(inside.mean()),
    }


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table of the ``latentode test`` scores."""
    lines = ["| task | method | MSE (ppmv²) | MAE (ppmv) | 90% coverage | values |"]
    lines.append("|---|---|---:|---:|---:|---:|")
    for r in frame.itertuples(index=False):
        cov = "" if pd.isna(r.coverage90) else f"{r.coverage90:.2f}"
        lines.append(
            f"| {r.task} | {r.method} | {r.mse:.3f} | {r.mae:.3f} | {cov} | {r.n_values} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Fit, test, predict, plot and write the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/co2.yaml")
    p.add_argument("--run_dir", default="runs/co2")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="one fit per seed, pooled (one seed: a single fit)",
    )
    p.add_argument("--reports", default="reports")
    p.add_argument("--skip_fit", action="store_true", help="reuse the run directory's fit")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    config = yaml.safe_load((ROOT / args.config).read_text())
    data = Path(config["data"]["init_args"]["path"])
    holdout = float(config["data"]["init_args"]["holdout"])
    run_dir, reports = Path(args.run_dir), Path(args.reports)
    if run_dir.resolve() in (ROOT, ROOT / "runs") or not str(args.run_dir).startswith("runs/"):
        sys.exit("co2_main: --run_dir must be a folder under runs/ (it is replaced).")
    reports.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []
    start = time.perf_counter()

    if not args.skip_fit:
        shutil.rmtree(ROOT / run_dir, ignore_errors=True)
        for seed in args.seeds:
            run(
                [
                    *(LATENTODE, "fit", "--config", args.config),
                    *("--seed_everything", str(seed)),
                    *("--trainer.default_root_dir", str(run_dir / f"seed{seed}")),
                    *("--trainer.enable_progress_bar", "false"),
                ],
                log,
            )
    ckpts = [pick_checkpoint(ROOT / run_dir / f"seed{s}", args.checkpoint) for s in args.seeds]
    pooled = [shown(c) for c in ckpts]
    scores_csv = reports / "co2_scores.csv"
    table_text = run(
        [
            *(LATENTODE, "test", "--ckpt_path", *pooled, "--data.path", str(data)),
            *("--output", str(scores_csv), "--overwrite"),
        ],
        log,
    )
    members = []
    for seed, ckpt in zip(args.seeds, pooled, strict=True):
        out = run_dir / f"seed{seed}" / "scores.csv"
        run(
            [
                *(LATENTODE, "test", "--ckpt_path", ckpt, "--data.path", str(data)),
                *("--output", str(out), "--overwrite"),
            ],
            log,
        )
        members.append(pd.read_csv(ROOT / out).assign(seed=seed, checkpoint=ckpt))
    member_rows = None  # each fit's latent ODE rows, when there are several fits
    if len(members) > 1:
        member_rows = pd.concat(members)
        member_rows = member_rows[member_rows.method.str.startswith("latent ODE")]
        member_rows.to_csv(ROOT / reports / "co2_members.csv", index=False)
    history = run_dir / "history.csv"
    _, t_test_date = write_history(ROOT / data, holdout, ROOT / history)
    forecast_csv = reports / "co2_forecast.csv"
    run(
        [
            *(LATENTODE, "predict", "--ckpt_path", *pooled, "--data.path", str(history)),
            *("--horizon", "104W", "--step", "1W", "--output", str(forecast_csv)),
            *("--plot", str(reports / "co2"), "--overwrite"),
        ],
        log,
    )
    own = overlay_plot(
        ROOT / data, ROOT / forecast_csv, t_test_date, ROOT / reports / "co2_forecast.png"
    )
    total = time.perf_counter() - start
    scores = pd.read_csv(ROOT / scores_csv)
    write_report(
        args, config, pooled, scores, member_rows, table_text, own, t_test_date, log, total
    )


def members_table(members: pd.DataFrame, pooled: pd.DataFrame) -> str:
    """Each fit's latent ODE errors (MSE, ppmv²) beside the pooled ones."""
    tasks = [
        ("extrapolation", "latent ODE", "forecast"),
        ("extrapolation", "latent ODE, half-observed history", "half-observed history"),
        ("interpolation", "latent ODE", "interpolation"),
        ("history gaps", "latent ODE", "history gaps"),
    ]
    head = "| fit | " + " | ".join(label for *_, label in tasks) + " | forecast coverage |"
    lines = [head, "|---|" + "---:|" * (len(tasks) + 1)]

    def row(name: str, frame: pd.DataFrame) -> str:
        cells = []
        for task, method, _ in tasks:
            hit = frame[(frame.task == task) & (frame.method == method)]
            cells.append(f"{hit.mse.iloc[0]:.3f}" if len(hit) else "")
        cover = frame[(frame.task == "extrapolation") & (frame.method == "latent ODE")]
        return f"| {name} | " + " | ".join(cells) + f" | {cover.coverage90.iloc[0]:.2f} |"

    for seed, frame in members.groupby("seed", sort=True):
        lines.append(row(f"seed {seed} alone", frame))
    lines.append(row(f"**pooled ({members.seed.nunique()} fits)**", pooled))
    return "\n".join(lines)


def write_report(
    args: argparse.Namespace,
    config: dict,
    ckpts: list[str],
    scores: pd.DataFrame,
    members: pd.DataFrame | None,
    table_text: str,
    own: dict,
    t_test_date: str,
    log: list[dict],
    total: float,
) -> None:
    """``reports/co2.md``."""
    ext = scores[scores.task == "extrapolation"].set_index("method")
    model = ext.loc["latent ODE"]
    lines = [
        "# Mauna Loa CO2: latent ODE forecast of the two held-out years",
        "",
        "Regenerate with `make main` (or `.venv/bin/python experiments/co2_main.py` once the",
        "environment exists). Data: `data/co2_mauna_loa_weekly.csv`, weekly, 1958-03-29 to",
        f"2001-12-29. Test block: the last two years, from {t_test_date}; validation block: the",
        "two years before it (selects the checkpoint); training windows: everything before that.",
        f"Config: `{args.config}`, one fit per seed ({', '.join(map(str, args.seeds))}); "
        f"checkpoints ({args.checkpoint} by val/mse): "
        + ", ".join(f"`{c}`" for c in ckpts)
        + "."
        + (
            " The latent ODE rows pool them: an equal-weight mixture of their posterior "
            "predictives (`--ckpt_path A B C`, `latentode/ensemble.py`)."
            if len(ckpts) > 1
            else ""
        ),
        "",
        "## Held-out errors (`latentode test`, ppmv)",
        "",
        markdown_table(scores),
        "",
        "Extrapolation: condition on the history before the test block, forecast its 2 years.",
        "Interpolation: hide every other week of the test block, reconstruct it from the rest.",
        f"History gaps: hide every other week of the {config['data']['init_args']['history']:g} "
        "years the forecast conditions on (the first and last kept), reconstruct them from the "
        "rest.",
        "",
    ]
    for name in [n for n in ext.index if not n.startswith("latent ODE")]:  # the baselines
        b = ext.loc[name]
        verdict = "beats" if model.mse < b.mse and model.mae < b.mae else "does not beat"
        lines.append(
            f"- The latent ODE {verdict} **{name}** on the test block: MSE {model.mse:.3f} vs "
            f"{b.mse:.3f}, MAE {model.mae:.3f} vs {b.mae:.3f}."
        )
    lines += [
        f"- 90% interval coverage of the forecast: {model.coverage90:.2f} "
        f"({int(model.n_values)} held-out weeks; 0.90 is calibrated).",
        "",
    ]
    if members is not None:
        lines += [
            "## Each fit alone (`latentode test` on one checkpoint; MSE, ppmv²)",
            "",
            members_table(members, scores),
            "",
            "One series gives one validation block to choose each fit's checkpoint on, and the",
            "test block's errors rise and fall together, so one fit's score depends on its seed;",
            "the pooled forecast is the job's result. `reports/co2_members.csv` has every row.",
            "",
        ]
    lines += [
        "## Forecast (`latentode predict`, 104 weekly steps)",
        "",
        f"`reports/co2_forecast.csv` (conditioned on `{args.run_dir}/history.csv`, the file cut",
        f"at {t_test_date}). Against the held-out weeks: MSE {own['mse']:.3f}, "
        f"MAE {own['mae']:.3f}, 90% coverage {own['coverage90']:.2f} ({own['n']} weeks; "
        "200 posterior paths per fit, so a little different from the test table's 100).",
        "",
        "![forecast with the held-out weeks](co2_forecast.png)",
        "",
        "The command's own plot (history and forecast only): `reports/co2/`.",
        "",
        "## Commands and times",
        "",
        "| command | wall (s) | user CPU (s) |",
        "|---|---:|---:|",
    ]
    for r in log:
        lines.append(f"| `{r['command']}` | {r['wall_s']:.1f} | {r['user_s']:.1f} |")
    lines += [
        "",
        f"Total of the job after set-up: {total:.1f} s wall. Torch threads: "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}. Wall times depend on what else",
        "the machine runs; user CPU seconds do much less.",
        "",
        "```",
        table_text.rstrip(),
        "```",
        "",
    ]
    out = ROOT / args.reports / "co2.md"
    out.write_text("\n".join(lines) + notes(out))
    print(f"co2_main: wrote {shown(out)} ({total:.1f} s)")


if __name__ == "__main__":
    main()
