"""Reading and writing compressed checkpoints: safetensors only, checked keys and shapes, atomic writes."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import _find_shared_tensors, save_file
from torch import nn

__all__ = ["save_state_dict", "load_state_dict_checked", "atomic_directory", "resolve_checkpoint_dir"]


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str, metadata: Optional[dict[str, str]] = None) -> None:
    """Save tensors to safetensors, keeping one name per group of tensors that share storage (tied weights)."""
    drop: set[str] = set()
    for group in _find_shared_tensors(state_dict):
        if len(group) > 1:
            keep = sorted(group)[0]
            drop.update(n for n in group if n != keep)
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items() if k not in drop}
    save_file(tensors, path, metadata={"format": "pt", **(metadata or {})})


def load_state_dict_checked(model: nn.Module, path: str) -> None:
    """Load a safetensors file into ``model``; missing, unexpected or wrong-shaped tensors are an error.

    Tensors that share storage in ``model`` (tied weights) may be present under any one of their names.
    Never unpickles: safetensors holds raw tensors only.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint weights {path!r} not found")
    expected = model.state_dict()
    try:
        with safe_open(path, framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupted files
        raise ValueError(f"cannot read {path!r} as safetensors (corrupted or truncated?): {e}") from None
    aliases: dict[str, set[str]] = {}
    for group in _find_shared_tensors(expected):
        for name in group:
            aliases[name] = group
    missing = [k for k in expected if k not in shapes and not (aliases.get(k, set()) & shapes.keys())]
    unexpected = sorted(k for k in shapes if k not in expected)
    wrong = [f"{k}: file {shapes[k]} vs model {tuple(expected[k].shape)}"
             for k in expected if k in shapes and shapes[k] != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    if wrong:
        problems.append(f"wrong shapes [{'; '.join(wrong)}]")
    if problems:
        raise ValueError(f"checkpoint {path!r} does not fit the model: " + "; ".join(problems))
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except Exception as e:
        raise ValueError(f"cannot read {path!r} as safetensors (corrupted or truncated?): {e}") from None
    model.load_state_dict(state, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()


@contextlib.contextmanager
def atomic_directory(target: str):
    """Yield a temporary directory next to ``target``; on success it replaces ``target`` atomically.

    Files already in ``target`` that the new save does not write (a tokenizer, training args) are kept:
    they are copied into the temporary directory before the swap. A crash leaves ``target`` untouched.
    """
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    try:
        yield tmp
        if os.path.isdir(target):
            written = set(os.listdir(tmp))
            for name in os.listdir(target):
                if name not in written:
                    src = os.path.join(target, name)
                    (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(tmp, name))
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=parent)
            os.rmdir(old)
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_checkpoint_dir(name_or_path: str, revision: Optional[str] = None) -> str:
    """A local checkpoint directory, or a Hub repo id downloaded to the cache (config and weights only)."""
    if os.path.isdir(name_or_path):
        return name_or_path
    if os.path.exists(name_or_path):
        raise ValueError(f"{name_or_path!r} is a file; give the checkpoint directory")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            name_or_path,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.md"],
        )
    except Exception as e:
        raise OSError(
            f"{name_or_path!r} is not a local directory and could not be fetched from the Hub "
            f"({type(e).__name__}: {e})"
        ) from None
