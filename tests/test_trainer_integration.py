"""A short transformers Trainer run with IsoGaussCallback on a tiny BERT: statistics change, draws are per step."""

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from conftest import tiny_bert
from isogauss_hf import IsoGaussCallback, IsoGaussConfig, get_isogauss_model


def tiny_dataset(n=16, seq=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 100, (n, seq), generator=g)
    labels = (ids[:, 0] % 3).tolist()
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * seq] * n, "labels": labels})


@pytest.mark.parametrize("rule", ["gdu", "wdu"])
@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_updates_statistics_once_per_optimizer_step(tmp_path, rule, accumulation):
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], rule=rule, noise="resample"))
    layers = model.isogauss_layers()
    before = {n: [t.clone() for t in layer.statistics] for n, layer in layers.items()}
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4,
        gradient_accumulation_steps=accumulation, learning_rate=5e-2, use_cpu=True, report_to=[],
        save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
    )
    callback = IsoGaussCallback()
    Trainer(model=model, args=args, train_dataset=tiny_dataset(), callbacks=[callback]).train()
    assert callback.applied_steps == 3
    for name, layer in layers.items():
        changed = [not torch.equal(a, b) for a, b in zip(layer.statistics, before[name])]
        assert all(changed), name
        # one weight draw per optimizer step, shared by its micro-batches
        assert int(layer.draw_counter) == 3
        assert layer.last_weight is None and layer.hold_draw is False


def test_gradient_accumulation_sums_micro_batch_gradients():
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[1], noise="resample"))
    model.train()
    for each in model.isogauss_layers().values():
        each.hold_draw = True
    layer = next(iter(model.isogauss_layers().values()))
    data = tiny_dataset(8)
    batches = [data[i:i + 4] for i in (0, 4)]
    grads = []
    for k, b in enumerate(batches):
        torch.manual_seed(k)  # same dropout masks in both passes
        out = model(input_ids=torch.tensor(b["input_ids"]), labels=torch.tensor(b["labels"]))
        (out.loss / 2).backward()
        grads.append(layer.last_weight.grad.clone())
    w = layer.last_weight
    # the second micro-batch reused the draw and added its gradient to the first one's
    assert int(layer.draw_counter) == 1
    single = []
    for k, b in enumerate(batches):
        model.zero_grad()
        w.grad = None
        torch.manual_seed(k)
        out = model(input_ids=torch.tensor(b["input_ids"]), labels=torch.tensor(b["labels"]))
        (out.loss / 2).backward()
        single.append(w.grad.clone())
    scale = grads[1].abs().max().item()
    assert scale > 0
    torch.testing.assert_close(grads[1], single[0] + single[1], rtol=1e-3, atol=1e-4 * scale)
    assert not torch.allclose(grads[1], single[1], rtol=1e-3, atol=1e-4 * scale)


def test_trainer_wdu_with_seeded_noise(tmp_path):
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[1], rule="wdu", noise="seeded"))
    layer = next(iter(model.isogauss_layers().values()))
    before = layer.row_std.clone()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, use_cpu=True, report_to=[], save_strategy="no",
                             learning_rate=5e-2, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=tiny_dataset(), callbacks=[IsoGaussCallback()]).train()
    assert not torch.equal(layer.row_std, before) and torch.isfinite(layer.row_std).all()


def test_callback_logs_statistics_trajectories(tmp_path):
    from isogauss_hf import StatisticsLogger

    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[1], rule="gdu", noise="resample"))
    logger = StatisticsLogger(every=1)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, use_cpu=True,
                             report_to=[], save_strategy="no", learning_rate=5e-2, disable_tqdm=True)
    callback = IsoGaussCallback(statistics_logger=logger, statistics_path="stats.json")
    Trainer(model=model, args=args, train_dataset=tiny_dataset(), callbacks=[callback]).train()
    name = "bert.encoder.layer.0.attention.self.query"
    assert logger.layer_steps(name) == [0, 1, 2, 3]
    series = logger.series(name, "row_mean")
    assert series.shape[0] == 4 and not torch.equal(series[0], series[-1])
    assert (tmp_path / "stats.json").stat().st_size > 100
