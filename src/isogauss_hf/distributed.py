"""Multi-process helpers: rank-consistent draws, gradient averaging and statistics checks.

Under data parallelism (``torch.distributed`` / accelerate DDP) every rank runs the same model on its
own slice of the batch. A Gaussian layer's sampled weight ``W`` is not an ``nn.Parameter``, so DDP
does not average ``dL/dW``; and the distribution step (GDU, Algorithm 1; WDU, Algorithm 2) is a
function of ``W`` and ``dL/dW``. Ranks therefore stay in step only if

1. every rank draws the same ``W`` for a step: the draw is keyed by the layer seed (derived from the
   base seed and the layer's module name) and the global step, never by a rank's RNG
   (:func:`set_step_draws`);
2. ``dL/dW`` is averaged across ranks before the distribution step, as DDP averages parameter
   gradients (:func:`all_reduce_mean_`);
3. the update itself is deterministic, which GDU and WDU are.

Then every rank ends each step with identical statistics; :func:`check_rank_consistency` verifies it.
All functions are no-ops in a single process.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .errors import RankDivergenceError
from .layers import IsoGaussLayer, iter_isogauss_layers

__all__ = [
    "is_distributed",
    "world_size",
    "rank",
    "all_reduce_mean_",
    "all_reduce_flags",
    "broadcast_statistics",
    "set_step_draws",
    "check_rank_consistency",
    "RankDivergenceError",
]




def is_distributed() -> bool:
    """True inside an initialized process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def set_step_draws(layers: Iterable[IsoGaussLayer], global_step: int) -> None:
    """Key the next training draw of every resample-mode layer by ``global_step``.

    The draw of a step is then ``derive_seed(layer seed, "train", global_step)`` with the layer seed
    ``derive_seed(base seed, module name)``: identical on every rank, and after a resume from a
    checkpoint of that step. Seeded-mode layers always use their one fixed draw and are left as is.
    """
    for layer in layers:
        if layer.noise == "resample":
            layer.set_draw_index(int(global_step))


def _buckets(tensors: Sequence[torch.Tensor]) -> dict[tuple[torch.device, torch.dtype], list[int]]:
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    return groups


def all_reduce_mean_(tensors: Sequence[torch.Tensor], group=None) -> None:
    """Average ``tensors`` across ranks in place (one flattened all-reduce per device and dtype).

    Every rank must pass tensors of the same shapes in the same order. SUM then divide, because the
    gloo backend has no AVG. A no-op outside a multi-process group.
    """
    if not is_distributed() or not tensors:
        return
    n = dist.get_world_size(group)
    for idx in _buckets(tensors).values():
        flat = torch.cat([tensors[i].reshape(-1) for i in idx])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        flat.div_(n)
        offset = 0
        for i in idx:
            t = tensors[i]
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def all_reduce_flags(flags: Sequence[bool], device: Optional[torch.device] = None, group=None) -> list[int]:
    """For each flag, on how many ranks it is true (the flags themselves outside a process group)."""
    if not is_distributed():
        return [int(f) for f in flags]
    t = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=device or _comm_device(group))
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return [int(x) for x in t.tolist()]


def _comm_device(group=None) -> torch.device:
    backend = dist.get_backend(group)
    if backend == "nccl" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _flat_statistics(layers: Sequence[IsoGaussLayer]) -> torch.Tensor:
    if not layers:
        return torch.zeros(0)
    return torch.cat([getattr(layer, name).reshape(-1) for layer in layers for name in IsoGaussLayer.STAT_NAMES])


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|, NaN equal to NaN, NaN against a number = inf."""
    if not a.numel():
        return 0.0
    diff = (a - b).abs()
    diff = torch.where(a.isnan() & b.isnan(), torch.zeros_like(diff), diff)
    return float(diff.nan_to_num(nan=float("inf")).max())


def broadcast_statistics(model: nn.Module, src: int = 0, group=None) -> None:
    """Copy every Gaussian layer's statistics and noise seed from rank ``src`` to all ranks."""
    if not is_distributed():
        return
    for _, layer in iter_isogauss_layers(model):
        for name in IsoGaussLayer.STAT_NAMES + ("noise_seed", "draw_counter"):
            dist.broadcast(getattr(layer, name), src=src, group=group)
        layer._after_load(layer, None)  # refresh the cached seed/counter and invalidate draws


def check_rank_consistency(model: nn.Module, atol: float = 0.0, group=None) -> float:
    """Raise :class:`RankDivergenceError` unless every rank holds the same statistics (within ``atol``).

    Gathers the concatenated statistics of all Gaussian layers (2n + 2m numbers per matrix, small)
    and compares them with rank 0's. Returns the largest absolute difference (0.0 in one process).
    """
    named = list(iter_isogauss_layers(model))
    if not is_distributed():
        return 0.0
    layers = [layer for _, layer in named]
    local = _flat_statistics(layers).to(_comm_device(group))
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, local, group=group)
    worst, worst_rank = 0.0, 0
    for r, other in enumerate(gathered):
        d = _max_abs_diff(other, gathered[0])
        if d > worst:
            worst, worst_rank = d, r
    if worst > atol:
        # name the first layer that differs
        offset, culprit = 0, "?"
        for name, layer in named:
            size = layer.num_gaussian_parameters
            if _max_abs_diff(gathered[worst_rank][offset : offset + size], gathered[0][offset : offset + size]) > atol:
                culprit = name
                break
            offset += size
        raise RankDivergenceError(
            f"Gaussian statistics differ between rank 0 and rank {worst_rank} (max |diff| {worst:.3g} > atol {atol}); "
            f"first differing layer: {culprit}"
        )
    return worst
