"""``isogauss-finetune`` sweeps: seeds x block sets x variants on a tiny BERT, the comparison table against a hand
computation, resume after an interruption, re-render from the JSON, and the sweep's errors.

The sweep of this file is 2 seeds x 2 block sets x 2 variants (the Gaussian run and ``drop``) plus the dense run
of each seed: 10 runs of 1 step on the 8-row AG News fixture, trained once per module (``sweep_dir``).
"""

import contextlib
import io
import json
import shutil
import statistics
import sys
import types
from pathlib import Path

import pytest

from isogauss_hf.cli import run as run_phase
from isogauss_hf.cli.finetune import main
from isogauss_hf.recipe_checks import PRESETS

from cli_support import FIXTURES, offline, tiny_bert_dir  # noqa: F401  (fixtures)
from cli_support import one_line_error, run_cli

SWEEP = ["--dataset", FIXTURES / "ag_news.jsonl", "--task", "text-classification", "--seeds", "0,1",
         "--layers", "1;2", "--baselines", "drop", "--compare-dense", "--max-steps", "1", "--batch-size", "4",
         "--num-samples", "2", "--no-save-models"]
RUNS = {"dense_s0", "dense_s1", "gdu-seeded+calib=2_b1_s0", "gdu-seeded+calib=2_b2_s0", "drop_b1_s0", "drop_b2_s0",
        "gdu-seeded+calib=2_b1_s1", "gdu-seeded+calib=2_b2_s1", "drop_b1_s1", "drop_b2_s1"}


def _sweep(capsys, model, out, *extra):
    return run_cli(capsys, "--model", model, *SWEEP, *extra, "--output-dir", out)


def _record(out, name):
    return json.loads((Path(out) / "runs" / name / "record.json").read_text())


@pytest.fixture(scope="module")
def trained_sweep(tiny_bert_dir, tmp_path_factory):
    """The sweep, trained once for the module (the tests get a copy: ``sweep_dir``)."""
    root = tmp_path_factory.mktemp("sweep")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setitem(PRESETS["default"], "calibrate_steps", 2)  # as cli_support.offline does
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(root / "hf-home"))
        mp.chdir(root)
        code = main([str(a) for a in ["--model", tiny_bert_dir, *SWEEP, "--output-dir", "sw"]])
    assert code == 0, printed.getvalue()[-2000:]
    return root / "sw", printed.getvalue()


@pytest.fixture
def sweep_dir(trained_sweep, tmp_path):
    shutil.copytree(trained_sweep[0], tmp_path / "sw")
    return Path("sw"), trained_sweep[1]


def test_sweep_trains_every_variant_block_set_and_seed_once(sweep_dir):
    out, printed = sweep_dir
    assert {p.name for p in (out / "runs").iterdir()} == RUNS
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["status"] == "completed" and sweep["seeds"] == [0, 1] and sweep["block_sets"] == ["1", "2"]
    assert sweep["plan"][:2] == ["dense_s0", "gdu-seeded+calib=2_b1_s0"]  # the dense run first in each seed
    record = _record(out, "gdu-seeded+calib=2_b2_s1")
    assert (record["seed"], record["blocks"], record["layers"], record["status"]) == (1, "2", [2], "completed")
    assert record["recipe"]["seed"] == 1 and record["isogauss_config"]["seed"] == 1
    assert not (out / "runs" / "dense_s0" / "model").exists()  # --no-save-models
    assert "sweep: 10/10 runs done" in printed and "| variant | blocks 1 | blocks 2 |" in printed
    assert all((out / f"comparison.{ext}").is_file() for ext in ("json", "md", "png"))


