"""CPU kernels of the portable generator, compiled by numba: the same numbers as :mod:`isogauss_hf.philox`, fast.

Machinery only: the definition of every number is :mod:`isogauss_hf.philox` (Philox4x32-10, ``box-muller-v1``,
the element -> counter map) and :func:`isogauss_hf.functional.sample_weight` with ``exact_sqrt=True`` (Eq. 2);
the tests check these kernels against both bit for bit. They are written as scalar loops over the columns of
four rows (one Philox counter feeds the four rows of a row quad), which LLVM vectorizes; the operations and
their order are those of the reference, in float32, without fast-math (no reassociation, no FMA contraction),
so the result does not depend on the CPU's instruction set (``NUMBA_CPU_NAME=generic`` gives the same bits).

``error_model="numpy"`` is what lets the loops vectorize (no Python division check). Work is split over row
quads and run on torch's own OpenMP threads (:func:`isogauss_hf._runtime.openmp_parallel`), or else on the
package's thread pool (:func:`isogauss_hf._runtime.noise_pool`); the kernels release the GIL. numba compiles them on first use (a few seconds) and caches the result next to this file.
A user without numba gets the reference implementation (same numbers, far slower): see
:mod:`isogauss_hf.noise`.
"""

from __future__ import annotations

import numpy as np
import torch
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _runtime
from .philox import MASK32, PHILOX_M, PHILOX_W, PHILOX_ROUNDS, TRANSFORM_CONSTANTS

__all__ = ["fill_normal", "fill_eq2"]

_U = np.uint64
_F = np.float32
_M0, _M1 = _U(PHILOX_M[0]), _U(PHILOX_M[1])
_W0, _W1 = _U(PHILOX_W[0]), _U(PHILOX_W[1])
_MASK = _U(MASK32)
_ROUNDS = PHILOX_ROUNDS
_SQRT2_MANTISSA = _U(TRANSFORM_CONSTANTS["SQRT2_MANTISSA"])
_LN2 = _F(TRANSFORM_CONSTANTS["LN2"])
_L1, _L2, _L3, _L4 = (_F(TRANSFORM_CONSTANTS[k]) for k in ("L1", "L2", "L3", "L4"))
_STEP = _F(TRANSFORM_CONSTANTS["ANGLE_STEP"])
_S1, _S2, _S3, _S4 = (_F(TRANSFORM_CONSTANTS[k]) for k in ("S1", "S2", "S3", "S4"))
_C1, _C2, _C3, _C4, _C5 = (_F(TRANSFORM_CONSTANTS[k]) for k in ("C1", "C2", "C3", "C4", "C5"))
_ONE, _TWO, _HALF = _F(1.0), _F(2.0), _F(0.5)
_P23 = _F(2.0 ** -23)

_JIT = dict(nogil=True, cache=True, error_model="numpy")


@njit(inline="always", **_JIT)
def _philox(c0, c1, c2, c3, k0, k1):
    for r in range(_ROUNDS):
        if r > 0:
            k0 = (k0 + _W0) & _MASK
            k1 = (k1 + _W1) & _MASK
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (p1 >> _U(32)) ^ c1 ^ k0, p1 & _MASK, (p0 >> _U(32)) ^ c3 ^ k1, p0 & _MASK
    return c0, c1, c2, c3


@njit(inline="always", **_JIT)
def _pick(cond, a, b):
    return a if cond else b


