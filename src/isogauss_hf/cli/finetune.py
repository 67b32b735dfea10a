"""``isogauss-finetune``: fine-tune a transformers model with Isotropic Gaussian layers (or its dense baseline).

Examples::

    isogauss-finetune --recipe minilm-bbc-news                 # dense baseline and Gaussian model side by side
    isogauss-finetune --recipe bert-ag-news --layers 4,8,12 --rule gdu --dry-run
    isogauss-finetune --recipe ffn8-mnist --layers none        # the dense baseline only

Training is ``transformers.Trainer`` with :class:`~isogauss_hf.IsoGaussCallback` (one GDU/WDU step of every
Gaussian layer per optimizer step, Algorithms 1-2). Output directory layout::

    OUTPUT_DIR/run.json          the resolved plan (marks the directory as an isogauss-finetune run)
    OUTPUT_DIR/results.json      metrics, parameter report, resolved config, wall time, library versions
    OUTPUT_DIR/model/            final model (compressed checkpoint when Gaussian) + tokenizer
    OUTPUT_DIR/dense-baseline/   the dense model of --compare-dense
    OUTPUT_DIR/checkpoints/RUN/  Trainer checkpoints while training (removed once the run is saved)

Bad input (unknown recipe/model/dataset, blocks out of range, missing columns, an output directory of
another run without --overwrite, --push-to-hub without a token) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from ..recipes import TASKS, Recipe, RecipeError, apply_overrides, list_recipes, load_recipe, recipes_dir
from .data import DATASETS, UsageError, label_names, load_task_dataset

__all__ = ["main", "build_parser", "resolve_recipe"]

PROG = "isogauss-finetune"
RUN_MARKER = "run.json"
RESULTS_NAME = "results.json"
RESUME = False  # set by --resume-from-checkpoint


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Fine-tune a Hugging Face model whose selected fully connected layers are "
                                      "Isotropic Gaussian layers (GDU/WDU), or its dense baseline.")
    p.add_argument("--recipe", help="recipe name in recipes/ (see --list-recipes) or path to a recipe YAML")
    p.add_argument("--model", help="alias (bert, bert-large, gpt2, vit, minilm, ffn8), hub id or local model directory")
    p.add_argument("--dataset", help="dataset name (see --list-recipes) or a local .csv/.json/.jsonl/.parquet/dir")
    p.add_argument("--task", choices=TASKS, help="task, when no recipe gives it")
    p.add_argument("--layers", help="1-based blocks made Gaussian, e.g. 4,8,12; 'none' = the dense baseline")
    p.add_argument("--rule", help="distribution update: gdu | wdu")
    p.add_argument("--noise", help="weight sampling: resample | seeded")
    p.add_argument("--num-samples", type=int, help="evaluation draws averaged (Table 9: 10; 100 for 8FFN)")
    p.add_argument("--distribution-lr", type=float,
                   help="learning rate of the GDU/WDU step (default: the optimizer's current lr)")
    p.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                   help="standardize Gaussian-layer inputs (Appendix D)")
    p.add_argument("--epochs", type=float, help="training epochs")
    p.add_argument("--max-steps", type=int, help="training steps (overrides --epochs)")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--batch-size", type=int, help="training batch size")
    p.add_argument("--max-length", type=int, help="maximum tokens per example")
    p.add_argument("--doc-stride", type=int, help="question-answering: overlap of context windows, in tokens")
    p.add_argument("--train-samples", type=int, help="use at most this many training examples")
    p.add_argument("--eval-samples", type=int, help="evaluate on at most this many examples")
    p.add_argument("--seed", type=int, help="seed of training, data order and noise")
    p.add_argument("--compare-dense", action=argparse.BooleanOptionalAction, default=None,
                   help="also train the dense baseline and print both side by side")
    p.add_argument("--output-dir", help="where results.json and the models go (default: runs/RECIPE)")
    p.add_argument("--overwrite", action="store_true", help="replace the output directory of an earlier run")
    p.add_argument("--resume-from-checkpoint", action="store_true",
                   help="continue an interrupted run in --output-dir from its last Trainer checkpoint "
                        "(statistics, noise state and step are restored; runs that had finished are trained again)")
    p.add_argument("--push-to-hub", metavar="REPO", help="push the final model to this Hub repo (needs a token)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit without training")
    p.add_argument("--list-recipes", action="store_true", help="list recipes, datasets and model aliases, then exit")
    return p


_FLAG_TO_FIELD = {
    "model": "model", "dataset": "dataset", "task": "task", "layers": "layers", "rule": "rule", "noise": "noise",
    "num_samples": "num_samples", "distribution_lr": "distribution_lr", "standardize": "standardize", "epochs": "epochs", "max_steps": "max_steps",
    "lr": "lr", "batch_size": "batch_size", "max_length": "max_length", "doc_stride": "doc_stride", "train_samples": "train_samples",
    "eval_samples": "eval_samples", "seed": "seed", "compare_dense": "compare_dense",
}


def resolve_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe named by ``--recipe`` (or built from flags) with the command-line flags applied."""
    overrides = {field: getattr(args, flag) for flag, field in _FLAG_TO_FIELD.items()}
    if args.max_steps is not None and args.epochs is None:
        overrides["max_steps"] = args.max_steps
    if args.epochs is not None and args.max_steps is None:
        overrides["max_steps"] = -1  # --epochs alone wins over the recipe's max_steps
    if args.recipe:
        return apply_overrides(load_recipe(args.recipe), overrides)
    missing = [f"--{n}" for n in ("model", "dataset") if getattr(args, n) is None]
    if missing:
        raise UsageError(f"give --recipe NAME, or {' and '.join(missing)} (see --list-recipes)")
    task = args.task or (DATASETS[args.dataset].task if args.dataset in DATASETS else None)
    if task is None:
        raise UsageError(f"--task is needed for dataset {args.dataset!r} (one of {', '.join(TASKS)})")
    base = Recipe(name="custom", task=task, model=args.model, dataset=args.dataset, purpose="demo")
    return apply_overrides(base, {k: v for k, v in overrides.items() if k not in ("model", "dataset", "task")})


