"""LightningDataModule of the FFJORD 2-D toy densities, seeded.

Training points are either drawn fresh for every step (``train_size=None``: an endless supply,
as FFJORD trains) or taken from one fixed sample of ``train_size`` points; validation and test
samples are drawn once and fixed. Every draw comes from a generator seeded by ``seed``, so two
runs with the same seed see the same points in the same order.

Usage::

    dm = Toy2DDataModule("checkerboard", batch_size=512, steps_per_epoch=100, seed=0)
    x = next(iter(dm.train_dataloader()))  # (512, 2)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from .errors import check_counts, same_on_every_process
from .resumable import ResumableLoader
from .sharding import eval_loader, process_rank
from .toy2d import ToyDataError, sample_toy

__all__ = ["FreshToyBatches", "Toy2DDataModule"]


class FreshToyBatches(IterableDataset):
    """Endless fresh points: each pass yields ``length`` batches of ``batch_size`` new points.

    One generator, seeded once, is advanced by every batch, so epoch ``e`` continues where
    epoch ``e - 1`` stopped and a run is reproducible from its seed (keep ``num_workers=0``;
    workers would each copy the generator and repeat its batches).

    Args:
        name: the toy density.
        batch_size: points per batch.
        length: batches per pass (one epoch).
        seed: seed of the generator.
        seed_offset: the process rank under DDP, so that processes draw different points.
    """

    def __init__(
        self, name: str, batch_size: int, length: int, seed: int, seed_offset: int = 0
    ) -> None:
        self.name, self.batch_size, self.length = name, batch_size, length
        self.seed, self.seed_offset = seed, seed_offset
        self.generator = torch.Generator().manual_seed(seed + 100_003 * seed_offset)

    def for_process(self, rank: int) -> FreshToyBatches:
        """This stream for DDP process ``rank`` (itself if it already is): other points."""
        if rank == self.seed_offset:
            return self
        return FreshToyBatches(self.name, self.batch_size, self.length, self.seed, rank)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Tensor]:
        for _ in range(self.length):
            yield sample_toy(self.name, self.batch_size, generator=self.generator)  # (B, 2)


class Toy2DDataModule(pl.LightningDataModule):
    """One of `TOY_DENSITIES` with fixed validation / test samples.

    Training batches are point tensors ``(B, 2)``; validation / test batches ``(x,)`` tuples.

    Args:
        name: the toy density (``"checkerboard"``, ``"8gaussians"``, ...).
        batch_size: training points per step.
        steps_per_epoch: training batches per epoch when drawing fresh points.
        train_size: ``None`` to draw fresh points each step; else the size of one fixed
            training sample (at least ``batch_size``: incomplete batches are dropped),
            shuffled each epoch.
        n_val, n_test: sizes of the fixed validation and test samples.
        eval_batch_size: points per validation / test batch.
        seed: seeds every draw (train, val and test use disjoint streams).

    Raises:
        ToyDataError: an unknown name, a size or batch size below 1, or a ``train_size``
            below ``batch_size``.
    """

    def __init__(
        self,
        name: str = "checkerboard",
        batch_size: int = 512,
        steps_per_epoch: int = 100,
        train_size: int | None = None,
        n_val: int = 2000,
        n_test: int = 10000,
        eval_batch_size: int = 5000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        sample_toy(name, 1, 0)  # fail early on an unknown name
        sizes = {"batch_size": batch_size, "steps_per_epoch": steps_per_epoch, "n_val": n_val}
        check_counts(ToyDataError, 1, **sizes, n_test=n_test, eval_batch_size=eval_batch_size)
        if train_size is not None:
            check_counts(ToyDataError, 1, train_size=train_size)
            if train_size < batch_size:
                raise ToyDataError(
                    f"train_size={train_size} is smaller than batch_size={batch_size}: training "
                    "drops the incomplete last batch, so no batch would be left. Give "
                    f"train_size >= {batch_size}, batch_size <= {train_size}, or train_size "
                    "null (fresh points every step)."
                )
        self.name, self.batch_size, self.steps_per_epoch = name, batch_size, steps_per_epoch
        self.train_size, self.n_val, self.n_test = train_size, n_val, n_test
        self.eval_batch_size, self.seed = eval_batch_size, seed
        self.val_x: Tensor | None = None
        self.test_x: Tensor | None = None
        self.train_x: Tensor | None = None
        self.fresh = FreshToyBatches(name, batch_size, steps_per_epoch, seed + 3)
        self._shuffle_gen = torch.Generator().manual_seed(seed)

    def setup(self, stage: str | None = None) -> None:
        """Draw the fixed samples once; take this process's stream of fresh points."""
        self.fresh = self.fresh.for_process(process_rank()[0])  # own points per process
        if self.val_x is None:
            self.val_x = sample_toy(self.name, self.n_val, self.seed + 1)  # (n_val, 2)
            self.test_x = sample_toy(self.name, self.n_test, self.seed + 2)  # (n_test, 2)
            if self.train_size is not None:
                self.train_x = sample_toy(self.name, self.train_size, self.seed)

    def train_dataloader(self) -> DataLoader:
        """Fresh batches (or shuffled batches of the fixed training sample)."""
        self.setup()
        if self.train_x is None:
            return DataLoader(self.fresh, batch_size=None)
        self._check_shard_holds_a_batch()
        return ResumableLoader(
            self.train_x,
            batch_size=self.batch_size,
            shuffle=True,
            generator=self._shuffle_gen,
            drop_last=True,
        )

    def _check_shard_holds_a_batch(self) -> None:
        """Under DDP each process trains on its shard of the fixed sample, ``ceil(train_size /
        processes)`` points (Lightning's `DistributedSampler`); with incomplete batches dropped,
        a shard smaller than ``batch_size`` would train on nothing."""
        processes = process_rank()[1]
        shard = -(-len(self.train_x) // processes)  # type: ignore[arg-type]
        if processes > 1 and shard < self.batch_size:
            error = ToyDataError(
                f"train_size={self.train_size} split over {processes} processes gives each "
                f"{shard} points, fewer than batch_size={self.batch_size}: training drops the "
                "incomplete last batch, so no process would have a batch. Give train_size >= "
                f"{self.batch_size * processes}, batch_size <= {shard} (the batch is per "
                "process), or train_size null (fresh points every step)."
            )
            raise same_on_every_process(error)

    def generators(self) -> dict[str, torch.Generator]:
        """The generators training draws from (fresh points, the shuffle); a checkpoint stores
        their states so that a resumed fit repeats the uninterrupted one."""
        return {"fresh": self.fresh.generator, "shuffle": self._shuffle_gen}

    def _eval_loader(self, stage: str) -> DataLoader:
        self.setup()
        x = self.val_x if stage == "val" else self.test_x
        if x is None:  # pragma: no cover - setup has drawn both samples
            raise ToyDataError(f"the {stage} sample was not drawn; call setup() first.")
        return eval_loader(TensorDataset(x), self.eval_batch_size, f"the {stage} sample", "point")

    def val_dataloader(self) -> DataLoader:
        """The fixed validation sample, as ``(x,)`` batches."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """The fixed test sample, as ``(x,)`` batches."""
        return self._eval_loader("test")
