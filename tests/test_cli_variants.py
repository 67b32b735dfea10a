"""``isogauss-finetune`` beyond dense vs Gaussian: baselines as run variants, presets, the closing warnings,
``--layers auto:K``, ``--analyze``, the task head's lr, and the CNN recipes with the Table 6 head.

Tiny local models only (the 2-block BERT and the flat 28x28 pixels of ``cli_support``, a from-scratch
ResNet); ``HF_HUB_OFFLINE=1`` throughout.
"""

import json
import types
from pathlib import Path

import pytest

from isogauss_hf import settings
from isogauss_hf.analysis import DEFAULT_SCORE
from isogauss_hf.cli import run as run_phase
from isogauss_hf.evaluation import summary_from_counts
from isogauss_hf.recipe_checks import PRESETS

from cli_support import FIXTURES, offline, pixels_file, tiny_bert_dir  # noqa: F401  (fixtures)
from cli_support import one_line_error, results_of, run_cli

AG = FIXTURES / "ag_news.jsonl"


def _bert_args(model_dir, *extra):
    return ["--model", model_dir, "--dataset", AG, "--task", "text-classification", *extra]


# ------------------------------------------------------------------------------------------ baselines
#: 2n + 2m of block 2's six matrices (hidden 32, intermediate 64): four 32x32, one 64x32, one 32x64.
BUDGET = 2 * (4 * (32 + 32) + (64 + 32) + (32 + 64))
#: kind -> (holds Gaussian layers, what stands for the replaced weights)
BASELINE_KINDS = {
    "drop": (False, lambda rep: rep["gaussian_parameters"] == 0 and rep["removed_blocks"] == [2]),
    "lowrank": (False, lambda rep: rep["gaussian_parameters"] == BUDGET and set(map(str, rep["ranks"].values()))),
    "frozen": (True, lambda rep: rep["gaussian_parameters"] == BUDGET),
}


def test_baselines_run_beside_dense_and_gaussian_with_intervals_majority_params_and_times(capsys, tiny_bert_dir):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "2", "--compare-dense", "--baselines",
                                                 "drop,lowrank,frozen", "--max-steps", "1", "--num-samples", "1",
                                                 "--output-dir", "b"))
    assert code == 0, err
    results = results_of("b")
    runs = {r["name"]: r for r in results["runs"]}
    assert list(runs) == ["dense", "isogauss", "drop", "lowrank", "frozen"]
    test_rows = results["dataset"]["test"]
    for run in runs.values():
        s = run["accuracy_summary"]
        assert s["n"] == test_rows and s["method"] == "wilson" and s["confidence"] == 0.95
        assert s["low"] <= s["accuracy"] <= s["high"] and s["accuracy"] == run["metrics"]["accuracy"]
        assert run["majority_rate"] == s["majority_rate"] == results["dataset"]["summary"]["test"]["majority_rate"]
        assert run["train_time_s"] > 0 and run["eval_time_s"] >= 0 and run["train_steps"] == 1
        assert Path(run["saved_to"]).is_dir()
    for kind, (gaussian, kept_ok) in BASELINE_KINDS.items():
        run = runs[kind]
        assert run["kind"] == kind and run["gaussian"] is gaussian and run["layers"] == [2], kind
        assert run["parameter_report"]["replaced_weights"] == runs["isogauss"]["parameter_report"]["replaced_weights"]
        assert kept_ok(run["parameter_report"]), (kind, run["parameter_report"])
    # drop saves a smaller, consistent model; lowrank an ordinary (merged) dense checkpoint
    assert AutoConfig.from_pretrained("b/baseline-drop").num_hidden_layers == 1
    merged = AutoModelForSequenceClassification.from_pretrained("b/baseline-lowrank")
    assert merged.bert.encoder.layer[1].intermediate.dense.weight.shape == (64, 32)
    assert Path("b/baseline-frozen/isogauss_config.json").exists()
    # the closing table: every run, with the interval, majority and kept columns
    header = next(line for line in out.splitlines() if line.startswith("run "))
    for column in ("accuracy", "95% interval", "majority", "kept", "train s", "eval s"):
        assert column in header
    for name in runs:
        assert any(line.startswith(f"{name} ") for line in out.splitlines()), name
    assert "== lowrank done: accuracy" in out and "(majority" in out


