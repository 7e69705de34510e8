"""LightningDataModules for the synthetic experiments: batches are `Split` objects.

Each batch is ``Split(observed, target, heldout_mask)`` of `IrregularBatch` es (Lightning moves
it to the device, ``IrregularBatch`` has ``.to``). Series are divided into train / val / test by
a seeded permutation. Validation and test splits (which points are observed) are drawn once,
seeded, so every evaluation scores the same points; training splits are re-drawn for every
batch from a seeded generator, so each epoch shows the model new subsets.

The data are small and in memory, and the training subsets are drawn in the main process:
``num_workers`` must be 0 (with workers each one would copy the training generator and repeat
the same subsets; `check_num_workers`).

A latent ODE anchored at the last observation (``anchor: last``) has `LatentODESystem` call
`align_to`: every batch is then shifted series by series so that a series' last conditioning
time is 0 (`align_last`), and its latent state sits at its own last observation rather than at
the batch's. Its grids are the unions of the shifted times, longer than the shared grid when
the series' last observations differ, and a training step costs more: measured with the
configs' models, 1.6x on the spirals with 30 observed points (grids of 193 and 475 times
instead of 100 and 200), 4-5x on the periodic series at 10-50% observed (400-500 conditioning
times instead of 100).

Usage::

    dm = PeriodicDataModule(task="extrapolation", frac_observed=0.3)
    dm.setup()
    split = next(iter(dm.train_dataloader()))
    split.observed.values   # [batch, T_obs, 1]
"""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .batch import (
    IrregularBatch,
    Split,
    align_last,
    split_extrapolation,
    split_interpolation,
    subsample_observations,
)
from .errors import DataError
from .prep import check_fractions, held_out_counts
from .resumable import ResumableLoader, check_num_workers
from .sharding import eval_loader
from .synthetic import N_CONDITIONING, check_spiral_settings, make_periodic, make_spirals

__all__ = ["PeriodicDataModule", "SpiralsDataModule", "SyntheticDataModule"]


