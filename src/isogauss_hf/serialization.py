"""File-level I/O of checkpoints: safetensors only (never pickle), checked keys and shapes, atomic directories.

:mod:`isogauss_hf.checkpoint` decides *what* a compressed checkpoint holds; this module writes and reads
the tensors: tied weights kept once, a SHA-256 of every tensor recorded in the file's metadata and verified at
load (:data:`CHECKSUM_KEY`), missing / unexpected / wrong-shaped tensors named in one error,
non-finite or negative statistics refused naming the tensor (:func:`check_statistics`, used for compressed
checkpoints and PEFT adapters alike), Trainer checkpoints (keys prefixed ``base_model.``) accepted, and
directories replaced atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from typing import Iterable, Optional

import torch
from safetensors import safe_open
from safetensors.torch import _find_shared_tensors, save_file
from torch import nn

from .errors import CheckpointError

__all__ = [
    "save_state_dict",
    "load_state_dict_checked",
    "atomic_directory",
    "resolve_checkpoint_dir",
    "install_tied_state_dict_hooks",
    "describe_mismatch",
    "check_statistics",
    "CHECKSUM_KEY",
    "tensor_sha256",
    "verify_checksums",
    "check_save_dir",
    "HUB_KWARGS",
    "TRAINER_KEY_PREFIX",
]

#: Prefix of every key in a Trainer checkpoint of an IsoGaussModel: the Trainer saves
#: ``IsoGaussModel.state_dict()`` (the wrapped model is its ``base_model`` attribute), while
#: ``IsoGaussModel.save_pretrained`` writes the wrapped model's own keys.
TRAINER_KEY_PREFIX = "base_model."


def _shared_aliases(state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
    """For each name of a tensor that shares storage with another, the one name kept (sorted first)."""
    alias: dict[str, str] = {}
    for group in _find_shared_tensors(state_dict):
        if len(group) > 1:
            keep = sorted(group)[0]
            alias.update({n: keep for n in group if n != keep})
    return alias


def install_tied_state_dict_hooks(module: nn.Module) -> None:
    """Make ``module.state_dict()`` list tied (storage-sharing) tensors once, and loading accept that.

    ``Trainer`` saves a model that is not a ``PreTrainedModel`` with ``safetensors.save_file(model.state_dict())``,
    which refuses tensors sharing memory (GPT-2's ``lm_head.weight`` is ``wte.weight``). After this call the
    state dict keeps one name per tied group (the first in sorted order, as :func:`save_state_dict`), and
    ``load_state_dict`` fills the other names from it, so ``strict=True`` loads of such a dict still work.
    Idempotent.
    """
    if getattr(module, "_isogauss_tied_hooks", False):
        return

    def drop_aliases(mod, state_dict, prefix, local_metadata):
        for name in _shared_aliases({k: v for k, v in state_dict.items() if k.startswith(prefix)}):
            state_dict.pop(name, None)
        return state_dict

    def fill_aliases(mod, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        params = {prefix + n: p for n, p in mod.named_parameters(remove_duplicate=False)}
        for group in _find_shared_tensors(params):
            present = [n for n in sorted(group) if n in state_dict]
            if len(group) > 1 and present:
                for n in group:
                    state_dict.setdefault(n, state_dict[present[0]])

    module._register_state_dict_hook(drop_aliases)
    module._register_load_state_dict_pre_hook(fill_aliases, with_module=True)
    module._isogauss_tied_hooks = True


#: safetensors metadata key holding ``{tensor name: SHA-256 of its bytes}`` (JSON), written by
#: :func:`save_state_dict` and verified by :func:`load_state_dict_checked`.
CHECKSUM_KEY = "isogauss_sha256"


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's raw bytes as safetensors stores them (C order, its own dtype)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy()).hexdigest()


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str, metadata: Optional[dict[str, str]] = None) -> None:
    """Save tensors to safetensors, keeping one name per group of tensors that share storage (tied weights).

    The metadata records the SHA-256 of every tensor under :data:`CHECKSUM_KEY`, so a bit flipped after saving
    is refused at load, naming the tensor (a flipped statistic can be a finite 4.6e35 no range check notices).
    """
    drop: set[str] = set()
    for group in _find_shared_tensors(state_dict):
        if len(group) > 1:
            keep = sorted(group)[0]
            drop.update(n for n in group if n != keep)
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items() if k not in drop}
    digests = json.dumps({k: tensor_sha256(v) for k, v in sorted(tensors.items())}, separators=(",", ":"))
    save_file(tensors, path, metadata={"format": "pt", **(metadata or {}), CHECKSUM_KEY: digests})


def verify_checksums(state: dict[str, torch.Tensor], metadata: Optional[dict[str, str]], path: str) -> None:
    """Compare ``state`` (as read from ``path``) with the SHA-256 its metadata recorded at save; files saved without
    them (older releases, Trainer checkpoints) pass unchecked."""
    recorded = (metadata or {}).get(CHECKSUM_KEY)
    if recorded is None:
        return
    fix = ("restore the file; if you edited it on purpose, load with verify_checksums=False (save_pretrained then "
           "records the new values)")
    try:
        digests = json.loads(recorded)
        if not isinstance(digests, dict):
            raise ValueError(type(digests).__name__)
    except ValueError:
        raise CheckpointError(f"{path!r}: the recorded tensor checksums ({CHECKSUM_KEY}) are unreadable: the file's "
                              f"header is corrupted; {fix}") from None
    for name in sorted(state):
        expected = digests.get(name)
        if expected is None:
            raise CheckpointError(f"{path!r}: tensor {name!r} has no checksum recorded at save: it was added to the "
                                  f"file afterwards; {fix}")
        if tensor_sha256(state[name]) != expected:
            raise CheckpointError(f"{path!r}: tensor {name!r} does not match the SHA-256 recorded when it was saved "
                                  f"(the file was modified or corrupted since); {fix}")


def describe_mismatch(missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    """One line naming missing, unexpected and wrong-shaped tensors ('' when everything fits)."""
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    if wrong:
        problems.append(f"wrong shapes [{'; '.join(wrong)}]")
    return "; ".join(problems)


#: Last name part of the statistics tensors of a Gaussian layer (``IsoGaussLayer.STAT_NAMES``).
_STAT_NAMES = ("row_mean", "row_std", "col_mean", "col_std")


def check_statistics(named_tensors: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """Refuse non-finite statistics, and negative stds, naming the tensor and ``source`` (a file) in one line.

    ``named_tensors``: ``(state-dict key, tensor)`` pairs; keys whose last part is not a statistic are skipped.
    A NaN or infinite statistic would make every weight draw, and so every output, NaN.
    """
    fix = "re-save from a healthy model or load an earlier checkpoint"
    for name, tensor in named_tensors:
        stat = name.rpartition(".")[2]
        if stat not in _STAT_NAMES:
            continue
        values = tensor.detach().float().reshape(-1)
        bad = ~torch.isfinite(values)
        if bool(bad.any()):
            first = int(bad.nonzero()[0])
            raise CheckpointError(f"{source}: statistics tensor {name!r} holds {int(bad.sum())} non-finite value(s) "
                                  f"(first at index {first}: {float(values[first])}); the checkpoint is corrupted or "
                                  f"was saved after a diverged step: {fix}")
        if stat.endswith("_std") and bool((values < 0).any()):
            raise CheckpointError(f"{source}: statistics tensor {name!r} holds {int((values < 0).sum())} negative std "
                                  f"value(s) (min {float(values.min()):g}); stds are never negative: {fix}")


def load_state_dict_checked(model: nn.Module, path: str, verify: bool = True) -> None:
    """Load a safetensors file into ``model``; missing, unexpected or wrong-shaped tensors are an error.

    Tensors that share storage in ``model`` (tied weights) may be present under any one of their names.
    A Trainer checkpoint (every key prefixed ``base_model.``, see :data:`TRAINER_KEY_PREFIX`) loads into
    the wrapped model too. Never unpickles: safetensors holds raw tensors only. ``verify``: check every tensor
    against the SHA-256 recorded at save (:func:`verify_checksums`); False loads a deliberately edited file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint weights {path!r} not found")
    expected = model.state_dict()
    try:
        with safe_open(path, framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            metadata = f.metadata()
    except Exception as e:  # safetensors raises its own error types for corrupted files
        raise CheckpointError(f"cannot read {path!r} as safetensors (corrupted or truncated?): {e}") from None
    strip = ""
    if shapes and all(k.startswith(TRAINER_KEY_PREFIX) for k in shapes) and not any(
        k.startswith(TRAINER_KEY_PREFIX) for k in expected
    ):
        strip = TRAINER_KEY_PREFIX
        shapes = {k[len(strip):]: v for k, v in shapes.items()}
    aliases: dict[str, set[str]] = {}
    for group in _find_shared_tensors(expected):
        for name in group:
            aliases[name] = group
    missing = [k for k in expected if k not in shapes and not (aliases.get(k, set()) & shapes.keys())]
    unexpected = sorted(k for k in shapes if k not in expected)
    wrong = [f"{k}: file {shapes[k]} vs model {tuple(expected[k].shape)}"
             for k in expected if k in shapes and shapes[k] != tuple(expected[k].shape)]
    problems = describe_mismatch(missing, unexpected, wrong)
    if problems:
        raise CheckpointError(f"checkpoint {path!r} does not fit the model: " + problems)
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except Exception as e:
        raise CheckpointError(f"cannot read {path!r} as safetensors (corrupted or truncated?): {e}") from None
    if verify:
        verify_checksums(state, metadata, path)
    if strip:
        state = {k[len(strip):]: v for k, v in state.items()}
    model.load_state_dict(state, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def check_save_dir(target: str) -> None:
    """Refuse, naming the path, a save directory that is a file or lies under one (before anything is written)."""
    path = os.path.abspath(target)
    if os.path.exists(path) and not os.path.isdir(path):
        raise CheckpointError(f"cannot save to {target!r}: it is a file; give a directory")
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise CheckpointError(f"cannot save to {target!r}: {parent!r} is a file")


@contextlib.contextmanager
def atomic_directory(target: str):
    """Yield a temporary directory next to ``target``; on success it replaces ``target`` by renames.

    Files already in ``target`` that the new save does not write (a tokenizer, training args) are kept:
    they are copied into the temporary directory before the swap. An exception while writing removes
    the temporary directory and leaves ``target`` untouched, so no half-written checkpoint is ever
    visible under ``target``. The swap is two renames (``target`` -> ``.NAME.old-*``, temporary ->
    ``target``); only a hard kill between them leaves ``target`` missing, with the complete previous
    checkpoint in the ``.old-`` directory next to it.
    """
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    check_save_dir(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; a saved model directory should not be
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
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)  # put the previous checkpoint back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: Hub download options accepted by :func:`resolve_checkpoint_dir` (and so by ``from_pretrained``).
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token")


def resolve_checkpoint_dir(name_or_path: str, revision: Optional[str] = None, **hub_kwargs) -> str:
    """A local checkpoint directory, or a Hub repo id downloaded to the cache (config and weights only).

    ``hub_kwargs``: ``cache_dir``, ``force_download``, ``local_files_only``, ``token`` (as ``snapshot_download``).
    """
    unknown = sorted(set(hub_kwargs) - set(HUB_KWARGS))
    if unknown:
        raise TypeError(f"unsupported Hub option(s) {unknown}; supported: {list(HUB_KWARGS)}")
    if os.path.isdir(name_or_path):
        return name_or_path
    if os.path.exists(name_or_path):
        raise CheckpointError(f"{name_or_path!r} is a file; give the checkpoint directory")
    if os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1 \
            or name_or_path.endswith("/") or os.sep in name_or_path.replace("/", ""):
        raise FileNotFoundError(f"checkpoint directory {name_or_path!r} does not exist (and it is not a Hub repo id "
                                f"owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            name_or_path,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.md"],
            **{k: v for k, v in hub_kwargs.items() if v is not None},
        )
    except Exception as e:
        raise OSError(
            f"{name_or_path!r} is not a local directory and could not be fetched from the Hub "
            f"({type(e).__name__}: {e})"
        ) from None
