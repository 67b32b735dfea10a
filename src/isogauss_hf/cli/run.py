"""Running the variants of a plan: ``transformers.Trainer`` per variant, results written as each one ends.

:func:`run_training` loads what every variant shares once (model source, config, tokenizer, data,
task pipeline) into the :class:`~isogauss_hf.cli.context.RunContext`, then trains the variants of
:func:`~isogauss_hf.cli.variants.plan_variants` in order with :func:`train_variant`, printing each
one's metrics when it ends and the closing table at the end. ``results.json`` records the status
throughout: Ctrl-C and SIGTERM mark it ``interrupted``, an exception or a training loss that is
not finite ``failed``.
"""

from __future__ import annotations

import math
import shutil
import signal
import sys
import threading
import time
import traceback
from typing import Any

from ..errors import UsageError
from .context import RunContext
from .output import RunResults, push_final_model
from .plan import data_lines, describe_recipe, resolve_data
from .report import run_line, summary_table
from .variants import KINDS, Variant, build_variant, parameter_report, plan_variants

__all__ = ["run_training", "train_variant", "training_args", "Interrupted"]

PROG = "isogauss-finetune"


class Interrupted(KeyboardInterrupt):
    """SIGTERM (a job scheduler, ``kill``) turned into an interruption, so results.json is marked."""


def training_args(recipe: Any, output_dir: Any) -> Any:
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


def _labelled_progress(label: str, eval_note: str = "") -> Any:
    """transformers' progress bars with a label: ``train NAME`` and ``evaluate NAME (N draws)``."""
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback, has_length

    class LabelledProgress(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.training_bar = tqdm(total=state.max_steps, dynamic_ncols=True, desc=f"train {label}")
            self.current_step = 0

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            if state.is_world_process_zero and has_length(eval_dataloader):
                if self.prediction_bar is None:
                    self.prediction_bar = tqdm(total=len(eval_dataloader), leave=self.training_bar is None,
                                               dynamic_ncols=True, desc=f"evaluate {label}{eval_note}",
                                               unit="batch")
                self.prediction_bar.update(1)

    return LabelledProgress()


def train_variant(ctx: RunContext, variant: Variant) -> dict[str, Any]:
    """Train, evaluate and save one variant; its ``results.json`` record."""
    from transformers import Trainer
    from transformers.trainer_callback import ProgressCallback

    from ..callback import IsoGaussCallback
    from .pipelines import load_model

    recipe = ctx.recipe
    model = build_variant(load_model(recipe, ctx.source, ctx.labels), variant)
    report = parameter_report(model, variant)
    pipeline = ctx.pipeline
    checkpoints = ctx.checkpoints_dir(variant)
    args = training_args(recipe, checkpoints)
    args.remove_unused_columns = pipeline.remove_unused_columns
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ctx.train,
        data_collator=pipeline.collator(),
        processing_class=ctx.tokenizer,
        compute_metrics=pipeline.compute_metrics(),
        callbacks=[IsoGaussCallback()] if KINDS[variant.kind].callback else None,
    )
    trainer.remove_callback(ProgressCallback)
    config = variant.config
    draws = config.num_samples if variant.gaussian and config is not None and config.noise == "resample" else 1
    trainer.add_callback(_labelled_progress(variant.name, f" ({draws} draws)" if draws > 1 else ""))
    print(f"\n== {variant.name}: {variant.title}", flush=True)
    start = time.time()
    resume = ctx.resume and checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    if resume:
        print(f"   resuming from the last checkpoint in {checkpoints}", flush=True)
    train_output = trainer.train(resume_from_checkpoint=True if resume else None)
    train_time = time.time() - start
    loss = float(train_output.training_loss)
    if not math.isfinite(loss):
        raise RuntimeError(f"training of {variant.name!r} diverged (training loss {loss}); lower --lr, or check the "
                           f"data (nothing was saved for this run)")
    start = time.time()
    metrics = pipeline.evaluate(trainer, model, ctx.raw_test, ctx.test)
    eval_time = time.time() - start
    model.save_pretrained(str(variant.save_dir))
    if ctx.tokenizer is not None:
        ctx.tokenizer.save_pretrained(str(variant.save_dir))
    shutil.rmtree(checkpoints, ignore_errors=True)  # the saved model supersedes them
    if (ctx.out / "checkpoints").is_dir() and not any((ctx.out / "checkpoints").iterdir()):
        (ctx.out / "checkpoints").rmdir()
    record = {
        "name": variant.name,
        "kind": variant.kind,
        "layers": variant.layers,
        "gaussian": variant.gaussian,
        "metrics": metrics,
        "train_loss": loss,
        "train_steps": int(train_output.global_step),
        "train_time_s": round(train_time, 2),
        "eval_time_s": round(eval_time, 2),
        "parameter_report": report,
        "isogauss_config": variant.config.to_dict() if variant.config is not None else None,
        "saved_to": str(variant.save_dir),
    }
    if variant.save_dir == ctx.out / "model":
        ctx.final_model, ctx.final_dir = model, variant.save_dir
    examples = getattr(pipeline, "examples", None)
    if examples:
        record["examples"] = examples
    return record