class SyntheticDataModule(pl.LightningDataModule):
    """Shared machinery: generate once, divide the series, serve `Split` batches.

    Subclasses implement `generate` (all series) and `make_split` (one batch's split), and
    state ``n_features``, the channels of their series (the systems check a model's
    ``input_dim`` against it at setup).

    Args:
        batch_size: series per batch.
        val_fraction, test_fraction: shares of the series held out (rounded).
        seed: seeds the data, the division, the fixed evaluation splits and the training draws.
        num_workers: DataLoader workers: 0 (see the module docstring).

    Raises:
        DataError: a batch size below 1, shares of the series out of range, or workers.
    """

    n_features: int | None = None  # the subclass's channels

    def __init__(
        self,
        batch_size: int,
        val_fraction: float,
        test_fraction: float,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise DataError(f"need batch_size >= 1; got {batch_size}.")
        check_fractions(val_fraction, test_fraction)
        check_num_workers(num_workers)
        self.batch_size = batch_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.train_data: IrregularBatch | None = None
        self.val_split: Split | None = None
        self.test_split: Split | None = None
        self._train_gen = torch.Generator()
        self._shuffle_gen = torch.Generator()
        self.anchor: Literal["first", "last"] = "first"  # the model's; see `align_to`
        self._counts = (0, 0, 0)  # series: all, val, test (set by `setup`)

    def generate(self) -> IrregularBatch:
        """Every series of the data set."""
        raise NotImplementedError

    def make_split(self, batch: IrregularBatch, generator: torch.Generator, stage: str) -> Split:
        """What a model conditions on and is scored against, for one batch of ``stage``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Generate the data and divide it (once; later calls do nothing)."""
        if self.train_data is not None:
            return
        full = self.generate()
        n = full.batch_size
        more = ", or generate more series (n)"
        n_val, n_test = held_out_counts(n, self.val_fraction, self.test_fraction, more)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).tolist()
        test = full[sorted(perm[:n_test])]
        val = full[sorted(perm[n_test : n_test + n_val])]
        self.train_data = full[sorted(perm[n_test + n_val :])]
        self.val_split = self.make_split(val, self._gen(2), "val") if n_val else None
        self.test_split = self.make_split(test, self._gen(3), "test") if n_test else None
        self._train_gen = self._gen(1)
        self._shuffle_gen = self._gen(4)
        self._counts = (n, n_val, n_test)

    def align_to(self, anchor: Literal["first", "last"]) -> None:
        """Align the batches for a latent ODE anchored at ``anchor`` (`LatentODEConfig`):
        ``"first"`` (default) leaves the shared time grid as it is, ``"last"`` shifts each
        series so that its last conditioning time is 0 (`align_last`).
        `LatentODESystem.setup` calls this with its model's anchor."""
        if anchor not in ("first", "last"):
            raise DataError(f"anchor must be 'first' or 'last', got {anchor!r}.")
        self.anchor = anchor

    def _aligned(self, split: Split) -> Split:
        return align_last(split) if self.anchor == "last" else split

    def generators(self) -> dict[str, torch.Generator]:
        """The generators training draws from (the observed subsets, the shuffle); a
        checkpoint stores their states so that a resumed fit repeats the uninterrupted one."""
        return {"subsets": self._train_gen, "shuffle": self._shuffle_gen}

    def _gen(self, offset: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 10 + offset)

    def _train(self) -> IrregularBatch:
        self.setup()
        if self.train_data is None:  # setup() always sets it; this narrows the type
            raise DataError("the data module has no training data; call setup() first.")
        return self.train_data

    def _collate_train(self, index: list[int]) -> Split:
        return self._aligned(self.make_split(self._train()[index], self._train_gen, "train"))

    def _loader(self, split: Split | None, stage: str) -> DataLoader:
        if split is None:
            fraction = self.val_fraction if stage == "val" else self.test_fraction
            n = self._counts[0]
            if fraction == 0:
                raise DataError(f"no {stage} series: {stage}_fraction is 0; set it above 0.")
            raise DataError(
                f"no {stage} series: {stage}_fraction {fraction:g} x {n} series = "
                f"{fraction * n:g} rounds to 0 series. Raise n (the number of series) above "
                f"{0.5 / fraction:g} or {stage}_fraction above {0.5 / n:g}."
            )
        return eval_loader(
            range(split.observed.batch_size),
            self.batch_size,
            f"the {stage} split",
            "series",
            collate_fn=lambda index: self._aligned(split.select(index)),
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled series; a new observed subset for every batch."""
        return ResumableLoader(
            range(self._train().batch_size),
            batch_size=self.batch_size,
            shuffle=True,
            generator=self._shuffle_gen,
            collate_fn=self._collate_train,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        """The fixed validation split."""
        self.setup()
        return self._loader(self.val_split, "val")

    def test_dataloader(self) -> DataLoader:
        """The fixed test split."""
        self.setup()
        return self._loader(self.test_split, "test")

    def predict_dataloader(self) -> DataLoader:
        """The test split again (for figures)."""
        return self.test_dataloader()


class SpiralsDataModule(SyntheticDataModule):
    """Chen 2018's spirals: observe ``n_observed`` of the first 100 points, predict the next 100.

    Args:
        n: number of spirals; noise_std, style: as `make_spirals`.
        n_observed: points observed per series among the first 100, the conditioning
            window (30 / 50 / 100; 1 to 100).
        train_target: ``"window"`` scores training on all 200 points (reconstruction of the
            conditioning window plus forecast), ``"forecast"`` on the next 100 only. Validation
            and test always score the forecast window.
        batch_size, val_fraction, test_fraction, seed, num_workers: as `SyntheticDataModule`.
    """

    n_features = 2  # x and y

    def __init__(
        self,
        n: int = 1000,
        n_observed: int = 100,
        noise_std: float = 0.3,
        style: Literal["archimedean", "torchdiffeq"] = "archimedean",
        train_target: Literal["window", "forecast"] = "window",
        batch_size: int = 100,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, val_fraction, test_fraction, seed, num_workers)
        if train_target not in ("window", "forecast"):
            raise DataError(f"train_target must be 'window' or 'forecast', got {train_target!r}.")
        window = N_CONDITIONING
        if isinstance(n_observed, bool) or not isinstance(n_observed, int):
            raise DataError(f"n_observed must be a whole number, got {n_observed!r}.")
        if not 1 <= n_observed <= window:
            raise DataError(
                f"n_observed={n_observed}: the spirals are conditioned on n_observed of the "
                f"{window} points of their conditioning window; choose 1 to {window} "
                "(Chen 2018: 30, 50 or 100)."
            )
        check_spiral_settings(noise_std, style)
        self.save_hyperparameters()
        self.n, self.n_observed, self.noise_std, self.style = n, n_observed, noise_std, style
        self.train_target = train_target
        self.t_split = 0.0

    def generate(self) -> IrregularBatch:
        data = make_spirals(n=self.n, noise_std=self.noise_std, style=self.style, seed=self.seed)
        self.t_split = data.t_split
        return data.batch

    def make_split(self, batch: IrregularBatch, generator: torch.Generator, stage: str) -> Split:
        split = split_extrapolation(batch, self.t_split)
        observed = subsample_observations(
            split.observed, n_observed=self.n_observed, generator=generator
        )
        if stage != "train" or self.train_target == "forecast":
            return Split(observed, split.target, split.heldout_mask)
        seen = torch.zeros_like(batch.mask)  # (B, W, 2)
        seen[:, : observed.n_times] = observed.mask
        return Split(observed, batch, batch.mask * (1.0 - seen))


class PeriodicDataModule(SyntheticDataModule):
    """Rubanova 2019's toy periodic series, for interpolation or extrapolation.

    Interpolation: observe ``frac_observed`` of the 100 time points, score all of them.
    Extrapolation: observe ``frac_observed`` of the points before ``t_split`` (default: the
    middle of the time range), score the points after.

    Args:
        n: number of series; noise_weight: as `make_periodic`.
        task: ``"interpolation"`` or ``"extrapolation"``.
        frac_observed: share of the (conditioning) time points observed (0.1 / 0.2 / 0.3 / 0.5).
        t_split: extrapolation split time (extrapolation only; default the middle).
        batch_size, val_fraction, test_fraction, seed, num_workers: as `SyntheticDataModule`
            (defaults: 700 / 100 / 200 series; Rubanova trained on 800 and tested on 200).
    """

    n_features = 1

    def __init__(
        self,
        n: int = 1000,
        task: Literal["interpolation", "extrapolation"] = "interpolation",
        frac_observed: float = 0.5,
        t_split: float | None = None,
        noise_weight: float = 0.01,
        batch_size: int = 50,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, val_fraction, test_fraction, seed, num_workers)
        if task not in ("interpolation", "extrapolation"):
            raise DataError(f"task must be 'interpolation' or 'extrapolation', got {task!r}.")
        if task == "interpolation" and t_split is not None:
            raise DataError(
                f"t_split={t_split!r} splits the time range for task 'extrapolation'; "
                "interpolation observes frac_observed of every time point and scores them all. "
                "Leave t_split unset, or set task: extrapolation."
            )
        number = isinstance(frac_observed, int | float) and not isinstance(frac_observed, bool)
        if not (number and 0 < frac_observed <= 1):
            raise DataError(
                f"frac_observed is the share of the time points observed: in (0, 1], got "
                f"{frac_observed!r}."
            )
        self.save_hyperparameters()
        self.n, self.task, self.frac_observed = n, task, frac_observed
        self.t_split, self.noise_weight = t_split, noise_weight

    def generate(self) -> IrregularBatch:
        return make_periodic(n=self.n, noise_weight=self.noise_weight, seed=self.seed).batch

    def make_split(self, batch: IrregularBatch, generator: torch.Generator, stage: str) -> Split:
        if self.task == "interpolation":
            return split_interpolation(batch, self.frac_observed, generator=generator)
        split = split_extrapolation(batch, self.t_split)
        observed = subsample_observations(split.observed, self.frac_observed, generator=generator)
        return Split(observed, split.target, split.heldout_mask)
