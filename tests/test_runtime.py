"""``isogauss_hf._runtime``: the thread policy chosen by measurement, the scratch workspace, run_kernel."""

import pytest
import torch

from isogauss_hf import _runtime


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
