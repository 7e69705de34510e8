"""The latentode ODE solver core: pure torch, no Lightning.

Explicit Runge-Kutta methods (fixed and adaptive) with dense output, PI step-size control and
three gradient methods (backprop, backsolve adjoint, checkpointed adjoint).
"""

from .errors import BacksolveDriftWarning, SolverError, SolverInputError
from .problem import SolveStats
from .solve import GRADIENTS, Solution, odeint, odeint_adjoint, solve
from .tableaus import ADAPTIVE_METHODS, FIXED_METHODS, METHODS, ButcherTableau

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_METHODS",
    "GRADIENTS",
    "METHODS",
    "BacksolveDriftWarning",
    "ButcherTableau",
    "Solution",
    "SolveStats",
    "SolverError",
    "SolverInputError",
    "odeint",
    "odeint_adjoint",
    "solve",
]
