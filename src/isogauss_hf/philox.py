"""The portable noise generator as pure tensor functions: Philox4x32-10 and the ``box-muller-v1`` transform.

This module *defines* the numbers a seeded Gaussian layer is made of (the checkpoint contract written out in
:mod:`isogauss_hf.noise`); the fast kernels (:mod:`isogauss_hf._noise_numba` on CPU,
:mod:`isogauss_hf._noise_triton` on CUDA) are checked against it bit for bit. Everything here is integer
arithmetic on int64 tensors holding uint32 words, and float32 operations that IEEE 754 rounds correctly
(``+ - * /``, and a square root rounded once from float64, :func:`~isogauss_hf.functional.sqrt_rn`), evaluated in a fixed order, so a
result is the same on every device, thread count and CPU instruction set.

* :func:`philox4x32_10` — the counter-based generator of Salmon et al. (SC'11), as in Random123 and cuRAND:
  ten rounds of two 32x32->64-bit multiplications, the key bumped by the Weyl constants between rounds.
* :func:`box_muller_v1` — two uint32 words to two standard normals. The radius uses the top 23 bits of the
  first word, ``u = (2k + 1) / 2^24`` (never 0 or 1; |z| <= 5.77), and ``sqrt(-2 ln u)`` with ``ln`` from the
  exponent of ``u`` and an odd series in ``s = (f - 1) / (f + 1)`` on the mantissa ``f`` in [sqrt(1/2), sqrt(2));
  the angle uses the word's top 3 bits as the octant and the next 23 as the position inside it, with Taylor
  polynomials of sin and cos on [0, pi/4]. No library transcendental is called, so no math library's last bit
  enters the result (Box-Muller rather than an inverse CDF: one logarithm and one sine/cosine pair serve two
  normals, and every word gives exactly one value, which keeps windows of the field independent).
* :func:`normal_field` — the window [row_start, row_start + rows) x [col_start, col_start + cols) of the
  normal field of one key: element (i, j) is lane ``i % 4`` of the Philox output for counter
  ``(j, i // 4, 0, 0)`` — lanes 0, 1 are ``box_muller_v1(w0, w1)``, lanes 2, 3 ``box_muller_v1(w2, w3)``.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from .functional import sqrt_rn

__all__ = [
    "PHILOX_M", "PHILOX_W", "MASK32", "TRANSFORM_CONSTANTS", "philox4x32_10", "philox_rounds", "box_muller_v1",
    "floor_log2", "normal_field",
]

MASK32 = 0xFFFFFFFF
#: Philox4x32 round multipliers and key increments (Weyl constants), as in Random123.
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
PHILOX_ROUNDS = 10


def _f32(x: float) -> float:
    """``x`` rounded to float32 (a Python float that float32 holds exactly)."""
    return float(np.float32(x))


#: The float32 constants of ``box-muller-v1`` (every kernel reads them from here).
TRANSFORM_CONSTANTS = {
    # mantissa of float32(sqrt(2)) scaled by 2^23: a 24-bit mantissa above it is folded into [sqrt(1/2), 1)
    "SQRT2_MANTISSA": 11863283,
    "LN2": _f32(math.log(2.0)),
    # ln f = s * (2 + s^2 (2/3 + s^2 (2/5 + s^2 (2/7 + s^2 2/9)))),  s = (f - 1) / (f + 1)
    "L1": _f32(2 / 3), "L2": _f32(2 / 5), "L3": _f32(2 / 7), "L4": _f32(2 / 9),
    # one 23-bit step of the angle inside an octant: (pi / 4) / 2^23
    "ANGLE_STEP": _f32(math.pi / 4 * 2.0 ** -23),
    # sin x = x + x * x^2 (S1 + x^2 (S2 + x^2 (S3 + x^2 S4))),  cos x = 1 + x^2 (C1 + ... + x^2 C5)
    "S1": _f32(-1 / 6), "S2": _f32(1 / 120), "S3": _f32(-1 / 5040), "S4": _f32(1 / 362880),
    "C1": _f32(-1 / 2), "C2": _f32(1 / 24), "C3": _f32(-1 / 720), "C4": _f32(1 / 40320), "C5": _f32(-1 / 3628800),
}
_K = TRANSFORM_CONSTANTS

Word = Union[torch.Tensor, int]


def _mulhilo(a: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a * x`` (``a`` a uint32 constant, ``x`` uint32 words in int64).

    The product is formed from 16-bit halves of ``x`` so that no intermediate leaves int64.
    """
    p_lo = (x & 0xFFFF) * a  # < 2^48
    p_hi = (x >> 16) * a  # < 2^48
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & MASK32
    hi = (p_hi + (p_lo >> 16)) >> 16
    return hi, lo


def philox_rounds(c0: Word, c1: Word, c2: Word, c3: Word, k0: Word, k1: Word) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 on broadcastable uint32 words (int64 tensors or ints); returns the four output words."""
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) for c in (c0, c1, c2, c3))
    for r in range(PHILOX_ROUNDS):
        if r:
            k0 = (k0 + PHILOX_W[0]) & MASK32
            k1 = (k1 + PHILOX_W[1]) & MASK32
        hi0, lo0 = _mulhilo(PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def philox4x32_10(counter: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Philox4x32-10 of ``counter`` (int64 (N, 4) of uint32 words) under ``key`` (int64 (2,) or (N, 2)).

    Returns the (N, 4) output words as int64. Counter 0 under key 0 gives 0x6627e8d5 0xe169c58d 0xbc57ac4c
    0x9b00dbd8 (the Random123 known-answer test).
    """
    counter, key = torch.as_tensor(counter), torch.as_tensor(key)
    if counter.dim() != 2 or counter.shape[1] != 4 or key.shape[-1] != 2 or key.dim() not in (1, 2):
        raise ValueError(f"philox4x32_10 wants counter (N, 4) and key (2,) or (N, 2), got "
                         f"{tuple(counter.shape)} and {tuple(key.shape)}")
    for name, t in (("counter", counter), ("key", key)):
        if t.dtype != torch.int64 or bool(((t < 0) | (t > MASK32)).any()):
            raise ValueError(f"philox4x32_10: {name} must be an int64 tensor of uint32 words (0 <= w < 2^32)")
    words = philox_rounds(*counter.unbind(1), key[..., 0], key[..., 1])
    return torch.stack(words, 1)


