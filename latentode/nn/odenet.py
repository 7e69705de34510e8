"""ODE-Net (Chen et al. 2018, sec. 3) and augmented Neural ODEs (Dupont et al. 2019).

`ODEBlock` integrates a vector field over ``[0, t1]`` in any gradient mode and keeps the
function evaluations of its last passes. The classifiers share one shape (downsampling stem,
``block``, norm + pooling + linear head); only ``block`` differs between ODE-Net, RK-Net, ResNet.
The blocks and their vector fields are in `latentode.nn.odenet_blocks`.

Usage::

    model = ODENetClassifier(image_size=8, width=32)  # 8x8 digits; image_size=28 for MNIST
    F.cross_entropy(model(x), y).backward()  # x: (B, 1, 8, 8)
    model.block.nfe_forward, model.block.nfe_backward  # the ODE block's evaluation counts
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..solver import FIXED_METHODS, SolverError
from .checks import check_dtype, param_dtype, refuse_non_finite
from .odenet_blocks import (
    ConvODEFunc,
    MLPODEFunc,
    ODEBlock,
    ODENetInputError,
    ResBlock,
    _check_ints,
    group_norm,
)

__all__ = [
    "AugmentedNeuralODE",
    "ConvODEFunc",
    "MLPClassifier",
    "MLPODEFunc",
    "NeuralODE",
    "ODEBlock",
    "ODENetClassifier",
    "ODENetInputError",
    "RKNetClassifier",
    "ResNetClassifier",
]


def _check_images(x: Tensor, in_channels: int, image_size: int, dtype: torch.dtype | None) -> None:
    """Images ``(B, in_channels, image_size, image_size)`` of the model's dtype (metadata only:
    no read from the device).

    Raises:
        ODENetInputError: another shape (a convolutional model would run on the wrong
            resolution without a word) or dtype.
    """
    want = (in_channels, image_size, image_size)
    if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != want:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        advice = ""
        if isinstance(x, Tensor) and x.dim() == 4 and x.shape[1] == in_channels:
            side, resize = x.shape[2], f"resize the images to {image_size}x{image_size}"
            advice = f" {resize.capitalize()}."
            if side == x.shape[3] and side >= 4:  # the smallest image_size a model takes
                advice = f" Build the model with image_size={side}, or {resize}."
        elif isinstance(x, Tensor) and x.dim() == 4 and x.shape[3] == in_channels:
            advice = " Channels come first: pass x.permute(0, 3, 1, 2)."
        elif isinstance(x, Tensor) and x.dim() == 3 and in_channels == 1:
            advice = " Add the channel dimension: pass x.unsqueeze(1)."
        raise ODENetInputError(
            f"expected images (B, {in_channels}, {image_size}, {image_size}) (in_channels="
            f"{in_channels}, image_size={image_size}), got {got}.{advice}"
        )
    cast = f"x.to({dtype}) / 255 for 8-bit pixels (the model takes images in [0, 1])"
    check_dtype(x, dtype, "the images", ODENetInputError, cast)


class _ConvClassifier(nn.Module):
    """Stem (conv, then stride-2 downsampling) -> ``block`` -> GN, ReLU, pool, linear.

    ``block`` is the part that differs between models; for ODE models it is the `ODEBlock`,
    whose ``nfe_forward`` / ``nfe_backward`` give the evaluation counts.
    """

    def __init__(
        self, in_channels: int, image_size: int, num_classes: int, width: int, head_width: int
    ) -> None:
        super().__init__()
        _check_ints(1, in_channels=in_channels, width=width)
        _check_ints(2, num_classes=num_classes)
        _check_ints(4, image_size=image_size)
        self.in_channels, self.image_size = in_channels, image_size
        n_down = 2 if image_size >= 16 else 1  # halvings: 28 -> 7 for MNIST, 8 -> 4 for digits
        stem: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1)]
        for _ in range(n_down):
            stem += [group_norm(width), nn.ReLU(), nn.Conv2d(width, width, 4, stride=2, padding=1)]
        self.stem = nn.Sequential(*stem)
        self.block: nn.Module = nn.Identity()
        self.pool = nn.Sequential(group_norm(head_width), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(head_width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, C, H, W)``, ``H = W = image_size``.

        Raises:
            ODENetInputError: images of another shape or dtype, or, when the ODE solver
                fails, images holding NaN or inf (named by row).
        """
        _check_images(x, self.in_channels, self.image_size, param_dtype(self))
        try:
            h = self.block(self.stem(x))  # (B, C', H', W')
        except SolverError as err:
            refuse_non_finite(x, "the images", err, ODENetInputError)
            raise
        return self.fc(self.pool(h).flatten(1))  # (B, K)


