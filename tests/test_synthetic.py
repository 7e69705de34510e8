"""Synthetic generators: seeded, and following the papers' protocols (ANCHORS.md section 2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from latentode.data import DataError, IrregularBatch
from latentode.data.datamodules import PeriodicDataModule, SpiralsDataModule
from latentode.data.synthetic import Spirals, make_periodic, make_spirals

F64 = torch.float64


@pytest.mark.parametrize("make", [make_spirals, make_periodic])
def test_generators_are_seeded(make) -> None:
    state = torch.random.get_rng_state()
    a, b, c = make(n=20, seed=3), make(n=20, seed=3), make(n=20, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(a.values, b.values) and torch.equal(a.times, b.times)
    assert not torch.equal(a.values, c.values)


def test_spirals_follow_chen_protocol() -> None:
    sp = make_spirals(n=200, seed=0, dtype=F64)
    grid = torch.linspace(0, 6 * math.pi, 500, dtype=F64)
    assert sp.values.shape == sp.clean.shape == (200, 200, 2)
    assert torch.allclose(sp.times, grid[:200]) and torch.allclose(sp.grid, grid)
    assert int(sp.clockwise.sum()) == 100  # exactly half clockwise
    assert int(sp.start_index.min()) >= 100 and int(sp.start_index.max()) <= 300
    # Archimedean: distance to the centre (+5, 0) ccw / (-5, 0) cw is b * theta (a = 0)
    theta = grid[sp.start_index.unsqueeze(1) + torch.arange(200)]  # (n, W)
    centre = torch.where(sp.clockwise, -5.0, 5.0).to(F64)  # (n,)
    rel = sp.clean - torch.stack([centre, torch.zeros_like(centre)], -1).unsqueeze(1)
    assert torch.allclose(rel.norm(dim=-1), 0.3 * theta, atol=1e-12)
    # direction: the sign of the cross product of consecutive points about the centre
    cross = rel[:, :-1, 0] * rel[:, 1:, 1] - rel[:, :-1, 1] * rel[:, 1:, 0]  # (n, W - 1)
    assert bool((cross[~sp.clockwise] > 0).all()) and bool((cross[sp.clockwise] < 0).all())
    noise = sp.values - sp.clean
    assert abs(float(noise.std()) - 0.3) < 0.01 and abs(float(noise.mean())) < 0.01


def test_spirals_torchdiffeq_style_clockwise_radius() -> None:
    sp = make_spirals(n=10, seed=1, style="torchdiffeq", noise_std=0.0, dtype=F64)
    grid = sp.grid
    theta = grid[sp.start_index.unsqueeze(1) + torch.arange(200)]  # (n, W)
    cw = sp.clockwise
    rel = sp.clean[cw] - torch.tensor([-5.0, 0.0], dtype=F64)
    r_expected = 0.3 * 50.0 / (grid[-1] + 1.0 - theta[cw])
    assert torch.allclose(rel.norm(dim=-1), r_expected, atol=1e-12)
    assert torch.equal(sp.values, sp.clean)


@pytest.mark.parametrize("n_observed", [30, 50, 100])
def test_spirals_forecast_experiment_is_expressible(n_observed: int) -> None:
    sp = make_spirals(n=16, seed=0)
    split = sp.forecast_split(n_observed, generator=torch.Generator().manual_seed(0))
    assert split.observed.n_times == 100 and split.target.n_times == 100
    assert split.observed.lengths.tolist() == [n_observed] * 16
    assert torch.equal(split.target.times, sp.times[100:])
    assert float(split.target.times[0]) == sp.t_split
    kept = split.observed.mask > 0
    assert torch.equal(split.observed.values[kept], sp.values[:, :100][kept])
    assert torch.equal(split.target.values, sp.values[:, 100:])


def test_periodic_follows_rubanova_protocol() -> None:
    data = make_periodic(n=1000, seed=0, dtype=F64)
    t = data.times
    assert t.shape == (100,) and float(t[0]) == 0.0
    assert bool((t.diff() > 0).all()) and float(t[-1]) <= 5.0
    assert data.values.shape == data.clean.shape == (1000, 100, 1)
    f, c = data.frequency, data.offset
    assert float(f.min()) >= 0.4 and float(f.max()) <= 0.8
    assert abs(float(f.mean()) - 0.6) < 0.01
    assert abs(float(c.mean()) - 1.0) < 0.02 and abs(float(c.std()) - 0.1) < 0.01
    expected = torch.sin(2 * math.pi * f.unsqueeze(1) * t) + c.unsqueeze(1)  # (n, T)
    assert torch.allclose(data.clean[..., 0], expected, atol=1e-12)
    noise = data.values - data.clean
    assert bool((noise[:, 0] == 0).all())  # no noise on the first point, as their add_noise
    assert float(noise.min()) >= 0.0 and float(noise.max()) < 0.01
    batch = data.batch
    assert batch.n_observed == 100_000 and torch.equal(batch.times, t)


def test_generators_reject_bad_arguments() -> None:
    with pytest.raises(DataError, match="n_total"):
        make_spirals(n=4, n_total=250)
    with pytest.raises(DataError, match="style"):
        make_spirals(n=4, style="hyperbolic")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="freq_range"):
        make_periodic(n=4, freq_range=(0.8, 0.4))


def test_periodic_datamodule_splits_are_seeded_and_disjoint() -> None:
    from latentode.data.datamodules import PeriodicDataModule

    def first_batches(task: str) -> tuple:
        dm = PeriodicDataModule(n=50, task=task, frac_observed=0.3, batch_size=8, seed=2)
        dm.setup()
        return dm, next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))

    dm, train, val = first_batches("interpolation")
    _, train2, val2 = first_batches("interpolation")
    assert dm.train_data is not None and dm.train_data.batch_size == 35
    assert dm.val_split is not None and dm.val_split.observed.batch_size == 5
    assert dm.test_split is not None and dm.test_split.observed.batch_size == 10
    rows = [dm.train_data.values, dm.val_split.target.values, dm.test_split.target.values]
    firsts = torch.cat([r[:, 1, 0] for r in rows])  # one value per series identifies it
    assert len(torch.unique(firsts)) == 50  # disjoint, together all series
    assert train.observed.batch_size == 8 and train.observed.lengths.tolist() == [30] * 8
    assert torch.equal(train.observed.mask, train2.observed.mask)  # seeded
    assert torch.equal(val.observed.mask, val2.observed.mask)
    assert torch.equal(train.observed.mask + train.heldout_mask, train.target.mask)
    again = next(iter(dm.val_dataloader()))  # evaluation splits are fixed
    assert torch.equal(again.observed.mask, val.observed.mask)
    _, ext, _ = first_batches("extrapolation")
    t_mid = 0.5 * float(ext.target.times[-1] + ext.observed.times[0])
    assert float(ext.observed.times[-1]) < t_mid <= float(ext.target.times[0]) + 0.1
    assert torch.equal(ext.heldout_mask, ext.target.mask)


def test_spirals_datamodule_targets() -> None:
    from latentode.data.datamodules import SpiralsDataModule

    dm = SpiralsDataModule(n=20, n_observed=30, batch_size=4, seed=0)
    train = next(iter(dm.train_dataloader()))
    assert train.observed.n_times == 100 and train.target.n_times == 200
    assert train.observed.lengths.tolist() == [30] * 4
    # held out: the 70 unobserved conditioning points and all 100 forecast points
    assert train.heldout_mask[..., 0].sum(1).tolist() == [170.0] * 4
    test = next(iter(dm.test_dataloader()))
    assert test.target.n_times == 100 and torch.equal(test.heldout_mask, test.target.mask)
    forecast = SpiralsDataModule(n=20, n_observed=30, batch_size=4, train_target="forecast")
    assert next(iter(forecast.train_dataloader())).target.n_times == 100


def test_spirals_bayes_forecast_recovers_the_window_at_low_noise() -> None:
    """At noise 1e-3, 10 observed points single out the true direction and start index."""
    sp = make_spirals(n=40, seed=3, noise_std=1e-3, dtype=F64)
    split = sp.forecast_split(10, generator=torch.Generator().manual_seed(0))
    pred = sp.bayes_forecast(split.observed)  # (40, 200, 2)
    assert torch.allclose(pred, sp.clean, atol=1e-9)


def _spiral_windows(sp: Spirals) -> Tensor:
    """Every window the generator can cut, ``[H, W, 2]`` (counter-clockwise, then clockwise)."""
    W, n_total = sp.times.shape[0], sp.grid.shape[0]
    starts = range(sp.n_sample, n_total - W + 1)
    return torch.stack([sp.paths[d, s : s + W] for d in (0, 1) for s in starts])


def test_spirals_bayes_forecast_is_the_posterior_mean() -> None:
    """Against a direct enumeration of the hypotheses, point by point, with the masked values
    poisoned (they must not enter)."""
    sp = make_spirals(n=6, n_total=60, n_sample=10, n_forecast=15, seed=2, dtype=F64)
    observed = sp.forecast_split(4, generator=torch.Generator().manual_seed(1)).observed
    poisoned = torch.where(observed.mask > 0, observed.values, 1e6)
    pred = sp.bayes_forecast(IrregularBatch(observed.times, poisoned, observed.mask))
    hyps = _spiral_windows(sp)  # (H, 25, 2)
    for b in range(6):
        keep = observed.mask[b] > 0  # (10, 2)
        log_lik = torch.stack(
            [-((observed.values[b] - h[:10])[keep] ** 2).sum() / (2 * 0.3**2) for h in hyps]
        )
        expected = torch.einsum("h,hwd->wd", torch.softmax(log_lik, 0), hyps)
        assert torch.allclose(pred[b], expected, atol=1e-12)


def test_spirals_bayes_forecast_beats_the_most_likely_window() -> None:
    """The posterior mean is the least-squares optimum: on 200 test spirals its clean forecast
    error is below that of the single most likely window, and it falls as more points are
    observed (measured 0.054 / 0.040 / 0.025 at n = 30 / 50 / 100)."""
    sp = make_spirals(n=200, seed=1, dtype=F64)
    hyps = _spiral_windows(sp)  # (H, 200, 2)
    rmse = []
    for n in (30, 50, 100):
        observed = sp.forecast_split(n, generator=torch.Generator().manual_seed(n)).observed
        pred = sp.bayes_forecast(observed)[:, 100:]
        sq = (observed.values.unsqueeze(1) - hyps[:, :100]) ** 2 * observed.mask.unsqueeze(1)
        best = hyps[sq.sum((2, 3)).argmin(1), 100:]  # (200, 100, 2)
        rmse.append(float((pred - sp.clean[:, 100:]).square().mean().sqrt()))
        assert rmse[-1] < float((best - sp.clean[:, 100:]).square().mean().sqrt())
    assert rmse[0] > rmse[1] > rmse[2] > 0.01
    assert rmse[0] < 0.08


def test_spirals_bayes_forecast_refuses_what_it_cannot_score() -> None:
    quiet = make_spirals(n=4, seed=0, noise_std=0.0)
    with pytest.raises(DataError, match="noise_std > 0"):
        quiet.bayes_forecast(quiet.batch)
    sp = make_spirals(n=4, seed=0)
    shifted = IrregularBatch(sp.times + 1.0, sp.values, torch.ones_like(sp.values))
    with pytest.raises(DataError, match="window times"):
        sp.bayes_forecast(shifted)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: SpiralsDataModule(num_workers=2),
            "num_workers=2: this data module draws which points of each training batch are "
            "conditioned on from one seeded generator as it collates the batch, and every worker "
            "process would copy that generator and repeat the others' draws. The data are in "
            "memory and collate quickly: set num_workers 0.",
        ),
        (
            lambda: SpiralsDataModule(n_observed=500),
            "n_observed=500: the spirals are conditioned on n_observed of the 100 points of "
            "their conditioning window; choose 1 to 100 (Chen 2018: 30, 50 or 100).",
        ),
        (
            lambda: SpiralsDataModule(noise_std=-0.1),
            "noise_std is the std of the Gaussian noise on every point: a finite number >= 0 "
            "(0: clean spirals), got -0.1.",
        ),
        (
            lambda: PeriodicDataModule(task="interpolation", t_split=1.0),
            "t_split=1.0 splits the time range for task 'extrapolation'; interpolation observes "
            "frac_observed of every time point and scores them all. Leave t_split unset, or set "
            "task: extrapolation.",
        ),
        (
            lambda: PeriodicDataModule(frac_observed=0.0),
            "frac_observed is the share of the time points observed: in (0, 1], got 0.0.",
        ),
    ],
    ids=["workers", "n_observed", "noise_std", "t_split", "frac_observed"],
)
def test_datamodule_settings_are_refused_when_built(build, message: str) -> None:
    """Before: workers repeated the same conditioning subsets (batch 0 and batch 1 of an epoch
    drew the same), 500 observed points conditioned on 100, t_split was ignored by
    interpolation, and a negative noise_std was refused at setup without its value."""
    with pytest.raises(DataError) as err:
        build()
    assert str(err.value) == message


def test_csv_module_refuses_workers() -> None:
    """The CSV module draws its conditioned spans while collating too (with two workers the
    epoch's first two batches conditioned on the same spans)."""
    from latentode.data.csv_module import CSVDataModule

    with pytest.raises(DataError, match="num_workers=2: this data module draws"):
        CSVDataModule("series.csv", num_workers=2)


def test_a_fraction_that_rounds_to_no_series_says_so() -> None:
    """Before: 'no val series: set val_fraction > 0.', although it was 0.1."""
    dm = SpiralsDataModule(n=4, batch_size=2, test_fraction=0.0)
    dm.setup()
    with pytest.raises(DataError) as err:
        dm.val_dataloader()
    assert str(err.value) == (
        "no val series: val_fraction 0.1 x 4 series = 0.4 rounds to 0 series. Raise n (the "
        "number of series) above 5 or val_fraction above 0.125."
    )
    with pytest.raises(DataError) as err:
        dm.test_dataloader()
    assert str(err.value) == "no test series: test_fraction is 0; set it above 0."
