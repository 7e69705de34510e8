"""The value object shared by the forward solve and the gradient methods."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from .grid import OutputGrid
from .rk import Coefficients, Control, Run
from .state import RHS

__all__ = ["Problem", "SolveStats"]


@dataclass
class SolveStats:
    """What a solve cost.

    Attributes:
        nfe: vector-field evaluations of the forward solve (including initial-step selection).
        n_accepted, n_rejected: forward steps.
        nfe_backward: evaluations made by the backward pass (adjoint: of the augmented field,
            each one vector-Jacobian product; checkpoint: recomputation). 0 for backprop.
        n_accepted_backward, n_rejected_backward: backward steps.
        backsolve_drift: the backsolve adjoint's largest distance, in units of its tolerance
            ``adjoint_atol + adjoint_rtol * |y|``, between the state it integrated backwards
            and the forward solution at the read-out times and at t0 (0 for other gradients
            and for a fixed-step backward solve, which has no tolerance). Above
            `adjoint.DRIFT_WARN` it warns: the gradient was computed along another path.
    """

    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    nfe_backward: int = 0
    n_accepted_backward: int = 0
    n_rejected_backward: int = 0
    backsolve_drift: float = 0.0


@dataclass
class Problem:
    """Everything a forward or backward pass needs.

    ``run`` is filled by the forward pass (its ``f0`` and ``derivs`` feed the time gradients).
    """

    rhs: RHS
    grid: OutputGrid
    coef: Coefficients
    ctl: Control
    params: tuple[Tensor, ...]
    stats: SolveStats
    want_derivs: bool = False
    adj_coef: Coefficients | None = None
    adj_ctl: Control | None = None
    run: Run | None = field(default=None, repr=False)

    def record_forward(self, run: Run, nfe: int) -> None:
        """Store the forward run and its statistics."""
        self.run = run
        self.stats.nfe += nfe
        self.stats.n_accepted += run.n_accepted
        self.stats.n_rejected += run.n_rejected
