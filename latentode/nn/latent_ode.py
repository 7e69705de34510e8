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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Normal

from ..solver import SolveStats, solve
from ..solver.state import HALF
from .base import (
    ModelInputError,
    Observations,
    Prediction,
    SolverSettings,
    check_obs_std,
    check_observed_type,
    check_query_times,
    check_sizes,
    check_solver_settings,
    observed_columns,
)
from .decoders import GaussianDecoder, masked_log_likelihood
from .encoders import Encoder, GRUEncoder, ODERNNEncoder
from .row_flow import check_row_flow
from .vector_fields import ODEFunc, check_depth

__all__ = [
    "AggregatePosterior",
    "ELBOTerms",
    "LatentODE",
    "LatentODEConfig",
    "LatentODEOutput",
    "kl_standard_normal",
]


@dataclass
class LatentODEConfig:
    """Sizes and settings of a `LatentODE` (defaults: Chen 2018's spiral model).

    Attributes:
        input_dim: features D; latent_dim: width of ``z``.
        encoder: ``"gru"`` (Chen 2018) or ``"odernn"`` (Rubanova 2019).
        encoder_hidden: encoder width; encoder_solver: ODE-RNN gap integration (with
            a ``step_size`` each series steps on its own grid: `latentode.nn.encoders`).
        encoder_ode_hidden: hidden width of the ODE-RNN encoder's vector field (default
            ``None``: ``encoder_hidden``; Rubanova used 100 units with a 20-wide state).
        encoder_head_hidden: the encoder's posterior head: 0 (default) linear, > 0 an MLP
            with one tanh layer of that width (Rubanova: 100 for the ODE-RNN encoder's
            ``transform_z0``, 50 for the RNN encoder's ``hiddens_to_z0``).
        encoder_time: feed the GRU encoder each observation's time since ``t0`` besides the
            gaps (`GRUEncoder`'s ``time_input``; the ODE-RNN carries time by its ODE).
        dynamics_hidden, dynamics_depth, dynamics_activation: the latent vector field.
        time_dependent: feed ``t`` to the vector field.
        decoder_hidden, decoder_depth, decoder_activation: the decoder MLP.
        obs_std: observation std (initial value if ``learn_std``); learn_std: learn it.
        solver: latent integration (default dopri5, rtol 1e-3, atol 1e-4 as Rubanova).
        center: per-series level. ``"mean"`` subtracts each series' mean of its observed
            conditioning values (per feature) before encoding and adds it back to the decoded
            mean, so the model learns the shape of a window rather than its absolute level (the
            reversible instance normalisation of forecasting models). ``"last"`` subtracts the
            series' last observed conditioning value per feature instead: a decoded 0 is then
            the last-value forecast, and the model learns the change from it (for slowly
            moving series, where last value is the baseline to beat). ``"none"``: off.
        anchor: where the latent state the encoder infers sits. ``"first"`` (Chen 2018,
            Rubanova 2019): ``z0`` at the first grid time ``t0``, the encoder run backwards
            over the observations, the ODE integrated forwards to every query time.
            ``"last"``: ``z`` at the last observed time ``t_a`` of the conditioning batch, the
            encoder run forwards in time (the same encoder fed the observations in reverse
            order with times ``-t``), the ODE integrated forwards to later query times and
            backwards to earlier ones. A forecast then integrates only over the horizon, from
            a state inferred last at the latest observations, instead of across the whole
            history from ``t0``; query times may lie before ``t_a`` and before ``t0``. On a
            batch whose series end their conditioning at different times, ``t_a`` is the
            latest: align the batch first (`latentode.data.align_last`; the data modules do
            it when `LatentODESystem` calls their ``align_to``), so that each series' state
            sits at its own last observation and does not depend on the other series.
    """

    input_dim: int = 2
    latent_dim: int = 4
    encoder: Literal["gru", "odernn"] = "gru"
    encoder_hidden: int = 25
    encoder_time: bool = False
    encoder_ode_hidden: int | None = None
    encoder_head_hidden: int = 0
    encoder_solver: SolverSettings = field(default_factory=lambda: SolverSettings("euler"))
    dynamics_hidden: int = 20
    dynamics_depth: int = 2
    dynamics_activation: str = "tanh"
    time_dependent: bool = False
    decoder_hidden: int = 20
    decoder_depth: int = 1
    decoder_activation: str = "relu"
    obs_std: float = 0.01
    learn_std: bool = False
    solver: SolverSettings = field(default_factory=SolverSettings)
    center: Literal["none", "mean", "last"] = "none"
    anchor: Literal["first", "last"] = "first"