def test_baselines_plan_in_the_dry_run_and_bad_names(capsys, tiny_bert_dir):
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "1", "--baselines", "drop,lowrank",
                                                 "--dry-run"))
    assert code == 0, err
    assert "baseline drop: layers 1 removed" in out and "weights removed" in out
    assert "baseline lowrank: layers 1" in out and "factor entries" in out
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "1", "--baselines", "drop,pruned",
                                                 "--dry-run"))
    one_line_error(code, err, "baseline 'pruned' is not known; choose from drop, lowrank, frozen")
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "none", "--baselines", "drop",
                                                 "--max-steps", "1", "--output-dir", "nb"))
    assert code == 0, err  # --layers none turns the comparisons off, and says so (issue 22: not silently)
    assert "--baselines drop not run: they stand beside Gaussian blocks, and --layers none trains" in out
    assert [r["name"] for r in results_of("nb")["runs"]] == ["dense"]


# ------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("preset, flags, rule, noise, lr", [
    ("default", [], settings.DEFAULT_RULE, settings.DEFAULT_NOISE, PRESETS["default"]["lr"]),
    ("paper", [], "wdu", "resample", PRESETS["paper"]["lr"]),
    ("paper", ["--rule", "gdu", "--lr", "0.003"], "gdu", "resample", 0.003),  # flags win over the preset
])
def test_preset_values_are_printed_in_the_plan(capsys, tiny_bert_dir, preset, flags, rule, noise, lr):
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "1", "--preset", preset, *flags,
                                                 "--dry-run"))
    assert code == 0, err
    p = PRESETS[preset]
    assert f"preset      {preset}: rule {p['gaussian']['rule']}, noise {p['gaussian']['noise']}" in out
    assert f"(rule {rule}, noise {noise}, num_samples {p['gaussian']['num_samples']}" in out
    assert f"lr {lr:g}" in out and f"warmup {p['warmup_ratio']:g}" in out
    head = lr * p["head_lr_factor"]
    assert (f"(task head {head:g})" in out) == (head != lr)
    from_it = next(line for line in out.splitlines() if line.startswith("  from it"))
    assert ("lr" in from_it.replace(",", " ").split()) == (not flags) and "warmup_ratio" in from_it


@pytest.mark.parametrize("rule, statistics_lr", [("gdu", None), ("backprop", 5e-2)])
def test_the_task_head_and_backprop_statistics_get_their_own_learning_rates(tiny_bert_dir, rule, statistics_lr):
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from isogauss_hf import IsoGaussConfig, get_isogauss_model
    from isogauss_hf.cli.trainer import _guarded_trainer, _trainer_class, head_parameter_names, \
        statistics_parameter_names

    model = get_isogauss_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir),
                               IsoGaussConfig(layers=[1], rule=rule))
    names = head_parameter_names(model)
    assert {n.split("classifier.")[-1] for n in names} == {"weight", "bias"}
    stats = statistics_parameter_names(model)
    assert len(stats) == (4 * 6 if rule == "backprop" else 0)  # 6 matrices of block 1, 4 statistics each
    own = [(names, 1e-3)] + ([(stats, statistics_lr)] if statistics_lr else [])
    args = TrainingArguments(output_dir="t", learning_rate=1e-4, weight_decay=0.01, report_to="none", use_cpu=True)
    trainer = _trainer_class(_guarded_trainer(), own)(model=model, args=args)
    groups = trainer.create_optimizer().param_groups
    assert groups[0]["lr"] == 1e-4  # the body first: IsoGaussCallback reads param_groups[0]
    for wanted, lr in own:
        got = [p for g in groups if g["lr"] == lr for p in g["params"]]
        assert {id(p) for p in got} == {id(p) for n, p in model.named_parameters() if n in wanted}
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])


def test_head_lr_without_a_task_head_is_one_line(capsys, pixels_file):
    code, out, err = run_cli(capsys, "--recipe", "ffn8-mnist", "--dataset", pixels_file, "--head-lr", "0.1",
                             "--max-steps", "1", "--no-compare-dense", "--output-dir", "h")
    one_line_error(code, err, "has no task head")
    assert not Path("h").exists()


