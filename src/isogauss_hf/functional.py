"""Pure tensor functions for row/column isotropic Gaussian layers.

Every function here is stateless and side-effect free: no module state, no global RNG. Shapes follow
the paper: a weight ``W`` has ``n`` rows (output features) and ``m`` columns (input features); row
statistics are vectors of length ``n`` and column statistics vectors of length ``m``. All statistics
are population statistics (``correction=0``), as in Algorithms 1 and 2.

References are to "An Isotropic Gaussian Perspective on Fully Connected Layers":
Eq. (2) combines row and column statistics, Eqs. (5)-(6) / Algorithm 1 define GDU,
Algorithm 2 defines WDU, Appendix D defines input standardization.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import warnings
from typing import NamedTuple

import torch

__all__ = [
    "RowColStats",
    "row_col_stats",
    "eq2_distribution",
    "sample_weight",
    "gdu_update",
    "wdu_update",
    "wdu_update_fixed_draw",
    "expected_refit",
    "standardize_input",
    "derive_seed",
    "NOISE_BLOCK_ROWS",
    "standard_normal_noise",
    "release_workspace",
    "set_compile",
    "compile_enabled",
    "aux_threads",
]

#: Noise for a weight draw is generated in blocks of this many rows, each from its own seed, so any
#: row block of a draw can be regenerated on its own (the low-memory path) and equals the same rows
#: of the whole draw. Changing it changes every seeded draw: it is part of the checkpoint contract.
NOISE_BLOCK_ROWS = 256


class RowColStats(NamedTuple):
    """Row and column statistics of one weight matrix (all fp32 vectors)."""

    row_mean: torch.Tensor  # (n,)
    row_std: torch.Tensor  # (n,)
    col_mean: torch.Tensor  # (m,)
    col_std: torch.Tensor  # (m,)


def _as_f32(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached in fp32, without a copy when it already is fp32."""
    t = t.detach()
    return t if t.dtype == torch.float32 else t.to(torch.float32)


def _centered(x: torch.Tensor, mean: torch.Tensor, dim: int, out: torch.Tensor | None) -> torch.Tensor:
    """``x - mean`` broadcast along ``dim`` (into ``out`` when given: a reused scratch buffer)."""
    return torch.sub(x, mean.unsqueeze(dim), out=out) if out is not None else x - mean.unsqueeze(dim)


