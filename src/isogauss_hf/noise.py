"""The noise of a weight draw — the part of a seeded Gaussian layer that a checkpoint does not store.

A draw is ``W = mean + std * Z`` (Eq. 2); a checkpoint stores the statistics and seeds, so ``Z`` *is* part of
the model. It comes from the generator the checkpoint names (``noise_generator`` in ``isogauss_config.json``,
:data:`NOISE_GENERATORS`):

**philox4x32-10/box-muller-v1** (checkpoint format 3, the default). The contract:

1. *Draw seed*: ``derive_seed(layer_seed, stream, index)`` — the first 8 bytes (little endian) of the
   BLAKE2b digest of ``"{layer_seed}/{stream}/{index}"``, top bit cleared. The layer seed is
   ``derive_seed(config.seed, module_name)`` (fused projections: ``derive_seed(that, part)``); streams are
   ``fixed`` (a seeded layer's one draw, index 0), ``train`` (index = global step), ``eval`` and ``scope``.
2. *Key*: ``(draw_seed mod 2^32, draw_seed >> 32)``.
3. *Counter and lane*: element (i, j) of the (n, m) noise matrix — row i = output feature — is lane
   ``i mod 4`` of Philox4x32-10 (10 rounds, Random123 constants) at counter ``(j, i div 4, 0, 0)``. No block
   size enters: any window of the field equals the same part of any larger one, bit for bit.
4. *Transform*: lanes (0, 1) are ``box_muller_v1(w0, w1)``, lanes (2, 3) ``box_muller_v1(w2, w3)``
   (:mod:`isogauss_hf.philox`): float32, only correctly rounded operations in a fixed order — so the normals
   are identical on every device, thread count and CPU instruction set, not merely close.
5. *Weight*: Eq. (2) combined elementwise in float32 in the order of
   :func:`isogauss_hf.functional.sample_weight` with ``exact_sqrt=True``.

**torch-cpu/randn-256-row-blocks** (formats 1 and 2): ``torch.randn`` with a CPU ``torch.Generator`` seeded
by ``derive_seed(draw_seed, b)`` for each block ``b`` of 256 rows, and Eq. (2) with torch's float32 ``sqrt``.
It always runs on the CPU (then moves), so such a checkpoint gives the same weights on a GPU as on the CPU
that made it; it is not promised across torch releases or CPU builds. Re-saving keeps the generator.

Backends of the portable generator (:func:`set_noise_backend`, or ``ISOGAUSS_NOISE_BACKEND``): ``numba``
(CPU kernels, :mod:`._noise_numba`), ``triton`` (CUDA kernels, :mod:`._noise_triton`, self-checked on first
use), ``torch`` (the reference, :mod:`.philox`; any device, slow); ``auto`` picks the first that applies.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from typing import Any, Optional

import torch

from . import _runtime
from .functional import RowColStats, eq2_terms, sample_weight
from .philox import normal_field, philox4x32_10
from .settings import DEFAULT_NOISE_GENERATOR, LEGACY_NOISE_GENERATOR, NOISE_GENERATOR_HELP, check_choice

__all__ = ["derive_seed", "philox_key", "philox4x32_10", "standard_normal", "NoiseGenerator", "NOISE_GENERATORS",
           "get_noise_generator", "set_noise_backend", "noise_backend", "NOISE_BACKENDS", "LEGACY_BLOCK_ROWS"]

#: Rows per independently seeded block of the legacy generator (formats 1-2).
LEGACY_BLOCK_ROWS = 256
NOISE_BACKENDS = ("auto", "numba", "triton", "torch")
_MASK32 = 0xFFFFFFFF


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (same on every platform and process)."""
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def philox_key(draw_seed: int) -> tuple[int, int]:
    """The Philox key (two uint32 words) of a draw seed."""
    return int(draw_seed) & _MASK32, (int(draw_seed) >> 32) & _MASK32


# ---------------------------------------------------------------------------------------------------------- backends
_backend_choice = check_choice("ISOGAUSS_NOISE_BACKEND", os.environ.get("ISOGAUSS_NOISE_BACKEND", "auto"),
                               NOISE_BACKENDS)
_broken: dict[str, str] = {}  # backend or "triton:<device>" -> why it is not used


def set_noise_backend(name: str) -> None:
    """Choose how the portable generator runs: ``auto`` (default), ``numba``, ``triton`` or ``torch``.

    Every backend gives the same numbers; they differ in speed and in the devices they serve.
    """
    global _backend_choice
    _backend_choice = check_choice("noise backend", name, NOISE_BACKENDS)


