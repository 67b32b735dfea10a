"""Convolutional architectures: the paper's numbering of "convolution modules" in ResNet and MobileNetV2.

For these models ``IsoGaussConfig(layers=[...])`` selects 1-based MODULE numbers (not transformer
blocks); the numbering reproduces the paper's Tables 19-22 row for row (weights and statistics of every
row are checked against them in ``tests/test_cnn_models.py``):

**ResNet** (``model_type="resnet"``, basic or bottleneck layers), one number per ``nn.Conv2d``:
  1 = the stem (``embedder.embedder.convolution``, 7x7); then stage by stage, residual block by residual
  block, the main-path convolutions in order (``layer.0``, ``layer.1``[, ``layer.2``]) followed by the
  block's shortcut projection (the 1x1 ``shortcut.convolution``, only where the block has one). Shortcut
  projections count: this is torchvision's ``named_modules()`` order (conv1, conv2, downsample), the
  paper's, and NOT transformers' (which lists the shortcut first). ResNet-18: 20 modules, the projections
  are 8, 13 and 18.
**MobileNetV2** (``model_type="mobilenet_v2"``), one number per stage of the network as the paper (and
  torchvision's ``features``) counts them: 1 = the first 3x3 conv; 2 = the first inverted-residual block
  (inside transformers' ``conv_stem``: depthwise + project); 3..18 = ``layer.0`` .. ``layer.15``
  (expand 1x1, depthwise 3x3, project 1x1); 19 = the last 1x1 conv (``conv_1x1``). A block number
  converts all of its convolutions, each its own Gaussian matrix (a depthwise 3x3 over C channels is a
  (C, 9) matrix): 19 modules.
**The classifier**: the next number (ResNet-18: 21, MobileNetV2: 20) is the classifier's first
  ``nn.Linear`` — the plain classifier, or the first layer of the paper's two-layer head (Table 6,
  :func:`isogauss_hf.heads.with_mlp_head`). ``layers=None`` converts every module, the classifier included.

``target_modules`` then filters the chosen modules (None = all of them): each entry is a selector word
or else a regular expression matched against full module names. Selector words: ``conv`` (every
convolution), ``head`` (the classifier's Linear), ``stem``; ResNet: ``stage{s}``, ``stage{s}.block{b}``
(1-based within the stage), ``block{k}`` (residual blocks numbered across stages, as the ``drop``
baseline numbers them), ``main``, ``shortcut``, ``conv1``/``conv2``/``conv3`` (position in the main path);
MobileNetV2: ``block{k}`` (k = module number - 1), ``stage{s}`` (the 7 bottleneck sequences of Sandler et
al., Table 2), ``expand``, ``depthwise``, ``project``, ``last``. Example: ResNet-18
``IsoGaussConfig(target_modules=["stage3"])`` = modules 11-15; ``IsoGaussConfig(layers=[21])`` = the
Table 6 classifier experiment.

This module lists the modules (:func:`conv_entries`); :mod:`isogauss_hf.mapping` turns a config into
targets. Nothing here imports the rest of the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import nn

__all__ = ["ConvEntry", "CNN_ARCHITECTURES", "register_cnn_architecture", "conv_entries", "selector_words", "entry_has",
           "module_table", "num_modules", "resnet_blocks_of_modules"]

#: Bottleneck sequence (Sandler et al. 2018, Table 2) of MobileNetV2's 17 inverted-residual blocks.
_MOBILENET_V2_STAGE_OF_BLOCK = (1, 2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7)


@dataclass(frozen=True)
class ConvEntry:
    """One module that a module number converts (several entries can share a number: MobileNetV2 blocks)."""

    index: int  #: 1-based module number (the paper's tables)
    name: str  #: qualified module name in the model
    role: str  #: 'stem', 'conv1', 'shortcut', 'expand', 'depthwise', 'project', 'last', 'head'
    tags: frozenset  #: selector words that choose it (besides its role and 'conv')


def _join(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if prefix and path else prefix or path


def _find(model: nn.Module, cls: type, what: str) -> tuple[str, nn.Module]:
    for name, module in model.named_modules():
        if isinstance(module, cls):
            return name, module
    raise ValueError(f"{type(model).__name__} has no {what} ({cls.__name__}); is this transformers version supported?")


def _head_entries(model: nn.Module, index: int) -> list[ConvEntry]:
    """The classifier's first nn.Linear (plain classifier or the Table 6 head), if the model has one."""
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Module):
        return []
    for path, module in classifier.named_modules():
        if isinstance(module, nn.Linear):
            return [ConvEntry(index, _join("classifier", path), "head", frozenset({"head"}))]
    return []


