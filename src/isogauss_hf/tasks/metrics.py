"""Classification metric usable directly as ``Trainer(compute_metrics=...)``."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["accuracy", "compute_accuracy"]


def accuracy(predictions: Any, labels: Any) -> float:
    """Fraction of correct predictions; ``predictions`` are class ids or logits (argmax over the last axis)."""
    preds = np.asarray(predictions)
    refs = np.asarray(labels)
    if preds.ndim == refs.ndim + 1:
        preds = preds.argmax(axis=-1)
    if preds.shape != refs.shape:
        raise ValueError(f"accuracy: predictions shape {preds.shape} does not match labels shape {refs.shape}")
    mask = refs != -100  # ignore padded / masked positions
    if not mask.any():
        return 0.0
    return float((preds[mask] == refs[mask]).mean())


def compute_accuracy(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` for ``transformers.Trainer``: ``EvalPrediction`` or ``(logits, labels)`` -> ``{"accuracy": ...}``."""
    if hasattr(eval_pred, "predictions"):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
    else:
        logits, labels = eval_pred
    if isinstance(logits, tuple):
        logits = logits[0]  # models returning (logits, hidden_states, ...)
    return {"accuracy": accuracy(logits, labels)}
