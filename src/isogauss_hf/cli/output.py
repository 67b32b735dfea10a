"""The output directory of ``isogauss-finetune``: preparing it, ``run.json`` / ``results.json``, and pushing.

Layout::

    OUTPUT_DIR/run.json          the resolved plan, pid and host (marks the directory as a run)
    OUTPUT_DIR/results.json      status, metrics, parameter reports, configs, times, library versions
    OUTPUT_DIR/model/            final model (compressed checkpoint when Gaussian) + tokenizer
    OUTPUT_DIR/dense-baseline/   the dense model of --compare-dense
    OUTPUT_DIR/checkpoints/RUN/  Trainer checkpoints while training (removed once the run is saved)

(A sweep's directory is laid out by :mod:`isogauss_hf.cli.sweep_store`.)

``results.json``'s ``status`` is ``running`` while the run goes on, then ``completed``,
``interrupted`` (Ctrl-C, SIGTERM), ``diverged`` (a loss or weight not finite) or ``failed``. A directory whose
run is unfinished (interrupted, diverged, failed, or ``running`` although its process is gone, e.g. after
SIGKILL) is replaced by the next run
without ``--overwrite``; a completed run needs ``--overwrite``; a run whose process is alive is never
touched.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from ..card import RESULTS_NAME  # the file a run writes and a model card reads: one name
from ..errors import UsageError

__all__ = ["RUN_MARKER", "RESULTS_NAME", "UNFINISHED", "RunResults", "prepare_output_dir", "make_output_dir", "run_state",
           "read_json", "process_alive",
           "write_json", "library_versions", "hub_token", "can_push", "push_final_model"]

RUN_MARKER = "run.json"
UNFINISHED = ("interrupted", "failed", "diverged")  # statuses a rerun replaces without --overwrite


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (a temporary file renamed over ``path``)."""
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_alive(record: dict[str, Any]) -> Optional[bool]:
    """Whether the process that wrote ``record`` (``pid`` on ``host``) still runs; None when this host cannot tell."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    if pid == os.getpid():
        return False  # this very process: an earlier run of main() in it has ended
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def run_state(out: Path) -> Optional[str]:
    """``None`` (no run here), ``"alive"``, ``"completed"``, ``"interrupted"``, ``"failed"``, ``"killed"`` (its
    process ended without a final status: SIGKILL, power loss) or ``"unknown"`` (no status, another host)."""
    if not (out / RESULTS_NAME).is_file() and not (out / RUN_MARKER).is_file():
        return None
    marker, results = read_json(out / RUN_MARKER) or {}, read_json(out / RESULTS_NAME)
    status = (results or {}).get("status")
    owner = results if results and "pid" in results else marker
    if status in ("completed",) + UNFINISHED:
        return status
    if status == "running" or (results is None and "pid" in marker):  # started, never finished
        alive = process_alive(owner)
        return "alive" if alive else ("killed" if alive is False else "unknown")
    return "unknown"


def prepare_output_dir(path: str, overwrite: bool, resume: bool = False) -> Path:
    """The output directory, empty and ready (or kept as it is for ``resume``); a :class:`UsageError` otherwise."""
    out = Path(path).expanduser()
    state = run_state(out) if out.is_dir() else None
    if state == "alive":
        owner = read_json(out / RESULTS_NAME) or read_json(out / RUN_MARKER) or {}
        raise UsageError(f"output dir {path!r} is in use by a running isogauss-finetune (pid {owner.get('pid')}); "
                         f"wait for it or choose another --output-dir")
    if resume:
        if overwrite:
            raise UsageError("--resume-from-checkpoint and --overwrite exclude each other")
        if not (out / RUN_MARKER).is_file():
            raise UsageError(f"--resume-from-checkpoint: {path!r} holds no isogauss-finetune run to resume")
        return out
    if out.exists() and not out.is_dir():
        raise UsageError(f"output dir {path!r} is a file")
    if out.is_dir() and any(out.iterdir()):
        if state is None:
            raise UsageError(f"output dir {path!r} is not empty and holds no isogauss-finetune run; choose another "
                             f"--output-dir")
        if state in UNFINISHED + ("killed",):
            print(f"replacing the unfinished run in {path} (status: {state})", flush=True)
        elif not overwrite:
            raise UsageError(f"output dir {path!r} holds another run; pass --overwrite to replace it or choose another "
                             f"--output-dir")
        shutil.rmtree(out)
    make_output_dir(out, path)
    return out


def make_output_dir(out: Path, path: str, flag: str = "--output-dir") -> None:
    """Create ``out`` (and its parents) and check that files can be written in it; one-line error otherwise."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:  # under a file (NotADirectoryError), read-only (EROFS), no permission, disk full, ...
        raise UsageError(f"{flag} {path!r} cannot be written: {e.strerror or type(e).__name__}"
                         f"{f' ({e.filename})' if e.filename and str(e.filename) != path else ''}; choose a "
                         f"writable directory") from None


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("isogauss-hf", "torch", "transformers", "datasets", "accelerate", "safetensors", "rouge-score",
                "sacrebleu"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class RunResults:
    """``results.json`` of one call: written when the run starts, after every variant, and at the end."""

    def __init__(self, out: Path, recipe: Any, kind: str) -> None:
        self.out = out
        self.path = out / RESULTS_NAME
        self.wall_start = time.time()
        self.payload: dict[str, Any] = {
            "status": "running",
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "recipe": recipe.to_dict(),
            "kind": kind,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "versions": library_versions(),
            "runs": [],
        }

    @property
    def runs(self) -> list[dict[str, Any]]:
        return self.payload["runs"]

    def begin(self, plan: dict[str, Any]) -> None:
        """Write ``run.json`` (the plan, pid and host) and a first ``results.json`` (status ``running``)."""
        write_json(self.out / RUN_MARKER, {"recipe": self.payload["recipe"], "started_at": self.payload["started_at"],
                                           "pid": self.payload["pid"], "host": self.payload["host"], **plan})
        self.flush("running")

    def flush(self, status: str, error: Optional[str] = None) -> None:
        self.payload["status"] = status
        self.payload["wall_time_s"] = round(time.time() - self.wall_start, 2)
        if error:
            self.payload["error"] = error
        write_json(self.path, self.payload)


# ------------------------------------------------------------------------------------------- hub push
def hub_token() -> Optional[str]:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # pragma: no cover - very old huggingface_hub
        return None


def can_push(model_or_class: Any) -> bool:
    """Whether the class itself defines ``push_to_hub`` (IsoGaussModel would otherwise forward the lookup
    to the wrapped transformers model and push dense weights)."""
    cls = model_or_class if isinstance(model_or_class, type) else type(model_or_class)
    return hasattr(cls, "push_to_hub")


def push_final_model(model: Any, save_dir: Path, tokenizer: Any, repo: str, results_path: Path) -> None:
    """Upload the final model: a compressed checkpoint + tokenizer + model card, or a dense model + tokenizer."""
    from ..model import IsoGaussModel

    if not can_push(model):
        raise UsageError("--push-to-hub: pushing Gaussian models is not available yet in this isogauss-hf version")
    if isinstance(model, IsoGaussModel):  # compressed checkpoint + tokenizer + model card from results.json
        model.push_to_hub(repo, token=hub_token(), results=str(results_path), checkpoint_dir=str(save_dir))
    else:
        model.push_to_hub(repo, token=hub_token())
        if tokenizer is not None:
            tokenizer.push_to_hub(repo, token=hub_token())
    print(f"pushed the final model to https://huggingface.co/{repo}")
