"""Fixtures and helpers shared by the ``isogauss-finetune`` tests (``test_cli.py``, ``test_cli_data.py``).

A tiny 2-block BERT with a word-level tokenizer saved like a hub model, flat 28x28 "images", running
``main()`` and reading ``results.json``; every test runs offline (``HF_HUB_OFFLINE=1``) in its own
``tmp_path`` as working directory.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isogauss_hf.cli.finetune import main

__all__ = ["FIXTURES", "WORDS", "offline", "tiny_bert_dir", "pixels_file", "run_cli", "results_of", "one_line_error"]

FIXTURES = Path(__file__).parent / "fixtures"
WORDS = ("the a of to in and is was for on at with as by from it he she they we you i this that be are not "
         "but has have had will would can could leaders meet geneva peace talks floods thousands region striker "
         "scores twice united win derby champion title sets oil prices stocks market shares bank rates tech "
         "phone apple google software normans normandy france century people name country when where who what "
         "amanda jerry cookies bring tomorrow summary dialogue").split()


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    from isogauss_hf.recipe_checks import PRESETS

    # speed: the default preset calibrates the statistics for 200 steps before fine-tuning; the CLI tests run
    # that path with 2 steps (test_calibrate_steps_fits_the_statistics_before_fine_tuning checks the flag)
    monkeypatch.setitem(PRESETS["default"], "calibrate_steps", 2)
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


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def results_of(out_dir):
    return json.loads((Path(out_dir) / "results.json").read_text())


def one_line_error(code, err, pattern):
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("isogauss-finetune: error:")
    assert pattern in lines[0], lines[0]
