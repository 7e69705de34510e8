"""Peak memory and wall time of ``latentode predict`` as the forecast grows.

Writes 12 irregular hourly series with two channels (seeded; ``--channels N``: N, the
others further daily cycles) to a temporary folder, fits
``configs/csv.yaml`` on them for a few steps (memory does not depend on how well the model is
trained), then runs ``latentode predict`` with 200 paths per series at growing numbers of
forecast times, each in a fresh process that reports its own peak resident set size
(``VmHWM``) and the resident set size after loading (the forecast's times, read by a first
predict of one step). The last row is a request past `draws_per_call` for one series
(``--step 1s`` over 30 days), which is refused.

``--baseline DIR`` measures another checkout of latentode (say ``git worktree add /tmp/old
cc1e6cd``) on the same checkpoint and file in the same run, one process after the other;
the refused request is not run there (before session 30's budget it filled the memory until
the kernel killed the process).

Usage::

    python benchmarks/predict_memory.py --output reports/predict_memory.md
    python benchmarks/predict_memory.py --baseline /tmp/old --output reports/predict_memory.md
    python benchmarks/predict_memory.py --channels 48 --output reports/predict_memory_48.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

# (label, extra predict arguments): 12 series each, 200 paths
CASES = [
    ("1 step (loading)", ["--horizon", "1h", "--step", "1h"]),
    ("200 times", ["--horizon", "200min", "--step", "1min"]),
    ("2,000 times", ["--horizon", "2000min", "--step", "1min"]),
    ("2,000 times, --importance", ["--horizon", "2000min", "--step", "1min", "--importance"]),
    ("20,000 times", ["--horizon", "20000min", "--step", "1min"]),
    ("2,592,000 times (--step 1s, 30D)", ["--horizon", "30D", "--step", "1s"]),
]

_CHILD = f"""
import json, sys, time
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
from procmem import status_kib
from latentode.cli import main
t = time.perf_counter()
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
wall = time.perf_counter() - t
print("RESULT " + json.dumps({{"rc": rc, "peak_kib": status_kib("VmHWM"), "wall_s": wall}}))
"""


def write_series(
    path: Path, n_series: int = 12, n_points: int = 300, seed: int = 0, n_channels: int = 2
) -> None:
    """Irregular hourly series with a daily cycle in ``n_channels`` channels (temperature,
    humidity, then further cycles of other phases)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_series):
        hours = np.sort(rng.choice(np.arange(3 * n_points), n_points, replace=False))
        t = pd.Timestamp("2023-03-01") + pd.to_timedelta(hours, unit="h")
        phase = rng.uniform(0, 2 * np.pi)
        temp = 15 + 5 * np.sin(2 * np.pi * hours / 24 + phase) + rng.normal(0, 0.5, n_points)
        hum = 50 + 10 * np.cos(2 * np.pi * hours / 24 + phase) + rng.normal(0, 1.0, n_points)
        frame = pd.DataFrame({"series_id": f"s{s:02d}", "time": t, "temp": temp, "hum": hum})
        for c in range(2, n_channels):
            cycle = np.sin(2 * np.pi * hours / 24 + phase + c)
            frame[f"c{c}"] = cycle + rng.normal(0, 0.1, n_points)
        rows.append(frame)
    pd.concat(rows).to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%S")


