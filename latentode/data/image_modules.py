"""LightningDataModules for the ODE-Net classifiers: 8x8 digits and MNIST from a folder.

Batches are ``(images, labels)`` with images ``(B, 1, H, W)`` in ``[0, 1]`` and labels
``(B,)``. The digits ship with scikit-learn (no download); MNIST is read from the IDX files in a
folder the user gives (see `MNISTFolder`), its validation set carved from the training files by
a seeded permutation.

Usage::

    dm = DigitsDataModule(batch_size=64, seed=0)
    dm = MNISTDataModule(root="~/data/mnist", batch_size=128)
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .errors import check_counts
from .images import (
    ImageDataError,
    ImageSplit,
    ImageSplits,
    MNISTFolder,
    check_fractions,
    load_digits_tensors,
)
from .resumable import ResumableLoader
from .sharding import eval_loader

__all__ = ["DigitsDataModule", "ImageDataModule", "MNISTDataModule"]


class ImageDataModule(pl.LightningDataModule):
    """Serves the train / val / test `ImageSplit` s of `load_splits` (to implement).

    Args:
        batch_size: images per training batch.
        eval_batch_size: images per validation / test batch.
        seed: seeds the split and the training shuffle.
        num_workers: DataLoader workers (the data are in memory; 0 is fastest on small sets).

    Raises:
        ImageDataError: a batch size below 1 or a negative ``num_workers``.
    """

    def __init__(
        self, batch_size: int, eval_batch_size: int, seed: int, num_workers: int = 0
    ) -> None:
        super().__init__()
        check_counts(ImageDataError, 1, batch_size=batch_size, eval_batch_size=eval_batch_size)
        check_counts(ImageDataError, 0, num_workers=num_workers)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers = seed, num_workers
        self.splits: ImageSplits | None = None
        self._shuffle_gen = torch.Generator().manual_seed(seed)

    def load_splits(self) -> ImageSplits:
        """The three splits (called once, in `setup`)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load the splits once."""
        if self.splits is None:
            self.splits = self.load_splits()

    def label_range(self) -> tuple[int, int]:
        """The smallest and the largest label over the three splits (read once, at setup).

        Raises:
            ImageDataError: the splits hold no image.
        """
        labels = [self._split(name).labels for name in ("train", "val", "test")]
        every = torch.cat(labels)  # (N,)
        if every.numel() == 0:
            raise ImageDataError(f"{type(self).__name__} holds no image in any split.")
        return int(every.min()), int(every.max())

    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images."""
        channels, height, width = self._split("train").images.shape[1:]
        return int(channels), int(height), int(width)

    def generators(self) -> dict[str, torch.Generator]:
        """The shuffle's generator; a checkpoint stores its state so that a resumed fit
        repeats the uninterrupted one."""
        return {"shuffle": self._shuffle_gen}

    def _split(self, name: str) -> ImageSplit:
        if self.splits is None:
            self.splits = self.load_splits()
        return getattr(self.splits, name)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (seeded)."""
        return ResumableLoader(
            self._split("train").dataset(),
            batch_size=self.batch_size,
            shuffle=True,
            generator=self._shuffle_gen,
            num_workers=self.num_workers,
        )

    def _eval_loader(self, name: str) -> DataLoader:
        dataset = self._split(name).dataset()
        return eval_loader(
            dataset,
            self.eval_batch_size,
            f"the {name} split",
            "image",
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test batches."""
        return self._eval_loader("test")


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 8x8 digits (1797 images), split per class with a seed.

    Args:
        batch_size, eval_batch_size, seed, num_workers: as `ImageDataModule`.
        val_fraction, test_fraction: shares of every class held out.

    Raises:
        ImageDataError: as `ImageDataModule`, or shares outside ``[0, 1)`` or summing to 1.
    """

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, num_workers)
        check_fractions(val_fraction, test_fraction)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction

    def load_splits(self) -> ImageSplits:
        """The digits, stratified into train / val / test by ``seed``."""
        return load_digits_tensors(self.val_fraction, self.test_fraction, self.seed)


class MNISTDataModule(ImageDataModule):
    """MNIST read from the IDX files in ``root`` (train and t10k files).

    Args:
        root: folder with ``train-images-idx3-ubyte`` etc. (optionally gzipped, or
            torchvision's ``root/MNIST/raw`` layout).
        val_size: training images held out for validation (seeded permutation).
        batch_size, eval_batch_size, seed, num_workers: as `ImageDataModule`.

    Raises:
        ImageDataError: as `ImageDataModule`, or a negative ``val_size``.
    """

    def __init__(
        self,
        root: str,
        val_size: int = 5000,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, num_workers)
        check_counts(ImageDataError, 0, val_size=val_size)
        self.root, self.val_size = root, val_size

    def load_splits(self) -> ImageSplits:
        """Train and validation from the ``train-*`` files, test from ``t10k-*``.

        Raises:
            ImageDataError: ``val_size`` leaves no training images.
        """
        full = MNISTFolder(self.root, "train").as_split()
        test = MNISTFolder(self.root, "test").as_split()
        n = len(full)
        if not 0 <= self.val_size < n:
            raise ImageDataError(
                f"val_size={self.val_size} must lie in [0, {n}) for the {n} training images "
                f"in {self.root!r}."
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        train = ImageSplit(full.images[train_idx], full.labels[train_idx])
        val = ImageSplit(full.images[val_idx], full.labels[val_idx])
        return ImageSplits(train, val, test)
