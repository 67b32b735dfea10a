"""Gaussian layer kinds and the table that says which dense module becomes which kind.

* :mod:`.base` — :class:`IsoGaussLayer`, everything the kinds share (statistics, draws, distribution step);
* :mod:`.linear` — :class:`IsoGaussLinear` (``nn.Linear`` / GPT-2 ``Conv1D``), :class:`IsoGaussFusedLinear`;
* :mod:`.conv` — :class:`IsoGaussConv2d` (``nn.Conv2d`` as its im2col matrix);
* :mod:`.updates` — the (rule, noise) -> update table.

A new kind (e.g. a convolution) adds one :class:`LayerKind` to :data:`LAYER_KINDS`; conversion
(:mod:`isogauss_hf.convert`) and checkpoint loading look kinds up here and nowhere else.
:func:`iter_isogauss_layers` is the one loop over a model's Gaussian matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .base import IsoGaussLayer
from .conv import IsoGaussConv2d, is_supported_conv
from .linear import IsoGaussFusedLinear, IsoGaussLinear, is_conv1d
from .updates import DISTRIBUTION_UPDATES, DistributionUpdate, distribution_update

__all__ = [
    "IsoGaussLayer",
    "IsoGaussLinear",
    "IsoGaussFusedLinear",
    "IsoGaussConv2d",
    "LayerKind",
    "LAYER_KINDS",
    "layer_kind_for_module",
    "layer_kind_for_source",
    "iter_isogauss_layers",
    "is_gaussian_module",
    "is_conv1d",
    "DISTRIBUTION_UPDATES",
    "DistributionUpdate",
    "distribution_update",
]


@dataclass(frozen=True)
class LayerKind:
    """How one kind of dense module becomes a Gaussian module, and how an empty one is rebuilt from a record.

    ``build(module, config, seed, splits)`` returns the Gaussian module with the statistics of the dense
    weight; ``empty(record, config, device, dtype)`` one with zero statistics and the record's shape (its
    values then come from a checkpoint); ``describe(module, layer)`` the record fields of the kind.
    """

    name: str
    sources: tuple[str, ...]  #: the ``source`` values its records carry
    matches: Callable[[nn.Module], bool]
    build: Callable[[nn.Module, Any, int, int], nn.Module]
    empty: Callable[[dict, Any, torch.device, torch.dtype], nn.Module]
    describe: Callable[[nn.Module, nn.Module], dict]


def _linear_build(module: nn.Module, config: Any, seed: int, splits: int) -> nn.Module:
    from ..noise import derive_seed

    if splits > 1:
        return IsoGaussFusedLinear.from_linear(module, splits, seeds=[derive_seed(seed, i) for i in range(splits)],
                                               config=config)
    return IsoGaussLinear.from_linear(module, seed=seed, config=config)


def _linear_empty(record: dict, config: Any, device: torch.device, dtype: torch.dtype) -> nn.Module:
    splits = int(record.get("splits", 1))
    kwargs = dict(bias=record["bias"], config=config, device=device, dtype=dtype)
    if splits > 1:
        size = record["out_features"] // splits
        return IsoGaussFusedLinear([IsoGaussLinear(record["in_features"], size, source="linear", **kwargs)
                                    for _ in range(splits)], source=record["source"])
    return IsoGaussLinear(record["in_features"], record["out_features"], source=record["source"], **kwargs)


def _linear_describe(module: nn.Module, layer: nn.Module) -> dict:
    return {"in_features": layer.in_features, "out_features": layer.out_features,
            "bias": getattr(module, "bias", None) is not None, "source": layer.source}


def _conv_build(module: nn.Module, config: Any, seed: int, splits: int) -> nn.Module:
    if splits > 1:
        raise ValueError(f"a Conv2d cannot be split into {splits} Gaussian matrices (splits are for fused projections)")
    return IsoGaussConv2d.from_conv(module, seed=seed, config=config)


def _conv_empty(record: dict, config: Any, device: torch.device, dtype: torch.dtype) -> nn.Module:
    geometry = {k: record[k] for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                                       "groups", "padding_mode")}
    return IsoGaussConv2d(**geometry, bias=record["bias"], config=config, device=device, dtype=dtype)


def _conv_describe(module: nn.Module, layer: nn.Module) -> dict:
    return {**layer.geometry(), "bias": layer.bias is not None, "source": layer.source}


LAYER_KINDS: list[LayerKind] = [
    LayerKind("linear", IsoGaussLinear.SOURCES, lambda m: isinstance(m, nn.Linear) or is_conv1d(m),
              _linear_build, _linear_empty, _linear_describe),
    LayerKind("conv2d", IsoGaussConv2d.SOURCES, is_supported_conv, _conv_build, _conv_empty, _conv_describe),
]


def layer_kind_for_module(module: nn.Module, name: str = "") -> LayerKind:
    """The kind that converts ``module``; a one-line error naming the module otherwise."""
    for kind in LAYER_KINDS:
        if kind.matches(module):
            return kind
    where = f"{name} " if name else ""
    handled = ", ".join(k.name for k in LAYER_KINDS)
    raise TypeError(f"{where}is a {type(module).__name__}, which no Gaussian layer kind handles (kinds: {handled})")


def layer_kind_for_source(source: str) -> LayerKind:
    """The kind whose checkpoint records carry ``source``."""
    for kind in LAYER_KINDS:
        if source in kind.sources:
            return kind
    valid = sorted(s for k in LAYER_KINDS for s in k.sources)
    raise ValueError(f"unknown Gaussian layer source {source!r} in the checkpoint; known: {valid}")


def is_gaussian_module(module: nn.Module) -> bool:
    """A Gaussian layer or a container of them made by conversion (e.g. a fused projection)."""
    return isinstance(module, (IsoGaussLayer, IsoGaussFusedLinear))


_WRAPPER_PREFIXES = ("module.", "base_model.")


def iter_isogauss_layers(model: nn.Module, prefix_free: bool = True) -> Iterator[tuple[str, IsoGaussLayer]]:
    """Every Gaussian matrix of ``model`` as ``(qualified name, layer)``, in module order.

    Works through DDP / accelerate wrappers and :class:`~isogauss_hf.IsoGaussModel`: with ``prefix_free``
    their leading ``module.`` and ``base_model.`` are removed, so names are the transformers module names
    (fused modules contribute one entry per part, e.g. ``h.0.attn.c_attn.parts.1``).
    """
    for name, module in model.named_modules():
        if isinstance(module, IsoGaussLayer):
            if prefix_free:
                for p in _WRAPPER_PREFIXES:
                    name = name[len(p):] if name.startswith(p) else name
            yield name, module