# ------------------------------------------------------------------------------------------- helpers
def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("isogauss-hf", "torch", "transformers", "datasets", "accelerate", "safetensors", "rouge-score",
                "sacrebleu"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _isogauss_config(recipe: Recipe):
    from ..config import IsoGaussConfig

    return IsoGaussConfig(
        layers=list(recipe.layers), target_modules=recipe.target_modules, rule=recipe.rule, noise=recipe.noise,
        seed=recipe.seed, num_samples=recipe.num_samples, standardize=recipe.standardize,
        distribution_lr=recipe.distribution_lr, std_floor=recipe.std_floor,
    )


def _convert(model: Any, recipe: Recipe) -> Any:
    from ..model import get_isogauss_model

    try:
        return get_isogauss_model(model, _isogauss_config(recipe))
    except ValueError as e:  # blocks out of range, unknown targets, unmapped architecture
        raise UsageError(f"{e}") from None


def _short_report(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("replaced_weights", "gaussian_parameters", "ratio", "num_matrices",
                                   "dense_model_parameters", "isogauss_model_parameters")}


def _dense_report(model: Any) -> dict[str, Any]:
    n = sum(p.numel() for p in model.parameters())
    return {"replaced_weights": 0, "gaussian_parameters": 0, "ratio": 0.0, "num_matrices": 0,
            "dense_model_parameters": n, "isogauss_model_parameters": n}


def _fmt_int(n: Any) -> str:
    return f"{int(n):,}" if isinstance(n, (int, float)) else str(n)


def _cap(ds: Any, n: Optional[int], seed: int) -> Any:
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n)).flatten_indices()


def _describe_recipe(recipe: Recipe) -> str:
    kind = {"paper": "paper recipe (needs the Hugging Face Hub)", "demo": "offline run on installed real data",
            "pipeline-check": "pipeline check on a small from-scratch model (not a reproduction)"}[recipe.purpose]
    return kind


