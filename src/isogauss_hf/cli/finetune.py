"""``isogauss-finetune``: fine-tune a transformers model with Isotropic Gaussian layers (or its dense baseline).

Examples::

    isogauss-finetune --recipe minilm-tweets                   # dense, Gaussian, drop and lowrank side by side
    isogauss-finetune --recipe bert-ag-news --layers 4,8,12 --rule gdu --dry-run
    isogauss-finetune --recipe minilm-tweets --preset paper    # the paper's WDU / resample / 10 draws
    isogauss-finetune --recipe minilm-bbc-news --layers auto:2 --baselines drop,lowrank,frozen
    isogauss-finetune --recipe ffn8-mnist --layers none        # the dense baseline only
    isogauss-finetune --model minilm --dataset reviews.json --task text-classification \\
        --text-column review --label-column class --layers 5 --compare-dense
    isogauss-finetune --recipe minilm-tweets --seeds 0,1,2 --layers "3;2,4;auto:3"   # a sweep, paired table
    isogauss-finetune --report runs/minilm-tweets              # a sweep's table again, from comparison.json

Training is ``transformers.Trainer`` with :class:`~isogauss_hf.IsoGaussCallback` (one GDU/WDU step of every
Gaussian layer per optimizer step, Algorithms 1-2); every run reports its accuracy with a Wilson 95 % interval
and the test split's majority-class rate. Values neither the recipe nor a flag sets come from ``--preset``
(``default`` or ``paper``, :data:`isogauss_hf.recipe_checks.PRESETS`). :func:`main` reads as the phases, each
in its own modules (:mod:`isogauss_hf.cli` lists them all):

* parse — :mod:`~isogauss_hf.cli.args`: flags, number checks, flags -> recipe;
* plan — :mod:`~isogauss_hf.cli.plan` (preflight checks, the data summary, ``--dry-run``, ``--list-recipes``),
  :mod:`~isogauss_hf.cli.variants` (which runs a recipe makes: dense, Gaussian, baselines drop / lowrank /
  frozen), :mod:`~isogauss_hf.cli.sweep_plan` (``--seeds`` / ``--layers "A;B"``: every variant x block set x seed);
* run(s) — a single run: :mod:`~isogauss_hf.cli.run` (the variants in order) and
  :mod:`~isogauss_hf.cli.trainer` (the Trainer of one run); a sweep: :mod:`~isogauss_hf.cli.sweep`, one layer
  above (:func:`~isogauss_hf.cli.run.train_variant` per run), its records in :mod:`~isogauss_hf.cli.sweep_store`;
* report — :mod:`~isogauss_hf.cli.report` (a run's line, the closing table), :mod:`~isogauss_hf.cli.verdict`
  (the closing warnings), :mod:`~isogauss_hf.cli.comparison_report` (a sweep's comparison table, ``--report``),
  :mod:`~isogauss_hf.cli.output` (the output directory, ``run.json`` / ``results.json``, ``--push-to-hub``).

Bad input (unknown recipe/model/dataset, blocks out of range, missing columns, a number that is not finite or
not positive, an output directory of another run without --overwrite, --push-to-hub without a token) ends
with one line on stderr and exit code 2, and leaves no output directory behind.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any, Optional, Sequence

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
        if args.report:  # report: the comparison of a finished (or partial) sweep, from its JSON
            from .comparison_report import render_report

            return render_report(args.report)
        # parse -> plan
        recipe = resolve_recipe(args)
        for note in args.plan_notes:  # what was chosen for the user: the alias's recipe, an inferred task
            print(note, flush=True)
        output_dir = args.output_dir or os.path.join("runs", recipe.name)
        sweep = _sweep(args, recipe)
        if args.dry_run:
            return dry_run(recipe, output_dir) if sweep is None else _sweep_dry_run(sweep, output_dir)
        report_to = _report_to(args)
        # run(s) -> report
        if sweep is not None:
            return _run_sweep(args, argv, sweep, output_dir, report_to)
        return _run_single(args, recipe, output_dir, report_to)
    except (UsageError, FileNotFoundError) as e:  # FileNotFoundError: MissingAssetError and friends name the fix
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `isogauss-finetune --list-recipes | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0


def _report_to(args: Any) -> list[str]:
    if not args.report_to:
        return []
    from .trainer import check_report_to

    return check_report_to(args.report_to)


def _sweep(args: Any, recipe: Any) -> Any:
    """The :class:`~isogauss_hf.cli.sweep_plan.Sweep` that ``--seeds`` / ``--layers "A;B"`` ask for, else None."""
    if args.seeds is None and not args.block_sets:
        if args.save_models is not None:
            raise UsageError("--save-models / --no-save-models is for sweeps (--seeds, or --layers \"A;B\"); a single "
                             "run always saves its models")
        return None
    from .sweep_plan import Sweep, parse_block_sets, parse_seeds

    conflicts = [flag for flag, given in (("--seed", args.seed is not None), ("--resume-from-checkpoint",
                 args.resume_from_checkpoint), ("--push-to-hub", args.push_to_hub), ("--analyze", recipe.analyze))
                 if given]
    if conflicts:
        raise UsageError(f"{conflicts[0]} is for a single run, not a sweep (--seeds / several --layers sets): "
                         + {"--seed": "give the seeds with --seeds", "--resume-from-checkpoint": "a sweep continues "
                            "by itself when the same command is run again", "--push-to-hub": "push one run's "
                            "OUTPUT_DIR/runs/NAME/model with huggingface_hub", "--analyze": "run it on one seed "
                            "without --seeds"}[conflicts[0]])
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [recipe.seed]
    texts = args.block_sets or [args.layers if args.layers is not None else _layers_text(recipe)]
    return Sweep(recipe, seeds, parse_block_sets(recipe, texts))


def _layers_text(recipe: Any) -> str:
    if recipe.auto_layers is not None:
        return f"auto:{recipe.auto_layers}"
    return ",".join(map(str, recipe.layers)) if recipe.layers else "none"


def _sweep_dry_run(sweep: Any, output_dir: str) -> int:
    from pathlib import Path

    from .sweep import sweep_lines
    from .sweep_plan import plan_runs
    from .sweep_store import SweepStore, is_sweep_dir

    out = Path(output_dir).expanduser()
    for blocks in sweep.block_sets:
        preflight(sweep.recipe_for(sweep.seeds[0], blocks))
    store = SweepStore(out) if is_sweep_dir(out) else None
    print("\n".join(sweep_lines(plan_runs(sweep, out), store, sweep)))
    print(f"the first run's plan (seed {sweep.seeds[0]}, blocks {sweep.block_sets[0]}):")
    note = "a sweep: its complete runs are kept, the others trained" if store is not None else None
    return dry_run(sweep.recipe_for(sweep.seeds[0], sweep.block_sets[0]), output_dir, note)


def _run_sweep(args: Any, argv: Optional[Sequence[str]], sweep: Any, output_dir: str, report_to: list[str]) -> int:
    from .sweep import run_sweep
    from .sweep_plan import base_fingerprint
    from .sweep_store import prepare_sweep_dir

    for blocks in sweep.block_sets:  # every block set against the model, before anything is loaded
        preflight(sweep.recipe_for(sweep.seeds[0], blocks))
    out = prepare_sweep_dir(output_dir, args.overwrite, base_fingerprint(sweep.recipe))
    command = f"{PROG} " + shlex.join(list(argv) if argv is not None else sys.argv[1:])
    return run_sweep(sweep, out, command, report_to, save_models=args.save_models is not False)


def _run_single(args: Any, recipe: Any, output_dir: str, report_to: list[str]) -> int:
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

    return run_training(RunContext(recipe=recipe, out=out, resume=resume, push_to_hub=args.push_to_hub,
                                   report_to=report_to))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
