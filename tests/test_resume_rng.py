"""A fit resumed from an epoch's checkpoint repeats the uninterrupted fit exactly.

The checkpoints carry every random-number generator the fit draws from (`RNGCheckpoint`: torch,
numpy, Python, and the data module's own shuffle and subset generators), per process.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning_helpers import quiet_trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from latentode.cli import STOP_NOTE, LastCheckpoint
from latentode.data.csv_module import CSVDataModule
from latentode.data.datamodules import SpiralsDataModule
from latentode.data.resumable import ResumableLoader
from latentode.data.toy_modules import Toy2DDataModule
from latentode.nn.latent_ode import LatentODEConfig
from latentode.systems import LatentODESystem, RNGCheckpoint
from latentode.systems.rng import gather_rng_states, rng_state, set_rng_state

DATA = Path(__file__).resolve().parents[1] / "data"


def _fit(
    root: Path,
    ckpt: Path | None = None,
    keep_rng: bool = True,
    val_batches: int = 1,
    callbacks: tuple[pl.Callback, ...] = (),
) -> LatentODESystem:
    """Two epochs of a tiny Latent ODE on 60 spirals (4 batches each), a checkpoint per epoch
    under ``root`` and one per step under ``root / "steps"``; resumed from ``ckpt`` if given.
    ``keep_rng=False`` drops `RNGCheckpoint`; ``val_batches``: validation batches per epoch;
    ``callbacks``: more callbacks."""
    pl.seed_everything(0)
    cfg = LatentODEConfig(input_dim=2, latent_dim=4, encoder_hidden=8, dynamics_hidden=8)
    system = LatentODESystem(cfg, eval_samples=2)
    if not keep_rng:
        system.configure_callbacks = list  # type: ignore[method-assign]  # no callbacks
    every = ModelCheckpoint(dirpath=root, filename="{epoch}", monitor=None, save_top_k=-1)
    steps = ModelCheckpoint(
        dirpath=root / "steps", filename="{step}", every_n_train_steps=1, save_top_k=-1
    )
    trainer = quiet_trainer(
        root,
        enable_checkpointing=True,
        max_epochs=2,
        limit_val_batches=val_batches,
        callbacks=[every, steps, *callbacks],
    )
    data = SpiralsDataModule(n=60, n_observed=30, batch_size=12, seed=0)
    trainer.fit(system, datamodule=data, ckpt_path=ckpt)
    return system


class _Terminate(pl.Callback):
    """Sends this process SIGTERM as training batch ``step`` (global step) starts, or as
    validation batch 0 of epoch ``epoch`` starts."""

    def __init__(self, step: int | None = None, epoch: int | None = None) -> None:
        self.step, self.epoch = step, epoch

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            signal.raise_signal(signal.SIGTERM)

    def on_validation_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.current_epoch == self.epoch and not trainer.sanity_checking:
            signal.raise_signal(signal.SIGTERM)


def test_a_fit_stopped_by_sigterm_saves_and_resumes_exactly(tmp_path: Path) -> None:
    """SIGTERM (a preemption): the fit stops at the end of the batch the signal came in
    (`SafeSignals`), or of the validation, where `LastCheckpoint` saves ``last.ckpt``, and the
    resumed fit ends on the uninterrupted fit's weights."""
    whole = _fit(tmp_path / "whole")
    # inside epoch 0, its last batch, inside epoch 1, and during epoch 0's validation
    for step, epoch in ((1, None), (3, None), (5, None), (None, 0)):
        root = tmp_path / f"stopped{step}{epoch}"
        last = LastCheckpoint(dirpath=root / "last", filename="last", monitor=None)
        with pytest.raises(SIGTERMException) as stop:
            _fit(root, callbacks=(last, _Terminate(step=step, epoch=epoch)))
        ckpt = root / "last" / "last.ckpt"
        done = 4 if step is None else step + 1
        assert torch.load(ckpt, weights_only=True)["global_step"] == done, step
        note = getattr(stop.value, STOP_NOTE)
        assert f"global step {done}; saved {ckpt}. Resume with --ckpt_path last." in note
        resumed = _fit(tmp_path / f"resumed{step}{epoch}", ckpt=ckpt)
        assert _max_difference(whole, resumed) == 0.0, step
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # given back


def _loader_state(ckpt: Path) -> dict:
    """The training loader's saved position (Lightning keeps it with the fit loop's state)."""
    loops = torch.load(ckpt, weights_only=True)["loops"]
    return loops["fit_loop"]["state_dict"]["combined_loader"][0]


def _max_difference(a: pl.LightningModule, b: pl.LightningModule) -> float:
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max(float((x - y).detach().abs().max()) for x, y in pairs)


