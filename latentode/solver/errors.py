"""Exceptions raised by the solver core.

`SolverError` is a failure of the integration itself (the step size underflowed, the step
limit was reached, the state or the vector field became non-finite); `SolverInputError` is a
problem with the arguments, found before any work is done.
"""

from __future__ import annotations

__all__ = ["BacksolveDriftWarning", "SolverError", "SolverInputError"]

_REMEDIES = {
    "step_size_underflow": (
        "the problem may be stiff or blow up in finite time: loosen rtol/atol, use a "
        "fixed-step method (e.g. method='rk4', step_size=...), integrate in float64, or "
        "regularise the dynamics"
    ),
    "max_num_steps": (
        "raise max_num_steps, loosen rtol/atol, use a fixed-step method, or regularise the "
        "dynamics (e.g. kinetic-energy / Jacobian penalties) so they need fewer steps"
    ),
    "non_finite": (
        "check the vector field for overflow or division by zero, lower the learning rate, "
        "clip gradients, integrate in float64, or tighten rtol/atol"
    ),
}


class SolverError(RuntimeError):
    """The integration could not be completed.

    Attributes:
        reason: one of ``"step_size_underflow"``, ``"max_num_steps"``, ``"non_finite"``.
        t: the time at which the solver stopped.
        step_size: the step size it was trying, if any.
    """

    def __init__(self, reason: str, t: float, step_size: float | None, detail: str) -> None:
        self.reason = reason
        self.t = float(t)
        self.step_size = None if step_size is None else float(step_size)
        h = "n/a" if step_size is None else f"{step_size:.3e}"
        remedy = _REMEDIES.get(reason, "")
        super().__init__(f"{detail} (at t={self.t:.6g}, step size {h}). What to do: {remedy}.")


class SolverInputError(ValueError):
    """The arguments given to the solver are invalid; the message says what to change."""


class BacksolveDriftWarning(UserWarning):
    """The backsolve adjoint's backward solve strayed from the forward solution, so its
    gradient was computed along another path (`SolveStats.backsolve_drift` says how far)."""
