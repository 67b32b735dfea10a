"""What a sweep runs: seeds x block sets x variants, each run named by what it is.

``isogauss-finetune --seeds 0,1,2 --layers "3;2,4;auto:3"`` (or either flag alone with several values) asks
for a sweep. :class:`Sweep` holds the resolved recipe, the seeds and the block sets (:func:`parse_block_sets`
checks each like ``--layers``); :meth:`Sweep.recipe_for` is the recipe of one seed and block set, and
:func:`plan_runs` lists every run in the order they train: per seed, the dense run (the teacher of a distilled
sweep) and its distilled control first, then per block set the Gaussian run and the baselines
(:func:`~isogauss_hf.cli.variants.plan_variants`, the same list a single run trains). Each
:class:`PlannedRun` has a name that says variant, blocks and seed (:func:`~isogauss_hf.cli.variants.run_name`:
``gdu-seeded+calib=200_b2,4_s0``), its own directory ``OUTPUT_DIR/runs/NAME`` and a fingerprint of the settings
it depends on, so a rerun reuses a finished run only when they have not changed (:mod:`~isogauss_hf.cli.sweep_store`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import RecipeError, UsageError
from ..recipes import Recipe, apply_overrides
from .variants import Variant, plan_variants, run_name

__all__ = ["Sweep", "PlannedRun", "parse_seeds", "parse_block_sets", "plan_runs", "base_fingerprint", "RUNS_DIR"]

RUNS_DIR = "runs"
#: Recipe fields a sweep varies, or that only some of its runs depend on (their run fingerprints hold them), or
#: that do not change a result (log and checkpoint frequency, descriptions): left out of the sweep's fingerprint.
_NOT_SHARED = ("name", "description", "purpose", "paper_reference", "preset", "seed", "layers", "auto_layers",
               "baselines", "compare_dense", "analyze", "gaussian", "calibrate_steps", "calibration_samples",
               "statistics_lr", "distill_temperature", "distill_alpha", "logging_steps", "save_steps")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: non-negative integers, each once; one-line error otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    if not all(p.isdigit() for p in parts):
        raise UsageError(f"--seeds {text!r}: give non-negative integers separated by commas, e.g. 0,1,2")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r} lists a seed more than once")
    return seeds


def parse_block_sets(recipe: Recipe, texts: list[str]) -> list[str]:
    """The block-set keys of ``--layers "3;2,4;auto:3"`` (``"3"``, ``"2,4"``, ``"auto:3"``, ``"none"``), each checked
    as ``--layers`` is; one-line error for an empty or repeated set."""
    keys = []
    for text in texts:
        if not text.strip():
            raise UsageError(f"--layers {';'.join(texts)!r}: an empty block set between ';' (e.g. \"3;2,4;auto:3\")")
        try:
            r = apply_overrides(recipe, {"layers": text})
        except RecipeError as e:
            raise UsageError(f"--layers block set {text.strip()!r}: {e}") from None
        key = f"auto:{r.auto_layers}" if r.auto_layers is not None else (",".join(map(str, r.layers or [])) or "none")
        if key in keys:
            raise UsageError(f"--layers {';'.join(texts)!r} lists the block set {key} more than once")
        keys.append(key)
    return keys


@dataclass
class Sweep:
    """The recipe (flags applied) and the seeds and block sets to cross it with."""

    recipe: Recipe
    seeds: list[int]
    block_sets: list[str]

    def recipe_for(self, seed: int, blocks: str) -> Recipe:
        """The recipe of one run: ``seed`` (training, data order, noise) and ``blocks`` (a key of ``block_sets``)."""
        return apply_overrides(self.recipe, {"seed": seed, "layers": blocks})


@dataclass
class PlannedRun:
    """One run of a sweep: its seed, block-set key (None for dense runs) and variant (``run_dir`` set)."""

    seed: int
    blocks: Optional[str]
    variant: Variant
    teacher: bool = False  # the dense run whose logits the distilled runs of its seed train on
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.variant.run_dir.name


def base_fingerprint(recipe: Recipe) -> dict[str, Any]:
    """What every run of a sweep shares (model, data, budget, optimizer): a sweep directory holds one."""
    return {k: v for k, v in recipe.to_dict().items() if k not in _NOT_SHARED}


def _run_fingerprint(recipe: Recipe, variant: Variant) -> dict[str, Any]:
    """The settings of ``recipe`` the run of ``variant`` depends on beyond the sweep's shared ones."""
    found: dict[str, Any] = {"kind": variant.kind}
    if variant.config is not None and variant.kind in ("gaussian", "frozen"):
        found["gaussian"] = {k: v for k, v in variant.config.to_dict().items() if k not in ("layers", "seed")}
    if variant.kind == "gaussian":
        found.update(calibrate_steps=variant.calibrate_steps, statistics_lr=variant.statistics_lr)
    if recipe.auto_layers is not None or (variant.kind == "gaussian" and variant.calibrate_steps):
        found["calibration_samples"] = recipe.calibration_samples
    if variant.distill is not None:
        found["distill"] = {"temperature": variant.distill, "alpha": recipe.distill_alpha}
    return found


def _placeholder(recipe: Recipe) -> Recipe:
    """``auto:K`` before the scan: the first K blocks stand in (names and settings do not depend on which)."""
    if recipe.auto_layers is None or recipe.layers is not None:
        return recipe
    from .analysis_hooks import with_blocks

    return with_blocks(recipe, list(range(1, recipe.auto_layers + 1)))


def variants_for(recipe: Recipe, out: Path, seed: int, blocks: str) -> list[tuple[Optional[str], Variant]]:
    """The variants of one seed and block set with their run directories, as ``(block key or None, variant)``."""
    found = []
    for variant in plan_variants(_placeholder(recipe), out):
        key = None if variant.kind == "dense" else blocks
        variant.run_dir = out / RUNS_DIR / run_name(variant.label, key, seed)
        variant.save_dir = variant.run_dir / "model"
        found.append((key, variant))
    return found


def plan_runs(sweep: Sweep, out: Path) -> list[PlannedRun]:
    """Every run of ``sweep`` in training order (see the module docstring); a dense run appears once per seed."""
    runs: list[PlannedRun] = []
    seen: set[str] = set()
    for seed in sweep.seeds:
        per_seed = []
        for blocks in sweep.block_sets:
            recipe = sweep.recipe_for(seed, blocks)
            for key, variant in variants_for(recipe, out, seed, blocks):
                if variant.run_dir.name in seen:
                    continue
                seen.add(variant.run_dir.name)
                teacher = variant.kind == "dense" and variant.distill is None and \
                    recipe.distill_temperature is not None
                per_seed.append(PlannedRun(seed, key, variant, teacher, _run_fingerprint(recipe, variant)))
        runs += sorted(per_seed, key=lambda r: r.blocks is not None)  # dense runs first (stable otherwise)
    return runs
