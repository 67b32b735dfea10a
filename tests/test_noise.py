"""The noise generators (``noise.py``, ``philox.py`` and the kernels): the checkpoint contract, checked.

Philox4x32-10 against the Random123 known answers and an independent scalar implementation; the
``box-muller-v1`` transform against float64 math; windows of the field against larger windows; every backend
(numba CPU kernels, the Triton kernels through Triton's interpreter, the torch reference) bit for bit; the
same bits under other thread counts and CPU capabilities (fresh processes); moments and tails on 10^6 values;
a fixed digest of the whole contract; the legacy generator of formats 1-2.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from isogauss_hf import _runtime, noise
from isogauss_hf.functional import RowColStats, eq2_terms, sample_weight
from isogauss_hf.noise import (LEGACY_BLOCK_ROWS, NOISE_GENERATORS, derive_seed, get_noise_generator, philox4x32_10,
                               philox_key, set_noise_backend, standard_normal)
from isogauss_hf.philox import box_muller_v1, normal_field
from isogauss_hf.settings import DEFAULT_NOISE_GENERATOR, LEGACY_NOISE_GENERATOR

M = 0xFFFFFFFF


# ------------------------------------------------------------------------------------------------ Philox4x32-10
@pytest.mark.parametrize("counter, key, expected", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M, M, M, M), (M, M), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers_of_random123(counter, key, expected):
    got = philox4x32_10(torch.tensor([counter]), torch.tensor(key))
    assert got.dtype == torch.int64 and tuple(got[0].tolist()) == expected
    per_row_key = philox4x32_10(torch.tensor([counter, counter]), torch.tensor([key, key]))
    assert per_row_key.tolist() == [list(expected)] * 2


def _scalar_philox(counter, key):
    """Philox4x32-10 written independently on Python integers (arbitrary precision, no 16-bit split)."""
    c, k = list(counter), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) & M, (k[1] + 0xBB67AE85) & M]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & M, (p0 >> 32) ^ c[3] ^ k[1], p0 & M]
    return c


def test_philox_equals_an_independent_scalar_implementation():
    g = torch.Generator().manual_seed(0)
    counters = torch.randint(0, 2**32, (300, 4), generator=g, dtype=torch.int64)
    keys = torch.randint(0, 2**32, (300, 2), generator=g, dtype=torch.int64)
    got = philox4x32_10(counters, keys).tolist()
    assert got == [_scalar_philox(c, k) for c, k in zip(counters.tolist(), keys.tolist())]


@pytest.mark.parametrize("counter, key, match", [
    (torch.zeros(3, 3, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), "counter \\(N, 4\\)"),
    (torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), "key \\(2,\\)"),
    (torch.full((1, 4), 2**32), torch.zeros(2, dtype=torch.int64), "counter must be an int64 tensor of uint32"),
    (torch.zeros(1, 4, dtype=torch.int64), torch.tensor([-1, 0]), "key must be an int64 tensor of uint32"),
    (torch.zeros(1, 4, dtype=torch.int32), torch.zeros(2, dtype=torch.int64), "counter must be an int64"),
])
def test_philox_refuses_bad_words(counter, key, match):
    with pytest.raises(ValueError, match=match):
        philox4x32_10(counter, key)


# ------------------------------------------------------------------------------------------------ the transform
def test_box_muller_v1_is_the_box_muller_transform_it_describes():
    g = torch.Generator().manual_seed(1)
    edges = [0, 1, 511, 512, M, M - 511, 1 << 31, (1 << 29) - 1, 1 << 29, 3 << 29, 5 << 29, 7 << 29, (7 << 29) | (M >> 3)]
    w0 = torch.cat([torch.tensor(edges), torch.randint(0, 2**32, (20000,), generator=g)])
    w1 = torch.cat([torch.tensor(edges[::-1]), torch.randint(0, 2**32, (20000,), generator=g)])
    z0, z1 = box_muller_v1(w0, w1)
    assert z0.dtype == torch.float32
    u = ((w0 >> 9) * 2 + 1).double() / 2**24
    theta = 2 * math.pi * (w1 >> 6).double() / 2**26
    r = torch.sqrt(-2 * torch.log(u))
    torch.testing.assert_close(z0.double(), r * torch.cos(theta), rtol=0, atol=2e-6)
    torch.testing.assert_close(z1.double(), r * torch.sin(theta), rtol=0, atol=2e-6)
    assert float(r.max()) < 5.78 and bool(torch.isfinite(z0).all())


def test_moments_and_tails_on_a_million_values():
    z = standard_normal(derive_seed("moments"), 1000, 1000).double().reshape(-1)
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float((z ** 3).mean())) < 5 * math.sqrt(15 / n)  # skewness
    assert abs(float((z ** 4).mean()) - 3) < 5 * math.sqrt(96 / n)  # kurtosis
    for t in (1.0, 2.0, 3.0, 4.0):
        p = math.erfc(t / math.sqrt(2))  # P(|Z| > t)
        count = int((z.abs() > t).sum())
        assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 2, (t, count, n * p)
    s, _ = torch.sort(z)
    cdf = 0.5 * torch.erfc(-s / math.sqrt(2))
    ks = float(torch.maximum((torch.arange(1, n + 1) / n - cdf).abs(), (cdf - torch.arange(n) / n).abs()).max())
    assert ks < 1.95 / math.sqrt(n)  # Kolmogorov-Smirnov at the 0.1 % level
    grid = z.reshape(1000, 1000)
    for a, b in ((grid[:, 1:], grid[:, :-1]), (grid[1:], grid[:-1]), (grid[0::4], grid[1::4]), (grid[2::4], grid[3::4])):
        corr = float(((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std()))
        assert abs(corr) < 5 / math.sqrt(a.numel()), corr  # neighbours, row quads, the two pairs of a counter


# ------------------------------------------------------------------------------------------------ the field
@pytest.mark.parametrize("rows, cols, row_start, col_start", [
    (1, 1, 0, 0), (3, 7, 1, 2), (5, 33, 2, 0), (17, 9, 6, 11), (64, 40, 0, 0), (4, 1, 8, 63), (0, 5, 3, 0),
])
def test_any_window_equals_the_same_part_of_a_larger_window(rows, cols, row_start, col_start):
    big = standard_normal(77, 80, 100)
    window = standard_normal(77, rows, cols, row_start=row_start, col_start=col_start)
    assert torch.equal(window, big[row_start:row_start + rows, col_start:col_start + cols])


def test_contract_digest():
    """The numbers of a seeded draw are part of every saved model: they must never change."""
    z = standard_normal(derive_seed(0, "fixed", 0), 67, 45, row_start=3, col_start=5)
    assert hashlib.sha256(z.numpy().tobytes()).hexdigest() == GOLDEN_DIGEST
    assert philox_key(0x0123456789ABCDEF) == (0x89ABCDEF, 0x01234567)
    assert derive_seed(0, "fixed", 0) == int.from_bytes(hashlib.blake2b(b"0/fixed/0", digest_size=8).digest(),
                                                        "little") & (2**63 - 1)


GOLDEN_DIGEST = "786bad28b954648836ee88fb25d09a7f71cd825d06b50717c497d07eec61eeb6"


def test_noise_does_not_touch_global_rng():
    torch.manual_seed(0)
    before = torch.get_rng_state().clone()
    standard_normal(5, 10, 10)
    get_noise_generator(LEGACY_NOISE_GENERATOR).normal(5, 10, 10)
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.parametrize("bad, match", [
    (dict(rows=-1, cols=2), "rows must be a non-negative integer"),
    (dict(rows=2, cols=2.0), "cols must be a non-negative integer"),
    (dict(rows=2, cols=2, col_start=2**32), "2\\^32 columns"),
])
def test_standard_normal_refuses_bad_windows(bad, match):
    with pytest.raises(ValueError, match=match):
        standard_normal(1, **bad)


# ------------------------------------------------------------------------------------------------ backends
def _stats(n, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    return RowColStats(torch.randn(n, generator=g) * 0.05, torch.rand(n, generator=g) * 0.1 + 0.01,
                       torch.randn(m, generator=g) * 0.05, torch.rand(m, generator=g) * 0.1)


@pytest.mark.parametrize("rows, cols, row_start, col_start", [(300, 70, 0, 0), (37, 13, 5, 7), (2, 3, 1, 0)])
def test_cpu_kernels_equal_the_reference(rows, cols, row_start, col_start):
    from isogauss_hf import _noise_numba

    k0, k1 = philox_key(derive_seed("kernels"))
    got = _noise_numba.fill_normal(torch.empty(rows, cols), k0, k1, row_start, col_start)
    assert torch.equal(got, normal_field(k0, k1, rows, cols, row_start, col_start))
    stats = _stats(row_start + rows + 3, cols)
    n = stats.row_mean.shape[0]
    draw = _noise_numba.fill_eq2(torch.empty(rows, cols), eq2_terms(*stats), k0, k1, row_start)
    rows_ = slice(row_start, row_start + rows)
    expected = sample_weight(stats.row_mean[rows_], stats.row_std[rows_], stats.col_mean, stats.col_std,
                             normal_field(k0, k1, rows, cols, row_start), n, exact_sqrt=True)
    assert torch.equal(draw, expected)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_does_not_change_a_draw(monkeypatch, threads):
    generator = get_noise_generator(DEFAULT_NOISE_GENERATOR)
    stats = _stats(517, 300)
    monkeypatch.setattr(_runtime, "NOISE_THREADS", 1)
    serial = generator.draw_rows(stats, 11, 0, 517), standard_normal(11, 517, 300)
    monkeypatch.setattr(_runtime, "NOISE_THREADS", threads)
    threaded = generator.draw_rows(stats, 11, 0, 517), standard_normal(11, 517, 300)
    assert all(torch.equal(a, b) for a, b in zip(serial, threaded))


@pytest.mark.parametrize("on_openmp", [True, False])
def test_kernels_on_torchs_openmp_team_equal_the_thread_pool(monkeypatch, on_openmp):
    from isogauss_hf import _noise_numba

    monkeypatch.setattr(_runtime, "NOISE_ON_OPENMP", on_openmp)
    monkeypatch.setattr(_runtime, "NOISE_THREADS", 2)
    if on_openmp:
        assert _runtime.openmp_parallel() is not None  # torch's Linux wheels run on GNU OpenMP
    stats = _stats(403, 170)
    k0, k1 = philox_key(99)
    draw = _noise_numba.fill_eq2(torch.empty(401, 170), eq2_terms(*stats), k0, k1, 2)
    normal = _noise_numba.fill_normal(torch.empty(399, 170), k0, k1, 5, 3)
    assert torch.equal(normal, normal_field(k0, k1, 399, 170, 5, 3))
    assert torch.equal(draw, sample_weight(stats.row_mean[2:403], stats.row_std[2:403], stats.col_mean, stats.col_std,
                                           normal_field(k0, k1, 401, 170, 2), 403, exact_sqrt=True))


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_every_backend_gives_the_same_draw(backend):
    generator = get_noise_generator(DEFAULT_NOISE_GENERATOR)
    stats = _stats(45, 23)
    set_noise_backend("auto")
    expected = generator.draw_rows(stats, 5, 3, 41), generator.normal(5, 9, 23, row_start=2)
    try:
        set_noise_backend(backend)
        assert noise.noise_backend("cpu") == backend
        got = generator.draw_rows(stats, 5, 3, 41), generator.normal(5, 9, 23, row_start=2)
    finally:
        set_noise_backend("auto")
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


@pytest.mark.parametrize("name, device, match", [
    ("cuda-fast", "cpu", "choose one of 'auto', 'numba', 'triton', 'torch'"),
    ("triton", "cpu", "noise backend 'triton' does not run on cpu"),
])
def test_backend_choice_is_validated(name, device, match):
    try:
        with pytest.raises(ValueError, match=match):
            set_noise_backend(name)
            noise.noise_backend(device)
    finally:
        set_noise_backend("auto")


def test_missing_numba_falls_back_to_the_reference_with_one_warning(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_numba(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "_noise_numba" or (fromlist and "_noise_numba" in fromlist):
            raise ImportError("No module named 'numba'")
        return real_import(name, globals, locals, fromlist, level)

    expected = standard_normal(3, 10, 10)
    monkeypatch.setattr(noise, "_broken", {})
    monkeypatch.setattr(builtins, "__import__", no_numba)
    with pytest.warns(RuntimeWarning, match="numba is not available.*same numbers"):
        assert noise.noise_backend("cpu") == "torch"
    assert torch.equal(standard_normal(3, 10, 10), expected)


def test_self_check_refuses_a_kernel_that_differs():
    class Wrong:
        @staticmethod
        def fill_normal(out, k0, k1, row_start, col_start):
            return out.fill_(0.0)

        fill_eq2 = fill_normal

    assert noise._self_check(Wrong, torch.device("cpu")) == "its normals differ from the reference"
    from isogauss_hf import _noise_numba

    assert noise._self_check(_noise_numba, torch.device("cpu")) == ""


_TRITON_SCRIPT = """
import json, torch
from isogauss_hf import _noise_triton as T, noise
from isogauss_hf.philox import normal_field
from isogauss_hf.functional import eq2_terms, sample_weight, RowColStats
out = {"self_check": noise._self_check(T, torch.device("cpu"))}
g = torch.Generator().manual_seed(0)
stats = RowColStats(torch.randn(70, generator=g), torch.rand(70, generator=g), torch.randn(90, generator=g),
                    torch.rand(90, generator=g))
