"""Native transformers loading (issue 13.1): AutoModelFor* / AutoConfig / pipeline on a compressed checkpoint.

With ``import isogauss_hf`` the Auto classes and ``pipeline`` build the IsoGaussModel (same seeded outputs as
``IsoGaussModel.from_pretrained``); without it plain transformers refuses the checkpoint with a message naming
the package, instead of loading it with the Gaussian matrices randomly re-initialised.
"""

import json
import subprocess
import sys

import pytest
import torch
from conftest import MODEL_FACTORIES, example_inputs
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    BertConfig,
    BertTokenizerFast,
    pipeline,
)
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as hf_logging

from isogauss_hf import IsoGaussConfig, IsoGaussModel, get_isogauss_model
from isogauss_hf.auto import IsoGaussCheckpointConfig
from isogauss_hf.checkpoint import ISOGAUSS_MODEL_TYPE
from isogauss_hf.errors import CheckpointError

AUTO = {"bert": AutoModelForSequenceClassification, "roberta": AutoModelForSequenceClassification,
        "vit": AutoModelForImageClassification, "gpt2": AutoModelForCausalLM}


def _saved(tmp_path, kind="bert", **kw):
    config = IsoGaussConfig(**{"layers": [2], "noise": "seeded", **kw})
    model = get_isogauss_model(MODEL_FACTORIES[kind](), config).eval()
    model.save_pretrained(str(tmp_path / "ckpt"))
    return model, str(tmp_path / "ckpt")


def _logits(model, kind="bert"):
    with torch.no_grad():
        return model(**example_inputs(kind)).logits


def _tokenizer(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(50)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))


@pytest.mark.parametrize("kind", sorted(AUTO))
def test_auto_model_builds_the_gaussian_model(tmp_path, kind):
    model, path = _saved(tmp_path, kind)
    loaded = AUTO[kind].from_pretrained(path)
    assert isinstance(loaded, IsoGaussModel) and type(loaded) is type(model)
    assert len(loaded.isogauss_layers()) == len(model.isogauss_layers()) and not loaded.training
    assert torch.equal(_logits(loaded, kind), _logits(model, kind))


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_a_checkpoint_saved_after_trainer_training_loads(tmp_path, kind):
    # Trainer sets model.config.use_cache = False; the generic config of the checkpoint drops that key, which
    # must not read as a value the caller changed
    model = get_isogauss_model(MODEL_FACTORIES[kind](), IsoGaussConfig(layers=[2], noise="seeded")).eval()
    model.config.use_cache = False
    model.save_pretrained(str(tmp_path / "ckpt"))
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["use_cache"] is False
    loaded = AUTO[kind].from_pretrained(str(tmp_path / "ckpt"))
    assert loaded.config.use_cache is False and torch.equal(_logits(loaded, kind), _logits(model, kind))


def test_auto_config_reads_the_checkpoint_config(tmp_path):
    model, path = _saved(tmp_path)
    assert json.loads(open(f"{path}/config.json").read())["model_type"] == ISOGAUSS_MODEL_TYPE
    config = AutoConfig.from_pretrained(path)
    assert isinstance(config, IsoGaussCheckpointConfig)
    assert config.hidden_size == 32 and config.num_labels == 3  # the base values, readable as before
    base = config.base_config()
    assert type(base) is BertConfig and base.to_diff_dict() == model.config.to_diff_dict()


def test_auto_loading_takes_overrides_dtype_and_refuses_unknown_arguments(tmp_path):
    _, path = _saved(tmp_path, noise="resample")
    loaded = AutoModelForSequenceClassification.from_pretrained(path, num_samples=3, noise="seeded",
                                                                dtype=torch.float64)
    assert loaded.isogauss_config.num_samples == 3
    assert all(layer.noise == "seeded" for layer in loaded.isogauss_layers().values())
    assert loaded.base_model.classifier.weight.dtype == torch.float64
    assert next(iter(loaded.isogauss_layers().values())).row_std.dtype == torch.float32
    with pytest.raises(ValueError, match=r"config value\(s\) \['id2label', 'label2id'\] given differ from the "
                                         r"checkpoint's config\.json"):
        AutoModelForSequenceClassification.from_pretrained(path, num_labels=5)  # absorbed by AutoConfig, not applied
    with pytest.raises(TypeError, match=r"unsupported keyword argument\(s\) \['bogus'\]"):
        AutoModelForSequenceClassification.from_pretrained(path, bogus=1)
    # transformers >= 5.25 passes proxies=None itself; a real proxies dict is refused with the environment route
    assert isinstance(AutoModelForSequenceClassification.from_pretrained(path, proxies=None), IsoGaussModel)
    with pytest.raises(TypeError, match=r"proxies is not supported .* HTTPS_PROXY"):
        AutoModelForSequenceClassification.from_pretrained(path, proxies={"https": "http://proxy:3128"})
    with pytest.raises(ValueError, match=r"cannot override \['layers'\]"):
        AutoModelForSequenceClassification.from_pretrained(path, layers=[1])


