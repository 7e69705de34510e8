"""Log-scale channels: the transforms, their domain checks, and the log-normal predictive."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from latentode.data.csv import CSVDataError, read_series_csv
from latentode.data.errors import DataError
from latentode.data.prep import denormalise, fit_normalisation, normalise
from latentode.data.transforms import forward, inverse, transform_kinds, transform_of
from latentode.predictive import Predictive, band_scores, scale_bands


def test_kinds_name_every_channel_and_refuse_unknown_ones() -> None:
    assert transform_kinds(["a", "b", "c"], {"c": "log1p", "a": "log"}) == ["log", "none", "log1p"]
    assert transform_kinds(["a"], None) == ["none"]
    with pytest.raises(DataError, match=r"channel\(s\) \['x'\], but the channels are \['a'\]"):
        transform_kinds(["a"], {"x": "log"})
    with pytest.raises(DataError, match=r"unknown transform \{'a': 'sqrt'\}"):
        transform_kinds(["a"], {"a": "sqrt"})
    state = {"channels": ["a", "b"], "normalisation": {"transform": ["none", "log"]}}
    assert transform_of(state) == {"b": "log"}
    assert transform_of({"channels": ["a"], "normalisation": None}) == {}


def test_forward_and_inverse_round_trip_in_numpy_and_torch() -> None:
    x = np.array([[0.5, 0.0, -3.0], [20.0, 7.0, np.nan]])  # (2, 3)
    kinds = ["log", "log1p", "none"]
    z = forward(x, kinds)
    np.testing.assert_allclose(z[:, 0], np.log([0.5, 20.0]))
    np.testing.assert_allclose(z[:, 1], np.log1p([0.0, 7.0]))
    np.testing.assert_array_equal(z[:, 2], x[:, 2])  # NaN stays NaN
    np.testing.assert_allclose(inverse(z, kinds), x, rtol=1e-15)
    zt = forward(torch.from_numpy(x), kinds)
    np.testing.assert_allclose(zt.numpy(), z)
    np.testing.assert_allclose(inverse(zt, kinds).numpy(), x, rtol=1e-15)
    same = np.ones((3, 2))
    assert forward(same, ["none", "none"]) is same  # no transform: the values themselves


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("series_id,time,conc,count\n" + "\n".join(rows) + "\n")
    return path


def test_values_a_transform_cannot_take_are_refused_by_line(tmp_path: Path) -> None:
    rows = ["s,1,0.5,0", "s,2,1.5,3", "s,3,0,2", "s,4,,1", "s,5,-1,-2"]
    path = _csv(tmp_path / "pos.csv", rows)
    with pytest.raises(CSVDataError) as err:
        read_series_csv(path, time_unit="", transform={"conc": "log"})
    msg = str(err.value)
    assert str(path) in msg and "(lines 4, 6)" in msg and "'conc'" in msg
    assert "greater than 0" in msg and "use log1p" in msg  # the missing value on line 5 passes
    with pytest.raises(CSVDataError, match=r"'count'.*0 or greater.*\(line 6\)"):
        read_series_csv(path, time_unit="", transform={"count": "log1p"})
    with pytest.raises(CSVDataError, match=r"pos.csv: transform names channel\(s\) \['cnt'\]"):
        read_series_csv(path, time_unit="", transform={"cnt": "log1p"})
    ok = _csv(tmp_path / "ok.csv", rows[:2])
    table = read_series_csv(ok, time_unit="", transform={"conc": "log", "count": "log1p"})
    assert table.n_series == 1


def test_normalisation_is_fitted_on_the_log_values_and_inverts(tmp_path: Path) -> None:
    path = _csv(tmp_path / "ok.csv", ["a,1,0.5,0", "a,2,2,4", "b,1,8,1", "b,3,32,9"])
    table = read_series_csv(path, time_unit="")
    norm = fit_normalisation(table, transform={"conc": "log"})
    logs = np.log([0.5, 2, 8, 32])
    assert norm["transform"] == ["log", "none"]
    assert norm["mean"][0] == pytest.approx(logs.mean()) and norm["std"][0] == pytest.approx(
        logs.std()
    )
    assert norm["mean"][1] == pytest.approx(3.5)
    z = normalise(table.values, norm)
    np.testing.assert_allclose(z[:, 0], (logs - logs.mean()) / logs.std())
    np.testing.assert_allclose(denormalise(z, norm), table.values, rtol=1e-14)
    np.testing.assert_allclose(denormalise(z, norm, transformed=True)[:, 0], logs, rtol=1e-14)
    bare = fit_normalisation(table, transform={"conc": "log"}, centre=False)
    assert bare["mean"] == [0.0, 0.0] and bare["std"] == [1.0, 1.0]
    np.testing.assert_allclose(normalise(table.values, bare)[:, 0], logs)
    old = {k: v for k, v in norm.items() if k != "transform"}  # a checkpoint before transforms
    np.testing.assert_allclose(denormalise(normalise(table.values, old), old), table.values)


def _predictive(kinds: list[str], seed: int = 0, K: int = 4000, n: int = 3) -> Predictive:
    """Draws of a mixture of two paths per time on each channel's scale, noise std 0.6."""
    rng = np.random.default_rng(seed)
    D = len(kinds)
    mu = np.where(rng.random((K, n, D)) < 0.5, -1.0, 0.2) + 0.1 * np.arange(n)[:, None]
    noise = np.full((K, D), 0.6)
    z = mu + noise[:, None, :] * rng.standard_normal((K, n, D))
    draws = inverse(z, kinds)
    mean, std = mu.mean(axis=0), np.sqrt(mu.var(axis=0) + 0.36)  # right for kind "none"
    return Predictive(draws, mean, std, mu, noise, kinds)


