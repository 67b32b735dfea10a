"""Running the variants of a plan: ``transformers.Trainer`` per variant, results written as each one ends.

:func:`run_training` loads what every variant shares once (model source, config, tokenizer, data,
task pipeline) into the :class:`~isogauss_hf.cli.context.RunContext`, picks the blocks of
``--layers auto:K`` (:mod:`~isogauss_hf.cli.analysis_hooks`), then trains the variants of
:func:`~isogauss_hf.cli.variants.plan_variants` in order with :func:`train_variant` (the Trainer itself:
:mod:`~isogauss_hf.cli.trainer`), printing each one's metrics when it ends, the closing table, and the
warnings of :mod:`~isogauss_hf.cli.verdict` at the end. ``results.json`` records the status
throughout: Ctrl-C and SIGTERM mark it ``interrupted``, a loss (training or evaluation) or a weight that is not
finite ``diverged`` (the run stops at the first such step, exit code 1), any other exception ``failed``.
"""

from __future__ import annotations

import math
import shutil
import signal
import sys
import threading
import time
import traceback
from typing import Any, Optional

from ..errors import TrainingDiverged, UsageError
from .context import RunContext
from .output import RunResults, push_final_model
from .data import resolve_data
from .plan import data_lines, describe_recipe, training_lines
from .report import run_line, summary_table
from .trainer import make_trainer, training_args
from .variants import KINDS, Variant, build_variant, plan_variants
from .verdict import run_warnings

__all__ = ["run_training", "train_variant", "training_args", "Interrupted", "load_teacher_logits", "load_shared",
           "disk_error", "on_sigterm"]

PROG = "isogauss-finetune"


class Interrupted(KeyboardInterrupt):
    """SIGTERM (a job scheduler, ``kill``) turned into an interruption, so results.json is marked."""


def _calibration_batches(ctx: RunContext, model: Any) -> list:
    """``recipe.calibration_samples`` train examples (seeded) as ``model``'s input batches, for the calibration."""
    from ..analysis import make_calibration_batches

    recipe = ctx.recipe
    return make_calibration_batches(ctx.train, ctx.pipeline.collator(), num_samples=recipe.calibration_samples,
                                    batch_size=recipe.batch_size, seed=recipe.seed, model=model)


def train_variant(ctx: RunContext, variant: Variant) -> dict[str, Any]:
    """Train, evaluate and save one variant; its ``results.json`` record."""
    from .pipelines import load_model

    recipe = ctx.recipe
    if variant.distill is not None and ctx.teacher_logits is None:
        raise UsageError(f"run {variant.name!r} is distilled from the dense run of seed {recipe.seed}, which has not "
                         f"run: plan the dense run first (compare_dense)")
    dense = load_model(recipe, ctx.source, ctx.labels)
    dense_head = _classifier_parameters(dense) if recipe.classifier_hidden else None
    built = build_variant(dense, variant, recipe.classifier_hidden, calibration=lambda m: _calibration_batches(ctx, m))
    model, pipeline, checkpoints = built.model, ctx.pipeline, ctx.checkpoints_dir(variant)
    trainer = make_trainer(ctx, variant, model, built.callback)
    print(f"\n== {variant.name}: {variant.title}", flush=True)
    start = time.time()
    resume_from = None
    if ctx.resume:
        from .resume import last_complete_checkpoint

        resume_from, notes = last_complete_checkpoint(checkpoints)
        for note in notes:
            print(f"   {note}", flush=True)
        if resume_from is not None:
            print(f"   resuming from the last complete checkpoint, {resume_from}", flush=True)
    try:
        train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    except TrainingDiverged as e:
        raise TrainingDiverged(f"run {variant.name!r}: {e}") from None
    train_time = time.time() - start
    loss = float(train_output.training_loss)
    if not math.isfinite(loss):
        raise TrainingDiverged(f"training of {variant.name!r} diverged (training loss {loss}); lower --lr, or check "
                               f"the data")
    _check_finite_weights(model, variant.name)
    start = time.time()
    pipeline.accuracy = None
    metrics = pipeline.evaluate(trainer, model, ctx.raw_test, ctx.test)
    eval_time = time.time() - start
    if not math.isfinite(metrics.get("loss", 0.0)):
        raise TrainingDiverged(f"evaluation of {variant.name!r} gave a non-finite loss ({metrics['loss']}): the "
                               f"trained model is unusable; lower --lr, or check the test data for extreme values")
    summary = pipeline.accuracy
    if variant.kind == "dense" and variant.distill is None and recipe.distill_temperature is not None:
        ctx.teacher_logits = _teacher_logits(trainer, ctx.train, ctx.teacher_path(variant))
    record = {
        "name": variant.name,
        "label": variant.label,
        "kind": variant.kind,
        "layers": variant.layers,
        "gaussian": variant.gaussian,
        "metrics": metrics,
        "accuracy_summary": summary,
        "majority_rate": summary["majority_rate"] if summary else None,
        "train_loss": loss,
        "train_steps": int(train_output.global_step),
        "train_time_s": round(train_time, 2),
        "eval_time_s": round(eval_time, 2),
        "parameter_report": built.report,
        "isogauss_config": variant.config.to_dict() if variant.config is not None else None,
        "saved_to": str(variant.save_dir) if ctx.save_models else None,
    }
    if variant.distill is not None:
        record["distill"] = {"temperature": variant.distill, "alpha": recipe.distill_alpha}
    curve = [{"step": e["step"], **{k[5:]: v for k, v in e.items() if k.startswith("eval_") and "per_second" not in k
                                    and k != "eval_runtime"}} for e in trainer.state.log_history if "eval_loss" in e]
    if curve:  # recipe.eval_every: the test metrics during training
        record["curve"] = curve
    trace = getattr(trainer, "loss_trace", None)
    if trace:
        record["loss_first"], record["loss_last"] = list(trace["first"]), list(trace["last"])
    if variant.gaussian:
        from ..layers import iter_isogauss_layers

        layers = [layer for _, layer in iter_isogauss_layers(model)]
        record["skipped_layer_steps"] = sum(layer.skipped_steps for layer in layers)
        record["layer_steps"] = len(layers) * int(train_output.global_step)
    if recipe.classifier_hidden:
        record["classifier_parameters"] = {"this_run": _classifier_parameters(model), "dense_head": dense_head,
                                           "hidden": recipe.classifier_hidden if variant.kind != "dense" else None}
    if recipe.analyze and variant.kind == "dense":
        from .analysis_hooks import write_drift

        record["drift"] = write_drift(recipe, ctx.source, ctx.labels, model, ctx.out)
    if ctx.save_models:
        before_save = KINDS[variant.kind].before_save
        saved = before_save(model) if before_save is not None else model
        saved.save_pretrained(str(variant.save_dir))
        if ctx.tokenizer is not None:
            ctx.tokenizer.save_pretrained(str(variant.save_dir))
    shutil.rmtree(checkpoints, ignore_errors=True)  # the saved model supersedes them
    if (ctx.out / "checkpoints").is_dir() and not any((ctx.out / "checkpoints").iterdir()):
        (ctx.out / "checkpoints").rmdir()
    if variant.save_dir == ctx.out / "model":
        ctx.final_model, ctx.final_dir = model, variant.save_dir
    examples = getattr(pipeline, "examples", None)
    if examples:
        record["examples"] = examples
    return record