def test_checkpoint_saved_after_trainer_training_loads_through_auto_and_pipeline(tmp_path):
    """Issue 22.1: the Trainer saves ``use_cache: false`` into config.json, which AutoConfig drops; the Auto classes
    compared it as if the caller had passed it. Now they and pipeline() load what training wrote, with the same
    logits, and still refuse values the caller does pass."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from isogauss_hf import IsoGaussCallback

    tokenizer = _tokenizer(tmp_path)
    model = get_isogauss_model(MODEL_FACTORIES["bert"](), IsoGaussConfig(layers=[2], noise="seeded"))
    texts = [f"w{i} w{i + 1} w{i + 2}" for i in range(8)]
    ds = Dataset.from_dict({"text": texts, "label": [i % 3 for i in range(8)]}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])
    args = TrainingArguments(str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, report_to="none",
                             use_cpu=True, save_strategy="no")
    Trainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
            callbacks=[IsoGaussCallback()]).train()
    path = str(tmp_path / "trained")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    model.eval()
    assert json.loads(open(f"{path}/config.json").read()).get("use_cache") is False  # what made loading fail
    loaded = AutoModelForSequenceClassification.from_pretrained(path)
    with pytest.raises(ValueError, match=r"config value\(s\) \['hidden_dropout_prob'\] given differ"):  # still refused
        AutoModelForSequenceClassification.from_pretrained(path, hidden_dropout_prob=0.3)
    inputs = tokenizer(["w1 w2 w3", "w4 w5"], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**inputs).logits
        assert torch.equal(loaded(**inputs).logits, expected)
    pipe = pipeline("text-classification", model=path)
    got = {d["label"]: d["score"] for d in pipe("w1 w2 w3", top_k=None)}
    probs = torch.softmax(expected[0], -1)
    assert got == pytest.approx({model.config.id2label[i]: float(p) for i, p in enumerate(probs)}, abs=1e-6)


def test_auto_class_of_another_head_is_refused_naming_the_right_one(tmp_path):
    _, path = _saved(tmp_path)
    with pytest.raises(CheckpointError, match=r"holds a compressed BertForSequenceClassification, which "
                                              r"AutoModelForCausalLM does not build; load it with "
                                              r"AutoModelForSequenceClassification"):
        AutoModelForCausalLM.from_pretrained(path)
    with pytest.raises(CheckpointError, match="AutoModel does not build"):
        AutoModel.from_pretrained(path)
    with pytest.raises(CheckpointError, match="cannot build an isogauss-hf model from its config alone"):
        AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path))


def _pipeline_log(fn):
    with CaptureLogger(hf_logging.get_logger("transformers.pipelines.base")) as captured:
        result = fn()
    return result, captured.out


def test_pipeline_from_a_checkpoint_directory(tmp_path):
    model, path = _saved(tmp_path)
    tokenizer = _tokenizer(tmp_path)
    tokenizer.save_pretrained(path)
    pipe, log = _pipeline_log(lambda: pipeline("text-classification", model=path))
    assert isinstance(pipe.model, IsoGaussModel) and "not supported" not in log
    text = "w1 w2 w3 w4"
    with torch.no_grad():
        expected = torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits, -1)[0]
    out = pipe(text, top_k=None)
    got = {d["label"]: d["score"] for d in out}
    assert got == pytest.approx({model.config.id2label[i]: float(p) for i, p in enumerate(expected)}, abs=1e-6)


def test_pipeline_with_a_model_object_is_supported(tmp_path):
    model, _ = _saved(tmp_path)
    pipe, log = _pipeline_log(lambda: pipeline("text-classification", model=model, tokenizer=_tokenizer(tmp_path)))
    assert "is not supported" not in log, log
    assert pipe.model is model and len(pipe("w1 w2")) == 1


def test_text_generation_pipeline_from_a_checkpoint_directory(tmp_path):
    model, path = _saved(tmp_path, "gpt2")
    pipe, log = _pipeline_log(lambda: pipeline("text-generation", model=path, tokenizer=_tokenizer(tmp_path)))
    assert isinstance(pipe.model, IsoGaussModel) and "not supported" not in log
    out = pipe("w1 w2", max_new_tokens=3, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
    ids = pipe.tokenizer("w1 w2", return_tensors="pt")["input_ids"]
    expected = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert list(out) == expected[0].tolist()


def test_pipeline_does_not_fall_back_to_the_dense_class(tmp_path):
    from safetensors.torch import load_file, save_file

    _, path = _saved(tmp_path)
    _tokenizer(tmp_path).save_pretrained(path)
    tensors = load_file(f"{path}/model.safetensors")
    tensors["bert.encoder.layer.1.attention.self.query.row_std"][0] = float("nan")
    save_file(tensors, f"{path}/model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"query\.row_std.* non-finite"):
        pipeline("text-classification", model=path)


PLAIN = r"""
import sys
from transformers import AutoModelForSequenceClassification, pipeline
path = sys.argv[1]
for load in (lambda: AutoModelForSequenceClassification.from_pretrained(path),
             lambda: pipeline("text-classification", model=path)):
    try:
        load()
    except ValueError as e:
        print("REFUSED", str(e).splitlines()[0])
    else:
        print("LOADED")
assert "isogauss_hf" not in sys.modules
"""


def test_plain_transformers_refuses_the_checkpoint_naming_the_package(tmp_path):
    _, path = _saved(tmp_path)
    _tokenizer(tmp_path).save_pretrained(path)
    proc = subprocess.run([sys.executable, "-c", PLAIN, path], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("REFUSED", "LOADED"))]
    assert len(lines) == 2, proc.stdout
    for line in lines:
        assert line.startswith("REFUSED") and "pip install isogauss-hf" in line and "import isogauss_hf" in line
