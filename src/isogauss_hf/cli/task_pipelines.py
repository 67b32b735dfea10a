"""The per-task pieces of a fine-tuning run: preprocessing, collator, metrics and the final evaluation.

Training itself is ``transformers.Trainer`` with :class:`~isogauss_hf.IsoGaussCallback`; a
:class:`TaskPipeline` only prepares what the Trainer is given and evaluates with the task's metric
(accuracy; SQuAD exact match / F1 with the standard span post-processing; ROUGE-1 / ROUGE-L / BLEU
on generated text). :func:`make_pipeline` picks the one of a recipe's task.

Classification pipelines evaluate with ``trainer.predict`` and keep, in ``pipeline.accuracy``, the accuracy
with its Wilson 95 % interval over the test examples and the test split's majority-class rate
(:func:`isogauss_hf.evaluation.accuracy_summary`); the other tasks leave it ``None``.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Optional

import numpy as np
import torch

from ..errors import UsageError

__all__ = ["TaskPipeline", "TextClassification", "ImageClassification", "QuestionAnswering", "Summarization",
           "make_pipeline"]


class TaskPipeline:
    """What the Trainer needs for one task, and the task's final evaluation."""

    remove_unused_columns = True

    def __init__(self, recipe: Any, tokenizer: Any, model_config: Any) -> None:
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.model_config = model_config
        self.accuracy: Any = None  # the last evaluation's accuracy summary (classification), a dict

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
        name = key.split("_", 1)[1] if key.startswith(("eval_", "test_")) else key
        if name in ("runtime", "samples_per_second", "steps_per_second", "epoch"):
            continue
        out[name] = float(value)
    return out


class _Classification(TaskPipeline):
    def evaluate(self, trainer: Any, model: Any, raw_test: Any, test: Any) -> dict[str, float]:
        from ..evaluation import accuracy_summary

        output = trainer.predict(test)
        logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        summary = accuracy_summary(np.asarray(logits).argmax(-1), np.asarray(output.label_ids))
        self.accuracy = summary.to_dict()
        metrics = _clean_metrics(output.metrics)
        metrics["accuracy"] = summary.accuracy
        return metrics

    def compute_metrics(self):
        from ..tasks import compute_accuracy

        return compute_accuracy


class TextClassification(_Classification):
    def prepare(self, data):
        from ..tasks import tokenize_classification

        pair = "text_pair" if "text_pair" in data["train"].column_names else None
        tokenized = tokenize_classification(data, self.tokenizer, max_length=self.recipe.max_length,
                                            text_pair_column=pair)
        return tokenized["train"], tokenized["test"]

    def collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer)


def _map_processes(rows: int) -> Optional[int]:
    """Processes of the one-off image preprocessing ``map``: all cores (at most 8) for large splits."""
    return min(os.cpu_count() or 1, 8) if rows >= 4096 and (os.cpu_count() or 1) > 1 else None


