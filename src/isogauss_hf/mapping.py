"""Where the transformer blocks and their fully connected layers live, per architecture.

Module names are those of the installed transformers (5.x). Each canonical target maps to candidate
paths relative to a block; the first that exists is used (older naming kept as a fallback, e.g. ViT
in transformers 4.x used ``attention.attention.query`` where 5.x uses ``attention.q_proj``).

Convolutional networks (ResNet, MobileNetV2) have no transformer blocks: their numbered convolution
modules are listed by :mod:`isogauss_hf.mapping_cnn` (:data:`~isogauss_hf.mapping_cnn.CNN_ARCHITECTURES`),
and for them ``layers`` are module numbers and ``target_modules`` selector words or patterns
(:func:`resolve_targets` says which). The generic pattern path matches fully connected layers and
``nn.Conv2d`` modules (other convolution kinds are one clear error naming the module).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from torch import nn

from .config import CANONICAL_TARGETS, IsoGaussConfig
from .layers.conv import check_supported_conv, is_conv_module
from .layers.linear import is_conv1d
from .mapping_cnn import CNN_ARCHITECTURES, ConvEntry, conv_entries, entry_has, selector_words

__all__ = ["ArchitectureSpec", "ARCHITECTURES", "Target", "resolve_targets", "register_architecture", "count_blocks",
           "find_block_list", "paper_block_modules"]

_BERT_LIKE = {
    "query": ("attention.self.query",),
    "key": ("attention.self.key",),
    "value": ("attention.self.value",),
    "attention_output": ("attention.output.dense",),
    "mlp_in": ("intermediate.dense",),
    "mlp_out": ("output.dense",),
}


@dataclass(frozen=True)
class ArchitectureSpec:
    """Block container and per-block target paths of one ``model_type``."""

    block_lists: tuple[str, ...]  # suffixes of the ModuleList holding the blocks
    targets: dict[str, tuple[str, ...]]  # canonical name -> candidate paths relative to a block
    fused: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # path -> split names
    notes: str = ""
    # what the paper's parameter figures count per block: "block" = every parameter of the block, the statistics
    # standing for the replaced matrices (Tables 1-4: weights, biases, layer norms); "matrices" = the replaced
    # matrices only (Table 7's 8-layer network, Tables 19-22's convolution modules)
    paper_counts: str = "block"


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "bert": ArchitectureSpec(("encoder.layer",), _BERT_LIKE),
    "roberta": ArchitectureSpec(("encoder.layer",), _BERT_LIKE),
    "xlm-roberta": ArchitectureSpec(("encoder.layer",), _BERT_LIKE),
    "vit": ArchitectureSpec(
        ("layers", "encoder.layer"),
        {
            "query": ("attention.q_proj", "attention.attention.query"),
            "key": ("attention.k_proj", "attention.attention.key"),
            "value": ("attention.v_proj", "attention.attention.value"),
            "attention_output": ("attention.o_proj", "attention.output.dense"),
            "mlp_in": ("mlp.fc1", "intermediate.dense"),
            "mlp_out": ("mlp.fc2", "output.dense"),
        },
    ),
    "gpt2": ArchitectureSpec(
        ("h",),
        {
            "query": ("attn.c_attn",),
            "key": ("attn.c_attn",),
            "value": ("attn.c_attn",),
            "attention_output": ("attn.c_proj",),
            "mlp_in": ("mlp.c_fc",),
            "mlp_out": ("mlp.c_proj",),
        },
        fused={"attn.c_attn": ("query", "key", "value")},
        notes="GPT-2 fuses query|key|value in one Conv1D (attn.c_attn); it becomes three Gaussian matrices "
        "(one per slice, each with its own row and column statistics), selected together.",
    ),
}


def register_architecture(model_type: str, spec: ArchitectureSpec) -> None:
    """Add (or replace) the layer map of a ``model_type``."""
    ARCHITECTURES[model_type] = spec


@dataclass
class Target:
    """One module to replace."""

    name: str  # qualified module name in the model
    block: Optional[int]  # 1-based block index (None on the generic path without a block index)
    targets: tuple[str, ...]  # canonical names (or the pattern) it stands for
    splits: int = 1  # >1: fused projection split into this many Gaussian matrices


def _model_type(model: nn.Module) -> Optional[str]:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


def find_block_list(model: nn.Module, spec: ArchitectureSpec) -> tuple[str, nn.ModuleList]:
    """The qualified name and the ``ModuleList`` of ``model``'s transformer blocks (one-line error if absent)."""
    for suffix in spec.block_lists:
        for name, module in model.named_modules():
            if isinstance(module, nn.ModuleList) and (name == suffix or name.endswith("." + suffix)):
                return name, module
    raise ValueError(f"could not find the transformer blocks (looked for a ModuleList named {spec.block_lists})")


