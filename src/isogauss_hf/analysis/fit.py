"""How well the row/column Gaussian of Eq. 2 describes one weight matrix (pure tensor functions).

For a weight ``W`` (n rows = output features, m columns = input features) the Eq. 2 distribution built
from ``W``'s own row and column statistics gives every entry a mean ``mu_ij`` and a std ``sigma_ij``.
:func:`fit_metrics` measures the standardised residual ``z = (w - mu_ij) / sigma_ij`` against N(0, 1):
its mean, std, excess kurtosis, and the Kolmogorov-Smirnov and Wasserstein-1 distances (both exact for
the empirical distribution of ``z``, computed in float64 with ``torch.special``; no scipy). It also
reports how much of ``||W||_F^2`` the Eq. 2 mean matrix carries, the stable rank
``||W||_F^2 / ||W||_2^2`` and the spread of the row/column stds.

:func:`wasserstein_1d` is the Wasserstein-1 distance between two empirical distributions (used for the
before/after fine-tuning drift). Nothing here touches a model.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..functional import eq2_distribution, row_col_stats

__all__ = [
    "FIT_METRICS",
    "DEFAULT_MAX_ELEMENTS",
    "standardized_residual",
    "fit_metrics",
    "ks_to_normal",
    "wasserstein_to_normal",
    "wasserstein_1d",
    "stable_rank",
]

#: Per-matrix metrics returned by :func:`fit_metrics`, with one line each (also the report's legend).
FIT_METRICS: dict[str, str] = {
    "z_mean": "mean of the standardised residual z = (w - mu_ij) / sigma_ij (0 for a perfect fit)",
    "z_std": "std of z (1 for a perfect fit)",
    "kurtosis": "excess kurtosis of z (0 for a Gaussian; > 0 = heavier tails than Eq. 2 predicts)",
    "ks": "Kolmogorov-Smirnov distance of z to N(0, 1) (sup |F_z - Phi|)",
    "wasserstein": "Wasserstein-1 distance of z to N(0, 1)",
    "mean_share": "share of ||W||_F^2 carried by the Eq. 2 mean matrix mu_ij",
    "stable_rank": "stable rank ||W||_F^2 / ||W||_2^2",
    "weight_std": "std of all entries of W",
    "row_std_mean": "mean of the row stds",
    "row_std_cv": "coefficient of variation (std / mean) of the row stds",
    "col_std_mean": "mean of the column stds",
    "col_std_cv": "coefficient of variation of the column stds",
}

#: The KS and Wasserstein distances sort z; above this many entries they use a seeded random subset of
#: this size (the moments always use every entry).
DEFAULT_MAX_ELEMENTS = 1 << 22

_SVD_LIMIT = 2048  # min(n, m) up to which ||W||_2 comes from svdvals; above, from power iteration


def _as_f32(weight: torch.Tensor) -> torch.Tensor:
    w = weight.detach()
    if w.dim() != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {tuple(w.shape)}")
    return w if w.dtype == torch.float32 else w.to(torch.float32)


def standardized_residual(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, mu)``: the residual of ``weight`` standardised by its own Eq. 2 distribution, and that mean matrix.

    ``mu`` and ``sigma`` come from :func:`~isogauss_hf.functional.eq2_distribution` applied to the row and
    column statistics of ``weight`` itself (population statistics, as the Gaussian layers fit them). An entry
    with ``sigma_ij == 0`` (a constant row and column) has ``z = 0``.
    """
    w = _as_f32(weight)
    stats = row_col_stats(w)
    mean, var = eq2_distribution(*stats)
    std = var.clamp_min(0).sqrt_()
    z = (w - mean).div_(std.clamp_min(torch.finfo(torch.float32).tiny))
    z = torch.where(std > 0, z, torch.zeros_like(z))
    return z, mean


def _subset(values: torch.Tensor, max_elements: Optional[int], seed: int) -> torch.Tensor:
    flat = values.reshape(-1)
    if max_elements is None or flat.numel() <= max_elements:
        return flat
    g = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randperm(flat.numel(), generator=g)[:max_elements].to(flat.device)
    return flat[idx]


