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

import hashlib
from typing import NamedTuple

import torch

__all__ = [
    "RowColStats",
    "row_col_stats",
    "eq2_distribution",
    "sample_weight",
    "gdu_update",
    "wdu_update",
    "standardize_input",
    "derive_seed",
    "NOISE_BLOCK_ROWS",
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


def row_col_stats(weight: torch.Tensor) -> RowColStats:
    """Mean and population std of each row and each column of ``weight`` (n, m).

    This is the "INITIAL STATE" procedure of Algorithms 1 and 2, and also WDU's refit step.
    Computed in fp32 whatever the input dtype.
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {tuple(weight.shape)}")
    w = weight.detach().to(torch.float32)
    row_var, row_mean = torch.var_mean(w, dim=1, correction=0)
    col_var, col_mean = torch.var_mean(w, dim=0, correction=0)
    return RowColStats(row_mean, row_var.sqrt(), col_mean, col_var.sqrt())


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
    ``generator`` must live on ``device``; it is re-seeded, never the global RNG.
    """
    rows, cols = shape
    if row_start % NOISE_BLOCK_ROWS:
        raise ValueError(f"row_start={row_start} must be a multiple of NOISE_BLOCK_ROWS={NOISE_BLOCK_ROWS}")
    if out is None:
        out = torch.empty(rows, cols, device=device, dtype=torch.float32)
    for r0 in range(0, rows, NOISE_BLOCK_ROWS):
        r1 = min(rows, r0 + NOISE_BLOCK_ROWS)
        generator.manual_seed(derive_seed(draw_seed, (row_start + r0) // NOISE_BLOCK_ROWS))
        torch.randn(r1 - r0, cols, generator=generator, out=out[r0:r1])
    return out


def sample_weight(
    row_mean: torch.Tensor,
    row_std: torch.Tensor,
    col_mean: torch.Tensor,
    col_std: torch.Tensor,
    noise: torch.Tensor,
    num_rows: int | None = None,
) -> torch.Tensor:
    """W = mean + sqrt(var) * noise with (mean, var) from Eq. (2); ``noise`` is consumed in place.

    Equivalent to ``mean + var.sqrt() * noise`` from :func:`eq2_distribution` but with a single
    (n, m) temporary besides ``noise`` (which becomes the result). To sample a block of rows, pass
    that block's row statistics and the full matrix's row count as ``num_rows`` (Eq. 2 uses n, m of
    the whole matrix).
    """
    rows, m = row_mean.shape[0], col_mean.shape[0]
    n = rows if num_rows is None else int(num_rows)
    if noise.shape != (rows, m):
        raise ValueError(f"noise shape {tuple(noise.shape)} does not match ({rows}, {m})")
    a, b, c, d, k = _eq2_coefficients(n, m)
    rm, cm = row_mean[:, None], col_mean[None, :]
    std = (rm - cm).square_().mul_(k)
    std.add_((c * row_std.square())[:, None]).add_((d * col_std.square())[None, :]).sqrt_()
    return noise.mul_(std).add_(a * rm).add_(b * cm)


def _moments(x: torch.Tensor, y: torch.Tensor, dim: int):
    """Means, population variances and covariance of x and y along ``dim`` (fp32)."""
    vx, mx = torch.var_mean(x, dim=dim, correction=0)
    vy, my = torch.var_mean(y, dim=dim, correction=0)
    cov = (x * y).mean(dim=dim) - mx * my
    return mx, vx, my, vy, cov


def _gdu_side(mean, std, w, grad, lr, dim):
    _, vw, mg, vg, cov_wg = _moments(w, grad, dim)
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
    w = weight.detach().to(torch.float32)
    g = grad.detach().to(torch.float32)
    row_mean, row_std = _gdu_side(stats.row_mean, stats.row_std, w, g, lr, dim=1)
    col_mean, col_std = _gdu_side(stats.col_mean, stats.col_std, w, g, lr, dim=0)
    return RowColStats(row_mean, row_std, col_mean, col_std)


def wdu_update(weight: torch.Tensor, grad: torch.Tensor, lr: float) -> RowColStats:
    """Weight Distribution Update, Algorithm 2: refit row/column statistics of W' = W - lr * grad."""
    w_new = weight.detach().to(torch.float32) - lr * grad.detach().to(torch.float32)
    return row_col_stats(w_new)


def standardize_input(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Appendix D: standardize each input vector (last dim) to zero mean and unit variance."""
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return (x - mean) * torch.rsqrt(var + eps)
