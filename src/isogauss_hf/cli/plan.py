"""What a call of ``isogauss-finetune`` will do: checks before training, the data, the plan and ``--dry-run``.

* :func:`preflight` — fast checks that need no training data (model, Hub access, blocks in range,
  dataset name), so bad input fails before an output directory exists;
* :func:`data_lines` — the data as the runs get it (:func:`isogauss_hf.cli.data.resolve_data`: columns,
  cleaning, split, the ``--train-samples`` / ``--eval-samples`` caps): sizes, split seed and stratification,
  class balance, majority-class rate, dropped rows (printed by the dry run and at the start of a real run);
* :func:`dry_run` — the whole plan: model, blocks (and the block scan's scores for ``--layers auto:K``:
  the weights are loaded then), every variant (dense, Gaussian, baselines) with the modules it replaces
  and its parameter report, the classifier head's parameters (``classifier_hidden``), the data, training
  settings and the preset they come from, output directory;
* :func:`list_everything` — ``--list-recipes``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Optional

from ..errors import HubUnavailable, RecipeError, UsageError
from ..recipe_checks import describe_preset
from ..recipes import Recipe, list_recipes, load_recipe, recipes_dir
from .data import DATASETS, TaskData, resolve_data
from .dataprep import CLASSIFICATION_TASKS, describe_balance, describe_split
from .report import fmt_int
from .variants import KINDS, Variant, build_variant, plan_variants

__all__ = ["describe_recipe", "preflight", "data_lines", "training_lines", "dry_run", "list_everything"]

_KINDS = {"paper": "paper recipe (needs the Hugging Face Hub)", "demo": "offline run on installed real data",
          "pipeline-check": "pipeline check on a small from-scratch model (not a reproduction)",
          "custom": "custom run (model and dataset from the command line, no recipe)"}


def describe_recipe(recipe: Recipe) -> str:
    return _KINDS[recipe.purpose]


def _check_blocks(recipe: Recipe, config: Any) -> None:
    """Blocks out of range, a bad auto:K, a head that does not fit etc. fail before any data is loaded (on a
    meta-device model: no memory)."""
    from .analysis_hooks import check_auto_k
    from .pipelines import build_meta_model

    check_auto_k(recipe, build_meta_model(recipe, copy.deepcopy(config), None))
    for variant in plan_variants(recipe, Path(".")):
        if variant.config is not None:
            build_variant(build_meta_model(recipe, copy.deepcopy(config), None), variant, recipe.classifier_hidden)


def _check_hardware(recipe: Recipe) -> None:
    """The precision this machine can run and a global batch that splits over the launch's processes."""
    import torch

    from ..recipe_checks import resolve_precision
    from .trainer import per_device_batch, world_size

    try:
        resolve_precision(recipe.precision, torch.cuda.is_available(), False)
    except RecipeError as e:
        raise UsageError(str(e)) from None
    per_device_batch(recipe.batch_size, world_size())


def _check_length(recipe: Recipe, config: Any) -> None:
    """A ``max_length`` beyond the positions the model embeds fails at the first long example: refuse it now."""
    from .pipelines import positions_of

    positions = positions_of(config)
    if recipe.task == "image-classification" or not recipe.max_length or positions is None:
        return
    if recipe.max_length > positions:
        raise UsageError(f"--max-length {recipe.max_length} is more than the {positions} token positions of model "
                         f"{recipe.model!r}; give --max-length {positions} or less")


