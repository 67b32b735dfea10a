"""``get_isogauss_model`` and ``IsoGaussModel``: a transformers model with Gaussian layers.

The wrapper is thin; the work lives in one module per concern: conversion and the parameter report in
:mod:`.convert`, evaluation over draws in :mod:`.sampling`, save/load in :mod:`.checkpoint`, loading through
transformers' Auto classes and pipelines in :mod:`.auto`, Hub upload in :mod:`.hub`.

Trainable-parameter accounting (:meth:`IsoGaussModel.get_nb_trainable_parameters`, also used for PEFT adapters
through :func:`statistics_counts`): the statistics of GDU/WDU layers are buffers, not parameters, but training
learns them and checkpoints save them, so they count as trainable; those of ``frozen`` layers count in the total
only; under ``backprop`` they are parameters already and counted once.
"""

from __future__ import annotations

import inspect
import os
from collections import OrderedDict
from typing import Any, Optional, Union

import torch
from torch import nn

from .config import IsoGaussConfig
from .convert import convert_in_place, dense_swapped, iter_isogauss_layers, parameter_report
from .layers import IsoGaussLayer
from .sampling import SamplingMixin, forward_over_draws

__all__ = ["IsoGaussModel", "get_isogauss_model", "statistics_counts"]


def statistics_counts(model: nn.Module, learning: bool = True) -> tuple[int, int]:
    """``(learned, stored)``: numbers of Gaussian statistics of ``model`` held in buffers that training learns
    (GDU/WDU; 0 when ``learning`` is False), and that are stored (every buffer statistic, ``frozen`` included).

    Statistics that are parameters (``rule="backprop"``) are left out: parameter counts include them already.
    """
    learned = stored = 0
    for _, layer in iter_isogauss_layers(model):
        buffers = dict(layer.named_buffers(recurse=False))
        n = sum(buffers[name].numel() for name in IsoGaussLayer.STAT_NAMES if name in buffers)
        stored += n
        if learning and layer.learns_statistics:
            learned += n
    return learned, stored


