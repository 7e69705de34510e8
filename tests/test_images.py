"""IDX reading (round trips on files the tests write), the MNIST folder and the digits splits."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from latentode.data.errors import DataError
from latentode.data.images import (
    IDXFormatError,
    ImageDataError,
    MNISTFolder,
    _stratified_split,
    load_digits_tensors,
    read_idx,
)

_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}
_CODES[np.float64] = 0x0E


def _corrupt_gzip() -> bytes:
    """A gzip stream of a valid IDX file with its deflate data flipped."""
    good = gzip.compress(bytes([0, 0, 0x08, 1]) + struct.pack(">i", 3) + b"abc")
    return good[:12] + bytes(b ^ 0xFF for b in good[12:20]) + good[20:]


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` as an IDX file (big-endian header and data), gzipped if asked."""
    header = bytes([0, 0, _CODES[array.dtype.type], array.ndim])
    header += struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10,
        np.array([3, 1, 4, 1, 5], dtype=np.uint8),
        np.array([[-3, 700], [70000, -1]], dtype=np.int32),
        np.array([-128, 0, 127], dtype=np.int8),
        np.array([[-300, 2]], dtype=np.int16),
        np.array([1.5, -2.25], dtype=np.float32),
        np.array([[np.pi, -1e300]], dtype=np.float64),
    ],
    ids=["uint8-3d", "uint8-1d", "int32", "int8", "int16", "float32", "float64"],
)
def test_idx_round_trip(tmp_path: Path, array: np.ndarray, compress: bool) -> None:
    path = write_idx(tmp_path / "data-idx", array, compress)
    out = read_idx(path)
    assert tuple(out.shape) == array.shape
    assert out.dtype == torch.from_numpy(array).dtype
    assert np.array_equal(out.numpy(), array)


def test_idx_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere-idx1-ubyte"):
        read_idx(tmp_path / "nowhere-idx1-ubyte")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "magic number is empty"),
        (b"\x50\x4b\x03\x04rest", "magic number is 50 4b 03 04"),
        (bytes([0, 0, 0x42, 1]) + struct.pack(">i", 1) + b"\x00", "not an IDX file"),
        (bytes([0, 0, 0x08, 3]) + struct.pack(">i", 2), "truncated inside its header"),
        (bytes([0, 0, 0x08, 1]) + struct.pack(">i", 5) + b"\x01\x02", "has 2 data bytes"),
        (b"\x1f\x8bnot really gzip", "looks gzipped"),
        (_corrupt_gzip(), "looks gzipped"),
    ],
    ids=["empty", "zip-magic", "bad-type", "short-header", "short-data", "bad-gzip", "bad-deflate"],
)
def test_idx_bad_file_errors_name_the_file(tmp_path: Path, payload: bytes, match: str) -> None:
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(IDXFormatError, match=match) as info:
        read_idx(path)
    assert "broken-idx3-ubyte" in str(info.value) and isinstance(info.value, DataError)


def _fake_mnist(folder: Path, n: int, prefix: str, compress: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0] = 255
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    return images, labels


def test_mnist_folder_reads_both_splits(tmp_path: Path) -> None:
    train_x, train_y = _fake_mnist(tmp_path, 5, "train", compress=True)
    assert train_x[0, 0, 0] == 255
    raw = tmp_path / "MNIST" / "raw"  # torchvision's layout is found too
    raw.mkdir(parents=True)
    test_x, test_y = _fake_mnist(raw, 3, "t10k", compress=False)
    train, test = MNISTFolder(tmp_path, "train"), MNISTFolder(tmp_path, split="test")
    assert len(train) == 5 and len(test) == 3
    assert train.images.shape == (5, 1, 28, 28) and train.images.dtype == torch.float32
    assert train.images[0, 0, 0, 0] == 1.0 and train.images.min() >= 0
    assert torch.allclose(train.images[:, 0] * 255, torch.from_numpy(train_x).float())
    assert torch.allclose(test.images[:, 0] * 255, torch.from_numpy(test_x).float())
    assert torch.equal(train.labels, torch.from_numpy(train_y).long())
    image, label = test[2]
    assert image.shape == (1, 28, 28) and label.item() == int(test_y[2])
    assert len(train.as_split().dataset()) == 5