# ------------------------------------------------------------------------------------------- dry run
def dry_run(recipe: Recipe, output_dir: str) -> int:
    from ..mapping import count_blocks
    from .data import HubUnavailable
    from .pipelines import build_meta_model, load_config, resolve_model_source

    lines = [f"recipe      {recipe.name}: {recipe.description or '-'}",
             f"kind        {_describe_recipe(recipe)}" + (f"; {recipe.paper_reference}" if recipe.paper_reference else ""),
             f"task        {recipe.task} (metric: {recipe.metric})"]
    source = resolve_model_source(recipe)
    config, where = load_config(recipe, source)
    lines.append(f"model       {recipe.model} -> {where}")
    if recipe.layers is not None:  # blocks out of range etc. fail before any data is loaded
        _convert(build_meta_model(recipe, copy.deepcopy(config), None), recipe)
    labels: Optional[list[str]] = None
    try:
        data = load_task_dataset(recipe.dataset, recipe.task, recipe.dataset_options, recipe.seed)
        train_n, test_n = len(data["train"]), len(data["test"])
        sizes = {"train": min(train_n, recipe.train_samples or train_n), "test": min(test_n, recipe.eval_samples or test_n)}
        if recipe.task in ("text-classification", "image-classification"):
            labels = label_names(data)
        data_line = (f"{recipe.dataset}: train {_fmt_int(sizes['train'])} of {_fmt_int(train_n)}, "
                     f"test {_fmt_int(sizes['test'])} of {_fmt_int(test_n)}" + (f", {len(labels)} classes" if labels else ""))
    except HubUnavailable as e:
        data_line = f"{recipe.dataset}: {e}"
    lines.append(f"dataset     {data_line}")
    if labels is None and recipe.task in ("text-classification", "image-classification"):
        known = DATASETS[recipe.dataset].num_classes if recipe.dataset in DATASETS else None
        labels = [str(i) for i in range(known or getattr(config, "num_labels", 2))]
    meta = build_meta_model(recipe, config, labels)
    n_blocks = count_blocks(meta)
    lines.append(f"blocks      {n_blocks if n_blocks is not None else 'unmapped architecture'}"
                 f" ({getattr(config, 'model_type', '?')})")
    plans = []
    if recipe.layers is None:
        plans.append(("dense baseline", None))
    else:
        if recipe.compare_dense:
            plans.append(("dense baseline", None))
        plans.append((f"Gaussian layers {','.join(map(str, recipe.layers))}", recipe.layers))
    for title, layers in plans:
        if layers is None:
            report = _dense_report(meta)
            lines.append(f"run         {title}: {_fmt_int(report['dense_model_parameters'])} parameters, backprop only")
            continue
        model = _convert(build_meta_model(recipe, config, labels), recipe)
        report = model.parameter_report()
        dist = f", distribution lr {recipe.distribution_lr:g}" if recipe.distribution_lr is not None else ""
        lines.append(f"run         {title} (rule {recipe.rule}, noise {recipe.noise}, num_samples {recipe.num_samples}"
                     f"{dist})")
        for block, entry in report["per_block"].items():
            lines.append(f"  block {block:>3}  {len(entry['modules'])} modules, {_fmt_int(entry['replaced_weights'])} "
                         f"weights -> {_fmt_int(entry['gaussian_parameters'])} statistics ({100 * entry['ratio']:.2f}%)")
            for name in entry["modules"]:
                lines.append(f"             {name}")
        lines.append(f"  total      {_fmt_int(report['replaced_weights'])} weights -> "
                     f"{_fmt_int(report['gaussian_parameters'])} statistics ({100 * report['ratio']:.2f}%); model "
                     f"{_fmt_int(report['dense_model_parameters'])} -> {_fmt_int(report['isogauss_model_parameters'])} "
                     f"parameters")
    steps = f"{recipe.max_steps} steps" if recipe.max_steps > 0 else f"{recipe.epochs:g} epochs"
    lines.append(f"training    {steps}, {recipe.optimizer} lr {recipe.lr:g}, batch {recipe.batch_size}, "
                 f"weight decay {recipe.weight_decay:g}, max_length {recipe.max_length}, seed {recipe.seed}")
    out = Path(output_dir).expanduser()
    busy = out.is_dir() and any(out.iterdir())
    lines.append(f"output      {output_dir}" + (" (not empty: a real run needs --overwrite or another --output-dir)"
                                                 if busy else ""))
    print("\n".join(lines))
    print("dry run: nothing trained")
    return 0


