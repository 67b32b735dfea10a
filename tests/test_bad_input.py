"""Bad-input sweep: every malformed config, checkpoint or call is a clear error, never a silently wrong model."""

from __future__ import annotations

import json
import os
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


