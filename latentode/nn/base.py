"""What every sequence model in `latentode.nn` shares: inputs, outputs, solver settings.

Models take observations as three tensors (``times [T]``, ``values [B, T, D]``, ``mask
[B, T, D]``) or as any object with those attributes (`Observations`; `latentode.data`'s
``IrregularBatch`` is one), so ``nn`` never imports ``data``. Predictions come back as a
`Prediction` (mean, std and, for latent models, the posterior sample paths).

The input checks and their error, `ModelInputError`, live in `latentode.nn.checks`; they are
re-exported here, where the models have always imported them from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..solver import GRADIENTS, METHODS, SolverInputError, solve
from .checks import (
    ModelInputError,
    check_dtype,
    check_obs_std,
    check_observations,
    check_query_times,
    check_sizes,
    check_step_size,
    finite_real,
    param_dtype,
    refuse_non_finite,
)
from .checks import check_observed_type as check_observed_type  # re-export (not in __all__)

__all__ = [
    "ModelInputError",
    "Observations",
    "Prediction",
    "SolverSettings",
    "check_dtype",
    "check_obs_std",
    "check_observations",
    "check_query_times",
    "check_sizes",
    "check_solve_keywords",
    "check_solver_settings",
    "check_step_size",
    "finite_real",
    "observed_columns",
    "param_dtype",
    "refuse_non_finite",
    "solve_keywords",
]


class Observations(Protocol):
    """Irregular observations on a time grid shared by the batch (structural type).

    Attributes:
        times: ``[T]`` strictly increasing times.
        values: ``[B, T, D]`` values; entries where ``mask == 0`` are ignored.
        mask: ``[B, T, D]``, 1 where a value is observed, 0 elsewhere.
    """

    times: Tensor
    values: Tensor
    mask: Tensor


@dataclass
class Prediction:
    """A model's prediction at ``T`` query times for ``B`` series.

    Attributes:
        mean: ``[B, T, D]`` predictive mean.
        std: ``[B, T, D]`` predictive standard deviation (for latent models the std of the
            mixture over posterior samples: spread of the sample paths plus observation noise).
        samples: ``[K, B, T, D]`` decoded means of K posterior sample paths, or None for
            deterministic models.
        ess: ``[B]`` effective sample size ``1 / sum_k w_k^2`` of the importance weights of a
            weighted latent prediction (`LatentODE.predict` with ``importance=True``), else
            None. Near 1 means one path carries the prediction: draw more.
    """

    mean: Tensor
    std: Tensor
    samples: Tensor | None = None
    ess: Tensor | None = None


@dataclass(frozen=True)
class SolverSettings:
    """How a model calls `latentode.solver.odeint` (one small value object, diffrax style).

    Attributes:
        method: a name in ``latentode.solver.METHODS`` (``euler``, ``rk4``, ``dopri5``, ...).
        rtol, atol: tolerances of the adaptive methods.
        step_size: step of the fixed methods; None takes one step per output interval.
        gradient: ``"backprop"``, ``"adjoint"`` or ``"checkpoint"``.
        max_num_steps: step limit of one solve (a `SolverError` past it, never a hang).
    """

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-4
    step_size: float | None = None
    gradient: str = "backprop"
    max_num_steps: int = 10_000

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ModelInputError(
                f"unknown solver method {self.method!r}; choose one of {list(METHODS)}."
            )

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `odeint` / `solve`."""
        kw: dict[str, Any] = {
            "method": self.method,
            "rtol": self.rtol,
            "atol": self.atol,
            "gradient": self.gradient,
            "max_num_steps": self.max_num_steps,
        }
        if self.step_size is not None:
            kw["step_size"] = self.step_size
        return kw


class _ArgumentsAcceptedError(Exception):
    """Raised by `_StopAtFirstCall` to end the trial solve: the solver accepted its arguments."""


class _StopAtFirstCall(nn.Module):
    """The field of `check_solve_keywords`' trial solve: it stops the solve at its first call."""

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        raise _ArgumentsAcceptedError