def _load_shared(ctx: RunContext, results: RunResults) -> None:
    """Model source, config, tokenizer, data and task pipeline: loaded once for every variant."""
    import transformers

    from .pipelines import load_config, load_tokenizer, make_pipeline, resolve_model_source

    recipe = ctx.recipe
    transformers.set_seed(recipe.seed)
    ctx.source = resolve_model_source(recipe)
    ctx.model_config, where = load_config(recipe, ctx.source)
    ctx.tokenizer = load_tokenizer(recipe, ctx.source)
    ctx.task_data, ctx.labels, summary = resolve_data(recipe)
    print("\n".join(data_lines(recipe, ctx.task_data, ctx.labels, summary)), flush=True)
    ctx.pipeline = make_pipeline(recipe, ctx.tokenizer, ctx.model_config)
    ctx.train, ctx.test = ctx.pipeline.prepare(ctx.task_data.data)
    results.payload["model"] = {"requested": recipe.model, "source": where}
    results.payload["dataset"] = {
        "name": recipe.dataset, "train": summary["train"]["rows"], "test": summary["test"]["rows"],
        "labels": ctx.labels, "split": ctx.task_data.split, "columns": ctx.task_data.columns,
        "dropped": ctx.task_data.dropped, "rows_before_caps": ctx.task_data.full_rows, "summary": summary,
    }


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signal.Signals(signum).name}")


def run_training(ctx: RunContext) -> int:
    """Train every variant of the plan into ``ctx.out``; the exit code (0, 1, 2 or 130)."""
    recipe = ctx.recipe
    ctx.variants = plan_variants(recipe, ctx.out)
    results = RunResults(ctx.out, recipe, describe_recipe(recipe))
    results.begin({"variants": [{"name": v.name, "kind": v.kind, "layers": v.layers} for v in ctx.variants]})
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        _load_shared(ctx, results)
        results.flush("running")
        for variant in ctx.variants:
            record = train_variant(ctx, variant)
            results.runs.append(record)
            results.flush("running")
            print(run_line(record, recipe.metric), flush=True)
        print("\n" + summary_table(results.runs, recipe.metric))
        if recipe.purpose == "pipeline-check":
            print("(pipeline check on a small from-scratch model: not a reproduction of the paper)")
        results.flush("completed")
        print(f"results: {results.path}  (wall time {results.payload['wall_time_s']:.0f} s)")
    except KeyboardInterrupt as e:
        reason = str(e) if isinstance(e, Interrupted) else "KeyboardInterrupt"
        results.flush("interrupted", reason)
        print(f"\n{PROG}: interrupted ({reason}); completed runs and partial results are in {results.path}; "
              f"rerun the same command to start over, or add --resume-from-checkpoint", file=sys.stderr)
        return 130
    except UsageError as e:
        if not results.runs:  # bad input found before anything was trained: leave no run behind
            shutil.rmtree(ctx.out, ignore_errors=True)
        else:
            results.flush("failed", str(e))
        raise
    except Exception as e:
        results.flush("failed", f"{type(e).__name__}: {e}")
        traceback.print_exc()
        print(f"{PROG}: error: {type(e).__name__}: {e} (partial results in {results.path})", file=sys.stderr)
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
