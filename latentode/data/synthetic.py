"""Seeded synthetic data of the latent ODE papers: spirals (Chen 2018), periodic (Rubanova 2019).

Every generator draws from its own ``torch.Generator(seed)``: the same arguments give the same
tensors, and torch's global random state is left alone.

Spiral experiment of Chen 2018 Table 2 ("observe n of the first 100 points, predict the next
100")::

    spirals = make_spirals(n=1000, seed=0)
    split = spirals.forecast_split(n_observed=30, generator=torch.Generator().manual_seed(1))
    # split.observed: 30 random points of each series' first 100; split.target: the next 100
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .batch import IrregularBatch, Split, split_extrapolation, subsample_observations
from .errors import DataError

__all__ = [
    "N_CONDITIONING",
    "PeriodicSeries",
    "Spirals",
    "check_spiral_settings",
    "make_periodic",
    "make_spirals",
]


@dataclass(frozen=True, eq=False)
class Spirals:
    """Windows of bi-directional 2-D spirals, each ``n_sample`` points plus ``n_forecast`` more.

    Attributes:
        times: ``[W]`` window times, ``W = n_sample + n_forecast``, starting at 0 (the example
            of torchdiffeq also gives every window the times ``grid[:W]``).
        values: ``[n, W, 2]`` noisy observations.
        clean: ``[n, W, 2]`` noise-free points.
        clockwise: ``[n]`` bool, the direction of each spiral.
        start_index: ``[n]`` long, where each window starts on the full grid.
        grid: ``[n_total]`` the full time grid ``linspace(start, stop, n_total)``.
        n_sample: points of the conditioning window (the rest are the forecast window).
        paths: ``[2, n_total, 2]`` the two noise-free spirals on the grid (counter-clockwise,
            clockwise) that every window is cut from.
        noise_std: the observation noise std.
    """

    times: Tensor
    values: Tensor
    clean: Tensor
    clockwise: Tensor
    start_index: Tensor
    grid: Tensor
    n_sample: int
    paths: Tensor
    noise_std: float

    @property
    def batch(self) -> IrregularBatch:
        """All ``W`` noisy points of every series, fully observed."""
        return IrregularBatch(self.times, self.values, torch.ones_like(self.values))

    @property
    def t_split(self) -> float:
        """The first forecast time, ``times[n_sample]``."""
        return float(self.times[self.n_sample])

    def forecast_split(
        self, n_observed: int | None = None, generator: torch.Generator | None = None
    ) -> Split:
        """Condition on ``n_observed`` random points of the first ``n_sample``; predict the rest.

        Args:
            n_observed: points kept per series (None keeps all ``n_sample``).
            generator: random source of the subset.

        Returns:
            A `Split`: ``observed`` on the first ``n_sample`` times, ``target`` the forecast
            window (noisy values; use ``clean[:, n_sample:]`` to score against the truth).
        """
        split = split_extrapolation(self.batch, self.t_split)
        if n_observed is None:
            return split
        observed = subsample_observations(
            split.observed, n_observed=n_observed, generator=generator
        )
        return Split(observed, split.target, split.heldout_mask)

    def bayes_forecast(self, observed: IrregularBatch) -> Tensor:
        """The Bayes-optimal prediction ``[B, W, 2]`` of the noise-free windows from ``observed``.

        It knows the generator: each window is one of the two `paths` cut at a start index drawn
        uniformly from ``[n_sample, n_total - W]``, the direction is a fair coin, and the noise
        is Gaussian with std `noise_std`. The posterior over these hypotheses given the observed
        values (the masked Gaussian likelihood) weights their clean windows. No forecaster can
        have a lower expected squared error against the clean spiral, so this is the floor for
        the models of Chen 2018's experiment, not a model.

        Args:
            observed: values and mask ``[B, T, 2]`` on the first ``T <= W`` window times
                (``times`` equal to ``self.times[:T]``); masked points are ignored.

        Returns:
            The posterior mean of the clean window, ``[B, W, 2]`` in the dtype of ``values``.

        Raises:
            DataError: if the noise std is 0 (the posterior is then not a density) or
                ``observed`` is not on this data's window times.
        """
        if not self.noise_std > 0:
            raise DataError("bayes_forecast needs noise_std > 0; these spirals are noise-free.")
        T = observed.n_times
        times = observed.times
        W = self.times.shape[0]
        if times.dim() != 1 or T > W or not torch.allclose(times, self.times[:T].to(times)):
            raise DataError(
                f"bayes_forecast needs observations on this data's window times (the first T <= "
                f"{W} of Spirals.times, one shared grid); got times of shape "
                f"{tuple(times.shape)}."
            )
        f64 = torch.float64
        starts = torch.arange(self.n_sample, self.paths.shape[1] - W + 1)  # (S,)
        windows = starts.unsqueeze(1) + torch.arange(W)  # (S, W)
        hyp = self.paths.to(f64)[:, windows].flatten(0, 1)  # (H, W, 2), H = 2 S
        seen = hyp[:, :T]  # (H, T, 2)
        m = observed.mask.to(f64)  # (B, T, 2)
        x = torch.where(m > 0, observed.values.to(f64), 0.0)  # (B, T, 2); masked never enter
        # sum_i m_i (x_i - h_i)^2 without the (B, H, T, 2) tensor; the x^2 term is constant in H
        sq = -2.0 * torch.einsum("btd,htd->bh", x, seen) + torch.einsum("btd,htd->bh", m, seen**2)
        weights = torch.softmax(-sq / (2.0 * self.noise_std**2), dim=-1)  # (B, H)
        mean = (weights @ hyp.flatten(1)).unflatten(1, (W, 2))  # (B, W, 2)
        return mean.to(observed.values.dtype)


def _spiral(theta: Tensor, a: float, b: float, clockwise: bool, style: str) -> Tensor:
    """Points ``[len(theta), 2]`` of one spiral; see `make_spirals`."""
    if style == "torchdiffeq" and clockwise:
        z = theta[-1] + 1.0 - theta  # (N,) angle runs backwards; +1 avoids division by 0
        r = a + b * 50.0 / z  # (N,)
        return torch.stack([r * torch.cos(z) - 5.0, r * torch.sin(z)], dim=-1)  # (N, 2)
    r = a + b * theta  # (N,) Archimedean
    sign = -1.0 if clockwise else 1.0
    centre = -5.0 if clockwise else 5.0
    return torch.stack([r * torch.cos(theta) + centre, sign * r * torch.sin(theta)], dim=-1)


N_CONDITIONING = 100  # `make_spirals`' default n_sample: the conditioning window's points


def check_spiral_settings(noise_std: float, style: str) -> None:
    """Refuse a noise std that is not a number >= 0, or an unknown spiral style.

    Raises:
        DataError: naming the setting and the value given.
    """
    if style not in ("archimedean", "torchdiffeq"):
        raise DataError(f"style must be 'archimedean' or 'torchdiffeq', got {style!r}.")
    number = isinstance(noise_std, int | float) and not isinstance(noise_std, bool)
    if not (number and 0 <= noise_std < math.inf):
        raise DataError(
            f"noise_std is the std of the Gaussian noise on every point: a finite number "
            f">= 0 (0: clean spirals), got {noise_std!r}."
        )


def make_spirals(
    n: int = 1000,
    n_total: int = 500,
    n_sample: int = N_CONDITIONING,
    n_forecast: int = 100,
    start: float = 0.0,
    stop: float = 6 * math.pi,
    a: float = 0.0,
    b: float = 0.3,
    noise_std: float = 0.3,
    style: Literal["archimedean", "torchdiffeq"] = "archimedean",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Spirals:
    """Bi-directional spirals (Chen 2018 sec. 5; torchdiffeq ``examples/latent_ode.py``).

    Two trajectories on ``grid = linspace(start, stop, n_total)``: counter-clockwise
    ``r = a + b * theta`` centred at (5, 0) and clockwise centred at (-5, 0). Each series is a
    window of ``W = n_sample + n_forecast`` consecutive grid points starting at a uniform index
    in ``[n_sample, n_total - W]`` (torchdiffeq keeps windows off the start the same way), with
    Gaussian noise of std ``noise_std`` on every point. Exactly ``n // 2`` series are
    clockwise, in random order (torchdiffeq flips a coin per series).

    Args:
        n: number of series.
        n_total: grid points; n_sample: conditioning window; n_forecast: forecast window.
        start, stop: grid range (the angle theta).
        a, b: spiral parameters.
        noise_std: observation noise std.
        style: ``"archimedean"`` (clockwise = mirror image of the counter-clockwise spiral, as
            the paper describes) or ``"torchdiffeq"`` (clockwise ``r = a + 50 b / (stop + 1 -
            theta)``, as the example code has it).
        seed: random seed.
        dtype: dtype of the returned tensors (generated in float64).

    Returns:
        `Spirals`.

    Raises:
        DataError: if the windows do not fit on the grid or an argument is out of range.
    """
    W = n_sample + n_forecast
    if n < 1 or n_sample < 1 or n_forecast < 0 or n_total < n_sample + W:
        raise DataError(
            f"need n >= 1, n_sample >= 1, n_forecast >= 0 and n_total >= 2 * n_sample + "
            f"n_forecast (windows start at index >= n_sample); got n={n}, n_total={n_total}, "
            f"n_sample={n_sample}, n_forecast={n_forecast}."
        )
    check_spiral_settings(noise_std, style)
    gen = torch.Generator().manual_seed(seed)
    grid = torch.linspace(start, stop, n_total, dtype=torch.float64)  # (n_total,)
    paths = torch.stack([_spiral(grid, a, b, cw, style) for cw in (False, True)])  # (2, N, 2)
    clockwise = torch.arange(n) < n // 2  # (n,)
    clockwise = clockwise[torch.randperm(n, generator=gen)]  # (n,)
    start_index = torch.randint(n_sample, n_total - W + 1, (n,), generator=gen)  # (n,)
    window = start_index.unsqueeze(1) + torch.arange(W)  # (n, W)
    clean = paths[clockwise.long().unsqueeze(1), window]  # (n, W, 2)
    noise = torch.randn(n, W, 2, generator=gen, dtype=torch.float64) * noise_std  # (n, W, 2)
    return Spirals(
        times=(grid[:W] - grid[0]).to(dtype),
        values=(clean + noise).to(dtype),
        clean=clean.to(dtype),
        clockwise=clockwise,
        start_index=start_index,
        grid=grid.to(dtype),
        n_sample=n_sample,
        paths=paths.to(dtype),
        noise_std=float(noise_std),
    )


@dataclass(frozen=True, eq=False)
class PeriodicSeries:
    """Rubanova 2019's toy periodic series on one shared irregular grid.

    Attributes:
        times: ``[n_points]`` 0 followed by sorted uniform draws on ``(0, t_max)``.
        values: ``[n, n_points, 1]`` with noise; clean: the same without noise.
        frequency: ``[n]``; offset: ``[n]`` (the constant ``c``).
    """

    times: Tensor
    values: Tensor
    clean: Tensor
    frequency: Tensor
    offset: Tensor

    @property
    def batch(self) -> IrregularBatch:
        """All points of every series, fully observed."""
        return IrregularBatch(self.times, self.values, torch.ones_like(self.values))


def make_periodic(
    n: int = 1000,
    n_points: int = 100,
    t_max: float = 5.0,
    freq_range: tuple[float, float] = (0.4, 0.8),
    offset_mean: float = 1.0,
    offset_std: float = 0.1,
    noise_weight: float = 0.01,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> PeriodicSeries:
    """``y = sin(2 pi f t) + c`` on a shared grid (Rubanova 2019, ``Periodic_1d`` as their code).

    Grid: ``t = [0, sorted(U(0, t_max) x (n_points - 1))]``, shared by all series. Per series:
    ``f ~ U(freq_range)``, ``c = offset_mean + N(0, offset_std^2)``, amplitude 1. Noise as their
    ``add_noise``: ``noise_weight * U(0, 1)`` added to every point but the first (one-sided,
    mean ``noise_weight / 2``; ``noise_weight=0`` for clean data).

    Args:
        n: number of series (they use 1000: 800 train, 200 test).
        n_points: grid length; t_max: grid range.
        freq_range: range of the frequency f.
        offset_mean, offset_std: distribution of the offset c.
        noise_weight: scale of the uniform noise.
        seed: random seed.
        dtype: dtype of the returned tensors (generated in float64).

    Returns:
        `PeriodicSeries`.

    Raises:
        DataError: for arguments out of range.
    """
    f_lo, f_hi = freq_range
    if n < 1 or n_points < 2 or not t_max > 0 or not 0 < f_lo <= f_hi or noise_weight < 0:
        raise DataError(
            "need n >= 1, n_points >= 2, t_max > 0, 0 < freq_range[0] <= freq_range[1] and "
            f"noise_weight >= 0; got n={n}, n_points={n_points}, t_max={t_max}, "
            f"freq_range={freq_range}, noise_weight={noise_weight}."
        )
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    draws = torch.rand(n_points - 1, generator=gen, dtype=f64) * t_max  # (n_points - 1,)
    times = torch.cat([torch.zeros(1, dtype=f64), draws.sort().values])  # (n_points,)
    frequency = f_lo + (f_hi - f_lo) * torch.rand(n, generator=gen, dtype=f64)  # (n,)
    offset = offset_mean + offset_std * torch.randn(n, generator=gen, dtype=f64)  # (n,)
    clean = torch.sin(2 * math.pi * frequency.unsqueeze(1) * times) + offset.unsqueeze(1)
    noise = noise_weight * torch.rand(n, n_points, generator=gen, dtype=f64)  # (n, n_points)
    noise[:, 0] = 0.0
    return PeriodicSeries(
        times=times.to(dtype),
        values=(clean + noise).unsqueeze(-1).to(dtype),
        clean=clean.unsqueeze(-1).to(dtype),
        frequency=frequency.to(dtype),
        offset=offset.to(dtype),
    )
