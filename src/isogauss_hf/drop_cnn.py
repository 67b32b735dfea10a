"""The ``drop`` baseline for convolutional networks: which residual blocks of ResNet can be removed.

Registered into :data:`isogauss_hf.baselines.drop.DROP_SPECS` on import (``import isogauss_hf.drop_cnn``).

* ``resnet``: the blocks are the residual blocks (``ResNetBasicLayer`` / ``ResNetBottleNeckLayer``)
  numbered across stages, 1..sum(depths) (ResNet-18: 8; selector word ``block{k}`` of
  :mod:`isogauss_hf.mapping_cnn` names the same blocks). A block can go only where its shortcut is the
  identity (same channels, stride 1: the residual stream passes through unchanged) and its stage keeps
  at least one block; ``config.depths`` follows, so ``save_pretrained`` then plain ``from_pretrained``
  rebuilds the same network (transformers builds each stage's first block from the previous stage's width,
  which an identity-shortcut block already has). ResNet-18: blocks 1, 2, 4, 6, 8 are removable, and at most
  one of 1 and 2.
* ``mobilenet_v2``: refused with a reason — transformers hard-codes its 16 inverted-residual blocks (no
  config field counts them), so a model without some of them could not be saved and rebuilt.

The ``drop`` baseline numbers blocks, while a Gaussian run on a CNN numbers convolution modules:
:func:`isogauss_hf.mapping_cnn.resnet_blocks_of_modules` gives the residual blocks holding given modules.
"""

from __future__ import annotations

from torch import nn

from .baselines.drop import BlockSlot, DropSpec, register_drop_spec
from .errors import UsageError

__all__ = ["resnet_block_slots", "removable_resnet_blocks"]


def _encoder(model: nn.Module):
    from transformers.models.resnet.modeling_resnet import ResNetEncoder

    for name, module in model.named_modules():
        if isinstance(module, ResNetEncoder):
            return name, module
    raise UsageError(f"drop: {type(model).__name__} has no ResNet encoder (ResNetEncoder)")


def resnet_block_slots(model: nn.Module) -> list[BlockSlot]:
    """Every residual block of every stage, in order (block ``k`` is item ``k - 1``)."""
    name, encoder = _encoder(model)
    prefix = f"{name}." if name else ""
    return [BlockSlot(stage.layers, b, f"{prefix}stages.{s}.layers.{b}")
            for s, stage in enumerate(encoder.stages) for b in range(len(stage.layers))]


def _stage_of(slots: list[BlockSlot]) -> list[int]:
    order: dict[int, int] = {}
    return [order.setdefault(id(slot.container), len(order)) for slot in slots]


def removable_resnet_blocks(model: nn.Module) -> list[int]:
    """1-based blocks whose shortcut is the identity (each removable on its own)."""
    return [k for k, slot in enumerate(resnet_block_slots(model), 1) if isinstance(slot.module.shortcut, nn.Identity)]


def _check_resnet(model: nn.Module, slots: list[BlockSlot], blocks: list[int]) -> None:
    valid = removable_resnet_blocks(model)
    bad = [b for b in blocks if b not in valid]
    if bad:
        raise UsageError(f"drop: cannot remove ResNet block(s) {bad}: they change the width or the resolution "
                         f"(a projection shortcut), so the residual stream cannot pass through; removable blocks "
                         f"are {valid}")
    stages = _stage_of(slots)
    for stage in sorted(set(stages)):
        members = [k for k, s in enumerate(stages, 1) if s == stage]
        if set(members) <= set(blocks):
            raise UsageError(f"drop: removing blocks {members} would leave stage {stage + 1} of the ResNet empty; "
                             f"keep at least one block per stage")


def _update_resnet_config(model: nn.Module, before: list[BlockSlot], removed: list[int], count_attrs) -> None:
    stages = _stage_of(before)
    depths = [sum(1 for k, s in enumerate(stages, 1) if s == stage and k not in removed) for stage in sorted(set(stages))]
    seen = set()
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "depths") and id(config) not in seen:
            seen.add(id(config))
            config.depths = depths


def _refuse_mobilenet_v2(model: nn.Module, slots: list[BlockSlot], blocks: list[int]) -> None:
    raise UsageError("drop: MobileNetV2 is not supported: transformers hard-codes its 16 inverted-residual blocks "
                     "(no config field counts them), so a model without some of them could not be saved and "
                     "rebuilt; use the lowrank or frozen baseline")


def _mobilenet_v2_slots(model: nn.Module) -> list[BlockSlot]:
    from transformers.models.mobilenet_v2.modeling_mobilenet_v2 import MobileNetV2Model

    for name, module in model.named_modules():
        if isinstance(module, MobileNetV2Model):
            prefix = f"{name}." if name else ""
            return [BlockSlot(module.layer, i, f"{prefix}layer.{i}") for i in range(len(module.layer))]
    raise UsageError(f"drop: {type(model).__name__} has no MobileNetV2 backbone")


register_drop_spec("resnet", DropSpec((), locate=resnet_block_slots, check=_check_resnet,
                                      update_config=_update_resnet_config))
register_drop_spec("mobilenet_v2", DropSpec((), locate=_mobilenet_v2_slots, check=_refuse_mobilenet_v2))
