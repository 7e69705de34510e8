"""Image classification data for the ODE-Net: scikit-learn's 8x8 digits and MNIST IDX files.

The digits (1797 images, 8x8, 10 classes) ship inside scikit-learn, so they need no download;
MNIST is read from a folder the user gives, in LeCun's IDX format (``train-images-idx3-ubyte``
and friends, gzipped or not). Images come back as float tensors ``(N, 1, H, W)`` in ``[0, 1]``
and labels as ``int64`` ``(N,)``.

Usage::

    splits = load_digits_tensors(seed=0)  # splits.train.images: (N, 1, 8, 8)
    mnist = MNISTFolder("~/data/mnist", split="train")  # mnist[0] -> (image, label)
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from .errors import DataError

__all__ = [
    "IDXFormatError",
    "ImageDataError",
    "ImageSplit",
    "ImageSplits",
    "MNISTFolder",
    "check_fractions",
    "load_digits_tensors",
    "read_idx",
]

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class ImageDataError(DataError):
    """Invalid arguments or inconsistent image data; the message says what to change."""


class IDXFormatError(ImageDataError):
    """A file is not a valid IDX file; the message names the file and the problem."""


@dataclass(frozen=True)
class ImageSplit:
    """Images ``(N, C, H, W)`` in ``[0, 1]`` and their labels ``(N,)``."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def dataset(self) -> TensorDataset:
        """A `TensorDataset` of ``(image, label)`` pairs."""
        return TensorDataset(self.images, self.labels)


@dataclass(frozen=True)
class ImageSplits:
    """Train, validation and test splits."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit


def _open_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic ``1f 8b``."""
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist (or is not a file).")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise IDXFormatError(f"{str(path)!r} looks gzipped but cannot be read: {err}") from err
    return raw


def read_idx(path: str | Path) -> Tensor:
    """Read an IDX file (LeCun's MNIST format), gzipped or raw.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    int32; the data follow in big-endian C order.

    Args:
        path: the file; gzip is detected from the content, not the name.

    Returns:
        A tensor of the file's shape (``(N, 28, 28)`` uint8 for MNIST images, ``(N,)`` labels).

    Raises:
        FileNotFoundError: the file does not exist.
        IDXFormatError: bad magic number, unknown type code, or a size that does not match.
    """
    path = Path(path).expanduser()
    data = _open_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        head = data[:4].hex(" ") or "empty"
        raise IDXFormatError(
            f"{str(path)!r} is not an IDX file: the magic number is {head}, expected "
            "00 00 <type code in 08 09 0b 0c 0d 0e> <ndim>. Give the uncompressed or gzipped "
            "MNIST files (e.g. train-images-idx3-ubyte[.gz])."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{str(path)!r} is truncated inside its header ({ndim} dims).")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise IDXFormatError(
            f"{str(path)!r} has {len(data) - header} data bytes but its header (shape {shape}, "
            f"{dtype.itemsize}-byte items) needs {expected}; the file is truncated or corrupt."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("=")))


def _find(root: Path, stem: str) -> Path:
    """``stem`` or ``stem.gz`` in ``root`` or torchvision's ``root/MNIST/raw``."""
    folders = (root, root / "MNIST" / "raw")
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"MNIST file {stem}[.gz] not found in {[str(f) for f in folders]}. Put the four IDX "
        "files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte, optionally .gz) in that folder."
    )


def _pixels(images: Tensor, path: Path, dtype: torch.dtype) -> Tensor:
    """IDX images ``(N, H, W)`` as ``(N, 1, H, W)`` in ``[0, 1]``: uint8 pixels divided by 255,
    float pixels taken as they are if they lie in ``[0, 1]``.

    Raises:
        ImageDataError: another type (signed integers have no agreed scale), or float pixels
            outside ``[0, 1]`` (or not finite).
    """
    if images.dtype == torch.uint8:
        return images.unsqueeze(1).to(dtype) / 255.0
    if not images.is_floating_point():
        raise ImageDataError(
            f"{str(path)!r} holds {images.dtype} pixels; MNISTFolder reads uint8 pixels "
            "(0-255, IDX type code 0x08, as MNIST) or float pixels in [0, 1] (0x0D, 0x0E). "
            "Convert the file to one of those."
        )
    if images.numel() and not bool(((images >= 0) & (images <= 1)).all()):
        lo, hi = images.min().item(), images.max().item()
        raise ImageDataError(
            f"{str(path)!r} holds float pixels from {lo:g} to {hi:g}; float pixels must lie in "
            "[0, 1] (they are not rescaled). Scale them to [0, 1], or store uint8 (0-255)."
        )
    return images.unsqueeze(1).to(dtype)