def _teacher_logits(trainer: Any, train: Any, path: Any) -> list:
    """The dense (teacher) model's logits on the train split, kept at ``path`` for later distilled runs."""
    import os

    import torch

    output = trainer.predict(train)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    tensor = torch.as_tensor(logits, dtype=torch.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(tensor, tmp)
    os.replace(tmp, path)
    return tensor.tolist()


def load_teacher_logits(path: Any) -> list:
    """The teacher logits :func:`train_variant` kept at ``path``."""
    import torch

    return torch.load(path).tolist()


def _check_finite_weights(model: Any, name: str) -> None:
    """Weights or Gaussian statistics that became NaN or infinite make every output garbage: stop the run."""
    import torch

    for key, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingDiverged(f"training of {name!r} diverged: {key} holds non-finite values; lower --lr (and "
                                   f"--head-lr)")


def _classifier_parameters(model: Any) -> int:
    from ..heads import classifier_parameters

    return classifier_parameters(model)


def load_shared(ctx: RunContext) -> dict[str, Any]:
    """Model source, config, tokenizer, data and task pipeline: loaded once for every variant into ``ctx``; what
    ``results.json`` records of them (model, dataset, preset)."""
    import transformers

    from .pipelines import load_config, load_tokenizer, make_pipeline, resolve_model_source

    recipe = ctx.recipe
    transformers.set_seed(recipe.seed)
    ctx.source = resolve_model_source(recipe)
    ctx.model_config, where = load_config(recipe, ctx.source)
    ctx.tokenizer = load_tokenizer(recipe, ctx.source)
    ctx.task_data, ctx.labels, summary = resolve_data(recipe)
    print("\n".join(data_lines(recipe, ctx.task_data, ctx.labels, summary) + training_lines(recipe)), flush=True)
    ctx.pipeline = make_pipeline(recipe, ctx.tokenizer, ctx.model_config)
    if recipe.task == "image-classification" and "image" in ctx.task_data.data["train"].column_names:
        from .pipelines import image_processor_for

        ctx.pipeline.image_processor = image_processor_for(recipe, ctx.source, ctx.model_config)
    ctx.train, ctx.test = ctx.pipeline.prepare(ctx.task_data.data)
    return {"model": {"requested": recipe.model, "source": where},
            "dataset": {"name": recipe.dataset, "train": summary["train"]["rows"], "test": summary["test"]["rows"],
                        "labels": ctx.labels, "split": ctx.task_data.split, "columns": ctx.task_data.columns,
                        "dropped": ctx.task_data.dropped, "rows_before_caps": ctx.task_data.full_rows,
                        "summary": summary},
            "preset": {"name": recipe.preset, "filled": list(recipe.preset_filled)}}


def _plan(ctx: RunContext) -> dict[str, Any]:
    return {"variants": [{"name": v.name, "kind": v.kind, "layers": v.layers} for v in ctx.variants]}


def _resolve_auto(ctx: RunContext, results: RunResults) -> None:
    """``--layers auto:K``: scan the blocks, put the picked ones into the recipe, plan again (run.json too)."""
    from .analysis_hooks import auto_lines, pick_blocks, with_blocks

    recipe = ctx.recipe
    suggestion = pick_blocks(recipe, ctx.source, ctx.labels, ctx.train, ctx.pipeline.collator())
    print("\n".join(auto_lines(suggestion, min(recipe.calibration_samples, len(ctx.train)))), flush=True)
    ctx.recipe = with_blocks(recipe, suggestion.blocks)
    ctx.variants = plan_variants(ctx.recipe, ctx.out)
    results.payload["recipe"] = ctx.recipe.to_dict()
    results.payload["auto_layers"] = {"k": recipe.auto_layers, "calibration_samples": recipe.calibration_samples,
                                      **suggestion.to_dict()}
    results.begin(_plan(ctx))


def disk_error(error: BaseException) -> Any:
    """The OSError of a full disk, an exceeded quota or a read-only filesystem in ``error``'s chain, or None."""
    import errno

    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _flush_quietly(results: RunResults, status: str, error: str) -> Optional[OSError]:
    """Record ``status``; the OSError when results.json cannot be written (the disk that failed the run, too)."""
    try:
        results.flush(status, error)
    except OSError as e:
        return e
    return None


def on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signal.Signals(signum).name}")


