"""Drawing a Gaussian layer's weight: noise streams, per-step and per-forward draws, caches, low memory.

:class:`DrawsMixin` holds the drawing half of :class:`~isogauss_hf.layers.base.IsoGaussLayer` (which owns
the state it reads: statistics, seed, counters, caches). A draw is identified by (layer seed, stream,
index) — never by global RNG state:

* ``train`` stream, index = the draw counter: a resample layer's draw of a training step (the callback
  sets the index to the global step, so ranks and resumed runs agree);
* ``eval`` stream: a resample layer's draw per evaluation forward outside a sampling scope;
* ``fixed`` stream, index 0: a seeded layer's one draw (also what ``export_dense`` writes);
* ``scope`` stream (:mod:`isogauss_hf.sampling`): the draw pinned for one evaluation sample.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch

from .. import _runtime
from ..functional import eq2_distribution, sample_weight
from ..noise import NOISE_BLOCK_ROWS, derive_seed, standard_normal_noise
from .reparam import reparam_draw

__all__ = ["DrawsMixin", "STREAM_TRAIN", "STREAM_EVAL", "STREAM_FIXED"]

STREAM_TRAIN = "train"  # resample mode, training: index = the layer's draw counter
STREAM_EVAL = "eval"  # resample mode, evaluation
STREAM_FIXED = "fixed"  # seeded mode: index 0 is "the" draw


class DrawsMixin:
    """Weight draws of an (n, m) Gaussian matrix (see the module docstring); mixed into ``IsoGaussLayer``."""

    #: Seeded layers keep their fixed standard-normal noise (one fp32 (n, m) tensor, the size of a dense
    #: weight) while training instead of regenerating it every step; released in eval mode. Set False on a
    #: layer (or the class) to trade that memory for one noise generation per step.
    cache_fixed_noise = True

    # ------------------------------------------------------------------ distributions and draws
    def weight_distribution(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element (mean, var), each (n, m), by Eq. (2)."""
        return eq2_distribution(*self.statistics)

    def draw_seed(self, stream: str, index: int) -> int:
        """The seed of draw ``index`` in noise ``stream`` of this layer."""
        return derive_seed(self._seed, stream, int(index))

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = self._generators[device] = torch.Generator(device=device)
        return gen

    def sample(self, stream: str = STREAM_FIXED, index: int = 0, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Draw a weight (n, m) in fp32 from the current statistics, without autograd history.

        ``out`` (fp32, (n, m), on the layer's device) receives the draw instead of a new tensor. The values
        depend only on the statistics, the seed and (stream, index).
        """
        with torch.no_grad():
            device = self.row_mean.device
            shape = self.matrix_shape
            if out is not None and (tuple(out.shape) != shape or out.dtype != torch.float32 or out.device != device):
                raise ValueError(f"out must be an fp32 tensor of shape {shape} on {device}, got "
                                 f"{out.dtype} {tuple(out.shape)} on {out.device}")
            noise = standard_normal_noise(shape, self.draw_seed(stream, index), generator=self._generator(device),
                                          device=device, out=out)
            return _runtime.run_kernel(sample_weight, *self.statistics, noise, like=noise, scratch_slots=(3,))

    def sample_rows(self, row_start: int, row_end: int, stream: str = STREAM_FIXED, index: int = 0) -> torch.Tensor:
        """Rows ``row_start:row_end`` of :meth:`sample` for the same key, computed alone."""
        with torch.no_grad():
            device = self.row_mean.device
            noise = standard_normal_noise((row_end - row_start, self._cols), self.draw_seed(stream, index),
                                          generator=self._generator(device), device=device, row_start=row_start)
            s = self.statistics
            return _runtime.run_kernel(sample_weight, s.row_mean[row_start:row_end], s.row_std[row_start:row_end],
                                       s.col_mean, s.col_std, noise, self._rows, like=noise)

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

    def _training_noise(self, key: tuple[str, int]) -> Optional[torch.Tensor]:
        """The seeded layer's fixed noise, generated once and kept while training (:attr:`cache_fixed_noise`);
        None for a resample draw (fresh noise every step)."""
        if key != (STREAM_FIXED, 0) or not self.cache_fixed_noise:
            return None
        device = self.row_mean.device
        cached = self._noise_cache
        if cached is None or cached[0] != (self._seed, device):
            noise = standard_normal_noise(self.matrix_shape, self.draw_seed(*key), generator=self._generator(device),
                                          device=device)
            cached = self._noise_cache = ((self._seed, device), noise)
        return cached[1]

    def _training_weight(self) -> torch.Tensor:
        if self._update.trains_statistics:  # the optimizer trains the statistics through the draw
            key = self._training_key()
            noise = self._training_noise(key)
            if noise is None:
                device = self.row_mean.device
                noise = standard_normal_noise(self.matrix_shape, self.draw_seed(*key),
                                              generator=self._generator(device), device=device)
            self.last_weight = reparam_draw(self.statistics, noise)
            return self.last_weight
        if self.hold_draw and self.last_weight is not None:
            return self.last_weight
        key = self._training_key()
        noise = self._training_noise(key)
        out = self._reusable_draw_buffer()
        if noise is not None:  # the cached fixed noise is kept: the draw goes into its own buffer
            if out is None:
                out = torch.empty(self.matrix_shape, device=noise.device, dtype=torch.float32)
            with torch.no_grad():
                weight = _runtime.run_kernel(sample_weight, *self.statistics, noise, like=noise, scratch_slots=(3,),
                                             out=out)
        else:
            weight = self.sample(*key, out=out)
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
            self._noise_cache = None
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

    def _eval_weight(self) -> torch.Tensor:
        key = self._next_eval_key()
        if self._draw_override is None and self.noise != "seeded":
            return self.sample(*key)  # a fresh draw per forward: nothing to cache
        cache = self._cache
        if cache is not None and cache[0] == key and cache[1] == self._stats_version:
            return cache[2]
        weight = self.sample(*key)
        self._cache = (key, self._stats_version, weight)
        return weight

    def clear_cache(self) -> None:
        """Free the cached evaluation draw (kept only while a draw is pinned or seeded)."""
        self._cache = None

    # ------------------------------------------------------------------ low-memory inference
    @property
    def lowmem_block_rows(self) -> Optional[int]:
        """Low-memory inference: ``None`` (default) materializes the whole (n, m) weight per draw.

        A positive multiple of :data:`~isogauss_hf.noise.NOISE_BLOCK_ROWS` makes every forward outside
        training regenerate the draw ``block`` output rows at a time from its seed (:meth:`sample_rows`) and
        compute those output features, so the whole weight never exists. Outputs equal the materialized
        path's up to matmul rounding (the weight rows are bit-for-bit the same). Training ignores it.
        """
        return self._lowmem_block_rows

    @lowmem_block_rows.setter
    def lowmem_block_rows(self, value: Optional[int]) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % NOISE_BLOCK_ROWS
        ):
            raise ValueError(f"lowmem_block_rows={value!r} is not valid; use None or a positive multiple of "
                             f"NOISE_BLOCK_ROWS={NOISE_BLOCK_ROWS} (e.g. {NOISE_BLOCK_ROWS})")
        self._lowmem_block_rows = value
        self._cache = None  # a cached whole draw would defeat the purpose

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

    def _lowmem_forward(self, x: torch.Tensor, key: tuple[str, int]) -> torch.Tensor:
        pieces = []
        for r0 in range(0, self._rows, self._lowmem_block_rows):
            r1 = min(self._rows, r0 + self._lowmem_block_rows)
            weight, bias = self._cast(self.sample_rows(r0, r1, *key), x)
            pieces.append(self._apply_weight(x, weight, None if bias is None else bias[r0:r1]))
            del weight
        return torch.cat(pieces, dim=self._output_dim)