# ------------------------------------------------------------------------------------------- output dir
def prepare_output_dir(path: str, overwrite: bool, resume: bool = False) -> Path:
    out = Path(path).expanduser()
    if resume:
        if overwrite:
            raise UsageError("--resume-from-checkpoint and --overwrite exclude each other")
        if not (out / RUN_MARKER).is_file():
            raise UsageError(f"--resume-from-checkpoint: {path!r} holds no isogauss-finetune run to resume")
        return out
    if out.exists() and not out.is_dir():
        raise UsageError(f"output dir {path!r} is a file")
    if out.is_dir() and any(out.iterdir()):
        is_run = (out / RUN_MARKER).is_file() or (out / RESULTS_NAME).is_file()
        if not is_run:
            raise UsageError(f"output dir {path!r} is not empty and holds no isogauss-finetune run; choose another "
                             f"--output-dir")
        if not overwrite:
            raise UsageError(f"output dir {path!r} holds another run; pass --overwrite to replace it or choose another "
                             f"--output-dir")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _hub_token() -> Optional[str]:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # pragma: no cover - very old huggingface_hub
        return None


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- training
def _training_args(recipe: Recipe, output_dir: Path) -> Any:
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.eval_batch_size or recipe.batch_size,
        learning_rate=recipe.lr,
        weight_decay=recipe.weight_decay,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_steps=recipe.warmup_ratio,
        optim="sgd" if recipe.optimizer == "sgd" else "adamw_torch",
        optim_args=f"momentum={recipe.momentum}" if recipe.optimizer == "sgd" and recipe.momentum else None,
        eval_strategy="no",
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=1,
        logging_steps=recipe.logging_steps,
        seed=recipe.seed,
        data_seed=recipe.seed,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        remove_unused_columns=True,
        disable_tqdm=False,
    )


def _train_one(recipe: Recipe, layers: Optional[list[int]], ctx: dict[str, Any], out: Path, run_name: str,
               save_dir: Path) -> dict[str, Any]:
    from transformers import Trainer

    from ..callback import IsoGaussCallback
    from .pipelines import load_model

    run_recipe = apply_overrides(recipe, {"layers": layers if layers is not None else "none"})
    model = load_model(run_recipe, ctx["source"], ctx["labels"])
    gaussian = layers is not None
    if gaussian:
        model = _convert(model, run_recipe)
        report = _short_report(model.parameter_report())
        report["per_block"] = model.parameter_report()["per_block"]
    else:
        report = _dense_report(model)
    pipeline = ctx["pipeline"]
    args = _training_args(run_recipe, out / "checkpoints" / run_name)
    args.remove_unused_columns = pipeline.remove_unused_columns
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ctx["train"],
        data_collator=pipeline.collator(),
        processing_class=ctx["tokenizer"],
        compute_metrics=pipeline.compute_metrics(),
        callbacks=[IsoGaussCallback()] if gaussian else None,
    )
    print(f"\n== {run_name}: " + (f"Gaussian layers {','.join(map(str, layers))} ({recipe.rule})" if gaussian
                                  else "dense baseline (back-propagation)"), flush=True)
    start = time.time()
    checkpoints = out / "checkpoints" / run_name
    resume = RESUME and checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    if resume:
        print(f"   resuming from the last checkpoint in {checkpoints}", flush=True)
    train_output = trainer.train(resume_from_checkpoint=True if resume else None)
    train_time = time.time() - start
    start = time.time()
    metrics = pipeline.evaluate(trainer, model, ctx["raw_test"], ctx["test"])
    eval_time = time.time() - start
    model.save_pretrained(str(save_dir))
    if ctx["tokenizer"] is not None:
        ctx["tokenizer"].save_pretrained(str(save_dir))
    shutil.rmtree(out / "checkpoints" / run_name, ignore_errors=True)  # the saved model supersedes them
    if (out / "checkpoints").is_dir() and not any((out / "checkpoints").iterdir()):
        (out / "checkpoints").rmdir()
    record = {
        "name": run_name,
        "layers": layers,
        "gaussian": gaussian,
        "metrics": metrics,
        "train_loss": float(train_output.training_loss),
        "train_steps": int(train_output.global_step),
        "train_time_s": round(train_time, 2),
        "eval_time_s": round(eval_time, 2),
        "parameter_report": report,
        "isogauss_config": _isogauss_config(run_recipe).to_dict() if gaussian else None,
        "saved_to": str(save_dir),
    }
    ctx["final_model"], ctx["final_dir"] = model, save_dir
    examples = getattr(pipeline, "examples", None)
    if examples:
        record["examples"] = examples
    return record