def resnet_entries(model: nn.Module) -> list[ConvEntry]:
    """ResNet's modules in the paper's order (see the module docstring)."""
    from transformers.models.resnet.modeling_resnet import ResNetEmbeddings, ResNetEncoder, ResNetShortCut

    stem_name, _ = _find(model, ResNetEmbeddings, "ResNet stem")
    encoder_name, encoder = _find(model, ResNetEncoder, "ResNet encoder")
    entries = [ConvEntry(1, _join(stem_name, "embedder.convolution"), "stem", frozenset({"stem"}))]
    index, residual = 1, 0
    for s, stage in enumerate(encoder.stages, 1):
        for b, layer in enumerate(stage.layers, 1):
            residual += 1
            base = _join(encoder_name, f"stages.{s - 1}.layers.{b - 1}")
            tags = {f"stage{s}", f"stage{s}.block{b}", f"block{residual}"}
            for j in range(len(layer.layer)):
                index += 1
                entries.append(ConvEntry(index, f"{base}.layer.{j}.convolution", f"conv{j + 1}",
                                         frozenset(tags | {"main"})))
            if isinstance(layer.shortcut, ResNetShortCut):
                index += 1
                entries.append(ConvEntry(index, f"{base}.shortcut.convolution", "shortcut", frozenset(tags)))
    return entries + _head_entries(model, index + 1)


def mobilenet_v2_entries(model: nn.Module) -> list[ConvEntry]:
    """MobileNetV2's modules in the paper's order (see the module docstring)."""
    from transformers.models.mobilenet_v2.modeling_mobilenet_v2 import MobileNetV2Model

    root_name, root = _find(model, MobileNetV2Model, "MobileNetV2 backbone")
    entries = [ConvEntry(1, _join(root_name, "conv_stem.first_conv.convolution"), "stem", frozenset({"stem"}))]
    blocks = [("conv_stem", root.conv_stem)] + [(f"layer.{i}", layer) for i, layer in enumerate(root.layer)]
    for k, (path, block) in enumerate(blocks, 1):
        stage = _MOBILENET_V2_STAGE_OF_BLOCK[k - 1] if k <= len(_MOBILENET_V2_STAGE_OF_BLOCK) else None
        tags = {f"block{k}"} | ({f"stage{stage}"} if stage else set())
        for attr, role in (("expand_1x1", "expand"), ("conv_3x3", "depthwise"), ("reduce_1x1", "project")):
            if getattr(block, attr, None) is not None:
                entries.append(ConvEntry(k + 1, _join(root_name, f"{path}.{attr}.convolution"), role, frozenset(tags)))
    last = len(blocks) + 2
    entries.append(ConvEntry(last, _join(root_name, "conv_1x1.convolution"), "last", frozenset({"last"})))
    return entries + _head_entries(model, last + 1)


#: model_type -> lister of its numbered modules.
CNN_ARCHITECTURES: dict[str, Callable[[nn.Module], list[ConvEntry]]] = {
    "resnet": resnet_entries,
    "mobilenet_v2": mobilenet_v2_entries,
}


def register_cnn_architecture(model_type: str, lister: Callable[[nn.Module], list[ConvEntry]]) -> None:
    """Add (or replace) how the numbered convolution modules of ``model_type`` are listed."""
    CNN_ARCHITECTURES[model_type] = lister


def _model_type(model: nn.Module) -> Optional[str]:
    return getattr(getattr(model, "config", None), "model_type", None)


def conv_entries(model: nn.Module) -> Optional[list[ConvEntry]]:
    """The numbered modules of a mapped CNN, in order; None when ``model`` is not one."""
    lister = CNN_ARCHITECTURES.get(_model_type(model) or "")
    return lister(model) if lister is not None else None


def num_modules(model: nn.Module) -> Optional[int]:
    """The largest module number of a mapped CNN (None when not one)."""
    entries = conv_entries(model)
    return max(e.index for e in entries) if entries else None


def selector_words(entries: list[ConvEntry]) -> list[str]:
    """Every selector word ``target_modules`` accepts for these entries."""
    words = {"conv"} | {e.role for e in entries} | {t for e in entries for t in e.tags}
    return sorted(words)


def entry_has(entry: ConvEntry, word: str) -> bool:
    """Whether selector ``word`` chooses ``entry``."""
    return word == entry.role or word in entry.tags or (word == "conv" and entry.role != "head")


def module_table(model: nn.Module) -> list[dict[str, Any]]:
    """Per module number: its modules, dense weights, Gaussian statistics (2n + 2m per matrix) and retention.

    The paper's "original parameters", "modified parameters" and "retention ratio" (Tables 19-22), counted
    from the weight shapes (works on the meta device; biases are in neither count).
    """
    rows: dict[int, dict[str, Any]] = {}
    for e in conv_entries(model) or []:
        weight = model.get_submodule(e.name).weight
        n, m = weight.shape[0], weight[0].numel()
        row = rows.setdefault(e.index, {"index": e.index, "modules": [], "roles": [], "weights": 0, "statistics": 0})
        row["modules"].append(e.name)
        row["roles"].append(e.role)
        row["weights"] += n * m
        row["statistics"] += 2 * (n + m)
    for row in rows.values():
        row["retention"] = row["statistics"] / row["weights"]
    return [rows[i] for i in sorted(rows)]


def resnet_blocks_of_modules(model: nn.Module, layers: list[int]) -> list[int]:
    """The residual blocks (numbered across stages, as the ``drop`` baseline numbers them) that hold the
    convolution modules ``layers``; the stem and the classifier belong to no block."""
    entries = conv_entries(model) or []
    blocks = {int(t[len("block"):]) for e in entries if e.index in set(layers) for t in e.tags
              if t.startswith("block") and t[len("block"):].isdigit()}
    return sorted(blocks)