def run_child(args: list[str], repo: Path = ROOT) -> dict:
    """One ``latentode`` command in a fresh process, importing the package of the checkout
    ``repo``: its exit code, peak RSS and wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env, cwd=repo
    )
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
    if not line and res.returncode < 0:  # the kernel's out-of-memory killer, typically
        return {"killed": -res.returncode, "rc": res.returncode, "stderr": ""}
    if not line:
        raise RuntimeError(f"latentode {args[0]} failed:\n{res.stderr[-3000:]}")
    out = json.loads(line[-1][7:])
    out["stderr"] = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
    return out


def _git_head(repo: Path) -> str:
    """The checkout's commit, short."""
    res = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=repo
    )
    return res.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="reports/predict_memory.md")
    p.add_argument("--fit-steps", type=int, default=3)
    p.add_argument("--baseline", type=Path, help="another checkout to measure beside this one")
    p.add_argument("--channels", type=int, default=2, help="value channels of the series")
    args = p.parse_args(argv)
    checkouts = [ROOT] + ([args.baseline.resolve()] if args.baseline else [])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data, run = Path(tmp) / "series.csv", Path(tmp) / "run"
        write_series(data, n_channels=args.channels)
        fit = run_child(
            [
                "fit",
                "--config",
                "configs/csv.yaml",
                "--data.init_args.path",
                str(data),
                "--data.init_args.time_unit",
                "h",
                "--trainer.default_root_dir",
                str(run),
                "--trainer.max_steps",
                str(args.fit_steps),
                "--trainer.enable_progress_bar",
                "false",
                "--model.init_args.eval_samples",
                "2",
            ]
        )
        if fit["rc"] not in (0, None):
            raise RuntimeError(f"the fit failed: {fit['stderr']}")
        ckpt = run / "checkpoints" / "last.ckpt"
        base = ["predict", "--ckpt_path", str(ckpt), "--data.path", str(data)]
        rows = []
        for label, extra in CASES:
            row = []
            for repo in checkouts:
                if repo != ROOT and extra == CASES[-1][1]:
                    row.append(None)  # code before session 30 exhausts the memory on it
                    continue
                out = Path(tmp) / "forecast.csv"
                cmd = [*base, *extra, "--no-calibrate", "--overwrite", "--output", str(out)]
                res = run_child(cmd, repo)
                res["rows"] = len(pd.read_csv(out)) if res["rc"] in (0, None) else 0
                out.unlink(missing_ok=True)
                row.append(res)
                print(repo.name, label, res["rc"], res.get("peak_kib", 0) // 1024, "MiB")
            rows.append((label, row))
    loads = [r["peak_kib"] for r in rows[0][1]]
    head = "| forecast per series | exit | rows written | peak MiB | above loading MiB | wall s |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if args.baseline:
        head += " baseline: peak MiB | above loading MiB | wall s |"
        rule += "---:|---:|---:|"
    lines = [
        "# Peak memory of `latentode predict` as the forecast grows",
        "",
        "Command: `python benchmarks/predict_memory.py"
        + (f" --baseline {args.baseline}" if args.baseline else "")
        + (f" --channels {args.channels}" if args.channels != 2 else "")
        + f" --output {args.output}` (wall time {time.perf_counter() - started:.0f} s, "
        f"{os.cpu_count()} CPUs, one torch thread per process).",
        "",
        f"12 irregular hourly series of 300 points with {args.channels} channels (generated, "
        "seeded), "
        f"`configs/csv.yaml` fitted for {args.fit_steps} steps (memory does not depend on the "
        "fit's quality), `predict --no-calibrate` with the default 200 paths per series, "
        "every row in a fresh process. Peak: the process's peak resident set size (`VmHWM`); "
        "above loading: minus the first row's peak (a one-step forecast: the interpreter, "
        "torch, the checkpoint and the file). The peak counts memory the allocator holds "
        "without returning it, so one row varies between runs (by up to about 0.5 GB here); "
        "the orders of magnitude do not.",
        "",
    ]
    if args.baseline:
        lines += [
            f"Baseline: the checkout in `{args.baseline}` (git "
            f"{_git_head(args.baseline)}) on the same checkpoint and file; this checkout: git "
            f"{_git_head(ROOT)}.",
            "",
        ]
    lines += [head, rule]
    for label, row in rows:
        cells = [label]
        for k, res in enumerate(row):
            if res is None:
                cells += ["not run on the baseline", "", ""]
                continue
            if "killed" in res:
                cells += [f"killed by signal {res['killed']} (out of memory)", "", ""]
                continue
            above = (res["peak_kib"] - loads[k]) / 1024
            peak = f"{res['peak_kib'] / 1024:.0f}"
            if k == 0:
                cells += [str(res["rc"] or 0), f"{res['rows']:,}"]
            cells += [peak, f"{above:.0f}", f"{res['wall_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    refused = rows[-1][1][0]["stderr"]
    lines += ["", f"The last row's message: `{refused}`", ""]
    Path(args.output).write_text("\n".join(lines))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