def floor_log2(m: torch.Tensor) -> torch.Tensor:
    """floor(log2 m) of positive integers below 2^32 (int64), by a five-step binary search."""
    e = torch.zeros_like(m)
    for shift in (16, 8, 4, 2, 1):
        t = m >> shift
        hit = t != 0
        e = e + hit * shift
        m = torch.where(hit, t, m)
    return e


def _radius(w: torch.Tensor) -> torch.Tensor:
    """sqrt(-2 ln u) for u = (2 * (w >> 9) + 1) / 2^24, in float32."""
    m = ((w >> 9) << 1) | 1  # odd, below 2^24
    e = floor_log2(m)
    mant = m << (23 - e)  # 24-bit mantissa of m, in [2^23, 2^24)
    fold = mant > _K["SQRT2_MANTISSA"]
    f = mant.to(torch.float32) * 2.0 ** -23
    f = torch.where(fold, f * 0.5, f)  # exact: f in [sqrt(1/2), sqrt(2))
    e = e + fold  # u = f * 2^(e - 24)
    s = (f - 1.0) / (f + 1.0)
    s2 = s * s
    p = (((_K["L4"] * s2 + _K["L3"]) * s2 + _K["L2"]) * s2 + _K["L1"]) * s2 + 2.0
    ln_f = s * p
    minus_ln_u = (24 - e).to(torch.float32) * _K["LN2"] - ln_f
    return sqrt_rn(minus_ln_u * 2.0)


def _sin_cos(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos) of the angle 2 pi (w >> 6) / 2^26 in float32: octant from the top 3 bits, polynomials on [0, pi/4]."""
    octant = w >> 29
    steps = (w >> 6) & 0x7FFFFF
    odd = (octant & 1) == 1
    steps = torch.where(odd, 0x800000 - steps, steps)  # odd octants: the complementary angle
    x = steps.to(torch.float32) * _K["ANGLE_STEP"]
    x2 = x * x
    ps = ((_K["S4"] * x2 + _K["S3"]) * x2 + _K["S2"]) * x2 + _K["S1"]
    sin_x = x + x * (x2 * ps)
    pc = (((_K["C5"] * x2 + _K["C4"]) * x2 + _K["C3"]) * x2 + _K["C2"]) * x2 + _K["C1"]
    cos_x = 1.0 + x2 * pc
    s, c = torch.where(odd, cos_x, sin_x), torch.where(odd, sin_x, cos_x)  # sin, cos inside the quadrant
    quadrant = octant >> 1
    swap = (quadrant & 1) == 1
    s, c = torch.where(swap, c, s), torch.where(swap, s, c)
    s = torch.where(quadrant >= 2, -s, s)
    c = torch.where((quadrant == 1) | (quadrant == 2), -c, c)
    return s, c


def box_muller_v1(w0: torch.Tensor, w1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two standard normals (float32) from two uint32 words (int64 tensors): ``(r cos t, r sin t)``.

    ``r = sqrt(-2 ln u)`` from ``w0`` and ``t`` from ``w1`` as described in the module docstring.
    """
    r = _radius(w0)
    s, c = _sin_cos(w1)
    return r * c, r * s


#: Counters per chunk in :func:`normal_field` (bounds its int64 temporaries; not part of the contract).
_CHUNK_COUNTERS = 1 << 18


def normal_field(k0: int, k1: int, rows: int, cols: int, row_start: int = 0, col_start: int = 0,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """The float32 window [row_start, row_start+rows) x [col_start, col_start+cols) of key (k0, k1)'s normal field.

    Element (i, j) is lane i % 4 of Philox counter (j, i // 4, 0, 0): see the module docstring. The reference
    implementation (torch integer ops); any window equals the same part of any larger window bit for bit.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    out = torch.empty(rows, cols, dtype=torch.float32, device=device)
    if rows == 0 or cols == 0:
        return out
    q0, q1 = row_start // 4, (row_start + rows + 3) // 4
    j = torch.arange(col_start, col_start + cols, dtype=torch.int64, device=device)
    step = max(1, _CHUNK_COUNTERS // cols)
    for qa in range(q0, q1, step):
        qb = min(q1, qa + step)
        q = torch.arange(qa, qb, dtype=torch.int64, device=device)[:, None]
        w0, w1, w2, w3 = philox_rounds(j[None, :], q, 0, 0, k0, k1)
        z0, z1 = box_muller_v1(w0, w1)
        z2, z3 = box_muller_v1(w2, w3)
        block = torch.stack([z0, z1, z2, z3], 1).reshape(4 * (qb - qa), cols)  # rows 4qa .. 4qb
        lo, hi = max(row_start, 4 * qa), min(row_start + rows, 4 * qb)
        out[lo - row_start:hi - row_start] = block[lo - 4 * qa:hi - 4 * qa]
    return out
