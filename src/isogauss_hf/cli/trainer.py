"""The ``transformers.Trainer`` of one variant: its arguments, the task head's own learning rate, labelled bars.

* :func:`training_args` — ``TrainingArguments`` from a recipe (lr, schedule, warm-up, batch, seed, precision, ...);
  the recipe's ``batch_size`` is the global batch (Table 9's), split over the processes of ``accelerate launch`` /
  ``torchrun`` (:func:`per_device_batch`); ``precision: auto`` is bf16 on a GPU that has it, fp16 on one that
  does not, fp32 on CPU (:func:`~isogauss_hf.recipe_checks.resolve_precision`);
* :func:`head_parameter_names` — the parameters of the task head (``classifier`` / ``score`` /
  ``qa_outputs``: usually new, randomly initialised on top of a pretrained encoder);
* :func:`make_trainer` — the Trainer, stopped with :class:`~isogauss_hf.errors.TrainingDiverged` at the first step
  whose loss is not finite; when the recipe's ``head_lr`` differs from ``lr`` its optimizer has
  the head's parameters in their own groups at ``head_lr`` (the scheduler scales both alike), and a ``backprop``
  variant with ``statistics_lr`` its Gaussian statistics at that lr. The body stays the first group, whose lr
  :class:`~isogauss_hf.IsoGaussCallback` uses for the distribution step. A distilled variant (``distill``) trains
  on the dense teacher's logits (:mod:`isogauss_hf.distill`). ``--report-to`` (:func:`check_report_to`) goes to
  ``TrainingArguments.report_to`` with the run's name (recipe / variant / blocks / seed); TensorBoard writes
  beside the run (``logs/``), not into its checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import TrainingDiverged, UsageError

__all__ = ["EXPLODED", "HEAD_MODULES", "check_report_to", "statistics_parameter_names", "training_args", "per_device_batch", "world_size", "head_parameter_names",
           "make_trainer", "labelled_progress"]

#: A training loss this many times the first step's (or 1, if larger) is a divergence even while finite: at
#: --lr 1e30 the loss reaches 1e29-1e31 and the weights 1e30 without ever being NaN.
EXPLODED = 1e4
#: Module names of task heads (matched against each component of a parameter's name).
HEAD_MODULES = ("classifier", "score", "qa_outputs")


def world_size() -> int:
    """Processes of a data-parallel launch (``WORLD_SIZE`` of ``accelerate launch`` / ``torchrun``; 1 alone)."""
    import os

    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def per_device_batch(batch_size: int, processes: int) -> int:
    """The per-process batch of a global ``batch_size`` split over ``processes`` (one-line error when uneven)."""
    if batch_size % processes:
        raise UsageError(f"batch_size {batch_size} is the global batch (Table 9) and does not split evenly over "
                         f"{processes} processes; use --batch-size {processes * max(1, batch_size // processes)} or a "
                         f"process count that divides {batch_size}")
    return batch_size // processes


def check_report_to(text: str) -> list[str]:
    """``--report-to``: ``none``, ``all`` or integrations of ``transformers`` (comma-separated) that are installed
    here; one-line :class:`UsageError` naming the valid or missing ones otherwise."""
    from transformers.integrations.integration_utils import (INTEGRATION_TO_CALLBACK,
                                                             get_available_reporting_integrations)

    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names or names == ["none"]:
        return []
    if names == ["all"]:
        return get_available_reporting_integrations()
    unknown = [n for n in names if n not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise UsageError(f"--report-to {','.join(unknown)}: unknown; valid: none, all, "
                         f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
    installed = get_available_reporting_integrations()
    missing = [n for n in names if n not in installed]
    if missing:
        raise UsageError(f"--report-to {','.join(missing)}: not installed here (pip install "
                         f"{' '.join(missing)}); installed: {', '.join(installed) or 'none'}")
    return names


def training_args(recipe: Any, output_dir: Any, report_to: Any = None, run_name: Any = None) -> Any:
    import os

    import torch
    from transformers import TrainingArguments

    from ..errors import RecipeError
    from ..recipe_checks import resolve_precision

    cuda = torch.cuda.is_available()
    try:
        precision = resolve_precision(recipe.precision, cuda, cuda and torch.cuda.is_bf16_supported())
    except RecipeError as e:
        raise UsageError(str(e)) from None
    processes = world_size()
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=per_device_batch(recipe.batch_size, processes),
        per_device_eval_batch_size=recipe.eval_batch_size or recipe.batch_size,
        learning_rate=recipe.lr,
        weight_decay=recipe.weight_decay,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_steps=recipe.warmup_ratio,  # transformers 5: a value < 1 is a fraction of the steps
        optim="sgd" if recipe.optimizer == "sgd" else "adamw_torch",
        optim_args=f"momentum={recipe.momentum}" if recipe.optimizer == "sgd" and recipe.momentum else None,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        eval_strategy="steps" if recipe.eval_every else "no",
        eval_steps=recipe.eval_every,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=1,
        logging_steps=recipe.logging_steps,
        seed=recipe.seed,
        data_seed=recipe.seed,
        report_to=list(report_to) if report_to else "none",
        run_name=run_name,
        use_cpu=not cuda,
        # a GPU waits for batches: workers collate while it computes (on CPU they would compete for its cores)
        dataloader_num_workers=min(4, (os.cpu_count() or 2) // (2 * processes)) if cuda else 0,
        remove_unused_columns=True,
        disable_tqdm=False,
    )


def head_parameter_names(model: Any) -> set[str]:
    """Names of the trainable parameters inside a task head (:data:`HEAD_MODULES`)."""
    return {n for n, p in model.named_parameters() if p.requires_grad and any(part in HEAD_MODULES
                                                                                for part in n.split("."))}


def labelled_progress(label: str, eval_note: str = "") -> Any:
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


def _guarded_trainer() -> type:
    from transformers import Trainer

    class GuardedTrainer(Trainer):
        """Trainer that stops at the first step whose loss is not finite (transformers would log the running mean
        instead and train on, to a "completed" model of NaN or 1e30 weights)."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            step, value = self.state.global_step + 1, float(loss.float().mean())
            trace = self.__dict__.setdefault("loss_trace", {})  # (step, loss) of the first and the latest step
            first = trace.setdefault("first", (step, value))
            trace["last"] = (step, value)
            if step == 1 and not math.isfinite(value):
                raise TrainingDiverged(f"the loss is {value} at the first step, before any update: the model's "
                                       f"weights or the data hold non-finite or extreme values")
            exploded = math.isfinite(value) and value > EXPLODED * max(first[1], 1.0)
            if not math.isfinite(value) or exploded:
                groups = self.optimizer.param_groups if self.optimizer is not None else []
                lrs = ", ".join(f"{lr:g}" for lr in sorted({g["lr"] for g in groups})) or f"{self.args.learning_rate:g}"
                what = f"grew from {first[1]:.4g} (step {first[0]}) to {value:.4g}" if exploded else f"is {value}"
                raise TrainingDiverged(f"training diverged at step {step}: the loss {what}; the learning rate "
                                       f"({lrs} at that step) is the likely cause: lower --lr (and --head-lr, "
                                       f"--distribution-lr), or check the data for extreme values")
            return loss

    return GuardedTrainer


