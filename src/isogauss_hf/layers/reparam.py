"""The ``backprop`` rule: the draw W = mean + std * Z of Eq. (2) as a differentiable function of the statistics.

With ``rule="backprop"`` a layer's four statistics are ``nn.Parameter`` s and the model's own optimizer
trains them. Autograd through every temporary of Eq. (2) would keep about ten (n, m) tensors and run as
many passes; :class:`Eq2Reparam` instead saves the noise Z and the sigma matrix of the forward and gets
all four gradients from dL/dW in one elementwise pass and two matrix-vector products
(:func:`isogauss_hf.functional.eq2_statistics_grad`).

Positivity of the std: Eq. (2) depends on each std only through its square, so a std and its negative
describe the same distribution. The layer keeps the stored value canonical — ``|std|``, raised to
``std_floor`` — before every forward and before every ``state_dict`` (:func:`canonicalize_stds`), so
the saved and reported stds are never negative whatever step the optimizer took.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import _runtime
from ..functional import RowColStats, eq2_statistics_grad, eq2_std, eq2_terms

__all__ = ["Eq2Reparam", "reparam_draw", "canonicalize_stds"]


class Eq2Reparam(torch.autograd.Function):
    """``W = mu + sigma * noise`` (Eq. 2) with the gradient of the statistics from dL/dW in few passes."""

    @staticmethod
    def forward(ctx, row_mean, row_std, col_mean, col_std, noise, exact_sqrt):  # noqa: D102 - autograd signature
        terms = eq2_terms(row_mean, row_std, col_mean, col_std)
        with _runtime.aux_threads(noise.device, ("eq2_reparam", tuple(noise.shape))):
            std = eq2_std(row_mean, row_std, col_mean, col_std, exact_sqrt=exact_sqrt)
            weight = torch.mul(noise, std).add_(terms.row_shift[:, None]).add_(terms.col_shift[None, :])
        ctx.save_for_backward(row_mean, row_std, col_mean, col_std, noise, std)
        return weight

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        row_mean, row_std, col_mean, col_std, noise, std = ctx.saved_tensors
        stats = RowColStats(row_mean.detach(), row_std.detach(), col_mean.detach(), col_std.detach())
        with _runtime.aux_threads(grad.device, ("eq2_reparam_grad", tuple(grad.shape))):
            grads = eq2_statistics_grad(stats, noise, std, grad, scratch=_runtime.scratch(4, grad))
        return (*grads, None, None)


def reparam_draw(stats: RowColStats, noise: torch.Tensor, *, exact_sqrt: bool = True) -> torch.Tensor:
    """The training draw of a ``backprop`` layer: differentiable in the four statistics.

    Bit for bit the draw the layer's generator makes from the same noise (``exact_sqrt``: which square root its
    Eq. (2) uses), so the weight trained on is the weight evaluated and exported.
    """
    return Eq2Reparam.apply(*stats, noise, exact_sqrt)


@torch.no_grad()
def canonicalize_stds(layer, floor: Optional[float] = None) -> None:
    """``std <- max(|std|, floor)`` in place for a layer's row and column stds (same distribution, Eq. 2)."""
    floor = layer.std_floor if floor is None else floor
    for name in ("row_std", "col_std"):
        t = getattr(layer, name)
        t.abs_()
        if floor > 0:
            t.clamp_min_(floor)
