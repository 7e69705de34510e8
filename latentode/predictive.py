"""The posterior predictive of a fitted latent ODE at future times, in the user's units.

For each segment: condition on it, draw ``K`` posterior paths (`LatentODE.predict`), and map
them and the decoder's observation noise back through the stored normalisation. Given its
path, a value is Gaussian: path ``k`` has mean ``mu_k`` (its decoded mean) and std ``s_k``
(the noise), so the predictive is the equal-weight mixture of ``K`` Gaussians (of every
member's paths for pooled fits). A `Predictive` keeps the paths and the noise (and one noisy
draw per path, samples for whoever needs them), and summarises them as (mean, std, q05, q50,
q95) per time and channel (with the ends of other central bands before and after q50 when
asked: `quantile_probs`), optionally with each band scaled about its median by calibration
factors (`latentode.calibration`).

The quantiles are the mixture's own, solved exactly for these paths: ``q`` with
``mean_k Phi((q - mu_k) / s_k) = p`` (`mixture_quantiles`). Until 2026-11-25 they were sample
quantiles of the noisy draws, and their Monte-Carlo error was material: on the fertility fit
of ``configs/csv.yaml`` with 200 paths, q05 and q95 moved by a median 0.14 (90th percentile
0.34) predictive std between two seeds, the calibration factors fitted on them by 8-15% (sd
over six seeds), and the calibrated mean ``q50 + lam (mean - q50)`` 2.9x as much as the mean.
What is left is the paths' own sampling error: 0.014 (0.03) std, factors within 1-5%, the
calibrated mean as steady as the mean; against 20,000 paths the quantiles are off by a median
0.009 std (0.10 with the draws).

On a channel as it is, the mean and std are the mixture's moments (``mean_k mu_k`` and
``sqrt(var_k mu_k + s^2)``); a band factor ``lam`` moves every summary about the median,
``q50 + lam * (x - q50)`` (`scale_bands`). With each end of a band calibrated on its own
(`latentode.calibration`, ``tails``), the lower ends take one factor and the upper ends
another, and the mean and std the 5-95% band's central factor (``center``): an end's factor
rests on the few most extreme validation values, and the mean would follow their noise.

On a channel modelled on a log scale (`latentode.data.transforms`), path ``k`` is Gaussian in
``z = log x`` with mean ``mu_k`` and std ``s`` (the noise), so ``x`` is log-normal per path.
The quantiles are the mixture's quantiles of ``z`` mapped back (the transform is increasing,
so exactly those of ``x``), and stay positive; the mean and std are the log-normal mixture's
moments, ``E x = mean_k exp(mu_k + s^2 / 2)`` and its law-of-total-variance spread (for
``log1p``, of ``max(x, 0)``: a count is never below 0, so the predictive is censored there).
A band factor scales the quantiles of ``z`` about its median, so a widened band stays
positive and widens more above the median than below it, and the calibration's coverage (a
statement about quantiles) holds on either scale. The mean and std are those of the same
calibrated distribution: the mixture scaled on the ``z`` scale about its median ``m`` by the
5-95% band's central factor ``c`` (``center``), path ``k`` Gaussian with mean
``m + c (mu_k - m)`` and std ``c s``, whose every quantile is ``m + c (q - m)`` mapped back
(the calibrated 5-95% band's ends among them), its moments by the formulas above. Until
2026-11-25 they stayed the model's while the quantiles were calibrated, so a row described two
distributions: on a log-scale fit of the fertility data (factors 0.32-1.56 by lead),
``3.29 std`` was a median 1.74 times the calibrated ``q95 - q05``; now 1.00, as on a channel
as it is. A log-normal's mean rests on its far upper tail, which the factors (fitted to the
90% band) stretch too: on that fit the calibrated mean's test MSE was 1.3% above the model's
mean's (0.0313 against 0.0309), and on 100 positive series whose band needed factors of 2.5-4
it was 16.8 against 5.0. For a point forecast on a transformed channel take ``q50``, which no
factor moves.

On a channel modelled on a logit scale between bounds ``LO`` and ``HI``, path ``k`` is
Gaussian in ``z = logit((x - LO) / (HI - LO))``, so ``x`` is logit-normal per path. The
quantiles and the band factors work as on a log scale, so every quantile of a widened band
stays strictly between the bounds; the mean and std are the (scaled) mixture's, each path's
moments by Gauss-Hermite quadrature (`_logit_normal_moments`; the logit-normal has no closed
form).

Usage::

    seeds = draw_seeds(0, [str(g.series) for g in segs])  # one per segment (see draw_seeds)
    preds = predictives(model, segs, future, data_state, 200, seeds)
    stats = preds[0].summary()                   # (n, D, 5)
    wide = preds[0].summary(np.full(D, 1.3))     # the band 1.3x as wide about the median
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .data.batch import IrregularBatch
from .data.prep import Segment, collate_segments, denormalise, denormalise_std
from .data.transforms import base_of, bounds_of, forward, inverse, kinds_of
from .ensemble import Ensemble
from .mixture import mixture_quantiles, ndtr
from .nn.base import ModelInputError
from .nn.latent_ode import AggregatePosterior, LatentODE

__all__ = [
    "CALL_BYTES",
    "LEVEL",
    "PATH_TIME_BYTES",
    "QUANTILES",
    "Predictive",
    "band_columns",
    "band_levels",
    "band_scores",
    "call_gb",
    "call_memory",
    "center_factor",
    "conditioned_batch",
    "draw_seeds",
    "draws_held",
    "draws_per_call",
    "iter_predictives",
    "mixture_quantiles",
    "percent",
    "predictive_summary",
    "predictives",
    "quantile_names",
    "quantile_probs",
    "scale_bands",
]

CALL_BYTES = 360 * 2**22
"""About the most memory one model call of `predictives` holds above the loaded process
(1.5 GB), counted as path-times (paths x segments x times, `draws_held`) at `PATH_TIME_BYTES`
each: `draws_per_call`. A larger list of segments is taken in halves, and a series that
alone needs more is refused (`latentode.forecast.future_times`)."""

PATH_TIME_BYTES = (290, 35)
"""The bytes one path-time holds in a call: a fixed part (the latent path, the solver's
stages) and one per channel (the decoded means, the noisy draws and their copies as they
are summarised). Fitted to the peaks of ``predict`` with the CSV default model at 2, 16 and
48 channels: 335, 720 and 1,950 bytes per path-time (`reports/predict_memory_48.md`)."""


_CALL = {"bytes": CALL_BYTES}  # what `call_memory` sets for the calls inside it


def draws_per_call(n_channels: int) -> int:
    """The most path-times one model call holds with ``n_channels`` channels: `CALL_BYTES`
    (or what `call_memory` set) over `PATH_TIME_BYTES`; 4,194,304 (2^22) for one or two
    channels, 766,471 for 48."""
    fixed, per_channel = PATH_TIME_BYTES
    return max(1, _CALL["bytes"] // (fixed + per_channel * max(n_channels, 2)))


def call_gb() -> float:
    """The memory one model call may hold now, in GB (`CALL_BYTES` or `call_memory`'s)."""
    return _CALL["bytes"] / 1e9


@contextmanager
def call_memory(gb: float | None) -> Iterator[None]:
    """Within the block, one model call holds about ``gb`` GB instead of `CALL_BYTES` (None:
    unchanged): ``latentode predict --call_memory``, for a machine with memory to spare.

    Raises:
        ModelInputError: ``gb`` is not a positive number.
    """
    if gb is None:
        yield
        return
    if not (math.isfinite(gb) and gb > 0):
        raise ModelInputError(f"--call_memory {gb}: give the GB one model call may hold, > 0.")
    before = _CALL["bytes"]
    _CALL["bytes"] = int(gb * 1e9)
    try:
        yield
    finally:
        _CALL["bytes"] = before


LEVEL = 0.9
"""The principal band's coverage: the 5-95% band, always summarised; its factor also scales
the mean and std (`scale_bands`)."""
QUANTILES = (0.05, 0.5, 0.95)
HERMITE_NODES = 64
"""Gauss-Hermite nodes per path for a ``logit`` channel's mean and std
(`_logit_normal_moments`): within 1e-12 of the range for a path's noise std up to 1 on the
logit scale, 1e-6 up to 3 and 1e-4 up to 4 (`tests/test_transforms.py`; a std of 4 puts the
5-95% band of one path's noise across a factor of 500 in odds)."""
_TINY = 1e-12  # a half-band narrower than this has zero width


def band_levels(levels: Sequence[float] | None = None) -> tuple[float, ...]:
    """The central bands a summary holds: ``levels`` (coverages in (0, 1); one number is one
    band) and `LEVEL`, ascending, each once (None: `LEVEL` alone).

    Raises:
        ValueError: a level outside (0, 1) or not a number.
    """
    if isinstance(levels, (int, float, np.number)):  # one band
        levels = (levels,)
    return tuple(sorted({_level(v) for v in [*(levels or ()), LEVEL]}))


def _level(value: float) -> float:
    """One band's coverage, checked and rounded to 12 digits (so that 0.9 computed two ways
    is one level)."""
    if not 0.0 < float(value) < 1.0:  # NaN fails too
        raise ValueError(f"a band's level is a coverage strictly between 0 and 1, got {value}")
    return round(float(value), 12)


def quantile_probs(levels: Sequence[float] | None = None) -> tuple[float, ...]:
    """The quantiles a summary holds, ascending: for each of `band_levels` its lower and
    upper ends ``(1 -+ level) / 2``, and the median; ``(0.05, 0.5, 0.95)`` by default."""
    levels = band_levels(levels)
    lower = [round((1.0 - v) / 2, 12) for v in reversed(levels)]  # widest band first
    return (*lower, 0.5, *(round(1.0 - p, 12) for p in reversed(lower)))


def quantile_names(levels: Sequence[float] | None = None) -> list[str]:
    """Column names of `quantile_probs`, in percent: ``q05``, ``q50``, ``q95``; ``q02.5``,
    ``q97.5`` for the 95% band; ``q00.5`` for the 0.5% quantile."""
    return [f"q{'0' if p < 0.1 else ''}{percent(p)}" for p in quantile_probs(levels)]


def percent(share: float) -> str:
    """A share in percent, as short as it goes: ``90``, ``97.5``, ``2.5``."""
    return f"{round(100 * share, 9):g}"


def band_columns(levels: Sequence[float], level: float = LEVEL) -> tuple[int, int, int]:
    """Where the band of coverage ``level`` lies in a summary of ``levels``
    (``[..., 2 + Q]``: mean, std, then `quantile_probs`): its lower end, the median and its
    upper end.

    Raises:
        ValueError: ``level`` is not among `band_levels` of ``levels``.
    """
    levels = band_levels(levels)
    if _level(level) not in levels:
        raise ValueError(f"no {level:.4g} band among the summary's levels {levels}")
    i, mid = levels.index(_level(level)), 2 + len(levels)
    return mid - 1 - i, mid, mid + 1 + i


def scale_bands(
    stats: np.ndarray,
    scale: np.ndarray,
    levels: Sequence[float] | None = None,
    center: np.ndarray | None = None,
) -> np.ndarray:
    """The predictive scaled about its median, each band by its own factors.

    Args:
        stats: ``[..., D, 2 + Q]`` (mean, std, then the quantiles of `band_levels`
            ``levels``; by default ``[..., D, 5]``: mean, std, q05, q50, q95).
        scale: factors broadcastable to ``[2, L, ..., D]``: for each band's lower and upper
            end, one per band level (ascending). A factor for both ends broadcasts, e.g.
            ``[D]`` for every level and value, ``[..., D]`` one per value (by lead time), or
            ``[L, ..., D]`` one per level and value
            (`latentode.calibration.Calibration.factors`, which gives ``[2, L, ..., D]`` where
            each end was calibrated on its own).
        levels: the bands ``stats`` holds (None: `LEVEL` alone).
        center: the factor of the mean and std, broadcastable to ``[..., D]``; None: the
            5-95% band's, which both its ends must then share.

    Returns:
        ``[..., D, 2 + Q]``: each band's ends ``q50 + scale * (x - q50)`` with its level's
        factor for that end; the mean ``q50 + center * (mean - q50)`` and the std times
        ``center``. Where a band's end then lies inside a narrower band's (an 80%
        band scaled by 1.5, a 90% band by 0.5), it is moved out to it, so every band keeps at
        least its own coverage (a guard: with calibrated factors,
        `latentode.calibration.nested_factors`, no end lies inside a narrower band's where the
        model's own quantiles are ordered). For channels as they are; `Predictive.summary`
        scales a transformed channel.

    Raises:
        ValueError: ``center`` is None and the 5-95% band's ends have factors of their own.
    """
    levels = band_levels(levels)
    L = len(levels)
    lam = np.broadcast_to(np.asarray(scale, dtype=np.float64), (2, L, *stats.shape[:-1]))
    q50 = stats[..., 2 + L : 3 + L]  # (..., D, 1)
    out = stats.copy()
    out[..., 2:] = _nested(q50 + _per_quantile(lam) * (stats[..., 2:] - q50), L)
    center = center_factor(lam, levels, center)  # (..., D)
    out[..., 0] = q50[..., 0] + center * (stats[..., 0] - q50[..., 0])
    out[..., 1] = center * stats[..., 1]
    return out


def center_factor(
    lam: np.ndarray, levels: Sequence[float] | None = None, center: np.ndarray | None = None
) -> np.ndarray:
    """The factor that scales the mean and std, ``[..., D]``: ``center`` where given, else the
    5-95% band's, which both its ends must then share.

    Args:
        lam: ``[2, L, ..., D]`` each band's end factors (as `scale_bands` takes them).
        levels: the bands ``lam`` holds (None: `LEVEL` alone).
        center: broadcastable to ``[..., D]``, or None.

    Raises:
        ValueError: ``center`` is None and the 5-95% band's ends have factors of their own.
    """
    levels = band_levels(levels)
    low, up = lam[:, levels.index(LEVEL)]  # (..., D) each
    if center is not None:
        return np.broadcast_to(np.asarray(center, dtype=np.float64), low.shape)
    if (low != up).any():
        raise ValueError("the 5-95% band's ends have their own factors: pass center")
    return up


def _per_quantile(lam: np.ndarray) -> np.ndarray:
    """``[..., 2L + 1]`` each quantile's factor from ``lam [2, L, ...]`` (lower ends, upper
    ends; ascending levels): a band's lower end takes its level's lower factor, its upper end
    the upper one, the median 1."""
    low, up = (np.moveaxis(x, 0, -1) for x in lam)  # (..., L) each
    return np.concatenate([low[..., ::-1], np.ones_like(low[..., :1]), up], axis=-1)


def _nested(q: np.ndarray, L: int) -> np.ndarray:
    """Quantiles ``[..., 2L + 1]`` (widest band's lower end first) with each wider band
    widened to hold the narrower ones (running extremes out from the median)."""
    lower = np.minimum.accumulate(q[..., L - 1 :: -1], axis=-1)[..., ::-1]
    upper = np.maximum.accumulate(q[..., L + 1 :], axis=-1)
    return np.concatenate([lower, q[..., L : L + 1], upper], axis=-1)


@dataclass
class Predictive:
    """One segment's posterior predictive at its ``n`` future times.

    Attributes:
        draws: ``[K, n, D]`` one noisy draw per path in the user's units: samples of the
            predictive, for whoever needs samples (the summaries and scores do not use them:
            their quantiles are the mixture's, `mixture_quantiles`).
        mean: ``[n, D]`` the paths' mean (mixture mean over members), in the user's units
            for a channel as it is (on its transformed scale, and unused, for a transformed one: its
            summaries come from ``paths`` and ``noise``).
        std: ``[n, D]`` the mixture std, likewise.
        paths: ``[K, n, D]`` the paths' decoded means, on each channel's transformed scale
            (the user's units for a channel as it is).
        noise: ``[K, D]`` each path's observation-noise std on the same scale.
        kinds: each channel's transform (`latentode.data.transforms`).
    """

    draws: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    paths: np.ndarray
    noise: np.ndarray
    kinds: list[str]
    _solved: dict[float, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )  # each level's quantiles [n, D], solved once (`quantiles`)

    def summary(
        self,
        scale: np.ndarray | None = None,
        levels: Sequence[float] | None = None,
        center: np.ndarray | None = None,
    ) -> np.ndarray:
        """``[n, D, 2 + Q]``: mean, std and the quantiles of `quantile_probs` ``levels``
        (by default ``[n, D, 5]``: mean, std, q05, q50, q95), each band scaled about the
        median by its factors ``scale`` (broadcastable to ``[2, L, n, D]``, each end's:
        `scale_bands`; None: as the model gives it), and the mean and std those of the
        predictive scaled by ``center`` (broadcastable to ``[n, D]``; None: the 5-95% band's
        factor, which its two ends must then share), a transformed channel's on its
        transformed scale (module docstring).

        Raises:
            ValueError: ``center`` is None and the 5-95% band's ends have factors of their own.
        """
        levels = band_levels(levels)
        n, D = self.mean.shape
        zq = self.quantiles(quantile_probs(levels))  # (Q, n, D)
        stats = np.stack([self.mean, self.std, *zq], axis=-1)  # (n, D, 2 + Q)
        shape = (2, len(levels), n, D)
        lam = np.ones(shape) if scale is None else np.broadcast_to(scale, shape)
        mid = None  # the mean and std's factor (n, D); None: as the model gives them
        if scale is not None:
            mid = center_factor(lam, levels, center)
            stats = scale_bands(stats, lam, levels, mid)
        for d, kind in enumerate(self.kinds):
            if kind != "none":
                c = None if mid is None else mid[:, d]
                stats[:, d] = self._transformed(d, kind, lam[..., d], levels, zq[..., d], c)
        return stats

    def quantiles(self, probs: Sequence[float]) -> np.ndarray:
        """``[Q, n, D]`` the predictive's quantiles ``probs`` (ascending), each channel's on
        its transformed scale (the user's units for a channel as it is; a log channel's of
        ``log x``): those of the mixture of the paths' Gaussians (`mixture_quantiles`).

        Each level is solved once and kept, so a band's ends are the same bits in every
        `summary` and in `scores` (the scaled band holds a value exactly when its score is at
        most the factor), and `latentode.calibration`'s scores of several bands and ends
        share their solves.
        """
        missing = [p for p in dict.fromkeys(probs) if p not in self._solved]
        if missing:
            q = mixture_quantiles(self.paths, self.noise[:, None, :], missing)  # (M, n, D)
            self._solved.update(zip(missing, q, strict=True))
        return np.maximum.accumulate([self._solved[p] for p in probs], axis=0)  # (Q, n, D)

    def scores(
        self, target: np.ndarray, level: float = LEVEL, side: str | None = None
    ) -> np.ndarray:
        """``[n, D]`` the conformal scores of ``target [n, D]`` for the band of coverage
        ``level`` (`band_scores`; ``side``: for its lower or upper end alone), a transformed
        channel's on its transformed scale, where its band is scaled: the scaled band (end)
        of `summary` holds a value exactly when its score is at most the factor."""
        low = round((1.0 - _level(level)) / 2, 12)
        probs = (low, 0.5, round(1.0 - low, 12))  # (0.05, 0.5, 0.95) for LEVEL
        zq = self.quantiles(probs)  # (3, n, D) the band's ends and median alone
        stats = np.concatenate([np.full((2, *zq.shape[1:]), np.nan), zq]).transpose(1, 2, 0)
        z = forward(target, self.kinds)  # (n, D)
        for d, kind in enumerate(self.kinds):
            if kind == "log1p":  # a 0 is inside any band whose censored lower end is 0
                m = zq[1, :, d]  # (n,)
                z[:, d] = np.where((z[:, d] <= 0) & (m < 0), m, z[:, d])
        return band_scores(stats, z, side)

    def _transformed(
        self,
        d: int,
        kind: str,
        lam: np.ndarray,
        levels: tuple[float, ...],
        zq: np.ndarray,
        center: np.ndarray | None = None,
    ) -> np.ndarray:
        """``[n, 2 + Q]`` the summaries of transformed channel ``d`` from its quantiles ``zq``
        ``[Q, n]`` on the transformed scale, each band's scaled there by its factors ``lam``
        ``[2, L, n]`` (each end's), the mean and std those of the mixture scaled there about
        its median by ``center`` ``[n]`` (None: the model's; module docstring)."""
        L = len(levels)
        zq = zq.T  # (n, Q)
        m = zq[:, L : L + 1]  # (n, 1) the median of z
        scaled = _nested(m + _per_quantile(lam) * (zq - m), L)  # (n, Q)
        q = inverse(scaled.T[..., None], [kind])[..., 0]  # (Q, n)
        mu, s = self.paths[..., d], self.noise[:, d : d + 1]  # (K, n), (K, 1) z per path
        if center is not None:  # z -> m + c (z - m) moves each path's Gaussian so
            mu, s = m.T + center * (mu - m.T), center * s  # (K, n) each
        base = base_of(kind)
        if base == "log":
            with np.errstate(over="ignore"):
                e = np.exp(mu + s**2 / 2)  # (K, n) each path's mean of x
                var = e**2 * np.expm1(s**2)  # (K, n) and its variance
            mean, std = e.mean(axis=0), np.sqrt(var.mean(axis=0) + e.var(axis=0))
        elif base == "log1p":
            mean, std = _censored_moments(mu, np.broadcast_to(s, mu.shape))
            q = np.maximum(q, 0.0)
        else:
            lo, hi = bounds_of(kind)
            mean, std = _logit_normal_moments(mu, s)
            mean, std = lo + (hi - lo) * mean, (hi - lo) * std
        return np.stack([mean, std, *q], axis=-1)


def _censored_moments(mu: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std ``[n]`` of the mixture over paths ``[K, n]`` of ``y = max(e^z - 1, 0)``,
    ``z ~ N(mu, s^2)``: a ``log1p`` channel's predictive, censored at 0 (a count or amount
    is never below 0; the probability the log-normal puts below 0 sits at 0). With
    ``E[e^(a z) 1{z > 0}] = exp(a mu + a^2 s^2 / 2) Phi((mu + a s^2) / s)``::

        E y   = E[e^z 1{z>0}] - P(z > 0)
        E y^2 = E[e^(2z) 1{z>0}] - 2 E[e^z 1{z>0}] + P(z > 0)
    """
    s = np.maximum(s, 1e-300)
    with np.errstate(over="ignore"):
        p0 = ndtr(mu / s)  # (K, n) P(z > 0)
        e1 = np.exp(mu + s**2 / 2) * ndtr((mu + s**2) / s)
        e2 = np.exp(2 * mu + 2 * s**2) * ndtr((mu + 2 * s**2) / s)
    first, second = e1 - p0, e2 - 2 * e1 + p0  # (K, n)
    mean = first.mean(axis=0)
    return mean, np.sqrt(np.maximum(second.mean(axis=0) - mean**2, 0.0))


_HERMITE = np.polynomial.hermite.hermgauss(HERMITE_NODES)


def _logit_normal_moments(mu: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std ``[n]`` of the mixture over paths ``[K, n]`` of ``u = sigmoid(z)``,
    ``z ~ N(mu, s^2)`` (``s`` ``[K, n]`` or ``[K, 1]``): a ``logit`` channel's predictive on
    ``(0, 1)``. The logit-normal has no closed-form moments; each path's are Gauss-Hermite
    sums over `HERMITE_NODES` nodes,
    ``E g(z) = sum_i w_i g(mu + sqrt(2) s x_i) / sqrt(pi)``, its variance about its own
    mean (a second pass, so no cancellation for a narrow path near a bound)."""
    x, w = _HERMITE
    mu_t, s_t = (torch.tensor(np.asarray(a), dtype=torch.float64) for a in (mu, s))
    nodes = [
        (math.sqrt(2.0) * float(xi), float(wi) / math.sqrt(math.pi))
        for xi, wi in zip(x, w, strict=True)
    ]
    first = torch.zeros_like(mu_t)  # (K, n) each path's mean
    for xi, wi in nodes:
        first += wi * torch.sigmoid(mu_t + xi * s_t)
    second = torch.zeros_like(mu_t)  # (K, n) and its variance
    for xi, wi in nodes:
        second += wi * (torch.sigmoid(mu_t + xi * s_t) - first).square()
    mean = first.mean(dim=0)
    var = second.mean(dim=0) + first.var(dim=0, correction=0)
    return mean.numpy(), var.sqrt().numpy()


def band_scores(stats: np.ndarray, target: np.ndarray, side: str | None = None) -> np.ndarray:
    """Half-bands from the median to each target (the conformal score,
    `latentode.calibration`).

    Args:
        stats: ``[..., 5]`` (mean, std, q05, q50, q95) as `Predictive.summary` gives.
        target: ``[...]`` observed values, NaN where missing.
        side: None: the half-bands on the target's side of the median (the band scaled by
            ``lam`` holds it when the score is at most ``lam``). ``"upper"``: signed upper
            half-bands, ``(y - q50) / (q95 - q50)``, negative below the median (the upper end
            scaled by ``lam`` lies at or above ``y`` when the score is at most ``lam``);
            ``"lower"``: ``(q50 - y) / (q50 - q05)``, likewise for the lower end.

    Returns:
        Scores of the same shape as ``target`` (NaN where it is missing; ``inf`` where the
        half-band that is divided by has zero width and the target is past the median on its
        side, ``-inf`` where it is on the other side).
    """
    q05, q50, q95 = stats[..., 2], stats[..., 3], stats[..., 4]
    if side not in (None, "lower", "upper"):
        raise ValueError(f"side is None, 'lower' or 'upper', got {side!r}")
    above = target >= q50 if side is None else np.full(np.shape(target), side == "upper")
    dist = np.where(above, target - q50, q50 - target)  # negative: the other side (signed)
    half = np.where(above, q95 - q50, q50 - q05)
    with np.errstate(divide="ignore", invalid="ignore"):
        edge = np.where(dist > 0, np.inf, np.where(dist < 0, -np.inf, 0.0))  # zero half-band
        r = np.where(half > _TINY, dist / np.maximum(half, _TINY), edge)
    return np.where(np.isnan(target), np.nan, r)


def draw_seeds(seed: int, keys: Sequence[str]) -> list[int]:
    """One seed per key (a series id, with whatever else tells its draws apart): a hash of
    ``seed`` and the key, so a series' draws follow from the seed and its own name alone, not
    from its place in the file or the call (`iter_predictives`)."""
    out = []
    for key in keys:
        digest = hashlib.blake2b(f"{int(seed)}\x1f{key}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little") >> 1)  # below 2**63: any torch seed
    return out


