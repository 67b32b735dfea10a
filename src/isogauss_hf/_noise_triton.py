"""CUDA kernels of the portable generator, written in Triton: the same numbers as :mod:`isogauss_hf.philox`.

Machinery only (see :mod:`isogauss_hf._noise_numba` for the CPU twin). One program computes a block of row
quads x columns: Philox4x32-10 on uint32 lanes (``tl.umulhi`` and a wrapping multiply), ``box-muller-v1``
in float32 with the correctly rounded division and square root (``div_rn``, ``sqrt_rn``) and FMA contraction
off (``enable_fp_fusion=False``), so every operation rounds as the reference does. ``EQ2`` fuses Eq. (2):
the kernel writes the weight rows instead of the noise.

Before its first use on a device, :func:`check` compares a small window against the reference
(:func:`isogauss_hf.philox.normal_field` and ``sample_weight(exact_sqrt=True)``, both torch ops on the same
device); any difference or compile error disables the kernel with one warning (the torch-ops path is then
used, with the same numbers). Tests run it on CPU through Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .philox import PHILOX_M, PHILOX_W, TRANSFORM_CONSTANTS

__all__ = ["fill_normal", "fill_eq2", "BLOCK_Q", "BLOCK_C"]

BLOCK_Q = 16  # row quads per program
BLOCK_C = 64  # columns per program

_C = TRANSFORM_CONSTANTS
_M0, _M1 = tl.constexpr(PHILOX_M[0]), tl.constexpr(PHILOX_M[1])
_W0, _W1 = tl.constexpr(PHILOX_W[0]), tl.constexpr(PHILOX_W[1])
_SQRT2_MANTISSA = tl.constexpr(_C["SQRT2_MANTISSA"])
_P23 = tl.constexpr(2.0 ** -23)
_LN2, _STEP = tl.constexpr(_C["LN2"]), tl.constexpr(_C["ANGLE_STEP"])
_L1, _L2, _L3, _L4 = (tl.constexpr(_C[k]) for k in ("L1", "L2", "L3", "L4"))
_S1, _S2, _S3, _S4 = (tl.constexpr(_C[k]) for k in ("S1", "S2", "S3", "S4"))
_C1, _C2, _C3, _C4, _C5 = (tl.constexpr(_C[k]) for k in ("C1", "C2", "C3", "C4", "C5"))


@triton.jit
def _pick(cond, a, b):
    return tl.where(cond, a, b)


@triton.jit
def _philox(c0, c1, c2, c3, k0, k1):
    for r in tl.static_range(10):
        if r > 0:
            k0 = k0 + _W0
            k1 = k1 + _W1
        hi0 = tl.umulhi(c0, _M0)
        lo0 = c0 * _M0
        hi1 = tl.umulhi(c2, _M1)
        lo1 = c2 * _M1
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


@triton.jit
def _box_muller(w0, w1):
    m = ((w0 >> 9) << 1) | 1
    x = m
    e = tl.zeros_like(m)
    t = x >> 16
    e = e + _pick(t != 0, 16, 0)
    x = _pick(t != 0, t, x)
    t = x >> 8
    e = e + _pick(t != 0, 8, 0)
    x = _pick(t != 0, t, x)
    t = x >> 4
    e = e + _pick(t != 0, 4, 0)
    x = _pick(t != 0, t, x)
    t = x >> 2
    e = e + _pick(t != 0, 2, 0)
    x = _pick(t != 0, t, x)
    e = e + _pick((x >> 1) != 0, 1, 0)
    mant = m << (23 - e)
    fold = mant > _SQRT2_MANTISSA
    f = mant.to(tl.float32) * _P23
    f = _pick(fold, f * 0.5, f)
    e = e + _pick(fold, 1, 0)
    s = tl.math.div_rn(f - 1.0, f + 1.0)
    s2 = s * s
    p = _L4 * s2 + _L3
    p = p * s2 + _L2
    p = p * s2 + _L1
    p = p * s2 + 2.0
    ln_f = s * p
    minus_ln_u = (24 - e).to(tl.float32) * _LN2 - ln_f
    r = tl.sqrt_rn(minus_ln_u * 2.0)
    octant = w1 >> 29
    steps = (w1 >> 6) & 0x7FFFFF
    odd = (octant & 1) == 1
    steps = _pick(odd, 0x800000 - steps, steps)
    a = steps.to(tl.float32) * _STEP
    a2 = a * a
    ps = _S4 * a2 + _S3
    ps = ps * a2 + _S2
    ps = ps * a2 + _S1
    sin_a = a + a * (a2 * ps)
    pc = _C5 * a2 + _C4
    pc = pc * a2 + _C3
    pc = pc * a2 + _C2
    pc = pc * a2 + _C1
    cos_a = 1.0 + a2 * pc
    s_ = _pick(odd, cos_a, sin_a)
    c_ = _pick(odd, sin_a, cos_a)
    quadrant = octant >> 1
    swap = (quadrant & 1) == 1
    s2_ = _pick(swap, c_, s_)
    c2_ = _pick(swap, s_, c_)
    s2_ = _pick(quadrant >= 2, -s2_, s2_)
    c2_ = _pick((quadrant == 1) | (quadrant == 2), -c2_, c2_)
    return r * c2_, r * s2_


@triton.jit
def _store_lane(out_ptr, z, lane, quads, cols_idx, row_start, rows, cols, stride, EQ2: tl.constexpr,
                row_mean_ptr, row_var_ptr, row_shift_ptr, cm, cv, cs, k):
    i = quads * 4 + lane  # (BLOCK_Q, 1) row of the field / matrix
    mask = (i >= row_start) & (i < row_start + rows) & (cols_idx < cols)
    if EQ2:
        rmask = (i >= row_start) & (i < row_start + rows)
        rm = tl.load(row_mean_ptr + i, mask=rmask, other=0.0)
        rv = tl.load(row_var_ptr + i, mask=rmask, other=0.0)
        rs = tl.load(row_shift_ptr + i, mask=rmask, other=0.0)
        t = rm - cm
        t = t * t
        t = t * k
        t = t + rv
        t = t + cv
        z = (z * tl.sqrt_rn(t) + rs) + cs
    tl.store(out_ptr + (i - row_start) * stride + cols_idx, z, mask=mask)


# k0, k1 (the draw's Philox key) change with every draw: not specialized on their value (Triton would compile a
# kernel per divisibility class of each key), and passed as int32 (see _as_int32).
@triton.jit(do_not_specialize=["k0", "k1"])
def _kernel(out_ptr, rows, cols, stride, row_start, col_start, q_first, k0, k1,
            row_mean_ptr, row_var_ptr, row_shift_ptr, col_mean_ptr, col_var_ptr, col_shift_ptr, k,
            EQ2: tl.constexpr, BQ: tl.constexpr, BC: tl.constexpr):
    pid_q = tl.program_id(0)
    pid_c = tl.program_id(1)
    quads = q_first + pid_q * BQ + tl.arange(0, BQ)[:, None]  # (BQ, 1) absolute row quad
    cols_idx = pid_c * BC + tl.arange(0, BC)[None, :]  # (1, BC) column inside the window
    c0 = (cols_idx + col_start).to(tl.uint32) + tl.zeros((BQ, BC), dtype=tl.uint32)
    c1 = quads.to(tl.uint32) + tl.zeros((BQ, BC), dtype=tl.uint32)
    zero = tl.zeros((BQ, BC), dtype=tl.uint32)
    key0 = k0.to(tl.uint32) + zero
    key1 = k1.to(tl.uint32) + zero
    w0, w1, w2, w3 = _philox(c0, c1, zero, zero, key0, key1)
    z0, z1 = _box_muller(w0, w1)
    z2, z3 = _box_muller(w2, w3)
    cm = 0.0
    cv = 0.0
    cs = 0.0
    if EQ2:
        cmask = cols_idx < cols
        cm = tl.load(col_mean_ptr + cols_idx, mask=cmask, other=0.0)
        cv = tl.load(col_var_ptr + cols_idx, mask=cmask, other=0.0)
        cs = tl.load(col_shift_ptr + cols_idx, mask=cmask, other=0.0)
    _store_lane(out_ptr, z0, 0, quads, cols_idx, row_start, rows, cols, stride, EQ2, row_mean_ptr, row_var_ptr,
                row_shift_ptr, cm, cv, cs, k)
    _store_lane(out_ptr, z1, 1, quads, cols_idx, row_start, rows, cols, stride, EQ2, row_mean_ptr, row_var_ptr,
                row_shift_ptr, cm, cv, cs, k)
    _store_lane(out_ptr, z2, 2, quads, cols_idx, row_start, rows, cols, stride, EQ2, row_mean_ptr, row_var_ptr,
                row_shift_ptr, cm, cv, cs, k)
    _store_lane(out_ptr, z3, 3, quads, cols_idx, row_start, rows, cols, stride, EQ2, row_mean_ptr, row_var_ptr,
                row_shift_ptr, cm, cv, cs, k)


def _as_int32(key: int) -> int:
    """A uint32 key's bits as a signed int32 (the kernel casts it back to uint32, a no-op on the bits).

    Triton types a Python int argument by its value, int32 below 2**31 and int64 above, so half of all keys would
    otherwise compile and run a second kernel.
    """
    return key - (1 << 32) if key >= (1 << 31) else key


def _launch(out: torch.Tensor, k0: int, k1: int, row_start: int, col_start: int, vectors, k: float, eq2: bool):
    rows, cols = out.shape
    if not rows or not cols:
        return out
    q_first = row_start // 4
    quads = (row_start + rows + 3) // 4 - q_first
    grid = (triton.cdiv(quads, BLOCK_Q), triton.cdiv(cols, BLOCK_C))
    extra = {} if _interpreting() else {"enable_fp_fusion": False}
    _kernel[grid](out, rows, cols, out.stride(0), row_start, col_start, q_first, _as_int32(k0), _as_int32(k1),
                  *vectors, k, EQ2=eq2, BQ=BLOCK_Q, BC=BLOCK_C, **extra)
    return out


def _interpreting() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def fill_normal(out: torch.Tensor, k0: int, k1: int, row_start: int, col_start: int) -> torch.Tensor:
    """Write the window of the normal field at (row_start, col_start) into ``out`` (contiguous fp32)."""
    dummy = torch.empty(1, dtype=torch.float32, device=out.device)
    return _launch(out, k0, k1, row_start, col_start, (dummy,) * 6, 0.0, False)


def fill_eq2(out: torch.Tensor, terms, k0: int, k1: int, row_start: int) -> torch.Tensor:
    """Rows ``row_start : row_start + len(out)`` of the Eq. (2) draw (``terms`` of the whole matrix) into ``out``."""
    vectors = tuple(t.detach().contiguous() for t in (terms.row_mean, terms.row_var, terms.row_shift,
                                                      terms.col_mean, terms.col_var, terms.col_shift))
    return _launch(out, k0, k1, row_start, 0, vectors, float(terms.k), True)
