"""Conversion: which modules an ``IsoGaussConfig`` selects, swapping them for Gaussian layers, and back.

* :func:`convert_in_place` — resolve the targets (:mod:`isogauss_hf.mapping`) and replace each by the
  Gaussian module its layer kind builds (:data:`isogauss_hf.layers.LAYER_KINDS`); one record per module;
* :func:`build_empty` — put statistics-less Gaussian modules where a checkpoint's records say;
* :func:`dense_swapped` — temporarily put one seeded dense draw in place of every Gaussian module
  (``export_dense``, PEFT's ``merge_and_unload``);
* :func:`parameter_report` — how many dense weights were replaced and how many statistics stand for them;
* :func:`replace_module` and :func:`iter_isogauss_layers` (the one loop over a model's Gaussian matrices).

Used by :class:`~isogauss_hf.IsoGaussModel`, the PEFT tuner and checkpoint loading alike.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
from torch import nn

from .config import IsoGaussConfig
from .layers import (IsoGaussFusedLinear, IsoGaussLayer, is_gaussian_module, iter_isogauss_layers,
                     layer_kind_for_module, layer_kind_for_source)
from .mapping import Target, resolve_targets
from .noise import derive_seed

__all__ = [
    "convert_in_place",
    "build_empty",
    "dense_swapped",
    "parameter_report",
    "replace_module",
    "iter_isogauss_layers",
    "gaussian_modules",
]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at the qualified module name ``name`` of ``model``; return the module it replaced."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def _record(target: Target, kind_fields: dict) -> dict[str, Any]:
    return {"name": target.name, "block": target.block, "targets": list(target.targets), "splits": target.splits,
            **kind_fields}


def convert_in_place(model: nn.Module, config: IsoGaussConfig) -> list[dict[str, Any]]:
    """Swap the modules ``config`` selects for Gaussian layers inside ``model``; one record per module.

    Each layer's noise seed derives from ``config.seed`` and the module name; its initial statistics are
    the row/column mean and std of the dense weight, which is then dropped.
    """
    targets = resolve_targets(model, config)
    if not targets:
        raise ValueError("the configuration selects no module to convert")
    built = []
    for target in targets:  # every layer is built and checked before any module changes: a refusal leaves the model
        module = model.get_submodule(target.name)
        _check_finite(target.name, module)
        kind = layer_kind_for_module(module, target.name)
        layer = kind.build(module, config, derive_seed(config.seed, target.name), target.splits)
        _check_statistics(target.name, layer, module)
        built.append((target, layer, kind.describe(module, layer)))
        del module
    records = []
    for target, layer, fields in built:
        replace_module(model, target.name, layer)
        records.append(_record(target, fields))
    return records


def _check_finite(name: str, module: nn.Module) -> None:
    """A NaN or infinite weight becomes NaN statistics, and a checkpoint that no loader accepts: refuse it here."""
    for pname, tensor in module.named_parameters():
        if tensor.is_floating_point() and not tensor.is_meta and not bool(torch.isfinite(tensor).all()):
            bad = ~torch.isfinite(tensor.detach())
            raise ValueError(f"cannot convert {name!r}: its {pname} holds {int(bad.sum())} non-finite value(s) "
                             f"(e.g. {float(tensor.detach()[bad].reshape(-1)[0])}); the statistics would be NaN. "
                             f"Load an intact checkpoint of the model, or leave this block out of layers")


def _check_statistics(name: str, layer: nn.Module, module: nn.Module) -> None:
    """Finite weights can still overflow the float32 statistics (|w| near 1e30): refuse, naming the module."""
    for part_name, part in iter_isogauss_layers(layer):
        bad = [stat for stat in IsoGaussLayer.STAT_NAMES
               if not getattr(part, stat).is_meta and not bool(torch.isfinite(getattr(part, stat)).all())]
        if bad:
            top = max(float(p.detach().abs().max()) for p in module.parameters() if p.numel())
            where = f"{name}.{part_name}" if part_name else name
            raise ValueError(f"cannot convert {where!r}: its {', '.join(bad)} overflow (weights up to {top:.3g} in "
                             f"magnitude), so every draw would be NaN. Load an intact checkpoint of the model, or "
                             f"leave this block out of layers")


def build_empty(base: nn.Module, config: IsoGaussConfig, records: list[dict[str, Any]]) -> None:
    """Put statistics-less Gaussian modules where ``records`` say (their values then come from a checkpoint)."""
    for rec in records:
        try:
            old = base.get_submodule(rec["name"])
        except AttributeError:
            raise ValueError(f"checkpoint lists Gaussian module {rec['name']!r}, which this base model does not "
                             f"have") from None
        dtype = next((p.dtype for p in old.parameters()), torch.float32)
        device = next((p.device for p in old.parameters()), torch.device("cpu"))
        kind = layer_kind_for_source(rec.get("source", "linear"))
        replace_module(base, rec["name"], kind.empty(rec, config, device, dtype))


def gaussian_modules(model: nn.Module, records: list[dict[str, Any]]) -> Iterator[tuple[str, nn.Module]]:
    """The converted module of every record (a fused module counts once), by qualified name."""
    for record in records:
        yield record["name"], model.get_submodule(record["name"])


@contextlib.contextmanager
def dense_swapped(model: nn.Module, names: Optional[list[str]] = None, seed: Optional[int] = None):
    """Inside the block, every Gaussian module of ``model`` (or those named) is a dense module holding one draw.

    The draw is each layer's seeded draw (the one ``noise='seeded'`` uses); ``seed`` picks another one,
    derived per module name. The Gaussian modules are put back afterwards, also on error.
    """
    if names is None:
        names = _outermost_gaussian_names(model)
    swaps = []
    try:
        for name in names:
            module = model.get_submodule(name)
            dense = module.to_dense_module(seed=None if seed is None else derive_seed(seed, name))
            swaps.append((name, replace_module(model, name, dense)))
        yield model
    finally:
        for name, module in reversed(swaps):
            replace_module(model, name, module)


def _outermost_gaussian_names(model: nn.Module) -> list[str]:
    names: list[str] = []
    for name, module in model.named_modules():
        if is_gaussian_module(module) and not any(name.startswith(n + ".") for n in names):
            names.append(name)
    return names


def parameter_report(model: nn.Module, records: list[dict[str, Any]]) -> dict[str, Any]:
    """How many dense weight entries were replaced and how many statistics stand for them.

    ``replaced_weights`` counts the weight-matrix entries of the replaced modules; ``gaussian_parameters``
    the statistics stored for them (2 per row + 2 per column of each matrix). Biases are in neither.
    ``dense_model_parameters`` / ``isogauss_model_parameters``: the whole model before / after.

    ``paper_dense_parameters`` / ``paper_isogauss_parameters`` (per block and in total) are what the paper's
    tables count (``paper_counts`` says which): for transformer blocks every parameter of the block, with the
    statistics in place of the replaced matrices — weights, biases and layer norms, 7,087,872 -> 37,632 for a
    BERT-base / ViT-Base / GPT-2 block (Tables 1-3 print 7.09M -> 38.03K and 37.63K), 12,596,224 -> 50,176
    for BERT-Large (Table 4: 50.18K) —; for the 8-layer network's layers and for convolution modules the
    replaced matrices alone (Table 7: 16,384 -> 512; Tables 19-22), equal to the first two counts.
    """
    from .mapping import paper_block_modules

    per_block: dict[str, dict[str, Any]] = {}
    total_replaced = total_gauss = 0
    for record in records:
        module = model.get_submodule(record["name"])
        parts = module.parts if isinstance(module, IsoGaussFusedLinear) else [module]
        replaced = sum(p.num_replaced_weights for p in parts)
        gauss = sum(p.num_gaussian_parameters for p in parts)
        total_replaced += replaced
        total_gauss += gauss
        key = str(record["block"]) if record["block"] is not None else "-"
        entry = per_block.setdefault(key, {"replaced_weights": 0, "gaussian_parameters": 0, "modules": []})
        entry["replaced_weights"] += replaced
        entry["gaussian_parameters"] += gauss
        entry["modules"].append(record["name"])
    stats = {id(getattr(layer, n)) for _, layer in iter_isogauss_layers(model) for n in IsoGaussLayer.STAT_NAMES}
    blocks = paper_block_modules(model)
    for key, entry in per_block.items():
        entry["ratio"] = entry["gaussian_parameters"] / entry["replaced_weights"] if entry["replaced_weights"] else 0.0
        rest = 0  # the block's parameters besides the replaced matrices (biases, layer norms)
        if blocks is not None and key.isdigit():
            rest = sum(p.numel() for p in blocks[int(key) - 1].parameters() if id(p) not in stats)
        entry["paper_dense_parameters"] = entry["replaced_weights"] + rest
        entry["paper_isogauss_parameters"] = entry["gaussian_parameters"] + rest
    other = sum(p.numel() for p in model.parameters() if id(p) not in stats)  # statistics counted above
    return {
        "replaced_weights": total_replaced,
        "gaussian_parameters": total_gauss,
        "ratio": total_gauss / total_replaced if total_replaced else 0.0,
        "num_matrices": sum(1 for _ in iter_isogauss_layers(model)),
        "per_block": per_block,
        "paper_counts": "block" if blocks is not None else "matrices",
        "paper_dense_parameters": sum(e["paper_dense_parameters"] for e in per_block.values()),
        "paper_isogauss_parameters": sum(e["paper_isogauss_parameters"] for e in per_block.values()),
        "dense_model_parameters": other + total_replaced,
        "isogauss_model_parameters": other + total_gauss,
    }