def _summary_table(recipe: Recipe, runs: list[dict[str, Any]]) -> str:
    metric_names: list[str] = []
    for run in runs:
        for k in run["metrics"]:
            if k not in metric_names and k != "loss":
                metric_names.append(k)
    if recipe.metric in metric_names:
        metric_names.remove(recipe.metric)
        metric_names.insert(0, recipe.metric)
    header = ["run", "layers"] + metric_names + ["replaced weights", "Gaussian stats", "ratio", "model params",
                                                 "train s"]
    rows = []
    for run in runs:
        rep = run["parameter_report"]
        cells = [run["name"], ",".join(map(str, run["layers"])) if run["layers"] else "none (dense)"]
        for m in metric_names:
            v = run["metrics"].get(m)
            cells.append("-" if v is None else (f"{100 * v:.2f}%" if m == "accuracy" else f"{v:.4g}"))
        cells += [_fmt_int(rep["replaced_weights"]), _fmt_int(rep["gaussian_parameters"]),
                  f"{100 * rep['ratio']:.2f}%" if rep["replaced_weights"] else "-",
                  _fmt_int(rep["isogauss_model_parameters"]), f"{run['train_time_s']:.0f}"]
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    line = "-" * len(fmt(header))
    return "\n".join([line, fmt(header), line] + [fmt(r) for r in rows] + [line])


def preflight(recipe: Recipe) -> None:
    """Checks that need no training data: model, Hub access, blocks in range, dataset name (fast)."""
    from .data import HubUnavailable, hub_available, is_local_dataset
    from .pipelines import build_meta_model, load_config, resolve_model_source

    source = resolve_model_source(recipe)
    config, where = load_config(recipe, source)  # offline: the local cache, else a known config + a note
    if "must be downloaded" in where:
        raise HubUnavailable(where.split(";")[0])
    if recipe.layers is not None:
        _convert(build_meta_model(recipe, copy.deepcopy(config), None), recipe)
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