def draws_held(
    model: LatentODE | Ensemble,
    segs: list[Segment],
    future: list[np.ndarray],
    n_samples: int,
    on_history: bool = False,
) -> int:
    """Path-times one call of `predictives` holds for these segments: ``n_samples`` paths of
    each segment on the padded grid of ``future`` (its widest row), and with ``on_history``
    (importance weights or refinement, which decode every path at the observed times too)
    also on the union of the histories' times as the model aligns them."""
    width = max(len(f) for f in future)
    if on_history:
        members = model.members if isinstance(model, Ensemble) else [model]
        width += max(_history_grid(m, segs) for m in members)
    return n_samples * len(segs) * width


def _history_grid(model: LatentODE, segs: list[Segment]) -> int:
    """The number of distinct observed times of ``segs`` on ``model``'s aligned time axis
    (`conditioned_batch`'s union grid)."""
    last = model.config.anchor == "last"
    aligned = [g.times - (g.times[-1] if last else g.t0) for g in segs]
    return len(np.unique(np.concatenate(aligned)))


def conditioned_batch(
    model: LatentODE, segs: list[Segment], data_state: dict[str, Any]
) -> tuple[IrregularBatch, list[float]]:
    """The segments as ``model`` conditions on them, and each one's time origin.

    Normalised by the checkpoint's statistics, on the model's time axis, each aligned as in
    training: at its first observation, or at its last for a model anchored there; in the
    model's dtype and on its device.
    """
    norm, scale = data_state.get("normalisation"), float(data_state.get("time_scale", 1.0))
    param = next(model.parameters())
    last = model.config.anchor == "last"
    origins = [float(g.times[-1]) if last else g.t0 for g in segs]
    batch = collate_segments(segs, norm, scale, dtype=param.dtype, origins=origins)
    return batch.to(param.device), origins