def ks_to_normal(values: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance between the empirical distribution of ``values`` and N(0, 1)."""
    x = values.detach().reshape(-1).to(torch.float64).sort().values
    n = x.numel()
    if n == 0:
        return float("nan")
    cdf = torch.special.ndtr(x)
    i = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    return float(torch.maximum((i / n - cdf).max(), (cdf - (i - 1) / n).max()))


def wasserstein_to_normal(values: torch.Tensor) -> float:
    """Exact Wasserstein-1 distance between the empirical distribution of ``values`` and N(0, 1).

    ``W1 = int_0^1 |F^-1(u) - Phi^-1(u)| du``; on each quantile interval ``[(i-1)/n, i/n]`` the empirical
    quantile is the i-th smallest value ``x``, and with ``g(u) = phi(Phi^-1(u))`` (so ``int q = -dg``) the
    integral is ``x (2c - a - b) + 2 g(c) - g(a) - g(b)``, ``c`` = ``Phi(x)`` clipped to the interval.
    """
    x = values.detach().reshape(-1).to(torch.float64).sort().values
    n = x.numel()
    if n == 0:
        return float("nan")
    i = torch.arange(n + 1, dtype=torch.float64, device=x.device)
    edges = i / n
    a, b = edges[:-1], edges[1:]
    cdf = torch.special.ndtr(x)
    c = torch.minimum(torch.maximum(cdf, a), b)
    q_c = torch.where((cdf > a) & (cdf < b), x, torch.special.ndtri(c))

    def g(q: torch.Tensor) -> torch.Tensor:  # standard normal density (0 at +-inf)
        return torch.exp(-0.5 * q * q) / math.sqrt(2 * math.pi)

    g_edges = g(torch.special.ndtri(edges))
    total = x * (2 * c - a - b) + 2 * g(q_c) - g_edges[:-1] - g_edges[1:]
    return float(total.sum().clamp_min(0))


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> float:
    """Wasserstein-1 distance between the empirical distributions of ``a`` and ``b`` (any sizes).

    ``W1 = int |F_a(x) - F_b(x)| dx``, evaluated exactly on the merged sorted values.
    """
    x = a.detach().reshape(-1).to(torch.float64).sort().values
    y = b.detach().reshape(-1).to(torch.float64).to(x.device).sort().values
    if x.numel() == 0 or y.numel() == 0:
        return float("nan")
    allv = torch.cat([x, y]).sort().values
    deltas = allv[1:] - allv[:-1]
    fx = torch.searchsorted(x, allv[:-1], right=True).to(torch.float64) / x.numel()
    fy = torch.searchsorted(y, allv[:-1], right=True).to(torch.float64) / y.numel()
    return float(((fx - fy).abs() * deltas).sum())


def stable_rank(weight: torch.Tensor, *, iterations: int = 100, seed: int = 0) -> float:
    """``||W||_F^2 / ||W||_2^2`` (1 for a rank-one matrix, up to ``min(n, m)`` for a flat spectrum).

    The spectral norm is exact (``svdvals``) when ``min(n, m) <= 2048``, otherwise ``iterations`` steps of
    power iteration from a seeded start vector (a lower bound on ``||W||_2``, so a slight over-estimate).
    """
    w = _as_f32(weight).to(torch.float64)
    fro2 = float(w.square().sum())
    if fro2 == 0:
        return 0.0
    if min(w.shape) <= _SVD_LIMIT:
        top = float(torch.linalg.svdvals(w)[0])
    else:
        g = torch.Generator(device="cpu").manual_seed(seed)
        v = torch.randn(w.shape[1], generator=g, dtype=torch.float64).to(w.device)
        for _ in range(iterations):
            v = w.t() @ (w @ v)
            v = v / v.norm().clamp_min(1e-300)
        top = float((w @ v).norm())
    return fro2 / (top * top)


def _cv(values: torch.Tensor) -> float:
    mean = float(values.mean())
    return float(values.std(correction=0)) / mean if mean > 0 else float("nan")


def fit_metrics(weight: torch.Tensor, *, max_elements: Optional[int] = DEFAULT_MAX_ELEMENTS,
                seed: int = 0) -> dict[str, float]:
    """The :data:`FIT_METRICS` of one (n, m) weight matrix (rows = output features), as plain floats.

    ``max_elements`` bounds the entries sorted for the KS / Wasserstein distances (a seeded random subset
    beyond it; ``None`` = all); ``seed`` seeds that subset and the power iteration of :func:`stable_rank`.
    """
    w = _as_f32(weight)
    z, mean = standardized_residual(w)
    z64 = z.to(torch.float64)
    z_mean = float(z64.mean())
    centered = z64 - z_mean
    var = float(centered.square().mean())
    kurtosis = float(centered.pow(4).mean()) / (var * var) - 3.0 if var > 0 else float("nan")
    sample = _subset(z, max_elements, seed)
    fro2 = float(w.to(torch.float64).square().sum())
    stats = row_col_stats(w)
    return {
        "z_mean": z_mean,
        "z_std": math.sqrt(var),
        "kurtosis": kurtosis,
        "ks": ks_to_normal(sample),
        "wasserstein": wasserstein_to_normal(sample),
        "mean_share": float(mean.to(torch.float64).square().sum()) / fro2 if fro2 > 0 else float("nan"),
        "stable_rank": stable_rank(w, seed=seed),
        "weight_std": float(w.std(correction=0)),
        "row_std_mean": float(stats.row_std.mean()),
        "row_std_cv": _cv(stats.row_std),
        "col_std_mean": float(stats.col_std.mean()),
        "col_std_cv": _cv(stats.col_std),
    }
