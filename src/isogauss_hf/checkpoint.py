"""What a compressed checkpoint holds, how it is written, and how a model is rebuilt from it (with its checks).

A checkpoint directory (``IsoGaussModel.save_pretrained``) holds

* ``config.json`` — the base transformers config, except that ``model_type`` is :data:`ISOGAUSS_MODEL_TYPE`
  (the base one is kept under ``isogauss_base_model_type``, the base ``architectures`` under
  ``isogauss_base_architectures``). transformers only knows that model type once ``isogauss_hf`` is imported
  (:mod:`isogauss_hf.auto` registers it), so ``AutoModelFor*`` / ``pipeline`` without the import refuse the
  checkpoint with a message naming the package, instead of loading it with random dense weights where the
  Gaussian matrices were. Checkpoints of format 1 (plain base ``config.json``) are still read;
* ``generation_config.json`` for generative models;
* ``isogauss_config.json`` — the :class:`~isogauss_hf.IsoGaussConfig` fields, ``format_version`` and the
  metadata written by :func:`checkpoint_metadata` (:data:`~isogauss_hf.config.CHECKPOINT_METADATA_KEYS`);
* ``model.safetensors`` — the non-replaced weights and, per Gaussian layer, its statistics, noise seed,
  draw counter and bias (never dense weights of replaced matrices).

:func:`write_checkpoint` / :func:`read_checkpoint` do the work for ``save_pretrained`` / ``from_pretrained``;
:func:`complete_trainer_checkpoint` adds the config files to a Trainer checkpoint (the callback's ``on_save``).
Loading refuses, with one line naming the file or tensor: unknown keys in ``isogauss_config.json``, ``layers`` /
``target_modules`` that disagree with the stored module records, a missing ``config.json``, and non-finite or
negative statistics. File-level I/O is in :mod:`isogauss_hf.serialization`.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any, Optional

import torch
from torch import nn

from ._version import __version__
from .config import CANONICAL_TARGETS, CHECKPOINT_METADATA_KEYS, CONFIG_NAME, FORMAT_VERSION, IsoGaussConfig
from .convert import build_empty, iter_isogauss_layers
from .errors import CheckpointError
from .layers import IsoGaussLayer
from .serialization import (atomic_directory, check_statistics, load_state_dict_checked, resolve_checkpoint_dir,
                            save_state_dict)

__all__ = [
    "WEIGHTS_NAME",
    "BASE_CONFIG_NAME",
    "ISOGAUSS_MODEL_TYPE",
    "checkpoint_metadata",
    "checkpoint_config_dict",
    "base_config_dict",
    "read_base_config",
    "write_checkpoint",
    "read_checkpoint",
    "complete_trainer_checkpoint",
    "config_fingerprint",
]

WEIGHTS_NAME = "model.safetensors"
BASE_CONFIG_NAME = "config.json"
#: ``model_type`` written to a checkpoint's ``config.json``. transformers prints it in its "model type ... not
#: recognized" error when isogauss_hf is not imported, so it names what to install and import.
ISOGAUSS_MODEL_TYPE = "isogauss-hf (pip install isogauss-hf; import isogauss_hf)"
BASE_MODEL_TYPE_KEY = "isogauss_base_model_type"
BASE_ARCHITECTURES_KEY = "isogauss_base_architectures"
# Base-config attributes compared between a checkpoint and the model it is loaded into.
_FINGERPRINT_KEYS = (
    "model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
    "vocab_size", "n_embd", "n_layer", "n_inner", "n_head", "image_size", "patch_size", "num_channels",
    "hidden_sizes", "depths", "embedding_size", "layer_type", "depth_multiplier", "isogauss_head_hidden",
)
_ALLOWED_CLASS_MODULES = ("transformers", "isogauss_hf")
#: Fields that fix which modules are Gaussian (and their draws): a load cannot override them.
FIXED_AT_LOAD = ("layers", "target_modules", "layers_pattern", "standardize", "seed", "noise_generator")


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
    meta = {
        "base_model_class": _class_path(type(base_model)),
        "base_config_fingerprint": config_fingerprint(base_model.config),
        "replaced_modules": records,
        "isogauss_hf_version": __version__,
        "base_model_name_or_path": getattr(base_model, "name_or_path", None) or None,
    }
    assert set(meta) == set(CHECKPOINT_METADATA_KEYS)
    return meta


# ------------------------------------------------------------------ config.json
def checkpoint_config_dict(base_model: nn.Module) -> dict[str, Any]:
    """The content of a checkpoint's ``config.json``: the base config under the isogauss model type."""
    data = json.loads(base_model.config.to_json_string(use_diff=True))
    data[BASE_MODEL_TYPE_KEY] = data.get("model_type") or base_model.config.model_type
    data[BASE_ARCHITECTURES_KEY] = data.get("architectures")
    data["model_type"] = ISOGAUSS_MODEL_TYPE
    # not a transformers class name: pipeline() must not fall back to the dense class when loading fails
    data["architectures"] = [f"IsoGauss{type(base_model).__name__}"]
    return data