@torch.no_grad()
def iter_predictives(
    model: LatentODE | Ensemble,
    segs: list[Segment],
    future: list[np.ndarray],
    data_state: dict[str, Any],
    n_samples: int,
    seeds: Sequence[int],
    importance: bool = False,
    refine: int = 0,
    prior: AggregatePosterior | None = None,
) -> Iterator[Predictive]:
    """Per segment its `Predictive` at its times ``future``, lazily: the draws of one model
    call are freed once its predictives are consumed (`predictives` gives them as a list).

    The predictive is the mixture of the ``n_samples`` posterior paths' Gaussians (each path's
    mean and its observation noise), its quantiles the mixture's (`mixture_quantiles`); each
    path also gets one draw of the noise (`Predictive.draws`). Every draw of segment ``i`` (its
    paths, their noise, refinement and resampling) comes from a generator seeded with
    ``seeds[i]`` alone (`draw_seeds`), so its predictive does not depend on the other segments
    of the call, their order or how they are split into calls, up to the solver's tolerance (a
    call's segments share the adaptive steps of one solve). ``importance``: the paths are the
    importance-resampled ones of `LatentODE.predict` (the model's posterior, not the encoder's),
    the mean and std its weighted moments. ``refine``: Adam steps refining each series'
    ``q(z0)`` on its own ELBO first (`LatentODE.refine`). An `Ensemble`: ``n_samples`` paths
    from each member (read through its own ``data_state``; the one given is ignored), pooled
    with equal weights: the quantiles are those of the mixture of every member's paths, the mean
    the members' average and the variance the mixture's. ``prior``: with ``importance``, the
    paths are drawn from this aggregate posterior instead of the encoder's ``q``
    (`LatentODE.aggregate_posterior`; one model only, its states at the segments' aligned anchor
    time). Segments whose draws exceed `draws_per_call` (`draws_held`) are taken in halves, one
    after the other, until each part fits or is one segment.

    Raises:
        ModelInputError: ``prior`` with an `Ensemble`, members with different channel
            transforms, or not one seed per segment.
    """
    if len(seeds) != len(segs):
        raise ModelInputError(f"one seed per segment is needed: {len(seeds)} for {len(segs)}.")
    if prior is not None and isinstance(model, Ensemble):
        raise ModelInputError("prior= belongs to one model's encoder; not with an Ensemble.")
    on_history = importance or refine > 0
    budget = draws_per_call(segs[0].values.shape[-1]) if segs else 0
    if len(segs) > 1 and draws_held(model, segs, future, n_samples, on_history) > budget:
        half = len(segs) // 2
        args = (importance, refine, prior)
        yield from iter_predictives(
            model, segs[:half], future[:half], data_state, n_samples, seeds[:half], *args
        )
        yield from iter_predictives(
            model, segs[half:], future[half:], data_state, n_samples, seeds[half:], *args
        )
        return
    pairs = model.pairs() if isinstance(model, Ensemble) else [(model, data_state)]
    D = segs[0].values.shape[-1]
    kinds = [kinds_of(s.get("normalisation"), D) for _, s in pairs]
    if any(k != kinds[0] for k in kinds):
        raise ModelInputError(f"the checkpoints model their channels on other scales: {kinds}.")
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]  # drawn from in turn
    parts = [
        _member_predictive(m, segs, future, s, n_samples, generators, importance, refine, prior)
        for m, s in pairs
    ]
    draws, paths, noise = (np.concatenate([p[i] for p in parts]) for i in (0, 3, 4))
    mean = np.mean([p[1] for p in parts], axis=0)  # (B, n, D)
    second = np.mean([p[2] ** 2 + p[1] ** 2 for p in parts], axis=0)
    std = np.sqrt(np.maximum(second - mean**2, 0.0)) if len(parts) > 1 else parts[0][2]
    for b, m in enumerate(len(f) for f in future):
        yield Predictive(draws[:, b, :m], mean[b, :m], std[b, :m], paths[:, b, :m], noise, kinds[0])


