"""``IsoGaussLayer``: what every Gaussian layer kind shares — statistics, draws, and the distribution step.

A layer kind (linear, fused linear parts, convolution) only says how its (n, m) weight matrix is applied
to an input (:meth:`IsoGaussLayer._apply_weight`) and how it is made from / turned back into a dense
module. Everything else lives here:

* the four fp32 statistics buffers (``row_mean``/``row_std`` of length n, ``col_mean``/``col_std`` of
  length m), a noise seed and a draw counter (all saved in checkpoints);
* drawing W from Eq. (2) with seeded noise from the layer's noise generator — per training step, per
  evaluation forward, or one fixed draw (``noise="seeded"``) — in :class:`~isogauss_hf.layers.draws.DrawsMixin`;
* the distribution step after each optimizer step, chosen from
  :data:`isogauss_hf.layers.updates.DISTRIBUTION_UPDATES` by the layer's (rule, noise); with ``backprop``
  the statistics are ``nn.Parameter`` s instead (same names in the state dict) and the optimizer trains
  them through :mod:`isogauss_hf.layers.reparam`;
* inference tile by tile: outside training the draw is rebuilt a tile of output rows at a time and never
  kept.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, Optional

import torch
from torch import nn

from ..functional import RowColStats, standardize_input
from ..settings import DEFAULT_NOISE_GENERATOR, LayerOptions, check_rule
from .draws import STREAM_EVAL, STREAM_FIXED, STREAM_TRAIN, DrawsMixin
from .reparam import canonicalize_stds
from .updates import distribution_update

__all__ = ["IsoGaussLayer", "STREAM_TRAIN", "STREAM_EVAL", "STREAM_FIXED"]


class IsoGaussLayer(DrawsMixin, nn.Module):
    """Base class of the Gaussian layer kinds: an (n, m) weight matrix stored as row/column statistics.

    Contract (every kind):
      * ``row_mean``/``row_std`` (length n = output features) and ``col_mean``/``col_std`` (length m) are
        fp32 whatever the module dtype — buffers, or parameters under ``rule="backprop"`` — and stds are
        never negative; ``bias`` (length n) is an ordinary trained parameter;
      * in training mode each forward samples W (``last_weight``, a leaf tensor: after ``backward()``
        ``last_weight.grad`` is dL/dW); with ``hold_draw=True`` the draw is kept until the next
        :meth:`distribution_step`, so all micro-batches of one optimizer step share it;
      * ``noise="resample"`` draws fresh noise each time; ``noise="seeded"`` always uses draw 0 of the
        layer's seed, so forward is deterministic and reproducible from a checkpoint; the numbers come from
        ``noise_generator`` (:mod:`isogauss_hf.noise`), the same on every device for the portable one;
      * outside training no (n, m) tensor is kept after a forward (unless ``cache_eval_weight``);
      * no method touches the global RNG.

    Subclasses set :attr:`KIND` and implement ``_apply_weight(x, weight, bias)``, ``_output_dim`` and
    ``to_dense_module``.
    """

    STAT_NAMES = ("row_mean", "row_std", "col_mean", "col_std")
    #: Minimum std kept after a distribution step (std is never negative).
    DEFAULT_STD_FLOOR = 0.0
    #: Name of the layer kind (records in checkpoints name it as ``source``).
    KIND = "matrix"
    #: Dimension of the output that holds the n output features (-1 for linear, 1 for convolution).
    _output_dim = -1

    def __init__(self, rows: int, cols: int, bias: bool = True, *, config: Any = None, rule: Optional[str] = None,
                 noise: Optional[str] = None, seed: int = 0, standardize: Optional[bool] = None,
                 std_floor: Optional[float] = None, noise_generator: Optional[str] = None, device=None,
                 dtype=None) -> None:
        super().__init__()
        options = LayerOptions.build(config, rule=rule, noise=noise, standardize=standardize, std_floor=std_floor,
                                     noise_generator=noise_generator)
        self._rows, self._cols = int(rows), int(cols)
        self.rule = options.rule
        self.noise = options.noise
        self.standardize = options.standardize
        self.std_floor = options.std_floor
        self.noise_generator = options.noise_generator
        self._update = distribution_update(self.rule, self.noise)
        f32 = dict(device=device, dtype=torch.float32)
        for name, size in zip(self.STAT_NAMES, (self._rows, self._rows, self._cols, self._cols)):
            self.register_buffer(name, torch.zeros(size, **f32))
        self.register_buffer("noise_seed", torch.tensor(int(seed), dtype=torch.int64, device=device))
        self.register_buffer("draw_counter", torch.tensor(0, dtype=torch.int64, device=device))
        if bias:
            self.bias = nn.Parameter(torch.zeros(self._rows, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.hold_draw = False
        self.last_weight: Optional[torch.Tensor] = None
        self.skipped_steps = 0
        self._seed = int(seed)
        self._draw_count = 0
        self._eval_count = 0
        self._draw_override: Optional[tuple[str, int]] = None
        self._cache: Optional[tuple[tuple[str, int], tuple, torch.Tensor]] = None  # cache_eval_weight only
        self._warned_nonfinite = False
        # Training draws are written into one reused buffer (a fresh multi-megabyte CPU tensor costs page
        # faults every step); it is reused only once no tensor handed out from it is still alive.
        self._draw_buffer: Optional[torch.Tensor] = None
        self._draw_handle: Optional[weakref.ref] = None
        self._eval_tile_rows: Optional[int] = None
        self._held_key: Optional[tuple[str, int]] = None  # the noise key pinned by hold_draw (backprop rule)
        #: Qualified module name used in warnings (set by the callback / the model wrapper); None = unnamed.
        self.qualified_name: Optional[str] = None
        self.register_load_state_dict_post_hook(IsoGaussLayer._after_load)
        self.register_state_dict_pre_hook(IsoGaussLayer._before_state_dict)
        self._place_statistics()

    # ------------------------------------------------------------------ state
    @property
    def matrix_shape(self) -> tuple[int, int]:
        """(n, m): rows = output features, columns = input features of the Gaussian matrix."""
        return self._rows, self._cols

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def statistics(self) -> RowColStats:
        return RowColStats(self.row_mean, self.row_std, self.col_mean, self.col_std)

    def set_statistics(self, stats: RowColStats) -> None:
        """Copy new statistics into the fp32 tensors and invalidate the current draw."""
        with torch.no_grad():
            for name, value in zip(self.STAT_NAMES, stats):
                getattr(self, name).copy_(value.detach().to(torch.float32))
        self._cache = None

    @property
    def learns_statistics(self) -> bool:
        """Whether training changes the statistics (GDU/WDU steps or the optimizer); False for ``frozen``."""
        return self._update.learns

    def set_rule(self, rule: str) -> None:
        """Change how the statistics learn (the table entry follows; statistics become parameters for
        ``backprop`` and buffers otherwise, keeping their values and state-dict names)."""
        self.rule = check_rule(rule)
        self._update = distribution_update(self.rule, self.noise)
        self._place_statistics()

    def _place_statistics(self) -> None:
        """Statistics are ``nn.Parameter`` s when the optimizer trains them (``backprop``), buffers otherwise."""
        trainable = self._update.trains_statistics
        for name in self.STAT_NAMES:
            current = self._parameters.get(name) if name in self._parameters else self._buffers.get(name)
            if (name in self._parameters) == trainable:
                continue
            value = current.detach().clone()
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
            if trainable:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        if trainable:
            canonicalize_stds(self)
        self._cache = None

    @staticmethod
    def _before_state_dict(module: "IsoGaussLayer", prefix, keep_vars) -> None:
        if module._update.trains_statistics:
            canonicalize_stds(module)  # saved stds are never negative (see isogauss_hf.layers.reparam)
    @staticmethod
    def _after_load(module: "IsoGaussLayer", incompatible_keys) -> None:
        module._seed = int(module.noise_seed)
        module._draw_count = int(module.draw_counter)
        module._cache = None
        module.last_weight = None

    def _apply(self, fn, recurse=True):
        # Statistics stay fp32 through .half()/.to(dtype): only the device of `fn` is applied to them.
        store = self._parameters if self._update.trains_statistics else self._buffers
        stats = {name: store.pop(name) for name in self.STAT_NAMES}
        try:
            super()._apply(fn, recurse)
        finally:
            for name, t in stats.items():
                probe = fn(torch.empty(0, dtype=torch.float32, device=t.device))
                if isinstance(t, nn.Parameter):  # keep the Parameter object (an optimizer may hold it)
                    t.data = t.data.to(device=probe.device, dtype=torch.float32)
                    store[name] = t
                else:
                    store[name] = t.to(device=probe.device, dtype=torch.float32)
        self._cache = None
        return self

    def _options_repr(self) -> str:
        generator = "" if self.noise_generator == DEFAULT_NOISE_GENERATOR else f", noise_generator={self.noise_generator!r}"
        return f"rule={self.rule!r}, noise={self.noise!r}, seed={self._seed}, standardize={self.standardize}{generator}"

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        return standardize_input(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            x = self._standardize(x)
        if self._update.trains_statistics:
            canonicalize_stds(self)
        if not (self.training and torch.is_grad_enabled()):
            return self._eval_forward(x)
        self._cache = None
        weight, bias = self._cast(self._training_weight(), x)
        return self._apply_weight(x, weight, bias)

    # ------------------------------------------------------------------ learning
    def reset_draw(self) -> None:
        """Forget the current training draw and its gradient (the next forward draws anew)."""
        self.last_weight = None
        self._held_key = None

    def distribution_step(self, rule: Optional[str] = None, lr: Optional[float] = None) -> bool:
        """Update the statistics from ``last_weight`` and its gradient by the layer's rule (or ``rule``).

        Returns True when the statistics changed; False when there was nothing to apply (no draw or no
        gradient, or a rule that does not update) or the update was not finite (the step is then skipped,
        counted in ``skipped_steps`` and warned about once). The draw is released either way.
        """
        if lr is None:
            raise TypeError("distribution_step needs the learning rate: distribution_step(lr=...)")
        update = self._update if rule is None or rule == self.rule else distribution_update(rule, self.noise)
        weight, self.last_weight, self._held_key = self.last_weight, None, None
        if update.apply is None or weight is None or weight.grad is None:
            return False
        new = update(self.statistics, weight, weight.grad, float(lr))
        if not all(bool(torch.isfinite(t).all()) for t in new):
            self._skip_nonfinite()
            return False
        if self.std_floor > 0:
            new = RowColStats(new.row_mean, new.row_std.clamp_min(self.std_floor), new.col_mean,
                              new.col_std.clamp_min(self.std_floor))
        self.set_statistics(new)
        return True

    def _skip_nonfinite(self) -> None:
        self.skipped_steps += 1
        if not self._warned_nonfinite:
            self._warned_nonfinite = True
            n, m = self.matrix_shape
            label = self.qualified_name or f"{type(self).__name__}({n}x{m}, seed={self._seed})"
            warnings.warn(f"{label}: non-finite gradient or statistic; distribution step skipped (further skips are "
                          f"counted silently)", RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ export and accounting
    def dense_weight(self, seed: Optional[int] = None) -> torch.Tensor:
        """The seeded draw (stream 'fixed', index 0) as an (n, m) fp32 matrix.

        ``seed`` replaces the layer's own seed for this draw (a different, equally valid draw).
        """
        if seed is None:
            return self.sample(STREAM_FIXED, 0)
        saved = self._seed
        try:
            self._seed = int(seed)
            return self.sample(STREAM_FIXED, 0)
        finally:
            self._seed = saved

    def to_dense_module(self, seed: Optional[int] = None) -> nn.Module:
        raise NotImplementedError

    def _refuse_standardized_export(self) -> None:
        if self.standardize:
            raise ValueError("a layer with standardize=True has no dense equivalent (it normalizes its input); "
                             "export with standardize=False")

    @property
    def num_replaced_weights(self) -> int:
        return self._rows * self._cols

    @property
    def num_gaussian_parameters(self) -> int:
        return 2 * (self._rows + self._cols)