def _mean_var(x: torch.Tensor, dim: int, scratch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance of ``x`` along ``dim`` by the exact two-pass (centered) formula.

    Same values as ``torch.var_mean(x, dim, correction=0)`` up to rounding, but built from plain sums
    and one elementwise pass, which on CPU is about ten times faster than the Welford kernel.
    ``scratch`` (same shape as ``x``) receives the centered values; it is overwritten.
    """
    count = x.shape[dim]
    mean = x.sum(dim) / count
    c = _centered(x, mean, dim, scratch)
    return mean, c.square_().sum(dim) / count


def row_col_stats(weight: torch.Tensor, *, scratch: torch.Tensor | None = None) -> RowColStats:
    """Mean and population std of each row and each column of ``weight`` (n, m).

    This is the "INITIAL STATE" procedure of Algorithms 1 and 2, and also WDU's refit step.
    Computed in fp32 whatever the input dtype; ``scratch`` is an optional fp32 (n, m) work buffer
    (overwritten) that saves the one temporary.
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {tuple(weight.shape)}")
    w = _as_f32(weight)
    if scratch is None:
        scratch = torch.empty_like(w)
    row_mean, row_var = _mean_var(w, 1, scratch)
    col_mean, col_var = _mean_var(w, 0, scratch)
    return RowColStats(row_mean, row_var.sqrt_(), col_mean, col_var.sqrt_())


def _eq2_coefficients(n: int, m: int) -> tuple[float, float, float, float, float]:
    """Scalar coefficients of Eq. (2) for an (n, m) matrix."""
    s = float(m + n)
    return m / s, n / s, (m - 1) / s, (n - 1) / s, (m * n) / (s * s)


def eq2_distribution(
    row_mean: torch.Tensor, row_std: torch.Tensor, col_mean: torch.Tensor, col_std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element mean and variance of Eq. (2), each of shape (n, m).

    mu_ij  = (m * mu_i + n * mu_j) / (m + n)
    var_ij = ((m - 1) * s_i^2 + (n - 1) * s_j^2) / (m + n) + m * n / (m + n)^2 * (mu_i - mu_j)^2

    with (mu_i, s_i) the statistics of row i (n rows) and (mu_j, s_j) those of column j (m columns).
    """
    n, m = row_mean.shape[0], col_mean.shape[0]
    a, b, c, d, k = _eq2_coefficients(n, m)
    rm, cm = row_mean[:, None], col_mean[None, :]
    mean = a * rm + b * cm
    diff = rm - cm
    var = (c * row_std.square())[:, None] + (d * col_std.square())[None, :] + k * diff * diff
    return mean, var


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any printable parts (same on every platform and process).

    Used to seed explicit ``torch.Generator`` objects: seeds derive from the layer's seed, the noise
    stream, the draw index and the noise block, never from the global RNG.
    """
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _noise_block(out: torch.Tensor, seed: int, generator: torch.Generator | None) -> None:
    if generator is None:  # a worker thread: its own generator (a generator serializes its users)
        generator = torch.Generator(device=out.device)
    generator.manual_seed(seed)
    torch.randn(out.shape, generator=generator, out=out)


_POOL: tuple[int, int, object] | None = None  # (pid, workers, ThreadPoolExecutor)


def _noise_pool(workers: int):
    """A process-local thread pool for CPU noise blocks (recreated after fork or a thread-count change)."""
    global _POOL
    import os

    pid = os.getpid()
    if _POOL is None or _POOL[0] != pid or _POOL[1] != workers:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = (pid, workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="isogauss-noise"))
    return _POOL[2]


#: CPU noise blocks are generated on this many threads at once (``torch.randn`` itself is serial on
#: CPU). ``None`` follows ``torch.get_num_threads()``; 1 disables the thread pool. Values are the
#: same either way: each block has its own seed.
NOISE_THREADS: int | None = None


def standard_normal_noise(
    shape: tuple[int, int],
    draw_seed: int,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    row_start: int = 0,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Standard normal noise for rows ``row_start : row_start + shape[0]`` of a draw.

    Rows are produced in blocks of :data:`NOISE_BLOCK_ROWS`, block ``b`` from
    ``derive_seed(draw_seed, b)``; ``row_start`` must be a multiple of the block size, so that any
    row block of a draw can be regenerated alone and is identical to the same rows of the full draw.
    ``generator`` must live on ``device``; it is re-seeded, never the global RNG. On CPU, blocks are
    generated concurrently on up to :data:`NOISE_THREADS` threads (same values: a block depends only
    on its seed).
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
    workers = min(len(jobs), NOISE_THREADS or torch.get_num_threads())
    if out.device.type != "cpu" or workers <= 1 or rows * cols < (1 << 16):
        for block, seed in jobs:
            _noise_block(block, seed, generator)
        return out
    pool = _noise_pool(workers)
    for future in [pool.submit(_noise_block, block, seed, None) for block, seed in jobs]:
        future.result()
    return out


# ---------------------------------------------------------------------------------------------------
# Threads for the layer's own memory-bound work
# ---------------------------------------------------------------------------------------------------
#: Intra-op threads for the Gaussian layer's own memory-bound passes on CPU (the Eq. 2 combine in
#: :func:`sample_weight` and the GDU/WDU statistics); the matmuls keep ``torch.get_num_threads()``.
#: ``"auto"`` (default): 1 thread when torch uses at most 4, else torch's count. Each of these passes
#: is short, and every OpenMP parallel region ends in a barrier that waits for the slowest thread; when
#: other processes share a few cores that wait dominates (measured: a (3072, 768) GDU step went from
#: 2.2x to 1.1x a dense step with 2 threads on a loaded 2-core machine). ``None``: torch's count; an
#: int: that many threads.
AUX_THREADS: int | str | None = "auto"


def _aux_thread_count() -> int | None:
    current = torch.get_num_threads()
    wanted = AUX_THREADS
    if wanted == "auto":
        wanted = 1 if current <= 4 else None
    if wanted is None or int(wanted) >= current:
        return None
    return max(1, int(wanted))


@contextlib.contextmanager
def aux_threads(device: torch.device | str | None = None):
    """Run the enclosed CPU work with :data:`AUX_THREADS` intra-op threads (restored afterwards)."""
    if device is not None and torch.device(device).type != "cpu":
        yield
        return
    count = _aux_thread_count()
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------------
# Optional torch.compile kernels (opt-in): each fuses many elementwise/reduction passes into a few.
# ---------------------------------------------------------------------------------------------------
_COMPILE = os.environ.get("ISOGAUSS_COMPILE", "0").strip().lower() in ("1", "true", "yes")
_COMPILED: dict[str, object] = {}
_COMPILE_FAILED = False


def set_compile(enabled: bool) -> None:
    """Use ``torch.compile``d fused kernels for sampling (Eq. 2) and the GDU/WDU statistics.

    Off by default (also switched on by the environment variable ``ISOGAUSS_COMPILE=1``): the first
    call compiles for tens of seconds, after which one fused kernel replaces about ten passes over the
    (n, m) matrix, which matters most when many threads share few cores. Results equal the eager path
    up to float rounding (not bit for bit). If compiling or running a kernel fails, a warning is given
    once and the eager path is used from then on.
    """
    global _COMPILE, _COMPILE_FAILED
    _COMPILE = bool(enabled)
    _COMPILE_FAILED = False


def compile_enabled() -> bool:
    """Whether the ``torch.compile`` kernels are in use (see :func:`set_compile`)."""
    return _COMPILE and not _COMPILE_FAILED


def _run_compiled(name: str, fn, *args):
    """``fn(*args)`` through its compiled version, or None when compiling is off or has failed."""
    global _COMPILE_FAILED
    if not _COMPILE or _COMPILE_FAILED:
        return None
    compiled = _COMPILED.get(name)
    try:
        if compiled is None:
            compiled = _COMPILED[name] = torch.compile(fn, dynamic=True)
        with torch.no_grad():
            return compiled(*args)
    except Exception as exc:  # noqa: BLE001 - any compiler/toolchain failure falls back to eager
        _COMPILE_FAILED = True
        warnings.warn(f"isogauss_hf: torch.compile kernel {name!r} failed ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}); using the eager path", RuntimeWarning)
        return None


def _sample_kernel(rm, rs, cm, cs, noise, n: int) -> None:
    m = cm.shape[0]
    s = n + m
    rm2, cm2 = rm[:, None], cm[None, :]
    diff = rm2 - cm2
    var = (m * n / (s * s)) * diff * diff + ((m - 1) / s * rs * rs)[:, None] + ((n - 1) / s * cs * cs)[None, :]
    noise.copy_(noise * var.sqrt() + (m / s) * rm2 + (n / s) * cm2)


def _moments_kernel(x, y, dim: int):
    count = x.shape[dim]
    mx = x.sum(dim, keepdim=True) / count
    my = y.sum(dim, keepdim=True) / count
    cx, cy = x - mx, y - my
    return (mx.squeeze(dim), (cx * cx).sum(dim) / count, my.squeeze(dim), (cy * cy).sum(dim) / count,
            (cx * cy).sum(dim) / count)


def _gdu_kernel(w, g):
    return _moments_kernel(w, g, 1) + _moments_kernel(w, g, 0)


def _wdu_kernel(w, g, lr):
    w_new = w - lr * g
    row_mean = w_new.mean(1, keepdim=True)
    col_mean = w_new.mean(0, keepdim=True)
    row_var = ((w_new - row_mean) ** 2).mean(1)
    col_var = ((w_new - col_mean) ** 2).mean(0)
    return row_mean.squeeze(1), row_var.sqrt(), col_mean.squeeze(0), col_var.sqrt()


def sample_weight(
    row_mean: torch.Tensor,
    row_std: torch.Tensor,
    col_mean: torch.Tensor,
    col_std: torch.Tensor,
    noise: torch.Tensor,
    num_rows: int | None = None,
    *,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """W = mean + sqrt(var) * noise with (mean, var) from Eq. (2); ``noise`` is consumed in place.

    Equivalent to ``mean + var.sqrt() * noise`` from :func:`eq2_distribution` but with a single
    (n, m) temporary besides ``noise`` (which becomes the result); pass ``scratch`` (fp32, same shape
    as ``noise``, overwritten) to reuse a buffer for it. To sample a block of rows, pass that block's
    row statistics and the full matrix's row count as ``num_rows`` (Eq. 2 uses n, m of the whole
    matrix). Only correctly rounded elementwise operations are used, so every element is bit-for-bit
    the same whether it is computed in the whole matrix or in a row block, on any number of threads.
    """
    rows, m = row_mean.shape[0], col_mean.shape[0]
    n = rows if num_rows is None else int(num_rows)
    if noise.shape != (rows, m):
        raise ValueError(f"noise shape {tuple(noise.shape)} does not match ({rows}, {m})")
    with aux_threads(noise.device):
        return _sample_weight(row_mean, row_std, col_mean, col_std, noise, n, m, scratch)


def _sample_weight(row_mean, row_std, col_mean, col_std, noise, n, m, scratch):
    if _COMPILE and not _COMPILE_FAILED and noise.is_contiguous():
        _run_compiled("sample", _sample_kernel, row_mean, row_std, col_mean, col_std, noise, n)
        if not _COMPILE_FAILED:  # the fused kernel wrote the weight into ``noise``
            return noise
    a, b, c, d, k = _eq2_coefficients(n, m)
    rm, cm = row_mean[:, None], col_mean[None, :]
    std = torch.sub(rm, cm, out=scratch) if scratch is not None else rm - cm
    std.square_().mul_(k)
    std.add_((c * row_std.square())[:, None]).add_((d * col_std.square())[None, :]).sqrt_()
    return noise.mul_(std).add_(a * rm).add_(b * cm)


class _Workspace(threading.local):
    def __init__(self) -> None:
        self.buffers: dict[int, torch.Tensor] = {}


_WORKSPACE = _Workspace()

#: Reuse the (n, m) scratch buffers of :func:`gdu_update`/:func:`wdu_update` across calls on CPU
#: (per thread; sized to the largest layer seen). A fresh multi-megabyte CPU buffer is page-faulted in
#: on every call, which costs about as much as the arithmetic done in it. CUDA's caching allocator
#: already reuses memory, so CUDA tensors always get fresh buffers. :func:`release_workspace` frees them.
REUSE_WORKSPACE = True


def _scratch(slot: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialized fp32 buffer shaped like ``like`` (slot ``slot`` of the CPU workspace)."""
    if not REUSE_WORKSPACE or like.device.type != "cpu":
        return torch.empty(like.shape, device=like.device, dtype=torch.float32)
    buf = _WORKSPACE.buffers.get(slot)
    if buf is None or buf.numel() < like.numel():
        buf = torch.empty(like.numel(), dtype=torch.float32)
        _WORKSPACE.buffers[slot] = buf
    return buf[: like.numel()].view(like.shape)


def release_workspace() -> None:
    """Free the scratch buffers this thread's distribution updates keep for reuse."""
    _WORKSPACE.buffers.clear()


def _moments(x: torch.Tensor, y: torch.Tensor, dim: int, scratch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
    """Means, population variances and covariance of x and y along ``dim`` (fp32), exact two-pass.

    ``scratch`` holds three (n, m) buffers (overwritten) for the centered x, centered y and their
    product: every statistic is then a plain sum, with no Welford pass and no other temporary.
    """
    sx, sy, sxy = scratch
    count = x.shape[dim]
    mx = x.sum(dim) / count
    my = y.sum(dim) / count
    cx = _centered(x, mx, dim, sx)
    cy = _centered(y, my, dim, sy)
    cov = torch.mul(cx, cy, out=sxy).sum(dim) / count
    vx = cx.square_().sum(dim) / count
    vy = cy.square_().sum(dim) / count
    return mx, vx, my, vy, cov


def _gdu_side(mean, std, moments, lr):
    _, vw, mg, vg, cov_wg = moments
    step_mean = -lr * mg
    step_std = abs(lr) * vg.clamp_min(0).sqrt()
    sw = vw.clamp_min(0).sqrt()
    denom = sw * vg.clamp_min(0).sqrt()
    # corr(W, D) with D = -lr * grad; rho = 0 where either side has zero spread.
    sign = -1.0 if lr >= 0 else 1.0
    rho = torch.where(denom > 0, sign * cov_wg / denom.clamp_min(torch.finfo(denom.dtype).tiny), 0.0)
    rho = rho.clamp(-1.0, 1.0)
    new_var = std.square() + step_std.square() + 2.0 * std * step_std * rho
    return mean + step_mean, new_var.clamp_min(0).sqrt()


def gdu_update(stats: RowColStats, weight: torch.Tensor, grad: torch.Tensor, lr: float) -> RowColStats:
    """Gradient Distribution Update, Algorithm 1 (Eqs. 5-6), for every row and every column.

    With the step D = -lr * grad and the sampled weight W:
        mean <- mean + Mean(D)
        std  <- sqrt(std^2 + Std(D)^2 + 2 * std * Std(D) * rho),   rho = corr(W, D)
    over each row (length-m vectors) and each column (length-n vectors); ``std`` is the stored
    statistic, ``rho`` is 0 where W or D has zero spread.
    """
    w = _as_f32(weight)
    g = _as_f32(grad)
    if w.shape != g.shape or w.dim() != 2:
        raise ValueError(f"weight {tuple(w.shape)} and grad {tuple(g.shape)} must be the same 2-D shape")
    with aux_threads(w.device):
        fused = _run_compiled("gdu", _gdu_kernel, w, g)
        if fused is not None:
            rows, cols = fused[:5], fused[5:]
        else:  # rows and columns share three scratch buffers: the only (n, m) temporaries of the update
            scratch = tuple(_scratch(slot, w) for slot in range(3))
            rows, cols = _moments(w, g, 1, scratch), _moments(w, g, 0, scratch)
        # (vector work, but torch's sqrt goes through MKL VML, parallel from 2048 elements on)
        row_mean, row_std = _gdu_side(stats.row_mean, stats.row_std, rows, lr)
        col_mean, col_std = _gdu_side(stats.col_mean, stats.col_std, cols, lr)
    return RowColStats(row_mean, row_std, col_mean, col_std)


def wdu_update(weight: torch.Tensor, grad: torch.Tensor, lr: float) -> RowColStats:
    """Weight Distribution Update, Algorithm 2: refit row/column statistics of W' = W - lr * grad."""
    w = _as_f32(weight)
    g = _as_f32(grad)
    if w.shape != g.shape:
        raise ValueError(f"weight {tuple(w.shape)} and grad {tuple(g.shape)} must have the same shape")
    with aux_threads(w.device):
        lr_t = torch.tensor(float(lr), dtype=torch.float32, device=w.device)
        fused = _run_compiled("wdu", _wdu_kernel, w, g, lr_t)
        if fused is not None:
            return RowColStats(*fused)
        # W' in one fused pass into a reused buffer (the inputs are left untouched), then one scratch buffer.
        w_new = torch.add(w, g, alpha=-float(lr), out=_scratch(0, w))
        return row_col_stats(w_new, scratch=_scratch(1, w))


def expected_refit(stats: RowColStats) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expectation over weight draws of the row/column (mean, population variance) of W ~ Eq. (2).

    With mu_ij = a*mu_i + b*mu_j and var_ij from Eq. (2) (a = m/(m+n), b = n/(m+n)):
        E[rowmean_i]  = a*mu_i + b*mean_j(mu_j)                              (Eq. 8)
        E[rowvar_i]   = b^2 * var_j(mu_j) + (1 - 1/m) * mean_j(var_ij)
    and symmetrically for columns (Eq. 9). This is what WDU's refit of a *fresh* draw gives on average:
    the averaging loop between row and column means and the shrinking variance of Section 3.2.
    Returns (row_mean, row_var, col_mean, col_var); O(n + m), no (n, m) temporary.
    """
    rm, rs, cm, cs = (t.to(torch.float32) for t in stats)
    n, m = rm.shape[0], cm.shape[0]
    a, b, c, d, k = _eq2_coefficients(n, m)
    cm_bar, rm_bar = cm.mean(), rm.mean()
    cm_var = (cm - cm_bar).square().mean()
    rm_var = (rm - rm_bar).square().mean()
    rs2, cs2 = rs.square(), cs.square()
    row_mean = a * rm + b * cm_bar
    row_noise = c * rs2 + d * cs2.mean() + k * ((rm - cm_bar).square() + cm_var)  # mean_j var_ij
    row_var = (b * b) * cm_var + (1.0 - 1.0 / m) * row_noise
    col_mean = a * rm_bar + b * cm
    col_noise = c * rs2.mean() + d * cs2 + k * ((cm - rm_bar).square() + rm_var)  # mean_i var_ij
    col_var = (a * a) * rm_var + (1.0 - 1.0 / n) * col_noise
    return row_mean, row_var, col_mean, col_var


def wdu_update_fixed_draw(stats: RowColStats, weight: torch.Tensor, grad: torch.Tensor, lr: float) -> RowColStats:
    """WDU (Algorithm 2) for a layer that always uses the same draw (``noise='seeded'``).

    Plain WDU refits the sample statistics of W' = W - lr*grad. With one fixed draw W, the draw's own
    sampling error (its row/column means and spread differ from the parameters) is re-absorbed at
    every step in the same direction, so the statistics drift even with a zero gradient
    (``scripts/measure_wdu_seeded_drift.py``). Here the draw's own statistics are replaced by their
    expectation over draws (:func:`expected_refit`) while the effect of the step is measured on the
    actual draw:
        mean <- E[mean(W)] + mean(W') - mean(W)         = E[mean(W)] - lr*mean(grad)
        var  <- E[var(W)]  + var(W')  - var(W)          = E[var(W)] + lr^2*var(grad) - 2*lr*cov(W, grad)
    per row and per column. In expectation over draws this equals plain WDU, without the drift.
    """
    w = _as_f32(weight)
    g = _as_f32(grad)
    if w.shape != g.shape or w.dim() != 2:
        raise ValueError(f"weight {tuple(w.shape)} and grad {tuple(g.shape)} must be the same 2-D shape")
    row_mean, row_var, col_mean, col_var = expected_refit(stats)
    lr = float(lr)
    with aux_threads(w.device):
        scratch = tuple(_scratch(slot, w) for slot in range(3))
        out = []
        for mean, var, dim in ((row_mean, row_var, 1), (col_mean, col_var, 0)):
            _, _, mg, vg, cov = _moments(w, g, dim, scratch)
            new_var = var + (lr * lr) * vg - (2.0 * lr) * cov
            out += [mean - lr * mg, new_var.clamp_min(0).sqrt()]
    return RowColStats(*out)


def standardize_input(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Appendix D: standardize each input vector (last dim) to zero mean and unit variance."""
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return (x - mean) * torch.rsqrt(var + eps)