def predictives(
    model: LatentODE | Ensemble,
    segs: list[Segment],
    future: list[np.ndarray],
    data_state: dict[str, Any],
    n_samples: int,
    seeds: Sequence[int],
    importance: bool = False,
    refine: int = 0,
    prior: AggregatePosterior | None = None,
) -> list[Predictive]:
    """`iter_predictives` as a list."""
    return list(
        iter_predictives(
            model, segs, future, data_state, n_samples, seeds, importance, refine, prior
        )
    )


def predictive_summary(
    model: LatentODE | Ensemble,
    segs: list[Segment],
    future: list[np.ndarray],
    data_state: dict[str, Any],
    n_samples: int,
    seeds: Sequence[int],
    importance: bool = False,
    refine: int = 0,
    prior: AggregatePosterior | None = None,
    levels: Sequence[float] | None = None,
) -> list[np.ndarray]:
    """Per segment ``[n, D, 5]`` (mean, std, q05, q50, q95) at its times ``future`` (user
    units), ``[n, D, 2 + Q]`` with the bands of ``levels`` too: `Predictive.summary` of each
    of `predictives`."""
    preds = predictives(
        model, segs, future, data_state, n_samples, seeds, importance, refine, prior
    )
    return [p.summary(levels=levels) for p in preds]