def test_resumed_fit_repeats_the_uninterrupted_one(tmp_path: Path) -> None:
    whole = _fit(tmp_path / "whole")
    epoch0 = tmp_path / "whole" / "epoch=0.ckpt"
    saved = torch.load(epoch0, weights_only=True)  # plain tensors and numbers only
    assert saved["latentode_rng"]["world_size"] == 1
    assert set(saved["latentode_rng"]["states"][0]["data"]) == {"subsets", "shuffle"}
    resumed = _fit(tmp_path / "resumed", ckpt=epoch0)
    assert _max_difference(whole, resumed) == 0.0
    # the control: without the states the same resume lands elsewhere (measured 0.03)
    loose = _fit(tmp_path / "loose", ckpt=epoch0, keep_rng=False)
    assert _max_difference(whole, loose) > 1e-3


def test_a_fit_resumed_mid_epoch_repeats_the_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkpoints after the second batch of each epoch (mid-epoch) and after the epoch's last
    batch: every resume ends on the uninterrupted fit's weights exactly. The training loader
    (`ResumableLoader`) rewinds the epoch's shuffle and skips the batches already trained on."""
    whole = _fit(tmp_path / "whole")
    steps = tmp_path / "whole" / "steps"
    assert sorted(p.name for p in steps.glob("*.ckpt")) == [f"step={i}.ckpt" for i in range(1, 9)]
    for step, finished, complete in ((2, 2, False), (4, 4, True), (6, 2, False)):
        ckpt = steps / f"step={step}.ckpt"
        loader = _loader_state(ckpt)
        assert (loader["finished"], loader["complete"]) == (finished, complete), step
        resumed = _fit(tmp_path / f"resumed{step}", ckpt=ckpt)
        assert _max_difference(whole, resumed) == 0.0, step
        # resumed again: its own step checkpoints match the whole fit's
        again = _loader_state(tmp_path / f"resumed{step}" / "steps" / "step=8.ckpt")
        assert (again["finished"], again["complete"]) == (4, True)
    # the control: a loader that ignores its saved state starts a fresh shuffle (measured 0.03)
    monkeypatch.setattr(ResumableLoader, "load_state_dict", lambda self, state: None)
    loose = _fit(tmp_path / "loose", ckpt=steps / "step=2.ckpt")
    assert _max_difference(whole, loose) > 1e-3


def test_training_does_not_depend_on_validation(tmp_path: Path) -> None:
    """Validation draws its posterior samples from a stream of its own: a fit that never
    validates ends on the same weights, and the same weights score the same twice."""
    whole = _fit(tmp_path / "whole", val_batches=1)
    blind = _fit(tmp_path / "blind", val_batches=0)
    assert _max_difference(whole, blind) == 0.0
    data = SpiralsDataModule(n=60, n_observed=30, batch_size=12, seed=0)
    scores = [
        quiet_trainer(tmp_path, limit_val_batches=1).validate(whole, datamodule=data, verbose=False)
        for _ in range(2)
    ]
    torch.rand(5)  # the global stream moves between the two validations; the scores do not
    assert scores[0] == scores[1] and scores[0][0]["val/mse"] > 0
    # the control: without `RNGCheckpoint` validation's draws shift training's (measured 0.02)
    loose = _fit(tmp_path / "loose", keep_rng=False)
    assert _max_difference(whole, loose) > 1e-3


