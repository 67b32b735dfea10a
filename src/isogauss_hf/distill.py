"""Logit distillation from a teacher's logits (Hinton et al.'s softened targets), for ``--distill-temperature``.

A distilled run trains on ``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) ||
softmax(student / T))`` (:func:`kd_loss`). In ``isogauss-finetune`` the teacher is the dense run of the same
seed: its logits on the train split are computed once when it ends and stored beside it; each train row then
carries its teacher's logits in the column :data:`COLUMN`, which :class:`TeacherCollator` stacks beside the
padded batch and :func:`distilling` (a ``transformers.Trainer`` subclass factory) turns into the loss.
Evaluation batches carry no teacher logits and are scored as by the plain Trainer.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

__all__ = ["COLUMN", "kd_loss", "TeacherCollator", "distilling"]

COLUMN = "teacher_logits"


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """(1 - alpha) CE(student, labels) + alpha T^2 KL(softmax(teacher/T) || softmax(student/T)), batch mean."""
    ce = F.cross_entropy(student, labels)
    t = float(temperature)
    kl = F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True,
                  reduction="batchmean")
    return (1.0 - alpha) * ce + alpha * t * t * kl


class TeacherCollator:
    """Collates rows with ``collate`` (default: ``transformers.default_data_collator``) and stacks their teacher
    logits (column :data:`COLUMN`) as a float32 tensor beside; rows without the column are collated as they are."""

    def __init__(self, collate: Optional[Callable[[list[dict]], dict]] = None) -> None:
        if collate is None:
            from transformers import default_data_collator as collate
        self.collate = collate

    def __call__(self, rows: list[dict]) -> dict:
        if not rows or COLUMN not in rows[0]:
            return self.collate(rows)
        teacher = torch.tensor([r[COLUMN] for r in rows], dtype=torch.float32)
        batch = self.collate([{k: v for k, v in r.items() if k != COLUMN} for r in rows])
        batch[COLUMN] = teacher
        return batch


def distilling(trainer_cls: type, temperature: float, alpha: float) -> type:
    """A subclass of ``trainer_cls`` (a ``transformers.Trainer``) whose training loss is :func:`kd_loss` on the
    teacher logits its batches carry, and which keeps the :data:`COLUMN` column in its datasets."""

    class DistillingTrainer(trainer_cls):  # type: ignore[misc, valid-type]
        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if COLUMN not in self._signature_columns:
                self._signature_columns.append(COLUMN)

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if COLUMN not in inputs:  # evaluation: the task's own loss
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs = dict(inputs)
            teacher, labels = inputs.pop(COLUMN), inputs.pop("labels")
            out = model(**inputs)
            loss = kd_loss(out.logits, teacher.to(out.logits.dtype), labels, temperature, alpha)
            return (loss, out) if return_outputs else loss

    DistillingTrainer.__name__ = f"Distilling{trainer_cls.__name__}"
    return DistillingTrainer