def _member_predictive(
    model: LatentODE,
    segs: list[Segment],
    future: list[np.ndarray],
    data_state: dict[str, Any],
    n_samples: int,
    generators: Sequence[torch.Generator],
    importance: bool,
    refine: int,
    prior: AggregatePosterior | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One model's noisy predictive draws ``[K, B, n, D]`` and its mean and std ``[B, n, D]``
    in user units, its paths ``[K, B, n, D]`` and noise std ``[K, D]`` on the channels'
    transformed scales, on the padded grid of ``future``."""
    norm, scale = data_state.get("normalisation"), float(data_state.get("time_scale", 1.0))
    observed, origins = conditioned_batch(model, segs, data_state)
    dtype, device = observed.values.dtype, observed.values.device
    width = max(len(f) for f in future)
    grid = np.stack(
        [
            np.pad(
                (f - o) / scale,
                (0, width - len(f)),
                mode="linear_ramp",
                end_values=((f[-1] - o) / scale + width),
            )
            for f, o in zip(future, origins, strict=True)
        ]
    )  # (B, n) strictly increasing rows
    query = torch.as_tensor(grid, dtype=dtype, device=device)
    pred = model.predict(
        observed, query, n_samples, importance, prior=prior, refine=refine, generators=generators
    )
    paths = pred.samples  # (K, B, n, D) decoded means of the posterior paths
    noise_std = model.decoder.log_std.to(paths).exp()  # (D,) the same for every path
    K, D = paths.shape[0], paths.shape[-1]
    eps = torch.zeros(paths.shape, dtype=dtype)  # (K, B, n, D); each series' own times only
    for b, (g, f) in enumerate(zip(generators, future, strict=True)):
        eps[:, b, : len(f)] = torch.randn(K, len(f), D, generator=g, dtype=dtype)
    eps = eps.to(device)
    draws = (paths + noise_std * eps).double().cpu().numpy()  # (K, B, n, D)
    mean, std = pred.mean.double().cpu().numpy(), pred.std.double().cpu().numpy()  # (B, n, D)
    paths = paths.double().cpu().numpy()
    noise = np.broadcast_to(noise_std.double().cpu().numpy(), (len(paths), paths.shape[-1]))
    if norm is not None:
        draws = denormalise(draws, norm)
        mean, std = denormalise(mean, norm, transformed=True), denormalise_std(std, norm)
        paths, noise = denormalise(paths, norm, transformed=True), denormalise_std(noise, norm)
    return draws, mean, std, paths, noise
