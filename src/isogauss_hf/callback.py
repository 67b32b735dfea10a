"""``IsoGaussCallback``: run GDU/WDU for every Gaussian layer at each optimizer step of a Trainer."""

from __future__ import annotations

import math
import os
from typing import Optional

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from . import distributed as D
from .layers import IsoGaussLayer, iter_isogauss_layers
from .settings import check_rule

__all__ = ["IsoGaussCallback"]


def _layers(model: nn.Module) -> list[IsoGaussLayer]:
    return [layer for _, layer in iter_isogauss_layers(model)]


def _has_weight_grad(layer: IsoGaussLayer) -> bool:
    """Whether the layer's training draw holds dL/dW (a leaf draw; ``backprop`` draws are not leaves)."""
    w = layer.last_weight
    return w is not None and w.is_leaf and w.grad is not None


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


def _sharded_backend(args) -> Optional[str]:
    """'FSDP' or 'DeepSpeed' when the run uses one of them (neither is supported), else None."""
    if getattr(args, "deepspeed", None) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "DeepSpeed"
    if getattr(args, "fsdp", None) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "FSDP"
    return None


class IsoGaussCallback(TrainerCallback, ExportableState):
    """Applies the distribution update (GDU or WDU) of every Gaussian layer once per optimizer step.

    It runs in ``on_pre_optimizer_step``: dL/dW of the sampled weights has then accumulated over all
    micro-batches of the step (every micro-batch sees the same draw: the callback pins draws for the
    duration of a step). The gradient is unscaled when AMP loss scaling is active, and clipped to
    ``args.max_grad_norm`` as its own group (the sampled weights are not Trainer parameters, so the
    Trainer's clipping does not see them). When AMP found an overflow the optimizer step is skipped,
    and so is the distribution step. The learning rate is the optimizer's current one (the scheduler's
    value for this step) unless the config or this callback sets ``distribution_lr``.

    Data parallel (accelerate / ``torch.distributed`` DDP): the draw of a step is keyed by the layer
    seed (base seed + module name) and the global step, so every rank samples the same W; dL/dW is
    averaged across ranks (DDP averages parameters only, and W is not one) before clipping and the
    distribution step, so every rank ends the step with the same statistics. FSDP and DeepSpeed are
    refused (not supported).

    Numerical guard: a layer whose gradient or updated statistics are not finite keeps its stored
    distribution for that step; the skip is counted (``isogauss_skipped_layer_steps`` in the logs)
    and warned about once per layer, naming the module. Stds are never negative (GDU takes the root
    of a clamped variance, WDU a population std); ``IsoGaussConfig.std_floor`` raises the floor.

    Checkpoints: the Trainer's ``model.safetensors`` holds the statistics, noise seeds and draw
    counters; ``on_save`` adds ``isogauss_config.json`` and the base ``config.json`` so a checkpoint
    directory also loads with ``IsoGaussModel.from_pretrained``. Resuming continues exactly, because
    draws depend only on (seed, layer, global step) and the statistics.

    Args:
        rule: override every layer's own rule (see ``isogauss_hf.settings.RULES``); None = each layer's rule.
        distribution_lr: override the learning rate of the distribution step.
        check_consistency_every: in a multi-process run, verify every this many optimizer steps that all
            ranks hold identical statistics (raises ``RankDivergenceError``); 0 = never.
        statistics_logger: a :class:`~isogauss_hf.tracking.StatisticsLogger` that records the row/column
            statistics at the start of training and after the optimizer steps it selects (the paper's
            Figures 3-4); with ``statistics_path`` its log is written there at every save and at the end.
        statistics_path: JSON file for the logger's records (relative paths are under ``args.output_dir``).
    """

    def __init__(
        self,
        rule: Optional[str] = None,
        distribution_lr: Optional[float] = None,
        check_consistency_every: int = 0,
        statistics_logger=None,
        statistics_path: Optional[str] = None,
    ) -> None:
        self.rule = check_rule(rule) if rule is not None else None
        if distribution_lr is not None and (isinstance(distribution_lr, bool) or not isinstance(
                distribution_lr, (int, float)) or not 0 < distribution_lr < float("inf")):
            raise ValueError(f"distribution_lr must be a positive number or None, got {distribution_lr!r}")
        self.distribution_lr = distribution_lr
        if isinstance(check_consistency_every, bool) or not isinstance(check_consistency_every, int) \
                or check_consistency_every < 0:
            raise ValueError(f"check_consistency_every must be an integer >= 0, got {check_consistency_every!r}")
        self.check_consistency_every = check_consistency_every
        if statistics_path is not None and statistics_logger is None:
            from .tracking import StatisticsLogger

            statistics_logger = StatisticsLogger()
        self.statistics_logger = statistics_logger
        self.statistics_path = statistics_path
        self.applied_steps = 0
        self.skipped_steps = 0

    # -------------------------------------------------------------- helpers
    def _config(self, model):
        return getattr(model, "isogauss_config", None)

    def _lr(self, model, optimizer) -> float:
        if self.distribution_lr is not None:
            return float(self.distribution_lr)
        config = self._config(model)
        if config is not None and config.distribution_lr is not None:
            return float(config.distribution_lr)
        return float(optimizer.param_groups[0]["lr"])

    def state(self) -> dict:
        """Trainer ``ExportableState``: the counters, restored with ``restore_callback_states_from_checkpoint``."""
        return {
            "args": {
                "rule": self.rule,
                "distribution_lr": self.distribution_lr,
                "check_consistency_every": self.check_consistency_every,
            },
            "attributes": {"applied_steps": self.applied_steps, "skipped_steps": self.skipped_steps},
        }

    # -------------------------------------------------------------- events
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        backend = _sharded_backend(args)
        if backend is not None:
            raise ValueError(
                f"IsoGaussCallback does not support {backend}: Gaussian statistics are buffers updated outside "
                f"the optimizer and are neither sharded nor gathered by it; train with DDP (plain accelerate "
                f"multi-process / torchrun), see configs/accelerate_multi_gpu_ddp.yaml"
            )
        layers = []
        for name, layer in iter_isogauss_layers(model):
            layer.qualified_name = name  # used in the layer's warnings
            layers.append(layer)
        if not layers:
            raise ValueError("IsoGaussCallback: the model has no Gaussian layers; build it with get_isogauss_model")
        from .serialization import install_tied_state_dict_hooks

        install_tied_state_dict_hooks(model)  # Trainer checkpoints of tied models (GPT-2) need it
        D.broadcast_statistics(model)  # ranks start from rank 0's statistics, whatever they were built from
        for layer in layers:
            layer.hold_draw = True
            layer.reset_draw()
        if self.statistics_logger is not None:
            self.statistics_logger.record(state.global_step if state is not None else 0, model, force=True)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            D.set_step_draws(_layers(model), state.global_step)

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        layers = _layers(model)
        has_grad = [_has_weight_grad(layer) for layer in layers]
        if D.is_distributed():
            counts = D.all_reduce_flags(has_grad, device=layers[0].row_mean.device if layers else None)
            world = D.world_size()
            uneven = [layer.qualified_name or str(i) for i, (layer, c) in enumerate(zip(layers, counts))
                      if 0 < c < world]
            if uneven:
                raise RuntimeError(
                    f"Gaussian layers {uneven} got a gradient on some ranks only; every rank must run the "
                    f"same modules each step for the distribution step to stay identical across ranks"
                )
        with_grad = [layer for layer, h in zip(layers, has_grad) if h]
        if _amp_found_inf(optimizer):
            self.skipped_steps += 1
            for layer in layers:
                layer.reset_draw()
            return
        grads = [layer.last_weight.grad for layer in with_grad]
        D.all_reduce_mean_(grads)  # dL/dW averaged over ranks, as DDP does for parameters
        scale = _grad_scale(optimizer)
        if scale is not None and scale != 1.0:
            for g in grads:
                g.div_(scale)
        max_norm = getattr(args, "max_grad_norm", None)
        if grads and max_norm is not None and max_norm > 0:
            # A layer with a non-finite gradient is skipped by its distribution step; leave it out of the norm
            # so the other layers are still clipped.
            norms = [float(torch.linalg.vector_norm(g.float())) for g in grads]
            finite = [i for i, n in enumerate(norms) if math.isfinite(n)]
            total = math.sqrt(sum(norms[i] ** 2 for i in finite))
            coef = max_norm / (total + 1e-6)
            if finite and math.isfinite(total) and coef < 1.0:
                for i in finite:
                    grads[i].mul_(coef)
        lr = self._lr(model, optimizer)
        applied = 0
        for layer in layers:
            if layer.distribution_step(self.rule, lr):
                applied += 1
        self.applied_steps += 1 if applied else 0
        every = self.check_consistency_every
        if every and D.is_distributed() and (state.global_step + 1) % every == 0:
            D.check_rank_consistency(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.statistics_logger is not None and model is not None:
            self.statistics_logger.record(state.global_step, model)

    def _write_statistics(self, args, state) -> None:
        if self.statistics_logger is None or self.statistics_path is None or not state.is_world_process_zero:
            return
        path = self.statistics_path
        if not os.path.isabs(path):
            path = os.path.join(args.output_dir, path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.statistics_logger.save(path)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._write_statistics(args, state)
        for layer in _layers(model):
            layer.hold_draw = False
            layer.reset_draw()

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if logs is None or model is None:
            return
        extra = {}
        skipped = sum(layer.skipped_steps for layer in _layers(model))
        if skipped:
            extra["isogauss_skipped_layer_steps"] = skipped
        if self.skipped_steps:
            extra["isogauss_amp_skipped_steps"] = self.skipped_steps
        if extra:
            logs.update(extra)
            # Trainer.log appends a copy of `logs` to log_history before callbacks run: update that entry too.
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(extra)

    def on_save(self, args, state, control, model=None, **kwargs):
        """Complete the Trainer checkpoint so ``IsoGaussModel.from_pretrained`` loads it."""
        if model is None or not state.is_world_process_zero:
            return
        self._write_statistics(args, state)
        from .checkpoint import complete_trainer_checkpoint
        from .model import IsoGaussModel

        directory = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if not os.path.isdir(directory) or not isinstance(model, IsoGaussModel):
            return  # (a PEFT adapter checkpoint is written by PEFT itself)
        complete_trainer_checkpoint(directory, model.base_model, model.isogauss_config, model.replaced_modules)