def test_the_comparison_matches_a_hand_computation(sweep_dir):
    out, _ = sweep_dir
    comparison = json.loads((out / "comparison.json").read_text())
    acc = {name: _record(out, name)["metrics"]["accuracy"] for name in RUNS}
    cells = {(c["variant"], c["blocks"]): c for c in comparison["cells"]}
    gauss = [100 * acc[f"gdu-seeded+calib=2_b2_s{s}"] for s in (0, 1)]
    cell = cells[("gdu/seeded+calib=2", "2")]
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(statistics.mean(gauss))
    assert cell["std"] == pytest.approx(statistics.stdev(gauss))
    assert cells[("dense", None)]["values"] == pytest.approx([100 * acc["dense_s0"], 100 * acc["dense_s1"]])
    paired = {(p["variant"], p["blocks"], p["reference"]): p for p in comparison["paired"]}
    diffs = [100 * (acc[f"gdu-seeded+calib=2_b1_s{s}"] - acc[f"drop_b1_s{s}"]) for s in (0, 1)]
    entry = paired[("gdu/seeded+calib=2", "1", "drop")]
    assert entry["diffs"] == pytest.approx(diffs) and entry["mean"] == pytest.approx(statistics.mean(diffs))
    assert entry["above"] == sum(d > 0 for d in diffs)
    # two pairs: the sign-flip p is 1 unless both differences share a sign (then 0.5); never below 2 / 2^2
    expected = 0.5 if (diffs[0] > 0 and diffs[1] > 0) or (diffs[0] < 0 and diffs[1] < 0) else 1.0
    assert entry["p"] == expected and entry["p_floor"] == 0.5 and entry["unresolvable"]
    assert ("gdu/seeded+calib=2", "1", "dense") in paired and ("drop", "2", "dense") in paired
    markdown = (out / "comparison.md").read_text()
    assert "whatever the data with 2 seeds" in markdown and "majority-class rate" in markdown


def test_report_re_renders_from_the_json_alone(sweep_dir, capsys):
    out, _ = sweep_dir
    before = (out / "comparison.md").read_text()
    shutil.rmtree(out / "runs")
    (out / "comparison.md").unlink()
    (out / "comparison.png").unlink()
    code, printed, err = run_cli(capsys, "--report", out)
    assert code == 0, err
    assert (out / "comparison.md").read_text() == before and (out / "comparison.png").is_file()
    assert "| variant | blocks 1 | blocks 2 |" in printed


def test_a_rerun_skips_complete_runs_and_extends_with_new_seeds(sweep_dir, capsys, tiny_bert_dir, monkeypatch):
    out, _ = sweep_dir
    finished = _record(out, "drop_b1_s0")["finished_at"]
    trained = []
    real = run_phase.train_variant
    monkeypatch.setattr(run_phase, "train_variant", lambda ctx, v: trained.append(v.run_dir.name) or real(ctx, v))
    code, printed, err = run_cli(capsys, "--model", tiny_bert_dir, *SWEEP[:5], "0,1,2", *SWEEP[6:], "--output-dir", out)
    assert code == 0, err
    assert sorted(trained) == sorted(n.replace("_s0", "_s2") for n in RUNS if n.endswith("_s0"))
    assert _record(out, "drop_b1_s0")["finished_at"] == finished
    assert json.loads((out / "comparison.json").read_text())["seeds"] == [0, 1, 2]


def test_an_interrupted_sweep_resumes_where_it_stopped(capsys, tiny_bert_dir, monkeypatch):
    real, calls = run_phase.train_variant, []

    def interrupt_fourth(ctx, variant):
        calls.append(variant.run_dir.name)
        if len(calls) == 4:
            (variant.run_dir / "checkpoints").mkdir(parents=True)  # what a killed run leaves
            raise KeyboardInterrupt
        return real(ctx, variant)

    monkeypatch.setattr(run_phase, "train_variant", interrupt_fourth)
    code, out, err = _sweep(capsys, tiny_bert_dir, "int")
    assert code == 130 and "3 of 10 runs are complete" in err and "rerun the same command" in err
    assert json.loads(Path("int/sweep.json").read_text())["status"] == "interrupted"
    stopped = calls[3]
    assert not (Path("int/runs") / stopped / "record.json").exists()
    calls.clear()
    monkeypatch.setattr(run_phase, "train_variant", lambda ctx, v: calls.append(v.run_dir.name) or real(ctx, v))
    code, out, err = _sweep(capsys, tiny_bert_dir, "int")
    assert code == 0, err
    assert calls[0] == stopped and len(calls) == 7 and "sweep: 10/10 runs done" in out
    assert not (Path("int/runs") / stopped / "checkpoints").exists()
    assert {p.name for p in Path("int/runs").iterdir()} == RUNS


