"""Running the real ``latentode`` command in a subprocess, for the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# No progress bar; validate one batch after every epoch.
QUIET_FIT = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.check_val_every_n_epoch",
    "1",
]


def run_cli(
    *args: str, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m latentode.cli ARGS`` from the repository root, single-threaded (``env``:
    more environment variables)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "latentode.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
