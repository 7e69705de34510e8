"""SLURM's requeue signal landing inside an optimizer step: `SafeRequeue` saves the requeue
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
from latentode.systems.requeue import SafeRequeue

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
    callbacks = [SafeRequeue(), snapshots] if safe else [snapshots]
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
    """The scenario above is the fault: without `SafeRequeue`, Lightning's handler saves with
    the first layer's weight updated and the rest not (if Lightning ever defers the save
    itself, this fails, and `SafeRequeue` can go)."""
    saved, snaps = _fit(tmp_path, monkeypatch, safe=False)
    assert saved["global_step"] == SIGNAL_AT
    assert _steps(saved) == [SIGNAL_AT + 1] + [SIGNAL_AT] * 3
    before, after = snaps.weights[SIGNAL_AT], snaps.weights[SIGNAL_AT + 1]
    kept = saved["state_dict"]
    assert torch.equal(kept["first.weight"], after["first.weight"])
    assert torch.equal(kept["second.weight"], before["second.weight"])


def test_systems_bring_safe_requeue() -> None:
    for system in (LatentODESystem(tiny_odernn_config()), ODENetSystem(model="mlp", width=8)):
        assert SafeRequeue in {type(c) for c in system.configure_callbacks()}


_DDP_SCRIPT = """
import os, sys
import torch
from lightning_helpers import TwoLayerRegression, quiet_trainer, tiny_odernn_config
from latentode.systems.guard import leave_process_group
from latentode.systems.requeue import SafeRequeue

root, signalled = sys.argv[1], int(sys.argv[2])
rank = int(os.environ["SLURM_PROCID"])
model = TwoLayerRegression(signal_at=2 if rank == signalled else None)
trainer = quiet_trainer(root, devices=2, strategy="ddp", max_steps=5, callbacks=[SafeRequeue()])
trainer.fit(model)
print(f"rank {rank} finished at step {trainer.global_step}", flush=True)
torch.save(model.state_dict(), os.path.join(root, f"final{rank}.pt"))
leave_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_processes_save_the_requeue_checkpoint_together(tmp_path: Path) -> None:
    """Only process 1 gets the signal (inside its step 2). Both processes must save at the end
    of that step and go on; Lightning's handler would run the save's barrier on process 1 alone
    while process 0 waits in the gradient all-reduce (and, process 1 not being process 0,
    write nothing)."""
    script = tmp_path / "ddp_requeue.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, **_slurm_env(tmp_path, ntasks=2), "MASTER_PORT": str(_free_port())}
    env["PYTHONPATH"] = str(ROOT / "tests")
    env["OMP_NUM_THREADS"] = "1"
    procs = []
    for rank in (0, 1):
        env_r = {**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
        cmd = [sys.executable, str(script), str(tmp_path), "1"]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env_r,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=180)[0])
    finally:
        for proc in procs:
            proc.kill()
    log = "\n".join(logs)
    assert [p.returncode for p in procs] == [0, 0], log[-3000:]
    assert "rank 0 finished at step 5" in log and "rank 1 finished at step 5" in log
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", JOB]  # process 0's
    saved = torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    assert _steps(saved) == [3] * 4
    final0 = torch.load(tmp_path / "final0.pt", weights_only=True)
    final1 = torch.load(tmp_path / "final1.pt", weights_only=True)
    assert _same(final0, final1)  # the processes stayed in step