def _numba_module():
    if "numba" in _broken:
        return None
    try:
        from . import _noise_numba
    except ImportError as e:  # numba missing or unusable: the reference path, same numbers
        _broken["numba"] = str(e)
        warnings.warn(f"isogauss_hf: numba is not available ({e}); seeded draws on the CPU use the torch reference "
                      "implementation (same numbers, about 100x slower): pip install numba", RuntimeWarning)
        return None
    return _noise_numba


def _triton_module(device: torch.device):
    key = f"triton:{device}"
    if key in _broken or "triton" in _broken:
        return None
    try:
        from . import _noise_triton
    except ImportError as e:
        _broken["triton"] = str(e)
        return None
    if key not in _checked:
        problem = _self_check(_noise_triton, device)
        if problem:
            _broken[key] = problem
            warnings.warn(f"isogauss_hf: the Triton noise kernel is not used on {device} ({problem}); the torch "
                          "reference implementation gives the same numbers, slower", RuntimeWarning)
            return None
        _checked.add(key)
    return _noise_triton


_checked: set[str] = set()


def _self_check(kernels, device: torch.device) -> Optional[str]:
    """'' when ``kernels`` reproduce the reference on ``device`` (a small window, both kinds), else why not."""
    try:
        got = kernels.fill_normal(torch.empty(37, 70, device=device), 0x9E3779B9, 0x80000001, 5, 3)
        if not torch.equal(got, normal_field(0x9E3779B9, 0x80000001, 37, 70, 5, 3, device)):
            return "its normals differ from the reference"
        g = torch.Generator(device="cpu").manual_seed(0)
        stats = RowColStats(*(torch.rand(size, generator=g).to(device) for size in (41, 41, 23, 23)))
        ref = _reference_draw(stats, 12345, 3, 41, None)
        got = kernels.fill_eq2(torch.empty(38, 23, device=device), eq2_terms(*stats), *philox_key(12345), 3)
        return "" if torch.equal(got, ref) else "its Eq. (2) draws differ from the reference"
    except Exception as e:  # noqa: BLE001 - compiler / driver problems: fall back
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def noise_backend(device: torch.device | str) -> str:
    """The backend the portable generator uses on ``device`` now (``numba``, ``triton`` or ``torch``)."""
    device = torch.device(device)
    choice = _backend_choice
    if choice == "torch":
        return "torch"
    if device.type == "cpu" and choice in ("auto", "numba"):
        return "numba" if _numba_module() is not None else "torch"
    if device.type == "cuda" and choice in ("auto", "triton"):
        return "triton" if _triton_module(device) is not None else "torch"
    if choice != "auto":
        raise ValueError(f"noise backend {choice!r} does not run on {device.type}; use 'auto' or 'torch'")
    return "torch"


def _kernels(device: torch.device):
    backend = noise_backend(device)
    if backend == "numba":
        return _numba_module()
    return _triton_module(device) if backend == "triton" else None


