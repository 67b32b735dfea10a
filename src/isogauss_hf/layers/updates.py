"""Which update a Gaussian layer runs after each optimizer step: a table keyed by (rule, noise).

Every pair of :data:`isogauss_hf.settings.RULES` x :data:`isogauss_hf.settings.NOISE_MODES` has exactly one
entry (checked at import), so a layer never compares rule or noise strings to pick its update:

================  ==========  ===========================================================
rule              noise       update
================  ==========  ===========================================================
``gdu``           any         :func:`~isogauss_hf.functional.gdu_update` (Algorithm 1)
``wdu``           resample    :func:`~isogauss_hf.functional.wdu_update` (Algorithm 2)
``wdu``           seeded      :func:`~isogauss_hf.functional.wdu_update_fixed_draw` (no drift on one draw)
``backprop``      any         none here: the statistics are parameters the optimizer trains through the
                              reparameterised draw (:mod:`isogauss_hf.layers.reparam`)
``frozen``        any         none: the statistics keep their initial fit
================  ==========  ===========================================================

The functions run through :func:`isogauss_hf._runtime.run_kernel` (threads, optional compile, scratch).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .. import _runtime
from .. import functional as F
from ..settings import NOISE_MODES, RULES, check_noise, check_rule

__all__ = ["DistributionUpdate", "DISTRIBUTION_UPDATES", "distribution_update"]


@dataclass(frozen=True)
class DistributionUpdate:
    """One entry of the table: what a layer with this (rule, noise) does with W and dL/dW after a step."""

    name: str  #: a short description (reports and errors)
    apply: Optional[Callable[[F.RowColStats, torch.Tensor, torch.Tensor, float], F.RowColStats]]
    #: whether the training draw W needs dL/dW (a leaf that requires grad); False skips that backward work
    needs_weight_grad: bool = True
    #: the statistics are ``nn.Parameter`` s trained by the optimizer (gradients through Eq. 2)
    trains_statistics: bool = False

    @property
    def learns(self) -> bool:
        """Whether the statistics change during training (by this update or by the optimizer)."""
        return self.apply is not None or self.trains_statistics

    def __call__(self, stats: F.RowColStats, weight: torch.Tensor, grad: torch.Tensor, lr: float) -> F.RowColStats:
        return self.apply(stats, weight, grad, lr)


def _gdu(stats, weight, grad, lr):
    return _runtime.run_kernel(F.gdu_update, stats, weight, grad, lr, like=weight, scratch_slots=(0, 1, 2))


def _wdu(stats, weight, grad, lr):
    return _runtime.run_kernel(F.wdu_update, weight, grad, lr, like=weight, scratch_slots=(0, 1))


def _wdu_fixed(stats, weight, grad, lr):
    return _runtime.run_kernel(F.wdu_update_fixed_draw, stats, weight, grad, lr, like=weight, scratch_slots=(0, 1, 2))


_GDU = DistributionUpdate("GDU (Algorithm 1)", _gdu)

DISTRIBUTION_UPDATES: dict[tuple[str, str], DistributionUpdate] = {
    ("gdu", "resample"): _GDU,
    ("gdu", "seeded"): _GDU,
    ("wdu", "resample"): DistributionUpdate("WDU (Algorithm 2)", _wdu),
    ("wdu", "seeded"): DistributionUpdate("WDU, fixed-draw refit", _wdu_fixed),
    **{("backprop", noise): DistributionUpdate("optimizer through Eq. 2", None, needs_weight_grad=False,
                                               trains_statistics=True) for noise in NOISE_MODES},
    **{("frozen", noise): DistributionUpdate("frozen at the initial fit", None, needs_weight_grad=False)
       for noise in NOISE_MODES},
}

_missing = sorted(set(itertools.product(RULES, NOISE_MODES)) - set(DISTRIBUTION_UPDATES))
if _missing:  # pragma: no cover - a new rule or noise mode without its update
    raise RuntimeError(f"isogauss_hf.layers.updates: no distribution update for {_missing}")


def distribution_update(rule: str, noise: str) -> DistributionUpdate:
    """The table entry for ``(rule, noise)`` (both validated, one-line error otherwise)."""
    return DISTRIBUTION_UPDATES[(check_rule(rule), check_noise(noise))]
