"""Calibrating Gaussian statistics against the dense layers they replace, before fine-tuning (beyond the paper).

A Gaussian block starts from the row/column statistics of its pretrained weights; its draw is a different
matrix, so the block's output changes the moment it is converted. :func:`calibrate_statistics` fits the
statistics so that every converted *unit* (a transformer block; for architectures without blocks, the
converted module itself) reproduces the output of the dense unit it replaced, on the inputs it actually
receives in the converted model: mean squared error, minimised by Adam through the reparameterised draw
(the ``backprop`` rule, :mod:`isogauss_hf.layers.reparam`) for ``steps`` steps; every other parameter is
left as it is. The layers get their own rule back afterwards, so any rule can be fine-tuned from the
calibrated statistics. Only forward passes of the model and of the kept dense units are needed.

    dense_units = keep_dense_units(model, config)          # before conversion: copies of what is replaced
    gauss = get_isogauss_model(model, config)
    calibrate_statistics(gauss, dense_units, batches, steps=200)

or :func:`get_calibrated_isogauss_model` for both steps.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Iterable, Optional

import torch
from torch import nn

from .config import IsoGaussConfig
from .mapping import ARCHITECTURES, find_block_list, resolve_targets

__all__ = ["keep_dense_units", "calibrate_statistics", "get_calibrated_isogauss_model"]


def _units(model: nn.Module, config: IsoGaussConfig) -> dict[str, str]:
    """For every module the config converts, the qualified name of its unit (block, or the module itself)."""
    spec = ARCHITECTURES.get(getattr(getattr(model, "config", None), "model_type", None) or "")
    list_name = None
    if spec is not None and spec.block_lists:
        try:
            list_name = find_block_list(model, spec)[0]
        except ValueError:
            list_name = None
    out = {}
    for t in resolve_targets(model, config):
        if list_name is not None and t.block is not None and t.name.startswith(f"{list_name}.{t.block - 1}"):
            out[t.name] = f"{list_name}.{t.block - 1}"
        else:
            out[t.name] = t.name
    return out


def keep_dense_units(model: nn.Module, config: IsoGaussConfig) -> dict[str, nn.Module]:
    """Copies (in eval mode) of the dense units the conversion by ``config`` will change, by qualified name."""
    names = sorted(set(_units(model, config).values()))
    return {name: copy.deepcopy(model.get_submodule(name)).eval() for name in names}


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return _first_tensor(out[0])
    if isinstance(out, dict):
        return _first_tensor(next(iter(out.values())))
    raise TypeError(f"cannot find the output tensor of a unit (got {type(out).__name__})")


def _mse(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    err = (pred - target).float().square()
    if mask is not None and err.dim() == 3 and mask.shape == err.shape[:2]:  # (batch, tokens, features)
        m = mask.to(err.dtype)[..., None]
        return (err * m).sum() / (m.sum() * err.shape[-1]).clamp_min(1.0)
    return err.mean()


def calibrate_statistics(model: nn.Module, dense_units: dict[str, nn.Module], batches: Iterable[dict[str, Any]],
                         steps: int = 200, lr: float = 3e-3, progress: bool = True) -> list[float]:
    """Fit the Gaussian statistics of ``model`` (an ``IsoGaussModel``) so each unit's output matches its dense
    copy in ``dense_units`` (from :func:`keep_dense_units`); returns the loss of every step.

    ``batches``: model inputs (dicts of tensors, e.g. :func:`isogauss_hf.analysis.make_calibration_batches`),
    cycled for ``steps`` Adam steps of learning rate ``lr``. Dropout is off during calibration.
    """
    from .convert import iter_isogauss_layers

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    batches = list(batches)
    if steps and not batches:
        raise ValueError("calibrate_statistics needs at least one batch of inputs")
    root = getattr(model, "base_model", model)
    units = {name: root.get_submodule(name) for name in dense_units}
    layers = [layer for name in units for _, layer in iter_isogauss_layers(units[name])]
    if not layers:
        raise ValueError(f"the units {sorted(dense_units)} hold no Gaussian layer; convert the model first")
    rules = [layer.rule for layer in layers]
    was_training = model.training
    captured: dict[str, tuple] = {}

    def hook(name):
        def capture(module, args, kwargs):
            captured[name] = (args, kwargs)
        return capture

    handles = [units[n].register_forward_pre_hook(hook(n), with_kwargs=True) for n in units]
    losses: list[float] = []
    try:
        for layer in layers:
            layer.set_rule("backprop")
        params = [getattr(layer, s) for layer in layers for s in layer.STAT_NAMES]
        opt = torch.optim.Adam(params, lr=lr)
        model.eval()
        for layer in layers:
            layer.train()  # training draws (with autograd) in the Gaussian layers only
        iterator = itertools.islice(itertools.cycle(batches), steps)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=steps, desc="calibrate statistics", unit="step")
        for batch in iterator:
            captured.clear()
            with torch.no_grad():
                root(**batch)  # the inputs every unit receives in the converted model
            loss = torch.zeros(())
            for name, unit in units.items():
                args, kwargs = captured[name]
                with torch.no_grad():
                    target = _first_tensor(dense_units[name](*args, **kwargs))
                pred = _first_tensor(unit(*args, **kwargs))
                loss = loss + _mse(pred, target, batch.get("attention_mask"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for layer in layers:
                layer.reset_draw()
            losses.append(float(loss.detach()))
    finally:
        for h in handles:
            h.remove()
        for layer, rule in zip(layers, rules):
            layer.set_rule(rule)
            layer.reset_draw()
        for unit in units.values():  # only the statistics moved; drop the gradients the rest collected
            for p in unit.parameters():
                p.grad = None
        model.train(was_training)
    return losses


def get_calibrated_isogauss_model(model: nn.Module, config: IsoGaussConfig, batches: Iterable[dict[str, Any]],
                                  steps: int = 200, lr: float = 3e-3, progress: bool = True):
    """``get_isogauss_model`` followed by :func:`calibrate_statistics` against the replaced dense units."""
    from .model import get_isogauss_model

    dense_units = keep_dense_units(model, config)
    gauss = get_isogauss_model(model, config)
    gauss.calibration_losses = calibrate_statistics(gauss, dense_units, batches, steps=steps, lr=lr,
                                                    progress=progress)
    return gauss
