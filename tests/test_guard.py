"""The step guard on input the solver refuses, and on a refused batch in one of two processes.

A `SolverInputError` raised inside a step (here the ODE-RNN encoder's solve over float64
times that are distinct but coincide once cast to the float32 state, with the model's own
check of the times, which now refuses them first, switched off) stops the run as a
`StepSolverInputError` naming the stage, epoch and batch, as a `ModelInputError` stops it as a
`StepInputError`; under DDP every process stops with the failing one's error type, and the
``latentode`` command prints each failure once, from the process that failed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from cli_helpers import QUIET_FIT, ROOT
from lightning_helpers import quiet_trainer
from test_signals import _free_port, _slurm_env
from torch.utils.data import DataLoader

from latentode.data.batch import IrregularBatch, Split
from latentode.nn import encoders
from latentode.nn.base import SolverSettings
from latentode.nn.latent_ode import LatentODEConfig
from latentode.solver import SolverError, SolverInputError
from latentode.systems import (
    LatentODESystem,
    StepInputError,
    StepSolverInputError,
    TrainingStoppedError,
)


def _system(input_dim: int = 1) -> LatentODESystem:
    """A tiny latent ODE whose ODE-RNN encoder solves its gaps with dopri5."""
    pl.seed_everything(0)
    config = LatentODEConfig(
        input_dim=input_dim,
        latent_dim=2,
        encoder="odernn",
        encoder_hidden=4,
        dynamics_hidden=4,
        decoder_hidden=4,
        encoder_solver=SolverSettings("dopri5"),
    )
    return LatentODESystem(config, eval_samples=2)


def time_check_off(setattr_: Callable[[object, str, object], None] = setattr) -> None:
    """Switch off the encoders' check of the times (`check_observations` still checks shapes
    and values), so that times the model would refuse reach the solver, which refuses them
    with a `SolverInputError`: the model's check catches the float32 collision first since
    session 43, and no data path is known to reach the solver's check now."""
    real = encoders.check_observations

    def values_only(times: torch.Tensor, *args: object) -> None:
        real(torch.arange(len(times), dtype=times.dtype), *args)

    setattr_(encoders, "check_observations", values_only)


def _split(t0: float) -> Split:
    """Two series observed at ``t0 + 0, 1, ..., 5`` in float64, values in float32: from
    ``t0 = 1e8`` on the times coincide in float32 (its spacing there is 8)."""
    g = torch.Generator().manual_seed(0)
    times = t0 + torch.arange(6, dtype=torch.float64)  # (T,)
    values, mask = torch.randn(2, 6, 1, generator=g), torch.ones(2, 6, 1)  # (B, T, D)
    batch = IrregularBatch(times, values, mask)
    return Split(batch, batch, mask.bool())


def _loader(*t0: float) -> DataLoader:
    return DataLoader([_split(t) for t in t0], batch_size=None)


BAD = 1e8  # batch 1 of each stage: float64 times the float32 solve cannot tell apart


