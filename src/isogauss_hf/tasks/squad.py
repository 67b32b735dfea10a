"""SQuAD v1.1 extractive QA: span preprocessing, post-processing and the EM/F1 metric.

Follows the standard Hugging Face recipe (``run_qa.py`` / the course chapter):
question + context are tokenized with ``truncation="only_second"``,
``max_length=384``, ``stride=128`` and overflowing windows; training features
carry ``start_positions``/``end_positions`` (CLS index 0 when the answer is not
inside the window), validation features carry ``example_id`` and an
``offset_mapping`` restricted to context tokens. The metric is the official
SQuAD v1.1 script's normalization, exact match and token F1 (max over the gold
answers), re-implemented here so that no hub download is needed.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._common import require_columns

__all__ = [
    "SQUAD_COLUMNS",
    "exact_match_score",
    "f1_score",
    "normalize_answer",
    "postprocess_qa_predictions",
    "prepare_squad_train_features",
    "prepare_squad_validation_features",
    "squad_metrics",
]

SQUAD_COLUMNS: tuple[str, ...] = ("id", "title", "context", "question", "answers")


def _check_batch(examples: Mapping[str, Any], task: str) -> None:
    require_columns(examples, ["id", "context", "question", "answers"], task)


def _tokenize(examples: Mapping[str, Any], tokenizer: Any, max_length: int, stride: int) -> Any:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("squad: a fast tokenizer is required (offset mappings)")
    if tokenizer.padding_side != "right":
        raise ValueError("squad: the tokenizer must pad on the right (question first, context second)")
    questions = [q.lstrip() for q in examples["question"]]  # some SQuAD questions start with spaces
    return tokenizer(
        questions,
        examples["context"],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )


def prepare_squad_train_features(
    examples: Mapping[str, Any], tokenizer: Any, max_length: int = 384, stride: int = 128
) -> dict[str, Any]:
    """Batched ``map`` function: SQuAD examples -> training features with start/end token positions.

    Use with ``ds.map(partial(prepare_squad_train_features, tokenizer=tok), batched=True,
    remove_columns=ds.column_names)``. A window not containing the whole answer
    gets ``start_positions == end_positions == 0`` (the CLS token).
    """
    _check_batch(examples, "squad (train features)")
    enc = _tokenize(examples, tokenizer, max_length, stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets_all = enc.pop("offset_mapping")
    starts, ends = [], []
    for i, offsets in enumerate(offsets_all):
        answers = examples["answers"][sample_map[i]]
        if not answers["answer_start"]:
            starts.append(0)
            ends.append(0)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        seq_ids = enc.sequence_ids(i)
        ctx_start = seq_ids.index(1)
        ctx_end = len(seq_ids) - 1 - seq_ids[::-1].index(1)
        if offsets[ctx_start][0] > start_char or offsets[ctx_end][1] < end_char:
            starts.append(0)
            ends.append(0)
            continue
        idx = ctx_start
        while idx <= ctx_end and offsets[idx][0] <= start_char:
            idx += 1
        starts.append(idx - 1)
        idx = ctx_end
        while idx >= ctx_start and offsets[idx][1] >= end_char:
            idx -= 1
        ends.append(idx + 1)
    enc["start_positions"] = starts
    enc["end_positions"] = ends
    return dict(enc)


def prepare_squad_validation_features(
    examples: Mapping[str, Any], tokenizer: Any, max_length: int = 384, stride: int = 128
) -> dict[str, Any]:
    """Batched ``map`` function: SQuAD examples -> evaluation features.

    Each feature keeps ``example_id`` (the example's ``id``) and an
    ``offset_mapping`` in which non-context tokens are ``None``, as
    :func:`postprocess_qa_predictions` expects.
    """
    _check_batch(examples, "squad (validation features)")
    enc = _tokenize(examples, tokenizer, max_length, stride)
    sample_map = enc.pop("overflow_to_sample_mapping")
    example_ids, offset_mapping = [], []
    for i in range(len(enc["input_ids"])):
        seq_ids = enc.sequence_ids(i)
        example_ids.append(examples["id"][sample_map[i]])
        offset_mapping.append([o if seq_ids[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])])
    enc["example_id"] = example_ids
    enc["offset_mapping"] = offset_mapping
    return dict(enc)


def postprocess_qa_predictions(
    examples: Any,
    features: Any,
    start_logits: Any,
    end_logits: Any,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """Turn per-feature start/end logits into one answer string per example id.

    Args:
        examples: the raw examples (``id``, ``context``), a ``Dataset`` or list of dicts.
        features: the validation features (``example_id``, ``offset_mapping``), in logit order.
        start_logits, end_logits: arrays of shape ``(num_features, seq_len)``.
        n_best_size: how many top start and end indices to combine.
        max_answer_length: longest span allowed, in tokens.

    Returns:
        ``{example_id: predicted_text}`` (empty string if no valid span exists).
    """
    start_logits = np.asarray(start_logits)
    end_logits = np.asarray(end_logits)
    if start_logits.shape[0] != len(features) or end_logits.shape[0] != len(features):
        raise ValueError(
            f"squad: got {start_logits.shape[0]}/{end_logits.shape[0]} logit rows for {len(features)} features"
        )
    feats_per_example: dict[Any, list[int]] = collections.defaultdict(list)
    feature_ids = features["example_id"] if hasattr(features, "column_names") else [f["example_id"] for f in features]
    for idx, example_id in enumerate(feature_ids):
        feats_per_example[example_id].append(idx)
    predictions: dict[str, str] = {}
    for example in examples:
        context = example["context"]
        best_text, best_score = "", -np.inf
        for fidx in feats_per_example.get(example["id"], []):
            offsets = features[fidx]["offset_mapping"]
            s_logits, e_logits = start_logits[fidx], end_logits[fidx]
            start_idx = np.argsort(s_logits)[-1 : -n_best_size - 1 : -1]
            end_idx = np.argsort(e_logits)[-1 : -n_best_size - 1 : -1]
            for s in start_idx:
                for e in end_idx:
                    if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    score = s_logits[s] + e_logits[e]
                    if score > best_score:
                        best_score = score
                        best_text = context[offsets[s][0] : offsets[e][1]]
        predictions[example["id"]] = best_text
    return predictions


def normalize_answer(text: str) -> str:
    """Official SQuAD v1.1 normalization: lower case, drop punctuation and articles, squeeze whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 if the normalized strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-level F1 between the normalized prediction and ground truth (SQuAD v1.1)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str], references: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """SQuAD v1.1 ``exact_match`` and ``f1`` in percent (max over gold answers, mean over questions).

    Args:
        predictions: ``{id: predicted_text}`` (as from :func:`postprocess_qa_predictions`).
        references: examples with ``id`` and ``answers`` (``{"text": [...], ...}``).
    """
    if not references:
        raise ValueError("squad: no references")
    em_total = f1_total = 0.0
    for ref in references:
        golds = list(ref["answers"]["text"])
        if ref["id"] not in predictions:
            raise ValueError(f"squad: no prediction for question id {ref['id']!r}")
        pred = predictions[ref["id"]]
        if not golds:
            golds = [""]
        em_total += max(exact_match_score(pred, g) for g in golds)
        f1_total += max(f1_score(pred, g) for g in golds)
    n = len(references)
    return {"exact_match": 100.0 * em_total / n, "f1": 100.0 * f1_total / n}