class IsoGaussModel(SamplingMixin, nn.Module):
    """A transformers model whose selected fully connected layers are Gaussian layers.

    Behaves like the wrapped model (forward, ``generate``, ``config``, Trainer, ``.to()``): unknown
    attributes are looked up on it. In eval mode with ``num_samples > 1`` the outputs are averaged over
    that many weight draws (resample layers only). ``save_pretrained`` writes a compressed checkpoint
    (statistics, not dense weights) that :meth:`from_pretrained` rebuilds without the dense base weights.

    ``get_isogauss_model`` returns an instance of a subclass named after the wrapped class
    (``IsoGaussBertForSequenceClassification``) whose ``forward`` carries the wrapped signature, so the
    Trainer finds the label and input columns as for the plain model.
    """

    _wrapper_classes: dict[type, type] = {}
    #: Called as ``hook(wrapper_class, base_class)`` for every new ``IsoGauss<Base>`` class (``isogauss_hf.auto``
    #: registers one so that pipelines accept the wrapper wherever they accept the base class).
    wrapper_hooks: list = []

    def __init__(self, model: nn.Module, config: IsoGaussConfig, replaced: list[dict[str, Any]]) -> None:
        super().__init__()
        self.base_model = model
        self.isogauss_config = config
        self.replaced_modules = replaced
        self._scope_round = 0  # sampling scopes opened so far (each resample scope is a fresh draw)
        for name, layer in iter_isogauss_layers(model):
            layer.qualified_name = name

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def _wrapper_for(cls, base_cls: type) -> type:
        wrapper = cls._wrapper_classes.get(base_cls)
        if wrapper is None:
            def forward(self, *args, **kwargs):
                return IsoGaussModel.forward(self, *args, **kwargs)

            try:
                forward.__signature__ = inspect.signature(base_cls.forward)
            except (TypeError, ValueError):  # pragma: no cover
                pass
            forward.__doc__ = IsoGaussModel.forward.__doc__
            wrapper = type(f"IsoGauss{base_cls.__name__}", (IsoGaussModel,), {"forward": forward,
                                                                               "__module__": __name__})
            cls._wrapper_classes[base_cls] = wrapper
            for hook in cls.wrapper_hooks:
                hook(wrapper, base_cls)
        return wrapper

    @classmethod
    def _wrap(cls, model: nn.Module, config: IsoGaussConfig, replaced: list[dict[str, Any]]) -> "IsoGaussModel":
        return cls._wrapper_for(type(model))(model, config, replaced)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model" or "base_model" not in self._modules:
                raise
            return getattr(self._modules["base_model"], name)

    def get_base_model(self) -> nn.Module:
        """The wrapped transformers model (its Gaussian modules in place)."""
        return self.base_model

    def _sampling_root(self) -> nn.Module:
        return self.base_model

    # ------------------------------------------------------------------ introspection
    def isogauss_layers(self) -> "OrderedDict[str, IsoGaussLayer]":
        """Every Gaussian matrix by qualified name (fused modules contribute one entry per part)."""
        return OrderedDict(iter_isogauss_layers(self.base_model))

    def parameter_report(self) -> dict[str, Any]:
        """Replaced dense weights vs the statistics standing for them, per block and in total
        (see :func:`isogauss_hf.convert.parameter_report`)."""
        return parameter_report(self.base_model, self.replaced_modules)

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """``(trainable, all)`` as PEFT counts them, plus the Gaussian statistics held in buffers: learned ones
        (GDU/WDU) in both numbers, ``frozen`` ones in ``all`` only (see the module docstring)."""
        params = list(self.parameters())
        learned, stored = statistics_counts(self.base_model)
        trainable = sum(p.numel() for p in params if p.requires_grad) + learned
        return trainable, sum(p.numel() for p in params) + stored

    def print_trainable_parameters(self) -> None:
        """Print ``trainable params: ... || all params: ... || trainable%: ...`` (statistics included)."""
        trainable, total = self.get_nb_trainable_parameters()
        learned, _ = statistics_counts(self.base_model)
        note = f" (including {learned:,d} Gaussian statistics learned by distribution steps)" if learned else ""
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / max(total, 1):.4f}{note}")

    # ------------------------------------------------------------------ running
    def forward(self, *args, **kwargs):
        """The wrapped model's forward; in eval mode averaged over ``num_samples`` weight draws.

        Only resample layers have several draws: a model whose Gaussian layers are all seeded runs once
        (averaging other fixed draws than the one it was trained on measured chance-level accuracy).
        """
        return forward_over_draws(self, self.base_model, args, kwargs)

    def generate(self, *args, **kwargs):
        """``generate`` of the wrapped model with one weight draw held for the whole call."""
        with self.sampling_scope(0):
            return self.base_model.generate(*args, **kwargs)

    def enable_low_memory(self, block_rows: Optional[int] = None) -> None:
        """Inference that keeps no Gaussian weight (the default): every forward draws each layer tile by tile.

        ``block_rows``: output rows per tile on every Gaussian layer (``None``: automatic, at most
        ``isogauss_hf._runtime.EVAL_TILE_ELEMENTS`` weights per tile). Frees kept draws and scratch buffers.
        Outputs equal the whole-matrix product up to matmul rounding (the weight rows are bit for bit the same).
        """
        from ._runtime import release_workspace

        layers = list(self.isogauss_layers().values())
        if layers:
            layers[0].eval_tile_rows = block_rows  # validates before anything changes
        for layer in layers:
            layer.eval_tile_rows = block_rows
            layer.cache_eval_weight = False
            layer.clear_cache()
        release_workspace()

    def disable_low_memory(self) -> None:
        """Keep each layer's evaluation draw between forwards: fastest repeated inference, at the memory of the
        dense weights. A kept draw is redrawn when a statistic changes (in place, by an optimizer or a load)."""
        for layer in self.isogauss_layers().values():
            layer.cache_eval_weight = True

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str, state_dict: Optional[dict[str, torch.Tensor]] = None,
                        is_main_process: bool = True, **kwargs) -> None:
        """Write a compressed checkpoint: base config, non-replaced weights, statistics, biases, seeds.

        Files: ``config.json`` (base model), ``isogauss_config.json`` (config, format version, which modules
        are Gaussian), ``model.safetensors`` (no pickle). Extra keyword arguments of transformers'
        ``save_pretrained`` (``safe_serialization``, ...) are accepted and ignored: the format is fixed.
        """
        if not is_main_process:
            return
        from .checkpoint import write_checkpoint

        write_checkpoint(save_directory, self.base_model, self.isogauss_config, self.replaced_modules, state_dict)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], revision: Optional[str] = None,
                        torch_dtype: Union[torch.dtype, str, None] = None,
                        device_map: Union[str, torch.device, None] = None, *,
                        dtype: Union[torch.dtype, str, None] = None, verify_checksums: bool = True,
                        **overrides) -> "IsoGaussModel":
        """Rebuild a model from a compressed checkpoint (local directory or Hub repo id).

        Only the base config, the non-replaced weights and the statistics are read: the base model is built
        from its config, never from dense pretrained weights. ``overrides`` replace config fields for this
        load (e.g. ``noise="seeded"``, ``num_samples=10``). ``dtype`` (or ``torch_dtype``): a torch dtype, its
        name, or ``"auto"`` (the dtype in ``config.json``); statistics stay fp32. Hub options
        (``cache_dir``, ``local_files_only``, ``token``, ``force_download``) go to the download. With
        ``import isogauss_hf``, ``AutoModelFor*.from_pretrained`` and ``pipeline`` load the same way (:mod:`.auto`).
        Every tensor is checked against the SHA-256 recorded at save; ``verify_checksums=False`` loads a file edited
        on purpose (``save_pretrained`` then records the new values).
        """
        from .checkpoint import read_checkpoint
        from .serialization import HUB_KWARGS

        if not isinstance(verify_checksums, bool):
            raise TypeError(f"verify_checksums must be True or False, got {verify_checksums!r}")
        hub = {k: overrides.pop(k) for k in HUB_KWARGS if k in overrides}
        base, config, records = read_checkpoint(str(pretrained_model_name_or_path), revision, overrides, hub,
                                                verify_checksums=verify_checksums)
        model = cls._wrap(base, config, records)
        target = _resolve_dtype(dtype if dtype is not None else torch_dtype, base.config)
        if target is not None:
            model.to(target)
        if device_map is not None:
            if isinstance(device_map, dict):
                raise ValueError("device_map as a dict is not supported; give one device such as 'cuda' or 'cpu'")
            auto = "cuda" if torch.cuda.is_available() else "cpu"
            model.to(auto if device_map == "auto" else device_map)
        model.eval()
        return model

    def push_to_hub(self, repo_id: str, private: bool = False, token: Optional[str] = None,
                    commit_message: Optional[str] = None, results: Union[None, str, dict[str, Any]] = None,
                    tokenizer: Any = None, checkpoint_dir: Optional[str] = None):
        """Save the compressed checkpoint and upload it with a generated model card (see :mod:`isogauss_hf.hub`).

        ``tokenizer``: a tokenizer / image processor saved next to the weights. ``checkpoint_dir``: save there
        (files already in it, such as a tokenizer, are kept and uploaded too) instead of a temporary directory.
        ``results``: metrics for the card (dict or JSON path; default ``results.json`` in ``checkpoint_dir``).
        Returns ``huggingface_hub.CommitInfo``.
        """
        import tempfile

        from .hub import push_checkpoint, resolve_token

        token = resolve_token(token)  # fail before writing anything
        with tempfile.TemporaryDirectory() as tmp:
            target = checkpoint_dir or os.path.join(tmp, "checkpoint")
            self.save_pretrained(target)
            if tokenizer is not None:
                tokenizer.save_pretrained(target)
            return push_checkpoint(target, repo_id, token=token, private=private, commit_message=commit_message,
                                   results=results, report=self.parameter_report())

    def export_dense(self, save_directory: str, seed: Optional[int] = None) -> None:
        """Write an ordinary transformers checkpoint holding one weight draw per Gaussian layer.

        The draw is each layer's seeded draw (the one a ``noise='seeded'`` model uses), so the exported
        model's outputs equal this model's in seeded mode with ``num_samples=1``. ``seed`` picks another
        draw instead. It loads with plain ``AutoModel*.from_pretrained`` without isogauss_hf.
        """
        from .serialization import check_save_dir

        check_save_dir(save_directory)
        names = [r["name"] for r in self.replaced_modules]
        with dense_swapped(self.base_model, names, seed=seed):
            self.base_model.save_pretrained(save_directory)


