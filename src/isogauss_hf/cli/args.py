"""``isogauss-finetune``'s command line: the argparse parser, number checks, and flags -> :class:`Recipe`.

Every flag that sets a recipe field is listed once in :data:`RECIPE_FLAGS`, every flag that sets a
Gaussian setting (a field of the recipe's one ``IsoGaussConfig``) in :data:`GAUSSIAN_FLAGS`.
Numbers are checked while parsing (:func:`positive_int`, :func:`positive_float`): ``nan``, ``inf``,
zero or negative values end with one line on stderr and exit code 2, before anything is loaded.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from typing import Any, Callable

from .._version import __version__
from ..errors import UsageError
from .. import settings
from ..recipe_checks import PRECISIONS
from ..recipes import GAUSSIAN_KEY, PRESETS, TASKS, Recipe, apply_overrides, load_recipe

__all__ = ["PROG", "RECIPE_FLAGS", "GAUSSIAN_FLAGS", "build_parser", "resolve_recipe", "positive_int",
           "positive_float", "nonnegative_int", "custom_run_name"]

PROG = "isogauss-finetune"

#: flag destination -> Recipe field
RECIPE_FLAGS: dict[str, str] = {
    "model": "model", "dataset": "dataset", "task": "task", "layers": "layers", "epochs": "epochs",
    "max_steps": "max_steps", "eval_every": "eval_every", "lr": "lr", "batch_size": "batch_size", "max_length": "max_length",
    "doc_stride": "doc_stride", "train_samples": "train_samples", "eval_samples": "eval_samples", "seed": "seed",
    "compare_dense": "compare_dense", "text_column": "text_column", "text_pair_column": "text_pair_column",
    "label_column": "label_column", "preset": "preset", "head_lr": "head_lr", "baselines": "baselines",
    "analyze": "analyze", "classifier_hidden": "classifier_hidden", "calibration_samples": "calibration_samples",
    "calibrate_steps": "calibrate_steps", "precision": "precision", "statistics_lr": "statistics_lr",
    "distill_temperature": "distill_temperature", "distill_alpha": "distill_alpha",
}
#: flag destination -> IsoGaussConfig field (of the recipe's ``gaussian:`` section)
GAUSSIAN_FLAGS: dict[str, str] = {
    "rule": "rule", "noise": "noise", "num_samples": "num_samples", "distribution_lr": "distribution_lr",
    "standardize": "standardize",
}


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def _number(kind: type, low: float, strict: bool) -> Callable[[str], Callable[[str], Any]]:
    """A factory of argparse ``type=`` checks: ``positive_int("batch_size")`` parses and checks ``--batch-size``."""
    bound = f"{'>' if strict else '>='} {low:g}"

    def for_field(name: str) -> Callable[[str], Any]:
        def parse(text: str) -> Any:
            value = kind(text)  # a ValueError here reads "invalid float value: 'abc'" (argparse)
            if not math.isfinite(value):
                raise argparse.ArgumentTypeError(f"{name} must be a finite number {bound}, got {text!r}")
            if value < low or (strict and value == low):
                raise argparse.ArgumentTypeError(f"{name} must be {bound}, got {text!r}")
            return value

        parse.__name__ = kind.__name__
        return parse

    return for_field


positive_int = _number(int, 0, strict=True)
positive_float = _number(float, 0, strict=True)
nonnegative_int = _number(int, 0, strict=False)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Fine-tune a Hugging Face model whose selected fully connected layers are "
                                      "Isotropic Gaussian layers (GDU/WDU), or its dense baseline.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--recipe", help="recipe name (see --list-recipes) or path to a recipe YAML")
    p.add_argument("--model", help="alias (bert, bert-large, gpt2, vit, minilm, ffn8, resnet18, mobilenetv2), hub id "
                                    "or local model directory")
    p.add_argument("--dataset", help="dataset name (see --list-recipes), or a local .csv/.json/.jsonl/.parquet file "
                                     "or a directory of them (or of one sub-directory of .txt files per class)")
    p.add_argument("--task", choices=TASKS, help="task, when no recipe gives it")
    p.add_argument("--text-column", help="dataset column holding the text (default: text)")
    p.add_argument("--text-pair-column", help="second text column of sentence-pair tasks (default: none)")
    p.add_argument("--label-column", help="dataset column holding the label, class ids or names (default: label)")
    p.add_argument("--layers", help="1-based blocks made Gaussian, e.g. 4,8,12; 'none' = the dense baseline; "
                                    "'auto:K' = the K blocks a block scan of the train split ranks safest; several "
                                    "block sets separated by ';' (\"3;2,4;auto:3\") make a sweep")
    p.add_argument("--seeds", help="a sweep over these seeds, comma-separated (e.g. 0,1,2): every variant x block set "
                                   "x seed, the seed-paired comparison table at the end (OUTPUT_DIR/comparison.md); "
                                   "rerun the same command to continue an interrupted sweep")
    p.add_argument("--report", metavar="DIR", help="print and re-render the comparison of the sweep in DIR "
                                                   "(comparison.md and .png from its comparison.json), train nothing")
    p.add_argument("--save-models", action=argparse.BooleanOptionalAction, default=None,
                   help="sweeps: save each run's model in OUTPUT_DIR/runs/NAME/model (default); --no-save-models "
                        "keeps the records only")
    p.add_argument("--report-to", help="log training to these transformers integrations, comma-separated "
                                       "(tensorboard, wandb, mlflow, ... when installed; 'all'; default none); "
                                       "runs are named RECIPE/VARIANT_bBLOCKS_sSEED")
    p.add_argument("--distill-temperature", type=positive_float("distill_temperature"), metavar="T",
                   help="logit distillation from the dense run of the same seed at temperature T: every other "
                        "run, and the dense control dense-kd, trains on (1 - alpha) CE + alpha T^2 KL to the dense "
                        "run's logits (classification; needs --compare-dense)")
    p.add_argument("--distill-alpha", type=positive_float("distill_alpha"),
                   help="weight of the distillation term, in (0, 1] (default 0.5)")
    p.add_argument("--statistics-lr", type=positive_float("statistics_lr"),
                   help="rule backprop: the optimizer lr of the Gaussian statistics (default: --lr)")
    p.add_argument("--calibration-samples", type=positive_int("calibration_samples"),
                   help="train examples the block scan (--layers auto:K) and the statistics calibration run on "
                        "(default 512)")
    p.add_argument("--calibrate-steps", type=nonnegative_int("calibrate_steps"),
                   help="steps fitting the Gaussian statistics to the replaced dense blocks before fine-tuning "
                        "(isogauss_hf.calibrate); 0 = none (default: the preset's)")
    p.add_argument("--preset", choices=tuple(PRESETS),
                   help="defaults of what the recipe and flags do not set: 'default' (the configuration measured "
                        "best) or 'paper' (WDU, resample, 10 draws, Table 9); shown by --dry-run")
    p.add_argument("--rule", help=f"distribution update: {' | '.join(settings.RULES)} (default: the preset's)")
    p.add_argument("--noise", help=f"weight sampling: {' | '.join(settings.NOISE_MODES)} (default: the preset's)")
    p.add_argument("--baselines", help="also train these baselines on the same blocks, comma-separated: drop "
                                       "(blocks removed), lowrank (rank-r factors at the Gaussian budget), frozen "
                                       "(statistics never updated); 'none' = no baselines")
    p.add_argument("--analyze", action=argparse.BooleanOptionalAction, default=None,
                   help="write the dense run's per-matrix weight drift (Wasserstein before -> after) to "
                        "OUTPUT_DIR/analysis (needs the dense run: --compare-dense or --layers none)")
    p.add_argument("--classifier-hidden", type=positive_int("classifier_hidden"), metavar="H",
                   help="ResNet / MobileNetV2: the non-dense runs get the two-layer head Linear(d, H) -> ReLU -> "
                        "Linear(H, classes) (Table 6: 32; its first layer is the next module number)")
    p.add_argument("--num-samples", type=positive_int("num_samples"),
                   help="evaluation draws averaged (Table 9: 10; 100 for 8FFN)")
    p.add_argument("--distribution-lr", type=positive_float("distribution_lr"),
                   help="learning rate of the GDU/WDU step (default: the optimizer's current lr)")
    p.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                   help="standardize Gaussian-layer inputs (Appendix D)")
    p.add_argument("--epochs", type=positive_float("epochs"), help="training epochs")
    p.add_argument("--max-steps", type=positive_int("max_steps"), help="training steps (overrides --epochs)")
    p.add_argument("--lr", type=positive_float("lr"), help="learning rate (default: the preset's)")
    p.add_argument("--head-lr", type=positive_float("head_lr"),
                   help="learning rate of the task head (classifier); default: the preset's factor x --lr")
    p.add_argument("--batch-size", type=positive_int("batch_size"),
                   help="training batch size (global: split over the processes of accelerate launch / torchrun)")
    p.add_argument("--precision", choices=tuple(PRECISIONS),
                   help="auto (default: bf16 on a GPU with bf16, else fp16 on a GPU, fp32 on CPU), fp32, bf16, fp16")
    p.add_argument("--max-length", type=positive_int("max_length"), help="maximum tokens per example")
    p.add_argument("--doc-stride", type=positive_int("doc_stride"),
                   help="question-answering: overlap of context windows, in tokens")
    p.add_argument("--train-samples", type=positive_int("train_samples"),
                   help="use at most this many training examples")
    p.add_argument("--eval-samples", type=positive_int("eval_samples"), help="evaluate on at most this many examples")
    p.add_argument("--eval-every", type=positive_int("eval_every"), metavar="N",
                   help="also evaluate on the test split every N steps: the learning curve, kept in the run's record "
                        "('curve')")
    p.add_argument("--seed", type=nonnegative_int("seed"), help="seed of training, data order and noise")
    p.add_argument("--compare-dense", action=argparse.BooleanOptionalAction, default=None,
                   help="also train the dense baseline and print both side by side")
    p.add_argument("--output-dir", help="where results.json and the models go (default: runs/RECIPE, or "
                                        "runs/MODEL-DATASET for a run without --recipe)")
    p.add_argument("--overwrite", action="store_true", help="replace the output directory of an earlier run")
    p.add_argument("--resume-from-checkpoint", action="store_true",
                   help="continue an interrupted run in --output-dir from its last Trainer checkpoint "
                        "(statistics, noise state and step are restored; runs that had finished are trained again)")
    p.add_argument("--push-to-hub", metavar="REPO", help="push the final model to this Hub repo (needs a token)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and exit without training")
    p.add_argument("--list-recipes", action="store_true", help="list recipes, datasets and model aliases, then exit")
    return p


def _slug(text: str) -> str:
    """A file-name-safe short form of a model or dataset name (a path's last component, without suffix)."""
    text = text.rstrip("/\\")
    if os.sep in text or os.path.exists(os.path.expanduser(text)) or text.startswith((".", "~")):
        text = os.path.splitext(os.path.basename(os.path.expanduser(text)))[0] or "data"
    else:
        text = text.split("/")[-1]  # hub id owner/name -> name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def custom_run_name(model: str, dataset: str) -> str:
    """The name (and default output directory) of a run built from flags: ``MODEL-DATASET``."""
    return f"{_slug(model)}-{_slug(dataset)}"


def resolve_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe named by ``--recipe`` (or built from flags) with the command-line flags applied."""
    if args.layers is not None and not args.layers.strip():
        raise UsageError("--layers is empty: give 1-based blocks (e.g. 4,8,12), auto:K, or none for the dense "
                         "baseline only")
    args.block_sets = [part.strip() for part in args.layers.split(";")] if args.layers and ";" in args.layers else None
    overrides: dict[str, Any] = {field: getattr(args, flag) for flag, field in RECIPE_FLAGS.items()}
    if args.block_sets:  # a sweep: the recipe takes the first set; each set is checked when the sweep is planned
        overrides["layers"] = next((b for b in args.block_sets if b), "")
    overrides[GAUSSIAN_KEY] = {field: getattr(args, flag) for flag, field in GAUSSIAN_FLAGS.items()}
    if args.max_steps is not None and args.epochs is None:
        overrides["max_steps"] = args.max_steps
    if args.epochs is not None and args.max_steps is None:
        overrides["max_steps"] = -1  # --epochs alone wins over the recipe's max_steps
    args.plan_notes = []
    recipe = _resolve(args, overrides)
    if args.baselines and args.baselines.strip().lower() != "none" and recipe.layers is None \
            and recipe.auto_layers is None:  # said, not silently dropped (the run itself is what was asked)
        args.plan_notes.append(f"note        --baselines {args.baselines} not run: they stand beside Gaussian blocks, "
                               f"and --layers none trains the dense model only")
    return recipe


def _resolve(args: argparse.Namespace, overrides: dict[str, Any]) -> Recipe:
    if args.recipe:
        return apply_overrides(load_recipe(args.recipe), overrides)
    from .pipelines import MODEL_ALIASES

    alias = MODEL_ALIASES.get(args.model) if args.model else None
    if args.dataset is None and alias is not None and alias.recipe:
        args.plan_notes.append(f"chosen      recipe {alias.recipe}, the paper's recipe for --model {args.model} "
                               f"(flags override its values; give --dataset for a run on other data)")
        return apply_overrides(load_recipe(alias.recipe), overrides)
    missing = [f"--{n}" for n in ("model", "dataset") if getattr(args, n) is None]
    if missing:
        raise UsageError(f"give --recipe NAME, or {' and '.join(missing)} (see --list-recipes)")
    from .data import DATASETS

    task = args.task or (DATASETS[args.dataset].task if args.dataset in DATASETS else None)
    if task is None:
        from .data import is_local_dataset
        from .taskguess import infer_task

        if not is_local_dataset(args.dataset):
            raise UsageError(f"unknown dataset {args.dataset!r}; known datasets: {', '.join(sorted(DATASETS))} (or a "
                             f"local .csv/.json/.jsonl/.parquet file or dataset directory)")
        task, why = infer_task(args.dataset, args.text_column, args.text_pair_column, args.label_column)
        args.plan_notes.append(f"chosen      task {task}, {why}")
    base = Recipe(name=custom_run_name(args.model, args.dataset), task=task, model=args.model, dataset=args.dataset,
                  purpose="custom", description="a run built from command-line flags (no recipe)")
    return apply_overrides(base, {k: v for k, v in overrides.items() if k not in ("model", "dataset", "task")})