# ---------------------------------------------------------------------------------------------------------- philox
def standard_normal(draw_seed: int, rows: int, cols: int, *, row_start: int = 0, col_start: int = 0,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The fp32 window [row_start, row_start+rows) x [col_start, col_start+cols) of one draw seed's noise field.

    The portable generator (module docstring): the same numbers on every device and backend; any window
    equals the same part of any larger window bit for bit.
    """
    for name, v in (("rows", rows), ("cols", cols), ("row_start", row_start), ("col_start", col_start)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"standard_normal: {name} must be a non-negative integer, got {v!r}")
    if row_start + rows > 4 * 2**32 or col_start + cols > 2**32:
        raise ValueError("standard_normal: the field has 2^34 rows and 2^32 columns")
    device = torch.device(device) if device is not None else torch.device("cpu")
    k0, k1 = philox_key(draw_seed)
    kernels = _kernels(device)
    if kernels is None:
        return normal_field(k0, k1, rows, cols, row_start, col_start, device)
    return kernels.fill_normal(torch.empty(rows, cols, dtype=torch.float32, device=device), k0, k1, row_start,
                               col_start)


def _reference_draw(stats: RowColStats, draw_seed: int, row_start: int, row_end: int, out) -> torch.Tensor:
    n, m = stats.row_mean.shape[0], stats.col_mean.shape[0]
    noise = normal_field(*philox_key(draw_seed), row_end - row_start, m, row_start, 0, stats.row_mean.device)
    rows = slice(row_start, row_end)
    return sample_weight(stats.row_mean[rows], stats.row_std[rows], stats.col_mean, stats.col_std, noise, n,
                         out=out, exact_sqrt=True)


# ---------------------------------------------------------------------------------------------------------- generators
class NoiseGenerator:
    """A generator a checkpoint can name: the noise of a draw, and rows of the weight drawn with it (Eq. 2).

    Contract of every generator: the values depend only on (statistics, draw seed, window); ``row_align``
    is the granularity of the row windows it serves; ``exact_sqrt`` says which square root its Eq. (2)
    uses (the ``backprop`` rule's differentiable draw must use the same).
    """

    name: str = ""
    row_align: int = 1
    exact_sqrt: bool = True

    def normal(self, draw_seed: int, rows: int, cols: int, *, row_start: int = 0,
               device: torch.device | str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def draw_rows(self, stats: RowColStats, draw_seed: int, row_start: int, row_end: int, *,
                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Rows ``row_start:row_end`` of the draw (fp32, on the statistics' device, no autograd history)."""
        raise NotImplementedError

    def check_rows(self, row_start: int) -> None:
        if row_start % self.row_align:
            raise ValueError(f"the {self.name} generator draws row windows starting at multiples of {self.row_align}, "
                             f"got row_start={row_start}")


class PhiloxGenerator(NoiseGenerator):
    name = DEFAULT_NOISE_GENERATOR

    def normal(self, draw_seed, rows, cols, *, row_start=0, device=None):
        return standard_normal(draw_seed, rows, cols, row_start=row_start, device=device)

    def draw_rows(self, stats, draw_seed, row_start, row_end, *, out=None):
        with torch.no_grad():
            stats = RowColStats(*(t.detach() for t in stats))
            device = stats.row_mean.device
            kernels = _kernels(device)
            if kernels is None:
                return _reference_draw(stats, draw_seed, row_start, row_end, out)
            if out is None:
                out = torch.empty(row_end - row_start, stats.col_mean.shape[0], dtype=torch.float32, device=device)
            return kernels.fill_eq2(out, eq2_terms(*stats), *philox_key(draw_seed), row_start)


class TorchCPULegacyGenerator(NoiseGenerator):
    name = LEGACY_NOISE_GENERATOR
    row_align = LEGACY_BLOCK_ROWS
    exact_sqrt = False

    def normal(self, draw_seed, rows, cols, *, row_start=0, device=None):
        self.check_rows(row_start)
        with torch.inference_mode(False):  # filled by worker threads, which are not in the caller's inference mode
            out = torch.empty(rows, cols, dtype=torch.float32)
        jobs = [(out[r0:min(rows, r0 + LEGACY_BLOCK_ROWS)], derive_seed(draw_seed, (row_start + r0) // LEGACY_BLOCK_ROWS))
                for r0 in range(0, rows, LEGACY_BLOCK_ROWS)]
        workers = _runtime.noise_workers(len(jobs))
        if workers <= 1 or rows * cols < (1 << 16):
            for block, seed in jobs:
                _legacy_block(block, seed)
        else:
            pool = _runtime.noise_pool(workers)
            for future in [pool.submit(_legacy_block, block, seed) for block, seed in jobs]:
                future.result()
        return out if device is None else out.to(device)

    def draw_rows(self, stats, draw_seed, row_start, row_end, *, out=None):
        with torch.no_grad():
            device = stats.row_mean.device
            cpu = RowColStats(*(t.detach().cpu() for t in stats))
            noise = self.normal(draw_seed, row_end - row_start, cpu.col_mean.shape[0], row_start=row_start)
            rows = slice(row_start, row_end)
            weight = _runtime.run_kernel(sample_weight, cpu.row_mean[rows], cpu.row_std[rows], cpu.col_mean,
                                         cpu.col_std, noise, cpu.row_mean.shape[0], like=noise)
            if out is not None:
                return out.copy_(weight)
            return weight.to(device)


def _legacy_block(out: torch.Tensor, seed: int) -> None:
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    torch.randn(out.shape, generator=generator, out=out)


#: name -> generator: the generators a checkpoint may name (``noise_generator`` in ``isogauss_config.json``).
NOISE_GENERATORS: dict[str, NoiseGenerator] = {g.name: g for g in (PhiloxGenerator(), TorchCPULegacyGenerator())}
assert set(NOISE_GENERATORS) == set(NOISE_GENERATOR_HELP), "settings.NOISE_GENERATOR_HELP and NOISE_GENERATORS differ"


def get_noise_generator(name: Any) -> NoiseGenerator:
    """The generator called ``name`` (one-line error naming the valid names otherwise)."""
    return NOISE_GENERATORS[check_choice("noise_generator", name, tuple(NOISE_GENERATORS))]