def _tensors(obj: object) -> list[torch.Tensor]:
    """Every tensor in a batch (tensors, tuples, lists and dataclasses such as `Split`)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _tensors(x)]
    if dataclasses.is_dataclass(obj):
        return [t for f in dataclasses.fields(obj) for t in _tensors(getattr(obj, f.name))]
    return []


DATA_MODULES = {
    "spirals": lambda: SpiralsDataModule(n=60, n_observed=30, batch_size=12, seed=0),
    "csv, train_keep 0.5": lambda: CSVDataModule(
        str(DATA / "fertility_worldbank.csv"), holdout=10.0, seed=2, batch_size=16, train_keep=0.5
    ),
    "toy, fixed sample": lambda: Toy2DDataModule("moons", batch_size=10, train_size=60, seed=0),
}


@pytest.mark.parametrize("name", list(DATA_MODULES))
def test_every_training_loader_resumes_inside_a_pass(name: str) -> None:
    """Another process (a fresh data module) given the generators' states and the loader's
    position after 2 batches serves exactly the batches the pass had left, collation draws
    included; after a complete pass it starts the next pass as the first process does."""
    dm = DATA_MODULES[name]()
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader) and len(loader) >= 4
    batches = iter(loader)
    head = [next(batches), next(batches)]
    loader.finished(2)
    state, generators = loader.state_dict(), {k: g.get_state() for k, g in dm.generators().items()}
    rest = list(batches)
    loader.finished(len(loader), last=True)
    end_state = loader.state_dict()
    end_generators = {k: g.get_state() for k, g in dm.generators().items()}
    next_pass = list(loader)

    def resumed(position: dict, states: dict) -> list:
        other = DATA_MODULES[name]()
        other.setup("fit")
        for k, g in other.generators().items():
            g.set_state(states[k])
        loader = other.train_dataloader()
        loader.load_state_dict(position)
        return list(loader)

    for got, want in (
        (resumed(state, generators), rest),
        (resumed(end_state, end_generators), next_pass),
    ):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            pairs = zip(_tensors(a), _tensors(b), strict=True)
            assert all(torch.equal(x, y) for x, y in pairs)
    # the control: the head's batches are not the rest's (a skip that did nothing would fail)
    pairs = zip(_tensors(head[0]), _tensors(rest[0]), strict=True)
    assert not all(torch.equal(x, y) for x, y in pairs)


def test_rng_state_round_trips() -> None:
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_resume_with_another_number_of_processes_warns_and_keeps_the_seeded_state() -> None:
    trainer = SimpleNamespace(world_size=1, global_rank=0, datamodule=None)
    checkpoint = {"latentode_rng": {"world_size": 2, "states": [rng_state(), rng_state()]}}
    before = torch.get_rng_state()
    with pytest.warns(UserWarning, match="from 2 process"):
        RNGCheckpoint().on_load_checkpoint(trainer, None, checkpoint)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), before)
    with pytest.warns(UserWarning, match="holds no random-number states"):
        RNGCheckpoint().on_load_checkpoint(trainer, None, {})  # type: ignore[arg-type]


def _worker(rank: int, init: str, out: Path) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.manual_seed(100 + rank)
        states = gather_rng_states(2, {"shuffle": torch.Generator().manual_seed(rank).get_state()})
        own = torch.rand(2)
        set_rng_state(states[rank])
        again = torch.rand(2)
        set_rng_state(states[1 - rank])
        other = torch.rand(2)
        torch.save({"own": own, "again": again, "other": other}, out / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_every_process_gets_its_own_state_back(tmp_path: Path) -> None:
    """Two gloo processes gather their states; each restores its own (same draws again) and
    the other's (the other's draws)."""
    mp.spawn(_worker, args=(f"file://{tmp_path / 'rendezvous'}", tmp_path), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1)]
    for rank in (0, 1):
        assert torch.equal(got[rank]["own"], got[rank]["again"])
        assert torch.equal(got[rank]["other"], got[1 - rank]["own"])
    assert not torch.equal(got[0]["own"], got[1]["own"])


_DDP_SCRIPT = """
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from latentode.data.datamodules import SpiralsDataModule
from latentode.nn.latent_ode import LatentODEConfig
from latentode.systems import LatentODESystem
from latentode.systems.guard import end_process, leave_process_group

root, ckpt = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else None)
pl.seed_everything(0)
cfg = LatentODEConfig(input_dim=2, latent_dim=4, encoder_hidden=8, dynamics_hidden=8)
system = LatentODESystem(cfg, eval_samples=2)
steps = ModelCheckpoint(
    dirpath=root / "steps", filename="{step}", every_n_train_steps=1, save_top_k=-1
)
trainer = pl.Trainer(
    default_root_dir=root, accelerator="cpu", devices=2, strategy="ddp", logger=False,
    enable_progress_bar=False, enable_model_summary=False, max_epochs=2, limit_val_batches=1,
    callbacks=[steps],
)
data = SpiralsDataModule(n=120, n_observed=30, batch_size=12, seed=0)
trainer.fit(system, datamodule=data, ckpt_path=ckpt)
if trainer.global_rank == 0:
    torch.save(system.state_dict(), root / "final.pt")
if leave_process_group():
    end_process(0)
"""


def test_a_two_process_fit_resumed_mid_epoch_repeats_the_uninterrupted_one(tmp_path: Path) -> None:
    """Two gloo processes (Lightning's `DistributedSampler`, 4 batches per process and epoch):
    resumed after the second batch of epoch 0 and of epoch 1, the fit ends on the uninterrupted
    fit's weights exactly."""
    script = tmp_path / "fit.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def fit(root: Path, *ckpt: Path) -> dict[str, torch.Tensor]:
        run = [sys.executable, str(script), str(root), *map(str, ckpt)]
        res = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
        return torch.load(root / "final.pt", weights_only=True)

    whole = fit(tmp_path / "whole")
    steps = tmp_path / "whole" / "steps"
    assert len(list(steps.glob("*.ckpt"))) == 8  # 4 steps per epoch: 96 spirals, 2 x 12 a step
    for step in (2, 6):
        resumed = fit(tmp_path / f"resumed{step}", steps / f"step={step}.ckpt")
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), step
