"""`Ensemble`: the pooled predictive of several fitted latent ODEs, against its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentode.data.errors import DataError
from latentode.data.prep import Segment
from latentode.ensemble import Ensemble, shared_state
from latentode.nn import LatentODE, LatentODEConfig
from latentode.nn.base import ModelInputError
from latentode.predictive import _member_predictive, predictive_summary


def _members() -> tuple[list[LatentODE], list[dict]]:
    """Two differently initialised models; each reads the data through its own normalisation
    and time scale (as fits on different training subsets would), the rest shared."""
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cfg = LatentODEConfig(input_dim=2, latent_dim=3, learn_std=True, obs_std=0.3)
        models.append(LatentODE(cfg).double().eval())
    common = {"channels": ["a", "b"], "val_series": ["s1"], "test_series": ["s2"]}
    states = [
        dict(common, normalisation={"mean": [10.0, -1.0], "std": [2.0, 0.5]}, time_scale=4.0),
        dict(common, normalisation={"mean": [9.0, -0.5], "std": [1.5, 0.7]}, time_scale=6.0),
    ]
    return models, states


def _series() -> tuple[list[Segment], list[np.ndarray]]:
    t = np.arange(0.0, 12.0)
    segs = [
        Segment(0, 0.0, t, np.stack([10 + 2 * np.sin(t), -1 + 0.5 * np.cos(t)], 1)),
        Segment(1, 2.0, t[2:9], np.stack([10 + t[2:9] / 5, -1 - t[2:9] / 5], 1)),
    ]
    future = [g.times[-1] + np.array([0.5, 1.0, 3.0]) for g in segs]
    return segs, future


def test_an_ensemble_of_one_is_the_model() -> None:
    models, states = _members()
    segs, future = _series()
    out = []
    for m in (models[0], Ensemble(models[:1], states[:1])):
        with torch.no_grad():
            out.append(predictive_summary(m, segs, future, states[0], 16, [3, 4]))
    for a, b in zip(*out, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_ensemble_pools_its_members_predictives() -> None:
    """Mean: the members' average; std: the mixture's, ``sqrt(mean_i(s_i^2 + m_i^2) - m^2)``
    (each member through its own normalisation, drawn in turn from the same generators as
    the ensemble draws them); quantiles: those of the equal-weight mixture, checked against
    the empirical mixture CDF of independent draws of each member."""
    models, states = _members()
    segs, future = _series()
    ens = Ensemble(models, states)
    ignored = {"normalisation": None, "time_scale": 1.0}  # the members' own states are used
    seeds = [3, 4]
    with torch.no_grad():
        pooled = predictive_summary(ens, segs, future, ignored, 2000, seeds)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        alone = [  # (draws, mean, std, paths, noise) of each member
            _member_predictive(m, segs, future, s, 2000, generators, False, 0)
            for m, s in zip(models, states, strict=True)
        ]
    for b, stats in enumerate(pooled):
        m = np.stack([a[1][b] for a in alone])  # (2, n, D)
        s = np.stack([a[2][b] for a in alone])
        np.testing.assert_allclose(stats[..., 0], m.mean(0), rtol=1e-12)
        want_std = np.sqrt((s**2 + m**2).mean(0) - m.mean(0) ** 2)
        np.testing.assert_allclose(stats[..., 1], want_std, rtol=1e-10)
        assert (stats[..., 1] >= s.min(0) - 1e-12).all()  # disagreement only adds spread
        # the members disagree here, so the mixture is not just either member
        assert np.abs(m[0] - m[1]).max() > 0.1 * stats[..., 1].max()
    # Quantiles: the mixture CDF at the pooled 5/50/95% points, from fresh draws of each.
    generators = [torch.Generator().manual_seed(s) for s in (11, 12)]
    with torch.no_grad():
        draws = [
            _member_predictive(mod, segs, future, st, 4000, generators, False, 0)[0]
            for mod, st in zip(models, states, strict=True)
        ]  # each (K, B, n, D)
    for b, stats in enumerate(pooled):
        n = len(future[b])
        for j, level in ((2, 0.05), (3, 0.5), (4, 0.95)):
            q = stats[..., j]  # (n, D)
            cdf = np.mean([(d[:, b, :n] <= q).mean(0) for d in draws], axis=0)
            np.testing.assert_allclose(cdf, level, atol=0.02)


def test_members_with_different_data_settings_are_refused() -> None:
    models, states = _members()
    other = dict(states[1], val_series=["s3"])
    with pytest.raises(DataError, match=r"b\.ckpt and a\.ckpt differ in their validation"):
        Ensemble(models, [states[0], other], ["a.ckpt", "b.ckpt"])
    with pytest.raises(DataError, match="channels"):
        shared_state([states[0], dict(states[1], channels=["b", "a"])], ["a", "b"])
    assert shared_state(states, ["a", "b"]) is states[0]
    norm = states[1]["normalisation"]
    norm = dict(norm, channels=["a", "b"])
    logged = dict(states[1], normalisation=dict(norm, transform=["log", "none"]))
    with pytest.raises(DataError, match=r"b and a differ in their channel transforms"):
        shared_state([states[0], logged], ["a", "b"])
    none = dict(states[1], normalisation=dict(norm, transform=["none"] * 2))
    assert shared_state([states[0], none], ["a", "b"]) is states[0]  # no transform = none
    ens = Ensemble(models, states, ["a", "b"])
    ens.states[1] = logged  # past shared_state: the forecast refuses to pool them too
    with pytest.raises(ModelInputError, match="model their channels on other scales"):
        predictive_summary(ens, *_series(), {}, 2, [0, 1])
