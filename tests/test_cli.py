"""The ``latentode`` command, run for real in a subprocess: fit, test, resume."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from cli_helpers import QUIET_FIT, ROOT, run_cli


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


def test_a_checkpoint_brings_its_model_settings_and_names_those_it_overrides(
    tmp_path: Path,
) -> None:
    """Another model or data class is refused; given settings the checkpoint overrides are
    named, with ``--ckpt_path last`` as with a file (before: a file's settings replaced the
    given ones without a word, ``last`` built the given model and failed on a size mismatch or
    resumed the weights under another activation); a resume at its limit says so."""
    fit = run_cli("fit", *tiny(tmp_path), "--trainer.max_steps", "2")
    assert fit.returncode == 0, fit.stderr[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"

    other = tmp_path / "other"
    cnf = run_cli(
        "fit", "--config", "configs/cnf_8gaussians.yaml", "--trainer.default_root_dir",
        str(other), "--ckpt_path", str(last),
    )  # fmt: skip
    assert cnf.returncode == 2 and "Traceback" not in cnf.stderr
    assert f"--ckpt_path {last} holds a LatentODESystem" in cnf.stderr
    assert "the configuration gives a CNFSystem" in cnf.stderr
    periodic = run_cli(
        "fit", "--config", "configs/periodic.yaml", "--trainer.default_root_dir", str(other),
        "--ckpt_path", str(last),
    )  # fmt: skip
    assert periodic.returncode == 2 and "was fitted on a SpiralsDataModule" in periodic.stderr

    changed = ["--model.init_args.lr", "0.5", "--model.init_args.config.dynamics_hidden", "30"]
    resumed = run_cli(
        "fit", *tiny(tmp_path), *changed, "--data.init_args.n", "80", "--trainer.max_steps",
        "4", "--ckpt_path", "last",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        "these given ones differ and are not used: config.dynamics_hidden 30 (checkpoint: 20); "
        "lr 0.5 (checkpoint: 0.01)."
    ) in resumed.stderr
    assert "other than it started with: n 80 (checkpoint: 60)." in resumed.stderr
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 4 and state["hyper_parameters"]["lr"] == 0.01
    assert state["state_dict"]["model.dynamics.net.0.bias"].shape == (20,)

    done = run_cli("fit", *tiny(tmp_path), "--trainer.max_steps", "3", "--ckpt_path", "last")
    assert done.returncode == 0
    assert "nothing was trained: the run is at step 4, at or past --trainer.max_steps 3" in (
        done.stdout + done.stderr
    )
    # Lightning's own refusal (a checkpoint "epoch" past max_epochs) was a traceback
    past = run_cli("fit", *tiny(tmp_path), "--trainer.max_epochs", "0", "--ckpt_path", "last")
    assert past.returncode == 2 and "Traceback" not in past.stderr
    assert "was saved in epoch 1 (counted from 0), past --trainer.max_epochs 0" in past.stderr


def test_a_whole_number_batch_limit_is_a_count_not_a_fraction() -> None:
    """``--trainer.limit_val_batches 1`` is one batch and ``1.0`` all of them; before, a union
    cached float-first by lightning_fabric read both as 1.0 (Lightning issue 21259)."""
    printed = run_cli(
        "fit", "--config", "configs/spirals.yaml", "--trainer.limit_val_batches", "1",
        "--trainer.limit_train_batches", "0.5", "--trainer.val_check_interval", "100",
        "--print_config",
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr[-2000:]
    lines = set(printed.stdout.splitlines())
    assert {"  limit_val_batches: 1", "  limit_train_batches: 0.5"} <= lines
    assert "  val_check_interval: 100" in lines
    full = run_cli(
        "fit", "--config", "configs/spirals.yaml", "--trainer.limit_val_batches", "1.0",
        "--print_config",
    )  # fmt: skip
    assert "  limit_val_batches: 1.0" in full.stdout.splitlines()


def test_print_config_and_bad_option(tmp_path: Path) -> None:
    printed = run_cli("fit", "--config", "configs/spirals.yaml", "--print_config")
    assert printed.returncode == 0 and "LatentODESystem" in printed.stdout
    bad = run_cli("fit", "--config", "configs/spirals.yaml", "--model.init_args.no_such", "1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(
        "latentode fit: error: model (latentode.systems.LatentODESystem): option 'no_such' is "
        "not accepted"
    )
    assert "usage:" not in bad.stderr


@pytest.mark.parametrize(
    ("edit", "extra", "needle"),
    [
        (
            ("    holdout:", "    holdot:"),
            [],
            "data (latentode.data.csv_module.CSVDataModule): option 'holdot' is not accepted; "
            "did you mean 'holdout'?",
        ),
        (
            ("      latent_dim:", "      latentdim:"),
            [],
            "model.config (latentode.nn.LatentODEConfig): option 'latentdim' is not accepted; "
            "did you mean 'latent_dim'?",
        ),
        (
            ("  class_path: latentode.data.csv_module.CSVDataModule\n", ""),
            [],
            "data: option 'path' is not accepted: no data class is named, so only "
            "pytorch_lightning.LightningDataModule's options are; give data.class_path first",
        ),
        (
            None,
            ["--trainer.max_stepz", "1"],
            "unrecognized arguments: --trainer.max_stepz 1; did you mean '--trainer.max_steps'?",
        ),
        (
            None,
            ["--data.init_args.split", "sometimes"],
            "data.split (latentode.data.csv_module.CSVDataModule): Expected a "
            "typing.Literal['auto', 'series', 'time']. Got value: sometimes",
        ),
    ],
    ids=["data-option", "model-option", "no-class-path", "argument", "value"],
)
def test_a_config_mistake_is_one_line_naming_where_it_is_and_the_nearest_name(
    tmp_path: Path, capsys, edit: tuple[str, str] | None, extra: list[str], needle: str
) -> None:
    """Before: the usage of 150 options, then jsonargparse's nested report of every type the
    value might have had, the misspelt name somewhere inside."""
    from latentode.cli import main

    text = (ROOT / "configs" / "csv.yaml").read_text()
    if edit is not None:
        assert edit[0] in text
        text = text.replace(edit[0], edit[1], 1)
    config = tmp_path / "config.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config), "--data.init_args.path", "data/x.csv", *extra])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"latentode fit: error: {needle}"), err
    assert len(err.splitlines()) == 2 and "usage:" not in err


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
    """A ModelCheckpoint with the best checkpoint's settings (val/mse, min) could not be
    restored beside it; Lightning raised a RuntimeError with a traceback. One with last.ckpt's
    settings (no monitor, every epoch) is another class's state now (`LastCheckpoint`), so it
    is kept and both restore."""
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
        "--trainer.callbacks.monitor",
        "val/mse",
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "two ModelCheckpoint callbacks with the same settings" in res.stderr
    assert "--checkpoint.*" in res.stderr and "Traceback" not in res.stderr
    assert not root.exists()  # refused before anything was written
    res = run_cli(
        "fit",
        *tiny(root),
        "--trainer.max_steps",
        "2",
        "--trainer.callbacks+=pytorch_lightning.callbacks.ModelCheckpoint",
        "--trainer.callbacks.dirpath",
        str(root / "every"),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert [p.name for p in (root / "every").glob("*.ckpt")] == ["epoch=0-step=2.ckpt"]
    assert (root / "checkpoints" / "last.ckpt").is_file()


def test_trainer_options_that_cannot_run_stop_with_a_message(tmp_path: Path) -> None:
    """Lightning's own refusals (``devices 0``; a GPU accelerator without a GPU, as with the
    gpu.yaml preset on a laptop) came out as tracebacks with exit status 1; a half-precision
    model is refused by the series systems."""
    root = tmp_path / "run"
    res = run_cli("fit", *tiny(root), "--trainer.devices", "0")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "latentode: error: the trainer options cannot run here: `Trainer(devices='0')`" in (
        res.stderr
    )
    assert "configs/trainer/cpu.yaml runs on any machine" in res.stderr
    assert "Traceback" not in res.stderr and not root.exists()
    res = run_cli("fit", *tiny(root), "--trainer.precision", "bf16-true")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Use --trainer.precision bf16-mixed" in res.stderr and "Traceback" not in res.stderr
    assert not (root / "checkpoints").exists()


def test_a_fit_that_stops_mid_epoch_keeps_its_last_checkpoint(tmp_path: Path) -> None:
    """max_steps reached inside an epoch (2 batches per epoch here, 3 steps) ended the fit
    without an epoch end, and Lightning wrote no checkpoint: the weights were lost and
    ``--ckpt_path last`` started over. last.ckpt is now written by the batch that ends the fit,
    and resumed to 6 steps it lands on the uninterrupted 6-step fit's weights exactly."""
    part, whole = tmp_path / "part", tmp_path / "whole"
    fit = run_cli("fit", *tiny(part), "--trainer.max_steps", "3")
    assert fit.returncode == 0, fit.stderr[-3000:]
    last = part / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert (saved["global_step"], saved["epoch"]) == (3, 1)
    assert f"last checkpoint: {last}" in fit.stdout + fit.stderr
    resumed = run_cli("fit", *tiny(part), "--trainer.max_steps", "6", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {last}" in resumed.stdout + resumed.stderr
    fresh = run_cli("fit", *tiny(whole), "--trainer.max_steps", "6")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    a = torch.load(last, weights_only=True)
    b = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    assert all(torch.equal(a["state_dict"][k], v) for k, v in b["state_dict"].items())


def test_a_class_that_refuses_its_options_stops_with_its_message(tmp_path: Path) -> None:
    """A model option that does not fit the chosen encoder raised a clear ModelInputError,
    but jsonargparse wrapped it in a dump of every candidate type (exit status 1)."""
    root = tmp_path / "run"
    args = ["--config", "configs/periodic.yaml", "--trainer.default_root_dir", str(root)]
    res = run_cli("fit", *args, "--model.init_args.config.encoder", "gru")
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().endswith(
        "latentode: error: encoder_ode_hidden sizes the ODE-RNN encoder's vector field; the "
        "GRU encoder has none. Set encoder: odernn or leave encoder_ode_hidden unset."
    )
    assert "Traceback" not in res.stderr and not root.exists()


def test_a_bad_depth_in_the_model_config_names_the_setting(tmp_path: Path) -> None:
    """Before: 'latentode: error: depth must be >= 0, got -1.' (which of the model's MLPs?)."""
    root = tmp_path / "run"
    args = ["--config", "configs/spirals.yaml", "--trainer.default_root_dir", str(root)]
    res = run_cli("fit", *args, "--model.init_args.config.decoder_depth", "-1")
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().endswith(
        "latentode: error: decoder_depth is the number of hidden layers of an MLP: a whole "
        "number >= 0 (0: one linear layer); got -1. Set decoder_depth to 0 or more."
    )
    assert "Traceback" not in res.stderr and not root.exists()


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is not None
    or importlib.util.find_spec("tensorboardX") is not None,
    reason="needs a machine without tensorboard",
)
def test_a_logger_whose_package_is_missing_stops_with_a_message(tmp_path: Path) -> None:
    root = tmp_path / "run"
    res = run_cli(
        "fit",
        *tiny(root),
        "--trainer.logger",
        "pytorch_lightning.loggers.TensorBoardLogger",
        "--trainer.logger.save_dir",
        str(root),
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "a class given in the configuration needs a package that is not installed: " in (
        res.stderr
    )
    assert "Traceback" not in res.stderr


def test_checkpointing_turned_off_writes_none_and_says_so(tmp_path: Path) -> None:
    """Lightning refused enable_checkpointing=False beside our two ModelCheckpoints."""
    root = tmp_path / "run"
    res = run_cli(
        "fit", *tiny(root), "--trainer.max_steps", "2", "--trainer.enable_checkpointing", "false"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no checkpoint was written (--trainer.enable_checkpointing false)" in res.stdout + (
        res.stderr
    )
    assert not list(root.rglob("*.ckpt"))
