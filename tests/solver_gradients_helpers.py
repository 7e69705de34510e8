"""Shared by the solver gradient tests: tolerances, gradient-mode keywords, a relative
error and a loss's flattened gradient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from latentode import odeint

F64 = torch.float64
GRADIENTS = ("backprop", "adjoint", "checkpoint")
TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def mode_kwargs(gradient: str, params: Sequence[torch.Tensor] | None = None) -> dict[str, Any]:
    """Keywords selecting a gradient mode; tight backward tolerances for the adjoint."""
    kw: dict[str, Any] = {"gradient": gradient}
    if gradient != "backprop" and params is not None:
        kw["adjoint_params"] = tuple(params)
    if gradient == "adjoint":
        kw.update(adjoint_rtol=1e-10, adjoint_atol=1e-12)
    return kw


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return ((a - b).norm() / b.norm()).item()


def loss_and_grads(
    field: nn.Module, y0: torch.Tensor, t: torch.Tensor, weights: torch.Tensor, **kw: Any
) -> torch.Tensor:
    """Flattened gradient of a loss using every output w.r.t. (y0, *field.parameters())."""
    y0 = y0.detach().clone().requires_grad_(True)
    ys = odeint(field, y0, t, **kw)  # (T, *y0.shape)
    loss = (weights * ys).sum() + 0.5 * (ys[-1] ** 2).sum()
    grads = torch.autograd.grad(loss, [y0, *field.parameters()])
    return torch.cat([g.reshape(-1) for g in grads])
