"""Drawing a Gaussian layer's weight: noise streams, per-step draws, and inference that never holds the weight.

:class:`DrawsMixin` holds the drawing half of :class:`~isogauss_hf.layers.base.IsoGaussLayer` (which owns
the state it reads: statistics, seed, counters). A draw is identified by (layer seed, stream, index) — never
by global RNG state — and its numbers come from the layer's noise generator (:mod:`isogauss_hf.noise`):

* ``train`` stream, index = the draw counter: a resample layer's draw of a training step (the callback
  sets the index to the global step, so ranks and resumed runs agree);
* ``eval`` stream: a resample layer's draw per evaluation forward outside a sampling scope;
* ``fixed`` stream, index 0: a seeded layer's one draw (also what ``export_dense`` writes);
* ``scope`` stream (:mod:`isogauss_hf.sampling`): the draw pinned for one evaluation sample.

Inference (any forward outside training) computes ``y = x W^T`` tile by tile: each tile of output rows is
drawn alone (noise + Eq. 2 in one kernel) and multiplied at once, so the layer holds its statistics and one
tile, and keeps no (n, m) tensor after the forward. Tiles hold at most :data:`_runtime.EVAL_TILE_ELEMENTS`
weights (a whole BERT-base matrix is one tile); ``cache_eval_weight`` keeps the whole draw instead.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch

from .. import _runtime
from ..functional import eq2_distribution
from ..noise import derive_seed, get_noise_generator
from .reparam import reparam_draw

__all__ = ["DrawsMixin", "STREAM_TRAIN", "STREAM_EVAL", "STREAM_FIXED"]

STREAM_TRAIN = "train"  # resample mode, training: index = the layer's draw counter
STREAM_EVAL = "eval"  # resample mode, evaluation
STREAM_FIXED = "fixed"  # seeded mode: index 0 is "the" draw
_TILE_SLOT = 5  # workspace slot of the inference tile (see _runtime.scratch)


class DrawsMixin:
    """Weight draws of an (n, m) Gaussian matrix (see the module docstring); mixed into ``IsoGaussLayer``."""

    #: Keep the whole evaluation draw between forwards (keyed on the draw and on the statistics' tensor
    #: versions): faster repeated inference, at the memory of a dense weight. Off by default; set on a layer,
    #: or on every layer with ``IsoGaussModel.disable_low_memory()``.
    cache_eval_weight = False

    # ------------------------------------------------------------------ distributions and draws
    @property
    def generator(self):
        """The :class:`~isogauss_hf.noise.NoiseGenerator` this layer's draws come from."""
        return get_noise_generator(self._noise_generator)

    @property
    def noise_generator(self) -> str:
        """Name of the generator of this layer's noise (part of the model: a checkpoint records it)."""
        return self._noise_generator

    @noise_generator.setter
    def noise_generator(self, name: str) -> None:
        self._noise_generator = get_noise_generator(name).name
        self._cache = None

    def weight_distribution(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element (mean, var), each (n, m), by Eq. (2)."""
        return eq2_distribution(*self.statistics)

    def draw_seed(self, stream: str, index: int) -> int:
        """The seed of draw ``index`` in noise ``stream`` of this layer."""
        return derive_seed(self._seed, stream, int(index))

    def sample(self, stream: str = STREAM_FIXED, index: int = 0, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Draw a weight (n, m) in fp32 from the current statistics, without autograd history.

        ``out`` (fp32, (n, m), on the layer's device) receives the draw instead of a new tensor. The values
        depend only on the statistics, the seed, (stream, index) and the noise generator.
        """
        shape = self.matrix_shape
        if out is not None and (tuple(out.shape) != shape or out.dtype != torch.float32
                                or out.device != self.row_mean.device):
            raise ValueError(f"out must be an fp32 tensor of shape {shape} on {self.row_mean.device}, got "
                             f"{out.dtype} {tuple(out.shape)} on {out.device}")
        return self.sample_rows(0, self._rows, stream, index, out=out)

    def sample_rows(self, row_start: int, row_end: int, stream: str = STREAM_FIXED, index: int = 0, *,
                    out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rows ``row_start:row_end`` of :meth:`sample` for the same key, computed alone (bit for bit the same)."""
        generator = self.generator
        generator.check_rows(row_start)
        return generator.draw_rows(self.statistics, self.draw_seed(stream, index), row_start, row_end, out=out)

    def current_draw_key(self) -> tuple[str, int]:
        """The key the next evaluation forward would use (without advancing any counter)."""
        if self._draw_override is not None:
            return self._draw_override
        if self.noise == "seeded":
            return (STREAM_FIXED, 0)
        return (STREAM_EVAL, self._eval_count)

    def set_draw_index(self, index: int) -> None:
        """Make the next training draw (resample mode) use index ``index`` of the 'train' stream.

        The Trainer callback sets it to the global step, so the draw of a step is keyed by (base seed, layer
        name, global step): the same on every rank and after a resume, whatever happened before.
        """
        self._draw_count = int(index)
        self.draw_counter.fill_(self._draw_count)

    def _training_key(self) -> tuple[str, int]:
        """The noise key of this training forward (advances the draw counter of a resample layer)."""
        if self.noise == "seeded":
            return (STREAM_FIXED, 0)
        if self.hold_draw and self._held_key is not None:
            return self._held_key
        key = (STREAM_TRAIN, self._draw_count)
        self._draw_count += 1
        self.draw_counter.fill_(self._draw_count)
        if self.hold_draw:
            self._held_key = key
        return key

    def _training_weight(self) -> torch.Tensor:
        """The draw of this training step: regenerated from the seed each time (nothing is cached)."""
        if self._update.trains_statistics:  # the optimizer trains the statistics through the draw
            key = self._training_key()
            noise = self.generator.normal(self.draw_seed(*key), *self.matrix_shape, device=self.row_mean.device)
            self.last_weight = reparam_draw(self.statistics, noise, exact_sqrt=self.generator.exact_sqrt)
            return self.last_weight
        if self.hold_draw and self.last_weight is not None:
            return self.last_weight
        key = self._training_key()
        weight = self.sample(*key, out=self._reusable_draw_buffer())
        if self._update.needs_weight_grad:
            weight.requires_grad_(True)
        if weight.device.type == "cpu":
            self._draw_buffer = weight.detach()  # shares storage and version counter with the draw
            self._draw_handle = weakref.ref(weight)
        self.last_weight = weight
        return weight

    def _reusable_draw_buffer(self) -> Optional[torch.Tensor]:
        """The previous training draw's storage, if nothing outside the layer can still see it."""
        buf, handle = self._draw_buffer, self._draw_handle
        self._draw_buffer = self._draw_handle = None
        if buf is None or handle is None or handle() is not None or buf.device != self.row_mean.device:
            return None  # someone still holds the old draw (or it never existed): draw into a new tensor
        return buf.detach()  # a new tensor (no grad, no history) over the same storage

    def __getstate__(self):
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["_draw_buffer"] = state["_draw_handle"] = None  # transient (a weakref does not pickle)
        return state

    def train(self, mode: bool = True):
        if not mode:  # eval needs no training buffers
            self._draw_buffer = self._draw_handle = None
        return super().train(mode)

    def _next_eval_key(self) -> tuple[str, int]:
        """The key of this evaluation forward (advances the eval counter of an unpinned resample layer)."""
        key = self._draw_override
        if key is None:
            if self.noise == "seeded":
                return (STREAM_FIXED, 0)
            key = (STREAM_EVAL, self._eval_count)
            self._eval_count += 1
        return key

    # ------------------------------------------------------------------ inference
    def _statistics_version(self) -> tuple:
        """Changes whenever a statistic changes (in place, by an optimizer, a load or ``.to()``)."""
        return tuple((t.data_ptr(), t._version, t.device) for t in self.statistics) + (self._seed,
                                                                                         self.noise_generator)

    def _cached_eval_weight(self, key: tuple[str, int]) -> torch.Tensor:
        version = self._statistics_version()
        cache = self._cache
        if cache is not None and cache[0] == key and cache[1] == version:
            return cache[2]
        weight = self.sample(*key)
        self._cache = (key, version, weight)
        return weight

    def clear_cache(self) -> None:
        """Free the kept evaluation draw (only :attr:`cache_eval_weight` keeps one)."""
        self._cache = None

    @property
    def eval_tile_rows(self) -> Optional[int]:
        """Output rows per tile of the inference path; ``None`` (default): as many as fit in
        :data:`isogauss_hf._runtime.EVAL_TILE_ELEMENTS` weights (rounded to the generator's row alignment)."""
        return self._eval_tile_rows

    @eval_tile_rows.setter
    def eval_tile_rows(self, value: Optional[int]) -> None:
        align = self.generator.row_align
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % align):
            raise ValueError(f"eval_tile_rows={value!r} is not valid; use None (automatic) or a positive integer "
                             f"(a multiple of {align} for the {self.noise_generator} generator)")
        self._eval_tile_rows = value

    def _tile_rows(self, device: torch.device) -> int:
        if self._eval_tile_rows is not None:
            return self._eval_tile_rows
        align = max(4, self.generator.row_align)
        rows = _runtime.eval_tile_elements(device) // max(1, self._cols)
        return max(align, rows // align * align)

    def _eval_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``y = x W^T`` (or the layer's product) outside training, without keeping the weight."""
        key = self._next_eval_key()
        if self.cache_eval_weight:
            weight, bias = self._cast(self._cached_eval_weight(key), x)
            return self._apply_weight(x, weight, bias)
        self._cache = None
        tile = self._tile_rows(x.device)
        reuse = not torch.is_grad_enabled() and x.device.type == "cpu"  # autograd would keep the tile
        pieces = []
        for r0 in range(0, self._rows, tile):
            r1 = min(self._rows, r0 + tile)
            out = None
            if reuse:
                out = _runtime.workspace(_TILE_SLOT, (r1 - r0, self._cols))
            weight, bias = self._cast(self.sample_rows(r0, r1, *key, out=out), x)
            pieces.append(self._apply_rows(x, weight, None if bias is None else bias[r0:r1], r0))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=self._output_dim)

    def _cast(self, weight: torch.Tensor, x: torch.Tensor):
        """The weight and bias in the input's dtype (under autocast, as they are)."""
        bias = self.bias
        if torch.is_autocast_enabled(x.device.type):
            return weight, bias
        if weight.dtype != x.dtype:
            weight = weight.to(x.dtype)
        if bias is not None and bias.dtype != weight.dtype:
            bias = bias.to(weight.dtype)
        return weight, bias

    def _apply_rows(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], row_start: int):
        """Output features ``row_start : row_start + len(weight)`` from those rows of the weight."""
        return self._apply_weight(x, weight, bias)
