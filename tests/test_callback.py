"""IsoGaussCallback inside a Trainer: one distribution step per optimizer step, draws keyed by the global
step, numerical guards (non-finite steps skipped, counted in the logs, warned once by layer name), std floor."""

from __future__ import annotations

import warnings

import torch
from transformers import TrainerCallback

from isogauss_hf import IsoGaussCallback, IsoGaussConfig, IsoGaussLinear, get_isogauss_model


class Texts(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"input_ids": torch.randint(0, 100, (8,), generator=g), "labels": torch.tensor(i % 2)}


def _model(**cfg):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                                    intermediate_size=64, vocab_size=100))
    return get_isogauss_model(bert, IsoGaussConfig(**{"layers": [2], "rule": "gdu", **cfg}))


def _train(model, tmp_path, callbacks=(), steps=4, **kw):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=4,
                             learning_rate=1e-2, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                             logging_steps=1, seed=0, **kw)
    trainer = Trainer(model=model, args=args, train_dataset=Texts(), callbacks=[*callbacks, IsoGaussCallback()])
    trainer.train()
    return trainer


def _stats(layer):
    return [getattr(layer, s).clone() for s in IsoGaussLinear.STAT_NAMES]


class Recorder(TrainerCallback):
    """Records, per optimizer step, each layer's statistics before the distribution step (runs before it)."""

    def __init__(self):
        self.before = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.before.append({n: _stats(l) for n, l in model.isogauss_layers().items()})


class Poison(TrainerCallback):
    """Puts a NaN into dL/dW of one layer at chosen steps (runs before IsoGaussCallback)."""

    def __init__(self, name, steps):
        self.name, self.steps = name, set(steps)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            model.isogauss_layers()[self.name].last_weight.grad[0, 0] = float("nan")


def test_callback_updates_every_layer_once_per_step(tmp_path):
    model = _model(noise="resample", distribution_lr=5.0)
    rec = Recorder()
    trainer = _train(model, tmp_path, callbacks=[rec], steps=3, gradient_accumulation_steps=2)
    cb = next(c for c in trainer.callback_handler.callbacks if isinstance(c, IsoGaussCallback))
    assert cb.applied_steps == 3 and cb.skipped_steps == 0
    final = {n: _stats(l) for n, l in model.isogauss_layers().items()}
    for name in final:
        snapshots = [step[name] for step in rec.before] + [final[name]]
        for a, b in zip(snapshots, snapshots[1:]):
            assert any(not torch.equal(x, y) for x, y in zip(a, b)), f"{name} not updated in a step"
    for layer in model.isogauss_layers().values():
        assert int(layer.draw_counter) == 3  # one draw per optimizer step (2 micro-batches share it), keyed 0, 1, 2
        assert not layer.hold_draw and layer.last_weight is None  # released at train end


def test_layers_get_their_qualified_names(tmp_path):
    model = _model()
    _train(model, tmp_path, steps=1)
    for name, layer in model.isogauss_layers().items():
        assert layer.qualified_name == name and name.startswith("bert.encoder.layer.1.")


def test_non_finite_gradient_skips_that_layer_counts_and_warns_once(tmp_path):
    model = _model(noise="seeded", distribution_lr=5.0)
    victim = "bert.encoder.layer.1.attention.self.query"
    rec = Recorder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _train(model, tmp_path, callbacks=[rec, Poison(victim, steps=[1, 2])], steps=4)
    final = {n: _stats(l) for n, l in model.isogauss_layers().items()}
    snaps = [step for step in rec.before] + [final]
    for step in (1, 2):  # the poisoned steps left the victim's distribution as it was, others moved on
        assert all(torch.equal(x, y) for x, y in zip(snaps[step][victim], snaps[step + 1][victim]))
        other = "bert.encoder.layer.1.attention.self.key"
        assert any(not torch.equal(x, y) for x, y in zip(snaps[step][other], snaps[step + 1][other]))
    assert any(not torch.equal(x, y) for x, y in zip(snaps[3][victim], snaps[4][victim]))  # recovers at step 3
    for t in final[victim]:
        assert torch.isfinite(t).all()
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and "non-finite" in str(w.message)]
    assert len(msgs) == 1 and msgs[0].startswith(victim + ":"), msgs
    logged = [e.get("isogauss_skipped_layer_steps") for e in trainer.state.log_history if "loss" in e]
    assert logged == [None, 1, 2, 2], logged


def test_std_never_negative_and_floor_applies(tmp_path):
    model = _model(noise="resample", distribution_lr=50.0, std_floor=0.02)
    _train(model, tmp_path, steps=3)
    for layer in model.isogauss_layers().values():
        assert (layer.row_std >= 0.02).all() and (layer.col_std >= 0.02).all()
    model = _model(noise="resample", rule="wdu", distribution_lr=50.0)
    _train(model, tmp_path, steps=3)
    for layer in model.isogauss_layers().values():
        assert (layer.row_std >= 0).all() and (layer.col_std >= 0).all()
        assert torch.isfinite(layer.row_std).all()


def test_callback_state_is_exportable():
    cb = IsoGaussCallback(rule="gdu", distribution_lr=0.5, check_consistency_every=10)
    cb.applied_steps, cb.skipped_steps = 7, 1
    state = cb.state()
    again = IsoGaussCallback(**state["args"])
    for k, v in state["attributes"].items():
        setattr(again, k, v)
    assert again.state() == state


def test_clipping_still_applies_when_one_layer_gradient_is_nan(tmp_path):
    """The Gaussian gradients are clipped as one group; a NaN layer (skipped anyway) must not disable it."""
    model = _model(noise="seeded", distribution_lr=1.0)
    victim, other = "bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.attention.self.key"
    seen = {}

    class Big(TrainerCallback):  # runs before IsoGaussCallback; keeps a handle on the gradient it clips in place
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            layers = model.isogauss_layers()
            layers[victim].last_weight.grad[0, 0] = float("nan")
            layers[other].last_weight.grad.fill_(1e3)
            seen["grad"] = layers[other].last_weight.grad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _train(model, tmp_path, callbacks=[Big()], steps=1, max_grad_norm=1.0)
    assert float(torch.linalg.vector_norm(seen["grad"])) <= 1.0 + 1e-4  # clipped although another layer had NaN