_find_block_list = find_block_list  # the former private name (kept while callers move to the public one)


def count_blocks(model: nn.Module) -> Optional[int]:
    """Number of transformer blocks of a mapped architecture, or of numbered modules of a mapped CNN
    (None when unmapped)."""
    entries = conv_entries(model)
    if entries is not None:
        return max((e.index for e in entries), default=0)
    spec = ARCHITECTURES.get(_model_type(model) or "")
    if spec is None:
        return None
    return len(find_block_list(model, spec)[1])


def paper_block_modules(model: nn.Module) -> Optional[nn.ModuleList]:
    """The transformer blocks of ``model`` when the paper counts a block's parameters as a whole (its
    architecture's ``paper_counts`` is ``"block"``); None when it counts the replaced matrices only."""
    spec = ARCHITECTURES.get(_model_type(model) or "")
    if spec is None or spec.paper_counts != "block" or conv_entries(model) is not None:
        return None
    return find_block_list(model, spec)[1]


def _is_fc(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def resolve_targets(model: nn.Module, config: IsoGaussConfig) -> list[Target]:
    """The modules of ``model`` that ``config`` selects, with clear errors for bad selections."""
    model_type = _model_type(model)
    entries = conv_entries(model)
    if entries is not None:
        return _resolve_cnn(model, config, entries, model_type)
    spec = ARCHITECTURES.get(model_type or "")
    names = config.target_modules
    canonical = names is None or all(t in CANONICAL_TARGETS for t in names)
    if spec is not None and canonical:
        return _resolve_mapped(model, config, spec, model_type)
    if names is None:
        known = ", ".join(sorted({*ARCHITECTURES, *CNN_ARCHITECTURES}))
        raise ValueError(
            f"no layer map for model_type {model_type!r} ({type(model).__name__}); known architectures: {known}. "
            f"Pass target_modules=[regex, ...] matching full module names (e.g. r'layers\\.\\d+\\.fc1')"
        )
    return _resolve_patterns(model, config)


def _resolve_mapped(model, config, spec, model_type) -> list[Target]:
    list_name, blocks = find_block_list(model, spec)
    n_blocks = len(blocks)
    layers = config.layers if config.layers is not None else list(range(1, n_blocks + 1))
    out_of_range = [b for b in layers if b > n_blocks]
    if out_of_range:
        raise ValueError(
            f"layers {out_of_range} out of range for {type(model).__name__} ({model_type}) with {n_blocks} blocks: "
            f"valid block indices are 1..{n_blocks} (1-based)"
        )
    wanted = list(config.target_modules) if config.target_modules is not None else list(spec.targets)
    unknown = [t for t in wanted if t not in spec.targets]
    if unknown:
        raise ValueError(
            f"target_modules {unknown} do not exist in {model_type}; its targets are {list(spec.targets)}"
        )
    for fused_path, parts in spec.fused.items():
        chosen = [p for p in parts if p in wanted]
        if chosen and len(chosen) != len(parts):
            raise ValueError(
                f"{model_type} fuses {', '.join(parts)} in one module ({fused_path}); select all of them or none "
                f"(got {chosen})"
            )
    targets: list[Target] = []
    for b in sorted(layers):
        block = blocks[b - 1]
        seen: set[str] = set()
        for canon in wanted:
            path = next((p for p in spec.targets[canon] if _get_submodule(block, p) is not None), None)
            if path is None:
                raise ValueError(
                    f"block {b} of {type(model).__name__} has none of {spec.targets[canon]} for target {canon!r}; "
                    f"is this transformers version supported?"
                )
            if path in seen:
                continue
            seen.add(path)
            module = _get_submodule(block, path)
            name = f"{list_name}.{b - 1}.{path}" if path else f"{list_name}.{b - 1}"  # "" = the block itself
            if not _is_fc(module):
                raise ValueError(f"{name} is a {type(module).__name__}, not a fully connected layer")
            fused = spec.fused.get(path)
            targets.append(
                Target(
                    name=name,
                    block=b,
                    targets=fused if fused else (canon,),
                    splits=len(fused) if fused else 1,
                )
            )
    return targets


def _resolve_patterns(model, config) -> list[Target]:
    patterns = []
    for p in config.target_modules:
        try:
            patterns.append((p, re.compile(p)))
        except re.error as e:
            raise ValueError(f"target_modules pattern {p!r} is not a valid regular expression: {e}") from None
    try:
        layer_re = re.compile(config.layers_pattern)
    except re.error as e:
        raise ValueError(f"layers_pattern {config.layers_pattern!r} is not a valid regular expression: {e}") from None
    fc_names = [name for name, module in model.named_modules() if name and (_is_fc(module) or is_conv_module(module))]
    targets: list[Target] = []
    found_blocks: set[int] = set()
    for raw, pattern in patterns:
        matched = [n for n in fc_names if pattern.fullmatch(n)]
        if not matched:
            sample = ", ".join(fc_names[:6]) + (" ..." if len(fc_names) > 6 else "")
            raise ValueError(
                f"target_modules pattern {raw!r} matches no nn.Linear/Conv1D module or convolution (full-name match); "
                f"fully connected modules in this model include: {sample}"
            )
        for name in matched:
            block = None
            m = layer_re.search("." + name + ".")
            if m:
                block = int(m.group(1)) + 1
            if config.layers is not None:
                if block is None or block not in config.layers:
                    continue
                found_blocks.add(block)
            if any(t.name == name for t in targets):
                continue
            module = model.get_submodule(name)
            if is_conv_module(module):
                check_supported_conv(module, name)
            targets.append(Target(name=name, block=block, targets=(raw,)))
    if config.layers is not None:
        missing = sorted(set(config.layers) - found_blocks)
        if missing:
            raise ValueError(
                f"layers {missing} select no module matched by target_modules {config.target_modules} "
                f"(block index read with layers_pattern {config.layers_pattern!r}, 1-based)"
            )
    return targets


def _resolve_cnn(model: nn.Module, config: IsoGaussConfig, entries: list[ConvEntry], model_type: str) -> list[Target]:
    """A mapped CNN: ``layers`` are module numbers, ``target_modules`` selector words or patterns
    (:mod:`isogauss_hf.mapping_cnn`)."""
    where = f"{type(model).__name__} ({model_type})"
    count = max((e.index for e in entries), default=0)
    layers = config.layers
    out_of_range = [b for b in (layers or []) if b > count]
    if out_of_range:
        raise ValueError(f"layers {out_of_range} out of range for {where} with {count} numbered modules: valid "
                         f"module numbers are 1..{count} (1-based, the paper's numbering; see isogauss_hf.mapping_cnn)")
    words = selector_words(entries)
    selectors = []
    for raw in config.target_modules or []:
        if raw in words:
            selectors.append(lambda e, w=raw: entry_has(e, w))
            continue
        try:
            pattern = re.compile(raw)
        except re.error as e:
            raise ValueError(f"target_modules {raw!r} is neither a selector word of {model_type} nor a valid regular "
                             f"expression ({e}); selector words: {', '.join(words)}") from None
        if not any(pattern.fullmatch(e.name) for e in entries):
            raise ValueError(f"target_modules {raw!r} selects no module of {where}: selector words are "
                             f"{', '.join(words)}, or a regular expression matching full module names such as "
                             f"{entries[0].name!r}")
        selectors.append(lambda e, p=pattern: p.fullmatch(e.name) is not None)
    chosen = [e for e in entries if (layers is None or e.index in layers)
              and (not selectors or any(select(e) for select in selectors))]
    missing = sorted(set(layers or []) - {e.index for e in chosen})
    if missing:
        roles = "; ".join(f"module {i} is {'+'.join(e.role for e in entries if e.index == i)}" for i in missing)
        raise ValueError(f"layers {missing} select no module matched by target_modules {config.target_modules} in "
                         f"{where} ({roles})")
    targets = []
    for e in chosen:
        module = model.get_submodule(e.name)
        if is_conv_module(module):
            check_supported_conv(module, e.name)
        elif not _is_fc(module):
            raise ValueError(f"{e.name} is a {type(module).__name__}, neither a convolution nor a fully connected layer")
        targets.append(Target(name=e.name, block=e.index, targets=(e.role,)))
    return targets


def _get_submodule(root: nn.Module, path: str) -> Optional[nn.Module]:
    if path == "":  # the block itself is the target (e.g. one nn.Linear per block)
        return root
    module = root
    for part in path.split("."):
        module = getattr(module, part, None) if not isinstance(module, nn.ModuleList) else (
            module[int(part)] if part.isdigit() and int(part) < len(module) else None)
        if module is None or not isinstance(module, nn.Module):
            return None
    return module
