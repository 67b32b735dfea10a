"""PEFT adapter use: get_peft_model(base, IsoGaussConfig) -> train statistics -> save -> PeftModel.from_pretrained.

These tests pin the PEFT internals the registration relies on (mapping tables, tuner hooks, adapter config and state
dict round trip): a PEFT upgrade that breaks them fails here.
"""

import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import peft
import pytest
import torch
from conftest import example_inputs, tiny_bert, tiny_gpt2
from packaging.requirements import Requirement
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from isogauss_hf import IsoGaussCallback, IsoGaussConfig, IsoGaussLinear, get_isogauss_model
from isogauss_hf.config import FORMAT_VERSION, PEFT_TYPE
from isogauss_hf.peft_integration import IsoGaussTuner

ROOT = Path(__file__).resolve().parents[1]


def _adapter(noise="seeded", rule="gdu", layers=(2,), task_type="SEQ_CLS", **kw):
    return get_peft_model(tiny_bert(), IsoGaussConfig(layers=list(layers), noise=noise, rule=rule,
                                                      task_type=task_type, **kw))


def _logits(model, kind="bert"):
    model.eval()
    with torch.no_grad():
        return model(**example_inputs(kind)).logits


def _train_steps(model, steps=2, lr=0.05):
    """Two optimizer steps the way a Trainer runs them, with the IsoGaussCallback hooks."""
    model.train()
    args = SimpleNamespace(max_grad_norm=1.0)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    cb = IsoGaussCallback()
    cb.on_train_begin(args, None, None, model=model)
    x = example_inputs("bert")
    for _ in range(steps):
        loss = model(**x, labels=torch.tensor([0, 2])).loss
        loss.backward()
        cb.on_pre_optimizer_step(args, None, None, model=model, optimizer=opt)
        opt.step()
        opt.zero_grad()
    cb.on_train_end(args, None, None, model=model)
    return cb


def test_peft_version_is_in_the_pinned_range():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pinned = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    spec = next(r.specifier for r in pinned if r.name == "peft")
    assert spec.contains(peft.__version__), f"peft {peft.__version__} outside the tested range {spec}"


def test_registered_in_peft_mapping_tables():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    assert PEFT_TYPE_TO_CONFIG_MAPPING["ISOGAUSS"] is IsoGaussConfig  # lookup by the string in adapter_config.json
    assert PEFT_TYPE_TO_TUNER_MAPPING[PEFT_TYPE] is IsoGaussTuner
    assert PEFT_TYPE_TO_PREFIX_MAPPING[PEFT_TYPE] == "isogauss_"
    assert isinstance(IsoGaussConfig(), peft.PeftConfig) and IsoGaussConfig().peft_type == "ISOGAUSS"
    with pytest.raises(ValueError, match="peft_type must be 'ISOGAUSS'"):
        IsoGaussConfig(peft_type="LORA")


def test_get_peft_model_matches_get_isogauss_model_and_freezes_the_base():
    pm = _adapter()
    assert type(pm).__name__ == "PeftModelForSequenceClassification" and isinstance(pm.base_model, IsoGaussTuner)
    direct = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], noise="seeded", rule="gdu"))
    assert torch.equal(_logits(pm), _logits(direct))  # same module names -> same seeds -> same draw
    gauss_names = {n.removeprefix("base_model.model.") for n, m in pm.named_modules() if isinstance(m, IsoGaussLinear)}
    assert gauss_names == set(direct.isogauss_layers()) and len(gauss_names) == 6
    trainable = {n.removeprefix("base_model.model.") for n, p in pm.named_parameters() if p.requires_grad}
    gauss_biases = {f"{n}.bias" for n in gauss_names}
    head = {"classifier.modules_to_save.default.weight", "classifier.modules_to_save.default.bias"}
    assert trainable == gauss_biases | head
    assert not any("embeddings" in n or "layer.0." in n for n in trainable)


