"""The predictive's quantiles: the exact quantiles of the mixture of the paths' Gaussians
(`mixture_quantiles`), against closed forms and scipy's root finder, and their Monte-Carlo
error against the noisy draws' sample quantiles they replaced."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import norm
from test_ensemble import _members, _series

from latentode.data.prep import Segment
from latentode.ensemble import Ensemble
from latentode.nn import LatentODE, LatentODEConfig
from latentode.predictive import (
    Predictive,
    _member_predictive,
    draw_seeds,
    mixture_quantiles,
    predictives,
    quantile_probs,
)

PROBS = (0.005, 0.05, 0.25, 0.5, 0.75, 0.95, 0.995)


def _root(mu: np.ndarray, s: np.ndarray, p: float) -> float:
    """The ``p`` quantile of the mixture of ``N(mu_k, s_k^2)`` by scipy's Brent solver."""

    def excess(x: float) -> float:
        return float(norm.cdf((x - mu) / s).mean() - p)

    span = 40 * float(np.max(s))
    return brentq(excess, mu.min() - span, mu.max() + span, xtol=1e-15, rtol=1e-15)


def test_one_gaussian_and_a_symmetric_pair_have_closed_form_quantiles() -> None:
    """One component: ``mu + s Phi^-1(p)``. Two mirrored ones, ``N(-a, s^2)`` and ``N(a,
    s^2)``: the median is 0 and ``q(1 - p) = -q(p)``."""
    mu, s = np.array([[1.3, -2.0]]), np.array([[0.7, 3.0]])  # (K=1, 2 rows)
    got = mixture_quantiles(mu, s, PROBS)  # (Q, 2)
    np.testing.assert_allclose(got, mu + s * norm.ppf(PROBS)[:, None], rtol=0, atol=1e-12)
    for a, sd in ((0.5, 1.0), (3.0, 0.2), (1.0, 1e-3)):
        q = mixture_quantiles(np.array([-a, a]), sd, PROBS)
        assert abs(q[3]) < 1e-12 * (a + sd)
        np.testing.assert_allclose(q, -q[::-1], rtol=0, atol=1e-12 * (a + sd))


def test_a_two_component_mixture_matches_scipys_root_finder() -> None:
    """Unequal means and stds, both heavier in turn: within 1e-10 of Brent's root at every
    level, and the mixture's CDF there within 1e-13 of the level."""
    cases = [
        (np.array([-1.0, 2.0]), np.array([0.5, 1.5])),
        (np.array([0.0, 0.3]), np.array([2.0, 0.1])),
        (np.array([-4.0, 4.0]), np.array([0.8, 0.8])),  # bimodal: the median in the gap
    ]
    for mu, s in cases:
        got = mixture_quantiles(mu, s, PROBS)
        for p, q in zip(PROBS, got, strict=True):
            assert abs(q - _root(mu, s, p)) < 1e-10, (mu, s, p)
            assert abs(norm.cdf((q - mu) / s).mean() - p) < 1e-13


def test_quantiles_rise_with_the_level_for_every_row() -> None:
    """Rows of 201 paths, from near-Gaussian to lumpy (noise far below the paths' spread) and
    bimodal, at 99 levels: increasing in the level, each where the mixture's CDF is within
    1e-13 of its level, and within 1e-9 of the mixture's std of Brent's root; a NaN path
    gives NaN (and stops its row at once)."""
    rng = np.random.default_rng(0)
    K, R = 201, 60  # 201: no level is a multiple of 1 / K, where a lumpy CDF can be flat
    mu = rng.normal(0.0, 1.0, (K, R)) * rng.choice([0.01, 1.0, 30.0], R)
    mu[:, :10] += np.where(rng.random((K, 10)) < 0.3, -5.0, 5.0)  # bimodal rows
    s = rng.choice([0.01, 0.3, 3.0], (1, R))
    probs = np.round(np.linspace(0.01, 0.99, 99), 12)
    q = mixture_quantiles(mu, s, probs)  # (99, R)
    assert (np.diff(q, axis=0) > 0).all()
    cdf = norm.cdf((q[:, None, :] - mu) / s).mean(axis=1)  # (99, R)
    np.testing.assert_allclose(cdf, np.broadcast_to(probs[:, None], cdf.shape), rtol=0, atol=1e-13)
    for r in (0, 11, 42):
        sd = np.sqrt(mu[:, r].var() + s[0, r] ** 2)
        for i in (0, 49, 98):
            assert abs(q[i, r] - _root(mu[:, r], s[0, r], probs[i])) < 1e-9 * sd
    mu[3, 5] = np.nan
    assert np.isnan(mixture_quantiles(mu, s, probs)[:, 5]).all()


