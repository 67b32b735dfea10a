"""Bad-input sweep: every malformed config, checkpoint or call is a clear error, never a silently wrong model."""

from __future__ import annotations

import json
import os
import re
import types

import pytest
import torch
from torch import nn

from isogauss_hf import IsoGaussCallback, IsoGaussConfig, IsoGaussModel, get_isogauss_model
from isogauss_hf.serialization import load_state_dict_checked


def _bert(hidden=32, layers=2, labels=2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=2, intermediate_size=64,
                     vocab_size=100, num_labels=labels)
    return BertForSequenceClassification(cfg)


@pytest.fixture
def ckpt(tmp_path):
    model = get_isogauss_model(_bert(), IsoGaussConfig(layers=[1], noise="seeded", rule="gdu"))
    path = tmp_path / "ckpt"
    model.save_pretrained(str(path))
    return path


# ------------------------------------------------------------------ malformed configs
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(layers="4"), r"layers must be a list.*'4'"),
        (dict(layers=4), r"layers must be a list.*4"),
        (dict(layers=[1.5]), r"layers must be integers.*1\.5"),
        (dict(layers=[True]), r"layers must be integers.*True"),
        (dict(layers=[]), r"layers is empty"),
        (dict(layers=[0, 2]), r"layers \[0\] invalid.*1-based"),
        (dict(layers=[-1]), r"layers \[-1\] invalid"),
        (dict(layers=[2, 3, 2]), r"block\(s\) \[2\] more than once"),
        (dict(target_modules=[]), r"target_modules is empty"),
        (dict(target_modules=[""]), r"target_modules must be non-empty strings"),
        (dict(target_modules=[3]), r"target_modules must be non-empty strings"),
        (dict(rule="sgd"), r"rule='sgd' is not valid.*'gdu', 'wdu'"),
        (dict(rule="gdU"), r"Did you mean 'gdu'"),
        (dict(noise="random"), r"noise='random' is not valid.*'resample', 'seeded'"),
        (dict(seed=-1), r"seed must be a non-negative integer, got -1"),
        (dict(seed="0"), r"seed must be a non-negative integer, got '0'"),
        (dict(num_samples=0), r"num_samples must be an integer >= 1, got 0"),
        (dict(num_samples=-3), r"num_samples must be an integer >= 1, got -3"),
        (dict(num_samples=2.0), r"num_samples must be an integer >= 1, got 2\.0"),
        (dict(num_samples=True), r"num_samples must be an integer >= 1, got True"),
        (dict(standardize="yes"), r"standardize must be true or false, got 'yes'"),
        (dict(distribution_lr=0), r"distribution_lr must be a positive number( \(finite\))? or None, got 0"),
        (dict(distribution_lr=-1e-3), r"distribution_lr must be a positive number"),
        (dict(distribution_lr="1e-3"), r"distribution_lr must be a positive number"),
        (dict(std_floor=-0.1), r"std_floor must be a number >= 0( \(finite\))?, got -0\.1"),
        (dict(distribution_lr=float("inf")), r"distribution_lr must be a positive number"),
        (dict(distribution_lr=float("nan")), r"distribution_lr must be a positive number"),
        (dict(std_floor=float("nan")), r"std_floor must be a number >= 0"),
    ],
)
def test_malformed_config_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IsoGaussConfig(**kwargs)


