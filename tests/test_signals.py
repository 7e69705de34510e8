"""SLURM's requeue signal landing inside an optimizer step: `SafeSignals` saves the requeue
checkpoint after the step, in one process and in two DDP processes that got the signal at
different steps. Lightning's own handler saves inside the step (shown in one process)."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from cli_helpers import ROOT
from lightning_helpers import TwoLayerRegression, quiet_trainer, tiny_odernn_config

from latentode.systems import LatentODESystem, ODENetSystem
from latentode.systems.signals import SafeSignals

JOB = "4242"
SIGNAL_AT = 3  # the optimizer step (0-based) during which the signal comes


def _slurm_env(tmp_path: Path, ntasks: int) -> dict[str, str]:
    """SLURM's variables for one node with ``ntasks`` tasks, and a stand-in ``scontrol`` that
    logs its arguments to ``tmp_path / "scontrol.log"``."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    scontrol = fake / "scontrol"
    scontrol.write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n')
    scontrol.chmod(0o755)
    return {
        "PATH": f"{fake}:{os.environ['PATH']}",
        "SCONTROL_LOG": str(tmp_path / "scontrol.log"),
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": str(ntasks),
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NNODES": "1",
        "SLURM_JOB_NAME": "latentode-test",
        "SLURM_JOB_ID": JOB,
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
    }


class _Snapshots(pl.Callback):
    """The weights after every training batch, by global step."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.weights[trainer.global_step] = copy.deepcopy(pl_module.state_dict())


def _fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, safe: bool) -> tuple[dict, _Snapshots]:
    """Fit `TwoLayerRegression` 6 steps under SLURM's variables, the signal coming inside step
    `SIGNAL_AT`; the requeue checkpoint and the snapshots."""
    for key, value in _slurm_env(tmp_path, ntasks=1).items():
        monkeypatch.setenv(key, value)
    snapshots = _Snapshots()
    callbacks = [SafeSignals(), snapshots] if safe else [snapshots]
    trainer = quiet_trainer(tmp_path, max_steps=6, callbacks=callbacks)
    trainer.fit(TwoLayerRegression(signal_at=SIGNAL_AT))
    assert trainer.global_step == 6  # the fit goes on until SLURM ends it
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", JOB]
    return torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=True), snapshots


def _steps(saved: dict) -> list[int]:
    return [int(s["step"]) for s in saved["optimizer_states"][0]["state"].values()]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_requeue_checkpoint_is_saved_after_the_interrupted_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved, snaps = _fit(tmp_path, monkeypatch, safe=True)
    done = SIGNAL_AT + 1
    assert saved["global_step"] == done
    assert _steps(saved) == [done] * 4  # every parameter's count: the step is whole
    assert _same(saved["state_dict"], snaps.weights[done])
    progress = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert progress["processed"] == done  # saved at the batch's end, as a per-step checkpoint
    assert progress["completed"] == done - 1  # Lightning counts it after the callbacks
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # given back after the fit


def test_lightning_alone_saves_inside_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scenario above is the fault: without `SafeSignals`, Lightning's handler saves with
    the first layer's weight updated and the rest not (if Lightning ever defers the save
    itself, this fails, and `SafeSignals` can go)."""
    saved, snaps = _fit(tmp_path, monkeypatch, safe=False)
    assert saved["global_step"] == SIGNAL_AT
    assert _steps(saved) == [SIGNAL_AT + 1] + [SIGNAL_AT] * 3
    before, after = snaps.weights[SIGNAL_AT], snaps.weights[SIGNAL_AT + 1]
    kept = saved["state_dict"]
    assert torch.equal(kept["first.weight"], after["first.weight"])
    assert torch.equal(kept["second.weight"], before["second.weight"])


def test_systems_bring_safe_signals() -> None:
    for system in (LatentODESystem(tiny_odernn_config()), ODENetSystem(model="mlp", width=8)):
        assert SafeSignals in {type(c) for c in system.configure_callbacks()}


_DDP_SCRIPT = """
import os, signal, sys
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from lightning_helpers import TwoLayerRegression, quiet_trainer
from latentode.systems.guard import end_process, leave_process_group
from latentode.systems.signals import SafeSignals

root, signalled, signum = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rank = int(os.environ["SLURM_PROCID"])
model = TwoLayerRegression(signal_at=2 if rank == signalled else None, signum=signum)
trainer = quiet_trainer(root, devices=2, strategy="ddp", max_steps=5, callbacks=[SafeSignals()])
status = 0
try:
    trainer.fit(model)
except SIGTERMException:
    status = 143
print(f"rank {rank} ended at step {trainer.global_step}", flush=True)
torch.save(model.state_dict(), os.path.join(root, f"final{rank}.pt"))
leave_process_group()
end_process(status)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(tmp_path: Path, signum: int) -> tuple[list[int | None], str]:
    """Fit `TwoLayerRegression` 5 steps in two SLURM-style gloo processes; process 1 alone
    gets ``signum`` inside its step 2. The exit statuses and the output."""
    script = tmp_path / "ddp_signals.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, **_slurm_env(tmp_path, ntasks=2), "MASTER_PORT": str(_free_port())}
    env["PYTHONPATH"] = str(ROOT / "tests")
    env["OMP_NUM_THREADS"] = "1"
    procs = []
    for rank in (0, 1):
        env_r = {**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
        cmd = [sys.executable, str(script), str(tmp_path), "1", str(int(signum))]
        out = subprocess.PIPE
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env_r, stdout=out, stderr=out, text=True))
    logs = []
    try:
        for proc in procs:
            logs.append("".join(proc.communicate(timeout=180)))
    finally:
        for proc in procs:
            proc.kill()
    final = [torch.load(tmp_path / f"final{r}.pt", weights_only=True) for r in (0, 1)]
    assert _same(*final)  # the processes stayed in step
    return [p.returncode for p in procs], "\n".join(logs)


def test_ddp_processes_save_the_requeue_checkpoint_together(tmp_path: Path) -> None:
    """Both processes save at the end of the step process 1 got the requeue signal in, and go
    on; Lightning's handler would run the save's barrier on process 1 alone while process 0
    waits in the gradient all-reduce (it hung), and, process 1 not being process 0, write
    nothing."""
    codes, log = _two_processes(tmp_path, signal.SIGUSR1)
    assert codes == [0, 0], log[-3000:]
    assert "rank 0 ended at step 5" in log and "rank 1 ended at step 5" in log
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", JOB]  # process 0's
    saved = torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    assert _steps(saved) == [3] * 4


def test_ddp_processes_stop_together_on_sigterm(tmp_path: Path) -> None:
    """Both processes stop at the end of the step process 1 got SIGTERM in (Lightning alone
    stops process 1 there and lets process 0 go on to the next step's collectives)."""
    codes, log = _two_processes(tmp_path, signal.SIGTERM)
    assert codes == [143, 143], log[-3000:]
    assert "rank 0 ended at step 3" in log and "rank 1 ended at step 3" in log
    assert not (tmp_path / "scontrol.log").exists()
