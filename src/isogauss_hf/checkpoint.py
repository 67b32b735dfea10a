"""What a compressed checkpoint holds, how it is written, and how a model is rebuilt from it.

A checkpoint directory (``IsoGaussModel.save_pretrained``) holds

* ``config.json`` — the base transformers config (and ``generation_config.json`` for generative models);
* ``isogauss_config.json`` — the :class:`~isogauss_hf.IsoGaussConfig` fields, ``format_version`` and the
  metadata written by :func:`checkpoint_metadata`: the base model class, a fingerprint of its config,
  the records of the replaced modules and the library version;
* ``model.safetensors`` — the non-replaced weights and, per Gaussian layer, its statistics, noise seed,
  draw counter and bias (never dense weights of replaced matrices).

:func:`write_checkpoint` / :func:`read_checkpoint` do the work for ``save_pretrained`` / ``from_pretrained``;
:func:`complete_trainer_checkpoint` adds the two config files to a Trainer checkpoint (the callback's
``on_save``) so it loads the same way. File-level I/O is in :mod:`isogauss_hf.serialization`.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Optional

import torch
from torch import nn

from ._version import __version__
from .config import CONFIG_NAME, FORMAT_VERSION, IsoGaussConfig
from .convert import build_empty
from .serialization import atomic_directory, load_state_dict_checked, resolve_checkpoint_dir, save_state_dict

__all__ = [
    "WEIGHTS_NAME",
    "checkpoint_metadata",
    "write_checkpoint",
    "read_checkpoint",
    "complete_trainer_checkpoint",
    "config_fingerprint",
]

WEIGHTS_NAME = "model.safetensors"
# Base-config attributes compared between a checkpoint and the model it is loaded into.
_FINGERPRINT_KEYS = (
    "model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
    "vocab_size", "n_embd", "n_layer", "n_inner", "n_head", "image_size", "patch_size", "num_channels",
)
_ALLOWED_CLASS_MODULES = ("transformers", "isogauss_hf")
#: Fields that fix which modules are Gaussian (and their draws): a load cannot override them.
FIXED_AT_LOAD = ("layers", "target_modules", "layers_pattern", "standardize", "seed")


def config_fingerprint(config: Any) -> dict[str, Any]:
    """The base-config values a checkpoint must agree with (sizes, model type, number of labels)."""
    fp = {k: getattr(config, k) for k in _FINGERPRINT_KEYS if getattr(config, k, None) is not None}
    id2label = getattr(config, "id2label", None)
    if id2label:
        fp["num_labels"] = len(id2label)
    return fp


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    if module_name.split(".")[0] not in _ALLOWED_CLASS_MODULES:
        raise ValueError(f"refusing to import base model class {path!r}: only classes from "
                         f"{_ALLOWED_CLASS_MODULES} are loaded")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def checkpoint_metadata(base_model: nn.Module, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The metadata stored next to the config fields in ``isogauss_config.json``."""
    return {
        "base_model_class": _class_path(type(base_model)),
        "base_config_fingerprint": config_fingerprint(base_model.config),
        "replaced_modules": records,
        "isogauss_hf_version": __version__,
        "base_model_name_or_path": getattr(base_model, "name_or_path", None) or None,
    }


def _write_configs(directory: str, base_model: nn.Module, config: IsoGaussConfig,
                   records: list[dict[str, Any]]) -> None:
    base_model.config.save_pretrained(directory)
    generation_config = getattr(base_model, "generation_config", None)
    if generation_config is not None and getattr(base_model, "can_generate", lambda: False)():
        generation_config.save_pretrained(directory)
    config.save_pretrained(directory, extra=checkpoint_metadata(base_model, records))


def write_checkpoint(directory: str, base_model: nn.Module, config: IsoGaussConfig, records: list[dict[str, Any]],
                     state_dict: Optional[dict[str, torch.Tensor]] = None) -> None:
    """Write the compressed checkpoint of ``base_model`` (its Gaussian modules in place) atomically."""
    with atomic_directory(directory) as tmp:
        _write_configs(tmp, base_model, config, records)
        sd = state_dict if state_dict is not None else base_model.state_dict()
        sd = {k[len("base_model."):] if k.startswith("base_model.") else k: v for k, v in sd.items()}
        save_state_dict(sd, os.path.join(tmp, WEIGHTS_NAME), metadata={"isogauss_format_version": str(FORMAT_VERSION)})


def complete_trainer_checkpoint(directory: str, base_model: nn.Module, config: IsoGaussConfig,
                                records: list[dict[str, Any]]) -> None:
    """Add ``config.json`` and ``isogauss_config.json`` to a Trainer checkpoint directory (weights are there)."""
    _write_configs(directory, base_model, config, records)


def read_checkpoint(name_or_path: str, revision: Optional[str] = None,
                    overrides: Optional[dict[str, Any]] = None) -> tuple[nn.Module, IsoGaussConfig, list[dict[str, Any]]]:
    """Rebuild ``(base model with its Gaussian modules, config, records)`` from a checkpoint (dir or Hub id).

    Only the base config, the non-replaced weights and the statistics are read: the base model is built
    from its config, never from dense pretrained weights. ``overrides`` replace config fields for this
    load (e.g. ``noise="seeded"``, ``num_samples=10``), except the fields in :data:`FIXED_AT_LOAD`.
    """
    from transformers import AutoConfig
    from transformers.initialization import no_init_weights

    directory = resolve_checkpoint_dir(str(name_or_path), revision=revision)
    config, meta = IsoGaussConfig.load_with_metadata(directory)
    if overrides:
        fixed = sorted(set(overrides) & set(FIXED_AT_LOAD))
        if fixed:
            raise ValueError(f"cannot override {fixed} when loading: the checkpoint's Gaussian modules are fixed; "
                             f"overridable fields: noise, num_samples, rule, distribution_lr, std_floor")
        config = IsoGaussConfig.from_dict({**config.to_dict(), **overrides})
    base_config = AutoConfig.from_pretrained(directory)
    expected = meta.get("base_config_fingerprint") or {}
    found = config_fingerprint(base_config)
    diff = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs config.json {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"config.json in {directory!r} does not match the base model this checkpoint was made "
                         f"for ({detail})")
    if "base_model_class" not in meta or "replaced_modules" not in meta:
        raise ValueError(f"{CONFIG_NAME} in {directory!r} lacks base_model_class/replaced_modules metadata")
    base_cls = _import_class(meta["base_model_class"])
    with no_init_weights():
        base = base_cls(base_config)
    if hasattr(base, "tie_weights"):
        base.tie_weights()  # under no_init_weights transformers leaves tied weights untied
    records = [dict(r) for r in meta["replaced_modules"]]
    build_empty(base, config, records)
    load_state_dict_checked(base, os.path.join(directory, WEIGHTS_NAME))
    return base, config, records
