"""Baselines (issue 10): drop blocks, low-rank factors at the Gaussian budget, frozen statistics, the variant table."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PretrainedConfig,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.pytorch_utils import Conv1D

from conftest import example_inputs, tiny_bert, tiny_roberta
from isogauss_hf import IsoGaussConfig, get_isogauss_model, settings
from isogauss_hf.baselines import (
    BASELINES,
    DROP_SPECS,
    BlockSlot,
    DropSpec,
    LowRankConv2d,
    LowRankFusedLinear,
    LowRankLinear,
    apply_lowrank,
    budget_rank,
    drop_blocks,
    get_baseline,
    lowrank_modules,
    merge_lowrank,
    parse_baselines,
    prepare_baseline,
    register_drop_spec,
    svd_factors,
)
from isogauss_hf.baselines.drop import _set_count
from isogauss_hf.errors import UsageError
from isogauss_hf.models.ffn import FFN8Config, FFN8ForImageClassification


# ------------------------------------------------------------------ tiny models with 3 (or 4) blocks
def _vit3(seed=0):
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=8, patch_size=4, num_channels=1, num_labels=4, hidden_size=32, num_hidden_layers=3,
                    num_attention_heads=2, intermediate_size=64)
    return ViTForImageClassification(cfg).eval()


def _gpt2(layers=3, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=layers, n_head=2, bos_token_id=0,
                     eos_token_id=0, **kw)
    return GPT2LMHeadModel(cfg).eval()


def _ffn(seed=0):
    torch.manual_seed(seed)  # 8 -> 6 -> 6 -> 6 -> 10: layers 2, 3 (6 -> 6) removable; 10 labels (see report)
    return FFN8ForImageClassification(FFN8Config(input_size=8, hidden_size=6, num_layers=4, num_labels=10)).eval()


def _ffn_inputs():
    return {"pixel_values": torch.randn(5, 8, generator=torch.Generator().manual_seed(1))}


# kind -> (factory, inputs, Auto class, block list attribute path, config count attribute, blocks to drop)
DROP_CASES = {
    "bert": (lambda: tiny_bert(layers=3), lambda: example_inputs("bert"), AutoModelForSequenceClassification,
             "bert.encoder.layer", "num_hidden_layers", [2]),
    "roberta": (tiny_roberta, lambda: example_inputs("roberta"), AutoModelForSequenceClassification,
                "roberta.encoder.layer", "num_hidden_layers", [1]),
    "vit": (_vit3, lambda: example_inputs("vit"), AutoModelForImageClassification, "vit.layers",
            "num_hidden_layers", [1, 3]),
    "gpt2": (_gpt2, lambda: example_inputs("gpt2"), AutoModelForCausalLM, "transformer.h", "n_layer", [2]),
    "ffn8": (_ffn, _ffn_inputs, AutoModelForImageClassification, "layers", "num_layers", [2, 3]),
}


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


# ------------------------------------------------------------------ drop
@pytest.mark.parametrize("kind", list(DROP_CASES))
def test_drop_changes_blocks_and_config_and_round_trips(kind, tmp_path):
    factory, inputs_fn, auto, list_path, count_attr, blocks = DROP_CASES[kind]
    model, inputs = factory(), inputs_fn()
    container = model.get_submodule(list_path)
    n_before = len(container)
    kept = [container[i] for i in range(n_before) if i + 1 not in blocks]
    before = _logits(model, inputs)
    assert drop_blocks(model, blocks) is model
    container = model.get_submodule(list_path)
    assert len(container) == n_before - len(blocks)
    assert all(a is b for a, b in zip(container, kept))  # the remaining blocks, in order
    assert getattr(model.config, count_attr) == n_before - len(blocks)
    after = _logits(model, inputs)
    assert not torch.allclose(before, after)  # something was removed
    model.save_pretrained(tmp_path)
    reloaded = auto.from_pretrained(tmp_path).eval()
    assert len(reloaded.get_submodule(list_path)) == n_before - len(blocks)
    torch.testing.assert_close(_logits(reloaded, inputs), after, rtol=0, atol=1e-6)


def test_drop_ffn_equals_skipping_the_layers():
    model, inputs = _ffn(), _ffn_inputs()
    x = inputs["pixel_values"]
    layers = list(model.layers)
    with torch.no_grad():  # the Table 8 'remove' forward: skipped layers act as the identity
        h = x
        for i, layer in enumerate(layers):
            if i + 1 in (2, 3):
                continue
            h = layer(h)
            if i < len(layers) - 1:
                h = torch.relu(h)
        expected = torch.log_softmax(h, -1)
    drop_blocks(model, [2, 3])
    torch.testing.assert_close(_logits(model, inputs), expected)


def test_drop_gpt2_middle_block_generates_with_cache(tmp_path):
    model = _gpt2(layers=4)
    drop_blocks(model, [2])
    assert [block.attn.layer_idx for block in model.transformer.h] == [0, 1, 2]
    ids = torch.tensor([[5, 9, 3, 7]])
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    cached = model.generate(ids, use_cache=True, **kw)
    uncached = model.generate(ids, use_cache=False, **kw)
    assert cached.shape == (1, 10)
    assert torch.equal(cached, uncached)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.generate(ids, use_cache=True, **kw), cached)


def test_drop_trims_per_layer_types_in_config():
    model = tiny_bert(layers=3)
    model.config.layer_types = ["a", "b", "c"]
    drop_blocks(model, [2])
    assert model.config.layer_types == ["a", "c"]


@pytest.mark.parametrize(
    "blocks,match",
    [
        ([4], r"block\(s\) \[4\] out of range; valid blocks are 1\.\.3"),
        ([0, 1], r"block\(s\) \[0\] out of range; valid blocks are 1\.\.3"),
        ([], r"no block given; choose blocks from 1\.\.3"),
        ([1, 2, 3], r"removing blocks \[1, 2, 3\] leaves no block \(the model has 1\.\.3\); keep at least one"),
        ([2, 2], r"block\(s\) \[2\] given more than once"),
        ("2", r"blocks must be a list of 1-based block indices, got '2'"),
        ([1.5], r"blocks must be integers .*1\.5"),
    ],
)
def test_drop_bad_blocks(blocks, match):
    with pytest.raises(UsageError, match=match):
        drop_blocks(tiny_bert(layers=3), blocks)


def test_drop_bad_models():
    with pytest.raises(UsageError, match=r"layer 1 maps 8 -> 6.*valid blocks are \[2, 3\]"):
        drop_blocks(_ffn(), [1])
    with pytest.raises(UsageError, match=r"the output layer.*valid blocks are \[2, 3\]"):
        drop_blocks(_ffn(), [4])
    odd = nn.Module()
    odd.config = types.SimpleNamespace(model_type="resnet-ish")
    with pytest.raises(UsageError, match=r"model_type 'resnet-ish'.*supported: .*bert.*gpt2"):
        drop_blocks(odd, [1])
    with pytest.raises(UsageError, match=r"scale_attn_by_inverse_layer_idx"):
        drop_blocks(_gpt2(scale_attn_by_inverse_layer_idx=True), [2])
    wrapped = get_isogauss_model(tiny_bert(layers=3), IsoGaussConfig(layers=[1]))
    with pytest.raises(UsageError, match=r"already has Gaussian layers"):
        drop_blocks(wrapped, [2])


class _StagesConfig(PretrainedConfig):
    model_type = "toy-stages"

    def __init__(self, depths=(2, 2), **kw):
        self.depths = list(depths)
        super().__init__(**kw)


class _Stages(nn.Module):
    """Blocks nested in stages (like ResNet): the hook numbers them across stages."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.stages = nn.ModuleList(nn.Sequential(*[nn.Linear(4, 4) for _ in range(d)]) for d in config.depths)


