"""What :mod:`isogauss_hf.analysis` adds to a fine-tuning run: ``--layers auto:K`` and ``--analyze``.

* :func:`check_auto_k` — K against the model's block count, on the meta-device model (before any weights
  are loaded): ``auto:7`` on a 6-block model is one line, exit 2;
* :func:`pick_blocks` — the block scan on a seeded calibration subset of the prepared train split
  (:func:`~isogauss_hf.analysis.make_calibration_batches` + :func:`~isogauss_hf.analysis.suggest_layers`
  with its default score; the Gaussian draws use the run's noise seed) -> a ``Suggestion``;
  :func:`with_blocks` — the recipe with the picked blocks; :func:`auto_lines` — the plan's lines;
* :func:`write_drift` — ``--analyze``: per-matrix weight drift of the dense run (the pretrained model
  before vs the fine-tuned one, :func:`~isogauss_hf.analysis.weight_drift`) written to
  ``OUTPUT_DIR/analysis/drift-dense.{json,md,png}``; returns the summary ``results.json`` records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError
from ..recipes import Recipe

__all__ = ["check_auto_k", "pick_blocks", "with_blocks", "auto_lines", "write_drift"]


def check_auto_k(recipe: Recipe, meta_model: Any) -> Optional[int]:
    """The number of blocks the scan can choose from (None when the recipe picks none); bad K is one line."""
    if recipe.auto_layers is None or recipe.layers is not None:
        return None
    from ..analysis import find_blocks

    n = len(find_blocks(meta_model)[1])
    k = recipe.auto_layers
    if k > n:
        raise UsageError(f"--layers auto:{k} asks for {k} blocks, but {recipe.model} has {n} "
                         f"(1-based blocks 1..{n})")
    return n


def pick_blocks(recipe: Recipe, source: Any, labels: Optional[list[str]], train: Any, collator: Any) -> Any:
    """Scan the blocks of the pretrained model on ``recipe.calibration_samples`` rows of ``train``; the
    ``Suggestion`` of the ``recipe.auto_layers`` safest blocks."""
    from ..analysis import make_calibration_batches, suggest_layers
    from .pipelines import load_model

    if train is None or len(train) == 0:
        raise UsageError(f"--layers auto:{recipe.auto_layers} needs training examples for the block scan")
    model = load_model(recipe, source, labels)
    model.eval()
    batches = make_calibration_batches(train, collator, num_samples=recipe.calibration_samples,
                                       batch_size=recipe.eval_batch_size or recipe.batch_size, seed=recipe.seed,
                                       model=model)
    config = recipe.isogauss_config
    print(f"block scan for auto:{recipe.auto_layers} on {min(recipe.calibration_samples, len(train))} train "
          f"examples (forward passes only)", flush=True)
    return suggest_layers(model, batches, recipe.auto_layers, seed=config.seed, targets=config.target_modules,
                          progress=True)


def with_blocks(recipe: Recipe, blocks: list[int]) -> Recipe:
    """``recipe`` with ``layers`` = ``blocks`` (the scan's pick) instead of ``auto:K``."""
    return Recipe.from_dict({**recipe.written(), "layers": list(blocks), "auto_layers": None},
                            source=f"recipe {recipe.name!r}")


def auto_lines(suggestion: Any, calibration: int) -> list[str]:
    """The plan's ``layers auto:K`` part: the score of every block, the picked ones marked."""
    lines = suggestion.describe().splitlines()
    out = [f"auto        {lines[0]} (block scan on {calibration} train examples)"]
    out += ["  " + line.strip() for line in lines[1:]]
    out.append(f"  picked    layers {','.join(map(str, suggestion.blocks))}")
    return out


def write_drift(recipe: Recipe, source: Any, labels: Optional[list[str]], model_after: Any, out: Path) -> dict[str, Any]:
    """Weight drift of the dense run: files in ``out/analysis`` and the summary for ``results.json``."""
    from ..analysis import drift_by_block, weight_drift, write_drift_report
    from .pipelines import load_model

    before = load_model(recipe, source, labels)  # the same pretrained weights the run started from
    rows = weight_drift(before, model_after)
    if not rows:
        return {"note": "no mapped fully connected matrices to compare"}
    context = {"model": recipe.model, "dataset": recipe.dataset, "run": "dense",
               "training": f"{recipe.epochs:g} epochs" if recipe.max_steps < 0 else f"{recipe.max_steps} steps"}
    paths = write_drift_report(rows, str(out / "analysis"), basename="drift-dense", context=context)
    per_block = drift_by_block(rows)
    mean = sum(r["wasserstein_relative"] for r in rows) / len(rows)
    return {"files": paths, "matrices": len(rows), "mean_wasserstein_relative": mean,
            "by_block": {str(b): v for b, v in per_block.items()}}
