"""``isogauss-finetune``: fine-tune a transformers model with Isotropic Gaussian layers (or its dense baseline).

Examples::

    isogauss-finetune --recipe minilm-tweets                   # dense, Gaussian, drop and lowrank side by side
    isogauss-finetune --recipe bert-ag-news --layers 4,8,12 --rule gdu --dry-run
    isogauss-finetune --recipe minilm-tweets --preset paper    # the paper's WDU / resample / 10 draws
    isogauss-finetune --recipe minilm-bbc-news --layers auto:2 --baselines drop,lowrank,frozen
    isogauss-finetune --recipe ffn8-mnist --layers none        # the dense baseline only
    isogauss-finetune --model minilm --dataset reviews.json --task text-classification \\
        --text-column review --label-column class --layers 5 --compare-dense

Training is ``transformers.Trainer`` with :class:`~isogauss_hf.IsoGaussCallback` (one GDU/WDU step of every
Gaussian layer per optimizer step, Algorithms 1-2); every run reports its accuracy with a Wilson 95 % interval
and the test split's majority-class rate. Values neither the recipe nor a flag sets come from ``--preset``
(``default`` or ``paper``, :data:`isogauss_hf.recipe_checks.PRESETS`). The phases live in their own modules:

* :mod:`~isogauss_hf.cli.args` — flags, number checks, flags -> recipe;
* :mod:`~isogauss_hf.cli.plan` — preflight checks, the data summary, ``--dry-run``, ``--list-recipes``;
* :mod:`~isogauss_hf.cli.variants` — which runs a recipe makes (dense, Gaussian, baselines drop / lowrank / frozen);
* :mod:`~isogauss_hf.cli.run` — the runs in order; :mod:`~isogauss_hf.cli.trainer` — the Trainer of one run
  (the task head's lr); :mod:`~isogauss_hf.cli.report` — what is printed; :mod:`~isogauss_hf.cli.verdict` — the
  closing warnings (a Gaussian run at the majority-class rate or below ``drop``);
* :mod:`~isogauss_hf.cli.analysis_hooks` — ``--layers auto:K`` (block scan) and ``--analyze`` (weight drift);
* :mod:`~isogauss_hf.cli.output` — the output directory, ``run.json`` / ``results.json``, ``--push-to-hub``;
* :mod:`~isogauss_hf.cli.data`, :mod:`~isogauss_hf.cli.datafiles`, :mod:`~isogauss_hf.cli.dataprep` — datasets;
* :mod:`~isogauss_hf.cli.pipelines`, :mod:`~isogauss_hf.cli.task_pipelines` — models and per-task pieces.

Bad input (unknown recipe/model/dataset, blocks out of range, missing columns, a number that is not finite or
not positive, an output directory of another run without --overwrite, --push-to-hub without a token) ends
with one line on stderr and exit code 2, and leaves no output directory behind.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from ..errors import UsageError
from .args import build_parser, resolve_recipe
from .context import RunContext
from .output import can_push, hub_token, prepare_output_dir
from .plan import dry_run, list_everything, preflight

__all__ = ["main"]

PROG = "isogauss-finetune"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.list_recipes:
            list_everything()
            return 0
        recipe = resolve_recipe(args)
        for note in args.plan_notes:  # what was chosen for the user: the alias's recipe, an inferred task
            print(note, flush=True)
        output_dir = args.output_dir or os.path.join("runs", recipe.name)
        if args.dry_run:
            return dry_run(recipe, output_dir)
        if args.push_to_hub:
            if not hub_token():
                raise UsageError("--push-to-hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
            from ..model import IsoGaussModel

            if recipe.layers is not None and not can_push(IsoGaussModel):
                raise UsageError("--push-to-hub: pushing Gaussian models is not available yet in this isogauss-hf "
                                 "version (use --layers none, or push OUTPUT_DIR/model with huggingface_hub)")
        preflight(recipe)
        resume = bool(args.resume_from_checkpoint)
        out = prepare_output_dir(output_dir, args.overwrite, resume)
        if resume:
            from .resume import check_same_configuration, clean_stale_saves

            check_same_configuration(recipe, out)
            for note in clean_stale_saves(out):
                print(note, flush=True)
        from .run import run_training

        return run_training(RunContext(recipe=recipe, out=out, resume=resume, push_to_hub=args.push_to_hub))
    except (UsageError, FileNotFoundError) as e:  # FileNotFoundError: MissingAssetError and friends name the fix
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `isogauss-finetune --list-recipes | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