def run_training(ctx: RunContext) -> int:
    """Train every variant of the plan into ``ctx.out``; the exit code (0, 1, 2 or 130)."""
    recipe = ctx.recipe
    ctx.variants = plan_variants(recipe, ctx.out)
    results = RunResults(ctx.out, recipe, describe_recipe(recipe))
    results.begin(_plan(ctx))
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main else None
    try:
        results.payload.update(load_shared(ctx))
        if recipe.auto_layers is not None and recipe.layers is None:
            _resolve_auto(ctx, results)
            recipe = ctx.recipe
        results.flush("running")
        for variant in ctx.variants:
            record = train_variant(ctx, variant)
            results.runs.append(record)
            results.flush("running")
            print(run_line(record, recipe.metric), flush=True)
        print("\n" + summary_table(results.runs, recipe.metric))
        if recipe.purpose == "pipeline-check":
            print("(pipeline check on a small from-scratch model: not a reproduction of the paper)")
        warnings = run_warnings(results.runs, recipe, ctx.labels)
        results.payload["warnings"] = warnings
        for warning in warnings:
            print(f"{PROG}: warning: {warning['message']}", file=sys.stderr)
        results.flush("completed")
        print(f"results: {results.path}  (wall time {results.payload['wall_time_s']:.0f} s)")
    except KeyboardInterrupt as e:
        reason = str(e) if isinstance(e, Interrupted) else "KeyboardInterrupt"
        results.flush("interrupted", reason)
        print(f"\n{PROG}: interrupted ({reason}); completed runs and partial results are in {results.path}; "
              f"rerun the same command to start over, or add --resume-from-checkpoint", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        results.flush("diverged", str(e))
        print(f"\n{PROG}: error: {e} (nothing saved for this run; status 'diverged' in {results.path})",
              file=sys.stderr)
        return 1
    except UsageError as e:
        if not results.runs and not ctx.resume:  # bad input found before anything was trained: leave no run behind
            shutil.rmtree(ctx.out, ignore_errors=True)
        else:
            results.flush("failed", str(e))
        raise
    except Exception as e:
        failed_flush = _flush_quietly(results, "failed", f"{type(e).__name__}: {e}")
        full = disk_error(e) or (disk_error(failed_flush) if failed_flush is not None else None)
        where = (f"partial results in {results.path}" if failed_flush is None
                 else f"results.json in {ctx.out} could not be updated")
        if full is not None:  # a known cause: one line, no traceback
            print(f"\n{PROG}: error: {full.strerror} while writing the run to {ctx.out} ({full.filename or 'a file'}); "
                  f"free space there or choose another --output-dir, then rerun (add --resume-from-checkpoint to "
                  f"continue) ({where})", file=sys.stderr)
            return 1
        traceback.print_exc()
        print(f"{PROG}: error: {type(e).__name__}: {e} ({where})", file=sys.stderr)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    if ctx.push_to_hub:
        try:
            push_final_model(ctx.final_model, ctx.final_dir, ctx.tokenizer, ctx.push_to_hub, results.path)
        except Exception as e:  # training is done and saved; only the upload failed
            results.payload["push_error"] = f"{type(e).__name__}: {e}"
            results.flush("completed")
            print(f"{PROG}: error: --push-to-hub failed ({type(e).__name__}: {e}); the trained model is in "
                  f"{ctx.final_dir}", file=sys.stderr)
            return 2 if isinstance(e, UsageError) else 1
    return 0
