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

A resume from a mid-epoch checkpoint (the SLURM requeue's ``hpc_ckpt_*.ckpt``) restores the
generators as they were at the signal, but the data loader then starts a fresh pass over the
epoch's remaining steps, so that continuation is not exact.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_warn

__all__ = ["ExactResume", "RNGCheckpoint", "gather_rng_states", "rng_state", "set_rng_state"]

KEY = "latentode_rng"


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


class RNGCheckpoint(pl.Callback):
    """Saves every process's generator states with each checkpoint and restores them on resume.

    The states go under ``checkpoint["latentode_rng"]`` as ``{"world_size": N, "states": [...]}``,
    one entry per process. A resume with another number of processes (or from a checkpoint
    without states) warns and leaves the generators as seeded.
    """

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
    """Mixin for the LightningModules: adds `RNGCheckpoint` to any Trainer that fits them."""

    def configure_callbacks(self) -> list[pl.Callback]:
        """The callbacks this system brings to its Trainer."""
        return [RNGCheckpoint()]