def _stage_slots(model):
    return [BlockSlot(stage, i, f"stages.{s}.{i}") for s, stage in enumerate(model.stages) for i in range(len(stage))]


def _stage_depths(model, before, removed, count_attrs):
    model.config.depths = [len(stage) for stage in model.stages]


def test_drop_spec_hook_for_nested_stage_blocks(monkeypatch):
    monkeypatch.setitem(DROP_SPECS, "toy-stages", DROP_SPECS["bert"])  # restored after the test
    register_drop_spec("toy-stages", DropSpec((), locate=_stage_slots, update_config=_stage_depths))
    model = _Stages(_StagesConfig(depths=(2, 3)))
    keep = [model.stages[0][0], model.stages[1][1], model.stages[1][2]]
    drop_blocks(model, [2, 3])  # stage 0 block 1, stage 1 block 0
    assert model.config.depths == [1, 2]
    assert [m for stage in model.stages for m in stage] == keep
    with pytest.raises(TypeError, match="expects a DropSpec"):
        register_drop_spec("toy-stages", object())


def test_default_count_update_sets_every_config_of_the_model():
    model = tiny_bert(layers=3)
    slots = list(range(3))
    _set_count(model, slots, [1], ("num_hidden_layers",))
    assert model.config.num_hidden_layers == 2 and model.bert.config.num_hidden_layers == 2


