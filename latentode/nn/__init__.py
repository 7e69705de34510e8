"""Plain ``nn.Module`` models built on `latentode.solver`: vector fields, encoders, decoders,
the latent ODE and its baselines. No Lightning here."""

from .base import ModelInputError, Observations, Prediction, SolverSettings
from .baselines import ODERNN, GRUBaseline, RecurrentBaseline
from .decoders import GaussianDecoder, masked_log_likelihood
from .encoders import Encoder, GRUEncoder, ODERNNEncoder
from .latent_ode import ELBOTerms, LatentODE, LatentODEConfig, LatentODEOutput, kl_standard_normal
from .vector_fields import ODEFunc, make_mlp

__all__ = [
    "ODERNN",
    "ELBOTerms",
    "Encoder",
    "GRUBaseline",
    "GRUEncoder",
    "GaussianDecoder",
    "LatentODE",
    "LatentODEConfig",
    "LatentODEOutput",
    "ModelInputError",
    "ODEFunc",
    "ODERNNEncoder",
    "Observations",
    "Prediction",
    "RecurrentBaseline",
    "SolverSettings",
    "kl_standard_normal",
    "make_mlp",
    "masked_log_likelihood",
]
