"""Linear Gaussian layers: ``IsoGaussLinear`` (an ``nn.Linear`` or GPT-2 ``Conv1D``) and ``IsoGaussFusedLinear``.

:class:`IsoGaussLinear` replaces a fully connected layer by four fp32 vectors — the mean and std of every
row (output feature) and column (input feature) — and samples its weight from Eq. (2) at run time (all of
that in :class:`~isogauss_hf.layers.base.IsoGaussLayer`). :class:`IsoGaussFusedLinear` holds several of them
side by side for fused projections (GPT-2's ``c_attn`` = query|key|value).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import row_col_stats
from ..noise import derive_seed
from ..settings import check_choice
from .base import IsoGaussLayer

__all__ = ["IsoGaussLinear", "IsoGaussFusedLinear", "is_conv1d", "dense_matrix"]


def is_conv1d(module: nn.Module) -> bool:
    """True for transformers' ``Conv1D`` (GPT-2 style: weight stored as (in, out))."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        return False
    return isinstance(module, Conv1D)


def dense_matrix(module: nn.Module) -> tuple[torch.Tensor, str]:
    """The (out, in) weight of an ``nn.Linear`` or a ``Conv1D`` (transposed view) and its source name."""
    if is_conv1d(module):
        return module.weight.detach().t(), "conv1d"  # Conv1D stores (in, out)
    if isinstance(module, nn.Linear):
        return module.weight.detach(), "linear"
    raise TypeError(f"expected torch.nn.Linear or transformers Conv1D, got {type(module).__name__}")


class IsoGaussLinear(IsoGaussLayer):
    """A fully connected layer whose weight is N(mean_ij, var_ij) from row/column statistics (Eq. 2).

    Rows are always output features (also for a ``Conv1D``, whose weight is stored transposed). Options
    (rule, noise, standardize, std_floor) come from ``config`` (an ``IsoGaussConfig``), explicit keyword
    arguments taking precedence; see :class:`~isogauss_hf.layers.base.IsoGaussLayer` for the contract.
    """

    KIND = "linear"
    SOURCES = ("linear", "conv1d")
    _output_dim = -1

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, config: Any = None,
                 rule: Optional[str] = None, noise: Optional[str] = None, seed: int = 0,
                 standardize: Optional[bool] = None, std_floor: Optional[float] = None, source: str = "linear",
                 noise_generator: Optional[str] = None, device=None, dtype=None) -> None:
        super().__init__(out_features, in_features, bias, config=config, rule=rule, noise=noise, seed=seed,
                         standardize=standardize, std_floor=std_floor, noise_generator=noise_generator,
                         device=device, dtype=dtype)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.source = check_choice("source", source, self.SOURCES)

    @classmethod
    def from_linear(cls, module: nn.Module, noise: Optional[str] = None, seed: int = 0,
                    standardize: Optional[bool] = None, *, config: Any = None, rule: Optional[str] = None,
                    std_floor: Optional[float] = None) -> "IsoGaussLinear":
        """Build from an ``nn.Linear`` or a transformers ``Conv1D``; statistics of its weight.

        The initial statistics are the mean and std of each row and column of the pretrained weight (the
        INITIAL STATE of Algorithms 1-2). The bias is copied; the dense weight is not kept.
        """
        weight, source = dense_matrix(module)
        out_f, in_f = weight.shape
        bias = getattr(module, "bias", None)
        layer = cls(in_f, out_f, bias=bias is not None, config=config, rule=rule, noise=noise, seed=seed,
                    standardize=standardize, std_floor=std_floor, source=source, device=weight.device,
                    dtype=weight.dtype)
        layer.set_statistics(row_col_stats(weight))
        if bias is not None:
            layer.bias.data.copy_(bias.detach())
        return layer

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"{self._options_repr()}, source={self.source!r}")

    def to_dense_module(self, seed: Optional[int] = None) -> nn.Module:
        """An ordinary ``nn.Linear`` (or ``Conv1D`` if it came from one) holding one seeded draw."""
        self._refuse_standardized_export()
        return _dense_module(self.dense_weight(seed), self.bias, self.source)


def _dense_module(weight: torch.Tensor, bias: Optional[torch.Tensor], source: str) -> nn.Module:
    out_f, in_f = weight.shape
    dtype = bias.dtype if bias is not None else weight.dtype
    if source == "conv1d":
        from transformers.pytorch_utils import Conv1D

        module = Conv1D(out_f, in_f)
        module.weight = nn.Parameter(weight.t().contiguous().to(dtype))
        if bias is not None:
            module.bias = nn.Parameter(bias.detach().clone())
        return module.to(weight.device)
    module = nn.Linear(in_f, out_f, bias=bias is not None, device=weight.device, dtype=dtype)
    with torch.no_grad():
        module.weight.copy_(weight)
        if bias is not None:
            module.bias.copy_(bias)
    return module


class IsoGaussFusedLinear(nn.Module):
    """Several Gaussian matrices side by side along the output features (e.g. GPT-2 ``c_attn``).

    GPT-2 fuses query, key and value into one ``Conv1D`` of ``3 * hidden`` outputs. Treating that as one
    Gaussian matrix would pool them into shared column statistics; instead each of the ``num_splits``
    output slices is its own :class:`IsoGaussLinear` (own row and column statistics), exactly as BERT's
    separate query/key/value layers. Outputs are concatenated.
    """

    def __init__(self, parts: list[IsoGaussLinear], source: str = "conv1d") -> None:
        super().__init__()
        if not parts:
            raise ValueError("IsoGaussFusedLinear needs at least one part")
        self.parts = nn.ModuleList(parts)
        self.source = source
        self.in_features = parts[0].in_features
        self.out_features = sum(p.out_features for p in parts)

    @classmethod
    def from_linear(cls, module: nn.Module, num_splits: int, noise: Optional[str] = None,
                    seeds: Optional[list[int]] = None, standardize: Optional[bool] = None, *, config: Any = None,
                    rule: Optional[str] = None, std_floor: Optional[float] = None) -> "IsoGaussFusedLinear":
        weight, source = dense_matrix(module)
        out_f, in_f = weight.shape
        if out_f % num_splits:
            raise ValueError(f"cannot split {out_f} output features into {num_splits} equal parts")
        size = out_f // num_splits
        seeds = list(seeds) if seeds is not None else list(range(num_splits))
        bias = getattr(module, "bias", None)
        parts = []
        for i in range(num_splits):
            lin = nn.Linear(in_f, size, bias=bias is not None, device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                lin.weight.copy_(weight[i * size : (i + 1) * size])
                if bias is not None:
                    lin.bias.copy_(bias.detach()[i * size : (i + 1) * size])
            parts.append(IsoGaussLinear.from_linear(lin, noise=noise, seed=seeds[i], standardize=standardize,
                                                    config=config, rule=rule, std_floor=std_floor))
        return cls(parts, source=source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=-1)

    def to_dense_module(self, seed: Optional[int] = None) -> nn.Module:
        for p in self.parts:
            p._refuse_standardized_export()
        weights = [p.dense_weight(None if seed is None else derive_seed(seed, i)) for i, p in enumerate(self.parts)]
        biases = [p.bias for p in self.parts]
        bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
        return _dense_module(torch.cat(weights, dim=0), bias, self.source)

    def extra_repr(self) -> str:
        return f"num_splits={len(self.parts)}, source={self.source!r}"