# ------------------------------------------------------------------ lowrank: rank formula and SVD init
@pytest.mark.parametrize(
    "n,m,expected",
    [(768, 768, 2), (3072, 768, 2), (768, 3072, 2), (128, 784, 2), (10, 128, 2), (1, 5, 1), (5, 1, 1), (2, 2, 2),
     (3, 2, 2)],
)
def test_budget_rank(n, m, expected):
    r = budget_rank(n, m)
    assert r == expected
    assert r * (n + m) <= 2 * n + 2 * m and r >= 1
    assert r == min(n, m) or (r + 1) * (n + m) > 2 * n + 2 * m  # the largest such r


def test_budget_rank_with_other_budgets_and_bad_shapes():
    assert budget_rank(10, 10, budget=60) == 3
    assert budget_rank(10, 10, budget=5) == 1  # r >= 1 always
    with pytest.raises(UsageError, match=r"shape must be positive, got 0 x 4"):
        budget_rank(0, 4)


@pytest.mark.parametrize("module_kind", ["linear", "conv1d"])
def test_svd_init_is_the_best_rank_r_approximation(module_kind):
    torch.manual_seed(0)
    if module_kind == "linear":
        module = nn.Linear(5, 7)
        weight = module.weight.detach()
    else:
        module = Conv1D(7, 5)  # out 7, in 5; weight stored (5, 7)
        nn.init.normal_(module.weight)
        weight = module.weight.detach().t()
    layer = LowRankLinear.from_module(module)
    assert layer.rank == 2 and layer.factor_a.shape == (7, 2) and layer.factor_b.shape == (2, 5)
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    best = u[:, :2] @ torch.diag(s[:2]) @ vh[:2]
    torch.testing.assert_close(layer.merged_weight(), best, rtol=0, atol=1e-5)
    torch.testing.assert_close(layer.factor_a.norm(dim=0), s[:2].sqrt(), rtol=1e-5, atol=1e-6)  # sqrt split
    torch.testing.assert_close(layer.factor_b.norm(dim=1), s[:2].sqrt(), rtol=1e-5, atol=1e-6)
    assert torch.equal(layer.bias, module.bias.detach())
    x = torch.randn(3, 5)
    torch.testing.assert_close(layer(x), x @ best.t() + module.bias.detach(), rtol=1e-5, atol=1e-5)


def test_svd_factors_full_rank_reproduce_the_matrix():
    w = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    a, b = svd_factors(w, 4)
    torch.testing.assert_close(a @ b, w, rtol=0, atol=1e-5)


def test_factors_train_by_backprop():
    torch.manual_seed(0)
    layer = LowRankLinear.from_module(nn.Linear(6, 4))
    target = nn.Linear(6, 4)
    x = torch.randn(32, 6)
    y = target(x).detach()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.mse_loss(layer(x), y)
        loss.backward()
        assert layer.factor_a.grad.abs().sum() > 0 and layer.factor_b.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_lowrank_bert_trains_end_to_end():
    model = tiny_bert(layers=2).train()
    run = prepare_baseline("lowrank", model, [2], IsoGaussConfig())
    assert not run.needs_isogauss_callback
    inputs = {**example_inputs("bert", batch=4), "labels": torch.tensor([0, 1, 2, 1])}
    factors = [p for n, p in model.named_parameters() if "factor_" in n]
    assert len(factors) == 12  # 6 matrices x (A, B)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in factors)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------ lowrank: selection, merge, conv
