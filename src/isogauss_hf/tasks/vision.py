"""Image-classification inputs through the checkpoint's own image processor, preprocessed once and cached.

The hub datasets (``timm/mini-imagenet``, ``ethz/food101``, ``uoft-cs/cifar10``, ...) decode ``image`` to
``PIL.Image`` objects. :func:`encode_images` hands a batch of them to a ``transformers`` image processor
(``AutoImageProcessor`` of the checkpoint, set to the recipe's size by :func:`sized_processor`) for its
resize / centre crop only, and keeps the result as uint8 pixels; :class:`PixelNormalizer` applies the same
processor's rescale and mean / std normalisation to a whole batch at once in the collator. The output equals
the processor's own (``processor(images)["pixel_values"]``, to float rounding; tested), but the slow part
(decoding, resizing) runs once per image as a batched, cached ``datasets`` ``map``, and an epoch reads
150 KB of uint8 per 224-pixel image instead of 600 KB of float32. Measured on 2 cores
(``scripts/measure_vision_preprocess.py``, ``results/vision_preprocess.md``): this is faster than running
the processor on the fly, with or without dataloader workers.

A processor whose resize output is not uint8 (none of the PIL processors; any other) is stored as its
finished float32 output instead (:func:`pixel_storage` decides on one probe image). The paper's 8-layer
network takes flat grayscale pixels in [0, 1]: :func:`flat_grayscale`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._common import require_columns

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PixelNormalizer",
    "encode_images",
    "flat_grayscale",
    "pixel_storage",
    "processed_features",
    "processor_size",
    "sized_processor",
    "to_pil_rgb",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def to_pil_rgb(image: Any) -> Any:
    """A PIL RGB image from a PIL image of any mode or a numpy array (HxW, HxWx1/3/4; uint8, or floats in [0, 1])."""
    from PIL import Image

    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        return image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"image must be HxW or HxWxC with 1, 3 or 4 channels, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        arr = np.clip(np.rint(arr * 255.0), 0, 255)
    return Image.fromarray(arr.astype(np.uint8)).convert("RGB")


def _sizes(processor: Any) -> tuple[dict, dict]:
    """The processor's ``size`` and (when it centre-crops) ``crop_size`` as plain dicts of the keys it sets."""
    size = {k: v for k, v in dict(getattr(processor, "size", None) or {}).items() if v is not None}
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    return size, {k: v for k, v in dict(crop or {}).items() if v is not None}


def processor_size(processor: Any) -> tuple[int, int] | None:
    """(height, width) the processor outputs, when its settings say it: the crop size when it centre-crops,
    else a height / width resize, else a ConvNeXT-style ``shortest_edge`` with ``crop_pct``; None otherwise."""
    size, crop = _sizes(processor)
    if "height" in crop and "width" in crop:
        return int(crop["height"]), int(crop["width"])
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size and getattr(processor, "crop_pct", None) is not None:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    return None


def sized_processor(processor: Any, size: int | None) -> Any:
    """The processor rebuilt (``from_dict``) to output ``size`` x ``size`` (None: the processor as it is).

    A processor that centre-crops keeps its resize / crop ratio (MobileNetV2: 256 -> 224 becomes 146 -> 128
    for size 128); a height / width resize becomes ``size``; ConvNeXT / ResNet processors (``crop_pct``) take
    ``size`` as their ``shortest_edge``. Anything else is refused (its output could not be batched).
    """
    if size is None or processor_size(processor) == (size, size):
        return processor
    resize, crop = _sizes(processor)
    if "height" in crop:
        ratio = size / float(crop["height"])
        changes = {"crop_size": {"height": size, "width": size},
                   "size": {k: max(size, int(round(v * ratio))) for k, v in resize.items()}}
    elif "height" in resize and "width" in resize:
        changes = {"size": {"height": size, "width": size}}
    elif "shortest_edge" in resize and getattr(processor, "crop_pct", None) is not None:
        changes = {"size": {"shortest_edge": size}}
    else:
        raise ValueError(f"{type(processor).__name__} with size {resize} and no centre crop does not give square "
                         f"images of one size; use a processor that resizes to height/width or crops")
    return type(processor).from_dict({**processor.to_dict(), **changes})