def test_a_log_channel_has_log_normal_moments_and_positive_quantiles() -> None:
    p = _predictive(["log", "none"], K=1)
    stats = p.summary()  # (n, D, 5); one path: exactly log-normal
    mu, s = p.paths[0, :, 0], 0.6
    np.testing.assert_allclose(stats[:, 0, 0], np.exp(mu + s**2 / 2), rtol=1e-12)
    sd = np.sqrt(np.expm1(s**2) * np.exp(2 * mu + s**2))
    np.testing.assert_allclose(stats[:, 0, 1], sd, rtol=1e-12)
    big = _predictive(["log", "none"], K=200_000)
    stats = big.summary()
    draws = big.draws[..., 0]  # (K, n) the mixture's mean and std agree with its draws
    np.testing.assert_allclose(stats[:, 0, 0], draws.mean(axis=0), rtol=0.01)
    np.testing.assert_allclose(stats[:, 0, 1], draws.std(axis=0), rtol=0.02)
    np.testing.assert_allclose(
        stats[:, 0, 2:], np.quantile(draws, [0.05, 0.5, 0.95], axis=0).T, rtol=1e-3
    )
    assert (stats[:, 0, 2] > 0).all()
    # The band is longer above the median than below it.
    assert ((stats[:, 0, 4] - stats[:, 0, 3]) > 1.5 * (stats[:, 0, 3] - stats[:, 0, 2])).all()


def test_a_log1p_channel_is_censored_at_zero() -> None:
    p = _predictive(["log1p"], K=200_000)
    y = np.maximum(p.draws[..., 0], 0.0)  # (K, n) the count can't go below 0
    assert (p.draws < 0).mean() > 0.2  # a fair share of the log-normal lies below 0
    stats = p.summary()
    np.testing.assert_allclose(stats[:, 0, 0], y.mean(axis=0), rtol=0.01)
    np.testing.assert_allclose(stats[:, 0, 1], y.std(axis=0), rtol=0.01)
    np.testing.assert_allclose(
        stats[:, 0, 2:], np.quantile(y, [0.05, 0.5, 0.95], axis=0).T, atol=2e-3
    )
    assert (stats[:, 0, 2] == 0).all()  # q05 is 0 where more than 5% sits at 0


@pytest.mark.parametrize("kind", ["log", "log1p"])
def test_a_scaled_band_is_the_draws_scaled_in_log_space(kind: str) -> None:
    """`summary(lam)`'s quantiles are those of the draws scaled by lam about the log-space
    median, its mean and std the model's own; on a channel as it is, `scale_bands`."""
    p = _predictive([kind, "none"], K=5000)
    lam = np.array([4.0, 0.8])  # (D,)
    z = forward(p.draws, p.kinds)  # (K, n, D)
    m = np.median(z, axis=0)  # (n, D)
    wide = Predictive(inverse(m + lam * (z - m), p.kinds), p.mean, p.std, p.paths, p.noise, p.kinds)
    got, own = p.summary(lam), p.summary()
    np.testing.assert_allclose(got[:, 0, 2:], wide.summary()[:, 0, 2:], rtol=1e-10)
    np.testing.assert_array_equal(got[:, 0, :2], own[:, 0, :2])
    np.testing.assert_allclose(got[:, 1], scale_bands(own, lam)[:, 1], rtol=1e-12)
    assert (got[:, 0, 2] >= 0).all()  # a 4x wider band stays positive ...
    if kind == "log":  # ... scaled on the raw values, it would not
        assert (scale_bands(own, lam)[:, 0, 2] < 0).all()
    per_time = np.array([[0.5, 1.0], [1.0, 1.0], [4.0, 1.0]])  # (n, D) factors by lead
    got = p.summary(per_time)
    np.testing.assert_allclose(got[2, 0], p.summary(lam)[2, 0], rtol=1e-12)
    np.testing.assert_allclose(got[1, 0], own[1, 0], rtol=1e-12)


def test_log_space_scores_say_exactly_which_values_a_scaled_band_holds() -> None:
    """The calibration's rule: a value is inside the band scaled by lam iff its score <= lam;
    on a log1p channel also a count of 0, inside whenever the band's lower end is 0."""
    rng = np.random.default_rng(1)
    for kinds in (["log", "none"], ["log1p", "log"]):
        p = _predictive(kinds, K=500, n=40)
        z = rng.normal(0.0, 1.5, (40, 2))
        z[:, 0] = np.maximum(z[:, 0], 0.0) if kinds[0] == "log1p" else z[:, 0]
        target = inverse(z, kinds)  # (n, D) a third of the counts are 0
        scores = p.scores(target)
        for lam in (0.3, 0.9, 1.7, 3.0):
            band = p.summary(np.full(2, lam))
            inside = (band[..., 2] <= target) & (target <= band[..., 4])
            np.testing.assert_array_equal(inside, scores <= lam)
    assert (target[:, 0] == 0).sum() > 10
    r = band_scores(np.array([0.0, 0.0, -1.0, 0.0, 2.0]), np.array(1.0))
    assert float(r) == 0.5 and math.isfinite(float(r))