# ------------------------------------------------------------------------------------------ closing warnings
def _crafted(per_kind):
    """train_variant as it is, with the accuracy summary replaced: kind -> (correct, total, majority labels)."""
    real = run_phase.train_variant

    def fake(ctx, variant):
        record = real(ctx, variant)
        correct, total, labels = per_kind[variant.kind]
        s = summary_from_counts(correct, total, labels).to_dict()
        record["accuracy_summary"], record["majority_rate"] = s, s["majority_rate"]
        record["metrics"]["accuracy"] = s["accuracy"]
        return record

    return fake


@pytest.mark.parametrize("per_kind, reasons", [
    # Gaussian at the majority rate (50 % of a 50/50 test split), no drop run
    ({"dense": (90, 100, [0] * 50 + [1] * 50), "gaussian": (51, 100, [0] * 50 + [1] * 50)}, ["near_majority"]),
    # Gaussian well above the majority rate but below the drop run, intervals separate
    ({"gaussian": (600, 1000, [0] * 300 + [1] * 300 + [2] * 400),
      "drop": (800, 1000, [0] * 300 + [1] * 300 + [2] * 400)}, ["below_drop"]),
    # both
    ({"gaussian": (40, 100, [0] * 40 + [1] * 60), "drop": (70, 100, [0] * 40 + [1] * 60)},
     ["near_majority", "below_drop"]),
    # a run that learned: no warning
    ({"gaussian": (90, 100, [0] * 50 + [1] * 50), "drop": (80, 100, [0] * 50 + [1] * 50)}, []),
])
def test_a_gaussian_run_at_the_majority_rate_or_below_drop_ends_with_a_warning(capsys, tiny_bert_dir, monkeypatch,
                                                                              per_kind, reasons):
    monkeypatch.setattr(run_phase, "train_variant", _crafted(per_kind))
    flags = ["--compare-dense"] if "dense" in per_kind else []
    flags += ["--baselines", "drop"] if "drop" in per_kind else []
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "2", *flags, "--rule", "gdu", "--noise",
                                                 "seeded", "--max-steps", "1", "--output-dir", "w"))
    assert code == 0, err
    warnings = results_of("w")["warnings"]
    assert [w["reasons"] for w in warnings] == ([reasons] if reasons else [])
    printed = [line for line in err.splitlines() if line.startswith("isogauss-finetune: warning:")]
    assert len(printed) == (1 if reasons else 0)
    if reasons:
        w = warnings[0]
        assert w["configuration"] == {"rule": "gdu", "noise": "seeded", "blocks": [2]}
        assert "rule gdu, noise seeded, blocks 2" in printed[0] and "--preset paper" not in printed[0]
        assert "--layers auto:1" in printed[0] and "isogauss-analyze" in printed[0]
        assert ("majority-class rate" in w["message"]) == ("near_majority" in reasons)
        assert ("below the drop baseline" in w["message"]) == ("below_drop" in reasons)
        if reasons == ["below_drop"]:
            assert "the 95% intervals separate" in w["message"]


@pytest.mark.parametrize("config, blocks, calibrate_steps, expected, absent", [
    ({"rule": "wdu", "noise": "resample"}, [3], 0, ["--noise seeded", "--rule gdu", "--calibrate-steps 200"],
     ["fewer blocks"]),
    ({"rule": "gdu", "noise": "seeded"}, [2, 4, 6], 200, ["fewer blocks", "--layers auto:3"],
     ["--noise", "--rule", "--calibrate-steps"]),
    ({"rule": "backprop", "noise": "seeded"}, [1], 0, ["--calibrate-steps 200", "--suggest 1"], ["fewer blocks"]),
])
def test_the_warning_advises_what_measured_better(config, blocks, calibrate_steps, expected, absent):
    from isogauss_hf.cli import verdict

    recipe = types.SimpleNamespace(model="minilm", dataset="tweets", calibrate_steps=calibrate_steps)
    text = verdict._advice(config, blocks, recipe)
    assert all(e in text for e in expected), text
    assert not any(a in text for a in absent), text
    assert "isogauss-analyze --model minilm --dataset tweets" in text


