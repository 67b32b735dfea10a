"""``IsoGaussCallback``: run GDU/WDU for every Gaussian layer at each optimizer step of a Trainer."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from transformers import TrainerCallback

from .layer import IsoGaussLinear, check_choice, RULES

__all__ = ["IsoGaussCallback", "find_isogauss_layers"]


def find_isogauss_layers(model: nn.Module) -> list[IsoGaussLinear]:
    """Every Gaussian matrix in ``model`` (works through DDP/accelerate wrappers)."""
    return [m for m in model.modules() if isinstance(m, IsoGaussLinear)]


def _grad_scale(optimizer) -> Optional[float]:
    """The AMP loss scale the gradients still carry, or None (accelerate unscales parameters only)."""
    scaler = getattr(optimizer, "scaler", None)
    if scaler is None or not getattr(scaler, "is_enabled", lambda: False)():
        return None
    return float(scaler.get_scale())


def _amp_found_inf(optimizer) -> bool:
    """Whether the AMP scaler found inf/NaN in the parameter gradients of this step (step will be skipped)."""
    scaler = getattr(optimizer, "scaler", None)
    inner = getattr(optimizer, "optimizer", None)
    if scaler is None or inner is None or not getattr(scaler, "is_enabled", lambda: False)():
        return False
    state = getattr(scaler, "_per_optimizer_states", {}).get(id(inner))
    if not state:
        return False
    return any(float(v) > 0 for v in state.get("found_inf_per_device", {}).values())


class IsoGaussCallback(TrainerCallback):
    """Applies the distribution update (GDU or WDU) of every Gaussian layer once per optimizer step.

    It runs in ``on_pre_optimizer_step``: dL/dW of the sampled weights has then accumulated over all
    micro-batches of the step (every micro-batch sees the same draw: the callback pins draws for the
    duration of a step). The gradient is unscaled when AMP loss scaling is active, and clipped to
    ``args.max_grad_norm`` as its own group (the sampled weights are not Trainer parameters, so the
    Trainer's clipping does not see them). When AMP found an overflow the optimizer step is skipped,
    and so is the distribution step. The learning rate is the optimizer's current one (the scheduler's
    value for this step) unless the config or this callback sets ``distribution_lr``.

    Args:
        rule: override the model config's rule ("gdu" | "wdu").
        distribution_lr: override the learning rate of the distribution step.
    """

    def __init__(self, rule: Optional[str] = None, distribution_lr: Optional[float] = None) -> None:
        self.rule = check_choice("rule", rule, RULES) if rule is not None else None
        self.distribution_lr = distribution_lr
        self.applied_steps = 0
        self.skipped_steps = 0

    # -------------------------------------------------------------- helpers
    def _config(self, model):
        return getattr(model, "isogauss_config", None)

    def _rule(self, model) -> str:
        if self.rule is not None:
            return self.rule
        config = self._config(model)
        return config.rule if config is not None else "wdu"

    def _lr(self, model, optimizer) -> float:
        if self.distribution_lr is not None:
            return float(self.distribution_lr)
        config = self._config(model)
        if config is not None and config.distribution_lr is not None:
            return float(config.distribution_lr)
        return float(optimizer.param_groups[0]["lr"])

    # -------------------------------------------------------------- events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        layers = find_isogauss_layers(model)
        if not layers:
            raise ValueError("IsoGaussCallback: the model has no Gaussian layers; build it with get_isogauss_model")
        rule = self._rule(model)
        if rule == "wdu" and any(layer.noise == "seeded" for layer in layers):
            raise ValueError(
                "rule='wdu' with noise='seeded' drifts (the refit re-absorbs the fixed draw's own statistics every "
                "step); train WDU with noise='resample', or use rule='gdu'"
            )
        for layer in layers:
            layer.hold_draw = True
            layer.reset_draw()

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        layers = find_isogauss_layers(model)
        with_grad = [layer for layer in layers if layer.last_weight is not None and layer.last_weight.grad is not None]
        if _amp_found_inf(optimizer):
            self.skipped_steps += 1
            for layer in layers:
                layer.reset_draw()
            return
        scale = _grad_scale(optimizer)
        grads = [layer.last_weight.grad for layer in with_grad]
        if scale is not None and scale != 1.0:
            for g in grads:
                g.div_(scale)
        max_norm = getattr(args, "max_grad_norm", None)
        if grads and max_norm is not None and max_norm > 0:
            total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            if math.isfinite(float(total)):
                coef = max_norm / (float(total) + 1e-6)
                if coef < 1.0:
                    for g in grads:
                        g.mul_(coef)
        rule, lr = self._rule(model), self._lr(model, optimizer)
        applied = 0
        for layer in layers:
            if layer.distribution_step(rule, lr):
                applied += 1
        self.applied_steps += 1 if applied else 0

    def on_train_end(self, args, state, control, model=None, **kwargs):
        for layer in find_isogauss_layers(model):
            layer.hold_draw = False
            layer.reset_draw()

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if logs is not None and model is not None:
            skipped = sum(layer.skipped_steps for layer in find_isogauss_layers(model))
            if skipped:
                logs["isogauss_skipped_layer_steps"] = skipped
