"""MLP vector fields ``dz/dt = f(t, z)`` for latent dynamics, and the MLP builder they share.

``ODEFunc`` is autonomous by default (``f(z)``, as in Chen et al. 2018 and Rubanova et al.
2019); with ``time_dependent=True`` the time is appended to the input, ``f([z, t])``. Smooth
activations only (tanh, softplus, elu): the solver's error control assumes a smooth field.

Usage::

    func = ODEFunc(dim=4, hidden=20)
    zt = odeint(func, z0, t)    # func.nfe counts the evaluations
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .base import ModelInputError

__all__ = ["ACTIVATIONS", "SMOOTH_ACTIVATIONS", "ODEFunc", "check_depth", "make_mlp"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "relu": nn.ReLU,
}
SMOOTH_ACTIVATIONS = ("tanh", "softplus", "elu")


def check_depth(depth: object, name: str = "depth") -> None:
    """Refuse a number of hidden layers that is not a whole number >= 0.

    Args:
        depth: the value given.
        name: the setting that gave it (``dynamics_depth``, ``decoder_depth``, ...), named in
            the message.

    Raises:
        ModelInputError: ``dynamics_depth is the number of hidden layers ...; got -1. ...``.
    """
    if isinstance(depth, numbers.Integral) and not isinstance(depth, bool) and depth >= 0:
        return
    raise ModelInputError(
        f"{name} is the number of hidden layers of an MLP: a whole number >= 0 (0: one linear "
        f"layer); got {depth!r}. Set {name} to 0 or more."
    )


def make_mlp(
    in_dim: int, out_dim: int, hidden: int, depth: int, activation: str = "tanh"
) -> nn.Sequential:
    """A plain MLP: ``depth`` hidden layers of width ``hidden``; ``depth=0`` is one Linear.

    Args:
        in_dim, out_dim: input and output widths.
        hidden: width of each hidden layer.
        depth: number of hidden layers (>= 0).
        activation: a key of `ACTIVATIONS`.

    Returns:
        The network, acting on the last dimension.

    Raises:
        ModelInputError: for an unknown activation or a depth that is not a whole number
            >= 0 (`check_depth`; a model checks its own depth settings first, by name).
    """
    if activation not in ACTIVATIONS:
        raise ModelInputError(
            f"unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}."
        )
    check_depth(depth)
    widths = [in_dim] + [hidden] * depth + [out_dim]
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class ODEFunc(nn.Module):
    """An MLP vector field ``f(t, z)`` acting on the last dimension of ``z``.

    Attributes:
        nfe: number of evaluations since construction or the last `reset_nfe`.

    Args:
        dim: state dimension.
        hidden: hidden width.
        depth: number of hidden layers (Chen 2018 and Rubanova 2019 both use 2).
        activation: one of ``SMOOTH_ACTIVATIONS``.
        time_dependent: append ``t`` to the input (otherwise the field is autonomous).

    Raises:
        ModelInputError: for a non-smooth or unknown activation.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 20,
        depth: int = 2,
        activation: str = "tanh",
        time_dependent: bool = False,
    ) -> None:
        super().__init__()
        if activation not in SMOOTH_ACTIVATIONS:
            raise ModelInputError(
                f"vector fields need a smooth activation; got {activation!r}, choose one of "
                f"{list(SMOOTH_ACTIVATIONS)}."
            )
        self.dim = dim
        self.time_dependent = time_dependent
        self.net = make_mlp(dim + int(time_dependent), dim, hidden, depth, activation)
        self.nfe = 0

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        """Evaluate ``dz/dt``.

        Args:
            t: 0-d time tensor (ignored unless ``time_dependent``).
            z: ``[..., dim]`` states.

        Returns:
            ``[..., dim]`` derivatives.
        """
        self.nfe += 1
        if self.time_dependent:
            tt = t.to(z).expand(*z.shape[:-1], 1)  # (..., 1)
            z = torch.cat([z, tt], dim=-1)  # (..., dim + 1)
        return self.net(z)  # (..., dim)

    def reset_nfe(self) -> int:
        """Set `nfe` to 0 and return the count it had."""
        nfe, self.nfe = self.nfe, 0
        return nfe