# ------------------------------------------------------------------------------------------ --layers auto:K
def test_layers_auto_k_scans_the_blocks_and_picks_k(capsys, tiny_bert_dir):
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "auto:1", "--dry-run"))
    assert code == 0, err
    assert f"auto        auto:1 by {DEFAULT_SCORE}" in out and "<- picked" in out
    scores = [line for line in out.splitlines() if line.strip().startswith("block ") and DEFAULT_SCORE in line]
    assert len(scores) == 2  # both blocks scored
    picked = int(next(line for line in out.splitlines() if "picked    layers" in line).split()[-1])
    assert f"run         Gaussian layers {picked} " in out
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "auto:1", "--compare-dense",
                                                 "--max-steps", "1", "--num-samples", "1", "--output-dir", "a"))
    assert code == 0, err
    results = results_of("a")
    auto = results["auto_layers"]
    assert auto["k"] == 1 and len(auto["blocks"]) == 1 and set(auto["scores"]) == {"1", "2"}
    assert auto["blocks"] == [picked]  # the same seeded scan as the dry run
    assert [r["layers"] for r in results["runs"]] == [None, auto["blocks"]]
    assert results["recipe"]["layers"] == auto["blocks"] and results["recipe"]["auto_layers"] is None
    marker = json.loads(Path("a/run.json").read_text())
    assert [v["name"] for v in marker["variants"]] == ["dense", "isogauss"]


@pytest.mark.parametrize("value, pattern", [
    ("auto:3", "auto:3 asks for 3 blocks, but"),
    ("auto:0", "write auto:K with K a positive number"),
    ("auto:x", "write auto:K with K a positive number"),
    ("auto:1.5", "write auto:K with K a positive number"),
    ("auto", "write auto:K with K a positive number"),
])
@pytest.mark.parametrize("dry", [True, False])
def test_bad_auto_k_is_one_line_exit_2(capsys, tiny_bert_dir, value, pattern, dry):
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", value, "--max-steps", "1",
                                                 "--output-dir", "bad", *(["--dry-run"] if dry else [])))
    one_line_error(code, err, pattern)
    assert not Path("bad").exists()


# ------------------------------------------------------------------------------------------ --analyze
def test_analyze_writes_the_dense_runs_weight_drift(capsys, tiny_bert_dir):
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "none", "--analyze", "--max-steps", "2",
                                                 "--lr", "0.01", "--output-dir", "an"))
    assert code == 0, err
    drift = results_of("an")["runs"][0]["drift"]
    assert drift["matrices"] == 12 and set(drift["by_block"]) == {"1", "2"}  # 2 blocks x 6 matrices
    assert drift["mean_wasserstein_relative"] > 0  # training at lr 0.01 moved the weights
    for ext in ("json", "md", "png"):
        assert Path(f"an/analysis/drift-dense.{ext}").is_file()
    rows = json.loads(Path("an/analysis/drift-dense.json").read_text())["matrices"]
    assert {"wasserstein", "before_ks", "after_ks"} <= set(rows[0])
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "1", "--analyze", "--dry-run"))
    one_line_error(code, err, "analyze measures the dense run")


# ------------------------------------------------------------------------------------------ CNN recipes, Table 6 head
@pytest.mark.parametrize("recipe, head", [
    ("resnet18-cifar10", None), ("resnet18-svhn", None), ("mobilenetv2-cifar10", None), ("mobilenetv2-svhn", None),
    ("resnet18-cifar10-head", (1450, 5130)), ("mobilenetv2-cifar10-head", (2986, 12810)),
    ("resnet18-svhn-head", (1450, 5130)), ("mobilenetv2-svhn-head", (2986, 12810)),
])
def test_hub_cnn_recipes_resolve_offline(capsys, recipe, head):
    code, out, err = run_cli(capsys, "--recipe", recipe, "--dry-run")
    assert code == 0, err
    assert "must be downloaded from the Hub (no network here); sizes below use its known config" in out
    assert "dataset     " in out and "images    " in out and "(the known image processor of " in out and "statistics" in out
    if head is not None:  # Table 6: the Gaussian two-layer head beside the dense one-layer head
        assert f"classifier {head[0]:,} parameters (two-layer head, hidden 32) vs {head[1]:,}" in out


