"""Resuming a Trainer run from a checkpoint continues exactly; checkpoints load with from_pretrained."""

from __future__ import annotations

import os

import pytest
import torch

from isogauss_hf import IsoGaussCallback, IsoGaussConfig, IsoGaussModel, get_isogauss_model

STEPS, SAVE_AT = 6, 3


class Texts(torch.utils.data.Dataset):
    def __init__(self, causal: bool = False):
        self.causal = causal

    def __len__(self):
        return 48

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        ids = torch.randint(0, 100, (8,), generator=g)
        return {"input_ids": ids, "labels": ids.clone() if self.causal else torch.tensor(i % 2)}


def _bert(rule, noise):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                     vocab_size=100)  # dropout left on: the Trainer's saved RNG state must be restored too
    return get_isogauss_model(BertForSequenceClassification(cfg),
                              IsoGaussConfig(layers=[2], rule=rule, noise=noise, seed=1, distribution_lr=5.0))


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16, bos_token_id=0, eos_token_id=0)
    return get_isogauss_model(GPT2LMHeadModel(cfg), IsoGaussConfig(layers=[1], rule="gdu", noise="seeded"))


def _trainer(model, out, causal=False, **kw):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=4, save_steps=SAVE_AT,
                             learning_rate=1e-2, report_to=[], use_cpu=True, disable_tqdm=True, logging_steps=1,
                             seed=0, **kw)
    return Trainer(model=model, args=args, train_dataset=Texts(causal), callbacks=[IsoGaussCallback()])


def _state(model):
    return {k: v.detach().clone() for k, v in model.base_model.state_dict().items()}


@pytest.mark.parametrize("rule,noise", [("gdu", "seeded"), ("gdu", "resample"), ("wdu", "resample")])
def test_six_steps_equal_three_plus_resume_plus_three(tmp_path, rule, noise):
    straight = _bert(rule, noise)
    _trainer(straight, tmp_path / "a").train()
    resumed = _bert(rule, noise)
    _trainer(resumed, tmp_path / "b").train(resume_from_checkpoint=str(tmp_path / "a" / f"checkpoint-{SAVE_AT}"))
    a, b = _state(straight), _state(resumed)
    start = _state(_bert(rule, noise))
    stats = [k for k in a if k.endswith(("row_mean", "row_std", "col_mean", "col_std"))]
    assert len(stats) == 4 * 6
    assert any(not torch.equal(a[k], start[k]) for k in stats)  # training moved the statistics
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_trainer_checkpoint_loads_with_from_pretrained(tmp_path):
    model = _bert("gdu", "seeded")
    _trainer(model, tmp_path).train()
    ckpt = tmp_path / f"checkpoint-{STEPS}"
    assert {"isogauss_config.json", "config.json", "model.safetensors"} <= set(os.listdir(ckpt))
    loaded = IsoGaussModel.from_pretrained(str(ckpt))
    want = _state(model)
    got = _state(loaded)
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    x = torch.randint(0, 100, (2, 8))
    model.eval()
    assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)


def test_tied_weights_model_checkpoints_and_resumes(tmp_path):
    """GPT-2 ties lm_head to wte: the Trainer's safetensors save must not choke on the shared tensor."""
    straight = _gpt2()
    _trainer(straight, tmp_path / "a", causal=True).train()
    ckpt = tmp_path / "a" / f"checkpoint-{SAVE_AT}"
    loaded = IsoGaussModel.from_pretrained(str(ckpt))
    assert loaded.base_model.lm_head.weight.data_ptr() == loaded.base_model.transformer.wte.weight.data_ptr()
    resumed = _gpt2()
    _trainer(resumed, tmp_path / "b", causal=True).train(resume_from_checkpoint=str(ckpt))
    a, b = _state(straight), _state(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert resumed.base_model.lm_head.weight.data_ptr() == resumed.base_model.transformer.wte.weight.data_ptr()


def test_state_dict_round_trip_with_tied_hooks():
    from isogauss_hf.serialization import install_tied_state_dict_hooks

    model = _gpt2()
    full = model.state_dict()
    assert "base_model.lm_head.weight" in full and "base_model.transformer.wte.weight" in full
    install_tied_state_dict_hooks(model)
    install_tied_state_dict_hooks(model)  # idempotent
    sd = model.state_dict()
    assert len(sd) == len(full) - 1
    other = _gpt2()
    install_tied_state_dict_hooks(other)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.load_state_dict(sd, strict=True)  # the dropped alias is filled from its twin
    want, got = model.base_model.state_dict(), other.base_model.state_dict()  # base_model: no hooks, all names
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k


# ------------------------------------------------------------------ atomic saves: a crash never leaves a half checkpoint
def _leftovers(parent):
    return sorted(p for p in os.listdir(parent) if ".tmp-" in p or ".old-" in p)


def _bump(model):
    with torch.no_grad():
        for layer in model.isogauss_layers().values():
            layer.row_mean.add_(1.0)


def test_save_interrupted_while_writing_weights_keeps_previous_checkpoint(tmp_path, monkeypatch):
    import isogauss_hf.serialization as ck

    model = _bert("gdu", "seeded")
    target = tmp_path / "ckpt"
    model.save_pretrained(str(target))
    (target / "tokenizer.json").write_text("{}")  # a file the model save does not write
    before = _state(IsoGaussModel.from_pretrained(str(target)))
    _bump(model)
    real_save = ck.save_file

    def crash_midway(tensors, path, metadata=None):
        real_save(tensors, path, metadata=metadata)
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])  # half the bytes are on disk when the process "dies"
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(ck, "save_file", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(str(target))
    monkeypatch.setattr(ck, "save_file", real_save)
    assert _leftovers(tmp_path) == []
    after = _state(IsoGaussModel.from_pretrained(str(target)))
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert (target / "tokenizer.json").exists()
    model.save_pretrained(str(target))  # a save that completes replaces it, keeping the extra file
    key = "bert.encoder.layer.1.attention.self.query.row_mean"
    assert torch.equal(_state(IsoGaussModel.from_pretrained(str(target)))[key], _state(model)[key])
    assert (target / "tokenizer.json").exists() and _leftovers(tmp_path) == []


def test_interrupted_first_save_leaves_nothing(tmp_path, monkeypatch):
    import isogauss_hf.serialization as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        _bert("gdu", "seeded").save_pretrained(str(tmp_path / "new"))
    assert os.listdir(tmp_path) == []


def test_failed_swap_puts_previous_checkpoint_back(tmp_path, monkeypatch):
    import isogauss_hf.serialization as ck

    model = _bert("gdu", "seeded")
    target = tmp_path / "ckpt"
    model.save_pretrained(str(target))
    before = _state(IsoGaussModel.from_pretrained(str(target)))
    _bump(model)
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in os.path.basename(src):
            raise OSError("rename failed")
        return real_rename(src, dst)

    monkeypatch.setattr(ck.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        model.save_pretrained(str(target))
    monkeypatch.setattr(ck.os, "rename", real_rename)
    assert _leftovers(tmp_path) == []
    after = _state(IsoGaussModel.from_pretrained(str(target)))
    for k in before:
        assert torch.equal(before[k], after[k]), k