@pytest.mark.parametrize(
    ("stage", "where"),
    [
        ("train", "training stopped at epoch 0, batch 1 (global step 1): "),
        ("val", "validation stopped at epoch 0, validation batch 1 (global step 1): "),
        ("test", "testing stopped at epoch 0, test batch 1 (global step 0): "),
    ],
)
def test_input_the_solver_refuses_in_a_step_names_the_stage_epoch_and_batch(
    tmp_path: Path, stage: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It came out bare: 't must be strictly increasing ... it breaks at index 1', with no
    batch named, and under DDP it left the other processes waiting in a collective."""
    time_check_off(monkeypatch.setattr)
    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    with pytest.raises(SolverInputError) as err:
        if stage == "train":
            trainer.fit(_system(), train_dataloaders=_loader(0.0, BAD))
        elif stage == "val":
            trainer.fit(_system(), _loader(0.0), val_dataloaders=_loader(0.0, BAD))
        else:
            trainer.test(_system(), dataloaders=_loader(0.0, BAD), verbose=False)
    stopped, cause = err.value, err.value.__cause__
    assert isinstance(stopped, StepSolverInputError) and isinstance(stopped, StepInputError)
    assert isinstance(stopped, TrainingStoppedError)  # the CLI: one line, status 2, all stop
    assert isinstance(cause, SolverInputError) and not isinstance(cause, TrainingStoppedError)
    assert str(cause).startswith("t must be strictly increasing or strictly decreasing; it ")
    assert str(stopped).startswith(where + str(cause)), str(stopped)
    assert ("Nothing of this step was applied" in str(stopped)) == (stage == "train")


def test_a_step_called_by_hand_keeps_the_solvers_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a trainer there is no epoch or batch to name: the solver's own error. A solver
    failure came out as Lightning's 'LatentODESystem is not attached to a `Trainer`'."""
    time_check_off(monkeypatch.setattr)
    system = _system()
    for step in (system.training_step, system.validation_step):
        with pytest.raises(SolverInputError) as err:
            step(_split(BAD), 0)
        assert type(err.value) is SolverInputError
        assert str(err.value).startswith("t must be strictly increasing")
    failed = SolverError("non_finite", 0.5, 0.1, "the vector field returned NaN or inf")

    def fail(*args: object) -> None:
        raise failed

    monkeypatch.setattr(system, "training_loss", fail)
    monkeypatch.setattr(system, "predict_split", fail)
    for step in (system.training_step, system.validation_step):
        with pytest.raises(SolverError) as err:
            step(_split(0.0), 0)
        assert err.value is failed


def test_a_non_finite_loss_in_a_step_called_by_hand_names_the_batch() -> None:
    """Outside a trainer a NaN loss stops the step with our own error naming the batch; it
    came out as Lightning's 'LatentODESystem is not attached to a `Trainer`'."""
    system = _system()
    with torch.no_grad():
        system.model.decoder.net[0].bias.fill_(float("nan"))
    with pytest.raises(TrainingStoppedError) as err:
        system.training_step(_split(0.0), 3)
    assert type(err.value) is TrainingStoppedError and not err.value.echo
    assert str(err.value) == (
        "training step on batch 3, called outside a running Trainer: the training loss is nan. "
        "What to do: lower the learning rate (--model.init_args.lr), clip gradients "
        "(--trainer.gradient_clip_val 1.0), check the data for extreme values, or train in "
        "float64 (--trainer.precision 64-true)."
    )


# ------------------------------------------------------------- one process of two refuses
class Refuse(pl.Callback):
    """Makes the first ``stage`` batch (``"train"`` or ``"val"``, not the sanity check's) of
    the processes ``ranks`` one that is refused: by the model (``kind`` ``"model"``: a NaN
    where the mask says observed) or by the solver (``"solver"``: distinct float64 times that
    coincide in the float32 solve; with `time_check_off`)."""

    def __init__(
        self, stage: str = "train", kind: str = "model", ranks: list[int] | None = None
    ) -> None:
        self.stage, self.kind, self.ranks = stage, kind, [0] if ranks is None else ranks

    def _refuse(self, trainer: pl.Trainer, split: Split, batch_idx: int) -> None:
        if trainer.global_rank not in self.ranks or batch_idx != 0 or trainer.sanity_checking:
            return
        observed = split.observed
        if self.kind == "model":
            b, t, d = torch.nonzero(observed.mask)[0].tolist()
            observed.values[b, t, d] = float("nan")
        else:
            observed.times = observed.times.double() + BAD

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.stage == "train":
            self._refuse(trainer, batch, batch_idx)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args) -> None:
        if self.stage == "val":
            self._refuse(trainer, batch, batch_idx)


_DDP_SCRIPT = """
import sys
import pytorch_lightning as pl
from test_guard import Refuse, _system, time_check_off
from latentode.data.datamodules import SpiralsDataModule
from latentode.nn.base import ModelInputError
from latentode.solver import SolverError, SolverInputError
from latentode.systems import TrainingStoppedError
from latentode.systems.guard import end_process, leave_process_group

root, stage, kind, rank = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if kind == "solver":
    time_check_off()

trainer = pl.Trainer(
    default_root_dir=root, accelerator="cpu", devices=2, strategy="ddp", max_epochs=1,
    logger=False, enable_progress_bar=False, enable_model_summary=False,
    enable_checkpointing=False, limit_train_batches=1, limit_val_batches=1,
    num_sanity_val_steps=0, callbacks=[Refuse(stage, kind, [rank])],
)
data = SpiralsDataModule(n=48, n_observed=10, batch_size=4, seed=0)
try:
    trainer.fit(_system(input_dim=2), datamodule=data)
except TrainingStoppedError as e:  # as latentode.cli.main: the line, status 2
    model, solver = isinstance(e, ModelInputError), isinstance(e, SolverInputError)
    print(f"rank {trainer.global_rank}: {type(e).__name__} {model} {solver}: {e}", flush=True)
    leave_process_group()
    end_process(2)
print(f"rank {trainer.global_rank} finished", flush=True)
leave_process_group()
end_process(0)
"""


