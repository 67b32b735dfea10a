"""``isogauss-analyze`` end to end on a tiny saved BERT and a small local dataset file, and its errors.

The model (2 blocks, hidden 32, word-level tokenizer) and the CSV are written into temporary
directories; ``HF_HUB_OFFLINE=1``: nothing touches the network.
"""

import json

import pytest
import torch

from isogauss_hf.cli.analyze import main

WORDS = ("the a of to in and is was for on at with good bad great awful happy sad love hate movie film day "
         "food service price fast slow").split()


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-bert-analyze")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    model_dir = root / "model"
    BertForSequenceClassification(config).save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    return str(model_dir)


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    lines = ["text,label"]
    for i in range(40):
        words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (3 + i % 6,), generator=g)]
        lines.append(f"{' '.join(words)},{i % 3}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("isogauss-analyze: error:")
    return err[0]


def test_runs_end_to_end_and_writes_md_json_png(capsys, tiny_bert_dir, csv_file, tmp_path):
    out = tmp_path / "analysis"
    code = main(["--model", tiny_bert_dir, "--dataset", csv_file, "--task", "text-classification",
                 "--calibration-samples", "12", "--batch-size", "4", "--max-length", "16", "--suggest", "1",
                 "--output-dir", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    for name in ("analysis.md", "analysis.json", "fit_heatmap.png", "block_sensitivity.png", "std_by_depth.png"):
        assert (out / name).stat().st_size > 0, name
    payload = json.loads((out / "analysis.json").read_text())
    assert [b["block"] for b in payload["blocks"]] == [1, 2]
    assert all(b["replacement_loss"] is not None and b["block_influence"] is not None for b in payload["blocks"])
    assert payload["meta"]["calibration_examples"] == 12 and payload["meta"]["dense_pass_equivalents"] == 3.0
    assert len(payload["matrices"]) == 12 and payload["suggestion"]["blocks"] in ([1], [2])
    assert "suggested --layers" in stdout and "d-loss Gaussian" in stdout


def test_without_dataset_only_fit_metrics(capsys, tiny_bert_dir, tmp_path):
    out = tmp_path / "fit-only"
    assert main(["--model", tiny_bert_dir, "--layers", "2", "--output-dir", str(out), "--no-plots"]) == 0
    payload = json.loads((out / "analysis.json").read_text())
    assert payload["base_loss"] is None and [b["block"] for b in payload["blocks"]] == [2]
    assert payload["blocks"][0]["replacement_loss"] is None and payload["blocks"][0]["fit"]["ks"] > 0
    assert {m["kind"] for m in payload["matrices"]} == {"query", "key", "value", "attention_output", "mlp_in",
                                                        "mlp_out"}


def test_error_k_larger_than_the_block_count(capsys, tiny_bert_dir, csv_file, tmp_path):
    code = main(["--model", tiny_bert_dir, "--dataset", csv_file, "--task", "text-classification", "--suggest", "3",
                 "--output-dir", str(tmp_path / "o")])
    assert code == 2
    assert "--suggest 3" in _one_error_line(capsys)


def test_error_dataset_without_the_task_columns(capsys, tiny_bert_dir, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,y\nhello there,1\ngood day,0\n")
    code = main(["--model", tiny_bert_dir, "--dataset", str(bad), "--task", "text-classification",
                 "--output-dir", str(tmp_path / "o")])
    assert code == 2
    line = _one_error_line(capsys)
    assert "text" in line and "label" in line


def test_error_unknown_model(capsys, tmp_path):
    assert main(["--model", "no-such-model", "--output-dir", str(tmp_path / "o")]) == 2
    assert "unknown model 'no-such-model'" in _one_error_line(capsys)


@pytest.mark.parametrize("argv, needle", [
    (["--layers", "5"], "2 blocks"),
    (["--layers", "x"], "--layers"),
    (["--score", "bogus"], "choose one of"),
    (["--calibration-samples", "0"], "--calibration-samples"),
])
def test_other_bad_input_is_one_line(capsys, tiny_bert_dir, tmp_path, argv, needle):
    assert main(["--model", tiny_bert_dir, "--output-dir", str(tmp_path / "o"), *argv]) == 2
    assert needle in _one_error_line(capsys)


def test_list_scores(capsys):
    assert main(["--list-scores"]) == 0
    assert "replacement_loss" in capsys.readouterr().out