def preflight(recipe: Recipe) -> None:
    """Checks that need no training data: model, Hub access, blocks in range, dataset name (fast)."""
    from .data import hub_available, is_local_dataset
    from .pipelines import load_config, resolve_model_source

    _check_hardware(recipe)
    source = resolve_model_source(recipe)
    config, where = load_config(recipe, source)  # offline: the local cache, else a known config + a note
    if "must be downloaded" in where:
        raise HubUnavailable(where.split(";")[0])
    _check_length(recipe, config)
    _check_blocks(recipe, config)
    name = recipe.dataset
    if name in DATASETS:
        spec = DATASETS[name]
        if spec.task != recipe.task:
            raise UsageError(f"dataset {name!r} is for {spec.task}, but this recipe's task is {recipe.task}")
        if spec.source == "hub" and not hub_available():
            raise HubUnavailable(f"dataset {name!r} must be downloaded from the Hub (no network here)")
    elif is_local_dataset(name):
        if not os.path.exists(os.path.expanduser(name)):
            raise UsageError(f"dataset path {name!r} does not exist")
    else:
        raise UsageError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))} (or a local "
                         f".csv/.json/.jsonl/.parquet file or dataset directory)")


def data_lines(recipe: Recipe, task_data: TaskData, labels: Optional[list[str]], summary: dict[str, Any]) -> list[str]:
    """The dataset part of the plan, one entry per printed line (the first starts with ``dataset``)."""
    full = task_data.full_rows
    sizes = ", ".join(f"{split} {fmt_int(summary[split]['rows'])} of {fmt_int(full.get(split, summary[split]['rows']))}"
                      for split in ("train", "test"))
    lines = [f"dataset     {recipe.dataset}: {sizes}" + (f", {len(labels)} classes" if labels else "")]
    capped = {s: recipe.seed if seed is None else seed for s, cap, seed in
              (("train", recipe.train_samples, recipe.train_subset_seed),
               ("test", recipe.eval_samples, recipe.eval_subset_seed)) if cap is not None and cap < full.get(s, 0)}
    if len(set(capped.values())) == 1:
        caps = f"{' and '.join(capped)} capped to a random subset (seed {next(iter(capped.values()))})"
    else:
        caps = " and ".join(f"{s} (seed {seed})" for s, seed in capped.items()) + " capped to random subsets"
    lines.append(f"  split     {describe_split(task_data.split)}" + (f"; {caps}" if capped else ""))
    if task_data.columns:
        mapped = ", ".join(f"{target} <- {source!r}" for target, source in task_data.columns.items())
        lines.append(f"  columns   {mapped}")
    for split in ("train", "test"):
        balance = describe_balance(summary[split])
        if balance:
            lines.append(f"  {split:<9} {balance}")
    if task_data.dropped:
        total = sum(task_data.dropped.values())
        per = ", ".join(f"{s} {n:,}" for s, n in task_data.dropped.items())
        lines.append(f"  dropped   {total:,} row{'s' if total != 1 else ''} with an empty or missing text or label "
                     f"({per})")
    return lines


def _head_line(recipe: Recipe, model: Any, dense_head: Optional[int], variant: Variant) -> list[str]:
    if not recipe.classifier_hidden:
        return []
    from ..heads import classifier_parameters

    if variant.kind == "dense":
        return [f"  classifier {fmt_int(dense_head)} parameters (the one-layer head)"]
    return [f"  classifier {fmt_int(classifier_parameters(model))} parameters (two-layer head, hidden "
            f"{recipe.classifier_hidden}) vs {fmt_int(dense_head)} of the dense one-layer head"]


