"""Continuous normalizing flows (Chen et al. 2018, sec. 4; FFJORD, Grathwohl et al. 2019).

FFJORD's convention: the data ``x`` at ``t = 0`` flows to the base ``N(0, I)`` at ``t = T``,

    dz/dt = f(t, z),    d(dlogp)/dt = -tr(df/dz),    log p(x) = log N(z(T); 0, I) - dlogp(T).

The trace is exact (the field's Jacobian carried forward through its layers,
`CNFField.forward_with_jacobian`) or Hutchinson's ``e^T (df/dz) e`` with one noise draw ``e``
per solve. RNODE (Finlay et al. 2020) integrates ``||f||^2`` (kinetic energy) and
``||df/dz||_F^2`` (Jacobian Frobenius norm) as two more state channels.
The field and the divergence code are in `latentode.nn.cnf_field`.

Usage::

    flow = CNF(2, hidden=(64, 64, 64))
    loss = -flow.log_prob(x).mean()  # x: (B, 2)
    x_new = flow.sample(1000)  # (1000, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..solver import SolverError, SolveStats, solve
from .base import check_solve_keywords, solve_keywords
from .checks import (
    ModelInputError,
    check_dtype,
    check_step_size,
    finite_real,
    param_dtype,
    refuse_non_finite,
)
from .cnf_field import (
    _ACTIVATIONS,
    CNFField,
    ConcatSquashLinear,
    _Dynamics,
    divergence_exact,
    divergence_hutchinson,
)

__all__ = [
    "CNF",
    "CNFField",
    "CNFInputError",
    "CNFOutput",
    "ConcatSquashLinear",
    "divergence_exact",
    "divergence_hutchinson",
]

State = Tensor | tuple[Tensor, ...]
_NOISES = ("rademacher", "gaussian")


class CNFInputError(ModelInputError):
    """Invalid arguments to a CNF; the message says what to change."""


@dataclass
class CNFOutput:
    """What `CNF.forward` returns.

    Attributes:
        log_prob: ``(B,)`` log-density of the inputs.
        z: ``(B, d)`` their images under the flow (base space).
        kinetic: ``(B,)`` ``int_0^T ||f||^2 dt`` (RNODE), or None when not regularising.
        jacobian: ``(B,)`` ``int_0^T ||df/dz||_F^2 dt`` (estimated if Hutchinson), or None.
        penalty: ``(B,)`` ``kinetic_weight * kinetic + jacobian_weight * jacobian`` (zeros
            when not regularising); the training loss is ``(penalty - log_prob).mean()``.
    """

    log_prob: Tensor
    z: Tensor
    kinetic: Tensor | None
    jacobian: Tensor | None
    penalty: Tensor


class CNF(nn.Module):
    """A continuous normalizing flow on ``R^d`` with base ``N(0, I)``, used as a distribution.

    Args:
        dim: data dimension d.
        hidden: hidden widths of the `CNFField`.
        activation: ``"softplus"`` or ``"tanh"``.
        T: integration time.
        divergence: ``"exact"`` (the Jacobian carried forward: ``d`` extra passes through the
            layers) or ``"hutchinson"`` (one vector-Jacobian product).
        noise: Hutchinson noise, ``"rademacher"`` or ``"gaussian"``; drawn once per solve.
        method, rtol, atol, step_size: solver settings; a fixed-step method (euler, midpoint,
            heun, rk4) needs ``step_size`` in ``(0, T]`` (one step over ``[0, T]`` gives a
            density that is not normalised, and training exploits it).
        gradient: ``"backprop"``, ``"adjoint"`` or ``"checkpoint"``.
        kinetic_weight, jacobian_weight: RNODE weights; either > 0 turns the penalties on.
        options: further solver options (``max_num_steps``, ``adjoint_rtol``, ...).

    Raises:
        CNFInputError: a bad argument; the solver settings (tolerances, options) are checked
            here by the solver's own rules (`check_solve_keywords`), not at the first solve.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64, 64),
        activation: str = "softplus",
        *,
        T: float = 1.0,
        divergence: str = "exact",
        noise: str = "rademacher",
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        step_size: float | None = None,
        gradient: str = "backprop",
        kinetic_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        _check_args(dim, hidden, activation, T, divergence, noise)
        _check_weights(kinetic_weight=kinetic_weight, jacobian_weight=jacobian_weight)
        self.dim, self.divergence, self.noise = dim, divergence, noise
        self.kinetic_weight, self.jacobian_weight = float(kinetic_weight), float(jacobian_weight)
        self.field = CNFField(dim, hidden, activation)
        self.solve_kwargs = solve_keywords(
            "CNF",
            method=method,
            rtol=rtol,
            atol=atol,
            step_size=step_size,
            gradient=gradient,
            options=options,
            error=CNFInputError,
            reserved=("adjoint_params",),  # the adjoint's parameters are the field's
        )
        check_step_size("CNF", method, step_size, float(T), "T", CNFInputError)
        check_solve_keywords("CNF", self.solve_kwargs, CNFInputError)
        self.register_buffer("t", torch.tensor([0.0, float(T)]), persistent=False)
        self._stats: SolveStats | None = None

    @property
    def regularize(self) -> bool:
        """Whether the RNODE penalties are integrated."""
        return self.kinetic_weight > 0 or self.jacobian_weight > 0

    @property
    def nfe_forward(self) -> int:
        """Function evaluations of the last solve (0 before any)."""
        return 0 if self._stats is None else self._stats.nfe

    @property
    def nfe_backward(self) -> int:
        """Function evaluations of the last solve's backward pass (0 for backprop)."""
        return 0 if self._stats is None else self._stats.nfe_backward

    def base_log_prob(self, z: Tensor) -> Tensor:
        """``log N(z; 0, I)`` per row: ``(B, d) -> (B,)``."""
        return -0.5 * (z.pow(2).sum(dim=1) + self.dim * math.log(2 * math.pi))

    def _solve(
        self, func: Callable[[Tensor, State], State], state: State, t: Tensor, given: Tensor
    ) -> State:
        """Solve from ``state``; a solver failure on a non-finite input ``given`` (the caller's
        points) is the input's fault and raised as `CNFInputError` naming its rows."""
        params = tuple(self.field.parameters())
        try:
            sol = solve(func, state, t, adjoint_params=params, **self.solve_kwargs)
        except SolverError as err:
            refuse_non_finite(given, "the points", err, CNFInputError)
            raise
        self._stats = sol.stats
        return sol.ys

    def _noise(self, like: Tensor, generator: torch.Generator | None) -> Tensor | None:
        if self.divergence == "exact":
            return None
        return _draw(self.noise, tuple(like.shape), generator, like)  # (B, d)

    def _check_x(self, x: Tensor) -> None:
        """Shape and dtype of the points (metadata only: no read from the device)."""
        dtype = param_dtype(self.field)
        if not isinstance(x, Tensor):
            raise CNFInputError(
                f"expected a tensor of points (B, {self.dim}), got {type(x).__name__}; convert "
                f"it with torch.as_tensor(x, dtype={dtype})."
            )
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise CNFInputError(f"expected points (B, {self.dim}), got shape {tuple(x.shape)}.")
        check_dtype(x, dtype, "the points", CNFInputError)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> CNFOutput:
        """Flow ``x`` (``t = 0``) to the base (``t = T``) with its log-density and penalties.

        Args:
            x: ``(B, d)`` points.
            generator: for the Hutchinson noise (default: torch's global generator).
        """
        self._check_x(x)
        zero = x.new_zeros(x.shape[0])  # (B,)
        state = (x, zero, zero, zero) if self.regularize else (x, zero)
        dyn = _Dynamics(self.field, self._noise(x, generator), self.regularize)
        ys = self._solve(dyn, state, self.t.to(x), x)
        z, dlogp = ys[0][-1], ys[1][-1]  # (B, d), (B,)
        log_prob = self.base_log_prob(z) - dlogp  # (B,)
        if not self.regularize:
            return CNFOutput(log_prob, z, None, None, torch.zeros_like(log_prob))
        kinetic, jacobian = ys[2][-1], ys[3][-1]  # (B,), (B,)
        penalty = self.kinetic_weight * kinetic + self.jacobian_weight * jacobian
        return CNFOutput(log_prob, z, kinetic, jacobian, penalty)

    def log_prob(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``log p(x)`` for ``x`` of shape ``(B, d)``: ``(B,)``."""
        return self.forward(x, generator).log_prob

    def transform(self, x: Tensor) -> Tensor:
        """Data to base: ``z(T)`` from ``z(0) = x``, ``(B, d) -> (B, d)``."""
        self._check_x(x)
        return self._solve(self.field, x, self.t.to(x), x)[-1]

    def inverse(self, z: Tensor) -> Tensor:
        """Base to data: integrate from ``t = T`` back to ``0``, ``(B, d) -> (B, d)``."""
        self._check_x(z)
        return self._solve(self.field, z, self.t.to(z).flip(0), z)[-1]

    def sample_and_log_prob(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` samples and their log-density, integrated along the reverse flow.

        ``log p`` starts at ``log N(z)`` at ``t = T`` and obeys ``d log p / dt = -tr(df/dz)``
        back to ``t = 0``.

        Returns:
            ``(x, log_prob)`` of shapes ``(n, d)`` and ``(n,)``.
        """
        z = self._base_sample(n, generator)  # (n, d)
        dyn = _Dynamics(self.field, self._noise(z, generator), regularize=False)
        ys = self._solve(dyn, (z, self.base_log_prob(z)), self.t.to(z).flip(0), z)
        return ys[0][-1], ys[1][-1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``(n, d)``: base draws pushed through the reverse flow."""
        return self.inverse(self._base_sample(n, generator))

    def _base_sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise CNFInputError(f"n must be a positive integer, got {n!r}.")
        return _draw("gaussian", (n, self.dim), generator, self.t)  # (n, d)


def _draw(kind: str, shape: tuple[int, ...], gen: torch.Generator | None, like: Tensor) -> Tensor:
    """Gaussian or Rademacher draws on ``gen``'s device, returned in ``like``'s dtype/device."""
    device = like.device if gen is None else gen.device
    if kind == "gaussian":
        out = torch.randn(shape, generator=gen, dtype=like.dtype, device=device)
    else:
        out = torch.randint(0, 2, shape, generator=gen, device=device) * 2 - 1
    return out.to(like)


def _check_args(
    dim: int,
    hidden: Sequence[int],
    activation: str,
    T: float,
    divergence: str,
    noise: str,
) -> None:
    """Raise `CNFInputError` for the first invalid constructor argument (the solver arguments:
    `solve_keywords`, `check_step_size` and `check_solve_keywords`)."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise CNFInputError(f"dim must be a positive integer, got {dim!r}.")
    if (
        not isinstance(hidden, Sequence)
        or isinstance(hidden, str)
        or not hidden
        or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden)
    ):
        raise CNFInputError(
            f"hidden must be a non-empty list of positive ints (e.g. [64, 64]), got {hidden!r}."
        )
    choices = {
        "activation": (activation, tuple(_ACTIVATIONS)),
        "divergence": (divergence, ("exact", "hutchinson")),
        "noise": (noise, _NOISES),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise CNFInputError(f"unknown {name} {value!r}; choose one of {list(allowed)}.")
    if not finite_real(T) or not T > 0:
        raise CNFInputError(f"T must be a finite number > 0, got {T!r}.")


def _check_weights(**weights: object) -> None:
    """The RNODE weights: finite and ``>= 0``."""
    for name, value in weights.items():
        if not finite_real(value) or not value >= 0:  # type: ignore[operator]
            raise CNFInputError(
                f"{name} must be a finite number >= 0 (Finlay et al. use 0.01; 0 turns the "
                f"penalty off), got {value!r}."
            )