got = T.fill_eq2(torch.empty(61, 90), eq2_terms(*stats), 0xFFFFFFFF, 7, 9)
ref = sample_weight(stats.row_mean[9:70], stats.row_std[9:70], stats.col_mean, stats.col_std,
                    normal_field(0xFFFFFFFF, 7, 61, 90, 9), 70, exact_sqrt=True)
out["eq2_equal"] = bool(torch.equal(got, ref))
print(json.dumps(out))
"""


def test_triton_kernels_equal_the_reference_in_the_interpreter():
    pytest.importorskip("triton")  # the GPU kernels; their logic runs on the CPU through Triton's interpreter
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"self_check": "", "eq2_equal": True}


@pytest.mark.parametrize("key, as_int32", [(0, 0), (7, 7), (2**31 - 1, 2**31 - 1), (2**31, -2**31),
                                             (0xFFFFFFFF, -1), (0xDEADBEEF, 0xDEADBEEF - 2**32)])
def test_triton_keys_travel_as_int32_with_the_same_bits(key, as_int32):
    T = pytest.importorskip("isogauss_hf._noise_triton")  # needs triton
    assert T._as_int32(key) == as_int32 and as_int32 % 2**32 == key  # one kernel signature; the kernel's uint32


_DIGEST_SCRIPT = """
import hashlib, torch
from isogauss_hf.noise import get_noise_generator, standard_normal, set_noise_backend
from isogauss_hf.functional import RowColStats
import sys
set_noise_backend(sys.argv[1])
torch.set_num_threads(int(sys.argv[2]))
v = standard_normal(42, 4, 300)  # inputs made by the portable generator (torch.randn differs between CPU builds)
stats = RowColStats(v[0] * 0.05, v[1].abs() * 0.1, v[2, :200] * 0.05, v[3, :200].abs() * 0.1)
draw = get_noise_generator("philox4x32-10/box-muller-v1").draw_rows(stats, 123456789, 0, 300)
normal = standard_normal(987654321, 300, 200, row_start=1, col_start=2)
print(hashlib.sha256(draw.numpy().tobytes() + normal.numpy().tobytes()).hexdigest())
"""


def _digest(backend: str, threads: int, env: dict) -> str:
    done = subprocess.run([sys.executable, "-c", _DIGEST_SCRIPT, backend, str(threads)],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_same_bits_under_other_cpu_capabilities_threads_and_backends(tmp_path):
    reference = _digest("auto", 2, {})
    generic = {"ATEN_CPU_CAPABILITY": "default", "NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path)}
    assert _digest("auto", 1, generic) == reference  # numba kernels compiled for a generic x86-64, torch without AVX
    assert _digest("torch", 1, {"ATEN_CPU_CAPABILITY": "default"}) == reference  # the reference, plain C++ kernels


# ------------------------------------------------------------------------------------------------ generators
def test_generator_table_matches_the_settings_and_refuses_unknown_names():
    assert set(NOISE_GENERATORS) == {DEFAULT_NOISE_GENERATOR, LEGACY_NOISE_GENERATOR}
    with pytest.raises(ValueError, match="noise_generator='philox' is not valid; choose one of"):
        get_noise_generator("philox")


def test_legacy_generator_regenerates_blocks_and_runs_on_the_cpu():
    legacy = get_noise_generator(LEGACY_NOISE_GENERATOR)
    full = legacy.normal(123, 2 * LEGACY_BLOCK_ROWS + 10, 7)
    part = legacy.normal(123, LEGACY_BLOCK_ROWS + 10, 7, row_start=LEGACY_BLOCK_ROWS)
    assert torch.equal(full[LEGACY_BLOCK_ROWS:], part)
    block0 = torch.randn(LEGACY_BLOCK_ROWS, 7, generator=torch.Generator().manual_seed(derive_seed(123, 0)))
    assert torch.equal(full[:LEGACY_BLOCK_ROWS], block0)  # torch.randn on a CPU generator, block by block
    assert not torch.equal(full, legacy.normal(124, 2 * LEGACY_BLOCK_ROWS + 10, 7))
    with pytest.raises(ValueError, match="multiples of 256, got row_start=5"):
        legacy.normal(1, 3, 7, row_start=5)
