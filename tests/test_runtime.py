"""``isogauss_hf._runtime``: the thread policy chosen by measurement, the scratch workspace, run_kernel."""

import pytest
import torch

from isogauss_hf import _runtime
from isogauss_hf.layers import IsoGaussLinear
from isogauss_hf.noise import LEGACY_BLOCK_ROWS as B
from isogauss_hf.settings import LEGACY_NOISE_GENERATOR


def test_thread_tuner_probes_both_counts_then_holds_the_faster_and_probes_again():
    tuner = _runtime._ThreadTuner()
    key, cands = ("gdu_update", (3, 4)), (1, 2)
    seen = []
    for _ in range(2 * tuner.PROBES):
        c = tuner.choose(key, cands)
        seen.append(c)
        tuner.report(key, c, 0.010 if c == 1 else 0.020)  # one thread is faster here
    assert seen.count(1) == seen.count(2) == tuner.PROBES
    assert all(tuner.choose(key, cands) == 1 for _ in range(tuner.HOLD))
    assert tuner.choose(key, cands) in cands and tuner.state[key]["pick"] is None  # a fresh comparison
    for _ in range(2 * tuner.PROBES):
        c = tuner.choose(key, cands)
        tuner.report(key, c, 0.030 if c == 1 else 0.005)  # now the other count wins
    assert tuner.choose(key, cands) == 2


@pytest.mark.parametrize("policy, expected", [(1, 1), (None, 2), ("auto", None)])
def test_aux_threads_sets_and_restores_the_thread_count(monkeypatch, policy, expected):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(_runtime, "AUX_THREADS", policy)
    try:
        with _runtime.aux_threads("cpu", ("k", (1,))):
            inside = torch.get_num_threads()
        assert torch.get_num_threads() == 2
        if expected is not None:
            assert inside == expected
        else:
            assert inside in (1, 2)
    finally:
        torch.set_num_threads(before)


def test_run_kernel_passes_workspace_buffers_and_equals_the_plain_call():
    from isogauss_hf import functional as F

    g = torch.Generator().manual_seed(0)
    w, d = torch.randn(20, 10, generator=g), torch.randn(20, 10, generator=g)
    stats = F.row_col_stats(w)
    got = _runtime.run_kernel(F.gdu_update, stats, w, d, 0.1, like=w, scratch_slots=(0, 1, 2))
    for a, b in zip(got, F.gdu_update(stats, w, d, 0.1)):
        assert torch.equal(a, b)
    assert set(_runtime._WORKSPACE.buffers) >= {0, 1, 2}
    _runtime.release_workspace()
    assert _runtime._WORKSPACE.buffers == {}


@pytest.mark.parametrize("rule", ["gdu", "wdu"])
def test_reused_scratch_buffers_do_not_change_updates(monkeypatch, rule):
    from isogauss_hf import _runtime
    from isogauss_hf import functional as fn
    from isogauss_hf.layers.updates import distribution_update

    gen = torch.Generator().manual_seed(4)
    w, g = torch.randn(40, 30, generator=gen), torch.randn(40, 30, generator=gen) * 0.1
    stats = fn.row_col_stats(w)
    step = distribution_update(rule, "resample")

    def update():
        return step(stats, w, g, 0.1)

    monkeypatch.setattr(_runtime, "REUSE_WORKSPACE", False)
    fresh = update()
    monkeypatch.setattr(_runtime, "REUSE_WORKSPACE", True)
    distribution_update("gdu", "resample")(fn.row_col_stats(g * 3), g * 5, w, 0.3)  # leave other values there
    reused = update()
    direct = fn.gdu_update(stats, w, g, 0.1) if rule == "gdu" else fn.wdu_update(w, g, 0.1)  # no scratch at all
    for a, b, c in zip(fresh, reused, direct):
        assert torch.equal(a, b) and torch.equal(a, c)
    _runtime.release_workspace()
    assert _runtime._WORKSPACE.buffers == {}


@pytest.fixture
def compile_off():
    from isogauss_hf import _runtime

    yield _runtime
    _runtime.set_compile(False)


def _updates(stats, w, g):
    """GDU and WDU through the layers' update table (where compiling applies)."""
    from isogauss_hf.layers.updates import distribution_update

    return distribution_update("gdu", "resample")(stats, w, g, 0.1), distribution_update("wdu", "resample")(stats, w, g, 0.1)


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch, compile_off):
    rt = compile_off
    from isogauss_hf import functional as fn
    from isogauss_hf.layers.updates import distribution_update

    gen = torch.Generator().manual_seed(5)
    w, g = torch.randn(30, 20, generator=gen), torch.randn(30, 20, generator=gen)
    stats = fn.row_col_stats(w)
    expected = _updates(stats, w, g)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(rt, "_COMPILED", {})
    rt.set_compile(True)
    with pytest.warns(RuntimeWarning, match="torch.compile of 'gdu_update' failed.*using the eager path"):
        got = distribution_update("gdu", "resample")(stats, w, g, 0.1)
    assert not rt.compile_enabled()
    got_wdu = distribution_update("wdu", "resample")(stats, w, g, 0.1)  # no second warning: eager from now on
    for a, b in zip(got + got_wdu, expected[0] + expected[1]):
        assert torch.equal(a, b)


@pytest.mark.skipif(
    __import__("os").environ.get("ISOGAUSS_TEST_COMPILE") != "1",
    reason="compiles inductor kernels (~30 s on 2 cores); set ISOGAUSS_TEST_COMPILE=1 to run",
)
def test_compiled_kernels_match_the_eager_path(compile_off):
    rt = compile_off
    from isogauss_hf import functional as fn

    gen = torch.Generator().manual_seed(6)
    w, g = torch.randn(2 * B + 44, 40, generator=gen) * 0.1 + 0.2, torch.randn(2 * B + 44, 40, generator=gen) * 0.01
    stats = fn.row_col_stats(w)
    layer = IsoGaussLinear(40, 2 * B + 44, noise_generator=LEGACY_NOISE_GENERATOR)  # its Eq. (2) runs through run_kernel
    layer.set_statistics(stats)
    eager = (*_updates(stats, w, g), layer.sample())
    rt.set_compile(True)
    compiled = (*_updates(stats, w, g), layer.sample())
    assert rt.compile_enabled()
    for a, b in zip(compiled[0] + compiled[1], eager[0] + eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled[2], eager[2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.sample_rows(B, 2 * B + 44), compiled[2][B:], rtol=1e-6, atol=1e-7)