@njit(inline="always", **_JIT)
def _box_muller(w0, w1):
    m = ((w0 >> _U(9)) << _U(1)) | _U(1)
    e = _U(0)  # floor(log2 m) by binary search, written out (the loop stays branch-free and vectorizes)
    x = m
    t = x >> _U(16)
    e = e + _pick(t != _U(0), _U(16), _U(0))
    x = _pick(t != _U(0), t, x)
    t = x >> _U(8)
    e = e + _pick(t != _U(0), _U(8), _U(0))
    x = _pick(t != _U(0), t, x)
    t = x >> _U(4)
    e = e + _pick(t != _U(0), _U(4), _U(0))
    x = _pick(t != _U(0), t, x)
    t = x >> _U(2)
    e = e + _pick(t != _U(0), _U(2), _U(0))
    x = _pick(t != _U(0), t, x)
    e = e + _pick((x >> _U(1)) != _U(0), _U(1), _U(0))
    mant = m << (_U(23) - e)
    fold = mant > _SQRT2_MANTISSA
    f = _F(mant) * _P23
    f = _pick(fold, f * _HALF, f)
    e = e + _pick(fold, _U(1), _U(0))
    s = (f - _ONE) / (f + _ONE)
    s2 = s * s
    p = _L4 * s2 + _L3
    p = p * s2 + _L2
    p = p * s2 + _L1
    p = p * s2 + _TWO
    ln_f = s * p
    minus_ln_u = _F(_U(24) - e) * _LN2 - ln_f
    r = np.sqrt(minus_ln_u * _TWO)
    octant = w1 >> _U(29)
    steps = (w1 >> _U(6)) & _U(0x7FFFFF)
    odd = (octant & _U(1)) == _U(1)
    steps = _pick(odd, _U(0x800000) - steps, steps)
    a = _F(steps) * _STEP
    a2 = a * a
    ps = _S4 * a2 + _S3
    ps = ps * a2 + _S2
    ps = ps * a2 + _S1
    sin_a = a + a * (a2 * ps)
    pc = _C5 * a2 + _C4
    pc = pc * a2 + _C3
    pc = pc * a2 + _C2
    pc = pc * a2 + _C1
    cos_a = _ONE + a2 * pc
    s_ = _pick(odd, cos_a, sin_a)
    c_ = _pick(odd, sin_a, cos_a)
    quadrant = octant >> _U(1)
    swap = (quadrant & _U(1)) == _U(1)
    s2_ = _pick(swap, c_, s_)
    c2_ = _pick(swap, s_, c_)
    s2_ = _pick(quadrant >= _U(2), -s2_, s2_)
    c2_ = _pick((quadrant == _U(1)) | (quadrant == _U(2)), -c2_, c2_)
    return r * c2_, r * s2_


@njit(**_JIT)
def _quad(z, q, col_start, k0, k1):
    """The four rows 4q .. 4q+3 of the field, columns col_start .. col_start + z.shape[1], into z (4, cols)."""
    z0, z1, z2, z3 = z[0], z[1], z[2], z[3]
    for jj in range(z.shape[1]):
        w0, w1, w2, w3 = _philox(_U(col_start + jj), _U(q), _U(0), _U(0), k0, k1)
        a, b = _box_muller(w0, w1)
        c, d = _box_muller(w2, w3)
        z0[jj] = a
        z1[jj] = b
        z2[jj] = c
        z3[jj] = d


@njit(**_JIT)
def _normal_rows(out, row_start, col_start, q_lo, q_hi, k0, k1):
    rows, cols = out.shape
    z = np.empty((4, cols), np.float32)
    for q in range(q_lo, q_hi):
        _quad(z, q, col_start, k0, k1)
        for lane in range(4):
            i = 4 * q + lane - row_start
            if 0 <= i < rows:
                out[i, :] = z[lane]


@njit(inline="always", **_JIT)
def _eq2_row(o, z, col_mean, col_var, col_shift, row_mean_i, row_var_i, row_shift_i, k):
    for jj in range(o.shape[0]):
        t = row_mean_i - col_mean[jj]
        t = t * t
        t = t * k
        t = t + row_var_i
        t = t + col_var[jj]
        o[jj] = (z[jj] * np.sqrt(t) + row_shift_i) + col_shift[jj]


@njit(**_JIT)
def _eq2_rows(out, row_start, q_lo, q_hi, k0, k1, row_mean, row_var, row_shift, col_mean, col_var, col_shift, k):
    rows, cols = out.shape
    z = np.empty((4, cols), np.float32)
    for q in range(q_lo, q_hi):
        _quad(z, q, 0, k0, k1)
        for lane in range(4):
            i = 4 * q + lane  # row of the matrix
            if row_start <= i < row_start + rows:
                _eq2_row(out[i - row_start], z[lane], col_mean, col_var, col_shift, row_mean[i], row_var[i],
                         row_shift[i], k)


# ---------------------------------------------------------------------------------------------------- threads
# On torch's OpenMP team (:func:`isogauss_hf._runtime.openmp_parallel`): ``GOMP_parallel`` calls a C callback on
# every thread of the team; the callbacks below take chunks of row quads from an atomic counter in an int64
# argument block (no thread ids needed, and a core busy elsewhere simply takes fewer chunks).
@intrinsic
def _as_pointer(typingctx, address):
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


