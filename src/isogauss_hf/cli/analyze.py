"""``isogauss-analyze``: how Gaussian each fully connected layer is, and which blocks can be replaced.

    isogauss-analyze --model minilm --dataset tweets --calibration-samples 128 --output-dir runs/analyze
    isogauss-analyze --model ./my-bert --output-dir out          # fit metrics only (no dataset)

Without ``--dataset`` only the Eq. 2 fit metrics of every matrix are measured (weights only). With a
dataset, a seeded calibration subset of its train split drives the block scan
(:func:`isogauss_hf.analysis.scan_blocks`: Block Influence, loss increase when a block turns Gaussian /
is removed). Prints the ranked table, writes ``analysis.md``, ``analysis.json`` and PNG plots into
``--output-dir``. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Optional, Sequence

from ..errors import UsageError

__all__ = ["main", "build_parser"]

PROG = "isogauss-analyze"


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from ..analysis import DEFAULT_SCORE

    p = _Parser(prog=PROG, description="Measure how well the row/column Gaussian of Eq. 2 describes each fully "
                                      "connected matrix and, on calibration data, which blocks can be replaced.")
    p.add_argument("--model", help="alias (bert, gpt2, vit, minilm, ...), hub id or local model directory")
    p.add_argument("--dataset", help="dataset name or local .csv/.json/.jsonl/.parquet file; without it only the fit "
                                     "metrics are measured")
    p.add_argument("--task", help="task of a local dataset (text-classification, image-classification, "
                                  "question-answering, summarization)")
    p.add_argument("--text-column", help="column of a local dataset holding the text (default: text)")
    p.add_argument("--label-column", help="column of a local dataset holding the label (default: label)")
    p.add_argument("--calibration-samples", type=int, default=128, help="training examples used for the scan (128)")
    p.add_argument("--batch-size", type=int, default=16, help="calibration batch size (16)")
    p.add_argument("--max-length", type=int, default=128, help="maximum tokens per example (128)")
    p.add_argument("--layers", default="all", help="1-based blocks to analyse, e.g. 2,4,6 (default: all)")
    p.add_argument("--targets", help="matrices per block, comma-separated: canonical names (query,key,value,"
                                     "attention_output,mlp_in,mlp_out) or regexes on full module names")
    p.add_argument("--score", default=DEFAULT_SCORE, help=f"score that ranks the blocks (default {DEFAULT_SCORE}; "
                                                         "see --list-scores)")
    p.add_argument("--suggest", type=int, metavar="K", help="also print the K blocks the score ranks safest "
                                                            "(what --layers auto:K picks)")
    p.add_argument("--head", choices=("auto", "probe", "keep"), default="auto",
                   help="classification head for the losses: 'probe' fits it on the calibration features first, "
                        "'keep' uses it as loaded; 'auto' probes when the checkpoint has no head for this task")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration subset and the Gaussian draws (0)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--output-dir", required=False, help="where analysis.md / analysis.json / *.png go")
    p.add_argument("--list-scores", action="store_true", help="list the scores and exit")
    return p


def _parse_blocks(text: str) -> Optional[list[int]]:
    value = (text or "all").strip().lower()
    if value == "all":
        return None
    try:
        blocks = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise UsageError(f"--layers {text!r} invalid: give 1-based block indices separated by commas (e.g. 2,4) "
                         f"or 'all'") from None
    bad = [b for b in blocks if b < 1]
    if bad or not blocks:
        raise UsageError(f"--layers {text!r} invalid: block indices are integers >= 1 (1-based)")
    if len(set(blocks)) != len(blocks):
        raise UsageError(f"--layers {text!r} lists a block more than once")
    return sorted(blocks)


def _positive(name: str, value: Optional[int]) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value}")


def _task_for(args: argparse.Namespace) -> str:
    from ..recipes import TASKS
    from .data import DATASETS

    if args.task is not None and args.task not in TASKS:
        raise UsageError(f"--task {args.task!r} invalid; choose one of {', '.join(TASKS)}")
    if args.dataset is None:
        return args.task or "text-classification"
    if args.dataset in DATASETS:
        task = DATASETS[args.dataset].task
        if args.task is not None and args.task != task:
            raise UsageError(f"dataset {args.dataset!r} is for {task}, not --task {args.task}")
        return task
    if args.task is None:
        from .data import is_local_dataset
        from .taskguess import infer_task

        if not is_local_dataset(args.dataset):
            raise UsageError(f"unknown dataset {args.dataset!r}; known datasets: {', '.join(sorted(DATASETS))} (or a "
                             f"local .csv/.json/.jsonl/.parquet file or dataset directory)")
        task, why = infer_task(args.dataset, text_column=args.text_column, label_column=args.label_column)
        print(f"task {task}, {why}", flush=True)
        return task
    return args.task


def _check_output_dir(path: str) -> None:
    """``--output-dir`` must be a directory that can be created and written (checked before any work)."""
    import os

    target = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(target) and not os.path.isdir(target):
        raise UsageError(f"--output-dir {path!r} is a file; give a directory (it is created when missing)")
    parent = target
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"--output-dir {path!r} cannot be created: {parent!r} is a file")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--output-dir {path!r} cannot be written ({parent!r} is not writable); choose another")


def _all_deltas_zero(scan: Any) -> bool:
    """Whether every calibration loss increase is exactly 0 (nothing the scan could rank blocks by)."""
    values = [v for b in scan.blocks for v in (b.replacement_loss, b.removal_loss) if v is not None]
    return bool(values) and all(v == 0 for v in values)


def _block_count(config: Any) -> Optional[int]:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _head_is_new(config: Any, task: str, labels: Optional[list[str]]) -> bool:
    suffix = {"text-classification": "ForSequenceClassification",
              "image-classification": "ForImageClassification"}.get(task)
    if suffix is None:
        return False
    trained = any(str(a).endswith(suffix) for a in (getattr(config, "architectures", None) or []))
    return not trained or (labels is not None and getattr(config, "num_labels", None) != len(labels))


def _calibration(args, recipe, source, config, task) -> tuple[Any, Optional[list[str]], Any]:
    """(prepared train subset, labels, collate_fn) for the scan."""
    import datasets

    from .data import label_names, load_task_dataset
    from .pipelines import load_tokenizer, make_pipeline

    data = load_task_dataset(args.dataset, task, {}, args.seed,
                             columns={"text": args.text_column, "label": args.label_column})
    labels = label_names(data) if task in ("text-classification", "image-classification") else None
    train = data["train"].shuffle(seed=args.seed)
    subset = train.select(range(min(args.calibration_samples, len(train))))
    if len(subset) == 0:
        raise UsageError(f"dataset {args.dataset!r} has an empty train split")
    tokenizer = load_tokenizer(recipe, source)
    pipeline = make_pipeline(recipe, tokenizer, config)
    prepared, _ = pipeline.prepare(datasets.DatasetDict({"train": subset, "test": subset.select(range(1))}))
    return prepared, labels, pipeline.collator()


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from ..analysis import check_score, find_blocks, format_table, make_calibration_batches, scan_blocks, \
        suggest_layers, write_report
    from ..recipes import Recipe
    from .pipelines import load_config, load_model, resolve_model_source

    started = time.perf_counter()
    if not args.model:
        raise UsageError("--model is required (an alias, hub id or local model directory)")
    if not args.output_dir:
        raise UsageError("--output-dir is required (where analysis.md, analysis.json and the plots go)")
    _positive("--calibration-samples", args.calibration_samples)
    _positive("--batch-size", args.batch_size)
    _positive("--max-length", args.max_length)
    _positive("--suggest", args.suggest)
    _positive("--threads", args.threads)
    check_score(args.score)
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    _check_output_dir(args.output_dir)
    layers = _parse_blocks(args.layers)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    task = _task_for(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    recipe = Recipe(name="analyze", task=task, model=args.model, dataset=args.dataset or "none", purpose="demo",
                    max_length=args.max_length, seed=args.seed)
    source = resolve_model_source(recipe)
    config, where = load_config(recipe, source)
    count = _block_count(config)
    wanted = len(layers) if layers is not None else count
    if count is not None and layers is not None and max(layers) > count:
        raise UsageError(f"--layers {args.layers}: {args.model} has {count} blocks (1-based indices 1..{count})")
    if args.suggest is not None and wanted is not None and args.suggest > wanted:
        raise UsageError(f"--suggest {args.suggest} is larger than the {wanted} blocks analysed "
                         f"({args.model} has {count} blocks)")
    if args.dataset is None and check_score(args.score).needs_data:
        args.score = "ks"  # a data score cannot rank without data: rank by the fit
    prepared = labels = collate = None
    if args.dataset is not None:
        prepared, labels, collate = _calibration(args, recipe, source, config, task)
    model = load_model(recipe, source, labels)
    model.eval()
    num_blocks = len(find_blocks(model)[1])
    if args.suggest is not None and args.suggest > (len(layers) if layers else num_blocks):
        raise UsageError(f"--suggest {args.suggest} is larger than the {len(layers) if layers else num_blocks} "
                         f"blocks analysed")
    batches = None
    if prepared is not None:
        batches = make_calibration_batches(prepared, collate, num_samples=args.calibration_samples,
                                           batch_size=args.batch_size, seed=args.seed, model=model)
    probe = args.head == "probe" or (args.head == "auto" and _head_is_new(config, task, labels))
    loaded = time.perf_counter()
    scan = scan_blocks(model, batches, layers=layers, targets=targets, seed=args.seed, probe_head=probe,
                       progress=True)
    context = {"model": f"{args.model} ({where})", "task": task, "dataset": args.dataset or "none (fit metrics only)",
               "calibration": f"{args.calibration_samples} train examples, batch {args.batch_size}, max length "
                              f"{args.max_length}, seed {args.seed}" if batches else "none",
               "blocks": f"{num_blocks} ({'all' if layers is None else ','.join(map(str, layers))} analysed)",
               "torch threads": torch.get_num_threads()}
    extra: dict[str, Any] = {}
    if batches is not None and check_score(args.score).needs_data and _all_deltas_zero(scan):
        raise UsageError(f"every calibration loss increase is 0 on {args.dataset!r} (the loss does not depend on "
                         f"any block), so --score {args.score} cannot rank the blocks; use data with more than one "
                         f"class, or a weight score such as --score ks")
    print(f"\nblocks of {args.model}, safest first by {args.score}:")
    print(format_table(scan, args.score))
    if args.suggest is not None:
        pick = suggest_layers(model, batches, args.suggest, args.score, layers=layers, scan=scan)
        print("\n" + pick.describe())
        print(f"suggested --layers {','.join(map(str, pick.blocks))}")
        extra["suggestion"] = pick.to_dict()
    finished = time.perf_counter()
    extra["timing"] = {"load_s": round(loaded - started, 2), "scan_s": round(finished - loaded, 2),
                       "total_s": round(finished - started, 2)}
    paths = write_report(scan, args.output_dir, args.score, context=context, extra=extra, plots=not args.no_plots)
    print("\nwrote " + ", ".join(paths[k] for k in paths))
    print(f"wall time {time.perf_counter() - started:.1f} s (scan {finished - loaded:.1f} s)")
    return 0


def _list_scores() -> None:
    from ..analysis import DEFAULT_SCORE, SCORES

    for name, s in SCORES.items():
        tag = "calibration data" if s.needs_data else "weights only"
        default = "  (default)" if name == DEFAULT_SCORE else ""
        print(f"  {name:18s} [{tag}; {'lower' if s.lower_is_safer else 'higher'} is safer] {s.help}{default}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..recipes import RecipeError
    from .data import UsageError as DataUsageError

    args = build_parser().parse_args(argv)
    try:
        if args.list_scores:
            _list_scores()
            return 0
        return run(args)
    except (UsageError, DataUsageError, RecipeError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:  # a missing offline asset: the message names the fix
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
