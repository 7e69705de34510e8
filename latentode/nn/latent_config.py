"""The latent ODE's value objects: `LatentODEConfig` and the checks `LatentODE` runs on it,
`LatentODEOutput` and `ELBOTerms` (what a pass and the objective return), and the
`AggregatePosterior` prior of `LatentODE.predict` with its checks. The model itself, and
the loss normalisation `ELBOTerms` refers to: `latentode.nn.latent_ode`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from torch.distributions import Normal

from .base import ModelInputError, SolverSettings, check_obs_std, check_sizes, check_solver_settings
from .row_flow import check_row_flow
from .vector_fields import check_depth

__all__ = [
    "AggregatePosterior",
    "ELBOTerms",
    "LatentODEConfig",
    "LatentODEOutput",
    "check_config",
    "check_prior",
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
        encoder_ode_depth: hidden layers of that vector field (default ``None``: 1, as
            Rubanova's ``--rec-layers`` default; their Latent ODE's ``ode_func_net``).
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
    encoder_ode_depth: int | None = None
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


def check_config(config: LatentODEConfig) -> None:
    """The checks `LatentODE` runs on its config before building anything.

    Raises:
        ModelInputError: for an unknown encoder, center or anchor, an option the chosen encoder
            does not have, or a size, depth, std or solver setting out of range.
    """
    if config.encoder not in ("gru", "odernn"):
        raise ModelInputError(f"encoder must be 'gru' or 'odernn', got {config.encoder!r}.")
    if config.encoder_time and config.encoder != "gru":
        raise ModelInputError(
            "encoder_time feeds the GRU encoder the time since t0; the ODE-RNN encoder "
            "carries time by its ODE. Set encoder: gru or encoder_time: false."
        )
    for name in ("encoder_ode_hidden", "encoder_ode_depth"):
        if getattr(config, name) is not None and config.encoder != "odernn":
            raise ModelInputError(
                f"{name} sizes the ODE-RNN encoder's vector field; the GRU encoder has none. "
                f"Set encoder: odernn or leave {name} unset."
            )
    if config.center not in ("none", "mean", "last"):
        raise ModelInputError(f"center must be 'none', 'mean' or 'last', got {config.center!r}.")
    if config.anchor not in ("first", "last"):
        raise ModelInputError(f"anchor must be 'first' or 'last', got {config.anchor!r}.")
    sizes = ("input_dim", "latent_dim", "encoder_hidden", "dynamics_hidden", "decoder_hidden")
    check_sizes(
        **{n: getattr(config, n) for n in sizes}, encoder_ode_hidden=config.encoder_ode_hidden
    )
    if config.encoder_ode_depth is not None:
        check_depth(config.encoder_ode_depth, "encoder_ode_depth")
    check_depth(config.dynamics_depth, "dynamics_depth")
    check_depth(config.decoder_depth, "decoder_depth")
    check_obs_std(config.obs_std)
    check_solver_settings(config.solver, "solver")
    check_solver_settings(config.encoder_solver, "encoder_solver")
    if config.encoder == "odernn":
        check_row_flow(config.encoder_solver, "encoder_solver")


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
    """The pieces of the training objective (`latentode.nn.latent_ode` explains the normalisation).

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


def check_prior(
    prior: AggregatePosterior | None,
    importance: bool,
    refine: int,
    config: LatentODEConfig,
    times: Tensor,
) -> None:
    """The checks of `LatentODE.predict` on its ``prior`` (None: nothing to check).

    Args:
        prior, importance, refine: `LatentODE.predict`'s arguments.
        config: the model's config (its latent size and anchor).
        times: ``[T]`` the conditioning batch's grid.

    Raises:
        ModelInputError: ``prior`` without ``importance``, with ``refine``, of another latent
            size, or (``anchor="first"``) at a time after the batch's first time.
    """
    if prior is None:
        return
    if not importance:
        raise ModelInputError(
            "prior= weights the paths by the model's likelihood: pass importance=True too."
        )
    if refine:
        raise ModelInputError(
            "prior= draws the paths from the aggregate posterior, not from the encoder's "
            "q(z0): there is nothing to refine; pass refine=0."
        )
    if prior.loc.shape[-1] != config.latent_dim:
        raise ModelInputError(
            f"prior has {prior.loc.shape[-1]} latent dimensions, the model "
            f"{config.latent_dim}: build it with this model's aggregate_posterior."
        )
    if prior.time is not None and config.anchor == "first":
        first = float(times[0])
        if prior.time > first:
            raise ModelInputError(
                f"the prior's states live at t = {prior.time:.6g}, after this batch's "
                f"first time {first:.6g}, and a model with anchor='first' solves forwards "
                "only: build the prior from series on the same time axis as the batch."
            )
