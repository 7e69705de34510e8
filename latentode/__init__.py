"""latentode: Neural ODEs for irregularly sampled time series."""

from .solver import SolverError, SolverInputError, odeint, odeint_adjoint, solve

__all__ = ["SolverError", "SolverInputError", "odeint", "odeint_adjoint", "solve"]
__version__ = "0.1.0"
