"""Eq. 2, GDU (Alg. 1) and WDU (Alg. 2) against values computed by hand on small matrices."""

import math

import pytest
import torch

from isogauss_hf.functional import (
    RowColStats,
    eq2_distribution,
    gdu_update,
    row_col_stats,
    sample_weight,
    standardize_input,
    wdu_update,
)
from isogauss_hf.noise import standard_normal


def pmean(xs):
    return sum(xs) / len(xs)


def pstd(xs):
    mu = pmean(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / len(xs))


def pcorr(xs, ys):
    mx, my = pmean(xs), pmean(ys)
    sx, sy = pstd(xs), pstd(ys)
    if sx == 0 or sy == 0:
        return 0.0
    return pmean([(x - mx) * (y - my) for x, y in zip(xs, ys)]) / (sx * sy)


W = [[1.0, 2.0, 4.0], [-1.0, 0.5, 3.0]]  # n = 2 rows, m = 3 columns
G = [[0.5, -1.0, 2.0], [1.0, 1.0, -3.0]]


def rows(mat):
    return [list(r) for r in mat]


def cols(mat):
    return [list(c) for c in zip(*mat)]


def test_row_col_stats_population():
    s = row_col_stats(torch.tensor(W))
    for got, want in [
        (s.row_mean, [pmean(r) for r in rows(W)]),
        (s.row_std, [pstd(r) for r in rows(W)]),
        (s.col_mean, [pmean(c) for c in cols(W)]),
        (s.col_std, [pstd(c) for c in cols(W)]),
    ]:
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, torch.tensor(want), rtol=1e-6, atol=1e-6)


def test_eq2_matches_hand_computation():
    row_mean, row_std = [0.5, -2.0], [1.0, 0.25]
    col_mean, col_std = [1.0, 0.0, -1.0], [0.5, 2.0, 1.5]
    n, m = 2, 3
    mean, var = eq2_distribution(*(torch.tensor(v) for v in (row_mean, row_std, col_mean, col_std)))
    assert mean.shape == (n, m) and var.shape == (n, m)
    for i in range(n):
        for j in range(m):
            mu = (m * row_mean[i] + n * col_mean[j]) / (m + n)
            v = ((m - 1) * row_std[i] ** 2 + (n - 1) * col_std[j] ** 2) / (m + n) + m * n / (m + n) ** 2 * (
                row_mean[i] - col_mean[j]
            ) ** 2
            assert mean[i, j].item() == pytest.approx(mu, rel=1e-6)
            assert var[i, j].item() == pytest.approx(v, rel=1e-6)


def test_eq2_special_case_values():
    # 1 x 1 matrix: weights m/(m+n) = n/(m+n) = 1/2; (m-1) = (n-1) = 0 so only the discrepancy term remains.
    mean, var = eq2_distribution(torch.tensor([2.0]), torch.tensor([5.0]), torch.tensor([0.0]), torch.tensor([7.0]))
    assert mean.item() == pytest.approx(1.0)
    assert var.item() == pytest.approx(0.25 * 4.0)


@pytest.mark.parametrize("lr", [0.1, 1.0, 0.01])
def test_gdu_matches_hand_computation(lr):
    stats = RowColStats(torch.tensor([0.2, -0.1]), torch.tensor([0.3, 0.7]),
                        torch.tensor([0.0, 0.5, 1.0]), torch.tensor([1.0, 0.2, 0.4]))
    new = gdu_update(stats, torch.tensor(W), torch.tensor(G), lr)
    D = [[-lr * g for g in r] for r in G]

    def expect(mean, std, w_vec, d_vec):
        rho = pcorr(w_vec, d_vec)
        sd = pstd(d_vec)
        return mean + pmean(d_vec), math.sqrt(std**2 + sd**2 + 2 * std * sd * rho)

    for i in range(2):
        mu, sd = expect(stats.row_mean[i].item(), stats.row_std[i].item(), rows(W)[i], rows(D)[i])
        assert new.row_mean[i].item() == pytest.approx(mu, rel=1e-5, abs=1e-6)
        assert new.row_std[i].item() == pytest.approx(sd, rel=1e-5, abs=1e-6)
    for j in range(3):
        mu, sd = expect(stats.col_mean[j].item(), stats.col_std[j].item(), cols(W)[j], cols(D)[j])
        assert new.col_mean[j].item() == pytest.approx(mu, rel=1e-5, abs=1e-6)
        assert new.col_std[j].item() == pytest.approx(sd, rel=1e-5, abs=1e-6)


def test_gdu_zero_spread_gives_rho_zero():
    # Row 0 of W is constant (zero spread) -> rho = 0: std_new = sqrt(std^2 + Std(D)^2).
    w = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
    g = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])  # row 1 of G constant -> Std(D) = 0, rho = 0
    stats = RowColStats(torch.zeros(2), torch.tensor([0.5, 0.5]), torch.zeros(3), torch.ones(3))
    new = gdu_update(stats, w, g, 1.0)
    assert new.row_std[0].item() == pytest.approx(math.sqrt(0.25 + pstd([1, 2, 3]) ** 2), rel=1e-6)
    assert new.row_std[1].item() == pytest.approx(0.5, rel=1e-6)
    assert new.row_mean[0].item() == pytest.approx(-2.0)
    assert torch.isfinite(new.col_std).all()