@dataclass
class LatentODEOutput:
    """Everything one pass computes: ``q_z0`` [B, L], ``z0`` [K, B, L], ``zt`` [K, B, T, L],
    ``p_x`` (Normal, [K, B, T, D]). ``z0`` is the state at the anchor (`LatentODE.anchor_time`):
    ``t0`` by default."""

    q_z0: Normal
    z0: Tensor
    zt: Tensor
    p_x: Normal


@dataclass
class ELBOTerms:
    """The pieces of the training objective (see the module docstring for the normalisation).

    Attributes:
        loss: scalar to minimise, ``-bound.sum() / n_observed``.
        bound: ``[B]`` per-series ELBO (or IWAE bound), with the KL weight applied.
        log_lik: ``[B]`` masked log-likelihood averaged over the K samples.
        kl: ``[B]`` closed-form ``KL(q(z0) || N(0, I))`` (unweighted).
        n_observed: number of observed target values (0-d tensor).
    """

    loss: Tensor
    bound: Tensor
    log_lik: Tensor
    kl: Tensor
    n_observed: Tensor


def kl_standard_normal(q: Normal) -> Tensor:
    """``KL(N(mu, s^2) || N(0, I)) = sum_l [(mu_l^2 + s_l^2 - 1) / 2 - log s_l]``.

    Args:
        q: a diagonal ``Normal`` of shape ``[..., L]``.

    Returns:
        ``[...]``: the KL summed over the last dimension.
    """
    mu, s = q.mean, q.stddev  # (..., L)
    return (0.5 * (mu.square() + s.square() - 1.0) - s.log()).sum(dim=-1)  # (...,)


def _log_prior_ratio(z0: Tensor, q: Normal) -> Tensor:
    """``log N(z0; 0, I) - log q(z0)`` summed over the latent dimension: ``[K, B]``."""
    prior = Normal(torch.zeros_like(z0), torch.ones_like(z0), validate_args=False)
    return (prior.log_prob(z0) - q.log_prob(z0)).sum(dim=-1)


_CHUNK_ELEMENTS = 2**24  # log-density entries ``[K, chunk, T, D]`` per step of the below