def _labels(labels: Tensor, path: Path) -> Tensor:
    """IDX labels as int64, refused unless they are non-negative integers.

    Raises:
        ImageDataError: float labels, or a negative one.
    """
    if labels.is_floating_point():
        raise ImageDataError(
            f"{str(path)!r} holds {labels.dtype} labels; labels must be integers 0, 1, ..., "
            "K - 1 (IDX type code 0x08, as MNIST)."
        )
    labels = labels.long()
    if labels.numel() and int(labels.min()) < 0:
        raise ImageDataError(
            f"{str(path)!r} holds a label {int(labels.min())}; labels must be integers 0, 1, "
            "..., K - 1."
        )
    return labels


class MNISTFolder(Dataset):
    """MNIST (or any IDX image/label pair with MNIST's names) read from a user's folder.

    Pixels are uint8 (divided by 255, as MNIST's) or floats already in ``[0, 1]``; labels are
    non-negative integers.

    Args:
        root: the folder with the IDX files (or torchvision's layout ``root/MNIST/raw``).
        split: ``"train"`` (``train-*``) or ``"test"`` (``t10k-*``).
        dtype: floating dtype of the images.

    Attributes:
        images: ``(N, 1, 28, 28)`` in ``[0, 1]``.
        labels: ``(N,)`` int64.

    Raises:
        ImageDataError: unknown split, images and labels that do not match, pixels of
            another type or range, or labels that are not non-negative integers.
        FileNotFoundError, IDXFormatError: as `read_idx`.
    """

    def __init__(
        self, root: str | Path, split: str = "train", dtype: torch.dtype = torch.float32
    ) -> None:
        if split not in _MNIST_FILES:
            raise ImageDataError(f"unknown split {split!r}; choose one of {list(_MNIST_FILES)}.")
        root = Path(root).expanduser()
        image_path, label_path = (_find(root, stem) for stem in _MNIST_FILES[split])
        images, labels = read_idx(image_path), read_idx(label_path)
        if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise ImageDataError(
                f"{str(image_path)!r} has shape {tuple(images.shape)} and {str(label_path)!r} "
                f"has shape {tuple(labels.shape)}; expected (N, H, W) images and (N,) labels."
            )
        self.images = _pixels(images, image_path, dtype)  # (N, 1, H, W)
        self.labels = _labels(labels, label_path)  # (N,)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def as_split(self) -> ImageSplit:
        """The whole folder split as an `ImageSplit`."""
        return ImageSplit(self.images, self.labels)


def _stratified_split(
    labels: Tensor, fractions: tuple[float, float], seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Indices of train / val / test, the same class proportions in each, seeded."""
    gen = torch.Generator().manual_seed(seed)
    parts: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
    for cls in torch.unique(labels):
        idx = torch.nonzero(labels == cls).squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_val = round(fractions[0] * idx.numel())
        n_test = round(fractions[1] * idx.numel())
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val : n_val + n_test])
        parts[0].append(idx[n_val + n_test :])
    train, val, test = (torch.sort(torch.cat(p)).values for p in parts)
    return train, val, test


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Refuse held-out shares outside ``[0, 1)`` or summing to 1 or more.

    Raises:
        ImageDataError: naming both shares.
    """
    ok = all(
        isinstance(f, int | float) and not isinstance(f, bool)
        for f in (val_fraction, test_fraction)
    )
    if not (
        ok and 0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1
    ):
        raise ImageDataError(
            f"val_fraction={val_fraction!r} and test_fraction={test_fraction!r} must lie in "
            "[0, 1) and sum to less than 1."
        )


def load_digits_tensors(
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> ImageSplits:
    """scikit-learn's bundled 8x8 digits, scaled to ``[0, 1]``, split per class with a seed.

    Args:
        val_fraction, test_fraction: shares of every class kept for validation and test.
        seed: seed of the split (same seed, same split).
        dtype: floating dtype of the images.

    Returns:
        `ImageSplits` with images ``(N, 1, 8, 8)`` and labels ``(N,)``.

    Raises:
        ImageDataError: fractions outside ``[0, 1)`` or summing to 1 or more.
        ImportError: scikit-learn is not installed.
    """
    check_fractions(val_fraction, test_fraction)
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits data ship with scikit-learn: pip install scikit-learn"
        ) from err
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=dtype).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)  # (N,)
    idx = _stratified_split(labels, (val_fraction, test_fraction), seed)
    train, val, test = (ImageSplit(images[i], labels[i]) for i in idx)
    return ImageSplits(train, val, test)