def run_training(recipe: Recipe, out: Path, push_to_hub: Optional[str]) -> int:
    import transformers

    from .pipelines import load_config, load_tokenizer, make_pipeline, resolve_model_source

    wall_start = time.time()
    results: dict[str, Any] = {
        "status": "running",
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe.to_dict(),
        "kind": _describe_recipe(recipe),
        "versions": _versions(),
        "runs": [],
    }
    _write_json(out / RUN_MARKER, {"recipe": recipe.to_dict(), "started_at": results["started_at"]})
    results_path = out / RESULTS_NAME
    ctx: dict[str, Any] = {}

    def flush(status: str, error: Optional[str] = None) -> None:
        results["status"] = status
        results["wall_time_s"] = round(time.time() - wall_start, 2)
        if error:
            results["error"] = error
        _write_json(results_path, results)

    try:
        transformers.set_seed(recipe.seed)
        source = resolve_model_source(recipe)
        config, where = load_config(recipe, source)
        tokenizer = load_tokenizer(recipe, source)
        data = load_task_dataset(recipe.dataset, recipe.task, recipe.dataset_options, recipe.seed)
        data["train"] = _cap(data["train"], recipe.train_samples, recipe.seed)
        data["test"] = _cap(data["test"], recipe.eval_samples, recipe.seed)
        labels = label_names(data) if recipe.task in ("text-classification", "image-classification") else None
        pipeline = make_pipeline(recipe, tokenizer, config)
        train, test = pipeline.prepare(data)
        results["model"] = {"requested": recipe.model, "source": where}
        results["dataset"] = {"name": recipe.dataset, "train": len(data["train"]), "test": len(data["test"]),
                              "labels": labels}
        flush("running")
        ctx.update({"source": source, "labels": labels, "tokenizer": tokenizer, "pipeline": pipeline, "train": train,
               "test": test, "raw_test": data["test"]})
        plans: list[tuple[str, Optional[list[int]], Path]] = []
        if recipe.layers is None:
            plans.append(("dense", None, out / "model"))
        else:
            if recipe.compare_dense:
                plans.append(("dense", None, out / "dense-baseline"))
            plans.append(("isogauss", recipe.layers, out / "model"))
        for run_name, layers, save_dir in plans:
            results["runs"].append(_train_one(recipe, layers, ctx, out, run_name, save_dir))
            flush("running")
        print("\n" + _summary_table(recipe, results["runs"]))
        if recipe.purpose == "pipeline-check":
            print("(pipeline check on a small from-scratch model: not a reproduction of the paper)")
        flush("completed")
        print(f"results: {results_path}  (wall time {results['wall_time_s']:.0f} s)")
    except KeyboardInterrupt:
        flush("interrupted", "KeyboardInterrupt")
        print(f"\n{PROG}: interrupted; completed runs and partial results are in {results_path}", file=sys.stderr)
        return 130
    except UsageError as e:
        if not results["runs"]:  # bad input found before anything was trained: leave no run behind
            shutil.rmtree(out, ignore_errors=True)
        else:
            flush("failed", str(e))
        raise
    except Exception as e:
        flush("failed", f"{type(e).__name__}: {e}")
        traceback.print_exc()
        print(f"{PROG}: error: {type(e).__name__}: {e} (partial results in {results_path})", file=sys.stderr)
        return 1
    if push_to_hub:
        try:
            _push(ctx, push_to_hub, results_path)
        except Exception as e:  # training is done and saved; only the upload failed
            results["push_error"] = f"{type(e).__name__}: {e}"
            _write_json(results_path, results)
            print(f"{PROG}: error: --push-to-hub failed ({type(e).__name__}: {e}); the trained model is in "
                  f"{ctx['final_dir']}", file=sys.stderr)
            return 2 if isinstance(e, UsageError) else 1
    return 0


def _can_push(model_or_class: Any) -> bool:
    """Whether the class itself defines ``push_to_hub`` (IsoGaussModel would otherwise forward the lookup
    to the wrapped transformers model and push dense weights)."""
    cls = model_or_class if isinstance(model_or_class, type) else type(model_or_class)
    return hasattr(cls, "push_to_hub")


def _push(ctx: dict[str, Any], repo: str, results_path: Path) -> None:
    from ..model import IsoGaussModel

    model, save_dir, tokenizer = ctx["final_model"], ctx["final_dir"], ctx["tokenizer"]
    if not _can_push(model):
        raise UsageError("--push-to-hub: pushing Gaussian models is not available yet in this isogauss-hf version")
    if isinstance(model, IsoGaussModel):  # compressed checkpoint + tokenizer + model card from results.json
        model.push_to_hub(repo, token=_hub_token(), results=str(results_path), checkpoint_dir=str(save_dir))
    else:
        model.push_to_hub(repo, token=_hub_token())
        if tokenizer is not None:
            tokenizer.push_to_hub(repo, token=_hub_token())
    print(f"pushed the final model to https://huggingface.co/{repo}")


def _list_everything() -> None:
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
    print("model aliases:")
    for name, alias in MODEL_ALIASES.items():
        print(f"  {name:28s} {alias.description}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.list_recipes:
            _list_everything()
            return 0
        recipe = resolve_recipe(args)
        output_dir = args.output_dir or os.path.join("runs", recipe.name)
        if args.dry_run:
            return dry_run(recipe, output_dir)
        if args.push_to_hub:
            if not _hub_token():
                raise UsageError("--push-to-hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
            from ..model import IsoGaussModel

            if recipe.layers is not None and not _can_push(IsoGaussModel):
                raise UsageError("--push-to-hub: pushing Gaussian models is not available yet in this isogauss-hf "
                                 "version (use --layers none, or push OUTPUT_DIR/model with huggingface_hub)")
        preflight(recipe)
        global RESUME
        RESUME = bool(args.resume_from_checkpoint)
        out = prepare_output_dir(output_dir, args.overwrite, RESUME)
        return run_training(recipe, out, args.push_to_hub)
    except (UsageError, RecipeError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:  # MissingAssetError and friends: the message names the fix
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