@pytest.mark.parametrize(
    "data,match",
    [
        ({"layers": [1], "bogus": 1}, r"unknown IsoGaussConfig field\(s\) \['bogus'\]"),
        ({"layers": [1], "format_version": 99}, r"format_version 99.*upgrade"),
        ({"layers": [1], "format_version": "1"}, r"format_version '1'"),
        ({"num_samples": 0}, r"num_samples must be an integer >= 1"),
    ],
)
def test_malformed_config_dict_is_a_clear_error(data, match):
    with pytest.raises(ValueError, match=match):
        IsoGaussConfig.from_dict(data)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(layers=[5]), r"layers \[5\] out of range.*1\.\.2"),
        (dict(target_modules=["querry"]), r"querry"),
    ],
)
def test_config_that_does_not_fit_the_model(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_isogauss_model(_bert(), IsoGaussConfig(**kwargs))


def test_converting_twice_or_with_a_wrong_config_type():
    model = get_isogauss_model(_bert(), IsoGaussConfig(layers=[1]))
    with pytest.raises(ValueError, match="already has Gaussian layers"):
        get_isogauss_model(model, IsoGaussConfig(layers=[2]))
    with pytest.raises(TypeError, match="config must be an IsoGaussConfig, got dict"):
        get_isogauss_model(_bert(), {"layers": [1]})


# ------------------------------------------------------------------ corrupted, truncated, mismatched checkpoints
def _corrupt(path, how):
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    if how == "truncated_data":
        weights.write_bytes(data[: len(data) - 64])
    elif how == "truncated_header":
        weights.write_bytes(data[:20])
    elif how == "garbage":
        weights.write_bytes(os.urandom(len(data)))
    elif how == "empty":
        weights.write_bytes(b"")
    elif how == "missing":
        weights.unlink()


@pytest.mark.parametrize("how", ["truncated_data", "truncated_header", "garbage", "empty"])
def test_corrupted_or_truncated_safetensors(ckpt, how):
    _corrupt(ckpt, how)
    with pytest.raises(ValueError, match=r"cannot read .*model\.safetensors.* as safetensors \(corrupted or truncated"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_missing_weights_file(ckpt):
    _corrupt(ckpt, "missing")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors.* not found"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_corrupted_isogauss_config(ckpt):
    (ckpt / "isogauss_config.json").write_text('{"layers": [1], ')
    with pytest.raises(ValueError, match=r"isogauss_config\.json.* is not valid JSON"):
        IsoGaussModel.from_pretrained(str(ckpt))
    (ckpt / "isogauss_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"must hold a JSON object, got list"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_invalid_values_in_saved_config(ckpt):
    data = json.loads((ckpt / "isogauss_config.json").read_text())
    data["num_samples"] = 0
    (ckpt / "isogauss_config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"num_samples must be an integer >= 1, got 0"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"isogauss_config\.json"):
        IsoGaussModel.from_pretrained(str(tmp_path / "empty"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"is a file; give the checkpoint directory"):
        IsoGaussModel.from_pretrained(str(tmp_path / "file.bin"))


def test_weights_of_a_different_shape(ckpt, tmp_path):
    other = get_isogauss_model(_bert(hidden=16), IsoGaussConfig(layers=[1], noise="seeded", rule="gdu"))
    other.save_pretrained(str(tmp_path / "other"))
    os.replace(tmp_path / "other" / "model.safetensors", ckpt / "model.safetensors")
    with pytest.raises(ValueError, match=r"does not fit the model.*wrong shapes.*row_mean: file \(16,\) vs model \(32,\)"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_weights_with_missing_or_extra_tensors(ckpt):
    from safetensors.torch import load_file, save_file

    state = load_file(str(ckpt / "model.safetensors"))
    key = next(k for k in state if k.endswith("query.row_std"))
    save_file({k: v for k, v in state.items() if k != key}, str(ckpt / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"missing tensors \['{key}'\]"):
        IsoGaussModel.from_pretrained(str(ckpt))
    save_file({**state, "bert.extra.weight": torch.zeros(2)}, str(ckpt / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected tensors \['bert\.extra\.weight'\]"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_weights_of_a_dense_layer_where_a_gaussian_one_is_expected(ckpt):
    """A checkpoint whose isogauss_config.json lists other Gaussian modules than its weights hold."""
    data = json.loads((ckpt / "isogauss_config.json").read_text())
    for rec in data["replaced_modules"]:
        rec["name"] = rec["name"].replace("layer.0.", "layer.1.")
    (ckpt / "isogauss_config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"does not fit the model.*missing tensors.*layer\.1\..*row_mean"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_config_from_a_different_base_model(ckpt, tmp_path):
    _bert(hidden=64).config.save_pretrained(str(tmp_path / "other"))
    os.replace(tmp_path / "other" / "config.json", ckpt / "config.json")
    with pytest.raises(ValueError, match=r"does not match the base model.*hidden_size: checkpoint 32 vs config\.json 64"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_config_of_another_architecture(ckpt):
    from transformers import GPT2Config

    GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100).save_pretrained(str(ckpt))
    with pytest.raises(ValueError, match=r"does not match the base model.*model_type: checkpoint 'bert' vs config\.json 'gpt2'"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_config_with_another_label_count(ckpt, tmp_path):
    _bert(labels=5).config.save_pretrained(str(tmp_path / "other"))
    os.replace(tmp_path / "other" / "config.json", ckpt / "config.json")
    with pytest.raises(ValueError, match=r"num_labels: checkpoint 2 vs config\.json 5"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_module_missing_from_the_base_model(ckpt):
    data = json.loads((ckpt / "isogauss_config.json").read_text())
    data["replaced_modules"][0]["name"] = "bert.encoder.layer.7.attention.self.query"
    (ckpt / "isogauss_config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"lists Gaussian module 'bert\.encoder\.layer\.7\.attention\.self\.query'"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_untrusted_base_class_is_refused(ckpt):
    data = json.loads((ckpt / "isogauss_config.json").read_text())
    data["base_model_class"] = "os:system"
    (ckpt / "isogauss_config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"refusing to import base model class 'os:system'"):
        IsoGaussModel.from_pretrained(str(ckpt))


@pytest.mark.parametrize("override", [dict(layers=[2]), dict(target_modules=["query"]), dict(standardize=True),
                                      dict(seed=5)])
def test_structural_overrides_at_load_are_refused(ckpt, override):
    with pytest.raises(ValueError, match=rf"cannot override \['{next(iter(override))}'\]"):
        IsoGaussModel.from_pretrained(str(ckpt), **override)


@pytest.mark.parametrize("override,match", [(dict(num_samples=0), "num_samples"), (dict(bogus=1), "bogus")])
def test_bad_overrides_at_load(ckpt, override, match):
    with pytest.raises(ValueError, match=match):
        IsoGaussModel.from_pretrained(str(ckpt), **override)


def test_load_state_dict_checked_into_the_wrong_model(ckpt):
    with pytest.raises(ValueError, match=r"does not fit the model.*missing tensors"):
        load_state_dict_checked(nn.Linear(3, 3), str(ckpt / "model.safetensors"))


# ------------------------------------------------------------------ callback misuse
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(rule="adam"), r"rule='adam' is not valid"),
        (dict(distribution_lr=0.0), r"distribution_lr must be a positive number or None, got 0\.0"),
        (dict(check_consistency_every=-1), r"check_consistency_every must be an integer >= 0, got -1"),
        (dict(check_consistency_every=1.5), r"check_consistency_every must be an integer >= 0, got 1\.5"),
    ],
)
def test_bad_callback_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IsoGaussCallback(**kwargs)


def _args(**kw):
    return types.SimpleNamespace(**{"fsdp": "", "deepspeed": None, "max_grad_norm": 1.0, **kw})


def test_callback_refuses_a_model_without_gaussian_layers():
    with pytest.raises(ValueError, match="no Gaussian layers"):
        IsoGaussCallback().on_train_begin(_args(), None, None, model=_bert())


@pytest.mark.parametrize("kw,name", [(dict(fsdp="full_shard"), "FSDP"), (dict(deepspeed="ds.json"), "DeepSpeed")])
def test_callback_refuses_fsdp_and_deepspeed(kw, name):
    model = get_isogauss_model(_bert(), IsoGaussConfig(layers=[1]))
    with pytest.raises(ValueError, match=rf"does not support {name}"):
        IsoGaussCallback().on_train_begin(_args(**kw), None, None, model=model)




# ================================================================== issue 22: first contact and bad input
# One row per input: what is given, the exit code (CLI) or exception (API), a phrase the one-line message holds.
# The CLI rows run main() in a fresh working directory (cli_support.offline: HF_HUB_OFFLINE=1, chdir tmp_path) on
# a tiny local BERT; every input error must be one line on stderr, exit 2, and leave no run directory.
from cli_support import offline, tiny_bert_dir  # noqa: E402,F401  (fixtures: offline is autouse)

TEXTS = ["good film", "bad film", "great phone", "awful phone", "fine movie", "dull movie", "loved it", "hated it"]


def _write_data(root):
    """The data files the rows name, in ``root``."""
    import itertools

    root.mkdir(exist_ok=True)
    rows = list(itertools.islice(itertools.cycle(zip(TEXTS, ["pos", "neg"] * 4)), 40))
    (root / "ok.csv").write_text("text,label\n" + "".join(f"{t} {i},{lab}\n" for i, (t, lab) in enumerate(rows)))
    (root / "my.jsonl").write_text("".join(json.dumps({"review": t, "class": lab}) + "\n" for t, lab in rows))
    (root / "empty.jsonl").write_text("")
    (root / "empty.csv").write_text("")
    (root / "header.csv").write_text("text,label\n")
    (root / "broken.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n'
                                       '{"text": "ok", "label": 1\n')
    (root / "latin1.csv").write_bytes("text,label\ncaf\xe9 au lait,pos\nbad film,neg\n".encode("latin-1"))
    (root / "one-class.csv").write_text("text,label\n" + "".join(f"{t},pos\n" for t in TEXTS))
    (root / "nothing.csv").write_text("a,b\n1,2\n3,4\n")
    (root / "semicolon.csv").write_text("text;label\n" + "".join(f"{t};{lab}\n" for t, lab in rows))
    (root / "mixed-kinds.csv").write_text("text,label\n" + "".join(f"{t} {i},{'pos' if i == 7 else i % 2}\n"
                                                                  for i, (t, _) in enumerate(rows)))
    (root / "object.json").write_text(json.dumps({"rows": [{"text": "a", "label": 1}]}))
    for i in range(4):
        (root / "one-folder" / "only").mkdir(parents=True, exist_ok=True)
        (root / "one-folder" / "only" / f"{i}.txt").write_text(TEXTS[i])
    for name, train, test in (("names-ids", ("pos", "neg"), (1, 0)), ("ids-names", (1, 0), ("pos", "neg"))):
        (root / name).mkdir(exist_ok=True)
        for split, labels in (("train", train), ("test", test)):
            (root / name / f"{split}.jsonl").write_text(
                "".join(json.dumps({"text": t, "label": labels[i % 2]}) + "\n" for i, t in enumerate(TEXTS)))


@pytest.fixture
def cli_inputs(tmp_path, tiny_bert_dir):
    """``{name: path}`` the rows refer to: the tiny model, a compressed checkpoint of it, the data directory."""
    from transformers import AutoModelForSequenceClassification

    data = tmp_path / "inputs"
    _write_data(data)
    ckpt = data / "compressed"
    get_isogauss_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir),
                       IsoGaussConfig(layers=[1])).save_pretrained(str(ckpt))
    (data / "a-file").write_text("x")
    dense = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    dense.save_pretrained(str(data / "no-tokenizer"))  # weights and config only
    with torch.no_grad():
        dense.bert.encoder.layer[0].output.dense.weight[0, 0] = float("nan")
    dense.save_pretrained(str(data / "nan-model"))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if os.path.isfile(os.path.join(tiny_bert_dir, name)):
            (data / "nan-model" / name).write_bytes(open(os.path.join(tiny_bert_dir, name), "rb").read())
    return {"model": tiny_bert_dir, "ckpt": str(ckpt), "data": str(data)}


FT = "isogauss-finetune"
_BASE = ["--model", "{model}", "--max-steps", "1", "--output-dir", "out"]
CLI_ROWS = [
    # (id, program, argv, exit code, phrase)
    ("headline command offline", FT, ["--model", "bert", "--layers", "4,8,12", "--output-dir", "out"], 2,
     "model 'google-bert/bert-base-uncased' must be downloaded from the Hub"),
    ("max-length beyond positions", FT, _BASE + ["--dataset", "{data}/ok.csv", "--max-length", "1000"], 2,
     "--max-length 1000 is more than the 128 token positions of model"),
    ("image task on a text csv", FT, _BASE + ["--dataset", "{data}/ok.csv", "--task", "image-classification"], 2,
     "has no image-classification architecture"),
    ("text and label columns swapped", FT,
     _BASE + ["--dataset", "{data}/ok.csv", "--text-column", "label", "--label-column", "text"], 2,
     "the label column holds 40 different values in 40 train rows, a class for almost every row"),
    ("label column = the text column", FT, _BASE + ["--dataset", "{data}/ok.csv", "--label-column", "text"], 2,
     "column 'text' cannot be both the text (the default) and the label (--label-column)"),
    ("compressed checkpoint as --model", FT, ["--model", "{ckpt}", "--dataset", "{data}/ok.csv", "--output-dir",
                                              "out"], 2, "is an isogauss-hf compressed checkpoint"),
    ("output dir under a file", FT, ["--model", "{model}", "--dataset", "{data}/ok.csv", "--output-dir",
                                     "{data}/a-file/out"], 2, "cannot be written: Not a directory"),
    ("data file as --model", FT, ["--model", "{data}/ok.csv", "--dataset", "{data}/ok.csv", "--output-dir", "out"], 2,
     "ok.csv' is a file; --model takes an alias"),
    ("empty jsonl", FT, _BASE + ["--dataset", "{data}/empty.jsonl", "--task", "text-classification"], 2, "is empty"),
    ("empty csv", FT, _BASE + ["--dataset", "{data}/empty.csv", "--task", "text-classification"], 2, "is empty"),
    ("header-only csv", FT, _BASE + ["--dataset", "{data}/header.csv", "--task", "text-classification"], 2,
     "has a header (text, label) but no rows"),
    ("broken jsonl line", FT, _BASE + ["--dataset", "{data}/broken.jsonl", "--task", "text-classification"], 2,
     "broken.jsonl' line 3: not valid JSON"),
    ("latin-1 csv", FT, _BASE + ["--dataset", "{data}/latin1.csv", "--task", "text-classification"], 2,
     "is not UTF-8 text (byte 0xe9 on line 2); convert it"),
    ("train names, test ids", FT, _BASE + ["--dataset", "{data}/names-ids", "--task", "text-classification"], 2,
     "column 'label' is"),
    ("train ids, test names", FT, _BASE + ["--dataset", "{data}/ids-names", "--task", "text-classification"], 2,
     "share no class with the train split's"),
    ("single class", FT, _BASE + ["--dataset", "{data}/one-class.csv"], 2, "every train row has the label 'pos'"),
    ("no task fits the columns", FT, _BASE + ["--dataset", "{data}/nothing.csv"], 2,
     "--task is needed for dataset"),
    ("missing named column", FT, _BASE + ["--dataset", "{data}/my.jsonl", "--text-column", "reviw"], 2,
     "has no column 'reviw' (--text-column)"),
    # found by the sweep beyond the inputs
    ("missing model directory", FT, ["--model", "nodir/", "--dataset", "{data}/ok.csv", "--output-dir", "out"], 2,
     "model directory 'nodir/' does not exist"),
    ("model directory without tokenizer", FT, ["--model", "{data}/no-tokenizer", "--dataset", "{data}/ok.csv",
                                               "--max-steps", "1", "--output-dir", "out"], 2, "holds no tokenizer"),
    ("model with a NaN weight", FT, ["--model", "{data}/nan-model", "--dataset", "{data}/ok.csv", "--layers", "none",
                                     "--max-steps", "1", "--output-dir", "out"], 2,
     "holds non-finite weights (bert.encoder.layer.0.output.dense.weight: 1 NaN or infinite values)"),
    ("label ids mixed with names", FT, _BASE + ["--dataset", "{data}/mixed-kinds.csv"], 2,
     "the label column mixes class ids ['0', '1'] and class names ['pos']"),
    ("semicolon-separated csv", FT, _BASE + ["--dataset", "{data}/semicolon.csv"], 2,
     "has one column 'text;label': its fields look separated by ';'"),
    ("json object file", FT, _BASE + ["--dataset", "{data}/object.json", "--task", "text-classification"], 2,
     "is one JSON object (keys ['rows']), not rows"),
    ("one class folder", FT, _BASE + ["--dataset", "{data}/one-folder"], 2, "every train row has the label 'only'"),
    ("empty --layers", FT, _BASE + ["--dataset", "{data}/ok.csv", "--layers", ""], 2, "--layers is empty"),
    ("max-length below the special tokens", FT, _BASE + ["--dataset", "{data}/ok.csv", "--max-length", "1"], 2,
     "--max-length 1 leaves no room for text"),
    ("question answering on a text csv", FT, _BASE + ["--dataset", "{data}/ok.csv", "--task", "question-answering"],
     2, "is missing column(s) ['id', 'context', 'question', 'answers']"),
    ("head-lr 1e30 explodes while finite", FT, _BASE[:3] + ["6", "--output-dir", "out", "--dataset", "{data}/ok.csv",
                                                             "--layers", "1", "--head-lr", "1e30"], 1,
     "the loss grew from"),
    ("lr 1e30 diverges", FT, _BASE[:3] + ["6", "--output-dir", "out", "--dataset", "{data}/ok.csv", "--layers", "1",
                                           "--lr", "1e30"], 1, "training diverged at step"),
    ("analyze: output dir is a file", "isogauss-analyze", ["--model", "{model}", "--output-dir", "{data}/a-file"], 2,
     "--output-dir '{data}/a-file' is a file"),
    ("analyze: compressed checkpoint", "isogauss-analyze", ["--model", "{ckpt}", "--output-dir", "an"], 2,
     "is an isogauss-hf compressed checkpoint"),
    ("analyze: single class", "isogauss-analyze",
     ["--model", "{model}", "--dataset", "{data}/one-class.csv", "--output-dir", "an"], 2,
     "every train row has the label 'pos'"),
    ("fetch-assets --help", "isogauss-fetch-assets", ["--help"], 0, "usage: isogauss-fetch-assets"),
]


def _main(program):
    from isogauss_hf.cli import analyze, fetch_assets, finetune

    return {FT: finetune.main, "isogauss-analyze": analyze.main, "isogauss-fetch-assets": fetch_assets.main}[program]


def _call(capsys, program, argv):
    capsys.readouterr()  # what the fixtures printed
    try:
        code = _main(program)(argv)
    except SystemExit as e:  # argparse's --help and errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("row", CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_cli_bad_input_table(row, capsys, cli_inputs):
    _, program, argv, code, phrase = row
    argv = [a.format(**cli_inputs) for a in argv]
    got, out, err = _call(capsys, program, argv)
    phrase = phrase.format(**cli_inputs)
    assert "Traceback" not in err
    if code == 0:
        assert got in (0, None) and phrase in out, out
        assert not [line for line in out.splitlines() if line.lstrip().startswith("#")]  # no shell source
        return
    lines = [line for line in err.splitlines() if f"{program}: error:" in line]
    assert got == code and len(lines) == 1 and phrase in lines[0], err[-2000:]
    if code == 2:  # the error line alone, besides progress bars of the data preparation before it
        rest = [line for line in err.replace("\r", "\n").splitlines()
                if line.strip() and not re.search(r"\d+%\|", line) and f"{program}: error:" not in line]
        assert not rest, err
        assert not os.path.exists("out") and not os.path.exists("an")  # no run directory left behind
    else:
        assert json.loads(open("out/results.json").read())["status"] == "diverged"


def test_read_only_output_dir_is_one_line(capsys, cli_inputs, monkeypatch):
    """OSError 30 (a read-only filesystem) when the output directory is made: one line, exit 2."""
    from pathlib import Path

    real = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.name == "ro-out":
            raise OSError(30, "Read-only file system", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, out, err = _call(capsys, FT, ["--model", cli_inputs["model"], "--dataset", f"{cli_inputs['data']}/ok.csv",
                                        "--max-steps", "1", "--output-dir", "ro-out"])
    assert code == 2 and err.strip().count("\n") == 0, err
    assert "--output-dir 'ro-out' cannot be written: Read-only file system; choose a writable directory" in err


def test_headline_command_plans_the_papers_bert_recipe(capsys):
    code, out, err = _call(capsys, FT, ["--model", "bert", "--layers", "4,8,12", "--dry-run"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("chosen      recipe bert-ag-news, the paper's recipe for --model bert")
    assert "recipe      bert-ag-news:" in out and "block  12  6 modules" in out
    assert "dataset     ag_news: dataset 'fancyzhx/ag_news' must be downloaded from the Hub" in out


def test_task_is_inferred_from_the_columns_and_said_in_the_plan(capsys, cli_inputs):
    code, out, err = _call(capsys, FT, ["--model", cli_inputs["model"], "--dataset", f"{cli_inputs['data']}/my.jsonl",
                                        "--text-column", "review", "--label-column", "class", "--dry-run"])
    assert code == 0, err
    assert (f"chosen      task text-classification, inferred from the columns of {cli_inputs['data']}/my.jsonl "
            f"(text 'review', label 'class')") in out


# ------------------------------------------------------------------ API rows: (id, call, exception, phrase)
def _nan_weight():
    model = _bert()
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.key.weight[3, 4] = float("nan")
    return get_isogauss_model(model, IsoGaussConfig(layers=[1]))


def _huge_weight():
    model = _bert()
    with torch.no_grad():
        model.bert.encoder.layer[0].intermediate.dense.weight.fill_(1e30)
    return get_isogauss_model(model, IsoGaussConfig(layers=[1]))


def _save_onto_a_file(tmp):
    (tmp / "a-file").write_text("x")
    get_isogauss_model(_bert(), IsoGaussConfig(layers=[1])).save_pretrained(str(tmp / "a-file"))


API_ROWS = [
    ("checkpoint path that does not exist", lambda: IsoGaussModel.from_pretrained("./no/such/ckpt"), FileNotFoundError,
     "checkpoint directory './no/such/ckpt' does not exist"),
    ("save_pretrained onto a file", lambda: _save_onto_a_file(__import__("pathlib").Path(".")), ValueError,
     "cannot save to"),
    ("verify_checksums not a bool", lambda: IsoGaussModel.from_pretrained(".", verify_checksums="no"), TypeError,
     "verify_checksums must be True or False, got 'no'"),
    ("callback distribution_lr as text", lambda: IsoGaussCallback(distribution_lr="1e-3"), ValueError,
     "distribution_lr must be a positive number or None, got '1e-3'"),
    ("model given as a string", lambda: get_isogauss_model("a string", IsoGaussConfig(layers=[1])), TypeError,
     "model must be a torch nn.Module (a transformers model), got str 'a string'; load it first"),
    ("NaN weight converted", _nan_weight, ValueError,
     "cannot convert 'bert.encoder.layer.0.attention.self.key': its weight holds 1 non-finite value(s)"),
    ("weights whose statistics overflow", _huge_weight, ValueError,
     "cannot convert 'bert.encoder.layer.0.intermediate.dense': its row_std, col_std overflow"),
]


@pytest.mark.parametrize("row", API_ROWS, ids=[r[0] for r in API_ROWS])
def test_api_bad_input_table(row):
    _, call, exception, phrase = row
    with pytest.raises(exception) as info:
        call()
    assert phrase in str(info.value) and "\n" not in str(info.value)


def _patch_tensor(path, name, edit):
    """Apply ``edit(memoryview)`` to the bytes of tensor ``name`` inside a safetensors file, in place."""
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    start, end = json.loads(bytes(data[8:8 + size]))[name]["data_offsets"]
    edit(memoryview(data)[8 + size + start:8 + size + end])
    path.write_bytes(bytes(data))


def _flip(byte, bit):
    def edit(view):
        view[byte] ^= 1 << bit

    return edit


def _set_float(value):
    def edit(view):
        import struct

        struct.pack_into("<f", view, 0, value)

    return edit


Q = "bert.encoder.layer.0.attention.self.query"
CORRUPTIONS = [  # (id, tensor, edit): finite damage no range check sees
    ("row_mean exponent bit", f"{Q}.row_mean", _flip(3, 6)),
    ("row_std set to 1e30", f"{Q}.row_std", _set_float(1e30)),
    ("noise_seed bit", f"{Q}.noise_seed", _flip(0, 3)),
    ("classifier exponent bit", "classifier.weight", _flip(3, 6)),
]


@pytest.mark.parametrize("row", CORRUPTIONS, ids=[r[0] for r in CORRUPTIONS])
def test_a_tensor_changed_after_saving_is_refused_by_both_loaders(ckpt, row):
    from transformers import AutoModelForSequenceClassification

    _, name, edit = row
    _patch_tensor(ckpt / "model.safetensors", name, edit)
    for load in (IsoGaussModel.from_pretrained, AutoModelForSequenceClassification.from_pretrained):
        with pytest.raises(ValueError, match=rf"tensor '{re.escape(name)}' does not match the SHA-256 recorded when "
                                             r"it was saved.*verify_checksums=False"):
            load(str(ckpt))
    loaded = IsoGaussModel.from_pretrained(str(ckpt), verify_checksums=False)  # a deliberate edit still loads
    assert loaded is not None


def test_checkpoints_without_checksums_still_load(ckpt):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = ckpt / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        assert "isogauss_sha256" in f.metadata()
    save_file(load_file(str(path)), str(path), metadata={"format": "pt"})  # as written before checksums
    IsoGaussModel.from_pretrained(str(ckpt))


def test_warnings_name_the_cause_not_other_blocks(capsys, cli_inputs):
    """A loss that rose (lr 10) or statistics whose every update was skipped (distribution lr 1e30) ended with
    "try other blocks" alone; now the warning says what happened and what to change."""
    base = ["--model", cli_inputs["model"], "--dataset", f"{cli_inputs['data']}/ok.csv", "--layers", "1",
            "--max-steps", "5", "--calibrate-steps", "0", "--overwrite", "--output-dir", "w"]
    code, out, err = _call(capsys, FT, base + ["--lr", "10"])
    assert code == 0 and "the training loss rose from" in err and "the learning rate (lr 10, head lr 100)" in err
    code, out, err = _call(capsys, FT, base + ["--distribution-lr", "1e30"])
    assert code == 0 and "distribution steps of its Gaussian layers were skipped because the update was not finite" \
        in err and "lower --distribution-lr" in err
    assert json.loads(open("w/results.json").read())["warnings"][0]["reasons"] == ["statistics_skipped"]


def test_a_full_disk_is_one_line(capsys, cli_inputs, monkeypatch):
    """Disk full while the Trainer writes a checkpoint (and results.json cannot be updated either): one line naming
    the cause and the fix, no traceback."""
    import errno

    from transformers import Trainer

    from isogauss_hf.cli import output

    real = output.write_json

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def save(self, *args, **kwargs):
        monkeypatch.setattr(output, "write_json", no_space)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 56960 vs 56852")

    monkeypatch.setattr(Trainer, "_save_checkpoint", save)
    code, out, err = _call(capsys, FT, ["--model", cli_inputs["model"], "--dataset", f"{cli_inputs['data']}/ok.csv",
                                        "--layers", "1", "--max-steps", "2", "--output-dir", "full"])
    monkeypatch.setattr(output, "write_json", real)
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 1 and "Traceback" not in err and len(lines) == 1
    assert "No space left on device while writing the run to full" in lines[0] and "free space there" in lines[0]