@pytest.mark.parametrize(
    ("stage", "kind", "rank", "error", "where"),
    [
        ("val", "model", 1, "StepInputError True False", "validation stopped at epoch 0, "),
        ("val", "solver", 0, "StepSolverInputError True True", "validation stopped at epoch 0, "),
        ("train", "solver", 1, "StepSolverInputError True True", "training stopped at epoch 0, "),
    ],
)
def test_a_refused_batch_in_one_of_two_processes_stops_both_with_its_error(
    tmp_path: Path, stage: str, kind: str, rank: int, error: str, where: str
) -> None:
    """Process ``rank``'s first ``stage`` batch is refused (by the model or by the solver).
    Both processes stop with the same error type (a `StepInputError`, the solver's a
    `StepSolverInputError`), the other one's message behind ``process R failed:``. Before,
    in evaluation only the failing process's message was kept, in a plain
    `TrainingStoppedError` on both, and a solver refusal stopped one process with a bare
    `SolverInputError` while the other waited in a collective until gloo's connection closed."""
    script = tmp_path / "ddp_refused.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT / "tests")
    run = [sys.executable, str(script), str(tmp_path / "run"), stage, kind, str(rank)]
    res = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    log = res.stdout + res.stderr
    assert res.returncode == 2, log[-3000:]
    other = 1 - rank
    assert f"rank {rank}: {error}: {where}" in log, log[-3000:]
    assert f"rank {other}: {error}: process {rank} failed: {where}" in log, log[-3000:]
    refusal = "is nan where mask is 1" if kind == "model" else "t must be strictly increasing"
    assert log.count(refusal) == 2
    assert "Traceback" not in log and "Connection closed" not in log


@pytest.mark.parametrize(
    ("stage", "ranks", "where"),
    [
        ("train", [1], "training stopped at epoch 0, batch 0 (global step 0): "),
        ("val", [0, 1], "validation stopped at epoch 0, validation batch 0 (global step 2): "),
    ],
)
def test_the_command_prints_a_failure_once_from_the_failing_process(
    tmp_path: Path, stage: str, ranks: list[int], where: str
) -> None:
    """``latentode fit`` in two SLURM-style processes, the first ``stage`` batch refused in
    the processes ``ranks``: each failing process prints its own message, the other stays
    silent, and every process exits with status 2. Before, every process printed: the other
    one the same message behind ``process R failed:`` (with 8 processes, 8 lines)."""
    env = {**os.environ, **_slurm_env(tmp_path, ntasks=2), "MASTER_PORT": str(_free_port())}
    env.update(PYTHONPATH=str(ROOT / "tests"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "latentode.cli", "fit", "--config", "configs/spirals.yaml"]
    cmd += ["--config", "configs/trainer/ddp.yaml", "--trainer.accelerator", "cpu"]
    cmd += ["--trainer.devices", "2", "--trainer.default_root_dir", str(tmp_path / "run")]
    cmd += [*QUIET_FIT, "--trainer.max_epochs", "1", "--data.init_args.n", "60"]
    cmd += ["--data.init_args.batch_size", "12", "--model.init_args.eval_samples", "2"]
    cmd += ["--trainer.callbacks+=test_guard.Refuse", "--trainer.callbacks.stage", stage]
    cmd += ["--trainer.callbacks.ranks", json.dumps(ranks)]
    procs = []
    for rank in (0, 1):
        env_r = {**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
        out = subprocess.PIPE
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env_r, stdout=out, stderr=out, text=True))
    try:
        ended = [(proc.communicate(timeout=240)[1], proc.returncode) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for rank, (stderr, status) in enumerate(ended):
        assert status == 2, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        lines = [line for line in stderr.splitlines() if line.startswith("latentode: error:")]
        if rank not in ranks:
            assert lines == [], stderr[-3000:]
            continue
        assert len(lines) == 1, stderr[-3000:]
        assert lines[0].startswith(f"latentode: error: {where}values["), lines[0]
        assert "is nan where mask is 1" in lines[0]