def test_mnist_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte") as info:
        MNISTFolder(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(ImageDataError, match="unknown split"):
        MNISTFolder(tmp_path, split="validation")
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(ImageDataError, match=r"expected \(N, H, W\) images and \(N,\) labels"):
        MNISTFolder(tmp_path)


def test_digits_splits() -> None:
    splits = load_digits_tensors(val_fraction=0.1, test_fraction=0.2, seed=0)
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sum(sizes) == 1797 and abs(sizes[1] - 180) <= 10 and abs(sizes[2] - 359) <= 10
    for part in (splits.train, splits.val, splits.test):
        assert part.images.shape[1:] == (1, 8, 8) and part.images.dtype == torch.float32
        assert part.images.min() == 0 and part.images.max() == 1
        share = torch.bincount(part.labels, minlength=10) / len(part)
        assert (share - 0.1).abs().max() < 0.02  # stratified: every class near 10%
    again = load_digits_tensors(seed=0)
    assert torch.equal(again.test.images, splits.test.images)
    other = load_digits_tensors(seed=1)
    assert not torch.equal(other.test.labels, splits.test.labels)


def test_stratified_split_is_a_partition() -> None:
    labels = torch.arange(100) % 7
    train, val, test = _stratified_split(labels, (0.2, 0.3), seed=3)
    assert torch.equal(torch.sort(torch.cat([train, val, test])).values, torch.arange(100))
    assert len(val) == pytest.approx(20, abs=4) and len(test) == pytest.approx(30, abs=4)


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.2), (0.5, 0.5), (0.1, 1.0)])
def test_digits_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ImageDataError, match="sum to less than 1"):
        load_digits_tensors(val_fraction=val, test_fraction=test)


def _pair(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    write_idx(folder / "train-images-idx3-ubyte", images)
    write_idx(folder / "train-labels-idx1-ubyte", labels)


def test_mnist_folder_scales_only_uint8(tmp_path: Path) -> None:
    """Float pixels already in [0, 1] used to be divided by 255 again, and signed int8 mapped
    to negative values; uint8 alone is scaled now, floats are kept, the rest refused."""
    labels = np.array([0, 9], dtype=np.uint8)
    floats = np.array([[[0.0, 0.25], [0.5, 1.0]]] * 2, dtype=np.float32)  # (2, 2, 2)
    _pair(tmp_path, floats, labels)
    assert torch.equal(MNISTFolder(tmp_path).images[:, 0], torch.from_numpy(floats))
    _pair(tmp_path, floats * 255, labels)
    with pytest.raises(ImageDataError) as info:
        MNISTFolder(tmp_path)
    assert str(info.value) == (
        f"{str(tmp_path / 'train-images-idx3-ubyte')!r} holds float pixels from 0 to 255; float "
        "pixels must lie in [0, 1] (they are not rescaled). Scale them to [0, 1], or store uint8 "
        "(0-255)."
    )
    _pair(tmp_path, np.full((2, 2, 2), -1, dtype=np.int8), labels)
    with pytest.raises(ImageDataError) as info:
        MNISTFolder(tmp_path)
    assert str(info.value) == (
        f"{str(tmp_path / 'train-images-idx3-ubyte')!r} holds torch.int8 pixels; MNISTFolder "
        "reads uint8 pixels (0-255, IDX type code 0x08, as MNIST) or float pixels in [0, 1] "
        "(0x0D, 0x0E). Convert the file to one of those."
    )
    _pair(tmp_path, floats, np.array([0, -3], dtype=np.int8))
    with pytest.raises(ImageDataError, match=r"holds a label -3; labels must be integers 0, 1,"):
        MNISTFolder(tmp_path)
    _pair(tmp_path, floats, np.array([0.0, 1.5], dtype=np.float32))
    with pytest.raises(ImageDataError, match=r"holds torch.float32 labels; labels must be"):
        MNISTFolder(tmp_path)