def _resolve_dtype(dtype: Union[torch.dtype, str, None], base_config: Any) -> Optional[torch.dtype]:
    """A torch dtype to cast to, or None: ``"auto"`` is the base config's saved dtype."""
    if isinstance(dtype, str) and dtype == "auto":
        dtype = getattr(base_config, "dtype", None)
        if dtype is None:
            return None
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"dtype {dtype!r} is not a torch dtype; give e.g. 'float32', 'bfloat16' or 'auto'")
        dtype = resolved
    return dtype


def get_isogauss_model(model: nn.Module, config: IsoGaussConfig) -> IsoGaussModel:
    """Replace the layers ``config`` selects by Gaussian layers and wrap the model.

    The initial statistics are the row/column mean and std of each pretrained weight; the dense weights of
    replaced modules are dropped (freed once nothing else references them).
    """
    if isinstance(model, IsoGaussModel):
        raise ValueError("this model already has Gaussian layers (it is an IsoGaussModel)")
    if not isinstance(model, nn.Module):
        shown = repr(model) if len(repr(model)) <= 60 else repr(model)[:57] + "..."
        hint = (f"; load it first, e.g. AutoModelForSequenceClassification.from_pretrained({model!r})"
                if isinstance(model, (str, os.PathLike)) else "")
        raise TypeError(f"model must be a torch nn.Module (a transformers model), got {type(model).__name__} "
                        f"{shown}{hint}")
    if not isinstance(config, IsoGaussConfig):
        raise TypeError(f"config must be an IsoGaussConfig, got {type(config).__name__}")
    return IsoGaussModel._wrap(model, config, convert_in_place(model, config))