def test_classifier_hidden_on_a_tiny_resnet(capsys, pixels_file):
    from isogauss_hf import IsoGaussModel

    code, out, err = run_cli(capsys, "--recipe", "resnet-tiny-fashion-mnist", "--dataset", pixels_file, "--layers",
                             "21", "--classifier-hidden", "8", "--max-steps", "1", "--num-samples", "1",
                             "--output-dir", "ch")
    assert code == 0, err
    dense, gauss = results_of("ch")["runs"]
    d, h, c = 128, 8, 3  # widths 16-128, 3 classes in the pixels fixture
    assert dense["classifier_parameters"]["this_run"] == d * c + c
    assert gauss["classifier_parameters"] == {"this_run": 2 * (d + h) + h + h * c + c, "dense_head": d * c + c,
                                              "hidden": h}
    assert f"classifier {2 * (d + h) + h + h * c + c} parameters (dense head {d * c + c})" in out
    assert gauss["parameter_report"]["replaced_weights"] == d * h
    loaded = IsoGaussModel.from_pretrained("ch/model")
    assert loaded.base_model.config.isogauss_head_hidden == h
    code, out, err = run_cli(capsys, *_bert_args("bert-dir-unused", "--classifier-hidden", "8", "--dry-run"))
    one_line_error(code, err, "image-classification")


def test_calibrate_steps_fits_the_statistics_before_fine_tuning(capsys, tiny_bert_dir):
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "2", "--calibrate-steps", "3",
                                                 "--calibration-samples", "8", "--max-steps", "1", "--num-samples", "1",
                                                 "--output-dir", "c"))
    assert code == 0, err
    assert "calibrated the statistics: 3 steps, block output MSE" in out
    assert "statistics calibrated 3 steps" in out  # the run's title
    assert results_of("c")["recipe"]["calibrate_steps"] == 3
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "2", "--calibrate-steps", "-1"))
    one_line_error(exit_info.value.code, capsys.readouterr().err, "argument --calibrate-steps")


# ------------------------------------------------------------------------------------------ precision, global batch
def test_training_arguments_split_the_global_batch_and_set_the_precision(monkeypatch, tmp_path):
    from isogauss_hf.cli.trainer import per_device_batch, training_args, world_size
    from isogauss_hf.errors import UsageError
    from isogauss_hf.recipes import apply_overrides, load_recipe

    recipe = load_recipe("bert-ag-news")  # Table 9: batch 16
    args = training_args(recipe, tmp_path)
    assert (args.per_device_train_batch_size, args.bf16, args.fp16, args.dataloader_num_workers) == (16, False, False, 0)
    args = training_args(apply_overrides(recipe, {"precision": "bf16"}), tmp_path)
    assert args.bf16 and not args.fp16  # bf16 autocast also on CPU
    monkeypatch.setenv("WORLD_SIZE", "4")  # accelerate launch / torchrun with 4 processes (what training_args reads)
    assert world_size() == 4 and per_device_batch(recipe.batch_size, world_size()) == 4
    assert per_device_batch(32, 2) == 16
    with pytest.raises(UsageError, match="batch_size 16 is the global batch .* over 3 processes; use --batch-size 15"):
        per_device_batch(16, 3)


def test_fp16_on_cpu_and_an_uneven_batch_fail_before_loading(capsys, monkeypatch, tiny_bert_dir):
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "1", "--precision", "fp16",
                                                 "--output-dir", "p"))
    one_line_error(code, err, "precision fp16 needs a GPU")
    monkeypatch.setenv("WORLD_SIZE", "3")
    code, out, err = run_cli(capsys, *_bert_args(tiny_bert_dir, "--layers", "1", "--batch-size", "16",
                                                 "--output-dir", "p"))
    one_line_error(code, err, "does not split evenly over 3 processes")
    assert not Path("p").exists()