class ODENetClassifier(_ConvClassifier):
    """ODE-Net: one `ODEBlock` with a `ConvODEFunc` in place of the residual blocks.

    Args:
        in_channels, image_size, num_classes: input channels, side length, classes.
        width: channels after the stem (64 in the paper: 0.21M parameters on MNIST).
        augment_dim: zero channels appended before the ODE (ANODE).
        activation: of the `ConvODEFunc` (paper: ``"relu"``).
        gradient, method, rtol, atol, step_size, options: as `ODEBlock` (paper: adjoint, 1e-3).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        width: int = 64,
        *,
        augment_dim: int = 0,
        activation: str = "relu",
        gradient: str = "adjoint",
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        step_size: float | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        _check_ints(0, augment_dim=augment_dim)
        super().__init__(in_channels, image_size, num_classes, width, width + augment_dim)
        self.block = ODEBlock(
            ConvODEFunc(width + augment_dim, activation=activation),
            gradient=gradient,
            method=method,
            rtol=rtol,
            atol=atol,
            step_size=step_size,
            augment_dim=augment_dim,
            options=options,
        )


class RKNetClassifier(ODENetClassifier):
    """RK-Net: the ODE-Net's block integrated by a fixed-step Runge-Kutta method, with backprop.

    Args:
        method: a fixed-step method (``rk4``, ``euler``, ``midpoint``, ``heun``).
        step_size: the step over ``[0, 1]``.
        Other arguments as `ODENetClassifier`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        width: int = 64,
        *,
        method: str = "rk4",
        step_size: float = 0.25,
        augment_dim: int = 0,
        activation: str = "relu",
    ) -> None:
        if method not in FIXED_METHODS:
            msg = f"RK-Net needs a fixed-step method, one of {FIXED_METHODS}; got {method!r}."
            raise ODENetInputError(msg + " Use ODENetClassifier for adaptive methods.")
        super().__init__(
            in_channels,
            image_size,
            num_classes,
            width,
            augment_dim=augment_dim,
            activation=activation,
            gradient="backprop",
            method=method,
            step_size=step_size,
        )


class ResNetClassifier(_ConvClassifier):
    """The ResNet baseline: ``num_blocks`` residual blocks (six in the paper) after the stem."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        width: int = 64,
        *,
        num_blocks: int = 6,
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, width, width)
        _check_ints(1, num_blocks=num_blocks)
        self.block = nn.Sequential(*(ResBlock(width) for _ in range(num_blocks)))


class MLPClassifier(nn.Module):
    """One-hidden-layer MLP on flattened pixels (hidden=300 gives the paper's 0.24M on MNIST)."""

    def __init__(
        self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, hidden: int = 300
    ) -> None:
        super().__init__()
        _check_ints(1, in_channels=in_channels, image_size=image_size, hidden=hidden)
        _check_ints(2, num_classes=num_classes)
        self.in_channels, self.image_size = in_channels, image_size
        self.hidden = nn.Linear(in_channels * image_size * image_size, hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, C, H, W)``, ``H = W = image_size``."""
        _check_images(x, self.in_channels, self.image_size, param_dtype(self))
        return self.fc(torch.relu(self.hidden(x.flatten(1))))  # (B, K)


class NeuralODE(nn.Module):
    """A feature-space Neural ODE ``x -> readout(h(1))`` for the toy maps of Dupont et al.

    ``model.block.trajectory(x, t)`` gives the learned flow ``(T, B, D + A)`` for figures.

    Args:
        dim: input dimension D; inputs are ``(B, D)``.
        out_dim: size of a linear readout of the whole final state; ``None`` returns the first
            ``D`` coordinates of ``h(1)`` (identity readout: what a flow alone can represent).
        hidden, depth, activation: the `MLPODEFunc`.
        augment_dim: zero coordinates appended (ANODE).
        **ode_kwargs: solver keywords of `ODEBlock` (gradient, method, rtol, atol, step_size,
            options).
    """

    def __init__(
        self,
        dim: int,
        *,
        out_dim: int | None = None,
        hidden: int = 32,
        depth: int = 2,
        activation: str = "tanh",
        augment_dim: int = 0,
        **ode_kwargs: Any,
    ) -> None:
        super().__init__()
        _check_ints(1, dim=dim, out_dim=1 if out_dim is None else out_dim)
        _check_ints(0, augment_dim=augment_dim)
        self.dim, width = dim, dim + augment_dim  # the flow acts on D + A coordinates
        func = MLPODEFunc(width, hidden, depth, activation)
        self.block = ODEBlock(func, augment_dim=augment_dim, **ode_kwargs)
        self.readout = None if out_dim is None else nn.Linear(width, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, D) -> (B, out_dim)``, or ``(B, D)`` with the identity readout."""
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ODENetInputError(f"expected input (B, {self.dim}), got {got}.")
        check_dtype(x, param_dtype(self), "the inputs", ODENetInputError)
        try:
            h = self.block(x)  # (B, D + A)
        except SolverError as err:
            refuse_non_finite(x, "the inputs", err, ODENetInputError)
            raise
        return h[:, : self.dim] if self.readout is None else self.readout(h)


class AugmentedNeuralODE(NeuralODE):
    """ANODE (Dupont et al. 2019): a `NeuralODE` with ``augment_dim >= 1`` zero coordinates."""

    def __init__(self, dim: int, *, augment_dim: int = 1, **kwargs: Any) -> None:
        _check_ints(1, augment_dim=augment_dim)
        super().__init__(dim, augment_dim=augment_dim, **kwargs)