def test_pooled_fits_give_the_concatenated_mixtures_quantiles() -> None:
    """An ensemble's quantiles are those of the equal-weight mixture of every member's paths,
    each with its member's noise in the user's units: ``(F_1(q) + F_2(q)) / 2 = p`` with
    each member's own mixture CDF, and the quantiles of the concatenated paths."""
    models, states = _members()
    segs, future = _series()
    seeds = [3, 4]
    ignored = {"normalisation": None, "time_scale": 1.0}
    with torch.no_grad():
        pooled = predictives(Ensemble(models, states), segs, future, ignored, 150, seeds)
        generators = [torch.Generator().manual_seed(s) for s in seeds]  # drawn in turn
        alone = [
            _member_predictive(m, segs, future, st, 150, generators, False, 0)
            for m, st in zip(models, states, strict=True)
        ]  # (draws, mean, std, paths, noise) each
    assert not np.allclose(alone[0][4], alone[1][4])  # the members' noise differ
    for b, p in enumerate(pooled):
        stats = p.summary()  # (n, D, 5)
        n = len(future[b])
        paths = np.concatenate([a[3][:, b, :n] for a in alone])  # (2K, n, D)
        noise = np.concatenate([a[4] for a in alone])  # (2K, D)
        want = mixture_quantiles(paths, noise[:, None, :], (0.05, 0.5, 0.95))  # (3, n, D)
        np.testing.assert_allclose(stats[..., 2:], want.transpose(1, 2, 0), rtol=1e-12)
        for j, level in enumerate((0.05, 0.5, 0.95)):
            q = stats[..., 2 + j]  # (n, D)
            cdf = [norm.cdf((q - a[3][:, b, :n]) / a[4][:, None, :]).mean(0) for a in alone]
            np.testing.assert_allclose((cdf[0] + cdf[1]) / 2, level, rtol=0, atol=1e-12)
            alone_q = [
                mixture_quantiles(a[3][:, b, :n], a[4][:, None, :], [level])[0] for a in alone
            ]
            assert min(np.abs(q - x).max() for x in alone_q) > 1e-3  # neither member's own


@pytest.mark.parametrize("kind", ["log", "log1p"])
def test_a_log_channels_quantiles_are_exp_of_the_mixtures_quantiles_of_log_x(kind: str) -> None:
    """On a log channel the paths' mixture lives on ``z = log x`` (``log1p``: ``log(1 + x)``);
    the quantiles of ``x`` are the images of its quantiles (``log1p``: censored at 0), also
    scaled by a band factor about the median there, and solve ``mean_k Phi((log x - mu_k) /
    s) = p`` for ``x`` itself."""
    rng = np.random.default_rng(1)
    K, n = 300, 4
    mu = np.where(rng.random((K, n, 1)) < 0.4, -0.5, 0.8) + rng.normal(0, 0.3, (K, n, 1))
    noise = np.full((K, 1), 0.6)
    p = Predictive(np.exp(mu), mu.mean(0), mu.std(0), mu, noise, [kind])
    levels = (0.5, 0.8)
    probs = quantile_probs(levels)  # the 50, 80 and 90% bands' ends and the median
    z = mixture_quantiles(mu, noise[:, None, :], probs)[..., 0]  # (7, n)
    image = np.exp(z) if kind == "log" else np.maximum(np.expm1(z), 0.0)
    np.testing.assert_allclose(p.summary(levels=levels)[:, 0, 2:], image.T, rtol=1e-14)
    m = z[probs.index(0.5)]  # (n,) the median of z
    lam = 1.7
    wide = m + lam * (z - m)
    image = np.exp(wide) if kind == "log" else np.maximum(np.expm1(wide), 0.0)
    np.testing.assert_allclose(p.summary(np.array([lam]), levels)[:, 0, 2:], image.T, rtol=1e-12)
    if kind == "log":  # against Brent's root in x
        for t in range(n):
            x = p.summary()[t, 0, 4]  # q95
            cdf = norm.cdf((np.log(x) - mu[:, t, 0]) / 0.6).mean()
            assert abs(cdf - 0.95) < 1e-13
            want = np.exp(_root(mu[:, t, 0], np.full(K, 0.6), 0.95))
            assert abs(x - want) < 1e-10 * want


