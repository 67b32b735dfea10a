"""Native transformers loading: ``AutoModelFor*.from_pretrained(dir_or_repo)`` and ``pipeline(task, model=...)``
build an :class:`~isogauss_hf.IsoGaussModel` from a compressed checkpoint once ``isogauss_hf`` is imported.

Design: a model type of its own, registered with ``AutoConfig.register`` / ``AutoModel*.register`` — not a
quantizer (``register_quantization_config`` / ``register_quantizer``). Why (checked against transformers 5.24):

* refusal without the import. The checkpoint's ``config.json`` says ``model_type`` =
  :data:`~isogauss_hf.checkpoint.ISOGAUSS_MODEL_TYPE`; without the registration ``AutoConfig`` (and so every
  ``AutoModelFor*`` and ``pipeline``) raises ``ValueError: The checkpoint you are trying to load has model type
  `isogauss-hf (pip install isogauss-hf; import isogauss_hf)` but Transformers does not recognize this
  architecture``, i.e. it names what to install and import. An unknown ``quantization_config.quant_method``
  is no refusal: ``AutoHfQuantizer.supports_quant_method`` logs a warning, skips quantization and loads the
  dense model with the Gaussian matrices randomly initialised — the silent failure this module removes;
* the loaded object is the :class:`~isogauss_hf.IsoGaussModel` (averaging over ``num_samples`` draws, compressed
  ``save_pretrained``, ``parameter_report``), built by :func:`isogauss_hf.checkpoint.read_checkpoint` with all its
  checks, instead of a plain model whose weights transformers' own loader fills (a quantizer's job);
* ``AutoConfig`` / ``AutoModel*.register`` are public and stable; quantizer hooks change between releases.

Limits: loading the concrete class directly (``BertForSequenceClassification.from_pretrained(dir)``) is not
refused by transformers; it warns "You are using a model of type `isogauss-hf (pip install isogauss-hf; ...)`
to instantiate a model of type `bert`" and its load report lists the statistics as unexpected. Format-1
checkpoints (release 0.1.0, plain base ``config.json``) load with ``IsoGaussModel.from_pretrained`` only;
``IsoGaussModel.from_pretrained(old).save_pretrained(new)`` upgrades one.

Pipelines check the model's class name against ``MODEL_FOR_*_MAPPING_NAMES``: :func:`announce_wrapper` adds each
``IsoGauss<Base>`` wrapper class name to every table that lists ``<Base>`` (one entry under a key no model type
uses, so the Auto mappings, which look up by config class, are unchanged), so ``pipeline(task, model=...)``
accepts an ``IsoGaussModel`` without "The model ... is not supported" (and the Trainer treats the wrapper of a
causal LM as one).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto import auto_factory, modeling_auto

from .checkpoint import ISOGAUSS_MODEL_TYPE, base_config_dict, checkpoint_config_dict
from .config import IsoGaussConfig
from .errors import CheckpointError, UsageError
from .model import IsoGaussModel
from .serialization import HUB_KWARGS

__all__ = ["IsoGaussCheckpointConfig", "IsoGaussAutoLoader", "announce_wrapper", "register_with_transformers",
           "auto_model_classes"]

#: Keyword arguments the Auto classes and pipelines pass to a model class's ``from_pretrained``; no meaning here.
_PASSED_BY_TRANSFORMERS = ("_from_auto", "_from_pipeline", "trust_remote_code", "adapter_kwargs", "code_revision",
                           "use_safetensors", "low_cpu_mem_usage")
_OVERRIDABLE = ("noise", "num_samples", "rule", "distribution_lr", "std_floor")
_PIPELINE_KEY = "isogauss-hf wrapper"
_NOT_COMPARED = {"_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype"}


class IsoGaussCheckpointConfig(PretrainedConfig):
    """``config.json`` of a compressed checkpoint as ``AutoConfig`` reads it after ``import isogauss_hf``.

    It holds the base model's config values (``hidden_size``, ``id2label``, ...) under the isogauss model type;
    :meth:`base_config` returns the base model's own config object.
    """

    model_type = ISOGAUSS_MODEL_TYPE

    def base_config(self) -> PretrainedConfig:
        """The base model's transformers config (``BertConfig``, ...)."""
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        data = base_config_dict(self.to_dict())
        return CONFIG_MAPPING[data["model_type"]].from_dict(data)


def auto_model_classes() -> list[type]:
    """Every ``AutoModel*`` class of the installed transformers (backbones excepted)."""
    found = []
    for value in vars(modeling_auto).values():
        if (isinstance(value, type) and issubclass(value, auto_factory._BaseAutoModelClass)
                and not issubclass(value, auto_factory._BaseAutoBackboneClass)
                and getattr(value, "_model_mapping", None) is not None):
            found.append(value)
    return found


def _built_by(auto_class: type, config: PretrainedConfig) -> tuple[type, ...]:
    """The model class(es) ``auto_class`` builds for ``config`` (empty when it builds none)."""
    try:
        found = auto_class._model_mapping[type(config)]
    except (KeyError, ImportError, AttributeError, ValueError):
        return ()
    return tuple(found) if isinstance(found, (list, tuple)) else (found,)


def _check_task(auto_class: type, model: Any, where: str) -> None:
    base = model.get_base_model()
    if any(isinstance(base, cls) for cls in _built_by(auto_class, base.config)):
        return
    fits = [a.__name__ for a in auto_model_classes() if type(base) in _built_by(a, base.config)]
    hint = " or ".join([*fits[:2], "IsoGaussModel.from_pretrained"])
    raise CheckpointError(f"{where} holds a compressed {type(base).__name__}, which {auto_class.__name__} does not "
                          f"build; load it with {hint}")