LOWRANK_CASES = {
    "bert": (lambda: tiny_bert(layers=2), lambda: example_inputs("bert"), AutoModelForSequenceClassification),
    "vit": (_vit3, lambda: example_inputs("vit"), AutoModelForImageClassification),
    "gpt2": (_gpt2, lambda: example_inputs("gpt2"), AutoModelForCausalLM),
    "ffn8": (_ffn, _ffn_inputs, AutoModelForImageClassification),
}


@pytest.mark.parametrize("kind", list(LOWRANK_CASES))
def test_lowrank_merge_gives_same_outputs_and_plain_checkpoint(kind, tmp_path):
    factory, inputs_fn, auto = LOWRANK_CASES[kind]
    model, inputs = factory(), inputs_fn()
    dense_types = {name: type(m) for name, m in model.named_modules()}
    records = apply_lowrank(model, IsoGaussConfig(layers=[1, 2]))
    assert records and lowrank_modules(model)
    factored = _logits(model, inputs)
    merge_lowrank(model)
    assert not lowrank_modules(model)
    for rec in records:  # each module is back to its original class
        assert type(model.get_submodule(rec["name"])) is dense_types[rec["name"]]
    torch.testing.assert_close(_logits(model, inputs), factored, rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path)
    reloaded = auto.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(reloaded, inputs), factored, rtol=1e-4, atol=1e-5)


def test_lowrank_gpt2_fused_c_attn_is_three_slices():
    model = _gpt2()
    c_attn = model.transformer.h[0].attn.c_attn
    w, bias = c_attn.weight.detach().t().clone(), c_attn.bias.detach().clone()  # (96, 32)
    apply_lowrank(model, IsoGaussConfig(layers=[1]))
    fused = model.transformer.h[0].attn.c_attn
    assert isinstance(fused, LowRankFusedLinear) and [p.rank for p in fused.parts] == [2, 2, 2]
    for i, part in enumerate(fused.parts):
        a, b = svd_factors(w[32 * i:32 * (i + 1)], 2)
        torch.testing.assert_close(part.merged_weight(), a @ b)
        assert torch.equal(part.bias, bias[32 * i:32 * (i + 1)])
    merged = fused.to_dense_module()
    assert isinstance(merged, Conv1D) and merged.weight.shape == (32, 96)
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(merged(x), fused(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_lowrank_budget_equals_the_gaussian_budget(kind):
    """Same modules as the Gaussian run, and r = 2 gives exactly its 2n + 2m numbers per matrix."""
    factory = LOWRANK_CASES[kind][0]
    config = IsoGaussConfig(layers=[2])
    gauss = get_isogauss_model(factory(), config).parameter_report()
    run = prepare_baseline("lowrank", factory(), None, config)
    for key in ("replaced_weights", "gaussian_parameters", "ratio", "num_matrices", "isogauss_model_parameters",
                "dense_model_parameters"):
        assert run.report[key] == gauss[key], key
    assert run.report["per_block"]["2"]["modules"] == gauss["per_block"]["2"]["modules"]


CONV_CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4),  # depthwise
    dict(in_channels=2, out_channels=3, kernel_size=(3, 2), dilation=2, padding=2, padding_mode="reflect", bias=False),
]


@pytest.mark.parametrize("kwargs", CONV_CASES)
def test_conv_form_equals_the_conv_at_full_rank(kwargs):
    torch.manual_seed(0)
    conv = nn.Conv2d(**kwargs)
    n, m = conv.out_channels, conv.weight[0].numel()
    x = torch.randn(2, conv.in_channels, 9, 9)
    full = LowRankConv2d(conv, rank=min(n, m))
    torch.testing.assert_close(full(x), conv(x), rtol=1e-4, atol=1e-5)
    small = LowRankConv2d(conv)
    assert small.rank == budget_rank(n, m) and small.num_factor_parameters == small.rank * (n + m)
    assert small.num_factor_parameters <= 2 * n + 2 * m and small.num_replaced_weights == n * m
    merged = small.to_dense_module()
    assert isinstance(merged, nn.Conv2d) and merged.weight.shape == conv.weight.shape
    assert (merged.stride, merged.padding, merged.groups, merged.padding_mode) == \
        (conv.stride, conv.padding, conv.groups, conv.padding_mode)
    torch.testing.assert_close(merged(x), small(x), rtol=1e-4, atol=1e-5)
    a, b = svd_factors(conv.weight.detach().reshape(n, m), small.rank)
    torch.testing.assert_close(merged.weight.detach().reshape(n, m), a @ b)