def _variant_lines(recipe: Recipe, config: Any, labels: Optional[list[str]], variants: list[Variant]) -> list[str]:
    from .pipelines import build_meta_model

    lines = []
    for variant in variants:
        dense = build_meta_model(recipe, copy.deepcopy(config), labels)
        dense_head = None
        if recipe.classifier_hidden:
            from ..heads import classifier_parameters

            dense_head = classifier_parameters(dense)
        built = build_variant(dense, variant, recipe.classifier_hidden)
        report = built.report
        if variant.kind == "dense":
            lines.append(f"run         {variant.title}: {fmt_int(report['dense_model_parameters'])} parameters")
            lines += _head_line(recipe, built.model, dense_head, variant)
            continue
        unit = KINDS[variant.kind].unit

        def kept(entry: dict[str, Any]) -> str:
            if unit is None:  # drop: nothing stands in for the weights
                return f"{fmt_int(entry['replaced_weights'])} weights removed"
            return (f"{fmt_int(entry['replaced_weights'])} weights -> {fmt_int(entry['gaussian_parameters'])} {unit} "
                    f"({100 * entry['ratio']:.2f}%)")

        lines.append(f"run         {variant.title}")
        for block, entry in report["per_block"].items():
            lines.append(f"  block {block:>3}  {len(entry['modules'])} modules, {kept(entry)}")
            if variant.kind == "gaussian" and report.get("paper_counts") == "block":
                lines.append(f"             as the paper counts a block (with its biases and layer norms): "
                             f"{fmt_int(entry['paper_dense_parameters'])} -> "
                             f"{fmt_int(entry['paper_isogauss_parameters'])} parameters "
                             f"({100 * entry['paper_isogauss_parameters'] / entry['paper_dense_parameters']:.2f}%)")
            if variant.kind == "gaussian":
                lines += [f"             {name}" for name in entry["modules"]]
        lines.append(f"  total      {kept(report)}; model {fmt_int(report['dense_model_parameters'])} -> "
                     f"{fmt_int(report['isogauss_model_parameters'])} parameters")
        lines += _head_line(recipe, built.model, dense_head, variant)
    return lines


def _auto_plan(recipe: Recipe, task_data: Optional[TaskData], labels: Optional[list[str]]) -> tuple[Recipe, list[str]]:
    """``--dry-run`` of ``auto:K``: the block scan needs the weights and the train split."""
    from .analysis_hooks import auto_lines, pick_blocks, with_blocks
    from .pipelines import load_config, load_tokenizer, make_pipeline, resolve_model_source

    if task_data is None:
        raise UsageError(f"--layers auto:{recipe.auto_layers} needs the train split for the block scan, and dataset "
                         f"{recipe.dataset!r} could not be loaded here")
    source = resolve_model_source(recipe)
    config, _ = load_config(recipe, source)
    pipeline = make_pipeline(recipe, load_tokenizer(recipe, source), config)
    train, _ = pipeline.prepare(task_data.data)
    suggestion = pick_blocks(recipe, source, labels, train, pipeline.collator())
    return with_blocks(recipe, suggestion.blocks), auto_lines(suggestion, min(recipe.calibration_samples, len(train)))


def _hardware(recipe: Recipe) -> str:
    """Precision here (and what ``auto`` becomes on a GPU) and the global batch per process."""
    import torch

    from ..errors import RecipeError
    from ..recipe_checks import PRECISIONS, resolve_precision
    from .trainer import world_size

    cuda = torch.cuda.is_available()
    try:
        here = resolve_precision(recipe.precision, cuda, cuda and torch.cuda.is_bf16_supported())
    except RecipeError as e:
        here = f"refused here ({e})"
    note = f" ({PRECISIONS['auto']})" if recipe.precision == "auto" else ""
    processes = world_size()
    return (f"precision {recipe.precision} -> {here} on this machine{note}; batch {recipe.batch_size} is the global "
            f"batch: {recipe.batch_size / processes:g} per process x {processes} process"
            f"{'es' if processes > 1 else ''} (accelerate launch / torchrun split it)")


def training_lines(recipe: Recipe) -> list[str]:
    """The training settings and the preset the unset ones come from."""
    steps = f"{recipe.max_steps} steps" if recipe.max_steps > 0 else f"{recipe.epochs:g} epochs"
    head = f" (task head {recipe.head_lr:g})" if recipe.head_lr != recipe.lr else ""
    tokens = "" if recipe.task == "image-classification" else f", max_length {recipe.max_length}"
    lines = [f"training    {steps}, {recipe.optimizer} lr {recipe.lr:g}{head}, batch {recipe.batch_size}, weight "
             f"decay {recipe.weight_decay:g}, warmup {recipe.warmup_ratio:g}{tokens}, seed {recipe.seed}"]
    lines.append(f"  hardware  {_hardware(recipe)}")
    if recipe.task == "summarization":
        decoding = ", ".join(f"{k} {v}" for k, v in recipe.generation.items()) or "greedy"
        lines.append(f"  generate  model.generate: {decoding}, max_new_tokens {recipe.max_new_tokens}, left padding")
    filled = ", ".join(recipe.preset_filled) or "nothing (the recipe and flags set every value)"
    lines.append(f"preset      {describe_preset(recipe.preset)}")
    lines.append(f"  from it   {filled}")
    return lines


