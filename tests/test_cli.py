"""The ``latentode`` command, run for real in a subprocess: fit, test, resume."""

from __future__ import annotations

from pathlib import Path

import torch
from cli_helpers import QUIET_FIT, run_cli


def tiny(root: Path) -> list[str]:
    return [
        "--config",
        "configs/spirals.yaml",
        "--trainer.default_root_dir",
        str(root),
        *QUIET_FIT,
        "--data.init_args.n",
        "60",
        "--data.init_args.batch_size",
        "24",
        "--model.init_args.eval_samples",
        "2",
    ]


def test_fit_test_and_resume(tmp_path: Path) -> None:
    # mode=max keeps the first epoch as "best": last.ckpt must still follow the latest epoch.
    fit = run_cli("fit", *tiny(tmp_path), "--trainer.max_steps", "6", "--checkpoint.mode", "max")
    assert fit.returncode == 0, fit.stderr[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    best = list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert last.is_file() and len(best) == 1
    assert torch.load(last, weights_only=True)["global_step"] == 6
    assert str(last) in fit.stdout + fit.stderr  # the run says where its checkpoints are
    assert (tmp_path / "logs").is_dir()

    test = run_cli("test", *tiny(tmp_path), "--ckpt_path", str(last))
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/mse" in test.stdout
    assert "--data.path" not in test.stderr  # the CSV evaluation hint is for CSV runs only

    resumed = run_cli("fit", *tiny(tmp_path), "--trainer.max_steps", "10", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states" in resumed.stdout + resumed.stderr
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 10


def test_print_config_and_bad_option(tmp_path: Path) -> None:
    printed = run_cli("fit", "--config", "configs/spirals.yaml", "--print_config")
    assert printed.returncode == 0 and "LatentODESystem" in printed.stdout
    bad = run_cli("fit", "--config", "configs/spirals.yaml", "--model.init_args.no_such", "1")
    assert bad.returncode != 0 and "no_such" in bad.stderr and "Traceback" not in bad.stderr


def test_periodic_config_builds_rubanovas_encoder_and_trains(tmp_path: Path) -> None:
    args = ["--config", "configs/periodic.yaml", "--trainer.default_root_dir", str(tmp_path)]
    args += [*QUIET_FIT, "--data.init_args.n", "40", "--data.init_args.batch_size", "16"]
    fit = run_cli("fit", *args, "--trainer.max_steps", "2", "--model.init_args.eval_samples", "2")
    assert fit.returncode == 0, fit.stderr[-3000:]
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    # the ODE-RNN encoder of reports/periodic.md: state 40, 100-unit field, 100-unit MLP head
    assert tuple(state["model.encoder.ode_func.net.0.weight"].shape) == (100, 40)
    assert tuple(state["model.encoder.head.0.weight"].shape) == (100, 40)
    assert tuple(state["model.encoder.head.2.weight"].shape) == (20, 100)


def test_a_checkpoint_callback_that_duplicates_ours_is_refused(tmp_path: Path) -> None:
    """A ModelCheckpoint with last.ckpt's settings (no monitor, every epoch) could not be
    restored beside it; Lightning raised a RuntimeError with a traceback."""
    root = tmp_path / "run"
    res = run_cli(
        "fit",
        "--config",
        "configs/spirals.yaml",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
        "--trainer.callbacks.dirpath",
        str(root / "every"),
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "two ModelCheckpoint callbacks with the same settings" in res.stderr
    assert "--last_checkpoint.*" in res.stderr and "Traceback" not in res.stderr
    assert not root.exists()  # refused before anything was written
