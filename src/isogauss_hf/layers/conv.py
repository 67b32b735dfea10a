"""``IsoGaussConv2d``: an ``nn.Conv2d`` whose im2col weight matrix is a Gaussian layer (the paper's Section 4.2).

The im2col view of a 2-D convolution (Vasudevan et al., 2017) unfolds every input patch into a column
of length ``m = in_channels / groups * kh * kw`` and reshapes the filters into a matrix ``W`` of shape
``(n, m)`` with ``n = out_channels``: row ``o`` is filter ``o`` flattened in (channel, kh, kw) order,
exactly ``conv.weight.reshape(n, m)``. The convolution is then ``W @ patches`` at every output position.
That matrix is what this layer stores as row/column statistics and samples by Eq. (2); statistics, draws,
GDU, WDU, the ``backprop`` and ``frozen`` rules, seeded/resample noise and low memory are those of every
Gaussian layer (:class:`~isogauss_hf.layers.base.IsoGaussLayer`), unchanged.

The forward is ``F.conv2d`` with the sampled ``(n, m)`` draw reshaped back to ``(n, in/groups, kh, kw)``.
No unfold is needed: ``F.conv2d`` computes, for every output position, the dot product of each filter
with the input patch under it, which is by definition row ``o`` of ``W`` times the im2col column of that
patch (``reshape`` only re-indexes the same numbers), so both give the same product; the gradient
``dL/dW`` of the draw (``last_weight.grad``, shape (n, m)) is likewise the im2col one.

Grouped and depthwise convolutions: ``W`` is still ONE Gaussian matrix of shape (out, in/groups*kh*kw)
(its rows are the filters of all groups; the columns index the within-group patch), so the column
statistics are shared by the groups. A depthwise 3x3 conv of C channels is a (C, 9) matrix.

Input standardization (Appendix D, ``standardize=True``): each input vector of the im2col product is
standardized, i.e. every patch (per output position and group, padding zeros included) to zero mean and
unit variance. It is computed without unfolding: with the patch mean ``mu`` and variance ``v`` (two
convolutions with a constant kernel), ``W @ (p - mu) / sqrt(v + eps) = (conv(x, W) - mu * rowsum(W)) /
sqrt(v + eps)``. The variance is the one-pass ``E[p^2] - mu^2`` (clamped at 0), so it is less exact than
the linear layer's two-pass one when a patch's mean is large relative to its spread.

Only ``torch.nn.Conv2d`` itself (or a subclass that keeps its forward) is handled; Conv1d, Conv3d,
transposed convolutions and Conv2d subclasses with their own forward are refused with one error naming the
module (:func:`check_supported_conv`).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import row_col_stats
from .base import IsoGaussLayer

__all__ = ["IsoGaussConv2d", "check_supported_conv", "is_supported_conv", "is_conv_module"]

_GEOMETRY = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")
_STANDARDIZE_EPS = 1e-5  # as functional.standardize_input


def is_conv_module(module: nn.Module) -> bool:
    """Any torch convolution (Conv1d/2d/3d, transposed, lazy): what :func:`check_supported_conv` judges."""
    return isinstance(module, nn.modules.conv._ConvNd)


def is_supported_conv(module: nn.Module) -> bool:
    """An initialized ``nn.Conv2d`` whose forward is ``nn.Conv2d``'s (what :class:`IsoGaussConv2d` replaces)."""
    return (isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward
            and type(module)._conv_forward is nn.Conv2d._conv_forward
            and not isinstance(module.weight, nn.parameter.UninitializedParameter))


def check_supported_conv(module: nn.Module, name: str = "") -> None:
    """Raise one ``TypeError`` naming ``module`` (and ``name``) unless :func:`is_supported_conv`."""
    if is_supported_conv(module):
        return
    where = f"{name} " if name else ""
    kind = type(module).__name__
    if isinstance(module, nn.Conv2d) and isinstance(module.weight, nn.parameter.UninitializedParameter):
        raise TypeError(f"{where}is a {kind} that has not been initialized yet; run one forward pass first")
    if isinstance(module, nn.Conv2d):
        raise TypeError(f"{where}is a {kind}, a Conv2d subclass with its own forward; Gaussian convolutions replace "
                        f"plain torch.nn.Conv2d modules only")
    raise TypeError(f"{where}is a {kind}: Gaussian convolutions handle torch.nn.Conv2d only (the im2col matrix of a "
                    f"2-D convolution); Conv1d, Conv3d and transposed convolutions are not supported")


