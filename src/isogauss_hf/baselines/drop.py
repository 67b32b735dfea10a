"""The ``drop`` baseline: remove whole blocks so that the residual stream passes through.

``drop_blocks(model, [3])`` deletes block 3 (1-based, as in the paper's tables) in place and keeps the
model an ordinary transformers model: the block count in its config is updated (so ``save_pretrained``
then plain ``AutoModel*.from_pretrained`` rebuilds the same network), the remaining blocks' attention
``layer_idx`` is renumbered (so GPT-2's KV cache in ``generate`` still lines up), and a per-layer
``layer_types`` list, where a config has one, loses the dropped entries.

What "a block" is and which config field counts the blocks is a per-architecture entry of
:data:`DROP_SPECS` (a table, extended with :func:`register_drop_spec`). An entry can replace how the
blocks are found (``locate``: e.g. the blocks of every ResNet stage, numbered across stages), refuse
blocks that cannot go (``check``: e.g. the 8-layer network's 784 -> 128 input layer) and rewrite the
config (``update_config``: e.g. a per-stage ``depths`` list). The paper's "remove" row of Table 8 is
this baseline for the 8-layer network (there only shape-preserving hidden layers can be skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

from torch import nn

from ..errors import UsageError
from ..mapping import ARCHITECTURES, find_block_list
from ._common import model_type_of

__all__ = ["BlockSlot", "DropSpec", "DROP_SPECS", "register_drop_spec", "drop_blocks", "check_blocks", "block_slots"]

Container = Union[nn.ModuleList, nn.Sequential]


@dataclass(frozen=True)
class BlockSlot:
    """Where one block lives: ``container[index]``, qualified module name ``name``."""

    container: Container
    index: int
    name: str

    @property
    def module(self) -> nn.Module:
        return self.container[self.index]


def _transformer_blocks(model: nn.Module) -> list[BlockSlot]:
    """The blocks of a mapped transformer: the ModuleList :mod:`isogauss_hf.mapping` names for its model_type."""
    spec = ARCHITECTURES[model_type_of(model)]
    list_name, blocks = find_block_list(model, spec)
    return [BlockSlot(blocks, i, f"{list_name}.{i}") for i in range(len(blocks))]


def _set_count(model: nn.Module, before: list[BlockSlot], removed: list[int], count_attrs: tuple[str, ...]) -> None:
    """Default config rewrite: each ``count_attrs`` field = blocks left; ``layer_types`` loses the dropped entries."""
    left = len(before) - len(removed)
    gone = {b - 1 for b in removed}
    for config in _configs(model):
        for attr in count_attrs:
            setattr(config, attr, left)
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, (list, tuple)) and len(layer_types) == len(before):
            config.layer_types = [t for i, t in enumerate(layer_types) if i not in gone]


def _configs(model: nn.Module) -> list:
    """The distinct config objects of ``model`` and its submodules (heads usually share one)."""
    seen: dict[int, object] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            seen.setdefault(id(config), config)
    return list(seen.values())


@dataclass(frozen=True)
class DropSpec:
    """How the ``drop`` baseline removes blocks of one ``model_type``.

    Attributes:
        count_attrs: config fields that hold the number of blocks (all set to the number left).
        locate: ``model -> [BlockSlot]``, block ``k`` (1-based) is item ``k - 1``.
        check: ``(model, slots, blocks) -> None``; raises :class:`UsageError` for blocks that cannot go.
        update_config: ``(model, slots_before, removed, count_attrs) -> None``; rewrites the config(s).
    """

    count_attrs: tuple[str, ...]
    locate: Callable[[nn.Module], list[BlockSlot]] = _transformer_blocks
    check: Optional[Callable[[nn.Module, list[BlockSlot], list[int]], None]] = None
    update_config: Callable[[nn.Module, list[BlockSlot], list[int], tuple[str, ...]], None] = _set_count


def _check_gpt2(model: nn.Module, slots: list[BlockSlot], blocks: list[int]) -> None:
    if getattr(model.config, "scale_attn_by_inverse_layer_idx", False):
        raise UsageError(
            "drop: this GPT-2 has scale_attn_by_inverse_layer_idx=True (attention scaled by 1/(block index + 1)); "
            "removing blocks would change the scaling of the blocks after them, so drop is not supported for it"
        )


def _check_shape_preserving(model: nn.Module, slots: list[BlockSlot], blocks: list[int]) -> None:
    """8-layer network: a layer can be skipped only if it maps k -> k and is not the output layer."""
    def removable(i: int) -> bool:
        layer = slots[i].module
        return i < len(slots) - 1 and isinstance(layer, nn.Linear) and layer.in_features == layer.out_features

    valid = [i + 1 for i in range(len(slots)) if removable(i)]
    for b in blocks:
        if not removable(b - 1):
            layer = slots[b - 1].module
            linear = isinstance(layer, nn.Linear)
            shape = f"{layer.in_features} -> {layer.out_features}" if linear else type(layer).__name__
            what = "the output layer" if b == len(slots) else f"layer {b} maps {shape}"
            raise UsageError(
                f"drop: cannot remove block {b} of the fully connected network ({what}); only shape-preserving hidden "
                f"layers (k -> k) can be skipped: valid blocks are {valid}"
            )


#: model_type -> how its blocks are removed. Issue 12 adds ResNet / MobileNetV2 stage blocks here.
DROP_SPECS: dict[str, DropSpec] = {
    "bert": DropSpec(("num_hidden_layers",)),
    "roberta": DropSpec(("num_hidden_layers",)),
    "xlm-roberta": DropSpec(("num_hidden_layers",)),
    "vit": DropSpec(("num_hidden_layers",)),
    "gpt2": DropSpec(("n_layer",), check=_check_gpt2),
    "isogauss-ffn8": DropSpec(("num_layers",), check=_check_shape_preserving),
}


def register_drop_spec(model_type: str, spec: DropSpec) -> None:
    """Add (or replace) how the ``drop`` baseline removes the blocks of ``model_type``."""
    if not isinstance(spec, DropSpec):
        raise TypeError(f"register_drop_spec expects a DropSpec, got {type(spec).__name__}")
    DROP_SPECS[model_type] = spec


def _spec_for(model: nn.Module) -> DropSpec:
    if hasattr(model, "isogauss_layers"):
        raise UsageError("drop: this model already has Gaussian layers (an IsoGaussModel); drop blocks of a dense one")
    model_type = model_type_of(model)
    spec = DROP_SPECS.get(model_type or "")
    if spec is None:
        raise UsageError(
            f"drop: no block-removal rule for model_type {model_type!r} ({type(model).__name__}); "
            f"supported: {', '.join(sorted(DROP_SPECS))}"
        )
    return spec


def block_slots(model: nn.Module) -> list[BlockSlot]:
    """The blocks of ``model`` as the ``drop`` baseline numbers them (block ``k`` is item ``k - 1``)."""
    return _spec_for(model).locate(model)


def check_blocks(blocks, n_blocks: int) -> list[int]:
    """``blocks`` as a sorted list of distinct 1-based indices in ``1..n_blocks`` leaving at least one block."""
    if isinstance(blocks, (int, str)) or not hasattr(blocks, "__iter__"):
        raise UsageError(f"drop: blocks must be a list of 1-based block indices, got {blocks!r}")
    blocks = list(blocks)
    bad = [b for b in blocks if isinstance(b, bool) or not isinstance(b, int)]
    if bad:
        raise UsageError(f"drop: blocks must be integers (1-based block indices), got {bad!r}")
    if not blocks:
        raise UsageError(f"drop: no block given; choose blocks from 1..{n_blocks} (1-based)")
    outside = [b for b in blocks if not 1 <= b <= n_blocks]
    if outside:
        raise UsageError(f"drop: block(s) {outside} out of range; valid blocks are 1..{n_blocks} (1-based)")
    dups = sorted({b for b in blocks if blocks.count(b) > 1})
    if dups:
        raise UsageError(f"drop: block(s) {dups} given more than once")
    if len(set(blocks)) >= n_blocks:
        raise UsageError(
            f"drop: removing blocks {sorted(blocks)} leaves no block (the model has 1..{n_blocks}); keep at least one"
        )
    return sorted(blocks)


def drop_blocks(model: nn.Module, blocks: list[int]) -> nn.Module:
    """Remove the 1-based ``blocks`` of ``model`` in place (residual stream passes through); returns ``model``.

    The config's block count follows, attention ``layer_idx`` of the remaining blocks is renumbered 0..k-1,
    so the model saves, reloads with plain ``from_pretrained`` to the same outputs, and generates with a cache.
    """
    spec = _spec_for(model)
    slots = spec.locate(model)
    blocks = check_blocks(blocks, len(slots))
    if spec.check is not None:
        spec.check(model, slots, blocks)
    for b in sorted(blocks, reverse=True):  # from the back, so the other indices stay valid
        slot = slots[b - 1]
        del slot.container[slot.index]
    for position, slot in enumerate(spec.locate(model)):
        for module in slot.module.modules():
            if isinstance(getattr(module, "layer_idx", None), int) and not isinstance(module.layer_idx, bool):
                module.layer_idx = position
    spec.update_config(model, slots, blocks, spec.count_attrs)
    return model
