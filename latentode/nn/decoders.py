"""Observation models ``p(x | z)`` and the masked likelihood used by every model's loss.

A decoder returns a `torch.distributions.Normal` (zuko style), so a loss reads
``masked_log_likelihood(decoder(z), values, mask)`` and a sampler reads ``decoder(z).sample()``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from .base import ModelInputError
from .vector_fields import make_mlp

__all__ = ["GaussianDecoder", "masked_log_likelihood"]

DECODE_ROWS = 2**16
"""Without autograd, states are decoded in blocks of this many rows (the hidden activations
of a long forecast's paths would otherwise be held all at once)."""


class GaussianDecoder(nn.Module):
    """``p(x | z) = N(x; g(z), diag(sigma^2))`` with ``g`` an MLP and ``sigma`` fixed or learned.

    Args:
        latent_dim: width of ``z``.
        output_dim: width of ``x`` (D).
        hidden: hidden width of ``g``.
        depth: hidden layers of ``g``; 0 makes ``g`` linear (Rubanova 2019), 1 with ReLU is
            Chen 2018's spiral decoder.
        activation: activation of ``g`` (any key of `ACTIVATIONS`; the decoder need not be
            smooth).
        obs_std: the observation std ``sigma`` (its initial value when learned).
        learn_std: learn one ``sigma`` per output feature (parametrised by its log).

    Raises:
        ModelInputError: if ``obs_std`` is not positive.
    """

    def __init__(
        self,
        latent_dim: int,
        output_dim: int,
        hidden: int = 20,
        depth: int = 1,
        activation: str = "relu",
        obs_std: float = 0.01,
        learn_std: bool = False,
    ) -> None:
        super().__init__()
        if not obs_std > 0:
            raise ModelInputError(f"obs_std must be > 0, got {obs_std!r}.")
        self.net = make_mlp(latent_dim, output_dim, hidden, depth, activation)
        log_std = torch.full((output_dim,), math.log(obs_std))  # (D,)
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)

    def forward(self, z: Tensor) -> Normal:
        """Decode latent states.

        Args:
            z: ``[..., latent_dim]``.

        Returns:
            ``Normal`` with ``mean`` and ``stddev`` of shape ``[..., output_dim]``.
        """
        if torch.is_grad_enabled() or z[..., 0].numel() <= DECODE_ROWS:
            mean = self.net(z)  # (..., D)
        else:  # a long forecast: the hidden activations one block of rows at a time
            rows = z.reshape(-1, z.shape[-1])  # (N, latent_dim)
            parts = [self.net(r) for r in rows.split(DECODE_ROWS)]
            mean = torch.cat(parts).view(*z.shape[:-1], -1)  # (..., D)
        std = self.log_std.to(mean).exp().expand_as(mean)  # (..., D)
        return Normal(mean, std, validate_args=False)  # no host sync per call


def masked_log_likelihood(p_x: Normal, values: Tensor, mask: Tensor) -> Tensor:
    """Sum of ``log p(x_btd)`` over the observed entries of each series.

    Entries with ``mask == 0`` contribute exactly 0 and no gradient, whatever they hold (even
    NaN or inf): they are replaced before ``log_prob`` is evaluated.

    Args:
        p_x: a ``Normal`` of shape ``[..., B, T, D]`` (leading sample dims allowed).
        values: ``[B, T, D]`` (or broadcastable to ``p_x``).
        mask: like ``values``, 1 where observed.

    Returns:
        ``[..., B]``: per-series log-likelihood, summed over time and features.

    Raises:
        ModelInputError: if ``values`` and ``mask`` differ in shape.
    """
    if values.shape != mask.shape:
        raise ModelInputError(
            f"values {tuple(values.shape)} and mask {tuple(mask.shape)} must have one shape."
        )
    observed = mask > 0  # (B, T, D)
    safe = torch.where(observed, values, 0.0)  # (B, T, D)
    log_p = p_x.log_prob(safe)  # (..., B, T, D)
    log_p = torch.where(observed, log_p, 0.0)  # (..., B, T, D)
    return log_p.sum(dim=(-1, -2))  # (..., B)
