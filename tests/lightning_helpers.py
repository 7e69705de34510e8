"""A quiet Lightning trainer for in-process system tests, and a toy module whose optimizer
step can be interrupted by a signal."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


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


class SignalledSGD(torch.optim.Optimizer):
    """Plain SGD counting each parameter's steps in its state (as Adam does), which raises
    ``signum`` between the first and the second parameter's update of step ``at`` (None:
    never): where a requeue signal can land in a real optimizer step."""

    def __init__(self, params: Any, at: int | None, signum: int = signal.SIGUSR1) -> None:
        super().__init__(params, {"lr": 0.1})
        self.at, self.signum, self.steps = at, signum, 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every parameter (the closure: forward and backward)."""
        with torch.enable_grad():
            loss = closure() if closure is not None else None
        params = [p for group in self.param_groups for p in group["params"]]
        for i, p in enumerate(params):
            p.add_(p.grad, alpha=-self.param_groups[0]["lr"])
            state = self.state[p]
            state["step"] = state.get("step", 0) + 1
            if i == 0 and self.steps == self.at:
                signal.raise_signal(self.signum)  # the handler runs before this returns
        self.steps += 1
        return loss


class TwoLayerRegression(pl.LightningModule):
    """Two linear maps trained by `SignalledSGD` on ``x -> sum(x)``; ``signal_at`` and
    ``signum`` as its ``at`` and ``signum``. No callbacks of its own."""

    def __init__(self, signal_at: int | None = None, signum: int = signal.SIGUSR1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
        self.signal_at, self.signum = signal_at, signum

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Squared error of the sum."""
        (x,) = batch
        return (self.second(self.first(x)).squeeze(-1) - x.sum(-1)).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """`SignalledSGD` over both maps."""
        return SignalledSGD(self.parameters(), self.signal_at, self.signum)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """64 fixed points in batches of 4."""
        x = torch.linspace(-1, 1, 128).reshape(64, 2)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4)
