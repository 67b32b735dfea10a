"""What the block scan measures with: calibration batches, and (optionally) a probe of the task head.

:func:`make_calibration_batches` turns a prepared (tokenized) train split into a fixed list of collated
batches: a seeded subset, sorted by length so little padding is computed, keeping only the columns the
model's ``forward`` takes (and the labels).

:class:`HeadProbe`: a pretrained encoder loaded for classification gets a new, random head, so the task
loss of the dense model is about ``log(classes)`` whatever the blocks do. The probe captures the head's
input on the scan's dense pass, fits the head as a multinomial logistic regression on those features
(L-BFGS, L2), puts the fitted weights in for the scan and restores the original ones afterwards: the
losses then measure what a trained head can still read. No extra forward pass is needed.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["make_calibration_batches", "model_input_names", "HeadProbe", "find_classification_head"]

_LABEL_KEYS = ("label", "labels", "label_ids", "start_positions", "end_positions")
_HEAD_NAMES = ("classifier", "classifier.out_proj", "score", "head", "classification_head.out_proj")


def model_input_names(model: nn.Module) -> Optional[set[str]]:
    """Parameter names of ``model.forward`` (None when it takes ``**kwargs`` only or has no signature)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return None
    names = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names or None


def make_calibration_batches(dataset: Any, collate_fn: Optional[Callable] = None, *, num_samples: int = 128,
                             batch_size: int = 16, seed: int = 0, model: Optional[nn.Module] = None) -> list[dict]:
    """A list of collated batches from ``num_samples`` rows of ``dataset`` (seeded choice, sorted by length).

    ``dataset`` is a ``datasets.Dataset`` (or any sequence of dict rows) already prepared for the model
    (tokenized, with labels); ``collate_fn`` defaults to ``transformers.default_data_collator``. With
    ``model`` given, columns its ``forward`` does not take are dropped (labels are kept).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if collate_fn is None:
        from transformers import default_data_collator as collate_fn
    total = len(dataset)
    if total == 0:
        raise ValueError("the calibration dataset is empty")
    g = torch.Generator().manual_seed(seed)
    picked = torch.randperm(total, generator=g)[:min(num_samples, total)].tolist()
    rows = [dataset[i] for i in picked]
    keep = model_input_names(model) if model is not None else None
    if keep is not None:
        rows = [{k: v for k, v in r.items() if k in keep or k in _LABEL_KEYS} for r in rows]
    if rows and "input_ids" in rows[0]:
        rows.sort(key=lambda r: len(r["input_ids"]))
    return [collate_fn(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]


def find_classification_head(model: nn.Module) -> Optional[tuple[str, nn.Linear]]:
    """The final ``nn.Linear`` of a sequence/image classification head (``num_labels`` outputs), if any."""
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    modules = dict(model.named_modules())
    for name in _HEAD_NAMES:
        module = modules.get(name)
        if isinstance(module, nn.Linear) and (num_labels is None or module.out_features == num_labels):
            return name, module
    return None


class HeadProbe:
    """Capture the head's inputs on the dense pass, fit the head on them, restore it afterwards."""

    def __init__(self, model: nn.Module, l2: float = 1e-3, max_iter: int = 200) -> None:
        found = find_classification_head(model)
        self.name, self.head = found if found is not None else (None, None)
        self.l2, self.max_iter = l2, max_iter
        self.features: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.status = "kept (no classification head found)" if self.head is None else "pending"
        self._saved: Optional[tuple[torch.Tensor, Optional[torch.Tensor]]] = None
        self._handle = None

    @property
    def usable(self) -> bool:
        return self.head is not None

    def attach(self) -> None:
        if self.head is not None:
            self._handle = self.head.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            self.features.append(args[0].detach().to(torch.float32).cpu())

    def add_labels(self, batch: dict) -> None:
        labels = batch.get("labels", batch.get("label"))
        if isinstance(labels, torch.Tensor):
            self.labels.append(labels.detach().cpu())

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def fit(self) -> Optional[float]:
        """Fit and install the head; the dense mean cross-entropy with it (None if the probe does not apply)."""
        self.detach()
        if self.head is None:
            return None
        if not self.features or len(self.features) != len(self.labels):
            self.status = "kept (no labels seen with the head input)"
            return None
        x = torch.cat(self.features)
        y = torch.cat(self.labels)
        if x.dim() != 2 or y.dim() != 1 or y.dtype not in (torch.int64, torch.int32) or x.shape[0] != y.shape[0]:
            self.status = "kept (the head input is not one vector per labelled example)"
            return None
        y = y.long()
        classes = self.head.out_features
        weight = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
        x64 = x.to(torch.float64)
        opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(x64 @ weight.t() + bias, y) + 0.5 * self.l2 * weight.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        head = self.head
        self._saved = (head.weight.detach().clone(), None if head.bias is None else head.bias.detach().clone())
        with torch.no_grad():
            head.weight.copy_(weight.detach().to(head.weight.dtype))
            if head.bias is not None:
                head.bias.copy_(bias.detach().to(head.bias.dtype))
            logits = x.to(head.weight.device, head.weight.dtype) @ head.weight.t()
            if head.bias is not None:
                logits = logits + head.bias
            dense = float(F.cross_entropy(logits.float(), y.to(logits.device)))
        self.status = f"probe ({self.name} fitted on {x.shape[0]} calibration examples, L2 {self.l2:g})"
        self.features, self.labels = [], []
        return dense

    def restore(self) -> None:
        self.detach()
        if self._saved is not None and self.head is not None:
            with torch.no_grad():
                self.head.weight.copy_(self._saved[0])
                if self._saved[1] is not None:
                    self.head.bias.copy_(self._saved[1])
            self._saved = None


def batch_size_of(batch: dict) -> int:
    """Examples in a collated batch (the labels' length, else the first tensor's first dimension)."""
    for key in ("labels", "label"):
        value = batch.get(key)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def sequence_of_batches(batches: Optional[Sequence[dict]]) -> list[dict]:
    """``batches`` as a list (an iterator is consumed once), checking it holds dict batches."""
    out = list(batches or [])
    bad = [type(b).__name__ for b in out if not isinstance(b, Mapping)]
    if bad:
        raise ValueError(f"calibration batches must be dicts of tensors (collated), got {bad[0]}")
    return [dict(b) for b in out]
