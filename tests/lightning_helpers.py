"""A quiet Lightning trainer for in-process system tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl


def quiet_trainer(root: Path, **kw: Any) -> pl.Trainer:
    """CPU trainer without logger, progress bar or model summary, and without checkpoints
    unless ``enable_checkpointing=True`` (with the ModelCheckpoint callbacks given)."""
    kw.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def tiny_odernn_config(**extra: Any) -> dict[str, Any]:
    """A one-channel latent ODE with an ODE-RNN encoder, 8 units wide: trains in seconds."""
    config = {
        "input_dim": 1,
        "latent_dim": 3,
        "encoder": "odernn",
        "encoder_hidden": 8,
        "dynamics_hidden": 8,
        "decoder_hidden": 8,
    }
    return {**config, **extra}
