"""``--resume-from-checkpoint``: what may be resumed, from which Trainer checkpoint, and what a killed run left.

* :func:`check_same_configuration` — a resume continues the run recorded in ``run.json``; a different model,
  dataset, task, blocks or Gaussian settings would mix two configurations in one model, so it is refused
  naming both;
* :func:`last_complete_checkpoint` — the newest ``checkpoint-N`` the Trainer finished writing (its
  ``trainer_state.json`` is written after the weights, optimizer and scheduler); a later one cut short by a
  kill is named, skipped and removed;
* :func:`clean_stale_saves` — temporary directories of a model save killed half-way (``.NAME.tmp-*``) are
  removed; a ``.NAME.old-*`` whose ``NAME`` is missing (killed between the two renames of an atomic save) is
  put back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError

__all__ = ["check_same_configuration", "last_complete_checkpoint", "clean_stale_saves", "CHECKPOINT_FILES"]

#: Files every complete Trainer checkpoint holds besides its weights (``trainer_state.json`` is written last).
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
#: Recipe fields that define what the resumed run trains (the Gaussian configuration and what it is fitted on).
_SAME = ("model", "dataset", "task", "layers")


def _gaussian(recipe_dict: dict[str, Any]) -> Optional[dict[str, Any]]:
    from ..recipes import Recipe

    try:
        config = Recipe.from_dict(recipe_dict, source="run.json").isogauss_config.to_dict()
    except Exception:  # noqa: BLE001 - a run.json of another version: compare the fields alone
        return None
    return {k: config[k] for k in ("target_modules", "rule", "noise", "seed", "num_samples", "standardize",
                                   "distribution_lr", "std_floor") if k in config}


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else repr(value)


def check_same_configuration(recipe: Any, out: Path) -> None:
    """Refuse resuming the run in ``out`` with another model, dataset, task, blocks or Gaussian settings."""
    try:
        old = json.loads((out / "run.json").read_text(encoding="utf-8"))["recipe"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # prepare_output_dir already refused a directory without a run
    new = recipe.to_dict()
    diffs = []
    for key in _SAME:
        a, b = old.get(key), new.get(key)
        if key == "layers" and b is None and new.get("auto_layers") is not None and a is not None:
            continue  # auto:K: the interrupted run recorded the blocks its scan picked
        if a != b:
            diffs.append(f"{key} {_show(a)} (interrupted run) vs {_show(b)} (now)")
    old_gauss, new_gauss = _gaussian(old), _gaussian(new)
    if old_gauss is not None and new_gauss is not None:
        diffs += [f"{k} {old_gauss[k]!r} (interrupted run) vs {new_gauss[k]!r} (now)"
                  for k in old_gauss if old_gauss[k] != new_gauss.get(k)]
    if diffs:
        raise UsageError(f"--resume-from-checkpoint: the run in {str(out)!r} was started with another configuration "
                         f"({'; '.join(diffs)}); resume with the interrupted run's flags, or start a new run (drop "
                         f"--resume-from-checkpoint, add --overwrite)")


def _complete(path: Path) -> Optional[str]:
    """None when ``path`` is a complete Trainer checkpoint, else what it lacks."""
    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
    if not any((path / name).is_file() for name in _WEIGHTS):
        missing.insert(0, "the model weights")
    if not missing:
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            missing.append("a readable trainer_state.json")
    return f"it lacks {', '.join(missing)} (the save was cut short)" if missing else None


def last_complete_checkpoint(directory: Path) -> tuple[Optional[Path], list[str]]:
    """The newest complete ``checkpoint-N`` in ``directory`` and a line per later incomplete one (removed)."""
    found = []
    for path in directory.glob("checkpoint-*") if directory.is_dir() else ():
        step = path.name.rpartition("-")[2]
        if path.is_dir() and step.isdigit():
            found.append((int(step), path))
    notes = []
    for _, path in sorted(found, reverse=True):
        why = _complete(path)
        if why is None:
            return path, notes
        notes.append(f"skipped {path.name}: {why}; removed it")
        shutil.rmtree(path, ignore_errors=True)
    return None, notes


def clean_stale_saves(out: Path) -> list[str]:
    """Remove what saves killed half-way left in ``out`` (and put back a model caught between two renames)."""
    notes = []
    for path in sorted(out.glob(".*.old-*")):
        target = out / path.name[1:].rpartition(".old-")[0]
        if path.is_dir() and not target.exists():
            path.rename(target)
            notes.append(f"restored {target.name} from {path.name} (a save was killed between its two renames)")
        else:
            shutil.rmtree(path, ignore_errors=True)
    for path in sorted(out.glob(".*.tmp-*")) + sorted(out.glob("*.json.tmp")):
        (shutil.rmtree if path.is_dir() else Path.unlink)(path)
        notes.append(f"removed {path.name}, left by a save that was killed half-way")
    return notes
