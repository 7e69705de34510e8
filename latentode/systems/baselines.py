"""Lightning systems of the baselines: the GRU with time gaps and the ODE-RNN."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from ..data.batch import Split
from ..nn.base import Prediction, SolverSettings, check_solver_settings
from ..nn.baselines import ODERNN, GRUBaseline, RecurrentBaseline
from .base import SequenceSystem

__all__ = ["GRUBaselineSystem", "ODERNNSystem"]


class _RecurrentSystem(SequenceSystem):
    model: RecurrentBaseline

    def training_loss(self, split: Split) -> tuple[Tensor, dict[str, Tensor]]:
        """Gaussian negative log-likelihood per observed target value."""
        return self.model.loss(split.observed, split.target), {}

    def predict_split(self, split: Split) -> Prediction:
        """Prediction at the target times (autoregressive past the last observation)."""
        return self.model.predict(split.observed, split.target.times)


class GRUBaselineSystem(_RecurrentSystem):
    """Chen 2018's RNN baseline: a GRU fed values, mask and time gaps.

    Args:
        input_dim: number of features; hidden: GRU width (paper: 25).
        lr, optimizer, lr_decay, weight_decay: as `SequenceSystem`.
        obs_std: the std of the Gaussian observation noise its NLL (loss and ``val/nll``)
            assumes, the initial value if ``learn_std``; the same setting as a latent ODE's
            ``config.obs_std`` (default 0.01 for both), so that their NLLs compare when both
            are given the same value (the spirals: 0.3, the noise's std).
        learn_std: learn the std (one per feature) instead of fixing it.

    Raises:
        ModelInputError: a width below 1 or an ``obs_std`` that is not a positive number.
    """

    def __init__(
        self,
        input_dim: int = 2,
        hidden: int = 25,
        lr: float = 1e-2,
        optimizer: Literal["adam", "adamax"] = "adam",
        lr_decay: float = 1.0,
        weight_decay: float = 0.0,
        obs_std: float = 0.01,
        learn_std: bool = False,
    ) -> None:
        super().__init__(lr, optimizer, lr_decay, weight_decay)
        self.save_hyperparameters()
        self.model = GRUBaseline(input_dim, hidden, obs_std=obs_std, learn_std=learn_std)


class ODERNNSystem(_RecurrentSystem):
    """Rubanova 2019's ODE-RNN used directly for interpolation and forecasting.

    Args:
        input_dim: number of features; hidden: hidden-state width.
        method, step_size: how the hidden state is integrated between observations (a
            ``step_size``: each series on its own grid, batch-independent; none: one step
            per gap of the batch's times, `latentode.nn.baselines`).
        lr, optimizer, lr_decay, weight_decay: as `SequenceSystem`.
        obs_std, learn_std: the Gaussian observation std, as `GRUBaselineSystem`.

    Raises:
        ModelInputError: a width below 1, an ``obs_std`` that is not a positive number, or
            solver settings the solver refuses.
    """

    def __init__(
        self,
        input_dim: int = 1,
        hidden: int = 25,
        method: str = "euler",
        step_size: float | None = None,
        lr: float = 1e-2,
        optimizer: Literal["adam", "adamax"] = "adam",
        lr_decay: float = 1.0,
        weight_decay: float = 0.0,
        obs_std: float = 0.01,
        learn_std: bool = False,
    ) -> None:
        super().__init__(lr, optimizer, lr_decay, weight_decay)
        self.save_hyperparameters()
        solver = SolverSettings(method, step_size=step_size)
        check_solver_settings(solver, "ODERNNSystem (method, step_size)")
        self.model = ODERNN(input_dim, hidden, obs_std=obs_std, learn_std=learn_std, solver=solver)
