"""Image-classification preprocessing (mini-ImageNet, Food-101, ...): ``image`` + ``label`` -> ``pixel_values``.

The hub datasets (``timm/mini-imagenet``, ``ethz/food101``) decode ``image`` to
``PIL.Image`` objects. :func:`preprocess_images` resizes and normalizes them
either with a ``transformers`` image processor passed in (e.g.
``ViTImageProcessorPil``; the torchvision-backed processors need torchvision,
which this project does not require) or, when none is given, with a small
numpy implementation (bilinear resize, rescale to [0, 1], mean/std
normalization, channels-first). Numpy arrays (HxW, HxWx1/3/4, uint8 or float in
[0, 1]) are accepted as well as PIL images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._common import require_columns

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "make_image_transform",
    "preprocess_images",
    "resize_bilinear",
    "to_rgb_array",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def to_rgb_array(image: Any) -> np.ndarray:
    """Convert a PIL image or numpy array to a float32 HxWx3 array with values in [0, 1]."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        arr = np.asarray(image.convert("RGB"))
    else:
        arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"image must be HxW or HxWxC, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] != 3:
        raise ValueError(f"image must have 1, 3 or 4 channels, got {arr.shape[2]}")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / 255.0
    return arr.astype(np.float32)


def _box_reduce(image: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """Average non-overlapping ``fy`` x ``fx`` blocks (edge rows/columns that do not fill a block are dropped)."""
    h, w = (image.shape[0] // fy) * fy, (image.shape[1] // fx) * fx
    blocks = image[:h, :w].reshape(h // fy, fy, w // fx, fx, image.shape[2])
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an HxWxC float array (half-pixel centres, like PIL/torch ``align_corners=False``).

    When shrinking by 2x or more, the image is first box-filtered by the integer
    factor, a cheap anti-aliasing step.
    """
    image = np.asarray(image, dtype=np.float32)
    fy, fx = max(1, image.shape[0] // height), max(1, image.shape[1] // width)
    if fy > 1 or fx > 1:
        image = _box_reduce(image, fy, fx)
    in_h, in_w = image.shape[:2]
    if (in_h, in_w) == (height, width):
        return image

    def coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        x = np.clip(x, 0, n_in - 1)
        lo = np.floor(x).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (x - lo).astype(np.float32)

    y0, y1, wy = coords(height, in_h)
    x0, x1, wx = coords(width, in_w)
    top = image[y0][:, x0] * (1 - wx)[None, :, None] + image[y0][:, x1] * wx[None, :, None]
    bottom = image[y1][:, x0] * (1 - wx)[None, :, None] + image[y1][:, x1] * wx[None, :, None]
    return (top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]).astype(np.float32)


def _size_hw(size: int | Sequence[int] | Mapping[str, int]) -> tuple[int, int]:
    if isinstance(size, Mapping):
        return int(size["height"]), int(size["width"])
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def preprocess_images(
    examples: Mapping[str, Any],
    image_processor: Any | None = None,
    *,
    size: int | Sequence[int] | Mapping[str, int] = 224,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    image_column: str = "image",
    label_column: str = "label",
) -> dict[str, Any]:
    """Batched preprocessing: ``{image: [...], label: [...]}`` -> ``{pixel_values: [3xHxW float32], label: [...]}``.

    Args:
        examples: a batch (dict of lists) with ``image_column`` and ``label_column``.
        image_processor: a ``transformers`` image processor; when given it does the
            resize/normalization (``size``/``image_mean``/``image_std`` are then ignored).
        size: output size for the numpy path (int, (height, width) or {"height", "width"}).
        image_mean, image_std: per-channel normalization for the numpy path.
    """
    require_columns(examples, [image_column, label_column], "image-classification")
    raw = list(examples[image_column])
    if image_processor is not None:
        if all(hasattr(img, "convert") and hasattr(img, "size") for img in raw):  # PIL: let the processor rescale
            out = image_processor(images=[img.convert("RGB") for img in raw], return_tensors="np")
        else:  # arrays: hand over [0, 1] floats
            out = image_processor(images=[to_rgb_array(img) for img in raw], return_tensors="np", do_rescale=False)
        pixel_values = [np.asarray(p, dtype=np.float32) for p in out["pixel_values"]]
    else:
        images = [to_rgb_array(img) for img in raw]
        height, width = _size_hw(size)
        mean = np.asarray(image_mean, dtype=np.float32)
        std = np.asarray(image_std, dtype=np.float32)
        pixel_values = [
            np.ascontiguousarray(((resize_bilinear(img, height, width) - mean) / std).transpose(2, 0, 1))
            for img in images
        ]
    return {"pixel_values": pixel_values, label_column: list(examples[label_column])}


def make_image_transform(image_processor: Any | None = None, **kwargs: Any) -> Callable[[Mapping[str, Any]], dict]:
    """A function for ``dataset.set_transform`` / ``with_transform`` applying :func:`preprocess_images` on the fly."""

    def transform(batch: Mapping[str, Any]) -> dict[str, Any]:
        return preprocess_images(batch, image_processor, **kwargs)

    return transform
