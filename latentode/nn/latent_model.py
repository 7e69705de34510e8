"""The latent ODE's model and training objective: `LatentODEBase` builds the encoder, the
latent vector field and the decoder from a `LatentODEConfig`, encodes ``q(z0 | x)``, solves
the latent state to the query times, decodes ``p(x | z(t))`` and scores the ELBO. The class
to use is its subclass `latentode.nn.latent_ode.LatentODE`, which adds the posterior
predictive (refine, predict, forecast).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from ..solver import SolveStats
from .base import ModelInputError, Observations, check_observed_type, observed_columns
from .decoders import GaussianDecoder, masked_log_likelihood
from .encoders import Encoder, GRUEncoder, ODERNNEncoder
from .latent_config import ELBOTerms, LatentODEConfig, LatentODEOutput, check_config
from .latent_paths import _log_prior_ratio, _series_normal, kl_standard_normal, solve_latent
from .vector_fields import ODEFunc

__all__ = ["LatentODEBase"]


class LatentODEBase(nn.Module):
    """`LatentODE` without its posterior predictive: the parts, the solve and the ELBO (the
    arguments and attributes: `LatentODE`)."""

    def __init__(self, config: LatentODEConfig) -> None:
        super().__init__()
        check_config(config)
        self.config = config
        D, L = config.input_dim, config.latent_dim
        self.encoder: Encoder
        if config.encoder == "gru":
            self.encoder = GRUEncoder(
                D,
                L,
                config.encoder_hidden,
                time_input=config.encoder_time,
                head_hidden=config.encoder_head_hidden,
            )
        else:
            ode_hidden = config.encoder_ode_hidden
            if ode_hidden is None:
                ode_hidden = config.encoder_hidden
            self.encoder = ODERNNEncoder(
                D,
                L,
                config.encoder_hidden,
                ode_hidden,
                1 if config.encoder_ode_depth is None else config.encoder_ode_depth,
                solver=config.encoder_solver,
                head_hidden=config.encoder_head_hidden,
            )
        self.dynamics = ODEFunc(
            L,
            config.dynamics_hidden,
            config.dynamics_depth,
            config.dynamics_activation,
            config.time_dependent,
        )
        self.decoder = GaussianDecoder(
            L,
            D,
            config.decoder_hidden,
            config.decoder_depth,
            config.decoder_activation,
            config.obs_std,
            config.learn_std,
        )
        self.last_stats: SolveStats | None = None

    def level(self, observed: Observations) -> Tensor:
        """The per-series level removed before encoding: ``[B, D]``.

        With ``center="mean"`` the masked mean of each series' observed values per feature,
        with ``center="last"`` its last observed value per feature (0 for a feature a series
        never observes, in both); zeros otherwise.
        """
        values, mask = observed.values, observed.mask
        if self.config.center == "none":
            return values.new_zeros(values.shape[0], values.shape[2])
        seen = mask > 0  # (B, T, D)
        observed_values = torch.where(seen, values, torch.zeros_like(values))
        if self.config.center == "last":
            T = values.shape[1]
            steps = torch.arange(1, T + 1, device=values.device).view(1, T, 1)  # (1, T, 1)
            last = (seen * steps).argmax(dim=1, keepdim=True)  # (B, 1, D) latest observed
            return observed_values.gather(1, last).squeeze(1)  # (B, D)
        count = mask.sum(dim=1)  # (B, D)
        return observed_values.sum(dim=1) / count.clamp(min=1)  # (B, D)

    def encode(self, observed: Observations, level: Tensor | None = None) -> Normal:
        """``q(z0 | observed)``: a ``Normal`` of shape ``[B, L]``.

        Args:
            observed: the conditioning observations.
            level: ``[B, D]`` level to subtract first when centering (default: `level` of
                ``observed``).
        """
        check_observed_type(observed)
        return self._encode(observed, level, self._anchor_index(observed))

    def _encode(self, observed: Observations, level: Tensor | None, anchor: int) -> Normal:
        """`encode` ending at grid column ``anchor`` (`_anchor_index`, taken once by callers
        that also need the anchor's time: it costs a host read for ``anchor="last"``)."""
        values = self._centered(observed, level)
        return self._encode_rows(observed.times, values, observed.mask, anchor)

    def _anchor_index(self, observed: Observations) -> int:
        """The grid column of the anchor: 0 for ``anchor="first"``; for ``"last"`` the last
        column where some series observes something (the last column if none does)."""
        if self.config.anchor == "first":
            return 0
        columns = observed_columns(observed.mask)  # (T_obs,)
        return int(columns[-1]) if len(columns) else observed.times.shape[0] - 1

    def anchor_time(self, observed: Observations) -> Tensor:
        """The time (0-d) of the latent state the encoder infers: ``observed.times[0]`` for
        ``anchor="first"``, the last observed time of the batch for ``"last"``."""
        return observed.times[self._anchor_index(observed)]

    def _encode_rows(self, times: Tensor, values: Tensor, mask: Tensor, anchor: int) -> Normal:
        """The encoder on centred ``values`` / ``mask`` ``[B, T, D]``, ending at grid column
        ``anchor``: backwards to ``times[0]`` (anchor 0), or forwards to ``times[anchor]``
        (the grid up to the anchor, reversed, on the time axis ``-t``)."""
        if self.config.anchor == "first":
            return self.encoder(times, values, mask)
        end = anchor + 1
        return self.encoder(-times[:end].flip(0), values[:, :end].flip(1), mask[:, :end].flip(1))

    def _centered(self, observed: Observations, level: Tensor | None = None) -> Tensor:
        """``observed.values`` ``[B, T, D]`` less ``level`` (default: `level` of ``observed``)
        when centering, as they are otherwise."""
        if self.config.center == "none":
            return observed.values
        level = self.level(observed) if level is None else level
        return observed.values - level.unsqueeze(1)  # (B, T, D)

    def integrate(self, z0: Tensor, t0: Tensor, times: Tensor) -> Tensor:
        """Solve the latent ODE from ``z0`` at ``t0`` and read it out at ``times``.

        Args:
            z0: ``[K, B, L]`` initial states.
            t0: 0-d start time (the anchor).
            times: ``[T]`` shared or ``[B, T]`` per-series strictly increasing times ``>= t0``
                (with ``anchor="last"`` also earlier times, reached by a backwards solve);
                per-series rows all ``>= t0`` must all start at ``t0`` or all after it.

        Returns:
            ``[K, B, T, L]`` latent states.

        Raises:
            ModelInputError: for times the solve cannot read out.
        """
        zt, self.last_stats = solve_latent(
            self.dynamics, self.config.solver, z0, t0, times, self.config.anchor == "last"
        )
        return zt

    def forward(
        self,
        observed: Observations,
        times: Tensor | None = None,
        n_samples: int = 1,
        generators: Sequence[torch.Generator] | None = None,
    ) -> LatentODEOutput:
        """Encode ``observed``, draw ``n_samples`` posterior ``z0`` (rsample), decode at ``times``.

        Args:
            observed: the conditioning observations.
            times: ``[T]`` or ``[B, T]`` query times (default: ``observed.times``).
            n_samples: K posterior samples.
            generators: one CPU generator per series for its ``z0`` draws (default: torch's
                global generator for the batch).

        Returns:
            A `LatentODEOutput`.
        """
        if n_samples < 1:
            raise ModelInputError(f"n_samples must be >= 1, got {n_samples}.")
        check_observed_type(observed)
        level = self.level(observed) if self.config.center != "none" else None  # (B, D)
        anchor = self._anchor_index(observed)
        q_z0 = self._encode(observed, level, anchor)
        z0 = _series_normal(q_z0, n_samples, generators)  # (K, B, L)
        times = observed.times if times is None else times
        zt = self.integrate(z0, observed.times[anchor], times)  # (K, B, T, L)
        return LatentODEOutput(q_z0, z0, zt, self._decode(zt, level))

    def _decode(self, zt: Tensor, level: Tensor | None) -> Normal:
        """``p(x | z(t))`` for ``zt`` ``[K, B, T, L]``, with the ``[B, D]`` level added back
        when centering (None: not)."""
        p_x = self.decoder(zt)
        if level is None:
            return p_x
        return Normal(p_x.loc + level[:, None, :], p_x.scale, validate_args=False)

    def elbo(
        self,
        observed: Observations,
        target: Observations,
        n_samples: int = 1,
        kl_weight: float = 1.0,
        iwae: bool = False,
    ) -> ELBOTerms:
        """The ELBO (or the K-sample IWAE bound) of ``target`` given ``observed``.

        ELBO: ``mean_k log p(x | z_k) - kl_weight * KL(q || p)`` with the KL in closed form.
        IWAE: ``logsumexp_k [log p(x | z_k) + kl_weight * (log p(z_k) - log q(z_k))] - log K``,
        a proper bound on ``log p(x)`` at ``kl_weight = 1`` and tighter as K grows.

        Args:
            observed: the conditioning observations (encoder input).
            target: values to score: ``times [T]`` or ``[B, T]``, ``values``/``mask [B, T, D]``.
            n_samples: K posterior samples.
            kl_weight: weight of the KL (anneal it from 0 to 1).
            iwae: use the IWAE bound.

        Returns:
            `ELBOTerms`.
        """
        out = self(observed, target.times, n_samples)
        log_lik = masked_log_likelihood(out.p_x, target.values, target.mask)  # (K, B)
        kl = kl_standard_normal(out.q_z0)  # (B,)
        if iwae:
            log_w = log_lik + kl_weight * _log_prior_ratio(out.z0, out.q_z0)  # (K, B)
            bound = torch.logsumexp(log_w, dim=0) - math.log(n_samples)  # (B,)
        else:
            bound = log_lik.mean(dim=0) - kl_weight * kl  # (B,)
        n_observed = (target.mask > 0).sum()
        loss = -bound.sum() / n_observed.clamp(min=1).to(bound.dtype)
        return ELBOTerms(loss, bound, log_lik.mean(dim=0), kl, n_observed)

    def loss(
        self,
        observed: Observations,
        target: Observations,
        n_samples: int = 1,
        kl_weight: float = 1.0,
        iwae: bool = False,
    ) -> Tensor:
        """``elbo(...).loss``: the negative bound per observed target value."""
        return self.elbo(observed, target, n_samples, kl_weight, iwae).loss