def test_a_finished_run_with_other_settings_or_another_sweep_is_refused(sweep_dir, capsys, tiny_bert_dir):
    out, _ = sweep_dir
    code, _, err = run_cli(capsys, "--model", tiny_bert_dir, *SWEEP, "--output-dir", out, "--lr", "0.5")
    one_line_error(code, err, "holds a sweep with other shared settings")
    assert "lr 0.0001 there, 0.5 now" in err and "--overwrite" in err
    code, _, err = run_cli(capsys, "--model", tiny_bert_dir, *SWEEP, "--output-dir", out, "--num-samples", "3")
    one_line_error(code, err, "run gdu-seeded+calib=2_b1_s0 in")
    assert "was trained with other settings" in err and '"num_samples": 3' in err
    assert json.loads((out / "sweep.json").read_text())["status"] == "completed"  # nothing started


def test_dry_run_lists_the_runs_and_what_is_done(sweep_dir, capsys, tiny_bert_dir):
    out, _ = sweep_dir
    code, printed, err = run_cli(capsys, "--model", tiny_bert_dir, *SWEEP[:5], "0,1,2", *SWEEP[6:], "--output-dir",
                                 out, "--dry-run")
    assert code == 0, err
    assert "15 runs, 10 already done" in printed and "drop_b2_s2" in printed and "dry run: nothing trained" in printed
    assert "its complete runs are kept" in printed and "needs --overwrite" not in printed


@pytest.mark.parametrize("argv, pattern", [
    (["--seeds", "0,x"], "--seeds '0,x': give non-negative integers"),
    (["--seeds", "1,1"], "lists a seed more than once"),
    (["--layers", "1;;2"], "an empty block set"),
    (["--layers", "1;1"], "lists the block set 1 more than once"),
    (["--layers", "1;7"], "block"),
    (["--seeds", "0,1", "--seed", "3"], "--seed is for a single run"),
    (["--seeds", "0,1", "--resume-from-checkpoint"], "continues by itself"),
    (["--save-models"], "is for sweeps"),
    (["--report-to", "nonsense"], "--report-to nonsense: unknown"),
])
def test_sweep_flag_errors_are_one_line(capsys, tiny_bert_dir, argv, pattern):
    base = ["--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task", "text-classification",
            "--max-steps", "1", "--output-dir", "bad"]
    layers = [] if "--layers" in argv else ["--layers", "1"]
    code, out, err = run_cli(capsys, *base, *layers, *argv)
    one_line_error(code, err, pattern)
    assert not Path("bad/runs").exists()


def test_report_of_a_directory_without_a_sweep(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--report", tmp_path)
    one_line_error(code, err, "no comparison.json there")


def test_report_to_gets_run_names_and_tensorboard_writes_beside_each_run(capsys, tiny_bert_dir, monkeypatch):
    from transformers import TrainerCallback
    from transformers.integrations import integration_utils

    names, log_dirs = [], []

    class Recorder(TrainerCallback):  # stands in for an installed integration (mlflow here)
        def on_train_begin(self, args, state, control, **kwargs):
            names.append(args.run_name)

    class Writer:  # stands in for tensorboard's SummaryWriter
        def __init__(self, log_dir=None, **kwargs):
            log_dirs.append(log_dir)

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    monkeypatch.setitem(integration_utils.INTEGRATION_TO_CALLBACK, "mlflow", Recorder)
    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: ["mlflow", "tensorboard"])
    monkeypatch.setattr(integration_utils, "is_tensorboard_available", lambda: True)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    code, out, err = run_cli(capsys, "--model", tiny_bert_dir, *SWEEP[:5], "0", "--layers", "1", "--compare-dense",
                             "--max-steps", "1", "--report-to", "mlflow,tensorboard", "--output-dir", "rep")
    assert code == 0, err
    assert [n.split("/")[-1] for n in names] == ["dense_s0", "gdu-seeded+calib=2_b1_s0"]
    assert log_dirs == [str(Path("rep/runs") / n / "logs") for n in ("dense_s0", "gdu-seeded+calib=2_b1_s0")]
    code, out, err = run_cli(capsys, "--model", tiny_bert_dir, *SWEEP[:5], "0", "--layers", "1", "--report-to",
                             "wandb", "--output-dir", "rep2")
    one_line_error(code, err, "--report-to wandb: not installed here (pip install wandb); installed: mlflow")


