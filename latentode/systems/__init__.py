"""Thin LightningModules: losses, metrics, optimizers, logging. The math is in `latentode.nn`."""

from .base import SequenceSystem
from .baselines import GRUBaselineSystem, ODERNNSystem
from .latent_ode import LatentODESystem
from .metrics import ForecastMetrics

__all__ = [
    "ForecastMetrics",
    "GRUBaselineSystem",
    "LatentODESystem",
    "ODERNNSystem",
    "SequenceSystem",
]
