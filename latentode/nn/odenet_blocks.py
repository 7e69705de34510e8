"""The blocks of `latentode.nn.odenet`'s models and the vector fields they integrate.

`ODEBlock` solves ``dh/dt = func(t, h)`` over ``[0, t1]`` (optionally augmented with zero
channels, ANODE) and counts the function evaluations of its last passes; `ConvODEFunc` and
`MLPODEFunc` are its fields on images and on features; `ResBlock` is the ResNet baseline's
residual block. Bad arguments raise `ODENetInputError`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..solver import SolveStats, solve
from .base import check_solve_keywords, solve_keywords
from .checks import ModelInputError, check_step_size, finite_real
from .vector_fields import ACTIVATIONS, ODEFunc

__all__ = ["ConvODEFunc", "MLPODEFunc", "ODEBlock", "ODENetInputError", "ResBlock", "group_norm"]


class ODENetInputError(ModelInputError):
    """Invalid arguments to an ODE-Net module; the message says what to change."""


def _check_ints(minimum: int, **values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ODENetInputError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ODENetInputError(f"unknown activation {name!r}; choose one of {list(ACTIVATIONS)}.")
    return ACTIVATIONS[name]()


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count ``<= max_groups`` that divides ``channels``."""
    groups = max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def _with_time(t: Tensor, h: Tensor) -> Tensor:
    """Prepend the time as a constant channel: ``(B, C, ...) -> (B, 1 + C, ...)``."""
    tt = t.to(h).expand(h.shape[0], 1, *h.shape[2:])  # (B, 1, ...)
    return torch.cat([tt, h], dim=1)


class ConvODEFunc(nn.Module):
    """Chen et al.'s field ``f(t, h) = GN(conv([t, act(GN(conv([t, act(GN(h))])))]))``.

    Args:
        channels: channels of the state ``h``; the output has the same shape ``(B, C, H, W)``.
        max_groups: upper bound on the GroupNorm group count.
        activation: ``"relu"`` (the paper's), ``"softplus"``, ``"tanh"`` or ``"elu"``. ReLU's
            kinks cost many steps at tight tolerances, and its adjoint gradient matches
            backprop only to about 1e-4 however tight the tolerance (1e-11 if smooth).
    """

    def __init__(self, channels: int, *, max_groups: int = 32, activation: str = "relu") -> None:
        super().__init__()
        _check_ints(1, channels=channels)
        self.act = _activation(activation)
        self.norm1 = group_norm(channels, max_groups)
        self.conv1 = nn.Conv2d(channels + 1, channels, 3, padding=1)
        self.norm2 = group_norm(channels, max_groups)
        self.conv2 = nn.Conv2d(channels + 1, channels, 3, padding=1)
        self.norm3 = group_norm(channels, max_groups)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        """Evaluate ``f(t, h)`` for ``h`` of shape ``(B, C, H, W)``."""
        out = self.conv1(_with_time(t, self.act(self.norm1(h))))  # (B, C, H, W)
        out = self.conv2(_with_time(t, self.act(self.norm2(out))))  # (B, C, H, W)
        return self.norm3(out)


class MLPODEFunc(ODEFunc):
    """``f(t, h) = MLP([h, t])`` on features ``(B, D)``: the shared `ODEFunc`, time as an input.

    Args:
        dim: feature dimension D.
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        activation: a smooth activation (``"tanh"``, ``"softplus"``, ``"elu"``).
    """

    def __init__(self, dim: int, hidden: int = 32, depth: int = 2, activation: str = "tanh"):
        _check_ints(1, dim=dim, hidden=hidden, depth=depth)
        super().__init__(dim, hidden, depth, activation, time_dependent=True)


class ODEBlock(nn.Module):
    """``h(t1)`` where ``dh/dt = func(t, h)``, ``h(0) = [x, 0]`` (zeros appended when augmenting).

    Args:
        func: the vector field, an ``nn.Module`` called as ``func(t, h)``.
        t1: integration end time.
        gradient: ``"backprop"``, ``"adjoint"`` (O(1) memory) or ``"checkpoint"``.
        method: a solver method (dopri5, tsit5, bosh3; euler, midpoint, heun, rk4).
        rtol, atol: tolerances of the adaptive methods.
        step_size: step of the fixed-step methods (euler, midpoint, heun, rk4), which need
            one in ``(0, t1]``; ``None`` for the adaptive methods.
        augment_dim: zero channels appended along dim 1 (ANODE); ``func`` acts on ``C + A``.
        options: further solver options (``max_num_steps``, ``adjoint_rtol``, ...).

    Raises:
        ODENetInputError: a bad argument; the solver settings (tolerances, options) are
            checked here by the solver's own rules (`check_solve_keywords`), not at the first
            solve.
    """

    def __init__(
        self,
        func: nn.Module,
        *,
        t1: float = 1.0,
        gradient: str = "adjoint",
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        step_size: float | None = None,
        augment_dim: int = 0,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.solve_kwargs = solve_keywords(
            "ODEBlock",
            method=method,
            rtol=rtol,
            atol=atol,
            step_size=step_size,
            gradient=gradient,
            options=options,
            error=ODENetInputError,
        )
        if not finite_real(t1) or not t1 > 0:
            raise ODENetInputError(f"t1 must be a finite number > 0, got {t1!r}.")
        check_step_size("ODEBlock", method, step_size, float(t1), "t1", ODENetInputError)
        check_solve_keywords("ODEBlock", self.solve_kwargs, ODENetInputError)
        _check_ints(0, augment_dim=augment_dim)
        self.func, self.augment_dim = func, augment_dim
        self.register_buffer("t", torch.tensor([0.0, float(t1)]), persistent=False)
        self._stats: SolveStats | None = None

    def augment(self, x: Tensor) -> Tensor:
        """Append ``augment_dim`` zero channels: ``(B, C, ...) -> (B, C + A, ...)``."""
        if x.dim() < 2:
            raise ODENetInputError(f"expected input (B, C, ...), got shape {tuple(x.shape)}.")
        if self.augment_dim == 0:
            return x
        pad = x.new_zeros(x.shape[0], self.augment_dim, *x.shape[2:])  # (B, A, ...)
        return torch.cat([x, pad], dim=1)  # (B, C + A, ...)

    def trajectory(self, x: Tensor, t: Tensor) -> Tensor:
        """The (augmented) state at the times ``t``: ``(T, B, C + A, ...)``, ``out[0] = [x, 0]``."""
        sol = solve(self.func, self.augment(x), t.to(x), **self.solve_kwargs)
        self._stats = sol.stats
        return sol.ys

    def forward(self, x: Tensor) -> Tensor:
        """``h(t1)``: ``(B, C, ...) -> (B, C + A, ...)``."""
        return self.trajectory(x, self.t)[-1]

    @property
    def nfe_forward(self) -> int:
        """Function evaluations of the last forward pass (0 before any)."""
        return 0 if self._stats is None else self._stats.nfe

    @property
    def nfe_backward(self) -> int:
        """Function evaluations of the backward pass of the last forward (0 for backprop)."""
        return 0 if self._stats is None else self._stats.nfe_backward


class ResBlock(nn.Module):
    """Pre-activation residual block ``h + conv(ReLU(GN(conv(ReLU(GN(h))))))``, as in Chen 2018."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = group_norm(channels), group_norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        out = self.conv1(torch.relu(self.norm1(h)))  # (B, C, H, W)
        return h + self.conv2(torch.relu(self.norm2(out)))
