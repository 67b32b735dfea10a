"""Isotropic Gaussian layers as a PEFT method: ``peft.get_peft_model(model, IsoGaussConfig(...))``.

Importing :mod:`isogauss_hf` registers the method with PEFT. PEFT 0.21's ``register_peft_method`` only accepts
names of its own ``PeftType`` enum, so the method is entered into PEFT's mapping tables directly, keyed by the
str-valued enum member :data:`isogauss_hf.config.PEFT_TYPE` (``"ISOGAUSS"``). This relies on PEFT internals; the
tested range is pinned (``peft>=0.21,<0.22``) and ``tests/test_peft_integration.py`` round-trips an adapter so a
PEFT upgrade that breaks it fails CI.

Adapter semantics:

* the selected matrices become Gaussian layers (Eq. 2) exactly as with :func:`~isogauss_hf.get_isogauss_model`
  (same module names, hence the same per-layer noise seeds and the same draws);
* everything else of the base model is frozen; the Gaussian layers' biases and ``modules_to_save`` (the task head;
  ``task_type="SEQ_CLS"`` adds ``classifier``/``score``) are trained by the optimizer, the statistics by GDU/WDU
  through :class:`~isogauss_hf.IsoGaussCallback` (buffers), or by the optimizer under ``rule="backprop"``
  (parameters);
* the adapter file holds every Gaussian layer's statistics, noise seed, draw counter and bias plus the
  ``modules_to_save`` copies; loading checks them (missing, unexpected or wrong-shaped tensors, non-finite
  statistics and negative stds are an error);
* the dense weights of the replaced matrices are gone, so the adapter cannot be disabled, unloaded, or merged in
  place (``merge_adapter`` / ``unmerge_adapter`` are refused); ``merge_and_unload()`` returns the base model with
  one seeded draw per Gaussian layer (as ``export_dense``);
* ``print_trainable_parameters()`` / ``get_nb_trainable_parameters()`` count the statistics GDU/WDU learn (buffers)
  as trainable, as :class:`~isogauss_hf.IsoGaussModel` does. PEFT counts ``named_parameters()`` only and offers no
  tuner hook, so registration wraps ``PeftModel.get_nb_trainable_parameters`` once: the wrapper calls PEFT's own
  count and adds :func:`~isogauss_hf.model.statistics_counts` only when the model's tuner is an
  :class:`IsoGaussTuner` (nothing learned in ``inference_mode``); every other PEFT model gets PEFT's number.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Optional

import torch
from peft import PeftModel
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper, set_additional_trainable_modules
from torch import nn

from .config import PEFT_TYPE, IsoGaussConfig
from .convert import convert_in_place, iter_isogauss_layers, replace_module
from .layers import IsoGaussLayer, is_gaussian_module
from .sampling import SamplingMixin, forward_over_draws
from .model import statistics_counts
from .serialization import check_statistics, describe_mismatch

__all__ = ["IsoGaussTuner", "register_with_peft", "PEFT_PREFIX"]

PEFT_PREFIX = "isogauss_"


def _gaussian_prefixes(model: nn.Module) -> list[str]:
    """``name.`` of every outermost Gaussian module (fused modules count once, with their parts)."""
    prefixes: list[str] = []
    for name, module in model.named_modules():
        if is_gaussian_module(module) and not any(name.startswith(p) for p in prefixes):
            prefixes.append(name + ".")
    return prefixes


def _set_layer_trainable(layer: IsoGaussLayer, trainable: bool) -> None:
    """The optimizer trains a Gaussian layer's bias, and its statistics under ``rule="backprop"``."""
    for p in layer.parameters(recurse=False):  # bias; row/column statistics when they are parameters
        p.requires_grad = trainable


