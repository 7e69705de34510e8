"""Plain ``nn.Module`` models built on `latentode.solver`: vector fields, encoders, decoders,
the latent ODE and its baselines, ODE-Nets and continuous normalizing flows. No Lightning here."""

from .base import ModelInputError, Observations, Prediction, SolverSettings
from .baselines import ODERNN, GRUBaseline, RecurrentBaseline
from .cnf import CNF, CNFField, CNFOutput, ConcatSquashLinear
from .decoders import GaussianDecoder, masked_log_likelihood
from .encoders import Encoder, GRUEncoder, ODERNNEncoder, flow_hidden
from .latent_ode import (
    AggregatePosterior,
    ELBOTerms,
    LatentODE,
    LatentODEConfig,
    LatentODEOutput,
    kl_standard_normal,
)
from .odenet import (
    AugmentedNeuralODE,
    ConvODEFunc,
    MLPClassifier,
    MLPODEFunc,
    NeuralODE,
    ODEBlock,
    ODENetClassifier,
    ResNetClassifier,
    RKNetClassifier,
)
from .vector_fields import ODEFunc, make_mlp

__all__ = [
    "CNF",
    "ODERNN",
    "AggregatePosterior",
    "AugmentedNeuralODE",
    "CNFField",
    "CNFOutput",
    "ConcatSquashLinear",
    "ConvODEFunc",
    "ELBOTerms",
    "Encoder",
    "GRUBaseline",
    "GRUEncoder",
    "GaussianDecoder",
    "LatentODE",
    "LatentODEConfig",
    "LatentODEOutput",
    "MLPClassifier",
    "MLPODEFunc",
    "ModelInputError",
    "NeuralODE",
    "ODEBlock",
    "ODEFunc",
    "ODENetClassifier",
    "ODERNNEncoder",
    "Observations",
    "Prediction",
    "RKNetClassifier",
    "RecurrentBaseline",
    "ResNetClassifier",
    "SolverSettings",
    "flow_hidden",
    "kl_standard_normal",
    "make_mlp",
    "masked_log_likelihood",
]
