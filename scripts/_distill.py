"""Logit distillation for the MiniLM experiments (an attempt of issue 10 point 6, beyond the paper).

A variant with ``+kd=T`` is fine-tuned on ``(1 - alpha) * cross-entropy + alpha * T^2 * KL(teacher_T || student_T)``
(Hinton et al.'s softened targets, ``alpha`` = :data:`ALPHA`), the teacher being the *dense* model fine-tuned
with the same seed and budget — the ``dense`` run of the table. Its logits on the training split are computed
once per (dataset, seed, budget) and cached (``ISOGAUSS_TEACHER_CACHE``, default ``/tmp/isogauss-teachers``).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable

import torch
import torch.nn.functional as F
from transformers import Trainer

ALPHA = 0.5  #: weight of the distillation term (not tuned: one value for every variant)
COLUMN = "teacher_logits"


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float = ALPHA) -> torch.Tensor:
    """(1 - alpha) CE(student, labels) + alpha T^2 KL(softmax(teacher/T) || softmax(student/T)), batch mean."""
    ce = F.cross_entropy(student, labels)
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True,
                  reduction="batchmean")
    return (1.0 - alpha) * ce + alpha * t * t * kl


class KDTrainer(Trainer):
    """``Trainer`` whose batches carry the teacher's logits (column :data:`COLUMN`)."""

    def __init__(self, *args, temperature: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.temperature = temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher = inputs.pop(COLUMN)
        labels = inputs.pop("labels")
        out = model(**inputs)
        loss = kd_loss(out.logits, teacher.to(out.logits.dtype), labels, self.temperature)
        return (loss, out) if return_outputs else loss


def collator(pad: Callable[[list[dict]], dict]) -> Callable[[list[dict]], dict]:
    """Pads the token columns with ``pad`` and stacks the teacher's logits beside them."""
    def collate(rows: list[dict]) -> dict:
        teacher = torch.tensor([r[COLUMN] for r in rows], dtype=torch.float32)
        batch = pad([{k: v for k, v in r.items() if k != COLUMN} for r in rows])
        batch[COLUMN] = teacher
        return batch
    return collate


def cache_path(data, seed: int, budget: Any) -> str:
    settings = json.dumps({"dataset": data.name, "seed": seed, "budget": budget.__dict__,
                           "train": len(data.train)}, sort_keys=True)
    tag = hashlib.sha256(settings.encode()).hexdigest()[:12]
    root = os.environ.get("ISOGAUSS_TEACHER_CACHE", os.path.join("/tmp", "isogauss-teachers"))
    return os.path.join(root, f"{data.name}-seed{seed}-{tag}.pt")


def cached(path: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The teacher entry (``{"logits": [...], "accuracy": ...}``) stored at ``path``, or ``compute()`` stored there
    first (written atomically, so an interrupted run leaves no partial entry)."""
    if os.path.exists(path):
        return torch.load(path)
    entry = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(entry, tmp)
    os.replace(tmp, path)
    return entry