def check_solve_keywords(
    owner: str, solve_kwargs: dict[str, Any], error: type[ModelInputError] = ModelInputError
) -> None:
    """Have the solver check a model's `solve` keywords at the model's construction rather than
    at its first solve (in the sanity check of a fit, after the trainer was built).

    A trial `solve` of a 1-element state with ``solve_kwargs`` is stopped at the first call of
    its field: `solve` checks all its arguments before it calls the field (the tolerances and
    step options, and with ``gradient="adjoint"`` the adjoint's), so the rules are the solver's
    own and nothing is integrated (a ``max_num_steps`` too small for a trial interval is not
    refused). The trial's interval is one step long (``[0, step_size]``, else ``[0, 1]``): the
    step count of a fixed-step solve, which depends on the model's own interval, is left to the
    first solve.

    Args:
        owner: the setting's or model's name, the prefix of the messages (``"ODEBlock"``,
            ``"CNF"``, ``"encoder_solver"``).
        solve_kwargs: the keywords the model passes to `solve` (`solve_keywords`' result).
        error: the `ModelInputError` subclass to raise.

    Raises:
        error: the solver's reason, prefixed with ``owner``.
    """
    step = solve_kwargs.get("step_size")
    try:
        # Never in inference mode: the solver caches its tableau's tensors on the first solve
        # of a method and dtype, and inference tensors there break later training solves.
        with torch.inference_mode(False), torch.no_grad():
            y0 = torch.zeros(1, dtype=torch.float64, device="cpu")
            end = float(step) if finite_real(step) and step > 0 else 1.0  # else refused
            t = torch.tensor([0.0, end], dtype=torch.float64, device="cpu")
            solve(_StopAtFirstCall(), y0, t, **solve_kwargs)
    except SolverInputError as err:
        raise error(f"{owner}: {err}") from None
    except _ArgumentsAcceptedError:
        pass


def check_solver_settings(solver: SolverSettings, what: str) -> None:
    """Have the solver check ``solver``'s options now, at the model's construction, rather
    than at its first solve (`check_solve_keywords`).

    Args:
        solver: the settings.
        what: the setting's name for the message (``"encoder_solver"``).

    Raises:
        ModelInputError: the solver's reason, prefixed with ``what``.
    """
    step = solver.step_size
    if step is not None and not (finite_real(step) and step > 0):
        raise ModelInputError(
            f"{what}: step_size must be a finite number > 0 (or null: the method's own steps), "
            f"got {step!r}."
        )
    check_solve_keywords(what, solver.kwargs())


def solve_keywords(
    owner: str,
    *,
    method: str,
    rtol: float,
    atol: float,
    step_size: float | None,
    gradient: str,
    options: dict[str, Any] | None,
    error: type[ModelInputError] = ModelInputError,
    reserved: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The keywords of `latentode.solver.solve` from a model constructor's solver arguments.

    Args:
        owner: the constructor's name, for the messages.
        method, rtol, atol, step_size, gradient: its solver arguments.
        options: further solver options (``max_num_steps``, ``adjoint_rtol``, ...).
        error: the `ModelInputError` subclass to raise.
        reserved: keywords the model sets itself, besides the arguments above.

    Raises:
        error: an unknown ``method`` or ``gradient``, or ``options`` naming an argument.
    """
    if method not in METHODS:
        raise error(f"unknown method {method!r}; choose one of {list(METHODS)}.")
    if gradient not in GRADIENTS:
        raise error(f"unknown gradient {gradient!r}; choose one of {list(GRADIENTS)}.")
    names = set(options or {})
    if given := names & {"method", "rtol", "atol", "gradient", "step_size"}:
        raise error(f"pass {sorted(given)} as {owner} arguments, not in options.")
    if taken := names & set(reserved):
        raise error(f"{owner} sets {sorted(taken)} itself; remove them from options.")
    kw = {"method": method, "rtol": rtol, "atol": atol, "step_size": step_size}
    return {**(options or {}), **kw, "gradient": gradient}


def observed_columns(mask: Tensor) -> Tensor:
    """Indices of the time columns where at least one series observes something.

    Args:
        mask: ``[B, T, D]`` observation mask.

    Returns:
        Long tensor ``[T_obs]`` in increasing order (one host synchronisation).
    """
    return torch.nonzero((mask > 0).any(dim=2).any(dim=0)).flatten()  # (T_obs,)
