"""Running a sweep: every run of :func:`~isogauss_hf.cli.sweep_plan.plan_runs`, one layer above a single run.

Per seed, what the runs share is loaded once (:func:`~isogauss_hf.cli.run.load_shared`: model source,
tokenizer, data, task pipeline), ``auto:K`` block sets are resolved by that seed's block scan, and each run
that is not complete yet trains with :func:`~isogauss_hf.cli.run.train_variant` — the same Trainer, model
building and evaluation as a single run — into ``OUTPUT_DIR/runs/NAME``; its record is written atomically
when it ends (:class:`~isogauss_hf.cli.sweep_store.SweepStore`), followed by a progress line (runs done /
total, the time per run so far, an estimate of the time left) and the comparison so far. A run that diverges is
recorded as such and the sweep goes on; Ctrl-C or SIGTERM stop it cleanly (the run in progress is not
recorded, ``sweep.json`` says ``interrupted``, exit code 130), and rerunning the same command continues.
At the end the comparison table (:mod:`~isogauss_hf.cli.comparison_report`) is printed and written.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from ..errors import TrainingDiverged, UsageError
from .comparison_report import comparison_of, markdown, write_comparison
from .context import RunContext
from .sweep_plan import PlannedRun, Sweep, base_fingerprint, plan_runs, variants_for
from .sweep_store import SweepStore

__all__ = ["run_sweep", "sweep_lines", "Progress"]

PROG = "isogauss-finetune"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Runs done out of the plan's total and an estimate of the time left (mean time of the runs trained now)."""

    def __init__(self, total: int, done: int) -> None:
        self.total, self.done, self.times = total, done, []

    def finished(self, seconds: float) -> None:
        self.done += 1
        self.times.append(seconds)

    def line(self, name: str) -> str:
        left = self.total - self.done
        mean = sum(self.times) / len(self.times) if self.times else None
        eta = f", about {_duration(mean * left)} left ({_duration(mean)} per run so far)" if mean and left else ""
        return f"sweep: {self.done}/{self.total} runs done ({name}, {_duration(self.times[-1])}){eta}"


def sweep_lines(runs: list[PlannedRun], store: Optional[SweepStore], sweep: Sweep) -> list[str]:
    """The plan of a sweep: counts, then one line per run (``done`` when its record is complete)."""
    done = sum(store.complete(r) for r in runs) if store is not None else 0
    lines = [f"sweep       {len(sweep.seeds)} seed(s) {','.join(map(str, sweep.seeds))} x {len(sweep.block_sets)} "
             f"block set(s) {';'.join(sweep.block_sets)}: {len(runs)} runs" + (f", {done} already done" if done else "")]
    for run in runs:
        state = "done" if store is not None and store.complete(run) else "to run"
        lines.append(f"  {run.name:<40} {state}")
    return lines


def _resolve_auto(ctx: RunContext, sweep: Sweep, seed: int, blocks: str) -> dict[str, Any]:
    """``auto:K`` of one seed: the block scan on that seed's data; the variants with the picked blocks, by name."""
    from .analysis_hooks import auto_lines, pick_blocks, with_blocks

    recipe = sweep.recipe_for(seed, blocks)
    suggestion = pick_blocks(recipe, ctx.source, ctx.labels, ctx.train, ctx.pipeline.collator())
    print("\n".join(auto_lines(suggestion, min(recipe.calibration_samples, len(ctx.train)))), flush=True)
    resolved = with_blocks(recipe, suggestion.blocks)
    return {"recipe": resolved, "variants": {v.run_dir.name: v for _, v in variants_for(resolved, ctx.out, seed, blocks)}}