def test_callback_trains_statistics_of_a_peft_model_with_the_config_rule():
    pm = _adapter(rule="gdu", noise="seeded")
    layer = next(m for m in pm.modules() if isinstance(m, IsoGaussLinear))
    before = layer.row_std.clone()
    head_before = pm.base_model.model.classifier.modules_to_save["default"].weight.detach().clone()
    frozen_before = pm.base_model.model.bert.embeddings.word_embeddings.weight.detach().clone()
    cb = _train_steps(pm)
    assert cb.applied_steps == 2 and all(m.rule == "gdu" for m in pm.modules() if isinstance(m, IsoGaussLinear))
    assert not torch.equal(layer.row_std, before)
    assert not torch.equal(pm.base_model.model.classifier.modules_to_save["default"].weight, head_before)
    assert torch.equal(pm.base_model.model.bert.embeddings.word_embeddings.weight, frozen_before)


def test_save_and_peft_from_pretrained_give_identical_outputs(tmp_path):
    pm = _adapter(rule="gdu", noise="seeded")
    _train_steps(pm)
    expected = _logits(pm)
    pm.save_pretrained(str(tmp_path))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(tmp_path))
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "ISOGAUSS" and cfg["format_version"] == FORMAT_VERSION and cfg["rule"] == "gdu"
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    prefix = "base_model.model.bert.encoder.layer.1.attention.self.query."
    for name in ("row_mean", "row_std", "col_mean", "col_std", "noise_seed", "draw_counter", "bias"):
        assert prefix + name in tensors  # statistics are buffers: saved anyway
    assert "base_model.model.classifier.weight" in tensors
    assert not any(k.endswith("query.weight") or "embeddings" in k or "layer.0." in k for k in tensors)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "missing adapter keys" warning
        loaded = PeftModel.from_pretrained(tiny_bert(), str(tmp_path))
    assert type(loaded).__name__ == "PeftModelForSequenceClassification"
    assert torch.equal(_logits(loaded), expected)
    assert not any(p.requires_grad for p in loaded.parameters())  # inference mode by default
    trainable = PeftModel.from_pretrained(tiny_bert(), str(tmp_path), is_trainable=True)
    assert any(p.requires_grad for n, p in trainable.named_parameters() if "query.bias" in n)


def test_seeded_eval_uses_the_one_draw_like_isogauss_model():
    pm = _adapter(noise="seeded", num_samples=3)
    direct = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], noise="seeded", rule="gdu", num_samples=3))
    single = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], noise="seeded", rule="gdu"))
    assert torch.allclose(_logits(pm), _logits(direct), atol=1e-6)
    assert torch.allclose(_logits(pm), _logits(single), atol=1e-6)


def test_resample_eval_averages_num_samples_draws():
    pm = _adapter(noise="resample", num_samples=4)
    calls = []
    inner = pm.base_model.model
    handle = inner.register_forward_hook(lambda *a: calls.append(1))
    _logits(pm)
    handle.remove()
    assert len(calls) == 4


def _corrupt(tmp_path, edit):
    pm = _adapter()
    pm.save_pretrained(str(tmp_path))
    path = str(tmp_path / "adapter_model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


Q = "base_model.model.bert.encoder.layer.1.attention.self.query."


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.pop(Q + "row_std"), r"missing tensors \['base_model.model.bert.encoder.layer.1.attention.self.query.row_std'\]"),
        (lambda t: t.__setitem__(Q + "extra", torch.zeros(1)), r"unexpected tensors \[.*query.extra'\]"),
        (lambda t: t.__setitem__(Q + "col_mean", torch.zeros(7)), r"wrong shapes \[.*query.col_mean: file \(7,\) vs model \(32,\)\]"),
    ],
)
def test_bad_adapter_tensors_are_named(tmp_path, edit, match):
    _corrupt(tmp_path, edit)
    with pytest.raises(ValueError, match=match):
        PeftModel.from_pretrained(tiny_bert(), str(tmp_path))


def test_newer_adapter_format_version_is_refused(tmp_path):
    _adapter().save_pretrained(str(tmp_path))
    path = tmp_path / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"adapter_config.json has format_version {FORMAT_VERSION + 1}, but this "
                                         rf"isogauss-hf supports up to {FORMAT_VERSION}"):
        PeftModel.from_pretrained(tiny_bert(), str(tmp_path))


@pytest.mark.parametrize("version, expected", [(2, "torch-cpu/randn-256-row-blocks"),
                                               (3, "philox4x32-10/box-muller-v1")])
