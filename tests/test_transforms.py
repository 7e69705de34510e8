"""Log- and logit-scale channels: the transforms, their domain checks, and the log-normal and
logit-normal predictives."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from latentode.data.csv import CSVDataError, read_series_csv
from latentode.data.errors import DataError
from latentode.data.prep import denormalise, fit_normalisation, normalise
from latentode.data.transforms import (
    bounds_of,
    forward,
    inverse,
    outside_domain,
    transform_kinds,
    transform_of,
)
from latentode.mixture import ndtr
from latentode.predictive import Predictive, _logit_normal_moments, band_scores, scale_bands


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
    # The quantiles are the mixture's exact ones; the draws' carry Monte-Carlo error.
    np.testing.assert_allclose(
        stats[:, 0, 2:], np.quantile(draws, [0.05, 0.5, 0.95], axis=0).T, rtol=0.01
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
        stats[:, 0, 2:], np.quantile(y, [0.05, 0.5, 0.95], axis=0).T, rtol=0.01, atol=2e-3
    )  # the mixture's exact quantiles against the draws' (Monte-Carlo error)
    assert (stats[:, 0, 2] == 0).all()  # q05 is 0 where more than 5% sits at 0


@pytest.mark.parametrize("kind", ["log", "log1p", "logit(0, 100)"])
def test_a_scaled_band_is_the_draws_scaled_in_log_space(kind: str) -> None:
    """`summary(lam)` is the summary of the predictive scaled by lam about the log-space
    median (every path's mean and noise std): its quantiles and its mean and std, one
    distribution; on a channel as it is, `scale_bands`."""
    p = _predictive([kind, "none"], K=5000)
    lam = np.array([4.0, 0.8])  # (D,)
    m = p.quantiles([0.5])[0]  # (n, D) the median on each channel's scale
    wide = Predictive(p.draws, p.mean, p.std, m + lam * (p.paths - m), lam * p.noise, p.kinds)
    got, own = p.summary(lam), p.summary()
    np.testing.assert_allclose(got[:, 0], wide.summary()[:, 0], rtol=1e-9)
    assert (got[:, 0, 1] > 2 * own[:, 0, 1]).all()  # 4x as wide: not the model's std
    np.testing.assert_allclose(got[:, 1], scale_bands(own, lam)[:, 1], rtol=1e-12)
    assert (got[:, 0, 2] >= 0).all()  # a 4x wider band stays positive ...
    if kind == "log":  # ... scaled on the raw values, it would not
        assert (scale_bands(own, lam)[:, 0, 2] < 0).all()
    if kind.startswith("logit"):  # ... and below 100, where the raw values' would not
        assert (got[:, 0, 4] < 100).all() and (scale_bands(own, lam)[:, 0, 4] > 100).any()
    per_time = np.array([[0.5, 1.0], [1.0, 1.0], [4.0, 1.0]])  # (n, D) factors by lead
    got = p.summary(per_time)
    np.testing.assert_allclose(got[2, 0], p.summary(lam)[2, 0], rtol=1e-12)
    np.testing.assert_allclose(got[1, 0], own[1, 0], rtol=1e-12)


def _two_paths(kind: str, a: np.ndarray, s: float) -> Predictive:
    """Paths ``+-a`` ``[n]`` with noise std ``s`` on one channel of ``kind``: the mixture of
    ``z`` is symmetric, so its median is 0."""
    mu = np.stack([a, -a])[..., None]  # (2, n, 1)
    nan = np.full(mu.shape[1:], np.nan)  # mean, std and draws: the summaries do not use them
    return Predictive(np.stack([nan, nan]), nan, nan, mu, np.full((2, 1), s), [kind])


def _scaled_moments(g, a: float, s: float) -> tuple[float, float]:
    """Mean and std of ``g(z)``, ``z`` the mixture of ``N(+-a, s^2)``, by `scipy.integrate.quad`."""
    from scipy.integrate import quad
    from scipy.stats import norm

    def moment(k: int) -> float:
        def f(z: float, m: float) -> float:
            return g(z) ** k * norm.pdf(z, m, s)

        # each path weighs 1/2
        return sum(0.5 * quad(f, m - 12 * s, m + 12 * s, args=(m,))[0] for m in (a, -a))

    mean = moment(1)
    return mean, math.sqrt(moment(2) - mean**2)


def test_a_calibrated_log_channel_has_the_moments_of_its_calibrated_quantiles() -> None:
    """The mixture of ``N(+-a, s^2)`` in ``z = log x``, its median 0, scaled about it by ``c``
    (the 5-95% band's factor): paths ``+-c a``, noise ``c s``, so ``E x = exp(c^2 s^2 / 2)
    cosh(c a)`` and ``E x^2 = exp(2 c^2 s^2) cosh(2 c a)``; the reported q05 and q95 are that
    distribution's (its CDF there is 0.05 and 0.95). With each end on its own, the mean and
    std take ``center``."""
    a, s = np.array([0.1, 0.5, 1.2]), 0.4
    p = _two_paths("log", a, s)
    c = np.array([0.5, 1.0, 2.5])  # (n,) a factor per time (by lead)
    stats = p.summary(c[:, None])[:, 0]  # (n, 5)
    mean = np.exp(c**2 * s**2 / 2) * np.cosh(c * a)
    std = np.sqrt(np.exp(2 * c**2 * s**2) * np.cosh(2 * c * a) - mean**2)
    np.testing.assert_allclose(stats[:, 0], mean, rtol=1e-12)
    np.testing.assert_allclose(stats[:, 1], std, rtol=1e-12)
    z = np.log(stats[:, 2:]).T  # (3, n) q05, q50, q95 on the log scale
    cdf = 0.5 * (ndtr((z - c * a) / (c * s)) + ndtr((z + c * a) / (c * s)))
    np.testing.assert_allclose(cdf, np.tile([[0.05], [0.5], [0.95]], 3), atol=1e-9)
    np.testing.assert_allclose(p.summary()[1, 0], stats[1], rtol=1e-9)  # c = 1: the model's
    ends = np.broadcast_to(np.array([0.7, 3.0])[:, None, None, None], (2, 1, 3, 1))
    tails = p.summary(ends, None, c[:, None])[:, 0]  # lower ends x0.7, upper x3, center c
    np.testing.assert_allclose(tails[:, :2], stats[:, :2], rtol=1e-12)
    with pytest.raises(ValueError, match="pass center"):
        p.summary(ends)


@pytest.mark.parametrize("kind", ["log1p", "logit(-5, 20)"])
def test_a_calibrated_channels_moments_match_quadrature_of_its_scaled_density(kind: str) -> None:
    """A ``log1p`` channel (censored at 0) and a ``logit`` one: the calibrated mean and std
    are those of ``x = inverse(z)``, ``z`` the mixture scaled by ``c`` about its median 0
    (`_scaled_moments`)."""
    a, s, c = np.array([0.3, 1.5]), 0.8, np.array([0.6, 2.0])
    p = _two_paths(kind, a, s)
    stats = p.summary(c[:, None])[:, 0]  # (n, 5)
    lo, hi = (-5.0, 20.0) if kind.startswith("logit") else (0.0, 0.0)
    g = {
        "log1p": lambda z: max(math.expm1(z), 0.0),
        "logit(-5, 20)": lambda z: lo + (hi - lo) / (1 + math.exp(-z)),
    }[kind]
    for i in range(2):
        ref = _scaled_moments(g, c[i] * a[i], c[i] * s)
        np.testing.assert_allclose(stats[i, :2], ref, rtol=1e-8)


def test_log_space_scores_say_exactly_which_values_a_scaled_band_holds() -> None:
    """The calibration's rule: a value is inside the band scaled by lam iff its score <= lam;
    on a log1p channel also a count of 0, inside whenever the band's lower end is 0."""
    rng = np.random.default_rng(1)
    for kinds in (["log", "none"], ["logit", "logit(-5, 20)"], ["log1p", "log"]):
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


def test_logit_names_are_canonical_and_bad_bounds_are_refused() -> None:
    kinds = transform_kinds(
        ["a", "b", "c", "d"],
        {"a": " logit(0.0,1) ", "b": "logit( 0 , 1e2 )", "c": "logit(-0.5, 100.5)", "d": "logit"},
    )
    assert kinds == ["logit", "logit(0, 100)", "logit(-0.5, 100.5)", "logit"]
    assert [bounds_of(k) for k in kinds[:3]] == [(0.0, 1.0), (0.0, 100.0), (-0.5, 100.5)]
    for bad in ("logit(1, 0)", "logit(0, inf)", "logit(a, 1)", "logit(2, 2)"):
        with pytest.raises(DataError, match=rf"'{re.escape(bad)}' of channel 'a'.*LO below HI"):
            transform_kinds(["a"], {"a": bad})
    with pytest.raises(DataError, match=r"unknown transform .*'logit\(LO, HI\)'.*quote it"):
        transform_kinds(["a"], {"a": "logit(0 100)"})
    cut = yaml.safe_load("{a: logit(0, 100)}")  # what an unquoted name on the command line gives
    assert cut == {"a": "logit(0", "100)": None}
    with pytest.raises(DataError, match=r"channel 'a' was cut at its comma.*'logit\(0, 100\)'"):
        transform_kinds(["a"], cut)


def test_logit_round_trips_to_the_bounds_in_numpy_and_torch() -> None:
    x = np.array([[1e-9, 0.5], [99.999999, 1 - 1e-12], [50.0, np.nan]])  # (3, 2)
    kinds = ["logit(0, 100)", "logit"]
    z = forward(x, kinds)
    u = x[:, 0] / 100
    np.testing.assert_allclose(z[:, 0], np.log(u / (1 - u)), rtol=1e-9)
    assert z[2, 0] == 0.0 and np.isnan(z[2, 1])
    back = inverse(z, kinds)
    np.testing.assert_allclose(back, x, rtol=1e-12, atol=0)  # relative, even at 1e-9 of 100
    near = np.array([[100 - 1e-11, 1e-11]]).T  # (2, 1) next to either bound
    exact = [float((Decimal(v) / (100 - Decimal(v))).ln()) for v in near[:, 0]]  # 28 digits
    zn = forward(near, ["logit(0, 100)"])
    np.testing.assert_allclose(zn[:, 0], exact, rtol=1e-14)  # u = x / 100 first: 1e-4 off
    back = inverse(zn, ["logit(0, 100)"])[:, 0]
    np.testing.assert_allclose([100 - back[0], back[1]], [100 - near[0, 0], near[1, 0]], rtol=1e-9)
    zt = forward(torch.from_numpy(x), kinds)
    np.testing.assert_allclose(zt.numpy(), z, rtol=1e-14)
    np.testing.assert_allclose(inverse(zt, kinds).numpy(), x, rtol=1e-12)
    far = inverse(np.array([[-800.0, 800.0]]).T, ["logit(2, 3)"])  # no overflow, at the bounds
    np.testing.assert_array_equal(far[:, 0], [2.0, 3.0])
    inside = np.array([[0.0, 100.0, 100.5, -0.5, 3.0, np.nan]]).T
    np.testing.assert_array_equal(
        outside_domain(inside, ["logit(0, 100)"])[:, 0], [True, True, True, True, False, False]
    )


def test_values_outside_logit_bounds_are_refused_with_a_hint(tmp_path: Path) -> None:
    path = _csv(tmp_path / "share.csv", ["s,1,0.5,3", "s,2,100,3", "s,3,0,3", "s,4,,3"])
    with pytest.raises(CSVDataError) as err:
        read_series_csv(path, time_unit="", transform={"conc": "logit(0, 100)"})
    msg = str(err.value)
    assert "'conc' is modelled on a logit(0, 100) scale" in msg and "(lines 3, 4)" in msg
    assert "strictly between 0 and 100" in msg and "'logit(-0.5, 100.5)'" in msg
    table = read_series_csv(path, time_unit="", transform={"conc": "logit(-0.5, 100.5)"})
    assert table.n_series == 1
    pct = _csv(tmp_path / "pct.csv", ["s,1,0.5,3", "s,2,87,3", "s,3,12,3"])
    with pytest.raises(
        CSVDataError, match=r"reach 87: if they are percentages, use 'logit\(0, 100\)'"
    ):
        read_series_csv(pct, time_unit="", transform={"conc": "logit"})
    with pytest.raises(CSVDataError) as err:  # no such guess for values below 0
        read_series_csv(
            _csv(tmp_path / "neg.csv", ["s,1,-0.5,3", "s,2,2,3"]),
            time_unit="",
            transform={"conc": "logit"},
        )
    assert "if they are percentages" not in str(err.value)


def _logit_normal_reference(mu: float, s: float) -> tuple[float, float]:
    """Mean and std of ``sigmoid(z)``, ``z ~ N(mu, s^2)``, by a dense trapezoid sum."""
    z = np.linspace(mu - 14 * s, mu + 14 * s, 400_001)
    density = np.exp(-0.5 * ((z - mu) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    u = 1 / (1 + np.exp(-z))
    mean = np.trapezoid(u * density, z)
    return mean, math.sqrt(np.trapezoid((u - mean) ** 2 * density, z))


@pytest.mark.parametrize(("s", "tol"), [(0.05, 1e-12), (1.0, 1e-12), (3.0, 1e-6), (4.0, 1e-4)])
def test_logit_normal_moments_match_quadrature_of_the_density(s: float, tol: float) -> None:
    """One path: the Gauss-Hermite moments against a dense trapezoid sum, from deep in one
    tail to the other (the tolerances the `HERMITE_NODES` docstring states)."""
    for mu in (-20.0, -3.0, 0.0, 0.7, 6.0):
        mean, std = _logit_normal_moments(np.array([[mu]]), np.array([[s]]))
        ref = _logit_normal_reference(mu, s)
        assert abs(mean[0] - ref[0]) < tol and abs(std[0] - ref[1]) < tol, (mu, s)


def test_a_logit_channel_has_the_mixture_moments_and_stays_between_its_bounds() -> None:
    big = _predictive(["logit(0, 100)", "none"], K=200_000)
    stats = big.summary()
    draws = big.draws[..., 0]  # (K, n)
    np.testing.assert_allclose(stats[:, 0, 0], draws.mean(axis=0), rtol=3e-3)
    np.testing.assert_allclose(stats[:, 0, 1], draws.std(axis=0), rtol=5e-3)
    np.testing.assert_allclose(
        stats[:, 0, 2:], np.quantile(draws, [0.05, 0.5, 0.95], axis=0).T, rtol=0.01
    )  # the mixture's exact quantiles against the draws' (Monte-Carlo error)
    assert (stats[:, 0, 2] > 0).all() and (stats[:, 0, 4] < 100).all()
    one = _predictive(["logit(10, 20)"], K=1, n=2)  # one path: its own moments, mapped
    ref = np.array([_logit_normal_reference(m, 0.6) for m in one.paths[0, :, 0]])  # (n, 2)
    np.testing.assert_allclose(one.summary()[:, 0, :2], [[10, 0]] + 10 * ref, rtol=1e-10)
