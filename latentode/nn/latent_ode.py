"""The latent ODE (Chen et al. 2018 sec. 5; Rubanova et al. 2019).

Generative model: ``z0 ~ N(0, I)``, ``dz/dt = f(z)``, ``x(t_i) ~ N(g(z(t_i)), sigma^2)``.
Inference: ``q(z0 | x)`` from an encoder run backwards over the observations.

Usage::

    model = LatentODE(LatentODEConfig(input_dim=2, latent_dim=4, obs_std=0.3))
    terms = model.elbo(observed, target, n_samples=3, kl_weight=0.5)   # observed, target: any
    terms.loss.backward()                                                # IrregularBatch
    pred = model.forecast(observed, future_times, n_samples=20)          # pred.mean [B, T, D]
    pred = model.forecast(observed, future_times, 1000, importance=True) # paths weighted by
                                                                         # p(z0 | observed)
    prior = model.aggregate_posterior(train_observed)    # mixture of q(z0 | x_i), training set
    pred = model.forecast(observed, future_times, 5000, importance=True, prior=prior)

Loss normalisation: ``elbo(...).loss = -(sum over series of the bound) / N_obs`` with N_obs the
number of observed target values in the batch: the negative ELBO (or IWAE bound) *per observed
value*. It is a proper bound scaled by a batch constant, unlike Rubanova's code, which averages
the log-likelihood over each series' observed values (per feature, then over features) but
subtracts a whole per-series KL. ``ELBOTerms.bound`` holds the per-series bound (nats per
series); multiply ``loss`` by ``N_obs / B`` for the negative ELBO per series.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.distributions import Normal

from .base import ModelInputError, Observations, Prediction, check_observed_type
from .decoders import masked_log_likelihood
from .latent_config import (
    AggregatePosterior,
    ELBOTerms,
    LatentODEConfig,
    LatentODEOutput,
    check_prior,
)
from .latent_model import LatentODEBase
from .latent_paths import (
    _log_prior_ratio,
    _path_moments,
    _series_multinomial,
    _series_normal,
    _series_sample,
    _shared_log_likelihood,
    _time_like,
    _weighted_prediction,
    kl_standard_normal,
)

__all__ = [
    "AggregatePosterior",
    "ELBOTerms",
    "LatentODE",
    "LatentODEConfig",
    "LatentODEOutput",
    "kl_standard_normal",
]

REFINE_LR = 0.05  # `LatentODE.refine`'s Adam rate, in units of z0
REFINE_SAMPLES = 4  # its reparameterised draws per step


class LatentODE(LatentODEBase):
    """Encoder -> ``q(z0)`` -> K posterior samples -> ODE solve -> Gaussian decoder.

    ``z0`` is the latent state at ``t0 = observed.times[0]``; query times must be ``>= t0``.
    With ``config.anchor = "last"`` it is the state at the last observed time instead, and
    query times may lie on both sides of it (`LatentODEConfig`).

    The model, its solve and its ELBO (`encode`, `integrate`, `forward`, `elbo`) come from
    `latentode.nn.latent_model.LatentODEBase`; this class adds the posterior predictive
    (`refine`, `predict`, `reconstruct`, `forecast`, `aggregate_posterior`).

    Args:
        config: sizes and settings.

    Attributes:
        encoder, dynamics (`ODEFunc`), decoder (`GaussianDecoder`).
        last_stats: the `SolveStats` of the latest latent solve (backward counts fill in
            after ``backward()`` for the adjoint/checkpoint gradients). When query times lie
            on both sides of the anchor (``anchor="last"``) two solves are made, one each way,
            and ``last_stats`` holds their summed forward counts only.
    """

    def refine(
        self,
        observed: Observations,
        steps: int = 100,
        lr: float = REFINE_LR,
        n_samples: int = REFINE_SAMPLES,
        generators: Sequence[torch.Generator] | None = None,
    ) -> Normal:
        """``q(z0 | observed)`` refined per series by gradient ascent on its own ELBO.

        Semi-amortised inference (Kim et al. 2018; Krishnan et al. 2018): the encoder's
        ``q(z0)`` is the starting point; its mean and log-std are then moved by ``steps``
        Adam steps on ``E_q log p(observed | z0) - KL(q || N(0, I))`` of each series, the
        model's weights fixed (they get no gradient), the rate decaying linearly to 0. The
        encoder is amortised over the training series and can fit a given history worse than
        the decoder and dynamics allow (the amortisation gap); refining closes that gap for
        the series at hand. The ELBO is summed over the series, so each series' parameters
        follow its own bound.

        Args:
            observed: the conditioning observations.
            steps: Adam steps (0: the encoder's ``q`` as it is).
            lr: Adam's learning rate, in units of ``z0``.
            n_samples: reparameterised draws of ``z0`` per step for the expected likelihood.
            generators: one CPU generator per series for those draws (default: torch's
                global generator).

        Returns:
            The refined ``Normal`` ``[B, L]`` (no gradient attached).

        Raises:
            ModelInputError: ``steps < 0``, ``lr <= 0`` or ``n_samples < 1``.
        """
        level = self.level(observed) if self.config.center != "none" else None  # (B, D)
        anchor = self._anchor_index(observed)
        return self._refine(observed, level, anchor, steps, lr, n_samples, generators)

    def _refine(
        self,
        observed: Observations,
        level: Tensor | None,
        anchor: int,
        steps: int,
        lr: float = REFINE_LR,
        n_samples: int = REFINE_SAMPLES,
        generators: Sequence[torch.Generator] | None = None,
    ) -> Normal:
        """`refine` with the level and anchor column already worked out (`_encode`'s)."""
        if steps < 0 or not lr > 0 or n_samples < 1:
            raise ModelInputError(
                f"refine needs steps >= 0, lr > 0 and n_samples >= 1; got {steps}, {lr!r}, "
                f"{n_samples}."
            )
        if steps == 0:  # the encoder's q, with its graph when the caller records one
            return self._encode(observed, level, anchor)
        if torch.is_inference_mode_enabled():
            raise ModelInputError(
                "refine takes gradient steps and cannot run under torch.inference_mode(); "
                "call it under torch.no_grad() instead."
            )
        with torch.no_grad():
            q0 = self._encode(observed, level, anchor)
        loc = q0.mean.detach().clone().requires_grad_(True)  # (B, L)
        log_std = q0.stddev.detach().log().clone().requires_grad_(True)  # (B, L)
        opt = torch.optim.Adam([loc, log_std], lr=lr)
        t0 = observed.times[anchor]
        with torch.enable_grad():
            for i in range(steps):
                opt.param_groups[0]["lr"] = lr * (1 - i / steps)  # to 0: no jitter at the end
                q = Normal(loc, log_std.exp(), validate_args=False)
                z0 = _series_normal(q, n_samples, generators)  # (K, B, L)
                p_x = self._decode(self.integrate(z0, t0, observed.times), level)
                log_lik = masked_log_likelihood(p_x, observed.values, observed.mask)  # (K, B)
                loss = -(log_lik.mean(dim=0) - kl_standard_normal(q)).sum()
                # Gradients of the variational parameters only: the weights' .grad is untouched.
                loc.grad, log_std.grad = torch.autograd.grad(loss, [loc, log_std])
                opt.step()
        return Normal(loc.detach(), log_std.detach().exp(), validate_args=False)

    def predict(
        self,
        observed: Observations,
        times: Tensor,
        n_samples: int = 20,
        importance: bool = False,
        proposal_scale: float = 1.0,
        prior: AggregatePosterior | None = None,
        refine: int = 0,
        generators: Sequence[torch.Generator] | None = None,
    ) -> Prediction:
        """Posterior predictive at ``times`` ``[T]`` or ``[B, T]``.

        ``samples`` are the decoded means of K posterior paths; ``mean`` their average; ``std``
        the std of the mixture: ``sqrt(var_k(samples) + mean_k sigma^2)``. Wrap in
        ``torch.no_grad()`` when no gradient is needed.

        With ``importance=True`` the paths are drawn from the encoder's ``q(z0)`` (its std
        times ``proposal_scale``) and weighted by ``w_k ~ p(observed | z_k) p(z_k) / q(z_k)``,
        self-normalised, so that the prediction estimates the model's own posterior predictive
        ``p(x(times) | observed)`` rather than the encoder's approximation of it (the
        amortisation gap closes as K grows). ``mean`` and ``std`` are the weighted mean and
        mixture std; ``samples`` are K paths resampled by the weights (multinomial), so they
        can be used as unweighted draws; ``ess`` is the weights' effective sample size per
        series. The paths are also decoded at ``observed.times`` for the weights (one solve on
        the union of the times when ``times`` is shared, two otherwise).

        Args:
            observed: the conditioning observations.
            times: query times ``>= observed.times[0]`` (any times with ``anchor="last"``).
            n_samples: K posterior paths.
            importance: weight the paths by the model's posterior (see above).
            proposal_scale: with ``importance``, widen (``> 1``) or narrow the proposal's std.
            prior: with ``importance``, the posterior under this prior instead of ``N(0, I)``
                (`aggregate_posterior` of the training series). The K paths are drawn from
                it at its ``time`` (the training series' anchor time), shared by all series,
                and weighted by ``p(observed | z_k)`` alone; the encoder is not used. The
                weights concentrate on few paths (the spirals: a median ESS of 5-17 of
                5000), so draw several paths per component.
            refine: Adam steps refining each series' ``q(z0)`` on its own ELBO before the
                paths are drawn (`refine`; 0: the encoder's ``q``). With ``importance`` the
                refined ``q`` is the proposal.
            generators: one CPU generator per series of the batch: series ``b``'s draws
                (its ``z0``, refinement and resampling) come from ``generators[b]`` alone, so
                its prediction does not depend on which other series share the batch (up to
                the solver's tolerance: the batch shares its adaptive steps). The draws from
                ``prior``, shared by the series, stay with torch's global generator. None:
                every draw from torch's global generator.

        Raises:
            ModelInputError: ``n_samples < 1``, ``proposal_scale <= 0``, ``refine < 0``, or
                ``prior`` without ``importance``, of another latent size, with ``refine``, or
                (``anchor="first"``) at a time after the batch's first time.
        """
        check_observed_type(observed)
        check_prior(prior, importance, refine, self.config, observed.times)
        if not importance and not refine:
            return _path_moments(self(observed, times, n_samples, generators).p_x)
        if n_samples < 1:
            raise ModelInputError(f"n_samples must be >= 1, got {n_samples}.")
        if not proposal_scale > 0:
            raise ModelInputError(f"proposal_scale must be > 0, got {proposal_scale!r}.")
        level = self.level(observed) if self.config.center != "none" else None  # (B, D)
        B = observed.values.shape[0]
        if prior is None:
            anchor = self._anchor_index(observed)
            q_z0 = self._refine(observed, level, anchor, refine, generators=generators)
            if not importance:  # the refined q's paths, as `forward` draws the encoder's
                z0 = _series_sample(q_z0, n_samples, generators)  # (K, B, L)
                zt = self.integrate(z0, observed.times[anchor], times)  # (K, B, T, L)
                return _path_moments(self._decode(zt, level))
            proposal = Normal(q_z0.mean, q_z0.stddev * proposal_scale, validate_args=False)
            z0 = _series_sample(proposal, n_samples, generators)  # (K, B, L)
            t0 = observed.times[anchor]
        else:  # the prior is the proposal; its draws are shared by the series
            z0 = prior.to(observed.values).sample(n_samples).unsqueeze(1)  # (K, 1, L)
            # Solved from where the mixture's states live (the training series' anchor).
            t0 = (
                self.anchor_time(observed)
                if prior.time is None
                else observed.times.new_tensor(prior.time)
            )
        seen, times = _time_like(observed.times, z0), _time_like(times, z0)
        if times.dim() == 1:
            grid, where = torch.unique(torch.cat([seen, times]), sorted=True, return_inverse=True)
            zt = self.integrate(z0, t0, grid)  # (K, B or 1, G, L)
            z_seen, z_query = zt[:, :, where[: len(seen)]], zt[:, :, where[len(seen) :]]
        else:
            z_seen = self.integrate(z0, t0, seen)  # (K, B or 1, T_seen, L)
            z_query = self.integrate(z0.expand(-1, B, -1), t0, times)  # (K, B, T, L)
        # Decoded without the level (the values are centred instead), so that paths shared by
        # the series stay ``[K, 1, T, D]`` until the resampled ``samples``.
        values = self._centered(observed, level)  # (B, T_seen, D)
        log_lik = _shared_log_likelihood(self.decoder(z_seen), values, observed.mask)  # (K, B)
        log_w = log_lik if prior is not None else log_lik + _log_prior_ratio(z0, proposal)
        w = torch.softmax(log_w, dim=0)  # (K, B)
        p_x = self.decoder(z_query)
        pick = _series_multinomial(w, n_samples, generators)  # (K, B) resampled paths
        return _weighted_prediction(p_x, w, pick, level)

    def reconstruct(
        self,
        observed: Observations,
        times: Tensor | None = None,
        n_samples: int = 1,
        importance: bool = False,
        prior: AggregatePosterior | None = None,
    ) -> Prediction:
        """Interpolation: `predict` at ``times`` (default: the observed grid)."""
        times = observed.times if times is None else times
        return self.predict(observed, times, n_samples, importance, prior=prior)

    def forecast(
        self,
        observed: Observations,
        future_times: Tensor,
        n_samples: int = 20,
        importance: bool = False,
        prior: AggregatePosterior | None = None,
    ) -> Prediction:
        """Extrapolation: `predict` at ``future_times`` (any times ``>= observed.times[0]``;
        any times at all with ``anchor="last"``)."""
        return self.predict(observed, future_times, n_samples, importance, prior=prior)

    @torch.no_grad()
    def aggregate_posterior(self, observed: Observations, chunk: int = 256) -> AggregatePosterior:
        """The mixture of the encoder's ``q(z0 | x_i)`` over the series of ``observed`` (the
        training series, as conditioned in training), for ``predict(..., prior=...)``.

        Args:
            observed: the series, encoded ``chunk`` at a time (each with its own level when
                centering).
            chunk: series per encoder call (memory).

        Raises:
            ModelInputError: if ``observed`` holds no series or ``chunk < 1``.
        """
        B = observed.values.shape[0]
        if B < 1 or chunk < 1:
            raise ModelInputError(
                f"aggregate_posterior needs at least one series and chunk >= 1; got {B} series "
                f"and chunk={chunk}."
            )
        values, mask = self._centered(observed), observed.mask  # (B, T, D)
        anchor = self._anchor_index(observed)  # one anchor for every chunk
        parts = [
            self._encode_rows(
                observed.times, values[lo : lo + chunk], mask[lo : lo + chunk], anchor
            )
            for lo in range(0, B, chunk)
        ]
        return AggregatePosterior(
            torch.cat([q.mean for q in parts]),
            torch.cat([q.stddev for q in parts]),
            float(observed.times[anchor]),
        )
