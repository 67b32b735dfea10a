"""The benchmark scripts run end to end at smoke size (so they cannot rot); no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_bench_layer_smoke(tmp_path, one_thread):
    out = tmp_path / "layer"
    report = _load("bench_layer").main(["--smoke", "--threads", "1", "--draws", "--draws-reference", "--out", str(out)])
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["environment"]["smoke"] is True and saved["results"] == json.loads(json.dumps(report["results"]))
    assert [(r["out_features"], r["in_features"]) for r in saved["results"]] == [(64, 32), (32, 64), (8, 4)]
    assert saved["results"][-1]["conv"] == [3, 6, 2]  # the convolution row: kernel 3, 6x6, batch 2
    gaussian = {"gdu/seeded", "gdu/resample", "wdu/seeded", "wdu/resample", "backprop/seeded", "backprop/resample"}
    for row in saved["results"]:
        assert set(row["variants"]) == {"dense"} | gaussian | (set() if row["conv"] else {"ref-gdu", "ref-wdu"})
        assert row["variants"]["dense"]["ratio_to_dense"] == 1.0
        for r in row["variants"].values():
            assert _positive(r["median_ms"]) and _positive(r["ratio_to_dense"]) and _positive(r["cpu_ratio_to_dense"])
            assert len(r["times_ms"]) == saved["environment"]["repeats"]
    md = out.with_suffix(".md").read_text()
    assert "| cpu | 1 | auto | 64x32 | gdu/resample |" in md and "paired ratio" in md
    assert [row["shape"] for row in saved["draws"]] == ["64x32", "32x64"]
    for row in saved["draws"]:
        assert set(row["draws"]) == {"draw legacy", "draw portable", "noise legacy", "noise portable",
                                     "draw portable-torch"} and row["draws"]["draw legacy"]["ratio"] == 1.0
        assert set(row["inference"]) == {"dense", "gaussian", "gaussian-kept"}
        assert all(_positive(r["median_ms"]) for r in {**row["draws"], **row["inference"]}.values())
    assert "## Draws: one seeded weight" in md and "| 64x32 | 1 | 8 | gaussian |" in md


def test_bench_layer_rejects_bad_configs_and_policies(tmp_path):
    for flags in (["--configs", "gdu/noisy"], ["--aux-threads", "many"]):
        with pytest.raises(SystemExit):
            _load("bench_layer").main(["--smoke", *flags, "--out", str(tmp_path / "x")])


def test_bench_layer_rejects_bad_shapes(tmp_path):
    with pytest.raises(SystemExit):
        _load("bench_layer").main(["--smoke", "--shapes", "64by32", "--out", str(tmp_path / "x")])


def test_bench_layer_reference_step_matches_the_layer_update(one_thread):
    """The direct transcription used as the baseline computes the same statistics as the fast layer."""
    bench = _load("bench_layer")
    from isogauss_hf import functional as fn

    gen = torch.Generator().manual_seed(0)
    w, g = torch.randn(50, 20, generator=gen) * 0.1 + 0.3, torch.randn(50, 20, generator=gen) * 0.01
    stats = fn.row_col_stats(w)
    fast = fn.gdu_update(stats, w, g, 0.1)
    ref_rows = bench._ref_gdu_side(stats.row_mean, stats.row_std, w, g, 0.1, 1)
    ref_cols = bench._ref_gdu_side(stats.col_mean, stats.col_std, w, g, 0.1, 0)
    for a, b in zip(fast, (*ref_rows, *ref_cols)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bench_model_smoke(tmp_path, one_thread):
    out = tmp_path / "model"
    _load("bench_model").main(["--smoke", "--threads", "1", "--out", str(out)])
    saved = json.loads(out.with_suffix(".json").read_text())
    train, evals, ckpt = saved["train"], saved["eval"], saved["checkpoint"]
    assert list(train) == ["dense", "1 blocks gdu/seeded", "3 blocks gdu/seeded", "3 blocks wdu/resample",
                           "3 blocks backprop/seeded", "6 blocks gdu/seeded"]
    assert train["dense"]["gaussian_matrices"] == 0 and train["3 blocks wdu/resample"]["gaussian_matrices"] == 12
    assert all(_positive(r["ratio_to_dense"]) for r in train.values())
    assert {r["num_samples"] for r in evals.values()} == {1, 2}
    assert any(r["kept_draw"] for r in evals.values()) and not all(r["kept_draw"] for r in evals.values())
    assert all(_positive(r["tokens_per_s"]) for r in evals.values())
    assert ckpt["dense"]["ratio_to_dense"] == 1.0
    assert all(r["ratio_to_dense"] < 1.0 for name, r in ckpt.items() if name != "dense")
    fresh = saved["fresh"]["bert-eval"]  # the smoke run: one fresh-process case, tiny model
    assert set(fresh) == {"dense", "gaussian", "gaussian-kept"} and fresh["dense"]["ratio_to_dense"] == 1.0
    assert all(_positive(r["median_s"]) and r["peak_rss_mb"] > 0 for r in fresh.values())
    md = out.with_suffix(".md").read_text()
    assert "## Train step" in md and "kept draw" in md and "## Checkpoint" in md and "## Fresh process" in md