def test_lowrank_bad_inputs():
    with pytest.raises(UsageError, match=r"rank=0 invalid for Linear \(4 x 6\); valid ranks are 1\.\.4"):
        LowRankLinear.from_module(nn.Linear(6, 4), rank=0)
    with pytest.raises(UsageError, match=r"rank=9 invalid for Conv2d im2col matrix \(4 x 27\); valid ranks are 1\.\.4"):
        LowRankConv2d(nn.Conv2d(3, 4, 3), rank=9)
    with pytest.raises(UsageError, match=r"expected nn.Linear or transformers Conv1D, got LayerNorm"):
        LowRankLinear.from_module(nn.LayerNorm(4))
    with pytest.raises(UsageError, match=r"expects torch.nn.Conv2d, got Linear"):
        LowRankConv2d(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"layers \[5\] out of range"):
        apply_lowrank(tiny_bert(layers=2), IsoGaussConfig(layers=[5]))


# ------------------------------------------------------------------ frozen
def _frozen_available():
    if "frozen" not in settings.RULES:
        pytest.skip(f"rule 'frozen' not in isogauss_hf.settings.RULES {settings.RULES} yet (lead, issue 10)")


def _statistics(model) -> dict[str, torch.Tensor]:
    """Every state entry of the Gaussian modules but their biases (statistics, seeds, counters)."""
    names = [r["name"] for r in model.replaced_modules]
    stats = {k: v.clone() for k, v in model.get_base_model().state_dict().items()
             if any(k.startswith(n + ".") for n in names) and not k.endswith("bias")}
    assert any("mean" in k for k in stats) and any("std" in k for k in stats), sorted(stats)
    return stats