def _under(key: str, prefixes: list[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


class IsoGaussTuner(SamplingMixin, BaseTuner):
    """PEFT tuner that swaps the configured fully connected layers for Gaussian layers (one adapter per model)."""

    prefix: str = PEFT_PREFIX
    tuner_layer_cls = BaseTunerLayer  # Gaussian layers are not PEFT layers: PEFT's per-layer hooks skip them
    target_module_mapping: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ injection
    def inject_adapter(
        self,
        model: nn.Module,
        adapter_name: str,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        state_dict: Optional[dict[str, torch.Tensor]] = None,
    ) -> None:
        """Replace the modules ``IsoGaussConfig`` selects (same resolution as ``get_isogauss_model``)."""
        config = self.peft_config[adapter_name]
        if not isinstance(config, IsoGaussConfig):
            raise TypeError(f"IsoGaussTuner needs an IsoGaussConfig, got {type(config).__name__}")
        if any(is_gaussian_module(m) for m in model.modules()):
            raise ValueError(
                "this model already has Gaussian layers; an isogauss adapter replaces dense weights, so only one "
                "isogauss adapter per model is supported"
            )
        records = convert_in_place(model, config)
        self.replaced_modules = records
        self.targeted_module_names.extend(r["name"] for r in records)
        self._mark_only_adapters_as_trainable(model)
        set_additional_trainable_modules(
            model=model,
            peft_config=config,
            model_config=BaseTuner.get_model_config(self),
            adapter_name=adapter_name,
            activate_adapter=True,
        )

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        config = self.peft_config[self.active_adapter]
        for p in model.parameters():
            p.requires_grad = False
        if not config.inference_mode:
            for _, module in iter_isogauss_layers(model):
                _set_layer_trainable(module, True)

    def set_requires_grad(self, adapter_names, requires_grad: bool = True) -> None:
        super().set_requires_grad(adapter_names, requires_grad)
        for _, module in iter_isogauss_layers(self.model):
            _set_layer_trainable(module, requires_grad)

    def _create_and_replace(self, *args, **kwargs) -> None:  # pragma: no cover - inject_adapter does the work
        raise RuntimeError("IsoGaussTuner resolves and replaces its targets in inject_adapter")

    def _check_new_adapter_config(self, config) -> None:
        if len(self.peft_config) > 1:
            raise ValueError(
                "only one isogauss adapter per model is supported (it replaces the dense weights of its targets); "
                f"got adapters {sorted(self.peft_config)}"
            )

    # ------------------------------------------------------------------ state dict (save / load)
    @classmethod
    def _get_adapter_state_dict(cls, model, config, adapter_name, state_dict, unwanted_adapter_names):
        """Statistics, noise seeds, draw counters and biases of every Gaussian layer (buffers included)."""
        prefixes = _gaussian_prefixes(model)
        return {k: v for k, v in state_dict.items() if _under(k, prefixes)}

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        """Check the Gaussian tensors of an adapter file against the model: all present, none extra, shapes equal."""
        prefixes = _gaussian_prefixes(model)
        expected = {k: v for k, v in model.state_dict().items() if _under(k, prefixes)}
        requires_prefix = any(k.startswith("base_model.model.") for k in expected)

        def model_key(k: str) -> str:
            if requires_prefix and not k.startswith("base_model.model."):
                return "base_model.model." + k
            if not requires_prefix:
                return k.removeprefix("base_model.model.")
            return k

        found = {model_key(k): v for k, v in state_dict.items()}
        gaussian_found = {k: v for k, v in found.items() if _under(k, prefixes)}
        aux_prefixes = [n + "." for n, m in model.named_modules() if isinstance(m, AuxiliaryTrainingWrapper)]
        model_keys = set(model.state_dict())
        missing = sorted(k for k in expected if k not in gaussian_found)
        unexpected = sorted(k for k in found if k not in model_keys and not _under(k, aux_prefixes))
        wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                 for k, v in gaussian_found.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
        problems = describe_mismatch(missing, unexpected, wrong)
        if problems:
            raise ValueError("isogauss adapter does not fit the model: " + problems)
        check_statistics(gaussian_found.items(), "isogauss adapter")
        return dict(state_dict)

    # ------------------------------------------------------------------ running
    @property
    def isogauss_config(self) -> IsoGaussConfig:
        """The active adapter's config (read by :class:`~isogauss_hf.IsoGaussCallback` for rule and lr)."""
        return self.peft_config[self.active_adapter]

    def isogauss_layers(self) -> dict[str, IsoGaussLayer]:
        """Every Gaussian matrix by qualified name (fused modules contribute one entry per part)."""
        return dict(iter_isogauss_layers(self.model))

    def _sampling_root(self) -> nn.Module:
        return self.model

    @contextlib.contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        """PEFT enters this around every forward and ``generate``: in eval mode one draw is held for the call."""
        if self.training:
            yield
            return
        with self.sampling_scope(0):
            yield

    def forward(self, *args: Any, **kwargs: Any):
        """The model's forward; in eval mode averaged over ``num_samples`` weight draws.

        Task-specific PEFT models (``task_type`` set) call this; a plain ``PeftModel`` calls the transformers model
        directly and so runs one draw per forward.
        """
        return forward_over_draws(self, self.model, args, kwargs)

    def generate(self, *args, **kwargs):
        """``generate`` of the model with one weight draw held for the whole call."""
        with self.sampling_scope(0):
            return self.model.generate(*args, **kwargs)

    # ------------------------------------------------------------------ what a Gaussian adapter cannot do
    def _refuse(self, what: str):
        raise ValueError(
            f"an isogauss adapter cannot be {what}: its layers replaced the dense weights, which are not kept. "
            "Load the base model again for dense outputs, or use merge_and_unload() for one seeded dense draw."
        )

    def disable_adapter_layers(self) -> None:
        self._refuse("disabled")

    def enable_adapter_layers(self) -> None:
        return None  # always enabled

    def _enable_adapter_layers(self, enabled: bool = True) -> None:
        if not enabled:
            self._refuse("disabled")

    def unload(self) -> nn.Module:
        self._refuse("unloaded")

    def delete_adapter(self, adapter_name: str) -> None:
        self._refuse("deleted")

    def merge_adapter(self, adapter_names: Optional[list[str]] = None, safe_merge: bool = False) -> None:
        """Refused: PEFT's in-place merge adds a delta to dense weights this adapter no longer has (it did nothing
        and raised nothing before)."""
        raise ValueError("an isogauss adapter cannot be merged in place (merge_adapter): its Gaussian layers replaced "
                         "the dense weights, there is no delta to add. Use merge_and_unload() for a plain model with "
                         "one seeded dense draw per Gaussian layer")

    def unmerge_adapter(self) -> None:
        """Refused, like :meth:`merge_adapter` (nothing is ever merged in place)."""
        raise ValueError("an isogauss adapter is never merged in place, so there is nothing to unmerge "
                         "(unmerge_adapter); merge_and_unload() returns a plain model with one seeded dense draw")

    def merge_and_unload(self, progressbar: bool = False, safe_merge: bool = False,
                         adapter_names: Optional[list[str]] = None) -> nn.Module:
        """The plain transformers model: every Gaussian module replaced by a dense one holding its seeded draw 0
        (as ``IsoGaussModel.export_dense``), ``modules_to_save`` wrappers replaced by their trained copies."""
        for name in [n for n, m in self.model.named_modules() if is_gaussian_module(m)]:
            try:
                module = self.model.get_submodule(name)
            except AttributeError:  # a part of a fused module already replaced
                continue
            replace_module(self.model, name, module.to_dense_module())
        return self._unload_and_optionally_merge(merge=False, progressbar=progressbar)


def _count_learned_statistics(peft_count):
    """Wrap ``PeftModel.get_nb_trainable_parameters``: isogauss adapters add their buffer statistics."""

    @functools.wraps(peft_count)
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        trainable, total = peft_count(self)
        tuner = self._modules.get("base_model")
        if isinstance(tuner, IsoGaussTuner):
            learned, stored = statistics_counts(tuner.model, learning=not tuner.isogauss_config.inference_mode)
            trainable, total = trainable + learned, total + stored
        return trainable, total

    get_nb_trainable_parameters.__isogauss_wrapped__ = peft_count
    return get_nb_trainable_parameters


def register_with_peft() -> None:
    """Enter the isogauss method into PEFT's mapping tables and its parameter count (idempotent; runs on
    ``import isogauss_hf``)."""
    PEFT_TYPE_TO_CONFIG_MAPPING[PEFT_TYPE] = IsoGaussConfig
    PEFT_TYPE_TO_TUNER_MAPPING[PEFT_TYPE] = IsoGaussTuner
    PEFT_TYPE_TO_PREFIX_MAPPING[PEFT_TYPE] = PEFT_PREFIX
    if not hasattr(PeftModel.get_nb_trainable_parameters, "__isogauss_wrapped__"):
        PeftModel.get_nb_trainable_parameters = _count_learned_statistics(PeftModel.get_nb_trainable_parameters)


register_with_peft()
