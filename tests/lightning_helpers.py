"""A quiet Lightning trainer for in-process system tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl


def quiet_trainer(root: Path, **kw: Any) -> pl.Trainer:
    """CPU trainer without logger, progress bar, model summary or checkpoints."""
    return pl.Trainer(
        default_root_dir=root,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kw,
    )