def _small_model_runs() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """An untrained one-channel latent ODE whose noise dominates its paths' spread (path std
    about 0.22 of the noise std, as on the shipped fertility fit, whose band factors are
    about 0.2), 12 series, 5 forecast times, 200 paths, seeds 0 and 1: per seed the summaries
    ``[60, 5]`` and the noisy draws' sample quantiles ``[60, 3]`` (the quantiles before)."""
    torch.manual_seed(0)
    cfg = LatentODEConfig(input_dim=1, latent_dim=3, learn_std=True, obs_std=1.0)
    model = LatentODE(cfg).double().eval()
    rng = np.random.default_rng(0)
    segs, future = [], []
    for i in range(12):
        t = np.sort(rng.uniform(0.0, 10.0, 15))
        t[0] = 0.0
        segs.append(Segment(i, 0.0, t, np.sin(t + i)[:, None]))
        future.append(t[-1] + np.arange(1.0, 6.0))
    state = {"normalisation": {"channels": ["x"], "mean": [0.0], "std": [1.0]}, "time_scale": 1.0}
    runs = {}
    for seed in (0, 1):
        seeds = draw_seeds(seed, [str(i) for i in range(12)])
        preds = predictives(model, segs, future, state, 200, seeds)
        stats = np.concatenate([p.summary()[:, 0] for p in preds])  # (60, 5)
        sample = np.concatenate(
            [np.quantile(p.draws[..., 0], (0.05, 0.5, 0.95), axis=0).T for p in preds]
        )  # (60, 3)
        runs[seed] = stats, sample
    return runs


def test_two_seeds_quantiles_differ_far_less_than_the_draws_did() -> None:
    """Between two seeds q05 and q95 move by a median 0.017 and 0.020 predictive std (the
    paths' own sampling error); the noisy draws' sample quantiles, what `summary` gave
    before, moved by 0.086 and 0.117."""
    (a, a_old), (b, b_old) = _small_model_runs().values()
    std = a[:, 1]  # (60,)
    for j in (0, 2):  # q05, q95
        now = np.median(np.abs(a[:, 2 + j] - b[:, 2 + j]) / std)
        before = np.median(np.abs(a_old[:, j] - b_old[:, j]) / std)
        assert now < 0.03 and before > 0.07 and now < before / 3, (j, now, before)


def test_the_calibrated_mean_no_longer_amplifies_the_medians_noise() -> None:
    """The calibrated mean ``q50 + lam (mean - q50)`` moves between seeds about as much as
    the model's mean (ratio 1.00 at lam 0.3, 0.99 at 2); with the draws' median it moved 3.6
    and 4.0 times as much."""
    (a, a_old), (b, b_old) = _small_model_runs().values()
    moved = np.median(np.abs(a[:, 0] - b[:, 0]))  # the model's mean
    for lam in (0.3, 2.0):
        now = [s[:, 3] + lam * (s[:, 0] - s[:, 3]) for s in (a, b)]
        old = [q[:, 1] + lam * (s[:, 0] - q[:, 1]) for s, q in ((a, a_old), (b, b_old))]
        assert np.median(np.abs(now[0] - now[1])) < 1.3 * moved
        assert np.median(np.abs(old[0] - old[1])) > 3.0 * moved