def base_config_dict(data: dict[str, Any]) -> dict[str, Any]:
    """The base transformers config dict of a ``config.json`` (either format: isogauss model type or plain)."""
    data = dict(data)
    if data.get("model_type") == ISOGAUSS_MODEL_TYPE:
        data["model_type"] = data.pop(BASE_MODEL_TYPE_KEY, None)
        data["architectures"] = data.pop(BASE_ARCHITECTURES_KEY, None)
    return data


def read_base_config(directory: str):
    """The base model's transformers config, read from ``config.json`` (never runs code from the checkpoint)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    path = os.path.join(directory, BASE_CONFIG_NAME)
    if not os.path.isfile(path):
        raise CheckpointError(f"{directory!r} has no {BASE_CONFIG_NAME} (the base model's transformers config, written "
                              f"next to {CONFIG_NAME} by save_pretrained); copy it back from where the checkpoint "
                              "was saved")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except ValueError as e:
        raise CheckpointError(f"{path!r} is not valid JSON (corrupted or truncated?): {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path!r} must hold a JSON object, got {type(data).__name__}")
    data = base_config_dict(data)
    model_type = data.get("model_type")
    try:
        config_cls = CONFIG_MAPPING[model_type]
    except KeyError:
        raise CheckpointError(f"{path!r}: base model_type {model_type!r} is not known to this transformers; "
                              "upgrade transformers or restore the checkpoint's config.json") from None
    return config_cls.from_dict(data)


def _write_configs(directory: str, base_model: nn.Module, config: IsoGaussConfig,
                   records: list[dict[str, Any]]) -> None:
    with open(os.path.join(directory, BASE_CONFIG_NAME), "w", encoding="utf-8") as f:
        json.dump(checkpoint_config_dict(base_model), f, indent=2, sort_keys=True)
        f.write("\n")
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


# ------------------------------------------------------------------ checks
def _check_metadata(meta: dict[str, Any], source: str) -> None:
    unknown = sorted(set(meta) - set(CHECKPOINT_METADATA_KEYS))
    if unknown:
        raise CheckpointError(
            f"{source} has unknown key(s) {unknown}: not IsoGaussConfig fields ({IsoGaussConfig.isogauss_fields()}) "
            f"nor checkpoint metadata ({list(CHECKPOINT_METADATA_KEYS)}); remove them, or upgrade isogauss-hf if a "
            "newer version wrote them"
        )
    missing = [k for k in ("base_model_class", "replaced_modules") if k not in meta]
    if missing:
        raise CheckpointError(f"{source} lacks the checkpoint metadata {missing}; it was not written by "
                              "IsoGaussModel.save_pretrained")
    records = meta["replaced_modules"]
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) and "name" in r for r in records):
        raise CheckpointError(f"{source}: replaced_modules must be a non-empty list of module records "
                              "(each with a 'name'); restore the file written by save_pretrained")


def _check_selection(config: IsoGaussConfig, records: list[dict[str, Any]], base: nn.Module, source: str) -> None:
    """``layers`` / ``target_modules`` must describe the modules the records (and so the tensors) hold."""
    from .mapping import ARCHITECTURES, count_blocks

    blocks = {r.get("block") for r in records}
    fix = "restore the value the checkpoint was saved with (the stored statistics belong to the recorded modules)"
    spec = ARCHITECTURES.get(getattr(getattr(base, "config", None), "model_type", None) or "")
    names = config.target_modules
    mapped = spec is not None and (names is None or all(t in CANONICAL_TARGETS for t in names))  # as resolve_targets
    expected_blocks = set(config.layers) if config.layers is not None else None
    if expected_blocks is None and mapped:
        try:
            n = count_blocks(base)
        except ValueError:  # no block list: the tensor check after building reports what does not fit
            n = None
        expected_blocks = set(range(1, n + 1)) if n is not None else None
    if expected_blocks is not None and blocks != expected_blocks:
        shown = sorted(blocks, key=lambda b: (b is None, b or 0))
        raise CheckpointError(f"{source}: layers {config.layers if config.layers is not None else 'null (every block)'}"
                              f" disagree with replaced_modules, which hold block(s) {shown}; {fix}")
    if mapped:
        wanted = set(names) if names is not None else set(spec.targets)
        held = {t for r in records for t in r.get("targets", ())}
        if held != wanted:
            raise CheckpointError(f"{source}: target_modules {names if names is not None else 'null (all)'} disagree "
                                  f"with replaced_modules, which hold {sorted(held)}; {fix}")


def _statistics(base: nn.Module):
    for name, layer in iter_isogauss_layers(base):
        for stat in IsoGaussLayer.STAT_NAMES:
            yield f"{name}.{stat}", getattr(layer, stat)


# ------------------------------------------------------------------ loading
def read_checkpoint(name_or_path: str, revision: Optional[str] = None, overrides: Optional[dict[str, Any]] = None,
                    hub_kwargs: Optional[dict[str, Any]] = None, verify_checksums: bool = True
                    ) -> tuple[nn.Module, IsoGaussConfig, list[dict[str, Any]]]:
    """Rebuild ``(base model with its Gaussian modules, config, records)`` from a checkpoint (dir or Hub id).

    Only the base config, the non-replaced weights and the statistics are read: the base model is built
    from its config, never from dense pretrained weights. ``overrides`` replace config fields for this
    load (e.g. ``noise="seeded"``, ``num_samples=10``), except the fields in :data:`FIXED_AT_LOAD`.
    ``hub_kwargs`` (``cache_dir``, ``local_files_only``, ``token``, ``force_download``) go to the Hub download.
    ``verify_checksums=False`` loads weights edited on purpose after saving (their recorded SHA-256 no longer match).
    """
    from transformers.initialization import no_init_weights

    directory = resolve_checkpoint_dir(str(name_or_path), revision=revision, **(hub_kwargs or {}))
    config, meta = IsoGaussConfig.load_with_metadata(directory)
    source = f"{CONFIG_NAME} in {directory!r}"
    _check_metadata(meta, source)
    if overrides:
        fixed = sorted(set(overrides) & set(FIXED_AT_LOAD))
        if fixed:
            raise ValueError(f"cannot override {fixed} when loading: the checkpoint's Gaussian modules are fixed; "
                             f"overridable fields: noise, num_samples, rule, distribution_lr, std_floor")
        config = IsoGaussConfig.from_dict({**config.to_dict(), **overrides})
    base_config = read_base_config(directory)
    expected = meta.get("base_config_fingerprint") or {}
    found = config_fingerprint(base_config)
    diff = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs config.json {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"config.json in {directory!r} does not match the base model this checkpoint was made "
                         f"for ({detail})")
    base_cls = _import_class(meta["base_model_class"])
    base_config._name_or_path = meta.get("base_model_name_or_path") or ""  # kept when the model is saved again
    with no_init_weights():
        base = base_cls(base_config)
    if hasattr(base, "tie_weights"):
        base.tie_weights()  # under no_init_weights transformers leaves tied weights untied
    records = [dict(r) for r in meta["replaced_modules"]]
    _check_selection(config, records, base, source)
    build_empty(base, config, records)
    weights = os.path.join(directory, WEIGHTS_NAME)
    load_state_dict_checked(base, weights, verify=verify_checksums)
    check_statistics(_statistics(base), weights)
    _load_generation_config(base, directory)
    return base, config, records


def _load_generation_config(base: nn.Module, directory: str) -> None:
    if os.path.isfile(os.path.join(directory, "generation_config.json")) and hasattr(base, "generation_config"):
        from transformers import GenerationConfig

        base.generation_config = GenerationConfig.from_pretrained(directory)
