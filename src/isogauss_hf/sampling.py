"""Evaluation over weight draws: pinning one draw in every layer, and averaging outputs over several.

In eval mode a Gaussian model's prediction depends on the draw. :class:`SamplingMixin` gives a model
wrapper (``IsoGaussModel``, the PEFT tuner) ``sampling_scope(i)`` — one draw held in every Gaussian layer
for the scope — and :func:`forward_over_draws` averages ``num_samples`` such scopes. Resample layers get a
fresh draw per scope; seeded layers always use their one draw (draw 0, the draw they were trained on and
that ``export_dense`` writes): averaging other fixed draws measured chance-level accuracy.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable

import torch
from torch import nn

from .layers import IsoGaussLayer, iter_isogauss_layers
from .layers.base import STREAM_FIXED

__all__ = ["SamplingMixin", "pin_draws", "scope_key", "forward_over_draws", "average_outputs", "has_resample_layers"]

_STREAM_SCOPE = "scope"


def scope_key(layer: IsoGaussLayer, round_: int) -> tuple[str, int]:
    """The draw a layer uses inside sampling scope number ``round_``."""
    return (STREAM_FIXED, 0) if layer.noise == "seeded" else (_STREAM_SCOPE, round_)


def has_resample_layers(model: nn.Module) -> bool:
    """Whether any Gaussian layer of ``model`` draws fresh weights (so averaging draws means anything)."""
    return any(layer.noise != "seeded" for _, layer in iter_isogauss_layers(model))


@contextlib.contextmanager
def pin_draws(layers: Iterable[IsoGaussLayer], round_: int):
    """Hold the draw of sampling scope ``round_`` in every layer of ``layers`` (cached), then release it."""
    layers = list(layers)
    for layer in layers:
        layer._draw_override = scope_key(layer, round_)
    try:
        yield
    finally:
        for layer in layers:
            layer._draw_override = None
            layer.clear_cache()


class SamplingMixin:
    """``sampling_scope`` for a wrapper whose Gaussian model is :meth:`_sampling_root` (a module)."""

    def _sampling_root(self) -> nn.Module:
        raise NotImplementedError

    @contextlib.contextmanager
    def sampling_scope(self, index: int = 0):
        """Pin one weight draw in every Gaussian layer for the duration (evaluation sample ``index``).

        Resample layers use a fresh draw for each scope; seeded layers always use their one draw, whatever
        ``index`` is. The draw is cached per layer inside the scope.
        """
        round_ = self.__dict__.get("_scope_round", 0)
        self.__dict__["_scope_round"] = round_ + 1
        with pin_draws((layer for _, layer in iter_isogauss_layers(self._sampling_root())), round_):
            yield


def forward_over_draws(owner: Any, inner: nn.Module, args: tuple, kwargs: dict) -> Any:
    """``inner(*args, **kwargs)``, averaged over ``owner.isogauss_config.num_samples`` draws in eval mode.

    ``owner`` provides ``sampling_scope`` and ``training``; a model whose Gaussian layers are all seeded
    runs once.
    """
    k = owner.isogauss_config.num_samples
    if owner.training or k <= 1 or not has_resample_layers(inner):
        return inner(*args, **kwargs)
    outputs = []
    for i in range(k):
        with owner.sampling_scope(i):
            outputs.append(inner(*args, **kwargs))
    return average_outputs(outputs)


def average_outputs(outputs: list[Any]) -> Any:
    """Average floating-point tensors across per-draw outputs (other values are taken from the first draw)."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(outputs).mean(0) if first.is_floating_point() else first
    if isinstance(first, dict):  # ModelOutput is an OrderedDict
        merged = {k: average_outputs([o[k] for o in outputs]) if _averageable(first[k], outputs, k) else first[k]
                  for k in first.keys()}
        return type(first)(**merged)
    if isinstance(first, tuple) and all(isinstance(x, torch.Tensor) or x is None for x in first):
        return tuple(average_outputs([o[i] for o in outputs]) if isinstance(first[i], torch.Tensor) else first[i]
                     for i in range(len(first)))
    return first


def _averageable(value: Any, outputs: list[Any], key: str) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and all(
        isinstance(o[key], torch.Tensor) and o[key].shape == value.shape for o in outputs)
