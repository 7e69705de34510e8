"""Naive baselines and the period estimate of ``latentode test``, against known answers."""

from __future__ import annotations

import numpy as np

from latentode.data.prep import Segment
from latentode.evaluate import Case, _baselines, estimate_period


def test_estimate_period_finds_the_season_of_an_irregular_trended_series() -> None:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 20, 600))
    y = 3 * t + np.sin(2 * np.pi * t / 1.7) + 0.1 * rng.normal(size=t.size)
    assert abs(estimate_period(t, y) - 1.7) < 0.05


def test_baselines_match_their_definitions() -> None:
    t = np.arange(0.0, 10.0, 0.5)
    x = np.stack([np.sin(2 * np.pi * t / 2.0), t], axis=1)  # (n, 2)
    t_target = np.array([10.25, 11.0])
    case = Case(0, Segment(0, 0.0, t, x), t_target, np.zeros((2, 2)))
    ext = _baselines(case, "extrapolation", period=2.0)
    assert np.allclose(ext["last value"], x[-1])
    seasonal = ext["seasonal naive (period 2)"]  # one period back: 8.25 and 9.0
    assert np.allclose(seasonal[:, 1], [8.25, 9.0])
    hist = Segment(0, 0.0, t[::2], x[::2])
    inter = _baselines(Case(0, hist, np.array([0.5, 2.5]), np.zeros((2, 2))), "interpolation", None)
    assert np.allclose(inter["linear interpolation"][:, 1], [0.5, 2.5])
    assert np.allclose(inter["last value"][:, 1], [0.0, 2.0])