def _train(ctx: RunContext, run: PlannedRun, store: SweepStore, sweep: Sweep, resolved: dict) -> dict[str, Any]:
    """Train one run into its directory; its record (``diverged`` when it did)."""
    variant, recipe = run.variant, sweep.recipe_for(run.seed, run.blocks or sweep.block_sets[0])
    if run.blocks is not None and run.blocks.startswith("auto"):
        if run.blocks not in resolved:
            resolved[run.blocks] = _resolve_auto(ctx, sweep, run.seed, run.blocks)
        recipe, variant = resolved[run.blocks]["recipe"], resolved[run.blocks]["variants"][run.name]
    if variant.distill is not None and ctx.teacher_logits is None:
        from .run import load_teacher_logits

        teacher = next(v for _, v in variants_for(recipe, ctx.out, run.seed, sweep.block_sets[0])
                       if v.kind == "dense" and v.distill is None)
        ctx.teacher_logits = load_teacher_logits(ctx.teacher_path(teacher))
    ctx.recipe = recipe
    store.start(run)
    from .run import train_variant

    try:
        record = train_variant(ctx, variant)
    except TrainingDiverged as e:
        print(f"{PROG}: run {run.name} diverged: {e} (recorded; the sweep goes on)", file=sys.stderr, flush=True)
        return {"name": variant.name, "label": variant.label, "kind": variant.kind, "layers": variant.layers,
                "status": "diverged", "error": str(e)}
    from .report import run_line

    print(run_line(record, recipe.metric), flush=True)
    return {"status": "completed", "recipe": recipe.to_dict(), **record}


def _comparison(store: SweepStore, png: bool) -> dict[str, Any]:
    payload = store.payload
    comparison = comparison_of(store.records(), payload["recipe"], payload.get("block_sets", []),
                               payload.get("commands", []))
    write_comparison(store.out, comparison, png=png)
    return comparison


def _seed_runs(ctx_args: dict[str, Any], sweep: Sweep, seed: int, runs: list[PlannedRun], store: SweepStore,
               progress: Progress) -> None:
    todo = [r for r in runs if r.seed == seed and not store.complete(r)]
    if not todo:
        return
    from .run import load_shared

    ctx = RunContext(recipe=sweep.recipe_for(seed, sweep.block_sets[0]), **ctx_args)
    print(f"\n=== seed {seed}: {len(todo)} run(s) to train", flush=True)
    load_shared(ctx)
    resolved: dict[str, Any] = {}
    for run in todo:
        print(f"\n=== sweep run {progress.done + 1}/{progress.total}: {run.name}", flush=True)
        start = time.time()
        store.finish(run, _train(ctx, run, store, sweep, resolved))
        progress.finished(time.time() - start)
        print(progress.line(run.name), flush=True)
        _comparison(store, png=False)


def run_sweep(sweep: Sweep, out: Path, command: str, report_to: list[str], save_models: bool = True) -> int:
    """Train every run of ``sweep`` not complete in ``out``; print and write the comparison; the exit code."""
    from .run import disk_error, on_sigterm

    runs = plan_runs(sweep, out)
    store = SweepStore(out)
    store.check(runs)
    plan = {"seeds": sweep.seeds, "block_sets": sweep.block_sets, "plan": [r.name for r in runs]}
    store.begin(sweep.recipe.to_dict(), base_fingerprint(sweep.recipe), plan, command)
    progress = Progress(len(runs), sum(store.complete(r) for r in runs))
    print("\n".join(sweep_lines(runs, store, sweep)), flush=True)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main else None
    ctx_args = {"out": out, "report_to": report_to, "save_models": save_models}
    try:
        for seed in sweep.seeds:
            _seed_runs(ctx_args, sweep, seed, runs, store, progress)
        comparison = _comparison(store, png=True)
        store.flush("completed")
    except KeyboardInterrupt as e:
        store.flush("interrupted", str(e) or "KeyboardInterrupt")
        _comparison(store, png=False)
        print(f"\n{PROG}: interrupted; {progress.done} of {progress.total} runs are complete in {out} (the run in "
              f"progress is not recorded); rerun the same command to continue", file=sys.stderr)
        return 130
    except UsageError as e:
        store.flush("failed", str(e))
        raise
    except Exception as e:  # noqa: BLE001 - recorded, then one line (a full disk) or the traceback
        try:
            store.flush("failed", f"{type(e).__name__}: {e}")
        except OSError:
            pass
        full = disk_error(e)
        if full is not None:
            print(f"\n{PROG}: error: {full.strerror} while writing the sweep to {out} ({full.filename or 'a file'}); "
                  f"free space there or choose another --output-dir, then rerun to continue", file=sys.stderr)
            return 1
        traceback.print_exc()
        print(f"{PROG}: error: {type(e).__name__}: {e} (complete runs are kept in {out}; rerun to continue)",
              file=sys.stderr)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    print("\n" + markdown(comparison))
    print(f"comparison: {out / 'comparison.md'} (.json, .png); runs in {out / 'runs'}  "
          f"(wall time {_duration(store.payload['wall_time_s'])})")
    return 0
