"""Gaussian fully connected layers: a weight matrix stored as row and column statistics.

:class:`IsoGaussLinear` replaces an ``nn.Linear`` (or GPT-2's transposed ``Conv1D``) by four fp32
vectors — the mean and std of every row (output feature) and every column (input feature) — and
samples its weight from Eq. (2) at run time. :class:`IsoGaussFusedLinear` holds several of them side
by side for fused projections (GPT-2's ``c_attn`` = query|key|value).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .functional import (
    NOISE_BLOCK_ROWS,
    RowColStats,
    _scratch,
    derive_seed,
    eq2_distribution,
    gdu_update,
    row_col_stats,
    sample_weight,
    standard_normal_noise,
    standardize_input,
    wdu_update,
    wdu_update_fixed_draw,
)

__all__ = ["IsoGaussLinear", "IsoGaussFusedLinear", "is_conv1d", "NOISE_MODES", "RULES"]

NOISE_MODES = ("resample", "seeded")
RULES = ("gdu", "wdu")

# Noise streams: a draw is identified by (layer seed, stream, index), never by global RNG state.
STREAM_TRAIN = "train"  # resample mode, training: index = the layer's draw counter
STREAM_EVAL = "eval"  # resample mode, evaluation
STREAM_FIXED = "fixed"  # seeded mode: index 0 is "the" draw; eval sample k uses index k


def is_conv1d(module: nn.Module) -> bool:
    """True for transformers' ``Conv1D`` (GPT-2 style: weight stored as (in, out))."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        return False
    return isinstance(module, Conv1D)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Validate ``value`` against ``choices`` with a one-line error suggesting the closest one."""
    if value in choices:
        return value
    import difflib

    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}.{hint}")


class IsoGaussLinear(nn.Module):
    """A fully connected layer whose weight is N(mean_ij, var_ij) from row/column statistics (Eq. 2).

    Contract:
      * buffers ``row_mean``/``row_std`` (length ``out_features``) and ``col_mean``/``col_std``
        (length ``in_features``) are fp32 whatever the module dtype; rows are always output features;
      * ``bias`` is an ordinary trained parameter;
      * in training mode each forward samples W (``last_weight``, a leaf tensor: after ``backward()``
        ``last_weight.grad`` is dL/dW); with ``hold_draw=True`` the draw is kept until the next
        :meth:`distribution_step`, so all micro-batches of one optimizer step share it;
      * ``noise="resample"`` draws fresh noise each time; ``noise="seeded"`` always uses draw 0 of the
        layer's seed, so forward is deterministic and reproducible from a checkpoint;
      * no method touches the global RNG: noise comes from explicit generators seeded by
        :func:`~isogauss_hf.functional.derive_seed` (layer seed, stream, index, row block).
    """

    STAT_NAMES = ("row_mean", "row_std", "col_mean", "col_std")
    #: Minimum std kept after a distribution step (documented floor; std is never negative).
    DEFAULT_STD_FLOOR = 0.0

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        noise: str = "resample",
        seed: int = 0,
        standardize: bool = False,
        source: str = "linear",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.noise = check_choice("noise", noise, NOISE_MODES)
        self.standardize = bool(standardize)
        self.source = check_choice("source", source, ("linear", "conv1d"))
        self.std_floor = self.DEFAULT_STD_FLOOR
        f32 = dict(device=device, dtype=torch.float32)
        self.register_buffer("row_mean", torch.zeros(out_features, **f32))
        self.register_buffer("row_std", torch.zeros(out_features, **f32))
        self.register_buffer("col_mean", torch.zeros(in_features, **f32))
        self.register_buffer("col_std", torch.zeros(in_features, **f32))
        self.register_buffer("noise_seed", torch.tensor(int(seed), dtype=torch.int64, device=device))
        self.register_buffer("draw_counter", torch.tensor(0, dtype=torch.int64, device=device))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.hold_draw = False
        self.last_weight: Optional[torch.Tensor] = None
        self.skipped_steps = 0
        self._seed = int(seed)
        self._draw_count = 0
        self._eval_count = 0
        self._draw_override: Optional[tuple[str, int]] = None
        self._cache: Optional[tuple[tuple[str, int], int, torch.Tensor]] = None
        self._stats_version = 0
        self._generators: dict[torch.device, torch.Generator] = {}
        self._warned_nonfinite = False
        # Training draws are written into one reused buffer (a fresh multi-megabyte CPU tensor costs
        # page faults every step); it is reused only once no tensor handed out from it is still alive.
        self._draw_buffer: Optional[torch.Tensor] = None
        self._draw_handle: Optional[weakref.ref] = None
        self._lowmem_block_rows: Optional[int] = None
        #: Qualified module name used in warnings (set by IsoGaussCallback / the model wrapper); None = unnamed.
        self.qualified_name: Optional[str] = None
        self.register_load_state_dict_post_hook(IsoGaussLinear._after_load)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_linear(
        cls, module: nn.Module, noise: str = "resample", seed: int = 0, standardize: bool = False
    ) -> "IsoGaussLinear":
        """Build from an ``nn.Linear`` or a transformers ``Conv1D``; statistics of its weight.

        The initial statistics are the mean and std of each row and column of the pretrained weight
        (the INITIAL STATE of Algorithms 1-2). The bias is copied; the dense weight is not kept.
        """
        if is_conv1d(module):
            weight, source = module.weight.detach().t(), "conv1d"  # Conv1D stores (in, out)
        elif isinstance(module, nn.Linear):
            weight, source = module.weight.detach(), "linear"
        else:
            raise TypeError(
                f"IsoGaussLinear.from_linear expects torch.nn.Linear or transformers Conv1D, "
                f"got {type(module).__name__}"
            )
        out_f, in_f = weight.shape
        bias = getattr(module, "bias", None)
        layer = cls(
            in_f,
            out_f,
            bias=bias is not None,
            noise=noise,
            seed=seed,
            standardize=standardize,
            source=source,
            device=weight.device,
            dtype=weight.dtype,
        )
        layer.set_statistics(row_col_stats(weight))
        if bias is not None:
            layer.bias.data.copy_(bias.detach())
        return layer

    # ------------------------------------------------------------------ state
    @property
    def seed(self) -> int:
        return self._seed

    @property
    def statistics(self) -> RowColStats:
        return RowColStats(self.row_mean, self.row_std, self.col_mean, self.col_std)

    def set_statistics(self, stats: RowColStats) -> None:
        """Copy new statistics into the fp32 buffers and invalidate the current draw."""
        for name, value in zip(self.STAT_NAMES, stats):
            getattr(self, name).copy_(value.detach().to(torch.float32))
        self._stats_version += 1
        self._cache = None

    @staticmethod
    def _after_load(module: "IsoGaussLinear", incompatible_keys) -> None:
        module._seed = int(module.noise_seed)
        module._draw_count = int(module.draw_counter)
        module._stats_version += 1
        module._cache = None
        module.last_weight = None

    def _apply(self, fn, recurse=True):
        # Statistics stay fp32 through .half()/.to(dtype): only the device of `fn` is applied to them.
        stats = {name: self._buffers.pop(name) for name in self.STAT_NAMES}
        try:
            super()._apply(fn, recurse)
        finally:
            for name, buf in stats.items():
                probe = fn(torch.empty(0, dtype=torch.float32, device=buf.device))
                self._buffers[name] = buf.to(device=probe.device, dtype=torch.float32)
        self._cache = None
        return self

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"noise={self.noise!r}, seed={self._seed}, standardize={self.standardize}, source={self.source!r}"
        )

    # ------------------------------------------------------------------ distributions and draws
    def weight_distribution(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element (mean, var), each (out_features, in_features), by Eq. (2)."""
        return eq2_distribution(*self.statistics)

    def draw_seed(self, stream: str, index: int) -> int:
        """The seed of draw ``index`` in noise ``stream`` of this layer."""
        return derive_seed(self._seed, stream, int(index))

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            self._generators[device] = gen
        return gen

    def sample(self, stream: str = STREAM_FIXED, index: int = 0, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Draw a weight (out, in) in fp32 from the current statistics, without autograd history.

        ``out`` (fp32, (out_features, in_features), on the layer's device) receives the draw instead
        of a new tensor. The values depend only on the statistics, the seed and (stream, index).
        """
        with torch.no_grad():
            device = self.row_mean.device
            shape = (self.out_features, self.in_features)
            if out is not None and (tuple(out.shape) != shape or out.dtype != torch.float32 or out.device != device):
                raise ValueError(
                    f"out must be an fp32 tensor of shape {shape} on {device}, got "
                    f"{out.dtype} {tuple(out.shape)} on {out.device}"
                )
            noise = standard_normal_noise(
                shape, self.draw_seed(stream, index), generator=self._generator(device), device=device, out=out
            )
            return sample_weight(*self.statistics, noise, scratch=_scratch(3, noise))

    def sample_rows(self, row_start: int, row_end: int, stream: str = STREAM_FIXED, index: int = 0) -> torch.Tensor:
        """Rows ``row_start:row_end`` of :meth:`sample` for the same key, computed alone."""
        with torch.no_grad():
            device = self.row_mean.device
            noise = standard_normal_noise(
                (row_end - row_start, self.in_features),
                self.draw_seed(stream, index),
                generator=self._generator(device),
                device=device,
                row_start=row_start,
            )
            stats = self.statistics
            return sample_weight(
                stats.row_mean[row_start:row_end], stats.row_std[row_start:row_end], stats.col_mean,
                stats.col_std, noise, num_rows=self.out_features,
            )

    def current_draw_key(self) -> tuple[str, int]:
        """The key the next evaluation forward would use (without advancing any counter)."""
        if self._draw_override is not None:
            return self._draw_override
        if self.noise == "seeded":
            return (STREAM_FIXED, 0)
        return (STREAM_EVAL, self._eval_count)

    def set_draw_index(self, index: int) -> None:
        """Make the next training draw (resample mode) use index ``index`` of the 'train' stream.

        The Trainer callback sets it to the global step, so the draw of a step is keyed by (base seed,
        layer name, global step): the same on every rank and after a resume, whatever happened before.
        """
        self._draw_count = int(index)
        self.draw_counter.fill_(self._draw_count)

    def _training_weight(self) -> torch.Tensor:
        if self.hold_draw and self.last_weight is not None:
            return self.last_weight
        if self.noise == "seeded":
            key = (STREAM_FIXED, 0)
        else:
            key = (STREAM_TRAIN, self._draw_count)
            self._draw_count += 1
            self.draw_counter.fill_(self._draw_count)
        weight = self.sample(*key, out=self._reusable_draw_buffer()).requires_grad_(True)
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
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_draw_buffer"] = state["_draw_handle"] = None  # transient (a weakref does not pickle)
        return state

    def train(self, mode: bool = True):
        if not mode:
            self._draw_buffer = self._draw_handle = None  # eval needs no training buffer
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
        if self._draw_override is not None or self.noise == "seeded":
            self._cache = (key, self._stats_version, weight)
        return weight

    def clear_cache(self) -> None:
        """Free the cached evaluation draw (kept only while a draw is pinned or seeded)."""
        self._cache = None

    # ------------------------------------------------------------------ low-memory inference
    @property
    def lowmem_block_rows(self) -> Optional[int]:
        """Low-memory inference: ``None`` (default) materializes the whole (out, in) weight per draw.

        A positive multiple of :data:`~isogauss_hf.functional.NOISE_BLOCK_ROWS` makes every forward
        outside training regenerate the draw ``block`` output rows at a time from its seed
        (:meth:`sample_rows`) and compute those output features, so the whole weight never exists:
        the extra memory is about ``block * (2 * in_features + tokens)`` floats. Outputs equal the
        materialized path's up to matmul rounding (the weight rows are bit-for-bit the same).
        Training forwards ignore it (the gradient needs the whole draw).
        """
        return self._lowmem_block_rows

    @lowmem_block_rows.setter
    def lowmem_block_rows(self, value: Optional[int]) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % NOISE_BLOCK_ROWS
        ):
            raise ValueError(
                f"lowmem_block_rows={value!r} is not valid; use None or a positive multiple of "
                f"NOISE_BLOCK_ROWS={NOISE_BLOCK_ROWS} (e.g. {NOISE_BLOCK_ROWS})"
            )
        self._lowmem_block_rows = value
        self._cache = None  # a cached whole draw would defeat the purpose

    def _lowmem_forward(self, x: torch.Tensor, key: tuple[str, int]) -> torch.Tensor:
        block = self._lowmem_block_rows
        x2 = x.reshape(-1, self.in_features)
        autocast = torch.is_autocast_enabled(x.device.type)
        out: Optional[torch.Tensor] = None
        for r0 in range(0, self.out_features, block):
            r1 = min(self.out_features, r0 + block)
            weight = self.sample_rows(r0, r1, *key)
            if weight.dtype != x.dtype and not autocast:
                weight = weight.to(x.dtype)
            bias = None if self.bias is None else self.bias[r0:r1]
            if bias is not None and bias.dtype != weight.dtype and not autocast:
                bias = bias.to(weight.dtype)
            y = F.linear(x2, weight, bias)
            if out is None:
                out = y.new_empty(x2.shape[0], self.out_features)
            out[:, r0:r1] = y
            del weight, y
        return out.reshape(*x.shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            x = standardize_input(x)
        if self.training and torch.is_grad_enabled():
            self._cache = None
            weight = self._training_weight()
        elif self._lowmem_block_rows is not None:
            return self._lowmem_forward(x, self._next_eval_key())
        else:
            weight = self._eval_weight()
        if weight.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            weight = weight.to(x.dtype)
        bias = self.bias
        if bias is not None and bias.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            bias = bias.to(weight.dtype)
        return F.linear(x, weight, bias)

    # ------------------------------------------------------------------ learning
    def reset_draw(self) -> None:
        """Forget the current training draw and its gradient (the next forward draws anew)."""
        self.last_weight = None

    def distribution_step(self, rule: str, lr: float) -> bool:
        """Update the statistics from ``last_weight`` and its gradient by GDU or WDU.

        Returns True when the statistics changed; False when there was nothing to apply (no draw or no
        gradient) or the update was not finite (the step is then skipped, counted in
        ``skipped_steps`` and warned about once). The draw is released either way.
        """
        rule = check_choice("rule", rule, RULES)
        weight = self.last_weight
        if weight is None or weight.grad is None:
            self.last_weight = None
            return False
        grad = weight.grad
        if rule == "gdu":
            new = gdu_update(self.statistics, weight, grad, float(lr))
        elif self.noise == "seeded":
            # one fixed draw: refit without re-absorbing the draw's own sampling error (no drift)
            new = wdu_update_fixed_draw(self.statistics, weight, grad, float(lr))
        else:
            new = wdu_update(weight, grad, float(lr))
        self.last_weight = None
        if not all(bool(torch.isfinite(t).all()) for t in new):
            self.skipped_steps += 1
            if not self._warned_nonfinite:
                self._warned_nonfinite = True
                label = self.qualified_name or f"IsoGaussLinear({self.out_features}x{self.in_features}, seed={self._seed})"
                warnings.warn(
                    f"{label}: non-finite "
                    f"gradient or statistic; distribution step skipped (further skips are counted silently)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return False
        if self.std_floor > 0:
            new = RowColStats(new.row_mean, new.row_std.clamp_min(self.std_floor), new.col_mean,
                              new.col_std.clamp_min(self.std_floor))
        self.set_statistics(new)
        return True

    # ------------------------------------------------------------------ export
    def dense_weight(self, seed: Optional[int] = None) -> torch.Tensor:
        """The seeded draw (stream 'fixed', index 0) as an (out, in) fp32 weight.

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
        """An ordinary ``nn.Linear`` (or ``Conv1D`` if it came from one) holding one seeded draw."""
        if self.standardize:
            raise ValueError(
                "a layer with standardize=True has no dense equivalent (it normalizes its input); "
                "export with standardize=False"
            )
        return _dense_module(self.dense_weight(seed), self.bias, self.source)

    @property
    def num_replaced_weights(self) -> int:
        return self.out_features * self.in_features

    @property
    def num_gaussian_parameters(self) -> int:
        return 2 * (self.out_features + self.in_features)


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

    GPT-2 fuses query, key and value into one ``Conv1D`` of ``3 * hidden`` outputs. Treating that as
    one Gaussian matrix would pool query, key and value into shared column statistics; instead each
    of the ``num_splits`` output slices is its own :class:`IsoGaussLinear` (own row and column
    statistics), exactly as BERT's separate query/key/value layers. Outputs are concatenated.
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
    def from_linear(
        cls,
        module: nn.Module,
        num_splits: int,
        noise: str = "resample",
        seeds: Optional[list[int]] = None,
        standardize: bool = False,
    ) -> "IsoGaussFusedLinear":
        if is_conv1d(module):
            weight, source = module.weight.detach().t(), "conv1d"
        elif isinstance(module, nn.Linear):
            weight, source = module.weight.detach(), "linear"
        else:
            raise TypeError(f"expected nn.Linear or Conv1D, got {type(module).__name__}")
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
            parts.append(IsoGaussLinear.from_linear(lin, noise=noise, seed=seeds[i], standardize=standardize))
        return cls(parts, source=source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=-1)

    def to_dense_module(self, seed: Optional[int] = None) -> nn.Module:
        if any(p.standardize for p in self.parts):
            raise ValueError("a layer with standardize=True has no dense equivalent; export with standardize=False")
        weights = [
            p.dense_weight(None if seed is None else derive_seed(seed, i)) for i, p in enumerate(self.parts)
        ]
        biases = [p.bias for p in self.parts]
        bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
        return _dense_module(torch.cat(weights, dim=0), bias, self.source)

    def extra_repr(self) -> str:
        return f"num_splits={len(self.parts)}, source={self.source!r}"
