"""The table of baseline run variants (``drop``, ``lowrank``, ``frozen``) and their parameter reports.

``prepare_baseline("lowrank", model, [3], config)`` returns a :class:`PreparedRun`: the model to train
(changed in place, or wrapped for ``frozen``), a report of the parameters kept, and whether the run needs
:class:`~isogauss_hf.IsoGaussCallback`. The report has the keys of ``IsoGaussModel.parameter_report()``:

* ``replaced_weights`` — weight entries of the matrices the config selects in the chosen blocks;
* ``gaussian_parameters`` — the numbers that stand for them in this variant: the 2n + 2m statistics
  (``frozen``), the r (n + m) factor entries (``lowrank``), 0 (``drop``); ``stand_in`` says which;
* ``ratio`` = gaussian_parameters / replaced_weights, ``num_matrices``, ``per_block``;
* ``dense_model_parameters`` / ``isogauss_model_parameters`` — the whole model before / after.

Plus ``baseline`` (the variant name) and, per variant, ``removed_blocks`` / ``removed_parameters`` (drop)
or ``ranks`` (lowrank).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Union

from torch import nn

from .. import settings
from ..errors import UsageError
from ..mapping import resolve_targets
from ._common import count_parameters
from .drop import block_slots, check_blocks, drop_blocks
from .lowrank import apply_lowrank

__all__ = ["BaselineSpec", "PreparedRun", "BASELINES", "get_baseline", "parse_baselines", "prepare_baseline"]


@dataclass
class PreparedRun:
    """A model ready to be trained as one baseline variant."""

    model: nn.Module = field(metadata={"help": "The model to train and evaluate (changed in place, or wrapped)."})
    report: dict[str, Any] = field(metadata={"help": "Parameters kept (keys of IsoGaussModel.parameter_report())."})
    needs_isogauss_callback: bool = field(
        metadata={"help": "True when training must add IsoGaussCallback (the model holds Gaussian layers)."})
    name: str = field(default="", metadata={"help": "The baseline's name in BASELINES."})


@dataclass(frozen=True)
class BaselineSpec:
    """One entry of :data:`BASELINES`."""

    name: str = field(metadata={"help": "Name used on the command line (--baselines NAME,...)."})
    help: str = field(metadata={"help": "One-line description printed in plans and --help."})
    prepare: Callable[[nn.Module, Optional[list[int]], Any], PreparedRun] = field(
        metadata={"help": "prepare(model, layers, config) -> PreparedRun; layers None = config.layers."})
    needs_isogauss_callback: bool = field(
        default=False, metadata={"help": "Whether the prepared model needs IsoGaussCallback while training."})


def _blocks_of(layers: Optional[list[int]], config) -> Optional[list[int]]:
    return list(layers) if layers is not None else (list(config.layers) if config.layers is not None else None)


def _config_for(config, layers: Optional[list[int]], **changes):
    blocks = _blocks_of(layers, config)
    return dataclasses.replace(config, layers=blocks, **changes)


def _block_sizes(model: nn.Module) -> Optional[dict[str, int]]:
    """Parameters of each transformer block (1-based keys) when the paper counts whole blocks, else None."""
    from ..mapping import paper_block_modules

    blocks = paper_block_modules(model)
    return None if blocks is None else {str(i + 1): count_parameters(b) for i, b in enumerate(blocks)}


def _summary(name: str, stand_in: str, records: list[dict[str, Any]], dense_total: int, variant_total: int,
             blocks_before: Optional[dict[str, int]] = None, blocks_after: Optional[dict[str, int]] = None) -> dict:
    """The report; ``blocks_before`` / ``blocks_after`` (:func:`_block_sizes`) give the paper's whole-block counts
    (a removed block keeps 0), else the paper's counts are the matrices' own."""
    per_block: dict[str, dict[str, Any]] = {}
    for rec in records:
        key = str(rec["block"]) if rec["block"] is not None else "-"
        entry = per_block.setdefault(key, {"replaced_weights": 0, "gaussian_parameters": 0, "modules": []})
        entry["replaced_weights"] += rec["replaced_weights"]
        entry["gaussian_parameters"] += rec["kept"]
        entry["modules"].append(rec["name"])
    for key, entry in per_block.items():
        entry["ratio"] = entry["gaussian_parameters"] / entry["replaced_weights"] if entry["replaced_weights"] else 0.0
        whole = blocks_before is not None and key in blocks_before
        entry["paper_dense_parameters"] = blocks_before[key] if whole else entry["replaced_weights"]
        entry["paper_isogauss_parameters"] = (blocks_after or {}).get(key, 0) if whole else entry["gaussian_parameters"]
    replaced = sum(r["replaced_weights"] for r in records)
    kept = sum(r["kept"] for r in records)
    return {
        "baseline": name,
        "stand_in": stand_in,
        "replaced_weights": replaced,
        "gaussian_parameters": kept,
        "ratio": kept / replaced if replaced else 0.0,
        "num_matrices": sum(r["num_matrices"] for r in records),
        "per_block": per_block,
        "paper_counts": "block" if blocks_before is not None else "matrices",
        "paper_dense_parameters": sum(e["paper_dense_parameters"] for e in per_block.values()),
        "paper_isogauss_parameters": sum(e["paper_isogauss_parameters"] for e in per_block.values()),
        "dense_model_parameters": dense_total,
        "isogauss_model_parameters": variant_total,
    }


def prepare_drop(model: nn.Module, layers: Optional[list[int]], config) -> PreparedRun:
    """Remove the chosen blocks (``layers``, else ``config.layers``; None = all, refused).

    For a CNN whose ``layers`` are convolution-module numbers (:mod:`isogauss_hf.mapping_cnn`), the residual
    blocks holding those modules are removed (the drop baseline of a Gaussian run on the same modules).
    """
    from ..mapping_cnn import conv_entries, resnet_blocks_of_modules

    n_blocks = len(block_slots(model))
    blocks = _blocks_of(layers, config)
    cnn = conv_entries(model) is not None
    targets_config = dataclasses.replace(config, layers=blocks) if blocks is not None else config
    if cnn and blocks is not None:
        blocks = resnet_blocks_of_modules(model, blocks)
    blocks = check_blocks(blocks if blocks is not None else list(range(1, n_blocks + 1)), n_blocks)
    dense_total = count_parameters(model)
    records = []
    for t in resolve_targets(model, targets_config if cnn else dataclasses.replace(config, layers=blocks)):
        weight = getattr(model.get_submodule(t.name), "weight", None)
        size = weight.numel() if weight is not None else 0
        records.append({"name": t.name, "block": t.block, "replaced_weights": size, "kept": 0,
                        "num_matrices": t.splits})
    before = _block_sizes(model)
    drop_blocks(model, blocks)
    report = _summary("drop", "nothing: the blocks are removed", records, dense_total, count_parameters(model),
                      before, {})
    report["removed_blocks"] = blocks
    report["removed_parameters"] = dense_total - report["isogauss_model_parameters"]
    return PreparedRun(model, report, False, "drop")


def prepare_lowrank(model: nn.Module, layers: Optional[list[int]], config) -> PreparedRun:
    """Factor every selected matrix as A (n x r) B (r x m), r (n + m) <= 2n + 2m, SVD-initialised, trainable."""
    dense_total = count_parameters(model)
    before = _block_sizes(model)
    records = apply_lowrank(model, _config_for(config, layers))
    report = _summary("lowrank", "trained factors A (n x r) and B (r x m), r(n+m) <= 2n+2m",
                      [{**r, "kept": r["factor_parameters"]} for r in records], dense_total, count_parameters(model),
                      before, _block_sizes(model))
    report["ranks"] = {r["name"]: r["ranks"] for r in records}
    return PreparedRun(model, report, False, "lowrank")


def prepare_frozen(model: nn.Module, layers: Optional[list[int]], config) -> PreparedRun:
    """Gaussian layers at the statistics fitted to the pretrained weights, never updated (rule 'frozen')."""
    if "frozen" not in settings.RULES:
        raise UsageError(
            f"frozen: this isogauss-hf has no rule 'frozen' (rules: {', '.join(settings.RULES)}); it cannot run the "
            f"frozen baseline"
        )
    from .. import get_isogauss_model  # late: the core imports nothing from baselines

    wrapped = get_isogauss_model(model, _config_for(config, layers, rule="frozen"))
    report = {"baseline": "frozen", "stand_in": "Gaussian row/column statistics fitted once, never updated",
              **wrapped.parameter_report()}
    return PreparedRun(wrapped, report, True, "frozen")


#: name -> baseline run variant. Chosen by :func:`get_baseline` / :func:`prepare_baseline`.
BASELINES: dict[str, BaselineSpec] = {
    "drop": BaselineSpec("drop", "the selected blocks removed; the residual stream passes through", prepare_drop),
    "lowrank": BaselineSpec(
        "lowrank", "each selected matrix as trained rank-r factors at the Gaussian budget (r(n+m) <= 2n+2m), "
        "SVD-initialised", prepare_lowrank),
    "frozen": BaselineSpec(
        "frozen", "Gaussian layers at their initial fitted statistics, never updated (paper Table 8 'BP' row)",
        prepare_frozen, needs_isogauss_callback=True),
}


def get_baseline(name: str) -> BaselineSpec:
    """The :data:`BASELINES` entry ``name``; a one-line error listing the valid names otherwise."""
    spec = BASELINES.get(name) if isinstance(name, str) else None
    if spec is None:
        raise UsageError(f"baseline {name!r} is not known; choose from {', '.join(BASELINES)}")
    return spec


def parse_baselines(value: Union[str, Iterable[str], None]) -> list[str]:
    """``"drop,lowrank"`` or ``["drop", "lowrank"]`` -> checked, de-duplicated names in the given order."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        name = item.strip() if isinstance(item, str) else item
        if name == "":
            continue
        get_baseline(name)
        if name not in names:
            names.append(name)
    return names


def prepare_baseline(name: str, model: nn.Module, layers: Optional[list[int]], config) -> PreparedRun:
    """Look ``name`` up in :data:`BASELINES` and prepare ``model`` (in place) for that run."""
    return get_baseline(name).prepare(model, layers, config)
