"""Thin LightningModules: losses, metrics, optimizers, logging. The math is in `latentode.nn`."""

from .base import SequenceSystem
from .baselines import GRUBaselineSystem, ODERNNSystem
from .classifier import ODENetSystem
from .cnf import CNFSystem
from .guard import StepInputError, StepSolverInputError, TrainingStoppedError
from .latent_ode import LatentODESystem
from .metrics import ForecastMetrics
from .rng import RNGCheckpoint

__all__ = [
    "CNFSystem",
    "ForecastMetrics",
    "GRUBaselineSystem",
    "LatentODESystem",
    "ODENetSystem",
    "ODERNNSystem",
    "RNGCheckpoint",
    "SequenceSystem",
    "StepInputError",
    "StepSolverInputError",
    "TrainingStoppedError",
]
