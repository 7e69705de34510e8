"""Random-number states in checkpoints: a fit resumed at an epoch boundary goes on exactly as
the uninterrupted fit would have.

Lightning's checkpoints hold the weights, the optimizer, the schedulers and the loop counters,
but not the random-number generators. A resumed latent ODE fit then draws other posterior
samples, other observation subsets and another shuffle than the run it continues, so its
result differs from the uninterrupted one by the run-to-run noise of training. `RNGCheckpoint`
stores the generators of every process (torch, CUDA, numpy, Python, and the data module's own
training generators, which it lists in a ``generators()`` method) with each checkpoint and
restores them on resume. Every system returns it from ``configure_callbacks``, so any Trainer
that fits them gets it.

Validation and test draws (posterior samples) come from a stream of their own, seeded the same
at every validation (and every test) and set aside from training's: the fit's path does not
depend on how often, or whether, it validates, a checkpoint saved before an epoch's validation
resumes exactly, and one set of weights gets the same validation score, and the same test
score, whenever it is evaluated (``trainer.test`` twice in one process once gave two scores).

A resume from a mid-epoch checkpoint (the SLURM requeue's ``hpc_ckpt_*.ckpt``, or one saved every
N steps) is exact too when the training loader is a `ResumableLoader` (every data module's is):
`RNGCheckpoint` tells it after each batch how far the epoch's pass has got, and the loader
resumes there. With another loader the fit starts a fresh pass over the epoch's remaining
steps, and that continuation is not exact.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_warn

from ..data.resumable import ResumableLoader
from .signals import SafeSignals

__all__ = ["ExactResume", "RNGCheckpoint", "gather_rng_states", "rng_state", "set_rng_state"]

KEY = "latentode_rng"
EVAL_SEED = 20_181_019  # validation's own stream: `RNGCheckpoint.on_validation_start`


def rng_state() -> dict[str, Any]:
    """This process's generator states, as tensors and numbers (a checkpoint read with
    ``torch.load(weights_only=True)`` still loads)."""
    version, internal, gauss_next = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from `rng_state`'s output. CUDA states are restored only where
    this process sees as many devices as the one that saved them."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def gather_rng_states(
    world: int, data: dict[str, torch.Tensor] | None = None
) -> list[dict[str, Any]]:
    """Every process's `rng_state` (with its data generators' states ``data`` under
    ``"data"``), in rank order; a collective when ``world > 1``: all processes must call it
    together."""
    local = {**rng_state(), "data": data or {}}
    if world == 1:
        return [local]
    states: list[Any] = [None] * world
    dist.all_gather_object(states, local)
    return states


def _data_generators(trainer: pl.Trainer) -> dict[str, torch.Generator]:
    """The data module's training generators (its ``generators()``), or none."""
    listed = getattr(trainer.datamodule, "generators", None)
    return listed() if callable(listed) else {}


def _resumable_loaders(trainer: pl.Trainer) -> list[ResumableLoader]:
    """The fit's training loaders that can resume mid-epoch."""
    loaders = trainer.train_dataloader
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    elif not isinstance(loaders, (list, tuple)):
        loaders = [loaders]
    return [dl for dl in loaders if isinstance(dl, ResumableLoader)]


class RNGCheckpoint(pl.Callback):
    """Saves every process's generator states with each checkpoint and restores them on resume.

    The states go under ``checkpoint["latentode_rng"]`` as ``{"world_size": N, "states": [...]}``,
    one entry per process. A resume with another number of processes (or from a checkpoint
    without states) warns and leaves the generators as seeded. After every training batch it
    tells the `ResumableLoader` how much of the epoch is done (Lightning runs checkpoint
    callbacks after the others, so a checkpoint saved at this batch's end counts it).
    """

    _training_state: dict[str, Any] | None = None  # training's generators during validation

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Record that the pass's first ``batch_idx + 1`` batches are trained on."""
        last = batch_idx + 1 >= trainer.num_training_batches
        for loader in _resumable_loaders(trainer):
            loader.finished(batch_idx + 1, last=last)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The epoch is over (also when it ended early): a resume starts a fresh pass."""
        for loader in _resumable_loaders(trainer):
            loader.finished(0, last=True)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Validation draws from a stream of its own, the same at every validation: set the
        generators aside and seed them with `EVAL_SEED` (plus the fit's seed and the rank)."""
        self._evaluation_start(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Give training its generators back as validation found them (before a checkpoint
        saved at this validation's end stores them)."""
        self._evaluation_end()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Test draws from the same stream as validation, seeded alike at every test."""
        self._evaluation_start(trainer)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Give the process its generators back as the test found them."""
        self._evaluation_end()

    def _evaluation_start(self, trainer: pl.Trainer) -> None:
        self._training_state = rng_state()
        base = int(os.environ.get("PL_GLOBAL_SEED", 0))
        torch.manual_seed(EVAL_SEED + base + 7919 * trainer.global_rank)

    def _evaluation_end(self) -> None:
        held, self._training_state = self._training_state, None
        if held is not None:
            set_rng_state(held)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Gather the states of all processes into the checkpoint (every process calls this
        when a checkpoint is saved; process 0 writes it)."""
        world = trainer.world_size
        data = {name: gen.get_state() for name, gen in _data_generators(trainer).items()}
        checkpoint[KEY] = {"world_size": world, "states": gather_rng_states(world, data)}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Restore this process's states (Lightning calls this only when a fit resumes)."""
        saved = checkpoint.get(KEY)
        if saved is None:
            rank_zero_warn(
                "latentode: this checkpoint holds no random-number states (written by an older "
                "version or without RNGCheckpoint); the resumed fit draws fresh random numbers "
                "and will not repeat the uninterrupted run exactly."
            )
            return
        if saved["world_size"] != trainer.world_size:
            rank_zero_warn(
                f"latentode: the checkpoint's random-number states are from "
                f"{saved['world_size']} process(es), this fit runs {trainer.world_size}; they "
                "are not restored, so the resumed fit will not repeat the uninterrupted run "
                "exactly. Resume with the same number of processes for that."
            )
            return
        state = saved["states"][trainer.global_rank]
        set_rng_state(state)
        generators = _data_generators(trainer)
        for name, gen_state in state.get("data", {}).items():
            if name in generators:
                generators[name].set_state(gen_state)


class ExactResume:
    """Mixin for the LightningModules: adds `RNGCheckpoint` and `SafeSignals` to any Trainer
    that fits them."""

    def configure_callbacks(self) -> list[pl.Callback]:
        """The callbacks this system brings to its Trainer."""
        return [RNGCheckpoint(), SafeSignals()]
