"""One segment's posterior predictive: the mixture of its paths' Gaussians, summarised.

A `Predictive` holds ``K`` posterior paths of one segment at its future times and the
decoder's observation noise (`latentode.predictive` draws them from a model). Given its
path, a value is Gaussian: path ``k`` has mean ``mu_k`` (its decoded mean) and std ``s_k``
(the noise), so the predictive is the equal-weight mixture of ``K`` Gaussians (of every
member's paths for pooled fits). `Predictive.summary` gives (mean, std, q05, q50, q95) per
time and channel (with the ends of other central bands before and after q50 when asked:
`quantile_probs`), optionally with each band scaled about its median by calibration factors
(`latentode.calibration`; the band arithmetic is `latentode.bands`).

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .bands import (
    LEVEL,
    _level,
    _nested,
    _per_quantile,
    band_levels,
    band_scores,
    center_factor,
    quantile_probs,
    scale_bands,
)
from .data.transforms import base_of, bounds_of, forward, inverse
from .mixture import mixture_quantiles, ndtr

__all__ = ["HERMITE_NODES", "Predictive"]

HERMITE_NODES = 64
"""Gauss-Hermite nodes per path for a ``logit`` channel's mean and std
(`_logit_normal_moments`): within 1e-12 of the range for a path's noise std up to 1 on the
logit scale, 1e-6 up to 3 and 1e-4 up to 4 (`tests/test_transforms.py`; a std of 4 puts the
5-95% band of one path's noise across a factor of 500 in odds)."""


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