def test_adapter_of_an_older_format_keeps_its_generator(tmp_path, version, expected):
    _adapter().save_pretrained(str(tmp_path))
    path = tmp_path / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg.pop("noise_generator")
    cfg["format_version"] = version
    path.write_text(json.dumps(cfg))
    loaded = PeftModel.from_pretrained(tiny_bert(), str(tmp_path))
    layers = [m for m in loaded.modules() if hasattr(m, "noise_generator") and hasattr(m, "row_mean")]
    assert layers and {m.noise_generator for m in layers} == {expected}


def test_what_an_isogauss_adapter_cannot_do():
    pm = _adapter()
    with pytest.raises(ValueError, match="cannot be disabled"):
        with pm.disable_adapter():
            pass
    with pytest.raises(ValueError, match="cannot be unloaded"):
        pm.unload()
    # issue 22.4: merge_adapter / unmerge_adapter did nothing and raised nothing
    with pytest.raises(ValueError, match=r"cannot be merged in place \(merge_adapter\).*merge_and_unload\(\)"):
        pm.merge_adapter()
    with pytest.raises(ValueError, match=r"nothing to unmerge \(unmerge_adapter\)"):
        pm.unmerge_adapter()
    with pytest.raises(ValueError, match="only one isogauss adapter per model"):
        pm.add_adapter("second", IsoGaussConfig(layers=[1]))


def test_merge_and_unload_gives_a_plain_model_holding_the_seeded_draw(tmp_path):
    from transformers import AutoModelForSequenceClassification

    pm = _adapter(noise="seeded")
    _train_steps(pm)  # the head copy differs from the base head now
    expected = _logits(pm)
    dense = pm.merge_and_unload()
    assert type(dense).__name__ == "BertForSequenceClassification"
    assert not any(isinstance(m, IsoGaussLinear) or "Wrapper" in type(m).__name__ for m in dense.modules())
    assert torch.allclose(_logits(dense), expected, atol=1e-6)
    dense.save_pretrained(str(tmp_path))
    again = AutoModelForSequenceClassification.from_pretrained(str(tmp_path))
    assert torch.allclose(_logits(again), expected, atol=1e-6)


def test_trainer_with_callback_on_a_peft_model(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 100, (8, 6), generator=g)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * 6] * 8,
                              "labels": (ids[:, 0] % 3).tolist()})
    pm = _adapter(rule="wdu", noise="resample")
    layers = [m for m in pm.modules() if isinstance(m, IsoGaussLinear)]
    before = [m.col_std.clone() for m in layers]
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4,
                             learning_rate=5e-2, use_cpu=True, report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, seed=0)
    callback = IsoGaussCallback()
    Trainer(model=pm, args=args, train_dataset=data, callbacks=[callback]).train()
    assert callback.applied_steps == 2 and all(m.rule == "wdu" for m in layers)
    assert all(not torch.equal(m.col_std, b) for m, b in zip(layers, before))
    assert all(int(m.draw_counter) == 2 for m in layers)
    pm.save_pretrained(str(tmp_path / "adapter"))
    loaded = PeftModel.from_pretrained(tiny_bert(), str(tmp_path / "adapter"))
    loaded_layers = [m for m in loaded.modules() if isinstance(m, IsoGaussLinear)]
    assert all(torch.equal(a.col_std, b.col_std) and int(b.draw_counter) == 2 for a, b in zip(layers, loaded_layers))


@pytest.mark.parametrize("noise", ["seeded", "resample"])
def test_causal_lm_adapter_generates_with_one_draw_per_call(tmp_path, noise):
    pm = get_peft_model(tiny_gpt2(), IsoGaussConfig(layers=[1], noise=noise, rule="gdu", task_type="CAUSAL_LM"))
    pm.eval()
    layer = next(m for m in pm.modules() if isinstance(m, IsoGaussLinear))
    keys = []
    hook = layer.register_forward_pre_hook(lambda mod, args: keys.append(mod.current_draw_key()))
    ids = example_inputs("gpt2", batch=1, seq=4)["input_ids"]
    first = pm.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    n = len(keys)
    second = pm.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    hook.remove()
    assert first.shape == (1, 8) and n == 4
    assert len(set(keys[:n])) == 1 and len(set(keys[n:])) == 1  # one draw held for each generate call
    assert (keys[0] == keys[n]) == (noise == "seeded")
    if noise == "seeded":
        assert torch.equal(first, second)
        pm.save_pretrained(str(tmp_path))
        loaded = PeftModel.from_pretrained(tiny_gpt2(), str(tmp_path))
        assert torch.equal(loaded.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=0), first)


