"""Each reproduction script (scripts/reproduce_*.py) runs end to end at its --smoke size, so none rots.

The FFN8 scripts get a small synthetic data set (``load_vision`` patched: the real loaders are tested in
test_tasks_assets.py and parsing the npm digits takes tens of seconds); the MiniLM script (analysis_correlation,
whose fine-tunes are an ``isogauss-finetune`` sweep) uses the real offline model and corpora and is skipped when
those assets are not installed.
"""

import importlib.util
import json
import os
import sys

import pytest
import torch

# The scripts write PNGs with matplotlib (a test extra); without it there is nothing to smoke-test.
pytest.importorskip("matplotlib")

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


def load_script(name):
    if SCRIPTS not in sys.path:
        sys.path.insert(0, SCRIPTS)
    spec = importlib.util.spec_from_file_location(f"_smoke_{name}", os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def synthetic_vision(monkeypatch):
    """10-class data whose class is readable from a block of pixels (so training can move accuracy)."""
    if SCRIPTS not in sys.path:
        sys.path.insert(0, SCRIPTS)
    import _repro_common as C

    def fake_load(dataset, train_size=None, test_size=None, seed=0, cache_dir=None):
        assert dataset in ("mnist", "fashion_mnist")
        gen = torch.Generator().manual_seed(7)

        def make(n):
            y = torch.randint(0, 10, (n,), generator=gen)
            x = torch.rand(n, 784, generator=gen) * 0.1
            x[torch.arange(n), y * 78] += 1.0
            return C.ArrayData(x, y)

        return make(train_size or 256), make(test_size or 128)

    monkeypatch.setattr(C, "load_vision", fake_load)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the test process's setting
    return C


def test_table7_smoke(tmp_path, synthetic_vision):
    T7 = load_script("reproduce_table7")
    T7.main(["--smoke", "--datasets", "mnist", "--out-dir", str(tmp_path)])
    data = json.loads((tmp_path / "table7.json").read_text())
    runs = data["runs"]
    # base + 2 layer sets x 7 modes (GDU/WDU x resample/seeded, backprop/seeded, drop, lowrank)
    assert len(runs) == 15
    assert any(r["rule"] == "wdu" and r["noise"] == "seeded" for r in runs.values())
    assert runs["mnist|4,6|drop|-|0"]["parameters"]["gaussian_parameters"] == 0
    assert runs["mnist|4,6|lowrank|-|0"]["parameters"]["gaussian_parameters"] == 2 * 2 * 256  # r = 2 per layer
    for r in runs.values():
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["train_accuracy"] <= 1.0
        # 'seeded' networks are evaluated on their one trained draw, 'resample' ones averaged over draws
        expected = 1 if r["noise"] in (None, "seeded") else 3
        assert r["num_samples"] == expected
        assert r["steps"] == 8  # 256 examples / batch 32, 1 epoch
        assert r["threads"] == torch.get_num_threads()  # reduction order differs between thread counts
    assert runs["mnist|4,6|gdu|resample|0"]["parameters"]["gaussian_parameters"] == 2 * 512
    md = (tmp_path / "table7.md").read_text()
    assert "WDU / seeded" in md and "| 4,6 | GDU / resample | 96.58 | 95.60 |" in md  # paper beside ours
    assert (tmp_path / "table7.png").stat().st_size > 1000
    # resuming with the same settings runs nothing again
    before = (tmp_path / "table7.json").read_text()
    T7.main(["--smoke", "--datasets", "mnist", "--out-dir", str(tmp_path)])
    assert json.loads((tmp_path / "table7.json").read_text())["runs"] == json.loads(before)["runs"]


def test_table8_smoke(tmp_path, synthetic_vision):
    T8 = load_script("reproduce_table8")
    T8.main(["--smoke", "--out-dir", str(tmp_path)])
    data = json.loads((tmp_path / "table8.json").read_text())
    cells = data["cells"]["mnist"]
    assert set(cells) == {f"{m}|{k}" for m in T8.METHODS for k in ("6", "5,7")}
    assert len(cells["random|6"][0]["accuracies"]) == 3  # --random-draws in smoke
    assert all(c["source"] == "trained here" for c in cells["gdu|6"] + cells["gdu-seeded|6"])  # no table7.json in tmp_path
    assert all(c["threads"] == torch.get_num_threads() for c in cells["gdu|6"] + cells["backprop-seeded|6"])
    assert "paper remove" in (tmp_path / "table8.md").read_text()
    assert (tmp_path / "table8.png").stat().st_size > 1000


def test_table8_modes_keep_the_other_trained_cells(tmp_path, synthetic_vision):
    T8 = load_script("reproduce_table8")
    T8.main(["--smoke", "--out-dir", str(tmp_path), "--modes", "gdu/seeded"])
    first = json.loads((tmp_path / "table8.json").read_text())["cells"]["mnist"]
    assert "gdu-seeded|6" in first and "drop-trained|6" not in first  # only the asked-for trained mode ran
    T8.main(["--smoke", "--out-dir", str(tmp_path), "--modes", "drop", "lowrank"])
    data = json.loads((tmp_path / "table8.json").read_text())
    cells = data["cells"]["mnist"]
    assert cells["gdu-seeded|6"] == first["gdu-seeded|6"]  # kept from the previous JSON, not retrained
    assert "drop-trained|6" in cells and "lowrank|5,7" in cells and "wdu|6" not in cells
    assert len(data["commands"]) == 2


@pytest.mark.parametrize("script", ["reproduce_table7", "reproduce_table8"])
@pytest.mark.parametrize("mode", ["backprop-seeded", "gdu/uniform", "dropout"])
def test_unknown_mode_is_one_line_naming_the_valid_ones(tmp_path, synthetic_vision, script, mode):
    module = load_script(script)
    with pytest.raises(SystemExit) as err:
        module.main(["--smoke", "--out-dir", str(tmp_path), "--modes", "drop", mode])
    message = str(err.value)
    assert f"'{mode}'" in message and "backprop/seeded" in message and "\n" not in message
    assert not list(tmp_path.iterdir())  # refused before anything ran or was written


def test_table8_remove_and_random_baselines(synthetic_vision):
    T8 = load_script("reproduce_table8")
    C = synthetic_vision
    dense = C.build_ffn8(0).eval()
    test = C.ArrayData(torch.rand(20, 784), torch.randint(0, 10, (20,)))
    layers = C.ffn_layers(dense)
    with torch.no_grad():  # skipping layer 6 by hand
        h = test.x
        for i, layer in enumerate(layers):
            if i == 5:
                continue
            h = layer(h)
            h = torch.relu(h) if i < 7 else h
    expected = float((h.argmax(-1) == test.y).float().mean())
    assert T8.accuracy_removed(dense, test, [6]) == expected
    a = T8.accuracy_random(dense, test, [5, 7], draws=4, seed=3)
    assert a == T8.accuracy_random(dense, test, [5, 7], draws=4, seed=3)  # seeded, reproducible
    assert len(a) == 4 and all(0 <= x <= 1 for x in a)


def test_figures_smoke(tmp_path, synthetic_vision):
    F = load_script("reproduce_figures")
    F.main(["--smoke", "--out-dir", str(tmp_path)])
    for name, n_runs in (("figure3_gdu_wdu", 2), ("figure4_standardization", 2)):
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert len(data["runs"]) == n_runs
        for run in data["runs"]:
            log = run["log"]
            assert log["steps"] == [0, 2, 4]  # 128 examples / 32 = 4 steps, logged every 2
            entry = log["layers"][run["layer_name"]]
            assert entry["shape"] == [128, 128] and len(entry["row_std"]) == 3
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    fig4 = json.loads((tmp_path / "figure4_standardization.json").read_text())
    assert [r["standardize"] for r in fig4["runs"]] == [False, True]


def test_cnn_offline_collects_the_cli_runs_into_one_table(tmp_path):
    mod = load_script("reproduce_cnn_offline")

    def record(name, correct, rule=None):
        acc = correct / 100
        return {"name": name, "accuracy_summary": {"accuracy": acc, "low": acc - 0.05, "high": acc + 0.05},
                "majority_rate": 0.11, "isogauss_config": {"rule": rule, "noise": "seeded"} if rule else None,
                "parameter_report": {"gaussian_parameters": 640 if rule else 0}}

    for seed, dense in ((0, 80), (1, 82)):
        run_dir = tmp_path / "runs" / f"default-seed{seed}"
        run_dir.mkdir(parents=True)
        runs = [record("dense", dense), record("isogauss", dense - 1, "gdu"), record("drop", dense + 1)]
        (run_dir / "results.json").write_text(json.dumps({"runs": runs}))
    out = tmp_path / "cnn"
    mod.main(["--seeds", "0", "1", "--configs", "default", "--runs-dir", str(tmp_path / "runs"), "--out", str(out),
              "--report-only"])
    md = (tmp_path / "cnn.md").read_text()
    assert "| dense | 81.00 ± 1.41 | 2 |" in md
    assert "| Gaussian (gdu/seeded) | 80.00 ± 1.41 | 2 | 640 |" in md
    assert "| drop | 82.00 ± 1.41 | 2 |" in md and "| lowrank |" not in md  # rows only for runs that exist


@pytest.mark.parametrize("x, y, rho, p", [
    ([1, 2, 3, 4, 5, 6], [10, 20, 30, 40, 50, 60], 1.0, 2 / 720),  # only the identity and its reverse reach |rho| = 1
    ([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1], -1.0, 2 / 720),
    ([1, 2, 3], [1, 1, 2], 1.5 / 3 ** 0.5, 4 / 6),  # ties share the mean rank (1.5, 1.5, 3)
    ([1, 2, 3], [5, 5, 5], None, None),  # a constant score has no rank correlation
])
def test_analysis_correlation_spearman_and_exact_p(x, y, rho, p):
    A = load_script("analysis_correlation")
    got = A.spearman(x, y)
    assert got == pytest.approx(rho) if rho is not None else got is None
    got_p = A.permutation_p(x, y)
    assert got_p == pytest.approx(p) if p is not None else got_p is None


def test_analysis_correlation_report_only_recomputes_the_committed_analysis(tmp_path):
    """--report-only trains nothing: the analysis, table and plot come from the runs in the JSON alone."""
    committed = json.loads(open(os.path.join(os.path.dirname(SCRIPTS), "results", "analysis_correlation.json")).read())
    stripped = {k: v for k, v in committed.items() if k != "analysis"}
    (tmp_path / "corr.json").write_text(json.dumps(stripped))
    load_script("analysis_correlation").main(["--report-only", "--out-dir", str(tmp_path), "--name", "corr"])
    assert json.loads((tmp_path / "corr.json").read_text())["analysis"] == committed["analysis"]
    md = (tmp_path / "corr.md").read_text()
    assert "removal_loss" in md and committed["analysis"]["recommended_score"] in md
    assert (tmp_path / "corr.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="does not exist"):
        load_script("analysis_correlation").main(["--report-only", "--out-dir", str(tmp_path), "--name", "absent"])


def test_the_scripts_pair_seeds_with_the_products_statistics():
    """One implementation of the seed-paired statistics: the package's (isogauss_hf.comparison)."""
    if SCRIPTS not in sys.path:
        sys.path.insert(0, SCRIPTS)
    import _repro_common as C

    from isogauss_hf import comparison

    assert C.sign_flip_p is comparison.sign_flip_p and C.mean_std is comparison.mean_std


def test_analysis_correlation_fine_tunes_through_the_product(tmp_path, monkeypatch):
    """The scan on the Table 2 recipe's data, then the fine-tunes as an isogauss-finetune sweep (smoke size)."""
    from isogauss_hf.recipe_checks import PRESETS
    from isogauss_hf.tasks import asset_report

    report = asset_report()
    missing = [k for k in ("minilm", "bbc_news") if not report.get(k)]
    if missing:
        pytest.skip(f"offline assets not installed: {missing}")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setitem(PRESETS["default"], "calibrate_steps", 2)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    A = load_script("analysis_correlation")
    A.main(["--smoke", "--datasets", "bbc_news", "--seeds", "0", "--single-blocks", "1", "--no-triples",
            "--scan-seeds", "0", "--calibration", "16", "--out-dir", str(tmp_path), "--name", "corr"])
    data = json.loads((tmp_path / "corr.json").read_text())
    assert set(data["runs"]) == {"bbc_news|base|dense", "bbc_news|1|gdu/seeded+calib=2"}
    assert set(data["scans"]["bbc_news"]["scores"]) >= {"removal_loss"}
    records = sorted(p.name for p in (tmp_path / "sweep-bbc-news" / "runs").iterdir())
    assert records == ["dense_s0", "gdu-seeded+calib=2_b1_s0"]
    assert data["runs"]["bbc_news|1|gdu/seeded+calib=2"]["source"] == str(tmp_path / "sweep-bbc-news")


def test_analysis_correlation_refuses_one_sweep_dir_for_two_datasets(capsys):
    A = load_script("analysis_correlation")
    with pytest.raises(SystemExit) as exc:
        A.main(["--datasets", "tweets", "bbc_news", "--sweep-dir", "runs/mine"])
    assert exc.value.code == 2 and "{dataset}" in capsys.readouterr().err
