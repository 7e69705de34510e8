"""Shared helpers of the ``latentode`` CSV command tests (test_cli_csv_*.py, test_cuda.py):
a small irregular CSV, the fit and predict arguments for it, a tiny fitted model (the
``fitted`` fixture in conftest.py), and the ``--times`` rows and ``test`` runs they share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_cli


def write_csv(path: Path, seed: int = 0, n_series: int = 6) -> pd.DataFrame:
    """Six (``n_series``) irregular daily series, two channels around 1000 and -5, with gaps."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_series):
        days = np.sort(rng.choice(120, size=40, replace=False))
        for d in days:
            t = pd.Timestamp("2020-01-01") + pd.Timedelta(days=int(d))
            a = 1000 + 10 * np.sin(2 * np.pi * d / 30 + s) + rng.normal(0, 0.5)
            b = -5 + 0.02 * d + rng.normal(0, 0.1)
            rows.append((f"s{s}", t.strftime("%Y-%m-%d"), a, b if rng.random() > 0.2 else ""))
    frame = pd.DataFrame(rows, columns=["series_id", "time", "a", "b"])
    frame.sample(frac=1, random_state=seed).to_csv(path, index=False)  # unsorted on purpose
    return frame


def csv_fit_args(data: Path, run_dir: Path, steps: int) -> list[str]:
    """``latentode fit`` on ``data`` with configs/csv.yaml, tiny batches, ``steps`` steps."""
    return [
        "fit",
        "--config",
        "configs/csv.yaml",
        "--data.init_args.path",
        str(data),
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.max_steps",
        str(steps),
        "--trainer.enable_progress_bar",
        "false",
        "--data.init_args.batch_size",
        "4",
        "--data.init_args.val_fraction",
        "0.2",
        "--data.init_args.test_fraction",
        "0.2",
        "--model.init_args.eval_samples",
        "2",
    ]


def csv_predict_args(ckpt: Path, data: Path) -> list[str]:
    """``latentode predict`` of ``ckpt`` on ``data``: 20 days ahead in steps of 5."""
    args = ["predict", "--ckpt_path", str(ckpt), "--data.path", str(data)]
    return [*args, "--horizon", "20D", "--step", "5D"]


def fit_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("csvrun")
    data = root / "series.csv"
    write_csv(data)
    fit = run_cli(*csv_fit_args(data, root / "run", 3))
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt, data


def _days_after_last(data: Path, days: tuple[int, ...]) -> tuple[pd.Series, list[tuple[str, str]]]:
    """Each series' last time in ``data``, and ``--times`` rows ``(series_id, date)`` that
    many ``days`` after it (for each day, every series)."""
    last = pd.to_datetime(pd.read_csv(data).groupby("series_id")["time"].max())
    rows = [
        (sid, (t + pd.Timedelta(days=d)).strftime("%Y-%m-%d"))
        for d in days
        for sid, t in last.items()
    ]
    return last, rows


def _test_scores(ckpt: Path, data: Path, table: Path, *extra: str) -> tuple[pd.DataFrame, str]:
    """``latentode test`` with 20 paths (and ``extra`` options): the table it wrote, stdout."""
    args = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--n_samples", "20"]
    res = run_cli("test", *args, *extra, "--output", str(table))
    assert res.returncode == 0, res.stderr[-3000:]
    return pd.read_csv(table), res.stdout
