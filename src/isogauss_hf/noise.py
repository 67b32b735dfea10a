"""Seeded standard-normal noise for weight draws: the part of a draw that a checkpoint reproduces.

A Gaussian layer's draw is ``mean + std * Z`` (Eq. 2, :func:`isogauss_hf.functional.sample_weight`); this
module makes ``Z``. It is generated in blocks of :data:`NOISE_BLOCK_ROWS` rows, block ``b`` from
``derive_seed(draw_seed, b)``, with explicit ``torch.Generator`` objects — never the global RNG — so any
row block of a draw can be regenerated alone (the low-memory path) and equals the same rows of the whole
draw, on any device thread count. Changing :data:`NOISE_BLOCK_ROWS` or :func:`derive_seed` changes every
seeded draw: both are part of the checkpoint contract.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import torch

from . import _runtime

__all__ = ["NOISE_BLOCK_ROWS", "derive_seed", "standard_normal_noise"]

#: Rows per independently seeded noise block (part of the checkpoint contract).
NOISE_BLOCK_ROWS = 256


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (same on every platform and process).

    Seeds derive from the layer's seed, the noise stream, the draw index and the noise block.
    """
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _noise_block(out: torch.Tensor, seed: int, generator: Optional[torch.Generator]) -> None:
    if generator is None:  # a worker thread: its own generator (a generator serializes its users)
        generator = torch.Generator(device=out.device)
    generator.manual_seed(seed)
    torch.randn(out.shape, generator=generator, out=out)


def standard_normal_noise(
    shape: tuple[int, int],
    draw_seed: int,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    row_start: int = 0,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Standard normal noise for rows ``row_start : row_start + shape[0]`` of a draw.

    ``row_start`` must be a multiple of :data:`NOISE_BLOCK_ROWS`. ``generator`` must live on ``device``; it
    is re-seeded. On CPU, blocks are generated concurrently on up to ``_runtime.NOISE_THREADS`` threads
    (same values: a block depends only on its seed).
    """
    rows, cols = shape
    if row_start % NOISE_BLOCK_ROWS:
        raise ValueError(f"row_start={row_start} must be a multiple of NOISE_BLOCK_ROWS={NOISE_BLOCK_ROWS}")
    if out is None:
        out = torch.empty(rows, cols, device=device, dtype=torch.float32)
    jobs = [
        (out[r0 : min(rows, r0 + NOISE_BLOCK_ROWS)], derive_seed(draw_seed, (row_start + r0) // NOISE_BLOCK_ROWS))
        for r0 in range(0, rows, NOISE_BLOCK_ROWS)
    ]
    workers = _runtime.noise_workers(len(jobs))
    if out.device.type != "cpu" or workers <= 1 or rows * cols < (1 << 16):
        for block, seed in jobs:
            _noise_block(block, seed, generator)
        return out
    pool = _runtime.noise_pool(workers)
    for future in [pool.submit(_noise_block, block, seed, None) for block, seed in jobs]:
        future.result()
    return out
