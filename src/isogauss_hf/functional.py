"""The equations of the method as pure tensor functions, each written once.

No module state, no global RNG, no threads: how these run (threads, ``torch.compile``, reused scratch
buffers) is decided in :mod:`isogauss_hf._runtime`, and the seeded noise they consume comes from
:mod:`isogauss_hf.noise`. A function that accepts ``scratch`` writes its (n, m) temporaries there instead
of allocating them; the values are the same either way.

Shapes follow the paper: a weight ``W`` has ``n`` rows (output features) and ``m`` columns (input
features); row statistics are vectors of length ``n``, column statistics of length ``m``. Statistics are
population statistics (``correction=0``), as in Algorithms 1 and 2. ``lr`` may be a Python number or a
0-d tensor. References are to "An Isotropic Gaussian Perspective on Fully Connected Layers": Eq. (2)
combines row and column statistics; Eqs. (5)-(6) / Algorithm 1 define GDU; Algorithm 2 defines WDU;
Eqs. (8)-(9) the expected refit of a draw; Appendix D the input standardization. Beyond the paper:
:func:`eq2_statistics_grad`, the gradient of the statistics through Eq. (2) (the ``backprop`` rule).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

__all__ = [
    "RowColStats",
    "row_col_stats",
    "eq2_distribution",
    "Eq2Terms",
    "eq2_terms",
    "sqrt_rn",
    "eq2_std",
    "sample_weight",
    "eq2_statistics_grad",
    "row_col_moments",
    "gdu_update",
    "wdu_update",
    "wdu_update_fixed_draw",
    "expected_refit",
    "standardize_input",
]


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


def _centered(x: torch.Tensor, mean: torch.Tensor, dim: int, out: Optional[torch.Tensor]) -> torch.Tensor:
    """``x - mean`` broadcast along ``dim`` (into ``out`` when given)."""
    return torch.sub(x, mean.unsqueeze(dim), out=out) if out is not None else x - mean.unsqueeze(dim)


def _mean_var(x: torch.Tensor, dim: int, scratch: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance along ``dim`` by the exact two-pass (centered) formula.

    Same values as ``torch.var_mean(x, dim, correction=0)`` up to rounding, built from plain sums and one
    elementwise pass (on CPU about ten times faster than the Welford kernel).
    """
    count = x.shape[dim]
    mean = x.sum(dim) / count
    c = _centered(x, mean, dim, scratch)
    return mean, c.square_().sum(dim) / count


def row_col_stats(weight: torch.Tensor, *, scratch: Optional[torch.Tensor] = None) -> RowColStats:
    """Mean and population std of each row and each column of ``weight`` (n, m), in fp32.

    The "INITIAL STATE" procedure of Algorithms 1 and 2, and WDU's refit step.
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {tuple(weight.shape)}")
    w = _as_f32(weight)
    row_mean, row_var = _mean_var(w, 1, scratch)
    col_mean, col_var = _mean_var(w, 0, scratch)
    return RowColStats(row_mean, row_var.sqrt_(), col_mean, col_var.sqrt_())


def _eq2_coefficients(n: int, m: int) -> tuple[float, float, float, float, float]:
    """Scalar coefficients of Eq. (2) for an (n, m) matrix: m/s, n/s, (m-1)/s, (n-1)/s, mn/s^2 with s = m+n."""
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


class Eq2Terms(NamedTuple):
    """Per-row / per-column vectors of Eq. (2) (fp32): sigma_ij^2 = k (mu_i - nu_j)^2 + row_var_i + col_var_j and
    mu_ij = row_shift_i + col_shift_j (row_var = c s_i^2, col_var = d t_j^2, row_shift = a mu_i, col_shift = b nu_j,
    coefficients of :func:`eq2_distribution`): what :func:`sample_weight` and the draw kernels combine."""

    row_mean: torch.Tensor
    row_var: torch.Tensor
    row_shift: torch.Tensor
    col_mean: torch.Tensor
    col_var: torch.Tensor
    col_shift: torch.Tensor
    k: float


def eq2_terms(row_mean: torch.Tensor, row_std: torch.Tensor, col_mean: torch.Tensor, col_std: torch.Tensor,
              num_rows: Optional[int] = None) -> Eq2Terms:
    """:class:`Eq2Terms` of the statistics; ``num_rows``: the whole matrix's n when these are a block of its rows."""
    rows = row_mean.shape[0]
    n = rows if num_rows is None else int(num_rows)
    a, b, c, d, k = _eq2_coefficients(n, col_mean.shape[0])
    return Eq2Terms(row_mean, c * row_std.square(), a * row_mean, col_mean, d * col_std.square(), b * col_mean, k)


