"""Small helpers shared by the baselines: module swapping, GPT-2 ``Conv1D`` detection, parameter counts."""

from __future__ import annotations

from typing import Optional

from torch import nn

__all__ = ["set_submodule", "is_conv1d", "count_parameters", "model_type_of"]


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the qualified module name ``name`` of ``model`` (e.g. ``"bert.encoder.layer.0.output.dense"``)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, (nn.ModuleList, nn.Sequential)) and child.isdigit():
        parent[int(child)] = new
    else:
        setattr(parent, child, new)


def is_conv1d(module: nn.Module) -> bool:
    """True for transformers' ``Conv1D`` (GPT-2 style: weight stored as (in, out))."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always ships it
        return False
    return isinstance(module, Conv1D)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter entries of ``model`` (shared/tied parameters counted once, as ``parameters()`` does)."""
    return sum(p.numel() for p in model.parameters())


def model_type_of(model: nn.Module) -> Optional[str]:
    """``model.config.model_type`` or None."""
    return getattr(getattr(model, "config", None), "model_type", None)