def _run_processor(processor: Any, images: list, finished: bool) -> np.ndarray:
    kwargs = {} if finished else {"do_rescale": False, "do_normalize": False}
    return np.asarray(processor(images=images, return_tensors="np", **kwargs)["pixel_values"])


def pixel_storage(processor: Any, probe: Any = None) -> str:
    """``"uint8"`` when the processor's resize / crop of an RGB image stays uint8 (rescale and normalisation are
    then applied per batch by :class:`PixelNormalizer`), else ``"float32"`` (its finished output is stored)."""
    image = to_pil_rgb(probe if probe is not None else np.zeros((40, 30, 3), np.uint8))
    return "uint8" if _run_processor(processor, [image], finished=False).dtype == np.uint8 else "float32"


def encode_images(examples: Mapping[str, Any], processor: Any, storage: str = "uint8", *, image_column: str = "image",
                  label_column: str = "label") -> dict[str, Any]:
    """Batched ``map`` function: ``{image, label}`` -> ``{pixel_values (N, 3, H, W), label}`` through ``processor``.

    ``storage`` ``"uint8"``: the processor resizes / crops only (its rescale and normalisation are left to
    :class:`PixelNormalizer`); ``"float32"``: the processor's finished output.
    """
    require_columns(examples, [image_column, label_column], "image-classification")
    images = [to_pil_rgb(image) for image in examples[image_column]]
    pixels = _run_processor(processor, images, finished=storage != "uint8")
    return {"pixel_values": pixels.astype(np.uint8 if storage == "uint8" else np.float32),
            label_column: list(examples[label_column])}


class PixelNormalizer:
    """The processor's rescale and mean / std normalisation, for a uint8 batch ``(N, C, H, W)`` at once."""

    def __init__(self, processor: Any) -> None:
        import torch

        scale = float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 1.0
        mean = np.asarray(getattr(processor, "image_mean", None) or (0.0,) * 3, dtype=np.float64)
        std = np.asarray(getattr(processor, "image_std", None) or (1.0,) * 3, dtype=np.float64)
        if not getattr(processor, "do_normalize", True):
            mean, std = np.zeros_like(mean), np.ones_like(std)
        # (x * scale - mean) / std = x * (scale / std) - mean / std
        self.scale = torch.tensor(scale / std, dtype=torch.float32).view(1, -1, 1, 1)
        self.shift = torch.tensor(mean / std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, pixels: Any) -> Any:
        import torch

        # in place on the fresh float copy: torch.addcmul with the broadcast shift first measured 6x slower
        return pixels.to(torch.float32).mul_(self.scale).sub_(self.shift)


def flat_grayscale(examples: Mapping[str, Any], side: int, *, image_column: str = "image",
                   label_column: str = "label") -> dict[str, Any]:
    """Batched ``map`` function for fully connected networks: images -> ``side*side`` grayscale floats in [0, 1]
    (PIL's luminance conversion; bilinear resize when the image is not ``side`` x ``side``)."""
    from PIL import Image

    require_columns(examples, [image_column, label_column], "image-classification")
    rows = []
    for image in examples[image_column]:
        gray = to_pil_rgb(image).convert("L") if not (hasattr(image, "mode") and image.mode == "L") else image
        if gray.size != (side, side):
            gray = gray.resize((side, side), Image.BILINEAR)
        rows.append((np.asarray(gray, dtype=np.float32) / 255.0).reshape(-1))
    return {"pixel_values": np.stack(rows), label_column: list(examples[label_column])}


def processed_features(storage: str, shape: Sequence[int], label_feature: Any) -> Any:
    """``datasets`` features of :func:`encode_images` output: a fixed-shape array column (fast to read back)."""
    import datasets

    return datasets.Features({"pixel_values": datasets.Array3D(tuple(shape), storage), "label": label_feature})
