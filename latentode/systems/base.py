"""The shared Lightning wrapper of the sequence models (latent ODE and its baselines).

A batch is a `Split` (``observed``, ``target``, ``heldout_mask``). Subclasses say how to compute
the training loss and the prediction; this class does the optimizer, the metrics of each stage
and the function-evaluation counts (forward and backward per training step, Chen 2018 Fig. 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from ..data.batch import Split
from ..nn.base import ModelInputError, Prediction
from .guard import guarded
from .metrics import ChannelErrors, ForecastMetrics, count_nfe
from .rng import ExactResume
from .schedules import check_optimizer

__all__ = ["SequenceSystem"]


class SequenceSystem(ExactResume, pl.LightningModule):
    """Optimizer, metrics and NFE logging for models trained on `Split` batches.

    Args:
        lr: learning rate.
        optimizer: ``"adam"`` (Chen 2018) or ``"adamax"`` (Rubanova 2019).
        lr_decay: multiplicative learning-rate decay per optimizer step (Rubanova: 0.999).
        weight_decay: L2 penalty of the optimizer.
    """

    def __init__(
        self,
        lr: float = 1e-2,
        optimizer: Literal["adam", "adamax"] = "adam",
        lr_decay: float = 1.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        check_optimizer(lr, weight_decay, ModelInputError)
        if optimizer not in ("adam", "adamax"):
            raise ModelInputError(f"optimizer must be 'adam' or 'adamax'; got {optimizer!r}.")
        if not 0 < lr_decay <= 1:
            raise ModelInputError(
                f"lr_decay multiplies the learning rate every step: 0 < lr_decay <= 1 (1: "
                f"constant, Rubanova 0.999); got {lr_decay}."
            )
        self.lr, self.optimizer_name = lr, optimizer
        self.lr_decay, self.weight_decay = lr_decay, weight_decay
        self.val_metrics = ForecastMetrics("val")
        self.test_metrics = ForecastMetrics("test")
        self.channel_metrics = nn.ModuleDict()  # stage -> ChannelErrors, see `score_channels`
        self._nfe_after_forward = 0

    def score_channels(self, channels: Sequence[str], scale: Sequence[float]) -> None:
        """Also log the held-out RMSE and MAE of each channel in the user's units
        (``val/rmse[<channel>]``, ``val/mae[<channel>]``, same for test).

        Args:
            channels: channel names.
            scale: per channel, the std the values were divided by (1 if not normalised).
        """
        self.channel_metrics = nn.ModuleDict(
            {stage: ChannelErrors(channels, scale) for stage in ("val", "test")}
        )

    def setup(self, stage: str) -> None:
        """Refuse a half-precision model (``"16-true"``, ``"bf16-true"``) before any step.

        Its state and times would be half precision too: 3 significant digits (1 in 512 for
        bfloat16) merge nearby observation times and round the latent state every step.
        Mixed precision (``"16-mixed"``, ``"bf16-mixed"``) runs the networks' matrix
        products in half precision and the solver in float32 (`latentode.solver.solve`).
        """
        super().setup(stage)
        self._check_channels()
        precision = str(self.trainer.precision) if self._trainer is not None else ""
        if precision in ("16-true", "bf16-true"):  # Lightning reads "16" / "bf16" as mixed
            mixed = precision.split("-")[0] + "-mixed"
            raise ModelInputError(
                f"--trainer.precision {precision} makes the model's weights, its ODE state "
                "and the observation times half precision, which merges nearby times and "
                f"rounds the state every solver step. Use --trainer.precision {mixed} (half "
                "precision matrix products, the solver in float32), 32-true or 64-true."
            )

    def _check_channels(self) -> None:
        """Refuse, before any step, a model whose ``input_dim`` is not the number of channels
        of a data module that states it (``n_features``: the synthetic modules)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        n = getattr(dm, "n_features", None)
        encoder = getattr(self.model, "encoder", self.model)  # a latent ODE's, or a baseline
        input_dim = getattr(encoder, "input_dim", None)
        if n is None or input_dim is None or input_dim == n:
            return
        raise ModelInputError(
            f"the model's input_dim is {input_dim} but {type(dm).__name__} has {n} channel"
            f"{'s' if n != 1 else ''}: set the model's input_dim to {n}."
        )

    # ------------------------------------------------------------------ to implement
    def training_loss(self, split: Split) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of one training batch and extra scalars to log."""
        raise NotImplementedError

    def predict_split(self, split: Split) -> Prediction:
        """Predictive mean and std at ``split.target.times`` given ``split.observed``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    @guarded
    def training_step(self, split: Split, batch_idx: int) -> Tensor:
        """One optimisation step on ``split``."""
        for m in self.modules():
            if hasattr(m, "reset_nfe"):
                m.reset_nfe()
        loss, extra = self.training_loss(split)
        self._nfe_after_forward = count_nfe(self)
        B = split.observed.batch_size
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log("train/nfe_forward", float(self._nfe_after_forward), batch_size=B)
        for name, value in extra.items():
            self.log(f"train/{name}", value, batch_size=B)
        return loss

    def on_after_backward(self) -> None:
        """Log the evaluations the backward pass made (adjoint / checkpoint recomputation)."""
        self.log("train/nfe_backward", float(count_nfe(self) - self._nfe_after_forward))

    def configure_optimizers(self) -> Any:
        """Adam or Adamax with an optional per-step exponential decay."""
        cls = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[self.optimizer_name]
        opt = cls(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_decay == 1.0:
            return opt
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.lr_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, split: Split, metrics: ForecastMetrics) -> None:
        pred = self.predict_split(split)
        target = split.target
        metrics.update(pred.mean, pred.std, target.values, target.mask, split.heldout_mask)
        if metrics.stage in self.channel_metrics:
            self.channel_metrics[metrics.stage].update(
                pred.mean.detach(), target.values, split.heldout_mask
            )
        B = split.observed.batch_size
        for col in metrics.collections():
            self.log_dict(col, on_step=False, on_epoch=True, batch_size=B)

    @guarded
    def validation_step(self, split: Split, batch_idx: int) -> None:
        """Score the validation split (held-out and all points)."""
        self._evaluate(split, self.val_metrics)

    @guarded
    def test_step(self, split: Split, batch_idx: int) -> None:
        """Score the test split (held-out and all points)."""
        self._evaluate(split, self.test_metrics)

    def on_validation_epoch_end(self) -> None:
        """Log the per-channel errors in the user's units (if `score_channels` was called)."""
        self._log_channels("val")

    def on_test_epoch_end(self) -> None:
        """Log the per-channel errors in the user's units (if `score_channels` was called)."""
        self._log_channels("test")

    def _log_channels(self, stage: str) -> None:
        if stage not in self.channel_metrics:
            return
        metric = self.channel_metrics[stage]
        values = metric.compute()  # synchronised across processes (every one calls this)
        metric.reset()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value.float())

    def predict_step(self, split: Split, batch_idx: int) -> Prediction:
        """The prediction for one batch (used by ``trainer.predict``)."""
        return self.predict_split(split)
