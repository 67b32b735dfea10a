"""Mixed precision: bf16 autocast on CPU through the Trainer (fp16/bf16 on GPU when one is present);
statistics stay fp32 whatever the compute dtype."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from isogauss_hf import IsoGaussCallback, IsoGaussConfig, IsoGaussLinear, get_isogauss_model


class Texts(torch.utils.data.Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"input_ids": torch.randint(0, 100, (8,), generator=g), "labels": torch.tensor(i % 2)}


def _model(rule="gdu", noise="resample"):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    return get_isogauss_model(BertForSequenceClassification(cfg),
                              IsoGaussConfig(rule=rule, noise=noise, distribution_lr=5.0))


def _stats(model):
    return {f"{n}.{s}": getattr(layer, s).clone() for n, layer in model.isogauss_layers().items()
            for s in IsoGaussLinear.STAT_NAMES}


def _train(model, tmp_path, **precision):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                             save_strategy="no", report_to=[], disable_tqdm=True, logging_steps=1, seed=0, **precision)
    trainer = Trainer(model=model, args=args, train_dataset=Texts(), callbacks=[IsoGaussCallback()])
    trainer.train()
    return trainer


def _check_trained(model, before, trainer):
    after = _stats(model)
    for k, v in after.items():
        assert v.dtype == torch.float32, f"{k} is {v.dtype}"
        assert torch.isfinite(v).all(), k
    assert any(not torch.equal(before[k], after[k]) for k in after)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(x)) for x in losses)


@pytest.mark.parametrize("rule", ["gdu", "wdu"])
def test_bf16_autocast_training_on_cpu(tmp_path, rule):
    model = _model(rule)
    before = _stats(model)
    seen = []
    layer = next(iter(model.isogauss_layers().values()))
    handle = layer.register_forward_hook(lambda m, i, o: seen.append((o.dtype, m.last_weight.dtype)))
    trainer = _train(model, tmp_path, bf16=True, use_cpu=True)
    handle.remove()
    assert seen and all(out == torch.bfloat16 for out, _ in seen), seen  # the matmul really ran in bf16
    assert all(w == torch.float32 for _, w in seen)  # the draw (and so dL/dW) is fp32
    _check_trained(model, before, trainer)


def test_layer_cast_to_half_precision_keeps_fp32_statistics():
    torch.manual_seed(0)
    layer = IsoGaussLinear.from_linear(nn.Linear(8, 6), noise="resample", seed=1).to(torch.bfloat16)
    assert layer.bias.dtype == torch.bfloat16
    assert all(getattr(layer, s).dtype == torch.float32 for s in IsoGaussLinear.STAT_NAMES)
    layer.train()
    layer.hold_draw = True
    y = layer(torch.randn(4, 8, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert layer.last_weight.grad.dtype == torch.float32
    before = layer.row_mean.clone()
    assert layer.distribution_step("gdu", 1.0)
    assert layer.row_mean.dtype == torch.float32 and not torch.equal(before, layer.row_mean)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gpu_mixed_precision_training(tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("GPU without bf16")
    model = _model("gdu")
    before = {k: v.cuda() for k, v in _stats(model).items()}
    trainer = _train(model, tmp_path, **{precision: True})
    assert next(iter(model.isogauss_layers().values())).row_mean.is_cuda
    _check_trained(model, before, trainer)