def _check_config_unchanged(passed: IsoGaussCheckpointConfig, base_model: Any, name: str) -> None:
    """Config values given to ``from_pretrained`` (``num_labels=5``, ``output_attentions=True``, ...) land in
    ``passed``; they are not applied to a compressed checkpoint, so they are refused.

    ``passed`` is compared with the checkpoint's own config.json read the same way (``AutoConfig`` drops some saved
    values, such as the ``use_cache: false`` the Trainer writes), so only what the caller gave can differ."""
    saved = IsoGaussCheckpointConfig.from_dict(checkpoint_config_dict(base_model)).base_config().to_dict()
    given = passed.base_config().to_dict()
    changed = sorted(k for k in set(given) | set(saved) if k not in _NOT_COMPARED and given.get(k) != saved.get(k))
    if changed:
        raise UsageError(f"{name}.from_pretrained: config value(s) {changed} given differ from the checkpoint's "
                         "config.json; a compressed checkpoint loads as saved (set such values on model.config "
                         "after loading)")


class IsoGaussAutoLoader:
    """What the ``AutoModel*`` classes call for the isogauss model type: returns an ``IsoGaussModel``.

    ``from_pretrained`` accepts what :meth:`IsoGaussModel.from_pretrained` does (overrides of ``noise``,
    ``num_samples``, ``rule``, ``distribution_lr``, ``std_floor``; ``dtype``/``torch_dtype``, ``device_map``,
    ``revision`` and the Hub options) and refuses a checkpoint of another head than the Auto class builds.
    """

    config_class = IsoGaussCheckpointConfig
    auto_class: Optional[type] = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *model_args, **kwargs):
        name = cls.auto_class.__name__
        if model_args:
            raise TypeError(f"{name}.from_pretrained: positional model arguments are not supported for an isogauss-hf "
                            "compressed checkpoint")
        config = kwargs.pop("config", None)
        if config is not None and not isinstance(config, IsoGaussCheckpointConfig):
            raise TypeError(f"{name}.from_pretrained: config must be the checkpoint's own (leave it out), got "
                            f"{type(config).__name__}")
        for key in _PASSED_BY_TRANSFORMERS:
            kwargs.pop(key, None)
        if kwargs.pop("proxies", None):  # transformers >= 5.25 passes proxies=None on every call
            raise TypeError(f"{name}.from_pretrained: proxies is not supported by huggingface_hub's downloads; set "
                            "HTTPS_PROXY / HTTP_PROXY in the environment instead")
        if kwargs.pop("subfolder", None):
            raise TypeError(f"{name}.from_pretrained: subfolder is not supported; give the checkpoint directory itself")
        dtype = kwargs.pop("dtype", None)
        torch_dtype = kwargs.pop("torch_dtype", None)
        # config fields that a load cannot override (layers, ...) are refused by IsoGaussModel.from_pretrained
        fields = set(IsoGaussConfig.isogauss_fields())
        unknown = sorted(set(kwargs) - fields - {"revision", "device_map", "verify_checksums", *HUB_KWARGS})
        if unknown:
            raise TypeError(f"{name}.from_pretrained got unsupported keyword argument(s) {unknown} for an isogauss-hf "
                            f"compressed checkpoint; accepted: {list(_OVERRIDABLE)}, dtype, device_map, revision, "
                            f"verify_checksums, {list(HUB_KWARGS)}")
        model = IsoGaussModel.from_pretrained(pretrained_model_name_or_path, dtype=dtype or torch_dtype, **kwargs)
        _check_task(cls.auto_class, model, repr(str(pretrained_model_name_or_path)))
        if config is not None:
            _check_config_unchanged(config, model.get_base_model(), name)
        return model

    @classmethod
    def _from_config(cls, config, **kwargs):
        raise CheckpointError(f"{cls.auto_class.__name__}.from_config cannot build an isogauss-hf model from its "
                              "config alone (the statistics are in the checkpoint); use from_pretrained(directory)")


def announce_wrapper(wrapper: type, base_cls: type) -> None:
    """Make pipelines accept ``wrapper`` (an ``IsoGauss<Base>`` class) wherever they accept ``base_cls``."""
    base_name = base_cls.__name__
    for table_name, table in list(vars(modeling_auto).items()):
        if not (table_name.endswith("_MAPPING_NAMES") and isinstance(table, dict)):
            continue
        if any(v == base_name or (isinstance(v, (list, tuple)) and base_name in v) for v in table.values()):
            table.setdefault(f"{_PIPELINE_KEY}: {wrapper.__name__}", wrapper.__name__)


def register_with_transformers() -> None:
    """Register the isogauss model type with ``AutoConfig`` and every ``AutoModel*`` (idempotent; runs on import)."""
    if announce_wrapper not in IsoGaussModel.wrapper_hooks:
        IsoGaussModel.wrapper_hooks.append(announce_wrapper)
        for base_cls, wrapper in IsoGaussModel._wrapper_classes.items():  # wrappers made before the import
            announce_wrapper(wrapper, base_cls)
    AutoConfig.register(ISOGAUSS_MODEL_TYPE, IsoGaussCheckpointConfig, exist_ok=True)
    for auto_class in auto_model_classes():
        loader = type(f"IsoGauss{auto_class.__name__}Loader", (IsoGaussAutoLoader,),
                      {"auto_class": auto_class, "__module__": __name__})
        auto_class.register(IsoGaussCheckpointConfig, loader, exist_ok=True)


register_with_transformers()
