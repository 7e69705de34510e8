"""Lightning system of the latent ODE: ELBO training with KL annealing, posterior prediction.

Usage::

    latentode fit --config configs/spirals.yaml
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Literal

from torch import Tensor

from ..data.batch import Split
from ..data.transforms import base_of, kinds_of
from ..nn.base import Prediction, SolverSettings
from ..nn.latent_ode import LatentODE, LatentODEConfig
from .base import SequenceSystem

__all__ = ["LatentODESystem", "config_from_dict"]


def config_from_dict(config: LatentODEConfig | dict[str, Any]) -> LatentODEConfig:
    """A `LatentODEConfig` from itself or from the plain dict stored in a checkpoint."""
    if isinstance(config, LatentODEConfig):
        return config
    kw = dict(config)
    for key in ("solver", "encoder_solver"):
        if isinstance(kw.get(key), dict):
            kw[key] = SolverSettings(**kw[key])
    return LatentODEConfig(**kw)


class LatentODESystem(SequenceSystem):
    """Trains a `LatentODE` as a VAE.

    Args:
        config: the model (sizes, encoder, solver).
        n_samples: posterior samples K per training series.
        iwae: train on the K-sample IWAE bound instead of the ELBO.
        kl_anneal_steps: the KL weight rises linearly from 0 to 1 over this many steps
            (0: no annealing).
        eval_samples: posterior samples for validation / test predictions.
        data_state: what the data module knows about the user's file (``channels``,
            ``time_encoding``, ``normalisation``, ``time_scale``), stored in the checkpoint for
            ``latentode predict``; filled in from a data module with ``data_state()`` at setup.
        lr, optimizer, lr_decay, weight_decay: as `SequenceSystem`.
    """

    def __init__(
        self,
        config: LatentODEConfig | None = None,
        n_samples: int = 1,
        iwae: bool = False,
        kl_anneal_steps: int = 0,
        eval_samples: int = 20,
        lr: float = 1e-2,
        optimizer: Literal["adam", "adamax"] = "adam",
        lr_decay: float = 1.0,
        weight_decay: float = 0.0,
        data_state: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(lr, optimizer, lr_decay, weight_decay)
        cfg = config_from_dict(config if config is not None else LatentODEConfig())
        self.save_hyperparameters()
        # Plain Python values only, so checkpoints load with weights_only=True.
        if not isinstance(self.hparams.get("config"), dict):
            self.hparams["config"] = asdict(cfg)
        self.model = LatentODE(cfg)
        self.n_samples, self.iwae = n_samples, iwae
        self.kl_anneal_steps, self.eval_samples = kl_anneal_steps, eval_samples
        if data_state:
            self._score_channels_of(data_state)

    def setup(self, stage: str) -> None:
        """Adopt the data module's file description; size the model to its channels; have
        the data module align its batches to the model's anchor (`CSVDataModule.align_to`)."""
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "align_to"):
            dm.align_to(self.model.config.anchor)
        if dm is None or not hasattr(dm, "data_state"):
            return
        state = dm.data_state()
        self.hparams["data_state"] = state
        cfg = self.model.config
        if cfg.input_dim != len(state["channels"]):
            cfg = replace(cfg, input_dim=len(state["channels"]))
            self.model = LatentODE(cfg)
            self.hparams["config"] = asdict(cfg)
        self._score_channels_of(state)

    def _score_channels_of(self, state: dict[str, Any]) -> None:
        """Per-channel errors in the file's units: the normalisation's std, or 1. A channel
        modelled on a log or logit scale is scored there (``val/rmse[log_<channel>]``,
        ``val/rmse[logit_<channel>]``)."""
        norm = state.get("normalisation")
        channels = state["channels"]
        kinds = kinds_of(norm, len(channels))
        names = [
            c if k == "none" else f"{base_of(k)}_{c}" for c, k in zip(channels, kinds, strict=True)
        ]
        self.score_channels(names, norm["std"] if norm else [1.0] * len(channels))

    def kl_weight(self) -> float:
        """The KL weight at the current global step."""
        if self.kl_anneal_steps <= 0:
            return 1.0
        return min(1.0, self.global_step / self.kl_anneal_steps)

    def training_loss(self, split: Split) -> tuple[Tensor, dict[str, Tensor]]:
        """Negative ELBO (or IWAE bound) per observed target value."""
        terms = self.model.elbo(
            split.observed, split.target, self.n_samples, self.kl_weight(), self.iwae
        )
        n = terms.n_observed.clamp(min=1)
        return terms.loss, {
            "kl": terms.kl.mean(),
            "log_lik": terms.log_lik.sum() / n,
            "kl_weight": float(self.kl_weight()),
        }

    def predict_split(self, split: Split) -> Prediction:
        """Posterior predictive at the target times, from ``eval_samples`` paths."""
        return self.model.predict(split.observed, split.target.times, self.eval_samples)
