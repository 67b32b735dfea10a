"""The image processor of a run: the checkpoint's own ``AutoImageProcessor``, set to the recipe's ``image_size``.

:func:`image_processor_for` loads the checkpoint's processor (local directory, Hub or its cache), else one of
:data:`KNOWN_IMAGE_PROCESSORS` (hub checkpoints, for ``--dry-run`` offline), else a plain resize and
normalisation with the model config's mean / std or 0.5; :func:`describe_images` is its line in the plan.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..recipes import Recipe
from .data import hub_available

__all__ = ["KNOWN_IMAGE_PROCESSORS", "image_processor_for", "describe_images"]

_IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
_HALF = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
#: The image processors of known hub checkpoints (class name, settings as in their preprocessor_config.json), used
#: when neither the Hub nor its local cache has the checkpoint (``--dry-run`` offline).
KNOWN_IMAGE_PROCESSORS: dict[str, tuple[str, dict[str, Any]]] = {
    "microsoft/resnet-18": ("ConvNextImageProcessor", {"size": {"shortest_edge": 224}, "crop_pct": 0.875,
                                                       "resample": 3, **_IMAGENET}),
    "google/mobilenet_v2_1.0_224": ("MobileNetV2ImageProcessor", {
        "size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}, "do_center_crop": True,
        "resample": 2, **_HALF}),
    "google/vit-base-patch16-224-in21k": ("ViTImageProcessor", {"size": {"height": 224, "width": 224}, "resample": 2,
                                                                **_HALF}),
    "google/vit-base-patch16-224": ("ViTImageProcessor", {"size": {"height": 224, "width": 224}, "resample": 2,
                                                          **_HALF}),
}



def _checkpoint_processor(source: Any) -> tuple[Any, str]:
    """The checkpoint's own image processor, a known one, or (None, '')."""
    if source.kind not in ("local", "hub"):
        return None, ""
    import transformers

    hub_ok = source.kind == "local" or hub_available()
    try:
        return (transformers.AutoImageProcessor.from_pretrained(source.location, local_files_only=not hub_ok),
                f"the image processor of {source.location}")
    except (OSError, ValueError):
        pass
    if source.location in KNOWN_IMAGE_PROCESSORS:
        name, settings = KNOWN_IMAGE_PROCESSORS[source.location]
        return getattr(transformers, name)(**settings), f"the known image processor of {source.location}"
    return None, ""


def image_processor_for(recipe: Recipe, source: Any, config: Any = None) -> tuple[Any, str]:
    """``(processor, where)``: the image processor images go through, set to ``recipe.image_size``.

    The checkpoint's ``AutoImageProcessor`` when it can be loaded (local directory, Hub or its cache), else
    :data:`KNOWN_IMAGE_PROCESSORS`, else (from-scratch models, checkpoints without one) a plain resize to the
    image size with the model config's ``image_mean`` / ``image_std`` or 0.5 / 0.5.
    """
    from ..tasks.vision import sized_processor

    processor, where = _checkpoint_processor(source)
    if processor is None:
        import transformers

        ViTImageProcessor = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)

        size = recipe.image_size or getattr(config, "image_size", None) or 224
        mean, std = getattr(config, "image_mean", None), getattr(config, "image_std", None)
        stats = {"image_mean": list(mean), "image_std": list(std)} if mean is not None and std is not None else _HALF
        processor = ViTImageProcessor(size={"height": size, "width": size}, **stats)
        where = "a plain resize and normalisation (" + ("the model config's mean / std" if stats is not _HALF
                                                         else "mean / std 0.5, no image processor") + ")"
    try:
        return sized_processor(processor, recipe.image_size), where
    except ValueError as e:
        raise UsageError(f"image_size {recipe.image_size}: {e}") from None


def describe_images(recipe: Recipe, source: Any, config: Any) -> str:
    """One line of the plan: how images become the model's input."""
    if getattr(config, "model_type", None) == "isogauss-ffn8":
        side = int(round(config.input_size ** 0.5))
        return f"flat grayscale pixels in [0, 1], {side}x{side} (the 8-layer network's input)"
    from ..tasks.vision import processor_size

    processor, where = image_processor_for(recipe, source, config)
    height, width = processor_size(processor) or ("?", "?")
    mean = tuple(round(float(m), 3) for m in processor.image_mean)
    std = tuple(round(float(x), 3) for x in processor.image_std)
    return (f"{type(processor).__name__} -> {height}x{width}, mean {mean}, std {std} ({where}); preprocessed once "
            f"and cached as uint8")