class ImageClassification(_Classification):
    """Images go through the checkpoint's image processor once (a batched, cached ``datasets.map`` storing uint8
    pixels, :mod:`isogauss_hf.tasks.vision`); the collator normalises each batch as the processor would."""

    remove_unused_columns = False  # the collator picks pixel_values and label itself
    image_processor: Any = None  # (processor, where) from pipelines.image_processor_for
    normalizer: Any = None  # tasks.vision.PixelNormalizer when pixels are stored as uint8
    storage: str = "float32"  # dtype of the stored pixel_values

    def _target_shape(self) -> tuple[int, ...]:
        cfg = self.model_config
        if getattr(cfg, "model_type", None) == "isogauss-ffn8":
            return (cfg.input_size,)
        size = self.recipe.image_size or getattr(cfg, "image_size", 224)
        return (getattr(cfg, "num_channels", 3), size, size)

    def _encoder(self, train: Any) -> tuple[Any, Any]:
        """The batched map function and its output features for this model's input."""
        import datasets

        from ..tasks.vision import (PixelNormalizer, encode_images, flat_grayscale, pixel_storage,
                                    processed_features)

        label = train.features["label"]
        shape = self._target_shape()
        if len(shape) == 1:  # flat grayscale input (the 8-layer network on MNIST)
            from ..tasks._common import flat_float_feature

            side = int(round(shape[0] ** 0.5))
            features = datasets.Features({"pixel_values": flat_float_feature(shape[0]), "label": label})
            self.storage = "float32"
            return partial(flat_grayscale, side=side), features
        if self.image_processor is None:
            raise UsageError("image-classification: no image processor was set for the image column")
        processor = self.image_processor[0]
        probe = train[0]["image"]
        storage = self.storage = pixel_storage(processor, probe)
        out = encode_images({"image": [probe], "label": [0]}, processor, storage)["pixel_values"]
        self.normalizer = PixelNormalizer(processor) if storage == "uint8" else None
        return partial(encode_images, processor=processor, storage=storage), processed_features(
            storage, out.shape[1:], label)

    def prepare(self, data):
        if "image" not in data["train"].column_names:  # pixel_values already (offline MNIST / Fashion-MNIST)
            return data["train"], data["test"]
        encode, features = self._encoder(data["train"])
        prepared = []
        for split in ("train", "test"):
            ds = data[split]
            prepared.append(ds.map(encode, batched=True, batch_size=64, remove_columns=ds.column_names,
                                   features=features, num_proc=_map_processes(len(ds)),
                                   desc=f"preprocess {split} images"))
        # numpy rows of the stored dtype (the default numpy format widens uint8 to int64: 8x the bytes per batch)
        prepared = [ds.with_format("numpy", columns=["pixel_values"], output_all_columns=True,
                                   dtype=np.dtype(self.storage)) for ds in prepared]
        return prepared[0], prepared[1]

    def collator(self):
        shape = self._target_shape()
        normalizer = self.normalizer

        def collate(features):
            pixels = torch.as_tensor(np.stack([np.asarray(f["pixel_values"]) for f in features]))
            pixels = normalizer(pixels) if normalizer is not None else pixels.to(torch.float32)
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

    def generation_config(self) -> Any:
        """The recipe's decoding (``generation:``: beams, sampling, ...; greedy when empty) for ``model.generate``."""
        from transformers import GenerationConfig

        tok = self.tokenizer
        return GenerationConfig(**self.recipe.generation, max_new_tokens=self.recipe.max_new_tokens,
                                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

    def generate(self, model, dialogues: list[str]) -> list[str]:
        """Summaries of ``dialogues`` by ``model.generate`` on left-padded batches (Gaussian layers in eval mode,
        one weight draw per call); the prompt's dialogue is cut to fit ``max_length - max_new_tokens``."""
        from tqdm.auto import tqdm
        from transformers import set_seed

        from ..tasks import extract_generated_summary

        tok = self.tokenizer
        device = next(model.parameters()).device
        batch_size = self.recipe.eval_batch_size or self.recipe.batch_size
        config = self.generation_config()
        if config.do_sample:  # sampling draws from the global RNG: seed it for the same summaries every run
            set_seed(self.recipe.seed)
        model.eval()
        outputs: list[str] = []
        side, tok.padding_side = tok.padding_side, "left"  # a decoder continues after the last real token
        try:
            for start in tqdm(range(0, len(dialogues), batch_size), desc="generate", unit="batch"):
                prompts = [self._prompt_ids(d) for d in dialogues[start:start + batch_size]]
                batch = tok.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(device)
                with torch.no_grad():
                    generated = model.generate(**batch, generation_config=config)
                texts = tok.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=False)
                outputs += [extract_generated_summary(text, tok.eos_token) for text in texts]
        finally:
            tok.padding_side = side
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


def make_pipeline(recipe: Any, tokenizer: Any, model_config: Any) -> TaskPipeline:
    """The pipeline of ``recipe.task``."""
    return _PIPELINES[recipe.task](recipe, tokenizer, model_config)
