"""The ``lowrank`` baseline: each selected matrix replaced by trained factors at the Gaussian layer's budget.

A Gaussian layer stores 2n + 2m statistics for an n x m weight. The equal-budget low-rank stand-in is
W ~= A B with A (n x r), B (r x m) and the largest rank with r (n + m) <= 2n + 2m, i.e. r = 2 (capped at
min(n, m), at least 1): :func:`budget_rank`. The factors start from the truncated SVD of the pretrained
weight, W = U S V^T -> A = U_r S_r^(1/2), B = S_r^(1/2) V_r^T (so A B is the best rank-r approximation,
Eckart-Young), the bias is kept, and both factors are ordinary ``nn.Parameter`` s trained by back-propagation.

Modules:

* :class:`LowRankLinear` — for an ``nn.Linear`` or GPT-2 ``Conv1D``; ``forward(x) = (x B^T) A^T + b``.
* :class:`LowRankFusedLinear` — GPT-2's fused ``c_attn``: one factor pair per query/key/value slice, as the
  Gaussian layer splits it.
* :class:`LowRankConv2d` — ``nn.Conv2d`` on its im2col matrix (n = out_channels, m = in_channels/groups*kh*kw):
  a conv with r filters of the original kernel (shared by every group) then a 1x1 conv r -> out.

:func:`apply_lowrank` swaps the modules an :class:`~isogauss_hf.IsoGaussConfig` selects (the same
``resolve_targets`` as the Gaussian run); :func:`merge_lowrank` turns every factor pair back into a plain
``nn.Linear`` / ``Conv1D`` / ``nn.Conv2d`` with W = A B, so ``save_pretrained`` writes an ordinary checkpoint.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UsageError
from ..mapping import resolve_targets
from ._common import is_conv1d, set_submodule

__all__ = ["budget_rank", "svd_factors", "LowRankLinear", "LowRankFusedLinear", "LowRankConv2d",
           "apply_lowrank", "merge_lowrank", "lowrank_modules"]


def budget_rank(n: int, m: int, budget: Optional[int] = None) -> int:
    """Largest r with r (n + m) <= ``budget`` (default 2n + 2m, the Gaussian layer's), within 1..min(n, m)."""
    if n < 1 or m < 1:
        raise UsageError(f"lowrank: matrix shape must be positive, got {n} x {m}")
    budget = 2 * (n + m) if budget is None else budget
    return max(1, min(budget // (n + m), n, m))


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (n x r), B (r x m) with A B the best rank-``rank`` approximation of the n x m ``weight``.

    Truncated SVD, W = U S V^T, the singular values split evenly: A = U_r sqrt(S_r), B = sqrt(S_r) V_r^T.
    Computed in float32 (float64 kept as is) and returned in ``weight``'s dtype and device.
    """
    w = weight.detach()
    work = w if w.dtype == torch.float64 else w.float()
    u, s, vh = torch.linalg.svd(work, full_matrices=False)
    root = s[:rank].sqrt()
    a = u[:, :rank] * root
    b = root[:, None] * vh[:rank]
    return a.to(w.dtype).contiguous(), b.to(w.dtype).contiguous()


def _check_rank(rank: Optional[int], n: int, m: int, what: str) -> int:
    if rank is None:
        return budget_rank(n, m)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(n, m):
        raise UsageError(f"lowrank: rank={rank!r} invalid for {what} ({n} x {m}); valid ranks are 1..{min(n, m)}")
    return rank


def _dense_module(weight: torch.Tensor, bias: Optional[torch.Tensor], source: str) -> nn.Module:
    """``nn.Linear`` (source 'linear') or GPT-2 ``Conv1D`` (source 'conv1d') holding the n x m ``weight``."""
    n, m = weight.shape
    with torch.no_grad():
        if source == "conv1d":
            from transformers.pytorch_utils import Conv1D

            dense = Conv1D(n, m).to(device=weight.device, dtype=weight.dtype)
            dense.weight.copy_(weight.t())
        else:
            dense = nn.Linear(m, n, bias=bias is not None, device=weight.device, dtype=weight.dtype)
            dense.weight.copy_(weight)
        if bias is None:
            dense.bias = None
        else:
            dense.bias.copy_(bias.detach())
    return dense


class LowRankLinear(nn.Module):
    """``y = x B^T A^T + b``: factors ``factor_a`` (out x r) and ``factor_b`` (r x in) of a Linear/Conv1D weight."""

    def __init__(self, factor_a: torch.Tensor, factor_b: torch.Tensor, bias: Optional[torch.Tensor],
                 source: str = "linear") -> None:
        super().__init__()
        if source not in ("linear", "conv1d"):
            raise ValueError(f"source must be 'linear' or 'conv1d', got {source!r}")
        self.factor_a = nn.Parameter(factor_a)
        self.factor_b = nn.Parameter(factor_b)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.source = source

    @classmethod
    def from_module(cls, module: nn.Module, rank: Optional[int] = None) -> "LowRankLinear":
        """SVD-initialised factors of an ``nn.Linear`` or ``Conv1D`` (rank: :func:`budget_rank` unless given)."""
        if is_conv1d(module):
            weight, source = module.weight.detach().t(), "conv1d"  # Conv1D stores (in, out)
        elif isinstance(module, nn.Linear):
            weight, source = module.weight.detach(), "linear"
        else:
            raise UsageError(f"lowrank: expected nn.Linear or transformers Conv1D, got {type(module).__name__}")
        n, m = weight.shape
        a, b = svd_factors(weight, _check_rank(rank, n, m, type(module).__name__))
        bias = module.bias.detach().clone() if getattr(module, "bias", None) is not None else None
        return cls(a, b, bias, source)

    @property
    def rank(self) -> int:
        return self.factor_a.shape[1]

    @property
    def out_features(self) -> int:
        return self.factor_a.shape[0]

    @property
    def in_features(self) -> int:
        return self.factor_b.shape[1]

    @property
    def num_replaced_weights(self) -> int:
        return self.out_features * self.in_features

    @property
    def num_factor_parameters(self) -> int:
        return self.factor_a.numel() + self.factor_b.numel()

    def merged_weight(self) -> torch.Tensor:
        """The n x m product A B."""
        return self.factor_a @ self.factor_b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.factor_b), self.factor_a, self.bias)

    def to_dense_module(self) -> nn.Module:
        """An ordinary ``nn.Linear`` (or ``Conv1D`` if it came from one) with W = A B."""
        return _dense_module(self.merged_weight().detach(), self.bias, self.source)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, source={self.source}"


class LowRankFusedLinear(nn.Module):
    """A fused projection (GPT-2 ``c_attn``: query|key|value) as one :class:`LowRankLinear` per slice."""

    def __init__(self, parts: list[LowRankLinear], source: str = "conv1d") -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.source = source

    @classmethod
    def from_module(cls, module: nn.Module, splits: int, rank: Optional[int] = None) -> "LowRankFusedLinear":
        if is_conv1d(module):
            weight, source = module.weight.detach().t(), "conv1d"
        elif isinstance(module, nn.Linear):
            weight, source = module.weight.detach(), "linear"
        else:
            raise UsageError(f"lowrank: expected nn.Linear or transformers Conv1D, got {type(module).__name__}")
        n, m = weight.shape
        if n % splits:
            raise UsageError(f"lowrank: cannot split {n} output features into {splits} equal slices")
        size = n // splits
        bias = getattr(module, "bias", None)
        parts = []
        for i in range(splits):
            w = weight[i * size:(i + 1) * size]
            a, b = svd_factors(w, _check_rank(rank, size, m, "a fused slice"))
            part_bias = bias.detach()[i * size:(i + 1) * size].clone() if bias is not None else None
            parts.append(LowRankLinear(a, b, part_bias, "linear"))
        return cls(parts, source)

    @property
    def out_features(self) -> int:
        return sum(p.out_features for p in self.parts)

    @property
    def in_features(self) -> int:
        return self.parts[0].in_features

    @property
    def num_replaced_weights(self) -> int:
        return sum(p.num_replaced_weights for p in self.parts)

    @property
    def num_factor_parameters(self) -> int:
        return sum(p.num_factor_parameters for p in self.parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=-1)

    def to_dense_module(self) -> nn.Module:
        with torch.no_grad():
            weight = torch.cat([p.merged_weight() for p in self.parts], dim=0)
            bias = torch.cat([p.bias for p in self.parts]) if self.parts[0].bias is not None else None
        return _dense_module(weight, bias, self.source)


class LowRankConv2d(nn.Module):
    """``nn.Conv2d`` with its im2col weight (out x in/groups*kh*kw) factored as A B.

    Stage 1 convolves with the r filters B (r x in/groups x kh x kw, original stride/padding/dilation), the same
    r filters in every group; stage 2 is a grouped 1x1 conv with A (out x r) mapping each group's r channels to
    that group's outputs, plus the original bias. r (n + m) numbers in all; equal to the conv when A B = W.
    """

    def __init__(self, conv: nn.Conv2d, rank: Optional[int] = None) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise UsageError(f"lowrank: LowRankConv2d expects torch.nn.Conv2d, got {type(conv).__name__}")
        out_c, in_per_group, kh, kw = conv.weight.shape
        n, m = out_c, in_per_group * kh * kw
        r = _check_rank(rank, n, m, "Conv2d im2col matrix")
        a, b = svd_factors(conv.weight.detach().reshape(n, m), r)
        self.factor_a = nn.Parameter(a)
        self.factor_b = nn.Parameter(b.reshape(r, in_per_group, kh, kw).contiguous())
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        self.in_channels, self.out_channels, self.groups = conv.in_channels, conv.out_channels, conv.groups
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.padding_mode = conv.dilation, conv.padding_mode
        self._reversed_padding_repeated_twice = list(conv._reversed_padding_repeated_twice)

    @property
    def rank(self) -> int:
        return self.factor_a.shape[1]

    @property
    def num_replaced_weights(self) -> int:
        return self.factor_a.shape[0] * self.factor_b[0].numel()

    @property
    def num_factor_parameters(self) -> int:
        return self.factor_a.numel() + self.factor_b.numel()

    def merged_weight(self) -> torch.Tensor:
        """The product A B as a conv weight (out x in/groups x kh x kw)."""
        return torch.einsum("or,rchw->ochw", self.factor_a, self.factor_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        filters = self.factor_b if self.groups == 1 else self.factor_b.repeat(self.groups, 1, 1, 1)
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        h = F.conv2d(x, filters, None, self.stride, padding, self.dilation, self.groups)
        return F.conv2d(h, self.factor_a[:, :, None, None], self.bias, 1, 0, 1, self.groups)

    def to_dense_module(self) -> nn.Conv2d:
        """An ordinary ``nn.Conv2d`` (same hyper-parameters) with weight A B."""
        weight = self.merged_weight().detach()
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, self.bias is not None, self.padding_mode,
                         device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias.detach())
        return conv

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, rank={self.rank}")


LOWRANK_TYPES = (LowRankLinear, LowRankFusedLinear, LowRankConv2d)


def _factorize(module: nn.Module, splits: int, rank: Optional[int]) -> nn.Module:
    if splits > 1:
        return LowRankFusedLinear.from_module(module, splits, rank)
    if isinstance(module, nn.Conv2d):
        return LowRankConv2d(module, rank)
    return LowRankLinear.from_module(module, rank)


def apply_lowrank(model: nn.Module, config, rank: Optional[int] = None) -> list[dict[str, Any]]:
    """Replace every module ``config`` selects (``resolve_targets``) by SVD-initialised factors, in place.

    Returns one record per module: name, block, rank(s), replaced_weights (n*m), factor_parameters (r(n+m)).
    """
    targets = resolve_targets(model, config)
    if not targets:
        raise UsageError("lowrank: the configuration selects no module to factor")
    records = []
    for target in targets:
        new = _factorize(model.get_submodule(target.name), target.splits, rank)
        set_submodule(model, target.name, new)
        parts = list(new.parts) if isinstance(new, LowRankFusedLinear) else [new]
        records.append({"name": target.name, "block": target.block, "ranks": [p.rank for p in parts],
                        "num_matrices": len(parts), "replaced_weights": new.num_replaced_weights,
                        "factor_parameters": new.num_factor_parameters})
    return records


def lowrank_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every factor module in ``model`` (fused slices not listed separately)."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, LOWRANK_TYPES) and not any(name.startswith(f + ".") for f, _ in out):
            out.append((name, module))
    return out


def merge_lowrank(model: nn.Module) -> nn.Module:
    """Turn every factor module back into a plain Linear/Conv1D/Conv2d with W = A B, in place; returns ``model``."""
    for name, module in lowrank_modules(model):
        set_submodule(model, name, module.to_dense_module())
    return model
