"""Lightning system of the latent ODE: ELBO training with KL annealing, posterior prediction.

Usage::

    latentode fit --config configs/spirals.yaml
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from typing import Any, Literal

from torch import Tensor

from ..data.batch import Split
from ..data.errors import DataError
from ..data.transforms import base_of, kinds_of
from ..nn.base import ModelInputError, Prediction, SolverSettings
from ..nn.latent_ode import LatentODE, LatentODEConfig
from .base import SequenceSystem

__all__ = ["LatentODESystem", "check_same_data", "config_from_dict"]


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

    Raises:
        ModelInputError: ``n_samples`` or ``eval_samples`` not a whole number >= 1,
            ``kl_anneal_steps`` not a whole number >= 0, or a model setting `LatentODE`
            refuses.
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
        _check_count("n_samples", n_samples, 1, "posterior samples per training series")
        _check_count("eval_samples", eval_samples, 1, "posterior paths per evaluated series")
        _check_count("kl_anneal_steps", kl_anneal_steps, 0, "steps of KL annealing; 0: none")
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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint fitted on a file that the data module reads otherwise (see
        `check_same_data`), before its weights are loaded: resuming, validating or testing
        on another file once stopped in a state-dict size mismatch, or with the same channels
        in another order scored the model's ``a`` as ``b`` without a word."""
        super().on_load_checkpoint(checkpoint)
        saved = (checkpoint.get("hyper_parameters") or {}).get("data_state")
        current = self.hparams.get("data_state")
        if saved and current:
            check_same_data(saved, current)

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


def _check_count(name: str, value: Any, least: int, what: str) -> None:
    """Refuse a setting that is not a whole number >= ``least`` (``what``: its meaning)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ModelInputError(f"{name} ({what}) must be a whole number >= {least}; got {value!r}.")


def _close(a: Any, b: Any) -> bool:
    """Numbers (or nested lists / dicts of them) equal to a relative 1e-6, other values equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-6) or (math.isnan(a) and math.isnan(b))
    return a == b


def check_same_data(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Check that the data module reads its file as the checkpoint's fit read its own.

    Args:
        saved: the checkpoint's ``data_state`` (`CSVDataModule.data_state`).
        current: the data module's, for the file it reads now.

    Raises:
        DataError: the channels (names or order), the kind or unit of the times, or the
            values' normalisation (transforms, means, stds) or the time scale differ: the
            weights would be read on another scale, or against other channels.
    """
    fix = (
        " Resume, validate or test with the file and data settings the fit used; to score "
        "a fitted model on another file, use `latentode test --ckpt_path CKPT --data.path "
        "FILE`, which reads it as the fit read its own."
    )
    if list(saved["channels"]) != list(current["channels"]):
        raise DataError(
            f"the checkpoint was fitted on the channels {list(saved['channels'])}, in this "
            f"order; the data module reads {list(current['channels'])}." + fix
        )
    was, now = saved.get("time_encoding") or {}, current.get("time_encoding") or {}
    if (was.get("kind"), was.get("unit")) != (now.get("kind"), now.get("unit")):
        raise DataError(
            f"the checkpoint's times were {was.get('kind')} in unit {was.get('unit')!r}; the "
            f"data module reads {now.get('kind')} in unit {now.get('unit')!r}." + fix
        )
    for key, what in (
        ("normalisation", "normalisation of the values"),
        ("time_scale", "time scale"),
    ):
        if not _close(saved.get(key), current.get(key)):
            raise DataError(
                f"the data module's {what} differs from the checkpoint's ({current.get(key)!r} "
                f"against {saved.get(key)!r}): another file or other data settings." + fix
            )