def test_gdu_zero_gradient_is_identity():
    stats = row_col_stats(torch.tensor(W))
    new = gdu_update(stats, torch.tensor(W), torch.zeros(2, 3), 0.5)
    for a, b in zip(new, stats):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("lr", [0.1, 2.0])
def test_wdu_matches_hand_computation(lr):
    new = wdu_update(torch.tensor(W), torch.tensor(G), lr)
    Wn = [[w - lr * g for w, g in zip(rw, rg)] for rw, rg in zip(W, G)]
    torch.testing.assert_close(new.row_mean, torch.tensor([pmean(r) for r in rows(Wn)]))
    torch.testing.assert_close(new.row_std, torch.tensor([pstd(r) for r in rows(Wn)]))
    torch.testing.assert_close(new.col_mean, torch.tensor([pmean(c) for c in cols(Wn)]))
    torch.testing.assert_close(new.col_std, torch.tensor([pstd(c) for c in cols(Wn)]))


def test_sample_weight_moments_follow_eq2():
    n, m = 64, 48
    g = torch.Generator().manual_seed(0)
    stats = RowColStats(torch.randn(n, generator=g), torch.rand(n, generator=g) + 0.1,
                        torch.randn(m, generator=g), torch.rand(m, generator=g) + 0.1)
    mean, var = eq2_distribution(*stats)
    k = 400
    draws = torch.stack([sample_weight(*stats, standard_normal(s, n, m)) for s in range(k)])
    # Per-element sample mean within 5 standard errors of Eq. 2's mean; variance within 25 %.
    assert ((draws.mean(0) - mean).abs() <= 5 * (var / k).sqrt() + 1e-6).float().mean() > 0.999
    ratio = draws.var(0) / var
    assert 0.75 < ratio.mean().item() < 1.25


def test_sample_weight_equals_closed_form():
    stats = row_col_stats(torch.tensor(W))
    noise = torch.tensor([[0.1, -1.0, 2.0], [0.0, 0.5, -0.3]])
    mean, var = eq2_distribution(*stats)
    torch.testing.assert_close(sample_weight(*stats, noise.clone()), mean + var.sqrt() * noise)


def test_standardize_input():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 4.0, 4.0]])
    y = standardize_input(x, eps=0.0)
    torch.testing.assert_close(y.mean(-1), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(y.var(-1, correction=0), torch.ones(2))
    assert y[1].tolist() == pytest.approx([-1.0, -1.0, 1.0, 1.0])


def test_expected_refit_matches_monte_carlo_average_of_wdu():
    from isogauss_hf.functional import expected_refit

    g = torch.Generator().manual_seed(1)
    w0 = 0.02 * torch.randn(24, 16, generator=g) + 0.01 * torch.randn(24, 1, generator=g)
    stats = row_col_stats(w0)
    k = 3000
    acc = [torch.zeros(24), torch.zeros(24), torch.zeros(16), torch.zeros(16)]
    for s in range(k):
        w = sample_weight(*stats, standard_normal(s, 24, 16))
        rv, rm = torch.var_mean(w, 1, correction=0)
        cv, cm = torch.var_mean(w, 0, correction=0)
        for a, t in zip(acc, (rm, rv, cm, cv)):
            a += t / k
    row_mean, row_var, col_mean, col_var = expected_refit(stats)
    # means within 5 Monte Carlo standard errors; variances within 5 %
    assert ((row_mean - acc[0]).abs() <= 5 * (row_var / 16 / k).sqrt()).all()
    assert ((col_mean - acc[2]).abs() <= 5 * (col_var / 24 / k).sqrt()).all()
    assert ((row_var - acc[1]).abs() <= 0.05 * acc[1]).all()
    assert ((col_var - acc[3]).abs() <= 0.05 * acc[3]).all()


def test_fixed_draw_wdu_does_not_drift_where_plain_wdu_does():
    from isogauss_hf.functional import wdu_update_fixed_draw

    g = torch.Generator().manual_seed(2)
    start = row_col_stats(0.02 * torch.randn(48, 32, generator=g))
    plain = fixed = start
    for _ in range(100):
        w = sample_weight(*plain, standard_normal(7, 48, 32))
        plain = wdu_update(w, torch.zeros_like(w), 0.0)
        w = sample_weight(*fixed, standard_normal(7, 48, 32))
        fixed = wdu_update_fixed_draw(fixed, w, torch.zeros_like(w), 0.0)
    assert (plain.row_std / start.row_std).mean() > 2.0  # the drift the fixed-draw rule removes
    assert (fixed.row_std / start.row_std).mean() < 1.0  # WDU's expected behaviour: the std shrinks


def test_fixed_draw_wdu_step_effect_equals_plain_wdu_difference():
    from isogauss_hf.functional import expected_refit, wdu_update_fixed_draw

    stats = row_col_stats(torch.tensor(W))
    w, grad = torch.tensor(W) + 0.1, torch.tensor(G)
    new = wdu_update_fixed_draw(stats, w, grad, 0.1)
    moved, still = wdu_update(w, grad, 0.1), wdu_update(w, torch.zeros_like(grad), 0.0)
    exp = expected_refit(stats)
    torch.testing.assert_close(new.row_mean - exp[0], moved.row_mean - still.row_mean)
    torch.testing.assert_close(new.col_std.square() - exp[3], moved.col_std.square() - still.col_std.square(),
                               rtol=1e-4, atol=1e-6)