def statistics_parameter_names(model: Any) -> set[str]:
    """Names of the Gaussian statistics the optimizer trains (rule ``backprop``: they are parameters there)."""
    from ..layers.base import IsoGaussLayer

    stats = set(IsoGaussLayer.STAT_NAMES)
    return {n for n, p in model.named_parameters() if p.requires_grad and n.rsplit(".", 1)[-1] in stats}


def _trainer_class(base: type, own_lr: list[tuple[set[str], float]]) -> type:
    class GroupLrTrainer(base):
        """Trainer whose optimizer puts each set of ``own_lr`` (the task head at ``head_lr``, backprop statistics
        at ``statistics_lr``) in parameter groups of their own at that lr."""

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                opt_model = self.model if model is None else model
                decay = set(self.get_decay_parameter_names(opt_model))
                sets = [(set().union(*(names for names, _ in own_lr)), None)] + own_lr  # the body (not in any set)
                groups = []
                for i, (names, lr) in enumerate(sets):  # the body first: param_groups[0] is what the callback reads
                    for with_decay in (True, False):
                        params = [p for n, p in opt_model.named_parameters() if p.requires_grad and
                                  (n not in names if i == 0 else n in names) and (n in decay) == with_decay]
                        if params:
                            group = {"params": params, "weight_decay": self.args.weight_decay if with_decay else 0.0}
                            groups.append({**group, "lr": lr} if lr is not None else group)
                optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
                self.optimizer = optimizer_cls(groups, **kwargs)
            return self.optimizer

    return GroupLrTrainer


def make_trainer(ctx: Any, variant: Any, model: Any, callback: bool) -> Any:
    """The Trainer of ``variant`` on ``ctx``'s prepared data (IsoGaussCallback when ``callback``)."""
    from transformers.trainer_callback import ProgressCallback

    from ..callback import IsoGaussCallback

    recipe, pipeline = ctx.recipe, ctx.pipeline
    report_to = list(ctx.report_to)
    tensorboard = "tensorboard" in report_to  # its logs go beside the run, not into the checkpoints removed after it
    args = training_args(recipe, ctx.checkpoints_dir(variant), [r for r in report_to if r != "tensorboard"],
                         f"{recipe.name}/{ctx.run_name(variant)}")
    args.remove_unused_columns = pipeline.remove_unused_columns
    own_lr = []
    if recipe.head_lr != recipe.lr:
        names = head_parameter_names(model)
        if names:
            own_lr.append((names, recipe.head_lr))
        elif "head_lr" not in recipe.preset_filled:
            raise UsageError(f"head_lr {recipe.head_lr:g}: {type(model).__name__} has no task head "
                             f"({' / '.join(HEAD_MODULES)}) to give it to; leave head_lr out")
    if variant.statistics_lr is not None:
        own_lr.append((statistics_parameter_names(model), variant.statistics_lr))
    cls = _trainer_class(_guarded_trainer(), own_lr) if own_lr else _guarded_trainer()
    train, collator = ctx.train, pipeline.collator()
    if variant.distill is not None:  # the dense teacher's logits ride along with each train row
        from ..distill import COLUMN, TeacherCollator, distilling

        train = ctx.train.add_column(COLUMN, ctx.teacher_logits)
        collator, cls = TeacherCollator(collator), distilling(cls, variant.distill, recipe.distill_alpha)
    callbacks = [IsoGaussCallback()] if callback else []
    if tensorboard:
        from transformers.integrations import TensorBoardCallback

        board = TensorBoardCallback()
        board.logging_dir = str(ctx.logs_dir(variant))  # its writer opens there when training begins
        callbacks.append(board)
    trainer = cls(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=ctx.test if recipe.eval_every else None,  # the learning curve (recipe.eval_every)
        data_collator=collator,
        processing_class=ctx.tokenizer,
        compute_metrics=pipeline.compute_metrics(),
        callbacks=callbacks or None,
    )
    trainer.remove_callback(ProgressCallback)
    config = variant.config
    draws = config.num_samples if variant.gaussian and config is not None and config.noise == "resample" else 1
    trainer.add_callback(labelled_progress(variant.name, f" ({draws} draws)" if draws > 1 else ""))
    return trainer
