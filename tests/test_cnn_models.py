"""ResNet and MobileNetV2 (transformers) with Gaussian convolutions: the paper's module numbering and parameter
counts (Tables 6, 17-22), selection, the Table 6 head, training with the callback, save/load/export, PEFT, drop."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from peft import PeftModel, get_peft_model
from torch import nn
from transformers import (MobileNetV2Config, MobileNetV2ForImageClassification, ResNetConfig,
                          ResNetForImageClassification, Trainer, TrainingArguments)

from isogauss_hf import IsoGaussCallback, IsoGaussConfig, IsoGaussModel, get_isogauss_model
from isogauss_hf.baselines import drop_blocks, prepare_baseline
from isogauss_hf.heads import (MobileNetV2ForImageClassificationWithMLPHead, ResNetForImageClassificationWithMLPHead,
                               classifier_parameters, head_parameter_counts, with_mlp_head)
from isogauss_hf.layers import IsoGaussConv2d, IsoGaussLinear
from isogauss_hf.mapping import count_blocks, resolve_targets
from isogauss_hf.mapping_cnn import module_table, resnet_blocks_of_modules
import isogauss_hf.drop_cnn  # noqa: F401  registers the ResNet / MobileNetV2 drop rules

RESNET18 = dict(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], embedding_size=64)

# Tables 21/22 (ResNet-18) and 19/20 (MobileNetV2): (original parameters, modified parameters) per module.
PAPER_RESNET18 = [(9408, 422), (36864, 1280), (36864, 1280), (36864, 1280), (36864, 1280), (73728, 1408),
                  (147456, 2560), (8192, 384), (147456, 2560), (147456, 2560), (294912, 2816), (589824, 5120),
                  (32768, 768), (589824, 5120), (589824, 5120), (1179648, 5632), (2359296, 10240), (131072, 1536),
                  (2359296, 10240), (2359296, 10240)]
PAPER_MOBILENET_V2 = [(864, 118), (800, 178), (4704, 674), (8208, 978), (9360, 994), (14016, 1298), (14016, 1298),
                      (20160, 1362), (52608, 2578), (52608, 2578), (52608, 2578), (64896, 2642), (115776, 3858),
                      (115776, 3858), (152640, 3986), (315840, 6418), (315840, 6418), (469440, 6738), (409600, 3200)]


def full_size(kind: str, num_labels: int = 10) -> nn.Module:
    with torch.device("meta"):
        if kind == "resnet":
            return ResNetForImageClassification(ResNetConfig(**RESNET18, num_labels=num_labels))
        return MobileNetV2ForImageClassification(MobileNetV2Config(num_labels=num_labels))


def tiny(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    head = kind.endswith("-head")
    kind = kind.removesuffix("-head")
    if kind == "resnet":
        model = ResNetForImageClassification(ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], num_labels=3,
                                                          hidden_sizes=[4, 8, 8, 16], embedding_size=4))
    else:
        model = MobileNetV2ForImageClassification(MobileNetV2Config(
            num_labels=3, image_size=16, depth_multiplier=0.25, depth_divisible_by=4, min_depth=4,
            finegrained_output=False))
    if head:
        with_mlp_head(model, hidden=8)
    with torch.no_grad():  # trained-looking BatchNorm statistics, so that eval outputs depend on them
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def pixels(batch: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind, paper", [("resnet", PAPER_RESNET18), ("mobilenet_v2", PAPER_MOBILENET_V2)])
def test_module_numbering_reproduces_the_papers_tables(kind, paper):
    table = module_table(full_size(kind))
    convs, head = table[:-1], table[-1]
    print(f"\n{kind}: module, weights -> statistics (retention)")
    for row in table:
        print(f"  {row['index']:>2} {'+'.join(row['roles']):<26} {row['weights']:>9,} -> {row['statistics']:>6,} "
              f"({100 * row['retention']:.2f}%)")
    assert [(r["weights"], r["statistics"]) for r in convs] == paper
    retention = [r["retention"] for r in convs]
    low, high = {"resnet": (0.43, 4.69), "mobilenet_v2": (0.78, 22.25)}[kind]  # Section 4.2's range
    assert (round(100 * min(retention), 2), round(100 * max(retention), 2)) == (low, high)
    assert head["roles"] == ["head"] and head["index"] == len(paper) + 1


@pytest.mark.parametrize("kind, d, dense, gaussian", [("resnet", 512, 5130, 1450), ("mobilenet_v2", 1280, 12810, 2986)])
def test_classifier_head_parameter_counts_of_table_6(kind, d, dense, gaussian):
    model = full_size(kind)
    assert classifier_parameters(model) == dense  # Table 6 'base': 5.13K / 12.81K
    with_mlp_head(model, 32)
    converted = get_isogauss_model(model, IsoGaussConfig(target_modules=["head"]))
    assert classifier_parameters(converted) == gaussian  # Table 6 'Isotropic': 1450 / 2986
    counts = head_parameter_counts(d, 10, 32)
    assert (counts["dense_classifier"], counts["gaussian_mlp_head"]) == (dense, gaussian)
    print(f"\n{kind}: classifier {dense:,} (dense one-layer) vs {counts['dense_mlp_head']:,} (dense two-layer, h=32) vs "
          f"{gaussian:,} (Gaussian first layer, {counts['formula']})")
    # Tables 17-18: the other hidden sizes follow (3 + c) h + 2d + c
    for h, paper in {"resnet": {128: 2698, 64: 1866, 16: 1242},
                     "mobilenet_v2": {256: 5898, 128: 4234, 64: 3402}}[kind].items():
        assert head_parameter_counts(d, 10, h)["gaussian_mlp_head"] == paper


RESNET_SELECTIONS = [
    (dict(layers=[8]), [(8, "resnet.encoder.stages.1.layers.0.shortcut.convolution")]),
    (dict(layers=[4, 7, 13]), [(4, None), (7, None), (13, None)]),
    (dict(target_modules=["shortcut"]), [(8, None), (13, None), (18, None)]),
    (dict(target_modules=["stage3"]), [(i, None) for i in range(11, 16)]),
    (dict(target_modules=["stage2.block2"]), [(9, None), (10, None)]),
    (dict(target_modules=["block3"]), [(6, None), (7, None), (8, None)]),
    (dict(layers=[6, 9], target_modules=["conv1", "main"]), [(6, None), (9, None)]),
    (dict(target_modules=["head", "stem"]), [(1, "resnet.embedder.embedder.convolution"), (21, "classifier.1")]),
    (dict(target_modules=[r".*stages\.3\.layers\.1\..*"]), [(19, None), (20, None)]),
    (dict(), [(i, None) for i in range(1, 22)]),
]


@pytest.mark.parametrize("kwargs, expected", RESNET_SELECTIONS)
def test_resnet_selection(kwargs, expected):
    targets = resolve_targets(full_size("resnet"), IsoGaussConfig(**kwargs))
    assert [t.block for t in targets] == [i for i, _ in expected]
    for t, (_, name) in zip(targets, expected):
        assert name is None or t.name == name


MOBILENET_SELECTIONS = [
    (dict(layers=[4]), ["mobilenet_v2.layer.1.expand_1x1.convolution", "mobilenet_v2.layer.1.conv_3x3.convolution",
                        "mobilenet_v2.layer.1.reduce_1x1.convolution"]),
    (dict(layers=[2]), ["mobilenet_v2.conv_stem.conv_3x3.convolution", "mobilenet_v2.conv_stem.reduce_1x1.convolution"]),
    (dict(layers=[1, 19, 20]), ["mobilenet_v2.conv_stem.first_conv.convolution", "mobilenet_v2.conv_1x1.convolution",
                                "classifier"]),
    (dict(layers=[3, 4], target_modules=["depthwise"]), ["mobilenet_v2.layer.0.conv_3x3.convolution",
                                                         "mobilenet_v2.layer.1.conv_3x3.convolution"]),
    (dict(target_modules=["stage7"]), ["mobilenet_v2.layer.15.expand_1x1.convolution",
                                       "mobilenet_v2.layer.15.conv_3x3.convolution",
                                       "mobilenet_v2.layer.15.reduce_1x1.convolution"]),
]


@pytest.mark.parametrize("kwargs, expected", MOBILENET_SELECTIONS)
def test_mobilenet_v2_selection(kwargs, expected):
    assert [t.name for t in resolve_targets(full_size("mobilenet_v2"), IsoGaussConfig(**kwargs))] == expected


def test_depthwise_convolutions_are_one_matrix_of_channels_by_kernel():
    model = get_isogauss_model(tiny("mobilenet_v2"), IsoGaussConfig(target_modules=["depthwise"]))
    layers = model.isogauss_layers()
    assert len(layers) == 17 and all(isinstance(layer, IsoGaussConv2d) for layer in layers.values())
    assert all(layer.groups == layer.out_channels and layer.matrix_shape[1] == 9 for layer in layers.values())


@pytest.mark.parametrize("kind, kwargs, match", [
    ("resnet", dict(layers=[22]), r"layers \[22\] out of range for ResNetForImageClassification \(resnet\) with 21 "
                                  r"numbered modules: valid module numbers are 1..21"),
    ("mobilenet_v2", dict(layers=[21]), r"valid module numbers are 1..20"),
    ("resnet", dict(target_modules=["stage9"]), r"'stage9' selects no module .* selector words are .*shortcut"),
    ("resnet", dict(target_modules=["query"]), r"'query' selects no module"),
    ("resnet", dict(target_modules=["("]), r"neither a selector word of resnet nor a valid regular expression"),
    ("resnet", dict(layers=[1, 2], target_modules=["shortcut"]), r"layers \[1, 2\] select no module matched by"),
    ("resnet", dict(layers=[6, 7, 8], target_modules=["conv1"]), r"layers \[7, 8\] .*\(module 7 is conv2; module 8 "
                                                                  r"is shortcut\)"),
])
def test_bad_selections_are_one_line_errors(kind, kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_targets(full_size(kind), IsoGaussConfig(**kwargs))


def test_count_blocks_is_the_number_of_modules():
    assert count_blocks(full_size("resnet")) == 21 and count_blocks(full_size("mobilenet_v2")) == 20


def _dataset(n: int = 8) -> Dataset:
    x = pixels(n, seed=3)
    return Dataset.from_dict({"pixel_values": x.tolist(), "labels": [i % 3 for i in range(n)]})


PLAIN_CLASS = {"resnet": ResNetForImageClassification, "mobilenet_v2": MobileNetV2ForImageClassification,
               "resnet-head": ResNetForImageClassificationWithMLPHead,
               "mobilenet_v2-head": MobileNetV2ForImageClassificationWithMLPHead}


@pytest.mark.parametrize("kind, layers, rule", [("resnet", [1, 8, 9], "wdu"), ("mobilenet_v2", [1, 2, 4, 19], "gdu"),
                                                ("resnet-head", [21], "wdu"), ("mobilenet_v2-head", [3, 20], "backprop")])
def test_convert_train_save_load_and_export(tmp_path, kind, layers, rule):
    model = get_isogauss_model(tiny(kind), IsoGaussConfig(layers=layers, rule=rule, noise="seeded"))
    gaussian = model.isogauss_layers()
    assert {type(layer) for layer in gaussian.values()} <= {IsoGaussConv2d, IsoGaussLinear}
    before = {name: [t.detach().clone() for t in layer.statistics] for name, layer in gaussian.items()}
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4,
                             learning_rate=1e-2, use_cpu=True, report_to=[], save_strategy="no",
                             logging_strategy="no", disable_tqdm=True, seed=0)
    Trainer(model=model, args=args, train_dataset=_dataset(), callbacks=[IsoGaussCallback()]).train()
    for name, layer in gaussian.items():
        assert any(not torch.equal(a, b) for a, b in zip(layer.statistics, before[name])), name
    model.eval()
    x = pixels()
    with torch.no_grad():
        expected = model(pixel_values=x).logits
    model.save_pretrained(str(tmp_path / "iso"))
    loaded = IsoGaussModel.from_pretrained(str(tmp_path / "iso"))
    assert list(loaded.isogauss_layers()) == list(gaussian)
    model.export_dense(str(tmp_path / "dense"))
    plain = PLAIN_CLASS[kind].from_pretrained(str(tmp_path / "dense")).eval()
    assert not any(isinstance(m, (IsoGaussConv2d, IsoGaussLinear)) for m in plain.modules())
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).logits, expected, rtol=0, atol=0)
        torch.testing.assert_close(plain(pixel_values=x).logits, expected, rtol=1e-5, atol=1e-5)


def test_tiled_inference_equals_the_whole_draw():
    model = get_isogauss_model(tiny("mobilenet_v2"), IsoGaussConfig(layers=[4, 19], noise="seeded")).eval()
    x = pixels()
    model.disable_low_memory()  # whole draws, kept
    with torch.no_grad():
        expected = model(pixel_values=x).logits
        model.enable_low_memory(block_rows=4)
        torch.testing.assert_close(model(pixel_values=x).logits, expected, rtol=1e-5, atol=1e-5)


def test_peft_adapter_round_trip_and_merge(tmp_path):
    config = IsoGaussConfig(layers=[2, 8], noise="seeded", rule="gdu", modules_to_save=["classifier.1"])  # a Linear: PEFT merges wrappers of modules with a weight
    peft_model = get_peft_model(tiny("resnet"), config)
    assert sum(isinstance(m, IsoGaussConv2d) for m in peft_model.modules()) == 2
    peft_model.train()
    for module in peft_model.modules():  # the frozen base keeps its BatchNorm statistics (not in the adapter)
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    args, cb = SimpleNamespace(max_grad_norm=1.0), IsoGaussCallback()
    opt = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.05)
    cb.on_train_begin(args, None, None, model=peft_model)
    for _ in range(2):
        peft_model(pixel_values=pixels(), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
        cb.on_pre_optimizer_step(args, None, None, model=peft_model, optimizer=opt)
        opt.step()
        opt.zero_grad()
    assert cb.applied_steps == 2
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(pixel_values=pixels()).logits
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    loaded = PeftModel.from_pretrained(tiny("resnet"), str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels()).logits, expected, rtol=0, atol=0)
        merged = loaded.merge_and_unload()
        assert not any(isinstance(m, IsoGaussConv2d) for m in merged.modules())
        torch.testing.assert_close(merged(pixel_values=pixels()).logits, expected, rtol=1e-5, atol=1e-5)


def test_resnet_drop_removes_identity_blocks_and_rebuilds(tmp_path):
    model = tiny("resnet")
    assert resnet_blocks_of_modules(model, [2, 3, 8, 21]) == [1, 3]
    with pytest.raises(Exception, match=r"cannot remove ResNet block\(s\) \[3\].* removable blocks are \[1, 2, 4, 6, 8\]"):
        drop_blocks(tiny("resnet"), [3])
    with pytest.raises(Exception, match=r"would leave stage 1 of the ResNet empty"):
        drop_blocks(tiny("resnet"), [1, 2])
    drop_blocks(model, [2, 8])
    assert model.config.depths == [1, 2, 2, 1]
    model.save_pretrained(str(tmp_path))
    rebuilt = ResNetForImageClassification.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(pixel_values=pixels()).logits, model(pixel_values=pixels()).logits)


def test_mobilenet_v2_drop_is_refused_with_the_reason():
    with pytest.raises(Exception, match=r"MobileNetV2 is not supported: transformers hard-codes its 16"):
        drop_blocks(tiny("mobilenet_v2"), [3])


def test_lowrank_baseline_factors_the_selected_convolutions():
    run = prepare_baseline("lowrank", tiny("resnet"), [8, 9], IsoGaussConfig())
    assert run.report["replaced_weights"] == 4 * 8 + 8 * 8 * 9 and run.report["per_block"].keys() == {"8", "9"}
    with torch.no_grad():
        assert run.model(pixel_values=pixels()).logits.shape == (4, 3)
