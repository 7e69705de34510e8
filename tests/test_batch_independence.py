"""A series' prediction and score depend on its own observations only, not on the other series
that share its batch: latent ODEs anchored at the last observation on the synthetic data
modules. (The ODE-RNN without a step_size steps on the batch's times: `nn.encoders`.)"""

from __future__ import annotations

import math

import pytest
import torch
from lightning_helpers import quiet_trainer
from torch import Tensor

from latentode.data.batch import IrregularBatch, Split, align_last
from latentode.data.datamodules import PeriodicDataModule, SpiralsDataModule
from latentode.nn.base import SolverSettings
from latentode.nn.latent_ode import LatentODE, LatentODEConfig
from latentode.systems import LatentODESystem

F64 = torch.float64


def _periodic(task: str = "interpolation", n: int = 120, batch_size: int = 12) -> Split:
    """The validation split of a small periodic data set, float64 (12 series)."""
    dm = PeriodicDataModule(n=n, task=task, frac_observed=0.3, batch_size=batch_size, seed=0)
    dm.setup()
    assert dm.val_split is not None
    s = dm.val_split
    return Split(s.observed.to(dtype=F64), s.target.to(dtype=F64), s.heldout_mask.to(F64))


def test_align_last_puts_each_series_last_conditioning_time_at_zero() -> None:
    times = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], dtype=F64)
    values = torch.arange(12, dtype=F64).reshape(2, 6, 1)
    seen = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0]], dtype=F64).unsqueeze(-1)
    target = IrregularBatch(times, values, torch.ones_like(values))
    split = align_last(Split(IrregularBatch(times, values, seen), target, 1.0 - seen))
    # series 0 conditions up to t = 3, series 1 up to t = 2
    assert split.observed.times.tolist() == [-3.0, -2.0, -1.0, 0.0]
    assert split.observed.mask[..., 0].tolist() == [[1, 1, 0, 1], [0, 0, 1, 1]]
    assert split.observed.values[0, :, 0].tolist() == [0.0, 1.0, 0.0, 3.0]
    assert split.target.times.tolist() == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert split.target.values[1, 1:, 0].tolist() == [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    assert split.heldout_mask[..., 0].tolist() == [
        [0, 0, 1, 0, 1, 1, 0],
        [0, 1, 0, 0, 1, 1, 1],
    ]


def _per_series_forecasts(model: LatentODE, dm: PeriodicDataModule | SpiralsDataModule) -> Tensor:
    """Each validation series' predictive mean at its held-out points, from batches of
    ``dm.batch_size`` series, with the same posterior draws per series whatever the batch."""
    out = []
    for split in dm.val_dataloader():
        B = split.observed.batch_size
        first = len(out)
        gens = [torch.Generator().manual_seed(first + b) for b in range(B)]
        obs, target = split.observed.to(dtype=F64), split.target.to(dtype=F64)
        with torch.no_grad():
            mean = model.predict(obs, target.times, 3, generators=gens).mean  # (B, T, D)
        out += [mean[b][split.heldout_mask[b] > 0] for b in range(B)]
    return torch.cat(out)


@pytest.mark.parametrize(
    ("make", "config"),
    [
        (
            lambda bs: PeriodicDataModule(n=50, frac_observed=0.3, batch_size=bs, seed=0),
            {"input_dim": 1, "encoder": "gru"},  # the ODE-RNN's flow steps on the batch's times
        ),
        (
            lambda bs: SpiralsDataModule(n=50, n_observed=10, batch_size=bs, seed=0),
            {"input_dim": 2, "encoder": "gru", "encoder_time": True},
        ),
    ],
    ids=["periodic", "spirals"],
)
def test_anchor_last_scores_each_series_on_its_own_observations(make, config) -> None:
    """With ``anchor: last`` the synthetic modules shift each series so that its last
    conditioning time is 0 (`align_to`, which `LatentODESystem.setup` calls), as the CSV
    module does: a series' forecast is the same in batches of 5 and alone. Before, the
    latent state sat at the batch's last observed time: a spiral's forecast here moved by up
    to 0.055 between batches of 5 and 1."""
    torch.manual_seed(0)
    solver = SolverSettings("rk4", step_size=0.1)  # no shared step control
    model = LatentODE(
        LatentODEConfig(latent_dim=3, encoder_hidden=8, anchor="last", solver=solver, **config)
    ).double()
    forecasts = []
    for batch_size in (5, 1):
        dm = make(batch_size)
        dm.setup()
        dm.align_to("last")
        forecasts.append(_per_series_forecasts(model, dm))
    assert forecasts[0].numel() > 100
    torch.testing.assert_close(forecasts[0], forecasts[1], rtol=0, atol=1e-8)  # float64 sums


def test_a_latent_ode_anchored_last_aligns_the_synthetic_batches(tmp_path) -> None:
    """`LatentODESystem.setup` has the synthetic module align its batches (before, it skipped
    a module without ``align_to`` without a word): every validation series then conditions
    up to time 0, and the score is the same in batches of 10 and 3."""
    torch.manual_seed(0)
    system = LatentODESystem(
        {"latent_dim": 3, "encoder_hidden": 8, "anchor": "last", "obs_std": 0.3},
        eval_samples=2,
    )
    scores = []
    for batch_size in (10, 3):
        dm = SpiralsDataModule(n=100, n_observed=10, batch_size=batch_size)
        # without inference mode: see `NO_INFERENCE_MODE` in test_systems.py
        trainer = quiet_trainer(tmp_path, inference_mode=False)
        scores.append(trainer.validate(system, dm, verbose=False)[0])
        assert dm.anchor == "last"
        split = next(iter(dm.val_dataloader()))
        point = split.observed.point_mask  # (B, T)
        last = torch.where(point, split.observed.times, -torch.inf).amax(dim=1)  # (B,)
        assert torch.equal(last, torch.zeros_like(last))
    # the posterior draws differ between batchings (one stream for the batch), so the scores
    # agree up to Monte-Carlo noise (measured 0.5%); the draws aside they agree exactly (above)
    assert math.isclose(scores[0]["val/mse"], scores[1]["val/mse"], rel_tol=0.05)