class IsoGaussConv2d(IsoGaussLayer):
    """A 2-D convolution whose im2col weight (out, in/groups*kh*kw) is N(mean_ij, var_ij) from row/column
    statistics (Eq. 2); see the module docstring. Arguments are ``nn.Conv2d``'s plus the Gaussian options
    (``config``, ``rule``, ``noise``, ``seed``, ``standardize``, ``std_floor``) of ``IsoGaussLinear``.
    """

    KIND = "conv2d"
    SOURCES = ("conv2d",)
    _output_dim = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, config: Any = None,
                 rule: Optional[str] = None, noise: Optional[str] = None, seed: int = 0,
                 standardize: Optional[bool] = None, std_floor: Optional[float] = None,
                 noise_generator: Optional[str] = None, device=None, dtype=None) -> None:
        # nn.Conv2d validates and normalizes the geometry (tuples, 'same'/'valid', padding modes); on the meta
        # device it costs nothing.
        proto = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, False,
                          padding_mode, device="meta")
        kh, kw = proto.kernel_size
        super().__init__(proto.out_channels, proto.in_channels // proto.groups * kh * kw, bias, config=config,
                         rule=rule, noise=noise, seed=seed, standardize=standardize, std_floor=std_floor,
                         noise_generator=noise_generator, device=device, dtype=dtype)
        for name in _GEOMETRY:
            setattr(self, name, getattr(proto, name))
        self._reversed_padding_repeated_twice = list(proto._reversed_padding_repeated_twice)
        self.source = "conv2d"
        self._dense_dtype = dtype if dtype is not None else torch.get_default_dtype()

    @classmethod
    def from_conv(cls, module: nn.Module, noise: Optional[str] = None, seed: int = 0,
                  standardize: Optional[bool] = None, *, config: Any = None, rule: Optional[str] = None,
                  std_floor: Optional[float] = None) -> "IsoGaussConv2d":
        """Build from an ``nn.Conv2d``: statistics of its im2col matrix ``weight.reshape(out, -1)``, bias copied."""
        check_supported_conv(module)
        weight = module.weight.detach()
        layer = cls(**{k: getattr(module, k) for k in _GEOMETRY}, bias=module.bias is not None, config=config,
                    rule=rule, noise=noise, seed=seed, standardize=standardize, std_floor=std_floor,
                    device=weight.device, dtype=weight.dtype)
        layer.set_statistics(row_col_stats(weight.reshape(weight.shape[0], -1)))
        if module.bias is not None:
            layer.bias.data.copy_(module.bias.detach())
        return layer

    from_module = from_conv

    def geometry(self) -> dict[str, Any]:
        """The ``nn.Conv2d`` arguments of this layer (JSON-ready: tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(self, k)) for k in _GEOMETRY)}

    @property
    def filter_shape(self) -> tuple[int, int, int, int]:
        """(out, in/groups, kh, kw): the shape a draw is reshaped to."""
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # an unbatched (C, H, W) input, as nn.Conv2d accepts
            return super().forward(x.unsqueeze(0)).squeeze(0)
        return super().forward(x)

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        return x  # per-patch standardization happens inside the product (_conv_rows)

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return self._conv_rows(x, weight, bias, 0)

    def _apply_rows(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], row_start: int):
        """A tile of output channels (inference): its filters convolved alone."""
        return self._conv_rows(x, weight, bias, row_start)

    def _padded(self, x: torch.Tensor):
        if self.padding_mode != "zeros":
            return F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0
        return x, self.padding

    def _conv_rows(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], row_start: int):
        """Output channels ``row_start : row_start + len(weight)`` of the convolution with the (rows, m) ``weight``."""
        x, padding = self._padded(x)
        rows = weight.shape[0]
        filters = weight.reshape(rows, *self.filter_shape[1:])
        fused_bias = None if self.standardize else bias
        per_group = self.out_channels // self.groups
        ipg = self.in_channels // self.groups
        if rows == self.out_channels:  # the whole layer (row_start is 0)
            y = F.conv2d(x, filters, fused_bias, self.stride, padding, self.dilation, self.groups)
        elif self.groups == 1:
            y = F.conv2d(x, filters, fused_bias, self.stride, padding, self.dilation, 1)
        elif row_start % per_group == 0 and rows % per_group == 0:  # whole groups: one grouped conv
            g0, g1 = row_start // per_group, (row_start + rows) // per_group
            y = F.conv2d(x[:, g0 * ipg:g1 * ipg], filters, fused_bias, self.stride, padding, self.dilation, g1 - g0)
        else:  # a block that cuts through groups: one conv per group it touches
            pieces = []
            for g in range(row_start // per_group, (row_start + rows - 1) // per_group + 1):
                a, z = max(row_start, g * per_group) - row_start, min(row_start + rows, (g + 1) * per_group) - row_start
                b = None if fused_bias is None else fused_bias[a:z]
                pieces.append(F.conv2d(x[:, g * ipg:(g + 1) * ipg], filters[a:z], b, self.stride, padding,
                                       self.dilation, 1))
            y = torch.cat(pieces, dim=1)
        if self.standardize:
            y = self._standardized(x, y, weight, padding, row_start)
            if bias is not None:
                y = y + bias.view(1, -1, 1, 1)
        return y

    def _standardized(self, x, y, weight, padding, row_start):
        """``y`` as if every im2col patch had been standardized (Appendix D), from the patch mean and variance."""
        g = self.groups
        ones = torch.full((g, *self.filter_shape[1:]), 1.0 / self._cols, dtype=x.dtype, device=x.device)
        mean = F.conv2d(x, ones, None, self.stride, padding, self.dilation, g)  # (B, g, H', W')
        square = F.conv2d(x * x, ones, None, self.stride, padding, self.dilation, g)
        var = (square - mean * mean).clamp_min(0)
        group_of_row = torch.arange(row_start, row_start + weight.shape[0], device=x.device) // (self.out_channels // g)
        mean, var = mean[:, group_of_row], var[:, group_of_row]
        row_sum = weight.sum(dim=1).to(y.dtype).view(1, -1, 1, 1)
        return (y - mean * row_sum) * torch.rsqrt(var + _STANDARDIZE_EPS)

    # ------------------------------------------------------------------ export and bookkeeping
    def _apply(self, fn, recurse=True):
        probe = fn(torch.empty(0, dtype=self._dense_dtype))
        super()._apply(fn, recurse)
        if probe.is_floating_point():
            self._dense_dtype = probe.dtype  # the dtype an exported nn.Conv2d gets (e.g. after .half())
        return self

    def to_dense_module(self, seed: Optional[int] = None) -> nn.Conv2d:
        """An ordinary ``nn.Conv2d`` (same geometry) holding one seeded draw, reshaped to filters."""
        self._refuse_standardized_export()
        weight = self.dense_weight(seed)
        dtype = self.bias.dtype if self.bias is not None else self._dense_dtype
        conv = nn.Conv2d(**{k: getattr(self, k) for k in _GEOMETRY}, bias=self.bias is not None,
                         device=weight.device, dtype=dtype)
        with torch.no_grad():
            conv.weight.copy_(weight.reshape(self.filter_shape))
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"]
        if self.padding_mode != "zeros" or self.padding not in ((0, 0), "valid"):
            parts.append(f"padding={self.padding!r}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode!r}")
        n, m = self.matrix_shape
        parts.append(f"bias={self.bias is not None}, matrix=({n}, {m}), {self._options_repr()}")
        return ", ".join(parts)
