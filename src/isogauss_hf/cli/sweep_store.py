"""A sweep's directory: what is finished, written so that a crash never leaves a half-recorded run.

Layout::

    OUTPUT_DIR/sweep.json              the sweep: shared settings (its fingerprint), plan, commands, status, pid
    OUTPUT_DIR/runs/NAME/record.json   one finished run (NAME: variant_blocks_seed), written last and atomically
    OUTPUT_DIR/runs/NAME/model/        its model (unless --no-save-models)
    OUTPUT_DIR/runs/NAME/teacher_logits.pt   the dense teacher's train logits (distilled sweeps)
    OUTPUT_DIR/runs/NAME/checkpoints/  Trainer checkpoints while it trains; logs/ for --report-to tensorboard
    OUTPUT_DIR/comparison.{json,md,png}     the comparison table (isogauss_hf.cli.comparison_report)

A run is complete when its ``record.json`` is (status ``completed``, or ``diverged``: a run that diverged
diverges again). A rerun of the same command skips complete runs, removes the directory of an incomplete one
(killed, interrupted) and trains it afresh. A directory holding a sweep of other shared settings (another lr,
dataset, budget ...) is refused without ``--overwrite``; so is a finished run whose own settings differ.
Adding seeds, block sets, baselines or Gaussian configurations to a sweep directory extends it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError
from .output import library_versions, make_output_dir, process_alive, read_json, run_state, write_json
from .sweep_plan import RUNS_DIR, PlannedRun

__all__ = ["SWEEP_MARKER", "RECORD", "COMPLETE", "prepare_sweep_dir", "SweepStore", "is_sweep_dir"]

SWEEP_MARKER = "sweep.json"
RECORD = "record.json"
COMPLETE = ("completed", "diverged")


def is_sweep_dir(path: Path) -> bool:
    return (path / SWEEP_MARKER).is_file()


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k} {json.dumps(old.get(k))} there, {json.dumps(new.get(k))} now" for k in keys if old.get(k) != new.get(k)]


def prepare_sweep_dir(path: str, overwrite: bool, base: dict[str, Any]) -> Path:
    """The sweep directory, created, or kept to continue a sweep of the same shared settings (``base``)."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"output dir {path!r} is a file")
    if out.is_dir() and any(out.iterdir()):
        marker = read_json(out / SWEEP_MARKER)
        if marker is None:
            if run_state(out) is None:
                raise UsageError(f"output dir {path!r} is not empty and holds no isogauss-finetune sweep; choose "
                                 f"another --output-dir")
            if not overwrite:
                raise UsageError(f"output dir {path!r} holds a single isogauss-finetune run, not a sweep; pass "
                                 f"--overwrite to replace it or choose another --output-dir")
        elif marker.get("status") == "running" and process_alive(marker):
            raise UsageError(f"output dir {path!r} is in use by a running sweep (pid {marker.get('pid')}); wait for it "
                             f"or choose another --output-dir")
        elif not overwrite and marker.get("base") != base:
            diffs = _differences(marker.get("base") or {}, base)
            raise UsageError(f"output dir {path!r} holds a sweep with other shared settings ({'; '.join(diffs[:3])}); "
                             f"pass --overwrite to start it over or choose another --output-dir")
        if overwrite:
            shutil.rmtree(out)
    make_output_dir(out, path)
    return out


class SweepStore:
    """Reads and writes the records of one sweep directory (see the module docstring)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / SWEEP_MARKER
        self.payload: dict[str, Any] = read_json(self.path) or {}
        self.started = time.time()

    # ---------------------------------------------------------------------------------------- runs
    def record(self, name: str) -> Optional[dict[str, Any]]:
        """The record of run ``name`` when it is complete, else None."""
        record = read_json(self.out / RUNS_DIR / name / RECORD)
        return record if record and record.get("status") in COMPLETE else None

    def complete(self, run: PlannedRun) -> bool:
        """Whether ``run`` is done (a teacher also needs its logits, which an earlier plain sweep did not keep)."""
        if self.record(run.name) is None:
            return False
        return not run.teacher or (run.variant.run_dir / "teacher_logits.pt").is_file()

    def check(self, runs: list[PlannedRun]) -> None:
        """Refuse to reuse a finished run whose own settings differ from the plan's (one line naming them)."""
        for run in runs:
            record = self.record(run.name)
            if record is not None and record.get("fingerprint") != run.fingerprint:
                diffs = _differences(record.get("fingerprint") or {}, run.fingerprint)
                raise UsageError(f"run {run.name} in {str(self.out)!r} was trained with other settings "
                                 f"({'; '.join(diffs[:3])}); pass --overwrite to start the sweep over or choose "
                                 f"another --output-dir")

    def start(self, run: PlannedRun) -> None:
        """An empty directory for ``run`` (what an interrupted attempt left is removed)."""
        shutil.rmtree(run.variant.run_dir, ignore_errors=True)
        run.variant.run_dir.mkdir(parents=True)

    def finish(self, run: PlannedRun, record: dict[str, Any]) -> None:
        """Record ``run`` as finished: ``record.json`` written atomically, last."""
        record = {"run": run.name, "seed": run.seed, "blocks": run.blocks, "fingerprint": run.fingerprint,
                  "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **record}
        write_json(run.variant.run_dir / RECORD, record)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the directory (this plan's and earlier commands'), in name order."""
        root = self.out / RUNS_DIR
        names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        return [r for r in (self.record(n) for n in names) if r is not None]

    # ---------------------------------------------------------------------------------------- sweep.json
    def begin(self, recipe: dict[str, Any], base: dict[str, Any], plan: dict[str, Any], command: str) -> None:
        commands = list(self.payload.get("commands", []))
        if command not in commands:
            commands.append(command)
        block_sets = list(dict.fromkeys(self.payload.get("block_sets", []) + plan["block_sets"]))
        self.payload.update({"status": "running", "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "pid": os.getpid(), "host": socket.gethostname(), "versions": library_versions(),
                             "recipe": recipe, "base": base, "commands": commands, **plan, "block_sets": block_sets})
        self.flush("running")

    def flush(self, status: str, error: Optional[str] = None) -> None:
        self.payload["status"] = status
        self.payload["wall_time_s"] = round(time.time() - self.started, 2)
        if error:
            self.payload["error"] = error
        else:
            self.payload.pop("error", None)
        write_json(self.path, self.payload)