def sqrt_rn(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded square root of fp32 ``x`` (a float64 root rounded once to fp32).

    torch's fp32 ``sqrt`` on CPU is not correctly rounded (torch 2.13: one value in five is one ulp off) while
    CUDA's is; the portable generator's draws use this one, so CPU, GPU and the CPU kernels agree bit for bit.
    """
    return torch.sqrt(x.to(torch.float64)).to(torch.float32)


def eq2_std(
    row_mean: torch.Tensor,
    row_std: torch.Tensor,
    col_mean: torch.Tensor,
    col_std: torch.Tensor,
    num_rows: Optional[int] = None,
    *,
    out: Optional[torch.Tensor] = None,
    exact_sqrt: bool = False,
) -> torch.Tensor:
    """sigma_ij = sqrt(var_ij) of Eq. (2) as a (rows, m) matrix (written into ``out`` when given).

    For a block of rows pass that block's row statistics and the whole matrix's row count as
    ``num_rows`` (Eq. 2 uses n, m of the whole matrix). Only elementwise operations are used, so an
    element is the same whether computed in the whole matrix or in a row block. ``exact_sqrt``: the root
    by :func:`sqrt_rn` (the portable generator) instead of torch's fp32 ``sqrt`` (the legacy generator).
    """
    t = eq2_terms(row_mean, row_std, col_mean, col_std, num_rows)
    rm, cm = row_mean[:, None], col_mean[None, :]
    std = torch.sub(rm, cm, out=out) if out is not None else rm - cm
    std.square_().mul_(t.k)
    std.add_(t.row_var[:, None]).add_(t.col_var[None, :])
    return std.copy_(sqrt_rn(std)) if exact_sqrt else std.sqrt_()


def sample_weight(
    row_mean: torch.Tensor,
    row_std: torch.Tensor,
    col_mean: torch.Tensor,
    col_std: torch.Tensor,
    noise: torch.Tensor,
    num_rows: Optional[int] = None,
    *,
    scratch: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    exact_sqrt: bool = False,
) -> torch.Tensor:
    """W = mu + sigma * noise with (mu, sigma) of Eq. (2), from standard normal ``noise`` (fp32).

    Without ``out`` the noise is consumed in place and returned (one (n, m) temporary besides it, the
    sigma matrix of :func:`eq2_std`, in ``scratch`` when given); with ``out`` the noise is kept. Row blocks
    and ``exact_sqrt``: see :func:`eq2_std`. Every element is bit-for-bit the same in the whole matrix or in
    a row block.
    """
    rows, m = row_mean.shape[0], col_mean.shape[0]
    if noise.shape != (rows, m):
        raise ValueError(f"noise shape {tuple(noise.shape)} does not match ({rows}, {m})")
    t = eq2_terms(row_mean, row_std, col_mean, col_std, num_rows)
    std = eq2_std(row_mean, row_std, col_mean, col_std, num_rows, out=scratch, exact_sqrt=exact_sqrt)
    weight = noise.mul_(std) if out is None else torch.mul(noise, std, out=out)
    return weight.add_(t.row_shift[:, None]).add_(t.col_shift[None, :])


def eq2_statistics_grad(stats: RowColStats, noise: torch.Tensor, std: torch.Tensor, grad: torch.Tensor, *,
                        scratch: Optional[torch.Tensor] = None) -> RowColStats:
    """dL/d(statistics) of the reparameterised draw W = mu + sigma * Z of Eq. (2), from G = dL/dW.

    With H = G * Z / sigma (elementwise; 0 where sigma = 0), a = m/(m+n), b = n/(m+n) and c, d, k the
    variance coefficients of Eq. (2):
        dL/dmu_i = a * sum_j G_ij + k * (mu_i * sum_j H_ij - sum_j H_ij nu_j)
        dL/dnu_j = b * sum_i G_ij - k * (sum_i H_ij mu_i - nu_j * sum_i H_ij)
        dL/ds_i  = c * s_i * sum_j H_ij,      dL/dt_j = d * t_j * sum_i H_ij
    for row i (mean mu_i, std s_i) and column j (mean nu_j, std t_j). One elementwise pass builds H (in
    ``scratch`` when given); the sums are two matrix-vector products with H and two plain sums of G.
    """
    rm, rs, cm, cs = stats
    n, m = rm.shape[0], cm.shape[0]
    a, b, c, d, k = _eq2_coefficients(n, m)
    g = grad.detach().to(noise.dtype)
    h = torch.mul(g, noise, out=scratch) if scratch is not None else g * noise
    h.div_(std)
    if bool((rs == 0).any()) and bool((cs == 0).any()):  # sigma_ij can only vanish where both stds do
        h = torch.where(std > 0, h, 0.0)
    rows = h @ torch.stack([torch.ones_like(cm), cm], 1)  # (n, 2): sum_j H_ij, sum_j H_ij nu_j
    cols = torch.stack([torch.ones_like(rm), rm], 0) @ h  # (2, m): sum_i H_ij, sum_i H_ij mu_i
    g_rm = a * g.sum(1) + k * (rm * rows[:, 0] - rows[:, 1])
    g_cm = b * g.sum(0) - k * (cols[1] - cm * cols[0])
    return RowColStats(g_rm, c * rs * rows[:, 0], g_cm, d * cs * cols[0])


def row_col_moments(x: torch.Tensor, y: torch.Tensor, *, scratch=None):
    """Row and column moments of ``x`` and ``y`` (n, m): ``(rows, cols)``, each ``(mean_x, var_x, mean_y,
    var_y, cov_xy)`` over that side (population statistics).

    From raw sums: var = E[x^2] - E[x]^2 and cov = E[xy] - E[x]E[y], clamped at 0 for the variances.
    Three elementwise products (into the three ``scratch`` buffers when given) and ten sums serve both
    sides, about half the memory traffic of two centered passes per side; for weights and gradients,
    whose row/column means are small against their spread, the cancellation costs a few ulps.
    """
    sxy, sxx, syy = scratch if scratch is not None else (None, None, None)
    xy = torch.mul(x, y, out=sxy) if sxy is not None else x * y
    xx = torch.mul(x, x, out=sxx) if sxx is not None else x * x
    yy = torch.mul(y, y, out=syy) if syy is not None else y * y
    out = []
    for dim in (1, 0):
        count = x.shape[dim]
        mx, my = x.sum(dim) / count, y.sum(dim) / count
        vx = (xx.sum(dim) / count - mx * mx).clamp_min(0)
        vy = (yy.sum(dim) / count - my * my).clamp_min(0)
        out.append((mx, vx, my, vy, xy.sum(dim) / count - mx * my))
    return out[0], out[1]


def _check_pair(w: torch.Tensor, g: torch.Tensor) -> None:
    if w.shape != g.shape or w.dim() != 2:
        raise ValueError(f"weight {tuple(w.shape)} and grad {tuple(g.shape)} must be the same 2-D shape")


def _gdu_side(mean, std, stats, lr):
    """Eqs. (5)-(6) for one side (rows or columns), from the moments of W and dL/dW along that side.

    With the step D = -lr * grad: corr(W, D) * Std(D) = -lr * corr(W, grad) * Std(grad), so the update
    needs no sign of ``lr``; rho = 0 where W or grad has zero spread.
    """
    _, vw, mg, vg, cov_wg = stats
    sg = vg.clamp_min(0).sqrt()
    denom = vw.clamp_min(0).sqrt() * sg
    rho = torch.where(denom > 0, cov_wg / denom.clamp_min(torch.finfo(denom.dtype).tiny), 0.0).clamp(-1.0, 1.0)
    step = lr * sg  # signed Std(D): |lr| * Std(grad) times the sign of lr
    new_var = std.square() + step.square() - 2.0 * std * step * rho
    return mean - lr * mg, new_var.clamp_min(0).sqrt()


def gdu_update(stats: RowColStats, weight: torch.Tensor, grad: torch.Tensor, lr, *, scratch=None) -> RowColStats:
    """Gradient Distribution Update, Algorithm 1 (Eqs. 5-6), for every row and every column.

    With the step D = -lr * grad and the sampled weight W:
        mean <- mean + Mean(D)
        std  <- sqrt(std^2 + Std(D)^2 + 2 * std * Std(D) * rho),   rho = corr(W, D)
    over each row (length-m vectors) and each column (length-n vectors); ``std`` is the stored statistic.
    ``scratch``: three (n, m) buffers (see :func:`row_col_moments`).
    """
    w, g = _as_f32(weight), _as_f32(grad)
    _check_pair(w, g)
    rows, cols = row_col_moments(w, g, scratch=scratch)
    row_mean, row_std = _gdu_side(stats.row_mean, stats.row_std, rows, lr)
    col_mean, col_std = _gdu_side(stats.col_mean, stats.col_std, cols, lr)
    return RowColStats(row_mean, row_std, col_mean, col_std)


def wdu_update(weight: torch.Tensor, grad: torch.Tensor, lr, *, scratch=None) -> RowColStats:
    """Weight Distribution Update, Algorithm 2: the row/column statistics of W' = W - lr * grad.

    ``scratch``: two (n, m) buffers, for W' and for the centered values (the inputs are left untouched).
    """
    w, g = _as_f32(weight), _as_f32(grad)
    _check_pair(w, g)
    if isinstance(lr, torch.Tensor):  # (a compiled kernel gets the learning rate as a 0-d tensor)
        return row_col_stats(w - lr * g)
    out, buf = scratch if scratch is not None else (None, None)
    w_new = torch.add(w, g, alpha=-float(lr), out=out) if out is not None else torch.add(w, g, alpha=-float(lr))
    return row_col_stats(w_new, scratch=buf)


def expected_refit(stats: RowColStats) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expectation over draws W ~ Eq. (2) of each row's and column's (sample mean, population variance).

    With mu_ij = a*mu_i + b*mu_j and var_ij from Eq. (2) (a = m/(m+n), b = n/(m+n)):
        E[rowmean_i] = a*mu_i + b*mean_j(mu_j)                              (Eq. 8)
        E[rowvar_i]  = b^2 * var_j(mu_j) + (1 - 1/m) * mean_j(var_ij)
    and symmetrically for columns (Eq. 9): what WDU's refit of a *fresh* draw gives on average.
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


def wdu_update_fixed_draw(stats: RowColStats, weight: torch.Tensor, grad: torch.Tensor, lr, *,
                          scratch=None) -> RowColStats:
    """WDU (Algorithm 2) for a layer that always uses the same draw (``noise='seeded'``).

    Plain WDU refits the sample statistics of W' = W - lr*grad. With one fixed draw W, the draw's own
    sampling error is re-absorbed at every step in the same direction and the statistics drift even with
    a zero gradient. Here the draw's own statistics are replaced by their expectation over draws
    (:func:`expected_refit`) while the effect of the step is measured on the actual draw:
        mean <- E[mean(W)] + mean(W') - mean(W)  = E[mean(W)] - lr*mean(grad)
        var  <- E[var(W)]  + var(W')  - var(W)   = E[var(W)] + lr^2*var(grad) - 2*lr*cov(W, grad)
    per row and per column. In expectation over draws this equals plain WDU, without the drift.
    ``scratch``: three (n, m) buffers as in :func:`row_col_moments`.
    """
    w, g = _as_f32(weight), _as_f32(grad)
    _check_pair(w, g)
    row_mean, row_var, col_mean, col_var = expected_refit(stats)
    out = []
    sides = row_col_moments(w, g, scratch=scratch)
    for mean, var, (_, _, mg, vg, cov) in zip((row_mean, col_mean), (row_var, col_var), sides):
        new_var = var + (lr * lr) * vg - (2.0 * lr) * cov
        out += [mean - lr * mg, new_var.clamp_min(0).sqrt()]
    return RowColStats(*out)


def standardize_input(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Appendix D: standardize each input vector (last dim) to zero mean and unit variance."""
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return (x - mean) * torch.rsqrt(var + eps)
