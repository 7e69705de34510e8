"""The latent ODE's paths: solving the latent state out to the query times (a shared grid,
or one per series), drawing ``z0`` and resampled paths (per series from their own generators
when asked), and reading predictions and log-likelihoods out of the decoded paths. Helpers of
`latentode.nn.latent_ode.LatentODE`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Normal

from ..solver import SolveStats, solve
from ..solver.state import HALF
from .base import ModelInputError, Prediction, SolverSettings, check_query_times
from .decoders import masked_log_likelihood
from .vector_fields import ODEFunc

__all__ = ["kl_standard_normal", "solve_latent"]


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


def _path_moments(p_x: Normal) -> Prediction:
    """The predictive of K equally weighted paths ``p_x`` ``[K, B, T, D]``: the paths' mean,
    the mixture std ``sqrt(var_k(mean_k) + mean_k sigma^2)``, the decoded means as samples."""
    samples = p_x.mean  # (K, B, T, D)
    var = samples.var(dim=0, unbiased=False) + p_x.variance.mean(dim=0)  # (B, T, D)
    return Prediction(samples.mean(dim=0), var.sqrt(), samples)


def _weighted_prediction(p_x: Normal, w: Tensor, pick: Tensor, level: Tensor | None) -> Prediction:
    """The predictive of K paths ``p_x`` ``[K, B or 1, T, D]`` weighted by ``w`` ``[K, B]``:
    the weighted mean and mixture std, the paths ``pick`` ``[K, B]`` as samples, the weights'
    effective sample size; ``level`` ``[B, D]`` added to the mean and samples (None: not)."""
    B = w.shape[1]
    paths = p_x.mean  # (K, B or 1, T, D)
    noise = p_x.variance.expand_as(paths)  # (K, B or 1, T, D)
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


def solve_latent(
    dynamics: ODEFunc,
    solver: SolverSettings,
    z0: Tensor,
    t0: Tensor,
    times: Tensor,
    before_t0: bool,
) -> tuple[Tensor, SolveStats]:
    """`LatentODE.integrate` by ``dynamics`` with the ``solver`` settings.

    Args:
        dynamics: the latent vector field.
        solver: the solver settings.
        z0, t0, times: as `LatentODE.integrate`.
        before_t0: whether times before ``t0`` are allowed (``anchor="last"``).

    Returns:
        ``[K, B, T, L]`` latent states and the `SolveStats` of the solve (when query times lie
        on both sides of ``t0``, the summed forward counts of its two solves).

    Raises:
        ModelInputError: for times the solve cannot read out.
    """
    K, B, L = z0.shape
    times, t0 = _time_like(times, z0), _time_like(t0, z0)
    host, start = check_query_times(times, t0, B, before_t0=before_t0)
    if times.dim() == 1:
        return _solve_grid(dynamics, solver, z0, t0, times, host, start)
    if not times.requires_grad and bool((host == host[:1]).all()):  # one grid for all
        return _solve_grid(dynamics, solver, z0, t0, times[0], host[0], start)
    if bool((host[:, 0] < start).any()):  # per-series times before the anchor: their union
        union, where = torch.unique(host, sorted=True, return_inverse=True)  # (G,), (B, T)
        grid = _time_like(union, z0)
        zt, stats = _solve_grid(dynamics, solver, z0, t0, grid, union, start)  # (K, B, G, L)
        index = where.to(z0.device).view(1, B, -1, 1).expand(K, -1, -1, L)  # (K, B, T, L)
        return zt.gather(2, index), stats
    kw = solver.kwargs()
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
    sol = solve(dynamics, z0.transpose(0, 1), t, **kw)  # ys (T + skip, B, K, L)
    return sol.ys[skip:].permute(2, 1, 0, 3), sol.stats  # (K, B, T, L)


def _solve_grid(
    dynamics: ODEFunc,
    solver: SolverSettings,
    z0: Tensor,
    t0: Tensor,
    times: Tensor,
    host: Tensor,
    start: float,
) -> tuple[Tensor, SolveStats]:
    """`solve_latent` on a shared grid ``times [T]`` (``host``: its host copy, ``start``:
    ``t0`` as a float): one solve forwards for the times ``>= t0``, one backwards for
    those before it. Returns ``[K, B, T, L]`` and the solves' `SolveStats` (summed)."""
    kw = solver.kwargs()
    n_before = int((host < start).sum())
    parts, stats = [], []
    if n_before:  # backwards from t0, latest time first
        t = torch.cat([t0.view(1), times[:n_before].flip(0)])  # (n_before + 1,)
        sol = solve(dynamics, z0, t, **kw)
        parts.append(sol.ys[1:].flip(0))  # (n_before, K, B, L)
        stats.append(sol.stats)
    if n_before < times.shape[0]:
        later = times[n_before:]
        skip = int(bool(host[n_before] > start))
        t = torch.cat([t0.view(1), later]) if skip else later  # (T - n_before + skip,)
        sol = solve(dynamics, z0, t, **kw)
        parts.append(sol.ys[skip:])  # (T - n_before, K, B, L)
        stats.append(sol.stats)
    if len(stats) == 1:
        total = stats[0]
    else:
        total = SolveStats(
            nfe=sum(x.nfe for x in stats),
            n_accepted=sum(x.n_accepted for x in stats),
            n_rejected=sum(x.n_rejected for x in stats),
        )
    return torch.cat(parts).permute(1, 2, 0, 3), total  # (K, B, T, L)