def _train_steps_with_callback(model, tmp_path, steps=2):
    """A few optimizer steps driven by IsoGaussCallback's hooks, as the Trainer calls them."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from isogauss_hf import IsoGaussCallback

    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], max_grad_norm=1.0)
    state, control, callback = TrainerState(), TrainerControl(), IsoGaussCallback()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    inputs = {**example_inputs("bert", batch=4), "labels": torch.tensor([0, 1, 2, 1])}
    model.train()
    callback.on_train_begin(args, state, control, model=model)
    for step in range(steps):
        state.global_step = step
        callback.on_step_begin(args, state, control, model=model)
        opt.zero_grad()
        model(**inputs).loss.backward()
        callback.on_pre_optimizer_step(args, state, control, model=model, optimizer=opt)
        opt.step()
        callback.on_step_end(args, state, control, model=model)
    callback.on_train_end(args, state, control, model=model)


def test_training_harness_detects_a_distribution_step(tmp_path):
    """Control for the frozen test: with GDU the same steps do change the statistics."""
    model = get_isogauss_model(tiny_bert(layers=2), IsoGaussConfig(layers=[1], rule="gdu", noise="seeded"))
    before = _statistics(model)
    _train_steps_with_callback(model, tmp_path)
    after = _statistics(model)
    assert any(not torch.equal(after[k], v) for k, v in before.items() if "mean" in k or "std" in k)


def test_frozen_keeps_the_fitted_statistics(tmp_path):
    _frozen_available()
    config = IsoGaussConfig(rule="gdu", noise="seeded")
    run = prepare_baseline("frozen", tiny_bert(layers=2), [1], config)
    assert run.needs_isogauss_callback and run.name == "frozen"
    assert run.model.isogauss_config.rule == "frozen" and config.rule == "gdu"
    expected = get_isogauss_model(tiny_bert(layers=2), dataclasses.replace(config, layers=[1], rule="frozen"))
    assert run.report == {"baseline": "frozen", "stand_in": run.report["stand_in"], **expected.parameter_report()}
    assert len(run.model.replaced_modules) == 6
    before = _statistics(run.model)
    torch.testing.assert_close(before, _statistics(expected))  # fitted to the pretrained weights
    _train_steps_with_callback(run.model, tmp_path)
    after = _statistics(run.model)
    assert all(torch.equal(after[k], v) for k, v in before.items() if "mean" in k or "std" in k)


def test_frozen_without_the_rule_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(settings, "RULES", ("gdu", "wdu"))
    with pytest.raises(UsageError, match=r"no rule 'frozen' \(rules: gdu, wdu\)"):
        prepare_baseline("frozen", tiny_bert(), [1], IsoGaussConfig())


# ------------------------------------------------------------------ the variant table
def test_baselines_table_and_lookup():
    assert list(BASELINES) == ["drop", "lowrank", "frozen"]
    for name, spec in BASELINES.items():
        assert spec.name == name and spec.help and "\n" not in spec.help and callable(spec.prepare)
    assert BASELINES["frozen"].needs_isogauss_callback and not BASELINES["drop"].needs_isogauss_callback
    with pytest.raises(UsageError, match=r"baseline 'remove' is not known; choose from drop, lowrank, frozen"):
        get_baseline("remove")
    assert parse_baselines("drop, lowrank,drop,") == ["drop", "lowrank"]
    assert parse_baselines(None) == [] and parse_baselines(["frozen"]) == ["frozen"]
    with pytest.raises(UsageError, match=r"baseline 'lowrnk' is not known"):
        parse_baselines("drop,lowrnk")


def test_drop_report():
    model = tiny_bert(layers=3)
    block_params = sum(p.numel() for p in model.bert.encoder.layer[1].parameters())
    total = sum(p.numel() for p in model.parameters())
    run = prepare_baseline("drop", model, None, IsoGaussConfig(layers=[2]))
    report = run.report
    gauss_keys = set(get_isogauss_model(tiny_bert(layers=3), IsoGaussConfig(layers=[2])).parameter_report())
    assert gauss_keys <= set(report)
    assert report["removed_blocks"] == [2] and report["removed_parameters"] == block_params
    assert report["dense_model_parameters"] == total
    assert report["isogauss_model_parameters"] == total - block_params
    assert report["replaced_weights"] == 4 * 32 * 32 + 2 * 32 * 64 and report["gaussian_parameters"] == 0
    assert report["num_matrices"] == 6 and not run.needs_isogauss_callback
    # as the paper counts a block: all its parameters, of which a removed block keeps none
    assert (report["per_block"]["2"]["paper_dense_parameters"], report["per_block"]["2"]["paper_isogauss_parameters"],
            report["paper_counts"]) == (block_params, 0, "block")
    factored = prepare_baseline("lowrank", tiny_bert(layers=3), None, IsoGaussConfig(layers=[2])).report["per_block"]["2"]
    assert factored["paper_dense_parameters"] == block_params  # biases and layer norms stay beside the factors
    assert factored["paper_dense_parameters"] - factored["paper_isogauss_parameters"] == (
        factored["replaced_weights"] - factored["gaussian_parameters"])
    with pytest.raises(UsageError, match=r"removing blocks \[1, 2, 3\] leaves no block"):
        prepare_baseline("drop", tiny_bert(layers=3), None, IsoGaussConfig())


def test_layers_argument_overrides_config_layers():
    config = IsoGaussConfig(layers=[1])
    run = prepare_baseline("lowrank", tiny_bert(layers=2), [2], config)
    assert list(run.report["per_block"]) == ["2"] and config.layers == [1]  # config itself unchanged
    assert dataclasses.replace(config).layers == [1]


def test_drop_on_a_resnet_removes_the_blocks_that_hold_the_chosen_conv_modules():
    from transformers import ResNetConfig, ResNetForImageClassification

    from isogauss_hf import IsoGaussConfig
    from isogauss_hf.baselines import prepare_baseline

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(layer_type="basic", depths=[2, 2], hidden_sizes=[8, 16],
                                                      embedding_size=8, num_labels=3))
    # modules: 1 stem; block 1 = 2, 3; block 2 = 4, 5; block 3 = 6, 7 + shortcut 8; block 4 = 9, 10
    run = prepare_baseline("drop", model, [5], IsoGaussConfig(layers=[5]))
    assert run.report["removed_blocks"] == [2]
    assert list(run.model.config.depths) == [1, 2]
    out = run.model(pixel_values=torch.randn(2, 3, 32, 32)).logits
    assert out.shape == (2, 3)