def test_adapter_from_the_hub_then_offline_from_cache(tmp_path, monkeypatch):
    from huggingface_hub import HfApi, constants, hf_api
    from test_hub import TOKEN, StandInHub, block_remote_hosts

    block_remote_hosts(monkeypatch)
    server = StandInHub()
    try:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        # PEFT calls huggingface_hub.file_exists: a module-level HfApi whose endpoint was fixed at import time
        monkeypatch.setattr(hf_api.api, "endpoint", server.url)
        pm = _adapter()
        expected = _logits(pm)
        pm.save_pretrained(str(tmp_path / "adapter"))
        api = HfApi(endpoint=server.url, token=TOKEN)
        api.create_repo("tester/adapter")
        api.upload_folder(repo_id="tester/adapter", folder_path=str(tmp_path / "adapter"))
        loaded = PeftModel.from_pretrained(tiny_bert(), "tester/adapter")
        assert torch.equal(_logits(loaded), expected)
    finally:
        server.close()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    again = PeftModel.from_pretrained(tiny_bert(), "tester/adapter")
    assert torch.equal(_logits(again), expected)


def test_plain_peft_model_without_task_type_round_trips(tmp_path):
    pm = _adapter(task_type=None, modules_to_save=["classifier"])
    assert type(pm).__name__ == "PeftModel"
    expected = _logits(pm)
    pm.save_pretrained(str(tmp_path))
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["auto_mapping"]["base_model_class"] == "BertForSequenceClassification"
    loaded = PeftModel.from_pretrained(tiny_bert(), str(tmp_path))
    assert type(loaded).__name__ == "PeftModel" and torch.equal(_logits(loaded), expected)


# ---------------------------------------------------------------------------------------------- parameter accounting
def test_trainable_parameters_include_the_statistics_gdu_learns(tmp_path, capsys):
    pm = _adapter(rule="gdu")
    peft_count = type(pm).get_nb_trainable_parameters.__isogauss_wrapped__  # PEFT's own, parameters only
    params_trainable, params_total = peft_count(pm)
    assert params_trainable == 323  # Gaussian biases (224) + classifier copy (99)
    trainable, total = pm.get_nb_trainable_parameters()
    assert (trainable, total) == (323 + 896, params_total + 896)
    pm.print_trainable_parameters()
    assert f"trainable params: 1,219 || all params: {total:,d}" in capsys.readouterr().out
    # what is learned is what the adapter saves: biases and statistics of the Gaussian layers, the head copy
    pm.save_pretrained(str(tmp_path))
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert sum(v.numel() for k, v in tensors.items() if not k.endswith(("noise_seed", "draw_counter"))) == 1219
    loaded = PeftModel.from_pretrained(tiny_bert(), str(tmp_path))  # inference mode: nothing learned
    assert loaded.get_nb_trainable_parameters() == (0, total)
    trainable_again = PeftModel.from_pretrained(tiny_bert(), str(tmp_path), is_trainable=True)
    assert trainable_again.get_nb_trainable_parameters() == (1219, total)


@pytest.mark.parametrize("rule, expected", [("frozen", 323), ("backprop", 323 + 896)])
def test_trainable_parameters_of_frozen_and_backprop_adapters(rule, expected):
    pm = _adapter(rule=rule)
    trainable, total = pm.get_nb_trainable_parameters()
    assert trainable == expected
    assert total == type(pm).get_nb_trainable_parameters.__isogauss_wrapped__(pm)[1] + (896 if rule == "frozen" else 0)


def test_other_peft_methods_keep_peft_parameter_count():
    from peft import LoraConfig

    lora = get_peft_model(tiny_bert(), LoraConfig(target_modules=["query"], r=2, task_type="SEQ_CLS"))
    peft_count = type(lora).get_nb_trainable_parameters.__isogauss_wrapped__
    assert lora.get_nb_trainable_parameters() == peft_count(lora)
