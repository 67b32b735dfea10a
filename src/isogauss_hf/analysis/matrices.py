"""The fully connected matrices of a model, one by one, and their Eq. 2 fit metrics.

:func:`iter_matrices` walks the modules that ``IsoGaussConfig(layers=..., target_modules=...)`` selects
(:func:`isogauss_hf.mapping.resolve_targets`: the six matrices of each block of a mapped architecture, or
any ``nn.Linear`` / ``Conv1D`` matched by regular expressions) and yields each weight as an (out, in)
matrix: a transformers ``Conv1D`` (stored (in, out)) is transposed, and a fused projection (GPT-2
``c_attn``) gives one matrix per slice (query, key, value), each its own Gaussian in the layers.

:func:`fit_model` applies :func:`~isogauss_hf.analysis.fit.fit_metrics` to each; :func:`block_fit_summary`
averages the metrics over the matrices of each block.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from ..errors import UsageError
from .fit import DEFAULT_MAX_ELEMENTS, fit_metrics

__all__ = ["MatrixRef", "MatrixFit", "iter_matrices", "fit_model", "block_fit_summary", "unwrap", "dense_weight"]


@dataclass
class MatrixRef:
    """One weight matrix of a model: ``weight`` is (out_features, in_features), detached."""

    name: str  # qualified module name; a fused slice is "name[query]"
    block: Optional[int]  # 1-based block index (None when the pattern path finds none)
    kind: str  # canonical target (query, key, ..., mlp_out) or the pattern that matched
    weight: torch.Tensor


@dataclass
class MatrixFit:
    """Fit metrics of one matrix (see :data:`~isogauss_hf.analysis.fit.FIT_METRICS`)."""

    name: str
    block: Optional[int]
    kind: str
    shape: tuple[int, int]
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside an ``IsoGaussModel`` / PEFT wrapper (``model`` itself otherwise)."""
    seen = 0
    while hasattr(model, "get_base_model") and seen < 4:
        inner = model.get_base_model()
        if inner is model:
            break
        model, seen = inner, seen + 1
    return model


def _is_conv1d(module: nn.Module) -> bool:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        return False
    return isinstance(module, Conv1D)


def dense_weight(module: nn.Module) -> torch.Tensor:
    """The (out, in) weight of an ``nn.Linear``, a ``Conv1D`` or a Gaussian layer (its seeded draw).

    A Gaussian layer has no dense weight; its seeded draw (the one ``export_dense`` writes) stands in.
    """
    if _is_conv1d(module):
        return module.weight.detach().t()
    if isinstance(module, nn.Linear):
        return module.weight.detach()
    parts = getattr(module, "parts", None)
    if parts is not None:
        return torch.cat([dense_weight(p) for p in parts], dim=0)
    if hasattr(module, "dense_weight"):
        with torch.no_grad():
            return module.dense_weight().detach()
    raise UsageError(f"{type(module).__name__} is not a fully connected layer (nn.Linear or Conv1D)")


def _targets(model: nn.Module, layers: Optional[Sequence[int]], targets: Optional[Sequence[str]]):
    from ..config import IsoGaussConfig
    from ..mapping import resolve_targets

    try:
        config = IsoGaussConfig(layers=list(layers) if layers is not None else None,
                                target_modules=list(targets) if targets is not None else None)
        return resolve_targets(model, config)
    except UsageError:
        raise
    except ValueError as e:  # bad blocks / targets / unmapped architecture: one line for the user
        raise UsageError(str(e)) from None


def iter_matrices(model: nn.Module, *, layers: Optional[Sequence[int]] = None,
                  targets: Optional[Sequence[str]] = None) -> Iterator[MatrixRef]:
    """Every fully connected matrix that ``layers`` (1-based blocks) and ``targets`` select, in model order.

    ``targets``: canonical names (``query``, ``key``, ``value``, ``attention_output``, ``mlp_in``,
    ``mlp_out``; default all six) for a mapped architecture, or regular expressions matched against full
    module names for any model. Raises :class:`~isogauss_hf.errors.UsageError` for a bad selection.
    """
    base = unwrap(model)
    for target in _targets(base, layers, targets):
        weight = dense_weight(base.get_submodule(target.name))
        if target.splits > 1:
            size = weight.shape[0] // target.splits
            for i, kind in enumerate(target.targets):
                yield MatrixRef(f"{target.name}[{kind}]", target.block, kind, weight[i * size:(i + 1) * size])
        else:
            yield MatrixRef(target.name, target.block, target.targets[0], weight)


def fit_model(model: nn.Module, *, layers: Optional[Sequence[int]] = None, targets: Optional[Sequence[str]] = None,
              max_elements: Optional[int] = DEFAULT_MAX_ELEMENTS, seed: int = 0,
              progress: bool = False) -> list[MatrixFit]:
    """:func:`~isogauss_hf.analysis.fit.fit_metrics` of every matrix :func:`iter_matrices` yields."""
    refs = list(iter_matrices(model, layers=layers, targets=targets))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(refs), desc="fit metrics", unit="matrix")
    out = []
    try:
        for ref in refs:
            with torch.no_grad():
                metrics = fit_metrics(ref.weight, max_elements=max_elements, seed=seed)
            out.append(MatrixFit(ref.name, ref.block, ref.kind, tuple(ref.weight.shape), metrics))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out


def block_fit_summary(fits: Sequence[MatrixFit]) -> dict[int, dict[str, float]]:
    """Per block, the mean of each fit metric over its matrices (``kurtosis`` also as ``abs_kurtosis``)."""
    grouped: dict[int, list[MatrixFit]] = {}
    for fit in fits:
        if fit.block is not None:
            grouped.setdefault(fit.block, []).append(fit)
    summary: dict[int, dict[str, float]] = {}
    for block, items in sorted(grouped.items()):
        keys = items[0].metrics.keys()
        row = {k: sum(f.metrics[k] for f in items) / len(items) for k in keys}
        row["abs_kurtosis"] = sum(abs(f.metrics["kurtosis"]) for f in items) / len(items)
        summary[block] = row
    return summary
