"""How far fine-tuning moved each weight matrix's distribution (issue 11, point 3).

:func:`weight_drift` pairs the matrices of the model before and after a (dense) fine-tuning run by
module name and reports, per matrix, the Wasserstein-1 distance between the two empirical weight
distributions (absolute, and relative to the std before), the relative Frobenius change, and the
Eq. 2 fit metrics before and after (:func:`~isogauss_hf.analysis.fit.fit_metrics`). A Gaussian layer in
the model after (a Gaussian run) is compared through its seeded draw.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..errors import UsageError
from .fit import DEFAULT_MAX_ELEMENTS, fit_metrics, wasserstein_1d
from .matrices import dense_weight, iter_matrices, unwrap

__all__ = ["DRIFT_FIT_KEYS", "weight_drift", "drift_by_block"]

#: Fit metrics reported before and after (as ``before_<key>`` / ``after_<key>``).
DRIFT_FIT_KEYS = ("ks", "wasserstein", "kurtosis", "mean_share", "stable_rank", "weight_std")


def _after_weight(after: nn.Module, name: str, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    module_name, _, part = name.partition("[")
    try:
        module = after.get_submodule(module_name)
    except AttributeError:
        raise UsageError(f"the model after fine-tuning has no module {module_name!r} (is it the same architecture?)") \
            from None
    weight = dense_weight(module)
    if part:  # a fused slice: same position as in the model before
        splits = weight.shape[0] // shape[0]
        index = _slice_index(after, module_name, kind, splits)
        weight = weight[index * shape[0]:(index + 1) * shape[0]]
    if tuple(weight.shape) != tuple(shape):
        raise UsageError(f"{name}: shape {tuple(weight.shape)} after fine-tuning differs from {tuple(shape)} before")
    return weight


def _slice_index(model: nn.Module, module_name: str, kind: str, splits: int) -> int:
    from ..mapping import ARCHITECTURES

    spec = ARCHITECTURES.get(getattr(getattr(model, "config", None), "model_type", "") or "")
    if spec is not None:
        for path, parts in spec.fused.items():
            if module_name.endswith(path) and kind in parts:
                return parts.index(kind)
    raise UsageError(f"cannot tell which slice of {module_name!r} is {kind!r} ({splits} slices)")


def weight_drift(model_before: nn.Module, model_after: nn.Module, *, layers: Optional[Sequence[int]] = None,
                 targets: Optional[Sequence[str]] = None, max_elements: Optional[int] = DEFAULT_MAX_ELEMENTS,
                 seed: int = 0) -> list[dict[str, Any]]:
    """One row per matrix: Wasserstein-1 between its weight distribution before and after, and the fit metrics.

    Matrices are those :func:`~isogauss_hf.analysis.matrices.iter_matrices` selects in ``model_before``
    (``layers``: 1-based blocks, ``targets``: matrices per block); ``model_after`` must hold the same
    module names and shapes. Row keys: ``name, block, kind, shape, wasserstein, wasserstein_relative``
    (over the std of the weights before), ``frobenius_change`` (``||A - B||_F / ||B||_F``), and
    ``before_<m>`` / ``after_<m>`` for each of :data:`DRIFT_FIT_KEYS`.
    """
    after = unwrap(model_after)
    rows = []
    for ref in iter_matrices(model_before, layers=layers, targets=targets):
        before_w = ref.weight.to(torch.float32)
        after_w = _after_weight(after, ref.name, ref.kind, tuple(before_w.shape)).to(torch.float32).to(before_w.device)
        with torch.no_grad():
            fb = fit_metrics(before_w, max_elements=max_elements, seed=seed)
            fa = fit_metrics(after_w, max_elements=max_elements, seed=seed)
            a, b = before_w.reshape(-1), after_w.reshape(-1)
            if max_elements is not None and a.numel() > max_elements:
                g = torch.Generator().manual_seed(seed)
                idx = torch.randperm(a.numel(), generator=g)[:max_elements].to(a.device)
                a, b = a[idx], b[idx]
            w1 = wasserstein_1d(a, b)
            norm = float(before_w.norm())
            change = float((after_w - before_w).norm()) / norm if norm > 0 else float("nan")
        std = fb["weight_std"]
        row: dict[str, Any] = {"name": ref.name, "block": ref.block, "kind": ref.kind, "shape": list(before_w.shape),
                               "wasserstein": w1, "wasserstein_relative": w1 / std if std > 0 else float("nan"),
                               "frobenius_change": change}
        for key in DRIFT_FIT_KEYS:
            row[f"before_{key}"] = fb[key]
            row[f"after_{key}"] = fa[key]
        rows.append(row)
    return rows


def drift_by_block(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per block, the mean ``wasserstein``, ``wasserstein_relative`` and ``frobenius_change`` of its matrices."""
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("block") is not None:
            grouped.setdefault(row["block"], []).append(row)
    keys = ("wasserstein", "wasserstein_relative", "frobenius_change")
    return {b: {k: sum(r[k] for r in items) / len(items) for k in keys} for b, items in sorted(grouped.items())}