@intrinsic
def _next_chunk(typingctx, data):
    """Atomically ``block[0] += 1``; the previous value (the chunk this thread takes)."""
    def codegen(context, builder, signature, args):
        counter = builder.bitcast(args[0], ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", counter, ir.Constant(ir.IntType(64), 1), "monotonic")

    return types.int64(types.voidptr), codegen


_HEAD = 4  # block: [next chunk, chunks, quads per chunk, first quad], then the kernel's arguments


@cfunc(types.void(types.voidptr), cache=True, error_model="numpy")
def _normal_team(data):
    a = carray(data, (_HEAD + 7,), np.int64)
    out = carray(_as_pointer(a[_HEAD]), (a[_HEAD + 1], a[_HEAD + 2]), np.float32)
    last = a[3] + a[1] * a[2]
    while True:
        chunk = _next_chunk(data)
        if chunk >= a[1]:
            break
        lo = a[3] + chunk * a[2]
        _normal_rows(out, a[_HEAD + 3], a[_HEAD + 4], lo, min(lo + a[2], last), _U(a[_HEAD + 5]), _U(a[_HEAD + 6]))


@cfunc(types.void(types.voidptr), cache=True, error_model="numpy")
def _eq2_team(data):
    a = carray(data, (_HEAD + 14,), np.int64)
    rows, cols, n = a[_HEAD + 1], a[_HEAD + 2], a[_HEAD + 12]
    out = carray(_as_pointer(a[_HEAD]), (rows, cols), np.float32)
    vec = [carray(_as_pointer(a[_HEAD + 6 + i]), (n if i < 3 else cols,), np.float32) for i in range(6)]
    k = carray(_as_pointer(a[_HEAD + 13]), (1,), np.float32)[0]
    last = a[3] + a[1] * a[2]
    while True:
        chunk = _next_chunk(data)
        if chunk >= a[1]:
            break
        lo = a[3] + chunk * a[2]
        _eq2_rows(out, a[_HEAD + 3], lo, min(lo + a[2], last), _U(a[_HEAD + 4]), _U(a[_HEAD + 5]), vec[0], vec[1],
                  vec[2], vec[3], vec[4], vec[5], k)


def _run_over_quads(kernel, team, team_args, rows: int, cols: int, row_start: int) -> None:
    """Run ``kernel(q_lo, q_hi)`` over the row quads of a window on the CPU noise threads: torch's OpenMP team
    (``team`` callback with ``team_args``) when available, else the package's thread pool."""
    q0, q1 = row_start // 4, (row_start + rows + 3) // 4
    jobs = q1 - q0
    workers = _runtime.noise_workers(jobs) if rows * cols >= (1 << 16) else 1
    if workers <= 1:
        kernel(q0, q1)
        return
    parallel = _runtime.openmp_parallel()
    if parallel is not None:
        per_chunk = max(1, -(-jobs // (8 * workers)))
        block = np.array([0, -(-jobs // per_chunk), per_chunk, q0, *team_args], dtype=np.int64)
        parallel(team.address, block.ctypes.data, workers, 0)  # ctypes releases the GIL for the call
        return
    bounds = [q0 + (jobs * w) // workers for w in range(workers + 1)]
    pool = _runtime.noise_pool(workers)
    for future in [pool.submit(kernel, a, b) for a, b in zip(bounds, bounds[1:]) if b > a]:
        future.result()


def fill_normal(out: torch.Tensor, k0: int, k1: int, row_start: int, col_start: int) -> torch.Tensor:
    """Write the window of the normal field at (row_start, col_start) into ``out`` (contiguous fp32 CPU)."""
    arr = out.numpy()
    rows, cols = arr.shape
    if rows and cols:
        team_args = (arr.ctypes.data, rows, cols, row_start, col_start, k0, k1)
        _run_over_quads(lambda a, b: _normal_rows(arr, row_start, col_start, a, b, _U(k0), _U(k1)), _normal_team,
                        team_args, rows, cols, row_start)
    return out


def fill_eq2(out: torch.Tensor, terms, k0: int, k1: int, row_start: int) -> torch.Tensor:
    """Rows ``row_start : row_start + len(out)`` of the Eq. (2) draw into ``out`` (contiguous fp32 CPU).

    ``terms``: :class:`isogauss_hf.functional.Eq2Terms` of the whole matrix (fp32 CPU vectors).
    """
    arr = out.numpy()
    rows, cols = arr.shape
    if rows and cols:
        vec = [t.detach().contiguous().numpy() for t in (terms.row_mean, terms.row_var, terms.row_shift,
                                                         terms.col_mean, terms.col_var, terms.col_shift)]
        k = np.array([terms.k], dtype=np.float32)
        team_args = (arr.ctypes.data, rows, cols, row_start, k0, k1, *(v.ctypes.data for v in vec), vec[0].shape[0],
                     k.ctypes.data)
        _run_over_quads(lambda a, b: _eq2_rows(arr, row_start, a, b, _U(k0), _U(k1), *vec, k[0]), _eq2_team,
                        team_args, rows, cols, row_start)
    return out
