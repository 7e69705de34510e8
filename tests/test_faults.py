"""Faults during training: a killed fit resumes, SLURM requeue, NaN loss and solver failures.

The kill tests run the real ``latentode`` command in a subprocess and kill it mid-epoch; the
guard tests train in-process and poison the weights at a chosen batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from cli_helpers import QUIET_FIT, ROOT, run_cli
from lightning_helpers import quiet_trainer
from pytorch_lightning.callbacks import ModelCheckpoint

from latentode.cli import USER_ERRORS
from latentode.data.datamodules import SpiralsDataModule
from latentode.nn.base import ModelInputError
from latentode.nn.latent_ode import LatentODEConfig
from latentode.systems import LatentODESystem, StepInputError, TrainingStoppedError

LR, DECAY = 0.01, 0.99
STEPS_PER_EPOCH = 100  # 1500 spirals: 1200 for training, batches of 12


def _tiny() -> list[str]:
    return [
        *QUIET_FIT,
        "--trainer.max_epochs",
        "2",
        "--data.init_args.n",
        "1500",
        "--data.init_args.batch_size",
        "12",
        "--model.init_args.eval_samples",
        "2",
        "--model.init_args.lr",
        str(LR),
        "--model.init_args.lr_decay",
        str(DECAY),
    ]


def _fit_args(root: Path) -> list[str]:
    cmd = [sys.executable, "-m", "latentode.cli", "fit", "--config", "configs/spirals.yaml"]
    return [*cmd, "--trainer.default_root_dir", str(root), *_tiny(), "--ckpt_path", "last"]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() - t0 < timeout, "timed out waiting for the run"
        time.sleep(0.05)


def _epoch_zero_saved(last: Path) -> bool:
    try:
        return torch.load(last, weights_only=True)["global_step"] == STEPS_PER_EPOCH
    except Exception:  # not written yet
        return False


def _check_restored_state(last: Path) -> None:
    """Two full epochs, with optimizer and scheduler counting every step since the start."""
    state = torch.load(last, weights_only=True)
    steps = 2 * STEPS_PER_EPOCH
    assert state["global_step"] == steps and state["epoch"] == 1
    adam = state["optimizer_states"][0]["state"]
    assert {int(s["step"]) for s in adam.values()} == {steps}  # not restarted at the resume
    sched = state["lr_schedulers"][0]
    assert sched["last_epoch"] == steps
    assert sched["_last_lr"][0] == pytest.approx(LR * DECAY**steps, rel=1e-9)


def test_killed_fit_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    args = _fit_args(tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        args, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    _wait_for(lambda: _epoch_zero_saved(last), proc)
    time.sleep(0.5)  # into epoch 1 (about 3 s long)
    assert proc.poll() is None
    proc.kill()  # SIGKILL: no handler runs, nothing is saved on the way out
    proc.communicate()
    assert torch.load(last, weights_only=True)["global_step"] == STEPS_PER_EPOCH

    resumed = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert f"resuming from {last}" in log and "Restored all states" in log
    _check_restored_state(last)
    metrics = (tmp_path / "logs" / "version_1" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    col = header.index("epoch")
    epochs = {row.split(",")[col] for row in metrics[1:]}
    assert epochs == {"1"}  # the resumed run trained epoch 1 only


def test_sigterm_saves_where_the_fit_stopped_and_exits_143(tmp_path: Path) -> None:
    """SIGTERM (a scheduler's preemption or ``kill``): Lightning stops at the batch's end and
    raised a SystemExit without a status, so the fit exited 0 with nothing saved since the
    epoch's end. Now ``last.ckpt`` holds the stop (exact resume: test_resume_rng), the message
    says so, and the status is 128 + 15."""
    args = _fit_args(tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        args, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    _wait_for(lambda: _epoch_zero_saved(last), proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out[-3000:]
    step = torch.load(last, weights_only=True)["global_step"]
    assert STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH
    assert (
        f"latentode: SIGTERM stopped the fit at epoch 1, global step {step}; saved {last}. "
        "Resume with --ckpt_path last." in out
    )
    assert "Traceback" not in out


def test_slurm_requeue_signal_saves_and_resumes(tmp_path: Path) -> None:
    """``scripts/slurm/fit.sbatch`` (with stand-ins for ``srun`` and ``scontrol``): on SIGUSR1
    ``hpc_ckpt_1.ckpt`` is saved mid-epoch, at the end of a training batch, and ``scontrol
    requeue`` called; the requeued job's ``--ckpt_path last`` resumes from it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (fake / "scontrol").write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n')
    for tool in fake.iterdir():
        tool.chmod(0o755)
    calls, root = tmp_path / "scontrol.log", tmp_path / "run"
    env = _env(
        PATH=f"{fake}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        LATENTODE="latentode",
        ROOT=str(root),
        SCONTROL_LOG=str(calls),
        SLURM_NTASKS="1",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_JOB_NUM_NODES="1",
        SLURM_JOB_NAME="latentode-test",
        SLURM_JOB_ID="4242",
        SLURM_PROCID="0",
        SLURM_LOCALID="0",
        SLURM_NODEID="0",
        SLURM_NODELIST="localhost",
    )
    # The script's default CONFIG is configs/spirals.yaml; the slurm preset asks for GPUs.
    script = ["bash", "scripts/slurm/fit.sbatch", *_tiny(), "--trainer.accelerator", "cpu"]
    last, hpc = root / "checkpoints" / "last.ckpt", root / "hpc_ckpt_1.ckpt"
    proc = subprocess.Popen(
        script, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    _wait_for(lambda: _epoch_zero_saved(last), proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGUSR1)  # the script exec's srun, which exec's the command
    _wait_for(lambda: calls.is_file(), proc)
    proc.kill()  # SLURM ends the job after the signal
    out = proc.communicate()[0]
    assert "SLURM auto-requeueing enabled" in out
    assert calls.read_text().split() == ["requeue", "4242"]
    saved = torch.load(hpc, weights_only=True)
    assert STEPS_PER_EPOCH < saved["global_step"] < 2 * STEPS_PER_EPOCH  # mid-epoch 1
    # Saved at a training batch's end (`SafeSignals`), never inside a step: the loader's
    # position counts the batches of epoch 1 done, that batch included, as Lightning does.
    fit_loop = saved["loops"]["fit_loop"]
    position = fit_loop["state_dict"]["combined_loader"][0]
    progress = fit_loop["epoch_loop.batch_progress"]["current"]
    assert not position["complete"] and position["pass_start"] is not None
    assert position["finished"] == saved["global_step"] - STEPS_PER_EPOCH
    assert progress["processed"] == position["finished"] == progress["completed"] + 1

    resumed = subprocess.run(script, cwd=ROOT, env=env, capture_output=True, text=True)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert f"resuming from {hpc}" in log
    assert "not resumable" not in log  # Lightning's warning for a plain DataLoader
    _check_restored_state(last)


# ---------------------------------------------------------------------- NaN / solver failure
class _Poison(pl.Callback):
    """Sets a parameter to NaN just before batch ``batch`` of epoch 1."""

    def __init__(self, target: str, batch: int = 2) -> None:
        self.target, self.batch = target, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == self.batch:
            part = getattr(pl_module.model, self.target)
            with torch.no_grad():
                next(part.parameters()).fill_(float("nan"))


def _tiny_system() -> LatentODESystem:
    pl.seed_everything(0)
    cfg = LatentODEConfig(input_dim=2, latent_dim=4, encoder_hidden=8, dynamics_hidden=8)
    return LatentODESystem(cfg, eval_samples=2)


def _tiny_data(n: int = 60) -> SpiralsDataModule:
    return SpiralsDataModule(n=n, n_observed=30, batch_size=12, seed=0)


def _fit_until_stopped(root: Path, poison: pl.Callback) -> str:
    """Fit a tiny Latent ODE on 60 spirals (4 batches per epoch, one validation batch,
    ``root/last.ckpt`` after each epoch) with ``poison``; the `TrainingStoppedError` message."""
    return str(_stopped_fit(root, poison))


def _stopped_fit(root: Path, poison: pl.Callback) -> TrainingStoppedError:
    """The `TrainingStoppedError` of `_fit_until_stopped`'s fit."""
    system = _tiny_system()
    ckpt = ModelCheckpoint(dirpath=root, filename="last", monitor=None)
    trainer = quiet_trainer(
        root,
        enable_checkpointing=True,
        max_epochs=3,
        limit_val_batches=1,
        callbacks=[ckpt, poison],
    )
    with pytest.raises(TrainingStoppedError) as err:
        trainer.fit(system, datamodule=_tiny_data())
    return err.value


@pytest.mark.parametrize(
    ("target", "problem"),
    [("decoder", "the training loss is nan"), ("dynamics", "the ODE solver failed")],
)
def test_nan_loss_or_solver_failure_stops_with_a_message(
    tmp_path: Path, target: str, problem: str
) -> None:
    message = _fit_until_stopped(tmp_path, _Poison(target))
    assert "epoch 1, batch 2 (global step 6)" in message  # 4 batches per epoch
    assert problem in message and "What to do:" in message
    assert f"last good checkpoint is {tmp_path / 'last.ckpt'}" in message
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["global_step"] == 4  # epoch 0's checkpoint, untouched
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert TrainingStoppedError in USER_ERRORS  # the CLI prints it and exits with status 2


# ------------------------------------------------- solver failure in validation and testing
class _PoisonEval(pl.Callback):
    """Sets the dynamics to NaN before evaluation batch 0 of epoch 1 (validation) or of the
    test run, only in process ``rank``."""

    def __init__(self, rank: int = 0, batch: int = 0) -> None:
        self.rank, self.batch = rank, batch

    def _poison(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank == self.rank:
            with torch.no_grad():
                next(pl_module.model.dynamics.parameters()).fill_(float("nan"))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        if trainer.current_epoch == 1 and batch_idx == self.batch and not trainer.sanity_checking:
            self._poison(trainer, pl_module)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        if batch_idx == 0:
            self._poison(trainer, pl_module)


def test_solver_failure_in_validation_and_testing_stops_with_a_message(tmp_path: Path) -> None:
    message = _fit_until_stopped(tmp_path, _PoisonEval())
    assert "validation stopped at epoch 1, validation batch 0 (global step 8)" in message
    assert "the ODE solver failed" in message and message.count("What to do:") == 1
    assert f"last good checkpoint is {tmp_path / 'last.ckpt'}" in message
    assert "Nothing of this step was applied" not in message  # no step was being taken

    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[_PoisonEval()]
    )
    with pytest.raises(TrainingStoppedError) as err:
        trainer.test(_tiny_system(), datamodule=_tiny_data(), verbose=False)
    message = str(err.value)
    assert message.startswith("testing stopped at epoch 0, test batch 0")
    assert "the ODE solver failed" in message and "checkpoint" not in message


# ------------------------------------------------- a batch the model refuses, in any stage
class PoisonBatch(pl.Callback):
    """Writes NaN at the first observed value of batch ``batch`` of epoch ``epoch`` of
    ``stage`` (``"train"``, ``"val"`` or ``"test"``) before its step; the mask stays 1, so the
    model's input check refuses it (sanity-check batches are left alone)."""

    def __init__(self, stage: str = "train", epoch: int = 0, batch: int = 0) -> None:
        self.stage, self.epoch, self.batch = stage, epoch, batch

    def _poison(self, trainer: pl.Trainer, stage: str, split, batch_idx: int) -> None:
        at = (stage, trainer.current_epoch, batch_idx) == (self.stage, self.epoch, self.batch)
        if at and not trainer.sanity_checking:
            b, t, d = torch.nonzero(split.observed.mask)[0].tolist()
            split.observed.values[b, t, d] = float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._poison(trainer, "train", batch, batch_idx)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        self._poison(trainer, "val", batch, batch_idx)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        self._poison(trainer, "test", batch, batch_idx)


@pytest.mark.parametrize(
    ("stage", "where"),
    [
        ("train", "training stopped at epoch 1, batch 2 (global step 6): "),
        ("val", "validation stopped at epoch 1, validation batch 0 (global step 8): "),
        ("test", "testing stopped at epoch 0, test batch 1 (global step 0): "),
    ],
)
def test_a_batch_the_model_refuses_names_the_stage_epoch_and_batch(
    tmp_path: Path, stage: str, where: str
) -> None:
    """A ModelInputError in a step (here a NaN observed value) came out bare: 'values[0, 1, 0]
    is nan where mask is 1 (series 0, ...)', a series index within a batch nobody could find."""
    epoch, batch = {"train": (1, 2), "val": (1, 0), "test": (0, 1)}[stage]
    poison = PoisonBatch(stage, epoch, batch)
    if stage == "test":
        trainer = quiet_trainer(tmp_path, callbacks=[poison])
        with pytest.raises(TrainingStoppedError) as err:
            data = SpiralsDataModule(n=60, n_observed=30, batch_size=3, seed=0)  # 2 batches
            trainer.test(_tiny_system(), datamodule=data, verbose=False)
        stopped = err.value
    else:
        stopped = _stopped_fit(tmp_path, poison)
    message, cause = str(stopped), stopped.__cause__
    assert isinstance(stopped, StepInputError) and isinstance(stopped, ModelInputError)
    assert isinstance(cause, ModelInputError)
    assert message.startswith(where + str(cause)), message
    assert "is nan where mask is 1 (series 0, time index" in message
    assert ("Nothing of this step was applied" in message) == (stage == "train")
    assert StepInputError.__mro__[1] is TrainingStoppedError  # in USER_ERRORS: status 2


def test_a_refused_batch_stops_the_cli_with_one_line_naming_the_batch(tmp_path: Path) -> None:
    root = tmp_path / "run"
    res = run_cli(
        *("fit", "--config", "configs/spirals.yaml", "--trainer.default_root_dir", str(root)),
        *(*QUIET_FIT, "--trainer.max_epochs", "1", "--data.init_args.n", "60"),
        *("--data.init_args.batch_size", "12", "--model.init_args.eval_samples", "2"),
        *("--trainer.callbacks+=test_faults.PoisonBatch", "--trainer.callbacks.batch", "1"),
        env={"PYTHONPATH": str(ROOT / "tests")},
    )
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert errors[0].startswith(
        "latentode: error: training stopped at epoch 0, batch 1 (global step 1): values["
    )
    assert "is nan where mask is 1" in errors[0]


_DDP_EVAL_SCRIPT = """
import sys
import pytorch_lightning as pl
from test_faults import _PoisonEval, _tiny_system
from latentode.data.datamodules import SpiralsDataModule
from latentode.systems import TrainingStoppedError
from latentode.systems.guard import end_process, leave_process_group

root, n, batch_size, rank, batch = sys.argv[1], *map(int, sys.argv[2:])
trainer = pl.Trainer(
    default_root_dir=root, accelerator="cpu", devices=2, strategy="ddp", max_epochs=2,
    logger=False, enable_progress_bar=False, enable_model_summary=False, limit_train_batches=2,
    num_sanity_val_steps=0, callbacks=[_PoisonEval(rank=rank, batch=batch)],
)
data = SpiralsDataModule(n=n, n_observed=30, batch_size=batch_size, seed=0)
try:
    trainer.fit(_tiny_system(), datamodule=data)
except TrainingStoppedError as e:
    print(f"rank {trainer.global_rank} stopped: {e}", flush=True)
    leave_process_group()
    end_process(3)
print(f"rank {trainer.global_rank} finished", flush=True)
leave_process_group()
end_process(0)
"""


def _ddp_eval(tmp_path: Path, n: int, batch_size: int, rank: int, batch: int) -> tuple[int, str]:
    """2 gloo processes fit 2 epochs of ``n`` spirals (validation: a tenth of them, unpadded
    shards); process ``rank``'s dynamics turn NaN before validation batch ``batch`` of epoch 1
    (``rank`` -1: never). The exit status (3: stopped) and the output."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "ddp_eval_failure.py"
    script.write_text(_DDP_EVAL_SCRIPT)
    env = _env(PYTHONPATH=str(ROOT / "tests"))
    run = [sys.executable, str(script), str(tmp_path / "run")]
    run += [str(v) for v in (n, batch_size, rank, batch)]
    res = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    return res.returncode, res.stdout + res.stderr


def test_solver_failure_in_one_ddp_process_stops_both(tmp_path: Path) -> None:
    """Only process 1's validation fails: process 0 must stop with its message too, instead of
    waiting in the metrics' epoch-end gather (NCCL: until its timeout; gloo: a traceback)."""
    code, log = _ddp_eval(tmp_path, 120, 12, rank=1, batch=0)  # one validation batch each
    assert code == 3, log[-3000:]
    failure = "validation stopped at epoch 1, validation batch 0"
    assert f"rank 1 stopped: {failure}" in log
    assert f"rank 0 stopped: process 1 failed: {failure}" in log
    assert "Connection closed" not in log and "Traceback" not in log


def test_ddp_validation_with_uneven_shards(tmp_path: Path) -> None:
    """9 validation spirals in batches of 4: process 0 has 2 batches, process 1 has 1. A
    collective per validation step would pair process 0's second batch with process 1's epoch
    end and hang (it did, before the evaluation guard moved its agreement to the epoch's end).
    Both must finish, and a failure in the batch only process 0 has must stop both."""
    code, log = _ddp_eval(tmp_path / "ok", 90, 4, rank=-1, batch=0)
    assert code == 0, log[-3000:]
    assert "rank 0 finished" in log and "rank 1 finished" in log
    code, log = _ddp_eval(tmp_path / "fail", 90, 4, rank=0, batch=1)
    assert code == 3, log[-3000:]
    failure = "validation stopped at epoch 1, validation batch 1"
    assert f"rank 0 stopped: {failure}" in log
    assert f"rank 1 stopped: process 0 failed: {failure}" in log
    assert "Traceback" not in log
