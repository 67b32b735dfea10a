"""Which modules each architecture maps to, the generic pattern path, and selection errors."""

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from conftest import MODEL_FACTORIES, example_inputs
from isogauss_hf import IsoGaussConfig, IsoGaussLinear, get_isogauss_model
from isogauss_hf.layers import IsoGaussFusedLinear
from isogauss_hf.mapping import resolve_targets

EXPECTED = {
    "bert": ["bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.attention.self.key",
             "bert.encoder.layer.1.attention.self.value", "bert.encoder.layer.1.attention.output.dense",
             "bert.encoder.layer.1.intermediate.dense", "bert.encoder.layer.1.output.dense"],
    "roberta": ["roberta.encoder.layer.1.attention.self.query", "roberta.encoder.layer.1.attention.self.key",
                "roberta.encoder.layer.1.attention.self.value", "roberta.encoder.layer.1.attention.output.dense",
                "roberta.encoder.layer.1.intermediate.dense", "roberta.encoder.layer.1.output.dense"],
    "vit": ["vit.layers.1.attention.q_proj", "vit.layers.1.attention.k_proj", "vit.layers.1.attention.v_proj",
            "vit.layers.1.attention.o_proj", "vit.layers.1.mlp.fc1", "vit.layers.1.mlp.fc2"],
    "gpt2": ["transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj", "transformer.h.1.mlp.c_fc",
             "transformer.h.1.mlp.c_proj"],
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_default_targets_per_architecture(kind):
    model = MODEL_FACTORIES[kind]()
    targets = resolve_targets(model, IsoGaussConfig(layers=[2]))
    assert [t.name for t in targets] == EXPECTED[kind]
    assert all(t.block == 2 for t in targets)
    wrapped = get_isogauss_model(model, IsoGaussConfig(layers=[2]))
    assert len(wrapped.isogauss_layers()) == 6  # q, k, v, attention output, MLP in, MLP out
    out = wrapped(**example_inputs(kind))
    assert torch.isfinite(out.logits).all()


def test_gpt2_c_attn_becomes_three_gaussian_matrices():
    model = get_isogauss_model(MODEL_FACTORIES["gpt2"](), IsoGaussConfig(layers=[1]))
    c_attn = model.base_model.transformer.h[0].attn.c_attn
    assert isinstance(c_attn, IsoGaussFusedLinear)
    assert [(p.out_features, p.in_features) for p in c_attn.parts] == [(32, 32)] * 3


def test_target_subset():
    model = MODEL_FACTORIES["bert"]()
    targets = resolve_targets(model, IsoGaussConfig(layers=[1], target_modules=["mlp_in", "mlp_out"]))
    assert [t.name for t in targets] == ["bert.encoder.layer.0.intermediate.dense", "bert.encoder.layer.0.output.dense"]


def test_layers_none_means_all_blocks():
    assert len(resolve_targets(MODEL_FACTORIES["vit"](), IsoGaussConfig())) == 12


def test_block_out_of_range_names_the_valid_range():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=12,
                                                     num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ValueError, match=r"layers \[13\] out of range .* 12 blocks: valid block indices are 1\.\.12"):
        get_isogauss_model(model, IsoGaussConfig(layers=[4, 13]))


def test_gpt2_partial_fused_selection_is_refused():
    with pytest.raises(ValueError, match="fuses query, key, value .* select all of them or none"):
        resolve_targets(MODEL_FACTORIES["gpt2"](), IsoGaussConfig(layers=[1], target_modules=["query"]))


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)) for _ in range(3))
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def test_unmapped_architecture_without_patterns():
    with pytest.raises(ValueError, match=r"no layer map for model_type None \(Plain\); known architectures: .*bert"):
        resolve_targets(Plain(), IsoGaussConfig(layers=[1]))


def test_generic_patterns_with_layers():
    model = Plain()
    cfg = IsoGaussConfig(layers=[1, 3], target_modules=[r"blocks\.\d+\.0"])
    targets = resolve_targets(model, cfg)
    assert [(t.name, t.block) for t in targets] == [("blocks.0.0", 1), ("blocks.2.0", 3)]
    wrapped = get_isogauss_model(model, cfg)
    assert isinstance(wrapped.base_model.blocks[2][0], IsoGaussLinear)
    assert wrapped(torch.randn(2, 8)).shape == (2, 2)


def test_pattern_matching_nothing():
    with pytest.raises(ValueError, match=r"pattern 'head2' matches no nn.Linear/Conv1D module.*include: blocks.0.0"):
        resolve_targets(Plain(), IsoGaussConfig(target_modules=["head2"]))


def test_pattern_layers_without_match():
    with pytest.raises(ValueError, match=r"layers \[5\] select no module"):
        resolve_targets(Plain(), IsoGaussConfig(layers=[5], target_modules=[r"blocks\.\d+\.0"]))


def test_unknown_canonical_name_on_mapped_architecture_is_a_pattern_error():
    with pytest.raises(ValueError, match="matches no nn.Linear/Conv1D module"):
        resolve_targets(MODEL_FACTORIES["bert"](), IsoGaussConfig(layers=[1], target_modules=["qeury"]))