def test_eval_every_records_the_learning_curve(capsys, tiny_bert_dir):
    code, out, err = run_cli(capsys, "--model", tiny_bert_dir, *SWEEP[:4], "--layers", "none", "--max-steps", "4",
                             "--batch-size", "2", "--eval-every", "2", "--output-dir", "curve")
    assert code == 0, err
    curve = json.loads(Path("curve/results.json").read_text())["runs"][0]["curve"]
    assert [e["step"] for e in curve] == [2, 4] and all(0 <= e["accuracy"] <= 1 for e in curve)
    assert "; curve 2: " in out


def test_auto_blocks_are_scanned_per_seed_and_shown_in_the_table(capsys, tiny_bert_dir):
    code, out, err = run_cli(capsys, "--model", tiny_bert_dir, *SWEEP[:5], "0,1", "--layers", "auto:1;2",
                             "--compare-dense", "--max-steps", "1", "--no-save-models", "--output-dir", "auto")
    assert code == 0, err
    names = {p.name for p in Path("auto/runs").iterdir()}
    assert {"gdu-seeded+calib=2_bauto1_s0", "gdu-seeded+calib=2_bauto1_s1", "gdu-seeded+calib=2_b2_s1"} <= names
    record = _record("auto", "gdu-seeded+calib=2_bauto1_s1")
    assert record["blocks"] == "auto:1" and len(record["layers"]) == 1 and record["recipe"]["layers"] == record["layers"]
    cell = next(c for c in json.loads(Path("auto/comparison.json").read_text())["cells"] if c["blocks"] == "auto:1")
    assert set(cell["picked"]) == {"0", "1"} and "Blocks picked by the scan for auto:1" in out


def test_a_run_that_diverges_is_recorded_and_the_sweep_goes_on(capsys, tiny_bert_dir, monkeypatch):
    from isogauss_hf.errors import TrainingDiverged

    real = run_phase.train_variant

    def diverge_drop(ctx, variant):
        if variant.kind == "drop" and ctx.recipe.seed == 1:
            raise TrainingDiverged("training diverged at step 1")
        return real(ctx, variant)

    monkeypatch.setattr(run_phase, "train_variant", diverge_drop)
    code, out, err = run_cli(capsys, "--model", tiny_bert_dir, *SWEEP[:5], "0,1", "--layers", "1", "--baselines",
                             "drop", "--max-steps", "1", "--no-save-models", "--output-dir", "div")
    assert code == 0, err
    assert "run drop_b1_s1 diverged" in err and _record("div", "drop_b1_s1")["status"] == "diverged"
    cells = {(c["variant"], c["blocks"]): c for c in json.loads(Path("div/comparison.json").read_text())["cells"]}
    assert cells[("drop", "1")]["n"] == 1 and cells[("drop", "1")]["diverged"] == [1]
    assert "(1), 1 diverged" in Path("div/comparison.md").read_text()
    calls = []
    monkeypatch.setattr(run_phase, "train_variant", lambda ctx, v: calls.append(v) or real(ctx, v))
    code, out, err = run_cli(capsys, "--model", tiny_bert_dir, *SWEEP[:5], "0,1", "--layers", "1", "--baselines",
                             "drop", "--max-steps", "1", "--no-save-models", "--output-dir", "div")
    assert code == 0 and calls == []  # a diverged run is a result: the rerun keeps it
