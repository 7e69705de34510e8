"""The vector field of a `latentode.nn.cnf.CNF` and the trace of its Jacobian.

`CNFField` stacks concat-squash layers and carries its Jacobian forward through them for the
exact trace; `divergence_exact` (``d`` vector-Jacobian products, for any field) and
`divergence_hutchinson` (Hutchinson's estimate ``e^T (df/dz) e`` from one product) compute it
from autograd. `_Dynamics` is the augmented field ``(z, dlogp[, kinetic, jacobian])`` that one
CNF solve integrates.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["CNFField", "ConcatSquashLinear", "divergence_exact", "divergence_hutchinson"]

_ACTIVATIONS = {"softplus": nn.Softplus, "tanh": nn.Tanh}


class ConcatSquashLinear(nn.Module):
    """``y = (W x + b) * sigmoid(W_g t + b_g) + w_b t``: time gates and shifts each output unit."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.layer = nn.Linear(in_features, out_features)
        self.hyper_gate = nn.Linear(1, out_features)
        self.hyper_bias = nn.Linear(1, out_features, bias=False)

    def gate_shift(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """The time gate ``sigmoid(W_g t + b_g)`` and shift ``w_b t``, each ``(1, out)``."""
        tt = t.to(like).reshape(1, 1)  # (1, 1)
        return torch.sigmoid(self.hyper_gate(tt)), self.hyper_bias(tt)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """``(B, in) -> (B, out)`` at the 0-d time ``t``."""
        gate, shift = self.gate_shift(t, x)
        return self.layer(x) * gate + shift


class CNFField(nn.Module):
    """The flow's vector field: concat-squash layers with softplus or tanh between them.

    Args:
        dim: data dimension d.
        hidden: widths of the hidden layers.
        activation: ``"softplus"`` or ``"tanh"``.
    """

    def __init__(self, dim: int, hidden: Sequence[int], activation: str = "softplus") -> None:
        super().__init__()
        widths = [dim, *hidden, dim]
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b) for a, b in itertools.pairwise(widths))
        self.act = _ACTIVATIONS[activation]()

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        """``f(t, z)`` for ``z`` of shape ``(B, d)``; each row depends on its own sample only."""
        for i, layer in enumerate(self.layers):
            z = layer(t, z)  # (B, width_i)
            if i < len(self.layers) - 1:
                z = self.act(z)
        return z

    def forward_with_jacobian(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """``f(t, z)`` and its Jacobian ``df/dz``, the latter carried forward through the layers.

        Each layer maps the ``d`` Jacobian columns as it maps the state, less the bias (a linear
        layer times the time gate, then the activation's derivative), so the Jacobian costs ``d``
        more passes through the layers and no second-order autograd. On the 2-D toys a training
        step is about 1.3x faster than with ``d`` vector-Jacobian products and ``create_graph``
        (`benchmarks/cnf_step.py`); the result is differentiable by ordinary backprop.

        Args:
            t: 0-d time.
            z: ``(B, d)``.

        Returns:
            ``(f, jac)``: ``(B, d)`` and ``(d, B, d)`` with ``jac[j, b, i] = df_i/dz_j`` of
            sample ``b``.
        """
        h = z  # (B, d)
        jac = None  # (d, B, width): column j of dh/dz per sample; None while it is the identity
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            gate, shift = layer.gate_shift(t, z)  # (1, width), (1, width)
            weight = layer.layer.weight  # (width, in)
            if jac is None:  # d(W z)/dz_j is column j of W, the same for every sample
                jac = (weight.t() * gate).unsqueeze(1).expand(-1, z.shape[0], -1)  # (d, B, width)
            else:
                jac = (jac @ weight.t()) * gate  # (d, B, width)
            h = layer.layer(h) * gate + shift  # (B, width)
            if i < last:
                jac = jac * self._act_grad(h)  # (d, B, width)
                h = self.act(h)
        return h, jac

    def _act_grad(self, pre: Tensor) -> Tensor:
        """The activation's derivative at the pre-activations ``pre``."""
        if isinstance(self.act, nn.Tanh):
            return 1 - torch.tanh(pre).pow(2)
        # nn.Softplus(beta=1, threshold=20) is linear above 20, where sigmoid is 1 to 2e-9
        return torch.sigmoid(pre)


def divergence_exact(f: Tensor, z: Tensor, *, create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """``tr(df/dz)`` and ``||df/dz||_F^2`` per sample, by ``d`` vector-Jacobian products.

    Args:
        f: ``(B, d)`` field values computed from ``z`` with autograd on; row ``b`` of ``f`` must
            depend on row ``b`` of ``z`` only (the batch is summed to get per-sample rows).
        z: ``(B, d)``.
        create_graph: keep the graph of the result (to differentiate it further).

    Returns:
        ``(div, frob)``, each ``(B,)``.
    """
    div = z.new_zeros(z.shape[0])  # (B,)
    frob = z.new_zeros(z.shape[0])  # (B,)
    if not f.requires_grad:
        return div, frob
    for i in range(z.shape[1]):
        (row,) = torch.autograd.grad(
            f[:, i].sum(), z, create_graph=create_graph, retain_graph=True, allow_unused=True
        )  # (B, d): row i of df/dz for every sample
        if row is not None:
            div = div + row[:, i]
            frob = frob + row.pow(2).sum(dim=1)
    return div, frob


def divergence_hutchinson(
    f: Tensor, z: Tensor, e: Tensor, *, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Hutchinson's estimates ``e^T (df/dz) e`` of the trace and ``||e^T df/dz||^2`` of the
    squared Frobenius norm, per sample, from one vector-Jacobian product.

    Both are unbiased when ``E[e e^T] = I`` (Gaussian or Rademacher ``e``).

    Args:
        f: ``(B, d)`` field values computed from ``z`` with autograd on.
        z: ``(B, d)``.
        e: ``(B, d)`` noise.
        create_graph: keep the graph of the result.

    Returns:
        ``(div, frob)``, each ``(B,)``.
    """
    if not f.requires_grad:
        return z.new_zeros(z.shape[0]), z.new_zeros(z.shape[0])
    (e_jac,) = torch.autograd.grad(
        f, z, e, create_graph=create_graph, retain_graph=True, allow_unused=True
    )  # (B, d): e^T df/dz per sample
    if e_jac is None:
        return z.new_zeros(z.shape[0]), z.new_zeros(z.shape[0])
    return (e_jac * e).sum(dim=1), e_jac.pow(2).sum(dim=1)  # (B,), (B,)


class _Dynamics:
    """The augmented field of one solve: ``(z, dlogp[, kinetic, jacobian])``.

    A fresh instance per solve binds that solve's Hutchinson noise, so the adjoint's backward
    pass sees the same ``e`` as the forward pass.
    """

    def __init__(self, field: nn.Module, noise: Tensor | None, regularize: bool) -> None:
        self.field, self.noise, self.regularize = field, noise, regularize

    def __call__(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        z = state[0]  # (B, d)
        if self.noise is None and isinstance(self.field, CNFField):
            # exact trace: the Jacobian carried forward, no double backward
            dz, jac = self.field.forward_with_jacobian(t, z)  # (B, d), (d, B, d)
            div = jac.diagonal(dim1=0, dim2=2).sum(dim=1)  # (B,)
            if not self.regularize:
                return dz, -div
            return dz, -div, dz.pow(2).sum(dim=1), jac.pow(2).sum(dim=(0, 2))
        # The vector-Jacobian products need autograd even when the solver runs without it
        # (adjoint forward, sampling); the graph is kept only if the caller differentiates
        # through the result.
        keep = torch.is_grad_enabled()
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.field(t, z)  # (B, d)
            if self.noise is None:  # another field module: d vector-Jacobian products
                div, frob = divergence_exact(dz, z, create_graph=keep)
            else:
                div, frob = divergence_hutchinson(dz, z, self.noise, create_graph=keep)
        if not keep:
            dz, div, frob = dz.detach(), div.detach(), frob.detach()
        if not self.regularize:
            return dz, -div
        return dz, -div, dz.pow(2).sum(dim=1), frob