def dry_run(recipe: Recipe, output_dir: str, output_note: Optional[str] = None) -> int:
    """Print the resolved plan; load the data (never model weights); train and write nothing.

    ``output_note`` replaces what the output line says of a non-empty directory (a sweep's own directory).
    """
    from ..mapping import count_blocks
    from .pipelines import build_meta_model, load_config, resolve_model_source

    lines = [f"recipe      {recipe.name}: {recipe.description or '-'}",
             f"kind        {describe_recipe(recipe)}" + (f"; {recipe.paper_reference}" if recipe.paper_reference else ""),
             f"task        {recipe.task} (metric: {recipe.metric})"]
    source = resolve_model_source(recipe)
    config, where = load_config(recipe, source)
    lines.append(f"model       {recipe.model} -> {where}")
    _check_length(recipe, config)
    _check_blocks(recipe, config)
    labels: Optional[list[str]] = None
    task_data = None
    try:
        task_data, labels, summary = resolve_data(recipe)
        lines += data_lines(recipe, task_data, labels, summary)
    except HubUnavailable as e:
        lines.append(f"dataset     {recipe.dataset}: {e}")
    if recipe.task == "image-classification":
        from .pipelines import describe_images

        lines.append(f"  images    {describe_images(recipe, source, config)}")
    if labels is None and recipe.task in CLASSIFICATION_TASKS:
        known = DATASETS[recipe.dataset].num_classes if recipe.dataset in DATASETS else None
        labels = [str(i) for i in range(known or getattr(config, "num_labels", 2))]
    meta = build_meta_model(recipe, copy.deepcopy(config), labels)
    n_blocks = count_blocks(meta)
    lines.append(f"blocks      {n_blocks if n_blocks is not None else 'unmapped architecture'}"
                 f" ({getattr(config, 'model_type', '?')})")
    if recipe.auto_layers is not None and recipe.layers is None:
        recipe, auto = _auto_plan(recipe, task_data, labels)
        lines += auto
    lines += _variant_lines(recipe, config, labels, plan_variants(recipe, Path(output_dir)))
    lines += training_lines(recipe)
    out = Path(output_dir).expanduser()
    busy = out.is_dir() and any(out.iterdir())
    if output_note is None and busy:
        output_note = "not empty: a real run needs --overwrite or another --output-dir"
    lines.append(f"output      {output_dir}" + (f" ({output_note})" if output_note else ""))
    print("\n".join(lines))
    print("dry run: nothing trained")
    return 0


def list_everything() -> None:
    from .pipelines import MODEL_ALIASES

    print(f"recipes ({recipes_dir()}):")
    for name in list_recipes():
        try:
            r = load_recipe(name)
            print(f"  {name:28s} [{r.purpose}] {r.description}")
        except RecipeError as e:
            print(f"  {name:28s} INVALID: {e}")
    print("datasets:")
    for name, spec in sorted(DATASETS.items()):
        print(f"  {name:28s} [{spec.source}, {spec.task}] {spec.description}")
    print("model aliases (`--model ALIAS` alone runs the recipe named in brackets):")
    for name, alias in MODEL_ALIASES.items():
        print(f"  {name:28s} {alias.description}" + (f" [{alias.recipe}]" if alias.recipe else ""))
    from ..tasks.assets import FETCH_COMMAND, asset_report

    print(f"offline assets (installed by {FETCH_COMMAND}):")
    for name, path in asset_report().items():
        print(f"  {name:28s} {path or f'not installed (run {FETCH_COMMAND})'}")