def _shared_log_likelihood(p_x: Normal, values: Tensor, mask: Tensor) -> Tensor:
    """`masked_log_likelihood` ``[K, B]`` of ``values`` ``[B, T, D]``; when ``p_x`` is shared by
    the series (``[K, 1, T, D]``), a chunk of series at a time, so that the ``[K, B, T, D]``
    log-density is never held whole."""
    K, shared = p_x.loc.shape[0], p_x.loc.shape[1] == 1
    B, T, D = values.shape
    step = max(1, _CHUNK_ELEMENTS // (K * T * D)) if shared else B
    parts = [
        masked_log_likelihood(p_x, values[lo : lo + step], mask[lo : lo + step])
        for lo in range(0, B, step)
    ]
    return torch.cat(parts, dim=-1)  # (K, B)


REFINE_LR = 0.05  # `LatentODE.refine`'s Adam rate, in units of z0
REFINE_SAMPLES = 4  # its reparameterised draws per step


def _path_moments(p_x: Normal) -> Prediction:
    """The predictive of K equally weighted paths ``p_x`` ``[K, B, T, D]``: the paths' mean,
    the mixture std ``sqrt(var_k(mean_k) + mean_k sigma^2)``, the decoded means as samples."""
    samples = p_x.mean  # (K, B, T, D)
    var = samples.var(dim=0, unbiased=False) + p_x.variance.mean(dim=0)  # (B, T, D)
    return Prediction(samples.mean(dim=0), var.sqrt(), samples)


def _time_like(t: Tensor, z: Tensor) -> Tensor:
    """Times on ``z``'s device at ``z``'s precision, but never below float32: a latent state
    computed under autocast is half precision, and times rounded to its 3 significant digits
    collide (the solver integrates such a state in float32 anyway)."""
    if not isinstance(t, Tensor):  # a list or an array of times
        t = torch.as_tensor(np.asarray(t, dtype=np.float64))
    return t.to(device=z.device, dtype=torch.float32 if z.dtype in HALF else z.dtype)


def _series_normal(q: Normal, n: int, generators: Sequence[torch.Generator] | None) -> Tensor:
    """``n`` reparameterised draws ``[n, B, L]`` of ``q`` ``[B, L]``: from torch's global
    generator (None), or series ``b``'s from ``generators[b]`` (drawn on the CPU, so a
    series' draws are the same on every device and whatever other series share the batch)."""
    if generators is None:
        return q.rsample((n,))
    loc = q.loc
    _check_generators(generators, loc.shape[0])
    eps = torch.stack(
        [torch.randn(n, loc.shape[-1], generator=g, dtype=loc.dtype) for g in generators], 1
    )
    return loc + q.scale * eps.to(loc.device)  # (n, B, L)


def _series_sample(q: Normal, n: int, generators: Sequence[torch.Generator] | None) -> Tensor:
    """`_series_normal` without a graph (``q.sample`` from the global generator for None)."""
    if generators is None:
        return q.sample((n,))
    with torch.no_grad():
        return _series_normal(q, n, generators)


def _series_multinomial(w: Tensor, n: int, generators: Sequence[torch.Generator] | None) -> Tensor:
    """``n`` indices ``[n, B]`` drawn with replacement by the weights ``w`` ``[K, B]`` of each
    series (per series from ``generators[b]`` when given, as `_series_normal`)."""
    if generators is None:
        return torch.multinomial(w.T, n, replacement=True).T
    _check_generators(generators, w.shape[1])
    cpu = w.detach().cpu()
    picks = [torch.multinomial(cpu[:, b], n, True, generator=g) for b, g in enumerate(generators)]
    return torch.stack(picks, dim=1).to(w.device)  # (n, B)


def _check_generators(generators: Sequence[torch.Generator], batch: int) -> None:
    if len(generators) != batch:
        raise ModelInputError(
            f"generators= needs one generator per series of the batch: {len(generators)} "
            f"for {batch} series."
        )


@dataclass
class AggregatePosterior:
    """The aggregate posterior ``(1/N) sum_i q(z0 | x_i)`` of a trained encoder over N series.

    For a fixed encoder it is the prior that maximises the average ELBO (Hoffman & Johnson 2016;
    the VampPrior of Tomczak & Welling 2018 approximates it with learned pseudo-inputs). Used
    as the prior of `LatentODE.predict` it puts the prior mass on the paths the training
    series take, instead of all of ``N(0, I)``. Build it with `LatentODE.aggregate_posterior`.

    Attributes:
        loc: ``[N, L]`` the components' means.
        scale: ``[N, L]`` their stds.
        time: the time the components' states live at: the anchor time of the series they
            were encoded from (`LatentODE.anchor_time`). `LatentODE.predict` solves the paths
            drawn from the mixture from this time, whatever the conditioning batch's own
            anchor is. ``None``: from the conditioning batch's anchor time.
    """

    loc: Tensor
    scale: Tensor
    time: float | None = None

    def sample(self, n: int) -> Tensor:
        """``[n, L]`` draws: a component chosen uniformly, then its Gaussian."""
        pick = torch.randint(self.loc.shape[0], (n,), device=self.loc.device)  # (n,)
        return self.loc[pick] + self.scale[pick] * torch.randn_like(self.loc[pick])

    def log_prob(self, z: Tensor) -> Tensor:
        """``log (1/N) sum_i N(z; loc_i, scale_i)`` for ``z`` ``[..., L]``: ``[...]``."""
        comp = Normal(self.loc, self.scale, validate_args=False)
        per = comp.log_prob(z.unsqueeze(-2)).sum(dim=-1)  # (..., N)
        return torch.logsumexp(per, dim=-1) - math.log(self.loc.shape[0])

    def to(self, *args: object, **kwargs: object) -> AggregatePosterior:
        """The same mixture with both tensors moved (``Tensor.to`` arguments)."""
        return AggregatePosterior(
            self.loc.to(*args, **kwargs), self.scale.to(*args, **kwargs), self.time
        )


class LatentODE(nn.Module):
    """Encoder -> ``q(z0)`` -> K posterior samples -> ODE solve -> Gaussian decoder.

    ``z0`` is the latent state at ``t0 = observed.times[0]``; query times must be ``>= t0``.
    With ``config.anchor = "last"`` it is the state at the last observed time instead, and
    query times may lie on both sides of it (`LatentODEConfig`).

    Args:
        config: sizes and settings.

    Attributes:
        encoder, dynamics (`ODEFunc`), decoder (`GaussianDecoder`).
        last_stats: the `SolveStats` of the latest latent solve (backward counts fill in
            after ``backward()`` for the adjoint/checkpoint gradients). When query times lie
            on both sides of the anchor (``anchor="last"``) two solves are made, one each way,
            and ``last_stats`` holds their summed forward counts only.
    """

    def __init__(self, config: LatentODEConfig) -> None:
        super().__init__()
        if config.encoder not in ("gru", "odernn"):
            raise ModelInputError(f"encoder must be 'gru' or 'odernn', got {config.encoder!r}.")
        if config.encoder_time and config.encoder != "gru":
            raise ModelInputError(
                "encoder_time feeds the GRU encoder the time since t0; the ODE-RNN encoder "
                "carries time by its ODE. Set encoder: gru or encoder_time: false."
            )
        if config.encoder_ode_hidden is not None and config.encoder != "odernn":
            raise ModelInputError(
                "encoder_ode_hidden sizes the ODE-RNN encoder's vector field; the GRU encoder "
                "has none. Set encoder: odernn or leave encoder_ode_hidden unset."
            )
        if config.center not in ("none", "mean", "last"):
            raise ModelInputError(
                f"center must be 'none', 'mean' or 'last', got {config.center!r}."
            )
        if config.anchor not in ("first", "last"):
            raise ModelInputError(f"anchor must be 'first' or 'last', got {config.anchor!r}.")
        sizes = ("input_dim", "latent_dim", "encoder_hidden", "dynamics_hidden", "decoder_hidden")
        check_sizes(
            **{n: getattr(config, n) for n in sizes}, encoder_ode_hidden=config.encoder_ode_hidden
        )
        check_depth(config.dynamics_depth, "dynamics_depth")
        check_depth(config.decoder_depth, "decoder_depth")
        check_obs_std(config.obs_std)
        check_solver_settings(config.solver, "solver")
        check_solver_settings(config.encoder_solver, "encoder_solver")
        if config.encoder == "odernn":
            check_row_flow(config.encoder_solver, "encoder_solver")
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
        K, B, L = z0.shape
        times, t0 = _time_like(times, z0), _time_like(t0, z0)
        host, start = check_query_times(times, t0, B, before_t0=self.config.anchor == "last")
        if times.dim() == 1:
            return self._integrate_grid(z0, t0, times, host, start)
        if not times.requires_grad and bool((host == host[:1]).all()):  # one grid for all
            return self._integrate_grid(z0, t0, times[0], host[0], start)
        if bool((host[:, 0] < start).any()):  # per-series times before the anchor: their union
            union, where = torch.unique(host, sorted=True, return_inverse=True)  # (G,), (B, T)
            zt = self._integrate_grid(z0, t0, _time_like(union, z0), union, start)  # (K, B, G, L)
            index = where.to(z0.device).view(1, B, -1, 1).expand(K, -1, -1, L)  # (K, B, T, L)
            return zt.gather(2, index)
        kw = self.config.solver.kwargs()
        at_t0 = host[:, 0] == start  # (B,) on the host
        if bool(at_t0.any()) and not bool(at_t0.all()):
            raise ModelInputError(
                "per-series times must all start at t0 or all after it (the solver needs a "
                f"common start); t0 = {start:.6g}. Prepend t0 to every row instead."
            )
        skip = int(not bool(at_t0.all()))
        t = torch.cat([t0.expand(B, 1), times], 1) if skip else times  # (B, T + skip)
        # One grid per series, shared by its K paths (its samples are [K, L] each): the
        # solver reads out B * T times, not K * B * T.
        sol = solve(self.dynamics, z0.transpose(0, 1), t, **kw)  # ys (T + skip, B, K, L)
        self.last_stats = sol.stats
        return sol.ys[skip:].permute(2, 1, 0, 3)  # (K, B, T, L)

    def _integrate_grid(
        self, z0: Tensor, t0: Tensor, times: Tensor, host: Tensor, start: float
    ) -> Tensor:
        """`integrate` on a shared grid ``times [T]`` (``host``: its host copy, ``start``:
        ``t0`` as a float): one solve forwards for the times ``>= t0``, one backwards for
        those before it. Returns ``[K, B, T, L]``."""
        kw = self.config.solver.kwargs()
        n_before = int((host < start).sum())
        parts, stats = [], []
        if n_before:  # backwards from t0, latest time first
            t = torch.cat([t0.view(1), times[:n_before].flip(0)])  # (n_before + 1,)
            sol = solve(self.dynamics, z0, t, **kw)
            parts.append(sol.ys[1:].flip(0))  # (n_before, K, B, L)
            stats.append(sol.stats)
        if n_before < times.shape[0]:
            later = times[n_before:]
            skip = int(bool(host[n_before] > start))
            t = torch.cat([t0.view(1), later]) if skip else later  # (T - n_before + skip,)
            sol = solve(self.dynamics, z0, t, **kw)
            parts.append(sol.ys[skip:])  # (T - n_before, K, B, L)
            stats.append(sol.stats)
        if len(stats) == 1:
            self.last_stats = stats[0]
        else:
            self.last_stats = SolveStats(
                nfe=sum(x.nfe for x in stats),
                n_accepted=sum(x.n_accepted for x in stats),
                n_rejected=sum(x.n_rejected for x in stats),
            )
        return torch.cat(parts).permute(1, 2, 0, 3)  # (K, B, T, L)

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
        if prior is not None and not importance:
            raise ModelInputError(
                "prior= weights the paths by the model's likelihood: pass importance=True too."
            )
        if prior is not None and refine:
            raise ModelInputError(
                "prior= draws the paths from the aggregate posterior, not from the encoder's "
                "q(z0): there is nothing to refine; pass refine=0."
            )
        if prior is not None and prior.loc.shape[-1] != self.config.latent_dim:
            raise ModelInputError(
                f"prior has {prior.loc.shape[-1]} latent dimensions, the model "
                f"{self.config.latent_dim}: build it with this model's aggregate_posterior."
            )
        if prior is not None and prior.time is not None and self.config.anchor == "first":
            first = float(observed.times[0])
            if prior.time > first:
                raise ModelInputError(
                    f"the prior's states live at t = {prior.time:.6g}, after this batch's "
                    f"first time {first:.6g}, and a model with anchor='first' solves forwards "
                    "only: build the prior from series on the same time axis as the batch."
                )
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
        paths = p_x.mean  # (K, B or 1, T, D)
        noise = p_x.variance.expand_as(paths)  # (K, B or 1, T, D)
        pick = _series_multinomial(w, n_samples, generators)  # (K, B) resampled paths
        if paths.shape[1] == 1:  # shared: weighted moments about the paths' plain mean
            ref = paths[:, 0].mean(dim=0)  # (T, D)
            mean = torch.einsum("kb,ktd->btd", w, paths[:, 0])  # (B, T, D)
            second = torch.einsum("kb,ktd->btd", w, (paths[:, 0] - ref).square() + noise[:, 0])
            var = (second - (mean - ref).square()).clamp_min(0.0)  # (B, T, D)
            samples = paths[:, 0][pick]  # (K, B, T, D)
        else:
            wk = w[:, :, None, None]  # (K, B, 1, 1)
            mean = (wk * paths).sum(dim=0)  # (B, T, D)
            var = (wk * ((paths - mean).square() + noise)).sum(dim=0)  # (B, T, D)
            samples = paths[pick, torch.arange(B, device=paths.device)]  # (K, B, T, D)
        if level is not None:
            mean, samples = mean + level[:, None, :], samples + level[:, None, :]
        return Prediction(mean, var.sqrt(), samples, 1.0 / w.square().sum(dim=0))

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
