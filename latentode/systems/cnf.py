"""Lightning system of the continuous normalizing flow (Chen 2018 sec. 4; FFJORD; RNODE).

Trains a `CNF` by maximum likelihood, optionally with the RNODE kinetic-energy and
Jacobian-Frobenius penalties, and scores the negative log-likelihood in nats and in bits per
dimension (one torchmetrics `MeanMetric` per stage). Evaluation uses the exact trace by default
(cheap in 2-D), so validation and test NLL carry no Hutchinson noise.

Usage::

    latentode fit --config configs/cnf_checkerboard.yaml
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ..data.errors import same_on_every_process
from ..nn.cnf import CNF, CNFInputError
from .guard import guarded
from .rng import ExactResume
from .schedules import check_optimizer, check_schedule, make_schedule

__all__ = ["CNFSystem"]


class CNFSystem(ExactResume, pl.LightningModule):
    """Maximum-likelihood training of a `CNF` on batches of points ``(B, d)``.

    Logs ``train/loss`` (NLL + penalty), ``train/nll``, ``train/nfe_forward``,
    ``train/nfe_backward`` (and ``train/kinetic``, ``train/jacobian`` with RNODE), and per
    epoch ``val/nll``, ``val/bits_per_dim``, ``val/nfe`` (and the same for ``test``).

    Args:
        dim: data dimension d.
        hidden: hidden widths of the concat-squash field.
        activation: ``"softplus"`` or ``"tanh"``.
        T: integration time.
        divergence: ``"exact"`` or ``"hutchinson"`` during training.
        noise: Hutchinson noise, ``"rademacher"`` or ``"gaussian"``.
        method, rtol, atol, gradient: solver settings of the solves.
        step_size: the step of a fixed-step method (euler, midpoint, heun, rk4), which needs
            one: e.g. ``T / 20``; None for the adaptive methods.
        kinetic_weight, jacobian_weight: RNODE weights (Finlay et al.: 0.01 each; 0 turns off).
        eval_exact: score validation and test with the exact trace.
        lr: Adam learning rate.
        weight_decay: L2 penalty.
        lr_schedule: ``"constant"`` or ``"cosine"`` (to zero over the trainer's optimizer
            steps, ``estimated_stepping_batches``; stepped every batch).

    Raises:
        CNFInputError: a bad argument; in `setup`, a data module whose points have another
            dimension than ``dim``.
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: Sequence[int] = (64, 64, 64),
        activation: str = "softplus",
        T: float = 1.0,
        divergence: str = "exact",
        noise: str = "rademacher",
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        step_size: float | None = None,
        gradient: str = "backprop",
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        eval_exact: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        check_schedule(lr_schedule, CNFInputError)
        check_optimizer(lr, weight_decay, CNFInputError)
        if isinstance(hidden, tuple):  # a list: plain values for weights_only
            hidden = list(hidden)
        self.save_hyperparameters()
        self.hparams["hidden"] = hidden  # as given: `CNF` refuses widths that are not ints
        self.flow = CNF(
            dim,
            hidden,
            activation,
            T=T,
            divergence=divergence,
            noise=noise,
            method=method,
            rtol=rtol,
            atol=atol,
            step_size=step_size,
            gradient=gradient,
            kinetic_weight=kinetic_weight,
            jacobian_weight=jacobian_weight,
        )
        self.eval_exact, self.lr, self.weight_decay = eval_exact, lr, weight_decay
        self.lr_schedule = lr_schedule
        self.nll = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.bpd = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.nfe = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})

    def setup(self, stage: str) -> None:
        """Check the dimension of the data module's points against ``dim`` once, before any
        step (`check_data`); a data module that holds no sample of points (``train_x``,
        ``val_x``, ``test_x``: `Toy2DDataModule`'s, drawn in its ``setup``, which Lightning
        calls first) is not checked."""
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        dim = _points_dim(dm)
        if dim is not None:
            self.check_data(type(dm).__name__, dim)

    def check_data(self, name: str, dim: int) -> None:
        """Refuse points the flow cannot model.

        Args:
            name: the data's name, for the message.
            dim: the dimension of its points.

        Raises:
            CNFInputError: ``dim`` differs from the flow's.
        """
        if dim != self.flow.dim:  # every process of a multi-process run: printed once
            raise same_on_every_process(
                CNFInputError(
                    f"the points of {name} are {dim}-D but the model takes dim={self.flow.dim}: "
                    f"set --model.init_args.dim {dim}."
                )
            )

    @staticmethod
    def _points(batch: Tensor | Sequence[Tensor]) -> Tensor:
        return batch if isinstance(batch, Tensor) else batch[0]

    def forward(self, x: Tensor) -> Tensor:
        """``log p(x)``: ``(B, d) -> (B,)``."""
        return self.flow.log_prob(x)

    @guarded
    def training_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> Tensor:
        """Mean of ``penalty - log p(x)`` over the batch."""
        x = self._points(batch)  # (B, d)
        out = self.flow(x)
        nll = -out.log_prob.mean()
        loss = nll + out.penalty.mean()
        B = x.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log("train/nll", nll, batch_size=B)
        self.log("train/nfe_forward", float(self.flow.nfe_forward), batch_size=B)
        if out.kinetic is not None and out.jacobian is not None:
            self.log("train/kinetic", out.kinetic.mean(), batch_size=B)
            self.log("train/jacobian", out.jacobian.mean(), batch_size=B)
        return loss

    def on_after_backward(self) -> None:
        """Log the evaluations of the backward pass (adjoint / checkpointing; 0 for backprop)."""
        self.log("train/nfe_backward", float(self.flow.nfe_backward))

    @contextmanager
    def _eval_divergence(self) -> Iterator[None]:
        """Use the exact trace for the duration (when ``eval_exact``)."""
        saved = self.flow.divergence
        if self.eval_exact:
            self.flow.divergence = "exact"
        try:
            yield
        finally:
            self.flow.divergence = saved

    def evaluate_log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` without a graph, valid inside Lightning's inference mode: ``(B,)``.

        The divergence needs autograd, which inference tensors refuse, so inference mode is
        lifted and the input cloned into a normal tensor.
        """
        with torch.inference_mode(False), torch.no_grad(), self._eval_divergence():
            return self.flow.log_prob(x.clone())

    def _evaluate(self, batch: Tensor | Sequence[Tensor], stage: str) -> None:
        x = self._points(batch)  # (B, d)
        nll = -self.evaluate_log_prob(x)  # (B,)
        self.nll[stage](nll)
        self.bpd[stage](nll / (self.flow.dim * math.log(2.0)))
        self.nfe[stage](float(self.flow.nfe_forward))
        B = x.shape[0]
        self.log(f"{stage}/nll", self.nll[stage], on_epoch=True, prog_bar=True, batch_size=B)
        self.log(f"{stage}/bits_per_dim", self.bpd[stage], on_epoch=True, batch_size=B)
        self.log(f"{stage}/nfe", self.nfe[stage], on_epoch=True, batch_size=B)

    @guarded
    def validation_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> None:
        """NLL (nats and bits/dim) of a validation batch."""
        self._evaluate(batch, "val")

    @guarded
    def test_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> None:
        """NLL (nats and bits/dim) of a test batch."""
        self._evaluate(batch, "test")

    def predict_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> Tensor:
        """``log p(x)`` of a batch: ``(B,)``."""
        return self.evaluate_log_prob(self._points(batch))

    def configure_optimizers(self) -> Any:
        """Adam, optionally with a per-step cosine decay over the whole run."""
        opt = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return make_schedule(self.lr_schedule, opt, self.trainer, "step", CNFInputError)


def _points_dim(datamodule: object) -> int | None:
    """The dimension of the points of ``datamodule``'s first sample of points ``(n, d)`` among
    ``train_x``, ``val_x``, ``test_x``, or None when it holds none."""
    for name in ("train_x", "val_x", "test_x"):
        x = getattr(datamodule, name, None)
        if isinstance(x, Tensor) and x.dim() == 2:
            return int(x.shape[1])
    return None
